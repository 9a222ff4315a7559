"""Tone curve and gamma, both directions, as pure float32 functions and exact uint8 tables.

The forward ISP applies ``tone`` (a global S-curve, linear → linear) then ``gamma`` (display
encoding); the inverse ISP undoes gamma, then tone. For uint8 input the inverse is a 256-entry
table: exact, nearly free. The tone curves (:class:`~rawpairs.choices.Tone`; the transfer functions
are :class:`~rawpairs.choices.Gamma`; every function takes the member or its string value):

- ``"none"``: the identity (Brooks et al.'s forward ``process`` has no tone curve).
- ``"smoothstep"``: ``3x² − 2x³`` on linear values, before the gamma curve.
- ``"display_smoothstep"``: ``3v² − 2v³`` on display-encoded values ``v = gamma(x)``, the
  curve Brooks et al.'s ``unprocess`` inverts (inverse smoothstep, then gamma expansion).
  As a linear → linear stage it is ``gamma⁻¹(smoothstep(gamma(x)))``, so the stage order
  (tone, then gamma) is the same for every curve and ``gamma(tone(x))`` is smoothstep of the
  encoded value.

References: IEC 61966-2-1 (sRGB transfer function); Brooks et al. 2019, "Unprocessing Images for
Learned Raw Denoising" (smoothstep tone curve and its closed-form inverse).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from rawpairs.choices import Gamma, Tone

__all__ = [
    "DEFAULT_TONE",
    "decode_gamma",
    "encode_gamma",
    "inverse_tone",
    "linear_lut",
    "tone",
]

# The curve of the forward and inverse ISP unless asked otherwise: on real RAW files it renders
# closest to the cameras' own JPEGs (docs/isp.md, "Render quality").
DEFAULT_TONE = Tone.DISPLAY_SMOOTHSTEP

_SRGB_THRESHOLD = 0.0031308


def _check(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"{name} expects a float array in [0, 1], got dtype {x.dtype}")
    return x


def encode_gamma(linear: np.ndarray, gamma: Gamma | str = Gamma.SRGB) -> np.ndarray:
    """Linear light in [0, 1] → display-encoded values in [0, 1] (values are clipped to [0, 1]).

    ``gamma``: ``"srgb"`` (the piecewise IEC 61966-2-1 curve), ``"2.2"`` (pure power 1/2.2) or
    ``"linear"`` (identity).
    """
    gamma = Gamma.parse(gamma)
    x = np.clip(_check(linear, "encode_gamma"), 0.0, 1.0)
    if gamma is Gamma.SRGB:
        return np.where(
            x <= _SRGB_THRESHOLD,
            12.92 * x,
            1.055 * np.power(np.maximum(x, _SRGB_THRESHOLD), 1 / 2.4) - 0.055,
        ).astype(x.dtype, copy=False)
    if gamma is Gamma.POWER_2_2:
        return np.power(x, 1 / 2.2).astype(x.dtype, copy=False)
    return x  # Gamma.LINEAR


def decode_gamma(encoded: np.ndarray, gamma: Gamma | str = Gamma.SRGB) -> np.ndarray:
    """Inverse of :func:`encode_gamma`: display values in [0, 1] → linear light in [0, 1]."""
    gamma = Gamma.parse(gamma)
    y = np.clip(_check(encoded, "decode_gamma"), 0.0, 1.0)
    if gamma is Gamma.SRGB:
        return np.where(
            y <= 12.92 * _SRGB_THRESHOLD,
            y / 12.92,
            np.power((np.maximum(y, 0.04045) + 0.055) / 1.055, 2.4),
        ).astype(y.dtype, copy=False)
    if gamma is Gamma.POWER_2_2:
        return np.power(y, 2.2).astype(y.dtype, copy=False)
    return y  # Gamma.LINEAR


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3.0 - 2.0 * x)


def _inverse_smoothstep(y: np.ndarray) -> np.ndarray:
    # float64 inside: in float32, 1 − 2y rounds to ±1 near the ends (errors up to 9e-5).
    y64 = y.astype(np.float64, copy=False)
    return (0.5 - np.sin(np.arcsin(1.0 - 2.0 * y64) / 3.0)).astype(y.dtype, copy=False)


def tone(
    x: np.ndarray, curve: Tone | str = Tone.SMOOTHSTEP, gamma: Gamma | str = Gamma.SRGB
) -> np.ndarray:
    """Global tone curve, linear values in [0, 1] → linear values in [0, 1].

    ``curve``: ``"smoothstep"`` (``3x² − 2x³``), ``"display_smoothstep"``
    (``gamma⁻¹(smoothstep(gamma(x)))``, i.e. smoothstep of the display-encoded value; ``gamma``
    names the encoding, see :func:`encode_gamma`) or ``"none"``.
    """
    curve, gamma = Tone.parse(curve), Gamma.parse(gamma)
    x = np.clip(_check(x, "tone"), 0.0, 1.0)
    if curve is Tone.SMOOTHSTEP:
        return _smoothstep(x).astype(x.dtype, copy=False)
    if curve is Tone.DISPLAY_SMOOTHSTEP:  # float64 inside: the curves are composed and inverted
        x64 = x.astype(np.float64, copy=False)
        return decode_gamma(_smoothstep(encode_gamma(x64, gamma)), gamma).astype(x.dtype)
    return x  # Tone.NONE


def inverse_tone(
    y: np.ndarray, curve: Tone | str = Tone.SMOOTHSTEP, gamma: Gamma | str = Gamma.SRGB
) -> np.ndarray:
    """Inverse of :func:`tone`: ``0.5 − sin(asin(1 − 2y) / 3)`` for smoothstep (Brooks 2019).

    For ``"display_smoothstep"`` the inverse smoothstep acts on ``gamma(y)``.
    """
    curve, gamma = Tone.parse(curve), Gamma.parse(gamma)
    y = np.clip(_check(y, "inverse_tone"), 0.0, 1.0)
    if curve is Tone.SMOOTHSTEP:
        return _inverse_smoothstep(y)
    if curve is Tone.DISPLAY_SMOOTHSTEP:
        y64 = y.astype(np.float64, copy=False)
        return decode_gamma(_inverse_smoothstep(encode_gamma(y64, gamma)), gamma).astype(y.dtype)
    return y  # Tone.NONE


@lru_cache(maxsize=16)
def _linear_lut(gamma: Gamma, curve: Tone) -> np.ndarray:
    codes = np.arange(256, dtype=np.float64) / 255.0
    linear = decode_gamma(codes, gamma)
    lut = np.clip(inverse_tone(linear, curve, gamma), 0.0, 1.0).astype(np.float32)
    lut[0] = 0.0  # exactly black (float64 gives 5.6e-17)
    lut.setflags(write=False)
    return lut


def linear_lut(gamma: Gamma | str = Gamma.SRGB, curve: Tone | str = Tone.SMOOTHSTEP) -> np.ndarray:
    """256-entry float32 table: uint8 display code → linear value in [0, 1] (read-only).

    Exactly ``inverse_tone(decode_gamma(code / 255))`` computed in float64, then rounded once.
    For ``"display_smoothstep"`` that is ``decode_gamma(inverse_smoothstep(code / 255))``
    (Brooks et al.'s ``unprocess``: inverse smoothstep, then gamma expansion).
    """
    return _linear_lut(Gamma.parse(gamma), Tone.parse(curve))
