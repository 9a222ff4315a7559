"""Shard-writing helpers for tests of both packages: small RAW–RGB pair samples following
docs/schema.md, encoded by the builder's own encoder (:func:`rawpairs.schema.encode_sample`).

``pattern_sample`` makes alignment checkable: the mosaic value at (y, x) is
``black[position] + y·W + x`` and the RGB pixel at (y, x) is (y, x, 100·CFA channel).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from rawpairs.camera import XYZ_TO_SRGB, Camera
from rawpairs.cfa import CFA, channel_index_map
from rawpairs.choices import NoisePlacement
from rawpairs.metadata import Crop, RenderInfo, RenderMethod, SampleMeta, SourceInfo, SourceKind
from rawpairs.schema import encode_sample


def make_camera(cfa: CFA, black: tuple[float, ...], white: float, bits: int) -> Camera:
    """A valid camera with identity colour (camera RGB = linear sRGB) and small noise."""
    return Camera(
        cfa=cfa,
        black_level=black,
        white_level=white,
        bit_depth=bits,
        wb_gains=(1.0, 1.0, 1.0),
        xyz_to_cam=XYZ_TO_SRGB,
        noise_shot=1e-3,
        noise_read=1e-5,
        provenance=dict.fromkeys(("cfa", "black_level", "white_level"), "user"),
    )


def sample_meta(key: str, camera: Camera, height: int, width: int) -> SampleMeta:
    """Metadata of a whole-image sample simulated from a photo ``<key>.png`` (seed 0)."""
    source = SourceInfo(
        path=f"{key}.png",
        kind=SourceKind.RGB,
        sha256=hashlib.sha256(key.encode()).hexdigest(),
        height=height,
        width=width,
    )
    render = RenderInfo(
        RenderMethod.UNPROCESS, NoisePlacement.IN_RAW, tone="smoothstep", gamma="srgb"
    )
    return SampleMeta(key, camera, render, source, Crop(0, 0, height, width), seed=0)


def encode_members(
    key: str, mosaic: np.ndarray, rgb: np.ndarray, camera: Camera, cls: int | None = None
) -> dict[str, bytes]:
    """A sample's tar members (without ``__key__``), encoded as the builder encodes them."""
    meta = sample_meta(key, camera, *mosaic.shape)
    members = encode_sample(meta, mosaic, rgb, cls)
    return {name: data for name, data in members.items() if name != "__key__"}  # type: ignore[misc]


def write_shard(path: Path, samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> Path:
    """Write ``(key, members)`` samples as a tar with fixed member metadata; returns ``path``."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o444
                tar.addfile(info, io.BytesIO(data))
    return path


def pattern_sample(
    key: str, cfa: CFA, height: int, width: int, black: tuple[float, ...], white: float = 16383.0
) -> tuple[str, dict[str, bytes]]:
    """A sample whose RAW and RGB values name their own coordinates (see module docstring)."""
    y, x = np.mgrid[:height, :width]
    camera = make_camera(cfa, black, white, 14)
    black_map = np.asarray(black).reshape(2, 2)[y % 2, x % 2]
    mosaic = (black_map + y * width + x).astype(np.uint16)
    channel = channel_index_map(cfa, height, width).astype(np.int64)
    rgb = np.stack([y, x, 100 * channel], axis=-1).astype(np.uint8)
    return key, encode_members(key, mosaic, rgb, camera)


def pair(height: int = 12, width: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random 10-bit mosaic and 8-bit RGB of one size (seeded)."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 1024, (height, width), dtype=np.uint16),
        rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
    )


CAMERA = make_camera(CFA.GBRG, (64.0, 60.0, 62.0, 66.0), 1023.0, 10)


def members_of(key: str = "k0", label: int | None = None, **kwargs) -> dict[str, bytes]:
    """A random sample's members (``shape=``, ``meta=`` and encoder options in ``kwargs``)."""
    raw, rgb = pair(*kwargs.pop("shape", (12, 16)))
    meta = kwargs.pop("meta", None) or sample_meta(key, CAMERA, *raw.shape)
    members = encode_sample(meta, raw, rgb, label, **kwargs)
    return {k: v for k, v in members.items() if k != "__key__"}  # type: ignore[misc]
