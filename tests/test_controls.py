"""The reward-blind control that every learning claim is tested against (tests/conftest.py).

* The shuffled reward really is blind: what a completion gets does not depend on its text.
* SB3: tests/test_sb3.py claims PPO raises the vowel fraction on Tiny-v0 by more than 0.15; the
  same run on the shuffled reward must not (the agents' own claims are in test_ppo / test_grpo /
  test_rloo; the main job's in test_pipeline).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHUFFLED_VOWELS, shuffled_vowel_reward
from sb3_curves import EpisodeInfoCurve
from stable_baselines3 import PPO

from agents.sb3 import LMActorCriticPolicy, lm_policy_kwargs, make_sb3_env
from textenv.rewards import load_reward
from textenv.tasks.tiny import gold_score

pytestmark = pytest.mark.usefixtures("one_thread")

SB3_MARGIN = 0.15  # tests/test_sb3.py::test_reward_rises_on_tiny_task


def test_shuffled_reward_is_blind_to_the_completion():
    assert load_reward(SHUFFLED_VOWELS) is shuffled_vowel_reward  # the spec the fixture uses
    prompts, meta = ["p"] * 6, [{}] * 6
    earlier = ["aaaa", "xxxx", "aaxx", "axxx", "aaax", "xxxx"]
    rewards = []
    for batch in (["aaaa"] * 6, ["zzzz"] * 6):
        shuffled_vowel_reward.reset(3)
        shuffled_vowel_reward(prompts, earlier, meta)  # fills the pool
        rewards.append(shuffled_vowel_reward(prompts, batch, meta))
    np.testing.assert_array_equal(rewards[0], rewards[1])  # all vowels or none: same rewards
    assert set(rewards[0]) <= set(gold_score(prompts, earlier, meta))
    assert len(set(rewards[0])) > 1  # not a constant: the agent still gets a learning signal
    shuffled_vowel_reward.reset(0)
    first = shuffled_vowel_reward(prompts, earlier, meta)  # the first call: its own scores
    assert sorted(set(first)) == sorted(set(first) & set(gold_score(prompts, earlier, meta)))


def test_sb3_ppo_on_the_shuffled_control_fails_the_margin():
    """tests/test_sb3.py's learning run (lm policy), on the shuffled reward. Measured: the real
    run 0.021 → 0.718, this control 0.021 → 0.028 (margin 0.15)."""
    shuffled_vowel_reward.reset(0)
    env = make_sb3_env(
        "textenv/Tiny-v0", n_envs=8, seed=0, max_new_tokens=4, reward=SHUFFLED_VOWELS
    )
    model = PPO(
        LMActorCriticPolicy,
        env,
        policy_kwargs=lm_policy_kwargs(env),
        n_steps=32,
        batch_size=64,
        n_epochs=4,
        learning_rate=1e-3,
        seed=0,
        device="cpu",
    )
    curve = EpisodeInfoCurve("gold_score")  # the true vowel fraction
    model.learn(6144, callback=curve)
    first, last = np.mean(curve.means[:3]), np.mean(curve.means[-3:])
    print(f"SB3 PPO control: vowel fraction {first:.3f} → {last:.3f}")
    assert not last > first + SB3_MARGIN, curve.means
