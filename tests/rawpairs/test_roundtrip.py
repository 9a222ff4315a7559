"""Forward ∘ inverse ISP on real photos: rawpairs.isp.process(unprocess(photo)) ≈ photo.

The camera is the centre of the default capture priors (Brooks et al.'s four matrices mixed
equally, red gain 2.15, blue gain 1.7, digital gain 1 / 0.8, 12 bits), noise off. Measured PSNRs
are listed in docs/unprocess.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from rawpairs.camera import Camera
from rawpairs.cfa import CFA
from rawpairs.isp import process
from rawpairs.priors import BROOKS_CAMERAS
from rawpairs.tone import DEFAULT_TONE
from rawpairs.unprocess import safe_invert_gains, srgb8_to_linear, srgb_to_camera, unprocess

PHOTOS = ("astronaut", "chelsea", "coffee")


def photo(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()
    return np.ascontiguousarray(image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2])


def central_camera(cfa: CFA) -> Camera:
    return Camera(
        cfa=cfa,
        black_level=(256.0,) * 4,
        white_level=4095.0,
        bit_depth=12,
        wb_gains=(2.15, 1.0, 1.7),
        xyz_to_cam=np.mean(list(BROOKS_CAMERAS.values()), axis=0),
        digital_gain=1 / 0.8,
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


# PSNR floors (dB): measured values are in docs/unprocess.md. With the default tone curve
# (smoothstep on display values) coffee measures 29.5 dB: the curve's slope of 1.5 in the
# mid-tones amplifies the demosaicing error there (30.2 dB with linear smoothstep).
FLOORS = {
    ("astronaut", "display_smoothstep"): 31.5,
    ("chelsea", "display_smoothstep"): 35.5,
    ("coffee", "display_smoothstep"): 29.4,
    ("astronaut", "smoothstep"): 30.0,
    ("chelsea", "smoothstep"): 30.0,
    ("coffee", "smoothstep"): 30.0,
}


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize(("name", "tone"), list(FLOORS))
def test_malvar_round_trip_psnr(name: str, tone: str, cfa: CFA) -> None:
    image, camera = photo(name), central_camera(cfa)
    raw = unprocess(image, camera, noise=False, tone=tone)
    rendered = process(raw, camera, demosaic="malvar", tone=tone)
    assert rendered.shape == image.shape and rendered.dtype == np.uint8
    assert psnr(rendered, image) >= FLOORS[name, tone]


def test_default_tone_round_trip() -> None:
    """The defaults of both directions are the same curve (display smoothstep)."""
    image, camera = photo("chelsea"), central_camera(CFA.RGGB)
    rendered = process(unprocess(image, camera, noise=False), camera)
    assert psnr(rendered, image) >= FLOORS["chelsea", DEFAULT_TONE]


@pytest.mark.parametrize("name", PHOTOS)
def test_round_trip_without_mosaic_is_exact_where_nothing_clips(name: str) -> None:
    """Inverse stages before the mosaic, then the forward ISP from ``camera_rgb``: every pixel the
    inverse does not clip (camera values in [0, 1], below the highlight mask) comes back exactly."""
    image, camera = photo(name), central_camera(CFA.RGGB)
    camera_rgb = srgb_to_camera(srgb8_to_linear(image), camera)
    raw_rgb = safe_invert_gains(camera_rgb, camera)
    gains = (np.array(camera.wb_gains) * camera.digital_gain).astype(np.float32)
    rendered = process(np.clip(raw_rgb, 0, 1) * gains, camera, start="camera_rgb")
    unclipped = np.all((raw_rgb >= 0) & (raw_rgb <= 1), axis=-1) & (camera_rgb.mean(-1) <= 0.9)
    assert unclipped.mean() > 0.99
    np.testing.assert_array_equal(rendered[unclipped], image[unclipped])
