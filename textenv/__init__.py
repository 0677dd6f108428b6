"""textenv: RLHF as a Gymnasium environment.

``import textenv`` registers the ``textenv/…`` ids::

    import gymnasium as gym
    import textenv  # noqa: F401

    env = gym.make("textenv/Tiny-v0")
    envs = gym.make_vec("textenv/Tiny-v0", num_envs=8, vectorization_mode="vector_entry_point")
"""

from __future__ import annotations

from textenv.env.config import EnvConfig
from textenv.env.registration import register_env, registered_ids
from textenv.tasks import register_builtin_tasks

__version__ = "0.1.0"
__all__ = ["EnvConfig", "register_env", "registered_ids", "__version__"]

# The generic id: everything configured by JSON-serialisable kwargs (defaults: tiny models).
register_env("textenv/TextGen-v0")
register_builtin_tasks()
