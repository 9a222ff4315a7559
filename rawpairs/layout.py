"""The names of what a build writes into ``--out``, written once: every other module asks here.

::

    out/
      .rawpairs                      the marker: a folder made (and locked) by rawpairs build
      rawpairs-000000.tar …          the shards (:func:`shard_name`)
      manifest.parquet, index.json, errors.jsonl, skipped.jsonl, classes.json, README.md,
      build.json                     the output files (:data:`OUTPUT_FILES`)
      .state/shard-000000.json …     resume records of finished shards (:func:`record_name`)
      .state/renumber.json …         the renumbering journal and its staged shards
      .<name>.<pid>-<token>.partial  a file being written (:func:`partial_name`)

A split build (``--val-fraction``) writes one such folder per split: ``out/train``, ``out/val``
(:data:`SPLITS`, :func:`split_folder`).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

__all__ = [
    "BUILD_FILE",
    "CARD_FILE",
    "CLASSES_FILE",
    "ERRORS_FILE",
    "INDEX_FILE",
    "MANIFEST_FILE",
    "MARKER",
    "OUTPUT_FILES",
    "RENUMBER_JOURNAL",
    "RENUMBER_PHASE_2",
    "SKIPPED_FILE",
    "SPLITS",
    "STATE_DIR",
    "is_ours",
    "is_partial",
    "partial_name",
    "record_index",
    "record_name",
    "shard_name",
    "split_folder",
    "staged_name",
]

MARKER = ".rawpairs"  # marks a folder made by rawpairs build; locked while a build writes
STATE_DIR = ".state"
MANIFEST_FILE = "manifest.parquet"  # one row per sample
INDEX_FILE = "index.json"  # the shards: names, sample counts, sizes, checksums
ERRORS_FILE = "errors.jsonl"  # one record per failed source
SKIPPED_FILE = "skipped.jsonl"  # one record per source left out on purpose
CLASSES_FILE = "classes.json"  # the class map of a labelled build
CARD_FILE = "README.md"  # the dataset card
BUILD_FILE = "build.json"  # the configuration, identity, status and counts: written first and last
OUTPUT_FILES = (
    MANIFEST_FILE,
    INDEX_FILE,
    ERRORS_FILE,
    SKIPPED_FILE,
    CLASSES_FILE,
    CARD_FILE,
    BUILD_FILE,
)
SPLITS = ("train", "val")
RENUMBER_JOURNAL = f"{STATE_DIR}/renumber.json"  # [[group, shard number], …]
RENUMBER_PHASE_2 = f"{STATE_DIR}/renumber-phase-2"  # every shard to move is in .state/

_SHARD_PREFIX, _SHARD_SUFFIX, _DIGITS = "rawpairs-", ".tar", 6
_RECORD_PREFIX, _RECORD_SUFFIX = "shard-", ".json"
_SHARD = rf"{re.escape(_SHARD_PREFIX)}\d{{{_DIGITS}}}{re.escape(_SHARD_SUFFIX)}"
_TEMP = r"\.\d+-[0-9a-f]{8}\.partial"  # what partial_name appends: .<pid>-<8 hex digits>.partial
_OUTPUT = "|".join(map(re.escape, OUTPUT_FILES))
_OURS = re.compile(rf"^({_SHARD}|\.({_SHARD}|{_OUTPUT}){_TEMP})$")
_PARTIAL = re.compile(rf"^\..+{_TEMP}$")
_RECORD = re.compile(rf"^{re.escape(_RECORD_PREFIX)}(\d{{{_DIGITS}}}){re.escape(_RECORD_SUFFIX)}$")


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``rawpairs-000042.tar``)."""
    return f"{_SHARD_PREFIX}{index:0{_DIGITS}d}{_SHARD_SUFFIX}"


def record_name(index: int) -> str:
    """Path (inside the output folder) of the resume record of shard ``index``."""
    return f"{STATE_DIR}/{_RECORD_PREFIX}{index:0{_DIGITS}d}{_RECORD_SUFFIX}"


def record_index(name: str) -> int | None:
    """The group index of a resume record's file name inside :data:`STATE_DIR`, or ``None``
    for any other name."""
    match = _RECORD.match(name)
    return int(match.group(1)) if match else None


def staged_name(number: int) -> str:
    """Where the renumbering parks the shard that becomes number ``number``."""
    return f"{STATE_DIR}/renumber-{number:0{_DIGITS}d}{_SHARD_SUFFIX}"


def partial_name(name: str) -> str:
    """A temporary name for ``name`` (same folder) unique to this writer."""
    head, _, base = name.rpartition("/")
    temp = f".{base}.{os.getpid()}-{secrets.token_hex(4)}.partial"
    return f"{head}/{temp}" if head else temp


def is_partial(name: str) -> bool:
    """Whether ``name`` is a temporary name made by :func:`partial_name`."""
    return _PARTIAL.match(name) is not None


def is_ours(name: str) -> bool:
    """Whether a rawpairs build writes entries named ``name`` at the top of its folder (never
    true for a user's file unless it imitates our names inside a folder marked as ours)."""
    return name in OUTPUT_FILES or name == STATE_DIR or _OURS.match(name) is not None


def split_folder(out: str | Path, name: str) -> str:
    """The folder of split ``name`` inside ``out`` (a path or URL): ``out/name``."""
    return f"{str(out).rstrip('/')}/{name}"
