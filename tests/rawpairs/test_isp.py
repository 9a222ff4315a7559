"""The forward ISP: each stage's properties, stage composition, exact 8-bit encoding, errors, and
a real RAW file rendered plausibly against LibRaw's own render."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rawpairs.camera import Camera
from rawpairs.cfa import CFA, channel_index_map, unpack
from rawpairs.choices import Gamma, Tone
from rawpairs.config import BuildConfig
from rawpairs.demosaic import demosaic
from rawpairs.isp import (
    STAGES,
    auto_exposure,
    color_correct,
    normalize,
    process,
    quantize8,
    white_balance,
)
from rawpairs.tone import (
    DEFAULT_TONE,
    decode_gamma,
    encode_gamma,
    inverse_tone,
    tone,
)

RAW_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "raw"
BUNDLED_RAW = Path(__file__).resolve().parents[1] / "data" / "raw"  # shipped (CC0): see its README
SHIPPED_RAW = (
    "Canon-PowerShot_S40-CRW_0104.CRW",
    "Kodak-DC50-DC50IMG-DC0010S.KDC",
    "Kodak-DC120-DC120IMG-P003912.KDC",
)
CANON_G2_XYZ_TO_CAM = [  # LibRaw rgb_xyz_matrix of the PowerShot G2
    [0.9194, -0.2787, -0.1059],
    [-0.8098, 1.5657, 0.2608],
    [-0.261, 0.3064, 0.7867],
]


def make_camera(cfa: CFA | str = "GRBG", **changes) -> Camera:
    fields = dict(
        cfa=cfa,
        black_level=(60, 64, 62, 66),
        white_level=1000,
        bit_depth=10,
        wb_gains=(2.0, 1.0, 1.6),
        xyz_to_cam=CANON_G2_XYZ_TO_CAM,
        digital_gain=1.25,
    )
    fields.update(changes)
    return Camera(**fields)


def random_raw(seed: int, h: int = 48, w: int = 64, top: int = 1023) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, top + 1, size=(h, w)).astype(np.uint16)


def smooth_raw(seed: int, camera: Camera, h: int = 96, w: int = 128) -> np.ndarray:
    """A plausible mosaic: smooth random colours (not noise), inside black…white."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 16, w // 16, 3))
    rgb = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    channel = channel_index_map(camera.cfa, h, w)[..., None]
    linear = np.take_along_axis(rgb, channel, axis=2)[..., 0]
    counts = 64 + linear * (camera.white_level - 64)
    return np.round(counts).astype(np.uint16)


def test_stage_names() -> None:
    assert STAGES == (
        "raw",
        "linear",
        "white_balanced",
        "camera_rgb",
        "linear_srgb",
        "toned",
        "srgb",
        "srgb8",
    )


# normalize ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cfa", list(CFA))
def test_black_level_per_position_is_removed_exactly(cfa) -> None:
    camera = make_camera(cfa)
    black = np.tile(np.array(camera.black_level).reshape(2, 2), (4, 5)).astype(np.uint16)
    linear = normalize(black, camera)
    assert linear.dtype == np.float32 and linear.shape == black.shape
    np.testing.assert_array_equal(linear, 0.0)
    np.testing.assert_array_equal(normalize(np.full((8, 10), 1000, np.uint16), camera), 1.0)
    # one count above each position's own black: 1 / (white − black of that position)
    expected = 1.0 / (1000.0 - np.array(camera.black_level).reshape(2, 2))
    np.testing.assert_allclose(normalize(black + 1, camera)[:2, :2], expected, rtol=1e-7)


def test_normalize_matches_float64_reference_and_clips() -> None:
    camera = make_camera()
    raw = random_raw(0)  # counts 0…1023: below black and above white both occur
    black = np.tile(np.array(camera.black_level).reshape(2, 2), (24, 32))
    expected = np.clip((raw - black) / (camera.white_level - black), 0, 1)
    np.testing.assert_allclose(normalize(raw, camera), expected, rtol=1e-7, atol=0)


# white balance -----------------------------------------------------------------------------


@pytest.mark.parametrize("cfa", list(CFA))
def test_white_balance_uses_each_sites_channel_gain(cfa) -> None:
    camera = make_camera(cfa)
    linear = np.random.default_rng(1).random((8, 12), dtype=np.float32)
    gains = np.array(camera.wb_gains)[channel_index_map(cfa, 8, 12)] * camera.digital_gain
    out = white_balance(linear, camera)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.minimum(linear * gains, 1), rtol=1e-7)
    assert (linear * gains > 1).any()  # the clip is exercised


def test_saturated_white_stays_neutral() -> None:
    """A fully saturated sensor renders pure white whatever the gains (no magenta highlights)."""
    camera = make_camera(CFA.RGGB)
    raw = np.full((8, 8), camera.white_level, dtype=np.uint16)
    np.testing.assert_array_equal(process(raw, camera), np.full((8, 8, 3), 255, np.uint8))
    np.testing.assert_allclose(process(raw, camera, stop="srgb"), 1.0, atol=1e-6)


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize("method", ["bilinear", "malvar"])
def test_grey_card_is_neutral_after_white_balance_and_colour_correction(cfa, method) -> None:
    camera = make_camera(cfa)
    grey = 0.18
    # a grey card as the sensor sees it: camera RGB of grey is grey (rgb_to_cam rows sum to 1),
    # darkened by the white balance and digital gain the ISP undoes
    channel_value = grey / (np.array(camera.wb_gains) * camera.digital_gain)
    linear = channel_value[channel_index_map(cfa, 16, 20)].astype(np.float32)
    out = process(linear, camera, start="linear", stop="linear_srgb", demosaic=method)
    np.testing.assert_allclose(out, grey, rtol=0, atol=2e-6)


# colour correction -------------------------------------------------------------------------


def test_color_correct_is_the_clipped_matrix_product() -> None:
    camera = make_camera()
    rgb = np.random.default_rng(2).uniform(-0.2, 1.2, (10, 14, 3)).astype(np.float32)
    expected = np.clip(rgb.astype(np.float64) @ camera.cam_to_srgb.T, 0, 1)
    out = color_correct(rgb, camera)
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


# quantisation ------------------------------------------------------------------------------


def test_quantize8_rounds_half_up() -> None:
    x = np.array([0.0, 0.4999 / 255, 0.5001 / 255, 0.5, 254.4999 / 255, 254.5001 / 255, 1.0])
    np.testing.assert_array_equal(quantize8(x), [0, 0, 1, 128, 254, 255, 255])
    assert quantize8(x.astype(np.float32)).dtype == np.uint8


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.integers(1, 200), elements=st.floats(0, 1, width=32)))
def test_quantize8_matches_float64_definition(x) -> None:
    np.testing.assert_array_equal(quantize8(x), np.floor(x.astype(np.float64) * 255 + 0.5))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([0.5, 1.5]), "values in \\[0, 1\\]"),
        (np.array([-0.1]), "values in \\[0, 1\\]"),
        (np.array([np.nan, 0.5]), "values in \\[0, 1\\]"),
        (np.array([0, 255], np.uint8), "float array"),
    ],
)
def test_quantize8_errors(x, message) -> None:
    with pytest.raises(ValueError, match=message):
        quantize8(x)


# the fused 8-bit encoder -------------------------------------------------------------------


def reference_codes(x: np.ndarray, curve: str, gamma: str) -> np.ndarray:
    return np.floor(encode_gamma(tone(x.astype(np.float64), curve, gamma), gamma) * 255 + 0.5)


@pytest.mark.parametrize("gamma", list(Gamma))
@pytest.mark.parametrize("curve", Tone.values())
def test_fused_encoder_is_exact(curve, gamma) -> None:
    camera = make_camera()
    rng = np.random.default_rng(3)
    x = rng.random((64, 64, 3), dtype=np.float32) ** 3  # dense near black, where curves are steep
    x[0, :4] = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1e-9, 1e-7, 1e-5]]
    codes = process(x, camera, start="linear_srgb", tone=curve, gamma=gamma)
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, reference_codes(x, curve, gamma))
    # on both sides of every code boundary, found in float64 from the inverse curves
    boundaries = inverse_tone(decode_gamma((np.arange(1, 256) - 0.5) / 255, gamma), curve, gamma)
    above = np.nextafter(boundaries.astype(np.float32), np.float32(2))
    below = np.nextafter(boundaries.astype(np.float32), np.float32(-1))
    above = np.where(above < boundaries, np.nextafter(above, np.float32(2)), above)
    below = np.where(below >= boundaries, np.nextafter(below, np.float32(-1)), below)
    near = np.stack([above, below], axis=-1).reshape(-1, 1, 1).repeat(3, axis=2)
    got = process(np.clip(near, 0, 1), camera, start="linear_srgb", tone=curve, gamma=gamma)
    np.testing.assert_array_equal(got[0::2, 0, 0], np.arange(1, 256))
    np.testing.assert_array_equal(got[1::2, 0, 0], np.arange(0, 255))


@pytest.mark.parametrize("gamma", list(Gamma))
@pytest.mark.parametrize("curve", Tone.values())
def test_fused_path_within_one_code_of_stage_path(curve, gamma) -> None:
    camera = make_camera()
    raw = smooth_raw(4, camera)
    options = dict(tone=curve, gamma=gamma, demosaic="malvar")
    fused = process(raw, camera, **options)
    staged = quantize8(process(raw, camera, stop="srgb", **options))
    diff = np.abs(fused.astype(int) - staged)
    assert diff.max() <= 1
    assert np.mean(diff) < 1e-3


# composition -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["bilinear", "malvar"])
def test_stop_then_start_equals_the_full_run(method) -> None:
    camera = make_camera("BGGR")
    raw = smooth_raw(5, camera)
    full = process(raw, camera, demosaic=method)
    for split in STAGES:
        first = process(raw, camera, stop=split, demosaic=method)
        second = process(first, camera, start=split, demosaic=method)
        if split in ("toned", "srgb"):  # the float32 path, not the exact encoder
            assert np.abs(second.astype(int) - full).max() <= 1, split
        else:
            np.testing.assert_array_equal(second, full, err_msg=split)


def test_stages_compose_the_public_functions() -> None:
    camera = make_camera("GBRG")
    raw = smooth_raw(6, camera)
    linear = normalize(raw, camera)
    balanced = white_balance(linear, camera)
    camera_rgb = demosaic(balanced, camera.cfa, "bilinear")
    linear_srgb = color_correct(camera_rgb, camera)
    expected = {
        "linear": linear,
        "white_balanced": balanced,
        "camera_rgb": camera_rgb,
        "linear_srgb": linear_srgb,
        "toned": tone(linear_srgb, DEFAULT_TONE),
        "srgb": encode_gamma(tone(linear_srgb, DEFAULT_TONE)),
    }
    for stop, want in expected.items():
        got = process(raw, camera, stop=stop, demosaic="bilinear")
        assert got.dtype == np.float32, stop
        np.testing.assert_array_equal(got, want, err_msg=stop)


def test_start_equals_stop_returns_a_copy() -> None:
    camera = make_camera()
    raw = random_raw(7)
    out = process(raw, camera, start="raw", stop="raw")
    np.testing.assert_array_equal(out, raw)
    assert out is not raw and not np.shares_memory(out, raw)


def test_inputs_are_not_modified() -> None:
    camera = make_camera()
    raw = smooth_raw(8, camera)
    rgb = np.random.default_rng(8).random((16, 16, 3), dtype=np.float32)
    raw_before, rgb_before = raw.copy(), rgb.copy()
    process(raw, camera)
    process(rgb, camera, start="camera_rgb")
    np.testing.assert_array_equal(raw, raw_before)
    np.testing.assert_array_equal(rgb, rgb_before)


# errors ------------------------------------------------------------------------------------


def _rgb(value: float = 0.5, dtype=np.float32) -> np.ndarray:
    return np.full((8, 8, 3), value, dtype)


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (
            random_raw(0).astype(np.float32),
            {},
            "'raw' expects uint16 sensor counts, got dtype float32",
        ),
        (random_raw(0).astype(np.uint8), {}, "uint16"),
        (random_raw(0, top=4095), {}, "counts reach 4095, above 1023 for a 10-bit camera"),
        (random_raw(0)[:, :63], {}, "even and at least 4"),
        (random_raw(0)[None], {}, "2-D"),
        ([[0, 1], [2, 3]], {}, "numpy array, got list"),
        (np.full((8, 8), 1.5, np.float32), {"start": "linear"}, "values in \\[0.0, 1.0\\]"),
        (np.full((8, 8), np.nan), {"start": "linear"}, "NaN or infinite"),
        (np.full((8, 8), -0.1), {"start": "white_balanced"}, "values in \\[0.0, 1.0\\]"),
        (np.full((8, 8), np.inf), {"start": "white_balanced"}, "NaN or infinite"),
        (np.zeros((8, 8), np.uint16), {"start": "linear"}, "expects a float array"),
        (np.zeros((8, 8, 4), np.float32), {"start": "camera_rgb"}, "H×W×3"),
        (_rgb(np.inf), {"start": "camera_rgb"}, "NaN or infinite"),
        (_rgb(1.01), {"start": "linear_srgb"}, "values in \\[0.0, 1.0\\]"),
        (_rgb(-0.5), {"start": "toned"}, "values in"),
        (_rgb(np.nan), {"start": "srgb"}, "NaN"),
        (_rgb(0.5), {"start": "srgb8"}, "'srgb8' expects uint8"),
        (random_raw(0), {"start": "srgb", "stop": "linear"}, "comes before start"),
        (random_raw(0), {"stop": "jpeg"}, "unknown stop stage 'jpeg'"),
        (random_raw(0), {"start": "bayer"}, "unknown start stage 'bayer'"),
        (random_raw(0), {"demosaic": "vng"}, "unknown demosaic method 'vng'"),
        (random_raw(0), {"tone": "filmic"}, "unknown tone curve 'filmic'"),
        (random_raw(0), {"gamma": "rec709"}, "unknown gamma 'rec709'"),
    ],
)
def test_process_errors(image, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        process(image, make_camera(), **kwargs)


def test_stage_function_errors() -> None:
    camera = make_camera()
    with pytest.raises(ValueError, match=r"camera must be a rawpairs\.Camera, got dict"):
        normalize(random_raw(0), camera.to_dict())
    with pytest.raises(ValueError, match="uint16"):
        normalize(np.zeros((8, 8), np.int32), camera)
    with pytest.raises(ValueError, match="values in"):
        white_balance(np.full((8, 8), 2.0), camera)
    with pytest.raises(ValueError, match="H×W×3"):
        color_correct(np.zeros((8, 8)), camera)


# auto exposure -------------------------------------------------------------------------------


def grey_raw(camera: Camera, levels: np.ndarray) -> np.ndarray:
    """A mosaic of neutral 2×2 blocks: block i has linear white-balanced value ``levels[i]``."""
    blocks = np.repeat(levels[:, None], 16, axis=1).reshape(-1, 16)  # 2 block rows × 8 blocks
    channel = np.array(camera.wb_gains)[list(camera.cfa.channels)]
    span = camera.white_level - np.array(camera.black_level)
    sites = blocks[..., None] / channel * span + np.array(camera.black_level)  # (n, 16, 4)
    planes = sites.reshape(len(levels) * 2, 8, 4).transpose(2, 0, 1)
    return np.rint(unpack(planes)).astype(np.uint16)


def test_auto_exposure_puts_the_99th_percentile_at_white() -> None:
    camera = make_camera(white_level=60000, bit_depth=16, black_level=(0, 0, 0, 0))
    levels = np.linspace(0.0, 0.4, 101)  # neutral: every channel has the same percentiles
    gain = auto_exposure(grey_raw(camera, levels), camera)
    assert gain == pytest.approx(1 / np.percentile(levels, 99), rel=1e-3)
    # the camera's own digital gain does not enter; the result is a pure function of the input
    assert auto_exposure(grey_raw(camera, levels), camera.replace(digital_gain=3.0)) == gain
    assert auto_exposure(grey_raw(camera, levels), camera, percentile=50) == pytest.approx(
        1 / 0.2, rel=1e-3
    )


def test_auto_exposure_never_darkens_and_is_bounded() -> None:
    camera = make_camera(white_level=60000, bit_depth=16, black_level=(0, 0, 0, 0))
    assert auto_exposure(grey_raw(camera, np.ones(10)), camera) == 1.0
    assert auto_exposure(grey_raw(camera, np.zeros(10)), camera) == 16.0
    assert auto_exposure(grey_raw(camera, np.full(10, 1e-3)), camera, max_gain=4) == 4.0
    with pytest.raises(ValueError, match="percentile"):
        auto_exposure(grey_raw(camera, np.ones(10)), camera, percentile=0)
    with pytest.raises(ValueError, match="max_gain"):
        auto_exposure(grey_raw(camera, np.ones(10)), camera, max_gain=0.5)
    with pytest.raises(ValueError, match="uint16"):
        auto_exposure(np.zeros((8, 8), np.float32), camera)


# real RAW files: what the pairs look like ------------------------------------------------------


def _render_quality():
    """benchmarks/render_quality.py (one definition of the figures), imported when needed."""
    from benchmarks import render_quality

    return render_quality


@pytest.mark.parametrize("name", SHIPPED_RAW)
def test_shipped_raw_renders_like_the_camera_meant(name) -> None:
    """Default options: within 0.8–1.25× the brightness and 0.6–1.6× the saturation of the
    camera's own JPEG (S40) or LibRaw's render (the Kodaks have no JPEG), and aligned with it."""
    rq = _render_quality()
    quality = rq.measure(BUNDLED_RAW / name, BuildConfig())
    assert quality.reference == ("camera JPEG" if name.endswith(".CRW") else "LibRaw")
    assert quality.in_band, quality
    assert quality.psnr > 19.0, quality


def _only_sample(name: str, **config):
    from rawpairs.sample import Source, make_samples

    (sample,) = make_samples(Source(str(BUNDLED_RAW / name), name, "raw"), BuildConfig(**config))
    return sample


def test_dc120_pairs_have_square_pixels() -> None:
    """Kodak DC120 sites are 1.535× wider than tall: both halves of the pair are resampled to
    square pixels (rows downsampled), the CFA kept, the aspect recorded; LibRaw's own render
    (stretched to square) has the same shape ratio."""
    import rawpy

    sample = _only_sample("Kodak-DC120-DC120IMG-P003912.KDC")
    assert sample.raw.shape == sample.rgb.shape[:2] == (636, 848)
    assert sample.meta.source.pixel_aspect == pytest.approx(1.5346, abs=1e-4)
    assert sample.meta.camera.cfa is CFA.GRBG
    with rawpy.imread(str(BUNDLED_RAW / "Kodak-DC120-DC120IMG-P003912.KDC")) as raw:
        libraw = raw.postprocess(use_camera_wb=True, output_bps=8)
    assert libraw.shape[1] / libraw.shape[0] == pytest.approx(848 / 636, rel=0.01)
    small = cv2.resize(libraw, (848, 636), interpolation=cv2.INTER_AREA).astype(float)
    corr = np.corrcoef(small.mean(-1).ravel(), sample.rgb.mean(-1).ravel())[0, 1]
    assert corr > 0.95


def test_exposure_is_recorded_with_its_rule() -> None:
    from rawpairs.raw_files import read_raw

    name = "Kodak-DC50-DC50IMG-DC0010S.KDC"
    auto, none = _only_sample(name), _only_sample(name, exposure="none")
    capture = read_raw(BUNDLED_RAW / name)
    assert auto.meta.camera.digital_gain == auto_exposure(capture.mosaic, capture.camera) > 1.5
    assert auto.meta.camera.provenance["digital_gain"] == "auto:p99"
    assert none.meta.camera.digital_gain == 1.0
    assert "digital_gain" not in none.meta.camera.provenance
    np.testing.assert_array_equal(auto.raw, none.raw)  # the mosaic keeps its sensor counts
    # the stored camera renders the stored RGB (what inspect --preview does)
    np.testing.assert_array_equal(process(auto.raw, auto.meta.camera), auto.rgb)
    assert auto.rgb.mean() > 1.3 * none.rgb.mean()


# The larger real files (../shared/data/raw and raw_more): tests/rawpairs/test_render_quality.py.
