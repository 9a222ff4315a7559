"""What a finished build writes beside its shards, from the groups' records: ``manifest.parquet``,
``index.json``, ``errors.jsonl``, ``skipped.jsonl``, ``classes.json``, the card ``README.md`` and
``build.json`` (written last: its ``status`` says ``complete`` only when everything else is)."""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import cv2
import numpy
import pyarrow as pa
import pyarrow.parquet as pq
import rawpy

import rawpairs
from rawpairs.card import dataset_card
from rawpairs.layout import (
    BUILD_FILE,
    CARD_FILE,
    CLASSES_FILE,
    ERRORS_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    SKIPPED_FILE,
    STATE_DIR,
)
from rawpairs.manifest import ShardEntry, index_document, manifest_schema
from rawpairs.records import ShardRecord
from rawpairs.storage import OutputFolder

__all__ = ["versions", "write_json", "write_outputs"]


def versions() -> dict[str, str]:
    """Versions of what made the bytes (read from package metadata: importing webdataset would
    import torch, seconds of start-up for nothing)."""
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


def write_json(out: OutputFolder, name: str, obj: Any) -> None:
    """Atomic: after a crash the file is the old or the new one, never partial."""
    out.write_bytes(name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def write_outputs(
    out: OutputFolder, records: list[ShardRecord], header: dict[str, Any]
) -> tuple[int, int]:
    """Write the manifest, index, error lists, class map, card and (last) the finished
    ``build.json`` from the records of every group (in group order), then forget the resume
    state; return (samples, failed sources)."""
    rows = [
        {**row, "shard": r.name, **pos}
        for r in records
        for row, pos in zip(r.rows, r.positions, strict=True)
    ]
    errors = [e for r in records for e in r.errors]
    skipped = [e for r in records for e in r.skipped]
    if header.get("config", {}).get("labels"):
        write_json(out, CLASSES_FILE, header["class_map"])
    schema = manifest_schema()
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    parquet = pa.BufferOutputStream()
    pq.write_table(table, parquet)
    out.write_bytes(MANIFEST_FILE, parquet.getvalue().to_pybytes())
    entries = [
        ShardEntry(r.name, r.samples, r.size, r.sha256) for r in records if r.name is not None
    ]
    write_json(out, INDEX_FILE, index_document(entries))
    for name, lines in ((ERRORS_FILE, errors), (SKIPPED_FILE, skipped)):
        out.write_bytes(name, "".join(json.dumps(e, sort_keys=True) + "\n" for e in lines).encode())
    card = dataset_card(header, entries, rows, skipped, errors)
    out.write_bytes(CARD_FILE, card.encode("utf-8"))  # atomic, like every output file
    write_json(out, BUILD_FILE, header)
    out.delete(STATE_DIR)
    return len(rows), len(errors)
