"""Bayer demosaicing: bilinear and Malvar-He-Cutler, vectorised float32 numba kernels.

Both methods are linear filters whose taps depend on the CFA site: one compiled kernel per method
walks the image row by row and applies, at every site, the taps of that site's type (red or blue
site, green site on a red row, green site on a blue row). The four CFA layouts differ only in
where the red site sits inside the 2×2 block, which the kernel takes as an argument.

Border rule: the mosaic is extended by mirroring about the edge sample (OpenCV's
``BORDER_REFLECT_101``: ``… c b | a b c …``). That keeps the CFA phase outside the image, so a
border site sees correctly coloured neighbours and a constant mosaic demosaics to a constant image
everywhere. colour-demosaicing, the test oracle, convolves with ``scipy.ndimage.convolve``'s
default ``mode="reflect"`` (``… b a | a b …``), which shifts the CFA phase by one site beyond the
edge: its bilinear result on a constant mosaic is 2.25× too bright in the corners. The two agree
exactly on the interior (all sites at least 1 px, bilinear, or 2 px, Malvar, from the edge), and
everywhere once the oracle is given a mosaic already padded with ``reflect-101``.

References:
    H. S. Malvar, L.-W. He, R. Cutler, "High-quality linear interpolation for demosaicing of
    Bayer-patterned color images", ICASSP 2004, vol. 3, pp. 485-488.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from rawpairs.cfa import CFA
from rawpairs.choices import Demosaic

__all__ = ["check_mosaic_shape", "demosaic", "demosaic_unchecked"]

_PAD = 2  # both kernels read the padded mosaic at a fixed 2-site margin (Malvar's 5×5 reach)


@numba.njit(cache=True, nogil=True)
def _bilinear_kernel(p, ry, rx, out):  # pragma: no cover - compiled
    """Bilinear demosaic of the reflect-101 padded mosaic ``p`` into ``out`` (H×W×3)."""
    h, w = out.shape[0], out.shape[1]
    for y in range(h):
        py = y + _PAD
        a = 0 if (y - ry) % 2 == 0 else 2  # chroma channel of this row (R row or B row)
        b = 2 - a
        x0 = rx if a == 0 else 1 - rx  # first chroma site of this row
        up, mid, dn = p[py - 1], p[py], p[py + 1]
        for x in range(x0, w, 2):  # chroma sites: own = a, green from the cross, b diagonal
            px = x + _PAD
            out[y, x, a] = mid[px]
            out[y, x, 1] = 0.25 * ((mid[px - 1] + mid[px + 1]) + (up[px] + dn[px]))
            out[y, x, b] = 0.25 * ((up[px - 1] + up[px + 1]) + (dn[px - 1] + dn[px + 1]))
        for x in range(1 - x0, w, 2):  # green sites: a left/right, b above/below
            px = x + _PAD
            out[y, x, 1] = mid[px]
            out[y, x, a] = 0.5 * (mid[px - 1] + mid[px + 1])
            out[y, x, b] = 0.5 * (up[px] + dn[px])


@numba.njit(cache=True, nogil=True)
def _malvar_kernel(p, ry, rx, out):  # pragma: no cover - compiled
    """Malvar-He-Cutler demosaic of the reflect-101 padded mosaic ``p`` into ``out``."""
    h, w = out.shape[0], out.shape[1]
    for y in range(h):
        py = y + _PAD
        a = 0 if (y - ry) % 2 == 0 else 2
        b = 2 - a
        x0 = rx if a == 0 else 1 - rx
        u2, u1, c0, d1, d2 = p[py - 2], p[py - 1], p[py], p[py + 1], p[py + 2]
        for x in range(x0, w, 2):
            px = x + _PAD
            c = c0[px]
            cross1 = (c0[px - 1] + c0[px + 1]) + (u1[px] + d1[px])
            cross2 = (c0[px - 2] + c0[px + 2]) + (u2[px] + d2[px])
            diag = (u1[px - 1] + u1[px + 1]) + (d1[px - 1] + d1[px + 1])
            out[y, x, a] = c
            out[y, x, 1] = 0.125 * (4.0 * c + 2.0 * cross1 - cross2)
            out[y, x, b] = 0.125 * (6.0 * c + 2.0 * diag - 1.5 * cross2)
        for x in range(1 - x0, w, 2):
            px = x + _PAD
            c = c0[px]
            horiz1 = c0[px - 1] + c0[px + 1]
            vert1 = u1[px] + d1[px]
            horiz2 = c0[px - 2] + c0[px + 2]
            vert2 = u2[px] + d2[px]
            diag = (u1[px - 1] + u1[px + 1]) + (d1[px - 1] + d1[px + 1])
            out[y, x, 1] = c
            out[y, x, a] = 0.125 * (5.0 * c + 4.0 * horiz1 - diag - horiz2 + 0.5 * vert2)
            out[y, x, b] = 0.125 * (5.0 * c + 4.0 * vert1 - diag - vert2 + 0.5 * horiz2)


_KERNELS = {Demosaic.BILINEAR: _bilinear_kernel, Demosaic.MALVAR: _malvar_kernel}


def check_mosaic_shape(mosaic: np.ndarray, name: str = "mosaic") -> None:
    """Raise ``ValueError`` unless ``mosaic`` is a 2-D array with even H and W, both at least 4."""
    if not isinstance(mosaic, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(mosaic).__name__}")
    if mosaic.ndim != 2:
        raise ValueError(f"{name} must be 2-D (H×W), got shape {mosaic.shape}")
    h, w = mosaic.shape
    if h % 2 or w % 2 or h < 4 or w < 4:
        raise ValueError(f"{name} height and width must be even and at least 4, got {h}×{w}")


def demosaic_unchecked(mosaic: np.ndarray, cfa: CFA, method: Demosaic) -> np.ndarray:
    """:func:`demosaic` without input checks: ``mosaic`` is float32, even, at least 4×4, ``cfa``
    a :class:`CFA` and ``method`` a :class:`~rawpairs.choices.Demosaic`."""
    padded = cv2.copyMakeBorder(mosaic, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_REFLECT_101)
    out = np.empty((*mosaic.shape, 3), dtype=np.float32)
    ry, rx = cfa.red_position
    _KERNELS[method](padded, ry, rx, out)
    return out


def demosaic(
    mosaic: np.ndarray, cfa: CFA | str, method: Demosaic | str = Demosaic.MALVAR
) -> np.ndarray:
    """Interpolate a Bayer mosaic to full RGB: float H×W → float32 H×W×3 (R, G, B order).

    ``mosaic`` holds linear values (any float dtype, computed in float32; any range, e.g. [0, 1]
    or white-balanced above 1), H and W even and at least 4. ``method``
    (:class:`~rawpairs.choices.Demosaic` or its value):

    - ``"bilinear"``: each missing colour is the mean of its 2 or 4 nearest same-colour sites.
    - ``"malvar"``: bilinear plus a Laplacian correction from the site's own colour, with Malvar,
      He and Cutler's 5×5 gain-optimised filters. Linear, so the output can leave the input's
      range (slightly negative or above the maximum near sharp edges); no clipping is done here.

    Borders mirror the mosaic about the edge sample (``reflect-101``), which keeps the CFA phase;
    see the module docstring for how this differs from colour-demosaicing.

    References:
        H. S. Malvar, L.-W. He, R. Cutler, "High-quality linear interpolation for demosaicing of
        Bayer-patterned color images", ICASSP 2004.

    Example:
        >>> import numpy as np
        >>> demosaic(np.full((4, 4), 0.5, np.float32), "RGGB", "bilinear")[0, 0]
        array([0.5, 0.5, 0.5], dtype=float32)
    """
    cfa = CFA.parse(cfa)
    method = Demosaic.parse(method)
    check_mosaic_shape(mosaic)
    if mosaic.dtype.kind != "f":
        raise ValueError(f"mosaic must have a float dtype, got {mosaic.dtype}")
    mosaic = np.ascontiguousarray(mosaic, dtype=np.float32)
    lo, hi = float(mosaic.min()), float(mosaic.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("mosaic contains NaN or infinite values")
    return demosaic_unchecked(mosaic, cfa, method)
