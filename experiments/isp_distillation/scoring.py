"""Scoring on the held-out pairs through :mod:`distill.evaluate`; source-bootstrap intervals."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .config import ExperimentConfig

if TYPE_CHECKING:
    from distill.heldout import HeldOut


def load_held_out(
    shards: Path,
    teacher: torch.nn.Module,
    config: ExperimentConfig,
    low_light: tuple[float, float] | None = None,
) -> HeldOut:
    """The held-out pairs as :func:`distill.heldout.load_heldout` reads them (centre crops, no
    flip; darkened when ``low_light``), with the teacher's logits on the RGB and every baseline."""
    from distill.heldout import load_heldout

    return load_heldout(
        shards,
        teacher,  # type: ignore[arg-type]
        crop=config.crop,
        batch_size=config.eval_batch,
        low_light=low_light,
        keep_rgb=True,
        device=config.device,
    )


def reference_rows(condition: str, held: HeldOut) -> list[dict[str, Any]]:
    """Rows of the teacher on RGB (100 % by definition) and of every baseline on ``held``."""
    from distill.heldout import BASELINES, score

    head = {"seed": 0, "step": -1, "condition": condition}
    rows = [{"method": "teacher", **head} | score(held.teacher, held)]
    rows += [{"method": name, **head} | score(held.baselines[name], held) for name in BASELINES]
    return rows


def source_intervals(
    final: dict[tuple[str, str], list[list[torch.Tensor]]],
    helds: dict[str, HeldOut],
    resamples: int = 2000,
) -> list[dict[str, Any]]:
    """95 % bootstrap intervals over source images (:mod:`distill.metrics`).

    ``final``: (method, condition) → the logits of every seed. Per sample, the metric is
    averaged over seeds (for mIoU: the pixel counts); entries hold ``<metric>_ci`` = [low, high]
    and, for students, ``<metric>_vs_<baseline>`` = [difference, low, high] against each baseline
    (paired: the same resampled sources) for the task's headline metrics.
    """
    from distill.heldout import BASELINES
    from distill.metrics import METRICS, intervals, paired_intervals

    out = []
    for (method, condition), seeds in final.items():
        held = helds[condition]
        sources = held.sources
        runs = [held.values(logits) for logits in seeds]
        ours = runs[0].mean_over(runs[1:])
        entry: dict[str, Any] = {"method": method, "condition": condition}
        for metric, ci in intervals(ours, sources, resamples=resamples).items():
            entry[f"{metric}_ci"] = list(ci) if ci is not None else None
        if method not in BASELINES:
            headline = [m for m in METRICS[held.task] if m not in ("top5_agreement",)]
            for base in BASELINES:
                theirs = held.values(held.baselines[base])
                paired = paired_intervals(ours, theirs, sources, resamples=resamples)
                for metric in headline:
                    entry[f"{metric}_vs_{base}"] = paired[metric]
        out.append(entry)
    return out
