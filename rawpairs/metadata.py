"""A sample's metadata, the ``json`` member: typed records and their exact JSON round trip.

:class:`SampleMeta` holds everything known about a sample besides its pixels: the
:class:`~rawpairs.camera.Camera`, how the pair was rendered (:class:`RenderInfo`), the input file
(:class:`SourceInfo`) and the crop box (:class:`Crop`). ``to_json`` writes the member's exact
bytes; ``from_dict`` reads every schema version in :data:`READABLE_VERSIONS` and raises
``ValueError`` naming the field for anything else (docs/schema.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rawpairs.camera import PROVENANCE_FIELDS, Camera
from rawpairs.choices import Demosaic, Gamma, NoisePlacement, Render, Tone, Unprocess
from rawpairs.jsonfields import (
    check_fields,
    check_nulls,
    enum_value,
    int_value,
    json_object,
    str_value,
)

__all__ = [
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "STORED_RAW_VERSION",
    "Crop",
    "RenderInfo",
    "RenderMethod",
    "SampleMeta",
    "SourceInfo",
    "SourceKind",
    "VersionMismatch",
]

# 3: at-load samples (render.unprocess, render.noise_key; no raw.npy). A sample is written with the
# lowest version that holds it: samples with a stored RAW are still version 2, byte for byte.
SCHEMA_VERSION = 3
STORED_RAW_VERSION = 2  # 2: every key at every level in every sample (null where not applicable)
READABLE_VERSIONS = (1, 2, 3)  # 1: keys that do not apply were left out


class RenderMethod(str, Enum):
    """How the RGB of a sample was made."""

    RAWPAIRS = Render.RAWPAIRS.value  # our forward ISP from a camera RAW's metadata
    LIBRAW = Render.LIBRAW.value  # LibRaw's rendering of a camera RAW
    UNPROCESS = "unprocess"  # the RGB is the photo; the RAW was simulated from it


class SourceKind(str, Enum):
    """The kind of input file a sample comes from."""

    RAW = "raw"
    RGB = "rgb"


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
        method = enum_value(RenderMethod, json_object(d, "render").get("method"), "render.method")
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
            check_fields(d, f"render ({method.value})", keys)
            check_nulls(d, f"render ({method.value})", set(_RENDER_CHOICES) - set(needed))
            if method is RenderMethod.UNPROCESS:
                extra["unprocess"] = enum_value(Unprocess, d["unprocess"], "render.unprocess")
            else:
                check_nulls(d, f"render ({method.value})", ("unprocess",))
            if d["noise_key"] is not None:
                extra["noise_key"] = str_value(d["noise_key"], "render.noise_key")
        elif version >= 2:
            check_fields(d, f"render ({method.value})", ("method", "noise", *_RENDER_CHOICES))
            check_nulls(d, f"render ({method.value})", set(_RENDER_CHOICES) - set(needed))
        else:
            check_fields(d, f"render ({method.value})", ("method", "noise", *needed))
        return cls(
            method=method,
            noise=enum_value(NoisePlacement, d["noise"], "render.noise"),
            **{
                name: enum_value(_RENDER_CHOICES[name], d[name], f"render.{name}")
                for name in needed
            },
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
        kind = enum_value(SourceKind, json_object(d, "source").get("kind"), "source.kind")
        raw = kind is SourceKind.RAW
        if version >= 2:
            check_fields(d, "source", (*base, *raw_only, "pixel_aspect"))
            check_nulls(d, "source", () if raw else (*raw_only, "pixel_aspect"))
            if raw and d["bin_factor"] is None:
                raise ValueError("source.bin_factor of camera RAW must be an integer, got None")
            d = {k: v for k, v in d.items() if v is not None or k in ("make", "model")}
            d = {k: v for k, v in d.items() if raw or k not in raw_only}
        else:
            check_fields(
                d, "source", base + (raw_only if raw else ()), ("pixel_aspect",) if raw else ()
            )
        aspect = d.get("pixel_aspect")
        if aspect is not None and not (
            isinstance(aspect, (int, float)) and not isinstance(aspect, bool) and 0 < aspect < 1e3
        ):
            raise ValueError(f"source.pixel_aspect must be a positive number, got {aspect!r:.40}")
        return cls(
            path=str_value(d["path"], "source.path"),
            kind=kind,
            sha256=str_value(d["sha256"], "source.sha256"),
            height=int_value(d["height"], "source.height", 1),
            width=int_value(d["width"], "source.width", 1),
            make=str_value(d["make"], "source.make") if d.get("make") is not None else None,
            model=str_value(d["model"], "source.model") if d.get("model") is not None else None,
            bin_factor=int_value(d["bin_factor"], "source.bin_factor", 1)
            if "bin_factor" in d
            else None,
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
            int_value(v, f"crop.{n}", m)
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
        :class:`VersionMismatch` (a ``ValueError``) for another schema version."""
        version = _check_version(d)
        fields = ("schema_version", "key", "camera", "render", "source", "crop", "seed")
        check_fields(d, "json", fields)
        try:
            camera = Camera.from_dict(_camera_fields(json_object(d["camera"], "camera"), version))
        except (TypeError, ValueError) as err:
            raise ValueError(f"camera: {err}") from err
        return cls(
            key=str_value(d["key"], "key"),
            camera=camera,
            render=RenderInfo.from_dict(d["render"], version),
            source=SourceInfo.from_dict(d["source"], version),
            crop=Crop.from_list(d["crop"]),
            seed=int_value(d["seed"], "seed"),
        )


def _check_version(d: Any) -> int:
    """``d``'s ``schema_version``; ``ValueError`` unless it is one this code reads."""
    json_object(d, "json")
    if "schema_version" not in d:
        raise ValueError("json has no schema_version")
    version = d["schema_version"]
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        *first, last = map(str, READABLE_VERSIONS)
        readable = f"{', '.join(first)} and {last}"
        raise VersionMismatch(
            f"written with schema version {version!r:.20}, this rawpairs reads schema versions "
            f"{readable} (rebuild the shards, or use the rawpairs version that wrote them)"
        )
    return version


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


class VersionMismatch(ValueError):
    """A ``json`` of a schema version this code does not read; :func:`rawpairs.schema.decode_sample`
    raises it as :class:`~rawpairs.schema.SchemaVersionError`, naming the shard."""
