"""Where a trained student leaves PyTorch: TorchScript, and ONNX when ``onnx`` is installed.

``python -m distill.export --checkpoint RUN/last.pt --out RUN/export``. The exported graph takes
packed RGGB planes float32 [B, 4, crop/2, crop/2] (black level removed, divided by
``white − black``, see ``distill.data``) and returns logits [B, K]; the RAW front-end
(``distill.frontend``) is part of the graph. A student whose front-end white balance is
``metadata`` takes the camera's white-balance gains float32 [B, 3] (R, G, B) as a second input.
The TorchScript graph is traced at one input size (``--crop``) and is valid for that size only;
the ONNX graph has a dynamic batch axis. Both exports are checked against the PyTorch student on
a random input.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

try:
    import torch
except ModuleNotFoundError as err:  # `python -m distill.export` without rawpairs[distill]
    from distill.config import exit_if_command

    exit_if_command(err, __name__)
    raise

from distill.checkpoint import add_trust_argument, load_checkpoint
from distill.models import RawStudent

__all__ = ["export_onnx", "export_torchscript", "main", "smallest_crop"]

ONNX_MISSING = "ONNX export skipped: the `onnx` package is not installed (pip install onnx)"


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
    if importlib.util.find_spec("onnx") is None:
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


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns 0, or 2 with a one-line error on stderr (a bad ``--out`` or
    ``--crop`` before anything is exported)."""
    from distill.config import OneLineParser, check_crop, check_output_folder

    p = OneLineParser(prog="python -m distill.export", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default=None, help="folder (default: <checkpoint folder>/export)")
    p.add_argument(
        "--crop", type=int, default=None, help="RAW crop side, even (default: training crop)"
    )
    add_trust_argument(p)
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "export"
    try:
        check_output_folder(out)
        if args.crop is not None:
            check_crop(args.crop)
        student, _, config = load_checkpoint(args.checkpoint, trusted=args.trust)
        crop = args.crop or config["crop"]
        minimum = smallest_crop(student)
        if crop < minimum:
            raise ValueError(
                f"--crop {crop} is smaller than the student's stride: its last feature map "
                f"would be padding; use --crop >= {minimum}"
            )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {export_torchscript(student, crop, out / 'student.torchscript.pt')}")
    try:
        print(f"wrote {export_onnx(student, crop, out / 'student.onnx')}")
    except RuntimeError as err:
        print(err, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
