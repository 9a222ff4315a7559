r"""LibRaw (through rawpy) at the edge: :func:`open_raw` opens a RAW file with LibRaw's errors
and decoder warnings mapped to one-line :class:`rawpairs.errors.InputError`\ s,
:func:`check_counts` refuses counts its white level does not describe, :func:`render_libraw` is
LibRaw's own rendering (a reference ISP, aligned with the mosaic), and :func:`with_libraw_fit`
recovers the colour matrix LibRaw renders with but does not expose.

rawpy must run in the main process or in ``spawn``/``forkserver`` workers: LibRaw's OpenMP can
deadlock in a ``fork``ed child.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import rawpy

from rawpairs.camera import Camera
from rawpairs.decoder_output import captured_stderr, decoder_warnings
from rawpairs.errors import CorruptInputError, InputError, UnsupportedInputError
from rawpairs.raw_metadata import bit_depth_for, fit_color_matrix, with_matrix
from rawpairs.sources import has_raw_signature, read_head, require_kind

__all__ = ["check_counts", "open_raw", "render_libraw", "with_libraw_fit"]

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


def _libraw_message(e: Exception) -> str:
    msg = e.args[0] if e.args else ""
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return str(msg) or type(e).__name__


@contextmanager
def open_raw(path: Path) -> Iterator[rawpy.RawPy]:
    """``rawpy.imread`` with LibRaw's errors (while opening or while used) mapped to InputErrors.

    What the decoders print while the file is open is captured (file descriptor 2): a warning of
    libjpeg (lossy Kodak KDC, DNGs with JPEG tiles) or of LibRaw's data checks means it decoded
    damaged data by inventing pixels, so it is a :class:`CorruptInputError` naming the file and the
    decoder's first message, also when LibRaw itself reports no error.
    """
    head = read_head(path)
    with captured_stderr() as lines:
        try:
            with rawpy.imread(str(path)) as raw:
                yield raw
        except rawpy.LibRawFileUnsupportedError as e:
            if not has_raw_signature(head):
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
    warnings = decoder_warnings(lines, path)
    if warnings:
        raise CorruptInputError(
            path, f"damaged RAW data, decoded with invented pixels (decoder: {warnings[0]})"
        )


def _libraw_fit(path: Path) -> np.ndarray | None:
    """LibRaw's own camera → sRGB matrix of ``path``, recovered by :func:`fit_color_matrix`.

    LibRaw renders some cameras (e.g. Kodak DC50/DC120) with a matrix it does not expose: render
    the file twice at half size (no demosaicing: deterministic, cheap), linear 16-bit, as-shot
    white balance, no auto-brightness, once in camera RGB and once in sRGB, and fit.
    """
    renders = []
    for space in (rawpy.ColorSpace.raw, rawpy.ColorSpace.sRGB):
        try:
            with open_raw(path) as raw:
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


def with_libraw_fit(path: Path, camera: Camera) -> Camera:
    """``camera`` with the matrix LibRaw renders ``path`` with (:func:`_libraw_fit`), when there
    is one: a fit that is the identity means LibRaw has no matrix either (e.g. a DNG without
    ColorMatrix), and one a :class:`Camera` rejects keeps the fallback."""
    fitted = _libraw_fit(path)
    if fitted is not None and not np.allclose(fitted, np.eye(3), rtol=0, atol=1e-4):
        with suppress(ValueError):
            camera = with_matrix(camera, "file:libraw_fit", fitted, cam_to_srgb=True)
    return camera


def check_counts(path: Path, mosaic: np.ndarray, white: float) -> None:
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
    require_kind(path, "raw")
    if not (math.isfinite(digital_gain) and digital_gain > 0):
        raise ValueError(f"digital_gain must be a positive finite number, got {digital_gain}")
    with open_raw(path) as raw:
        aspect = float(raw.sizes.pixel_aspect)
        if abs(aspect - 1.0) > 1e-6:
            raise UnsupportedInputError(
                path,
                f"non-square pixels (pixel_aspect {aspect:.4g}): LibRaw's render is resampled "
                "and cannot align with the mosaic",
            )
        h, w = raw.raw_image_visible.shape
        check_counts(path, raw.raw_image_visible[: h - h % 2, : w - w % 2], raw.white_level)
        rgb = raw.postprocess(**_LIBRAW_RENDER, bright=float(digital_gain))
    if rgb.shape != (h, w, 3):
        raise UnsupportedInputError(
            path, f"LibRaw renders {rgb.shape[0]}×{rgb.shape[1]}, not the visible {h}×{w} mosaic"
        )
    return np.ascontiguousarray(rgb[: h - h % 2, : w - w % 2])
