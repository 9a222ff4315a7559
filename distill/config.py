"""Where a training run is described: :class:`TrainConfig`, its command line and its checks.

Every field of :class:`TrainConfig` is declared with :func:`option`, whose metadata (help text,
allowed range or choices, argparse extras) generates the ``python -m distill.train`` flag of the
same name (``batch_size`` → ``--batch-size``; a ``bool`` becomes ``--flag/--no-flag``) and the
range checks of :meth:`TrainConfig.validate`. Adding a field adds its flag and its check.

:class:`LoaderConfig` is the one description of how a loader is built, with its checks
(``distill.data.make_loader_from`` takes it; ``distill.data.make_loader`` its fields as keywords).
This module imports neither torch nor the models, so the command line can report a missing
``rawpairs[distill]`` extra in one line (:mod:`distill.extras`).
"""

from __future__ import annotations

import argparse
import math
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from distill.options import HelpFormatter, add_config_option, parse_args
from distill.resources import check_memory, loader_bytes

__all__ = [
    "BUILTIN_TEACHERS",
    "DEFAULT_SHUFFLE_MIB",
    "DEFAULT_TEACHER",
    "DEFAULT_TEACHERS",
    "DEFAULT_WB",
    "NORMALIZATIONS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "SEGMENT_TEACHER",
    "STUDENT_INPUTS",
    "TASKS",
    "TEACHER_NORMS",
    "WB_MODES",
    "LoaderConfig",
    "OneLineParser",
    "TrainConfig",
    "build_parser",
    "config_from_args",
    "data_order_fields",
    "option",
]

OPTIMIZERS = ("adamw", "sgd")
# "distill": KD (+ optional MSE on logits, feature matching); the others are baselines.
OBJECTIVES = ("distill", "supervised", "hard-labels")
STUDENT_INPUTS = ("packed", "mosaic")  # RAW layouts the loader makes (distill.data)
# Per-channel (mean, std) applied to sRGB in [0, 1] before the teacher (distill.models). The
# EfficientNet-Lite0 weights were trained with TensorFlow's (x·255 − 127) / 128: the stem's
# BatchNorm running statistics match that normalisation, not torchvision's ImageNet one (checked
# on scikit-image photos, docs/distill.md).
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "tf": ((127 / 255,) * 3, (128 / 255,) * 3),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0,) * 3, (1.0,) * 3),
}
TEACHER_NORMS = tuple(NORMALIZATIONS)
DEFAULT_TEACHER = "efficientnet-lite0"
SEGMENT_TEACHER = "selfie-segmentation"
TASKS = ("classify", "segment")
DEFAULT_TEACHERS = {"classify": DEFAULT_TEACHER, "segment": SEGMENT_TEACHER}
# The names distill.models.TEACHERS loads without running user code.
BUILTIN_TEACHERS = ("efficientnet-lite0", "efficientnet-lite0-dense", "selfie-segmentation")
WB_MODES = ("none", "grayworld", "metadata")  # the RAW front-end's white balance (distill.frontend)
DEFAULT_WB = "metadata"  # docs/results.md: why
SEED_MAX = 2**32 - 1
# Shuffle buffer memory per process (MiB), split over its loader workers. A fixed number, not a
# share of the free memory: the buffer decides the data order, so a budget read from the machine
# would make a run's samples (and an exact resume) depend on what else was running. 1 GiB keeps
# the default 256 records for samples up to 4 MiB (a 512-px crop pair is about 0.5 MiB) and
# about 25 whole-image 12-MP camera-RAW records (about 40 MiB each).
DEFAULT_SHUFFLE_MIB = 1024

def option(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    choices: Sequence[Any] | None = None,
    data_order: bool = False,
    convert: Callable[[Any], Any] | None = None,
    **cli: Any,
) -> Any:
    """A :class:`TrainConfig` field with its flag's help and its checks.

    ``low``/``high``: inclusive bounds (numbers; ``None`` values are always allowed);
    ``choices``: allowed values; ``data_order``: the field decides which samples each process
    sees in which order (a resume that changes it is not exact); ``convert``: applied to the
    parsed command-line value; ``cli``: extra ``argparse.add_argument`` keywords.
    """
    metadata = {
        "help": help,
        "low": low,
        "high": high,
        "choices": tuple(choices) if choices is not None else None,
        "data_order": data_order,
        "convert": convert,
        "cli": cli,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _one_or_many(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _comma_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def _pair(values: list[float] | None) -> tuple[float, float] | None:
    return None if values is None else (values[0], values[1])


@dataclass
class TrainConfig:
    """Everything a run depends on; stored (as JSON-able data) in every checkpoint.

    Sizes in pixels, steps count optimiser updates.
    """

    shards: str | list[str] = option(  # noqa: RUF009 - option() returns a field
        help="folder, glob, brace pattern or URL(s)",
        data_order=True,
        convert=_one_or_many,
        nargs="+",
        type=str,
        required=True,
    )
    out: str = option("distill_run", "run folder: logs, last.pt")
    steps: int = option(1000, "optimiser steps", low=1)
    batch_size: int = option(32, "samples per micro-batch, per process", low=1, data_order=True)
    accum: int = option(1, "gradient accumulation micro-batches", low=1)
    crop: int = option(224, "RAW crop side (even), pixels", low=2, data_order=True)
    teacher_size: int | None = option(
        None, "teacher input side, pixels (default: --crop)", low=1, data_order=True
    )
    student_input: str = option(
        "packed", "RAW layout the student reads", choices=STUDENT_INPUTS, data_order=True
    )
    task: str | None = option(
        None,
        "classify (logits B×K) or segment (per-pixel logits B×K×h×w); default: what the "
        "teacher returns",
        choices=TASKS,
    )
    teacher: str | None = option(
        None,
        f"one of {', '.join(BUILTIN_TEACHERS)}; a .pt/.ts or .pt2 file; module:factory "
        f"(default: {DEFAULT_TEACHERS['classify']}, with --task segment "
        f"{DEFAULT_TEACHERS['segment']})",
    )
    teacher_weights: str | None = option(None, "state dict for a module:factory teacher")
    teacher_norm: str | None = option(
        None, "teacher input normalisation (default: the teacher's own)", choices=TEACHER_NORMS
    )
    student: str = option("teacher", "'teacher' (its architecture, RAW stem) or module:factory")
    student_init: str = option("teacher", "student weights", choices=("teacher", "scratch"))
    student_weights: str | None = option(None, "state dict for a module:factory student")
    freeze_bn: bool | None = option(
        None, "BatchNorm on running statistics (default: with --student-init teacher)"
    )
    # The RAW front-end and the recipe that keeps the student's starting point (docs/distill.md).
    raw_wb: str = option(
        DEFAULT_WB,
        "white balance in the student's RAW front-end: none, grayworld (per image), metadata "
        "(the gains recorded with each sample, as a camera's AWB supplies them)",
        choices=WB_MODES,
    )
    learn_colour: bool = option(True, "train the front-end's channel gains and 3×3 colour matrix")
    learn_tone: bool = option(True, "train the front-end's tone-curve exponent")
    dropout: bool = option(
        False, "student dropout/drop-connect while distilling (off: as it is evaluated)"
    )
    frontend_lr: float = option(5e-3, "peak learning rate of the RAW front-end", low=0)
    freeze_backbone_steps: int = option(
        0, "first steps in which only the front-end learns (backbone learning rate 0)", low=0
    )
    ema: float = option(
        0.0,
        "decay of an exponential moving average of the student's weights (0: off); "
        "validation and best.pt then use the averaged weights",
        low=0,
        high=0.9999,
    )
    val_shards: str | list[str] | None = option(  # noqa: RUF009 - option() returns a field
        None,
        "held-out pair shards scored during training; <out>/best.pt keeps the lowest KL",
        convert=_one_or_many,
        nargs="+",
        type=str,
    )
    val_every: int = option(
        0, "steps between validations (0: only at the start and the end)", low=0
    )
    val_batches: int | None = option(
        None, "validate on at most this many batches (default: all)", low=1
    )
    objective: str = option(
        "distill",
        "distill: KD (+ MSE, features) from the teacher; baselines: supervised (cross-entropy on "
        "labels), hard-labels (cross-entropy on the teacher's top-1)",
        choices=OBJECTIVES,
    )
    kd_weight: float = option(1.0, "weight of the KD loss (objective distill)", low=0)
    mse_weight: float = option(0.0, "weight of the logit MSE (objective distill)", low=0)
    feature_weight: float = option(0.0, "weight of feature matching (objective distill)", low=0)
    feature_layers: list[str] = option(  # noqa: RUF009 - option() returns a field
        help="comma list: layer or teacher_layer=student_layer",
        factory=list,
        type=_comma_list,
    )
    temperature: float = option(4.0, "KD temperature", low=1e-6)
    optimizer: str = option("adamw", "optimiser", choices=OPTIMIZERS)
    lr: float = option(
        5e-5, "peak learning rate of the network (all but the RAW front-end)", low=1e-12
    )
    weight_decay: float = option(0.01, "decoupled (AdamW) or L2 (SGD) weight decay", low=0)
    momentum: float = option(0.9, "SGD momentum", low=0, high=1)
    warmup_steps: int = option(100, "linear warm-up steps", low=0)
    min_lr_ratio: float = option(0.0, "cosine floor, fraction of --lr", low=0, high=1)
    seed: int = option(
        0, "seed of initialisation, data order and dropout", low=0, high=SEED_MAX, data_order=True
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:1")
    amp: bool = option(True, "bf16 autocast on GPU")
    channels_last: bool | None = option(None, "channels-last memory format (default: on CUDA)")
    compile: bool = option(False, "torch.compile the student step")
    num_workers: int = option(2, "loader worker processes", low=0, data_order=True)
    shuffle_buffer: int = option(
        256, "shuffle buffer, samples (at most --shuffle-memory of them)", low=1, data_order=True
    )
    shuffle_memory: int = option(
        DEFAULT_SHUFFLE_MIB,
        "shuffle buffer memory per process, MiB, split over the loader workers (undecoded "
        "records; at least one record is always held)",
        low=1,
        data_order=True,
    )
    hflip: bool = option(True, "random horizontal flips", data_order=True)
    fresh_cameras: bool = option(
        False,
        "at-load samples (rawpairs build --unprocess at_load): a new camera and noise every epoch",
        data_order=True,
    )
    low_light: tuple[float, float] | None = option(
        None,
        "darken the RAW by a factor drawn from [MIN, MAX] (1 <= MIN <= MAX)",
        low=1,
        data_order=True,
        convert=_pair,
        nargs=2,
        type=float,
        metavar=("MIN", "MAX"),
    )
    log_every: int = option(10, "steps between log records", low=1)
    checkpoint_every: int = option(500, "steps between checkpoints (0: only at the end)", low=0)
    resume: str | None = option(None, "checkpoint path, or 'auto' for <out>/last.pt if present")
    overwrite: bool = option(
        False,
        "start a clean run in an --out that holds a run: delete what a run writes there "
        "(last.pt, best.pt, log.jsonl, log.csv, val.jsonl, summary.json, keys-rank*.txt, "
        "TensorBoard events), "
        "never other files",
    )
    stop_after: int | None = option(
        None, "end this invocation at this step, checkpointed (default: --steps)", low=1
    )
    log_keys: bool = option(False, "every rank writes its sample keys to <out>/keys-rank<r>.txt")
    progress: bool = option(True, "progress bar")

    def __post_init__(self) -> None:
        if self.teacher is None:
            self.teacher = DEFAULT_TEACHERS[self.task or "classify"]

    def validate(self) -> None:
        """Raise ``ValueError`` (one line) naming the first bad or inconsistent setting."""
        for f in fields(self):
            _check_field(f.name, getattr(self, f.name), f.metadata)
        if self.crop % 2:
            raise ValueError(f"crop must be even (RGGB blocks), got {self.crop}")
        if self.feature_weight > 0 and not self.feature_layers:
            raise ValueError("--feature-weight > 0 needs --feature-layers")
        if self.low_light is not None and (
            len(self.low_light) != 2 or self.low_light[0] > self.low_light[1]
        ):
            raise ValueError(f"low_light must be (MIN, MAX) with MIN <= MAX, got {self.low_light}")
        if self.task == "segment" and self.objective == "supervised":
            raise ValueError(
                "--objective supervised needs per-pixel labels, which pair shards do not carry; "
                "for --task segment use distill or hard-labels"
            )
        if self.stop_after is not None and self.stop_after > self.steps:
            raise ValueError(f"stop_after must lie in [1, steps={self.steps}]")
        if self.overwrite and self.resume is not None:
            raise ValueError("--overwrite starts a clean run and --resume continues one: pick one")

    def check_memory(self, available: int | None = None, processes: int = 1) -> None:
        """``ValueError`` (one line) when the loader's batches and shuffle buffer of ``processes``
        processes cannot fit in ``available`` bytes (default:
        :func:`distill.resources.available_memory`)."""
        teacher_size = self.teacher_size or self.crop
        check_memory(
            loader_bytes(self.batch_size, self.crop, teacher_size, workers=self.num_workers),
            self.shuffle_memory * 2**20,
            what=f"--batch-size {self.batch_size} with --crop {self.crop} and --teacher-size "
            f"{teacher_size}",
            available=available,
            processes=processes,
        )

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weights of the ``distill.losses`` terms for this objective."""
        if self.objective == "supervised":
            return {"ce": 1.0}
        if self.objective == "hard-labels":
            return {"hard": 1.0}
        return {"kd": self.kd_weight, "mse": self.mse_weight, "feature": self.feature_weight}

    @property
    def layer_pairs(self) -> list[tuple[str, str]]:
        """(teacher layer, student layer) names; ``"layer"`` means the same name in both."""
        pairs = []
        for spec in self.feature_layers:
            teacher_name, _, student_name = spec.partition("=")
            pairs.append((teacher_name, student_name or teacher_name))
        return pairs

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-able data (tuples become lists): what a checkpoint stores."""
        return {name: _jsonable(value) for name, value in asdict(self).items()}

    def loader(self, *, seed: int, rank: int, world_size: int, start_batch: int) -> LoaderConfig:
        """The training loader of process ``rank`` of ``world_size``, from batch ``start_batch``."""
        return LoaderConfig(
            batch_size=self.batch_size,
            seed=seed,
            num_workers=self.num_workers,
            rank=rank,
            world_size=world_size,
            start_batch=start_batch,
            crop=self.crop,
            teacher_size=self.teacher_size or self.crop,
            student_input=self.student_input,
            hflip=self.hflip,
            low_light=self.low_light,
            shuffle_buffer=self.shuffle_buffer,
            shuffle_bytes=self.shuffle_memory * 2**20,
            fresh_cameras=self.fresh_cameras,
            raw_on_device=True,
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _check_field(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    values = value if isinstance(value, tuple | list) else [value]
    for item in values:
        if isinstance(item, bool) or not isinstance(item, int | float):
            continue
        if not math.isfinite(item):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if (low is not None and item < low) or (high is not None and item > high):
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            raise ValueError(f"{name} must lie in [{lo}, {hi}], got {value!r}")


def data_order_fields() -> tuple[str, ...]:
    """The settings that decide which samples each process sees, in which order (docs/data.md)."""
    return tuple(f.name for f in fields(TrainConfig) if f.metadata.get("data_order"))


@dataclass(frozen=True)
class LoaderConfig:
    """How ``distill.data.make_loader`` reads pair shards (units and the batch contract there).

    ``batch_size``: samples per batch; ``seed``: of the data order and the augmentation;
    ``num_workers``: DataLoader worker processes (0: in this process); ``rank`` of
    ``world_size`` processes; ``start_batch``: the first batch (a resume); ``crop``: RAW crop
    side, even, pixels; ``teacher_size``: the RGB side, pixels; ``student_input``: one of
    :data:`STUDENT_INPUTS`; ``hflip``: random left-right flips; ``low_light``: darkening factor
    range (1 <= min <= max); ``shuffle_buffer``: records; ``shuffle_bytes``: buffer bytes per
    process; ``repeat``: endless, shuffled and augmented (else one pass, centre crops);
    ``isp_reference``: also the forward-ISP render; ``fresh_cameras``: a new camera per epoch
    for at-load samples; ``raw_on_device``: their RAW made by the consumer (``recipe``).

    Every setting is checked here: ``ValueError`` (one line) naming the first bad one.
    """

    batch_size: int
    seed: int = 0
    num_workers: int = 0
    rank: int = 0
    world_size: int = 1
    start_batch: int = 0
    crop: int = 224
    teacher_size: int = 224
    student_input: str = "packed"
    hflip: bool = True
    low_light: tuple[float, float] | None = None
    shuffle_buffer: int = 256
    shuffle_bytes: int = DEFAULT_SHUFFLE_MIB * 2**20
    repeat: bool = True
    isp_reference: bool = False
    fresh_cameras: bool = False
    raw_on_device: bool = False

    def __post_init__(self) -> None:
        for name, low in (
            ("batch_size", 1),
            ("seed", 0),
            ("num_workers", 0),
            ("world_size", 1),
            ("start_batch", 0),
            ("teacher_size", 1),
            ("shuffle_buffer", 1),
            ("shuffle_bytes", 1),
        ):
            value = getattr(self, name)
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"rank must lie in [0, world_size={self.world_size}), got {self.rank}"
            )
        if self.crop <= 0 or self.crop % 2:
            raise ValueError(f"crop must be a positive even number, got {self.crop}")
        if self.student_input not in STUDENT_INPUTS:
            raise ValueError(
                f"student_input must be one of {STUDENT_INPUTS}, got {self.student_input!r}"
            )
        self._check_combinations()
        if self.low_light is not None:  # factors as floats: the draws do not depend on the type
            low_light = (float(self.low_light[0]), float(self.low_light[1]))
            object.__setattr__(self, "low_light", low_light)

    def _check_combinations(self) -> None:
        if self.low_light is not None:
            lo, hi = self.low_light
            if not 1 <= lo <= hi:
                raise ValueError(
                    f"low_light factors must satisfy 1 <= min <= max, got {self.low_light}"
                )
        if self.raw_on_device and self.isp_reference:
            raise ValueError("isp_reference needs the RAW in the loader: pass raw_on_device=False")
        if self.start_batch and not self.repeat and self.num_workers > 1:
            raise ValueError(
                "start_batch needs repeat=True or num_workers <= 1: a single pass ends unevenly "
                "across workers, so its batch numbers do not follow the round-robin order"
            )


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _scalar_type(hint: Any) -> Any:
    """``int`` for ``int`` or ``int | None`` (likewise float, str, bool); else None."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    args = tuple(a for a in args if a is not type(None))
    return args[0] if len(args) == 1 and args[0] in (int, float, str, bool) else None


def build_parser(prog: str = "python -m distill.train") -> argparse.ArgumentParser:
    """The ``distill train`` parser: one flag per :class:`TrainConfig` field, and ``--config``
    (:mod:`distill.options`)."""
    parser = OneLineParser(
        prog=prog,
        description="Distil a frozen RGB teacher into a RAW student (no labels needed).",
        formatter_class=HelpFormatter,
    )
    add_config_option(parser)
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        meta = f.metadata
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if f.default is not MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not MISSING:
            kwargs["default"] = f.default_factory()
        kind = _scalar_type(hints[f.name])
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind is not None:
            kwargs["type"] = kind
        elif "type" not in meta["cli"]:
            raise TypeError(f"TrainConfig.{f.name}: give its command-line type in option()")
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
        kwargs.update(meta["cli"])
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return parser


def config_from_args(
    argv: Sequence[str] | None = None, prog: str = "python -m distill.train"
) -> TrainConfig:
    """Parse command-line arguments (and ``--config FILE.yaml``, which they override) into a
    :class:`TrainConfig` (not yet validated)."""
    args = vars(parse_args(build_parser(prog), argv))
    args.pop("config")
    for f in fields(TrainConfig):
        convert = f.metadata["convert"]
        if convert is not None and args[f.name] is not None:
            args[f.name] = convert(args[f.name])
    return TrainConfig(**args)
