"""Properties of rawpairs.cfa: exact phase bookkeeping for every Bayer layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawpairs.cfa import (
    CFA,
    bin_mosaic,
    cfa_from_rawpy,
    channel_index_map,
    crop,
    flip,
    pack,
    resample,
    unpack,
)
from rawpairs.demosaic import demosaic

LAYOUTS = list(CFA)
layouts = st.sampled_from(LAYOUTS)


@st.composite
def mosaics(draw, dtype=np.uint16, min_half=1):
    """A random even-sized mosaic (each side at least 2·min_half) with a layout."""
    h = 2 * draw(st.integers(min_half, 12))
    w = 2 * draw(st.integers(min_half, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    mosaic = np.random.default_rng(seed).integers(0, 2**16, size=(h, w)).astype(dtype)
    return mosaic, draw(layouts)


def test_channels_and_red_position() -> None:
    assert CFA.RGGB.channels == (0, 1, 1, 2)
    assert CFA.GBRG.channels == (1, 2, 0, 1)
    assert {c: c.red_position for c in CFA} == {
        CFA.RGGB: (0, 0),
        CFA.GRBG: (0, 1),
        CFA.GBRG: (1, 0),
        CFA.BGGR: (1, 1),
    }
    assert CFA.parse("grbg") is CFA.GRBG
    with pytest.raises(ValueError, match="unknown CFA pattern 'RGBG'"):
        CFA.parse("RGBG")


def test_channel_index_map_odd_size() -> None:
    np.testing.assert_array_equal(
        channel_index_map("GRBG", 3, 3), [[1, 0, 1], [2, 1, 2], [1, 0, 1]]
    )


@settings(max_examples=40, deadline=None)
@given(mosaics())
def test_pack_unpack_round_trip(case) -> None:
    mosaic, cfa = case
    planes = pack(mosaic)
    h, w = mosaic.shape
    assert planes.shape == (4, h // 2, w // 2) and planes.dtype == mosaic.dtype
    np.testing.assert_array_equal(unpack(planes), mosaic)
    # plane p holds exactly the sites of CFA position p, i.e. of channel cfa.channels[p]
    channel_planes = pack(channel_index_map(cfa, h, w))
    for p in range(4):
        assert np.all(channel_planes[p] == cfa.channels[p])
        np.testing.assert_array_equal(planes[p], mosaic[p // 2 :: 2, p % 2 :: 2])


@settings(max_examples=60, deadline=None)
@given(mosaics(), st.data())
def test_crop_pattern_matches_source(case, data) -> None:
    mosaic, cfa = case
    h, w = mosaic.shape
    top = data.draw(st.integers(0, h - 1))
    left = data.draw(st.integers(0, w - 1))
    height = data.draw(st.integers(1, h - top))
    width = data.draw(st.integers(1, w - left))
    out, new = crop(mosaic, cfa, top, left, height, width)
    np.testing.assert_array_equal(out, mosaic[top : top + height, left : left + width])
    expected = channel_index_map(cfa, h, w)[top : top + height, left : left + width]
    np.testing.assert_array_equal(channel_index_map(new, height, width), expected)


def test_crop_errors() -> None:
    mosaic = np.zeros((4, 6), np.uint16)
    with pytest.raises(ValueError, match="outside the 4×6 mosaic"):
        crop(mosaic, "RGGB", 1, 0, 4, 2)
    with pytest.raises(ValueError, match="outside"):
        crop(mosaic, "RGGB", 0, 0, 0, 2)
    with pytest.raises(ValueError, match="2-D"):
        crop(np.zeros((4, 4, 3)), "RGGB", 0, 0, 2, 2)


@settings(max_examples=40, deadline=None)
@given(mosaics(), st.sampled_from([0, 1]))
def test_flip_labels_every_site_and_twice_is_identity(case, axis) -> None:
    mosaic, cfa = case
    h, w = mosaic.shape
    out, new = flip(mosaic, cfa, axis)
    np.testing.assert_array_equal(out, np.flip(mosaic, axis))
    np.testing.assert_array_equal(
        channel_index_map(new, h, w), np.flip(channel_index_map(cfa, h, w), axis)
    )
    back, again = flip(out, new, axis)
    assert again is cfa
    np.testing.assert_array_equal(back, mosaic)


def test_flip_errors() -> None:
    with pytest.raises(ValueError, match="even"):
        flip(np.zeros((4, 5)), "RGGB", 0)
    with pytest.raises(ValueError, match="axis must be 0"):
        flip(np.zeros((4, 4)), "RGGB", 2)


@pytest.mark.parametrize(
    ("pattern", "desc", "expected"),
    [
        ([[0, 1], [3, 2]], b"RGBG", CFA.RGGB),  # index 3 is the second green
        ([[3, 2], [0, 1]], b"RGBG", CFA.GBRG),
        ([[1, 0], [2, 3]], b"RGBG", CFA.GRBG),
        ([[2, 3], [1, 0]], "RGBG", CFA.BGGR),
        ([[2, 1], [1, 0]], b"RGB", CFA.BGGR),
    ],
)
def test_cfa_from_rawpy(pattern, desc, expected) -> None:
    assert cfa_from_rawpy(np.array(pattern, np.uint8), desc) is expected


@pytest.mark.parametrize(
    ("pattern", "desc", "message"),
    [
        (np.zeros((6, 6), np.uint8), b"RGBG", "shape \\(6, 6\\), not 2×2"),
        ([[0, 1], [4, 2]], b"RGBG", "indexes outside 'RGBG'"),
        ([[0, 1], [3, 2]], b"CMYG", "not a Bayer sensor: colour layout 'CMGY'"),
        ([[0, 1], [3, 2]], b"RGBE", "not a Bayer sensor: colour layout 'RGEB'"),
        ([[0, 0], [1, 2]], b"RGBG", "not a Bayer sensor"),
    ],
)
def test_cfa_from_rawpy_errors(pattern, desc, message) -> None:
    with pytest.raises(ValueError, match=message):
        cfa_from_rawpy(np.array(pattern), desc)


# Binning and resampling -------------------------------------------------------------------------


def _site_centres(n_out: int, scale: float) -> np.ndarray:
    """Input coordinate of each output site's centre: (k + ½)·scale − ½."""
    return (np.arange(n_out) + 0.5) * scale - 0.5


@pytest.mark.parametrize(("scale_y", "scale_x"), [(2, 2), (3, 3), (4, 4), (1.5346, 1), (1, 2.5)])
def test_resample_puts_every_plane_at_its_site(scale_y, scale_x) -> None:
    """A ramp's value at each output site is the input coordinate of that site's centre: every
    colour plane samples where its sites are (the plain block mean put R and B ±(f−1)/(2f) off).
    Exact away from the first and last output site pair (there the box is clipped)."""
    y, x = np.mgrid[0:64, 0:96].astype(np.float64)
    out_y, out_x = resample(y, scale_y, scale_x), resample(x, scale_y, scale_x)
    assert out_y.shape == (int(64 / scale_y) // 2 * 2, int(96 / scale_x) // 2 * 2)
    want_y = _site_centres(out_y.shape[0], scale_y)[:, None]
    want_x = _site_centres(out_x.shape[1], scale_x)[None, :]
    np.testing.assert_allclose(out_y[2:-2], np.broadcast_to(want_y, out_y.shape)[2:-2], atol=1e-9)
    np.testing.assert_allclose(
        out_x[:, 2:-2], np.broadcast_to(want_x, out_x.shape)[:, 2:-2], atol=1e-9
    )


def _fringing(mosaic: np.ndarray) -> float:
    """Mean |R − G| + |B − G| of the bilinear demosaic, away from the border."""
    rgb = demosaic(mosaic.astype(np.float32), CFA.RGGB, "bilinear")[4:-4, 4:-4]
    return float(
        np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 2] - rgb[..., 1]).mean()
    )


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_binning_a_neutral_edge_fringes_no_more_than_unbinned(factor) -> None:
    """A neutral (grey) slanted edge: binned by ``factor`` it fringes no more than the same scene
    captured directly at the binned resolution (area-downsampled, then mosaiced)."""
    yy, xx = np.mgrid[0:480, 0:480]
    scene = cv2.GaussianBlur(
        ((0.9 * xx + 0.3 * yy) > 200).astype(np.float64) * 0.8 + 0.1, (0, 0), 1
    )
    direct = cv2.resize(scene, (480 // factor, 480 // factor), interpolation=cv2.INTER_AREA)
    assert _fringing(bin_mosaic(scene, factor)) <= _fringing(direct)


def test_bin_mosaic_keeps_dtype_constants_and_range() -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 4096, size=(40, 60)).astype(np.uint16)
    binned = bin_mosaic(counts, 3)
    assert binned.dtype == np.uint16 and binned.shape == (12, 20)
    for pos in range(4):  # a weighted mean: within each plane's range
        assert pack(counts)[pos].min() <= pack(binned)[pos].min()
        assert pack(binned)[pos].max() <= pack(counts)[pos].max()
    flat = unpack(np.array([7, 100, 200, 3000], np.uint16)[:, None, None] * np.ones((4, 20, 30)))
    assert np.array_equal(bin_mosaic(flat.astype(np.uint16), 2), flat[:20, :30].astype(np.uint16))
    assert bin_mosaic(counts, 1) is counts


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: bin_mosaic(m, 0), "positive integer"),
        (lambda m: bin_mosaic(m, 1.5), "positive integer"),
        (lambda m: bin_mosaic(m, 20), "too small"),
        (lambda m: resample(m, 0.5, 1), "scale_y must be a finite number >= 1"),
        (lambda m: resample(m, 1, float("nan")), "scale_x must be a finite number >= 1"),
        (lambda m: resample(m[:, :7], 2, 2), "even"),
    ],
)
def test_resample_errors(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call(np.zeros((16, 24), np.uint16))
