"""Issue 19 item 13: verify, preview and training accept and refuse the same samples."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from rawpairs.build import build
from rawpairs.cli import main as cli
from rawpairs.config import BuildConfig


def test_a_preview_failure_names_shard_and_key(tmp_path, monkeypatch):
    import rawpairs.preview as preview

    src = tmp_path / "src"
    src.mkdir()
    assert cv2.imwrite(str(src / "a.png"), np.full((16, 16, 3), 100, np.uint8))
    out = tmp_path / "out"
    build(src, out, BuildConfig(), workers=1)

    def broken(sample, tile):
        raise ValueError("the ISP refuses")

    monkeypatch.setattr(preview, "_preview_row", broken)
    shown = CliRunner().invoke(cli, ["inspect", str(out), "--preview", str(tmp_path / "p.png")])
    assert shown.exit_code == 1
    assert "rawpairs-000000.tar" in shown.output and "a_png_" in shown.output, shown.output
    assert Path(tmp_path / "p.png").exists() is False
