"""``textenv run``: the whole RLHF loop on a built-in task (see :mod:`textenv.pipeline`)."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

from agents import ALGORITHMS
from textenv.pipeline import PIPELINE_TASKS, RunConfig, run


def _auto_threads() -> int:
    """Torch threads for a run: the cores other processes leave idle (at least 1).

    On a small machine a busy second process makes multi-threaded torch stall on every op
    (many times slower than one thread), so a run only takes the cores that are free.
    """
    import torch

    cores = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except OSError:  # not available on this platform
        busy = 0
    return max(1, min(torch.get_num_threads(), cores - busy))


def _cmd_run(args: argparse.Namespace) -> int:
    import torch

    threads = args.threads or _auto_threads()
    torch.set_num_threads(threads)
    print(f"torch threads: {threads}" + ("" if args.threads else " (cores left idle by others)"))
    overrides = {k: v for k, v in vars(args).items() if k in {f.name for f in fields(RunConfig)}}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.resume:
        run(RunConfig(), args.resume, resume=True)
        return 0
    config = RunConfig.quick(**overrides) if args.quick else RunConfig(**overrides)
    run_dir = args.out or f"runs/{config.task}-{config.algo}-seed{config.seed}" + (
        "-quick" if args.quick else ""
    )
    run(config, run_dir)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=sorted(PIPELINE_TASKS), default=None)
    p.add_argument("--algo", choices=sorted(ALGORITHMS), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--rm", choices=("fused", "backbone"), default=None)
    p.add_argument("--iterations", type=int, default=None, help="RL iterations")
    p.add_argument("--n-prompts", dest="n_prompts", type=int, default=None)
    p.add_argument("--kl-coef", dest="kl_coef", type=float, default=None)
    p.add_argument(
        "--quick",
        action="store_true",
        help="about 10 s on Sort-v0 (unless --task): small data, few steps (a smoke test of every stage)",
    )
    p.add_argument("--out", default=None, help="run folder (default runs/TASK-ALGO-seedN)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: the cores others leave idle)"
    )
    p.set_defaults(func=_cmd_run)
