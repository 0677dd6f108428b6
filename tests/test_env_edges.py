"""Edges of the env's MDP, checked against numbers computed here, not by the package.

* EOS on the last allowed step: terminated (not truncated) and not charged the missing-EOS
  penalty; the penalty only where EOS is missing, also when rows of one batch finish together.
* Under the adaptive controller each episode's reward uses the β from *before* that episode's
  own update, and the update follows Ziegler et al. from the episodes' KL.
* KL̂ and the reward from k1 / k2 / k3 written out here, over reference log-probs computed here
  from the reference model's logits (one unbatched forward per prefix).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from textenv.env.kl import (
    AdaptiveKLController,
    FixedKLController,
    kl_estimate,
    make_kl_controller,
)
from textenv.env.single import TextGenEnv
from textenv.env.vector import TextGenVectorEnv
from textenv.lm.models import load_frozen_causal_lm, load_tokenizer

KW = dict(reference="tiny", reward="tiny-rm", max_prompt_tokens=6, max_new_tokens=4)
STEPS = dict(max_episode_steps=4)  # gym.make's TimeLimit must agree with max_new_tokens
PROMPT = "Hi"
TOKENS = [104, 101, 108, 33]  # "hel!" (byte ids; EOS is 256)
LOGPI = [-1.0, -2.5, -0.3, -4.0]  # the log π an agent reports for them
EOS = 256


def hand_ref_logprobs(prompt: str, tokens: list[int], temperature: float = 1.0) -> list[float]:
    """log ρ(a_t | prompt, a_<t) from the reference's logits, one forward per prefix."""
    model = load_frozen_causal_lm("tiny")
    ids = load_tokenizer("tiny")(prompt, add_special_tokens=False)["input_ids"]
    out = []
    for t, a in enumerate(tokens):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + tokens[:t]])).logits[0, -1].double()
        z = logits / temperature
        out.append(float(z[a] - torch.logsumexp(z, 0)))
    return out


def hand_k(estimator: str, logpi: float, ref: float) -> float:
    r = ref - logpi  # log(ρ/π)
    if estimator == "k1":
        return -r
    if estimator == "k2":
        return 0.5 * r * r
    return math.exp(r) - 1.0 - r  # k3


def play(env, tokens: list[int], logpis: list[float] | None = None, prompt: str = PROMPT):
    env.reset(seed=0, options={"prompt": prompt})
    rewards, out = [], None
    for i, a in enumerate(tokens):
        if logpis is not None:
            env.unwrapped.set_action_logprob(logpis[i])
        out = env.step(a)
        rewards.append(out[1])
    _, _, terminated, truncated, info = out
    return rewards, terminated, truncated, info


# --------------------------------------------------------------------------- EOS and the penalty


def test_eos_as_the_last_allowed_token_terminates_unpenalised():
    # The env itself (gym.make's TimeLimit, at the same step count, also raises `truncated` on
    # the last step whatever the action: Gymnasium's wrapper does that; `terminated` still says
    # the episode ended in a terminal state, and the reward below is the env's).
    env = TextGenEnv(**KW, missing_eos_penalty=2.0)
    rewards, terminated, truncated, info = play(env, [104, 101, 108, EOS])
    assert terminated and not truncated
    assert info["num_tokens"] == 4 and info["text"] == "hel"
    assert info["penalty"] == 0.0
    # No log π supplied: log π = log ρ, KL̂ = 0, so the reward is the RM score alone.
    assert info["kl"] == 0.0
    assert rewards[-1] == pytest.approx(info["rm_score"], abs=1e-12)
    assert rewards[:-1] == [0.0, 0.0, 0.0]
    wrapped = gym.make("textenv/TextGen-v0", **KW, **STEPS, missing_eos_penalty=2.0)
    rewards, terminated, _, info = play(wrapped, [104, 101, 108, EOS])
    assert terminated and info["penalty"] == 0.0
    assert rewards[-1] == pytest.approx(info["rm_score"], abs=1e-12)


def test_missing_eos_penalty_only_when_eos_is_missing():
    env = gym.make("textenv/TextGen-v0", **KW, **STEPS, missing_eos_penalty=2.0)
    rewards, terminated, truncated, info = play(env, TOKENS)  # 4 tokens, no EOS
    assert truncated and not terminated
    assert info["penalty"] == 2.0
    assert rewards[-1] == pytest.approx(info["rm_score"] - 2.0, abs=1e-12)
    rewards, terminated, truncated, info = play(env, [EOS])  # EOS at once
    assert terminated and not truncated and info["penalty"] == 0.0
    assert rewards[-1] == pytest.approx(info["rm_score"], abs=1e-12)
    plain = gym.make("textenv/TextGen-v0", **KW, **STEPS)  # no penalty configured
    rewards, _, truncated, info = play(plain, TOKENS)
    assert truncated and info["penalty"] == 0.0
    assert rewards[-1] == pytest.approx(info["rm_score"], abs=1e-12)


def test_penalty_per_row_when_rows_finish_on_the_same_step():
    envs = TextGenVectorEnv(
        num_envs=3, autoreset_mode=AutoresetMode.DISABLED, missing_eos_penalty=0.5, **KW
    )
    envs.reset(seed=0, options={"prompts": [PROMPT] * 3})
    a = 97
    # Row 2 ends with EOS at once; rows 0 and 1 finish together on the last step, row 0 by EOS.
    plan = [[a, a, EOS], [a, a, a], [a, a, a], [EOS, a, a]]
    for t, actions in enumerate(plan):
        _, rewards, terminated, truncated, info = envs.step(np.array(actions))
        if t == 0:
            assert terminated.tolist() == [False, False, True] and not truncated.any()
            assert info["penalty"][2] == 0.0
    assert terminated.tolist() == [True, False, False]
    assert truncated.tolist() == [False, True, False]
    assert info["_penalty"].tolist() == [True, True, False]
    np.testing.assert_array_equal(info["penalty"][:2], [0.0, 0.5])
    np.testing.assert_allclose(rewards[:2], info["rm_score"][:2] - [0.0, 0.5], atol=1e-12)
    assert info["num_tokens"][:2].tolist() == [4, 4]


# --------------------------------------------------------------------------- adaptive β


def test_each_episode_uses_the_beta_before_its_own_update():
    ref = hand_ref_logprobs(PROMPT, TOKENS)
    kl = sum(hand_k("k1", lp, r) for lp, r in zip(LOGPI, ref))
    assert kl > 2.0  # far above the target: the controller raises β (error clipped at +0.2)
    beta0, horizon = 0.1, 10.0
    env = gym.make(
        "textenv/TextGen-v0", **KW, **STEPS, kl_coef=beta0, kl_target=1.0, kl_horizon=horizon
    )
    rewards, _, _, info = play(env, TOKENS, LOGPI)
    assert info["kl"] == pytest.approx(kl, abs=1e-4)
    assert info["kl_coef"] == beta0
    assert rewards[-1] == pytest.approx(info["rm_score"] - beta0 * kl, abs=1e-4)
    beta1 = beta0 * (1 + 0.2 * 1 / horizon)
    assert env.unwrapped.kl_coef == pytest.approx(beta1, rel=1e-9)
    rewards, _, _, info = play(env, TOKENS, LOGPI)  # the next episode pays the new β
    assert info["kl_coef"] == pytest.approx(beta1, rel=1e-9)
    assert rewards[-1] == pytest.approx(info["rm_score"] - beta1 * kl, abs=1e-4)
    assert env.unwrapped.kl_coef == pytest.approx(beta1 * (1 + 0.2 / horizon), rel=1e-9)


def test_rows_finishing_together_share_the_old_beta_and_one_update():
    # Two rows, same tokens, different log π: KL̂s k_a and k_b; the update sees their mean.
    ref = hand_ref_logprobs(PROMPT, TOKENS)
    other = [lp - 0.5 for lp in LOGPI]
    kls = [sum(hand_k("k1", lp, r) for lp, r in zip(lps, ref)) for lps in (LOGPI, other)]
    mean_kl = sum(kls) / 2
    target = 1.1 * mean_kl  # error = 1/1.1 − 1 ≈ −0.091: inside the ±0.2 clip
    beta0, horizon = 0.2, 50.0
    envs = TextGenVectorEnv(
        num_envs=2,
        autoreset_mode=AutoresetMode.DISABLED,
        kl_coef=beta0,
        kl_target=target,
        kl_horizon=horizon,
        **KW,
    )
    envs.reset(seed=0, options={"prompts": [PROMPT] * 2})
    for t, a in enumerate(TOKENS):
        envs.set_action_logprobs(np.array([LOGPI[t], other[t]]))
        _, rewards, _, truncated, info = envs.step(np.array([a, a]))
    assert truncated.all()
    np.testing.assert_allclose(info["kl"], kls, atol=1e-4)
    np.testing.assert_array_equal(info["kl_coef"], [beta0, beta0])
    np.testing.assert_allclose(rewards, info["rm_score"] - beta0 * np.array(kls), atol=1e-4)
    error = mean_kl / target - 1.0
    assert envs.kl_coef == pytest.approx(beta0 * (1 + error * 2 / horizon), rel=1e-6)


# --------------------------------------------------------------------------- KL̂ by hand


@pytest.mark.parametrize("kl_reward", ["terminal", "per_token"])
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_and_reward_from_hand_computed_log_probs(estimator, kl_reward):
    temperature, beta = 0.7, 0.3
    env = gym.make(
        "textenv/TextGen-v0",
        **KW,
        **STEPS,
        kl_coef=beta,
        kl_estimator=estimator,
        kl_reward=kl_reward,
        temperature=temperature,
    )
    rewards, _, truncated, info = play(env, TOKENS, LOGPI)
    assert truncated
    ref = hand_ref_logprobs(PROMPT, TOKENS, temperature)
    np.testing.assert_allclose(info["ref_logprobs"][:4], ref, atol=1e-4)
    ks = [hand_k(estimator, lp, r) for lp, r in zip(LOGPI, ref)]
    assert info["kl"] == pytest.approx(sum(ks), abs=1e-4)
    if kl_reward == "terminal":
        assert rewards[:3] == [0.0, 0.0, 0.0]
        assert rewards[3] == pytest.approx(info["rm_score"] - beta * sum(ks), abs=1e-4)
    else:  # −β·k_t every step, the RM score on top at the last
        np.testing.assert_allclose(rewards[:3], [-beta * k for k in ks[:3]], atol=1e-4)
        assert rewards[3] == pytest.approx(info["rm_score"] - beta * ks[3], abs=1e-4)
    assert sum(rewards) == pytest.approx(info["rm_score"] - beta * sum(ks), abs=1e-4)


def test_kl_reward_none_leaves_the_rm_score_alone():
    env = gym.make("textenv/TextGen-v0", **KW, **STEPS, kl_coef=0.3, kl_reward="none")
    rewards, _, _, info = play(env, TOKENS, LOGPI)
    ref = hand_ref_logprobs(PROMPT, TOKENS)
    assert info["kl"] == pytest.approx(sum(lp - r for lp, r in zip(LOGPI, ref)), abs=1e-4)
    assert rewards == [0.0, 0.0, 0.0, pytest.approx(info["rm_score"], abs=1e-12)]


# --------------------------------------------------------------------------- KL̂ and β: edges


def test_kl_estimate_defaults_to_k1_and_keeps_torch_graphs():
    lp = torch.tensor([-1.0, -3.0], requires_grad=True)
    ref = torch.tensor([-2.0, -1.0])
    assert torch.equal(kl_estimate(lp, ref).detach(), torch.tensor([1.0, -2.0]))  # k1: π − ρ
    for estimator in ("k1", "k2", "k3"):
        for clamp in (None, 1.5):
            out = kl_estimate(lp, ref, estimator, max_log_ratio=clamp)
            assert isinstance(out, torch.Tensor) and out.requires_grad, (estimator, clamp)
    np.testing.assert_array_equal(kl_estimate(np.array([-1.0]), np.array([-2.0])), [1.0])


def test_k3_clamps_the_log_ratio_on_both_sides_and_only_k3():
    lp = np.array([-1.0, -10.0, -1.0])
    ref = np.array([-10.0, -1.0, -1.5])  # log ρ − log π = [−9, 9, −0.5]
    want = [math.exp(-2) - 1 + 2, math.exp(2) - 1 - 2, math.exp(-0.5) - 1 + 0.5]
    np.testing.assert_allclose(kl_estimate(lp, ref, "k3", max_log_ratio=2.0), want)
    got = kl_estimate(torch.tensor(lp), torch.tensor(ref), "k3", max_log_ratio=2.0)
    np.testing.assert_allclose(got.numpy(), want)
    np.testing.assert_allclose(kl_estimate(lp, ref, "k1", max_log_ratio=2.0), [9.0, -9.0, 0.5])
    np.testing.assert_allclose(kl_estimate(lp, ref, "k2", max_log_ratio=2.0), [40.5, 40.5, 0.125])
    unclamped = [math.exp(-9) - 1 + 9, math.exp(9) - 1 - 9, want[2]]
    np.testing.assert_allclose(kl_estimate(lp, ref, "k3"), unclamped)


def test_adaptive_controller_edges():
    c = AdaptiveKLController(0.1, target=10.0, horizon=100.0)
    c.update(0.0, 10)  # error = clip(0/10 − 1, ±0.2) = −0.2 (clipped from −1)
    assert c.value == pytest.approx(0.1 * (1 - 0.2 * 10 / 100))
    assert AdaptiveKLController(0.1, 1.0, horizon=0.5).horizon == 0.5  # any positive horizon
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(0.1, 1.0, horizon=0.0)
    assert make_kl_controller(0.1, 1.0).horizon == 10_000.0
    assert FixedKLController(0.0).value == 0.0  # β = 0: no penalty, allowed
    assert AdaptiveKLController(0.0, 1.0).value == 0.0


def test_per_token_kl_when_rows_restart_mid_batch():
    """Dense KL with rows at different lengths: row 0 ends at once and restarts (NEXT_STEP
    autoreset) while row 1 goes on, so the reference is re-read for rows of unequal length."""
    beta, lp = 0.2, -2.0
    envs = TextGenVectorEnv(
        num_envs=2, kl_reward="per_token", kl_coef=beta, **{**KW, "prompts": [PROMPT]}
    )
    envs.reset(seed=0)
    ref1 = hand_ref_logprobs(PROMPT, [104, 101, 108, 33])  # row 1's episode
    ref0 = hand_ref_logprobs(PROMPT, [104, 101])  # row 0's second episode

    def step(actions):
        envs.set_action_logprobs(np.full(2, lp))
        return envs.step(np.array(actions))

    _, r, term, _, info = step([EOS, 104])  # row 0: EOS at once; row 1: its first token
    assert term.tolist() == [True, False]
    eos_ref = hand_ref_logprobs(PROMPT, [EOS])[0]
    assert r[0] == pytest.approx(info["rm_score"][0] - beta * (lp - eos_ref), abs=1e-4)
    assert r[1] == pytest.approx(-beta * (lp - ref1[0]), abs=1e-4)
    _, r, *_ = step([0, 101])  # row 0 restarts (its action is ignored)
    assert r[0] == 0.0 and r[1] == pytest.approx(-beta * (lp - ref1[1]), abs=1e-4)
    _, r, *_ = step([104, 108])  # row 0: token 1 of 2; row 1: token 3 of 4
    np.testing.assert_allclose(r, [-beta * (lp - ref0[0]), -beta * (lp - ref1[2])], atol=1e-4)
    _, r, *_ = step([101, 33])
    np.testing.assert_allclose(r[0], -beta * (lp - ref0[1]), atol=1e-4)


def test_beta_zero_can_be_set_and_a_dict_prompt_carries_its_metadata():
    seen = []

    def reward(prompts, completions, metadata):
        seen.append((list(prompts), [dict(m) for m in metadata]))
        return [1.0] * len(completions)

    env = TextGenEnv(**{**KW, "reward": reward}, kl_coef=0.5)
    env.kl_coef = 0.0  # β = 0 is a valid setting (no penalty)
    assert env.kl_coef == 0.0
    env.reset(seed=0, options={"prompt": {"prompt": "Hi", "target": "x"}})
    rewards = play(env, TOKENS, LOGPI, prompt={"prompt": "Hi", "target": "x"})[0]
    assert rewards[-1] == 1.0  # β = 0: the RM score alone, whatever the KL̂
    assert seen[-1] == (["Hi"], [{"target": "x"}])
    with pytest.raises(ValueError):
        env.kl_coef = -0.1


def test_action_masks_are_the_references_top_k():
    env = TextGenEnv(**KW, action_mask_top_k=5)
    env.reset(seed=0, options={"prompt": PROMPT})
    masks = env.action_masks()
    model = load_frozen_causal_lm("tiny")
    ids = load_tokenizer("tiny")(PROMPT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    top5 = set(torch.topk(logits, 5).indices.tolist())
    assert masks.shape == (257,) and masks.dtype == bool
    assert set(np.flatnonzero(masks).tolist()) == top5
    plain = TextGenEnv(**KW)
    plain.reset(seed=0)
    assert plain.action_masks().shape == (257,) and plain.action_masks().all()


def test_k3_in_the_env_clamps_an_extreme_log_ratio():
    env = TextGenEnv(**KW, kl_estimator="k3", kl_coef=0.1)
    _, _, _, info = play(env, TOKENS, [-200.0] * 4)  # log ρ − log π ≈ +195, clamped to +10
    assert info["kl"] == pytest.approx(4 * (math.exp(10.0) - 1.0 - 10.0), rel=1e-9)


def test_require_mode_refuses_a_step_without_log_pi():
    env = TextGenEnv(**KW, kl_logprob="require")
    env.reset(seed=0)
    with pytest.raises(Exception, match="kl_logprob='require'"):
        env.step(104)
