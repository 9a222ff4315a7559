"""The inverse ISP: an sRGB photo (uint8) → a simulated RAW Bayer mosaic (Brooks et al. 2019).

Each stage undoes one stage of the forward ISP (:mod:`rawpairs.isp`), in reverse order:

1. :func:`srgb8_to_linear`: uint8 codes → linear sRGB by an exact 256-entry table (inverse gamma,
   then inverse tone; with the default ``display_smoothstep`` that is Brooks et al.'s inverse
   smoothstep of the code, then gamma expansion); undoes ``linear_srgb`` → ``toned`` → ``srgb``
   → ``srgb8``.
2. :func:`srgb_to_camera`: linear sRGB → camera RGB (``camera.rgb_to_cam``); undoes
   ``camera_rgb`` → ``linear_srgb``.
3. :func:`safe_invert_gains`, then clip to [0, 1]: undoes the white balance and digital gain of
   ``linear`` → ``white_balanced``, sparing highlights.
4. :func:`mosaic`: keeps the camera's CFA channel at each site; undoes demosaicing.
5. :func:`rawpairs.noise.add_noise` (optional): the sensor's shot and read noise.
6. :func:`to_counts`: ``black + x · (white − black)``, rounded, clipped to the bit depth; undoes
   ``raw`` → ``linear``.

:func:`unprocess_reference` composes these stages on whole float32 images. :func:`unprocess`
computes the same mosaic in one compiled pass that visits each output site once and evaluates only
what that site needs: its own camera channel, a sum of three lookups in 256-entry tables with the
colour matrix folded in, and an estimate of the mean camera value (three more lookups) that
decides whether the site can be in the highlight mask; only such sites (mean > 0.9, rare)
compute all three channels. Then gains, clip, noise and quantisation. Every float32 operation
that reaches the output is the reference's, in the same order, and the noise comes from the same
stream, so the two agree bit for bit.

Units: input uint8 sRGB codes; output uint16 sensor counts (black level added, values in
[0, 2**bit_depth − 1]); intermediate values are linear in [0, 1].

References:
    T. Brooks, B. Mildenhall, T. Xue, J. Chen, D. Sharlet, J. T. Barron, "Unprocessing Images for
    Learned Raw Denoising", CVPR 2019 (stages, ``safe_invert_gains``, noise model).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from rawpairs.camera import Camera
from rawpairs.cfa import CFA
from rawpairs.choices import Gamma, Tone
from rawpairs.noise import add_noise
from rawpairs.priors import DEFAULT_PRIORS, CapturePriors, sample_camera
from rawpairs.rng import next_normal, stream_key
from rawpairs.tone import DEFAULT_TONE, linear_lut

__all__ = [
    "mosaic",
    "safe_invert_gains",
    "simulate_raw",
    "srgb8_to_linear",
    "srgb_to_camera",
    "to_counts",
    "unprocess",
    "unprocess_reference",
]

# Brooks et al.'s highlight mask: gains fade to 1 as the mean camera value rises from 0.9 to 1.
_INFLECTION = np.float32(0.9)
_SPAN = np.float32(0.1)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_THREE = np.float32(3.0)
_HALF = np.float32(0.5)
# Below this approximate gray no site can be in the mask; the approximation (three folded
# lookups) is within ~1e-6 of the reference's gray, the margin is 1e-4.
_MASK_START = np.float32(0.9 - 1e-4)


# Stages ------------------------------------------------------------------------------------
def srgb8_to_linear(
    rgb: np.ndarray, tone: Tone | str = DEFAULT_TONE, gamma: Gamma | str = Gamma.SRGB
) -> np.ndarray:
    """uint8 sRGB codes → linear sRGB in [0, 1] (float32): inverse gamma, then inverse tone."""
    _check_rgb8(rgb)
    return linear_lut(gamma, tone)[rgb]


def _inverse_gains(camera: Camera) -> np.ndarray:
    """Per-channel gains that undo white balance and digital gain (float32, R G B)."""
    r, g, b = camera.wb_gains
    return (np.array([1.0 / r, 1.0 / g, 1.0 / b]) / camera.digital_gain).astype(np.float32)


def srgb_to_camera(linear_srgb: np.ndarray, camera: Camera) -> np.ndarray:
    """Linear sRGB → linear camera RGB, ``camera.rgb_to_cam`` applied per pixel (float32).

    Written as an explicit three-term sum per channel so the compiled path can reproduce the
    same float32 operations (a BLAS product sums in an unspecified order).
    """
    m = camera.rgb_to_cam.astype(np.float32)
    x = np.asarray(linear_srgb, dtype=np.float32)
    out = np.empty_like(x)
    for c in range(3):
        out[..., c] = x[..., 0] * m[c, 0] + x[..., 1] * m[c, 1] + x[..., 2] * m[c, 2]
    return out


def safe_invert_gains(camera_rgb: np.ndarray, camera: Camera) -> np.ndarray:
    """Undo white balance and digital gain, sparing highlights (Brooks' ``safe_invert_gains``).

    ``gains = [1/r, 1, 1/b] / digital_gain``; with ``gray`` the mean of the three camera channels,
    ``mask = (max(gray − 0.9, 0) / 0.1)²`` and the applied gain is
    ``max(mask + (1 − mask) · gains, gains)``: where ``gray`` ≤ 0.9 exactly ``gains``, rising
    to 1 at white so saturated pixels stay saturated after the forward ISP. Float32, unclipped.
    """
    x = np.asarray(camera_rgb, dtype=np.float32)
    gains = _inverse_gains(camera)
    gray = (x[..., 0] + x[..., 1] + x[..., 2]) / _THREE
    t = np.maximum(gray - _INFLECTION, _ZERO) / _SPAN
    mask = (t * t)[..., None]
    return x * np.maximum(mask + (_ONE - mask) * gains, gains)


def mosaic(image: np.ndarray, cfa: CFA | str) -> np.ndarray:
    """H×W×3 image → H×W mosaic keeping, at each site, the channel the CFA puts there."""
    channels = np.array(CFA.parse(cfa).channels).reshape(2, 2)
    out = np.empty(image.shape[:2], dtype=image.dtype)
    for dy in range(2):
        for dx in range(2):
            out[dy::2, dx::2] = image[dy::2, dx::2, channels[dy, dx]]
    return out


def _levels(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Black level and white − black per CFA position (float32, 2×2)."""
    black = camera.black_level_array
    return black, np.float32(camera.white_level) - black


def to_counts(linear_mosaic: np.ndarray, camera: Camera) -> np.ndarray:
    """Linear mosaic (≈ [0, 1]) → uint16 counts: ``black + x · (white − black)`` per position,
    rounded half up, clipped to [0, 2**bit_depth − 1] (noise may reach below black or above
    white, as on a sensor)."""
    x = np.asarray(linear_mosaic, dtype=np.float32)
    _check_even(x.shape, "mosaic")
    black, scale = _levels(camera)
    h, w = x.shape
    reps = (h // 2, w // 2)
    counts = np.floor(np.tile(black, reps) + x * np.tile(scale, reps) + _HALF)
    return np.clip(counts, 0, 2**camera.bit_depth - 1).astype(np.uint16)


# Validation --------------------------------------------------------------------------------
def _check_even(shape: tuple[int, ...], name: str) -> None:
    if shape[0] % 2 or shape[1] % 2:
        raise ValueError(f"{name} height and width must be even, got {shape[0]}×{shape[1]}")


def _check_rgb8(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {getattr(rgb, 'dtype', type(rgb))}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {rgb.shape}")


def _noise_levels(
    camera: Camera, rng: np.random.Generator | None, noise: bool, noise_key: int | None = None
) -> tuple[float, float] | None:
    """(shot, read) when noise is to be added, else None; an rng (or a key) is then required."""
    if not noise or (camera.noise_shot == 0 and camera.noise_read == 0):
        return None
    if rng is None and noise_key is None:
        raise ValueError("adding noise needs an rng (numpy.random.Generator); or pass noise=False")
    return camera.noise_shot, camera.noise_read


# Composition -------------------------------------------------------------------------------
def unprocess_reference(
    rgb: np.ndarray,
    camera: Camera,
    *,
    rng: np.random.Generator | None = None,
    tone: Tone | str = DEFAULT_TONE,
    gamma: Gamma | str = Gamma.SRGB,
    noise: bool = True,
) -> np.ndarray:
    """:func:`unprocess`, stage by stage on whole float32 images (the oracle for the fast path)."""
    _check_rgb8(rgb)
    _check_even(rgb.shape, "image")
    levels = _noise_levels(camera, rng, noise)
    linear = srgb8_to_linear(rgb, tone, gamma)
    cam = srgb_to_camera(linear, camera)
    raw = mosaic(np.clip(safe_invert_gains(cam, camera), _ZERO, _ONE), camera.cfa)
    if levels is not None:
        raw = add_noise(raw, *levels, rng)
    return to_counts(raw, camera)


@numba.njit(cache=True, nogil=True)
def _unprocess_kernel(
    rgb, tables, chan, gray_tables, gains, black, scale, max_count, shot, read, key, noisy, out
):  # pragma: no cover - compiled
    """Fused inverse ISP of ``rgb`` (uint8 H×W×3) into the uint16 mosaic ``out``.

    ``tables[c, k, v]`` = float32(LUT[v] · rgb_to_cam[c, k]); ``chan``, ``gains``, ``black``,
    ``scale`` are per CFA position (row-major 2×2). ``gray_tables`` fold the mean of the three
    camera channels into three lookups: it decides, with a margin far above its rounding error,
    whether a site can be in the highlight mask (gray > 0.9); only those few sites evaluate the
    mask exactly as the reference does. One noise draw per site, in row-major order.
    """
    h, w = out.shape
    state = key
    for y in range(h):
        row = 2 * (y & 1)
        src, dst = rgb[y], out[y]
        for x in range(w):
            p = row + (x & 1)
            v0, v1, v2 = src[x, 0], src[x, 1], src[x, 2]
            c = chan[p]
            cam = tables[c, 0, v0] + tables[c, 1, v1] + tables[c, 2, v2]
            g = gains[p]
            if gray_tables[0, v0] + gray_tables[1, v1] + gray_tables[2, v2] > _MASK_START:
                c0 = tables[0, 0, v0] + tables[0, 1, v1] + tables[0, 2, v2]
                c1 = tables[1, 0, v0] + tables[1, 1, v1] + tables[1, 2, v2]
                c2 = tables[2, 0, v0] + tables[2, 1, v1] + tables[2, 2, v2]
                t = (c0 + c1 + c2) / _THREE - _INFLECTION
                t = t / _SPAN if t > _ZERO else _ZERO
                mask = t * t
                safe = mask + (_ONE - mask) * g
                g = safe if safe > g else g
            v = cam * g
            v = v if v > _ZERO else _ZERO
            v = v if v < _ONE else _ONE
            if noisy:
                state, z = next_normal(state)
                v = v + np.sqrt(shot * (v if v > _ZERO else _ZERO) + read) * np.float32(z)
            count = np.floor(black[p] + v * scale[p] + _HALF)
            count = count if count > _ZERO else _ZERO
            count = count if count < max_count else max_count
            dst[x] = np.uint16(count)


def unprocess(
    rgb: np.ndarray,
    camera: Camera,
    *,
    rng: np.random.Generator | None = None,
    tone: Tone | str = DEFAULT_TONE,
    gamma: Gamma | str = Gamma.SRGB,
    noise: bool = True,
    noise_key: int | None = None,
) -> np.ndarray:
    """sRGB uint8 H×W×3 (H, W even) → uint16 H×W RAW mosaic of ``camera`` (counts).

    ``tone`` and ``gamma`` name the forward curves to undo (:mod:`rawpairs.tone`; enum members
    of :mod:`rawpairs.choices` or their string values). Noise with
    ``camera.noise_shot``/``noise_read`` is added when ``noise`` is true and either level is
    positive; ``rng`` is then required, or ``noise_key``: the 64-bit start of the noise stream
    that ``rawpairs.rng.stream_key(rng)`` would have drawn (an at-load sample's
    ``render.noise_key``). ``noise=False`` gives the deterministic noise-free mosaic (a loader can
    draw fresh noise each epoch from the camera's stored levels). Equal, bit for bit, to
    :func:`unprocess_reference`.
    """
    _check_rgb8(rgb)
    _check_even(rgb.shape, "image")
    levels = _noise_levels(camera, rng, noise, noise_key)
    rgb_to_cam = camera.rgb_to_cam
    lut = linear_lut(gamma, tone)
    tables = lut[None, None, :] * rgb_to_cam.astype(np.float32)[:, :, None]
    gray_tables = (lut[None, :] * rgb_to_cam.mean(axis=0)[:, None]).astype(np.float32)
    chan = np.array(camera.cfa.channels, dtype=np.int64)
    gains = _inverse_gains(camera)[chan]
    black, scale = (a.ravel() for a in _levels(camera))
    shot, read = levels if levels is not None else (0.0, 0.0)
    out = np.empty(rgb.shape[:2], dtype=np.uint16)
    _unprocess_kernel(
        np.ascontiguousarray(rgb),
        tables,
        chan,
        gray_tables,
        gains,
        black,
        scale,
        np.float32(2**camera.bit_depth - 1),
        np.float32(shot),
        np.float32(read),
        _stream_start(levels, rng, noise_key),
        levels is not None,
        out,
    )
    return out


def _stream_start(
    levels: tuple[float, float] | None, rng: np.random.Generator | None, noise_key: int | None
) -> np.uint64:
    """The noise stream's start state: ``noise_key``, else a draw from ``rng`` (0: no noise)."""
    if levels is None:
        return np.uint64(0)
    if noise_key is not None:
        return np.uint64(noise_key)
    return stream_key(rng)  # type: ignore[arg-type]


def simulate_raw(
    rgb: np.ndarray,
    rng: np.random.Generator,
    priors: CapturePriors = DEFAULT_PRIORS,
    **kwargs: Any,
) -> tuple[np.ndarray, Camera]:
    """Draw a camera from ``priors`` with ``rng``, then :func:`unprocess` ``rgb`` with it.

    ``kwargs`` (``tone``, ``gamma``, ``noise``) go to :func:`unprocess`. Returns the uint16
    mosaic and the camera (its noise levels are stored even when ``noise=False``).
    """
    camera = sample_camera(rng, priors)
    return unprocess(rgb, camera, rng=rng, **kwargs), camera
