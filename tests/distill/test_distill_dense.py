"""Dense (segmentation) distillation: per-pixel losses, alignment, teachers, metrics, training."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.data import make_loader
from distill.evaluate import evaluate, summarize
from distill.frontend import naive_render
from distill.heldout import HeldOut
from distill.losses import CombinedLoss, HardLabelLoss, KDLoss, Outputs, match_teacher
from distill.metrics import (
    SampleValues,
    intervals,
    iou_per_class,
    paired_intervals,
    segment_values,
)
from distill.models import DenseClassifier, Teacher, build_student, load_teacher, task_of
from distill.step import check_task
from distill.train import TrainConfig, train


def _per_pixel_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> float:
    """Σ_k p log p/q at every position, averaged over positions, × T² (a direct loop)."""
    values = []
    s = student.permute(0, 2, 3, 1).reshape(-1, student.shape[1]).double() / t
    r = teacher.permute(0, 2, 3, 1).reshape(-1, teacher.shape[1]).double() / t
    for zs, zt in zip(s, r, strict=True):
        p, log_p, log_q = zt.softmax(0), zt.log_softmax(0), zs.log_softmax(0)
        values.append(float((p * (log_p - log_q)).sum()))
    return sum(values) / len(values) * t * t


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kd_is_the_per_pixel_kl_averaged_over_every_pixel(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    loss = KDLoss(temperature)(Outputs(student), Outputs(teacher), torch.full((2,), -1))
    assert float(loss) == pytest.approx(_per_pixel_kl(student, teacher, temperature), rel=1e-5)


def test_kd_on_classification_logits_is_unchanged() -> None:
    # Per prediction = per sample: the same value (bit for bit) as KL with batchmean.
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(5, 10, generator=g), torch.randn(5, 10, generator=g)
    loss = KDLoss(4.0)(Outputs(student), Outputs(teacher), torch.full((5,), -1))
    log_q, log_p = F.log_softmax(student / 4, 1), F.log_softmax(teacher / 4, 1)
    expected = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * 16
    assert torch.equal(loss, expected)


def test_teacher_maps_are_resized_to_the_students() -> None:
    teacher = torch.randn(1, 2, 8, 8)
    resized = match_teacher(teacher, torch.zeros(1, 2, 16, 16))
    assert resized.shape == (1, 2, 16, 16)
    # A constant map stays constant; a smooth ramp keeps its mean (pixel centres aligned).
    flat = torch.full((1, 2, 4, 4), 3.0)
    assert torch.allclose(match_teacher(flat, torch.zeros(1, 2, 9, 7)), torch.tensor(3.0))
    assert match_teacher(torch.zeros(2, 5), torch.zeros(2, 5)).shape == (2, 5)
    with pytest.raises(ValueError, match="dense but the student's"):
        match_teacher(teacher, torch.zeros(1, 2))
    # The losses compare at the student's size.
    student = torch.randn(1, 2, 16, 16, requires_grad=True)
    loss = KDLoss(1.0)(Outputs(student), Outputs(teacher), torch.tensor([-1]))
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_hard_labels_are_the_teachers_argmax_per_pixel() -> None:
    teacher = torch.zeros(1, 2, 2, 2)
    teacher[0, 1, 0, :] = 5.0  # top row: class 1; bottom row: class 0
    student = torch.zeros(1, 2, 2, 2)
    loss = HardLabelLoss()(Outputs(student), Outputs(teacher), torch.tensor([-1]))
    assert float(loss) == pytest.approx(math.log(2))  # uniform student: −log ½ at every pixel
    student[0, 1, 0, :], student[0, 0, 1, :] = 20.0, 20.0  # right everywhere
    assert float(HardLabelLoss()(Outputs(student), Outputs(teacher), teacher[:, 0, 0, 0])) < 1e-6


def test_supervised_loss_refuses_dense_logits() -> None:
    loss = CombinedLoss({"ce": 1.0})
    with pytest.raises(ValueError, match="one label per image"):
        loss(Outputs(torch.zeros(1, 2, 4, 4)), None, torch.tensor([1]))
    with pytest.raises(ValueError, match="per-pixel labels"):
        TrainConfig(shards="x", task="segment", objective="supervised").validate()


class _EdgeNet(nn.Module):
    """A fixed, fully convolutional dense 'teacher': 4 classes from oriented 5×5 filters of
    the RGB, sharp enough that a one-pixel shift changes its map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, padding=2)
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            self.conv.weight.copy_(torch.randn(4, 3, 5, 5, generator=g) * 3)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _dense_teacher() -> Teacher:
    return Teacher(_EdgeNet(), "none", "edges")


def test_a_one_pixel_misalignment_of_raw_and_rgb_is_seen_by_the_loss() -> None:
    # The student at initialisation is the teacher on the naive render of its RAW, so against
    # the teacher on that render (a perfectly aligned RGB) the per-pixel KD is 0; shifting the
    # RGB by one pixel either way makes it clearly positive.
    teacher = _dense_teacher()
    student = build_student(teacher, wb="none").eval()
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(2, 4, 16, 16, generator=g)
    rgb = naive_render(raw)
    kd = KDLoss(1.0)
    with torch.no_grad():
        s_out = Outputs(student(raw))
        aligned = float(kd(s_out, Outputs(teacher(rgb)), torch.tensor([-1, -1])))
        for shift, dim in ((1, 3), (-1, 3), (1, 2)):
            shifted = torch.roll(rgb, shift, dim)
            moved = float(kd(s_out, Outputs(teacher(shifted)), torch.tensor([-1, -1])))
            assert moved > 0.01 and moved > 1000 * aligned, (shift, dim, moved, aligned)
    assert aligned < 1e-4


def test_loader_pairs_stay_pixel_aligned_under_flips_and_every_cfa(pair_shards: Path) -> None:
    # Every training sample (random crops, flips, CFA phases re-phased to RGGB): the dense
    # teacher's map on the stored RGB is closer to its map on the RAW's ISP render than to the
    # same map one pixel off.
    teacher = _dense_teacher()
    loader = make_loader(
        str(pair_shards), batch_size=8, crop=32, teacher_size=32, repeat=True, hflip=True,
        isp_reference=True, shuffle_buffer=4, seed=0,
    )  # fmt: skip
    batch = next(iter(loader))
    kd = KDLoss(1.0)
    for i in range(len(batch["key"])):
        rgb, isp = batch["rgb"][i : i + 1], batch["isp"][i : i + 1]
        reference = Outputs(teacher(isp))
        aligned = float(kd(reference, Outputs(teacher(rgb)), torch.tensor([-1])))
        for shift in (1, -1):
            moved = float(
                kd(reference, Outputs(teacher(torch.roll(rgb, shift, 3))), torch.tensor([-1]))
            )
            assert aligned < moved, (batch["key"][i], aligned, moved)


def test_dense_classifier_averages_to_the_classifier() -> None:
    classifier = load_teacher("efficientnet-lite0")
    dense = load_teacher("efficientnet-lite0-dense")
    assert isinstance(dense.net, DenseClassifier)
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    maps = dense(x)
    assert maps.shape == (2, 1000, 3, 3) and task_of(maps) == "segment"
    torch.testing.assert_close(maps.mean((2, 3)), classifier(x), atol=1e-4, rtol=1e-4)
    assert task_of(classifier(x)) == "classify"
    assert dense.classes is not None and len(dense.classes) == 1000


def test_task_checks_name_the_mismatch() -> None:
    config = TrainConfig(shards="x", task="segment", teacher="efficientnet-lite0")
    with pytest.raises(ValueError, match="--task segment"):
        check_task(config, torch.zeros(1, 10), torch.zeros(1, 10))
    config = TrainConfig(shards="x")
    with pytest.raises(ValueError, match="same classes the same way"):
        check_task(config, torch.zeros(1, 2, 8, 8), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="same classes"):
        check_task(config, torch.zeros(1, 2, 8, 8), torch.zeros(1, 3, 8, 8))
    assert check_task(config, torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 16, 16)) == "segment"


def test_a_dict_output_is_read_as_its_out_entry() -> None:
    class Wrapped(nn.Module):  # torchvision's segmentation models return {"out", "aux"}
        def __init__(self) -> None:
            super().__init__()
            self.body = _EdgeNet()

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": self.body(x), "aux": x}

    teacher = Teacher(Wrapped(), "none", "wrapped")
    assert teacher(torch.rand(1, 3, 8, 8)).shape == (1, 4, 8, 8)
    student = build_student(teacher, wb="none")
    assert student(torch.rand(1, 4, 4, 4)).shape == (1, 4, 8, 8)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def _one_hot_map(labels: list[list[int]], classes: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(labels), classes).permute(2, 0, 1)[None].float() * 10


def test_segment_values_golden() -> None:
    teacher = _one_hot_map([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], 3)
    model = _one_hot_map([[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 1, 1]], 3)
    values = segment_values(model, teacher, 4, person=1)
    assert values.means["pixel_agreement"][0] == pytest.approx(14 / 16)
    assert values.counts["intersection"][0].tolist() == [8, 6, 0]
    assert values.counts["predicted"][0].tolist() == [10, 6, 0]
    assert values.counts["target"][0].tolist() == [8, 8, 0]
    summary = values.summary()
    # IoU: background 8/10, person 6/8; class 2 never occurs and is not averaged.
    assert summary["miou"] == pytest.approx((0.8 + 0.75) / 2)
    assert summary["person_iou"] == pytest.approx(0.75)
    assert summary["kl"] > 0
    assert segment_values(teacher, teacher, 4).summary()["kl"] == pytest.approx(0, abs=1e-6)


def test_iou_comes_from_one_confusion_over_the_set() -> None:
    # Two images: one all person and right, one with a tiny wrong person blob. Mean of per-image
    # IoUs would be (1 + 0)/2; the set's IoU counts pixels: 16 / (16 + 1).
    teacher = torch.cat([_one_hot_map([[1] * 4] * 4, 2), _one_hot_map([[0] * 4] * 4, 2)])
    model = teacher.clone()
    model[1, :, 0, 0] = torch.tensor([0.0, 10.0])
    values = segment_values(model, teacher, 4, person=1)
    assert values.summary()["person_iou"] == pytest.approx(16 / 17)
    np.testing.assert_allclose(
        iou_per_class(np.array([3, 0]), np.array([4, 0]), np.array([3, 0])), [0.75, np.nan]
    )


def test_segment_metrics_at_the_crop_resolution() -> None:
    # A coarse 2×2 teacher grid and a 4×4 model map are compared at 8×8.
    teacher = torch.randn(2, 3, 2, 2)
    values = segment_values(torch.randn(2, 3, 4, 4), teacher, 8)
    assert values.counts["target"].sum(1).tolist() == [64, 64]


def test_bootstrap_intervals_for_dense_metrics() -> None:
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 2, 8, 8, generator=g)
    model = teacher + torch.randn(6, 2, 8, 8, generator=g)
    values = segment_values(model, teacher, 8, person=1)
    sources = ["a", "a", "b", "b", "c", "c"]
    cis = intervals(values, sources, resamples=300)
    summary = values.summary()
    for metric, ci in cis.items():
        assert ci is not None and ci[0] <= summary[metric] <= ci[1], metric
    same = paired_intervals(values, values, sources, resamples=300)
    assert all(v == [0.0, 0.0, 0.0] for v in same.values())
    worse = segment_values(torch.zeros_like(model), teacher, 8, person=1)
    diff = paired_intervals(values, worse, sources, resamples=300)["pixel_agreement"]
    assert diff is not None and diff[0] > 0
    averaged = values.mean_over([values])
    assert averaged.summary() == pytest.approx(summary)
    assert SampleValues.concat([values, values]).samples == 12


def test_summary_of_a_dense_held_out_set() -> None:
    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, 2, 8, 8, generator=g)]
    held = HeldOut(
        teacher=teacher,
        labels=[torch.tensor([-1, -1])],
        keys=["a_c0", "b_c0"],
        baselines={"naive_teacher": [teacher[0] * 0.5]},
        task="segment",
        crop=8,
        classes=("background", "person"),
    )
    out = summarize([teacher[0]], held, resamples=100)
    assert out["task"] == "segment"
    assert out["metrics"] == ["pixel_agreement", "miou", "person_iou", "kl"]
    assert out["student"]["pixel_agreement"] == 1.0 and out["student"]["miou"] == 1.0
    assert out["student"]["accuracy"] is None
    assert out["student"]["vs"]["naive_teacher"]["kl"][0] < 0


# ---------------------------------------------------------------------------------------------
# Training and evaluation end to end, with a dense teacher that needs no download
# ---------------------------------------------------------------------------------------------
def test_dense_distillation_trains_and_evaluates(pair_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = train(
        TrainConfig(
            shards=str(pair_shards), out=str(out), steps=2, batch_size=2, crop=64,
            task="segment", teacher="efficientnet-lite0-dense", num_workers=0,
            progress=False, device="cpu", warmup_steps=1,
        )
    )  # fmt: skip
    assert summary["steps"] == 2 and all(math.isfinite(x) for x in summary["losses"])
    teacher = load_teacher("efficientnet-lite0-dense")
    student = build_student(teacher, wb="none")
    metrics = evaluate(student, teacher, pair_shards, batch_size=4, crop=64, max_batches=1)
    assert metrics["task"] == "segment"
    # At initialisation the student is the teacher on the naive render.
    for metric in ("pixel_agreement", "miou"):
        assert metrics["student"][metric] == pytest.approx(metrics["naive_teacher"][metric])
    assert metrics["student"]["person_iou"] is None  # ImageNet has no "person" class


def test_a_users_dense_factory_teacher(
    pair_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bring your own: any module:factory returning dense logits (README: torchvision's
    # DeepLabV3-MobileNetV3 the same way); random weights, no download.
    (tmp_path / "my_segmenter.py").write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),\n"
        "                               torch.nn.Conv2d(8, 3, 1))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    train(
        TrainConfig(
            shards=str(pair_shards), out=str(out), steps=1, batch_size=2, crop=32,
            task="segment", teacher="my_segmenter:build", num_workers=0, progress=False,
            device="cpu",
        )
    )  # fmt: skip
    assert (out / "last.pt").exists()
    sys.modules.pop("my_segmenter", None)
