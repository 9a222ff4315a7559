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
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rawpairs.engines import EngineError, ordered_results, require_engine
from rawpairs.sample import BuildConfig, Source
from rawpairs.shards import ShardWriter

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

    out: Path
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


def discover_sources(src: Path, labels: bool = False) -> tuple[list[Source], dict[str, int]]:
    """All files under ``src`` (recursively, sorted by relative path; hidden entries skipped).

    Files whose extension is neither RAW nor photo are kept with ``kind="unknown"`` so that the
    build reports them. With ``labels``, each file's class is its parent folder's name; the
    class map is ``{name: index}`` over the sorted names.
    """
    from rawpairs.sources import source_kind

    if not src.exists():
        raise BuildError(f"--src {src}: no such file or directory")
    if src.is_file():
        files, root = [src], src.parent
    else:
        files, root = [], src
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            files.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    relpaths = sorted(p.relative_to(root).as_posix() for p in files)
    if not relpaths:
        raise BuildError(f"--src {src}: no input files")
    class_map: dict[str, int] = {}
    if labels:
        names = sorted({Path(r).parent.name for r in relpaths if Path(r).parent.name})
        class_map = {name: i for i, name in enumerate(names)}
    sources = [
        Source(
            path=str(root / r),
            relpath=r,
            kind=source_kind(r) or "unknown",
            label=class_map.get(Path(r).parent.name) if labels else None,
        )
        for r in relpaths
    ]
    return sources, class_map


def _plan_fingerprint(sources: list[Source]) -> str:
    h = hashlib.sha256()
    for s in sources:
        h.update(f"{s.relpath}\0{os.path.getsize(s.path)}\n".encode())
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


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Write, fsync, rename: after a crash the file is the old or the new one, never partial."""
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _ours(path: Path) -> bool:
    name = path.name
    return (
        name in OUTPUT_FILES
        or name == STATE_DIR
        or (name.startswith("rawpairs-") and name.endswith(".tar"))
        or (name.startswith(".") and name.endswith(".partial"))
    )


def _prepare_out(out: Path, identity: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Make ``out`` ready; return the previous ``build.json`` when this is a resume."""
    out.mkdir(parents=True, exist_ok=True)
    entries = list(out.iterdir())
    if overwrite:
        for p in entries:
            if _ours(p):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        return None
    if not entries:
        return None
    build_json = out / "build.json"
    if not build_json.exists():
        raise BuildError(
            f"--out {out} is not empty and holds no rawpairs build; "
            "use --overwrite or another folder"
        )
    previous = json.loads(build_json.read_text())
    for name, value in identity.items():
        if previous.get(name) != value:
            raise BuildError(
                f"--out {out} holds a build with a different {name.replace('_', ' ')}; "
                "re-run with the same options to resume, or pass --overwrite"
            )
    return previous


def _load_records(out: Path) -> list[dict[str, Any]]:
    """Committed shard records in order; drops any tail whose shard file is missing."""
    state = out / STATE_DIR
    records = []
    for index in range(10**6):
        path = state / f"shard-{index:06d}.json"
        if not path.exists():
            break
        try:
            record = json.loads(path.read_text())
        except ValueError:  # unreadable (e.g. lost in a power cut): not committed
            break
        shard = out / record["name"]
        if not shard.exists() or shard.stat().st_size != record["size"]:
            break
        records.append(record)
    for p in out.glob(".*.partial"):
        p.unlink()
    committed = {r["name"] for r in records}
    for p in out.glob("rawpairs-*.tar"):
        if p.name not in committed:  # renamed but its record was never written
            p.unlink()
    for p in state.glob("shard-*.json") if state.exists() else []:
        if int(p.stem.split("-")[1]) >= len(records):
            p.unlink()
    return records


def _write_outputs(
    out: Path,
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
    tmp = out / ".manifest.parquet.partial"
    pq.write_table(table, tmp)
    os.replace(tmp, out / "manifest.parquet")
    index = {
        "schema_version": 1,
        "shards": [
            {"name": r["name"], "samples": len(r["rows"]), "size": r["size"], "sha256": r["sha256"]}
            for r in records
        ],
    }
    _write_json_atomic(out / "index.json", index)
    tmp = out / ".errors.jsonl.partial"
    tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in errors))
    os.replace(tmp, out / "errors.jsonl")
    _write_json_atomic(out / "build.json", header)
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
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
    src, out = Path(src), Path(out)
    workers = workers or os.cpu_count() or 1
    started = time.monotonic()
    sources, class_map = discover_sources(src, labels=config.labels)
    identity = {
        "config": config.to_dict(),
        "sources_fingerprint": _plan_fingerprint(sources),
        "samples_per_shard": samples_per_shard,
        "shard_size": shard_size,
    }
    try:
        previous = _prepare_out(out, identity, overwrite)
    except OSError as err:
        raise BuildError(f"--out {out}: {err.strerror or err}") from err
    if previous is not None and previous.get("status") == "complete":
        return BuildResult(
            out,
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
        "src": str(src),
        "class_map": class_map,
        "versions": _versions(),
    }
    _write_json_atomic(out / "build.json", header)
    (out / STATE_DIR).mkdir(exist_ok=True)
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
        record = {
            "name": info.name,
            "size": info.size,
            "sha256": info.sha256,
            "end": list(end),
            "rows": rows,
            "positions": info.samples,
            "errors": errors,
        }
        _write_json_atomic(out / STATE_DIR / f"shard-{info.index:06d}.json", record)
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
                        writer = ShardWriter(out, len(records))
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
    return BuildResult(out, len(sources), samples, len(records), n_errors, seconds)
