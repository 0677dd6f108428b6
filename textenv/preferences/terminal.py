"""``textenv label``: collect preferences from a person in the terminal, or from a simulated
labeller.

Interactive (``textenv label samples.jsonl --out prefs.jsonl``): the K-way sets of a
``textenv sample`` file are shown one question at a time, either as pairs (``--mode pairs``; all
C(K, 2) pairs of each set; the default when K = 2) or as whole sets to rank (``--mode rank``; the
default when K > 2). Answers:

* a pair: ``1`` or ``2`` (the better completion);
* a set: a ranking of the shown numbers, best first: ``3 1 2`` (or ``312`` when K < 10);
* ``s`` skip (for this session: a rerun asks again), ``u`` undo the last answer, ``q`` quit
  (end of input quits too).

Durability: each answer is one line appended with a single ``write`` to a file opened with
``O_APPEND``, then flushed and ``os.fsync``-ed before the next question is shown. Undo rewrites
the file without its last line atomically (temp file, fsync, ``os.replace``). So a kill at any
moment leaves a valid file: every line a complete answer in the pairs or rankings format
(:mod:`textenv.preferences` reads it directly). A rerun with the same input, ``--mode`` and
``--seed`` resumes at the first question not answered (each row carries the ``item`` number of
its question). The display order of the completions is shuffled per question (seeded), to
avoid position bias; rows store the completions' real identities.

Simulated (``--gold SPEC``): every set is labelled by :class:`textenv.preferences.
SimulatedLabeller` (Bradley–Terry with ``--temperature`` and ``--ties``); prints the noise
ceiling.
"""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from textenv.files import append_line, atomic_write_lines
from textenv.preferences import Ranking, read_rankings

__all__ = ["Question", "build_questions", "LabelSession", "run_interactive"]


@dataclass(frozen=True)
class Question:
    """One thing to judge: ``indices`` of completions of set ``source``, shown in ``shown``
    order (``shown[d]`` = the completion index displayed as number ``d + 1``)."""

    item: int
    source: int
    indices: tuple[int, ...]
    shown: tuple[int, ...]


def build_questions(rows: list[Ranking], mode: str, seed: int = 0) -> list[Question]:
    """The deterministic question list for ``rows`` (same arguments → same questions)."""
    rng = np.random.default_rng([seed, 97])
    out: list[Question] = []
    for s, row in enumerate(rows):
        k = len(row.completions)
        m = mode if mode != "auto" else ("pairs" if k == 2 else "rank")
        if m == "pairs":
            groups = [(i, j) for i in range(k) for j in range(i + 1, k)]
        elif m == "rank":
            groups = [tuple(range(k))]
        else:
            raise ValueError(f"mode must be 'auto', 'pairs' or 'rank', got {mode!r}")
        for g in groups:
            shown = tuple(int(x) for x in rng.permutation(g))
            out.append(Question(len(out), s, tuple(g), shown))
    return out


class LabelSession:
    """The answers file: durable appends, atomic undo, resume."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = self._load()

    def _load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        rows = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            if i == len(lines) - 1:  # no newline after it: a torn last line (killed mid-write
                # on a filesystem without atomic appends); the answer was never confirmed
                print(f"note: dropping an incomplete last line of {self.path}", file=sys.stderr)
                self._rewrite(rows)
                return rows
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict) or "item" not in row:
                raise ValueError(f"{self.path}:{i + 1}: not a labelling row: {line[:80]!r}")
            rows.append(row)
        return rows

    @property
    def answered(self) -> set[int]:
        return {int(r["item"]) for r in self.rows}

    def append(self, row: dict[str, Any]) -> None:
        append_line(self.path, json.dumps(row, ensure_ascii=False))
        self.rows.append(row)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_lines(self.path, [json.dumps(r, ensure_ascii=False) + "\n" for r in rows])

    def undo(self) -> dict[str, Any] | None:
        if not self.rows:
            return None
        last = self.rows[-1]
        self._rewrite(self.rows[:-1])
        self.rows.pop()
        return last


def _show(q: Question, row: Ranking, out: TextIO, n_done: int, n_total: int) -> None:
    width = 76
    out.write(f"\n=== question {q.item + 1} of {n_total} ({n_done} answered) ===\n")
    out.write("prompt:\n" + textwrap.indent(row.prompt or "(empty)", "    ") + "\n")
    for d, i in enumerate(q.shown, 1):
        text = row.completions[i] if row.completions[i] else "(empty completion)"
        body = "\n".join(textwrap.wrap(text, width - 6) or [text])
        out.write(f"[{d}]\n" + textwrap.indent(body, "    ") + "\n")
    if len(q.shown) == 2:
        out.write("better one? 1/2, s skip, u undo, q quit > ")
    else:
        out.write(f"rank best first (e.g. {' '.join(map(str, range(len(q.shown), 0, -1)))}), ")
        out.write("s skip, u undo, q quit > ")
    out.flush()


def _parse_answer(text: str, k: int) -> list[int] | str:
    """``[display numbers best first]`` or an error message."""
    parts = text.replace(",", " ").split()
    if len(parts) == 1 and k < 10 and len(parts[0]) == k and parts[0].isdigit():
        parts = list(parts[0])
    if k == 2 and len(parts) == 1 and parts[0] in ("1", "2"):
        return [int(parts[0]), 3 - int(parts[0])]
    try:
        nums = [int(x) for x in parts]
    except ValueError:
        return f"not understood: {text!r}"
    if sorted(nums) != list(range(1, k + 1)):
        want = "1 or 2" if k == 2 else f"each of 1..{k} once"
        return f"answer {text!r}: give {want}"
    return nums


def _row_for(q: Question, row: Ranking, order_shown: list[int]) -> dict[str, Any]:
    best_first = [q.shown[d - 1] for d in order_shown]
    base = {"item": q.item, "source": q.source}
    if row.metadata:
        base["metadata"] = row.metadata
    if len(q.indices) == 2:
        c, r = best_first
        return {
            "prompt": row.prompt,
            "chosen": row.completions[c],
            "rejected": row.completions[r],
            **base,
            "source_indices": [c, r],
        }
    comps = [row.completions[i] for i in q.indices]
    ranking = [q.indices.index(i) for i in best_first]
    return {"prompt": row.prompt, "completions": comps, "ranking": ranking, **base}


def run_interactive(
    samples: str | Path,
    out: str | Path,
    *,
    mode: str = "auto",
    seed: int = 0,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """The labelling loop; returns the number of answers in the file when it ends."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    rows = read_rankings(samples)
    questions = build_questions(list(rows), mode, seed)
    session = LabelSession(out)
    n_total = len(questions)
    skipped: set[int] = set()
    if session.rows:
        stdout.write(f"resuming: {len(session.rows)} answers already in {out}\n")

    def next_question() -> Question | None:
        done = session.answered
        for q in questions:
            if q.item not in done and q.item not in skipped:
                return q
        return None

    while True:
        q = next_question()
        if q is None:
            stdout.write(f"\nall done: {len(session.rows)} answers in {out}\n")
            stdout.flush()
            return len(session.rows)
        _show(q, rows[q.source], stdout, len(session.rows), n_total)
        line = stdin.readline()
        if not line:  # end of input
            stdout.write("\nend of input: stopping\n")
            stdout.flush()
            return len(session.rows)
        answer = line.strip().lower()
        if answer in ("q", "quit"):
            stdout.write(f"stopped: {len(session.rows)} answers in {out}\n")
            stdout.flush()
            return len(session.rows)
        if answer in ("s", "skip"):
            skipped.add(q.item)
            continue
        if answer in ("u", "undo"):
            last = session.undo()
            if last is None:
                stdout.write("nothing to undo\n")
            else:
                skipped.discard(int(last["item"]))
                stdout.write(f"undone: question {int(last['item']) + 1}\n")
                # Ask the undone question next, before anything later.
                questions.sort(key=lambda x: (x.item != int(last["item"]), x.item))
            continue
        parsed = _parse_answer(answer, len(q.shown))
        if isinstance(parsed, str):
            stdout.write(parsed + "\n")
            continue
        session.append(_row_for(q, rows[q.source], parsed))
        questions.sort(key=lambda x: x.item)
