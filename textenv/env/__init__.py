"""The MDP: :class:`EnvConfig`, the batched episode core, the single env, the native vector env,
KL estimators and controllers, prompt sources and id registration.

Imports are lazy (PEP 562) so that ``import textenv`` registers ids without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from textenv.env.config import EnvConfig

__all__ = ["EnvConfig", "TextGenEnv", "TextGenVectorEnv", "EpisodeBatch", "Finished"]

_LAZY = {
    "TextGenEnv": "textenv.env.single",
    "TextGenVectorEnv": "textenv.env.vector",
    "EpisodeBatch": "textenv.env.core",
    "Finished": "textenv.env.core",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'textenv.env' has no attribute {name!r}")
