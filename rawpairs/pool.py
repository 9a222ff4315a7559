"""The local engine: this process, and long-lived worker processes forked from a fork server.

See :mod:`rawpairs.engines` for when workers start and why camera RAW files are decoded only in
them. Each worker runs :func:`rawpairs.schedule.run_task` for the tasks it is sent through its
pipe and answers with a :class:`rawpairs.schedule.PoolEvent`; a dead worker is replaced.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import Any

import cv2
import numpy as np

from rawpairs import isp
from rawpairs.config import BuildConfig
from rawpairs.errors import GroupFailedError
from rawpairs.sample import Source
from rawpairs.schedule import (
    Event,
    PoolEvent,
    Record,
    Schedule,
    Task,
    TaskKind,
    drive,
    dumps,
    holds_raw,
    run_task,
)
from rawpairs.unprocess import simulate_raw

__all__ = [
    "LOCAL_RETRIES",
    "QUEUE_DEPTH",
    "WORKERS_WORTH_S",
    "WORKER_START_TIMEOUT_S",
    "run_local",
    "single_threaded_worker",
    "warm_up",
]

LOCAL_RETRIES = 2  # a local task whose worker died is re-run this many times, then isolated
QUEUE_DEPTH = 2  # groups handed to a local worker at a time: it never waits for the driver
WORKER_START_TIMEOUT_S = 300.0  # a worker not started by then: the build stops (one line)
WORKERS_WORTH_S = 4.0  # local workers start only for more work than this (their start-up: 1–3 s)


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
    """A local worker: start, say :attr:`PoolEvent.READY`, then run tasks until the pipe
    closes."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    single_threaded_worker()
    warm_up()
    try:
        conn.send_bytes(dumps((PoolEvent.READY, None)))
        while True:
            task = pickle.loads(conn.recv_bytes())
            reply: tuple[PoolEvent, Any]
            try:
                reply = (PoolEvent.DONE, run_task(task, config, location))
            except Exception as err:  # the output failed (disk full, …): the driver stops
                reply = (PoolEvent.FAILED, f"{type(err).__name__}: {err}")
            conn.send_bytes(dumps(reply))
    except (EOFError, OSError):  # the pipe closed: the build is over
        return


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
        data = dumps(task)
        self.ipc_bytes += len(data)
        with contextlib.suppress(OSError):  # died meanwhile: its sentinel reports it
            worker.conn.send_bytes(data)

    def events(self, block: bool) -> list[Event]:
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
        out: list[Event] = []
        for i, worker in reversed(list(enumerate(self.workers))):
            dead = worker.process.sentinel in ready
            if worker.conn in ready:
                try:
                    while worker.conn.poll():
                        data = worker.conn.recv_bytes()
                        self.ipc_bytes += len(data)
                        event, payload = pickle.loads(data)
                        if event is PoolEvent.READY:
                            self._ready(worker)
                        else:
                            out.append((worker.tasks.popleft(), event, payload))
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

    def _replace(self, i: int) -> list[Event]:
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
            (t, PoolEvent.DIED if j == 0 else PoolEvent.REQUEUE, "WorkerCrashed")
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


def run_local(
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
        if isolate_raw and holds_raw(todo[0][1]):
            break
        if (
            workers > 1
            and timed
            and (time.monotonic() - timed_from) / timed * len(todo) > (WORKERS_WORTH_S)
        ):
            break
        index, sources = todo.popleft()
        started = time.process_time()
        record = run_task(Task(TaskKind.GROUP, index, sources), config, location)
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
        yield from drive(
            Schedule(dict(todo), LOCAL_RETRIES),
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
