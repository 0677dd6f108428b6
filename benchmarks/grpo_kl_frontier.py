"""``agents.GRPO`` against TRL's GRPO at matched KL: seeds and a β sweep, compared on the
reward–KL plane.

The runs are ``trl_side_by_side.py`` GRPO runs (same model, prompts, VADER reward, 4 prompts × 8
completions of ≤ 24 tokens, lr 5e-5, fp32, 300 steps, 1 thread each) under other seeds and β,
stored in one results file, ``benchmarks/results/grpo_vs_trl_seeds.json``. Produce them with
(each side at seeds 0–2 with β = 0.05, and seed 0 with β ∈ {0.02, 0.1, 0.2}; ``ours`` also
needs the env's ``kl_coef`` set to the same β so that its return uses it)::

    OUT=benchmarks/results/grpo_vs_trl_seeds.json
    for s in 0 1 2; do
      python benchmarks/trl_side_by_side.py --runs ours-grpo --name ours-grpo-s$s --steps 300 \\
          --overrides "{\\"seed\\": $s}" --out $OUT
      python benchmarks/trl_side_by_side.py --runs trl-grpo --name trl-grpo-s$s --steps 300 \\
          --overrides "{\\"seed\\": $s}" --out $OUT
    done
    EK='"env_kwargs": {"reward": "textenv.tasks.sentiment:gold_score", "gold": null,
        "max_new_tokens": 24, "temperature": 1.0, "kl_coef": '
    for b in 0.02 0.1 0.2; do
      python benchmarks/trl_side_by_side.py --runs ours-grpo --name ours-grpo-b$b --steps 300 \\
          --overrides "{\\"seed\\": 0, \\"beta\\": $b, $EK$b}}" --out $OUT
      python benchmarks/trl_side_by_side.py --runs trl-grpo --name trl-grpo-b$b --steps 300 \\
          --overrides "{\\"seed\\": 0, \\"beta\\": $b}" --out $OUT
    done
    python benchmarks/grpo_kl_frontier.py          # tables and plot from the results file

(Independent 1-thread runs: on a machine with many cores they can run side by side, each in its
own copy of the checkout with its own ``--out``, with ``BENCH_MAX_QUIET_WAIT=0``; merge the
``runs`` of the files afterwards.)

Two views of "at matched KL", both in ``results/grpo_kl_frontier.{json,md,png}``:

* **frontier**: each run's final reward and per-token k3 KL (means over the last 10% of steps);
  each side's points are averaged per β (the three seeds at β = 0.05) and joined in KL order;
  the reward of each side's frontier is read at the same KL levels (linear in log KL, only
  inside the KL range a side covers);
* **trajectory**: for each seed at β = 0.05, both sides' training trajectories (10-step moving
  means of reward and KL) read where each first reaches the same KL levels, mean ± s.d. over
  the seeds that reach it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import save_figure  # noqa: E402
from trl_side_by_side import SETTINGS, _smooth, reward_at_kl, summarise  # noqa: E402

RESULTS = HERE / "results"
SIDES = ("ours", "trl")
LABELS = {"ours": "agents.GRPO", "trl": "TRL GRPO"}
# KL levels (per-token k3, nats) at which the two sides are read.
LEVELS = (0.15, 0.3, 0.5, 1.0, 1.3, 2.0, 3.0)
TRAJECTORY_LEVELS = (0.25, 0.5, 0.75, 1.0, 1.25)


def _beta(rec: dict[str, Any]) -> float:
    """The run's β: its override, else the side-by-side's shared setting."""
    return float(rec.get("overrides", {}).get("beta", SETTINGS["beta"]))


def frontier_points(data: dict) -> dict[str, list[dict[str, Any]]]:
    """Per side: one point per β, (KL, reward) averaged over that β's seeds, in KL order."""
    rows = summarise(data)
    out: dict[str, list[dict[str, Any]]] = {}
    for side in SIDES:
        by_beta: dict[float, list[tuple[float, float]]] = {}
        for name, rec in data["runs"].items():
            if name.startswith(f"{side}-grpo"):
                by_beta.setdefault(_beta(rec), []).append(
                    (rows[name]["kl_end"], rows[name]["reward_end"])
                )
        pts = [
            {
                "beta": b,
                "seeds": len(v),
                "kl": float(np.mean([k for k, _ in v])),
                "reward": float(np.mean([r for _, r in v])),
                "reward_sd": float(np.std([r for _, r in v], ddof=1)) if len(v) > 1 else None,
                "kl_sd": float(np.std([k for k, _ in v], ddof=1)) if len(v) > 1 else None,
            }
            for b, v in by_beta.items()
        ]
        out[side] = sorted(pts, key=lambda p: p["kl"])
    return out


def read_frontier(points: list[dict[str, Any]], kl: float) -> float | None:
    """The frontier's reward at ``kl`` (linear in log KL between neighbouring points); None
    outside the KL range the points cover."""
    for a, b in zip(points, points[1:]):
        if a["kl"] <= kl <= b["kl"]:
            w = (math.log(kl) - math.log(a["kl"])) / (math.log(b["kl"]) - math.log(a["kl"]))
            return a["reward"] + w * (b["reward"] - a["reward"])
    return None


def trajectory_table(data: dict) -> dict[str, dict[str, Any]]:
    """Per KL level: each side's reward where its β = 0.05 training trajectory first reaches it,
    over the seeds (mean, s.d., n)."""
    table: dict[str, dict[str, Any]] = {}
    for level in TRAJECTORY_LEVELS:
        row: dict[str, Any] = {}
        for side in SIDES:
            vals = [
                reward_at_kl(rec["curve"], level)
                for name, rec in sorted(data["runs"].items())
                if name.startswith(f"{side}-grpo-s")
            ]
            vals = [v for v in vals if v is not None]
            row[side] = {
                "mean": float(np.mean(vals)) if vals else None,
                "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                "n": len(vals),
            }
        table[f"{level:g}"] = row
    return table


def markdown(front: dict, levels: dict, traj: dict, data: dict) -> str:
    def cell(v: float | None, sd: float | None = None) -> str:
        if v is None:
            return "—"
        return f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")

    lines = ["Final points (last 10% of 300 steps; β = 0.05: mean ± s.d. over 3 seeds):\n"]
    lines.append("| side | β | seeds | per-token k3 KL | reward |")
    lines.append("|---|---:|---:|---:|---:|")
    for side in SIDES:
        for p in front[side]:
            lines.append(
                f"| {LABELS[side]} | {p['beta']:g} | {p['seeds']} | {cell(p['kl'], p['kl_sd'])} "
                f"| {cell(p['reward'], p['reward_sd'])} |"
            )
    lines.append("\nReward on each side's frontier at matched KL (— = outside a side's range):\n")
    lines.append("| per-token k3 KL | " + " | ".join(LABELS[s] for s in SIDES) + " | ours − TRL |")
    lines.append("|---:|---:|---:|---:|")
    for k, row in levels.items():
        diff = (
            row["ours"] - row["trl"] if row["ours"] is not None and row["trl"] is not None else None
        )
        lines.append(
            f"| {k} | {cell(row['ours'])} | {cell(row['trl'])} | "
            + ("—" if diff is None else f"{diff:+.3f}")
            + " |"
        )
    lines.append(
        "\nAlong the β = 0.05 training trajectories (reward where the 10-step mean KL first "
        "reaches the level; mean ± s.d. over the seeds that reach it, n):\n"
    )
    lines.append("| per-token k3 KL | " + " | ".join(LABELS[s] for s in SIDES) + " |")
    lines.append("|---:|---:|---:|")
    for k, row in traj.items():
        lines.append(
            f"| {k} | "
            + " | ".join(f"{cell(row[s]['mean'], row[s]['sd'])} (n={row[s]['n']})" for s in SIDES)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(data: dict, front: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    colors = {"ours": "tab:blue", "trl": "tab:orange"}
    for side in SIDES:
        pts = front[side]
        axes[0].plot(
            [p["kl"] for p in pts],
            [p["reward"] for p in pts],
            "o-",
            color=colors[side],
            label=f"{LABELS[side]} (β = " + ", ".join(f"{p['beta']:g}" for p in pts) + ")",
        )
        for p in pts:
            if p["reward_sd"] is not None:
                axes[0].errorbar(
                    p["kl"], p["reward"], yerr=p["reward_sd"], xerr=p["kl_sd"], color=colors[side]
                )
        for name, rec in sorted(data["runs"].items()):
            if name.startswith(f"{side}-grpo-s"):
                c = rec["curve"]
                axes[1].plot(
                    _smooth([p["kl_k3_token"] for p in c]),
                    _smooth([p["reward"] for p in c]),
                    color=colors[side],
                    alpha=0.7,
                    label=f"{LABELS[side]}, seed {name[-1]}",
                )
    axes[0].set_xscale("log")
    axes[0].set_title("Frontier: final reward vs final KL (one point per β)")
    axes[1].set_title("Training trajectories at β = 0.05 (10-step means)")
    for ax in axes:
        ax.set_xlabel("per-token k3 KL (nats)")
        ax.set_ylabel("VADER reward")
    save_figure(fig, axes, path, title="GRPO: agents.GRPO vs TRL at matched KL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-file", type=Path, default=RESULTS / "grpo_vs_trl_seeds.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "grpo_kl_frontier.json")
    args = parser.parse_args()
    data = json.loads(args.runs_file.read_text())
    front = frontier_points(data)
    levels = {f"{k:g}": {side: read_frontier(front[side], k) for side in SIDES} for k in LEVELS}
    traj = trajectory_table(data)
    both = [v for v in levels.values() if v["ours"] is not None and v["trl"] is not None]
    summary = {
        "levels_compared": len(both),
        "min_diff": min(v["ours"] - v["trl"] for v in both) if both else None,
        "max_diff": max(v["ours"] - v["trl"] for v in both) if both else None,
        "mean_diff": float(np.mean([v["ours"] - v["trl"] for v in both])) if both else None,
    }
    table = markdown(front, levels, traj, data)
    out = {
        "source": str(args.runs_file.relative_to(HERE.parent)),
        "machine": data.get("machine"),
        "frontier": front,
        "at_matched_kl": levels,
        "trajectory": traj,
        "summary": summary,
        "table_md": table,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table)
    plot(data, front, args.out.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
