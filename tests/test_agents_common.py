"""The shared LM-policy layer and what every agent shares: rollouts, errors, save / load."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from agents import GRPO, PPO, RLOO, GRPOConfig, LMPolicy, PPOConfig, RLOOConfig, make_envs
from agents.grpo import group_advantages
from agents.ppo import gae
from agents.rloo import leave_one_out_advantages
from textenv.files import atomic_write_dir as atomic_save_dir


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(config_cls, **kw):
    """A fast config on Sort-v0 (tiny reference, 12 tokens)."""
    base = dict(env_id="textenv/Sort-v0", num_envs=8, minibatch_size=4, progress=False)
    return config_cls(**{**base, **kw})


# --------------------------------------------------------------------------- rollouts


def test_rollout_uses_log_pi_channel_and_collects_final_infos():
    envs = make_envs("textenv/Sort-v0", 6)
    policy = LMPolicy(envs)
    calls = []
    step = envs.step

    def spy(actions):
        out = step(actions)
        calls.append(out[4])
        return out

    envs.step = spy
    r = policy.rollout(torch.Generator().manual_seed(0), seed=0)
    B, N = 6, envs.unwrapped.config.max_new_tokens
    assert r.tokens.shape == r.mask.shape == r.logprobs.shape == r.rewards.shape == (B, N)
    assert r.prompt_ids.shape == (B, envs.unwrapped.config.max_prompt_tokens)
    for info in calls:  # every stepped row got the agent's log π
        assert (info["logprob_source"][info["_logprob_source"]] == "agent").all()
    assert set(r.final) >= {"rm_score", "kl", "kl_coef", "gold_score"}
    assert np.isfinite(r.ref_logprobs[r.mask.numpy()]).all()
    assert np.isnan(r.ref_logprobs[~r.mask.numpy()]).all()
    # Terminal KL: the return is RM − β·KL.
    expected = r.final["rm_score"] - r.final["kl_coef"] * r.final["kl"]
    np.testing.assert_allclose(r.returns.numpy(), expected, atol=1e-5)
    # One-forward scoring agrees with the sampled log-probs (same temperature).
    with torch.no_grad():
        scored = policy.score(r)
    torch.testing.assert_close(scored[r.mask], r.logprobs[r.mask], atol=1e-4, rtol=0)
    # The env's KL used our log π: k1 summed over tokens.
    ref = np.nan_to_num(r.ref_logprobs)
    kl = ((r.logprobs.double().numpy() - ref) * r.mask.numpy()).sum(1)
    np.testing.assert_allclose(kl, r.final["kl"], atol=1e-4)


def test_rollout_pins_prompts_and_respects_temperature():
    envs = make_envs("textenv/Sort-v0", 4, {"temperature": 0.7})
    policy = LMPolicy(envs, temperature=0.7)
    r = policy.rollout(torch.Generator().manual_seed(1), prompts=["123>", "123>", "98>", "98>"])
    assert r.prompts == ["123>", "123>", "98>", "98>"]
    with torch.no_grad():
        scored = policy.score(r)
    torch.testing.assert_close(scored[r.mask], r.logprobs[r.mask], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="temperature"):
        LMPolicy(envs, temperature=1.0)


def test_seeded_rollouts_repeat():
    agent = PPO(small(PPOConfig))
    a, b = agent.evaluate(1, seed=3), agent.evaluate(1, seed=3)
    assert a == b


# --------------------------------------------------------------------------- advantages


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.1, 9.0], [0.3, 0.4, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    adv = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # Row 1: δ = [0+0.2-0.5, 0+0.1-0.2, 1+0-0.1] = [-0.3, -0.1, 0.9]
    d = [-0.3, -0.1, 0.9]
    a2 = d[2]
    a1 = d[1] + 0.5 * a2
    a0 = d[0] + 0.5 * a1
    torch.testing.assert_close(adv[0], torch.tensor([a0, a1, a2, 0.0]))
    # Row 2: δ = [0+0.4-0.3, 2-0.4]
    torch.testing.assert_close(adv[1], torch.tensor([0.1 + 0.5 * 1.6, 1.6, 0.0, 0.0]))
    # λ = 1, γ = 1: advantage = return-to-go − value
    adv1 = gae(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(adv1[0, :3], torch.tensor([0.5, 0.8, 0.9]))


def test_group_and_leave_one_out_advantages():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    loo = leave_one_out_advantages(r, 4)
    torch.testing.assert_close(loo[:4], torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))
    assert (loo[4:] == 0).all()
    adv, std = group_advantages(r, 4, "group")
    assert std[1] == 0 and (adv[4:] == 0).all()
    torch.testing.assert_close(adv[:4].std(), torch.tensor(1.0), atol=1e-3, rtol=0)
    adv_none, _ = group_advantages(r, 4, "none")
    torch.testing.assert_close(adv_none[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]))
    adv_batch, _ = group_advantages(r, 4, "batch")
    torch.testing.assert_close(adv_batch, adv_none / (r.std() + 1e-4))


# --------------------------------------------------------------------------- bad configs


def test_negative_beta_surfaces():
    with pytest.raises(ValueError, match="KL coefficient"):
        PPO(small(PPOConfig, env_kwargs={"kl_coef": -0.1}))


def test_policy_vocabulary_must_match_action_space():
    with pytest.raises(ValueError, match="vocabulary mismatch.*Discrete\\(12\\)"):
        PPO(small(PPOConfig, model="tiny"))


@pytest.mark.parametrize(
    "cls, kw, match",
    [
        (PPOConfig, {"num_envs": 8, "minibatch_size": 3}, "does not divide the batch"),
        (PPOConfig, {"clip_eps": 1.5}, "clip_eps"),
        (PPOConfig, {"value_model": "huge"}, "value_model"),
        (RLOOConfig, {"num_envs": 10, "k": 4, "minibatch_size": 5}, "not a multiple of k"),
        (RLOOConfig, {"k": 1}, "k \\(samples per prompt\\)"),
        (GRPOConfig, {"num_envs": 8, "group_size": 3}, "does not divide num_envs"),
        (GRPOConfig, {"group_size": 1}, "≥ 2"),
        (GRPOConfig, {"group_size": 4, "epsilon_low": 1.2}, "epsilon_low"),
        (GRPOConfig, {"group_size": 4, "epsilon_high": -0.1}, "epsilon_high"),
        (GRPOConfig, {"group_size": 4, "loss_type": "xyz"}, "loss_type"),
        (GRPOConfig, {"group_size": 4, "env_kwargs": {"kl_reward": "terminal"}}, "kl_reward"),
    ],
)
def test_bad_config_clear_error(cls, kw, match):
    agent_cls = {PPOConfig: PPO, RLOOConfig: RLOO, GRPOConfig: GRPO}[cls]
    with pytest.raises(ValueError, match=match):
        agent_cls(small(cls, **kw))


# --------------------------------------------------------------------------- save / load


def _weights(agent):
    return torch.cat([p.detach().flatten() for p in agent.parameters()])


@pytest.mark.parametrize(
    "agent_cls, config_cls, kw",
    [
        (PPO, PPOConfig, {}),
        (PPO, PPOConfig, {"value_model": "separate", "env_kwargs": {"kl_target": 1.0}}),
        (RLOO, RLOOConfig, {"k": 2}),
        (GRPO, GRPOConfig, {"group_size": 4}),
    ],
)
def test_resume_gives_the_same_weights(tmp_path, agent_cls, config_cls, kw):
    cfg = small(config_cls, lr=1e-3, **kw)
    straight = agent_cls(cfg).learn(10**6, iterations=2)
    first = agent_cls(cfg).learn(10**6, iterations=1)
    first.save(tmp_path / "ckpt")
    resumed = agent_cls.load(tmp_path / "ckpt", progress=False)  # overrides a saved field
    assert resumed.config.progress is False
    resumed.learn(10**6, iterations=1)
    assert resumed.iteration == 2 and resumed.tokens_seen == straight.tokens_seen
    torch.testing.assert_close(_weights(resumed), _weights(straight), atol=0, rtol=0)
    assert resumed.env.kl_coef == straight.env.kl_coef
    # The policy folder is a plain HF folder.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt" / "policy")
    AutoTokenizer.from_pretrained(tmp_path / "ckpt" / "policy")


def test_save_is_atomic(tmp_path):
    agent = PPO(small(PPOConfig)).learn(10**6, iterations=1)
    path = agent.save(tmp_path / "ckpt")
    before = (path / "agent.json").read_bytes()

    def crash(tmp):
        (tmp / "partial").write_text("x")
        raise KeyboardInterrupt  # a kill in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        atomic_save_dir(path, crash)
    assert (path / "agent.json").read_bytes() == before
    assert not (path / "partial").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folder left behind
    # A kill between the two renames leaves the old checkpoint at .ckpt.old: load finds it.
    os.replace(path, tmp_path / ".ckpt.old")
    with pytest.warns(UserWarning, match="interrupted save"):
        again = PPO.load(tmp_path / "ckpt")
    assert again.iteration == 1


def test_metrics_logged_to_jsonl_and_tensorboard(tmp_path):
    agent = RLOO(small(RLOOConfig, k=2, log_dir=str(tmp_path / "logs")))
    agent.learn(10**6, iterations=2)
    rows = [json.loads(x) for x in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for key in ("env/return", "env/rm_score", "env/gold_score", "env/kl", "env/kl_coef"):
        assert key in rows[0]
    for key in ("policy/entropy", "policy/clipfrac", "policy/approx_kl", "loss/policy"):
        assert key in rows[0]
    assert rows[1]["tokens"] > rows[0]["tokens"] > 0 and rows[0]["time/tokens_per_s"] > 0
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "logs").iterdir())


def test_learning_rate_decays_linearly():
    agent = PPO(small(PPOConfig, lr=1e-3))
    agent.learn(400, iterations=3)
    lrs = [h["lr"] for h in agent.history]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] < lrs[0]
    assert lrs[1] == pytest.approx(1e-3 * (1 - agent.history[0]["tokens"] / 400))


def test_cli_train(tmp_path, capsys):
    from textenv.cli import main

    out = str(tmp_path / "agent")
    args = ["train", "--algo", "grpo", "--total-tokens", "200", "--out", out]
    assert (
        main(
            [
                *args,
                "--config",
                '{"num_envs": 8, "group_size": 4, "minibatch_size": 4, "progress": false}',
            ]
        )
        == 0
    )
    assert "saved grpo agent" in capsys.readouterr().out
    assert (tmp_path / "agent" / "policy" / "model.safetensors").is_file()
    assert (tmp_path / "agent-logs" / "metrics.jsonl").is_file()


def test_evaluate_leaves_adaptive_beta_alone():
    agent = PPO(small(PPOConfig, env_kwargs={"kl_target": 0.01, "kl_horizon": 10.0}))
    agent.learn(10**6, iterations=1)
    beta = agent.env.kl_coef
    assert beta != 0.05  # the controller moved during training
    agent.evaluate(1)
    assert agent.env.kl_coef == beta
