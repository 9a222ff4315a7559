"""Where samples are written: atomic, byte-reproducible WebDataset shards.

A shard is written under a temporary name (``.rawpairs-000000.tar.partial``) with webdataset's
``TarWriter`` and renamed to its final name only when it is complete and flushed, so a final
``rawpairs-NNNNNN.tar`` is never half-written. Tar members get fixed mtime, owner and mode, so
the same samples give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from webdataset import TarWriter

__all__ = [
    "SHARD_PATTERN",
    "ShardInfo",
    "ShardWriter",
    "decode_raw",
    "decode_rgb",
    "read_shard",
    "sha256_file",
    "shard_name",
    "split_member_name",
]

SHARD_PATTERN = "rawpairs-{:06d}.tar"
_MTIME = 0.0  # fixed member mtime: reproducible bytes


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return SHARD_PATTERN.format(index)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ShardInfo:
    """A finished shard: its name, byte size, checksum and one entry per sample."""

    index: int
    name: str
    size: int
    sha256: str
    samples: list[dict[str, Any]] = field(default_factory=list)


class _HashingFile:
    """A binary file that hashes what is written to it (no second read of the shard)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed by ShardWriter
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


class ShardWriter:
    """Writes one shard atomically; ``add`` samples then ``commit`` (or ``abort``)."""

    def __init__(self, folder: Path, index: int) -> None:
        self.index = index
        self.final = folder / shard_name(index)
        self.partial = folder / f".{shard_name(index)}.partial"
        self._out = _HashingFile(self.partial)
        self._file = self._out.file
        self._tar = TarWriter(self._out, user="", group="", mode=0o444, mtime=_MTIME, encoder=False)
        self.samples: list[dict[str, Any]] = []

    @property
    def size(self) -> int:
        """Bytes written so far (before the end-of-archive blocks)."""
        return self._tar.tarstream.offset

    def add(self, members: dict[str, bytes | str]) -> dict[str, Any]:
        """Append one sample's members; return its position entry (index, offset, size)."""
        offset = self.size
        self._tar.write(members)
        entry = {"index": len(self.samples), "offset": offset, "size": self.size - offset}
        self.samples.append(entry)
        return entry

    def commit(self) -> ShardInfo:
        """Close, flush to disk, rename to the final name; return the shard's info."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.final)
        return ShardInfo(
            index=self.index,
            name=self.final.name,
            size=self.final.stat().st_size,
            sha256=self._out.sha256.hexdigest(),
            samples=self.samples,
        )

    def abort(self) -> None:
        """Discard the partial shard."""
        self._tar.close()  # closes tarfile's stream too (it would write on garbage collection)
        self._file.close()
        self.partial.unlink(missing_ok=True)


def split_member_name(name: str) -> tuple[str, str] | None:
    """``dir/key.raw.npy`` → (``dir/key``, ``raw.npy``): webdataset's rule, the first dot of the
    base name; ``None`` for a member without one."""
    head, _, base = name.rpartition("/")
    if "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return (f"{head}/{stem}" if head else stem), ext.lower()


def read_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {extension: bytes})`` per sample of a shard, in order.

    Raises ``ValueError`` naming the shard when it is not a readable tar file.
    """
    path = Path(path)
    current: str | None = None
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                parts = split_member_name(info.name)
                if parts is None:
                    continue
                key, ext = parts
                if key != current:
                    if current is not None:
                        yield current, members
                    current, members = key, {}
                f = tar.extractfile(info)
                assert f is not None
                members[ext] = f.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable tar shard ({err})") from err
    if current is not None:
        yield current, members


def decode_raw(data: bytes) -> np.ndarray:
    """``raw.npy`` bytes → uint16 H×W mosaic (exact; no pickles)."""
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if arr.dtype != np.uint16 or arr.ndim != 2:
        raise ValueError(f"raw.npy must be a uint16 H×W array, got {arr.dtype} {arr.shape}")
    return arr


def decode_rgb(data: bytes) -> np.ndarray:
    """``rgb.png`` / ``rgb.jpg`` bytes → uint8 H×W×3, RGB order."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("rgb image does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
