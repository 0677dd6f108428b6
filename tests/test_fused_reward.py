"""The fused reward head: trained as a linear probe, one forward gives log ρ and the reward."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from textenv.lm.models import load_frozen_causal_lm
from textenv.preferences import PreferencePair
from textenv.rewards import load_reward
from textenv.rewards.fused import FusedRewardHead
from textenv.training.fused_head import train_fused_head


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(120):
        stem = "".join(rng.choice(list("klmnprst"), size=4))
        pairs.append(PreferencePair(f"p{i % 30} ", stem + "aaa", stem + "zzz"))
    out = tmp_path_factory.mktemp("fused")
    metrics = train_fused_head(pairs, out, reference="tiny", epochs=30, val_fraction=0.2)
    return out, metrics


def test_linear_probe_learns_a_separable_preference(head_dir):
    _, metrics = head_dir
    assert metrics["train_accuracy"] > 0.95 and metrics["val_accuracy"] > 0.9


def test_folder_loads_as_a_shared_reward(head_dir):
    folder, _ = head_dir
    head = load_reward(str(folder))
    assert isinstance(head, FusedRewardHead)
    assert head is load_reward(str(folder))
    assert head.model is load_frozen_causal_lm("tiny")
    good, bad = head(["p1 ", "p1 "], ["kkkkaaa", "kkkkzzz"], [{}, {}])
    assert good > bad


def test_env_gets_reference_and_reward_from_one_forward(head_dir):
    folder, _ = head_dir
    kwargs = dict(
        reference="tiny",
        reward=str(folder),
        prompts=["p1 ", "p2 "],
        split="all",
        max_prompt_tokens=4,
        max_new_tokens=3,
        max_episode_steps=3,
        kl_coef=0.0,
    )
    envs = gym.make_vec(
        "textenv/TextGen-v0",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
        **kwargs,
    )
    head = load_reward(str(folder))
    calls = []
    hook = head.model.register_forward_hook(lambda *a: calls.append(1))
    envs.reset(seed=0, options={"prompts": ["p1 ", "p1 "]})
    before = head.calls
    for token in (107, 97, 97):  # "kaa"
        envs.unwrapped.set_action_logprobs(np.array([-1.0, -1.0]))
        *_, truncated, info = envs.step(np.array([token, token]))
    hook.remove()
    assert truncated.all() and len(calls) == 1 and head.calls - before == 1
    standalone = head(["p1 ", "p1 "], ["kaa", "kaa"], [{}, {}])
    np.testing.assert_allclose(info["rm_score"], standalone, atol=1e-4)
    # the reference log-probs match the unfused path
    plain = gym.make("textenv/TextGen-v0", **dict(kwargs, reward="tiny-rm"))
    plain.reset(seed=0, options={"prompt": "p1 "})
    for token in (107, 97, 97):
        plain.unwrapped.set_action_logprob(-1.0)
        *_, plain_info = plain.step(token)
    np.testing.assert_allclose(info["ref_logprobs"][0], plain_info["ref_logprobs"], atol=1e-5)
