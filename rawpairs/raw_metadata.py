"""The rules (pure) that turn a RAW file's metadata into a camera: bit depth, white balance
(the file's own, else a fallback) and the colour matrix (a DNG's ColorMatrix, LibRaw's tables,
or one fitted from two LibRaw renders). :func:`rawpairs.raw_files.read_raw` applies them in the
order its docstring gives and records each choice in ``camera.provenance``."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tifffile

from rawpairs.camera import SRGB_TO_XYZ, Camera
from rawpairs.cfa import CFA, pack

__all__ = [
    "bit_depth_for",
    "dng_xyz_to_cam",
    "fallback_white_balance",
    "file_white_balance",
    "fit_color_matrix",
    "gray_world_gains",
    "matrix_candidates",
    "matrix_daylight_gains",
    "with_first_matrix",
    "with_matrix",
]

_D65 = 21
# DNG ColorMatrix tags with their CalibrationIlluminant and CameraCalibration tags.
_DNG_COLOR_MATRICES = (
    ("ColorMatrix1", "CalibrationIlluminant1", "CameraCalibration1"),
    ("ColorMatrix2", "CalibrationIlluminant2", "CameraCalibration2"),
)


def bit_depth_for(white_level: float) -> int:
    """Smallest ``b`` with ``2**b − 1 >= white_level`` (e.g. 1023 → 10, 15000 → 14)."""
    if not 0 < white_level < float("inf"):
        raise ValueError(f"white level must be positive and finite, got {white_level}")
    return math.ceil(white_level).bit_length()


def _usable_gains(values: list[float], desc: str) -> tuple[float, float, float] | None:
    """(R, G, B) multipliers normalised to G = 1, or None if missing, non-positive or all equal."""
    rgb = np.array([values[desc.index(c)] for c in "RGB"], dtype=np.float64)
    if not np.all(np.isfinite(rgb)) or np.any(rgb <= 0):
        return None
    gains = rgb / rgb[1]
    if np.allclose(gains, 1.0, rtol=0.0, atol=1e-6):
        return None
    return (float(gains[0]), 1.0, float(gains[2]))


def gray_world_gains(
    mosaic: np.ndarray, cfa: CFA | str, black_level: tuple[float, ...], white_level: float
) -> tuple[float, float, float] | None:
    """Gray-world white balance: (G/R, 1, G/B) from the channel means of a Bayer mosaic.

    Means are over black-subtracted counts of unsaturated sites (``< white_level``); the two
    green positions are pooled. ``None`` when a channel has no signal (mean ≤ 0).
    """
    planes = pack(np.asarray(mosaic)).astype(np.float64)
    sums = np.zeros(3)
    counts = np.zeros(3)
    for pos, channel in enumerate(CFA.parse(cfa).channels):
        plane = planes[pos]
        valid = plane < white_level
        sums[channel] += float((plane[valid] - black_level[pos]).sum())
        counts[channel] += int(valid.sum())
    if np.any(counts == 0):
        return None
    means = sums / counts
    if np.any(means <= 0):
        return None
    return (float(means[1] / means[0]), 1.0, float(means[1] / means[2]))


def file_white_balance(
    camera_wb: list[float], daylight_wb: list[float], desc: str
) -> tuple[tuple[float, float, float], str] | None:
    """(gains, provenance) of the file's own white balance (as shot, else daylight), or None."""
    for source, values in (
        ("file:camera_whitebalance", camera_wb),
        ("file:daylight_whitebalance", daylight_wb),
    ):
        gains = _usable_gains(values, desc)
        if gains is not None:
            return gains, source
    return None


def matrix_daylight_gains(xyz_to_cam: np.ndarray) -> tuple[float, float, float] | None:
    """The white balance that renders D65 white neutral through a camera's colour matrix:
    ``1 / (xyz_to_cam · XYZ(D65))``, normalised to G = 1 (the DNG camera neutral of the
    matrix's illuminant), rounded to 6 decimals. None if the camera's response to white is not
    positive and finite."""
    neutral = np.asarray(xyz_to_cam, dtype=np.float64) @ (SRGB_TO_XYZ @ np.ones(3))
    if not np.all(np.isfinite(neutral)) or np.any(neutral <= 0):
        return None
    gains = np.round(neutral[1] / neutral, 6)  # to 10⁻⁶: 1, 1, 1 for a matrix made for it
    return (float(gains[0]), 1.0, float(gains[2]))


def fallback_white_balance(
    camera: Camera, mosaic: np.ndarray
) -> tuple[tuple[float, float, float], str]:
    """(gains, provenance) for a file without a white balance, by the rules of :func:`read_raw`."""
    if camera.provenance["xyz_to_cam"] != "fallback:srgb":
        gains = matrix_daylight_gains(np.asarray(camera.xyz_to_cam))
        if gains is not None:
            return gains, "fallback:matrix_d65"
    gains = gray_world_gains(mosaic, camera.cfa, camera.black_level, camera.white_level)
    if gains is not None:
        return gains, "fallback:gray_world"
    return (1.0, 1.0, 1.0), "fallback:unity"


def fit_color_matrix(camera_rgb: np.ndarray, srgb: np.ndarray) -> np.ndarray | None:
    """The 3×3 camera RGB → linear sRGB matrix ``M`` with ``srgb ≈ camera_rgb · Mᵀ``, or None.

    Inputs: two H×W×3 linear renders of the same image on the same scale (e.g. LibRaw's 16-bit
    output in its camera colour space and in sRGB, same white balance, gamma 1). Pixels where
    either render is clipped (a channel ≤ 1% or ≥ 92% of the largest value) are left out; the
    rest give a least-squares fit, rounded to 4 decimals (the precision of LibRaw's tables). None
    when fewer than 1000 pixels remain, the camera colours do not span three dimensions, or the
    fit misses a pixel by more than 0.1% of full scale (the renders are not related by a matrix).
    """
    cam = np.asarray(camera_rgb, dtype=np.float64).reshape(-1, 3)
    out = np.asarray(srgb, dtype=np.float64).reshape(-1, 3)
    if cam.shape != out.shape:
        raise ValueError(f"renders differ in shape: {camera_rgb.shape} vs {srgb.shape}")
    full = max(float(cam.max(initial=0)), float(out.max(initial=0)))
    if full <= 0:
        return None
    lo, hi = 0.01 * full, 0.92 * full
    ok = (cam.min(1) > lo) & (cam.max(1) < hi) & (out.min(1) > lo) & (out.max(1) < hi)
    if ok.sum() < 1000:
        return None
    a, b = cam[ok] / full, out[ok] / full
    singular = np.linalg.svd(a, compute_uv=False)
    if singular[-1] < 1e-6 * singular[0]:
        return None
    matrix = np.linalg.lstsq(a, b, rcond=None)[0].T
    if np.abs(a @ matrix.T - b).max() > 1e-3:
        return None
    return np.round(matrix, 4)


def with_matrix(camera: Camera, source: str, matrix: np.ndarray, *, cam_to_srgb: bool) -> Camera:
    """``camera`` with its colour matrix from ``source``: ``matrix`` is XYZ → camera, or camera →
    linear sRGB when ``cam_to_srgb`` (:meth:`Camera.from_cam_to_srgb`). ``ValueError`` for a
    matrix a :class:`Camera` refuses (all zeros, singular, mapping white to zero)."""
    provenance = {**camera.provenance, "xyz_to_cam": source}
    if not cam_to_srgb:
        return camera.replace(xyz_to_cam=matrix, provenance=provenance)
    fields = {f.name: getattr(camera, f.name) for f in dataclasses.fields(camera)}
    del fields["xyz_to_cam"]
    return Camera.from_cam_to_srgb(matrix, **{**fields, "provenance": provenance})


def _nonzero(m: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(m)) and np.any(m != 0))


def dng_xyz_to_cam(tags: tifffile.TiffTags) -> tuple[str, np.ndarray] | None:
    """XYZ → camera from a DNG's IFD0: ``diag(AnalogBalance) @ CameraCalibration @ ColorMatrix``.

    Of ColorMatrix1/2, the one calibrated for D65 is taken, else the last present (DNG writers
    put the higher colour temperature second). 3-colour matrices only.
    """
    found = []
    for cm_name, illum_name, cc_name in _DNG_COLOR_MATRICES:
        if cm_name not in tags:
            continue
        cm = np.array(tags[cm_name].value, dtype=np.float64)
        if cm.size != 18:  # 9 (numerator, denominator) pairs
            continue
        cm = (cm[0::2] / cm[1::2]).reshape(3, 3)
        if cc_name in tags:
            cc = np.array(tags[cc_name].value, dtype=np.float64)
            if cc.size == 18:
                cm = (cc[0::2] / cc[1::2]).reshape(3, 3) @ cm
        illuminant = int(tags[illum_name].value) if illum_name in tags else None
        found.append((cm_name, illuminant, cm))
    if not found:
        return None
    name, _, cm = next((f for f in found if f[1] == _D65), found[-1])
    if "AnalogBalance" in tags:
        ab = np.array(tags["AnalogBalance"].value, dtype=np.float64)
        if ab.size == 6:
            cm = np.diag(ab[0::2] / ab[1::2]) @ cm
    return f"file:{name}", cm


def matrix_candidates(
    dng_matrix: tuple[str, np.ndarray] | None, rgb_xyz: np.ndarray, cam_to_srgb: np.ndarray
) -> list[tuple[str, np.ndarray, bool]]:
    """The colour matrices a RAW file offers, in the order they are tried: (provenance, matrix,
    whether it is camera → sRGB rather than XYZ → camera). A DNG's own ColorMatrix
    (:func:`dng_xyz_to_cam`), LibRaw's ``rgb_xyz_matrix`` when it is not all zeros, LibRaw's
    camera → sRGB ``color_matrix``."""
    candidates = [(*dng_matrix, False)] if dng_matrix is not None else []
    if _nonzero(rgb_xyz):
        candidates.append(("file:rgb_xyz_matrix", rgb_xyz, False))
    candidates.append(("file:color_matrix", cam_to_srgb, True))
    return candidates


def with_first_matrix(camera: Camera, candidates: list[tuple[str, np.ndarray, bool]]) -> Camera:
    """``camera`` with the first of ``candidates`` (:func:`matrix_candidates`) that gives a valid
    camera (:func:`with_matrix`); unchanged when none does."""
    for source, matrix, inverse in candidates:
        try:
            return with_matrix(camera, source, matrix, cam_to_srgb=inverse)
        except ValueError:  # singular or white-to-zero matrix: try the next source
            continue
    return camera
