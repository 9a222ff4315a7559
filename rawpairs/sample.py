"""Where a sample is made: one source file + the build configuration → aligned RAW–RGB pairs.

:func:`make_samples` is a pure function of (source, configuration), made one crop at a time:
the same file and configuration give byte-identical samples in any process, on any engine, in
any order (the build's unit of work, :func:`rawpairs.group.write_group`, runs it per source).
Randomness comes only from a per-sample ``numpy.random.Generator``:
:func:`rawpairs.rng.sample_rng` of (``config.seed``, sample key).

A photo (``kind="rgb"``) is resized (``max_side``), cropped at even offsets, and its RAW is
simulated by the inverse ISP with capture parameters drawn from ``config.priors``. With
``config.unprocess == "at_load"`` the sample keeps the photo's RGB (the source JPEG's bytes when
the sample is the whole photo) and the recipe instead; :func:`sample_raw` makes the RAW any reader
would, bit for bit. A camera RAW
(``kind="raw"``) is Bayer-binned (``max_side``), rendered to sRGB by our forward ISP from the file's
own metadata (or by LibRaw; both at the gain of ``config.exposure``), and cropped at even offsets
so the CFA phase is kept.
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import fsspec
import numpy as np

from rawpairs import cfa as cfa_utils
from rawpairs.choices import (
    CropMode,
    Exposure,
    Gamma,
    NoisePlacement,
    Render,
    Unprocess,
)
from rawpairs.config import BuildConfig
from rawpairs.errors import (
    CorruptInputError,
    InputError,
    SkippedInputError,
    UnsupportedInputError,
)
from rawpairs.isp import auto_exposure, process
from rawpairs.libraw import render_libraw
from rawpairs.manifest import manifest_row
from rawpairs.messages import MESSAGE_LIMIT, one_line
from rawpairs.metadata import Crop, RenderInfo, RenderMethod, SampleMeta, SourceInfo, SourceKind
from rawpairs.photos import Photo, read_photo, read_stored_jpeg
from rawpairs.png import encode_png
from rawpairs.priors import sample_camera
from rawpairs.raw_files import read_raw
from rawpairs.rng import sample_rng, stream_key
from rawpairs.schema import DecodedSample, encode_at_load_sample, encode_sample
from rawpairs.storage import is_url, sha256_file
from rawpairs.tone import DEFAULT_TONE
from rawpairs.unprocess import simulate_raw, unprocess

__all__ = [
    "Sample",
    "Source",
    "UpscaledPhoto",
    "error_record",
    "is_documentation",
    "make_samples",
    "sample_key",
    "sample_raw",
    "sample_stream",
    "skip_record",
]

@dataclass(frozen=True)
class Source:
    """One input file: ``path``, ``relpath`` (POSIX, relative to ``--src``), kind, label."""

    path: str
    relpath: str
    kind: str  # "raw" | "rgb" | "unknown" (an extension neither reads: skipped or refused)
    label: int | None = None
    size: int | None = None  # bytes, when known from the listing
    problem: str | None = None  # why this entry cannot be an input (not a regular file, …)
    version: str | None = None  # an object store's content token (ETag, MD5) from the listing


@dataclass
class Sample:
    """A finished pair before encoding: aligned ``raw`` (uint16 H×W), ``rgb`` (uint8 H×W×3).

    An at-load sample has no ``raw``; ``rgb_member`` is its encoded RGB (member name, bytes);
    its ``rgb`` is ``None`` when the build stores the photo's bytes without decoding its pixels
    (:func:`rawpairs.photos.read_stored_jpeg`)."""

    key: str
    raw: np.ndarray | None
    rgb: np.ndarray | None
    meta: SampleMeta
    label: int | None = None
    rgb_member: tuple[str, bytes] | None = None


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sample_key(relpath: str, crop_index: int) -> str:
    """Stable, unique, dot-free key: readable path (its last 80 characters of ``[A-Za-z0-9_-]``)
    + 8 hex of the path's hash + crop index. The key starts with a letter or digit: a base name
    starting with ``__`` is metadata to webdataset (and ``_``/``-`` upset other readers and
    command lines), so leading ``_`` and ``-`` of the cut are dropped."""
    readable = _UNSAFE.sub("_", relpath).strip("_")[-80:].lstrip("_-")
    digest = hashlib.sha1(relpath.encode("utf-8")).hexdigest()[:8]
    return f"{readable}_{digest}_c{crop_index:04d}" if readable else f"{digest}_c{crop_index:04d}"


def _crop_boxes(
    height: int, width: int, config: BuildConfig, relpath: str
) -> list[tuple[int, int, int, int]]:
    """Crop boxes (top, left, h, w) at even offsets with even sizes inside an H×W image; random
    boxes are drawn from the source's generator (``sample_rng(seed, sample_key(relpath, -1))``,
    made only then)."""
    even_h, even_w = height - height % 2, width - width % 2
    if config.crop is None:
        return [(0, 0, even_h, even_w)]
    size = config.crop
    if size > even_h or size > even_w:
        raise ValueError(f"image {height}×{width} is smaller than the {size}×{size} crop")
    if config.crop_mode is CropMode.TILE:
        return [
            (top, left, size, size)
            for top in range(0, even_h - size + 1, size)
            for left in range(0, even_w - size + 1, size)
        ]
    rng = sample_rng(config.seed, sample_key(relpath, -1))
    tops = rng.integers(0, (even_h - size) // 2 + 1, size=config.crops) * 2
    lefts = rng.integers(0, (even_w - size) // 2 + 1, size=config.crops) * 2
    return [(int(t), int(left), size, size) for t, left in zip(tops, lefts, strict=True)]


def _check_min_side(source: Source, height: int, width: int, config: BuildConfig) -> None:
    """Skip (:class:`~rawpairs.errors.SkippedInputError`) a source whose shorter side, as read,
    is below ``--min-side``."""
    if config.min_side is not None and min(height, width) < config.min_side:
        raise SkippedInputError(
            source.path,
            f"image {height}×{width} is smaller than --min-side {config.min_side}",
        )


def _too_small(height: int, width: int, config: BuildConfig) -> bool:
    """Whether an H×W image cannot hold one ``--crop`` (after trimming to even sides)."""
    crop = config.crop
    return crop is not None and (height - height % 2 < crop or width - width % 2 < crop)


def _fit_crop(source: Source, rgb: np.ndarray, config: BuildConfig) -> np.ndarray:
    """A photo too small for ``--crop``: resized up (Lanczos, the shorter side to the crop) with
    ``--upscale``, else skipped (:class:`~rawpairs.errors.SkippedInputError`)."""
    h, w = rgb.shape[:2]
    if not _too_small(h, w, config):
        return rgb
    assert config.crop is not None
    if not config.upscale:
        raise SkippedInputError(
            source.path,
            f"image {h}×{w} is smaller than the {config.crop}×{config.crop} crop "
            "(--upscale resizes such photos up)",
        )
    scale = config.crop / min(h, w)
    size = (max(config.crop, round(w * scale)), max(config.crop, round(h * scale)))
    if config.max_side is not None and max(size) > config.max_side:
        raise SkippedInputError(
            source.path,
            f"image {h}×{w} resized up to the {config.crop}×{config.crop} crop would exceed "
            f"--max-side {config.max_side}",
        )
    warnings.warn(f"resized up from {h}×{w} to {size[1]}×{size[0]}", UpscaledPhoto, stacklevel=2)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LANCZOS4)


class UpscaledPhoto(UserWarning):
    """A photo smaller than ``--crop`` was resized up to it (``--upscale``): counted by the
    build (``counts.upscaled``), not printed."""


def _resize_to_max_side(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _source_meta(source: Source, sha256: str, height: int, width: int, **extra: Any) -> SourceInfo:
    return SourceInfo(source.relpath, SourceKind(source.kind), sha256, height, width, **extra)


def _whole_jpeg(source: Source, config: BuildConfig, data: bytes) -> Photo | None:
    """The photo of an at-load build whose only sample is the whole JPEG stored as it came,
    checked without decoding its pixels; ``None`` for any other source (then read it)."""
    if config.unprocess is not Unprocess.AT_LOAD or config.crop is not None:
        return None
    photo = read_stored_jpeg(source.path, config.max_pixels, data=data)
    if photo is None or max(photo.height, photo.width) > (config.max_side or math.inf):
        return None
    return photo


def _rgb_samples(source: Source, config: BuildConfig, data: bytes) -> Iterator[Sample]:
    """The samples of a photo whose file holds ``data``."""
    sha256 = hashlib.sha256(data).hexdigest()
    photo = _whole_jpeg(source, config, data) or read_photo(
        source.path, config.max_pixels, data=data
    )
    _check_min_side(source, photo.height, photo.width, config)
    rgb = None
    if photo.rgb is not None:
        rgb = _fit_crop(source, _resize_to_max_side(photo.rgb, config.max_side), config)
    h, w = (photo.height, photo.width) if rgb is None else rgb.shape[:2]
    boxes = _crop_boxes(h, w, config, source.relpath)
    for index, (top, left, ch, cw) in enumerate(boxes):
        key = sample_key(source.relpath, index)
        rng = sample_rng(config.seed, key)
        if config.unprocess is Unprocess.AT_LOAD:
            meta = _at_load_meta(source, config, sha256, key, rng, (h, w), (top, left, ch, cw))
            if rgb is None:  # the whole JPEG, checked, stored as it came
                yield Sample(key, None, None, meta, source.label, ("rgb.jpg", photo.data))
                continue
            view = rgb[top : top + ch, left : left + cw]
            whole = rgb is photo.rgb and photo.as_stored and (ch, cw) == (h - h % 2, w - w % 2)
            member = ("rgb.jpg", photo.data) if whole else _encoded_crop(view, photo.lossy, config)
            yield Sample(key, None, view, meta, source.label, member)
            continue
        crop = np.ascontiguousarray(rgb[top : top + ch, left : left + cw])
        mosaic, camera = simulate_raw(
            crop,
            rng,
            config.priors,
            tone=config.tone,
            gamma=config.gamma,
            noise=config.noise is NoisePlacement.IN_RAW,
        )
        render = RenderInfo(
            RenderMethod.UNPROCESS, config.noise, tone=config.tone, gamma=config.gamma
        )
        src_meta = _source_meta(source, sha256, h, w)
        meta = SampleMeta(key, camera, render, src_meta, Crop(top, left, ch, cw), config.seed)
        yield Sample(key, mosaic, crop, meta, source.label)


def _at_load_meta(
    source: Source,
    config: BuildConfig,
    sha256: str,
    key: str,
    rng: np.random.Generator,
    size: tuple[int, int],
    box: tuple[int, int, int, int],
) -> SampleMeta:
    """The recipe of an at-load sample: the camera and the noise stream's key drawn from ``rng``
    in the order :func:`rawpairs.unprocess.simulate_raw` draws them, so the RAW it implies is the
    one an ``in_build`` sample of the same RGB stores."""
    camera = sample_camera(rng, config.priors)
    noise_key = None
    if config.noise is NoisePlacement.IN_RAW:
        noise_key = f"{int(stream_key(rng)):016x}"
    render = RenderInfo(
        RenderMethod.UNPROCESS,
        config.noise,
        tone=config.tone,
        gamma=config.gamma,
        unprocess=Unprocess.AT_LOAD,
        noise_key=noise_key,
    )
    src_meta = _source_meta(source, sha256, *size)
    return SampleMeta(key, camera, render, src_meta, Crop(*box), config.seed)


def _encoded_crop(crop: np.ndarray, lossy: bool, config: BuildConfig) -> tuple[str, bytes]:
    """An at-load crop's RGB member: JPEG at ``config.jpeg_quality`` (≥ 95) when the source was
    lossy, else PNG (lossless). Measured in docs/benchmarks.md against storing the source's
    bytes with the crop box."""
    crop = np.ascontiguousarray(crop)
    if not lossy:
        return "rgb.png", encode_png(crop, config.png_compression)
    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    if not ok:
        raise ValueError("OpenCV could not encode the RGB crop as JPEG")
    return "rgb.jpg", jpeg.tobytes()


def sample_raw(sample: DecodedSample) -> np.ndarray:
    """A decoded sample's uint16 H×W mosaic: the stored one, or for an at-load sample the one its
    recipe implies (:func:`rawpairs.unprocess.unprocess` of its RGB with its camera, tone and
    gamma; noise from its ``noise_key`` when ``in_raw``, none when ``at_load``). The same bits
    on every call and machine (given the same decoded RGB)."""
    if sample.raw is not None:
        return sample.raw
    render = sample.meta.render
    key = int(render.noise_key, 16) if render.noise_key is not None else None
    return unprocess(
        sample.rgb,
        sample.meta.camera,
        tone=render.tone or DEFAULT_TONE,
        gamma=render.gamma or Gamma.SRGB,
        noise=key is not None,
        noise_key=key,
    )


def _raw_samples(source: Source, config: BuildConfig, sha256: str) -> Iterator[Sample]:
    capture = read_raw(source.path, config.max_pixels)
    camera = capture.camera
    _check_min_side(source, *capture.mosaic.shape, config)
    mosaic, factor = cfa_utils.square_and_bin(capture.mosaic, capture.pixel_aspect, config.max_side)
    if _too_small(*mosaic.shape, config):
        raise SkippedInputError(
            source.path,
            f"mosaic {mosaic.shape[0]}×{mosaic.shape[1]} is smaller than the {config.crop}×"
            f"{config.crop} crop (a mosaic is never resized up: that would invent sensor data)",
        )
    if config.exposure is Exposure.AUTO:  # one exposure policy for both renders
        camera = camera.replace(
            digital_gain=auto_exposure(mosaic, camera),
            provenance={**camera.provenance, "digital_gain": "auto:p99"},
        )
    if config.render is Render.LIBRAW:
        rgb = render_libraw(source.path, digital_gain=camera.digital_gain)
        render = RenderInfo(RenderMethod.LIBRAW, NoisePlacement.IN_RAW)
    else:
        rgb = process(
            mosaic, camera, demosaic=config.demosaic, tone=config.tone, gamma=config.gamma
        )
        render = RenderInfo(
            RenderMethod.RAWPAIRS,
            NoisePlacement.IN_RAW,
            demosaic=config.demosaic,
            tone=config.tone,
            gamma=config.gamma,
        )
    h, w = mosaic.shape
    boxes = _crop_boxes(h, w, config, source.relpath)
    src_meta = _source_meta(
        source,
        sha256,
        h,
        w,
        make=capture.make,
        model=capture.model,
        bin_factor=factor,
        pixel_aspect=capture.pixel_aspect,
    )
    for index, (top, left, ch, cw) in enumerate(boxes):
        key = sample_key(source.relpath, index)
        raw_crop, crop_cfa = cfa_utils.crop(mosaic, camera.cfa, top, left, ch, cw)
        assert crop_cfa is camera.cfa  # even offsets keep the phase
        meta = SampleMeta(key, camera, render, src_meta, Crop(top, left, ch, cw), config.seed)
        rgb_crop = np.ascontiguousarray(rgb[top : top + ch, left : left + cw])
        yield Sample(key, np.ascontiguousarray(raw_crop), rgb_crop, meta, source.label)


def make_samples(source: Source, config: BuildConfig) -> Iterator[Sample]:
    """The samples of one source file, made one at a time in crop order (only one crop's arrays
    live at a time). Raises ``InputError`` for bad files, while iterating.

    A source given by URL (any fsspec file system) is first copied to a local temporary file.
    """
    if source.problem is not None:
        raise UnsupportedInputError(source.path, source.problem)
    if is_url(source.path):
        yield from _make_remote_samples(source, config)
        return
    try:  # a photo is read once (hashed and decoded from memory), a RAW file hashed here
        if source.kind == "rgb":
            with open(source.path, "rb") as f:
                data = f.read()
        else:
            sha256 = sha256_file(source.path)
    except OSError as err:
        raise CorruptInputError(source.path, f"cannot read file ({err.strerror})") from err
    if source.kind == "rgb":
        yield from _rgb_samples(source, config, data)
    elif source.kind == "raw":
        yield from _raw_samples(source, config, sha256)
    else:
        raise ValueError(f"{source.path}: unknown source kind {source.kind!r}")


def _make_remote_samples(source: Source, config: BuildConfig) -> Iterator[Sample]:
    try:
        with fsspec.open(source.path, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as err:
        raise CorruptInputError(source.path, f"cannot read ({err})") from err
    with tempfile.TemporaryDirectory(prefix="rawpairs-src-") as tmp:
        local = Path(tmp) / Path(source.relpath).name
        local.write_bytes(data)
        try:
            yield from make_samples(replace(source, path=str(local)), config)
        except InputError as err:  # name the source, not the temporary copy
            raise type(err)(source.path, err.cause) from err


def error_record(source: Source, err: BaseException) -> dict[str, str]:
    """The ``errors.jsonl`` line of a source that failed with ``err``: path, error type and a
    one-line message (at most :data:`MESSAGE_LIMIT` characters; undecodable bytes escaped)."""
    message = getattr(err, "cause", None) or str(err) or type(err).__name__
    message = one_line(message.replace(f"{source.path}: ", ""), MESSAGE_LIMIT)
    return {"path": source.relpath, "error": type(err).__name__, "message": message}


_DOCUMENTATION = re.compile(r"^(licen[cs]e|copying|copyright|readme|notice)", re.IGNORECASE)


def is_documentation(relpath: str) -> bool:
    """Whether a file is a licence or README (``LICENSE``, ``COPYING.txt``, ``README.md``,
    ``licence-CC0.txt``, or any file in a ``licenses``/``licences`` folder): skipped, not failed,
    and named in the dataset card."""
    parts = relpath.split("/")
    return _DOCUMENTATION.match(parts[-1]) is not None or any(
        p.lower() in ("licenses", "licences") for p in parts[:-1]
    )


def skip_record(source: Source, err: BaseException) -> dict[str, str]:
    """The ``skipped.jsonl`` line of a source left out on purpose: path and reason (one line)."""
    record = error_record(source, err)
    return {"path": record["path"], "reason": record["message"]}


def sample_stream(
    source: Source, config: BuildConfig
) -> Iterator[tuple[dict[str, bytes | str], dict[str, Any]]]:
    """The samples of one source as ``(tar members, manifest row)``, one at a time, in crop
    order. Raises (while iterating) for a bad input: :func:`error_record` describes it."""
    if source.kind == "unknown" and source.problem is None:
        if is_documentation(source.relpath):
            raise SkippedInputError(source.path, "a licence or README file, not an image")
        raise UnsupportedInputError(source.path, "not a RAW or photo file (unknown extension)")
    if config.labels and source.label is None and source.problem is None:
        raise UnsupportedInputError(source.path, "--labels folder: file is not in a class folder")
    for sample in make_samples(source, config):
        yield _encode(sample, config), manifest_row(sample.meta, sample.label)


def _encode(sample: Sample, config: BuildConfig) -> dict[str, bytes | str]:
    if sample.raw is None:
        assert sample.rgb_member is not None
        return encode_at_load_sample(sample.meta, *sample.rgb_member, sample.label)
    return encode_sample(
        sample.meta,
        sample.raw,
        sample.rgb,
        sample.label,
        rgb_format=config.rgb_format,
        jpeg_quality=config.jpeg_quality,
        png_compression=config.png_compression,
    )
