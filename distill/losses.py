"""Distillation losses: an explicit registry (name → class) and a weighted combination.

Every loss is an ``nn.Module`` called as ``loss(student, teacher, labels)`` where ``student`` and
``teacher`` are :class:`Outputs` (logits and, when feature layers are tapped, a list of feature
maps) and ``labels`` is an int64 tensor B with −1 for unlabelled samples. Each returns a scalar.
None of the distillation losses uses labels.

Two tasks share the losses: **classification** logits are B×K (averages over the batch);
**dense** logits (segmentation) are B×K×h×w, and every loss averages over the B·h·w positions
(a pixel is a sample). A dense teacher's map is resized to the student's map
(:func:`match_teacher`) before any comparison, so teacher and student input sizes may differ.

References: G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531, 2015 (KD with temperature, T² scaling); A. Romero et al., "FitNets: Hints for
Thin Deep Nets", ICLR 2015 (feature matching through an adapter); E. Schwartz, A. Bronstein,
R. Giryes, "ISP Distillation", arXiv:2101.10203 (RAW student, RGB teacher, no labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOSSES",
    "CombinedLoss",
    "CrossEntropyLoss",
    "FeatureLoss",
    "HardLabelLoss",
    "KDLoss",
    "LogitMSELoss",
    "Outputs",
    "build_loss",
    "match_teacher",
    "positions",
]


@dataclass
class Outputs:
    """A network's logits (B×K) and the feature maps of its tapped layers (each B×C×H×W)."""

    logits: torch.Tensor
    features: list[torch.Tensor] = field(default_factory=list)


def match_teacher(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """The teacher's logits at the student's spatial size.

    Classification logits (B×K) are returned as they are. Dense logits B×K×h×w are resized
    bilinearly (``align_corners=False``: pixel centres stay aligned, so the map of a 256-pixel
    input on a 128 grid covers the same image as on a 256 grid) to the student's h'×w'.
    """
    if teacher.ndim != 4 or teacher.shape[-2:] == student.shape[-2:]:
        return teacher
    if student.ndim != 4:
        raise ValueError(
            f"teacher logits {tuple(teacher.shape)} are dense but the student's "
            f"{tuple(student.shape)} are not"
        )
    return F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)


def positions(logits: torch.Tensor) -> int:
    """The number of predictions in ``logits`` (B for B×K, B·h·w for B×K×h×w)."""
    return logits.numel() // logits.shape[1]


def _require_same_shape(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{what}: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}"
        )


class KDLoss(nn.Module):
    """Temperature-softened KL divergence (Hinton et al. 2015), per prediction.

    L = T² · (1/N) Σ_n Σ_k p_nk log(p_nk / q_nk),  p = softmax(z_t / T),  q = softmax(z_s / T),

    over the N predictions: the B samples of classification logits B×K, or the B·h·w pixels of
    dense logits B×K×h×w (softmax over K at every pixel; the teacher's map resized to the
    student's by :func:`match_teacher`). The T² factor keeps gradient magnitudes comparable across
    temperatures (the soft-target gradient scales as 1/T²). Computed in float32 whatever the
    autocast dtype.
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student: Outputs, teacher: Outputs, labels: torch.Tensor) -> torch.Tensor:
        reference = match_teacher(teacher.logits, student.logits)
        _require_same_shape(student.logits, reference, "kd logits")
        t = self.temperature
        log_q = F.log_softmax(student.logits.float() / t, dim=1)
        log_p = F.log_softmax(reference.float() / t, dim=1)
        kl = F.kl_div(log_q, log_p, reduction="sum", log_target=True)
        return kl / positions(log_q) * t * t


class LogitMSELoss(nn.Module):
    """Mean squared error between logits: L = (1/(N·K)) Σ_n Σ_k (z_s − z_t)² over the N
    predictions (samples, or pixels of dense logits)."""

    def forward(self, student: Outputs, teacher: Outputs, labels: torch.Tensor) -> torch.Tensor:
        reference = match_teacher(teacher.logits, student.logits)
        _require_same_shape(student.logits, reference, "mse logits")
        return F.mse_loss(student.logits.float(), reference.float())


class FeatureLoss(nn.Module):
    """Feature matching on tapped layers (FitNets hints).

    L = (1/N) Σ_n mean((A_n(f_s,n) − f_t,n)²) over the N layer pairs, where A_n is a 1×1
    convolution from the student's to the teacher's channel count, or the identity where they
    agree. Spatial sizes must match (the default student keeps the teacher's).
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels) or not student_channels:
            raise ValueError(
                f"feature loss needs one teacher layer per student layer, got "
                f"{len(student_channels)} and {len(teacher_channels)}"
            )
        self.adapters = nn.ModuleList(
            nn.Identity() if s == t else nn.Conv2d(s, t, kernel_size=1, bias=False)
            for s, t in zip(student_channels, teacher_channels, strict=True)
        )

    def forward(self, student: Outputs, teacher: Outputs, labels: torch.Tensor) -> torch.Tensor:
        if len(student.features) != len(self.adapters) or len(teacher.features) != len(
            self.adapters
        ):
            raise ValueError(
                f"feature loss built for {len(self.adapters)} layers, got "
                f"{len(student.features)} student and {len(teacher.features)} teacher maps"
            )
        total = student.logits.new_zeros((), dtype=torch.float32)
        for adapter, fs, ft in zip(self.adapters, student.features, teacher.features, strict=True):
            mapped = adapter(fs)
            _require_same_shape(mapped, ft, "feature map")
            total = total + F.mse_loss(mapped.float(), ft.float())
        return total / len(self.adapters)


def _masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over samples with target ≥ 0; exactly 0 (with a graph) if none."""
    valid = target >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float()[valid], target[valid])


class CrossEntropyLoss(nn.Module):
    """Supervised baseline: L = −(1/B') Σ_b log softmax(z_s)_{y_b} over the B' labelled samples.

    Classification only: the shards' labels are one class per image, not per pixel.
    """

    def forward(
        self, student: Outputs, teacher: Outputs | None, labels: torch.Tensor
    ) -> torch.Tensor:
        if student.logits.ndim != 2:
            raise ValueError(
                "the supervised loss needs one label per image: it is defined for "
                f"classification logits B×K, got {tuple(student.logits.shape)}"
            )
        return _masked_cross_entropy(student.logits, labels)


class HardLabelLoss(nn.Module):
    """Label-free hard-label baseline: cross-entropy on the teacher's top-1 class.

    L = −(1/N) Σ_n log softmax(z_s,n)_{argmax z_t,n} over the N predictions (per pixel for dense
    logits: the teacher's argmax map is the pseudo-label map).
    """

    def forward(self, student: Outputs, teacher: Outputs, labels: torch.Tensor) -> torch.Tensor:
        reference = match_teacher(teacher.logits, student.logits)
        _require_same_shape(student.logits, reference, "hard-label logits")
        return F.cross_entropy(student.logits.float(), reference.argmax(dim=1))


LOSSES: dict[str, type[nn.Module]] = {
    "kd": KDLoss,
    "mse": LogitMSELoss,
    "feature": FeatureLoss,
    "ce": CrossEntropyLoss,
    "hard": HardLabelLoss,
}
# Losses that need the teacher's outputs (all but the supervised one).
NEEDS_TEACHER = frozenset({"kd", "mse", "feature", "hard"})


def build_loss(name: str, **kwargs: object) -> nn.Module:
    """Instantiate ``LOSSES[name](**kwargs)``; unknown names raise ``ValueError``."""
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}: expected one of {sorted(LOSSES)}") from None
    return cls(**kwargs)


class CombinedLoss(nn.Module):
    """Weighted sum L = Σ_i w_i L_i of registry losses; zero weights are dropped.

    ``weights`` maps loss names to weights, ``options`` maps names to constructor kwargs (e.g.
    ``{"kd": {"temperature": 4.0}}``). ``forward`` returns the total and the unweighted terms.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        options: Mapping[str, Mapping[str, object]] | None = None,
    ) -> None:
        super().__init__()
        options = options or {}
        unknown = set(weights) - set(LOSSES)
        if unknown:
            raise ValueError(
                f"unknown loss {sorted(unknown)}: expected names from {sorted(LOSSES)}"
            )
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"loss weights must be ≥ 0, got {dict(weights)}")
        self.weights = {name: float(w) for name, w in weights.items() if w > 0}
        if not self.weights:
            raise ValueError(f"no loss with a positive weight in {dict(weights)}")
        self.terms = nn.ModuleDict(
            {name: build_loss(name, **options.get(name, {})) for name in self.weights}
        )

    @property
    def needs_teacher(self) -> bool:
        return bool(NEEDS_TEACHER & set(self.weights))

    def forward(
        self, student: Outputs, teacher: Outputs | None, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: term(student, teacher, labels) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts  # type: ignore[return-value]
