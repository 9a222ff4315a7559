"""inspect --verify and the distill loader agree: on each broken sample and each broken shard."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from shardkit import CAMERA, make_camera, members_of, sample_meta, write_shard

import distill.data as data
from rawpairs.build import build
from rawpairs.cfa import CFA
from rawpairs.choices import NoisePlacement
from rawpairs.cli import main as cli
from rawpairs.config import BuildConfig
from rawpairs.errors import CorruptInputError
from rawpairs.manifest import ShardEntry, index_document, manifest_row, manifest_schema
from rawpairs.metadata import RenderInfo, RenderMethod, SampleMeta, SourceInfo, SourceKind
from rawpairs.storage import sha256_file
from rawpairs.tarwalk import read_shard
from rawpairs.verify import verify_shards

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
RAW_FILE = Path(__file__).resolve().parents[1] / "data" / "raw" / "Kodak-DC50-DC50IMG-DC0010S.KDC"


# --- verify and the loader agree -------------------------------------------------------------
def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


PICKLE_MARKER = Path(tempfile.gettempdir()) / f"rawpairs-unpickled-{os.getpid()}"


class Payload:
    """Unpickling this creates :data:`PICKLE_MARKER` (what an attacker's command would do)."""

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(PICKLE_MARKER)!r}, 'w').close()",))


def pickled_raw() -> bytes:
    """A ``raw.npy`` holding a pickled object that runs code when loaded with ``allow_pickle``."""
    return npy(np.array([Payload()], dtype=object))


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def edit_json(members: dict[str, bytes], change: Callable[[dict], None]) -> dict[str, bytes]:
    meta = json.loads(members["json"])
    change(meta)
    return {**members, "json": json.dumps(meta).encode()}


def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(meta: dict) -> None:
        *parents, last = path.split(".")
        node = meta
        for p in parents:
            node = node[p]
        node[last] = value

    return change


def huge_png() -> bytes:
    """A valid 12×16 PNG whose header claims 20000×20000 (the CRC is not rechecked)."""
    data = bytearray(members_of(K)["rgb.png"])
    data[16:24] = struct.pack(">II", 20000, 20000)
    return bytes(data)


def tiny_rggb() -> dict[str, bytes]:
    camera = make_camera(CFA.RGGB, (0.0,) * 4, 1023.0, 10)
    return members_of(K, shape=(2, 2), meta=sample_meta(K, camera, 2, 2))


def jpeg_bytes() -> bytes:
    return members_of(K, rgb_format="jpeg")["rgb.jpg"]


def fortran(members: dict[str, bytes]) -> dict[str, bytes]:
    raw = np.load(io.BytesIO(members["raw.npy"]))
    return {**members, "raw.npy": npy(np.asfortranarray(raw))}


def raw_meta(key: str) -> SampleMeta:
    source = SourceInfo(f"{key}.CRW", SourceKind.RAW, "1" * 64, 12, 16, "", "", 1)
    render = RenderInfo(RenderMethod.LIBRAW, NoisePlacement.IN_RAW)
    return replace(sample_meta(key, CAMERA, 12, 16), source=source, render=render)


def big_endian(members: dict[str, bytes]) -> dict[str, bytes]:
    raw = np.load(io.BytesIO(members["raw.npy"]))
    return {**members, "raw.npy": npy(raw.astype(">u2"))}


K = "k0"
VALID = {
    "plain": lambda: members_of(K),
    "odd size": lambda: members_of(K, shape=(13, 17)),
    "jpeg": lambda: members_of(K, rgb_format="jpeg"),
    "label 0": lambda: members_of(K, label=0),
    "extra member": lambda: {**members_of(K), "txt": b"notes"},
    "fortran npy": lambda: fortran(members_of(K)),
    "camera raw, no model": lambda: members_of(K, meta=raw_meta(K)),
    "noise at load": lambda: edit_json(members_of(K), _set("render.noise", "at_load")),
    "smallest GBRG sample (4×2)": lambda: members_of(K, shape=(4, 2)),
}
INVALID = {
    "schema 4": lambda: edit_json(members_of(K), _set("schema_version", 4)),
    "cls 2**40": lambda: {**members_of(K), "cls": str(2**40).encode()},
    "wb_gains 1e300": lambda: edit_json(members_of(K), _set("camera.wb_gains", [1e300, 1.0, 1.0])),
    "digital gain 1e300": lambda: edit_json(members_of(K), _set("camera.digital_gain", 1e300)),
    "xyz_to_cam 1e300": lambda: edit_json(
        members_of(K), _set("camera.xyz_to_cam", [[1e300, 0, 0], [0, 1e300, 0], [0, 0, 1e300]])
    ),
    "noise variance 2": lambda: edit_json(members_of(K), _set("camera.noise_read", 2.0)),
    "schema 2 lacking a null field": lambda: edit_json(
        members_of(K), lambda m: m["source"].pop("make")
    ),
    "schema 2, a photo with a make": lambda: edit_json(members_of(K), _set("source.make", "X")),
    "no version": lambda: edit_json(members_of(K), lambda m: m.pop("schema_version")),
    "unknown field": lambda: edit_json(members_of(K), _set("extra", 1)),
    "bad json": lambda: {**members_of(K), "json": b"{"},
    "deep json": lambda: {**members_of(K), "json": b"[" * 100000},
    "json key differs": lambda: edit_json(members_of(K), _set("key", "other")),
    "crop outside source": lambda: edit_json(members_of(K), _set("crop", [4, 0, 12, 16])),
    "no rgb": lambda: {k: v for k, v in members_of(K).items() if k != "rgb.png"},
    "two rgb": lambda: {**members_of(K), "rgb.jpg": members_of(K, rgb_format="jpeg")["rgb.jpg"]},
    "raw over bit depth": lambda: {**members_of(K), "raw.npy": npy(np.full((12, 16), 1024, "u2"))},
    "raw not crop size": lambda: {**members_of(K), "raw.npy": npy(np.zeros((12, 14), "u2"))},
    "raw big-endian": lambda: big_endian(members_of(K)),
    "raw trailing bytes": lambda: {**members_of(K), "raw.npy": members_of(K)["raw.npy"] + b"x"},
    "raw pickled": lambda: {**members_of(K), "raw.npy": pickled_raw()},
    "rgb gray": lambda: {**members_of(K), "rgb.png": png(np.zeros((12, 16), np.uint8))},
    "rgb alpha": lambda: {**members_of(K), "rgb.png": png(np.zeros((12, 16, 4), np.uint8))},
    "rgb 16-bit": lambda: {**members_of(K), "rgb.png": png(np.zeros((12, 16, 3), np.uint16))},
    "jpeg named png": lambda: {**members_of(K), "rgb.png": jpeg_bytes()},
    "rgb declares 20000²": lambda: {**members_of(K), "rgb.png": huge_png()},
    "rgb truncated": lambda: {**members_of(K), "rgb.png": members_of(K)["rgb.png"][:60]},
    "no whole RGGB block": lambda: edit_json(tiny_rggb(), _set("camera.cfa", "GBRG")),
    "cls negative": lambda: {**members_of(K), "cls": b"-1"},
    "cls text": lambda: {**members_of(K), "cls": b"cat"},
}  # fmt: skip


def write_build(
    folder: Path,
    samples: list[tuple[str, dict[str, bytes]]],
    transform: Callable[[Path], None] | None = None,
) -> None:
    """A complete build folder around one shard (edited by ``transform``) whose bookkeeping
    matches the shard, so that only the shard itself can be at fault."""
    folder.mkdir()
    shard = write_shard(folder / "rawpairs-000000.tar", samples)
    if transform is not None:
        transform(shard)
    try:
        spans = [(s.offset, s.size) for s in read_shard(shard)]
    except CorruptInputError:
        spans = []
    rows = []
    for index, (key, members) in enumerate(samples):
        try:
            meta = SampleMeta.from_dict(json.loads(members["json"]))
        except (ValueError, KeyError, RecursionError):
            meta = sample_meta(key, CAMERA, 12, 16)
        label = int(members["cls"]) if members.get("cls", b"").isdigit() else None
        offset, size = spans[index] if index < len(spans) else (0, 0)
        position = {"shard": shard.name, "index": index, "byte_offset": offset, "size": size}
        rows.append({**manifest_row(meta, label), **position})
    pq.write_table(
        pa.Table.from_pylist(rows, schema=manifest_schema()), folder / "manifest.parquet"
    )
    entry = ShardEntry(shard.name, len(samples), shard.stat().st_size, sha256_file(shard))
    (folder / "index.json").write_text(json.dumps(index_document([entry])))
    counts = {"samples": len(samples), "shards": 1, "errors": 0}
    (folder / "build.json").write_text(json.dumps({"status": "complete", "counts": counts}))
    (folder / "errors.jsonl").write_text("")


def gzip_shard(shard: Path) -> None:
    shard.write_bytes(gzip.compress(shard.read_bytes(), mtime=0))


def gzip_shard_with_bad_crc(shard: Path) -> None:
    """Stored (uncompressed) gzip blocks with bytes flipped mid-stream: only the CRC-32 at the
    end of the stream tells."""
    packed = bytearray(gzip.compress(shard.read_bytes(), compresslevel=0, mtime=0))
    middle = len(packed) // 2
    packed[middle : middle + 16] = bytes(b ^ 0xFF for b in packed[middle : middle + 16])
    shard.write_bytes(bytes(packed))


def add_folder_entry(shard: Path) -> None:
    with tarfile.open(shard) as tar:
        entries = [(info, tar.extractfile(info).read()) for info in tar]  # type: ignore[union-attr]
    folder = tarfile.TarInfo("notes")
    folder.type = tarfile.DIRTYPE
    with tarfile.open(shard, "w") as tar:
        tar.addfile(folder)
        for info, content in entries:
            tar.addfile(info, io.BytesIO(content))


def cut_before_last_sample(shard: Path) -> None:
    offset = [s.offset for s in read_shard(shard)][-1]
    shard.write_bytes(shard.read_bytes()[:offset])


def loads(folder: Path) -> bool:
    """Whether the training loader reads every sample of the folder without an error."""
    loader = data.make_loader(str(folder), batch_size=1, crop=8, teacher_size=8, repeat=False)
    try:
        return len(list(loader)) == sum(1 for _ in read_shard(folder / "rawpairs-000000.tar"))
    except CorruptInputError as err:
        assert "\n" not in str(err)
        return False


@pytest.mark.parametrize("name", [*VALID, *INVALID])
def test_verify_and_the_loader_agree_on_each_sample(tmp_path: Path, name: str) -> None:
    members = {**VALID, **INVALID}[name]()
    folder = tmp_path / "build"
    write_build(folder, [("k1", members_of("k1")), (K, members)])
    PICKLE_MARKER.unlink(missing_ok=True)
    problems = verify_shards(folder)
    assert (not problems) == loads(folder) == (name in VALID), problems
    if name == "raw pickled":  # refused without being unpickled; unpickled, it would run
        assert not PICKLE_MARKER.exists()
        np.load(io.BytesIO(members["raw.npy"]), allow_pickle=True)
        assert PICKLE_MARKER.exists()
        PICKLE_MARKER.unlink()


GOOD = [(f"k{i}", members_of(f"k{i}")) for i in range(3)]
SHARDS = {
    "gzip-compressed": (GOOD, gzip_shard, True),
    "gzip with a bad CRC": (GOOD, gzip_shard_with_bad_crc, False),
    "with a folder entry": (GOOD, add_folder_entry, True),
    "one sample": (GOOD[:1], None, True),
    "repeated member": ([*GOOD, ("k2", {"json": GOOD[2][1]["json"]})], None, False),
    "key twice": ([*GOOD, GOOD[0]], None, False),
    "cut at a member boundary": (GOOD, cut_before_last_sample, False),
    "empty": ([], None, False),
}


@pytest.mark.parametrize("name", SHARDS)
def test_verify_and_the_loader_agree_on_whole_shards(tmp_path: Path, name: str) -> None:
    samples, transform, valid = SHARDS[name]
    folder = tmp_path / "build"
    write_build(folder, samples, transform)
    problems = verify_shards(folder)
    assert (not problems) == loads(folder) == valid, problems


def test_a_thin_photo_is_verified_previewed_and_loaded(tmp_path):
    """A 3×5000 photo gives a 2×5000 sample: verify accepted it, --preview failed naming
    neither shard nor key."""
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(src / "thin.png"), rng.integers(0, 255, (3, 5000, 3), np.uint8))
    out = tmp_path / "out"
    assert build(src, out, BuildConfig(), workers=1).samples == 1
    runner = CliRunner()
    verified = runner.invoke(cli, ["inspect", str(out), "--verify"])
    assert verified.exit_code == 0, verified.output
    preview = tmp_path / "p.png"
    shown = runner.invoke(cli, ["inspect", str(out), "--preview", str(preview)])
    assert shown.exit_code == 0, shown.output
    assert cv2.imread(str(preview)) is not None
    loader = data.make_loader(str(out), batch_size=1, crop=8, teacher_size=8, repeat=False)
    assert len(list(loader)) == 1
