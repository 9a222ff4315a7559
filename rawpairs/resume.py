"""The output folder across runs: made ready (marker, lock, identity check), resumed from the
records of finished shards, and its shards numbered contiguously at the end.

Each finished shard has a record in ``.state/`` (:class:`rawpairs.records.ShardRecord`): a re-run
of the same command keeps every shard with a valid record and writes the others; a killed writer
leaves at most a ``.partial`` file, which is discarded. ``--overwrite`` deletes only what a
rawpairs build writes (:func:`rawpairs.layout.is_ours`). Renumbering is journalled, so a run
stopped half-way is finished by the next one.
"""

from __future__ import annotations

import json
from typing import Any

from rawpairs.config import BuildConfig
from rawpairs.errors import BuildError
from rawpairs.layout import (
    BUILD_FILE,
    MARKER,
    RENUMBER_JOURNAL,
    RENUMBER_PHASE_2,
    STATE_DIR,
    is_ours,
    is_partial,
    record_index,
    shard_name,
    staged_name,
)
from rawpairs.outputs import write_json
from rawpairs.records import ShardRecord
from rawpairs.storage import FolderLockedError, OutputFolder

__all__ = ["clean_partials", "load_records", "number_shards", "prepare_out", "resume_records"]


def clean_partials(out: OutputFolder) -> None:
    """Remove temporary files of writers that did not finish (this build holds the lock)."""
    for prefix in ("", STATE_DIR):
        for name in out.names(prefix):
            if is_partial(name) and (prefix or is_ours(name)):
                out.delete(f"{prefix}/{name}" if prefix else name)


def prepare_out(
    out: OutputFolder, identity: dict[str, Any], overwrite: bool
) -> dict[str, Any] | None:
    """Lock ``out`` and make it ready; return the previous ``build.json`` when resuming (its
    ``identity`` equal to the plan's), ``None`` for a new build (a different one is deleted with
    ``overwrite``, else :class:`BuildError`)."""
    out.makedirs()
    entries = out.names()
    if entries and MARKER not in entries:
        raise BuildError(
            f"--out {out.location} is not empty and is not a rawpairs build folder (no {MARKER} "
            "marker); rawpairs never deletes files it did not write: use an empty or new folder"
        )
    try:
        out.lock()
    except FolderLockedError as err:
        raise BuildError(str(err)) from err
    clean_partials(out)
    if BUILD_FILE not in entries:
        return None  # new, or killed before its first build.json was complete
    try:
        previous = json.loads(out.read_text(BUILD_FILE))
        if not isinstance(previous, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        previous = {"unreadable": str(err)}
    if isinstance(previous.get("config"), dict):  # options added since take their defaults
        previous["config"] = {**BuildConfig().to_dict(), **previous["config"]}
    for name, value in identity.items():
        if previous.get(name) != value:
            if not overwrite:
                if name == "sources_content":
                    raise BuildError(
                        f"--out {out.location} holds a build of the same files with other "
                        "contents (a file under --src was edited since); pass --overwrite to "
                        "rebuild it"
                    )
                raise BuildError(
                    f"--out {out.location} holds a build with a different "
                    f"{name.replace('_', ' ')}; re-run with the same options to resume, or pass "
                    "--overwrite"
                )
            for entry in out.names():
                if is_ours(entry):
                    out.delete(entry)
            return None
    return previous


def load_records(
    out: OutputFolder, groups: int, renumbered: dict[int, int] | None = None
) -> dict[int, ShardRecord]:
    """Records of the finished shards; forgets records whose shard is missing or not the size
    recorded. ``renumbered`` ({group: shard number}, from a finished renumbering) names the
    shards that no longer carry their group's number."""
    renumbered = renumbered or {}
    names = set(out.names())
    records = {}
    for name in out.names(STATE_DIR):
        index = record_index(name)
        if index is None:
            continue
        try:
            record = ShardRecord.from_json(out.read_text(f"{STATE_DIR}/{name}"))
            if record.name is not None and index in renumbered:
                record = record.renamed(shard_name(renumbered[index]))
            valid = index < groups and (
                record.name is None  # a group without samples has no shard
                or (
                    record.name == shard_name(renumbered.get(index, index))
                    and record.name in names
                    and out.size(record.name) == record.size
                )
            )
        except (ValueError, KeyError, TypeError, OSError):  # e.g. lost in a power cut
            valid = False
        if valid:
            records[index] = record
        else:
            out.delete(f"{STATE_DIR}/{name}")
    return records


def _renumber(out: OutputFolder, moves: list[tuple[int, int]]) -> None:
    """Give the shards contiguous numbers: shard ``rawpairs-<group>.tar`` becomes
    ``rawpairs-<number>.tar`` for each (group, number) of ``moves`` (numbers below groups, both
    ascending). Idempotent and safe to stop at any point, the journal (``.state/renumber.json``,
    written before the first rename) being re-run by the next run: phase 1 moves each shard into
    ``.state/`` (no final name is written while a group's name may still hold its shard), a
    marker, then phase 2 moves each into its final name."""
    if not out.exists(RENUMBER_JOURNAL):
        write_json(out, RENUMBER_JOURNAL, [list(m) for m in moves])
    if not out.exists(RENUMBER_PHASE_2):
        for group, number in moves:
            if not out.exists(staged_name(number)):
                out.rename(shard_name(group), staged_name(number))
        out.write_bytes(RENUMBER_PHASE_2, b"")
    for _, number in moves:
        if out.exists(staged_name(number)):
            out.rename(staged_name(number), shard_name(number))


def _finish_renumbering(out: OutputFolder) -> dict[int, int]:
    """Finish the renumbering a stopped run journalled (every group was finished then); return
    its {group: shard number}."""
    if not out.exists(RENUMBER_JOURNAL):
        return {}
    try:
        moves = [(int(g), int(n)) for g, n in json.loads(out.read_text(RENUMBER_JOURNAL))]
    except (ValueError, TypeError):  # cut by a power loss before it was complete: not started
        out.delete(RENUMBER_JOURNAL)
        return {}
    _renumber(out, moves)
    return dict(moves)


def resume_records(out: OutputFolder, groups: int) -> dict[int, ShardRecord]:
    """``{group: record}`` of the groups a previous run finished (a renumbering it journalled
    finished first); the others are to be written."""
    return load_records(out, groups, _finish_renumbering(out))


def number_shards(out: OutputFolder, records: list[ShardRecord]) -> list[ShardRecord]:
    """``records`` (one per group, in group order) with their shards numbered 0, 1, 2, …: a
    group whose every source failed has no shard, and the shards after it are renamed
    (:func:`_renumber`)."""
    with_shard = [i for i, r in enumerate(records) if r.name is not None]
    moves = [(i, n) for n, i in enumerate(with_shard) if records[i].name != shard_name(n)]
    if not moves:
        return records
    _renumber(out, moves)
    numbered = list(records)
    for i, n in moves:
        numbered[i] = records[i].renamed(shard_name(n))
    return numbered
