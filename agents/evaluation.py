"""Evaluating a policy on an env's held-out prompts: RM score, gold score and KL, mean ± s.e."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from transformers import PreTrainedModel

from agents.policy import LMPolicy
from textenv.env.registration import make_lockstep_envs
from textenv.lm.models import load_causal_lm

__all__ = ["Stat", "Evaluation", "evaluate", "rollout_policy", "summary_line"]


@dataclass(frozen=True)
class Stat:
    """A sample mean with its standard error (std / √n, ddof = 1)."""

    mean: float
    sem: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray) -> Stat:
        values = np.asarray(values, dtype=np.float64)
        n = len(values)
        sem = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        return cls(float(values.mean()), sem, n)

    def __str__(self) -> str:
        return f"{self.mean:+.3f} ± {self.sem:.3f}"


@dataclass
class Evaluation:
    """What :func:`evaluate` measured, per metric, plus the raw per-episode values and texts."""

    metrics: dict[str, Stat]
    values: dict[str, np.ndarray]
    prompts: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: {"mean": s.mean, "sem": s.sem, "n": s.n} for k, s in self.metrics.items()}

    def __str__(self) -> str:
        return "  ".join(f"{k} {s}" for k, s in self.metrics.items())


@torch.no_grad()
def rollout_policy(
    policy: PreTrainedModel,
    envs: gym.vector.VectorEnv,
    prompts: list[Any] | None,
    *,
    seed: int,
    temperature: float | None = None,
) -> dict[str, np.ndarray]:
    """One lockstep batch of episodes of ``policy`` in a ``DISABLED``-autoreset vector env.

    The agents' own rollout (:meth:`agents.policy.LMPolicy.rollout`: KV-cached sampling, every
    log π handed to the env) at ``temperature`` (default: the env's). Returns the final infos
    over the batch (``rm_score``, ``kl``, ``gold_score`` where the task has one, ...) with
    ``prompt``, ``text``, ``ref_logprobs`` and ``return`` (the sum of the env's rewards).
    """
    lm_policy = LMPolicy(envs, policy)
    generator = torch.Generator(device=lm_policy.device).manual_seed(seed)
    rollout = lm_policy.rollout(generator, seed=seed, prompts=prompts, temperature=temperature)
    final = dict(rollout.final)
    final["ref_logprobs"] = rollout.ref_logprobs
    final["prompt"] = np.array(rollout.prompts, dtype=object)
    final["text"] = np.array(rollout.texts, dtype=object)
    final["return"] = rollout.rewards.double().sum(-1).cpu().numpy()
    return final


def evaluate(
    policy: PreTrainedModel | str,
    env_id: str,
    n_prompts: int = 64,
    seed: int = 0,
    *,
    batch_size: int = 64,
    temperature: float | None = None,
    **env_kwargs: Any,
) -> Evaluation:
    """Mean ± standard error of RM score, gold score, KL and return on the eval prompts.

    ``policy`` is a causal LM (or a model spec). The env is made with ``split="eval"``; the first
    ``n_prompts`` eval prompts (in a seeded order) are each run once, so two policies evaluated
    with the same seed see the same prompts.
    """
    if isinstance(policy, str):
        policy = load_causal_lm(policy)
    env_kwargs = {"split": "eval", **env_kwargs}
    batch_size = max(1, min(batch_size, n_prompts))
    envs = make_lockstep_envs(env_id, batch_size, **env_kwargs)
    pool = envs.unwrapped.prompts
    order = np.random.default_rng(seed).permutation(len(pool))
    chosen = [pool[i] for i in np.resize(order, n_prompts)]  # wraps if n_prompts > pool size
    collected: dict[str, list] = {}
    for start in range(0, n_prompts, batch_size):
        batch = chosen[start : start + batch_size]
        n_real = len(batch)
        batch = batch + [batch[-1]] * (batch_size - n_real)  # pad the last batch
        final = rollout_policy(policy, envs, batch, seed=seed + start, temperature=temperature)
        for key, value in final.items():
            collected.setdefault(key, []).extend(list(value[:n_real]))
    envs.close()
    values = {k: np.asarray(v) for k, v in collected.items()}
    numeric = [k for k in ("rm_score", "gold_score", "kl", "return", "num_tokens") if k in values]
    metrics = {k: Stat.of(values[k].astype(np.float64)) for k in numeric}
    return Evaluation(
        metrics=metrics,
        values=values,
        prompts=[str(p) for p in values.get("prompt", [])],
        texts=[str(t) for t in values.get("text", [])],
    )


def summary_line(metrics: dict[str, float]) -> str:
    """One line of an :meth:`agents.base.Agent.evaluate` result (return, RM score, KL and the
    gold score where the task has one), as the training commands print it."""
    gold = f", gold {metrics['env/gold_score']:.3f}" if "env/gold_score" in metrics else ""
    return (
        f"return {metrics['env/return']:.3f}, rm {metrics['env/rm_score']:.3f}, "
        f"kl {metrics['env/kl']:.3f}{gold}"
    )
