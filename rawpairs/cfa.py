"""Bayer colour filter arrays: one spelling, and phase-safe mosaic utilities.

A CFA pattern is named by its top-left 2×2 block read row by row, e.g. ``RGGB`` means
``mosaic[0, 0]`` is red, ``mosaic[0, 1]`` and ``mosaic[1, 0]`` are green, ``mosaic[1, 1]`` is blue.
That string is the only spelling used in this project; :func:`cfa_from_rawpy` converts
LibRaw's description at the edge.

"Positions" are the four sites of the 2×2 block in row-major order: 0 = (0, 0), 1 = (0, 1),
2 = (1, 0), 3 = (1, 1). Per-position values (black levels, packed channels) are always in that
order.

Any crop at an odd offset or any flip changes the pattern; the functions here return the new
pattern with the new mosaic, so a mosaic is never silently mislabelled.
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np

__all__ = [
    "CFA",
    "bin_mosaic",
    "cfa_from_rawpy",
    "channel_index_map",
    "crop",
    "flip",
    "pack",
    "resample",
    "square_and_bin",
    "unpack",
]

_CHANNEL_OF_LETTER = {"R": 0, "G": 1, "B": 2}


class CFA(str, Enum):
    """The four Bayer layouts, valued by their top-left 2×2 string."""

    RGGB = "RGGB"
    BGGR = "BGGR"
    GRBG = "GRBG"
    GBRG = "GBRG"

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Colour channel (0 = R, 1 = G, 2 = B) at each of the four positions, row-major."""
        return tuple(_CHANNEL_OF_LETTER[c] for c in self.value)  # type: ignore[return-value]

    @property
    def red_position(self) -> tuple[int, int]:
        """(row, col) of the red site inside the 2×2 block."""
        i = self.value.index("R")
        return divmod(i, 2)

    @classmethod
    def parse(cls, value: str | CFA) -> CFA:
        """Accept ``"rggb"``, ``"RGGB"`` or a :class:`CFA`; raise ``ValueError`` otherwise."""
        if isinstance(value, CFA):
            return value
        try:
            return cls(str(value).upper())
        except ValueError:
            raise ValueError(
                f"unknown CFA pattern {value!r}: expected one of {[c.value for c in cls]}"
            ) from None

    @classmethod
    def from_channels(cls, channels: tuple[int, ...]) -> CFA:
        """Inverse of :attr:`channels`."""
        name = "".join("RGB"[c] for c in channels)
        return cls.parse(name)


def cfa_from_rawpy(raw_pattern: np.ndarray, color_desc: bytes | str) -> CFA:
    """Map rawpy's ``raw_pattern`` (indices into ``color_desc``) to a :class:`CFA`.

    ``color_desc`` is e.g. ``b"RGBG"``: index 3 is the second green. Non-Bayer layouts
    (X-Trans 6×6, CMYG, four distinct colours, …) raise ``ValueError``.
    """
    desc = color_desc.decode() if isinstance(color_desc, bytes) else str(color_desc)
    pattern = np.asarray(raw_pattern)
    if pattern.shape != (2, 2):
        raise ValueError(f"not a Bayer sensor: CFA pattern has shape {pattern.shape}, not 2×2")
    try:
        letters = "".join(desc[int(i)] for i in pattern.ravel())
    except IndexError:
        raise ValueError(f"raw_pattern {pattern.tolist()} indexes outside {desc!r}") from None
    try:
        return CFA(letters)
    except ValueError:
        raise ValueError(f"not a Bayer sensor: colour layout {letters!r} ({desc!r})") from None


def channel_index_map(cfa: CFA | str, height: int, width: int) -> np.ndarray:
    """H×W uint8 array giving the colour channel (0 = R, 1 = G, 2 = B) of every site."""
    block = np.array(CFA.parse(cfa).channels, dtype=np.uint8).reshape(2, 2)
    reps = (-(-height // 2), -(-width // 2))
    return np.tile(block, reps)[:height, :width]


def _require_even_mosaic(mosaic: np.ndarray) -> None:
    if mosaic.ndim != 2:
        raise ValueError(f"mosaic must be 2-D (H×W), got shape {mosaic.shape}")
    if mosaic.shape[0] % 2 or mosaic.shape[1] % 2:
        raise ValueError(f"mosaic height and width must be even, got {mosaic.shape}")


def pack(mosaic: np.ndarray) -> np.ndarray:
    """H×W mosaic → 4×(H/2)×(W/2) planes, one per CFA position in row-major order.

    For RGGB the planes are R, G (red row), G (blue row), B. Values and dtype are unchanged
    (the result is a copy). H and W must be even.
    """
    _require_even_mosaic(mosaic)
    h, w = mosaic.shape
    return np.ascontiguousarray(mosaic.reshape(h // 2, 2, w // 2, 2).transpose(1, 3, 0, 2)).reshape(
        4, h // 2, w // 2
    )


def unpack(planes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack`: 4×h×w planes → 2h×2w mosaic."""
    if planes.ndim != 3 or planes.shape[0] != 4:
        raise ValueError(f"packed planes must have shape 4×h×w, got {planes.shape}")
    _, h, w = planes.shape
    return np.ascontiguousarray(planes.reshape(2, 2, h, w).transpose(2, 0, 3, 1)).reshape(
        2 * h, 2 * w
    )


def _shifted(cfa: CFA, dy: int, dx: int) -> CFA:
    """Pattern seen by a view whose origin is (dy, dx) sites into a ``cfa`` mosaic."""
    ch = np.array(cfa.channels).reshape(2, 2)
    ch = np.roll(ch, shift=(-(dy % 2), -(dx % 2)), axis=(0, 1))
    return CFA.from_channels(tuple(int(c) for c in ch.ravel()))


def crop(
    mosaic: np.ndarray, cfa: CFA | str, top: int, left: int, height: int, width: int
) -> tuple[np.ndarray, CFA]:
    """Crop a mosaic and return the pattern of the crop (changed when an offset is odd).

    The box must lie inside the mosaic; the result is a view.
    """
    cfa = CFA.parse(cfa)
    if mosaic.ndim != 2:
        raise ValueError(f"mosaic must be 2-D (H×W), got shape {mosaic.shape}")
    h, w = mosaic.shape
    if top < 0 or left < 0 or height <= 0 or width <= 0 or top + height > h or left + width > w:
        raise ValueError(
            f"crop box (top={top}, left={left}, height={height}, width={width}) "
            f"is outside the {h}×{w} mosaic"
        )
    return mosaic[top : top + height, left : left + width], _shifted(cfa, top, left)


def flip(mosaic: np.ndarray, cfa: CFA | str, axis: int) -> tuple[np.ndarray, CFA]:
    """Flip a mosaic (axis 1: left-right, axis 0: up-down) and return its new pattern.

    H and W must be even so that the flipped pattern is the same at every 2×2 block.
    """
    cfa = CFA.parse(cfa)
    _require_even_mosaic(mosaic)
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 (up-down) or 1 (left-right), got {axis}")
    ch = np.flip(np.array(cfa.channels).reshape(2, 2), axis=axis)
    return np.flip(mosaic, axis=axis), CFA.from_channels(tuple(int(c) for c in ch.ravel()))


def _hat_integral(t: np.ndarray) -> np.ndarray:
    """∫ from −∞ to t of the unit hat function max(0, 1 − |u|) du."""
    t = np.clip(t, -1.0, 1.0)
    return np.where(t < 0, (t + 1) ** 2 / 2, 1 - (1 - t) ** 2 / 2)


def _plane_weights(length: int, scale: float, phase: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps (indices, weights) that resample one CFA plane of a mosaic axis by ``scale``.

    The axis has ``length`` sites (even); the plane holds the sites ``phase, phase + 2, …``.
    Output site ``k`` of the resampled axis covers input sites ``[k·scale, (k + 1)·scale)``, so
    its centre is at input coordinate ``(k + ½)·scale − ½``. Output plane sample ``j`` (output
    site ``2j + phase``) is the mean, over a box of width ``scale`` plane samples (the output
    plane's spacing) centred there, of the input plane's linear interpolant: a linear ramp is
    reproduced exactly. The box is clipped to the plane and the weights renormalised. Returns
    ``(idx, w)``, both of shape (output plane length, taps), each row of ``w`` summing to 1.
    """
    n_in = length // 2
    n_out = int(length / scale) // 2
    centre = ((2 * np.arange(n_out) + phase + 0.5) * scale - 0.5 - phase) / 2  # plane units
    lo = np.clip(centre - scale / 2, 0.0, n_in - 1.0)
    hi = np.clip(centre + scale / 2, 0.0, n_in - 1.0)
    first = np.floor(lo).astype(np.int64)
    taps = int(np.max(np.ceil(hi).astype(np.int64) - first)) + 1 if n_out else 1
    idx = first[:, None] + np.arange(taps)
    w = _hat_integral(hi[:, None] - idx) - _hat_integral(lo[:, None] - idx)
    w /= w.sum(axis=1, keepdims=True)
    return np.minimum(idx, n_in - 1), w


def resample(mosaic: np.ndarray, scale_y: float, scale_x: float) -> np.ndarray:
    """Downscale a mosaic by ``scale_y`` rows and ``scale_x`` columns per output site.

    Keeps the CFA pattern and puts every colour plane where it belongs: output site (y, x)
    stands for the input area ``[y·scale_y, (y + 1)·scale_y) × [x·scale_x, (x + 1)·scale_x)``
    (in input sites) and each CFA position of the output is the box average, centred on the
    output site's centre, of the linear interpolant of the input sites of the same position
    (exact for linear ramps). A plain block mean
    of each packed plane would instead put the planes ±(f − 1)/(2f) output sites off their
    sites (R and B sampling the same point), which shows as colour fringes at edges.

    Scales are ≥ 1 (downscaling; non-integer allowed, e.g. to square non-square pixels). The
    output has ``⌊H / scale_y⌋`` rows and ``⌊W / scale_x⌋`` columns, each rounded down to an even
    count. Values stay in the input's units (counts, black level included): a weighted mean,
    rounded to the nearest integer for integer dtypes. Pure: the input is not modified.
    """
    _require_even_mosaic(mosaic)
    for name, scale in (("scale_y", scale_y), ("scale_x", scale_x)):
        if not (np.isfinite(scale) and scale >= 1):
            raise ValueError(f"{name} must be a finite number >= 1, got {scale}")
    h, w = mosaic.shape
    if int(h / scale_y) < 2 or int(w / scale_x) < 2:
        raise ValueError(f"mosaic {mosaic.shape} is too small to resample by {scale_y}×{scale_x}")
    planes = pack(mosaic).astype(np.float64)
    out = []
    for pos in range(4):
        py, px = divmod(pos, 2)
        iy, wy = _plane_weights(h, scale_y, py)
        ix, wx = _plane_weights(w, scale_x, px)
        rows = np.einsum("jt,jtx->jx", wy, planes[pos][iy])
        out.append(np.einsum("kt,jkt->jk", wx, rows[:, ix]))
    result = np.stack(out)
    if np.issubdtype(mosaic.dtype, np.integer):
        result = np.rint(result)
    return unpack(result.astype(mosaic.dtype))


def bin_mosaic(mosaic: np.ndarray, factor: int) -> np.ndarray:
    """Downscale a mosaic by an integer ``factor`` keeping its CFA pattern and plane alignment.

    :func:`resample` with ``scale_y = scale_x = factor``: each colour plane is averaged over the
    ``factor``×``factor`` input block each output site stands for, sampled at the block's
    centre. Values stay in the input's units, rounded to the input dtype. Rows and columns that
    do not fill a whole output site pair are dropped from the bottom and right.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"bin factor must be a positive integer, got {factor}")
    if factor == 1:
        return mosaic
    h, w = mosaic.shape
    if h // (2 * factor) == 0 or w // (2 * factor) == 0:
        raise ValueError(f"mosaic {mosaic.shape} is too small to bin by {factor}")
    return resample(mosaic, factor, factor)


def square_and_bin(
    mosaic: np.ndarray, pixel_aspect: float, max_side: int | None
) -> tuple[np.ndarray, int]:
    """Resample a sensor mosaic to square pixels, then Bayer-bin it to ``max_side``.

    A site ``pixel_aspect`` times as wide as tall (the Kodak DC120: 1.535) is squared by
    downsampling rows by ``pixel_aspect`` (columns by ``1 / pixel_aspect`` when it is below 1):
    nothing is invented. The binning factor is the least integer that brings the squared image's
    longer side to ``max_side`` or less; both run as one :func:`rawpairs.cfa.resample`, which
    keeps the CFA and every colour plane at its sites. Returns (mosaic, binning factor).
    """
    h, w = mosaic.shape
    square = abs(pixel_aspect - 1.0) <= 1e-3
    scale_y = 1.0 if square else max(pixel_aspect, 1.0)
    scale_x = 1.0 if square else max(1.0 / pixel_aspect, 1.0)
    longest = max(h / scale_y, w / scale_x)
    factor = 1
    if max_side is not None and longest > max_side:
        factor = math.ceil(longest / max_side)
    if square:
        return bin_mosaic(mosaic, factor), factor
    return resample(mosaic, scale_y * factor, scale_x * factor), factor
