"""Engines run the build's unit of work, :func:`rawpairs.group.write_group` (a group of sources →
one shard written straight into the output folder), and hand its small record back.

No sample's bytes cross a process boundary: a worker makes the samples of its group and writes
their shard itself; what comes back is the record (names, offsets, sizes, checksum, manifest rows,
errors; 0.2–0.5 kB per sample). Records arrive in completion order; the shards' names and bytes
depend only on the group, so the output is the same whichever engine or worker count ran it.

- ``local``: this process (one worker, or one group), or long-lived worker processes forked from
  a *fork server* (a fresh interpreter that has imported the sample makers and loaded their
  compiled kernels, :mod:`rawpairs._forkserver`, but run no OpenMP code: rawpy's OpenMP can
  deadlock in a child forked from a process that used it), each given at most
  :data:`~rawpairs.pool.QUEUE_DEPTH` groups at a time. Workers start only when the work left
  would take this process more than :data:`~rawpairs.pool.WORKERS_WORTH_S` alone, and until one
  is ready this process builds groups itself: a small build never pays for start-up. Groups
  holding camera RAW files are the exception (``isolate_raw``): LibRaw is a large C decoder fed
  untrusted files, so they are only ever decoded in workers, where a crash becomes an error
  record instead of ending the build (one worker is started for them even with ``workers=1``).
  Workers die with the build (``PR_SET_PDEATHSIG`` on the fork server, which exits with the
  build), also after ``kill -9``.
- ``ray``: Ray tasks on a cluster (``address``) or on a Ray instance started here for the build.
  Ray worker processes are started by the raylet (a separate executable), never forked from this
  process, so they inherit no rawpy/OpenMP state. Ray re-runs a task whose worker died up to
  :data:`~rawpairs.ray_pool.RAY_MAX_RETRIES` times.

A group whose worker keeps dying (a decoder crash, the out-of-memory killer) is isolated: each of
its sources is tried alone ("probe"); a source that kills its worker on every attempt becomes an
error record, like a corrupt file, and the group is written without it.

Files: this module chooses the engine; :mod:`rawpairs.schedule` holds the tasks, the pool events
and the retry/isolation schedule shared by both; :mod:`rawpairs.pool` the local worker processes;
:mod:`rawpairs.ray_pool` the Ray tasks.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from rawpairs.choices import Engine
from rawpairs.config import BuildConfig
from rawpairs.errors import EngineError
from rawpairs.pool import run_local
from rawpairs.ray_pool import import_ray, run_ray
from rawpairs.sample import Source
from rawpairs.schedule import Record

__all__ = ["require_engine", "run_groups"]


def require_engine(engine: str) -> None:
    """Raise :class:`EngineError` with a one-line reason unless ``engine`` can run here."""
    try:
        engine = Engine.parse(engine, "--engine")
    except ValueError as err:
        raise EngineError(str(err)) from None
    if engine is Engine.RAY:
        import_ray()


def run_groups(
    groups: dict[int, list[Source]],
    config: BuildConfig,
    location: str,
    *,
    workers: int,
    engine: str = "local",
    address: str | None = None,
    stats: dict[str, Any] | None = None,
    isolate_raw: bool = True,
) -> Generator[Record, None, None]:
    """Write shard ``i`` of ``groups[i]`` into the folder ``location`` for every ``i``; yield
    ``(i, record)`` as each finishes (any order).

    ``isolate_raw``: decode camera RAW files only in worker processes (local engine; Ray tasks
    always run in workers). ``False`` only where other processes cannot write ``location``.

    ``workers``: processes of the local engine, or CPUs of a Ray instance started here.
    ``address``: the Ray cluster to use (``engine="ray"`` only). ``stats`` receives the local
    workers' start-up seconds. Raises :class:`EngineError` (at once, not on first iteration) for
    an unknown engine or a missing Ray, and :class:`GroupFailedError` when a task fails for a
    reason other than its inputs (the output folder cannot be written).
    """
    require_engine(engine)
    if engine == "ray":
        return run_ray(
            groups, config, location, workers, address, stats if stats is not None else {}
        )
    return run_local(
        groups, config, location, workers, stats if stats is not None else {}, isolate_raw
    )
