"""The figures: curves over steps, final agreement bars, held-out examples (top-3 classes, or
segmentation masks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from distill.heldout import HeldOut


_TITLES = {
    "top1_agreement": "top-1 agreement with teacher on RGB (%)",
    "miou": "mIoU against the teacher on RGB (%)",
}


def plot_curves(
    summary: Sequence[dict[str, Any]],
    labels: dict[str, str],
    path: Path,
    metric: str = "top1_agreement",
) -> None:
    """``metric`` (top-1 agreement or mIoU) and KL against training steps, mean ± std over
    seeds, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    students = [e for e in summary if e["step"] >= 0]
    methods = list(dict.fromkeys(e["method"] for e in students))
    for method in methods:
        condition = next(e["condition"] for e in students if e["method"] == method)
        points = sorted(
            (e for e in students if e["method"] == method and e["condition"] == condition),
            key=lambda e: e["step"],
        )
        steps = [e["step"] for e in points]
        for ax, shown, scale in ((axes[0], metric, 100), (axes[1], "kl", 1)):
            mean = np.array([e[shown] for e in points]) * scale
            std = np.array([e[f"{shown}_std"] for e in points]) * scale
            (line,) = ax.plot(steps, mean, marker="o", label=f"{labels[method]} [{condition}]")
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    colours = {"naive_teacher": "k", "grayworld_teacher": "tab:gray", "isp_teacher": "tab:olive"}
    for e in summary:
        if e["method"] in colours and e["step"] == -1:
            style = "--" if e["condition"] == "clean" else ":"
            label = f"{labels[e['method']]} [{e['condition']}]"
            colour = colours[e["method"]]
            axes[0].axhline(100 * e[metric], color=colour, ls=style, lw=1, label=label)
            axes[1].axhline(e["kl"], color=colour, ls=style, lw=1, label=label)
    axes[0].set_ylabel(_TITLES[metric])
    axes[1].set_ylabel("KL(teacher ‖ model), nats")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 100)
    axes[1].set_yscale("log")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def plot_bars(
    final: Sequence[dict[str, Any]],
    labels: dict[str, str],
    path: Path,
    metrics: Sequence[str] = ("top1_agreement", "top5_agreement"),
) -> None:
    """Final ``metrics`` (fractions: agreement, IoU) per model and condition, with the std over
    seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in final if e["method"] != "teacher"]
    names = [f"{labels.get(e['method'], e['method'])}\n[{e['condition']}]" for e in rows]
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    x = np.arange(len(rows))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        offset = (i - (len(metrics) - 1) / 2) * width
        values = [100 * (e.get(metric) or 0.0) for e in rows]
        errors = [100 * (e.get(f"{metric}_std") or 0.0) for e in rows]
        ax.bar(x + offset, values, width, yerr=errors, capsize=3, label=metric.replace("_", " "))
    ax.set_xticks(x, names, fontsize=7, rotation=20, ha="right")
    ax.set_ylabel("% (held-out pairs)")
    ax.set_ylim(0, 100)
    ax.set_title("Agreement with the teacher on RGB (held-out pairs)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _top3(logits: torch.Tensor, names: Sequence[str]) -> str:
    probs = F.softmax(logits.float(), 0)
    top = probs.topk(3)
    return "\n".join(
        f"{names[i][:22]} {p:.0%}"
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    )


def plot_examples(held: HeldOut, student: torch.nn.Module, count: int, path: Path) -> None:
    """Held-out pairs: the RGB with the teacher's top-3, the naive RAW render with the no-ISP
    teacher's top-3, and the student's top-3 on the RAW (evenly spaced samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from distill.frontend import naive_render
    from distill.models import imagenet_class_names

    names = imagenet_class_names()
    raw, wb, rgb = torch.cat(held.raw), torch.cat(held.wb), torch.cat(held.rgb).float() / 255
    teacher, naive = torch.cat(held.teacher), torch.cat(held.baselines["naive_teacher"])
    picks = np.linspace(0, len(held.keys) - 1, min(count, len(held.keys))).round().astype(int)
    with torch.no_grad():
        student_logits = student.eval()(raw[picks], wb[picks]).cpu()
        renders = naive_render(raw[picks]).cpu()
    # 72 dpi keeps the figure of four photo pairs under 300 KB.
    fig, axes = plt.subplots(2, len(picks), figsize=(2.3 * len(picks), 5.8), dpi=72, squeeze=False)
    for col, i in enumerate(picks):
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(rgb[i].permute(1, 2, 0).numpy())
        top.set_title(f"RGB · teacher:\n{_top3(teacher[i], names)}", fontsize=7, loc="left")
        bottom.imshow(renders[col].permute(1, 2, 0).numpy())
        bottom.set_title(
            f"naive RAW render · teacher:\n{_top3(naive[i], names)}", fontsize=7, loc="left"
        )
        bottom.set_xlabel(
            f"RAW · student (KD):\n{_top3(student_logits[col], names)}", fontsize=7, loc="left"
        )
        top.set_ylabel(held.keys[i][:28], fontsize=6)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _overlay(image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """sRGB image 3×H×W in [0, 1] with the pixels of ``mask`` (H×W, bool) tinted red, H×W×3."""
    out = image.permute(1, 2, 0).clamp(0, 1).numpy().copy()
    tint = np.array([1.0, 0.1, 0.1])
    m = mask.numpy()
    out[m] = 0.45 * out[m] + 0.55 * tint
    return out


def _foreground(logits: torch.Tensor, size: int, person: int | None) -> torch.Tensor:
    """The pixels predicted as ``person`` (or as anything but class 0) at ``size``², bool H×W."""
    if logits.shape[-1] != size:
        logits = F.interpolate(logits[None].float(), size=(size, size), mode="bilinear")[0]
    labels = logits.argmax(0)
    return labels == person if person is not None else labels != 0


def plot_masks(held: HeldOut, student: torch.nn.Module, count: int, path: Path) -> None:
    """Held-out pairs, one row each: the RGB with the teacher's mask, the naive RAW render with
    the teacher's mask on it, and the student's mask on the RAW (drawn over the naive render);
    the mask is the person class (or every class but 0), tinted red. One sample per source
    first, evenly spaced."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from distill.frontend import naive_render
    from distill.metrics import iou_per_class

    raw, wb, rgb = torch.cat(held.raw), torch.cat(held.wb), torch.cat(held.rgb).float() / 255
    teacher, naive = torch.cat(held.teacher), torch.cat(held.baselines["naive_teacher"])
    sources = held.sources
    firsts = [i for i, s in enumerate(sources) if s not in sources[:i]]
    spaced = np.linspace(0, len(firsts) - 1, min(count, len(firsts))).round().astype(int)
    picks = [firsts[j] for j in spaced]
    with torch.no_grad():
        student_logits = student.eval()(raw[picks], wb[picks]).cpu()
        renders = naive_render(raw[picks]).cpu()
    size = held.crop

    def iou(model: torch.Tensor, reference: torch.Tensor) -> str:
        a, b = _foreground(model, size, held.person), _foreground(reference, size, held.person)
        value = iou_per_class(np.array([(a & b).sum()]), np.array([a.sum()]), np.array([b.sum()]))[
            0
        ]
        return "–" if np.isnan(value) else f"{value:.2f}"

    fig, axes = plt.subplots(len(picks), 3, figsize=(7.2, 2.5 * len(picks)), dpi=72,
                             squeeze=False)  # fmt: skip
    for row, i in enumerate(picks):
        t = teacher[i].cpu()
        shown = (
            (_overlay(rgb[i], _foreground(t, rgb.shape[-1], held.person)), "RGB · teacher"),
            (
                _overlay(renders[row], _foreground(naive[i].cpu(), size, held.person)),
                f"naive RAW render · teacher (IoU {iou(naive[i].cpu(), t)})",
            ),
            (
                _overlay(renders[row], _foreground(student_logits[row], size, held.person)),
                f"RAW · student KD (IoU {iou(student_logits[row], t)})",
            ),
        )
        for col, (image, title) in enumerate(shown):
            ax = axes[row, col]
            ax.imshow(image)
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(held.keys[i][:28], fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
