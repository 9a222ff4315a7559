"""The distillation recipe in distill.trainer: parameter groups, frozen backbone, no dropout,
validation during training with best.pt, weight EMA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill.checkpoint import load_checkpoint
from distill.config import TrainConfig
from distill.ema import EmaWeights
from distill.evaluate import evaluate
from distill.models import build_student, load_teacher
from distill.trainer import Trainer, train


def tiny(pair_shards: Path, out: Path, **overrides: object) -> TrainConfig:
    values = {
        "shards": str(pair_shards), "out": str(out), "steps": 2, "batch_size": 4, "crop": 32,
        "num_workers": 0, "progress": False, "device": "cpu", "warmup_steps": 0, "lr": 1e-3,
        "raw_wb": "grayworld",
    }  # fmt: skip
    return TrainConfig(**{**values, **overrides})  # type: ignore[arg-type]


def test_frozen_backbone_steps_train_only_the_front_end(pair_shards: Path, tmp_path: Path) -> None:
    config = tiny(
        pair_shards, tmp_path, steps=4, stop_after=2, freeze_backbone_steps=2, frontend_lr=1e-2
    )
    trainer = Trainer(config)
    groups = trainer.optimizer.param_groups
    assert groups[0]["lr"] == pytest.approx(1e-2) and groups[0]["weight_decay"] == 0.0
    assert groups[1]["lr"] == 0.0  # frozen at step 0
    front = {id(p) for p in trainer.student.frontend.parameters()}
    assert {id(p) for p in groups[0]["params"]} == front
    before = {k: v.clone() for k, v in trainer.student.state_dict().items() if "frontend" not in k}
    matrix = trainer.student.frontend.matrix.detach().clone()
    trainer.run()
    after = trainer.student.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not torch.equal(trainer.student.frontend.matrix.detach(), matrix)
    assert trainer.optimizer.param_groups[1]["lr"] > 0  # unfrozen from step 2 on


def test_without_dropout_the_training_forward_equals_the_evaluated_one(
    pair_shards: Path, tmp_path: Path
) -> None:
    trainer = Trainer(tiny(pair_shards, tmp_path))
    trainer.prepare()
    raw, wb = torch.rand(2, 4, 16, 16), torch.ones(2, 3)
    with torch.no_grad():
        training = trainer.student(raw, wb)
        torch.testing.assert_close(trainer.student.eval()(raw, wb), training)


def test_validation_keeps_best_by_kl_and_best_pt_loads(pair_shards: Path, tmp_path: Path) -> None:
    config = tiny(pair_shards, tmp_path, steps=3, val_shards=str(pair_shards), val_every=1,
                  val_batches=2, lr=0.05, frontend_lr=0.5)  # fmt: skip
    summary = train(config)
    records = [json.loads(line) for line in (tmp_path / "val.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    best = min(records, key=lambda r: r["kl"])
    assert summary["best"]["step"] == best["step"] and summary["best"]["kl"] == best["kl"]
    assert records[0]["best"] is True  # the first validation is the best so far
    student, teacher, saved = load_checkpoint(tmp_path / "best.pt")
    assert saved["raw_wb"] == "grayworld" and student.frontend.wb == "grayworld"
    # best.pt holds the scored weights: re-evaluating them gives the recorded KL.
    metrics = evaluate(student, teacher, str(pair_shards), batch_size=4, crop=32, max_batches=2)
    assert metrics["student"]["kl"] == pytest.approx(best["kl"], rel=1e-5)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["best"]["step"] == best["step"]


def test_ema_average_and_swap() -> None:
    teacher = load_teacher()
    student = build_student(teacher, wb="none")
    ema = EmaWeights(student, decay=0.5)
    original = student.frontend.gains.detach().clone()
    with torch.no_grad():
        student.frontend.gains.add_(2.0)
    ema.update(student)
    torch.testing.assert_close(ema.average["frontend.gains"], original + 1.0)  # halfway
    with ema.applied(student):
        torch.testing.assert_close(student.frontend.gains.detach(), original + 1.0)
    torch.testing.assert_close(student.frontend.gains.detach(), original + 2.0)  # restored
