"""distill.losses: golden values on hand-computed tensors, shapes, registry errors."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import (
    LOSSES,
    CombinedLoss,
    CrossEntropyLoss,
    FeatureLoss,
    HardLabelLoss,
    KDLoss,
    LogitMSELoss,
    Outputs,
    build_loss,
)

NO_LABELS = torch.tensor([-1])
# p = (3/4, 1/4) against q = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2).
KL_31 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def logits(*rows: list[float]) -> Outputs:
    return Outputs(torch.tensor(rows, dtype=torch.float32))


def test_kd_golden_value_at_t1() -> None:
    loss = KDLoss(temperature=1.0)(logits([0.0, 0.0]), logits([math.log(3), 0.0]), NO_LABELS)
    assert loss.item() == pytest.approx(KL_31, rel=1e-6)


def test_kd_temperature_softens_and_scales_by_t_squared() -> None:
    # At T = 2, teacher logits (2 ln 3, 0) soften to p = (3/4, 1/4): the same KL, times T² = 4.
    loss = KDLoss(temperature=2.0)(logits([0.0, 0.0]), logits([2 * math.log(3), 0.0]), NO_LABELS)
    assert loss.item() == pytest.approx(4 * KL_31, rel=1e-6)


def test_kd_is_batch_mean_and_zero_at_match() -> None:
    s = logits([0.0, 0.0], [1.0, 2.0])
    t = logits([math.log(3), 0.0], [1.0, 2.0])
    assert KDLoss(1.0)(s, t, NO_LABELS).item() == pytest.approx(KL_31 / 2, rel=1e-6)
    assert KDLoss(3.0)(t, t, NO_LABELS).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_gradient_points_student_towards_teacher() -> None:
    s = torch.zeros(1, 2, requires_grad=True)
    KDLoss(1.0)(Outputs(s), logits([math.log(3), 0.0]), NO_LABELS).backward()
    # d/dz_s KL = q − p = (1/2 − 3/4, 1/2 − 1/4).
    torch.testing.assert_close(s.grad, torch.tensor([[-0.25, 0.25]]))


def test_mse_golden_value() -> None:
    loss = LogitMSELoss()(logits([1.0, 2.0, 3.0]), logits([1.0, 0.0, 6.0]), NO_LABELS)
    assert loss.item() == pytest.approx((0 + 4 + 9) / 3)


def test_hard_label_loss_uses_teacher_top1() -> None:
    loss = HardLabelLoss()(logits([0.0, math.log(3)]), logits([5.0, 1.0]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(0.25), rel=1e-6)  # labels are ignored


def test_cross_entropy_ignores_unlabelled_samples() -> None:
    s = logits([0.0, math.log(3)], [9.0, -9.0])
    loss = CrossEntropyLoss()(s, None, torch.tensor([1, -1]))
    assert loss.item() == pytest.approx(-math.log(0.75), rel=1e-6)
    empty = CrossEntropyLoss()(s, None, torch.tensor([-1, -1]))
    assert empty.item() == 0.0


def test_feature_loss_adapters_and_golden_value() -> None:
    loss = FeatureLoss(student_channels=[8, 4], teacher_channels=[16, 4])
    assert isinstance(loss.adapters[0], torch.nn.Conv2d)
    assert loss.adapters[0].weight.shape == (16, 8, 1, 1)
    assert isinstance(loss.adapters[1], torch.nn.Identity)
    with torch.no_grad():
        loss.adapters[0].weight.zero_()
    fs = [torch.randn(2, 8, 5, 5), torch.full((2, 4, 3, 3), 1.0)]
    ft = [torch.full((2, 16, 5, 5), 2.0), torch.full((2, 4, 3, 3), 4.0)]
    value = loss(Outputs(torch.zeros(2, 3), fs), Outputs(torch.zeros(2, 3), ft), NO_LABELS)
    assert value.item() == pytest.approx((4.0 + 9.0) / 2)


def test_feature_loss_rejects_mismatches() -> None:
    with pytest.raises(ValueError, match="one teacher layer per student layer"):
        FeatureLoss([8], [8, 8])
    loss = FeatureLoss([4], [4])
    with pytest.raises(ValueError, match="feature map"):
        loss(
            Outputs(torch.zeros(1, 2), [torch.zeros(1, 4, 3, 3)]),
            Outputs(torch.zeros(1, 2), [torch.zeros(1, 4, 6, 6)]),
            NO_LABELS,
        )


def test_logit_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"student shape \(1, 10\) != teacher shape \(1, 1000\)"):
        KDLoss()(Outputs(torch.zeros(1, 10)), Outputs(torch.zeros(1, 1000)), NO_LABELS)


def test_registry_builds_by_name_and_rejects_unknown() -> None:
    assert set(LOSSES) == {"kd", "mse", "feature", "ce", "hard"}
    assert build_loss("kd", temperature=2.0).temperature == 2.0
    with pytest.raises(ValueError, match="unknown loss 'kl'"):
        build_loss("kl")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        build_loss("kd", temperature=0.0)


def test_combined_loss_weights_terms_and_drops_zero_weights() -> None:
    combined = CombinedLoss({"kd": 2.0, "mse": 0.5, "hard": 0.0}, {"kd": {"temperature": 1.0}})
    assert set(combined.terms) == {"kd", "mse"}
    assert combined.needs_teacher
    s, t = logits([0.0, 0.0]), logits([math.log(3), 0.0])
    total, parts = combined(s, t, NO_LABELS)
    mse = (math.log(3) ** 2) / 2
    assert parts["kd"].item() == pytest.approx(KL_31, rel=1e-6)
    assert total.item() == pytest.approx(2 * KL_31 + 0.5 * mse, rel=1e-6)
    assert not CombinedLoss({"ce": 1.0}).needs_teacher


@pytest.mark.parametrize(
    ("weights", "message"),
    [({"kl": 1.0}, "unknown loss"), ({"kd": -1.0}, "must be ≥ 0"), ({"kd": 0.0}, "no loss")],
)
def test_combined_loss_rejects_bad_weights(weights: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CombinedLoss(weights)
