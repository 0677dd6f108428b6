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
from common import CPUClock

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
    for target in targets(budget, args):
        clock.start()
        while agent.tokens_seen < target:
            agent.learn(budget, iterations=1)
        clock.stop()
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
