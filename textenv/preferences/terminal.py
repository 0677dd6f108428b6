"""``textenv label``: collect preferences from a person in the terminal.

The K-way sets of a ``textenv sample`` file are shown one question at a time, either as pairs
(``--mode pairs``; the default when K = 2) or as whole sets to rank (``--mode rank``; the
default when K > 2); questions, answer rows, durability, resume and undo are those of
:mod:`textenv.preferences.session` (shared with the browser page, ``--web``). Answers:

* a pair: ``1`` or ``2`` (the better completion), ``t`` a tie (both equally good);
* a set: a ranking of the shown numbers, best first: ``3 1 2`` (or ``312`` when K < 10);
* ``s`` skip (for this session: a rerun asks again), ``u`` undo your last answer, ``q`` quit
  (end of input quits too).

Each answer is appended and fsync-ed before the next question is shown; a rerun resumes at the
first question not answered, and refuses an answers file written for another samples file or
``--mode``.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import TextIO

from textenv.preferences.session import DEFAULT_LABELLER, LabelSession, Question

__all__ = ["run_interactive", "parse_answer"]


def _show(q: Question, out: TextIO, progress: dict[str, int]) -> None:
    width = 76
    out.write(
        f"\n=== question {q.item + 1} of {progress['questions']} "
        f"({progress['answers']} answered) ===\n"
    )
    out.write("prompt:\n" + textwrap.indent(q.prompt or "(empty)", "    ") + "\n")
    for d, text in enumerate(q.shown_texts(), 1):
        text = text if text else "(empty completion)"
        body = "\n".join(textwrap.wrap(text, width - 6) or [text])
        out.write(f"[{d}]\n" + textwrap.indent(body, "    ") + "\n")
    if q.mode == "pairs":
        out.write("better one? 1/2, t tie, s skip, u undo, q quit > ")
    else:
        out.write(f"rank best first (e.g. {' '.join(map(str, range(q.k, 0, -1)))}), ")
        out.write("s skip, u undo, q quit > ")
    out.flush()


def parse_answer(text: str, k: int) -> list[int] | str:
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


def run_interactive(
    samples: str | Path,
    out: str | Path,
    *,
    mode: str = "auto",
    seed: int = 0,
    labeller: str = DEFAULT_LABELLER,
    overlap: int = 1,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """The labelling loop; returns the number of answers in the file when it ends."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    session = LabelSession(samples, out, mode=mode, seed=seed, overlap=overlap)
    skipped: set[str] = set()
    first: str | None = None  # an undone question is asked again next
    if session.log.entries:
        stdout.write(f"resuming: {len(session.log.entries)} answers already in {out}\n")

    def stop(message: str) -> int:
        stdout.write(message.format(n=len(session.log.entries), out=out) + "\n")
        stdout.flush()
        return len(session.log.entries)

    while True:
        q = session.next_for(labeller, skip=skipped, first=first)
        if q is None:
            return stop("\nall done: {n} answers in {out}")
        _show(q, stdout, session.progress(labeller))
        line = stdin.readline()
        if not line:
            return stop("\nend of input: stopping")
        answer = line.strip().lower()
        if answer in ("q", "quit"):
            return stop("stopped: {n} answers in {out}")
        if answer in ("s", "skip"):
            skipped.add(q.qid)
            continue
        if answer in ("u", "undo"):
            last = session.undo(labeller)
            if last is None:
                stdout.write("nothing to undo\n")
            else:
                first = last.qid
                skipped.discard(first)
                stdout.write(f"undone: question {last.item + 1}\n")
            continue
        if answer in ("t", "tie"):
            if q.mode != "pairs":
                stdout.write("a ranking has no ties: rank them all\n")
                continue
            session.tie(q, labeller)
            first = None
            continue
        parsed = parse_answer(answer, q.k)
        if isinstance(parsed, str):
            stdout.write(parsed + "\n")
            continue
        session.answer(q, parsed, labeller)
        first = None
