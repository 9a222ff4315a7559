"""distill.models: offline teacher, RAW-stem student, stem mapping, feature taps, loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata
from torch import nn

from distill.models import (
    NORMALIZATIONS,
    FeatureTap,
    RawInput,
    Teacher,
    build_student,
    imagenet_class_names,
    load_factory,
    load_teacher,
    raw_stem_from_rgb,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return load_teacher()


def block_constant_pair(seed: int, batch: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An sRGB image constant over 2×2 blocks and the linear RGGB planes that encode it."""
    h = torch.rand(batch, 3, half, half, generator=torch.Generator().manual_seed(seed))
    rgb = F.interpolate(h, scale_factor=2, mode="nearest")
    raw = torch.stack([h[:, 0], h[:, 1], h[:, 1], h[:, 2]], dim=1) ** 2.2
    return rgb, raw


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


def test_student_matches_teacher_shapes_and_copies_weights(teacher: Teacher) -> None:
    student = build_student(teacher)
    assert isinstance(student.input, RawInput)
    stem = student.net._conv_stem
    assert (stem.in_channels, stem.stride, stem.kernel_size) == (4, (1, 1), (3, 3))
    s_state, t_state = student.net.state_dict(), teacher.net.state_dict()
    assert s_state.keys() == t_state.keys()
    for name, value in t_state.items():
        if not name.startswith("_conv_stem"):
            assert torch.equal(s_state[name], value), name
    assert all(p.requires_grad for p in student.parameters())
    # Feature maps after the stem and at the head have the teacher's size.
    layers = ["_bn0", "_blocks.3", "_conv_head"]
    raw = torch.rand(2, 4, 48, 48)
    with FeatureTap(student.net, layers) as s_tap, FeatureTap(teacher.net, layers) as t_tap:
        s_logits, t_logits = student.eval()(raw), teacher(torch.rand(2, 3, 96, 96))
        for fs, ft in zip(s_tap.features(), t_tap.features(), strict=True):
            assert fs.shape == ft.shape
    assert s_logits.shape == t_logits.shape == (2, 1000)


def test_raw_stem_makes_student_equal_teacher_on_block_constant_images(teacher: Teacher) -> None:
    # Exactness of the stem mapping: a nearest-neighbour demosaic is the only approximation.
    student = build_student(teacher).eval()
    rgb, raw = block_constant_pair(seed=1, batch=2, half=32)
    with torch.no_grad():
        expected = teacher(rgb)
        torch.testing.assert_close(student(raw), expected, atol=1e-4, rtol=1e-4)
        # The B×1×H×W mosaic is packed on entry: same result.
        torch.testing.assert_close(student(F.pixel_shuffle(raw, 2)), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("kernel", "padding"), [(3, 1), (7, 3), (4, 1), (2, 0), (5, 2)])
def test_raw_stem_mapping_for_plain_convs(kernel: int, padding: int) -> None:
    conv = nn.Conv2d(3, 5, kernel, stride=2, padding=padding, bias=True)
    stem = raw_stem_from_rgb(conv)
    rgb, raw = block_constant_pair(seed=kernel, batch=1, half=8)
    planes = raw ** (1 / 2.2)  # the stem sees gamma-encoded planes
    with torch.no_grad():
        expected, got = conv(rgb), stem(planes)
    # Same size, exact away from the right/bottom border (where plain padding is asymmetric).
    assert got.shape == expected.shape
    torch.testing.assert_close(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])


def test_raw_stem_rejects_unsuitable_convs() -> None:
    with pytest.raises(ValueError, match="stride-2"):
        raw_stem_from_rgb(nn.Conv2d(3, 8, 3, stride=1, padding=1))
    with pytest.raises(ValueError, match="does not halve"):
        raw_stem_from_rgb(nn.Conv2d(3, 8, 3, stride=2, padding=0))
    with pytest.raises(ValueError, match="3-channel"):
        raw_stem_from_rgb(nn.Conv2d(4, 8, 3, stride=2))
    with pytest.raises(ValueError, match="unknown stem init"):
        raw_stem_from_rgb(nn.Conv2d(3, 8, 3, stride=2), init="imagenet")


def test_scratch_init_differs_from_teacher(teacher: Teacher) -> None:
    torch.manual_seed(0)
    student = build_student(teacher, init="scratch")
    s_state, t_state = student.net.state_dict(), teacher.net.state_dict()
    assert not torch.equal(
        s_state["_blocks.5._project_conv.weight"], t_state["_blocks.5._project_conv.weight"]
    )
    assert torch.equal(s_state["_bn1.running_mean"], torch.zeros_like(t_state["_bn1.running_mean"]))


def test_raw_input_scaling() -> None:
    mean, std = NORMALIZATIONS["tf"]
    layer = RawInput(mean, std)
    x = torch.tensor([0.0, 1.0, -0.5, 0.25]).view(1, 4, 1, 1)
    expected = (torch.tensor([0.0, 1.0, 0.0, 0.25 ** (1 / 2.2)]) - 127 / 255) / (128 / 255)
    torch.testing.assert_close(layer(x).flatten(), expected)


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
    student = build_student(from_factory)
    assert student(torch.rand(2, 4, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="compiled graph"):
        build_student(load_teacher(str(scripted)))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected 'efficientnet-lite0'"):
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
