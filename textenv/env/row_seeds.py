"""The vector env's B row streams, seeded and drawn from in one pass.

Row ``i`` of a seeded reset draws its prompts as ``np.random.Generator(np.random.PCG64(seed + i))``
would: the generator Gymnasium's ``seeding.np_random`` builds for sub-env ``i`` of a sync vector
env, and the one the single env (``gym.make``) seeded with ``seed + i`` draws from. Building B such
generators costs about 9 µs each here (``python -m timeit -s "import numpy as np"
"np.random.Generator(np.random.PCG64(1))"``), nearly all of it ``SeedSequence``'s per-object
overhead, and each ``integers`` call about 1.5 µs: at B = 64 the largest part of a reset.

:class:`RowStreams` keeps the B PCG64 states as arrays instead. :meth:`RowStreams.seed` computes
numpy's ``SeedSequence`` hash over a ``(4, B)`` uint32 array and PCG64's seeding for all rows;
:meth:`RowStreams.integers` steps the rows' 128-bit LCGs together (in 64-bit halves) and maps their
outputs to ``[0, n)`` with numpy's rejection rule, so that every row's draws are the ones its own
generator would give. tests/test_row_seeds.py pins the states and draws to numpy's.

The algorithms are numpy's (``numpy/random/bit_generator.pyx``: ``SeedSequence.mix_entropy`` and
``generate_state``; ``pcg64.h``: ``pcg_setseq_128_srandom_r``, ``pcg_setseq_128_xsl_rr_64_random_r``
and ``pcg64_next32``; ``distributions.c``: ``buffered_bounded_lemire_uint32``), whose outputs numpy
keeps stable (its stream-compatibility policy).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

__all__ = ["RowStreams"]

_POOL_SIZE = 4  # SeedSequence's default pool of 32-bit words
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875  # the entropy-mixing hash
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED  # the state-generating hash
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_PCG_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645  # PCG64's 128-bit LCG multiplier
_MASK32, _MASK64 = (1 << 32) - 1, (1 << 64) - 1
# Up to this many 32-bit words a seed fills the pool and no word is left over (numpy then mixes
# the rest in a further loop, not written here): seeds below 2**128.
_MAX_SEED = 1 << (32 * _POOL_SIZE)

_LOW32 = np.uint64(_MASK32)
_M_HI, _M_LO = np.uint64(_PCG_MULTIPLIER >> 64), np.uint64(_PCG_MULTIPLIER & _MASK64)
_U1, _U32, _U58, _U63 = np.uint64(1), np.uint64(32), np.uint64(58), np.uint64(63)


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
_OTHERS = [[dst for dst in range(_POOL_SIZE) if dst != src] for src in range(_POOL_SIZE)]


def _hashmix(value: np.ndarray, xor: np.ndarray, mult: np.ndarray) -> np.ndarray:
    value = (value ^ xor) * mult
    return value ^ (value >> _SHIFT)


def _seed_words(seeds: Sequence[int]) -> np.ndarray:
    """SeedSequence(seed).pool's input: each seed's 32-bit words, least significant first,
    zero-filled (numpy hashes a missing word as 0); ``(4, B)`` uint32."""
    if max(seeds) <= _MASK64:
        wide = np.array(seeds, dtype=np.uint64)
        words = np.zeros((_POOL_SIZE, len(seeds)), dtype=np.uint32)
        words[0], words[1] = wide & _LOW32, wide >> _U32
        return words
    return np.array(
        [[(seed >> (32 * j)) & _MASK32 for seed in seeds] for j in range(_POOL_SIZE)],
        dtype=np.uint32,
    )


def _mul_128(a: np.ndarray, b: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """The full 128-bit product of uint64 ``a`` and ``b``: ``(high, low)`` 64-bit words."""
    a0, a1 = a & _LOW32, a >> _U32
    b0, b1 = b & _LOW32, b >> _U32
    p00, p01, p10 = a0 * b0, a0 * b1, a1 * b0
    mid = (p00 >> _U32) + (p01 & _LOW32) + (p10 & _LOW32)
    low = (p00 & _LOW32) | (mid << _U32)
    high = a1 * b1 + (p01 >> _U32) + (p10 >> _U32) + (mid >> _U32)
    return high, low


def _add_128(
    a_hi: np.ndarray, a_lo: np.ndarray, b_hi: np.ndarray, b_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    low = a_lo + b_lo
    return a_hi + b_hi + (low < a_lo).astype(np.uint64), low


def _lcg_step(
    hi: np.ndarray, lo: np.ndarray, inc_hi: np.ndarray, inc_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """PCG64's step on 128-bit states in 64-bit halves: state × multiplier + inc (mod 2**128)."""
    prod_hi, prod_lo = _mul_128(lo, _M_LO)
    return _add_128(prod_hi + lo * _M_HI + hi * _M_LO, prod_lo, inc_hi, inc_lo)


class RowStreams:
    """B PCG64 streams, each drawing exactly as ``np.random.Generator(np.random.PCG64(seed))``.

    States are 64-bit halves in arrays, so seeding the B rows and drawing one bounded integer
    for each of a set of rows are a few dozen numpy calls, not B Python-level generator calls.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.state_hi = np.zeros(batch_size, dtype=np.uint64)
        self.state_lo = np.zeros(batch_size, dtype=np.uint64)
        self.inc_hi = np.zeros(batch_size, dtype=np.uint64)
        self.inc_lo = np.ones(batch_size, dtype=np.uint64)
        # pcg64_next32 hands out a 64-bit output's upper half on the call after its lower one.
        self.has_uint32 = np.zeros(batch_size, dtype=bool)
        self.uinteger = np.zeros(batch_size, dtype=np.uint64)
        # Unseeded: 128 bits of OS entropy per row, as SeedSequence(None) draws.
        self.seed([secrets.randbits(128) for _ in range(batch_size)])

    def seed(self, seeds: Sequence[int]) -> None:
        """Restart row ``i`` as ``PCG64(seeds[i])`` (non-negative ints, one per row)."""
        if len(seeds) != self.batch_size:
            raise ValueError(f"{len(seeds)} seeds for {self.batch_size} rows")
        self.has_uint32[:] = False
        self.uinteger[:] = 0
        if max(seeds) >= _MAX_SEED:  # more than four 32-bit words: numpy's own SeedSequence
            for row, seed in enumerate(seeds):
                self._load(row, np.random.PCG64(seed).state)
            return
        pool = _hashmix(_seed_words(seeds), _A[:_POOL_SIZE, None], _A[1 : _POOL_SIZE + 1, None])
        # numpy mixes word src into every other word dst in turn; src's word does not change
        # while it is mixed in, so its three hashes (constants k, k + 1, k + 2) and the three
        # mixes are one call each.
        k = _POOL_SIZE
        for src in range(_POOL_SIZE):
            dst = _OTHERS[src]
            hashed = _hashmix(pool[src], _A[k : k + 3, None], _A[k + 1 : k + 4, None])
            k += 3
            mixed = pool[dst] * np.uint32(_MIX_MULT_L) - hashed * np.uint32(_MIX_MULT_R)
            pool[dst] = mixed ^ (mixed >> _SHIFT)
        # generate_state(4, np.uint64): 8 words cycling over the pool, paired little-endian.
        cycle = pool[np.arange(2 * _POOL_SIZE) % _POOL_SIZE]
        state32 = _hashmix(cycle, _B[:-1, None], _B[1:, None]).astype(np.uint64)
        high0, low0, high1, low1 = state32[0::2] | (state32[1::2] << _U32)
        # pcg_setseq_128_srandom_r(initstate, initseq): inc = initseq·2 + 1, state 0, one step,
        # add initstate, one step.
        self.inc_hi[:] = (high1 << _U1) | (low1 >> _U63)
        self.inc_lo[:] = (low1 << _U1) | _U1
        start_hi, start_lo = _add_128(self.inc_hi, self.inc_lo, high0, low0)
        self.state_hi[:], self.state_lo[:] = _lcg_step(start_hi, start_lo, self.inc_hi, self.inc_lo)

    def state(self, row: int) -> dict:
        """Row ``row``'s state in the form of ``np.random.PCG64().state``."""
        return {
            "bit_generator": "PCG64",
            "state": {
                "state": (int(self.state_hi[row]) << 64) | int(self.state_lo[row]),
                "inc": (int(self.inc_hi[row]) << 64) | int(self.inc_lo[row]),
            },
            "has_uint32": int(self.has_uint32[row]),
            "uinteger": int(self.uinteger[row]),
        }

    def integers(self, n: int, rows: np.ndarray) -> np.ndarray:
        """One draw in ``[0, n)`` for each of ``rows`` (distinct row indices; int64): what
        ``Generator.integers(n)`` gives on each row's generator."""
        rows = np.asarray(rows, dtype=np.intp)
        if n == 1:  # numpy draws nothing for a range of one
            return np.zeros(len(rows), dtype=np.int64)
        if not 1 < n <= _MASK32:  # numpy takes other paths there: its own generators
            return np.array([self._draw_with_numpy(n, row) for row in rows], dtype=np.int64)
        # Lemire's multiply-shift on 32-bit draws, redrawing the few rows whose low word falls
        # under (2**32 - n) mod n, as buffered_bounded_lemire_uint32 does.
        bound, threshold = np.uint64(n), np.uint64((2**32 - n) % n)
        product = self._next_uint32(rows) * bound
        redraw = np.flatnonzero((product & _LOW32) < threshold)
        while len(redraw):
            product[redraw] = self._next_uint32(rows[redraw]) * bound
            redraw = redraw[(product[redraw] & _LOW32) < threshold]
        return (product >> _U32).astype(np.int64)

    def _next_uint64(self, rows: np.ndarray) -> np.ndarray:
        """Step the rows' LCGs and return their XSL-RR outputs (pcg_output_xsl_rr_128_64)."""
        hi, lo = _lcg_step(
            self.state_hi[rows], self.state_lo[rows], self.inc_hi[rows], self.inc_lo[rows]
        )
        self.state_hi[rows], self.state_lo[rows] = hi, lo
        value, rot = hi ^ lo, hi >> _U58
        return (value >> rot) | (value << ((-rot) & _U63))

    def _next_uint32(self, rows: np.ndarray) -> np.ndarray:
        """pcg64_next32 per row: a fresh output's lower half, or the buffered upper half."""
        out = np.empty(len(rows), dtype=np.uint64)
        buffered = self.has_uint32[rows]
        out[buffered] = self.uinteger[rows[buffered]]
        fresh = rows[~buffered]
        value = self._next_uint64(fresh)
        out[~buffered] = value & _LOW32
        self.uinteger[fresh] = value >> _U32
        self.has_uint32[rows] = ~buffered
        return out

    def _draw_with_numpy(self, n: int, row: int) -> int:
        bit_generator = np.random.PCG64()
        bit_generator.state = self.state(row)
        value = int(np.random.Generator(bit_generator).integers(n))
        self._load(row, bit_generator.state)
        return value

    def _load(self, row: int, state: dict) -> None:
        """Set row ``row`` from a ``np.random.PCG64().state`` dict (the inverse of :meth:`state`)."""
        lcg = state["state"]
        self.state_hi[row], self.state_lo[row] = lcg["state"] >> 64, lcg["state"] & _MASK64
        self.inc_hi[row], self.inc_lo[row] = lcg["inc"] >> 64, lcg["inc"] & _MASK64
        self.has_uint32[row], self.uinteger[row] = state["has_uint32"], state["uinteger"]
