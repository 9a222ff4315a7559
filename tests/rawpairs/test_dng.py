"""write_dng: files LibRaw reads back bit-exact, with the camera model intact."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from rawpairs.camera import Camera
from rawpairs.cfa import CFA
from rawpairs.dng import MIN_SIDE, write_dng
from rawpairs.libraw import render_libraw
from rawpairs.raw_files import read_raw
from rawpairs.tone import encode_gamma

# XYZ → camera of the Canon PowerShot G2 (LibRaw's table), a realistic non-trivial matrix.
G2_XYZ_TO_CAM = ((0.9194, -0.2787, -0.1059), (-0.8098, 1.5657, 0.2608), (-0.2610, 0.3064, 0.7867))


def make_camera(cfa=CFA.RGGB, black=(64, 64, 64, 64), bit_depth=12, white=None, **kw) -> Camera:
    return Camera(
        cfa=cfa,
        black_level=black,
        white_level=2**bit_depth - 1 if white is None else white,
        bit_depth=bit_depth,
        wb_gains=kw.pop("wb_gains", (2.1337, 1.0, 1.5123)),
        xyz_to_cam=kw.pop("xyz_to_cam", G2_XYZ_TO_CAM),
        **kw,
    )


def random_mosaic(rng: np.random.Generator, camera: Camera, shape=(48, 64)) -> np.ndarray:
    return rng.integers(0, 2**camera.bit_depth, size=shape, dtype=np.uint16)


def assert_round_trip(path: Path, mosaic: np.ndarray, camera: Camera) -> None:
    back = read_raw(path)
    np.testing.assert_array_equal(back.mosaic, mosaic)
    assert back.mosaic.dtype == np.uint16
    got = back.camera
    assert got.cfa is camera.cfa
    assert got.black_level == camera.black_level
    assert got.white_level == camera.white_level
    assert got.bit_depth == int(np.ceil(np.log2(camera.white_level + 1)))
    np.testing.assert_allclose(got.wb_gains, camera.wb_gains, rtol=1e-6)
    np.testing.assert_allclose(got.xyz_to_cam, camera.xyz_to_cam, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.cam_to_srgb, camera.cam_to_srgb, rtol=0, atol=1e-8)
    assert got.provenance["xyz_to_cam"] == "file:ColorMatrix1"
    assert got.provenance["wb_gains"] == "file:camera_whitebalance"


@pytest.mark.parametrize("bit_depth", [10, 12, 14, 16])
@pytest.mark.parametrize("black", ["uniform", "per_position"])
@pytest.mark.parametrize("cfa", list(CFA))
def test_round_trip_every_layout_black_and_bit_depth(tmp_path, cfa, black, bit_depth):
    levels = (64, 64, 64, 64) if black == "uniform" else (60, 61, 62, 63)
    camera = make_camera(cfa=cfa, black=levels, bit_depth=bit_depth)
    mosaic = random_mosaic(np.random.default_rng(bit_depth), camera)
    path = tmp_path / "x.dng"
    write_dng(path, mosaic, camera, make="Acme", model="Sensor 9")
    assert_round_trip(path, mosaic, camera)
    back = read_raw(path)
    assert (back.make, back.model) == ("Acme", "Sensor 9")


def test_white_level_below_full_scale_gives_the_smallest_bit_depth(tmp_path):
    camera = make_camera(bit_depth=16, white=15000, black=(2048,) * 4)
    mosaic = random_mosaic(np.random.default_rng(0), camera.replace(bit_depth=14))
    write_dng(tmp_path / "x.dng", mosaic, camera)
    assert read_raw(tmp_path / "x.dng").camera.bit_depth == 14


@settings(max_examples=20, deadline=None)
@given(
    cfa=st.sampled_from(list(CFA)),
    bit_depth=st.integers(10, 16),
    black=st.lists(st.integers(0, 256), min_size=4, max_size=4),
    gains=st.tuples(st.floats(0.3, 4.0), st.floats(0.3, 4.0)),
    perturb=st.lists(st.floats(-0.2, 0.2), min_size=9, max_size=9),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_random_cameras(cfa, bit_depth, black, gains, perturb, seed):
    xyz_to_cam = np.array(G2_XYZ_TO_CAM) + np.array(perturb).reshape(3, 3)
    camera = make_camera(
        cfa=cfa,
        black=tuple(black),
        bit_depth=bit_depth,
        wb_gains=(gains[0], 1.0, gains[1]),
        xyz_to_cam=xyz_to_cam,
    )
    rng = np.random.default_rng(seed)
    h, w = 2 * rng.integers(MIN_SIDE // 2, 40, size=2)
    mosaic = random_mosaic(rng, camera, shape=(h, w))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.dng"
        write_dng(path, mosaic, camera)
        assert_round_trip(path, mosaic, camera)


def test_matrix_entries_near_simple_fractions_keep_full_precision(tmp_path):
    # 0.5 + 1e-8 is closest to 1/2 among fractions with small denominators: storing it needs
    # denominators near 2**31.
    xyz_to_cam = np.array(G2_XYZ_TO_CAM) + np.array([[0.5 + 1e-8 - 0.9194, 0, 0], [0] * 3, [0] * 3])
    camera = make_camera(xyz_to_cam=xyz_to_cam)
    mosaic = random_mosaic(np.random.default_rng(0), camera)
    write_dng(tmp_path / "x.dng", mosaic, camera)
    assert_round_trip(tmp_path / "x.dng", mosaic, camera)


def test_tags_follow_the_dng_specification(tmp_path):
    camera = make_camera(cfa=CFA.GBRG, black=(10, 20, 30, 40), wb_gains=(2.0, 1.0, 1.25))
    path = tmp_path / "x.dng"
    write_dng(path, random_mosaic(np.random.default_rng(0), camera), camera, make="A", model="B")
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1
        page = tif.pages[0]
        tags = {t.name: t.value for t in page.tags}
    assert page.photometric == 32803 and page.bitspersample == 16 and page.compression == 1
    assert tags["CFARepeatPatternDim"] == (2, 2)
    assert tuple(tags["CFAPattern"]) == (1, 2, 0, 1)  # G B / R G
    assert tags["DNGVersion"] == b"\x01\x04\x00\x00"
    assert tags["BlackLevelRepeatDim"] == (2, 2)
    assert tags["BlackLevel"] == (10, 20, 30, 40)
    assert tags["WhiteLevel"] == 4095
    assert tags["CalibrationIlluminant1"] == 21
    neutral = np.array(tags["AsShotNeutral"], dtype=float)
    np.testing.assert_allclose(neutral[0::2] / neutral[1::2], [0.5, 1.0, 0.8], rtol=1e-12)
    assert (tags["Make"], tags["Model"], tags["UniqueCameraModel"]) == ("A", "B", "A B")


def test_libraw_renders_known_colours_from_the_written_file(tmp_path):
    # The DNG carries everything a raw converter needs: a mosaic synthesised from two flat
    # linear-sRGB patches through the camera model renders back to those sRGB colours.
    camera = make_camera(cfa=CFA.GRBG, black=(64,) * 4, wb_gains=(2.0, 1.0, 1.5))
    patches = np.array([[0.2, 0.2, 0.2], [0.25, 0.05, 0.08]])
    h, w = 64, 96
    linear = np.repeat(patches, w // 2, axis=0)[None].repeat(h, axis=0)
    cam = np.einsum("ij,hwj->hwi", camera.rgb_to_cam, linear) / np.array(camera.wb_gains)
    assert cam.min() > 0 and cam.max() < 1  # inside the camera's gamut: nothing clips
    channel = np.tile(np.array(camera.cfa.channels).reshape(2, 2), (h // 2, w // 2))
    counts = 64 + np.take_along_axis(cam, channel[..., None], 2)[..., 0] * (4095 - 64)
    path = tmp_path / "x.dng"
    write_dng(path, np.round(counts).astype(np.uint16), camera)
    rgb = render_libraw(path).astype(float)
    expected = encode_gamma(patches.astype(np.float32)) * 255  # grey 124, red (137, 63, 79)
    for i, cols in enumerate((slice(8, w // 2 - 8), slice(w // 2 + 8, -8))):
        np.testing.assert_allclose(rgb[8:-8, cols].reshape(-1, 3).mean(0), expected[i], atol=3)


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    camera = make_camera()
    mosaic = random_mosaic(np.random.default_rng(0), camera)
    path = tmp_path / "x.dng"
    path.write_bytes(b"old")
    write_dng(path, mosaic, camera)
    assert [p.name for p in tmp_path.iterdir()] == ["x.dng"]
    np.testing.assert_array_equal(read_raw(path).mosaic, mosaic)
    with pytest.raises(FileNotFoundError):
        write_dng(tmp_path / "missing" / "y.dng", mosaic, camera)
    assert [p.name for p in tmp_path.iterdir()] == ["x.dng"]


@pytest.mark.parametrize(
    ("mosaic", "camera", "match"),
    [
        (np.zeros((48, 64), np.float32), make_camera(), "uint16"),
        (np.zeros((48, 64, 1), np.uint16), make_camera(), "2-D"),
        (np.zeros((47, 64), np.uint16), make_camera(), "even sides"),
        (np.zeros((20, 64), np.uint16), make_camera(), "at least 22"),
        (np.full((48, 64), 4096, np.uint16), make_camera(), "12-bit maximum 4095"),
        (np.zeros((48, 64), np.uint16), make_camera(black=(64.5, 64, 64, 64)), "whole sensor"),
        (np.zeros((48, 64), np.uint16), make_camera(white=4000.5), "whole sensor"),
        (np.zeros((48, 64), np.uint16), make_camera(xyz_to_cam=np.eye(3) * 3e9), "32-bit"),
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, mosaic, camera, match):
    with pytest.raises(ValueError, match=match):
        write_dng(tmp_path / "x.dng", mosaic, camera)
    assert not any(tmp_path.iterdir())


def test_non_ascii_make_is_refused(tmp_path):
    camera = make_camera()
    with pytest.raises(ValueError, match="ASCII"):
        write_dng(tmp_path / "x.dng", np.zeros((48, 64), np.uint16), camera, make="Çamera")
