"""Where a training process runs: its rank, world size and device (torchrun's environment),
and the global torch generators a checkpoint saves."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Process", "resolve_device", "rng_state", "set_rng_state", "setup_process"]


@dataclass(frozen=True)
class Process:
    """This process's place in the run: rank, world size, device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """The device ``--device`` names: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``
    (GPU ``local_rank``), ``cuda:N`` (GPU ``N + local_rank``: under torchrun a node's processes
    take GPUs N, N+1, …, one each), or another device type torch knows. ``ValueError`` (one
    line) for a name torch does not know, CUDA that is not available or a GPU past the last."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"--device {requested!r}: not a device name (auto, cpu, cuda, cuda:N)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: CUDA is not available here; use --device cpu")
        device = torch.device("cuda", (device.index or 0) + local_rank)
        if device.index >= torch.cuda.device_count():
            rank = f" + local rank {local_rank}" if local_rank else ""
            raise ValueError(
                f"--device {requested}{rank}: this machine has {torch.cuda.device_count()} CUDA "
                "devices"
            )
    return device


def setup_process(requested: str) -> Process:
    """Rank and world size from torchrun's environment, the device, the process group."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(requested, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Process(rank, world_size, device)


def rng_state() -> dict[str, Any]:
    """Torch's global generators: the only randomness in a step (dropout, drop-connect).

    Data randomness comes from ``distill.data``'s own seeded generators.
    """
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CPU tensors)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block and deliver it when the block ends.

    A checkpoint write cut by ``KeyboardInterrupt`` inside ``torch.save`` surfaces as torch's
    ``RuntimeError`` ("unexpected pos …"), not as an interrupt; deferred, the write completes
    and the interrupt then arrives as usual (the previous handler runs: ``KeyboardInterrupt``).
    Outside the main thread (where handlers cannot be set) the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)
