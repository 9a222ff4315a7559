"""Where a sample is decoded and cropped: the checked :class:`Pair` of one record
(:func:`rawpairs.schema.decode_sample`) and the aligned RGGB crop of its mosaic and RGB (pure
numpy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rawpairs import cfa as cfa_ops
from rawpairs.camera import Camera
from rawpairs.cfa import CFA
from rawpairs.choices import Gamma, NoisePlacement, Tone
from rawpairs.schema import decode_sample

__all__ = [
    "Pair",
    "decode_pair",
    "flipped_cfa",
    "pad",
    "paired_rggb_crop",
    "rggb_black_level",
    "rggb_window",
]


@dataclass(frozen=True)
class Pair:
    """A decoded sample: uint16 H×W mosaic (counts), uint8 H×W×3 sRGB, camera, class (−1: none).

    An at-load sample has no ``mosaic`` (``None``); its recipe is the camera, ``tone``,
    ``gamma`` and ``noise_key`` (the seeded noise stream, ``None``: no seeded noise)."""

    key: str
    mosaic: np.ndarray | None
    rgb: np.ndarray
    camera: Camera
    cls: int
    noise_at_load: bool = False
    tone: Tone | None = None
    gamma: Gamma | None = None
    noise_key: int | None = None


def decode_pair(members: Mapping[str, bytes], shard: str, key: str) -> Pair:
    """Check and decode one sample with :func:`rawpairs.schema.decode_sample` (docs/schema.md);
    errors (:class:`~rawpairs.errors.CorruptInputError`) name the shard and the key."""
    sample = decode_sample(members, shard, key)
    render = sample.meta.render
    return Pair(
        key=key,
        mosaic=sample.raw,
        rgb=sample.rgb,
        camera=sample.meta.camera,
        cls=-1 if sample.label is None else sample.label,
        noise_at_load=render.noise is NoisePlacement.AT_LOAD,
        tone=render.tone,
        gamma=render.gamma,
        noise_key=int(render.noise_key, 16) if render.noise_key is not None else None,
    )


def rggb_black_level(cfa: CFA | str, black_level: Sequence[float]) -> np.ndarray:
    """Black levels (counts, float32 [4]) for the R, G(red row), G(blue row), B sites.

    ``black_level`` is per position of ``cfa`` (row-major 2×2). Flips and crops keep each green
    in the row of its red or blue neighbour, so this mapping holds for every re-phased crop.
    """
    cfa = CFA.parse(cfa)
    bl = np.asarray(black_level, dtype=np.float32).reshape(2, 2)
    ry, rx = cfa.red_position
    by, bx = 1 - ry, 1 - rx
    return np.array([bl[ry, rx], bl[ry, bx], bl[by, rx], bl[by, bx]], dtype=np.float32)


def _origin(extent: int, phase: int, size: int, rng: np.random.Generator | None) -> int:
    """Crop start on axis ``extent`` at parity ``phase``: random if ``rng``, else centred."""
    slack = max(0, (extent - phase - size) // 2)
    step = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
    return phase + 2 * step


def rggb_window(
    height: int, width: int, cfa: CFA, size: int, rng: np.random.Generator | None
) -> tuple[int, int, int, int]:
    """(top, left, rows, columns) of :func:`paired_rggb_crop`'s window in the trimmed (even),
    possibly flipped H×W sample whose (flipped) pattern is ``cfa``; the same draws from ``rng``."""
    ry, rx = cfa.red_position
    ch, cw = min(size, (height - ry) // 2 * 2), min(size, (width - rx) // 2 * 2)
    if ch <= 0 or cw <= 0:
        raise ValueError(f"a {(height, width)} mosaic holds no whole 2×2 RGGB block")
    return _origin(height, ry, ch, rng), _origin(width, rx, cw, rng), ch, cw


def flipped_cfa(cfa: CFA) -> CFA:
    """The pattern of an even-width mosaic mirrored left-right (RGGB ↔ GRBG, BGGR ↔ GBRG)."""
    return cfa_ops.flip(np.zeros((2, 2), np.uint8), cfa, 1)[1]


def paired_rggb_crop(
    mosaic: np.ndarray,
    rgb: np.ndarray,
    cfa: CFA | str,
    size: int,
    *,
    hflip: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """An aligned RGGB crop of at most ``size``×``size`` from a mosaic and its RGB (views).

    The sample is trimmed to even height and width (the last row/column goes; the phase is
    kept), mirrored left-right if ``hflip`` (:func:`rawpairs.cfa.flip` gives the new pattern),
    then cropped with its origin on a red site, so the crop is RGGB. The origin is random when
    ``rng`` is given, else centred. A side shorter than ``size`` (after re-phasing) gives a shorter
    crop of even length: the caller pads it. ``size`` must be even.
    """
    if size <= 0 or size % 2:
        raise ValueError(f"crop size must be a positive even number, got {size}")
    if mosaic.shape != rgb.shape[:2]:
        raise ValueError(f"mosaic {mosaic.shape} and RGB {rgb.shape} are not aligned")
    h, w = mosaic.shape[0] // 2 * 2, mosaic.shape[1] // 2 * 2
    mosaic, rgb, cfa = mosaic[:h, :w], rgb[:h, :w], CFA.parse(cfa)
    if hflip:
        mosaic, cfa = cfa_ops.flip(mosaic, cfa, 1)
        rgb = rgb[:, ::-1]
    top, left, ch, cw = rggb_window(h, w, cfa, size, rng)
    out, phase = cfa_ops.crop(mosaic, cfa, top, left, ch, cw)
    assert phase is CFA.RGGB
    return out, rgb[top : top + ch, left : left + cw]


def pad(array: np.ndarray, height: int, width: int, axes: tuple[int, int]) -> np.ndarray:
    """Zero-pad ``axes`` at the bottom/right to ``height``×``width`` (keeps the CFA phase)."""
    pad = [(0, 0)] * array.ndim
    pad[axes[0]] = (0, height - array.shape[axes[0]])
    pad[axes[1]] = (0, width - array.shape[axes[1]])
    return np.pad(array, pad)
