"""rawpairs inspect: summary, --verify on good and corrupted shards, --preview, --json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rawpairs.build import build
from rawpairs.buildfolder import InspectError
from rawpairs.cli import main as cli
from rawpairs.config import BuildConfig
from rawpairs.inspect import summarize
from rawpairs.manifest import manifest_schema
from rawpairs.tarwalk import read_shard
from rawpairs.verify import verify_shards


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


def first_shard(folder: Path) -> Path:
    return sorted(folder.glob("rawpairs-*.tar"))[0]


def test_summary_counts(shards):
    s = summarize(shards)
    assert s["samples"] == 6 and s["shards"] == len(list(shards.glob("rawpairs-*.tar"))) >= 2
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
    shard = first_shard(bad)
    first = next(iter(read_shard(shard)))
    key, members = first.key, first.members
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
    assert any(key in p and "exceeds the 12-bit range" in p for p in problems)
    result = CliRunner().invoke(cli, ["inspect", str(bad), "--verify"])
    assert result.exit_code == 1 and key in result.output


def test_verify_reports_missing_shard(shards, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    shard = first_shard(bad)
    shard.unlink()
    problems = verify_shards(bad)
    assert f"{shard.name}: missing" in problems
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


# --- issue 13 item 8: what verify used to miss ----------------------------------------------------
@pytest.fixture
def copy(shards, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(shards, out)
    return out


def rewrite_manifest(folder: Path, change) -> None:
    path = folder / "manifest.parquet"
    rows = pq.read_table(path).to_pylist()
    pq.write_table(pa.Table.from_pylist(change(rows), schema=manifest_schema()), path)


def edit_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def test_verify_reports_a_stray_shard(copy):
    shutil.copy(first_shard(copy), copy / "rawpairs-000099.tar")
    assert verify_shards(copy) == [
        "rawpairs-000099.tar: shard not in index.json (a training run on the folder would read it)"
    ]


@pytest.mark.parametrize(
    ("column", "value"),
    [("wb_r", 9.5), ("black_level", 3.0), ("source", "other.png"), ("byte_offset", 1), ("size", 7)],
)
def test_verify_compares_manifest_columns_with_the_samples(copy, column, value):
    def change(rows):
        rows[2] = {**rows[2], column: value}
        return rows

    key = pq.read_table(copy / "manifest.parquet").to_pylist()[2]["key"]
    rewrite_manifest(copy, change)
    problems = verify_shards(copy)
    assert len(problems) == 1
    assert problems[0].endswith(f"/{key}: {column} " + problems[0].split(f"{column} ", 1)[1])
    assert f"manifest.parquet says {value!r}" in problems[0]


def test_verify_reports_a_duplicated_manifest_row(copy):
    rewrite_manifest(copy, lambda rows: [*rows, rows[0]])
    problems = verify_shards(copy)
    key = pq.read_table(copy / "manifest.parquet").to_pylist()[0]["key"]
    assert f"{key}: 2 rows in manifest.parquet" in problems
    assert "build.json counts 6 samples, manifest.parquet rows: 7" in problems


def test_verify_reports_emptied_errors_and_unfinished_builds(copy):
    (copy / "errors.jsonl").write_text("")
    assert verify_shards(copy) == ["build.json counts 1 errors, errors.jsonl: 0"]
    (copy / "errors.jsonl").unlink()
    assert verify_shards(copy) == ["build.json counts 1 errors, errors.jsonl: 0"]
    edit_json(copy / "build.json", lambda b: {**b, "status": "running"})
    problems = verify_shards(copy)
    assert any("status 'running', not 'complete'" in p for p in problems)
    result = CliRunner().invoke(cli, ["inspect", str(copy), "--verify"])
    assert result.exit_code == 1 and "verify: OK" not in result.output


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("index.json", b"{not json", "index.json: not valid JSON"),
        ("index.json", b'{"schema_version": 1, "shards": {}}', "shards must be a list"),
        ("index.json", b'{"schema_version": 1, "shards": [{"name": 3}]}', "lacks samples"),
        ("build.json", b"[1, 2]", "build.json: not a JSON object"),
        ("build.json", b"[" * 100000, "build.json: not valid JSON"),
        ("manifest.parquet", b"PAR1 garbage", "manifest.parquet: not a readable Parquet file"),
        (
            "errors.jsonl",
            b'{"path": "a"}\n',
            "errors.jsonl: line 1 is not a {path, error, message}",
        ),
        ("errors.jsonl", b"\xff\xfe", "errors.jsonl: unreadable"),
    ],
)
def test_malformed_bookkeeping_is_one_line(copy, name, content, message):
    (copy / name).write_bytes(content)
    problems = verify_shards(copy)
    assert len(problems) == 1 and message in problems[0] and "\n" not in problems[0]
    with pytest.raises(InspectError, match=message):
        summarize(copy)
    result = CliRunner().invoke(cli, ["inspect", str(copy), "--verify"])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    plain = CliRunner().invoke(cli, ["inspect", str(copy)])  # without --verify: a usage error
    assert plain.exit_code == 2 and message in plain.output and "Traceback" not in plain.output


def test_manifest_with_other_columns(copy):
    table = pq.read_table(copy / "manifest.parquet").drop_columns(["wb_r"])
    pq.write_table(table, copy / "manifest.parquet")
    (problem,) = verify_shards(copy)
    assert "columns differ from the manifest schema: wb_r (missing instead of double)" in problem


def test_shard_names_must_be_plain_files_in_the_folder(copy):
    def point_at(name):
        def change(index):
            index["shards"][0]["name"] = name
            return index

        return change

    edit_json(copy / "index.json", point_at("/dev/zero"))
    (problem,) = verify_shards(copy)
    assert "'/dev/zero' is not a plain file name" in problem
    edit_json(copy / "index.json", point_at("../shards/rawpairs-000000.tar"))
    assert "is not a plain file name" in verify_shards(copy)[0]
    edit_json(copy / "index.json", point_at("zero.tar"))
    (copy / "zero.tar").symlink_to("/dev/zero")
    assert "zero.tar: not a regular file inside the folder" in verify_shards(copy)


def test_preview_of_a_damaged_folder_is_one_line(copy, tmp_path):
    shard = first_shard(copy)
    shard.write_bytes(shard.read_bytes()[:3000])
    result = CliRunner().invoke(cli, ["inspect", str(copy), "--preview", str(tmp_path / "p.png")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: ") and shard.name in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_real_raw_without_a_model_is_not_called_simulated(copy):
    def change(rows):
        rows[0] = {**rows[0], "kind": "raw", "make": "", "model": ""}
        rows[1] = {**rows[1], "kind": "raw", "make": "Canon", "model": "PowerShot S40"}
        return rows

    rewrite_manifest(copy, change)
    assert summarize(copy)["cameras"] == {
        "(camera RAW, model unknown)": 1,
        "Canon PowerShot S40": 1,
        "(simulated)": 4,
    }
