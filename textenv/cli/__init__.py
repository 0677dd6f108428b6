"""The ``textenv`` command: one small module per subcommand.

The command table below is all that ``textenv --help`` reads; a subcommand's module (and with it
torch, transformers and the models) is imported only when that subcommand runs, so the help
answers at once. Each module defines ``add_arguments(parser)``, which sets ``func`` on the parser.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser", "COMMANDS"]

# name → (module, one-line help), in the order of the RLHF loop.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("textenv.cli.demo", "run a few episodes with a sampling agent and print them"),
    "pretrain": ("textenv.cli.pretrain", "train a built-in base LM (seeded, reproducible)"),
    "sample": (
        "textenv.cli.sample",
        "sample K completions per prompt into a K-way file ready for labelling",
    ),
    "label": (
        "textenv.cli.label",
        "label a K-way samples file in the terminal or the browser (--web), or with a "
        "simulated labeller; `label stats` reports counts and agreement",
    ),
    "rm": ("textenv.cli.rm", "reward models: train / evaluate on preference pairs"),
    "train": ("textenv.cli.train", "train an agent (PPO, GRPO, RLOO, ...) on a registered env"),
    "run": (
        "textenv.cli.run",
        "the whole RLHF loop: sample → simulated preferences → reward model → RL → evaluate",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its arguments (all with None)."""
    parser = argparse.ArgumentParser(prog="textenv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The first word that is not an option names the subcommand; only its module is loaded.
    command = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
