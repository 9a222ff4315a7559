"""The Ray engine: tasks on a Ray cluster, or on a Ray instance started for the build.

Ray (an optional extra, ``rawpairs[ray]``) is imported only when this engine runs. Ray worker
processes are started by the raylet, never forked from the build, so they inherit no
rawpy/OpenMP state; Ray re-runs a task whose worker died up to :data:`RAY_MAX_RETRIES` times.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from rawpairs.config import BuildConfig
from rawpairs.errors import EngineError
from rawpairs.sample import Source
from rawpairs.schedule import Event, PoolEvent, Record, Schedule, Task, drive, dumps, run_task

__all__ = [
    "RAY_MAX_RETRIES",
    "RAY_OBJECT_STORE_BYTES",
    "TASKS_PER_RAY_CPU",
    "import_ray",
    "run_ray",
]

RAY_MAX_RETRIES = 3
RAY_OBJECT_STORE_BYTES = 100 * 2**20  # of a Ray instance started here: only records travel
TASKS_PER_RAY_CPU = 2  # tasks in flight per CPU of the cluster


def import_ray() -> Any:
    try:
        import ray  # an optional extra (rawpairs[ray]), heavy: imported only for --engine ray
    except ImportError as err:
        raise EngineError(f"--engine ray needs Ray ({err}): pip install 'rawpairs[ray]'") from err
    return ray


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
        self.ipc_bytes += len(dumps(task))
        ref = self.remote.options(name=task.title).remote(task, self.config_ref, self.location)
        self.pending[ref] = task

    def events(self, block: bool) -> list[Event]:
        from ray.exceptions import OutOfMemoryError, RayTaskError, WorkerCrashedError

        if not self.pending:
            return []
        done, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=None if block else 0)
        out: list[Event] = []
        for ref in done:
            task = self.pending.pop(ref)
            try:
                record = self.ray.get(ref)
                self.ipc_bytes += len(dumps(record))
                out.append((task, PoolEvent.DONE, record))
            except (WorkerCrashedError, OutOfMemoryError) as err:
                out.append((task, PoolEvent.DIED, type(err).__name__))
            except RayTaskError as err:
                cause = err.cause if err.cause is not None else err
                out.append((task, PoolEvent.FAILED, f"{type(cause).__name__}: {cause}"))
        return out

    def cancel(self) -> None:
        for ref in self.pending:  # an early stop: free the cluster for other jobs
            self.ray.cancel(ref)


def run_ray(
    groups: dict[int, list[Source]], config: BuildConfig, location: str, workers: int,
    address: str | None, stats: dict[str, Any],
) -> Generator[Record, None, None]:  # fmt: skip
    """Records from Ray tasks. Connects to ``address`` (``auto``, ``host:port`` or
    ``ray://host:10001``), or without one starts a private local instance of ``workers`` CPUs
    (never joining a cluster by accident). A connection this process already had is used and
    left open; one made here is shut down."""
    ray = import_ray()
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
        yield from drive(Schedule(groups, 0), pool, config, location, lambda: False, stats)
    finally:
        if pool is not None:
            pool.cancel()
            stats["ipc_bytes"] = pool.ipc_bytes
        if owned:
            ray.shutdown()
