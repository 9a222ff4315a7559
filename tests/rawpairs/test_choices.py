"""rawpairs.choices: one str enum per choice, used by the build configuration, the ISP functions
and the sample metadata, with the same strings as before in every file a build writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rawpairs.camera import Camera
from rawpairs.choices import (
    Choice,
    CropMode,
    Demosaic,
    Engine,
    Exposure,
    Gamma,
    NoisePlacement,
    Render,
    RGBFormat,
    Tone,
)
from rawpairs.config import BuildConfig
from rawpairs.demosaic import demosaic
from rawpairs.isp import process
from rawpairs.metadata import RenderInfo, RenderMethod
from rawpairs.schema import rgb_member
from rawpairs.tone import decode_gamma, encode_gamma, inverse_tone, linear_lut, tone
from rawpairs.unprocess import unprocess

ENUMS = (CropMode, Demosaic, Engine, Exposure, Gamma, NoisePlacement, Render, RGBFormat, Tone)
# The strings every configuration, sample and build.json has always used: pinned, since a
# changed value would change the bytes of every shard.
VALUES = {
    CropMode: ("random", "tile"),
    Demosaic: ("malvar", "bilinear"),
    Engine: ("local", "ray"),
    Exposure: ("auto", "none"),
    Gamma: ("srgb", "2.2", "linear"),
    NoisePlacement: ("in_raw", "at_load"),
    Render: ("rawpairs", "libraw"),
    RGBFormat: ("png", "jpeg"),
    Tone: ("display_smoothstep", "smoothstep", "none"),
}


@pytest.mark.parametrize("kind", ENUMS)
def test_members_are_their_strings(kind: type[Choice]) -> None:
    assert kind.values() == VALUES[kind]
    for member in kind:
        value = member.value
        assert isinstance(member, str) and member == value and hash(member) == hash(value)
        assert str(member) == f"{member}" == f"{member:s}" == value
        assert json.dumps({"k": member, member: 1}) == json.dumps({"k": value, value: 1})
        assert kind.parse(value) is kind.parse(member) is member


@pytest.mark.parametrize("kind", ENUMS)
def test_an_unknown_value_is_one_line_listing_the_choices(kind: type[Choice]) -> None:
    with pytest.raises(ValueError, match=r"^unknown .* 'nope': expected one of \(") as err:
        kind.parse("nope")
    assert str(kind.values()) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^--opt must be one of \(.*\), got None$"):
        kind.parse(None, "--opt")
    with pytest.raises(ValueError, match="expected one of"):
        kind.parse(["unhashable"])


def test_noise_has_one_name_and_parses_the_old_command_line_spelling() -> None:
    assert NoisePlacement.parse("shard") is NoisePlacement.IN_RAW
    assert NoisePlacement.parse("load") is NoisePlacement.AT_LOAD
    assert BuildConfig(noise="load").noise is NoisePlacement.AT_LOAD
    assert BuildConfig(noise="load").to_dict()["noise"] == "at_load"
    assert [m.value for m in RenderMethod][:2] == list(Render.values())  # one spelling


def test_build_config_holds_enums_and_writes_the_same_strings() -> None:
    config = BuildConfig(
        crop=64,
        crop_mode="tile",
        render="libraw",
        demosaic="bilinear",
        tone="none",
        gamma="2.2",
        exposure="none",
        rgb_format="jpeg",
        noise="at_load",
    )
    assert config.crop_mode is CropMode.TILE and config.render is Render.LIBRAW
    assert config.demosaic is Demosaic.BILINEAR and config.tone is Tone.NONE
    assert config.gamma is Gamma.POWER_2_2 and config.exposure is Exposure.NONE
    assert config.rgb_format is RGBFormat.JPEG and config.noise is NoisePlacement.AT_LOAD
    d = config.to_dict()
    expected = {
        "crop_mode": "tile",
        "render": "libraw",
        "demosaic": "bilinear",
        "tone": "none",
        "gamma": "2.2",
        "exposure": "none",
        "rgb_format": "jpeg",
        "noise": "at_load",
    }
    assert {k: d[k] for k in expected} == expected
    assert all(type(d[k]) is str for k in expected)  # plain strings in build.json
    assert BuildConfig.from_dict(json.loads(json.dumps(d))) == config
    defaults = BuildConfig().to_dict()
    assert (defaults["tone"], defaults["noise"], defaults["gamma"]) == (
        "display_smoothstep",
        "in_raw",
        "srgb",
    )


@pytest.mark.parametrize(
    ("field", "option"),
    [
        ("crop_mode", "--crop-mode"),
        ("render", "--render"),
        ("demosaic", "--demosaic"),
        ("tone", "--tone"),
        ("gamma", "--gamma"),
        ("exposure", "--exposure"),
        ("rgb_format", "--rgb-format"),
        ("noise", "--noise"),
    ],
)
def test_build_config_names_the_option_of_a_bad_choice(field: str, option: str) -> None:
    with pytest.raises(ValueError, match=f"^{option} must be one of"):
        BuildConfig(**{field: "nope"})


def _camera() -> Camera:
    return Camera(
        cfa="GRBG",
        black_level=(64, 64, 64, 64),
        white_level=4095,
        bit_depth=12,
        wb_gains=(2.0, 1.0, 1.5),
        xyz_to_cam=np.eye(3),
    )


def test_isp_functions_take_the_member_or_its_string() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    x = rng.random((8, 12, 3)).astype(np.float32)
    camera = _camera()
    raw = unprocess(rgb, camera, noise=False)
    for member in (*Tone, *Gamma, *Demosaic):
        value = member.value
        if isinstance(member, Tone):
            np.testing.assert_array_equal(tone(x, member), tone(x, value))
            np.testing.assert_array_equal(inverse_tone(x, member), inverse_tone(x, value))
            np.testing.assert_array_equal(
                unprocess(rgb, camera, tone=member, noise=False),
                unprocess(rgb, camera, tone=value, noise=False),
            )
            np.testing.assert_array_equal(
                process(raw, camera, tone=member), process(raw, camera, tone=value)
            )
        elif isinstance(member, Gamma):
            np.testing.assert_array_equal(encode_gamma(x, member), encode_gamma(x, value))
            np.testing.assert_array_equal(decode_gamma(x, member), decode_gamma(x, value))
            np.testing.assert_array_equal(linear_lut(member), linear_lut(value))
            np.testing.assert_array_equal(
                process(raw, camera, gamma=member), process(raw, camera, gamma=value)
            )
        else:
            mosaic = raw.astype(np.float32) / 4095
            np.testing.assert_array_equal(
                demosaic(mosaic, "GRBG", member), demosaic(mosaic, "GRBG", value)
            )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: tone(np.zeros(3), "filmic"), "unknown tone curve 'filmic'"),
        (lambda: encode_gamma(np.zeros(3), "rec709"), "unknown gamma 'rec709'"),
        (lambda: linear_lut("srgb", "filmic"), "unknown tone curve"),
        (lambda: demosaic(np.zeros((4, 4)), "RGGB", "vng"), "unknown demosaic method 'vng'"),
        (lambda: process(np.zeros((4, 4), np.uint16), _camera(), gamma="x"), "unknown gamma"),
        (lambda: unprocess(np.zeros((2, 2, 3), np.uint8), _camera(), tone="x"), "unknown tone"),
        (lambda: rgb_member("webp"), "unknown RGB format 'webp'"),
    ],
)
def test_isp_functions_list_the_choices_of_a_bad_one(call, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "expected one of (" in str(err.value)


def test_render_info_holds_enums_and_decodes_strictly() -> None:
    info = RenderInfo(RenderMethod.RAWPAIRS, "in_raw", demosaic="malvar", tone="none", gamma="2.2")
    assert info.noise is NoisePlacement.IN_RAW and info.demosaic is Demosaic.MALVAR
    assert info.tone is Tone.NONE and info.gamma is Gamma.POWER_2_2
    d = info.to_dict()
    assert d == {
        "method": "rawpairs",
        "noise": "in_raw",
        "demosaic": "malvar",
        "tone": "none",
        "gamma": "2.2",
    }
    assert all(type(v) is str for v in d.values())
    assert RenderInfo.from_dict(d) == info
    for field, bad in (("noise", "load"), ("noise", "shard"), ("tone", "filmic"), ("gamma", 2.2)):
        with pytest.raises(ValueError, match=f"render.{field} must be one of"):
            RenderInfo.from_dict({**d, field: bad})  # a sample holds only the written spelling
