"""The student's RAW front-end: a small differentiable ISP in front of the teacher's network.

Stages (pure torch, all per pixel except the demosaic), in order:

=====================  ====================================  ===================================
stage                  tensor                                values
=====================  ====================================  ===================================
input                  B×4×h×w RGGB planes (or B×1×2h×2w)    linear, ``(x − black)/(white −
                                                             black)`` per CFA site (``distill.
                                                             data``): 0 black, 1 saturation,
                                                             noise may leave [0, 1]
demosaic               B×3×2h×2w camera RGB                  :func:`bilinear_demosaic`, linear
white balance          B×3×2h×2w                             × per-image gains (``wb``: none,
                                                             gray-world, or the sample's gains)
colour (learnable)     B×3×2h×2w                             ``M · (g ⊙ rgb)``: residual channel
                                                             gains g and 3×3 matrix M, identity
                                                             at initialisation
tone (learnable)       B×3×2h×2w                             clipped to [0, 1], then the sRGB
                                                             transfer with a learnable exponent
                                                             (initially IEC 61966-2-1's 1/2.4)
normalise              B×3×2h×2w                             the teacher's (x − mean) / std
=====================  ====================================  ===================================

At initialisation the output is exactly the teacher's input for :func:`naive_render` of the same
RAW with the same white balance, so a student made of this front-end and the teacher's network
starts with the teacher's predictions on the naive render (``distill.models.build_student``). The
teacher's stride-2 stem then reads the full-resolution image: every feature map of the student has
the size of the teacher's on the RGB crop.

White balance (``WB_MODES``): ``"none"`` — camera RGB as is; ``"grayworld"`` — per image, the
gains that make the mean red and blue equal to the mean green (computed on the input, no gradient);
``"metadata"`` — the gains recorded with the sample (``camera.wb_gains``, R, G, B with G = 1),
which a camera's auto white balance supplies at inference; the loader puts them in ``batch["wb"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.config import WB_MODES

__all__ = [
    "SRGB_GAMMA",
    "WB_MODES",
    "RawFrontEnd",
    "bilinear_demosaic",
    "grayworld_gains",
    "naive_render",
    "srgb_encode",
    "white_balance_gains",
]

SRGB_GAMMA = 2.4  # the exponent of IEC 61966-2-1's power segment
_SRGB_KNEE = 0.0031308  # linear value where the sRGB curve leaves its linear segment
_GRAYWORLD_FLOOR = 1e-4  # channel means below this (nearly black crops) are raised to it
_GRAYWORLD_MAX_GAIN = 16.0


def _mosaic(raw: torch.Tensor) -> torch.Tensor:
    if raw.ndim != 4 or raw.shape[1] not in (1, 4):
        raise ValueError(f"RAW must be B×4×h×w planes or B×1×H×W mosaic, got {tuple(raw.shape)}")
    mosaic = F.pixel_shuffle(raw, 2) if raw.shape[1] == 4 else raw
    if mosaic.shape[-2] % 2 or mosaic.shape[-1] % 2:
        raise ValueError(f"mosaic sides must be even, got {tuple(mosaic.shape[-2:])}")
    return mosaic


def _planes(raw: torch.Tensor) -> torch.Tensor:
    return F.pixel_unshuffle(_mosaic(raw), 2)


def _shifted(padded: torch.Tensor, dy: int, dx: int, h: int, w: int) -> torch.Tensor:
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def _bilinear_sum(x: torch.Tensor, green: bool) -> torch.Tensor:
    """Zero-padded 3×3 weighted sums of ``x`` (…×H×W): the bilinear kernels without the ¼.

    Red/blue: [[1, 2, 1], [2, 4, 2], [1, 2, 1]] (separable, [1, 2, 1] per axis); green:
    [[0, 1, 0], [1, 4, 1], [0, 1, 0]]. Shifted adds instead of a grouped convolution: about 10×
    faster on CPU for these 3-tap kernels.
    """
    h, w = x.shape[-2:]
    if green:
        p = F.pad(x, (1, 1, 1, 1))
        axial = _shifted(p, -1, 0, h, w) + _shifted(p, 1, 0, h, w)
        return axial + _shifted(p, 0, -1, h, w) + _shifted(p, 0, 1, h, w) + 4 * x
    p = F.pad(x, (1, 1, 0, 0))
    rows = p[..., :, :w] + 2 * x + p[..., :, 2:]
    p = F.pad(rows, (0, 0, 1, 1))
    return p[..., :h, :] + 2 * rows + p[..., 2:, :]


def bilinear_demosaic(raw: torch.Tensor) -> torch.Tensor:
    """RGGB B×4×h×w planes or B×1×H×W mosaic (linear) → linear camera RGB B×3×H×W.

    Normalised convolution: each colour's samples convolved with the bilinear kernel, divided by
    the same convolution of that colour's sampling mask. Inside the image this is exact bilinear
    interpolation; at the border missing neighbours are left out and the weights renormalised.
    Linear in the input (no clipping).
    """
    mosaic = _mosaic(raw)
    h, w = mosaic.shape[-2:]
    masks = torch.zeros(1, 3, h, w, dtype=mosaic.dtype, device=mosaic.device)
    masks[0, 0, 0::2, 0::2] = 1  # R
    masks[0, 1, 0::2, 1::2] = 1  # G on red rows
    masks[0, 1, 1::2, 0::2] = 1  # G on blue rows
    masks[0, 2, 1::2, 1::2] = 1  # B
    sampled = mosaic * masks
    rb = _bilinear_sum(sampled[:, 0::2], green=False) / _bilinear_sum(masks[:, 0::2], green=False)
    g = _bilinear_sum(sampled[:, 1:2], green=True) / _bilinear_sum(masks[:, 1:2], green=True)
    return torch.cat([rb[:, :1], g, rb[:, 1:]], dim=1)


def grayworld_gains(raw: torch.Tensor) -> torch.Tensor:
    """Per-image gray-world gains B×3 (R, G, B; G = 1) of RGGB planes or a mosaic (linear).

    ``mean(G) / mean(c)`` over each image's sites of colour c (negative noise clipped to 0, means
    floored at 1e-4, gains limited to [1/16, 16]). No gradient flows through the gains.
    """
    with torch.no_grad():
        planes = _planes(raw).clamp(min=0).mean(dim=(2, 3))
        means = torch.stack(
            [planes[:, 0], (planes[:, 1] + planes[:, 2]) / 2, planes[:, 3]], dim=1
        ).clamp(min=_GRAYWORLD_FLOOR)
        gains = means[:, 1:2] / means
        return gains.clamp(1 / _GRAYWORLD_MAX_GAIN, _GRAYWORLD_MAX_GAIN)


def white_balance_gains(
    raw: torch.Tensor, mode: str, recorded: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The white-balance gains B×3 of ``mode`` (``None`` for ``"none"``).

    ``recorded``: the samples' own gains B×3 (``batch["wb"]``), required for ``"metadata"``.
    """
    if mode == "none":
        return None
    if mode == "grayworld":
        return grayworld_gains(raw)
    if mode == "metadata":
        if recorded is None:
            raise ValueError("white balance 'metadata' needs the samples' gains (batch['wb'])")
        if recorded.shape != (raw.shape[0], 3):
            raise ValueError(f"wb gains must be B×3, got {tuple(recorded.shape)}")
        return recorded.to(raw)
    raise ValueError(f"unknown white balance {mode!r}: expected one of {WB_MODES}")


def srgb_encode(linear: torch.Tensor, gamma: torch.Tensor | float = SRGB_GAMMA) -> torch.Tensor:
    """sRGB transfer (IEC 61966-2-1 for ``gamma`` = 2.4): input clipped to [0, 1] → [0, 1].

    ``12.92·x`` up to x = 0.0031308, ``1.055·x^(1/gamma) − 0.055`` above. The power is taken of
    ``max(x, 0.0031308)``, so gradients (also with respect to ``gamma``) are finite for every
    input, including 0 and negative values (whose gradient is 0: they are clipped).
    """
    x = linear.clamp(0, 1)
    power = 1.055 * x.clamp(min=_SRGB_KNEE) ** (1 / gamma) - 0.055
    return torch.where(x <= _SRGB_KNEE, 12.92 * x, power)


def naive_render(
    raw: torch.Tensor, wb: str = "none", recorded: torch.Tensor | None = None
) -> torch.Tensor:
    """The "no ISP" sRGB render B×3×H×W in [0, 1] of normalised RGGB RAW (planes or mosaic).

    :func:`bilinear_demosaic`, optional per-image white balance (:func:`white_balance_gains`),
    clip to [0, 1], sRGB transfer. No colour correction or tone curve: camera RGB is shown as
    sRGB.
    """
    rgb = bilinear_demosaic(raw)
    gains = white_balance_gains(raw, wb, recorded)
    if gains is not None:
        rgb = rgb * gains[:, :, None, None]
    return srgb_encode(rgb)


class RawFrontEnd(nn.Module):
    """Normalised RGGB RAW → the teacher's normalised input (see the module table).

    ``mean``/``std``: the teacher's per-channel normalisation of sRGB in [0, 1]. ``wb``: one of
    :data:`WB_MODES`. ``learn_colour`` / ``learn_tone``: whether the residual gains and colour
    matrix / the tone exponent are trained (otherwise fixed at their initial, identity/sRGB
    values). ``forward(raw, wb_gains=None)``: ``wb_gains`` B×3 are the samples' recorded gains,
    required when ``wb == "metadata"``.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        wb: str = "metadata",
        learn_colour: bool = True,
        learn_tone: bool = True,
    ) -> None:
        super().__init__()
        if wb not in WB_MODES:
            raise ValueError(f"unknown white balance {wb!r}: expected one of {WB_MODES}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"bad normalisation mean={mean} std={std}")
        self.wb = wb
        self.gains = nn.Parameter(torch.ones(3), requires_grad=learn_colour)
        self.matrix = nn.Parameter(torch.eye(3), requires_grad=learn_colour)
        # gamma = 2.4 · exp(log_gamma): positive for any value of the parameter.
        self.log_gamma = nn.Parameter(torch.zeros(()), requires_grad=learn_tone)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        # The white-balance mode travels in the state dict (index into WB_MODES), so a
        # checkpoint rebuilds the front-end it was trained with.
        self.register_buffer("wb_mode", torch.tensor(WB_MODES.index(wb)))
        self.register_load_state_dict_post_hook(_read_wb_mode)

    @property
    def gamma(self) -> torch.Tensor:
        return SRGB_GAMMA * self.log_gamma.exp()

    def forward(self, raw: torch.Tensor, wb_gains: torch.Tensor | None = None) -> torch.Tensor:
        rgb = bilinear_demosaic(raw)
        gains = self.gains.expand(raw.shape[0], 3)
        balance = white_balance_gains(raw, self.wb, wb_gains)
        if balance is not None:
            gains = gains * balance
        rgb = torch.einsum("ij,bjhw->bihw", self.matrix, rgb * gains[:, :, None, None])
        return (srgb_encode(rgb, self.gamma) - self.mean) / self.std


def _read_wb_mode(module: RawFrontEnd, _incompatible: object) -> None:
    index = int(module.wb_mode)
    if not 0 <= index < len(WB_MODES):
        raise ValueError(f"front-end state: white balance index {index} is not one of {WB_MODES}")
    module.wb = WB_MODES[index]
