"""Where the student is trained: label-free distillation of an RGB teacher into a RAW student.

``python -m distill.train --shards DIR --out RUN --steps N`` (``--help`` for every flag), or
:func:`train` with a :class:`TrainConfig` from Python. One step = ``accum`` micro-batches of
``batch_size`` samples per process; the teacher sees the aligned sRGB crop, the student the RAW.

Distributed: launch with ``torchrun``; RANK / WORLD_SIZE / LOCAL_RANK select the process's shard
slice (``distill.data.make_loader``), NCCL on GPU or Gloo on CPU; rank 0 writes logs and
checkpoints. Checkpoints are written atomically (temporary file, then ``os.replace``) to
``<out>/last.pt`` and hold everything an exact resume needs: weights, optimizer, scheduler, step,
batches consumed (the loader restarts at that batch) and every rank's RNG states.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from distill.losses import CombinedLoss, Outputs
from distill.models import (
    DEFAULT_TEACHER,
    NORMALIZATIONS,
    FeatureTap,
    RawStudent,
    Teacher,
    build_student,
    load_teacher,
)

__all__ = [
    "DistillStep",
    "TrainConfig",
    "build_models",
    "lr_factor",
    "main",
    "save_checkpoint",
    "train",
]

OPTIMIZERS = ("adamw", "sgd")


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in every checkpoint. Sizes in pixels."""

    shards: str | list[str]
    out: str = "distill_run"
    steps: int = 1000
    batch_size: int = 32
    accum: int = 1
    crop: int = 224
    teacher_size: int | None = None  # None: equal to crop
    student_input: str = "packed"
    teacher: str = DEFAULT_TEACHER
    teacher_weights: str | None = None
    teacher_norm: str | None = None  # None: the teacher's own (see distill.models)
    student: str = "teacher"
    student_init: str = "teacher"
    student_weights: str | None = None
    freeze_bn: bool | None = None  # BatchNorm on running statistics; None: iff teacher init
    kd_weight: float = 1.0
    mse_weight: float = 0.0
    feature_weight: float = 0.0
    feature_layers: list[str] = field(default_factory=list)  # "layer" or "teacher=student"
    temperature: float = 4.0
    supervised: bool = False
    hard_labels: bool = False
    optimizer: str = "adamw"
    lr: float = 3e-4
    weight_decay: float = 0.01
    momentum: float = 0.9
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False
    num_workers: int = 2
    shuffle_buffer: int = 256
    hflip: bool = True
    low_light: tuple[float, float] | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    resume: str | None = None  # a checkpoint path, or "auto" for <out>/last.pt if present
    stop_after: int | None = None  # end this invocation at this step (checkpointed)
    log_keys: bool = False  # every rank writes the keys of its samples to <out>/keys-rank<r>.txt
    progress: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent setting."""
        positive = ("steps", "batch_size", "accum", "crop", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.crop % 2:
            raise ValueError(f"crop must be even (RGGB blocks), got {self.crop}")
        if self.supervised and self.hard_labels:
            raise ValueError("--supervised and --hard-labels are exclusive baselines")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.feature_weight > 0 and not self.feature_layers:
            raise ValueError("--feature-weight > 0 needs --feature-layers")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            raise ValueError(
                f"bad schedule: lr={self.lr}, min_lr_ratio={self.min_lr_ratio}, "
                f"warmup_steps={self.warmup_steps}"
            )
        if self.stop_after is not None and not 0 < self.stop_after <= self.steps:
            raise ValueError(f"stop_after must lie in [1, steps={self.steps}]")
        if self.teacher_norm is not None and self.teacher_norm not in NORMALIZATIONS:
            raise ValueError(f"teacher_norm must be one of {list(NORMALIZATIONS)}")

    @property
    def loss_weights(self) -> dict[str, float]:
        if self.supervised:
            return {"ce": 1.0}
        if self.hard_labels:
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


# Settings that decide which samples each process sees, in which order (docs/data.md).
DATA_ORDER_FIELDS = (
    "shards",
    "seed",
    "batch_size",
    "num_workers",
    "shuffle_buffer",
    "crop",
    "teacher_size",
    "student_input",
    "hflip",
    "low_light",
)


def _jsonable(value: Any) -> Any:
    """``value`` in a comparable form (tuples and lists compare equal)."""
    return list(value) if isinstance(value, tuple) else value


def elastic_data_seed(seed: int, step: int) -> int:
    """Loader seed after a resume at a different world size: a function of (seed, step) only."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:4], "little")


def lr_factor(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier for 0-based ``step``: linear warm-up, then cosine decay.

    Steps ``0 … warmup−1`` ramp as (step+1)/warmup; afterwards
    ``min_ratio + (1 − min_ratio)·(1 + cos(π·t))/2`` with t the fraction of the decay done.
    """
    if step < warmup:
        return (step + 1) / warmup
    decay = max(1, steps - warmup)
    t = min(1.0, (step - warmup) / decay)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


class DistillStep(nn.Module):
    """Student forward plus loss in one module, so DDP sees the adapters' parameters too.

    ``forward(raw, teacher, labels)`` → (total loss, unweighted terms, student logits).
    """

    def __init__(
        self, student: RawStudent, criterion: CombinedLoss, student_layers: Sequence[str]
    ) -> None:
        super().__init__()
        self.student = student
        self.criterion = criterion
        self.tap = FeatureTap(student.net, student_layers) if student_layers else None

    def forward(
        self, raw: torch.Tensor, teacher: Outputs | None, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        if self.tap is not None:
            self.tap.clear()
        logits = self.student(raw)
        student = Outputs(logits, self.tap.features() if self.tap is not None else [])
        total, parts = self.criterion(student, teacher, labels)
        return total, parts, logits


def build_models(
    config: TrainConfig, device: torch.device
) -> tuple[Teacher, RawStudent, CombinedLoss, FeatureTap | None]:
    """Teacher, student, criterion (with feature adapters sized by a probe pass) and teacher tap.

    Raises ``ValueError`` when teacher and student logits differ in shape.
    """
    teacher = load_teacher(
        config.teacher, weights=config.teacher_weights, normalization=config.teacher_norm
    ).to(device)
    student = build_student(
        teacher, config.student, init=config.student_init, weights=config.student_weights
    ).to(device)
    pairs = config.layer_pairs
    teacher_size = config.teacher_size or config.crop
    rgb = torch.zeros(1, 3, teacher_size, teacher_size, device=device)
    raw = torch.zeros(1, 4, config.crop // 2, config.crop // 2, device=device)
    t_tap = FeatureTap(teacher.net, [t for t, _ in pairs]) if pairs else None
    student.eval()  # the probe must not touch BatchNorm statistics
    with torch.no_grad(), FeatureTap(student.net, [s for _, s in pairs]) as s_tap:
        t_logits, s_logits = teacher(rgb), student(raw)
        t_channels = [f.shape[1] for f in t_tap.features()] if t_tap else []
        s_channels = [f.shape[1] for f in s_tap.features()] if pairs else []
    student.train()
    if t_logits.shape[1:] != s_logits.shape[1:]:
        raise ValueError(
            f"teacher {config.teacher!r} outputs {tuple(t_logits.shape[1:])} per sample but "
            f"student {config.student!r} outputs {tuple(s_logits.shape[1:])}: they must match"
        )
    options: dict[str, dict[str, Any]] = {"kd": {"temperature": config.temperature}}
    if pairs:
        options["feature"] = {"student_channels": s_channels, "teacher_channels": t_channels}
    criterion = CombinedLoss(config.loss_weights, options).to(device)
    return teacher, student, criterion, t_tap


# ---------------------------------------------------------------------------------------------
# Processes, devices, RNG
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Process:
    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_process(requested: str) -> _Process:
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: CUDA is not available here; use --device cpu")
        device = torch.device("cuda", local_rank if requested == "cuda" else None)
        if requested != "cuda":
            device = torch.device(requested)
        torch.cuda.set_device(device)
    else:
        device = torch.device(requested)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Process(rank, world_size, device)


def _rng_state() -> dict[str, Any]:
    """Torch's global generators: the only randomness in a step (dropout, drop-connect).

    Data randomness comes from ``distill.data``'s own seeded generators.
    """
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Checkpoints and logs
# ---------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary name in the same folder, then ``os.replace`` (atomic)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _RunLog:
    """Appends records to ``log.jsonl`` and ``log.csv`` (and TensorBoard when installed)."""

    def __init__(self, out: Path) -> None:
        self.jsonl = (out / "log.jsonl").open("a", encoding="utf-8")
        csv_path = out / "log.csv"
        fieldnames = None
        if csv_path.exists() and csv_path.stat().st_size:
            with csv_path.open(encoding="utf-8") as f:
                fieldnames = next(csv.reader(f), None)
        self.csv_file = csv_path.open("a", encoding="utf-8", newline="")
        self.csv: csv.DictWriter | None = None
        self.fieldnames = fieldnames
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard: Any = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tensorboard = None

    def write(self, record: dict[str, Any]) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.csv is None:
            self.csv = csv.DictWriter(
                self.csv_file, fieldnames=self.fieldnames or list(record), extrasaction="ignore"
            )
            if self.fieldnames is None:
                self.csv.writeheader()
        self.csv.writerow(record)
        self.csv_file.flush()
        if self.tensorboard is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, int | float):
                    self.tensorboard.add_scalar(name, value, record["step"])

    def close(self) -> None:
        self.jsonl.close()
        self.csv_file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def _find_resume(config: TrainConfig) -> Path | None:
    if config.resume is None:
        return None
    if config.resume == "auto":
        path = Path(config.out) / "last.pt"
        return path if path.exists() else None
    path = Path(config.resume)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint to resume from does not exist")
    return path


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> tuple:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    raw = batch["raw"].to(device, non_blocking=True).contiguous(memory_format=fmt)
    rgb = batch["rgb"].to(device, non_blocking=True).contiguous(memory_format=fmt)
    return raw, rgb, batch["cls"].to(device, non_blocking=True)


def _first_batch(iterator: Iterator[dict[str, Any]], shards: Any) -> dict[str, Any]:
    try:
        return next(iterator)
    except StopIteration:
        raise ValueError(f"{shards}: the shards yielded no batch") from None


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) a distillation and return a summary.

    Summary keys: ``steps`` (completed), ``first_loss`` and ``last_loss`` (this invocation),
    ``samples_per_s``, ``checkpoint`` (path), ``log`` (path), ``world_size``.
    """
    from distill.data import make_loader

    config.validate()
    proc = _setup_process(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)  # every rank: --log-keys writes from each
    torch.manual_seed(config.seed)  # identical initialisation on every rank
    teacher, student, criterion, t_tap = build_models(config, proc.device)
    channels_last = (
        config.channels_last if config.channels_last is not None else proc.device.type == "cuda"
    )
    if channels_last:
        student.to(memory_format=torch.channels_last)
        teacher.to(memory_format=torch.channels_last)
    step_module = DistillStep(student, criterion, [s for _, s in config.layer_pairs])
    params = [p for p in step_module.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay, foreach=True
        )
    else:
        optimizer = torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            foreach=True,
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, config.steps, config.warmup_steps, config.min_lr_ratio),
    )
    step, batches_consumed = 0, 0
    data_seed = config.seed  # the loader's seed; changes only on a resume at another world size
    rng_state = None
    resume_path = _find_resume(config)
    if resume_path is not None:
        state = torch.load(resume_path, map_location=proc.device, weights_only=False)
        student.load_state_dict(state["student"])
        criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, batches_consumed = state["step"], state["batches_consumed"]
        data_seed = state.get("data_seed", config.seed)
        changed = [
            name
            for name in DATA_ORDER_FIELDS
            if _jsonable(state["config"].get(name)) != _jsonable(getattr(config, name))
        ]
        if state["world_size"] != proc.world_size:
            changed.insert(0, f"world size {state['world_size']} → {proc.world_size}")
        if not changed:
            rng_state = state["rng"][proc.rank]
        else:
            # The data order depends on these, so an exact continuation is impossible: keep
            # weights, optimiser and schedule, and start a fresh data order under a seed derived
            # from (seed, step) so the first batches are not replayed.
            data_seed = elastic_data_seed(config.seed, step)
            batches_consumed = 0
            if proc.main:
                warnings.warn(
                    f"{resume_path}: resuming with a different {', '.join(changed)}: model, "
                    f"optimiser and schedule continue from step {step}; the data order restarts "
                    f"under seed {data_seed} (not an exact replay)",
                    stacklevel=2,
                )

    student.train()
    freeze_bn = (
        config.freeze_bn if config.freeze_bn is not None else config.student_init == "teacher"
    )
    if freeze_bn:
        for module in student.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    runner: nn.Module = step_module
    if proc.distributed:
        runner = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[proc.device.index] if proc.device.type == "cuda" else None
        )
    if config.compile:
        runner = torch.compile(runner)  # type: ignore[assignment]
    use_amp = config.amp and proc.device.type == "cuda"
    teacher_size = config.teacher_size or config.crop
    loader = make_loader(
        config.shards,
        batch_size=config.batch_size,
        seed=data_seed,
        num_workers=config.num_workers,
        rank=proc.rank,
        world_size=proc.world_size,
        start_batch=batches_consumed,
        crop=config.crop,
        teacher_size=teacher_size,
        student_input=config.student_input,
        hflip=config.hflip,
        low_light=config.low_light,
        shuffle_buffer=config.shuffle_buffer,
    )
    end = config.stop_after or config.steps
    log = _RunLog(out) if proc.main else None
    keys_file = (
        (out / f"keys-rank{proc.rank}.txt").open("a", encoding="utf-8") if config.log_keys else None
    )
    bar = _progress(end, step, config.progress and proc.main)
    need_teacher = criterion.needs_teacher
    losses: list[float] = []
    checkpoint = out / "last.pt"
    started = time.perf_counter()
    samples = 0

    def save() -> None:
        rng = [_rng_state()]
        if proc.distributed:
            rng = [None] * proc.world_size  # type: ignore[list-item]
            dist.all_gather_object(rng, _rng_state())
        if proc.main:
            save_checkpoint(
                checkpoint,
                {
                    "student": student.state_dict(),
                    "criterion": criterion.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "batches_consumed": batches_consumed,
                    "data_seed": data_seed,
                    "rng": rng,
                    "world_size": proc.world_size,
                    "config": asdict(config),
                },
            )
        if proc.distributed:
            dist.barrier()

    iterator = iter(loader)  # draws a base seed from the global RNG: restore the RNG after it
    if rng_state is not None:
        _set_rng_state(rng_state)
    else:
        torch.manual_seed(data_seed * 1000 + proc.rank + 1)  # per-rank dropout streams
    try:
        while step < end:
            t0 = time.perf_counter()
            totals: dict[str, float] = {}
            agree = torch.zeros((), device=proc.device)
            for micro in range(config.accum):
                batch = _first_batch(iterator, config.shards)
                batches_consumed += 1
                if keys_file is not None:
                    keys_file.write("".join(f"{step}\t{k}\n" for k in batch["key"]))
                raw, rgb, labels = _to_device(batch, proc.device, channels_last)
                autocast = torch.autocast(proc.device.type, torch.bfloat16, enabled=use_amp)
                teacher_out = None
                if need_teacher:
                    if t_tap is not None:
                        t_tap.clear()
                    with autocast:
                        t_logits = teacher(rgb)
                    teacher_out = Outputs(t_logits, t_tap.features() if t_tap else [])
                sync = (
                    runner.no_sync()  # type: ignore[operator]
                    if proc.distributed and micro < config.accum - 1
                    else contextlib.nullcontext()
                )
                with sync, autocast:
                    total, parts, s_logits = runner(raw, teacher_out, labels)
                (total / config.accum).backward()
                for name, value in [("loss", total), *parts.items()]:
                    key = name if name == "loss" else f"loss_{name}"
                    totals[key] = totals.get(key, 0.0) + float(value.detach()) / config.accum
                if teacher_out is not None:
                    same = s_logits.argmax(1) == teacher_out.logits.argmax(1)
                    agree += same.float().mean().detach() / config.accum
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            samples += config.batch_size * config.accum * proc.world_size
            losses.append(totals["loss"])
            if step % config.log_every == 0 or step == end:
                record = {"step": step, **totals, "lr": scheduler.get_last_lr()[0]}
                if need_teacher:
                    record["agree"] = float(agree)
                if proc.distributed:
                    values = torch.tensor(list(record.values())[1:], device=proc.device)
                    dist.all_reduce(values)
                    record.update(
                        zip(list(record)[1:], (values / proc.world_size).tolist(), strict=True)
                    )
                    record["lr"] = scheduler.get_last_lr()[0]
                record["samples_per_s"] = (
                    config.batch_size * config.accum * proc.world_size / (time.perf_counter() - t0)
                )
                if log is not None:
                    log.write(record)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}",
                        agree=f"{record.get('agree', float('nan')):.3f}",
                        sps=f"{record['samples_per_s']:.1f}",
                    )
            if bar is not None:
                bar.update(1)
            if step == end or (config.checkpoint_every and step % config.checkpoint_every == 0):
                save()
    except torch.cuda.OutOfMemoryError as err:
        raise RuntimeError(
            f"CUDA out of memory at batch size {config.batch_size} × crop {config.crop}: "
            f"try --batch-size {max(1, config.batch_size // 2)} --accum {config.accum * 2} "
            "(same effective batch) or a smaller --crop"
        ) from err
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        if keys_file is not None:
            keys_file.close()
    elapsed = time.perf_counter() - started
    return {
        "steps": step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses": losses,
        "samples_per_s": samples / elapsed if elapsed > 0 else 0.0,
        "checkpoint": str(checkpoint),
        "log": str(out / "log.jsonl"),
        "world_size": proc.world_size,
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig(shards="")
    p = argparse.ArgumentParser(
        prog="python -m distill.train",
        description="Distil a frozen RGB teacher into a RAW student (no labels needed).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = p.add_argument
    add("--shards", required=True, nargs="+", help="folder, glob, brace pattern or URL(s)")
    add("--out", default=defaults.out, help="run folder: logs, last.pt")
    add("--steps", type=int, default=defaults.steps)
    add("--batch-size", type=int, default=defaults.batch_size, help="per process")
    add("--accum", type=int, default=defaults.accum, help="gradient accumulation micro-batches")
    add("--crop", type=int, default=defaults.crop, help="RAW crop side (even), pixels")
    add("--teacher-size", type=int, default=None, help="teacher input side (default: --crop)")
    add("--student-input", choices=["packed", "mosaic"], default=defaults.student_input)
    add("--teacher", default=defaults.teacher, help="efficientnet-lite0, .pt/.ts, .pt2, mod:fn")
    add("--teacher-weights", default=None, help="state dict for a mod:fn teacher")
    add("--teacher-norm", choices=sorted(NORMALIZATIONS), default=None)
    add("--student", default=defaults.student, help="'teacher' (RAW stem) or mod:fn")
    add("--student-init", choices=["teacher", "scratch"], default=defaults.student_init)
    add("--student-weights", default=None)
    add(
        "--freeze-bn",
        action=argparse.BooleanOptionalAction,
        default=defaults.freeze_bn,
        help="BatchNorm on running statistics (default: with --student-init teacher)",
    )
    add("--kd-weight", type=float, default=defaults.kd_weight)
    add("--mse-weight", type=float, default=defaults.mse_weight)
    add("--feature-weight", type=float, default=defaults.feature_weight)
    add("--feature-layers", default="", help="comma list: layer or teacher_layer=student_layer")
    add("--temperature", type=float, default=defaults.temperature)
    baseline = p.add_mutually_exclusive_group()
    baseline.add_argument("--supervised", action="store_true", help="cross-entropy on labels")
    baseline.add_argument("--hard-labels", action="store_true", help="CE on teacher top-1")
    add("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    add("--lr", type=float, default=defaults.lr)
    add("--weight-decay", type=float, default=defaults.weight_decay)
    add("--momentum", type=float, default=defaults.momentum, help="SGD only")
    add("--warmup-steps", type=int, default=defaults.warmup_steps)
    add("--min-lr-ratio", type=float, default=defaults.min_lr_ratio)
    add("--seed", type=int, default=defaults.seed)
    add("--device", default=defaults.device, help="auto, cpu, cuda, cuda:1")
    add("--no-amp", dest="amp", action="store_false", help="disable bf16 autocast on GPU")
    add("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    add("--compile", action="store_true", help="torch.compile the student step")
    add("--num-workers", type=int, default=defaults.num_workers)
    add("--shuffle-buffer", type=int, default=defaults.shuffle_buffer)
    add("--no-hflip", dest="hflip", action="store_false")
    add("--low-light", type=float, nargs=2, default=None, metavar=("MIN", "MAX"))
    add("--log-every", type=int, default=defaults.log_every)
    add("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    add("--resume", default=None, help="checkpoint path, or 'auto' for <out>/last.pt")
    add("--stop-after", type=int, default=None, help="end this invocation at this step")
    add("--log-keys", action="store_true", help="write each rank's sample keys")
    add("--no-progress", dest="progress", action="store_false")
    return p


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse command-line arguments into a :class:`TrainConfig`."""
    args = vars(_parser().parse_args(argv))
    args["shards"] = args["shards"][0] if len(args["shards"]) == 1 else args["shards"]
    args["feature_layers"] = [s for s in args["feature_layers"].split(",") if s]
    if args["low_light"] is not None:
        args["low_light"] = tuple(args["low_light"])
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in args.items() if k in names})


def main(argv: Sequence[str] | None = None) -> int:
    from rawpairs.errors import InputError

    config = config_from_args(argv)
    try:
        summary = train(config)
    except (ValueError, FileNotFoundError, InputError, RuntimeError) as err:
        # A DataLoader worker's error arrives wrapped with its traceback: keep the cause line.
        lines = [line for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        print(f"error: {lines[-1]}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
