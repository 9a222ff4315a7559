"""What the environment must allow a command: an output folder that can be one, an even crop,
and the memory its loader needs (checked before any work, one line when it falls short)."""

from __future__ import annotations

import os
from pathlib import Path

try:
    import resource  # POSIX only: the address-space limit (ulimit -v)
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

__all__ = [
    "available_memory",
    "check_crop",
    "check_memory",
    "check_output_folder",
    "loader_bytes",
]


def check_output_folder(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """``ValueError`` (one line) when ``path`` cannot be a folder: it, or a folder above it, is
    an existing file. Nothing is created."""
    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists() and not candidate.is_dir():
            where = "" if candidate == Path(path) else f" ({candidate} is a file)"
            raise ValueError(f"{flag} {path}: not a folder{where}")


def check_crop(crop: int, flag: str = "--crop", minimum: int = 2) -> None:
    """``ValueError`` (one line) unless ``crop`` is an even number of pixels >= ``minimum``."""
    if crop < minimum or crop % 2:
        raise ValueError(f"{flag} must be an even number of pixels >= {minimum}, got {crop}")


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # absent, or "max"


def available_memory() -> int | None:
    """Bytes this process can still allocate, as far as Linux says: the least of the machine's
    ``MemAvailable``, the room left under its cgroup's ``memory.max`` (containers) and its
    address-space limit (``ulimit -v``); None when none is known."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    cgroup_max = _read_int("/sys/fs/cgroup/memory.max")
    cgroup_used = _read_int("/sys/fs/cgroup/memory.current")
    if cgroup_max is not None and cgroup_used is not None:
        limits.append(max(0, cgroup_max - cgroup_used))
    if resource is not None:
        try:
            soft = resource.getrlimit(resource.RLIMIT_AS)[0]
            if soft != resource.RLIM_INFINITY:
                limits.append(soft)
        except (OSError, ValueError):
            pass
    return min(limits) if limits else None


def loader_bytes(
    batch_size: int, crop: int, teacher_size: int, *, workers: int = 0, isp_reference: bool = False
) -> int:
    """Bytes of the float32 batches a loader holds at once: the student's RAW (crop² per
    sample) and the teacher's RGB (and the ISP reference) (3·teacher_size² each), for the batch
    in use plus the two each worker prefetches (``DataLoader``'s ``prefetch_factor``)."""
    per_sample = crop * crop + 3 * teacher_size * teacher_size * (2 if isp_reference else 1)
    return 4 * batch_size * per_sample * (1 + 2 * workers)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_memory(
    batches: int,
    shuffle: int,
    *,
    what: str,
    available: int | None = None,
    processes: int = 1,
) -> None:
    """``ValueError`` (one line) when ``processes`` × (``batches`` + ``shuffle``) bytes exceed
    the ``available`` memory (default: :func:`available_memory`; no check when unknown)."""
    available = available_memory() if available is None else available
    if available is None:
        return
    if processes * batches > available:
        raise ValueError(
            f"{what} needs {_gib(processes * batches)} for the batches in flight, more than the "
            f"{_gib(available)} available: lower --batch-size or the image sizes"
        )
    if processes * (batches + shuffle) > available:
        raise ValueError(
            f"--shuffle-memory {shuffle // 2**20} MiB and the batches need "
            f"{_gib(processes * (batches + shuffle))}, more than the {_gib(available)} "
            "available: lower --shuffle-memory"
        )
