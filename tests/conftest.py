from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# Tiny models gain little from threads, and on a small shared machine a second busy process makes
# multi-threaded torch stall on every op; subprocesses inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
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


# --------------------------------------------------------------------------- learning claims
#
# An "agent learns" test must fail when the agent cannot see the reward. On Tiny-v0 the reference
# is a random byte-level LM: about 2% of its characters are lowercase vowels, so sharpening or
# otherwise reshaping the reference does not raise the vowel fraction, only following the reward
# does. Each learning test trains twice with the same settings: on the vowel-fraction reward,
# and on a reward-shuffled control that hands every episode the score of a random *other*
# episode (same distribution of rewards, no relation to what was written). The real run must
# beat the margin and the control must fail it.

VOWELS = "textenv.tasks.tiny:gold_score"
SHUFFLED_VOWELS = "conftest:shuffled_vowel_reward"
LEARNING_MARGIN = 0.25  # gain in the held-out vowel fraction (gold score)


class _ShuffledReward:
    """A reward-blind control: each completion gets the true score of another, random one.

    Scores are drawn from a pool of the most recent true scores of *earlier* calls (the first
    call draws from its own scores), so a completion's reward is independent of its text."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.pool: list[float] = []

    def __call__(self, prompts, completions, metadata) -> np.ndarray:
        from textenv.tasks.tiny import gold_score

        true = gold_score(prompts, completions, metadata)
        source = np.asarray(self.pool if self.pool else true, dtype=np.float64)
        out = self.rng.choice(source, size=len(true))
        self.pool = (self.pool + list(true))[-4096:]
        return out


shuffled_vowel_reward = _ShuffledReward()


@pytest.fixture
def one_thread():
    """Learning tests run on one torch thread (the margins were measured that way)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class LearningRun:
    before: float  # vowel fraction (gold score) before training, 2 × num_envs episodes
    after: float
    agent: Any

    @property
    def gain(self) -> float:
        return self.after - self.before

    @property
    def learned(self) -> bool:
        """The vowel fraction rose by more than the margin (real runs must, controls must not)."""
        return self.gain > LEARNING_MARGIN


@pytest.fixture
def train_on_vowels(one_thread):
    """``train_on_vowels(AgentCls, ConfigCls, control=False, **config)`` → :class:`LearningRun`.

    Tiny-v0 with 8 new tokens, β = 0.01, 32 episodes per iteration, 20 iterations (lr 1e-3 unless
    given); ``control=True`` trains on the shuffled reward. Before / after are the gold score
    (the true vowel fraction, whatever reward was trained on) of 2 × 32 fixed-seed episodes."""
    import time

    def run(agent_cls, config_cls, *, control: bool = False, iterations: int = 20, **kw):
        shuffled_vowel_reward.reset(0)
        env_kwargs = {
            "reward": SHUFFLED_VOWELS if control else VOWELS,
            "max_new_tokens": 8,
            "kl_coef": 0.01,
        }
        base = dict(lr=1e-3, num_envs=32, minibatch_size=16, progress=False)
        config = config_cls(env_id="textenv/Tiny-v0", env_kwargs=env_kwargs, **{**base, **kw})
        agent = agent_cls(config)
        before = agent.evaluate(2)["env/gold_score"]
        t0 = time.perf_counter()
        agent.learn(10**6, iterations=iterations)
        elapsed = time.perf_counter() - t0
        after = agent.evaluate(2)["env/gold_score"]
        print(
            f"{agent_cls.__name__} {'control' if control else 'vowels'} {kw}: "
            f"vowel fraction {before:.3f} → {after:.3f} in {elapsed:.1f}s"
        )
        return LearningRun(before, after, agent)

    return run
