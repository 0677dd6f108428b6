"""``python -m agents``: train one agent, in one process or as one rank of a torchrun job.

    torchrun --standalone --nproc_per_node 2 -m agents --algo grpo --env textenv/Sort-v0 \\
        --total-tokens 100000 --out checkpoints/grpo

The options are those of ``textenv train`` (which launches this module under torchrun for
``--nproc N``). Every rank runs the same script: it joins the process group torchrun describes,
builds the agent (each rank steps ``num_envs / N`` rows of its own), evaluates, trains, evaluates
and saves; rank 0 alone prints, logs and writes the checkpoint. ``--resume`` continues a
checkpoint with any number of ranks. When one rank fails, torchrun stops the others and prints
that rank's error (the entry point is wrapped in torchrun's ``record``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from agents import ALGORITHMS
from agents.distributed import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, shutdown
from agents.evaluation import summary_line

__all__ = ["build_parser", "run", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agents",
        description="Train an agent on a registered textenv id (one rank of a torchrun job, or "
        "one process).",
    )
    p.add_argument("--algo", choices=sorted(ALGORITHMS), default="ppo")
    p.add_argument("--env", default="textenv/Sort-v0", help="a registered id")
    p.add_argument("--total-tokens", type=int, default=100_000, help="generated tokens in all")
    p.add_argument("--out", required=True, help="checkpoint folder (written atomically)")
    p.add_argument("--env-kwargs", default="", help="JSON env kwargs, e.g. '{\"kl_coef\": 0.1}'")
    p.add_argument("--config", default="", help="JSON agent config fields, e.g. '{\"lr\": 1e-4}'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--data", default=None, help="preference pairs / rankings JSONL (--algo dpo trains on it)"
    )
    p.add_argument("--log-dir", default=None, help="metrics.jsonl + TensorBoard (default OUT-logs)")
    p.add_argument("--resume", action="store_true", help="continue the agent saved in --out")
    p.add_argument(
        "--trust-specs",
        action="store_true",
        help="with --resume: allow module:function specs in the checkpoint's config",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: default)")
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=None,
        help=f"seconds a collective may wait for the other ranks (default ${TIMEOUT_ENV} or "
        f"{DEFAULT_TIMEOUT_S:.0f})",
    )
    return p


def _json(text: str, flag: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{flag}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise SystemExit(f"{flag}: expected a JSON object, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Build (or resume), evaluate, train, evaluate and save; print on rank 0."""
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = _json(args.config, "--config")
    env_kwargs = _json(args.env_kwargs, "--env-kwargs")
    if args.data is not None:
        if "data" not in {f.name for f in dataclasses.fields(ALGORITHMS[args.algo][1])}:
            raise SystemExit(f"--data is for preference-trained agents (dpo), not {args.algo}")
        overrides["data"] = args.data
    if args.dist_timeout is not None:  # read when the agent joins the process group
        os.environ[TIMEOUT_ENV] = str(args.dist_timeout)
    agent_cls, config_cls = ALGORITHMS[args.algo]
    overrides.setdefault("log_dir", args.log_dir or args.out + "-logs")
    if args.resume:
        agent = agent_cls.load(args.out, trust_specs=args.trust_specs, **overrides)
    else:
        config = config_cls(env_id=args.env, env_kwargs=env_kwargs, seed=args.seed, **overrides)
        agent = agent_cls(config)
    dist = agent.dist  # the agent joined torchrun's group, on its device's backend
    before = agent.evaluate(1)  # every rank plays its share of the episodes
    agent.learn(args.total_tokens)
    after = agent.evaluate(1)
    path = agent.save(args.out)
    if dist.is_main:
        ranks = f" on {dist.world_size} ranks" if dist.enabled else ""
        for name, m in (("before", before), ("after", after)):
            print(f"{name}: {summary_line(m)}")
        print(
            f"saved {args.algo} agent ({agent.tokens_seen} tokens, {agent.iteration} "
            f"iterations{ranks}) to {path}"
        )
    agent.close()
    shutdown()  # (on an error the process just exits: torchrun stops the other ranks)
    return 0


@record
def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
