"""Durable writes: the one home for atomic files, atomic folders and fsync'd appends.

Everything the package writes (checkpoints, reward models, preference and metrics files, run
folders) goes through these functions, so a kill at any moment leaves either the old state or
the new one, never a torn file or a half-written folder:

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json` /
  :func:`atomic_write_lines`: a temp file
  in the same folder, fsync, ``os.replace``, fsync of the folder.
* :func:`atomic_write_dir`: ``write(tmp)`` fills a temp folder next to the target, then renames
  swap it in. A kill between the two renames leaves the previous folder at ``.<name>.old``,
  which :func:`resolve_dir` falls back to; stale temp folders of killed saves are removed by the
  next save of the same target.
* :func:`append_line`: one ``write`` of a whole line to a file opened with ``O_APPEND``, then
  fsync (interactive answers, metrics): a kill loses at most the line being written.

The bottom of the package: this module imports nothing from it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_lines",
    "atomic_write_dir",
    "append_line",
    "check_dir_target",
    "fsync_dir",
    "resolve_dir",
]


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where folders can't be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_not_dir(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected a file path")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file beside it, fsync, rename, fsync of
    the folder."""
    path = Path(path)
    _check_not_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_lines(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write ``lines`` (each with its own newline) to ``path`` atomically."""
    return atomic_write_bytes(path, "".join(lines).encode("utf-8"))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_lines(path, [text])


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON atomically (numpy scalars are written as floats)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=float) + "\n")


def _old(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def check_dir_target(target: str | os.PathLike, replaces: Sequence[str] | None = None) -> Path:
    """Check, before any work, that :func:`atomic_write_dir` may write ``target``.

    ``target`` must not be an existing file. With ``replaces`` (file names that mark an earlier
    output of the same kind), an existing non-empty folder holding none of them is refused, so a
    mistyped path never replaces an unrelated folder. Returns the resolved path.
    """
    target = Path(target).resolve()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    if replaces is not None and target.is_dir() and any(target.iterdir()):
        if not any((target / name).exists() for name in replaces):
            raise FileExistsError(
                f"{target} is a folder that holds none of {list(replaces)}; refusing to "
                "replace it (choose a new or empty folder)"
            )
    return target


def atomic_write_dir(
    target: str | os.PathLike,
    write: Callable[[Path], Any],
    *,
    replaces: Sequence[str] | None = None,
) -> Path:
    """Fill a folder with ``write(tmp)`` and swap it in for ``target`` atomically.

    A kill before the swap leaves the old folder untouched; a kill between the two renames
    leaves it at ``.<name>.old`` (:func:`resolve_dir` falls back to it). ``target`` must not
    be an existing file; ``replaces``: see :func:`check_dir_target`. Temp folders of killed
    saves of the same target are removed first.
    """
    target = check_dir_target(target, replaces)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0o700 would stay on the swapped-in folder
        write(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            elif f.is_dir():
                fsync_dir(f)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _old(target)
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


def resolve_dir(path: str | os.PathLike, marker: str) -> Path:
    """``path`` if it holds ``marker``, else the previous version a killed
    :func:`atomic_write_dir` left at ``.<name>.old`` (with a warning), else FileNotFoundError."""
    path = Path(path).resolve()
    if (path / marker).is_file():
        return path
    old = _old(path)
    if (old / marker).is_file():
        warnings.warn(
            f"{path} is missing (interrupted save); using the previous version {old}",
            stacklevel=2,
        )
        return old
    raise FileNotFoundError(f"nothing saved at {path} (expected {path / marker})")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line durably: a single ``write`` with ``O_APPEND``, then fsync."""
    if "\n" in line.rstrip("\n"):
        raise ValueError("append_line writes exactly one line")
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # short writes are rare but possible
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
