"""Build throughput: samples/s and MP/s for photo and RAW sources at 1 and 2 workers.

Also the time split by stage (read/decode, ISP, encode, write) measured in one process, and the
ceiling: plain webdataset packing of the same photo files (bytes into a tar, no decoding).

    python benchmarks/build.py [--photos 96] [--raws 8]

Inputs are made here from scikit-image's bundled photos: ImageNet-sized (500×375) JPEGs, and
DNGs of simulated RAW at 1000×750. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import cv2
import numpy as np
from skimage import data
from webdataset import TarWriter

from rawpairs.build import build
from rawpairs.dng import write_dng
from rawpairs.sample import BuildConfig, Source, make_samples
from rawpairs.schema import encode_sample
from rawpairs.shards import ShardWriter
from rawpairs.unprocess import simulate_raw

cv2.setNumThreads(1)
NAMES = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "immunohistochemistry")


def _photos(n: int, w: int, h: int) -> list[np.ndarray]:
    """``n`` distinct w×h crops of the bundled photos (random crop + resize)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = getattr(data, NAMES[i % len(NAMES)])()
        img = img[0] if isinstance(img, tuple) else img
        img = img[..., :3]
        ch, cw = img.shape[:2]
        s = rng.uniform(0.6, 1.0)
        hh, ww = int(ch * s), int(cw * s)
        t, left = rng.integers(0, ch - hh + 1), rng.integers(0, cw - ww + 1)
        out.append(
            cv2.resize(img[t : t + hh, left : left + ww], (w, h), interpolation=cv2.INTER_AREA)
        )
    return out


def make_inputs(root: Path, photos: int, raws: int) -> tuple[Path, Path]:
    jpg_dir, raw_dir = root / "jpg", root / "raw"
    jpg_dir.mkdir(parents=True)
    raw_dir.mkdir(parents=True)
    for i, rgb in enumerate(_photos(photos, 500, 375)):
        cv2.imwrite(
            str(jpg_dir / f"{i:05d}.jpg"),
            cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 90],
        )
    rng = np.random.default_rng(1)
    for i, rgb in enumerate(_photos(raws, 1000, 750)):
        mosaic, camera = simulate_raw(rgb, rng)
        write_dng(raw_dir / f"{i:05d}.dng", mosaic, camera)
    return jpg_dir, raw_dir


def stage_split(folder: Path, kind: str, config: BuildConfig) -> dict[str, float]:
    """Seconds per sample of each stage, measured in this process."""
    from rawpairs.sources import read_raw, read_rgb

    files = sorted(folder.iterdir())
    t = dict.fromkeys(("read/decode", "ISP + metadata", "encode", "write"), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        writer = ShardWriter(Path(tmp), 0)
        for f in files:
            t0 = time.perf_counter()
            read_rgb(f) if kind == "rgb" else read_raw(f)
            t1 = time.perf_counter()
            samples = make_samples(Source(str(f), f.name, kind), config)
            t2 = time.perf_counter()
            encoded = [
                encode_sample(s.meta, s.raw, s.rgb, s.label, rgb_format=config.rgb_format)
                for s in samples
            ]
            t3 = time.perf_counter()
            for members in encoded:
                writer.add(members)
            t4 = time.perf_counter()
            t["read/decode"] += t1 - t0
            t["ISP + metadata"] += (t2 - t1) - (t1 - t0)  # make_samples reads again
            t["encode"] += t3 - t2
            t["write"] += t4 - t3
        writer.abort()
    return {k: v / len(files) for k, v in t.items()}


def full_build(folder: Path, config: BuildConfig, workers: int) -> tuple[float, float]:
    """(samples/s, MP/s) of a whole build, start-up included."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = build(folder, Path(tmp) / "out", config, workers=workers)
        dt = time.perf_counter() - t0
        import pyarrow.parquet as pq

        rows = pq.read_table(Path(tmp) / "out" / "manifest.parquet").to_pylist()
    mp = sum(r["height"] * r["width"] for r in rows) / 1e6
    return result.samples / dt, mp / dt


def plain_packing(folder: Path) -> float:
    """Files/s of plain webdataset packing of the photo files (the I/O ceiling)."""
    files = sorted(folder.iterdir())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with TarWriter(str(Path(tmp) / "plain.tar"), encoder=False) as w:
            for f in files:
                w.write({"__key__": f.stem, "jpg": f.read_bytes()})
        return len(files) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--raws", type=int, default=8)
    args = parser.parse_args()
    cpu = (
        subprocess.run(["sh", "-c", "lscpu | grep 'Model name'"], capture_output=True, text=True)
        .stdout.split(":")[-1]
        .strip()
    )
    print(f"machine: {cpu or platform.processor()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        jpg_dir, raw_dir = make_inputs(Path(tmp), args.photos, args.raws)
        configs = {
            "photo 500×375 → pair (PNG level 1)": (jpg_dir, "rgb", BuildConfig()),
            "photo 500×375 → pair (JPEG q95)": (jpg_dir, "rgb", BuildConfig(rgb_format="jpeg")),
            "DNG 1000×750 → pair (PNG, Malvar)": (raw_dir, "raw", BuildConfig()),
        }
        print("\n| input | 1 worker samples/s | MP/s | 2 workers samples/s | 2w / 1w |")
        print("|---|---|---|---|---|")
        for name, (folder, _kind, config) in configs.items():
            one, mp1 = full_build(folder, config, 1)
            two, _ = full_build(folder, config, 2)
            print(f"| {name} | {one:.0f} | {mp1:.1f} | {two:.0f} | {two / one:.2f} |")
        ceiling = plain_packing(jpg_dir)
        print(f"\nplain webdataset packing of the same JPEG files: {ceiling:.0f} files/s")
        print("\n| input | " + " | ".join(stage_split(jpg_dir, "rgb", BuildConfig())) + " |")
        print("|---|---|---|---|---|")
        for name, (folder, kind, config) in configs.items():
            split = stage_split(folder, kind, config)
            total = sum(split.values())
            cells = " | ".join(f"{1e3 * v:.2f} ms ({100 * v / total:.0f}%)" for v in split.values())
            print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
