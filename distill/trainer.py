"""Where the student is trained: setup → resume → step → log → save (:class:`Trainer`).

One step = ``accum`` micro-batches of ``batch_size`` samples per process; the teacher sees the
aligned sRGB crop, the student the RAW. Distributed: launched with ``torchrun``, RANK /
WORLD_SIZE / LOCAL_RANK select the process's shard slice (``distill.data.make_loader``), NCCL on
GPU or Gloo on CPU; rank 0 writes logs and checkpoints (``distill.checkpoint``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

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
from distill.config import TrainConfig
from distill.data import make_loader_from
from distill.ema import EmaWeights
from distill.heldout import label_report, load_heldout, score, student_logits
from distill.losses import Outputs, match_teacher
from distill.models import distill_mode
from distill.optim import lr_factors, make_optimizer
from distill.resources import check_output_folder
from distill.runlog import RunLog, append_val_record, claim_out, sync_file, truncate_logs
from distill.runtime import interrupts_deferred, rng_state, set_rng_state, setup_process
from distill.shardlist import check_class_maps
from distill.step import DistillStep, build_models
from distill.unprocess import make_raw
from rawpairs.messages import one_line

__all__ = ["Trainer", "TrainingDiverged", "TrainingInterrupted", "train"]


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite; the last checkpoint was kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training; ``str()`` says which step ``last.pt`` keeps."""


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def _next_batch(iterator: Iterator[dict[str, Any]], shards: Any) -> dict[str, Any]:
    """The loader's next batch (one micro-batch); ``ValueError`` when the shards yield none."""
    try:
        return next(iterator)
    except StopIteration:
        raise ValueError(f"{shards}: the shards yielded no batch") from None


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
        self.optimizer = make_optimizer(config, self.step_module, self.student.frontend)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factors(config))
        self.ema = EmaWeights(self.student, config.ema) if config.ema > 0 else None
        self.best: dict[str, Any] | None = None  # {"step", "kl", ...} of best.pt
        self.held: Any = None  # the --val-shards batches (distill.heldout.HeldOut), rank 0
        self.naive_baseline: dict[str, Any] | None = None  # the teacher on their naive render

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
        append_val_record(self.out, record)
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
            sync_file(self.keys_file)
        if self.run_log is not None:
            self.run_log.sync()
        rng = [rng_state()]
        if proc.distributed:
            rng = [None] * proc.world_size  # type: ignore[list-item]
            dist.all_gather_object(rng, rng_state())
        with interrupts_deferred():  # a Ctrl-C here lands once saved_step names what was saved
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
        self._open_logs()
        bar = _progress(end, self.step_count, config.progress and proc.main)
        validating = config.val_shards is not None and proc.main
        validations = [self.validate()] if validating and self.resumed_step is None else []
        started = time.perf_counter()
        iterator = iter(loader)  # draws a base seed from the global RNG: restore the RNG after it
        if self.rng is not None:
            set_rng_state(self.rng)
        else:
            torch.manual_seed(self.data_seed * 1000 + proc.rank + 1)  # per-rank dropout streams
        try:
            losses = self._train_to(end, iterator, bar, validations if validating else None)
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
            self._close_logs(bar)
        return self._summary(losses, time.perf_counter() - started, validations)

    def _open_logs(self) -> None:
        """The step logs (rank 0) and, with ``--log-keys``, this rank's keys file."""
        config, proc = self.config, self.proc
        self.run_log = RunLog(self.out, self.resumed_step) if proc.main else None
        self.keys_file = (
            (self.out / f"keys-rank{proc.rank}.txt").open("a", encoding="utf-8")
            if config.log_keys
            else None
        )

    def _close_logs(self, bar: Any) -> None:
        if bar is not None:
            bar.close()
        if self.run_log is not None:
            self.run_log.close()
        if self.keys_file is not None:
            self.keys_file.close()

    def _train_to(
        self,
        end: int,
        iterator: Iterator[dict[str, Any]],
        bar: Any,
        validations: list[dict[str, Any]] | None,
    ) -> list[float]:
        """Steps until ``end``, each followed by :meth:`_after_step`; returns their losses.
        ``validations``: the list validation records are appended to (``None``: none)."""
        losses: list[float] = []
        while self.step_count < end:
            t0 = time.perf_counter()
            totals = self.step(iterator)
            losses.append(totals["loss"])
            self._after_step(totals, time.perf_counter() - t0, end, bar, validations)
        return losses

    def _after_step(
        self,
        totals: dict[str, float],
        seconds: float,
        end: int,
        bar: Any,
        validations: list[dict[str, Any]] | None,
    ) -> None:
        """Log (every ``log_every`` steps and at ``end``), validate (every ``val_every``
        steps and at ``end``) and checkpoint (every ``checkpoint_every`` steps and at ``end``)."""
        config, step = self.config, self.step_count
        if step % config.log_every == 0 or step == end:
            record = self.log(totals, seconds)
            if bar is not None:
                bar.set_postfix(
                    loss=f"{record['loss']:.4f}",
                    agree=f"{record.get('agree', float('nan')):.3f}",
                    sps=f"{record['samples_per_s']:.1f}",
                )
        if bar is not None:
            bar.update(1)
        if validations is not None and (
            step == end or (config.val_every and step % config.val_every == 0)
        ):
            validations.append(self.validate())
        if step == end or (config.checkpoint_every and step % config.checkpoint_every == 0):
            self.save()

    def _summary(
        self, losses: list[float], elapsed: float, validations: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """What :meth:`run` returns (see :func:`train`)."""
        config, proc = self.config, self.proc
        samples = len(losses) * config.batch_size * config.accum * proc.world_size
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
