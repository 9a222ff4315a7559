"""Camera profiles: measure one real camera from its RAW files, for ``rawpairs build --camera``.

``rawpairs calibrate --src DIR --out my_camera.json`` reads every RAW file of one camera and writes
a :class:`rawpairs.priors.CapturePriors` JSON (the form ``--camera`` takes) that fixes the CFA,
black and white levels, bit depth and colour matrix, and lists each file's capture conditions
(:class:`rawpairs.priors.Capture`: as-shot white balance, exposure gain, noise), from which every
simulated camera draws one. Its ``calibration`` object says where each value came from and what
could not be measured.

Pure estimation (numpy in, numbers out): :func:`neighbour_noise` and :func:`fit_noise_line` (noise
against signal level), :func:`noise_profile_levels` (a DNG NoiseProfile tag); whether two files
are one camera and the profile of their measurements are :mod:`rawpairs.camera_profile`.
File reading is at the edge: :func:`measure_file`, :func:`calibrate` (a folder → written profile).

Noise model (as :mod:`rawpairs.noise`): a site of normalised level ``x`` in [0, 1] (black removed,
divided by white − black) has variance ``shot · x + read``. The DNG NoiseProfile tag (Adobe DNG
Specification 1.6, tag 51041: per colour plane ``S``, ``O`` with variance ``S · x + O``) is that
model; where a file has none, it is estimated from the file (:func:`neighbour_noise`).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import rawpy
import tifffile

from rawpairs.camera import Camera
from rawpairs.camera_profile import (
    FileMeasurement,
    NoiseEstimate,
    identity,
    identity_difference,
    make_profile,
)
from rawpairs.errors import InputError
from rawpairs.isp import auto_exposure
from rawpairs.priors import MAX_NOISE_VARIANCE, CapturePriors, profile_name
from rawpairs.raw_files import read_raw
from rawpairs.sources import RAW_EXTENSIONS
from rawpairs.storage import write_text_atomic

__all__ = [
    "CalibrationError",
    "calibrate",
    "fit_noise_line",
    "measure_file",
    "neighbour_noise",
    "noise_profile_levels",
]

NOISE_PROFILE_TAG = 51041  # DNG NoiseProfile
BLOCK = 8  # sites per side of a noise block, in one colour plane
LEVEL_BINS = 16  # signal-level bins of the noise fit
MIN_BLOCKS = 12  # blocks a level bin needs to give a variance
QUANTILE = 0.2  # of the block variances in a bin: flat blocks are the quietest
# The priors fields a profile file holds (the others keep their defaults when it is read).
PROFILE_KEYS = (
    "cfa",
    "bit_depth",
    "black_level",
    "white_level",
    "xyz_to_cam",
    "captures",
    "profile",
    "calibration",
)


class CalibrationError(ValueError):
    """Input that cannot be calibrated: the message is one line naming the file and the cause."""


# Pure estimation -------------------------------------------------------------------------------


def _block_stats(plane: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean level, residual variance) of each BLOCK×BLOCK block of one colour plane whose sites
    and neighbours are all ``valid``. The residual is each site minus the mean of its four
    neighbours in the plane, which removes the signal wherever it is locally linear."""
    inner = plane[1:-1, 1:-1]
    around = (plane[:-2, 1:-1] + plane[2:, 1:-1] + plane[1:-1, :-2] + plane[1:-1, 2:]) / 4.0
    residual = inner - around
    ok = valid[1:-1, 1:-1] & valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2]
    ok &= valid[1:-1, 2:]
    h, w = (inner.shape[0] // BLOCK) * BLOCK, (inner.shape[1] // BLOCK) * BLOCK

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).swapaxes(1, 2)

    keep = blocks(ok).all(axis=(2, 3)).ravel()
    levels = blocks(inner).mean(axis=(2, 3)).ravel()
    variances = blocks(residual).var(axis=(2, 3)).ravel()
    return levels[keep], variances[keep]


@lru_cache(maxsize=4)
def _quantile_factor(quantile: float) -> float:
    """The ``quantile`` of the block residual variances of pure unit-variance Gaussian noise
    (a fixed, seeded draw: deterministic), so that ``quantile / factor`` estimates the variance."""
    rng = np.random.default_rng(20190327)
    plane = rng.standard_normal((8 * BLOCK * 16 + 2, 8 * BLOCK * 16 + 2))
    _, variances = _block_stats(plane, np.ones(plane.shape, dtype=bool))
    return float(np.quantile(variances, quantile))


def fit_noise_line(
    levels: np.ndarray, variances: np.ndarray, weights: np.ndarray
) -> tuple[float, float]:
    """(shot, read) ≥ 0 of ``variance = shot · level + read``, weighted least squares.

    A negative intercept (or slope) is set to 0 and the other term refitted alone. Needs at least
    one point with weight > 0; with one point (or one level) the variance is all read noise.
    """
    x, y, w = (np.asarray(a, dtype=np.float64) for a in (levels, variances, weights))
    if x.size == 0 or not np.any(w > 0):
        raise ValueError("no noise points to fit")
    if np.ptp(x[w > 0]) > 0:
        a = np.stack([x, np.ones_like(x)], axis=1) * np.sqrt(w)[:, None]
        shot, read = np.linalg.lstsq(a, y * np.sqrt(w), rcond=None)[0]
        if shot >= 0 and read >= 0:
            return float(shot), float(read)
        if read < 0 and np.sum(w * x * x) > 0:
            return max(float(np.sum(w * x * y) / np.sum(w * x * x)), 0.0), 0.0
    return 0.0, max(float(np.sum(w * y) / np.sum(w)), 0.0)


def neighbour_noise(mosaic: np.ndarray, camera: Camera) -> NoiseEstimate | None:
    """Shot and read noise of one Bayer mosaic, from differences of neighbouring same-colour sites.

    Each colour plane is normalised (black removed, divided by white − black); each site is
    compared with the mean of its four same-colour neighbours, in BLOCK×BLOCK blocks that hold
    neither clipped sites (at 0 counts or at white) nor their neighbours. Blocks are binned by
    mean level (LEVEL_BINS bins of equal level ratio from the lowest positive level to the
    highest, so the variance changes by a bounded factor across a bin); in each bin with at
    least MIN_BLOCKS blocks the QUANTILE of the block variances (the flattest blocks: texture only
    adds variance), scaled by what that quantile is for pure Gaussian noise, estimates the noise
    variance there.
    Quantisation (1/12 count²) is taken out, since simulated mosaics are quantised again. Then
    :func:`fit_noise_line`. ``None`` when fewer than two bins qualify (a too small, too flat or
    too clipped image). Cross-talk, demosaicing in camera or lossy compression (as in some Kodak
    files) make neighbouring sites correlated and the estimate low.
    """
    counts = np.asarray(mosaic)
    factor = _quantile_factor(QUANTILE)
    spans = camera.white_level - np.array(camera.black_level)
    quantisation = float(np.mean(1.0 / (12.0 * spans * spans)))  # variance of rounding to counts
    all_levels, all_variances = [], []
    for pos in range(4):
        y, x = divmod(pos, 2)
        raw = counts[y::2, x::2]
        plane = (raw.astype(np.float64) - camera.black_level[pos]) / spans[pos]
        valid = (raw > 0) & (raw < camera.white_level)
        levels, variances = _block_stats(plane, valid)
        all_levels.append(levels)
        all_variances.append(variances)
    levels, variances = np.concatenate(all_levels), np.concatenate(all_variances)
    if levels.size < 2 * MIN_BLOCKS:
        return None
    low = max(float(levels.min()), 1e-4)
    edges = np.geomspace(low, max(float(levels.max()), 2 * low), LEVEL_BINS + 1)
    which = np.clip(np.searchsorted(edges, levels, side="right") - 1, 0, LEVEL_BINS - 1)
    points = []
    for b in range(LEVEL_BINS):
        in_bin = (which == b) & (levels >= low)
        n = int(in_bin.sum())
        if n >= MIN_BLOCKS:
            v = float(np.quantile(variances[in_bin], QUANTILE)) / factor - quantisation
            points.append((float(levels[in_bin].mean()), max(v, 0.0), n))
    if len(points) < 2:
        return None
    lv, var, n = (np.array(c) for c in zip(*points, strict=True))
    # Each point's relative error is about the same (a quantile of ~n blocks): weigh by n / v².
    shot, read = fit_noise_line(lv, var, n / np.maximum(var, 1e-12) ** 2)
    shot, read = min(shot, MAX_NOISE_VARIANCE), min(read, MAX_NOISE_VARIANCE)
    return NoiseEstimate(shot, read, tuple(lv.tolist()), tuple(var.tolist()), tuple(n.tolist()))


def noise_profile_levels(values: Any) -> tuple[float, float] | None:
    """(shot, read) from a DNG NoiseProfile tag's values: ``S, O`` pairs, one per colour plane
    (or one pair for all), averaged over planes. ``None`` when malformed or outside [0, 1]."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2 or v.size % 2 or not np.all(np.isfinite(v)):
        return None
    shot, read = float(v[0::2].mean()), float(v[1::2].mean())
    if not (0 <= shot <= MAX_NOISE_VARIANCE and 0 <= read <= MAX_NOISE_VARIANCE):
        return None
    return shot, read


# File reading ----------------------------------------------------------------------------------


def _noise_tag(path: Path) -> tuple[float, float] | None:
    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(NOISE_PROFILE_TAG)
            return None if tag is None else noise_profile_levels(tag.value)
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError, TypeError):
        return None  # not a TIFF-based file


def _exposure_info(path: Path) -> tuple[float | None, float | None, float | None]:
    """(ISO, shutter in seconds, f-number) as LibRaw reports them; None where it reports 0."""
    try:
        with rawpy.imread(str(path)) as raw:
            other = raw.other
            values = (other.iso_speed, other.shutter_speed, other.aperture)
    except (rawpy.LibRawError, OSError, AttributeError):
        return None, None, None
    return tuple(float(v) if v and math.isfinite(v) and v > 0 else None for v in values)


def measure_file(path: str | Path) -> FileMeasurement:
    """Read one RAW file and measure it; raises :class:`rawpairs.errors.InputError` for bad input
    (unreadable, not Bayer: :func:`rawpairs.raw_files.read_raw`)."""
    path = Path(path)
    capture = read_raw(path)  # non-square pixels are measured as stored: sites are what count
    camera = capture.camera
    iso, shutter_s, aperture = _exposure_info(path)
    return FileMeasurement(
        name=path.name,
        camera=camera,
        identity=identity(camera, capture.make, capture.model, capture.mosaic.shape),
        digital_gain=auto_exposure(capture.mosaic, camera),
        estimated_noise=neighbour_noise(capture.mosaic, camera),
        tagged_noise=_noise_tag(path),
        iso=iso,
        shutter_s=shutter_s,
        aperture=aperture,
    )


def raw_files(src: Path) -> list[Path]:
    """The RAW files (by extension) of a folder, not recursing, sorted by name; or the file."""
    if src.is_file():
        return [src]
    return sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in RAW_EXTENSIONS)


def calibrate(src: str | Path, out: str | Path) -> tuple[CapturePriors, list[str]]:
    """Measure the RAW files of ``src`` (one camera) and write their profile to ``out``.

    Returns (profile, warnings). Raises :class:`CalibrationError` (one line, naming the file and
    the cause) for a missing folder, no RAW files, a file that cannot be read or is not Bayer,
    or files of two cameras; ``out`` is then untouched. The JSON is written to a temporary file
    beside ``out`` and renamed, so ``out`` never holds a partial profile.
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise CalibrationError(f"{src}: no such file or folder")
    if not out.parent.is_dir():
        raise CalibrationError(f"{out}: its folder {out.parent} does not exist")
    files = raw_files(src)
    if not files:
        raise CalibrationError(f"{src}: no RAW files (by extension) in this folder")
    measurements = []
    for path in files:
        try:
            m = measure_file(path)
        except InputError as err:
            raise CalibrationError(f"{path}: {err.cause}") from err
        if measurements:
            differ = identity_difference(measurements[0].identity, m.identity)
            if differ is not None:
                raise CalibrationError(
                    f"{src}: mixes cameras: {measurements[0].name} and {m.name} differ in "
                    f"{differ}; calibrate one camera's files at a time"
                )
        measurements.append(m)
    profile, warnings = make_profile(measurements, profile_name(out.name))
    written = {k: v for k, v in profile.to_dict().items() if k in PROFILE_KEYS}
    write_text_atomic(out, json.dumps(written, indent=1, sort_keys=True) + "\n")
    return profile, warnings
