"""Read the two kinds of input: camera RAW files (through rawpy/LibRaw) and ordinary photos.

- :func:`read_raw`: the visible Bayer mosaic, exactly as stored, with a validated
  :class:`rawpairs.Camera` whose every value records where it came from (``provenance``).
- :func:`render_libraw`: LibRaw's own rendering of the same file, aligned pixel for pixel with the
  mosaic (a reference ISP).
- :func:`read_rgb`: a photo as uint8 RGB.

Every failure is an :class:`rawpairs.errors.InputError` naming the file and the cause in one line.
RAW files keep the sensor's orientation (LibRaw's ``sizes.flip`` is *not* applied), because
rotating a mosaic changes its CFA phase; photos are turned upright by their EXIF orientation.
``docs/sources.md`` lists the rules, fallbacks and provenance strings.

rawpy must run in the main process or in ``spawn``/``forkserver`` workers: LibRaw's OpenMP can
deadlock in a ``fork``ed child.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal
from warnings import warn

import cv2
import numpy as np
import rawpy
import tifffile

from rawpairs.camera import SRGB_TO_XYZ, XYZ_TO_SRGB, Camera
from rawpairs.cfa import CFA, cfa_from_rawpy, pack
from rawpairs.errors import CorruptInputError, InputError, UnsupportedInputError
from rawpairs.headers import MAX_PIXELS as DEFAULT_MAX_PIXELS
from rawpairs.headers import jpeg_size
from rawpairs.tone import decode_gamma, encode_gamma

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "RAW_EXTENSIONS",
    "RGB_EXTENSIONS",
    "Photo",
    "RawCapture",
    "bit_depth_for",
    "fit_color_matrix",
    "gray_world_gains",
    "matrix_daylight_gains",
    "read_photo",
    "read_raw",
    "read_rgb",
    "read_stored_jpeg",
    "render_libraw",
    "source_kind",
]

# Extensions of the RAW formats LibRaw reads (lowercase, with the dot). Files are identified by
# content, so a listed extension is an invitation to try, not a promise: non-Bayer sensors
# (Sigma Foveon .x3f, Fuji X-Trans .raf, linear DNGs) are refused by read_raw.
RAW_EXTENSIONS = frozenset(
    {
        ".3fr", ".ari", ".arw", ".bay", ".cap", ".cr2", ".cr3", ".crw", ".cs1", ".dc2", ".dcr",
        ".dcs", ".dng", ".drf", ".eip", ".erf", ".fff", ".gpr", ".iiq", ".k25", ".kc2", ".kdc",
        ".mdc", ".mef", ".mfw", ".mos", ".mrw", ".nef", ".nrw", ".orf", ".ori", ".pef", ".ptx",
        ".pxn", ".qtk", ".raf", ".raw", ".rw2", ".rwl", ".sr2", ".srf", ".srw", ".sti", ".x3f",
    }
)  # fmt: skip
RGB_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"})

# Leading bytes (offset, signature) of the RAW containers LibRaw reads. A file LibRaw rejects
# that starts with none of them is not a RAW file at all (corrupt); one that does may be a real
# RAW of an unsupported camera, or damaged (LibRaw cannot tell).
_RAW_SIGNATURES = (
    (0, b"II*\x00"),  # TIFF little-endian: DNG, NEF, CR2, ARW, PEF, KDC, IIQ, 3FR, ...
    (0, b"MM\x00*"),  # TIFF big-endian
    (0, b"IIRO"),  # Olympus ORF
    (0, b"IIRS"),
    (0, b"MMOR"),
    (0, b"IIU\x00"),  # Panasonic RW2 / RAW / RWL
    (0, b"FUJIFILM"),  # Fuji RAF
    (6, b"HEAPCCDR"),  # Canon CRW (CIFF)
    (4, b"ftypcrx "),  # Canon CR3
    (0, b"FOVb"),  # Sigma X3F
    (0, b"\x00MRM"),  # Minolta MRW
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_D65 = 21
# DNG ColorMatrix tags with their CalibrationIlluminant and CameraCalibration tags.
_DNG_COLOR_MATRICES = (
    ("ColorMatrix1", "CalibrationIlluminant1", "CameraCalibration1"),
    ("ColorMatrix2", "CalibrationIlluminant2", "CameraCalibration2"),
)
# The LibRaw rendering of render_libraw (see its docstring).
_LIBRAW_RENDER = {
    "demosaic_algorithm": rawpy.DemosaicAlgorithm.AHD,
    "use_camera_wb": True,
    "use_auto_wb": False,
    "no_auto_bright": True,
    "adjust_maximum_thr": 0.0,
    "output_color": rawpy.ColorSpace.sRGB,
    "output_bps": 8,
    "gamma": (2.4, 12.92),
    "user_flip": 0,
}


def source_kind(path: str | Path) -> Literal["raw", "rgb"] | None:
    """``"raw"``, ``"rgb"`` or ``None`` from the file extension (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    if suffix in RAW_EXTENSIONS:
        return "raw"
    if suffix in RGB_EXTENSIONS:
        return "rgb"
    return None


@dataclass(frozen=True)
class RawCapture:
    """A RAW file's visible mosaic and its camera model.

    ``mosaic``: uint16 H×W sensor counts of LibRaw's visible area (``raw_image_visible``), a copy
    owned by this object, in sensor orientation; a trailing odd row or column is dropped so that
    H and W are even (the CFA phase is unchanged). ``camera``: CFA phase of ``mosaic[0, 0]``,
    levels, white balance and colour matrix with ``provenance``. ``make``/``model``: from the
    file's TIFF IFD0 (DNG and most RAW formats), ``""`` for non-TIFF containers (e.g. CRW).
    ``pixel_aspect``: width ÷ height of one sensor site (LibRaw's ``sizes.pixel_aspect``; 1 for
    square pixels, 1.535 for the Kodak DC120); the mosaic is *not* resampled here.
    """

    mosaic: np.ndarray
    camera: Camera
    make: str
    model: str
    pixel_aspect: float = 1.0


# Errors ------------------------------------------------------------------------------------


def _require_kind(path: Path, kind: Literal["raw", "rgb"]) -> None:
    if source_kind(path) != kind:
        allowed = RAW_EXTENSIONS if kind == "raw" else RGB_EXTENSIONS
        what = "RAW" if kind == "raw" else "photo"
        raise UnsupportedInputError(
            path,
            f"extension {path.suffix!r} is not a known {what} extension "
            f"({' '.join(sorted(allowed))})",
        )


def _read_head(path: Path, n: int = 16) -> bytes:
    """First ``n`` bytes; missing, unreadable and empty files raise the matching InputError."""
    try:
        with path.open("rb") as f:
            head = f.read(n)
    except OSError as e:
        raise InputError(path, f"cannot open: {e.strerror or e}") from None
    if not head:
        raise CorruptInputError(path, "empty file (0 bytes)")
    return head


def _has_raw_signature(head: bytes) -> bool:
    return any(head[off : off + len(sig)] == sig for off, sig in _RAW_SIGNATURES)


def _libraw_message(e: Exception) -> str:
    msg = e.args[0] if e.args else ""
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return str(msg) or type(e).__name__


@contextmanager
def _open_raw(path: Path) -> Iterator[rawpy.RawPy]:
    """``rawpy.imread`` with LibRaw's errors (while opening or while used) mapped to InputErrors.

    What the decoders print while the file is open is captured (file descriptor 2): a warning of
    libjpeg (lossy Kodak KDC, DNGs with JPEG tiles) or of LibRaw's data checks means it decoded
    damaged data by inventing pixels, so it is a :class:`CorruptInputError` naming the file and the
    decoder's first message, also when LibRaw itself reports no error.
    """
    head = _read_head(path)
    with _captured_stderr() as lines:
        try:
            with rawpy.imread(str(path)) as raw:
                yield raw
        except rawpy.LibRawFileUnsupportedError as e:
            if not _has_raw_signature(head):
                raise CorruptInputError(
                    path, f"not a RAW file: no known RAW signature at its start ({head[:8]!r})"
                ) from e
            raise UnsupportedInputError(
                path,
                "LibRaw cannot decode it (unsupported camera or format, or a damaged file): "
                + _libraw_message(e),
            ) from e
        except (rawpy.LibRawIOError, rawpy.LibRawDataError) as e:
            raise CorruptInputError(
                path, f"damaged or truncated RAW data (LibRaw: {_libraw_message(e)})"
            ) from e
        except rawpy.LibRawError as e:
            raise UnsupportedInputError(
                path, f"LibRaw {type(e).__name__}: {_libraw_message(e)}"
            ) from e
        except NotImplementedError as e:  # rawpy's raw_pattern on an exotic filter layout
            raise UnsupportedInputError(path, f"unsupported colour filter layout ({e})") from e
    warnings = _decoder_warnings(lines, path)
    if warnings:
        raise CorruptInputError(
            path, f"damaged RAW data, decoded with invented pixels (decoder: {warnings[0]})"
        )


# Lines a decoder prints when it papers over damaged data: libjpeg's warnings ("Premature end of
# JPEG file", "Corrupt JPEG data: …") and LibRaw's ("<file>: data corrupted at N", "Unexpected end
# of file", "decoder table overflow").
_DAMAGE_WORDS = ("jpeg", "corrupt", "unexpected end", "premature end", "overflow", "data error")


def _decoder_warnings(lines: list[str], path: Path | None = None) -> list[str]:
    """The damage warnings among captured stderr ``lines`` (the file name LibRaw prefixes is
    dropped); every other line is passed on as a :class:`DecoderMessage` warning, which the
    build reports through its ``warn`` callback (never straight into a progress bar's line)."""
    found, others = [], []
    for line in (line.strip() for line in lines):
        if not line:
            continue
        if any(word in line.lower() for word in _DAMAGE_WORDS):
            if path is not None and line.startswith(f"{path}:"):
                line = line[len(str(path)) + 1 :].strip()
            found.append(line)
        else:
            others.append(line)
    for line in others:  # not ours: pass it on
        warn(line, DecoderMessage, stacklevel=2)
    return found


class DecoderMessage(UserWarning):
    """A line a decoder (LibRaw, libpng, libjpeg) printed that is not a sign of damage."""


# RAW metadata rules (pure) -------------------------------------------------------------------


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


def _file_white_balance(
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


def _fallback_white_balance(
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


def _libraw_fit(path: Path) -> np.ndarray | None:
    """LibRaw's own camera → sRGB matrix of ``path``, recovered by :func:`fit_color_matrix`.

    LibRaw renders some cameras (e.g. Kodak DC50/DC120) with a matrix it does not expose: render
    the file twice at half size (no demosaicing: deterministic, cheap), linear 16-bit, as-shot
    white balance, no auto-brightness, once in camera RGB and once in sRGB, and fit.
    """
    renders = []
    for space in (rawpy.ColorSpace.raw, rawpy.ColorSpace.sRGB):
        try:
            with _open_raw(path) as raw:
                renders.append(
                    raw.postprocess(
                        half_size=True,
                        output_color=space,
                        gamma=(1, 1),
                        no_auto_bright=True,
                        output_bps=16,
                        use_camera_wb=True,
                        user_flip=0,
                    )
                )
        except InputError:  # LibRaw cannot render it: no matrix to recover
            return None
    return fit_color_matrix(*renders)


def _with_matrix(camera: Camera, source: str, matrix: np.ndarray, *, cam_to_srgb: bool) -> Camera:
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


def _dng_xyz_to_cam(tags: tifffile.TiffTags) -> tuple[str, np.ndarray] | None:
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


def _tiff_metadata(path: Path) -> tuple[str, str, tuple[str, np.ndarray] | None]:
    """(make, model, DNG colour matrix) from a TIFF-based RAW's IFD0; blanks for other files."""
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            make = str(tags["Make"].value).strip() if "Make" in tags else ""
            model = str(tags["Model"].value).strip() if "Model" in tags else ""
            dng = _dng_xyz_to_cam(tags) if "DNGVersion" in tags else None
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError):
        return "", "", None
    return make, model, dng


# Readers ---------------------------------------------------------------------------------------


def read_raw(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> RawCapture:
    """Read a Bayer RAW file: visible mosaic (sensor orientation) and camera model.

    Rules, each recorded in ``camera.provenance``:

    - ``cfa``: LibRaw's colour at the visible area's origin (``file``).
    - ``black_level``: LibRaw's per-colour black mapped to the four CFA positions;
      ``white_level``: LibRaw's ``white_level``; ``bit_depth``: :func:`bit_depth_for` it (``file``).
    - ``wb_gains``: ``camera_whitebalance`` normalised to G = 1 (``file:camera_whitebalance``) if
      usable (R, G, B finite, > 0, not all equal), else ``daylight_whitebalance``
      (``file:daylight_whitebalance``), else the daylight balance of the colour matrix chosen
      below, :func:`matrix_daylight_gains` (``fallback:matrix_d65``; the balance LibRaw renders
      such files with, e.g. the Kodak DC50/DC120), else, without a matrix, :func:`gray_world_gains`
      (``fallback:gray_world``), else 1, 1, 1 (``fallback:unity``).
    - ``xyz_to_cam``: a DNG's own ColorMatrix (``file:ColorMatrix1``/``2``), else LibRaw's
      ``rgb_xyz_matrix`` (``file:rgb_xyz_matrix``), else inverted from LibRaw's camera → sRGB
      ``color_matrix`` (``file:color_matrix``), else the matrix LibRaw renders with but does not
      expose, fitted from two LibRaw renders (``file:libraw_fit``, :func:`fit_color_matrix`;
      e.g. Kodak DC50/DC120; a fit that is the identity means LibRaw has none either), else
      camera RGB taken as linear sRGB (``fallback:srgb``); the first one that gives an
      invertible camera is used.
    - ``noise_shot``, ``noise_read``: 0, i.e. not modelled: the file does not say (``unknown``).

    Non-Bayer sensors (X-Trans, Foveon, linear or 4-colour files), extensions outside
    :data:`RAW_EXTENSIONS` and metadata a :class:`Camera` rejects raise
    :class:`UnsupportedInputError`; empty, truncated or non-RAW contents raise
    :class:`CorruptInputError`. Non-square pixels (``sizes.pixel_aspect`` ≠ 1) are not resampled:
    the mosaic is the sensor grid as stored, and ``pixel_aspect`` says how to square it.
    A file whose declared raw size exceeds ``max_pixels`` (None: no limit) raises
    :class:`UnsupportedInputError` before any pixel data is decoded.
    """
    path = Path(path)
    _require_kind(path, "raw")
    with _open_raw(path) as raw:
        sizes = raw.sizes
        _check_pixels(path, sizes.raw_height, sizes.raw_width, max_pixels)
        if raw.raw_type != rawpy.RawType.Flat:
            raise UnsupportedInputError(
                path, "not a mosaic: LibRaw decodes it to a multi-channel (linear) image"
            )
        desc = raw.color_desc.decode("ascii", "replace")
        if raw.raw_pattern.shape != (2, 2):
            raise UnsupportedInputError(
                path,
                "not a Bayer sensor: {}×{} colour filter pattern".format(*raw.raw_pattern.shape),
            )
        # rawpy's raw_pattern is anchored at the full raw image's origin; LibRaw's COLOR() and
        # raw_color() at the visible area, so ask for the colours there.
        visible = np.array(
            [
                [raw.raw_color(sizes.top_margin + y, sizes.left_margin + x) for x in (0, 1)]
                for y in (0, 1)
            ]
        )
        try:
            cfa = cfa_from_rawpy(visible, desc)
        except ValueError as e:
            raise UnsupportedInputError(path, str(e)) from None
        h, w = raw.raw_image_visible.shape  # LibRaw opens nothing under 22 pixels a side
        mosaic = np.array(raw.raw_image_visible[: h - h % 2, : w - w % 2], dtype=np.uint16)
        per_colour = list(raw.black_level_per_channel)
        black = tuple(float(per_colour[i]) for i in visible.ravel())
        white = float(raw.white_level)
        camera_wb = list(raw.camera_whitebalance)
        daylight_wb = list(raw.daylight_whitebalance)
        rgb_xyz = np.array(raw.rgb_xyz_matrix[:3], dtype=np.float64)
        cam_to_srgb = np.array(raw.color_matrix[:, :3], dtype=np.float64)
        pixel_aspect = float(sizes.pixel_aspect)
    make, model, dng_matrix = _tiff_metadata(path)
    _check_counts(path, mosaic, white)

    file_wb = _file_white_balance(camera_wb, daylight_wb, desc)
    # Without one, unity stands in while the colour matrix is chosen (it does not depend on it).
    wb, wb_source = file_wb or ((1.0, 1.0, 1.0), "fallback:unity")
    try:
        camera = Camera(
            cfa=cfa,
            black_level=black,
            white_level=white,
            bit_depth=bit_depth_for(white),
            wb_gains=wb,
            xyz_to_cam=XYZ_TO_SRGB,
            provenance={
                "cfa": "file",
                "black_level": "file",
                "white_level": "file",
                "wb_gains": wb_source,
                "xyz_to_cam": "fallback:srgb",
                "noise": "unknown",  # noise_shot = noise_read = 0: not measured, not noise-free
            },
        )
    except ValueError as e:
        raise UnsupportedInputError(path, f"invalid camera metadata: {e}") from None
    # (provenance, matrix, whether it is camera → sRGB rather than XYZ → camera), in order
    candidates = [(*dng_matrix, False)] if dng_matrix is not None else []
    if _nonzero(rgb_xyz):
        candidates.append(("file:rgb_xyz_matrix", rgb_xyz, False))
    candidates.append(("file:color_matrix", cam_to_srgb, True))
    for source, matrix, inverse in candidates:
        try:
            camera = _with_matrix(camera, source, matrix, cam_to_srgb=inverse)
        except ValueError:  # singular or white-to-zero matrix: try the next source
            continue
        break
    if camera.provenance["xyz_to_cam"] == "fallback:srgb":
        fitted = _libraw_fit(path)
        # The identity means LibRaw has no matrix either (e.g. a DNG without ColorMatrix).
        if fitted is not None and not np.allclose(fitted, np.eye(3), rtol=0, atol=1e-4):
            with suppress(ValueError):  # a fit Camera rejects keeps the fallback
                camera = _with_matrix(camera, "file:libraw_fit", fitted, cam_to_srgb=True)
    if file_wb is None:
        gains, source = _fallback_white_balance(camera, mosaic)
        camera = camera.replace(
            wb_gains=gains, provenance={**camera.provenance, "wb_gains": source}
        )
    return RawCapture(
        mosaic=mosaic, camera=camera, make=make, model=model, pixel_aspect=pixel_aspect
    )


def _check_counts(path: Path, mosaic: np.ndarray, white: float) -> None:
    """Refuse a mosaic whose counts do not fit the bit depth of its white level (the range a
    sample's ``raw.npy`` may hold): the file's WhiteLevel does not describe its data."""
    if not 0 < white < float("inf"):
        return  # the Camera check names a bad white level
    top = int(mosaic.max(initial=0))
    limit = 2 ** bit_depth_for(white) - 1
    if top > limit:
        raise UnsupportedInputError(
            path,
            f"sensor counts reach {top}, above {limit}, the {bit_depth_for(white)}-bit range of "
            f"its white level {white:g}: the white level does not describe the data",
        )


def render_libraw(path: str | Path, *, digital_gain: float = 1.0) -> np.ndarray:
    """LibRaw's sRGB rendering of a RAW file: uint8 H×W×3, aligned with ``read_raw(path).mosaic``.

    Fixed parameters: AHD demosaic, the camera's as-shot white balance (LibRaw's own fallback when
    it is missing), the file's white level as is (``adjust_maximum_thr=0``), highlights clipped,
    sRGB primaries, sRGB-like gamma (power 2.4, toe slope 12.92), no rotation. Exposure: linear
    values are multiplied by ``digital_gain`` (LibRaw's ``bright``, its own auto-brightness off),
    so a caller applies the same exposure policy as the default render, e.g.
    ``digital_gain=rawpairs.isp.auto_exposure(mosaic, camera)`` (what ``--exposure auto`` does).
    Files with non-square pixels (LibRaw would stretch the render) raise
    :class:`UnsupportedInputError`.
    """
    path = Path(path)
    _require_kind(path, "raw")
    if not (math.isfinite(digital_gain) and digital_gain > 0):
        raise ValueError(f"digital_gain must be a positive finite number, got {digital_gain}")
    with _open_raw(path) as raw:
        aspect = float(raw.sizes.pixel_aspect)
        if abs(aspect - 1.0) > 1e-6:
            raise UnsupportedInputError(
                path,
                f"non-square pixels (pixel_aspect {aspect:.4g}): LibRaw's render is resampled "
                "and cannot align with the mosaic",
            )
        h, w = raw.raw_image_visible.shape
        _check_counts(path, raw.raw_image_visible[: h - h % 2, : w - w % 2], raw.white_level)
        rgb = raw.postprocess(**_LIBRAW_RENDER, bright=float(digital_gain))
    if rgb.shape != (h, w, 3):
        raise UnsupportedInputError(
            path, f"LibRaw renders {rgb.shape[0]}×{rgb.shape[1]}, not the visible {h}×{w} mosaic"
        )
    return np.ascontiguousarray(rgb[: h - h % 2, : w - w % 2])


def _check_pixels(path: Path, height: int, width: int, max_pixels: int | None) -> None:
    """Refuse an image whose declared size exceeds ``max_pixels`` (before decoding it)."""
    if max_pixels is not None and height * width > max_pixels:
        raise UnsupportedInputError(
            path,
            f"declared size {width}×{height} = {height * width / 1e6:.1f} MP exceeds the "
            f"{max_pixels / 1e6:.1f} MP limit (raise it with --max-pixels)",
        )


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a WebP's first chunk (VP8, VP8L or VP8X), or None."""
    chunk, body = data[12:16], data[20:]
    if chunk == b"VP8X" and len(body) >= 10:
        return 1 + int.from_bytes(body[7:10], "little"), 1 + int.from_bytes(body[4:7], "little")
    if chunk == b"VP8L" and len(body) >= 5:
        bits = int.from_bytes(body[1:5], "little")
        return 1 + ((bits >> 14) & 0x3FFF), 1 + (bits & 0x3FFF)
    if chunk == b"VP8 " and len(body) >= 10:
        return (
            int.from_bytes(body[8:10], "little") & 0x3FFF,
            int.from_bytes(body[6:8], "little") & 0x3FFF,
        )
    return None


def _tiff_photo_check(path: Path, max_pixels: int | None) -> None:
    """A TIFF photo: refuse camera RAW content (by structure) and oversized images.

    A RAW file in a TIFF container (DNG, KDC, NEF, …) opened as a photo decodes to its small
    preview; its IFD0 gives it away: a DNGVersion tag, a reduced-resolution first image
    (NewSubfileType bit 0: the full image is elsewhere), or a colour filter array image.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tags = page.tags
            subfile = int(tags["NewSubfileType"].value) if "NewSubfileType" in tags else 0
            raw_like = (
                "DNGVersion" in tags
                or subfile & 1
                or int(page.photometric) in (32803, 34892)  # CFA, LinearRaw
            )
            make = str(tags["Make"].value).strip() if "Make" in tags else ""
            size = int(page.imagelength), int(page.imagewidth)
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError):
        return  # not readable by tifffile: OpenCV decides
    if raw_like:
        camera = f" from a {make} camera" if make else ""
        raise UnsupportedInputError(
            path,
            f"content is a camera RAW file{camera} (DNG or TIFF/EP structure), not a photo: "
            "give it its RAW extension (e.g. .dng, .kdc, .nef) to read its sensor data",
        )
    _check_pixels(path, *size, max_pixels)


_STDERR_LOCK = threading.RLock()  # re-entrant: a capture may nest in another
_STDERR_SINK: dict[int, IO[bytes]] = {}  # this process's reusable sink, by process id
_stderr_depth = 0  # captures open now (under _STDERR_LOCK)


def _process_sink() -> IO[bytes]:
    """This process's reusable stderr sink (a forked child makes its own)."""
    sink = _STDERR_SINK.get(os.getpid())
    if sink is None:
        _STDERR_SINK.clear()  # a forked child's copy of its parent's
        sink = _STDERR_SINK[os.getpid()] = tempfile.TemporaryFile()  # noqa: SIM115 (kept open)
    return sink


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 (e.g. libjpeg's warnings). The
    outermost capture of a process reuses one emptied temporary file (a file per photo was a
    measurable part of an at-load build); a nested capture, or a forked child, has its own."""
    global _stderr_depth
    lines: list[str] = []
    with _STDERR_LOCK, ExitStack() as stack:
        # nested: a file of its own, so the outer capture's file keeps its lines
        sink = stack.enter_context(tempfile.TemporaryFile()) if _stderr_depth else _process_sink()
        sink.seek(0)
        sink.truncate()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        _stderr_depth += 1
        try:
            yield lines
        finally:
            _stderr_depth -= 1
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def _decode_jpeg(path: Path, data: bytes) -> np.ndarray | None:
    """OpenCV's decode of a JPEG, refusing data libjpeg had to repair (its warnings)."""
    with _captured_stderr() as lines:
        image = cv2.imdecode(
            np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
        )
    warnings = _decoder_warnings(lines)
    if warnings:
        raise CorruptInputError(path, f"damaged JPEG data (libjpeg: {warnings[0]})")
    return image


def _png_crc_error(data: bytes) -> str | None:
    """Name the first PNG chunk whose CRC-32 does not match (or that is cut short), else None."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 8 + length
        if end + 4 > len(data):
            return f"chunk {kind!r} is cut short"
        if zlib.crc32(data[pos + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            return f"CRC mismatch in chunk {kind!r}"
        if kind == b"IEND":
            return None
        pos = end + 4
    return "no IEND chunk (truncated)"


def _jpeg_truncated(data: bytes) -> bool:
    """True if no end-of-image marker follows the last start-of-scan (a cut-off download).
    Searched from the last end-of-image marker (near the end of a whole file), so the scan data
    is not searched twice: no start-of-scan after it, and one before it."""
    eoi = data.rfind(b"\xff\xd9")
    return eoi < 0 or data.find(b"\xff\xda", eoi) >= 0 or data.find(b"\xff\xda", 0, eoi) < 0


def _check_photo_content(path: Path, data: bytes, max_pixels: int | None) -> None:
    """Check a photo's bytes before decoding: integrity, RAW content, declared size."""
    size = None
    if data.startswith(_PNG_SIGNATURE):
        problem = _png_crc_error(data)
        if problem:
            raise CorruptInputError(path, f"damaged PNG: {problem}")
        size = int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    elif data.startswith(_JPEG_SOI):
        if _jpeg_truncated(data):
            raise CorruptInputError(
                path, "truncated JPEG: no end-of-image marker after the last scan"
            )
        size = jpeg_size(data)
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        _tiff_photo_check(path, max_pixels)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp_size(data)
    elif _has_raw_signature(data[:16]):
        raise UnsupportedInputError(
            path, "content is a camera RAW file, not a photo: give it its RAW extension"
        )
    if size is not None:
        _check_pixels(path, size[0], size[1], max_pixels)


# ICC profiles of photos -------------------------------------------------------------------------

# Bradford chromatic adaptation D50 (the ICC profile connection space) → D65 (sRGB's white).
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)
_D50_WHITE = np.array([0.9642, 1.0, 0.8249])
_D65_WHITE = SRGB_TO_XYZ @ np.ones(3)
_D50_TO_D65 = (
    np.linalg.inv(_BRADFORD)
    @ np.diag((_BRADFORD @ _D65_WHITE) / (_BRADFORD @ _D50_WHITE))
    @ _BRADFORD
)
# sRGB's colorants in the profile connection space (columns: red, green, blue), as an sRGB
# profile states them (to 4 decimals).
_SRGB_COLORANTS_D50 = np.linalg.inv(_D50_TO_D65) @ SRGB_TO_XYZ


def _icc_from_jpeg(data: bytes) -> bytes | None:
    """The ICC profile of a JPEG: its APP2 ``ICC_PROFILE`` chunks in sequence order, or None."""
    chunks: dict[int, bytes] = {}
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xDA)):  # markers without a length, SOI..EOI
            if marker == 0xD9:
                break
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker == 0xE2 and body.startswith(b"ICC_PROFILE\x00") and len(body) >= 14:
            chunks[body[12]] = body[14:]
        if marker == 0xDA:  # start of scan: no more metadata
            break
        pos += 2 + length
    return b"".join(chunks[k] for k in sorted(chunks)) if chunks else None


def _icc_from_png(data: bytes) -> bytes | None:
    """The ICC profile of a PNG (its ``iCCP`` chunk, inflated), or None; an ``sRGB`` chunk or
    no profile at all means sRGB."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"iCCP":
            name_end = body.find(b"\x00")
            if name_end < 0 or name_end + 2 > len(body):
                return b""
            try:
                return zlib.decompress(body[name_end + 2 :])
            except zlib.error:
                return b""
        if kind in (b"IDAT", b"IEND", b"sRGB"):
            return None
        pos += 12 + length
    return None


def _icc_from_webp(data: bytes) -> bytes | None:
    """The ICC profile of a WebP (its ``ICCP`` chunk), or None."""
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if kind == b"ICCP":
            return data[pos + 8 : pos + 8 + length]
        pos += 8 + length + (length & 1)
    return None


def _icc_from_tiff(path: Path) -> bytes | None:
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            if "InterColorProfile" not in tags:
                return None
            value = tags["InterColorProfile"].value
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError):
        return None
    return bytes(value) if not isinstance(value, bytes) else value


def _icc_profile(path: Path, data: bytes) -> bytes | None:
    """The embedded ICC profile of a photo (``b""`` for one that is present but unreadable)."""
    if data.startswith(_JPEG_SOI):
        return _icc_from_jpeg(data)
    if data.startswith(_PNG_SIGNATURE):
        return _icc_from_png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _icc_from_webp(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _icc_from_tiff(path)
    return None


def _s15(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=">i4").astype(np.float64) / 65536.0


class _ICCError(ValueError):
    pass


def _icc_tags(icc: bytes) -> dict[bytes, bytes]:
    if len(icc) < 132:
        raise _ICCError("shorter than an ICC header")
    count = int.from_bytes(icc[128:132], "big")
    tags = {}
    for i in range(min(count, 1000)):
        entry = icc[132 + 12 * i : 144 + 12 * i]
        if len(entry) < 12:
            raise _ICCError("tag table cut short")
        offset, size = int.from_bytes(entry[4:8], "big"), int.from_bytes(entry[8:12], "big")
        if offset + size > len(icc):
            raise _ICCError(f"tag {entry[:4]!r} beyond the profile's end")
        tags[entry[:4]] = icc[offset : offset + size]
    return tags


def _icc_description(tags: dict[bytes, bytes]) -> str:
    """The profile's description (``desc``, v2 ``textDescriptionType`` or v4 ``mluc``)."""
    desc = tags.get(b"desc", b"")
    if desc[:4] == b"desc" and len(desc) >= 12:
        n = int.from_bytes(desc[8:12], "big")
        return desc[12 : 12 + n].split(b"\x00")[0].decode("latin-1").strip()
    if desc[:4] == b"mluc" and len(desc) >= 28:
        length, offset = int.from_bytes(desc[20:24], "big"), int.from_bytes(desc[24:28], "big")
        return desc[offset : offset + length].decode("utf-16-be", "replace").strip("\x00 ")
    return ""


def _icc_curve(tag: bytes | None, levels: int) -> np.ndarray:
    """A TRC tag (``curv`` or ``para``) sampled at ``levels`` equally spaced codes in [0, 1]."""
    if tag is None:
        raise _ICCError("no tone curve")
    x = np.linspace(0.0, 1.0, levels)
    if tag[:4] == b"curv":
        n = int.from_bytes(tag[8:12], "big")
        if n == 0:
            return x
        if n == 1:
            return x ** (int.from_bytes(tag[12:14], "big") / 256.0)
        table = np.frombuffer(tag[12 : 12 + 2 * n], dtype=">u2").astype(np.float64) / 65535.0
        if table.size != n:
            raise _ICCError("curve table cut short")
        return np.interp(x, np.linspace(0.0, 1.0, n), table)
    if tag[:4] == b"para":
        kind = int.from_bytes(tag[8:10], "big")
        count = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}.get(kind)
        if count is None or len(tag) < 12 + 4 * count:
            raise _ICCError(f"parametric curve of unknown type {kind}")
        g, a, b, c, d, e, f = (*_s15(tag[12 : 12 + 4 * count]), 0, 0, 0, 0, 0, 0)[:7]
        if kind == 0:
            return x**g
        if kind == 1:
            return np.where(x >= -b / a, np.maximum(a * x + b, 0) ** g, 0.0)
        if kind == 2:
            return np.where(x >= -b / a, np.maximum(a * x + b, 0) ** g + c, c)
        if kind == 3:
            return np.where(x >= d, np.maximum(a * x + b, 0) ** g, c * x)
        return np.where(x >= d, np.maximum(a * x + b, 0) ** g + e, c * x + f)
    raise _ICCError(f"tone curve of type {tag[:4]!r}")


def _icc_to_srgb(icc: bytes, levels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(per-channel decoding tables of ``levels`` entries, 3×3 matrix to linear sRGB) of a
    matrix/TRC profile, or None for one that is sRGB (within rounding). ``_ICCError`` otherwise."""
    tags = _icc_tags(icc)
    if "srgb" in _icc_description(tags).lower().replace(" ", ""):
        return None
    space = icc[16:20]
    if space == b"GRAY":
        curve = _icc_curve(tags.get(b"kTRC"), levels)
        tables, colorants = np.stack([curve] * 3), _SRGB_COLORANTS_D50
    elif space == b"RGB ":
        if icc[20:24] != b"XYZ " or not all(t in tags for t in (b"rXYZ", b"gXYZ", b"bXYZ")):
            raise _ICCError("not a matrix/TRC profile (colour lookup tables only)")
        colorants = np.stack([_s15(tags[t][8:20]) for t in (b"rXYZ", b"gXYZ", b"bXYZ")], axis=1)
        tables = np.stack([_icc_curve(tags.get(t), levels) for t in (b"rTRC", b"gTRC", b"bTRC")])
    else:
        raise _ICCError(f"colour space {space.decode('latin-1').strip()!r}")
    if not np.all(np.isfinite(colorants)) or abs(np.linalg.det(colorants)) < 1e-6:
        raise _ICCError("singular colorant matrix")
    srgb_curve = decode_gamma(np.linspace(0.0, 1.0, levels), "srgb")
    if (
        np.allclose(colorants, _SRGB_COLORANTS_D50, rtol=0, atol=2e-3)
        and np.abs(tables - srgb_curve).max() * (levels - 1) < 0.5
    ):
        return None
    matrix = XYZ_TO_SRGB @ _D50_TO_D65 @ colorants
    return np.clip(tables, 0.0, 1.0), matrix


def _to_srgb(path: Path, image: np.ndarray, icc: bytes) -> np.ndarray:
    """``image`` (BGR, uint8 or uint16, as OpenCV decoded it) in the colour space of ``icc``,
    converted to sRGB: decoded by the profile's tone curves, its colorants (adapted D50 → D65 by
    Bradford) mapped to linear sRGB, clipped, encoded by the sRGB curve at the same bit depth."""
    levels = 65536 if image.dtype == np.uint16 else 256
    try:
        conversion = _icc_to_srgb(icc, levels)
    except _ICCError as e:
        raise UnsupportedInputError(
            path, f"its ICC profile cannot be converted to sRGB ({e}): convert the photo to sRGB"
        ) from None
    if conversion is None:
        return image
    tables, matrix = conversion
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    bgr = image[..., :3]
    tables = tables.astype(np.float32)
    linear = np.stack([tables[c][bgr[..., 2 - c]] for c in range(3)], axis=-1)
    srgb = np.clip(linear @ matrix.T.astype(np.float32), 0.0, 1.0)
    encoded = np.floor(encode_gamma(srgb, "srgb") * np.float32(levels - 1) + np.float32(0.5))
    return encoded[..., ::-1].astype(image.dtype)


@dataclass(frozen=True)
class Photo:
    """A photo as :func:`read_photo` read it: ``rgb`` (uint8 H×W×3, upright sRGB; ``None`` from
    :func:`read_stored_jpeg`), its upright ``height`` and ``width``, the file's bytes, and whether
    those bytes are a JPEG that OpenCV's ``IMREAD_COLOR`` decodes to exactly ``rgb`` (no ICC
    conversion, no quarter-turn orientation): then they can be stored as they came
    (``rawpairs build --unprocess at_load``)."""

    rgb: np.ndarray | None
    data: bytes
    as_stored: bool
    height: int
    width: int

    @property
    def lossy(self) -> bool:
        """Whether the file is lossily compressed (JPEG, WebP)."""
        return self.data.startswith(_JPEG_SOI) or (
            self.data[:4] == b"RIFF" and self.data[8:12] == b"WEBP"
        )


def read_rgb(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a photo as uint8 H×W×3 RGB, upright (:func:`read_photo`'s pixels)."""
    return read_photo(path, max_pixels).rgb


def read_photo(
    path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, *, data: bytes | None = None
) -> Photo:
    """Read a photo: its uint8 H×W×3 RGB, upright, and its bytes (:class:`Photo`).

    Decoded by OpenCV: EXIF orientation is applied, grayscale is repeated to 3 channels, an alpha
    channel is dropped (not composited), and 16-bit images are rounded to 8 bits
    (``round(v / 257)``, exact for values that came from 8 bits). The file is identified by its
    content, not its extension. Before decoding: PNG chunk CRCs and a JPEG's end-of-image marker
    are checked, and an image whose declared size (PNG, JPEG, TIFF, WebP headers) exceeds
    ``max_pixels`` (None: no limit) is refused. While decoding, any warning of the JPEG decoder
    (corrupt data it papered over) is a failure. So a damaged file never decodes to partly
    invented pixels (:class:`CorruptInputError`). A camera RAW file under a photo extension (a
    ``.kdc`` renamed ``.tif`` would decode to its thumbnail), float images, oversized images and
    extensions outside :data:`RGB_EXTENSIONS` raise :class:`UnsupportedInputError`. ``data``:
    the file's bytes when the caller has read them (the file is not read again).
    """
    path = Path(path)
    _require_kind(path, "rgb")
    data = _photo_bytes(path, data)
    if not data:
        raise CorruptInputError(path, "empty file (0 bytes)")
    _check_photo_content(path, data, max_pixels)
    if data.startswith(_JPEG_SOI):
        image = _decode_jpeg(path, data)
    else:
        image = cv2.imdecode(
            np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
        )
    if image is None:
        raise CorruptInputError(path, "OpenCV cannot decode it as an image")
    if image.dtype not in (np.uint8, np.uint16):
        raise UnsupportedInputError(
            path, f"{image.dtype} pixels: only 8- and 16-bit integer photos are read"
        )
    decoded = image
    icc = _icc_profile(path, data)
    if icc is not None:
        image = _to_srgb(path, image, icc)
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise UnsupportedInputError(
            path, f"{image.dtype} pixels: only 8- and 16-bit integer photos are read"
        )
    as_stored = (
        data.startswith(_JPEG_SOI)
        and image is decoded
        and image.ndim == 3
        and jpeg_size(data) == image.shape[:2]
    )
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return Photo(rgb, data, as_stored, rgb.shape[0], rgb.shape[1])


def _photo_bytes(path: Path, data: bytes | None) -> bytes:
    """``data``, or the file's bytes when ``None`` (``InputError`` when it cannot be read)."""
    if data is not None:
        return data
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot open: {e.strerror or e}") from None


def read_stored_jpeg(
    path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, *, data: bytes | None = None
) -> Photo | None:
    """A JPEG whose bytes can be stored as they came, checked as :func:`read_photo` checks it but
    decoded at 1/8 scale (libjpeg still entropy-decodes every coefficient, so damaged data fails
    as in a full decode; the inverse DCT, upsampling and colour conversion are skipped). Returns
    a :class:`Photo` without ``rgb``, or ``None`` when the file is not such a JPEG (another
    format, an ICC profile to convert, a quarter-turn orientation, or a size whose 1/8 scale
    is square, where a quarter turn would not show): then use :func:`read_photo`. ``data`` as
    for :func:`read_photo`."""
    path = Path(path)
    _require_kind(path, "rgb")
    data = _photo_bytes(path, data)
    size = jpeg_size(data) if data.startswith(_JPEG_SOI) else None
    if size is None:
        return None
    _check_photo_content(path, data, max_pixels)
    icc = _icc_profile(path, data)
    try:
        if icc is not None and _icc_to_srgb(icc, 256) is not None:
            return None
    except _ICCError:
        return None  # read_photo names the problem
    small = (-(-size[0] // 8), -(-size[1] // 8))
    if small[0] == small[1]:
        return None
    with _captured_stderr() as lines:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
    warnings = _decoder_warnings(lines)
    if warnings:
        raise CorruptInputError(path, f"damaged JPEG data (libjpeg: {warnings[0]})")
    if image is None:
        raise CorruptInputError(path, "OpenCV cannot decode it as an image")
    if image.dtype != np.uint8 or image.shape[:2] != small:
        return None
    return Photo(None, data, True, *size)
