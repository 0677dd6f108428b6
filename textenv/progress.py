"""Progress output that suits where it goes.

On a terminal, a tqdm bar. In a file or a pipe (``textenv run > log``), a bar's carriage-return
redraws pile up (one run wrote 68 KB of them); there a plain line is written instead, at most
once every ``interval`` seconds plus one at the end, so a log stays readable. :func:`progress`
returns either with the same small interface (``update``, ``set_postfix``, ``close``, use as a
context manager).

This module sits at the bottom of the layers with :mod:`textenv.files`: it imports nothing of
the package.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["progress", "PlainProgress", "PLAIN_INTERVAL_S"]

# Three lines a minute at most: enough to follow a run in a log, few enough to read it.
PLAIN_INTERVAL_S = 20.0


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class PlainProgress:
    """A progress report for a file or pipe: ``desc: n/total unit (pct) elapsed, eta, postfix``
    as whole lines, at most one per ``interval`` seconds, and a last line on ``close``."""

    def __init__(
        self,
        total: int | None = None,
        *,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        file: IO[str] | None = None,
        interval: float = PLAIN_INTERVAL_S,
        quiet: bool = False,
    ) -> None:
        self.total = total
        self.quiet = quiet
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.file = file
        self.interval = interval
        self._initial = initial
        self._start = time.monotonic()
        self._last = self._start
        self._postfix = ""
        self._closed = False
        self._printed_n: int | None = None

    def _line(self) -> str:
        elapsed = time.monotonic() - self._start
        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        parts = [f"{self.desc}: {done} {self.unit}" if self.desc else f"{done} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{_format_duration(elapsed)} elapsed")
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        if self.total is not None and rate > 0 and self.n < self.total:
            parts.append(f"eta {_format_duration((self.total - self.n) / rate)}")
        if self._postfix:
            parts.append(self._postfix)
        return ", ".join(parts)

    def _write(self) -> None:
        if self.quiet:
            return
        out = self.file if self.file is not None else sys.stderr
        print(self._line(), file=out, flush=True)
        self._printed_n = self.n
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.interval:
            self._write()

    def set_postfix(
        self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        # ``refresh`` is tqdm's redraw switch, not a value to show (plain lines redraw nothing).
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._printed_n != self.n:
                self._write()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def progress(
    total: int | None = None,
    *,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    leave: bool = True,
    disable: bool = False,
    file: IO[str] | None = None,
    interval: float = PLAIN_INTERVAL_S,
) -> Any:
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`PlainProgress`.

    ``leave=False`` bars (inner loops) print nothing at all outside a terminal: their outer
    loop reports the progress. ``disable=True`` prints nothing anywhere (same interface).
    """
    stream = file if file is not None else sys.stderr
    if disable:
        return PlainProgress(total, desc=desc, unit=unit, initial=initial, quiet=True)
    if _is_terminal(stream):
        from tqdm.auto import tqdm  # optional at import time: the CLI's help stays light

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=file)
    return PlainProgress(
        total, desc=desc, unit=unit, initial=initial, file=file, interval=interval, quiet=not leave
    )
