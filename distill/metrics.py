"""Agreement of a model with the teacher, per sample, and source-bootstrap intervals.

Two tasks (:func:`distill.models.task_of`):

* **classify** — logits B×K. Per sample: ``top1_agreement`` (its top-1 class is the teacher's),
  ``top5_agreement`` (the teacher's top-1 is among its five highest) and ``kl`` =
  KL(teacher ‖ model) at temperature 1, in nats.
* **segment** — logits B×K×h×w, both maps resized (bilinear, on the logits) to the crop's
  resolution S×S. Per sample: ``pixel_agreement`` (fraction of pixels whose argmax is the
  teacher's), ``kl`` (mean per-pixel KL, nats) and per-class pixel counts from which the set's
  IoU is computed: IoU_c = |pred=c ∧ teacher=c| / |pred=c ∨ teacher=c| over the whole set (one
  confusion matrix, not a mean of per-image IoUs); ``miou`` averages it over the classes that
  occur (union > 0), ``person_iou`` is the IoU of the teacher's class named ``person``
  (``None`` when it has none).

:class:`SampleValues` holds the per-sample values of one model on one set;
:func:`intervals` and :func:`paired_intervals` resample whole **sources** (the crops of one photo
or RAW file are not independent, so they are drawn together).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "METRICS",
    "SampleValues",
    "bootstrap_ci",
    "classify_values",
    "intervals",
    "iou_per_class",
    "paired_intervals",
    "segment_values",
    "source_weights",
]

METRICS: dict[str, tuple[str, ...]] = {
    "classify": ("top1_agreement", "top5_agreement", "kl"),
    "segment": ("pixel_agreement", "miou", "person_iou", "kl"),
}


@dataclass
class SampleValues:
    """Per-sample values of one model on a set (arrays over the N samples).

    ``means``: metric → float64 [N] (metrics that average over samples); ``counts``: for
    segmentation, ``intersection``, ``predicted`` and ``target`` pixel counts per class, int64
    [N, K]; ``person``: index of the teacher's ``person`` class, or ``None``.
    """

    task: str
    means: dict[str, np.ndarray]
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    person: int | None = None

    @classmethod
    def concat(cls, parts: Sequence[SampleValues]) -> SampleValues:
        """One :class:`SampleValues` of several batches (same task and classes)."""
        first = parts[0]
        return cls(
            first.task,
            {m: np.concatenate([p.means[m] for p in parts]) for m in first.means},
            {c: np.concatenate([p.counts[c] for p in parts]) for c in first.counts},
            first.person,
        )

    def mean_over(self, runs: Sequence[SampleValues]) -> SampleValues:
        """Per-sample values averaged with those of other ``runs`` (e.g. seeds) of the same set."""
        every = [self, *runs]
        return SampleValues(
            self.task,
            {m: np.mean([r.means[m] for r in every], axis=0) for m in self.means},
            {c: np.mean([r.counts[c] for r in every], axis=0) for c in self.counts},
            self.person,
        )

    @property
    def samples(self) -> int:
        return len(next(iter(self.means.values())))

    def summary(self) -> dict[str, float | None]:
        """Point estimates of :data:`METRICS` ``[task]`` on the whole set."""
        out: dict[str, float | None] = {m: float(v.mean()) for m, v in self.means.items()}
        if self.task == "segment":
            totals = {c: v.sum(0)[None] for c, v in self.counts.items()}
            out.update({m: _value(v[0]) for m, v in self._ious(totals).items()})
        return {m: out[m] for m in METRICS[self.task]}

    def _ious(self, totals: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``miou`` and ``person_iou`` of summed counts [R, K] → [R] (NaN where undefined)."""
        iou = iou_per_class(totals["intersection"], totals["predicted"], totals["target"])
        occurs = ~np.isnan(iou)
        miou = np.where(occurs.any(1), np.nansum(iou, 1) / np.maximum(occurs.sum(1), 1), np.nan)
        person = iou[:, self.person] if self.person is not None else np.full(len(iou), np.nan)
        return {"miou": miou, "person_iou": person}


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def iou_per_class(
    intersection: np.ndarray, predicted: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """IoU per class from pixel counts (arrays ``[..., K]``); NaN where the union is empty."""
    union = predicted + target - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.where(union > 0, union, 1), np.nan)


def classify_values(logits: torch.Tensor, teacher: torch.Tensor) -> SampleValues:
    """Per-sample classification metrics of model logits against teacher logits (B×K each)."""
    target = teacher.argmax(1)
    top1 = logits.argmax(1) == target
    k = min(5, logits.shape[1])
    top5 = (logits.topk(k, dim=1).indices == target[:, None]).any(1)
    log_p, log_q = F.log_softmax(teacher.float(), 1), F.log_softmax(logits.float(), 1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1)
    means = {
        "top1_agreement": top1.double().cpu().numpy(),
        "top5_agreement": top5.double().cpu().numpy(),
        "kl": kl.double().cpu().numpy(),
    }
    return SampleValues("classify", means)


def _at(logits: torch.Tensor, size: int) -> torch.Tensor:
    if logits.shape[-2:] == (size, size):
        return logits.float()
    return F.interpolate(logits.float(), size=(size, size), mode="bilinear", align_corners=False)


def segment_values(
    logits: torch.Tensor, teacher: torch.Tensor, size: int, person: int | None = None
) -> SampleValues:
    """Per-sample segmentation metrics of dense logits against the teacher's (B×K×h×w each,
    any grids), both resized to ``size``×``size`` pixels (the crop); ``person``: the index of the
    teacher's person class, if any. One sample at a time (1000-class maps are large)."""
    k = teacher.shape[1]
    agreement, kl = [], []
    counts: dict[str, list[np.ndarray]] = {"intersection": [], "predicted": [], "target": []}
    for model_map, teacher_map in zip(logits, teacher, strict=True):
        log_q = F.log_softmax(_at(model_map[None], size), 1)
        log_p = F.log_softmax(_at(teacher_map[None], size), 1)
        pred, target = log_q.argmax(1).flatten(), log_p.argmax(1).flatten()
        same = pred == target
        agreement.append(float(same.double().mean()))
        kl.append(float((log_p.exp() * (log_p - log_q)).sum(1).double().mean()))
        counts["intersection"].append(torch.bincount(target[same], minlength=k).cpu().numpy())
        counts["predicted"].append(torch.bincount(pred, minlength=k).cpu().numpy())
        counts["target"].append(torch.bincount(target, minlength=k).cpu().numpy())
    return SampleValues(
        "segment",
        {"pixel_agreement": np.array(agreement), "kl": np.array(kl)},
        {name: np.stack(rows).astype(np.int64) for name, rows in counts.items()},
        person,
    )


# ---------------------------------------------------------------------------------------------
# Source bootstrap
# ---------------------------------------------------------------------------------------------
def source_weights(
    sources: Sequence[str], resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's source index [N] and the resamples' source multiplicities [R, S].

    A resample draws as many sources as there are, with replacement (deterministic for ``seed``).
    """
    names, index = np.unique(np.asarray(sources), return_inverse=True)
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    weights = np.zeros((resamples, len(names)), dtype=np.float64)
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    return index, weights


def _per_source(values: np.ndarray, index: np.ndarray, sources: int) -> np.ndarray:
    """Sums of ``values`` [N, ...] per source → [S, ...]."""
    out = np.zeros((sources, *values.shape[1:]), dtype=np.float64)
    np.add.at(out, index, values)
    return out


def _resampled_mean(values: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mean of per-sample ``values`` [N] on every resample [R] (all samples of each drawn
    source, as often as it is drawn)."""
    n_sources = weights.shape[1]
    counts = _per_source(np.ones(len(index)), index, n_sources)
    return weights @ _per_source(values, index, n_sources) / (weights @ counts)


def _resampled(
    values: SampleValues, index: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Every metric of ``values`` on every resample → metric → [R]."""
    n_sources = weights.shape[1]
    out = {m: _resampled_mean(v, index, weights) for m, v in values.means.items()}
    if values.task == "segment":
        totals = {c: weights @ _per_source(v, index, n_sources) for c, v in values.counts.items()}
        out.update(values._ious(totals))
    return out


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float] | None:
    if np.isnan(draws).all():
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def intervals(
    values: SampleValues,
    sources: Sequence[str],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap interval of every metric, resampling whole sources."""
    if values.samples != len(sources) or not len(sources):
        raise ValueError(f"need one source per value, got {values.samples} values, {len(sources)}")
    index, weights = source_weights(sources, resamples, seed)
    draws = _resampled(values, index, weights)
    return {m: _percentiles(draws[m], level) for m in METRICS[values.task]}


def paired_intervals(
    ours: SampleValues,
    theirs: SampleValues,
    sources: Sequence[str],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float] | None]:
    """Metric → [difference ours − theirs on the set, interval low, high], both models scored on
    the same resampled sources (a paired bootstrap); ``None`` where the metric is undefined."""
    index, weights = source_weights(sources, resamples, seed)
    a, b = _resampled(ours, index, weights), _resampled(theirs, index, weights)
    point_a, point_b = ours.summary(), theirs.summary()
    out: dict[str, list[float] | None] = {}
    for m in METRICS[ours.task]:
        ci = _percentiles(a[m] - b[m], level)
        if ci is None or point_a[m] is None or point_b[m] is None:
            out[m] = None
        else:
            out[m] = [float(point_a[m]) - float(point_b[m]), *ci]  # type: ignore[arg-type]
    return out


def bootstrap_ci(
    values: np.ndarray,
    sources: Sequence[str],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``values.mean()`` (one number per sample) resampling
    whole sources: all samples of the drawn sources are averaged. Deterministic for ``seed``."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(sources) or not len(values):
        raise ValueError(f"need one source per value, got {len(values)} values, {len(sources)}")
    index, weights = source_weights(sources, resamples, seed)
    n_sources = weights.shape[1]
    means = (
        weights
        @ _per_source(values, index, n_sources)
        / (weights @ _per_source(np.ones(len(values)), index, n_sources))
    )
    return _percentiles(means, level)  # type: ignore[return-value]
