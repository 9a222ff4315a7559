"""The dataset card: the ``README.md`` every build writes beside its shards.

:func:`dataset_card` is a pure function of what the build records (``build.json``'s header, the
shard index, the manifest rows, the skipped and failed inputs): no clock, no host name, no output
path, so a build stays byte-reproducible, card included. It says what was built, from what, with
which settings, under which licences (the licence files found under ``--src``), the counts, how to
read the shards with plain webdataset, Hugging Face ``datasets`` and DuckDB, and the sample's
members (docs/schema.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from rawpairs.manifest import ShardEntry
from rawpairs.metadata import SCHEMA_VERSION, STORED_RAW_VERSION
from rawpairs.priors import CapturePriors
from rawpairs.sample import is_documentation
from rawpairs.schema import rgb_member

__all__ = ["dataset_card"]

# What each option of the card's settings table means (the build's options, docs: README).
_OPTION_HELP = {
    "crop": "N×N crops at even offsets (keeps the CFA phase); None: whole image",
    "crop_mode": "random crops or every tile",
    "crops": "random crops per source",
    "max_side": "longer side resized (photos) or Bayer-binned (RAW) to at most this",
    "min_side": "sources with a shorter side below this were skipped",
    "upscale": "photos smaller than the crop resized up to it (else skipped)",
    "render": "how camera RAW got its RGB",
    "demosaic": "demosaic of the forward ISP",
    "tone": "tone curve (both directions)",
    "gamma": "transfer function (both directions)",
    "exposure": "gain rule of camera RAW",
    "max_pixels": "inputs declaring more pixels were refused",
    "rgb_format": "encoding of the RGB member",
    "jpeg_quality": "JPEG quality (with --rgb-format jpeg)",
    "png_compression": "PNG compression level",
    "noise": "simulated noise baked into raw.npy, or drawn by the loader",
    "labels": "cls from the parent folder's name",
    "seed": "every random choice derives from (seed, sample key)",
}


def _table(rows: Sequence[tuple[str, str]], head: tuple[str, str]) -> list[str]:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    return lines + [f"| {a} | {b} |" for a, b in rows]


def _counter(values: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(values.items())) or "none"


def _shard_pattern(index: Sequence[ShardEntry]) -> str:
    """A brace pattern naming every shard (they are numbered without gaps)."""
    if len(index) == 1:
        return index[0].name
    first, last = index[0].name, index[-1].name
    stem, number = first.rsplit("-", 1)
    return f"{stem}-{{{number[:-4]}..{last.rsplit('-', 1)[1][:-4]}}}.tar"


def _settings(config: dict[str, Any]) -> list[str]:
    rows = [
        (f"`{name}`", f"`{config[name]!r}` — {_OPTION_HELP[name]}")
        for name in sorted(_OPTION_HELP)
        if name in config
    ]
    priors = config.get("priors")
    if priors == CapturePriors().to_dict():
        text = "Brooks et al. 2019 capture priors (default)"
    elif isinstance(priors, dict) and priors.get("profile"):
        text = f"the camera profile `{priors['profile']}` (`rawpairs calibrate`, via `--camera`)"
    else:
        text = "fixed or narrowed with `--camera` (the values: `build.json` → `config.priors`)"
    rows.append(("`priors`", text))
    return _table(rows, ("option", "value"))


def _licences(skipped: Sequence[dict[str, Any]]) -> list[str]:
    files = sorted(r["path"] for r in skipped if is_documentation(r["path"]))
    if not files:
        return [
            "No licence file was found under `--src`: rawpairs does not know the licences of "
            "these inputs. Check them before sharing this dataset; the samples inherit them.",
        ]
    return [
        "The licence and README files found under `--src` (not images: listed in "
        "`skipped.jsonl`) state the licences of the inputs beside them; the samples inherit them:",
        "",
        *[f"- `{path}`" for path in files],
    ]


def _schema_version(config: dict[str, Any]) -> str:
    """The schema version(s) the build's samples are written with (at-load photos: 3)."""
    if config.get("unprocess") == "at_load":
        return f"{STORED_RAW_VERSION} for camera RAW, {SCHEMA_VERSION} for at-load photos"
    return str(STORED_RAW_VERSION)


def _members(config: dict[str, Any]) -> list[str]:
    rgb = rgb_member(config.get("rgb_format", "png"))
    at_load = config.get("unprocess") == "at_load"
    rows = [
        (
            "`raw.npy`",
            "uint16 H×W mosaic, sensor counts (black level included), CFA as in `json`"
            + ("; camera RAW only (a photo's RAW is made at load from its recipe)" * at_load),
        ),
        (
            f"`{rgb}`" + (" (at-load photos: `rgb.jpg` or `rgb.png`)" if at_load else ""),
            "sRGB uint8 H×W×3, aligned pixel for pixel with the mosaic",
        ),
        (
            "`json`",
            f"schema version {_schema_version(config)}: camera (CFA, black/white level, bit "
            "depth, WB gains, digital gain, XYZ→camera and camera→sRGB matrices, noise, "
            "provenance), render, source (path, kind, SHA-256, size), crop box, seed",
        ),
    ]
    if config.get("labels"):
        rows.append(("`cls`", "ASCII class id of the parent folder (`classes.json`)"))
    return _table(rows, ("member", "content"))


def _intro(header: dict[str, Any], rgb: str) -> list[str]:
    """The title, what the build is and from what, and (split builds) how sources were split."""
    versions, split = header.get("versions", {}), header.get("split")
    title = f"RAW–RGB pairs: {split['name']} split" if split else "RAW–RGB pairs"
    lines = [
        f"# {title}",
        "",
        f"Built by rawpairs {versions.get('rawpairs', '?')} from `{header.get('src', '?')}`: "
        "every sample is a camera RAW mosaic (`raw.npy`) and the sRGB image aligned with it "
        f"(`{rgb}`), with the full camera metadata (`json`). Camera RAW files were rendered by "
        "the forward ISP; ordinary photos got a simulated RAW from the inverse ISP (Brooks et "
        "al. 2019).",
    ]
    if split:
        share = f"{split['val_fraction']:.4g}"
        lines += [
            "",
            f"This is the `{split['name']}` part of a split build: a source goes to `val` when "
            f"the first 8 bytes of SHA-256 of its path relative to `--src`, as a fraction of "
            f"2⁶⁴, are below {share} (`--val-fraction {share}`), else to `train`. All crops of "
            "a source are in one split, and the split does not change when the folder moves.",
        ]
    return lines


def _contents(
    header: dict[str, Any],
    index: Sequence[ShardEntry],
    rows: Sequence[dict[str, Any]],
    pattern: str,
) -> list[str]:
    """The counts table (samples, shards, sources, CFA layouts, sizes) and, with labels, the
    classes."""
    config, counts = header["config"], header["counts"]
    total = sum(s.size for s in index)
    kinds = Counter(r["kind"] for r in rows)
    lines = [
        "",
        "## Contents",
        "",
        *_table(
            [
                ("samples", f"{counts['samples']} ({_counter(kinds)})"),
                ("shards", f"{counts['shards']}: `{pattern}`, {total / 2**20:.1f} MiB"),
                (
                    "sources",
                    f"{counts['sources']} files: {len({r['source'] for r in rows})} gave samples, "
                    f"{counts.get('upscaled', 0)} of them resized up to the crop "
                    f"(`--upscale`), {counts.get('skipped', 0)} skipped (`skipped.jsonl`), "
                    f"{counts['errors']} failed (`errors.jsonl`)",
                ),
                ("CFA layouts", _counter(Counter(r["cfa"] for r in rows))),
                ("sample sizes", _counter(Counter(f"{r['height']}×{r['width']}" for r in rows))),
            ],
            ("what", "count"),
        ),
    ]
    class_map = header.get("class_map") or {}
    if config.get("labels"):
        labels = Counter(r["label"] for r in rows)
        per_class = ", ".join(f"{name} ({i}): {labels[i]}" for name, i in sorted(class_map.items()))
        lines += ["", f"Classes (`classes.json`, `cls` member): {per_class}."]
    return lines


def _hugging_face(config: dict[str, Any], at_load: bool) -> list[str]:
    """How to load the shards with Hugging Face ``datasets``, or why an at-load build cannot."""
    if at_load:
        return [
            "Its photos carry no `raw.npy`: their RAW is made at load by `distill.data` from "
            "the recipe in their `json` (schema version 3), so readers other than rawpairs "
            "get the RGB and metadata of every sample and the RAW of camera files only; "
            "Hugging Face `datasets`, which needs one set of members per sample, is not "
            "offered for such a build.",
            "",
        ]
    return [
        "Hugging Face `datasets` (its `webdataset` loader). Give it the json's types: it "
        "infers them from the first samples, and a photo's null `source.make` then fails "
        "a later camera RAW sample:",
        "",
        "```python",
        "from datasets import load_dataset  # pip install datasets",
        "from rawpairs.schema import hf_features",
        'ds = load_dataset("webdataset", data_files="rawpairs-*.tar", split="train",',
        f"                  features=hf_features(labels={bool(config.get('labels'))}, "
        f'rgb_format="{config.get("rgb_format", "png")}"))',
        "```",
        "",
    ]


def _reading(header: dict[str, Any], pattern: str, rgb: str) -> list[str]:
    """How to read the shards: plain webdataset, Hugging Face ``datasets``, DuckDB on the
    manifest, and training."""
    config = header["config"]
    at_load = config.get("unprocess") == "at_load"  # photos stored without raw.npy
    return [
        "",
        "## Reading it",
        "",
        "Plain webdataset (the RAW stays exact: `.npy`):",
        "",
        "```python",
        "import webdataset as wds",
        f'ds = wds.WebDataset("{pattern}", shardshuffle=False).decode("rgb8")',
        "for s in ds:",
        (
            '    raw, rgb, meta = s.get("raw.npy"), s["' + rgb + '"], s["json"]  # None: at-load'
            if at_load
            else '    raw, rgb, meta = s["raw.npy"], s["'
            + rgb
            + '"], s["json"]  # uint16, uint8, dict'
        ),
        "```",
        "",
        *_hugging_face(config, at_load),
        "DuckDB on the manifest (one row per sample; `byte_offset` and `size` locate the "
        "sample's tar entries in `shard`):",
        "",
        "```sql",
        "SELECT kind, cfa, count(*) FROM 'manifest.parquet' GROUP BY ALL;",
        "SELECT shard, byte_offset, size FROM 'manifest.parquet' WHERE source ILIKE '%.dng';",
        "```",
        "",
        (
            "Training, from the folder holding both splits (the rawpairs loader checks every "
            "sample): `python -m distill.train --shards train --val-shards val`, then "
            "`python -m distill.evaluate --shards val --checkpoint RUN/last.pt`."
            if header.get("split")
            else "Training (the rawpairs loader checks every sample): "
            "`python -m distill.train --shards .`."
        ),
    ]


def _format(header: dict[str, Any]) -> list[str]:
    """The sample format (members and schema version) and the build's other files."""
    config, versions = header["config"], header.get("versions", {})
    return [
        "",
        f"## Sample format (schema version {_schema_version(config)})",
        "",
        "Member names are `<key>.<member>`; the key is stable, unique and dot-free.",
        "",
        *_members(config),
        "",
        "Files: `index.json` (per-shard samples, bytes, SHA-256), `manifest.parquet`, "
        "`build.json` (the full configuration and versions), `errors.jsonl`, `skipped.jsonl`"
        + (", `classes.json`" if config.get("labels") else "")
        + ". Made with "
        + ", ".join(f"{name} {v}" for name, v in sorted(versions.items()))
        + ".",
        "",
    ]


def dataset_card(
    header: dict[str, Any],
    index: Sequence[ShardEntry],
    rows: Sequence[dict[str, Any]],
    skipped: Sequence[dict[str, Any]],
    errors: Sequence[dict[str, Any]],
) -> str:
    """The card's Markdown text. ``header``: ``build.json``'s object (config, src, counts,
    versions, class map, split); ``index``: the shards; ``rows``: the manifest rows;
    ``skipped``/``errors``: the records of ``skipped.jsonl`` and ``errors.jsonl``. Only these
    decide the text (byte-identical for identical builds)."""
    config = header["config"]
    pattern = _shard_pattern(index) if index else "rawpairs-000000.tar"
    rgb = rgb_member(config.get("rgb_format", "png"))
    lines = _intro(header, rgb) + _contents(header, index, rows, pattern)
    lines += ["", "## Settings", "", *_settings(config)]
    lines += ["", "## Licences", "", *_licences(skipped)]
    lines += _reading(header, pattern, rgb) + _format(header)
    return "\n".join(lines)
