"""Seeding the vector env's B row generators in one pass.

A seeded reset gives row ``i`` the stream of ``np.random.Generator(np.random.PCG64(seed + i))``,
the generator Gymnasium's ``seeding.np_random`` builds for sub-env ``i``. Building one costs about
9 µs here (``python -m timeit -s "import numpy as np" "np.random.Generator(np.random.PCG64(1))"``),
nearly all of it ``SeedSequence``'s per-object overhead: at B = 64, the largest part of a reset.
:func:`seed_generators` computes the same states for all rows together (numpy's ``SeedSequence``
hash over a ``(4, B)`` uint32 array, PCG64's seeding in Python integers) and sets them on the
rows' existing generators. tests/test_row_seeds.py pins the states to numpy's own.

The algorithms are numpy's (``numpy/random/bit_generator.pyx``: ``SeedSequence.mix_entropy`` and
``generate_state``; ``pcg64.h``: ``pcg_setseq_128_srandom_r``), whose outputs numpy keeps stable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["seed_generators"]

_POOL_SIZE = 4  # SeedSequence's default pool of 32-bit words
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875  # the entropy-mixing hash
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED  # the state-generating hash
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_PCG_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645  # PCG64's 128-bit LCG multiplier
_MASK32, _MASK128 = (1 << 32) - 1, (1 << 128) - 1
# Up to this many 32-bit words a seed fills the pool and no word is left over (numpy then mixes
# the rest in a further loop, not written here): seeds below 2**128.
_MAX_SEED = 1 << (32 * _POOL_SIZE)
# Below this batch size building the generators one by one is as quick.
_MIN_BATCH = 16


def _hash_constants(init: int, mult: int, count: int) -> np.ndarray:
    """The running multiplier of numpy's hash: ``init``, ``init·mult``, … (mod 2**32)."""
    values = [init]
    for _ in range(count - 1):
        values.append(values[-1] * mult & _MASK32)
    return np.array(values, dtype=np.uint32)


# hashmix k xors with constant k and multiplies by constant k + 1: 4 + 12 calls mix the entropy,
# 8 generate the 4 uint64 words PCG64 seeds from.
_A = _hash_constants(_INIT_A, _MULT_A, _POOL_SIZE + _POOL_SIZE * (_POOL_SIZE - 1) + 1)
_B = _hash_constants(_INIT_B, _MULT_B, 2 * _POOL_SIZE + 1)
_SHIFT = np.uint32(16)


def _hashmix(value: np.ndarray, xor: np.ndarray, mult: np.ndarray) -> np.ndarray:
    value = (value ^ xor) * mult
    return value ^ (value >> _SHIFT)


def _pcg64_states(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """``(state, inc)`` of ``PCG64(seed)`` for each seed (each in ``[0, 2**128)``)."""
    # SeedSequence(seed).pool: the seed's 32-bit words, least significant first, zero-filled
    # (numpy hashes a missing word as 0).
    words = np.array(
        [[(seed >> (32 * j)) & _MASK32 for seed in seeds] for j in range(_POOL_SIZE)],
        dtype=np.uint32,
    )
    pool = _hashmix(words, _A[:_POOL_SIZE, None], _A[1 : _POOL_SIZE + 1, None])
    k = _POOL_SIZE
    for src in range(_POOL_SIZE):
        for dst in range(_POOL_SIZE):
            if src != dst:
                hashed = _hashmix(pool[src], _A[k], _A[k + 1])
                k += 1
                mixed = pool[dst] * np.uint32(_MIX_MULT_L) - hashed * np.uint32(_MIX_MULT_R)
                pool[dst] = mixed ^ (mixed >> _SHIFT)
    # generate_state(4, np.uint64): 8 words cycling over the pool, paired little-endian.
    cycle = pool[np.arange(2 * _POOL_SIZE) % _POOL_SIZE]
    state32 = _hashmix(cycle, _B[:-1, None], _B[1:, None]).astype(np.uint64)
    words64 = (state32[0::2] | (state32[1::2] << np.uint64(32))).tolist()
    out = []
    for high0, low0, high1, low1 in zip(*words64):
        # pcg_setseq_128_srandom_r(initstate, initseq): state 0, one step, add initstate, a step.
        initstate, initseq = (high0 << 64) | low0, (high1 << 64) | low1
        inc = ((initseq << 1) | 1) & _MASK128
        state = (((inc + initstate) & _MASK128) * _PCG_MULTIPLIER + inc) & _MASK128
        out.append((state, inc))
    return out


def seed_generators(generators: Sequence[np.random.Generator], seeds: Sequence[int]) -> list:
    """Generators that draw as ``np.random.Generator(np.random.PCG64(seed))`` for each seed
    (non-negative ints): the given PCG64 generators (one per seed) reseeded in place, or new
    ones for a small batch or a seed of 2**128 or more."""
    if len(seeds) < _MIN_BATCH or max(seeds) >= _MAX_SEED:
        return [np.random.Generator(np.random.PCG64(seed)) for seed in seeds]
    if len(generators) != len(seeds):
        raise ValueError(f"{len(generators)} generators for {len(seeds)} seeds")
    for rng, (state, inc) in zip(generators, _pcg64_states(seeds)):
        rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": state, "inc": inc},
            "has_uint32": 0,
            "uinteger": 0,
        }
    return list(generators)
