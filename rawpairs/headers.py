"""Array and image sizes as file headers declare them, read before decoding: pure functions of
bytes.

A declared size lets a reader refuse an image too large to decode (:data:`MAX_PIXELS`) or
whose size disagrees with its metadata without spending the memory to decode it.
"""

from __future__ import annotations

import io
import struct

import numpy as np

__all__ = ["MAX_PIXELS", "image_size", "jpeg_size", "npy_header"]

# Largest image (in pixels, by its declared size) read unless the caller raises the limit: above
# every camera sensor sold (the largest single-shot sensors are 150–200 MP), far below what
# exhausts a worker's memory (a 400 MP photo needs ~5 GB through the inverse ISP).
MAX_PIXELS = 300_000_000

# Markers that stand alone, without a length: TEM and RST0–RST7 (ITU T.81, B.1.1.3). SOI and EOI
# are standalone too, but SOI only opens the file and EOI only closes it.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# Start-of-frame markers SOF0–SOF15, less DHT (C4), JPG (C8) and DAC (CC), which share the range.
_START_OF_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_size(data: bytes, name: str) -> tuple[int, int]:
    """(height, width) declared by a PNG's IHDR (``name`` ends in ``.png``) or a JPEG's SOF
    marker (any other ``name``), before any decoding; ``ValueError`` naming ``name`` when the
    bytes are not that format or declare no size."""
    if name.endswith(".png"):
        if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
            raise ValueError(f"{name} is not a PNG")
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    if data[:2] != b"\xff\xd8":
        raise ValueError(f"{name} is not a JPEG")
    size = jpeg_size(data)
    if size is None:
        raise ValueError(f"{name} has no JPEG frame header")
    return size


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the first start-of-frame marker of a JPEG (``data`` starts with
    SOI, ``FF D8``), or ``None`` when the markers before the first scan hold none or break off.
    Fill bytes (``FF FF``) and standalone markers (RSTn, TEM) are stepped over; every other
    marker segment is skipped by its length."""
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _STANDALONE:
            pos += 2
        elif marker in _START_OF_FRAME:
            if pos + 9 > len(data):
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            return height, int.from_bytes(data[pos + 7 : pos + 9], "big")
        elif pos + 4 > len(data):
            return None
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of ``.npy`` bytes, reading the header only."""
    buf = io.BytesIO(data)
    version = np.lib.format.read_magic(buf)
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, fortran, dtype = readers[version](buf)
    return shape, fortran, dtype, buf.tell()
