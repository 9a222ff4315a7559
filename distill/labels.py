"""Where a build's labels meet the teacher's classes, so that accuracy means something.

A labelled build (``rawpairs build --labels folder``) numbers its class folders in
``classes.json`` (``{folder name: id}``); the student, distilled without labels, predicts the
teacher's classes (ImageNet-1k for the default teacher). :func:`match_classes` maps each folder
name to the one teacher class it names — any of the class's comma-separated synonyms, compared
without case, ``_`` or ``-`` (``tabby_cat`` → "tabby, tabby cat"), or its WordNet id
(``n02123045``) — and :func:`relabel` rewrites the held-out labels to teacher indices (−1 where
no class matches), returning what ``distill evaluate`` reports about them: matched and unmatched
names, and why accuracy is not defined when nothing matches.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from distill.shardlist import resolve_shards
from rawpairs.classmap import read_class_map
from rawpairs.layout import CLASSES_FILE

__all__ = ["find_class_map", "match_classes", "relabel"]


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def match_classes(
    class_map: Mapping[str, int],
    teacher_classes: Sequence[str],
    synsets: Sequence[str] | None = None,
) -> tuple[dict[int, int], dict[str, str]]:
    """Dataset class id → teacher class index for the folder names that name exactly one teacher
    class (a synonym of its name or, with ``synsets``, its WordNet id), and folder name → why
    the others did not match (``"no teacher class"`` or ``"ambiguous: a | b"``)."""
    by_name: dict[str, set[int]] = {}
    for index, name in enumerate(teacher_classes):
        for synonym in name.split(","):
            by_name.setdefault(_normalise(synonym), set()).add(index)
    for index, synset in enumerate(synsets or ()):
        by_name.setdefault(synset.lower(), set()).add(index)
    matched: dict[int, int] = {}
    unmatched: dict[str, str] = {}
    for folder, class_id in class_map.items():
        candidates = by_name.get(_normalise(folder), set())
        if len(candidates) == 1:
            matched[class_id] = next(iter(candidates))
        elif candidates:
            names = " | ".join(teacher_classes[i] for i in sorted(candidates))
            unmatched[folder] = f"ambiguous: {names}"
        else:
            unmatched[folder] = "no teacher class"
    return matched, unmatched


def find_class_map(
    shards: str | os.PathLike[str] | Sequence[str],
) -> tuple[str, dict[str, int]] | None:
    """The ``classes.json`` of the build that holds ``shards`` (the folder given, or the folder
    of the first shard) and its map, or ``None`` when there is none (or the shards are URLs)."""
    first = os.fspath(shards if isinstance(shards, str | os.PathLike) else shards[0])
    folder = first if os.path.isdir(first) else os.path.dirname(resolve_shards(shards)[0])
    if "://" in folder or not os.path.isdir(folder or "."):
        return None
    class_map = read_class_map(folder or ".")
    if class_map is None:
        return None
    return os.path.join(folder, CLASSES_FILE), class_map


def relabel(
    labels: Sequence[Any],
    class_map: tuple[str, Mapping[str, int]] | None,
    teacher_classes: Sequence[str] | None,
    synsets: Sequence[str] | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """Per-batch label tensors rewritten to teacher class indices (−1: unlabelled or no match)
    and the report: ``class_map`` (path), ``matched`` (folder → teacher class), ``unmatched``
    (folder → why), ``reason`` (why accuracy is not defined, else ``None``), ``note``.

    Without a class map the labels are taken as teacher indices, as before (``note`` says so).
    """
    present = sorted({int(v) for t in labels for v in t.tolist() if int(v) >= 0})
    info: dict[str, Any] = {
        "class_map": None,
        "matched": {},
        "unmatched": {},
        "reason": None,
        "note": None,
    }
    if not present:
        return list(labels), info
    if class_map is None:
        info["note"] = "labels taken as the teacher's class indices: no classes.json found"
        return list(labels), info
    path, names = class_map
    info["class_map"] = path
    if teacher_classes is None:
        info["reason"] = (
            f"the teacher's class names are unknown, so the classes of {path} cannot be matched "
            "to its outputs"
        )
        return [torch.full_like(t, -1) for t in labels], info
    matched, unmatched = match_classes(names, teacher_classes, synsets)
    id_to_name = {class_id: name for name, class_id in names.items()}
    used = {id_to_name[i] for i in present if i in id_to_name}  # ids beyond the map: −1
    info["matched"] = {
        name: teacher_classes[matched[names[name]]]
        for name in sorted(used)
        if names[name] in matched
    }
    info["unmatched"] = {n: why for n, why in unmatched.items() if n in used}
    if not used:
        info["reason"] = f"the labels' class ids are not in {path}"
    elif not info["matched"]:
        shown = ", ".join(sorted(used)[:4]) + (", …" if len(used) > 4 else "")
        info["reason"] = (
            f"the labels' classes ({shown}, from {path}) name none of the teacher's "
            f"{len(teacher_classes)} classes, which the student predicts; name the class folders "
            "after teacher classes (ImageNet: e.g. 'tabby cat' or its WordNet id n02123045) to "
            "score them"
        )
    elif info["unmatched"]:
        info["note"] = (
            f"{len(info['matched'])} of {len(used)} classes matched the teacher's; samples of "
            f"{', '.join(sorted(info['unmatched']))} are left out"
        )
    lookup = torch.full((max(names.values(), default=0) + 1,), -1, dtype=torch.long)
    for class_id, index in matched.items():
        lookup[class_id] = index
    out = []
    for t in labels:
        known = (t >= 0) & (t < len(lookup))
        mapped = torch.where(known, lookup.to(t.device)[t.clamp(0, len(lookup) - 1)], -1)
        out.append(mapped.to(t.dtype))
    return out, info
