"""``textenv/Sort-v0``: sort a short string of digits.

## Description
A synthetic task with a 12-token vocabulary, a sharp programmatic gold score and short
episodes, made for comparing RL algorithms quickly. The prompt is 3 to 8 random digits
followed by ``>``, e.g. ``"52814>"``; the right completion is the same digits in ascending
order, ``"12458"``, then EOS. The reference LM (``builtin:sort``) was pretrained by
:func:`textenv.training.pretrain.pretrain` on examples of this format where only a third of the
completions are right and the rest are corrupted (the input copied, shuffled, a sorted answer
with one mistake, random digits): it knows the format and stops, but sorts correctly only
part of the time, so there is headroom for RL (its mean gold score is in its
``pretrain_metrics.json``).

## Action Space
``Discrete(12)``: the next token id: ``<|endoftext|>`` (id 0, EOS), the digits ``0``-``9``
and ``>``.

## Observation Space
``Dict(input_ids=Box(0, 11, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
``L = max_prompt_tokens + max_new_tokens`` (9 + 12 = 21), laid out as
``[left-padded prompt | generated tokens | right padding]``; the pad id is the EOS id.

## Rewards
``RM(prompt, completion) - beta * KL``, where by default the reward model is the gold score
itself and the KL term is against the frozen reference LM (``kl_coef`` below; placement per
the env's ``kl_reward``). The gold score (:func:`gold_score`) is in ``[0, 1]``: the number of
positions where the completion agrees with the sorted prompt digits, divided by the longer of
the two lengths. So 1 exactly for the right answer, partial credit for near misses, and
writing too many or too few characters costs. Any ``>`` or other character in the completion
counts as a wrong position.

## Starting State
A prompt drawn uniformly from the ``train`` split (``textenv/data/tasks/sort/train.jsonl``,
5000 prompts) or, with ``split="eval"``, from the 500 ``eval`` prompts. The two splits are
disjoint: a digit string belongs to the eval side iff a hash of it falls in the eval
fraction, and the reference LM was pretrained only on train-side digit strings.

## Episode End
Terminated when the policy emits EOS; truncated after ``max_new_tokens`` (12) tokens.

## Arguments
The env kwargs (``gym.make("textenv/Sort-v0", ...)``) override the defaults in
:data:`TASK`: ``max_prompt_tokens``, ``max_new_tokens``, ``reference``, ``reward``,
``gold``, ``prompts``, ``kl_coef``, and the env's own (``kl_reward``, ``device``, ...).

## Version History
* v0: initial version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from textenv.lm.tokens import EOS_TOKEN as EOS
from textenv.tasks.spec import TaskSpec

__all__ = [
    "TASK",
    "ALPHABET",
    "SEPARATOR",
    "gold_score",
    "prompts",
    "target",
    "is_eval_digits",
    "make_prompts",
    "lm_texts",
    "build_tokenizer",
    "write_prompt_files",
]

SEPARATOR = ">"
ALPHABET = "0123456789" + SEPARATOR
MIN_DIGITS, MAX_DIGITS = 3, 8
EVAL_FRACTION = 0.1
DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "tasks" / "sort"

TASK = TaskSpec(
    name="sort",
    env_id="textenv/Sort-v0",
    summary="sort a short string of digits (12-token vocab, sharp gold score)",
    max_prompt_tokens=MAX_DIGITS + 1,
    max_new_tokens=12,
    reference="builtin:sort",
    reward="textenv.tasks.sort:gold_score",
    gold="textenv.tasks.sort:gold_score",
    prompts="textenv.tasks.sort:prompts",
    kl_coef=0.05,
)


def _digits(prompt: str) -> str:
    return "".join(ch for ch in prompt.split(SEPARATOR)[0] if ch.isdigit())


def target(prompt: str) -> str:
    """The right completion of a prompt (without EOS): its digits, sorted."""
    return "".join(sorted(_digits(prompt)))


def _clean_completion(text: str) -> str:
    return text.replace(EOS, "").strip()


def _score(completion: str, answer: str) -> float:
    n = max(len(completion), len(answer))
    if n == 0:
        return 1.0
    hits = sum(a == b for a, b in zip(completion, answer, strict=False))
    return hits / n


def gold_score(
    prompts: list[str], completions: list[str], metadata: list[dict] | None = None
) -> list[float]:
    """Position-wise agreement with the sorted digits of the prompt, in ``[0, 1]``.

    ``metadata`` is accepted for the reward-callable signature and ignored: the answer is
    computed from the prompt.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    return [
        _score(_clean_completion(c), target(p)) for p, c in zip(prompts, completions, strict=True)
    ]


def is_eval_digits(digits: str) -> bool:
    """True iff a digit string belongs to the eval side (a fixed hash; no seed)."""
    h = hashlib.sha256(f"sort-split:{digits}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64 < EVAL_FRACTION


def _random_digits(rng: np.random.Generator) -> str:
    n = int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1))
    return "".join(str(d) for d in rng.integers(0, 10, size=n))


def make_prompts(split: str, n: int, seed: int) -> list[dict]:
    """``n`` distinct prompts of one split, drawn deterministically from ``seed``."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    out: list[dict] = []
    seen: set[str] = set()
    while len(out) < n:
        d = _random_digits(rng)
        if d in seen or is_eval_digits(d) != (split == "eval"):
            continue
        seen.add(d)
        out.append({"prompt": d + SEPARATOR, "target": "".join(sorted(d))})
    return out


def _corrupt(d: str, answer: str, rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 4))
    if kind == 0:  # copy the input, unsorted
        return d
    if kind == 1:  # a random permutation of the input
        return "".join(rng.permutation(list(d)))
    if kind == 2:  # the sorted answer with one mistake: a replaced, dropped or duplicated digit
        s = list(answer)
        i = int(rng.integers(0, len(s)))
        op = int(rng.integers(0, 3))
        if op == 0:
            s[i] = str(int(rng.integers(0, 10)))
        elif op == 1:
            del s[i]
        else:
            s.insert(i, s[i])
        return "".join(s)
    n = max(1, len(d) + int(rng.integers(-1, 2)))  # random digits, about the right length
    return "".join(str(x) for x in rng.integers(0, 10, size=n))


def lm_texts(n: int, *, seed: int, split: str = "train", p_correct: float = 1 / 3) -> list[str]:
    """``n`` pretraining texts ``"<digits>><completion>"`` (EOS is appended by the tokeniser
    step). A fraction ``p_correct`` of completions are right, the rest corrupted. The digit
    strings come from one side of the train/eval split only."""
    rng = np.random.default_rng([seed, 7, 0 if split == "train" else 1])
    out = []
    while len(out) < n:
        d = _random_digits(rng)
        if is_eval_digits(d) != (split == "eval"):
            continue
        answer = "".join(sorted(d))
        completion = answer if rng.random() < p_correct else _corrupt(d, answer, rng)
        out.append(d + SEPARATOR + completion)
    return out


def build_tokenizer():
    """The task's tokenizer: one token per character of :data:`ALPHABET`, EOS = id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {EOS: 0, **{ch: i + 1 for i, ch in enumerate(ALPHABET)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.add_special_tokens([EOS])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=EOS
    )


def write_prompt_files(out_dir: str | Path | None = None, *, seed: int = 0) -> dict:
    """Write ``train.jsonl`` (5000) and ``eval.jsonl`` (500) prompts; returns counts."""
    out = Path(out_dir) if out_dir is not None else DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, n in (("train", 5000), ("eval", 500)):
        rows = make_prompts(split, n, seed)
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        counts[split] = len(rows)
    return counts


_PROMPTS: dict[str, list[dict]] = {}


def prompts(split: str = "train") -> list[dict]:
    """The shipped prompts of a split (``"train"`` or ``"eval"``), as dicts with keys
    ``prompt`` and ``target`` (metadata)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    if split not in _PROMPTS:
        path = DATA_DIR / f"{split}.jsonl"
        with open(path, encoding="utf-8") as f:
            _PROMPTS[split] = [json.loads(line) for line in f if line.strip()]
    return [dict(row) for row in _PROMPTS[split]]
