"""The single env against the firm contract in DESIGN.md."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import textenv
from textenv.env.kl import kl_estimate
from textenv.lm.models import load_frozen_causal_lm, load_tokenizer
from textenv.rewards import RewardModelError

ALL_IDS = textenv.registered_ids()


def test_registry_has_generic_and_no_argument_ids():
    assert "textenv/TextGen-v0" in ALL_IDS
    assert "textenv/Tiny-v0" in ALL_IDS
    for env_id in ALL_IDS:
        spec = gym.spec(env_id)
        assert spec.vector_entry_point == "textenv.env.vector:TextGenVectorEnv"
        assert spec.max_episode_steps == spec.kwargs.get("max_new_tokens", 16)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_checkers_pass_on_every_registered_id(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(env_id)
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(gym.make(env_id), warn=False)
    env.close()


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_same_seed_same_episode(env_id):
    def run() -> list:
        env = gym.make(env_id)
        obs, _ = env.reset(seed=123)
        rng = np.random.default_rng(0)
        trace = [obs["input_ids"].copy()]
        done = False
        while not done:
            env.unwrapped.set_action_logprob(-float(rng.uniform(1, 5)))
            action = int(rng.integers(1, env.action_space.n))
            obs, reward, terminated, truncated, info = env.step(action)
            trace += [obs["input_ids"].copy(), reward]
            done = terminated or truncated
        trace.append(info["text"])
        return trace

    a, b = run(), run()
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_observation_layout(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **tiny_kwargs)
    obs, info = env.reset(seed=0, options={"prompt": "Hi"})
    P, N = 6, 5
    ids, mask = obs["input_ids"], obs["attention_mask"]
    assert ids.shape == mask.shape == (P + N,) and ids.dtype == np.int64
    assert mask.tolist() == [0] * 4 + [1] * 2 + [0] * N  # "Hi" = 2 byte tokens, left-padded
    pad = env.unwrapped.tokenizer.pad_token_id
    assert (ids[mask == 0] == pad).all()
    obs, *_ = env.step(65)
    assert obs["input_ids"][P] == 65 and obs["attention_mask"][P] == 1
    assert obs["attention_mask"][P + 1 :].sum() == 0


def test_over_long_prompt_is_left_truncated(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **tiny_kwargs)
    obs, _ = env.reset(seed=0, options={"prompt": "abcdefghij"})
    text = env.unwrapped.tokenizer.decode(obs["input_ids"][:6])
    assert text == "efghij"


def test_eos_terminates_and_length_truncates(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **tiny_kwargs)
    eos = env.unwrapped.tokenizer.eos_token_id
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(eos)
    assert terminated and not truncated and info["num_tokens"] == 1 and info["text"] == ""

    env.reset(seed=0)
    for step in range(5):
        _, _, terminated, truncated, info = env.step(70)
        assert not terminated
        assert truncated == (step == 4)
    assert info["num_tokens"] == 5 and info["text"] == "FFFFF"


def _hand_ref_logprobs(prompt: str, tokens: list[int], temperature: float = 1.0) -> np.ndarray:
    """Reference log-probs by brute force: one unbatched forward per prefix."""
    model = load_frozen_causal_lm("tiny")
    tok = load_tokenizer("tiny")
    ids = tok(prompt)["input_ids"]
    out = []
    for t, a in enumerate(tokens):
        x = torch.tensor([ids + tokens[:t]])
        with torch.no_grad():
            logits = model(input_ids=x).logits[0, -1] / temperature
        out.append(torch.log_softmax(logits.double(), -1)[a].item())
    return np.array(out)


@pytest.mark.parametrize("kl_reward", ["terminal", "per_token", "none"])
@pytest.mark.parametrize("with_logprobs", [True, False])
@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_reward_and_kl_against_hand_computation(tiny_kwargs, kl_reward, with_logprobs, estimator):
    temperature = 0.8
    env = gym.make(
        "textenv/TextGen-v0",
        **tiny_kwargs,
        kl_reward=kl_reward,
        kl_estimator=estimator,
        temperature=temperature,
    )
    env.reset(seed=0, options={"prompt": "Hello"})
    actions = [72, 101, 108, 108, 111]
    agent_lp = np.array([-1.0, -2.5, -0.3, -4.0, -1.7])
    rewards, sources = [], []
    for a, lp in zip(actions, agent_lp):
        if with_logprobs:
            env.unwrapped.set_action_logprob(lp)
        _, r, terminated, truncated, info = env.step(a)
        rewards.append(r)
        sources.append(info["logprob_source"])
    assert truncated and not terminated
    assert sources == (["agent"] * 5 if with_logprobs else ["none"] * 5)

    ref = _hand_ref_logprobs("Hello", actions, temperature)
    np.testing.assert_allclose(info["ref_logprobs"], ref, atol=1e-4)
    logp = agent_lp if with_logprobs else ref
    k = kl_estimate(logp, ref, estimator)
    beta = 0.1
    np.testing.assert_allclose(info["kl"], k.sum(), atol=1e-4)
    assert info["kl_coef"] == beta
    rm = info["rm_score"]
    if kl_reward == "terminal":
        expected = [0, 0, 0, 0, rm - beta * k.sum()]
    elif kl_reward == "per_token":
        expected = list(-beta * k)
        expected[-1] += rm
    else:
        expected = [0, 0, 0, 0, rm]
    np.testing.assert_allclose(rewards, expected, atol=1e-4)
    if not with_logprobs:
        assert info["kl"] == pytest.approx(0.0, abs=1e-9)


def test_missing_logprob_warns_once(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **tiny_kwargs)
    env.reset(seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.step(70)
        env.step(71)
    assert sum("log π" in str(w.message) for w in caught) == 1


def test_missing_eos_penalty(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **dict(tiny_kwargs, kl_coef=0.0), missing_eos_penalty=2.0)
    env.reset(seed=0)
    for _ in range(5):
        _, r, _, truncated, info = env.step(70)
    assert truncated and r == pytest.approx(info["rm_score"] - 2.0)


def test_kl_coef_can_be_set_and_is_validated(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **tiny_kwargs).unwrapped
    env.kl_coef = 0.3
    assert env.kl_coef == 0.3
    with pytest.raises(ValueError, match="β must be a finite number ≥ 0"):
        env.kl_coef = -1.0


def test_adaptive_kl_coefficient_moves(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **tiny_kwargs, kl_target=0.01, kl_horizon=10)
    env.reset(seed=0)
    for _ in range(5):
        env.unwrapped.set_action_logprob(-0.01)  # far more confident than ρ → KL ≫ target
        *_, info = env.step(70)
    assert info["kl"] > 0.01
    assert env.unwrapped.kl_coef > 0.1


def test_gold_score_and_final_info_keys():
    env = gym.make("textenv/Tiny-v0")
    env.reset(seed=1)
    done = False
    while not done:
        env.unwrapped.set_action_logprob(-3.0)
        _, _, terminated, truncated, info = env.step(97)  # "a"
        done = terminated or truncated
    for key in (
        "rm_score",
        "kl",
        "kl_coef",
        "ref_logprobs",
        "logprob_source",
        "text",
        "gold_score",
    ):
        assert key in info
    assert info["gold_score"] == 1.0  # all vowels


def test_render_ansi(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **tiny_kwargs, render_mode="ansi")
    env.reset(seed=0, options={"prompt": "Hi"})
    env.step(33)
    assert "Hi" in env.render() and "!" in env.render()


def test_max_episode_steps_mismatch_raises(tiny_kwargs):
    kwargs = dict(tiny_kwargs, max_episode_steps=3)
    env = gym.make("textenv/TextGen-v0", **kwargs)
    with pytest.raises(ValueError, match="max_episode_steps=3 does not match max_new_tokens=5"):
        env.reset(seed=0)
    # the native vector env has no TimeLimit: overriding max_new_tokens alone is safe there
    envs = gym.make_vec(
        "textenv/TextGen-v0", num_envs=2, vectorization_mode="vector_entry_point", max_new_tokens=3
    )
    envs.reset(seed=0)
    for _ in range(3):
        *_, truncated, _ = envs.step(np.array([65, 65]))
    assert truncated.all()


def test_frozen_models_are_shared_between_envs(tiny_kwargs):
    a = gym.make("textenv/TextGen-v0", **tiny_kwargs).unwrapped
    b = gym.make("textenv/TextGen-v0", **tiny_kwargs).unwrapped
    assert a.core.reference is b.core.reference
    assert a.core.reward_fn is b.core.reward_fn


# ---------------------------------------------------------------------------- bad input


def test_bad_actions(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **tiny_kwargs)
    env.reset(seed=0)
    V = env.action_space.n
    with pytest.raises(ValueError, match=rf"action {V} is outside the vocabulary \[0, {V}\)"):
        env.step(V)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        env.step(-1)
    with pytest.raises(TypeError, match="action must be an integer token id"):
        env.step(3.5)
    with pytest.raises(TypeError, match="action must be an integer token id"):
        env.step("a")
    with pytest.raises(ValueError, match="log π must be a finite log-probability"):
        env.unwrapped.set_action_logprob(float("nan"))
    with pytest.raises(ValueError, match="log π must be a finite log-probability"):
        env.unwrapped.set_action_logprob(0.5)
    env.step(np.int64(5))  # numpy integers are fine, and the bad calls above changed nothing
    assert env.unwrapped.core.n_gen[0] == 1


def test_step_before_reset_and_after_end(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **tiny_kwargs).unwrapped
    with pytest.raises(RuntimeError, match=r"step\(\) called before reset\(\)"):
        env.step(1)
    env.reset(seed=0)
    env.step(env.tokenizer.eos_token_id)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(1)


def _nan_reward(prompts, completions, metadata):
    return [float("nan")] * len(completions)


def _inf_reward(prompts, completions, metadata):
    return [float("inf")] * len(completions)


def _short_reward(prompts, completions, metadata):
    return [0.0] * (len(completions) + 1)


@pytest.mark.parametrize(
    "reward, message",
    [
        (_nan_reward, r"non-finite score \(nan\)"),
        (_inf_reward, r"non-finite score \(inf\)"),
        (_short_reward, "returned 2 scores for 1 completions"),
    ],
)
def test_bad_reward_model_output(tiny_kwargs, reward, message):
    # A reward callable is tried once when the env is built: the error comes before any episode.
    with pytest.raises(RewardModelError, match=message):
        gym.make("textenv/TextGen-v0", **dict(tiny_kwargs, reward=reward))


def _nan_once_generating(prompts, completions, metadata):
    return [float("nan") if c else 0.0 for c in completions]


def test_bad_reward_output_at_episode_end(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **dict(tiny_kwargs, reward=_nan_once_generating))
    env.reset(seed=0)
    env.step(65)
    with pytest.raises(RewardModelError, match=r"non-finite score \(nan\)"):
        env.step(env.unwrapped.tokenizer.eos_token_id)


def test_bad_config_values(tiny_kwargs):
    with pytest.raises(ValueError, match="kl_reward must be one of"):
        gym.make("textenv/TextGen-v0", **tiny_kwargs, kl_reward="dense")
    with pytest.raises(ValueError, match="KL coefficient β must be a finite number ≥ 0"):
        gym.make("textenv/TextGen-v0", **dict(tiny_kwargs, kl_coef=-0.1))
    with pytest.raises(ValueError, match="kl_estimator must be one of"):
        gym.make("textenv/TextGen-v0", **tiny_kwargs, kl_estimator="k9")


def test_callable_reward_receives_prompts_completions_metadata(tiny_kwargs):
    seen = {}

    def reward(prompts, completions, metadata):
        seen.update(prompts=prompts, completions=completions, metadata=metadata)
        return [len(c) for c in completions]

    kwargs = dict(tiny_kwargs, reward=reward, prompts=[{"prompt": "Hey", "target": 3}])
    env = gym.make("textenv/TextGen-v0", **kwargs, split="all")
    env.reset(seed=0)
    env.step(65)
    *_, info = env.step(env.unwrapped.tokenizer.eos_token_id)
    assert seen == {"prompts": ["Hey"], "completions": ["A"], "metadata": [{"target": 3}]}
    assert info["rm_score"] == 1.0


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_bad_input_on_every_registered_id(env_id):
    env = gym.make(env_id).unwrapped
    with pytest.raises(RuntimeError, match=r"step\(\) called before reset\(\)"):
        env.step(0)
    env.reset(seed=0)
    V = env.action_space.n
    with pytest.raises(ValueError, match=rf"action {V} is outside the vocabulary"):
        env.step(V)
    with pytest.raises(TypeError, match="action must be an integer token id"):
        env.step(1.5)
    env.step(env.tokenizer.eos_token_id)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(0)
