"""Simulated labellers: a gold scorer and a Bradley–Terry choice model (Gao et al. 2022)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from textenv.preferences.records import TIE_POLICIES, PreferencePair, Ranking, TiePolicy

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
            from textenv.rewards import load_reward  # (torch: not needed to label by hand)

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
