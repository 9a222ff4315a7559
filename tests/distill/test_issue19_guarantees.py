"""Issue 19, the guarantees' audit: tests for rows of docs/guarantees.md whose earlier tests could
not fail when the promise broke (a spool that never spills, a pickle that would not run, ``--trust``
and resume paths never exercised on the command line, bad settings checked only in ``validate``).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
from skimage import data as skdata
from torch import nn

from distill import evaluate as ev
from distill import export
from distill.checkpoint import read_checkpoint, save_checkpoint
from distill.train import main

TINY = ["--crop", "32", "--batch-size", "2", "--num-workers", "0", "--shuffle-buffer", "4"]
TINY += ["--warmup-steps", "1", "--log-every", "1", "--device", "cpu", "--no-progress"]
CALLS: list[str] = []  # the factories below record that they ran


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def tiny_imagenet_student() -> nn.Module:
    """A 1000-class network over the front-end's RGB (fits the ImageNet teacher)."""
    CALLS.append("tiny_imagenet_student")
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1000)
    )


# Build: a source's crops are spilled past 64 MiB ---------------------------------------------


def test_a_source_over_64_mib_spills_to_a_file_and_a_small_one_stays_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rawpairs.shards as shards
    from rawpairs.build import build
    from rawpairs.config import BuildConfig

    assert shards.SPOOL_BYTES == 64 * 2**20
    spools: list = []
    begin = shards.ShardWriter.begin

    def watched(self) -> None:
        begin(self)
        spools.append(self._spool)

    monkeypatch.setattr(shards.ShardWriter, "begin", watched)
    src = tmp_path / "src"
    src.mkdir()
    rgb = cv2.resize(skdata.astronaut(), (600, 600), interpolation=cv2.INTER_AREA)
    assert cv2.imwrite(str(src / "big.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    result = build(src, tmp_path / "big", BuildConfig(crop=256, crops=320), workers=1)
    assert result.samples == 320
    written = sum(p.stat().st_size for p in (tmp_path / "big").glob("rawpairs-*.tar"))
    assert written > shards.SPOOL_BYTES  # the source's samples were more than 64 MiB ...
    assert len(spools) == 1 and spools[0]._rolled  # ... so they went to a file, not memory
    spools.clear()
    build(src, tmp_path / "small", BuildConfig(crop=256, crops=4), workers=1)
    assert len(spools) == 1 and not spools[0]._rolled  # 4 samples: kept in memory


# Training: --trust on the command line, resume never builds from the checkpoint -------------


@pytest.fixture(scope="module")
def code_run(pair_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run whose student is ``module:factory`` code the user named for training."""
    out = tmp_path_factory.mktemp("code_run")
    spec = f"{__name__}:tiny_imagenet_student"
    args = ["--shards", str(pair_shards), "--out", str(out), "--steps", "2", *TINY]
    assert main([*args, "--student", spec, "--student-init", "scratch"]) == 0
    return out


def test_evaluate_and_export_import_checkpoint_code_only_with_trust(
    code_run: Path, pair_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    spec = f"{__name__}:tiny_imagenet_student"
    checkpoint = str(code_run / "last.pt")
    evaluate = ["--shards", str(pair_shards), "--checkpoint", checkpoint, "--max-batches", "1"]
    evaluate += ["--batch-size", "8", "--out", str(tmp_path / "e")]
    exporting = ["--checkpoint", checkpoint, "--out", str(tmp_path / "x")]
    commands = {
        "evaluate": lambda *a: ev.main([*evaluate, *a]),
        "export": lambda *a: export.main([*exporting, *a]),
    }
    for name, command in commands.items():
        CALLS.clear()
        capsys.readouterr()
        assert command() == 2, name
        line = one_line(capsys.readouterr().err)
        assert f"--trust {spec}" in line and checkpoint in line, line
        assert CALLS == [], name  # the factory never ran
        assert command("--trust", spec) == 0, capsys.readouterr().err
        assert CALLS == ["tiny_imagenet_student"], name
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["samples"] == 8
    assert (tmp_path / "x" / "student.torchscript.pt").is_file()


def test_resume_builds_its_models_from_the_command_line_never_from_the_checkpoint(
    pair_shards: Path, tmp_path: Path
) -> None:
    """A checkpoint whose config names a student factory: `train --resume` never calls it (the
    command line's student is built), and the weights still carry over."""
    out = tmp_path / "run"
    args = ["--shards", str(pair_shards), "--out", str(out), "--steps", "3", *TINY]
    assert main([*args, "--stop-after", "2"]) == 0
    state = read_checkpoint(out / "last.pt")
    state["config"]["student"] = f"{__name__}:tiny_imagenet_student"
    save_checkpoint(out / "last.pt", state)
    CALLS.clear()
    assert main([*args, "--resume", "auto"]) == 0
    assert CALLS == []
    assert read_checkpoint(out / "last.pt")["config"]["student"] == "teacher"
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    resumed = read_checkpoint(out / "last.pt")["student"]
    whole = read_checkpoint(tmp_path / "whole" / "last.pt")["student"]
    for name, value in whole.items():
        assert torch.equal(resumed[name], value), name


# Training: every bad setting on the command line is one line, exit 2 ------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--steps", "0"], r"steps must lie in [1, inf], got 0"),
        (["--batch-size", "0"], "batch_size must lie in [1, inf]"),
        (["--lr", "nan"], "lr must be finite, got nan"),
        (["--lr", "0"], "lr must lie in [1e-12, inf]"),
        (["--seed", "-1"], "seed must lie in [0, 4294967295]"),
        (["--crop", "33"], "crop must be even"),
        (["--teacher-size", "0"], "teacher_size must lie in [1, inf]"),
        (["--momentum", "1.5"], "momentum must lie in [0, 1]"),
        (["--low-light", "4", "2"], "MIN <= MAX"),
        (["--stop-after", "9", "--steps", "5"], "stop_after must lie in [1, steps=5]"),
        (["--shuffle-buffer", "0"], "shuffle_buffer must lie in [1, inf]"),
        (["--shuffle-memory", "0"], "shuffle_memory must lie in [1, inf]"),
        (["--objective", "kd"], "invalid choice: 'kd'"),
        (["--batch-size", "x"], "invalid int value: 'x'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--device", "banana"], "not a device name"),
        (["--feature-weight", "1"], "needs --feature-layers"),
    ],
)
def test_bad_settings_on_the_command_line_are_one_line_exit_2(
    pair_shards: Path,
    tmp_path: Path,
    flags: list[str],
    expected: str,
    capsys: pytest.CaptureFixture,
) -> None:
    out = tmp_path / "run"
    assert exit_status(["--shards", str(pair_shards), "--out", str(out), *flags]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: ") and expected in line, line
    assert not out.exists()  # refused before anything was made


def exit_status(argv: list[str]) -> int | str | None:
    """``main``'s status, also when argparse ends the process (``SystemExit``)."""
    try:
        return main(argv)
    except SystemExit as err:
        return err.code
