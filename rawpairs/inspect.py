"""Where shards are checked: summary, full verification, and a visual contact sheet.

Samples are read and checked with :func:`rawpairs.tarwalk.read_shard` and
:func:`rawpairs.schema.decode_sample`, the same walker and decoder the training loader uses, so a
folder that :func:`verify_shards` passes is one ``distill`` reads. Every problem, including a
malformed ``index.json``, ``manifest.parquet``, ``build.json`` or ``errors.jsonl``, is one line;
nothing but regular files inside the folder is ever opened.
"""

from __future__ import annotations

import glob
import json
import os
import stat
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
from braceexpand import braceexpand

from rawpairs.build import SPLITS
from rawpairs.choices import Demosaic, Gamma
from rawpairs.classmap import CLASSES_FILE, read_class_map
from rawpairs.errors import CorruptInputError
from rawpairs.isp import process
from rawpairs.manifest import (
    POSITION_COLUMNS,
    ShardEntry,
    manifest_row,
    manifest_schema,
    parse_index,
    read_manifest,
)
from rawpairs.messages import one_line
from rawpairs.metadata import SourceKind
from rawpairs.sample import sample_raw
from rawpairs.schema import DecodedSample, decode_sample
from rawpairs.storage import sha256_file
from rawpairs.tarwalk import read_shard, split_member_name, tar_cause
from rawpairs.tone import DEFAULT_TONE

__all__ = [
    "InspectError",
    "check_preview_path",
    "format_summary",
    "format_tar_summary",
    "is_build_folder",
    "resolve_tars",
    "split_folders",
    "summarize",
    "summarize_tars",
    "verify_shards",
    "write_preview",
]

_REQUIRED = ("index.json", "manifest.parquet", "build.json")
_ERROR_FIELDS = ("path", "error", "message")
_SKIP_FIELDS = ("path", "reason")


class InspectError(ValueError):
    """The folder is not a readable, finished rawpairs build (one-line message)."""


@dataclass
class _Build:
    """The bookkeeping files of a build folder, parsed."""

    index: list[ShardEntry]
    rows: list[dict[str, Any]]
    header: dict[str, Any]
    errors: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


def _regular_file(path: Path) -> bool:
    """True for a regular file that is not a symlink (a FIFO or device must never be read)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as err:
        raise InspectError(f"{path}: not valid JSON ({one_line(err, 200)})") from err


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    try:
        table = read_manifest(path)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise InspectError(f"{path}: not a readable Parquet file ({one_line(err, 200)})") from err
    expected = manifest_schema()
    if not table.schema.remove_metadata().equals(expected):
        have = {f.name: str(f.type) for f in table.schema}
        want = {f.name: str(f.type) for f in expected}
        diff = sorted(
            f"{name} ({have.get(name, 'missing')} instead of {want.get(name, 'no such column')})"
            for name in set(have) | set(want)
            if have.get(name) != want.get(name)
        )
        raise InspectError(f"{path}: columns differ from the manifest schema: {', '.join(diff)}")
    return table.to_pylist()


def _read_errors(path: Path, fields: tuple[str, ...] = _ERROR_FIELDS) -> list[dict[str, Any]]:
    """The records of ``errors.jsonl`` (failed inputs) or ``skipped.jsonl`` (inputs left out
    on purpose); an absent file: none."""
    if not path.exists():
        return []
    if not _regular_file(path):
        raise InspectError(f"{path}: not a regular file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as err:
        raise InspectError(f"{path}: unreadable ({one_line(err)})") from err
    errors = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as err:
            raise InspectError(f"{path}: line {number} is not JSON ({one_line(err)})") from err
        if not isinstance(record, dict) or not all(isinstance(record.get(f), str) for f in fields):
            raise InspectError(f"{path}: line {number} is not a {{{', '.join(fields)}}} record")
        errors.append(record)
    return errors


def _load(folder: Path) -> _Build:
    """Parse a build folder's bookkeeping files; :class:`InspectError` (one line) if it is not a
    folder, lacks one, or one is not a regular file or malformed."""
    if not folder.is_dir():
        raise InspectError(f"{folder}: no such folder")
    missing = [name for name in _REQUIRED if not (folder / name).exists()]
    if missing:
        raise InspectError(
            f"{folder}: not a finished rawpairs build (missing {', '.join(missing)}); "
            "re-run `rawpairs build` to complete it"
        )
    for name in _REQUIRED:
        if not _regular_file(folder / name):
            raise InspectError(f"{folder / name}: not a regular file")
    try:
        index = parse_index(_read_json(folder / "index.json"))
    except ValueError as err:
        raise InspectError(f"{folder / 'index.json'}: {err}") from err
    header = _read_json(folder / "build.json")
    if not isinstance(header, dict):
        raise InspectError(f"{folder / 'build.json'}: not a JSON object")
    rows = _read_manifest(folder / "manifest.parquet")
    errors = _read_errors(folder / "errors.jsonl")
    return _Build(index, rows, header, errors, _read_errors(folder / "skipped.jsonl", _SKIP_FIELDS))


def _range(rows: list[dict[str, Any]], column: str) -> list[float] | None:
    values = [r[column] for r in rows if r[column] is not None]
    return [min(values), max(values)] if values else None


def _camera_name(row: dict[str, Any]) -> str:
    """A row's camera: make and model; "(simulated)" only for RAW simulated from a photo."""
    name = f"{row['make'] or ''} {row['model'] or ''}".strip()
    if name:
        return name
    return "(simulated)" if row["kind"] == SourceKind.RGB.value else "(camera RAW, model unknown)"


def summarize(folder: str | Path) -> dict[str, Any]:
    """Counts, layouts, cameras, resolutions, parameter ranges and failed inputs of a build.

    Raises :class:`InspectError` for a folder that is not a readable build.
    """
    folder = Path(folder)
    b = _load(folder)
    rows = b.rows
    config = b.header.get("config", {})
    return {
        "folder": str(folder),
        "shards": len(b.index),
        "samples": len(rows),
        "bytes": sum(s.size for s in b.index),
        "kinds": dict(Counter(r["kind"] for r in rows)),
        "cfa": dict(Counter(r["cfa"] for r in rows)),
        "cameras": dict(Counter(_camera_name(r) for r in rows)),
        "resolutions": dict(Counter(f"{r['height']}x{r['width']}" for r in rows)),
        "ranges": {
            column: _range(rows, column)
            for column in (
                "wb_r",
                "wb_b",
                "digital_gain",
                "noise_shot",
                "noise_read",
                "black_level",
                "white_level",
            )
        },
        "matrix_provenance": dict(Counter(r["matrix_provenance"] for r in rows)),
        "classes": _class_counts(folder, rows),
        "failed": b.errors,
        "skipped": b.skipped,
        "status": b.header.get("status"),
        "config": config if isinstance(config, dict) else {},
    }


def _class_counts(folder: Path, rows: list[dict[str, Any]]) -> dict[str, int] | None:
    """Samples per class of a labelled build, by folder name (``classes.json``; an id the map
    does not name is counted under its number); ``None`` when no sample has a label."""
    labels = Counter(r["label"] for r in rows if r.get("label") is not None)
    if not labels:
        return None
    try:
        names = {i: name for name, i in (read_class_map(folder) or {}).items()}
    except ValueError:  # a malformed classes.json: --verify names it
        names = {}
    return {names.get(i, str(i)): n for i, n in sorted(labels.items())}


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable text of :func:`summarize`'s result."""
    lines = [
        f"{summary['folder']}: {summary['samples']} samples in {summary['shards']} shards, "
        f"{summary['bytes'] / 2**20:.1f} MiB",
        f"  kinds:       {summary['kinds']}",
        f"  CFA:         {summary['cfa']}",
        f"  cameras:     {summary['cameras']}",
        f"  resolutions: {summary['resolutions']}",
        f"  matrices:    {summary['matrix_provenance']}",
    ]
    if summary.get("classes") is not None:
        lines.append(f"  classes:     {summary['classes']}")
    for name, span in summary["ranges"].items():
        if span is not None:
            lines.append(f"  {name:<12} {span[0]:.6g} … {span[1]:.6g}")
    lines.append(f"  failed inputs: {len(summary['failed'])}")
    lines += [f"    {e['path']}: {e['error']}: {e['message']}" for e in summary["failed"]]
    skipped = summary.get("skipped", [])
    lines.append(f"  skipped inputs: {len(skipped)}")
    lines += [f"    {e['path']}: {e['reason']}" for e in skipped[:20]]
    if len(skipped) > 20:
        lines.append(f"    … {len(skipped) - 20} more in skipped.jsonl")
    if "verify" in summary:
        v = summary["verify"]
        lines.append("  verify: OK" if v["ok"] else f"  verify: {len(v['problems'])} problems")
    if "preview" in summary:
        lines.append(f"  preview: {summary['preview']}")
    return "\n".join(lines)


def _build_problems(folder: Path, b: _Build) -> list[str]:
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
        "samples": "manifest.parquet rows",
        "shards": "index.json",
        "errors": "errors.jsonl",
        "skipped": "skipped.jsonl",
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


def _class_map_problems(folder: Path, b: _Build) -> list[str]:
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
    if not _regular_file(path):
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
        b = _load(folder)
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


_FONT, _FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.4


def _fit_text(text: str, width: int) -> str:
    """``text``, cut and ended with '..' where it is wider than ``width`` pixels in the label
    font (a label never runs into the next panel)."""

    def fits(t: str) -> bool:
        return cv2.getTextSize(t, _FONT, _FONT_SCALE, 3)[0][0] <= width

    if fits(text):
        return text
    while text and not fits(text + ".."):
        text = text[:-1]
    return text + ".."


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    text = _fit_text(text, out.shape[1] - 8)
    cv2.putText(out, text, (4, 14), _FONT, _FONT_SCALE, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), _FONT, _FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    resized = cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    canvas = np.full((size, size, 3), 32, np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas


def _preview_row(sample: DecodedSample, tile: int) -> np.ndarray:
    camera, render = sample.meta.camera, sample.meta.render
    raw = sample_raw(sample)
    h, w = raw.shape
    # The ISP needs an even mosaic of at least 4×4; a thin sample (a 2×5000 crop of a 3×5000
    # photo, which verify and the loader accept) is padded at the bottom/right (CFA phase kept).
    pad_h, pad_w = max(4, h + h % 2) - h, max(4, w + w % 2) - w
    mosaic_in = np.pad(raw, ((0, pad_h), (0, pad_w)), mode="reflect" if min(h, w) > 2 else "edge")
    rendered = process(  # the sample's own choices; a LibRaw sample has none: our defaults
        mosaic_in,
        camera,
        demosaic=render.demosaic or Demosaic.MALVAR,
        tone=render.tone or DEFAULT_TONE,
        gamma=render.gamma or Gamma.SRGB,
    )[:h, :w]
    black = min(camera.black_level)
    scaled = np.clip((raw.astype(np.float32) - black) / (camera.white_level - black), 0, 1)
    mosaic = np.repeat((np.sqrt(scaled) * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    key = sample.key
    short = key if len(key) <= 40 else "…" + key[-39:]
    kind = sample.meta.source.kind.value + (", at load" if sample.raw is None else "")
    return np.hstack(
        [
            _label(_fit(sample.rgb, tile), f"RGB {short}"),
            _label(_fit(rendered, tile), f"ISP({camera.cfa.value}) of RAW"),
            _label(_fit(mosaic, tile), f"RAW mosaic (sqrt) {kind}"),
        ]
    )


def check_preview_path(out: str | Path) -> None:
    """:class:`InspectError` (one line) unless ``out`` can be written as an image: a name with
    an extension OpenCV writes (``.png``, ``.jpg``, …), not a folder, under no file."""
    out = Path(out)
    if out.is_dir():
        raise InspectError(f"--preview {out}: a folder, not an image file name")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise InspectError(f"--preview {out}: {parent} is a file, not a folder")
    if not out.suffix:
        raise InspectError(f"--preview {out}: no extension; name a .png or .jpg file")
    if not cv2.haveImageWriter(str(out)):
        raise InspectError(f"--preview {out}: cannot write {out.suffix} images; use .png or .jpg")


def write_preview(folder: str | Path, out: str | Path, n: int = 6, tile: int = 256) -> Path:
    """A contact sheet image (``out``: .png, .jpg, …): per sample, the stored RGB, the mosaic
    rendered by the forward ISP from the sample's own metadata, and the raw mosaic (linearly
    scaled), side by side.

    Raises :class:`InspectError` (one line) for a folder that is not a readable build, a damaged
    shard or sample, or an image that cannot be written.
    """
    folder, out = Path(folder), Path(out)
    check_preview_path(out)
    b = _load(folder)
    if not b.rows:
        raise InspectError(f"{folder}: no samples to preview")
    picks = np.unique(np.linspace(0, len(b.rows) - 1, min(n, len(b.rows))).round().astype(int))
    wanted = {b.rows[i]["key"] for i in picks}  # evenly spread over the build
    rows_img = []
    for entry in b.index:
        path = folder / entry.name
        if not _regular_file(path):
            raise InspectError(f"{path}: missing or not a regular file")
        try:
            for tar_sample in read_shard(path):
                if tar_sample.key in wanted and tar_sample.members is not None:
                    sample = decode_sample(tar_sample.members, str(path), tar_sample.key)
                    try:
                        rows_img.append(_preview_row(sample, tile))
                    except (ValueError, cv2.error) as err:  # the ISP refusing the metadata
                        raise InspectError(
                            one_line(f"{path}: sample {tar_sample.key!r}: cannot draw: {err}")
                        ) from err
        except ValueError as err:  # CorruptInputError, or the ISP refusing the metadata
            raise InspectError(one_line(err)) from err
    if not rows_img:
        raise InspectError(f"{folder}: no samples to preview")
    sheet = np.vstack(rows_img)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    except (OSError, cv2.error) as err:
        raise InspectError(one_line(f"{out}: cannot write the preview image: {err}")) from err
    if not written:
        raise InspectError(f"{out}: cannot write the preview image")
    return out


# Shards rawpairs did not make (or a single shard, a glob, a list) ----------------------------

BUILD_FILES = (*_REQUIRED, ".rawpairs")  # any of them: a rawpairs build folder (finished or not)


def is_build_folder(path: str | Path) -> bool:
    """Whether ``path`` is a rawpairs build folder, finished or not."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in BUILD_FILES)


def split_folders(path: str | Path) -> list[Path]:
    """The split builds (``train``, ``val``) of a ``--val-fraction`` output folder; empty when
    ``path`` is not one."""
    path = Path(path)
    if not path.is_dir() or is_build_folder(path):
        return []
    return [path / name for name in SPLITS if is_build_folder(path / name)]


def resolve_tars(specs: list[str]) -> list[Path]:
    """Tar files named by ``specs``: files, folders (their ``*.tar``, ``*.tar.gz``, sorted), glob
    patterns and brace ranges (``shards-{000..009}.tar``), in the order given. Raises
    :class:`InspectError` (one line) for a spec that names nothing."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            names = sorted(
                p for p in path.iterdir() if p.name.endswith((".tar", ".tar.gz", ".tgz"))
            )
            if not names:
                raise InspectError(f"{spec}: a folder with no .tar files and no rawpairs build")
            found += names
        elif path.exists() or path.is_symlink():
            found.append(path)
        else:
            matches: list[str] = []
            for name in _braces(spec):  # in the range's order; each glob sorted
                matches += [name] if Path(name).exists() else sorted(glob.glob(name))
            if not matches:
                raise InspectError(f"{spec}: no such folder, file or matching shard")
            found += [Path(m) for m in matches]
    return found


def _braces(spec: str) -> list[str]:
    """``a-{000..002}.tar`` → the three names (webdataset's brace rule, its ``braceexpand``
    dependency); others unchanged."""
    return list(braceexpand(spec))


def summarize_tars(paths: list[Path]) -> dict[str, Any]:
    """What can be said of tar shards without a rawpairs index: per shard and in total, members,
    samples (webdataset's rule: consecutive members sharing a key), member extensions (how many
    samples have each), bytes and sample sizes; whether every sample has the members of
    rawpairs' schema. Reads tar headers only (a local tar is not read past them); a shard that
    cannot be read is one line in ``problems``."""
    shards, problems = [], []
    extensions: Counter[str] = Counter()
    sample_bytes: list[int] = []
    ours = True
    for path in paths:
        if not _regular_file(path):
            problems.append(f"{path}: not a regular file")
            continue
        members = samples = 0
        try:
            with tarfile.open(path, "r:*") as tar:
                key, have, start, end = None, set(), 0, 0
                for info in tar:
                    split = split_member_name(info.name) if info.isreg() else None
                    if split is None:
                        continue
                    members += 1
                    if split[0] != key:
                        if key is not None:
                            samples, ours = samples + 1, ours and _schema_members(have)
                            extensions.update(have)
                            sample_bytes.append(end - start)
                        key, have, start = split[0], set(), info.offset
                    have.add(split[1])
                    end = info.offset_data + info.size
                if key is not None:
                    samples, ours = samples + 1, ours and _schema_members(have)
                    extensions.update(have)
                    sample_bytes.append(end - start)
        except (tarfile.TarError, OSError, EOFError, ValueError) as err:
            problems.append(f"{path}: unreadable tar: {tar_cause(err)}")
        shards.append({"shard": str(path), "members": members, "samples": samples,
                       "bytes": path.stat().st_size})  # fmt: skip
    sizes = sorted(sample_bytes)
    return {
        "shards": len(shards),
        "samples": sum(s["samples"] for s in shards),
        "members": sum(s["members"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "extensions": dict(sorted(extensions.items())),
        "sample_bytes": [sizes[0], sizes[len(sizes) // 2], sizes[-1]] if sizes else None,
        "rawpairs_members": bool(sizes) and ours,
        "per_shard": shards,
        "problems": problems,
    }


def _schema_members(have: set[str]) -> bool:
    return {"raw.npy", "json"} <= have and bool(have & {"rgb.png", "rgb.jpg"})


def format_tar_summary(summary: dict[str, Any]) -> str:
    """Human-readable text of :func:`summarize_tars`'s result."""
    lines = [
        f"{summary['samples']} samples ({summary['members']} members) in {summary['shards']} "
        f"tar shards, {summary['bytes'] / 2**20:.1f} MiB (no rawpairs index: tar contents only)",
        f"  members:      {summary['extensions']} (samples having each)",
    ]
    if summary["sample_bytes"]:
        lo, mid, hi = summary["sample_bytes"]
        lines.append(f"  sample bytes: {lo} … {hi} (median {mid})")
    lines.append(
        "  schema:       every sample has raw.npy, json and rgb.png/rgb.jpg (rawpairs' members)"
        if summary["rawpairs_members"]
        else "  schema:       not rawpairs' members (raw.npy, json, rgb.png/rgb.jpg)"
    )
    for shard in summary["per_shard"][:20]:
        lines.append(f"    {shard['shard']}: {shard['samples']} samples, {shard['bytes']} bytes")
    if len(summary["per_shard"]) > 20:
        lines.append(f"    … {len(summary['per_shard']) - 20} more shards")
    lines += [f"  problem: {p}" for p in summary["problems"]]
    return "\n".join(lines)
