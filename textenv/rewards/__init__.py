"""Run-time reward functions: learned reward models, the fused head, Python callables, and the
spec strings that name them."""

from textenv.rewards.base import (
    RewardFunction,
    RewardModelError,
    SequenceClassifierReward,
    check_scores,
    load_reward,
    score,
)

__all__ = [
    "RewardFunction",
    "RewardModelError",
    "SequenceClassifierReward",
    "load_reward",
    "score",
    "check_scores",
]
