"""Capture priors: the distributions a simulated camera is drawn from (Brooks et al. 2019).

:func:`sample_camera` draws one :class:`rawpairs.Camera` from a :class:`CapturePriors`. The
defaults are Brooks et al.'s, with sensor-format values they do not model:

- colour matrix: a random convex mix of real cameras' XYZ → camera matrices, ``matrix_mix`` of
  them drawn from ``matrix_pool``, weights uniform then normalised (``"brooks"``: their four
  cameras, all mixed; ``"adobe"``: 573 distinct Bayer-camera matrices from LibRaw's table;
  ``"both"``);
- white balance: red gain U(1.9, 2.4), blue gain U(1.5, 1.9), green 1;
- digital gain (brightening): 1 / N(0.8, 0.1), the normal truncated to ±3 std;
- shot noise variance: log-uniform on [1e-4, 0.012];
- read noise variance: log read = 2.18 · log shot + 1.20 + N(0, 0.26²);
- CFA: uniform over RGGB, BGGR, GRBG, GBRG;
- bit depth 12; black level 2**(bit_depth − 4) counts, 1/16 of the range (256 at 12 bits, 64 at
  10, 1024 at 14: typical of phone and mirrorless sensors); white level 2**bit_depth − 1.

Any field can be fixed (a range with equal ends, a single CFA, a fixed matrix) or narrowed from a
JSON object with the same keys (:meth:`CapturePriors.from_json`); keys left out keep the
defaults. A value drawn from a single-point prior is recorded as ``"user"`` in the camera's
provenance, a random draw as ``"sampled"``, an unset black/white level as ``"default"``.

A camera profile (``rawpairs calibrate``, :mod:`rawpairs.calibrate`) is such an object too: it
fixes the CFA, levels, bit depth and colour matrix of one real camera, lists its real
``captures`` (as-shot white balance, exposure gain, noise of each calibration file; a camera
takes those of one capture drawn uniformly) and names itself (``profile``): every value a profile
gives is recorded as ``"profile:<profile>"``. Its ``calibration`` object says what was measured
and how; it is informative (nothing is drawn from it).

Noise levels are variances of the linear mosaic normalised to [0, 1] (see :mod:`rawpairs.noise`).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from rawpairs.camera import Camera
from rawpairs.cfa import CFA

__all__ = [
    "BROOKS_CAMERAS",
    "DEFAULT_PRIORS",
    "MATRIX_POOLS",
    "Capture",
    "CapturePriors",
    "profile_name",
    "sample_camera",
    "sample_noise_levels",
]

# Bounds that keep every drawn camera computable (user values beyond them are mistakes):
MAX_NOISE_VARIANCE = 1.0  # of a signal normalised to [0, 1]
MAX_GAIN = 64.0  # white-balance gains, digital gain and its inverse

# XYZ → camera matrices of the four cameras of the Darmstadt Noise Dataset that Brooks et al.
# mix (google-research/unprocessing, unprocess.py). Three match LibRaw's table exactly (Sony
# ILCE-7R, Olympus E-M10, Sony DSC-RX100M2..M5); the first, quantised to 1/128, is the Nexus 6P's.
BROOKS_CAMERAS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "Huawei Nexus 6P": ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469),
                        (-0.0703, 0.2188, 0.6406)),
    "Sony ILCE-7R": ((0.4913, -0.0541, -0.0202), (-0.613, 1.3513, 0.2906),
                     (-0.1564, 0.2151, 0.7183)),
    "Olympus E-M10": ((0.838, -0.263, -0.0639), (-0.2887, 1.0725, 0.2496),
                      (-0.0627, 0.1427, 0.5438)),
    "Sony DSC-RX100M4": ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933),
                         (-0.097, 0.1581, 0.5181)),
}  # fmt: skip
MATRIX_POOLS = ("brooks", "adobe", "both")
_TRUNCATE_STD = 3.0
_PROFILE_NAME = re.compile(r"[\w.-]{1,100}", re.ASCII)  # as in a profile:<file> provenance


@lru_cache(maxsize=1)
def _adobe_matrices() -> np.ndarray:
    """N×3×3 XYZ → camera matrices shipped in ``rawpairs/data/camera_matrices.csv``."""
    text = resources.files("rawpairs").joinpath("data/camera_matrices.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    coeffs = np.array([[int(r[f"c{i}"]) for i in range(9)] for r in rows], dtype=np.float64)
    return (coeffs / 10000.0).reshape(-1, 3, 3)


@lru_cache(maxsize=len(MATRIX_POOLS))
def _pool(name: str) -> np.ndarray:
    """N×3×3 XYZ → camera matrices of a matrix pool (read-only: made once per process)."""
    brooks = np.array(list(BROOKS_CAMERAS.values()))
    if name == "brooks":
        pool = brooks
    elif name == "adobe":
        pool = _adobe_matrices().copy()
    else:
        pool = np.concatenate([brooks, _adobe_matrices()])
    pool.flags.writeable = False
    return pool


def _range(
    value: Any, name: str, *, strict: bool = True, most: float = math.inf
) -> tuple[float, float]:
    """A (low, high) range of numbers > 0 (>= 0 unless ``strict``) and <= ``most``; one number
    fixes the value."""
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a number or a finite [low, high] pair, got {value!r}")
    lo, hi = float(arr[0]), float(arr[1])
    if lo > hi:
        raise ValueError(f"{name} range is empty: low {lo} > high {hi}")
    if lo < 0 or (strict and lo == 0):
        raise ValueError(f"{name} must be {'>' if strict else '>='} 0, got {[lo, hi]}")
    if hi > most:
        raise ValueError(f"{name} must be <= {most:g}, got {[lo, hi]}")
    return lo, hi


def _floats(value: Any, n: int, name: str) -> tuple[float, ...]:
    arr = np.asarray(value, dtype=np.float64).ravel()
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be {n} finite numbers, got {value!r}")
    return tuple(float(v) for v in arr)


@dataclass(frozen=True)
class Capture:
    """The conditions of one real capture, as ``rawpairs calibrate`` measured them.

    ``red_gain``, ``blue_gain``: the as-shot white balance (G = 1); ``digital_gain``: the exposure
    gain :func:`rawpairs.isp.auto_exposure` gives the file (how far below white its light lies);
    each in [1/64, 64]. ``noise_shot``, ``noise_read``: noise variances on
    the [0, 1] mosaic (see :mod:`rawpairs.noise`), both ``None`` where not measured (a camera
    then draws its noise from the priors' noise fields).
    """

    red_gain: float
    blue_gain: float
    digital_gain: float
    noise_shot: float | None = None
    noise_read: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("red_gain", "blue_gain", "digital_gain"):
            value = _floats(getattr(self, name), 1, name)[0]
            if not 1 / MAX_GAIN <= value <= MAX_GAIN:
                raise ValueError(
                    f"capture {name} must be in [1/{MAX_GAIN:g}, {MAX_GAIN:g}], got {value}"
                )
            set_(self, name, value)
        if (self.noise_shot is None) != (self.noise_read is None):
            raise ValueError("capture noise_shot and noise_read must both be set or both null")
        if self.noise_shot is not None:
            for name in ("noise_shot", "noise_read"):
                value = _floats(getattr(self, name), 1, name)[0]
                if not 0 <= value <= MAX_NOISE_VARIANCE:
                    raise ValueError(
                        f"capture {name} must be in [0, {MAX_NOISE_VARIANCE:g}], got {value}"
                    )
                set_(self, name, value)

    @property
    def measured_noise(self) -> bool:
        """Whether this capture carries its own noise levels."""
        return self.noise_shot is not None


@dataclass(frozen=True)
class CapturePriors:
    """Distributions of simulated capture parameters; see the module docstring for defaults.

    Ranges are ``(low, high)`` pairs (equal ends, or a single number, fix the value).
    ``digital_gain_inverse`` is the (mean, std) of ``1 / digital_gain`` (a single number ``v``
    fixes the gain to ``1 / v``); ``read_noise_line`` is (slope, intercept, std) of
    ``log read`` against ``log shot``; ``read_noise``, when set, replaces that line with a
    log-uniform range. ``shot_noise = (0, 0)`` gives a noise-free camera (then read noise is 0
    unless ``read_noise`` is set). ``xyz_to_cam``, when set, replaces the matrix pool.
    ``captures``, when set, replaces the white-balance, digital-gain and (for captures that carry
    it) noise fields: each camera takes one :class:`Capture`, drawn uniformly. ``profile`` names
    the camera profile these priors are (provenance ``profile:<profile>``); ``calibration`` is the
    profile's report (a JSON object, not drawn from).
    """

    matrix_pool: str = "brooks"
    matrix_mix: int = 4
    xyz_to_cam: tuple[tuple[float, float, float], ...] | None = None
    red_gain: tuple[float, float] = (1.9, 2.4)
    blue_gain: tuple[float, float] = (1.5, 1.9)
    digital_gain_inverse: tuple[float, float] = (0.8, 0.1)
    shot_noise: tuple[float, float] = (1e-4, 0.012)
    read_noise_line: tuple[float, float, float] = (2.18, 1.20, 0.26)
    read_noise: tuple[float, float] | None = None
    cfa: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")
    bit_depth: int = 12
    black_level: tuple[float, float, float, float] | None = None
    white_level: float | None = None
    captures: tuple[Capture, ...] | None = None
    profile: str | None = None
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.matrix_pool not in MATRIX_POOLS:
            raise ValueError(f"matrix_pool must be one of {MATRIX_POOLS}, got {self.matrix_pool!r}")
        if int(self.matrix_mix) != self.matrix_mix or self.matrix_mix < 1:
            raise ValueError(f"matrix_mix must be an integer >= 1, got {self.matrix_mix!r}")
        set_(self, "matrix_mix", int(self.matrix_mix))
        if self.xyz_to_cam is not None:
            m = _floats(self.xyz_to_cam, 9, "xyz_to_cam")
            set_(self, "xyz_to_cam", (m[0:3], m[3:6], m[6:9]))
        set_(self, "red_gain", _range(self.red_gain, "red_gain", most=MAX_GAIN))
        set_(self, "blue_gain", _range(self.blue_gain, "blue_gain", most=MAX_GAIN))
        inverse = self.digital_gain_inverse
        if np.ndim(inverse) == 0:  # a single number fixes the gain
            inverse = (inverse, 0.0)
        mean, std = _floats(inverse, 2, "digital_gain_inverse")
        low, high = mean - _TRUNCATE_STD * std, mean + _TRUNCATE_STD * std
        if std < 0 or low <= 0 or low < 1 / MAX_GAIN or high > MAX_GAIN:
            raise ValueError(
                f"digital_gain_inverse (mean {mean}, std {std}) needs std >= 0 and "
                f"mean ± {_TRUNCATE_STD:g}·std within [1/{MAX_GAIN:g}, {MAX_GAIN:g}]"
            )
        set_(self, "digital_gain_inverse", (mean, std))
        shot = _range(self.shot_noise, "shot_noise", strict=False, most=MAX_NOISE_VARIANCE)
        if shot[0] == 0 and shot[1] > 0:
            raise ValueError(
                f"shot_noise is log-uniform: low must be > 0 unless both are 0, got {shot}"
            )
        set_(self, "shot_noise", shot)
        line = _floats(self.read_noise_line, 3, "read_noise_line")
        if line[2] < 0:
            raise ValueError(f"read_noise_line std must be >= 0, got {line[2]}")
        set_(self, "read_noise_line", line)
        if self.read_noise is not None:
            set_(self, "read_noise", _range(self.read_noise, "read_noise", most=MAX_NOISE_VARIANCE))
        cfas = (self.cfa,) if isinstance(self.cfa, str | CFA) else tuple(self.cfa)
        if not cfas:
            raise ValueError("cfa must name at least one pattern")
        set_(self, "cfa", tuple(CFA.parse(c).value for c in cfas))
        if int(self.bit_depth) != self.bit_depth:
            raise ValueError(f"bit_depth must be an integer, got {self.bit_depth!r}")
        set_(self, "bit_depth", int(self.bit_depth))
        if self.black_level is not None:
            black = np.atleast_1d(np.asarray(self.black_level, dtype=np.float64)).ravel()
            if black.size == 1:  # one level for all four CFA positions
                black = np.repeat(black, 4)
            set_(self, "black_level", _floats(black, 4, "black_level"))
        if self.white_level is not None:
            white = _floats(self.white_level, 1, "white_level")[0]
            if white < 1:
                raise ValueError(f"white_level must be >= 1 count, got {white:g}")
            set_(self, "white_level", white)
        if self.captures is not None:
            if isinstance(self.captures, dict | str) or not len(self.captures):
                raise ValueError("captures must be a non-empty list of capture objects")
            set_(self, "captures", tuple(_capture(c) for c in self.captures))
        if self.profile is not None and not (
            isinstance(self.profile, str) and _PROFILE_NAME.fullmatch(self.profile)
        ):
            raise ValueError(
                f"profile must be a file name of 1–100 letters, digits, '_', '.', '-', got "
                f"{self.profile!r:.60}"
            )
        if self.calibration is not None and not isinstance(self.calibration, dict):
            raise ValueError(
                f"calibration must be an object, got {type(self.calibration).__name__}"
            )
        # Fixed values must make a valid camera together (e.g. black level below white level).
        matrix = self.xyz_to_cam or BROOKS_CAMERAS["Sony ILCE-7R"]
        self._camera(self.cfa[0], matrix, (self.red_gain[0], 1.0, self.blue_gain[0]))

    # Levels -------------------------------------------------------------------------------
    @property
    def black(self) -> tuple[float, float, float, float]:
        """Black level per CFA position (counts): the set value or ``2**(bit_depth − 4)``."""
        if self.black_level is not None:
            return self.black_level
        return (float(2 ** max(self.bit_depth - 4, 0)),) * 4

    @property
    def white(self) -> float:
        """White level (counts): the set value or ``2**bit_depth − 1``."""
        return self.white_level if self.white_level is not None else float(2**self.bit_depth - 1)

    def _camera(self, cfa: str, xyz_to_cam: Any, wb_gains: Any, **values: Any) -> Camera:
        """A camera with this prior's levels and the given values (validated together)."""
        return Camera(
            cfa=cfa,
            black_level=self.black,
            white_level=self.white,
            bit_depth=self.bit_depth,
            wb_gains=wb_gains,
            xyz_to_cam=xyz_to_cam,
            **values,
        )

    # Serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists for tuples); :meth:`from_dict` inverts it exactly. The profile
        fields (``captures``, ``profile``, ``calibration``) are left out when unset, so priors
        without them serialise as they always did."""
        d = asdict(self)
        for name in _PROFILE_FIELDS:
            if d[name] is None:
                del d[name]
        return {k: _listify(v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CapturePriors:
        """Priors from a (partial) dict of fields; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown capture prior fields: {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        """Exact JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CapturePriors:
        """Priors from JSON text holding an object of (some) fields."""
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"capture priors JSON must be an object, got {type(d).__name__}")
        return cls.from_dict(d)


DEFAULT_PRIORS = CapturePriors()
_PROFILE_FIELDS = ("captures", "profile", "calibration")


def profile_name(file_name: str) -> str:
    """The name a profile file records itself by (``profile:<name>``): ``file_name`` with every
    character other than letters, digits, ``_``, ``.``, ``-`` replaced by ``_``, at most its last
    100 characters."""
    name = re.sub(r"[^\w.-]", "_", file_name, flags=re.ASCII)[-100:]
    return name or "_"


def _capture(value: Any) -> Capture:
    """A :class:`Capture` from itself or from a JSON object of its fields."""
    if isinstance(value, Capture):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"each capture must be an object, got {type(value).__name__}")
    known = {f.name for f in fields(Capture)}
    unknown = set(value) - known
    if unknown:
        raise ValueError(f"unknown capture fields: {sorted(unknown, key=str)}")
    missing = {"red_gain", "blue_gain", "digital_gain"} - set(value)
    if missing:
        raise ValueError(f"capture lacks {sorted(missing)}")
    return Capture(**value)


def _listify(v: Any) -> Any:
    return [_listify(x) for x in v] if isinstance(v, tuple | list) else v


def _fixed(r: tuple[float, float]) -> bool:
    return r[0] == r[1]


def _log_uniform(rng: np.random.Generator, r: tuple[float, float]) -> float:
    if r[1] == 0:
        return 0.0
    return float(np.exp(rng.uniform(np.log(r[0]), np.log(r[1]))))


def sample_noise_levels(
    rng: np.random.Generator, priors: CapturePriors = DEFAULT_PRIORS
) -> tuple[float, float]:
    """Draw (shot, read) noise variances (Brooks et al. 2019's log-log linear model)."""
    shot = _log_uniform(rng, priors.shot_noise)
    slope, intercept, std = priors.read_noise_line
    if priors.read_noise is not None:
        return shot, _log_uniform(rng, priors.read_noise)
    deviation = rng.normal(0.0, std)
    if shot == 0:
        return 0.0, 0.0
    return shot, float(np.exp(slope * np.log(shot) + intercept + deviation))


def _sample_matrix(rng: np.random.Generator, priors: CapturePriors) -> np.ndarray:
    pool = _pool(priors.matrix_pool)
    k = min(priors.matrix_mix, len(pool))
    chosen = pool[rng.choice(len(pool), size=k, replace=False)] if k < len(pool) else pool
    weights = rng.uniform(1e-8, 1.0, size=k)
    # np.tensordot(weights / weights.sum(), chosen, axes=1), the same dot without its wrapper
    return np.dot((weights / weights.sum()).reshape(1, k), chosen.reshape(k, 9)).reshape(3, 3)


def sample_camera(rng: np.random.Generator, priors: CapturePriors = DEFAULT_PRIORS) -> Camera:
    """Draw a :class:`Camera` from ``priors`` using only ``rng`` (same state → same camera)."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    cfa = priors.cfa[rng.integers(len(priors.cfa))]
    if priors.read_noise is not None:
        read_fixed = _fixed(priors.read_noise)
    else:  # read noise follows shot noise; it is 0 when shot noise is
        read_fixed = priors.read_noise_line[2] == 0 or priors.shot_noise[1] == 0
    noise_fixed = _fixed(priors.shot_noise) and read_fixed
    # "user" marks a value fixed by the caller; a profile names itself instead.
    given = "user" if priors.profile is None else f"profile:{priors.profile}"
    provenance = {
        "cfa": given if len(priors.cfa) == 1 else "sampled",
        "black_level": "default" if priors.black_level is None else given,
        "white_level": "default" if priors.white_level is None else given,
        "wb_gains": given if _fixed(priors.red_gain) and _fixed(priors.blue_gain) else "sampled",
        "xyz_to_cam": given if priors.xyz_to_cam is not None else "sampled",
        "noise": "user" if noise_fixed else "sampled",
    }
    if priors.captures is None:
        red = rng.uniform(*priors.red_gain)
        blue = rng.uniform(*priors.blue_gain)
        mean, std = priors.digital_gain_inverse
        low, high = mean - _TRUNCATE_STD * std, mean + _TRUNCATE_STD * std
        digital_gain = float(1.0 / np.clip(rng.normal(mean, std), low, high))
        shot, read = sample_noise_levels(rng, priors)
    else:  # the conditions of one real capture, drawn uniformly
        capture = priors.captures[rng.integers(len(priors.captures))]
        red, blue, digital_gain = capture.red_gain, capture.blue_gain, capture.digital_gain
        drawn = given if len(priors.captures) == 1 or priors.profile else "sampled"
        provenance.update(wb_gains=drawn, digital_gain=drawn)
        if capture.measured_noise:
            shot, read = capture.noise_shot, capture.noise_read
            provenance["noise"] = drawn
        else:
            shot, read = sample_noise_levels(rng, priors)
    values = {
        "digital_gain": digital_gain,
        "noise_shot": shot,
        "noise_read": read,
        "provenance": provenance,
    }
    # Convex mixes of the pools' matrices are well conditioned (the largest condition number of
    # rgb_to_cam in 20,000 draws from each pool is 5.6; Camera rejects > 1e4).
    xyz_to_cam = priors.xyz_to_cam if priors.xyz_to_cam is not None else _sample_matrix(rng, priors)
    return priors._camera(cfa, xyz_to_cam, (float(red), 1.0, float(blue)), **values)
