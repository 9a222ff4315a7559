"""`rawpairs build`'s options are BuildConfig's fields (rawpairs.options): one declaration each."""

from __future__ import annotations

import dataclasses

import click
import pytest

from rawpairs.choices import Gamma, Tone
from rawpairs.cli import build
from rawpairs.config import BuildConfig
from rawpairs.options import choice_fields, from_flags
from rawpairs.priors import CapturePriors

FLAGGED = [f for f in dataclasses.fields(BuildConfig) if f.metadata["flag"]]


def _parse(*args: str) -> dict:
    return build.make_context("build", ["--src", "s", "--out", "o", *args]).params


def test_every_flagged_field_is_an_option_with_the_fields_default():
    params = {p.name: p for p in build.params}
    parsed = _parse()
    for f in FLAGGED:
        assert params[f.name].opts == ["--" + f.name.replace("_", "-")]
        if f.name == "labels":  # --labels folder, absent by default
            assert parsed[f.name] is None
        else:
            assert parsed[f.name] == f.default
    assert {"jpeg_quality", "png_compression", "priors"}.isdisjoint(params)


def test_the_defaults_parse_to_the_default_config():
    assert from_flags(BuildConfig, _parse(), priors=CapturePriors()) == BuildConfig()


def test_flags_reach_their_fields():
    config = from_flags(
        BuildConfig,
        _parse("--labels", "folder", "--tone", "smoothstep", "--crop", "64", "--upscale"),
        priors=CapturePriors(),
    )
    assert config.labels is True and config.tone is Tone.SMOOTHSTEP
    assert config.crop == 64 and config.upscale is True


def test_choices_and_ranges_come_from_the_field_metadata():
    params = {p.name: p for p in build.params}
    assert Gamma.LINEAR.value not in params["gamma"].type.choices  # the field's own choices
    assert tuple(params["tone"].type.choices) == Tone.values()
    with pytest.raises(click.BadParameter):
        _parse("--min-side", "0")
    assert set(choice_fields(BuildConfig)) == {
        f.name for f in FLAGGED if isinstance(params[f.name].type, click.Choice)
    } - {"labels"}
