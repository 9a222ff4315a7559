"""ICC profiles of photos: found in a JPEG, PNG, WebP or TIFF, and a matrix/TRC profile's
conversion to sRGB (its tone curves, its colorants adapted D50 → D65 by Bradford). Used by
:func:`rawpairs.photos.read_photo`; other profiles (colour lookup tables) are refused."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import tifffile

from rawpairs.camera import SRGB_TO_XYZ, XYZ_TO_SRGB
from rawpairs.errors import UnsupportedInputError
from rawpairs.sources import JPEG_SOI, PNG_SIGNATURE
from rawpairs.tone import decode_gamma, encode_gamma

__all__ = ["ICCError", "icc_profile", "icc_to_srgb", "to_srgb"]

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
    pos = len(PNG_SIGNATURE)
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


def icc_profile(path: Path, data: bytes) -> bytes | None:
    """The embedded ICC profile of a photo (``b""`` for one that is present but unreadable)."""
    if data.startswith(JPEG_SOI):
        return _icc_from_jpeg(data)
    if data.startswith(PNG_SIGNATURE):
        return _icc_from_png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _icc_from_webp(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _icc_from_tiff(path)
    return None


def _s15(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=">i4").astype(np.float64) / 65536.0


class ICCError(ValueError):
    pass


def _icc_tags(icc: bytes) -> dict[bytes, bytes]:
    if len(icc) < 132:
        raise ICCError("shorter than an ICC header")
    count = int.from_bytes(icc[128:132], "big")
    tags = {}
    for i in range(min(count, 1000)):
        entry = icc[132 + 12 * i : 144 + 12 * i]
        if len(entry) < 12:
            raise ICCError("tag table cut short")
        offset, size = int.from_bytes(entry[4:8], "big"), int.from_bytes(entry[8:12], "big")
        if offset + size > len(icc):
            raise ICCError(f"tag {entry[:4]!r} beyond the profile's end")
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
        raise ICCError("no tone curve")
    x = np.linspace(0.0, 1.0, levels)
    if tag[:4] == b"curv":
        n = int.from_bytes(tag[8:12], "big")
        if n == 0:
            return x
        if n == 1:
            return x ** (int.from_bytes(tag[12:14], "big") / 256.0)
        table = np.frombuffer(tag[12 : 12 + 2 * n], dtype=">u2").astype(np.float64) / 65535.0
        if table.size != n:
            raise ICCError("curve table cut short")
        return np.interp(x, np.linspace(0.0, 1.0, n), table)
    if tag[:4] == b"para":
        kind = int.from_bytes(tag[8:10], "big")
        count = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}.get(kind)
        if count is None or len(tag) < 12 + 4 * count:
            raise ICCError(f"parametric curve of unknown type {kind}")
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
    raise ICCError(f"tone curve of type {tag[:4]!r}")


def icc_to_srgb(icc: bytes, levels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(per-channel decoding tables of ``levels`` entries, 3×3 matrix to linear sRGB) of a
    matrix/TRC profile, or None for one that is sRGB (within rounding). ``ICCError`` otherwise."""
    tags = _icc_tags(icc)
    if "srgb" in _icc_description(tags).lower().replace(" ", ""):
        return None
    space = icc[16:20]
    if space == b"GRAY":
        curve = _icc_curve(tags.get(b"kTRC"), levels)
        tables, colorants = np.stack([curve] * 3), _SRGB_COLORANTS_D50
    elif space == b"RGB ":
        if icc[20:24] != b"XYZ " or not all(t in tags for t in (b"rXYZ", b"gXYZ", b"bXYZ")):
            raise ICCError("not a matrix/TRC profile (colour lookup tables only)")
        colorants = np.stack([_s15(tags[t][8:20]) for t in (b"rXYZ", b"gXYZ", b"bXYZ")], axis=1)
        tables = np.stack([_icc_curve(tags.get(t), levels) for t in (b"rTRC", b"gTRC", b"bTRC")])
    else:
        raise ICCError(f"colour space {space.decode('latin-1').strip()!r}")
    if not np.all(np.isfinite(colorants)) or abs(np.linalg.det(colorants)) < 1e-6:
        raise ICCError("singular colorant matrix")
    srgb_curve = decode_gamma(np.linspace(0.0, 1.0, levels), "srgb")
    if (
        np.allclose(colorants, _SRGB_COLORANTS_D50, rtol=0, atol=2e-3)
        and np.abs(tables - srgb_curve).max() * (levels - 1) < 0.5
    ):
        return None
    matrix = XYZ_TO_SRGB @ _D50_TO_D65 @ colorants
    return np.clip(tables, 0.0, 1.0), matrix


def to_srgb(path: Path, image: np.ndarray, icc: bytes) -> np.ndarray:
    """``image`` (BGR, uint8 or uint16, as OpenCV decoded it) in the colour space of ``icc``,
    converted to sRGB: decoded by the profile's tone curves, its colorants (adapted D50 → D65 by
    Bradford) mapped to linear sRGB, clipped, encoded by the sRGB curve at the same bit depth."""
    levels = 65536 if image.dtype == np.uint16 else 256
    try:
        conversion = icc_to_srgb(icc, levels)
    except ICCError as e:
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
