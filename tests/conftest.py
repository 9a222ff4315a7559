"""Fixtures shared by tests/rawpairs and tests/distill (no torch here: ``pytest tests/rawpairs``
runs where only ``rawpairs[dev]`` is installed).

``pair_shards``: 3 shards × 8 samples cut from scikit-image's bundled photos (no download), their
RAW side simulated by the inverse ISP (:func:`rawpairs.unprocess.simulate_raw`, with noise), with
all four CFA layouts, several black/white levels and ``cls`` on some samples.

``pattern_shards``: one shard, one known-pattern sample per CFA layout
(:func:`shardkit.pattern_sample`).

OpenMP runs single-threaded (also in subprocesses, via ``OMP_NUM_THREADS``): on a loaded 2-core
machine two spinning OpenMP threads made an EfficientNet forward pass 280× slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from shardkit import encode_members, pattern_sample, write_shard

from rawpairs.cfa import CFA
from rawpairs.priors import CapturePriors
from rawpairs.unprocess import simulate_raw

CFA_CYCLE = tuple(CFA)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# (black level per CFA position, white level, bit depth)
LEVELS = (
    ((0.0, 0.0, 0.0, 0.0), 1023.0, 10),
    ((64.0, 64.0, 64.0, 64.0), 4095.0, 12),
    ((510.0, 512.0, 514.0, 508.0), 16383.0, 14),
)


@pytest.fixture(scope="session")
def pair_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rawpairs-00000{0,1,2}.tar, 8 samples each, even sizes 96–160 px (crops <= 94 need no pad)."""
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
