"""Engines run the build's unit of work (:func:`rawpairs.sample.process_source`) over sources.

Every engine yields ``(position, result)`` strictly in source order, so the single shard writer
in :mod:`rawpairs.build` produces the same bytes whichever engine or worker count ran the work.

- ``local``: this process (``workers=1``) or a pool of *spawned* processes: rawpy (LibRaw with
  OpenMP) can deadlock in forked children.
"""

from __future__ import annotations

import collections
import multiprocessing
from collections.abc import Iterator
from typing import Any

from rawpairs.sample import BuildConfig, Source, process_source

__all__ = ["ENGINES", "ordered_results"]

ENGINES = ("local",)

Result = tuple[int, tuple[str, Any]]


def _local(sources: list[Source], config: BuildConfig, workers: int) -> Iterator[Result]:
    """In-order results from this process or a spawn pool; at most ``4 × workers`` in flight."""
    if workers <= 1:
        for i, source in enumerate(sources):
            yield i, process_source(source, config)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pending: collections.deque = collections.deque()
        todo = iter(enumerate(sources))
        for i, source in todo:
            pending.append((i, pool.apply_async(process_source, (source, config))))
            if len(pending) >= 4 * workers:
                break
        while pending:
            i, result = pending.popleft()
            yield i, result.get()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt[0], pool.apply_async(process_source, (nxt[1], config))))


def ordered_results(
    sources: list[Source],
    config: BuildConfig,
    *,
    workers: int,
    engine: str = "local",
    address: str | None = None,
) -> Iterator[Result]:
    """Yield ``(position, process_source(sources[position], config))`` in order."""
    if engine == "local":
        return _local(sources, config, workers)
    raise ValueError(f"unknown engine {engine!r}: expected one of {ENGINES}")
