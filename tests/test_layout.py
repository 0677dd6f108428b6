"""The package's shape: layers without cycles, library modules that import at the top, and a
``textenv`` command whose help does not load the models (DESIGN "Layout")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def _import_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("textenv", "agents")
    return {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules():
    assert _cycles(_import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Modules that need an optional extra are imported where they are used, on purpose.
OPTIONAL_EXTRAS = {"textenv.preferences.web"}  # pip install "textenv[web]"
# Modules that bring in torch and the models, imported where they are used by the preference
# modules, so that labelling by hand starts without them (tests/test_labelling.py checks it).
DEFERRED_FOR_STARTUP = {
    "textenv/preferences/__init__.py": {"textenv.preferences.sampling"},
    "textenv/preferences/session.py": {"textenv.rewards"},
    "textenv/preferences/simulated.py": {"textenv.rewards"},
}


def _local_package_imports(path: Path) -> list[str]:
    """``textenv``/``agents`` imports inside functions (not at module level)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            names = []
            if isinstance(inner, ast.ImportFrom) and inner.module:
                names = [inner.module]
            elif isinstance(inner, ast.Import):
                names = [a.name for a in inner.names]
            where = path.relative_to(ROOT).as_posix()
            deferred = DEFERRED_FOR_STARTUP.get(where, set())
            found += [
                f"{where}:{inner.lineno} {n}"
                for n in names
                if n.split(".")[0] in ("textenv", "agents")
                and n not in OPTIONAL_EXTRAS
                and n not in deferred
            ]
    return found


def test_library_modules_import_the_package_at_the_top():
    """No function-local import of the package's own modules (the way to dodge a cycle); the
    command dispatcher loads subcommand modules with importlib, by design."""
    modules = sorted((ROOT / "textenv").rglob("*.py")) + sorted((ROOT / "agents").rglob("*.py"))
    local = [hit for m in modules for hit in _local_package_imports(m)]
    assert local == []


def test_help_does_not_load_torch():
    code = (
        "import sys\n"
        "from textenv.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_import_textenv_registers_ids_without_torch():
    code = "import sys, textenv; print(len(textenv.registered_ids()), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, torch_loaded = out.stdout.split()
    assert int(n) >= 4 and torch_loaded == "False"
