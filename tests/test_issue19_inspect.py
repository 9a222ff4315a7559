"""Issue 19 item 13: verify, preview and training accept and refuse the same samples."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from rawpairs.build import build
from rawpairs.cli import main as cli
from rawpairs.sample import BuildConfig


def test_a_thin_photo_is_verified_previewed_and_loaded(tmp_path):
    """A 3×5000 photo gives a 2×5000 sample: verify accepted it, --preview failed naming
    neither shard nor key."""
    from distill import data

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(src / "thin.png"), rng.integers(0, 255, (3, 5000, 3), np.uint8))
    out = tmp_path / "out"
    assert build(src, out, BuildConfig(), workers=1).samples == 1
    runner = CliRunner()
    verified = runner.invoke(cli, ["inspect", str(out), "--verify"])
    assert verified.exit_code == 0, verified.output
    preview = tmp_path / "p.png"
    shown = runner.invoke(cli, ["inspect", str(out), "--preview", str(preview)])
    assert shown.exit_code == 0, shown.output
    assert cv2.imread(str(preview)) is not None
    loader = data.make_loader(str(out), batch_size=1, crop=8, teacher_size=8, repeat=False)
    assert len(list(loader)) == 1


def test_a_preview_failure_names_shard_and_key(tmp_path, monkeypatch):
    import rawpairs.inspect as inspect

    src = tmp_path / "src"
    src.mkdir()
    assert cv2.imwrite(str(src / "a.png"), np.full((16, 16, 3), 100, np.uint8))
    out = tmp_path / "out"
    build(src, out, BuildConfig(), workers=1)

    def broken(sample, tile):
        raise ValueError("the ISP refuses")

    monkeypatch.setattr(inspect, "_preview_row", broken)
    shown = CliRunner().invoke(cli, ["inspect", str(out), "--preview", str(tmp_path / "p.png")])
    assert shown.exit_code == 1
    assert "rawpairs-000000.tar" in shown.output and "a_png_" in shown.output, shown.output
    assert Path(tmp_path / "p.png").exists() is False
