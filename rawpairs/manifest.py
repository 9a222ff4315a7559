"""The build's tables of contents: ``manifest.parquet`` (one row per sample) and ``index.json``
(one entry per shard), their layouts, and the functions that write and read them (docs/schema.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rawpairs.jsonfields import check_fields, int_value, str_value
from rawpairs.layout import INDEX_FILE
from rawpairs.metadata import SampleMeta

__all__ = [
    "INDEX_VERSION",
    "MANIFEST_COLUMNS",
    "POSITION_COLUMNS",
    "RENAMED_COLUMNS",
    "ShardEntry",
    "index_document",
    "manifest_row",
    "manifest_schema",
    "parse_index",
    "read_manifest",
]

INDEX_VERSION = 1  # index.json's layout

MANIFEST_COLUMNS = (
    ("key", "string"),
    ("shard", "string"),  # the shard's file name
    ("index", "int64"),  # sample's position in its shard
    ("byte_offset", "int64"),  # byte offset of its first tar header (was `offset`, see below)
    ("size", "int64"),  # bytes of its tar entries
    ("source", "string"),
    ("kind", "string"),
    ("make", "string"),
    ("model", "string"),
    ("height", "int64"),
    ("width", "int64"),
    ("crop_top", "int64"),
    ("crop_left", "int64"),
    ("cfa", "string"),
    ("black_level", "float64"),  # mean of the four per-position black levels
    ("white_level", "float64"),
    ("bit_depth", "int64"),
    ("wb_r", "float64"),
    ("wb_b", "float64"),
    ("digital_gain", "float64"),
    ("noise_shot", "float64"),
    ("noise_read", "float64"),
    ("matrix_provenance", "string"),
    ("render", "string"),
    ("label", "int64"),
)
POSITION_COLUMNS = ("shard", "index", "byte_offset", "size")
# Columns renamed since the first manifests: {old name: new name}. ``offset`` is a keyword of
# DuckDB and SQL, so a plain ``SELECT offset`` failed; older manifests are still read.
RENAMED_COLUMNS = {"offset": "byte_offset"}


def read_manifest(path: str | Path) -> Any:
    """``manifest.parquet`` as a ``pyarrow.Table`` with today's column names (an older manifest's
    ``offset`` is read as ``byte_offset``). Raises what ``pyarrow`` raises for an unreadable
    file."""
    table = pq.read_table(path)
    names = [RENAMED_COLUMNS.get(n, n) for n in table.column_names]
    return table.rename_columns(names) if names != table.column_names else table


def manifest_schema() -> Any:
    """The ``pyarrow`` schema of ``manifest.parquet`` (:data:`MANIFEST_COLUMNS`)."""
    return pa.schema([(name, getattr(pa, kind)()) for name, kind in MANIFEST_COLUMNS])


def manifest_row(meta: SampleMeta, label: int | None) -> dict[str, Any]:
    """A sample's manifest row, without its position columns (:data:`POSITION_COLUMNS`, which the
    shard writer knows)."""
    cam, src, crop = meta.camera, meta.source, meta.crop
    return {
        "key": meta.key,
        "source": src.path,
        "kind": src.kind.value,
        "make": src.make or "",
        "model": src.model or "",
        "height": crop.height,
        "width": crop.width,
        "crop_top": crop.top,
        "crop_left": crop.left,
        "cfa": cam.cfa.value,
        "black_level": float(sum(cam.black_level) / 4),
        "white_level": cam.white_level,
        "bit_depth": cam.bit_depth,
        "wb_r": cam.wb_gains[0],
        "wb_b": cam.wb_gains[2],
        "digital_gain": cam.digital_gain,
        "noise_shot": cam.noise_shot,
        "noise_read": cam.noise_read,
        "matrix_provenance": cam.provenance.get("xyz_to_cam", ""),
        "render": meta.render.method.value,
        "label": label,
    }


@dataclass(frozen=True)
class ShardEntry:
    """One shard in ``index.json``: file name (a plain name inside the build folder), sample
    count, byte size and hex SHA-256."""

    name: str
    samples: int
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples": self.samples,
            "size": self.size,
            "sha256": self.sha256,
        }


def index_document(shards: Sequence[ShardEntry]) -> dict[str, Any]:
    """The ``index.json`` object."""
    return {"schema_version": INDEX_VERSION, "shards": [s.to_dict() for s in shards]}


def parse_index(d: Any) -> list[ShardEntry]:
    """Inverse of :func:`index_document`; ``ValueError`` for a malformed index, another schema
    version, or a shard name that is not a plain file name (no folders, no ``..``)."""
    check_fields(d, INDEX_FILE, ("schema_version", "shards"))
    if d["schema_version"] != INDEX_VERSION or isinstance(d["schema_version"], bool):
        raise ValueError(
            f"index.json has schema version {d['schema_version']!r:.20}, this rawpairs reads "
            f"{INDEX_VERSION}"
        )
    if not isinstance(d["shards"], list):
        raise ValueError("index.json shards must be a list")
    entries = []
    for i, s in enumerate(d["shards"]):
        check_fields(s, f"index.json shard {i}", ("name", "samples", "size", "sha256"))
        name = str_value(s["name"], f"index.json shard {i} name")
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(f"index.json shard {i}: {name!r:.80} is not a plain file name")
        entries.append(
            ShardEntry(
                name=name,
                samples=int_value(s["samples"], f"index.json {name} samples", 0),
                size=int_value(s["size"], f"index.json {name} size", 0),
                sha256=str_value(s["sha256"], f"index.json {name} sha256"),
            )
        )
    return entries
