"""The real English corpus that ships with every CPython: no download, no model hub.

Two sources, both part of the interpreter itself:

* ``pydoc_data.topics.topics``: the language reference topics that ``help()`` prints
  (one document per topic);
* the docstrings of the standard library: every module listed in ``sys.stdlib_module_names``
  and the submodules of its packages (one document per module: the module docstring followed by
  the docstrings of the public classes, methods and functions *defined* in that module).

The walk is deterministic: modules and members are visited in sorted order, private names, tests,
IDLE, tkinter, turtle and its demos and modules with import-time side effects are skipped, and the
walk runs in a fresh interpreter started with ``-I -S`` (isolated, no ``site``), so neither the
modules already imported by the caller nor the third-party packages installed in the environment
can change the text. The text does depend on the CPython version (docstrings change between
releases); :func:`build_corpus` records it.

The split into train / held-out is by document, each document's side decided by a seeded hash of
its id, so it does not depend on the order or on which other documents exist.

Text conventions used by the LMs trained on it (:mod:`textenv.training.pretrain`): a document is a list of
paragraphs (separated by blank lines); each paragraph is one training "text" that ends with the
EOS token, so the LM learns to stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass

__all__ = [
    "HELDOUT_FRAC",
    "Document",
    "build_corpus",
    "split_corpus",
    "paragraphs",
    "corpus_texts",
]

HELDOUT_FRAC = 0.15

# Top-level modules never imported (side effects on import, GUI toolkits, tests, IDLE, demos).
_SKIP_TOP = frozenset(
    {
        "antigravity",  # opens a web browser
        "this",  # prints the Zen of Python
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "test",
        "lib2to3",  # deprecated, grammar pickles written on import
        "ensurepip",
        "pydoc_data",  # taken directly (topics)
        "readline",  # touches the terminal
        "rlcompleter",  # imports readline
        "xxlimited",
        "xxlimited_35",
        "xxsubtype",
        "xxtestfuzz",
    }
)
# Any dotted component equal to one of these is skipped.
_SKIP_PART = frozenset({"test", "tests", "idle_test", "__main__", "_test", "testing"})

# The walker runs in a fresh, isolated interpreter. It only uses the standard library.
_WALKER = r"""
import importlib, inspect, json, pkgutil, sys, warnings

SKIP_TOP = set(json.loads(sys.argv[1]))
SKIP_PART = set(json.loads(sys.argv[2]))


def ok_name(name):
    parts = name.split(".")
    if parts[0] in SKIP_TOP:
        return False
    if parts[0] == "encodings" and len(parts) > 1:  # ~100 boilerplate codec modules
        return False
    if any(p.startswith("_") or p in SKIP_PART for p in parts):
        return False
    return True


def clean(doc):
    if not isinstance(doc, str):
        return ""
    return inspect.cleandoc(doc).strip()


def defined_in(obj, modname):
    # Defined in the module itself or in its C accelerator (bisect <- _bisect).
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str):
        return False
    head, _, last = modname.rpartition(".")
    return owner in (modname, (head + "._" if head else "_") + last)


def module_text(mod, modname):
    parts = []
    head = clean(getattr(mod, "__doc__", None))
    if head:
        parts.append(head)
    try:
        members = sorted(vars(mod).items())
    except Exception:
        return "\n\n".join(parts)
    for name, obj in members:
        if name.startswith("_"):
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        if not defined_in(obj, modname):
            continue
        doc = clean(getattr(obj, "__doc__", None))
        if doc:
            parts.append(doc)
        if inspect.isclass(obj):
            for mname, mobj in sorted(vars(obj).items()):
                if mname.startswith("_"):
                    continue
                if isinstance(mobj, (staticmethod, classmethod)):
                    mobj = mobj.__func__
                if not (callable(mobj) or isinstance(mobj, property)):
                    continue
                mdoc = clean(getattr(mobj, "__doc__", None))
                if mdoc:
                    parts.append(mdoc)
    return "\n\n".join(parts)


def main():
    warnings.simplefilter("ignore")
    names = sorted(n for n in sys.stdlib_module_names if ok_name(n))
    seen = set()
    docs = {}
    todo = list(names)
    while todo:
        name = todo.pop(0)
        if name in seen or not ok_name(name):
            continue
        seen.add(name)
        try:
            mod = importlib.import_module(name)
        except BaseException:
            continue
        path = getattr(mod, "__path__", None)
        if path is not None:
            try:
                subs = sorted(m.name for m in pkgutil.iter_modules(path, name + "."))
            except Exception:
                subs = []
            todo = sorted(set(todo) | {s for s in subs if ok_name(s)})
        text = module_text(mod, name)
        if text:
            docs[name] = text
    sys.stdout.write(json.dumps(docs, sort_keys=True))


main()
"""


@dataclass(frozen=True)
class Document:
    """One corpus document: ``id`` is ``"topic:<name>"`` or ``"module:<dotted.name>"``."""

    id: str
    text: str


def _stdlib_docstrings(timeout: float = 300.0) -> dict[str, str]:
    env = {"PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    for key in ("PATH", "SYSTEMROOT", "TMPDIR", "TEMP", "TMP"):
        if key in os.environ:
            env[key] = os.environ[key]
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _WALKER,
            json.dumps(sorted(_SKIP_TOP)),
            json.dumps(sorted(_SKIP_PART)),
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"stdlib docstring walker failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}"
        )
    return json.loads(proc.stdout.decode("utf-8"))


def _normalise(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and out and not out[-1]:
            continue  # at most one blank line in a row
        out.append(line)
    return "\n".join(out).strip()


_CACHE: list[Document] | None = None


def build_corpus() -> list[Document]:
    """All documents, sorted by id: pydoc topics, then stdlib module docstrings.

    Exact duplicate paragraphs (boilerplate docstrings repeated across modules) are kept only at
    their first occurrence in id order. The result is cached in-process.
    """
    global _CACHE
    if _CACHE is not None:
        return list(_CACHE)
    from pydoc_data.topics import topics

    raw: list[tuple[str, str]] = [(f"topic:{k}", v) for k, v in topics.items()]
    raw += [(f"module:{k}", v) for k, v in _stdlib_docstrings().items()]
    raw.sort()
    seen: set[str] = set()
    docs: list[Document] = []
    for doc_id, text in raw:
        keep = []
        for para in paragraphs(_normalise(text)):
            if para in seen:
                continue
            seen.add(para)
            keep.append(para)
        if keep:
            docs.append(Document(doc_id, "\n\n".join(keep)))
    _CACHE = docs
    return list(docs)


def paragraphs(text: str) -> list[str]:
    """Split on blank lines; strip each paragraph; drop empty ones."""
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


def _unit(key: str) -> float:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_corpus(
    docs: list[Document] | None = None, *, heldout_frac: float = HELDOUT_FRAC, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """(train, held_out) by document; a document is held out iff a seeded hash of its id is
    below ``heldout_frac``. Deterministic, disjoint, independent of the other documents."""
    if docs is None:
        docs = build_corpus()
    train, held = [], []
    for doc in docs:
        (held if _unit(f"corpus-split:{seed}:{doc.id}") < heldout_frac else train).append(doc)
    return train, held


def corpus_texts(docs: list[Document]) -> list[str]:
    """The training texts of a list of documents: one per paragraph (EOS is added by the
    caller's tokenisation)."""
    return [p for d in docs for p in paragraphs(d.text)]


def corpus_info(docs: list[Document]) -> dict:
    """Size and provenance, stored with the trained models."""
    return {
        "python": sys.version.split()[0],
        "documents": len(docs),
        "characters": sum(len(d.text) for d in docs),
        "sha256": hashlib.sha256(
            "\x00".join(f"{d.id}\x01{d.text}" for d in docs).encode("utf-8")
        ).hexdigest(),
    }
