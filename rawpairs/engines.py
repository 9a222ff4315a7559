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
  :data:`QUEUE_DEPTH` groups at a time. Workers start only when the work left would take this
  process more than :data:`WORKERS_WORTH_S` alone, and until one is ready this process builds
  groups itself: a small build never pays for start-up. Groups holding camera RAW files are the
  exception (``isolate_raw``): LibRaw is a large C decoder fed untrusted files, so they are only
  ever decoded in workers, where a crash becomes an error record instead of ending the build
  (one worker is started for them even with ``workers=1``). Workers die with the build
  (``PR_SET_PDEATHSIG`` on the fork server, which exits with the build), also after ``kill -9``.
- ``ray``: Ray tasks on a cluster (``address``) or on a Ray instance started here for the build.
  Ray worker processes are started by the raylet (a separate executable), never forked from this
  process, so they inherit no rawpy/OpenMP state. Ray re-runs a task whose worker died up to
  :data:`RAY_MAX_RETRIES` times.

A group whose worker keeps dying (a decoder crash, the out-of-memory killer) is isolated: each of
its sources is tried alone ("probe"); a source that kills its worker on every attempt becomes an
error record, like a corrupt file, and the group is written without it.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import Any

import cv2
import numpy as np

from rawpairs import isp
from rawpairs.choices import Engine
from rawpairs.config import BuildConfig
from rawpairs.group import write_group
from rawpairs.sample import Source, sample_stream
from rawpairs.shards import shard_name
from rawpairs.storage import OutputFolder
from rawpairs.unprocess import simulate_raw

__all__ = [
    "RAY_MAX_RETRIES",
    "RAY_OBJECT_STORE_BYTES",
    "EngineError",
    "GroupFailedError",
    "Task",
    "require_engine",
    "run_groups",
    "run_task",
]

RAY_MAX_RETRIES = 3
RAY_OBJECT_STORE_BYTES = 100 * 2**20  # of a Ray instance started here: only records travel
LOCAL_RETRIES = 2  # a local task whose worker died is re-run this many times, then isolated
QUEUE_DEPTH = 2  # groups handed to a local worker at a time: it never waits for the driver
WORKER_START_TIMEOUT_S = 300.0  # a worker not started by then: the build stops (one line)
WORKERS_WORTH_S = 4.0  # local workers start only for more work than this (their start-up: 1–3 s)
TASKS_PER_RAY_CPU = 2


class EngineError(RuntimeError):
    """An engine that cannot run here (unknown name, Ray not installed)."""


class GroupFailedError(RuntimeError):
    """A task failed for a reason that is not its inputs' (the output cannot be written)."""


def require_engine(engine: str) -> None:
    """Raise :class:`EngineError` with a one-line reason unless ``engine`` can run here."""
    try:
        engine = Engine.parse(engine, "--engine")
    except ValueError as err:
        raise EngineError(str(err)) from None
    if engine is Engine.RAY:
        _import_ray()


def _import_ray() -> Any:
    try:
        import ray  # an optional extra (rawpairs[ray]), heavy: imported only for --engine ray
    except ImportError as err:
        raise EngineError(f"--engine ray needs Ray ({err}): pip install 'rawpairs[ray]'") from err
    return ray


@dataclass
class Task:
    """A unit of work: write shard ``index`` of ``sources`` (``kind="group"``) without the
    ``excluded`` ones, or try ``sources[0]`` alone without writing (``kind="probe"``)."""

    kind: str
    index: int
    sources: list[Source]
    excluded: dict[str, dict[str, str]] = field(default_factory=dict)
    isolated: bool = False  # its sources were probed one by one after its worker kept dying
    deaths: int = 0

    @property
    def title(self) -> str:
        """The task's name (a Ray worker's process title while it runs the task)."""
        if self.kind == "probe":
            return f"probe {self.sources[0].relpath}"
        rest = f" (excluding {len(self.excluded)})" if self.excluded else ""
        return f"write_group {shard_name(self.index)}{rest}"


def run_task(task: Task, config: BuildConfig, location: str) -> dict[str, Any] | None:
    """Run ``task`` here: the group's record, or ``None`` for a probe that survived."""
    if task.kind == "probe":
        try:
            for _ in sample_stream(task.sources[0], config):
                pass
        except Exception:  # an ordinary failure: the source did not kill its worker
            pass
        return None
    return write_group(OutputFolder(location), task.index, task.sources, config, task.excluded)


def single_threaded_worker() -> None:
    """Make a worker process single-threaded: parallelism comes from the processes.

    OpenCV's and OpenMP's own thread pools in every worker oversubscribe the cores; measured with
    2 workers on 2 cores, a build of 500×375 photos ran at 32 samples/s instead of >200.
    """
    os.environ["OMP_NUM_THREADS"] = "1"  # LibRaw's OpenMP reads it when it first runs
    cv2.setNumThreads(1)


def warm_up() -> None:
    """Load the sample makers' compiled (numba) kernels once, on a tiny image.

    numba's on-disk cache (``cache=True``) is next to the package when it is writable, else in
    the user's cache folder (``NUMBA_CACHE_DIR`` overrides): an installed package compiles once
    per machine, and a worker only loads the kernels.
    """
    rgb = np.full((8, 8, 3), 128, np.uint8)
    mosaic, camera = simulate_raw(rgb, np.random.default_rng(0))
    for demosaic in ("malvar", "bilinear"):
        isp.process(mosaic, camera, demosaic=demosaic)


# The scheduler: retries and isolation, the same for every engine ---------------------------


class _Schedule:
    """Which task runs next, and what a worker's death means for its task."""

    def __init__(self, groups: dict[int, list[Source]], retries: int) -> None:
        self.todo = collections.deque(Task("group", i, s) for i, s in groups.items())
        self.retries = retries
        self.isolating: dict[int, tuple[Task, int]] = {}  # group → (its task, probes pending)

    def died(self, task: Task, cause: str) -> None:
        task.deaths += 1
        if task.deaths <= self.retries:
            self.todo.appendleft(task)
        elif task.kind == "probe":
            group, pending = self.isolating[task.index]
            group.excluded[task.sources[0].relpath] = _crash_record(
                task.sources[0], cause, f"the worker process died on this file {task.deaths} "
                "times, also alone (a crash in a decoder, or the out-of-memory killer)"
            )  # fmt: skip
            self._probed(task.index, group, pending)
        elif not task.isolated:
            probes = [Task("probe", task.index, [s]) for s in task.sources]
            group = Task("group", task.index, task.sources, isolated=True)
            self.isolating[task.index] = (group, len(probes))
            self.todo.extendleft(reversed(probes))
        elif len(task.excluded) < len(task.sources):  # isolated, and still dying
            for source in task.sources:
                task.excluded.setdefault(
                    source.relpath,
                    _crash_record(source, cause, "its group's worker kept dying after isolation"),
                )
            self.todo.appendleft(Task("group", task.index, task.sources, task.excluded, True))
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


Record = tuple[int, dict[str, Any]]


def _holds_raw(sources: list[Source]) -> bool:
    """Whether a group holds camera RAW files (decoded by LibRaw: only ever in a worker)."""
    return any(source.kind == "raw" for source in sources)


def _drive(
    schedule: _Schedule,
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
        return not (isolate_raw and (task.kind == "probe" or _holds_raw(task.sources)))

    while schedule.todo or pool.busy():
        while schedule.todo and pool.has_room():
            pool.submit(schedule.todo.popleft())
        for task, outcome, payload in pool.events(block=not here()):
            if outcome == "done":
                if task.kind == "probe":
                    schedule.probe_survived(task)
                else:
                    yield task.index, payload
            elif outcome == "died":
                schedule.died(task, payload)
            elif outcome == "requeue":
                schedule.todo.appendleft(task)
            else:
                raise GroupFailedError(payload)
        if here():
            task = schedule.todo.popleft()
            started = time.process_time()
            record = run_task(task, config, location)
            stats["driver_work_cpu_s"] += time.process_time() - started
            stats["groups_here"] += 1
            if task.kind == "probe":
                schedule.probe_survived(task)
            else:
                assert record is not None
                yield task.index, record


# Local engine: long-lived spawned workers ---------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans after ``kill -9``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their pipe closes
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _worker_main(conn: Connection, config: BuildConfig, location: str) -> None:
    """A local worker: start, say ``ready``, then run tasks until the pipe closes."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    single_threaded_worker()
    warm_up()
    try:
        conn.send_bytes(_dumps(("ready", None)))
        while True:
            task = pickle.loads(conn.recv_bytes())
            try:
                reply = ("done", run_task(task, config, location))
            except Exception as err:  # the output failed (disk full, …): the driver stops
                reply = ("failed", f"{type(err).__name__}: {err}")
            conn.send_bytes(_dumps(reply))
    except (EOFError, OSError):  # the pipe closed: the build is over
        return


def _dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


@dataclass
class _Worker:
    process: Any
    conn: Connection
    started: float
    ready: bool = False
    tasks: collections.deque[Task] = field(default_factory=collections.deque)


class _LocalPool:
    """``n`` worker processes, each with its own pipe; a dead one is replaced.

    ``n - 1`` are started by a background thread (the first start waits for the fork server,
    seconds) while this process builds groups itself; the ``n``-th when the first is ready (and
    this process stops): never more than ``n`` processes compete for the cores.
    """

    def __init__(self, n: int, config: BuildConfig, location: str) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["rawpairs._forkserver"])
        self.config, self.location = config, location
        self.startup_s: list[float] = []  # seconds from the start request to ready, per worker
        self.failed_starts = 0  # workers that died before ready (their work is done here)
        self.ipc_bytes = 0  # pickled tasks and records through the pipes
        self.size = n
        self.workers: list[_Worker] = []
        self.starting = max(n - 1, 1)
        self._started: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._closed = threading.Event()
        threading.Thread(target=self._start_workers, args=(self.starting,), daemon=True).start()

    def _start_workers(self, count: int) -> None:
        for _ in range(count):
            if self._closed.is_set():
                return
            worker = self._spawn()
            self._started.put(worker)
            if self._closed.is_set():  # the build ended while this one started
                worker.process.kill()
                worker.process.join()

    def _spawn(self) -> _Worker:
        requested = time.monotonic()
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(
            target=_worker_main, args=(child, self.config, self.location), daemon=True
        )
        process.start()
        child.close()
        return _Worker(process, parent, requested)

    def _collect_started(self) -> None:
        while True:
            try:
                self.workers.append(self._started.get_nowait())
            except queue.Empty:
                return
            self.starting -= 1

    @property
    def warmed(self) -> bool:
        return bool(self.startup_s)

    @property
    def running(self) -> bool:
        """Whether any worker is started or starting."""
        return bool(self.workers) or self.starting > 0

    def busy(self) -> bool:
        return any(w.tasks for w in self.workers)

    def has_room(self) -> bool:
        return any(w.ready and len(w.tasks) < QUEUE_DEPTH for w in self.workers)

    def submit(self, task: Task) -> None:
        worker = min(
            (w for w in self.workers if w.ready and len(w.tasks) < QUEUE_DEPTH),
            key=lambda w: len(w.tasks),
        )
        worker.tasks.append(task)
        data = _dumps(task)
        self.ipc_bytes += len(data)
        with contextlib.suppress(OSError):  # died meanwhile: its sentinel reports it
            worker.conn.send_bytes(data)

    def events(self, block: bool) -> list[tuple[Task, str, Any]]:
        """What happened since the last call: finished, failed and lost tasks (waits for
        something to happen when ``block``)."""
        self._collect_started()
        if block and not self.workers:  # nothing to wait on yet: wait for the first start
            try:
                self.workers.append(self._started.get(timeout=WORKER_START_TIMEOUT_S))
            except queue.Empty:
                raise GroupFailedError(
                    f"no worker process started within {WORKER_START_TIMEOUT_S:.0f} s"
                ) from None
            self.starting -= 1
        waitables: list[Any] = [w.conn for w in self.workers]
        waitables += [w.process.sentinel for w in self.workers]
        ready = set(wait_ready(waitables, timeout=None if block else 0))
        out: list[tuple[Task, str, Any]] = []
        for i, worker in reversed(list(enumerate(self.workers))):
            dead = worker.process.sentinel in ready
            if worker.conn in ready:
                try:
                    while worker.conn.poll():
                        data = worker.conn.recv_bytes()
                        self.ipc_bytes += len(data)
                        kind, payload = pickle.loads(data)
                        if kind == "ready":
                            self._ready(worker)
                        else:
                            out.append((worker.tasks.popleft(), kind, payload))
                except (EOFError, OSError):
                    dead = True
            if dead:
                out += self._replace(i)
        return out

    def _ready(self, worker: _Worker) -> None:
        worker.ready = True
        self.startup_s.append(time.monotonic() - worker.started)
        if len(self.startup_s) == 1 and len(self.workers) + self.starting < self.size:
            self.workers.append(self._spawn())  # the fork server is up: milliseconds

    def _replace(self, i: int) -> list[tuple[Task, str, Any]]:
        """Replace dead worker ``i`` (one that died while starting is not replaced: this
        process does its work) and report its tasks."""
        worker = self.workers[i]
        worker.process.join()
        worker.conn.close()
        if not worker.ready:
            self.failed_starts += 1
            del self.workers[i]
            return []
        lost = [
            (t, "died" if j == 0 else "requeue", "WorkerCrashed")
            for j, t in enumerate(worker.tasks)
        ]
        self.workers[i] = self._spawn()
        return lost

    def close(self) -> None:
        """Stop every worker (one still starting is stopped as soon as it has started)."""
        self._closed.set()
        self._collect_started()
        for worker in self.workers:
            worker.conn.close()
            if worker.process.is_alive():
                worker.process.kill()
        for worker in self.workers:
            worker.process.join()


def _local(
    groups: dict[int, list[Source]], config: BuildConfig, location: str, workers: int,
    stats: dict[str, Any], isolate_raw: bool,
) -> Generator[Record, None, None]:  # fmt: skip
    """This process builds groups alone while what is left would take it less than
    :data:`WORKERS_WORTH_S` (measured on the groups it built, the first one, which pays for
    imports, excluded); then workers start for the rest. With ``isolate_raw``, the first group
    holding camera RAW files also starts them (at least one), whatever ``workers`` is."""
    stats.update(groups_here=0, driver_work_cpu_s=0.0, ipc_bytes=0)
    todo = collections.deque(groups.items())
    timed_from, timed = 0.0, 0
    while todo:
        if isolate_raw and _holds_raw(todo[0][1]):
            break
        if (
            workers > 1
            and timed
            and (time.monotonic() - timed_from) / timed * len(todo) > (WORKERS_WORTH_S)
        ):
            break
        index, sources = todo.popleft()
        started = time.process_time()
        record = run_task(Task("group", index, sources), config, location)
        assert record is not None
        stats["driver_work_cpu_s"] += time.process_time() - started
        stats["groups_here"] += 1
        if stats["groups_here"] == 1:
            timed_from = time.monotonic()
        else:
            timed += 1
        yield index, record
    if not todo:
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # this process builds groups beside the workers during their start-up
    pool = _LocalPool(workers, config, location)
    try:
        yield from _drive(
            _Schedule(dict(todo), LOCAL_RETRIES),
            pool,
            config,
            location,
            lambda: not pool.warmed or not pool.running,
            stats,
            isolate_raw,
        )
    finally:
        pool.close()
        cv2.setNumThreads(threads)
        stats["worker_startup_s"] = pool.startup_s
        stats["worker_failed_starts"] = pool.failed_starts
        stats["ipc_bytes"] = pool.ipc_bytes


# Ray engine ---------------------------------------------------------------------------------


class _RayPool:
    """Tasks in flight on Ray, at most :data:`TASKS_PER_RAY_CPU` per CPU of the cluster."""

    def __init__(self, ray: Any, config: BuildConfig, location: str, cpus: int) -> None:
        self.ray = ray
        self.remote = ray.remote(max_retries=RAY_MAX_RETRIES, retry_exceptions=False)(run_task)
        self.config_ref = ray.put(config)
        self.location = location
        self.limit = TASKS_PER_RAY_CPU * max(cpus, 1)
        self.pending: dict[Any, Task] = {}
        self.ipc_bytes = 0  # pickled tasks and records (through the object store)

    def busy(self) -> bool:
        return bool(self.pending)

    def has_room(self) -> bool:
        return len(self.pending) < self.limit

    def submit(self, task: Task) -> None:
        self.ipc_bytes += len(_dumps(task))
        ref = self.remote.options(name=task.title).remote(task, self.config_ref, self.location)
        self.pending[ref] = task

    def events(self, block: bool) -> list[tuple[Task, str, Any]]:
        from ray.exceptions import OutOfMemoryError, RayTaskError, WorkerCrashedError

        if not self.pending:
            return []
        done, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=None if block else 0)
        out: list[tuple[Task, str, Any]] = []
        for ref in done:
            task = self.pending.pop(ref)
            try:
                record = self.ray.get(ref)
                self.ipc_bytes += len(_dumps(record))
                out.append((task, "done", record))
            except (WorkerCrashedError, OutOfMemoryError) as err:
                out.append((task, "died", type(err).__name__))
            except RayTaskError as err:
                cause = err.cause if err.cause is not None else err
                out.append((task, "failed", f"{type(cause).__name__}: {cause}"))
        return out

    def cancel(self) -> None:
        for ref in self.pending:  # an early stop: free the cluster for other jobs
            self.ray.cancel(ref)


def _ray(
    groups: dict[int, list[Source]], config: BuildConfig, location: str, workers: int,
    address: str | None, stats: dict[str, Any],
) -> Generator[Record, None, None]:  # fmt: skip
    """Records from Ray tasks. Connects to ``address`` (``auto``, ``host:port`` or
    ``ray://host:10001``), or without one starts a private local instance of ``workers`` CPUs
    (never joining a cluster by accident). A connection this process already had is used and
    left open; one made here is shut down."""
    ray = _import_ray()
    owned = not ray.is_initialized()
    if owned:
        options: dict[str, Any] = {}
        if address in (None, "local"):
            options = {
                "num_cpus": workers,
                "object_store_memory": RAY_OBJECT_STORE_BYTES,
                "include_dashboard": False,
            }
        ray.init(
            address=address or "local",
            ignore_reinit_error=True,
            logging_level=logging.WARNING,
            **options,
        )
    pool = None
    try:
        pool = _RayPool(ray, config, location, int(ray.cluster_resources().get("CPU", workers)))
        yield from _drive(_Schedule(groups, 0), pool, config, location, lambda: False, stats)
    finally:
        if pool is not None:
            pool.cancel()
            stats["ipc_bytes"] = pool.ipc_bytes
        if owned:
            ray.shutdown()


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
        return _ray(groups, config, location, workers, address, stats if stats is not None else {})
    return _local(
        groups, config, location, workers, stats if stats is not None else {}, isolate_raw
    )
