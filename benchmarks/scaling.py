"""Data-parallel scaling on CPU: N torchrun ranks × 1 thread against 1 process × 1 thread.

The same agent, env and *global* batch (``num_envs``, ``minibatch_size``) either way: one process
steps all B rows, or each of N gloo ranks steps B/N rows and DDP averages the gradients
(:mod:`agents.distributed`). The measure is generated tokens per second of training (rollout and
update) over ``--iterations`` timed iterations after one warm-up iteration, taken between two
barriers on rank 0. Runs alternate (1 process, N ranks, 1 process, ...) ``--repeats`` times and
the medians are compared, so a burst of load from other processes hits both alike; every run also
records the share of the machine's CPUs that *other* processes used while it ran (machine busy
time minus the CPU time of our own ranks). Results go to ``benchmarks/results/scaling.json``
(resumable: finished runs are kept) and a markdown table is printed. Usage::

    python benchmarks/scaling.py                        # GRPO and PPO on Sort-v0, B = 64
    python benchmarks/scaling.py --algos grpo --repeats 5 --iterations 6
    python benchmarks/scaling.py --env textenv/Sentiment-v0 --results results/scaling_sentiment.json
    python benchmarks/scaling.py --tiny                 # seconds: a smoke run (tests use it)
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ResultsFile, machine_busy_seconds, machine_info, wait_for_quiet  # noqa: E402

# The algorithms' own defaults except the batch; minibatch_size must split over the ranks.
CONFIGS = {
    "grpo": {"minibatch_size": 32, "group_size": 8, "epochs": 2},
    "ppo": {"minibatch_size": 16, "epochs": 4},
    "rloo": {"minibatch_size": 32, "k": 4, "epochs": 1},
}


# --------------------------------------------------------------------------- one run (a rank)


def worker(args: argparse.Namespace) -> None:
    """One rank of a run: build, warm up, time ``iterations`` iterations, rank 0 writes JSON."""
    import torch
    import torch.distributed as tdist

    from agents import ALGORITHMS
    from agents.distributed import init_distributed, shutdown

    torch.set_num_threads(args.threads)
    dist = init_distributed("cpu")
    agent_cls, config_cls = ALGORITHMS[args.algo]
    config = config_cls(
        env_id=args.env,
        env_kwargs=json.loads(args.env_kwargs),
        num_envs=args.num_envs,
        seed=args.seed,
        progress=False,
        **{**CONFIGS[args.algo], **json.loads(args.config)},
    )
    agent = agent_cls(config)
    agent.learn(10**12, iterations=1)  # warm-up: allocator, caches, DDP buckets
    dist.barrier()
    tokens0, busy0, cpu0, wall0 = (
        agent.tokens_seen,
        machine_busy_seconds(),
        time.process_time(),
        time.perf_counter(),
    )
    agent.learn(10**12, iterations=args.iterations)
    dist.barrier()
    wall = time.perf_counter() - wall0
    busy = machine_busy_seconds() - busy0
    cpu = torch.tensor([time.process_time() - cpu0], dtype=torch.float64)
    if dist.enabled:
        tdist.all_reduce(cpu)
    rows = agent.history[-args.iterations :]
    if dist.is_main:
        tokens = agent.tokens_seen - tokens0
        result = {
            "tokens": tokens,
            "wall_s": wall,
            "tokens_per_s": tokens / wall,
            "rollout_s": sum(r["time/rollout_s"] for r in rows),
            "update_s": sum(r["time/update_s"] for r in rows),
            "our_cpu_s": float(cpu),
            "others_share": max(0.0, busy - float(cpu)) / (wall * (os.cpu_count() or 1)),
        }
        Path(args.result_file).write_text(json.dumps(result))
    agent.close()
    shutdown()


# --------------------------------------------------------------------------- the driver


def run_once(args: argparse.Namespace, algo: str, nproc: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        worker_args = [
            "--worker", "--algo", algo, "--env", args.env, "--env-kwargs", args.env_kwargs,
            "--config", args.config, "--num-envs", str(args.num_envs),
            "--iterations", str(args.iterations), "--seed", str(args.seed),
            "--threads", str(args.threads), "--result-file", str(result_file),
        ]  # fmt: skip
        if nproc == 1:
            cmd = [sys.executable, __file__, *worker_args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            cmd += [f"--nproc_per_node={nproc}", __file__, *worker_args]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
            )
        return json.loads(result_file.read_text())


def summarise(runs: list[dict], algos: list[str], nproc: int) -> dict:
    out = {}
    for algo in algos:
        one = [r for r in runs if r["algo"] == algo and r["nproc"] == 1]
        many = [r for r in runs if r["algo"] == algo and r["nproc"] == nproc]
        if not one or not many:
            continue
        t1 = statistics.median(r["tokens_per_s"] for r in one)
        tn = statistics.median(r["tokens_per_s"] for r in many)
        pairs = [b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(one, many)]
        # CPU seconds of our own processes per 1000 tokens: what the work costs, whatever share
        # of the CPUs the scheduler gave us; N × (1-process cost / N-rank cost) is the speedup
        # N ranks would reach with a core each and nothing else running.
        c1 = statistics.median(1000 * r["our_cpu_s"] / r["tokens"] for r in one)
        cn = statistics.median(1000 * r["our_cpu_s"] / r["tokens"] for r in many)
        out[algo] = {
            "tokens_per_s_1": t1,
            f"tokens_per_s_{nproc}": tn,
            "speedup": tn / t1,
            "speedup_per_repeat": pairs,
            "others_share_mean": statistics.mean(r["others_share"] for r in one + many),
            "rollout_share_1": statistics.median(r["rollout_s"] / r["wall_s"] for r in one),
            "cpu_s_per_ktok_1": c1,
            f"cpu_s_per_ktok_{nproc}": cn,
            "speedup_from_cpu_time": nproc * c1 / cn,
            "repeats": min(len(one), len(many)),
        }
    return out


def table(summary: dict, nproc: int) -> str:
    lines = [
        f"| algo | 1 process (tok/s) | {nproc} ranks (tok/s) | speedup (median) | per repeat | "
        f"CPU s / 1k tok: 1 process, {nproc} ranks | speedup from CPU time | others' CPU share |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for algo, s in summary.items():
        per = ", ".join(f"{x:.2f}" for x in s["speedup_per_repeat"])
        lines.append(
            f"| {algo} | {s['tokens_per_s_1']:.0f} | {s[f'tokens_per_s_{nproc}']:.0f} | "
            f"{s['speedup']:.2f}× | {per} | {s['cpu_s_per_ktok_1']:.2f}, "
            f"{s[f'cpu_s_per_ktok_{nproc}']:.2f} | {s['speedup_from_cpu_time']:.2f}× | "
            f"{s['others_share_mean']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algos", nargs="+", default=["grpo", "ppo"], choices=sorted(CONFIGS))
    p.add_argument("--algo", default="grpo", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--env", default="textenv/Sort-v0")
    p.add_argument("--env-kwargs", default="{}")
    p.add_argument("--config", default="{}", help="JSON agent config fields on top of CONFIGS")
    p.add_argument("--num-envs", type=int, default=64, help="the global batch B")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process / rank")
    p.add_argument("--iterations", type=int, default=4, help="timed iterations per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait-quiet", type=float, default=120.0, help="max seconds to wait for quiet")
    p.add_argument("--results", default=str(HERE / "results" / "scaling.json"))
    p.add_argument("--fresh", action="store_true", help="ignore earlier runs in --results")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (no results file)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.tiny:
        args.num_envs, args.iterations, args.repeats, args.wait_quiet = 8, 1, 1, 0.0
        args.config = json.dumps({"minibatch_size": 4, "epochs": 1})
        args.results = ""
    settings = {
        k: getattr(args, k)
        for k in ("env", "env_kwargs", "config", "num_envs", "nproc", "threads", "iterations")
    }
    results = ResultsFile(Path(args.results), {}) if args.results else None
    if results is not None and args.fresh:
        results.data = {}
    data = results.data if results is not None else {}
    if data.get("settings") not in (None, settings):
        raise SystemExit(f"{args.results} holds runs with other settings; pass --fresh")
    data.update(settings=settings, machine=machine_info(), command=" ".join(sys.argv))
    runs: list[dict] = data.setdefault("runs", [])
    for rep in range(args.repeats):
        for algo in args.algos:
            for nproc in (1, args.nproc):
                if any(
                    r["repeat"] == rep and r["algo"] == algo and r["nproc"] == nproc for r in runs
                ):
                    continue
                quiet = wait_for_quiet(args.wait_quiet) if args.wait_quiet else None
                result = run_once(args, algo, nproc)
                result.update(repeat=rep, algo=algo, nproc=nproc, others_share_before=quiet)
                runs.append(result)
                print(
                    f"repeat {rep} {algo} nproc={nproc}: {result['tokens_per_s']:.0f} tok/s "
                    f"(others {result['others_share']:.0%})",
                    flush=True,
                )
                data["summary"] = summarise(runs, args.algos, args.nproc)
                if results is not None:
                    results.save()
    summary = summarise(runs, args.algos, args.nproc)
    print(table(summary, args.nproc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
