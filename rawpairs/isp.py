"""The forward ISP: RAW sensor counts → sRGB, as named stages a caller can enter and leave.

=================  =========================  ========  =======================================
stage              array                      dtype     values
=================  =========================  ========  =======================================
``raw``            H×W mosaic                 uint16    sensor counts in [0, 2**bit_depth − 1]
``linear``         H×W mosaic                 float32   (raw − black) / (white − black) in [0, 1]
``white_balanced`` H×W mosaic                 float32   linear × wb gain × digital gain, [0, 1]
``camera_rgb``     H×W×3 camera RGB           float32   demosaiced, any finite value
``linear_srgb``    H×W×3 linear sRGB (D65)    float32   cam_to_srgb · rgb, clipped to [0, 1]
``toned``          H×W×3                      float32   tone curve, [0, 1]
``srgb``           H×W×3 display-encoded      float32   gamma-encoded, [0, 1]
``srgb8``          H×W×3                      uint8     ⌊255·srgb + ½⌋
=================  =========================  ========  =======================================

Each stage is one small pure function; :func:`process` composes them from any ``start`` to any
later ``stop``. Two runs of stages are fused into single passes when :func:`process` crosses them:
``raw`` → ``white_balanced`` (bit-identical to the stage functions) and ``camera_rgb`` /
``linear_srgb`` → ``srgb8`` (exact to the formulas; see :func:`process`).

References:
    T. Brooks et al., "Unprocessing Images for Learned Raw Denoising", CVPR 2019 (stages and
    the smoothstep tone curve: their forward ``process`` applies no tone curve, their
    ``unprocess`` inverts smoothstep on display-encoded values, our ``display_smoothstep``;
    see docs/isp.md); H. S. Malvar, L.-W. He, R. Cutler, ICASSP
    2004 (demosaicing); Adobe DNG Specification 1.6 (black/white level, colour matrices);
    IEC 61966-2-1 (sRGB).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numba
import numpy as np

from rawpairs.camera import Camera
from rawpairs.choices import Demosaic, Gamma, Tone
from rawpairs.demosaic import check_mosaic_shape, demosaic_unchecked
from rawpairs.tone import DEFAULT_TONE, decode_gamma, encode_gamma, inverse_tone
from rawpairs.tone import tone as tone_curve

__all__ = [
    "STAGES",
    "auto_exposure",
    "color_correct",
    "normalize",
    "process",
    "quantize8",
    "white_balance",
]

STAGES = (
    "raw",
    "linear",
    "white_balanced",
    "camera_rgb",
    "linear_srgb",
    "toned",
    "srgb",
    "srgb8",
)
_MOSAIC_STAGES = ("raw", "linear", "white_balanced")
_LUT_BITS = 12  # encoder table: 4097 entries indexed by ⌊x·4096⌋, corrected against thresholds


# Kernels -----------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _normalize_kernel(raw, black, span, gain, out):  # pragma: no cover - compiled
    """out = min(min(max((raw − black) / span, 0), 1) · gain, 1), per CFA position, float32."""
    zero, one = np.float32(0.0), np.float32(1.0)
    h, w = raw.shape
    for y in range(h):
        p = 2 * (y % 2)
        b0, b1 = black[p], black[p + 1]
        s0, s1 = span[p], span[p + 1]
        g0, g1 = gain[p], gain[p + 1]
        for x in range(0, w, 2):
            v0 = (np.float32(raw[y, x]) - b0) / s0
            v1 = (np.float32(raw[y, x + 1]) - b1) / s1
            out[y, x] = min(min(max(v0, zero), one) * g0, one)
            out[y, x + 1] = min(min(max(v1, zero), one) * g1, one)


@numba.njit(cache=True, nogil=True, inline="always")
def _ccm_clip(rgb, y, x, m):  # pragma: no cover - compiled
    """Pixel (y, x) of ``rgb`` times the 3×3 float32 matrix ``m``, clipped to [0, 1]."""
    zero, one = np.float32(0.0), np.float32(1.0)
    r, g, b = rgb[y, x, 0], rgb[y, x, 1], rgb[y, x, 2]
    o0 = m[0, 0] * r + m[0, 1] * g + m[0, 2] * b
    o1 = m[1, 0] * r + m[1, 1] * g + m[1, 2] * b
    o2 = m[2, 0] * r + m[2, 1] * g + m[2, 2] * b
    return (
        min(max(o0, zero), one),
        min(max(o1, zero), one),
        min(max(o2, zero), one),
    )


@numba.njit(cache=True, nogil=True)
def _color_correct_kernel(rgb, m, out):  # pragma: no cover - compiled
    h, w = rgb.shape[0], rgb.shape[1]
    for y in range(h):
        for x in range(w):
            out[y, x, 0], out[y, x, 1], out[y, x, 2] = _ccm_clip(rgb, y, x, m)


@numba.njit(cache=True, nogil=True, inline="always")
def _code(v, lut, thresholds):  # pragma: no cover - compiled
    """8-bit code of v in [0, 1]: table start at ⌊v·N⌋, then step over the thresholds ≤ v."""
    c = lut[int(v * (lut.shape[0] - 1))]
    while v >= thresholds[c + 1]:
        c += 1
    return c


@numba.njit(cache=True, nogil=True)
def _encode8_kernel(rgb, m, lut, thresholds, out):  # pragma: no cover - compiled
    h, w = rgb.shape[0], rgb.shape[1]
    for y in range(h):
        for x in range(w):
            r, g, b = _ccm_clip(rgb, y, x, m)
            out[y, x, 0] = _code(r, lut, thresholds)
            out[y, x, 1] = _code(g, lut, thresholds)
            out[y, x, 2] = _code(b, lut, thresholds)


@numba.njit(cache=True, nogil=True)
def _quantize8_kernel(flat, out):  # pragma: no cover - compiled
    for i in range(flat.shape[0]):
        out[i] = math.floor(np.float64(flat[i]) * 255.0 + 0.5)


@lru_cache(maxsize=16)
def _encoder_tables(tone: Tone, gamma: Gamma) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds and start table of the exact linear → 8-bit encoder for (tone, gamma).

    ``thresholds[k]`` (k = 1…255) is the smallest linear value whose code is at least k,
    ``inverse_tone(decode_gamma((k − ½) / 255), tone, gamma)`` in float64, with −∞ and +∞
    sentinels at 0 and 256.
    ``lut[i]`` is the code of i / N. Both curves are increasing, so the code of x is ``lut[⌊xN⌋]``
    plus the number of thresholds in (⌊xN⌋ / N, x]: the encoder is exact, not an approximation.
    """
    levels = (np.arange(1, 256, dtype=np.float64) - 0.5) / 255.0
    inner = inverse_tone(decode_gamma(levels, gamma), tone, gamma)
    thresholds = np.concatenate([[-np.inf], inner, [np.inf]])
    grid = np.arange((1 << _LUT_BITS) + 1, dtype=np.float64) / (1 << _LUT_BITS)
    lut = np.searchsorted(inner, grid, side="right").astype(np.int32)
    lut.setflags(write=False)
    thresholds.setflags(write=False)
    return lut, thresholds


# Validation --------------------------------------------------------------------------------


def _stage_index(stage: str, role: str) -> int:
    if stage not in STAGES:
        raise ValueError(f"unknown {role} stage {stage!r}: expected one of {STAGES}")
    return STAGES.index(stage)


def _check_camera(camera: Camera) -> None:
    if not isinstance(camera, Camera):
        raise ValueError(f"camera must be a rawpairs.Camera, got {type(camera).__name__}")


def _check_float(x: np.ndarray, stage: str, lo: float, hi: float) -> np.ndarray:
    """Float array → contiguous float32, after checking it is finite and inside [lo, hi]."""
    if x.dtype.kind != "f":
        raise ValueError(f"stage {stage!r} expects a float array, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size:
        mn, mx = float(x.min()), float(x.max())  # NaN and ±inf propagate into min/max
        if not (math.isfinite(mn) and math.isfinite(mx)):
            raise ValueError(f"stage {stage!r} input contains NaN or infinite values")
        if mn < lo or mx > hi:
            raise ValueError(
                f"stage {stage!r} expects values in [{lo}, {hi}], got range [{mn:.6g}, {mx:.6g}]"
            )
    return x


def _check_rgb_shape(x: np.ndarray, stage: str) -> None:
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"stage {stage!r} expects an H×W×3 image, got shape {x.shape}")


def _check_stage_input(image: np.ndarray, stage: str, camera: Camera) -> np.ndarray:
    """Validate ``image`` as the array of ``stage``; returns it contiguous, floats as float32."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if stage in _MOSAIC_STAGES:
        check_mosaic_shape(image, f"stage {stage!r} mosaic")
    else:
        _check_rgb_shape(image, stage)
    if stage == "raw":
        if image.dtype != np.uint16:
            raise ValueError(f"stage 'raw' expects uint16 sensor counts, got dtype {image.dtype}")
        max_count = 2**camera.bit_depth - 1
        top = int(image.max())
        if top > max_count:
            raise ValueError(
                f"stage 'raw' counts reach {top}, above {max_count} for a "
                f"{camera.bit_depth}-bit camera"
            )
        return np.ascontiguousarray(image)
    if stage == "srgb8":
        if image.dtype != np.uint8:
            raise ValueError(f"stage 'srgb8' expects uint8, got dtype {image.dtype}")
        return np.ascontiguousarray(image)
    lo, hi = {
        "linear": (0.0, 1.0),
        "white_balanced": (0.0, 1.0),
        "camera_rgb": (-math.inf, math.inf),
    }.get(stage, (0.0, 1.0))
    return _check_float(image, stage, lo, hi)


# Stages ------------------------------------------------------------------------------------


def _position_gains(camera: Camera) -> np.ndarray:
    """wb gain of each CFA position's channel × digital gain, float32, row-major 2×2 order."""
    gains = np.array(camera.wb_gains, dtype=np.float64)[list(camera.cfa.channels)]
    return (gains * camera.digital_gain).astype(np.float32)


def _normalize(raw: np.ndarray, camera: Camera, gain: np.ndarray) -> np.ndarray:
    black = np.array(camera.black_level, dtype=np.float32)
    span = (camera.white_level - np.array(camera.black_level)).astype(np.float32)
    out = np.empty(raw.shape, dtype=np.float32)
    _normalize_kernel(raw, black, span, gain, out)
    return out


def _white_balance(linear: np.ndarray, camera: Camera) -> np.ndarray:
    h, w = linear.shape
    gain = _position_gains(camera).reshape(1, 2, 1, 2)
    out = (linear.reshape(h // 2, 2, w // 2, 2) * gain).reshape(h, w)
    return np.minimum(out, np.float32(1.0), out=out)


def _color_matrix(camera: Camera) -> np.ndarray:
    return np.ascontiguousarray(camera.cam_to_srgb, dtype=np.float32)


def _color_correct(camera_rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    out = np.empty(camera_rgb.shape, dtype=np.float32)
    _color_correct_kernel(camera_rgb, matrix, out)
    return out


def _quantize8(srgb: np.ndarray) -> np.ndarray:
    out = np.empty(srgb.shape, dtype=np.uint8)
    _quantize8_kernel(srgb.reshape(-1), out.reshape(-1))
    return out


def _encode8(rgb: np.ndarray, matrix: np.ndarray, tone: Tone, gamma: Gamma) -> np.ndarray:
    lut, thresholds = _encoder_tables(tone, gamma)
    out = np.empty(rgb.shape, dtype=np.uint8)
    _encode8_kernel(rgb, matrix, lut, thresholds, out)
    return out


def normalize(raw: np.ndarray, camera: Camera) -> np.ndarray:
    """``raw`` → ``linear``: uint16 counts → float32 ``(raw − black) / (white − black)`` in [0, 1].

    The black level is the camera's value for each site's CFA position; values below black or
    above white are clipped.
    """
    _check_camera(camera)
    raw = _check_stage_input(raw, "raw", camera)
    return _normalize(raw, camera, np.ones(4, dtype=np.float32))


def white_balance(linear: np.ndarray, camera: Camera) -> np.ndarray:
    """``linear`` → ``white_balanced``: each site × its channel's wb gain × the digital gain.

    Input: float H×W mosaic in [0, 1]; output float32 clipped to [0, 1] (as Brooks et al. 2019:
    a saturated site stays saturated, so blown highlights stay neutral instead of turning magenta).
    """
    _check_camera(camera)
    linear = _check_stage_input(linear, "linear", camera)
    return _white_balance(linear, camera)


def color_correct(camera_rgb: np.ndarray, camera: Camera) -> np.ndarray:
    """``camera_rgb`` → ``linear_srgb``: ``clip(cam_to_srgb · rgb, 0, 1)`` per pixel, float32.

    ``cam_to_srgb`` rows sum to 1 (see :class:`~rawpairs.camera.Camera`), so a neutral camera
    RGB pixel stays neutral.
    """
    _check_camera(camera)
    camera_rgb = _check_stage_input(camera_rgb, "camera_rgb", camera)
    return _color_correct(camera_rgb, _color_matrix(camera))


def quantize8(srgb: np.ndarray) -> np.ndarray:
    """``srgb`` → ``srgb8``: float values in [0, 1] → uint8 ``⌊255·x + ½⌋`` (ties round up).

    Computed in float64 from the input values, so the rounding is exact.
    """
    if not isinstance(srgb, np.ndarray):
        raise ValueError(f"srgb must be a numpy array, got {type(srgb).__name__}")
    if srgb.dtype.kind != "f":
        raise ValueError(f"quantize8 expects a float array in [0, 1], got dtype {srgb.dtype}")
    srgb = np.ascontiguousarray(srgb)
    if srgb.size:
        mn, mx = float(srgb.min()), float(srgb.max())
        if not (mn >= 0.0 and mx <= 1.0):  # also true for NaN
            raise ValueError(f"quantize8 expects values in [0, 1], got range [{mn}, {mx}]")
    return _quantize8(srgb)


def auto_exposure(
    raw: np.ndarray, camera: Camera, *, percentile: float = 99.0, max_gain: float = 16.0
) -> float:
    """Digital gain that puts the image's ``percentile``-th percentile at white (≥ 1).

    The rule of LibRaw's auto-brightness (``auto_bright_thr`` = 1 − percentile/100), computed on
    a half-resolution linear sRGB preview: each 2×2 CFA block gives one pixel (red, mean of the
    two greens, blue), normalised and white-balanced as in the ``white_balanced`` stage (the
    camera's own ``digital_gain`` is ignored), then ``clip(cam_to_srgb · rgb, 0, 1)``. With
    ``white`` the largest of the three channels' ``percentile``-th percentiles (numpy's linear
    interpolation), the gain is ``clip(1 / white, 1, max_gain)``: an image is never darkened,
    and a (nearly) black one is brightened by at most ``max_gain``. ``raw``: uint16 counts of
    the ``raw`` stage. Deterministic: a pure function of the counts and the camera.
    """
    _check_camera(camera)
    raw = _check_stage_input(raw, "raw", camera)
    if not (0.0 < percentile <= 100.0):
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if not (math.isfinite(max_gain) and max_gain >= 1.0):
        raise ValueError(f"max_gain must be a finite number >= 1, got {max_gain}")
    gain = np.array(camera.wb_gains, dtype=np.float32)[list(camera.cfa.channels)]
    linear = _normalize(raw, camera, gain)
    planes = [linear[y::2, x::2] for y in (0, 1) for x in (0, 1)]
    rgb = np.zeros((*planes[0].shape, 3), dtype=np.float32)
    for pos, channel in enumerate(camera.cfa.channels):
        rgb[..., channel] += planes[pos] * (np.float32(0.5) if channel == 1 else np.float32(1))
    srgb = _color_correct(rgb, _color_matrix(camera))
    white = max(float(np.percentile(srgb[..., c], percentile)) for c in range(3))
    return float(min(max(1.0 / white, 1.0), max_gain)) if white > 0 else float(max_gain)


def process(
    image: np.ndarray,
    camera: Camera,
    *,
    start: str = "raw",
    stop: str = "srgb8",
    demosaic: Demosaic | str = Demosaic.MALVAR,
    tone: Tone | str = DEFAULT_TONE,
    gamma: Gamma | str = Gamma.SRGB,
) -> np.ndarray:
    """Run the forward ISP on ``image`` (an array of stage ``start``) up to stage ``stop``.

    ``start`` and ``stop`` name stages of :data:`STAGES` (``stop`` inclusive, not before
    ``start``); the input is validated against the ``start`` stage's dtype, shape and range (see
    the module table) and a ``ValueError`` names the problem. E.g. ``process(raw, cam,
    stop="camera_rgb")`` gives linear camera RGB, ``process(rgb, cam, start="camera_rgb")`` renders
    it to 8 bits. ``start == stop`` returns a validated copy.

    ``demosaic``: ``"malvar"`` or ``"bilinear"`` (:mod:`rawpairs.demosaic`); ``tone``:
    ``"display_smoothstep"`` (default), ``"smoothstep"`` or ``"none"``; ``gamma``: ``"srgb"``,
    ``"2.2"`` or ``"linear"`` (:mod:`rawpairs.tone`). Each is a :mod:`rawpairs.choices` enum
    member or its string value; anything else is a ``ValueError`` listing the choices.

    Fused passes: from ``raw`` the normalisation and white balance run as one pass, bit-identical
    to :func:`normalize` then :func:`white_balance`. When ``stop`` is ``srgb8`` the colour
    correction, tone curve, gamma and quantisation run as one pass with an exact table encoder (the
    code of ``x`` is the number of thresholds ``tone⁻¹(gamma⁻¹((k − ½)/255))`` at or below
    ``x``, computed in float64); it can differ from the float32 stage path (``stop="srgb"`` then
    :func:`quantize8`) by one code where that path's rounding crosses a threshold.
    """
    i_start, i_stop = _stage_index(start, "start"), _stage_index(stop, "stop")
    if i_stop < i_start:
        raise ValueError(f"stop stage {stop!r} comes before start stage {start!r}")
    demosaic, tone, gamma = Demosaic.parse(demosaic), Tone.parse(tone), Gamma.parse(gamma)
    _check_camera(camera)
    x = _check_stage_input(image, start, camera)
    stage = i_start
    while stage < i_stop:
        name = STAGES[stage]
        if name == "raw":
            fuse_wb = i_stop >= STAGES.index("white_balanced")
            gain = _position_gains(camera) if fuse_wb else np.ones(4, dtype=np.float32)
            x = _normalize(x, camera, gain)
            stage += 2 if fuse_wb else 1
        elif name == "linear":
            x, stage = _white_balance(x, camera), stage + 1
        elif name == "white_balanced":
            x, stage = demosaic_unchecked(x, camera.cfa, demosaic), stage + 1
        elif name in ("camera_rgb", "linear_srgb") and stop == "srgb8":
            matrix = _color_matrix(camera) if name == "camera_rgb" else np.eye(3, dtype=np.float32)
            x, stage = _encode8(x, matrix, tone, gamma), i_stop
        elif name == "camera_rgb":
            x, stage = _color_correct(x, _color_matrix(camera)), stage + 1
        elif name == "linear_srgb":
            x, stage = tone_curve(x, tone, gamma), stage + 1
        elif name == "toned":
            x, stage = encode_gamma(x, gamma), stage + 1
        else:  # "srgb"
            x, stage = _quantize8(x), stage + 1
    return x.copy() if x is image else x
