"""The inverse ISP and the noise model in torch: a batch of photos → RAW on any device.

The torch twin of :mod:`rawpairs.unprocess` (Brooks et al. 2019), for at-load samples
(``rawpairs build --unprocess at_load``): the loader hands over uint8 RGB crops and their recipes,
and the trainer makes the RAW on the training device (:func:`make_raw`). Stages, each a small
function on a batch (``B`` samples, ``H×W`` sites, every parameter per sample):

1. :func:`srgb8_to_linear`: uint8 codes → linear sRGB through each sample's 256-entry table
   (``rawpairs.tone.linear_lut`` of its tone and gamma: the very table the CPU path uses);
2. :func:`srgb_to_camera`: linear sRGB → camera RGB, an explicit three-term sum per channel;
3. :func:`safe_invert_gains`: Brooks' highlight-preserving inverse white balance, then clip;
4. :func:`mosaic`: each site keeps the channel its CFA position holds;
5. :func:`add_noise`: ``x + sqrt(shot · max(x, 0) + read) · z`` with given standard normals;
6. :func:`to_counts`: ``⌊black + x · (white − black) + ½⌋`` clipped to the bit depth.

Every float32 operation is the one :func:`rawpairs.unprocess.unprocess` performs, in the same
order, so on the CPU the counts agree with it up to a rounding step at a count boundary (tested on
every CFA, tone and gamma, with and without noise). Seeded noise (``render.noise == "in_raw"``)
is not drawn here: the loader computes its standard normals on the CPU from the sample's
``noise_key`` (``rawpairs.rng.key_normals``, the stream the CPU path draws), so the RAW is the one
``rawpairs materialize`` stores. Fresh noise (``at_load`` samples, ``--fresh-cameras``) is drawn
here with ``torch.randn`` from a generator seeded per batch by the loader: deterministic for a
given device, but a different stream from numpy's (it needs no transfer and no CPU time).

Units: linear values in [0, 1]; counts in sensor units (black level included).

References:
    T. Brooks, B. Mildenhall, T. Xue, J. Chen, D. Sharlet, J. T. Barron, "Unprocessing Images for
    Learned Raw Denoising", CVPR 2019.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rawpairs.camera import Camera
from rawpairs.choices import Gamma, Tone
from rawpairs.tone import linear_lut

__all__ = [
    "NOISE_FRESH",
    "NOISE_NONE",
    "NOISE_SEEDED",
    "RECIPE_KEYS",
    "add_noise",
    "camera_params",
    "darken",
    "make_raw",
    "mosaic",
    "safe_invert_gains",
    "srgb8_to_linear",
    "srgb_to_camera",
    "to_counts",
    "unprocess",
]

NOISE_NONE, NOISE_SEEDED, NOISE_FRESH = 0, 1, 2  # a recipe's ``noise`` code
# A batch's ``recipe``: tensors with one row per at-load example (see :func:`make_raw`).
RECIPE_KEYS = (
    "rows", "rgb", "lut", "rgb_to_cam", "gains", "black", "white", "max_count", "shot", "read",
    "noise", "z", "low_light", "extent", "seed",
)  # fmt: skip
_RGGB = (0, 1, 1, 2)  # channel of each 2×2 position of an RGGB crop
_INFLECTION, _SPAN = 0.9, 0.1


def camera_params(camera: Camera, tone: Tone | str, gamma: Gamma | str) -> dict[str, np.ndarray]:
    """One sample's unprocessing parameters as float32 arrays, exactly as the CPU path computes
    them: ``lut`` [256], ``rgb_to_cam`` [3, 3], inverse ``gains`` [3] (``1 / (wb ·
    digital_gain)``), ``channels`` [4] (int64, CFA channel per 2×2 position), ``black`` [4]
    (per position), ``white``, ``max_count``, ``shot``, ``read`` (scalars)."""
    r, g, b = camera.wb_gains
    return {
        "lut": np.array(linear_lut(gamma, tone), dtype=np.float32),  # a writable copy
        "rgb_to_cam": camera.rgb_to_cam.astype(np.float32),
        "gains": (np.array([1.0 / r, 1.0 / g, 1.0 / b]) / camera.digital_gain).astype(np.float32),
        "channels": np.array(camera.cfa.channels, dtype=np.int64),
        "black": np.asarray(camera.black_level, dtype=np.float32),
        "white": np.float32(camera.white_level),
        "max_count": np.float32(2**camera.bit_depth - 1),
        "shot": np.float32(camera.noise_shot),
        "read": np.float32(camera.noise_read),
    }


def srgb8_to_linear(rgb: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] sRGB codes → float32 linear values through each sample's table
    ``lut`` [B, 256] (``rawpairs.tone.linear_lut``)."""
    b = rgb.shape[0]
    index = rgb.reshape(b, -1).long()
    return torch.gather(lut, 1, index).reshape(rgb.shape)


def srgb_to_camera(linear: torch.Tensor, rgb_to_cam: torch.Tensor) -> torch.Tensor:
    """Linear sRGB [B, H, W, 3] → camera RGB with each sample's ``rgb_to_cam`` [B, 3, 3]:
    ``Σ_k x_k · m[c, k]`` summed left to right (the CPU path's float32 operations)."""
    x0, x1, x2 = linear[..., 0], linear[..., 1], linear[..., 2]
    m = rgb_to_cam[:, None, None]  # [B, 1, 1, 3, 3]
    return torch.stack(
        [x0 * m[..., c, 0] + x1 * m[..., c, 1] + x2 * m[..., c, 2] for c in range(3)], dim=-1
    )


def safe_invert_gains(camera_rgb: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Undo white balance and digital gain, sparing highlights, then clip to [0, 1].

    ``gains`` [B, 3] = ``1 / (wb · digital_gain)``; with ``gray`` the mean of the three camera
    channels, ``mask = (max(gray − 0.9, 0) / 0.1)²`` and the applied gain is
    ``max(mask + (1 − mask) · gains, gains)`` (Brooks et al.'s ``safe_invert_gains``).
    """
    gray = (camera_rgb[..., 0] + camera_rgb[..., 1] + camera_rgb[..., 2]) / 3.0
    t = torch.clamp(gray - _INFLECTION, min=0.0) / _SPAN
    mask = (t * t)[..., None]
    g = gains[:, None, None, :]
    return (camera_rgb * torch.maximum(mask + (1.0 - mask) * g, g)).clamp(0.0, 1.0)


def _position_map(channels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, H, W] int64: the value ``channels[b, p]`` of each site's 2×2 position ``p``."""
    p = torch.arange(2, device=channels.device)
    pos = (2 * p[:, None] + p[None, :]).repeat(height // 2, width // 2)  # [H, W] in 0..3
    return channels[:, pos.reshape(-1)].reshape(channels.shape[0], height, width)


def mosaic(image: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] → [B, H, W] mosaic keeping, at each site, channel ``channels[b, p]`` of its
    2×2 position ``p`` (row-major; ``rawpairs.cfa.CFA.channels``)."""
    _, h, w, _ = image.shape
    index = _position_map(channels, h, w)[..., None]
    return torch.gather(image, 3, index)[..., 0]


def add_noise(
    linear: torch.Tensor, shot: torch.Tensor, read: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """``x + sqrt(shot · max(x, 0) + read) · z`` per sample (``shot``, ``read`` [B]; ``z``
    standard normals shaped like ``linear``), float32, not clipped."""
    s, r = shot[:, None, None], read[:, None, None]
    return linear + torch.sqrt(s * torch.clamp(linear, min=0.0) + r) * z


def darken(
    linear: torch.Tensor,
    factor: torch.Tensor,
    shot: torch.Tensor,
    read: torch.Tensor,
    z: torch.Tensor,
) -> torch.Tensor:
    """The capture with ``factor`` [B] (≥ 1) times less light at the same gain
    (``rawpairs.noise.darken``): ``x / k`` plus the variance
    ``shot · (1 − 1/k) · (x / k) + read · (1 − 1/k²)`` it lacks, with standard normals ``z``."""
    k = factor[:, None, None]
    dark = linear / k
    extra_shot, extra_read = shot * (1 - 1 / factor), read * (1 - 1 / (factor * factor))
    return add_noise(dark, extra_shot, extra_read, z)


def to_counts(
    linear: torch.Tensor, black: torch.Tensor, white: torch.Tensor, max_count: torch.Tensor
) -> torch.Tensor:
    """Linear mosaic [B, H, W] → float32 counts ``⌊black[p] + x · (white − black[p]) + ½⌋``
    clipped to [0, ``max_count``]; ``black`` [B, 4] per 2×2 position, ``white``, ``max_count``
    [B]."""
    _, h, w = linear.shape
    b = _position_map(black, h, w)
    scale = white[:, None, None] - b
    counts = torch.floor(b + linear * scale + 0.5)
    return torch.minimum(counts.clamp(min=0.0), max_count[:, None, None])


def unprocess(
    rgb: torch.Tensor,
    *,
    lut: torch.Tensor,
    rgb_to_cam: torch.Tensor,
    gains: torch.Tensor,
    channels: torch.Tensor,
    black: torch.Tensor,
    white: torch.Tensor,
    max_count: torch.Tensor,
    shot: torch.Tensor | None = None,
    read: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 sRGB [B, H, W, 3] (H, W even) → float32 counts [B, H, W] (whole numbers).

    Per sample: ``lut`` [B, 256], ``rgb_to_cam`` [B, 3, 3], inverse ``gains`` [B, 3],
    ``channels`` [B, 4] (CFA channel per 2×2 position), ``black`` [B, 4] (per position),
    ``white``, ``max_count`` [B]. Noise when ``z`` (standard normals [B, H, W]) is given, with
    variances ``shot · x + read``. All tensors on one device; the result is there too.
    """
    if rgb.dtype != torch.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be uint8 [B, H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
    if rgb.shape[1] % 2 or rgb.shape[2] % 2:
        raise ValueError(f"image height and width must be even, got {tuple(rgb.shape[1:3])}")
    camera_rgb = srgb_to_camera(srgb8_to_linear(rgb, lut), rgb_to_cam)
    linear = mosaic(safe_invert_gains(camera_rgb, gains), channels)
    if z is not None:
        if shot is None or read is None:
            raise ValueError("noise needs shot and read variances")
        linear = add_noise(linear, shot, read, z)
    return to_counts(linear, black, white, max_count)


def make_raw(
    raw: torch.Tensor, recipe: dict[str, Any], student_input: str = "packed"
) -> torch.Tensor:
    """``raw`` (a batch's student input, on its device) with the rows of at-load examples made
    from their ``recipe`` on that device (``distill.data`` builds it; keys :data:`RECIPE_KEYS`).

    For each recipe row: the RGGB-phased uint8 crop is unprocessed to counts (seeded noise from
    ``z`` before quantisation, as the CPU path adds it), normalised to
    ``(counts − black) / (white − black)`` per RGGB position, given fresh noise after
    quantisation (``noise == NOISE_FRESH``, as the loader adds it to a stored noise-free RAW),
    darkened by ``low_light`` (1: unchanged) and zeroed outside ``extent`` (rows, columns of real
    sites: the padding of a small sample), then packed (``"packed"``: [4, H/2, W/2] RGGB planes)
    or kept as a mosaic (``"mosaic"``: [1, H, W]). The other rows are left as they are.
    """
    device, n = raw.device, recipe["rows"].shape[0]
    if n == 0:
        return raw
    r = {k: v.to(device, non_blocking=True) for k, v in recipe.items() if k != "seed"}
    h, w = r["rgb"].shape[1:3]
    channels = torch.tensor(_RGGB, device=device).expand(n, 4)
    seeded = (r["noise"] == NOISE_SEEDED)[:, None, None]
    counts = unprocess(
        r["rgb"], lut=r["lut"], rgb_to_cam=r["rgb_to_cam"], gains=r["gains"], channels=channels,
        black=r["black"], white=r["white"], max_count=r["max_count"], shot=r["shot"],
        read=r["read"], z=torch.where(seeded, r["z"], torch.zeros_like(r["z"])),
    )  # fmt: skip
    black = _position_map(r["black"], h, w)
    linear = (counts - black) / (r["white"][:, None, None] - black)
    generator = torch.Generator(device).manual_seed(int(recipe["seed"]))
    fresh, dim = r["noise"] == NOISE_FRESH, r["low_light"] > 1
    if bool(fresh.any()):
        z = torch.randn((n, h, w), generator=generator, device=device)
        noisy = add_noise(linear, r["shot"], r["read"], z)
        linear = torch.where(fresh[:, None, None], noisy, linear)
    if bool(dim.any()):
        z = torch.randn((n, h, w), generator=generator, device=device)
        dark = darken(linear, r["low_light"], r["shot"], r["read"], z)
        linear = torch.where(dim[:, None, None], dark, linear)
    rows_in = torch.arange(h, device=device)[None, :, None] < r["extent"][:, 0, None, None]
    cols_in = torch.arange(w, device=device)[None, None, :] < r["extent"][:, 1, None, None]
    linear = torch.where(rows_in & cols_in, linear, torch.zeros_like(linear))
    if student_input == "packed":
        made = torch.stack(
            [linear[:, 0::2, 0::2], linear[:, 0::2, 1::2], linear[:, 1::2, 0::2],
             linear[:, 1::2, 1::2]], dim=1,
        )  # fmt: skip
    else:
        made = linear[:, None]
    out = raw.clone()
    out[r["rows"]] = made.to(out.dtype).contiguous(memory_format=torch.contiguous_format)
    return out
