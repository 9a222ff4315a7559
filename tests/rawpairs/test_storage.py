"""Builds from and to fsspec URLs: the same bytes as local folders, atomic publishing, resume."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time

import cv2
import fsspec
import pyarrow.parquet as pq
import pytest
from skimage import data

from rawpairs.build import build
from rawpairs.config import BuildConfig
from rawpairs.errors import BuildError
from rawpairs.shards import ShardWriter
from rawpairs.storage import (
    LOCK_STALE_S,
    REMOTE_LOCK,
    FolderLockedError,
    OutputFolder,
    is_url,
)

CONFIG = BuildConfig(seed=2, crop=48, crops=2)


@pytest.fixture()
def photos(tmp_path):
    src = tmp_path / "src"
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        rgb = cv2.resize(getattr(data, name)(), (96, 72), interpolation=cv2.INTER_AREA)
        (src / f"set{i % 2}").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src / f"set{i % 2}" / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (src / "notes.txt").write_text("not an image")
    return src


@pytest.fixture()
def memory_src(photos):
    fs = fsspec.filesystem("memory")
    root = f"/src-{id(photos)}"
    for path in photos.rglob("*"):
        if path.is_file():
            fs.pipe_file(f"{root}/{path.relative_to(photos).as_posix()}", path.read_bytes())
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def _memory_tree(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    return {p[len(root) + 1 :]: fs.cat_file(p) for p in fs.find(root)}


def test_is_url():
    assert is_url("s3://bucket/x") and is_url("file:///tmp") and not is_url("/tmp/x")


def test_remote_source_and_output_equal_a_local_build(photos, memory_src, tmp_path):
    local = build(photos, tmp_path / "local", CONFIG, workers=1, sources_per_shard=1)
    out = f"memory:///out-{tmp_path.name}"
    remote = build(memory_src, out, CONFIG, workers=1, sources_per_shard=1)
    assert (remote.samples, remote.errors) == (local.samples, local.errors) == (6, 1)
    tree = _memory_tree(out)
    for name, payload in tree.items():
        if name.endswith(".tar") or name in ("index.json", "errors.jsonl"):
            assert payload == (tmp_path / "local" / name).read_bytes(), name
    assert not [n for n in tree if n.endswith(".partial") or n.startswith(".state")]
    manifest = pq.read_table(fsspec.open(f"{out}/manifest.parquet").open()).to_pylist()
    assert manifest == pq.read_table(tmp_path / "local" / "manifest.parquet").to_pylist()
    fsspec.filesystem("memory").rm(out.removeprefix("memory://"), recursive=True)


def test_interrupted_remote_build_resumes(photos, tmp_path):
    out = f"memory:///resume-{tmp_path.name}"

    def stop(done, total, written, errors):
        if written >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(photos, out, CONFIG, workers=1, sources_per_shard=1, progress=stop)
    tree = _memory_tree(out)
    assert "rawpairs-000001.tar" in tree and "manifest.parquet" not in tree  # 0: notes.txt
    assert not [n for n in tree if n.endswith(".partial")]
    build(photos, out, CONFIG, workers=1, sources_per_shard=1)
    build(photos, tmp_path / "clean", CONFIG, workers=1, sources_per_shard=1)
    assert _memory_tree(out)["index.json"] == (tmp_path / "clean" / "index.json").read_bytes()
    fsspec.filesystem("memory").rm(out.removeprefix("memory://"), recursive=True)


def test_file_urls_work_with_worker_processes(photos, tmp_path, monkeypatch):
    import rawpairs.pool

    monkeypatch.setattr(rawpairs.pool, "WORKERS_WORTH_S", 0.0)  # however small the build

    def progress(done, total, written, errors):
        deadline = time.monotonic() + 60
        while done == 3 and not multiprocessing.active_children():
            assert time.monotonic() < deadline, "no worker started"
            time.sleep(0.05)  # the last source waits for a worker
        time.sleep(0.5 if done == 3 else 0)

    out = f"file://{tmp_path / 'out'}"
    result = build(
        f"file://{photos}", out, CONFIG, workers=2, sources_per_shard=1, progress=progress
    )
    assert result.samples == 6 and result.stats["groups_here"] == 3
    assert json.loads((tmp_path / "out" / "build.json").read_text())["status"] == "complete"


def test_unknown_protocol_is_a_clear_error(photos):
    with pytest.raises(BuildError, match="--src nosuch://x"):
        build("nosuch://x", "/tmp/never", CONFIG)
    with pytest.raises(BuildError, match="--out nosuch://y"):
        build(photos, "nosuch://y", CONFIG)


def test_shard_is_streamed_under_a_temporary_name_then_renamed(tmp_path):
    folder = OutputFolder(f"memory:///pub-{tmp_path.name}")
    folder.makedirs()
    writer = ShardWriter(folder, 0)
    writer.begin()
    writer.add({"__key__": "a", "json": b"{}"})
    writer.keep()
    assert folder.names() == [writer.partial] and writer.partial.startswith(".rawpairs-000000")
    info = writer.commit()
    assert folder.names() == ["rawpairs-000000.tar"] and folder.size(info.name) == info.size
    data = folder.fs.cat_file(folder.path(info.name))
    assert hashlib.sha256(data).hexdigest() == info.sha256 and len(data) % 10240 == 0
    folder.write_bytes(".state/a.json", b"{}")
    assert folder.names(".state") == ["a.json"]
    folder.delete(".state")
    assert folder.names() == ["rawpairs-000000.tar"]
    fsspec.filesystem("memory").rm(folder.root, recursive=True)


def test_remote_lock_refuses_a_live_build_and_takes_over_a_stale_lock(tmp_path):
    first, second = (OutputFolder(f"memory:///lock-{tmp_path.name}") for _ in range(2))
    first.makedirs()
    first.lock()
    with pytest.raises(FolderLockedError, match="another build is writing here"):
        second.lock()
    first.close()
    second.lock()  # released
    second.close()
    stale = json.dumps({"owner": "gone:1", "refreshed": time.time() - LOCK_STALE_S - 1})
    first.write_bytes(REMOTE_LOCK, stale.encode())  # as left by a build killed with -9
    first.lock()
    assert json.loads(first.read_text(REMOTE_LOCK))["owner"] != "gone:1"
    first.close()
    fsspec.filesystem("memory").rm(first.root, recursive=True)
