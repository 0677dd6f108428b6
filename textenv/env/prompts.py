"""Prompt sources and their train/eval split.

A prompt source is any of:

* a list of strings, or of dicts ``{"prompt": str, ...metadata}``;
* a path to a ``.txt`` file (one prompt per non-empty line) or a ``.jsonl`` file (``"prompt"`` key,
  other keys kept as metadata handed to reward functions);
* a Hugging Face ``datasets.Dataset`` with a ``"prompt"`` column;
* a ``"package.module:function"`` spec; the function is called as ``function(split)`` and returns
  prompts of that split (built-in tasks keep their own train and eval sets apart this way).

Sources other than the callable are split deterministically: a seeded permutation puts
``eval_fraction`` of the prompts in ``"eval"`` and the rest in ``"train"``; ``"all"`` keeps all.
Over-long prompts are *left*-truncated to ``max_prompt_tokens`` by the env (the end of a prompt,
nearest to the completion, matters most).
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textenv.env.config import SPLITS
from textenv.lm.models import import_callable, is_callable_spec
from textenv.lm.padding import encode_texts

__all__ = [
    "Prompt",
    "PromptError",
    "PromptEncoder",
    "load_prompts",
    "SPLITS",
    "check_prompt_text",
]


class PromptError(ValueError):
    """A prompt source is empty, unreadable or malformed."""


@dataclass(frozen=True)
class Prompt:
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def check_prompt_text(text: str, where: str) -> str:
    """``text`` if it is valid Unicode a tokenizer can encode; a :class:`PromptError` otherwise.

    A lone surrogate (``"\\ud800"``, e.g. from a badly decoded file) is a valid Python ``str``
    but not encodable text, and fails deep inside a tokenizer without saying which prompt.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PromptError(
            f"{where}: the prompt is not valid Unicode text ({exc.reason} at character "
            f"{exc.start}: {text[exc.start : exc.end]!r}); prompt starts {text[:40]!r}"
        ) from None
    return text


def _from_item(item: Any, where: str) -> Prompt:
    if isinstance(item, str):
        return Prompt(check_prompt_text(item, where))
    if isinstance(item, dict):
        if "prompt" not in item or not isinstance(item["prompt"], str):
            raise PromptError(f"{where}: expected a 'prompt' string key, got keys {sorted(item)}")
        meta = {k: v for k, v in item.items() if k != "prompt"}
        return Prompt(check_prompt_text(item["prompt"], where), meta)
    raise PromptError(f"{where}: a prompt must be a string or a dict, got {type(item).__name__}")


def _read_file(path: Path) -> list[Prompt]:
    if not path.is_file():
        raise PromptError(f"prompt file {str(path)!r} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        data = path.read_bytes()
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise PromptError(
            f"{path}:{lineno}: not UTF-8 text (byte {data[exc.start : exc.start + 1]!r} at "
            f"offset {exc.start})"
        ) from None
    if path.suffix == ".jsonl":
        prompts = []
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            prompts.append(_from_item(row, f"{path}:{lineno}"))
        return prompts
    return [Prompt(line) for line in lines if line.strip()]


def _split(prompts: list[Prompt], split: str, eval_fraction: float, seed: int) -> list[Prompt]:
    if split == "all":
        return prompts
    if not 0.0 < eval_fraction < 1.0:
        raise PromptError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    order = np.random.default_rng(seed).permutation(len(prompts))
    n_eval = max(1, round(eval_fraction * len(prompts))) if len(prompts) > 1 else 0
    chosen = order[:n_eval] if split == "eval" else order[n_eval:]
    if len(chosen) == 0:  # a one-prompt source serves both splits rather than none
        chosen = order
    return [prompts[i] for i in sorted(chosen)]


def load_prompts(
    source: Any, split: str = "train", *, eval_fraction: float = 0.1, seed: int = 0
) -> list[Prompt]:
    """Resolve a prompt source into the list of prompts of ``split``."""
    if split not in SPLITS:
        raise PromptError(f"unknown split {split!r}; choose one of {SPLITS}")
    if isinstance(source, str) and is_callable_spec(source):
        items = import_callable(source)(split)
        prompts = [_from_item(x, f"{source}({split!r})[{i}]") for i, x in enumerate(items)]
        where = f"{source}({split!r})"
    else:
        if isinstance(source, (str, Path)):
            prompts = _read_file(Path(source))
            where = f"prompt file {str(source)!r}"
        elif hasattr(source, "column_names"):  # a datasets.Dataset
            if "prompt" not in source.column_names:
                raise PromptError(
                    f"dataset has no 'prompt' column (columns: {source.column_names})"
                )
            prompts = [_from_item(row, f"dataset row {i}") for i, row in enumerate(source)]
            where = "dataset"
        elif isinstance(source, (list, tuple)):
            prompts = [_from_item(x, f"prompt {i}") for i, x in enumerate(source)]
            where = "prompt list"
        else:
            raise PromptError(f"unsupported prompt source of type {type(source).__name__}")
        if not prompts:
            raise PromptError(f"{where} is empty")
        prompts = _split(prompts, split, eval_fraction, seed)
    if not prompts:
        raise PromptError(f"{where} gave no prompts for split {split!r}")
    return prompts


class PromptEncoder:
    """Prompt text → the token ids the env puts in the observation, with a cache bounded in bytes.

    Prompts are encoded without the tokenizer's special tokens (an appended EOS would end the
    episode before it starts), except a BOS the tokenizer adds by itself (Llama-style), which
    the model was trained to see first: it is kept, and kept in front when an over-long prompt is
    left-truncated to ``max_tokens``. An empty prompt becomes the EOS token (the model needs one
    token to condition on). The cache forgets the oldest prompts past ``max_bytes`` (text plus
    ids), so an endless prompt stream cannot grow memory.
    """

    def __init__(self, tokenizer: Any, max_tokens: int, max_bytes: int = 64 * 2**20) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.max_bytes = max_bytes
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self.nbytes = 0

    @staticmethod
    def _cost(text: str, ids: list[int]) -> int:
        return sys.getsizeof(text) + sys.getsizeof(ids) + 28 * len(ids)

    def __call__(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is not None:
            return ids
        # Left-truncated (the end of a prompt, next to the completion, matters most), a BOS of
        # the tokenizer's own kept in front; an empty prompt becomes EOS (see encode_texts).
        ids = encode_texts(self.tokenizer, [text], self.max_tokens)[0]
        cost = self._cost(text, ids)
        if cost <= self.max_bytes:
            self._cache[text] = ids
            self.nbytes += cost
            while self.nbytes > self.max_bytes:
                old_text, old_ids = self._cache.popitem(last=False)
                self.nbytes -= self._cost(old_text, old_ids)
        return ids

    def __len__(self) -> int:
        return len(self._cache)
