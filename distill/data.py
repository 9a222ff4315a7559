"""Where pairs are read for training: RAW–RGB shards → aligned teacher–student batches.

Data flow (one DataLoader worker; see ``docs/data.md`` for the guarantees and their proofs):

1. :func:`resolve_shards` turns a folder, glob, brace pattern or URL into a shard list.
2. :func:`dealt_shards` deals shards to this (rank, worker) "slot" from the endless sequence of
   per-epoch shard permutations (one pass over the sorted list when ``repeat=False``).
3. :func:`iter_records` walks each tar with :func:`rawpairs.schema.walk_tar` (members grouped by
   key). Samples that arrive while a resumed run replays the batches an earlier run consumed
   are passed on as placeholders whose members are not read (unless still buffered after the
   replay: :func:`read_record`).
4. :func:`buffer_shuffle` shuffles the *undecoded* records with a seeded buffer bounded in
   records (``shuffle_buffer``) and in bytes (``shuffle_bytes`` per process, from the tar headers).
5. :func:`decode_pair` checks and decodes a sample with :func:`rawpairs.schema.decode_sample`
   (the same checks as ``rawpairs inspect --verify``) into a :class:`Pair`.
6. :func:`make_example` crops, flips, re-phases to RGGB, normalises and (optionally) darkens,
   with a generator derived from ``(seed, epoch, key)`` so the result never depends on timing.
   An at-load sample (``rawpairs build --unprocess at_load``: RGB + recipe, no stored RAW) gets
   the same crop and flip of its RGB, and its RAW is made by :mod:`distill.unprocess`: here on
   the CPU, or, with ``raw_on_device``, by the trainer on its device from the batch's
   ``recipe`` (:func:`distill.unprocess.make_raw`).
7. Examples are stacked into batches inside the worker; the DataLoader interleaves workers
   round-robin, which :class:`PairStream` accounts for when resuming.

Units: the student input is linear sensor signal with the black level removed per CFA position
and divided by ``white − black`` (0 = black, 1 = saturation; not clipped); the teacher input is
sRGB in [0, 1].
"""

from __future__ import annotations

import glob
import hashlib
import os
import random
import tarfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.gopen import gopen
from webdataset.shardlists import expand_urls

from distill.config import DEFAULT_SHUFFLE_MIB, STUDENT_INPUTS, LoaderConfig
from rawpairs import cfa as cfa_ops
from rawpairs.camera import Camera
from rawpairs.cfa import CFA
from rawpairs.choices import Gamma, Tone
from rawpairs.errors import CorruptInputError
from rawpairs.noise import add_noise, darken
from rawpairs.rng import key_normals, sample_rng
from rawpairs.schema import NoisePlacement, decode_sample, read_class_map, tar_cause, walk_tar

__all__ = [
    "Pair",
    "PairStream",
    "Record",
    "SmallSampleWarning",
    "buffer_shuffle",
    "check_class_maps",
    "dealt_shards",
    "decode_pair",
    "iter_records",
    "make_example",
    "make_loader",
    "make_loader_from",
    "paired_rggb_crop",
    "read_record",
    "resolve_shards",
    "rggb_black_level",
]

_URL_PREFIXES = ("pipe:", "http://", "https://", "gs://", "s3://", "ais://")
# Domain tags keep the three seed derivations apart even for equal numbers.
_EPOCH_TAG, _SHUFFLE_TAG, _SAMPLE_TAG = 0x45504F43, 0x53485546, 0x53414D50


class SmallSampleWarning(UserWarning):
    """A sample smaller than the crop was zero-padded (black RAW and RGB) at the bottom/right."""


# ---------------------------------------------------------------------------------------------
# Shard lists
# ---------------------------------------------------------------------------------------------
def _is_url(spec: str) -> bool:
    return spec.startswith(_URL_PREFIXES) or ("://" in spec and not spec.startswith("file:"))


def _expand_one(spec: str) -> list[str]:
    paths: list[str] = []
    for item in expand_urls(spec):  # webdataset's spelling: "::" lists, WDS_ variables, braces
        if _is_url(item):
            paths.append(item)
            continue
        local = item.removeprefix("file://").removeprefix("file:")
        # A folder or file that exists is taken by its name (``set[ab]`` is not ``seta``); only
        # a name that exists as neither is a glob pattern.
        if os.path.isdir(local):
            paths.extend(sorted(glob.glob(os.path.join(glob.escape(local), "*.tar"))))
        elif os.path.isfile(local):
            paths.append(local)
        elif glob.has_magic(local):
            paths.extend(sorted(glob.glob(local)))
        elif item != spec:
            raise FileNotFoundError(f"{spec}: shard {local} does not exist")
    return paths


def resolve_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard paths or URLs for a folder (its ``*.tar``, sorted), glob, brace pattern, URL or list.

    A name that exists as a folder or file is taken literally (``set[ab]`` never means
    ``seta``); only a name that exists as neither is expanded as a glob pattern.

    Strings are expanded as webdataset does (``a.tar::b.tar``, ``$WDS_…`` variables, braces); brace
    patterns keep their order, and one naming a local file that does not exist raises
    ``FileNotFoundError`` naming it. Nothing found raises ``FileNotFoundError("no shards found
    at <spec>")``. URLs (``http://``, ``pipe:``, …) are not checked.
    """
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    shards = [s for item in specs for s in _expand_one(os.fspath(item))]
    if not shards:
        raise FileNotFoundError(f"no shards found at {spec}")
    return shards


def _class_map_difference(a: Mapping[str, int], b: Mapping[str, int]) -> str:
    """The first class two maps number differently, in words (``a`` first); a class both
    number is named before one only a single map has."""
    renumbered = sorted(n for n in set(a) & set(b) if a[n] != b[n])
    name = (renumbered or sorted(set(a) ^ set(b)))[0]
    return (
        f"{name!r} is {a.get(name, 'absent')} in the first, {b.get(name, 'absent')} in the second"
    )


def check_class_maps(*specs: str | Sequence[str] | None) -> dict[str, int] | None:
    """The class map shared by every local shard folder of ``specs`` (``None`` entries are
    skipped), as :func:`rawpairs.schema.read_class_map` reads it from ``classes.json`` beside
    the shards; ``None`` when no folder has labels.

    Folders without labels mix with any map (their ``cls`` is −1). Raises ``ValueError`` (one
    line) naming two folders whose maps give a class different ids (or a malformed map) and
    ``FileNotFoundError`` when a spec finds no shard. URLs are not checked.
    """
    maps: dict[str, dict[str, int]] = {}
    for spec in specs:
        if spec is None:
            continue
        folders = {os.path.dirname(s) or "." for s in resolve_shards(spec) if not _is_url(s)}
        for folder in sorted(folders - set(maps)):
            found = read_class_map(folder)
            if found is not None:
                maps[folder] = found
    if not maps:
        return None
    (first, reference), *others = maps.items()
    for folder, found in others:
        if found != reference:
            raise ValueError(
                f"{first} and {folder} number their classes differently (classes.json: "
                f"{_class_map_difference(reference, found)}); rebuild one with "
                f"--class-map {first}"
            )
    return reference


# ---------------------------------------------------------------------------------------------
# Determinism: seeds, shard dealing, shuffle and resume
# ---------------------------------------------------------------------------------------------
def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([_EPOCH_TAG, seed, epoch]).permutation(n)


def dealt_shards(
    shards: Sequence[str], *, seed: int, slot: int, slots: int, repeat: bool
) -> Iterator[tuple[int, str]]:
    """(epoch, shard) pairs for one slot (``slot = rank + world_size · worker``).

    ``repeat=True``: the endless sequence "permutation of epoch 0, permutation of epoch 1, …"
    (each a function of ``(seed, epoch)``) is dealt round-robin over ``slots``; so in every epoch
    each shard goes to exactly one slot, every slot gets shards even when there are fewer shards
    than slots, and no slot runs dry. ``repeat=False``: one pass over ``shards`` in the given
    order, dealt the same way (epoch 0).
    """
    if not 0 <= slot < slots:
        raise ValueError(f"slot {slot} outside [0, {slots})")
    n = len(shards)
    if not repeat:
        for i in range(slot, n, slots):
            yield 0, shards[i]
        return
    i, epoch, order = slot, -1, np.arange(0)
    while True:
        if i // n != epoch:
            epoch = i // n
            order = _epoch_order(n, seed, epoch)
        yield epoch, shards[order[i % n]]
        i += slots


def buffer_shuffle(
    items: Iterable[Any],
    size: int,
    rng: random.Random,
    *,
    max_bytes: int | None = None,
    nbytes: Callable[[Any], int] = lambda item: 0,
) -> Iterator[Any]:
    """Shuffle a stream with a buffer of at most ``size`` items and ``max_bytes`` bytes
    (``nbytes(item)``: an item's size; ``size=1``: the input order).

    While the buffer is within both bounds, each new item replaces a uniformly drawn buffered
    item, which is emitted (the buffer holds ``size`` items); when the new item would take the
    buffer over ``max_bytes``, uniformly drawn items are emitted until it fits (or the buffer is
    empty: at least one item is always held). At the end the rest is emitted in random order.
    The output order depends only on ``rng`` and the sequence of ``nbytes``, never on the items'
    contents or on timing.
    """
    if size < 1:
        raise ValueError(f"shuffle buffer size must be >= 1, got {size}")
    buf: list[Any] = []
    held = 0
    for item in items:
        n = nbytes(item)
        while buf and max_bytes is not None and held + n > max_bytes:
            i = rng.randrange(len(buf))
            out = buf[i]
            buf[i] = buf[-1]
            buf.pop()
            held -= nbytes(out)
            yield out
        if len(buf) < size:
            buf.append(item)
            held += n
            continue
        i = rng.randrange(size)
        out, buf[i] = buf[i], item
        held += n - nbytes(out)
        yield out
    rng.shuffle(buf)
    yield from buf


def _shuffle_rng(seed: int, slot: int, slots: int) -> random.Random:
    state = np.random.SeedSequence([_SHUFFLE_TAG, seed, slot, slots]).generate_state(2)
    return random.Random(int(state[0]) << 32 | int(state[1]))


# ---------------------------------------------------------------------------------------------
# Reading tar shards
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """One undecoded sample: its stream position, epoch, shard, key and members; ``index``: its
    place in the shard (0-based); ``nbytes``: its bytes in the tar (headers included), known
    without reading the members.

    ``members`` is ``None`` for a sample a resumed run passed on unread (the tar reader seeks
    past them in local shards); :func:`read_record` reads them when they are needed after all.
    """

    position: int
    epoch: int
    shard: str
    key: str
    members: Mapping[str, bytes] | None
    index: int = 0
    nbytes: int = 0


@contextmanager
def _open_tar(shard: str) -> Iterator[tarfile.TarFile]:
    """A local shard opened seekable (unread members are skipped by seeking), a URL as a stream."""
    if _is_url(shard):
        with gopen(shard) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            yield tar
    else:
        with tarfile.open(shard, mode="r:*") as tar:
            yield tar


def iter_records(
    shard: str, epoch: int, first_position: int, skip: Callable[[int], bool] | None = None
) -> Iterator[Record]:
    """Samples of one shard as :class:`Record` s numbered from ``first_position``.

    ``skip(position) -> bool`` marks samples whose members must not be read. Members are grouped
    by :func:`rawpairs.schema.walk_tar`; a shard without samples, a repeated member or key, a
    damaged or truncated tar raises :class:`~rawpairs.errors.CorruptInputError` naming the shard.
    """
    local_skip = None if skip is None else (lambda i: skip(first_position + i))
    try:
        with _open_tar(shard) as tar:
            for i, sample in enumerate(walk_tar(tar, shard, local_skip)):
                yield Record(
                    first_position + i, epoch, shard, sample.key, sample.members, i, sample.size
                )
    except (tarfile.TarError, OSError, EOFError) as err:
        raise CorruptInputError(shard, f"unreadable tar: {tar_cause(err)}") from err


def read_record(record: Record) -> Record:
    """``record`` with its members, read again from its shard (a resume passed it on unread but
    it is emitted after the resumed batch). ``CorruptInputError`` if the shard changed."""
    first = record.position - record.index
    for found in iter_records(record.shard, record.epoch, first, lambda p: p != record.position):
        if found.position == record.position:
            if found.key != record.key or found.members is None:
                break
            return found
    raise CorruptInputError(
        record.shard, f"sample {record.key!r} is no longer sample {record.index} of the shard"
    )


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """A decoded sample: uint16 H×W mosaic (counts), uint8 H×W×3 sRGB, camera, class (−1: none).

    An at-load sample has no ``mosaic`` (``None``); its recipe is the camera, ``tone``,
    ``gamma`` and ``noise_key`` (the seeded noise stream, ``None``: no seeded noise)."""

    key: str
    mosaic: np.ndarray | None
    rgb: np.ndarray
    camera: Camera
    cls: int
    noise_at_load: bool = False
    tone: Tone | None = None
    gamma: Gamma | None = None
    noise_key: int | None = None


def decode_pair(members: Mapping[str, bytes], shard: str, key: str) -> Pair:
    """Check and decode one sample with :func:`rawpairs.schema.decode_sample` (docs/schema.md);
    errors (:class:`~rawpairs.errors.CorruptInputError`) name the shard and the key."""
    sample = decode_sample(members, shard, key)
    render = sample.meta.render
    return Pair(
        key=key,
        mosaic=sample.raw,
        rgb=sample.rgb,
        camera=sample.meta.camera,
        cls=-1 if sample.label is None else sample.label,
        noise_at_load=render.noise is NoisePlacement.AT_LOAD,
        tone=render.tone,
        gamma=render.gamma,
        noise_key=int(render.noise_key, 16) if render.noise_key is not None else None,
    )


# ---------------------------------------------------------------------------------------------
# Paired augmentation and normalisation (pure numpy)
# ---------------------------------------------------------------------------------------------
def rggb_black_level(cfa: CFA | str, black_level: Sequence[float]) -> np.ndarray:
    """Black levels (counts, float32 [4]) for the R, G(red row), G(blue row), B sites.

    ``black_level`` is per position of ``cfa`` (row-major 2×2). Flips and crops keep each green
    in the row of its red or blue neighbour, so this mapping holds for every re-phased crop.
    """
    cfa = CFA.parse(cfa)
    bl = np.asarray(black_level, dtype=np.float32).reshape(2, 2)
    ry, rx = cfa.red_position
    by, bx = 1 - ry, 1 - rx
    return np.array([bl[ry, rx], bl[ry, bx], bl[by, rx], bl[by, bx]], dtype=np.float32)


def _origin(extent: int, phase: int, size: int, rng: np.random.Generator | None) -> int:
    """Crop start on axis ``extent`` at parity ``phase``: random if ``rng``, else centred."""
    slack = max(0, (extent - phase - size) // 2)
    step = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
    return phase + 2 * step


def _rggb_window(
    height: int, width: int, cfa: CFA, size: int, rng: np.random.Generator | None
) -> tuple[int, int, int, int]:
    """(top, left, rows, columns) of :func:`paired_rggb_crop`'s window in the trimmed (even),
    possibly flipped H×W sample whose (flipped) pattern is ``cfa``; the same draws from ``rng``."""
    ry, rx = cfa.red_position
    ch, cw = min(size, (height - ry) // 2 * 2), min(size, (width - rx) // 2 * 2)
    if ch <= 0 or cw <= 0:
        raise ValueError(f"a {(height, width)} mosaic holds no whole 2×2 RGGB block")
    return _origin(height, ry, ch, rng), _origin(width, rx, cw, rng), ch, cw


def _flipped_cfa(cfa: CFA) -> CFA:
    """The pattern of an even-width mosaic mirrored left-right (RGGB ↔ GRBG, BGGR ↔ GBRG)."""
    return cfa_ops.flip(np.zeros((2, 2), np.uint8), cfa, 1)[1]


def paired_rggb_crop(
    mosaic: np.ndarray,
    rgb: np.ndarray,
    cfa: CFA | str,
    size: int,
    *,
    hflip: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """An aligned RGGB crop of at most ``size``×``size`` from a mosaic and its RGB (views).

    The sample is trimmed to even height and width (the last row/column goes; the phase is
    kept), mirrored left-right if ``hflip`` (:func:`rawpairs.cfa.flip` gives the new pattern),
    then cropped with its origin on a red site, so the crop is RGGB. The origin is random when
    ``rng`` is given, else centred. A side shorter than ``size`` (after re-phasing) gives a shorter
    crop of even length: the caller pads it. ``size`` must be even.
    """
    if size <= 0 or size % 2:
        raise ValueError(f"crop size must be a positive even number, got {size}")
    if mosaic.shape != rgb.shape[:2]:
        raise ValueError(f"mosaic {mosaic.shape} and RGB {rgb.shape} are not aligned")
    h, w = mosaic.shape[0] // 2 * 2, mosaic.shape[1] // 2 * 2
    mosaic, rgb, cfa = mosaic[:h, :w], rgb[:h, :w], CFA.parse(cfa)
    if hflip:
        mosaic, cfa = cfa_ops.flip(mosaic, cfa, 1)
        rgb = rgb[:, ::-1]
    top, left, ch, cw = _rggb_window(h, w, cfa, size, rng)
    out, phase = cfa_ops.crop(mosaic, cfa, top, left, ch, cw)
    assert phase is CFA.RGGB
    return out, rgb[top : top + ch, left : left + cw]


def _pad(array: np.ndarray, height: int, width: int, axes: tuple[int, int]) -> np.ndarray:
    """Zero-pad ``axes`` at the bottom/right to ``height``×``width`` (keeps the CFA phase)."""
    pad = [(0, 0)] * array.ndim
    pad[axes[0]] = (0, height - array.shape[axes[0]])
    pad[axes[1]] = (0, width - array.shape[axes[1]])
    return np.pad(array, pad)


def make_example(
    pair: Pair,
    rng: np.random.Generator,
    *,
    crop: int,
    teacher_size: int,
    student_input: str = "packed",
    augment: bool = True,
    hflip: bool = True,
    low_light: tuple[float, float] | None = None,
    isp_reference: bool = False,
    fresh_cameras: bool = False,
    raw_on_device: bool = False,
) -> dict[str, Any]:
    """One example: ``raw`` float32 (4, crop/2, crop/2) or (1, crop, crop), ``rgb`` float32
    (3, teacher_size, teacher_size) in [0, 1], ``wb`` float32 (3,) the sample's recorded
    white-balance gains (R, G, B; ``camera.wb_gains``), ``cls`` and ``key``.

    ``isp_reference``: also ``isp`` float32 (3, teacher_size, teacher_size), the crop's RAW (as
    returned in ``raw``, clipped to [0, 1]) through the forward ISP with the sample's metadata
    (:func:`rawpairs.isp.process` from ``linear`` to ``srgb``, its default stages) — the
    evaluation's upper reference.

    ``augment``: random crop origin and, with ``hflip``, a left-right flip with probability 1/2;
    otherwise the centre crop, unflipped. ``low_light=(lo, hi)``: the RAW (which carries its own
    sensor noise) becomes the same capture with a factor drawn uniformly in that range less light:
    :func:`rawpairs.noise.darken` divides it and adds the shot/read noise the camera's
    ``noise_shot``/``noise_read`` lack at that exposure; the RGB target is unchanged. All draws
    come from ``rng`` in a fixed order (flip, crop, load-time noise, low light). A sample built
    with ``--noise at_load`` (``render.noise == "at_load"``) gets fresh ``N(0, shot·x + read)``
    noise here.
    A sample smaller than the crop is zero-padded at the bottom/right in both RAW (after
    normalisation: black) and RGB, with a :class:`SmallSampleWarning`; ``raw`` is not clipped.

    An at-load pair (no ``mosaic``) gets the same flip and crop of its RGB (and of its seeded
    noise); its RAW is made by :func:`distill.unprocess.make_raw` on the CPU here, or, with
    ``raw_on_device``, ``raw`` is zeros and the example carries its ``recipe`` for the trainer.
    ``fresh_cameras``: such a pair gets a camera drawn from ``rawpairs``' default capture priors
    (after the crop draws) and fresh noise, instead of its recorded camera and noise.
    """
    if student_input not in STUDENT_INPUTS:
        raise ValueError(f"student_input must be one of {STUDENT_INPUTS}, got {student_input!r}")
    if pair.mosaic is None:
        return _at_load_example(
            pair, rng, crop=crop, teacher_size=teacher_size, student_input=student_input,
            flip=augment and hflip and bool(rng.random() < 0.5), augment=augment,
            low_light=low_light, isp_reference=isp_reference, fresh_cameras=fresh_cameras,
            raw_on_device=raw_on_device,
        )  # fmt: skip
    camera = pair.camera
    flip = augment and hflip and bool(rng.random() < 0.5)
    mosaic, rgb = paired_rggb_crop(
        pair.mosaic, pair.rgb, camera.cfa, crop, hflip=flip, rng=rng if augment else None
    )
    black = rggb_black_level(camera.cfa, camera.black_level)[:, None, None]
    planes = (cfa_ops.pack(mosaic).astype(np.float32) - black) / (
        np.float32(camera.white_level) - black
    )
    if pair.noise_at_load:
        planes = add_noise(planes, camera.noise_shot, camera.noise_read, rng, out=planes)
    if low_light is not None:
        factor = float(rng.uniform(low_light[0], low_light[1]))
        planes = darken(planes, factor, camera.noise_shot, camera.noise_read, rng)
    rgb_f = rgb.astype(np.float32) / np.float32(255)
    if mosaic.shape != (crop, crop):
        warnings.warn(
            f"sample {pair.key!r} ({pair.mosaic.shape[0]}×{pair.mosaic.shape[1]}, "
            f"{camera.cfa.value}) holds only a {mosaic.shape[0]}×{mosaic.shape[1]} RGGB window, "
            f"less than the {crop}×{crop} crop: zero-padded at the bottom/right",
            SmallSampleWarning,
            stacklevel=2,
        )
        planes = _pad(planes, crop // 2, crop // 2, (1, 2))
        rgb_f = _pad(rgb_f, crop, crop, (0, 1))
    if teacher_size != crop:
        rgb_f = cv2.resize(rgb_f, (teacher_size, teacher_size), interpolation=cv2.INTER_AREA)
    raw = planes if student_input == "packed" else cfa_ops.unpack(planes)[None]
    example = {
        "raw": np.ascontiguousarray(raw, dtype=np.float32),
        "rgb": np.ascontiguousarray(rgb_f.transpose(2, 0, 1)),
        "wb": np.asarray(camera.wb_gains, dtype=np.float32),
        "cls": pair.cls,
        "key": pair.key,
    }
    if isp_reference:
        example["isp"] = _isp_render(planes, camera, teacher_size)
    return example


def _teacher_rgb(rgb: np.ndarray, crop: int, teacher_size: int) -> np.ndarray:
    """uint8 crop → float32 [3, teacher_size, teacher_size] in [0, 1], zero-padded to ``crop``
    at the bottom/right, then resized (INTER_AREA)."""
    rgb_f = _pad(rgb.astype(np.float32) / np.float32(255), crop, crop, (0, 1))
    if teacher_size != crop:
        rgb_f = cv2.resize(rgb_f, (teacher_size, teacher_size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb_f.transpose(2, 0, 1))


def _at_load_example(
    pair: Pair,
    rng: np.random.Generator,
    *,
    crop: int,
    teacher_size: int,
    student_input: str,
    flip: bool,
    augment: bool,
    low_light: tuple[float, float] | None,
    isp_reference: bool,
    fresh_cameras: bool,
    raw_on_device: bool,
) -> dict[str, Any]:
    """:func:`make_example` of an at-load pair (draws: flip, crop, camera, low light, seed)."""
    from distill.unprocess import NOISE_FRESH, NOISE_NONE, NOISE_SEEDED, camera_params
    from rawpairs.priors import sample_camera
    from rawpairs.tone import DEFAULT_TONE

    camera, cfa = pair.camera, pair.camera.cfa
    h, w = pair.rgb.shape[0] // 2 * 2, pair.rgb.shape[1] // 2 * 2
    rgb = pair.rgb[:h, :w]
    if flip:
        rgb, cfa = rgb[:, ::-1], _flipped_cfa(cfa)
    top, left, ch, cw = _rggb_window(h, w, cfa, crop, rng if augment else None)
    rgb = rgb[top : top + ch, left : left + cw]
    seeded = pair.noise_key is not None and not fresh_cameras
    z = None
    if seeded:  # the stream runs row-major over the sample: draw the rows up to the window's end
        z = key_normals(pair.noise_key, (top + ch, pair.rgb.shape[1]))[:, :w]  # type: ignore[arg-type]
        z = (z[:, ::-1] if flip else z)[top:, left : left + cw]
    if fresh_cameras:
        camera = sample_camera(rng)
    factor = float(rng.uniform(low_light[0], low_light[1])) if low_light is not None else 1.0
    if (ch, cw) != (crop, crop):
        warnings.warn(
            f"sample {pair.key!r} ({pair.rgb.shape[0]}×{pair.rgb.shape[1]}, "
            f"{pair.camera.cfa.value}) holds only a {ch}×{cw} RGGB window, less than the "
            f"{crop}×{crop} crop: zero-padded at the bottom/right",
            SmallSampleWarning,
            stacklevel=3,
        )
    params = camera_params(camera, pair.tone or DEFAULT_TONE, pair.gamma or Gamma.SRGB)
    del params["channels"]  # the crop is RGGB
    noise = (
        NOISE_SEEDED if seeded
        else NOISE_FRESH if fresh_cameras or pair.noise_at_load
        else NOISE_NONE
    )  # fmt: skip
    zeros = np.zeros((crop, crop), np.float32)
    recipe = {
        **params,
        "rgb": _pad(np.ascontiguousarray(rgb), crop, crop, (0, 1)),
        "black": rggb_black_level(camera.cfa, camera.black_level),
        "noise": np.int64(noise),
        "z": _pad(z, crop, crop, (0, 1)) if z is not None else zeros,
        "low_light": np.float32(factor),
        "extent": np.array([ch, cw], np.int64),
        "seed": int(rng.integers(0, 2**63)),
    }  # fmt: skip
    shape = (4, crop // 2, crop // 2) if student_input == "packed" else (1, crop, crop)
    example: dict[str, Any] = {
        "raw": np.zeros(shape, np.float32),
        "rgb": _teacher_rgb(rgb, crop, teacher_size),
        "wb": np.asarray(camera.wb_gains, dtype=np.float32),
        "cls": pair.cls,
        "key": pair.key,
        "recipe": recipe,
    }
    if raw_on_device:
        return example
    from distill.unprocess import make_raw

    planes = make_raw(torch.zeros((1, 4, crop // 2, crop // 2)), _recipe_batch([recipe], [0]))
    planes_np = planes[0].numpy()
    example["raw"] = planes_np if student_input == "packed" else cfa_ops.unpack(planes_np)[None]
    del example["recipe"]
    if isp_reference:
        example["isp"] = _isp_render(planes_np, replace(camera, cfa=CFA.RGGB), teacher_size)
    return example


def _recipe_batch(recipes: list[dict[str, Any]], rows: list[int]) -> dict[str, torch.Tensor]:
    """The batch ``recipe`` (:data:`distill.unprocess.RECIPE_KEYS`) of at-load examples at
    ``rows``; ``seed`` (of the fresh-noise generator) is a function of theirs."""
    batch = {
        name: torch.from_numpy(np.stack([np.asarray(r[name]) for r in recipes]))
        for name in recipes[0]
        if name != "seed"
    }
    state = np.random.SeedSequence([r["seed"] for r in recipes]).generate_state(2, np.uint32)
    batch["seed"] = torch.tensor(int(state[0]) << 31 | int(state[1]) >> 1, dtype=torch.int64)
    batch["rows"] = torch.tensor(rows, dtype=torch.int64)
    return batch


def _isp_render(planes: np.ndarray, camera: Camera, size: int) -> np.ndarray:
    """RGGB planes (normalised, clipped here to [0, 1]) → forward-ISP sRGB, float32 3×size×size."""
    from rawpairs.isp import process

    mosaic = cfa_ops.unpack(np.clip(planes, 0, 1).astype(np.float32))
    rgb = process(mosaic, replace(camera, cfa=CFA.RGGB), start="linear", stop="srgb")
    if rgb.shape[0] != size:
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# The stream and its loader
# ---------------------------------------------------------------------------------------------
def _collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    batch = {
        "raw": torch.from_numpy(np.stack([e["raw"] for e in examples])),
        "rgb": torch.from_numpy(np.stack([e["rgb"] for e in examples])),
        "wb": torch.from_numpy(np.stack([e["wb"] for e in examples])),
        "cls": torch.tensor([e["cls"] for e in examples], dtype=torch.int64),
        "key": [e["key"] for e in examples],
    }
    if "isp" in examples[0]:
        batch["isp"] = torch.from_numpy(np.stack([e["isp"] for e in examples]))
    rows = [i for i, e in enumerate(examples) if "recipe" in e]
    if rows:
        batch["recipe"] = _recipe_batch([examples[i]["recipe"] for i in rows], rows)
    return batch


class PairStream(IterableDataset):
    """Batches of teacher–student examples for one rank; each DataLoader worker makes whole batches.

    The DataLoader takes batches from its ``workers`` workers round-robin, so global batch ``b``
    is batch ``b // workers`` of worker ``b % workers``. To resume at ``start_batch = k``, worker
    ``i`` plays the role of worker ``(i + k) % workers`` of the fresh run and skips the batches
    that worker had already made (see ``docs/data.md``). Use it through :func:`make_loader`.
    """

    def __init__(
        self,
        shards: Sequence[str],
        *,
        batch_size: int,
        seed: int,
        workers: int,
        rank: int,
        world_size: int,
        start_batch: int,
        crop: int,
        teacher_size: int,
        student_input: str,
        hflip: bool,
        low_light: tuple[float, float] | None,
        shuffle_buffer: int,
        shuffle_bytes: int,
        repeat: bool,
        isp_reference: bool = False,
        fresh_cameras: bool = False,
        raw_on_device: bool = False,
    ) -> None:
        super().__init__()
        self.isp_reference = isp_reference
        self.fresh_cameras = fresh_cameras
        self.raw_on_device = raw_on_device
        self.shards = list(shards)
        self.batch_size = batch_size
        self.seed = seed
        self.workers = workers
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.crop = crop
        self.teacher_size = teacher_size
        self.student_input = student_input
        self.hflip = hflip
        self.low_light = low_light
        self.shuffle_buffer = shuffle_buffer if repeat else 1
        self.shuffle_bytes = max(1, shuffle_bytes // workers)  # per worker
        self.repeat = repeat

    def _records(self, slot: int, slots: int, skip: Callable[[int], bool]) -> Iterator[Record]:
        position = 0
        for epoch, shard in dealt_shards(
            self.shards, seed=self.seed, slot=slot, slots=slots, repeat=self.repeat
        ):
            # A stream reads past a skipped sample anyway, and could not read it again.
            for record in iter_records(shard, epoch, position, None if _is_url(shard) else skip):
                yield record
            position = record.position + 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.workers:
            raise RuntimeError(f"PairStream built for {self.workers} workers runs on {workers}")
        role = (worker + self.start_batch) % workers
        n_skip = len(range(role, self.start_batch, workers)) * self.batch_size
        slot, slots = self.rank + self.world_size * role, self.world_size * workers
        # A record that arrives while the first n_skip outputs (the batches made before
        # start_batch) are being replayed is passed on unread; the few of them still buffered
        # when the replay ends are read when they are emitted (docs/data.md).
        emitted = 0
        records = buffer_shuffle(
            self._records(slot, slots, lambda position: emitted < n_skip),
            self.shuffle_buffer,
            _shuffle_rng(self.seed, slot, slots),
            max_bytes=self.shuffle_bytes,
            nbytes=lambda record: record.nbytes,
        )
        batch: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            emitted = index + 1
            if index < n_skip:
                continue
            if record.members is None:
                record = read_record(record)
            assert record.members is not None
            pair = decode_pair(record.members, record.shard, record.key)
            batch.append(
                make_example(
                    pair,
                    sample_rng(_SAMPLE_TAG, self.seed, record.epoch, _key_hash(record.key)),
                    crop=self.crop,
                    teacher_size=self.teacher_size,
                    student_input=self.student_input,
                    augment=self.repeat,
                    hflip=self.hflip,
                    low_light=self.low_light,
                    isp_reference=self.isp_reference,
                    fresh_cameras=self.fresh_cameras,
                    raw_on_device=self.raw_on_device,
                )
            )
            if len(batch) == self.batch_size:
                yield _collate(batch)
                batch = []
        if batch:
            yield _collate(batch)


def make_loader_from(shards: str | Sequence[str], config: LoaderConfig) -> DataLoader:
    """:func:`make_loader` with the settings of a :class:`distill.config.LoaderConfig`."""
    return make_loader(shards, **asdict(config))


def make_loader(
    shards: str | Sequence[str],
    *,
    batch_size: int,
    seed: int = 0,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
    crop: int = 224,
    teacher_size: int = 224,
    student_input: str = "packed",
    hflip: bool = True,
    low_light: tuple[float, float] | None = None,
    shuffle_buffer: int = 256,
    shuffle_bytes: int = DEFAULT_SHUFFLE_MIB * 2**20,
    repeat: bool = True,
    isp_reference: bool = False,
    fresh_cameras: bool = False,
    raw_on_device: bool = False,
) -> DataLoader:
    """Batches of aligned RAW (student) / RGB (teacher) examples from RAW–RGB pair shards.

    Each batch: ``raw`` float32 [B, 4, crop/2, crop/2] (``"packed"``, RGGB planes) or
    [B, 1, crop, crop] (``"mosaic"``, RGGB phase), black level removed per CFA position and divided
    by ``white − black`` (not clipped); ``rgb`` float32 [B, 3, teacher_size, teacher_size], sRGB in
    [0, 1]; ``wb`` float32 [B, 3], each sample's recorded white-balance gains (R, G, B);
    ``cls`` int64 [B] (−1: no label); ``key`` list[str]; with ``isp_reference`` also ``isp``
    float32 [B, 3, teacher_size, teacher_size], the RAW through the forward ISP
    (:func:`make_example`).

    At-load samples (``rawpairs build --unprocess at_load``) mix freely with stored ones: their
    RAW is made in the worker on the CPU, or with ``raw_on_device`` left to the consumer: their
    ``raw`` rows are zeros and the batch has a ``recipe`` (tensors, one row per at-load example,
    :data:`distill.unprocess.RECIPE_KEYS`) that :func:`distill.unprocess.make_raw` turns into
    those rows on any device (the trainer does). ``fresh_cameras``: at-load samples get a new
    camera and noise each epoch (:func:`make_example`).

    ``repeat=True``: an endless, shuffled, augmented stream (random crop, flips); the trainer stops
    it after its number of steps. ``repeat=False``: one pass, in shard order, centre crops, no flip;
    the last batch of each worker may be short. Deterministic for given (shards, seed, rank,
    world_size, num_workers); the batches from ``start_batch`` on equal those of a run started at 0
    from that batch on. Shards are split by rank, then by worker, without duplicates.

    The shuffle buffer of each worker holds at most ``shuffle_buffer`` undecoded records and
    ``shuffle_bytes / max(1, num_workers)`` bytes (always at least one record).
    """
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("seed", seed, 0),
        ("num_workers", num_workers, 0),
        ("world_size", world_size, 1),
        ("start_batch", start_batch, 0),
        ("teacher_size", teacher_size, 1),
        ("shuffle_buffer", shuffle_buffer, 1),
        ("shuffle_bytes", shuffle_bytes, 1),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    if crop <= 0 or crop % 2:
        raise ValueError(f"crop must be a positive even number, got {crop}")
    if student_input not in STUDENT_INPUTS:
        raise ValueError(f"student_input must be one of {STUDENT_INPUTS}, got {student_input!r}")
    if low_light is not None:
        lo, hi = low_light
        if not 1 <= lo <= hi:
            raise ValueError(f"low_light factors must satisfy 1 <= min <= max, got {low_light}")
    if raw_on_device and isp_reference:
        raise ValueError("isp_reference needs the RAW in the loader: pass raw_on_device=False")
    if start_batch and not repeat and num_workers > 1:
        raise ValueError(
            "start_batch needs repeat=True or num_workers <= 1: a single pass ends unevenly "
            "across workers, so its batch numbers do not follow the round-robin order"
        )
    dataset = PairStream(
        resolve_shards(shards),
        batch_size=batch_size,
        seed=seed,
        workers=max(1, num_workers),
        rank=rank,
        world_size=world_size,
        start_batch=start_batch,
        crop=crop,
        teacher_size=teacher_size,
        student_input=student_input,
        hflip=hflip,
        low_light=None if low_light is None else (float(low_light[0]), float(low_light[1])),
        shuffle_buffer=shuffle_buffer,
        shuffle_bytes=shuffle_bytes,
        repeat=repeat,
        isp_reference=isp_reference,
        fresh_cameras=fresh_cameras,
        raw_on_device=raw_on_device,
    )
    return DataLoader(dataset, batch_size=None, num_workers=num_workers)
