"""The build: a folder of RAW files and photos → verified WebDataset shards, resumable.

Data flow: the plan (:mod:`rawpairs.plan`) lists ``--src`` (sorted, :mod:`rawpairs.discover`) and
cuts the sources into consecutive *groups* (a function of the inputs and the configuration only)
→ an engine (:mod:`rawpairs.engines`) runs :func:`rawpairs.group.write_group` per group: the
process that makes a group's samples writes its shard ``rawpairs-<group>.tar`` itself, straight
into ``--out``, and returns a small record (:class:`rawpairs.records.ShardRecord`). This process
only collects records and writes ``manifest.parquet``, ``index.json``, ``errors.jsonl`` and
``build.json`` from them (:mod:`rawpairs.outputs`). Shard boundaries and bytes do not depend on
the engine or the number of workers, so neither does the output.

Resume (:mod:`rawpairs.resume`): each finished shard has a record in ``<out>/.state/``. A re-run
of the same command keeps every shard with a record and writes the others; a killed writer leaves
at most a ``.partial`` file, which is discarded. The folder is marked as a rawpairs build
(``.rawpairs``) and locked while a build writes it; ``--overwrite`` deletes only what a rawpairs
build writes. Every name in the folder comes from :mod:`rawpairs.layout`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rawpairs.config import BuildConfig
from rawpairs.discover import discover_sources, display_name
from rawpairs.engines import require_engine, run_groups
from rawpairs.errors import BuildError, BuildOutputError, EngineError, GroupFailedError
from rawpairs.layout import (
    BUILD_FILE,
    MARKER,
    SPLITS,
    STATE_DIR,
    split_folder,
)
from rawpairs.outputs import versions, write_json, write_outputs
from rawpairs.plan import BuildPlan, make_plan, select_sources
from rawpairs.records import ShardRecord
from rawpairs.resume import clean_partials, number_shards, prepare_out, resume_records
from rawpairs.sample import Source, is_documentation
from rawpairs.splits import Split, check_val_fraction, split_of
from rawpairs.storage import OutputFolder

__all__ = ["BuildResult", "RunOptions", "build", "build_splits"]

Progress = Callable[[int, int, int, int], None]  # (sources done, sources, samples, errors)


@dataclass
class BuildResult:
    """Counts of a finished build (``build.json`` holds the same and more)."""

    out: str
    sources: int
    samples: int
    shards: int
    errors: int
    seconds: float
    already_complete: bool = False
    skipped: int = 0  # sources left out on purpose (too small, licence files): not failures
    stats: dict[str, Any] = field(default_factory=dict)
    resumed_samples: int = 0  # samples of shards a previous run had finished (kept, not redone)

    @property
    def summary(self) -> str:
        """One line; the rate counts only the samples this run made."""
        made = self.samples - self.resumed_samples
        rate = made / self.seconds if self.seconds > 0 else 0.0
        state = "already complete: " if self.already_complete else ""
        kept = (
            f", {self.resumed_samples} kept from the previous run"
            if self.resumed_samples and not self.already_complete
            else ""
        )
        skipped = f"{self.skipped} skipped (skipped.jsonl), " if self.skipped else ""
        return (
            f"{state}{self.samples} samples in {self.shards} shards from {self.sources} sources, "
            f"{skipped}{self.errors} failed{kept}, {self.seconds:.1f} s ({rate:.1f} samples/s) → "
            f"{self.out}"
        )


@dataclass(frozen=True)
class RunOptions:
    """How a plan is run (:func:`build`'s options of the same names): never part of what is
    built, so a resumed build may change them."""

    workers: int | None = None
    engine: str = "local"
    address: str | None = None
    overwrite: bool = False
    progress: Progress | None = None
    warn: Callable[[str], None] | None = None


@dataclass
class _Tally:
    """Running counts of a build, over the groups finished so far."""

    sources: int = 0
    samples: int = 0
    errors: int = 0
    skipped: int = 0
    upscaled: int = 0

    def add(self, record: ShardRecord, sources: int) -> None:
        """Count one finished group of ``sources`` sources."""
        self.sources += sources
        self.samples += record.samples
        self.errors += len(record.errors)
        self.skipped += len(record.skipped)
        self.upscaled += len(record.upscaled)


# The build ---------------------------------------------------------------------------------


def build(
    src: str | Path,
    out: str | Path,
    config: BuildConfig,
    *,
    workers: int | None = None,
    samples_per_shard: int = 10_000,
    shard_size: int = 256 * 2**20,
    sources_per_shard: int | None = None,
    overwrite: bool = False,
    engine: str = "local",
    address: str | None = None,
    progress: Callable[[int, int, int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
    class_map: Mapping[str, int] | None = None,
    split: Split | None = None,
    exclude: str | Path | None = None,
) -> BuildResult:
    """Build (or resume building) the shards of ``src`` into ``out``.

    Shards hold consecutive groups of sources (:func:`plan_groups`). ``workers``: processes
    (default: one per core, never more than the shards left to write); ``progress(sources_done,
    sources_total, samples_written, errors)`` is called after each shard; ``warn(line)`` with a
    one-line message for each failed input. ``class_map`` (with ``config.labels``): the class ids
    to use (``{folder name: id}``, e.g. another build's ``classes.json``) instead of numbering
    this build's folders; a labelled build writes its map as ``classes.json``. Raises
    :class:`BuildError` when ``src`` is missing or empty, an option is invalid (a class folder
    missing from ``class_map``), or ``out`` cannot be used (another build's folder, a different
    build without ``overwrite``, a folder not made by rawpairs, locked by a running build);
    :class:`BuildOutputError` when writing fails (disk full), leaving no partial shard.

    ``split``: build only the sources of that split (:func:`split_of`; the class map still
    numbers every class folder of ``src``, so both splits write the same ``classes.json``), and
    record it in ``build.json``. ``exclude``: a folder not to read as input (default ``out``;
    :func:`build_splits` passes the folder holding both splits).
    """
    _check_options(src, out, engine, workers, samples_per_shard, shard_size, sources_per_shard)
    started, cpu_started = time.monotonic(), time.process_time()
    sources, class_map = select_sources(
        src, config, out=exclude or out, class_map=class_map, split=split
    )
    folder = _open_out(out, engine)
    run = RunOptions(workers, engine, address, overwrite, progress, warn)
    try:
        plan = make_plan(
            src, config, sources, class_map, samples_per_shard=samples_per_shard,
            shard_size=shard_size, sources_per_shard=sources_per_shard, split=split,
        )  # fmt: skip
        try:
            result = _build(plan, folder, run, started)
        except OSError as err:
            raise BuildOutputError(_os_message(folder, err)) from err
        cpu = time.process_time() - cpu_started
        result.stats["driver_cpu_s"] = cpu
        result.stats["driver_overhead_cpu_s"] = cpu - result.stats.get("driver_work_cpu_s", 0.0)
        return result
    finally:
        folder.close()


def _check_options(
    src: str | Path,
    out: str | Path,
    engine: str,
    workers: int | None,
    samples_per_shard: int,
    shard_size: int,
    sources_per_shard: int | None,
) -> None:
    """Raise :class:`BuildError` (one line) for an option :func:`build` cannot run with."""
    try:
        require_engine(engine)
    except EngineError as err:
        raise BuildError(str(err)) from err
    if samples_per_shard < 1:
        raise BuildError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    if shard_size < 1:
        raise BuildError(f"--shard-size must be >= 1 byte, got {shard_size}")
    if sources_per_shard is not None and sources_per_shard < 1:
        raise BuildError(f"--sources-per-shard must be >= 1, got {sources_per_shard}")
    if workers is not None and workers < 1:
        raise BuildError(f"--workers must be >= 1, got {workers}")
    for option, value in (("--src", src), ("--out", out)):
        if not str(value).strip():
            raise BuildError(f"{option} is empty: name a folder, file or URL")


def _open_out(out: str | Path, engine: str) -> OutputFolder:
    """The output folder (not yet touched); :class:`BuildError` for an unknown protocol, its
    package missing, or a per-process file system that Ray tasks cannot write."""
    try:
        folder = OutputFolder(out)
    except (ValueError, ImportError) as err:  # unknown protocol, or its package missing
        raise BuildError(f"--out {out}: {err}") from err
    if not folder.shared and engine == "ray":
        raise BuildError(f"--out {out}: a per-process file system cannot be written by Ray tasks")
    return folder


def build_splits(
    src: str | Path,
    out: str | Path,
    config: BuildConfig,
    val_fraction: float,
    *,
    on_split: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, BuildResult]:
    """Build (or resume) ``out/train`` and ``out/val``: each a complete build of its sources
    (:func:`split_of`), with its own shards, manifest, index and card, and the same class map.

    ``options`` are :func:`build`'s; ``on_split(name)`` is called before each split starts.
    Checks up front that both splits get sources (:class:`BuildError` otherwise), so nothing is
    written for a fraction that leaves one empty.
    """
    check_val_fraction(val_fraction)
    try:
        parent = OutputFolder(out)
    except (ValueError, ImportError) as err:
        raise BuildError(f"--out {out}: {err}") from err
    try:
        if MARKER in parent.names():
            raise BuildError(
                f"--out {out} holds a build without a split: a split build writes {out}/train "
                f"and {out}/val; use another --out (or remove that build)"
            )
    finally:
        parent.close()
    sources, _ = discover_sources(
        src, labels=config.labels, out=out, class_map=options.get("class_map")
    )
    images = [s for s in sources if not is_documentation(s.relpath)]
    counts = Counter(split_of(s.relpath, val_fraction) for s in images)
    for name in SPLITS:
        if not counts[name]:
            raise BuildError(
                f"--val-fraction {val_fraction} puts none of the {len(images)} inputs under "
                f"--src {src} into {name}: change the fraction or add inputs"
            )
    results = {}
    for name in SPLITS:
        if on_split:
            on_split(name)
        results[name] = build(
            src, split_folder(out, name), config, split=Split(name, val_fraction), exclude=out,
            **options,
        )  # fmt: skip
    return results


def _os_message(out: OutputFolder, err: OSError) -> str:
    where = f" ({os.path.basename(err.filename)})" if getattr(err, "filename", None) else ""
    return f"--out {out.location}: cannot write{where}: {err.strerror or err}"


def _build(plan: BuildPlan, out: OutputFolder, run: RunOptions, started: float) -> BuildResult:
    """Run ``plan`` into ``out``: resume what a previous run finished, write the other groups,
    number the shards, write the outputs. ``started``: the build's start (monotonic seconds)."""
    previous = prepare_out(out, plan.identity, run.overwrite)
    if previous is not None and previous.get("status") == "complete":
        return _already_complete(out, previous)
    header = {
        **plan.identity,
        "status": "running",
        "src": display_name(plan.src),
        "versions": versions(),
    }
    write_json(out, BUILD_FILE, header)
    groups = plan.groups
    records = resume_records(out, len(groups))
    tally = _Tally()
    for index, record in records.items():
        tally.add(record, len(groups[index]))
    resumed = tally.samples
    stats = _write_groups(plan, groups, records, out, run, started, tally)
    ordered = number_shards(out, [records[i] for i in range(len(groups))])
    shards = sum(r.name is not None for r in ordered)
    seconds = time.monotonic() - started
    header.update(
        status="complete",
        seconds=round(seconds, 3),
        counts={
            "sources": len(plan.sources),
            "samples": tally.samples,
            "shards": shards,
            "errors": tally.errors,
            "skipped": tally.skipped,
            "upscaled": tally.upscaled,
        },
    )
    samples, errors = write_outputs(out, ordered, header)
    return BuildResult(
        out.location, len(plan.sources), samples, shards, errors, seconds, stats=stats,
        resumed_samples=resumed, skipped=tally.skipped,
    )  # fmt: skip


def _already_complete(out: OutputFolder, previous: dict[str, Any]) -> BuildResult:
    """The result of a build that a previous run finished (killed, at most, after its last
    write: its resume state is removed)."""
    out.delete(STATE_DIR)
    counts = previous["counts"]
    return BuildResult(
        out.location, counts["sources"], counts["samples"], counts["shards"],
        counts["errors"], 0.0, already_complete=True, skipped=counts.get("skipped", 0),
    )  # fmt: skip


def _write_groups(
    plan: BuildPlan,
    groups: list[list[Source]],
    records: dict[int, ShardRecord],
    out: OutputFolder,
    run: RunOptions,
    started: float,
    tally: _Tally,
) -> dict[str, Any]:
    """Write every group without a record on ``run``'s engine, adding each record to
    ``records`` and ``tally`` as it arrives (reported through ``run.warn`` and
    ``run.progress``); return the run's statistics. Leaves no partial file behind."""
    todo = {i: groups[i] for i in range(len(groups)) if i not in records}
    n_workers = min(run.workers or os.cpu_count() or 1, max(len(todo), 1))
    if not out.shared:
        n_workers = 1  # its files exist only in this process
    stats: dict[str, Any] = {"workers": n_workers, "groups_done_before": len(records)}
    arrivals = stats["records"] = []  # (seconds since the start, samples) per finished shard
    finished = run_groups(
        todo, plan.config, out.location, workers=n_workers, engine=run.engine,
        address=run.address, stats=stats, isolate_raw=out.shared,
    )  # fmt: skip
    try:
        for index, record in finished:
            records[index] = record
            tally.add(record, len(groups[index]))
            arrivals.append((round(time.monotonic() - started, 4), record.samples))
            if run.warn:
                _warn(record, run.warn)
            if run.progress:
                run.progress(tally.sources, len(plan.sources), tally.samples, tally.errors)
    except GroupFailedError as err:
        raise BuildOutputError(f"--out {out.location}: {err}") from err
    finally:
        finished.close()  # stops the workers (on an early exit) before their files are cleaned
        clean_partials(out)
    return stats


def _warn(record: ShardRecord, warn: Callable[[str], None]) -> None:
    """One line per failed source and per warning raised while a source was made."""
    for e in record.errors:
        warn(f"{e['path']}: {e['error']}: {e['message']}")
    for note in record.warnings:
        warn(f"{note['path']}: {note['message']}")
