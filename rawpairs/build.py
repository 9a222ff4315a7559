"""The build: a folder of RAW files and photos → verified WebDataset shards, resumable.

Data flow: :func:`discover_sources` walks ``--src`` (sorted) → each :class:`~rawpairs.sample.Source`
goes to a worker process that runs :func:`~rawpairs.sample.make_samples` and encodes the members →
results come back *in source order* to the single writer in this process, which fills shards of
``samples_per_shard`` samples or ``shard_size`` bytes. Because the order and every sample's bytes
are fixed, the shards are byte-identical whatever the number of workers.

Resume: each committed shard gets a record in ``<out>/.state/`` (its samples, the errors since the
previous shard, and the *cursor* (source index, crop index) where it ends). A re-run of the same
command skips everything before the last record's cursor and writes the rest; a killed build
leaves at most a ``.partial`` file, which is discarded. ``manifest.parquet``, ``index.json``,
``errors.jsonl`` and ``build.json`` are written from the records when the build completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from rawpairs.engines import EngineError, ordered_results, require_engine
from rawpairs.sample import BuildConfig, Source
from rawpairs.shards import ShardWriter
from rawpairs.storage import OutputFolder, is_url

__all__ = [
    "MANIFEST_SCHEMA",
    "BuildError",
    "BuildResult",
    "build",
    "discover_sources",
]

STATE_DIR = ".state"
OUTPUT_FILES = ("manifest.parquet", "index.json", "errors.jsonl", "build.json")


class BuildError(RuntimeError):
    """A build that cannot start (bad --src, configuration clash in --out)."""


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

    @property
    def summary(self) -> str:
        rate = self.samples / self.seconds if self.seconds > 0 else 0.0
        state = "already complete: " if self.already_complete else ""
        return (
            f"{state}{self.samples} samples in {self.shards} shards from {self.sources} sources, "
            f"{self.errors} failed, {self.seconds:.1f} s ({rate:.1f} samples/s) → {self.out}"
        )


# Sources -----------------------------------------------------------------------------------


def _list_files(src: str | Path) -> tuple[dict[str, int], str]:
    """{relative POSIX path: size} of the files under ``src`` (a local path or an fsspec URL),
    hidden files and folders skipped; and the root their paths are relative to."""
    fs, root = fsspec.core.url_to_fs(str(src))
    if not fs.exists(root):
        raise BuildError(f"--src {src}: no such file or directory")
    if fs.isfile(root):
        parent, _, name = root.rstrip("/").rpartition("/")
        return {name: int(fs.size(root))}, parent
    found = fs.find(root, detail=True)
    files = {}
    for path, info in found.items():
        rel = path[len(root.rstrip("/")) + 1 :]
        if info.get("type") != "directory" and not any(p.startswith(".") for p in rel.split("/")):
            files[rel] = int(info.get("size") or 0)
    return files, root


def discover_sources(src: str | Path, labels: bool = False) -> tuple[list[Source], dict[str, int]]:
    """All files under ``src`` (recursively, sorted by relative path; hidden entries skipped).

    ``src`` is a local path or any fsspec URL (``s3://bucket/photos``, ``gs://…``; their
    packages installed). Files whose extension is neither RAW nor photo are kept with
    ``kind="unknown"`` so that the build reports them. With ``labels``, each file's class is its
    parent folder's name; the class map is ``{name: index}`` over the sorted names.
    """
    from rawpairs.sources import source_kind

    try:
        files, root = _list_files(src)
    except (ValueError, ImportError, OSError) as err:
        raise BuildError(f"--src {src}: {err}") from err
    relpaths = sorted(files)
    if not relpaths:
        raise BuildError(f"--src {src}: no input files")
    class_map: dict[str, int] = {}
    if labels:
        names = sorted({Path(r).parent.name for r in relpaths if Path(r).parent.name})
        class_map = {name: i for i, name in enumerate(names)}
    remote = is_url(src) and not str(src).startswith("file://")
    prefix = str(src).split("://", 1)[0] + "://" if remote else ""
    sources = [
        Source(
            path=f"{prefix}{root.rstrip('/')}/{r}" if remote else str(Path(root) / r),
            relpath=r,
            kind=source_kind(r) or "unknown",
            label=class_map.get(Path(r).parent.name) if labels else None,
            size=files[r],
        )
        for r in relpaths
    ]
    return sources, class_map


def _plan_fingerprint(sources: list[Source]) -> str:
    h = hashlib.sha256()
    for s in sources:
        h.update(f"{s.relpath}\0{s.size}\n".encode())
    return h.hexdigest()


# Output folder -----------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import cv2
    import numpy
    import rawpy
    import webdataset

    import rawpairs

    return {
        "rawpairs": rawpairs.__version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "rawpy": rawpy.__version__,
        "libraw": ".".join(map(str, rawpy.libraw_version)),
        "webdataset": getattr(webdataset, "__version__", "unknown"),
    }


def _write_json(out: OutputFolder, name: str, obj: Any) -> None:
    """Atomic: after a crash the file is the old or the new one, never partial."""
    out.write_bytes(name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _ours(name: str) -> bool:
    return (
        name in OUTPUT_FILES
        or name == STATE_DIR
        or (name.startswith("rawpairs-") and name.endswith(".tar"))
        or (name.startswith(".") and name.endswith(".partial"))
    )


def _prepare_out(
    out: OutputFolder, identity: dict[str, Any], overwrite: bool
) -> dict[str, Any] | None:
    """Make ``out`` ready; return the previous ``build.json`` when this is a resume."""
    out.makedirs()
    entries = out.names()
    if overwrite:
        for name in entries:
            if _ours(name):
                out.delete(name)
        return None
    if not entries:
        return None
    if "build.json" not in entries:
        raise BuildError(
            f"--out {out.location} is not empty and holds no rawpairs build; "
            "use --overwrite or another folder"
        )
    previous = json.loads(out.read_text("build.json"))
    for name, value in identity.items():
        if previous.get(name) != value:
            raise BuildError(
                f"--out {out.location} holds a build with a different {name.replace('_', ' ')}; "
                "re-run with the same options to resume, or pass --overwrite"
            )
    return previous


def _load_records(out: OutputFolder) -> list[dict[str, Any]]:
    """Committed shard records in order; drops any tail whose shard file is missing."""
    state_names = set(out.names(STATE_DIR))
    names = set(out.names())
    records = []
    for index in range(len(state_names)):
        name = f"shard-{index:06d}.json"
        if name not in state_names:
            break
        try:
            record = json.loads(out.read_text(f"{STATE_DIR}/{name}"))
        except ValueError:  # unreadable (e.g. lost in a power cut): not committed
            break
        if record["name"] not in names or out.size(record["name"]) != record["size"]:
            break
        records.append(record)
    committed = {r["name"] for r in records}
    for name in names:
        partial = name.startswith(".") and name.endswith(".partial")
        if partial or (
            name.startswith("rawpairs-") and name.endswith(".tar") and name not in committed
        ):
            out.delete(name)  # a partial file, or a shard renamed before its record was written
    for name in state_names:
        if name.startswith("shard-") and int(name[6:12]) >= len(records):
            out.delete(f"{STATE_DIR}/{name}")
    return records


def _write_outputs(
    out: OutputFolder,
    records: list[dict[str, Any]],
    tail_errors: list[dict[str, str]],
    header: dict[str, Any],
) -> tuple[int, int]:
    rows = [
        {**row, "shard": r["name"], **pos}
        for r in records
        for row, pos in zip(r["rows"], r["positions"], strict=True)
    ]
    errors = [e for r in records for e in r["errors"]] + tail_errors
    table = (
        pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        if rows
        else MANIFEST_SCHEMA.empty_table()
    )
    parquet = pa.BufferOutputStream()
    pq.write_table(table, parquet)
    out.write_bytes("manifest.parquet", parquet.getvalue().to_pybytes())
    index = {
        "schema_version": 1,
        "shards": [
            {"name": r["name"], "samples": len(r["rows"]), "size": r["size"], "sha256": r["sha256"]}
            for r in records
        ],
    }
    _write_json(out, "index.json", index)
    out.write_bytes(
        "errors.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in errors).encode()
    )
    _write_json(out, "build.json", header)
    out.delete(STATE_DIR)
    return len(rows), len(errors)


MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("index", pa.int64()),
        ("offset", pa.int64()),
        ("size", pa.int64()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("make", pa.string()),
        ("model", pa.string()),
        ("height", pa.int64()),
        ("width", pa.int64()),
        ("crop_top", pa.int64()),
        ("crop_left", pa.int64()),
        ("cfa", pa.string()),
        ("black_level", pa.float64()),
        ("white_level", pa.float64()),
        ("bit_depth", pa.int64()),
        ("wb_r", pa.float64()),
        ("wb_b", pa.float64()),
        ("digital_gain", pa.float64()),
        ("noise_shot", pa.float64()),
        ("noise_read", pa.float64()),
        ("matrix_provenance", pa.string()),
        ("render", pa.string()),
        ("label", pa.int64()),
    ]
)


# The build ---------------------------------------------------------------------------------


def build(
    src: str | Path,
    out: str | Path,
    config: BuildConfig,
    *,
    workers: int | None = None,
    samples_per_shard: int = 10_000,
    shard_size: int = 256 * 2**20,
    overwrite: bool = False,
    engine: str = "local",
    address: str | None = None,
    progress: Callable[[int, int, int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build (or resume building) the shards of ``src`` into ``out``.

    ``progress(sources_done, sources_total, samples_written, errors)`` is called after each
    source;
    ``warn(line)`` with a one-line message for each failed input. Raises :class:`BuildError`
    when ``src`` is missing or empty, or ``out`` holds a different build (without ``overwrite``).
    """
    try:
        require_engine(engine)
    except EngineError as err:
        raise BuildError(str(err)) from err
    if samples_per_shard < 1:
        raise BuildError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    if shard_size < 1:
        raise BuildError(f"--shard-size must be >= 1 byte, got {shard_size}")
    workers = workers or os.cpu_count() or 1
    started = time.monotonic()
    sources, class_map = discover_sources(src, labels=config.labels)
    try:
        folder = OutputFolder(out)
    except (ValueError, ImportError) as err:  # unknown protocol, or its package missing
        raise BuildError(f"--out {out}: {err}") from err
    try:
        return _build(
            sources, class_map, folder, config, started, workers=workers, src=str(src),
            samples_per_shard=samples_per_shard, shard_size=shard_size, overwrite=overwrite,
            engine=engine, address=address, progress=progress, warn=warn,
        )  # fmt: skip
    finally:
        folder.close()


def _build(
    sources: list[Source],
    class_map: dict[str, int],
    out: OutputFolder,
    config: BuildConfig,
    started: float,
    *,
    workers: int,
    src: str,
    samples_per_shard: int,
    shard_size: int,
    overwrite: bool,
    engine: str,
    address: str | None,
    progress: Callable[[int, int, int, int], None] | None,
    warn: Callable[[str], None] | None,
) -> BuildResult:
    identity = {
        "config": config.to_dict(),
        "sources_fingerprint": _plan_fingerprint(sources),
        "samples_per_shard": samples_per_shard,
        "shard_size": shard_size,
    }
    try:
        previous = _prepare_out(out, identity, overwrite)
    except OSError as err:
        raise BuildError(f"--out {out.location}: {err.strerror or err}") from err
    if previous is not None and previous.get("status") == "complete":
        return BuildResult(
            out.location,
            previous["counts"]["sources"],
            previous["counts"]["samples"],
            previous["counts"]["shards"],
            previous["counts"]["errors"],
            0.0,
            already_complete=True,
        )
    header = {
        **identity,
        "status": "running",
        "src": src,
        "class_map": class_map,
        "versions": _versions(),
    }
    _write_json(out, "build.json", header)
    records = _load_records(out)
    cursor = tuple(records[-1]["end"]) if records else (0, 0)
    written = sum(len(r["rows"]) for r in records)
    n_errors = sum(len(r["errors"]) for r in records)

    writer: ShardWriter | None = None
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []

    def commit(end: tuple[int, int]) -> None:
        nonlocal writer, rows, errors
        assert writer is not None
        info = writer.commit()
        out.publish(writer.final)
        record = {
            "name": info.name,
            "size": info.size,
            "sha256": info.sha256,
            "end": list(end),
            "rows": rows,
            "positions": info.samples,
            "errors": errors,
        }
        _write_json(out, f"{STATE_DIR}/shard-{info.index:06d}.json", record)
        records.append(record)
        writer, rows, errors = None, [], []

    todo = sources[cursor[0] :]
    try:
        for offset, (status, payload) in ordered_results(
            todo, config, workers=workers, engine=engine, address=address
        ):
            position = cursor[0] + offset
            if status == "error":
                errors.append(payload)
                n_errors += 1
                if warn:
                    warn(f"{payload['path']}: {payload['error']}: {payload['message']}")
            else:
                for crop_index, (members, row) in enumerate(payload):
                    if (position, crop_index) < cursor:
                        continue
                    if writer is None:
                        writer = ShardWriter(out.scratch, len(records))
                    writer.add(members)
                    rows.append(row)
                    written += 1
                    if len(rows) >= samples_per_shard or writer.size >= shard_size:
                        commit((position, crop_index + 1))
            if progress:
                progress(position + 1, len(sources), written, n_errors)
        if writer is not None:
            commit((len(sources), 0))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    seconds = time.monotonic() - started
    header.update(
        status="complete",
        seconds=round(seconds, 3),
        counts={
            "sources": len(sources),
            "samples": written,
            "shards": len(records),
            "errors": n_errors,
        },
    )
    samples, n_errors = _write_outputs(out, records, errors, header)
    return BuildResult(out.location, len(sources), samples, len(records), n_errors, seconds)
