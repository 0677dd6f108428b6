"""Fixed-seed rollouts, reference scoring and updates give the numbers the code gave before
the sampling and update paths were made faster.

The benchmark's settings in small (``benchmarks/trl_side_by_side.py``: Sentiment-v0, the
``builtin:prose`` GPT-2, the VADER gold score as the reward, β 0.05, completions of at most 24
tokens), one torch thread. ``EXPECTED`` was produced by ``python tests/test_fast_paths_pinned.py``
on the code before those changes (commit 32acc28): a rollout's tokens must be the same tokens
(sampling reads the same logits up to float rounding, and an inverse-CDF draw only moves when a
uniform lands within that rounding of a bucket edge), and the metrics of one training iteration
(rollout + update) agree to float noise (rel 1e-5). The update cases cover the paths that
differ: PPO with one minibatch per epoch and with two, GRPO with one epoch (log π_old from the
rollout) and with two, each with the k3 term weighted by the ratio (the default).
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from agents import GRPO, PPO, GRPOConfig, PPOConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ENV_KWARGS = {
    "reward": "textenv.tasks.sentiment:gold_score",
    "gold": None,
    "kl_coef": 0.05,
    "max_new_tokens": 24,
}
COMMON = dict(env_id="textenv/Sentiment-v0", env_kwargs=ENV_KWARGS, seed=0, progress=False, lr=5e-4)
CASES = {
    "ppo-1mb": (PPO, PPOConfig, dict(num_envs=8, minibatch_size=8, epochs=3)),
    "ppo-2mb": (PPO, PPOConfig, dict(num_envs=8, minibatch_size=4, epochs=2)),
    "grpo-1ep": (GRPO, GRPOConfig, dict(num_envs=8, minibatch_size=8, epochs=1, group_size=4)),
    "grpo-2ep": (GRPO, GRPOConfig, dict(num_envs=8, minibatch_size=4, epochs=2, group_size=4)),
}
KEYS = (
    "loss/policy",
    "loss/value",
    "value/mean",
    "value/explained_variance",
    "grpo/kl_k3",
    "policy/grad_norm",
    "policy/approx_kl",
    "policy/entropy",
    "env/train_return",
    "env/kl",
)

# python tests/test_fast_paths_pinned.py (one thread, commit 32acc28, before the changes)
EXPECTED: dict[str, dict] = json.loads(
    """
{
 "ppo-1mb": {
 "tokens": [[264, 923, 938, 76, 1294, 82, 1544, 309, 199, 1482, 743, 369, 70, 800, 491, 369, 597, 1000, 800, 221, 333, 388, 287, 977], [274, 1822, 294, 259, 1310, 13, 1101, 830, 14, 0], [1310, 384, 1412, 1268, 14, 68, 1232, 277, 359, 199, 268, 259, 628, 27, 480, 261, 85, 63, 1504, 12, 264, 221, 4, 48], [479, 14, 0], [294, 264, 530, 294, 706, 646, 277, 359, 1199, 1014, 264, 199, 273, 390, 259, 456, 309, 1490, 14, 491, 349, 291, 713, 309], [54, 53, 46, 51, 15, 11, 199, 51, 26, 540, 1287, 34, 35, 52, 259, 279, 276, 1503, 530, 846, 12, 493, 264, 1169], [288, 1410, 512, 63, 261, 336, 379, 450, 992, 1335, 259, 63, 266, 432, 77, 919, 844, 199, 336, 309, 450, 1016, 1152, 294], [259, 594, 367, 294, 264, 1429, 1530, 83, 259, 199, 84, 868, 1986, 352, 858, 594, 333, 282, 754, 397, 277, 672, 907, 77]],
  "logprob_sum": -572.976155385375,
  "ref_logprob_sum": -572.9761433601379,
  "score_after_sum": -576.5271048545837,
  "metrics": {"loss/policy": -0.09493064826587745, "loss/value": 0.0156506123021245, "value/mean": 0.0, "value/explained_variance": -0.00039756298065185547, "policy/grad_norm": 1.2319598297278087, "policy/approx_kl": 0.2612491403162606, "policy/entropy": 3.6973939519019643, "env/train_return": 0.028800081461668015, "env/kl": -1.5031546354293823e-06}
 },
 "ppo-2mb": {
 "tokens": [[264, 923, 938, 76, 1294, 82, 1544, 309, 199, 1482, 743, 369, 70, 800, 491, 369, 597, 1000, 800, 221, 333, 388, 287, 977], [274, 1822, 294, 259, 1310, 13, 1101, 830, 14, 0], [1310, 384, 1412, 1268, 14, 68, 1232, 277, 359, 199, 268, 259, 628, 27, 480, 261, 85, 63, 1504, 12, 264, 221, 4, 48], [479, 14, 0], [294, 264, 530, 294, 706, 646, 277, 359, 1199, 1014, 264, 199, 273, 390, 259, 456, 309, 1490, 14, 491, 349, 291, 713, 309], [54, 53, 46, 51, 15, 11, 199, 51, 26, 540, 1287, 34, 35, 52, 259, 279, 276, 1503, 530, 846, 12, 493, 264, 1169], [288, 1410, 512, 63, 261, 336, 379, 450, 992, 1335, 259, 63, 266, 432, 77, 919, 844, 199, 336, 309, 450, 1016, 1152, 294], [259, 594, 367, 294, 264, 1429, 1530, 83, 259, 199, 84, 868, 1986, 352, 858, 594, 333, 282, 754, 397, 277, 672, 907, 77]],
  "logprob_sum": -572.976155385375,
  "ref_logprob_sum": -572.9761433601379,
  "score_after_sum": -579.8580203056335,
  "metrics": {"loss/policy": 0.005253312177956104, "loss/value": 0.0176040711812675, "value/mean": 0.0, "value/explained_variance": -0.00039756298065185547, "policy/grad_norm": 2.568176619708538, "policy/approx_kl": 0.3531987702008337, "policy/entropy": 3.6973939519019643, "env/train_return": 0.028800081461668015, "env/kl": -1.5031546354293823e-06}
 },
 "grpo-1ep": {
 "tokens": [[343, 525, 376, 464, 1825, 14, 0], [199, 1758, 784, 14, 454, 76, 554, 1126, 82, 423, 83, 26, 491, 411, 637, 12, 555, 291, 199, 558, 857, 1966, 12, 264], [1057, 996, 499, 1598, 64, 12, 765, 264, 807, 278, 199, 80, 340, 570, 325, 83, 264, 199, 1598, 14, 0], [519, 294, 587, 73, 1076, 1621, 281, 259, 199, 1833, 1549, 259, 530, 846, 458, 1273, 730, 1496, 1033, 14, 0], [409, 291, 294, 459, 339, 350, 380, 526, 1529, 350, 294, 259, 199, 677, 12, 309, 464, 1506, 14, 773, 450, 315, 745, 1042], [1059, 13, 261, 456, 14, 0], [478, 1573, 966, 369, 45, 40, 52, 40, 1319, 1485, 37, 7, 309, 369, 35, 591, 555, 369, 42, 50, 47, 1361, 1641, 52], [602, 300, 334, 966, 801, 801, 1867, 12, 616, 642, 199, 623, 1997, 416, 638, 936, 14, 0]],
  "logprob_sum": -488.42510033305734,
  "ref_logprob_sum": -488.42509174346924,
  "score_after_sum": -488.77902698516846,
  "metrics": {"loss/policy": 2.60770320892334e-08, "grpo/kl_k3": -1.6442660566440281e-09, "policy/grad_norm": 1.6974786520004272, "policy/approx_kl": -6.294456067479359e-10, "policy/entropy": 3.5543165864615607, "env/train_return": 0.07301250100135803, "env/kl": -1.0736985132098198e-06}
 },
 "grpo-2ep": {
 "tokens": [[343, 525, 376, 464, 1825, 14, 0], [199, 1758, 784, 14, 454, 76, 554, 1126, 82, 423, 83, 26, 491, 411, 637, 12, 555, 291, 199, 558, 857, 1966, 12, 264], [1057, 996, 499, 1598, 64, 12, 765, 264, 807, 278, 199, 80, 340, 570, 325, 83, 264, 199, 1598, 14, 0], [519, 294, 587, 73, 1076, 1621, 281, 259, 199, 1833, 1549, 259, 530, 846, 458, 1273, 730, 1496, 1033, 14, 0], [409, 291, 294, 459, 339, 350, 380, 526, 1529, 350, 294, 259, 199, 677, 12, 309, 464, 1506, 14, 773, 450, 315, 745, 1042], [1059, 13, 261, 456, 14, 0], [478, 1573, 966, 369, 45, 40, 52, 40, 1319, 1485, 37, 7, 309, 369, 35, 591, 555, 369, 42, 50, 47, 1361, 1641, 52], [602, 300, 334, 966, 801, 801, 1867, 12, 616, 642, 199, 623, 1997, 416, 638, 936, 14, 0]],
  "logprob_sum": -488.42510033305734,
  "ref_logprob_sum": -488.42509174346924,
  "score_after_sum": -522.2445259094238,
  "metrics": {"loss/policy": -0.02916787378489971, "grpo/kl_k3": 0.47064897464588284, "policy/grad_norm": 1.3554771915078163, "policy/approx_kl": 0.1321464382385, "policy/entropy": 3.5543165864615607, "env/train_return": 0.07301250100135803, "env/kl": -1.0736985132098198e-06}
 }
}
"""
)


def _agent(case: str):
    agent_cls, config_cls, kw = CASES[case]
    return agent_cls(config_cls(**COMMON, **kw))


def run_case(case: str) -> dict:
    """One iteration: the rollout's tokens, its log-probs and the env's reference log-probs, the
    update's metrics, and the policy's log-probs of the rollout after the update."""
    agent = _agent(case)
    rollouts = []
    collect = agent._collect

    def keep() -> object:
        rollouts.append(collect())
        return rollouts[-1]

    agent._collect = keep
    agent.learn(10**9, iterations=1)
    (r,) = rollouts
    with torch.no_grad():
        after = agent.policy.score(r)
    row = agent.history[-1]
    agent.close()
    m = r.mask
    return {
        "tokens": [
            [int(t) for t, k in zip(row_t, row_m) if k] for row_t, row_m in zip(r.tokens, m)
        ],
        "logprob_sum": float(r.logprobs[m].double().sum()),
        "ref_logprob_sum": float(torch.as_tensor(r.ref_logprobs)[m].sum()),
        "score_after_sum": float(after[m].double().sum()),
        "metrics": {k: row[k] for k in KEYS if k in row},
    }


@pytest.mark.parametrize("case", list(CASES))
def test_fixed_seed_iteration_matches_previous_code(case):
    got, want = run_case(case), EXPECTED[case]
    assert got["tokens"] == want["tokens"]
    for key in ("logprob_sum", "ref_logprob_sum", "score_after_sum"):
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    assert set(got["metrics"]) == set(want["metrics"])
    for key, value in want["metrics"].items():
        # abs: float noise around 0 (the first epoch's approx KL, a ratio-1 loss, the KL of an
        # untrained policy to its own reference)
        assert got["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


if __name__ == "__main__":  # prints EXPECTED
    torch.set_num_threads(1)
    print(json.dumps({c: run_case(c) for c in sys.argv[1:] or CASES}, indent=1))
