"""Where a student is judged: agreement with the teacher, on held-out pairs.

``python -m distill.evaluate --shards val/ --checkpoint RUN/last.pt --out RUN/eval``.

For every held-out pair (one pass, centre crops, no flips) three predictions are compared:

* **student** on the RAW;
* **teacher** on the aligned sRGB (the reference: "agreement" is agreement with it);
* **no-ISP teacher**: the teacher on a naive render of the same RAW (:func:`naive_render`:
  bilinear demosaic of the normalised mosaic, no white balance, no colour correction, sRGB
  gamma) — the baseline a RAW student has to beat.

Metrics per model: top-1 agreement (its top-1 class equals the teacher's), top-5 agreement (the
teacher's top-1 class is among its five highest), mean KL(teacher ‖ model) at temperature 1 in
nats, and top-1 accuracy on the samples that carry a ``cls`` label. Results go to
``metrics.json`` and ``metrics.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import torch
    import torch.nn.functional as F
except ModuleNotFoundError as err:  # `python -m distill.evaluate` without rawpairs[distill]
    from distill.config import exit_if_command

    exit_if_command(err, __name__)
    raise

from distill.checkpoint import load_checkpoint
from distill.models import RawStudent, Teacher

__all__ = [
    "Scores",
    "evaluate",
    "load_checkpoint",
    "main",
    "naive_render",
    "srgb_encode",
    "write_report",
]

# Bilinear demosaic kernels: red/blue from up to 4 diagonal/axial neighbours, green from 4 axial.
_KERNEL_RB = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 4
_KERNEL_G = torch.tensor([[0.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 0.0]]) / 4


def srgb_encode(linear: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB transfer function; input clipped to [0, 1], output in [0, 1]."""
    x = linear.clamp(0, 1)
    return torch.where(
        x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055
    )


def naive_render(raw: torch.Tensor) -> torch.Tensor:
    """The "no ISP" render of normalised RGGB RAW: B×4×h×w planes or B×1×H×W mosaic → B×3×H×W.

    Bilinear demosaic as normalised convolution (each colour's samples convolved with the
    bilinear kernel, divided by the same convolution of that colour's sampling mask, which is
    exact bilinear interpolation inside the image and renormalised at the border), then sRGB
    gamma. No white balance, colour correction or tone curve: camera RGB is displayed as sRGB.
    """
    if raw.ndim != 4 or raw.shape[1] not in (1, 4):
        raise ValueError(f"RAW must be B×4×h×w planes or B×1×H×W mosaic, got {tuple(raw.shape)}")
    mosaic = F.pixel_shuffle(raw, 2) if raw.shape[1] == 4 else raw
    if mosaic.shape[-2] % 2 or mosaic.shape[-1] % 2:
        raise ValueError(f"mosaic sides must be even, got {tuple(mosaic.shape[-2:])}")
    h, w = mosaic.shape[-2:]
    masks = torch.zeros(3, 1, h, w, dtype=mosaic.dtype, device=mosaic.device)
    masks[0, 0, 0::2, 0::2] = 1  # R
    masks[1, 0, 0::2, 1::2] = 1  # G on red rows
    masks[1, 0, 1::2, 0::2] = 1  # G on blue rows
    masks[2, 0, 1::2, 1::2] = 1  # B
    kernels = torch.stack([_KERNEL_RB, _KERNEL_G, _KERNEL_RB])[:, None].to(mosaic)
    sampled = mosaic * masks.view(1, 3, h, w)
    numerator = F.conv2d(sampled, kernels, padding=1, groups=3)
    denominator = F.conv2d(masks.view(1, 3, h, w), kernels, padding=1, groups=3)
    return srgb_encode(numerator / denominator)


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
        target = teacher.argmax(1)
        self.n += len(target)
        self.top1 += int((logits.argmax(1) == target).sum())
        k = min(5, logits.shape[1])
        self.top5 += int((logits.topk(k, dim=1).indices == target[:, None]).any(1).sum())
        log_p, log_q = F.log_softmax(teacher.float(), 1), F.log_softmax(logits.float(), 1)
        self.kl += float((log_p.exp() * (log_p - log_q)).sum())
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
    """Agreement metrics of the student (RAW) and of the teacher on a naive RAW render.

    Returns ``{"samples", "labelled", "student": {...}, "naive_teacher": {...},
    "teacher": {"accuracy"}}``; each model entry has ``top1_agreement``, ``top5_agreement``,
    ``kl`` (nats) and ``accuracy`` (``None`` without labels). The student is put in eval mode.
    """
    from distill.data import make_loader

    teacher_size = teacher_size or crop
    device = torch.device(device)
    loader = make_loader(
        shards,
        batch_size=batch_size,
        num_workers=num_workers,
        crop=crop,
        teacher_size=teacher_size,
        student_input=student_input,
        repeat=False,
    )
    student.eval().to(device)
    teacher.to(device)
    scores = {"student": Scores(), "naive_teacher": Scores(), "teacher": Scores()}
    with torch.no_grad():
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            raw, rgb = batch["raw"].to(device), batch["rgb"].to(device)
            labels = batch["cls"].to(device)
            reference = teacher(rgb)
            naive = naive_render(raw)
            if naive.shape[-1] != teacher_size:
                naive = F.interpolate(
                    naive, size=teacher_size, mode="bilinear", antialias=True, align_corners=False
                )
            scores["student"].update(student(raw), reference, labels)
            scores["naive_teacher"].update(teacher(naive), reference, labels)
            scores["teacher"].update(reference, reference, labels)
    if scores["teacher"].n == 0:
        raise ValueError(f"{shards}: no samples to evaluate")
    return {
        "samples": scores["teacher"].n,
        "labelled": scores["teacher"].labelled,
        "student": scores["student"].summary(),
        "naive_teacher": scores["naive_teacher"].summary(),
        "teacher": {"accuracy": scores["teacher"].summary()["accuracy"]},
    }


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
    }
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    width = 0.8 / len(models)
    for i, (label, values) in enumerate(models.items()):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [values[n] for n in names], width, label=label)
    ax.set_xticks(range(len(names)), ["top-1 agreement", "top-5 agreement"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of samples")
    ax.set_title(f"Agreement with the RGB teacher ({metrics['samples']} samples)")
    ax.legend(loc="lower right")
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
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="MODULE:FACTORY",
        help="allow importing this teacher/student code named in the checkpoint (repeatable)",
    )
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
