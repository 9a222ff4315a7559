"""Where a build is described: :class:`BuildConfig`, everything that decides the bytes of a
sample, with its checks. Each field is also a ``rawpairs build`` option of the same name
(:func:`rawpairs.options.option` declares its help, range and choices once)."""

# ruff: noqa: RUF009  (BuildConfig's option() calls return dataclass fields)
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rawpairs.choices import (
    CropMode,
    Demosaic,
    Exposure,
    Gamma,
    NoisePlacement,
    Render,
    RGBFormat,
    Tone,
    Unprocess,
)
from rawpairs.headers import MAX_PIXELS
from rawpairs.options import choice_fields, option
from rawpairs.priors import CapturePriors
from rawpairs.tone import DEFAULT_TONE

__all__ = ["SEED_LIMIT", "BuildConfig"]

SEED_LIMIT = 2**63  # seeds are integers in [0, SEED_LIMIT)


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the bytes of a sample (and nothing that does not).

    The choices are :mod:`rawpairs.choices` enums; a string value is accepted and converted, so
    ``BuildConfig(tone="smoothstep").tone is Tone.SMOOTHSTEP``, and :meth:`to_dict` gives the
    strings back (``build.json``). Each field is also a ``rawpairs build`` option of the same
    name (:func:`rawpairs.options.option`: its help, range and choices).
    """

    seed: int = option(0)
    crop: int | None = option(None, "Crop N×N pairs at even offsets (default: whole image).")
    crop_mode: CropMode = option(CropMode.RANDOM)
    crops: int = option(1, "Random crops per source.")
    max_side: int | None = option(
        None, "Resize photos (Bayer-bin RAW) so the longer side is at most N."
    )
    render: Render = option(Render.RAWPAIRS, "How RAW files get their RGB.")
    demosaic: Demosaic = option(Demosaic.MALVAR)
    tone: Tone = option(
        DEFAULT_TONE,
        "Tone curve (both directions): smoothstep on display values, on linear values, or none.",
    )
    gamma: Gamma = option(Gamma.SRGB, choices=[g.value for g in Gamma if g is not Gamma.LINEAR])
    exposure: Exposure = option(
        Exposure.AUTO,
        "RAW files: gain putting the 99th percentile at white (LibRaw's auto-bright), or none.",
    )
    max_pixels: int | None = option(
        MAX_PIXELS,
        "Refuse inputs whose declared size exceeds N pixels (checked before decoding).",
        low=1,
    )
    rgb_format: RGBFormat = option(RGBFormat.PNG)
    jpeg_quality: int = option(95, flag=False)
    png_compression: int = option(1, flag=False)
    priors: CapturePriors = option(factory=CapturePriors, flag=False)  # --camera FILE
    noise: NoisePlacement = option(
        NoisePlacement.IN_RAW,
        "Simulated RAW: bake shot/read noise into raw.npy, or store it clean with its noise "
        "parameters so the loader draws fresh noise every epoch.",
    )
    labels: bool = option(
        False,
        "Add `cls` from the parent folder name.",
        choices=["folder"],
        from_flag=lambda value: value == "folder",
    )
    min_side: int | None = option(
        None,
        "Skip sources whose shorter side (as read) is below N pixels [default: no minimum; "
        "sources that cannot hold --crop are skipped unless --upscale].",
        low=1,
    )
    upscale: bool = option(
        False, "Resize photos smaller than --crop up to it (Lanczos) instead of skipping them."
    )
    unprocess: Unprocess = option(
        Unprocess.IN_BUILD,
        "Photos: simulate the RAW now and store it (raw.npy), or store the photo's RGB and the "
        "recipe so the loader makes the RAW (about the JPEG's bytes, several times faster to "
        "build).",
    )

    def __post_init__(self) -> None:
        for name, kind in choice_fields(BuildConfig).items():
            option = "--" + name.replace("_", "-")
            object.__setattr__(self, name, kind.parse(getattr(self, name), option))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"--seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"--seed must be in [0, 2**63), got {self.seed}")
        if self.crop is not None and (self.crop < 2 or self.crop % 2):
            raise ValueError(f"--crop must be an even number >= 2, got {self.crop}")
        if self.crops < 1:
            raise ValueError(f"--crops must be >= 1, got {self.crops}")
        if self.max_side is not None and self.max_side < 2:
            raise ValueError(f"--max-side must be >= 2, got {self.max_side}")
        if self.crop is not None and self.max_side is not None and self.crop > self.max_side:
            raise ValueError(
                f"--crop {self.crop} is larger than --max-side {self.max_side}: no resized image "
                "can hold the crop"
            )
        if self.min_side is not None and (
            isinstance(self.min_side, bool)
            or not isinstance(self.min_side, int)
            or self.min_side < 1
        ):
            raise ValueError(f"--min-side must be a positive integer, got {self.min_side!r}")
        if self.upscale and self.crop is None:
            raise ValueError("--upscale needs --crop (photos are resized up to the crop)")
        if self.crop_mode is CropMode.TILE and self.crops != 1:
            raise ValueError("--crops applies to --crop-mode random (tile takes every tile)")
        if self.render is Render.LIBRAW and self.max_side is not None:
            raise ValueError("--max-side cannot be used with --render libraw (full size only)")
        if not 95 <= self.jpeg_quality <= 100:
            raise ValueError(f"JPEG quality must be in [95, 100], got {self.jpeg_quality}")
        if not 0 <= self.png_compression <= 3:
            raise ValueError(f"PNG compression must be in [0, 3], got {self.png_compression}")
        if self.max_pixels is not None and (
            isinstance(self.max_pixels, bool)
            or not isinstance(self.max_pixels, int)
            or self.max_pixels < 1
        ):
            raise ValueError(f"--max-pixels must be a positive integer, got {self.max_pixels!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; ``unprocess`` only when ``at_load`` (an ``in_build`` build's
        ``build.json`` reads as before the option existed, so such builds resume across it)."""
        d = asdict(self)
        d["priors"] = self.priors.to_dict()
        for name in choice_fields(BuildConfig):
            d[name] = d[name].value
        if self.unprocess is Unprocess.IN_BUILD:
            del d["unprocess"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BuildConfig:
        d = dict(d)
        d["priors"] = CapturePriors.from_dict(d.get("priors", {}))
        return cls(**d)
