"""The vector env's row streams: numpy's own ``PCG64(seed)`` generators, B at a time.

:class:`textenv.env.row_seeds.RowStreams` computes numpy's ``SeedSequence`` hash, PCG64's seeding
and stepping, and ``Generator.integers``' bounded draw itself (for all rows at once); these tests
pin every state it reaches and every value it draws to numpy's, over seeds of every word length,
bounds that make the rejection loop run, and the fallbacks on either side.
"""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st

from textenv.env import row_seeds
from textenv.env.row_seeds import RowStreams
from textenv.env.vector import TextGenVectorEnv


def numpy_generators(seeds: list[int]) -> list[np.random.Generator]:
    return [seeding.np_random(seed)[0] for seed in seeds]


def assert_same_states(streams: RowStreams, generators: list[np.random.Generator]) -> None:
    for row, rng in enumerate(generators):
        assert streams.state(row) == rng.bit_generator.state, row


# Seeds of 1 to 4 words (32 bits each), word boundaries included, and past 2**128 (numpy's
# SeedSequence then; any one such seed sends the whole batch there).
seeds_below_2_128 = st.one_of(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**128 - 1),
    st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**64 - 1, 2**64, 2**96, 2**128 - 1]),
)
# Small prompt sets; bounds just over a power of two, where about half of the 32-bit draws are
# redrawn; the largest bound drawn in the vectorised path; and bounds numpy draws otherwise.
bounds = st.one_of(
    st.integers(1, 100),
    st.sampled_from([2**31 + 1, 0x80000001, 3 * 2**30 + 1, 2**32 - 1, 2**32, 2**40 + 3]),
)


@settings(max_examples=60, deadline=None)
@given(seeds=st.lists(seeds_below_2_128, min_size=1, max_size=40), data=st.data())
def test_seeded_states_and_draws_are_numpys(seeds, data):
    streams = RowStreams(len(seeds))
    streams.seed(seeds)
    generators = numpy_generators(seeds)
    assert_same_states(streams, generators)
    # Draws over all rows and over subsets in turn: every row's stream, its buffered 32-bit half
    # included, stays the one its generator has.
    for _ in range(4):
        n = data.draw(bounds)
        rows = data.draw(
            st.lists(st.integers(0, len(seeds) - 1), unique=True, min_size=1).map(sorted)
        )
        drawn = streams.integers(n, np.array(rows))
        assert drawn.dtype == np.int64
        assert drawn.tolist() == [generators[r].integers(n) for r in rows]
        assert_same_states(streams, generators)


@pytest.mark.parametrize(
    "seeds",
    [[2**128] + list(range(20)) + [2**200 + 3], [0, 2**128, 5], [2**128 - 1, 2**64 - 1, 3]],
    ids=["past 2**128", "exactly 2**128", "just below"],
)
def test_seeds_of_2_128_and_more_are_numpys(seeds):
    streams = RowStreams(len(seeds))
    streams.seed(seeds)
    generators = numpy_generators(seeds)
    assert_same_states(streams, generators)
    assert streams.integers(1000, np.arange(len(seeds))).tolist() == [
        rng.integers(1000) for rng in generators
    ]


def test_hash_constants_are_numpys_running_products():
    """SeedSequence's hash multiplies its constant by MULT after each use (mod 2**32)."""
    for init, mult in ((0x43B0D7E5, 0x931E8875), (0x8B51F9DD, 0x58F38DED)):
        expected = [init * pow(mult, k, 2**32) % 2**32 for k in range(17)]
        constants = row_seeds._hash_constants(init, mult, 17)
        assert constants.dtype == np.uint32  # the hash's products wrap at 2**32
        assert constants.tolist() == expected


words = st.integers(0, 2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(a_hi=words, a_lo=words, b_hi=words, b_lo=st.one_of(st.just(0), words), b=words)
def test_128_bit_arithmetic_is_pythons(a_hi, a_lo, b_hi, b_lo, b):
    """The 64-bit-halves helpers against Python's integers (mod 2**128), carries included."""
    a, c = (a_hi << 64) | a_lo, (b_hi << 64) | b_lo
    total = row_seeds._add_128(_word(a_hi), _word(a_lo), _word(b_hi), _word(b_lo))
    assert _joined(*total) == (a + c) % 2**128
    assert _joined(*row_seeds._mul_128(_word(a_lo), np.uint64(b))) == a_lo * b


def _word(value: int) -> np.ndarray:
    return np.array([value], dtype=np.uint64)


def _joined(high: np.ndarray, low: np.ndarray) -> int:
    return (int(high[0]) << 64) | int(low[0])


def test_the_redraw_bound_is_numpys(monkeypatch):
    """buffered_bounded_lemire_uint32 keeps a draw whose low word equals the threshold and
    redraws below it (a 1 in 2**32 event for random draws, so the draws are given here)."""
    n = 2**31 + 1
    threshold = (2**32 - n) % n
    # x·n mod 2**32 == threshold: x = threshold / n mod 2**32 (n is odd, so invertible).
    at = threshold * pow(n, -1, 2**32) % 2**32
    below = (threshold - 1) * pow(n, -1, 2**32) % 2**32
    after = 12345
    for supplied, expected in (
        ([at], at * n >> 32),  # kept
        ([below, after], after * n >> 32),  # redrawn
        ([below, at], at * n >> 32),  # redrawn, then kept
    ):
        draws = iter([*supplied, after])
        streams = RowStreams(1)
        monkeypatch.setattr(
            streams,
            "_next_uint32",
            lambda rows, draws=draws: np.array([next(draws)], dtype=np.uint64),
        )
        assert streams.integers(n, np.array([0])).tolist() == [expected]


def test_a_half_used_stream_restarts_clean():
    """PCG64 buffers a 32-bit half between draws; a reseed clears it."""
    streams = RowStreams(16)
    streams.integers(7, np.arange(16))  # leaves every row's upper half buffered
    assert streams.has_uint32.all()
    streams.seed(list(range(100, 116)))
    assert_same_states(streams, numpy_generators(list(range(100, 116))))


def test_unseeded_streams_differ_and_one_seed_per_row():
    a, b = RowStreams(16), RowStreams(16)
    assert len({a.state(r)["state"]["state"] for r in range(16)}) == 16
    assert a.state(0) != b.state(0)
    with pytest.raises(ValueError, match="15 seeds for 16 rows"):
        a.seed(list(range(15)))


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
