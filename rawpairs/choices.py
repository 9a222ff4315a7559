"""The choices of a build and of the ISP: one ``str`` enum per concept, one spelling per choice.

Each member *is* its string (``Tone.SMOOTHSTEP == "smoothstep"``, ``json.dumps`` writes
``"smoothstep"``), so configurations, sample metadata and ``build.json`` keep the strings they
always had. Functions taking a choice accept the member or its string value and check it with
:meth:`Choice.parse` (one line listing the choices). A command line offers ``Tone.values()``.

=======================  ========================================  ================================
enum                     values                                    where
=======================  ========================================  ================================
:class:`Demosaic`        ``malvar``, ``bilinear``                  forward ISP, ``--demosaic``
:class:`Tone`            ``display_smoothstep``, ``smoothstep``,   both ISPs, ``--tone``
                         ``none``
:class:`Gamma`           ``srgb``, ``2.2``, ``linear``             both ISPs, ``--gamma``
:class:`Render`          ``rawpairs``, ``libraw``                  RGB of camera RAW, ``--render``
:class:`CropMode`        ``random``, ``tile``                      ``--crop-mode``
:class:`NoisePlacement`  ``in_raw``, ``at_load``                   ``--noise``, ``render.noise``
:class:`Unprocess`       ``in_build``, ``at_load``                 ``--unprocess``
:class:`RGBFormat`       ``png``, ``jpeg``                         ``--rgb-format``
:class:`Exposure`        ``auto``, ``none``                        camera RAW, ``--exposure``
:class:`Engine`          ``local``, ``ray``                        ``--engine``
=======================  ========================================  ================================
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

__all__ = [
    "Choice",
    "CropMode",
    "Demosaic",
    "Engine",
    "Exposure",
    "Gamma",
    "NoisePlacement",
    "RGBFormat",
    "Render",
    "Tone",
    "Unprocess",
]

_C = TypeVar("_C", bound="Choice")


class Choice(str, Enum):
    """Base of the choice enums: a member is its string value, also in ``str()`` and f-strings."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The string values, in definition order (e.g. a command line's choices)."""
        return tuple(member.value for member in cls)

    @classmethod
    def parse(cls: type[_C], value: Any, option: str | None = None) -> _C:
        """The member for ``value`` (a member or its string value); ``ValueError`` otherwise:
        ``unknown <what> 'x': expected one of (…)``, or ``<option> must be one of (…), got 'x'``
        when an ``option`` name (e.g. ``--tone``) is given."""
        try:
            return cls(value)
        except ValueError:
            if option is not None:
                raise ValueError(
                    f"{option} must be one of {cls.values()}, got {value!r:.60}"
                ) from None
            what = _WHAT.get(cls, cls.__name__)
            raise ValueError(
                f"unknown {what} {value!r:.60}: expected one of {cls.values()}"
            ) from None


class Demosaic(Choice):
    """Demosaicing method of the forward ISP (:mod:`rawpairs.demosaic`)."""

    MALVAR = "malvar"  # Malvar, He, Cutler 2004: gradient-corrected bilinear
    BILINEAR = "bilinear"


class Tone(Choice):
    """Tone curve of both ISPs (:mod:`rawpairs.tone`)."""

    DISPLAY_SMOOTHSTEP = "display_smoothstep"  # smoothstep of display-encoded values (default)
    SMOOTHSTEP = "smoothstep"  # smoothstep of linear values
    NONE = "none"  # identity


class Gamma(Choice):
    """Transfer function between linear light and display values (:mod:`rawpairs.tone`)."""

    SRGB = "srgb"  # IEC 61966-2-1 piecewise curve
    POWER_2_2 = "2.2"  # pure power 1/2.2
    LINEAR = "linear"  # identity


class Render(Choice):
    """How a camera RAW's RGB is made: our forward ISP from the file's metadata, or LibRaw."""

    RAWPAIRS = "rawpairs"
    LIBRAW = "libraw"


class CropMode(Choice):
    """``random``: ``--crops`` random crops per source; ``tile``: every non-overlapping tile."""

    RANDOM = "random"
    TILE = "tile"


class NoisePlacement(Choice):
    """Where a sample's sensor noise is (``--noise`` and the sample's ``render.noise``).

    ``in_raw``: ``raw.npy`` holds the noisy counts (every camera RAW; simulated RAW by default).
    ``at_load``: ``raw.npy`` is noise-free and readers add N(0, shot·x + read) from the camera's
    stored levels, fresh each epoch. ``shard`` and ``load``, the command line's spelling before
    the two were unified, still parse (as ``in_raw`` and ``at_load``).
    """

    IN_RAW = "in_raw"
    AT_LOAD = "at_load"

    @classmethod
    def _missing_(cls, value: object) -> NoisePlacement | None:
        if not isinstance(value, str):
            return None
        return {"shard": cls.IN_RAW, "load": cls.AT_LOAD}.get(value)


class Unprocess(Choice):
    """When a photo's simulated RAW is made (``--unprocess``, the sample's ``render.unprocess``).

    ``in_build``: the builder unprocesses and stores ``raw.npy``. ``at_load``: the sample stores
    the photo's RGB and the recipe (camera, crop, noise key); readers make the RAW (on the
    training device, :mod:`distill.unprocess`; on the CPU, :func:`rawpairs.sample.sample_raw`).
    """

    IN_BUILD = "in_build"
    AT_LOAD = "at_load"


class RGBFormat(Choice):
    """Encoding of the RGB member: ``png`` (``rgb.png``) or ``jpeg`` (``rgb.jpg``)."""

    PNG = "png"
    JPEG = "jpeg"


class Exposure(Choice):
    """Exposure of camera RAW renders: ``auto`` (99th percentile at white, LibRaw's auto-bright
    rule, :func:`rawpairs.isp.auto_exposure`) or ``none`` (the file's own exposure)."""

    AUTO = "auto"
    NONE = "none"


class Engine(Choice):
    """Where a build's per-source work runs: spawned local processes, or a Ray cluster."""

    LOCAL = "local"
    RAY = "ray"


_WHAT: dict[type, str] = {
    Demosaic: "demosaic method",
    Tone: "tone curve",
    Gamma: "gamma",
    Render: "render",
    CropMode: "crop mode",
    NoisePlacement: "noise mode",
    Unprocess: "unprocess mode",
    RGBFormat: "RGB format",
    Exposure: "exposure",
    Engine: "engine",
}
