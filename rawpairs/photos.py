"""Where photos are read: :func:`read_photo` (uint8 RGB, upright, in sRGB, with the file's bytes),
:func:`read_stored_jpeg` (a JPEG checked for storing as it came, without decoding its pixels)
and :func:`read_rgb`.

Each is checked before decoding (PNG chunk CRCs, a JPEG's end-of-image marker, camera RAW
content, the declared size) and while decoding (a decoder's damage warning fails the file), so
a damaged file never decodes to partly invented pixels. Photos are turned upright by their EXIF
orientation; an embedded ICC profile is converted to sRGB (:mod:`rawpairs.icc`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from rawpairs.decoder_output import captured_stderr, decoder_warnings
from rawpairs.errors import CorruptInputError, InputError, UnsupportedInputError
from rawpairs.headers import MAX_PIXELS, jpeg_size
from rawpairs.icc import ICCError, icc_profile, icc_to_srgb, to_srgb
from rawpairs.sources import (
    JPEG_SOI,
    PNG_SIGNATURE,
    check_pixels,
    has_raw_signature,
    require_kind,
)

__all__ = ["Photo", "read_photo", "read_rgb", "read_stored_jpeg"]


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
        return self.data.startswith(JPEG_SOI) or (
            self.data[:4] == b"RIFF" and self.data[8:12] == b"WEBP"
        )


def read_rgb(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read a photo as uint8 H×W×3 RGB, upright (:func:`read_photo`'s pixels)."""
    return read_photo(path, max_pixels).rgb


def read_photo(
    path: str | Path, max_pixels: int | None = MAX_PIXELS, *, data: bytes | None = None
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
    require_kind(path, "rgb")
    data = _photo_bytes(path, data)
    if not data:
        raise CorruptInputError(path, "empty file (0 bytes)")
    _check_photo_content(path, data, max_pixels)
    if data.startswith(JPEG_SOI):
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
    icc = icc_profile(path, data)
    if icc is not None:
        image = to_srgb(path, image, icc)
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise UnsupportedInputError(
            path, f"{image.dtype} pixels: only 8- and 16-bit integer photos are read"
        )
    as_stored = (
        data.startswith(JPEG_SOI)
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
    path: str | Path, max_pixels: int | None = MAX_PIXELS, *, data: bytes | None = None
) -> Photo | None:
    """A JPEG whose bytes can be stored as they came, checked as :func:`read_photo` checks it but
    decoded at 1/8 scale (libjpeg still entropy-decodes every coefficient, so damaged data fails
    as in a full decode; the inverse DCT, upsampling and colour conversion are skipped). Returns
    a :class:`Photo` without ``rgb``, or ``None`` when the file is not such a JPEG (another
    format, an ICC profile to convert, a quarter-turn orientation, or a size whose 1/8 scale
    is square, where a quarter turn would not show): then use :func:`read_photo`. ``data`` as
    for :func:`read_photo`."""
    path = Path(path)
    require_kind(path, "rgb")
    data = _photo_bytes(path, data)
    size = jpeg_size(data) if data.startswith(JPEG_SOI) else None
    if size is None:
        return None
    _check_photo_content(path, data, max_pixels)
    icc = icc_profile(path, data)
    try:
        if icc is not None and icc_to_srgb(icc, 256) is not None:
            return None
    except ICCError:
        return None  # read_photo names the problem
    small = (-(-size[0] // 8), -(-size[1] // 8))
    if small[0] == small[1]:
        return None
    with captured_stderr() as lines:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
    warnings = decoder_warnings(lines)
    if warnings:
        raise CorruptInputError(path, f"damaged JPEG data (libjpeg: {warnings[0]})")
    if image is None:
        raise CorruptInputError(path, "OpenCV cannot decode it as an image")
    if image.dtype != np.uint8 or image.shape[:2] != small:
        return None
    return Photo(None, data, True, *size)


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
    check_pixels(path, *size, max_pixels)


def _decode_jpeg(path: Path, data: bytes) -> np.ndarray | None:
    """OpenCV's decode of a JPEG, refusing data libjpeg had to repair (its warnings)."""
    with captured_stderr() as lines:
        image = cv2.imdecode(
            np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
        )
    warnings = decoder_warnings(lines)
    if warnings:
        raise CorruptInputError(path, f"damaged JPEG data (libjpeg: {warnings[0]})")
    return image


def _png_crc_error(data: bytes) -> str | None:
    """Name the first PNG chunk whose CRC-32 does not match (or that is cut short), else None."""
    pos = len(PNG_SIGNATURE)
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
    if data.startswith(PNG_SIGNATURE):
        problem = _png_crc_error(data)
        if problem:
            raise CorruptInputError(path, f"damaged PNG: {problem}")
        size = int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    elif data.startswith(JPEG_SOI):
        if _jpeg_truncated(data):
            raise CorruptInputError(
                path, "truncated JPEG: no end-of-image marker after the last scan"
            )
        size = jpeg_size(data)
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        _tiff_photo_check(path, max_pixels)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp_size(data)
    elif has_raw_signature(data[:16]):
        raise UnsupportedInputError(
            path, "content is a camera RAW file, not a photo: give it its RAW extension"
        )
    if size is not None:
        check_pixels(path, size[0], size[1], max_pixels)
