"""The paper's comparison, end to end: build RAW–RGB pairs, train RAW students, score them.

``python -m experiments.isp_distillation --preset cpu --out experiments/results`` reproduces the
comparison of *ISP Distillation* (Schwartz, Bronstein, Giryes, arXiv 2101.10203) at CPU scale:

1. **Data.** Training and evaluation pairs come from *different* source images (never the same
   photo on both sides). Default sources: the real photos scikit-image ships and the camera RAW
   files in ``../shared/data/raw`` (skipped with a note when absent); ``--train-src`` /
   ``--val-src`` take any folders of photos or RAW files instead (ImageNet-style class folders
   with ``--labels``). Pairs are built by :func:`rawpairs.build.build`: photos get a simulated RAW
   (inverse ISP), RAW files an RGB from our forward ISP.
2. **Models.** Teacher: the offline EfficientNet-Lite0 on sRGB. Students (``METHODS``): label-free
   KD (the paper's method), cross-entropy on the teacher's hard top-1 labels, KD from a
   randomly initialised student, KD on darkened noisier RAW (low light), and cross-entropy on true
   labels when the data has them.
3. **Scores** on the held-out pairs, against the teacher on the aligned RGB: top-1 / top-5
   agreement and mean KL(teacher ‖ model) in nats (:class:`distill.evaluate.Scores`), also for the
   teacher on a naive render of the RAW ("no ISP", :func:`distill.evaluate.naive_render`).
   Students are scored at several steps (training resumes exactly between them), over seeds.

Outputs: ``<out>/results.json`` (configuration, every score, summary, timings),
``<out>/summary.csv`` (the final table), ``<out>/curves.csv`` (scores per step) and three figures
in ``--figures``; the Markdown table is printed. Shards and checkpoints go to ``--work`` (a
temporary folder unless given).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from distill.evaluate import HeldOut

__all__ = [
    "ABLATIONS",
    "METHODS",
    "PRESETS",
    "REFERENCE_LABELS",
    "ExperimentConfig",
    "Method",
    "interval_table",
    "load_held_out",
    "main",
    "markdown_table",
    "reference_rows",
    "run",
    "source_intervals",
    "summarize",
]

# Held-out split of the bundled sources: no photo (and no scene: the two motorcycle views) is on
# both sides. skimage.data.cat is the chelsea photo, so it is not used.
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "retina", "immunohistochemistry")
VAL_PHOTOS = ("chelsea", "hubble_deep_field", "stereo_motorcycle")
VAL_RAWS = (
    "Canon-PowerShot_S40-CRW_0104.CRW",
    "Kodak-DC50-DC50IMG-DC0010S.KDC",
    "Kodak-DC120-DC120IMG-P003912.KDC",
)
# Settings were chosen on a split of the training sources only ("tune"): these are its held-back
# part, the rest of the training sources are trained on.
TUNE_PHOTOS = ("coffee",)
TUNE_RAWS = ("Kodak-DC50-DC50IMG-DC0008L.KDC", "Canon-EOS550D-colorchart.dng")
SPLITS = ("heldout", "tune")
RAW_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw"
RAW_EXTENSIONS = (".crw", ".kdc", ".dng", ".cr2", ".nef", ".arw")


@dataclass(frozen=True)
class Method:
    """A student training recipe: ``TrainConfig`` overrides and the RAW condition it targets."""

    name: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    low_light: bool = False  # trained (and scored along the way) on darkened RAW
    needs_labels: bool = False
    ablation: bool = False  # one change from "kd"; trained with ``ablation_seeds``


METHODS: tuple[Method, ...] = (
    Method("kd", "student, KD (paper, label-free)"),
    Method("hard", "student, CE on teacher top-1", {"objective": "hard-labels"}),
    Method("kd_scratch", "student from scratch, KD", {"student_init": "scratch"}),
    Method("kd_low_light", "student, KD on low-light RAW", low_light=True),
    Method(
        "supervised", "student, CE on true labels", {"objective": "supervised"}, needs_labels=True
    ),
    # Ablations: each changes one part of the "kd" recipe (docs/results.md).
    Method("kd_wb_none", "KD, no white balance in the front-end", {"raw_wb": "none"},
           ablation=True),
    Method("kd_wb_grayworld", "KD, gray-world white balance", {"raw_wb": "grayworld"},
           ablation=True),
    Method("kd_fixed_colour", "KD, front-end colour and tone not learnt",
           {"learn_colour": False, "learn_tone": False}, ablation=True),
    Method("kd_old_recipe", "KD, previous recipe (lr 5e-4 everywhere, dropout, no freezing)",
           {"lr": 5e-4, "frontend_lr": 5e-4, "dropout": True, "freeze_backbone_steps": 0},
           ablation=True),
    Method("kd_t1", "KD at temperature 1 (the scoring temperature)", {"temperature": 1.0},
           ablation=True),
)  # fmt: skip
ABLATIONS = tuple(m.name for m in METHODS if m.ablation)
REFERENCE_LABELS = {
    "teacher": "teacher on RGB (reference)",
    "naive_teacher": "teacher on naive RAW render (no ISP)",
    "grayworld_teacher": "teacher on naive render + gray-world WB",
    "isp_teacher": "teacher on full forward ISP (upper reference)",
}


@dataclass
class ExperimentConfig:
    """Sizes in pixels; ``steps`` per student; every student is scored at ``eval_points`` steps."""

    preset: str
    out: str = "experiments/results"
    figures: str = "docs/figures"
    work: str | None = None
    train_src: str | None = None
    val_src: str | None = None
    labels: bool = False
    raw_dir: str | None = str(RAW_DIR)
    split: str = "heldout"
    reuse_shards: bool = False  # use the pairs a previous run left in --work
    build_crop: int = 112
    crop: int = 96
    max_side: int = 384
    train_crops: int = 24
    val_crops: int = 8
    steps: int = 160
    eval_points: int = 4
    batch_size: int = 12
    lr: float = 5e-5  # backbone; docs/results.md (recipe search on a training-side split)
    frontend_lr: float = 2e-2
    freeze_backbone_steps: int = 0
    temperature: float = 4.0
    low_light: tuple[float, float] = (4.0, 16.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    ablation_seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = ("kd", "hard", "kd_scratch", "kd_low_light")
    device: str = "cpu"
    workers: int = 2
    eval_batch: int = 32
    examples: int = 4

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if (self.train_src is None) != (self.val_src is None):
            raise ValueError("--train-src and --val-src go together")
        if self.reuse_shards and self.work is None:
            raise ValueError("--reuse-shards needs --work (the folder of the previous run)")
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}: expected one of {SPLITS}")
        if self.crop % 2 or self.build_crop % 2 or self.crop > self.build_crop - 2:
            # 2 spare pixels let every CFA phase be re-phased to RGGB without padding.
            raise ValueError(
                f"crop {self.crop} and build crop {self.build_crop} must be even, "
                "crop <= build crop - 2"
            )
        if self.steps < 1 or not 1 <= self.eval_points <= self.steps:
            raise ValueError(f"need 1 <= eval_points ({self.eval_points}) <= steps ({self.steps})")
        if not self.seeds:
            raise ValueError("at least one seed")
        known = {m.name for m in METHODS}
        unknown = [m for m in self.methods if m not in known]
        if unknown:
            raise ValueError(f"unknown methods {unknown}: expected some of {sorted(known)}")
        if "supervised" in self.methods and not self.labels:
            raise ValueError("method 'supervised' needs labelled data (--labels)")
        lo, hi = self.low_light
        if not 1 <= lo <= hi:
            raise ValueError(f"low_light factors must satisfy 1 <= min <= max, got {lo, hi}")

    @property
    def checkpoints(self) -> list[int]:
        """Steps at which students are scored: 0 and ``eval_points`` evenly spaced steps."""
        return [
            0,
            *(round(self.steps * (i + 1) / self.eval_points) for i in range(self.eval_points)),
        ]


PRESETS: dict[str, dict[str, Any]] = {
    # Seconds; for tests and development.
    "tiny": {
        "raw_dir": None,
        "build_crop": 68,
        "crop": 64,
        "max_side": 128,
        "train_crops": 2,
        "val_crops": 2,
        "steps": 1,
        "eval_points": 1,
        "batch_size": 2,
        "seeds": (0,),
        "eval_batch": 8,
        "examples": 2,
        "workers": 1,
    },
    # ≤ 30 minutes on 2 CPU cores (docs/results.md).
    "cpu": {},
    # A GPU and an ImageNet-style tree: --train-src/--val-src (+ --labels), --device cuda.
    "gpu": {
        "build_crop": 256,
        "crop": 224,
        "max_side": 384,
        "train_crops": 1,
        "val_crops": 1,
        "steps": 20000,
        "eval_points": 10,
        "batch_size": 128,
        "seeds": (0, 1, 2),
        "device": "cuda",
        "workers": 8,
        "eval_batch": 256,
    },
}


def make_config(preset: str, **overrides: Any) -> ExperimentConfig:
    """A preset's configuration with ``overrides`` (``None`` values are ignored), validated."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {sorted(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    config = ExperimentConfig(preset=preset, **values)
    config.validate()
    return config


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def _write_photo(path: Path, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), cv2.cvtColor(rgb[..., :3], cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write PNG")


def bundled_sources(folder: Path, raw_dir: Path | None, split: str = "heldout") -> list[str]:
    """Write a split of the bundled sources to ``folder/{train,val}``; return notes.

    ``split="heldout"``: training sources → ``train``, held-out sources → ``val``. ``"tune"``:
    the training sources only, ``TUNE_PHOTOS``/``TUNE_RAWS`` → ``val``, the rest → ``train`` (for
    choosing settings without looking at the held-out sources). Photos are written as PNG; RAW
    files are linked. The motorcycle views are one scene and stay together (held out).
    """
    import skimage.data

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    notes = []
    for part in ("train", "val"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    if split == "tune":
        photos = (
            ("train", tuple(p for p in TRAIN_PHOTOS if p not in TUNE_PHOTOS)),
            ("val", TUNE_PHOTOS),
        )
    else:
        photos = (("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS))
    for part, names in photos:
        for name in names:
            image = getattr(skimage.data, name)()
            if name == "stereo_motorcycle":
                _write_photo(folder / part / "motorcycle_left.png", image[0])
                _write_photo(folder / part / "motorcycle_right.png", image[1])
            else:
                _write_photo(folder / part / f"{name}.png", image)
    if raw_dir is not None:
        raws = (
            sorted(p for p in raw_dir.iterdir() if p.suffix.lower() in RAW_EXTENSIONS)
            if raw_dir.is_dir()
            else []
        )
        if raws:
            for path in raws:
                if split == "tune":
                    if path.name in VAL_RAWS:
                        continue
                    part = "val" if path.name in TUNE_RAWS else "train"
                else:
                    part = "val" if path.name in VAL_RAWS else "train"
                link = folder / part / path.name
                if not link.exists():
                    link.symlink_to(path)
        else:
            notes.append(f"no RAW files at {raw_dir}: photos only")
    else:
        notes.append("RAW files not used (preset)")
    return notes


def _existing_shards(folder: Path) -> dict[str, Any]:
    """The shards a previous run left in ``folder`` (``--reuse-shards``): their count."""
    shards = sorted(folder.glob("*.tar"))
    if not shards:
        raise ValueError(f"{folder}: no shards to reuse (run once without --reuse-shards)")
    return {"shards": len(shards)}


def build_shards(src: Path, out: Path, config: ExperimentConfig, crops: int) -> dict[str, Any]:
    """Pair shards of ``src`` (random ``build_crop`` crops, seed 0); returns the build counts."""
    from rawpairs.build import build
    from rawpairs.sample import BuildConfig

    build_config = BuildConfig(
        seed=0,
        crop=config.build_crop,
        crops=crops,
        max_side=config.max_side,
        labels=config.labels,
    )
    result = build(
        src,
        out,
        build_config,
        workers=config.workers,
        samples_per_shard=64,
        overwrite=True,
        warn=lambda line: print(f"  build warning: {line}", flush=True),
    )
    if result.samples == 0:
        raise ValueError(f"{src}: no pairs were built")
    return {"sources": result.sources, "samples": result.samples, "errors": result.errors}


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Training with scoring at checkpoints
# ---------------------------------------------------------------------------------------------
def _train_config(config: ExperimentConfig, method: Method, seed: int, shards: Path, out: Path):
    """The method's ``TrainConfig``: the experiment's settings, then the method's overrides."""
    from distill.train import TrainConfig

    settings: dict[str, Any] = dict(
        shards=str(shards),
        out=str(out),
        steps=config.steps,
        batch_size=config.batch_size,
        crop=config.crop,
        temperature=config.temperature,
        lr=config.lr,
        frontend_lr=config.frontend_lr,
        freeze_backbone_steps=config.freeze_backbone_steps,
        warmup_steps=max(1, config.steps // 10),
        seed=seed,
        device=config.device,
        num_workers=0 if config.device == "cpu" else config.workers,
        low_light=config.low_light if method.low_light else None,
        log_every=max(1, config.steps // 20),
        checkpoint_every=0,
        resume="auto",
        progress=False,
    )
    return TrainConfig(**(settings | method.overrides))


def train_and_score(
    config: ExperimentConfig,
    method: Method,
    seed: int,
    shards: Path,
    run_dir: Path,
    helds: dict[str, HeldOut],
) -> tuple[list[dict[str, Any]], dict[str, list[torch.Tensor]], torch.nn.Module]:
    """Train one student, scoring it at ``config.checkpoints``; returns (rows, the final logits
    per condition, the final student).

    Training runs in segments (``stop_after``) that resume exactly from the last checkpoint, so
    the scored students are those of one uninterrupted run. At intermediate steps the student is
    scored on its own condition; at the last step on every condition in ``helds``. Scores come
    from :mod:`distill.evaluate` (:func:`~distill.evaluate.student_logits`,
    :func:`~distill.evaluate.score`).
    """
    from distill.checkpoint import load_checkpoint
    from distill.evaluate import score, student_logits
    from distill.models import build_student, load_teacher
    from distill.train import train

    if run_dir.exists():
        shutil.rmtree(run_dir)
    train_config = _train_config(config, method, seed, shards, run_dir)
    own = "low_light" if method.low_light else "clean"
    rows = []
    final: dict[str, list[torch.Tensor]] = {}

    def record(step: int, condition: str, student: torch.nn.Module) -> None:
        logits = student_logits(student, helds[condition])  # type: ignore[arg-type]
        row = {"method": method.name, "seed": seed, "step": step, "condition": condition}
        rows.append({**row, **score(logits, helds[condition])})
        if step == config.steps:
            final[condition] = logits

    torch.manual_seed(seed)  # the scratch student's initialisation at step 0, as train draws it
    teacher = load_teacher(train_config.teacher)
    student = build_student(
        teacher,
        train_config.student,
        init=train_config.student_init,
        wb=train_config.raw_wb,
        learn_colour=train_config.learn_colour,
        learn_tone=train_config.learn_tone,
    )
    record(0, own, student.to(config.device))
    for step in config.checkpoints[1:]:
        train(dataclasses.replace(train_config, stop_after=step))
        student, _, _ = load_checkpoint(run_dir / "last.pt", config.device)
        conditions = helds if step == config.steps else [own]
        for condition in conditions:
            record(step, condition, student)
    return rows, final, student


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
METRICS = ("top1_agreement", "top5_agreement", "kl", "accuracy")


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, sample standard deviation (0 for one seed), min and max over seeds.

    Groups ``rows`` by (method, condition, step); a metric that is ``None`` everywhere in a group
    stays ``None``. Output rows keep the first-seen group order.
    """
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
        for metric in METRICS:
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
    """The final-step rows of ``summary`` as a Markdown table (agreement in %, KL in nats);
    a student's top-1 and KL at step 0 (``top1_step0``, ``kl_step0``) stand beside them."""
    head = (
        "| condition | model | seeds | top-1 agreement % (step 0) | top-5 agreement % "
        "| KL, nats (step 0) | label accuracy % |\n|---|---|---|---|---|---|---|\n"
    )

    def start(e: dict[str, Any], metric: str, percent: bool) -> str:
        value = e.get(f"{metric}_step0")
        if value is None:
            return ""
        return f" ({100 * value:.1f})" if percent else f" ({value:.3f})"

    lines = [
        f"| {e['condition']} | {labels.get(e['method'], e['method'])} | {e['seeds']} "
        f"| {_fmt(e, 'top1_agreement', True)}{start(e, 'top1', True)} "
        f"| {_fmt(e, 'top5_agreement', True)} "
        f"| {_fmt(e, 'kl', False)}{start(e, 'kl', False)} | {_fmt(e, 'accuracy', True)} |"
        for e in summary
    ]
    return head + "\n".join(lines) + "\n"


def interval_table(intervals: Sequence[dict[str, Any]], labels: dict[str, str]) -> str:
    """Source-bootstrap intervals (:func:`source_intervals`) as a Markdown table: top-1 (%) and
    KL with their 95 % intervals, and each student's difference to the naive and gray-world
    renders (difference [interval])."""

    def ci(e: dict[str, Any], metric: str, scale: float) -> str:
        lo, hi = e[f"{metric}_ci"]
        return f"[{scale * lo:.1f}, {scale * hi:.1f}]" if scale > 1 else f"[{lo:.2f}, {hi:.2f}]"

    def diff(e: dict[str, Any], metric: str, base: str, scale: float) -> str:
        value = e.get(f"{metric}_vs_{base}")
        if value is None:
            return "–"
        d, lo, hi = (scale * v for v in value)
        digits = 1 if scale > 1 else 2
        return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"

    head = (
        "| condition | model | top-1 % 95 % CI | KL 95 % CI | Δ top-1 vs naive | Δ KL vs naive "
        "| Δ top-1 vs gray-world | Δ KL vs gray-world |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {e['condition']} | {labels.get(e['method'], e['method'])} "
        f"| {ci(e, 'top1_agreement', 100)} | {ci(e, 'kl', 1)} "
        f"| {diff(e, 'top1_agreement', 'naive_teacher', 100)} "
        f"| {diff(e, 'kl', 'naive_teacher', 1)} "
        f"| {diff(e, 'top1_agreement', 'grayworld_teacher', 100)} "
        f"| {diff(e, 'kl', 'grayworld_teacher', 1)} |"
        for e in intervals
    ]
    return head + "\n".join(lines) + "\n"


def final_rows(summary: Sequence[dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    """Reference rows (step −1) and every student's last step, clean condition first; a
    student's entry gets its step-0 top-1 and KL on the same condition (``top1_step0``,
    ``kl_step0``) when it was scored there."""
    start = {(e["method"], e["condition"]): e for e in summary if e["step"] == 0}
    chosen = []
    for e in summary:
        if e["step"] not in (-1, steps):
            continue
        first = start.get((e["method"], e["condition"]))
        if first is not None:
            e = {**e, "top1_step0": first["top1_agreement"], "kl_step0": first["kl"]}
        chosen.append(e)
    return sorted(chosen, key=lambda e: e["condition"] != "clean")


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def plot_curves(summary: Sequence[dict[str, Any]], labels: dict[str, str], path: Path) -> None:
    """Top-1 agreement and KL against training steps, mean ± std over seeds, per method."""
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
        for ax, metric, scale in ((axes[0], "top1_agreement", 100), (axes[1], "kl", 1)):
            mean = np.array([e[metric] for e in points]) * scale
            std = np.array([e[f"{metric}_std"] for e in points]) * scale
            (line,) = ax.plot(steps, mean, marker="o", label=f"{labels[method]} [{condition}]")
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    colours = {"naive_teacher": "k", "grayworld_teacher": "tab:gray", "isp_teacher": "tab:olive"}
    for e in summary:
        if e["method"] in colours and e["step"] == -1:
            style = "--" if e["condition"] == "clean" else ":"
            label = f"{labels[e['method']]} [{e['condition']}]"
            colour = colours[e["method"]]
            axes[0].axhline(100 * e["top1_agreement"], color=colour, ls=style, lw=1, label=label)
            axes[1].axhline(e["kl"], color=colour, ls=style, lw=1, label=label)
    axes[0].set_ylabel("top-1 agreement with teacher on RGB (%)")
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


def plot_bars(final: Sequence[dict[str, Any]], labels: dict[str, str], path: Path) -> None:
    """Final top-1 / top-5 agreement per model and condition, with the std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in final if e["method"] != "teacher"]
    names = [f"{labels.get(e['method'], e['method'])}\n[{e['condition']}]" for e in rows]
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    x = np.arange(len(rows))
    for offset, metric in ((-0.2, "top1_agreement"), (0.2, "top5_agreement")):
        values = [100 * e[metric] for e in rows]
        errors = [100 * e[f"{metric}_std"] for e in rows]
        ax.bar(x + offset, values, 0.4, yerr=errors, capsize=3, label=metric.replace("_", " "))
    ax.set_xticks(x, names, fontsize=7, rotation=20, ha="right")
    ax.set_ylabel("% of held-out pairs")
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

    from distill.evaluate import naive_render
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


# ---------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------
def _log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def run(config: ExperimentConfig) -> dict[str, Any]:
    """Run the whole comparison; write tables and figures; return the ``results.json`` content."""
    from distill.models import load_teacher

    config.validate()
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    out, figures = Path(config.out), Path(config.figures)
    out.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    temporary = tempfile.TemporaryDirectory(prefix="isp_distillation_") if not config.work else None
    work = Path(config.work or temporary.name)  # type: ignore[union-attr]
    notes: list[str] = []
    timings: dict[str, float] = {}
    try:
        if config.train_src is not None:
            train_src, val_src = Path(config.train_src), Path(config.val_src or "")
        else:
            raw_dir = Path(config.raw_dir) if config.raw_dir else None
            notes += bundled_sources(work / "src", raw_dir, config.split)
            train_src, val_src = work / "src" / "train", work / "src" / "val"
            if not config.labels:
                notes.append("the bundled data has no class labels: no true-label baseline")
        t0 = time.perf_counter()
        if config.reuse_shards:
            data = {part: _existing_shards(work / "shards" / part) for part in ("train", "val")}
            notes.append(f"pairs reused from {work / 'shards'} (not rebuilt)")
        else:
            data = {
                "train": build_shards(
                    train_src, work / "shards" / "train", config, config.train_crops
                ),
                "val": build_shards(val_src, work / "shards" / "val", config, config.val_crops),
            }
        timings["build"] = time.perf_counter() - t0
        _log(started, f"built pairs {data} in {timings['build']:.1f} s")

        t0 = time.perf_counter()
        teacher = load_teacher().to(config.device)
        helds = {
            condition: load_held_out(work / "shards" / "val", teacher, config, low_light)
            for condition, low_light in (("clean", None), ("low_light", config.low_light))
        }
        rows: list[dict[str, Any]] = []
        for condition, held in helds.items():
            rows += reference_rows(condition, held)
        timings["reference"] = time.perf_counter() - t0
        _log(started, f"teacher and baselines scored in {timings['reference']:.1f} s")

        methods = {m.name: m for m in METHODS}
        example_student = None
        final_logits: dict[tuple[str, str], list[list[torch.Tensor]]] = {}
        for name in config.methods:
            t0 = time.perf_counter()
            seeds = config.ablation_seeds if methods[name].ablation else config.seeds
            for seed in seeds:
                run_dir = work / "runs" / f"{name}-seed{seed}"
                shards = work / "shards" / "train"
                new_rows, logits, student = train_and_score(
                    config, methods[name], seed, shards, run_dir, helds
                )
                rows += new_rows
                for condition, values in logits.items():
                    final_logits.setdefault((name, condition), []).append(values)
                if name == "kd" and example_student is None:
                    example_student = student
                last = new_rows[-len(helds) if not methods[name].low_light else -1]
                _log(
                    started,
                    f"{name} seed {seed}: top-1 {last['top1_agreement']:.1%}, "
                    f"KL {last['kl']:.3f} ({last['condition']})",
                )
            timings[name] = time.perf_counter() - t0
            _log(started, f"{name}: {len(seeds)} seeds in {timings[name]:.1f} s")

        summary = summarize(rows)
        labels = {m.name: m.label for m in METHODS} | REFERENCE_LABELS
        final = final_rows(summary, config.steps)
        for condition, held in helds.items():
            for base in held.baselines:
                final_logits[(base, condition)] = [held.baselines[base]]
        intervals = source_intervals(final_logits, helds)
        t0 = time.perf_counter()
        plot_curves(summary, labels, figures / "isp_distillation_curves.png")
        plot_bars(final, labels, figures / "isp_distillation_bars.png")
        if example_student is not None:
            plot_examples(
                helds["clean"], example_student, config.examples,
                figures / "isp_distillation_examples.png",
            )  # fmt: skip
        timings["figures"] = time.perf_counter() - t0
    finally:
        if temporary is not None:
            temporary.cleanup()
    timings["total"] = time.perf_counter() - started
    results = {
        "config": dataclasses.asdict(config),
        "data": data,
        "val_samples": helds["clean"].samples,
        "val_sources": len(set(helds["clean"].sources)),
        "notes": notes,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0],
            "torch": torch.__version__,
        },
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "final": final,
        "intervals": intervals,
        "summary": summary,
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    _write_csv(out / "summary.csv", final)
    _write_csv(out / "curves.csv", [e for e in summary if e["step"] >= 0])
    _write_csv(out / "intervals.csv", intervals)
    print(markdown_table(final, labels))
    print(interval_table(intervals, labels))
    _log(started, f"done: {json.dumps(results['timings_s'])}; notes: {notes}")
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.isp_distillation",
        description="ISP distillation vs baselines on held-out RAW–RGB pairs (docs/results.md).",
    )
    add = p.add_argument
    add("--preset", choices=sorted(PRESETS), default="cpu")
    add("--out", default="experiments/results", help="tables (results.json, *.csv)")
    add("--figures", default="docs/figures", help="figure folder")
    add("--work", default=None, help="shards and checkpoints (default: a temporary folder)")
    add("--train-src", default=None, help="folder of training photos/RAW (with --val-src)")
    add("--val-src", default=None, help="folder of held-out photos/RAW")
    add("--labels", action="store_true", help="class = parent folder; adds 'supervised'")
    add("--raw-dir", default=None, help=f"camera RAW files to add (default {RAW_DIR})")
    add("--split", choices=SPLITS, default=None,
        help="bundled data: heldout (default; train → held-out sources) or tune (within the "
             "training sources, for choosing settings)")  # fmt: skip
    add("--freeze-backbone-steps", type=int, default=None, help="steps with the network frozen")
    add("--reuse-shards", action="store_true", default=None,
        help="use the pairs a previous run left in --work instead of building them (the same "
             "pairs for runs made at different times)")  # fmt: skip
    add("--steps", type=int, default=None)
    add("--eval-points", type=int, default=None)
    add("--batch-size", type=int, default=None)
    add("--crop", type=int, default=None)
    add("--lr", type=float, default=None, help="student backbone learning rate")
    add("--frontend-lr", type=float, default=None, help="RAW front-end learning rate")
    add("--seeds", type=int, nargs="+", default=None)
    add("--ablation-seeds", type=int, nargs="+", default=None, help="seeds of the ablations")
    add("--ablations", action="store_true", help=f"also train the ablations {list(ABLATIONS)}")
    add("--methods", nargs="+", default=None, choices=[m.name for m in METHODS])
    add("--device", default=None)
    add("--workers", type=int, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from rawpairs.build import BuildError
    from rawpairs.errors import InputError

    args = vars(_parser().parse_args(argv))
    for name in ("seeds", "ablation_seeds", "methods"):
        if args[name] is not None:
            args[name] = tuple(args[name])
    if args.pop("ablations"):
        chosen = args["methods"] or PRESETS[args["preset"]].get("methods", ExperimentConfig.methods)
        args["methods"] = (*chosen, *(m for m in ABLATIONS if m not in chosen))
    if args["labels"] and args["methods"] is None:
        args["methods"] = (*PRESETS[args["preset"]].get("methods", ExperimentConfig.methods),
                           "supervised")  # fmt: skip
    if not args["labels"]:
        args["labels"] = None
    preset = args.pop("preset")
    try:
        run(make_config(preset, **args))
    except (ValueError, FileNotFoundError, InputError, BuildError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
