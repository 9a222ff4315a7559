"""The camera model: everything the ISP needs to turn sensor counts into sRGB and back.

One immutable, validated object, :class:`Camera`, with an exact JSON round trip. Units:

- ``black_level``: sensor counts, one per CFA position (row-major 2×2, see :mod:`rawpairs.cfa`).
- ``white_level``: sensor counts of saturation; ``bit_depth``: bits per stored sample.
- ``wb_gains``: (R, G, B) multipliers applied to linear camera RGB, normalised so G = 1.
- ``digital_gain``: brightness multiplier applied with the white balance (for real captures 1,
  or the exposure gain the build chose, ``rawpairs.isp.auto_exposure``; the inverse ISP darkens
  by it, Brooks et al. 2019's "rgb_gain").
- ``xyz_to_cam``: 3×3 matrix, CIE XYZ (D65) → camera RGB, as in the DNG ColorMatrix / LibRaw's
  ``rgb_xyz_matrix`` / Adobe's coefficient table. ``cam_to_srgb`` is *derived* from it
  (``rgb_to_cam = xyz_to_cam @ SRGB_TO_XYZ`` with rows normalised to sum to 1, so that camera white
  maps to sRGB white; ``cam_to_srgb`` is its inverse), never stored independently.
- ``noise_shot``, ``noise_read``: heteroscedastic Gaussian noise on the linear mosaic normalised to
  [0, 1] (black level removed, divided by white − black): variance = shot · x + read.
- ``provenance``: for each camera value (a key of :data:`PROVENANCE_FIELDS`; ``noise`` covers
  both noise levels), where it came from: ``file`` or ``file:<where>`` (the RAW's metadata),
  ``sampled`` (drawn from priors), ``default``, ``user`` (given by the caller), ``unknown`` (the
  source does not say: e.g. the noise of a camera RAW, stored as 0 = not modelled),
  ``auto:<rule>`` (computed from the image by the named rule, e.g. ``auto:p99`` exposure),
  ``fallback:<rule>`` (metadata missing or unusable; the rule is named) or ``profile:<file>``
  (taken or drawn from a camera profile written by ``rawpairs calibrate``; the profile's file
  name, letters, digits, ``_``, ``.``, ``-``, at most 100). Other keys or forms are refused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from rawpairs.cfa import CFA

__all__ = ["PROVENANCE_FIELDS", "SRGB_TO_XYZ", "XYZ_TO_SRGB", "Camera", "rgb_to_cam_matrix"]

# IEC 61966-2-1 linear sRGB (D65) → CIE XYZ.
SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
XYZ_TO_SRGB = np.linalg.inv(SRGB_TO_XYZ)

# The values a provenance may describe, and the form of a description (module docstring).
PROVENANCE_FIELDS = (
    "cfa",
    "black_level",
    "white_level",
    "wb_gains",
    "xyz_to_cam",
    "digital_gain",
    "noise",
)
_PROVENANCE = re.compile(
    r"(file|sampled|default|user|unknown)|(file|auto|fallback):\w+|profile:[\w.-]{1,100}", re.ASCII
)
_MAX_CONDITION = 1e4


def rgb_to_cam_matrix(xyz_to_cam: np.ndarray) -> np.ndarray:
    """Linear sRGB → camera RGB, rows normalised to sum to 1 (Brooks et al. 2019)."""
    m = np.asarray(xyz_to_cam, dtype=np.float64) @ SRGB_TO_XYZ
    sums = m.sum(axis=1, keepdims=True)
    if np.any(np.abs(sums) < 1e-8):
        raise ValueError("colour matrix maps white to zero in some camera channel")
    return m / sums


def _float(value: Any, name: str) -> float:
    """One finite float: a Python ``float`` or ``int`` directly (the per-sample path), anything
    else through :func:`_floats` (same value, same errors)."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{name} must be finite, got {[number]}")
        return number
    return _floats(value, 1, name)[0]


def _floats(values: Any, n: int, name: str) -> tuple[float, ...]:
    """``n`` finite floats from any array-like (flattened); a tuple of ``n`` finite Python
    floats (what the camera sampler makes) is returned as it is."""
    if (
        type(values) is tuple
        and len(values) == n
        and all(type(v) is float and math.isfinite(v) for v in values)
    ):
        return values
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size != n:
        raise ValueError(f"{name} must have {n} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return tuple(float(v) for v in arr)


def _check_provenance(provenance: Any) -> dict[str, str]:
    if not isinstance(provenance, dict):
        raise ValueError(f"provenance must be a dict, got {type(provenance).__name__}")
    unknown = sorted(set(provenance) - set(PROVENANCE_FIELDS), key=str)
    if unknown:
        raise ValueError(f"provenance of unknown fields {unknown}: expected {PROVENANCE_FIELDS}")
    for name, value in provenance.items():
        if not (isinstance(value, str) and _PROVENANCE.fullmatch(value)):
            raise ValueError(
                f"provenance of {name} is {value!r:.40}: expected file, sampled, default, user, "
                "unknown, file:/auto:/fallback:<rule> or profile:<file>"
            )
    return dict(provenance)


@dataclass(frozen=True)
class Camera:
    """A validated camera model; see the module docstring for units and ranges."""

    cfa: CFA
    black_level: tuple[float, float, float, float]
    white_level: float
    bit_depth: int
    wb_gains: tuple[float, float, float]
    xyz_to_cam: tuple[tuple[float, float, float], ...]
    digital_gain: float = 1.0
    noise_shot: float = 0.0
    noise_read: float = 0.0
    provenance: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "cfa", CFA.parse(self.cfa))
        set_(self, "black_level", _floats(self.black_level, 4, "black_level"))
        set_(self, "wb_gains", _floats(self.wb_gains, 3, "wb_gains"))
        m = _floats(self.xyz_to_cam, 9, "xyz_to_cam")
        set_(self, "xyz_to_cam", (m[0:3], m[3:6], m[6:9]))
        for name in ("white_level", "digital_gain", "noise_shot", "noise_read"):
            set_(self, name, _float(getattr(self, name), name))
        if int(self.bit_depth) != self.bit_depth or not 1 <= int(self.bit_depth) <= 16:
            raise ValueError(f"bit_depth must be an integer in [1, 16], got {self.bit_depth}")
        set_(self, "bit_depth", int(self.bit_depth))
        max_count = 2**self.bit_depth - 1
        if not 0 < self.white_level <= max_count:
            raise ValueError(
                f"white_level {self.white_level} outside (0, {max_count}] for {self.bit_depth} bits"
            )
        if min(self.black_level) < 0 or max(self.black_level) >= self.white_level:
            raise ValueError(
                f"black_level {list(self.black_level)} must lie in [0, white_level "
                f"{self.white_level})"
            )
        if min(self.wb_gains) <= 0:
            raise ValueError(f"wb_gains must be positive, got {list(self.wb_gains)}")
        if self.digital_gain <= 0:
            raise ValueError(f"digital_gain must be positive, got {self.digital_gain}")
        if self.noise_shot < 0 or self.noise_read < 0:
            raise ValueError(
                f"noise parameters must be >= 0, got shot={self.noise_shot} read={self.noise_read}"
            )
        rgb_to_cam = rgb_to_cam_matrix(np.array(self.xyz_to_cam))
        singular = np.linalg.svd(rgb_to_cam, compute_uv=False)  # np.linalg.cond's 2-norm
        with np.errstate(all="ignore"):
            cond = singular[0] / singular[-1]
        if not np.isfinite(cond) or cond > _MAX_CONDITION:
            raise ValueError(f"colour matrix is not invertible (condition number {cond:.3g})")
        set_(self, "provenance", _check_provenance(self.provenance))
        rgb_to_cam.flags.writeable = False
        set_(self, "_rgb_to_cam", rgb_to_cam)  # not a field: made once, copied by the properties

    # Derived colour matrices -------------------------------------------------------------
    @property
    def rgb_to_cam(self) -> np.ndarray:
        """3×3 linear sRGB → camera RGB (float64, rows sum to 1)."""
        return self._rgb_to_cam.copy()

    @property
    def cam_to_srgb(self) -> np.ndarray:
        """3×3 camera RGB → linear sRGB D65 (float64, rows sum to 1)."""
        return np.linalg.inv(self._rgb_to_cam)

    @property
    def black_level_array(self) -> np.ndarray:
        """Black levels as a 2×2 float32 array laid out like the CFA block."""
        return np.array(self.black_level, dtype=np.float32).reshape(2, 2)

    @classmethod
    def from_cam_to_srgb(cls, cam_to_srgb: np.ndarray, **kwargs: Any) -> Camera:
        """Build from a camera → linear sRGB matrix (e.g. LibRaw's ``rgb_cam``/``color_matrix``)."""
        cam_to_srgb = np.asarray(cam_to_srgb, dtype=np.float64)
        if cam_to_srgb.shape != (3, 3) or not np.all(np.isfinite(cam_to_srgb)):
            raise ValueError(f"cam_to_srgb must be a finite 3×3 matrix, got {cam_to_srgb!r}")
        if abs(np.linalg.det(cam_to_srgb)) < 1e-8:
            raise ValueError("cam_to_srgb matrix is singular")
        xyz_to_cam = np.linalg.inv(cam_to_srgb) @ XYZ_TO_SRGB
        return cls(xyz_to_cam=xyz_to_cam, **kwargs)

    def replace(self, **changes: Any) -> Camera:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # Serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``cam_to_srgb`` is included for readers but ignored on load."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # asdict's deep copy is slow
        d["provenance"] = dict(self.provenance)
        d["cfa"] = self.cfa.value
        d["black_level"] = list(self.black_level)
        d["wb_gains"] = list(self.wb_gains)
        d["xyz_to_cam"] = [list(r) for r in self.xyz_to_cam]
        d["cam_to_srgb"] = self.cam_to_srgb.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Camera:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on missing or unknown keys."""
        d = dict(d)
        d.pop("cam_to_srgb", None)
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown camera fields: {sorted(unknown)}")
        required = {"cfa", "black_level", "white_level", "bit_depth", "wb_gains", "xyz_to_cam"}
        missing = required - set(d)
        if missing:
            raise ValueError(f"missing camera fields: {sorted(missing)}")
        return cls(**d)

    def to_json(self) -> str:
        """Exact JSON text (floats round-trip bit for bit)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Camera:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
