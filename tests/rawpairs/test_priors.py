"""rawpairs.priors: determinism under a seed, the documented ranges, JSON overrides, errors."""

from __future__ import annotations

import csv
import json
from importlib import resources

import numpy as np
import pytest

from rawpairs.camera import Camera
from rawpairs.cfa import CFA
from rawpairs.priors import (
    BROOKS_CAMERAS,
    DEFAULT_PRIORS,
    CapturePriors,
    sample_camera,
    sample_noise_levels,
)


def draw(n: int, priors: CapturePriors = DEFAULT_PRIORS, seed: int = 0) -> list[Camera]:
    rng = np.random.default_rng(seed)
    return [sample_camera(rng, priors) for _ in range(n)]


def test_same_seed_same_camera_different_seed_different() -> None:
    a = sample_camera(np.random.default_rng(7))
    b = sample_camera(np.random.default_rng(7))
    c = sample_camera(np.random.default_rng(8))
    assert a.to_json() == b.to_json()
    assert a.provenance == b.provenance
    assert a != c
    assert a.wb_gains != c.wb_gains and a.xyz_to_cam != c.xyz_to_cam


def test_defaults_respect_brooks_ranges() -> None:
    cams = draw(400)
    red = np.array([c.wb_gains[0] for c in cams])
    blue = np.array([c.wb_gains[2] for c in cams])
    inverse = 1.0 / np.array([c.digital_gain for c in cams])
    shot = np.array([c.noise_shot for c in cams])
    read = np.array([c.noise_read for c in cams])
    assert all(c.wb_gains[1] == 1.0 for c in cams)
    assert red.min() >= 1.9 and red.max() <= 2.4
    assert blue.min() >= 1.5 and blue.max() <= 1.9
    assert inverse.min() >= 0.5 and inverse.max() <= 1.1  # N(0.8, 0.1) truncated at ±3 std
    assert abs(inverse.mean() - 0.8) < 0.02 and abs(inverse.std() - 0.1) < 0.015
    assert shot.min() >= 1e-4 and shot.max() <= 0.012
    log_shot = np.log(shot)  # log-uniform: log shot uniform on [log 1e-4, log 0.012]
    assert abs(log_shot.mean() - np.log(np.sqrt(1e-4 * 0.012))) < 0.25
    deviation = np.log(read) - (2.18 * log_shot + 1.20)
    assert abs(deviation.mean()) < 0.05 and abs(deviation.std() - 0.26) < 0.03
    assert {c.cfa for c in cams} == set(CFA)
    for c in cams:
        assert c.bit_depth == 12 and c.white_level == 4095.0
        assert c.black_level == (256.0,) * 4
        assert c.provenance == {
            "cfa": "sampled",
            "black_level": "default",
            "white_level": "default",
            "wb_gains": "sampled",
            "xyz_to_cam": "sampled",
            "noise": "sampled",
        }


def test_brooks_matrices_are_convex_mixes() -> None:
    pool = np.array(list(BROOKS_CAMERAS.values()))
    for c in draw(50):
        m = np.array(c.xyz_to_cam)
        assert np.all(m >= pool.min(axis=0) - 1e-12) and np.all(m <= pool.max(axis=0) + 1e-12)
    assert len({c.xyz_to_cam for c in draw(50)}) == 50


@pytest.mark.parametrize("pool", ["adobe", "both"])
def test_single_camera_draws_come_from_the_pool(pool: str) -> None:
    table = _table()
    if pool == "both":
        table |= {tuple(np.round(np.ravel(m), 4)) for m in BROOKS_CAMERAS.values()}
    for c in draw(40, CapturePriors(matrix_pool=pool, matrix_mix=1)):
        assert tuple(np.round(np.ravel(c.xyz_to_cam), 4)) in table


def _table() -> set[tuple[float, ...]]:
    text = resources.files("rawpairs").joinpath("data/camera_matrices.csv").read_text()
    return {
        tuple(np.round([int(r[f"c{i}"]) / 10000 for i in range(9)], 4))
        for r in csv.DictReader(text.splitlines())
    }


def test_shipped_matrix_table_is_valid() -> None:
    text = resources.files("rawpairs").joinpath("data/camera_matrices.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 573
    assert len({tuple(r[f"c{i}"] for i in range(9)) for r in rows}) == len(rows)  # deduplicated
    for r in rows:
        Camera(
            cfa="RGGB",
            black_level=(0,) * 4,
            white_level=1,
            bit_depth=1,
            wb_gains=(1, 1, 1),
            xyz_to_cam=[int(r[f"c{i}"]) / 10000 for i in range(9)],
        )
    table = _table()  # three of Brooks' four cameras are LibRaw's, to the digit
    for name in ("Sony ILCE-7R", "Olympus E-M10", "Sony DSC-RX100M4"):
        assert tuple(np.round(np.ravel(BROOKS_CAMERAS[name]), 4)) in table


def test_adobe_pool_mixes_are_valid_and_varied() -> None:
    cams = draw(100, CapturePriors(matrix_pool="adobe"))
    assert len({c.xyz_to_cam for c in cams}) == 100


def test_fixed_values_are_used_and_marked_user() -> None:
    matrix = np.array(BROOKS_CAMERAS["Olympus E-M10"])
    priors = CapturePriors(
        xyz_to_cam=matrix,
        red_gain=2.0,
        blue_gain=(1.7, 1.7),
        digital_gain_inverse=(1.0, 0.0),
        shot_noise=1e-3,
        read_noise=2e-6,
        cfa="GRBG",
        bit_depth=14,
        black_level=(512, 510, 514, 508),
        white_level=16000,
    )
    for c in draw(5, priors):
        assert c.cfa is CFA.GRBG
        assert c.wb_gains == (2.0, 1.0, 1.7)
        assert c.digital_gain == 1.0
        assert c.noise_shot == pytest.approx(1e-3) and c.noise_read == pytest.approx(2e-6)
        np.testing.assert_array_equal(c.xyz_to_cam, matrix)
        assert (c.bit_depth, c.white_level, c.black_level) == (14, 16000.0, (512, 510, 514, 508))
        assert set(c.provenance.values()) == {"user"}


def test_default_levels_scale_with_bit_depth() -> None:
    for bits, black in ((10, 64.0), (12, 256.0), (14, 1024.0), (16, 4096.0)):
        c = sample_camera(np.random.default_rng(0), CapturePriors(bit_depth=bits))
        assert c.black_level == (black,) * 4 and c.white_level == 2**bits - 1


def test_json_narrows_only_the_given_fields() -> None:
    priors = CapturePriors.from_json(
        '{"red_gain": [2.0, 2.1], "shot_noise": [1e-3, 2e-3], "cfa": ["RGGB", "BGGR"]}'
    )
    assert priors.blue_gain == DEFAULT_PRIORS.blue_gain
    cams = draw(100, priors)
    assert all(2.0 <= c.wb_gains[0] <= 2.1 for c in cams)
    assert all(1e-3 <= c.noise_shot <= 2e-3 for c in cams)
    assert {c.cfa for c in cams} == {CFA.RGGB, CFA.BGGR}
    assert cams[0].provenance["cfa"] == "sampled" and cams[0].provenance["wb_gains"] == "sampled"


def test_json_single_numbers_fix_values() -> None:
    priors = CapturePriors.from_json('{"digital_gain_inverse": 1.0, "red_gain": 2, "cfa": "bggr"}')
    assert priors.digital_gain_inverse == (1.0, 0.0)
    assert priors.red_gain == (2.0, 2.0)
    assert priors.cfa == ("BGGR",)
    assert sample_camera(np.random.default_rng(1), priors).digital_gain == 1.0


def test_dict_and_json_round_trips_are_exact() -> None:
    priors = CapturePriors(
        matrix_pool="both",
        xyz_to_cam=BROOKS_CAMERAS["Sony ILCE-7R"],
        shot_noise=(0.0, 0.0),
        read_noise=(1e-7, 1e-6),
        black_level=64,
    )
    for p in (DEFAULT_PRIORS, priors):
        assert CapturePriors.from_dict(p.to_dict()) == p
        assert CapturePriors.from_json(p.to_json()) == p
        assert json.loads(p.to_json()) == p.to_dict()
    assert CapturePriors.from_dict({}) == DEFAULT_PRIORS


def test_noise_free_and_read_override() -> None:
    noise_free = CapturePriors(shot_noise=0)
    assert sample_noise_levels(np.random.default_rng(0), noise_free) == (0.0, 0.0)
    assert sample_camera(np.random.default_rng(0), noise_free).provenance["noise"] == "user"
    priors = CapturePriors(shot_noise=0, read_noise=(1e-6, 1e-5))
    shot, read = sample_noise_levels(np.random.default_rng(0), priors)
    assert shot == 0.0 and 1e-6 <= read <= 1e-5
    fixed_line = CapturePriors(shot_noise=1e-3, read_noise_line=(2.0, 1.0, 0.0))
    shot, read = sample_noise_levels(np.random.default_rng(0), fixed_line)
    assert read == pytest.approx(np.exp(2.0 * np.log(1e-3) + 1.0))
    assert sample_camera(np.random.default_rng(0), fixed_line).provenance["noise"] == "user"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"matrix_pool": "nikon"}, "matrix_pool"),
        ({"matrix_mix": 0}, "matrix_mix"),
        ({"matrix_mix": 1.5}, "matrix_mix"),
        ({"xyz_to_cam": [1, 2, 3]}, "xyz_to_cam must be 9"),
        ({"xyz_to_cam": np.ones((3, 3))}, "not invertible"),
        ({"red_gain": [2.4, 1.9]}, "red_gain range is empty"),
        ({"blue_gain": [0.0, 1.0]}, "blue_gain must be > 0"),
        ({"red_gain": [1, 2, 3]}, "red_gain must be a number or"),
        ({"red_gain": [1, np.nan]}, "red_gain must be a number or"),
        ({"digital_gain_inverse": (0.2, 0.1)}, "digital_gain_inverse"),
        ({"digital_gain_inverse": (0.8, -0.1)}, "digital_gain_inverse"),
        ({"shot_noise": (0.0, 1e-3)}, "shot_noise is log-uniform"),
        ({"shot_noise": (-1e-3, 1e-3)}, "shot_noise must be >= 0"),
        ({"read_noise": (0.0, 1e-3)}, "read_noise must be > 0"),
        ({"read_noise_line": (2.18, 1.2, -0.1)}, "read_noise_line std"),
        ({"cfa": []}, "at least one"),
        ({"cfa": ["RGGB", "XTRANS"]}, "unknown CFA pattern"),
        ({"bit_depth": 12.5}, "bit_depth must be an integer"),
        ({"bit_depth": 17}, "bit_depth"),
        ({"black_level": 4095}, "black_level"),
        ({"black_level": [1, 2]}, "black_level must be 4"),
        ({"white_level": 5000}, "outside"),
    ],
)
def test_invalid_priors_raise(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CapturePriors(**fields)


def test_from_dict_and_json_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown capture prior fields: \['iso'\]"):
        CapturePriors.from_dict({"iso": 100})
    with pytest.raises(ValueError, match="must be an object"):
        CapturePriors.from_json("[1, 2]")
    with pytest.raises(ValueError, match=r"numpy\.random\.Generator"):
        sample_camera(np.random.RandomState(0))  # type: ignore[arg-type]


# Camera profiles (rawpairs calibrate) --------------------------------------------------------

CAPTURES = (
    {
        "red_gain": 2.0,
        "blue_gain": 1.5,
        "digital_gain": 1.2,
        "noise_shot": 1e-3,
        "noise_read": 1e-5,
    },
    {
        "red_gain": 1.6,
        "blue_gain": 2.1,
        "digital_gain": 2.5,
        "noise_shot": 4e-3,
        "noise_read": 2e-5,
    },
)


def test_priors_without_profile_fields_serialise_as_before() -> None:
    assert {"captures", "profile", "calibration"}.isdisjoint(DEFAULT_PRIORS.to_dict())
    profile = CapturePriors(captures=CAPTURES, profile="cam.json", calibration={"files": []})
    assert CapturePriors.from_json(profile.to_json()) == profile
    assert json.loads(profile.to_json())["captures"][1]["digital_gain"] == 2.5


def test_profile_cameras_take_one_real_capture_each() -> None:
    profile = CapturePriors(
        cfa="GRBG",
        bit_depth=10,
        black_level=32,
        white_level=1023,
        xyz_to_cam=BROOKS_CAMERAS["Olympus E-M10"],
        captures=CAPTURES,
        profile="my_camera.json",
    )
    cams = draw(200, profile)
    taken = [
        (c.wb_gains[0], c.wb_gains[2], c.digital_gain, c.noise_shot, c.noise_read) for c in cams
    ]
    expected = [tuple(c.values()) for c in CAPTURES]
    assert set(taken) == set(expected)  # both drawn, nothing else
    assert 60 < taken.count(expected[0]) < 140  # uniformly
    for c in cams:
        assert c.cfa is CFA.GRBG and c.black_level == (32.0,) * 4 and c.white_level == 1023.0
        assert c.xyz_to_cam == BROOKS_CAMERAS["Olympus E-M10"]
        assert set(c.provenance.values()) == {"profile:my_camera.json"}
        assert set(c.provenance) == {*c.provenance} >= {"digital_gain", "noise", "wb_gains"}
    assert [c.to_json() for c in draw(5, profile, seed=3)] == [
        c.to_json() for c in draw(5, profile, seed=3)
    ]


@pytest.mark.parametrize(
    ("captures", "message"),
    [
        ([], "non-empty list"),
        ({"red_gain": 2.0}, "non-empty list"),
        ([[2.0, 1.5, 1.0]], "must be an object"),
        ([{"red_gain": 2.0, "blue_gain": 1.5}], r"lacks \['digital_gain'\]"),
        ([{**CAPTURES[0], "iso": 100}], r"unknown capture fields: \['iso'\]"),
        ([{**CAPTURES[0], "red_gain": 0.0}], "red_gain must be in"),
        ([{**CAPTURES[0], "digital_gain": 100.0}], "digital_gain must be in"),
        ([{**CAPTURES[0], "noise_read": None}], "both be set or both null"),
        ([{**CAPTURES[0], "noise_shot": 2.0}], "noise_shot must be in"),
        ([{**CAPTURES[0], "blue_gain": np.nan}], "blue_gain must be 1 finite"),
    ],
)
def test_invalid_captures_raise(captures, message) -> None:
    with pytest.raises(ValueError, match=message):
        CapturePriors(captures=captures)


def test_profile_names_are_file_names() -> None:
    from rawpairs.priors import profile_name

    assert profile_name("my camera (2).json") == "my_camera__2_.json"
    assert len(profile_name("x" * 300)) == 100
    for bad in ("a/b.json", "", "x" * 101, 3):
        with pytest.raises(ValueError, match="profile must be a file name"):
            CapturePriors(profile=bad)
    with pytest.raises(ValueError, match="calibration must be an object"):
        CapturePriors(calibration=[1])
