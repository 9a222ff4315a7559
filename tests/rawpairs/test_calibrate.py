"""rawpairs.calibrate and ``rawpairs calibrate``: noise recovered from synthetic DNGs of known
noise, the NoiseProfile tag read exactly, one camera per profile, bad input refused with one line
and nothing written, and ``build --camera PROFILE`` simulating that camera."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from rawpairs.calibrate import (
    CalibrationError,
    calibrate,
    fit_noise_line,
    measure_file,
    neighbour_noise,
    noise_profile_levels,
)
from rawpairs.camera import Camera
from rawpairs.camera_profile import identity, identity_difference
from rawpairs.cli import main
from rawpairs.noise import add_noise
from rawpairs.priors import CapturePriors, sample_camera

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "raw"
# XYZ → camera of the Canon PowerShot G2 (LibRaw's table).
G2_XYZ_TO_CAM = ((0.9194, -0.2787, -0.1059), (-0.8098, 1.5657, 0.2608), (-0.2610, 0.3064, 0.7867))


def sensor(**changes) -> Camera:
    fields = {
        "cfa": "RGGB",
        "black_level": (256.0,) * 4,
        "white_level": 4095.0,
        "bit_depth": 12,
        "wb_gains": (2.0, 1.0, 1.6),
        "xyz_to_cam": G2_XYZ_TO_CAM,
    }
    return Camera(**{**fields, **changes})


def noisy_counts(camera: Camera, shot: float, read: float, seed: int, shape=(512, 768)):
    """A smooth scene (levels 0.03–0.83 of the range) with N(0, shot·x + read) noise, as counts."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]] / np.array(shape)[:, None, None]
    scene = (0.03 + 0.8 * x * (0.6 + 0.4 * np.cos(2 * y))).astype(np.float32)
    noisy = add_noise(scene, shot, read, np.random.default_rng(seed))
    black, span = camera.black_level[0], camera.white_level - camera.black_level[0]
    return np.clip(np.round(black + noisy * span), 0, camera.white_level).astype(np.uint16)


def write_test_dng(path, mosaic, camera, *, model="Test Cam", noise_profile=None) -> None:
    """A minimal DNG (the tags of rawpairs.dng.write_dng) with an optional NoiseProfile tag."""
    cm = np.asarray(camera.xyz_to_cam).ravel()
    neutral = 1.0 / np.asarray(camera.wb_gains)
    tags = [
        (271, "s", 0, "Testmaker", True),
        (272, "s", 0, model, True),
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, camera.cfa.channels, True),
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50713, "H", 2, (2, 2), True),
        (50714, "I", 4, tuple(int(b) for b in camera.black_level), True),
        (50717, "I", 1, int(camera.white_level), True),
        (50721, "2i", 9, tuple(v for c in cm for v in (round(c * 10000), 10000)), True),
        (50778, "H", 1, 21, True),
        (50728, "2I", 3, tuple(v for n in neutral for v in (round(n * 10000), 10000)), True),
    ]
    if noise_profile is not None:
        tags.append((51041, "d", len(noise_profile), tuple(noise_profile), True))
    tifffile.imwrite(path, mosaic, photometric=32803, extratags=tags)


# Pure estimation ---------------------------------------------------------------------------


def test_fit_noise_line_recovers_a_line_and_clamps_negative_terms() -> None:
    levels = np.linspace(0.05, 0.9, 10)
    assert fit_noise_line(levels, 2e-3 * levels + 1e-5, np.ones(10)) == pytest.approx(
        (2e-3, 1e-5), rel=1e-9
    )
    shot, read = fit_noise_line(levels, 2e-3 * levels - 1e-4, np.ones(10))
    assert read == 0.0 and shot > 0
    shot, read = fit_noise_line(levels, 1e-3 - 1e-4 * levels, np.ones(10))
    assert shot == 0.0 and read == pytest.approx(np.mean(1e-3 - 1e-4 * levels))
    with pytest.raises(ValueError, match="no noise points"):
        fit_noise_line(np.array([]), np.array([]), np.array([]))


@pytest.mark.parametrize(("shot", "read"), [(1e-3, 1e-5), (2e-4, 2e-6), (5e-3, 1e-4)])
@pytest.mark.parametrize("seed", [0, 1])
def test_neighbour_differences_recover_known_noise(shot, read, seed) -> None:
    camera = sensor()
    estimate = neighbour_noise(noisy_counts(camera, shot, read, seed), camera)
    assert estimate is not None
    assert estimate.shot == pytest.approx(shot, rel=0.05)
    assert estimate.read == pytest.approx(read, rel=0.2)
    assert len(estimate.levels) == len(estimate.variances) == len(estimate.blocks) >= 8
    assert all(0.02 < level < 0.9 for level in estimate.levels)


def test_neighbour_noise_is_none_for_a_clipped_image() -> None:
    camera = sensor()
    assert neighbour_noise(np.full((256, 256), 4095, np.uint16), camera) is None


def test_noise_profile_tag_values() -> None:
    assert noise_profile_levels([1e-3, 1e-5]) == (1e-3, 1e-5)
    assert noise_profile_levels([1e-3, 1e-5, 3e-3, 3e-5, 2e-3, 2e-5]) == pytest.approx((2e-3, 2e-5))
    for bad in ([1e-3], [1e-3, 1e-5, 1.0], [np.nan, 1e-5], [-1e-3, 1e-5], [2.0, 0.0]):
        assert noise_profile_levels(bad) is None


def test_identity_is_make_and_model_else_the_sensor_format() -> None:
    a = identity(sensor(), "Canon", "G2", (100, 200))
    ten_bit = sensor(white_level=1023.0, bit_depth=10)  # same model, another mode: one camera
    assert identity_difference(a, identity(ten_bit, "Canon", "G2", (100, 200))) is None
    s40 = identity(sensor(), "Canon", "S40", (100, 200))
    assert "Canon G2 vs Canon S40" in identity_difference(a, s40)
    blank = identity(sensor(), "", "", (100, 200))
    assert identity_difference(blank, identity(sensor(), "", "", (100, 200))) is None
    for changes, phrase in (
        ({"cfa": "GRBG"}, "CFA"),
        ({"black_level": (0.0,) * 4}, "black level"),
        ({"white_level": 4000.0}, "white level"),
        ({"xyz_to_cam": np.eye(3)}, "colour matrix"),
    ):
        other = identity(sensor(**changes), "", "", (100, 200))
        assert phrase in identity_difference(blank, other)
    assert "sensor size" in identity_difference(blank, identity(sensor(), "", "", (100, 202)))
    assert "(none)" in identity_difference(a, blank)


# Files -------------------------------------------------------------------------------------


def test_tag_is_read_exactly_and_the_estimate_agrees_with_it(tmp_path) -> None:
    camera = sensor()
    shot, read = 1e-3, 1e-5
    path = tmp_path / "tagged.dng"
    write_test_dng(path, noisy_counts(camera, shot, read, 3), camera, noise_profile=[shot, read])
    m = measure_file(path)
    assert m.tagged_noise == (shot, read)
    assert m.estimated_noise.shot == pytest.approx(shot, rel=0.05)
    assert m.estimated_noise.read == pytest.approx(read, rel=0.2)
    profile, _ = calibrate(path, tmp_path / "cam.json")
    (capture,) = profile.captures
    assert (capture.noise_shot, capture.noise_read) == (shot, read)  # the tag wins
    report = profile.calibration["noise"]
    assert report["sources"] == {"file:NoiseProfile": 1}
    (agreement,) = report["estimate_vs_tag"]
    assert agreement["shot_ratio"] == pytest.approx(1.0, abs=0.05)
    assert agreement["read_ratio"] == pytest.approx(1.0, abs=0.2)


def test_profile_of_a_folder_of_one_camera(tmp_path) -> None:
    camera = sensor()
    src = tmp_path / "src"
    src.mkdir()
    gains = [(2.0, 1.6), (1.5, 2.2)]
    for i, (red, blue) in enumerate(gains):
        shot = 1e-3 * (i + 1)
        wb_camera = camera.replace(wb_gains=(red, 1.0, blue))
        write_test_dng(src / f"f{i}.dng", noisy_counts(camera, shot, 1e-5, i), wb_camera)
    (src / "notes.txt").write_text("not a RAW file")
    out = tmp_path / "my_camera.json"
    profile, warnings = calibrate(src, out)
    assert warnings == []
    assert profile.cfa == ("RGGB",) and profile.bit_depth == 12
    assert profile.black_level == (256.0,) * 4 and profile.white_level == 4095.0
    assert profile.xyz_to_cam == camera.xyz_to_cam
    assert profile.profile == "my_camera.json"
    drawn = [g for c in profile.captures for g in (c.red_gain, c.blue_gain)]
    assert drawn == pytest.approx([g for pair in gains for g in pair], rel=1e-3)  # 1e-4 rationals
    for i, c in enumerate(profile.captures):
        assert c.noise_shot == pytest.approx(1e-3 * (i + 1), rel=0.05)
        assert c.digital_gain >= 1.0
    cal = profile.calibration
    assert cal["camera"] == {"make": "Testmaker", "model": "Test Cam", "size": [512, 768]}
    assert cal["xyz_to_cam"] == "file:ColorMatrix1"
    assert cal["noise"]["sources"] == {"neighbour_differences": 2}
    assert [f["file"] for f in cal["files"]] == ["f0.dng", "f1.dng"]
    # The file is the form --camera takes, and reads back as the same priors.
    assert CapturePriors.from_json(out.read_text()) == profile
    assert not list(tmp_path.glob(".*tmp"))


def test_one_file_is_enough_with_a_warning(tmp_path) -> None:
    camera = sensor()
    path = tmp_path / "only.dng"
    write_test_dng(path, noisy_counts(camera, 1e-3, 1e-5, 0), camera)
    profile, warnings = calibrate(path, tmp_path / "one.json")
    assert len(profile.captures) == 1
    assert len(warnings) == 1 and "single points" in warnings[0]
    assert profile.calibration["warnings"] == warnings


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_refused(result, *phrases: str) -> None:
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1
    for phrase in phrases:
        assert phrase in error[0]


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path) -> None:
    camera = sensor()
    out = tmp_path / "cam.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_refused(run_cli("calibrate", "--src", str(empty), "--out", str(out)), "no RAW files")
    assert_refused(run_cli("calibrate", "--src", str(tmp_path / "nope"), "--out", str(out)))
    # Two cameras: the message names both files and how they differ.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_test_dng(mixed / "a.dng", noisy_counts(camera, 1e-3, 1e-5, 0), camera, model="One")
    write_test_dng(mixed / "b.dng", noisy_counts(camera, 1e-3, 1e-5, 1), camera, model="Two")
    result = run_cli("calibrate", "--src", str(mixed), "--out", str(out))
    assert_refused(result, "mixes cameras", "a.dng", "b.dng", "One vs Testmaker Two")
    # A non-Bayer file (a linear, demosaiced DNG) and a damaged one.
    other = tmp_path / "linear"
    other.mkdir()
    rgb = np.full((64, 64, 3), 1000, np.uint16)
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50717, "I", 1, 4095, True)]
    tifffile.imwrite(other / "linear.dng", rgb, photometric=34892, extratags=tags)
    result = run_cli("calibrate", "--src", str(other), "--out", str(out))
    assert_refused(result, "linear.dng")
    (other / "linear.dng").unlink()
    (other / "broken.dng").write_bytes(b"II*\x00" + b"\x00" * 100)
    assert_refused(run_cli("calibrate", "--src", str(other), "--out", str(out)), "broken.dng")
    result = run_cli("calibrate", "--src", str(mixed / "a.dng"), "--out", str(tmp_path / "x/y"))
    assert_refused(result, "does not exist")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "linear", "mixed"]


def test_failed_calibration_keeps_the_previous_profile(tmp_path) -> None:
    out = tmp_path / "cam.json"
    out.write_text('{"cfa": "RGGB"}')
    with pytest.raises(CalibrationError, match="no RAW files"):
        calibrate(tmp_path, out)
    assert out.read_text() == '{"cfa": "RGGB"}'


# build --camera PROFILE --------------------------------------------------------------------


def test_build_with_a_profile_simulates_that_camera(tmp_path) -> None:
    import cv2

    from rawpairs.tarwalk import read_shard

    camera = sensor(cfa="GBRG", black_level=(64.0,) * 4, white_level=1023.0, bit_depth=10)
    src = tmp_path / "raw"
    src.mkdir()
    for i, wb in enumerate([(2.0, 1.0, 1.6), (1.5, 1.0, 2.2)]):
        counts = noisy_counts(camera, 1e-3, 1e-5, i)
        write_test_dng(src / f"f{i}.dng", counts, camera.replace(wb_gains=wb))
    profile_path = tmp_path / "my cam.json"
    result = run_cli("calibrate", "--src", str(src), "--out", str(profile_path))
    assert result.exit_code == 0, result.output
    profile = CapturePriors.from_json(profile_path.read_text())
    # The file's name, not the name it was written under, is the provenance.
    renamed = tmp_path / "renamed.json"
    shutil.copy(profile_path, renamed)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(photos / f"p{i}.png"), rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    out = tmp_path / "out"
    args = ["build", "--src", str(photos), "--out", str(out), "--workers", "1", "--quiet"]
    result = run_cli(*args, "--camera", str(renamed))
    assert result.exit_code == 0, result.output
    captures = {(c.red_gain, c.blue_gain, c.digital_gain) for c in profile.captures}
    noise = {(c.noise_shot, c.noise_read) for c in profile.captures}
    seen = 0
    for shard in sorted(out.glob("rawpairs-*.tar")):
        for sample in read_shard(shard):
            cam = json.loads(sample.members["json"])["camera"]
            assert cam["cfa"] == "GBRG" and cam["bit_depth"] == 10
            assert cam["black_level"] == [64.0] * 4 and cam["white_level"] == 1023.0
            assert cam["xyz_to_cam"] == [list(r) for r in profile.xyz_to_cam]
            assert (cam["wb_gains"][0], cam["wb_gains"][2], cam["digital_gain"]) in captures
            assert (cam["noise_shot"], cam["noise_read"]) in noise
            assert set(cam["provenance"].values()) == {"profile:renamed.json"}
            seen += 1
    assert seen == 4
    build_json = json.loads((out / "build.json").read_text())
    assert build_json["config"]["priors"]["profile"] == "renamed.json"


def test_profile_draws_record_the_profile_and_hand_written_files_keep_user() -> None:
    captures = [{"red_gain": 2.0, "blue_gain": 1.5, "digital_gain": 1.2}]
    hand = CapturePriors.from_dict({"cfa": "RGGB", "captures": captures})
    cam = sample_camera(np.random.default_rng(0), hand)
    assert cam.provenance["wb_gains"] == cam.provenance["digital_gain"] == "user"
    assert cam.provenance["noise"] == "sampled"  # no noise in the capture: the priors' draw
    assert (cam.wb_gains, cam.digital_gain) == ((2.0, 1.0, 1.5), 1.2)


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="tests/data/raw is absent")
def test_calibrate_a_real_camera_and_build_from_it(tmp_path) -> None:
    """The shipped Canon S40 file: LibRaw's matrix and as-shot white balance, the noise estimated
    (no tag in a CRW), and a build that carries them."""
    src = tmp_path / "s40"
    src.mkdir()
    (src / "CRW_0104.CRW").symlink_to(SHIPPED / "Canon-PowerShot_S40-CRW_0104.CRW")
    profile, warnings = calibrate(src, tmp_path / "s40.json")
    assert "single points" in warnings[0]
    from rawpairs.raw_files import read_raw

    real = read_raw(src / "CRW_0104.CRW").camera
    assert profile.xyz_to_cam == real.xyz_to_cam and profile.cfa == (real.cfa.value,)
    assert profile.calibration["xyz_to_cam"] == "file:rgb_xyz_matrix"
    (capture,) = profile.captures
    assert (capture.red_gain, 1.0, capture.blue_gain) == real.wb_gains
    assert 1e-5 < capture.noise_shot < 1e-2  # a 10-bit ISO 50 sensor
    assert profile.calibration["files"][0]["iso"] == 50.0
