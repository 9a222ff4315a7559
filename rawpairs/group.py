"""The build's unit of work: one group of sources → its shard and resume record.

:func:`write_group` makes the samples of one group of sources, writes their shard
(:class:`rawpairs.shards.ShardWriter`) and its resume record (``.state/shard-NNNNNN.json``), and
returns that record (:class:`rawpairs.records.ShardRecord`: names, offsets, sizes, checksum,
manifest rows, error records): the only thing that leaves the process that made the samples.
"""

from __future__ import annotations

import errno
import warnings
from typing import Any

from rawpairs.config import BuildConfig
from rawpairs.errors import SkippedInputError
from rawpairs.layout import record_name
from rawpairs.messages import one_line
from rawpairs.records import ShardRecord
from rawpairs.sample import Source, UpscaledPhoto, error_record, sample_stream, skip_record
from rawpairs.shards import ShardWriter
from rawpairs.storage import OutputFolder

__all__ = ["write_group"]


def write_group(
    folder: OutputFolder,
    index: int,
    sources: list[Source],
    config: BuildConfig,
    excluded: dict[str, dict[str, str]] | None = None,
) -> ShardRecord:
    """Make the samples of ``sources`` (one group, in order), write them as shard ``index`` and
    its resume record; return the record. A group without any sample writes no shard (the
    record's ``name`` is ``None``).

    A source that fails becomes an error record (in source order, like its samples), one left
    out on purpose (:class:`~rawpairs.errors.SkippedInputError`) a skip record; warnings raised
    while a source is made (a decoder's message, a library's warning) are collected in the
    record (``warnings``) for the driver's ``warn``, never printed here. ``excluded`` maps
    relative paths of sources not to run (they killed their worker) to their error records.
    Raises ``OSError`` when the output cannot be written (disk full, …), after removing the
    partial shard.
    """
    excluded = excluded or {}
    writer = ShardWriter(folder, index)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    notes: list[dict[str, str]] = []
    upscaled: list[str] = []  # photos resized up to the crop (--upscale)
    try:
        for source in sources:
            if source.relpath in excluded:
                errors.append(excluded[source.relpath])
                continue
            writer.begin()
            source_rows = []
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        for members, row in sample_stream(source, config):
                            writer.add(members)
                            source_rows.append(row)
                    finally:
                        for w in caught:
                            if issubclass(w.category, UpscaledPhoto):
                                upscaled.append(source.relpath)
                            else:
                                notes.append(_note(source.relpath, w.message))
            except SkippedInputError as err:  # left out on purpose: not a failure
                skipped.append(skip_record(source, err))
                writer.drop()
            except OSError as err:
                if _is_output_error(err):
                    raise
                errors.append(error_record(source, err))
                writer.drop()
            except Exception as err:  # one bad input never stops the build
                errors.append(error_record(source, err))
                writer.drop()
            else:
                writer.keep()
                rows.extend(source_rows)
        info = writer.commit() if rows else None
        if info is None:
            writer.abort()  # every source failed: no shard (the build renumbers the others)
    except BaseException:
        writer.abort()
        raise
    record = ShardRecord(
        name=info.name if info else None,
        size=info.size if info else 0,
        sha256=info.sha256 if info else None,
        sources=len(sources),
        rows=rows,
        positions=info.samples if info else [],
        errors=errors,
        skipped=skipped,
        warnings=notes,
        upscaled=upscaled,
    )
    folder.write_bytes(record_name(index), record.to_json())
    return record


def _note(relpath: str, message: Warning | str) -> dict[str, str]:
    """A warning raised while a source was made, for the driver to report (one line)."""
    return {"path": relpath, "message": one_line(message)}


_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})  # the spool or the shard cannot grow


def _is_output_error(err: OSError) -> bool:
    """Whether ``err`` (raised while a source's samples were made and gathered) is the
    machine's (no space for the spool) rather than the source's."""
    return err.errno in _OUTPUT_ERRNOS
