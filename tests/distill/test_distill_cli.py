"""The ``distill`` command family: subcommands, help texts, ``--config`` files, ``config.yaml``.

Training runs are 2 steps at 32 px, batch 2, so the repeat-a-run test stays a few seconds on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from distill import cli, evaluate, export, predict
from distill.config import TrainConfig, build_parser, config_from_args
from distill.options import CONFIG_NAME, parse_args, read_config, write_config
from distill.train import main as train_main
from distill.train import smoothed_losses

REPO = Path(__file__).resolve().parents[2]
PARSERS = {
    "train": build_parser,
    "evaluate": evaluate.build_parser,
    "export": export.build_parser,
    "predict": predict.build_parser,
}


def option_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Option flag → its help as ``--help`` prints it (defaults expanded), one line."""
    formatter = parser._get_formatter()
    return {
        action.option_strings[-1]: " ".join(formatter._expand_help(action).split())
        for action in parser._actions
        if action.option_strings and action.dest != "help"
    }


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_help_with_its_default_once(name: str) -> None:
    parser = PARSERS[name](f"distill {name}")
    helps = option_help(parser)
    assert "--config" in helps
    for flag, text in helps.items():
        assert text, flag
        assert text.lower().count("default") <= 1, (flag, text)
        assert "(default: None)" not in text, (flag, text)
    concrete = [
        a
        for a in parser._actions
        if a.option_strings and a.default not in (None, [], False, True) and a.dest != "help"
    ]
    for action in concrete:  # a concrete default is printed
        assert str(action.default) in helps[action.option_strings[-1]], action.dest
    assert f"usage: distill {name}" in parser.format_help()


def test_train_help_says_each_default_once() -> None:
    helps = option_help(build_parser())
    assert helps["--teacher-size"].endswith("(default: --crop)")
    assert helps["--batch-size"].endswith("(default: 32)")
    assert helps["--no-amp"].endswith("(default: True)")
    assert helps["--val-batches"].endswith("(default: all)")


def test_distill_dispatches_to_the_subcommands(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("train", "evaluate", "export", "predict"))
    assert cli.main([]) == 2
    assert cli.main(["fit"]) == 2
    assert capsys.readouterr().err.strip().endswith("['train', 'evaluate', 'export', 'predict']")
    for name in PARSERS:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: distill {name}")


def test_module_entry_points_still_work() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for module in ("distill.train", "distill.evaluate", "distill.export", "distill.predict"):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env,
            cwd=REPO, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: python -m {module}")


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_config_file_fills_options_and_flags_override(tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path / "run.yaml",
        "shards: [a/, b/]\nbatch_size: 4\nlr: 5e-5\nlow_light: [2, 4]\nhflip: false\n"
        "feature_layers: [x=y, z]\nteacher_size: null\nraw_wb: grayworld\n",
    )
    parsed = config_from_args(["--config", str(config)])
    assert parsed.shards == ["a/", "b/"] and parsed.batch_size == 4
    assert parsed.lr == 5e-5  # YAML 1.1 reads 5e-5 as a string: converted like the flag
    assert parsed.low_light == (2.0, 4.0) and parsed.hflip is False
    assert parsed.layer_pairs == [("x", "y"), ("z", "z")] and parsed.raw_wb == "grayworld"
    parsed = config_from_args(["--config", str(config), "--batch-size", "8", "--shards", "c/"])
    assert (parsed.batch_size, parsed.shards) == (8, "c/")
    parser = predict.build_parser()
    options = write_yaml(tmp_path / "p.yaml", "top_k: 3\n")
    args = parse_args(parser, ["--config", str(options), "--model", "m", "--src", "x.dng"])
    assert args.top_k == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shards: a\nbatch_sise: 4\n", "unknown key 'batch_sise' (did you mean 'batch_size'?)"),
        ("shards: a\nbatch-size: 4\n", "unknown key 'batch-size' (did you mean 'batch_size'?)"),
        ("shards: a\nbatch_size: 4.5\n", "batch_size: expected an integer, got 4.5"),
        ("shards: a\nsteps: ten\n", "steps: expected an integer, got 'ten'"),
        ("shards: a\nhflip: 1\n", "hflip: expected true or false, got 1"),
        ("shards: a\nraw_wb: auto\n", "raw_wb: expected one of"),
        ("shards: a\nlow_light: [2]\n", "low_light: expected a list of 2 values"),
        ("- shards\n", "expected a mapping of option: value, got list"),
        ("shards: [a\n", "not valid YAML at line 2"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, message: str
) -> None:
    config = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(SystemExit) as exit_info:
        config_from_args(["--config", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {config}: "), err
    assert message in err, err


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="configuration file not found"):
        read_config(tmp_path / "none.yaml", build_parser())


def test_written_config_round_trips_into_the_same_train_config(tmp_path: Path) -> None:
    config = TrainConfig(
        shards=["a/", "b/"], out="run", steps=7, batch_size=3, teacher_size=40, lr=3e-5,
        low_light=(1.5, 3.0), feature_layers=["x=y"], feature_weight=0.5, val_shards="v/",
        hflip=False, freeze_bn=True, temperature=2.0,
    )  # fmt: skip
    path = write_config(config.to_dict(), tmp_path / CONFIG_NAME, "a comment")
    assert path.read_text().startswith("# a comment\n")
    assert yaml.safe_load(path.read_text())["batch_size"] == 3
    assert config_from_args(["--config", str(path)]) == config
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_run_folder_config_repeats_the_run(pair_shards: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    argv = [
        "--shards", str(pair_shards), "--out", str(first), "--steps", "2", "--crop", "32",
        "--batch-size", "2", "--num-workers", "0", "--device", "cpu", "--no-progress",
        "--log-every", "1", "--seed", "7", "--lr", "1e-3",
    ]  # fmt: skip
    assert train_main(argv) == 0
    written = yaml.safe_load((first / CONFIG_NAME).read_text())
    assert written["seed"] == 7 and written["out"] == str(first) and written["lr"] == 1e-3
    assert train_main(["--config", str(first / CONFIG_NAME), "--out", str(second)]) == 0
    assert yaml.safe_load((second / CONFIG_NAME).read_text()) == {**written, "out": str(second)}
    logs = [(run / "log.jsonl").read_text().splitlines() for run in (first, second)]
    losses = [[yaml.safe_load(line)["loss"] for line in log] for log in logs]
    assert losses[0] == losses[1]  # same first-step (and second-step) loss
    weights = [
        torch.load(run / "last.pt", weights_only=False)["student"] for run in (first, second)
    ]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def test_end_summary_smooths_the_loss_and_scores_held_out_pairs(
    pair_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert smoothed_losses([4.0, 2.0, 1.0, 3.0, 0.0] * 4) == {
        "loss_start": 3.0, "loss_end": 1.5, "loss_window": 2,
    }  # fmt: skip
    assert smoothed_losses([5.0, 1.0])["loss_start"] == 5.0  # at least one step
    assert smoothed_losses([])["loss_end"] is None
    argv = [
        "--shards", str(pair_shards / "rawpairs-00000{0..1}.tar"), "--out", str(tmp_path),
        "--steps", "3", "--crop", "32", "--batch-size", "2", "--num-workers", "0",
        "--device", "cpu", "--no-progress",
        "--val-shards", str(pair_shards / "rawpairs-000002.tar"),
    ]  # fmt: skip
    assert train_main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "losses" not in summary and summary["loss_window"] == 1
    assert out[1].startswith(f"loss {summary['loss_start']:.4f} → {summary['loss_end']:.4f}")
    baseline = summary["naive_baseline"]
    start, end = summary["validations"]  # at the start and the end (--val-every 0)
    assert (start["step"], end["step"]) == (0, 3)
    assert out[2] == (
        f"held-out (--val-shards), step 0 → 3: KL {start['kl']:.3f} → {end['kl']:.3f} nats, "
        f"top-1 agreement {start['top1_agreement']:.3f} → {end['top1_agreement']:.3f}; teacher "
        f"on the naive render: KL {baseline['kl']:.3f}, top-1 agreement "
        f"{baseline['top1_agreement']:.3f}"
    )
    assert len(out) == 4 and out[3].endswith("summary.json")


def test_console_script_and_onnx_extra_are_declared() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    module, _, name = project["scripts"]["distill"].partition(":")
    assert getattr(importlib.import_module(module), name) is cli.main
    assert {r.split(">")[0] for r in project["optional-dependencies"]["onnx"]} == {
        "onnx", "onnxscript", "onnxruntime",
    }  # fmt: skip
    assert any(r.startswith("pyyaml") for r in project["dependencies"])
