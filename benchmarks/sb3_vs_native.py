"""SB3 PPO with an LM policy vs a KV-cached rollout on the native batched env.

SB3 treats every token as an independent sample: :class:`agents.sb3.LMActorCriticPolicy`
re-encodes the whole prefix for each env step in rollouts and again for each sample in every
update epoch (O(T²) per episode). A KV-cached sampler (``textenv.lm.sampling.IncrementalLM``)
driving ``textenv.env.vector.TextGenVectorEnv`` with ``set_action_logprobs`` does O(T).

Measured, on the same task, batch and token budget (env steps = generated tokens):

* ``sb3_rollout``: SB3 PPO's ``collect_rollouts`` (policy forward per step + env step);
* ``sb3_learn``: SB3 PPO end to end (rollouts + ``n_epochs`` update epochs);
* ``native_rollout``: the plain KV-cached rollout loop below (no learning);
* ``package_ppo``: ``agents.ppo.PPO`` end to end, when that module is importable, plus its
  reward curve next to SB3's on the same budget.

The machine has 2 cores shared with others: the script waits (a while) for a quiet machine and
records the CPU share other processes used during each measurement.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/sb3_vs_native.py            # full run, writes the JSON
    OMP_NUM_THREADS=1 python benchmarks/sb3_vs_native.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CPUClock, machine_info, wait_for_quiet  # noqa: E402

import textenv  # noqa: F401, E402
from agents.sb3 import (
    LMActorCriticPolicy,
    lm_policy_kwargs,
    make_native_vec_env,
    make_sb3_env,
)
from textenv.lm.models import load_causal_lm
from textenv.lm.sampling import IncrementalLM, SamplingConfig, next_token_logprobs, sample_tokens

RESULTS = Path(__file__).parent / "results" / "sb3_vs_native.json"


# --------------------------------------------------------------------------- machine load


# --------------------------------------------------------------------------- measurements


def bench_sb3(env_id: str, env_kwargs: dict, n_envs: int, tokens: int, seed: int) -> dict:
    """SB3 PPO + LMActorCriticPolicy: steps/s of rollouts alone and of learn() end to end."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    class Timer(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rollout_s = 0.0
            self.curve: list[tuple[int, float]] = []
            self._scores: list[float] = []

        def _on_rollout_start(self) -> None:
            self._t = time.perf_counter()

        def _on_step(self) -> bool:
            for info, done in zip(self.locals["infos"], self.locals["dones"]):
                if done:
                    self._scores.append(info.get("gold_score", info["rm_score"]))
            return True

        def _on_rollout_end(self) -> None:
            self.rollout_s += time.perf_counter() - self._t
            self.curve.append((self.num_timesteps, float(np.mean(self._scores or [np.nan]))))
            self._scores = []

    env = make_sb3_env(env_id, n_envs=n_envs, seed=seed, **env_kwargs)
    n_steps = 64
    model = PPO(
        LMActorCriticPolicy,
        env,
        policy_kwargs=lm_policy_kwargs(env),
        n_steps=n_steps,
        batch_size=64,
        n_epochs=4,
        learning_rate=1e-4,
        gamma=1.0,
        gae_lambda=0.95,
        seed=seed,
        device="cpu",
    )
    timer = Timer()
    with CPUClock() as load:
        model.learn(tokens, callback=timer)
    steps = model.num_timesteps
    return {
        "env_steps": int(steps),
        "rollout_steps_per_s": steps / timer.rollout_s,
        "learn_steps_per_s": steps / load.wall,
        "rollout_s": timer.rollout_s,
        "update_s": load.wall - timer.rollout_s,
        "others_cpu_share": load.others_share,
        "curve": timer.curve,
        "settings": "PPO(LMActorCriticPolicy), n_steps=64, batch_size=64, n_epochs=4, lr=1e-4",
    }


@torch.no_grad()
def native_rollout(envs: Any, model: torch.nn.Module, gen: torch.Generator, seed: int) -> int:
    """One lockstep batch of episodes with a KV-cached policy; returns the env steps taken."""
    config = envs.config
    sampling = SamplingConfig(config.temperature)
    obs, _ = envs.reset(seed=seed)
    P = config.max_prompt_tokens
    ids = torch.as_tensor(obs["input_ids"][:, :P])
    mask = torch.as_tensor(obs["attention_mask"][:, :P])
    lm = IncrementalLM(model)
    logits = lm.prefill(ids, mask)
    active = np.ones(envs.num_envs, dtype=bool)
    steps = 0
    for _ in range(config.max_new_tokens):
        tokens, logprobs = sample_tokens(next_token_logprobs(logits, sampling), gen)
        envs.set_action_logprobs(np.where(active, logprobs.double().numpy(), np.nan))
        _, _, terminated, truncated, info = envs.step(tokens.numpy())
        assert np.all(info["logprob_source"][active] == "agent")
        steps += int(active.sum())
        active &= ~(terminated | truncated)
        if not active.any():
            break
        logits = lm.step(tokens, torch.as_tensor(active))
    return steps


def bench_native(env_id: str, env_kwargs: dict, n_envs: int, tokens: int, seed: int) -> dict:
    envs = make_native_vec_env(env_id, n_envs, **env_kwargs)
    model = load_causal_lm(envs.config.reference)  # a trainable copy, as a policy would be
    gen = torch.Generator().manual_seed(seed)
    native_rollout(envs, model, gen, seed)  # warm-up
    steps, i = 0, 0
    with CPUClock() as load:
        while steps < tokens:
            steps += native_rollout(envs, model, gen, seed + 1000 * (i + 1))
            i += 1
    return {
        "env_steps": steps,
        "rollout_steps_per_s": steps / load.wall,
        "others_cpu_share": load.others_share,
    }


def bench_package_ppo(env_id: str, env_kwargs: dict, n_envs: int, tokens: int, seed: int) -> dict:
    try:
        from agents.ppo import PPO, PPOConfig
    except ImportError as exc:
        return {"skipped": f"agents.ppo not importable: {exc}"}
    config = PPOConfig(
        env_id=env_id,
        env_kwargs=dict(env_kwargs),
        num_envs=n_envs,
        lr=1e-4,
        epochs=4,
        minibatch_size=min(16, n_envs),
        seed=seed,
        progress=False,
    )
    agent = PPO(config)
    with CPUClock() as load:
        agent.learn(tokens)
    hist = agent.history
    key = "env/gold_score" if "env/gold_score" in hist[0] else "env/rm_score"
    rollout_s = sum(h["time/rollout_s"] for h in hist)
    return {
        "env_steps": int(agent.tokens_seen),
        "learn_steps_per_s": agent.tokens_seen / load.wall,
        "rollout_steps_per_s": agent.tokens_seen / rollout_s,
        "others_cpu_share": load.others_share,
        "curve": [(int(h["tokens"]), float(h[key])) for h in hist],
        "settings": f"agents.ppo.PPO(num_envs={n_envs}, lr=1e-4, epochs=4, minibatch_size=16)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-id", default="textenv/Sentiment-v0")
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=4096, help="env steps per speed point")
    parser.add_argument("--lengths", type=int, nargs="+", default=[12, 24, 48])
    parser.add_argument("--curve-env-id", default="textenv/Sort-v0")
    parser.add_argument("--curve-tokens", type=int, default=24_576)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wait", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.lengths, args.curve_tokens = 512, [8], 2048
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    results: dict[str, Any] = {
        "machine": machine_info(),
        "env_id": args.env_id,
        "n_envs": args.n_envs,
        "speed": [],
    }
    for n_new in args.lengths:
        kwargs = {"max_new_tokens": n_new}
        quiet = wait_for_quiet(args.max_wait, window=1.0)
        sb3 = bench_sb3(args.env_id, kwargs, args.n_envs, args.tokens, args.seed)
        sb3.pop("curve")
        native = bench_native(args.env_id, kwargs, args.n_envs, args.tokens, args.seed)
        row = {
            "max_new_tokens": n_new,
            "others_cpu_share_before": quiet,
            "sb3": sb3,
            "native": native,
            "native_rollout_over_sb3_rollout": native["rollout_steps_per_s"]
            / sb3["rollout_steps_per_s"],
            "native_rollout_over_sb3_learn": native["rollout_steps_per_s"]
            / sb3["learn_steps_per_s"],
        }
        results["speed"].append(row)
        print(
            f"{args.env_id} N={n_new}: SB3 rollout {sb3['rollout_steps_per_s']:.0f} steps/s, "
            f"SB3 learn {sb3['learn_steps_per_s']:.0f} steps/s, native KV-cached rollout "
            f"{native['rollout_steps_per_s']:.0f} steps/s (others used "
            f"{max(sb3['others_cpu_share'], native['others_cpu_share']):.0%} of the CPU)",
            flush=True,
        )

    # Reward curves on the same budget: SB3 PPO + LM policy vs the package's PPO.
    wait_for_quiet(args.max_wait, window=1.0)
    curve_sb3 = bench_sb3(args.curve_env_id, {}, args.n_envs, args.curve_tokens, args.seed)
    curve_pkg = bench_package_ppo(args.curve_env_id, {}, args.n_envs, args.curve_tokens, args.seed)
    results["curves"] = {"env_id": args.curve_env_id, "sb3": curve_sb3, "package_ppo": curve_pkg}
    for name, res in (("SB3 PPO", curve_sb3), ("agents.ppo", curve_pkg)):
        if "curve" in res:
            c = res["curve"]
            print(
                f"{args.curve_env_id} {name}: score {c[0][1]:.3f} -> {c[-1][1]:.3f} over "
                f"{res['env_steps']} tokens, {res['learn_steps_per_s']:.0f} steps/s end to end",
                flush=True,
            )
        else:
            print(f"{name}: {res}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
