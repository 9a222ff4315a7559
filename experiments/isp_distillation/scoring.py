"""Scoring on the held-out pairs through :mod:`distill.evaluate`; source-bootstrap intervals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .config import ExperimentConfig

if TYPE_CHECKING:
    from distill.evaluate import HeldOut


def load_held_out(
    shards: Path,
    teacher: torch.nn.Module,
    config: ExperimentConfig,
    low_light: tuple[float, float] | None = None,
) -> HeldOut:
    """The held-out pairs as :func:`distill.evaluate.load_heldout` reads them (centre crops, no
    flip; darkened when ``low_light``), with the teacher's logits on the RGB and every baseline."""
    from distill.evaluate import load_heldout

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
    from distill.evaluate import BASELINES, score

    head = {"seed": 0, "step": -1, "condition": condition}
    rows = [{"method": "teacher", **head} | score(held.teacher, held)]
    rows += [{"method": name, **head} | score(held.baselines[name], held) for name in BASELINES]
    return rows


def _seed_mean_values(
    logit_sets: Sequence[Sequence[torch.Tensor]], held: HeldOut
) -> dict[str, np.ndarray]:
    """Per-sample top-1, top-5 and KL against the teacher, averaged over runs (seeds)."""
    from distill.evaluate import per_sample

    runs = [
        [per_sample(lg, ref) for lg, ref in zip(logits, held.teacher, strict=True)]
        for logits in logit_sets
    ]
    return {
        m: np.mean([np.concatenate([p[m] for p in parts]) for parts in runs], axis=0)
        for m in ("top1_agreement", "top5_agreement", "kl")
    }


def source_intervals(
    final: dict[tuple[str, str], list[list[torch.Tensor]]],
    helds: dict[str, HeldOut],
    resamples: int = 2000,
) -> list[dict[str, Any]]:
    """95 % bootstrap intervals over source images (``distill.evaluate.bootstrap_ci``).

    ``final``: (method, condition) → the logits of every seed. Per sample, the metric is
    averaged over seeds; entries hold ``<metric>_ci`` = [low, high] and, for students,
    ``<metric>_vs_<baseline>`` = [mean difference, low, high] against each baseline (paired: the
    same resampled sources).
    """
    from distill.evaluate import BASELINES, bootstrap_ci

    out = []
    for (method, condition), seeds in final.items():
        held = helds[condition]
        sources = held.sources

        ours = _seed_mean_values(seeds, held)
        entry: dict[str, Any] = {"method": method, "condition": condition}
        for metric, v in ours.items():
            entry[f"{metric}_ci"] = list(bootstrap_ci(v, sources, resamples=resamples))
        if method not in BASELINES:
            for base in BASELINES:
                theirs = _seed_mean_values([held.baselines[base]], held)
                for metric in ("top1_agreement", "kl"):
                    diff = ours[metric] - theirs[metric]
                    entry[f"{metric}_vs_{base}"] = [
                        float(diff.mean()),
                        *bootstrap_ci(diff, sources, resamples=resamples),
                    ]
        out.append(entry)
    return out
