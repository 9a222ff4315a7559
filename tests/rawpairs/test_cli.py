"""The build command line: bad settings and write failures are one bounded line, no traceback."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from rawpairs.cli import MESSAGE_LIMIT
from rawpairs.cli import main as cli


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli_src")
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"{i}.png"), image)
    return folder


def _run(src: Path, out: Path, *args: str):
    argv = ["build", "--src", str(src), "--out", str(out), "--workers", "1", "--quiet", *args]
    return CliRunner().invoke(cli, argv)


def _camera(tmp_path: Path, text: str) -> str:
    path = tmp_path / "camera.json"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "settings, expected",
    [
        (["--seed", "-1"], "--seed must be in"),
        ({"shot_noise": 1e308}, "shot_noise must be <= 1"),
        ({"read_noise": [1e-6, 1e308]}, "read_noise must be <= 1"),
        ({"black_level": 0, "white_level": 1e-300}, "white_level must be >= 1"),
        ({"red_gain": 1e308}, "red_gain must be <= 64"),
        ({"digital_gain_inverse": 1e-300}, "digital_gain_inverse"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ({"xyz_to_cam": [0.5] * 100_000}, "xyz_to_cam must be 9 finite numbers"),
        ({"xyz_to_cam": [0.5] * 3_000_000}, "a capture-priors file is at most"),
    ],
)
def test_bad_settings_are_one_bounded_usage_line(src, tmp_path, settings, expected):
    if isinstance(settings, list):
        args = settings
    else:
        text = settings if isinstance(settings, str) else json.dumps(settings)
        args = ["--camera", _camera(tmp_path, text)]
    result = _run(src, tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and len(error[0]) <= MESSAGE_LIMIT + len("Error: ")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_cli_full_disk_is_one_line_exit_1(src, tmp_path, monkeypatch):
    from rawpairs.storage import OutputFolder

    opened = OutputFolder.open_write

    def open_write(self, name):
        f = opened(self, name)
        if name.startswith(".rawpairs-"):
            f.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path(name))
        return f

    monkeypatch.setattr(OutputFolder, "open_write", open_write)
    result = _run(src, tmp_path / "out")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "--out" in lines[0]
    assert "Traceback" not in result.output
    assert not list((tmp_path / "out").glob(".*partial"))


def test_sources_per_shard_sets_the_shards(src, tmp_path):
    result = _run(src, tmp_path / "out", "--sources-per-shard", "2")
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [s["samples"] for s in index["shards"]] == [2, 1]
    other = _run(src, tmp_path / "out", "--sources-per-shard", "3")
    assert other.exit_code == 2 and "different sources per shard" in other.output
