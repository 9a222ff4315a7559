"""Where a student is judged: agreement with the teacher, on held-out pairs.

``python -m distill.evaluate --shards val/ --checkpoint RUN/last.pt --out RUN/eval``.

For every held-out pair (one pass, centre crops, no flips) these predictions are compared with
the **teacher on the aligned sRGB** (the reference: "agreement" is agreement with it):

* **student** on the RAW;
* baselines (:data:`BASELINES`), the teacher on a render of the same RAW:
  ``naive_teacher`` — :func:`naive_render`: bilinear demosaic, no white balance, no colour
  correction, sRGB gamma ("no ISP", what a RAW student has to beat); ``grayworld_teacher`` — the
  same with per-image gray-world white balance (the simplest real ISP); ``isp_teacher`` — our full
  forward ISP (:mod:`rawpairs.isp`) with the sample's own metadata (white balance, colour matrix,
  tone curve): an upper reference, not a baseline to beat.

Metrics per model (:class:`Scores`): top-1 agreement (its top-1 class equals the teacher's), top-5
agreement (the teacher's top-1 class is among its five highest), mean KL(teacher ‖ model) at
temperature 1 in nats, and top-1 accuracy on the samples that carry a ``cls`` label. Each comes
with a 95 % bootstrap interval over **source images** (:func:`bootstrap_ci`: crops of one photo or
RAW file are resampled together), and the student's difference to every baseline with its own
paired interval. Results go to ``metrics.json`` and ``metrics.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ModuleNotFoundError as err:  # `python -m distill.evaluate` without rawpairs[distill]
    from distill.config import exit_if_command

    exit_if_command(err, __name__)
    raise

from distill.checkpoint import add_trust_argument, load_checkpoint
from distill.frontend import naive_render, srgb_encode
from distill.models import RawStudent, Teacher

__all__ = [
    "BASELINES",
    "HeldOut",
    "Scores",
    "bootstrap_ci",
    "evaluate",
    "load_checkpoint",
    "load_heldout",
    "main",
    "naive_render",
    "per_sample",
    "score",
    "source_of",
    "srgb_encode",
    "student_logits",
    "summarize",
    "write_report",
]

# Baseline name → how its teacher input is made from a batch (RAW, recorded gains, ISP render).
BASELINES: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]] = {
    "naive_teacher": lambda b: naive_render(b["raw"]),
    "grayworld_teacher": lambda b: naive_render(b["raw"], "grayworld"),
    "isp_teacher": lambda b: b["isp"],
}
METRICS = ("top1_agreement", "top5_agreement", "kl")


class Scores:
    """Running agreement / KL / accuracy of one model against the teacher."""

    def __init__(self) -> None:
        self.n = 0
        self.top1 = 0
        self.top5 = 0
        self.kl = 0.0
        self.labelled = 0
        self.correct = 0

    def update(self, logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: model logits and teacher logits B×K, labels B (−1: none)."""
        values = per_sample(logits, teacher)
        self.n += len(values["top1_agreement"])
        self.top1 += int(values["top1_agreement"].sum())
        self.top5 += int(values["top5_agreement"].sum())
        self.kl += float(values["kl"].sum())
        valid = labels >= 0
        self.labelled += int(valid.sum())
        self.correct += int((logits.argmax(1)[valid] == labels[valid]).sum())

    def summary(self) -> dict[str, float | int | None]:
        n = max(self.n, 1)
        return {
            "top1_agreement": self.top1 / n,
            "top5_agreement": self.top5 / n,
            "kl": self.kl / n,
            "accuracy": self.correct / self.labelled if self.labelled else None,
        }


def per_sample(logits: torch.Tensor, teacher: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-sample metrics of model logits against teacher logits (B×K each), float64 arrays [B]:
    ``top1_agreement`` and ``top5_agreement`` (0/1), ``kl`` = KL(teacher ‖ model) in nats."""
    target = teacher.argmax(1)
    top1 = logits.argmax(1) == target
    k = min(5, logits.shape[1])
    top5 = (logits.topk(k, dim=1).indices == target[:, None]).any(1)
    log_p, log_q = F.log_softmax(teacher.float(), 1), F.log_softmax(logits.float(), 1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1)
    return {
        "top1_agreement": top1.double().cpu().numpy(),
        "top5_agreement": top5.double().cpu().numpy(),
        "kl": kl.double().cpu().numpy(),
    }


def source_of(key: str) -> str:
    """The source image of a sample key (``rawpairs.sample.sample_key``: ``<stem>_<hash>_cN``)."""
    stem, sep, index = key.rpartition("_c")
    return stem if sep and index.isdigit() else key


def bootstrap_ci(
    values: np.ndarray,
    sources: Sequence[str],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``values.mean()`` resampling whole sources.

    ``values``: one number per sample; ``sources``: each sample's source. A resample draws as many
    sources as there are, with replacement, and averages all samples of the drawn sources (crops
    of one image are not independent, so they are drawn together). Deterministic for ``seed``.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(sources) or not len(values):
        raise ValueError(f"need one source per value, got {len(values)} values, {len(sources)}")
    names, index = np.unique(np.asarray(sources), return_inverse=True)
    sums = np.bincount(index, weights=values, minlength=len(names))
    counts = np.bincount(index, minlength=len(names)).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass
class HeldOut:
    """Held-out batches in memory with the reference predictions computed once.

    ``raw``: normalised RGGB RAW per batch (on the device); ``wb``: recorded white-balance gains
    B×3; ``labels`` (−1: none); ``teacher``: the teacher's logits on the RGB; ``baselines``: name →
    the teacher's logits on that baseline's render, per batch; ``keys``: sample keys; ``rgb``: the
    sRGB teacher input as uint8 on the CPU when loaded with ``keep_rgb`` (for figures).
    """

    raw: list[torch.Tensor] = field(default_factory=list)
    wb: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    teacher: list[torch.Tensor] = field(default_factory=list)
    baselines: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    rgb: list[torch.Tensor] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return len(self.keys)

    @property
    def sources(self) -> list[str]:
        return [source_of(key) for key in self.keys]


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
    from distill.data import make_loader

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
    held = HeldOut(baselines={name: [] for name in BASELINES})
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
    return held


def student_logits(student: RawStudent, held: HeldOut) -> list[torch.Tensor]:
    """The student's logits on every held-out batch (eval mode, no gradient)."""
    student.eval()
    with torch.no_grad():
        return [student(raw, wb) for raw, wb in zip(held.raw, held.wb, strict=True)]


def score(logits: Sequence[torch.Tensor], held: HeldOut) -> dict[str, float | int | None]:
    """:class:`Scores` summary of per-batch ``logits`` against the teacher on ``held``."""
    scores = Scores()
    for batch_logits, reference, labels in zip(logits, held.teacher, held.labels, strict=True):
        scores.update(batch_logits, reference, labels)
    return scores.summary()


def _sample_values(logits: Sequence[torch.Tensor], held: HeldOut) -> dict[str, np.ndarray]:
    parts = [per_sample(lg, ref) for lg, ref in zip(logits, held.teacher, strict=True)]
    return {m: np.concatenate([p[m] for p in parts]) for m in METRICS}


def summarize(
    student: Sequence[torch.Tensor] | None, held: HeldOut, *, resamples: int = 2000
) -> dict[str, Any]:
    """Scores of the student's logits (``None``: baselines only) and of every baseline on ``held``.

    Each model entry: :meth:`Scores.summary` plus ``ci`` (metric → 95 % bootstrap interval over
    sources); the student also gets ``vs`` (baseline → metric → [difference student − baseline,
    interval low, interval high], paired over the same resampled sources).
    """
    models = dict(held.baselines)
    if student is not None:
        models = {"student": list(student), **models}
    sources = held.sources
    values = {name: _sample_values(logits, held) for name, logits in models.items()}
    out: dict[str, Any] = {"samples": held.samples, "sources": len(set(sources))}
    for name, logits in models.items():
        entry: dict[str, Any] = dict(score(logits, held))
        entry["ci"] = {
            m: bootstrap_ci(values[name][m], sources, resamples=resamples) for m in METRICS
        }
        out[name] = entry
    if student is not None:
        out["student"]["vs"] = {
            base: {
                m: [
                    float((values["student"][m] - values[base][m]).mean()),
                    *bootstrap_ci(
                        values["student"][m] - values[base][m], sources, resamples=resamples
                    ),
                ]
                for m in METRICS
            }
            for base in held.baselines
        }
    labels = torch.cat(held.labels)
    out["labelled"] = int((labels >= 0).sum())
    out["teacher"] = {"accuracy": score(held.teacher, held)["accuracy"]}
    return out


def evaluate(
    student: RawStudent,
    teacher: Teacher,
    shards: str | Sequence[str],
    *,
    batch_size: int = 32,
    crop: int = 224,
    teacher_size: int | None = None,
    student_input: str = "packed",
    max_batches: int | None = None,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Agreement metrics of the student (RAW) and of the baselines on held-out pair shards.

    Returns :func:`summarize`'s dictionary: ``samples``, ``sources``, ``labelled``, ``student``,
    one entry per :data:`BASELINES` name, and ``teacher`` (``{"accuracy"}``); each model entry
    has ``top1_agreement``, ``top5_agreement``, ``kl`` (nats), ``accuracy`` (``None`` without
    labels) and bootstrap intervals. The student is put in eval mode.
    """
    held = load_heldout(
        shards,
        teacher,
        crop=crop,
        teacher_size=teacher_size,
        batch_size=batch_size,
        student_input=student_input,
        max_batches=max_batches,
        num_workers=num_workers,
        device=device,
    )
    return summarize(student_logits(student.to(device), held), held)


def write_report(metrics: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` and a bar chart ``metrics.png`` to ``out``; return both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "metrics.json", out / "metrics.png"
    json_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    names = ["top1_agreement", "top5_agreement"]
    models = {
        "student (RAW)": metrics["student"],
        "teacher on naive render": metrics["naive_teacher"],
        "teacher on gray-world render": metrics["grayworld_teacher"],
        "teacher on full ISP (upper ref.)": metrics["isp_teacher"],
    }
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    width = 0.8 / len(models)
    for i, (label, values) in enumerate(models.items()):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(names))]
        errors = np.array([[values[n] - values["ci"][n][0], values["ci"][n][1] - values[n]]
                           for n in names]).T  # fmt: skip
        ax.bar(xs, [values[n] for n in names], width, yerr=errors, capsize=2, label=label)
    ax.set_xticks(range(len(names)), ["top-1 agreement", "top-5 agreement"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of samples")
    ax.set_title(
        f"Agreement with the RGB teacher ({metrics['samples']} samples, "
        f"{metrics['sources']} sources; 95 % source bootstrap)",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return json_path, png_path


def main(argv: Sequence[str] | None = None) -> int:
    from distill.config import require_extra
    from rawpairs.errors import InputError

    p = argparse.ArgumentParser(
        prog="python -m distill.evaluate",
        description="Agreement of a RAW student with its RGB teacher on held-out pair shards.",
    )
    p.add_argument("--shards", required=True, nargs="+")
    p.add_argument("--checkpoint", required=True, help="a distill.train checkpoint (last.pt)")
    p.add_argument("--out", default=None, help="report folder (default: next to the checkpoint)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=None, help="default: the training crop")
    p.add_argument("--max-batches", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    add_trust_argument(p)
    args = p.parse_args(argv)
    require_extra("matplotlib")  # the report's chart: fail before evaluating, in one line
    try:
        student, teacher, config = load_checkpoint(args.checkpoint, args.device, trusted=args.trust)
        crop = args.crop or config["crop"]
        metrics = evaluate(
            student,
            teacher,
            args.shards[0] if len(args.shards) == 1 else args.shards,
            batch_size=args.batch_size,
            crop=crop,
            teacher_size=config["teacher_size"] if args.crop is None else None,
            student_input=config["student_input"],
            max_batches=args.max_batches,
            num_workers=args.num_workers,
            device=args.device,
        )
        out = Path(args.out) if args.out else Path(args.checkpoint).parent / "eval"
        json_path, png_path = write_report(metrics, out)
    except (ValueError, FileNotFoundError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
