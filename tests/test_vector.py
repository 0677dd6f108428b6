"""The native vector env: autoreset modes, equivalence with single envs, batched model calls."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import textenv
from textenv.lm.models import load_causal_lm, load_frozen_causal_lm
from textenv.lm.sampling import SamplingConfig, generate
from textenv.rewards import load_reward

B = 4
KW = {
    "reference": "tiny",
    "reward": "tiny-rm",
    "gold": "textenv.tasks.tiny:gold_score",
    "max_prompt_tokens": 6,
    "max_new_tokens": 5,
    "max_episode_steps": 5,
    "kl_coef": 0.1,
}


def make_native(**extra):
    return gym.make_vec(
        "textenv/TextGen-v0", num_envs=B, vectorization_mode="vector_entry_point", **KW, **extra
    )


def scripted(steps: int, seed: int = 0):
    """Actions with some EOS (256) so episodes end at different steps, and log-probs."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(32, 127, size=(steps, B))
    actions[rng.random((steps, B)) < 0.15] = 256
    logprobs = -rng.uniform(0.5, 6.0, size=(steps, B))
    return actions, logprobs


@pytest.mark.parametrize("env_id", textenv.registered_ids())
def test_make_vec_works_for_every_id(env_id):
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    obs, reward, *_ = envs.step(envs.action_space.sample())
    assert envs.observation_space.contains(obs) and reward.shape == (2,)


@pytest.mark.parametrize("kl_reward", ["terminal", "per_token"])
def test_native_sync_and_single_envs_agree(kl_reward):
    steps = 14
    actions, logprobs = scripted(steps)
    native = make_native(kl_reward=kl_reward)
    sync = gym.make_vec(
        "textenv/TextGen-v0", num_envs=B, vectorization_mode="sync", **KW, kl_reward=kl_reward
    )
    singles = [gym.make("textenv/TextGen-v0", **KW, kl_reward=kl_reward) for _ in range(B)]

    obs_n, _ = native.reset(seed=7)
    obs_s, _ = sync.reset(seed=7)
    obs_1 = [env.reset(seed=7 + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_array_equal(obs_n["input_ids"], obs_s["input_ids"])
    np.testing.assert_array_equal(obs_n["input_ids"], np.stack([o["input_ids"] for o in obs_1]))
    single_done = [False] * B
    finals = 0
    for t in range(steps):
        native.unwrapped.set_action_logprobs(logprobs[t])
        for i in range(B):
            sync.envs[i].unwrapped.set_action_logprob(logprobs[t, i])
        obs_n, r_n, te_n, tr_n, info_n = native.step(actions[t])
        obs_s, r_s, te_s, tr_s, info_s = sync.step(actions[t])
        np.testing.assert_array_equal(obs_n["input_ids"], obs_s["input_ids"])
        np.testing.assert_allclose(r_n, r_s, atol=1e-5)
        np.testing.assert_array_equal(te_n, te_s)
        np.testing.assert_array_equal(tr_n, tr_s)
        for key in ("rm_score", "kl", "gold_score", "ref_logprobs"):
            if key in info_s:
                rows = info_s["_" + key]
                np.testing.assert_array_equal(rows, info_n["_" + key])
                for i in np.flatnonzero(rows):  # sync mode: per-env arrays of episode length
                    native_row = np.asarray(info_n[key][i], dtype=float).reshape(-1)
                    sync_row = np.asarray(info_s[key][i], dtype=float).reshape(-1)
                    np.testing.assert_allclose(native_row[: len(sync_row)], sync_row, atol=1e-5)
                    assert np.isnan(native_row[len(sync_row) :]).all()
        finals += int((te_n | tr_n).sum())
        for i, env in enumerate(singles):  # single envs: reset by hand, like NEXT_STEP does
            if single_done[i]:
                env.reset()
                single_done[i] = False
                continue
            env.unwrapped.set_action_logprob(logprobs[t, i])
            _, r, te, tr, info = env.step(int(actions[t, i]))
            assert r == pytest.approx(r_n[i], abs=1e-5)
            single_done[i] = te or tr
            if single_done[i]:
                assert info["text"] == info_n["text"][i]
    assert finals >= B  # the script exercised autoreset


def test_next_step_autoreset_semantics():
    envs = make_native()
    envs.reset(seed=0)
    eos = np.full(B, 256)
    _, r, terminated, _, info = envs.step(eos)
    assert terminated.all() and info["_rm_score"].all()
    obs, r, terminated, truncated, info = envs.step(np.full(B, 65))  # ignored: rows reset
    assert (r == 0).all() and not terminated.any() and not truncated.any()
    assert (obs["attention_mask"][:, 6:] == 0).all()  # fresh episodes, nothing generated
    assert "_logprob_source" in info and not info["_logprob_source"].any()


def test_disabled_mode_lockstep_and_pinned_prompts():
    envs = make_native(autoreset_mode=AutoresetMode.DISABLED)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    obs, info = envs.reset(seed=0, options={"prompts": ["Hello"] * B})
    assert set(info["prompt"]) == {"Hello"}
    envs.unwrapped.set_action_logprobs(np.full(B, -1.0))
    _, r, terminated, _, _ = envs.step(np.array([256, 65, 65, 65]))
    assert terminated.tolist() == [True, False, False, False]
    envs.unwrapped.set_action_logprobs(np.array([np.nan, -1, -1, -1]))
    obs, r, terminated, truncated, info = envs.step(np.array([65, 65, 65, 65]))
    assert r[0] == 0 and not terminated[0] and not truncated[0]
    assert obs["attention_mask"][0, 6:].sum() == 1  # row 0 ignored the action
    assert info["logprob_source"][1:].tolist() == ["agent"] * 3
    # restart only row 0
    obs, info = envs.reset(options={"reset_mask": np.array([True, False, False, False])})
    assert obs["attention_mask"][0, 6:].sum() == 0 and obs["attention_mask"][1, 6:].sum() == 2


class Counter:
    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self.hook)

    def hook(self, *args):
        self.calls += 1


@pytest.mark.parametrize("batch", [4, 16])
def test_one_reference_and_one_reward_call_per_finished_batch(batch):
    envs = gym.make_vec(
        "textenv/TextGen-v0",
        num_envs=batch,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.DISABLED,
        **KW,
    )
    ref = Counter(load_frozen_causal_lm("tiny"))
    rm = load_reward("tiny-rm")
    envs.reset(seed=0)
    ref.calls, rm_before = 0, rm.calls
    for _ in range(5):
        envs.unwrapped.set_action_logprobs(np.full(batch, -2.0))
        _, _, _, truncated, _ = envs.step(np.full(batch, 65))
    ref.handle.remove()
    assert truncated.all()
    assert ref.calls == 1 and rm.calls - rm_before == 1


def test_sampler_feeds_one_token_per_step_after_prefill():
    model = load_causal_lm("tiny")
    widths = []
    handle = model.transformer.register_forward_hook(
        lambda mod, args, kwargs, out: widths.append(out.last_hidden_state.shape[1]),
        with_kwargs=True,
    )
    ids = torch.randint(0, 256, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding on one row
    out = generate(
        model, ids, mask, 10, SamplingConfig(0.9, top_k=50), eos_token_id=256, suppress_eos=True
    )
    handle.remove()
    assert widths == [7] + [1] * 9
    assert out.tokens.shape == (3, 10) and out.mask.all()


def test_sampled_logprobs_are_those_of_the_sampling_distribution():
    from textenv.lm.sampling import next_token_logprobs, sample_tokens

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    cfg = SamplingConfig(temperature=0.5, top_k=2)
    lp = next_token_logprobs(logits, cfg)
    assert torch.isinf(lp[0, 2:]).all()
    expected = torch.log_softmax(torch.tensor([4.0, 2.0]), -1)
    torch.testing.assert_close(lp[0, :2], expected)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(2000):
        tok, tok_lp = sample_tokens(lp, gen)
        counts[tok] += 1
        assert tok_lp.item() == pytest.approx(lp[0, tok].item())
    assert counts[2:].sum() == 0
    assert counts[0] / 2000 == pytest.approx(expected.exp()[0].item(), abs=0.03)
    top_p = next_token_logprobs(logits, SamplingConfig(top_p=0.5))
    assert torch.isfinite(top_p).sum() == 1


def test_vector_bad_input():
    envs = make_native()
    with pytest.raises(RuntimeError, match="before reset"):
        envs.step(np.zeros(B, dtype=np.int64))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 999 \(row 1\) is outside the vocabulary"):
        envs.step(np.array([1, 999, 1, 1]))
    with pytest.raises(TypeError, match="integer token ids"):
        envs.step(np.array([1.5, 1, 1, 1]))
    with pytest.raises(ValueError, match="expected actions of shape"):
        envs.step(np.array([1, 1]))
    with pytest.raises(ValueError, match=r"log π must have shape \(4,\), one per env"):
        envs.unwrapped.set_action_logprobs([0.0])
    with pytest.raises(ValueError, match="options\\['prompts'\\] must hold 4 prompts"):
        envs.reset(options={"prompts": ["a", "b"]})
