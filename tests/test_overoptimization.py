"""Gao et al. gold-curve fits and best-of-n helpers (textenv.overoptimization)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from textenv.overoptimization import (
    FitResult,
    bon_expected,
    bon_kl_bound,
    bon_kl_estimate,
    fit_gold_curve,
    gold_curve,
    predict,
)


@pytest.mark.parametrize(("kind", "alpha", "beta"), [("rl", 0.8, 0.3), ("bon", 0.5, 0.12)])
def test_fit_recovers_known_coefficients(kind: str, alpha: float, beta: float) -> None:
    rng = np.random.default_rng(0)
    kl = rng.uniform(0.0, 25.0, size=60)
    baseline = 0.4
    gold = baseline + gold_curve(kl, alpha, beta, kind) + rng.normal(0, 0.01, size=kl.shape)
    fit = fit_gold_curve(kl, gold, kind=kind, baseline=baseline)
    assert isinstance(fit, FitResult)
    assert fit.kind == kind and fit.n == 60 and fit.baseline == baseline
    assert fit.alpha == pytest.approx(alpha, abs=0.02)
    assert fit.beta == pytest.approx(beta, abs=0.02)
    assert fit.r2 > 0.98
    grid = np.array([0.0, 1.0, 9.0])
    np.testing.assert_allclose(fit.predict(grid), predict(fit, grid))
    np.testing.assert_allclose(
        fit.predict(grid), baseline + gold_curve(grid, alpha, beta, kind), atol=0.05
    )
    assert fit.predict([0.0])[0] == pytest.approx(baseline)  # R(0) = 0
    assert math.isfinite(fit.d_peak) and "R²" in str(fit)
    assert set(fit.as_dict()) >= {"alpha", "beta", "r2", "kind", "n", "d_peak"}


def test_fit_kinds_differ() -> None:
    kl = np.linspace(0.1, 16, 20)
    gold = gold_curve(kl, 1.0, 0.4, "rl")
    assert fit_gold_curve(kl, gold, "rl").r2 == pytest.approx(1.0)
    assert fit_gold_curve(kl, gold, "bon").r2 < 0.999


@pytest.mark.parametrize(
    ("kl", "gold", "kind", "match"),
    [
        ([0.0, 1.0, 2.0], [0.0, 0.1], "rl", "same length"),
        ([0.0, -1.0, 2.0], [0.0, 0.1, 0.2], "rl", "≥ 0"),
        ([0.5, 1.0], [0.1, 0.2], "bon", "at least 3"),
        ([0.5, 1.0, 2.0], [0.1, 0.2, 0.3], "linear", "kind"),
        ([0.5, 1.0, float("nan")], [0.1, 0.2, 0.3], "rl", "finite"),
        ([1.0, 1.0, 1.0], [0.1, 0.2, 0.3], "rl", "distinct"),
    ],
)
def test_fit_bad_input(kl, gold, kind, match) -> None:
    with pytest.raises(ValueError, match=match):
        fit_gold_curve(kl, gold, kind=kind)


def test_bon_kl_bound() -> None:
    assert bon_kl_bound(1) == 0.0
    assert bon_kl_bound(2) == pytest.approx(math.log(2) - 0.5)
    np.testing.assert_allclose(bon_kl_bound(np.array([4, 16])), np.log([4, 16]) - [3 / 4, 15 / 16])
    with pytest.raises(ValueError):
        bon_kl_bound(0)


def test_bon_kl_estimate_ties_and_no_ties() -> None:
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(4, 4000))
    for n in (2, 8):
        assert bon_kl_estimate(distinct, n) == pytest.approx(bon_kl_bound(n), rel=0.05)
    # Two equally likely values: best-of-2 picks the top one w.p. 3/4 → KL = KL(3/4,1/4 ‖ ½,½).
    coin = np.tile([0.0, 1.0], (3, 50))
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert bon_kl_estimate(coin, 2) == pytest.approx(expected)
    assert bon_kl_estimate(coin, 2) < bon_kl_bound(2)
    assert bon_kl_estimate(np.ones((2, 10)), 4) == 0.0


def test_bon_expected_matches_subset_enumeration() -> None:
    rng = np.random.default_rng(1)
    select = rng.integers(0, 3, size=(2, 7)).astype(float)  # ties on purpose
    report = rng.normal(size=(2, 7))
    for n in (1, 2, 3, 7):
        got = bon_expected(select, report, n)
        for p in range(2):
            vals = []
            for subset in itertools.combinations(range(7), n):
                best = max(select[p, list(subset)])
                tied = [i for i in subset if select[p, i] == best]
                vals.append(np.mean(report[p, tied]))  # uniform pick among tied
            assert got[p] == pytest.approx(np.mean(vals))
    np.testing.assert_allclose(bon_expected(report, n=1), report.mean(1))
    np.testing.assert_allclose(bon_expected(report, n=7), report.max(1))
    with pytest.raises(ValueError, match="n must be"):
        bon_expected(report, n=8)
