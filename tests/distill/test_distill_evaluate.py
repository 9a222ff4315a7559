"""distill.evaluate (naive render, scores, report, CLI) and distill.export (TorchScript, ONNX)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from distill import evaluate as ev
from distill import export
from distill.checkpoint import load_checkpoint
from distill.evaluate import evaluate
from distill.frontend import naive_render, srgb_encode
from distill.heldout import HeldOut, score, source_of
from distill.metrics import bootstrap_ci
from distill.models import build_student, load_teacher
from distill.train import TrainConfig, train


def test_srgb_encode_matches_the_standard() -> None:
    x = torch.tensor([-0.1, 0.0, 0.002, 0.0031308, 0.18, 1.0, 1.5])
    expected = [0.0, 0.0, 0.02584, 0.04045, 0.46135, 1.0, 1.0]
    torch.testing.assert_close(srgb_encode(x), torch.tensor(expected), atol=1e-4, rtol=0)


def test_naive_render_of_a_flat_grey_card_is_flat() -> None:
    # Camera RGB (0.2, 0.5, 0.1) everywhere: every pixel renders to its sRGB encoding,
    # borders included (normalised convolution).
    planes = torch.tensor([0.2, 0.5, 0.5, 0.1]).view(1, 4, 1, 1).expand(2, 4, 6, 5)
    out = naive_render(planes)
    assert out.shape == (2, 3, 12, 10)
    expected = srgb_encode(torch.tensor([0.2, 0.5, 0.1])).view(1, 3, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected)


def test_naive_render_interpolates_a_ramp_exactly_inside() -> None:
    # A horizontal linear ramp in every colour is reproduced exactly away from the border.
    h, w = 8, 10
    ramp = (torch.arange(w, dtype=torch.float32) / 20).expand(h, w)
    mosaic = ramp[None, None]
    out = naive_render(mosaic)
    torch.testing.assert_close(
        out[0, :, 1:-1, 1:-1], srgb_encode(ramp)[1:-1, 1:-1].expand(3, -1, -1)
    )
    torch.testing.assert_close(naive_render(torch.nn.functional.pixel_unshuffle(mosaic, 2)), out)
    with pytest.raises(ValueError, match="B×4×h×w"):
        naive_render(torch.zeros(1, 3, 4, 4))


def test_scores_golden_values() -> None:
    teacher = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    model = torch.tensor([[0.0, 1.0, 0.0], [0.0, 5.0, 0.0]])
    held = HeldOut(teacher=[teacher], labels=[torch.tensor([1, -1])], keys=["a_c0", "b_c0"])
    summary = score([model], held)
    assert summary["top1_agreement"] == 0.5  # row 1 disagrees (1 vs 0), row 2 agrees
    assert summary["top5_agreement"] == 1.0  # only 3 classes: always in the top 5
    assert summary["accuracy"] == 1.0  # the one labelled sample (class 1) is predicted 1

    def kl(p_logits: list[float], q_logits: list[float]) -> float:
        p = [math.exp(v) / sum(math.exp(u) for u in p_logits) for v in p_logits]
        q = [math.exp(v) / sum(math.exp(u) for u in q_logits) for v in q_logits]
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))

    expected = (kl([3, 0, 0], [0, 1, 0]) + kl([0, 2, 0], [0, 5, 0])) / 2
    assert summary["kl"] == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def checkpoint(pair_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval_run")
    train(
        TrainConfig(
            shards=str(pair_shards), out=str(out), steps=1, batch_size=2, crop=32,
            num_workers=0, progress=False, device="cpu",
        )
    )  # fmt: skip
    return out / "last.pt"


def test_evaluate_reports_student_baselines_and_intervals(pair_shards: Path) -> None:
    teacher = load_teacher()
    student = build_student(teacher, wb="none")
    metrics = evaluate(student, teacher, pair_shards, batch_size=8, crop=32, max_batches=2)
    assert metrics["samples"] == 16 and metrics["sources"] >= 2
    assert 0 < metrics["labelled"] < 16
    for name in ("student", "naive_teacher", "grayworld_teacher", "isp_teacher"):
        values = metrics[name]
        assert 0 <= values["top1_agreement"] <= values["top5_agreement"] <= 1
        assert values["kl"] > 0
        for metric, (lo, hi) in values["ci"].items():
            assert lo <= values[metric] <= hi, (name, metric)
    # A student without white balance starts as the teacher on the naive render: no difference.
    for metric in ("top1_agreement", "top5_agreement"):
        assert metrics["student"][metric] == metrics["naive_teacher"][metric]
        assert metrics["student"]["vs"]["naive_teacher"][metric] == [0.0, 0.0, 0.0]
    assert metrics["student"]["kl"] == pytest.approx(metrics["naive_teacher"]["kl"], abs=1e-4)
    assert 0 <= metrics["teacher"]["accuracy"] <= 1  # labels here are photo indices, not ImageNet


def test_bootstrap_resamples_whole_sources() -> None:
    assert source_of("photos_astronaut_png_1a2b3c4d_c0012") == "photos_astronaut_png_1a2b3c4d"
    assert source_of("no-crop-index") == "no-crop-index"
    # Two sources, one always right, one always wrong: a resample is all-right, all-wrong or
    # half and half, whatever the number of crops per source.
    values = np.array([1.0] * 50 + [0.0] * 50)
    sources = ["a"] * 50 + ["b"] * 50
    lo, hi = bootstrap_ci(values, sources, resamples=500)
    assert (lo, hi) == (0.0, 1.0)
    assert bootstrap_ci(values, sources, resamples=500) == (lo, hi)  # deterministic
    # Identical sources give a zero-width interval at the mean.
    same = bootstrap_ci(np.array([1.0, 0.0] * 4), ["a", "a", "b", "b"] * 2, resamples=200)
    assert same == (0.5, 0.5)
    with pytest.raises(ValueError, match="one source per value"):
        bootstrap_ci(np.ones(3), ["a", "b"])


def test_checkpoint_round_trip_and_cli(checkpoint: Path, pair_shards: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, weights_only=False)
    student, _, config = load_checkpoint(checkpoint)
    for name, value in student.state_dict().items():
        assert torch.equal(value, state["student"][name]), name
    assert config["crop"] == 32
    out = tmp_path / "report"
    args = ["--shards", str(pair_shards), "--checkpoint", str(checkpoint), "--out", str(out)]
    assert ev.main([*args, "--max-batches", "1", "--batch-size", "4"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 4
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not a distill\.train checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_export_torchscript_and_onnx_message(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert export.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 0
    scripted = torch.jit.load(str(tmp_path / "student.torchscript.pt"))
    student, _, _ = load_checkpoint(checkpoint)
    raw, wb = torch.rand(3, 4, 16, 16), torch.rand(3, 3) + 0.5
    assert student.frontend.wb == "metadata"  # the default: the graph takes the gains too
    with torch.no_grad():
        torch.testing.assert_close(scripted(raw, wb), student(raw, wb), rtol=1e-4, atol=1e-4)
    err = capsys.readouterr().err
    if importlib.util.find_spec("onnx") is None:
        assert export.ONNX_MISSING in err
        assert not (tmp_path / "student.onnx").exists()
    else:
        assert (tmp_path / "student.onnx").stat().st_size > 0


def test_cli_prints_a_short_table_and_writes_the_json(
    checkpoint: Path, pair_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    json_path = tmp_path / "nested" / "full.json"
    args = ["--shards", str(pair_shards), "--checkpoint", str(checkpoint), "--max-batches", "1"]
    assert ev.main([*args, "--out", str(tmp_path), "--json", str(json_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    metrics = json.loads(json_path.read_text())
    assert len(lines) <= 30 and not (tmp_path / "metrics.json").exists()
    assert lines[0].startswith(f"{metrics['samples']} held-out samples from")
    assert lines[2].split() == ["model", "top1_agreement", "top5_agreement", "kl"]
    student = metrics["student"]
    lo, hi = student["ci"]["kl"]
    assert (
        lines[3].startswith("student (RAW)")
        and f"{student['kl']:.3f} [{lo:.2f}, {hi:.2f}]" in lines[3]
    )
    diff = student["vs"]["naive_teacher"]["top1_agreement"]
    row = next(line for line in lines if line.startswith("student − naive render"))
    assert f"{diff[0]:+.3f} [{diff[1]:+.2f}, {diff[2]:+.2f}]" in row
    assert lines[-1] == f"wrote {json_path} (every number) and {tmp_path / 'metrics.png'}"
    assert ev.format_table(metrics).count("\n") < 30
