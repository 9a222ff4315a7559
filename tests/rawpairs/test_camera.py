"""rawpairs.camera: exact JSON round trip, derived colour matrices, every validation error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawpairs.camera import (
    PROVENANCE_FIELDS,
    SRGB_TO_XYZ,
    XYZ_TO_SRGB,
    Camera,
    rgb_to_cam_matrix,
)
from rawpairs.cfa import CFA
from rawpairs.priors import BROOKS_CAMERAS

SONY_A7R = np.array(BROOKS_CAMERAS["Sony ILCE-7R"])


def base(**changes) -> dict:
    """Keyword arguments of a valid 12-bit camera, with ``changes`` applied."""
    kwargs = {
        "cfa": "RGGB",
        "black_level": (256.0, 256.0, 256.0, 256.0),
        "white_level": 4095.0,
        "bit_depth": 12,
        "wb_gains": (2.0, 1.0, 1.6),
        "xyz_to_cam": SONY_A7R,
    }
    kwargs.update(changes)
    return kwargs


@st.composite
def cameras(draw) -> Camera:
    """Valid cameras with arbitrary float values (full 64-bit mantissas) in every field."""
    bits = draw(st.integers(1, 16))
    white = draw(st.floats(1e-3, 2**bits - 1))
    black = draw(st.lists(st.floats(0.0, white, exclude_max=True), min_size=4, max_size=4))
    positive = st.floats(1e-6, 1e6)
    perturbation = draw(st.lists(st.floats(-0.05, 0.05), min_size=9, max_size=9))
    return Camera(
        cfa=draw(st.sampled_from(list(CFA))),
        black_level=black,
        white_level=white,
        bit_depth=bits,
        wb_gains=draw(st.lists(positive, min_size=3, max_size=3)),
        xyz_to_cam=SONY_A7R + np.reshape(perturbation, (3, 3)),
        digital_gain=draw(positive),
        noise_shot=draw(st.floats(0.0, 1.0)),
        noise_read=draw(st.floats(0.0, 1.0)),
        provenance=draw(
            st.dictionaries(
                st.sampled_from(["cfa", "wb_gains", "noise"]), st.sampled_from(["file", "user"])
            )
        ),
    )


@settings(max_examples=60, deadline=None)
@given(cameras())
def test_json_round_trip_is_exact(camera: Camera) -> None:
    text = camera.to_json()
    back = Camera.from_json(text)
    assert back == camera
    assert back.provenance == camera.provenance  # not part of equality
    assert back.to_json() == text
    assert Camera.from_dict(json.loads(text)) == camera


@settings(max_examples=30, deadline=None)
@given(cameras())
def test_derived_matrices_are_consistent(camera: Camera) -> None:
    rgb_to_cam, cam_to_srgb = camera.rgb_to_cam, camera.cam_to_srgb
    np.testing.assert_allclose(cam_to_srgb @ rgb_to_cam, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rgb_to_cam.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(cam_to_srgb.sum(axis=1), 1.0, atol=1e-12)
    expected = np.array(camera.xyz_to_cam) @ SRGB_TO_XYZ
    np.testing.assert_allclose(rgb_to_cam, expected / expected.sum(axis=1, keepdims=True))


def test_identity_colour_matrix_gives_identity() -> None:
    camera = Camera(**base(xyz_to_cam=XYZ_TO_SRGB))
    np.testing.assert_allclose(camera.rgb_to_cam, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(camera.cam_to_srgb, np.eye(3), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(cameras())
def test_from_cam_to_srgb_round_trip(camera: Camera) -> None:
    fields = {k: v for k, v in base().items() if k != "xyz_to_cam"}
    rebuilt = Camera.from_cam_to_srgb(camera.cam_to_srgb, **fields)
    np.testing.assert_allclose(rebuilt.cam_to_srgb, camera.cam_to_srgb, atol=1e-9)
    np.testing.assert_allclose(rebuilt.rgb_to_cam, camera.rgb_to_cam, atol=1e-9)


def test_black_level_array_is_laid_out_like_the_cfa_block() -> None:
    camera = Camera(**base(black_level=(1.0, 2.0, 3.0, 4.0)))
    assert camera.black_level_array.dtype == np.float32
    np.testing.assert_array_equal(camera.black_level_array, [[1, 2], [3, 4]])


def test_values_are_normalised() -> None:
    camera = Camera(**base(cfa="gbrg", bit_depth=12.0, black_level=np.full(4, 64)))
    assert camera.cfa is CFA.GBRG
    assert isinstance(camera.bit_depth, int)
    assert camera.black_level == (64.0, 64.0, 64.0, 64.0)
    assert camera.replace(white_level=1000.0).white_level == 1000.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"black_level": (0.0, 0.0, 0.0)}, "black_level must have 4 values"),
        ({"wb_gains": (1.0, 1.0)}, "wb_gains must have 3 values"),
        ({"xyz_to_cam": np.eye(3)[:2]}, "xyz_to_cam must have 9 values"),
        ({"wb_gains": (np.nan, 1.0, 1.0)}, "wb_gains must be finite"),
        ({"white_level": np.inf}, "white_level must be finite"),
        ({"xyz_to_cam": np.full((3, 3), np.nan)}, "xyz_to_cam must be finite"),
        ({"black_level": (4095.0, 0.0, 0.0, 0.0)}, "black_level"),
        ({"black_level": (-1.0, 0.0, 0.0, 0.0)}, "black_level"),
        ({"white_level": 4096.0}, "outside \\(0, 4095\\]"),
        ({"white_level": 0.0, "black_level": (0.0,) * 4}, "white_level"),
        ({"bit_depth": 17}, "bit_depth"),
        ({"bit_depth": 0}, "bit_depth"),
        ({"bit_depth": 12.5}, "bit_depth"),
        ({"wb_gains": (0.0, 1.0, 1.0)}, "wb_gains must be positive"),
        ({"wb_gains": (2.0, -1.0, 1.0)}, "wb_gains must be positive"),
        ({"digital_gain": 0.0}, "digital_gain must be positive"),
        ({"noise_shot": -1e-3}, "noise parameters"),
        ({"noise_read": -1e-9}, "noise parameters"),
        ({"xyz_to_cam": np.ones((3, 3))}, "not invertible"),
        ({"xyz_to_cam": [[1, 0, 0], [1, 0, 0], [0, 0, 1]]}, "not invertible"),
        ({"xyz_to_cam": [[1, 0, 0], [0, 0, 0], [0, 0, 1]]}, "maps white to zero"),
        ({"cfa": "RGBG"}, "unknown CFA pattern"),
        ({"provenance": {"matrix": "file"}}, r"provenance of unknown fields \['matrix'\]"),
        ({"provenance": {"noise": "guessed"}}, "provenance of noise is 'guessed'"),
        ({"provenance": {"wb_gains": "fallback:"}}, "provenance of wb_gains"),
        ({"provenance": {"wb_gains": "fallback:a b"}}, "provenance of wb_gains"),
        ({"provenance": {"cfa": 1}}, "provenance of cfa"),
        ({"provenance": {"cfa": "profile:"}}, "provenance of cfa"),
        ({"provenance": {"cfa": "profile:a/b.json"}}, "provenance of cfa"),
        ({"provenance": {"cfa": "profile:" + "a" * 101}}, "provenance of cfa"),
        ({"provenance": [("cfa", "file")]}, "provenance must be a dict"),
    ],
)
def test_validation_errors(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Camera(**base(**changes))


def test_every_provenance_form_is_accepted() -> None:
    forms = ["file", "sampled", "default", "user", "unknown", "file:ColorMatrix1", "auto:p99"]
    forms += ["fallback:gray_world", "profile:my_camera.json", "profile:" + "a" * 100]
    for form in forms:
        provenance = dict.fromkeys(PROVENANCE_FIELDS, form)
        assert Camera(**base(provenance=provenance)).provenance == provenance


def test_from_cam_to_srgb_rejects_bad_matrices() -> None:
    fields = {k: v for k, v in base().items() if k != "xyz_to_cam"}
    with pytest.raises(ValueError, match="finite 3×3"):
        Camera.from_cam_to_srgb(np.eye(2), **fields)
    with pytest.raises(ValueError, match="finite 3×3"):
        Camera.from_cam_to_srgb(np.full((3, 3), np.inf), **fields)
    with pytest.raises(ValueError, match="singular"):
        Camera.from_cam_to_srgb(np.zeros((3, 3)), **fields)


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    d = Camera(**base()).to_dict()
    with pytest.raises(ValueError, match=r"unknown camera fields: \['lens'\]"):
        Camera.from_dict({**d, "lens": "50mm"})
    for key in ("cfa", "black_level", "white_level", "bit_depth", "wb_gains", "xyz_to_cam"):
        partial = {k: v for k, v in d.items() if k != key}
        with pytest.raises(ValueError, match=f"missing camera fields: \\['{key}'\\]"):
            Camera.from_dict(partial)


def test_to_dict_carries_cam_to_srgb_for_readers_only() -> None:
    camera = Camera(**base())
    d = camera.to_dict()
    np.testing.assert_array_equal(d["cam_to_srgb"], camera.cam_to_srgb)
    d["cam_to_srgb"] = np.eye(3).tolist()  # ignored on load: always derived
    assert Camera.from_dict(d) == camera


def test_rgb_to_cam_matrix_rows_sum_to_one() -> None:
    m = rgb_to_cam_matrix(SONY_A7R)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
