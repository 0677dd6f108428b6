"""``textenv rm train`` / ``textenv rm eval``: Bradley–Terry reward models on preference files.

``rm train``'s settings are the fields of :class:`~textenv.training.bradley_terry.RewardModelConfig`
(one flag each, built by :mod:`textenv.cli.config_flags`)."""

from __future__ import annotations

import argparse

from textenv.cli.config_flags import add_config_arguments, config_values
from textenv.preferences import read_rankings
from textenv.training.reward_model import RewardModelConfig, evaluate_reward, train_reward


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        config = RewardModelConfig(**config_values(args, RewardModelConfig))
    except ValueError as exc:
        raise SystemExit(f"textenv rm train: {exc}") from None
    samples = None
    if args.normalize_samples:
        samples = [
            (r.prompt, c) for r in read_rankings(args.normalize_samples) for c in r.completions
        ]
    try:
        m = train_reward(
            args.data,
            args.out,
            config,
            val_pairs=args.val_data,
            normalize_samples=samples,
            on_error=args.on_error,
        )
    except FileExistsError as exc:  # --out is checked before training
        raise SystemExit(f"textenv rm train: {exc}") from None
    val = (
        f"val accuracy {m['val_accuracy']:.4f}, val loss {m['val_loss']:.4f} (epoch "
        f"{m['best_epoch']})"
        if m["val_accuracy"] is not None
        else "no validation split"
    )
    print(
        f"saved reward model ({config.kind}) to {args.out}: {m['n_train']} train pairs, {val}, "
        f"{m['train_time_s']:.1f} s"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    m = evaluate_reward(args.model, args.data, on_error=args.on_error)
    print(
        f"{args.model} on {args.data}: accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f}, "
        f"{m['n']} pairs"
    )
    return 0


def add_arguments(rm: argparse.ArgumentParser) -> None:
    sub = rm.add_subparsers(dest="rm_command", required=True)
    t = sub.add_parser("train", help="train a Bradley–Terry reward model, save a folder")
    t.add_argument("--data", required=True, help="preference JSONL (pairs or K-way rankings)")
    t.add_argument(
        "--out",
        required=True,
        help="output folder, written atomically (load_reward reads it); must be new, empty or "
        "an earlier reward model",
    )
    t.add_argument("--val-data", default=None, help="explicit validation preferences")
    t.add_argument(
        "--normalize-samples", default=None, help="K-way samples file (reference samples)"
    )
    t.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    add_config_arguments(t, RewardModelConfig, flags={"use_margin": "--margin"})
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("eval", help="accuracy / loss of a reward model on preference pairs")
    e.add_argument("--model", required=True, help="reward spec (RM folder, module:function)")
    e.add_argument("--data", required=True)
    e.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    e.set_defaults(func=_cmd_eval)
