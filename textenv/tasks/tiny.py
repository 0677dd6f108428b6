"""Tiny-v0: the smallest env, for tests, checkers and a first look, with no trained models.

## Description
Continue a short English prompt with a tiny randomly initialised GPT-2 (byte-level, 257 tokens)
as the reference and a tiny randomly initialised reward model. The rewards carry no meaning; the
env exists so that everything (checkers, agents, SB3) runs offline in seconds.

## Action Space
``Discrete(257)``: a byte-level token id; 256 is ``<|endoftext|>`` (EOS).

## Observation Space
``Dict(input_ids=Box(0, 256, (24,), int64), attention_mask=Box(0, 1, (24,), int64))``:
8 left-padded prompt tokens, then up to 16 generated tokens, then right padding.

## Rewards
``RM − β·KL̂`` at the last step (β = 0.05, k1 estimator). ``gold_score`` in the final ``info``:
the fraction of the completion's characters that are lowercase vowels (a programmatic scorer).

## Starting State
One of ten built-in English prompts (train split: 9 of them; eval: 1).

## Episode End
EOS → terminated; 16 tokens → truncated.

## Arguments
Any :class:`textenv.env.config.EnvConfig` field, e.g. ``gym.make("textenv/Tiny-v0", kl_coef=0.1)``.

## Version History
* v0: initial version.
"""

from __future__ import annotations

from typing import Any

from textenv.env.config import DEFAULT_PROMPTS
from textenv.tasks.spec import TaskSpec


def gold_score(
    prompts: list[str], completions: list[str], metadata: list[dict[str, Any]]
) -> list[float]:
    """Fraction of the completion's characters that are lowercase vowels (0 for empty text)."""
    return [sum(ch in "aeiou" for ch in c) / len(c) if c else 0.0 for c in completions]


TASK = TaskSpec(
    name="tiny",
    env_id="textenv/Tiny-v0",
    summary="tiny random models for tests and checkers (vowel-fraction gold)",
    reference="tiny",
    reward="tiny-rm",
    gold="textenv.tasks.tiny:gold_score",
    prompts=list(DEFAULT_PROMPTS),
    max_prompt_tokens=8,
    max_new_tokens=16,
    kl_coef=0.05,
)
