"""rawpairs.unprocess: each stage inverts its forward stage, the fused path equals the reference
bit for bit, quantisation, errors, determinism under a seed."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rawpairs import isp
from rawpairs.camera import Camera
from rawpairs.cfa import CFA, channel_index_map
from rawpairs.choices import Gamma, Tone
from rawpairs.demosaic import demosaic
from rawpairs.priors import BROOKS_CAMERAS, CapturePriors, sample_camera
from rawpairs.tone import encode_gamma, tone
from rawpairs.unprocess import (
    mosaic,
    safe_invert_gains,
    simulate_raw,
    srgb8_to_linear,
    srgb_to_camera,
    to_counts,
    unprocess,
    unprocess_reference,
)

ASTRONAUT = np.ascontiguousarray(skimage.data.astronaut()[100:228, 160:320])  # 128×160, varied
# Near-white content: 30% of its sites are in the highlight mask (mean camera value > 0.9).
BRIGHT = (255 - ASTRONAUT // 12).astype(np.uint8)
ALL_CODES = np.stack(
    [np.arange(256).reshape(16, 16), np.arange(256)[::-1].reshape(16, 16), np.full((16, 16), 7)],
    axis=-1,
).astype(np.uint8)


def camera(cfa: CFA | str = "RGGB", bits: int = 12, **changes) -> Camera:
    """A Brooks-like camera with distinct per-position black levels."""
    black = 2 ** (bits - 4)
    kwargs = {
        "cfa": cfa,
        "black_level": (black, black + 2, black - 2, black + 1),
        "white_level": 2**bits - 1,
        "bit_depth": bits,
        "wb_gains": (2.1, 1.0, 1.7),
        "xyz_to_cam": np.mean(list(BROOKS_CAMERAS.values()), axis=0),
        "digital_gain": 1.25,
        "noise_shot": 2e-3,
        "noise_read": 3e-6,
    }
    kwargs.update(changes)
    return Camera(**kwargs)


# Each stage inverts its forward stage -------------------------------------------------------
@pytest.mark.parametrize("curve", list(Tone))
@pytest.mark.parametrize("gamma", Gamma.values())
def test_linear_table_inverts_tone_gamma_and_quantisation(curve: str, gamma: str) -> None:
    linear = srgb8_to_linear(ALL_CODES, curve, gamma)
    assert linear.dtype == np.float32 and linear.min() >= 0 and linear.max() <= 1
    encoded = encode_gamma(tone(linear, curve, gamma), gamma)
    np.testing.assert_allclose(encoded, ALL_CODES / 255.0, rtol=0, atol=1e-5)
    forward = isp.process(linear, camera(), start="linear_srgb", tone=curve, gamma=gamma)
    np.testing.assert_array_equal(forward, ALL_CODES)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_srgb_to_camera_inverts_colour_correction(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cam = sample_camera(rng, CapturePriors(matrix_pool="both"))
    linear = rng.random((6, 8, 3), dtype=np.float32)
    camera_rgb = srgb_to_camera(linear, cam)
    assert camera_rgb.dtype == np.float32
    np.testing.assert_allclose(isp.color_correct(camera_rgb, cam), linear, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cfa", list(CFA))
def test_safe_invert_gains_inverts_white_balance_below_the_highlights(cfa: CFA) -> None:
    cam = camera(cfa)
    rng = np.random.default_rng(0)
    camera_rgb = rng.uniform(0.0, 0.9, size=(32, 32, 3)).astype(np.float32)  # gray <= 0.9
    raw = mosaic(np.clip(safe_invert_gains(camera_rgb, cam), 0.0, 1.0), cfa)
    balanced = isp.white_balance(raw, cam)
    np.testing.assert_allclose(balanced, mosaic(camera_rgb, cfa), rtol=0, atol=1e-5)
    gains = 1.0 / (np.array(cam.wb_gains) * cam.digital_gain)
    np.testing.assert_allclose(safe_invert_gains(camera_rgb, cam), camera_rgb * gains, rtol=1e-6)


def test_safe_invert_gains_spares_highlights() -> None:
    cam = camera()
    gains = 1.0 / (np.array(cam.wb_gains) * cam.digital_gain)
    gray = np.linspace(0.85, 1.0, 31, dtype=np.float32)
    out = safe_invert_gains(np.repeat(gray[:, None], 3, axis=1), cam)
    applied = out / gray[:, None]
    np.testing.assert_allclose(applied[gray <= 0.9], np.broadcast_to(gains, (11, 3)), rtol=1e-6)
    np.testing.assert_allclose(applied[-1], 1.0, rtol=1e-6)  # white stays white
    assert np.all(np.diff(applied, axis=0) >= -1e-7)  # rises smoothly from gains to 1
    assert np.all(applied >= gains * (1 - 1e-6))


@pytest.mark.parametrize("cfa", list(CFA))
def test_mosaic_keeps_each_sites_cfa_channel(cfa: CFA) -> None:
    image = np.random.default_rng(1).random((6, 10, 3)).astype(np.float32)
    channel = channel_index_map(cfa, 6, 10)
    expected = np.take_along_axis(image, channel[..., None].astype(np.int64), axis=2)[..., 0]
    np.testing.assert_array_equal(mosaic(image, cfa), expected)
    flat = np.broadcast_to(np.float32([0.2, 0.5, 0.7]), (8, 8, 3))
    for method in ("malvar", "bilinear"):  # demosaicing recovers a constant image exactly
        np.testing.assert_allclose(demosaic(mosaic(flat, cfa), cfa, method), flat, atol=1e-6)


@pytest.mark.parametrize("bits", [10, 12, 14])
def test_to_counts_inverts_normalisation(bits: int) -> None:
    cam = camera("GRBG", bits)
    black = cam.black_level_array
    span = cam.white_level - black
    x = np.random.default_rng(bits).random((64, 64), dtype=np.float32)
    counts = to_counts(x, cam)
    assert counts.dtype == np.uint16
    error = np.abs(isp.normalize(counts, cam) - x)
    assert np.all(error <= np.tile(0.5 / span, (32, 32)) + 1e-6)  # half a count
    on_grid = (np.arange(16, dtype=np.float32).reshape(4, 4) * 50) / np.tile(span, (2, 2))
    np.testing.assert_array_equal(
        to_counts(on_grid, cam), np.arange(16).reshape(4, 4) * 50 + np.tile(black, (2, 2))
    )


@pytest.mark.parametrize("bits", [10, 12, 14])
def test_to_counts_clips_to_the_bit_depth(bits: int) -> None:
    cam = camera("RGGB", bits, black_level=(0, 0, 0, 0), white_level=2**bits - 100)
    x = np.array([[-0.5, 0.0], [1.0, 5.0]], dtype=np.float32)
    np.testing.assert_array_equal(to_counts(x, cam), [[0, 0], [2**bits - 100, 2**bits - 1]])


# The fused path ------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [10, 12, 14])
@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize("image", [ASTRONAUT, BRIGHT], ids=["photo", "bright"])
def test_fast_path_equals_reference_bit_for_bit(image, cfa: CFA, bits: int) -> None:
    cam = camera(cfa, bits)
    for noise in (False, True):
        fast = unprocess(image, cam, rng=np.random.default_rng(3), noise=noise)
        ref = unprocess_reference(image, cam, rng=np.random.default_rng(3), noise=noise)
        assert fast.dtype == ref.dtype == np.uint16 and fast.shape == image.shape[:2]
        np.testing.assert_array_equal(fast, ref)
        assert fast.max() <= 2**bits - 1


@settings(max_examples=25, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8), st.just(3))),
    st.integers(0, 2**32 - 1),
    st.sampled_from(Tone.values()),
    st.sampled_from(list(Gamma)),
)
def test_fast_path_equals_reference_on_any_image(image, seed: int, curve: str, gamma: str) -> None:
    image = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)  # even sides
    cam = sample_camera(np.random.default_rng(seed), CapturePriors(matrix_pool="both"))
    kwargs = {"tone": curve, "gamma": gamma}
    fast = unprocess(image, cam, rng=np.random.default_rng(seed), **kwargs)
    ref = unprocess_reference(image, cam, rng=np.random.default_rng(seed), **kwargs)
    np.testing.assert_array_equal(fast, ref)


def test_black_and_white_map_to_black_and_white_levels() -> None:
    cam = camera("BGGR", 14)
    black = np.zeros((4, 4, 3), np.uint8)
    np.testing.assert_array_equal(
        unprocess(black, cam, noise=False), np.tile(cam.black_level_array, (2, 2))
    )
    white = np.full((4, 4, 3), 255, np.uint8)
    np.testing.assert_array_equal(unprocess(white, cam, noise=False), cam.white_level)


# Noise and determinism ---------------------------------------------------------------------
def test_same_seed_byte_identical_different_seed_different() -> None:
    cam = camera()
    a = unprocess(ASTRONAUT, cam, rng=np.random.default_rng(11))
    b = unprocess(ASTRONAUT, cam, rng=np.random.default_rng(11))
    c = unprocess(ASTRONAUT, cam, rng=np.random.default_rng(12))
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


def test_noise_free_mosaic_needs_no_rng() -> None:
    cam = camera()
    a = unprocess(ASTRONAUT, cam, noise=False)
    assert a.tobytes() == unprocess(ASTRONAUT, cam, noise=False).tobytes()
    quiet = cam.replace(noise_shot=0.0, noise_read=0.0)
    np.testing.assert_array_equal(unprocess(ASTRONAUT, quiet), a)  # nothing to add: no rng needed
    assert not np.array_equal(unprocess(ASTRONAUT, cam, rng=np.random.default_rng(0)), a)


def test_noise_in_counts_matches_the_camera() -> None:
    cam = camera("RGGB", 14, noise_shot=3e-3, noise_read=1e-5)
    flat = np.full((512, 512, 3), (120, 140, 100), np.uint8)
    clean = unprocess(flat, cam, noise=False).astype(np.float64)
    noisy = unprocess(flat, cam, rng=np.random.default_rng(4)).astype(np.float64)
    black = np.tile(cam.black_level_array, (256, 256))
    span = cam.white_level - black
    for dy in range(2):
        for dx in range(2):
            x = (clean[dy::2, dx::2] - black[dy::2, dx::2]) / span[dy::2, dx::2]
            expected = (3e-3 * x.mean() + 1e-5) * span[dy, dx] ** 2 + 1 / 12  # + rounding
            site = noisy[dy::2, dx::2]
            assert site.var() == pytest.approx(expected, rel=0.05)
            mean_error = 5 * np.sqrt(expected / site.size)  # 5 standard errors
            assert site.mean() == pytest.approx(clean[dy::2, dx::2].mean(), abs=mean_error)


def test_simulate_raw_is_sample_camera_then_unprocess() -> None:
    priors = CapturePriors(bit_depth=10)
    mosaic_a, cam_a = simulate_raw(ASTRONAUT, np.random.default_rng(9), priors)
    mosaic_b, cam_b = simulate_raw(ASTRONAUT, np.random.default_rng(9), priors)
    assert mosaic_a.tobytes() == mosaic_b.tobytes() and cam_a.to_json() == cam_b.to_json()
    rng = np.random.default_rng(9)
    expected_cam = sample_camera(rng, priors)
    assert cam_a.to_json() == expected_cam.to_json()
    np.testing.assert_array_equal(mosaic_a, unprocess(ASTRONAUT, expected_cam, rng=rng))
    clean, cam = simulate_raw(ASTRONAUT, np.random.default_rng(9), priors, noise=False)
    assert cam.noise_shot > 0  # levels are stored for the loader even without noise
    np.testing.assert_array_equal(clean, unprocess(ASTRONAUT, cam, noise=False))


# Errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((5, 4, 3), np.uint8), "even"),
        (np.zeros((4, 7, 3), np.uint8), "even"),
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((4, 4, 3), np.uint16), "uint8"),
        (np.zeros((4, 4), np.uint8), "H×W×3"),
        (np.zeros((4, 4, 4), np.uint8), "H×W×3"),
        ([[[0, 0, 0]]], "uint8"),
    ],
)
def test_bad_images_raise(image, message: str) -> None:
    for fn in (unprocess, unprocess_reference):
        with pytest.raises(ValueError, match=message):
            fn(image, camera(), noise=False)


def test_other_errors() -> None:
    cam = camera()
    image = np.zeros((4, 4, 3), np.uint8)
    for fn in (unprocess, unprocess_reference):
        with pytest.raises(ValueError, match="needs an rng"):
            fn(image, cam)
        with pytest.raises(ValueError, match="unknown tone"):
            fn(image, cam, noise=False, tone="reinhard")
        with pytest.raises(ValueError, match="unknown gamma"):
            fn(image, cam, noise=False, gamma="rec709")
    with pytest.raises(ValueError, match="even"):
        to_counts(np.zeros((3, 4), np.float32), cam)
