"""What an input file is: its kind by extension (:func:`source_kind`), the signatures that tell
a RAW container or a photo by content, and the checks every reader makes first (a known
extension, a readable non-empty file, a declared size within the pixel limit).

The readers: :mod:`rawpairs.raw_files` (camera RAW, through rawpy/LibRaw) and
:mod:`rawpairs.photos` (ordinary photos). Every failure is an :class:`rawpairs.errors.InputError`
naming the file and the cause in one line; ``docs/sources.md`` lists the rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rawpairs.errors import CorruptInputError, InputError, UnsupportedInputError

__all__ = [
    "JPEG_SOI",
    "PNG_SIGNATURE",
    "RAW_EXTENSIONS",
    "RGB_EXTENSIONS",
    "check_pixels",
    "has_raw_signature",
    "read_head",
    "require_kind",
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
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"


def source_kind(path: str | Path) -> Literal["raw", "rgb"] | None:
    """``"raw"``, ``"rgb"`` or ``None`` from the file extension (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    if suffix in RAW_EXTENSIONS:
        return "raw"
    if suffix in RGB_EXTENSIONS:
        return "rgb"
    return None


def require_kind(path: Path, kind: Literal["raw", "rgb"]) -> None:
    if source_kind(path) != kind:
        allowed = RAW_EXTENSIONS if kind == "raw" else RGB_EXTENSIONS
        what = "RAW" if kind == "raw" else "photo"
        raise UnsupportedInputError(
            path,
            f"extension {path.suffix!r} is not a known {what} extension "
            f"({' '.join(sorted(allowed))})",
        )


def read_head(path: Path, n: int = 16) -> bytes:
    """First ``n`` bytes; missing, unreadable and empty files raise the matching InputError."""
    try:
        with path.open("rb") as f:
            head = f.read(n)
    except OSError as e:
        raise InputError(path, f"cannot open: {e.strerror or e}") from None
    if not head:
        raise CorruptInputError(path, "empty file (0 bytes)")
    return head


def has_raw_signature(head: bytes) -> bool:
    return any(head[off : off + len(sig)] == sig for off, sig in _RAW_SIGNATURES)


def check_pixels(path: Path, height: int, width: int, max_pixels: int | None) -> None:
    """Refuse an image whose declared size exceeds ``max_pixels`` (before decoding it)."""
    if max_pixels is not None and height * width > max_pixels:
        raise UnsupportedInputError(
            path,
            f"declared size {width}×{height} = {height * width / 1e6:.1f} MP exceeds the "
            f"{max_pixels / 1e6:.1f} MP limit (raise it with --max-pixels)",
        )
