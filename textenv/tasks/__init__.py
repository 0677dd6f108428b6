"""Built-in tasks: one module each with a typed :class:`TaskSpec` ``TASK``, and one registry.

A task module provides ``prompts(split)`` where its prompts are generated or shipped, a
``gold_score(prompts, completions, metadata)`` scorer, and ``TASK``. :data:`TASKS` is the one
list of tasks that registration, ``textenv run``, ``textenv sample`` and the benchmarks read.
Task modules import their heavy dependencies lazily, so ``import textenv`` stays fast.
"""

from __future__ import annotations

from textenv.env.registration import register_env
from textenv.tasks import sentiment, sort, tiny
from textenv.tasks.spec import TaskSpec

__all__ = ["TaskSpec", "TASKS", "get_task", "register_builtin_tasks"]

# name → spec, in the order listings show them.
TASKS: dict[str, TaskSpec] = {t.name: t for t in (sentiment.TASK, sort.TASK, tiny.TASK)}


def get_task(name: str) -> TaskSpec:
    """The built-in task called ``name`` (or registered as ``name``), or a ValueError listing them."""
    for spec in TASKS.values():
        if name in (spec.name, spec.env_id):
            return spec
    raise ValueError(f"unknown task {name!r}; built-in tasks: {sorted(TASKS)}")


def register_builtin_tasks() -> None:
    for spec in TASKS.values():
        register_env(spec.env_id, **spec)
