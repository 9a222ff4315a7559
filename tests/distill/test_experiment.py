"""experiments/isp_distillation: its own code paths at minimal sizes, not its results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from distill.heldout import BASELINES
from distill.models import load_teacher
from experiments.isp_distillation import (
    ABLATIONS,
    METHODS,
    TRAIN_PHOTOS,
    TUNE_RAWS,
    VAL_PHOTOS,
    VAL_RAWS,
    bundled_sources,
    load_held_out,
    main,
    make_config,
    markdown_table,
    run,
    summarize,
)
from experiments.isp_distillation.data import _existing_shards
from experiments.isp_distillation.training import _train_config


def test_summarize_mean_std_min_max_over_seeds() -> None:
    rows = [
        {"method": "kd", "seed": s, "step": 10, "condition": "clean", "top1_agreement": v,
         "top5_agreement": 1.0, "kl": k, "accuracy": None}
        for s, v, k in ((0, 0.5, 1.0), (1, 0.7, 3.0))
    ]  # fmt: skip
    rows.append({**rows[0], "step": 20})
    (first, second) = summarize(rows)
    assert (first["method"], first["step"], first["seeds"]) == ("kd", 10, 2)
    assert first["top1_agreement"] == pytest.approx(0.6)
    assert first["top1_agreement_std"] == pytest.approx(0.02**0.5)  # sample std of (.5, .7)
    assert (first["kl_min"], first["kl_max"]) == (1.0, 3.0)
    assert first["top5_agreement_std"] == 0.0
    assert first["accuracy"] is None and first["accuracy_std"] is None
    assert second["seeds"] == 1 and second["top1_agreement_std"] == 0.0
    table = markdown_table([{**first, "top1_step0": 0.25, "kl_step0": 3.5}], {"kd": "KD student"})
    assert (
        "| clean | KD student | 2 | 60.0 ± 14.1 (25.0) | 100.0 ± 0.0 | 2.000 ± 1.414 (3.500) | – |"
        in table
    )


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="go together"):
        make_config("tiny", train_src="a")
    with pytest.raises(ValueError, match="needs labelled data"):
        make_config("tiny", methods=("kd", "supervised"))
    with pytest.raises(ValueError, match="unknown methods"):
        make_config("tiny", methods=("kd", "nope"))
    with pytest.raises(ValueError, match="crop"):
        make_config("tiny", crop=80)
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("huge")
    with pytest.raises(ValueError, match="--reuse-shards needs --work"):
        make_config("tiny", reuse_shards=True)
    with pytest.raises(ValueError, match="no shards to reuse"):
        _existing_shards(Path("/nonexistent-folder"))
    assert make_config("cpu", steps=60, eval_points=3).checkpoints == [0, 20, 40, 60]


def test_split_holds_out_whole_photos() -> None:
    assert not set(TRAIN_PHOTOS) & set(VAL_PHOTOS)
    assert "cat" not in TRAIN_PHOTOS  # skimage.data.cat is chelsea, which is held out


def test_tune_split_uses_training_sources_only(tmp_path: Path) -> None:
    raws = tmp_path / "raw"
    raws.mkdir()
    for name in (*VAL_RAWS, *TUNE_RAWS, "Canon-PowerShot_G2-CRW_0304.CRW"):
        (raws / name).write_bytes(b"")
    splits = {}
    for split in ("heldout", "tune"):
        bundled_sources(tmp_path / split, raws, split)
        splits[split] = {
            part: {p.name for p in (tmp_path / split / part).iterdir()} for part in ("train", "val")
        }
    held, tune = splits["heldout"], splits["tune"]
    assert tune["train"] | tune["val"] == held["train"]  # nothing held out is used for tuning
    assert not tune["train"] & tune["val"]
    assert tune["val"] == {"coffee.png", *TUNE_RAWS}
    assert set(VAL_RAWS) <= held["val"] and "chelsea.png" in held["val"]
    with pytest.raises(ValueError, match="unknown split"):
        make_config("tiny", split="test")


def test_low_light_held_out_is_darker_and_deterministic(pair_shards: Path) -> None:
    teacher = load_teacher()
    config = make_config("tiny", crop=32, eval_batch=24)
    clean = load_held_out(pair_shards, teacher, config)
    dark = load_held_out(pair_shards, teacher, config, low_light=(8.0, 8.0))
    again = load_held_out(pair_shards, teacher, config, low_light=(8.0, 8.0))
    assert torch.equal(dark.raw[0], again.raw[0])
    assert torch.equal(clean.teacher[0], dark.teacher[0])  # the RGB reference is unchanged
    ratio = dark.raw[0].clamp(min=0).mean() / clean.raw[0].clamp(min=0).mean()
    assert 0.08 < float(ratio) < 0.2


@pytest.mark.filterwarnings("ignore::distill.targets.SmallSampleWarning")
def test_tiny_run_writes_every_method_and_sane_ranges(tmp_path: Path) -> None:
    config = make_config(
        "tiny", out=str(tmp_path / "out"), figures=str(tmp_path / "fig"), work=str(tmp_path / "w")
    )
    results = run(config)
    final = results["final"]
    trained = [m.name for m in METHODS if not m.needs_labels and not m.ablation]
    for condition in ("clean", "low_light"):
        methods = {e["method"] for e in final if e["condition"] == condition}
        assert methods == {"teacher", *BASELINES, *trained}
    for entry in results["intervals"]:
        for metric in ("top1_agreement", "kl"):
            lo, hi = entry[f"{metric}_ci"]
            assert lo <= hi
            if entry["method"] in trained:
                diff, lo, hi = entry[f"{metric}_vs_naive_teacher"]
                assert lo <= diff <= hi
    kd = next(e for e in final if e["method"] == "kd" and e["condition"] == "clean")
    assert 0 <= kd["top1_step0"] <= 1 and kd["kl_step0"] > 0
    for entry in final:
        assert 0 <= entry["top1_agreement"] <= entry["top5_agreement"] <= 1
        assert entry["kl"] >= 0
        assert entry["accuracy"] is None  # the bundled photos have no labels
        if entry["method"] == "teacher":
            assert (entry["top1_agreement"], entry["kl"]) == (1.0, 0.0)
    steps = {(r["method"], r["step"]) for r in results["rows"] if r["step"] >= 0}
    assert steps == {(m, s) for m in trained for s in config.checkpoints}
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["final"] == final
    with (tmp_path / "out" / "summary.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(final)
    for name in ("curves", "bars", "examples"):
        png = tmp_path / "fig" / f"isp_distillation_{name}.png"
        assert 0 < png.stat().st_size < 300_000


def test_method_overrides_replace_the_experiment_settings(tmp_path: Path) -> None:
    config = make_config("tiny")
    for method in METHODS:
        train_config = _train_config(config, method, 0, tmp_path, tmp_path / "run")
        train_config.validate()
        for name, value in method.overrides.items():
            assert getattr(train_config, name) == value, (method.name, name)
    kd = _train_config(config, METHODS[0], 0, tmp_path, tmp_path / "run")
    assert (kd.lr, kd.frontend_lr, kd.temperature) == (config.lr, config.frontend_lr, 4.0)


def test_ablations_flag_adds_every_ablation(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    monkeypatch.setattr(
        "experiments.isp_distillation.cli.run", lambda config: seen.update(c=config)
    )
    assert main(["--preset", "tiny", "--methods", "kd", "--ablations"]) == 0
    assert seen["c"].methods == ("kd", *ABLATIONS)
    assert seen["c"].ablation_seeds == (0,)


@pytest.mark.filterwarnings("ignore::distill.targets.SmallSampleWarning")
def test_tiny_segmentation_run_on_a_users_folders(tmp_path: Path) -> None:
    # --task segment on any --train-src/--val-src (here scikit-image photos) with a dense
    # teacher that needs no download: the same tables and figures, with dense metrics.
    import cv2
    import skimage.data

    for part, names in (("train", ("astronaut", "coffee")), ("val", ("chelsea",))):
        (tmp_path / part).mkdir()
        for name in names:
            image = getattr(skimage.data, name)()
            cv2.imwrite(str(tmp_path / part / f"{name}.png"), image[..., ::-1])
    config = make_config(
        "tiny", task="segment", teacher="efficientnet-lite0-dense", methods=("kd", "hard"),
        train_src=str(tmp_path / "train"), val_src=str(tmp_path / "val"), crop=64,
        out=str(tmp_path / "out"), figures=str(tmp_path / "fig"), work=str(tmp_path / "w"),
    )  # fmt: skip
    results = run(config)
    final = results["final"]
    kd = next(e for e in final if e["method"] == "kd" and e["condition"] == "clean")
    for metric in ("pixel_agreement", "miou", "kl"):
        assert kd[metric] is not None
    assert kd["person_iou"] is None and "top1_agreement" not in kd
    assert 0 <= kd["miou_step0"] <= 1
    teacher = next(e for e in final if e["method"] == "teacher" and e["condition"] == "clean")
    assert (teacher["pixel_agreement"], teacher["miou"]) == (1.0, 1.0)
    entry = next(e for e in results["intervals"] if e["method"] == "kd")
    diff, lo, hi = entry["miou_vs_naive_teacher"]
    assert lo <= diff <= hi
    with (tmp_path / "out" / "summary.csv").open() as f:
        header = next(csv.reader(f))
    assert {"method", "condition", "pixel_agreement", "miou", "kl"} <= set(header)
    for name in ("curves", "bars", "examples"):
        png = tmp_path / "fig" / f"isp_distillation_segment_{name}.png"
        assert 0 < png.stat().st_size < 300_000
    with pytest.raises(ValueError, match="per-pixel labels"):
        make_config("tiny", task="segment", methods=("supervised",), labels=True)
