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

Metrics (:mod:`distill.metrics`) follow the teacher's task: for a classifier, top-1 and top-5
agreement and KL(teacher ‖ model) at temperature 1 in nats, plus top-1 accuracy on the samples
that carry a ``cls`` label; for a dense (segmentation) teacher, pixel agreement, per-pixel KL at
the crop's resolution, mIoU against the teacher's labels (one confusion over the set) and the
person class's IoU when the teacher has one. Each comes with a 95 % bootstrap interval over
**source images** (crops of one photo or RAW file are resampled together), and the student's
difference to every baseline with its own paired interval. Results go to ``metrics.json`` and
``metrics.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.extras import exit_if_command, require_extra  # torch-free

try:
    import torch
except ModuleNotFoundError as err:  # `python -m distill.evaluate` without rawpairs[distill]
    exit_if_command(err, __name__)
    raise

from distill.checkpoint import add_trust_argument, load_checkpoint
from distill.config import OneLineParser
from distill.heldout import HeldOut, accuracy, label_report, load_heldout, student_logits
from distill.metrics import METRICS, intervals, paired_intervals
from distill.models import RawStudent, Teacher
from distill.options import HelpFormatter, add_config_option, parse_args
from distill.resources import check_crop, check_memory, check_output_folder, loader_bytes
from distill.runtime import resolve_device
from distill.shardlist import check_class_maps, resolve_shards
from rawpairs.errors import InputError

__all__ = [
    "build_parser",
    "evaluate",
    "format_table",
    "main",
    "summarize",
    "write_report",
]

def summarize(
    student: Sequence[torch.Tensor] | None, held: HeldOut, *, resamples: int = 2000
) -> dict[str, Any]:
    """Scores of the student's logits (``None``: baselines only) and of every baseline on ``held``.

    Each model entry: :func:`score` plus ``ci`` (metric → 95 % bootstrap interval over
    sources, ``None`` where undefined); the student also gets ``vs`` (baseline → metric →
    [difference student − baseline, interval low, interval high], paired over the same resampled
    sources).
    """
    models = dict(held.baselines)
    if student is not None:
        models = {"student": list(student), **models}
    sources = held.sources
    values = {name: held.values(logits) for name, logits in models.items()}
    out: dict[str, Any] = {
        "task": held.task,
        "metrics": list(METRICS[held.task]),
        "samples": held.samples,
        "sources": len(set(sources)),
    }
    for name, logits in models.items():
        entry: dict[str, Any] = {**values[name].summary(), "accuracy": accuracy(logits, held)}
        entry["ci"] = intervals(values[name], sources, resamples=resamples)
        out[name] = entry
    if student is not None:
        out["student"]["vs"] = {
            base: paired_intervals(values["student"], values[base], sources, resamples=resamples)
            for base in held.baselines
        }
    labels = torch.cat(held.labels)
    out["labelled"] = int((labels >= 0).sum())
    out["teacher"] = {"accuracy": accuracy(held.teacher, held)}
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

    Returns :func:`summarize`'s dictionary: ``task``, ``metrics``, ``samples``, ``sources``,
    ``labelled``, ``student``, one entry per :data:`BASELINES` name, and ``teacher``
    (``{"accuracy"}``); each model entry has the task's metrics (classification:
    ``top1_agreement``, ``top5_agreement``, ``kl``; segmentation: ``pixel_agreement``, ``miou``,
    ``person_iou``, ``kl``; KL in nats), ``accuracy`` (``None`` without labels) and bootstrap
    intervals; ``labels`` says how the shards' labels were matched to the teacher's classes
    (:func:`label_report`) or why accuracy is not defined. The student is put in eval mode.
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
    labels = label_report(held, shards)
    return {**summarize(student_logits(student.to(device), held), held), "labels": labels}


# Report rows: model entry of :func:`summarize` → its label in the table and the chart.
MODEL_LABELS = {
    "student": "student (RAW)",
    "naive_teacher": "teacher on naive render",
    "grayworld_teacher": "teacher on gray-world render",
    "isp_teacher": "teacher on full ISP (upper ref.)",
}


def _cell(value: float | None, ci: Sequence[float] | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    sign = "+" if signed else ""
    text = f"{value:{sign}.3f}"
    if ci is not None:
        text += f" [{ci[0]:{sign}.2f}, {ci[1]:{sign}.2f}]"
    return text


def format_table(metrics: dict[str, Any]) -> str:
    """A short plain-text table of :func:`summarize`'s metrics (at most 30 lines): every model's
    metrics with 95 % intervals, the student's paired differences to the baselines, accuracy."""
    names = list(metrics["metrics"])
    width = 34
    lines = [
        f"{metrics['samples']} held-out samples from {metrics['sources']} sources, task "
        f"{metrics['task']}: agreement with the teacher on the RGB",
        "(KL(teacher ‖ model) in nats, lower is better; [95 % source-bootstrap interval])",
        f"{'model':<{width}}" + "".join(f"{n:<24}" for n in names),
    ]
    for key, label in MODEL_LABELS.items():
        if key in metrics:
            entry = metrics[key]
            row = [_cell(entry[n], entry["ci"].get(n)) for n in names]
            lines.append(f"{label:<{width}}" + "".join(f"{c:<24}" for c in row))
    for base, diffs in metrics.get("student", {}).get("vs", {}).items():
        label = "student − " + MODEL_LABELS[base].removeprefix("teacher on ")
        row = [
            _cell(d[0], d[1:], signed=True) if d is not None else "n/a"
            for d in (diffs[n] for n in names)
        ]
        lines.append(f"{label:<{width}}" + "".join(f"{c:<24}" for c in row))
    lines.append(accuracy_line(metrics))
    return "\n".join(line.rstrip() for line in lines)


def accuracy_line(metrics: dict[str, Any]) -> str:
    """One line on label accuracy: the values, or why accuracy is not defined."""
    labels = metrics.get("labels") or {}
    if labels.get("reason"):
        return f"accuracy: not defined: {labels['reason']}"
    student = metrics.get("student", {}).get("accuracy")
    if student is None:
        return "accuracy: not defined: no labelled samples (build with --labels folder)"
    teacher = metrics["teacher"]["accuracy"]
    naive = metrics.get("naive_teacher", {}).get("accuracy")
    note = f" ({labels['note']})" if labels.get("note") else ""
    return (
        f"accuracy on {metrics['labelled']} labelled samples: student {student:.3f}, teacher on "
        f"RGB {teacher:.3f}, teacher on naive render {naive:.3f}{note}"
    )


def write_report(
    metrics: dict[str, Any], out: str | Path, json_path: str | Path | None = None
) -> tuple[Path, Path]:
    """Write the metrics as JSON (``json_path``, default ``out/metrics.json``) and a bar chart
    ``out/metrics.png``; return both paths."""
    import matplotlib  # heavy (and in the distill extra only): loaded for the chart alone

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = Path(json_path) if json_path is not None else out / "metrics.json"
    png_path = out / "metrics.png"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    names = [m for m in metrics["metrics"] if m != "kl"]
    models = {label: metrics[key] for key, label in MODEL_LABELS.items()}
    fig, (ax, ax_kl) = plt.subplots(
        1, 2, figsize=(8, 4), dpi=100, gridspec_kw={"width_ratios": [len(names), 1]}
    )
    width = 0.8 / len(models)
    for i, (label, values) in enumerate(models.items()):
        offset = (i - (len(models) - 1) / 2) * width
        for axis, shown in ((ax, names), (ax_kl, ["kl"])):
            heights = [values[n] if values[n] is not None else 0.0 for n in shown]
            errors = np.array(
                [
                    [h - ci[0], ci[1] - h] if (ci := values["ci"][n]) is not None else [0.0, 0.0]
                    for n, h in zip(shown, heights, strict=True)
                ]
            ).T
            xs = [j + offset for j in range(len(shown))]
            axis.bar(xs, heights, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("agreement with the teacher on RGB")
    ax_kl.set_xticks([0], ["KL (nats)"])
    ax_kl.set_ylabel("lower is better")
    fig.suptitle(
        f"Student vs baselines ({metrics['task']}; {metrics['samples']} samples, "
        f"{metrics['sources']} sources; 95 % source bootstrap)",
        fontsize=9,
    )
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(png_path)
    plt.close(fig)
    return json_path, png_path


def _trained_on(config: dict[str, Any]) -> list[Any]:
    """The checkpoint's ``--shards`` and ``--val-shards`` that still resolve here."""
    found = []
    for spec in (config.get("shards"), config.get("val_shards")):
        if spec is None:
            continue
        try:
            resolve_shards(spec)
        except (FileNotFoundError, ValueError):
            continue
        found.append(spec)
    return found


def build_parser(prog: str = "python -m distill.evaluate") -> argparse.ArgumentParser:
    """The ``distill evaluate`` options (and ``--config``, :mod:`distill.options`)."""
    p = OneLineParser(
        prog=prog,
        description="Agreement of a RAW student with its RGB teacher on held-out pair shards.",
        formatter_class=HelpFormatter,
    )
    add_config_option(p)
    p.add_argument(
        "--shards", required=True, nargs="+", help="held-out pair shards: folder, glob or URL(s)"
    )
    p.add_argument(
        "--checkpoint", required=True, help="a distill train checkpoint (RUN/last.pt, best.pt)"
    )
    p.add_argument("--out", help="report folder (default: <checkpoint folder>/eval)")
    p.add_argument("--json", help="the full metrics as JSON (default: <out>/metrics.json)")
    p.add_argument("--batch-size", type=int, default=32, help="held-out samples per batch")
    p.add_argument(
        "--crop", type=int, help="RAW centre-crop side, even (default: the training crop)"
    )
    p.add_argument("--max-batches", type=int, help="score at most this many batches (default: all)")
    p.add_argument("--num-workers", type=int, default=0, help="loader worker processes")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    add_trust_argument(p)
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m distill.evaluate") -> int:
    """The command line; returns 0, or 2 with a one-line error on stderr (bad settings are
    refused before anything is loaded)."""
    args = parse_args(build_parser(prog), argv)
    require_extra("matplotlib")  # the report's chart: fail before evaluating, in one line
    shards = args.shards[0] if len(args.shards) == 1 else args.shards
    crop = args.crop
    try:
        out = Path(args.out) if args.out else Path(args.checkpoint).parent / "eval"
        check_output_folder(out)
        for flag, value, low in (
            ("--batch-size", args.batch_size, 1),
            ("--max-batches", args.max_batches, 1),
            ("--num-workers", args.num_workers, 0),
        ):
            if value is not None and value < low:
                raise ValueError(f"{flag} must be >= {low}, got {value}")
        if args.crop == 0:
            raise ValueError("--crop 0 is no crop side: give an even size, or leave --crop out "
                             "to use the training crop")  # fmt: skip
        if args.crop is not None:
            check_crop(args.crop)
        device = resolve_device(args.device)
        student, teacher, config = load_checkpoint(args.checkpoint, device, trusted=args.trust)
        crop = args.crop or config["crop"]
        teacher_size = (config["teacher_size"] or crop) if args.crop is None else crop
        check_memory(
            loader_bytes(
                args.batch_size, crop, teacher_size, workers=args.num_workers, isp_reference=True
            ),
            0,
            what=f"--batch-size {args.batch_size} with --crop {crop}",
        )
        check_class_maps(shards, *_trained_on(config))
        metrics = evaluate(
            student,
            teacher,
            shards,
            batch_size=args.batch_size,
            crop=crop,
            teacher_size=teacher_size,
            student_input=config["student_input"],
            max_batches=args.max_batches,
            num_workers=args.num_workers,
            device=device,
        )
        json_path, png_path = write_report(metrics, out, args.json)
    except (ValueError, FileNotFoundError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"error: the held-out batches at --crop {crop} do not fit in memory: lower --crop "
            "or --max-batches",
            file=sys.stderr,
        )
        return 2
    print(format_table(metrics))
    print(f"wrote {json_path} (every number) and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
