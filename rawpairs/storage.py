"""The build's output folder on any fsspec file system (local path, ``file://``, ``s3://``, ``gs://``…).

Local folders are written in place: a file is written under a temporary name, fsynced and renamed.
On other file systems a file is written locally first, uploaded under a temporary name and then
moved to its final name (on object stores an object appears only once its upload is complete),
so no reader ever sees a half-written shard or JSON file under its final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = ["OutputFolder", "is_url"]


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a file system by protocol (``s3://…``), not a local path."""
    return "://" in str(location)


class OutputFolder:
    """A build's ``--out``: list, read, delete and atomically publish files by name."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.location = str(location)
        self.fs, root = fsspec.core.url_to_fs(self.location)
        self.root = root.rstrip("/") or "/"
        self.local = isinstance(self.fs, LocalFileSystem)
        # Where shards are written before they are published: the folder itself when local.
        self.scratch = Path(self.root) if self.local else Path(tempfile.mkdtemp(prefix="rawpairs-"))

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def makedirs(self) -> None:
        self.fs.makedirs(self.root, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)

    def names(self, prefix: str = "") -> list[str]:
        """Names of the entries directly in ``<root>/<prefix>`` (empty when it does not exist)."""
        folder = self.path(prefix).rstrip("/") if prefix else self.root
        if not self.fs.exists(folder):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def size(self, name: str) -> int:
        return int(self.fs.size(self.path(name)))

    def read_text(self, name: str) -> str:
        with self.fs.open(self.path(name), "rb") as f:
            return f.read().decode("utf-8")

    def delete(self, name: str) -> None:
        if self.fs.exists(self.path(name)):
            self.fs.rm(self.path(name), recursive=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Atomically create or replace ``name`` with ``data``."""
        if self.local:
            final = Path(self.path(name))
            final.parent.mkdir(parents=True, exist_ok=True)
            partial = final.with_name(f".{final.name}.partial")
            with open(partial, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, final)
            return
        partial = self.path(_partial_name(name))
        self.fs.pipe_file(partial, data)
        self.fs.mv(partial, self.path(name))

    def publish(self, local_file: Path) -> None:
        """Make a finished file in :attr:`scratch` visible under its name in the folder."""
        if self.local:
            return  # written in place and renamed by its writer
        partial = self.path(_partial_name(local_file.name))
        self.fs.put_file(str(local_file), partial)
        self.fs.mv(partial, self.path(local_file.name))
        local_file.unlink()

    def close(self) -> None:
        if not self.local:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _partial_name(name: str) -> str:
    head, _, base = name.rpartition("/")
    return f"{head}/.{base}.partial" if head else f".{base}.partial"
