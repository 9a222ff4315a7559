"""Sensor noise on linear RAW: heteroscedastic Gaussian, as in Brooks et al. 2019.

Units: ``linear`` is the mosaic normalised to [0, 1] (black level removed, divided by
white − black). A site of true value ``x`` reads ``x + n`` with ``n ~ N(0, shot · x + read)``:
``shot`` scales the signal-dependent (photon) part, ``read`` is the constant (read-out) variance.
Both are variances in normalised units, as stored in :class:`rawpairs.Camera`.

Randomness: every function takes a :class:`numpy.random.Generator` and draws one 64-bit key from
it; the Gaussians come from the compiled stream of that key (:mod:`rawpairs.rng`: SplitMix64 bits,
ziggurat method), one draw per site in row-major order. Same generator state → byte-identical
noise, equal to ``x + sqrt(shot · max(x, 0) + read) · rawpairs.rng.standard_normal(rng, shape)``.

References:
    T. Brooks et al., "Unprocessing Images for Learned Raw Denoising", CVPR 2019.
"""

from __future__ import annotations

import numba
import numpy as np

from rawpairs.rng import next_normal, stream_key

__all__ = ["add_noise", "darken"]


@numba.njit(cache=True, nogil=True)
def _add_noise_kernel(x, shot, read, key, out):  # pragma: no cover - compiled
    """``out = x + sqrt(shot · max(x, 0) + read) · z`` in float32, z from the stream of ``key``."""
    state = key
    zero = np.float32(0.0)
    for j in range(x.size):
        state, z = next_normal(state)
        v = x[j]
        out[j] = v + np.sqrt(shot * max(v, zero) + read) * np.float32(z)


def _check_levels(shot: float, read: float) -> tuple[np.float32, np.float32]:
    if not (np.isfinite(shot) and np.isfinite(read)) or shot < 0 or read < 0:
        raise ValueError(f"noise levels must be finite and >= 0, got shot={shot} read={read}")
    return np.float32(shot), np.float32(read)


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
    _add_noise_kernel(x.reshape(-1), shot32, read32, stream_key(rng), out.reshape(-1))
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
