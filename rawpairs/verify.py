"""Where a build is verified: every sample read and checked against its metadata, the manifest
and the index (``rawpairs inspect --verify``).

Samples are read and checked with :func:`rawpairs.tarwalk.read_shard` and
:func:`rawpairs.schema.decode_sample`, the same walker and decoder the training loader uses, so a
folder that :func:`verify_shards` passes is one ``distill`` reads.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rawpairs.buildfolder import BuildRecords, InspectError, load_build, regular_file
from rawpairs.classmap import read_class_map
from rawpairs.errors import CorruptInputError
from rawpairs.layout import CLASSES_FILE, ERRORS_FILE, INDEX_FILE, MANIFEST_FILE, SKIPPED_FILE
from rawpairs.manifest import POSITION_COLUMNS, ShardEntry, manifest_row
from rawpairs.messages import one_line
from rawpairs.sample import sample_raw
from rawpairs.schema import DecodedSample, decode_sample
from rawpairs.storage import sha256_file
from rawpairs.tarwalk import read_shard

__all__ = ["verify_shards"]


def _build_problems(folder: Path, b: BuildRecords) -> list[str]:
    """Problems of the folder as a whole: status, counts, stray shards, duplicate rows."""
    problems = []
    status = b.header.get("status")
    if status != "complete":
        problems.append(
            f"build.json: status {status!r}, not 'complete': the build did not finish "
            "(re-run the same `rawpairs build` command to complete it)"
        )
    counts = b.header.get("counts")
    actual = {
        "samples": len(b.rows),
        "shards": len(b.index),
        "errors": len(b.errors),
        "skipped": len(b.skipped),
    }
    where = {
        "samples": f"{MANIFEST_FILE} rows",
        "shards": INDEX_FILE,
        "errors": ERRORS_FILE,
        "skipped": SKIPPED_FILE,
    }
    if not isinstance(counts, dict):
        problems.append("build.json: no counts")
    else:
        for name, n in actual.items():
            if counts.get(name, 0 if name == "skipped" else None) != n:  # older: no skipping
                problems.append(
                    f"build.json counts {counts.get(name)!r} {name}, {where[name]}: {n}"
                )
    listed = {s.name for s in b.index}
    for name, n in Counter(s.name for s in b.index).items():
        if n > 1:
            problems.append(f"index.json: {name} listed {n} times")
    tars = glob.glob(os.path.join(glob.escape(str(folder)), "*.tar"))  # what the loader reads
    stray = sorted(name for name in map(os.path.basename, tars) if name not in listed)
    problems += [
        f"{name}: shard not in index.json (a training run on the folder would read it)"
        for name in stray
    ]
    for key, n in Counter(r["key"] for r in b.rows).items():
        if n > 1:
            problems.append(f"{key}: {n} rows in manifest.parquet")
    return problems + _class_map_problems(folder, b)


def _class_map_problems(folder: Path, b: BuildRecords) -> list[str]:
    """``classes.json`` must be a valid map equal to ``build.json``'s, and every ``cls`` (the
    manifest's labels, compared with the samples) one of its ids."""
    try:
        classes = read_class_map(folder)
    except ValueError as err:
        return [str(err)]
    recorded = b.header.get("class_map") or None
    if recorded is not None and classes != recorded:
        return [f"{CLASSES_FILE}: differs from the class_map of build.json"]
    if classes is None:
        return []
    ids = set(classes.values())
    bad = sorted({r["label"] for r in b.rows if r["label"] is not None and r["label"] not in ids})
    return [f"cls {v}: not an id of {CLASSES_FILE}" for v in bad[:10]]


def _check_sample(
    shard: str, sample: DecodedSample, position: dict[str, Any], row: dict[str, Any] | None
) -> list[str]:
    """Disagreements between a decoded sample (and its place in the shard) and its manifest row."""
    where = f"{shard}/{sample.key}"
    if row is None:
        return [f"{where}: not in manifest.parquet"]
    expected = {**manifest_row(sample.meta, sample.label), **position}
    return [
        f"{where}: {column} {value!r} in the shard, manifest.parquet says {row[column]!r}"
        for column, value in expected.items()
        if row[column] != value
    ]


def _implied_raw_problem(sample: DecodedSample) -> str | None:
    """Why the RAW an at-load sample's recipe implies is not a valid mosaic of its metadata (it
    is made here, as every reader makes it), or ``None``; stored mosaics were checked on decode."""
    if sample.raw is not None:
        return None
    c = sample.meta.crop
    try:
        raw = sample_raw(sample)
    except ValueError as err:
        return f"the recipe implies no RAW ({one_line(err)})"
    if raw.dtype != np.uint16 or raw.shape != (c.height, c.width):
        return f"the recipe implies a {raw.dtype} {raw.shape} RAW, not uint16 {c.height}×{c.width}"
    if int(raw.max()) > 2**sample.meta.camera.bit_depth - 1:
        return f"the implied RAW exceeds the {sample.meta.camera.bit_depth}-bit range"
    return None


def _check_shard(
    folder: Path, entry: ShardEntry, by_key: dict[str, dict[str, Any]], seen: set[str]
) -> list[str]:
    path = folder / entry.name
    if not path.exists() and not path.is_symlink():
        return [f"{entry.name}: missing"]
    if not regular_file(path):
        return [f"{entry.name}: not a regular file inside the folder"]
    problems = []
    size = path.stat().st_size
    if size != entry.size:
        problems.append(f"{entry.name}: size {size} != index.json {entry.size}")
    if sha256_file(path) != entry.sha256:
        problems.append(f"{entry.name}: checksum differs from index.json")
    count = 0
    try:
        for index, tar_sample in enumerate(read_shard(path)):
            count += 1
            key = tar_sample.key
            if key in seen:
                problems.append(f"{entry.name}/{key}: duplicate key (also in an earlier shard)")
            seen.add(key)
            try:
                assert tar_sample.members is not None
                sample = decode_sample(tar_sample.members, entry.name, key)
            except CorruptInputError as err:
                problems.append(str(err))
                continue
            problem = _implied_raw_problem(sample)
            if problem is not None:
                problems.append(f"{entry.name}/{key}: {problem}")
            position = dict(
                zip(
                    POSITION_COLUMNS,
                    (entry.name, index, tar_sample.offset, tar_sample.size),
                    strict=True,
                )
            )
            problems += _check_sample(entry.name, sample, position, by_key.get(key))
    except CorruptInputError as err:
        problems.append(f"{entry.name}: {err.cause}")
    if count != entry.samples:
        problems.append(f"{entry.name}: {count} samples, index.json says {entry.samples}")
    return problems


def verify_shards(folder: str | Path) -> list[str]:
    """Read every sample and check it against its metadata, the manifest and the index.

    Returns one line per problem (empty when everything is sound). Each sample is checked by
    :func:`rawpairs.schema.decode_sample` (as the training loader does: members, schema version,
    metadata, dtype, shape, alignment, values within the bit depth), then every manifest column
    is compared with the sample and its byte span in the shard. The folder is checked too:
    ``build.json`` status and counts, ``errors.jsonl``, shard sizes and checksums against
    ``index.json``, shards that ``index.json`` does not list, duplicate keys and manifest rows.
    A malformed bookkeeping file is one problem line, never a traceback.
    """
    folder = Path(folder)
    try:
        b = load_build(folder)
    except InspectError as err:
        return [str(err)]
    problems = _build_problems(folder, b)
    by_key = {r["key"]: r for r in b.rows}
    seen: set[str] = set()
    for entry in b.index:
        problems += _check_shard(folder, entry, by_key, seen)
    for key in sorted(set(by_key) - seen):
        problems.append(f"{key}: in manifest.parquet but in no shard")
    return problems
