"""KL estimators and KL-coefficient controllers.

Estimators (Schulman, "Approximating KL divergence"), for tokens sampled from π, with
``log_ratio = log ρ(a|s) − log π(a|s)`` (ρ the reference):

* ``k1 = −log_ratio``                     unbiased, high variance, can be negative
* ``k2 = ½·log_ratio²``                   biased, low variance, ≥ 0
* ``k3 = exp(log_ratio) − 1 − log_ratio``  unbiased, ≥ 0

The env charges KL on log π values the agent hands it, so it checks them (:func:`check_logprob`,
:func:`check_logprobs`): a finite number in ``[LOGPROB_MIN, 0]`` (up to ``LOGPROB_SLACK`` above 0
is rounding and read as 0). For k3 the env clamps each token's log ratio to
``±K3_MAX_LOG_RATIO`` first (as OpenRLHF does): ``exp`` of a larger ratio is an overflow, not an
estimate. k1 and k2 are used unclamped (bounded by the checked inputs).

Controllers give the coefficient β of the penalty. :class:`AdaptiveKLController` follows
Ziegler et al. (2019): ``e = clip(KL/target − 1, −0.2, 0.2)``, ``β ← β·(1 + e·n/horizon)``,
with ``n`` the number of episodes the KL was measured on.
"""

from __future__ import annotations

import numbers
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch

from textenv.env.config import KL_ESTIMATORS

__all__ = [
    "KL_ESTIMATORS",
    "KLEstimator",
    "LOGPROB_MIN",
    "LOGPROB_SLACK",
    "K3_MAX_LOG_RATIO",
    "check_logprob",
    "check_logprobs",
    "LogProbMissingError",
    "report_missing_logprob",
    "kl_estimate",
    "KLController",
    "FixedKLController",
    "AdaptiveKLController",
    "make_kl_controller",
]

KLEstimator = Literal["k1", "k2", "k3"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# e^-1000 is far below float64's smallest number (e^-745): no sampler draws such a token.
LOGPROB_MIN = -1000.0
# float32 log_softmax can round a near-certain token's log-prob a hair above 0.
LOGPROB_SLACK = 1e-4
# exp(10) ≈ 2.2e4: k3's largest per-token value; beyond it exp() overflows into nonsense.
K3_MAX_LOG_RATIO = 10.0

_LOGPROB_RULE = f"a finite log-probability in [{LOGPROB_MIN:g}, 0]"


def _as_float_array(value: Any, name: str) -> np.ndarray:
    """numpy arrays, torch tensors (any device), Python/numpy numbers and lists of them as float64;
    bools, strings, None and other objects are refused (they would become 0/1 or NaN silently)."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must hold real numbers, got a {value.dtype} tensor")
        return value.detach().cpu().to(torch.float64).numpy()  # MPS has no float64: cpu first
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if isinstance(value, numbers.Real):
        return np.asarray(float(value))
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numbers, got {value!r:.80}") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must be real numbers (a float array, tensor or list of floats), got "
            f"{value!r:.80} (dtype {arr.dtype})"
        )
    return arr.astype(np.float64)


def _check_range(arr: np.ndarray, name: str, allow_nan: bool) -> np.ndarray:
    bad = np.isinf(arr) | (arr > LOGPROB_SLACK) | (arr < LOGPROB_MIN)
    if not allow_nan:
        bad |= np.isnan(arr)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        where = f" (row {i})" if arr.ndim else ""
        raise ValueError(
            f"{name} must be {_LOGPROB_RULE}, got {arr.reshape(-1)[i]}{where}"
            + (
                " (it is the log of the probability, not the probability)"
                if arr.reshape(-1)[i] > 0
                else ""
            )
        )
    return np.minimum(arr, 0.0)  # NaN stays NaN


def check_logprob(value: Any, name: str = "log π") -> float:
    """One log-probability (a Python or numpy number, or a one-element array or tensor)."""
    arr = _as_float_array(value, name)
    if arr.size != 1:
        raise ValueError(f"{name} must be a single number, got an array of shape {arr.shape}")
    return float(_check_range(arr.reshape(()), name, allow_nan=False))


def check_logprobs(values: Any, n: int, name: str = "log π") -> np.ndarray:
    """``(n,)`` log-probabilities (NaN = none for that row) from an array, tensor or list."""
    arr = _as_float_array(values, name)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one per env, got shape {arr.shape}")
    return _check_range(arr, name, allow_nan=True)


class LogProbMissingError(RuntimeError):
    """A step came without log π while the env was built with ``kl_logprob="require"``."""


def _sb3_caller() -> str | None:
    """``"wrapper"`` when textenv's SB3 adapters (``agents.sb3``) are on the call stack of this
    step, ``"sb3"`` when Stable-Baselines3 (or sb3-contrib) is there without them, else None."""
    found = None
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module == "agents.sb3":
            return "wrapper"
        if module.startswith(("stable_baselines3", "sb3_contrib")):
            found = "sb3"
        frame = frame.f_back
    return found


_OWN_AGENT_FIX = (
    "Own agent: call env.unwrapped.set_action_logprob(x) before each step (vector env: "
    "env.unwrapped.set_action_logprobs(array of num_envs), NaN for a row without one). "
    "Stable-Baselines3: build the VecEnv with agents.sb3.make_sb3_env(env_id, n_envs) or wrap "
    "it in agents.sb3.LogProbVecEnvWrapper."
)
_SB3_FIX = (
    "This step came from Stable-Baselines3 without textenv's log π link, so the KL penalty of "
    "the whole run would be 0: build the VecEnv with agents.sb3.make_sb3_env(env_id, n_envs) "
    "(or wrap your VecEnv in agents.sb3.LogProbVecEnvWrapper(venv)) and pass it to the model."
)
_WRAPPER_FIX = (
    "The VecEnv of agents.sb3 found no SB3 policy to take log-probs from (it looks for the "
    "algorithm on the call stack of model.learn): when stepping it yourself, call "
    "venv.attach(model) first."
)
_FIXES = {None: _OWN_AGENT_FIX, "sb3": _SB3_FIX, "wrapper": _WRAPPER_FIX}


def report_missing_logprob(mode: str, already_warned: bool, stacklevel: int = 3) -> None:
    """A step without log π: raise under ``kl_logprob="require"``, else warn once.

    The message names the fix for the caller: an own agent (the channel) or Stable-Baselines3
    used without the wrapper (detected from the call stack).
    """
    if mode != "require" and already_warned:
        return  # once is enough (and the stack walk below is not free)
    fix = _FIXES[_sb3_caller()]
    if mode == "require":
        raise LogProbMissingError(
            f"no log π was supplied before step() and the env was built with "
            f"kl_logprob='require'. {fix}"
        )
    warnings.warn(
        "no log π was supplied before step(): the env takes log π = log ρ for such tokens, "
        f"so they add 0 to the KL penalty. {fix} Pass kl_logprob='require' to make this an "
        "error; info['logprob_source'] says 'agent' or 'none' per step.",
        stacklevel=stacklevel + 1,
    )


def kl_estimate(
    logprobs: ArrayT,
    ref_logprobs: ArrayT,
    estimator: str = "k1",
    *,
    max_log_ratio: float | None = None,
) -> ArrayT:
    """Per-token KL estimate from log π (``logprobs``) and log ρ (``ref_logprobs``).

    Works elementwise on numpy arrays or torch tensors (differentiable in ``logprobs``).
    ``max_log_ratio`` clamps ``log ρ − log π`` to ``±max_log_ratio`` for k3 (the env passes
    :data:`K3_MAX_LOG_RATIO`).
    """
    log_ratio = ref_logprobs - logprobs
    if max_log_ratio is not None and estimator == "k3":
        clip = torch.clamp if isinstance(log_ratio, torch.Tensor) else np.clip
        log_ratio = clip(log_ratio, -max_log_ratio, max_log_ratio)
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
