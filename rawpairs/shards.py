"""Where samples are written: atomic, byte-reproducible WebDataset shards, one per group of sources.

:class:`ShardWriter` streams tar members straight into the output folder (a local path or any
fsspec URL, see :mod:`rawpairs.storage`) under a temporary name unique to the writer
(``.rawpairs-000000.tar.<token>.partial``), hashes them while writing, and renames the file to its
final name only when it is complete and flushed, so a final ``rawpairs-NNNNNN.tar`` is never
half-written and two writers never share a temporary file. Tar members get fixed mtime, owner and
mode, so the same samples give the same bytes. The samples of one source are gathered in a spool
(memory, then an anonymous temporary file) and appended to the shard only when the whole source
succeeded (:meth:`ShardWriter.keep`), so a source that fails half-way leaves none of its samples
behind, and its crops are never all held in memory at once. The build's unit of work, which
fills a writer, is :func:`rawpairs.group.write_group`.
"""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rawpairs.layout import partial_name, shard_name

if TYPE_CHECKING:
    from rawpairs.storage import OutputFolder

__all__ = ["ShardInfo", "ShardWriter", "tar_member"]

_MTIME = 0  # fixed member mtime: reproducible bytes
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
SPOOL_BYTES = 64 * 2**20  # a source's samples beyond this spill from memory to a temporary file


def _tarinfo_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, _MTIME, 0o444, "", ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_HEADER_TEMPLATE = _tarinfo_header("a", 0)  # tarfile's own block: every field but name and size
_PLAIN_NAME = 100  # bytes of the name field: longer (or non-ASCII) names need a PAX record
_PLAIN_SIZE = 8**11  # sizes with 11 octal digits fit the size field without a PAX record


def tar_member(name: str, size: int) -> bytes:
    """The header block(s) of a tar member as webdataset's ``TarWriter`` writes them (PAX
    format, mode 0444, mtime 0, empty owner), for ``size`` bytes of data. A short ASCII name
    and a size under 8 GiB need no PAX record: then tarfile's block for them is made from
    :data:`_HEADER_TEMPLATE` (name, size and checksum filled in, the same bytes), a fifth of
    the time of a ``TarInfo`` per member."""
    encoded = name.encode("utf-8")
    if not (name.isascii() and 0 < len(encoded) <= _PLAIN_NAME and 0 <= size < _PLAIN_SIZE):
        return _tarinfo_header(name, size)
    block = bytearray(_HEADER_TEMPLATE)
    block[0:_PLAIN_NAME] = encoded.ljust(_PLAIN_NAME, b"\0")
    block[124:136] = b"%011o\0" % size
    block[148:156] = b"        "  # the checksum counts its own field as spaces
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


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
        self.partial = partial_name(self.name)
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
