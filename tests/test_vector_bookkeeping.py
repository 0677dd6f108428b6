"""The envs' per-step bookkeeping gives exactly what the straightforward version gave.

The vector env builds its step and reset results with few numpy calls (the per-step cost of the
env is paid per call); the single env and the vector env take a sampler's log π through a fast
path. These tests pin all of it to the plain construction (:class:`PlainVectorEnv`, the envs'
earlier code kept here as the reference): the same observations, rewards (to the bit, the sign
of zero included), flags and info arrays, dtypes included; the same refusals.
"""

from __future__ import annotations

import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st

from textenv.env.kl import LogProbMissingError, check_logprob, check_logprobs
from textenv.env.single import TextGenEnv
from textenv.env.vector import TextGenVectorEnv

B = 4
KW = {
    "reference": "tiny",
    "reward": "tiny-rm",
    "gold": "textenv.tasks.tiny:gold_score",
    "max_prompt_tokens": 6,
    "max_new_tokens": 5,
    "kl_coef": 0.1,
}


class PlainVectorEnv(TextGenVectorEnv):
    """The vector env with the plain bookkeeping: one numpy call per fact, per-row dicts."""

    def set_action_logprobs(self, logprobs):
        self._pending = check_logprobs(logprobs, self.num_envs)

    def _draw_prompt(self, row):
        """Numpy's own generator per row (Gymnasium's sub-env ``row``), not the env's streams."""
        prompts = self.core.prompts
        return prompts[int(self._rngs[row].integers(len(prompts)))]

    def reset(self, *, seed=None, options=None):
        B = self.num_envs
        if seed is not None:
            seeds = list(seed) if isinstance(seed, list) else [seed + i for i in range(B)]
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        options = options or {}
        rows = np.arange(B)
        if "reset_mask" in options:
            rows = np.flatnonzero(np.asarray(options["reset_mask"], dtype=bool))
        if "prompts" in options:
            prompts = [self.core.resolve_prompt(options["prompts"][r]) for r in rows]
        else:
            prompts = [self._draw_prompt(r) for r in rows]
        self.core.start(rows, prompts)
        self._needs_reset[rows] = False
        self._pending = None
        self._started = True
        core = self.core
        started = np.isin(np.arange(B), rows)
        per_row = [
            {
                "prompt": core.row_prompt[r].text,
                "prompt_tokens": int(core.obs_mask[r, : core.P].sum()),
                "pad_token_id": core.pad_id,
                "eos_token_id": core.eos_id,
                "bos_token_id": core.tokenizer.bos_token_id,
            }
            for r in range(B)
        ]
        info = {}
        for key in per_row[0]:
            values = [row[key] for row in per_row]
            kind = object if isinstance(values[0], str) or None in values else np.int64
            info[key], info["_" + key] = np.array(values, dtype=kind), started
        return core.observation(), info

    def step(self, actions):
        B, core = self.num_envs, self.core
        actions = self._validate_actions(actions)
        logprobs = self._pending if self._pending is not None else np.full(B, np.nan)
        rewards = np.zeros(B)
        terminated = np.zeros(B, dtype=bool)
        truncated = np.zeros(B, dtype=bool)
        reset_rows = np.flatnonzero(self._needs_reset)
        autoreset = self.autoreset_mode == AutoresetMode.NEXT_STEP and len(reset_rows) > 0
        if autoreset:
            stepped = np.flatnonzero(~self._needs_reset)
        else:
            stepped = np.flatnonzero(core.active)
        if np.isnan(logprobs[stepped]).any():
            core.warn_no_logprob()
        r, term, trunc, finished = core.apply(actions, logprobs, stepped)
        self._pending = None
        if autoreset:
            core.start(reset_rows, [self._draw_prompt(r) for r in reset_rows])
            self._needs_reset[reset_rows] = False
        rewards += r
        terminated |= term
        truncated |= trunc
        self._needs_reset |= term | trunc
        stepped_mask = np.zeros(B, dtype=bool)
        stepped_mask[stepped] = True
        source = np.where(np.isnan(logprobs), "none", "agent").astype(object)
        source[~stepped_mask] = ""
        info = {"logprob_source": source, "_logprob_source": stepped_mask}
        if finished is not None:
            info.update(self._final_info(finished))
        return core.observation(), rewards, terminated, truncated, info


def assert_identical(a, b, where):
    """Equal to the bit: same types, dtypes, shapes, values (NaN where NaN, the sign of 0)."""
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype == object:
            assert a.tolist() == b.tolist(), where
        else:
            assert a.tobytes() == b.tobytes(), where
    else:
        assert type(a) is type(b) and a == b, where


def scripted(steps: int, seed: int):
    """Actions with EOS (256) now and then, log π with some rows left out (NaN), some steps
    without any log π (None)."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(32, 127, size=(steps, B))
    actions[rng.random((steps, B)) < 0.2] = 256
    logprobs = -rng.uniform(0.0, 6.0, size=(steps, B)).astype(np.float32)
    logprobs[rng.random((steps, B)) < 0.2] = np.nan
    logprobs[:, 0] = np.where(rng.random(steps) < 0.3, 0.0, logprobs[:, 0])  # log π = log 1
    missing = rng.random(steps) < 0.15
    return actions, logprobs, missing


@pytest.mark.parametrize(
    "mode, kl_reward, estimator",
    [
        (AutoresetMode.NEXT_STEP, "terminal", "k1"),
        (AutoresetMode.NEXT_STEP, "per_token", "k3"),  # −β·0 = −0.0 on rows without log π
        (AutoresetMode.DISABLED, "terminal", "k1"),
        (AutoresetMode.DISABLED, "per_token", "k2"),
    ],
)
def test_vector_env_steps_and_resets_as_the_plain_construction(mode, kl_reward, estimator):
    kwargs = dict(KW, kl_reward=kl_reward, kl_estimator=estimator, autoreset_mode=mode, num_envs=B)
    fast, plain = TextGenVectorEnv(**kwargs), PlainVectorEnv(**kwargs)
    steps = 16
    actions, logprobs, missing = scripted(steps, seed=1)
    resets = {
        0: dict(seed=3),
        7: dict(seed=[5, 9, 2, 11], options={"reset_mask": [True, False, True, False]}),
        12: dict(options={"prompts": ["Hello", "a b", "xyz", "Hello"]}),
    }
    finals = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the once-only missing log π warning
        for t in range(steps):
            partial = "reset_mask" in resets.get(t, {}).get("options", {})
            if t in resets and not (partial and mode == AutoresetMode.NEXT_STEP):
                out = [env.reset(**resets[t]) for env in (fast, plain)]
                assert_identical(out[0], out[1], f"reset at step {t}")
            for env in (fast, plain):
                if not missing[t]:
                    env.set_action_logprobs(logprobs[t])
            out = [env.step(actions[t]) for env in (fast, plain)]
            assert_identical(out[0], out[1], f"step {t}")
            finals += int(out[0][4].get("_rm_score", np.zeros(B, bool)).sum())
    assert finals >= B  # episodes did end and were scored


def test_missing_log_pi_warns_and_require_raises_as_before():
    envs = TextGenVectorEnv(num_envs=B, **KW, autoreset_mode=AutoresetMode.DISABLED)
    envs.reset(seed=0)
    with pytest.warns(UserWarning, match="log"):
        envs.step(np.full(B, 65))
    strict = TextGenVectorEnv(num_envs=B, **KW, kl_logprob="require")
    strict.reset(seed=0)
    strict.set_action_logprobs(np.array([-1.0, np.nan, -1.0, -1.0]))
    with pytest.raises(LogProbMissingError):
        strict.step(np.full(B, 65))
    strict.set_action_logprobs(np.full(B, -1.0))
    strict.step(np.full(B, 65))  # with every row's log π: no complaint


def test_vector_reset_info_rows_are_the_single_envs_reset_info():
    envs = TextGenVectorEnv(num_envs=B, **KW)
    _, info = envs.reset(seed=4)
    for i in range(B):
        single = TextGenEnv(**KW)
        _, one = single.reset(seed=4 + i)
        assert list(one) == [k for k in info if not k.startswith("_")]
        for key, value in one.items():
            assert type(value) in (str, int, type(None)) and info[key][i] == value


SMALL = {"reference": "tiny", "reward": "tiny-rm", "max_prompt_tokens": 6, "max_new_tokens": 5}
ENVS_3, SINGLE = TextGenVectorEnv(num_envs=3, **SMALL), TextGenEnv(**SMALL)

finite = st.floats(-1100.0, 1e-3, allow_nan=False)
entries = st.one_of(finite, st.just(np.nan), st.just(-0.0), st.just(1e-4), st.just(-1000.0))
special = st.sampled_from([np.inf, -np.inf, 0.5, -1000.5, 2e-4])


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.one_of(entries, special), min_size=3, max_size=3),
    dtype=st.sampled_from([np.float64, np.float32, np.float16]),
)
def test_log_pi_fast_paths_accept_and_refuse_as_the_checkers(values, dtype):
    arr = np.asarray(values).astype(dtype)
    envs, single = ENVS_3, SINGLE
    try:
        expected = check_logprobs(arr, 3)
    except ValueError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            envs.set_action_logprobs(arr)
    else:
        envs.set_action_logprobs(arr)
        assert envs._pending.dtype == expected.dtype
        assert envs._pending.tobytes() == expected.tobytes()  # NaN rows and the sign of 0 too
        assert not np.shares_memory(envs._pending, arr)
    x = float(arr[0])
    try:
        expected_one = check_logprob(x)
    except ValueError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            single.set_action_logprob(x)
    else:
        single.set_action_logprob(x)
        assert type(single._pending_logprob) is float
        assert np.float64(single._pending_logprob).tobytes() == np.float64(expected_one).tobytes()


def test_vector_actions_are_checked_as_before():
    envs = TextGenVectorEnv(num_envs=B, **KW)
    envs.reset(seed=0)
    V = envs.core.vocab_size
    for bad, error, message in [
        (np.array([1, 2, -1, 3]), ValueError, r"action -1 \(row 2\) is outside"),
        (np.array([1, V, 2, 3]), ValueError, rf"action {V} \(row 1\) is outside"),
        (np.array([1.0, 2.0, 3.0, 4.0]), TypeError, "integer token ids"),
        (np.array([True, False, True, True]), TypeError, "integer token ids"),
        (np.array([1, 2, 3]), ValueError, "shape"),
    ]:
        with pytest.raises(error, match=message):
            envs.step(bad)
    for ok in (np.array([1, 2, 3, V - 1], dtype=np.uint16), [0, 1, 2, 3]):
        envs.step(ok)


def test_gym_make_vec_builds_the_env_these_tests_pin():
    envs = gym.make_vec(
        "textenv/TextGen-v0", num_envs=2, vectorization_mode="vector_entry_point", **KW
    )
    assert type(envs) is TextGenVectorEnv
