"""``textenv label``: label a K-way samples file in the terminal, or with a simulated labeller."""

from __future__ import annotations

import argparse
from pathlib import Path

from textenv.preferences import SimulatedLabeller, read_rankings, write_jsonl
from textenv.preferences.terminal import run_interactive


def _cmd_label(args: argparse.Namespace) -> int:
    if args.gold is None:
        run_interactive(args.samples, args.out, mode=args.mode, seed=args.seed)
        return 0

    if Path(args.out).exists() and not args.overwrite:
        raise SystemExit(f"{args.out} exists; pass --overwrite to replace it")
    rows = list(read_rankings(args.samples))
    labeller = SimulatedLabeller(
        args.gold, temperature=args.temperature, ties=args.ties, seed=args.seed
    )
    mode = "pairs" if args.mode == "auto" else args.mode
    result = labeller.label_samples(rows, mode)
    write_jsonl(args.out, result.items)
    s = result.summary()
    print(
        f"labelled {s['labelled']} {'pairs' if mode == 'pairs' else 'rankings'} "
        f"({s['compared']} compared, {s['ties']} ties, {s['skipped_ties']} skipped) → {args.out}"
    )
    print(f"noise ceiling (best accuracy any reward model can reach): {s['noise_ceiling']:.4f}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("samples", help="K-way JSONL written by `textenv sample`")
    p.add_argument("--out", required=True, help="answers file (JSONL); reruns resume it")
    p.add_argument("--mode", default="auto", choices=["auto", "pairs", "rank"])
    p.add_argument("--seed", type=int, default=0, help="display order / simulated draws")
    p.add_argument(
        "--gold", help="simulate: gold scorer spec, e.g. textenv.tasks.sentiment:gold_score"
    )
    p.add_argument("--temperature", type=float, default=0.0, help="simulated Bradley–Terry T")
    p.add_argument("--ties", default="random", choices=["random", "skip", "prefer_first"])
    p.add_argument("--overwrite", action="store_true", help="simulated: replace --out")
    p.set_defaults(func=_cmd_label)
