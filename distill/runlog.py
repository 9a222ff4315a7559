"""What a run writes in its ``--out`` besides checkpoints: the step logs (``log.jsonl``,
``log.csv``, TensorBoard when installed), their cut back to a resumed step, and the claim on the
folder (a new run never mixes its logs with another's; ``--overwrite`` deletes only these files).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.checkpoint import BEST_NAME, CHECKPOINT_NAME, find_resume
from distill.config import TrainConfig
from rawpairs.storage import write_text_atomic

__all__ = [
    "RUN_FILES",
    "VAL_LOG",
    "RunLog",
    "append_val_record",
    "claim_out",
    "remove_run_files",
    "run_files",
    "sync_file",
    "truncate_logs",
]

# What a run writes in its --out (besides keys-rank*.txt and TensorBoard events): all that
# --overwrite deletes.
VAL_LOG = "val.jsonl"
RUN_FILES = (CHECKPOINT_NAME, BEST_NAME, "log.jsonl", "log.csv", VAL_LOG, "summary.json")


def _keep_lines(path: Path, keep: Callable[[str], bool], header: int = 0) -> None:
    """Rewrite text file ``path`` (atomically) with its first ``header`` lines and the following
    complete lines for which ``keep`` is true, up to the first line ``keep`` cannot read (a line
    cut by a kill ends the file)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = lines[:header]
    for line in lines[header:]:
        try:
            if not line.endswith("\n"):
                break
            if keep(line):
                kept.append(line)
        except ValueError:
            break
    if kept == lines:
        return
    write_text_atomic(path, "".join(kept))


def truncate_logs(out: Path, step: int) -> None:
    """Drop log records after ``step`` (and keys of later steps): a resume from the checkpoint
    of ``step`` writes them again, so the logs never repeat a step."""
    _keep_lines(out / "log.jsonl", lambda line: int(json.loads(line)["step"]) <= step)
    _keep_lines(out / "log.csv", lambda line: int(line.split(",", 1)[0]) <= step, header=1)
    _keep_lines(out / VAL_LOG, lambda line: int(json.loads(line)["step"]) <= step)
    for keys in out.glob("keys-rank*.txt"):  # one line per sample: <0-based step>\t<key>
        _keep_lines(keys, lambda line: int(line.split("\t", 1)[0]) < step)


def run_files(out: Path) -> list[Path]:
    """The files a run wrote in ``out``: :data:`RUN_FILES`, ``keys-rank*.txt`` and TensorBoard's
    ``tensorboard/events.out.tfevents.*`` (what ``--overwrite`` deletes)."""
    files = [out / name for name in RUN_FILES if (out / name).is_file()]
    files += sorted(p for p in out.glob("keys-rank*.txt") if p.is_file())
    files += sorted(p for p in (out / "tensorboard").glob("events.out.tfevents.*") if p.is_file())
    return files


def remove_run_files(out: Path) -> None:
    """Delete :func:`run_files` (and the ``tensorboard`` folder if that leaves it empty)."""
    for path in run_files(out):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (out / "tensorboard").rmdir()


def claim_out(config: TrainConfig, main: bool) -> None:
    """Make ``--out`` ready for a run that does not resume, without ever mixing two runs' logs.

    An ``--out`` holding a checkpoint or log records (:func:`run_files`, TensorBoard aside) is
    refused with one line (``ValueError``) naming ``--resume auto`` and ``--overwrite``; with
    ``--overwrite`` the main process deletes the run's files (never other files). With
    ``--resume auto`` and no ``last.pt`` (a run killed before its first checkpoint) the run's
    files are deleted too: there is nothing to continue.
    """
    out = Path(config.out)
    if config.resume is not None and (config.resume != "auto" or find_resume(config)):
        return
    records = [p for p in run_files(out) if p.parent == out and p.stat().st_size > 0]
    if records and config.resume is None and not config.overwrite:
        raise ValueError(
            f"--out {out} holds a run ({', '.join(p.name for p in records)}): continue it with "
            "--resume auto, or start a new run there with --overwrite (deletes only what a run "
            "writes)"
        )
    if main:
        remove_run_files(out)


class RunLog:
    """Appends records to ``log.jsonl`` and ``log.csv`` (and TensorBoard when installed).

    ``resumed_step``: the step a resume continues from; TensorBoard events after it are purged
    (the text logs are cut by :func:`truncate_logs`).
    """

    def __init__(self, out: Path, resumed_step: int | None = None) -> None:
        self.jsonl = (out / "log.jsonl").open("a", encoding="utf-8")
        csv_path = out / "log.csv"
        fieldnames = None
        if csv_path.exists() and csv_path.stat().st_size:
            with csv_path.open(encoding="utf-8") as f:
                fieldnames = next(csv.reader(f), None)
        self.csv_file = csv_path.open("a", encoding="utf-8", newline="")
        self.csv: csv.DictWriter | None = None
        self.fieldnames = fieldnames
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resumed_step is None else resumed_step + 1
            self.tensorboard: Any = SummaryWriter(str(out / "tensorboard"), purge_step=purge)
        except ImportError:
            self.tensorboard = None

    def write(self, record: dict[str, Any]) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.csv is None:
            self.csv = csv.DictWriter(
                self.csv_file, fieldnames=self.fieldnames or list(record), extrasaction="ignore"
            )
            if self.fieldnames is None:
                self.csv.writeheader()
        self.csv.writerow(record)
        self.csv_file.flush()
        if self.tensorboard is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, int | float):
                    self.tensorboard.add_scalar(name, value, record["step"])

    def sync(self) -> None:
        """Flush and fsync both text logs (before a checkpoint is written)."""
        for f in (self.jsonl, self.csv_file):
            sync_file(f)

    def close(self) -> None:
        self.jsonl.close()
        self.csv_file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def sync_file(f: Any) -> None:
    """Flush ``f`` and fsync its file (before a checkpoint is written)."""
    f.flush()
    os.fsync(f.fileno())


def append_val_record(out: Path, record: dict[str, Any]) -> None:
    """Append one validation record to ``<out>/val.jsonl``."""
    with (out / VAL_LOG).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
