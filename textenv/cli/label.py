"""``textenv label``: label a K-way samples file in the terminal, in the browser (``--web``) or
with a simulated labeller (``--gold``); ``textenv label stats ANSWERS`` reports counts and
agreement."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from textenv.preferences import SimulatedLabeller, read_rankings, write_jsonl
from textenv.preferences.session import AnswerMismatchError, answer_stats, format_stats
from textenv.preferences.terminal import run_interactive


def _cmd_stats(args: argparse.Namespace) -> int:
    if args.answers is None:
        raise SystemExit("usage: textenv label stats ANSWERS [--gold SPEC] [--json]")
    if not Path(args.answers).is_file():
        raise SystemExit(f"answers file {args.answers} does not exist")
    try:
        stats = answer_stats(args.answers, gold=args.gold)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _session(args: argparse.Namespace) -> dict[str, Any]:
    """The labelling-session settings both front-ends (terminal and web) take."""
    return {"mode": args.mode, "seed": args.seed, "overlap": args.overlap}


def _cmd_web(args: argparse.Namespace) -> int:
    try:
        from textenv.preferences.web import serve
    except ImportError as exc:
        raise SystemExit(
            f'--web needs the web extra ({exc.name} is missing): pip install "textenv[web]"'
        ) from None
    serve(
        args.samples,
        args.out,
        **_session(args),
        host=args.host,
        port=args.port,
        allow_remote=args.allow_remote,
        open_browser=not args.no_browser,
    )
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    if args.samples == "stats":
        return _cmd_stats(args)
    if args.answers is not None:
        raise SystemExit(
            f"unexpected argument {args.answers!r} (label a file: textenv label SAMPLES --out "
            "ANSWERS; statistics: textenv label stats ANSWERS)"
        )
    if args.out is None:
        raise SystemExit("textenv label SAMPLES needs --out ANSWERS")
    if args.gold is None:
        try:
            if args.web:
                return _cmd_web(args)
            run_interactive(args.samples, args.out, **_session(args), labeller=args.labeller)
        except AnswerMismatchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
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
    p.description = (
        "textenv label SAMPLES --out ANSWERS [--web]: label a K-way samples file in the terminal "
        "or in the browser (or with --gold, a simulated labeller); reruns resume ANSWERS. "
        "textenv label stats ANSWERS [--gold SPEC]: counts, per-labeller counts, agreement "
        "between labellers and with a gold scorer."
    )
    p.add_argument("samples", help="K-way JSONL written by `textenv sample` (or: stats)")
    p.add_argument("answers", nargs="?", help="stats: the answers file")
    p.add_argument("--out", help="answers file (JSONL); reruns resume it")
    p.add_argument("--mode", default="auto", choices=["auto", "pairs", "rank"])
    p.add_argument("--seed", type=int, default=0, help="display order / simulated draws")
    p.add_argument(
        "--gold",
        help="simulate: gold scorer spec, e.g. textenv.tasks.sentiment:gold_score "
        "(stats: agreement with this scorer)",
    )
    p.add_argument("--temperature", type=float, default=0.0, help="simulated Bradley–Terry T")
    p.add_argument("--ties", default="random", choices=["random", "skip", "prefer_first"])
    p.add_argument("--overwrite", action="store_true", help="simulated: replace --out")
    p.add_argument("--labeller", default="terminal", help="terminal: the labeller id in the rows")
    p.add_argument(
        "--overlap",
        type=int,
        default=1,
        help="how many different labellers answer each question (2+: agreement in stats)",
    )
    web = p.add_argument_group('browser (--web; needs pip install "textenv[web]")')
    web.add_argument("--web", action="store_true", help="serve a labelling page")
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    web.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    web.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-local --host; the URL then carries a random token",
    )
    web.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--json", action="store_true", help="stats: print JSON")
    p.set_defaults(func=_cmd_label)
