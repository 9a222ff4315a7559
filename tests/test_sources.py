"""Reading inputs: real camera RAW files, written DNGs, photos, and every way they can be bad."""

from __future__ import annotations

import functools
import multiprocessing
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from rawpairs.camera import XYZ_TO_SRGB, Camera
from rawpairs.cfa import CFA, pack, unpack
from rawpairs.dng import write_dng
from rawpairs.errors import CorruptInputError, InputError, UnsupportedInputError
from rawpairs.sources import (
    RAW_EXTENSIONS,
    RGB_EXTENSIONS,
    bit_depth_for,
    gray_world_gains,
    read_raw,
    read_rgb,
    render_libraw,
    source_kind,
)
from rawpairs.tone import encode_gamma

RAW_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "raw"
needs_raw_files = pytest.mark.skipif(
    not RAW_DIR.is_dir(), reason=f"real RAW files not found at {RAW_DIR} (shared data absent)"
)

# From shared/data/README.md: visible (h, w), CFA, black, white.
REAL_FILES = {
    "Canon-PowerShot_G2-CRW_0304.CRW": ((1720, 2312), "RGGB", 32, 1023),
    "Canon-PowerShot_S40-CRW_0101.CRW": ((1720, 2312), "RGGB", 32, 1023),
    "Canon-PowerShot_S40-CRW_0104.CRW": ((1720, 2312), "RGGB", 32, 1023),
    "Kodak-DC50-DC50IMG-DC0008L.KDC": ((512, 768), "GRBG", 0, 16383),
    "Kodak-DC50-DC50IMG-DC0010S.KDC": ((512, 768), "GRBG", 0, 16383),
    "Kodak-DC120-DC120IMG-P003908.KDC": ((976, 848), "GRBG", 0, 255),
    "Kodak-DC120-DC120IMG-P003912.KDC": ((976, 848), "GRBG", 0, 510),
    "Canon-EOS550D-colorchart.dng": ((1156, 1734), "RGGB", 2056, 15000),
}


def make_camera(cfa=CFA.RGGB, black=(64, 64, 64, 64), wb_gains=(2.0, 1.0, 1.5)) -> Camera:
    """A 12-bit camera with the Canon PowerShot G2's colour matrix (LibRaw's table)."""
    return Camera(
        cfa=cfa,
        black_level=black,
        white_level=4095,
        bit_depth=12,
        wb_gains=wb_gains,
        xyz_to_cam=(
            (0.9194, -0.2787, -0.1059),
            (-0.8098, 1.5657, 0.2608),
            (-0.261, 0.3064, 0.7867),
        ),
    )


def random_mosaic(rng: np.random.Generator, shape=(48, 64)) -> np.ndarray:
    return rng.integers(0, 4096, size=shape, dtype=np.uint16)


@pytest.fixture(scope="module")
def real():
    if not RAW_DIR.is_dir():
        pytest.skip(f"real RAW files not found at {RAW_DIR} (shared data absent)")
    return {name: read_raw(RAW_DIR / name) for name in REAL_FILES}


# Extensions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a/IMG_0001.CR2", "raw"),
        ("x.dng", "raw"),
        ("x.NEF", "raw"),
        ("x.kdc", "raw"),
        ("x.Jpeg", "rgb"),
        ("x.PNG", "rgb"),
        ("x.tif", "rgb"),
        ("x.webp", "rgb"),
        ("x.txt", None),
        ("x", None),
        ("dng", None),
    ],
)
def test_source_kind_by_extension(name, kind):
    assert source_kind(name) == kind


def test_extension_sets_are_lowercase_dotted_and_disjoint():
    for ext in RAW_EXTENSIONS | RGB_EXTENSIONS:
        assert ext.startswith(".") and ext == ext.lower()
    assert not RAW_EXTENSIONS & RGB_EXTENSIONS
    assert {
        ".dng",
        ".nef",
        ".cr2",
        ".cr3",
        ".crw",
        ".arw",
        ".raf",
        ".orf",
        ".rw2",
    } <= RAW_EXTENSIONS


# Pure rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("white", "bits"), [(255, 8), (510, 9), (1023, 10), (1024, 11), (15000, 14), (65535, 16)]
)
def test_bit_depth_for(white, bits):
    assert bit_depth_for(white) == bits


def test_bit_depth_for_rejects_non_positive():
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive and finite"):
            bit_depth_for(bad)


@pytest.mark.parametrize("cfa", list(CFA))
def test_gray_world_gains_from_channel_means(cfa):
    black = (10.0, 11.0, 12.0, 13.0)
    signal = {0: 100.0, 1: 200.0, 2: 50.0}  # R, G, B above black
    planes = np.stack(
        [np.full((8, 8), black[p] + signal[c]) for p, c in enumerate(CFA.parse(cfa).channels)]
    )
    planes[0, 0, 0] = 1000  # saturated: ignored
    mosaic = unpack(planes).astype(np.uint16)
    gains = gray_world_gains(mosaic, cfa, black, white_level=1000)
    np.testing.assert_allclose(gains, (2.0, 1.0, 4.0), rtol=1e-12)


def test_gray_world_gains_none_without_signal():
    mosaic = np.full((8, 8), 64, np.uint16)
    assert gray_world_gains(mosaic, "RGGB", (64.0,) * 4, 1023) is None


# Real camera files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REAL_FILES))
def test_real_files_match_the_documented_table(real, name):
    (h, w), cfa, black, white = REAL_FILES[name]
    capture = real[name]
    assert capture.mosaic.shape == (h, w) and capture.mosaic.dtype == np.uint16
    assert capture.camera.cfa.value == cfa
    assert capture.camera.black_level == (black,) * 4
    assert capture.camera.white_level == white
    assert capture.camera.bit_depth == bit_depth_for(white)


def test_real_file_provenance(real):
    for name, capture in real.items():
        p = capture.camera.provenance
        assert (p["cfa"], p["black_level"], p["white_level"]) == ("file",) * 3
        if name.startswith("Kodak"):
            # No colour matrix; camera WB all ones ([1,1,1,1]) or unusable ([0,1,0,0]).
            assert p["wb_gains"] == "fallback:gray_world"
            assert p["xyz_to_cam"] == "fallback:srgb"
            np.testing.assert_allclose(capture.camera.xyz_to_cam, XYZ_TO_SRGB)
            np.testing.assert_allclose(capture.camera.cam_to_srgb, np.eye(3), atol=1e-12)
        elif name.endswith(".CRW"):
            assert p["wb_gains"] == "file:camera_whitebalance"
            assert p["xyz_to_cam"] == "file:rgb_xyz_matrix"
            assert (capture.make, capture.model) == ("", "")  # CIFF, not TIFF
        else:
            assert p["wb_gains"] == "file:camera_whitebalance"
            assert p["xyz_to_cam"] == "file:ColorMatrix1"


def test_real_values_against_the_files_own_numbers(real):
    g2 = real["Canon-PowerShot_G2-CRW_0304.CRW"].camera
    # camera_whitebalance [1687, 1036, 1655, 1036] normalised by green.
    np.testing.assert_allclose(g2.wb_gains, (1687 / 1036, 1.0, 1655 / 1036), rtol=1e-6)
    np.testing.assert_allclose(g2.xyz_to_cam[0], (0.9194, -0.2787, -0.1059), atol=1e-6)
    dng = real["Canon-EOS550D-colorchart.dng"]
    assert (dng.make, dng.model) == ("Canon", "Canon EOS Kiss X4")
    # AsShotNeutral (1, 2.477, 1.462): gains are its inverse, normalised to G = 1.
    np.testing.assert_allclose(dng.camera.wb_gains, (2.477, 1.0, 2.477 / 1.462), rtol=1e-6)
    np.testing.assert_allclose(dng.camera.xyz_to_cam[0], (0.6461, -0.1164, -0.0857), atol=1e-12)
    dc50 = real["Kodak-DC50-DC50IMG-DC0008L.KDC"]
    assert (dc50.make, dc50.model) == (
        "Eastman Kodak Company",
        "Kodak Digital Science DC50 Zoom Camera",
    )


@functools.cache
def real_render(name: str) -> np.ndarray:
    return render_libraw(RAW_DIR / name)


def half_size_reference_render(mosaic: np.ndarray, camera) -> np.ndarray:
    """Black, white, WB, clip, matrix, sRGB gamma per 2×2 block: float H/2×W/2×3 in 0..255."""
    planes = pack(mosaic).astype(np.float64)
    black = np.array(camera.black_level)[:, None, None]
    x = (planes - black) / (camera.white_level - black)
    rgb = np.zeros((3, *x.shape[1:]))
    for pos, channel in enumerate(camera.cfa.channels):
        rgb[channel] += x[pos] / (2 if channel == 1 else 1)
    rgb = np.clip(rgb * np.array(camera.wb_gains)[:, None, None], 0, 1)
    srgb = np.einsum("ij,jhw->hwi", camera.cam_to_srgb, rgb)
    return encode_gamma(np.clip(srgb, 0, 1).astype(np.float32)) * 255


@pytest.mark.parametrize(
    "name", ["Canon-EOS550D-colorchart.dng", "Canon-PowerShot_G2-CRW_0304.CRW"]
)
def test_camera_model_reproduces_libraws_render(real, name):
    # Oracle: LibRaw's render of the file uses LibRaw's own reading of every value. A wrong CFA
    # phase, black level, white balance or colour matrix would shift the colours by tens of levels.
    capture = real[name]
    ours = half_size_reference_render(capture.mosaic, capture.camera)
    libraw = real_render(name).astype(np.float64)
    h, w = libraw.shape[:2]
    assert (h, w) == capture.mosaic.shape
    libraw = libraw.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    assert np.abs(ours - libraw).mean() < 4
    np.testing.assert_allclose(ours.mean(axis=(0, 1)), libraw.mean(axis=(0, 1)), atol=1.5)


@needs_raw_files
def test_render_libraw_refuses_non_square_pixels():
    path = RAW_DIR / "Kodak-DC120-DC120IMG-P003908.KDC"
    with pytest.raises(UnsupportedInputError, match=r"pixel_aspect 1\.535") as e:
        render_libraw(path)
    assert str(path) in str(e.value)


@needs_raw_files
def test_rewritten_as_dng_renders_identically(tmp_path):
    source = RAW_DIR / "Canon-PowerShot_G2-CRW_0304.CRW"
    capture = read_raw(source)
    write_dng(tmp_path / "g2.dng", capture.mosaic, capture.camera)
    np.testing.assert_array_equal(render_libraw(tmp_path / "g2.dng"), real_render(source.name))


# CFA phase of the visible area --------------------------------------------------------------


def test_cfa_is_that_of_the_visible_area_origin(tmp_path):
    # A DNG whose ActiveArea starts at an odd row and column; its CFAPattern (RGGB) is relative
    # to the ActiveArea origin (DNG spec). The red sites hold bright values: whatever margins
    # LibRaw settles on, the reported CFA must put red exactly on them.
    h, w = 40, 48
    mosaic = np.full((h, w), 1000, np.uint16)
    mosaic[1::2, 1::2] = 30000  # red sites: (0, 0) of the RGGB block at ActiveArea (1, 1)
    tags = [
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, (0, 1, 1, 2), True),
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50717, "I", 1, 65535, True),
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral (else LibRaw auto-WBs)
        (50829, "I", 4, (1, 1, h - 1, w - 1), True),  # ActiveArea: top, left, bottom, right
    ]
    path = tmp_path / "margins.dng"
    tifffile.imwrite(path, mosaic, photometric=32803, extratags=tags)
    capture = read_raw(path)
    hv, wv = capture.mosaic.shape
    assert hv % 2 == 0 and wv % 2 == 0 and hv >= h - 4 and wv >= w - 4
    ry, rx = capture.camera.cfa.red_position
    assert np.all(capture.mosaic[ry::2, rx::2] == 30000)
    assert np.count_nonzero(capture.mosaic == 30000) == hv * wv // 4
    rgb = render_libraw(path)
    assert rgb.shape == (hv, wv, 3)
    assert rgb[4:-4, 4:-4, 0].mean() > 4 * rgb[4:-4, 4:-4, 1:].mean()


def test_odd_visible_size_drops_the_trailing_row_and_column(tmp_path):
    mosaic = random_mosaic(np.random.default_rng(0), shape=(46, 50))
    tags = [
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, (0, 1, 1, 2), True),
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50717, "I", 1, 4095, True),
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50829, "I", 4, (0, 0, 45, 49), True),  # visible 45 × 49
    ]
    path = tmp_path / "odd.dng"
    tifffile.imwrite(path, mosaic, photometric=32803, extratags=tags)
    capture = read_raw(path)
    np.testing.assert_array_equal(capture.mosaic, mosaic[:44, :48])
    assert capture.camera.cfa is CFA.RGGB
    assert render_libraw(path).shape == (44, 48, 3)


# White balance rules on written DNGs -------------------------------------------------------------


def test_all_ones_camera_white_balance_falls_back_to_daylight(tmp_path):
    camera = make_camera(wb_gains=(1.0, 1.0, 1.0))
    write_dng(tmp_path / "x.dng", random_mosaic(np.random.default_rng(0)), camera)
    got = read_raw(tmp_path / "x.dng").camera
    assert got.provenance["wb_gains"] == "file:daylight_whitebalance"
    assert got.wb_gains[0] > 1.2 and got.wb_gains[2] > 1.0  # daylight through the G2's matrix


# rawpy in worker processes ------------------------------------------------------------------------


def test_read_raw_in_a_spawn_worker(tmp_path):
    # Regression for LibRaw's OpenMP deadlock under fork: spawn workers must work.
    camera = make_camera(cfa=CFA.BGGR, black=(1, 2, 3, 4))
    mosaic = random_mosaic(np.random.default_rng(0))
    path = tmp_path / "x.dng"
    write_dng(path, mosaic, camera)
    here = read_raw(path)  # rawpy (and its thread pool) already used in this process
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        there = pool.apply_async(read_raw, (path,)).get(timeout=120)
    np.testing.assert_array_equal(there.mosaic, mosaic)
    assert there.camera == here.camera
    assert there.camera.provenance == here.camera.provenance


# Bad RAW files -----------------------------------------------------------------------------


def assert_input_error(cls, fn, path, match):
    with pytest.raises(cls, match=match) as e:
        fn(path)
    assert e.value.path == str(path) and str(e.value).startswith(f"{path}: ")
    return e.value


def test_truncated_dng_is_corrupt(tmp_path):
    camera = make_camera()
    write_dng(tmp_path / "full.dng", random_mosaic(np.random.default_rng(0)), camera)
    data = (tmp_path / "full.dng").read_bytes()
    path = tmp_path / "cut.dng"
    path.write_bytes(data[: len(data) // 2])
    assert_input_error(CorruptInputError, read_raw, path, "truncated")


@needs_raw_files
@pytest.mark.parametrize(
    ("name", "cls", "match"),
    [
        ("Canon-EOS550D-colorchart.dng", CorruptInputError, "truncated"),
        ("Kodak-DC50-DC50IMG-DC0008L.KDC", CorruptInputError, "truncated"),
        # CRW keeps its directory at the end: LibRaw only says "unsupported".
        ("Canon-PowerShot_G2-CRW_0304.CRW", UnsupportedInputError, "damaged file"),
    ],
)
def test_truncated_real_raw(tmp_path, name, cls, match):
    data = (RAW_DIR / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) * 9 // 10])
    assert_input_error(cls, read_raw, path, match)


@pytest.mark.parametrize(
    ("name", "content", "cls", "match"),
    [
        ("empty.dng", b"", CorruptInputError, "empty file"),
        ("notes.dng", b"just some text, not a raw file\n" * 10, CorruptInputError, "not a RAW"),
        ("zeros.nef", bytes(4096), CorruptInputError, "not a RAW"),
        ("tiff.dng", b"II*\x00" + bytes(4092), UnsupportedInputError, "LibRaw cannot decode"),
        ("photo.jpg", b"\xff\xd8", UnsupportedInputError, "not a known RAW extension"),
        ("notes.txt", b"text", UnsupportedInputError, "extension '.txt'"),
    ],
)
def test_bad_raw_files(tmp_path, name, content, cls, match):
    path = tmp_path / name
    path.write_bytes(content)
    assert_input_error(cls, read_raw, path, match)
    assert_input_error(cls, render_libraw, path, match)


def test_missing_raw_file(tmp_path):
    err = assert_input_error(InputError, read_raw, tmp_path / "nope.dng", "cannot open")
    assert type(err) is InputError


def _dng_tags(cfa_dim, cfa_pattern, extra=()):
    return [
        (33421, "H", 2, cfa_dim, True),
        (33422, "B", len(cfa_pattern), cfa_pattern, True),
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50717, "I", 1, 4095, True),
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        *extra,
    ]


XTRANS = (1, 1, 0, 1, 1, 2, 1, 1, 2, 1, 1, 0, 2, 0, 1, 0, 2, 1) * 2


@pytest.mark.parametrize(
    ("data", "photometric", "tags", "match"),
    [
        (np.full((40, 48, 3), 100, np.uint16), 34892, _dng_tags((2, 2), (0, 1, 1, 2)), "linear"),
        (np.full((48, 48), 100, np.uint16), 32803, _dng_tags((6, 6), XTRANS), "6×6"),
        (
            np.full((48, 48), 100, np.uint16),
            32803,
            _dng_tags((2, 2), (3, 4, 5, 1), [(50710, "B", 4, (3, 4, 5, 1), True)]),
            "GMCY",
        ),
    ],
    ids=["linear", "xtrans", "cmyg"],
)
def test_non_bayer_raw_is_unsupported(tmp_path, data, photometric, tags, match):
    path = tmp_path / "x.dng"
    tifffile.imwrite(path, data, photometric=photometric, extratags=tags)
    assert_input_error(UnsupportedInputError, read_raw, path, match)


# Photos -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


def write_rgb(path: Path, rgb: np.ndarray, *params: int) -> Path:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), list(params))
    return path


@pytest.mark.parametrize(
    ("name", "params"),
    [("x.png", ()), ("x.TIF", ()), ("x.webp", (cv2.IMWRITE_WEBP_QUALITY, 101))],
)
def test_lossless_photos_read_exactly_in_rgb_order(tmp_path, photo, name, params):
    got = read_rgb(write_rgb(tmp_path / name, photo, *params))
    assert got.dtype == np.uint8 and got.shape == photo.shape
    np.testing.assert_array_equal(got, photo)


def test_jpeg_reads_close_to_its_source(tmp_path):
    smooth = np.zeros((64, 64, 3), np.uint8)
    smooth[..., 0] = 200  # red
    got = read_rgb(write_rgb(tmp_path / "x.jpg", smooth, cv2.IMWRITE_JPEG_QUALITY, 95))
    np.testing.assert_allclose(got.mean(axis=(0, 1)), (200, 0, 0), atol=3)


def test_grayscale_becomes_three_equal_channels(tmp_path, photo):
    gray = photo[..., 0]
    assert cv2.imwrite(str(tmp_path / "g.png"), gray)
    got = read_rgb(tmp_path / "g.png")
    assert got.shape == (*gray.shape, 3)
    for c in range(3):
        np.testing.assert_array_equal(got[..., c], gray)


def test_alpha_is_dropped(tmp_path, photo):
    bgra = np.dstack([photo[..., ::-1], np.full(photo.shape[:2], 7, np.uint8)])
    assert cv2.imwrite(str(tmp_path / "a.png"), bgra)
    np.testing.assert_array_equal(read_rgb(tmp_path / "a.png"), photo)


def test_sixteen_bit_is_rounded_to_eight(tmp_path, photo):
    wide = photo.astype(np.uint16) * 257  # what 8-bit values become in 16 bits
    write_rgb(tmp_path / "w.png", wide)
    np.testing.assert_array_equal(read_rgb(tmp_path / "w.png"), photo)
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    write_rgb(tmp_path / "all.png", np.dstack([values] * 3))
    got = read_rgb(tmp_path / "all.png")[..., 0].astype(np.int64)
    np.testing.assert_array_equal(got, np.round(values / 257.0).astype(np.int64))


def test_float_tiff_is_unsupported(tmp_path):
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.float32), photometric="rgb")
    assert_input_error(UnsupportedInputError, read_rgb, path, "float32")


def _jpeg_with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an EXIF APP1 segment holding only the Orientation tag after the SOI marker."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((32, 48, 3), np.uint8)
    image[:8, :8] = (255, 255, 255)  # white top-left corner
    ok, jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    path = tmp_path / "rot.jpg"
    path.write_bytes(_jpeg_with_orientation(jpeg.tobytes(), 6))  # 6: rotate 90° clockwise
    got = read_rgb(path)
    assert got.shape == (48, 32, 3)
    np.testing.assert_allclose(got.astype(float), np.rot90(image, k=-1), atol=8)


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _bad_crc_pngs(png: bytes) -> dict[str, bytes]:
    idat = png.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", png[idat : idat + 4])
    crc_at = idat + 8 + length
    bad_idat = png[:crc_at] + bytes([png[crc_at] ^ 0xFF]) + png[crc_at + 1 :]
    # An ancillary chunk with a wrong CRC: libpng only warns and decodes the pixels.
    text = _png_chunk(b"tEXt", b"Comment\x00hello", crc=0)
    bad_text = png[:33] + text + png[33:]
    return {"idat": bad_idat, "text": bad_text, "cut": png[: len(png) // 2]}


@pytest.mark.parametrize("case", ["idat", "text", "cut"])
def test_damaged_png_is_corrupt(tmp_path, photo, case):
    ok, png = cv2.imencode(".png", photo)
    assert ok
    path = tmp_path / f"{case}.png"
    path.write_bytes(_bad_crc_pngs(png.tobytes())[case])
    assert_input_error(CorruptInputError, read_rgb, path, "damaged PNG")


@pytest.mark.parametrize(
    ("name", "content", "cls", "match"),
    [
        ("empty.png", b"", CorruptInputError, "empty file"),
        ("notes.jpg", b"just text\n" * 20, CorruptInputError, "cannot decode"),
        ("x.gif", b"GIF89a", UnsupportedInputError, "extension '.gif'"),
        ("x.dng", b"II*\x00", UnsupportedInputError, "not a known photo extension"),
    ],
)
def test_bad_photo_files(tmp_path, name, content, cls, match):
    path = tmp_path / name
    path.write_bytes(content)
    assert_input_error(cls, read_rgb, path, match)


def test_truncated_jpeg_is_corrupt(tmp_path, photo):
    ok, jpeg = cv2.imencode(".jpg", photo)
    assert ok
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg.tobytes()[: len(jpeg) * 2 // 3])
    assert_input_error(CorruptInputError, read_rgb, path, "truncated JPEG")


def test_missing_photo(tmp_path):
    err = assert_input_error(InputError, read_rgb, tmp_path / "nope.png", "cannot open")
    assert type(err) is InputError
