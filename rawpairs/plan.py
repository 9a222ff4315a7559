"""What a build makes, fixed before anything is written: :class:`BuildPlan`.

:func:`select_sources` lists ``--src`` (:mod:`rawpairs.discover`) and keeps a split's sources;
:func:`plan_groups` cuts them into consecutive groups, one shard each (a function of the inputs
and the configuration only, so shard boundaries do not depend on the engine or the workers);
:func:`make_plan` adds the identity a resumed build must match (configuration, file list, class
map, split, file contents).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rawpairs.classmap import parse_class_map
from rawpairs.config import BuildConfig
from rawpairs.discover import content_fingerprint, discover_sources, listing_fingerprint
from rawpairs.errors import BuildError
from rawpairs.sample import Source, is_documentation
from rawpairs.splits import Split, check_val_fraction, in_split

__all__ = [
    "MIN_SHARDS",
    "BuildPlan",
    "estimated_bytes",
    "make_plan",
    "plan_groups",
    "select_sources",
]

MIN_SHARDS = 16  # a build of >= 16 sources has >= 16 shards: 16 writers, 16 loader streams


@dataclass(frozen=True)
class BuildPlan:
    """A build's inputs and shards: ``src`` (as given), its ``sources`` (sorted), the class map,
    ``sources_per_shard`` consecutive sources per group (shard), and ``identity``: what
    ``build.json`` records and a resumed build must match, in the order its differences are
    named (configuration and file list before contents)."""

    src: str
    config: BuildConfig
    sources: list[Source]
    class_map: dict[str, int]
    sources_per_shard: int
    identity: dict[str, Any]

    @property
    def groups(self) -> list[list[Source]]:
        """The sources of each shard, in shard order."""
        n = self.sources_per_shard
        return [self.sources[i : i + n] for i in range(0, len(self.sources), n)]


def select_sources(
    src: str | Path,
    config: BuildConfig,
    *,
    out: str | Path,
    class_map: Mapping[str, int] | None = None,
    split: Split | None = None,
) -> tuple[list[Source], dict[str, int]]:
    """The sources of ``src`` this build makes (:func:`rawpairs.discover.discover_sources`,
    ``out`` not read), only ``split``'s when given, and the class map. Raises
    :class:`BuildError` for a bad ``class_map`` or a split without inputs."""
    if class_map is not None:
        try:
            class_map = parse_class_map(class_map, "--class-map")
        except ValueError as err:
            raise BuildError(str(err)) from err
    sources, class_map = discover_sources(src, labels=config.labels, out=out, class_map=class_map)
    if split is not None:
        check_val_fraction(split.val_fraction)
        sources = [s for s in sources if in_split(s.relpath, split)]
        if all(is_documentation(s.relpath) for s in sources):
            raise BuildError(
                f"--val-fraction {split.val_fraction} puts no input under --src {src} into "
                f"{split.name}: change the fraction or add inputs"
            )
    return sources, class_map


def make_plan(
    src: str | Path,
    config: BuildConfig,
    sources: list[Source],
    class_map: dict[str, int],
    *,
    samples_per_shard: int,
    shard_size: int,
    sources_per_shard: int | None = None,
    split: Split | None = None,
) -> BuildPlan:
    """The plan of a build of ``sources`` (:func:`select_sources`): its groups
    (:func:`plan_groups`) and identity; reads every source once (content fingerprint)."""
    per_shard = plan_groups(
        sources,
        config,
        samples_per_shard=samples_per_shard,
        shard_size=shard_size,
        sources_per_shard=sources_per_shard,
    )
    identity = {
        "config": config.to_dict(),
        "sources_fingerprint": listing_fingerprint(sources),
        "sources_per_shard": per_shard,
        "class_map": class_map,
        **({"split": split.to_dict()} if split is not None else {}),
        # last: a differing configuration or file list is named before the contents
        "sources_content": content_fingerprint(sources, min(8, os.cpu_count() or 1)),
    }
    return BuildPlan(str(src), config, sources, class_map, per_shard, identity)


# Rough image pixels per byte of input file, and shard bytes per sample pixel: enough to size
# shards near --shard-size (exact sizes are known only once written).
_PIXELS_PER_FILE_BYTE = {"jpeg": 4.0, "lossless": 0.7, "raw": 0.6}
_SHARD_BYTES_PER_PIXEL = {"png": 4.0, "jpeg": 2.3}  # raw.npy 2 B + the encoded RGB
_ASSUMED_FILE_BYTES = 2**20  # for a source of unknown size


def estimated_bytes(source: Source, config: BuildConfig) -> float:
    """An estimate of the shard bytes of one source's samples, from its file size and kind (an
    at-load photo: about its file)."""
    if source.kind == "rgb" and config.unprocess == "at_load":
        return float(source.size or _ASSUMED_FILE_BYTES)
    ext = source.relpath.rsplit(".", 1)[-1].lower()
    family = (
        "raw" if source.kind == "raw" else "jpeg" if ext in ("jpg", "jpeg", "webp") else "lossless"
    )
    pixels = (source.size or _ASSUMED_FILE_BYTES) * _PIXELS_PER_FILE_BYTE[family]
    if config.max_side is not None:
        pixels = min(pixels, 0.75 * config.max_side**2)
    if config.crop is not None and config.crop_mode == "random":
        pixels = min(pixels, config.crops * config.crop**2)
    return pixels * _SHARD_BYTES_PER_PIXEL[config.rgb_format]


def plan_groups(
    sources: list[Source],
    config: BuildConfig,
    *,
    samples_per_shard: int,
    shard_size: int,
    sources_per_shard: int | None = None,
) -> int:
    """How many consecutive sources make one shard: ``sources_per_shard`` when given, else the
    largest number that keeps a shard within ``samples_per_shard`` samples (counting ``crops``
    per source in random-crop mode, else one), within an estimated ``shard_size`` bytes
    (:func:`estimated_bytes`, averaged over the sources), and that gives at least
    :data:`MIN_SHARDS` shards. Depends on the inputs and the configuration only."""
    if sources_per_shard is not None:
        return sources_per_shard
    per_source = config.crops if config.crop is not None and config.crop_mode == "random" else 1
    by_samples = samples_per_shard // per_source
    mean = sum(estimated_bytes(s, config) for s in sources) / max(len(sources), 1)
    by_size = int(shard_size // max(mean, 1.0))
    by_count = math.ceil(len(sources) / MIN_SHARDS)
    return max(1, min(by_samples, by_size, by_count))
