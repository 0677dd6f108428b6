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
* :func:`sample_loop` — THE KV-cached sampling loop: prefill once, then sample one token per row
  per step and hand it to a callback that says which rows go on. :func:`generate` (plain batched
  generation) and the agents' rollout (which steps an env in the callback) are both built on it.

Inputs are left-padded (:mod:`textenv.lm.padding`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from textenv.lm import lean_gpt2
from textenv.lm.models import cache_kwarg, output_cache
from textenv.lm.padding import forward_left_padded, position_ids_from_mask

__all__ = [
    "SamplingConfig",
    "IncrementalLM",
    "next_token_logprobs",
    "sample_tokens",
    "sequence_logprobs",
    "completion_logprobs",
    "token_logprobs",
    "sample_loop",
    "TokenCallback",
    "SampleOutput",
    "generate",
    "position_ids_from_mask",
    "trim_left_padding",
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


def trim_left_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the leading columns that are padding on every row.

    Exact: positions come from the mask and a padding column is never attended to, so the real
    tokens' outputs are the same (to float rounding) with or without them; the env pads every
    prompt to ``max_prompt_tokens``, and a batch's prompts are often shorter than that."""
    real = attention_mask.bool().any(0)
    first = int(real.to(torch.uint8).argmax())  # 0 when no column is real (nothing to drop)
    if first == 0:
        return input_ids, attention_mask
    return input_ids[:, first:], attention_mask[:, first:]


class IncrementalLM:
    """A causal LM decoded one token per step over a batch, with its KV cache kept.

    ``prefill`` runs the (left-padded) prefix once; each ``step`` feeds one new token per row.
    ``active=False`` rows still take a column (so the batch stays rectangular) but it is
    masked out, which is how finished rows in a lockstep batch are carried along.

    GPT-2 models run through :func:`textenv.lm.lean_gpt2.lean_forward` (the same math without
    Hugging Face's per-call overhead, keys and values in preallocated tensors; ``max_new_tokens``
    sizes them, and they grow when more steps come); other models through their own ``forward``
    and cache. Which path is decided when the object is made: a forward hook registered later
    is not seen by its steps.
    """

    def __init__(self, model: PreTrainedModel, max_new_tokens: int = 64) -> None:
        self.model = model
        self._lean = lean_gpt2.supports(model)
        self._max_new_tokens = int(max_new_tokens)
        self._cache_name = "" if self._lean else cache_kwarg(model)
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
        if not all_positions:
            input_ids, attention_mask = trim_left_padding(input_ids, attention_mask)
        keep = 0 if all_positions else 1
        self._next_pos = attention_mask.sum(-1)
        if self._lean:
            self._cache = lean_gpt2.KVCache(input_ids.shape[1] + self._max_new_tokens)
            positions = position_ids_from_mask(attention_mask)
            logits, _ = lean_gpt2.lean_forward(
                self.model,
                input_ids,
                attention_mask,
                positions,
                logits_to_keep=keep,
                cache=self._cache,
            )
        else:
            out = forward_left_padded(
                self.model, input_ids, attention_mask, use_cache=True, logits_to_keep=keep
            )
            self._cache = output_cache(out)
            self._mask = attention_mask
            logits = out.logits
        return logits.float() if all_positions else logits[:, -1].float()

    @property
    def can_drop_rows(self) -> bool:
        """Whether :meth:`keep_rows` is available (the lean GPT-2 path)."""
        return self._lean

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Go on with ``rows`` (indices into the current batch) only: later steps take and
        return that many rows. The rows' results do not change (rows never see each other)."""
        if not self._lean:
            raise NotImplementedError("keep_rows needs the lean GPT-2 path (can_drop_rows)")
        self._cache.keep_rows(rows)
        self._next_pos = self._next_pos[rows]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """Feed one token per row; returns the next-token logits ``(B, V)``."""
        if self._cache is None:
            raise RuntimeError("IncrementalLM.step() called before prefill()")
        col = torch.ones_like(tokens) if active is None else active.long()
        if self._lean:
            logits, _ = lean_gpt2.lean_forward(
                self.model,
                tokens[:, None],
                col[:, None],
                self._next_pos[:, None],
                cache=self._cache,
            )
        else:
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
            logits = out.logits
        self._next_pos = self._next_pos + col
        return logits[:, -1].float()


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

    ``prompt_ids`` are left-padded ``(B, P)``; ``completion_ids`` right-padded ``(B, N)``; the
    log-probs are 0 where ``completion_mask`` is 0. Columns that are padding on every row are
    dropped first (:func:`trim_left_padding`), and GPT-2 models run through
    :func:`textenv.lm.lean_gpt2.lean_forward` with the LM head over the real tokens only.
    Gradients flow when called outside ``torch.no_grad`` (agents' updates use this).
    With ``return_hidden`` also returns the last hidden states at the N positions that
    predict the completion tokens (what a value head reads).
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask.long(), completion_mask.long()], dim=1)
    input_ids, mask = trim_left_padding(input_ids, mask)
    n = completion_ids.shape[1]
    if lean_gpt2.supports(model):
        _, hidden = lean_gpt2.lean_forward(
            model, input_ids, mask, position_ids_from_mask(mask), head=False
        )
        hidden = hidden[:, -n - 1 : -1]  # the positions that predict the completion tokens
        logprobs = _real_token_logprobs(
            model.lm_head.weight, hidden, completion_ids, completion_mask, temperature
        )
        return (logprobs, hidden) if return_hidden else logprobs
    out = forward_left_padded(
        model,
        input_ids,
        mask,
        use_cache=False,
        logits_to_keep=n + 1,
        output_hidden_states=return_hidden,
    )
    logprobs = completion_logprobs(out.logits, completion_ids, temperature)
    logprobs = logprobs.masked_fill(~completion_mask.bool(), 0.0)
    if return_hidden:
        return logprobs, out.hidden_states[-1][:, -n - 1 : -1]
    return logprobs


def _real_token_logprobs(
    weight: torch.Tensor,
    hidden: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Log-probs ``(B, N)`` of the real completion tokens from the hidden states that predict
    them; the LM head and the softmax run over the real tokens only (0 at padding): a batch's
    completions end at different lengths, and the vocabulary-wide work is most of a forward."""
    real = completion_mask.bool()
    lp = token_logprobs(F.linear(hidden[real], weight), completion_ids[real], temperature)
    return lp.new_zeros(completion_ids.shape).masked_scatter(real, lp)


def completion_logprobs(
    logits: torch.Tensor, completion_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probs ``(B, N)`` of the N completion tokens from the logits of a teacher-forced forward
    whose last ``N + 1`` positions are ``logits`` (the last one predicts past the end)."""
    return token_logprobs(logits[:, -completion_ids.shape[1] - 1 : -1], completion_ids, temperature)


def token_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Log-prob of each of ``token_ids`` ``(...)`` under the logits ``(..., V)`` at the same
    places, at ``temperature``."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if logits.requires_grad:  # training: log_softmax's backward is the cheaper one
        return torch.log_softmax(logits, dim=-1).gather(-1, token_ids[..., None]).squeeze(-1)
    # Scoring only: the chosen logit minus logsumexp, without writing a (..., V) log_softmax
    # (3-4x faster at V = 512; equal to float rounding).
    chosen = logits.gather(-1, token_ids[..., None]).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


TokenCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def sample_loop(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    config: SamplingConfig,
    on_token: TokenCallback,
    *,
    generator: torch.Generator | None = None,
    suppress_token: int | None = None,
) -> int:
    """Sample up to ``max_new_tokens`` tokens per row of a left-padded batch, KV cache kept.

    Each step draws one token per row and calls ``on_token(t, tokens, token_logprobs,
    logprobs)`` (``logprobs`` ``(B, V)``: the distribution sampled from); it returns a bool
    ``(B,)`` of the rows that go on. The loop stops after the step where no row goes on, or
    after ``max_new_tokens`` steps. A row that stopped does not go on again (ValueError): its
    tokens and log-probs in later steps are placeholders for the callback to ignore (drawn
    from its last distribution), and the model computes the rows still going on only (where
    it can drop rows from its cache; otherwise stopped rows are carried masked). Every step
    draws one uniform per row of the batch, so the rows' draws do not depend on which rows
    stopped. ``suppress_token`` is never drawn (e.g. EOS for fixed-length samples).
    Returns the number of steps taken.
    """
    lm = IncrementalLM(model, max_new_tokens)
    logits = lm.prefill(input_ids, attention_mask)
    rows: torch.Tensor | None = None  # the rows the model still computes (None: all)
    for t in range(max_new_tokens):
        if suppress_token is not None:
            logits[:, suppress_token] = float("-inf")
        logprobs = next_token_logprobs(logits, config)
        tokens, token_logprobs = sample_tokens(logprobs, generator)
        alive = on_token(t, tokens, token_logprobs, logprobs)
        n_alive = int(alive.sum())
        if t + 1 == max_new_tokens or n_alive == 0:
            return t + 1
        if not lm.can_drop_rows:
            logits = lm.step(tokens, alive)
            continue
        live = alive if rows is None else alive[rows]
        if int(live.sum()) != n_alive:
            raise ValueError(f"on_token let a stopped row go on again at step {t}")
        if n_alive < live.shape[0]:
            keep = live.nonzero().squeeze(1)
            lm.keep_rows(keep)
            rows = keep if rows is None else rows[keep]
        if rows is None:
            logits = lm.step(tokens)
        else:  # stopped rows keep their last logits (placeholders)
            logits.index_copy_(0, rows, lm.step(tokens[rows]))
    return max_new_tokens


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
    tokens = torch.full((batch, max_new_tokens), pad, dtype=torch.long, device=input_ids.device)
    logprobs = torch.zeros(batch, max_new_tokens, device=input_ids.device)
    mask = torch.zeros(batch, max_new_tokens, dtype=torch.bool, device=input_ids.device)
    alive = torch.ones(batch, dtype=torch.bool, device=input_ids.device)

    def on_token(
        t: int, token: torch.Tensor, logprob: torch.Tensor, _: torch.Tensor
    ) -> torch.Tensor:
        nonlocal alive
        tokens[:, t] = torch.where(alive, token, pad)
        logprobs[:, t] = torch.where(alive, logprob, 0.0)
        mask[:, t] = alive
        if eos_token_id is not None:
            alive = alive & (token != eos_token_id)
        return alive

    sample_loop(
        model,
        input_ids,
        attention_mask,
        max_new_tokens,
        config,
        on_token,
        generator=generator,
        suppress_token=eos_token_id if suppress_eos else None,
    )
    return SampleOutput(tokens, logprobs, mask)
