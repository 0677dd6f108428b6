"""GRPO (Shao et al. 2024, DeepSeekMath) with the Dr. GRPO and DAPO variants.

Each iteration pins ``group_size`` (G) rows of the lockstep vector env to each of
``num_envs / G`` prompts (``reset(options={"prompts": ...})``). Advantages are group-relative:
``(r − mean_group) / (std_group + ε)`` (``scale_rewards="group"``), or divided by the batch std
(``"batch"``), or not scaled (``"none"``, Dr. GRPO). The KL to the reference is a k3 term in
the loss, ``β·(exp(ρ−π) − (ρ−π) − 1)`` per token, from the env's ``info["ref_logprobs"]`` — so
the env is made with ``kl_reward="none"`` (the penalty is never counted twice). The clipped
ratio uses separate ``epsilon_low`` / ``epsilon_high`` (DAPO: 0.28 high); each batch is used
for ``epochs`` (μ) passes. Loss normalisation (``loss_type``):

* ``"grpo"``: mean over each sequence's tokens, then over sequences;
* ``"bnpo"``: mean over all tokens of the minibatch (token-level, DAPO-like);
* ``"dr_grpo"``: sum over tokens divided by ``minibatch_size × max_new_tokens`` (a constant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from agents.base import Agent, AgentConfig
from agents.policy import Rollout, masked_mean

__all__ = ["GRPOConfig", "GRPO", "group_advantages", "grpo_loss", "LOSS_TYPES", "SCALE_REWARDS"]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class GRPOConfig(AgentConfig):
    """GRPO settings (on top of :class:`~agents.base.AgentConfig`; ``epochs`` is μ).

    Attributes:
        group_size: G, completions per prompt (≥ 2); must divide ``num_envs``.
        beta: coefficient of the k3 KL term in the loss; ``None`` = the env's ``kl_coef``
            (its controller's current β, so an adaptive ``kl_target`` still works).
        epsilon_low, epsilon_high: ratio clip range ``[1 − ε_low, 1 + ε_high]``.
        scale_rewards: ``"group"`` (std of the group), ``"batch"`` (std of the batch) or
            ``"none"`` (Dr. GRPO: no std scaling).
        adv_eps: ε added to the std.
        loss_type: ``"grpo"``, ``"bnpo"`` or ``"dr_grpo"`` (see the module docstring).
        kl_ratio: multiply the k3 term by the policy ratio π/π_old (TRL's
            ``use_bias_correction_kl``), so that its gradient is the reverse KL's (the KL the
            env measures and logs); ``False`` is the plain k3 term, whose gradient is the
            forward KL's and holds KL(π‖ρ) less tightly at the same β.
    """

    # lr, epochs, minibatch_size: the winners of benchmarks/tune.py (results/tune.json).
    lr: float = 1e-4
    epochs: int = 4
    minibatch_size: int = 16
    group_size: int = 8
    beta: float | None = None
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    scale_rewards: str = "group"
    adv_eps: float = 1e-4
    loss_type: str = "grpo"
    kl_ratio: bool = True

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.group_size, int) or self.group_size < 2:
            raise ValueError(
                f"group_size (G) must be an integer ≥ 2 (a group-relative advantage needs at "
                f"least two samples), got {self.group_size!r}"
            )
        if self.num_envs % self.group_size:
            raise ValueError(
                f"group_size={self.group_size} does not divide num_envs={self.num_envs}: the "
                f"vector env serves num_envs rows, G per prompt"
            )
        if not 0.0 < self.epsilon_low < 1.0:
            raise ValueError(f"epsilon_low must be in (0, 1), got {self.epsilon_low}")
        if not 0.0 < self.epsilon_high <= 10.0:
            raise ValueError(f"epsilon_high must be in (0, 10], got {self.epsilon_high}")
        if self.beta is not None and not (np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number ≥ 0 (or None), got {self.beta}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(
                f"scale_rewards must be one of {SCALE_REWARDS}, got {self.scale_rewards!r}"
            )
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if not self.adv_eps > 0:
            raise ValueError(f"adv_eps must be > 0, got {self.adv_eps}")
        kl_reward = self.env_kwargs.get("kl_reward", "none")
        if kl_reward != "none":
            raise ValueError(
                f"GRPO puts the KL term in its loss, so the env must not also put it in the "
                f"reward: use env_kwargs kl_reward='none' (got {kl_reward!r})"
            )


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantages ``(B,)`` and the per-group std ``(B / G,)``."""
    r = rewards.view(-1, group_size)
    std = r.std(-1, keepdim=True)
    adv = r - r.mean(-1, keepdim=True)
    if scale == "group":
        adv = adv / (std + eps)
    elif scale == "batch":
        adv = adv / (rewards.std() + eps)
    elif scale != "none":
        raise ValueError(f"scale must be one of {SCALE_REWARDS}, got {scale!r}")
    return adv.reshape(-1), std.squeeze(-1)


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float,
    epsilon_high: float,
    beta: float,
    loss_type: str,
    kl_ratio: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GRPO's loss on ``(b, N)`` token log-probs; returns (loss, ratios, per-token k3 KL).

    Per token: ``−min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A) + β·k3`` with
    ``k3 = exp(ρ − π) − (ρ − π) − 1`` (≥ 0, its gradient pulls log π towards log ρ);
    ``advantages`` are per sequence, ``(b,)``. Normalised by ``loss_type`` (module docstring):
    ``dr_grpo`` divides the masked sum by ``b × N``, N the padded completion length."""
    ratio = (logprobs - old_logprobs).exp()
    adv = advantages[:, None]
    clipped = ratio.clamp(1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    ref_diff = ref_logprobs - logprobs
    kl = ref_diff.exp() - ref_diff - 1  # k3, ≥ 0
    if beta > 0:
        # × r (= 1 on-policy, but differentiable): the gradient becomes (log π − log ρ)·∇log π,
        # the reverse KL's, the KL the env measures. Bare k3's gradient (1 − ρ/π)·∇log π is in
        # expectation that of the *forward* KL(ρ‖π), which lets KL(π‖ρ) grow further at equal β.
        per_token = per_token + beta * (kl * ratio if kl_ratio else kl)
    if loss_type == "grpo":
        loss = masked_mean(per_token, mask, dim=1).mean()
    elif loss_type == "bnpo":
        loss = masked_mean(per_token, mask)
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (mask.shape[0] * mask.shape[1])
    else:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    return loss, ratio, kl


class GRPO(Agent):
    """Group Relative Policy Optimisation for LM policies on a textenv vector env."""

    config_class = GRPOConfig
    algo = "grpo"
    config: GRPOConfig

    def _configure_env_kwargs(self) -> None:
        # Never count the KL penalty twice: the env gives RM only, the loss has β·k3.
        self.config.env_kwargs = {**self.config.env_kwargs, "kl_reward": "none"}

    @property
    def beta(self) -> float:
        return float(self.env.kl_coef if self.config.beta is None else self.config.beta)

    def _collect(self) -> Rollout:
        prompts = self._group_prompts(self.config.group_size)
        return self.policy.rollout(self.generator, prompts=prompts)

    def _update(self, rollout: Rollout) -> dict[str, float]:
        cfg = self.config
        mask = rollout.mask
        beta = self.beta
        advantages, group_std = group_advantages(
            rollout.returns, cfg.group_size, cfg.scale_rewards, cfg.adv_eps
        )
        ref = torch.as_tensor(rollout.ref_logprobs, dtype=torch.float32, device=mask.device)
        ref = torch.where(mask, ref.nan_to_num(0.0), 0.0)
        old_logprobs = self._old_logprobs(rollout)
        stats: dict[str, list[float]] = {
            k: [] for k in ("loss", "kl", "clip_low", "clip_high", "approx_kl", "grad")
        }
        for rows, m, share in self._minibatch_passes(mask):
            logprobs = self._forward(self.policy.score, rollout, rows)
            logratio = logprobs - old_logprobs[rows]
            adv = advantages[rows, None]
            loss, ratio, kl = grpo_loss(
                logprobs,
                old_logprobs[rows],
                ref[rows],
                advantages[rows],
                m,
                epsilon_low=cfg.epsilon_low,
                epsilon_high=cfg.epsilon_high,
                beta=beta,
                loss_type=cfg.loss_type,
                kl_ratio=cfg.kl_ratio,
            )
            if cfg.loss_type == "bnpo":  # a token mean; the other two average rows, and
                loss = loss * share  # every rank has minibatch_size / N of them
            stats["grad"].append(self._step(loss))
            with torch.no_grad():
                stats["loss"].append(float(loss))
                stats["kl"].append(float(masked_mean(kl, m) * share))
                approx_kl = masked_mean((ratio - 1) - logratio, m) * share
                stats["approx_kl"].append(float(approx_kl))
                low = (ratio < 1 - cfg.epsilon_low) & (adv < 0)
                high = (ratio > 1 + cfg.epsilon_high) & (adv > 0)
                stats["clip_low"].append(float(masked_mean(low.float(), m) * share))
                stats["clip_high"].append(float(masked_mean(high.float(), m) * share))
        mean = {k: sum(v) / max(len(v), 1) for k, v in stats.items()}
        return {
            "loss/policy": mean["loss"],
            "grpo/kl_k3": mean["kl"],
            "grpo/beta": beta,
            "policy/approx_kl": mean["approx_kl"],
            "policy/clipfrac": mean["clip_low"] + mean["clip_high"],
            "grpo/clip_low": mean["clip_low"],
            "grpo/clip_high": mean["clip_high"],
            "policy/grad_norm": mean["grad"],
            "grpo/reward_std": float(group_std.mean()),
            "grpo/frac_reward_zero_std": float((group_std < 1e-6).float().mean()),
        }
