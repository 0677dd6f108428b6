"""The episode batch (textenv/env/core.py) beyond the MDP edges: which reward path is taken and
what it is handed, the rollback of a step whose reward raised, the KV-cached reference, the
position limit, the spaces and the error messages that name what is wrong.

Expected numbers come from the reference's logits read here (``hand_ref_logprobs``) or from the
reward's own standalone call, never from the package's KL estimators.
"""

from __future__ import annotations

import math
import os
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from test_env_edges import EOS, KW, LOGPI, PROMPT, STEPS, TOKENS, hand_ref_logprobs, play

from textenv.env.prompts import PromptError
from textenv.env.single import TextGenEnv
from textenv.env.vector import TextGenVectorEnv
from textenv.lm.models import load_frozen_causal_lm, load_tokenizer
from textenv.rewards import RewardModelError
from textenv.rewards.fused import FusedRewardHead

V = 257  # the tiny byte vocabulary: 256 bytes + EOS


def byte_ids(text: str) -> list[int]:
    return list(text.encode("utf-8"))


class IdsReward:
    """A reward that reads the env tokenizer's ids (``ReadsTokenIds``) and records what it got.

    Its id path and its text path give different scores, so the env's choice shows in the
    reward: ``10 · len(completion ids) + metadata["k"]`` from ids, −100 from text. With
    ``nan_at_end`` it returns NaN for non-empty completions (a bad score at episode end)."""

    def __init__(self, nan_at_end: bool = False) -> None:
        self.calls: list[tuple[str, list, list, list]] = []
        self.nan_at_end = nan_at_end

    def __repr__(self) -> str:
        return "IdsReward()"

    def reads_token_ids(self, tokenizer) -> bool:
        return tokenizer is not None and tokenizer.eos_token_id == EOS and len(tokenizer) == V

    def score_token_ids(self, prompt_ids, completion_ids, metadata):
        prompts, completions = [list(p) for p in prompt_ids], [list(c) for c in completion_ids]
        self.calls.append(("ids", prompts, completions, metadata))
        if self.nan_at_end:
            return [math.nan if c else 0.0 for c in completion_ids]
        return [10.0 * len(c) + m["k"] for c, m in zip(completion_ids, metadata)]

    def __call__(self, prompts, completions, metadata):
        self.calls.append(("text", list(prompts), list(completions), metadata))
        return [-100.0] * len(completions)


class TextReward:
    """A text reward (no capabilities): NaN for non-empty completions when ``nan_at_end``."""

    def __init__(self, nan_at_end: bool = False) -> None:
        self.nan_at_end = nan_at_end

    def __repr__(self) -> str:
        return "TextReward()"

    def __call__(self, prompts, completions, metadata):
        return [math.nan if (c and self.nan_at_end) else 0.5 for c in completions]


# --------------------------------------------------------------------------- rewards reading ids


def test_ids_reading_reward_and_gold_get_the_generated_ids_without_special_tokens():
    """Two rows finish on the same step with different lengths (row 0 restarted): the reward
    and the gold scorer get the prompt ids without padding and the generated ids without EOS,
    with each row's metadata, through their id path."""
    reward, gold = IdsReward(), IdsReward()
    prompts = [{"prompt": "Hi", "k": 1.0}, {"prompt": "Hey!", "k": 2.0}]
    envs = TextGenVectorEnv(
        num_envs=2,
        **{**KW, "reward": reward, "prompts": [{"prompt": "Yo", "k": 5.0}]},
        split="all",
        gold=gold,
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )
    reward.calls.clear()  # the trial call made when the env was built (text)
    gold.calls.clear()
    envs.reset(seed=0, options={"prompts": prompts})
    # Row 0: EOS at once, restarts on the next step (drawing a prompt), then "a" + EOS;
    # row 1: four tokens, truncated on the same last step.
    plan = [[EOS, 97], [0, 98], [97, 99], [EOS, 100]]
    for actions in plan:
        _, rewards, terminated, truncated, info = envs.step(np.array(actions))
    assert terminated.tolist() == [True, False] and truncated.tolist() == [False, True]
    for fn in (reward, gold):
        kind, prompt_ids, completion_ids, metadata = fn.calls[-1]
        assert kind == "ids"
        assert prompt_ids == [byte_ids("Yo"), byte_ids("Hey!")]  # row 0 restarted on "Yo"
        assert completion_ids == [[97], [97, 98, 99, 100]]
        assert metadata == [{"k": 5.0}, {"k": 2.0}]
    expected = [10.0 + 5.0, 40.0 + 2.0]
    np.testing.assert_array_equal(info["rm_score"], expected)
    np.testing.assert_array_equal(info["gold_score"], expected)
    assert list(info["text"]) == ["a", "abcd"]
    # The first finish (row 0's lone EOS): an empty completion, metadata of "Hi".
    assert reward.calls[0] == ("ids", [byte_ids("Hi")], [[]], [{"k": 1.0}])


def test_a_text_gold_beside_an_ids_reward_gets_text():
    reward, gold = IdsReward(), IdsReward()
    gold.reads_token_ids = lambda tokenizer: False  # this gold reads text only
    prompts = [{"prompt": "Hi", "k": 3.0}]
    env = TextGenEnv(**{**KW, "reward": reward, "prompts": prompts}, split="all", gold=gold)
    *_, info = play(env, [104, 105, EOS], prompt={"prompt": "Hi", "k": 3.0})
    assert reward.calls[-1] == ("ids", [byte_ids("Hi")], [[104, 105]], [{"k": 3.0}])
    assert gold.calls[-1] == ("text", ["Hi"], ["hi"], [{"k": 3.0}])
    assert info["rm_score"] == 23.0 and info["gold_score"] == -100.0


@pytest.mark.parametrize("path", ["ids", "text"])
def test_a_bad_score_at_episode_end_names_the_reward(path):
    bad = IdsReward(nan_at_end=True) if path == "ids" else TextReward(nan_at_end=True)
    env = TextGenEnv(**{**KW, "reward": bad})
    env.reset(seed=0)
    env.step(97)
    with pytest.raises(
        RewardModelError, match=rf"^reward model {re.escape(repr(bad))} returned a non-finite"
    ):
        env.step(EOS)
    gold = IdsReward(nan_at_end=True) if path == "ids" else TextReward(nan_at_end=True)
    env = TextGenEnv(**KW, gold=gold)
    env.reset(seed=0)
    env.step(97)
    with pytest.raises(
        RewardModelError, match=rf"^gold scorer {re.escape(repr(gold))} returned a non-finite"
    ):
        env.step(EOS)


# --------------------------------------------------------------------------- the fused reward


class ForwardCounter:
    """Counts the forwards of the given modules and the input widths they saw."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.widths: list[tuple[int, int]] = []
        self.handles = [
            m.register_forward_pre_hook(self._hook, with_kwargs=True)
            for m in {id(m): m for m in modules}.values()
        ]

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.widths.append(tuple(ids.shape))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def test_a_fused_reward_gives_log_rho_and_the_score_from_one_forward():
    torch.manual_seed(0)
    head = FusedRewardHead("tiny", width=8)
    temperature, beta = 0.7, 0.3
    env = TextGenEnv(**{**KW, "reward": head}, temperature=temperature, kl_coef=beta)
    counter = ForwardCounter(env.core.reference, head.model)
    try:
        *_, info = play(env, TOKENS, LOGPI)
    finally:
        counter.close()
    assert len(counter.widths) == 1  # one forward at the episode end, no second RM pass
    ref = hand_ref_logprobs(PROMPT, TOKENS, temperature)
    np.testing.assert_allclose(info["ref_logprobs"], ref, atol=1e-5)
    kl = sum(lp - r for lp, r in zip(LOGPI, ref))  # k1
    assert info["kl"] == pytest.approx(kl, abs=1e-5)
    standalone = float(head([PROMPT], ["hel!"], [{}])[0])
    assert info["rm_score"] == pytest.approx(standalone, abs=1e-5)
    rewards = play(env, TOKENS, LOGPI)[0]
    assert rewards[-1] == pytest.approx(standalone - beta * kl, abs=1e-4)
    # A non-finite fused score is refused with the reward's name.
    head.std = 0.0
    with pytest.raises(RewardModelError, match=r"^reward model .* returned a non-finite"):
        play(env, TOKENS, LOGPI)


# --------------------------------------------------------------------------- rollback and retry


class RaisesOnce:
    """A reward that raises on its first non-empty completion, then scores 0.25."""

    def __init__(self) -> None:
        self.raised = False

    def __call__(self, prompts, completions, metadata):
        if any(completions) and not self.raised:
            self.raised = True
            raise RuntimeError("reward service unavailable")
        return [0.25] * len(completions)


def test_a_step_whose_reward_raised_is_undone_and_can_be_retried():
    """Dense KL (the KV-cached reference took the token before the reward raised): the retried
    step gives the observation and rewards of a clean run, with the pending log π kept."""
    prompt, beta = "Hello!", 0.2  # six tokens: every prompt column is real
    env = TextGenEnv(**{**KW, "reward": RaisesOnce()}, kl_reward="per_token", kl_coef=beta)
    env.reset(seed=0, options={"prompt": prompt})
    ref = hand_ref_logprobs(prompt, TOKENS)
    for a, lp in zip(TOKENS[:3], LOGPI):
        env.set_action_logprob(lp)
        env.step(a)
    env.set_action_logprob(LOGPI[3])
    with pytest.raises(RuntimeError, match="reward service unavailable"):
        env.step(TOKENS[3])
    obs, reward, terminated, truncated, info = env.step(TOKENS[3])  # the log π is still pending
    assert truncated and not terminated
    assert obs["input_ids"].tolist() == byte_ids(prompt) + TOKENS
    assert obs["attention_mask"].tolist() == [1] * 10
    assert info["num_tokens"] == 4 and info["text"] == "hel!"
    assert reward == pytest.approx(0.25 - beta * (LOGPI[3] - ref[3]), abs=1e-4)
    np.testing.assert_allclose(info["ref_logprobs"], ref, atol=1e-5)


def test_rows_not_reset_after_a_raising_reward_show_the_state_before_the_step():
    """Vector env: row 0's EOS makes the reward raise; resetting row 0 alone then shows row 1
    exactly as it was before the failed step (its token taken back, ids and mask)."""
    envs = TextGenVectorEnv(
        num_envs=2, **{**KW, "reward": RaisesOnce()}, autoreset_mode=AutoresetMode.DISABLED
    )
    prompts = ["Hello!", "Hey"]
    envs.reset(seed=0, options={"prompts": prompts})
    envs.step(np.array([97, 104]))
    with pytest.raises(RuntimeError, match="reward service unavailable"):
        envs.step(np.array([EOS, 101]))
    obs, _ = envs.reset(options={"reset_mask": [True, False], "prompts": prompts})
    pad = [EOS] * 3
    assert obs["input_ids"][1].tolist() == pad + byte_ids("Hey") + [104] + pad
    assert obs["attention_mask"][1].tolist() == [0] * 3 + [1] * 4 + [0] * 3
    _, _, terminated, _, _ = envs.step(np.array([EOS, 101]))
    assert terminated.tolist() == [True, False]  # row 0 scored now (the reward raised once)


# --------------------------------------------------------------------------- the KV-cached reference


def test_dense_kl_reads_the_reference_one_token_per_step():
    """Per-token KL: one prefill over the prompt columns, then one new token per step."""
    env = TextGenEnv(**KW, kl_reward="per_token", kl_coef=0.1)
    counter = ForwardCounter(env.core.reference)
    try:
        rewards = play(env, TOKENS, LOGPI)[0]
    finally:
        counter.close()
    assert counter.widths == [(1, KW["max_prompt_tokens"])] + [(1, 1)] * 4
    ref = hand_ref_logprobs(PROMPT, TOKENS)
    np.testing.assert_allclose(
        rewards[:3], [-0.1 * (lp - r) for lp, r in zip(LOGPI[:3], ref[:3])], atol=1e-5
    )


def test_dense_kl_of_token_zero_and_the_k3_clamp():
    beta = 0.1
    env = TextGenEnv(**KW, kl_reward="per_token", kl_coef=beta)
    tokens = [0, 0, 104, 0]
    rewards = play(env, tokens, LOGPI)[0]
    ref = hand_ref_logprobs(PROMPT, tokens)
    np.testing.assert_allclose(
        rewards[:3], [-beta * (lp - r) for lp, r in zip(LOGPI[:3], ref[:3])], atol=1e-5
    )
    # k3 with log ρ − log π ≈ +195 per token: each step's term uses the ratio clamped to +10.
    env = TextGenEnv(**KW, kl_reward="per_token", kl_estimator="k3", kl_coef=beta)
    rewards = play(env, TOKENS, [-200.0] * 4)[0]
    np.testing.assert_allclose(rewards[:3], -beta * (math.exp(10.0) - 1.0 - 10.0), rtol=1e-9)


# --------------------------------------------------------------------------- action masks


def hand_next_logits(prompt: str) -> torch.Tensor:
    model = load_frozen_causal_lm("tiny")
    with torch.no_grad():
        return model(input_ids=torch.tensor([byte_ids(prompt)])).logits[0, -1].double()


def test_action_masks_top_p_and_top_k_with_p():
    logits = hand_next_logits(PROMPT)
    probs = torch.softmax(logits, 0)
    order = torch.argsort(probs, descending=True).tolist()
    # Nucleus: the most likely tokens until their mass reaches p (the one crossing p included).
    p, mass, nucleus = 0.3, 0.0, set()
    for i in order:
        nucleus.add(i)
        mass += float(probs[i])
        if mass >= p:
            break
    assert 1 < len(nucleus) < V // 2
    env = TextGenEnv(**KW, action_mask_top_p=p)
    env.reset(seed=0, options={"prompt": PROMPT})
    assert set(np.flatnonzero(env.action_masks()).tolist()) == nucleus
    env = TextGenEnv(**KW, action_mask_top_k=3, action_mask_top_p=0.999)
    env.reset(seed=0, options={"prompt": PROMPT})
    assert set(np.flatnonzero(env.action_masks()).tolist()) == set(order[:3])
    plain = TextGenVectorEnv(num_envs=2, **KW)
    plain.reset(seed=0)
    masks = plain.action_masks()
    assert masks.dtype == np.bool_ and masks.shape == (2, V) and masks.all()


# --------------------------------------------------------------------------- construction


def test_observation_space_bounds():
    env = TextGenEnv(**KW)
    space = env.observation_space
    L = KW["max_prompt_tokens"] + KW["max_new_tokens"]
    assert space["input_ids"].shape == (L,) and space["input_ids"].dtype == np.int64
    assert (space["input_ids"].low == 0).all() and (space["input_ids"].high == V - 1).all()
    assert (space["attention_mask"].low == 0).all() and (space["attention_mask"].high == 1).all()
    assert env.action_space == gym.spaces.Discrete(V)


def test_prompt_and_completion_must_fit_the_reference_positions():
    ref = "tiny:positions=16"
    fits = {**KW, "reference": ref, "max_prompt_tokens": 10, "max_new_tokens": 6}
    TextGenEnv(**fits)  # 10 + 6 = 16 positions: fits exactly
    with pytest.raises(ValueError, match=r"= 17 exceeds the reference model's 16 positions"):
        TextGenEnv(**{**fits, "max_new_tokens": 7})


def test_a_reference_without_n_positions_is_not_limited(tmp_path):
    """A Llama-style config has no ``n_positions``: no limit is read from it, and episodes run."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    load_tokenizer("tiny").save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within its 64 trained positions: no warning
        env = TextGenEnv(**{**KW, "reference": str(tmp_path), "reward": TextReward()})
    assert not hasattr(env.core.reference.config, "n_positions")
    *_, truncated, info = play(env, TOKENS, LOGPI)
    assert truncated and info["rm_score"] == 0.5 and np.isfinite(info["kl"])
    # Past them a rotary model still runs, with a warning that names the limit.
    longer = {**KW, "reference": str(tmp_path), "reward": TextReward()}  # 4 new tokens
    with pytest.warns(UserWarning, match=r"= 65 exceeds the 64 positions the reference model was"):
        env = TextGenEnv(**{**longer, "max_prompt_tokens": 61})
    *_, truncated, info = play(env, TOKENS, LOGPI)
    assert truncated and np.isfinite(info["kl"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TextGenEnv(**{**longer, "max_prompt_tokens": 60})  # 64: fits exactly


def test_a_reference_without_positions_runs_without_a_warning(tmp_path):
    """A state-space reference (Mamba) has neither n_positions nor max_position_embeddings:
    no limit, no warning, and episodes are scored by it."""
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config = MambaConfig(
        vocab_size=V, hidden_size=16, state_size=4, num_hidden_layers=1, expand=2,
        conv_kernel=2, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    assert not hasattr(config, "max_position_embeddings") and not hasattr(config, "n_positions")
    MambaForCausalLM(config).save_pretrained(tmp_path)
    load_tokenizer("tiny").save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = TextGenEnv(**{**KW, "reference": str(tmp_path), "reward": TextReward()})
    *_, truncated, info = play(env, TOKENS, LOGPI)
    assert truncated and np.isfinite(info["kl"]) and np.isfinite(info["ref_logprobs"]).all()


def test_the_dtype_reaches_the_reference_and_the_reward_model():
    env = TextGenEnv(**KW, dtype="float64")
    assert next(env.core.reference.parameters()).dtype == torch.float64
    assert next(env.core.reward_fn.model.parameters()).dtype == torch.float64
    *_, info = play(env, TOKENS, LOGPI)
    np.testing.assert_allclose(info["ref_logprobs"], hand_ref_logprobs(PROMPT, TOKENS), atol=1e-5)


def test_the_split_and_eval_fraction_choose_the_prompts():
    prompts = [f"p{i}" for i in range(10)]
    train = TextGenEnv(**{**KW, "prompts": prompts}, split="train", eval_fraction=0.3)
    evals = TextGenEnv(**{**KW, "prompts": prompts}, split="eval", eval_fraction=0.3)
    train_texts = {p.text for p in train.core.prompts}
    eval_texts = {p.text for p in evals.core.prompts}
    assert len(eval_texts) == 3 and len(train_texts) == 7
    assert train_texts | eval_texts == set(prompts)


def _one_arg_reward(prompts):
    return [0.0] * len(prompts)


def _nan_on_the_trial(prompts, completions, metadata):
    return [math.nan] * len(completions)


def test_construction_errors_name_the_reward_or_the_gold_scorer():
    with pytest.raises(TypeError, match=r"^reward '_one_arg_reward' has the signature"):
        TextGenEnv(**{**KW, "reward": _one_arg_reward})
    with pytest.raises(TypeError, match=r"^gold scorer '_one_arg_reward' has the signature"):
        TextGenEnv(**KW, gold=_one_arg_reward)
    with pytest.raises(RewardModelError, match=r"^gold scorer '_nan_on_the_trial' \(trial call"):
        TextGenEnv(**KW, gold=_nan_on_the_trial)


# --------------------------------------------------------------------------- reset prompts


def test_bad_reset_prompts_are_refused_naming_the_option():
    env = gym.make("textenv/TextGen-v0", **KW, **STEPS)
    for bad in ("\ud800", {"prompt": "\ud800", "k": 1}):
        with pytest.raises(PromptError, match=r"^reset option prompt: the prompt is not valid"):
            env.reset(seed=0, options={"prompt": bad})
    for bad in (5, {"text": "Hi"}, {"prompt": 5}):
        with pytest.raises(ValueError, match=r"a prompt must be a string or a \{'prompt': str\}"):
            env.reset(seed=0, options={"prompt": bad})


# --------------------------------------------------------------------------- the missing-log π warning


def _step_without_logprob(env, action):
    return env.step(action)  # the line a warning about this call should point at


# mutmut calls every mutated function through a trampoline of its own, one more frame between
# the env and the core than in real use: where the warning points is checked outside mutmut.
@pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ, reason="mutmut adds trampoline frames")
@pytest.mark.parametrize("kind", ["single", "make", "vector"])
def test_the_missing_log_pi_warning_points_at_the_callers_line(kind):
    if kind == "single":
        env, action = TextGenEnv(**KW), 97
    elif kind == "make":
        env, action = gym.make("textenv/TextGen-v0", **KW, **STEPS), 97
    else:
        env, action = TextGenVectorEnv(num_envs=2, **KW), np.array([97, 97])
    env.reset(seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _step_without_logprob(env, action)
    [w] = [w for w in caught if "no log π was supplied" in str(w.message)]
    assert (w.filename, w.lineno) == (__file__, _step_without_logprob.__code__.co_firstlineno + 1)
