"""distill.config: a flag per field, the command line round-trips, bad settings fail in a line."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import pytest

from distill.config import (
    BUILTIN_TEACHERS,
    DEFAULT_TEACHER,
    DEFAULT_TEACHERS,
    NORMALIZATIONS,
    STUDENT_INPUTS,
    TASKS,
    LoaderConfig,
    TrainConfig,
    build_parser,
    config_from_args,
    data_order_fields,
)
from distill.extras import missing_extra


def to_argv(config: TrainConfig) -> list[str]:
    """The command line that describes ``config`` (every field spelled out)."""
    argv: list[str] = []
    for f in fields(config):
        flag, value = "--" + f.name.replace("_", "-"), getattr(config, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{f.name.replace('_', '-')}")
        elif f.name == "feature_layers":
            argv += [flag, ",".join(value)]
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def test_every_field_has_a_flag_with_help() -> None:
    parser = build_parser()
    dests = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    assert set(dests) == {f.name for f in fields(TrainConfig)}
    for name, action in dests.items():
        assert action.help, name
        assert action.option_strings[0] == "--" + name.replace("_", "-")


def test_command_line_round_trips() -> None:
    config = TrainConfig(
        shards=["a/", "b/"],
        out="run",
        steps=7,
        batch_size=3,
        accum=2,
        crop=48,
        teacher_size=40,
        student_input="mosaic",
        teacher_norm="imagenet",
        student_init="scratch",
        freeze_bn=False,
        objective="supervised",
        mse_weight=0.5,
        feature_weight=0.25,
        feature_layers=["a=b", "c"],
        optimizer="sgd",
        lr=0.01,
        seed=3,
        amp=False,
        channels_last=True,
        compile=True,
        num_workers=0,
        hflip=False,
        low_light=(2.0, 8.0),
        checkpoint_every=0,
        resume="auto",
        stop_after=5,
        log_keys=True,
        progress=False,
    )
    assert config_from_args(to_argv(config)) == config
    assert config_from_args(["--shards", "x"]) == TrainConfig(shards="x")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, r"steps must lie in \[1, inf\], got 0"),
        ({"batch_size": -2}, r"batch_size must lie in \[1, inf\]"),
        ({"lr": math.nan}, "lr must be finite, got nan"),
        ({"lr": math.inf}, "lr must be finite, got inf"),
        ({"lr": 0.0}, r"lr must lie in \[1e-12, inf\]"),
        ({"seed": -1}, r"seed must lie in \[0, 4294967295\]"),
        ({"momentum": 1.5}, r"momentum must lie in \[0, 1\]"),
        ({"kd_weight": -1.0}, r"kd_weight must lie in \[0, inf\]"),
        ({"low_light": (0.5, 2.0)}, r"low_light must lie in \[1, inf\]"),
        ({"low_light": (4.0, 2.0)}, "MIN <= MAX"),
        ({"low_light": (2.0, math.nan)}, "low_light must be finite"),
        ({"crop": 33}, "crop must be even"),
        ({"objective": "kd"}, "objective must be one of"),
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"teacher_norm": "x"}, "teacher_norm must be one of"),
        ({"feature_weight": 1.0}, "needs --feature-layers"),
        ({"stop_after": 9, "steps": 5}, r"stop_after must lie in \[1, steps=5\]"),
    ],
)
def test_bad_settings_fail_in_one_line(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        TrainConfig(shards="x", **changes).validate()
    assert "\n" not in str(info.value)


def test_command_line_rejects_bad_values_before_training(
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(SystemExit) as info:
        config_from_args(["--shards", "x", "--objective", "kd"])
    assert info.value.code == 2
    assert "invalid choice: 'kd'" in capsys.readouterr().err


def test_defaults_validate_and_the_modules_share_one_definition() -> None:
    TrainConfig(shards="x").validate()
    models = pytest.importorskip("distill.models")
    examples = pytest.importorskip("distill.examples")

    config = TrainConfig(shards="x")
    assert config.teacher == DEFAULT_TEACHER and models.DEFAULT_TEACHER is DEFAULT_TEACHER
    assert TrainConfig(shards="x", task="segment").teacher == DEFAULT_TEACHERS["segment"]
    assert DEFAULT_TEACHERS["segment"] in models.TEACHERS
    assert TrainConfig(shards="x", task="segment", teacher="t.pt").teacher == "t.pt"
    assert set(BUILTIN_TEACHERS) == set(models.TEACHERS)
    parser = {a.dest: a for a in build_parser()._actions}
    assert models.NORMALIZATIONS is NORMALIZATIONS
    assert tuple(parser["teacher_norm"].choices) == tuple(NORMALIZATIONS)
    assert examples.STUDENT_INPUTS is STUDENT_INPUTS
    assert tuple(parser["student_input"].choices) == STUDENT_INPUTS
    assert tuple(parser["task"].choices) == TASKS


def test_loader_config_checks_its_settings_and_make_loader_takes_them_once(
    pair_shards: Path,
) -> None:
    data = pytest.importorskip("distill.data")
    config = TrainConfig(shards="x", crop=64, low_light=(2, 3))
    loader = config.loader(seed=5, rank=1, world_size=2, start_batch=7)
    assert (loader.seed, loader.rank, loader.world_size, loader.start_batch) == (5, 1, 2, 7)
    assert loader.teacher_size == 64 and loader.low_light == (2.0, 3.0) and loader.repeat
    assert all(isinstance(f, float) for f in loader.low_light)
    settings = {"batch_size": 2, "crop": 8, "teacher_size": 8, "repeat": False}
    made = data.make_loader(str(pair_shards), **settings)
    assert made.dataset.config == LoaderConfig(**settings)
    with pytest.raises(TypeError, match="shuffle"):
        data.make_loader(str(pair_shards), batch_size=2, shuffle=True)
    for bad, message in [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": 1, "rank": 2, "world_size": 2}, r"rank must lie in \[0, world_size=2\)"),
        ({"batch_size": 1, "crop": 7}, "crop must be a positive even number"),
        ({"batch_size": 1, "student_input": "rgb"}, "student_input must be one of"),
        ({"batch_size": 1, "low_light": (2, 1)}, "1 <= min <= max"),
        ({"batch_size": 1, "raw_on_device": True, "isp_reference": True}, "raw_on_device=False"),
        ({"batch_size": 1, "start_batch": 1, "repeat": False, "num_workers": 2}, "start_batch"),
    ]:
        with pytest.raises(ValueError, match=message):
            LoaderConfig(**bad)


def test_data_order_fields() -> None:
    # The settings a resume must keep to replay the same samples in the same order (docs/data.md).
    assert set(data_order_fields()) == {
        "shards", "seed", "batch_size", "num_workers", "shuffle_buffer", "shuffle_memory", "crop",
        "teacher_size", "student_input", "hflip", "low_light", "fresh_cameras",
    }  # fmt: skip


def test_to_dict_is_plain_json_data() -> None:
    import json

    config = TrainConfig(shards=["a", "b"], low_light=(2.0, 3.0), feature_layers=["x"])
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["low_light"] == [2.0, 3.0] and data["shards"] == ["a", "b"]


def test_missing_extra_names_the_extra_only_for_its_modules() -> None:
    message = missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch"))
    assert message is not None and "pip install 'rawpairs[distill]'" in message
    assert "torch" in message and "\n" not in message
    nested = ModuleNotFoundError("x", name="efficientnet_lite_pytorch.model")
    assert missing_extra(nested) is not None
    assert missing_extra(ModuleNotFoundError("x", name="numpy")) is None
