"""RL algorithms side by side on the built-in tasks, at equal token budgets, over seeds.

Each algorithm optimises the task's **gold scorer** (passed as the env's ``reward``, so proxy =
gold here; ``benchmarks/overoptimization.py`` is the learned-proxy case) with the env's default KL
coefficient β (0.05 for both tasks):

* ``ppo``, ``grpo``, ``rloo``: ``agents.ALGORITHMS``, each with its package defaults
  (64 episodes per batch, lr 1e-4 decayed linearly; GRPO groups of 8, RLOO k = 4; GRPO puts
  β·k3 in its loss and asks the env for ``kl_reward="none"``, the others take the env's terminal
  ``−β·KL̂``);
* ``sb3_ppo``: stable-baselines3's PPO with ``agents.sb3.LMActorCriticPolicy`` (actor = the
  reference LM, ``make_sb3_env`` over the native batched env, 16 envs, ``n_steps=64``,
  ``batch_size=64``, 4 epochs, lr 1e-4 constant, γ = 1, λ = 0.95; the settings of
  ``docs/sb3.md``);
* ``bon``: best-of-n sampling from the reference, no training: ``m = 64`` reference samples
  per held-out prompt, the gold scorer picks the best of ``n`` (the unbiased all-subsets
  estimate, :func:`textenv.overoptimization.bon_expected`), for n = 1 … 32. Its KL is given
  twice: the analytic ``log n − (n−1)/n`` (an upper bound) and the estimate from the samples
  with the reward's ties (:func:`~textenv.overoptimization.bon_kl_estimate`; both tasks' rewards
  have many ties, so the real KL is well below the bound).

Token budget per run (generated tokens, i.e. env steps, the same for every algorithm; chosen
from measured speeds so the whole sweep fits well under 2 hours at 1 thread, SB3 being ~2–3×
slower than the package's agents end to end): **Sort-v0 40 000**, **Sentiment-v0 60 000**.
The policy is evaluated on ``--eval-prompts`` held-out prompts (the same seeded ones for every
run: :func:`textenv.evaluation.evaluate`) at 0, 1/8, 1/4, 1/2, 3/4 and all of the budget: gold,
proxy (RM) score and KL(π ‖ ρ) (the env's k1 estimate, summed per episode). Training time is
recorded as wall-clock and as this process's CPU time (evaluations excluded); on this shared
2-core machine the CPU time is what a quiet machine's wall-clock would be at 1 thread, so the
time axes use it, and the share of the machine other processes used is recorded per run.

Outputs: ``benchmarks/results/compare_algorithms.json`` (one record per (task, algo, seed),
plus a summary), ``compare_algorithms.csv`` (one row per evaluation point) and
``compare_algorithms_<task>.png`` (gold vs tokens, vs training time, vs KL; mean ± std over
seeds). Resumable: records already in the JSON are skipped.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/compare_algorithms.py            # the full sweep
    OMP_NUM_THREADS=1 python benchmarks/compare_algorithms.py --seeds 0  # one seed first
    OMP_NUM_THREADS=1 python benchmarks/compare_algorithms.py --quick    # smoke run (own files)
    OMP_NUM_THREADS=1 python benchmarks/compare_algorithms.py --report   # tables + plots only
"""

from __future__ import annotations

import argparse
import csv
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CPUClock, ResultsFile, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = {
    "sort": {"env_id": "textenv/Sort-v0", "module": "textenv.tasks.sort", "tokens": 40_000},
    "sentiment": {
        "env_id": "textenv/Sentiment-v0",
        "module": "textenv.tasks.sentiment",
        "tokens": 60_000,
    },
}
ALGOS = ("ppo", "grpo", "rloo", "sb3_ppo", "bon")
CHECKPOINTS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
SB3_SETTINGS = dict(
    n_steps=64, batch_size=64, n_epochs=4, learning_rate=1e-4, gamma=1.0, gae_lambda=0.95
)
SB3_ENVS = 16
LABELS = {
    "ppo": "PPO (agents)",
    "grpo": "GRPO (agents)",
    "rloo": "RLOO (agents)",
    "sb3_ppo": "SB3 PPO + LM policy",
    "bon": "best-of-n (reference)",
}


class Results(ResultsFile):
    """This benchmark's results file (resumable, saved after every record)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, {"runs": {}})


# --------------------------------------------------------------------------- runs


def gold_reward(task: str) -> dict[str, str]:
    """Env kwargs that make the task's gold scorer the reward (proxy = gold)."""
    module = importlib.import_module(TASKS[task]["module"])
    return {"reward": module.TASK["gold"]}


def _evaluate(model: Any, task: str, args: argparse.Namespace) -> dict[str, float]:
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


def run_agent(task: str, algo: str, seed: int, budget: int, args: argparse.Namespace) -> dict:
    """One of the package's agents: learn in iterations, evaluate at the checkpoints."""
    from agents import ALGORITHMS

    env_id = TASKS[task]["env_id"]
    agent_cls, config_cls = ALGORITHMS[algo]
    config = config_cls(env_id=env_id, env_kwargs=gold_reward(task), seed=seed, progress=False)
    agent = agent_cls(config)
    clock = CPUClock()
    curve = []
    for target in _targets(budget, args):
        clock.start()
        while agent.tokens_seen < target:
            agent.learn(budget, iterations=1)
        clock.stop()
        curve.append(
            {
                "tokens": agent.tokens_seen,
                "iteration": agent.iteration,
                "train_wall_s": clock.wall,
                "train_cpu_s": clock.cpu,
                **_evaluate(agent.policy.model, task, args),
            }
        )
        _progress(task, algo, seed, curve[-1])
    agent.close()
    settings = {k: v for k, v in config.to_dict().items() if k not in ("log_dir", "progress")}
    return {"curve": curve, "others_cpu_share": clock.others_share, "settings": settings}


def run_sb3(task: str, seed: int, budget: int, args: argparse.Namespace) -> dict:
    """SB3's PPO with the LM policy; evaluated at the start of the first rollout past each
    checkpoint (the policy has then been updated on everything collected so far)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.sb3 import LMActorCriticPolicy, lm_policy_kwargs, make_sb3_env

    env_id = TASKS[task]["env_id"]
    env = make_sb3_env(env_id, n_envs=SB3_ENVS, seed=seed, **gold_reward(task))
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
                **_evaluate(lm, task, args),
            }
        )
        _progress(task, "sb3_ppo", seed, curve[-1])

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


def run_bon(task: str, seed: int, args: argparse.Namespace) -> dict:
    """Best-of-n from the reference on the eval prompts, selected by the gold scorer."""
    import importlib

    import gymnasium as gym

    from textenv.overoptimization import bon_expected, bon_kl_bound, bon_kl_estimate
    from textenv.preferences import sample_completions
    from textenv.rewards import load_reward, score

    env_id, t = TASKS[task]["env_id"], importlib.import_module(TASKS[task]["module"]).TASK
    envs = gym.make_vec(env_id, num_envs=1, vectorization_mode="vector_entry_point", split="eval")
    pool = list(envs.unwrapped.prompts)
    envs.close()
    order = np.random.default_rng(args.eval_seed).permutation(len(pool))
    prompts = [pool[i] for i in np.resize(order, args.eval_prompts)]  # as evaluate() picks them
    clock = CPUClock()
    clock.start()
    rows = sample_completions(
        t["reference"],
        prompts,
        k=args.bon_m,
        max_new_tokens=t["max_new_tokens"],
        max_prompt_tokens=t["max_prompt_tokens"],
        seed=seed,
        batch_size=256,
    )
    flat_p = [r.prompt for r in rows for _ in r.completions]
    flat_c = [c for r in rows for c in r.completions]
    meta = [dict(r.metadata) for r in rows for _ in r.completions]
    proxy = score(load_reward(t["gold"]), flat_p, flat_c, meta).reshape(len(rows), -1)
    gold = score(load_reward(t["gold"]), flat_p, flat_c, meta).reshape(len(rows), -1)
    clock.stop()
    from textenv.lm.models import load_tokenizer

    tok = load_tokenizer(t["reference"])
    mean_len = float(
        np.mean([len(tok(c, add_special_tokens=False)["input_ids"]) + 1 for c in flat_c])
    )
    points = []
    for n in args.bon_n:
        g, p = bon_expected(proxy, gold, n), bon_expected(proxy, proxy, n)
        points.append(
            {
                "n": n,
                "kl_bound": bon_kl_bound(n),
                "kl_estimate": bon_kl_estimate(proxy, n),
                "gold_score": float(g.mean()),
                "gold_score_sem": float(g.std(ddof=1) / np.sqrt(len(g))),
                "rm_score": float(p.mean()),
                "tokens_per_prompt": n * mean_len,
                "cpu_s_per_prompt": n * clock.cpu / proxy.size,
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
        "sample_and_score_wall_s": clock.wall,
        "others_cpu_share": clock.others_share,
        "settings": {"reference": t["reference"], "m": args.bon_m, "n": list(args.bon_n)},
    }


def _progress(task: str, algo: str, seed: int, p: dict) -> None:
    print(
        f"[{task} {algo} seed={seed}] {p['tokens']:>6d} tok {p['train_cpu_s']:6.0f} cpu-s: "
        f"gold {p['gold_score']:+.3f} ± {p['gold_score_sem']:.3f}  KL {p['kl']:.2f}",
        flush=True,
    )


# --------------------------------------------------------------------------- summary


def _curves(data: dict, task: str, algo: str) -> list[dict]:
    return [
        r
        for k, r in sorted(data["runs"].items())
        if r["task"] == task and r["algo"] == algo and "curve" in r
    ]


def _ms(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def _pm(values: list[float], fmt: str = ".3f") -> str:
    m, s = _ms(values)
    return f"{m:{fmt}}" + ("" if np.isnan(s) else f" ± {s:{fmt}}")


def summarise(data: dict) -> dict:
    """Per (task, algo): the final point's mean ± std over seeds; per task, BoN points."""
    out: dict[str, Any] = {}
    for task in TASKS:
        rows = {}
        for algo in ALGOS:
            if algo == "bon":
                runs = [r for r in data["runs"].values() if r["task"] == task and r["algo"] == algo]
                if runs:
                    pts = list(zip(*[r["points"] for r in runs], strict=True))
                    rows[algo] = {
                        "seeds": len(runs),
                        "points": [
                            {
                                "n": ps[0]["n"],
                                "gold_score": _ms([p["gold_score"] for p in ps]),
                                "kl_bound": ps[0]["kl_bound"],
                                "kl_estimate": _ms([p["kl_estimate"] for p in ps]),
                                "tokens_per_prompt": _ms([p["tokens_per_prompt"] for p in ps])[0],
                            }
                            for ps in pts
                        ],
                    }
                continue
            runs = _curves(data, task, algo)
            if not runs:
                continue
            first = [r["curve"][0] for r in runs]
            last = [r["curve"][-1] for r in runs]
            rows[algo] = {
                "seeds": len(runs),
                "tokens": int(np.mean([p["tokens"] for p in last])),
                "gold_start": _ms([p["gold_score"] for p in first]),
                "gold_final": _ms([p["gold_score"] for p in last]),
                "gold_best": _ms([max(q["gold_score"] for q in r["curve"]) for r in runs]),
                "kl_final": _ms([p["kl"] for p in last]),
                "train_cpu_s": _ms([p["train_cpu_s"] for p in last]),
                "train_wall_s": _ms([p["train_wall_s"] for p in last]),
                "tokens_per_cpu_s": _ms([p["tokens"] / p["train_cpu_s"] for p in last]),
                "others_cpu_share": _ms([r["others_cpu_share"] for r in runs])[0],
            }
        if rows:
            out[task] = rows
    return out


def markdown(data: dict) -> str:
    parts = []
    for task, rows in data.get("summary", {}).items():
        budget = data.get("settings", {}).get("tokens", {}).get(task, TASKS[task]["tokens"])
        parts.append(
            f"**{TASKS[task]['env_id']}** — {budget} generated tokens per run, final point, "
            "mean ± std over seeds:\n"
        )
        parts.append(
            "| algorithm | seeds | gold: start → final | best gold | KL final (nats) "
            "| train CPU s | tokens / CPU s | train wall s | others' CPU |"
        )
        parts.append("|---|---:|---|---|---|---:|---:|---:|---:|")
        for algo, r in rows.items():
            if algo == "bon":
                continue
            parts.append(
                f"| {LABELS[algo]} | {r['seeds']} | {r['gold_start'][0]:.3f} → "
                f"{_fmt(r['gold_final'])} | {_fmt(r['gold_best'])} | {_fmt(r['kl_final'], '.2f')} "
                f"| {r['train_cpu_s'][0]:.0f} | {r['tokens_per_cpu_s'][0]:.0f} "
                f"| {r['train_wall_s'][0]:.0f} | {r['others_cpu_share']:.0%} |"
            )
        if "bon" in rows:
            b = rows["bon"]
            parts.append(
                f"\nBest-of-n from the reference ({b['seeds']} sampling seeds; KL: analytic bound "
                "/ estimate with the reward's ties):\n"
            )
            parts.append("| n | gold | KL bound | KL estimate | tokens per prompt |")
            parts.append("|---:|---|---:|---:|---:|")
            for p in b["points"]:
                parts.append(
                    f"| {p['n']} | {_fmt(p['gold_score'])} | {p['kl_bound']:.2f} "
                    f"| {p['kl_estimate'][0]:.2f} | {p['tokens_per_prompt']:.0f} |"
                )
        parts.append("")
    return "\n".join(parts)


def _fmt(ms: tuple[float, float] | list[float], fmt: str = ".3f") -> str:
    m, s = ms
    return f"{m:{fmt}}" + ("" if s is None or np.isnan(s) else f" ± {s:{fmt}}")


def write_csv(data: dict, path: Path) -> None:
    cols = ["task", "algo", "seed", "tokens", "train_cpu_s", "train_wall_s", "gold_score"]
    cols += ["gold_score_sem", "rm_score", "kl", "kl_sem", "bon_n", "kl_estimate"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in data["runs"].values():
            base = {"task": r["task"], "algo": r["algo"], "seed": r["seed"]}
            for p in r.get("curve", []):
                w.writerow({**base, **p})
            for p in r.get("points", []):
                w.writerow({**base, **p, "bon_n": p["n"], "kl": p["kl_bound"]})


def plot(data: dict, task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = dict(zip(ALGOS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for algo in ALGOS[:-1]:
        runs = _curves(data, task, algo)
        if not runs:
            continue
        k = min(len(r["curve"]) for r in runs)
        arr = {
            key: np.array([[p[key] for p in r["curve"][:k]] for r in runs])
            for key in ("tokens", "train_cpu_s", "gold_score", "kl")
        }
        mean, std = arr["gold_score"].mean(0), arr["gold_score"].std(0)
        label = f"{LABELS[algo]} ({len(runs)} seeds)"
        for ax, xkey in zip(axes[:2], ("tokens", "train_cpu_s"), strict=True):
            x = arr[xkey].mean(0)
            ax.plot(x, mean, "o-", color=colors[algo], label=label, ms=3)
            ax.fill_between(x, mean - std, mean + std, color=colors[algo], alpha=0.2)
        kl = arr["kl"].mean(0)
        axes[2].errorbar(
            kl, mean, xerr=arr["kl"].std(0), yerr=std, fmt="o-", color=colors[algo], ms=3,
            capsize=2, label=label,
        )  # fmt: skip
    bon = data.get("summary", {}).get(task, {}).get("bon")
    if bon:
        g = np.array([p["gold_score"] for p in bon["points"]])
        g_std = np.nan_to_num(g[:, 1])
        for kl_key, style, name in (("kl_bound", "s--", "bound"), ("kl_estimate", "s-", "est.")):
            kl = [p[kl_key] if kl_key == "kl_bound" else p[kl_key][0] for p in bon["points"]]
            axes[2].errorbar(
                kl, g[:, 0], yerr=g_std, fmt=style, color=colors["bon"], ms=4, capsize=2,
                alpha=1.0 if name == "est." else 0.5,
                label=f"best-of-n, n={bon['points'][0]['n']}…{bon['points'][-1]['n']} "
                f"(KL {name})",
            )  # fmt: skip
    axes[0].set_xlabel("generated tokens (training)")
    axes[1].set_xlabel("training time: process CPU s at 1 thread (evaluation excluded)")
    axes[2].set_xlabel("KL(π ‖ ρ) per episode, nats (held-out prompts)")
    axes[2].set_xscale("symlog", linthresh=0.1)
    for ax in axes:
        ax.set_ylabel("gold score (held-out, mean ± std over seeds)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{TASKS[task]['env_id']}: reward = gold scorer, β = env default")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(res: Results, stem: Path) -> None:
    res.data["summary"] = summarise(res.data)
    res.data["table_md"] = markdown(res.data)
    res.save()
    write_csv(res.data, stem.with_suffix(".csv"))
    for task in res.data["summary"]:
        plot(res.data, task, stem.parent / f"{stem.name}_{task}.png")
    print(res.data["table_md"], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tokens-sort", type=int, default=TASKS["sort"]["tokens"])
    parser.add_argument("--tokens-sentiment", type=int, default=TASKS["sentiment"]["tokens"])
    parser.add_argument("--checkpoints", type=float, nargs="+", default=list(CHECKPOINTS))
    parser.add_argument("--eval-prompts", type=int, default=256)
    parser.add_argument("--eval-seed", type=int, default=1234)
    parser.add_argument("--bon-m", type=int, default=64)
    parser.add_argument("--bon-n", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--report", action="store_true", help="only rebuild tables and plots")
    parser.add_argument("--quick", action="store_true", help="smoke run into *_quick files")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_algorithms.json")
    args = parser.parse_args()
    if args.quick:
        args.tokens_sort = args.tokens_sentiment = 2048
        args.seeds, args.eval_prompts, args.bon_m, args.bon_n = [0], 32, 8, [1, 2, 8]
        args.checkpoints = [0.0, 0.5, 1.0]
        args.out = args.out.with_name(args.out.stem + "_quick.json")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    budgets = {"sort": args.tokens_sort, "sentiment": args.tokens_sentiment}

    res = Results(args.out)
    stem = args.out.with_suffix("")
    if not args.report:
        res.data["machine"] = machine_info()
        res.data.setdefault("commands", []).append(  # one entry per session (resumes)
            {
                "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            }
        )
        res.data["settings"] = {
            "tokens": budgets,
            "checkpoints": args.checkpoints,
            "eval_prompts": args.eval_prompts,
            "eval_seed": args.eval_seed,
            "bon_m": args.bon_m,
            "bon_n": args.bon_n,
            "sb3": {**SB3_SETTINGS, "n_envs": SB3_ENVS},
        }
        res.save()
        started = time.perf_counter()
        for seed in args.seeds:
            for task in args.tasks:
                for algo in args.algos:
                    key = f"{task}/{algo}/seed={seed}"
                    if key in res.data["runs"]:
                        continue
                    t0 = time.perf_counter()
                    if algo == "bon":
                        rec = run_bon(task, seed, args)
                    elif algo == "sb3_ppo":
                        rec = run_sb3(task, seed, budgets[task], args)
                    else:
                        rec = run_agent(task, algo, seed, budgets[task], args)
                    rec.update(
                        task=task,
                        algo=algo,
                        seed=seed,
                        budget_tokens=budgets[task] if algo != "bon" else None,
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
