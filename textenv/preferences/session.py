"""Labelling sessions: the one home of questions, answer rows, durable answer files, resume,
undo and labelling statistics, shared by the terminal (:mod:`textenv.preferences.terminal`) and
the browser (:mod:`textenv.preferences.web`) front-ends.

**Questions.** A K-way samples file (``textenv sample``) becomes a list of :class:`Question`:
all C(K, 2) pairs of each set (``mode="pairs"``; the default when K = 2) or each whole set to
rank (``mode="rank"``; the default when K > 2). Completions with the same text are shown once
(a ranking of two identical texts says nothing), so a question whose completions are all the
same text is never asked, and no ``chosen == rejected`` row is ever written. Each question has a
content hash, its ``qid``: of the prompt, the set of completion texts in it, and the mode.
Identical questions (same prompt and texts) are asked once. The display order of the
completions is shuffled per question (seeded by ``seed`` and the hash), against position bias.

**Answers file.** One JSON object per line, in the formats :func:`textenv.preferences.
read_preferences` / :func:`~textenv.preferences.read_rankings` read, so ``textenv rm train``
takes it unchanged: a pairs row ``{"prompt", "chosen", "rejected", ...}`` or a rankings row
``{"prompt", "completions", "ranking", ...}``; the extra keys (kept as metadata by the readers)
are ``qid``, ``item`` (the question's number), ``source`` (the samples row), ``source_indices``
(the completions' indices in it), ``labeller`` and ``answered_at`` (Unix time). A tie (pairs
only: "both equally good") is not a preference, so it goes to a side file next to the answers
(``prefs.jsonl`` → ``prefs.ties.jsonl``) in the same durable way; it counts as an answer for
resume, undo and :func:`answer_stats`.

**Durability.** Each answer is one line appended with :func:`textenv.files.append_line` (a
single ``O_APPEND`` write, then fsync) before the caller shows the next question; undo rewrites
the file without that line with :func:`textenv.files.atomic_write_lines`. A kill at any moment
leaves complete lines only (a torn last line, possible on filesystems without atomic appends,
was never confirmed and is dropped on load).

**Resume.** Answers are matched to questions by ``qid`` (recomputed from each row's own prompt
and texts, and checked against the stored one), never by position: an answer that matches no
question of the samples file in this mode means the samples file or ``--mode`` changed, and
:class:`AnswerMismatchError` refuses to go on (appending rows to the samples file is fine: the
old answers still match). Several labellers may answer the same question (``overlap``); each
labeller answers a question at most once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textenv.files import append_line, atomic_write_lines
from textenv.preferences.records import Ranking, read_rankings

__all__ = [
    "MODES",
    "DEFAULT_LABELLER",
    "Question",
    "AnswerMismatchError",
    "build_questions",
    "question_id",
    "ties_path",
    "AnswerLog",
    "LabelSession",
    "answer_stats",
    "format_stats",
]

MODES = ("auto", "pairs", "rank")
DEFAULT_LABELLER = "terminal"  # the terminal's labeller id unless --labeller names another
UNNAMED = "unnamed"  # rows without a "labeller" key (simulated labels, older files)


class AnswerMismatchError(ValueError):
    """An answers file does not belong to these questions (samples file or mode changed)."""


def question_id(prompt: str, texts: Iterable[str], mode: str) -> str:
    """The content hash of a question: its prompt, the *set* of its completion texts and its
    mode (``"pairs"`` or ``"rank"``); independent of display and sample order."""
    key = json.dumps([mode, prompt, sorted(texts)], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Question:
    """One thing to judge: the completions ``indices`` of samples row ``source`` (distinct texts),
    shown in ``shown`` order (``shown[d]`` = the index displayed as number ``d + 1``)."""

    item: int
    source: int
    indices: tuple[int, ...]
    shown: tuple[int, ...]
    mode: str
    qid: str
    prompt: str
    completions: tuple[str, ...]  # the texts of ``indices``, in ``indices`` order
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def k(self) -> int:
        return len(self.indices)

    def shown_texts(self) -> list[str]:
        """The completion texts in display order."""
        return [self.completions[self.indices.index(i)] for i in self.shown]


def build_questions(rows: Sequence[Ranking], mode: str = "auto", seed: int = 0) -> list[Question]:
    """The deterministic question list for ``rows`` (same arguments → same questions)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    out: list[Question] = []
    seen: set[str] = set()
    for s, row in enumerate(rows):
        # The first index of each distinct text: duplicates are the same answer shown twice.
        distinct: dict[str, int] = {}
        for i, text in enumerate(row.completions):
            distinct.setdefault(text, i)
        uniq = sorted(distinct.values())
        m = mode if mode != "auto" else ("pairs" if len(row.completions) == 2 else "rank")
        groups = list(itertools.combinations(uniq, 2)) if m == "pairs" else [tuple(uniq)]
        for g in groups:
            if len(g) < 2:  # every completion the same text: nothing to compare
                continue
            texts = tuple(row.completions[i] for i in g)
            qid = question_id(row.prompt, texts, m)
            if qid in seen:
                continue
            seen.add(qid)
            rng = np.random.default_rng([seed, int(qid[:8], 16)])
            shown = tuple(int(x) for x in rng.permutation(g))
            out.append(
                Question(len(out), s, tuple(g), shown, m, qid, row.prompt, texts, row.metadata)
            )
    return out


def ties_path(path: str | Path) -> Path:
    """The side file for ties next to an answers file: ``prefs.jsonl`` → ``prefs.ties.jsonl``."""
    path = Path(path)
    return path.with_name(f"{path.stem if path.suffix else path.name}.ties.jsonl")


def _row_qid(row: dict[str, Any], where: str) -> str:
    """The qid of a stored row, recomputed from its own prompt and texts (and checked)."""
    try:
        if "completions" in row:
            comps = row["completions"]
            mode = "pairs" if row.get("tie") else "rank"
            if not isinstance(comps, list) or len(comps) < 2:
                raise ValueError("'completions' must be a list of at least 2 texts")
            qid = question_id(row["prompt"], comps, mode)
        else:
            if row["chosen"] == row["rejected"]:
                raise ValueError("'chosen' and 'rejected' are the same text")
            qid = question_id(row["prompt"], [row["chosen"], row["rejected"]], "pairs")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a labelling row ({exc!r})") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    stored = row.get("qid")
    if stored is not None and stored != qid:
        raise ValueError(
            f"{where}: stored qid {stored!r} does not match the row's prompt and completions "
            f"({qid}); was the row edited?"
        )
    return qid


@dataclass
class Entry:
    """One stored answer: its row, which file holds it (``tie``), its qid and where it was read."""

    row: dict[str, Any]
    qid: str
    tie: bool
    where: str

    @property
    def labeller(self) -> str:
        return str(self.row.get("labeller", UNNAMED))


class AnswerLog:
    """An answers file and its ties side file: durable appends, atomic undo, loading.
    ``read_only=True`` (statistics) never writes: a torn last line is skipped, not removed."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if self.path.is_dir():
            raise IsADirectoryError(f"answers file {self.path} is a folder")
        self.tie_path = ties_path(self.path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Answers in the order they were given (answers before ties on equal times).
        self.entries: list[Entry] = sorted(
            self._load(self.path, tie=False) + self._load(self.tie_path, tie=True),
            key=lambda e: float(e.row.get("answered_at", 0.0)),
        )

    def _load(self, path: Path, *, tie: bool) -> list[Entry]:
        if not path.exists():
            return []
        lines = path.read_bytes().split(b"\n")
        out: list[Entry] = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            where = f"{path}:{i + 1}"
            if i == len(lines) - 1:  # no newline after it: a torn last line (killed mid-write
                # on a filesystem without atomic appends); the answer was never confirmed
                print(f"note: dropping an incomplete last line of {path}", file=sys.stderr)
                if not self.read_only:
                    self._rewrite(path, [e.row for e in out])
                return out
            try:
                row = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                row = None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: not a labelling row: {line[:80]!r}")
            out.append(Entry(row, _row_qid(row, where), tie, where))
        return out

    @staticmethod
    def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
        atomic_write_lines(path, [json.dumps(r, ensure_ascii=False) + "\n" for r in rows])

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [e.row for e in self.entries]

    def append(self, row: dict[str, Any], *, tie: bool = False) -> Entry:
        """Append ``row`` durably (fsync'd before this returns)."""
        if self.read_only:
            raise PermissionError(f"{self.path} was opened read-only")
        qid = _row_qid(row, "new answer")
        append_line(self.tie_path if tie else self.path, json.dumps(row, ensure_ascii=False))
        entry = Entry(row, qid, tie, "new answer")
        self.entries.append(entry)
        return entry

    def remove(self, entry: Entry) -> None:
        """Rewrite the file holding ``entry`` without it (atomically)."""
        if self.read_only:
            raise PermissionError(f"{self.path} was opened read-only")
        path = self.tie_path if entry.tie else self.path
        keep = [e.row for e in self.entries if e.tie == entry.tie and e is not entry]
        self._rewrite(path, keep)
        self.entries = [e for e in self.entries if e is not entry]


class LabelSession:
    """Questions of a samples file plus their answers file: what to ask whom next, answering,
    undo. Both front-ends drive one of these; every state change is on disk when a method
    returns.

    Args:
        samples: a K-way samples file (or its rows).
        out: the answers file (created if missing; resumed if not).
        mode: ``"auto"``, ``"pairs"`` or ``"rank"``.
        seed: the display-order seed.
        overlap: how many different labellers answer each question (1: labellers split the
            questions; 2+: shared questions, for :func:`answer_stats`'s agreement).
    """

    def __init__(
        self,
        samples: str | Path | Sequence[Ranking],
        out: str | Path,
        *,
        mode: str = "auto",
        seed: int = 0,
        overlap: int = 1,
    ) -> None:
        if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 1:
            raise ValueError(f"overlap must be an integer ≥ 1, got {overlap!r}")
        self.samples_name = str(samples) if isinstance(samples, (str, Path)) else "the samples"
        rows = list(read_rankings(samples)) if isinstance(samples, (str, Path)) else list(samples)
        self.mode = mode
        self.overlap = overlap
        self.questions = build_questions(rows, mode, seed)
        self.by_qid = {q.qid: q for q in self.questions}
        self.log = AnswerLog(out)
        self._check_answers()

    def _check_answers(self) -> None:
        bad = [e for e in self.log.entries if e.qid not in self.by_qid]
        if bad:
            e = bad[0]
            raise AnswerMismatchError(
                f"{e.where}: this answer (prompt {str(e.row.get('prompt', ''))[:50]!r}) matches no "
                f"question of {self.samples_name} in mode {self.mode!r} ({len(bad)} of "
                f"{len(self.log.entries)} answers do not match): the samples file or --mode "
                "changed since these answers were written. Label into a new --out, or use the "
                "original samples file and --mode."
            )
        for e in self.log.entries:
            q = self.by_qid[e.qid]
            if e.tie and q.mode != "pairs":
                raise AnswerMismatchError(f"{e.where}: a tie answers a {q.mode!r} question")

    # ------------------------------------------------------------------ queries

    @property
    def path(self) -> Path:
        return self.log.path

    def answers_to(self, qid: str) -> list[Entry]:
        return [e for e in self.log.entries if e.qid == qid]

    def answered_by(self, labeller: str) -> set[str]:
        return {e.qid for e in self.log.entries if e.labeller == labeller}

    def complete(self, qid: str) -> bool:
        """Has ``qid`` got all the answers it needs (``overlap`` labellers)?"""
        return len({e.labeller for e in self.answers_to(qid)}) >= self.overlap

    def refusal(self, qid: str, labeller: str) -> str | None:
        """Why ``labeller`` may not answer ``qid`` now (None: they may)."""
        if qid not in self.by_qid:
            return f"no question has id {qid!r} (samples file or mode changed?)"
        if qid in self.answered_by(labeller):
            return "you already answered this question"
        if self.complete(qid):
            return "this question was answered meanwhile"
        return None

    def next_for(
        self,
        labeller: str,
        *,
        skip: Iterable[str] = (),
        first: str | None = None,
        avoid: Iterable[str] = (),
    ) -> Question | None:
        """The first question ``labeller`` may answer, not in ``skip``; ``first`` (an undone
        question) before the others; questions in ``avoid`` (reserved by another labeller) only
        when nothing else is left."""
        done = self.answered_by(labeller)
        counts: Counter[str] = Counter()
        for qid, labellers in self._labellers_by_qid().items():
            counts[qid] = len(labellers)
        skip, avoid = set(skip), set(avoid)
        ok = [
            q
            for q in self.questions
            if q.qid not in done and counts[q.qid] < self.overlap and q.qid not in skip
        ]
        if first is not None:
            ok.sort(key=lambda q: q.qid != first)
        for q in ok:
            if q.qid not in avoid:
                return q
        return ok[0] if ok else None

    def _labellers_by_qid(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for e in self.log.entries:
            out[e.qid].add(e.labeller)
        return out

    def progress(self, labeller: str) -> dict[str, int]:
        """``questions``; ``complete`` (questions with all their answers); ``answers`` (rows,
        ties included); ``mine`` (this labeller's answers); ``left_for_me``."""
        by = self._labellers_by_qid()
        mine = self.answered_by(labeller)
        left = sum(
            1 for q in self.questions if q.qid not in mine and len(by.get(q.qid, ())) < self.overlap
        )
        return {
            "questions": len(self.questions),
            "complete": sum(1 for q in self.questions if len(by.get(q.qid, ())) >= self.overlap),
            "answers": len(self.log.entries),
            "mine": len(mine),
            "left_for_me": left,
        }

    # ------------------------------------------------------------------ answering

    def answer(self, q: Question, order_shown: Sequence[int], labeller: str) -> dict[str, Any]:
        """Record ``labeller``'s ranking of ``q``: display numbers (1-based) best first; for a
        pair ``[d]`` (the better one) is enough. Returns the row, on disk when this returns."""
        order = [int(d) for d in order_shown]
        if q.k == 2 and len(order) == 1 and order[0] in (1, 2):
            order = [order[0], 3 - order[0]]
        if sorted(order) != list(range(1, q.k + 1)):
            raise ValueError(f"an answer must rank each of 1..{q.k} once, got {list(order_shown)}")
        self._check_may_answer(q, labeller)
        best_first = [q.shown[d - 1] for d in order]
        row: dict[str, Any] = {"prompt": q.prompt}
        if q.mode == "pairs":
            c, r = best_first
            row["chosen"], row["rejected"] = self._text(q, c), self._text(q, r)
            row["source_indices"] = [c, r]
        else:
            row["completions"] = list(q.completions)
            row["ranking"] = [q.indices.index(i) for i in best_first]
            row["source_indices"] = list(q.indices)
        return self._append(q, row, labeller, tie=False)

    def tie(self, q: Question, labeller: str) -> dict[str, Any]:
        """Record "both equally good" for a pair (in the ties side file; not a preference)."""
        if q.mode != "pairs":
            raise ValueError("ties are answers to pairs only; a ranking has no ties")
        self._check_may_answer(q, labeller)
        row = {"prompt": q.prompt, "completions": list(q.completions), "tie": True}
        row["source_indices"] = list(q.indices)
        return self._append(q, row, labeller, tie=True)

    def _check_may_answer(self, q: Question, labeller: str) -> None:
        if not isinstance(labeller, str) or not labeller.strip():
            raise ValueError(f"labeller must be a non-empty string, got {labeller!r}")
        why = self.refusal(q.qid, labeller)
        if why is not None:
            raise ValueError(why)

    @staticmethod
    def _text(q: Question, i: int) -> str:
        return q.completions[q.indices.index(i)]

    def _append(
        self, q: Question, row: dict[str, Any], labeller: str, *, tie: bool
    ) -> dict[str, Any]:
        if q.metadata:
            row["metadata"] = q.metadata
        row.update(qid=q.qid, item=q.item, source=q.source, labeller=labeller)
        row["answered_at"] = round(time.time(), 3)
        self.log.append(row, tie=tie)
        return row

    def undo(self, labeller: str) -> Question | None:
        """Remove ``labeller``'s last answer (atomically); returns its question, or None."""
        for e in reversed(self.log.entries):
            if e.labeller == labeller:
                self.log.remove(e)
                return self.by_qid[e.qid]
        return None


# ---------------------------------------------------------------------------- statistics


def _judgements(row: dict[str, Any], tie: bool) -> dict[tuple[str, str], int]:
    """Pairwise judgements of one answer: ``(x, y)`` with ``x < y`` (texts) → +1 (x better),
    −1 (y better) or 0 (tie)."""
    if tie:
        x, y = sorted(row["completions"])
        return {(x, y): 0}
    if "chosen" in row:
        c, r = row["chosen"], row["rejected"]
        return {(min(c, r), max(c, r)): 1 if c < r else -1}
    comps, order = row["completions"], row["ranking"]
    out = {}
    for a, b in itertools.combinations(order, 2):  # a ranked above b
        x, y = comps[a], comps[b]
        if x != y:  # identical texts carry no preference
            out[(min(x, y), max(x, y))] = 1 if x < y else -1
    return out


def krippendorff_alpha_nominal(units: Iterable[Sequence[Any]]) -> float | None:
    """Krippendorff's alpha for nominal values; ``units`` = the values given to each unit (one
    per labeller). Units with fewer than 2 values are not pairable and ignored. None when
    undefined (fewer than 2 pairable values, or one value only)."""
    o: Counter[tuple[Any, Any]] = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, j in itertools.permutations(range(m), 2):
            o[(values[i], values[j])] += 1.0 / (m - 1)
    n_c: Counter[Any] = Counter()
    for (c, _k), v in o.items():
        n_c[c] += v
    n = sum(n_c.values())
    if n < 2:
        return None
    disagree = sum(v for (c, k), v in o.items() if c != k)
    expected = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k)
    if expected == 0:
        return None
    return 1.0 - (n - 1) * disagree / expected


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Cohen's kappa of two labellers' values on the same items (None when undefined)."""
    if len(a) != len(b) or not a:
        return None
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in ca) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def answer_stats(
    answers: str | Path,
    gold: str | Callable[..., Sequence[float]] | None = None,
) -> dict[str, Any]:
    """What a labelling lead checks before training a reward model on ``answers``.

    * counts: answers, preference rows (pairs / rankings), ties, questions, per labeller;
    * agreement between labellers on shared questions, over pairwise judgements (a ranking of K
      gives C(K, 2); a tie is its own value): the fraction of agreeing labeller pairs, Cohen's
      kappa for each two labellers sharing judgements, and Krippendorff's alpha (nominal) over
      all (None where undefined);
    * with a ``gold`` scorer: the fraction of non-tied judgements that pick the completion the
      gold scorer scores higher (gold ties left out and counted), over all and per labeller.
    """
    log = AnswerLog(answers, read_only=True)
    per_labeller: Counter[str] = Counter(e.labeller for e in log.entries)
    stats: dict[str, Any] = {
        "answers": len(log.entries),
        "pairs": sum(1 for e in log.entries if not e.tie and "chosen" in e.row),
        "rankings": sum(1 for e in log.entries if not e.tie and "ranking" in e.row),
        "ties": sum(1 for e in log.entries if e.tie),
        "questions": len({e.qid for e in log.entries}),
        "labellers": dict(sorted(per_labeller.items())),
    }
    # (qid, x, y) → {labeller: value}; a labeller's later answer to a question replaces none:
    # each labeller answers a question once.
    units: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    prompts: dict[tuple[str, str, str], tuple[str, Any]] = {}
    for e in log.entries:
        for (x, y), v in _judgements(e.row, e.tie).items():
            units[(e.qid, x, y)][e.labeller] = v
            prompts[(e.qid, x, y)] = (e.row["prompt"], e.row.get("metadata") or {})
    shared = {u: by for u, by in units.items() if len(by) >= 2}
    pairs_agree = [
        by[a] == by[b] for by in shared.values() for a, b in itertools.combinations(sorted(by), 2)
    ]
    kappas = {}
    for a, b in itertools.combinations(sorted(per_labeller), 2):
        common = [by for by in shared.values() if a in by and b in by]
        if common:
            kappas[f"{a} vs {b}"] = {
                "judgements": len(common),
                "agreement": float(np.mean([by[a] == by[b] for by in common])),
                "kappa": cohen_kappa([by[a] for by in common], [by[b] for by in common]),
            }
    stats["agreement"] = {
        "shared_questions": len({u[0] for u in shared}),
        "shared_judgements": len(shared),
        "pairwise_agreement": float(np.mean(pairs_agree)) if pairs_agree else None,
        "krippendorff_alpha": krippendorff_alpha_nominal(
            [list(by.values()) for by in shared.values()]
        ),
        "cohen_kappa": kappas,
    }
    if gold is not None:
        stats["gold"] = _gold_agreement(units, prompts, gold)
    return stats


def _gold_agreement(
    units: dict[tuple[str, str, str], dict[str, int]],
    prompts: dict[tuple[str, str, str], tuple[str, Any]],
    gold: str | Callable[..., Sequence[float]],
) -> dict[str, Any]:
    from textenv.rewards import load_reward, score  # (torch: only with a gold scorer)

    scorer = load_reward(gold)
    keys = list(units)
    ps = [prompts[k][0] for k in keys]
    ms = [prompts[k][1] if isinstance(prompts[k][1], dict) else {} for k in keys]
    gx = score(scorer, ps, [k[1] for k in keys], ms, name="gold scorer")
    gy = score(scorer, ps, [k[2] for k in keys], ms, name="gold scorer")
    hits: dict[str, list[bool]] = defaultdict(list)
    gold_ties = 0
    for k, a, b in zip(keys, gx, gy):
        if a == b:
            gold_ties += sum(1 for v in units[k].values() if v != 0)
            continue
        want = 1 if a > b else -1
        for labeller, v in units[k].items():
            if v != 0:
                hits[labeller].append(v == want)
    every = [h for v in hits.values() for h in v]
    return {
        "judgements": len(every),
        "agreement": float(np.mean(every)) if every else None,
        "gold_ties_left_out": gold_ties,
        "per_labeller": {
            name: {"judgements": len(v), "agreement": float(np.mean(v))}
            for name, v in sorted(hits.items())
        },
    }


def _f(x: float | None, digits: int = 3) -> str:
    return (
        "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
    )


def format_stats(stats: dict[str, Any]) -> str:
    """:func:`answer_stats` as a short human-readable report."""
    lines = [
        f"answers: {stats['answers']} ({stats['pairs']} pairs, {stats['rankings']} rankings, "
        f"{stats['ties']} ties) to {stats['questions']} questions",
        "per labeller: "
        + (", ".join(f"{k} {v}" for k, v in stats["labellers"].items()) or "(none)"),
    ]
    ag = stats["agreement"]
    if ag["shared_judgements"]:
        lines.append(
            f"shared: {ag['shared_questions']} questions, {ag['shared_judgements']} pairwise "
            f"judgements; agreement {_f(ag['pairwise_agreement'])}, Krippendorff's alpha "
            f"{_f(ag['krippendorff_alpha'])}"
        )
        for name, k in ag["cohen_kappa"].items():
            lines.append(
                f"  {name}: {k['judgements']} judgements, agreement {_f(k['agreement'])}, "
                f"Cohen's kappa {_f(k['kappa'])}"
            )
    else:
        lines.append("shared: no question answered by two labellers (agreement undefined)")
    if "gold" in stats:
        g = stats["gold"]
        lines.append(
            f"gold: agreement {_f(g['agreement'])} over {g['judgements']} judgements "
            f"({g['gold_ties_left_out']} on gold ties left out)"
        )
        for name, v in g["per_labeller"].items():
            lines.append(f"  {name}: {_f(v['agreement'])} over {v['judgements']}")
    return "\n".join(lines)
