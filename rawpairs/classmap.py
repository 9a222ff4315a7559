"""``classes.json``: the class map ``{folder name: class id}`` of a labelled build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec

from rawpairs.layout import BUILD_FILE, CLASSES_FILE
from rawpairs.messages import one_line

__all__ = ["parse_class_map", "read_class_map"]



def parse_class_map(d: Any, where: str = CLASSES_FILE) -> dict[str, int]:
    """A class map ``{name: id}`` checked: a JSON object of non-empty names and distinct integer
    ids >= 0. ``ValueError`` (naming ``where``) otherwise."""
    if not isinstance(d, dict):
        raise ValueError(
            f"{where}: must be a JSON object {{class name: id}}, got {type(d).__name__}"
        )
    owner: dict[int, str] = {}
    for name, value in d.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: class names must be non-empty strings, got {name!r:.40}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(
                f"{where}: the id of {name!r:.40} must be an integer, got {value!r:.40}"
            )
        if value < 0:
            raise ValueError(f"{where}: the id of {name!r:.40} must be >= 0, got {value}")
        if value in owner:
            raise ValueError(f"{where}: {owner[value]!r:.40} and {name!r:.40} share id {value}")
        owner[value] = name
    return dict(d)


def read_class_map(folder: str | Path) -> dict[str, int] | None:
    """The class map ``{folder name: class id}`` of the build in ``folder`` (a local path or an
    fsspec URL): its ``classes.json``, or for a build made before that file existed the
    ``class_map`` of its ``build.json``. ``None`` when the build has no labels (or the folder has
    neither file). Raises ``ValueError`` naming the file when it is malformed.

    Readers that mix shard folders (training and validation, several training sets) compare
    these maps: the same ``cls`` means the same class only under one map."""
    fs, root = fsspec.core.url_to_fs(str(folder))
    for name, field_name in ((CLASSES_FILE, None), (BUILD_FILE, "class_map")):
        path = f"{root.rstrip('/')}/{name}"
        if not fs.exists(path):
            continue
        try:
            with fs.open(path, "rb") as f:
                d = json.loads(f.read())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{folder}/{name}: not JSON ({one_line(err)})") from err
        if field_name is not None:
            if not isinstance(d, dict):
                raise ValueError(f"{folder}/{name}: not a JSON object")
            d = d.get(field_name) or None
            if d is None:
                return None
        return parse_class_map(d, f"{folder}/{name}")
    return None
