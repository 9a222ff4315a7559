"""Where an at-load example is made (``rawpairs build --unprocess at_load``: RGB + recipe, no
stored RAW): the paired crop and flip of its RGB and seeded noise, its camera (recorded or, with
``fresh_cameras``, drawn anew), and the recipe from which :func:`distill.unprocess.make_raw`
makes its RAW — here on the CPU, or batched on the trainer's device (``raw_on_device``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distill.pair import Pair, flipped_cfa, pad, rggb_black_level, rggb_window
from distill.targets import isp_render, teacher_rgb, warn_small_sample
from distill.unprocess import NOISE_FRESH, NOISE_NONE, NOISE_SEEDED, camera_params, make_raw
from rawpairs import cfa as cfa_ops
from rawpairs.camera import Camera
from rawpairs.choices import Gamma
from rawpairs.priors import sample_camera
from rawpairs.rng import key_normals
from rawpairs.tone import DEFAULT_TONE

__all__ = ["at_load_example", "recipe_batch"]


def at_load_example(
    pair: Pair,
    rng: np.random.Generator,
    *,
    crop: int,
    teacher_size: int,
    student_input: str,
    flip: bool,
    augment: bool,
    low_light: tuple[float, float] | None,
    isp_reference: bool,
    fresh_cameras: bool,
    raw_on_device: bool,
) -> dict[str, Any]:
    """``distill.examples.make_example`` of an at-load pair, ``flip`` already drawn (further
    draws from ``rng``, in order: crop, camera, low light, noise seed)."""
    rgb, z, window = _crop(pair, rng if augment else None, flip, crop, fresh_cameras)
    camera = sample_camera(rng) if fresh_cameras else pair.camera
    factor = float(rng.uniform(low_light[0], low_light[1])) if low_light is not None else 1.0
    if window != (crop, crop):
        warn_small_sample(pair, window, crop, stacklevel=3)
    recipe = _recipe(pair, camera, rgb, z, window, crop, factor, fresh_cameras)
    recipe["seed"] = int(rng.integers(0, 2**63))
    shape = (4, crop // 2, crop // 2) if student_input == "packed" else (1, crop, crop)
    example: dict[str, Any] = {
        "raw": np.zeros(shape, np.float32),
        "rgb": teacher_rgb(rgb, crop, teacher_size),
        "wb": np.asarray(camera.wb_gains, dtype=np.float32),
        "cls": pair.cls,
        "key": pair.key,
        "recipe": recipe,
    }
    if raw_on_device:
        return example
    planes = make_raw(torch.zeros((1, 4, crop // 2, crop // 2)), recipe_batch([recipe], [0]))
    planes_np = planes[0].numpy()
    example["raw"] = planes_np if student_input == "packed" else cfa_ops.unpack(planes_np)[None]
    del example["recipe"]
    if isp_reference:
        example["isp"] = isp_render(planes_np, camera, teacher_size)
    return example


def _crop(
    pair: Pair, rng: np.random.Generator | None, flip: bool, crop: int, fresh_cameras: bool
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """The RGGB window of ``pair``'s RGB (the mosaic it stands for, flipped if ``flip``;
    random origin from ``rng``, else centred): the RGB crop, the same crop of the sample's
    seeded noise (``None``: no seeded noise, or ``fresh_cameras``) and the window's size."""
    h, w = pair.rgb.shape[0] // 2 * 2, pair.rgb.shape[1] // 2 * 2
    rgb, cfa = pair.rgb[:h, :w], pair.camera.cfa
    if flip:
        rgb, cfa = rgb[:, ::-1], flipped_cfa(cfa)
    top, left, ch, cw = rggb_window(h, w, cfa, crop, rng)
    rgb = rgb[top : top + ch, left : left + cw]
    z = None
    if pair.noise_key is not None and not fresh_cameras:
        # The stream runs row-major over the sample: draw the rows up to the window's end.
        z = key_normals(pair.noise_key, (top + ch, pair.rgb.shape[1]))[:, :w]
        z = (z[:, ::-1] if flip else z)[top:, left : left + cw]
    return rgb, z, (ch, cw)


def _recipe(
    pair: Pair,
    camera: Camera,
    rgb: np.ndarray,
    z: np.ndarray | None,
    window: tuple[int, int],
    crop: int,
    factor: float,
    fresh_cameras: bool,
) -> dict[str, Any]:
    """The RAW recipe (:data:`distill.unprocess.RECIPE_KEYS` but ``seed``) of an RGB crop
    (zero-padded to ``crop``): ``camera``'s unprocessing parameters, the noise code, the seeded
    noise ``z``, the low-light ``factor`` and the crop's ``extent``."""
    params = camera_params(camera, pair.tone or DEFAULT_TONE, pair.gamma or Gamma.SRGB)
    del params["channels"]  # the crop is RGGB
    noise = (
        NOISE_SEEDED if z is not None
        else NOISE_FRESH if fresh_cameras or pair.noise_at_load
        else NOISE_NONE
    )  # fmt: skip
    zeros = np.zeros((crop, crop), np.float32)
    return {
        **params,
        "rgb": pad(np.ascontiguousarray(rgb), crop, crop, (0, 1)),
        "black": rggb_black_level(camera.cfa, camera.black_level),
        "noise": np.int64(noise),
        "z": pad(z, crop, crop, (0, 1)) if z is not None else zeros,
        "low_light": np.float32(factor),
        "extent": np.array(window, np.int64),
    }  # fmt: skip


def recipe_batch(recipes: list[dict[str, Any]], rows: list[int]) -> dict[str, torch.Tensor]:
    """The batch ``recipe`` (:data:`distill.unprocess.RECIPE_KEYS`) of at-load examples at
    ``rows``; ``seed`` (of the fresh-noise generator) is a function of theirs."""
    batch = {
        name: torch.from_numpy(np.stack([np.asarray(r[name]) for r in recipes]))
        for name in recipes[0]
        if name != "seed"
    }
    state = np.random.SeedSequence([r["seed"] for r in recipes]).generate_state(2, np.uint32)
    batch["seed"] = torch.tensor(int(state[0]) << 31 | int(state[1]) >> 1, dtype=torch.int64)
    batch["rows"] = torch.tensor(rows, dtype=torch.int64)
    return batch
