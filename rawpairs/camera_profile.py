"""A camera profile from one camera's measured files: what a measurement is
(:class:`FileMeasurement`, :class:`NoiseEstimate`, :class:`CameraIdentity`), whether two files
are one camera (:func:`identity`, :func:`identity_difference`), and the profile with its
``calibration`` report (:func:`make_profile`: measurements →
:class:`rawpairs.priors.CapturePriors`). Pure: :mod:`rawpairs.calibrate` reads and measures the
files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from rawpairs.camera import Camera
from rawpairs.priors import Capture, CapturePriors
from rawpairs.raw_metadata import bit_depth_for

__all__ = [
    "CameraIdentity",
    "FileMeasurement",
    "NoiseEstimate",
    "identity",
    "identity_difference",
    "make_profile",
]


@dataclass(frozen=True)
class NoiseEstimate:
    """Noise variances (normalised units) with the points they were fitted to.

    ``levels``, ``variances``: per signal-level bin, the mean level and the estimated variance
    (each in [0, 1]); ``blocks``: how many flat-enough blocks gave each point.
    """

    shot: float
    read: float
    levels: tuple[float, ...]
    variances: tuple[float, ...]
    blocks: tuple[int, ...]


@dataclass(frozen=True)
class CameraIdentity:
    """What makes two files the same camera: make and model where LibRaw reports them, else the
    sensor format (CFA, black and white levels, colour matrix, visible size)."""

    make: str
    model: str
    cfa: str
    black_level: tuple[float, ...]
    white_level: float
    xyz_to_cam: tuple[float, ...]
    size: tuple[int, int]


@dataclass(frozen=True)
class FileMeasurement:
    """What :func:`measure_file` learns from one RAW file."""

    name: str
    camera: Camera
    identity: CameraIdentity
    digital_gain: float
    estimated_noise: NoiseEstimate | None
    tagged_noise: tuple[float, float] | None
    iso: float | None
    shutter_s: float | None
    aperture: float | None


def identity(camera: Camera, make: str, model: str, size: tuple[int, int]) -> CameraIdentity:
    """The :class:`CameraIdentity` of a file read with this camera, make, model and size."""
    matrix = tuple(round(v, 4) for row in camera.xyz_to_cam for v in row)
    return CameraIdentity(
        make.strip(),
        model.strip(),
        camera.cfa.value,
        tuple(camera.black_level),
        camera.white_level,
        matrix,
        (int(size[0]), int(size[1])),
    )


def identity_difference(a: CameraIdentity, b: CameraIdentity) -> str | None:
    """How two files' cameras differ (a short phrase), or ``None`` when they are one camera.

    With make and model on both, they decide alone (one camera may store other levels in another
    mode); otherwise CFA, black and white levels, colour matrix and visible size must all match.
    """
    if a.model and b.model:
        if (a.make, a.model) != (b.make, b.model):
            return f"camera {a.make} {a.model} vs {b.make} {b.model}"
        return None
    if bool(a.model) != bool(b.model):
        return f"camera {a.make} {a.model or '(none)'} vs {b.make} {b.model or '(none)'}"
    for name, label in (
        ("cfa", "CFA"),
        ("black_level", "black level"),
        ("white_level", "white level"),
        ("xyz_to_cam", "colour matrix"),
        ("size", "sensor size"),
    ):
        va, vb = getattr(a, name), getattr(b, name)
        if va != vb:
            if name == "xyz_to_cam":
                return f"colour matrix (first row {list(va[:3])} vs {list(vb[:3])})"
            return f"{label} {va} vs {vb}"
    return None


def _most_common(values: list[Any]) -> tuple[Any, Counter]:
    counted = Counter(values)
    return counted.most_common(1)[0][0], counted


def make_profile(measurements: list[FileMeasurement], name: str) -> tuple[CapturePriors, list[str]]:
    """The camera profile of one camera's measured files, and its warnings (one line each).

    Format values (CFA, levels, colour matrix) are the files' own; where files of one model differ
    (e.g. a camera's lossy mode with another white level), the most common value is kept and a
    warning says so. Each file gives one :class:`Capture`: its white balance, its exposure gain,
    and its noise: the NoiseProfile tag where the file has one, else the estimate, else none
    (those cameras then draw noise from the default priors). ``ValueError`` for no measurement.
    """
    if not measurements:
        raise ValueError("no files measured")
    warnings: list[str] = []
    if len(measurements) == 1:
        warnings.append(
            f"one file ({measurements[0].name}): white balance, exposure and noise are single "
            "points, not distributions"
        )
    cameras = [m.camera for m in measurements]
    fixed = _format_values(cameras, warnings)
    chosen = next(
        c for c in cameras if c.xyz_to_cam == fixed["xyz_to_cam"]
    )  # whose matrix (and its provenance) is kept
    matrix_source = chosen.provenance.get("xyz_to_cam", "unknown")
    if matrix_source == "fallback:srgb":
        warnings.append("no colour matrix in the files: camera RGB is taken as linear sRGB")
    captures, files = _captures(measurements)
    unmeasured = [f["file"] for f in files if f["noise_source"] == "none"]
    if unmeasured:
        warnings.append(
            f"noise not measurable in {len(unmeasured)} file(s) ({', '.join(unmeasured[:3])}): "
            "those captures draw noise from the default priors"
        )
    white = fixed["white_level"]
    priors = CapturePriors(
        cfa=(fixed["cfa"].value,),
        bit_depth=bit_depth_for(white),
        black_level=fixed["black_level"],
        white_level=white,
        xyz_to_cam=fixed["xyz_to_cam"],
        captures=tuple(captures),
        profile=name,
        calibration=_calibration(measurements, files, matrix_source, warnings),
    )
    return priors, warnings


def _format_values(cameras: list[Camera], warnings: list[str]) -> dict[str, Any]:
    """The CFA, black level, white level and colour matrix most of ``cameras`` have (by field
    name); a warning in ``warnings`` for each that differs between files."""
    fixed: dict[str, Any] = {}
    for field_name, label in (
        ("cfa", "CFA"),
        ("black_level", "black level"),
        ("white_level", "white level"),
        ("xyz_to_cam", "colour matrix"),
    ):
        value, counted = _most_common([getattr(c, field_name) for c in cameras])
        fixed[field_name] = value
        if len(counted) > 1:
            shown = value.value if field_name == "cfa" else value
            warnings.append(
                f"{label} differs between files ({len(counted)} values); the profile keeps the "
                f"most common, {shown} ({counted[value]} of {len(cameras)} files)"
            )
    return fixed


def _captures(
    measurements: list[FileMeasurement],
) -> tuple[list[Capture], list[dict[str, Any]]]:
    """One :class:`Capture` per measured file (white balance, exposure gain clamped to
    [1/64, 64], noise: the NoiseProfile tag, else the estimate, else none) and its report."""
    captures, files = [], []
    for m in measurements:
        noise, source = None, "none"
        if m.tagged_noise is not None:
            noise, source = m.tagged_noise, "file:NoiseProfile"
        elif m.estimated_noise is not None:
            noise, source = (
                (m.estimated_noise.shot, m.estimated_noise.read),
                "neighbour_differences",
            )
        captures.append(
            Capture(
                red_gain=m.camera.wb_gains[0],
                blue_gain=m.camera.wb_gains[2],
                digital_gain=min(max(m.digital_gain, 1 / 64), 64.0),
                noise_shot=None if noise is None else noise[0],
                noise_read=None if noise is None else noise[1],
            )
        )
        files.append(_file_report(m, source))
    return captures, files


def _calibration(
    measurements: list[FileMeasurement],
    files: list[dict[str, Any]],
    matrix_source: str,
    warnings: list[str],
) -> dict[str, Any]:
    """The profile's ``calibration`` report: the camera, each file, where the matrix, white
    balance, noise and exposure came from, and the warnings."""
    ident = measurements[0].identity
    return {
        "camera": {"make": ident.make, "model": ident.model, "size": list(ident.size)},
        "files": files,
        "xyz_to_cam": matrix_source,
        "wb_gains": sorted({m.camera.provenance.get("wb_gains", "unknown") for m in measurements}),
        "noise": _noise_summary(measurements, files),
        "exposure": "digital_gain = rawpairs.isp.auto_exposure of each file (LibRaw's 99th-"
        "percentile rule); iso, shutter_s, aperture as LibRaw reports them (null: not reported)",
        "warnings": warnings,
    }


def _file_report(m: FileMeasurement, noise_source: str) -> dict[str, Any]:
    est = m.estimated_noise
    return {
        "file": m.name,
        "wb_gains": list(m.camera.wb_gains),
        "wb_source": m.camera.provenance.get("wb_gains", "unknown"),
        "digital_gain": m.digital_gain,
        "iso": m.iso,
        "shutter_s": m.shutter_s,
        "aperture": m.aperture,
        "noise_source": noise_source,
        "noise_tag": None if m.tagged_noise is None else list(m.tagged_noise),
        "noise_estimate": None
        if est is None
        else {
            "shot": est.shot,
            "read": est.read,
            "levels": list(est.levels),
            "variances": list(est.variances),
            "blocks": list(est.blocks),
        },
    }


def _noise_summary(measurements: list[FileMeasurement], files: list[dict[str, Any]]) -> dict:
    """Which noise source was used, and how the estimate compares with the tag where both exist."""
    agreement = []
    for m in measurements:
        if m.tagged_noise is not None and m.estimated_noise is not None:
            shot, read = m.tagged_noise
            agreement.append(
                {
                    "file": m.name,
                    "shot_ratio": m.estimated_noise.shot / shot if shot > 0 else None,
                    "read_ratio": m.estimated_noise.read / read if read > 0 else None,
                }
            )
    return {
        "sources": dict(Counter(f["noise_source"] for f in files)),
        "method": "DNG NoiseProfile where present, else estimated from differences of "
        "neighbouring same-colour sites (rawpairs.calibrate.neighbour_noise)",
        "estimate_vs_tag": agreement,
    }
