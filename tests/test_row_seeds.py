"""The vector env's row generators after a seeded reset: numpy's own ``PCG64(seed)`` streams.

:func:`textenv.env.row_seeds.seed_generators` computes numpy's ``SeedSequence`` hash and PCG64
seeding itself (for all rows at once); these tests pin every state it sets to the one numpy
builds, over seeds of every word length it handles and the fallbacks on either side.
"""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st

from textenv.env.row_seeds import seed_generators
from textenv.env.vector import TextGenVectorEnv


def fresh(n: int) -> list[np.random.Generator]:
    return [seeding.np_random(None)[0] for _ in range(n)]


def assert_numpy_streams(generators: list[np.random.Generator], seeds: list[int]) -> None:
    assert len(generators) == len(seeds)
    for rng, seed in zip(generators, seeds):
        theirs = seeding.np_random(seed)[0]
        assert rng.bit_generator.state == theirs.bit_generator.state, seed
        assert rng.integers(1000, size=8).tolist() == theirs.integers(1000, size=8).tolist()


# Seeds of 1 to 4 words (32 bits each), word boundaries included; 2**128 and above fall back.
seeds_below_2_128 = st.one_of(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**128 - 1),
    st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**64 - 1, 2**64, 2**96, 2**128 - 1]),
)


@settings(max_examples=60, deadline=None)
@given(seeds=st.lists(seeds_below_2_128, min_size=16, max_size=40))
def test_batched_seeding_is_numpys(seeds):
    generators = fresh(len(seeds))
    out = seed_generators(generators, seeds)
    assert all(a is b for a, b in zip(out, generators))  # reseeded in place
    assert_numpy_streams(out, seeds)


@pytest.mark.parametrize(
    "seeds",
    [list(range(5)), [2**128] + list(range(20)), [2**200 + 3] * 16],
    ids=["small batch", "one seed of 2**128", "large seeds"],
)
def test_fallbacks_are_numpys(seeds):
    assert_numpy_streams(seed_generators(fresh(len(seeds)), seeds), seeds)


def test_one_generator_per_seed():
    with pytest.raises(ValueError, match="15 generators for 16 seeds"):
        seed_generators(fresh(15), list(range(16)))


def test_a_half_used_generator_restarts_clean():
    """The PCG64 buffers a 32-bit half between draws; a reseed clears it."""
    generators = fresh(16)
    for rng in generators:
        rng.integers(2**31, dtype=np.int32)  # leaves the upper half buffered
    assert_numpy_streams(seed_generators(generators, list(range(100, 116))), list(range(100, 116)))


def test_seeded_vector_reset_draws_the_sub_envs_prompts():
    """Row i of a seeded reset draws the prompts Gymnasium's sub-env i would (seed + i)."""
    prompts = [f"prompt {i}" for i in range(50)]
    kw = dict(reference="tiny", reward="tiny-rm", prompts=prompts, split="all")
    envs = TextGenVectorEnv(num_envs=20, autoreset_mode=AutoresetMode.DISABLED, **kw)
    for seed in (0, 7, 2**40):
        _, info = envs.reset(seed=seed)
        expected = [prompts[seeding.np_random(seed + i)[0].integers(50)] for i in range(20)]
        assert info["prompt"].tolist() == expected
        _, info = envs.reset()  # the next, unseeded draw continues each row's stream
        streams = [seeding.np_random(seed + i)[0] for i in range(20)]
        for rng in streams:
            rng.integers(50)  # the seeded reset's draw
        expected = [prompts[rng.integers(50)] for rng in streams]
        assert info["prompt"].tolist() == expected
