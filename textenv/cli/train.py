"""``textenv train``: train one of the package's agents on a registered env.

The settings are the fields of the agents' configs (one flag each, built by
:mod:`textenv.cli.config_flags`; ``--config JSON`` sets several at once, flags win). The agent is
checkpointed to ``--out`` every ``--save-every`` iterations, at the end, and on Ctrl-C / SIGTERM
(after the iteration in progress); ``--resume`` continues it. An existing ``--out`` is never
replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import signal
from pathlib import Path

import torch

from agents import ALGORITHMS
from agents.base import CHECKPOINT_MARKERS, is_checkpoint
from agents.distributed import launch, to_argv
from agents.evaluation import summary_line
from textenv.cli.config_flags import add_config_arguments, config_values
from textenv.files import check_dir_target


def _fail(message: str) -> SystemExit:
    return SystemExit(f"textenv train: {message}")


def _clear_logs(log_dir: Path) -> None:
    """``--overwrite``: the metrics and TensorBoard events the replaced run wrote."""
    for name in ["metrics.jsonl", *(p.name for p in log_dir.glob("events.out.tfevents.*"))]:
        (log_dir / name).unlink(missing_ok=True)


def _train(args: argparse.Namespace) -> int:
    if args.nproc != 1:  # N torchrun ranks, each running this same command (agents.distributed)
        if args.nproc < 1:
            raise _fail(f"--nproc must be ≥ 1, got {args.nproc}")
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return launch(args.nproc, ["train", *to_argv(args, parser, ("nproc",))], "textenv.cli")
    if args.threads:
        torch.set_num_threads(args.threads)
    agent_cls, config_cls = ALGORITHMS[args.algo]
    try:
        overrides = json.loads(args.config) if args.config else {}
        if not isinstance(overrides, dict):
            raise ValueError("--config must be a JSON object")
        overrides.update(config_values(args, config_cls))
        out = check_dir_target(args.out)  # an existing file: fail before any work
    except (ValueError, FileExistsError) as exc:
        raise _fail(str(exc)) from None
    overrides.setdefault("log_dir", str(args.out) + "-logs")
    if args.resume:
        if not is_checkpoint(out):
            raise _fail(f"nothing to resume at {out} (run without --resume to start)")
        try:
            agent = agent_cls.load(out, trust_specs=args.trust_specs, **overrides)
        except (ValueError, FileNotFoundError) as exc:
            raise _fail(str(exc)) from None
        print(f"resuming {args.algo} from iteration {agent.iteration} ({agent.tokens_seen} tokens)")
    else:
        occupied = out.is_dir() and any(out.iterdir())
        if occupied and not args.overwrite:
            what = "a checkpoint" if is_checkpoint(out) else "files"
            raise _fail(
                f"{out} already holds {what}; pass --resume to continue it or --overwrite to "
                "start over (it is replaced at the first checkpoint)"
            )
        if occupied and not any((out / m).exists() for m in CHECKPOINT_MARKERS):
            raise _fail(f"{out} is a folder that is not a checkpoint; refusing to replace it")
        if args.overwrite:
            _clear_logs(Path(overrides["log_dir"]))
        try:
            config = config_cls(**overrides)
            agent = agent_cls(config)
        except FileExistsError as exc:  # the log folder holds another run's metrics
            raise _fail(f"{exc} (or pass --overwrite to replace that run)") from None
        except ValueError as exc:
            raise _fail(str(exc)) from None
    before = agent.evaluate(1)
    if "checkpoint" in inspect.signature(agent.learn).parameters:
        agent.learn(args.total_tokens, checkpoint=out)
    else:  # an agent whose learn() does not checkpoint itself: saved at the end only
        agent.learn(args.total_tokens)
        agent.save(out)
    if agent.interrupted:
        print(
            f"{agent.interrupted}: saved {args.algo} agent at iteration {agent.iteration} "
            f"({agent.tokens_seen} tokens) to {out}; continue with --resume"
        )
        agent.close()
        return 128 + int(signal.Signals[agent.interrupted])
    after = agent.evaluate(1)
    split = agent.config.env_kwargs.get("split", "train")
    measured_on = f"{agent.config.num_envs} episodes on {split} prompts, fixed evaluation seed"
    for name, m in (("before", before), ("after", after)):
        print(f"{name} ({measured_on}): {summary_line(m)}")
    print(
        f"saved {args.algo} agent ({agent.tokens_seen} tokens, {agent.iteration} iterations) "
        f"to {out}"
    )
    agent.close()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", choices=sorted(ALGORITHMS), default="ppo")
    p.add_argument("--total-tokens", type=int, default=100_000, help="generated tokens in all")
    p.add_argument("--out", required=True, help="checkpoint folder (written atomically)")
    p.add_argument("--config", default="", help="JSON agent config fields, e.g. '{\"lr\": 1e-4}'")
    p.add_argument("--resume", action="store_true", help="continue the agent saved in --out")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoint in --out (and its logs)"
    )
    p.add_argument(
        "--trust-specs",
        action="store_true",
        help="with --resume: allow the checkpoint's config to name module:function specs "
        "(imported and run) and its log_dir",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes (torchrun ranks; num_envs and minibatch_size are global)",
    )
    add_config_arguments(
        p,
        [config for _, config in ALGORITHMS.values()],
        flags={"env_id": "--env"},
        extra_help={"log_dir": "(textenv train: OUT-logs)"},
    )
    p.set_defaults(func=_train)
