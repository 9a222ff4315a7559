"""Issue 21 (one concept per file, each constant once), the ``rawpairs`` side: no torch here."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from rawpairs import shards


@pytest.mark.parametrize(
    ("code", "machine"),
    [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EACCES, False), (errno.EIO, False)],
)
def test_a_full_disk_or_quota_is_the_machines_error_not_the_sources(code, machine):
    """No space and no quota stop the build (every later source would fail the same way);
    other errors are the source's. The numbers are the platform's, not Linux literals."""
    assert shards._is_output_error(OSError(code, os.strerror(code))) is machine


def test_workers_that_die_before_ready_are_counted(tmp_path, monkeypatch):
    """A worker that dies while starting is not replaced (this process builds its groups): the
    build still finishes and its stats report how many did (``worker_failed_starts``)."""
    import cv2
    import numpy as np

    from rawpairs import engines
    from rawpairs.build import build
    from rawpairs.sample import BuildConfig

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(src / f"p{i}.png"), rng.integers(0, 256, (72, 72, 3), np.uint8))

    died = threading.Event()

    def dead_on_arrival(self):
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=os._exit, args=(3,), daemon=True)
        process.start()
        child.close()
        process.join()
        died.set()
        return engines._Worker(process, parent, 0.0)

    def progress(done, total, written, errors):
        if written == 3:  # the rest is built once a worker has died (and is seen to have)
            assert died.wait(60)

    monkeypatch.setattr(engines, "WORKERS_WORTH_S", 0.0)  # start workers however small the build
    monkeypatch.setattr(engines._LocalPool, "_spawn", dead_on_arrival)
    result = build(src, tmp_path / "out", BuildConfig(seed=1, crop=64, crops=1), workers=2,
                   sources_per_shard=1, progress=progress)  # fmt: skip
    assert result.samples == 6 and result.errors == 0
    assert result.stats["groups_here"] == 6
    assert result.stats["worker_failed_starts"] >= 1
