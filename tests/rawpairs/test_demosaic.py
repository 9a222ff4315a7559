"""rawpairs.demosaic against colour-demosaicing (the oracle) and against exact properties."""

from __future__ import annotations

import numpy as np
import pytest
from colour_demosaicing import (
    demosaicing_CFA_Bayer_bilinear,
    demosaicing_CFA_Bayer_Malvar2004,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from rawpairs.cfa import CFA, channel_index_map
from rawpairs.choices import Demosaic
from rawpairs.demosaic import demosaic

ORACLE = {"bilinear": demosaicing_CFA_Bayer_bilinear, "malvar": demosaicing_CFA_Bayer_Malvar2004}
REACH = {"bilinear": 1, "malvar": 2}  # filter radius: sites nearer the edge see the border rule


def random_mosaic(seed: int, h: int = 38, w: int = 52) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w), dtype=np.float32)


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize("method", list(Demosaic))
def test_matches_colour_demosaicing(cfa, method) -> None:
    mosaic = random_mosaic(7)
    ours = demosaic(mosaic, cfa, method)
    assert ours.shape == (*mosaic.shape, 3) and ours.dtype == np.float32
    r = REACH[method]
    oracle = ORACLE[method](mosaic.astype(np.float64), cfa.value)
    np.testing.assert_allclose(ours[r:-r, r:-r], oracle[r:-r, r:-r], rtol=0, atol=1e-4)
    # the whole image agrees once the oracle sees our border rule: numpy's "reflect" pad is
    # reflect-101 and, by an even 2 sites, keeps the CFA phase
    padded = np.pad(mosaic.astype(np.float64), 2, mode="reflect")
    oracle_101 = ORACLE[method](padded, cfa.value)[2:-2, 2:-2]
    np.testing.assert_allclose(ours, oracle_101, rtol=0, atol=1e-4)


def test_oracle_border_rule_differs() -> None:
    """Pins the documented difference: scipy's "reflect" shifts the CFA phase at the edge."""
    flat = np.full((8, 8), 0.5, np.float32)
    oracle = demosaicing_CFA_Bayer_bilinear(flat.astype(np.float64), "RGGB")
    assert oracle[0, 0, 0] == pytest.approx(1.125)  # 2.25 × too bright in the corner
    np.testing.assert_array_equal(demosaic(flat, "RGGB", "bilinear"), 0.5)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(list(CFA)),
    st.sampled_from(Demosaic.values()),
    st.floats(0.0, 4.0, width=32),
    st.integers(2, 9),
    st.integers(2, 9),
)
def test_constant_stays_constant_everywhere(cfa, method, value, hh, hw) -> None:
    mosaic = np.full((2 * hh, 2 * hw), value, np.float32)
    np.testing.assert_allclose(demosaic(mosaic, cfa, method), value, rtol=1e-6, atol=0)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(list(CFA)),
    st.sampled_from(Demosaic.values()),
    st.lists(st.floats(-0.01, 0.01), min_size=9, max_size=9),
)
def test_affine_colour_ramps_are_reconstructed(cfa, method, coeffs) -> None:
    """Both methods are exact on images whose channels are affine in (y, x), away from edges."""
    h, w = 24, 30
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    c = np.array(coeffs).reshape(3, 3)
    truth = np.stack([0.5 + c[k, 0] * y + c[k, 1] * x + c[k, 2] for k in range(3)], axis=-1)
    channel = channel_index_map(cfa, h, w)[..., None]
    mosaic = np.take_along_axis(truth, channel, axis=2)[..., 0].astype(np.float32)
    r = REACH[method]
    out = demosaic(mosaic, cfa, method)
    np.testing.assert_allclose(out[r:-r, r:-r], truth[r:-r, r:-r], rtol=0, atol=1e-5)
    # measured sites keep their value everywhere, border included
    np.testing.assert_array_equal(np.take_along_axis(out, channel, axis=2)[..., 0], mosaic)


def test_float64_input_and_string_layout() -> None:
    mosaic = random_mosaic(3, 8, 12)
    np.testing.assert_array_equal(
        demosaic(mosaic.astype(np.float64), "gbrg", "malvar"),
        demosaic(mosaic, CFA.GBRG, "malvar"),
    )


def test_non_contiguous_input() -> None:
    mosaic = random_mosaic(4, 16, 16)
    view = mosaic[::2, ::2]
    np.testing.assert_array_equal(demosaic(view, "RGGB"), demosaic(view.copy(), "RGGB"))


@pytest.mark.parametrize(
    ("mosaic", "message"),
    [
        (np.zeros(16, np.float32), "must be 2-D"),
        (np.zeros((8, 8, 3), np.float32), "must be 2-D"),
        (np.zeros((8, 7), np.float32), "even and at least 4, got 8×7"),
        (np.zeros((2, 8), np.float32), "even and at least 4, got 2×8"),
        (np.zeros((8, 8), np.uint16), "float dtype, got uint16"),
        (np.full((8, 8), np.nan, np.float32), "NaN or infinite"),
        (np.where(np.eye(8) > 0, np.inf, 0).astype(np.float32), "NaN or infinite"),
        ([[0.0] * 4] * 4, "numpy array, got list"),
    ],
)
def test_bad_mosaics(mosaic, message) -> None:
    with pytest.raises(ValueError, match=message):
        demosaic(mosaic, "RGGB")


def test_bad_options() -> None:
    mosaic = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="unknown demosaic method 'vng'"):
        demosaic(mosaic, "RGGB", "vng")
    with pytest.raises(ValueError, match="unknown CFA pattern"):
        demosaic(mosaic, "RGBW")
