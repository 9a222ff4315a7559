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
    tflite.ActivationFunctionType.NONE: lambda: None,
    tflite.ActivationFunctionType.RELU: nn.ReLU,
    tflite.ActivationFunctionType.RELU_N1_TO_1: lambda: nn.Hardtanh(-1.0, 1.0),
    tflite.ActivationFunctionType.RELU6: nn.ReLU6,
    tflite.ActivationFunctionType.TANH: nn.Tanh,
}
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)


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
        pos = torch.arange(out, dtype=torch.float64, device=x.device)
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


class _Graph:
    """Read access to the one subgraph of a TFLite model: shapes, constants, operators."""

    def __init__(self, data: bytes) -> None:
        self.model = tflite.Model.GetRootAs(data, 0)
        if self.model.SubgraphsLength() != 1:
            raise ValueError(f"expected one subgraph, found {self.model.SubgraphsLength()}")
        self.graph = self.model.Subgraphs(0)
        self.consts: dict[int, np.ndarray] = {}  # tensor id → value (NHWC layout)
        for t in range(self.graph.TensorsLength()):
            tensor = self.graph.Tensors(t)
            buffer = self.model.Buffers(tensor.Buffer())
            if buffer.DataLength() and tensor.Type() in _NUMPY_TYPES:
                raw = buffer.DataAsNumpy().tobytes()
                value = np.frombuffer(raw, _NUMPY_TYPES[tensor.Type()])
                self.consts[t] = value.reshape(self.shape(t))

    def shape(self, t: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.graph.Tensors(t).ShapeAsNumpy())

    def weight(self, t: int) -> np.ndarray:
        """A constant tensor as float32 (ValueError if it is computed at run time)."""
        if t not in self.consts:
            raise ValueError(f"tensor {self.graph.Tensors(t).Name().decode()} must be constant")
        return self.consts[t].astype(np.float32)

    def operators(self) -> list:
        return [self.graph.Operators(i) for i in range(self.graph.OperatorsLength())]

    def op_name(self, op) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
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
    return _ACTIVATIONS[kind]()


def _conv(g: _Graph, op, ins: list[int], out: int) -> nn.Module:
    depthwise = g.op_name(op) == "DEPTHWISE_CONV_2D"
    o = _options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
    w = g.weight(ins[1])  # CONV_2D: O×kh×kw×I; DEPTHWISE: 1×kh×kw×(I·multiplier)
    if depthwise:
        w, groups = w[0].transpose(2, 0, 1)[:, None], g.shape(ins[0])[-1]
    else:
        w, groups = w.transpose(0, 3, 1, 2), 1
    return Conv(
        np.ascontiguousarray(w),
        g.weight(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None,
        (o.StrideH(), o.StrideW()),
        (o.DilationHFactor(), o.DilationWFactor()),
        o.Padding() == tflite.Padding.SAME,
        groups,
        _activation(o),
    )


def _transpose_conv_bias(g: _Graph, op, ins: list[int], out: int) -> nn.Module:
    # Custom options: TfLiteTransposeConvParams {padding (1 SAME, 2 VALID), stride_w, stride_h}.
    padding, stride_w, stride_h = np.frombuffer(op.CustomOptionsAsNumpy().tobytes()[:12], "<i4")
    w = g.weight(ins[1]).transpose(3, 0, 1, 2)  # O×kh×kw×I → I×O×kh×kw
    stride = (int(stride_h), int(stride_w))
    return TransposeConvBias(np.ascontiguousarray(w), g.weight(ins[2]), stride, padding == 1)


def _average_pool(g: _Graph, op, ins: list[int], out: int) -> nn.Module:
    o = _options(op, tflite.Pool2DOptions)
    kernel = (o.FilterHeight(), o.FilterWidth())
    if kernel == g.shape(ins[0])[1:3] and g.shape(out)[1:3] == (1, 1):
        return GlobalMean((2, 3), _activation(o))
    same = o.Padding() == tflite.Padding.SAME
    return AvgPool(kernel, (o.StrideH(), o.StrideW()), same, _activation(o))


def _mean(g: _Graph, op, ins: list[int], out: int) -> nn.Module:
    if not _options(op, tflite.ReducerOptions).KeepDims():
        raise ValueError("MEAN without keep_dims is not supported")
    axes = g.weight(ins[1]).astype(int).ravel() % 4
    return GlobalMean(tuple(sorted(_NHWC_TO_NCHW_AXIS[a] for a in axes)))


def _resize_bilinear(g: _Graph, op, ins: list[int], out: int) -> nn.Module:
    o = _options(op, tflite.ResizeBilinearOptions)
    sizes = g.weight(ins[1]).astype(int)
    scale = tuple(Fraction(int(n), d) for n, d in zip(sizes, g.shape(ins[0])[1:3], strict=True))
    return ResizeBilinear(scale, o.AlignCorners(), o.HalfPixelCenters())


def _binary(g: _Graph, op, ins: list[int], out: int) -> nn.Module:
    add = g.op_name(op) == "ADD"
    o = _options(op, tflite.AddOptions if add else tflite.MulOptions)
    return Binary(torch.add if add else torch.mul, _activation(o))


# name → (builder(graph, op, input ids, output id) → layer, number of leading activation inputs)
_BUILDERS = {
    "ADD": (_binary, 2),
    "AVERAGE_POOL_2D": (_average_pool, 1),
    "CONV_2D": (_conv, 1),
    "Convolution2DTransposeBias": (_transpose_conv_bias, 1),
    "DEPTHWISE_CONV_2D": (_conv, 1),
    "HARD_SWISH": (lambda *_: nn.Hardswish(), 1),
    "LOGISTIC": (lambda *_: nn.Sigmoid(), 1),
    "MEAN": (_mean, 1),
    "MUL": (_binary, 2),
    "RELU": (lambda *_: nn.ReLU(), 1),
    "RELU6": (lambda *_: nn.ReLU6(), 1),
    "RESIZE_BILINEAR": (_resize_bilinear, 1),
}
SUPPORTED_OPS = tuple(sorted([*_BUILDERS, "DEQUANTIZE"]))


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
    weights or activations, or a graph that is not single-input single-output rank-4 float32.
    """
    if isinstance(path_or_bytes, bytes | bytearray):
        g = _Graph(bytes(path_or_bytes))
    else:
        g = _Graph(Path(path_or_bytes).read_bytes())
    if g.graph.InputsLength() != 1 or g.graph.OutputsLength() != 1:
        raise ValueError("expected a single-input single-output graph")
    source, sink = int(g.graph.Inputs(0)), int(g.graph.Outputs(0))
    if len(g.shape(source)) != 4 or g.graph.Tensors(source).Type() != tflite.TensorType.FLOAT32:
        raise ValueError("expected a float32 NHWC image input")

    ops, pair = g.operators(), False
    if logits and g.op_name(ops[-1]) == "LOGISTIC" and int(ops[-1].Outputs(0)) == sink:
        ops, sink = ops[:-1], int(ops[-1].Inputs(0))
        pair = g.shape(sink)[-1] == 1

    layers: dict[str, nn.Module] = {}
    wiring: list[tuple[tuple[int, ...], int]] = []  # per layer: input tensor ids, output id
    for op in ops:
        name = g.op_name(op)
        ins, out = [int(i) for i in op.InputsAsNumpy()], int(op.Outputs(0))
        if name == "DEQUANTIZE":  # float16 weights: fold into a float32 constant
            if ins[0] not in g.consts or g.consts[ins[0]].dtype != np.float16:
                raise ValueError("DEQUANTIZE is supported for float16 constants only")
            g.consts[out] = g.weight(ins[0])
            continue
        if name not in _BUILDERS:
            raise ValueError(f"unsupported TFLite operator {name}")
        if len(g.shape(out)) != 4:
            raise ValueError(f"{name}: only rank-4 activations are supported")
        build, n_data = _BUILDERS[name]
        for i in ins[:n_data]:
            if i in g.consts and f"const{i}" not in layers:
                layers[f"const{i}"] = Constant(g.weight(i))
                wiring.append(((), i))
        layers[f"{len(layers)}_{name.lower()}"] = build(g, op, ins, out)
        wiring.append((tuple(ins[:n_data]), out))

    last_use = {i: step for step, (inputs, _) in enumerate(wiring) for i in inputs}
    last_use[sink] = len(wiring)
    freed: list[list[int]] = [[] for _ in wiring]
    for t, step in last_use.items():
        if step < len(wiring):
            freed[step].append(t)
    plan = [(ins, out, tuple(f)) for (ins, out), f in zip(wiring, freed, strict=True)]
    return TFLiteModule(layers, plan, source, sink, pair)
