"""rawpairs.schema: the sample format both ways; who imports whom.

inspect --verify against the loader: tests/distill/test_verify_agrees_with_loader.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from codeshape import imported_names, module_trees
from shardkit import CAMERA, members_of, pair, sample_meta, write_shard

from rawpairs.choices import NoisePlacement
from rawpairs.manifest import ShardEntry, index_document, manifest_row, manifest_schema, parse_index
from rawpairs.metadata import (
    SCHEMA_VERSION,
    RenderInfo,
    RenderMethod,
    SampleMeta,
    SourceInfo,
    SourceKind,
)
from rawpairs.sample import sample_key
from rawpairs.schema import SchemaVersionError, decode_sample, encode_sample
from rawpairs.tarwalk import read_shard, split_member_name

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
RAW_FILE = Path(__file__).resolve().parents[1] / "data" / "raw" / "Kodak-DC50-DC50IMG-DC0010S.KDC"


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
            from rawpairs.raw_files import read_raw

            real = read_raw(RAW_FILE).camera.provenance
            assert set(meta.camera.provenance) == set(real) | {"digital_gain"}


# --- who imports whom ----------------------------------------------------------------------------
WRITER = {"rawpairs.build", "rawpairs.engines", "rawpairs.group", "rawpairs.sample"}
WRITER |= {"rawpairs.shards", "rawpairs.discover", "rawpairs.plan", "rawpairs.splits"}
WRITER |= {"rawpairs.resume", "rawpairs.outputs", "rawpairs.records", "rawpairs.schedule"}
WRITER |= {"rawpairs.pool", "rawpairs.ray_pool"}


def test_rawpairs_imports_nothing_from_distill_and_distill_nothing_from_the_writer() -> None:
    for name, tree in module_trees("rawpairs").items():
        assert not {m for m in imported_names(tree) if m.split(".")[0] == "distill"}, name
    for name, tree in module_trees("distill").items():
        assert not imported_names(tree) & WRITER, name
