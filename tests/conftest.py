from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import textenv  # noqa: E402,F401  (registers the ids)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_kwargs() -> dict:
    """Kwargs of a small, fast env on tiny models (for gym.make("textenv/TextGen-v0", ...))."""
    return {
        "reference": "tiny",
        "reward": "tiny-rm",
        "max_prompt_tokens": 6,
        "max_new_tokens": 5,
        "max_episode_steps": 5,
        "kl_coef": 0.1,
    }
