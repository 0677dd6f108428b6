from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from textenv.env.kl import AdaptiveKLController, FixedKLController, kl_estimate, make_kl_controller


def test_estimators_match_hand_computation():
    logp, ref = np.array([-1.0, -2.0]), np.array([-1.5, -1.0])
    r = ref - logp  # log(ρ/π) = [-0.5, 1.0]
    np.testing.assert_allclose(kl_estimate(logp, ref, "k1"), [0.5, -1.0])
    np.testing.assert_allclose(kl_estimate(logp, ref, "k2"), [0.125, 0.5])
    np.testing.assert_allclose(
        kl_estimate(logp, ref, "k3"), [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0]
    )
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    t = kl_estimate(torch.tensor(logp), torch.tensor(ref), "k3")
    np.testing.assert_allclose(t.numpy(), kl_estimate(logp, ref, "k3"))
    assert np.allclose(r, [-0.5, 1.0])


def test_k1_and_k3_are_unbiased_for_the_true_kl():
    rng = np.random.default_rng(0)
    p = np.array([0.7, 0.2, 0.1])
    q = np.array([0.4, 0.4, 0.2])
    true_kl = float((p * np.log(p / q)).sum())
    x = rng.choice(3, size=200_000, p=p)
    logp, ref = np.log(p[x]), np.log(q[x])
    for est in ("k1", "k3"):
        assert kl_estimate(logp, ref, est).mean() == pytest.approx(true_kl, abs=5e-3)


def test_unknown_estimator():
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        kl_estimate(np.zeros(1), np.zeros(1), "k4")


def test_fixed_controller():
    c = FixedKLController(0.1)
    c.update(100.0, 64)
    assert c.value == 0.1
    with pytest.raises(ValueError, match="β must be a finite number ≥ 0"):
        FixedKLController(-1.0)


def test_adaptive_controller_follows_ziegler():
    c = AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    c.update(9.0, 64)  # error = clip(9/6 - 1) = 0.2 (clipped from 0.5)
    assert c.value == pytest.approx(0.2 * (1 + 0.2 * 64 / 10_000))
    c2 = AdaptiveKLController(0.2, target=6.0, horizon=100)
    c2.update(5.4, 10)  # error = -0.1
    assert c2.value == pytest.approx(0.2 * (1 - 0.1 * 10 / 100))
    with pytest.raises(ValueError, match="non-finite KL"):
        c2.update(float("nan"), 1)
    with pytest.raises(ValueError, match="target must be > 0"):
        AdaptiveKLController(0.1, target=0.0)
    assert isinstance(make_kl_controller(0.1, 6.0), AdaptiveKLController)
    assert isinstance(make_kl_controller(0.1), FixedKLController)
