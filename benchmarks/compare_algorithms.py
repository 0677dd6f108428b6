"""RL algorithms compared by reward–KL frontiers on the built-in tasks, over β and seeds.

An RLHF comparison means something only as gold reward *at a given KL*: any algorithm buys gold
with KL, and a lower β buys more. So each algorithm runs a sweep of the KL coefficient β
(:data:`BETAS`, or its own entry's ``betas``) × seeds on both built-in tasks, each run optimising
the task's **gold scorer** (passed as the env's ``reward``: proxy = gold here;
``benchmarks/overoptimization.py`` is the learned-proxy case) for the same token budget, and is
evaluated at several checkpoints on held-out prompts: gold, RM score and KL(π ‖ ρ) (the env's
k1 estimate, summed per episode). Every (β, checkpoint) evaluation is a point in the gold–KL
plane; an algorithm's **frontier** for one seed is the best gold among its points with KL ≤ x.
The table reports that at x = 1, 3 and 10 nats (mean ± std over seeds), and **gold per unit of
compute**: the frontier point's gold gain over the reference per CPU-minute of the training that
reached it. The defaults each algorithm runs with come from the same tuning sweep
(``benchmarks/tune.py``, on Sort-v0).

Algorithms are entries of :data:`ALGORITHMS` (label, run function, β sweep); adding one is one
entry. Today:

* ``ppo``, ``grpo``, ``rloo``: ``agents.ALGORITHMS`` with their package defaults; PPO and RLOO
  take the env's terminal ``−β·KL``, GRPO puts β·k3 in its loss (``kl_reward="none"``);
* ``sb3_ppo``: stable-baselines3's PPO with ``agents.sb3.LMActorCriticPolicy`` (16 envs,
  ``n_steps=64``, ``batch_size=64``, 4 epochs, lr 1e-4, γ = 1, λ = 0.95; ``docs/sb3.md``),
  a smaller β sweep (it is ~3–8× slower end to end);
* ``bon``: best-of-n from the reference (no training, no β): ``m = 64`` samples per held-out
  prompt, the gold scorer picks the best of ``n`` (unbiased all-subsets estimate), n = 1 … 32;
  its KL is the estimate with the reward's ties (:func:`~textenv.overoptimization.bon_kl_estimate`;
  the analytic ``log n − (n−1)/n`` is an upper bound, also stored);
* ``dpo``, ``ipo``: ``agents.DPO`` on 1000 preference pairs labelled by the gold scorer (the
  size of ``overoptimization.py``'s middle RM), 2 passes, β = DPO's β (see
  ``benchmarks/compare_dpo.py``; their ``tokens`` are completion tokens trained on).

Token budget per run (generated tokens): **Sort-v0 20 000**, **Sentiment-v0 40 000**;
evaluation on 256 held-out prompts at 0, 1/4, 1/2 and all of the budget. Training time is
this process's CPU time at 1 thread (evaluations excluded); the share of the machine other
processes used is recorded per run. The full sweep (3 native algorithms × 4 β × 3 seeds × 2
tasks, SB3 × 2 β × 3 seeds × 2 tasks, best-of-n) is about 1.5–2 hours on a quiet 2-core
machine.

Outputs: ``benchmarks/results/compare_algorithms.json`` (one record per (task, algo, β, seed),
plus the summary and the Markdown table), ``compare_algorithms.csv`` (one row per point) and
``compare_algorithms_<task>.png`` (gold vs KL: each algorithm's points and frontier, best-of-n;
gold vs training CPU time at the default β). Resumable: records already in the JSON are
skipped, so the sweep can be run in pieces.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/compare_algorithms.py                   # everything
    OMP_NUM_THREADS=1 python benchmarks/compare_algorithms.py --seeds 0 --tasks sort
    OMP_NUM_THREADS=1 python benchmarks/compare_algorithms.py --algos ppo --betas 0.05
    OMP_NUM_THREADS=1 python benchmarks/compare_algorithms.py --quick   # smoke run (own files)
    OMP_NUM_THREADS=1 python benchmarks/compare_algorithms.py --report  # tables + plots only
"""

from __future__ import annotations

import argparse
import csv
import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    CPUClock,
    ResultsFile,
    learn_to_checkpoints,
    record_session,
    save_figure,
)
from compare_dpo import DPO_BETAS, IPO_BETAS  # noqa: E402
from compare_dpo import add_arguments as add_dpo_arguments  # noqa: E402
from compare_dpo import quick as dpo_quick  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FORMAT = 2  # records keyed task/algo/beta=/seed= (format 1 had no β sweep)
TASKS = {
    "sort": {"env_id": "textenv/Sort-v0", "module": "textenv.tasks.sort", "tokens": 20_000},
    "sentiment": {
        "env_id": "textenv/Sentiment-v0",
        "module": "textenv.tasks.sentiment",
        "tokens": 40_000,
    },
}
BETAS = (0.01, 0.03, 0.1, 0.3)
DEFAULT_BETA = 0.05  # both tasks' env default; every algorithm also runs it
KL_TARGETS = (1.0, 3.0, 10.0)
CHECKPOINTS = (0.0, 0.25, 0.5, 1.0)
SB3_SETTINGS = dict(
    n_steps=64, batch_size=64, n_epochs=4, learning_rate=1e-4, gamma=1.0, gae_lambda=0.95
)
SB3_ENVS = 16


class Results(ResultsFile):
    """This benchmark's results file (resumable, saved after every record)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, {"format": FORMAT, "runs": {}})
        if self.data.get("format") != FORMAT:  # an older layout: start a new sweep
            self.data = {"format": FORMAT, "runs": {}}


# --------------------------------------------------------------------------- runs


def gold_reward(task: str) -> dict[str, str]:
    """Env kwargs that make the task's gold scorer the reward (proxy = gold)."""
    module = importlib.import_module(TASKS[task]["module"])
    return {"reward": module.TASK.gold}


def evaluate_policy(model: Any, task: str, args: argparse.Namespace) -> dict[str, float]:
    """Gold, RM score and KL of ``model`` on the seeded held-out prompts (mean and s.e.)."""
    from agents.evaluation import evaluate

    env_id = TASKS[task]["env_id"]
    ev = evaluate(
        model, env_id, n_prompts=args.eval_prompts, seed=args.eval_seed, **gold_reward(task)
    )
    out = {k: ev.metrics[k].mean for k in ("gold_score", "rm_score", "kl", "num_tokens")}
    out.update({k + "_sem": ev.metrics[k].sem for k in ("gold_score", "rm_score", "kl")})
    return out


def _targets(budget: int, args: argparse.Namespace) -> list[int]:
    return [int(round(f * budget)) for f in args.checkpoints]


def run_agent(
    algo: str,
    task: str,
    seed: int,
    beta: float,
    budget: int,
    args: argparse.Namespace,
    overrides: dict[str, Any] | None = None,
) -> dict:
    """One of the package's agents at KL coefficient ``beta``: learn in iterations, evaluate
    at the checkpoints. ``overrides`` replace config fields (the tuning sweep)."""
    from agents import ALGORITHMS as AGENTS

    env_id = TASKS[task]["env_id"]
    agent_cls, config_cls = AGENTS[algo]
    env_kwargs = {**gold_reward(task), "kl_coef": beta}
    config = config_cls(
        env_id=env_id, env_kwargs=env_kwargs, seed=seed, progress=False, **(overrides or {})
    )
    agent = agent_cls(config)
    clock = CPUClock()
    curve = []
    for _ in learn_to_checkpoints(agent, budget, _targets(budget, args), clock):
        curve.append(
            {
                "tokens": agent.tokens_seen,
                "iteration": agent.iteration,
                "train_wall_s": clock.wall,
                "train_cpu_s": clock.cpu,
                **evaluate_policy(agent.policy.model, task, args),
            }
        )
        _progress(task, algo, seed, beta, curve[-1])
    agent.close()
    settings = {k: v for k, v in config.to_dict().items() if k not in ("log_dir", "progress")}
    return {"curve": curve, "others_cpu_share": clock.others_share, "settings": settings}


def run_sb3(task: str, seed: int, beta: float, budget: int, args: argparse.Namespace) -> dict:
    """SB3's PPO with the LM policy; evaluated at the start of the first rollout past each
    checkpoint (the policy has then been updated on everything collected so far)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.sb3 import LMActorCriticPolicy, lm_policy_kwargs, make_sb3_env

    env_id = TASKS[task]["env_id"]
    env = make_sb3_env(env_id, n_envs=SB3_ENVS, seed=seed, kl_coef=beta, **gold_reward(task))
    model = PPO(
        LMActorCriticPolicy,
        env,
        policy_kwargs=lm_policy_kwargs(env),
        seed=seed,
        device="cpu",
        **SB3_SETTINGS,
    )
    clock = CPUClock()
    curve: list[dict] = []
    targets = _targets(budget, args)

    def point() -> None:
        lm = model.policy.features_extractor.lm
        curve.append(
            {
                "tokens": int(model.num_timesteps),
                "train_wall_s": clock.wall,
                "train_cpu_s": clock.cpu,
                **evaluate_policy(lm, task, args),
            }
        )
        _progress(task, "sb3_ppo", seed, beta, curve[-1])

    class Checkpoints(BaseCallback):
        def _on_rollout_start(self) -> None:
            if len(curve) < len(targets) and self.num_timesteps >= targets[len(curve)]:
                clock.stop()
                point()
                clock.start()

        def _on_step(self) -> bool:
            return True

    point()  # the reference, before any update
    clock.start()
    model.learn(budget, callback=Checkpoints())
    clock.stop()
    point()
    env.close()
    settings = {**SB3_SETTINGS, "n_envs": SB3_ENVS, "policy": "LMActorCriticPolicy"}
    return {"curve": curve, "others_cpu_share": clock.others_share, "settings": settings}


def run_bon(task: str, seed: int, beta: float | None, budget: int, args: argparse.Namespace):
    """Best-of-n from the reference on the eval prompts, selected by the gold scorer."""
    import gymnasium as gym

    from textenv.lm.models import load_tokenizer
    from textenv.overoptimization import bon_expected, bon_kl_bound, bon_kl_estimate
    from textenv.preferences import sample_completions
    from textenv.rewards import load_reward, score

    env_id = TASKS[task]["env_id"]
    t = importlib.import_module(TASKS[task]["module"]).TASK
    envs = gym.make_vec(env_id, num_envs=1, vectorization_mode="vector_entry_point", split="eval")
    pool = list(envs.unwrapped.prompts)
    envs.close()
    order = np.random.default_rng(args.eval_seed).permutation(len(pool))
    prompts = [pool[i] for i in np.resize(order, args.eval_prompts)]  # as evaluate() picks them
    clock = CPUClock()
    clock.start()
    rows = sample_completions(
        t.reference,
        prompts,
        k=args.bon_m,
        max_new_tokens=t.max_new_tokens,
        max_prompt_tokens=t.max_prompt_tokens,
        seed=seed,
        batch_size=256,
    )
    flat_p = [r.prompt for r in rows for _ in r.completions]
    flat_c = [c for r in rows for c in r.completions]
    meta = [dict(r.metadata) for r in rows for _ in r.completions]
    gold = score(load_reward(t.gold), flat_p, flat_c, meta).reshape(len(rows), -1)
    clock.stop()
    tok = load_tokenizer(t.reference)
    mean_len = float(
        np.mean([len(tok(c, add_special_tokens=False)["input_ids"]) + 1 for c in flat_c])
    )
    points = []
    for n in args.bon_n:
        g = bon_expected(gold, gold, n)
        points.append(
            {
                "n": n,
                "kl": bon_kl_estimate(gold, n),
                "kl_bound": bon_kl_bound(n),
                "gold_score": float(g.mean()),
                "gold_score_sem": float(g.std(ddof=1) / np.sqrt(len(g))),
                "tokens_per_prompt": n * mean_len,
                "cpu_s_per_prompt": n * clock.cpu / gold.size,
            }
        )
    line = ", ".join(f"n={q['n']}: {q['gold_score']:.3f}" for q in points)
    print(f"[{task} bon seed={seed}] gold {line}", flush=True)
    return {
        "points": points,
        "m": args.bon_m,
        "eval_prompts": len(rows),
        "mean_completion_tokens": mean_len,
        "sample_and_score_cpu_s": clock.cpu,
        "others_cpu_share": clock.others_share,
        "settings": {"reference": t.reference, "m": args.bon_m, "n": list(args.bon_n)},
    }


@dataclass(frozen=True)
class Algorithm:
    """One entry of the comparison.

    ``run(task, seed, beta, budget, args)`` returns a record with ``curve`` (evaluation points
    of one training run: tokens, train_cpu_s, gold_score, kl, ...) or ``points`` (a family of
    policies without training, e.g. best-of-n over n; each with gold_score and kl);
    ``betas`` is its β sweep (``(None,)``: no β).
    """

    label: str
    run: Callable[..., dict]
    betas: tuple[float | None, ...] = (*BETAS, DEFAULT_BETA)


def run_preference(
    algo: str, task: str, seed: int, beta: float, budget: int, args: argparse.Namespace
) -> dict:
    """DPO / IPO (``benchmarks/compare_dpo.py``) on pairs labelled by the gold scorer, evaluated
    like the RL runs; they train for ``--dpo-passes`` over ``--dpo-pairs`` pairs (``budget``, in
    generated tokens, does not apply)."""
    import compare_dpo

    return compare_dpo.run_preference(
        algo, task, seed, beta, args, env_id=TASKS[task]["env_id"],
        module=TASKS[task]["module"], env_kwargs=gold_reward(task),
        evaluate_policy=evaluate_policy, targets=_targets, progress=_progress,
    )  # fmt: skip


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm("PPO (agents)", partial(run_agent, "ppo")),
    "grpo": Algorithm("GRPO (agents)", partial(run_agent, "grpo")),
    "rloo": Algorithm("RLOO (agents)", partial(run_agent, "rloo")),
    "sb3_ppo": Algorithm("SB3 PPO + LM policy", run_sb3, betas=(DEFAULT_BETA, 0.2)),
    "bon": Algorithm("best-of-n (reference)", run_bon, betas=(None,)),
    "dpo": Algorithm("DPO (agents, on pairs)", partial(run_preference, "dpo"), betas=DPO_BETAS),
    "ipo": Algorithm("IPO (agents, on pairs)", partial(run_preference, "ipo"), betas=IPO_BETAS),
}


def _progress(task: str, algo: str, seed: int, beta: float, p: dict) -> None:
    print(
        f"[{task} {algo} β={beta} seed={seed}] {p['tokens']:>6d} tok {p['train_cpu_s']:6.0f} "
        f"cpu-s: gold {p['gold_score']:+.3f} ± {p['gold_score_sem']:.3f}  KL {p['kl']:.2f}",
        flush=True,
    )


def run_key(task: str, algo: str, beta: float | None, seed: int) -> str:
    return f"{task}/{algo}/beta={beta}/seed={seed}"


# --------------------------------------------------------------------------- frontiers


def points_of(record: dict) -> list[dict]:
    """A record's points in the gold–KL plane (evaluation checkpoints, or best-of-n's n)."""
    return record.get("curve") or record.get("points") or []


def frontier_at(points: list[dict], kl: float) -> dict | None:
    """The point with the best gold among those with KL ≤ ``kl`` (None if there is none)."""
    ok = [p for p in points if p["kl"] <= kl]
    return max(ok, key=lambda p: p["gold_score"]) if ok else None


def _ms(values: list[float]) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    return [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")]


def summarise(data: dict) -> dict:
    """Per task and algorithm: gold at KL ≤ each target (mean ± std over seeds, each seed's
    frontier over all its β and checkpoints), gold gain per CPU-minute at those points, and
    the final point at the default β."""
    out: dict[str, Any] = {}
    for task in TASKS:
        rows: dict[str, Any] = {}
        for algo in ALGORITHMS:
            recs = [r for r in data["runs"].values() if r["task"] == task and r["algo"] == algo]
            if not recs:
                continue
            seeds = sorted({r["seed"] for r in recs})
            by_seed = {s: [p for r in recs if r["seed"] == s for p in points_of(r)] for s in seeds}
            starts = [r["curve"][0]["gold_score"] for r in recs if r.get("curve")]
            gold_ref = float(np.mean(starts)) if starts else None
            row: dict[str, Any] = {
                "seeds": len(seeds),
                "betas": sorted({r["beta"] for r in recs if r["beta"] is not None}),
                "runs": len(recs),
            }
            for x in KL_TARGETS:
                best = [frontier_at(pts, x) for pts in by_seed.values()]
                best = [b for b in best if b is not None]
                row[f"gold_at_kl_{x:g}"] = _ms([b["gold_score"] for b in best]) if best else None
                if gold_ref is not None and best and all("train_cpu_s" in b for b in best):
                    row[f"gain_per_cpu_min_at_kl_{x:g}"] = _ms(
                        [
                            (b["gold_score"] - gold_ref) / max(b["train_cpu_s"], 1e-9) * 60
                            for b in best
                            if b["train_cpu_s"] > 0
                        ]
                        or [0.0]
                    )
            default = [r for r in recs if r["beta"] == DEFAULT_BETA and r.get("curve")]
            if default:
                last = [r["curve"][-1] for r in default]
                row["default_beta"] = {
                    "gold_final": _ms([p["gold_score"] for p in last]),
                    "kl_final": _ms([p["kl"] for p in last]),
                    "train_cpu_s": _ms([p["train_cpu_s"] for p in last]),
                    "tokens_per_cpu_s": _ms([p["tokens"] / p["train_cpu_s"] for p in last]),
                }
            row["others_cpu_share"] = float(np.mean([r["others_cpu_share"] for r in recs]))
            rows[algo] = row
        if rows:
            out[task] = rows
    return out


def _fmt(ms: list[float] | None, fmt: str = ".3f") -> str:
    if ms is None:
        return "—"
    m, s = ms
    return f"{m:{fmt}}" + ("" if s is None or np.isnan(s) else f" ± {s:{fmt}}")


def markdown(data: dict) -> str:
    parts = []
    budgets = data.get("settings", {}).get("tokens", {})
    for task, rows in data.get("summary", {}).items():
        parts.append(
            f"**{TASKS[task]['env_id']}** ({budgets.get(task, TASKS[task]['tokens'])} tokens "
            "per run; best gold among all β and checkpoints with KL ≤ x, mean ± std over "
            "seeds; gain per CPU-minute: that point's gold gain over the reference / the "
            "training CPU time that reached it):\n"
        )
        head = " | ".join(f"gold, KL ≤ {x:g}" for x in KL_TARGETS)
        parts.append(
            f"| algorithm | seeds × β | {head} | gain / CPU-min, KL ≤ {KL_TARGETS[-1]:g} "
            f"| β = {DEFAULT_BETA}: gold, KL final | tokens / CPU s | others' CPU |"
        )
        parts.append("|---|---|" + "---|" * len(KL_TARGETS) + "---|---|---:|---:|")
        for algo, r in rows.items():
            betas = "—" if not r["betas"] else ", ".join(f"{b:g}" for b in r["betas"])
            golds = " | ".join(_fmt(r.get(f"gold_at_kl_{x:g}")) for x in KL_TARGETS)
            gain = _fmt(r.get(f"gain_per_cpu_min_at_kl_{KL_TARGETS[-1]:g}"))
            d = r.get("default_beta")
            final = f"{_fmt(d['gold_final'])}, {_fmt(d['kl_final'], '.2f')}" if d else "—"
            speed = f"{d['tokens_per_cpu_s'][0]:.0f}" if d else "—"
            parts.append(
                f"| {ALGORITHMS[algo].label} | {r['seeds']} × ({betas}) | {golds} | {gain} "
                f"| {final} | {speed} | {r['others_cpu_share']:.0%} |"
            )
        parts.append("")
    return "\n".join(parts)


def write_csv(data: dict, path: Path) -> None:
    cols = ["task", "algo", "beta", "seed", "tokens", "train_cpu_s", "gold_score"]
    cols += ["gold_score_sem", "rm_score", "kl", "kl_sem", "n", "kl_bound"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in data["runs"].values():
            base = {"task": r["task"], "algo": r["algo"], "beta": r["beta"], "seed": r["seed"]}
            for p in points_of(r):
                w.writerow({**base, **p})


def plot(data: dict, task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    colors = dict(zip(ALGORITHMS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    all_kl = [
        p["kl"] for r in data["runs"].values() if r["task"] == task for p in points_of(r)
    ] or [1.0]
    grid = np.concatenate([[0.0], np.geomspace(0.01, max(max(all_kl), 0.02), 80)])
    for algo, spec in ALGORITHMS.items():
        recs = [r for r in data["runs"].values() if r["task"] == task and r["algo"] == algo]
        if not recs:
            continue
        pts = [p for r in recs for p in points_of(r)]
        axes[0].scatter(
            [p["kl"] for p in pts], [p["gold_score"] for p in pts], s=8, alpha=0.3,
            color=colors[algo],
        )  # fmt: skip
        seeds = sorted({r["seed"] for r in recs})
        fronts = []
        for s in seeds:
            sp = [p for r in recs if r["seed"] == s for p in points_of(r)]
            fronts.append(
                [(frontier_at(sp, x) or {"gold_score": np.nan})["gold_score"] for x in grid]
            )
        f = np.array(fronts, dtype=float)
        mean = np.nanmean(f, 0)
        axes[0].plot(grid, mean, "-", color=colors[algo], lw=2, label=f"{spec.label} frontier")
        if len(seeds) > 1:
            std = np.nanstd(f, 0, ddof=1)
            axes[0].fill_between(grid, mean - std, mean + std, color=colors[algo], alpha=0.15)
        default = [r for r in recs if r["beta"] == DEFAULT_BETA and r.get("curve")]
        if default:
            k = min(len(r["curve"]) for r in default)
            x = np.mean([[p["train_cpu_s"] for p in r["curve"][:k]] for r in default], 0)
            y = np.array([[p["gold_score"] for p in r["curve"][:k]] for r in default])
            axes[1].errorbar(
                x, y.mean(0), yerr=y.std(0), fmt="o-", color=colors[algo], ms=3, capsize=2,
                label=f"{spec.label} ({len(default)} seeds)",
            )  # fmt: skip
    axes[0].set_xscale("symlog", linthresh=0.1)
    axes[0].set_xlim(left=0)
    for x in KL_TARGETS:
        axes[0].axvline(x, color="grey", lw=0.8, ls=":")
    axes[0].set_xlabel("KL(π ‖ ρ) per episode, nats (held-out prompts)")
    axes[0].set_ylabel("gold score (held-out)")
    axes[0].set_title("best gold at KL ≤ x (lines: mean ± std over seeds; dots: all points)")
    axes[1].set_xlabel(f"training CPU s at 1 thread (β = {DEFAULT_BETA})")
    axes[1].set_ylabel("gold score (held-out, mean ± std over seeds)")
    save_figure(fig, axes, path, f"{TASKS[task]['env_id']}: reward = gold scorer, β swept")


def report(res: Results, stem: Path) -> None:
    res.data["summary"] = summarise(res.data)
    res.data["table_md"] = markdown(res.data)
    res.save()
    write_csv(res.data, stem.with_suffix(".csv"))
    stem.with_suffix(".md").write_text(res.data["table_md"])
    for task in res.data["summary"]:
        plot(res.data, task, stem.parent / f"{stem.name}_{task}.png")
    print(res.data["table_md"], flush=True)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Evaluation options (shared with ``tune.py``)."""
    parser.add_argument("--checkpoints", type=float, nargs="+", default=list(CHECKPOINTS))
    parser.add_argument("--eval-prompts", type=int, default=256)
    parser.add_argument("--eval-seed", type=int, default=1234)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--algos", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--betas", type=float, nargs="+", help="run only these β (default: each entry's sweep)"
    )
    parser.add_argument("--tokens-sort", type=int, default=TASKS["sort"]["tokens"])
    parser.add_argument("--tokens-sentiment", type=int, default=TASKS["sentiment"]["tokens"])
    add_eval_arguments(parser)
    add_dpo_arguments(parser)
    parser.add_argument("--bon-m", type=int, default=64)
    parser.add_argument("--bon-n", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--report", action="store_true", help="only rebuild tables and plots")
    parser.add_argument("--quick", action="store_true", help="smoke run into *_quick files")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_algorithms.json")
    args = parser.parse_args()
    if args.quick:
        args.tokens_sort = args.tokens_sentiment = 1024
        args.seeds, args.eval_prompts, args.bon_m, args.bon_n = [0], 16, 4, [1, 2]
        args.checkpoints = [0.0, 1.0]
        args.betas = args.betas or [DEFAULT_BETA]
        args.out = args.out.with_name(args.out.stem + "_quick.json")
        dpo_quick(args)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    budgets = {"sort": args.tokens_sort, "sentiment": args.tokens_sentiment}

    res = Results(args.out)
    stem = args.out.with_suffix("")
    if not args.report:
        record_session(res.data)
        res.data["settings"] = {
            "tokens": budgets,
            "checkpoints": args.checkpoints,
            "eval_prompts": args.eval_prompts,
            "eval_seed": args.eval_seed,
            "bon_m": args.bon_m,
            "bon_n": args.bon_n,
            "sb3": {**SB3_SETTINGS, "n_envs": SB3_ENVS},
            "betas": {a: list(s.betas) for a, s in ALGORITHMS.items()},
        }
        res.save()
        started = time.perf_counter()
        for seed in args.seeds:
            for task in args.tasks:
                for algo in args.algos:
                    for beta in ALGORITHMS[algo].betas:
                        if args.betas and beta is not None and beta not in args.betas:
                            continue
                        key = run_key(task, algo, beta, seed)
                        if key in res.data["runs"]:
                            continue
                        t0 = time.perf_counter()
                        rec = ALGORITHMS[algo].run(task, seed, beta, budgets[task], args)
                        rec.update(
                            task=task,
                            algo=algo,
                            beta=beta,
                            seed=seed,
                            budget_tokens=budgets[task],
                            total_wall_s=time.perf_counter() - t0,
                            torch_threads=torch.get_num_threads(),
                            finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                        )
                        res.data["runs"][key] = rec
                        res.save()
            report(res, stem)
        print(f"done in {time.perf_counter() - started:.0f} s this session", flush=True)
    report(res, stem)


if __name__ == "__main__":
    main()
