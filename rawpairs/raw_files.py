"""Where camera RAW files are read (through rawpy/LibRaw).

- :func:`read_raw`: the visible Bayer mosaic, exactly as stored, with a validated
  :class:`rawpairs.Camera` whose every value records where it came from (``provenance``; the
  rules are in :mod:`rawpairs.raw_metadata`).
- :func:`rawpairs.libraw.render_libraw`: LibRaw's own rendering of the same file, aligned pixel
  for pixel with the mosaic (a reference ISP).

RAW files keep the sensor's orientation (LibRaw's ``sizes.flip`` is *not* applied), because
rotating a mosaic changes its CFA phase. ``docs/sources.md`` lists the rules, fallbacks and
provenance strings.

rawpy must run in the main process or in ``spawn``/``forkserver`` workers: LibRaw's OpenMP can
deadlock in a ``fork``ed child.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rawpy
import tifffile

from rawpairs.camera import XYZ_TO_SRGB, Camera
from rawpairs.cfa import CFA, cfa_from_rawpy
from rawpairs.errors import UnsupportedInputError
from rawpairs.headers import MAX_PIXELS
from rawpairs.libraw import check_counts, open_raw, with_libraw_fit
from rawpairs.raw_metadata import (
    bit_depth_for,
    dng_xyz_to_cam,
    fallback_white_balance,
    file_white_balance,
    matrix_candidates,
    with_first_matrix,
)
from rawpairs.sources import (
    check_pixels,
    require_kind,
)

__all__ = ["RawCapture", "read_raw"]


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


def _tiff_metadata(path: Path) -> tuple[str, str, tuple[str, np.ndarray] | None]:
    """(make, model, DNG colour matrix) from a TIFF-based RAW's IFD0; blanks for other files."""
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            make = str(tags["Make"].value).strip() if "Make" in tags else ""
            model = str(tags["Model"].value).strip() if "Model" in tags else ""
            dng = dng_xyz_to_cam(tags) if "DNGVersion" in tags else None
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError):
        return "", "", None
    return make, model, dng


def read_raw(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> RawCapture:
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
    require_kind(path, "raw")
    f = _read_libraw(path, max_pixels)
    make, model, dng_matrix = _tiff_metadata(path)
    check_counts(path, f.mosaic, f.white)
    file_wb = file_white_balance(f.camera_wb, f.daylight_wb, f.desc)
    # Without one, unity stands in while the colour matrix is chosen (it does not depend on it).
    camera = _file_camera(path, f, file_wb or ((1.0, 1.0, 1.0), "fallback:unity"))
    camera = with_first_matrix(camera, matrix_candidates(dng_matrix, f.rgb_xyz, f.cam_to_srgb))
    if camera.provenance["xyz_to_cam"] == "fallback:srgb":
        camera = with_libraw_fit(path, camera)
    if file_wb is None:
        gains, source = fallback_white_balance(camera, f.mosaic)
        camera = camera.replace(
            wb_gains=gains, provenance={**camera.provenance, "wb_gains": source}
        )
    return RawCapture(
        mosaic=f.mosaic, camera=camera, make=make, model=model, pixel_aspect=f.pixel_aspect
    )


@dataclass(frozen=True)
class _LibRawFile:
    """What :func:`read_raw` takes from LibRaw while the file is open (copies): the even-sided
    visible ``mosaic`` and its ``cfa``, LibRaw's colour description ``desc`` (e.g. ``RGBG``),
    black levels at the four CFA positions, white level, white balances (per colour of
    ``desc``), colour matrices and pixel aspect ratio."""

    mosaic: np.ndarray
    cfa: CFA
    desc: str
    black: tuple[float, ...]
    white: float
    camera_wb: list[float]
    daylight_wb: list[float]
    rgb_xyz: np.ndarray
    cam_to_srgb: np.ndarray
    pixel_aspect: float


def _read_libraw(path: Path, max_pixels: int | None) -> _LibRawFile:
    """Open ``path`` with LibRaw and copy out the mosaic and metadata; refuses an oversized,
    non-mosaic or non-Bayer file (:class:`UnsupportedInputError`)."""
    with open_raw(path) as raw:
        sizes = raw.sizes
        check_pixels(path, sizes.raw_height, sizes.raw_width, max_pixels)
        if raw.raw_type != rawpy.RawType.Flat:
            raise UnsupportedInputError(
                path, "not a mosaic: LibRaw decodes it to a multi-channel (linear) image"
            )
        desc = raw.color_desc.decode("ascii", "replace")
        cfa, visible = _visible_cfa(path, raw, desc)
        h, w = raw.raw_image_visible.shape  # LibRaw opens nothing under 22 pixels a side
        per_colour = list(raw.black_level_per_channel)
        return _LibRawFile(
            mosaic=np.array(raw.raw_image_visible[: h - h % 2, : w - w % 2], dtype=np.uint16),
            cfa=cfa,
            desc=desc,
            black=tuple(float(per_colour[i]) for i in visible.ravel()),
            white=float(raw.white_level),
            camera_wb=list(raw.camera_whitebalance),
            daylight_wb=list(raw.daylight_whitebalance),
            rgb_xyz=np.array(raw.rgb_xyz_matrix[:3], dtype=np.float64),
            cam_to_srgb=np.array(raw.color_matrix[:, :3], dtype=np.float64),
            pixel_aspect=float(sizes.pixel_aspect),
        )


def _visible_cfa(path: Path, raw: rawpy.RawPy, desc: str) -> tuple[CFA, np.ndarray]:
    """The CFA at the visible area's origin and its 2×2 colour indices into ``desc``;
    :class:`UnsupportedInputError` for a sensor that is not Bayer."""
    if raw.raw_pattern.shape != (2, 2):
        raise UnsupportedInputError(
            path,
            "not a Bayer sensor: {}×{} colour filter pattern".format(*raw.raw_pattern.shape),
        )
    # rawpy's raw_pattern is anchored at the full raw image's origin; LibRaw's COLOR() and
    # raw_color() at the visible area, so ask for the colours there.
    sizes = raw.sizes
    visible = np.array(
        [
            [raw.raw_color(sizes.top_margin + y, sizes.left_margin + x) for x in (0, 1)]
            for y in (0, 1)
        ]
    )
    try:
        return cfa_from_rawpy(visible, desc), visible
    except ValueError as e:
        raise UnsupportedInputError(path, str(e)) from None


def _file_camera(path: Path, f: _LibRawFile, wb: tuple[tuple[float, float, float], str]) -> Camera:
    """The file's camera with white balance ``wb`` (gains, provenance) and camera RGB taken as
    linear sRGB until a colour matrix is chosen; :class:`UnsupportedInputError` for metadata a
    :class:`Camera` rejects."""
    try:
        return Camera(
            cfa=f.cfa,
            black_level=f.black,
            white_level=f.white,
            bit_depth=bit_depth_for(f.white),
            wb_gains=wb[0],
            xyz_to_cam=XYZ_TO_SRGB,
            provenance={
                "cfa": "file",
                "black_level": "file",
                "white_level": "file",
                "wb_gains": wb[1],
                "xyz_to_cam": "fallback:srgb",
                "noise": "unknown",  # noise_shot = noise_read = 0: not measured, not noise-free
            },
        )
    except ValueError as e:
        raise UnsupportedInputError(path, f"invalid camera metadata: {e}") from None
