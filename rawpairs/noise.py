"""Sensor noise on linear RAW: heteroscedastic Gaussian, as in Brooks et al. 2019.

Units: ``linear`` is the mosaic normalised to [0, 1] (black level removed, divided by
white − black). A site of true value ``x`` reads ``x + n`` with ``n ~ N(0, shot · x + read)``:
``shot`` scales the signal-dependent (photon) part, ``read`` is the constant (read-out) variance.
Both are variances in normalised units, as stored in :class:`rawpairs.Camera`.

Randomness: every function takes a :class:`numpy.random.Generator` and draws one 64-bit key from
it; the Gaussians are then made by a compiled generator (SplitMix64 bits, ziggurat method) whose
stream is a pure function of that key. Same generator state → byte-identical noise. It is used
instead of ``Generator.standard_normal`` for speed: inside a fused numba kernel numpy's generator
costs ~26 ns a draw here (a call through the bit generator per draw), this one ~4.4 ns (numpy's
bulk draw ~12 ns). ``_key`` and the compiled ``_normal`` are shared with the fused inverse ISP
(:mod:`rawpairs.unprocess`), which draws one Gaussian per site from the same stream.

References:
    T. Brooks et al., "Unprocessing Images for Learned Raw Denoising", CVPR 2019.
    G. Marsaglia, W. W. Tsang, "The Ziggurat Method for Generating Random Variables", Journal
    of Statistical Software 5(8), 2000; J. A. Doornik, "An Improved Ziggurat Method to Generate
    Normal Random Samples", 2005 (layer index and value from independent bits).
    G. Steele, D. Lea, C. Flood, "Fast Splittable Pseudorandom Number Generators" (SplitMix64),
    OOPSLA 2014.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["add_noise", "darken", "noise_std", "standard_normal"]


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
def _normal(state):  # pragma: no cover - compiled
    """(new state, one N(0, 1) float64 draw): ziggurat with 7 index bits, 53 value bits."""
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
        state, z = _normal(state)
        out[j] = np.float32(z)


@numba.njit(cache=True, nogil=True)
def _add_noise_kernel(x, shot, read, key, out):  # pragma: no cover - compiled
    """``out = x + sqrt(shot · max(x, 0) + read) · z`` in float32, z from the stream of ``key``."""
    state = key
    zero = np.float32(0.0)
    for j in range(x.size):
        state, z = _normal(state)
        v = x[j]
        out[j] = v + np.sqrt(shot * max(v, zero) + read) * np.float32(z)


def _key(rng: np.random.Generator) -> np.uint64:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng.integers(0, 2**64, dtype=np.uint64)


def _check_levels(shot: float, read: float) -> tuple[np.float32, np.float32]:
    if not (np.isfinite(shot) and np.isfinite(read)) or shot < 0 or read < 0:
        raise ValueError(f"noise levels must be finite and >= 0, got shot={shot} read={read}")
    return np.float32(shot), np.float32(read)


def standard_normal(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    """float32 N(0, 1) draws of ``shape``, from the same stream :func:`add_noise` uses."""
    out = np.empty(shape, dtype=np.float32)
    _fill_normal(_key(rng), out.reshape(-1))
    return out


def noise_std(linear: np.ndarray, shot: float, read: float) -> np.ndarray:
    """Noise standard deviation at each value: ``sqrt(shot · max(x, 0) + read)`` (float32)."""
    shot32, read32 = _check_levels(shot, read)
    x = np.asarray(linear, dtype=np.float32)
    return np.sqrt(shot32 * np.maximum(x, np.float32(0.0)) + read32)


def add_noise(
    linear: np.ndarray,
    shot: float,
    read: float,
    rng: np.random.Generator,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Add ``N(0, shot · x + read)`` noise to linear values ``x`` (≈ [0, 1]); float32 result.

    The result is not clipped (noise may take values below 0 or above 1, as on a sensor before
    quantisation). ``out`` (float32, same shape, may be ``linear`` itself) receives the result.
    """
    shot32, read32 = _check_levels(shot, read)
    x = np.ascontiguousarray(linear, dtype=np.float32)
    if out is None:
        out = np.empty_like(x)
    elif out.shape != x.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous float32 array of shape {x.shape}, got {out.dtype} "
            f"{out.shape}"
        )
    _add_noise_kernel(x.reshape(-1), shot32, read32, _key(rng), out.reshape(-1))
    return out


def darken(
    linear: np.ndarray, factor: float, shot: float, read: float, rng: np.random.Generator
) -> np.ndarray:
    """Simulate the same capture with ``factor``× less light at the same sensor gain (ISO).

    ``linear`` is a capture that already carries its sensor's noise (``shot``, ``read``), as real
    RAW files and mosaics from ``unprocess(..., noise=True)`` do. With ``factor``× fewer photons
    the signal becomes ``x / factor`` and, at unchanged gain, its variance must be
    ``shot · x / factor + read``. Scaling the input by ``1 / factor`` leaves
    ``(shot · x + read) / factor²``, so the missing variance is added:
    ``shot · (1 − 1/factor) · (x / factor) + read · (1 − 1/factor²)``, with ``x`` estimated by the
    (non-negative part of the) input. Relative to the signal, shot noise grows by
    ``sqrt(factor)`` and read noise by ``factor``. The result stays dark (multiply by ``factor``
    for the digitally brightened version). ``factor`` >= 1; float32 result. For a noise-free
    input use ``add_noise(x / factor, shot, read, rng)``.
    """
    if not np.isfinite(factor) or factor < 1:
        raise ValueError(f"darken factor must be a finite number >= 1, got {factor}")
    _check_levels(shot, read)
    k = float(factor)
    dark = np.asarray(linear, dtype=np.float32) / np.float32(k)
    return add_noise(dark, shot * (1.0 - 1.0 / k), read * (1.0 - 1.0 / (k * k)), rng, out=dark)
