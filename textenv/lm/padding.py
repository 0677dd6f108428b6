"""Left padding: the one encoder of text batches and the one forward over left-padded rows.

Every batch the package feeds a model is laid out the same way: each row's real tokens at the
right end, pad tokens (mask 0) on the left, and position ids that start at 0 on each row's first
real token (so a padded row is read exactly as the same row unpadded). Sampling, reference
scoring, reward models and their training all build their inputs with :func:`left_pad` /
:func:`left_pad_encode` and run them through :func:`forward_left_padded`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from textenv.lm import lean_gpt2

__all__ = [
    "adds_bos",
    "position_ids_from_mask",
    "left_pad",
    "left_pad_arrays",
    "encode_texts",
    "decode_rows",
    "left_pad_encode",
    "forward_left_padded",
    "classifier_logits_left_padded",
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
    ids, mask = left_pad_arrays(rows, pad_id)
    return (
        torch.as_tensor(ids, device=device),
        torch.as_tensor(mask, dtype=torch.long, device=device),
    )


def left_pad_arrays(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`left_pad` as numpy arrays: int64 ids and a bool mask (what the env writes into
    its observation arrays without a round trip through torch)."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    # One vectorised fill (row-major order is each row's tokens in turn) instead of Python lists
    # per row: the env scores every finished batch through here.
    mask = np.arange(width) >= (width - lengths)[:, None]
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    ids[mask] = np.fromiter(
        itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum())
    )
    return ids, mask


def adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` puts its BOS token in front of a text by itself (Llama-style).
    Asked once per tokenizer (the answer is kept on it)."""
    known = getattr(tokenizer, "_textenv_adds_bos", None)
    if known is not None:
        return known
    bos = getattr(tokenizer, "bos_token_id", None)
    answer = False
    if bos is not None:
        with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        answer = with_special[:1] == [bos] and plain[:1] != [bos]
    try:
        tokenizer._textenv_adds_bos = answer
    except AttributeError:  # a tokenizer object that takes no attributes: ask again next time
        pass
    return answer


def decode_rows(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Sequence[int]]) -> list[str]:
    """Each row's text without special tokens: ``tokenizer.decode(row, skip_special_tokens=True)``.

    A fast tokenizer that neither overrides decoding nor cleans up spaces afterwards is called in
    its Rust backend directly, row by row: the same strings without the Python wrapper's per-call
    cost (the env decodes every finished batch), and without ``decode_batch``'s thread pool,
    which would compete with the model's threads.
    """
    cls = type(tokenizer)
    if (
        isinstance(tokenizer, PreTrainedTokenizerFast)
        and cls.decode is PreTrainedTokenizerBase.decode
        and cls._decode is PreTrainedTokenizerFast._decode
        and not tokenizer.clean_up_tokenization_spaces
    ):
        decode = tokenizer.backend_tokenizer.decode
        return [
            decode(row if type(row) is list else np.asarray(row).tolist(), skip_special_tokens=True)
            for row in rows
        ]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in rows]


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

    ``special_tokens=False`` (how the env encodes prompts): no special tokens are added (an
    appended EOS would end an episode before it starts), except a BOS the tokenizer adds by
    itself (Llama-style), which the model was trained to see first: it is kept in front, also
    when a long text is cut from the left.
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
        plain = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        if adds_bos(tokenizer) and max_tokens > 1:
            bos = tokenizer.bos_token_id
            enc = [[bos, *x[-(max_tokens - 1) :]] for x in plain]
        else:
            enc = [x[-max_tokens:] for x in plain]
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


def classifier_logits_left_padded(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """A sequence classifier's logits ``(B, labels)`` over left-padded rows, each row read at its
    last token (its last real one: the padding is on the left).

    Given ids, Hugging Face's decoder classifiers read a row at its last token that is not the pad
    id. With the pad id equal to EOS (GPT-2 style), a row whose real tokens end in EOS (an empty
    text is scored as EOS alone) would be read on its left padding, so its score would depend on
    the longer rows batched with it. Given the same ids as embeddings they read every row at the
    last position, which is what left padding makes right.
    """
    attention_mask = attention_mask.long()
    if lean_gpt2.supports_classifier(model) and bool(attention_mask[:, -1].all()):
        # The same ops as Hugging Face's forward below, without its per-call overhead; only the
        # last position, where every row is read, goes through the score head. A row that is
        # all padding (real tokens never end on the left) takes Hugging Face's path.
        _, hidden = lean_gpt2.lean_forward(
            model, input_ids, attention_mask, position_ids_from_mask(attention_mask), head=False
        )
        return model.score(hidden[:, -1])
    embed = model.get_input_embeddings()
    if embed is None:  # no embedding table to look ids up in: the model's own pooling
        return forward_left_padded(model, input_ids, attention_mask).logits
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "will not detect padding tokens" note: intended here
    try:
        out = model(
            inputs_embeds=embed(input_ids),
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return out.logits
