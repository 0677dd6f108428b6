"""Reward-model training data by hand: the train / validation split by prompt, which pairs a run
trains and validates on, and the normalisation a trained reward model stores.

Fast (no models): also run by the "reward_model" mutation set.
"""

from __future__ import annotations

import numpy as np
import pytest

from textenv.preferences import PreferencePair, write_jsonl
from textenv.training.bradley_terry import (
    RewardModelConfig,
    reward_normalisation,
    split_by_prompt,
    training_pairs,
)


def _pairs(counts: dict[str, int]) -> list[PreferencePair]:
    """``counts[prompt]`` pairs per prompt, each pair distinct."""
    return [PreferencePair(p, f"c{p}{i}", f"r{p}{i}") for p, n in counts.items() for i in range(n)]


def _is_split_of(pairs, train, val) -> None:
    """train and val partition pairs, each in the pairs' own order."""
    assert sorted(map(repr, train + val)) == sorted(map(repr, pairs))
    assert train == [p for p in pairs if p in train] and val == [p for p in pairs if p in val]


def test_single_prompt_pairs_are_split_one_by_one():
    pairs = _pairs({"only": 10})
    train, val = split_by_prompt(pairs, 0.3, seed=0)
    _is_split_of(pairs, train, val)
    assert (len(train), len(val)) == (7, 3)  # round(0.3 · 10)
    train, val = split_by_prompt(pairs, 0.04, seed=0)
    assert (len(train), len(val)) == (9, 1)  # at least one pair held out
    assert split_by_prompt(pairs, 0.3) == split_by_prompt(pairs, 0.3, seed=0)  # the default
    splits = {tuple(map(repr, split_by_prompt(pairs, 0.3, seed=s)[1])) for s in range(6)}
    assert len(splits) > 1  # the seed picks which pairs


def test_prompts_are_held_out_whole_until_the_target_is_reached():
    pairs = _pairs({f"p{i}": 2 for i in range(5)})
    for seed in range(4):
        train, val = split_by_prompt(pairs, 0.2, seed=seed)  # target 2 pairs: one prompt
        _is_split_of(pairs, train, val)
        assert len(val) == 2 and len({p.prompt for p in val}) == 1
        assert not {p.prompt for p in train} & {p.prompt for p in val}
    train, val = split_by_prompt(pairs, 0.5, seed=0)  # target 5: three prompts reach it
    assert (len(train), len(val)) == (4, 6)


def test_two_prompts_are_held_out_whole_too():
    pairs = _pairs({"a": 3, "b": 3})
    for seed in range(4):
        train, val = split_by_prompt(pairs, 0.3, seed=seed)  # target 2: one prompt (3 pairs)
        _is_split_of(pairs, train, val)
        assert len(val) == 3 and len({p.prompt for p in val}) == 1


def test_at_least_one_prompt_stays_for_training():
    pairs = _pairs({"a": 1, "b": 1, "c": 8})
    for seed in range(6):
        train, val = split_by_prompt(pairs, 0.99, seed=seed)
        _is_split_of(pairs, train, val)
        assert len({p.prompt for p in train}) == 1 and len({p.prompt for p in val}) == 2


@pytest.mark.parametrize("fraction", [0.0, -0.5])
def test_no_validation_without_a_fraction_or_with_one_pair(fraction):
    pairs = _pairs({"a": 3, "b": 2})
    assert split_by_prompt(pairs, fraction) == (pairs, [])
    one = _pairs({"a": 1})
    assert split_by_prompt(one, 0.5) == (one, [])
    assert split_by_prompt(tuple(pairs), fraction)[0] == pairs  # a list back


@pytest.mark.parametrize("fraction", [1.0, 1.5])
def test_a_fraction_of_one_or_more_is_refused(fraction):
    with pytest.raises(ValueError, match=rf"^val_fraction must be in \[0, 1\), got {fraction}$"):
        split_by_prompt(_pairs({"a": 2}), fraction)


def test_training_pairs_split_unless_validation_pairs_are_given(tmp_path):
    pairs = _pairs({"only": 10})
    config = RewardModelConfig(val_fraction=0.2, seed=1)
    train, val = training_pairs(pairs, None, config)
    assert (train, val) == split_by_prompt(pairs, 0.2, seed=1)  # the config's seed
    assert (train, val) != split_by_prompt(pairs, 0.2, seed=0)
    assert len(val) == 2
    given = _pairs({"v": 2})
    train, val = training_pairs(pairs, given, config)
    assert train == pairs and val == given
    path = tmp_path / "pairs.jsonl"  # files are read like every other source
    write_jsonl(path, pairs)
    assert training_pairs(str(path), None, config) == split_by_prompt(pairs, 0.2, seed=1)
    # on_error reaches both files: a bad line is skipped when asked, an error otherwise.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text() + '{"prompt": "no completions"}\n')
    with pytest.warns(UserWarning, match="skipped 1 malformed"):
        got = training_pairs(str(bad), None, config, on_error="skip")
    assert got == split_by_prompt(pairs, 0.2, seed=1)
    with pytest.warns(UserWarning, match="skipped 1 malformed"):
        assert training_pairs(pairs, str(bad), config, on_error="skip") == (pairs, pairs)
    for args in ((str(bad), None), (pairs, str(bad))):
        with pytest.raises(ValueError, match="bad.jsonl:11"):
            training_pairs(*args, config)
    with pytest.raises(ValueError, match="^no training pairs$"):
        training_pairs([], None, config)
    with pytest.raises(ValueError, match="^no training pairs$"):
        training_pairs([], given, config)


def test_reward_normalisation_by_hand():
    mean, std = reward_normalisation(np.array([1.0, 2.0, 3.0, 6.0]))
    assert mean == 3.0 and std == pytest.approx(np.sqrt((4 + 1 + 0 + 9) / 4))
    assert isinstance(mean, float) and isinstance(std, float)
    assert reward_normalisation(np.array([0.0, 1.0])) == (0.5, 0.5)
    assert reward_normalisation(np.array([0.2, 0.3])) == pytest.approx((0.25, 0.05))
    # Undefined or ~0 spread: std 1, the raw scores only shifted.
    assert reward_normalisation(np.array([5.0])) == (5.0, 1.0)
    assert reward_normalisation(np.array([2.0, 2.0, 2.0])) == (2.0, 1.0)
    assert reward_normalisation(np.array([1.0, 1.0 + 2e-9])) == pytest.approx((1.0, 1.0))
    assert reward_normalisation(np.array([1.0, 1.0 + 1e-6]))[1] == pytest.approx(5e-7)
    assert reward_normalisation(np.array([0.0, 2e-8])) == (1e-8, 1.0)  # std exactly 1e-8: ~0
