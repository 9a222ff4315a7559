"""What a sample is on the wire: its tar members, and the one encoder and decoder of them.

A sample's members (docs/schema.md; a shard groups them by key, :mod:`rawpairs.tarwalk`):

- ``raw.npy``: uint16 H×W mosaic in sensor counts (``numpy.save`` format, no pickle); absent in
  an *at-load* sample (``render.unprocess == "at_load"``, schema version 3), whose RAW is made by
  the reader from the RGB and the recipe in ``json`` (camera, crop, noise key);
- ``rgb.png`` or ``rgb.jpg``: 8-bit sRGB H×W×3, aligned pixel for pixel with the mosaic (an
  at-load sample's may be the whole source photo, its bytes as they came; ``crop`` applies);
- ``json``: :class:`~rawpairs.metadata.SampleMeta` (camera, render, source, crop, seed, schema
  version), UTF-8;
- ``cls``: optional ASCII class index ≥ 0.

:func:`encode_sample` and :func:`encode_at_load_sample` make the members and
:func:`decode_sample` checks and decodes one sample. The builder, the training loader and
``rawpairs inspect --verify`` all go through these functions, so a shard that ``inspect --verify``
passes is one the loader reads. :func:`hf_features` gives the members' types to Hugging Face
``datasets``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from rawpairs.camera import PROVENANCE_FIELDS, Camera
from rawpairs.choices import RGBFormat, Unprocess
from rawpairs.errors import CorruptInputError
from rawpairs.headers import image_size, npy_header
from rawpairs.messages import one_line
from rawpairs.metadata import SampleMeta, VersionMismatch
from rawpairs.png import encode_png

# Imported where used: Hugging Face datasets (an optional package).

__all__ = [
    "CLS_LIMIT",
    "CLS_MEMBER",
    "GAIN_LIMIT",
    "JSON_MEMBER",
    "JSON_TYPES",
    "MATRIX_LIMIT",
    "NOISE_LIMIT",
    "RAW_MEMBER",
    "RGB_MEMBERS",
    "DecodedSample",
    "SchemaVersionError",
    "decode_sample",
    "encode_at_load_sample",
    "encode_sample",
    "hf_features",
    "rgb_member",
]

RAW_MEMBER = "raw.npy"
JSON_MEMBER = "json"
CLS_MEMBER = "cls"
RGB_MEMBERS = {RGBFormat.PNG: "rgb.png", RGBFormat.JPEG: "rgb.jpg"}  # by --rgb-format


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
        _at_load_rgb_size(meta, image_size(rgb_bytes, rgb_name), rgb_name)
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


def _decode_raw(data: bytes, height: int, width: int, bit_depth: int) -> np.ndarray:
    """``raw.npy`` → uint16 mosaic; its header must declare exactly the metadata's crop size and
    the bytes must hold exactly that many values, so nothing larger is ever allocated."""
    try:
        shape, _, dtype, offset = npy_header(data)
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


def _decode_rgb(data: bytes, name: str, height: int, width: int) -> np.ndarray:
    """The RGB member → uint8 H×W×3 RGB; its declared size must be the mosaic's before decoding."""
    declared = image_size(data, name)
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
    whole = _at_load_rgb_size(meta, image_size(data, name), name)
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
    except VersionMismatch as err:
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
