"""Where a build's inputs come from: the files under ``--src`` as sorted :class:`Source` records.

:func:`discover_sources` lists a local folder (following symbolic links to folders once each) or
any fsspec URL, keeps entries that are not inputs (FIFOs, broken links, loops) as sources that
fail, and numbers the class folders (``--labels folder``). :func:`listing_fingerprint` and
:func:`content_fingerprint` are what a resumed build compares to know it builds the same files.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec

from rawpairs.errors import BuildError
from rawpairs.sample import Source
from rawpairs.sources import source_kind
from rawpairs.storage import is_url

__all__ = [
    "content_digest",
    "content_fingerprint",
    "discover_sources",
    "display_name",
    "listing_fingerprint",
]


def display_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as surrogates) → ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# relpath → (path, size, problem, content token of an object store or None)
_Listing = dict[str, tuple[str, int, str | None, str | None]]


def _list_local(root: Path, exclude: Path | None) -> _Listing:
    """Regular files under ``root``, following symbolic links to folders once each (a link
    back to a folder already walked is reported, not followed); hidden entries skipped; the
    folder ``exclude`` (the build's own output) skipped."""
    found: _Listing = {}
    seen: dict[tuple[int, int], str] = {}

    def walk(folder: Path, rel: str) -> None:
        info = folder.stat()
        if (info.st_dev, info.st_ino) in seen:
            first = seen[(info.st_dev, info.st_ino)] or "--src"
            found[rel] = (str(folder), 0, f"symbolic link loop (back to {first})", None)
            return
        seen[(info.st_dev, info.st_ino)] = rel
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            found[rel or "."] = (str(folder), 0, f"cannot list folder ({err.strerror})", None)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            sub = f"{rel}/{display_name(entry.name)}" if rel else display_name(entry.name)
            try:
                st = path.stat()
            except OSError as err:
                problem = "broken symbolic link" if path.is_symlink() else err.strerror
                found[sub] = (str(path), 0, problem, None)
                continue
            if stat.S_ISDIR(st.st_mode):
                if exclude is not None and path.resolve() == exclude:
                    continue
                walk(path, sub)
            elif stat.S_ISREG(st.st_mode):
                found[sub] = (str(path), st.st_size, None, None)
            else:
                kind = _file_type(st.st_mode)
                found[sub] = (str(path), 0, f"not a regular file ({kind})", None)

    walk(root, "")
    return found


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def _list_files(src: str | Path, out: str | Path | None) -> _Listing:
    """{relative POSIX path: (path to open, size, problem)} of the entries under ``src`` (a local
    path or an fsspec URL), hidden files and folders and the output folder ``out`` skipped."""
    fs, root = fsspec.core.url_to_fs(str(src))
    local = not is_url(src) or str(src).startswith("file://")
    if not fs.exists(root):
        raise BuildError(f"--src {src}: no such file or directory")
    if local:
        base = Path(root)
        if not base.is_dir():
            st = base.stat()
            problem = (
                None
                if stat.S_ISREG(st.st_mode)
                else f"not a regular file ({_file_type(st.st_mode)})"
            )
            return {display_name(base.name): (str(base), st.st_size, problem, None)}
        exclude = None
        if out is not None and (not is_url(out) or str(out).startswith("file://")):
            exclude = Path(fsspec.core.url_to_fs(str(out))[1]).resolve()
        return _list_local(base, exclude)
    prefix = str(src).split("://", 1)[0] + "://"
    if fs.isfile(root):
        info = fs.info(root)
        name = root.rstrip("/").rpartition("/")[2]
        return {name: (f"{prefix}{root}", int(info.get("size") or 0), None, _token(info))}
    skip = None
    if out is not None and str(out).split("://", 1)[0] == prefix[:-3]:
        skip = fsspec.core.url_to_fs(str(out))[1].rstrip("/") + "/"
    files: _Listing = {}
    for path, info in fs.find(root, detail=True).items():
        rel = path[len(root.rstrip("/")) + 1 :]
        hidden = any(p.startswith(".") for p in rel.split("/"))
        if info.get("type") == "directory" or hidden or (skip and path.startswith(skip)):
            continue
        files[rel] = (f"{prefix}{path}", int(info.get("size") or 0), None, _token(info))
    return files


_TOKENS = ("ETag", "etag", "md5Hash", "md5", "crc32c", "checksum")  # s3, gcs, azure, …


def _token(info: dict[str, Any]) -> str | None:
    """A content token an object store gives in its listing (changes when the content does)."""
    for name in _TOKENS:
        if info.get(name):
            return f"{name}={info[name]}"
    return None


def discover_sources(
    src: str | Path,
    labels: bool = False,
    out: str | Path | None = None,
    class_map: Mapping[str, int] | None = None,
) -> tuple[list[Source], dict[str, int]]:
    """All files under ``src`` (recursively, sorted by relative path; hidden entries skipped).

    ``src`` is a local path or any fsspec URL (``s3://bucket/photos``, ``gs://…``; their
    packages installed). Local symbolic links to folders are followed (loops are reported);
    only regular files are inputs: any other entry (named pipe, socket, device, broken link) and
    files whose extension is neither RAW nor photo are kept as sources that fail, so that the
    build reports them. Names that are not UTF-8 get ``\\xNN`` escapes in ``relpath``. The output
    folder ``out``, when inside ``src``, is skipped. With ``labels``, each file's class is its
    parent folder's name; the class map is ``{name: index}`` over the sorted names, or the given
    ``class_map`` (every class folder must be in it: :class:`BuildError` names the first that is
    not).
    """
    try:
        files = _list_files(src, out)
    except (ValueError, ImportError, OSError) as err:
        raise BuildError(f"--src {src}: {err}") from err
    relpaths = sorted(files)
    if not relpaths:
        raise BuildError(f"--src {src}: no input files")
    names = sorted({Path(r).parent.name for r in relpaths if Path(r).parent.name})
    if class_map is not None:
        if not labels:
            raise BuildError("--class-map needs --labels folder")
        missing = [n for n in names if n not in class_map]
        if missing:
            example = next(r for r in relpaths if Path(r).parent.name == missing[0])
            raise BuildError(
                f"--class-map has no class for folder {missing[0]!r} ({example}"
                f"{f' and {len(missing) - 1} more folders' if len(missing) > 1 else ''}): add "
                "it to the map, or leave the folder out of --src"
            )
        class_map = dict(class_map)
    else:
        class_map = {name: i for i, name in enumerate(names)} if labels else {}
    sources = [
        Source(
            path=files[r][0],
            relpath=r,
            kind=source_kind(r) or "unknown",
            label=class_map.get(Path(r).parent.name) if labels else None,
            size=files[r][1],
            problem=files[r][2],
            version=files[r][3],
        )
        for r in relpaths
    ]
    return sources, class_map


def listing_fingerprint(sources: list[Source]) -> str:
    """One digest of the sources' relative paths and sizes (the file list of a build)."""
    h = hashlib.sha256()
    for s in sources:
        h.update(f"{s.relpath}\0{s.size}\n".encode())
    return h.hexdigest()


def content_digest(source: Source) -> str:
    """What a source holds: the SHA-256 of a local file's bytes; an object store's content token
    from the listing (ETag, MD5, CRC32C), else the SHA-256 of its bytes; a fixed text for an
    entry that is not an input (``-``) or cannot be read (``unreadable:<cause>``). Only regular
    files are read (a FIFO that replaced a file is not opened for reading)."""
    if source.problem is not None:
        return "-"
    h = hashlib.sha256()
    if is_url(source.path) and not source.path.startswith("file://"):
        if source.version:
            return source.version
        try:
            with fsspec.open(source.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except (OSError, ValueError) as err:
            return f"unreadable:{type(err).__name__}"
        return h.hexdigest()
    path = source.path.removeprefix("file://")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        return f"unreadable:{err.errno}"
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return "unreadable:not-a-regular-file"
        try:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        except OSError as err:
            return f"unreadable:{err.errno}"
    return h.hexdigest()


def content_fingerprint(sources: list[Source], threads: int) -> str:
    """One digest of every source's content (:func:`content_digest`), read by ``threads``
    threads (hashing releases the GIL): an edit that keeps a file's size and time is seen."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        digests = list(pool.map(content_digest, sources))
    h = hashlib.sha256()
    for s, digest in zip(sources, digests, strict=True):
        h.update(f"{s.relpath}\0{digest}\n".encode())
    return h.hexdigest()
