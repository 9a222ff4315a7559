"""distill.models: offline teacher, front-end student, training modes, feature taps, loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata
from torch import nn

from distill.frontend import RawFrontEnd
from distill.models import (
    FeatureTap,
    Teacher,
    build_student,
    distill_mode,
    imagenet_class_names,
    load_factory,
    load_teacher,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return load_teacher()


def test_default_teacher_classifies_chelsea_as_a_cat(teacher: Teacher) -> None:
    img = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1)[None].float() / 255
    side = min(img.shape[-2:])
    left = (img.shape[-1] - side) // 2
    img = F.interpolate(
        img[..., :side, left : left + side], size=224, mode="bilinear", antialias=True
    )
    logits = teacher(img)
    assert logits.shape == (1, 1000)
    top5 = logits.topk(5).indices[0].tolist()
    assert set(top5) & set(CAT_CLASSES)
    assert imagenet_class_names()[top5[0]] == "Egyptian cat"


def test_teacher_is_frozen(teacher: Teacher) -> None:
    teacher.train()
    assert not teacher.training and not teacher.net.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not teacher(torch.rand(1, 3, 64, 64)).requires_grad
    with pytest.raises(ValueError, match="B×3×H×W"):
        teacher(torch.rand(1, 4, 64, 64))


def test_student_copies_the_teacher_behind_a_front_end(teacher: Teacher) -> None:
    student = build_student(teacher, wb="grayworld")
    assert isinstance(student.frontend, RawFrontEnd) and student.frontend.wb == "grayworld"
    s_state, t_state = student.net.state_dict(), teacher.net.state_dict()
    assert s_state.keys() == t_state.keys()
    for name, value in t_state.items():
        assert torch.equal(s_state[name], value), name
    assert all(p.requires_grad for p in student.parameters())
    assert {id(p) for p in student.backbone_parameters()} == {
        id(p) for p in student.net.parameters()
    }
    # Every feature map has the teacher's size on the RGB crop.
    layers = ["_conv_stem", "_bn0", "_blocks.3", "_conv_head"]
    raw = torch.rand(2, 4, 48, 48)
    with FeatureTap(student.net, layers) as s_tap, FeatureTap(teacher.net, layers) as t_tap:
        s_logits, t_logits = student.eval()(raw), teacher(torch.rand(2, 3, 96, 96))
        for fs, ft in zip(s_tap.features(), t_tap.features(), strict=True):
            assert fs.shape == ft.shape
    assert s_logits.shape == t_logits.shape == (2, 1000)
    with pytest.raises(ValueError, match="B×4×h×w packed planes"):
        student(torch.rand(2, 3, 48, 48))


def test_distill_mode_turns_off_dropout_and_keeps_bn_statistics(teacher: Teacher) -> None:
    student = build_student(teacher, wb="grayworld")
    raw = torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        evaluated = student.eval()(raw)
        distill_mode(student, freeze_bn=True, dropout=False)
        torch.testing.assert_close(student(raw), evaluated)  # deterministic, no drop-connect
        distill_mode(student, freeze_bn=True, dropout=True)
        assert student.training and not student.net._bn0.training
        assert student.net._dropout.training
        torch.manual_seed(0)
        assert not torch.allclose(student(raw), evaluated)
        distill_mode(student, freeze_bn=False, dropout=False)
        assert student.net._bn0.training and not student.net._dropout.training


def test_scratch_init_differs_from_teacher(teacher: Teacher) -> None:
    torch.manual_seed(0)
    student = build_student(teacher, init="scratch")
    s_state, t_state = student.net.state_dict(), teacher.net.state_dict()
    assert not torch.equal(
        s_state["_blocks.5._project_conv.weight"], t_state["_blocks.5._project_conv.weight"]
    )
    assert torch.equal(s_state["_bn1.running_mean"], torch.zeros_like(t_state["_bn1.running_mean"]))


def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_teacher_from_factory_torchscript_and_export(tmp_path: Path) -> None:
    weights = tmp_path / "tiny.pt"
    net = tiny_classifier()
    torch.save(net.state_dict(), weights)
    x = torch.rand(2, 3, 16, 16)
    from_factory = load_teacher(f"{__name__}:tiny_classifier", weights=str(weights))
    assert from_factory.normalization == "imagenet"
    expected = from_factory(x)

    scripted = tmp_path / "tiny.ts"
    torch.jit.trace(net.eval(), torch.rand(1, 3, 16, 16)).save(str(scripted))
    torch.testing.assert_close(load_teacher(str(scripted))(x), expected)

    exported = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(net.eval(), (torch.rand(2, 3, 16, 16),)), str(exported))
    torch.testing.assert_close(load_teacher(str(exported))(x), expected)

    # The default student copies the teacher's architecture; a compiled graph has none to copy.
    student = build_student(from_factory, wb="none")
    assert student(torch.rand(2, 4, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="compiled graph"):
        build_student(load_teacher(str(scripted)))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one of \\['efficientnet-lite0'"):
        load_teacher("resnet50")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt2"):
        load_teacher(str(tmp_path / "missing.pt2"))
    with pytest.raises(ValueError, match="No module named"):
        load_factory("no_such_module_xyz:build")
    with pytest.raises(ValueError, match=r"expected 'package\.module:factory'"):
        load_factory("no_colon")
    with pytest.raises(ValueError, match="unknown normalisation"):
        load_teacher(f"{__name__}:tiny_classifier", normalization="caffe")
    teacher = load_teacher(f"{__name__}:tiny_classifier")
    with pytest.raises(ValueError, match="--student-init scratch"):
        build_student(teacher, f"{__name__}:tiny_classifier")


def test_feature_tap_reports_unknown_layers(teacher: Teacher) -> None:
    with pytest.raises(ValueError, match=r"\['_blocks.99'\] not found"):
        FeatureTap(teacher.net, ["_blocks.99"])
