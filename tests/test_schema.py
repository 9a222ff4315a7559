"""rawpairs.schema: the sample format both ways, and inspect --verify agreeing with the loader."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
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
from conftest import make_camera, sample_meta, write_shard

import distill.data as data
from rawpairs.cfa import CFA
from rawpairs.errors import CorruptInputError
from rawpairs.inspect import verify_shards
from rawpairs.sample import sample_key
from rawpairs.schema import (
    SCHEMA_VERSION,
    NoisePlacement,
    RenderInfo,
    RenderMethod,
    SampleMeta,
    SchemaVersionError,
    ShardEntry,
    SourceInfo,
    SourceKind,
    decode_sample,
    encode_sample,
    index_document,
    manifest_row,
    manifest_schema,
    parse_index,
    read_shard,
    split_member_name,
)
from rawpairs.shards import sha256_file

DOCS = Path(__file__).resolve().parents[1] / "docs" / "schema.md"
RAW_FILE = Path(__file__).resolve().parent / "data" / "raw" / "Kodak-DC50-DC50IMG-DC0010S.KDC"


def pair(height: int = 12, width: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 1024, (height, width), dtype=np.uint16),
        rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
    )


CAMERA = make_camera(CFA.GBRG, (64.0, 60.0, 62.0, 66.0), 1023.0, 10)


def members_of(key: str = "k0", label: int | None = None, **kwargs) -> dict[str, bytes]:
    raw, rgb = pair(*kwargs.pop("shape", (12, 16)))
    meta = kwargs.pop("meta", None) or sample_meta(key, CAMERA, *raw.shape)
    members = encode_sample(meta, raw, rgb, label, **kwargs)
    return {k: v for k, v in members.items() if k != "__key__"}  # type: ignore[misc]


# --- both ways ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rgb_format", ["png", "jpeg"])
@pytest.mark.parametrize("label", [None, 0, 7])
def test_encode_tar_decode_round_trip(tmp_path: Path, rgb_format: str, label: int | None) -> None:
    raw, rgb = pair(14, 22)
    meta = sample_meta("photo_c0001", CAMERA, 14, 22)
    members = encode_sample(meta, raw, rgb, label, rgb_format=rgb_format)
    assert members["__key__"] == "photo_c0001"
    shard = write_shard(
        tmp_path / "s.tar", [("photo_c0001", {k: v for k, v in members.items() if k != "__key__"})]
    )
    (sample,) = read_shard(shard)
    decoded = decode_sample(sample.members, str(shard), sample.key)
    np.testing.assert_array_equal(decoded.raw, raw)
    assert decoded.raw.dtype == np.uint16
    if rgb_format == "png":
        np.testing.assert_array_equal(decoded.rgb, rgb)  # lossless
    else:
        assert decoded.rgb.shape == rgb.shape and "rgb.jpg" in sample.members
    assert decoded.meta == meta and decoded.label == label
    assert decoded.meta.to_json() == members["json"]  # the metadata's bytes round-trip


def test_metadata_round_trips_every_render_and_source_kind() -> None:
    raw_source = SourceInfo("a/b.dng", SourceKind.RAW, "0" * 64, 100, 150, "Canon", "EOS", 2)
    renders = [
        RenderInfo(RenderMethod.RAWPAIRS, NoisePlacement.IN_RAW, "malvar", "none", "2.2"),
        RenderInfo(RenderMethod.LIBRAW, NoisePlacement.IN_RAW),
        RenderInfo(RenderMethod.UNPROCESS, NoisePlacement.AT_LOAD, tone="none", gamma="srgb"),
    ]
    base = sample_meta("k", CAMERA, 12, 16)
    for render in renders:
        meta = replace(base, render=render, source=raw_source)
        assert SampleMeta.from_dict(json.loads(meta.to_json())) == meta
    assert renders[1].to_dict() == {
        "method": "libraw",
        "noise": "in_raw",
        "demosaic": None,
        "tone": None,
        "gamma": None,
    }


def test_member_name_rule() -> None:
    assert split_member_name("dir/key.raw.npy") == ("dir/key", "raw.npy")
    assert split_member_name("key.RGB.PNG") == ("key", "rgb.png")
    assert split_member_name("a.b/key") is None


def test_manifest_row_index_and_schema() -> None:
    meta = sample_meta("k", CAMERA, 12, 16)
    row = manifest_row(meta, 3)
    names = [f.name for f in manifest_schema()]
    assert set(row) | {"shard", "index", "byte_offset", "size"} == set(names)
    assert row["black_level"] == 63.0 and row["cfa"] == "GBRG" and row["label"] == 3
    assert row["make"] == "" and row["render"] == "unprocess"
    entries = [ShardEntry("rawpairs-000000.tar", 2, 4096, "ab" * 32)]
    assert parse_index(json.loads(json.dumps(index_document(entries)))) == entries
    with pytest.raises(ValueError, match="schema version 2, this rawpairs reads 1"):
        parse_index({"schema_version": 2, "shards": []})


def test_another_schema_version_is_one_line_naming_both() -> None:
    members = members_of()
    meta = json.loads(members["json"])
    for version in (0, SCHEMA_VERSION + 1):
        bad = {**members, "json": json.dumps({**meta, "schema_version": version}).encode()}
        with pytest.raises(SchemaVersionError) as err:
            decode_sample(bad, "s.tar", "k0")
        assert str(err.value) == (
            f"s.tar: sample 'k0': written with schema version {version}, this rawpairs reads "
            "schema versions 1, 2 and 3 (rebuild the shards, or use the rawpairs version that "
            "wrote them)"
        )


def test_encoder_refuses_what_the_decoder_would() -> None:
    raw, rgb = pair()
    meta = sample_meta("k", CAMERA, 12, 16)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        encode_sample(meta, raw, rgb[:, :8])
    with pytest.raises(ValueError, match="but the crop is"):
        encode_sample(sample_meta("k", CAMERA, 12, 12), raw, rgb)
    with pytest.raises(ValueError, match="a 3×2 GBRG mosaic holds no whole RGGB 2×2 block"):
        encode_sample(sample_meta("k", CAMERA, 3, 2), raw[:3, :2], rgb[:3, :2])
    with pytest.raises(ValueError, match="class index must be >= 0"):
        encode_sample(meta, raw, rgb, -1)


# --- docs/schema.md ------------------------------------------------------------------------------
def _docs_examples() -> list[dict]:
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 2, "docs/schema.md lost its json examples"
    return [json.loads(b) for b in blocks]


def test_docs_examples_are_what_the_code_writes() -> None:
    """Each ``json`` example in docs/schema.md decodes and re-encodes to the same object: no
    field the code does not write, none missing, every value of the type the code writes."""
    for example in _docs_examples():
        meta = SampleMeta.from_dict(example)
        assert json.loads(meta.to_json()) == example
        assert json.loads(meta.to_json()) == json.loads(json.dumps(example, sort_keys=True))
        path, index = meta.source.path, int(meta.key.rsplit("_c", 1)[1])
        assert sample_key(path, index) == meta.key  # the documented key format
        if meta.source.kind is SourceKind.RAW:  # the provenance keys a camera RAW gets
            from rawpairs.sources import read_raw

            real = read_raw(RAW_FILE).camera.provenance
            assert set(meta.camera.provenance) == set(real) | {"digital_gain"}


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


# --- who imports whom ----------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
WRITER = {"rawpairs.build", "rawpairs.engines", "rawpairs.group", "rawpairs.sample"}
WRITER |= {"rawpairs.shards"}


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module a package's files import (also inside functions), by file."""
    import ast

    found = {}
    for path in sorted((ROOT / package).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        found[path.name] = names
    return found


def test_rawpairs_imports_nothing_from_distill_and_distill_nothing_from_the_writer() -> None:
    for name, modules in imported_modules("rawpairs").items():
        assert not {m for m in modules if m.split(".")[0] == "distill"}, name
    for name, modules in imported_modules("distill").items():
        assert not modules & WRITER, name
