"""Where a training example is made from a decoded :class:`~distill.pair.Pair`: the paired RGGB
crop, flip, normalisation, load-time noise and low light of a stored RAW (pure numpy, one
generator per sample); an at-load pair is handed to :mod:`distill.at_load`.

Units: ``raw`` is linear sensor signal with the black level removed per CFA position and divided
by ``white − black`` (0 = black, 1 = saturation; not clipped); ``rgb`` is sRGB in [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distill.at_load import at_load_example
from distill.config import STUDENT_INPUTS
from distill.pair import Pair, pad, paired_rggb_crop, rggb_black_level
from distill.targets import isp_render, teacher_rgb, warn_small_sample
from rawpairs import cfa as cfa_ops
from rawpairs.camera import Camera
from rawpairs.noise import add_noise, darken

__all__ = ["make_example"]


def make_example(
    pair: Pair,
    rng: np.random.Generator,
    *,
    crop: int,
    teacher_size: int,
    student_input: str = "packed",
    augment: bool = True,
    hflip: bool = True,
    low_light: tuple[float, float] | None = None,
    isp_reference: bool = False,
    fresh_cameras: bool = False,
    raw_on_device: bool = False,
) -> dict[str, Any]:
    """One example: ``raw`` float32 (4, crop/2, crop/2) or (1, crop, crop), ``rgb`` float32
    (3, teacher_size, teacher_size) in [0, 1], ``wb`` float32 (3,) the sample's recorded
    white-balance gains (R, G, B; ``camera.wb_gains``), ``cls`` and ``key``.

    ``isp_reference``: also ``isp`` float32 (3, teacher_size, teacher_size), the crop's RAW (as
    returned in ``raw``, clipped to [0, 1]) through the forward ISP with the sample's metadata
    (:func:`rawpairs.isp.process` from ``linear`` to ``srgb``, its default stages) — the
    evaluation's upper reference.

    ``augment``: random crop origin and, with ``hflip``, a left-right flip with probability 1/2;
    otherwise the centre crop, unflipped. ``low_light=(lo, hi)``: the RAW (which carries its own
    sensor noise) becomes the same capture with a factor drawn uniformly in that range less light:
    :func:`rawpairs.noise.darken` divides it and adds the shot/read noise the camera's
    ``noise_shot``/``noise_read`` lack at that exposure; the RGB target is unchanged. All draws
    come from ``rng`` in a fixed order (flip, crop, load-time noise, low light). A sample built
    with ``--noise at_load`` (``render.noise == "at_load"``) gets fresh ``N(0, shot·x + read)``
    noise here.
    A sample smaller than the crop is zero-padded at the bottom/right in both RAW (after
    normalisation: black) and RGB, with a :class:`~distill.targets.SmallSampleWarning`; ``raw``
    is not clipped.

    An at-load pair (no ``mosaic``) gets the same flip and crop of its RGB (and of its seeded
    noise); its RAW is made by :func:`distill.unprocess.make_raw` on the CPU here, or, with
    ``raw_on_device``, ``raw`` is zeros and the example carries its ``recipe`` for the trainer
    (:func:`distill.at_load.at_load_example`). ``fresh_cameras``: such a pair gets a camera drawn
    from ``rawpairs``' default capture priors (after the crop draws) and fresh noise, instead of
    its recorded camera and noise.
    """
    if student_input not in STUDENT_INPUTS:
        raise ValueError(f"student_input must be one of {STUDENT_INPUTS}, got {student_input!r}")
    flip = augment and hflip and bool(rng.random() < 0.5)
    if pair.mosaic is None:
        return at_load_example(
            pair, rng, crop=crop, teacher_size=teacher_size, student_input=student_input,
            flip=flip, augment=augment, low_light=low_light, isp_reference=isp_reference,
            fresh_cameras=fresh_cameras, raw_on_device=raw_on_device,
        )  # fmt: skip
    assert pair.mosaic is not None
    camera = pair.camera
    mosaic, rgb = paired_rggb_crop(
        pair.mosaic, pair.rgb, camera.cfa, crop, hflip=flip, rng=rng if augment else None
    )
    planes = _sensor_planes(mosaic, camera, rng, pair.noise_at_load, low_light)
    if mosaic.shape != (crop, crop):
        warn_small_sample(pair, mosaic.shape, crop, stacklevel=2)
        planes = pad(planes, crop // 2, crop // 2, (1, 2))
    raw = planes if student_input == "packed" else cfa_ops.unpack(planes)[None]
    example = {
        "raw": np.ascontiguousarray(raw, dtype=np.float32),
        "rgb": teacher_rgb(rgb, crop, teacher_size),
        "wb": np.asarray(camera.wb_gains, dtype=np.float32),
        "cls": pair.cls,
        "key": pair.key,
    }
    if isp_reference:
        example["isp"] = isp_render(planes, camera, teacher_size)
    return example


def _sensor_planes(
    mosaic: np.ndarray,
    camera: Camera,
    rng: np.random.Generator,
    noise_at_load: bool,
    low_light: tuple[float, float] | None,
) -> np.ndarray:
    """An RGGB mosaic crop (counts) → normalised float32 planes 4×h/2×w/2, with the load-time
    noise of a ``--noise at_load`` sample and the ``low_light`` darkening (in that order)."""
    black = rggb_black_level(camera.cfa, camera.black_level)[:, None, None]
    planes = (cfa_ops.pack(mosaic).astype(np.float32) - black) / (
        np.float32(camera.white_level) - black
    )
    if noise_at_load:
        planes = add_noise(planes, camera.noise_shot, camera.noise_read, rng, out=planes)
    if low_light is not None:
        factor = float(rng.uniform(low_light[0], low_light[1]))
        planes = darken(planes, factor, camera.noise_shot, camera.noise_read, rng)
    return planes


