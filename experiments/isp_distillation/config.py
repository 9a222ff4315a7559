"""Methods (student recipes), the data split, the experiment configuration and its presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import TASKS

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
RAW_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "raw"
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
    task: str = "classify"
    teacher: str | None = None  # default: the task's (distill.config.DEFAULT_TEACHERS)
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
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}: expected one of {TASKS}")
        if self.task == "segment" and "supervised" in self.methods:
            raise ValueError("method 'supervised' needs per-pixel labels: not for --task segment")
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


# Segmentation (--task segment): the selfie teacher's 256-pixel input, its photos of people
# (experiments/isp_distillation/people.py; no camera RAW of people is bundled), and its recipe
# (docs/results.md).
SEGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"build_crop": 66, "crop": 64},
    "cpu": {
        "raw_dir": None,
        "build_crop": 258,
        "crop": 256,
        "max_side": 640,  # the portraits' short sides stay above the crop
        "train_crops": 8,
        "val_crops": 6,
        "steps": 120,
        "batch_size": 8,
        "temperature": 1.0,
        "lr": 3e-5,
        "methods": ("kd", "hard", "kd_low_light"),
        "eval_batch": 16,
    },
    "gpu": {"build_crop": 258, "crop": 256, "temperature": 1.0},
}


def make_config(preset: str, task: str | None = None, **overrides: Any) -> ExperimentConfig:
    """A preset's configuration (for ``task``, default ``classify``) with ``overrides``
    (``None`` values are ignored), validated."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {sorted(PRESETS)}")
    task = task or "classify"
    values = {
        **PRESETS[preset],
        **(SEGMENT_PRESETS[preset] if task == "segment" else {}),
        "task": task,
        **{k: v for k, v in overrides.items() if v is not None},
    }
    config = ExperimentConfig(preset=preset, **values)
    config.validate()
    return config
