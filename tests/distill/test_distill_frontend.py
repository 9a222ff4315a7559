"""distill.frontend: demosaic, white balance, safe tone curve, and the student's starting point."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distill.config import NORMALIZATIONS
from distill.data import make_loader
from distill.frontend import (
    RawFrontEnd,
    bilinear_demosaic,
    grayworld_gains,
    naive_render,
    srgb_encode,
    white_balance_gains,
)
from distill.models import Teacher, build_student, load_teacher

TF_MEAN, TF_STD = NORMALIZATIONS["tf"]


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return load_teacher()


def grey_card(colour: tuple[float, float, float], side: int = 8) -> torch.Tensor:
    """RGGB planes 1×4×side×side of a flat card of linear camera RGB ``colour``."""
    r, g, b = colour
    return torch.tensor([r, g, g, b]).view(1, 4, 1, 1).expand(1, 4, side, side).clone()


def test_bilinear_demosaic_is_linear_and_exact_on_flat_cards() -> None:
    out = bilinear_demosaic(grey_card((0.2, 0.5, 0.1)))
    assert out.shape == (1, 3, 16, 16)
    torch.testing.assert_close(out, torch.tensor([0.2, 0.5, 0.1]).view(1, 3, 1, 1).expand_as(out))
    a, b = torch.rand(2, 4, 6, 6), torch.rand(2, 4, 6, 6)
    torch.testing.assert_close(
        bilinear_demosaic(2 * a - b), 2 * bilinear_demosaic(a) - bilinear_demosaic(b)
    )


def test_grayworld_gains_neutralise_a_coloured_card() -> None:
    planes = grey_card((0.1, 0.4, 0.2))
    gains = grayworld_gains(planes)
    torch.testing.assert_close(gains, torch.tensor([[4.0, 1.0, 2.0]]))
    balanced = bilinear_demosaic(planes) * gains[:, :, None, None]
    torch.testing.assert_close(balanced, torch.full_like(balanced, 0.4))
    # A black crop does not divide by zero; gains stay within [1/16, 16].
    dark = grayworld_gains(torch.zeros(1, 4, 4, 4))
    torch.testing.assert_close(dark, torch.ones(1, 3))
    extreme = grayworld_gains(grey_card((1e-6, 0.5, 1.0)))
    assert float(extreme.max()) == 16.0 and float(extreme.min()) == 0.5


def test_white_balance_modes_and_errors() -> None:
    planes = grey_card((0.1, 0.4, 0.2))
    assert white_balance_gains(planes, "none") is None
    recorded = torch.tensor([[2.0, 1.0, 1.5]])
    assert torch.equal(white_balance_gains(planes, "metadata", recorded), recorded)
    with pytest.raises(ValueError, match=r"needs the samples' gains \(batch\['wb'\]\)"):
        white_balance_gains(planes, "metadata")
    with pytest.raises(ValueError, match="wb gains must be B×3"):
        white_balance_gains(planes, "metadata", torch.ones(2, 3))
    with pytest.raises(ValueError, match="unknown white balance 'auto'"):
        white_balance_gains(planes, "auto")
    with pytest.raises(ValueError, match="unknown white balance 'auto'"):
        RawFrontEnd(TF_MEAN, TF_STD, wb="auto")


def test_srgb_encode_matches_the_standard_and_has_finite_gradients() -> None:
    x = torch.tensor([-0.5, 0.0, 0.001, 0.0031308, 0.01, 0.18, 0.5, 1.0, 1.5], requires_grad=True)
    gamma = torch.tensor(2.4, requires_grad=True)
    y = srgb_encode(x, gamma)
    expected = [0.0, 0.0, 0.01292, 0.04045, 0.09985, 0.46135, 0.73536, 1.0, 1.0]
    torch.testing.assert_close(y.detach(), torch.tensor(expected), atol=1e-4, rtol=0)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(gamma.grad)
    assert x.grad[0] == 0 and x.grad[-1] == 0  # clipped inputs
    assert x.grad[1] == pytest.approx(12.92)  # the linear segment's slope at exactly 0
    assert float(gamma.grad) != 0


def test_front_end_has_finite_gradients_on_zero_and_negative_raw() -> None:
    frontend = RawFrontEnd(TF_MEAN, TF_STD, wb="grayworld")
    raw = torch.rand(2, 4, 6, 6) * 1.2 - 0.1  # noise below black and values above white
    raw[0, :, :2] = 0.0
    raw[1] = 0.0  # an entirely black image
    raw.requires_grad_(True)
    out = frontend(raw)
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    for name, param in [("raw", raw), *frontend.named_parameters()]:
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert float(frontend.log_gamma.grad) != 0 and frontend.matrix.grad.abs().sum() > 0


def test_front_end_starts_at_the_naive_render_and_keeps_its_mode() -> None:
    raw, recorded = torch.rand(3, 4, 8, 8) * 0.6, torch.rand(3, 3) + 0.5
    for wb in ("none", "grayworld", "metadata"):
        frontend = RawFrontEnd(TF_MEAN, TF_STD, wb=wb)
        expected = (naive_render(raw, wb, recorded) - frontend.mean) / frontend.std
        torch.testing.assert_close(frontend(raw, recorded), expected, atol=1e-6, rtol=1e-6)
        # The mosaic form gives the same image.
        torch.testing.assert_close(
            frontend(F.pixel_shuffle(raw, 2), recorded), frontend(raw, recorded)
        )
        restored = RawFrontEnd(TF_MEAN, TF_STD, wb="none")
        restored.load_state_dict(frontend.state_dict())
        assert restored.wb == wb
    fixed = RawFrontEnd(TF_MEAN, TF_STD, learn_colour=False, learn_tone=False)
    assert not any(p.requires_grad for p in fixed.parameters())


@pytest.mark.parametrize("wb", ["none", "grayworld", "metadata"])
def test_student_starts_equal_to_the_teacher_on_the_naive_render(
    teacher: Teacher, pair_shards: Path, wb: str
) -> None:
    # pair_shards cycles through all four CFA layouts; the loader re-phases every crop to RGGB.
    student = build_student(teacher, wb=wb).eval()
    loader = make_loader(str(pair_shards), batch_size=12, crop=32, teacher_size=32, repeat=False)
    samples = 0
    with torch.no_grad():
        for batch in loader:
            raw, recorded = batch["raw"], batch["wb"]
            expected = teacher(naive_render(raw, wb, recorded))
            got = student(raw, recorded)
            torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)
            assert torch.equal(got.argmax(1), expected.argmax(1))
            samples += len(raw)
    assert samples == 24
