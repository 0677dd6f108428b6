"""Preference data, sampling for labelling, and simulated labellers.

Two on-disk formats, both JSON Lines, one object per line:

* **pairs** (TRL-compatible)::

      {"prompt": "...", "chosen": "...", "rejected": "...", "margin": 0.5}

  ``margin`` is optional. Any other key is kept as metadata and written back.
* **K-way rankings** (InstructGPT)::

      {"prompt": "...", "completions": ["a", "b", "c"], "ranking": [2, 0, 1]}

  ``ranking`` lists completion indices best first; ``null``/absent means "not labelled yet" (what
  ``textenv sample`` writes). A labelled ranking expands into all C(K, 2) pairs; pairs of
  identical completion texts carry no preference and are dropped. ``"metadata": {...}`` holds the
  prompt's metadata (handed to reward functions).

Readers accept a path, a list of dicts / :class:`PreferencePair` / :class:`Ranking`, or a Hugging
Face ``datasets.Dataset`` (anything with ``column_names`` that iterates over dict rows). A
malformed row raises :class:`PreferenceFormatError` naming the file and line, unless
``on_error="skip"``: then it is left out, counted in the returned list's ``.skipped`` and
reported with a warning.

:class:`SimulatedLabeller` labels pairs or rankings with a gold scorer and a Bradley–Terry
choice model, as in Gao et al. (2022): ``P(a ≻ b) = σ((g_a − g_b) / T)`` (``T = 0``:
deterministic), with an explicit tie policy, and reports the noise ceiling of the labels.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "PreferenceFormatError",
    "PreferencePair",
    "Ranking",
    "PreferenceList",
    "read_preferences",
    "read_rankings",
    "write_jsonl",
    "ranking_to_pairs",
    "SimulatedLabeller",
    "LabelResult",
    "noise_ceiling",
    "sample_completions",
    "register_cli",
]

OnError = Literal["raise", "skip"]
TiePolicy = Literal["random", "skip", "prefer_first"]
TIE_POLICIES = ("random", "skip", "prefer_first")


class PreferenceFormatError(ValueError):
    """A preference row is malformed; the message names the file (or source) and the line."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: ``chosen`` was preferred to ``rejected`` as a completion of ``prompt``."""

    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"prompt": self.prompt, "chosen": self.chosen}
        row["rejected"] = self.rejected
        if self.margin is not None:
            row["margin"] = self.margin
        for key, value in self.metadata.items():
            row.setdefault(key, value)
        return row


@dataclass
class Ranking:
    """K completions of one prompt and, once labelled, their order (indices, best first)."""

    prompt: str
    completions: list[str]
    ranking: list[int] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "prompt": self.prompt,
            "completions": list(self.completions),
            "ranking": None if self.ranking is None else [int(i) for i in self.ranking],
        }
        if self.metadata:
            row["metadata"] = self.metadata
        for key, value in self.extra.items():
            row.setdefault(key, value)
        return row

    def pairs(self) -> list[PreferencePair]:
        return ranking_to_pairs(self)


class PreferenceList(list):
    """A list of records plus ``skipped``: ``"where: why"`` for each row left out."""

    def __init__(self, items: Iterable[Any] = (), skipped: Sequence[str] = ()) -> None:
        super().__init__(items)
        self.skipped: list[str] = list(skipped)


def ranking_to_pairs(row: Ranking) -> list[PreferencePair]:
    """All C(K, 2) pairs implied by a labelled ranking (identical texts dropped)."""
    if row.ranking is None:
        raise PreferenceFormatError(f"ranking of prompt {row.prompt[:60]!r} is not labelled")
    pairs = []
    order = row.ranking
    for i in range(len(order)):
        for j in range(i + 1, len(order)):
            better, worse = row.completions[order[i]], row.completions[order[j]]
            if better != worse:
                meta = dict(row.metadata)
                meta["source_indices"] = [int(order[i]), int(order[j])]
                pairs.append(PreferencePair(row.prompt, better, worse, None, meta))
    return pairs


# --------------------------------------------------------------------------- reading


def _iter_rows(source: Any) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` for each row of a source; ``row`` is an exception for bad JSON."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"preference file {str(path)!r} does not exist")
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{path}:{lineno}", PreferenceFormatError(f"invalid JSON ({exc.msg})")
        return
    if hasattr(source, "column_names"):  # a datasets.Dataset (duck-typed)
        for i, row in enumerate(source):
            yield f"dataset row {i}", row
        return
    if isinstance(source, (list, tuple)):
        for i, row in enumerate(source):
            yield f"row {i}", row
        return
    raise TypeError(
        f"unsupported preference source of type {type(source).__name__}: "
        "use a path, a list of rows or a datasets.Dataset"
    )


def _text(row: dict, key: str) -> str:
    if key not in row:
        raise PreferenceFormatError(f"missing key {key!r} (keys: {sorted(row)})")
    value = row[key]
    if isinstance(value, list):
        raise PreferenceFormatError(
            f"{key!r} is a list (conversational format); only plain strings are supported"
        )
    if not isinstance(value, str):
        raise PreferenceFormatError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _metadata(row: dict, known: set[str]) -> dict[str, Any]:
    meta = dict(row["metadata"]) if isinstance(row.get("metadata"), dict) else {}
    meta.update({k: v for k, v in row.items() if k not in known and k != "metadata"})
    return meta


def _parse_pair(row: Any) -> PreferencePair:
    if isinstance(row, PreferencePair):
        row = row.to_dict()
    if not isinstance(row, dict):
        raise PreferenceFormatError(f"a row must be a JSON object, got {type(row).__name__}")
    prompt, chosen, rejected = _text(row, "prompt"), _text(row, "chosen"), _text(row, "rejected")
    if chosen == rejected:
        raise PreferenceFormatError("'chosen' and 'rejected' are the same text")
    margin = row.get("margin")
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, (int, float)):
            raise PreferenceFormatError(f"'margin' must be a number, got {margin!r}")
        if not math.isfinite(margin):
            raise PreferenceFormatError(f"'margin' must be finite, got {margin!r}")
        margin = float(margin)
    known = {"prompt", "chosen", "rejected", "margin"}
    return PreferencePair(prompt, chosen, rejected, margin, _metadata(row, known))


def _parse_ranking(row: Any, require_ranking: bool) -> Ranking:
    if isinstance(row, Ranking):
        row = row.to_dict()
    if not isinstance(row, dict):
        raise PreferenceFormatError(f"a row must be a JSON object, got {type(row).__name__}")
    prompt = _text(row, "prompt")
    if "completions" not in row:
        raise PreferenceFormatError(f"missing key 'completions' (keys: {sorted(row)})")
    comps = row["completions"]
    if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
        raise PreferenceFormatError("'completions' must be a list of strings")
    if len(comps) < 2:
        raise PreferenceFormatError(f"'completions' needs at least 2 texts, got {len(comps)}")
    ranking = row.get("ranking")
    if ranking is None:
        if require_ranking:
            raise PreferenceFormatError("'ranking' is missing or null (row not labelled)")
    else:
        if not isinstance(ranking, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ranking
        ):
            raise PreferenceFormatError(f"'ranking' must be a list of integers, got {ranking!r}")
        if sorted(ranking) != list(range(len(comps))):
            raise PreferenceFormatError(
                f"'ranking' {ranking} is not a permutation of the indices 0..{len(comps) - 1} "
                f"of the {len(comps)} completions"
            )
    known = {"prompt", "completions", "ranking"}
    meta = dict(row["metadata"]) if isinstance(row.get("metadata"), dict) else {}
    extra = {k: v for k, v in row.items() if k not in known and k != "metadata"}
    return Ranking(prompt, list(comps), None if ranking is None else list(ranking), meta, extra)


def _finish(items: list, skipped: list[str], on_error: str, what: str) -> PreferenceList:
    if skipped:
        shown = "; ".join(skipped[:3]) + (" …" if len(skipped) > 3 else "")
        warnings.warn(f"skipped {len(skipped)} malformed {what} row(s): {shown}", stacklevel=3)
    return PreferenceList(items, skipped)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def read_preferences(source: Any, *, on_error: OnError = "raise") -> PreferenceList:
    """Preference pairs from a pairs file, a rankings file (expanded to C(K,2) pairs), a list of
    rows or a dataset. Rows of both formats may be mixed; unlabelled rankings are errors."""
    _check_on_error(on_error)
    pairs: list[PreferencePair] = []
    skipped: list[str] = []
    for where, row in _iter_rows(source):
        try:
            if isinstance(row, Exception):
                raise row
            if isinstance(row, Ranking) or (isinstance(row, dict) and "completions" in row):
                pairs.extend(ranking_to_pairs(_parse_ranking(row, require_ranking=True)))
            else:
                pairs.append(_parse_pair(row))
        except PreferenceFormatError as exc:
            if on_error == "raise":
                raise PreferenceFormatError(f"{where}: {exc}") from None
            skipped.append(f"{where}: {exc}")
    return _finish(pairs, skipped, on_error, "preference")


def read_rankings(
    source: Any, *, on_error: OnError = "raise", require_ranking: bool = False
) -> PreferenceList:
    """K-way rows (labelled or not, unless ``require_ranking``) as :class:`Ranking` records."""
    _check_on_error(on_error)
    rows: list[Ranking] = []
    skipped: list[str] = []
    for where, row in _iter_rows(source):
        try:
            if isinstance(row, Exception):
                raise row
            rows.append(_parse_ranking(row, require_ranking))
        except PreferenceFormatError as exc:
            if on_error == "raise":
                raise PreferenceFormatError(f"{where}: {exc}") from None
            skipped.append(f"{where}: {exc}")
    return _finish(rows, skipped, on_error, "ranking")


def _as_row(item: Any) -> dict[str, Any]:
    if isinstance(item, (PreferencePair, Ranking)):
        return item.to_dict()
    if isinstance(item, dict):
        if "completions" in item:
            return _parse_ranking(item, require_ranking=False).to_dict()
        return _parse_pair(item).to_dict()
    raise TypeError(f"cannot write a {type(item).__name__} as a preference row")


def write_jsonl(path: str | Path, items: Iterable[Any]) -> int:
    """Write pairs and/or rankings (records or dicts, validated) atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(_as_row(item), ensure_ascii=False) + "\n" for item in items]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(lines)


# --------------------------------------------------------------------------- simulated labels


def noise_ceiling(p: Sequence[float] | np.ndarray) -> float:
    """Best expected accuracy any predictor can reach on labels drawn with ``P(first) = p``:
    the Bayes-optimal predictor picks the likelier side, so the ceiling is mean max(p, 1 − p)."""
    p = np.asarray(p, dtype=np.float64)
    return float(np.maximum(p, 1.0 - p).mean()) if p.size else float("nan")


@dataclass
class LabelResult:
    """What a simulated labeller produced, and how noisy it was.

    ``items`` are :class:`PreferencePair` (each with ``gold_chosen``, ``gold_rejected`` and
    ``p_label`` — the probability the labeller gives to the label it gave — in its metadata) or
    labelled :class:`Ranking` records. ``noise_ceiling`` is over the labelled (expanded) pairs.
    """

    items: list[Any]
    n_compared: int
    n_ties: int
    n_skipped: int
    noise_ceiling: float

    def summary(self) -> dict[str, Any]:
        return {
            "labelled": len(self.items),
            "compared": self.n_compared,
            "ties": self.n_ties,
            "skipped_ties": self.n_skipped,
            "noise_ceiling": self.noise_ceiling,
        }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class SimulatedLabeller:
    """A gold scorer plus a Bradley–Terry choice: ``P(a ≻ b) = σ((g_a − g_b) / T)``.

    Args:
        gold: a reward callable ``(prompts, completions, metadata) -> scores`` or a spec string
            (``"textenv.tasks.sentiment:gold_score"``, an RM folder, …).
        temperature: ``T ≥ 0``; 0 picks the higher gold score deterministically.
        ties: what to do when ``|g_a − g_b| ≤ tie_tolerance`` (VADER scores ~half of all texts
            exactly 0): ``"random"`` (a fair coin, ``p = 0.5``), ``"skip"`` (drop the pair;
            pairs only) or ``"prefer_first"`` (the first item wins; deterministic).
        seed: all draws come from ``numpy.random.default_rng(seed)``.
    """

    def __init__(
        self,
        gold: str | Callable[..., Sequence[float]],
        temperature: float = 0.0,
        ties: TiePolicy = "random",
        seed: int = 0,
        tie_tolerance: float = 0.0,
    ) -> None:
        if not temperature >= 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be ≥ 0, got {temperature}")
        if ties not in TIE_POLICIES:
            raise ValueError(f"ties must be one of {TIE_POLICIES}, got {ties!r}")
        if tie_tolerance < 0:
            raise ValueError(f"tie_tolerance must be ≥ 0, got {tie_tolerance}")
        if isinstance(gold, str):
            from textenv.rewards import load_reward

            gold = load_reward(gold)
        self.gold = gold
        self.temperature = float(temperature)
        self.ties = ties
        self.tie_tolerance = float(tie_tolerance)
        self.rng = np.random.default_rng(seed)

    def scores(
        self, prompts: list[str], completions: list[str], metadata: list[dict] | None = None
    ) -> np.ndarray:
        from textenv.rewards import score

        metadata = metadata if metadata is not None else [{} for _ in prompts]
        return score(self.gold, list(prompts), list(completions), metadata, name="gold scorer")

    def preference_probability(self, g_a: np.ndarray, g_b: np.ndarray) -> np.ndarray:
        """``P(a ≻ b)`` under the choice model, ties excluded (see :meth:`is_tie`)."""
        diff = np.asarray(g_a, dtype=np.float64) - np.asarray(g_b, dtype=np.float64)
        if self.temperature == 0:
            return (diff > 0).astype(np.float64)
        return _sigmoid(diff / self.temperature)

    def is_tie(self, g_a: np.ndarray, g_b: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(g_a, float) - np.asarray(g_b, float)) <= self.tie_tolerance

    def label_pairs(
        self,
        prompts: Sequence[str],
        completions_a: Sequence[str],
        completions_b: Sequence[str],
        metadata: Sequence[dict] | None = None,
    ) -> LabelResult:
        """Label each ``(a, b)`` pair; one gold call over all ``2N`` texts."""
        n = len(prompts)
        if not len(completions_a) == len(completions_b) == n:
            raise ValueError("prompts, completions_a and completions_b must have equal lengths")
        meta = list(metadata) if metadata is not None else [{} for _ in range(n)]
        g = self.scores(list(prompts) * 2, list(completions_a) + list(completions_b), meta * 2)
        g_a, g_b = g[:n], g[n:]
        tie = self.is_tie(g_a, g_b)
        p_a = self.preference_probability(g_a, g_b)
        if self.ties == "random":
            p_a = np.where(tie, 0.5, p_a)
        elif self.ties == "prefer_first":
            p_a = np.where(tie, 1.0, p_a)
        u = self.rng.random(n)
        a_wins = u < p_a
        items, p_label = [], []
        for i in range(n):
            if completions_a[i] == completions_b[i] or (tie[i] and self.ties == "skip"):
                continue
            win = bool(a_wins[i])
            chosen, rejected = (completions_a[i], completions_b[i])[:: 1 if win else -1]
            gc, gr = (g_a[i], g_b[i]) if win else (g_b[i], g_a[i])
            p = float(p_a[i] if win else 1.0 - p_a[i])
            m = dict(meta[i])
            m.update(gold_chosen=float(gc), gold_rejected=float(gr), p_label=p)
            items.append(PreferencePair(prompts[i], chosen, rejected, None, m))
            p_label.append(p)
        n_same = sum(a == b for a, b in zip(completions_a, completions_b))
        n_ties = int(tie.sum())
        return LabelResult(
            items=items,
            n_compared=n - n_same,
            n_ties=n_ties,
            n_skipped=n - n_same - len(items),
            noise_ceiling=noise_ceiling(p_label),
        )

    def label_rankings(self, rows: Sequence[Ranking]) -> LabelResult:
        """Rank each K-way set by Plackett–Luce (Gumbel-perturbed ``g / T``), whose pairwise
        marginals are exactly the Bradley–Terry ``σ((g_a − g_b) / T)``."""
        if self.ties == "skip":
            raise ValueError(
                "ties='skip' cannot be used for K-way rankings (a ranking cannot hold a tie); "
                "label pairs, or use ties='random' / 'prefer_first'"
            )
        prompts, texts, meta, sizes = [], [], [], []
        for row in rows:
            prompts += [row.prompt] * len(row.completions)
            texts += row.completions
            meta += [dict(row.metadata)] * len(row.completions)
            sizes.append(len(row.completions))
        g_all = self.scores(prompts, texts, meta)
        items, p_pairs, n_ties, n_compared = [], [], 0, 0
        start = 0
        for row, k in zip(rows, sizes):
            g = g_all[start : start + k]
            start += k
            # Quantise to the tie tolerance so equal-within-tolerance scores compare equal.
            tol = self.tie_tolerance
            gq = np.round(g / tol) * tol if tol > 0 else g
            if self.temperature > 0:
                key = gq / self.temperature + self.rng.gumbel(size=k)
            else:
                key = gq.astype(np.float64)
            tiebreak = self.rng.permutation(k)  # T = 0 and ties="random": a random order
            order = sorted(range(k), key=lambda i: (key[i], tiebreak[i]), reverse=True)
            if self.ties == "prefer_first":  # within each tied group, earlier index first
                for value in set(gq.tolist()):
                    slots = [pos for pos, i in enumerate(order) if gq[i] == value]
                    members = sorted(order[pos] for pos in slots)
                    for pos, i in zip(slots, members):
                        order[pos] = i
            labelled = Ranking(
                row.prompt, list(row.completions), order, dict(row.metadata), dict(row.extra)
            )
            labelled.extra["gold_scores"] = [float(x) for x in g]
            items.append(labelled)
            for a in range(k):
                for b in range(a + 1, k):
                    i, j = order[a], order[b]
                    if row.completions[i] == row.completions[j]:
                        continue
                    n_compared += 1
                    if gq[i] == gq[j]:
                        n_ties += 1
                        p_pairs.append(0.5 if self.ties == "random" else 1.0)
                    else:
                        p_pairs.append(float(self.preference_probability(g[i], g[j])))
        return LabelResult(items, n_compared, n_ties, 0, noise_ceiling(p_pairs))

    def label_samples(self, rows: Sequence[Ranking], mode: str = "pairs") -> LabelResult:
        """Label K-way samples: ``"pairs"`` labels each of the C(K, 2) pairs independently;
        ``"rank"`` ranks each set."""
        if mode == "rank":
            return self.label_rankings(rows)
        if mode != "pairs":
            raise ValueError(f"mode must be 'pairs' or 'rank', got {mode!r}")
        prompts, a, b, meta = [], [], [], []
        for row in rows:
            k = len(row.completions)
            for i in range(k):
                for j in range(i + 1, k):
                    prompts.append(row.prompt)
                    a.append(row.completions[i])
                    b.append(row.completions[j])
                    meta.append(dict(row.metadata))
        return self.label_pairs(prompts, a, b, meta)


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
    (:func:`textenv.sampling.generate`) and seeded: the same arguments give the same file.
    """
    import torch

    from textenv.models import load_causal_lm, load_tokenizer
    from textenv.prompts import Prompt, load_prompts
    from textenv.sampling import SamplingConfig, generate

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
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows_prompt), desc="sampling", unit="completion")
    for start in range(0, len(rows_prompt), batch_size):
        chunk = rows_prompt[start : start + batch_size]
        ids = []
        for p in chunk:
            enc = tokenizer(p.text, add_special_tokens=False)["input_ids"] or [eos]
            ids.append(enc[-max_prompt_tokens:])
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, x in enumerate(ids):
            input_ids[r, width - len(x) :] = torch.tensor(x)
            mask[r, width - len(x) :] = 1
        out = generate(
            model,
            input_ids.to(device),
            mask.to(device),
            max_new_tokens,
            config,
            eos_token_id=eos,
            pad_token_id=pad,
            generator=generator,
        )
        for tok, m in zip(out.tokens.cpu(), out.mask.cpu()):
            texts.append(tokenizer.decode(tok[m].tolist(), skip_special_tokens=True))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return [
        Ranking(p.text, texts[i * k : (i + 1) * k], None, dict(p.metadata))
        for i, p in enumerate(items)
    ]


# --------------------------------------------------------------------------- CLI


def _task_defaults(name: str | None) -> dict[str, Any]:
    if not name:
        return {}
    import importlib

    module = name if "." in name else f"textenv.tasks.{name}"
    try:
        return dict(importlib.import_module(module).TASK)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"unknown task {name!r}: {exc}") from exc


def _cmd_sample(args: argparse.Namespace) -> int:
    task = _task_defaults(args.task)
    policy = args.policy or task.get("reference")
    prompts = args.prompts or task.get("prompts")
    if not policy or not prompts:
        raise SystemExit("give --policy and --prompts (or --task)")
    rows = sample_completions(
        policy,
        prompts,
        k=args.k,
        max_new_tokens=args.max_new_tokens or int(task.get("max_new_tokens", 24)),
        max_prompt_tokens=args.max_prompt_tokens or int(task.get("max_prompt_tokens", 64)),
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        batch_size=args.batch_size,
        seed=args.seed,
        split=args.split,
        n_prompts=args.n_prompts,
        progress=True,
    )
    n = write_jsonl(args.out, rows)
    print(f"wrote {n} prompts × {args.k} completions to {args.out}")
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sample",
        help="sample K completions per prompt into a K-way file ready for labelling",
    )
    p.add_argument("--task", help="built-in task whose reference/prompts/lengths are defaults")
    p.add_argument("--policy", help="LM spec (default: the task's reference LM)")
    p.add_argument("--prompts", help="prompt source (file, 'module:function'; default: task's)")
    p.add_argument("--split", default="train", choices=["train", "eval", "all"])
    p.add_argument("--n-prompts", type=int, default=None, help="use only the first N prompts")
    p.add_argument("-k", "--k", type=int, default=4, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--max-prompt-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output JSONL (K-way rows, ranking null)")
    p.set_defaults(func=_cmd_sample)
