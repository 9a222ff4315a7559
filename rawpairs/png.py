"""A fast, standard PNG encoder for 8-bit RGB: the "Sub" row filter in numpy + ISA-L deflate.

Why not OpenCV/libpng: at ImageNet size (500×374) libpng's deflate at level 1 took 14 ms here,
3× the whole rest of a sample's making; ISA-L's deflate (the ``isal`` package) with the same
filter takes ~2 ms for a file of the same size (±4%). The output is an ordinary PNG (signature,
IHDR, one IDAT, IEND; CRCs per the PNG specification, ISO/IEC 15948) that every decoder reads:
tests decode it with OpenCV and Pillow, bit for bit.
"""

from __future__ import annotations

import struct

import numpy as np
from isal import isal_zlib

__all__ = ["encode_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_SUB = 1


def _chunk(kind: bytes, payload: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    crc = isal_zlib.crc32(payload, isal_zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)), kind, payload, struct.pack(">I", crc)


def encode_png(rgb: np.ndarray, level: int = 1) -> bytes:
    """uint8 H×W×3 RGB → PNG bytes (8-bit truecolour, lossless). ``level``: ISA-L 0–3."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_png expects uint8 H×W×3, got {rgb.dtype} {rgb.shape}")
    if not 0 <= level <= 3:
        raise ValueError(f"ISA-L compression level must be in [0, 3], got {level}")
    height, width, _ = rgb.shape
    if height == 0 or width == 0:
        raise ValueError(f"cannot encode an empty image {rgb.shape}")
    rows = np.ascontiguousarray(rgb).reshape(height, width * 3)
    # Each scanline: filter type byte, then byte-wise differences to the pixel on the left.
    scanlines = np.empty((height, width * 3 + 1), np.uint8)
    scanlines[:, 0] = _FILTER_SUB
    scanlines[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=scanlines[:, 4:])  # modulo 256
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            _SIGNATURE,
            *_chunk(b"IHDR", header),
            *_chunk(b"IDAT", isal_zlib.compress(scanlines.data, level)),
            *_chunk(b"IEND", b""),
        )
    )
