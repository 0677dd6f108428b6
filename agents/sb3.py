"""stable-baselines3 on textenv envs, unchanged: policies, a VecEnv adapter and the log π link.

Quick start (SB3's own PPO; MaskablePPO from sb3-contrib works the same way)::

    from stable_baselines3 import PPO
    from agents.sb3 import LMActorCriticPolicy, lm_policy_kwargs, make_sb3_env

    env = make_sb3_env("textenv/Tiny-v0", n_envs=8, seed=0)       # native batched env
    model = PPO(LMActorCriticPolicy, env, policy_kwargs=lm_policy_kwargs(env), n_steps=32)
    model.learn(10_000)

Pieces
------
* :class:`TokenFeaturesExtractor`: embedding + pooling over the token ids, for SB3's own
  ``"MultiInputPolicy"`` (``policy_kwargs=dict(features_extractor_class=TokenFeaturesExtractor)``).
  SB3 casts Box observations to float; the extractor casts them back to ``long``.
* :class:`LMActorCriticPolicy` (and :class:`MaskableLMActorCriticPolicy` for MaskablePPO): an
  ``ActorCriticPolicy`` whose actor is a causal LM loaded with
  :func:`textenv.lm.models.load_causal_lm` (by default the env's reference, as in RLHF). It is built
  from SB3's own extension points, so every SB3 method (``forward``, ``evaluate_actions``,
  ``predict``, masking) runs unchanged: the *features extractor* is the LM trunk read at the
  last real token of the observation, the *action net* is the LM head divided by the env's
  ``temperature``, the *value net* a zero-initialised linear head on the same hidden state.
  Dropout stays off in training mode (RLHF implementation details).
* :class:`TextGenSB3VecEnv`: an SB3 ``VecEnv`` over the native batched
  :class:`textenv.env.vector.TextGenVectorEnv` (driven in ``DISABLED`` autoreset mode so finished rows
  are reset on the same step, SB3-style, with ``terminal_observation`` in their info).
* :class:`LogProbVecEnvWrapper`: the same log π link for an SB3 ``VecEnv`` of single envs
  (``DummyVecEnv`` / ``SubprocVecEnv`` from ``make_vec_env``).
* :func:`make_sb3_env`, :func:`make_native_vec_env`, :func:`lm_policy_kwargs`: helpers.

How the KL term stays right (the log π channel)
------------------------------------------------
The env computes ``KL̂ = Σ_t k(log π(a_t|s_t), log ρ(a_t|s_t))`` but only the agent knows π: the
log-prob of each action must reach the env before ``step`` (``set_action_logprob(s)``). SB3's
``collect_rollouts`` computes it in ``policy.forward`` (``actions, values, log_probs =
self.policy(obs)``) and then calls ``env.step(actions)``; no callback runs in between. The two
adapters above close that gap with no user code:

1. **Forward hook on the policy.** The adapter registers a ``torch`` forward hook on the
   algorithm's policy that records the ``(actions, log_probs)`` every on-policy SB3 policy
   returns from ``forward`` (PPO, A2C, MaskablePPO; any features extractor). On
   ``step_async(actions)`` the recorded log-probs are used **only if the recorded actions equal
   the actions being stepped**; so the env receives exactly the ``old_log_prob`` that PPO puts in
   its rollout buffer (masking and temperature included), computed once.
2. **Recompute as fallback.** When no matching record exists (a hand-written loop around
   ``model.predict``, the first step after attaching), the adapter evaluates
   ``policy.get_distribution(last_obs).log_prob(actions)`` (with the env's action masks for a
   maskable policy): one extra forward, same numbers.
3. **Finding the policy.** ``attach(model_or_policy)`` links a policy explicitly. Without it,
   ``reset``/``step_async`` look a few frames up the call stack for the SB3 ``BaseAlgorithm``
   that is calling them (``learn`` → ``collect_rollouts`` → ``env.step``) and attach to its
   ``policy`` (re-attaching if the algorithm or its policy changes). Nothing else depends on SB3
   internals, and nothing is patched.

If no policy can be found, the adapter passes nothing: the env then takes log π = log ρ for those
tokens (adds 0 to KL̂), warns once, and reports ``info["logprob_source"] == "none"``.

Episode ends and SB3 conventions
--------------------------------
``dones = terminated | truncated``; a done row's info holds ``terminal_observation``, the final
env keys (``rm_score``, ``kl``, ``ref_logprobs`` trimmed to the completion, ...), an SB3
Monitor-style ``episode`` dict (``r``, ``l``, ``t``), and ``TimeLimit.truncated``. Reaching
``max_new_tokens`` is a real end of an RLHF episode (the final reward is paid there and nothing
follows), so by default ``TimeLimit.truncated`` is ``False`` and SB3 does **not** bootstrap
``γ·V(terminal_observation)`` into the last reward; ``bootstrap_truncated=True`` restores SB3's
``DummyVecEnv`` behaviour (``truncated and not terminated``).

Cost
----
SB3 treats each token as an independent sample: an LM policy re-encodes the whole prefix for
every step in rollouts and again in every update epoch, O(T²) per episode instead of the O(T)
of a KV-cached sampler. ``benchmarks/sb3_vs_native.py`` measures the gap (see ``docs/sb3.md``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn
from torch import nn

import textenv  # noqa: F401  (registers the ids)
from textenv.env.registration import make_lockstep_envs
from textenv.env.vector import TextGenVectorEnv
from textenv.lm.models import load_causal_lm
from textenv.lm.padding import forward_left_padded

__all__ = [
    "TokenFeaturesExtractor",
    "LMFeaturesExtractor",
    "LMActorCriticPolicy",
    "MaskableLMActorCriticPolicy",
    "PolicyLogProbs",
    "TextGenSB3VecEnv",
    "LogProbVecEnvWrapper",
    "make_sb3_env",
    "make_native_vec_env",
    "lm_policy_kwargs",
]


# --------------------------------------------------------------------------- features extractors


def _ids_and_mask(observations: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """SB3 hands Box observations over as float; token ids are exact in float32 below 2**24."""
    ids = observations["input_ids"]
    mask = observations["attention_mask"]
    if ids.is_floating_point():
        ids = ids.round()
    return ids.long(), (mask > 0.5).long()


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (layout: left-padded prompt | tokens | right pad)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (mask * positions).argmax(dim=1)


class TokenFeaturesExtractor(BaseFeaturesExtractor):
    """Token embedding + pooling over a textenv observation, for SB3's ``MultiInputPolicy``.

    :param observation_space: the env's ``Dict(input_ids, attention_mask)`` space.
    :param embed_dim: embedding width.
    :param pooling: any of ``"mean"`` (mean over real tokens), ``"last"`` (the last real token)
        and ``"position"`` (an embedding of the last token's column, i.e. how far generation is).
        Features are their concatenation: ``features_dim = embed_dim * len(pooling)``.
    """

    POOLINGS = ("mean", "last", "position")

    def __init__(
        self,
        observation_space: spaces.Dict,
        embed_dim: int = 32,
        pooling: Sequence[str] = ("mean", "last", "position"),
    ) -> None:
        pooling = tuple(pooling)
        bad = [p for p in pooling if p not in self.POOLINGS]
        if not pooling or bad:
            raise ValueError(
                f"pooling must be a non-empty subset of {self.POOLINGS}, got {pooling}"
            )
        ids_space = observation_space["input_ids"]
        super().__init__(observation_space, features_dim=embed_dim * len(pooling))
        self.pooling = pooling
        self.vocab_size = int(np.max(ids_space.high)) + 1
        self.embed = nn.Embedding(self.vocab_size, embed_dim)
        self.position = nn.Embedding(int(ids_space.shape[0]), embed_dim)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = _ids_and_mask(observations)
        emb = self.embed(ids.clamp(0, self.vocab_size - 1))
        last = _last_index(mask)
        rows = torch.arange(ids.shape[0], device=ids.device)
        parts = []
        for kind in self.pooling:
            if kind == "mean":
                m = mask.unsqueeze(-1).to(emb.dtype)
                parts.append((emb * m).sum(1) / m.sum(1).clamp_min(1.0))
            elif kind == "last":
                parts.append(emb[rows, last])
            else:
                parts.append(self.position(last))
        return torch.cat(parts, dim=-1)


class LMFeaturesExtractor(BaseFeaturesExtractor):
    """A causal LM's trunk read at the last real token: the features an LM head turns into logits.

    The LM is :func:`textenv.lm.models.load_causal_lm` ``(lm, dtype=dtype)``, trainable. Only the
    columns up to the batch's longest row are run (the right padding is never encoded). Dropout
    is kept off even in training mode.
    """

    def __init__(self, observation_space: spaces.Dict, lm: str = "tiny", dtype: str | None = None):
        model = load_causal_lm(lm, "cpu", dtype)
        head = model.get_output_embeddings()
        super().__init__(observation_space, features_dim=int(head.weight.shape[1]))
        self.lm = model
        self.lm_spec = lm
        vocab = int(head.weight.shape[0])
        obs_vocab = int(np.max(observation_space["input_ids"].high)) + 1
        if vocab < obs_vocab:
            raise ValueError(
                f"LM {lm!r} has {vocab} logits but the env's vocabulary has {obs_vocab} tokens"
            )

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = _ids_and_mask(observations)
        last = _last_index(mask)
        width = int(last.max()) + 1
        ids, mask = ids[:, :width], mask[:, :width]
        out = forward_left_padded(self.lm.base_model, ids, mask, use_cache=False)
        hidden = out.last_hidden_state
        return hidden[torch.arange(ids.shape[0], device=ids.device), last].float()

    def train(self, mode: bool = True) -> LMFeaturesExtractor:
        super().train(mode)
        self.lm.eval()  # no dropout in rollouts or updates
        return self


class _TemperedHead(nn.Module):
    """The LM head as SB3's ``action_net``: logits / temperature (the env scores ρ at T too)."""

    def __init__(self, head: nn.Module, temperature: float) -> None:
        super().__init__()
        self.head = head
        self.temperature = float(temperature)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden.to(self.head.weight.dtype)).float() / self.temperature


class _LMPolicyMixin:
    """Turns an SB3 actor-critic policy class into an LM policy (shared by PPO / MaskablePPO)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        lm: str = "tiny",
        temperature: float = 1.0,
        dtype: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"an LM policy needs a Discrete action space, got {action_space}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.lm_spec, self.temperature, self.lm_dtype = lm, float(temperature), dtype
        # The LM *is* the features extractor; the MLP between it and the heads is the identity.
        kwargs["features_extractor_class"] = LMFeaturesExtractor
        kwargs["features_extractor_kwargs"] = {"lm": lm, "dtype": dtype}
        kwargs["net_arch"] = []
        kwargs["ortho_init"] = False
        kwargs["share_features_extractor"] = True
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        self._build_mlp_extractor()
        lm = self.features_extractor.lm
        self.action_net = _TemperedHead(lm.get_output_embeddings(), self.temperature)
        self.value_net = nn.Linear(self.features_dim, 1)
        nn.init.zeros_(self.value_net.weight)  # value head zero-init (RLHF implementation details)
        nn.init.zeros_(self.value_net.bias)
        n_actions = int(self.action_space.n)
        if lm.get_output_embeddings().weight.shape[0] != n_actions:
            raise ValueError(
                f"LM {self.lm_spec!r} has {lm.get_output_embeddings().weight.shape[0]} logits, "
                f"the env has {n_actions} actions"
            )
        self.optimizer = self.optimizer_class(
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in ("features_extractor_class", "features_extractor_kwargs", "net_arch"):
            data.pop(key, None)
        data.pop("ortho_init", None)
        data.pop("share_features_extractor", None)
        data.update(lm=self.lm_spec, temperature=self.temperature, dtype=self.lm_dtype)
        return data


class LMActorCriticPolicy(_LMPolicyMixin, ActorCriticPolicy):
    """SB3 ``ActorCriticPolicy`` whose actor is a causal LM (RLHF with SB3's own PPO / A2C).

    ``π(·|s) = softmax(LM(s)[last real token] / temperature)``; ``V(s)`` a zero-initialised linear
    head on the same hidden state (shared trunk). Pass ``policy_kwargs=lm_policy_kwargs(env)`` so
    the LM is the env's reference and the temperature the env's.

    :param lm: model spec for :func:`textenv.lm.models.load_causal_lm` (default ``"tiny"``).
    :param temperature: sampling temperature; must equal the env's ``temperature``.
    :param dtype: LM dtype (``None`` = float32).
    Other keyword arguments go to ``ActorCriticPolicy`` (optimizer settings and the like).
    """


try:  # sb3-contrib is optional
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

    class MaskableLMActorCriticPolicy(_LMPolicyMixin, MaskableActorCriticPolicy):
        """:class:`LMActorCriticPolicy` for sb3-contrib's ``MaskablePPO`` (NLPO-style masking)."""

except ImportError:  # pragma: no cover
    MaskableLMActorCriticPolicy = None  # type: ignore[assignment,misc]


def lm_policy_kwargs(env: Any, **overrides: Any) -> dict[str, Any]:
    """``policy_kwargs`` for :class:`LMActorCriticPolicy` matching ``env``: its reference LM (the
    policy starts as ρ) and its sampling temperature. ``env``: an SB3 VecEnv, a Gymnasium env or
    vector env made from a textenv id."""
    config = _env_config(env)
    kwargs = {"lm": config.reference, "temperature": config.temperature}
    if config.dtype not in (None, "float32"):
        kwargs["dtype"] = config.dtype
    kwargs.update(overrides)
    return kwargs


def _env_config(env: Any) -> Any:
    if isinstance(env, VecEnv):
        return env.get_attr("config", indices=[0])[0]
    base = getattr(env, "unwrapped", env)
    config = getattr(base, "config", None)
    if config is None:
        raise TypeError(f"cannot find a textenv config on {env!r}")
    return config


# --------------------------------------------------------------------------- the log π link


class PolicyLogProbs:
    """Delivers the log-probs of an SB3 policy's sampled actions (see the module docstring).

    A forward hook on the policy records ``(actions, log_probs)`` from each ``forward``;
    :meth:`for_actions` returns them when they match the actions being stepped, or recomputes
    ``log π(a|s)`` from the last observation otherwise.
    """

    def __init__(self) -> None:
        self.policy: BasePolicy | None = None
        self._handle: Any = None
        self._actions: np.ndarray | None = None
        self._log_probs: np.ndarray | None = None
        self.hits = 0  # steps served by the hook
        self.recomputed = 0  # steps served by the fallback

    def attach(self, policy_or_model: Any) -> None:
        policy = getattr(policy_or_model, "policy", policy_or_model)
        if not isinstance(policy, BasePolicy):
            raise TypeError(f"expected an SB3 policy or algorithm, got {type(policy_or_model)}")
        if policy is self.policy:
            return
        self.detach()
        self.policy = policy
        self._handle = policy.register_forward_hook(self._record)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle, self.policy = None, None
        self._actions = self._log_probs = None

    def attach_from_caller(self, max_depth: int = 12) -> None:
        """Attach to the policy of the SB3 algorithm found on the call stack, if any."""
        frame = sys._getframe(1)
        for _ in range(max_depth):
            if frame is None:
                return
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, BaseAlgorithm):
                if candidate.policy is not None:
                    self.attach(candidate.policy)
                return
            frame = frame.f_back

    def _record(self, module: nn.Module, args: Any, output: Any) -> None:
        if (
            isinstance(output, tuple)
            and len(output) >= 3
            and torch.is_tensor(output[0])
            and torch.is_tensor(output[2])
        ):
            self._actions = output[0].detach().cpu().numpy().reshape(-1)
            self._log_probs = output[2].detach().double().cpu().numpy().reshape(-1)

    def for_actions(
        self,
        actions: np.ndarray,
        last_obs: dict[str, np.ndarray] | None,
        masks: Any = None,
    ) -> np.ndarray | None:
        """log π of ``actions`` (shape ``(B,)``), or ``None`` when no policy is known.

        ``masks``: a callable returning the current action masks (used by the fallback with a
        maskable policy).
        """
        actions = np.asarray(actions).reshape(-1)
        rec_actions, rec_lp = self._actions, self._log_probs
        self._actions = self._log_probs = None
        if (
            rec_actions is not None
            and rec_actions.shape == actions.shape
            and np.array_equal(rec_actions, actions)
        ):
            self.hits += 1
            return rec_lp
        if self.policy is None or last_obs is None:
            return None
        self.recomputed += 1
        return self._recompute(actions, last_obs, masks)

    @torch.no_grad()
    def _recompute(self, actions: np.ndarray, obs: dict[str, np.ndarray], masks: Any) -> np.ndarray:
        policy = self.policy
        obs_tensor, _ = policy.obs_to_tensor(obs)
        kwargs = {}
        if _is_maskable(policy) and masks is not None:
            kwargs["action_masks"] = masks()
        dist = policy.get_distribution(obs_tensor, **kwargs)
        act = torch.as_tensor(actions, device=policy.device)
        return dist.log_prob(act).double().cpu().numpy().reshape(-1)


def _is_maskable(policy: BasePolicy) -> bool:
    return MaskableLMActorCriticPolicy is not None and isinstance(policy, MaskableActorCriticPolicy)


# --------------------------------------------------------------------------- VecEnv adapters


def _row_infos(
    info: dict[str, Any], num_envs: int, num_tokens: np.ndarray | None
) -> list[dict[str, Any]]:
    """Gymnasium's vector info (arrays + ``_key`` masks) → SB3's list of per-env dicts."""
    infos: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in info.items():
        if key.startswith("_"):
            continue
        present = info.get("_" + key)
        rows = range(num_envs) if present is None else np.flatnonzero(present)
        for i in rows:
            item = value[i]
            if isinstance(item, np.ndarray) and item.ndim == 1 and num_tokens is not None:
                item = item[: int(num_tokens[i])].copy()  # per-token arrays: drop NaN padding
            elif isinstance(item, np.generic):
                item = item.item()
            infos[i][key] = item
    return infos


class _EpisodeStats:
    """Monitor-style ``info["episode"]`` for vectorised envs."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.t0 = time.time()

    def update(self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict]) -> None:
        self.returns += rewards
        self.lengths += 1
        for i in np.flatnonzero(dones):
            infos[i]["episode"] = {
                "r": float(self.returns[i]),
                "l": int(self.lengths[i]),
                "t": round(time.time() - self.t0, 6),
            }
            self.returns[i], self.lengths[i] = 0.0, 0


class TextGenSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over the native batched env :class:`textenv.env.vector.TextGenVectorEnv`.

    SB3 conventions: a finished row is reset on the same step (the returned observation is the
    new episode's first; the last one is ``info["terminal_observation"]``), ``dones``, a list of
    info dicts (final env keys, ``episode``, ``TimeLimit.truncated``), ``env_method`` /
    ``get_attr`` / ``set_attr``. The log-probs of the acting SB3 policy reach the env's log π
    channel automatically (module docstring).

    ``action_masks()`` (and ``env_method("action_masks")``, which MaskablePPO calls) returns the
    env's reference top-k/top-p masks, one ``(V,)`` array per row; enable them with the env kwargs
    ``action_mask_top_k`` / ``action_mask_top_p`` (all ``True`` otherwise).

    ``get_attr``/``set_attr``/``env_method`` act on the one native vector env (its attributes
    are shared by all rows); each requested index receives that value, except
    ``env_method("action_masks")`` which returns per-row masks.

    :param venv: a native vector env in ``DISABLED`` autoreset mode (see :func:`make_sb3_env`).
        ``NEXT_STEP`` mode cannot give SB3 the new first observation on the finishing step.
    :param bootstrap_truncated: report ``TimeLimit.truncated`` (SB3 then bootstraps
        ``γ·V(terminal_observation)`` into the final reward). Default ``False``: an RLHF episode
        really ends at ``max_new_tokens``.
    """

    def __init__(self, venv: TextGenVectorEnv, bootstrap_truncated: bool = False) -> None:
        base = venv.unwrapped if hasattr(venv, "unwrapped") else venv
        if not isinstance(base, TextGenVectorEnv):
            raise TypeError(f"expected a textenv TextGenVectorEnv, got {type(venv).__name__}")
        if base.autoreset_mode != AutoresetMode.DISABLED:
            raise ValueError(
                "TextGenSB3VecEnv needs the native env in AutoresetMode.DISABLED (it resets "
                "finished rows itself, on the same step); make it with make_sb3_env() or "
                "gym.make_vec(id, num_envs, vectorization_mode='vector_entry_point', "
                "autoreset_mode=gym.vector.AutoresetMode.DISABLED)"
            )
        self.venv = base
        self.bootstrap_truncated = bootstrap_truncated
        self.logprobs = PolicyLogProbs()
        super().__init__(base.num_envs, base.single_observation_space, base.single_action_space)
        self._actions: np.ndarray | None = None
        self._obs: dict[str, np.ndarray] | None = None
        self._stats = _EpisodeStats(self.num_envs)

    # ------------------------------------------------------------------ log π

    def attach(self, policy_or_model: Any) -> None:
        """Link an SB3 policy (or algorithm) explicitly; otherwise found automatically."""
        self.logprobs.attach(policy_or_model)

    def action_masks(self) -> np.ndarray:
        """Bool ``(B, V)``: the reference's top-k/top-p set per row (all ``True`` if disabled)."""
        return self.venv.action_masks()

    # ------------------------------------------------------------------ VecEnv API

    def reset(self) -> dict[str, np.ndarray]:
        self.logprobs.attach_from_caller()
        seeds = self._seeds if all(s is not None for s in self._seeds) else None
        obs, info = self.venv.reset(seed=seeds)
        pinned = [opts.get("prompt") for opts in self._options]
        if any(p is not None for p in pinned):
            mask = np.array([p is not None for p in pinned])
            prompts = [p if p is not None else "" for p in pinned]
            obs, info = self.venv.reset(options={"reset_mask": mask, "prompts": prompts})
        self.reset_infos = [{"prompt": str(p)} for p in info["prompt"]]
        self._reset_seeds()
        self._reset_options()
        self._stats = _EpisodeStats(self.num_envs)
        self._obs = obs
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self.logprobs.attach_from_caller()
        self._actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64)
        logprobs = self.logprobs.for_actions(self._actions, self._obs, self.action_masks)
        if logprobs is not None:
            self.venv.set_action_logprobs(logprobs)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        num_tokens = info.get("num_tokens")
        infos = _row_infos(info, self.num_envs, num_tokens)
        self._stats.update(rewards, dones, infos)
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = {k: v[i].copy() for k, v in obs.items()}
                infos[i]["TimeLimit.truncated"] = bool(
                    self.bootstrap_truncated and truncated[i] and not terminated[i]
                )
            obs, reset_info = self.venv.reset(options={"reset_mask": dones})
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = {"prompt": str(reset_info["prompt"][i])}
        self._obs = obs
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.logprobs.detach()
        self.venv.close()

    def has_attr(self, attr_name: str) -> bool:
        return hasattr(self.venv, attr_name)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        idx = list(self._get_indices(indices))
        if method_name == "action_masks":
            masks = self.venv.action_masks(*method_args, **method_kwargs)
            return [masks[i] for i in idx]
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        # The adapter writes Monitor's info["episode"] itself.
        wrapped = wrapper_class is Monitor
        return [wrapped for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]


class LogProbVecEnvWrapper(VecEnvWrapper):
    """The log π link for an SB3 VecEnv of single textenv envs (``make_vec_env``'s
    ``DummyVecEnv``/``SubprocVecEnv``): before each step, each sub-env gets its action's log π
    through ``set_action_logprob``. ``bootstrap_truncated`` as in :class:`TextGenSB3VecEnv`
    (default ``False``: ``TimeLimit.truncated`` is cleared)."""

    def __init__(self, venv: VecEnv, bootstrap_truncated: bool = False) -> None:
        super().__init__(venv)
        self.bootstrap_truncated = bootstrap_truncated
        self.logprobs = PolicyLogProbs()
        self._obs: dict[str, np.ndarray] | None = None

    def attach(self, policy_or_model: Any) -> None:
        self.logprobs.attach(policy_or_model)

    def _masks(self) -> np.ndarray:
        return np.stack(self.venv.env_method("action_masks"))

    def reset(self) -> Any:
        self.logprobs.attach_from_caller()
        self._obs = self.venv.reset()
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        self.logprobs.attach_from_caller()
        logprobs = self.logprobs.for_actions(actions, self._obs, self._masks)
        if logprobs is not None:
            for i, x in enumerate(logprobs):
                self.venv.env_method("set_action_logprob", float(x), indices=[i])
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        if not self.bootstrap_truncated:
            for info in infos:
                if "TimeLimit.truncated" in info:
                    info["TimeLimit.truncated"] = False
        self._obs = obs
        return obs, rewards, dones, infos

    def close(self) -> None:
        self.logprobs.detach()
        self.venv.close()


# --------------------------------------------------------------------------- construction


def make_native_vec_env(env_id: str, n_envs: int, **env_kwargs: Any) -> TextGenVectorEnv:
    """The native batched env in ``DISABLED`` autoreset mode (what :class:`TextGenSB3VecEnv`
    wraps): ``gym.make_vec(env_id, n_envs, vectorization_mode="vector_entry_point")``. A
    ``max_new_tokens`` override also sets ``max_episode_steps``."""
    return make_lockstep_envs(env_id, n_envs, **env_kwargs)


def make_sb3_env(
    env_id: str,
    n_envs: int = 8,
    seed: int | None = None,
    *,
    native: bool = True,
    bootstrap_truncated: bool = False,
    **env_kwargs: Any,
) -> VecEnv:
    """An SB3 VecEnv for a textenv id, with the log π link in place.

    ``native=True``: :class:`TextGenSB3VecEnv` over the batched env (one model call per step for
    the whole batch). ``native=False``: ``make_vec_env`` (``DummyVecEnv`` of ``gym.make`` envs)
    wrapped in :class:`LogProbVecEnvWrapper`. ``env_kwargs`` go to the env; a ``max_new_tokens``
    override also sets ``max_episode_steps``.
    """
    if native:
        venv: VecEnv = TextGenSB3VecEnv(
            make_native_vec_env(env_id, n_envs, **env_kwargs), bootstrap_truncated
        )
    else:
        from stable_baselines3.common.env_util import make_vec_env

        kwargs = dict(env_kwargs)
        if "max_new_tokens" in kwargs:
            kwargs.setdefault("max_episode_steps", kwargs["max_new_tokens"])
        # make_vec_env defaults to render_mode="rgb_array", which the text env does not offer.
        kwargs.setdefault("render_mode", None)
        venv = LogProbVecEnvWrapper(
            make_vec_env(env_id, n_envs=n_envs, env_kwargs=kwargs), bootstrap_truncated
        )
    if seed is not None:
        venv.seed(seed)
    return venv
