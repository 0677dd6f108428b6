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

import json
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from textenv.files import atomic_write_lines

__all__ = [
    "PreferenceFormatError",
    "PreferencePair",
    "Ranking",
    "PreferenceList",
    "read_preferences",
    "read_rankings",
    "write_jsonl",
    "ranking_to_pairs",
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
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    byte = raw[exc.start : exc.start + 1]
                    yield (
                        f"{path}:{lineno}",
                        PreferenceFormatError(
                            f"not UTF-8 text (byte {byte!r} at column {exc.start + 1})"
                        ),
                    )
                    continue
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
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # e.g. a "\\ud800" escape: JSON allows it, text does not
        raise PreferenceFormatError(f"{key!r} is not valid Unicode text ({exc.reason})") from None
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
    lines = [json.dumps(_as_row(item), ensure_ascii=False) + "\n" for item in items]
    atomic_write_lines(path, lines)
    return len(lines)
