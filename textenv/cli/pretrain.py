"""``textenv pretrain``: (re)train a built-in base LM, seeded and reproducible."""

from __future__ import annotations

import argparse

from textenv.tasks import sentiment, sort
from textenv.training.pretrain import BASE_MODELS, MODELS_DIR, pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=sorted(BASE_MODELS), help="which base LM to train")
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: the package's own textenv/data/models/<task>)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the model's own")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--task-data",
        action="store_true",
        help="also (re)write the task's prompt files under textenv/data/tasks/ "
        "(prose -> sentiment prompts, sort -> sort prompts)",
    )
    parser.set_defaults(func=run_pretrain_command)


def run_pretrain_command(args: argparse.Namespace) -> int:
    """Run ``textenv pretrain`` from parsed arguments; returns the exit code."""
    out = args.out or str(MODELS_DIR / args.task)
    metrics = pretrain(args.task, out, seed=args.seed, steps=args.steps, threads=args.threads)
    if getattr(args, "task_data", False):
        if args.task == "prose":
            counts = sentiment.write_prompt_files(tokenizer_dir=out, seed=args.seed)
        else:
            counts = sort.write_prompt_files(seed=args.seed)
        print(f"[pretrain {args.task}] task prompts written: {counts}")
    print(
        f"[pretrain {args.task}] params={metrics['parameters']} "
        f"heldout_ppl={metrics['heldout_perplexity']:.2f} train_time={metrics['train_time_s']}s"
    )
    return 0
