"""Every env kwarg in one validated dataclass.

This module imports neither torch nor the models, so registering ids (``import textenv``) and the
``textenv`` command's help stay fast; the models load when an env is built.

Every field is checked by type and range when the config is built, with an error that names the
kwarg: a bool is not an integer or a number, and a numeric string (``kl_coef="0.1"``) is not a
number either.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from textenv.validation import check_int, check_real, type_name

__all__ = [
    "EnvConfig",
    "DEFAULT_PROMPTS",
    "KL_REWARD_MODES",
    "KL_ESTIMATORS",
    "KL_LOGPROB_MODES",
    "DTYPES",
    "SPLITS",
    "MIN_TEMPERATURE",
    "check_int",
    "check_real",
]

KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "float64")
SPLITS: tuple[str, ...] = ("train", "eval", "all")

KL_REWARD_MODES = ("terminal", "per_token", "none")
# What a step without log π does: "warn" (once; that token adds 0 to KL̂) or "require" (raise).
KL_LOGPROB_MODES = ("warn", "require")

# Below this the reference's logits / T overflow float32 for ordinary logit ranges.
MIN_TEMPERATURE = 1e-3

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


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_spec(name: str, value: Any, *, allow_callable: bool, optional: bool = False) -> Any:
    """A model/reward spec string (or a callable where allowed)."""
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{name} must be a non-empty spec string, got {value!r}")
        return value
    if allow_callable and callable(value):
        return value
    kinds = "a spec string or a callable" if allow_callable else "a spec string"
    if optional:
        kinds += " or None"
    raise TypeError(f"{name} must be {kinds}, got {value!r:.80} ({type_name(value)})")


def _check_prompts(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (str, list, tuple)) or hasattr(value, "column_names"):
        return value
    raise TypeError(
        "prompts must be a list of strings or {'prompt': str} dicts, a .txt/.jsonl path, a "
        f"datasets.Dataset or a 'module:function' spec, got {value!r:.80} ({type_name(value)})"
    )


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
    kl_logprob: str = "warn"
    temperature: float = 1.0
    missing_eos_penalty: float | None = None
    action_mask_top_k: int = 0
    action_mask_top_p: float = 1.0
    device: str = "cpu"
    dtype: str = "float32"

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> EnvConfig:
        """``EnvConfig(**kwargs)`` with an unknown kwarg named next to the accepted ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown env kwarg(s) {unknown}; the env accepts {sorted(known)}")
        return cls(**kwargs)

    def __post_init__(self) -> None:
        self.reference = _check_spec("reference", self.reference, allow_callable=False)
        self.reward = _check_spec("reward", self.reward, allow_callable=True)
        self.gold = _check_spec("gold", self.gold, allow_callable=True, optional=True)
        self.prompts = _check_prompts(self.prompts)
        self.split = _check_choice("split", self.split, SPLITS)
        self.eval_fraction = check_real("eval_fraction", self.eval_fraction)
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        self.max_prompt_tokens = check_int("max_prompt_tokens", self.max_prompt_tokens, 1)
        self.max_new_tokens = check_int("max_new_tokens", self.max_new_tokens, 1)
        self.kl_coef = check_real("kl_coef", self.kl_coef)
        if self.kl_coef < 0:
            raise ValueError(
                f"kl_coef: KL coefficient β must be a finite number ≥ 0, got {self.kl_coef}"
            )
        self.kl_estimator = _check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        if self.kl_target is not None:
            self.kl_target = check_real("kl_target", self.kl_target)
            if self.kl_target <= 0:
                raise ValueError(
                    f"kl_target must be > 0 (or None for a fixed β), got {self.kl_target}"
                )
        self.kl_horizon = check_real("kl_horizon", self.kl_horizon)
        if self.kl_horizon <= 0:
            raise ValueError(f"kl_horizon must be > 0, got {self.kl_horizon}")
        self.kl_reward = _check_choice("kl_reward", self.kl_reward, KL_REWARD_MODES)
        self.kl_logprob = _check_choice("kl_logprob", self.kl_logprob, KL_LOGPROB_MODES)
        self.temperature = check_real("temperature", self.temperature)
        if self.temperature < MIN_TEMPERATURE:
            raise ValueError(
                f"temperature must be a finite number ≥ {MIN_TEMPERATURE}, got {self.temperature}"
            )
        if self.missing_eos_penalty is not None:
            self.missing_eos_penalty = check_real("missing_eos_penalty", self.missing_eos_penalty)
        self.action_mask_top_k = check_int("action_mask_top_k", self.action_mask_top_k, 0)
        self.action_mask_top_p = check_real("action_mask_top_p", self.action_mask_top_p)
        if not 0.0 < self.action_mask_top_p <= 1.0:
            raise ValueError(f"action_mask_top_p must be in (0, 1], got {self.action_mask_top_p}")
        if type(self.device).__name__ == "device":  # a torch.device, kept JSON-friendly
            self.device = str(self.device)
        if not isinstance(self.device, str) or not self.device:
            raise TypeError(
                f"device must be a string such as 'cpu' or 'cuda:0', got {self.device!r}"
            )
        dtype = str(self.dtype).removeprefix("torch.")
        if not isinstance(self.dtype, str) and type(self.dtype).__name__ != "dtype":
            raise TypeError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    @property
    def uses_action_mask(self) -> bool:
        return self.action_mask_top_k > 0 or self.action_mask_top_p < 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
