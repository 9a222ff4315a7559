"""Summaries over seeds, the Markdown tables and the CSV files."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Every metric a row can carry (classification, then segmentation), in table order.
METRICS = (
    "top1_agreement",
    "top5_agreement",
    "pixel_agreement",
    "miou",
    "person_iou",
    "kl",
    "accuracy",
)
# The metric a task is judged by first (its step-0 value stands beside the last step).
HEADLINE = {"top1_agreement": "top1", "miou": "miou"}


def _headline(entry: dict[str, Any]) -> str:
    return "miou" if "miou" in entry else "top1_agreement"


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, sample standard deviation (0 for one seed), min and max over seeds.

    Groups ``rows`` by (method, condition, step) over the metrics of :data:`METRICS` that the
    rows carry; a metric that is ``None`` everywhere in a group stays ``None``. Output rows keep
    the first-seen group order.
    """
    rows = list(rows)
    present = [m for m in METRICS if any(m in row for row in rows)]
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["condition"], row["step"]), []).append(row)
    out = []
    for (method, condition, step), members in groups.items():
        entry: dict[str, Any] = {
            "method": method,
            "condition": condition,
            "step": step,
            "seeds": len(members),
        }
        for metric in present:
            values = [m[metric] for m in members if m.get(metric) is not None]
            if not values:
                entry.update({metric: None, f"{metric}_std": None})
                continue
            entry[metric] = float(np.mean(values))
            entry[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            entry[f"{metric}_min"] = float(min(values))
            entry[f"{metric}_max"] = float(max(values))
        out.append(entry)
    return out


def _fmt(entry: dict[str, Any], metric: str, percent: bool) -> str:
    value = entry.get(metric)
    if value is None:
        return "–"
    scale = 100.0 if percent else 1.0
    text = f"{value * scale:.1f}" if percent else f"{value:.3f}"
    if entry["seeds"] > 1:
        spread = entry[f"{metric}_std"] * scale
        text += f" ± {spread:.1f}" if percent else f" ± {spread:.3f}"
    return text


def markdown_table(summary: Sequence[dict[str, Any]], labels: dict[str, str]) -> str:
    """The final-step rows of ``summary`` as a Markdown table (agreement and IoU in %, KL in
    nats); a student's headline metric (top-1 or mIoU) and KL at step 0 (``<metric>_step0``,
    ``kl_step0``) stand beside them."""
    dense = bool(summary) and _headline(summary[0]) == "miou"
    if dense:
        columns = [("pixel_agreement", "pixel agreement %"), ("miou", "mIoU % (step 0)"),
                   ("person_iou", "person IoU %"), ("kl", "KL, nats (step 0)")]  # fmt: skip
    else:
        columns = [("top1_agreement", "top-1 agreement % (step 0)"),
                   ("top5_agreement", "top-5 agreement %"), ("kl", "KL, nats (step 0)"),
                   ("accuracy", "label accuracy %")]  # fmt: skip
    head = (
        "| condition | model | seeds | " + " | ".join(title for _, title in columns) + " |\n"
        "|---|---|---|" + "---|" * len(columns) + "\n"
    )

    def start(e: dict[str, Any], metric: str, percent: bool) -> str:
        value = e.get(f"{HEADLINE.get(metric, metric)}_step0")
        if value is None:
            return ""
        return f" ({100 * value:.1f})" if percent else f" ({value:.3f})"

    def cell(e: dict[str, Any], metric: str) -> str:
        percent = metric != "kl"
        return _fmt(e, metric, percent) + start(e, metric, percent)

    lines = [
        f"| {e['condition']} | {labels.get(e['method'], e['method'])} | {e['seeds']} | "
        + " | ".join(cell(e, metric) for metric, _ in columns)
        + " |"
        for e in summary
    ]
    return head + "\n".join(lines) + "\n"


def interval_table(intervals: Sequence[dict[str, Any]], labels: dict[str, str]) -> str:
    """Source-bootstrap intervals (:func:`source_intervals`) as a Markdown table: the headline
    metric (top-1 or mIoU, %) and KL with their 95 % intervals, and each student's difference to
    the naive and gray-world renders (difference [interval])."""
    metric = "miou" if intervals and "miou_ci" in intervals[0] else "top1_agreement"
    name = "mIoU" if metric == "miou" else "top-1"

    def ci(e: dict[str, Any], metric: str, scale: float) -> str:
        bounds = e.get(f"{metric}_ci")
        if bounds is None:
            return "–"
        lo, hi = bounds
        return f"[{scale * lo:.1f}, {scale * hi:.1f}]" if scale > 1 else f"[{lo:.2f}, {hi:.2f}]"

    def diff(e: dict[str, Any], metric: str, base: str, scale: float) -> str:
        value = e.get(f"{metric}_vs_{base}")
        if value is None:
            return "–"
        d, lo, hi = (scale * v for v in value)
        digits = 1 if scale > 1 else 2
        return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"

    head = (
        f"| condition | model | {name} % 95 % CI | KL 95 % CI | Δ {name} vs naive | Δ KL vs naive "
        f"| Δ {name} vs gray-world | Δ KL vs gray-world |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {e['condition']} | {labels.get(e['method'], e['method'])} "
        f"| {ci(e, metric, 100)} | {ci(e, 'kl', 1)} "
        f"| {diff(e, metric, 'naive_teacher', 100)} "
        f"| {diff(e, 'kl', 'naive_teacher', 1)} "
        f"| {diff(e, metric, 'grayworld_teacher', 100)} "
        f"| {diff(e, 'kl', 'grayworld_teacher', 1)} |"
        for e in intervals
    ]
    return head + "\n".join(lines) + "\n"


def final_rows(summary: Sequence[dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    """Reference rows (step −1) and every student's last step, clean condition first; a
    student's entry gets its step-0 headline metric and KL on the same condition
    (``top1_step0`` or ``miou_step0``, ``kl_step0``) when it was scored there."""
    start = {(e["method"], e["condition"]): e for e in summary if e["step"] == 0}
    chosen = []
    for e in summary:
        if e["step"] not in (-1, steps):
            continue
        first = start.get((e["method"], e["condition"]))
        if first is not None:
            metric = _headline(first)
            e = {**e, f"{HEADLINE[metric]}_step0": first[metric], "kl_step0": first["kl"]}
        chosen.append(e)
    return sorted(chosen, key=lambda e: e["condition"] != "clean")


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
