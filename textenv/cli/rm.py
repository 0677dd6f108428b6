"""``textenv rm train`` / ``textenv rm eval``: Bradley–Terry reward models on preference files."""

from __future__ import annotations

import argparse

from textenv.preferences import read_rankings
from textenv.training.reward_model import DEFAULT_BACKBONE, evaluate_reward, train_reward_model


def _cmd_train(args: argparse.Namespace) -> int:
    samples = None
    if args.normalize_samples:
        samples = [
            (r.prompt, c) for r in read_rankings(args.normalize_samples) for c in r.completions
        ]
    m = train_reward_model(
        args.data,
        args.out,
        backbone=args.backbone,
        val_pairs=args.val_data,
        val_fraction=args.val_fraction,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        patience=args.patience,
        center_coef=args.center_coef,
        use_margin=not args.no_margin,
        max_length=args.max_length,
        normalize=not args.no_normalize,
        normalize_samples=samples,
        seed=args.seed,
        device=args.device,
        on_error=args.on_error,
    )
    val = (
        f"val accuracy {m['val_accuracy']:.4f}, val loss {m['val_loss']:.4f} (epoch "
        f"{m['best_epoch']})"
        if m["val_accuracy"] is not None
        else "no validation split"
    )
    print(
        f"saved reward model to {args.out}: {m['n_train']} train pairs, {val}, "
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
    t = sub.add_parser("train", help="train a Bradley–Terry reward model, save an HF folder")
    t.add_argument("--data", required=True, help="preference JSONL (pairs or K-way rankings)")
    t.add_argument("--out", required=True, help="output folder (load_reward reads it)")
    t.add_argument("--backbone", default=DEFAULT_BACKBONE, help="model spec to start from")
    t.add_argument("--val-data", default=None, help="explicit validation preferences")
    t.add_argument("--val-fraction", type=float, default=0.1)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--patience", type=int, default=2, help="early stopping on val loss")
    t.add_argument("--center-coef", type=float, default=0.0, help="e.g. 0.01 (TRL)")
    t.add_argument("--no-margin", action="store_true", help="ignore 'margin' in the data")
    t.add_argument("--max-length", type=int, default=256)
    t.add_argument("--no-normalize", action="store_true", help="skip reward_mean/std")
    t.add_argument(
        "--normalize-samples", default=None, help="K-way samples file (reference samples)"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("eval", help="accuracy / loss of a reward model on preference pairs")
    e.add_argument("--model", required=True, help="reward spec (RM folder, module:function)")
    e.add_argument("--data", required=True)
    e.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    e.set_defaults(func=_cmd_eval)
