"""``rawpairs build --unprocess at_load``: the sample format, its checks, ``materialize``, and the
loader/trainer path that makes the RAW from the recipe (issue 18)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from skimage import data

from distill.data import make_loader, make_loader_from
from distill.unprocess import make_raw
from rawpairs.build import build
from rawpairs.cli import main
from rawpairs.config import BuildConfig
from rawpairs.materialize import MaterializeError, materialize
from rawpairs.preview import write_preview
from rawpairs.schema import decode_sample
from rawpairs.tarwalk import read_shard
from rawpairs.verify import verify_shards


def write_photos(src: Path) -> None:
    """Three photos (JPEG with an odd height, JPEG, PNG with odd sides) and a truncated JPEG."""
    src.mkdir(parents=True)
    for name, photo, size in (
        ("astronaut.jpg", data.astronaut(), (250, 187)),
        ("chelsea.jpg", data.chelsea(), (200, 150)),
        ("coffee.png", data.coffee(), (121, 91)),
    ):
        bgr = cv2.cvtColor(cv2.resize(photo, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
        quality = [cv2.IMWRITE_JPEG_QUALITY, 90] if name.endswith(".jpg") else []
        cv2.imwrite(str(src / name), bgr, quality)
    (src / "broken.jpg").write_bytes((src / "chelsea.jpg").read_bytes()[:3000])


def shard_hashes(out: Path) -> list[str]:
    return [s["sha256"] for s in json.loads((out / "index.json").read_text())["shards"]]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("at_load") / "src"
    write_photos(src)
    return src


@pytest.fixture(scope="module")
def builds(photos: Path) -> dict[str, Path]:
    """Whole-photo builds of ``photos``: in_build and at_load, each with noise in_raw and
    at_load."""
    out = {}
    for unprocess in ("in_build", "at_load"):
        for noise in ("in_raw", "at_load"):
            folder = photos.parent / f"{unprocess}-{noise}"
            build(photos, folder, BuildConfig(unprocess=unprocess, noise=noise), workers=1)
            out[f"{unprocess}-{noise}"] = folder
    return out


def samples(folder: Path) -> dict[str, object]:
    return {
        t.key: decode_sample(t.members, path.name, t.key)  # type: ignore[arg-type]
        for path in sorted(folder.glob("*.tar"))
        for t in read_shard(path)
    }


# Shard SHA-256 of in_build builds of write_photos made by the code before issue 18 (commit
# a9aebc3): the option must change nothing about in_build shards.
BASE_HASHES = {
    "whole": [
        "0b95b0c79c503db82024322921f9fb3a15f4307f409b9ec6322a309834585079",
        "54b803afe63f0d5c78c791a72e5f78b1f2611994da5f904ef5e193573d2de35f",
        "b3f592abff8b2070bf3260cfd98d84b4ff07363b6b11ad5e342c3ba865f35807",
    ],
    "crops": [
        "3eb737a5618119e1fed3bca14450cd2200a25028d2a9e031df8e8c948531bd1b",
        "9cfaa5ed5d2a0fe998fbf9b405846d4c4d21df4316e3bfddbf3f7fe4302a58e9",
        "1efb1a7d272e28593cad72dd158a4a30a67617430b64e703ccc235ddc0a4ccf4",
    ],
}


@pytest.mark.parametrize("name", sorted(BASE_HASHES))
def test_in_build_shards_are_byte_identical_to_the_base_commit(photos: Path, tmp_path: Path, name):
    config = BuildConfig() if name == "whole" else BuildConfig(crop=64, crops=2, noise="at_load")
    build(photos, tmp_path / "out", config, workers=1)
    assert shard_hashes(tmp_path / "out") == BASE_HASHES[name]


def test_at_load_sample_stores_the_jpeg_as_it_came_and_the_recipe(builds, photos):
    folder = builds["at_load-in_raw"]
    members = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for info in tar:
                members[info.name] = tar.extractfile(info).read()  # type: ignore[union-attr]
    key = next(k.split(".")[0] for k in members if k.startswith("astronaut"))
    assert sorted(n.split(".", 1)[1] for n in members if n.startswith(key)) == ["json", "rgb.jpg"]
    assert members[f"{key}.rgb.jpg"] == (photos / "astronaut.jpg").read_bytes()
    meta = json.loads(members[f"{key}.json"])
    assert meta["schema_version"] == 3 and meta["crop"] == [0, 0, 186, 250]
    assert meta["render"]["unprocess"] == "at_load" and len(meta["render"]["noise_key"]) == 16
    coffee = next(n for n in members if n.startswith("coffee") and n.endswith(".rgb.png"))
    assert cv2.imdecode(np.frombuffer(members[coffee], np.uint8), 1).shape == (90, 120, 3)
    errors = (folder / "errors.jsonl").read_text()
    assert "broken.jpg" in errors and "truncated JPEG" in errors  # checked once, at build
    at_load_bytes = sum(p.stat().st_size for p in folder.glob("*.tar"))
    in_build_bytes = sum(p.stat().st_size for p in builds["in_build-in_raw"].glob("*.tar"))
    assert at_load_bytes < in_build_bytes / 4


@pytest.mark.parametrize("noise", ["in_raw", "at_load"])
def test_the_implied_raw_is_the_in_build_raw(builds, noise):
    """Whole photos: the RAW an at-load sample implies equals, bit for bit, the one an
    in_build build of the same photo stores (same camera, same noise stream)."""
    stored, at_load = samples(builds[f"in_build-{noise}"]), samples(builds[f"at_load-{noise}"])
    assert sorted(stored) == sorted(at_load)
    from rawpairs.sample import sample_raw

    for key, sample in at_load.items():
        assert sample.raw is None  # type: ignore[attr-defined]
        np.testing.assert_array_equal(sample_raw(sample), stored[key].raw)  # type: ignore
        np.testing.assert_array_equal(sample.rgb, stored[key].rgb)  # type: ignore[attr-defined]
        assert sample.meta.camera == stored[key].meta.camera  # type: ignore[attr-defined]


def test_jpegs_that_decode_otherwise_are_re_encoded(tmp_path):
    """A JPEG turned a quarter by its EXIF orientation (declared 80×160, upright 160×80) or
    whose 1/8 scale is square is not stored as it came unless a full decode shows it is the
    image: the at-load sample's RGB is the upright photo either way."""
    from PIL import Image

    from rawpairs.photos import read_rgb, read_stored_jpeg

    src = tmp_path / "src"
    src.mkdir()
    pixels = cv2.resize(data.astronaut(), (160, 80), interpolation=cv2.INTER_AREA)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    image.save(src / "turned.jpg", exif=exif.tobytes(), quality=90)
    square = cv2.cvtColor(pixels[:, :78], cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(src / "square.jpg"), square, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert read_stored_jpeg(src / "turned.jpg") is None
    assert read_stored_jpeg(src / "square.jpg") is None
    build(src, tmp_path / "out", BuildConfig(unprocess="at_load"), workers=1)
    assert verify_shards(tmp_path / "out") == []
    got = {s.meta.source.path: s for s in samples(tmp_path / "out").values()}  # type: ignore
    turned = got["turned.jpg"]
    assert turned.rgb.shape == (160, 80, 3)
    error = np.abs(turned.rgb.astype(int) - read_rgb(src / "turned.jpg"))
    assert error.mean() < 1.5  # re-encoded at quality 95
    assert got["square.jpg"].meta.crop.to_list() == [0, 0, 80, 78]
    np.testing.assert_array_equal(got["square.jpg"].rgb, read_rgb(src / "square.jpg"))


def test_verify_and_preview_read_at_load_samples(builds, tmp_path):
    assert verify_shards(builds["at_load-in_raw"]) == []
    sheet = write_preview(builds["at_load-in_raw"], tmp_path / "p.png", n=3)
    assert cv2.imread(str(sheet)).shape[0] == 3 * 256


def _members(folder: Path) -> dict[str, bytes]:
    """The members of the first at-load sample of ``folder`` (the astronaut JPEG)."""
    with tarfile.open(sorted(folder.glob("*.tar"))[0]) as tar:
        got = {i.name.split(".", 1)[1]: tar.extractfile(i).read() for i in tar}  # type: ignore
    return got


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: {**m, "raw.npy": b"x"}, "an at-load sample (render.unprocess at_load) has a"),
        (lambda m: {"json": m["json"]}, "no rgb.png or rgb.jpg member"),
        (lambda m: {**m, "rgb.jpg": m["rgb.jpg"][:400] + b"\0" * 99}, "cannot be decoded"),
        (lambda m: {**m, "rgb.jpg": cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1]
                    .tobytes()}, "rgb.jpg is 8×8, neither the 186×250 crop nor the 187×250"),
        (lambda m: {**m, "json": m["json"].replace(b'"noise_key": "', b'"noise_key": "x')},
         "noise_key must be 16 hex digits"),
        (lambda m: {**m, "json": m["json"].replace(b'"schema_version": 3', b'"schema_version": 2')},
         "render (unprocess) has unknown fields"),
    ],
)  # fmt: skip
def test_damaged_at_load_samples_are_refused_in_one_line(builds, edit, message):
    from rawpairs.errors import CorruptInputError

    members = edit(_members(builds["at_load-in_raw"]))
    key = json.loads(members["json"])["key"]
    with pytest.raises(CorruptInputError) as err:
        decode_sample(members, "s.tar", key)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("noise", ["in_raw", "at_load"])
def test_materialize_gives_the_in_build_shards(builds, tmp_path, noise):
    """Whole-photo JPEG/PNG samples: materialised at-load shards are byte-identical to the
    in_build build of the same photos (shards, manifest, index), and verify."""
    out = tmp_path / "m"
    made = materialize(builds[f"at_load-{noise}"], str(out))
    assert made == 3
    reference = builds[f"in_build-{noise}"]
    for name in ("manifest.parquet", "index.json", "errors.jsonl"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert shard_hashes(out) == shard_hashes(reference)
    assert verify_shards(out) == []
    again = tmp_path / "m2"
    materialize(builds[f"at_load-{noise}"], str(again))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == {
        p.name: p.read_bytes() for p in again.iterdir() if p.is_file()
    }


def test_materialize_refuses_a_folder_in_use(builds, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("x")
    with pytest.raises(MaterializeError, match="not empty"):
        materialize(builds["at_load-in_raw"], str(tmp_path / "x"))
    result = CliRunner().invoke(main, ["materialize", str(tmp_path / "none"), str(tmp_path / "y")])
    assert result.exit_code == 2 and "not a finished rawpairs build" in result.output


def _batches(folder: Path, n: int, **kwargs) -> list[dict]:
    loader = make_loader(
        sorted(folder.glob("*.tar")), batch_size=3, crop=64, teacher_size=48, seed=5, **kwargs
    )
    iterator = iter(loader)
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("student_input", ["packed", "mosaic"])
def test_loader_makes_what_it_makes_for_the_materialised_sample(builds, tmp_path, student_input):
    """The loader's example of an at-load sample (RAW made on the CPU in the worker, or by the
    consumer from the batch's recipe) equals its example of the materialised sample: the same
    crop, flip and RGB; the RAW within one count."""
    out = tmp_path / "m"
    materialize(builds["at_load-in_raw"], str(out))
    kwargs = {"student_input": student_input, "low_light": None}
    stored = _batches(out, 3, **kwargs)
    in_worker = _batches(builds["at_load-in_raw"], 3, **kwargs)
    on_device = _batches(builds["at_load-in_raw"], 3, raw_on_device=True, **kwargs)
    for a, b, c in zip(stored, in_worker, on_device, strict=True):
        assert a["key"] == b["key"] == c["key"]
        assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["rgb"], c["rgb"])
        assert "recipe" not in b and int(c["recipe"]["rows"].numel()) == 3
        made = make_raw(c["raw"], c["recipe"], student_input)
        assert torch.allclose(a["raw"], b["raw"], atol=1.01 / 3839)
        assert torch.allclose(b["raw"], made, atol=1e-6)
        assert torch.equal(a["wb"], b["wb"])


def test_mixed_shards_and_fresh_noise(builds):
    """In_build and at-load shards in one loader: only at-load rows carry a recipe. Fresh
    (at_load) noise differs between epochs; fresh cameras change the camera; both
    deterministic."""
    mixed = sorted(builds["in_build-in_raw"].glob("*.tar")) + sorted(
        builds["at_load-at_load"].glob("*.tar")
    )
    loader = make_loader(mixed, batch_size=4, crop=64, teacher_size=64, seed=1, raw_on_device=True)
    batch = next(iter(loader))
    rows = batch["recipe"]["rows"].tolist()
    assert 0 < len(rows) < 4 or len(rows) == 4
    assert all(batch["raw"][i].abs().sum() == 0 for i in rows)
    made = make_raw(batch["raw"], batch["recipe"])
    assert all(made[i].abs().sum() > 0 for i in rows)
    keep = [i for i in range(4) if i not in rows]
    assert torch.equal(made[keep], batch["raw"][keep])

    fresh = _batches(builds["at_load-at_load"], 3, shuffle_buffer=1, hflip=False)
    again = _batches(builds["at_load-at_load"], 3, shuffle_buffer=1, hflip=False)
    by_epoch: dict[str, list[torch.Tensor]] = {}
    for a, b in zip(fresh, again, strict=True):
        assert torch.equal(a["raw"], b["raw"])  # deterministic
        for key, raw in zip(a["key"], a["raw"], strict=True):
            by_epoch.setdefault(key, []).append(raw)
    assert any(len(v) > 1 and not torch.equal(v[0], v[1]) for v in by_epoch.values())

    plain = _batches(builds["at_load-in_raw"], 2)
    new = _batches(builds["at_load-in_raw"], 2, fresh_cameras=True)
    assert all(torch.equal(p["rgb"], n["rgb"]) for p, n in zip(plain, new, strict=True))
    assert not torch.equal(plain[0]["wb"], new[0]["wb"])


def test_build_json_of_in_build_builds_has_no_unprocess_key(builds):
    config = json.loads((builds["in_build-in_raw"] / "build.json").read_text())["config"]
    assert "unprocess" not in config
    at_load = json.loads((builds["at_load-in_raw"] / "build.json").read_text())["config"]
    assert at_load["unprocess"] == "at_load"
    assert BuildConfig.from_dict(at_load).unprocess == "at_load"


def test_cli_flag(photos, tmp_path):
    result = CliRunner().invoke(
        main,
        ["build", "--src", str(photos), "--out", str(tmp_path / "o"), "--unprocess", "at_load",
         "--crop", "64", "--crops", "2", "--workers", "1", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "6 samples" in result.output and verify_shards(tmp_path / "o") == []
    for sample in samples(tmp_path / "o").values():
        assert sample.rgb.shape == (64, 64, 3)  # type: ignore[attr-defined]
    digest = hashlib.sha256((tmp_path / "o" / "index.json").read_bytes()).hexdigest()
    assert len(digest) == 64


def test_training_on_mixed_shards_makes_the_raw_in_the_trainer(builds, tmp_path):
    """Two distillation steps over in_build + at-load shards (fresh cameras on); held-out
    scoring of at-load shards (the loader makes their RAW on the CPU)."""
    from distill.evaluate import evaluate
    from distill.train import TrainConfig, train
    from distill.trainer import Trainer

    shards = [str(p) for name in ("in_build-in_raw", "at_load-at_load")
              for p in sorted(builds[name].glob("*.tar"))]  # fmt: skip
    config = TrainConfig(
        shards=shards, out=str(tmp_path / "run"), steps=2, crop=64, warmup_steps=1,
        batch_size=4, num_workers=0, shuffle_buffer=4, progress=False, device="cpu",
        fresh_cameras=True,
    )  # fmt: skip
    trainer = Trainer(config)
    loader = make_loader_from(shards, config.loader(seed=0, rank=0, world_size=1, start_batch=0))
    batch = next(iter(loader))
    raw = trainer._to_device(batch)[0]
    rows = batch["recipe"]["rows"]
    assert rows.numel() > 0 and bool((raw[rows].abs().sum(dim=(1, 2, 3)) > 0).all())
    summary = train(config)
    assert summary["steps"] == 2 and all(np.isfinite(summary["losses"]))
    held_out = str(builds["at_load-at_load"])
    scores = evaluate(trainer.student, trainer.teacher, held_out, batch_size=4, crop=64)
    assert scores["samples"] == 3 and 0 <= scores["student"]["top1_agreement"] <= 1


def _tree(folder: str) -> dict[str, bytes]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(folder)
    names = ("index.json", "errors.jsonl", "manifest.parquet")
    return {
        p.rsplit("/", 1)[1]: fs.cat_file(p)
        for p in fs.find(root)
        if p.endswith(".tar") or p.rsplit("/", 1)[1] in names
    }


def test_fsspec_source_and_output_equal_a_local_at_load_build(photos, builds):
    """An at-load build from memory:// into memory:// writes the local build's bytes (the
    source JPEG's bytes still stored as they came)."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in photos.iterdir():
        fs.pipe_file(f"/at-load-src/{path.name}", path.read_bytes())
    out = "memory:///at-load-out"
    build("memory:///at-load-src", out, BuildConfig(unprocess="at_load"), workers=1)
    try:
        assert _tree(out) == _tree(str(builds["at_load-in_raw"]))
    finally:
        fs.rm("/at-load-src", recursive=True)
        fs.rm("/at-load-out", recursive=True)


def test_ray_writes_the_local_at_load_bytes(photos, builds, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (rawpairs[ray])")
    ray.init(address="local", num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False)
    try:
        out = tmp_path / "ray"
        build(photos, out, BuildConfig(unprocess="at_load"), workers=2, engine="ray")
    finally:
        ray.shutdown()
    assert _tree(str(out)) == _tree(str(builds["at_load-in_raw"]))


def test_camera_raw_files_are_stored_as_today_in_an_at_load_build(photos, tmp_path):
    """A DNG beside the photos: its sample in an at-load build is the in_build build's, byte for
    byte (raw.npy, schema version 2)."""
    from rawpairs.dng import write_dng
    from rawpairs.unprocess import simulate_raw

    src = tmp_path / "src"
    src.mkdir()
    rgb = cv2.resize(data.coffee(), (96, 64), interpolation=cv2.INTER_AREA)
    mosaic, camera = simulate_raw(rgb, np.random.default_rng(4))
    write_dng(src / "coffee.dng", mosaic, camera)
    (src / "chelsea.jpg").write_bytes((photos / "chelsea.jpg").read_bytes())
    trees = {}
    for unprocess in ("in_build", "at_load"):
        build(src, tmp_path / unprocess, BuildConfig(unprocess=unprocess), workers=1)
        with tarfile.open(sorted((tmp_path / unprocess).glob("*.tar"))[-1]) as tar:
            trees[unprocess] = {i.name: tar.extractfile(i).read() for i in tar}  # type: ignore
    dng = {k: v for k, v in trees["in_build"].items() if k.startswith("coffee")}
    assert dng and any(k.endswith(".raw.npy") for k in dng)
    assert {k: trees["at_load"][k] for k in dng} == dng
