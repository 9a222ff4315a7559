"""What a sample is: the one definition of the shard format, used by the writer and every reader.

A shard is a tar file whose members are named ``<key>.<member>``; a sample is the run of
consecutive members sharing a key (webdataset's rule: the key is the part of the base name before
its first dot). The members (docs/schema.md):

- ``raw.npy``: uint16 H×W mosaic in sensor counts (``numpy.save`` format, no pickle); absent in
  an *at-load* sample (``render.unprocess == "at_load"``, schema version 3), whose RAW is made by
  the reader from the RGB and the recipe in ``json`` (camera, crop, noise key);
- ``rgb.png`` or ``rgb.jpg``: 8-bit sRGB H×W×3, aligned pixel for pixel with the mosaic (an
  at-load sample's may be the whole source photo, its bytes as they came; ``crop`` applies);
- ``json``: :class:`SampleMeta` (camera, render, source, crop, seed, schema version), UTF-8;
- ``cls``: optional ASCII class index ≥ 0.

:func:`encode_sample` makes the members, :func:`walk_tar` / :func:`read_shard` group a tar's
members into samples, and :func:`decode_sample` checks and decodes one sample. The builder, the
training loader and ``rawpairs inspect --verify`` all go through these functions, so a shard that
``inspect --verify`` passes is one the loader reads. The manifest row (:func:`manifest_row`,
:func:`manifest_schema`) and the ``index.json`` layout (:class:`ShardEntry`) live here too.
"""

from __future__ import annotations

import io
import json
import lzma
import re
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rawpairs.camera import PROVENANCE_FIELDS, Camera
from rawpairs.choices import Demosaic, Gamma, NoisePlacement, Render, RGBFormat, Tone, Unprocess
from rawpairs.errors import CorruptInputError
from rawpairs.headers import jpeg_size
from rawpairs.messages import one_line
from rawpairs.png import encode_png

# Imported where used: pyarrow (~0.15 s, only the manifest needs it), fsspec (remote folders) and
# Hugging Face datasets (an optional package).

__all__ = [
    "CLASSES_FILE",
    "CLS_MEMBER",
    "INDEX_VERSION",
    "JSON_MEMBER",
    "JSON_TYPES",
    "MANIFEST_COLUMNS",
    "POSITION_COLUMNS",
    "RAW_MEMBER",
    "READABLE_VERSIONS",
    "RENAMED_COLUMNS",
    "RGB_MEMBERS",
    "SCHEMA_VERSION",
    "Crop",
    "DecodedSample",
    "NoisePlacement",
    "RenderInfo",
    "RenderMethod",
    "SampleMeta",
    "SchemaVersionError",
    "ShardEntry",
    "SourceInfo",
    "SourceKind",
    "TarSample",
    "decode_sample",
    "encode_at_load_sample",
    "encode_sample",
    "hf_features",
    "index_document",
    "manifest_row",
    "manifest_schema",
    "one_line",
    "parse_class_map",
    "parse_index",
    "read_class_map",
    "read_manifest",
    "read_shard",
    "rgb_member",
    "split_member_name",
    "tar_cause",
    "walk_tar",
]

# 3: at-load samples (render.unprocess, render.noise_key; no raw.npy). A sample is written with the
# lowest version that holds it: samples with a stored RAW are still version 2, byte for byte.
SCHEMA_VERSION = 3
STORED_RAW_VERSION = 2  # 2: every key at every level in every sample (null where not applicable)
READABLE_VERSIONS = (1, 2, 3)  # 1: keys that do not apply were left out
INDEX_VERSION = 1  # index.json's layout
RAW_MEMBER = "raw.npy"
JSON_MEMBER = "json"
CLS_MEMBER = "cls"
CLASSES_FILE = "classes.json"  # a labelled build's class map, {folder name: class id}
RGB_MEMBERS = {RGBFormat.PNG: "rgb.png", RGBFormat.JPEG: "rgb.jpg"}  # by --rgb-format
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


# The limits every reader applies (verify, the loader, the encoder): values beyond them are no
# camera's and overflow a reader's arithmetic (a cls of 1e23 is no int64; a gain of 1e300 makes
# the float32 front-end infinite).
CLS_LIMIT = 2**31 - 1  # a class index fits int32
GAIN_LIMIT = 1e3  # white-balance and digital gains
MATRIX_LIMIT = 1e3  # |xyz_to_cam| entries
NOISE_LIMIT = 1.0  # shot and read noise variances on [0, 1] RAW


def _limit_problem(camera: Camera, label: int | None) -> str | None:
    """Why a sample's values are outside :data:`CLS_LIMIT` and the camera limits, or ``None``."""
    if label is not None and label > CLS_LIMIT:
        return f"cls {label:.3g} exceeds {CLS_LIMIT}"
    if max(camera.wb_gains) > GAIN_LIMIT:
        return f"wb_gains {max(camera.wb_gains):.3g} exceed {GAIN_LIMIT:g}"
    if camera.digital_gain > GAIN_LIMIT:
        return f"digital_gain {camera.digital_gain:.3g} exceeds {GAIN_LIMIT:g}"
    biggest = max(abs(v) for row in camera.xyz_to_cam for v in row)
    if biggest > MATRIX_LIMIT:
        return f"xyz_to_cam entry {biggest:.3g} exceeds {MATRIX_LIMIT:g}"
    if max(camera.noise_shot, camera.noise_read) > NOISE_LIMIT:
        return f"noise variance {max(camera.noise_shot, camera.noise_read):.3g} exceeds 1"
    return None


class SchemaVersionError(CorruptInputError):
    """A sample written with another schema version than the one this code reads."""


# ---------------------------------------------------------------------------------------------
# Typed metadata (the ``json`` member)
# ---------------------------------------------------------------------------------------------
class RenderMethod(str, Enum):
    """How the RGB of a sample was made."""

    RAWPAIRS = Render.RAWPAIRS.value  # our forward ISP from a camera RAW's metadata
    LIBRAW = Render.LIBRAW.value  # LibRaw's rendering of a camera RAW
    UNPROCESS = "unprocess"  # the RGB is the photo; the RAW was simulated from it


class SourceKind(str, Enum):
    """The kind of input file a sample comes from."""

    RAW = "raw"
    RGB = "rgb"


def _object(d: Any, name: str) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"{name} must be a JSON object, got {type(d).__name__}")
    return d


def _fields(d: Any, name: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict:
    _object(d, name)
    missing = [f for f in required if f not in d]
    unknown = sorted(set(d) - set(required) - set(optional))
    if missing:
        raise ValueError(f"{name} lacks {', '.join(missing)}")
    if unknown:
        raise ValueError(f"{name} has unknown fields {unknown}")
    return d


def _int(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r:.40}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r:.40}")
    return value


def _enum(kind: type[Enum], value: Any, name: str) -> Any:
    """The member of ``kind`` whose value is exactly the string ``value`` (no aliases)."""
    for member in kind:
        if isinstance(value, str) and value == member.value:
            return member
    choices = ", ".join(repr(m.value) for m in kind)
    raise ValueError(f"{name} must be one of {choices}, got {value!r:.40}")


_HEX64 = re.compile(r"[0-9a-f]{16}")
_RENDER_CHOICES: dict[str, type[Demosaic | Tone | Gamma]] = {
    "demosaic": Demosaic,
    "tone": Tone,
    "gamma": Gamma,
}


@dataclass(frozen=True)
class RenderInfo:
    """How the pair was rendered: method, noise placement and the ISP choices of the method
    (``demosaic`` for ``rawpairs`` only; ``tone``/``gamma`` for ``rawpairs`` and ``unprocess``;
    ``None`` where the method has no such choice).

    For ``unprocess``, ``unprocess`` says when the RAW is made: ``in_build`` (stored ``raw.npy``)
    or ``at_load`` (the reader makes it from the RGB and the recipe); ``None`` for the other
    methods. ``noise_key`` (16 hex digits): the 64-bit start of the noise stream
    (:func:`rawpairs.rng.stream_key`) of an at-load sample whose noise is ``in_raw``, so every
    reader adds the same noise; ``None`` otherwise."""

    method: RenderMethod
    noise: NoisePlacement
    demosaic: Demosaic | None = None
    tone: Tone | None = None
    gamma: Gamma | None = None
    unprocess: Unprocess | None = None
    noise_key: str | None = None

    def __post_init__(self) -> None:
        for name, kind in _RENDER_CHOICES.items():
            if getattr(self, name) is not None:
                object.__setattr__(self, name, kind.parse(getattr(self, name)))
        object.__setattr__(self, "noise", NoisePlacement.parse(self.noise))
        if self.method is RenderMethod.UNPROCESS:
            object.__setattr__(self, "unprocess", Unprocess.parse(self.unprocess or "in_build"))
        elif self.unprocess is not None:
            raise ValueError(f"render.unprocess applies to method unprocess, not {self.method}")
        seeded = self.at_load and self.noise is NoisePlacement.IN_RAW
        if seeded != (self.noise_key is not None):
            raise ValueError(
                "render.noise_key is needed by, and only by, an at-load sample with in_raw noise"
            )
        if self.noise_key is not None and not _HEX64.fullmatch(self.noise_key):
            raise ValueError(f"render.noise_key must be 16 hex digits, got {self.noise_key!r:.40}")

    @property
    def at_load(self) -> bool:
        """Whether the sample's RAW is made by its reader (no ``raw.npy``)."""
        return self.unprocess is Unprocess.AT_LOAD

    @property
    def version(self) -> int:
        """The schema version a sample with this render is written with."""
        return SCHEMA_VERSION if self.at_load else STORED_RAW_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Every key, ``None`` (JSON null) for a choice the method does not have; an at-load
        render also has ``unprocess`` and ``noise_key`` (version 3)."""
        d: dict[str, Any] = {"method": self.method.value, "noise": self.noise.value}
        for name in _RENDER_CHOICES:
            value = getattr(self, name)
            d[name] = value.value if value is not None else None
        if self.at_load:
            d["unprocess"], d["noise_key"] = Unprocess.AT_LOAD.value, self.noise_key
        return d

    @classmethod
    def from_dict(cls, d: Any, version: int | None = None) -> RenderInfo:
        """Inverse of :meth:`to_dict` for a sample of schema ``version`` (default: the version
        :meth:`to_dict` writes for such a render)."""
        method = _enum(RenderMethod, _object(d, "render").get("method"), "render.method")
        if version is None:
            version = SCHEMA_VERSION if "unprocess" in d else STORED_RAW_VERSION
        needed = {
            RenderMethod.RAWPAIRS: ("demosaic", "tone", "gamma"),
            RenderMethod.UNPROCESS: ("tone", "gamma"),
            RenderMethod.LIBRAW: (),
        }[method]
        extra: dict[str, Any] = {}
        if version >= 3:
            keys = ("method", "noise", *_RENDER_CHOICES, "unprocess", "noise_key")
            _fields(d, f"render ({method.value})", keys)
            _nulls(d, f"render ({method.value})", set(_RENDER_CHOICES) - set(needed))
            if method is RenderMethod.UNPROCESS:
                extra["unprocess"] = _enum(Unprocess, d["unprocess"], "render.unprocess")
            else:
                _nulls(d, f"render ({method.value})", ("unprocess",))
            if d["noise_key"] is not None:
                extra["noise_key"] = _str(d["noise_key"], "render.noise_key")
        elif version >= 2:
            _fields(d, f"render ({method.value})", ("method", "noise", *_RENDER_CHOICES))
            _nulls(d, f"render ({method.value})", set(_RENDER_CHOICES) - set(needed))
        else:
            _fields(d, f"render ({method.value})", ("method", "noise", *needed))
        return cls(
            method=method,
            noise=_enum(NoisePlacement, d["noise"], "render.noise"),
            **{name: _enum(_RENDER_CHOICES[name], d[name], f"render.{name}") for name in needed},
            **extra,
        )


@dataclass(frozen=True)
class SourceInfo:
    """The input file of a sample: POSIX path relative to ``--src``, kind, SHA-256 (hex), the size
    (pixels) of the image the crop is taken from, and for camera RAW its make, model and Bayer
    binning factor (``None`` for photos), and the sensor's pixel aspect (width ÷ height of a
    site; ≠ 1: the mosaic was resampled to square pixels; absent in older samples)."""

    path: str
    kind: SourceKind
    sha256: str
    height: int
    width: int
    make: str | None = None
    model: str | None = None
    bin_factor: int | None = None
    pixel_aspect: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every key, ``None`` (JSON null) for the camera-RAW fields of a photo."""
        return {
            "path": self.path,
            "kind": self.kind.value,
            "sha256": self.sha256,
            "height": self.height,
            "width": self.width,
            "make": self.make,
            "model": self.model,
            "bin_factor": self.bin_factor,
            "pixel_aspect": self.pixel_aspect,
        }

    @classmethod
    def from_dict(cls, d: Any, version: int = SCHEMA_VERSION) -> SourceInfo:
        base = ("path", "kind", "sha256", "height", "width")
        raw_only = ("make", "model", "bin_factor")
        kind = _enum(SourceKind, _object(d, "source").get("kind"), "source.kind")
        raw = kind is SourceKind.RAW
        if version >= 2:
            _fields(d, "source", (*base, *raw_only, "pixel_aspect"))
            _nulls(d, "source", () if raw else (*raw_only, "pixel_aspect"))
            if raw and d["bin_factor"] is None:
                raise ValueError("source.bin_factor of camera RAW must be an integer, got None")
            d = {k: v for k, v in d.items() if v is not None or k in ("make", "model")}
            d = {k: v for k, v in d.items() if raw or k not in raw_only}
        else:
            _fields(d, "source", base + (raw_only if raw else ()), ("pixel_aspect",) if raw else ())
        aspect = d.get("pixel_aspect")
        if aspect is not None and not (
            isinstance(aspect, (int, float)) and not isinstance(aspect, bool) and 0 < aspect < 1e3
        ):
            raise ValueError(f"source.pixel_aspect must be a positive number, got {aspect!r:.40}")
        return cls(
            path=_str(d["path"], "source.path"),
            kind=kind,
            sha256=_str(d["sha256"], "source.sha256"),
            height=_int(d["height"], "source.height", 1),
            width=_int(d["width"], "source.width", 1),
            make=_str(d["make"], "source.make") if d.get("make") is not None else None,
            model=_str(d["model"], "source.model") if d.get("model") is not None else None,
            bin_factor=_int(d["bin_factor"], "source.bin_factor", 1) if "bin_factor" in d else None,
            pixel_aspect=float(aspect) if aspect is not None else None,
        )


@dataclass(frozen=True)
class Crop:
    """The crop box in source pixels (after ``--max-side``): top, left, height, width."""

    top: int
    left: int
    height: int
    width: int

    def to_list(self) -> list[int]:
        return [self.top, self.left, self.height, self.width]

    @classmethod
    def from_list(cls, values: Any) -> Crop:
        if not isinstance(values, list) or len(values) != 4:
            raise ValueError(f"crop must be [top, left, height, width], got {values!r:.60}")
        top, left, height, width = (
            _int(v, f"crop.{n}", m)
            for v, n, m in zip(
                values, ("top", "left", "height", "width"), (0, 0, 1, 1), strict=True
            )
        )
        return cls(top, left, height, width)


@dataclass(frozen=True)
class SampleMeta:
    """The ``json`` member: everything known about a sample besides its pixels."""

    key: str
    camera: Camera
    render: RenderInfo
    source: SourceInfo
    crop: Crop
    seed: int

    def __post_init__(self) -> None:
        c, s = self.crop, self.source
        if c.top + c.height > s.height or c.left + c.width > s.width:
            raise ValueError(
                f"crop {c.to_list()} does not fit the {s.height}×{s.width} source image"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.render.version,
            "key": self.key,
            "camera": _camera_dict(self.camera),
            "render": self.render.to_dict(),
            "source": self.source.to_dict(),
            "crop": self.crop.to_list(),
            "seed": self.seed,
        }

    def to_json(self) -> bytes:
        """The member's exact bytes (sorted keys; floats round-trip bit for bit)."""
        return json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")

    @classmethod
    def from_dict(cls, d: Any) -> SampleMeta:
        """Inverse of :meth:`to_dict`. ``ValueError`` for a missing, unknown or invalid field;
        :class:`SchemaVersionError`'s message for another schema version is raised by
        :func:`decode_sample` (which knows the shard)."""
        version = _check_version(d)
        _fields(d, "json", ("schema_version", "key", "camera", "render", "source", "crop", "seed"))
        try:
            camera = Camera.from_dict(_camera_fields(_object(d["camera"], "camera"), version))
        except (TypeError, ValueError) as err:
            raise ValueError(f"camera: {err}") from err
        return cls(
            key=_str(d["key"], "key"),
            camera=camera,
            render=RenderInfo.from_dict(d["render"], version),
            source=SourceInfo.from_dict(d["source"], version),
            crop=Crop.from_list(d["crop"]),
            seed=_int(d["seed"], "seed"),
        )


def _check_version(d: Any) -> int:
    """``d``'s ``schema_version``; ``ValueError`` unless it is one this code reads."""
    _object(d, "json")
    if "schema_version" not in d:
        raise ValueError("json has no schema_version")
    version = d["schema_version"]
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        *first, last = map(str, READABLE_VERSIONS)
        readable = f"{', '.join(first)} and {last}"
        raise _VersionMismatch(
            f"written with schema version {version!r:.20}, this rawpairs reads schema versions "
            f"{readable} (rebuild the shards, or use the rawpairs version that wrote them)"
        )
    return version


def _nulls(d: dict, name: str, fields: Any) -> None:
    """Fields of ``d`` that do not apply must be null."""
    for f in sorted(fields):
        if d[f] is not None:
            raise ValueError(f"{name}.{f} does not apply and must be null, got {d[f]!r:.40}")


def _camera_dict(camera: Camera) -> dict[str, Any]:
    """The camera as JSON-ready data with every provenance key (``None``: not recorded)."""
    d = camera.to_dict()
    d["provenance"] = {name: camera.provenance.get(name) for name in PROVENANCE_FIELDS}
    return d


def _camera_fields(d: dict[str, Any], version: int) -> dict[str, Any]:
    """The camera object of a sample's json as :meth:`Camera.from_dict` takes it: from version 2
    on, every provenance key is present, null where nothing is recorded."""
    if version < 2:
        return d
    provenance = d.get("provenance")
    if not isinstance(provenance, dict):
        raise ValueError("provenance must be an object with every provenance key")
    missing = [name for name in PROVENANCE_FIELDS if name not in provenance]
    if missing:
        raise ValueError(f"provenance lacks {', '.join(missing)}")
    return {**d, "provenance": {k: v for k, v in provenance.items() if v is not None}}


class _VersionMismatch(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------
def _whole_rggb_block(cfa: Any, height: int, width: int) -> bool:
    """Whether an H×W mosaic with this CFA holds a whole RGGB 2×2 block after trimming to even
    sides (what a reader re-phasing to RGGB needs): sides ≥ 2, and ≥ 4 along an axis where the
    red site sits at an odd position."""
    red_y, red_x = cfa.red_position
    return height // 2 * 2 - red_y >= 2 and width // 2 * 2 - red_x >= 2


def rgb_member(rgb_format: RGBFormat | str) -> str:
    """Member name of the RGB image for ``--rgb-format`` (``png`` → ``rgb.png``, ``jpeg`` →
    ``rgb.jpg``)."""
    return RGB_MEMBERS[RGBFormat.parse(rgb_format)]


def encode_sample(
    meta: SampleMeta,
    raw: np.ndarray,
    rgb: np.ndarray,
    label: int | None = None,
    *,
    rgb_format: RGBFormat | str = RGBFormat.PNG,
    jpeg_quality: int = 95,
    png_compression: int = 1,
) -> dict[str, bytes | str]:
    """The tar members of one sample, ready for webdataset's ``TarWriter`` (``__key__`` included).

    ``raw``: uint16 H×W counts; ``rgb``: uint8 H×W×3 sRGB of the same H×W; ``label``: class
    index ≥ 0 or ``None``. PNG (``png_compression``: ISA-L level 0–3) or JPEG (``jpeg_quality``
    95–100). Raises ``ValueError`` for arrays that do not fit the schema or the metadata.
    """
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(
            f"{meta.key}: raw must be a uint16 H×W mosaic, got {raw.dtype} {raw.shape}"
        )
    if rgb.dtype != np.uint8 or rgb.shape != (*raw.shape, 3):
        raise ValueError(
            f"{meta.key}: rgb must be uint8 {raw.shape}×3, got {rgb.dtype} {rgb.shape}"
        )
    if raw.shape != (meta.crop.height, meta.crop.width):
        raise ValueError(f"{meta.key}: raw is {raw.shape} but the crop is {meta.crop.to_list()}")
    _check_mosaic_and_label(meta, *raw.shape, label)
    name = rgb_member(rgb_format)
    if name == "rgb.png":
        rgb_bytes = encode_png(rgb, png_compression)
    else:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise ValueError(f"{meta.key}: OpenCV could not encode the RGB image as JPEG")
        rgb_bytes = jpeg.tobytes()
    raw_buf = io.BytesIO()
    np.save(raw_buf, raw, allow_pickle=False)
    members: dict[str, bytes | str] = {
        "__key__": meta.key,
        RAW_MEMBER: raw_buf.getvalue(),
        name: rgb_bytes,
        JSON_MEMBER: meta.to_json(),
    }
    if label is not None:
        members[CLS_MEMBER] = str(label).encode("ascii")
    return members


def _check_mosaic_and_label(meta: SampleMeta, height: int, width: int, label: int | None) -> None:
    """``ValueError`` (naming the key) unless a ``height``×``width`` mosaic of ``meta``'s CFA holds
    a whole RGGB block, ``label`` is ≥ 0 and the camera and label are within the readers' limits."""
    if not _whole_rggb_block(meta.camera.cfa, height, width):
        raise ValueError(
            f"{meta.key}: a {height}×{width} {meta.camera.cfa.value} mosaic holds no "
            "whole RGGB 2×2 block"
        )
    if label is not None and label < 0:
        raise ValueError(f"{meta.key}: class index must be >= 0, got {label}")
    problem = _limit_problem(meta.camera, label)
    if problem is not None:
        raise ValueError(f"{meta.key}: {problem}")


def encode_at_load_sample(
    meta: SampleMeta, rgb_name: str, rgb_bytes: bytes, label: int | None = None
) -> dict[str, bytes | str]:
    """The tar members of an at-load sample (``meta.render.unprocess == "at_load"``): the RGB
    member ``rgb_name`` (``rgb.jpg`` or ``rgb.png``) holding ``rgb_bytes`` as given, ``json`` and
    ``cls``; no ``raw.npy``. The image must declare either the crop's size or the whole source
    image's (then readers apply the crop). Raises ``ValueError`` for members that do not fit the
    schema or the metadata. The caller has decoded the image once (the build checks it)."""
    if not meta.render.at_load:
        raise ValueError(f"{meta.key}: render.unprocess is not at_load")
    if rgb_name not in RGB_MEMBERS.values():
        raise ValueError(f"{meta.key}: RGB member must be one of {sorted(RGB_MEMBERS.values())}")
    try:
        _at_load_rgb_size(meta, _image_size(rgb_bytes, rgb_name), rgb_name)
    except ValueError as err:
        raise ValueError(f"{meta.key}: {err}") from err
    _check_mosaic_and_label(meta, meta.crop.height, meta.crop.width, label)
    members: dict[str, bytes | str] = {
        "__key__": meta.key,
        rgb_name: rgb_bytes,
        JSON_MEMBER: meta.to_json(),
    }
    if label is not None:
        members[CLS_MEMBER] = str(label).encode("ascii")
    return members


def _at_load_rgb_size(meta: SampleMeta, declared: tuple[int, int], name: str) -> bool:
    """Whether an at-load sample's RGB member of ``declared`` (height, width) is the whole source
    image (``True``: the crop applies) or the crop (``False``); ``ValueError`` if neither."""
    crop, src = meta.crop, meta.source
    if declared == (crop.height, crop.width):
        return False
    if declared == (src.height, src.width):
        return True
    raise ValueError(
        f"{name} is {declared[0]}×{declared[1]}, neither the {crop.height}×{crop.width} crop nor "
        f"the {src.height}×{src.width} source image"
    )


# ---------------------------------------------------------------------------------------------
# Tar shards: member names and the one walker
# ---------------------------------------------------------------------------------------------
def split_member_name(name: str) -> tuple[str, str] | None:
    """``dir/key.raw.npy`` → (``dir/key``, ``raw.npy``): webdataset's rule, the first dot of the
    base name (the member part lower-cased); ``None`` for a name without one."""
    head, _, base = name.rpartition("/")
    if "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return (f"{head}/{stem}" if head else stem), ext.lower()


@dataclass(frozen=True)
class TarSample:
    """One sample of a shard, undecoded: key, members (``None`` when skipped unread), and the
    byte span of its tar entries (``offset`` of the first header, ``size`` up to the end of the
    last member's padded data), which the manifest records."""

    key: str
    members: dict[str, bytes] | None
    offset: int
    size: int


def walk_tar(
    tar: tarfile.TarFile, shard: str, skip: Callable[[int], bool] | None = None
) -> Iterator[TarSample]:
    """The samples of an open tar, in order: consecutive regular-file members sharing a key.

    Entries that are not regular files, names without a dot, and keys whose base name starts with
    ``__`` are ignored. ``skip(i)`` (``i``: the sample's index in this shard) marks samples whose
    members are not read: a seekable tar seeks past them (exact resume). Raises
    :class:`~rawpairs.errors.CorruptInputError` naming ``shard`` for an unreadable tar, a sample
    that repeats a member, a key that appears twice, or a shard with no samples.
    """
    key: str | None = None
    members: dict[str, bytes] | None = None
    start = end = index = 0
    seen: set[str] = set()
    try:
        for info in tar:
            split = split_member_name(info.name) if info.isreg() else None
            if split is None or split[0].rpartition("/")[2].startswith("__"):
                continue
            name_key, ext = split
            if name_key != key:
                if key is not None:
                    yield TarSample(key, members, start, end - start)
                    index += 1
                if name_key in seen:
                    raise CorruptInputError(shard, f"sample {name_key!r} appears twice")
                seen.add(name_key)
                key, start = name_key, info.offset
                members = None if skip is not None and skip(index) else {}
            end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if members is None:
                continue
            if ext in members:
                raise CorruptInputError(shard, f"sample {key!r} repeats member {ext!r}")
            members[ext] = tar.extractfile(info).read()  # type: ignore[union-attr]
        damage = _damaged_end(tar)
    except _TAR_ERRORS as err:
        raise CorruptInputError(shard, f"unreadable tar: {tar_cause(err)}") from err
    if damage:
        raise CorruptInputError(shard, damage)
    if key is None:
        raise CorruptInputError(shard, "shard has no samples")
    yield TarSample(key, members, start, end - start)


def tar_cause(err: BaseException) -> str:
    """Why a tar could not be read, on one line: ``tarfile.open`` answers a file that is no tar
    (in any compression) with a list of every method it tried."""
    if isinstance(err, tarfile.ReadError) and str(err).startswith("file could not be opened"):
        return "not a tar archive"
    return one_line(err)


def _damaged_end(tar: tarfile.TarFile) -> str | None:
    """Why a seekable tar did not end with its end-of-archive block, or ``None``.

    ``tarfile`` stops iterating without an error at a damaged header after the first one, or
    where the file is cut at a member boundary: the samples after it would vanish silently.
    Streams (URLs) cannot be checked this way.
    """
    fileobj = tar.fileobj
    if fileobj is None or not getattr(fileobj, "seekable", lambda: False)():
        return None
    fileobj.seek(tar.offset)
    block = fileobj.read(tarfile.BLOCKSIZE)
    if block == tarfile.NUL * tarfile.BLOCKSIZE:
        # A gzip stream's CRC-32 is checked only when the stream is read to its end: without
        # this, bytes garbled inside a gzip-compressed shard would be read as good samples.
        while fileobj.read(1 << 20):
            pass
        return None
    if not block:
        return f"truncated: ends at byte {tar.offset} without the end-of-archive marker"
    return f"damaged tar header at byte {tar.offset}: the rest of the shard cannot be read"


def read_shard(path: str | Path) -> Iterator[TarSample]:
    """The samples of a local shard file (see :func:`walk_tar`); errors name the file."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            yield from walk_tar(tar, str(path))
    except _TAR_ERRORS as err:
        raise CorruptInputError(path, f"unreadable tar: {tar_cause(err)}") from err


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodedSample:
    """A checked sample: uint16 H×W ``raw`` (counts; ``None`` for an at-load sample, whose RAW
    :func:`rawpairs.sample.sample_raw` makes), uint8 H×W×3 ``rgb`` (sRGB, the crop), metadata
    and class index (``None``: no ``cls`` member)."""

    key: str
    raw: np.ndarray | None
    rgb: np.ndarray
    meta: SampleMeta
    label: int | None


def _npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of ``.npy`` bytes, reading the header only."""
    buf = io.BytesIO(data)
    version = np.lib.format.read_magic(buf)
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, fortran, dtype = readers[version](buf)
    return shape, fortran, dtype, buf.tell()


def _decode_raw(data: bytes, height: int, width: int, bit_depth: int) -> np.ndarray:
    """``raw.npy`` → uint16 mosaic; its header must declare exactly the metadata's crop size and
    the bytes must hold exactly that many values, so nothing larger is ever allocated."""
    try:
        shape, _, dtype, offset = _npy_header(data)
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise ValueError(f"{RAW_MEMBER} is not a readable .npy array ({err})") from err
    if dtype != np.uint16 or len(shape) != 2:
        raise ValueError(f"{RAW_MEMBER} must be a 2-D uint16 mosaic, got {dtype} {shape}")
    if shape != (height, width):
        raise ValueError(
            f"{RAW_MEMBER} is {shape[0]}×{shape[1]} but the json crop is {height}×{width}"
        )
    if len(data) - offset != height * width * 2:
        raise ValueError(
            f"{RAW_MEMBER} holds {len(data) - offset} data bytes, {height}×{width} uint16 needs "
            f"{height * width * 2}"
        )
    raw = np.load(io.BytesIO(data), allow_pickle=False)
    if raw.size and int(raw.max()) > 2**bit_depth - 1:
        raise ValueError(f"{RAW_MEMBER} max {int(raw.max())} exceeds the {bit_depth}-bit range")
    return raw


def _image_size(data: bytes, name: str) -> tuple[int, int]:
    """(height, width) declared by a PNG's IHDR or a JPEG's SOF marker, before any decoding."""
    if name == "rgb.png":
        if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
            raise ValueError(f"{name} is not a PNG")
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    if data[:2] != b"\xff\xd8":
        raise ValueError(f"{name} is not a JPEG")
    size = jpeg_size(data)
    if size is None:
        raise ValueError(f"{name} has no JPEG frame header")
    return size


def _decode_rgb(data: bytes, name: str, height: int, width: int) -> np.ndarray:
    """The RGB member → uint8 H×W×3 RGB; its declared size must be the mosaic's before decoding."""
    declared = _image_size(data, name)
    if declared != (height, width):
        raise ValueError(
            f"{name} is {declared[0]}×{declared[1]} but {RAW_MEMBER} is {height}×{width}"
        )
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise ValueError(f"{name} cannot be decoded")
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"{name} must be 8-bit RGB, got {bgr.dtype} {bgr.shape}")
    if bgr.shape[:2] != (height, width):
        raise ValueError(f"{name} decodes to {bgr.shape[0]}×{bgr.shape[1]}, not {height}×{width}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_at_load_rgb(data: bytes, name: str, meta: SampleMeta) -> np.ndarray:
    """An at-load sample's RGB member → its uint8 crop×3 RGB. Decoded as the build read the
    photo (OpenCV ``IMREAD_COLOR``: EXIF orientation applied, gray repeated to three channels);
    its declared size must be the crop's or the source image's (then cropped)."""
    whole = _at_load_rgb_size(meta, _image_size(data, name), name)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{name} cannot be decoded")
    c = meta.crop
    expected = (meta.source.height, meta.source.width) if whole else (c.height, c.width)
    if bgr.shape[:2] != expected:
        raise ValueError(f"{name} decodes to {bgr.shape[0]}×{bgr.shape[1]}, not {expected[0]}×"
                         f"{expected[1]}")  # fmt: skip
    if whole:
        bgr = bgr[c.top : c.top + c.height, c.left : c.left + c.width]
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _declares_at_load(data: bytes | None) -> bool:
    """Whether ``json`` bytes say ``render.unprocess == "at_load"`` (``False`` for anything else;
    :func:`decode_sample` then reports what is wrong)."""
    try:
        d = json.loads(data) if data is not None else None
        return d["render"]["unprocess"] == Unprocess.AT_LOAD.value
    except (ValueError, TypeError, KeyError, RecursionError):
        return False


def decode_sample(members: Mapping[str, bytes], shard: str, key: str) -> DecodedSample:
    """Check and decode one sample's members (docs/schema.md); errors name the shard and the key.

    Raises :class:`SchemaVersionError` for a sample of another schema version and
    :class:`~rawpairs.errors.CorruptInputError` for anything else that does not follow the
    schema: missing members (or both ``rgb.png`` and ``rgb.jpg``), invalid metadata, a json key
    differing from the tar key, a mosaic whose header disagrees with the metadata's crop size or
    whose values exceed the bit depth or that holds no whole RGGB 2×2 block, an RGB image that is
    not 8-bit RGB of the same size, a ``cls`` that is not an ASCII integer ≥ 0. Members outside
    the schema are ignored.
    """

    def fail(cause: str) -> CorruptInputError:
        return CorruptInputError(shard, f"sample {key!r}: {cause}")

    at_load = _declares_at_load(members.get(JSON_MEMBER))
    if at_load and RAW_MEMBER in members:
        raise fail(f"an at-load sample (render.unprocess at_load) has a {RAW_MEMBER} member")
    rgb_names = [m for m in RGB_MEMBERS.values() if m in members]
    missing = [m for m in (() if at_load else (RAW_MEMBER,)) + (JSON_MEMBER,) if m not in members]
    if missing or len(rgb_names) != 1:
        have = sorted(members)
        if len(rgb_names) > 1:
            raise fail(f"has both rgb.png and rgb.jpg (members: {have})")
        missing += [] if rgb_names else ["rgb.png or rgb.jpg"]
        raise fail(f"no {' and no '.join(missing)} member (members: {have})")
    try:
        d = json.loads(members[JSON_MEMBER])
        meta = SampleMeta.from_dict(d)
    except _VersionMismatch as err:
        raise SchemaVersionError(shard, f"sample {key!r}: {err}") from err
    except (ValueError, TypeError, RecursionError) as err:
        raise fail(f"json is not valid metadata ({one_line(err, 200)})") from err
    if meta.key != key:
        raise fail(f"json key {meta.key!r:.80} differs from the tar key")
    raw: np.ndarray | None = None
    try:
        if at_load:
            rgb = _decode_at_load_rgb(members[rgb_names[0]], rgb_names[0], meta)
        else:
            raw = _decode_raw(
                members[RAW_MEMBER], meta.crop.height, meta.crop.width, meta.camera.bit_depth
            )
            rgb = _decode_rgb(members[rgb_names[0]], rgb_names[0], *raw.shape)
    except ValueError as err:
        raise fail(str(err)) from err
    if not _whole_rggb_block(meta.camera.cfa, *rgb.shape[:2]):
        cfa = meta.camera.cfa.value
        raise fail(f"a {rgb.shape[0]}×{rgb.shape[1]} {cfa} mosaic holds no whole RGGB 2×2 block")
    label = None
    if CLS_MEMBER in members:
        text = members[CLS_MEMBER]
        if not (text.strip().isdigit() and text.strip().isascii()):
            raise fail(f"cls is not an ASCII integer >= 0: {text[:20]!r}")
        label = int(text)
    problem = _limit_problem(meta.camera, label)
    if problem is not None:
        raise fail(problem)
    return DecodedSample(key, raw, rgb, meta, label)


# ---------------------------------------------------------------------------------------------
# The json's types, for readers that infer a schema (Hugging Face datasets)
# ---------------------------------------------------------------------------------------------
_F64, _I64, _STR = "float64", "int64", "string"
JSON_TYPES: dict[str, Any] = {  # the ``json`` member: a type name, [type] a list, {…} an object
    "camera": {
        "bit_depth": _I64,
        "black_level": [_F64],
        "cam_to_srgb": [[_F64]],
        "cfa": _STR,
        "digital_gain": _F64,
        "noise_read": _F64,
        "noise_shot": _F64,
        "provenance": dict.fromkeys(PROVENANCE_FIELDS, _STR),
        "wb_gains": [_F64],
        "white_level": _F64,
        "xyz_to_cam": [[_F64]],
    },
    "crop": [_I64],
    "key": _STR,
    "render": dict.fromkeys(("demosaic", "gamma", "method", "noise", "tone"), _STR),
    "schema_version": _I64,
    "seed": _I64,
    "source": {
        "bin_factor": _I64,
        "height": _I64,
        "kind": _STR,
        "make": _STR,
        "model": _STR,
        "path": _STR,
        "pixel_aspect": _F64,
        "sha256": _STR,
        "width": _I64,
    },
}


def hf_features(labels: bool = False, rgb_format: RGBFormat | str = RGBFormat.PNG) -> Any:
    """The Hugging Face ``datasets.Features`` of a sample (:data:`JSON_TYPES` for ``json``), for
    ``load_dataset("webdataset", data_files=…, features=hf_features(…))``.

    ``datasets`` infers the json's types from the first samples it reads: in a build whose first
    sample is a photo (``source.make`` null) a later camera RAW sample fails ("Couldn't cast
    array of type string to null"). ``labels``: the build has ``cls`` (``--labels folder``).
    Raises ``ImportError`` (one line) without ``datasets``.
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError("hf_features needs Hugging Face datasets: pip install datasets") from err
    as_list = getattr(datasets, "List", None) or datasets.Sequence  # List: datasets >= 4

    def feature(kind: Any) -> Any:
        if isinstance(kind, dict):
            return {name: feature(value) for name, value in kind.items()}
        if isinstance(kind, list):
            return as_list(feature(kind[0]))
        return datasets.Value(kind)

    members = {
        "__key__": datasets.Value(_STR),
        "__url__": datasets.Value(_STR),
        JSON_MEMBER: feature(JSON_TYPES),
        RAW_MEMBER: as_list(as_list(datasets.Value("uint16"))),
        rgb_member(rgb_format): datasets.Image(),
    }
    if labels:
        members[CLS_MEMBER] = datasets.Value(_I64)
    return datasets.Features(members)


# ---------------------------------------------------------------------------------------------
# manifest.parquet and index.json
# ---------------------------------------------------------------------------------------------
MANIFEST_COLUMNS = (
    ("key", "string"),
    ("shard", "string"),  # the shard's file name
    ("index", "int64"),  # sample's position in its shard
    ("byte_offset", "int64"),  # byte offset of its first tar header (was `offset`, see below)
    ("size", "int64"),  # bytes of its tar entries
    ("source", "string"),
    ("kind", "string"),
    ("make", "string"),
    ("model", "string"),
    ("height", "int64"),
    ("width", "int64"),
    ("crop_top", "int64"),
    ("crop_left", "int64"),
    ("cfa", "string"),
    ("black_level", "float64"),  # mean of the four per-position black levels
    ("white_level", "float64"),
    ("bit_depth", "int64"),
    ("wb_r", "float64"),
    ("wb_b", "float64"),
    ("digital_gain", "float64"),
    ("noise_shot", "float64"),
    ("noise_read", "float64"),
    ("matrix_provenance", "string"),
    ("render", "string"),
    ("label", "int64"),
)
POSITION_COLUMNS = ("shard", "index", "byte_offset", "size")
# Columns renamed since the first manifests: {old name: new name}. ``offset`` is a keyword of
# DuckDB and SQL, so a plain ``SELECT offset`` failed; older manifests are still read.
RENAMED_COLUMNS = {"offset": "byte_offset"}


def read_manifest(path: str | Path) -> Any:
    """``manifest.parquet`` as a ``pyarrow.Table`` with today's column names (an older manifest's
    ``offset`` is read as ``byte_offset``). Raises what ``pyarrow`` raises for an unreadable
    file."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = [RENAMED_COLUMNS.get(n, n) for n in table.column_names]
    return table.rename_columns(names) if names != table.column_names else table


def manifest_schema() -> Any:
    """The ``pyarrow`` schema of ``manifest.parquet`` (:data:`MANIFEST_COLUMNS`)."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in MANIFEST_COLUMNS])


def manifest_row(meta: SampleMeta, label: int | None) -> dict[str, Any]:
    """A sample's manifest row, without its position columns (:data:`POSITION_COLUMNS`, which the
    shard writer knows)."""
    cam, src, crop = meta.camera, meta.source, meta.crop
    return {
        "key": meta.key,
        "source": src.path,
        "kind": src.kind.value,
        "make": src.make or "",
        "model": src.model or "",
        "height": crop.height,
        "width": crop.width,
        "crop_top": crop.top,
        "crop_left": crop.left,
        "cfa": cam.cfa.value,
        "black_level": float(sum(cam.black_level) / 4),
        "white_level": cam.white_level,
        "bit_depth": cam.bit_depth,
        "wb_r": cam.wb_gains[0],
        "wb_b": cam.wb_gains[2],
        "digital_gain": cam.digital_gain,
        "noise_shot": cam.noise_shot,
        "noise_read": cam.noise_read,
        "matrix_provenance": cam.provenance.get("xyz_to_cam", ""),
        "render": meta.render.method.value,
        "label": label,
    }


@dataclass(frozen=True)
class ShardEntry:
    """One shard in ``index.json``: file name (a plain name inside the build folder), sample
    count, byte size and hex SHA-256."""

    name: str
    samples: int
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples": self.samples,
            "size": self.size,
            "sha256": self.sha256,
        }


def index_document(shards: Sequence[ShardEntry]) -> dict[str, Any]:
    """The ``index.json`` object."""
    return {"schema_version": INDEX_VERSION, "shards": [s.to_dict() for s in shards]}


def parse_index(d: Any) -> list[ShardEntry]:
    """Inverse of :func:`index_document`; ``ValueError`` for a malformed index, another schema
    version, or a shard name that is not a plain file name (no folders, no ``..``)."""
    _fields(d, "index.json", ("schema_version", "shards"))
    if d["schema_version"] != INDEX_VERSION or isinstance(d["schema_version"], bool):
        raise ValueError(
            f"index.json has schema version {d['schema_version']!r:.20}, this rawpairs reads "
            f"{INDEX_VERSION}"
        )
    if not isinstance(d["shards"], list):
        raise ValueError("index.json shards must be a list")
    entries = []
    for i, s in enumerate(d["shards"]):
        _fields(s, f"index.json shard {i}", ("name", "samples", "size", "sha256"))
        name = _str(s["name"], f"index.json shard {i} name")
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(f"index.json shard {i}: {name!r:.80} is not a plain file name")
        entries.append(
            ShardEntry(
                name=name,
                samples=_int(s["samples"], f"index.json {name} samples", 0),
                size=_int(s["size"], f"index.json {name} size", 0),
                sha256=_str(s["sha256"], f"index.json {name} sha256"),
            )
        )
    return entries


# ---------------------------------------------------------------------------------------------
# classes.json: the class map of a labelled build
# ---------------------------------------------------------------------------------------------
def parse_class_map(d: Any, where: str = CLASSES_FILE) -> dict[str, int]:
    """A class map ``{name: id}`` checked: a JSON object of non-empty names and distinct integer
    ids >= 0. ``ValueError`` (naming ``where``) otherwise."""
    if not isinstance(d, dict):
        raise ValueError(
            f"{where}: must be a JSON object {{class name: id}}, got {type(d).__name__}"
        )
    owner: dict[int, str] = {}
    for name, value in d.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: class names must be non-empty strings, got {name!r:.40}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(
                f"{where}: the id of {name!r:.40} must be an integer, got {value!r:.40}"
            )
        if value < 0:
            raise ValueError(f"{where}: the id of {name!r:.40} must be >= 0, got {value}")
        if value in owner:
            raise ValueError(f"{where}: {owner[value]!r:.40} and {name!r:.40} share id {value}")
        owner[value] = name
    return dict(d)


def read_class_map(folder: str | Path) -> dict[str, int] | None:
    """The class map ``{folder name: class id}`` of the build in ``folder`` (a local path or an
    fsspec URL): its ``classes.json``, or for a build made before that file existed the
    ``class_map`` of its ``build.json``. ``None`` when the build has no labels (or the folder has
    neither file). Raises ``ValueError`` naming the file when it is malformed.

    Readers that mix shard folders (training and validation, several training sets) compare
    these maps: the same ``cls`` means the same class only under one map."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(folder))
    for name, field_name in ((CLASSES_FILE, None), ("build.json", "class_map")):
        path = f"{root.rstrip('/')}/{name}"
        if not fs.exists(path):
            continue
        try:
            with fs.open(path, "rb") as f:
                d = json.loads(f.read())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{folder}/{name}: not JSON ({one_line(err)})") from err
        if field_name is not None:
            if not isinstance(d, dict):
                raise ValueError(f"{folder}/{name}: not a JSON object")
            d = d.get(field_name) or None
            if d is None:
                return None
        return parse_class_map(d, f"{folder}/{name}")
    return None
