from __future__ import annotations

import os

# Tiny models gain little from threads, and on a small shared machine a second busy process makes
# multi-threaded torch stall on every op; subprocesses inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import textenv  # noqa: E402,F401  (registers the ids)

torch.set_num_threads(1)


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


LEARNING_ITERATIONS = 40


@pytest.fixture
def one_thread():
    """Learning tests run on one torch thread (the margins were measured that way)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def train_on_sort(one_thread):
    """``train_on_sort(AgentCls, ConfigCls, lr, **config)`` → (return before, after, agent):
    40 iterations of 64 episodes on Sort-v0, evaluated on 4 × 64 episodes with fixed seeds."""
    import time

    def run(agent_cls, config_cls, lr: float, **kw):
        config = config_cls(env_id="textenv/Sort-v0", lr=lr, num_envs=64, progress=False, **kw)
        agent = agent_cls(config)
        before = agent.evaluate(4)["env/return"]
        t0 = time.perf_counter()
        agent.learn(10**6, iterations=LEARNING_ITERATIONS)
        elapsed = time.perf_counter() - t0
        after = agent.evaluate(4)["env/return"]
        print(
            f"{agent_cls.__name__} lr={lr} {kw}: return {before:.3f} → {after:.3f} in {elapsed:.1f}s"
        )
        return before, after, agent

    return run
