"""Where a trained student leaves PyTorch: TorchScript, ONNX when the ``onnx`` extra is
installed, and ``student.json``, the specification of the input the exported graph expects.

``distill export --checkpoint RUN/last.pt --out RUN/export`` (or ``python -m distill.export``).
The exported graph takes packed RGGB planes float32 [B, 4, crop/2, crop/2] (black level removed
per CFA site, divided by ``white − black``, not clipped; see ``distill.data``) and returns logits
[B, K] (or [B, K, h, w] for a dense student); the RAW front-end (``distill.frontend``) is part of
the graph. A student whose front-end white balance is ``metadata`` takes the camera's
white-balance gains float32 [B, 3] (R, G, B, G = 1) as a second input. The graph is traced at one
input size (``--crop``): the spec says whether other sizes give the same logits as the PyTorch
student (checked at two other sizes, :func:`size_is_dynamic`); the ONNX graph has a dynamic batch
axis. Both exports are checked against the PyTorch student on a random input.
``distill predict`` (:mod:`distill.predict`) runs an export on RAW files as the spec says.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import torch
except ModuleNotFoundError as err:  # `python -m distill.export` without rawpairs[distill]
    from distill.config import exit_if_command

    exit_if_command(err, __name__)
    raise

from distill.checkpoint import add_trust_argument, load_checkpoint
from distill.models import RawStudent, Teacher, task_of

__all__ = [
    "ONNX_NAME",
    "SPEC_NAME",
    "TORCHSCRIPT_NAME",
    "export",
    "export_onnx",
    "export_torchscript",
    "input_spec",
    "main",
    "size_is_dynamic",
]

SPEC_NAME = "student.json"
TORCHSCRIPT_NAME = "student.torchscript.pt"
ONNX_NAME = "student.onnx"
ONNX_EXTRA = "pip install 'rawpairs[onnx]'"
ONNX_MISSING = f"ONNX export skipped: onnx is not installed; install the extra: {ONNX_EXTRA}"
SPEC_FORMAT = "distill-export/1"


def _example(student: RawStudent, crop: int) -> tuple[torch.Tensor, ...]:
    """Example inputs: the planes, and the white-balance gains [B, 3] when the student's
    front-end uses the recorded ones (``metadata``: the graph then takes them as a 2nd input)."""
    raw = torch.rand(1, 4, crop // 2, crop // 2, generator=torch.Generator().manual_seed(0))
    return (raw, torch.ones(1, 3)) if student.frontend.wb == "metadata" else (raw,)


def export_torchscript(student: RawStudent, crop: int, path: str | Path) -> Path:
    """Trace the student at ``crop`` (RAW side, pixels) to TorchScript, verify, return ``path``."""
    path = Path(path)
    example = _example(student, crop)
    student = student.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The TF-"SAME" padding is computed from the input size: tracing bakes in the padding
        # for this size, which is why the export is tied to ``crop`` (the warning says so).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(student, example)
        expected = student(*example)
    traced.save(str(path))
    reloaded = torch.jit.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(*example), expected, rtol=1e-4, atol=1e-4)
    return path


def export_onnx(student: RawStudent, crop: int, path: str | Path) -> Path:
    """Export to ONNX with a dynamic batch axis; ``RuntimeError`` if ``onnx`` is not installed."""
    if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript")):
        raise RuntimeError(ONNX_MISSING)
    path = Path(path)
    example = _example(student, crop)
    names = ["raw", "wb"][: len(example)]
    torch.onnx.export(
        student.eval(),
        example,
        str(path),
        input_names=names,
        output_names=["logits"],
        dynamic_axes={**{n: {0: "batch"} for n in names}, "logits": {0: "batch"}},
    )
    return path


def size_is_dynamic(student: RawStudent, traced: torch.jit.ScriptModule, crop: int) -> bool:
    """Whether the graph traced at ``crop`` gives the PyTorch student's logits at other sizes too
    (checked at (crop + 32) × 2·crop RAW pixels, within 1e-4): then it takes any size that is a
    multiple of 32 (the stride of the usual networks)."""
    side = crop // 32 * 32 or 32
    h, w = side + 32, 2 * side
    generator = torch.Generator().manual_seed(1)
    raw = torch.rand(1, 4, h // 2, w // 2, generator=generator)
    inputs = (raw, torch.ones(1, 3)) if student.frontend.wb == "metadata" else (raw,)
    with torch.no_grad():
        try:
            got = traced(*inputs)
        except RuntimeError:
            return False
        want = student(*inputs)
    return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-4, atol=1e-4))


def input_spec(
    student: RawStudent,
    classes: Sequence[str] | None,
    crop: int,
    *,
    dynamic: bool,
    files: dict[str, str | None],
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``student.json`` document: what the exported graph takes and returns.

    ``classes``: the output's class names in logit order (``None`` when unknown); ``files``:
    format → file name beside the spec (``None``: not written); ``source``: where the weights
    come from (checkpoint path, step, teacher).
    """
    with torch.no_grad():
        probe = student.eval()(*_example(student, crop))
    task = task_of(probe)
    if classes is not None and len(classes) != probe.shape[1]:
        classes = None  # a student of its own classes: the teacher's names do not apply
    wb = student.frontend.wb
    inputs = [
        {
            "name": "raw",
            "dtype": "float32",
            "shape": ["batch", 4, "height/2", "width/2"],
            "layout": "packed RGGB planes (R, G on red rows, G on blue rows, B): a mosaic "
            "cropped so that its top-left site is red, then split into its 2×2 sites",
            "normalisation": "(counts − black_level of the site) / (white_level − black_level "
            "of the site), per CFA site; not clipped (0 black, 1 saturation)",
        }
    ]
    if wb == "metadata":
        inputs.append(
            {
                "name": "wb",
                "dtype": "float32",
                "shape": ["batch", 3],
                "meaning": "the camera's white-balance gains R, G, B normalised to G = 1 "
                "(a DNG's 1 / AsShotNeutral; rawpairs.sources.read_raw: camera.wb_gains)",
            }
        )
    return {
        "format": SPEC_FORMAT,
        "task": task,
        "files": files,
        "inputs": inputs,
        "size": {
            "height": crop,
            "width": crop,
            "dynamic": dynamic,
            "multiple_of": 32 if dynamic else None,
            "note": "RAW pixels (sensor sites); "
            + (
                "other sizes that are multiples of 32 give the PyTorch student's logits"
                if dynamic
                else "the graph is valid at this size only: take a centre crop of it"
            ),
        },
        "white_balance": {
            "mode": wb,
            "input": "wb" if wb == "metadata" else None,
            "note": {
                "metadata": "the front-end multiplies by the gains given as input 'wb'",
                "grayworld": "the front-end computes gray-world gains itself (no input)",
                "none": "no white balance (camera RGB as is)",
            }[wb],
        },
        "output": {
            "name": "logits",
            "shape": ["batch", probe.shape[1]] + (["h", "w"] if task == "segment" else []),
            "classes": list(classes) if classes is not None else None,
            "meaning": "class logits (softmax for probabilities)"
            if task == "classify"
            else "per-pixel class logits on a grid over the crop (argmax for a mask)",
        },
        "source": source or {},
    }


def _write_json(document: dict[str, Any], path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export(
    student: RawStudent,
    teacher: Teacher,
    crop: int,
    out: str | Path,
    *,
    source: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Write TorchScript, ONNX (when installed) and ``student.json`` into folder ``out``.

    Returns the spec and the messages to show (an ONNX export skipped names the extra).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    student = student.eval()
    ts_path = export_torchscript(student, crop, out / TORCHSCRIPT_NAME)
    dynamic = size_is_dynamic(student, torch.jit.load(str(ts_path)), crop)
    files: dict[str, str | None] = {"torchscript": TORCHSCRIPT_NAME, "onnx": None}
    messages = [f"wrote {ts_path}"]
    try:
        files["onnx"] = export_onnx(student, crop, out / ONNX_NAME).name
        messages.append(f"wrote {out / ONNX_NAME}")
    except RuntimeError as err:
        messages.append(str(err))
    spec = input_spec(student, teacher.classes, crop, dynamic=dynamic, files=files, source=source)
    messages.append(f"wrote {_write_json(spec, out / SPEC_NAME)} (the input it expects)")
    return spec, messages


def build_parser(prog: str = "python -m distill.export") -> argparse.ArgumentParser:
    """The ``distill export`` options (and ``--config``, :mod:`distill.options`)."""
    from distill.options import HelpFormatter, add_config_option

    p = argparse.ArgumentParser(
        prog=prog,
        description="Export a trained student: TorchScript, ONNX (with the onnx extra) and "
        "student.json, the input it expects.",
        formatter_class=HelpFormatter,
    )
    add_config_option(p)
    p.add_argument(
        "--checkpoint", required=True, help="a distill train checkpoint (RUN/last.pt, best.pt)"
    )
    p.add_argument("--out", help="export folder (default: <checkpoint folder>/export)")
    p.add_argument(
        "--crop", type=int, help="RAW input side, pixels, even (default: the training crop)"
    )
    add_trust_argument(p)
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m distill.export") -> int:
    from distill.options import parse_args

    args = parse_args(build_parser(prog), argv)
    try:
        student, teacher, config = load_checkpoint(args.checkpoint, trusted=args.trust)
        crop = args.crop or config["crop"]
        if crop <= 0 or crop % 2:
            raise ValueError(f"--crop must be a positive even number, got {crop}")
        out = Path(args.out) if args.out else Path(args.checkpoint).parent / "export"
        source = {"checkpoint": str(args.checkpoint), "teacher": config["teacher"]}
        _, messages = export(student, teacher, crop, out, source=source)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for message in messages:
        print(message, file=sys.stderr if message.startswith("ONNX") else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
