"""Reward over-optimisation: Gao et al. (2022)'s gold-reward curves, and best-of-n helpers.

Gao, Schulman & Hilton (2022), "Scaling laws for reward model over-optimization": a proxy reward
model is optimised, a gold reward model scores the result. With ``d = √KL(π ‖ π_init)`` the gold
reward gained over the initial policy follows

* best-of-n sampling:  ``R_bon(d) = d·(α − β·d)``
* RL (PPO):            ``R_RL(d)  = d·(α − β·log d)``

Both forms are linear in ``(α, β)`` once ``d`` is known, so :func:`fit_gold_curve` is an ordinary
least-squares fit (no intercept: ``R(0) = 0``) on ``gold − baseline``, with ``baseline`` the
initial policy's gold score.

Best-of-n (pick the best of ``n`` samples of the reference by a proxy score):

* :func:`bon_kl_bound` — the analytic ``KL(π_bon ‖ ρ) = log n − (n − 1)/n`` (exact when the
  proxy has no ties, an upper bound otherwise; Beirami et al. 2024);
* :func:`bon_kl_estimate` — the KL estimated from ``m`` reference samples per prompt, ties
  included (a discrete proxy such as an exact-match score has many);
* :func:`bon_expected` — the unbiased estimate of ``E[score of the proxy's pick among n]``
  from ``m ≥ n`` samples per prompt (every size-``n`` subset averaged in closed form).

Example::

    from textenv.overoptimization import fit_gold_curve
    fit = fit_gold_curve(kl, gold, kind="rl", baseline=gold_at_init)
    print(fit)                      # rl: α=…, β=…, R²=… (n=…)
    fit.predict([0.5, 1.0, 4.0])    # gold at those KLs (baseline included)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "FitResult",
    "gold_curve",
    "fit_gold_curve",
    "predict",
    "bon_kl_bound",
    "bon_kl_estimate",
    "bon_expected",
]

KINDS = ("rl", "bon")


def _features(d: np.ndarray, kind: str) -> np.ndarray:
    """The design matrix of ``R(d) = α·x₁ + β·x₂``: ``(d, −d²)`` for bon, ``(d, −d·log d)`` for rl
    (``d·log d → 0`` at ``d = 0``)."""
    if kind == "bon":
        second = -(d**2)
    elif kind == "rl":
        with np.errstate(divide="ignore", invalid="ignore"):
            second = np.where(d > 0, -d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return np.stack([d, second], axis=-1)


def gold_curve(kl: Any, alpha: float, beta: float, kind: str = "rl") -> np.ndarray:
    """Gao et al.'s gold-reward gain at ``kl`` (``R_bon`` or ``R_RL`` of ``d = √kl``)."""
    d = np.sqrt(_check_kl(np.asarray(kl, dtype=np.float64)))
    return _features(d, kind) @ np.array([alpha, beta], dtype=np.float64)


@dataclass(frozen=True)
class FitResult:
    """A fitted gold-reward curve.

    Attributes:
        alpha, beta: the coefficients of ``R_bon(d) = d(α − βd)`` or ``R_RL(d) = d(α − β log d)``.
        r2: coefficient of determination of the fit on ``gold − baseline`` (1 − SS_res/SS_tot,
            SS_tot about the mean; can be negative for a bad fit).
        kind: ``"rl"`` or ``"bon"``.
        n: number of points fitted.
        baseline: the gold score at ``KL = 0`` that was subtracted before fitting.
    """

    alpha: float
    beta: float
    r2: float
    kind: str
    n: int
    baseline: float = 0.0

    def predict(self, kl: Any) -> np.ndarray:
        """Gold score (``baseline`` included) at ``kl``."""
        return self.baseline + gold_curve(kl, self.alpha, self.beta, self.kind)

    @property
    def d_peak(self) -> float:
        """``d = √KL`` where the fitted gold peaks (``inf`` if it never turns down)."""
        if self.beta <= 0:
            return math.inf
        if self.kind == "bon":
            return self.alpha / (2 * self.beta)
        return math.exp(self.alpha / self.beta - 1)  # d/dd [d(α − β log d)] = α − β(log d + 1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "d_peak": self.d_peak}

    def __str__(self) -> str:
        return f"{self.kind}: α={self.alpha:.4g}, β={self.beta:.4g}, R²={self.r2:.3f} (n={self.n})"


def _check_kl(kl: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(kl)):
        raise ValueError("KL values must be finite")
    if np.any(kl < 0):
        raise ValueError(
            f"KL values must be ≥ 0 (got min {kl.min():.4g}); clip small negative sample "
            "estimates to 0 first"
        )
    return kl


def fit_gold_curve(
    kl: Any, gold: Any, kind: str = "rl", baseline: float = 0.0, *, weights: Any = None
) -> FitResult:
    """Least-squares fit of Gao et al.'s ``R_RL`` (``kind="rl"``) or ``R_bon`` (``"bon"``) to
    ``gold − baseline`` against ``d = √kl``.

    ``kl``: KL(π ‖ π_init) of each point (nats, ≥ 0); ``gold``: the gold score there;
    ``baseline``: the initial policy's gold score; ``weights``: optional per-point weights
    (e.g. 1/s.e.²). Needs at least 3 points.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    kl = np.asarray(kl, dtype=np.float64).ravel()
    gold = np.asarray(gold, dtype=np.float64).ravel()
    if kl.shape != gold.shape:
        raise ValueError(f"kl and gold must have the same length, got {len(kl)} and {len(gold)}")
    if len(kl) < 3:
        raise ValueError(f"need at least 3 points to fit α and β, got {len(kl)}")
    _check_kl(kl)
    if not np.all(np.isfinite(gold)) or not math.isfinite(baseline):
        raise ValueError("gold scores and baseline must be finite")
    w = np.ones_like(kl) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != kl.shape or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite, ≥ 0 and one per point")
    y = gold - baseline
    x = _features(np.sqrt(kl), kind)
    sw = np.sqrt(w)
    if np.linalg.matrix_rank(x * sw[:, None]) < 2:
        raise ValueError("the points do not determine α and β (need ≥ 2 distinct KL > 0)")
    (alpha, beta), *_ = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)
    resid = y - x @ np.array([alpha, beta])
    mean = np.average(y, weights=w)
    ss_tot = float(np.sum(w * (y - mean) ** 2))
    ss_res = float(np.sum(w * resid**2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return FitResult(float(alpha), float(beta), float(r2), kind, int(len(kl)), float(baseline))


def predict(fit: FitResult, kl: Any) -> np.ndarray:
    """``fit.predict(kl)``: the fitted gold score (baseline included) at ``kl``."""
    return fit.predict(kl)


# --------------------------------------------------------------------------- best-of-n


def bon_kl_bound(n: int | np.ndarray) -> float | np.ndarray:
    """``KL(π_bon ‖ ρ) = log n − (n − 1)/n`` for best-of-``n`` (exact without ties in the
    selection score, an upper bound with them)."""
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(n_arr < 1):
        raise ValueError(f"n must be ≥ 1, got {n}")
    out = np.log(n_arr) - (n_arr - 1) / n_arr
    return float(out) if out.ndim == 0 else out


def _check_samples(scores: Any, n: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2:
        raise ValueError(f"scores must be (prompts, samples), got shape {s.shape}")
    if not 1 <= n <= s.shape[1]:
        raise ValueError(f"n must be in [1, samples per prompt = {s.shape[1]}], got {n}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return s


def bon_kl_estimate(scores: Any, n: int) -> float:
    """KL(π_bon ‖ ρ) estimated from ``m`` reference samples per prompt (shape ``(P, m)``), with
    the selection score's ties (broken uniformly at random, as picking the first of iid samples
    does).

    Given the best score ``v``, the pick is distributed as ρ conditioned on score ``v``, so the
    KL is that of the score distribution: ``Σ_v q_v log(q_v / p_v)`` with
    ``q_v = F(v)^n − F(v⁻)^n``. ``p`` and ``F`` are the per-prompt empirical distribution
    (a plug-in estimate; averaged over prompts). Without ties it tends to
    :func:`bon_kl_bound` as ``m`` grows.
    """
    s = _check_samples(scores, n)
    m = s.shape[1]
    total = 0.0
    for row in s:
        _, counts = np.unique(row, return_counts=True)
        cdf = np.cumsum(counts) / m
        below = cdf - counts / m
        q = cdf**n - below**n
        p = counts / m
        nz = q > 0
        total += float(np.sum(q[nz] * np.log(q[nz] / p[nz])))
    return total / len(s)


def bon_expected(select: Any, report: Any = None, n: int = 1) -> np.ndarray:
    """Per prompt, the unbiased estimate of the ``report`` score of the sample that ``select``
    ranks best among ``n`` drawn from the ``m`` given (shapes ``(P, m)``; ``report`` defaults
    to ``select``). Ties in ``select`` count as a uniformly random pick among them.

    Sorting by ``select``, the ``i``-th smallest of ``m`` is the best of a random ``n``-subset
    with probability ``C(i−1, n−1)/C(m, n)``; tied ranks share their weight.
    """
    s = _check_samples(select, n)
    r = s if report is None else np.asarray(report, dtype=np.float64).reshape(s.shape)
    m = s.shape[1]
    i = np.arange(1, m + 1)
    ok = i >= n
    # C(i−1, n−1) / C(m, n), in log space (stable for large m).
    logw = (
        _lgamma(i)
        - _lgamma(n)
        - _lgamma(np.maximum(i - n + 1, 1))
        - _lgamma(m + 1)
        + _lgamma(n + 1)
        + _lgamma(m - n + 1)
    )
    w = np.where(ok, np.exp(logw), 0.0)
    out = np.empty(len(s))
    for p, (srow, rrow) in enumerate(zip(s, r, strict=True)):
        order = np.argsort(srow, kind="stable")
        ss, rr = srow[order], rrow[order]
        # Tied selection scores: the pick is uniform among them, so average report within ties.
        _, inv, counts = np.unique(ss, return_inverse=True, return_counts=True)
        rr = (np.bincount(inv, weights=rr) / counts)[inv]
        out[p] = float(np.sum(w * rr))
    return out


def _lgamma(x: Any) -> np.ndarray:
    return np.vectorize(math.lgamma, otypes=[np.float64])(np.asarray(x, dtype=np.float64))
