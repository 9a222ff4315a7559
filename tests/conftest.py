"""Shared fixtures: small RAW–RGB pair shards following docs/schema.md, encoded by the builder's
own encoder (:func:`rawpairs.schema.encode_sample`).

``pair_shards``: 3 shards × 8 samples cut from scikit-image's bundled photos (no download), their
RAW side simulated by the inverse ISP (:func:`rawpairs.unprocess.simulate_raw`, with noise), with
all four CFA layouts, several black/white levels and ``cls`` on some samples.

Tests run torch and OpenMP single-threaded (also in subprocesses, via ``OMP_NUM_THREADS``): the
tensors here are tiny, and on a loaded 2-core machine two spinning OpenMP threads made an
EfficientNet forward pass 280× slower (1.9 s instead of 7 ms).

``pattern_shards``: one shard whose samples make alignment checkable: the mosaic value at (y, x)
is ``black[position] + y·W + x`` and the RGB pixel at (y, x) is (y, x, 100·CFA channel).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import hashlib
import io
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from rawpairs.camera import XYZ_TO_SRGB, Camera
from rawpairs.cfa import CFA, channel_index_map
from rawpairs.schema import (
    Crop,
    NoisePlacement,
    RenderInfo,
    RenderMethod,
    SampleMeta,
    SourceInfo,
    SourceKind,
    encode_sample,
)

torch.set_num_threads(1)

CFA_CYCLE = tuple(CFA)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# (black level per CFA position, white level, bit depth)
LEVELS = (
    ((0.0, 0.0, 0.0, 0.0), 1023.0, 10),
    ((64.0, 64.0, 64.0, 64.0), 4095.0, 12),
    ((510.0, 512.0, 514.0, 508.0), 16383.0, 14),
)


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


@pytest.fixture(scope="session")
def pair_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rawpairs-00000{0,1,2}.tar, 8 samples each, even sizes 96–160 px (crops <= 94 need no pad)."""
    import skimage.data

    from rawpairs.priors import CapturePriors
    from rawpairs.unprocess import simulate_raw

    folder = tmp_path_factory.mktemp("pair_shards")
    rng = np.random.default_rng(20240501)
    photos = {name: getattr(skimage.data, name)() for name in PHOTOS}
    samples = []
    for i in range(24):
        name = PHOTOS[i % len(PHOTOS)]
        photo = photos[name]
        h, w = (2 * int(v) for v in rng.integers(48, 81, size=2))
        top = int(rng.integers(0, photo.shape[0] - h + 1))
        left = int(rng.integers(0, photo.shape[1] - w + 1))
        rgb = np.ascontiguousarray(photo[top : top + h, left : left + w, :3])
        black, white, bits = LEVELS[i % len(LEVELS)]
        priors = CapturePriors(
            cfa=(CFA_CYCLE[i % 4],), black_level=black, white_level=white, bit_depth=bits
        )
        mosaic, camera = simulate_raw(rgb, rng, priors)
        key = f"{name}_png_c{i}"
        cls = PHOTOS.index(name) if i % 3 else None
        samples.append((key, encode_members(key, mosaic, rgb, camera, cls)))
    for s in range(3):
        write_shard(folder / f"rawpairs-{s:06d}.tar", samples[8 * s : 8 * s + 8])
    return folder


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


@pytest.fixture(scope="session")
def pattern_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shard, one known-pattern sample per CFA layout (sizes odd and even, ≤ 100 px)."""
    folder = tmp_path_factory.mktemp("pattern_shards")
    sizes = ((70, 90), (71, 93), (64, 64), (99, 80))
    blacks = ((512.0, 520.0, 530.0, 540.0), (0.0, 0.0, 0.0, 0.0), (64.0, 60.0, 62.0, 66.0))
    samples = [
        pattern_sample(f"pattern_{cfa.value.lower()}", cfa, h, w, blacks[i % 3])
        for i, (cfa, (h, w)) in enumerate(zip(CFA, sizes, strict=True))
    ]
    write_shard(folder / "rawpairs-000000.tar", samples)
    return folder
