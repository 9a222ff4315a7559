"""A rawpairs build folder's bookkeeping files, read and checked: ``index.json``,
``manifest.parquet``, ``build.json``, ``errors.jsonl`` and ``skipped.jsonl``.

Shared by the summary (:mod:`rawpairs.inspect`), the verification (:mod:`rawpairs.verify`) and
the contact sheet (:mod:`rawpairs.preview`). Every problem is one line
(:class:`InspectError`); nothing but regular files inside the folder is ever opened.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from rawpairs.layout import BUILD_FILE, ERRORS_FILE, INDEX_FILE, MANIFEST_FILE, SKIPPED_FILE, SPLITS
from rawpairs.manifest import ShardEntry, manifest_schema, parse_index, read_manifest
from rawpairs.messages import one_line

__all__ = [
    "BUILD_FILES",
    "BuildRecords",
    "InspectError",
    "is_build_folder",
    "load_build",
    "regular_file",
    "split_folders",
]

_REQUIRED = (INDEX_FILE, MANIFEST_FILE, BUILD_FILE)
_ERROR_FIELDS = ("path", "error", "message")
_SKIP_FIELDS = ("path", "reason")
BUILD_FILES = (*_REQUIRED, ".rawpairs")  # any of them: a rawpairs build folder (finished or not)


class InspectError(ValueError):
    """The folder is not a readable, finished rawpairs build (one-line message)."""


@dataclass
class BuildRecords:
    """The bookkeeping files of a build folder, parsed (:func:`load_build`)."""

    index: list[ShardEntry]
    rows: list[dict[str, Any]]
    header: dict[str, Any]
    errors: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


def regular_file(path: Path) -> bool:
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
    if not regular_file(path):
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


def load_build(folder: Path) -> BuildRecords:
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
        if not regular_file(folder / name):
            raise InspectError(f"{folder / name}: not a regular file")
    try:
        index = parse_index(_read_json(folder / INDEX_FILE))
    except ValueError as err:
        raise InspectError(f"{folder / 'index.json'}: {err}") from err
    header = _read_json(folder / BUILD_FILE)
    if not isinstance(header, dict):
        raise InspectError(f"{folder / 'build.json'}: not a JSON object")
    rows = _read_manifest(folder / MANIFEST_FILE)
    errors = _read_errors(folder / ERRORS_FILE)
    return BuildRecords(
        index, rows, header, errors, _read_errors(folder / SKIPPED_FILE, _SKIP_FIELDS)
    )


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
