"""Write a Bayer mosaic and its camera model as a minimal, valid DNG.

The file is one uncompressed 16-bit CFA image (TIFF/EP ``PhotometricInterpretation`` 32803) with
the tags a raw converter needs to render it (Adobe DNG Specification 1.4, chapter 4):

=========================  ==================================================================
tag                        value
=========================  ==================================================================
CFARepeatPatternDim        2, 2
CFAPattern                 ``camera.cfa`` as colour indices (0 = R, 1 = G, 2 = B), row-major
CFAPlaneColor, CFALayout   R, G, B; 1 (rectangular)
DNGVersion                 1.4.0.0 (DNGBackwardVersion 1.1.0.0)
BlackLevelRepeatDim        2, 2
BlackLevel                 ``camera.black_level``, one per CFA position (LONG)
WhiteLevel                 ``camera.white_level`` (LONG)
ColorMatrix1               ``camera.xyz_to_cam`` (SRATIONAL, 3×3 row-major, error < 1e-9)
CalibrationIlluminant1     21 (D65)
AsShotNeutral              ``1 / camera.wb_gains`` (RATIONAL)
Make, Model                the ``make`` and ``model`` arguments
UniqueCameraModel          ``"<make> <model>"``
=========================  ==================================================================

:func:`rawpairs.raw_files.read_raw` reads such a file back with the mosaic bit-exact and the
camera's CFA, black and white levels, white balance and colour matrix recovered (see
``docs/sources.md``). Not written: ``digital_gain`` and the noise parameters (they describe the
simulation, not the sensor), and ``bit_depth`` (storage is 16-bit; a reader derives the bit depth
from WhiteLevel).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile

from rawpairs.camera import Camera

__all__ = ["MIN_SIDE", "write_dng"]

# LibRaw (dcraw's identify) refuses images with a side under 22 pixels, so smaller DNGs could be
# written but never read back by rawpairs.raw_files.read_raw.
MIN_SIDE = 22

_D65 = 21
_DNG_VERSION = (1, 4, 0, 0)
_DNG_BACKWARD_VERSION = (1, 1, 0, 0)
# Rationals are the best approximation whose numerator and denominator fit a signed 32-bit
# integer: the error is at most (floor(|v|) + 1) / (2**31 - 1), under 1e-9 for |v| < 2.
_INT32_MAX = 2**31 - 1

# TIFF / DNG tag codes.
_CFA_REPEAT_PATTERN_DIM = 33421
_CFA_PATTERN = 33422
_MAKE = 271
_MODEL = 272
_DNG_VERSION_TAG = 50706
_DNG_BACKWARD_VERSION_TAG = 50707
_UNIQUE_CAMERA_MODEL = 50708
_CFA_PLANE_COLOR = 50710
_CFA_LAYOUT = 50711
_BLACK_LEVEL_REPEAT_DIM = 50713
_BLACK_LEVEL = 50714
_WHITE_LEVEL = 50717
_COLOR_MATRIX_1 = 50721
_AS_SHOT_NEUTRAL = 50728
_CALIBRATION_ILLUMINANT_1 = 50778


def _rationals(values: Iterable[float], name: str) -> tuple[int, ...]:
    """Flat (numerator, denominator, …) pairs for a TIFF (S)RATIONAL tag."""
    out: list[int] = []
    for v in values:
        if not abs(v) < _INT32_MAX:
            raise ValueError(f"{name} value {v} does not fit a 32-bit DNG rational")
        f = Fraction(v).limit_denominator(_INT32_MAX // (math.floor(abs(v)) + 1))
        out += [f.numerator, f.denominator]
    return tuple(out)


def _whole_counts(values: tuple[float, ...], name: str) -> tuple[int, ...]:
    ints = tuple(round(v) for v in values)
    if any(i != v for i, v in zip(ints, values, strict=True)):
        raise ValueError(
            f"{name} must be whole sensor counts to be stored exactly, got {list(values)}"
        )
    return ints


def _check_ascii(text: str, name: str) -> str:
    if not text.isascii() or "\0" in text:
        raise ValueError(f"{name} must be ASCII text without NUL characters, got {text!r}")
    return text


def write_dng(
    path: str | Path,
    mosaic: np.ndarray,
    camera: Camera,
    *,
    make: str = "rawpairs",
    model: str = "simulated",
) -> None:
    """Write ``mosaic`` (uint16 H×W sensor counts, CFA phase ``camera.cfa``) as a DNG at ``path``.

    H and W must be even and at least :data:`MIN_SIDE`; values must fit ``camera.bit_depth``; black
    and white levels must be whole counts. The file is written to a temporary name in the same
    folder, then renamed, so ``path`` never holds a partial file.
    """
    mosaic = np.asarray(mosaic)
    if mosaic.dtype != np.uint16 or mosaic.ndim != 2:
        raise ValueError(
            f"mosaic must be a 2-D uint16 array, got {mosaic.dtype} with shape {mosaic.shape}"
        )
    h, w = mosaic.shape
    if h % 2 or w % 2 or h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(
            f"mosaic must have even sides of at least {MIN_SIDE} pixels (LibRaw reads nothing "
            f"smaller), got {h}×{w}"
        )
    max_count = 2**camera.bit_depth - 1
    peak = int(mosaic.max())
    if peak > max_count:
        raise ValueError(
            f"mosaic holds {peak}, above the {camera.bit_depth}-bit maximum {max_count}"
        )
    black = _whole_counts(camera.black_level, "black_level")
    (white,) = _whole_counts((camera.white_level,), "white_level")
    make = _check_ascii(make, "make")
    model = _check_ascii(model, "model")
    xyz_to_cam = np.asarray(camera.xyz_to_cam, dtype=np.float64).ravel()
    neutral = 1.0 / np.asarray(camera.wb_gains, dtype=np.float64)

    extratags = [
        (_MAKE, "s", 0, make, True),
        (_MODEL, "s", 0, model, True),
        (_CFA_REPEAT_PATTERN_DIM, "H", 2, (2, 2), True),
        (_CFA_PATTERN, "B", 4, camera.cfa.channels, True),
        (_DNG_VERSION_TAG, "B", 4, _DNG_VERSION, True),
        (_DNG_BACKWARD_VERSION_TAG, "B", 4, _DNG_BACKWARD_VERSION, True),
        (_UNIQUE_CAMERA_MODEL, "s", 0, f"{make} {model}", True),
        (_CFA_PLANE_COLOR, "B", 3, (0, 1, 2), True),
        (_CFA_LAYOUT, "H", 1, 1, True),
        (_BLACK_LEVEL_REPEAT_DIM, "H", 2, (2, 2), True),
        (_BLACK_LEVEL, "I", 4, black, True),
        (_WHITE_LEVEL, "I", 1, white, True),
        (_COLOR_MATRIX_1, "2i", 9, _rationals(xyz_to_cam, "xyz_to_cam"), True),
        (_CALIBRATION_ILLUMINANT_1, "H", 1, _D65, True),
        (_AS_SHOT_NEUTRAL, "2I", 3, _rationals(neutral, "1 / wb_gains"), True),
    ]

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tifffile.imwrite(
            tmp,
            mosaic,
            photometric=32803,
            subfiletype=0,
            software="rawpairs",
            metadata=None,
            extratags=extratags,
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
