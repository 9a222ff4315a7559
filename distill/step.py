"""What one training step runs: the teacher, the student and the criterion that ``config``
describes (:func:`build_models`), joined by :class:`DistillStep` (student forward + loss)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from distill.config import TrainConfig
from distill.losses import CombinedLoss, Outputs
from distill.models import (
    FeatureTap,
    RawStudent,
    Teacher,
    build_student,
    load_teacher,
    task_of,
)

__all__ = ["DistillStep", "build_models", "build_student_for", "check_task"]


class DistillStep(nn.Module):
    """Student forward plus loss in one module, so DDP sees the adapters' parameters too.

    ``forward(raw, wb, teacher, labels)`` → (total loss, unweighted terms, student logits);
    ``wb``: the samples' recorded white-balance gains B×3 (used by a ``metadata`` front-end).
    """

    def __init__(
        self, student: RawStudent, criterion: CombinedLoss, student_layers: Sequence[str]
    ) -> None:
        super().__init__()
        self.student = student
        self.criterion = criterion
        self.tap = FeatureTap(student.net, student_layers) if student_layers else None

    def forward(
        self, raw: torch.Tensor, wb: torch.Tensor, teacher: Outputs | None, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        if self.tap is not None:
            self.tap.clear()
        logits = self.student(raw, wb)
        student = Outputs(logits, self.tap.features() if self.tap is not None else [])
        total, parts = self.criterion(student, teacher, labels)
        return total, parts, logits


def build_student_for(config: TrainConfig, teacher: Teacher) -> RawStudent:
    """The student ``config`` describes (architecture, initialisation, front-end), on the CPU."""
    return build_student(
        teacher,
        config.student,
        init=config.student_init,
        weights=config.student_weights,
        wb=config.raw_wb,
        learn_colour=config.learn_colour,
        learn_tone=config.learn_tone,
    )


def build_models(
    config: TrainConfig, device: torch.device
) -> tuple[Teacher, RawStudent, CombinedLoss, FeatureTap | None]:
    """Teacher, student, criterion (with feature adapters sized by a probe pass) and teacher tap.

    Raises ``ValueError`` when teacher and student predict different things (class count,
    classification vs dense) or the teacher's task is not ``config.task``.
    """
    teacher = load_teacher(
        config.teacher, weights=config.teacher_weights, normalization=config.teacher_norm
    ).to(device)
    student = build_student_for(config, teacher).to(device)
    pairs = config.layer_pairs
    teacher_size = config.teacher_size or config.crop
    rgb = torch.zeros(1, 3, teacher_size, teacher_size, device=device)
    raw = torch.zeros(1, 4, config.crop // 2, config.crop // 2, device=device)
    t_tap = FeatureTap(teacher.net, [t for t, _ in pairs]) if pairs else None
    student.eval()  # the probe must not touch BatchNorm statistics
    with torch.no_grad(), FeatureTap(student.net, [s for _, s in pairs]) as s_tap:
        t_logits, s_logits = teacher(rgb), student(raw, torch.ones(1, 3, device=device))
        t_channels = [f.shape[1] for f in t_tap.features()] if t_tap else []
        s_channels = [f.shape[1] for f in s_tap.features()] if pairs else []
    student.train()
    check_task(config, t_logits, s_logits)
    options: dict[str, dict[str, Any]] = {"kd": {"temperature": config.temperature}}
    if pairs:
        options["feature"] = {"student_channels": s_channels, "teacher_channels": t_channels}
    criterion = CombinedLoss(config.loss_weights, options).to(device)
    return teacher, student, criterion, t_tap


def check_task(config: TrainConfig, teacher: torch.Tensor, student: torch.Tensor) -> str:
    """The task of probe logits (``task_of``); ``ValueError`` if student and teacher disagree
    (classification vs dense, class count) or it is not ``config.task``. Dense maps may differ in
    size (the teacher's is resized to the student's)."""
    task = task_of(teacher)
    if config.task is not None and task != config.task:
        shape = "B×K" if task == "classify" else "B×K×h×w"
        raise ValueError(
            f"teacher {config.teacher!r} returns {shape} logits ({task}), not what --task "
            f"{config.task} needs; pass a {'dense' if config.task == 'segment' else 'classifier'} "
            "teacher or drop --task"
        )
    if teacher.ndim != student.ndim or teacher.shape[1] != student.shape[1]:
        raise ValueError(
            f"teacher {config.teacher!r} outputs {tuple(teacher.shape[1:])} per sample but "
            f"student {config.student!r} outputs {tuple(student.shape[1:])}: they must predict "
            "the same classes the same way (both B×K, or both B×K×h×w)"
        )
    return task
