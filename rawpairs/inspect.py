"""Where shards are summarised: a rawpairs build folder (counts, layouts, cameras, ranges,
failed inputs) or any tar shards, rawpairs' or another tool's (members, samples, sizes).

Verification is :mod:`rawpairs.verify`, the contact sheet :mod:`rawpairs.preview`, the
reading of a build folder's files :mod:`rawpairs.buildfolder`.
"""

from __future__ import annotations

import glob
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

from braceexpand import braceexpand

from rawpairs.buildfolder import InspectError, load_build, regular_file
from rawpairs.classmap import read_class_map
from rawpairs.metadata import SourceKind
from rawpairs.tarwalk import split_member_name, tar_cause

__all__ = ["format_summary", "format_tar_summary", "resolve_tars", "summarize", "summarize_tars"]


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
    b = load_build(folder)
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


# Shards rawpairs did not make (or a single shard, a glob, a list) ----------------------------


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
        if not regular_file(path):
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
