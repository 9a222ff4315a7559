"""Randomness: the per-sample generator and the fast compiled Gaussian stream.

Every random choice of a build (and of the training loader's augmentation) comes from a
:class:`numpy.random.Generator` made by :func:`sample_rng` from integers and the sample's key:
the same parts give the same stream in any process, on any engine, in any order.

Gaussian noise is drawn by a compiled generator (SplitMix64 bits, ziggurat method) whose stream is
a pure function of one 64-bit key taken from a Generator (:func:`stream_key`). Same generator state
→ byte-identical noise. It is used instead of ``Generator.standard_normal`` for speed: inside a
fused numba kernel numpy's generator costs ~26 ns a draw here (a call through the bit generator
per draw), this one ~4.4 ns (numpy's bulk draw ~12 ns). Compiled code walks the stream itself:
``state = stream_key(rng)``, then ``state, z = next_normal(state)`` per draw
(:mod:`rawpairs.noise`, the fused inverse ISP in :mod:`rawpairs.unprocess`);
:func:`standard_normal` fills an array from the same stream.

References:
    G. Marsaglia, W. W. Tsang, "The Ziggurat Method for Generating Random Variables", Journal
    of Statistical Software 5(8), 2000; J. A. Doornik, "An Improved Ziggurat Method to Generate
    Normal Random Samples", 2005 (layer index and value from independent bits).
    G. Steele, D. Lea, C. Flood, "Fast Splittable Pseudorandom Number Generators" (SplitMix64),
    OOPSLA 2014.
"""

from __future__ import annotations

import hashlib
import math

import numba
import numpy as np

__all__ = [
    "key_hash",
    "key_normals",
    "next_normal",
    "sample_rng",
    "standard_normal",
    "stream_key",
]


def key_hash(key: str) -> int:
    """A sample key → 64-bit integer: the first 8 bytes of its UTF-8 SHA-256, little-endian."""
    if not isinstance(key, str):
        raise ValueError(f"a sample key must be a string, got {type(key).__name__}")
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")


def sample_rng(*parts: int | str) -> np.random.Generator:
    """The generator of one sample: a function of ``parts`` only, in order.

    Integers (≥ 0) enter the seed as they are, strings (sample keys) as :func:`key_hash`:
    ``numpy.random.default_rng([part, …])``. The builder uses ``sample_rng(seed, key)``; a
    caller needing another independent stream per sample adds its own parts (a tag, an epoch).
    """
    if not parts:
        raise ValueError("sample_rng needs at least one part (seed, key, …)")
    entropy = []
    for part in parts:
        if isinstance(part, str):
            entropy.append(key_hash(part))
        elif isinstance(part, (int, np.integer)) and not isinstance(part, bool) and part >= 0:
            entropy.append(int(part))
        else:
            raise ValueError(f"sample_rng parts are integers >= 0 or strings, got {part!r:.40}")
    return np.random.default_rng(entropy)


def stream_key(rng: np.random.Generator) -> np.uint64:
    """One 64-bit draw from ``rng``: the start state of a compiled Gaussian stream."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng.integers(0, 2**64, dtype=np.uint64)


# Ziggurat tables for f(x) = exp(-x²/2), 128 layers (Doornik 2005): x[1] = R is where the tail
# starts, x[0] = V / f(R) is the width of the base layer (rectangle plus tail, area V).
def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray]:
    r, v = 3.442619855899, 9.91256303526217e-3
    x = np.zeros(129)
    x[0], x[1] = v / math.exp(-0.5 * r * r), r
    for i in range(2, 128):
        x[i] = math.sqrt(-2.0 * math.log(v / x[i - 1] + math.exp(-0.5 * x[i - 1] ** 2)))
    return x, x[1:] / x[:-1]


_ZIG_X, _ZIG_RATIO = _ziggurat_tables()
_ZIG_R = float(_ZIG_X[1])
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 2.0**-53
_TO_SIGNED = 2.0**-52


@numba.njit(cache=True, nogil=True, inline="always")
def _next_u64(state):  # pragma: no cover - compiled
    """SplitMix64: (new state, 64 random bits)."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return state, z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _normal_slow(state, i, u):  # pragma: no cover - compiled
    """The ziggurat's rare branches (~1.2% of draws): the tail layer or a wedge test."""
    if i == 0:  # tail beyond R (Marsaglia 1964)
        while True:
            state, a = _next_u64(state)
            state, b = _next_u64(state)
            x = math.log((np.int64(a >> np.uint64(11)) + 1.0) * _TO_UNIT) / _ZIG_R
            y = math.log((np.int64(b >> np.uint64(11)) + 1.0) * _TO_UNIT)
            if -2.0 * y >= x * x:
                return state, (x - _ZIG_R) if u < 0.0 else (_ZIG_R - x), True
    x = u * _ZIG_X[i]
    f0 = math.exp(-0.5 * (_ZIG_X[i] * _ZIG_X[i] - x * x))
    f1 = math.exp(-0.5 * (_ZIG_X[i + 1] * _ZIG_X[i + 1] - x * x))
    state, c = _next_u64(state)
    return state, x, f1 + np.int64(c >> np.uint64(11)) * _TO_UNIT * (f0 - f1) < 1.0


@numba.njit(cache=True, nogil=True, inline="always")
def next_normal(state):  # pragma: no cover - compiled
    """(new state, one N(0, 1) float64 draw): ziggurat with 7 index bits, 53 value bits.

    Compiled (numba): call it from compiled code with a ``uint64`` state, first
    :func:`stream_key`.
    """
    while True:
        state, r = _next_u64(state)
        i = np.int64(r & np.uint64(127))
        u = np.int64(r >> np.uint64(11)) * _TO_SIGNED - 1.0  # int64 → float64 is one instruction
        if abs(u) < _ZIG_RATIO[i]:
            return state, u * _ZIG_X[i]
        state, x, accepted = _normal_slow(state, i, u)
        if accepted:
            return state, x


@numba.njit(cache=True, nogil=True)
def _fill_normal(key, out):  # pragma: no cover - compiled
    """Fill the flat float32 array ``out`` with N(0, 1) draws from the stream of ``key``."""
    state = key
    for j in range(out.size):
        state, z = next_normal(state)
        out[j] = np.float32(z)


def standard_normal(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    """float32 N(0, 1) draws of ``shape``, from the stream of ``stream_key(rng)`` (the stream
    :func:`rawpairs.noise.add_noise` uses)."""
    return key_normals(int(stream_key(rng)), shape)


def key_normals(key: int, shape: int | tuple[int, ...]) -> np.ndarray:
    """float32 N(0, 1) draws of ``shape`` from the stream starting at the 64-bit ``key`` (one
    draw per element, row-major): the noise the fused inverse ISP adds with that key (an
    at-load sample's ``render.noise_key``)."""
    if not 0 <= key < 2**64:
        raise ValueError(f"a stream key is a 64-bit unsigned integer, got {key}")
    out = np.empty(shape, dtype=np.float32)
    _fill_normal(np.uint64(key), out.reshape(-1))
    return out
