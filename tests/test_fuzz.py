"""Property-based tests: whatever a user passes, the env either refuses it with a clear error
(naming the parameter or the file:line) or runs, and a run never yields a non-finite or absurd
reward, a torn episode or an observation outside its space.

Tiny models, one shared env per kind, few examples: the whole file runs in seconds.
"""

from __future__ import annotations

import functools
import json
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from textenv.env.config import EnvConfig
from textenv.env.kl import LOGPROB_MIN
from textenv.env.prompts import PromptError
from textenv.preferences.records import PreferenceFormatError, read_preferences
from textenv.rewards import RewardModelError, check_scores

FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KW = {
    "reference": "tiny",
    "reward": "tiny-rm",
    "max_prompt_tokens": 6,
    "max_new_tokens": 3,
    "max_episode_steps": 3,
    "kl_coef": 0.1,
}
V = 257  # the tiny models' vocabulary
B = 3

# Anything a user might pass where a number, an id or a list is expected.
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.floats(allow_nan=True), max_size=4),
    st.builds(np.array, st.lists(st.integers(-5, 300), max_size=4)),
    st.builds(lambda x: torch.tensor(x), st.floats(-2000, 10, allow_nan=False)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@functools.cache
def single_env(estimator: str = "k1", kl_reward: str = "terminal"):
    return gym.make(
        "textenv/TextGen-v0", **dict(KW, kl_estimator=estimator, kl_reward=kl_reward)
    ).unwrapped


@functools.cache
def vector_env(autoreset: str = "NEXT_STEP"):
    kwargs = {k: v for k, v in KW.items() if k != "max_episode_steps"}
    return gym.make_vec(
        "textenv/TextGen-v0",
        num_envs=B,
        vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode[autoreset],
        **kwargs,
    ).unwrapped


def _run_to_end(env, logprob=-3.0, token=65):
    """Finish the current episode of a single env; returns the summed reward and last info."""
    total, info = 0.0, {}
    for _ in range(KW["max_new_tokens"]):
        env.set_action_logprob(logprob)
        obs, r, terminated, truncated, info = env.step(token)
        assert env.observation_space.contains(obs)
        total += r
        if terminated or truncated:
            return total, info
    raise AssertionError("the episode did not end at max_new_tokens")


def _refused(set_logprobs, value) -> bool:
    """Hand `value` to an env's log-prob setter: True when it is refused, which must be with a
    TypeError/ValueError naming log π; False when it is taken."""
    try:
        set_logprobs(value)
    except (TypeError, ValueError) as exc:
        assert "log π" in str(exc)
        return True
    return False


# --------------------------------------------------------------------------- actions


@FAST
@given(action=ANYTHING)
def test_any_action_is_refused_or_stepped(action):
    env = single_env()
    env.reset(seed=0)
    env.set_action_logprob(-2.0)
    try:
        obs, reward, terminated, truncated, info = env.step(action)
    except (TypeError, ValueError) as exc:
        assert "action" in str(exc)
        _run_to_end(env)  # a refused action changed nothing: the episode goes on
        return
    assert env.observation_space.contains(obs) and math.isfinite(reward)


@FAST
@given(actions=ANYTHING)
def test_any_vector_action_is_refused_or_stepped(actions):
    envs = vector_env()
    envs.reset(seed=0)
    try:
        obs, rewards, *_ = envs.step(actions)
    except (TypeError, ValueError) as exc:
        assert "action" in str(exc)
        envs.step(np.full(B, 65))
        return
    assert envs.observation_space.contains(obs) and np.isfinite(rewards).all()


# --------------------------------------------------------------------------- log π values


@FAST
@given(
    logprob=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=LOGPROB_MIN, max_value=0.0),
        st.sampled_from([LOGPROB_MIN, 0.0, 1e-4, -1e300, 1e-300, -0.0]),
        ANYTHING,
    ),
    estimator=st.sampled_from(["k1", "k2", "k3"]),
    kl_reward=st.sampled_from(["terminal", "per_token"]),
    token=st.integers(0, V - 1),
)
def test_any_logprob_is_refused_or_gives_a_finite_bounded_reward(
    logprob, estimator, kl_reward, token
):
    env = single_env(estimator, kl_reward)
    env.reset(seed=0)
    if _refused(env.set_action_logprob, logprob):
        return
    total, info = _run_to_end(env, env._pending_logprob, token)
    # Bounds of the checked inputs: |log π| ≤ 1000, k3's log ratio clamped to ±10.
    assert math.isfinite(total) and abs(total) < 1e6
    assert np.isfinite(info["kl"]) and np.isfinite(info["ref_logprobs"]).all()


@FAST
@given(
    values=st.one_of(
        ANYTHING,
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=B, max_size=B),
        st.builds(
            lambda s, v: np.full(s, v),
            st.sampled_from([(B,), (1, B), (B, 1), (B + 1,)]),
            st.floats(-1200, 1),
        ),
        st.lists(st.one_of(st.none(), st.booleans(), st.floats(-5, 0)), min_size=B, max_size=B),
    )
)
def test_any_vector_logprobs_are_refused_or_used(values):
    envs = vector_env()
    envs.reset(seed=0)
    if _refused(envs.set_action_logprobs, values):
        return
    pending = envs._pending
    assert pending.shape == (B,) and np.all(np.isnan(pending) | (pending <= 0))
    for _ in range(KW["max_new_tokens"]):
        envs.set_action_logprobs(pending)
        _, rewards, *_ = envs.step(np.full(B, 66))
        assert np.isfinite(rewards).all() and (np.abs(rewards) < 1e6).all()


# --------------------------------------------------------------------------- reset options


@FAST
@given(
    options=st.one_of(
        ANYTHING,
        st.dictionaries(
            st.sampled_from(["prompt", "prompts", "reset_mask", "seed", "Prompt", ""]),
            ANYTHING,
            max_size=3,
        ),
    ),
    seed=ANYTHING,
)
def test_any_reset_options_are_refused_or_start_an_episode(options, seed):
    for env in (single_env(), vector_env()):
        try:
            obs, info = env.reset(seed=seed, options=options)
        except (TypeError, ValueError) as exc:  # PromptError is a ValueError
            text = str(exc)
            assert any(w in text for w in ("seed", "option", "prompt", "reset_mask")), text
            continue
        assert env.observation_space.contains(obs)
        assert "prompt_tokens" in info and "eos_token_id" in info


# --------------------------------------------------------------------------- env kwargs

FIELDS = [f for f in EnvConfig.__dataclass_fields__]


@FAST
@given(name=st.sampled_from(FIELDS), value=ANYTHING)
def test_any_kwarg_value_is_refused_naming_it_or_kept_sane(name, value):
    try:
        config = EnvConfig(**{name: value})
    except (TypeError, ValueError) as exc:
        assert name in str(exc), (name, value, str(exc))
        return
    kept = getattr(config, name)
    assert not isinstance(kept, bool) or name == "prompts"
    if isinstance(kept, float):
        assert math.isfinite(kept)
    json.dumps({k: v for k, v in config.to_dict().items() if k != "prompts"})


# --------------------------------------------------------------------------- prompts

PROMPTS = st.one_of(
    st.text(max_size=30),  # any code point, lone surrogates and control characters included
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=30),
    st.text(st.sampled_from("\x00\x01\x07\x1b\x7f\u200b\u202e\ufeff\r\n\t "), max_size=20),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=3), st.integers(1000, 20000)),
)


@FAST
@given(prompt=PROMPTS)
def test_any_prompt_is_refused_clearly_or_played(prompt):
    env = single_env()
    try:
        obs, info = env.reset(seed=0, options={"prompt": prompt})
    except PromptError as exc:
        assert "not valid Unicode" in str(exc)
        assume(False)
    assert 1 <= info["prompt_tokens"] <= KW["max_prompt_tokens"]
    assert env.observation_space.contains(obs)
    total, info = _run_to_end(env)
    assert math.isfinite(total) and info["prompt"] == prompt


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompts=st.lists(PROMPTS, min_size=1, max_size=4))
def test_any_prompt_list_is_refused_clearly_or_accepted(prompts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            env = gym.make("textenv/TextGen-v0", **dict(KW, prompts=prompts), split="all")
        except PromptError as exc:
            assert "prompt " in str(exc) and "not valid Unicode" in str(exc)
            return
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)


# --------------------------------------------------------------------------- preference files

LINES = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda d: json.dumps(d).encode(),
        st.dictionaries(
            st.sampled_from(["prompt", "chosen", "rejected", "margin", "x"]),
            st.one_of(
                st.text(max_size=8), st.integers(), st.none(), st.lists(st.text(), max_size=2)
            ),
            max_size=5,
        ),
    ),
    st.just(b'{"prompt": "p", "chosen": "a", "rejected": "b"}'),
    st.just(b'{"prompt": "p", "chosen": "\\ud800", "rejected": "b"}'),
)


@FAST
@given(lines=st.lists(LINES, min_size=1, max_size=5))
def test_any_preference_file_reads_or_fails_with_file_and_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("prefs") / "p.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    try:
        pairs = read_preferences(path)
    except PreferenceFormatError as exc:
        assert f"{path}:" in str(exc) or "empty" in str(exc) or "no " in str(exc), str(exc)
        return
    for pair in pairs:
        for text in (pair.prompt, pair.chosen, pair.rejected):
            text.encode("utf-8")  # what was accepted is valid text


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_boundary_logprobs_with_every_estimator(estimator):
    """The extremes of the accepted range, deterministically (hypothesis may not draw them)."""
    env = single_env(estimator, "per_token")
    for logprob in (LOGPROB_MIN, 0.0):
        env.reset(seed=0)
        total, _ = _run_to_end(env, logprob)
        assert math.isfinite(total) and abs(total) < 1e6


# --------------------------------------------------------------------------- reward outputs


@FAST
@given(raw=st.one_of(ANYTHING, st.lists(ANYTHING, min_size=2, max_size=2)))
def test_any_reward_output_is_refused_or_two_finite_floats(raw):
    try:
        values = check_scores(raw, 2, name="reward 'r'")
    except RewardModelError as exc:
        assert "reward 'r'" in str(exc)
        return
    assert values.dtype == np.float64 and values.shape == (2,) and np.isfinite(values).all()
    flat = raw if isinstance(raw, list) else []
    assert not any(isinstance(x, (bool, str)) for x in flat)  # never read as numbers
