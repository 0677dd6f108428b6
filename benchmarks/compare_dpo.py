"""DPO and IPO as entries of ``compare_algorithms.py`` (``--algos dpo ipo``): offline preference
optimisation on the same gold–KL frontier plot and table as the RL agents and best-of-n.

Where the RL agents optimise the task's gold scorer directly, DPO and IPO learn from **preference
pairs** labelled by it, exactly as a reward model would: ``--dpo-pairs`` pairs (default 1000, the
size of the middle reward model of ``overoptimization.py``, made the way that script makes its
RMs' pairs: k = 4 reference samples per train prompt, the simulated Bradley–Terry labeller at the
task's noise — T = 0.05 Sort, 0.1 Sentiment — ties skipped, a seeded shuffle, the first N).
``overoptimization.py`` runs PPO and best-of-n against an RM trained on that many pairs: the
like-for-like comparison. Each run trains :class:`agents.DPO` (``loss_type`` ``sigmoid`` for
``dpo``, ``ipo`` for ``ipo``; the package's defaults: lr 1e-4, 64 pairs per iteration, 32 per
gradient step) for ``--dpo-passes`` passes over the pairs, with the run's β as DPO's β — the
KL coefficient of the objective DPO solves, so its ``β = 0.05`` is the env default's. IPO's β sets
a target log-ratio margin of 1/(2β) on per-token averages, another scale, so it has its own sweep.

Each run is evaluated like the RL runs (the same held-out prompts, at the same fractions of its
budget, here of its passes): gold, RM (= gold) score, KL. Its ``tokens`` count the completion
tokens trained on (chosen + rejected per pair and pass), not generated tokens; its
``train_cpu_s`` excludes sampling and labelling the pairs (a cost it shares with the RM route).
The record also has the implicit reward's accuracy on held-out pairs of eval prompts in the gold
order (comparable to the RMs' ``acc_vs_gold`` in ``overoptimization.json``).
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import CPUClock, learn_to_checkpoints

DPO_LOSSES = {"dpo": "sigmoid", "ipo": "ipo"}
DPO_BETAS = (0.05, 0.1, 0.3, 1.0)  # 0.05: the env default, as the RL agents' default row
IPO_BETAS = (0.1, 0.3, 1.0, 3.0)
LABEL_T = {"sort": 0.05, "sentiment": 0.1}  # overoptimization.py's labeller noise
TRAIN = dict(lr=1e-4, batch_size=64, minibatch_size=32)  # the package's DPO defaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("DPO / IPO (compare_dpo.py)")
    g.add_argument("--dpo-pairs", type=int, default=1000, help="training pairs (as the RM's)")
    g.add_argument("--dpo-passes", type=float, default=2.0, help="passes over the pairs")
    g.add_argument("--dpo-train-prompts", type=int, default=2500)
    g.add_argument("--dpo-heldout-prompts", type=int, default=500)
    g.add_argument(
        "--dpo-work", type=Path, default=Path(tempfile.gettempdir()) / "textenv_dpo_bench"
    )


def quick(args: argparse.Namespace) -> None:
    """``--quick``: a smoke run's sizes."""
    args.dpo_pairs, args.dpo_train_prompts, args.dpo_heldout_prompts = 200, 100, 50
    args.dpo_passes = 1.0
    args.dpo_work = args.dpo_work.with_name(args.dpo_work.name + "_quick")


def pairs_for(task: str, module: str, args: argparse.Namespace) -> dict[str, Path]:
    """The training pairs and the held-out gold-ordered pairs of ``task`` (made once, cached in
    ``--dpo-work``)."""
    from textenv.preferences import SimulatedLabeller, sample_completions, write_jsonl

    t = importlib.import_module(module)
    spec = t.TASK
    n, temp = args.dpo_pairs, LABEL_T[task]
    paths = {
        "train": args.dpo_work / f"{task}_train_p{args.dpo_train_prompts}_T{temp}_n{n}.jsonl",
        "heldout": args.dpo_work / f"{task}_heldout_p{args.dpo_heldout_prompts}_T0.jsonl",
    }
    for which, path in paths.items():
        if path.is_file():
            continue
        if which == "train":
            split, prompts, temperature, seed = "train", args.dpo_train_prompts, temp, 0
        else:
            split, prompts, temperature, seed = "eval", args.dpo_heldout_prompts, 0.0, 1000
        rows = sample_completions(
            spec.reference,
            spec.prompts,
            k=4,
            max_new_tokens=spec.max_new_tokens,
            max_prompt_tokens=spec.max_prompt_tokens,
            seed=seed,
            split=split,
            n_prompts=prompts,
            batch_size=256,
        )
        labeller = SimulatedLabeller(t.gold_score, temperature=temperature, ties="skip", seed=seed)
        pool = list(labeller.label_samples(rows, mode="pairs").items)
        if which == "train":
            if n > len(pool):
                raise ValueError(
                    f"only {len(pool)} labelled pairs from {prompts} prompts; raise "
                    f"--dpo-train-prompts for --dpo-pairs {n}"
                )
            order = np.random.default_rng([0, 17]).permutation(len(pool))
            pool = [pool[i] for i in order[:n]]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(path, pool)
        print(f"[{task} pairs] {which}: {len(pool)} pairs -> {path}", flush=True)
    return paths


def run_preference(
    algo: str,
    task: str,
    seed: int,
    beta: float,
    args: argparse.Namespace,
    *,
    env_id: str,
    module: str,
    env_kwargs: dict[str, Any],
    evaluate_policy: Any,
    targets: Any,
    progress: Any,
) -> dict:
    """One DPO / IPO run; the record has the same shape as the RL runs' (``curve``, ...)."""
    from agents import DPO, DPOConfig

    paths = pairs_for(task, module, args)
    config = DPOConfig(
        env_id=env_id,
        env_kwargs=env_kwargs,
        data=str(paths["train"]),
        loss_type=DPO_LOSSES[algo],
        beta=beta,
        seed=seed,
        eval_every=0,
        progress=False,
        **TRAIN,
    )
    agent = DPO(config)
    budget = int(np.ceil(args.dpo_passes * agent.tokens_per_pass))
    clock = CPUClock()
    curve = []
    for _ in learn_to_checkpoints(agent, budget, targets(budget, args), clock):
        curve.append(
            {
                "tokens": agent.tokens_seen,  # completion tokens trained on
                "passes": agent.iteration * config.batch_size / len(agent.train_data),
                "iteration": agent.iteration,
                "train_wall_s": clock.wall,
                "train_cpu_s": clock.cpu,
                **evaluate_policy(agent.policy.model, task, args),
            }
        )
        progress(task, algo, seed, beta, curve[-1])
    held = agent.evaluate_pairs(str(paths["heldout"]))
    train_acc = agent.history[-1]["dpo/accuracy"] if agent.history else float("nan")
    agent.close()
    settings = {k: v for k, v in config.to_dict().items() if k not in ("log_dir", "progress")}
    return {
        "curve": curve,
        "others_cpu_share": clock.others_share,
        "settings": {
            **settings,
            "passes": args.dpo_passes,
            "pairs": len(agent.train_data),
            "label_temperature": LABEL_T[task],
            "train_prompts": args.dpo_train_prompts,
        },
        "heldout_accuracy": held["accuracy"],
        "heldout_accuracy_sem": held["accuracy_sem"],
        "heldout_pairs": int(held["n"]),
        "train_accuracy_last": train_acc,
    }


# --------------------------------------------------------------------------- comparison report


def _ms(values: list[float]) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    return [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")]


def _best_at(points: list[dict], kl: float, gold: str = "gold_score") -> dict | None:
    ok = [p for p in points if p["kl"] <= kl]
    return max(ok, key=lambda p: p[gold]) if ok else None


def comparison(results: Path) -> dict[str, Any]:
    """DPO / IPO (``compare_algorithms_dpo.json``) against PPO and best-of-n on the reward
    model of the same number of pairs (``overoptimization*.json``) and TRL
    (``dpo_vs_trl.json``): the numbers the READMEs quote, and a Markdown table."""
    import json

    runs = json.loads((results / "compare_algorithms_dpo.json").read_text())["runs"]
    out: dict[str, Any] = {}
    for task in ("sort", "sentiment"):
        recs = [r for r in runs.values() if r["task"] == task]
        if not recs:
            continue
        row: dict[str, Any] = {"reference_gold": float(recs[0]["curve"][0]["gold_score"])}
        n_pairs = recs[0]["settings"]["pairs"]
        for algo in DPO_LOSSES:
            mine = [r for r in recs if r["algo"] == algo]
            seeds = sorted({r["seed"] for r in mine})
            best = []
            for s in seeds:
                pts = [{**p, "beta": r["beta"]} for r in mine if r["seed"] == s for p in r["curve"]]
                best.append(_best_at(pts, 1.0))
            betas = sorted({r["beta"] for r in mine})
            acc = [
                float(np.mean([r["heldout_accuracy"] for r in mine if r["beta"] == b]))
                for b in betas
            ]
            row[algo] = {
                "seeds": len(seeds),
                "gold_at_kl_1": _ms([b["gold_score"] for b in best]),
                "kl_at_best": float(np.mean([b["kl"] for b in best])),
                "beta_at_best": sorted({b["beta"] for b in best}),
                "heldout_accuracy_range": [min(acc), max(acc)],
                "heldout_pairs": mine[0]["heldout_pairs"],
                "train_cpu_s": float(np.mean([r["curve"][-1]["train_cpu_s"] for r in mine])),
            }
        name = "overoptimization.json" if task == "sort" else f"overoptimization_{task}.json"
        if (results / name).is_file():
            oo = json.loads((results / name).read_text())
            rm = oo["rms"].get(str(n_pairs))
            if rm is not None:
                rl = [r for r in oo["rl"].values() if r["n_pairs"] == n_pairs]
                ppo: dict[str, Any] = {"seeds": len(rl), "kl_coef": oo["settings"].get("kl_coef")}
                for x in (1.0, 3.0, 10.0):
                    b = [_best_at(r["curve"], x) for r in rl]
                    ppo[f"gold_at_kl_{x:g}"] = _ms([p["gold_score"] for p in b if p is not None])
                peaks = [max(r["curve"], key=lambda p: p["gold_score"]) for r in rl]
                ppo["peak_gold"] = _ms([p["gold_score"] for p in peaks])
                ppo["peak_kl"] = float(np.mean([p["kl"] for p in peaks]))
                ppo["train_cpu_s"] = float(np.mean([r["curve"][-1]["train_cpu_s"] for r in rl]))
                bon = [
                    {"n": p["n"], "kl": p["kl_estimate"], "gold_score": p["gold"]}
                    for p in oo["bon"][str(n_pairs)]["points"]
                ]
                row["rm"] = {
                    "pairs": n_pairs,
                    "acc_vs_gold": rm["acc_vs_gold"],
                    "train_cpu_s": rm["train_cpu_s"],
                    "ppo": ppo,
                    "bon_at_kl_1": _best_at(bon, 1.0),
                    "bon_at_kl_2": _best_at(bon, 2.0),
                }
        out[task] = row
    trl = results / "dpo_vs_trl.json"
    if trl.is_file():
        sides = json.loads(trl.read_text())["sides"]
        if {"ours", "trl"} <= set(sides):
            speed = {k: sides[k]["completion_tokens"] / sides[k]["train_wall_s"] for k in sides}
            cpu = {k: sides[k]["completion_tokens"] / sides[k]["train_cpu_s"] for k in sides}
            out["trl"] = {
                "speedup_wall": speed["ours"] / speed["trl"],
                "speedup_cpu": cpu["ours"] / cpu["trl"],
            }
    out["table_md"] = _table(out)
    return out


def _table(c: dict[str, Any]) -> str:
    def pm(ms: list[float]) -> str:
        return f"{ms[0]:.3f}" + ("" if np.isnan(ms[1]) else f" ± {ms[1]:.3f}")

    lines = [
        "| task | method | best gold at KL ≤ 1 (β, KL) | held-out pair accuracy | train CPU s |",
        "|---|---|---|---|---:|",
    ]
    labels = {"dpo": "DPO", "ipo": "IPO"}
    for task, env in (("sort", "Sort-v0"), ("sentiment", "Sentiment-v0")):
        row = c.get(task)
        if row is None:
            continue
        first = f"{env} (ref. {row['reference_gold']:.3f})"
        for algo in DPO_LOSSES:
            a = row[algo]
            betas = "/".join(f"{b:g}" for b in a["beta_at_best"])
            lo, hi = a["heldout_accuracy_range"]
            lines.append(
                f"| {first} | {labels[algo]}, {a['seeds']} seed{'s' * (a['seeds'] > 1)} | "
                f"{pm(a['gold_at_kl_1'])} (β {betas}, KL {a['kl_at_best']:.2f}) | "
                f"{lo:.3f}–{hi:.3f} over β ({a['heldout_pairs']} pairs) | {a['train_cpu_s']:.1f} |"
            )
            first = ""
        rm = row.get("rm")
        if rm:
            p = rm["ppo"]
            lines.append(
                f"| | PPO on the {rm['pairs']}-pair RM (β = {p['kl_coef']:g}, {p['seeds']} "
                f"seed{'s' * (p['seeds'] > 1)}) | {pm(p['gold_at_kl_1'])}; {pm(p['gold_at_kl_3'])} "
                f"at KL ≤ 3; peak {pm(p['peak_gold'])} at KL {p['peak_kl']:.1f} | "
                f"RM: {rm['acc_vs_gold']:.3f} | {p['train_cpu_s']:.0f} (+ {rm['train_cpu_s']:.0f} RM) |"
            )
            b = rm["bon_at_kl_1"]
            lines.append(
                f"| | best-of-n by the {rm['pairs']}-pair RM | {b['gold_score']:.3f} "
                f"(n = {b['n']}, KL {b['kl']:.2f}) | | — |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    """``python benchmarks/compare_dpo.py``: write ``results/dpo_comparison.json`` (+ ``.md``)
    from the results files the benchmarks wrote."""
    from common import ResultsFile

    results = Path(__file__).resolve().parent / "results"
    res = ResultsFile(results / "dpo_comparison.json", {})
    res.data.clear()
    res.data.update(comparison(results))
    res.save()
    (results / "dpo_comparison.md").write_text(res.data["table_md"])
    print(res.data["table_md"])


if __name__ == "__main__":
    main()
