"""Where the shard list comes from: a folder, glob, brace pattern or URL(s) → shard paths, and
the class map (``classes.json``) the shards' folders share."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence

from webdataset.shardlists import expand_urls

from rawpairs.classmap import read_class_map

__all__ = ["check_class_maps", "is_url", "resolve_shards"]

_URL_PREFIXES = ("pipe:", "http://", "https://", "gs://", "s3://", "ais://")


def is_url(spec: str) -> bool:
    """Whether ``spec`` names a stream (``pipe:``, ``http://``, ``s3://``, …), not a local file."""
    return spec.startswith(_URL_PREFIXES) or ("://" in spec and not spec.startswith("file:"))


def _expand_one(spec: str) -> list[str]:
    paths: list[str] = []
    for item in expand_urls(spec):  # webdataset's spelling: "::" lists, WDS_ variables, braces
        if is_url(item):
            paths.append(item)
            continue
        local = item.removeprefix("file://").removeprefix("file:")
        # A folder or file that exists is taken by its name (``set[ab]`` is not ``seta``); only
        # a name that exists as neither is a glob pattern.
        if os.path.isdir(local):
            paths.extend(sorted(glob.glob(os.path.join(glob.escape(local), "*.tar"))))
        elif os.path.isfile(local):
            paths.append(local)
        elif glob.has_magic(local):
            paths.extend(sorted(glob.glob(local)))
        elif item != spec:
            raise FileNotFoundError(f"{spec}: shard {local} does not exist")
    return paths


def resolve_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard paths or URLs for a folder (its ``*.tar``, sorted), glob, brace pattern, URL or list.

    A name that exists as a folder or file is taken literally (``set[ab]`` never means
    ``seta``); only a name that exists as neither is expanded as a glob pattern.

    Strings are expanded as webdataset does (``a.tar::b.tar``, ``$WDS_…`` variables, braces); brace
    patterns keep their order, and one naming a local file that does not exist raises
    ``FileNotFoundError`` naming it. Nothing found raises ``FileNotFoundError("no shards found
    at <spec>")``. URLs (``http://``, ``pipe:``, …) are not checked.
    """
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    shards = [s for item in specs for s in _expand_one(os.fspath(item))]
    if not shards:
        raise FileNotFoundError(f"no shards found at {spec}")
    return shards


def _class_map_difference(a: Mapping[str, int], b: Mapping[str, int]) -> str:
    """The first class two maps number differently, in words (``a`` first); a class both
    number is named before one only a single map has."""
    renumbered = sorted(n for n in set(a) & set(b) if a[n] != b[n])
    name = (renumbered or sorted(set(a) ^ set(b)))[0]
    return (
        f"{name!r} is {a.get(name, 'absent')} in the first, {b.get(name, 'absent')} in the second"
    )


def check_class_maps(*specs: str | Sequence[str] | None) -> dict[str, int] | None:
    """The class map shared by every local shard folder of ``specs`` (``None`` entries are
    skipped), as :func:`rawpairs.classmap.read_class_map` reads it from ``classes.json`` beside
    the shards; ``None`` when no folder has labels.

    Folders without labels mix with any map (their ``cls`` is −1). Raises ``ValueError`` (one
    line) naming two folders whose maps give a class different ids (or a malformed map) and
    ``FileNotFoundError`` when a spec finds no shard. URLs are not checked.
    """
    maps: dict[str, dict[str, int]] = {}
    for spec in specs:
        if spec is None:
            continue
        folders = {os.path.dirname(s) or "." for s in resolve_shards(spec) if not is_url(s)}
        for folder in sorted(folders - set(maps)):
            found = read_class_map(folder)
            if found is not None:
                maps[folder] = found
    if not maps:
        return None
    (first, reference), *others = maps.items()
    for folder, found in others:
        if found != reference:
            raise ValueError(
                f"{first} and {folder} number their classes differently (classes.json: "
                f"{_class_map_difference(reference, found)}); rebuild one with "
                f"--class-map {first}"
            )
    return reference
