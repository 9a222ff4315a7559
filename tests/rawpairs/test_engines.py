"""Engines: the Ray engine writes the local engine's bytes, survives killed workers and drivers.

One local Ray instance (2 CPUs) serves the module; the Ray tests are skipped without Ray. Worker
kills target the worker running one named task: Ray titles a busy worker process ``ray::<task
title>`` (``write_group rawpairs-000000.tar``, ``probe big.png``), and the workers are children of
this instance's raylet.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from skimage import data

from rawpairs.build import build
from rawpairs.config import BuildConfig
from rawpairs.dng import write_dng
from rawpairs.engines import require_engine, run_groups
from rawpairs.errors import EngineError
from rawpairs.ray_pool import RAY_MAX_RETRIES
from rawpairs.sample import Source
from rawpairs.unprocess import simulate_raw

try:
    import ray
except ImportError:
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (rawpairs[ray])")

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")
BIG = "big.png"  # slow enough to decode (~0.2 s) that a kill lands while its task runs
CONFIG = BuildConfig(seed=5, crop=64, crops=2)
SHARD = 2  # sources per shard: BIG (2nd source) is in the first shard
BIG_GROUP = "write_group rawpairs-000000.tar"


def _photo(name: str, side: int) -> np.ndarray:
    rgb = getattr(data, name)()[..., :3]
    scale = side / max(rgb.shape[:2])
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """Six ~100 px photos, a DNG, one large photo and a file of unknown type."""
    root = tmp_path_factory.mktemp("engines_src")
    for name in PHOTOS:
        assert cv2.imwrite(str(root / f"{name}.png"), _photo(name, 100)[..., ::-1])
    rgb = _photo("chelsea", 96)
    mosaic, camera = simulate_raw(rgb[:, : rgb.shape[1] // 2 * 2], np.random.default_rng(1))
    write_dng(root / "chelsea.dng", mosaic, camera)
    assert cv2.imwrite(str(root / BIG), _photo("coffee", 2400)[..., ::-1])
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def reference(src, tmp_path_factory) -> Path:
    """The uninterrupted build with the local engine in this process."""
    out = tmp_path_factory.mktemp("engines_ref") / "out"
    build(src, out, CONFIG, workers=1, sources_per_shard=SHARD)
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, int]]:
    """A local Ray instance for the module: (its address, its raylet's pid)."""
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=100 * 2**20,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )

    @ray.remote
    def parent() -> int:
        return os.getppid()

    try:
        raylet = ray.get(parent.remote())
        yield ray.get_runtime_context().gcs_address, raylet
    finally:
        ray.shutdown()


def _manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def _same_build(out: Path, reference: Path) -> None:
    for name in ("index.json", "errors.jsonl"):
        assert (out / name).read_text() == (reference / name).read_text(), name
    assert _manifest(out) == _manifest(reference)
    assert not (out / ".state").exists() and not list(out.glob(".*.partial"))


def _workers_running(raylet: int, titles: set[str]) -> list[int]:
    """PIDs of the raylet's worker processes now running a task titled one of ``titles``."""
    wanted = {f"ray::{t}".encode() for t in titles}
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            if ppid != raylet:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().rstrip(b"\0") in wanted:
                    pids.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return pids


class _Killer(threading.Thread):
    """SIGKILLs workers running ``titles``: the first one only, or each one until stopped."""

    def __init__(self, raylet: int, titles: set[str], once: bool) -> None:
        super().__init__(daemon=True)
        self.raylet, self.titles, self.once = raylet, titles, once
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.002):
            for pid in _workers_running(self.raylet, self.titles):
                if pid not in self.killed:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                    if self.once:
                        return


def _build_while(killer: _Killer, src: Path, out: Path) -> None:
    killer.start()
    try:
        build(src, out, CONFIG, workers=2, sources_per_shard=SHARD, engine="ray")
    finally:
        killer.stop.set()
        killer.join()


def test_unknown_engine_and_missing_ray_fail_at_once_with_one_line(monkeypatch):
    with pytest.raises(EngineError, match=r"--engine must be one of \('local', 'ray'\)"):
        require_engine("spark")
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without Ray
    sources = [Source("a.png", "a.png", "rgb")]
    with pytest.raises(EngineError) as err:
        run_groups({0: sources}, CONFIG, "/nowhere", workers=1, engine="ray")  # not iterated
    assert "pip install 'rawpairs[ray]'" in str(err.value) and "\n" not in str(err.value)


@needs_ray
def test_ray_writes_the_same_bytes_as_local(cluster, src, reference, tmp_path):
    build(src, tmp_path / "ray", CONFIG, workers=2, sources_per_shard=SHARD, engine="ray")
    _same_build(tmp_path / "ray", reference)
    errors = [json.loads(line) for line in (tmp_path / "ray" / "errors.jsonl").open()]
    assert [e["path"] for e in errors] == ["notes.txt"]
    assert {r["source"] for r in _manifest(tmp_path / "ray")} >= {"chelsea.dng", BIG}


@needs_ray
def test_ray_workers_are_started_by_the_raylet_not_forked_from_the_driver(cluster):
    @ray.remote
    def parent() -> tuple[int, str]:
        return os.getppid(), os.path.basename(os.readlink(f"/proc/{os.getppid()}/exe"))

    ppid, exe = ray.get(parent.remote())
    assert ppid == cluster[1] != os.getpid() and exe == "raylet"


@needs_ray
def test_worker_killed_mid_task_is_retried_and_output_is_unchanged(
    cluster, src, reference, tmp_path
):
    killer = _Killer(cluster[1], {BIG_GROUP}, once=True)
    _build_while(killer, src, tmp_path / "out")
    assert len(killer.killed) == 1
    _same_build(tmp_path / "out", reference)


@needs_ray
def test_source_that_kills_every_worker_becomes_an_error_record(cluster, src, reference, tmp_path):
    killer = _Killer(cluster[1], {BIG_GROUP, f"probe {BIG}"}, once=False)
    _build_while(killer, src, tmp_path / "out")
    assert len(killer.killed) == 2 * (RAY_MAX_RETRIES + 1)  # the group's task, then BIG alone
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").open()]
    assert [(e["path"], e["error"]) for e in errors] == [
        (BIG, "WorkerCrashedError"),
        ("notes.txt", "UnsupportedInputError"),
    ]

    def content(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in ("shard", "index", "byte_offset")}

    expected = [content(r) for r in _manifest(reference) if r["source"] != BIG]
    assert [content(r) for r in _manifest(tmp_path / "out")] == expected


@needs_ray
def test_driver_killed_mid_build_then_rerun_equals_uninterrupted(cluster, src, reference, tmp_path):
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, signal
        from rawpairs.build import build
        from rawpairs.config import BuildConfig
        def progress(done, total, written, errors):
            if written >= 6:  # two shards committed, others being written
                os.kill(os.getpid(), signal.SIGKILL)
        build({str(src)!r}, {str(out)!r}, BuildConfig(seed=5, crop=64, crops=2), workers=2,
              sources_per_shard={SHARD}, engine="ray", address={cluster[0]!r}, progress=progress)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert list(out.glob("rawpairs-*.tar")) and not (out / "manifest.parquet").exists()
    build(src, out, CONFIG, workers=2, sources_per_shard=SHARD, engine="ray")
    _same_build(out, reference)


def test_a_group_that_keeps_killing_workers_is_isolated_source_by_source():
    """The schedule (local and Ray): retries, then one probe per source, then the group without
    the source that killed every probe; a group that dies even then fails every source."""
    from rawpairs.schedule import Schedule, TaskKind

    a, b, c = (Source(f"/x/{n}.png", f"{n}.png", "rgb") for n in "abc")
    schedule = Schedule({7: [a, b, c]}, retries=1)
    group = schedule.todo.popleft()
    schedule.died(group, "WorkerCrashed")
    assert list(schedule.todo) == [group]  # retried once
    schedule.died(schedule.todo.popleft(), "WorkerCrashed")
    probes = [schedule.todo.popleft() for _ in range(3)]
    assert [(t.kind, t.sources[0].relpath) for t in probes] == [
        (TaskKind.PROBE, "a.png"), (TaskKind.PROBE, "b.png"), (TaskKind.PROBE, "c.png"),
    ]  # fmt: skip
    schedule.probe_survived(probes[0])
    schedule.died(probes[1], "WorkerCrashed")
    schedule.died(schedule.todo.popleft(), "WorkerCrashed")  # b kills its worker alone too
    assert not schedule.todo
    schedule.probe_survived(probes[2])
    isolated = schedule.todo.popleft()
    assert (isolated.kind, isolated.index, isolated.isolated) == (TaskKind.GROUP, 7, True)
    assert list(isolated.excluded) == ["b.png"]
    assert isolated.excluded["b.png"]["error"] == "WorkerCrashed"
    schedule.died(isolated, "WorkerCrashed")
    schedule.died(schedule.todo.popleft(), "WorkerCrashed")
    last = schedule.todo.popleft()
    assert sorted(last.excluded) == ["a.png", "b.png", "c.png"] and not schedule.todo
