"""Labels that mean something: a build's folder classes matched to the teacher's ImageNet classes
(distill.labels), and evaluate's accuracy on them or its reason why accuracy is undefined."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import torch

from distill.evaluate import accuracy_line, evaluate, format_table
from distill.labels import match_classes, relabel
from distill.models import build_student, imagenet_class_names, imagenet_synsets, load_teacher

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_folder_names_match_one_teacher_class_by_synonym_or_wordnet_id() -> None:
    names, synsets = imagenet_class_names(), imagenet_synsets()
    class_map = {"tabby_cat": 0, "Egyptian-cat": 1, "n01440764": 2, "crane": 3, "my dogs": 4}
    matched, unmatched = match_classes(class_map, names, synsets)
    assert matched == {0: 281, 1: 285, 2: 0}
    assert names[281] == "tabby, tabby cat" and names[0] == "tench, Tinca tinca"
    assert unmatched["crane"].startswith("ambiguous: crane | crane")  # the bird and the machine
    assert unmatched["my dogs"] == "no teacher class"


def test_relabel_maps_ids_and_explains_what_it_cannot() -> None:
    classes = ["cat", "dog, hound", "car"]
    labels = [torch.tensor([0, 1, -1]), torch.tensor([2, 5])]
    mapped, info = relabel(labels, ("b/classes.json", {"hound": 0, "tree": 1, "cat": 2}), classes)
    assert [t.tolist() for t in mapped] == [[1, -1, -1], [0, -1]]
    assert info["matched"] == {"cat": "cat", "hound": "dog, hound"}
    assert info["unmatched"] == {"tree": "no teacher class"} and "tree are left out" in info["note"]
    mapped, info = relabel(labels, ("b/classes.json", {"oak": 0, "elm": 1, "ash": 2}), classes)
    assert all((t == -1).all() for t in mapped)
    assert info["reason"].startswith("the labels' classes (ash, elm, oak, from b/classes.json)")
    kept, info = relabel(labels, None, classes)
    assert kept == labels and "no classes.json" in info["note"]


def build_labelled(src: Path, out: Path, folders: dict[str, str]) -> Path:
    """A labelled build (rawpairs build --labels folder) of scikit-image photos in ``folders``."""
    import skimage.data

    from rawpairs.cli import main as rawpairs

    for folder, photo in folders.items():
        (src / folder).mkdir(parents=True)
        image = getattr(skimage.data, photo)()[:128, :128]
        cv2.imwrite(str(src / folder / f"{photo}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    args = ["build", "--src", str(src), "--out", str(out), "--crop", "64", "--crops", "2"]
    args += ["--labels", "folder", "--workers", "1", "--quiet", "--seed", "0"]
    assert rawpairs.main(args=args, standalone_mode=False) in (0, None)
    return out


@pytest.fixture(scope="module")
def models() -> tuple:
    teacher = load_teacher()
    return build_student(teacher), teacher


def test_evaluate_scores_accuracy_on_classes_named_after_the_teachers(
    models: tuple, tmp_path: Path
) -> None:
    folders = {"tabby_cat": "chelsea", "espresso": "coffee", "holiday": "astronaut"}
    shards = build_labelled(tmp_path / "src", tmp_path / "shards", folders)
    metrics = evaluate(*models, str(shards), batch_size=8, crop=64)
    labels = metrics["labels"]
    assert labels["class_map"] == str(shards / "classes.json")
    assert labels["matched"] == {"espresso": "espresso", "tabby_cat": "tabby, tabby cat"}
    assert labels["unmatched"] == {"holiday": "no teacher class"}
    assert metrics["labelled"] == 4  # 2 crops of each matched photo
    assert 0 <= metrics["student"]["accuracy"] <= 1
    line = accuracy_line(metrics)
    assert line.startswith("accuracy on 4 labelled samples: student ")
    assert line.endswith("(2 of 3 classes matched the teacher's; samples of holiday are left out)")


def test_evaluate_says_why_accuracy_is_undefined(models: tuple, tmp_path: Path) -> None:
    shards = build_labelled(tmp_path / "src", tmp_path / "shards", {"mine": "chelsea"})
    metrics = evaluate(*models, str(shards / "*.tar"), batch_size=8, crop=64)
    assert metrics["student"]["accuracy"] is None and metrics["labelled"] == 0
    last = format_table(metrics).splitlines()[-1]
    assert last.startswith("accuracy: not defined: the labels' classes (mine, from ")
    assert "name none of the teacher's 1000 classes, which the student predicts" in last


def test_validation_during_training_scores_matched_labels_only(tmp_path: Path) -> None:
    from distill.train import TrainConfig, train

    shards = build_labelled(tmp_path / "src", tmp_path / "shards", {"mine": "chelsea"})
    out = tmp_path / "run"
    config = TrainConfig(
        shards=str(shards), val_shards=str(shards), out=str(out), steps=1, crop=64, batch_size=2,
        num_workers=0, progress=False, device="cpu",
    )  # fmt: skip
    summary = train(config)
    # 'mine' is no ImageNet class: accuracy is undefined (null), not 0.0 against ImageNet ids.
    assert [v["accuracy"] for v in summary["validations"]] == [None, None]
    assert summary["naive_baseline"]["accuracy"] is None
