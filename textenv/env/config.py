"""Every env kwarg in one validated dataclass.

This module imports neither torch nor the models, so registering ids (``import textenv``) and the
``textenv`` command's help stay fast; the models load when an env is built.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["EnvConfig", "DEFAULT_PROMPTS", "KL_REWARD_MODES", "KL_ESTIMATORS", "DTYPES"]

KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "float64")

KL_REWARD_MODES = ("terminal", "per_token", "none")

# Prompts of the built-in no-argument tiny env (the checkers and newcomers run it offline).
DEFAULT_PROMPTS = [
    "The weather today is",
    "Once upon a time",
    "My favourite food is",
    "The best thing about Python is",
    "In the morning I",
    "This movie was",
    "Our team decided to",
    "The old house",
    "A good friend",
    "Yesterday the market",
]


@dataclass
class EnvConfig:
    """Every env kwarg, validated. All values are JSON-serialisable (except a prompt dataset)."""

    reference: str = "tiny"
    reward: str = "tiny-rm"
    prompts: Any = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    gold: str | None = None
    split: str = "train"
    eval_fraction: float = 0.1
    max_prompt_tokens: int = 8
    max_new_tokens: int = 16
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    kl_target: float | None = None
    kl_horizon: float = 10_000.0
    kl_reward: str = "terminal"
    temperature: float = 1.0
    missing_eos_penalty: float | None = None
    action_mask_top_k: int = 0
    action_mask_top_p: float = 1.0
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kl_reward not in KL_REWARD_MODES:
            raise ValueError(f"kl_reward must be one of {KL_REWARD_MODES}, got {self.kl_reward!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}"
            )
        for name in ("max_prompt_tokens", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.missing_eos_penalty is not None and not math.isfinite(self.missing_eos_penalty):
            raise ValueError(f"missing_eos_penalty must be finite, got {self.missing_eos_penalty}")
        if self.action_mask_top_k < 0:
            raise ValueError(f"action_mask_top_k must be ≥ 0, got {self.action_mask_top_k}")
        if not 0.0 < self.action_mask_top_p <= 1.0:
            raise ValueError(f"action_mask_top_p must be in (0, 1], got {self.action_mask_top_p}")
        if str(self.dtype).removeprefix("torch.") not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    @property
    def uses_action_mask(self) -> bool:
        return self.action_mask_top_k > 0 or self.action_mask_top_p < 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
