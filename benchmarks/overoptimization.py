"""Reward-model over-optimisation on ``textenv/Sort-v0`` (Gao, Schulman & Hilton 2022).

(``--task sentiment`` runs the same on ``textenv/Sentiment-v0``, into
``overoptimization_sentiment.*``.)

A fixed gold scorer (the task's exact sorted-digits score) plays the human: it labels
preference pairs through a Bradley–Terry simulated labeller, and proxy reward models trained on
``N`` of those pairs are then optimised. The gold score of what the optimiser produces is
measured against ``d = √KL(π ‖ π_init)`` and Gao et al.'s functional forms are fitted with
:func:`textenv.overoptimization.fit_gold_curve`:

* **best-of-n** ``R_bon(d) = d(α − β·d)``: for each held-out prompt, ``m`` samples of the
  reference; the proxy picks the best of ``n`` (n ∈ {1, 2, 4, …, 32}; the expectation over
  all ``n``-subsets of the ``m`` samples, :func:`~textenv.overoptimization.bon_expected`);
  KL = the analytic ``log n − (n−1)/n`` (the tie-aware sample estimate is recorded as well);
* **RL** ``R_RL(d) = d(α − β·log d)``: PPO (``agents.PPO``, package defaults) against the
  env with ``reward=<proxy RM folder>`` and no KL penalty by default (``--kl-coef 0``, as Gao
  et al.'s main RL runs, so that the optimiser travels far in KL; a penalty acts like early
  stopping);
  ``info["gold_score"]`` keeps the gold. At the ``--eval-at`` token counts the policy is evaluated on
  held-out prompts (:func:`agents.evaluation.evaluate`): one (KL, gold, proxy) point.

Pipeline per proxy size ``N``: ``sample_completions`` (k = 4 per train prompt, the task's
reference) → ``SimulatedLabeller(gold, temperature=T, ties="skip")`` pairs → the first ``N``
pairs (a fixed seeded shuffle; 10% of them held out by prompt for early stopping) →
``train_reward_model(backbone=reference)``. Each RM is also scored on held-out pairs from eval
prompts against the noise-free gold order (``acc_vs_gold``).

Outputs: ``benchmarks/results/overoptimization.json`` (every point, the RM metrics, the fits
with α, β, R²), ``overoptimization.csv`` (one row per point) and ``overoptimization.png``
(gold and proxy against √KL, fitted curves). Resumable: RMs, BoN sets and RL runs already in
the JSON are skipped (RM folders live in ``--work``; a missing one is retrained, seeded).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/overoptimization.py             # the full sweep
    OMP_NUM_THREADS=1 python benchmarks/overoptimization.py --quick     # a smoke run (own files)
    OMP_NUM_THREADS=1 python benchmarks/overoptimization.py --report    # tables + plot only
    OMP_NUM_THREADS=1 python benchmarks/overoptimization.py --task sentiment --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CPUClock, ResultsFile, record_session, save_figure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = {  # env id, task module, simulated labeller's Bradley–Terry temperature
    "sort": ("textenv/Sort-v0", "textenv.tasks.sort", 0.05),
    "sentiment": ("textenv/Sentiment-v0", "textenv.tasks.sentiment", 0.1),
}
ENV_ID, TASK_MODULE, _ = TASKS["sort"]  # set by --task
RM_TRAIN = dict(epochs=10, batch_size=32, lr=3e-4, patience=2, val_fraction=0.1)


# --------------------------------------------------------------------------- state


class Results(ResultsFile):
    """This benchmark's results file (resumable, saved after every record)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, {"rms": {}, "bon": {}, "rl": {}})


def _task() -> dict[str, Any]:
    import importlib

    return dict(importlib.import_module(TASK_MODULE).TASK)


def _gold():
    import importlib

    return importlib.import_module(TASK_MODULE).gold_score


def _labelled_pool(args: argparse.Namespace, split: str, n_prompts: int, temperature: float):
    """Pairs labelled by the simulated labeller from k=4 reference samples per prompt (cached)."""
    from textenv.preferences import (
        SimulatedLabeller,
        read_preferences,
        sample_completions,
        write_jsonl,
    )

    seed = args.seed + (0 if split == "train" else 1000)
    path = args.work / f"pairs_{split}_p{n_prompts}_T{temperature}_s{seed}.jsonl"
    if path.exists():
        return list(read_preferences(path))
    task = _task()
    rows = sample_completions(
        task["reference"],
        task["prompts"],
        k=4,
        max_new_tokens=task["max_new_tokens"],
        max_prompt_tokens=task["max_prompt_tokens"],
        seed=seed,
        split=split,
        n_prompts=n_prompts,
        batch_size=256,
    )
    labeller = SimulatedLabeller(_gold(), temperature=temperature, ties="skip", seed=seed)
    result = labeller.label_samples(rows, mode="pairs")
    args.work.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, result.items)
    print(
        f"[pairs] {split}: {len(result.items)} pairs from {len(rows)} prompts "
        f"({result.n_ties} ties skipped)",
        flush=True,
    )
    return list(result.items)


def rm_folder(args: argparse.Namespace, n: int) -> Path:
    return args.work / f"rm_n{n}_T{args.label_temperature}_s{args.seed}"


def ensure_rm(args: argparse.Namespace, res: Results, n: int) -> Path:
    """Train (or find) the proxy RM on ``n`` pairs; record its metrics once."""
    from textenv.rewards import load_reward, score
    from textenv.training.reward_model import train_reward_model

    out = rm_folder(args, n)
    key = str(n)
    if key in res.data["rms"] and (out / "config.json").exists():
        return out
    pool = _labelled_pool(args, "train", args.train_prompts, args.label_temperature)
    if n > len(pool):
        raise ValueError(f"only {len(pool)} labelled pairs; raise --train-prompts for n={n}")
    order = np.random.default_rng([args.seed, 17]).permutation(len(pool))
    pairs = [pool[i] for i in order[:n]]  # nested: the 250 pairs are inside the 1000, ...
    task = _task()
    with CPUClock() as t:
        metrics = train_reward_model(
            pairs, out, backbone=task["reference"], seed=args.seed, progress=False, **RM_TRAIN
        )
    held = _labelled_pool(args, "eval", args.heldout_prompts, 0.0)  # T=0: the gold order
    reward = load_reward(str(out))
    prompts = [p.prompt for p in held]
    meta = [{} for _ in held]
    sc = score(reward, prompts, [p.chosen for p in held], meta)
    sr = score(reward, prompts, [p.rejected for p in held], meta)
    acc = float(np.mean((sc > sr) + 0.5 * (sc == sr)))
    res.data["rms"][key] = {
        "n_pairs": n,
        "label_temperature": args.label_temperature,
        "val_accuracy": metrics.get("val_accuracy"),
        "acc_vs_gold": acc,
        "n_heldout_pairs": len(held),
        "epochs_run": metrics.get("epochs_run"),
        "train_wall_s": t.wall,
        "train_cpu_s": t.cpu,
        "others_cpu_share": t.others_share,
        "folder": str(out),
    }
    res.save()
    print(f"[rm n={n}] val acc {metrics.get('val_accuracy'):.3f}, held-out acc vs gold {acc:.3f}")
    return out


# --------------------------------------------------------------------------- best-of-n


def _eval_prompts(args: argparse.Namespace) -> list[Any]:
    """The first ``--eval-prompts`` eval prompts in the seeded order :func:`evaluate` uses."""
    import gymnasium as gym

    envs = gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", split="eval")
    pool = list(envs.unwrapped.prompts)
    envs.close()
    order = np.random.default_rng(args.eval_seed).permutation(len(pool))
    return [pool[i] for i in np.resize(order, args.eval_prompts)]


def _bon_samples(args: argparse.Namespace) -> tuple[list[str], list[list[str]], np.ndarray]:
    """``m`` reference samples per eval prompt and their gold scores (cached in memory)."""
    from textenv.preferences import sample_completions

    if hasattr(args, "_bon_cache"):
        return args._bon_cache
    task = _task()
    prompts = _eval_prompts(args)
    with CPUClock() as t:
        rows = sample_completions(
            task["reference"],
            prompts,
            k=args.bon_m,
            max_new_tokens=task["max_new_tokens"],
            max_prompt_tokens=task["max_prompt_tokens"],
            seed=args.seed + 7,
            batch_size=512,
        )
    texts = [r.prompt for r in rows]
    comps = [list(r.completions) for r in rows]
    flat_p = [p for p, cs in zip(texts, comps, strict=True) for _ in cs]
    flat_c = [c for cs in comps for c in cs]
    gold = np.asarray(_gold()(flat_p, flat_c), dtype=np.float64).reshape(len(rows), -1)
    print(f"[bon] {gold.size} reference samples in {t.wall:.0f} s", flush=True)
    args._bon_cache = (texts, comps, gold)
    return args._bon_cache


def run_bon(args: argparse.Namespace, res: Results, n_pairs: int) -> None:
    from textenv.overoptimization import bon_expected, bon_kl_bound, bon_kl_estimate
    from textenv.rewards import load_reward, score

    key = str(n_pairs)
    if key in res.data["bon"]:
        return
    folder = ensure_rm(args, res, n_pairs)
    texts, comps, gold = _bon_samples(args)
    flat_p = [p for p, cs in zip(texts, comps, strict=True) for _ in cs]
    flat_c = [c for cs in comps for c in cs]
    with CPUClock() as t:
        proxy = score(load_reward(str(folder)), flat_p, flat_c, [{} for _ in flat_p])
    proxy = proxy.reshape(gold.shape)
    points = []
    for n in args.bon_n:
        g = bon_expected(proxy, gold, n)
        p = bon_expected(proxy, proxy, n)
        points.append(
            {
                "n": n,
                "kl_bound": bon_kl_bound(n),
                "kl_estimate": bon_kl_estimate(proxy, n),
                "gold": float(g.mean()),
                "gold_sem": float(g.std(ddof=1) / np.sqrt(len(g))),
                "proxy": float(p.mean()),
                "proxy_sem": float(p.std(ddof=1) / np.sqrt(len(p))),
                "oracle_gold": float(bon_expected(gold, gold, n).mean()),  # best of n by gold
            }
        )
    res.data["bon"][key] = {
        "n_pairs": n_pairs,
        "m": args.bon_m,
        "eval_prompts": len(texts),
        "score_wall_s": t.wall,
        "points": points,
    }
    res.save()
    line = ", ".join(f"n={q['n']}: {q['gold']:.3f}" for q in points)
    print(f"[bon rm={n_pairs}] gold {line}", flush=True)


# --------------------------------------------------------------------------- RL


def run_rl(args: argparse.Namespace, res: Results, n_pairs: int, seed: int) -> None:
    from agents import PPO, PPOConfig
    from agents.evaluation import evaluate

    key = f"{n_pairs}/seed={seed}"
    if key in res.data["rl"]:
        return
    folder = ensure_rm(args, res, n_pairs)
    env_kwargs = {"reward": str(folder), "kl_coef": args.kl_coef}
    config = PPOConfig(
        env_id=ENV_ID, env_kwargs=env_kwargs, seed=seed, num_envs=args.num_envs, progress=False
    )
    agent = PPO(config)

    def point(train_wall: float, train_cpu: float) -> dict[str, Any]:
        ev = evaluate(
            agent.policy.model, ENV_ID, n_prompts=args.eval_prompts, seed=args.eval_seed,
            **env_kwargs,
        )  # fmt: skip
        return {
            "tokens": agent.tokens_seen,
            "iteration": agent.iteration,
            "train_wall_s": train_wall,
            "train_cpu_s": train_cpu,
            **{k: ev.metrics[k].mean for k in ("gold_score", "rm_score", "kl", "num_tokens")},
            **{k + "_sem": ev.metrics[k].sem for k in ("gold_score", "rm_score", "kl")},
        }

    curve = [point(0.0, 0.0)]
    wall = cpu = 0.0
    others = []
    for target in sorted({min(t, args.rl_tokens) for t in args.eval_at} | {args.rl_tokens}):
        if agent.tokens_seen >= target:
            continue
        with CPUClock() as t:
            while agent.tokens_seen < target:
                agent.learn(args.rl_tokens, iterations=1)
        wall, cpu = wall + t.wall, cpu + t.cpu
        others.append(t.others_share)
        curve.append(point(wall, cpu))
        c = curve[-1]
        print(
            f"[rl rm={n_pairs} seed={seed}] {c['tokens']} tok: gold {c['gold_score']:.3f} "
            f"proxy {c['rm_score']:+.3f} KL {c['kl']:.2f} ({wall:.0f} s)",
            flush=True,
        )
    agent.close()
    res.data["rl"][key] = {
        "n_pairs": n_pairs,
        "seed": seed,
        "settings": {
            "algo": "ppo",
            "config": {k: v for k, v in config.to_dict().items() if k != "log_dir"},
            "tokens": args.rl_tokens,
            "eval_at": args.eval_at,
            "eval_prompts": args.eval_prompts,
        },
        "others_cpu_share": float(np.mean(others)) if others else 0.0,
        "curve": curve,
    }
    res.save()


# --------------------------------------------------------------------------- fits + report


def fits(res: Results) -> dict[str, Any]:
    """Gao et al.'s fits per proxy size: RL (all seeds' points pooled) and best-of-n."""
    from textenv.overoptimization import fit_gold_curve

    out: dict[str, Any] = {}
    for key, rm in sorted(res.data["rms"].items(), key=lambda kv: int(kv[0])):
        entry: dict[str, Any] = {"n_pairs": rm["n_pairs"], "acc_vs_gold": rm["acc_vs_gold"]}
        runs = [r for r in res.data["rl"].values() if r["n_pairs"] == rm["n_pairs"]]
        if runs:
            pts = [p for r in runs for p in r["curve"]]
            kl = np.clip([p["kl"] for p in pts], 0.0, None)
            gold = np.array([p["gold_score"] for p in pts])
            base = float(np.mean([r["curve"][0]["gold_score"] for r in runs]))
            try:
                entry["rl"] = fit_gold_curve(kl, gold, "rl", baseline=base).as_dict()
            except ValueError as exc:
                entry["rl"] = {"error": str(exc)}
            finals = [r["curve"][-1] for r in runs]
            peaks = [max(r["curve"], key=lambda p: p["gold_score"]) for r in runs]
            entry["rl_summary"] = {
                "seeds": len(runs),
                "gold_init": base,
                "gold_peak": float(np.mean([p["gold_score"] for p in peaks])),
                "kl_at_peak": float(np.mean([p["kl"] for p in peaks])),
                "gold_final": float(np.mean([p["gold_score"] for p in finals])),
                "proxy_final": float(np.mean([p["rm_score"] for p in finals])),
                "kl_final": float(np.mean([p["kl"] for p in finals])),
            }
        bon = res.data["bon"].get(key)
        if bon:
            pts = bon["points"]
            base = next(p["gold"] for p in pts if p["n"] == 1)
            try:
                entry["bon"] = fit_gold_curve(
                    [p["kl_bound"] for p in pts], [p["gold"] for p in pts], "bon", baseline=base
                ).as_dict()
            except ValueError as exc:
                entry["bon"] = {"error": str(exc)}
        out[key] = entry
    return out


def _fmt_fit(f: dict[str, Any] | None) -> str:
    if not f or "alpha" not in f:
        return "–"
    return f"α={f['alpha']:.3f}, β={f['beta']:.3f}, R²={f['r2']:.2f}"


def markdown(res: Results) -> str:
    d = res.data
    lines = [
        "| proxy RM pairs | RM acc vs gold | RL gold: init → peak (KL) → final (KL) "
        "| RL fit R_RL | BoN gold: n=1 → best (n) → last (n) | BoN fit R_bon |",
        "|---:|---:|---|---|---|---|",
    ]
    for key, f in d.get("fits", {}).items():
        rl = f.get("rl_summary")
        rl_txt = (
            f"{rl['gold_init']:.3f} → {rl['gold_peak']:.3f} ({rl['kl_at_peak']:.1f}) → "
            f"{rl['gold_final']:.3f} ({rl['kl_final']:.1f})"
            if rl
            else "–"
        )
        bon = d["bon"].get(key)
        bon_txt = "–"
        if bon:
            pts = bon["points"]
            top = max(pts, key=lambda p: p["gold"])
            bon_txt = (
                f"{pts[0]['gold']:.3f} → {top['gold']:.3f} (n={top['n']}) → "
                f"{pts[-1]['gold']:.3f} (n={pts[-1]['n']})"
            )
        lines.append(
            f"| {f['n_pairs']} | {f['acc_vs_gold']:.3f} | {rl_txt} | {_fmt_fit(f.get('rl'))} "
            f"| {bon_txt} | {_fmt_fit(f.get('bon'))} |"
        )
    return "\n".join(lines)


def write_csv(res: Results, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "n_pairs", "seed", "n_or_tokens", "kl", "sqrt_kl", "gold", "proxy"])
        for r in res.data["rl"].values():
            for p in r["curve"]:
                kl = max(p["kl"], 0.0)
                w.writerow(
                    ["rl", r["n_pairs"], r["seed"], p["tokens"], p["kl"], np.sqrt(kl)]
                    + [p["gold_score"], p["rm_score"]]
                )
        for b in res.data["bon"].values():
            for p in b["points"]:
                w.writerow(
                    ["bon", b["n_pairs"], "", p["n"], p["kl_bound"], np.sqrt(p["kl_bound"])]
                    + [p["gold"], p["proxy"]]
                )


def plot(res: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from textenv.overoptimization import gold_curve

    d = res.data
    sizes = sorted(int(k) for k in d["rms"])
    colors = {n: plt.cm.viridis(i / max(1, len(sizes) - 1) * 0.85) for i, n in enumerate(sizes)}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex="col")
    for n in sizes:
        c, f = colors[n], d.get("fits", {}).get(str(n), {})
        runs = [r for r in d["rl"].values() if r["n_pairs"] == n]
        for i, r in enumerate(runs):
            x = np.sqrt(np.clip([p["kl"] for p in r["curve"]], 0, None))
            label = f"{n} pairs" if i == 0 else None
            axes[0, 0].plot(
                x, [p["gold_score"] for p in r["curve"]], "o-", color=c, alpha=0.6, ms=3,
                label=label,
            )  # fmt: skip
            axes[1, 0].plot(
                x, [p["rm_score"] for p in r["curve"]], "o-", color=c, alpha=0.6, ms=3, label=label
            )
        if "alpha" in f.get("rl", {}):
            fit = f["rl"]
            xmax = max(np.sqrt(max(p["kl"], 0)) for r in runs for p in r["curve"])
            grid = np.linspace(0, xmax, 100)
            y = fit["baseline"] + gold_curve(grid**2, fit["alpha"], fit["beta"], "rl")
            axes[0, 0].plot(grid, y, "--", color=c, lw=2, label=f"fit {n}: {_fmt_fit(fit)}")
        bon = d["bon"].get(str(n))
        if bon:
            x = np.sqrt([p["kl_bound"] for p in bon["points"]])
            axes[0, 1].plot(
                x, [p["gold"] for p in bon["points"]], "o-", color=c, label=f"{n} pairs"
            )
            axes[1, 1].plot(
                x, [p["proxy"] for p in bon["points"]], "o-", color=c, label=f"{n} pairs"
            )
            if "alpha" in f.get("bon", {}):
                fit = f["bon"]
                grid = np.linspace(0, x.max(), 100)
                y = fit["baseline"] + gold_curve(grid**2, fit["alpha"], fit["beta"], "bon")
                axes[0, 1].plot(grid, y, "--", color=c, lw=2, label=f"fit: {_fmt_fit(fit)}")
    if d["bon"]:
        any_bon = next(iter(d["bon"].values()))
        x = np.sqrt([p["kl_bound"] for p in any_bon["points"]])
        axes[0, 1].plot(
            x, [p["oracle_gold"] for p in any_bon["points"]], "k:", label="best of n by gold"
        )
    axes[0, 0].set_title("RL (PPO) against the proxy RM")
    axes[0, 1].set_title("best-of-n by the proxy RM (KL = log n − (n−1)/n)")
    axes[0, 0].set_ylabel("gold score (held-out prompts)")
    axes[1, 0].set_ylabel("proxy RM score (normalised)")
    for ax in axes[1]:
        ax.set_xlabel("d = √KL(π ‖ π_init)  [√nats]")
    save_figure(
        fig, axes.ravel(), path, f"{ENV_ID}: reward over-optimisation (Gao et al. 2022 fits)"
    )


def report(res: Results, stem: Path) -> None:
    res.data["fits"] = fits(res)
    res.data["table_md"] = markdown(res)
    res.save()
    write_csv(res, stem.with_suffix(".csv"))
    if res.data["rms"]:
        plot(res, stem.with_suffix(".png"))
    print(res.data["table_md"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 4000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="RL seeds")
    parser.add_argument("--seed", type=int, default=0, help="data / RM seed")
    parser.add_argument("--task", choices=list(TASKS), default="sort")
    parser.add_argument(
        "--label-temperature", type=float, default=None, help="default: 0.05 sort, 0.1 sentiment"
    )
    parser.add_argument("--train-prompts", type=int, default=2500)
    parser.add_argument("--heldout-prompts", type=int, default=500)
    parser.add_argument("--rl-tokens", type=int, default=60_000)
    parser.add_argument(
        "--eval-at",
        type=int,
        nargs="+",
        default=[1000, 2000, 3000, 4500, 6000, 8000, 11000, 15000, 20000, 30000, 45000],
        help="token counts at which RL is evaluated (and at the end); dense early: with β=0 "
        "the proxy is exploited within a few thousand tokens",
    )
    parser.add_argument("--kl-coef", type=float, default=0.0, help="β (Gao et al.: 0)")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--eval-prompts", type=int, default=256)
    parser.add_argument("--eval-seed", type=int, default=1234)
    parser.add_argument("--bon-m", type=int, default=64, help="reference samples per prompt")
    parser.add_argument("--bon-n", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--skip-rl", action="store_true")
    parser.add_argument("--report", action="store_true", help="only rebuild tables and plot")
    parser.add_argument("--quick", action="store_true", help="smoke run into *_quick files")
    parser.add_argument("--work", type=Path, default=None, help="RM folders, cached pairs")
    parser.add_argument("--out", type=Path, default=RESULTS / "overoptimization.json")
    args = parser.parse_args()
    global ENV_ID, TASK_MODULE
    ENV_ID, TASK_MODULE, temperature = TASKS[args.task]
    if args.label_temperature is None:
        args.label_temperature = temperature
    if args.task != "sort":
        args.out = args.out.with_name(f"{args.out.stem}_{args.task}{args.out.suffix}")
    if args.quick:
        args.sizes, args.seeds, args.rl_tokens, args.eval_at = [250], [0], 4000, [2000]
        args.eval_prompts, args.bon_m, args.bon_n = 64, 16, [1, 2, 4, 16]
        args.train_prompts, args.heldout_prompts = 200, 100
        args.out = args.out.with_name(args.out.stem + "_quick.json")
    tag = ("_quick" if args.quick else "") + ("" if args.task == "sort" else f"_{args.task}")
    args.work = args.work or Path(tempfile.gettempdir()) / f"textenv_overopt_bench{tag}"
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    res = Results(args.out)
    stem = args.out.with_suffix("")
    if not args.report:
        record_session(res.data)
        res.data["settings"] = {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if not k.startswith("_")
        }
        res.data["settings"]["rm_train"] = RM_TRAIN
        res.data["settings"]["env_id"] = ENV_ID
        res.save()
        started = time.perf_counter()
        for n in args.sizes:
            ensure_rm(args, res, n)
            run_bon(args, res, n)
        report(res, stem)
        if not args.skip_rl:
            for seed in args.seeds:
                for n in args.sizes:
                    run_rl(args, res, n, seed)
                    report(res, stem)
        print(f"done in {time.perf_counter() - started:.0f} s this session")
    report(res, stem)


if __name__ == "__main__":
    main()
