"""Registering textenv ids with Gymnasium (single env + native vector env side by side)."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym

from textenv.env.config import EnvConfig

__all__ = ["register_env", "registered_ids", "make_lockstep_envs", "NAMESPACE"]

NAMESPACE = "textenv"


def register_env(env_id: str, **kwargs: Any) -> None:
    """Register ``env_id`` with JSON-serialisable env kwargs.

    ``max_episode_steps`` is set to ``max_new_tokens`` so Gymnasium's TimeLimit never cuts an
    episode before the env truncates it (which would lose the final reward).
    """
    json.dumps(kwargs)  # ids must be describable as JSON: models are named by spec strings
    EnvConfig(**kwargs)  # fail at registration, not at the user's first gym.make
    max_new_tokens = kwargs.get("max_new_tokens", EnvConfig.max_new_tokens)
    gym.register(
        id=env_id,
        entry_point="textenv.env.single:TextGenEnv",
        vector_entry_point="textenv.env.vector:TextGenVectorEnv",
        max_episode_steps=max_new_tokens,
        kwargs=kwargs,
    )


def registered_ids() -> list[str]:
    """Every id under the ``textenv/`` namespace, sorted."""
    return sorted(k for k in gym.registry if k.startswith(NAMESPACE + "/"))


def make_lockstep_envs(env_id: str, num_envs: int, **env_kwargs: Any) -> gym.vector.VectorEnv:
    """The native vector env in ``DISABLED`` autoreset mode: all rows start together at
    ``reset`` and finished rows wait for the next one (what the package's agents, evaluation and
    the SB3 adapter use). A ``max_new_tokens`` override also sets ``max_episode_steps``."""
    kwargs = dict(env_kwargs)
    if "max_new_tokens" in kwargs:
        kwargs.setdefault("max_episode_steps", kwargs["max_new_tokens"])
    kwargs["autoreset_mode"] = gym.vector.AutoresetMode.DISABLED
    return gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )
