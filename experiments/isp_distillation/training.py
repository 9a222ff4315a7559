"""Training one student with :mod:`distill.train`, scoring it at checkpoints."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .config import ExperimentConfig, Method

if TYPE_CHECKING:
    from distill.heldout import HeldOut


def _train_config(config: ExperimentConfig, method: Method, seed: int, shards: Path, out: Path):
    """The method's ``TrainConfig``: the experiment's settings, then the method's overrides."""
    from distill.train import TrainConfig

    settings: dict[str, Any] = dict(
        shards=str(shards),
        out=str(out),
        task=config.task,
        teacher=config.teacher,
        steps=config.steps,
        batch_size=config.batch_size,
        crop=config.crop,
        temperature=config.temperature,
        lr=config.lr,
        frontend_lr=config.frontend_lr,
        freeze_backbone_steps=config.freeze_backbone_steps,
        warmup_steps=max(1, config.steps // 10),
        seed=seed,
        device=config.device,
        num_workers=0 if config.device == "cpu" else config.workers,
        low_light=config.low_light if method.low_light else None,
        log_every=max(1, config.steps // 20),
        checkpoint_every=0,
        resume="auto",
        progress=False,
    )
    return TrainConfig(**(settings | method.overrides))


def train_and_score(
    config: ExperimentConfig,
    method: Method,
    seed: int,
    shards: Path,
    run_dir: Path,
    helds: dict[str, HeldOut],
) -> tuple[list[dict[str, Any]], dict[str, list[torch.Tensor]], torch.nn.Module]:
    """Train one student, scoring it at ``config.checkpoints``; returns (rows, the final logits
    per condition, the final student).

    Training runs in segments (``stop_after``) that resume exactly from the last checkpoint, so
    the scored students are those of one uninterrupted run. At intermediate steps the student is
    scored on its own condition; at the last step on every condition in ``helds``. Scores come
    from :mod:`distill.heldout` (:func:`~distill.heldout.student_logits`,
    :func:`~distill.heldout.score`).
    """
    from distill.checkpoint import load_checkpoint
    from distill.heldout import score, student_logits
    from distill.models import load_teacher
    from distill.step import build_student_for
    from distill.train import train

    if run_dir.exists():
        shutil.rmtree(run_dir)
    train_config = _train_config(config, method, seed, shards, run_dir)
    own = "low_light" if method.low_light else "clean"
    rows = []
    final: dict[str, list[torch.Tensor]] = {}

    def record(step: int, condition: str, student: torch.nn.Module) -> None:
        logits = student_logits(student, helds[condition])  # type: ignore[arg-type]
        row = {"method": method.name, "seed": seed, "step": step, "condition": condition}
        rows.append({**row, **score(logits, helds[condition])})
        if step == config.steps:
            final[condition] = logits

    torch.manual_seed(seed)  # the scratch student's initialisation at step 0, as train draws it
    teacher = load_teacher(train_config.teacher)
    student = build_student_for(train_config, teacher)
    record(0, own, student.to(config.device))
    for step in config.checkpoints[1:]:
        train(dataclasses.replace(train_config, stop_after=step))
        student, _, _ = load_checkpoint(run_dir / "last.pt", config.device)
        conditions = helds if step == config.steps else [own]
        for condition in conditions:
            record(step, condition, student)
    return rows, final, student
