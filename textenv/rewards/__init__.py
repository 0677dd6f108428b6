"""Run-time reward functions: learned reward models, the fused head, Python callables, and the
spec strings that name them."""

from textenv.rewards import base
from textenv.rewards.base import *  # noqa: F403  (its __all__)

# Base's list is the package's, but for the signature text (a constant of base alone).
__all__ = [name for name in base.__all__ if name != "REWARD_SIGNATURE"]
