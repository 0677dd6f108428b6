"""The equal tuning budget: one small, documented sweep per algorithm on Sort-v0.

Every algorithm gets the same grid (:data:`GRID`, 18 settings) of

* learning rate ``lr`` ∈ {3e-5, 1e-4, 3e-4} (decayed linearly to 0 over the budget, the
  agents' default schedule),
* passes over each batch ``epochs`` ∈ {1, 2, 4},
* minibatch size ``minibatch_size`` ∈ {16, 64} of the 64 episodes per batch (so 1 to 16
  gradient steps per batch),

with each algorithm's other fields at their package defaults, the env's default β = 0.05 and
the task's gold scorer as the reward, for :data:`TOKENS` generated tokens. A setting's score is
the env's objective on 256 held-out prompts at the end, **gold − β·KL** (the return
``env/return`` logs; on Sort-v0 gold = the reward). Stage 1 runs every setting with seed 0;
stage 2 reruns each algorithm's best :data:`FINALISTS` settings with seeds 1 and 2; the winner
has the best mean over the three seeds. The winners are the package defaults
(``agents/*.py`` config dataclasses); ``--check-defaults`` says whether they still are.

Outputs ``benchmarks/results/tune.json`` (every run, the ranking, the winners) and ``tune.md``.
Resumable: runs already in the file are skipped. About 20–25 minutes on a quiet machine at
1 thread.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/tune.py                      # the whole sweep
    OMP_NUM_THREADS=1 python benchmarks/tune.py --algos rloo         # one algorithm
    python benchmarks/tune.py --report                               # ranking + table only
    python benchmarks/tune.py --check-defaults                       # winners == defaults?
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_algorithms as ca  # noqa: E402
from common import ResultsFile, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TASK = "sort"
ALGOS = ("ppo", "grpo", "rloo")
GRID: dict[str, tuple[Any, ...]] = {
    "lr": (3e-5, 1e-4, 3e-4),
    "epochs": (1, 2, 4),
    "minibatch_size": (16, 64),
}
NUM_ENVS = 64
TOKENS = 20_000
BETA = ca.DEFAULT_BETA
FINALISTS = 3
STAGE2_SEEDS = (1, 2)


def settings_grid() -> list[dict[str, Any]]:
    keys = list(GRID)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*GRID.values())]


def key_of(algo: str, setting: dict[str, Any], seed: int) -> str:
    return f"{algo}/" + ",".join(f"{k}={setting[k]:g}" for k in GRID) + f"/seed={seed}"


def objective(point: dict[str, float]) -> float:
    """gold − β·KL at the end (the env's return, with gold as the reward)."""
    return point["gold_score"] - BETA * point["kl"]


def run_one(algo: str, setting: dict[str, Any], seed: int, args: argparse.Namespace) -> dict:
    rec = ca.run_agent(
        algo, TASK, seed, BETA, args.tokens, args, overrides={"num_envs": NUM_ENVS, **setting}
    )
    rec["score"] = objective(rec["curve"][-1])
    return rec


def ranking(data: dict, algo: str) -> list[dict[str, Any]]:
    """Settings of ``algo`` ranked by mean score over the seeds they ran with (stage-2
    finalists, with 3 seeds, rank among themselves above the 1-seed rest)."""
    groups: dict[str, dict[str, Any]] = {}
    for rec in data["runs"].values():
        if rec["algo"] != algo:
            continue
        name = ",".join(f"{k}={rec['setting'][k]:g}" for k in GRID)
        g = groups.setdefault(name, {"setting": rec["setting"], "scores": [], "gold": [], "kl": []})
        g["scores"].append(rec["score"])
        g["gold"].append(rec["curve"][-1]["gold_score"])
        g["kl"].append(rec["curve"][-1]["kl"])
    rows = [
        {
            "setting": g["setting"],
            "seeds": len(g["scores"]),
            "score": float(np.mean(g["scores"])),
            "score_std": float(np.std(g["scores"], ddof=1)) if len(g["scores"]) > 1 else None,
            "gold": float(np.mean(g["gold"])),
            "kl": float(np.mean(g["kl"])),
        }
        for g in groups.values()
    ]
    return sorted(rows, key=lambda r: (-r["seeds"], -r["score"]))


def defaults_of(algo: str) -> dict[str, Any]:
    from agents import ALGORITHMS

    config = ALGORITHMS[algo][1]()
    return {k: getattr(config, k) for k in GRID}


def markdown(data: dict) -> str:
    lines = [
        f"Sort-v0, {data['settings']['tokens']} tokens per run, β = {BETA}, 64 episodes per "
        "batch; score = gold − β·KL on 256 held-out prompts (mean ± std over seeds):\n",
        "| algorithm | winner: lr, epochs, minibatch | score | gold | KL | seeds "
        "| runner-up | package default now |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for algo, w in data.get("winners", {}).items():
        rank = data["ranking"][algo]
        second = rank[1] if len(rank) > 1 else None
        fmt = lambda s: f"{s['lr']:g}, {s['epochs']}, {s['minibatch_size']}"  # noqa: E731
        std = f" ± {w['score_std']:.3f}" if w["score_std"] is not None else ""
        sec = f"{fmt(second['setting'])}: {second['score']:.3f}" if second else "—"
        lines.append(
            f"| {algo} | {fmt(w['setting'])} | {w['score']:.3f}{std} | {w['gold']:.3f} "
            f"| {w['kl']:.2f} | {w['seeds']} | {sec} | {fmt(defaults_of(algo))} |"
        )
    return "\n".join(lines) + "\n"


def report(res: ResultsFile) -> None:
    data = res.data
    data["ranking"] = {a: ranking(data, a) for a in ALGOS if any(
        r["algo"] == a for r in data["runs"].values())}  # fmt: skip
    data["winners"] = {a: rows[0] for a, rows in data["ranking"].items() if rows}
    data["table_md"] = markdown(data)
    res.save()
    res.path.with_suffix(".md").write_text(data["table_md"])
    print(data["table_md"], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--stage", type=int, choices=(1, 2), help="run only this stage")
    ca.add_eval_arguments(parser)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--check-defaults", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "tune.json")
    args = parser.parse_args()
    args.checkpoints = [1.0]  # the score is the end point
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    res = ResultsFile(args.out, {"runs": {}})
    if args.check_defaults:
        bad = {
            a: (w["setting"], defaults_of(a))
            for a, w in res.data.get("winners", {}).items()
            if w["setting"] != defaults_of(a)
        }
        for a, (win, now) in bad.items():
            print(f"{a}: winner {win} but the package default is {now}")
        sys.exit(1 if bad else 0)
    if not args.report:
        res.data["machine"] = machine_info()
        res.data["settings"] = {
            "task": TASK,
            "tokens": args.tokens,
            "beta": BETA,
            "num_envs": NUM_ENVS,
            "grid": {k: list(v) for k, v in GRID.items()},
            "eval_prompts": args.eval_prompts,
            "eval_seed": args.eval_seed,
            "finalists": FINALISTS,
            "stage2_seeds": list(STAGE2_SEEDS),
        }
        res.data.setdefault("commands", []).append(
            {"command": " ".join(["python"] + sys.argv), "started": time.strftime("%F %T")}
        )
        stages = [args.stage] if args.stage else [1, 2]
        for stage in stages:
            for algo in args.algos:
                if stage == 1:
                    todo = [(s, 0) for s in settings_grid()]
                else:
                    top = [r["setting"] for r in ranking(res.data, algo)[:FINALISTS]]
                    todo = [(s, seed) for s in top for seed in STAGE2_SEEDS]
                for setting, seed in todo:
                    key = key_of(algo, setting, seed)
                    if key in res.data["runs"]:
                        continue
                    rec = run_one(algo, setting, seed, args)
                    rec.update(algo=algo, setting=setting, seed=seed, stage=stage, key=key)
                    rec["finished"] = time.strftime("%F %T")
                    res.data["runs"][key] = rec
                    res.save()
                    print(f"{key}: score {rec['score']:.3f}", flush=True)
            report(res)
    report(res)


if __name__ == "__main__":
    main()
