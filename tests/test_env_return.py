"""Every agent logs the env's own accounting: ``env/return`` = RM − β·KL on the same episodes.

GRPO asks the env for RM only (its KL term is in the loss) and PPO / RLOO take the env's
terminal ``−β·KL``, so the rewards they train on differ; what they log as ``env/return``,
``env/rm_score`` and ``env/kl`` must not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import GRPO, PPO, RLOO, GRPOConfig, PPOConfig, RLOOConfig
from agents.base import env_return

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["123>", "123>", "123>", "123>", "9071>", "9071>", "9071>", "9071>"]


def _first_iteration(agent_cls, config_cls):
    """One iteration on fixed prompts with a policy moved off the reference (so KL > 0);
    returns the logged metrics and the rollout they were computed from."""
    config = config_cls(
        env_id="textenv/Sort-v0",
        env_kwargs={"kl_coef": 0.2},
        num_envs=8,
        minibatch_size=8,
        seed=3,
        progress=False,
    )
    agent = agent_cls(config)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the same perturbation for every agent: identical policies
        for p in agent.policy.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=noise))
    seen = []

    def collect():
        seen.append(agent.policy.rollout(agent.generator, prompts=PROMPTS))
        return seen[-1]

    agent._collect = collect
    agent.learn(10**6, iterations=1)
    agent.close()
    return agent.history[0], seen[0]


def test_all_agents_log_rm_minus_beta_kl_on_the_same_episodes():
    runs = {
        "ppo": _first_iteration(PPO, PPOConfig),
        "grpo": _first_iteration(GRPO, GRPOConfig),
        "rloo": _first_iteration(RLOO, RLOOConfig),
    }
    texts = {name: r.texts for name, (_, r) in runs.items()}
    assert texts["ppo"] == texts["grpo"] == texts["rloo"]  # the same episodes
    for name, (metrics, rollout) in runs.items():
        fin = rollout.final
        expected = np.mean(fin["rm_score"] - fin["kl_coef"] * fin["kl"])
        assert np.all(fin["kl_coef"] == 0.2), name
        assert metrics["env/return"] == pytest.approx(expected, abs=1e-6), name
        assert metrics["env/rm_score"] == pytest.approx(np.mean(fin["rm_score"]), abs=1e-6)
        assert metrics["env/kl"] == pytest.approx(np.mean(fin["kl"]), abs=1e-6)
        assert metrics["env/kl"] > 0.5, name  # the check would be vacuous at KL 0
    ret = [m["env/return"] for m, _ in runs.values()]
    assert ret[0] == pytest.approx(ret[1], abs=1e-5) and ret[0] == pytest.approx(ret[2], abs=1e-5)
    # What each trained on differs: GRPO's env paid RM only, the others RM − β·KL.
    grpo_metrics, grpo_rollout = runs["grpo"]
    assert grpo_metrics["env/train_return"] == pytest.approx(
        np.mean(grpo_rollout.final["rm_score"]), abs=1e-5
    )
    assert grpo_metrics["env/train_return"] > grpo_metrics["env/return"] + 0.1
    for name in ("ppo", "rloo"):
        m, _ = runs[name]
        assert m["env/train_return"] == pytest.approx(m["env/return"], abs=1e-5)


def test_env_return_subtracts_the_missing_eos_penalty():
    fin = {
        "rm_score": np.array([1.0, 0.5]),
        "kl": np.array([2.0, 4.0]),
        "kl_coef": np.array([0.1, 0.1]),
        "penalty": np.array([0.0, 1.0]),
    }
    np.testing.assert_allclose(env_return(fin), [0.8, -0.9])
