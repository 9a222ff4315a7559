"""Issue 20, data side: splits, small photos, inspect on any shards, the dataset card, and the
small conventions (byte_offset, warnings above the progress bar, runnable documentation)."""

from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rawpairs.build import build, build_splits
from rawpairs.cli import main as cli
from rawpairs.config import BuildConfig
from rawpairs.errors import BuildError, BuildOutputError
from rawpairs.inspect import summarize
from rawpairs.splits import split_of
from rawpairs.tarwalk import read_shard
from rawpairs.verify import verify_shards

ROOT = Path(__file__).resolve().parents[2]


def _photo(path: Path, height: int, width: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    assert cv2.imwrite(str(path), image)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """14 photos in two class folders (two of them smaller than a 48 crop) and a licence."""
    folder = tmp_path_factory.mktemp("issue20_src")
    for i in range(12):
        _photo(folder / ("cats" if i % 2 else "dogs") / f"p{i:02d}.png", 64, 80, i)
    _photo(folder / "cats" / "tiny.png", 30, 40, 99)
    _photo(folder / "dogs" / "thin.png", 40, 200, 98)
    (folder / "LICENSE.txt").write_text("CC0 1.0\n")
    return folder


@pytest.fixture(scope="module")
def split_build(src, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("issue20_split")
    config = BuildConfig(crop=48, labels=True)
    build_splits(src, out, config, 0.3, workers=1)
    return out


def _sources(folder: Path) -> set[str]:
    return set(pq.read_table(folder / "manifest.parquet").column("source").to_pylist())


def _all_inputs(folder: Path) -> set[str]:
    recorded = set()
    for name in ("errors.jsonl", "skipped.jsonl"):
        recorded |= {json.loads(line)["path"] for line in (folder / name).read_text().splitlines()}
    return _sources(folder) | recorded


# 6: splits -----------------------------------------------------------------------------------
def test_splits_partition_the_sources_by_path_hash_and_each_is_a_complete_build(src, split_build):
    train, val = split_build / "train", split_build / "val"
    everything = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert _all_inputs(train) | _all_inputs(val) == everything
    assert _all_inputs(train) & _all_inputs(val) == {"LICENSE.txt"}  # named in both cards
    for name, folder in (("train", train), ("val", val)):
        images = _all_inputs(folder) - {"LICENSE.txt"}
        assert {split_of(path, 0.3) for path in images} == {name}
        assert verify_shards(folder) == []
        assert json.loads((folder / "build.json").read_text())["split"] == {
            "name": name,
            "val_fraction": 0.3,
        }
    assert (train / "classes.json").read_bytes() == (val / "classes.json").read_bytes()
    assert json.loads((val / "classes.json").read_text()) == {"cats": 0, "dogs": 1}


def test_the_split_depends_on_the_relative_path_only():
    assert split_of("cats/p01.png", 0.5) == split_of("cats/p01.png", 0.5)
    shares = [split_of(f"dir/{i}.jpg", 0.2) == "val" for i in range(4000)]
    assert 0.18 < sum(shares) / len(shares) < 0.22
    # a larger fraction only moves sources from train to val
    assert all(split_of(f"{i}", 0.3) == "val" for i in range(500) if split_of(f"{i}", 0.2) == "val")


def test_a_moved_source_folder_keeps_its_split_and_a_split_resumes_alone(
    src, split_build, tmp_path
):
    moved = tmp_path / "elsewhere" / "photos"
    shutil.copytree(src, moved)
    out = tmp_path / "out"
    shutil.copytree(split_build / "train", out / "train")  # finished earlier: kept
    results = build_splits(moved, out, BuildConfig(crop=48, labels=True), 0.3, workers=1)
    assert results["val"].already_complete is False
    for name in ("train", "val"):  # the same sources and the same shard bytes
        assert _sources(out / name) == _sources(split_build / name)
        assert (out / name / "index.json").read_bytes() == (
            split_build / name / "index.json"
        ).read_bytes()
    again = build_splits(moved, out, BuildConfig(crop=48, labels=True), 0.3, workers=1)
    assert again["train"].already_complete and again["val"].already_complete


def test_a_fraction_that_leaves_a_split_empty_is_refused_before_anything_is_written(src, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BuildError, match=r"puts none of the 14 inputs .* into val"):
        build_splits(src, out, BuildConfig(crop=48), 1e-9, workers=1)
    assert not out.exists()
    plain = tmp_path / "plain"
    build(src / "cats", plain, BuildConfig(crop=48), workers=1)
    with pytest.raises(BuildError, match="holds a build without a split"):
        build_splits(src, plain, BuildConfig(crop=48), 0.3, workers=1)
    assert not (plain / "train").exists()
    result = CliRunner().invoke(
        cli, ["build", "--src", str(src), "--out", str(out), "--val-fraction", "1.5"]
    )
    assert result.exit_code == 2 and "--val-fraction" in result.output


# 7: small photos -----------------------------------------------------------------------------
def test_photos_smaller_than_the_crop_are_skipped_not_failed(split_build):
    skipped = {}
    for name in ("train", "val"):
        for line in (split_build / name / "skipped.jsonl").read_text().splitlines():
            record = json.loads(line)
            skipped[record["path"]] = record["reason"]
        assert (split_build / name / "errors.jsonl").read_text() == ""
        counts = json.loads((split_build / name / "build.json").read_text())["counts"]
        assert counts["errors"] == 0
        assert summarize(split_build / name)["skipped"] == [
            json.loads(line)
            for line in (split_build / name / "skipped.jsonl").read_text().splitlines()
        ]
    assert skipped == {
        "cats/tiny.png": "image 30×40 is smaller than the 48×48 crop (--upscale resizes such "
        "photos up)",
        "dogs/thin.png": "image 40×200 is smaller than the 48×48 crop (--upscale resizes such "
        "photos up)",
        "LICENSE.txt": "a licence or README file, not an image",
    }


def test_upscale_resizes_small_photos_up_to_the_crop_and_min_side_skips(src, tmp_path):
    small = tmp_path / "small"
    for name in ("cats/tiny.png", "dogs/thin.png", "cats/p01.png"):
        (small / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / name, small / name)
    result = build(small, tmp_path / "up", BuildConfig(crop=48, upscale=True), workers=1)
    assert (result.samples, result.skipped, result.errors) == (3, 0, 0)
    counts = json.loads((tmp_path / "up" / "build.json").read_text())["counts"]
    assert counts["upscaled"] == 2  # tiny and thin; p01 held the crop as it was
    assert (
        "3 gave samples, 2 of them resized up to the crop"
        in (tmp_path / "up" / "README.md").read_text()
    )
    rows = {r["source"]: r for r in pq.read_table(tmp_path / "up" / "manifest.parquet").to_pylist()}
    assert (rows["cats/tiny.png"]["height"], rows["cats/tiny.png"]["width"]) == (48, 48)
    metas = [
        json.loads(sample.members["json"])["source"]
        for shard in sorted((tmp_path / "up").glob("*.tar"))
        for sample in read_shard(shard)
        if sample.members is not None
    ]
    sizes = {meta["path"]: meta for meta in metas}
    assert (sizes["cats/tiny.png"]["height"], sizes["cats/tiny.png"]["width"]) == (48, 64)
    assert (sizes["dogs/thin.png"]["height"], sizes["dogs/thin.png"]["width"]) == (48, 240)
    assert (sizes["cats/p01.png"]["height"], sizes["cats/p01.png"]["width"]) == (64, 80)
    assert verify_shards(tmp_path / "up") == []

    kept = build(
        small, tmp_path / "min", BuildConfig(crop=48, upscale=True, min_side=35), workers=1
    )
    assert (kept.samples, kept.skipped, kept.errors) == (2, 1, 0)
    reason = json.loads((tmp_path / "min" / "skipped.jsonl").read_text())["reason"]
    assert reason == "image 30×40 is smaller than --min-side 35"
    assert "1 skipped (skipped.jsonl), 0 failed" in kept.summary


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"upscale": True}, "--upscale needs --crop"), ({"min_side": 0}, "--min-side must be")],
)
def test_bad_small_photo_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BuildConfig(**kwargs)


def test_a_raw_mosaic_smaller_than_the_crop_is_skipped_and_never_upscaled(tmp_path):
    raw = ROOT / "tests" / "data" / "raw" / "Kodak-DC50-DC50IMG-DC0010S.KDC"
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(raw, src / raw.name)
    result = build(src, tmp_path / "out", BuildConfig(crop=2048, upscale=True), workers=1)
    assert (result.samples, result.skipped, result.errors) == (0, 1, 0)
    reason = json.loads((tmp_path / "out" / "skipped.jsonl").read_text())["reason"]
    assert "smaller than the 2048×2048 crop (a mosaic is never resized up" in reason


# 8: inspect on what users have ---------------------------------------------------------------
@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    """Two shards written by webdataset's own TarWriter: jpg + cls, no rawpairs index."""
    import webdataset as wds

    folder = tmp_path_factory.mktemp("foreign")
    for i in range(2):
        with wds.TarWriter(str(folder / f"other-{i:03d}.tar")) as writer:
            for j in range(3 + i):
                writer.write({"__key__": f"s{i}_{j}", "jpg": b"x" * (100 + j), "cls": b"1"})
    return folder


@pytest.mark.parametrize(
    ("spec", "samples"),
    [
        (["other-000.tar"], 3),
        (["*.tar"], 7),
        (["other-{000..001}.tar"], 7),
        (["other-001.tar", "other-000.tar"], 7),
        (["."], 7),
    ],
)
def test_inspect_summarises_shards_of_other_tools(foreign, monkeypatch, spec, samples):
    monkeypatch.chdir(foreign)
    result = CliRunner().invoke(cli, ["inspect", *spec, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["samples"] == samples and summary["members"] == 2 * samples
    assert summary["extensions"] == {"cls": samples, "jpg": samples}
    assert summary["rawpairs_members"] is False
    text = CliRunner().invoke(cli, ["inspect", *spec]).output
    assert f"{samples} samples ({2 * samples} members)" in text


def test_inspect_verify_on_bare_tars_says_it_needs_the_index(foreign, split_build, tmp_path):
    shard = split_build / "train" / "rawpairs-000000.tar"
    result = CliRunner().invoke(cli, ["inspect", str(shard), "--verify"])
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("--verify needs a rawpairs build folder (index.json")
    assert last.endswith(
        f"in the build folder {shard.parent}: run `rawpairs inspect {shard.parent} --verify`"
    )
    bare = CliRunner().invoke(cli, ["inspect", str(foreign / "other-000.tar"), "--verify"])
    assert bare.exit_code == 2 and bare.output.strip().splitlines()[-1].endswith(
        "holds tar shards only, so the summary above is all that can be checked"
    )
    assert "schema:       every sample has raw.npy, json and rgb.png" in result.output
    mixed = CliRunner().invoke(cli, ["inspect", str(shard.parent), str(foreign / "other-000.tar")])
    assert mixed.exit_code == 2 and "build folders or tar shards, not both" in mixed.output
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(bytes(range(256)) * 12)
    damaged = CliRunner().invoke(cli, ["inspect", str(garbage), str(foreign / "other-000.tar")])
    assert damaged.exit_code == 1
    assert f"problem: {garbage}: unreadable tar: not a tar archive" in damaged.output
    missing = CliRunner().invoke(cli, ["inspect", str(foreign / "nothing-*.tar")])
    assert missing.exit_code == 2 and "no such folder, file or matching shard" in missing.output


def test_inspect_verifies_both_splits_of_a_split_build(split_build):
    result = CliRunner().invoke(cli, ["inspect", str(split_build), "--verify", "--json"])
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.output)
    assert [Path(s["folder"]).name for s in summaries] == ["train", "val"]
    assert all(s["verify"]["ok"] for s in summaries)
    (split_build / "val" / "errors.jsonl").write_text(
        '{"path": "x", "error": "E", "message": "m"}\n'
    )
    try:
        broken = CliRunner().invoke(cli, ["inspect", str(split_build), "--verify"])
        assert broken.exit_code == 1
        assert "build.json counts 0 errors, errors.jsonl: 1" in broken.output
    finally:
        (split_build / "val" / "errors.jsonl").write_text("")


# 9: the dataset card -------------------------------------------------------------------------
def test_every_build_writes_a_deterministic_card(src, split_build, tmp_path):
    card = (split_build / "val" / "README.md").read_text()
    counts = json.loads((split_build / "val" / "build.json").read_text())["counts"]
    assert card.startswith("# RAW–RGB pairs: val split\n")
    assert f"| samples | {counts['samples']} (rgb {counts['samples']}) |" in card
    assert "## Sample format (schema version 2)" in card and "| `cls` |" in card
    assert 'wds.WebDataset("' in card and "FROM 'manifest.parquet'" in card
    assert 'load_dataset("webdataset"' in card
    assert not re.search(r"\b20\d\d-\d\d-\d\d|\d\d:\d\d:\d\d", card)  # no timestamps
    assert "- `LICENSE.txt`" in card
    assert "- `LICENSE.txt`" in (split_build / "train" / "README.md").read_text()
    again = tmp_path / "again"
    build_splits(src, again, BuildConfig(crop=48, labels=True), 0.3, workers=1)
    for name in ("train", "val"):
        assert (again / name / "README.md").read_bytes() == (
            split_build / name / "README.md"
        ).read_bytes()


def test_the_card_is_written_atomically(src, tmp_path, monkeypatch):
    from rawpairs.storage import OutputFolder

    one = tmp_path / "src"
    one.mkdir()
    shutil.copy(src / "cats" / "p01.png", one / "p01.png")
    rename = OutputFolder.rename

    def full_disk(self, old, new):
        if new == "README.md":
            raise OSError(errno.ENOSPC, "No space left on device")
        return rename(self, old, new)

    monkeypatch.setattr(OutputFolder, "rename", full_disk)
    with pytest.raises(BuildOutputError, match="No space left"):
        build(one, tmp_path / "out", BuildConfig(), workers=1)
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "README.md" not in left and not [n for n in left if n.endswith(".partial")]
    monkeypatch.setattr(OutputFolder, "rename", rename)
    assert build(one, tmp_path / "out", BuildConfig(), workers=1).samples == 1
    assert "No licence file was found" in (tmp_path / "out" / "README.md").read_text()


# 10: small conventions -----------------------------------------------------------------------
def test_manifest_byte_offset_locates_each_sample_and_old_manifests_still_verify(
    split_build, tmp_path
):
    folder = tmp_path / "copy"
    shutil.copytree(split_build / "train", folder)
    table = pq.read_table(folder / "manifest.parquet")
    assert "offset" not in table.column_names
    row = table.to_pylist()[0]
    with open(folder / row["shard"], "rb") as f:
        f.seek(row["byte_offset"])
        assert f.read(512)[: len(row["key"])].decode() == row["key"]  # its first tar header
    old = table.rename_columns(["offset" if n == "byte_offset" else n for n in table.column_names])
    pq.write_table(old, folder / "manifest.parquet")
    assert verify_shards(folder) == []


def test_worker_warnings_reach_the_warn_callback_not_the_terminal(tmp_path, monkeypatch, capfd):
    """A library's warning while a source is made (here: a decoder's message) is reported by the
    build's ``warn`` (the CLI writes it above the progress bar), never printed by the worker."""
    import rawpairs.decoder_output as decoder_output
    import rawpairs.sample as sample

    one = tmp_path / "src"
    _photo(one / "a.png", 32, 32, 0)
    read_photo = sample.read_photo

    def chatty(path, max_pixels=None, **kwargs):
        decoder_output.decoder_warnings(["libpng warning: iCCP: known incorrect sRGB profile"])
        return read_photo(path, max_pixels, **kwargs)

    monkeypatch.setattr(sample, "read_photo", chatty)  # the name the sample maker calls
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing escapes the build as a warning either
        result = build(
            one, f"memory:///issue20-warn-{tmp_path.name}", BuildConfig(), warn=lines.append
        )
    assert result.samples == 1
    assert lines == ["a.png: libpng warning: iCCP: known incorrect sRGB profile"]
    assert capfd.readouterr().err == ""


def test_cli_warnings_are_whole_lines_above_the_bar(tmp_path):
    src = tmp_path / "src"
    _photo(src / "a.png", 32, 32, 0)
    (src / "b.png").write_bytes(b"not a png")
    result = CliRunner().invoke(
        cli, ["build", "--src", str(src), "--out", str(tmp_path / "out"), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    pieces = re.split(r"[\r\n]", result.output)
    warned = [p for p in pieces if "warning:" in p]
    assert warned == ["warning: b.png: CorruptInputError: OpenCV cannot decode it as an image"]


def _python_block(text: str, after: str) -> str:
    start = text.index(after)
    return text[start:].split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_webdataset_snippet_runs_without_warnings(split_build):
    """Run as a user would (a fresh interpreter, default warning filters): it prints nothing.
    Without ``shardshuffle=False`` webdataset 1.x warns, so the check can fail."""
    snippet = _python_block((ROOT / "README.md").read_text(), "Read the shards with plain")
    train = split_build / "train"
    last = sorted(train.glob("rawpairs-*.tar"))[-1].name[len("rawpairs-") : -len(".tar")]
    snippet = snippet.replace("shards/train/", "").replace("000003", last)
    check = snippet + (
        "\nassert raw.dtype == np.uint16 and raw.ndim == 2 and meta['schema_version'] == 2\n"
    )

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code], cwd=train, capture_output=True, text=True, timeout=120
        )

    done = run(check)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr
    unset = run(check.replace(", shardshuffle=False", ""))
    assert unset.returncode == 0 and "shardshuffle" in unset.stderr


def test_schema_doc_plain_python_reader_and_the_opencv_bayer_names(split_build, monkeypatch):
    snippet = _python_block((ROOT / "docs" / "schema.md").read_text(), "plain Python")
    code = [line for line in snippet.splitlines() if line.strip() and not line.startswith("#")]
    assert len(code) <= 14
    monkeypatch.chdir(split_build / "train")
    namespace: dict = {}
    exec(compile(snippet, "schema.md", "exec"), namespace)
    assert namespace["raw"].dtype == np.uint16 and namespace["rgb"].dtype == np.uint8
    assert namespace["quick"].shape == namespace["rgb"].shape
    # The table's codes put each colour where the CFA says: a flat (R, G, B) scene comes back.
    for cfa, code in namespace["BAYER_TO_RGB"].items():
        colour = {"R": 1000, "G": 500, "B": 100}
        mosaic = np.zeros((8, 8), np.uint16)
        for i, channel in enumerate(cfa):
            mosaic[i // 2 :: 2, i % 2 :: 2] = colour[channel]
        assert tuple(cv2.cvtColor(mosaic, code)[4, 4]) == (1000, 500, 100), cfa


def test_the_demo_trains_on_train_and_evaluates_on_held_out_val(tmp_path):
    """``make demo`` builds a split; val holds photos that train does not (its evaluation is
    on images the student never saw), and each card names the licence file."""
    from examples import demo

    result = CliRunner().invoke(demo.main, ["--out", str(tmp_path), "--workers", "1"])
    assert result.exit_code == 0, result.output
    shards = tmp_path / "shards"
    train, val = _all_inputs(shards / "train"), _all_inputs(shards / "val")
    assert _sources(shards / "val") == {"photos/retina.jpg", "photos/immunohistochemistry.png"}
    assert train & val == {"LICENSE.txt"}
    for name in ("train", "val"):
        assert "- `LICENSE.txt`" in (shards / name / "README.md").read_text()
    assert (tmp_path / "preview.png").exists()


def test_a_build_made_before_the_new_options_resumes_as_complete(src, tmp_path):
    one = tmp_path / "src"
    one.mkdir()
    shutil.copy(src / "cats" / "p01.png", one / "p01.png")
    out = tmp_path / "out"
    build(one, out, BuildConfig(), workers=1)
    header = json.loads((out / "build.json").read_text())
    for name in ("min_side", "upscale"):  # what an older rawpairs wrote
        del header["config"][name]
    (out / "build.json").write_text(json.dumps(header))
    assert build(one, out, BuildConfig(), workers=1).already_complete
    with pytest.raises(BuildError, match="different config"):
        build(one, out, BuildConfig(crop=32, upscale=True), workers=1)


def _fits(value, kind, where: str) -> None:
    """``value`` (a sample's json) has exactly the keys and types of ``kind`` (JSON_TYPES)."""
    if value is None:
        return  # null where a field does not apply: every reader's type admits it
    if isinstance(kind, dict):
        assert isinstance(value, dict) and set(value) == set(kind), where
        for name, sub in kind.items():
            _fits(value[name], sub, f"{where}.{name}")
    elif isinstance(kind, list):
        assert isinstance(value, list), where
        for item in value:
            _fits(item, kind[0], f"{where}[]")
    else:
        types = {"float64": (float, int), "int64": (int,), "string": (str,)}[kind]
        assert isinstance(value, types) and not isinstance(value, bool), (where, value)


def test_json_types_describe_every_sample_of_photos_and_camera_raw(tmp_path):
    """``hf_features`` is built from JSON_TYPES: it must match what the builder writes for both
    kinds (a photo's nulls included), or Hugging Face datasets refuses the shards."""
    from rawpairs.schema import JSON_TYPES

    src = tmp_path / "src"
    _photo(src / "a.png", 32, 40, 0)
    shutil.copy(ROOT / "tests" / "data" / "raw" / "Kodak-DC50-DC50IMG-DC0010S.KDC", src)
    build(src, tmp_path / "out", BuildConfig(crop=32), workers=1)
    kinds = set()
    for shard in sorted((tmp_path / "out").glob("*.tar")):
        for sample in read_shard(shard):
            meta = json.loads(sample.members["json"])
            _fits(meta, JSON_TYPES, "json")
            kinds.add(meta["source"]["kind"])
    assert kinds == {"rgb", "raw"}


def _card_block(folder: Path, language: str, index: int = 0) -> str:
    blocks = re.findall(r"```(\w+)\n(.*?)```", (folder / "README.md").read_text(), re.S)
    return [body for lang, body in blocks if lang == language][index]


def test_the_cards_webdataset_snippet_runs_silently(split_build):
    code = _card_block(split_build / "train", "python") + "\nassert raw.dtype.name == 'uint16'\n"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=split_build / "train", capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_cards_duckdb_queries_run(split_build):
    duckdb = pytest.importorskip("duckdb")  # not a dependency: checked where it is installed
    queries = _card_block(split_build / "train", "sql").strip().rstrip(";").split(";")
    with duckdb.connect() as db:
        db.execute(f"SET file_search_path = '{split_build / 'train'}'")
        assert db.sql(queries[0]).fetchall()
        db.sql(queries[1]).fetchall()


def test_the_cards_hugging_face_snippet_loads_photos_and_raw(split_build, monkeypatch):
    pytest.importorskip("datasets")  # not a dependency: checked where it is installed
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(split_build / "train")
    namespace: dict = {}
    exec(_card_block(split_build / "train", "python", 1), namespace)
    assert namespace["ds"].num_rows == pq.read_metadata("manifest.parquet").num_rows


def test_an_at_load_builds_card_offers_readers_that_work_on_it(src, tmp_path):
    """Photos of an at-load build have no raw.npy: the card's webdataset snippet still runs,
    and it does not offer the Hugging Face loader (which needs the same members per sample)."""
    one = tmp_path / "src"
    one.mkdir()
    shutil.copy(src / "cats" / "p01.png", one / "p01.png")
    out = tmp_path / "out"
    build(one, out, BuildConfig(crop=48, unprocess="at_load"), workers=1)
    card = (out / "README.md").read_text()
    assert "load_dataset" not in card and "is not offered for such a build" in card
    code = _card_block(out, "python") + "\nassert raw is None and rgb.shape == (48, 48, 3)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_inspect_counts_the_samples_of_each_class(tmp_path):
    """Item 4: a labelled build's summary counts samples per class, by folder name."""
    src = tmp_path / "src"
    for i, (name, n) in enumerate((("apple", 2), ("cherry", 1))):
        for j in range(n):
            _photo(src / name / f"{j}.png", 32, 32, 10 * i + j)
    out = tmp_path / "out"
    build(src, out, BuildConfig(labels=True), workers=1)
    summary = summarize(out)
    assert summary["classes"] == {"apple": 2, "cherry": 1}
    text = CliRunner().invoke(cli, ["inspect", str(out)]).output
    assert "classes:     {'apple': 2, 'cherry': 1}" in text
    plain = tmp_path / "plain"
    build(src, plain, BuildConfig(), workers=1)
    assert summarize(plain)["classes"] is None


def test_preview_labels_fit_their_panel():
    """Item 3: a preview label wider than its panel is cut (ending '..'), never drawn past it."""
    import cv2

    from rawpairs.preview import _fit_text

    width = 96
    long = "RGB holidays/rome/colosseum_at_sunset_0001.jpg"
    cut = _fit_text(long, width)
    assert cut.endswith("..") and long.startswith(cut[:-2])
    assert cv2.getTextSize(cut, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 3)[0][0] <= width
    assert _fit_text("RGB a.jpg", width) == "RGB a.jpg"
