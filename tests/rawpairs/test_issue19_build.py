"""Issue 19: the build never writes, reads or reports the wrong thing without a word.

Each test failed on the code before its fix (docs/guarantees.md lists them)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from skimage import data

from rawpairs.build import build
from rawpairs.cli import main as cli
from rawpairs.config import BuildConfig
from rawpairs.sample import sample_key
from rawpairs.tarwalk import read_shard


def _photo(name: str, side: int = 64) -> np.ndarray:
    rgb = getattr(data, name)()[..., :3]
    scale = side / max(rgb.shape[:2])
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _write(path: Path, name: str = "chelsea", side: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(_photo(name, side), cv2.COLOR_RGB2BGR))
    return path


def _keys(out: Path) -> list[str]:
    return [s.key for shard in sorted(out.glob("rawpairs-*.tar")) for s in read_shard(shard)]


# Item 1: keys valid for every reader --------------------------------------------------------

LONG = (
    "Holidays/Italy_ (Rome)/Colosseum and Forum at sunset with the family, "
    + "x" * 17
    + " eveni.jpg"
)


@pytest.mark.parametrize(
    "relpath",
    [
        LONG,
        "a/" + "_" * 100 + "b.jpg",
        "___.jpg",
        "日本語の写真.jpg",
        "__init__",
        "-/_./__",
        "photo.with.dots.png",
    ],
)
def test_a_key_never_starts_with_an_underscore_and_has_no_dot(relpath):
    for crop in (-1, 0, 12):
        key = sample_key(relpath, crop)
        assert not key.startswith("_") and "." not in key and "/" not in key, key
        assert key[0].isalnum(), key


def test_ordinary_keys_are_unchanged():
    """Keys of ordinary names are what they were (so their builds stay byte-identical)."""
    assert sample_key("cats/chelsea.png", 0) == "cats_chelsea_png_b6c7abcf_c0000"
    assert sample_key("a b/c (1).jpg", 3).startswith("a_b_c_1_jpg_")


def test_a_long_path_is_one_sample_for_every_reader(tmp_path):
    """The build said 2 samples, verify found 1, training dropped one without a word."""
    import webdataset as wds

    src = tmp_path / "src"
    _write(src / LONG)
    _write(src / "other.png", "coffee")
    result = build(src, tmp_path / "out", BuildConfig(), workers=1, sources_per_shard=2)
    assert result.samples == 2
    keys = _keys(tmp_path / "out")
    assert len(keys) == 2 and not any(k.startswith("_") for k in keys)
    shard = str(next((tmp_path / "out").glob("rawpairs-*.tar")))
    assert len(list(wds.WebDataset(shard, shardshuffle=False))) == 2
    runner = CliRunner()
    verified = runner.invoke(cli, ["inspect", str(tmp_path / "out"), "--verify", "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["samples"] == 2


# Item 5: an edit that keeps the size (and the mtime) is seen ---------------------------------


OPTS = ("--workers", "1", "--sources-per-shard", "1")


def _tiff(path: Path, rgb: np.ndarray) -> None:
    """An uncompressed TIFF: another image of the same shape has exactly the same size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), bgr, [cv2.IMWRITE_TIFF_COMPRESSION, 1])


def test_an_edit_that_keeps_size_and_mtime_is_refused_then_rebuilt_with_overwrite(tmp_path):
    import os

    src, out = tmp_path / "src", tmp_path / "out"
    photo = _photo("chelsea")
    _tiff(src / "a.tif", photo)
    _write(src / "b.png", "coffee")
    first = build(src, out, BuildConfig(), workers=1, sources_per_shard=1)
    assert first.samples == 2
    again = build(src, out, BuildConfig(), workers=1, sources_per_shard=1)
    assert again.already_complete
    before = (src / "a.tif").stat()
    _tiff(src / "a.tif", np.ascontiguousarray(photo[::-1]))  # flipped: same size, new content
    os.utime(src / "a.tif", ns=(before.st_atime_ns, before.st_mtime_ns))  # as exiftool -P does
    assert (src / "a.tif").stat().st_size == before.st_size
    old_shard = (out / "rawpairs-000000.tar").read_bytes()
    runner = CliRunner()
    refused = runner.invoke(cli, ["build", "--src", str(src), "--out", str(out), "--quiet", *OPTS])
    assert refused.exit_code == 2, refused.output
    message = refused.output.strip().splitlines()[-1]
    assert "content" in message and "--overwrite" in message, message
    assert (out / "rawpairs-000000.tar").read_bytes() == old_shard  # nothing touched
    rebuilt = runner.invoke(
        cli, ["build", "--src", str(src), "--out", str(out), "--quiet", "--overwrite", *OPTS]
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "already complete" not in rebuilt.output
    assert (out / "rawpairs-000000.tar").read_bytes() != old_shard
    build(src, tmp_path / "fresh", BuildConfig(), workers=1)
    assert (out / "rawpairs-000000.tar").read_bytes() == (
        tmp_path / "fresh" / "rawpairs-000000.tar"
    ).read_bytes()


# Item 6: one class map across builds ---------------------------------------------------------


def _labelled(root: Path, classes: tuple[str, ...]) -> Path:
    for i, name in enumerate(classes):
        _write(root / name / f"{name}.png", ("chelsea", "coffee", "rocket")[i % 3], 48)
    return root


def _labels_by_class(out: Path) -> dict[str, int]:
    from rawpairs.schema import decode_sample

    found = {}
    for shard in sorted(out.glob("rawpairs-*.tar")):
        for s in read_shard(shard):
            d = decode_sample(s.members, str(shard), s.key)
            found[d.meta.source.path.split("/")[0]] = d.label
    return found


def test_labelled_builds_write_classes_json_and_class_map_keeps_the_ids(tmp_path):
    from rawpairs.classmap import read_class_map

    train = _labelled(tmp_path / "train", ("apple", "banana", "cherry"))
    val = _labelled(tmp_path / "val", ("apple", "cherry"))
    runner = CliRunner()
    args = ["--labels", "folder", "--quiet", *OPTS]
    made = runner.invoke(cli, ["build", "--src", str(train), "--out", str(tmp_path / "t"), *args])
    assert made.exit_code == 0, made.output
    expected = {"apple": 0, "banana": 1, "cherry": 2}
    assert json.loads((tmp_path / "t" / "classes.json").read_text()) == expected
    assert read_class_map(tmp_path / "t") == expected
    # Without --class-map a build numbers its own folders (and says so in classes.json) ...
    own = runner.invoke(cli, ["build", "--src", str(val), "--out", str(tmp_path / "v0"), *args])
    assert own.exit_code == 0, own.output
    assert read_class_map(tmp_path / "v0") == {"apple": 0, "cherry": 1}
    # ... with it, the ids are the map's: cherry is 2 in both builds.
    for given in (tmp_path / "t" / "classes.json", tmp_path / "t"):
        out = tmp_path / f"v-{given.name}"
        cmd = ["build", "--src", str(val), "--out", str(out), "--class-map", str(given), *args]
        made = runner.invoke(cli, cmd)
        assert made.exit_code == 0, made.output
        assert _labels_by_class(out) == {"apple": 0, "cherry": 2}
        assert read_class_map(out) == expected
    assert read_class_map(tmp_path / "t") != read_class_map(tmp_path / "v0")


def test_class_map_errors_are_one_line_exit_2(tmp_path):
    val = _labelled(tmp_path / "val", ("apple", "durian"))
    runner = CliRunner()
    cases = {
        "no class for folder 'durian'": {"apple": 0, "cherry": 2},
        "JSON object": [1, 2],
        "must be an integer": {"apple": "0", "durian": 1},
        "share id": {"apple": 1, "durian": 1},
        ">= 0": {"apple": -1, "durian": 1},
    }
    for expected, content in cases.items():
        path = tmp_path / "map.json"
        path.write_text(json.dumps(content))
        out = tmp_path / "out"
        cmd = ["build", "--src", str(val), "--out", str(out), "--labels", "folder"]
        result = runner.invoke(cli, [*cmd, "--class-map", str(path), "--quiet"])
        assert result.exit_code == 2, (expected, result.output)
        last = result.output.strip().splitlines()[-1]
        assert expected in last, last
        assert not out.exists() or not list(out.glob("rawpairs-*.tar"))
    path.write_text(json.dumps({"apple": 0, "durian": 1}))
    no_labels = runner.invoke(
        cli, ["build", "--src", str(val), "--out", str(tmp_path / "o2"), "--class-map", str(path)]
    )
    assert no_labels.exit_code == 2 and "--labels folder" in no_labels.output


def test_read_class_map_of_unlabelled_and_older_builds(tmp_path):
    from rawpairs.classmap import read_class_map

    src = _labelled(tmp_path / "src", ("apple", "banana"))
    build(src, tmp_path / "plain", BuildConfig(), workers=1)
    assert read_class_map(tmp_path / "plain") is None
    assert not (tmp_path / "plain" / "classes.json").exists()
    build(src, tmp_path / "old", BuildConfig(labels=True), workers=1)
    (tmp_path / "old" / "classes.json").unlink()  # a build made before classes.json existed
    assert read_class_map(tmp_path / "old") == {"apple": 0, "banana": 1}
    (tmp_path / "old" / "classes.json").write_text('{"apple": true}')
    with pytest.raises(ValueError, match=r"classes\.json"):
        read_class_map(tmp_path / "old")


def test_verify_checks_classes_json(tmp_path):
    src = _labelled(tmp_path / "src", ("apple", "banana"))
    out = tmp_path / "out"
    build(src, out, BuildConfig(labels=True), workers=1)
    runner = CliRunner()
    ok = runner.invoke(cli, ["inspect", str(out), "--verify"])
    assert ok.exit_code == 0, ok.output
    (out / "classes.json").write_text('{"apple": 1, "banana": 0}')
    bad = runner.invoke(cli, ["inspect", str(out), "--verify"])
    assert bad.exit_code == 1 and "classes.json: differs" in bad.output
    (out / "classes.json").write_text('{"apple": 0, "banana": 0}')
    bad = runner.invoke(cli, ["inspect", str(out), "--verify"])
    assert bad.exit_code == 1 and "share id 0" in bad.output


# Item 7: every sample's json has the same keys at every level ------------------------------


def _paths(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _paths(v, prefix + k + ".")
    return out


RAW_ONLY = (
    "source.make",
    "source.model",
    "source.bin_factor",
    "source.pixel_aspect",
    "render.demosaic",
    "camera.provenance.digital_gain",
)


@pytest.fixture(scope="module")
def mixed_json(tmp_path_factory) -> list[dict]:
    """The json of every sample of a build of a photo, a camera RAW and a LibRaw render."""
    root = tmp_path_factory.mktemp("mixed7")
    src = root / "src"
    _write(src / "a_photo.png", "chelsea", 48)
    raw = Path(__file__).parents[1] / "data" / "raw" / "Kodak-DC50-DC50IMG-DC0010S.KDC"
    (src / "b_raw.kdc").write_bytes(raw.read_bytes())
    metas = []
    for name, config in (("ours", BuildConfig()), ("libraw", BuildConfig(render="libraw"))):
        out = root / name
        result = build(src, out, config, workers=1, sources_per_shard=1)
        assert result.samples == 2, result
        for shard in sorted(out.glob("rawpairs-*.tar")):
            metas += [json.loads(s.members["json"]) for s in read_shard(shard)]
    return metas


def test_every_sample_json_has_the_same_keys(mixed_json):
    first = _paths(mixed_json[0])
    assert first >= set(RAW_ONLY)
    for meta in mixed_json[1:]:
        assert _paths(meta) == first
    photo = mixed_json[0]
    assert photo["source"]["kind"] == "rgb" and photo["source"]["make"] is None


def test_plain_readers_infer_one_schema_from_the_first_sample(mixed_json):
    """The schema pyarrow (the JSON reader under Hugging Face datasets) infers from the first
    sample (a photo) has every field of every later sample (a camera RAW): none is dropped."""
    import pyarrow as pa
    import pyarrow.json as pj

    def fields(t, prefix=""):
        out = set()
        for f in t:
            out.add(prefix + f.name)
            if pa.types.is_struct(f.type):
                out |= fields(f.type, prefix + f.name + ".")
        return out

    first = pj.read_json(io.BytesIO(json.dumps(mixed_json[0]).encode())).schema
    assert mixed_json[0]["source"]["kind"] == "rgb"
    for meta in mixed_json[1:]:
        assert _paths(meta) <= fields(first), sorted(_paths(meta) - fields(first))
    lines = "".join(json.dumps(m) + "\n" for m in mixed_json).encode()
    rows = pj.read_json(io.BytesIO(lines)).to_pylist()
    for meta, row in zip(mixed_json, rows, strict=True):
        for path in RAW_ONLY:
            a, b = meta, row
            for part in path.split("."):
                a, b = a[part], b[part]
            assert a == b, path


def test_json_of_the_previous_schema_version_is_still_read(mixed_json):
    from rawpairs.metadata import SampleMeta

    def strip_nulls(d):
        return {
            k: strip_nulls(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None
        }

    for meta in mixed_json:
        old = {**strip_nulls(meta), "schema_version": 1}
        assert SampleMeta.from_dict(old) == SampleMeta.from_dict(meta)


# Item 8: shard numbers are contiguous when a whole group fails -------------------------------


def _gappy_src(root: Path) -> Path:
    """Groups of one source: 0 good, 1 bad, 2 bad, 3 good, 4 good (sorted names)."""
    _write(root / "a.png", "chelsea", 48)
    (root / "b.png").write_bytes(b"not a png")
    (root / "c.txt").write_text("not an image")
    _write(root / "d.png", "coffee", 48)
    _write(root / "e.png", "rocket", 48)
    return root


def _shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("rawpairs-*.tar"))}


def test_shard_numbers_are_contiguous_when_groups_fail(tmp_path):
    import webdataset as wds

    src = _gappy_src(tmp_path / "src")
    out = tmp_path / "out"
    result = build(src, out, BuildConfig(), workers=1, sources_per_shard=1)
    assert result.samples == 3 and result.errors == 2 and result.shards == 3
    expected = [f"rawpairs-{i:06d}.tar" for i in range(3)]
    assert list(_shards(out)) == expected
    index = json.loads((out / "index.json").read_text())
    assert [s["name"] for s in index["shards"]] == expected
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [(r["shard"], r["source"]) for r in rows] == list(
        zip(expected, ("a.png", "d.png", "e.png"), strict=True)
    )
    pattern = str(out / "rawpairs-{000000..000002}.tar")  # the pattern the docs show
    assert len(list(wds.WebDataset(pattern, shardshuffle=False))) == 3
    verified = CliRunner().invoke(cli, ["inspect", str(out), "--verify"])
    assert verified.exit_code == 0, verified.output
    assert not (out / ".state").exists()


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_a_kill_while_shards_are_renumbered_then_rerun_equals_uninterrupted(
    tmp_path, monkeypatch, fail_at
):
    """Renumbering renames shards (through .state/, journalled): a build stopped after any
    rename resumes to the same bytes, never a shard under another's number."""
    from rawpairs.storage import OutputFolder

    src = _gappy_src(tmp_path / "src")
    build(src, tmp_path / "clean", BuildConfig(), workers=1, sources_per_shard=1)
    clean = _shards(tmp_path / "clean")
    real_rename, calls = OutputFolder.rename, []

    def dying_rename(self, a, b):
        if a.endswith(".tar") and not a.endswith(".partial"):
            calls.append((a, b))
            if len(calls) == fail_at:
                raise KeyboardInterrupt  # stands for kill -9 between two renames
        return real_rename(self, a, b)

    monkeypatch.setattr(OutputFolder, "rename", dying_rename)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(src, out, BuildConfig(), workers=1, sources_per_shard=1)
    monkeypatch.setattr(OutputFolder, "rename", real_rename)
    again = build(src, out, BuildConfig(), workers=1, sources_per_shard=1)
    assert again.samples == 3 and again.shards == 3
    assert _shards(out) == clean
    for name in ("index.json", "manifest.parquet"):
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


# Items 12 and 14 (build side): options refused up front, honest rates -----------------------


@pytest.mark.parametrize("option", ["--src", "--out"])
@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_src_or_out_is_exit_2(tmp_path, monkeypatch, option, value):
    """``--src ""`` built the current directory (README promises exit 2)."""
    cwd = tmp_path / "cwd"
    _write(cwd / "photo.png")
    monkeypatch.chdir(cwd)
    args = {"--src": str(cwd), "--out": str(tmp_path / "out"), option: value}
    result = CliRunner().invoke(cli, ["build", *[x for kv in args.items() for x in kv], "--quiet"])
    assert result.exit_code == 2, result.output
    assert option in result.output.strip().splitlines()[-1]
    assert sorted(p.name for p in cwd.iterdir()) == ["photo.png"]
    assert not (tmp_path / "out").exists()


def test_a_crop_larger_than_max_side_is_refused_before_any_input_is_read(tmp_path, monkeypatch):
    import rawpairs.sample

    _write(tmp_path / "src" / "photo.png")
    monkeypatch.setattr(rawpairs.sample, "make_samples", None)  # reading an input would fail
    with pytest.raises(ValueError, match=r"--crop 128 .* --max-side 100"):
        BuildConfig(crop=128, max_side=100)
    BuildConfig(crop=100, max_side=100)  # fits (a square image)
    cmd = ["build", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, [*cmd, "--max-side", "100", "--crop", "128"])
    assert result.exit_code == 2 and "--max-side 100" in result.output
    assert not (tmp_path / "out").exists()


def test_a_resumed_build_reports_the_rate_of_its_own_work(tmp_path):
    """A resumed build said "1102 samples/s": the samples of the kept shards over the seconds
    of the resume."""
    src = _gappy_src(tmp_path / "src")
    out = tmp_path / "out"

    def stop_after_two(done, total, written, errors):
        if written >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(src, out, BuildConfig(), workers=1, sources_per_shard=1, progress=stop_after_two)
    resumed = build(src, out, BuildConfig(), workers=1, sources_per_shard=1)
    assert resumed.samples == 3 and resumed.resumed_samples == 2
    rate = (resumed.samples - resumed.resumed_samples) / resumed.seconds
    assert f"({rate:.1f} samples/s" in resumed.summary
    assert "2 kept from the previous run" in resumed.summary


# Guarantees whose tests did not prove them -------------------------------------------------


def test_error_messages_are_cut_at_300_characters(tmp_path):
    """errors.jsonl messages are one line of at most MESSAGE_LIMIT (300) characters."""
    from rawpairs.errors import CorruptInputError
    from rawpairs.sample import MESSAGE_LIMIT, Source, error_record

    source = Source(path=str(tmp_path / "x.png"), relpath="x.png", kind="rgb")
    long = CorruptInputError(source.path, "bad\nthing " * 200)
    record = error_record(source, long)
    assert MESSAGE_LIMIT == 300
    assert len(record["message"]) == 300 and record["message"].endswith("…")
    assert "\n" not in record["message"] and str(tmp_path) not in record["message"]
    short = error_record(source, CorruptInputError(source.path, "short"))
    assert short["message"] == "short"
