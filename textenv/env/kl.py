"""KL estimators and KL-coefficient controllers.

Estimators (Schulman, "Approximating KL divergence"), for tokens sampled from π, with
``log_ratio = log ρ(a|s) − log π(a|s)`` (ρ the reference):

* ``k1 = −log_ratio``                     unbiased, high variance, can be negative
* ``k2 = ½·log_ratio²``                   biased, low variance, ≥ 0
* ``k3 = exp(log_ratio) − 1 − log_ratio``  unbiased, ≥ 0

Controllers give the coefficient β of the penalty. :class:`AdaptiveKLController` follows
Ziegler et al. (2019): ``e = clip(KL/target − 1, −0.2, 0.2)``, ``β ← β·(1 + e·n/horizon)``,
with ``n`` the number of episodes the KL was measured on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import numpy as np
import torch

from textenv.env.config import KL_ESTIMATORS

__all__ = [
    "KL_ESTIMATORS",
    "KLEstimator",
    "kl_estimate",
    "KLController",
    "FixedKLController",
    "AdaptiveKLController",
    "make_kl_controller",
]

KLEstimator = Literal["k1", "k2", "k3"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def kl_estimate(logprobs: ArrayT, ref_logprobs: ArrayT, estimator: str = "k1") -> ArrayT:
    """Per-token KL estimate from log π (``logprobs``) and log ρ (``ref_logprobs``).

    Works elementwise on numpy arrays or torch tensors (differentiable in ``logprobs``).
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        exp = torch.exp if isinstance(log_ratio, torch.Tensor) else np.exp
        return exp(log_ratio) - 1.0 - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}")


class KLController(Protocol):
    """Gives β and is told the KL measured on finished episodes."""

    value: float

    def update(self, kl: float, n_episodes: int) -> None: ...


@dataclass
class FixedKLController:
    """A constant β."""

    value: float

    def __post_init__(self) -> None:
        _check_coef(self.value)

    def update(self, kl: float, n_episodes: int) -> None:
        """Nothing to adapt."""


@dataclass
class AdaptiveKLController:
    """Ziegler et al.'s proportional controller that steers the episode KL towards ``target``."""

    value: float
    target: float
    horizon: float = 10_000.0

    def __post_init__(self) -> None:
        _check_coef(self.value)
        if not self.target > 0:
            raise ValueError(f"adaptive KL target must be > 0, got {self.target}")
        if not self.horizon > 0:
            raise ValueError(f"adaptive KL horizon must be > 0, got {self.horizon}")

    def update(self, kl: float, n_episodes: int) -> None:
        """One proportional step from the mean KL of ``n_episodes`` finished episodes."""
        if not np.isfinite(kl):
            raise ValueError(f"adaptive KL controller got a non-finite KL ({kl})")
        error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_episodes / self.horizon


def _check_coef(value: float) -> None:
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"KL coefficient β must be a finite number ≥ 0, got {value}")


def make_kl_controller(
    kl_coef: float, kl_target: float | None = None, kl_horizon: float = 10_000.0
) -> KLController:
    """Fixed β when ``kl_target`` is None, adaptive otherwise."""
    if kl_target is None:
        return FixedKLController(float(kl_coef))
    return AdaptiveKLController(float(kl_coef), float(kl_target), float(kl_horizon))
