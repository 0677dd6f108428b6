"""Reward models: one interface for learned RMs and for Python scorers.

Anything with the signature ::

    reward(prompts: list[str], completions: list[str], metadata: list[dict]) -> Sequence[float]

is a reward function: a learned sequence classifier wrapped by :class:`SequenceClassifierReward`,
a gold scorer used as a simulated labeller, or a user's own callable named by a
``"package.module:function"`` spec. :func:`score` validates what comes back (count, finiteness),
because a NaN reward silently poisons every later update.
"""

from __future__ import annotations

import inspect
import numbers
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
    same_tokenizer,
)
from textenv.lm.padding import classifier_logits_left_padded, encode_texts, left_pad
from textenv.rewards.capabilities import TokenRows
from textenv.rewards.fused import FusedRewardHead, is_fused_reward_folder

__all__ = [
    "RewardFunction",
    "RewardModelError",
    "SequenceClassifierReward",
    "load_reward",
    "score",
    "check_scores",
    "check_reward_callable",
    "check_user_reward",
    "REWARD_SIGNATURE",
]

REWARD_SIGNATURE = (
    "reward(prompts: list[str], completions: list[str], metadata: list[dict]) -> Sequence[float]"
)


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
        return self._score_rows(
            encode_texts(self.tokenizer, texts, self.max_length, special_tokens=True)
        )

    def reads_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Ids of ``tokenizer`` are read as they are when it is this RM's own tokenizer (and
        that adds no special tokens of its own, which the ids would lack)."""
        return same_tokenizer(self.tokenizer, tokenizer) and not self.tokenizer("")["input_ids"]

    @torch.no_grad()
    def score_token_ids(
        self, prompt_ids: TokenRows, completion_ids: TokenRows, metadata: list[dict[str, Any]]
    ) -> np.ndarray:
        """Scores of ``prompt_ids + completion_ids`` rows (this RM's token ids), left-truncated
        to ``max_length`` like the text path: no decode, no re-tokenise."""
        eos = self.tokenizer.eos_token_id
        rows = [
            (list(p) + list(c))[-self.max_length :] or [eos]
            for p, c in zip(prompt_ids, completion_ids)
        ]
        return self._score_rows(rows)

    def _score_rows(self, rows: list[list[int]]) -> np.ndarray:
        """One left-padded forward per ``batch_size`` rows; normalised scores."""
        device = next(self.model.parameters()).device
        scores = []
        for start in range(0, len(rows), self.batch_size):
            ids, mask = left_pad(
                rows[start : start + self.batch_size], self.tokenizer.pad_token_id, device=device
            )
            self.calls += 1
            logits = classifier_logits_left_padded(self.model, ids, mask)
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


def check_reward_callable(
    fn: Any,
    name: str,
    trial: tuple[list[str], list[str], list[dict[str, Any]]] | None = None,
) -> None:
    """Check a reward callable when the env is built, not at the first episode end.

    Its signature must take ``(prompts, completions, metadata)`` positionally; with ``trial``
    it is also called once on that batch (the env passes one real prompt with an empty
    completion, which the env can produce itself) and what it returns is checked like every
    later score. The error shows the expected signature.
    """
    if not callable(fn):
        raise TypeError(f"{name} is not callable; expected {REWARD_SIGNATURE}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none; the trial call still checks
        signature = None
    if signature is not None:
        try:
            signature.bind([], [], [])
        except TypeError as exc:
            raise TypeError(
                f"{name} has the signature {getattr(fn, '__name__', 'reward')}{signature}, which "
                f"cannot be called as {REWARD_SIGNATURE} ({exc})"
            ) from None
    if trial is None:
        return
    try:
        raw = fn(*trial)
    except Exception as exc:
        raise RewardModelError(
            f"{name} raised on a trial call made when the env was built, "
            f"reward({trial[0]!r:.80}, {trial[1]!r}, {trial[2]!r:.80}): "
            f"{type(exc).__name__}: {exc}. Expected {REWARD_SIGNATURE}"
        ) from exc
    check_scores(raw, len(trial[1]), name=f"{name} (trial call when the env was built)")


def check_user_reward(
    spec: Any, fn: Any, what: str, trial: tuple[list[str], list[str], list[dict[str, Any]]]
) -> None:
    """:func:`check_reward_callable` for a reward given as a callable or a ``"module:function"``
    spec (learned reward models are checked when they load)."""
    if callable(spec) or (isinstance(spec, str) and is_callable_spec(spec)):
        label = spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))
        check_reward_callable(fn, f"{what} {label!r}", trial)


def _numeric_array(raw: Any, name: str) -> np.ndarray:
    """``raw`` as float64, refusing strings and bools (numpy would turn ``"0.5"`` and ``True``
    into numbers silently) and anything else that is not a real number."""
    if isinstance(raw, torch.Tensor):
        if raw.dtype == torch.bool:
            raise RewardModelError(f"{name} returned bools, not scores: {raw!r:.200}")
        raw = raw.detach().float().cpu().numpy()
    if isinstance(raw, (str, bytes)):
        raise RewardModelError(f"{name} returned a string, not scores: {raw!r:.200}")
    if isinstance(raw, (list, tuple)):  # [True, 0.5] would become a float array
        raw = np.array(raw, dtype=object) if raw else np.zeros(0)
    try:
        arr = np.asarray(raw)
    except (TypeError, ValueError) as exc:
        raise RewardModelError(f"{name} returned non-numeric scores: {raw!r:.200}") from exc
    if arr.dtype.kind == "O":
        for i, x in enumerate(arr.reshape(-1)):
            if isinstance(x, torch.Tensor) and x.numel() == 1 and x.dtype != torch.bool:
                continue
            if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
                raise RewardModelError(
                    f"{name} returned a non-numeric score {x!r:.80} ({type(x).__name__}) for "
                    f"completion {i}; expected {REWARD_SIGNATURE}"
                )
    elif arr.dtype.kind not in "iuf":
        raise RewardModelError(
            f"{name} returned scores of dtype {arr.dtype} ({raw!r:.200}); expected real numbers, "
            f"not strings or bools: {REWARD_SIGNATURE}"
        )
    if arr.dtype.kind == "O":
        return np.array([float(x) for x in arr.reshape(-1)], dtype=np.float64)
    return arr.astype(np.float64).reshape(-1)


def check_scores(raw: Any, expected: int, *, name: str = "reward model") -> np.ndarray:
    """``raw`` as a float64 array of ``expected`` finite scores, or a :class:`RewardModelError`."""
    values = _numeric_array(raw, name)
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
