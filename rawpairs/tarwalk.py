"""Tar shards: member names and the one walker that groups a tar's members into samples.

A shard is a tar file whose members are named ``<key>.<member>``; a sample is the run of
consecutive members sharing a key (webdataset's rule: the key is the part of the base name before
its first dot). The builder's checks, the training loader and ``rawpairs inspect`` all walk shards
with :func:`walk_tar` (an open tar, local or streamed) or :func:`read_shard` (a local file).
"""

from __future__ import annotations

import lzma
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rawpairs.errors import CorruptInputError
from rawpairs.messages import one_line

__all__ = ["TarSample", "read_shard", "split_member_name", "tar_cause", "walk_tar"]

# What reading a damaged or compressed tar can raise.
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


def split_member_name(name: str) -> tuple[str, str] | None:
    """``dir/key.raw.npy`` → (``dir/key``, ``raw.npy``): webdataset's rule, the first dot of the
    base name (the member part lower-cased); ``None`` for a name without one."""
    head, _, base = name.rpartition("/")
    if "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return (f"{head}/{stem}" if head else stem), ext.lower()


@dataclass(frozen=True)
class TarSample:
    """One sample of a shard, undecoded: key, members (``None`` when skipped unread), and the
    byte span of its tar entries (``offset`` of the first header, ``size`` up to the end of the
    last member's padded data), which the manifest records."""

    key: str
    members: dict[str, bytes] | None
    offset: int
    size: int


def walk_tar(
    tar: tarfile.TarFile, shard: str, skip: Callable[[int], bool] | None = None
) -> Iterator[TarSample]:
    """The samples of an open tar, in order: consecutive regular-file members sharing a key.

    Entries that are not regular files, names without a dot, and keys whose base name starts with
    ``__`` are ignored. ``skip(i)`` (``i``: the sample's index in this shard) marks samples whose
    members are not read: a seekable tar seeks past them (exact resume). Raises
    :class:`~rawpairs.errors.CorruptInputError` naming ``shard`` for an unreadable tar, a sample
    that repeats a member, a key that appears twice, or a shard with no samples.
    """
    key: str | None = None
    members: dict[str, bytes] | None = None
    start = end = index = 0
    seen: set[str] = set()
    try:
        for info in tar:
            split = split_member_name(info.name) if info.isreg() else None
            if split is None or split[0].rpartition("/")[2].startswith("__"):
                continue
            name_key, ext = split
            if name_key != key:
                if key is not None:
                    yield TarSample(key, members, start, end - start)
                    index += 1
                if name_key in seen:
                    raise CorruptInputError(shard, f"sample {name_key!r} appears twice")
                seen.add(name_key)
                key, start = name_key, info.offset
                members = None if skip is not None and skip(index) else {}
            end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if members is None:
                continue
            if ext in members:
                raise CorruptInputError(shard, f"sample {key!r} repeats member {ext!r}")
            members[ext] = tar.extractfile(info).read()  # type: ignore[union-attr]
        damage = _damaged_end(tar)
    except _TAR_ERRORS as err:
        raise CorruptInputError(shard, f"unreadable tar: {tar_cause(err)}") from err
    if damage:
        raise CorruptInputError(shard, damage)
    if key is None:
        raise CorruptInputError(shard, "shard has no samples")
    yield TarSample(key, members, start, end - start)


def tar_cause(err: BaseException) -> str:
    """Why a tar could not be read, on one line: ``tarfile.open`` answers a file that is no tar
    (in any compression) with a list of every method it tried."""
    if isinstance(err, tarfile.ReadError) and str(err).startswith("file could not be opened"):
        return "not a tar archive"
    return one_line(err)


def _damaged_end(tar: tarfile.TarFile) -> str | None:
    """Why a seekable tar did not end with its end-of-archive block, or ``None``.

    ``tarfile`` stops iterating without an error at a damaged header after the first one, or
    where the file is cut at a member boundary: the samples after it would vanish silently.
    Streams (URLs) cannot be checked this way.
    """
    fileobj = tar.fileobj
    if fileobj is None or not getattr(fileobj, "seekable", lambda: False)():
        return None
    fileobj.seek(tar.offset)
    block = fileobj.read(tarfile.BLOCKSIZE)
    if block == tarfile.NUL * tarfile.BLOCKSIZE:
        # A gzip stream's CRC-32 is checked only when the stream is read to its end: without
        # this, bytes garbled inside a gzip-compressed shard would be read as good samples.
        while fileobj.read(1 << 20):
            pass
        return None
    if not block:
        return f"truncated: ends at byte {tar.offset} without the end-of-archive marker"
    return f"damaged tar header at byte {tar.offset}: the rest of the shard cannot be read"


def read_shard(path: str | Path) -> Iterator[TarSample]:
    """The samples of a local shard file (see :func:`walk_tar`); errors name the file."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            yield from walk_tar(tar, str(path))
    except _TAR_ERRORS as err:
        raise CorruptInputError(path, f"unreadable tar: {tar_cause(err)}") from err
