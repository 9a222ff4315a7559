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

from rawpairs.camera import Camera
from rawpairs.cfa import CFA, pack, unpack
from rawpairs.dng import write_dng
from rawpairs.errors import CorruptInputError, InputError, UnsupportedInputError
from rawpairs.libraw import render_libraw
from rawpairs.photos import read_rgb
from rawpairs.raw_files import read_raw
from rawpairs.raw_metadata import bit_depth_for, fit_color_matrix, gray_world_gains
from rawpairs.sources import RAW_EXTENSIONS, RGB_EXTENSIONS, source_kind
from rawpairs.tone import decode_gamma, encode_gamma

# Real camera RAW files: three small ones ship in tests/data/raw (CC0, see the README there), the
# others live beside the project in ../shared/data/raw and their tests skip without it.
BUNDLED_RAW = Path(__file__).resolve().parents[1] / "data" / "raw"
SHARED_RAW = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "raw"
DC50 = "Kodak-DC50-DC50IMG-DC0010S.KDC"
DC120 = "Kodak-DC120-DC120IMG-P003912.KDC"
S40 = "Canon-PowerShot_S40-CRW_0104.CRW"


def raw_file(name: str) -> Path:
    """Path of a real RAW file: shipped in tests/data/raw, else in ../shared/data/raw, else skip."""
    for folder in (BUNDLED_RAW, SHARED_RAW):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} is not shipped (tests/data/raw) and {SHARED_RAW} is absent")


@functools.cache
def real(name: str):
    return read_raw(raw_file(name))


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


def test_matrix_daylight_gains_make_d65_white_neutral():
    """Gains g with g · (xyz_to_cam · XYZ(D65)) equal in R, G, B: D65 white comes out neutral."""
    from rawpairs.camera import SRGB_TO_XYZ
    from rawpairs.raw_metadata import matrix_daylight_gains

    xyz_to_cam = np.asarray(make_camera().xyz_to_cam)
    gains = np.array(matrix_daylight_gains(xyz_to_cam))
    response = gains * (xyz_to_cam @ (SRGB_TO_XYZ @ np.ones(3)))
    np.testing.assert_allclose(response / response[1], 1.0, atol=1e-5)
    assert gains[1] == 1.0
    assert matrix_daylight_gains(-xyz_to_cam) is None


def test_gray_world_gains_none_without_signal():
    mosaic = np.full((8, 8), 64, np.uint16)
    assert gray_world_gains(mosaic, "RGGB", (64.0,) * 4, 1023) is None


# Real camera files ---------------------------------------------------------------------------


def test_three_real_files_ship_with_the_tests():
    assert {p.name for p in BUNDLED_RAW.glob("*.*") if source_kind(p) == "raw"} == {
        DC50,
        DC120,
        S40,
    }
    assert (BUNDLED_RAW / "LICENSE-digicam_corpus-CC0.txt").is_file()


@pytest.mark.parametrize("name", list(REAL_FILES))
def test_real_files_match_the_documented_table(name):
    (h, w), cfa, black, white = REAL_FILES[name]
    capture = real(name)
    assert capture.mosaic.shape == (h, w) and capture.mosaic.dtype == np.uint16
    assert capture.camera.cfa.value == cfa
    assert capture.camera.black_level == (black,) * 4
    assert capture.camera.white_level == white
    assert capture.camera.bit_depth == bit_depth_for(white)
    assert capture.pixel_aspect == pytest.approx(1.5346 if "DC120" in name else 1.0, abs=1e-4)


@pytest.mark.parametrize("name", list(REAL_FILES))
def test_real_file_provenance(name):
    capture = real(name)
    p = capture.camera.provenance
    assert (p["cfa"], p["black_level"], p["white_level"]) == ("file",) * 3
    assert p["noise"] == "unknown"  # the levels are 0: not measured, not noise-free
    assert capture.camera.noise_shot == capture.camera.noise_read == 0
    if name.startswith("Kodak"):
        # No colour matrix in the file; camera WB all ones ([1,1,1,1]) or unusable ([0,1,0,0]):
        # the daylight balance of LibRaw's matrix, which is LibRaw's own (unity) balance.
        assert p["wb_gains"] == "fallback:matrix_d65"
        assert p["xyz_to_cam"] == "file:libraw_fit"
        assert capture.camera.wb_gains == (1.0, 1.0, 1.0)
    elif name.endswith(".CRW"):
        assert p["wb_gains"] == "file:camera_whitebalance"
        assert p["xyz_to_cam"] == "file:rgb_xyz_matrix"
        assert (capture.make, capture.model) == ("", "")  # CIFF, not TIFF
    else:
        assert p["wb_gains"] == "file:camera_whitebalance"
        assert p["xyz_to_cam"] == "file:ColorMatrix1"


def test_real_values_against_the_files_own_numbers():
    s40 = real(S40).camera
    # camera_whitebalance [1712, 1043, 1602, 1043] normalised by green.
    np.testing.assert_allclose(s40.wb_gains, (1712 / 1043, 1.0, 1602 / 1043), rtol=1e-6)
    np.testing.assert_allclose(s40.xyz_to_cam[0], (0.8606, -0.2573, -0.0949), atol=1e-6)
    dc50 = real(DC50)
    assert (dc50.make, dc50.model) == (
        "Eastman Kodak Company",
        "Kodak Digital Science DC50 Zoom Camera",
    )


def test_real_values_of_the_larger_files():
    g2 = real("Canon-PowerShot_G2-CRW_0304.CRW").camera
    np.testing.assert_allclose(g2.wb_gains, (1687 / 1036, 1.0, 1655 / 1036), rtol=1e-6)
    np.testing.assert_allclose(g2.xyz_to_cam[0], (0.9194, -0.2787, -0.1059), atol=1e-6)
    dng = real("Canon-EOS550D-colorchart.dng")
    assert (dng.make, dng.model) == ("Canon", "Canon EOS Kiss X4")
    # AsShotNeutral (1, 2.477, 1.462): gains are its inverse, normalised to G = 1.
    np.testing.assert_allclose(dng.camera.wb_gains, (2.477, 1.0, 2.477 / 1.462), rtol=1e-6)
    np.testing.assert_allclose(dng.camera.xyz_to_cam[0], (0.6461, -0.1164, -0.0857), atol=1e-12)


@pytest.mark.parametrize(
    ("name", "first_row"),
    [(DC50, (1.8125, -0.3365, -0.476)), (DC120, (1.4815, -0.321, -0.1605))],
)
def test_kodak_matrix_is_libraws_own(name, first_row):
    """The Kodak files expose no matrix, yet LibRaw renders them with one: the fitted matrix is
    LibRaw's (its linear sRGB render is the fitted matrix times its camera-RGB render)."""
    import rawpy

    camera = real(name).camera
    np.testing.assert_allclose(camera.cam_to_srgb[0], first_row, atol=2e-4)
    renders = []
    for space in (rawpy.ColorSpace.raw, rawpy.ColorSpace.sRGB):
        with rawpy.imread(str(raw_file(name))) as raw:
            renders.append(
                raw.postprocess(
                    half_size=True, output_color=space, gamma=(1, 1), no_auto_bright=True,
                    output_bps=16, use_camera_wb=True, user_flip=0,
                ).astype(np.float64)
            )  # fmt: skip
    cam, srgb = (r.reshape(-1, 3) for r in renders)
    inside = (cam.max(1) < 60000) & (srgb.max(1) < 60000) & (srgb.min(1) > 600)
    predicted = cam[inside] @ camera.cam_to_srgb.T
    assert np.abs(predicted - srgb[inside]).max() < 0.002 * 65535


def test_a_file_without_any_matrix_keeps_the_srgb_fallback(tmp_path):
    """A DNG without ColorMatrix: LibRaw renders it with the identity, so the fit recovers no
    matrix and the provenance stays an honest fallback."""
    mosaic = np.random.default_rng(0).integers(100, 4000, (64, 96)).astype(np.uint16)
    tags = [(33421, "H", 2, (2, 2)), (33422, "B", 4, (0, 1, 1, 2))]
    tags += [(50706, "B", 4, (1, 4, 0, 0)), (50717, "I", 1, 4095)]
    tifffile.imwrite(tmp_path / "plain.dng", mosaic, photometric=32803, extratags=tags)
    camera = read_raw(tmp_path / "plain.dng").camera
    assert camera.provenance["xyz_to_cam"] == "fallback:srgb"
    np.testing.assert_allclose(camera.cam_to_srgb, np.eye(3), atol=1e-12)


def test_fit_color_matrix_recovers_a_matrix_and_refuses_what_is_not_one():
    rng = np.random.default_rng(0)
    matrix = np.array([[1.6, -0.4, -0.2], [-0.3, 1.5, -0.2], [0.1, -0.5, 1.4]])
    cam = rng.uniform(0.05, 0.6, size=(60, 50, 3))
    srgb = cam @ matrix.T
    srgb[:5] = 1.0  # clipped rows are left out of the fit
    np.testing.assert_array_equal(fit_color_matrix(cam, srgb), matrix)
    grey = np.repeat(cam[..., :1], 3, axis=-1)  # one-dimensional colours: no unique matrix
    assert fit_color_matrix(grey, grey) is None
    assert fit_color_matrix(cam, np.sqrt(cam)) is None  # not related by a matrix
    assert fit_color_matrix(cam[:10, :10], cam[:10, :10]) is None  # too few pixels
    with pytest.raises(ValueError, match="differ in shape"):
        fit_color_matrix(cam, cam[:, :10])


@functools.cache
def real_render(name: str) -> np.ndarray:
    return render_libraw(raw_file(name))


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


@pytest.mark.parametrize("name", ["Canon-EOS550D-colorchart.dng", S40])
def test_camera_model_reproduces_libraws_render(name):
    # Oracle: LibRaw's render of the file uses LibRaw's own reading of every value. A wrong CFA
    # phase, black level, white balance or colour matrix would shift the colours by tens of levels.
    capture = real(name)
    ours = half_size_reference_render(capture.mosaic, capture.camera)
    libraw = real_render(name).astype(np.float64)
    h, w = libraw.shape[:2]
    assert (h, w) == capture.mosaic.shape
    libraw = libraw.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    assert np.abs(ours - libraw).mean() < 4
    np.testing.assert_allclose(ours.mean(axis=(0, 1)), libraw.mean(axis=(0, 1)), atol=1.5)


def test_render_libraw_refuses_non_square_pixels():
    path = raw_file(DC120)
    with pytest.raises(UnsupportedInputError, match=r"pixel_aspect 1\.535") as e:
        render_libraw(path)
    assert str(path) in str(e.value)


def test_rewritten_as_dng_renders_identically(tmp_path):
    source = raw_file(S40)
    capture = read_raw(source)
    write_dng(tmp_path / "s40.dng", capture.mosaic, capture.camera)
    np.testing.assert_array_equal(render_libraw(tmp_path / "s40.dng"), real_render(S40))


def test_declared_raw_size_is_checked_before_decoding():
    path = raw_file(DC50)
    limited = functools.partial(read_raw, max_pixels=512 * 768 - 1)
    assert_input_error(UnsupportedInputError, limited, path, r"768×512 = 0\.4 MP exceeds")
    assert read_raw(path, max_pixels=512 * 768).mosaic.shape == (512, 768)
    assert read_raw(path, max_pixels=None).mosaic.shape == (512, 768)


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


@pytest.mark.parametrize(
    ("name", "cls", "match"),
    [
        ("Canon-EOS550D-colorchart.dng", CorruptInputError, "truncated"),
        (DC50, CorruptInputError, "truncated"),
        # CRW keeps its directory at the end: LibRaw only says "unsupported".
        (S40, UnsupportedInputError, "damaged file"),
    ],
)
def test_truncated_real_raw(tmp_path, name, cls, match):
    data = raw_file(name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) * 9 // 10])
    assert_input_error(cls, read_raw, path, match)


def _flip_bytes(data: bytes, n: int = 64, seed: int = 1) -> bytes:
    """``data`` with ``n`` bytes of its last three quarters inverted (fixed positions)."""
    damaged = bytearray(data)
    rng = np.random.default_rng(seed)
    for i in rng.choice(np.arange(len(data) // 4, len(data)), n, replace=False):
        damaged[i] ^= 0xFF
    return bytes(damaged)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda data: data[: len(data) * 9 // 10], "Premature end of JPEG file"),
        (_flip_bytes, "Corrupt JPEG data"),
    ],
    ids=["cut_at_90_percent", "64_flipped_bytes"],
)
def test_damaged_lossy_kdc_is_corrupt(tmp_path, capfd, damage, match):
    """A lossy DC120 file (JPEG-compressed sensor data) damaged so that LibRaw reports no error:
    libjpeg papers over it with invented pixels and only says so on stderr. The file is a
    CorruptInputError naming it and libjpeg's message, and nothing leaks to stderr."""
    path = tmp_path / DC120
    path.write_bytes(damage(raw_file(DC120).read_bytes()))
    err = assert_input_error(CorruptInputError, read_raw, path, "invented pixels")
    assert match in err.cause and "\n" not in str(err)
    assert "JPEG" not in capfd.readouterr().err


def test_undamaged_raw_decodes_without_a_warning(capfd):
    """The intact lossy DC120 file decodes silently (the warning check does not refuse it)."""
    assert real(DC120).mosaic.shape == (976, 848)
    assert capfd.readouterr().err == ""


def test_counts_above_the_white_levels_bit_depth_are_refused_by_both_renders(tmp_path):
    """A DNG whose counts exceed the bit depth of its WhiteLevel: a sample could not hold them
    (verify rejects them). read_raw refuses it, and so does the LibRaw render (it used to write
    the sample), both with one line naming the file."""
    from rawpairs.config import BuildConfig
    from rawpairs.sample import Source, make_samples

    mosaic = np.full((64, 64), 500, np.uint16)
    mosaic[10:20, 10:20] = 1500
    path = tmp_path / "over.dng"
    tags = _dng_tags((2, 2), (0, 1, 1, 2))
    tags = [t if t[0] != 50717 else (50717, "I", 1, 1000, True) for t in tags]
    tifffile.imwrite(path, mosaic, photometric=32803, extratags=tags)
    match = "counts reach 1500, above 1023"
    assert_input_error(UnsupportedInputError, read_raw, path, match)
    assert_input_error(UnsupportedInputError, render_libraw, path, match)
    for render in ("rawpairs", "libraw"):
        with pytest.raises(UnsupportedInputError, match=match):
            list(make_samples(Source(str(path), path.name, "raw"), BuildConfig(render=render)))
    # counts above the white level but within its bit depth stay readable (they clip at white)
    mosaic[10:20, 10:20] = 1023
    tifffile.imwrite(path, mosaic, photometric=32803, extratags=tags)
    assert read_raw(path).mosaic.max() == 1023
    assert render_libraw(path).shape == (64, 64, 3)


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


# Photos: damage the decoder papers over, RAW content under a photo name, declared size ---------


def test_jpeg_with_corrupted_middle_bytes_is_corrupt(tmp_path):
    """libjpeg repairs a damaged scan and only warns; the warning makes it a failure."""
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), (0, 0), 3)
    ok, jpeg = cv2.imencode(".jpg", smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = bytearray(jpeg.tobytes())
    middle = len(data) // 2
    data[middle : middle + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.jpg"
    path.write_bytes(bytes(data))
    err = assert_input_error(CorruptInputError, read_rgb, path, "damaged JPEG data")
    assert "\n" not in str(err) and "Corrupt JPEG data" in str(err)
    read_rgb(write_rgb(tmp_path / "fine.jpg", smooth, cv2.IMWRITE_JPEG_QUALITY, 95))


@pytest.mark.parametrize(("name", "renamed"), [(DC120, "kodak.tif"), (S40, "canon.jpg")])
def test_raw_file_under_a_photo_extension_is_refused(tmp_path, name, renamed):
    """A KDC renamed .tif would decode to its 80×60 thumbnail: the content says it is a RAW."""
    path = tmp_path / renamed
    path.write_bytes(raw_file(name).read_bytes())
    assert_input_error(UnsupportedInputError, read_rgb, path, "content is a camera RAW file")


def test_dng_under_a_photo_extension_is_refused(tmp_path):
    write_dng(tmp_path / "x.dng", random_mosaic(np.random.default_rng(1)), make_camera())
    path = tmp_path / "x.tiff"
    path.write_bytes((tmp_path / "x.dng").read_bytes())
    assert_input_error(UnsupportedInputError, read_rgb, path, "camera RAW file")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("x.png", ()),
        ("x.jpg", (cv2.IMWRITE_JPEG_QUALITY, 95)),
        ("x.tif", ()),
        ("x.webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),
        ("x.webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
    ],
)
def test_declared_photo_size_is_checked(tmp_path, photo, name, params):
    path = write_rgb(tmp_path / name, photo, *params)
    h, w = photo.shape[:2]
    assert read_rgb(path, max_pixels=h * w).shape == photo.shape
    limited = functools.partial(read_rgb, max_pixels=h * w - 1)
    assert_input_error(UnsupportedInputError, limited, path, f"declared size {w}×{h}")


def test_huge_declared_png_is_refused_before_decoding(tmp_path):
    """A small, valid PNG that declares 20000×20000 (400 MP) is refused by the default limit."""
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + bytes(3 * 20000))  # one row: decoding would need 1.2 GB
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    err = assert_input_error(UnsupportedInputError, read_rgb, path, "exceeds the 300.0 MP limit")
    assert "--max-pixels" in str(err)


def test_build_config_limits_pixels_and_checks_render_options(tmp_path, photo):
    from rawpairs.config import BuildConfig
    from rawpairs.headers import MAX_PIXELS
    from rawpairs.sample import Source, make_samples

    assert MAX_PIXELS == BuildConfig().max_pixels >= 200_000_000
    path = write_rgb(tmp_path / "p.png", photo)
    source = Source(str(path), "p.png", "rgb")
    with pytest.raises(UnsupportedInputError, match=r"declared size 32×24"):
        list(make_samples(source, BuildConfig(max_pixels=24 * 32 - 1)))
    assert len(list(make_samples(source, BuildConfig(max_pixels=24 * 32)))) == 1
    raw = Source(str(raw_file(DC50)), DC50, "raw")
    with pytest.raises(UnsupportedInputError, match="exceeds"):
        list(make_samples(raw, BuildConfig(max_pixels=1000)))
    for bad, message in (
        ({"exposure": "bright"}, "--exposure"),
        ({"tone": "filmic"}, "--tone"),
        ({"max_pixels": 0}, "--max-pixels"),
    ):
        with pytest.raises(ValueError, match=message):
            BuildConfig(**bad)


# ICC profiles of photos ---------------------------------------------------------------------------

# Display P3 → linear sRGB (both D65), the published matrix (e.g. W3C CSS Color 4, to 4 decimals).
P3_TO_SRGB = np.array([[1.2249, -0.2247, 0.0], [-0.0420, 1.0419, 0.0], [-0.0197, -0.0786, 1.0979]])


def _xy_to_xyz_columns(primaries, white):
    """RGB → XYZ matrix of an RGB space from its primaries' and white's chromaticities."""
    cols = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
    wx, wy = white
    w = np.array([wx / wy, 1.0, (1 - wx - wy) / wy])
    return cols * np.linalg.solve(cols, w)


def icc_profile(description: str, primaries, *, lut_only: bool = False) -> bytes:
    """A minimal ICC v2 display profile: colorants (D65 primaries adapted to D50 by Bradford),
    the sRGB tone curve (a type-3 ``para``) on all three channels, a ``desc`` tag."""
    bradford = np.array(
        [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
    )
    d50, d65 = np.array([0.9642, 1.0, 0.8249]), np.array([0.95047, 1.0, 1.08883])
    adapt = np.linalg.inv(bradford) @ np.diag((bradford @ d50) / (bradford @ d65)) @ bradford
    colorants = adapt @ _xy_to_xyz_columns(primaries, (0.3127, 0.3290))

    def s15(v):
        return b"".join(struct.pack(">i", round(x * 65536)) for x in v)

    text = description.encode("ascii") + b"\x00"
    tags = {b"desc": b"desc\x00\x00\x00\x00" + struct.pack(">I", len(text)) + text + bytes(79)}
    tags[b"wtpt"] = b"XYZ \x00\x00\x00\x00" + s15(d50)
    if lut_only:
        tags[b"A2B0"] = b"mft2" + bytes(48)
    else:
        for name, col in zip((b"rXYZ", b"gXYZ", b"bXYZ"), colorants.T, strict=True):
            tags[name] = b"XYZ \x00\x00\x00\x00" + s15(col)
        trc = b"para\x00\x00\x00\x00\x00\x03\x00\x00" + s15(
            (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
        )
        for name in (b"rTRC", b"gTRC", b"bTRC"):
            tags[name] = trc
    table, body = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, data in tags.items():
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I", size) + b"none" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
    header += bytes(12) + b"acsp" + bytes(128 - 40)
    return header + struct.pack(">I", len(tags)) + table + body


P3 = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))


def _jpeg_with_icc(jpeg: bytes, icc: bytes) -> bytes:
    body = b"ICC_PROFILE\x00\x01\x01" + icc
    return jpeg[:2] + b"\xff\xe2" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def _png_with_icc(png: bytes, icc: bytes) -> bytes:
    iccp = b"P3\x00\x00" + zlib.compress(icc)
    return png[:33] + _png_chunk(b"iCCP", iccp) + png[33:]


def _p3_to_srgb8(rgb: np.ndarray) -> np.ndarray:
    """Independent reference: P3-encoded uint8 RGB → sRGB uint8 by the published matrix."""
    linear = decode_gamma(rgb.astype(np.float64) / 255, "srgb")
    srgb = encode_gamma(np.clip(linear @ P3_TO_SRGB.T, 0, 1), "srgb")
    return np.floor(srgb * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def muted():
    """A photo of moderate colours (inside both gamuts), so that nothing clips."""
    rng = np.random.default_rng(3)
    base = rng.integers(60, 190, size=(1, 1, 3))
    ramp = np.linspace(-40, 40, 64)[:, None, None] * np.array([1.0, 0.5, -0.7])
    return np.clip(base + ramp + np.zeros((64, 80, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_display_p3_photo_is_converted_to_srgb(tmp_path, muted, fmt):
    """A photo tagged Display P3 used to be stored as if its values were sRGB (less saturated
    than it is): its values are converted to sRGB, matching the published P3 → sRGB matrix."""
    plain = write_rgb(tmp_path / f"plain.{fmt}", muted)
    data = plain.read_bytes()
    icc = icc_profile("Display P3", P3)
    tagged = tmp_path / f"p3.{fmt}"
    tagged.write_bytes(_png_with_icc(data, icc) if fmt == "png" else _jpeg_with_icc(data, icc))
    expected = _p3_to_srgb8(read_rgb(plain))
    got = read_rgb(tagged)
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert np.abs(got.astype(int) - read_rgb(plain)).max() >= 10  # the conversion matters


def test_srgb_profiles_leave_pixels_unchanged(tmp_path, muted):
    """An sRGB profile, named so or not, changes nothing (same bytes as without a profile)."""
    plain = write_rgb(tmp_path / "plain.png", muted)
    for i, icc in enumerate(
        (icc_profile("sRGB IEC61966-2.1", SRGB_PRIMARIES), icc_profile("Camera", SRGB_PRIMARIES))
    ):
        tagged = tmp_path / f"srgb{i}.png"
        tagged.write_bytes(_png_with_icc(plain.read_bytes(), icc))
        np.testing.assert_array_equal(read_rgb(tagged), read_rgb(plain))


def test_unconvertible_icc_profile_is_refused(tmp_path, muted):
    plain = write_rgb(tmp_path / "plain.png", muted)
    for name, icc in (("lut.png", icc_profile("Fancy", P3, lut_only=True)), ("junk.png", b"x")):
        path = tmp_path / name
        path.write_bytes(_png_with_icc(plain.read_bytes(), icc))
        assert_input_error(UnsupportedInputError, read_rgb, path, "ICC profile cannot be")


def test_render_libraw_applies_the_given_exposure_gain():
    """render_libraw(digital_gain=g) scales linear light by g (LibRaw's ``bright``), so with the
    default render's auto-exposure gain the two renders of a file agree in brightness (they
    differed 1.2–1.5× with LibRaw's brightening off and ours on)."""
    from rawpairs.isp import auto_exposure, process

    for name in (S40, DC50):
        capture = real(name)
        gain = auto_exposure(capture.mosaic, capture.camera)
        plain, bright = (
            render_libraw(raw_file(name)),
            render_libraw(raw_file(name), digital_gain=gain),
        )
        linear = [decode_gamma(x.astype(np.float64) / 255, "srgb").mean() for x in (plain, bright)]
        assert linear[1] / linear[0] == pytest.approx(gain, rel=0.02)
        ours = process(capture.mosaic, capture.camera.replace(digital_gain=gain))
        assert 0.93 < bright.mean() / ours.mean() < 1.08
    with pytest.raises(ValueError, match="digital_gain"):
        render_libraw(raw_file(S40), digital_gain=0)
