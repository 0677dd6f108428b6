"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024; Kool et al. 2019).

Each iteration pins ``k`` rows of the lockstep vector env to each of ``num_envs / k`` prompts
(``reset(options={"prompts": ...})``). A sequence's advantage is its env return minus the mean
return of the other ``k − 1`` samples of its prompt; the KL penalty is whatever the env put in
the return (``kl_reward="terminal"`` by default, so ``return = RM − β·KL``). The loss is the
token-level policy gradient ``−A·log π`` (as a clipped ratio, so ``epochs > 1`` stays safe;
with one epoch and one minibatch it is plain REINFORCE), averaged over the batch's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.base import Agent, AgentConfig
from agents.policy import Rollout, masked_mean
from agents.ppo import clipped_policy_loss

__all__ = ["RLOOConfig", "RLOO", "leave_one_out_advantages"]


@dataclass
class RLOOConfig(AgentConfig):
    """RLOO settings (on top of :class:`~agents.base.AgentConfig`).

    Attributes:
        k: samples per prompt (≥ 2); must divide ``num_envs``.
        clip_eps: ratio clip ε for epochs after the first (no effect on-policy).
        normalize_advantages: divide advantages by their batch std.
    """

    # lr, epochs, minibatch_size: the winners of benchmarks/tune.py (results/tune.json).
    lr: float = 3e-4
    epochs: int = 2
    minibatch_size: int = 16
    k: int = 4
    clip_eps: float = 0.2
    normalize_advantages: bool = False

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"k (samples per prompt) must be an integer ≥ 2, got {self.k!r}")
        if self.num_envs % self.k:
            raise ValueError(
                f"num_envs={self.num_envs} is not a multiple of k={self.k}: the vector env "
                f"serves num_envs rows, k per prompt"
            )
        if not 0.0 < self.clip_eps < 1.0:
            raise ValueError(f"clip_eps must be in (0, 1), got {self.clip_eps}")


def leave_one_out_advantages(returns: torch.Tensor, k: int) -> torch.Tensor:
    """``r_i − mean_{j≠i} r_j`` within consecutive groups of ``k`` (shape ``(B,)``)."""
    r = returns.view(-1, k)
    baseline = (r.sum(-1, keepdim=True) - r) / (k - 1)
    return (r - baseline).reshape(-1)


class RLOO(Agent):
    """REINFORCE leave-one-out for LM policies on a textenv vector env."""

    config_class = RLOOConfig
    algo = "rloo"
    config: RLOOConfig

    def _collect(self) -> Rollout:
        prompts = self._group_prompts(self.config.k)
        return self.policy.rollout(self.generator, prompts=prompts)

    def _update(self, rollout: Rollout) -> dict[str, float]:
        cfg = self.config
        mask = rollout.mask
        advantages = leave_one_out_advantages(rollout.returns, cfg.k)
        if cfg.normalize_advantages:
            advantages = advantages / (advantages.std() + 1e-8)
        old_logprobs = self._old_logprobs(rollout)
        losses, approx_kls, clipfracs, grads = [], [], [], []
        for rows, m, share in self._minibatch_passes(mask):
            logprobs = self._forward(self.policy.score, rollout, rows)
            logratio = logprobs - old_logprobs[rows]
            # The token-level policy gradient −A·log π, as PPO's clipped ratio (same gradient
            # on-policy; safe when epochs > 1).
            loss, ratio = clipped_policy_loss(
                logprobs, old_logprobs[rows], advantages[rows, None], m, cfg.clip_eps
            )
            loss = loss * share
            grads.append(self._step(loss))
            with torch.no_grad():
                losses.append(float(loss))
                approx_kls.append(float(masked_mean((ratio - 1) - logratio, m) * share))
                clip = ((ratio - 1).abs() > cfg.clip_eps).float()
                clipfracs.append(float(masked_mean(clip, m) * share))
        n = max(len(losses), 1)
        return {
            "loss/policy": sum(losses) / n,
            "policy/approx_kl": sum(approx_kls) / n,
            "policy/clipfrac": sum(clipfracs) / n,
            "policy/grad_norm": sum(grads) / n,
            "rloo/advantage_std": float(advantages.std()),
        }
