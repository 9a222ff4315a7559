"""The held-out pairs a student is scored on, in memory: one pass over the shards (centre
crops, no flips) with the teacher's logits on the aligned sRGB (the reference) and on every
baseline render of the same RAW (:data:`BASELINES`); point scores of any model's logits on them
(:func:`score`); and the shards' labels matched to the teacher's classes (:func:`label_report`).
``distill evaluate`` adds intervals and the report; the trainer validates on them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from distill.data import make_loader
from distill.frontend import naive_render
from distill.labels import find_class_map, relabel
from distill.metrics import SampleValues, classify_values, segment_values
from distill.models import RawStudent, Teacher, imagenet_class_names, imagenet_synsets, task_of

__all__ = [
    "BASELINES",
    "HeldOut",
    "accuracy",
    "label_report",
    "load_heldout",
    "score",
    "source_of",
    "student_logits",
]

# Baseline name → how its teacher input is made from a batch (RAW, recorded gains, ISP render).
BASELINES: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]] = {
    "naive_teacher": lambda b: naive_render(b["raw"]),
    "grayworld_teacher": lambda b: naive_render(b["raw"], "grayworld"),
    "isp_teacher": lambda b: b["isp"],
}


def source_of(key: str) -> str:
    """The source image of a sample key (``rawpairs.sample.sample_key``: ``<stem>_<hash>_cN``)."""
    stem, sep, index = key.rpartition("_c")
    return stem if sep and index.isdigit() else key


@dataclass
class HeldOut:
    """Held-out batches in memory with the reference predictions computed once.

    ``raw``: normalised RGGB RAW per batch (on the device); ``wb``: recorded white-balance gains
    B×3; ``labels`` (−1: none); ``teacher``: the teacher's logits on the RGB; ``baselines``: name →
    the teacher's logits on that baseline's render, per batch; ``keys``: sample keys; ``rgb``: the
    sRGB teacher input as uint8 on the CPU when loaded with ``keep_rgb`` (for figures);
    ``task``: the teacher's (``classify`` or ``segment``); ``crop``: the RAW crop side, pixels
    (dense metrics are computed at this resolution); ``classes``: the teacher's class names.
    """

    raw: list[torch.Tensor] = field(default_factory=list)
    wb: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    teacher: list[torch.Tensor] = field(default_factory=list)
    baselines: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    rgb: list[torch.Tensor] = field(default_factory=list)
    task: str = "classify"
    crop: int = 0
    classes: Sequence[str] | None = None

    @property
    def samples(self) -> int:
        return len(self.keys)

    @property
    def sources(self) -> list[str]:
        return [source_of(key) for key in self.keys]

    @property
    def person(self) -> int | None:
        """The index of the teacher's ``person`` class, if it has one."""
        classes = list(self.classes or ())
        return classes.index("person") if "person" in classes else None

    def values(self, logits: Sequence[torch.Tensor]) -> SampleValues:
        """Per-sample metrics (:mod:`distill.metrics`) of per-batch ``logits`` against the
        teacher's on the RGB."""
        parts = [
            classify_values(lg, ref)
            if self.task == "classify"
            else segment_values(lg, ref, self.crop, self.person)
            for lg, ref in zip(logits, self.teacher, strict=True)
        ]
        return SampleValues.concat(parts)


def load_heldout(
    shards: str | Path | Sequence[str],
    teacher: Teacher,
    *,
    crop: int,
    teacher_size: int | None = None,
    batch_size: int = 32,
    student_input: str = "packed",
    low_light: tuple[float, float] | None = None,
    max_batches: int | None = None,
    num_workers: int = 0,
    keep_rgb: bool = False,
    device: str | torch.device = "cpu",
) -> HeldOut:
    """One pass over ``shards`` (centre crops, no flip, optionally darkened by ``low_light``,
    deterministic per sample) with the teacher's logits on the RGB and on every baseline."""
    teacher_size = teacher_size or crop
    loader = make_loader(
        str(shards) if isinstance(shards, Path) else shards,
        batch_size=batch_size,
        num_workers=num_workers,
        crop=crop,
        teacher_size=teacher_size,
        student_input=student_input,
        low_light=low_light,
        repeat=False,
        isp_reference=True,
    )
    held = HeldOut(baselines={name: [] for name in BASELINES}, crop=crop, classes=teacher.classes)
    teacher.to(device)
    with torch.no_grad():
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            tensors = {k: batch[k].to(device) for k in ("raw", "rgb", "wb", "isp", "cls")}
            held.raw.append(tensors["raw"])
            held.wb.append(tensors["wb"])
            held.labels.append(tensors["cls"])
            held.teacher.append(teacher(tensors["rgb"]))
            for name, render in BASELINES.items():
                image = render(tensors)
                if image.shape[-1] != teacher_size:
                    image = F.interpolate(
                        image, size=teacher_size, mode="bilinear", antialias=True,
                        align_corners=False,
                    )  # fmt: skip
                held.baselines[name].append(teacher(image))
            held.keys.extend(batch["key"])
            if keep_rgb:
                held.rgb.append((batch["rgb"] * 255).round().to(torch.uint8))
    if not held.keys:
        raise ValueError(f"{shards}: no samples to evaluate")
    held.task = task_of(held.teacher[0])
    return held


def student_logits(student: RawStudent, held: HeldOut) -> list[torch.Tensor]:
    """The student's logits on every held-out batch (eval mode, no gradient)."""
    student.eval()
    with torch.no_grad():
        return [student(raw, wb) for raw, wb in zip(held.raw, held.wb, strict=True)]


def score(logits: Sequence[torch.Tensor], held: HeldOut) -> dict[str, float | int | None]:
    """Point estimates of the task's metrics (:data:`distill.metrics.METRICS`) of per-batch
    ``logits`` on ``held``, and ``accuracy`` on the labelled samples (classification; ``None``
    without labels or for dense logits)."""
    return {**held.values(logits).summary(), "accuracy": accuracy(logits, held)}


def accuracy(logits: Sequence[torch.Tensor], held: HeldOut) -> float | None:
    """Top-1 accuracy of per-batch classification ``logits`` on the labelled samples of
    ``held``; ``None`` without labels or for dense logits."""
    labels = torch.cat(held.labels)
    valid = labels >= 0
    if held.task != "classify" or not bool(valid.any()):
        return None
    predicted = torch.cat([lg.argmax(1) for lg in logits])
    return float((predicted[valid] == labels[valid]).double().mean())


def label_report(held: HeldOut, shards: str | Sequence[str]) -> dict[str, Any]:
    """Rewrite ``held``'s labels to the teacher's classes by name (:mod:`distill.labels`, with
    the ``classes.json`` of the build holding ``shards``) and return what was matched."""
    if held.task != "classify":
        return {"reason": "segmentation: the shards carry image labels, not masks"}
    classes = held.classes
    synsets = None
    if classes is not None and len(classes) == 1000 and list(classes) == imagenet_class_names():
        synsets = imagenet_synsets()
    held.labels, report = relabel(held.labels, find_class_map(shards), classes, synsets)
    return report
