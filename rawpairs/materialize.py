"""At-load shards → stored-RAW shards: pin exactly the RAW a training run reads.

``rawpairs materialize IN OUT`` reads every shard of the local build folder ``IN`` and writes
the same samples into ``OUT`` (a new local folder or fsspec URL), shard for shard: an at-load sample
(``render.unprocess == "at_load"``) becomes a stored sample whose ``raw.npy`` is the RAW its
recipe implies (:func:`rawpairs.sample.sample_raw`: the seeded noise of an ``in_raw`` sample
included, none for ``at_load`` noise, which readers keep adding) and whose RGB is the decoded
crop as a PNG; every other sample is copied byte for byte. The result is what ``rawpairs build
--unprocess in_build`` writes for those RGB images: for whole-photo JPEG samples the shards are
byte-identical to such a build's. Deterministic: the same ``IN`` gives the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rawpairs.choices import Unprocess
from rawpairs.errors import CorruptInputError
from rawpairs.layout import BUILD_FILE, CLASSES_FILE, ERRORS_FILE, INDEX_FILE, MANIFEST_FILE
from rawpairs.manifest import ShardEntry, index_document, manifest_row, manifest_schema, parse_index
from rawpairs.sample import sample_raw
from rawpairs.schema import decode_sample, encode_sample
from rawpairs.shards import ShardWriter
from rawpairs.storage import OutputFolder
from rawpairs.tarwalk import read_shard

__all__ = ["MaterializeError", "materialize"]


class MaterializeError(ValueError):
    """``IN`` is not a finished build, ``OUT`` is not new and empty, or a sample is damaged."""


def _json(folder: Path, name: str) -> Any:
    if not (folder / name).is_file():
        raise MaterializeError(f"{folder}: not a finished rawpairs build (no {name})")
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MaterializeError(f"{folder / name}: cannot read it ({err})") from err


def _members(sample: Any) -> dict[str, bytes | str]:
    """A decoded at-load sample as stored-RAW members (its RAW made, its RGB as PNG)."""
    meta = sample.meta
    render = replace(meta.render, unprocess=Unprocess.IN_BUILD, noise_key=None)
    return encode_sample(replace(meta, render=render), sample_raw(sample), sample.rgb, sample.label)


def materialize(src: str | Path, out: str, *, progress: Any = None) -> int:
    """Write the stored-RAW twin of build folder ``src`` into the new folder ``out`` (module
    docstring); return the number of samples made from recipes. Raises :class:`MaterializeError`
    (one line) for an unfinished or damaged ``src`` or a non-empty ``out``."""
    src = Path(src)
    header = _json(src, BUILD_FILE)
    if not isinstance(header, dict) or header.get("status") != "complete":
        raise MaterializeError(f"{src}: not a finished rawpairs build (build.json)")
    try:
        entries = parse_index(_json(src, INDEX_FILE))
    except ValueError as err:
        raise MaterializeError(f"{src / 'index.json'}: {err}") from err
    folder = OutputFolder(out)
    folder.makedirs()
    if folder.names():
        raise MaterializeError(f"{out}: not empty; materialize writes a new folder")
    folder.lock()
    made, rows, shards = 0, [], []
    try:
        for number, entry in enumerate(entries):
            writer = ShardWriter(folder, number)
            shard_rows = []
            try:
                for tar_sample in read_shard(src / entry.name):
                    assert tar_sample.members is not None
                    sample = decode_sample(tar_sample.members, entry.name, tar_sample.key)
                    writer.begin()
                    if sample.raw is None:
                        writer.add(_members(sample))
                        made += 1
                    else:
                        writer.add({"__key__": sample.key, **tar_sample.members})
                    (position,) = writer.keep()
                    row = manifest_row(sample.meta, sample.label)  # alike in both forms
                    shard_rows.append({**row, "shard": writer.name, **position})
                info = writer.commit()
            except (CorruptInputError, ValueError) as err:
                writer.abort()
                raise MaterializeError(" ".join(str(err).split())) from err
            except BaseException:
                writer.abort()
                raise
            shards.append(ShardEntry(info.name, len(shard_rows), info.size, info.sha256))
            rows += shard_rows
            if progress is not None:
                progress(number + 1, len(entries))
        _write_bookkeeping(folder, src, header, shards, rows)
    finally:
        folder.close()
    return made


def _write_bookkeeping(
    folder: OutputFolder,
    src: Path,
    header: dict[str, Any],
    shards: list[ShardEntry],
    rows: list[dict[str, Any]],
) -> None:
    """``manifest.parquet``, ``index.json``, ``errors.jsonl``, ``classes.json`` and
    ``build.json`` (the source build's, its ``config.unprocess`` dropped, counts kept,
    ``materialized_from`` added; no timings, so the output is deterministic)."""

    def write_json(name: str, obj: Any) -> None:
        folder.write_bytes(name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    schema = manifest_schema()
    table = pa.Table.from_pylist(
        [{name: r[name] for name in schema.names} for r in rows], schema=schema
    )
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    folder.write_bytes(MANIFEST_FILE, buffer.getvalue().to_pybytes())
    write_json(INDEX_FILE, index_document(shards))
    errors = src / ERRORS_FILE
    folder.write_bytes(ERRORS_FILE, errors.read_bytes() if errors.exists() else b"")
    if (src / CLASSES_FILE).exists():
        folder.write_bytes(CLASSES_FILE, (src / CLASSES_FILE).read_bytes())
    config = {k: v for k, v in header.get("config", {}).items() if k != "unprocess"}
    keep = ("class_map", "counts", "sources_fingerprint", "sources_per_shard", "src")
    write_json(
        BUILD_FILE,
        {
            **{k: header[k] for k in keep if k in header},
            "config": config,
            "materialized_from": str(src),
            "status": "complete",
            "counts": {**header.get("counts", {}), "shards": len(shards), "samples": len(rows)},
        },
    )
