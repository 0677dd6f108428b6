"""``textenv run``: the whole RLHF loop on a built-in task, offline, in minutes on a CPU.

Stages (each writes its outputs into the run folder and a ``done.json`` marker, so
``--resume RUN_DIR`` skips what is finished and the policy stage continues from its last
checkpoint):

1. ``samples``      K completions per train prompt from the base LM (the task's reference);
2. ``preferences``  a simulated labeller (the task's gold scorer + Bradley–Terry noise) compares
                    them (Gao et al. 2022); ties are skipped and counted;
3. ``reward_model`` a reward model fitted to those preferences (a fused head on the reference's
                    trunk by default, or a fine-tuned backbone), with its held-out accuracy;
4. ``policy``       RL (PPO by default; GRPO, RLOO) against the env whose reward is the learned
                    RM minus β·KL; every ``eval_every`` iterations the policy is evaluated on
                    held-out prompts (proxy RM score, gold score, KL) and checkpointed;

With ``algo="dpo"`` DPO takes the place of stages 3 and 4: no reward model is fitted (the stage
only records that), and the policy is trained by :class:`agents.DPO` on the same preference
pairs (the split the RM would use: 90% to train, the prompts of the other 10% held out for its
pair accuracy), with DPO's β = ``kl_coef`` (the KL coefficient of the objective DPO solves in
closed form), ``num_envs`` pairs per iteration. It is evaluated exactly like the RL policies;
the env's reward in the evaluations is the task's own registered one (the "env reward" row),
since there is no learned RM.
5. ``evaluation``   base LM vs trained policy on the eval prompts (mean ± standard error),
                    sample texts, and a plot of gold and proxy reward against KL.

The agents are imported lazily: ``textenv`` itself never depends on ``agents``.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from agents import ALGORITHMS
from agents.base import is_checkpoint
from agents.evaluation import evaluate
from textenv.files import atomic_write_bytes, atomic_write_dir, atomic_write_json
from textenv.preferences import (
    Ranking,
    SimulatedLabeller,
    read_preferences,
    read_rankings,
    sample_completions,
    write_jsonl,
)
from textenv.progress import progress
from textenv.tasks import TASKS, TaskSpec
from textenv.training.reward_model import RewardModelConfig, split_by_prompt, train_reward
from textenv.validation import is_int, is_real

__all__ = ["RunConfig", "run"]

# The built-in tasks the main job runs on: those with a gold scorer for the simulated labeller.
PIPELINE_TASKS = {name: spec for name, spec in TASKS.items() if spec.has_gold and name != "tiny"}
STAGES = ("samples", "preferences", "reward_model", "policy", "evaluation")


@dataclass
class RunConfig:
    """Everything a run depends on; saved as ``config.json`` in the run folder.

    Attributes:
        task: built-in task (``sentiment`` or ``sort``).
        algo: a name in :data:`agents.ALGORITHMS`.
        seed: seeds every stage.
        n_prompts: train prompts sampled for labelling; ``k`` completions each.
        label_temperature: Bradley–Terry noise of the simulated labeller (in gold-score units).
        rm: ``fused`` (linear head on the frozen reference trunk: seconds to train, and the env
            gets log ρ and the reward from one forward) or ``backbone`` (fine-tuned copy of the
            base LM with a score head).
        rm_epochs: epochs for the ``backbone`` RM.
        iterations: RL iterations of ``num_envs`` episodes each.
        lr, kl_coef: policy learning rate and the env's β.
        eval_every: RL iterations between evaluations (points of the reward-vs-KL plot).
        eval_prompts: held-out prompts per evaluation (the final table uses ``2×``).
    """

    task: str = "sentiment"
    algo: str = "ppo"
    seed: int = 0
    n_prompts: int = 2048
    k: int = 4
    label_temperature: float = 0.1
    rm: str = "backbone"
    rm_epochs: int = 2
    iterations: int = 100
    num_envs: int = 64
    lr: float = 1e-4
    kl_coef: float = 0.05
    eval_every: int = 10
    eval_prompts: int = 128

    @classmethod
    def quick(cls, **overrides: Any) -> RunConfig:
        """About 10 s: small data, a few RL iterations (a smoke test of every stage; the tests run it).

        On Sort-v0 unless ``task`` is given: its ~190 pairs teach a reward model that beats chance
        on held-out pairs (0.75), while Sentiment-v0's VADER-labelled prose needs thousands of
        pairs for that (``--quick --task sentiment`` runs every stage, but its reward model is at
        chance and its policy climbs a proxy that carries no preference)."""
        base = dict(
            task="sort",
            n_prompts=96,
            k=4,
            rm_epochs=1,
            iterations=6,
            num_envs=32,
            eval_every=3,
            eval_prompts=32,
        )
        return cls(**{**base, **overrides})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field (bools are not integers or numbers)."""
        for name in (
            "seed",
            "n_prompts",
            "k",
            "rm_epochs",
            "iterations",
            "num_envs",
            "eval_every",
            "eval_prompts",
        ):
            value = getattr(self, name)
            if not is_int(value):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("label_temperature", "lr", "kl_coef"):
            value = getattr(self, name)
            if not is_real(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")
        if self.rm_epochs < 1:
            raise ValueError(f"rm_epochs must be ≥ 1, got {self.rm_epochs}")
        if self.task not in PIPELINE_TASKS:
            raise ValueError(f"task must be one of {sorted(PIPELINE_TASKS)}, got {self.task!r}")
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {self.algo!r}")
        if self.rm not in ("fused", "backbone"):
            raise ValueError(f"rm must be 'fused' or 'backbone', got {self.rm!r}")
        for name in ("n_prompts", "iterations", "num_envs", "eval_every", "eval_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.k < 2:
            raise ValueError(f"k must be ≥ 2 to compare completions, got {self.k}")

    @property
    def env_id(self) -> str:
        return PIPELINE_TASKS[self.task].env_id


# --------------------------------------------------------------------------- helpers


def _task(config: RunConfig) -> TaskSpec:
    return PIPELINE_TASKS[config.task]


def _sample_reference(
    config: RunConfig, *, seed: int, split: str, n_prompts: int, progress: bool = False
) -> list[Ranking]:
    """``config.k`` completions of the task's reference LM per prompt of ``split`` (the samples
    stage draws the train split; held-out checks draw the eval split the same way)."""
    task = _task(config)
    return sample_completions(
        task["reference"],
        task["prompts"],
        k=config.k,
        max_new_tokens=task["max_new_tokens"],
        max_prompt_tokens=task["max_prompt_tokens"],
        seed=seed,
        split=split,
        n_prompts=n_prompts,
        progress=progress,
    )


def _labeller(config: RunConfig, *, seed: int) -> SimulatedLabeller:
    """The run's simulated labeller: the task's gold reward at ``config.label_temperature``."""
    return SimulatedLabeller(
        _task(config)["gold"], temperature=config.label_temperature, ties="skip", seed=seed
    )


def _done(run_dir: Path, stage: str) -> dict[str, Any] | None:
    marker = run_dir / stage / "done.json"
    return json.loads(marker.read_text()) if marker.is_file() else None


def _finish(run_dir: Path, stage: str, summary: dict[str, Any], line: str) -> dict[str, Any]:
    atomic_write_json(run_dir / stage / "done.json", summary)
    print(f"[{stage}] {line}", flush=True)
    return summary


def _stat(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


# --------------------------------------------------------------------------- stages


def stage_samples(config: RunConfig, run_dir: Path) -> dict[str, Any]:

    task = _task(config)
    started = time.perf_counter()
    rows = _sample_reference(
        config, seed=config.seed, split="train", n_prompts=config.n_prompts, progress=True
    )
    write_jsonl(run_dir / "samples" / "samples.jsonl", rows)
    n = sum(len(r.completions) for r in rows)
    return _finish(
        run_dir,
        "samples",
        {"prompts": len(rows), "completions": n, "time_s": time.perf_counter() - started},
        f"{n} completions of {len(rows)} train prompts from {task['reference']}",
    )


def stage_preferences(config: RunConfig, run_dir: Path) -> dict[str, Any]:

    rows = read_rankings(run_dir / "samples" / "samples.jsonl")
    labeller = _labeller(config, seed=config.seed)
    result = labeller.label_samples(rows, mode="pairs")
    write_jsonl(run_dir / "preferences" / "preferences.jsonl", result.items)
    summary = result.summary()
    return _finish(
        run_dir,
        "preferences",
        summary,
        f"{summary['labelled']} pairs labelled by the gold scorer (T={config.label_temperature}), "
        f"{summary['skipped_ties']} ties skipped, noise ceiling {summary['noise_ceiling']:.3f}",
    )


def stage_reward_model(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    if config.algo == "dpo":
        return _finish(
            run_dir,
            "reward_model",
            {"kind": "none", "val_accuracy": None, "time_s": 0.0},
            "none: DPO trains on the preference pairs directly",
        )
    task = _task(config)
    pairs = run_dir / "preferences" / "preferences.jsonl"
    out = run_dir / "reward_model" / "rm"
    started = time.perf_counter()
    rm_config = RewardModelConfig(
        kind=config.rm,  # type: ignore[arg-type]
        backbone=task["reference"],
        epochs=config.rm_epochs if config.rm == "backbone" else None,
        seed=config.seed,
    )
    metrics = train_reward(pairs, out, rm_config)
    accuracy = metrics["val_accuracy"]
    summary = {"kind": config.rm, "val_accuracy": accuracy, "time_s": time.perf_counter() - started}
    return _finish(
        run_dir,
        "reward_model",
        summary,
        f"{config.rm} reward model: accuracy {accuracy:.3f} on held-out preference pairs "
        f"({metrics['n_val']}) ({summary['time_s']:.0f} s)",
    )


def _env_kwargs(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    if config.algo == "dpo":  # no learned RM: the env keeps the task's own reward
        return {"kl_coef": config.kl_coef}
    return {"reward": str(run_dir / "reward_model" / "rm"), "kl_coef": config.kl_coef}


def _dpo_settings(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """DPO's data (the RM's train / held-out split of the pairs, written once) and settings."""
    folder = run_dir / "policy" / "pairs"
    paths = {"data": folder / "train.jsonl", "val_data": folder / "val.jsonl"}
    if not paths["data"].is_file():
        pairs = read_preferences(run_dir / "preferences" / "preferences.jsonl")
        train, val = split_by_prompt(pairs, RewardModelConfig.val_fraction, config.seed)
        write_jsonl(paths["val_data"], val)
        write_jsonl(paths["data"], train)
    settings: dict[str, Any] = {k: str(v) for k, v in paths.items()}
    if not read_preferences(paths["val_data"]):
        settings["val_data"] = None
    mb = math.gcd(32, config.num_envs)
    return {**settings, "beta": config.kl_coef, "batch_size": config.num_envs, "eval_every": 0,
            "minibatch_size": mb}  # fmt: skip


def stage_policy(config: RunConfig, run_dir: Path) -> dict[str, Any]:

    agent_cls, config_cls = ALGORITHMS[config.algo]
    stage_dir = run_dir / "policy"
    checkpoint = stage_dir / "checkpoint"
    curve_path = stage_dir / "curve.json"
    env_kwargs = _env_kwargs(config, run_dir)
    if is_checkpoint(checkpoint):  # also the previous one a killed save left
        agent = agent_cls.load(
            checkpoint, progress=False, env_kwargs=env_kwargs, log_dir=str(stage_dir / "logs")
        )
        curve = json.loads(curve_path.read_text()) if curve_path.is_file() else []
        curve = [p for p in curve if p["iteration"] <= agent.iteration]
        print(f"[policy] resuming from iteration {agent.iteration}", flush=True)
    else:
        extra = {"group_size": 8} if config.algo == "grpo" else {}
        if config.algo == "dpo":
            extra = _dpo_settings(config, run_dir)
        agent = agent_cls(
            config_cls(
                env_id=config.env_id,
                env_kwargs=env_kwargs,
                num_envs=config.num_envs,
                lr=config.lr,
                seed=config.seed,
                log_dir=str(stage_dir / "logs"),
                progress=False,
                **extra,
            )
        )
        curve = []

    def point() -> dict[str, Any]:
        ev = evaluate(
            agent.policy.model,
            config.env_id,
            n_prompts=config.eval_prompts,
            seed=config.seed + 1,
            **env_kwargs,
        )
        return {"iteration": agent.iteration, "tokens": agent.tokens_seen, **ev.as_dict()}

    if not curve:  # a fresh start: checkpoint 0, so the curve's first point is never lost
        curve.append(point())
        agent.save(checkpoint)
        atomic_write_json(curve_path, curve)
    elif curve[-1]["iteration"] < agent.iteration:  # killed between a checkpoint and its point
        curve.append(point())
        atomic_write_json(curve_path, curve)
    started = time.perf_counter()
    bar = progress(
        config.iterations, initial=agent.iteration, desc=f"policy ({config.algo})", unit="iter"
    )
    while agent.iteration < config.iterations:
        chunk = min(config.eval_every, config.iterations - agent.iteration)
        agent.learn(10**12, iterations=chunk)
        bar.update(chunk)
        curve.append(point())
        last = curve[-1]
        bar.set_postfix(
            gold=f"{last['gold_score']['mean']:+.3f}",
            proxy=f"{last['rm_score']['mean']:+.3f}",
            kl=f"{last['kl']['mean']:.2f}",
        )
        agent.save(checkpoint)
        atomic_write_json(curve_path, curve)
    bar.close()
    atomic_write_json(curve_path, curve)

    def write_final(folder: Path) -> None:
        agent.policy.model.save_pretrained(folder)
        agent.policy.tokenizer.save_pretrained(folder)

    atomic_write_dir(stage_dir / "final", write_final)
    last = curve[-1]
    pairs: dict[str, Any] = {}
    if config.algo == "dpo" and agent.val_data is not None:  # its implicit reward's accuracy
        pairs = {"val_pair_accuracy": agent.evaluate_pairs()["accuracy"]}
    agent.close()
    return _finish(
        run_dir,
        "policy",
        {
            "iterations": agent.iteration,
            "tokens": agent.tokens_seen,
            "time_s": time.perf_counter() - started,
            **pairs,
        },
        f"{agent.iteration} iterations, {agent.tokens_seen} tokens: gold "
        f"{last['gold_score']['mean']:+.3f}, proxy {last['rm_score']['mean']:+.3f}, "
        f"KL {last['kl']['mean']:.2f} on the held-out eval prompts ({config.eval_prompts}, "
        f"seed {config.seed + 1}; the evaluation stage re-measures on {2 * config.eval_prompts})",
    )


def _plot(curve: list[dict[str, Any]], path: Path, title: str) -> None:
    """Gold and proxy against KL on their own panels (their scales differ several-fold), each
    a trajectory in training order (arrows from one evaluation to the next) with mean ± s.e.
    bars on both axes; the gold peak is marked, so where over-optimisation starts (the proxy
    still rising while gold turns down) shows at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = np.array([p["kl"]["mean"] for p in curve])
    kl_sem = np.array([p["kl"]["sem"] for p in curve])
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    panels = (("gold_score", "gold score", "C1"), ("rm_score", "proxy RM score", "C0"))
    for ax, (key, label, color) in zip(axes, panels, strict=True):
        mean = np.array([p[key]["mean"] for p in curve])
        sem = np.array([p[key]["sem"] for p in curve])
        ax.errorbar(kl, mean, xerr=kl_sem, yerr=sem, fmt="o", ms=4, color=color, capsize=2)
        for i in range(len(curve) - 1):  # training order: iteration i → i + 1
            ax.annotate(
                "",
                xy=(kl[i + 1], mean[i + 1]),
                xytext=(kl[i], mean[i]),
                arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.7},
            )
        for i in (0, len(curve) - 1):
            ax.annotate(
                f"it {curve[i]['iteration']}", (kl[i], mean[i]), fontsize=7,
                xytext=(4, -10), textcoords="offset points",
            )  # fmt: skip
        ax.set_ylabel(f"{label}\n(mean ± s.e.)")
        ax.grid(alpha=0.3)
    gold = np.array([p["gold_score"]["mean"] for p in curve])
    best = int(np.argmax(gold))
    for ax in axes:
        ax.axvline(kl[best], color="grey", ls="--", lw=1)
    axes[0].annotate(
        f"gold peak (it {curve[best]['iteration']})", (kl[best], gold[best]), fontsize=8,
        xytext=(6, 6), textcoords="offset points",
    )  # fmt: skip
    axes[1].set_xlabel("KL(π ‖ ρ) per episode, nats (held-out prompts)")
    axes[0].set_title(title)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, image.getvalue())


def stage_evaluation(config: RunConfig, run_dir: Path) -> dict[str, Any]:

    task = _task(config)
    env_kwargs = _env_kwargs(config, run_dir)
    n = 2 * config.eval_prompts
    seed = config.seed + 2
    before = evaluate(task["reference"], config.env_id, n_prompts=n, seed=seed, **env_kwargs)
    after = evaluate(
        str(run_dir / "policy" / "final"), config.env_id, n_prompts=n, seed=seed, **env_kwargs
    )
    rows = {}
    proxy = "env reward" if config.algo == "dpo" else "proxy RM"
    for key, label in (("rm_score", proxy), ("gold_score", "gold"), ("kl", "KL")):
        rows[label] = {
            "before": before.metrics[key].__dict__,
            "after": after.metrics[key].__dict__,
        }
    gold_gain = after.metrics["gold_score"].mean - before.metrics["gold_score"].mean
    gain_se = float(np.hypot(after.metrics["gold_score"].sem, before.metrics["gold_score"].sem))
    samples = [
        {"prompt": p, "before": b, "after": a}
        for p, b, a in list(zip(before.prompts, before.texts, after.texts))[:4]
    ]
    curve = json.loads((run_dir / "policy" / "curve.json").read_text())
    plot = run_dir / "evaluation" / "reward_vs_kl.png"
    how = "on the preference pairs" if config.algo == "dpo" else "against a learned RM"
    _plot(curve, plot, f"{config.env_id}: {config.algo.upper()} {how}")
    summary = {
        "table": rows,
        "gold_gain": gold_gain,
        "gold_gain_se": gain_se,
        "gold_gain_in_se": gold_gain / gain_se if gain_se > 0 else float("inf"),
        "samples": samples,
        "plot": str(plot),
        "n_prompts": n,
    }
    lines = [
        f"held-out eval prompts ({n}, seed {seed}), mean ± s.e.:",
        f"{'':10s} {'base LM':>18s} {'trained':>18s}",
    ]
    for label, r in rows.items():
        b, a = r["before"], r["after"]
        lines.append(
            f"{label:10s} {b['mean']:+9.3f} ± {b['sem']:.3f}  {a['mean']:+9.3f} ± {a['sem']:.3f}"
        )
    (run_dir / "evaluation").mkdir(parents=True, exist_ok=True)
    table = "\n".join(lines)
    print(table)
    for s in samples:
        print(
            f"  prompt : {s['prompt']!r}\n    before: {s['before']!r}\n    after : {s['after']!r}"
        )
    return _finish(
        run_dir,
        "evaluation",
        summary,
        f"gold {gold_gain:+.3f} ({summary['gold_gain_in_se']:.1f} s.e.) on {n} held-out prompts; "
        f"plot {plot}",
    )


STAGE_FUNCTIONS = {
    "samples": stage_samples,
    "preferences": stage_preferences,
    "reward_model": stage_reward_model,
    "policy": stage_policy,
    "evaluation": stage_evaluation,
}


def run(config: RunConfig, run_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) every stage; returns each stage's summary."""

    config.validate()
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.is_file():
            raise FileNotFoundError(f"no run to resume at {run_dir} (missing config.json)")
        saved = json.loads(config_path.read_text())
        config = RunConfig(
            **{k: v for k, v in saved.items() if k in {f.name for f in fields(RunConfig)}}
        )
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} is not empty; pass --resume to continue that run")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, asdict(config))
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    summaries = {}
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # per-save "Writing model shards" bars would bury ours
    try:
        for stage in STAGES:
            done = _done(run_dir, stage)
            if done is not None:
                print(f"[{stage}] done earlier, skipped", flush=True)
                summaries[stage] = done
                continue
            (run_dir / stage).mkdir(parents=True, exist_ok=True)
            summaries[stage] = STAGE_FUNCTIONS[stage](config, run_dir)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    elapsed = time.perf_counter() - started
    print(f"run folder: {run_dir.resolve()}  ({elapsed:.0f} s this session)")
    return summaries
