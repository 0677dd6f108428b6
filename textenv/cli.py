"""The ``textenv`` command.

Sub-commands are small functions; the ones that train import ``agents`` lazily so that
``textenv`` itself never depends on ``agents``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

# Modules that add sub-commands: each defines ``register_cli(subparsers)`` and keeps its heavy
# imports inside the command function, so ``textenv --help`` stays fast.
COMMAND_MODULES: list[str] = [
    "textenv.pretrain",
    "textenv.preferences",
    "textenv.labelling",
    "textenv.reward_training",
    "agents.cli",
    "textenv.pipeline",
]

# The env the demo runs when none is named.
DEFAULT_ENV = "textenv/Sentiment-v0"


def _demo(args: argparse.Namespace) -> int:
    """Run a few episodes of a registered env with a sampling agent that uses the log π channel."""
    import gymnasium as gym

    import textenv  # noqa: F401  (registers the ids)
    from textenv.evaluation import rollout_policy
    from textenv.models import load_causal_lm

    envs = gym.make_vec(
        args.env,
        num_envs=args.episodes,
        vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
    )
    env = envs.unwrapped
    # The demo agent is the reference LM itself, sampled at a lower temperature: the KL term
    # then measures how far that sharpening moves it from the reference.
    policy = load_causal_lm(env.config.reference)
    final = rollout_policy(policy, envs, None, seed=args.seed, temperature=args.temperature)
    print(
        f"env {args.env}: {envs.num_envs} episodes, policy = reference sampled at "
        f"T={args.temperature} (the env scores ρ at T={env.config.temperature}), β = {env.kl_coef:.3g}"
    )
    for i in range(envs.num_envs):
        gold = f"   gold {final['gold_score'][i]:+.3f}" if "gold_score" in final else ""
        print(f"[{i}] {final['prompt'][i]!r} → {final['text'][i]!r}")
        print(
            f"    reward {final['return'][i]:+.3f} = RM {final['rm_score'][i]:+.3f} "
            f"− β·KL ({final['kl'][i]:.3f}){gold}"
        )
    envs.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textenv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a few episodes with a sampling agent and print them")
    demo.add_argument("--env", default=DEFAULT_ENV)
    demo.add_argument("--episodes", type=int, default=4)
    demo.add_argument("--temperature", type=float, default=0.7)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
