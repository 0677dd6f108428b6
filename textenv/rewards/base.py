"""Reward models: one interface for learned RMs and for Python scorers.

Anything with the signature ::

    reward(prompts: list[str], completions: list[str], metadata: list[dict]) -> Sequence[float]

is a reward function: a learned sequence classifier wrapped by :class:`SequenceClassifierReward`,
a gold scorer used as a simulated labeller, or a user's own callable named by a
``"package.module:function"`` spec. :func:`score` validates what comes back (count, finiteness),
because a NaN reward silently poisons every later update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from textenv.lm.models import (
    cached_frozen,
    import_callable,
    is_callable_spec,
    load_sequence_classifier,
    load_tokenizer,
    resolve_dtype,
)
from textenv.lm.sampling import position_ids_from_mask
from textenv.rewards.fused import FusedRewardHead, is_fused_reward_folder

__all__ = [
    "RewardFunction",
    "RewardModelError",
    "SequenceClassifierReward",
    "load_reward",
    "score",
    "check_scores",
]


class RewardFunction(Protocol):
    def __call__(
        self, prompts: list[str], completions: list[str], metadata: list[dict[str, Any]]
    ) -> Sequence[float]: ...


class RewardModelError(ValueError):
    """A reward model returned something unusable (NaN/inf, wrong number of scores)."""


class SequenceClassifierReward:
    """Scores ``prompt + completion`` with a one-label ``AutoModelForSequenceClassification``.

    The text is re-tokenised with the RM's own tokenizer (it need not share the policy's
    vocabulary), left-padded, and scored in one forward per call. Optional ``mean``/``std``
    (stored in the model config as ``reward_mean``/``reward_std``) normalise the output.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 512,
        batch_size: int = 256,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        positions = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", None
        )
        self.max_length = min(max_length, positions) if positions else max_length
        # An over-long text loses its start, never the completion the reward is about.
        self.tokenizer.truncation_side = "left"
        self.batch_size = batch_size
        self.mean = float(getattr(model.config, "reward_mean", 0.0) or 0.0)
        self.std = float(getattr(model.config, "reward_std", 1.0) or 1.0)
        self.calls = 0  # forwards run; tests use it to prove batching

    @torch.no_grad()
    def __call__(
        self, prompts: list[str], completions: list[str], metadata: list[dict[str, Any]]
    ) -> np.ndarray:
        texts = [p + c for p, c in zip(prompts, completions)]
        device = next(self.model.parameters()).device
        scores = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(device)
            if enc["input_ids"].shape[1] == 0:  # every text empty: score the EOS token alone
                enc["input_ids"] = torch.full_like(
                    enc["input_ids"][:, :1], self.tokenizer.eos_token_id
                )
                enc["attention_mask"] = torch.ones_like(enc["input_ids"])
            self.calls += 1
            logits = self.model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                position_ids=position_ids_from_mask(enc["attention_mask"]),
            ).logits
            scores.append(logits[:, 0].float().cpu().numpy())
        return (np.concatenate(scores) - self.mean) / self.std


def load_reward(
    spec: str | Callable[..., Sequence[float]],
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> RewardFunction:
    """A reward function from a spec: ``"module:function"``, an RM folder (a sequence classifier or
    a fused reward head, see :mod:`textenv.rewards.fused`), a hub name, or ``"tiny-rm"``."""
    if callable(spec):
        return spec
    if is_callable_spec(spec):
        return import_callable(spec)

    if is_fused_reward_folder(spec):
        torch_dtype = resolve_dtype(dtype)
        return cached_frozen(
            "fused_reward",
            str(spec),
            str(device),
            torch_dtype,
            lambda: FusedRewardHead.load(spec, device, torch_dtype),
        )
    model = load_sequence_classifier(spec, device, resolve_dtype(dtype))
    # One wrapper per frozen model, so its call counter is shared like the model itself.
    wrapper = getattr(model, "_textenv_reward", None)
    if wrapper is None:
        wrapper = SequenceClassifierReward(model, load_tokenizer(spec))
        model._textenv_reward = wrapper
    return wrapper


def score(
    reward: RewardFunction,
    prompts: list[str],
    completions: list[str],
    metadata: list[dict[str, Any]],
    *,
    name: str = "reward model",
) -> np.ndarray:
    """Call ``reward`` and check the result: one finite float per completion."""
    values = check_scores(reward(prompts, completions, metadata), len(completions), name=name)
    return values


def check_scores(raw: Any, expected: int, *, name: str = "reward model") -> np.ndarray:
    """``raw`` as a float64 array of ``expected`` finite scores, or a :class:`RewardModelError`."""
    if isinstance(raw, torch.Tensor):
        raw = raw.detach().float().cpu().numpy()
    try:
        values = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise RewardModelError(f"{name} returned non-numeric scores: {raw!r:.200}") from exc
    if values.shape[0] != expected:
        raise RewardModelError(
            f"{name} returned {values.shape[0]} scores for {expected} completions"
        )
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RewardModelError(
            f"{name} returned a non-finite score ({values[i]}) for completion {i}"
        )
    return values
