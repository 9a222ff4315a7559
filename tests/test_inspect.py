"""rawpairs inspect: summary, --verify on good and corrupted shards, --preview, --json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from rawpairs.build import build
from rawpairs.cli import main as cli
from rawpairs.inspect import InspectError, summarize, verify_shards
from rawpairs.sample import BuildConfig
from rawpairs.shards import read_shard


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from skimage import data

    src = tmp_path_factory.mktemp("src")
    for name in ("astronaut", "coffee", "chelsea"):
        rgb = cv2.resize(getattr(data, name)()[..., :3], (96, 80), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(src / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path_factory.mktemp("shards")
    build(src, out, BuildConfig(seed=1, crop=48, crops=2), workers=1, samples_per_shard=4)
    return out


def test_summary_counts(shards):
    s = summarize(shards)
    assert s["samples"] == 6 and s["shards"] == 2
    assert s["kinds"] == {"rgb": 6}
    assert sum(s["cfa"].values()) == 6
    assert [e["path"] for e in s["failed"]] == ["broken.jpg"]
    lo, hi = s["ranges"]["wb_r"]
    assert 1.9 <= lo <= hi <= 2.4


def test_verify_passes_on_good_shards(shards):
    assert verify_shards(shards) == []


def test_verify_names_the_corrupted_sample(shards, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    shard = bad / "rawpairs-000001.tar"
    key, members = next(iter(read_shard(shard)))
    data = bytearray(shard.read_bytes())
    payload = members["raw.npy"]
    at = data.find(payload)
    assert at > 0
    # Set a run of mosaic values beyond the 12-bit range (the last 64 bytes of the array).
    end = at + len(payload)
    data[end - 64 : end] = b"\xff" * 64
    shard.write_bytes(bytes(data))
    problems = verify_shards(bad)
    assert any("checksum" in p for p in problems)
    assert any(key in p and "exceeds 12 bits" in p for p in problems)
    result = CliRunner().invoke(cli, ["inspect", str(bad), "--verify"])
    assert result.exit_code == 1 and key in result.output


def test_verify_reports_missing_shard(shards, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    (bad / "rawpairs-000000.tar").unlink()
    problems = verify_shards(bad)
    assert "rawpairs-000000.tar: missing" in problems
    assert any("in no shard" in p for p in problems)


def test_cli_json_and_preview(shards, tmp_path):
    preview = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        cli, ["inspect", str(shards), "--json", "--verify", "--preview", str(preview)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["verify"] == {"ok": True, "problems": []}
    sheet = cv2.imread(str(preview))
    assert sheet is not None and sheet.shape == (6 * 256, 3 * 256, 3)
    assert float(np.std(sheet)) > 10


def test_not_a_build(tmp_path):
    with pytest.raises(InspectError, match="not a finished rawpairs build"):
        summarize(tmp_path)
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such folder" in result.output
