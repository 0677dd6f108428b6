"""A fixed-seed PPO and GRPO run gives the numbers it gave before the update path was optimised.

The update path (old log-probs and values, the minibatch forwards, the model's kernels) may be
made faster, but not different beyond floating-point noise. ``EXPECTED`` was produced by running
``python tests/test_update_pinned.py`` on the code before those optimisations (commit 4ebd42a
plus this file), on one torch thread: two iterations of 16 episodes on ``textenv/Sort-v0``
(seed 0), the second of which samples from the policy the first update produced.
``env/train_return`` is the mean of the rewards the agent trained on (it was logged as
``env/return`` when the numbers were produced); GRPO runs with ``kl_ratio=False``, the k3 term
of the loss as it was then (the ratio-weighted term came later, on purpose). The tolerance
is float noise (a reordered sum or a fused kernel moves the 6th digit), far below what a real
change of the update does (a different loss or a skipped step moves the 1st-3rd digit).
"""

from __future__ import annotations

import sys

import pytest
import torch

from agents import GRPO, PPO, GRPOConfig, PPOConfig

pytestmark = pytest.mark.usefixtures("one_thread")

KEYS = {
    "ppo": (
        "loss/policy",
        "loss/value",
        "policy/approx_kl",
        "policy/grad_norm",
        "env/train_return",
    ),
    "grpo": (
        "loss/policy",
        "grpo/kl_k3",
        "policy/approx_kl",
        "policy/grad_norm",
        "env/train_return",
    ),
}
EXPECTED = {
    "ppo": {
        "loss/policy": 0.006415322422981262,
        "loss/value": 0.054884031880646944,
        "policy/approx_kl": 0.033525166567415,
        "policy/grad_norm": 6.2218217253685,
        "env/train_return": 0.2954968810081482,
    },
    "grpo": {
        "loss/policy": -0.006537884473800659,
        "grpo/kl_k3": 0.0902781505137682,
        "policy/approx_kl": 0.015908739995211363,
        "policy/grad_norm": 4.08698958158493,
        "env/train_return": 0.5180555582046509,
    },
}
EXPECTED_WEIGHTS = {"ppo": 76.19636948406696, "grpo": 68.26800336875021}


def _run(algo: str) -> tuple[dict[str, float], float]:
    """The metrics of the second iteration and Σ|θ − θ₀| of the policy after two updates."""
    common = dict(env_id="textenv/Sort-v0", num_envs=16, seed=0, progress=False, lr=3e-4)
    if algo == "ppo":
        agent = PPO(PPOConfig(minibatch_size=8, epochs=2, **common))
    else:
        agent = GRPO(GRPOConfig(minibatch_size=8, epochs=2, group_size=4, kl_ratio=False, **common))
    start = [p.detach().clone() for p in agent.policy.model.parameters()]
    agent.learn(10**6, iterations=2)
    moved = sum(
        float((p.detach() - p0).abs().sum())
        for p, p0 in zip(agent.policy.model.parameters(), start)
    )
    agent.close()
    last = agent.history[-1]
    return {k: last[k] for k in KEYS[algo]}, moved


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_fixed_seed_update_matches_previous_code(algo):
    metrics, moved = _run(algo)
    for key, want in EXPECTED[algo].items():
        assert metrics[key] == pytest.approx(want, rel=2e-4, abs=2e-6), key
    assert moved == pytest.approx(EXPECTED_WEIGHTS[algo], rel=2e-4)


if __name__ == "__main__":  # prints the numbers to pin
    torch.set_num_threads(1)
    for name in sys.argv[1:] or ["ppo", "grpo"]:
        print(name, *_run(name))
