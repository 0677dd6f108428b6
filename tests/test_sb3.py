"""stable-baselines3 / sb3-contrib on textenv envs (agents/sb3.py)."""

from __future__ import annotations

import importlib
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from sb3_curves import EpisodeInfoCurve
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor

import textenv
from agents.sb3 import (
    LMActorCriticPolicy,
    LogProbVecEnvWrapper,
    MaskableLMActorCriticPolicy,
    TextGenSB3VecEnv,
    TokenFeaturesExtractor,
    lm_policy_kwargs,
    make_sb3_env,
)
from textenv.env.vector import TextGenVectorEnv
from textenv.lm.sampling import position_ids_from_mask

SMALL = {"max_new_tokens": 5, "max_prompt_tokens": 6}
MIP_KWARGS = {"features_extractor_class": TokenFeaturesExtractor}


def _cases() -> list[tuple[str, dict]]:
    """Every registered id; tasks whose id is not registered yet run through TextGen-v0."""
    ids = textenv.registered_ids()
    cases = [(env_id, {}) for env_id in ids]
    for env_id, module in (("textenv/Sort-v0", "sort"), ("textenv/Sentiment-v0", "sentiment")):
        if env_id not in ids:
            try:
                task = importlib.import_module(f"textenv.tasks.{module}").TASK
            except (ImportError, AttributeError):
                continue
            cases.append(("textenv/TextGen-v0", dict(task)))
    return cases


class Recorder(BaseCallback):
    """Collects SB3's per-step locals: log-probs, actions, rewards, dones, infos."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[dict] = []

    def _on_step(self) -> bool:
        loc = self.locals
        masks = loc.get("action_masks")
        self.steps.append(
            {
                "log_probs": loc["log_probs"].cpu().numpy().astype(np.float64).reshape(-1),
                "actions": np.asarray(loc["actions"]).reshape(-1).copy(),
                "rewards": np.asarray(loc["rewards"]).copy(),
                "dones": np.asarray(loc["dones"]).copy(),
                "infos": loc["infos"],
                "masks": None if masks is None else np.asarray(masks).copy(),
            }
        )
        return True

    def episodes(self) -> list[dict]:
        """Per finished episode: SB3's log-probs, actions and rewards, and the final info."""
        n_envs = len(self.steps[0]["dones"])
        cur = [{"log_probs": [], "actions": [], "rewards": []} for _ in range(n_envs)]
        done_eps = []
        for step in self.steps:
            for i in range(n_envs):
                cur[i]["log_probs"].append(step["log_probs"][i])
                cur[i]["actions"].append(step["actions"][i])
                cur[i]["rewards"].append(float(step["rewards"][i]))
                if step["dones"][i]:
                    done_eps.append(
                        {**{k: np.array(v) for k, v in cur[i].items()}, **step["infos"][i]}
                    )
                    cur[i] = {"log_probs": [], "actions": [], "rewards": []}
        return done_eps


def _ppo(policy, env, **kwargs) -> PPO:
    defaults = dict(n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
    return PPO(policy, env, **{**defaults, **kwargs})


# ----------------------------------------------------------------------------- every built-in id


@pytest.mark.parametrize("env_id,task", _cases(), ids=lambda x: x if isinstance(x, str) else "")
@pytest.mark.parametrize("policy", ["mip", "lm"])
def test_ppo_trains_on_every_builtin_id(env_id, task, policy):
    kwargs = {**task, "max_new_tokens": 4}
    env = make_sb3_env(env_id, n_envs=2, seed=0, **kwargs)
    if policy == "lm":
        model = _ppo(LMActorCriticPolicy, env, policy_kwargs=lm_policy_kwargs(env))
    else:
        model = _ppo("MultiInputPolicy", env, policy_kwargs=MIP_KWARGS)
    rec = Recorder()
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(32, callback=rec)
    after = list(model.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # an update happened
    sources = [info["logprob_source"] for s in rec.steps for info in s["infos"]]
    assert sources and set(sources) == {"agent"}
    assert rec.episodes(), "no episode finished"
    env.close()


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("policy", ["lm", "mip"])
def test_reward_rises_on_tiny_task(policy):
    """RM = the vowel fraction of the completion: PPO must learn to emit vowels."""
    env = make_sb3_env(
        "textenv/Tiny-v0",
        n_envs=8,
        seed=0,
        max_new_tokens=4,
        reward="textenv.tasks.tiny:gold_score",
    )
    common = dict(n_steps=32, batch_size=64, n_epochs=4, learning_rate=1e-3)
    if policy == "lm":
        model = _ppo(LMActorCriticPolicy, env, policy_kwargs=lm_policy_kwargs(env), **common)
    else:
        model = _ppo("MultiInputPolicy", env, policy_kwargs=MIP_KWARGS, ent_coef=0.0, **common)
    curve = EpisodeInfoCurve("rm_score")
    model.learn(6144, callback=curve)
    first, last = np.mean(curve.means[:3]), np.mean(curve.means[-3:])
    assert last > first + 0.15, curve.means


# ----------------------------------------------------------------------------- the KL term


def _check_kl(episodes: list[dict], kl_coef: float, estimator: str = "k1") -> None:
    assert episodes
    for ep in episodes:
        lp, ref = ep["log_probs"], ep["ref_logprobs"]
        assert len(lp) == len(ref) == ep["num_tokens"]
        np.testing.assert_allclose(ep["logprobs"], lp, atol=1e-6)  # the env used SB3's log π
        log_ratio = ref - lp
        k = -log_ratio if estimator == "k1" else np.expm1(log_ratio) - log_ratio
        np.testing.assert_allclose(ep["kl"], k.sum(), rtol=1e-5, atol=1e-5)
        expected = ep["rm_score"] - ep["kl_coef"] * ep["kl"] - ep["penalty"]
        np.testing.assert_allclose(ep["rewards"].sum(), expected, rtol=1e-5, atol=1e-5)
        assert ep["kl_coef"] == pytest.approx(kl_coef)


@pytest.mark.parametrize("native", [True, False], ids=["native", "dummy"])
@pytest.mark.parametrize("policy", ["lm", "mip"])
def test_kl_uses_sb3_logprobs(native, policy):
    kl_coef = 0.2
    env = make_sb3_env(
        "textenv/Tiny-v0",
        n_envs=3,
        seed=1,
        native=native,
        kl_coef=kl_coef,
        temperature=0.7,
        **SMALL,
    )
    if policy == "lm":
        kwargs = lm_policy_kwargs(env)
        assert kwargs["temperature"] == 0.7
        model = _ppo(LMActorCriticPolicy, env, policy_kwargs=kwargs, learning_rate=1e-3)
    else:
        model = _ppo("MultiInputPolicy", env, policy_kwargs=MIP_KWARGS)
    rec = Recorder()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="no log π was supplied")
        model.learn(48, callback=rec)  # several updates: π moves away from its initial state
    assert all(info["logprob_source"] == "agent" for s in rec.steps for info in s["infos"])
    episodes = rec.episodes()
    _check_kl(episodes, kl_coef)
    if policy == "lm":  # π ≠ ρ after the updates, so the KL term is really exercised
        assert max(abs(ep["kl"]) for ep in episodes) > 1e-4


def test_kl_k3_and_per_token_rewards():
    env = make_sb3_env(
        "textenv/Tiny-v0", n_envs=2, seed=2, kl_estimator="k3", kl_reward="per_token", **SMALL
    )
    model = _ppo("MultiInputPolicy", env, policy_kwargs=MIP_KWARGS)
    rec = Recorder()
    model.learn(24, callback=rec)
    _check_kl(rec.episodes(), 0.05, estimator="k3")


def test_manual_loop_gets_logprobs_by_recomputing():
    """model.predict + env.step outside learn(): log π is recomputed from the attached policy."""
    env = make_sb3_env("textenv/Tiny-v0", n_envs=2, seed=0, **SMALL)
    model = _ppo(LMActorCriticPolicy, env, policy_kwargs=lm_policy_kwargs(env))
    env.attach(model)
    obs = env.reset()
    obs_t = {k: torch.as_tensor(v) for k, v in obs.items()}
    actions, _ = model.predict(obs, deterministic=False)
    expected = model.policy.get_distribution(obs_t).log_prob(torch.as_tensor(actions))
    env.step_async(actions)
    np.testing.assert_allclose(env.venv._pending, expected.detach().numpy(), atol=1e-6)
    _, _, _, infos = env.step_wait()
    assert [info["logprob_source"] for info in infos] == ["agent", "agent"]
    assert env.logprobs.recomputed == 1


def test_without_a_policy_the_env_reports_none():
    env = make_sb3_env("textenv/Tiny-v0", n_envs=2, seed=0, **SMALL)
    env.reset()
    with pytest.warns(UserWarning, match="no log π"):
        _, _, _, infos = env.step(np.array([1, 2]))
    assert [info["logprob_source"] for info in infos] == ["none", "none"]


# ----------------------------------------------------------------------------- the VecEnv adapter


def test_adapter_follows_sb3_conventions_under_ppo():
    env = make_sb3_env("textenv/Tiny-v0", n_envs=4, seed=3, **SMALL)
    model = _ppo("MultiInputPolicy", env, policy_kwargs=MIP_KWARGS, n_steps=32, batch_size=64)
    rec = Recorder()
    model.learn(320, callback=rec)
    P, N = SMALL["max_prompt_tokens"], SMALL["max_new_tokens"]
    n_eps = 0
    for i in range(4):
        length, ret = 0, 0.0
        for step in rec.steps:
            info = step["infos"][i]
            length += 1
            ret += float(step["rewards"][i])
            if not step["dones"][i]:
                assert step["rewards"][i] == 0.0  # kl_reward="terminal"
                continue
            n_eps += 1
            term = info["terminal_observation"]
            assert set(term) == {"input_ids", "attention_mask"}
            assert int(term["attention_mask"][P:].sum()) == info["num_tokens"] == length
            assert term["input_ids"][P + length - 1] == step["actions"][i]  # last action in it
            assert info["episode"]["l"] == length
            assert info["episode"]["r"] == pytest.approx(ret, abs=1e-5)
            expected = info["rm_score"] - info["kl_coef"] * info["kl"] - info["penalty"]
            assert ret == pytest.approx(expected, abs=1e-5)
            assert info["TimeLimit.truncated"] is False
            assert length == N or term["input_ids"][P + length - 1] == env.venv.core.eos_id
            length, ret = 0, 0.0
    assert n_eps >= 4 * (320 // 4) // N - 4
    # The returned obs of a done row is the reset one: no generated token yet.
    last = rec.steps[-1]
    assert np.all(model._last_obs["attention_mask"][last["dones"], P:] == 0)
    ep_rews = [ep["r"] for ep in model.ep_info_buffer]
    assert len(ep_rews) > 0  # SB3's own logger sees the episodes (rollout/ep_rew_mean)


def test_adapter_matches_dummy_vec_env_of_single_envs():
    """Same seeds and actions: the native adapter and DummyVecEnv(gym.make) agree step by step."""
    kwargs = dict(SMALL, kl_coef=0.1)
    native = make_sb3_env("textenv/Tiny-v0", n_envs=3, seed=7, **kwargs)
    dummy = make_sb3_env("textenv/Tiny-v0", n_envs=3, seed=7, native=False, **kwargs)
    rng = np.random.default_rng(0)
    obs_a, obs_b = native.reset(), dummy.reset()
    n_done = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(40):
            for key in obs_a:
                np.testing.assert_array_equal(obs_a[key], obs_b[key])
            actions = rng.integers(0, 257, size=3)
            lp = -rng.uniform(0.1, 5.0, size=3)
            native.venv.set_action_logprobs(lp)
            for i in range(3):
                dummy.venv.env_method("set_action_logprob", lp[i], indices=[i])
            obs_a, rew_a, done_a, info_a = native.step(actions)
            obs_b, rew_b, done_b, info_b = dummy.step(actions)
            np.testing.assert_array_equal(done_a, done_b)
            np.testing.assert_allclose(rew_a, rew_b, atol=1e-5)
            for i in np.flatnonzero(done_a):
                n_done += 1
                for key in ("kl", "rm_score", "num_tokens"):
                    assert info_a[i][key] == pytest.approx(info_b[i][key], abs=1e-5)
                np.testing.assert_allclose(info_a[i]["ref_logprobs"], info_b[i]["ref_logprobs"])
                assert info_a[i]["TimeLimit.truncated"] == info_b[i]["TimeLimit.truncated"]
                for key in ("input_ids", "attention_mask"):
                    np.testing.assert_array_equal(
                        info_a[i]["terminal_observation"][key],
                        info_b[i]["terminal_observation"][key],
                    )
    assert n_done >= 3


def test_adapter_api_and_errors():
    env = make_sb3_env("textenv/Tiny-v0", n_envs=3, seed=0, **SMALL)
    assert env.get_attr("kl_coef") == [0.05] * 3
    assert env.has_attr("action_masks") and not env.has_attr("no_such_thing")
    env.reset()
    masks = env.env_method("action_masks", indices=[0, 2])
    assert len(masks) == 2 and masks[0].shape == (257,) and masks[0].all()
    env.set_attr("render_mode", None)
    assert env.env_is_wrapped(gym.Wrapper) == [False] * 3
    assert env.env_is_wrapped(Monitor) == [True] * 3  # it writes info["episode"] itself
    env.set_options([{"prompt": "Hello"}, {}, {"prompt": "Bye"}])
    env.reset()
    assert env.reset_infos[0]["prompt"] == "Hello" and env.reset_infos[2]["prompt"] == "Bye"
    # NEXT_STEP autoreset resets one step late: rejected with a pointer to DISABLED.
    nxt = TextGenVectorEnv(num_envs=2, autoreset_mode=AutoresetMode.NEXT_STEP)
    with pytest.raises(ValueError, match="DISABLED"):
        TextGenSB3VecEnv(nxt)
    with pytest.raises(TypeError):
        TextGenSB3VecEnv(gym.make("textenv/Tiny-v0"))


def test_lm_policy_is_the_reference_at_start_and_saves(tmp_path):
    env = make_sb3_env("textenv/Tiny-v0", n_envs=2, seed=0, temperature=0.5, **SMALL)
    model = _ppo(LMActorCriticPolicy, env, policy_kwargs=lm_policy_kwargs(env))
    obs = env.reset()
    obs_t = {k: torch.as_tensor(v) for k, v in obs.items()}
    ref = env.venv.core.reference
    P = SMALL["max_prompt_tokens"]
    ids, mask = obs_t["input_ids"][:, :P], obs_t["attention_mask"][:, :P]
    with torch.no_grad():
        logits = ref(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
        expected = torch.log_softmax(logits.logits[:, -1] / 0.5, -1)
        got = model.policy.get_distribution(obs_t).distribution.logits
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.all(model.policy.predict_values(obs_t) == 0)  # zero-init value head
    model.learn(16)
    model.policy.set_training_mode(True)
    assert not model.policy.features_extractor.lm.training  # dropout stays off
    path = tmp_path / "lm_ppo"
    model.save(path)
    loaded = PPO.load(path, env=env, device="cpu")
    with torch.no_grad():
        a = model.policy.get_distribution(obs_t).distribution.logits
        b = loaded.policy.get_distribution(obs_t).distribution.logits
    assert torch.allclose(a, b) and loaded.policy.temperature == 0.5


# ----------------------------------------------------------------------------- MaskablePPO


@pytest.mark.parametrize("policy", ["mip", "lm"])
def test_maskable_ppo_never_takes_masked_actions(policy):
    from sb3_contrib import MaskablePPO

    env = make_sb3_env("textenv/Tiny-v0", n_envs=3, seed=0, action_mask_top_k=5, **SMALL)
    if policy == "lm":
        model = MaskablePPO(
            MaskableLMActorCriticPolicy,
            env,
            policy_kwargs=lm_policy_kwargs(env),
            n_steps=16,
            batch_size=24,
            n_epochs=2,
            seed=0,
        )
    else:
        model = MaskablePPO(
            "MultiInputPolicy",
            env,
            policy_kwargs=MIP_KWARGS,
            n_steps=16,
            batch_size=24,
            n_epochs=2,
            seed=0,
        )
    rec = Recorder()
    model.learn(96, callback=rec)
    for step in rec.steps:
        masks = step["masks"]
        assert masks is not None and masks.shape == (3, 257)
        assert np.all(masks.sum(1) >= 5) and np.all(masks.sum(1) < 257)
        assert masks[np.arange(3), step["actions"]].all()  # masked actions never taken
        assert all(info["logprob_source"] == "agent" for info in step["infos"])
    # The masks are the reference's top-5 for the observation the action was taken in.
    obs = env.reset()
    masks = np.stack(env.env_method("action_masks"))
    P = SMALL["max_prompt_tokens"]
    ids = torch.as_tensor(obs["input_ids"][:, :P])
    att = torch.as_tensor(obs["attention_mask"][:, :P])
    with torch.no_grad():
        logits = env.venv.core.reference(
            input_ids=ids, attention_mask=att, position_ids=position_ids_from_mask(att)
        ).logits[:, -1]
    top5 = torch.topk(logits, 5, dim=-1).indices.numpy()
    for i in range(3):
        assert masks[i, top5[i]].all()
    # The KL term uses the masked policy's log-probs (the distribution actually sampled from).
    _check_kl(rec.episodes(), 0.05)


def test_maskable_ppo_with_dummy_vec_env():
    from sb3_contrib import MaskablePPO

    env = make_sb3_env(
        "textenv/Tiny-v0", n_envs=2, seed=0, native=False, action_mask_top_p=0.5, **SMALL
    )
    assert isinstance(env, LogProbVecEnvWrapper)
    model = MaskablePPO(
        "MultiInputPolicy", env, policy_kwargs=MIP_KWARGS, n_steps=8, batch_size=16, seed=0
    )
    rec = Recorder()
    model.learn(16, callback=rec)
    for step in rec.steps:
        assert step["masks"][np.arange(2), step["actions"]].all()
        assert all(info["logprob_source"] == "agent" for info in step["infos"])


def test_plain_sb3_make_vec_env_works_on_every_id():
    import warnings

    from stable_baselines3.common.env_util import make_vec_env

    import textenv

    for env_id in textenv.registered_ids():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            venv = make_vec_env(env_id, n_envs=2, seed=0)
        obs = venv.reset()
        assert obs["input_ids"].shape[0] == 2
        venv.close()


def test_plain_sb3_without_the_log_pi_link_is_told_how_to_fix_it():
    """PPO("MultiInputPolicy", gym.make(...)) trains with KL at 0 unless the wrapper is used: the
    first step says so and names make_sb3_env; kl_logprob="require" refuses to train."""
    env = gym.make("textenv/Sort-v0", **SMALL, max_episode_steps=5)
    model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0)
    with pytest.warns(UserWarning, match="Stable-Baselines3 without textenv's log π link") as rec:
        model.learn(8)
    assert "agents.sb3.make_sb3_env" in str(rec[0].message)
    strict = gym.make("textenv/Sort-v0", **SMALL, max_episode_steps=5, kl_logprob="require")
    model = PPO("MultiInputPolicy", strict, n_steps=8, batch_size=8, n_epochs=1, seed=0)
    with pytest.raises(RuntimeError, match="kl_logprob='require'.*make_sb3_env"):
        model.learn(8)
