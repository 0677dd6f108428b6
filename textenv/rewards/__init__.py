"""Run-time reward functions: learned reward models, the fused head, Python callables, and the
spec strings that name them."""

from textenv.rewards.base import (
    RewardFunction,
    RewardModelError,
    SequenceClassifierReward,
    check_reward_callable,
    check_scores,
    check_user_reward,
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
    "check_reward_callable",
    "check_user_reward",
]
