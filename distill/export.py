"""Where a trained student leaves PyTorch: TorchScript, ONNX when the ``onnx`` extra is
installed, and ``student.json``, the specification of the input the exported graph expects.

``distill export --checkpoint RUN/last.pt --out RUN/export`` (or ``python -m distill.export``).
The exported graph takes packed RGGB planes float32 [B, 4, crop/2, crop/2] (black level removed
per CFA site, divided by ``white − black``, not clipped; see ``distill.data``) and returns logits
[B, K] (or [B, K, h, w] for a dense student); the RAW front-end (``distill.frontend``) is part of
the graph. A student whose front-end white balance is ``metadata`` takes the camera's
white-balance gains float32 [B, 3] (R, G, B, G = 1) as a second input. The graph is traced at
``--crop`` from :func:`traceable` (EfficientNet's TF-"SAME" padding as integer arithmetic the
tracer records), checked against the PyTorch student at batch 3 and at a second size
(:func:`size_is_dynamic`): the spec says whether it takes other sizes (multiples of 32). The ONNX
graph has dynamic batch (and, when the TorchScript one takes other sizes, height and width) axes
and is checked through onnxruntime when installed.
``distill predict`` (:mod:`distill.predict`) runs an export on RAW files as the spec says.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np

from distill.extras import exit_if_command  # torch-free: reports a missing extra

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ModuleNotFoundError as err:  # `python -m distill.export` without rawpairs[distill]
    exit_if_command(err, __name__)
    raise

from distill.checkpoint import add_trust_argument, load_checkpoint
from distill.config import OneLineParser
from distill.models import RawStudent, Teacher, task_of
from distill.options import HelpFormatter, add_config_option, parse_args
from distill.resources import check_crop, check_output_folder
from rawpairs.storage import write_text_atomic

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
    "smallest_crop",
    "traceable",
]

SPEC_NAME = "student.json"
TORCHSCRIPT_NAME = "student.torchscript.pt"
ONNX_NAME = "student.onnx"
ONNX_EXTRA = "pip install 'rawpairs[onnx]'"
ONNX_MISSING = f"ONNX export skipped: onnx is not installed; install the extra: {ONNX_EXTRA}"
SPEC_FORMAT = "distill-export/1"


def _inputs(
    student: RawStudent, batch: int, height: int, width: int, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random inputs: the planes [batch, 4, height/2, width/2], and the white-balance gains
    [batch, 3] when the student's front-end uses the recorded ones (``metadata``: the graph then
    takes them as a 2nd input)."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.rand(batch, 4, height // 2, width // 2, generator=generator)
    if student.frontend.wb != "metadata":
        return (raw,)
    return raw, 0.5 + 1.5 * torch.rand(batch, 3, generator=generator)


def _example(student: RawStudent, crop: int) -> tuple[torch.Tensor, ...]:
    return _inputs(student, 1, crop, crop)


def _other_size(crop: int) -> tuple[int, int]:
    """A second input size (RAW pixels, multiples of 32, not square) to check a graph at."""
    side = crop // 32 * 32 or 32
    return side + 32, 2 * side


class _SamePadConv2d(nn.Conv2d):
    """TensorFlow-"SAME" convolution whose padding is integer arithmetic on the input size.

    Same result as EfficientNet's ``Conv2dDynamicSamePadding``, whose ``math.ceil`` makes
    tracing freeze part of the padding for the traced size (a graph that is wrong at any other
    size); integer arithmetic on ``x.shape`` is recorded by the tracer, so the traced graph takes
    any size. Only for kernels > 1 or stride 1, whose padding is never negative.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        (sh, sw), (dh, dw) = self.stride, self.dilation
        pad_h = (-(-ih // sh) - 1) * sh + (kh - 1) * dh + 1 - ih
        pad_w = (-(-iw // sw) - 1) * sw + (kw - 1) * dw + 1 - iw
        if kh > 1 or kw > 1:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def traceable(student: RawStudent) -> RawStudent:
    """A copy of ``student`` (eval mode) with every ``Conv2dDynamicSamePadding`` (EfficientNet's
    TF-"SAME" convolution) replaced by the equivalent :class:`_SamePadConv2d`, so that a trace
    is valid at every input size; other modules are shared as they are."""
    copy = deepcopy(student).eval()
    for module in list(copy.modules()):
        for name, child in list(module.named_children()):
            if type(child).__name__ != "Conv2dDynamicSamePadding" or child.padding_mode != "zeros":
                continue
            kernel, stride = tuple(child.kernel_size), tuple(child.stride)
            if max(kernel) == 1 and max(stride) > 1:
                continue  # its padding can be negative (a crop): keep it
            conv = _SamePadConv2d(
                child.in_channels, child.out_channels, kernel, stride, 0, child.dilation,
                child.groups, child.bias is not None,
            )  # fmt: skip
            conv.load_state_dict(child.state_dict())
            setattr(module, name, conv)
    return copy


def export_torchscript(student: RawStudent, crop: int, path: str | Path) -> Path:
    """Trace the student (:func:`traceable`) at ``crop`` (RAW side, pixels) to TorchScript,
    check the saved graph against the student at batch 3, return ``path``."""
    path = Path(path)
    student = student.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(traceable(student), _example(student, crop))
    traced.save(str(path))
    reloaded = torch.jit.load(str(path))
    check = _inputs(student, 3, crop, crop, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(*check), student(*check), rtol=1e-4, atol=1e-4)
    return path


def export_onnx(student: RawStudent, crop: int, path: str | Path, *, dynamic: bool) -> bool:
    """Export to ONNX with a dynamic batch axis (and dynamic height and width when ``dynamic``);
    ``RuntimeError`` if the ``onnx`` extra is not installed. With onnxruntime the file is checked
    against the student (batch 1 and 3, and another size when ``dynamic``) and removed, with a
    ``RuntimeError``, if it differs. Returns whether it was checked."""
    if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript")):
        raise RuntimeError(ONNX_MISSING)
    path = Path(path)
    student = student.eval()
    example = _inputs(student, 2, crop, crop)  # batch 2: a batch of 1 would be specialised
    names = ["raw", "wb"][: len(example)]
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in names}
    if dynamic:
        axes["raw"] = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            traceable(student),
            example,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
        )
    try:
        import onnxruntime
    except ModuleNotFoundError:
        return False
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sizes = [(1, crop, crop), (3, crop, crop)]
    if dynamic:
        sizes.append((1, *_other_size(crop)))
    for batch, height, width in sizes:
        inputs = _inputs(student, batch, height, width, seed=2)
        with torch.no_grad():
            want = student(*inputs).numpy()
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})[0]
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-3):
            path.unlink()
            raise RuntimeError(
                f"ONNX export skipped: onnxruntime's logits differ from the student's at batch "
                f"{batch}, {height}×{width}"
            )
    return True


def size_is_dynamic(student: RawStudent, traced: torch.jit.ScriptModule, crop: int) -> bool:
    """Whether the graph traced at ``crop`` gives the PyTorch student's logits at another size
    too (:func:`_other_size`, within 1e-4): then it takes sizes that are multiples of 32 (the
    stride of the usual networks)."""
    inputs = _inputs(student, 2, *_other_size(crop), seed=3)
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
                "(a DNG's 1 / AsShotNeutral; rawpairs.raw_files.read_raw: camera.wb_gains)",
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
        checked = export_onnx(student, crop, out / ONNX_NAME, dynamic=dynamic)
        files["onnx"] = ONNX_NAME
        note = "" if checked else " (not checked: onnxruntime is not installed)"
        messages.append(f"wrote {out / ONNX_NAME}{note}")
    except RuntimeError as err:
        messages.append(str(err))
    spec = input_spec(student, teacher.classes, crop, dynamic=dynamic, files=files, source=source)
    spec_path = write_text_atomic(out / SPEC_NAME, json.dumps(spec, indent=2) + "\n")
    messages.append(f"wrote {spec_path} (the input it expects)")
    return spec, messages


def build_parser(prog: str = "python -m distill.export") -> argparse.ArgumentParser:
    """The ``distill export`` options (and ``--config``, :mod:`distill.options`)."""
    p = OneLineParser(
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


def smallest_crop(student: RawStudent, probe: int = 256) -> int:
    """The smallest RAW crop side (pixels, even) whose every feature map of the student is at
    least one pixel without padding: the network's total stride, measured on a ``probe``-pixel
    input (32 for EfficientNet-Lite0; 2 for a network without strides)."""
    sides: list[int] = []

    def record(module: torch.nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4:
            sides.append(min(output.shape[-2:]))

    hooks = [
        m.register_forward_hook(record)
        for m in student.net.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.MaxPool2d | torch.nn.AvgPool2d)
    ]
    try:
        with torch.no_grad():
            student.eval()(*_example(student, probe))
    finally:
        for hook in hooks:
            hook.remove()
    stride = probe // max(1, min(sides, default=probe))
    return max(2, stride + stride % 2)


def main(argv: Sequence[str] | None = None, prog: str = "python -m distill.export") -> int:
    """The command line; returns 0, or 2 with a one-line error on stderr (a bad ``--out`` or
    ``--crop`` before anything is exported)."""
    args = parse_args(build_parser(prog), argv)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "export"
    try:
        check_output_folder(out)
        if args.crop is not None:
            check_crop(args.crop)
        student, teacher, config = load_checkpoint(args.checkpoint, trusted=args.trust)
        crop = args.crop or config["crop"]
        minimum = smallest_crop(student)
        if crop < minimum:
            raise ValueError(
                f"--crop {crop} is smaller than the student's stride: its last feature map "
                f"would be padding; use --crop >= {minimum}"
            )
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
