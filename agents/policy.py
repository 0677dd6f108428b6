"""The shared LM-policy layer: the single home of rollout and log-prob code for the agents.

* :func:`make_envs` builds the lockstep vector env the agents train on
  (``vector_entry_point``, ``AutoresetMode.DISABLED``).
* :class:`LMPolicy` wraps a trainable causal LM: it samples a whole batch of episodes through
  :mod:`textenv.lm.sampling` with its KV cache (:meth:`LMPolicy.rollout`), handing the log-prob of
  every action to the env through the log π channel, and scores whole sequences in one forward
  at update time (:meth:`LMPolicy.score`).
* :class:`Rollout` is what a rollout returns: prompt / completion tensors, sampled log-probs,
  the env's per-step rewards and the final infos.

Temperature is applied identically when sampling and scoring (and equals the env's, so the env
scores the reference at the same temperature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

import textenv  # noqa: F401  (registers the ids)
from textenv.env.registration import make_lockstep_envs
from textenv.lm.models import load_causal_lm, load_tokenizer
from textenv.lm.padding import forward_left_padded
from textenv.lm.sampling import SamplingConfig, sample_loop
from textenv.lm.sampling import sequence_logprobs as _sequence_logprobs

__all__ = ["Rollout", "LMPolicy", "make_envs", "masked_mean", "masked_whiten", "FINAL_KEYS"]

# Final-info keys collected per row when its episode ends.
FINAL_KEYS = ("rm_score", "kl", "kl_coef", "gold_score", "num_tokens", "penalty")


def make_envs(env_id: str, num_envs: int, env_kwargs: dict[str, Any] | None = None) -> Any:
    """The lockstep vector env (:func:`textenv.env.registration.make_lockstep_envs`)."""
    return make_lockstep_envs(env_id, num_envs, **(env_kwargs or {}))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over the masked entries; 0 outside the mask."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return ((x - mean) * torch.rsqrt(var + eps)) * mask.to(x.dtype)


@dataclass
class Rollout:
    """One batch of B finished episodes (tensors on the policy's device).

    ``tokens`` are right-padded with the pad id; ``mask`` marks real completion tokens;
    ``logprobs`` are the sampled log π (0 outside the mask); ``rewards[:, t]`` is the env's
    reward for step t; ``ref_logprobs`` are the env's reference log-probs (NaN padded, numpy);
    ``final`` holds the final-info arrays over the batch (``rm_score``, ``kl``, ``kl_coef``,
    ``gold_score`` where the task has one, ...); ``entropy`` the mean per-token entropy of the
    sampling distributions.
    """

    prompt_ids: torch.Tensor  # (B, P) left padded
    prompt_mask: torch.Tensor  # (B, P)
    tokens: torch.Tensor  # (B, N)
    mask: torch.Tensor  # (B, N) bool
    logprobs: torch.Tensor  # (B, N)
    rewards: torch.Tensor  # (B, N)
    ref_logprobs: np.ndarray  # (B, N) NaN padded
    final: dict[str, np.ndarray]
    prompts: list[str]
    texts: list[str]
    entropy: float

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted episode returns (B,): the sum of the env's rewards."""
        return self.rewards.sum(-1)


class LMPolicy(torch.nn.Module):
    """A trainable causal LM that plays the vector env.

    ``spec`` is any :func:`textenv.lm.models.load_causal_lm` spec (``None``: the env's reference,
    the usual RLHF start) or a causal LM object (used as is, in the mode it is in; the env's
    tokenizer goes with it). Its logit count must equal the env's ``single_action_space.n``.
    """

    def __init__(
        self,
        envs: Any,
        spec: str | PreTrainedModel | None = None,
        *,
        temperature: float | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        env = envs.unwrapped
        self.envs = envs
        model = spec if isinstance(spec, torch.nn.Module) else None
        if model is not None:
            spec = str(getattr(model, "name_or_path", "") or env.config.reference)
        self.spec = spec or env.config.reference
        env_temperature = float(env.config.temperature)
        if temperature is not None and abs(float(temperature) - env_temperature) > 1e-12:
            raise ValueError(
                f"the policy samples at temperature {temperature} but the env scores the "
                f"reference at {env_temperature}; pass env_kwargs={{'temperature': "
                f"{temperature}}} (or leave the agent's temperature unset)"
            )
        self.temperature = env_temperature
        self.sampling = SamplingConfig(self.temperature)
        if model is not None:
            self.model: PreTrainedModel = model
            self.device = next(model.parameters()).device
            self.tokenizer = load_tokenizer(env.config.reference)
        else:
            self.device = torch.device(device)
            self.model = load_causal_lm(self.spec, device)
            self.model.train(False)  # no dropout in rollouts or updates
            self.tokenizer = load_tokenizer(self.spec)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        n_actions = int(envs.single_action_space.n)
        if self.vocab_size != n_actions:
            raise ValueError(
                f"vocabulary mismatch: the policy {self.spec!r} has {self.vocab_size} logits but "
                f"the env's action space is Discrete({n_actions}); use a policy built on the "
                f"env's tokenizer (e.g. its reference {env.config.reference!r})"
            )
        self.P = int(env.config.max_prompt_tokens)
        self.N = int(env.config.max_new_tokens)
        positions = getattr(self.model.config, "n_positions", None)
        if positions is not None and positions < self.P + self.N:
            raise ValueError(
                f"the policy has {positions} positions but episodes need "
                f"max_prompt_tokens + max_new_tokens = {self.P + self.N}"
            )
        self.pad_id = int(env.core.pad_id)
        self.hidden_size = int(self.model.config.hidden_size)

    # ------------------------------------------------------------------ rollouts

    @torch.no_grad()
    def rollout(
        self,
        generator: torch.Generator,
        *,
        seed: int | None = None,
        prompts: list[Any] | None = None,
        temperature: float | None = None,
    ) -> Rollout:
        """Play one lockstep batch of episodes to the end; returns a :class:`Rollout`.

        ``seed`` seeds the env's prompt draws; ``prompts`` pins one prompt per row
        (``reset(options={"prompts": prompts})``), e.g. G rows per prompt for GRPO / RLOO.
        ``temperature`` samples at another temperature than the env's (evaluation and demos
        only: the log-probs handed to the env are then those of that distribution, and the
        env's KL measures how far it is from the reference at the env's temperature).
        """
        envs, env = self.envs, self.envs.unwrapped
        B, P, N, dev = envs.num_envs, self.P, self.N, self.device
        sampling = self.sampling if temperature is None else SamplingConfig(float(temperature))
        options = {"prompts": prompts} if prompts is not None else None
        obs, reset_info = envs.reset(seed=seed, options=options)
        prompt_ids = torch.as_tensor(obs["input_ids"][:, :P], device=dev)
        prompt_mask = torch.as_tensor(obs["attention_mask"][:, :P], device=dev)
        tokens = torch.full((B, N), self.pad_id, dtype=torch.long, device=dev)
        logprobs = torch.zeros(B, N, device=dev)
        mask = torch.zeros(B, N, dtype=torch.bool, device=dev)
        rewards = np.zeros((B, N))
        final: dict[str, np.ndarray] = {}
        ref_logprobs = np.full((B, N), np.nan)
        texts = np.full(B, "", dtype=object)
        done = np.zeros(B, dtype=bool)
        entropy = [0.0, 0]  # sum over the sampled steps of live rows, count

        def on_token(
            t: int, token: torch.Tensor, token_lp: torch.Tensor, lp: torch.Tensor
        ) -> torch.Tensor:
            """Hand the tokens (and their log π) to the env; the rows still running go on."""
            alive = torch.as_tensor(~done, device=dev)
            token = torch.where(alive, token, self.pad_id)
            ent = -(lp.exp() * lp.nan_to_num(neginf=0.0)).sum(-1)
            entropy[0] += float(ent[alive].sum())
            entropy[1] += int(alive.sum())
            tokens[:, t] = token
            logprobs[:, t] = torch.where(alive, token_lp, 0.0)
            mask[:, t] = alive
            env.set_action_logprobs(np.where(done, np.nan, token_lp.double().cpu().numpy()))
            _, reward, terminated, truncated, info = envs.step(token.cpu().numpy())
            stepped = info["_logprob_source"]
            if np.any(info["logprob_source"][stepped] != "agent"):  # the channel is our contract
                raise RuntimeError("the env did not receive the policy's log-probs")
            rewards[:, t] = reward
            if "_rm_score" in info:
                rows = info["_rm_score"]
                for key in FINAL_KEYS:
                    if key in info:
                        final.setdefault(key, np.full(B, np.nan))
                        final[key][rows] = info[key][rows]
                ref_logprobs[rows] = info["ref_logprobs"][rows]
                texts[rows] = info["text"][rows]
            done[:] |= terminated | truncated
            return torch.as_tensor(~done, device=dev)

        sample_loop(self.model, prompt_ids, prompt_mask, N, sampling, on_token, generator=generator)
        if not done.all():  # cannot happen: the env truncates at max_new_tokens
            raise RuntimeError("some episodes did not finish within max_new_tokens steps")
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            tokens=tokens,
            mask=mask,
            logprobs=logprobs,
            rewards=torch.as_tensor(rewards, dtype=torch.float32, device=dev),
            ref_logprobs=ref_logprobs,
            final=final,
            prompts=[str(p) for p in reset_info["prompt"]],
            texts=[str(x) for x in texts],
            entropy=entropy[0] / max(entropy[1], 1),
        )

    # ------------------------------------------------------------------ scoring

    def score(
        self, rollout: Rollout, rows: torch.Tensor | slice = slice(None), *, hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Log π of every completion token of ``rows`` (``(b, N)``), in ONE forward.

        Differentiable (call under ``torch.no_grad`` for old log-probs). ``hidden=True`` also
        returns the last hidden states at the positions that predict each token (``(b, N, H)``),
        what a value head reads.
        """
        return _sequence_logprobs(
            self.model,
            rollout.prompt_ids[rows],
            rollout.prompt_mask[rows],
            rollout.tokens[rows],
            rollout.mask[rows].long(),
            self.temperature,
            return_hidden=hidden,
        )


def sequence_hidden(
    model: PreTrainedModel, rollout: Rollout, rows: torch.Tensor | slice = slice(None)
) -> torch.Tensor:
    """Last hidden states ``(b, N, H)`` of a separate (value) model over the episodes, one
    forward, without computing the LM head over the completion."""

    ids = torch.cat([rollout.prompt_ids[rows], rollout.tokens[rows]], dim=1)
    mask = torch.cat([rollout.prompt_mask[rows].long(), rollout.mask[rows].long()], dim=1)
    n = rollout.tokens.shape[1]
    out = forward_left_padded(
        model, ids, mask, use_cache=False, logits_to_keep=1, output_hidden_states=True
    )
    return out.hidden_states[-1][:, -n - 1 : -1]
