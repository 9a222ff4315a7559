"""The build's output folder on any fsspec file system (local path, ``file://``, ``s3://``, ``gs://``…).

Every file is written under a temporary name unique to its writer (``.<name>.<token>.partial``)
and renamed to its final name when complete: locally after an fsync; on object stores the
temporary object exists only once its upload is complete. No reader ever sees a half-written shard
or JSON file under its final name, and two writers of the same name never share a temporary file.

:meth:`OutputFolder.lock` makes one build at a time the writer of a folder: a local folder holds
an exclusive ``flock`` on its marker file ``.rawpairs`` (released by the kernel when the process
dies, so a ``kill -9`` never leaves a stale lock); other file systems hold a lock object
``.rawpairs.lock`` refreshed every :data:`LOCK_REFRESH_S` seconds and taken over when it is older
than :data:`LOCK_STALE_S` (its writer is gone).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from rawpairs.layout import MARKER, partial_name

__all__ = ["FolderLockedError", "OutputFolder", "is_url", "sha256_file"]

REMOTE_LOCK = ".rawpairs.lock"
LOCK_REFRESH_S = 30.0
LOCK_STALE_S = 300.0


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a file system by protocol (``s3://…``), not a local path."""
    return "://" in str(location)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a local file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to the local file ``path`` through a temporary name in the same
    folder and a rename: a reader sees the old file or the new one, never a part. Returns the
    path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class FolderLockedError(RuntimeError):
    """Another build is writing the folder."""


class OutputFolder:
    """A build's ``--out``: list, read, delete, stream and atomically publish files by name."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.location = str(location)
        self.fs, root = fsspec.core.url_to_fs(self.location)
        self.root = root.rstrip("/") or "/"
        self.local = isinstance(self.fs, LocalFileSystem)
        self._lock_file: IO[bytes] | None = None
        self._stop_refresh: threading.Event | None = None

    @property
    def shared(self) -> bool:
        """Whether other processes see what this one writes (``memory://`` is per process)."""
        return "memory" not in self.fs.protocol

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def makedirs(self) -> None:
        self.fs.makedirs(self.root, exist_ok=True)

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

    def open_write(self, name: str) -> IO[bytes]:
        """A new binary file ``name`` to stream into; finish it with :meth:`close_write`."""
        if self.local:
            Path(self.path(name)).parent.mkdir(parents=True, exist_ok=True)
            return open(self.path(name), "wb")
        return self.fs.open(self.path(name), "wb")

    def close_write(self, f: IO[bytes]) -> None:
        """Flush ``f`` to storage (fsync locally; the upload completes elsewhere) and close it."""
        try:
            f.flush()
            if self.local:
                os.fsync(f.fileno())
        finally:
            f.close()

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` by ``src`` (both names in this folder)."""
        if self.local:
            os.replace(self.path(src), self.path(dst))
        else:
            self.fs.mv(self.path(src), self.path(dst))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Atomically create or replace ``name`` with ``data``."""
        temp = partial_name(name)
        f = self.open_write(temp)
        try:
            f.write(data)
            self.close_write(f)
            self.rename(temp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                f.close()
                self.delete(temp)
            raise

    # The writer's lock ---------------------------------------------------------------------

    def lock(self) -> None:
        """Become the only build writing here, or raise :class:`FolderLockedError`.

        Creates the marker ``.rawpairs`` if missing (call only for an empty folder or one that
        has it). Released by :meth:`close`, or by the process's end whatever the cause.
        """
        if self.local:
            f = open(self.path(MARKER), "a+b")  # noqa: SIM115 - held until close()
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                f.close()
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    raise FolderLockedError(
                        f"--out {self.location}: another build is writing here"
                    ) from err
                raise
            self._lock_file = f
            return
        if not self.exists(MARKER):
            self.write_bytes(MARKER, b'{"rawpairs": "build output folder"}\n')
        mine = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        if self.exists(REMOTE_LOCK):
            held = _remote_lock(self)
            age = time.time() - float(held.get("refreshed", 0))
            if age < LOCK_STALE_S:
                raise FolderLockedError(
                    f"--out {self.location}: another build is writing here "
                    f"({held.get('owner', '?')}, lock refreshed {age:.0f} s ago; a lock not "
                    f"refreshed for {LOCK_STALE_S:.0f} s is taken over)"
                )
        self._refresh(mine)
        self._stop_refresh = threading.Event()
        threading.Thread(target=self._keep_refreshing, args=(mine,), daemon=True).start()

    def _refresh(self, owner: str) -> None:
        body = json.dumps({"owner": owner, "refreshed": time.time()}).encode()
        self.write_bytes(REMOTE_LOCK, body)

    def _keep_refreshing(self, owner: str) -> None:
        assert self._stop_refresh is not None
        while not self._stop_refresh.wait(LOCK_REFRESH_S):
            with contextlib.suppress(Exception):  # a missed refresh only ages the lock
                self._refresh(owner)

    def close(self) -> None:
        """Release the lock, if held."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        if self._stop_refresh is not None:
            self._stop_refresh.set()
            self._stop_refresh = None
            with contextlib.suppress(OSError):
                self.delete(REMOTE_LOCK)


def _remote_lock(folder: OutputFolder) -> dict[str, Any]:
    try:
        held = json.loads(folder.read_text(REMOTE_LOCK))
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}
