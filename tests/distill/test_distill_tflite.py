"""distill.tflite against numpy references written from the TFLite op definitions, on tiny graphs
built here with flatbuffers; distill.selfie's cache, hash and error paths without network."""

from __future__ import annotations

import copy
import hashlib
import io
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import tflite
import torch

from distill import selfie
from distill.tflite import load_tflite

RNG = np.random.default_rng(0)
ACT = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3, "TANH": 4}
SAME, VALID = 0, 1


# ----------------------------------------------------------------------------- graph builder
class Graph:
    """Collects tensors and operators of one subgraph and serialises them to a .tflite."""

    def __init__(self) -> None:
        self.tensors: list[tuple[tuple[int, ...], np.ndarray | None, int]] = []
        self.ops: list[tuple[str, list[int], list[int], tuple | None, bytes]] = []

    def tensor(self, shape, data: np.ndarray | None = None, dtype: int | None = None) -> int:
        if dtype is None:
            dtype = {np.float16: tflite.TensorType.FLOAT16, np.int32: tflite.TensorType.INT32}.get(
                None if data is None else data.dtype.type, tflite.TensorType.FLOAT32
            )
        self.tensors.append((tuple(shape), data, dtype))
        return len(self.tensors) - 1

    def const(self, data: np.ndarray, fp16: bool = False) -> int:
        """A float32 constant; with ``fp16`` stored as float16 behind a DEQUANTIZE."""
        if not fp16:
            return self.tensor(data.shape, np.asarray(data))
        half = self.tensor(data.shape, data.astype(np.float16))
        return self.op("DEQUANTIZE", [half], data.shape)

    def op(self, name, inputs, out_shape, options=None, custom: bytes = b"") -> int:
        out = self.tensor(out_shape)
        self.ops.append((name, list(inputs), [out], options, custom))
        return out

    def build(self, source: int, sink: int) -> bytes:
        b = flatbuffers.Builder(1024)
        names = sorted({op[0] for op in self.ops})

        def vector(start, items, prepend):
            start(b, len(items))
            for item in reversed(items):
                prepend(item)
            return b.EndVector()

        def ints(values):
            return b.CreateNumpyVector(np.asarray(values, np.int32))

        buffers = [self._buffer(b, None)]
        tensors = []
        for i, (shape, data, dtype) in enumerate(self.tensors):
            if data is not None:
                buffers.append(self._buffer(b, data))
            name, shape_vec = b.CreateString(f"t{i}"), ints(shape)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape_vec)
            tflite.TensorAddType(b, dtype)
            tflite.TensorAddBuffer(b, len(buffers) - 1 if data is not None else 0)
            tflite.TensorAddName(b, name)
            tensors.append(tflite.TensorEnd(b))
        codes = []
        for name in names:
            builtin = getattr(tflite.BuiltinOperator, name, None)
            custom = None if builtin is not None else b.CreateString(name)
            builtin = tflite.BuiltinOperator.CUSTOM if builtin is None else builtin
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddBuiltinCode(b, builtin)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(builtin, 127))
            if custom is not None:
                tflite.OperatorCodeAddCustomCode(b, custom)
            codes.append(tflite.OperatorCodeEnd(b))
        ops = []
        for name, ins, outs, options, custom in self.ops:
            table = None
            if options is not None:
                kind, fields = options
                getattr(tflite, f"{kind}Start")(b)
                for field, value in fields.items():
                    getattr(tflite, f"{kind}Add{field}")(b, value)
                table = getattr(tflite, f"{kind}End")(b)
            in_vec, out_vec = ints(ins), ints(outs)
            custom_vec = b.CreateByteVector(custom) if custom else None
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, names.index(name))
            tflite.OperatorAddInputs(b, in_vec)
            tflite.OperatorAddOutputs(b, out_vec)
            if table is not None:
                tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, kind))
                tflite.OperatorAddBuiltinOptions(b, table)
            if custom_vec is not None:
                tflite.OperatorAddCustomOptions(b, custom_vec)
            ops.append(tflite.OperatorEnd(b))
        tensor_vec = vector(tflite.SubGraphStartTensorsVector, tensors, b.PrependUOffsetTRelative)
        op_vec = vector(tflite.SubGraphStartOperatorsVector, ops, b.PrependUOffsetTRelative)
        in_vec, out_vec = ints([source]), ints([sink])
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensor_vec)
        tflite.SubGraphAddOperators(b, op_vec)
        tflite.SubGraphAddInputs(b, in_vec)
        tflite.SubGraphAddOutputs(b, out_vec)
        subgraph = tflite.SubGraphEnd(b)
        subgraphs = vector(tflite.ModelStartSubgraphsVector, [subgraph], b.PrependUOffsetTRelative)
        code_vec = vector(tflite.ModelStartOperatorCodesVector, codes, b.PrependUOffsetTRelative)
        buffer_vec = vector(tflite.ModelStartBuffersVector, buffers, b.PrependUOffsetTRelative)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, code_vec)
        tflite.ModelAddSubgraphs(b, subgraphs)
        tflite.ModelAddBuffers(b, buffer_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _buffer(b, data: np.ndarray | None) -> int:
        vec = None if data is None else b.CreateByteVector(np.ascontiguousarray(data).tobytes())
        tflite.BufferStart(b)
        if vec is not None:
            tflite.BufferAddData(b, vec)
        return tflite.BufferEnd(b)


# ----------------------------------------------------------------------------- numpy references
def act(y, kind):
    return {
        "NONE": y,
        "RELU": np.maximum(y, 0),
        "RELU_N1_TO_1": np.clip(y, -1, 1),
        "RELU6": np.clip(y, 0, 6),
        "TANH": np.tanh(y),
    }[kind]


def same_pad(size, k, s, d=1):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def ref_conv(x, w, bias, stride, padding, dilation=1, depthwise=False):
    """NHWC conv; w is O×kh×kw×I (CONV_2D) or 1×kh×kw×(I·M) (DEPTHWISE_CONV_2D)."""
    _, h, wd, c = x.shape
    kh, kw = w.shape[1:3]
    if padding == SAME:
        (t, bo), (le, r) = same_pad(h, kh, stride, dilation), same_pad(wd, kw, stride, dilation)
        x = np.pad(x, ((0, 0), (t, bo), (le, r), (0, 0)))
    oh = (x.shape[1] - (kh - 1) * dilation - 1) // stride + 1
    ow = (x.shape[2] - (kw - 1) * dilation - 1) // stride + 1
    out_c = w.shape[3] if depthwise else w.shape[0]
    y = np.zeros((x.shape[0], oh, ow, out_c))
    for ky in range(kh):
        for kx in range(kw):
            patch = x[
                :,
                ky * dilation : ky * dilation + (oh - 1) * stride + 1 : stride,
                kx * dilation : kx * dilation + (ow - 1) * stride + 1 : stride,
            ]
            if depthwise:
                y += np.repeat(patch, out_c // c, axis=3) * w[0, ky, kx]
            else:
                y += patch @ w[:, ky, kx, :].T
    return y if bias is None else y + bias


def ref_avg_pool(x, k, stride, padding):
    _, h, w, _ = x.shape
    (t, _), (le, _) = (
        (same_pad(h, k, stride), same_pad(w, k, stride)) if padding == SAME else ((0, 0), (0, 0))
    )
    oh = -(-h // stride) if padding == SAME else (h - k) // stride + 1
    ow = -(-w // stride) if padding == SAME else (w - k) // stride + 1
    y = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            y0, x0 = max(i * stride - t, 0), max(j * stride - le, 0)
            y1, x1 = min(i * stride - t + k, h), min(j * stride - le + k, w)
            y[:, i, j] = x[:, y0:y1, x0:x1].mean(axis=(1, 2))
    return y


def ref_resize(x, oh, ow, align_corners, half_pixel):
    def coords(n_in, n_out):
        scale = (n_in - 1) / (n_out - 1) if align_corners and n_out > 1 else n_in / n_out
        out = []
        for o in range(n_out):
            v = (o + 0.5) * scale - 0.5 if half_pixel else o * scale
            lo = int(np.floor(v))
            out.append((max(lo, 0), min(int(np.ceil(v)), n_in - 1), v - lo))
        return out

    y = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for i, (y0, y1, fy) in enumerate(coords(x.shape[1], oh)):
        for j, (x0, x1, fx) in enumerate(coords(x.shape[2], ow)):
            top = x[:, y0, x0] * (1 - fx) + x[:, y0, x1] * fx
            bottom = x[:, y1, x0] * (1 - fx) + x[:, y1, x1] * fx
            y[:, i, j] = top * (1 - fy) + bottom * fy
    return y


def ref_transpose_conv_bias(x, w, bias, stride, same):
    """MediaPipe's Convolution2DTransposeBias, transcribed loop for loop (w: O×kh×kw×I)."""
    n, h, wd, _ = x.shape
    kh, kw = w.shape[1:3]
    ph = max(0, kh - (h - 1) % stride - 1) if same else 0
    pw = max(0, kw - (wd - 1) % stride - 1) if same else 0
    oh, ow = stride * (h - 1) + kh - ph, stride * (wd - 1) + kw - pw
    y = np.broadcast_to(bias, (n, oh, ow, w.shape[0])).copy()
    for iy in range(h):
        for ix in range(wd):
            for fy in range(kh):
                for fx in range(kw):
                    oy, ox = iy * stride - ph // 2 + fy, ix * stride - pw // 2 + fx
                    if 0 <= oy < oh and 0 <= ox < ow:
                        y[:, oy, ox] += x[:, iy, ix] @ w[:, fy, fx, :].T
    return y


def hard_swish(x):
    return x * np.clip(x + 3, 0, 6) / 6


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def run(data: bytes, x_nhwc: np.ndarray, **kwargs) -> np.ndarray:
    """Converted module on an NHWC array, result back in NHWC float64."""
    module = load_tflite(data, **kwargs).eval()
    with torch.no_grad():
        y = module(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).astype(np.float32)))
    return y.numpy().transpose(0, 2, 3, 1).astype(np.float64)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


# ----------------------------------------------------------------------------- single operators
def conv_case(h, w, k, stride, padding, dilation, activation, fp16, depthwise=False, mult=1):
    c = 3
    weights = rand(1, k, k, c * mult) if depthwise else rand(4, k, k, c)
    bias = rand(weights.shape[3] if depthwise else 4)
    if fp16:
        weights, bias = (a.astype(np.float16).astype(np.float32) for a in (weights, bias))
    x = rand(2, h, w, c)
    y = act(ref_conv(x, weights, bias, stride, padding, dilation, depthwise), activation)
    g = Graph()
    src = g.tensor((1, h, w, c))
    kind = "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions"
    fields = {
        "Padding": padding,
        "StrideH": stride,
        "StrideW": stride,
        "DilationHFactor": dilation,
        "DilationWFactor": dilation,
        "FusedActivationFunction": ACT[activation],
    }
    if depthwise:
        fields["DepthMultiplier"] = mult
    out = g.op(
        "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D",
        [src, g.const(weights, fp16), g.const(bias, fp16)],
        (1, *y.shape[1:]),
        (kind, fields),
    )
    return g.build(src, out), x, y


@pytest.mark.parametrize(
    ("h", "w", "k", "stride", "padding", "dilation", "activation", "fp16"),
    [
        (8, 9, 3, 2, SAME, 1, "RELU6", True),  # asymmetric SAME pad on H, symmetric on W
        (7, 10, 3, 2, SAME, 1, "NONE", False),
        (9, 9, 3, 1, VALID, 2, "RELU", False),
        (6, 7, 1, 1, SAME, 1, "TANH", True),
    ],
)
def test_conv2d(h, w, k, stride, padding, dilation, activation, fp16):
    data, x, y = conv_case(h, w, k, stride, padding, dilation, activation, fp16)
    np.testing.assert_allclose(run(data, x), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("h", "w", "k", "stride", "padding", "mult", "activation"),
    [
        (8, 7, 3, 2, SAME, 1, "RELU"),
        (7, 9, 5, 1, SAME, 2, "RELU_N1_TO_1"),
        (9, 8, 3, 2, VALID, 1, "NONE"),
    ],
)
def test_depthwise_conv2d(h, w, k, stride, padding, mult, activation):
    data, x, y = conv_case(h, w, k, stride, padding, 1, activation, True, depthwise=True, mult=mult)
    np.testing.assert_allclose(run(data, x), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("h", "w", "k", "stride", "padding"), [(7, 8, 3, 2, SAME), (8, 9, 2, 2, VALID)]
)
def test_average_pool(h, w, k, stride, padding):
    x = rand(2, h, w, 3)
    y = act(ref_avg_pool(x, k, stride, padding), "RELU")
    g = Graph()
    src = g.tensor((1, h, w, 3))
    fields = {
        "Padding": padding,
        "StrideH": stride,
        "StrideW": stride,
        "FilterHeight": k,
        "FilterWidth": k,
        "FusedActivationFunction": ACT["RELU"],
    }
    out = g.op("AVERAGE_POOL_2D", [src], (1, *y.shape[1:]), ("Pool2DOptions", fields))
    np.testing.assert_allclose(run(g.build(src, out), x), y, rtol=1e-5, atol=1e-6)


def global_pool_graph(h, w, op):
    g = Graph()
    src = g.tensor((1, h, w, 3))
    if op == "AVERAGE_POOL_2D":
        fields = {"Padding": VALID, "StrideH": h, "StrideW": w, "FilterHeight": h, "FilterWidth": w}
        out = g.op(op, [src], (1, 1, 1, 3), ("Pool2DOptions", fields))
    else:
        axes = g.tensor((2,), np.array([1, 2], np.int32))
        out = g.op(op, [src, axes], (1, 1, 1, 3), ("ReducerOptions", {"KeepDims": True}))
    return g.build(src, out)


@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MEAN"])
def test_global_pool_also_at_other_sizes(op):
    data = global_pool_graph(6, 8, op)
    for h, w in [(6, 8), (10, 12)]:
        x = rand(2, h, w, 3)
        np.testing.assert_allclose(run(data, x), x.mean(axis=(1, 2), keepdims=True), atol=1e-6)


@pytest.mark.parametrize(
    ("out_hw", "align_corners", "half_pixel"),
    [
        ((14, 18), False, True),
        ((13, 17), True, False),
        ((14, 18), False, False),
        ((4, 6), False, True),
    ],
)
def test_resize_bilinear(out_hw, align_corners, half_pixel):
    x = rand(2, 7, 9, 3)
    g = Graph()
    src = g.tensor((1, 7, 9, 3))
    size = g.tensor((2,), np.array(out_hw, np.int32))
    options = {"AlignCorners": align_corners, "HalfPixelCenters": half_pixel}
    out = g.op("RESIZE_BILINEAR", [src, size], (1, *out_hw, 3), ("ResizeBilinearOptions", options))
    y = ref_resize(x, *out_hw, align_corners, half_pixel)
    np.testing.assert_allclose(run(g.build(src, out), x), y, rtol=1e-5, atol=1e-5)


def test_resize_bilinear_keeps_its_scale_at_other_sizes():
    g = Graph()
    src = g.tensor((1, 4, 6, 2))
    size = g.tensor((2,), np.array([8, 12], np.int32))
    options = {"AlignCorners": False, "HalfPixelCenters": True}
    out = g.op("RESIZE_BILINEAR", [src, size], (1, 8, 12, 2), ("ResizeBilinearOptions", options))
    x = rand(1, 5, 7, 2)
    np.testing.assert_allclose(
        run(g.build(src, out), x), ref_resize(x, 10, 14, False, True), atol=1e-5
    )


@pytest.mark.parametrize(
    ("k", "stride", "same", "h", "w"),
    [(2, 2, True, 5, 6), (3, 2, True, 5, 6), (3, 2, False, 4, 5), (4, 3, True, 4, 4)],
)
def test_transpose_conv_bias(k, stride, same, h, w):
    weights, bias, x = rand(2, k, k, 3), rand(2), rand(2, h, w, 3)
    weights16 = weights.astype(np.float16).astype(np.float32)
    y = ref_transpose_conv_bias(x, weights16, bias, stride, same)
    g = Graph()
    src = g.tensor((1, h, w, 3))
    options = np.array([1 if same else 2, stride, stride], "<i4").tobytes()
    out = g.op(
        "Convolution2DTransposeBias",
        [src, g.const(weights, fp16=True), g.const(bias)],
        (1, *y.shape[1:]),
        custom=options,
    )
    np.testing.assert_allclose(run(g.build(src, out), x), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("op", "ref"),
    [
        ("HARD_SWISH", hard_swish),
        ("LOGISTIC", sigmoid),
        ("RELU", lambda x: np.maximum(x, 0)),
        ("RELU6", lambda x: np.clip(x, 0, 6)),
    ],
)
def test_unary(op, ref):
    x = rand(2, 5, 6, 3, scale=5.0)
    g = Graph()
    src = g.tensor((1, 5, 6, 3))
    out = g.op(op, [src], (1, 5, 6, 3))
    np.testing.assert_allclose(
        run(g.build(src, out), x, logits=False), ref(x), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(("op", "fn"), [("ADD", np.add), ("MUL", np.multiply)])
def test_binary_broadcast_and_constant(op, fn):
    """x ⊙ pooled(x) broadcasts 1×1×1×C over H×W×C; then ⊙ a constant of shape C; fused RELU."""
    x = rand(2, 5, 6, 3)
    k = rand(3)
    g = Graph()
    src = g.tensor((1, 5, 6, 3))
    axes = g.tensor((2,), np.array([1, 2], np.int32))
    pooled = g.op("MEAN", [src, axes], (1, 1, 1, 3), ("ReducerOptions", {"KeepDims": True}))
    options = (f"{op.capitalize()}Options", {"FusedActivationFunction": ACT["RELU"]})
    mixed = g.op(op, [src, pooled], (1, 5, 6, 3), options)
    out = g.op(op, [g.const(k), mixed], (1, 5, 6, 3), options)
    y = np.maximum(fn(k, np.maximum(fn(x, x.mean(axis=(1, 2), keepdims=True)), 0)), 0)
    np.testing.assert_allclose(run(g.build(src, out), x), y, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- whole graphs
def segmenter_graph(channels: int = 1) -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    """A miniature of the selfie model: conv ↓2, SE block, resize ↑2 + skip, transpose conv ↑2,
    LOGISTIC. Returns the .tflite and its numpy reference (NHWC → NHWC probability)."""
    w1, b1 = rand(4, 3, 3, 3), rand(4)
    w2, b2 = rand(4, 1, 1, 4), rand(4)
    wt, bt = rand(channels, 2, 2, 4), rand(channels)
    g = Graph()
    src = g.tensor((1, 8, 8, 3))
    conv = ("Conv2DOptions", {"Padding": SAME, "StrideH": 2, "StrideW": 2})
    c1 = g.op("CONV_2D", [src, g.const(w1), g.const(b1)], (1, 4, 4, 4), conv)
    h1 = g.op("HARD_SWISH", [c1], (1, 4, 4, 4))
    pool = {"Padding": VALID, "StrideH": 4, "StrideW": 4, "FilterHeight": 4, "FilterWidth": 4}
    p = g.op("AVERAGE_POOL_2D", [h1], (1, 1, 1, 4), ("Pool2DOptions", pool))
    conv1 = ("Conv2DOptions", {"Padding": VALID, "StrideH": 1, "StrideW": 1})
    gate = g.op(
        "LOGISTIC",
        [g.op("CONV_2D", [p, g.const(w2), g.const(b2)], (1, 1, 1, 4), conv1)],
        (1, 1, 1, 4),
    )
    se = g.op("MUL", [h1, gate], (1, 4, 4, 4), ("MulOptions", {}))
    size = g.tensor((2,), np.array([8, 8], np.int32))
    resize = ("ResizeBilinearOptions", {"HalfPixelCenters": True})
    up = g.op("RESIZE_BILINEAR", [se, size], (1, 8, 8, 4), resize)
    down = g.op(
        "RESIZE_BILINEAR", [up, g.tensor((2,), np.array([4, 4], np.int32))], (1, 4, 4, 4), resize
    )
    skip = g.op("ADD", [down, h1], (1, 4, 4, 4), ("AddOptions", {}))
    options = np.array([1, 2, 2], "<i4").tobytes()
    z = g.op(
        "Convolution2DTransposeBias",
        [skip, g.const(wt), g.const(bt)],
        (1, 8, 8, channels),
        custom=options,
    )
    out = g.op("LOGISTIC", [z], (1, 8, 8, channels))

    def reference(x):
        h = hard_swish(ref_conv(x, w1, b1, 2, SAME))
        gate = sigmoid(ref_conv(h.mean(axis=(1, 2), keepdims=True), w2, b2, 1, VALID))
        se = h * gate
        up = ref_resize(se, 2 * se.shape[1], 2 * se.shape[2], False, True)
        skip = ref_resize(up, se.shape[1], se.shape[2], False, True) + h
        return sigmoid(ref_transpose_conv_bias(skip, wt, bt, 2, True))

    return g.build(src, out), reference


def test_segmenter_graph_matches_reference_at_recorded_and_other_sizes():
    data, reference = segmenter_graph()
    for hw in [(8, 8), (16, 12)]:
        x = rand(2, *hw, 3)
        np.testing.assert_allclose(run(data, x, logits=False), reference(x), rtol=1e-4, atol=1e-5)


def test_logits_contract():
    data, reference = segmenter_graph(channels=1)
    x = rand(2, 8, 8, 3)
    p = reference(x)
    z = run(data, x, logits=True)
    assert z.shape == (2, 8, 8, 2)
    np.testing.assert_array_equal(z[..., 0], 0.0)
    np.testing.assert_allclose(sigmoid(z[..., 1:]), p, rtol=1e-4, atol=1e-5)
    module = load_tflite(data)
    with torch.no_grad():
        soft = module(torch.from_numpy(x.transpose(0, 3, 1, 2))).softmax(dim=1)
    np.testing.assert_allclose(soft[:, 1].numpy(), p[..., 0], rtol=1e-4, atol=1e-5)

    multi, reference3 = segmenter_graph(channels=3)
    np.testing.assert_allclose(sigmoid(run(multi, x)), reference3(x), rtol=1e-4, atol=1e-5)

    g = Graph()  # no LOGISTIC at the end: logits=True changes nothing
    src = g.tensor((1, 4, 4, 3))
    out = g.op("RELU", [src], (1, 4, 4, 3))
    x = rand(1, 4, 4, 3)
    np.testing.assert_array_equal(run(g.build(src, out), x), np.maximum(x, 0))


def test_module_is_a_plain_trainable_copyable_module(tmp_path):
    data, _ = segmenter_graph()
    path = tmp_path / "tiny.tflite"
    path.write_bytes(data)
    module = load_tflite(path)
    assert not isinstance(module, torch.jit.ScriptModule)
    params = list(module.parameters())
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    clone = copy.deepcopy(module)
    x = torch.rand(2, 3, 8, 8)
    loss = torch.nn.functional.cross_entropy(clone(x), torch.randint(0, 2, (2, 8, 8)))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in clone.parameters())
    assert all(p.grad is None for p in module.parameters())
    with torch.no_grad():
        next(clone.parameters()).add_(1.0)
    assert not torch.equal(next(clone.parameters()), next(module.parameters()))


@pytest.mark.parametrize("name", ["SOFTMAX", "MyCustomOp"])
def test_unsupported_operator_is_named(name):
    g = Graph()
    src = g.tensor((1, 4, 4, 3))
    out = g.op(name, [src], (1, 4, 4, 3))
    with pytest.raises(ValueError, match=name):
        load_tflite(g.build(src, out))


# ----------------------------------------------------------------------------- distill.selfie
def fake_wheel(model: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(selfie.MEMBER, model)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def no_pip(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pip must not run")

    monkeypatch.setattr(selfie.subprocess, "run", refuse)


def test_cache_dir_from_env_or_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "c"))
    assert selfie.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DISTILL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert selfie.default_cache_dir() == tmp_path / ".cache" / "rawpairs"


def test_cached_model_is_used_without_pip(monkeypatch, tmp_path, no_pip):
    model = b"tflite bytes"
    monkeypatch.setattr(selfie, "MODEL_SHA256", sha(model))
    (tmp_path / selfie.MODEL_FILE).write_bytes(model)
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    assert selfie.selfie_model_file() == tmp_path / selfie.MODEL_FILE


def test_cached_file_with_wrong_hash_is_refused(tmp_path, no_pip):
    (tmp_path / selfie.MODEL_FILE).write_bytes(b"not the model")
    with pytest.raises(selfie.TeacherUnavailable) as error:
        selfie.selfie_model_file(tmp_path)
    message = str(error.value)
    assert isinstance(error.value, ValueError) and "\n" not in message
    assert selfie.MODEL_SHA256 in message and "pip download" in message


def fake_pip(wheel: bytes | None, calls: list):
    def run(cmd, **kwargs):
        calls.append(cmd)
        if wheel is None:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: network is unreachable\n")
        dest = cmd[cmd.index("-d") + 1]
        (Path(dest) / selfie.WHEEL).write_bytes(wheel)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def test_fetch_extracts_verifies_and_caches(monkeypatch, tmp_path, capsys):
    model = b"tflite bytes"
    wheel = fake_wheel(model)
    monkeypatch.setattr(selfie, "MODEL_SHA256", sha(model))
    monkeypatch.setattr(selfie, "WHEEL_SHA256", sha(wheel))
    calls: list = []
    monkeypatch.setattr(selfie.subprocess, "run", fake_pip(wheel, calls))
    cache = tmp_path / "cache"
    path = selfie.selfie_model_file(cache)
    assert path == cache / selfie.MODEL_FILE and path.read_bytes() == model
    assert sorted(p.name for p in cache.iterdir()) == [selfie.MODEL_FILE]
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert calls[0][1:4] == ["-m", "pip", "download"] and f"mediapipe=={selfie.VERSION}" in calls[0]
    selfie.selfie_model_file(cache)
    assert len(calls) == 1


def test_wheel_with_wrong_hash_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(selfie.subprocess, "run", fake_pip(fake_wheel(b"other"), []))
    with pytest.raises(selfie.TeacherUnavailable, match=selfie.WHEEL_SHA256):
        selfie.selfie_model_file(tmp_path)
    assert not any(tmp_path.iterdir())


def test_pip_failure_gives_one_line_with_the_fix(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(selfie.subprocess, "run", fake_pip(None, []))
    with pytest.raises(selfie.TeacherUnavailable) as error:
        selfie.selfie_model_file(tmp_path)
    message = str(error.value)
    assert "\n" not in message and "network is unreachable" in message
    assert f"pip download mediapipe=={selfie.VERSION} --no-deps" in message
    assert str(tmp_path / selfie.MODEL_FILE) in message and selfie.MEMBER in message
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def _cached_real_model():
    path = selfie.default_cache_dir() / selfie.MODEL_FILE
    return path if path.exists() and sha(path.read_bytes()) == selfie.MODEL_SHA256 else None


@pytest.mark.skipif(_cached_real_model() is None, reason="real selfie model not in the cache")
def test_real_selfie_segmenter(no_pip):
    module = selfie.selfie_segmenter().eval()
    with torch.no_grad():
        for size in (256, 224):
            z = module(torch.rand(2, 3, size, size))
            assert z.shape == (2, 2, size, size) and torch.isfinite(z).all()
            assert (z[:, 0] == 0).all()
