"""The env's throughput, this checkout against another version of the package, runs interleaved.

On a small shared machine one run of ``throughput.py`` moves by a few percent from process to
process, as much as a change to the env's bookkeeping does. This script runs the same benchmark
command (this checkout's ``throughput.py``, B = 64, 32 new tokens) alternately on two versions
of ``textenv`` — this checkout's and the one in ``--base`` (a checkout of another commit, e.g.
``git worktree add /tmp/base <commit>``), put first on ``PYTHONPATH`` — so that load hits both
alike, and keeps every run's file. Optionally ``--env-only`` runs too (the env's own CPU time
per rollout, no policy). Usage::

    git worktree add /tmp/base 9b97260
    python benchmarks/throughput_ab.py --base /tmp/base --runs 6 --threads 2 \\
        --out benchmarks/results/throughput_ab_2threads.json
    python benchmarks/throughput_ab.py --base /tmp/base --runs 4 --threads 1 --clock cpu \\
        --env-only --out benchmarks/results/throughput_ab_1thread.json

The output holds each run (its command, the textenv folder it imported, tokens/s and ratios),
per version the list, median and range of (b)/(s) and (b)/(d) and how many runs reached
(b)/(s) ≥ 0.95, and a markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET = 0.95  # (b)/(s), the performance issue's target at B = 64


def git_commit(folder: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    dirty = subprocess.run(
        # (results files written meanwhile are not a change to the code measured)
        [
            "git",
            "-C",
            str(folder),
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!benchmarks/results",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else "?"


def version_env(base: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if base is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(base), env.get("PYTHONPATH")]))
    return env


def imported_textenv(env: dict[str, str]) -> str:
    """The textenv folder a benchmark run imports (run from benchmarks/, as the script is)."""
    code = "import sys, textenv; print(sys.modules['textenv'].__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=HERE, capture_output=True, text=True, check=True
    )
    return str(Path(out.stdout.strip()).parent)


def run_once(args: argparse.Namespace, env: dict[str, str], out: Path, env_only: bool) -> dict:
    command = [
        sys.executable,
        str(HERE / "throughput.py"),
        "--batch",
        "64",
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
        "--wait-quiet",
        str(args.wait_quiet),
        "--out",
        str(out),
    ]
    command += ["--env-only"] if env_only else ["--clock", args.clock]
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    data = json.loads(out.read_text())
    shown = [Path(command[1]).relative_to(ROOT).as_posix(), *command[2:-2]]
    if env_only:
        return {"command": " ".join(shown), "ms_per_rollout": data["ms_per_rollout"]}
    row = data["rows"][0]
    return {
        "command": " ".join(shown),
        "tokens_per_s": row["tokens_per_s"],
        "ratios": row["ratios"],
        "others_cpu_share": row["others_cpu_share"],
    }


def summarize(runs: dict[str, list[dict]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for label, rows in runs.items():
        bs = [r["ratios"]["b/s"] for r in rows]
        bd = [r["ratios"]["b/d"] for r in rows]
        summary[label] = {
            "runs": len(rows),
            "b/s": {"median": statistics.median(bs), "min": min(bs), "max": max(bs)},
            "b/d": {"median": statistics.median(bd), "min": min(bd), "max": max(bd)},
            "runs_at_target": sum(x >= TARGET for x in bs),
            "b_tokens_per_s_median": statistics.median(
                r["tokens_per_s"]["b_native_env"] for r in rows
            ),
            "s_tokens_per_s_median": statistics.median(
                r["tokens_per_s"]["s_sampler_model_work"] for r in rows
            ),
        }
    return summary


def table(runs: dict[str, list[dict]], versions: dict[str, dict]) -> str:
    lines = [
        "| version | run | (s) tok/s | (b) tok/s | (d) tok/s | b/s | b/d | others' CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rows in runs.items():
        name = f"{label} ({versions[label]['commit']})"
        for i, r in enumerate(rows, 1):
            t = r["tokens_per_s"]
            lines.append(
                f"| {name} | {i} | {t['s_sampler_model_work']:.0f} | {t['b_native_env']:.0f} | "
                f"{t['d_naive_env']:.0f} | {r['ratios']['b/s']:.2f} | {r['ratios']['b/d']:.2f} | "
                f"{r['others_cpu_share']:.0%} |"
            )
    return "\n".join(lines)


def env_only_table(env_only: dict[str, list[dict]], versions: dict[str, dict]) -> str:
    parts = ["reset", "logprob_checks", "steps", "last_step"]
    lines = [
        "| version | " + " | ".join(f"{p} (ms)" for p in parts) + " |",
        "|---|" + "---:|" * len(parts),
    ]
    for label, rows in env_only.items():
        medians = [statistics.median(r["ms_per_rollout"][p] for r in rows) for p in parts]
        cells = " | ".join(f"{m:.2f}" for m in medians)
        lines.append(f"| {label} ({versions[label]['commit']}) | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="checkout of the other version")
    parser.add_argument("--runs", type=int, default=6, help="runs per version")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wait-quiet", type=float, default=30.0)
    parser.add_argument("--env-only", action="store_true", help="also the env-only runs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    base = args.base.resolve()
    versions = {
        "this": {"env": version_env(None), "commit": git_commit(ROOT)},
        "base": {"env": version_env(base), "commit": git_commit(base)},
    }
    for label, v in versions.items():
        v["textenv"] = imported_textenv(v["env"])
        print(f"{label}: textenv from {v['textenv']} ({v['commit']})", flush=True)
    if versions["this"]["textenv"] == versions["base"]["textenv"]:
        raise SystemExit("both versions import the same textenv: is --base a checkout?")

    runs: dict[str, list[dict]] = {label: [] for label in versions}
    env_only: dict[str, list[dict]] = {label: [] for label in versions}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for label, v in versions.items():
                row = run_once(args, v["env"], Path(tmp) / f"{label}{i}.json", env_only=False)
                runs[label].append(row)
                print(f"{label} run {i + 1}: b/s {row['ratios']['b/s']:.3f}", flush=True)
                if args.env_only:
                    part = run_once(args, v["env"], Path(tmp) / f"e{label}{i}.json", True)
                    env_only[label].append(part)
    result: dict[str, Any] = {
        "what": "throughput.py at B = 64, this checkout against --base, runs interleaved",
        "threads": args.threads,
        "clock": args.clock,
        "versions": {
            k: {"commit": v["commit"], "textenv": v["textenv"]} for k, v in versions.items()
        },
        "runs": runs,
        "summary": summarize(runs),
        "table_md": table(runs, versions),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.env_only:
        result["env_only"] = env_only
        result["env_only_table_md"] = env_only_table(env_only, versions)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for label, s in result["summary"].items():
        print(
            f"{label}: (b)/(s) median {s['b/s']['median']:.3f} "
            f"({s['b/s']['min']:.3f}-{s['b/s']['max']:.3f}), "
            f">= {TARGET} in {s['runs_at_target']} of {s['runs']}",
            flush=True,
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
