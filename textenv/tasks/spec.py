"""The typed description of a built-in task: its id, models, prompts and lengths.

A :class:`TaskSpec` is also a read-only mapping of the env kwargs its id is registered with, so
``gym.make(spec.env_id, **overrides)`` and ``dict(spec)`` see the same values the registry does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["TaskSpec"]

# Fields that are registration metadata, not env kwargs.
_META = ("name", "env_id", "summary")


@dataclass(frozen=True)
class TaskSpec(Mapping[str, Any]):
    """One built-in task.

    Attributes:
        name: short name used by the CLI (``textenv run --task NAME``, ``textenv sample --task``).
        env_id: the registered Gymnasium id.
        summary: one line for listings.
        reference, reward, gold, prompts: spec strings (see :mod:`textenv.lm.models`,
            :mod:`textenv.rewards`); ``gold`` is the programmatic scorer reported in ``info``.
        max_prompt_tokens, max_new_tokens, kl_coef: the env's defaults for this task.
    """

    name: str
    env_id: str
    summary: str
    reference: str
    reward: str
    prompts: Any
    max_prompt_tokens: int
    max_new_tokens: int
    kl_coef: float
    gold: str | None = None

    def __post_init__(self) -> None:
        if not self.env_id.startswith("textenv/"):
            raise ValueError(
                f"task {self.name!r}: env_id must be under textenv/, got {self.env_id!r}"
            )
        json.dumps(dict(self))  # registered kwargs must be JSON

    def _keys(self) -> list[str]:
        return [
            f.name
            for f in fields(self)
            if f.name not in _META and getattr(self, f.name) is not None
        ]

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @property
    def has_gold(self) -> bool:
        """Whether the task has a gold scorer (the main job ``textenv run`` needs one)."""
        return self.gold is not None
