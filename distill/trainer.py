"""Where the student is trained: setup → resume → step → log → save (:class:`Trainer`).

One step = ``accum`` micro-batches of ``batch_size`` samples per process; the teacher sees the
aligned sRGB crop, the student the RAW. Distributed: launched with ``torchrun``, RANK /
WORLD_SIZE / LOCAL_RANK select the process's shard slice (``distill.data.make_loader``), NCCL on
GPU or Gloo on CPU; rank 0 writes logs and checkpoints (``distill.checkpoint``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from distill.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    TRAINING_KEYS,
    find_resume,
    plan_resume,
    read_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    warn_inexact,
)
from distill.config import TrainConfig, check_output_folder
from distill.data import check_class_maps, make_loader_from
from distill.losses import CombinedLoss, Outputs, match_teacher
from distill.models import (
    FeatureTap,
    RawStudent,
    Teacher,
    build_student,
    distill_mode,
    load_teacher,
    task_of,
)
from distill.runtime import resolve_device, rng_state, set_rng_state, setup_process
from distill.unprocess import make_raw
from rawpairs.messages import one_line
from rawpairs.storage import write_text_atomic

__all__ = [
    "DistillStep",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_models",
    "check_task",
    "claim_out",
    "lr_factor",
    "resolve_device",
    "run_files",
    "train",
]

# What a run writes in its --out (besides keys-rank*.txt and TensorBoard events): all that
# --overwrite deletes.
RUN_FILES = (CHECKPOINT_NAME, BEST_NAME, "log.jsonl", "log.csv", "val.jsonl", "summary.json")


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite; the last checkpoint was kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training; ``str()`` says which step ``last.pt`` keeps."""


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

    ``forward(raw, wb, teacher, labels)`` → (total loss, unweighted terms, student logits);
    ``wb``: the samples' recorded white-balance gains B×3 (used by a ``metadata`` front-end).
    """

    def __init__(
        self, student: RawStudent, criterion: CombinedLoss, student_layers: Sequence[str]
    ) -> None:
        super().__init__()
        self.student = student
        self.criterion = criterion
        self.tap = FeatureTap(student.net, student_layers) if student_layers else None

    def forward(
        self, raw: torch.Tensor, wb: torch.Tensor, teacher: Outputs | None, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        if self.tap is not None:
            self.tap.clear()
        logits = self.student(raw, wb)
        student = Outputs(logits, self.tap.features() if self.tap is not None else [])
        total, parts = self.criterion(student, teacher, labels)
        return total, parts, logits


def build_student_for(config: TrainConfig, teacher: Teacher) -> RawStudent:
    """The student ``config`` describes (architecture, initialisation, front-end), on the CPU."""
    return build_student(
        teacher,
        config.student,
        init=config.student_init,
        weights=config.student_weights,
        wb=config.raw_wb,
        learn_colour=config.learn_colour,
        learn_tone=config.learn_tone,
    )


def build_models(
    config: TrainConfig, device: torch.device
) -> tuple[Teacher, RawStudent, CombinedLoss, FeatureTap | None]:
    """Teacher, student, criterion (with feature adapters sized by a probe pass) and teacher tap.

    Raises ``ValueError`` when teacher and student predict different things (class count,
    classification vs dense) or the teacher's task is not ``config.task``.
    """
    teacher = load_teacher(
        config.teacher, weights=config.teacher_weights, normalization=config.teacher_norm
    ).to(device)
    student = build_student_for(config, teacher).to(device)
    pairs = config.layer_pairs
    teacher_size = config.teacher_size or config.crop
    rgb = torch.zeros(1, 3, teacher_size, teacher_size, device=device)
    raw = torch.zeros(1, 4, config.crop // 2, config.crop // 2, device=device)
    t_tap = FeatureTap(teacher.net, [t for t, _ in pairs]) if pairs else None
    student.eval()  # the probe must not touch BatchNorm statistics
    with torch.no_grad(), FeatureTap(student.net, [s for _, s in pairs]) as s_tap:
        t_logits, s_logits = teacher(rgb), student(raw, torch.ones(1, 3, device=device))
        t_channels = [f.shape[1] for f in t_tap.features()] if t_tap else []
        s_channels = [f.shape[1] for f in s_tap.features()] if pairs else []
    student.train()
    check_task(config, t_logits, s_logits)
    options: dict[str, dict[str, Any]] = {"kd": {"temperature": config.temperature}}
    if pairs:
        options["feature"] = {"student_channels": s_channels, "teacher_channels": t_channels}
    criterion = CombinedLoss(config.loss_weights, options).to(device)
    return teacher, student, criterion, t_tap


def check_task(config: TrainConfig, teacher: torch.Tensor, student: torch.Tensor) -> str:
    """The task of probe logits (``task_of``); ``ValueError`` if student and teacher disagree
    (classification vs dense, class count) or it is not ``config.task``. Dense maps may differ in
    size (the teacher's is resized to the student's)."""
    task = task_of(teacher)
    if config.task is not None and task != config.task:
        shape = "B×K" if task == "classify" else "B×K×h×w"
        raise ValueError(
            f"teacher {config.teacher!r} returns {shape} logits ({task}), not what --task "
            f"{config.task} needs; pass a {'dense' if config.task == 'segment' else 'classifier'} "
            "teacher or drop --task"
        )
    if teacher.ndim != student.ndim or teacher.shape[1] != student.shape[1]:
        raise ValueError(
            f"teacher {config.teacher!r} outputs {tuple(teacher.shape[1:])} per sample but "
            f"student {config.student!r} outputs {tuple(student.shape[1:])}: they must predict "
            "the same classes the same way (both B×K, or both B×K×h×w)"
        )
    return task


# ---------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------
def _keep_lines(path: Path, keep: Callable[[str], bool], header: int = 0) -> None:
    """Rewrite text file ``path`` (atomically) with its first ``header`` lines and the following
    complete lines for which ``keep`` is true, up to the first line ``keep`` cannot read (a line
    cut by a kill ends the file)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = lines[:header]
    for line in lines[header:]:
        try:
            if not line.endswith("\n"):
                break
            if keep(line):
                kept.append(line)
        except ValueError:
            break
    if kept == lines:
        return
    write_text_atomic(path, "".join(kept))


def truncate_logs(out: Path, step: int) -> None:
    """Drop log records after ``step`` (and keys of later steps): a resume from the checkpoint
    of ``step`` writes them again, so the logs never repeat a step."""
    _keep_lines(out / "log.jsonl", lambda line: int(json.loads(line)["step"]) <= step)
    _keep_lines(out / "log.csv", lambda line: int(line.split(",", 1)[0]) <= step, header=1)
    _keep_lines(out / "val.jsonl", lambda line: int(json.loads(line)["step"]) <= step)
    for keys in out.glob("keys-rank*.txt"):  # one line per sample: <0-based step>\t<key>
        _keep_lines(keys, lambda line: int(line.split("\t", 1)[0]) < step)


def run_files(out: Path) -> list[Path]:
    """The files a run wrote in ``out``: :data:`RUN_FILES`, ``keys-rank*.txt`` and TensorBoard's
    ``tensorboard/events.out.tfevents.*`` (what ``--overwrite`` deletes)."""
    files = [out / name for name in RUN_FILES if (out / name).is_file()]
    files += sorted(p for p in out.glob("keys-rank*.txt") if p.is_file())
    files += sorted(p for p in (out / "tensorboard").glob("events.out.tfevents.*") if p.is_file())
    return files


def remove_run_files(out: Path) -> None:
    """Delete :func:`run_files` (and the ``tensorboard`` folder if that leaves it empty)."""
    for path in run_files(out):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (out / "tensorboard").rmdir()


def claim_out(config: TrainConfig, main: bool) -> None:
    """Make ``--out`` ready for a run that does not resume, without ever mixing two runs' logs.

    An ``--out`` holding a checkpoint or log records (:func:`run_files`, TensorBoard aside) is
    refused with one line (``ValueError``) naming ``--resume auto`` and ``--overwrite``; with
    ``--overwrite`` the main process deletes the run's files (never other files). With
    ``--resume auto`` and no ``last.pt`` (a run killed before its first checkpoint) the run's
    files are deleted too: there is nothing to continue.
    """
    out = Path(config.out)
    if config.resume is not None and (config.resume != "auto" or find_resume(config)):
        return
    records = [p for p in run_files(out) if p.parent == out and p.stat().st_size > 0]
    if records and config.resume is None and not config.overwrite:
        raise ValueError(
            f"--out {out} holds a run ({', '.join(p.name for p in records)}): continue it with "
            "--resume auto, or start a new run there with --overwrite (deletes only what a run "
            "writes)"
        )
    if main:
        remove_run_files(out)


class RunLog:
    """Appends records to ``log.jsonl`` and ``log.csv`` (and TensorBoard when installed).

    ``resumed_step``: the step a resume continues from; TensorBoard events after it are purged
    (the text logs are cut by :func:`truncate_logs`).
    """

    def __init__(self, out: Path, resumed_step: int | None = None) -> None:
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

            purge = None if resumed_step is None else resumed_step + 1
            self.tensorboard: Any = SummaryWriter(str(out / "tensorboard"), purge_step=purge)
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

    def sync(self) -> None:
        """Flush and fsync both text logs (before a checkpoint is written)."""
        for f in (self.jsonl, self.csv_file):
            _sync(f)

    def close(self) -> None:
        self.jsonl.close()
        self.csv_file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def _next_batch(iterator: Iterator[dict[str, Any]], shards: Any) -> dict[str, Any]:
    """The loader's next batch (one micro-batch); ``ValueError`` when the shards yield none."""
    try:
        return next(iterator)
    except StopIteration:
        raise ValueError(f"{shards}: the shards yielded no batch") from None


class EmaWeights:
    """Exponential moving average of a module's floating-point parameters and buffers.

    After each update ``avg ← decay·avg + (1 − decay)·weight``; :meth:`applied` swaps the averages
    into the module for a ``with`` block (validation, ``best.pt``) and restores the weights after.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.average = {
            name: value.detach().clone()
            for name, value in module.state_dict().items()
            if isinstance(value, torch.Tensor) and value.is_floating_point()
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for name, value in module.state_dict().items():
            if name in self.average:
                self.average[name].lerp_(value.detach(), 1 - self.decay)

    @contextlib.contextmanager
    def applied(self, module: nn.Module) -> Iterator[None]:
        state = module.state_dict()
        kept = {name: state[name].detach().clone() for name in self.average}
        module.load_state_dict(self.average, strict=False)
        try:
            yield
        finally:
            module.load_state_dict(kept, strict=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.average)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.average[name].copy_(value)


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------
class Trainer:
    """One invocation of a run: :meth:`setup` (in ``__init__``), :meth:`resume`, :meth:`run`.

    ``run`` repeats :meth:`step` (``accum`` micro-batches and one optimiser update),
    :meth:`log` and :meth:`save` (everything an exact resume needs, :meth:`state_dict`) until
    ``stop_after`` or ``steps``.
    """

    def __init__(self, config: TrainConfig) -> None:
        config.validate()
        check_output_folder(config.out)
        config.check_memory(processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        check_class_maps(config.shards, config.val_shards)
        # Before the process group starts, so every rank checks before any rank writes.
        claim_out(config, main=int(os.environ.get("RANK", "0")) == 0)
        self.config = config
        self.proc = setup_process(config.device)
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)  # every rank: --log-keys writes from each
        self.checkpoint = self.out / CHECKPOINT_NAME
        if self.proc.main:
            remove_stale_temporaries(self.checkpoint)  # left by a kill during a checkpoint write
        # Read (and check) the checkpoint before the models are built: a bad file fails fast.
        self.resume_from = find_resume(config)
        self.resume_state = (
            read_checkpoint(self.resume_from, TRAINING_KEYS) if self.resume_from else None
        )
        self.resumed_step: int | None = None
        self.saved_step: int | None = None  # the step last.pt holds, when known
        self.setup()
        self.step_count = 0
        self.batches_consumed = 0
        self.data_seed = config.seed  # the loader's seed; changes only on an inexact resume
        self.rng: dict[str, Any] | None = None  # RNG state to restore after the loader starts
        self.run_log: RunLog | None = None  # rank 0, while running
        self.keys_file: Any = None  # --log-keys, while running

    # -- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Models, the DDP/compiled step module, optimiser and schedule."""
        config, proc = self.config, self.proc
        torch.manual_seed(config.seed)  # identical initialisation on every rank
        self.teacher, self.student, self.criterion, self.t_tap = build_models(config, proc.device)
        self.channels_last = (
            config.channels_last if config.channels_last is not None else proc.device.type == "cuda"
        )
        if self.channels_last:
            self.student.to(memory_format=torch.channels_last)
            self.teacher.to(memory_format=torch.channels_last)
        self.step_module = DistillStep(
            self.student, self.criterion, [s for _, s in config.layer_pairs]
        )
        self.optimizer = self.make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factors())
        self.ema = EmaWeights(self.student, config.ema) if config.ema > 0 else None
        self.best: dict[str, Any] | None = None  # {"step", "kl", ...} of best.pt
        self.held: Any = None  # the --val-shards batches (distill.evaluate.HeldOut), rank 0
        self.naive_baseline: dict[str, Any] | None = None  # the teacher on their naive render

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser over every trainable parameter of the step module, in three groups:
        the RAW front-end (``frontend_lr``, no weight decay: its identity/sRGB initialisation is
        not a small-weight prior), the network's weights (``lr``, ``weight_decay``) and its 1-D
        parameters — norm scales and shifts, biases — (``lr``, no weight decay: shrinking them
        is no regulariser; timm's ``param_groups_weight_decay``)."""
        config = self.config
        front = {id(p) for p in self.student.frontend.parameters()}
        params = [p for p in self.step_module.parameters() if p.requires_grad]
        network = [p for p in params if id(p) not in front]
        groups = [
            {
                "params": [p for p in params if id(p) in front],
                "lr": config.frontend_lr,
                "weight_decay": 0.0,
            },
            {"params": [p for p in network if p.ndim > 1]},
            {"params": [p for p in network if p.ndim <= 1], "weight_decay": 0.0},
        ]
        if config.optimizer == "adamw":
            return torch.optim.AdamW(
                groups, lr=config.lr, weight_decay=config.weight_decay, foreach=True
            )
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            foreach=True,
        )

    def lr_factors(self) -> list[Callable[[int], float]]:
        """Learning-rate multipliers of the three groups: warm-up + cosine (:func:`lr_factor`);
        the network's two are 0 for the first ``freeze_backbone_steps`` steps."""
        config = self.config

        def front(step: int) -> float:
            return lr_factor(step, config.steps, config.warmup_steps, config.min_lr_ratio)

        def backbone(step: int) -> float:
            return 0.0 if step < config.freeze_backbone_steps else front(step)

        return [front, backbone, backbone]

    def prepare(self) -> None:
        """Train/eval modes, DDP and compile wrappers: after :meth:`resume`, before the loop."""
        config, proc = self.config, self.proc
        self.train_mode()
        runner: nn.Module = self.step_module
        if proc.distributed:
            runner = nn.parallel.DistributedDataParallel(
                self.step_module,
                device_ids=[proc.device.index] if proc.device.type == "cuda" else None,
            )
        if config.compile:
            runner = torch.compile(runner)  # type: ignore[assignment]
        self.runner = runner

    def train_mode(self) -> None:
        """The student's training mode: BatchNorm frozen (default with teacher init) and
        dropout/drop-connect off unless ``--dropout`` (:func:`distill.models.distill_mode`)."""
        config = self.config
        freeze_bn = (
            config.freeze_bn if config.freeze_bn is not None else config.student_init == "teacher"
        )
        distill_mode(self.student, freeze_bn=freeze_bn, dropout=config.dropout)

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Score the student (its EMA weights when ``--ema``) on ``--val-shards`` (rank 0).

        Appends ``{"step", "top1_agreement", "top5_agreement", "kl", "best"}`` to
        ``<out>/val.jsonl`` and writes ``<out>/best.pt`` (weights and config, loadable by
        ``distill.checkpoint.load_checkpoint``) when the KL is the lowest so far.
        """
        from distill.evaluate import label_report, load_heldout, score, student_logits

        config = self.config
        if self.held is None:
            self.held = load_heldout(
                config.val_shards,  # type: ignore[arg-type]
                self.teacher,
                crop=config.crop,
                teacher_size=config.teacher_size,
                batch_size=config.batch_size,
                student_input=config.student_input,
                max_batches=config.val_batches,
                device=self.proc.device,
            )
            label_report(self.held, config.val_shards)  # labels → the teacher's classes
            self.naive_baseline = score(self.held.baselines["naive_teacher"], self.held)
        with self.ema.applied(self.student) if self.ema else contextlib.nullcontext():
            metrics = score(student_logits(self.student, self.held), self.held)
            best = self.best is None or metrics["kl"] < self.best["kl"]
            if best:
                self.best = {"step": self.step_count, **metrics}
                weights = {
                    "student": self.student.state_dict(),
                    "config": self.config.to_dict(),
                    "step": self.step_count,
                    "val": metrics,
                }
                save_checkpoint(self.out / BEST_NAME, weights)
        self.train_mode()
        record = {"step": self.step_count, **metrics, "best": best}
        with (self.out / "val.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return record

    # -- checkpoint state --------------------------------------------------------------------
    def state_dict(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """What ``last.pt`` holds: tensors and plain data only (``distill.checkpoint``)."""
        return {
            "student": self.student.state_dict(),
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step_count,
            "batches_consumed": self.batches_consumed,
            "data_seed": self.data_seed,
            "rng": rng,
            "world_size": self.proc.world_size,
            "config": self.config.to_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best": self.best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Weights, optimiser and schedule from a checkpoint (the step is set by :meth:`resume`)."""
        self.student.load_state_dict(state["student"])
        self.criterion.load_state_dict(state["criterion"])
        groups = len(state["optimizer"]["param_groups"])
        if groups != len(self.optimizer.param_groups):
            raise ValueError(
                f"the checkpoint's optimiser has {groups} parameter groups, this version's "
                f"{len(self.optimizer.param_groups)} (1-D parameters are now exempt from weight "
                "decay): it cannot be resumed; start a new --out"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.best = state.get("best")

    def resume(self) -> None:
        """Continue from ``--resume`` (exactly when the data order allows, else warned).

        Log records after the checkpoint's step (written before a kill) are dropped.
        """
        state, path = self.resume_state, self.resume_from
        if state is None or path is None:
            return
        self.resume_state = None  # the tensors now live in the models and the optimiser
        try:
            self.load_state_dict(state)
            plan = plan_resume(state, self.config, self.proc.world_size, self.proc.rank)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
            cause = one_line(err, 200)
            raise ValueError(f"{path}: cannot resume from this checkpoint ({cause})") from None
        self.step_count, self.batches_consumed = plan.step, plan.batches_consumed
        self.data_seed, self.rng = plan.data_seed, plan.rng
        self.resumed_step = self.saved_step = plan.step
        if self.proc.main:
            truncate_logs(self.out, plan.step)
            if plan.changed:
                warn_inexact(path, plan)

    def check_finite_weights(self) -> None:
        """``TrainingDiverged`` if a weight or buffer is NaN/inf (then nothing is saved)."""
        for module in (self.student, self.criterion):
            for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise TrainingDiverged(
                        f"step {self.step_count}: weight {name} is not finite; "
                        f"{self._kept()} (try a lower --lr than {self.config.lr:g})"
                    )

    def _kept(self) -> str:
        if self.saved_step is None:
            return "no checkpoint was written"
        return f"{self.checkpoint} keeps step {self.saved_step}"

    def save(self) -> None:
        """Gather every rank's RNG state; rank 0 writes ``last.pt`` atomically.

        Raises ``TrainingDiverged`` instead when a weight is not finite: NaN weights never
        replace the last good checkpoint.
        """
        self.check_finite_weights()
        proc = self.proc
        # Every record and key of the steps this checkpoint holds reaches the disk first.
        if self.keys_file is not None:
            _sync(self.keys_file)
        if self.run_log is not None:
            self.run_log.sync()
        rng = [rng_state()]
        if proc.distributed:
            rng = [None] * proc.world_size  # type: ignore[list-item]
            dist.all_gather_object(rng, rng_state())
        if proc.main:
            save_checkpoint(self.checkpoint, self.state_dict(rng))
        if proc.distributed:
            dist.barrier()
        self.saved_step = self.step_count

    # -- the loop ----------------------------------------------------------------------------
    def _to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """The batch on the training device; the RAW of at-load samples is made there
        (:func:`distill.unprocess.make_raw` from the batch's ``recipe``)."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        device = self.proc.device
        raw = batch["raw"].to(device, non_blocking=True)
        if "recipe" in batch:
            raw = make_raw(raw, batch["recipe"], self.config.student_input)
        raw = raw.contiguous(memory_format=fmt)
        rgb = batch["rgb"].to(device, non_blocking=True).contiguous(memory_format=fmt)
        wb = batch["wb"].to(device, non_blocking=True)
        return raw, rgb, wb, batch["cls"].to(device, non_blocking=True)

    def step(self, iterator: Iterator[dict[str, Any]]) -> dict[str, float]:
        """One optimiser update over ``accum`` micro-batches; returns the mean loss terms.

        Keys: ``loss``, ``loss_<term>`` and (when the teacher runs) ``agree``, the fraction of
        samples (pixels, for dense logits) whose student top-1 equals the teacher's.
        """
        config, proc = self.config, self.proc
        autocast = torch.autocast(
            proc.device.type, torch.bfloat16, enabled=config.amp and proc.device.type == "cuda"
        )
        totals: dict[str, float] = {}
        agree = torch.zeros((), device=proc.device)
        for micro in range(config.accum):
            batch = _next_batch(iterator, config.shards)
            self.batches_consumed += 1
            if self.keys_file is not None:
                self.keys_file.write("".join(f"{self.step_count}\t{k}\n" for k in batch["key"]))
            raw, rgb, wb, labels = self._to_device(batch)
            teacher_out = None
            if self.criterion.needs_teacher:
                if self.t_tap is not None:
                    self.t_tap.clear()
                with autocast:
                    t_logits = self.teacher(rgb)
                teacher_out = Outputs(t_logits, self.t_tap.features() if self.t_tap else [])
            sync = (
                self.runner.no_sync()  # type: ignore[operator]
                if proc.distributed and micro < config.accum - 1
                else contextlib.nullcontext()
            )
            with sync, autocast:
                total, parts, s_logits = self.runner(raw, wb, teacher_out, labels)
            (total / config.accum).backward()
            for name, value in [("loss", total), *parts.items()]:
                key = name if name == "loss" else f"loss_{name}"
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / config.accum
            if teacher_out is not None:
                reference = match_teacher(teacher_out.logits, s_logits)
                same = s_logits.argmax(1) == reference.argmax(1)
                agree += same.float().mean().detach() / config.accum
        self.check_finite_loss(totals["loss"])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.student)
        self.step_count += 1
        if self.criterion.needs_teacher:
            totals["agree"] = float(agree)
        return totals

    def check_finite_loss(self, loss: float) -> None:
        """``TrainingDiverged`` (on every rank) before the update if any rank's loss is NaN/inf."""
        bad = not math.isfinite(loss)
        if self.proc.distributed:
            flag = torch.tensor([float(bad)], device=self.proc.device)
            dist.all_reduce(flag)
            bad = bool(flag.item() > 0)
        if bad:
            raise TrainingDiverged(
                f"step {self.step_count + 1}: the loss is not finite ({loss}); training stopped "
                f"before the update, {self._kept()} (try a lower --lr than {self.config.lr:g})"
            )

    def log(self, totals: dict[str, float], seconds: float) -> dict[str, Any]:
        """The step's record (averaged over ranks), written by rank 0; returns it."""
        config, proc = self.config, self.proc
        record: dict[str, Any] = {"step": self.step_count, **totals}
        record["lr"] = self.scheduler.get_last_lr()[0]
        if proc.distributed:
            values = torch.tensor(list(record.values())[1:], device=proc.device)
            dist.all_reduce(values)
            record.update(zip(list(record)[1:], (values / proc.world_size).tolist(), strict=True))
            record["lr"] = self.scheduler.get_last_lr()[0]
        record["samples_per_s"] = config.batch_size * config.accum * proc.world_size / seconds
        if self.run_log is not None:
            self.run_log.write(record)
        return record

    def run(self) -> dict[str, Any]:
        """Train to ``stop_after`` or ``steps``; return the summary (see :func:`train`)."""
        config, proc = self.config, self.proc
        self.prepare()
        loader = make_loader_from(
            config.shards,
            config.loader(
                seed=self.data_seed,
                rank=proc.rank,
                world_size=proc.world_size,
                start_batch=self.batches_consumed,
            ),
        )
        end = config.stop_after or config.steps
        self.run_log = RunLog(self.out, self.resumed_step) if proc.main else None
        self.keys_file = (
            (self.out / f"keys-rank{proc.rank}.txt").open("a", encoding="utf-8")
            if config.log_keys
            else None
        )
        bar = _progress(end, self.step_count, config.progress and proc.main)
        validating = config.val_shards is not None and proc.main
        validations = [self.validate()] if validating and self.resumed_step is None else []
        losses: list[float] = []
        started = time.perf_counter()
        samples = 0
        iterator = iter(loader)  # draws a base seed from the global RNG: restore the RNG after it
        if self.rng is not None:
            set_rng_state(self.rng)
        else:
            torch.manual_seed(self.data_seed * 1000 + proc.rank + 1)  # per-rank dropout streams
        try:
            while self.step_count < end:
                t0 = time.perf_counter()
                totals = self.step(iterator)
                samples += config.batch_size * config.accum * proc.world_size
                losses.append(totals["loss"])
                step = self.step_count
                if step % config.log_every == 0 or step == end:
                    record = self.log(totals, time.perf_counter() - t0)
                    if bar is not None:
                        bar.set_postfix(
                            loss=f"{record['loss']:.4f}",
                            agree=f"{record.get('agree', float('nan')):.3f}",
                            sps=f"{record['samples_per_s']:.1f}",
                        )
                if bar is not None:
                    bar.update(1)
                if validating and (
                    step == end or (config.val_every and step % config.val_every == 0)
                ):
                    validations.append(self.validate())
                if step == end or (config.checkpoint_every and step % config.checkpoint_every == 0):
                    self.save()
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                f"interrupted at step {self.step_count}: {self._kept()}; continue with "
                "--resume auto"
            ) from None
        except torch.cuda.OutOfMemoryError as err:
            raise RuntimeError(
                f"CUDA out of memory at batch size {config.batch_size} × crop {config.crop}: "
                f"try --batch-size {max(1, config.batch_size // 2)} --accum {config.accum * 2} "
                "(same effective batch) or a smaller --crop"
            ) from err
        finally:
            if bar is not None:
                bar.close()
            if self.run_log is not None:
                self.run_log.close()
            if self.keys_file is not None:
                self.keys_file.close()
        elapsed = time.perf_counter() - started
        return {
            "steps": self.step_count,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "losses": losses,
            "samples_per_s": samples / elapsed if elapsed > 0 else 0.0,
            "checkpoint": str(self.checkpoint),
            "log": str(self.out / "log.jsonl"),
            "world_size": proc.world_size,
            "validations": validations,
            "naive_baseline": self.naive_baseline,
            "best": self.best,
        }


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) a distillation and return a summary.

    Summary keys: ``steps`` (completed), ``first_loss`` and ``last_loss`` (this invocation),
    ``losses``, ``samples_per_s``, ``checkpoint`` (path), ``log`` (path), ``world_size``,
    ``validations`` (the ``--val-shards`` scores; empty without), ``naive_baseline`` (the teacher
    on the naive render of the held-out RAW, or ``None``), ``best`` (``best.pt``'s step and
    scores, or ``None``).
    """
    trainer = Trainer(config)
    trainer.resume()
    return trainer.run()
