"""Tasks and their scheduling, the same for every engine: what a worker runs (:class:`Task`,
:func:`run_task`), what a pool reports (:class:`PoolEvent`), and what a worker's death means
(:class:`Schedule`: retries, then isolation source by source). :func:`drive` feeds any pool (local
processes, :mod:`rawpairs.pool`; Ray tasks, :mod:`rawpairs.ray_pool`) and yields the records.
"""

from __future__ import annotations

import collections
import enum
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rawpairs.config import BuildConfig
from rawpairs.errors import GroupFailedError
from rawpairs.group import write_group
from rawpairs.layout import shard_name
from rawpairs.records import ShardRecord
from rawpairs.sample import Source, sample_stream
from rawpairs.storage import OutputFolder

__all__ = [
    "Event",
    "PoolEvent",
    "Record",
    "Schedule",
    "Task",
    "TaskKind",
    "drive",
    "dumps",
    "holds_raw",
    "run_task",
]


class TaskKind(enum.Enum):
    """What a :class:`Task` does."""

    GROUP = "group"  # write the group's shard and record
    PROBE = "probe"  # make the samples of one source, writing nothing: does it kill its worker?


class PoolEvent(enum.Enum):
    """What a worker pool reports about a task (or, ``READY``, about a worker)."""

    READY = "ready"  # a local worker started and can take tasks (no task)
    DONE = "done"  # the task finished: its record (``None`` for a probe)
    FAILED = "failed"  # the output cannot be written: the build stops (a one-line cause)
    DIED = "died"  # its worker died while running it (the cause: an exception's name)
    REQUEUE = "requeue"  # its worker died before it started: run it again, no death counted


@dataclass
class Task:
    """A unit of work: write shard ``index`` of ``sources`` (:attr:`TaskKind.GROUP`) without the
    ``excluded`` ones, or try ``sources[0]`` alone without writing (:attr:`TaskKind.PROBE`)."""

    kind: TaskKind
    index: int
    sources: list[Source]
    excluded: dict[str, dict[str, str]] = field(default_factory=dict)
    isolated: bool = False  # its sources were probed one by one after its worker kept dying
    deaths: int = 0

    @property
    def title(self) -> str:
        """The task's name (a Ray worker's process title while it runs the task)."""
        if self.kind is TaskKind.PROBE:
            return f"probe {self.sources[0].relpath}"
        rest = f" (excluding {len(self.excluded)})" if self.excluded else ""
        return f"write_group {shard_name(self.index)}{rest}"


def run_task(task: Task, config: BuildConfig, location: str) -> ShardRecord | None:
    """Run ``task`` here: the group's record, or ``None`` for a probe that survived."""
    if task.kind is TaskKind.PROBE:
        try:
            for _ in sample_stream(task.sources[0], config):
                pass
        except Exception:  # an ordinary failure: the source did not kill its worker
            pass
        return None
    return write_group(OutputFolder(location), task.index, task.sources, config, task.excluded)


class Schedule:
    """Which task runs next, and what a worker's death means for its task."""

    def __init__(self, groups: dict[int, list[Source]], retries: int) -> None:
        self.todo = collections.deque(Task(TaskKind.GROUP, i, s) for i, s in groups.items())
        self.retries = retries
        self.isolating: dict[int, tuple[Task, int]] = {}  # group → (its task, probes pending)

    def died(self, task: Task, cause: str) -> None:
        task.deaths += 1
        if task.deaths <= self.retries:
            self.todo.appendleft(task)
        elif task.kind is TaskKind.PROBE:
            group, pending = self.isolating[task.index]
            group.excluded[task.sources[0].relpath] = _crash_record(
                task.sources[0], cause, f"the worker process died on this file {task.deaths} "
                "times, also alone (a crash in a decoder, or the out-of-memory killer)"
            )  # fmt: skip
            self._probed(task.index, group, pending)
        elif not task.isolated:
            probes = [Task(TaskKind.PROBE, task.index, [s]) for s in task.sources]
            group = Task(TaskKind.GROUP, task.index, task.sources, isolated=True)
            self.isolating[task.index] = (group, len(probes))
            self.todo.extendleft(reversed(probes))
        elif len(task.excluded) < len(task.sources):  # isolated, and still dying
            for source in task.sources:
                task.excluded.setdefault(
                    source.relpath,
                    _crash_record(source, cause, "its group's worker kept dying after isolation"),
                )
            self.todo.appendleft(
                Task(TaskKind.GROUP, task.index, task.sources, task.excluded, True)
            )
        else:
            raise GroupFailedError(f"the worker writing {task.title} died {task.deaths} times")

    def probe_survived(self, task: Task) -> None:
        group, pending = self.isolating[task.index]
        self._probed(task.index, group, pending)

    def _probed(self, index: int, group: Task, pending: int) -> None:
        if pending > 1:
            self.isolating[index] = (group, pending - 1)
            return
        del self.isolating[index]
        self.todo.appendleft(group)


def _crash_record(source: Source, cause: str, message: str) -> dict[str, str]:
    return {"path": source.relpath, "error": cause, "message": message}


Record = tuple[int, ShardRecord]  # (group index, its record)
Event = tuple[Task, PoolEvent, Any]  # (task, what happened, the record or the cause)


def holds_raw(sources: list[Source]) -> bool:
    """Whether a group holds camera RAW files (decoded by LibRaw: only ever in a worker)."""
    return any(source.kind == "raw" for source in sources)


def drive(
    schedule: Schedule,
    pool: Any,
    config: BuildConfig,
    location: str,
    work_here: Callable[[], bool],
    stats: dict[str, Any],
    isolate_raw: bool = False,
) -> Iterator[Record]:
    """Feed ``pool`` from ``schedule`` and yield ``(group, record)`` as groups finish.

    ``work_here()`` says whether this process should run the next task itself (no worker ready);
    with ``isolate_raw`` it never runs a task holding camera RAW files, nor an isolation probe.
    ``stats["driver_work_cpu_s"]``: CPU seconds this process spent running tasks itself.
    """
    stats.setdefault("driver_work_cpu_s", 0.0)
    stats.setdefault("groups_here", 0)

    def here() -> bool:
        if not (schedule.todo and work_here()):
            return False
        task = schedule.todo[0]
        return not (isolate_raw and (task.kind is TaskKind.PROBE or holds_raw(task.sources)))

    while schedule.todo or pool.busy():
        while schedule.todo and pool.has_room():
            pool.submit(schedule.todo.popleft())
        for task, outcome, payload in pool.events(block=not here()):
            if outcome is PoolEvent.DONE:
                if task.kind is TaskKind.PROBE:
                    schedule.probe_survived(task)
                else:
                    yield task.index, payload
            elif outcome is PoolEvent.DIED:
                schedule.died(task, payload)
            elif outcome is PoolEvent.REQUEUE:
                schedule.todo.appendleft(task)
            else:
                raise GroupFailedError(payload)
        if here():
            task = schedule.todo.popleft()
            started = time.process_time()
            record = run_task(task, config, location)
            stats["driver_work_cpu_s"] += time.process_time() - started
            stats["groups_here"] += 1
            if task.kind is TaskKind.PROBE:
                schedule.probe_survived(task)
            else:
                assert record is not None
                yield task.index, record


def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
