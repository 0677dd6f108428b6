"""Batched sampling from a causal LM with the KV cache kept across steps.

Three pieces, used by the env (reference scoring), the agents and the CLI:

* :class:`IncrementalLM` — prefill a left-padded batch once, then feed one token per row per
  step; positions and the attention mask are tracked so rows with different prompt lengths and
  "holes" (finished rows) stay correct.
* :func:`next_token_logprobs` / :func:`sample_tokens` — temperature, top-k, top-p applied to
  logits, and inverse-CDF sampling from a seeded ``torch.Generator``; the returned log-prob is
  that of the distribution actually sampled from.
* :func:`sequence_logprobs` — one teacher-forced forward that scores every generated token of a
  batch (never one forward per token).

:func:`generate` ties them together for plain batched generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from textenv.lm.models import cache_kwarg, output_cache

__all__ = [
    "SamplingConfig",
    "IncrementalLM",
    "next_token_logprobs",
    "sample_tokens",
    "sequence_logprobs",
    "SampleOutput",
    "generate",
    "position_ids_from_mask",
]


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are drawn. ``top_k=0`` and ``top_p=1.0`` switch those filters off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


class IncrementalLM:
    """A causal LM decoded one token per step over a batch, with its KV cache kept.

    ``prefill`` runs the (left-padded) prefix once; each ``step`` feeds one new token per row.
    ``active=False`` rows still take a column (so the batch stays rectangular) but it is
    masked out, which is how finished rows in a lockstep batch are carried along.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self._cache_name = cache_kwarg(model)
        self._cache = None
        self._mask: torch.Tensor | None = None
        self._next_pos: torch.Tensor | None = None

    @torch.no_grad()
    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, all_positions: bool = False
    ) -> torch.Tensor:
        """Run the prefix; returns the next-token logits ``(B, V)`` (float32).

        ``all_positions=True`` returns the logits at every position ``(B, T, V)`` instead, for
        batches whose rows end at different columns.
        """
        attention_mask = attention_mask.long()
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=True,
            logits_to_keep=0 if all_positions else 1,
        )
        self._cache = output_cache(out)
        self._mask = attention_mask
        self._next_pos = attention_mask.sum(-1)
        return out.logits.float() if all_positions else out.logits[:, -1].float()

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """Feed one token per row; returns the next-token logits ``(B, V)``."""
        if self._cache is None:
            raise RuntimeError("IncrementalLM.step() called before prefill()")
        col = torch.ones_like(tokens) if active is None else active.long()
        mask = torch.cat([self._mask, col[:, None]], dim=1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=self._next_pos[:, None],
            use_cache=True,
            **{self._cache_name: self._cache},
        )
        self._cache = output_cache(out)
        self._mask = mask
        self._next_pos = self._next_pos + col
        return out.logits[:, -1].float()


def next_token_logprobs(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Log-probs of the distribution sampled from: logits / T, then top-k / top-p filtered."""
    logits = logits.float() / config.temperature
    if config.top_k and config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass *before* it already reaches top_p (keeps ≥ 1 token).
        drop_sorted = (probs.cumsum(-1) - probs) >= config.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def sample_tokens(
    logprobs: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row by inverse CDF; returns ``(tokens, their log-probs)``.

    Inverse-CDF (cumsum + searchsorted) was measurably faster than ``torch.multinomial`` here.
    """
    cdf = logprobs.exp().cumsum(-1)
    u = torch.rand(logprobs.shape[0], 1, generator=generator, device=logprobs.device)
    u = u * cdf[:, -1:]  # cdf[-1] is 1 up to rounding; scale so searchsorted stays in range
    tokens = torch.searchsorted(cdf, u).squeeze(-1).clamp_max(logprobs.shape[-1] - 1)
    # A zero-probability token can only be hit through rounding; step back to a kept one.
    chosen = logprobs.gather(-1, tokens[:, None]).squeeze(-1)
    if torch.isinf(chosen).any():
        fallback = logprobs.argmax(-1)
        tokens = torch.where(torch.isinf(chosen), fallback, tokens)
        chosen = logprobs.gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, chosen


def sequence_logprobs(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    *,
    return_hidden: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs ``(B, N)`` of each completion token given its prefix, in one forward.

    ``prompt_ids`` are left-padded ``(B, P)``; ``completion_ids`` right-padded ``(B, N)``.
    Gradients flow when called outside ``torch.no_grad`` (agents' updates use this).
    With ``return_hidden`` also returns the last hidden states at the N positions that
    predict the completion tokens (what a value head reads).
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask.long(), completion_mask.long()], dim=1)
    n = completion_ids.shape[1]
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
        logits_to_keep=n + 1,
        output_hidden_states=return_hidden,
    )
    logits = out.logits[:, :-1].float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids[..., None]).squeeze(-1)
    if return_hidden:
        hidden = out.hidden_states[-1][:, -n - 1 : -1]
        return logprobs, hidden
    return logprobs


@dataclass
class SampleOutput:
    """Tokens ``(B, N)`` (pad after EOS), their log-probs (0 after EOS) and validity mask."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    mask: torch.Tensor


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    config: SamplingConfig = SamplingConfig(),
    *,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
    suppress_eos: bool = False,
) -> SampleOutput:
    """Sample up to ``max_new_tokens`` per row with the KV cache; rows stop at EOS."""
    batch = input_ids.shape[0]
    pad = pad_token_id if pad_token_id is not None else (eos_token_id or 0)
    lm = IncrementalLM(model)
    logits = lm.prefill(input_ids, attention_mask)
    tokens = torch.full((batch, max_new_tokens), pad, dtype=torch.long, device=input_ids.device)
    logprobs = torch.zeros(batch, max_new_tokens, device=input_ids.device)
    mask = torch.zeros(batch, max_new_tokens, dtype=torch.bool, device=input_ids.device)
    alive = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
    for t in range(max_new_tokens):
        if suppress_eos and eos_token_id is not None:
            logits[:, eos_token_id] = float("-inf")
        token, logprob = sample_tokens(next_token_logprobs(logits, config), generator)
        tokens[:, t] = torch.where(alive, token, pad)
        logprobs[:, t] = torch.where(alive, logprob, 0.0)
        mask[:, t] = alive
        if eos_token_id is not None:
            alive = alive & (token != eos_token_id)
        if t + 1 == max_new_tokens or not alive.any():
            break
        logits = lm.step(tokens[:, t], alive)
    return SampleOutput(tokens, logprobs, mask)
