"""The build: a folder of RAW files and photos → verified WebDataset shards, resumable.

Data flow: :func:`discover_sources` walks ``--src`` (sorted) → the sources are split into
consecutive *groups* (:func:`plan_groups`: a function of the inputs and the configuration only)
→ an engine (:mod:`rawpairs.engines`) runs :func:`rawpairs.group.write_group` per group: the
process that makes a group's samples writes its shard ``rawpairs-<group>.tar`` itself, straight
into ``--out``, and returns a small record (offsets, sizes, checksum, manifest rows, errors).
This process only collects records and writes ``manifest.parquet``, ``index.json``,
``errors.jsonl`` and ``build.json`` from them. Shard boundaries and bytes do not depend on the
engine or the number of workers, so neither does the output.

Resume: each finished shard has a record in ``<out>/.state/``. A re-run of the same command keeps
every shard with a record and writes the others; a killed writer leaves at most a ``.partial``
file, which is discarded. The folder is marked as a rawpairs build (``.rawpairs``) and locked
while a build writes it; ``--overwrite`` deletes only what a rawpairs build writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from rawpairs.card import CARD_FILE, dataset_card
from rawpairs.config import BuildConfig
from rawpairs.engines import EngineError, GroupFailedError, require_engine, run_groups
from rawpairs.sample import Source, is_documentation
from rawpairs.schema import (
    RENAMED_COLUMNS,
    ShardEntry,
    index_document,
    manifest_schema,
    parse_class_map,
)
from rawpairs.shards import STATE_DIR, shard_name
from rawpairs.storage import MARKER, FolderLockedError, OutputFolder, is_url

__all__ = [
    "MIN_SHARDS",
    "SPLITS",
    "BuildError",
    "BuildOutputError",
    "BuildResult",
    "Split",
    "build",
    "build_splits",
    "discover_sources",
    "estimated_bytes",
    "plan_groups",
    "split_folder",
    "split_of",
]

OUTPUT_FILES = (
    "manifest.parquet",
    "index.json",
    "errors.jsonl",
    "skipped.jsonl",
    "classes.json",
    "README.md",
    "build.json",
)
MIN_SHARDS = 16  # a build of >= 16 sources has >= 16 shards: 16 writers, 16 loader streams
_OURS = re.compile(
    r"^(rawpairs-\d{6}\.tar|\.(rawpairs-\d{6}\.tar|manifest\.parquet|index\.json|errors\.jsonl"
    r"|skipped\.jsonl|classes\.json|README\.md|build\.json)\.\d+-[0-9a-f]{8}\.partial)$"
)
_PARTIAL = re.compile(r"^\..+\.\d+-[0-9a-f]{8}\.partial$")
_RECORD = re.compile(r"^shard-(\d{6})\.json$")


class BuildError(RuntimeError):
    """A build that cannot start (bad --src, bad options, configuration clash in --out)."""


class BuildOutputError(RuntimeError):
    """A build that stopped because its output cannot be written (disk full, permissions)."""


@dataclass
class BuildResult:
    """Counts of a finished build (``build.json`` holds the same and more)."""

    out: str
    sources: int
    samples: int
    shards: int
    errors: int
    seconds: float
    already_complete: bool = False
    skipped: int = 0  # sources left out on purpose (too small, licence files): not failures
    stats: dict[str, Any] = field(default_factory=dict)
    resumed_samples: int = 0  # samples of shards a previous run had finished (kept, not redone)

    @property
    def summary(self) -> str:
        """One line; the rate counts only the samples this run made."""
        made = self.samples - self.resumed_samples
        rate = made / self.seconds if self.seconds > 0 else 0.0
        state = "already complete: " if self.already_complete else ""
        kept = (
            f", {self.resumed_samples} kept from the previous run"
            if self.resumed_samples and not self.already_complete
            else ""
        )
        skipped = f"{self.skipped} skipped (skipped.jsonl), " if self.skipped else ""
        return (
            f"{state}{self.samples} samples in {self.shards} shards from {self.sources} sources, "
            f"{skipped}{self.errors} failed{kept}, {self.seconds:.1f} s ({rate:.1f} samples/s) → "
            f"{self.out}"
        )


# Sources -----------------------------------------------------------------------------------


def _display(name: str) -> str:
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
            sub = f"{rel}/{_display(entry.name)}" if rel else _display(entry.name)
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
            return {_display(base.name): (str(base), st.st_size, problem, None)}
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
    from rawpairs.sources import source_kind

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


def _plan_fingerprint(sources: list[Source]) -> str:
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


def _content_fingerprint(sources: list[Source], threads: int) -> str:
    """One digest of every source's content (:func:`content_digest`), read by ``threads``
    threads (hashing releases the GIL): an edit that keeps a file's size and time is seen."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, threads)) as pool:
        digests = list(pool.map(content_digest, sources))
    h = hashlib.sha256()
    for s, digest in zip(sources, digests, strict=True):
        h.update(f"{s.relpath}\0{digest}\n".encode())
    return h.hexdigest()


# Splits ------------------------------------------------------------------------------------

SPLITS = ("train", "val")


@dataclass(frozen=True)
class Split:
    """One part of a split build: ``name`` (``train`` or ``val``) and the fraction of sources
    that go to ``val``."""

    name: str
    val_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "val_fraction": self.val_fraction}


def split_of(relpath: str, val_fraction: float) -> str:
    """``"val"`` or ``"train"`` for a source, from its path relative to ``--src`` only: the
    first 8 bytes of SHA-256(path) as a fraction of 2⁶⁴ below ``val_fraction`` → ``val``. So a
    source keeps its split when files are added or removed, the folder moves, or the build runs
    elsewhere; and every crop of one source stays in one split (no leak from train into val)."""
    digest = hashlib.sha256(relpath.encode("utf-8", "surrogateescape")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def _in_split(relpath: str, split: Split) -> bool:
    """Whether a source belongs to ``split``: by :func:`split_of`, except licence and README
    files, which go to both (skipped there, and named in both cards)."""
    return is_documentation(relpath) or split_of(relpath, split.val_fraction) == split.name


def split_folder(out: str | Path, name: str) -> str:
    """The folder of split ``name`` inside ``out`` (a path or URL): ``out/name``."""
    return f"{str(out).rstrip('/')}/{name}"


def _check_val_fraction(val_fraction: float) -> None:
    if not 0 < val_fraction < 1:
        raise BuildError(f"--val-fraction must be in (0, 1), got {val_fraction}")


# Groups ------------------------------------------------------------------------------------

# Rough image pixels per byte of input file, and shard bytes per sample pixel: enough to size
# shards near --shard-size (exact sizes are known only once written).
_PIXELS_PER_FILE_BYTE = {"jpeg": 4.0, "lossless": 0.7, "raw": 0.6}
_SHARD_BYTES_PER_PIXEL = {"png": 4.0, "jpeg": 2.3}  # raw.npy 2 B + the encoded RGB
_ASSUMED_FILE_BYTES = 2**20  # for a source of unknown size


def estimated_bytes(source: Source, config: BuildConfig) -> float:
    """An estimate of the shard bytes of one source's samples, from its file size and kind (an
    at-load photo: about its file)."""
    if source.kind == "rgb" and config.unprocess == "at_load":
        return float(source.size or _ASSUMED_FILE_BYTES)
    ext = source.relpath.rsplit(".", 1)[-1].lower()
    family = (
        "raw" if source.kind == "raw" else "jpeg" if ext in ("jpg", "jpeg", "webp") else "lossless"
    )
    pixels = (source.size or _ASSUMED_FILE_BYTES) * _PIXELS_PER_FILE_BYTE[family]
    if config.max_side is not None:
        pixels = min(pixels, 0.75 * config.max_side**2)
    if config.crop is not None and config.crop_mode == "random":
        pixels = min(pixels, config.crops * config.crop**2)
    return pixels * _SHARD_BYTES_PER_PIXEL[config.rgb_format]


def plan_groups(
    sources: list[Source],
    config: BuildConfig,
    *,
    samples_per_shard: int,
    shard_size: int,
    sources_per_shard: int | None = None,
) -> int:
    """How many consecutive sources make one shard: ``sources_per_shard`` when given, else the
    largest number that keeps a shard within ``samples_per_shard`` samples (counting ``crops``
    per source in random-crop mode, else one), within an estimated ``shard_size`` bytes
    (:func:`estimated_bytes`, averaged over the sources), and that gives at least
    :data:`MIN_SHARDS` shards. Depends on the inputs and the configuration only."""
    if sources_per_shard is not None:
        return sources_per_shard
    per_source = config.crops if config.crop is not None and config.crop_mode == "random" else 1
    by_samples = samples_per_shard // per_source
    mean = sum(estimated_bytes(s, config) for s in sources) / max(len(sources), 1)
    by_size = int(shard_size // max(mean, 1.0))
    by_count = math.ceil(len(sources) / MIN_SHARDS)
    return max(1, min(by_samples, by_size, by_count))


# Output folder -----------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    """Versions of what made the bytes (read from package metadata: importing webdataset would
    import torch, seconds of start-up for nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    import cv2
    import numpy
    import rawpy

    import rawpairs

    try:
        wds = version("webdataset")
    except PackageNotFoundError:
        wds = "unknown"
    return {
        "rawpairs": rawpairs.__version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "rawpy": rawpy.__version__,
        "libraw": ".".join(map(str, rawpy.libraw_version)),
        "webdataset": wds,
    }


def _write_json(out: OutputFolder, name: str, obj: Any) -> None:
    """Atomic: after a crash the file is the old or the new one, never partial."""
    out.write_bytes(name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _ours(name: str) -> bool:
    """Whether a rawpairs build writes entries named ``name`` (never true for a user's file
    unless it imitates our names inside a folder marked as ours)."""
    return name in OUTPUT_FILES or name == STATE_DIR or _OURS.match(name) is not None


def _clean_partials(out: OutputFolder) -> None:
    """Remove temporary files of writers that did not finish (this build holds the lock)."""
    for prefix in ("", STATE_DIR):
        for name in out.names(prefix):
            if _PARTIAL.match(name) and (prefix or _ours(name)):
                out.delete(f"{prefix}/{name}" if prefix else name)


def _prepare_out(
    out: OutputFolder, identity: dict[str, Any], overwrite: bool
) -> dict[str, Any] | None:
    """Lock ``out`` and make it ready; return the previous ``build.json`` when resuming."""
    out.makedirs()
    entries = out.names()
    if entries and MARKER not in entries:
        raise BuildError(
            f"--out {out.location} is not empty and is not a rawpairs build folder (no {MARKER} "
            "marker); rawpairs never deletes files it did not write: use an empty or new folder"
        )
    try:
        out.lock()
    except FolderLockedError as err:
        raise BuildError(str(err)) from err
    _clean_partials(out)
    if "build.json" not in entries:
        return None  # new, or killed before its first build.json was complete
    try:
        previous = json.loads(out.read_text("build.json"))
        if not isinstance(previous, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        previous = {"unreadable": str(err)}
    if isinstance(previous.get("config"), dict):  # options added since take their defaults
        previous["config"] = {**BuildConfig().to_dict(), **previous["config"]}
    for name, value in identity.items():
        if previous.get(name) != value:
            if not overwrite:
                if name == "sources_content":
                    raise BuildError(
                        f"--out {out.location} holds a build of the same files with other "
                        "contents (a file under --src was edited since); pass --overwrite to "
                        "rebuild it"
                    )
                raise BuildError(
                    f"--out {out.location} holds a build with a different "
                    f"{name.replace('_', ' ')}; re-run with the same options to resume, or pass "
                    "--overwrite"
                )
            for entry in out.names():
                if _ours(entry):
                    out.delete(entry)
            return None
    return previous


def _load_records(
    out: OutputFolder, groups: int, renumbered: dict[int, int] | None = None
) -> dict[int, dict[str, Any]]:
    """Records of the finished shards; forgets records whose shard is missing or not the size
    recorded. ``renumbered`` ({group: shard number}, from a finished renumbering) names the
    shards that no longer carry their group's number."""
    renumbered = renumbered or {}
    names = set(out.names())
    records = {}
    for name in out.names(STATE_DIR):
        match = _RECORD.match(name)
        if match is None:
            continue
        index = int(match.group(1))
        try:
            record = json.loads(out.read_text(f"{STATE_DIR}/{name}"))
            if record["name"] is not None and index in renumbered:
                record["name"] = shard_name(renumbered[index])
            valid = index < groups and (
                record["name"] is None  # a group without samples has no shard
                or (
                    record["name"] == shard_name(renumbered.get(index, index))
                    and record["name"] in names
                    and out.size(record["name"]) == record["size"]
                )
            )
        except (ValueError, KeyError, TypeError, OSError):  # e.g. lost in a power cut
            valid = False
        if valid:
            records[index] = record
        else:
            out.delete(f"{STATE_DIR}/{name}")
    return records


_RENUMBERING = f"{STATE_DIR}/renumber.json"  # the journal: [[group, shard number], …]
_PHASE_2 = f"{STATE_DIR}/renumber-phase-2"  # every shard to move is in .state/


def _staged(number: int) -> str:
    return f"{STATE_DIR}/renumber-{number:06d}.tar"


def _renumber(out: OutputFolder, moves: list[tuple[int, int]]) -> None:
    """Give the shards contiguous numbers: shard ``rawpairs-<group>.tar`` becomes
    ``rawpairs-<number>.tar`` for each (group, number) of ``moves`` (numbers below groups, both
    ascending). Idempotent and safe to stop at any point, the journal (``.state/renumber.json``,
    written before the first rename) being re-run by the next run: phase 1 moves each shard into
    ``.state/`` (no final name is written while a group's name may still hold its shard), a
    marker, then phase 2 moves each into its final name."""
    if not out.exists(_RENUMBERING):
        _write_json(out, _RENUMBERING, [list(m) for m in moves])
    if not out.exists(_PHASE_2):
        for group, number in moves:
            if not out.exists(_staged(number)):
                out.rename(shard_name(group), _staged(number))
        out.write_bytes(_PHASE_2, b"")
    for _, number in moves:
        if out.exists(_staged(number)):
            out.rename(_staged(number), shard_name(number))


def _resume_renumbering(out: OutputFolder) -> dict[int, int]:
    """Finish the renumbering a stopped run journalled (every group was finished then); return
    its {group: shard number}."""
    if not out.exists(_RENUMBERING):
        return {}
    try:
        moves = [(int(g), int(n)) for g, n in json.loads(out.read_text(_RENUMBERING))]
    except (ValueError, TypeError):  # cut by a power loss before it was complete: not started
        out.delete(_RENUMBERING)
        return {}
    _renumber(out, moves)
    return dict(moves)


def _renamed(position: dict[str, Any]) -> dict[str, Any]:
    """A record's position entry with today's column names (a record written by an older
    rawpairs, resumed, says ``offset``)."""
    return {RENAMED_COLUMNS.get(k, k): v for k, v in position.items()}


def _write_outputs(
    out: OutputFolder, records: list[dict[str, Any]], header: dict[str, Any]
) -> tuple[int, int]:
    rows = [
        {**row, "shard": r["name"], **_renamed(pos)}
        for r in records
        for row, pos in zip(r["rows"], r["positions"], strict=True)
    ]
    errors = [e for r in records for e in r["errors"]]
    skipped = [e for r in records for e in r.get("skipped", [])]
    if header.get("config", {}).get("labels"):
        _write_json(out, "classes.json", header["class_map"])
    schema = manifest_schema()
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    parquet = pa.BufferOutputStream()
    pq.write_table(table, parquet)
    out.write_bytes("manifest.parquet", parquet.getvalue().to_pybytes())
    entries = [
        ShardEntry(r["name"], len(r["rows"]), r["size"], r["sha256"])
        for r in records
        if r["name"] is not None
    ]
    _write_json(out, "index.json", index_document(entries))
    for name, lines in (("errors.jsonl", errors), ("skipped.jsonl", skipped)):
        out.write_bytes(name, "".join(json.dumps(e, sort_keys=True) + "\n" for e in lines).encode())
    card = dataset_card(header, entries, rows, skipped, errors)
    out.write_bytes(CARD_FILE, card.encode("utf-8"))  # atomic, like every output file
    _write_json(out, "build.json", header)
    out.delete(STATE_DIR)
    return len(rows), len(errors)


# The build ---------------------------------------------------------------------------------


def build(
    src: str | Path,
    out: str | Path,
    config: BuildConfig,
    *,
    workers: int | None = None,
    samples_per_shard: int = 10_000,
    shard_size: int = 256 * 2**20,
    sources_per_shard: int | None = None,
    overwrite: bool = False,
    engine: str = "local",
    address: str | None = None,
    progress: Callable[[int, int, int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
    class_map: Mapping[str, int] | None = None,
    split: Split | None = None,
    exclude: str | Path | None = None,
) -> BuildResult:
    """Build (or resume building) the shards of ``src`` into ``out``.

    Shards hold consecutive groups of sources (:func:`plan_groups`). ``workers``: processes
    (default: one per core, never more than the shards left to write); ``progress(sources_done,
    sources_total, samples_written, errors)`` is called after each shard; ``warn(line)`` with a
    one-line message for each failed input. ``class_map`` (with ``config.labels``): the class ids
    to use (``{folder name: id}``, e.g. another build's ``classes.json``) instead of numbering
    this build's folders; a labelled build writes its map as ``classes.json``. Raises
    :class:`BuildError` when ``src`` is missing or empty, an option is invalid (a class folder
    missing from ``class_map``), or ``out`` cannot be used (another build's folder, a different
    build without ``overwrite``, a folder not made by rawpairs, locked by a running build);
    :class:`BuildOutputError` when writing fails (disk full), leaving no partial shard.

    ``split``: build only the sources of that split (:func:`split_of`; the class map still
    numbers every class folder of ``src``, so both splits write the same ``classes.json``), and
    record it in ``build.json``. ``exclude``: a folder not to read as input (default ``out``;
    :func:`build_splits` passes the folder holding both splits).
    """
    try:
        require_engine(engine)
    except EngineError as err:
        raise BuildError(str(err)) from err
    if samples_per_shard < 1:
        raise BuildError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    if shard_size < 1:
        raise BuildError(f"--shard-size must be >= 1 byte, got {shard_size}")
    if sources_per_shard is not None and sources_per_shard < 1:
        raise BuildError(f"--sources-per-shard must be >= 1, got {sources_per_shard}")
    if workers is not None and workers < 1:
        raise BuildError(f"--workers must be >= 1, got {workers}")
    for option, value in (("--src", src), ("--out", out)):
        if not str(value).strip():
            raise BuildError(f"{option} is empty: name a folder, file or URL")
    started, cpu_started = time.monotonic(), time.process_time()
    if class_map is not None:
        try:
            class_map = parse_class_map(class_map, "--class-map")
        except ValueError as err:
            raise BuildError(str(err)) from err
    sources, class_map = discover_sources(
        src, labels=config.labels, out=exclude or out, class_map=class_map
    )
    if split is not None:
        _check_val_fraction(split.val_fraction)
        sources = [s for s in sources if _in_split(s.relpath, split)]
        if all(is_documentation(s.relpath) for s in sources):
            raise BuildError(
                f"--val-fraction {split.val_fraction} puts no input under --src {src} into "
                f"{split.name}: change the fraction or add inputs"
            )
    try:
        folder = OutputFolder(out)
    except (ValueError, ImportError) as err:  # unknown protocol, or its package missing
        raise BuildError(f"--out {out}: {err}") from err
    if not folder.shared and engine == "ray":
        raise BuildError(f"--out {out}: a per-process file system cannot be written by Ray tasks")
    per_shard = plan_groups(
        sources,
        config,
        samples_per_shard=samples_per_shard,
        shard_size=shard_size,
        sources_per_shard=sources_per_shard,
    )
    identity = {
        "config": config.to_dict(),
        "sources_fingerprint": _plan_fingerprint(sources),
        "sources_per_shard": per_shard,
        "class_map": class_map,
        **({"split": split.to_dict()} if split is not None else {}),
        # last: a differing configuration or file list is named before the contents
        "sources_content": _content_fingerprint(sources, min(8, os.cpu_count() or 1)),
    }
    try:
        result = _build(
            sources, class_map, folder, config, started, identity, workers=workers,
            src=str(src), overwrite=overwrite, engine=engine, address=address,
            progress=progress, warn=warn,
        )  # fmt: skip
        cpu = time.process_time() - cpu_started
        result.stats["driver_cpu_s"] = cpu
        result.stats["driver_overhead_cpu_s"] = cpu - result.stats.get("driver_work_cpu_s", 0.0)
        return result
    except OSError as err:
        raise BuildOutputError(_os_message(folder, err)) from err
    finally:
        folder.close()


def build_splits(
    src: str | Path,
    out: str | Path,
    config: BuildConfig,
    val_fraction: float,
    *,
    on_split: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, BuildResult]:
    """Build (or resume) ``out/train`` and ``out/val``: each a complete build of its sources
    (:func:`split_of`), with its own shards, manifest, index and card, and the same class map.

    ``options`` are :func:`build`'s; ``on_split(name)`` is called before each split starts.
    Checks up front that both splits get sources (:class:`BuildError` otherwise), so nothing is
    written for a fraction that leaves one empty.
    """
    _check_val_fraction(val_fraction)
    try:
        parent = OutputFolder(out)
    except (ValueError, ImportError) as err:
        raise BuildError(f"--out {out}: {err}") from err
    try:
        if MARKER in parent.names():
            raise BuildError(
                f"--out {out} holds a build without a split: a split build writes {out}/train "
                f"and {out}/val; use another --out (or remove that build)"
            )
    finally:
        parent.close()
    sources, _ = discover_sources(
        src, labels=config.labels, out=out, class_map=options.get("class_map")
    )
    images = [s for s in sources if not is_documentation(s.relpath)]
    counts = Counter(split_of(s.relpath, val_fraction) for s in images)
    for name in SPLITS:
        if not counts[name]:
            raise BuildError(
                f"--val-fraction {val_fraction} puts none of the {len(images)} inputs under "
                f"--src {src} into {name}: change the fraction or add inputs"
            )
    results = {}
    for name in SPLITS:
        if on_split:
            on_split(name)
        results[name] = build(
            src, split_folder(out, name), config, split=Split(name, val_fraction), exclude=out,
            **options,
        )  # fmt: skip
    return results


def _os_message(out: OutputFolder, err: OSError) -> str:
    where = f" ({os.path.basename(err.filename)})" if getattr(err, "filename", None) else ""
    return f"--out {out.location}: cannot write{where}: {err.strerror or err}"


def _build(
    sources: list[Source],
    class_map: dict[str, int],
    out: OutputFolder,
    config: BuildConfig,
    started: float,
    identity: dict[str, Any],
    *,
    workers: int | None,
    src: str,
    overwrite: bool,
    engine: str,
    address: str | None,
    progress: Callable[[int, int, int, int], None] | None,
    warn: Callable[[str], None] | None,
) -> BuildResult:
    per_shard = identity["sources_per_shard"]
    groups = [sources[i : i + per_shard] for i in range(0, len(sources), per_shard)]
    previous = _prepare_out(out, identity, overwrite)
    if previous is not None and previous.get("status") == "complete":
        out.delete(STATE_DIR)  # a build killed after its last write
        counts = previous["counts"]
        return BuildResult(
            out.location, counts["sources"], counts["samples"], counts["shards"],
            counts["errors"], 0.0, already_complete=True, skipped=counts.get("skipped", 0),
        )  # fmt: skip
    header = {
        **identity,
        "status": "running",
        "src": _display(src),
        "versions": _versions(),
    }
    _write_json(out, "build.json", header)
    renumbered = _resume_renumbering(out)
    records = _load_records(out, len(groups), renumbered)
    todo = {i: groups[i] for i in range(len(groups)) if i not in records}
    done_sources = sum(len(groups[i]) for i in records)
    written = resumed = sum(len(r["rows"]) for r in records.values())
    n_errors = sum(len(r["errors"]) for r in records.values())
    n_skipped = sum(len(r.get("skipped", [])) for r in records.values())
    n_upscaled = sum(len(r.get("upscaled", [])) for r in records.values())
    n_workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))
    if not out.shared:
        n_workers = 1  # its files exist only in this process
    stats: dict[str, Any] = {"workers": n_workers, "groups_done_before": len(records)}
    arrivals = stats["records"] = []  # (seconds since the start, samples) per finished shard
    finished = run_groups(
        todo, config, out.location, workers=n_workers, engine=engine, address=address,
        stats=stats, isolate_raw=out.shared,
    )  # fmt: skip
    try:
        for index, record in finished:
            records[index] = record
            done_sources += len(groups[index])
            written += len(record["rows"])
            n_errors += len(record["errors"])
            n_skipped += len(record.get("skipped", []))
            n_upscaled += len(record.get("upscaled", []))
            arrivals.append((round(time.monotonic() - started, 4), len(record["rows"])))
            for e in record["errors"]:
                if warn:
                    warn(f"{e['path']}: {e['error']}: {e['message']}")
            for note in record.get("warnings", []):
                if warn:
                    warn(f"{note['path']}: {note['message']}")
            if progress:
                progress(done_sources, len(sources), written, n_errors)
    except GroupFailedError as err:
        raise BuildOutputError(f"--out {out.location}: {err}") from err
    finally:
        finished.close()  # stops the workers (on an early exit) before their files are cleaned
        _clean_partials(out)
    ordered = [records[i] for i in range(len(groups))]
    shards = [r for r in ordered if r["name"] is not None]
    # A group whose every source failed has no shard: number the shards that exist 0, 1, 2, …
    moves = [
        (i, n)
        for n, i in enumerate(i for i, r in enumerate(ordered) if r["name"] is not None)
        if ordered[i]["name"] != shard_name(n)
    ]
    if moves:
        _renumber(out, moves)
        for i, n in moves:
            ordered[i] = {**ordered[i], "name": shard_name(n)}
    seconds = time.monotonic() - started
    header.update(
        status="complete",
        seconds=round(seconds, 3),
        counts={
            "sources": len(sources),
            "samples": written,
            "shards": len(shards),
            "errors": n_errors,
            "skipped": n_skipped,
            "upscaled": n_upscaled,
        },
    )
    samples, n_errors = _write_outputs(out, ordered, header)
    return BuildResult(
        out.location, len(sources), samples, len(shards), n_errors, seconds, stats=stats,
        resumed_samples=resumed, skipped=n_skipped,
    )  # fmt: skip
