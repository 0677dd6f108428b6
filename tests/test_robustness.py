"""Regression tests for inputs that once corrupted the env, gave absurd numbers or unclear errors.

Each test names the defect it guards against; the property-based versions are in test_fuzz.py.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from bos_tokenizer import bos_byte_tokenizer

from textenv.env.config import EnvConfig
from textenv.env.kl import LogProbMissingError
from textenv.env.prompts import PromptEncoder, PromptError
from textenv.lm import models
from textenv.lm.models import (
    ModelLoadError,
    byte_tokenizer,
    load_sequence_classifier,
    model_cache_size,
)
from textenv.lm.padding import encode_texts, left_pad_encode
from textenv.preferences.records import PreferenceFormatError, read_preferences
from textenv.progress import PlainProgress, progress
from textenv.rewards import RewardModelError, load_reward

KW = {
    "reference": "tiny",
    "reward": "tiny-rm",
    "max_prompt_tokens": 6,
    "max_new_tokens": 4,
    "max_episode_steps": 4,
    "kl_coef": 0.1,
}
VEC = {k: v for k, v in KW.items() if k != "max_episode_steps"}
EOS = 256


class FlakyReward:
    """Raises on the first ``fail`` calls that score a non-empty completion, then scores length."""

    def __init__(self, fail: int = 1) -> None:
        self.fail = fail

    def __call__(self, prompts, completions, metadata):
        if any(completions) and self.fail > 0:
            self.fail -= 1
            raise RuntimeError("reward service unavailable")
        return [float(len(c)) for c in completions]


# --------------------------------------------------------------------------- raising reward


@pytest.mark.parametrize("kl_reward", ["terminal", "per_token"])
def test_single_env_survives_a_raising_reward(kl_reward):
    reward = FlakyReward()
    env = gym.make("textenv/TextGen-v0", **dict(KW, reward=reward, kl_reward=kl_reward))
    env.reset(seed=0, options={"prompt": "Hi"})
    for token in (65, 66, 67):
        env.unwrapped.set_action_logprob(-5.0)
        env.step(token)
    env.unwrapped.set_action_logprob(-5.0)
    with pytest.raises(RuntimeError, match="reward service unavailable"):
        env.step(68)
    # The same step again: same episode, now scored (the log π stayed pending).
    obs, reward_value, terminated, truncated, info = env.step(68)
    assert truncated and info["text"] == "ABCD" and info["rm_score"] == 4.0
    assert info["logprob_source"] == "agent" and info["num_tokens"] == 4
    assert obs["attention_mask"].sum() == 2 + 4 and np.isfinite(reward_value)
    # And a reset after a failure works too.
    reward.fail = 1
    env.reset(seed=1, options={"prompt": "Hi"})
    for token in (65, 66, 67):
        env.step(token)
    with pytest.raises(RuntimeError):
        env.step(EOS)
    env.reset(seed=2)
    for token in (70, 71, 72, 73):
        *_, info = env.step(token)
    assert info["text"] == "FGHI"


@pytest.mark.parametrize(
    "mode", [gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.DISABLED]
)
def test_vector_env_survives_a_raising_reward(mode):
    reward = FlakyReward()
    envs = gym.make_vec(
        "textenv/TextGen-v0",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        autoreset_mode=mode,
        **dict(VEC, reward=reward),
    )
    envs.reset(seed=0, options={"prompts": ["a", "b", "c"]})
    actions = np.array([65, 66, 67])
    for _ in range(3):
        envs.step(actions)
    envs.unwrapped.set_action_logprobs(np.full(3, -4.0))
    with pytest.raises(RuntimeError, match="reward service unavailable"):
        envs.step(actions)
    _, rewards, _, truncated, info = envs.step(actions)
    assert truncated.all() and list(info["text"]) == ["AAAA", "BBBB", "CCCC"]
    assert (info["logprob_source"] == "agent").all() and np.isfinite(rewards).all()
    envs.reset(seed=1)
    envs.step(actions)  # still usable after a reset


# --------------------------------------------------------------------------- absurd rewards


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("kl_reward", ["terminal", "per_token"])
def test_extreme_accepted_logprobs_give_finite_bounded_rewards(estimator, kl_reward):
    env = gym.make(
        "textenv/TextGen-v0", **dict(KW, kl_estimator=estimator, kl_reward=kl_reward)
    ).unwrapped
    for logprob in (-1000.0, 0.0, 1e-5):
        env.reset(seed=0)
        total = 0.0
        for _ in range(4):
            env.set_action_logprob(logprob)
            _, r, *_ = env.step(65)
            total += r
        # 4 tokens, β = 0.1: per-token k1 ≤ 1000 + |log ρ|, k2 ≤ that²/2, k3 ≤ e^10
        assert np.isfinite(total) and abs(total) < 1e6


@pytest.mark.parametrize("bad", [-1e300, -1001.0, 1e-3, 0.5, float("inf"), float("nan")])
def test_out_of_range_logprobs_are_rejected_naming_the_value(bad):
    env = gym.make("textenv/TextGen-v0", **KW).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"log π must be a finite log-probability in \[-1000, 0\]"):
        env.set_action_logprob(bad)


def test_temperature_inf_and_tiny_rejected():
    with pytest.raises(ValueError, match="temperature must be finite"):
        EnvConfig(temperature=float("inf"))
    with pytest.raises(ValueError, match="temperature must be a finite number ≥ 0.001"):
        EnvConfig(temperature=1e-9)


@pytest.mark.parametrize("scores", [["1.0"], [True], np.array([False]), "1", [None]])
def test_string_and_bool_scores_rejected(scores):
    def reward(prompts, completions, metadata):
        return scores

    with pytest.raises(RewardModelError, match="reward 'test_string_and_bool_scores_rejected"):
        gym.make("textenv/TextGen-v0", **dict(KW, reward=reward))


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "name, value",
    [
        ("kl_coef", "0.1"),
        ("kl_coef", None),
        ("max_new_tokens", "5"),
        ("max_prompt_tokens", True),
        ("temperature", "1"),
        ("reference", 5),
        ("reward", 5),
        ("prompts", 5),
        ("gold", 3.5),
        ("eval_fraction", True),
        ("action_mask_top_k", 1.0),
        ("kl_horizon", float("nan")),
        ("missing_eos_penalty", "1"),
        ("split", 0),
        ("dtype", 32),
        ("device", None),
        ("kl_logprob", "always"),
    ],
)
def test_wrong_kwargs_fail_naming_the_parameter(name, value):
    with pytest.raises((TypeError, ValueError), match=name):
        gym.make("textenv/TextGen-v0", **{**KW, name: value})


def test_unknown_kwarg_lists_the_accepted_ones():
    with pytest.raises(TypeError, match=r"unknown env kwarg\(s\) \['kl_coeff'\]"):
        EnvConfig.from_kwargs({"kl_coeff": 0.1})


def test_seed_must_be_an_integer():
    env = gym.make("textenv/TextGen-v0", **KW)
    for bad in (1.5, True, "1", -1):
        with pytest.raises((TypeError, ValueError), match="seed must be a non-negative integer"):
            env.reset(seed=bad)
    env.reset(seed=np.int64(3))
    envs = gym.make_vec(
        "textenv/TextGen-v0", num_envs=2, vectorization_mode="vector_entry_point", **VEC
    )
    with pytest.raises(TypeError, match="seed must be"):
        envs.reset(seed=1.5)
    with pytest.raises(TypeError, match="seed must be"):
        envs.reset(seed=[0, 1.5])


def test_misplaced_and_unknown_reset_options_raise():
    env = gym.make("textenv/TextGen-v0", **KW)
    with pytest.raises(ValueError, match="'prompts' is not accepted here: it is the vector env's"):
        env.reset(options={"prompts": ["a"]})
    with pytest.raises(
        ValueError, match=r"unknown reset option 'promt'; this env accepts \['prompt'\]"
    ):
        env.reset(options={"promt": "a"})
    with pytest.raises(TypeError, match="reset options must be a dict"):
        env.reset(options=["prompt"])
    envs = gym.make_vec(
        "textenv/TextGen-v0", num_envs=2, vectorization_mode="vector_entry_point", **VEC
    )
    with pytest.raises(ValueError, match="'prompt' is not accepted here: it is the single env's"):
        envs.reset(options={"prompt": "a"})
    with pytest.raises(TypeError, match=r"options\['prompts'\] must be a prompt or a list"):
        envs.reset(options={"prompts": 5})


def test_set_action_logprobs_checks_shape_and_type():
    envs = gym.make_vec(
        "textenv/TextGen-v0", num_envs=4, vectorization_mode="vector_entry_point", **VEC
    )
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\), one per env, got shape \(2, 2\)"):
        envs.unwrapped.set_action_logprobs(np.full((2, 2), -1.0))
    with pytest.raises(TypeError, match="must be real numbers"):
        envs.unwrapped.set_action_logprobs([None] * 4)
    with pytest.raises(TypeError, match="must be real numbers"):
        envs.unwrapped.set_action_logprobs(np.array([True] * 4))
    with pytest.raises(ValueError, match=r"got -2000.0 \(row 2\)"):
        envs.unwrapped.set_action_logprobs([-1.0, -1.0, -2000.0, -1.0])


def test_logprob_channel_takes_numpy_torch_and_floats():
    env = gym.make("textenv/TextGen-v0", **KW).unwrapped
    env.reset(seed=0)
    for value in (
        -1.5,
        -1,
        np.float32(-1.5),
        np.array(-1.5),
        np.array([-1.5]),
        torch.tensor(-1.5),
        torch.tensor([-1.5], dtype=torch.bfloat16),
        torch.tensor(-1.5, requires_grad=True),
    ):
        env.set_action_logprob(value)
        expected = value.item() if torch.is_tensor(value) else np.asarray(value).item()
        assert env._pending_logprob == pytest.approx(expected)
    with pytest.raises(ValueError, match="single number"):
        env.set_action_logprob(torch.tensor([-1.0, -2.0]))
    for bad in (None, True, "-1.0", [-1.0, -2.0]):
        with pytest.raises((TypeError, ValueError)):
            env.set_action_logprob(bad)
    if torch.cuda.is_available():
        env.set_action_logprob(torch.tensor(-1.5, device="cuda"))
    envs = gym.make_vec(
        "textenv/TextGen-v0", num_envs=3, vectorization_mode="vector_entry_point", **VEC
    )
    envs.reset(seed=0)
    for values in (torch.full((3,), -2.0), [-2.0, -2.0, -2.0], np.full(3, -2.0, np.float32)):
        envs.unwrapped.set_action_logprobs(values)
        assert envs.unwrapped._pending.tolist() == [-2.0] * 3
    envs.unwrapped.set_action_logprobs([-2.0, float("nan"), -2.0])
    _, _, _, _, info = envs.step(np.array([65, 65, 65]))
    assert list(info["logprob_source"]) == ["agent", "none", "agent"]


# --------------------------------------------------------------------------- the log π rule


def test_kl_logprob_require_raises_and_default_warns_with_the_fix():
    env = gym.make("textenv/TextGen-v0", **KW, kl_logprob="require")
    env.reset(seed=0)
    with pytest.raises(LogProbMissingError, match="env.unwrapped.set_action_logprob"):
        env.step(65)
    env.unwrapped.set_action_logprob(-1.0)
    env.step(65)  # nothing changed by the refused step
    assert env.unwrapped.core.n_gen[0] == 1
    env = gym.make("textenv/TextGen-v0", **KW)
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="no log π was supplied") as record:
        env.step(65)
    text = str(record[0].message)
    assert (
        "set_action_logprob" in text and "make_sb3_env" in text and "kl_logprob='require'" in text
    )
    envs = gym.make_vec(
        "textenv/TextGen-v0",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        kl_logprob="require",
        **VEC,
    )
    envs.reset(seed=0)
    with pytest.raises(LogProbMissingError):
        envs.step(np.array([65, 65]))


def test_sb3_without_the_wrapper_is_detected():
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: gym.make("textenv/TextGen-v0", **KW)])
    venv.reset()
    with pytest.warns(UserWarning, match="Stable-Baselines3 without textenv's log π link") as rec:
        venv.step(np.array([65]))
    assert "agents.sb3.make_sb3_env" in str(rec[0].message)
    venv = DummyVecEnv([lambda: gym.make("textenv/TextGen-v0", **KW, kl_logprob="require")])
    venv.reset()
    with pytest.raises(LogProbMissingError, match="LogProbVecEnvWrapper"):
        venv.step(np.array([65]))


def test_reset_info_describes_the_observation():
    env = gym.make("textenv/TextGen-v0", **KW)
    obs, info = env.reset(seed=0, options={"prompt": "Hey"})
    assert info == {
        "prompt": "Hey",
        "prompt_tokens": 3,
        "pad_token_id": EOS,
        "eos_token_id": EOS,
        "bos_token_id": EOS,
    }
    P = KW["max_prompt_tokens"]
    assert obs["attention_mask"][: P - 3].sum() == 0 and obs["attention_mask"][P - 3 : P].all()
    assert list(obs["input_ids"][P - 3 : P]) == list(b"Hey")
    envs = gym.make_vec(
        "textenv/TextGen-v0", num_envs=2, vectorization_mode="vector_entry_point", **VEC
    )
    _, info = envs.reset(seed=0, options={"prompts": ["Hey", "Hello you"]})
    assert list(info["prompt_tokens"]) == [3, 6] and list(info["eos_token_id"]) == [EOS, EOS]
    assert info["_pad_token_id"].all()


# --------------------------------------------------------------------------- reward callables


def test_reward_callable_with_wrong_signature_fails_at_build():
    def two_args(prompts, completions):
        return [0.0] * len(completions)

    with pytest.raises(TypeError, match=r"reward\(prompts: list\[str\], completions"):
        gym.make("textenv/TextGen-v0", **dict(KW, reward=two_args))

    def needs_target(prompts, completions, metadata):
        return [float(m["target"]) for m in metadata]

    with pytest.raises(RewardModelError, match="trial call made when the env was built"):
        gym.make("textenv/TextGen-v0", **dict(KW, reward=needs_target))
    env = gym.make(  # the trial call sees a real prompt's metadata
        "textenv/TextGen-v0",
        **dict(KW, reward=needs_target, prompts=[{"prompt": "x", "target": 2}]),
        split="all",
    )
    env.reset(seed=0)


# --------------------------------------------------------------------------- models and files


def _save_rm_without_pad(folder: Path) -> None:
    rm = load_sequence_classifier("tiny-rm:seed=5")
    rm.config.pad_token_id = None
    rm.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config.get("pad_token_id") is None


def test_reward_model_without_pad_token_id_works_in_the_vector_env(tmp_path):
    _save_rm_without_pad(tmp_path / "rm")
    envs = gym.make_vec(
        "textenv/TextGen-v0",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        **dict(VEC, reward=str(tmp_path / "rm")),
    )
    envs.reset(seed=0)
    for _ in range(4):
        envs.unwrapped.set_action_logprobs(np.full(3, -5.0))
        _, rewards, _, truncated, info = envs.step(np.array([65, 66, 67]))
    assert truncated.all() and np.isfinite(info["rm_score"]).all()
    assert len(set(np.round(info["rm_score"], 6))) == 3  # each row scored at its own last token


def test_missing_local_looking_path_fails_at_once(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    for spec in ("runs/rm", "./x", str(tmp_path / "nope"), "a/b/c", "~/no-such-model-dir"):
        with pytest.raises(ModelLoadError, match="does not exist"):
            load_sequence_classifier(spec)
    with pytest.raises(ModelLoadError, match="does not exist"):
        gym.make("textenv/TextGen-v0", **dict(KW, reward="runs/rm"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelLoadError, match="neither a local folder nor in the local Hugging Face"
    ):
        load_sequence_classifier("someorg/some-rm")


def test_model_cache_replaces_a_retrained_folder_and_is_bounded(tmp_path, monkeypatch):
    folder = tmp_path / "rm"
    _save_rm_without_pad(folder)
    retrained = load_sequence_classifier("tiny-rm:seed=6")
    first = load_reward(str(folder))
    size = model_cache_size()
    time.sleep(0.01)
    retrained.save_pretrained(folder)  # a retrain, in place
    os.utime(folder / "model.safetensors")
    second = load_reward(str(folder))
    assert second is not first and model_cache_size() == size  # replaced, not added
    monkeypatch.setattr(models, "MODEL_CACHE_MAX_ENTRIES", 3)
    for seed in range(10, 16):
        load_sequence_classifier(f"tiny-rm:seed={seed}")
    assert model_cache_size() == 3


def test_prompt_token_cache_is_bounded_in_bytes():
    encoder = PromptEncoder(byte_tokenizer(), max_tokens=8, max_bytes=20_000)
    for i in range(2000):
        encoder(f"prompt number {i} " * 5)
    assert 0 < encoder.nbytes <= 20_000 and 0 < len(encoder) < 2000
    assert encoder("x" * 10**6) == [ord("x")] * 8  # too big to cache, still encoded


def test_prompts_keep_a_tokenizer_bos():
    tok = bos_byte_tokenizer()
    assert tok("ab")["input_ids"] == [256, 97, 98]
    encoder = PromptEncoder(tok, max_tokens=4)
    assert encoder("ab") == [256, 97, 98]
    assert encoder("abcdef") == [256, 100, 101, 102]  # left-truncated, BOS kept in front
    assert PromptEncoder(byte_tokenizer(), max_tokens=4)("ab") == [97, 98]  # GPT-2 style: none
    assert encoder("") == [256]  # an empty prompt conditions on BOS alone


def test_the_one_encoder_keeps_bos_for_every_caller():
    """Sampling completions to label and the env encode prompts alike (one encoder)."""
    tok = bos_byte_tokenizer()
    ids, mask = left_pad_encode(tok, ["ab", "abcdef"], 4)
    assert ids.tolist() == [[256, 256, 97, 98], [256, 100, 101, 102]]
    assert mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    assert encode_texts(byte_tokenizer(), ["abcdef"], 4) == [[99, 100, 101, 102]]


def test_undecodable_preference_file_names_file_and_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode()
    path.write_bytes(good + b"\n" + good.replace(b"a", b"\xff\xfe") + b"\n")
    with pytest.raises(PreferenceFormatError, match=rf"{path}:2: not UTF-8 text"):
        read_preferences(path)
    path.write_bytes(good + b"\n" + good.replace(b'"a"', b'"\\ud800"') + b"\n")
    with pytest.raises(PreferenceFormatError, match=rf"{path}:2: 'chosen' is not valid Unicode"):
        read_preferences(path)


def test_lone_surrogate_prompt_gives_a_clear_error():
    with pytest.raises(PromptError, match=r"prompt 1: the prompt is not valid Unicode text"):
        gym.make("textenv/TextGen-v0", **dict(KW, prompts=["ok", "bad \ud800"]), split="all")
    env = gym.make("textenv/TextGen-v0", **KW)
    with pytest.raises(PromptError, match="reset option prompt: the prompt is not valid Unicode"):
        env.reset(options={"prompt": "x\udfff"})


# --------------------------------------------------------------------------- progress output


def test_progress_in_a_file_writes_few_plain_lines():
    out = io.StringIO()
    bar = progress(1000, desc="policy", file=out)
    assert isinstance(bar, PlainProgress)
    for _ in range(1000):
        bar.update(1)
        bar.set_postfix(kl="0.12", refresh=False)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") == 1
    assert text.startswith("policy: 1000/1000 it (100%)") and "kl=0.12" in text
    assert "refresh" not in text  # tqdm's redraw switch is not a value
    out = io.StringIO()
    with progress(10, file=out, interval=0.0) as bar:
        bar.update(5)
        bar.update(5)
    assert out.getvalue().count("\n") == 2  # each update past the interval, nothing repeated
    out = io.StringIO()
    with progress(10, file=out, leave=False) as bar:
        bar.update(10)
    assert out.getvalue() == ""  # an inner loop is silent outside a terminal


def test_progress_on_a_terminal_is_a_bar():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bar = progress(3, file=Tty())
    assert type(bar).__name__ == "tqdm" or "tqdm" in type(bar).__mro__[1].__name__
    bar.close()


def test_kl_coef_setter_checks_type():
    env = gym.make("textenv/TextGen-v0", **KW).unwrapped
    for bad in ("0.1", True, None):
        with pytest.raises(TypeError, match="kl_coef must be a number"):
            env.kl_coef = bad
    env.kl_coef = np.float32(0.25)
    assert env.kl_coef == 0.25
