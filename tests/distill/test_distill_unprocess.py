"""distill.unprocess (torch, batched) against rawpairs.unprocess (the numpy/numba reference)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from skimage import data

from distill.unprocess import camera_params, make_raw, unprocess
from rawpairs.cfa import CFA
from rawpairs.choices import Gamma, Tone
from rawpairs.priors import CapturePriors, sample_camera
from rawpairs.rng import key_normals, sample_rng
from rawpairs.unprocess import unprocess as unprocess_cpu

_CASES = list(itertools.product(CFA, Tone, [Gamma.SRGB, Gamma.POWER_2_2], [False, True]))


def _photo(seed: int) -> np.ndarray:
    """A 64×96 crop of astronaut with a blown-out corner (sites in the highlight mask)."""
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, 512 - 64), rng.integers(0, 512 - 96)
    rgb = data.astronaut()[top : top + 64, left : left + 96].copy()
    rgb[:12, :20] = rng.integers(235, 256, size=(12, 20, 3))
    return rgb


def _batch(params: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([p[k] for p in params])) for k in params[0]}


@pytest.mark.parametrize(("cfa", "tone", "gamma", "noise"), _CASES)
def test_torch_unprocess_equals_the_cpu_path(cfa: CFA, tone: Tone, gamma: Gamma, noise: bool):
    """Same counts as rawpairs.unprocess on a batch of three cameras (bit depths 10/12/14,
    per-position black levels), up to one count at a rounding boundary; seeded noise from the
    key's stream."""
    photos, params, expected, normals = [], [], [], []
    for i, bits in enumerate((10, 12, 14)):
        priors = CapturePriors(cfa=cfa.value, bit_depth=bits)
        camera = sample_camera(sample_rng(7, i, bits), priors)
        camera = camera.replace(black_level=tuple(2 ** (bits - 4) + d for d in (0, 3, -2, 5)))
        rgb, key = _photo(i), 0x1234_5678_9ABC_DEF0 + i
        photos.append(rgb)
        params.append(camera_params(camera, tone, gamma))
        expected.append(
            unprocess_cpu(rgb, camera, tone=tone, gamma=gamma, noise=noise, noise_key=key)
        )
        normals.append(key_normals(key, rgb.shape[:2]))
    p = _batch(params)
    counts = unprocess(
        torch.from_numpy(np.stack(photos)),
        lut=p["lut"], rgb_to_cam=p["rgb_to_cam"], gains=p["gains"], channels=p["channels"],
        black=p["black"], white=p["white"], max_count=p["max_count"], shot=p["shot"],
        read=p["read"], z=torch.from_numpy(np.stack(normals)) if noise else None,
    )  # fmt: skip
    want = np.stack(expected).astype(np.int64)
    got = counts.numpy().astype(np.int64)
    assert np.abs(got - want).max() <= 1
    assert np.mean(got != want) < 1e-3


def test_make_raw_fills_only_the_recipe_rows_and_normalises():
    """make_raw: an RGGB recipe row becomes (counts − black)/(white − black) planes of the CPU
    mosaic; padding outside the extent is zero; other rows are untouched."""
    camera = sample_camera(sample_rng(3), CapturePriors(cfa="RGGB", shot_noise=0.0))
    rgb = _photo(5)[:32, :32]
    p = camera_params(camera, Tone.DISPLAY_SMOOTHSTEP, Gamma.SRGB)
    raw = torch.full((2, 4, 16, 16), 7.0)
    recipe = {
        "rows": torch.tensor([1]),
        "rgb": torch.from_numpy(rgb)[None],
        **{k: torch.from_numpy(np.asarray(p[k]))[None] for k in
           ("lut", "rgb_to_cam", "gains", "black", "white", "max_count", "shot", "read")},
        "noise": torch.tensor([0]),
        "z": torch.zeros(1, 32, 32),
        "low_light": torch.tensor([1.0]),
        "extent": torch.tensor([[32, 30]]),
        "seed": torch.tensor(0),
    }  # fmt: skip
    out = make_raw(raw, recipe)
    assert torch.equal(out[0], raw[0])
    mosaic = unprocess_cpu(rgb, camera, noise=False).astype(np.float32)
    black = np.tile(camera.black_level_array, (16, 16))
    want = (mosaic - black) / (np.float32(camera.white_level) - black)
    want[:, 30:] = 0
    got = out[1].numpy()
    planes = np.stack([want[0::2, 0::2], want[0::2, 1::2], want[1::2, 0::2], want[1::2, 1::2]])
    np.testing.assert_allclose(got, planes, atol=1.5 / (camera.white_level - camera.black_level[0]))
