"""distill export's student.json and distill predict on RAW files: DNGs written here from numpy,
the RAW files shipped in tests/data/raw and (skipped without it) ../shared/data/raw."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from distill import predict
from distill.export import SPEC_NAME, export
from distill.frontend import RawFrontEnd
from distill.models import RawStudent, build_student, load_teacher
from rawpairs.cfa import CFA
from rawpairs.dng import write_dng
from rawpairs.unprocess import simulate_raw

TESTS = Path(__file__).resolve().parents[1]
SHARED_RAW = TESTS.parents[1] / "shared" / "data" / "raw"
CROP = 64

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


def tiny_student() -> RawStudent:
    """A 10-class convolutional student whose graph takes any input size."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    return RawStudent(net, RawFrontEnd((0.5,) * 3, (0.25,) * 3, wb="metadata")).eval()


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


@pytest.fixture(scope="module")
def exported(teacher, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RawStudent]:
    """The default student (EfficientNet-Lite0 behind the RAW front-end) exported at 64 px."""
    student = build_student(teacher).eval()
    out = tmp_path_factory.mktemp("export")
    export(student, teacher, CROP, out, source={"checkpoint": "test"})
    return out, student


def write_test_dng(path: Path, cfa: CFA, size: tuple[int, int] = (120, 160)) -> tuple:
    """A DNG of a simulated photo crop with per-site black levels; returns (mosaic, camera)."""
    import skimage.data

    rgb = skimage.data.chelsea()[: size[0], : size[1]]
    mosaic, camera = simulate_raw(rgb, np.random.default_rng(3))
    camera = camera.replace(cfa=cfa, black_level=(60.0, 64.0, 62.0, 66.0))
    mosaic = np.maximum(mosaic, 66).astype(np.uint16)
    write_dng(path, mosaic, camera)
    return mosaic, camera


def test_spec_describes_the_input(exported: tuple[Path, RawStudent]) -> None:
    out, student = exported
    spec = json.loads((out / SPEC_NAME).read_text())
    assert spec["task"] == "classify"
    assert spec["files"]["torchscript"] == "student.torchscript.pt"
    assert (out / spec["files"]["torchscript"]).stat().st_size > 0
    raw, wb = spec["inputs"]
    assert raw["name"] == "raw" and raw["shape"] == ["batch", 4, "height/2", "width/2"]
    assert "packed RGGB" in raw["layout"] and "black_level" in raw["normalisation"]
    assert wb["name"] == "wb" and wb["shape"] == ["batch", 3]
    assert spec["white_balance"] == {**spec["white_balance"], "mode": "metadata", "input": "wb"}
    # EfficientNet's TF-"SAME" padding, traced as integer arithmetic, follows the input size.
    assert spec["size"]["height"] == spec["size"]["width"] == CROP
    assert spec["size"]["dynamic"] is True and spec["size"]["multiple_of"] == 32
    graph = torch.jit.load(str(out / spec["files"]["torchscript"]))
    raw, gains = torch.rand(2, 4, 48, 80), torch.rand(2, 3) + 0.5
    with torch.no_grad():
        torch.testing.assert_close(graph(raw, gains), student(raw, gains), rtol=1e-4, atol=1e-4)
    assert spec["output"]["shape"] == ["batch", 1000]
    assert spec["output"]["classes"][285] == "Egyptian cat"


@pytest.mark.parametrize("cfa", [CFA.RGGB, CFA.GBRG])
def test_predict_on_a_dng_matches_the_student_on_its_centre_crop(
    exported: tuple[Path, RawStudent], tmp_path: Path, cfa: CFA, capsys: pytest.CaptureFixture
) -> None:
    out, student = exported
    mosaic, camera = write_test_dng(tmp_path / "cat.dng", cfa)
    # Independently: the centred 64×64 window starting on a red site, normalised per site.
    ry, rx = cfa.red_position
    top = ry + 2 * ((120 - ry - CROP) // 4)
    left = rx + 2 * ((160 - rx - CROP) // 4)
    window = mosaic[top : top + CROP, left : left + CROP].astype(np.float32)
    black = np.array(camera.black_level, dtype=np.float32).reshape(2, 2)
    black_sites = np.tile(np.roll(black, (-ry, -rx), axis=(0, 1)), (CROP // 2, CROP // 2))
    normalised = (window - black_sites) / (camera.white_level - black_sites)
    planes = torch.from_numpy(
        np.stack(
            [
                normalised[0::2, 0::2],
                normalised[0::2, 1::2],
                normalised[1::2, 0::2],
                normalised[1::2, 1::2],
            ]
        )
    )[None]
    with torch.no_grad():
        probs = torch.softmax(student(planes, torch.tensor([camera.wb_gains])).double(), 1)[0]
    expected = torch.topk(probs, 3)

    result = predict.predict(predict.load_export(out), tmp_path / "cat.dng", top_k=3, side=CROP)
    assert result["window"] == [top, left, CROP, CROP]
    names = [name for name, _ in result["top_k"]]
    assert names == [student_class(i) for i in expected.indices.tolist()]
    np.testing.assert_allclose([p for _, p in result["top_k"]], expected.values, atol=1e-4)

    # An export of one size only gets that centre crop, and says so.
    fixed = fixed_size_copy(out, tmp_path / "fixed")
    assert predict.main(["--model", str(fixed), "--src", str(tmp_path / "cat.dng")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith(
        f"centre crop {CROP}×{CROP} at row {top}, column {left} (the export's fixed input size)"
    )
    assert len(printed) == 6 and printed[1].strip().startswith("1.")
    assert predict.main(["--model", str(fixed), "--src", "x.dng", "--size", "96"]) == 2
    assert capsys.readouterr().err.strip().endswith("takes 64×64 inputs only, not --size 96")


def fixed_size_copy(export_folder: Path, folder: Path) -> Path:
    """The export with its spec saying it takes its traced size only."""
    folder.mkdir()
    for item in export_folder.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    spec = json.loads((folder / SPEC_NAME).read_text())
    spec["size"] |= {"dynamic": False, "multiple_of": None}
    (folder / SPEC_NAME).write_text(json.dumps(spec))
    return folder


def student_class(index: int) -> str:
    from distill.models import imagenet_class_names

    return imagenet_class_names()[index]


def test_a_file_too_small_or_unreadable_is_one_line_and_the_rest_still_runs(
    exported: tuple[Path, RawStudent], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, _ = exported
    write_test_dng(tmp_path / "small.dng", CFA.RGGB, size=(32, 48))
    write_test_dng(tmp_path / "fine.dng", CFA.RGGB)
    (tmp_path / "empty.dng").write_bytes(b"")
    files = [str(tmp_path / n) for n in ("small.dng", "empty.dng", "fine.dng")]
    model = ["--model", str(out / "student.torchscript.pt"), "--size", str(CROP)]
    assert predict.main([*model, "--src", *files]) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {files[0]}") and "smaller than the 64×64" in errors[0]
    assert errors[1].startswith(f"error: {files[1]}")
    assert captured.out.startswith(f"{files[2]}: RAW 120×160")


def test_a_size_agnostic_student_gets_the_largest_window(teacher, tmp_path: Path) -> None:
    student = tiny_student()
    spec, _ = export(student, teacher, CROP, tmp_path / "export")
    assert spec["size"]["dynamic"] is True and spec["size"]["multiple_of"] == 32
    write_test_dng(tmp_path / "cat.dng", CFA.GRBG)
    result = predict.predict(predict.load_export(tmp_path / "export"), tmp_path / "cat.dng")
    # GRBG: red at column 1; 120 rows → 96, 159 columns from the red one → 128, centred (the
    # 31 spare columns split 14 | 17: the origin must stay on a red column).
    assert result["window"] == [12, 15, 96, 128]
    assert spec["output"]["classes"] is None and spec["output"]["shape"] == ["batch", 10]
    assert "largest centred window" in result["description"]


def test_segmentation_export_writes_masks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    teacher = load_teacher("efficientnet-lite0-dense")
    spec, _ = export(build_student(teacher).eval(), teacher, CROP, tmp_path / "export")
    assert spec["task"] == "segment"
    write_test_dng(tmp_path / "cat.dng", CFA.BGGR)
    masks = tmp_path / "masks"
    args = ["--model", str(tmp_path / "export"), "--src", str(tmp_path), "--out", str(masks)]
    assert predict.main([*args, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # BGGR: red sites on odd rows and columns, so the window starts on one.
    assert lines[0].endswith("centre crop 96×128 at row 11, column 15 (largest centred window, "
                             "multiple of 32)")  # fmt: skip
    mask = cv2.imread(str(masks / "cat.mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (96, 128) and mask.dtype == np.uint8
    names = spec["output"]["classes"]
    counts = np.bincount(mask.ravel(), minlength=len(names)) / mask.size
    largest = np.argsort(-counts, kind="stable")[:2]
    shares = ", ".join(f"{counts[i]:.1%} {names[i]}" for i in largest if counts[i] > 0)
    assert (
        lines[1] == f"  mask {masks / 'cat.mask.png'} (class index per pixel of the crop): {shares}"
    )


def test_missing_spec_and_missing_onnxruntime_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=f"no {SPEC_NAME} beside it"):
        predict.load_export(tmp_path / "model.pt")
    (tmp_path / SPEC_NAME).write_text('{"task": "classify", "size": {"height": 64}}')
    expected = "not a distill export specification (missing files, inputs, output, size.width)"
    with pytest.raises(ValueError, match=re.escape(expected)):
        predict.load_export(tmp_path / "model.pt")
    if importlib.util.find_spec("onnxruntime") is None:
        spec = {"task": "classify", "files": {"onnx": "m.onnx"}, "inputs": [{"name": "raw"}]}
        spec |= {"size": {"height": 64, "width": 64}, "output": {}}
        (tmp_path / SPEC_NAME).write_text(json.dumps(spec))
        (tmp_path / "m.onnx").write_bytes(b"x")
        with pytest.raises(ValueError, match=r"install the extra: pip install 'rawpairs\[onnx\]'"):
            predict.load_export(tmp_path / "m.onnx")


@pytest.mark.parametrize(
    "path",
    [
        TESTS / "data" / "raw" / "Kodak-DC50-DC50IMG-DC0010S.KDC",
        TESTS / "data" / "raw" / "Kodak-DC120-DC120IMG-P003912.KDC",  # non-square pixels
        TESTS / "data" / "raw" / "Canon-PowerShot_S40-CRW_0104.CRW",
        SHARED_RAW / "Canon-EOS550D-colorchart.dng",
    ],
    ids=["kdc", "kdc-dc120", "crw", "shared-dng"],
)
def test_predict_on_real_raw_files(
    exported: tuple[Path, RawStudent], path: Path, capsys: pytest.CaptureFixture
) -> None:
    if not path.is_file():
        pytest.skip(f"{path} not available (../shared is absent)")
    out, _ = exported
    args = ["--model", str(out), "--src", str(path), "--top-k", "2", "--max-side", "256"]
    assert predict.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    # Binned (as rawpairs build --max-side) to at most 256 px, then the largest window.
    assert lines[0].startswith(f"{path}: RAW ") and ", binned " in lines[0]
    assert lines[0].endswith("(largest centred window, multiple of 32)")
    assert len(lines) == 3


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="the onnx extra is not installed",
)
def test_onnx_export_predicts_as_torchscript(teacher, tmp_path: Path) -> None:
    spec, _ = export(build_student(teacher).eval(), teacher, CROP, tmp_path / "export")
    assert spec["files"]["onnx"] == "student.onnx"
    write_test_dng(tmp_path / "cat.dng", CFA.RGGB)
    results = [
        predict.predict(predict.load_export(tmp_path / "export" / name), tmp_path / "cat.dng")
        for name in ("student.torchscript.pt", "student.onnx")
    ]
    assert [n for n, _ in results[0]["top_k"]] == [n for n, _ in results[1]["top_k"]]
    np.testing.assert_allclose(
        [p for _, p in results[0]["top_k"]], [p for _, p in results[1]["top_k"]], atol=1e-4
    )


@pytest.mark.parametrize(("aspect", "max_side"), [(1.0, None), (1.0, 50), (1.535, None), (0.7, 64)])
def test_squaring_and_binning_is_the_builds(aspect: float, max_side: int | None) -> None:
    from rawpairs.cfa import square_and_bin as _square_and_bin

    mosaic = np.random.default_rng(5).integers(0, 4096, (96, 130), dtype=np.uint16)
    ours, factor = predict.square_and_bin(mosaic, aspect, max_side)
    theirs, their_factor = _square_and_bin(mosaic, aspect, max_side)
    assert factor == their_factor and ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)
