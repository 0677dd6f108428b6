"""REINFORCE + batch-mean baseline, Gymnasium API + log π channel only: Tiny-v0 vowels − β·KL."""

import gymnasium as gym
import numpy as np
import torch

import textenv  # noqa: F401  (registers the textenv/ ids)


def main(iterations: int = 40, batch: int = 64, lr: float = 0.05, seed: int = 0) -> list[float]:
    kw = dict(reward="textenv.tasks.tiny:gold_score", kl_coef=0.01)  # reward: fraction of vowels
    envs = gym.make_vec("textenv/Tiny-v0", batch, vectorization_mode="vector_entry_point",
                        autoreset_mode=gym.vector.AutoresetMode.DISABLED, **kw)  # fmt: skip
    torch.manual_seed(seed)
    V = int(envs.single_action_space.n)
    policy = torch.nn.Sequential(torch.nn.Embedding(V, 32), torch.nn.Linear(32, V))  # last token
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    history = []  # mean return per iteration
    for it in range(iterations):
        obs, _ = envs.reset(seed=seed + it * batch)
        done, returns, logps = np.zeros(batch, dtype=bool), np.zeros(batch), []
        while not done.all():
            last = obs["input_ids"][np.arange(batch), obs["attention_mask"].cumsum(1).argmax(1)]
            dist = torch.distributions.Categorical(logits=policy(torch.as_tensor(last)))
            logp = dist.log_prob(action := dist.sample())
            envs.unwrapped.set_action_logprobs(np.where(done, np.nan, logp.detach().numpy()))
            obs, reward, terminated, truncated, _ = envs.step(action.numpy())
            logps.append(logp * torch.as_tensor(~done))
            returns, done = returns + reward, done | terminated | truncated
        advantage = torch.as_tensor((returns - returns.mean()) / (returns.std() + 1e-8)).float()
        optimizer.zero_grad()
        (-(advantage * torch.stack(logps, 1).sum(1)).mean()).backward()
        optimizer.step()
        history.append(float(returns.mean()))
    return history


if __name__ == "__main__":
    print("mean return per iteration:", np.round(main(), 3))
