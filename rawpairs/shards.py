"""Where samples are written: atomic, byte-reproducible WebDataset shards, one per group of sources.

:class:`ShardWriter` streams tar members straight into the output folder (a local path or any
fsspec URL, see :mod:`rawpairs.storage`) under a temporary name unique to the writer
(``.rawpairs-000000.tar.<token>.partial``), hashes them while writing, and renames the file to its
final name only when it is complete and flushed, so a final ``rawpairs-NNNNNN.tar`` is never
half-written and two writers never share a temporary file. Tar members get fixed mtime, owner and
mode, so the same samples give the same bytes.

:func:`write_group` is the build's unit of work: it makes the samples of one group of sources,
writes their shard and its resume record (``.state/shard-NNNNNN.json``), and returns that record
(names, offsets, sizes, checksum, manifest rows, error records): the only thing that leaves the
process that made the samples. The samples of one source are gathered in a spool (memory, then
an anonymous temporary file) and appended to the shard only when the whole source succeeded, so a
source that fails half-way leaves none of its samples behind, and its crops are never all held
in memory at once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import tarfile
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rawpairs.messages import one_line

if TYPE_CHECKING:
    from rawpairs.sample import BuildConfig, Source
    from rawpairs.storage import OutputFolder

__all__ = [
    "SHARD_PATTERN",
    "STATE_DIR",
    "ShardInfo",
    "ShardWriter",
    "record_name",
    "sha256_file",
    "shard_name",
    "write_group",
]

SHARD_PATTERN = "rawpairs-{:06d}.tar"
STATE_DIR = ".state"
_MTIME = 0  # fixed member mtime: reproducible bytes
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
SPOOL_BYTES = 64 * 2**20  # a source's samples beyond this spill from memory to a temporary file


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return SHARD_PATTERN.format(index)


def record_name(index: int) -> str:
    """Path (inside the output folder) of the resume record of shard ``index``."""
    return f"{STATE_DIR}/shard-{index:06d}.json"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tar_member(name: str, size: int) -> bytes:
    """The header block(s) of a tar member as webdataset's ``TarWriter`` writes them (PAX
    format, mode 0444, mtime 0, empty owner), for ``size`` bytes of data."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, _MTIME, 0o444, "", ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@dataclass
class ShardInfo:
    """A finished shard: its name, byte size, checksum and one entry per sample."""

    index: int
    name: str
    size: int
    sha256: str
    samples: list[dict[str, Any]] = field(default_factory=list)


class ShardWriter:
    """Writes shard ``index`` into ``folder`` atomically.

    Per source: :meth:`begin`, :meth:`add` its samples, then :meth:`keep` (append them to the
    shard) or :meth:`drop`; finally :meth:`commit` (or :meth:`abort`).
    """

    def __init__(self, folder: OutputFolder, index: int) -> None:
        self.folder, self.index = folder, index
        self.name = shard_name(index)
        self.partial = f".{self.name}.{os.getpid()}-{secrets.token_hex(4)}.partial"
        self._file = folder.open_write(self.partial)
        self._sha256 = hashlib.sha256()
        self.size = 0  # bytes written so far
        self.samples: list[dict[str, Any]] = []
        self._spool: Any = None
        self._spooled: list[tuple[int, int]] = []

    def _write(self, data: bytes | memoryview) -> None:
        self._sha256.update(data)
        self._file.write(data)
        self.size += len(data)

    def begin(self) -> None:
        """Start gathering the samples of one source."""
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        self._spooled = []

    def add(self, members: dict[str, bytes | str]) -> None:
        """Gather one sample (webdataset members, ``__key__`` included) of the current source."""
        start = self._spool.tell()
        key = members["__key__"]
        for ext in sorted(members):
            if ext == "__key__":
                continue
            value = members[ext]
            data = value.encode("utf-8") if isinstance(value, str) else value
            self._spool.write(tar_member(f"{key}.{ext}", len(data)))
            self._spool.write(data)
            self._spool.write(b"\0" * (-len(data) % _BLOCK))
        self._spooled.append((start, self._spool.tell() - start))

    def keep(self) -> list[dict[str, Any]]:
        """Append the current source's samples to the shard; return their position entries."""
        base = self.size
        self._spool.seek(0)
        for block in iter(lambda: self._spool.read(1 << 20), b""):
            self._write(block)
        entries = [
            {"index": len(self.samples) + i, "byte_offset": base + start, "size": size}
            for i, (start, size) in enumerate(self._spooled)
        ]
        self.samples.extend(entries)
        self.drop()
        return entries

    def drop(self) -> None:
        """Forget the current source's samples."""
        if self._spool is not None:
            self._spool.close()
        self._spool, self._spooled = None, []

    def commit(self) -> ShardInfo:
        """End the archive, flush it to storage and rename it to its final name."""
        self._write(b"\0" * (2 * _BLOCK))
        self._write(b"\0" * (-self.size % _RECORD))
        self.folder.close_write(self._file)
        self.folder.rename(self.partial, self.name)
        return ShardInfo(self.index, self.name, self.size, self._sha256.hexdigest(), self.samples)

    def abort(self) -> None:
        """Discard the partial shard (best effort: a failing disk must not hide the cause)."""
        self.drop()
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self.folder.delete(self.partial)


def write_group(
    folder: OutputFolder,
    index: int,
    sources: list[Source],
    config: BuildConfig,
    excluded: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Make the samples of ``sources`` (one group, in order), write them as shard ``index`` and
    its resume record; return the record. A group without any sample writes no shard (the
    record's ``name`` is ``None``).

    A source that fails becomes an error record (in source order, like its samples), one left
    out on purpose (:class:`~rawpairs.errors.SkippedInputError`) a skip record; warnings raised
    while a source is made (a decoder's message, a library's warning) are collected in the
    record (``warnings``) for the driver's ``warn``, never printed here. ``excluded`` maps
    relative paths of sources not to run (they killed their worker) to their error records.
    Raises ``OSError`` when the output cannot be written (disk full, …), after removing the
    partial shard.
    """
    from rawpairs.errors import SkippedInputError
    from rawpairs.sample import UpscaledPhoto, error_record, sample_stream, skip_record

    excluded = excluded or {}
    writer = ShardWriter(folder, index)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    notes: list[dict[str, str]] = []
    upscaled: list[str] = []  # photos resized up to the crop (--upscale)
    try:
        for source in sources:
            if source.relpath in excluded:
                errors.append(excluded[source.relpath])
                continue
            writer.begin()
            source_rows = []
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        for members, row in sample_stream(source, config):
                            writer.add(members)
                            source_rows.append(row)
                    finally:
                        for w in caught:
                            if issubclass(w.category, UpscaledPhoto):
                                upscaled.append(source.relpath)
                            else:
                                notes.append(_note(source.relpath, w.message))
            except SkippedInputError as err:  # left out on purpose: not a failure
                skipped.append(skip_record(source, err))
                writer.drop()
            except OSError as err:
                if _is_output_error(err):
                    raise
                errors.append(error_record(source, err))
                writer.drop()
            except Exception as err:  # one bad input never stops the build
                errors.append(error_record(source, err))
                writer.drop()
            else:
                writer.keep()
                rows.extend(source_rows)
        info = writer.commit() if rows else None
        if info is None:
            writer.abort()  # every source failed: no shard (the build renumbers the others)
    except BaseException:
        writer.abort()
        raise
    record = {
        "name": info.name if info else None,
        "size": info.size if info else 0,
        "sha256": info.sha256 if info else None,
        "sources": len(sources),
        "rows": rows,
        "positions": info.samples if info else [],
        "errors": errors,
        "skipped": skipped,
        "warnings": notes,
        "upscaled": upscaled,
    }
    folder.write_bytes(record_name(index), json.dumps(record, sort_keys=True).encode("utf-8"))
    return record


def _note(relpath: str, message: Warning | str) -> dict[str, str]:
    """A warning raised while a source was made, for the driver to report (one line)."""
    return {"path": relpath, "message": one_line(message)}


_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})  # the spool or the shard cannot grow


def _is_output_error(err: OSError) -> bool:
    """Whether ``err`` (raised while a source's samples were made and gathered) is the
    machine's (no space for the spool) rather than the source's."""
    return err.errno in _OUTPUT_ERRNOS
