"""The env knows rewards by capability: ids-reading rewards get the generated ids, text rewards
get text, and a reward sharing the reference's forward is found without naming its class."""

from __future__ import annotations

import ast
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from textenv.lm.models import load_tokenizer
from textenv.rewards import load_reward
from textenv.rewards.capabilities import (
    ReadsTokenIds,
    SharesReferenceForward,
    reads_token_ids,
    shares_reference_forward,
)
from textenv.rewards.fused import FusedRewardHead

ROOT = Path(__file__).resolve().parents[1]


def _run(envs, seed=0, eos_every=None):
    """A lockstep batch to the end with fixed random actions; the final infos."""
    obs, _ = envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    B, final = envs.num_envs, {}
    done = np.zeros(B, dtype=bool)
    while not done.all():
        actions = rng.integers(32, 127, size=B)
        _, _, term, trunc, info = envs.step(actions)
        for key in ("rm_score", "text", "prompt"):
            if "_" + key in info:
                rows = info["_" + key]
                final.setdefault(key, np.empty(B, dtype=object))
                final[key][rows] = info[key][rows]
        done |= term | trunc
    return final


def _envs(tiny_kwargs, **kw):
    return gym.make_vec(
        "textenv/TextGen-v0",
        num_envs=4,
        vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
        **{**tiny_kwargs, "prompts": ["Hello", "abcdef", "x", "ab"], **kw},
    )


def test_rm_on_the_policy_tokenizer_reads_ids_and_scores_as_the_text_path(tiny_kwargs):
    envs = _envs(tiny_kwargs)
    core = envs.unwrapped.core
    assert core.reward_reads_ids  # tiny-rm shares the tiny reference's byte tokenizer
    rm = load_reward(tiny_kwargs["reward"])
    assert isinstance(rm, ReadsTokenIds)
    calls = rm.calls
    final = _run(envs)
    assert rm.calls == calls + 1  # one batched forward for the four rows that ended together
    # The text path (decode, re-tokenise) scores the same: prompts here fit max_prompt_tokens.
    text_scores = rm(list(final["prompt"]), list(final["text"]), [{}] * 4)
    np.testing.assert_allclose(final["rm_score"].astype(float), text_scores, atol=1e-5)


def test_text_rewards_still_get_text(tiny_kwargs):
    seen = []

    def by_length(prompts, completions, metadata):
        seen.extend(completions)
        return [float(len(c)) for c in completions]

    envs = _envs(tiny_kwargs, reward=by_length)
    assert not envs.unwrapped.core.reward_reads_ids
    final = _run(envs)
    assert all(isinstance(c, str) for c in seen)
    assert [float(len(t)) for t in final["text"]] == list(final["rm_score"])


class CountIds:
    """A reward that says it may read the env's ids: the number of generated ids."""

    def __init__(self):
        self.got_ids = 0

    def __call__(self, prompts, completions, metadata):
        return [-1.0] * len(completions)  # the text path would give -1

    def reads_token_ids(self, tokenizer):
        return True

    def score_token_ids(self, prompt_ids, completion_ids, metadata):
        self.got_ids += 1
        assert all(isinstance(i, int) for row in completion_ids for i in row)
        return [float(len(c)) for c in completion_ids]


def test_a_reward_that_says_it_reads_ids_gets_them(tiny_kwargs):
    reward = CountIds()
    assert isinstance(reward, ReadsTokenIds)
    envs = _envs(tiny_kwargs, reward=reward)
    final = _run(envs)
    assert reward.got_ids == 1
    assert list(final["rm_score"]) == [float(tiny_kwargs["max_new_tokens"])] * 4


def test_shared_forward_is_a_capability_not_a_class(tmp_path, tiny_kwargs):
    torch.manual_seed(0)
    head = FusedRewardHead(tiny_kwargs["reference"])
    assert isinstance(head, SharesReferenceForward) and isinstance(head, ReadsTokenIds)
    param = next(head.model.parameters())
    assert shares_reference_forward(head, tiny_kwargs["reference"], param.device, param.dtype)
    assert not shares_reference_forward(head, "tiny:seed=7", param.device, param.dtype)
    assert not shares_reference_forward(head, tiny_kwargs["reference"], param.device, torch.half)
    assert reads_token_ids(head, load_tokenizer(tiny_kwargs["reference"]))
    assert not shares_reference_forward(CountIds(), "tiny", param.device, param.dtype)

    folder = head.save(tmp_path / "head")
    envs = _envs(tiny_kwargs, reward=str(folder))
    core = envs.unwrapped.core
    assert core.shared_forward_reward is not None
    reward = core.shared_forward_reward
    calls = reward.calls
    final = _run(envs)
    assert reward.calls == calls + 1  # log ρ and the scores from one forward
    text_scores = reward(list(final["prompt"]), list(final["text"]), [{}] * 4)
    np.testing.assert_allclose(final["rm_score"].astype(float), text_scores, atol=1e-5)


@pytest.mark.parametrize("path", sorted((ROOT / "textenv" / "env").glob("*.py")))
def test_the_env_imports_no_concrete_reward_class(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert node.module != "textenv.rewards.fused", path
            names = {a.name for a in node.names}
            assert not names & {"FusedRewardHead", "SequenceClassifierReward"}, path
