"""Where shards are checked: summary, full verification, and a visual contact sheet."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq

from rawpairs.camera import Camera
from rawpairs.shards import decode_raw, decode_rgb, read_shard, sha256_file

__all__ = ["InspectError", "format_summary", "summarize", "verify_shards", "write_preview"]

_REQUIRED = ("index.json", "manifest.parquet", "build.json")


class InspectError(ValueError):
    """The folder is not a finished rawpairs build."""


def _load(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    if not folder.is_dir():
        raise InspectError(f"{folder}: no such folder")
    missing = [name for name in _REQUIRED if not (folder / name).exists()]
    if missing:
        raise InspectError(
            f"{folder}: not a finished rawpairs build (missing {', '.join(missing)}); "
            "re-run `rawpairs build` to complete it"
        )
    index = json.loads((folder / "index.json").read_text())
    rows = pq.read_table(folder / "manifest.parquet").to_pylist()
    build = json.loads((folder / "build.json").read_text())
    return index, rows, build


def _range(rows: list[dict[str, Any]], column: str) -> list[float] | None:
    values = [r[column] for r in rows if r[column] is not None]
    return [min(values), max(values)] if values else None


def summarize(folder: str | Path) -> dict[str, Any]:
    """Counts, layouts, cameras, resolutions, parameter ranges and failed inputs of a build."""
    folder = Path(folder)
    index, rows, build = _load(folder)
    errors_path = folder / "errors.jsonl"
    errors = (
        [json.loads(line) for line in errors_path.read_text().splitlines() if line.strip()]
        if errors_path.exists()
        else []
    )
    cameras = Counter(f"{r['make']} {r['model']}".strip() or "(simulated)" for r in rows)
    return {
        "folder": str(folder),
        "shards": len(index["shards"]),
        "samples": len(rows),
        "bytes": sum(s["size"] for s in index["shards"]),
        "kinds": dict(Counter(r["kind"] for r in rows)),
        "cfa": dict(Counter(r["cfa"] for r in rows)),
        "cameras": dict(cameras),
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
        "failed": errors,
        "config": build.get("config", {}),
    }


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
    for name, span in summary["ranges"].items():
        if span is not None:
            lines.append(f"  {name:<12} {span[0]:.6g} … {span[1]:.6g}")
    lines.append(f"  failed inputs: {len(summary['failed'])}")
    lines += [f"    {e['path']}: {e['error']}: {e['message']}" for e in summary["failed"]]
    if "verify" in summary:
        v = summary["verify"]
        lines.append("  verify: OK" if v["ok"] else f"  verify: {len(v['problems'])} problems")
    if "preview" in summary:
        lines.append(f"  preview: {summary['preview']}")
    return "\n".join(lines)


def _check_sample(
    key: str, members: dict[str, bytes], row: dict[str, Any] | None, position: int
) -> list[str]:
    """Problems of one sample (empty when sound)."""
    problems = []
    if row is None:
        return [f"{key}: not in manifest.parquet"]
    if row["index"] != position:
        problems.append(f"{key}: at position {position}, manifest says {row['index']}")
    missing = [m for m in ("raw.npy", "json") if m not in members]
    rgb_name = next((m for m in ("rgb.png", "rgb.jpg") if m in members), None)
    if missing or rgb_name is None:
        return [*problems, f"{key}: missing members {missing + ([] if rgb_name else ['rgb.*'])}"]
    try:
        raw = decode_raw(members["raw.npy"])
        rgb = decode_rgb(members[rgb_name])
        meta = json.loads(members["json"])
        camera = Camera.from_dict(meta["camera"])
    except (ValueError, KeyError, TypeError) as err:
        return [*problems, f"{key}: undecodable ({err})"]
    if rgb.shape[:2] != raw.shape:
        problems.append(f"{key}: RGB {rgb.shape[:2]} not aligned with RAW {raw.shape}")
    if raw.shape != (row["height"], row["width"]):
        problems.append(f"{key}: RAW {raw.shape} but manifest says {row['height']}x{row['width']}")
    if raw.size and int(raw.max()) > 2**camera.bit_depth - 1:
        problems.append(f"{key}: RAW max {int(raw.max())} exceeds {camera.bit_depth} bits")
    if meta.get("key") != key:
        problems.append(f"{key}: json key {meta.get('key')!r} differs from the tar key")
    for column, value in (("cfa", camera.cfa.value), ("bit_depth", camera.bit_depth)):
        if row[column] != value:
            problems.append(f"{key}: {column} {value!r} but manifest says {row[column]!r}")
    if ("cls" in members) != (row["label"] is not None):
        problems.append(f"{key}: cls member and manifest label disagree")
    return problems


def verify_shards(folder: str | Path) -> list[str]:
    """Read every sample and check it against its metadata, the manifest and the index.

    Returns one line per problem (empty when everything is sound): checksums and sizes of the
    shards, sample counts, dtype/shape/alignment, values within the bit depth (not the white
    level: sensor noise legitimately reaches past it, up to the bit depth's maximum), metadata
    equal to the manifest.
    """
    folder = Path(folder)
    index, rows, _ = _load(folder)
    by_key = {r["key"]: r for r in rows}
    problems: list[str] = []
    seen: set[str] = set()
    for shard in index["shards"]:
        path = folder / shard["name"]
        if not path.exists():
            problems.append(f"{shard['name']}: missing")
            continue
        if path.stat().st_size != shard["size"]:
            problems.append(f"{shard['name']}: size {path.stat().st_size} != index {shard['size']}")
        if sha256_file(path) != shard["sha256"]:
            problems.append(f"{shard['name']}: checksum differs from index.json")
        count = 0
        try:
            for position, (key, members) in enumerate(read_shard(path)):
                count += 1
                if key in seen:
                    problems.append(f"{shard['name']}/{key}: duplicate key")
                seen.add(key)
                row = by_key.get(key)
                if row is not None and row["shard"] != shard["name"]:
                    problems.append(f"{shard['name']}/{key}: manifest says {row['shard']}")
                problems += [
                    f"{shard['name']}/{p}" for p in _check_sample(key, members, row, position)
                ]
        except ValueError as err:
            problems.append(str(err))
        if count != shard["samples"]:
            problems.append(f"{shard['name']}: {count} samples, index.json says {shard['samples']}")
    for key in sorted(set(by_key) - seen):
        problems.append(f"{key}: in manifest.parquet but in no shard")
    return problems


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
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


def write_preview(folder: str | Path, out: str | Path, n: int = 6, tile: int = 256) -> Path:
    """A contact sheet PNG: per sample, the stored RGB, the mosaic rendered by the forward ISP
    from the sample's own metadata, and the raw mosaic (linearly scaled), side by side."""
    from rawpairs.isp import process

    folder, out = Path(folder), Path(out)
    index, rows, _ = _load(folder)
    if not rows:
        raise InspectError(f"{folder}: no samples to preview")
    picks = np.unique(np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int))
    wanted = {rows[i]["key"] for i in picks}  # evenly spread over the build
    rows_img = []
    for shard in index["shards"]:
        for key, members in read_shard(folder / shard["name"]):
            if key not in wanted:
                continue
            meta = json.loads(members["json"])
            camera = Camera.from_dict(meta["camera"])
            raw = decode_raw(members["raw.npy"])
            rgb = decode_rgb(members.get("rgb.png") or members["rgb.jpg"])
            render = meta["render"]
            rendered = process(
                raw,
                camera,
                demosaic=render.get("demosaic", "malvar"),
                tone=render.get("tone", "smoothstep"),
                gamma=render.get("gamma", "srgb"),
            )
            black = min(camera.black_level)
            scaled = np.clip((raw.astype(np.float32) - black) / (camera.white_level - black), 0, 1)
            mosaic = np.repeat((np.sqrt(scaled) * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
            short = key if len(key) <= 40 else "…" + key[-39:]
            rows_img.append(
                np.hstack(
                    [
                        _label(_fit(rgb, tile), f"RGB {short}"),
                        _label(_fit(rendered, tile), f"ISP({camera.cfa.value}) of RAW"),
                        _label(_fit(mosaic, tile), f"RAW mosaic (sqrt) {meta['source']['kind']}"),
                    ]
                )
            )
    if not rows_img:
        raise InspectError(f"{folder}: no samples to preview")
    sheet = np.vstack(rows_img)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise InspectError(f"{out}: cannot write the preview image")
    return out
