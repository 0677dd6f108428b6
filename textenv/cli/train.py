"""``textenv train``: train one of the package's agents on a registered env."""

from __future__ import annotations

import argparse
import json

import torch

from agents import ALGORITHMS


def _train(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    agent_cls, config_cls = ALGORITHMS[args.algo]
    overrides = json.loads(args.config) if args.config else {}
    if args.resume:
        agent = agent_cls.load(args.out, **overrides)
    else:
        config = config_cls(
            env_id=args.env,
            env_kwargs=json.loads(args.env_kwargs) if args.env_kwargs else {},
            seed=args.seed,
            log_dir=args.log_dir or args.out + "-logs",
            **overrides,
        )
        agent = agent_cls(config)
    before = agent.evaluate(1)
    agent.learn(args.total_tokens)
    after = agent.evaluate(1)
    path = agent.save(args.out)
    for name, m in (("before", before), ("after", after)):
        gold = f", gold {m['env/gold_score']:.3f}" if "env/gold_score" in m else ""
        print(
            f"{name}: return {m['env/return']:.3f}, rm {m['env/rm_score']:.3f}, kl {m['env/kl']:.3f}{gold}"
        )
    print(
        f"saved {args.algo} agent ({agent.tokens_seen} tokens, {agent.iteration} iterations) to {path}"
    )
    agent.close()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", choices=sorted(ALGORITHMS), default="ppo")
    p.add_argument("--env", default="textenv/Sort-v0", help="a registered id")
    p.add_argument("--total-tokens", type=int, default=100_000, help="generated tokens in all")
    p.add_argument("--out", required=True, help="checkpoint folder (written atomically)")
    p.add_argument("--env-kwargs", default="", help="JSON env kwargs, e.g. '{\"kl_coef\": 0.1}'")
    p.add_argument("--config", default="", help="JSON agent config fields, e.g. '{\"lr\": 1e-4}'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", default=None, help="metrics.jsonl + TensorBoard (default OUT-logs)")
    p.add_argument("--resume", action="store_true", help="continue the agent saved in --out")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=_train)
