"""Sampling completions to label."""

from __future__ import annotations

from typing import Any

import torch

from textenv.env.prompts import Prompt, load_prompts
from textenv.lm.models import load_causal_lm, load_tokenizer
from textenv.lm.padding import decode_rows, left_pad_encode
from textenv.lm.sampling import SamplingConfig, generate
from textenv.preferences.records import Ranking
from textenv.progress import progress as show_progress

# --------------------------------------------------------------------------- sampling


def sample_completions(
    policy: str | Any,
    prompts: Any,
    *,
    k: int = 4,
    max_new_tokens: int = 24,
    max_prompt_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    tokenizer: Any = None,
    split: str = "train",
    n_prompts: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> list[Ranking]:
    """``k`` completions per prompt from ``policy`` (a spec or a model), unlabelled.

    Prompts are encoded like the env does (no special tokens, left-truncated to
    ``max_prompt_tokens``, left-padded); completions are decoded without special tokens, as
    the env hands them to reward models. Batched with the KV cache
    (:func:`textenv.lm.sampling.generate`) and seeded: the same arguments give the same file.
    """

    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if isinstance(policy, str):
        tokenizer = tokenizer or load_tokenizer(policy)
        model = load_causal_lm(policy, device)
    else:
        if tokenizer is None:
            raise ValueError("pass the tokenizer with a model object")
        model = policy
    items: list[Prompt] = (
        list(prompts)
        if isinstance(prompts, list) and all(isinstance(p, Prompt) for p in prompts)
        # a list given directly is used whole; files and task callables are split
        else load_prompts(prompts, "all" if isinstance(prompts, (list, tuple)) else split)
    )
    if n_prompts is not None:
        items = items[:n_prompts]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = SamplingConfig(temperature, top_k, top_p)
    generator = torch.Generator(device=device).manual_seed(seed)
    rows_prompt = [p for p in items for _ in range(k)]
    texts: list[str] = []
    bar = None
    if progress:
        bar = show_progress(len(rows_prompt), desc="sampling", unit="completion")
    for start in range(0, len(rows_prompt), batch_size):
        chunk = rows_prompt[start : start + batch_size]
        input_ids, mask = left_pad_encode(
            tokenizer, [p.text for p in chunk], max_prompt_tokens, device=device
        )
        out = generate(
            model,
            input_ids,
            mask,
            max_new_tokens,
            config,
            eos_token_id=eos,
            pad_token_id=pad,
            generator=generator,
        )
        texts += decode_rows(
            tokenizer, [tok[m].tolist() for tok, m in zip(out.tokens.cpu(), out.mask.cpu())]
        )
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return [
        Ranking(p.text, texts[i * k : (i + 1) * k], None, dict(p.metadata))
        for i, p in enumerate(items)
    ]
