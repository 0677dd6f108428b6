"""Fill the READMEs' measured numbers from the results files the scripts wrote.

A number in ``README.md`` or ``benchmarks/README.md`` that a script measured sits in a marked
span naming its source, and this script rewrites the span from that file::

    <!-- result:benchmarks/results/trl_side_by_side.json:summary.speedup_grpo:.2f -->1.73<!-- /result -->

``FILE`` is relative to the repository root (a JSON file), ``PATH`` a dotted path into it
(keys, or integer list indices: ``summary.sentiment.ppo.gold_at_kl_3.0`` does not work with
dots inside keys, so such keys are written with ``[...]``: ``summary.sentiment.ppo[gold_at_kl_3]``),
``FMT`` an optional format: a Python format spec (``.3f``, ``+.3f``, ``.0%``, ``d``), or
``pm`` + spec for a ``[mean, std]`` pair (``pm.3f`` → ``0.480 ± 0.020``), or ``cell`` for
text in a Markdown table cell (newlines become spaces, ``|`` is escaped). A whole generated
block (a Markdown table a script wrote into its results, or a whole ``.md`` file it wrote) is::

    <!-- result-block:benchmarks/results/tune.json:table_md -->
    ...
    <!-- /result-block -->

    <!-- result-block:benchmarks/results/throughput.md -->
    ...
    <!-- /result-block -->

``python benchmarks/render_readme.py --textenv-run /tmp/run_readme`` first runs the README's
``textenv run --threads 1`` and records it (stage summaries, wall time, the CPU share others
used) in ``benchmarks/results/textenv_run.json``.

``python benchmarks/render_readme.py`` rewrites the spans in place; ``--check`` only compares
and exits 1 listing every span whose text differs from its file (``tests/test_numbers.py``
runs the check, so a README number cannot drift from its results file).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textenv.files import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "benchmarks/README.md")

SPAN = re.compile(r"<!-- result:(?P<spec>[^>]*?) -->(?P<value>.*?)<!-- /result -->", re.S)
BLOCK = re.compile(
    r"<!-- result-block:(?P<spec>[^>]*?) -->\n(?P<value>.*?)<!-- /result-block -->", re.S
)
_PATH_TOKEN = re.compile(r"\[([^\]]+)\]|([^.\[\]]+)")


class ResultSpanError(ValueError):
    """A marked span that cannot be rendered (bad spec, missing file or key)."""


@dataclass
class Span:
    document: Path
    line: int
    spec: str
    current: str
    rendered: str

    @property
    def where(self) -> str:
        return f"{_name(self.document)}:{self.line}"


def _name(document: Path) -> str:
    try:
        return str(document.relative_to(REPO))
    except ValueError:
        return str(document)


def lookup(data: Any, path: str) -> Any:
    """``data`` at the dotted / bracketed ``path``."""
    for brack, plain in _PATH_TOKEN.findall(path):
        key = brack or plain
        if isinstance(data, list):
            data = data[int(key)]
        elif isinstance(data, dict):
            if key not in data:
                raise KeyError(key)
            data = data[key]
        else:
            raise KeyError(key)
    return data


def format_value(value: Any, fmt: str) -> str:
    if fmt == "cell":  # text inside a Markdown table cell
        return str(value).replace("\n", " ").replace("|", "\\|").strip() or "(empty)"
    if fmt.startswith("pm"):
        mean, std = value
        spec = fmt[2:]
        return f"{mean:{spec}} ± {std:{spec}}"
    if fmt:
        return format(value, fmt)
    return str(value)


def render_spec(spec: str, cache: dict[Path, Any], where: str, root: Path = REPO) -> str:
    parts = spec.split(":")
    full = root / parts[0]
    if len(parts) == 1 and full.suffix != ".json":  # a whole text file (a written table)
        if not full.exists():
            raise ResultSpanError(f"{where}: results file {parts[0]} does not exist")
        return full.read_text(encoding="utf-8")
    if len(parts) not in (2, 3):
        raise ResultSpanError(f"{where}: a result span needs FILE:PATH[:FMT], got {spec!r}")
    file, path = parts[0], parts[1]
    fmt = parts[2] if len(parts) == 3 else ""
    if full not in cache:
        if not full.exists():
            raise ResultSpanError(f"{where}: results file {file} does not exist")
        cache[full] = json.loads(full.read_text(encoding="utf-8"))
    try:
        value = lookup(cache[full], path)
    except (KeyError, IndexError, ValueError) as exc:
        raise ResultSpanError(f"{where}: {file} has no {path!r} ({exc!r})") from None
    try:
        return format_value(value, fmt)
    except (TypeError, ValueError) as exc:
        raise ResultSpanError(
            f"{where}: cannot format {path!r} of {file} as {fmt!r}: {exc}"
        ) from None


def spans(document: Path, text: str | None = None, root: Path = REPO) -> list[Span]:
    """Every marked span and block of ``document`` with its current and rendered text."""
    text = document.read_text(encoding="utf-8") if text is None else text
    cache: dict[Path, Any] = {}
    out = []
    for pattern, block in ((SPAN, False), (BLOCK, True)):
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            where = f"{_name(document)}:{line}"
            rendered = render_spec(m.group("spec"), cache, where, root)
            if block:
                rendered = rendered.rstrip("\n") + "\n"
            out.append(Span(document, line, m.group("spec"), m.group("value"), rendered))
    return out


def render(text: str, document: Path, root: Path = REPO) -> str:
    cache: dict[Path, Any] = {}

    def sub(block: bool):
        def repl(m: re.Match) -> str:
            line = text.count("\n", 0, m.start()) + 1
            where = f"{_name(document)}:{line}"
            value = render_spec(m.group("spec"), cache, where, root)
            if block:
                return (
                    f"<!-- result-block:{m.group('spec')} -->\n"
                    f"{value.rstrip(chr(10))}\n<!-- /result-block -->"
                )
            return f"<!-- result:{m.group('spec')} -->{value}<!-- /result -->"

        return repl

    text = SPAN.sub(sub(False), text)
    return BLOCK.sub(sub(True), text)


def check(documents: list[Path], root: Path = REPO) -> list[str]:
    """Problems: spans whose text differs from their results file."""
    problems = []
    for doc in documents:
        for s in spans(doc, root=root):
            if s.current != s.rendered:
                problems.append(
                    f"{s.where}: {s.spec} says {s.current.strip()!r} but the file gives "
                    f"{s.rendered.strip()!r}"
                )
    return problems


def run_textenv(run_dir: Path, extra: list[str], out: Path) -> dict[str, Any]:
    """Run the README's ``textenv run --threads 1`` into ``run_dir`` (which must not exist),
    timing it and the share of the CPUs other processes used meanwhile, and write every
    stage's summary with those to ``out`` (the README's ``textenv run`` numbers come from it)."""
    import os
    import shlex
    import subprocess
    import time

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine_busy_seconds, machine_info

    cmd = ["textenv", "run", "--threads", "1", "--out", str(run_dir), *extra]
    t0, busy0 = time.perf_counter(), machine_busy_seconds()
    c0 = os.times()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    c1 = os.times()
    child = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    others = max(0.0, machine_busy_seconds() - busy0 - child) / (wall * (os.cpu_count() or 1))
    result = {
        "command": shlex.join(["textenv", "run", "--threads", "1", "--out", "DIR", *extra]),
        "wall_s": wall,
        "wall_min_s": f"{int(wall // 60)} min {int(round(wall % 60))} s",
        "child_cpu_s": child,
        "others_cpu_share": others,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        **run_folder_summary(run_dir),
    }
    atomic_write_text(out, json.dumps(result, indent=1, default=str) + "\n")
    return result


def run_folder_summary(run_dir: Path) -> dict[str, Any]:
    """What a finished ``textenv run`` folder says: every stage's summary, the policy's
    evaluation curve and its gold peak."""
    stages = {}
    for marker in sorted(run_dir.glob("*/done.json")):
        stages[marker.parent.name] = json.loads(marker.read_text(encoding="utf-8"))
    curve = json.loads((run_dir / "policy" / "curve.json").read_text(encoding="utf-8"))
    peak = max(curve, key=lambda p: p["gold_score"]["mean"])
    last = curve[-1]
    return {
        "stages": stages,
        "curve": curve,
        "gold_peak": {
            "iteration": peak["iteration"],
            "gold": peak["gold_score"]["mean"],
            "kl": peak["kl"]["mean"],
            "proxy": peak["rm_score"]["mean"],
        },
        "last_point": {
            "iteration": last["iteration"],
            "gold": last["gold_score"]["mean"],
            "kl": last["kl"]["mean"],
            "proxy": last["rm_score"]["mean"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("documents", nargs="*", default=list(DOCUMENTS))
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on drift")
    parser.add_argument(
        "--textenv-run",
        type=Path,
        metavar="RUN_DIR",
        help="first run `textenv run --threads 1 --out RUN_DIR` and record it in "
        "benchmarks/results/textenv_run.json",
    )
    args = parser.parse_args()
    if args.textenv_run:
        run_textenv(args.textenv_run, [], REPO / "benchmarks" / "results" / "textenv_run.json")
    docs = [REPO / d for d in args.documents]
    if args.check:
        problems = check(docs)
        for p in problems:
            print(p)
        n = sum(len(spans(d)) for d in docs)
        print(f"{n} result spans, {len(problems)} out of date")
        sys.exit(1 if problems else 0)
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        new = render(text, doc)
        if new != text:
            atomic_write_text(doc, new)
            print(f"{_name(doc)}: updated")


if __name__ == "__main__":
    main()
