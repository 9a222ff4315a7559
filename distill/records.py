"""Where the tar shards are read: a shard's samples as undecoded :class:`Record` s (members grouped
by key, unread while a resume replays consumed batches) and one record read again."""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from webdataset.gopen import gopen

from distill.shardlist import is_url
from rawpairs.errors import CorruptInputError
from rawpairs.tarwalk import tar_cause, walk_tar

__all__ = ["Record", "iter_records", "read_record"]


@dataclass(frozen=True)
class Record:
    """One undecoded sample: its stream position, epoch, shard, key and members; ``index``: its
    place in the shard (0-based); ``nbytes``: its bytes in the tar (headers included), known
    without reading the members.

    ``members`` is ``None`` for a sample a resumed run passed on unread (the tar reader seeks
    past them in local shards); :func:`read_record` reads them when they are needed after all.
    """

    position: int
    epoch: int
    shard: str
    key: str
    members: Mapping[str, bytes] | None
    index: int = 0
    nbytes: int = 0


@contextmanager
def _open_tar(shard: str) -> Iterator[tarfile.TarFile]:
    """A local shard opened seekable (unread members are skipped by seeking), a URL as a stream."""
    if is_url(shard):
        with gopen(shard) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            yield tar
    else:
        with tarfile.open(shard, mode="r:*") as tar:
            yield tar


def iter_records(
    shard: str, epoch: int, first_position: int, skip: Callable[[int], bool] | None = None
) -> Iterator[Record]:
    """Samples of one shard as :class:`Record` s numbered from ``first_position``.

    ``skip(position) -> bool`` marks samples whose members must not be read. Members are grouped
    by :func:`rawpairs.tarwalk.walk_tar`; a shard without samples, a repeated member or key, a
    damaged or truncated tar raises :class:`~rawpairs.errors.CorruptInputError` naming the shard.
    """
    local_skip = None if skip is None else (lambda i: skip(first_position + i))
    try:
        with _open_tar(shard) as tar:
            for i, sample in enumerate(walk_tar(tar, shard, local_skip)):
                yield Record(
                    first_position + i, epoch, shard, sample.key, sample.members, i, sample.size
                )
    except (tarfile.TarError, OSError, EOFError) as err:
        raise CorruptInputError(shard, f"unreadable tar: {tar_cause(err)}") from err


def read_record(record: Record) -> Record:
    """``record`` with its members, read again from its shard (a resume passed it on unread but
    it is emitted after the resumed batch). ``CorruptInputError`` if the shard changed."""
    first = record.position - record.index
    for found in iter_records(record.shard, record.epoch, first, lambda p: p != record.position):
        if found.position == record.position:
            if found.key != record.key or found.members is None:
                break
            return found
    raise CorruptInputError(
        record.shard, f"sample {record.key!r} is no longer sample {record.index} of the shard"
    )
