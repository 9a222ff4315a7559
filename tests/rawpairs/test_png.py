"""The fast PNG encoder: standard PNG, lossless, read back bit-exact by OpenCV and Pillow."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rawpairs.png import encode_png


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    level=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_decoders_read_it_back_exactly(height, width, level, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    data = encode_png(rgb, level)
    by_cv2 = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(cv2.cvtColor(by_cv2, cv2.COLOR_BGR2RGB), rgb)
    with Image.open(io.BytesIO(data)) as im:
        im.verify()  # checks every chunk's CRC
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)


def test_photo_compresses_like_libpng():
    from skimage import data

    rgb = cv2.resize(data.astronaut(), (500, 374), interpolation=cv2.INTER_AREA)
    ours = len(encode_png(rgb))
    ok, libpng = cv2.imencode(
        ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]
    )
    assert ok and ours < 1.15 * len(libpng) and ours < 0.65 * rgb.nbytes


def test_non_contiguous_input():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    view = rgb[::2, ::3]
    decoded = cv2.imdecode(np.frombuffer(encode_png(view), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), view)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 4, 3), np.uint16), "uint8"),
        (np.zeros((4, 4), np.uint8), "H×W×3"),
        (np.zeros((4, 4, 4), np.uint8), "H×W×3"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
    ],
)
def test_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        encode_png(bad)


def test_bad_level():
    with pytest.raises(ValueError, match="level"):
        encode_png(np.zeros((2, 2, 3), np.uint8), level=9)
