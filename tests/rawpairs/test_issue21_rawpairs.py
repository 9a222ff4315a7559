"""Issue 21 (one concept per file, each constant once), the ``rawpairs`` side: no torch here."""

from __future__ import annotations

import errno
import os
import threading

import cv2
import numpy as np
import pytest
from codeshape import PACKAGES, import_graph, import_loop, long_functions

from rawpairs import engines, errors, group, pool
from rawpairs.build import build
from rawpairs.cli import main
from rawpairs.config import BuildConfig
from rawpairs.headers import MAX_PIXELS, image_size, jpeg_size
from rawpairs.photos import read_photo


@pytest.mark.parametrize(
    ("code", "machine"),
    [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EACCES, False), (errno.EIO, False)],
)
def test_a_full_disk_or_quota_is_the_machines_error_not_the_sources(code, machine):
    """No space and no quota stop the build (every later source would fail the same way);
    other errors are the source's. The numbers are the platform's, not Linux literals."""
    assert group._is_output_error(OSError(code, os.strerror(code))) is machine


def test_workers_that_die_before_ready_are_counted(tmp_path, monkeypatch):
    """A worker that dies while starting is not replaced (this process builds its groups): the
    build still finishes and its stats report how many did (``worker_failed_starts``)."""
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
        return pool._Worker(process, parent, 0.0)

    def progress(done, total, written, errors):
        if written == 3:  # the rest is built once a worker has died (and is seen to have)
            assert died.wait(60)

    monkeypatch.setattr(pool, "WORKERS_WORTH_S", 0.0)  # start workers however small the build
    monkeypatch.setattr(pool._LocalPool, "_spawn", dead_on_arrival)
    result = build(src, tmp_path / "out", BuildConfig(seed=1, crop=64, crops=1), workers=2,
                   sources_per_shard=1, progress=progress)  # fmt: skip
    assert result.samples == 6 and result.errors == 0
    assert result.stats["groups_here"] == 6
    assert result.stats["worker_failed_starts"] >= 1


def _jpeg(height: int, width: int, *params: int) -> bytes:
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, list(params))
    assert ok
    return encoded.tobytes()


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (480, 17)])
def test_one_jpeg_header_parser_reads_files_with_restart_markers(size):
    """The builder's check and the shard reader share :func:`rawpairs.headers.jpeg_size`: a
    JPEG with a restart interval (RST0–RST7 in its scan) declares the size it decodes to."""
    data = _jpeg(*size, cv2.IMWRITE_JPEG_RST_INTERVAL, 1)
    assert any(bytes([0xFF, m]) in data for m in range(0xD0, 0xD8)) or size == (1, 1)
    assert jpeg_size(data) == image_size(data, "rgb.jpg") == size
    assert cv2.imdecode(np.frombuffer(data, np.uint8), 1).shape[:2] == size


def test_standalone_markers_and_fill_bytes_before_the_frame_header_are_stepped_over():
    """RSTn and TEM have no length (ITU T.81 B.1.1.3): the shard reader's parser used to read
    the next marker's bytes as a length and miss the frame header."""
    data = _jpeg(24, 40)
    padded = data[:2] + b"\xff\xd0\xff\x01\xff\xff" + data[2:]
    assert jpeg_size(padded) == image_size(padded, "rgb.jpg") == (24, 40)


@pytest.mark.parametrize("cut", [2, 3, 5, 12])
def test_a_jpeg_cut_before_its_frame_header_has_no_size(cut):
    data = _jpeg(24, 40)[:cut]
    assert jpeg_size(data) is None
    with pytest.raises(ValueError, match=r"^rgb\.jpg has no JPEG frame header$"):
        image_size(data, "rgb.jpg")


def test_the_pixel_limit_is_one_constant():
    option = next(p for p in main.commands["build"].params if p.name == "max_pixels")
    assert option.default == BuildConfig().max_pixels == MAX_PIXELS
    assert read_photo.__defaults__ == (MAX_PIXELS,)


@pytest.mark.parametrize("engine", ["spark", "", "Local"])
def test_the_engines_are_the_choice_enum(engine):
    """``--engine``'s values are :class:`rawpairs.choices.Engine`'s, checked in one place."""
    from rawpairs.choices import Engine

    assert not hasattr(engines, "ENGINES")
    with pytest.raises(
        errors.EngineError, match=rf"^--engine must be one of \('local', 'ray'\), got '{engine}'$"
    ):
        engines.require_engine(engine)
    engines.require_engine(Engine.LOCAL)
    engines.require_engine("local")


def test_one_line_collapses_cuts_and_escapes():
    from rawpairs.messages import MESSAGE_LIMIT, one_line

    assert one_line("a\n  b\tc ") == "a b c"
    assert one_line(ValueError("bad value:\nthe second line")) == "bad value: the second line"
    assert one_line(KeyError()) == "KeyError"
    long = one_line("x" * 1000)
    assert len(long) == MESSAGE_LIMIT and long.endswith("…")
    assert one_line("y" * 50, 20) == "y" * 19 + "…"
    assert one_line(b"caf\xe9.jpg".decode("utf-8", "surrogateescape")) == "caf\\xe9.jpg"
    assert one_line("lone \ud800") == "lone \\ud800"


def test_only_a_file_that_is_no_tar_is_called_not_a_tar_archive(tmp_path):
    """``schema.one_line`` used to answer "not a tar archive" for any message of several lines
    whose first ends with ':' (JSON and Parquet errors too); only tarfile's own answer is."""
    import tarfile

    from rawpairs.errors import CorruptInputError
    from rawpairs.messages import one_line
    from rawpairs.tarwalk import read_shard, tar_cause

    error = ValueError("cannot parse the footer:\ncolumn 3 is cut short")
    assert tar_cause(error) == one_line(error) == "cannot parse the footer: column 3 is cut short"
    not_a_tar = tmp_path / "notes.tar"
    not_a_tar.write_bytes(b"just some text, not a tar archive\n" * 40)
    with pytest.raises(CorruptInputError, match=r"unreadable tar: not a tar archive$"):
        list(read_shard(not_a_tar))
    with pytest.raises(tarfile.ReadError) as info, tarfile.open(not_a_tar, "r:*"):
        pass
    assert len(str(info.value).splitlines()) > 1 and tar_cause(info.value) == "not a tar archive"


def test_shards_is_a_pure_writer_and_sha256_file_lives_with_storage(tmp_path):
    """``shards.py`` imports nothing that makes samples (names come from the layout module);
    ``sha256_file`` lives in storage only."""
    import ast
    import hashlib
    import inspect

    from rawpairs import shards, storage

    tree = ast.parse(inspect.getsource(shards))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    allowed = {"__future__", "dataclasses", "typing", "rawpairs.storage", "rawpairs.layout"}
    assert imported <= allowed, imported
    assert not hasattr(shards, "sha256_file")
    (tmp_path / "f").write_bytes(b"x" * (3 << 20))
    assert storage.sha256_file(tmp_path / "f") == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


def test_no_module_of_rawpairs_or_distill_imports_itself_through_others():
    """No import loop, function-level imports included: each package reads as layers."""
    graph = import_graph(*PACKAGES)
    assert {"rawpairs.sample", "rawpairs.group", "distill.trainer"} <= set(graph)
    assert "rawpairs.storage" in graph["rawpairs.sample"]  # function-level and top imports
    assert import_loop(graph) is None, " → ".join(import_loop(graph) or [])


def test_no_function_of_rawpairs_is_over_80_lines():
    """Long functions are split into named steps (distill's own: tests/distill)."""
    assert not long_functions("rawpairs")
