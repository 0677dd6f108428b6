"""Built-in tasks: one module each, with a ``TASK`` dict of registration defaults.

A task module provides ``prompts(split)``, a ``gold_score(prompts, completions, metadata)``
scorer and ``TASK`` (the env kwargs its id is registered with).
"""

from __future__ import annotations

import importlib

from textenv.env.registration import register_env

__all__ = ["BUILTIN_TASKS", "register_builtin_tasks"]

# id → module. Modules import their heavy dependencies lazily, so `import textenv` stays fast.
BUILTIN_TASKS: dict[str, str] = {
    "textenv/Tiny-v0": "textenv.tasks.tiny",
    "textenv/Sentiment-v0": "textenv.tasks.sentiment",
    "textenv/Sort-v0": "textenv.tasks.sort",
}


def register_builtin_tasks() -> None:
    for env_id, module_name in BUILTIN_TASKS.items():
        module = importlib.import_module(module_name)
        register_env(env_id, **module.TASK)
