"""What every benchmark script records: the machine and versions, and how loaded the machine was.

These machines are small and shared, so each measurement also records the share of the CPUs that
*other* processes used while it ran (read from ``/proc/stat``; Linux). Scripts import this module
as ``common`` (they put their own folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "machine_busy_seconds",
    "CPUClock",
    "machine_info",
    "record_session",
    "learn_to_checkpoints",
    "save_figure",
    "wait_for_quiet",
    "ResultsFile",
]


def machine_busy_seconds() -> float:
    """CPU-busy seconds of the whole machine since boot (all CPUs, minus idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class CPUClock:
    """Wall time, this process's CPU time and others' CPU use, summed over intervals.

    Use ``start()`` / ``stop()`` around each timed interval, or ``with CPUClock() as clock:``
    for one interval.
    """

    def __init__(self) -> None:
        self.wall = self.cpu = self.others = 0.0

    def start(self) -> CPUClock:
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self._busy0 = machine_busy_seconds()
        return self

    def stop(self) -> None:
        wall = time.perf_counter() - self._wall0
        cpu = time.process_time() - self._cpu0
        self.wall += wall
        self.cpu += cpu
        self.others += max(0.0, (machine_busy_seconds() - self._busy0) - cpu)

    def __enter__(self) -> CPUClock:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def others_share(self) -> float:
        """Share of the machine's CPUs that other processes used during the timed intervals."""
        return self.others / (max(self.wall, 1e-9) * (os.cpu_count() or 1))


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU count, torch threads and the versions a result depends on."""
    import gymnasium
    import stable_baselines3
    import torch
    import transformers

    import textenv

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gymnasium": gymnasium.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "textenv": textenv.__version__,
        "platform": platform.platform(),
        **extra,
    }


def learn_to_checkpoints(
    agent: Any, budget: int, checkpoints: Iterable[int], clock: CPUClock
) -> Iterator[int]:
    """Train ``agent`` one ``learn`` iteration at a time until it has seen each checkpoint's
    token count, and yield that count there. ``clock`` times the training only: what the caller
    does at a checkpoint (evaluating) is not counted."""
    for target in checkpoints:
        clock.start()
        while agent.tokens_seen < target:
            agent.learn(budget, iterations=1)
        clock.stop()
        yield target


def save_figure(fig: Any, axes: Iterable[Any], path: Path, title: str | None = None) -> None:
    """The benchmarks' house style for a finished figure: a light grid on every axis, a legend
    where anything is labelled, the title over all; saved at 110 dpi and closed (long runs redraw
    their figures after each point)."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def record_session(data: dict[str, Any]) -> None:
    """Record the machine in ``data["machine"]`` and append this session's command line, start
    time and OMP_NUM_THREADS to ``data["commands"]``: one entry per session, so a resumed run
    shows every command that contributed to its results."""
    data["machine"] = machine_info()
    data.setdefault("commands", []).append(
        {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }
    )


def wait_for_quiet(max_wait: float, threshold: float = 0.25, window: float = 2.0) -> float:
    """Wait (up to ``max_wait`` s) until others use < ``threshold`` of the CPUs over ``window``
    seconds; returns the share last seen (benchmarks record it). ``BENCH_MAX_QUIET_WAIT`` (seconds)
    overrides ``max_wait``: 0 on a dedicated many-core machine running several 1-thread runs side
    by side, where "others" are the sibling runs and waiting would only burn time."""
    max_wait = float(os.environ.get("BENCH_MAX_QUIET_WAIT", max_wait))
    deadline = time.time() + max_wait
    while True:
        with CPUClock() as clock:
            time.sleep(window)
        if clock.others_share < threshold or time.time() > deadline:
            return clock.others_share


class ResultsFile:
    """A JSON results file, loaded if it exists (so sweeps resume) and saved atomically."""

    def __init__(self, path: Path, empty: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else empty

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=float) + "\n")
        os.replace(tmp, self.path)
