"""Engines run the build's unit of work (:func:`rawpairs.sample.process_source`) over sources.

Every engine yields ``(position, result)`` strictly in source order, so the single shard writer
in :mod:`rawpairs.build` produces the same bytes whichever engine or worker count ran the work.
Both keep a bounded window of sources in flight (:func:`_in_order`): memory stays flat however
many sources there are, and a slow source holds back the writer by at most one window.

- ``local``: this process (``workers=1``) or a pool of *spawned* processes: rawpy (LibRaw with
  OpenMP) can deadlock in forked children. A worker that dies is replaced and its source re-run
  (then alone); a source that kills its worker even alone becomes an error record.
- ``ray``: Ray tasks on a cluster (``address``) or on a Ray instance started here for the build.
  Ray worker processes are started by the raylet (a separate executable), never forked from this
  process, so they inherit no rawpy/OpenMP state. A task whose worker dies (SIGKILL, OOM killer,
  a crash, a lost node) is re-run by Ray up to :data:`RAY_MAX_RETRIES` times; a source that kills
  its worker on every attempt becomes an error record, like a corrupt file.
"""

from __future__ import annotations

import collections
import itertools
import logging
import multiprocessing
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from rawpairs.sample import BuildConfig, Source, process_source

__all__ = [
    "ENGINES",
    "RAY_MAX_RETRIES",
    "RAY_OBJECT_STORE_BYTES",
    "EngineError",
    "ordered_results",
    "require_engine",
]

ENGINES = ("local", "ray")
RAY_MAX_RETRIES = 3
RAY_OBJECT_STORE_BYTES = 200 * 2**20  # of a Ray instance started here: results are ~1 MB each
WINDOW_PER_WORKER = 4
LOCAL_ISOLATED_ATTEMPTS = 2

Result = tuple[int, tuple[str, Any]]
Handle = TypeVar("Handle")


class EngineError(RuntimeError):
    """An engine that cannot run here (unknown name, Ray not installed)."""


def require_engine(engine: str) -> None:
    """Raise :class:`EngineError` with a one-line reason unless ``engine`` can run here."""
    if engine not in ENGINES:
        raise EngineError(f"--engine must be one of {ENGINES}, got {engine!r}")
    if engine == "ray":
        _import_ray()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise EngineError(f"--engine ray needs Ray ({err}): pip install 'rawpairs[ray]'") from err
    return ray


def _in_order(
    sources: list[Source],
    submit: Callable[[int, Source], Handle],
    wait: Callable[[int, Handle], tuple[str, Any]],
    window: int,
) -> Iterator[Result]:
    """Submit up to ``window`` sources ahead; yield their results in source order.

    The next source is submitted before a result is yielded, so workers stay busy while the
    caller writes it.
    """
    todo = iter(enumerate(sources))
    pending = collections.deque((i, submit(i, s)) for i, s in itertools.islice(todo, window))
    while pending:
        i, handle = pending.popleft()
        result = wait(i, handle)
        for j, source in itertools.islice(todo, 1):
            pending.append((j, submit(j, source)))
        yield i, result


def single_threaded_worker() -> None:
    """Make a worker process single-threaded: parallelism comes from the processes.

    OpenCV's and OpenMP's own thread pools in every worker oversubscribe the cores; measured with
    2 workers on 2 cores, a build of 500×375 photos ran at 32 samples/s instead of >200.
    """
    import cv2

    os.environ["OMP_NUM_THREADS"] = "1"  # LibRaw's OpenMP reads it when it first runs
    cv2.setNumThreads(1)


def _process_to_file(source: Source, config: BuildConfig, folder: str) -> str:
    """Run :func:`process_source` and pickle its result into ``folder``; return the file's path.

    The result (~1 MB of encoded members) travels through a file, not the pool's result pipe:
    a worker killed half-way through writing a large message to that pipe leaves the pool's
    reader blocked forever (CPython's ProcessPoolExecutor), while the path is a message short
    enough to be written to a pipe atomically.
    """
    result = process_source(source, config)
    fd, path = tempfile.mkstemp(dir=folder, suffix=".pickle")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _load_result(path: str) -> Any:
    with open(path, "rb") as f:
        result = pickle.load(f)
    os.unlink(path)
    return result


class _RespawningPool:
    """A spawn process pool that survives dead workers (segfault in a decoder, OOM killer).

    A source whose future fails because the pool broke is re-run once in the (rebuilt) pool,
    then up to :data:`LOCAL_ISOLATED_ATTEMPTS` times alone in a one-process pool; a source that
    kills its worker even alone becomes an error record, like a corrupt file.
    """

    def __init__(self, workers: int, config: BuildConfig) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.workers, self.config = workers, config
        self.results = tempfile.mkdtemp(prefix="rawpairs-results-")
        self.executor = self._start(workers)

    def _start(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=self.ctx, initializer=single_threaded_worker)

    def _restart_if(self, executor: ProcessPoolExecutor) -> None:
        if executor is self.executor:
            executor.shutdown(wait=False, cancel_futures=True)
            self.executor = self._start(self.workers)

    def submit(self, source: Source) -> tuple[ProcessPoolExecutor, Future]:
        try:
            return self.executor, self._submit(self.executor, source)
        except BrokenProcessPool:
            self._restart_if(self.executor)
            return self.executor, self._submit(self.executor, source)

    def _submit(self, executor: ProcessPoolExecutor, source: Source) -> Future:
        return executor.submit(_process_to_file, source, self.config, self.results)

    def result(self, source: Source, handle: tuple[ProcessPoolExecutor, Future]) -> Any:
        executor, future = handle
        try:
            return _load_result(future.result())
        except (BrokenProcessPool, CancelledError):
            self._restart_if(executor)
        executor, future = self.submit(source)
        try:
            return _load_result(future.result())
        except (BrokenProcessPool, CancelledError):
            self._restart_if(executor)
        for _ in range(LOCAL_ISOLATED_ATTEMPTS):
            with self._start(1) as alone:
                try:
                    return _load_result(self._submit(alone, source).result())
                except BrokenProcessPool:
                    continue
        return "error", {
            "path": source.relpath,
            "error": "WorkerCrashed",
            "message": f"the worker process died on this file {LOCAL_ISOLATED_ATTEMPTS} times, "
            "also alone (a crash in a decoder, or the out-of-memory killer)",
        }

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.results, ignore_errors=True)


def _local(sources: list[Source], config: BuildConfig, workers: int) -> Iterator[Result]:
    """In-order results from this process or a spawn pool of ``workers`` processes."""
    if workers <= 1:
        for i, source in enumerate(sources):
            yield i, process_source(source, config)
        return
    pool = _RespawningPool(workers, config)
    try:
        yield from _in_order(
            sources,
            lambda _, source: pool.submit(source),
            lambda i, handle: pool.result(sources[i], handle),
            WINDOW_PER_WORKER * workers,
        )
    finally:
        pool.shutdown()


def _ray(
    sources: list[Source], config: BuildConfig, workers: int, address: str | None
) -> Iterator[Result]:
    """In-order results from Ray tasks, ``4 ×`` the cluster's CPUs in flight.

    Connects to ``address`` (``auto``, ``host:port`` or ``ray://host:10001``), or without one
    starts a private local instance of ``workers`` CPUs (never joining a cluster by accident).
    A connection this process already had is used and left open; one made here is shut down.
    """
    ray = _import_ray()
    from ray.exceptions import OutOfMemoryError, WorkerCrashedError

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
    pending_refs: dict[int, Any] = {}
    try:
        task = ray.remote(max_retries=RAY_MAX_RETRIES, retry_exceptions=False)(process_source)
        config_ref = ray.put(config)
        cpus = int(ray.cluster_resources().get("CPU", workers))

        def submit(i: int, source: Source) -> Any:
            ref = task.options(name=f"process_source {source.relpath}").remote(source, config_ref)
            pending_refs[i] = ref
            return ref

        def wait(i: int, ref: Any) -> tuple[str, Any]:
            del pending_refs[i]
            try:
                return ray.get(ref)
            except (WorkerCrashedError, OutOfMemoryError) as err:
                source = sources[i]
                return "error", {
                    "path": source.relpath,
                    "error": type(err).__name__,
                    "message": f"its Ray worker died {RAY_MAX_RETRIES + 1} times "
                    "(crash, kill or out of memory)",
                }

        yield from _in_order(sources, submit, wait, WINDOW_PER_WORKER * max(cpus, 1))
    finally:
        for ref in pending_refs.values():  # an early stop: free the cluster for other jobs
            ray.cancel(ref)
        if owned:
            ray.shutdown()


def ordered_results(
    sources: list[Source],
    config: BuildConfig,
    *,
    workers: int,
    engine: str = "local",
    address: str | None = None,
) -> Iterator[Result]:
    """Yield ``(position, process_source(sources[position], config))`` in order.

    ``workers``: processes of the local pool, or CPUs of a Ray instance started here.
    ``address``: the Ray cluster to use (``engine="ray"`` only). Raises :class:`EngineError`
    (at once, not on first iteration) for an unknown engine or a missing Ray.
    """
    require_engine(engine)
    if engine == "ray":
        return _ray(sources, config, workers, address)
    return _local(sources, config, workers)
