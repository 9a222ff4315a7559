"""Where an exported student meets real RAW files: ``distill predict --model EXPORT --src FILES``.

Reads each RAW file with ``rawpairs.raw_files.read_raw`` (LibRaw via rawpy: DNG, CRW, KDC, NEF …),
squares non-square pixels and optionally Bayer-bins it to ``--max-side`` as ``rawpairs build``
does, cuts the RGGB window the export's ``student.json`` (:mod:`distill.export`) asks for — a
centre crop of its fixed size, or the largest centred window whose sides are multiples of 32 when
the export takes any size —, normalises it by the file's black and white levels, passes the
file's white-balance gains when the graph takes them, and runs the graph (TorchScript, or ONNX
through ``onnxruntime``). Classification prints the top-k classes; segmentation writes a mask
PNG per file (class index per RAW pixel of the crop, sensor orientation). Each output line says
which window of the RAW was used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from distill.extras import exit_if_command  # torch-free: reports a missing extra

try:
    import torch
    import torch.nn.functional as F
except ModuleNotFoundError as err:  # `python -m distill.predict` without rawpairs[distill]
    exit_if_command(err, __name__)
    raise

from distill.export import SPEC_NAME
from distill.options import HelpFormatter, add_config_option, parse_args
from distill.pair import rggb_black_level
from rawpairs import cfa as cfa_ops
from rawpairs.cfa import CFA, square_and_bin
from rawpairs.errors import InputError
from rawpairs.messages import one_line
from rawpairs.raw_files import RawCapture, read_raw
from rawpairs.sources import source_kind

__all__ = [
    "Export",
    "RawInput",
    "centre_window",
    "load_export",
    "main",
    "normalised_planes",
    "predict",
    "prepare",
]

ONNX_EXTRA = "pip install 'rawpairs[onnx]'"
SIZE_MULTIPLE = 32


@dataclass
class Export:
    """An exported student: its spec (``student.json``), the graph file and how to run it
    (``run(raw, wb)`` → logits as a numpy array; ``wb`` is ignored when the graph has no such
    input)."""

    spec: dict[str, Any]
    path: Path
    run: Callable[[np.ndarray, np.ndarray], np.ndarray]


def _torchscript_runner(
    path: Path, takes_wb: bool
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    graph = torch.jit.load(str(path), map_location="cpu").eval()

    def run(raw: np.ndarray, wb: np.ndarray) -> np.ndarray:
        inputs = (
            (torch.from_numpy(raw), torch.from_numpy(wb)) if takes_wb else (torch.from_numpy(raw),)
        )
        with torch.no_grad():
            return graph(*inputs).numpy()

    return run


def _onnx_runner(path: Path, takes_wb: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise ValueError(
            f"{path}: running ONNX needs onnxruntime; install the extra: {ONNX_EXTRA}"
        ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(raw: np.ndarray, wb: np.ndarray) -> np.ndarray:
        feed = {"raw": raw, "wb": wb} if takes_wb else {"raw": raw}
        return np.asarray(session.run(None, feed)[0])

    return run


def load_export(model: str | Path) -> Export:
    """The export at ``model``: its folder (TorchScript preferred) or a graph file with
    ``student.json`` beside it. ``ValueError`` (one line) if the spec or the graph is missing."""
    model = Path(model)
    folder = model if model.is_dir() else model.parent
    spec_path = folder / SPEC_NAME
    if not model.exists():
        raise ValueError(f"{model}: no such export file or folder")
    if not spec_path.is_file():
        raise ValueError(
            f"{model}: no {SPEC_NAME} beside it (the input specification): export it with "
            "distill export"
        )
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        missing = [key for key in ("task", "files", "inputs", "size", "output") if key not in spec]
        missing += [f"size.{key}" for key in ("height", "width") if key not in spec["size"]]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        files = spec["files"]
        takes_wb = any(item["name"] == "wb" for item in spec["inputs"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{spec_path}: not a distill export specification ({err})") from None
    if model.is_dir():
        names = [files.get("torchscript"), files.get("onnx")]
        name = next((n for n in names if n and (folder / n).is_file()), None)
        if name is None:
            raise ValueError(f"{model}: none of the files {SPEC_NAME} names is there")
        model = folder / name
    if model.suffix == ".onnx":
        return Export(spec, model, _onnx_runner(model, takes_wb))
    try:
        return Export(spec, model, _torchscript_runner(model, takes_wb))
    except RuntimeError as err:
        cause = one_line(err, 200)
        raise ValueError(f"{model}: not a TorchScript file ({cause})") from None


def centre_window(
    height: int, width: int, cfa: CFA | str, size: tuple[int, int]
) -> tuple[int, int]:
    """Top-left (row, column) of the centred ``size`` (even h, w) window of a ``height``×``width``
    mosaic whose top-left site is red (so the window is RGGB). ``ValueError`` if it does not fit."""
    ry, rx = CFA.parse(cfa).red_position
    (h, w), (ch, cw) = (height // 2 * 2, width // 2 * 2), size
    if h - ry < ch or w - rx < cw:
        raise ValueError(f"the RAW ({height}×{width}) is smaller than the {ch}×{cw} model input")
    return ry + 2 * ((h - ry - ch) // 4), rx + 2 * ((w - rx - cw) // 4)


def normalised_planes(rggb: np.ndarray, black: np.ndarray, white: float) -> np.ndarray:
    """RGGB mosaic counts (H×W) → float32 planes 4×H/2×W/2, ``(x − black) / (white − black)`` per
    site (``black``: R, G red row, G blue row, B counts), not clipped: the student's input."""
    planes = cfa_ops.pack(rggb).astype(np.float32)
    black = np.asarray(black, dtype=np.float32)[:, None, None]
    return (planes - black) / (np.float32(white) - black)


@dataclass
class RawInput:
    """One file made ready for the graph: ``raw`` 1×4×h×w float32, ``wb`` 1×3 float32 (R, G, B),
    the window ``(top, left, height, width)`` in the (squared, binned) mosaic of ``shape``, and the
    binning factor."""

    raw: np.ndarray
    wb: np.ndarray
    window: tuple[int, int, int, int]
    shape: tuple[int, int]
    binning: int


def prepare(
    capture: RawCapture,
    spec: dict[str, Any],
    max_side: int | None = None,
    side: int | None = None,
) -> RawInput:
    """The graph's input from a RAW file read by ``rawpairs.raw_files.read_raw`` (see module);
    ``side``: a centred ``side``×``side`` window instead of the largest (exports that take any
    size only)."""
    camera = capture.camera
    mosaic, factor = square_and_bin(capture.mosaic, capture.pixel_aspect, max_side)
    h, w = mosaic.shape
    size = spec["size"]
    if side is not None:
        window = (side, side)
    elif size.get("dynamic"):
        ry, rx = camera.cfa.red_position
        multiple = size.get("multiple_of") or SIZE_MULTIPLE
        window = ((h - ry) // multiple * multiple, (w - rx) // multiple * multiple)
        if min(window) <= 0:
            raise ValueError(f"the RAW ({h}×{w}) is smaller than {multiple}×{multiple}")
    else:
        window = (int(size["height"]), int(size["width"]))
    top, left = centre_window(h, w, camera.cfa, window)
    crop, phase = cfa_ops.crop(mosaic, camera.cfa, top, left, *window)
    assert phase is CFA.RGGB
    black = rggb_black_level(camera.cfa, camera.black_level)
    planes = normalised_planes(crop, black, camera.white_level)
    wb = np.asarray([camera.wb_gains], dtype=np.float32)
    return RawInput(planes[None], wb, (top, left, *window), (h, w), factor)


def _describe(path: Path, prepared: RawInput, dynamic: bool, side: int | None) -> str:
    top, left, ch, cw = prepared.window
    h, w = prepared.shape
    binned = f", binned {prepared.binning}×" if prepared.binning > 1 else ""
    why = "largest centred window, multiple of 32" if dynamic else "the export's fixed input size"
    why = "--size" if side is not None else why
    return f"{path}: RAW {h}×{w}{binned}; centre crop {ch}×{cw} at row {top}, column {left} ({why})"


def predict(
    export: Export,
    path: Path,
    *,
    top_k: int = 5,
    out: Path | None = None,
    max_side: int | None = None,
    side: int | None = None,
) -> dict[str, Any]:
    """Run ``export`` on RAW file ``path`` (``max_side``, ``side``: see :func:`prepare`).

    Returns ``{"file", "window", "description", "top_k": [(class, p), …]}`` for a classifier,
    ``{"file", "window", "description", "mask": PNG path, "fractions"}`` for a segmenter (the
    mask is written to ``out``). Raises ``InputError``/``ValueError`` naming the file."""
    spec = export.spec
    prepared = prepare(read_raw(path), spec, max_side, side)
    logits = export.run(prepared.raw, prepared.wb)
    classes = spec["output"].get("classes")
    result: dict[str, Any] = {
        "file": str(path),
        "window": list(prepared.window),
        "description": _describe(path, prepared, bool(spec["size"].get("dynamic")), side),
    }
    if spec["task"] == "classify":
        probs = torch.softmax(torch.from_numpy(logits[0]).double(), 0).numpy()
        best = np.argsort(-probs, kind="stable")[:top_k]
        result["top_k"] = [(classes[i] if classes else str(int(i)), float(probs[i])) for i in best]
        return result
    _, _, ch, cw = prepared.window
    dense = F.interpolate(
        torch.from_numpy(logits), size=(ch, cw), mode="bilinear", align_corners=False
    )
    mask = dense[0].argmax(0).numpy().astype(np.uint8)
    folder = out or Path("predictions")
    folder.mkdir(parents=True, exist_ok=True)
    mask_path = folder / f"{path.stem}.mask.png"
    if not cv2.imwrite(str(mask_path), mask):
        raise ValueError(f"{mask_path}: cannot write the mask")
    counts = np.bincount(mask.ravel(), minlength=dense.shape[1]) / mask.size
    names = classes or [str(i) for i in range(dense.shape[1])]
    result["mask"] = str(mask_path)
    result["fractions"] = {names[i]: float(f) for i, f in enumerate(counts)}
    return result


def _expand(sources: Sequence[str]) -> list[Path]:
    """Files as given; folders become their RAW files (recursively, sorted)."""
    paths: list[Path] = []
    for item in sources:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.is_file() and source_kind(p) == "raw")
        else:
            paths.append(path)
    return paths


def build_parser(prog: str = "python -m distill.predict") -> argparse.ArgumentParser:
    """The ``distill predict`` options (and ``--config``, :mod:`distill.options`)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run an exported student (distill export) on RAW files.",
        formatter_class=HelpFormatter,
    )
    add_config_option(p)
    p.add_argument(
        "--model",
        required=True,
        help="export folder (student.json + graph) or its .torchscript.pt / .onnx file",
    )
    p.add_argument(
        "--src", required=True, nargs="+", help="RAW files (DNG, CRW, NEF …) or folders of them"
    )
    p.add_argument(
        "--top-k", type=int, default=5, help="classes printed per file (a segmenter's largest)"
    )
    p.add_argument("--out", default="predictions", help="folder of the masks (segmenter)")
    p.add_argument(
        "--size",
        type=int,
        help="a centred SIZE×SIZE window, even, for an export that takes any size (default: "
        "the export's fixed size, else the largest window of multiples of 32)",
    )
    p.add_argument(
        "--max-side",
        type=int,
        help="Bayer-bin the RAW so that its longer side is at most this, as rawpairs build "
        "--max-side does (default: full resolution)",
    )
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m distill.predict") -> int:
    """Predict every file; a file that cannot be read is one line on stderr (exit status 2 at
    the end), the others are still predicted."""
    args = parse_args(build_parser(prog), argv)
    if args.top_k < 1:
        print("error: --top-k must be at least 1", file=sys.stderr)
        return 2
    if args.size is not None and (args.size <= 0 or args.size % 2):
        print(f"error: --size must be a positive even number, got {args.size}", file=sys.stderr)
        return 2
    try:
        export = load_export(args.model)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = export.spec["size"]
    if args.size is not None and not size.get("dynamic") and args.size != size["height"]:
        print(
            f"error: {export.path}: this export takes {size['height']}×{size['width']} inputs "
            f"only, not --size {args.size}",
            file=sys.stderr,
        )
        return 2
    status = 0
    paths = _expand(args.src)
    if not paths:
        print(f"error: {' '.join(args.src)}: no RAW files", file=sys.stderr)
        return 2
    for path in paths:
        try:
            result = predict(
                export,
                path,
                top_k=args.top_k,
                out=Path(args.out),
                max_side=args.max_side,
                side=args.size,
            )
        except (InputError, ValueError, OSError) as err:
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            print(f"error: {message}", file=sys.stderr)
            status = 2
            continue
        print(result["description"])
        if "top_k" in result:
            for rank, (name, p) in enumerate(result["top_k"], 1):
                print(f"  {rank}. {p:6.1%}  {name}")
        else:
            present = sorted(result["fractions"].items(), key=lambda item: -item[1])
            shares = ", ".join(f"{f:.1%} {name}" for name, f in present[: args.top_k] if f > 0)
            print(f"  mask {result['mask']} (class index per pixel of the crop): {shares}")
    return status


if __name__ == "__main__":
    sys.exit(main())
