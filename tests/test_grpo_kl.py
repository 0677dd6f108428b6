"""GRPO's KL term: with ``kl_ratio`` (the default, as TRL's ``use_bias_correction_kl``) its
gradient is the reverse KL's, ``(log π − log ρ)·∇log π``; without it, bare k3's
``(1 − ρ/π)·∇log π`` (the forward KL's in expectation)."""

from __future__ import annotations

import pytest
import torch

from agents.grpo import GRPOConfig, grpo_loss


@pytest.mark.parametrize("kl_ratio", [True, False])
def test_kl_term_gradient(kl_ratio):
    gen = torch.Generator().manual_seed(0)
    logprobs = (-torch.rand(3, 5, generator=gen) * 3).requires_grad_(True)
    ref = -torch.rand(3, 5, generator=gen) * 3
    mask = torch.ones(3, 5, dtype=torch.bool)
    beta = 0.1
    loss, ratio, kl = grpo_loss(
        logprobs,
        logprobs.detach(),  # on-policy: the ratio is 1 in value
        ref,
        torch.zeros(3),  # no policy-gradient term: only the KL term has a gradient
        mask,
        epsilon_low=0.2,
        epsilon_high=0.2,
        beta=beta,
        loss_type="bnpo",
        kl_ratio=kl_ratio,
    )
    loss.backward()
    n = mask.sum()
    x = ref - logprobs.detach()
    want = beta * (-x if kl_ratio else 1 - x.exp()) / n
    torch.testing.assert_close(logprobs.grad, want)
    # The value of the loss is the same either way (r = 1): only the gradient differs.
    torch.testing.assert_close(loss.detach(), beta * (x.exp() - x - 1).mean())


def test_reverse_kl_is_the_default():
    assert GRPOConfig().kl_ratio is True
