"""Issue 19 item 2: ``--shards`` names are paths, not glob patterns, unless they hold no file or
folder of that name (``distill.shardlist.resolve_shards``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.shardlist import resolve_shards


def _shard(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # only names matter here
    return path


def test_folder_names_with_glob_characters_are_taken_literally(tmp_path):
    a = _shard(tmp_path / "set[ab]" / "rawpairs-000000.tar")
    _shard(tmp_path / "seta" / "rawpairs-000000.tar")  # what set[ab] matches as a pattern
    assert resolve_shards(str(tmp_path / "set[ab]")) == [str(a)]
    v1 = _shard(tmp_path / "ds[v1]" / "rawpairs-000000.tar")
    assert resolve_shards(str(tmp_path / "ds[v1]")) == [str(v1)]
    star = _shard(tmp_path / "x*y?" / "a.tar")
    _shard(tmp_path / "xZyQ" / "b.tar")
    assert resolve_shards(str(tmp_path / "x*y?")) == [str(star)]
    assert resolve_shards(f"file://{tmp_path / 'set[ab]'}") == [str(a)]


def test_a_file_name_with_glob_characters_is_taken_literally(tmp_path):
    literal = _shard(tmp_path / "shard[1].tar")
    _shard(tmp_path / "shard1.tar")
    assert resolve_shards(str(literal)) == [str(literal)]


def test_patterns_still_expand_when_no_such_path_exists(tmp_path):
    a = _shard(tmp_path / "seta" / "x.tar")
    b = _shard(tmp_path / "seta" / "y.tar")
    assert resolve_shards(str(tmp_path / "set?" / "*.tar")) == [str(a), str(b)]
    with pytest.raises(FileNotFoundError):
        resolve_shards(str(tmp_path / "nothing[ab]"))
    shutil.rmtree(tmp_path / "seta")
