"""Left padding: the one encoder of text batches and the one forward over left-padded rows.

Every batch the package feeds a model is laid out the same way: each row's real tokens at the
right end, pad tokens (mask 0) on the left, and position ids that start at 0 on each row's first
real token (so a padded row is read exactly as the same row unpadded). Sampling, reference
scoring, reward models and their training all build their inputs with :func:`left_pad` /
:func:`left_pad_encode` and run them through :func:`forward_left_padded`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

__all__ = [
    "position_ids_from_mask",
    "left_pad",
    "encode_texts",
    "left_pad_encode",
    "forward_left_padded",
]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, *, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows as a left-padded batch: ``(input_ids, attention_mask)``, both ``(B, T)``
    long, T the longest row. An empty row is all padding (callers that need one token per row
    give it one)."""
    if not rows:
        raise ValueError("left_pad needs at least one row")
    width = max(len(r) for r in rows)
    ids = [[pad_id] * (width - len(r)) + list(r) for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return (
        torch.tensor(ids, dtype=torch.long, device=device),
        torch.tensor(mask, dtype=torch.long, device=device),
    )


def encode_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_tokens: int,
    *,
    special_tokens: bool = False,
    empty_id: int | None = None,
) -> list[list[int]]:
    """Token ids of ``texts``, each keeping its last ``max_tokens`` tokens (the end of a text,
    next to what follows it, matters most).

    ``special_tokens=False`` (how the env encodes prompts): no special tokens are added.
    ``special_tokens=True`` (how a reward model reads ``prompt + completion``): the tokenizer adds
    its own and truncates to ``max_tokens`` on its ``truncation_side`` (reward models set it to
    "left"). A text that gives no tokens becomes ``[empty_id]`` (default: the EOS id), so every
    row has a token to be read at.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be ≥ 1, got {max_tokens}")
    fill = tokenizer.eos_token_id if empty_id is None else empty_id
    if special_tokens:
        enc = tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]
    else:
        enc = [
            x[-max_tokens:] for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        ]
    return [list(x) if len(x) else [fill] for x in enc]


def left_pad_encode(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_tokens: int,
    *,
    special_tokens: bool = False,
    empty_id: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``texts`` encoded (see :func:`encode_texts`) and left-padded with the tokenizer's pad id
    (EOS when it has none): ``(input_ids, attention_mask)``."""
    rows = encode_texts(
        tokenizer, texts, max_tokens, special_tokens=special_tokens, empty_id=empty_id
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return left_pad(rows, pad, device=device)


def forward_left_padded(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any
) -> Any:
    """``model(...)`` over left-padded rows, with positions that skip the padding.

    ``kwargs`` go to the model (``use_cache``, ``logits_to_keep``, ``output_hidden_states``, a
    KV cache, ...). Gradients flow unless the caller is under ``torch.no_grad``.
    """
    attention_mask = attention_mask.long()
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        **kwargs,
    )
