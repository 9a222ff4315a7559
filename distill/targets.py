"""The teacher's side of an example: the RGB crop as the teacher's input, the forward-ISP render
of the student's RAW (the evaluation's upper reference), and the warning for a sample smaller
than the crop (both sides zero-padded)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from distill.pair import Pair, pad
from rawpairs import cfa as cfa_ops
from rawpairs.camera import Camera
from rawpairs.cfa import CFA
from rawpairs.isp import process

__all__ = ["SmallSampleWarning", "isp_render", "teacher_rgb", "warn_small_sample"]


class SmallSampleWarning(UserWarning):
    """A sample smaller than the crop was zero-padded (black RAW and RGB) at the bottom/right."""


def warn_small_sample(pair: Pair, window: Sequence[int], crop: int, stacklevel: int) -> None:
    """:class:`SmallSampleWarning` naming ``pair`` whose RGGB ``window`` (rows, columns) is
    less than the ``crop``; ``stacklevel`` as :func:`warnings.warn`'s, counted from the caller
    (``distill.examples.make_example``'s caller, whatever the depth)."""
    height, width = pair.rgb.shape[:2]
    warnings.warn(
        f"sample {pair.key!r} ({height}×{width}, {pair.camera.cfa.value}) holds only a "
        f"{window[0]}×{window[1]} RGGB window, less than the {crop}×{crop} crop: zero-padded at "
        "the bottom/right",
        SmallSampleWarning,
        stacklevel=stacklevel + 1,
    )


def teacher_rgb(rgb: np.ndarray, crop: int, teacher_size: int) -> np.ndarray:
    """uint8 crop → float32 [3, teacher_size, teacher_size] in [0, 1], zero-padded to ``crop``
    at the bottom/right, then resized (INTER_AREA)."""
    rgb_f = pad(rgb.astype(np.float32) / np.float32(255), crop, crop, (0, 1))
    if teacher_size != crop:
        rgb_f = cv2.resize(rgb_f, (teacher_size, teacher_size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb_f.transpose(2, 0, 1))


def isp_render(planes: np.ndarray, camera: Camera, size: int) -> np.ndarray:
    """RGGB planes (normalised, clipped here to [0, 1]) → forward-ISP sRGB, float32 3×size×size."""
    mosaic = cfa_ops.unpack(np.clip(planes, 0, 1).astype(np.float32))
    rgb = process(mosaic, replace(camera, cfa=CFA.RGGB), start="linear", stop="srgb")
    if rgb.shape[0] != size:
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
