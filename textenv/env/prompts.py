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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textenv.lm.models import import_callable, is_callable_spec

__all__ = ["Prompt", "PromptError", "load_prompts", "SPLITS"]

SPLITS = ("train", "eval", "all")


class PromptError(ValueError):
    """A prompt source is empty, unreadable or malformed."""


@dataclass(frozen=True)
class Prompt:
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _from_item(item: Any, where: str) -> Prompt:
    if isinstance(item, str):
        return Prompt(item)
    if isinstance(item, dict):
        if "prompt" not in item or not isinstance(item["prompt"], str):
            raise PromptError(f"{where}: expected a 'prompt' string key, got keys {sorted(item)}")
        meta = {k: v for k, v in item.items() if k != "prompt"}
        return Prompt(item["prompt"], meta)
    raise PromptError(f"{where}: a prompt must be a string or a dict, got {type(item).__name__}")


def _read_file(path: Path) -> list[Prompt]:
    if not path.is_file():
        raise PromptError(f"prompt file {str(path)!r} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
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
