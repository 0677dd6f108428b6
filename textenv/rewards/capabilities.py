"""What a reward can do beyond reading text: the env asks by capability, never by class.

Every reward is a :class:`~textenv.rewards.base.RewardFunction` (it scores prompts and completions
as text). Two optional capabilities let the env skip work:

* :class:`ReadsTokenIds` — the reward can score token ids of the env's tokenizer directly, so the
  env hands it the ids the policy generated instead of decoding them to text for the reward to
  re-tokenise (a learned RM on the policy's tokenizer: no decode, no re-tokenise, no padding
  from re-tokenised lengths).
* :class:`SharesReferenceForward` — the reward reads the frozen reference LM's own forward (a
  fused head on the reference's trunk), so the env gets the reference log-probs and the scores
  from ONE forward instead of a reference pass and a reward pass.

Both are ``runtime_checkable`` protocols: :func:`reads_token_ids` and
:func:`shares_reference_forward` are the checks the env makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

__all__ = [
    "TokenRows",
    "ReadsTokenIds",
    "SharesReferenceForward",
    "reads_token_ids",
    "shares_reference_forward",
]


TokenRows = Sequence[Sequence[int]]  # one list of token ids per row, no padding


@runtime_checkable
class ReadsTokenIds(Protocol):
    """A reward that can score token ids directly."""

    def reads_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Whether ids of ``tokenizer`` mean to this reward what they mean to that tokenizer
        (it shares the tokenizer, or was told that it may read its ids)."""
        ...

    def score_token_ids(
        self, prompt_ids: TokenRows, completion_ids: TokenRows, metadata: list[dict[str, Any]]
    ) -> np.ndarray:
        """One score per row. ``prompt_ids`` are the prompt as the env encoded it (no padding);
        ``completion_ids`` the generated tokens without special tokens (the text the env decodes
        drops them too)."""
        ...


@runtime_checkable
class SharesReferenceForward(Protocol):
    """A reward computed from the frozen reference LM's forward over the episode."""

    def shares_reference(self, spec: str, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether this reward reads the reference loaded from ``spec`` on ``device`` in
        ``dtype`` (the env's reference)."""
        ...

    def reference_logprobs_and_scores(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        temperature: float,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """From one forward over left-padded prompts ``(B, P)`` and right-padded completions
        ``(B, N)``: the reference log-probs of the completion tokens ``(B, N)`` at
        ``temperature`` and the rewards ``(B,)``."""
        ...


def reads_token_ids(reward: Any, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``reward`` can score ids of ``tokenizer`` (see :class:`ReadsTokenIds`)."""
    return isinstance(reward, ReadsTokenIds) and bool(reward.reads_token_ids(tokenizer))


def shares_reference_forward(
    reward: Any, spec: str, device: torch.device, dtype: torch.dtype
) -> bool:
    """Whether ``reward`` can give the reference log-probs of the env's reference with its
    scores (see :class:`SharesReferenceForward`)."""
    return isinstance(reward, SharesReferenceForward) and bool(
        reward.shares_reference(spec, device, dtype)
    )
