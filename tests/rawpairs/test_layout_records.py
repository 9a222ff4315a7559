"""The output layout (one module names every file) and the typed record a group hands back."""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest

from rawpairs.config import BuildConfig
from rawpairs.group import write_group
from rawpairs.layout import (
    OUTPUT_FILES,
    STATE_DIR,
    is_ours,
    is_partial,
    partial_name,
    record_index,
    record_name,
    shard_name,
    split_folder,
    staged_name,
)
from rawpairs.records import ShardRecord
from rawpairs.sample import Source
from rawpairs.schedule import PoolEvent
from rawpairs.storage import OutputFolder

RECORD = ShardRecord(
    name="rawpairs-000003.tar",
    size=10240,
    sha256="ab" * 32,
    sources=2,
    rows=[{"key": "a-0", "cls": 1}],
    positions=[{"index": 0, "byte_offset": 0, "size": 9216}],
    errors=[{"path": "b.png", "error": "CorruptInputError", "message": "b.png: truncated"}],
    skipped=[{"path": "LICENSE", "reason": "a licence or README file, not an image"}],
    warnings=[{"path": "a.png", "message": "a warning"}],
    upscaled=["a.png"],
)


def test_names_follow_one_pattern_and_parse_back():
    assert shard_name(42) == "rawpairs-000042.tar"
    assert record_name(42) == f"{STATE_DIR}/shard-000042.json"
    for index in (0, 7, 999_999):
        folder, _, name = record_name(index).partition("/")
        assert folder == STATE_DIR and record_index(name) == index
    for other in ("notes.txt", "shard-12.json", "shard-000001.json.partial", "renumber.json"):
        assert record_index(other) is None
    assert staged_name(5).startswith(f"{STATE_DIR}/") and staged_name(5).endswith(".tar")
    assert split_folder("s3://bucket/out/", "val") == "s3://bucket/out/val"
    assert split_folder("out", "train") == "out/train"


def test_temporary_names_are_recognised_and_only_ours_are_deleted():
    """What ``--overwrite`` and the partial clean-up may delete: our outputs and their
    temporary names, never a user's file that merely looks similar."""
    for name in (shard_name(3), *OUTPUT_FILES):
        temp = partial_name(name)
        assert temp != partial_name(name)  # unique to each writer
        assert is_partial(temp) and is_ours(temp) and is_ours(name)
    assert partial_name(record_name(1)).startswith(f"{STATE_DIR}/.shard-000001.json.")
    assert is_ours(STATE_DIR)
    for foreign in ("photo.jpg", "rawpairs-1.tar", ".rawpairs-000001.tar.partial", ".x.partial",
                    ".photo.jpg.12-0123abcd.partial", "rawpairs-000001.tar.bak"):  # fmt: skip
        assert not is_ours(foreign), foreign
    assert is_partial(".photo.jpg.12-0123abcd.partial")  # a temporary name, but not ours


def test_record_file_bytes_are_pinned():
    """The record on disk: compact JSON, keys sorted at every level (resumed builds of older
    versions read it; the byte-identity check covers the shards made from it)."""
    data = json.loads(RECORD.to_json())
    assert RECORD.to_json() == json.dumps(data, sort_keys=True).encode("utf-8")
    assert RECORD.to_json().startswith(b'{"errors": [{"error": "CorruptInputError", "message"')
    assert list(data) == sorted(data) == [
        "errors", "name", "positions", "rows", "sha256", "size", "skipped", "sources",
        "upscaled", "warnings",
    ]  # fmt: skip


def test_record_round_trips_through_json_and_pickle():
    assert ShardRecord.from_json(RECORD.to_json()) == RECORD
    assert ShardRecord.from_json(RECORD.to_json().decode()) == RECORD
    assert pickle.loads(pickle.dumps(RECORD)) == RECORD
    empty = ShardRecord(name=None, size=0, sha256=None, sources=1)
    assert ShardRecord.from_json(empty.to_json()) == empty and empty.samples == 0
    renamed = RECORD.renamed(shard_name(0))
    assert renamed.name == "rawpairs-000000.tar" and RECORD.name == "rawpairs-000003.tar"
    assert renamed.rows == RECORD.rows and renamed.samples == 1


def test_an_older_record_reads_with_todays_names():
    old = {
        "name": "rawpairs-000000.tar",
        "size": 2048,
        "sha256": "cd" * 32,
        "rows": [{"key": "a-0"}],
        "positions": [{"index": 0, "offset": 0, "size": 1024}],
        "errors": [],
    }
    record = ShardRecord.from_json(json.dumps(old))
    assert record.positions == [{"index": 0, "byte_offset": 0, "size": 1024}]
    assert record.skipped == record.warnings == record.upscaled == [] and record.sources == 0


@pytest.mark.parametrize(
    ("text", "error"),
    [('{"name": "rawpairs-000000.tar", "si', ValueError), ("[1, 2]", TypeError),
     ('{"name": null}', KeyError)],
)  # fmt: skip
def test_an_incomplete_record_raises(text, error):
    """What resume catches to forget a record cut by a power loss."""
    with pytest.raises(error):
        ShardRecord.from_json(text)


def test_write_group_returns_the_record_it_wrote(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(
        str(src / "a.png"), np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    )
    (src / "b.png").write_bytes(b"not a png")
    sources = [
        Source(str(src / n), n, "rgb", size=(src / n).stat().st_size) for n in ("a.png", "b.png")
    ]
    folder = OutputFolder(tmp_path / "out")
    folder.makedirs()
    record = write_group(folder, 4, sources, BuildConfig(seed=1, crop=32, crops=2))
    on_disk = (tmp_path / "out" / record_name(4)).read_bytes()
    assert on_disk == record.to_json() and ShardRecord.from_json(on_disk) == record
    assert record.name == shard_name(4) and record.samples == 2 and record.sources == 2
    assert [e["path"] for e in record.errors] == ["b.png"]
    assert (tmp_path / "out" / record.name).stat().st_size == record.size


def test_pool_events_cross_a_pipe_as_themselves():
    for event in PoolEvent:
        assert pickle.loads(pickle.dumps(event)) is event
