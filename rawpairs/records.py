"""What a finished group hands back to the build: :class:`ShardRecord`, its shard's resume record.

A worker returns it (pickled, or through Ray's object store); the group writes it as
``.state/shard-NNNNNN.json`` (:meth:`ShardRecord.to_json`) so that a resumed build keeps the
shard; the build reads it back (:meth:`ShardRecord.from_json`) and writes the manifest, index and
error lists from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rawpairs.manifest import RENAMED_COLUMNS

__all__ = ["ShardRecord"]


@dataclass(frozen=True)
class ShardRecord:
    """One group's outcome. ``name``: its shard's file name (``None`` when no source of the
    group made a sample: no shard); ``size`` (bytes) and ``sha256`` of the shard; ``sources``:
    sources in the group; ``rows``: one manifest row per sample, ``positions`` its place in the
    shard (``index``, ``byte_offset``, ``size``); ``errors`` and ``skipped``: the records of
    failed and left-out sources; ``warnings``: ``{path, message}`` raised while a source was
    made, for the driver to report; ``upscaled``: relative paths of photos resized up to the
    crop."""

    name: str | None
    size: int
    sha256: str | None
    sources: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    positions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    upscaled: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return len(self.rows)

    def renamed(self, name: str) -> ShardRecord:
        """The same record for its shard renamed to ``name``."""
        return replace(self, name=name)

    def to_json(self) -> bytes:
        """The record file's bytes (keys sorted, compact separators as ``json.dumps``)."""
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, text: str | bytes) -> ShardRecord:
        """A record read back. A record written by an older rawpairs may lack ``skipped``,
        ``warnings`` and ``upscaled`` (empty then) and name columns by their old names
        (``offset``: today's names are given). Raises ``ValueError``, ``KeyError`` or
        ``TypeError`` for a file that is not a complete record (cut by a power loss)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("a shard record is a JSON object")
        return cls(
            name=data["name"],
            size=data["size"],
            sha256=data["sha256"],
            sources=data.get("sources", 0),  # not written before rawpairs 0.1's resume records
            rows=data["rows"],
            positions=[_renamed(p) for p in data["positions"]],
            errors=data["errors"],
            skipped=data.get("skipped", []),
            warnings=data.get("warnings", []),
            upscaled=data.get("upscaled", []),
        )


def _renamed(position: dict[str, Any]) -> dict[str, Any]:
    """A position entry with today's column names (an older rawpairs wrote ``offset``)."""
    return {RENAMED_COLUMNS.get(k, k): v for k, v in position.items()}
