"""Convert a TFLite flatbuffer image model into a plain, trainable torch ``nn.Module``.

The graph is parsed with the ``tflite`` package (the flatbuffer schema bindings); every operator
becomes a small torch layer working in NCHW, constant weights become float32 ``nn.Parameter``s
(float16 weights behind DEQUANTIZE are widened), so the result deep-copies and fine-tunes like
any other module. Only the operators of MediaPipe's segmentation models are supported
(:data:`SUPPORTED_OPS`); any other raises ``ValueError`` naming it.

Two patterns that a fixed-size TFLite graph bakes in are read by intent, so that the module also
runs at input sizes other than the recorded one (at the recorded size both match TFLite exactly):
an AVERAGE_POOL_2D whose window covers its whole recorded input is a global mean, and a
RESIZE_BILINEAR to a constant size keeps the recorded scale factor (``out = in·out₀/in₀``).
"""

from __future__ import annotations

from fractions import Fraction
from os import PathLike
from pathlib import Path

import numpy as np
import tflite
import torch
import torch.nn.functional as F
from torch import nn

_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_CUSTOM = tflite.BuiltinOperator.CUSTOM
_NUMPY_TYPES = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32,
}
_ACTIVATIONS = {
    tflite.ActivationFunctionType.NONE: None,
    tflite.ActivationFunctionType.RELU: nn.ReLU(),
    tflite.ActivationFunctionType.RELU_N1_TO_1: nn.Hardtanh(-1.0, 1.0),
    tflite.ActivationFunctionType.RELU6: nn.ReLU6(),
    tflite.ActivationFunctionType.TANH: nn.Tanh(),
}
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)

SUPPORTED_OPS = (
    "ADD",
    "AVERAGE_POOL_2D",
    "CONV_2D",
    "Convolution2DTransposeBias",
    "DEPTHWISE_CONV_2D",
    "DEQUANTIZE",
    "HARD_SWISH",
    "LOGISTIC",
    "MEAN",
    "MUL",
    "RELU",
    "RELU6",
    "RESIZE_BILINEAR",
)


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite SAME padding (before, after) of one axis for an input of ``size`` pixels."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Activated(nn.Module):
    """Base of layers with a TFLite fused activation (``act`` None: identity)."""

    def __init__(self, act: nn.Module | None) -> None:
        super().__init__()
        self.act = act

    def activate(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.act is None else self.act(y)


class Conv(_Activated):
    """CONV_2D / DEPTHWISE_CONV_2D: NCHW conv with TFLite SAME/VALID padding from the input size."""

    def __init__(self, weight, bias, stride, dilation, same: bool, groups: int, act) -> None:
        super().__init__(act)
        self.weight = nn.Parameter(torch.from_numpy(weight))
        self.bias = None if bias is None else nn.Parameter(torch.from_numpy(bias))
        self.stride, self.dilation, self.same, self.groups = stride, dilation, same, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding: tuple[int, int] | int = 0
        if self.same:
            (top, bottom), (left, right) = (
                _same_pads(
                    x.shape[2 + i], self.weight.shape[2 + i], self.stride[i], self.dilation[i]
                )
                for i in (0, 1)
            )
            if top == bottom and left == right:
                padding = (top, left)
            else:
                x = F.pad(x, (left, right, top, bottom))
        y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return self.activate(y)


class TransposeConvBias(nn.Module):
    """MediaPipe's custom ``Convolution2DTransposeBias``: output ``s·(in-1)+k-p`` per axis with
    ``p = max(0, k-1-(in-1) mod s)`` for SAME (0 for VALID), cropped from ``p//2``."""

    def __init__(self, weight, bias, stride, same: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(weight))
        self.bias = nn.Parameter(torch.from_numpy(bias))
        self.stride, self.same = stride, same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose2d(x, self.weight, self.bias, self.stride)
        for axis in (0, 1):
            size, k, s = x.shape[2 + axis], self.weight.shape[2 + axis], self.stride[axis]
            pad = max(0, k - 1 - (size - 1) % s) if self.same else 0
            y = y.narrow(2 + axis, pad // 2, s * (size - 1) + k - pad)
        return y


class AvgPool(_Activated):
    """AVERAGE_POOL_2D; SAME padding averages only the pixels inside the image (as TFLite)."""

    def __init__(self, kernel, stride, same: bool, act) -> None:
        super().__init__(act)
        self.kernel, self.stride, self.same = kernel, stride, same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            (top, bottom), (left, right) = (
                _same_pads(x.shape[2 + i], self.kernel[i], self.stride[i]) for i in (0, 1)
            )
            ones = torch.ones_like(x[:1, :1])
            pads = (left, right, top, bottom)
            summed = F.avg_pool2d(F.pad(x, pads), self.kernel, self.stride, divisor_override=1)
            count = F.avg_pool2d(F.pad(ones, pads), self.kernel, self.stride, divisor_override=1)
            y = summed / count
        else:
            y = F.avg_pool2d(x, self.kernel, self.stride)
        return self.activate(y)


class GlobalMean(_Activated):
    """Mean over the given NCHW axes, dimensions kept (MEAN; AVERAGE_POOL_2D over everything)."""

    def __init__(self, axes: tuple[int, ...], act=None) -> None:
        super().__init__(act)
        self.axes = axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(x.mean(dim=self.axes, keepdim=True))


class ResizeBilinear(nn.Module):
    """RESIZE_BILINEAR by TFLite's formula (align_corners / half_pixel_centers / legacy), to
    ``in·scale`` pixels per axis (``scale`` = recorded out/in sizes)."""

    def __init__(self, scale: tuple[Fraction, Fraction], align_corners: bool, half_pixel: bool):
        super().__init__()
        self.scale, self.align_corners, self.half_pixel = scale, align_corners, half_pixel

    def _axis(self, x: torch.Tensor, dim: int, scale: Fraction) -> torch.Tensor:
        size = x.shape[dim]
        out = size * scale
        if out.denominator != 1:
            raise ValueError(f"RESIZE_BILINEAR: {size} px × {scale} is not a whole size")
        out = int(out)
        step = (size - 1) / (out - 1) if self.align_corners and out > 1 else size / out
        pos = torch.arange(out, dtype=torch.float64)
        src = (pos + 0.5) * step - 0.5 if self.half_pixel else pos * step
        lo = src.floor()
        frac = (src - lo).to(x.dtype)
        lo_i = lo.long().clamp(0, size - 1)
        hi_i = src.ceil().long().clamp(0, size - 1)
        shape = [1, 1, 1, 1]
        shape[dim] = out
        frac = frac.view(shape)
        a, b = x.index_select(dim, lo_i), x.index_select(dim, hi_i)
        return a + (b - a) * frac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._axis(self._axis(x, 2, self.scale[0]), 3, self.scale[1])


class Binary(_Activated):
    """ADD / MUL of two NCHW tensors (NHWC broadcasting carries over after the permutation)."""

    def __init__(self, op, act) -> None:
        super().__init__(act)
        self.op = op

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.activate(self.op(a, b))


class Constant(nn.Module):
    """A constant activation operand (e.g. the other side of ADD), as an NCHW parameter."""

    def __init__(self, value: np.ndarray) -> None:
        super().__init__()
        nhwc = value.reshape((1,) * (4 - value.ndim) + value.shape)
        self.value = nn.Parameter(torch.from_numpy(nhwc.transpose(0, 3, 1, 2).copy()))

    def forward(self) -> torch.Tensor:
        return self.value


class TFLiteModule(nn.Module):
    """The converted graph: ``forward(x)`` maps B×C×H×W float to B×C'×H'×W' (see load_tflite)."""

    def __init__(self, layers: dict[str, nn.Module], wiring, source: int, sink: int, pair: bool):
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.wiring = wiring  # per layer: (input tensor ids, output tensor id, ids freed after)
        self.source, self.sink, self.pair = source, sink, pair

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.source: x}
        for layer, (inputs, output, freed) in zip(self.layers.values(), self.wiring, strict=True):
            env[output] = layer(*(env[i] for i in inputs))
            for i in freed:
                del env[i]
        y = env[self.sink]
        return torch.cat([torch.zeros_like(y), y], dim=1) if self.pair else y


def _op_name(model, op) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == _CUSTOM:
        return code.CustomCode().decode()
    return _OP_NAMES.get(builtin, f"builtin #{builtin}")


def _options(op, cls):
    table = op.BuiltinOptions()
    options = cls()
    options.Init(table.Bytes, table.Pos)
    return options


def _activation(options) -> nn.Module | None:
    kind = options.FusedActivationFunction()
    if kind not in _ACTIVATIONS:
        raise ValueError(f"unsupported fused activation {kind}")
    return _ACTIVATIONS[kind]


def load_tflite(path_or_bytes: str | PathLike | bytes, *, logits: bool = True) -> TFLiteModule:
    """Convert a single-input, single-output float TFLite image model to a torch module.

    Input: B×C×H×W float32 NCHW (for MediaPipe segmenters: sRGB in [0, 1], C = 3; any batch size,
    and other H, W where the graph's strides and resizes allow). Output, NCHW:

    - ``logits=False``: the graph's own output, B×C'×H'×W' (MediaPipe selfie: B×1×H×W person
      probability in [0, 1]).
    - ``logits=True`` and the graph ends in LOGISTIC: its pre-sigmoid input ``z``. With one
      channel this becomes the two-class logits ``[0, z]`` (B×2×H'×W', channel 0 background,
      1 foreground) so ``softmax(dim=1)`` gives ``[1-σ(z), σ(z)]``; with C' > 1 channels the
      B×C'×H'×W' ``z`` itself (independent sigmoids).
    - ``logits=True`` and the graph does not end in LOGISTIC: the graph's own output.

    Raises ``ValueError`` for an operator outside :data:`SUPPORTED_OPS` (naming it), quantized
    activations, or a graph that is not single-input single-output rank-4 float32.
    """
    if isinstance(path_or_bytes, bytes | bytearray):
        data = bytes(path_or_bytes)
    else:
        data = Path(path_or_bytes).read_bytes()
    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f"expected one subgraph, found {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    if graph.InputsLength() != 1 or graph.OutputsLength() != 1:
        raise ValueError("expected a single-input single-output graph")
    source, sink = int(graph.Inputs(0)), int(graph.Outputs(0))

    def shape(t: int) -> tuple[int, ...]:
        return tuple(int(d) for d in graph.Tensors(t).ShapeAsNumpy())

    if len(shape(source)) != 4 or graph.Tensors(source).Type() != tflite.TensorType.FLOAT32:
        raise ValueError("expected a float32 NHWC image input")

    consts: dict[int, np.ndarray] = {}
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        buffer = model.Buffers(tensor.Buffer())
        if buffer.DataLength() and tensor.Type() in _NUMPY_TYPES:
            raw = buffer.DataAsNumpy().tobytes()
            consts[t] = np.frombuffer(raw, _NUMPY_TYPES[tensor.Type()]).reshape(shape(t))

    def weight(t: int) -> np.ndarray:
        if t not in consts:
            raise ValueError(f"tensor {graph.Tensors(t).Name().decode()} must be constant")
        return consts[t].astype(np.float32)

    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    pair = False
    last = ops[-1]
    if logits and _op_name(model, last) == "LOGISTIC" and int(last.Outputs(0)) == sink:
        ops, sink = ops[:-1], int(last.Inputs(0))
        pair = shape(sink)[-1] == 1

    layers: dict[str, nn.Module] = {}
    wiring: list[tuple[tuple[int, ...], int]] = []
    for op in ops:
        name = _op_name(model, op)
        ins = [int(i) for i in op.InputsAsNumpy()]
        out = int(op.Outputs(0))
        if name == "DEQUANTIZE":
            if ins[0] not in consts or consts[ins[0]].dtype != np.float16:
                raise ValueError("DEQUANTIZE is supported for float16 constants only")
            consts[out] = weight(ins[0])
            continue
        if name not in SUPPORTED_OPS:
            raise ValueError(f"unsupported TFLite operator {name}")
        if len(shape(out)) != 4:
            raise ValueError(f"{name}: only rank-4 activations are supported")
        args = ins[:1]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            cls = tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions
            o = _options(op, cls)
            w = weight(ins[1])  # CONV_2D: O×kh×kw×I; DEPTHWISE: 1×kh×kw×(I·multiplier)
            w, groups = (
                (w.transpose(0, 3, 1, 2), 1)
                if name == "CONV_2D"
                else (w[0].transpose(2, 0, 1)[:, None], shape(ins[0])[-1])
            )
            bias = weight(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            layer = Conv(
                np.ascontiguousarray(w),
                bias,
                (o.StrideH(), o.StrideW()),
                (o.DilationHFactor(), o.DilationWFactor()),
                o.Padding() == tflite.Padding.SAME,
                groups,
                _activation(o),
            )
        elif name == "Convolution2DTransposeBias":
            padding, stride_w, stride_h = np.frombuffer(
                op.CustomOptionsAsNumpy().tobytes()[:12], "<i4"
            )
            w = weight(ins[1]).transpose(3, 0, 1, 2)  # O×kh×kw×I → I×O×kh×kw
            layer = TransposeConvBias(
                np.ascontiguousarray(w),
                weight(ins[2]),
                (int(stride_h), int(stride_w)),
                padding == 1,
            )
        elif name == "AVERAGE_POOL_2D":
            o = _options(op, tflite.Pool2DOptions)
            kernel = (o.FilterHeight(), o.FilterWidth())
            if kernel == shape(ins[0])[1:3] and shape(out)[1:3] == (1, 1):
                layer = GlobalMean((2, 3), _activation(o))
            else:
                layer = AvgPool(
                    kernel,
                    (o.StrideH(), o.StrideW()),
                    o.Padding() == tflite.Padding.SAME,
                    _activation(o),
                )
        elif name == "MEAN":
            if not _options(op, tflite.ReducerOptions).KeepDims():
                raise ValueError("MEAN without keep_dims is not supported")
            axes = tuple(sorted(_NHWC_TO_NCHW_AXIS[int(a) % 4] for a in consts[ins[1]].ravel()))
            layer = GlobalMean(axes)
        elif name == "RESIZE_BILINEAR":
            o = _options(op, tflite.ResizeBilinearOptions)
            if ins[1] not in consts:
                raise ValueError("RESIZE_BILINEAR needs a constant size")
            scale = tuple(
                Fraction(int(n), d) for n, d in zip(consts[ins[1]], shape(ins[0])[1:3], strict=True)
            )
            layer = ResizeBilinear(scale, o.AlignCorners(), o.HalfPixelCenters())
        elif name in ("ADD", "MUL"):
            o = _options(op, tflite.AddOptions if name == "ADD" else tflite.MulOptions)
            layer = Binary(torch.add if name == "ADD" else torch.mul, _activation(o))
            for i in ins:
                if i in consts and f"const{i}" not in layers:
                    layers[f"const{i}"] = Constant(weight(i))
                    wiring.append(((), i))
            args = ins
        else:
            layer = {
                "HARD_SWISH": nn.Hardswish(),
                "LOGISTIC": nn.Sigmoid(),
                "RELU": nn.ReLU(),
                "RELU6": nn.ReLU6(),
            }[name]
        layers[f"{len(layers)}_{name.lower()}"] = layer
        wiring.append((tuple(args), out))

    last_use = {}
    for step, (inputs, _) in enumerate(wiring):
        for i in inputs:
            last_use[i] = step
    last_use[sink] = len(wiring)
    freed = [[] for _ in wiring]
    for t, step in last_use.items():
        if step < len(wiring):
            freed[step].append(t)
    plan = [(ins, out, tuple(f)) for (ins, out), f in zip(wiring, freed, strict=True)]
    return TFLiteModule(layers, plan, source, sink, pair)
