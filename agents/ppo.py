"""PPO with a value head and token-level GAE on the textenv token MDP (CleanRL-style).

The env owns the reward and β: with ``kl_reward="terminal"`` (default) the ``−β·KL`` penalty
arrives in the final reward, with ``"per_token"`` as ``−β·k_t`` every step; PPO just runs GAE
over the env's per-step rewards. One iteration:

1. roll out ``num_envs`` episodes in lockstep (KV-cached sampling, log π handed to the env);
2. one no-grad forward scores old log-probs and values of every token; GAE (γ, λ) gives
   advantages and returns; advantages are whitened over the batch's tokens;
3. ``epochs`` passes of shuffled minibatches: clipped policy loss, clipped value loss
   (× ``vf_coef``), gradient clipping; the learning rate decays linearly.

Example::

    from agents import PPO, PPOConfig
    agent = PPO(PPOConfig(env_id="textenv/Sort-v0", log_dir="runs/ppo"))
    agent.learn(total_tokens=200_000)
    agent.save("checkpoints/ppo")
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.base import Agent, AgentConfig
from agents.policy import Rollout, masked_mean, masked_whiten, sequence_hidden
from textenv.lm.models import load_causal_lm

__all__ = ["PPOConfig", "PPO", "gae", "clipped_policy_loss", "clipped_value_loss"]

VALUE_MODELS = ("shared", "separate")


@dataclass
class PPOConfig(AgentConfig):
    """PPO settings (on top of :class:`~agents.base.AgentConfig`).

    Attributes:
        gamma: discount over tokens (1: undiscounted, as in RLHF practice).
        gae_lambda: GAE λ.
        clip_eps: policy-ratio clip ε.
        clip_value: value-prediction clip around the old values.
        vf_coef: value-loss coefficient.
        whiten_advantages: normalise advantages over the batch's tokens.
        value_model: ``"shared"`` (a zero-init linear head on the policy's last hidden
            state) or ``"separate"`` (a copy of the initial policy LM as value trunk).
    """

    # lr, epochs, minibatch_size: the winners of benchmarks/tune.py (results/tune.json).
    lr: float = 1e-4
    epochs: int = 4
    minibatch_size: int = 16
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    clip_value: float = 0.2
    vf_coef: float = 0.1
    whiten_advantages: bool = True
    value_model: str = "shared"

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if not 0.0 < self.clip_eps < 1.0:
            raise ValueError(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if not self.clip_value > 0:
            raise ValueError(f"clip_value must be > 0, got {self.clip_value}")
        if not self.vf_coef >= 0:
            raise ValueError(f"vf_coef must be ≥ 0, got {self.vf_coef}")
        if self.value_model not in VALUE_MODELS:
            raise ValueError(f"value_model must be one of {VALUE_MODELS}, got {self.value_model!r}")


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """Token-level GAE over right-padded episodes ``(B, N)``; 0 outside ``mask``.

    The value after an episode's last token is 0 (the episode ends there)."""
    B, N = rewards.shape
    m = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    last = torch.zeros(B, dtype=values.dtype, device=values.device)
    for t in reversed(range(N)):
        next_m = m[:, t + 1] if t + 1 < N else torch.zeros_like(last)
        next_value = values[:, t + 1] * next_m if t + 1 < N else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * next_m * last) * m[:, t]
        advantages[:, t] = last
    return advantages


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, ``mean_mask max(−A·r, −A·clip(r, 1 − ε, 1 + ε))`` with
    ``r = exp(log π − log π_old)``; returns the loss and the ratios (for the statistics).

    ``advantages`` broadcast against the ``(b, N)`` log-probs (per token, or ``(b, 1)``)."""
    ratio = (logprobs - old_logprobs).exp()
    losses = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps))
    return masked_mean(losses, mask), ratio


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_value: float,
) -> torch.Tensor:
    """``½·mean_mask max((V − R)², (V_clip − R)²)``, ``V_clip`` = V kept within ``clip_value``
    of the old values (the pessimistic of the two, as in PPO's reference implementation)."""
    v_clipped = old_values + (values - old_values).clamp(-clip_value, clip_value)
    losses = torch.max((values - returns) ** 2, (v_clipped - returns) ** 2)
    return 0.5 * masked_mean(losses, mask)


class PPO(Agent):
    """Proximal Policy Optimisation for LM policies on a textenv vector env."""

    config_class = PPOConfig
    algo = "ppo"
    config: PPOConfig

    def _build(self, checkpoint: Path | None) -> None:
        self.value_model = None
        if self.config.value_model == "separate":
            self.value_model = load_causal_lm(self.policy.spec, self.config.device)
            hidden = int(self.value_model.config.hidden_size)
        else:
            hidden = self.policy.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1).to(self.config.device)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"value_head": self.value_head}
        if self.value_model is not None:
            mods["value_model"] = self.value_model
        return mods

    def _score(
        self, rollout: Rollout, rows: torch.Tensor | slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log π ``(b, N)`` and values ``(b, N)`` of the rows' tokens: one forward per model."""
        if self.value_model is None:
            logprobs, hidden = self.policy.score(rollout, rows, hidden=True)
        else:
            logprobs = self.policy.score(rollout, rows)
            hidden = sequence_hidden(self.value_model, rollout, rows)
        return logprobs, self.value_head(hidden.float()).squeeze(-1)

    def _update(self, rollout: Rollout) -> dict[str, float]:
        cfg = self.config
        mask = rollout.mask
        passes = self._minibatch_passes(mask)
        scored: list[tuple] = []
        if cfg.minibatch_size == cfg.num_envs and not self.dist.enabled:
            # The first minibatch is the whole batch at the weights that sampled it: its training
            # forward gives the old log-probs and values too (no separate no-grad forward).
            rows, m, share = next(passes)
            logprobs, values = self._forward(self._score, rollout, rows)
            old_logprobs = torch.empty_like(logprobs).index_copy_(0, rows, logprobs.detach())
            old_values = torch.empty_like(values).index_copy_(0, rows, values.detach())
            scored.append((rows, m, share, (logprobs, values)))
        else:
            with torch.no_grad():
                old_logprobs, old_values = self._all_rows(lambda rows: self._score(rollout, rows))
        with torch.no_grad():
            advantages = gae(rollout.rewards, old_values, mask, cfg.gamma, cfg.gae_lambda)
            returns = advantages + old_values
            if cfg.whiten_advantages:
                advantages = masked_whiten(advantages, mask)
        stats: dict[str, list[float]] = {
            k: [] for k in ("pg_loss", "vf_loss", "approx_kl", "clipfrac", "vf_clipfrac", "grad")
        }
        rest = ((r, m, sh, self._forward(self._score, rollout, r)) for r, m, sh in passes)
        for rows, m, share, (logprobs, values) in itertools.chain(scored, rest):
            logratio = logprobs - old_logprobs[rows]
            pg_loss, ratio = clipped_policy_loss(
                logprobs, old_logprobs[rows], advantages[rows], m, cfg.clip_eps
            )
            v_old = old_values[rows]
            vf_loss = clipped_value_loss(values, v_old, returns[rows], m, cfg.clip_value)

            pg_loss, vf_loss = pg_loss * share, vf_loss * share
            loss = pg_loss + cfg.vf_coef * vf_loss
            stats["grad"].append(self._step(loss))
            with torch.no_grad():
                stats["pg_loss"].append(float(pg_loss))
                stats["vf_loss"].append(float(vf_loss))
                approx_kl = masked_mean((ratio - 1) - logratio, m) * share
                stats["approx_kl"].append(float(approx_kl))
                clipped = ((ratio - 1).abs() > cfg.clip_eps).float()
                stats["clipfrac"].append(float(masked_mean(clipped, m) * share))
                vclip = ((values - v_old).abs() > cfg.clip_value).float()
                stats["vf_clipfrac"].append(float(masked_mean(vclip, m) * share))
        with torch.no_grad():
            mismatch = masked_mean((old_logprobs - rollout.logprobs).abs(), mask)
            explained = 1 - masked_mean((returns - old_values) ** 2, mask) / masked_mean(
                (returns - masked_mean(returns, mask)) ** 2, mask
            ).clamp_min(1e-8)
        return {
            "loss/policy": _mean(stats["pg_loss"]),
            "loss/value": _mean(stats["vf_loss"]),
            "policy/approx_kl": _mean(stats["approx_kl"]),
            "policy/clipfrac": _mean(stats["clipfrac"]),
            "value/clipfrac": _mean(stats["vf_clipfrac"]),
            "value/explained_variance": float(explained),
            "value/mean": float(masked_mean(old_values, mask)),
            "policy/grad_norm": _mean(stats["grad"]),
            "policy/sample_score_logprob_gap": float(mismatch),
        }


def _mean(xs: list[float]) -> float:
    return sum(xs) / max(len(xs), 1)
