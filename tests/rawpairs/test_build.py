"""The build end to end: mixed good and bad inputs, determinism, resume after kill -9, refusal."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from skimage import data

from rawpairs.build import build
from rawpairs.cli import main as cli
from rawpairs.config import BuildConfig
from rawpairs.discover import discover_sources
from rawpairs.dng import write_dng
from rawpairs.errors import BuildError, BuildOutputError
from rawpairs.plan import estimated_bytes, plan_groups
from rawpairs.raw_files import read_raw
from rawpairs.schema import decode_sample
from rawpairs.tarwalk import read_shard
from rawpairs.unprocess import simulate_raw

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def _photo(name: str, side: int = 120) -> np.ndarray:
    rgb = getattr(data, name)()[..., :3]
    scale = side / max(rgb.shape[:2])
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _write_photo(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _png_with_bad_crc(path: Path) -> None:
    ok, png = cv2.imencode(".png", np.full((8, 8, 3), 128, np.uint8))
    assert ok
    raw = bytearray(png.tobytes())
    # Chunk layout after the 8-byte signature: length(4) type(4) data(length) crc(4).
    pos = 8
    while raw[pos + 4 : pos + 8] != b"IDAT":
        pos += 12 + int.from_bytes(raw[pos : pos + 4], "big")
    length = int.from_bytes(raw[pos : pos + 4], "big")
    crc_at = pos + 8 + length
    good = zlib.crc32(raw[pos + 4 : crc_at]) & 0xFFFFFFFF
    raw[crc_at : crc_at + 4] = ((good + 1) & 0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def good_src(tmp_path_factory) -> Path:
    """Photos in two class folders plus two DNGs written from simulated RAW."""
    src = tmp_path_factory.mktemp("src")
    for i, name in enumerate(PHOTOS):
        folder = "cats" if i % 2 else "things"
        ext = "png" if i % 2 else "jpg"
        _write_photo(src / folder / f"{name}.{ext}", _photo(name))
    rng = np.random.default_rng(7)
    for name in ("chelsea", "coffee"):
        rgb = _photo(name, 96)
        mosaic, camera = simulate_raw(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2], rng)
        (src / "raw").mkdir(exist_ok=True)
        write_dng(src / "raw" / f"{name}.dng", mosaic, camera)
    return src


@pytest.fixture(scope="module")
def mixed_src(tmp_path_factory, good_src) -> Path:
    """The good sources plus every kind of bad input."""
    src = tmp_path_factory.mktemp("mixed")
    for p in good_src.rglob("*"):
        if p.is_file():
            target = src / p.relative_to(good_src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(p.read_bytes())
    bad = src / "bad"
    bad.mkdir()
    dng = (good_src / "raw" / "chelsea.dng").read_bytes()
    (bad / "truncated.dng").write_bytes(dng[: len(dng) // 3])
    (bad / "empty.dng").write_bytes(b"")
    (bad / "text.dng").write_text("this is not a raw file\n")
    _png_with_bad_crc(bad / "bad_crc.png")
    (bad / "notes.txt").write_text("not an image\n")
    return src


@pytest.fixture()
def eager_workers(monkeypatch):
    """Workers start after two groups however small the build (by default a build too small to
    pay for their start-up runs in the building process)."""
    import rawpairs.pool

    monkeypatch.setattr(rawpairs.pool, "WORKERS_WORTH_S", 0.0)


def _wait_for_a_worker(after_samples: int):
    """A progress callback that, once ``after_samples`` are written, holds the building process
    until a worker has started (so that the next shards go to workers)."""
    import multiprocessing

    waited = []

    def progress(done, total, written, errors):
        deadline = time.monotonic() + 60
        if written < after_samples or waited:
            return
        while not multiprocessing.active_children():
            assert time.monotonic() < deadline, "no worker started"
            time.sleep(0.05)
        time.sleep(0.3)  # and is ready
        waited.append(True)

    return progress


def _with_workers(result) -> None:
    """Assert that worker processes wrote shards in this build."""
    assert result.stats["groups_here"] < result.shards, result.stats


BAD = {"bad/truncated.dng", "bad/empty.dng", "bad/text.dng", "bad/bad_crc.png", "bad/notes.txt"}

CONFIG = BuildConfig(seed=3, crop=64, crops=2)


def _manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def test_mixed_folder_writes_every_good_sample_and_lists_every_bad_one(mixed_src, tmp_path):
    result = build(mixed_src, tmp_path / "out", CONFIG, workers=1, sources_per_shard=3)
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").open()]
    assert {e["path"] for e in errors} == BAD
    assert all(e["message"] and e["error"] for e in errors)
    assert result.samples == 6 * 2 and result.errors == len(BAD)
    rows = _manifest(tmp_path / "out")
    assert {r["source"] for r in rows} == {
        p.relative_to(mixed_src).as_posix() for p in mixed_src.rglob("*") if p.is_file()
    } - BAD
    assert not list((tmp_path / "out").glob("*.partial"))
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    names = [s["name"] for s in index["shards"]]  # the first 3 sources all fail: no sample
    assert names == [p.name for p in sorted((tmp_path / "out").glob("rawpairs-*.tar"))]
    assert names == [f"rawpairs-{i:06d}.tar" for i in range(3)]  # numbered without a gap
    assert all(s["samples"] for s in index["shards"])
    assert result.shards == len(names) == 3


def test_samples_follow_the_schema_and_raw_is_bit_exact(good_src, tmp_path):
    build(good_src, tmp_path / "out", CONFIG, workers=1)
    rows = {r["key"]: r for r in _manifest(tmp_path / "out")}
    keys = []
    for shard in sorted((tmp_path / "out").glob("rawpairs-*.tar")):
        for sample in read_shard(shard):
            key, members = sample.key, sample.members
            keys.append(key)
            assert "." not in key
            assert set(members) == {"raw.npy", "rgb.png", "json"}
            decoded = decode_sample(members, shard.name, key)
            raw, rgb = decoded.raw, decoded.rgb
            meta = json.loads(members["json"])
            assert raw.shape == rgb.shape[:2] == (64, 64)
            assert meta["key"] == key and meta["schema_version"] == 2 and meta["seed"] == 3
            top, left, h, w = meta["crop"]
            assert top % 2 == 0 and left % 2 == 0 and (h, w) == (64, 64)
            assert len(meta["source"]["sha256"]) == 64
            assert rows[key]["cfa"] == meta["camera"]["cfa"]
            if meta["source"]["kind"] == "raw":
                capture = read_raw(good_src / meta["source"]["path"])
                np.testing.assert_array_equal(raw, capture.mosaic[top : top + h, left : left + w])
                assert meta["camera"]["cfa"] == capture.camera.cfa.value
                assert meta["render"]["method"] == "rawpairs"
            else:
                assert meta["render"]["method"] == "unprocess"
                assert meta["camera"]["provenance"]["wb_gains"] == "sampled"
    assert len(keys) == len(set(keys)) == len(rows) == 12


def test_output_does_not_depend_on_worker_count(good_src, tmp_path, eager_workers):
    build(good_src, tmp_path / "one", CONFIG, workers=1, sources_per_shard=2)
    build(good_src, tmp_path / "two", CONFIG, workers=2, sources_per_shard=2)
    one = json.loads((tmp_path / "one" / "index.json").read_text())
    two = json.loads((tmp_path / "two" / "index.json").read_text())
    assert one == two and [s["samples"] for s in one["shards"]] == [4, 4, 4]
    assert _manifest(tmp_path / "one") == _manifest(tmp_path / "two")
    card = (tmp_path / "one" / "README.md").read_bytes()
    assert card == (tmp_path / "two" / "README.md").read_bytes()
    for shard in one["shards"]:
        assert (tmp_path / "one" / shard["name"]).read_bytes() == (
            tmp_path / "two" / shard["name"]
        ).read_bytes()


def test_kill_9_mid_build_then_rerun_equals_uninterrupted(good_src, tmp_path):
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, signal
        from rawpairs.build import build
        from rawpairs.config import BuildConfig
        def progress(done, total, written, errors):
            if written >= 5:  # mid-shard: one shard committed, the next one half written
                os.kill(os.getpid(), signal.SIGKILL)
        build({str(good_src)!r}, {str(out)!r}, BuildConfig(seed=3, crop=64, crops=2),
              workers=1, sources_per_shard=1, progress=progress)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert (out / "rawpairs-000000.tar").exists()
    assert not (out / "manifest.parquet").exists()
    build(good_src, out, CONFIG, workers=1, sources_per_shard=1)
    build(good_src, tmp_path / "clean", CONFIG, workers=1, sources_per_shard=1)
    assert _manifest(out) == _manifest(tmp_path / "clean")
    assert (out / "index.json").read_text() == (tmp_path / "clean" / "index.json").read_text()
    assert not list(out.glob(".*.partial")) and not (out / ".state").exists()


def test_rerun_of_a_complete_build_does_nothing(good_src, tmp_path):
    build(good_src, tmp_path / "out", CONFIG, workers=1)
    again = build(good_src, tmp_path / "out", CONFIG, workers=1)
    assert again.already_complete and again.samples == 12


def test_different_configuration_is_refused_unless_overwrite(good_src, tmp_path):
    build(good_src, tmp_path / "out", CONFIG, workers=1)
    other = BuildConfig(seed=4, crop=64, crops=2)
    with pytest.raises(BuildError, match="different config"):
        build(good_src, tmp_path / "out", other, workers=1)
    result = build(good_src, tmp_path / "out", other, workers=1, overwrite=True)
    assert result.samples == 12 and not result.already_complete
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.md").write_text("mine")
    with pytest.raises(BuildError, match="not empty"):
        build(good_src, tmp_path / "foreign", CONFIG, workers=1)


def test_labels_from_folders(good_src, tmp_path):
    result = build(good_src, tmp_path / "out", BuildConfig(labels=True), workers=1)
    meta = json.loads((tmp_path / "out" / "build.json").read_text())
    assert meta["class_map"] == {"cats": 0, "raw": 1, "things": 2}
    for row in _manifest(tmp_path / "out"):
        assert row["label"] == meta["class_map"][row["source"].split("/")[0]]
    assert result.samples == 6


def test_discover_sources_is_sorted_and_skips_hidden(tmp_path):
    for rel in ("b/x.png", "a/y.jpg", ".hidden/z.png", "a/.DS_Store", "c.dng"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    sources, _ = discover_sources(tmp_path)
    assert [s.relpath for s in sources] == ["a/y.jpg", "b/x.png", "c.dng"]
    assert [s.kind for s in sources] == ["rgb", "rgb", "raw"]


def test_cli_build_exit_codes(mixed_src, good_src, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(
        cli, ["build", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    assert missing.exit_code == 2 and "no such file" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(
        cli, ["build", "--src", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]
    )
    assert empty.exit_code == 2 and "no input files" in empty.output
    args = ["build", "--src", str(mixed_src), "--crop", "64", "--workers", "1", "--quiet"]
    ok = runner.invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert "6 samples" in ok.output and "5 failed" in ok.output
    assert "warning: bad/empty.dng" in ok.output
    strict = runner.invoke(cli, [*args, "--out", str(tmp_path / "b"), "--strict"])
    assert strict.exit_code == 1
    bad_flag = runner.invoke(cli, [*args, "--out", str(tmp_path / "c"), "--crop", "63"])
    assert bad_flag.exit_code == 2 and "--crop" in bad_flag.output
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.dng").write_bytes(b"")
    none = runner.invoke(
        cli, ["build", "--src", str(only_bad), "--out", str(tmp_path / "d"), "--quiet"]
    )
    assert none.exit_code == 1


def test_shards_hold_consecutive_groups_of_sources(good_src):
    sources, _ = discover_sources(good_src)
    plan = functools.partial(plan_groups, sources, CONFIG, shard_size=2**40)
    assert plan(samples_per_shard=10_000) == 1  # 6 sources: at least MIN_SHARDS shards
    many = sources * 10  # 60 sources, 2 samples each
    assert plan_groups(many, CONFIG, samples_per_shard=10_000, shard_size=2**40) == 4
    assert plan_groups(many, CONFIG, samples_per_shard=5, shard_size=2**40) == 2
    per_source = estimated_bytes(many[0], CONFIG)
    assert plan_groups(many, CONFIG, samples_per_shard=99, shard_size=int(3 * per_source)) <= 3
    assert plan(samples_per_shard=1, sources_per_shard=4) == 4


@pytest.mark.parametrize("mode, expected", [("tile", 4), ("random", 3)])
def test_crop_modes(good_src, tmp_path, mode, expected):
    src = tmp_path / "src"
    _write_photo(src / "a.png", cv2.resize(data.coffee(), (130, 100), interpolation=cv2.INTER_AREA))
    config = BuildConfig(crop=50, crop_mode=mode, crops=3 if mode == "random" else 1)
    result = build(src, tmp_path / "out", config, workers=1)
    assert result.samples == expected
    boxes = [(r["crop_top"], r["crop_left"]) for r in _manifest(tmp_path / "out")]
    assert all(t % 2 == 0 and left % 2 == 0 for t, left in boxes)
    if mode == "tile":
        assert boxes == [(0, 0), (0, 50), (50, 0), (50, 50)]


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupt_leaves_no_partial_shard(tmp_path, good_src, workers, eager_workers, monkeypatch):
    """An exception in the driver (e.g. Ctrl-C) stops the workers and leaves finished shards and
    no partial one."""

    def progress(done, total, written, errors):
        if written >= 6:  # three shards: workers (if any) are started or starting
            raise KeyboardInterrupt

    import threading

    import rawpairs.pool

    started = []  # every worker process the build starts
    spawn = rawpairs.pool._LocalPool._spawn

    def recorded(self):
        worker = spawn(self)
        started.append(worker.process)
        return worker

    monkeypatch.setattr(rawpairs.pool._LocalPool, "_spawn", recorded)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(good_src, out, CONFIG, workers=workers, sources_per_shard=1, progress=progress)
    # The workers stop (one still starting when the interrupt came is stopped once started).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        any(p.is_alive() for p in started)
        or any("_start_workers" in t.name for t in threading.enumerate())
    ):
        time.sleep(0.1)
    assert not any(p.is_alive() for p in started), started
    assert not any("_start_workers" in t.name for t in threading.enumerate())
    if workers > 1:
        assert started  # the interrupt came while workers ran (or started)
    assert not list(out.glob(".*partial")) and not list(out.glob(".state/.*partial"))
    assert len(list(out.glob("rawpairs-*.tar"))) >= 3 and not (out / "index.json").exists()
    assert (out / "build.json").exists()
    build(good_src, out, CONFIG, workers=1, sources_per_shard=1)
    build(good_src, tmp_path / "clean", CONFIG, workers=1, sources_per_shard=1)
    assert (out / "index.json").read_text() == (tmp_path / "clean" / "index.json").read_text()


def test_cli_camera_json_fixes_priors(good_src, tmp_path):
    camera = tmp_path / "camera.json"
    camera.write_text(json.dumps({"cfa": "BGGR", "bit_depth": 14, "shot_noise": [0, 0]}))
    runner = CliRunner()
    args = ["build", "--src", str(good_src), "--out", str(tmp_path / "o"), "--workers", "1"]
    result = runner.invoke(cli, [*args, "--camera", str(camera), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = [r for r in _manifest(tmp_path / "o") if r["kind"] == "rgb"]
    assert rows and all(r["cfa"] == "BGGR" and r["bit_depth"] == 14 for r in rows)
    assert all(r["noise_shot"] == 0 for r in rows)
    camera.write_text(json.dumps({"cfa": "XYZW"}))
    bad = runner.invoke(cli, [*args, "--camera", str(camera), "--overwrite"])
    assert bad.exit_code == 2 and "camera.json" in bad.output and "XYZW" in bad.output


SHIPPED_RAW = Path(__file__).resolve().parents[1] / "data" / "raw"  # real camera files, CC0


@pytest.mark.parametrize("render", ["rawpairs", "libraw"])
def test_real_camera_files(tmp_path, render):
    src = tmp_path / "src"
    src.mkdir()
    names = ["Kodak-DC50-DC50IMG-DC0010S.KDC", "Canon-PowerShot_S40-CRW_0104.CRW"]
    for name in names:
        (src / name).symlink_to(SHIPPED_RAW / name)
    config = BuildConfig(crop=128, crops=2, render=render, seed=5)
    result = build(src, tmp_path / "out", config, workers=1)
    assert result.samples == 4 and result.errors == 0
    from rawpairs.isp import auto_exposure

    for shard in sorted((tmp_path / "out").glob("rawpairs-*.tar")):
        for sample in read_shard(shard):
            members = sample.members
            meta = json.loads(members["json"])
            capture = read_raw(src / meta["source"]["path"])
            top, left, h, w = meta["crop"]
            decoded = decode_sample(members, shard.name, sample.key)
            np.testing.assert_array_equal(
                decoded.raw, capture.mosaic[top : top + h, left : left + w]
            )
            assert decoded.rgb.shape == (128, 128, 3)
            camera = capture.camera
            # the default exposure rule sets the digital gain, for both renders
            gain = auto_exposure(capture.mosaic, camera)
            prov = {**camera.provenance, "digital_gain": "auto:p99"}
            camera = camera.replace(digital_gain=gain, provenance=prov)
            recorded = {k: v for k, v in meta["camera"]["provenance"].items() if v is not None}
            assert {**meta["camera"], "provenance": recorded} == camera.to_dict()
            assert meta["render"]["method"] == render
            if meta["source"]["path"].endswith(".KDC"):
                assert meta["camera"]["provenance"]["xyz_to_cam"] == "file:libraw_fit"
                assert meta["camera"]["cfa"] == "GRBG"


def test_noise_at_load_stores_the_clean_mosaic(good_src, tmp_path):
    from rawpairs.metadata import SampleMeta
    from rawpairs.photos import read_rgb
    from rawpairs.unprocess import unprocess

    build(good_src, tmp_path / "out", BuildConfig(seed=3, noise="load"), workers=1)
    checked = 0
    for shard in sorted((tmp_path / "out").glob("rawpairs-*.tar")):
        for sample in read_shard(shard):
            members = sample.members
            meta = json.loads(members["json"])
            if meta["source"]["kind"] != "rgb":
                assert meta["render"]["noise"] == "in_raw"
                continue
            assert meta["render"]["noise"] == "at_load"
            camera = SampleMeta.from_dict(meta).camera  # (json provenance has null entries)
            assert camera.noise_shot > 0
            top, left, h, w = meta["crop"]
            rgb = read_rgb(good_src / meta["source"]["path"])[top : top + h, left : left + w]
            clean = unprocess(np.ascontiguousarray(rgb), camera, noise=False)
            np.testing.assert_array_equal(decode_sample(members, shard.name, sample.key).raw, clean)
            checked += 1
    assert checked == 4


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_killed_worker_is_replaced_and_nothing_is_lost(good_src, tmp_path, eager_workers):
    """SIGKILL of a worker process while it writes a shard (as the OOM killer would): its shard is
    written again, same output, no error."""
    import multiprocessing
    import threading

    src = tmp_path / "src"
    for path, payload in _tree(good_src).items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(payload)
    for i in range(3):  # slow enough that a worker is caught working
        for name in PHOTOS:
            _write_photo(src / "zbig" / f"{name}{i}.png", _photo(name, 1600 + 2 * i))
    killed: list[int] = []
    stop = threading.Event()

    def progress(done, total, written, errors):
        deadline = time.monotonic() + 60
        while written >= 6 and not multiprocessing.active_children():
            assert time.monotonic() < deadline, "no worker started"
            time.sleep(0.05)  # from the 3rd shard on: until a worker has started

    def killer() -> None:
        while not stop.wait(0.01) and not killed:
            for child in multiprocessing.active_children():
                with contextlib.suppress(OSError):
                    if _cpu_seconds(child.pid) > 0.15:  # a forked worker starts at ~0
                        os.kill(child.pid, signal.SIGKILL)
                        killed.append(child.pid)
                        return

    def hung(signum, frame):
        raise TimeoutError("the build hung after its worker was killed")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)  # a hang fails this test instead of stalling the suite
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        result = build(
            src, tmp_path / "killed", CONFIG, workers=2, sources_per_shard=1, progress=progress
        )
    finally:
        stop.set()
        thread.join()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert killed and result.errors == 0 and result.samples == 36
    _with_workers(result)
    build(src, tmp_path / "clean", CONFIG, workers=1, sources_per_shard=1)
    assert (tmp_path / "killed" / "index.json").read_text() == (
        tmp_path / "clean" / "index.json"
    ).read_text()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"crop": 63}, "even"),
        ({"crop": 64, "crop_mode": "tile", "crops": 3}, "--crops applies"),
        ({"render": "libraw", "max_side": 512}, "--max-side cannot"),
        ({"noise": "sometimes"}, "--noise"),
        ({"rgb_format": "webp"}, "--rgb-format"),
    ],
)
def test_bad_configurations_fail_up_front(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BuildConfig(**kwargs)


# Hardening (issue 13): user files, odd names and folders, locks, resume gaps, full disk -------


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_overwrite_never_deletes_files_rawpairs_did_not_write(good_src, tmp_path):
    foreign = tmp_path / "foreign"
    (foreign / ".state").mkdir(parents=True)
    for name in ("index.json", "build.json", ".state/notes.txt", ".draft.partial"):
        (foreign / name).write_text("the user's")
    before = _tree(foreign)
    for overwrite in (False, True):
        with pytest.raises(BuildError, match="not a rawpairs build folder"):
            build(good_src, foreign, CONFIG, workers=1, overwrite=overwrite)
    assert _tree(foreign) == before
    ours = tmp_path / "ours"
    build(good_src, ours, CONFIG, workers=1)
    (ours / "notes.md").write_text("mine")
    (ours / ".draft.partial").write_text("mine too")
    build(good_src, ours, BuildConfig(seed=9, crop=64), workers=1, overwrite=True)
    assert (ours / "notes.md").read_text() == "mine" and (ours / ".draft.partial").exists()
    assert json.loads((ours / "build.json").read_text())["config"]["seed"] == 9


def test_a_name_that_is_not_utf8_builds_alone_with_a_stable_dot_free_key(
    good_src, tmp_path, eager_workers
):
    src = tmp_path / "src"
    _write_photo(src / "a.png", _photo("chelsea"))
    odd = os.fsdecode(b"caf\xe9.v1.png")
    (src / odd).write_bytes((src / "a.png").read_bytes())
    (src / os.fsdecode(b"bad\xff.txt")).write_text("not an image")
    result = build(src, tmp_path / "out", CONFIG, workers=1)
    assert (result.samples, result.errors) == (4, 1)
    rows = _manifest(tmp_path / "out")
    assert {r["source"] for r in rows} == {"a.png", "caf\\xe9.v1.png"}
    assert all("." not in r["key"] for r in rows)
    errors = (tmp_path / "out" / "errors.jsonl").read_text()
    assert json.loads(errors)["path"] == "bad\\xff.txt"
    build(src, tmp_path / "again", CONFIG, workers=2, sources_per_shard=1)
    assert _manifest(tmp_path / "again") == rows


def test_out_inside_src_is_not_read_as_input(good_src, tmp_path):
    src = tmp_path / "src"
    for path, payload in _tree(good_src).items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(payload)
    out = src / "shards"
    first = build(src, out, CONFIG, workers=1)
    assert first.samples == 12 and first.errors == 0
    assert build(src, out, CONFIG, workers=1).already_complete
    again = build(src, out, BuildConfig(seed=4, crop=64, crops=2), workers=1, overwrite=True)
    assert (again.sources, again.samples, again.errors) == (6, 12, 0)


def test_symlinked_folders_are_followed_once_and_special_files_fail_alone(good_src, tmp_path):
    src = tmp_path / "src"
    _write_photo(src / "real" / "a.png", _photo("coffee"))
    (src / "linked").symlink_to(good_src / "cats", target_is_directory=True)
    (src / "real" / "loop").symlink_to(src, target_is_directory=True)
    (src / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(src / "pipe.jpg")  # opening it would block forever

    def hung(signum, frame):
        raise TimeoutError("the build hung on a named pipe")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        result = build(src, tmp_path / "out", CONFIG, workers=1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    sources = {r["source"] for r in _manifest(tmp_path / "out")}
    assert sources == {"real/a.png", "linked/chelsea.png", "linked/rocket.png"}
    errors = {
        e["path"]: e["message"] for e in map(json.loads, (tmp_path / "out" / "errors.jsonl").open())
    }
    assert errors.keys() == {"dangling.png", "pipe.jpg", "real/loop"}
    assert "named pipe" in errors["pipe.jpg"] and "broken symbolic link" in errors["dangling.png"]
    assert "symbolic link loop" in errors["real/loop"] and result.errors == 3


def test_a_second_build_into_a_locked_folder_is_refused_and_a_dead_lock_is_not(good_src, tmp_path):
    from rawpairs.storage import OutputFolder

    out = tmp_path / "out"
    holder = OutputFolder(out)
    holder.makedirs()
    holder.lock()  # as a running build holds it
    with pytest.raises(BuildError, match="another build is writing here"):
        build(good_src, out, CONFIG, workers=1)
    holder.close()
    script = textwrap.dedent(
        f"""
        import os, signal
        from rawpairs.storage import OutputFolder
        OutputFolder({str(out)!r}).lock()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert build(good_src, out, CONFIG, workers=1).samples == 12  # the kernel freed its lock


def test_leftovers_of_kills_at_the_first_and_the_last_write_do_not_block(good_src, tmp_path):
    out = tmp_path / "first"
    out.mkdir()
    (out / ".rawpairs").write_bytes(b"")
    (out / ".build.json.4242-0123abcd.partial").write_text('{"conf')  # killed mid-write
    assert build(good_src, out, CONFIG, workers=1).samples == 12
    assert not list(out.glob(".*.partial"))
    last = tmp_path / "last"
    build(good_src, last, CONFIG, workers=1)
    (last / ".state").mkdir()  # killed after build.json said complete, before .state went
    (last / ".state" / "shard-000000.json").write_text("{}")
    assert build(good_src, last, CONFIG, workers=1).already_complete
    assert not (last / ".state").exists()


def _killed_build(src: Path, out: Path, workers: int, when: int) -> list[int]:
    """Run a build in a subprocess that SIGKILLs itself once ``when`` samples are written;
    return the PIDs of its worker processes."""
    script = textwrap.dedent(
        f"""
        import multiprocessing, os, signal, sys, time
        import rawpairs.pool
        from rawpairs.build import build
        from rawpairs.config import BuildConfig
        rawpairs.pool.WORKERS_WORTH_S = 0.0  # workers however small the build
        def progress(done, total, written, errors):
            if written >= {when}:
                while {workers} > 1 and not multiprocessing.active_children():
                    time.sleep(0.05)  # until a worker has started
                print(*[p.pid for p in multiprocessing.active_children()], flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        if __name__ == "__main__":
            build({str(src)!r}, {str(out)!r}, BuildConfig(seed=3, crop=64, crops=2),
                  workers={workers}, sources_per_shard=1, progress=progress)
        """
    )
    path = out.parent / f"kill_{out.name}.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    return [int(p) for p in proc.stdout.split()]


def test_kill_9_takes_the_workers_along_and_overwrite_resumes(good_src, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "out"
    pids = _killed_build(good_src, out, workers=2, when=6)
    assert pids
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if Path(f"/proc/{p}").exists()], "workers outlived the build"
    while list((tmp_path / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the fork server removes its socket folder as it exits
    assert list((tmp_path / "tmp").iterdir()) == []  # no temporary folder leaked
    kept = {p.name: p.stat().st_ino for p in out.glob("rawpairs-*.tar")}
    assert kept
    build(good_src, out, CONFIG, workers=1, sources_per_shard=1, overwrite=True)
    assert {n: (out / n).stat().st_ino for n in kept} == kept  # finished shards not redone
    build(good_src, tmp_path / "clean", CONFIG, workers=1, sources_per_shard=1)
    assert _tree(out).keys() == _tree(tmp_path / "clean").keys()
    assert (out / "index.json").read_text() == (tmp_path / "clean" / "index.json").read_text()


def test_full_disk_stops_with_one_error_and_no_partial_shard(good_src, tmp_path, monkeypatch):
    import errno

    from rawpairs.storage import OutputFolder

    opened = OutputFolder.open_write

    class FullDisk:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 50_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    def open_write(self, name):
        f = opened(self, name)
        return FullDisk(f) if name.startswith(".rawpairs-") else f

    monkeypatch.setattr(OutputFolder, "open_write", open_write)
    photos = good_src / "things"  # built in this process (RAW is decoded in workers only)
    with pytest.raises(BuildOutputError, match="No space left on device") as err:
        build(photos, tmp_path / "out", CONFIG, workers=1, sources_per_shard=3)
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "out").glob(".*partial"))
    assert not list((tmp_path / "out").glob("rawpairs-*.tar"))


def test_crops_of_a_source_are_made_one_at_a_time(tmp_path, monkeypatch):
    """Each crop is made, then written, before the next one is made (instrumented: the crop's
    RAW simulation and the shard writer log their calls), and memory does not grow with
    the number of crops."""
    import tracemalloc

    import rawpairs.sample
    import rawpairs.shards
    import rawpairs.unprocess
    from rawpairs.sample import Source, make_samples

    _write_photo(tmp_path / "src" / "a.png", _photo("astronaut", 400))
    events: list[str] = []
    simulate, add = rawpairs.unprocess.simulate_raw, rawpairs.shards.ShardWriter.add

    def made(*args, **kwargs):
        events.append("made")
        return simulate(*args, **kwargs)

    def written(self, members):
        events.append("written")
        return add(self, members)

    monkeypatch.setattr(rawpairs.sample, "simulate_raw", made)  # the name the sample maker calls
    monkeypatch.setattr(rawpairs.shards.ShardWriter, "add", written)
    result = build(tmp_path / "src", tmp_path / "out", BuildConfig(crop=128, crops=40), workers=1)
    assert result.samples == 40
    assert events == ["made", "written"] * 40  # never two crops alive before one is written

    source = Source(str(tmp_path / "src" / "a.png"), "a.png", "rgb")

    def peak(crops: int) -> int:
        tracemalloc.start()
        try:
            for sample in make_samples(source, BuildConfig(crop=128, crops=crops)):
                del sample
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    few, many = peak(2), peak(60)
    assert many < 1.5 * few, (few, many)  # a list of 60 crops would need ~30× more


def test_two_worker_builds_are_byte_identical_again_and_again(good_src, tmp_path, eager_workers):
    """A review once saw one of ~25 two-worker builds differ; the scheduling here varies run to
    run (which process writes which shard, the driver's share), the bytes must not."""
    build(good_src, tmp_path / "ref", CONFIG, workers=1, sources_per_shard=1)
    reference = _tree(tmp_path / "ref")
    del reference["build.json"]  # holds the timings
    for run in range(4):
        out = tmp_path / f"run{run}"
        progress = _wait_for_a_worker(6) if run % 2 else None  # else: as the timing falls
        result = build(good_src, out, CONFIG, workers=2, sources_per_shard=1, progress=progress)
        if progress:
            _with_workers(result)
        tree = _tree(out)
        del tree["build.json"]
        assert tree == reference, run


CRASHING_RAWPY = """
import os, signal
import rawpy
_imread = rawpy.imread
def _crashing_imread(path, *args, **kwargs):  # a decoder crash (segfault) on files named crash*
    if os.path.basename(str(path)).startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return _imread(path, *args, **kwargs)
rawpy.imread = _crashing_imread
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_raw_file_that_crashes_its_decoder_fails_alone(tmp_path, workers):
    """LibRaw decodes only in worker processes, even with --workers 1 and a build too small to
    start workers for photos: a decoder crash is an error record, not the end of the build."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASHING_RAWPY)
    src = tmp_path / "src"
    src.mkdir()
    dc50 = SHIPPED_RAW / "Kodak-DC50-DC50IMG-DC0010S.KDC"
    (src / "crash.kdc").symlink_to(dc50)
    (src / "good.kdc").symlink_to(dc50)
    cv2.imwrite(str(src / "photo.png"), np.full((64, 96, 3), 120, np.uint8))
    env = {**os.environ, "PYTHONPATH": str(hook)}
    proc = subprocess.run(
        [sys.executable, "-m", "rawpairs.cli", "build", "--src", str(src), "--out",
         str(tmp_path / "out"), "--crop", "32", "--workers", workers, "--quiet"],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").open()]
    assert [(e["path"], e["error"]) for e in errors] == [("crash.kdc", "WorkerCrashed")]
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert sorted({row["source"] for row in rows}) == ["good.kdc", "photo.png"]
