"""At-load shards (``--unprocess at_load``) against stored-RAW shards (``in_build``): bytes per
sample, whole-build samples/s on one worker, loader + unprocessing samples/s on one core, the
RAW made in the distillation step, and the crop-storage choice.

    python -m benchmarks.at_load [--photos 2000] [--repeats 2] [--loader-samples 256]
                                 [--step-batch 16 --step-crop 224] [--device cpu]

Inputs are made here from scikit-image's bundled photos: ImageNet-sized 500×375 JPEGs (quality 90,
``benchmarks.build.make_inputs``), built as whole-photo samples (the Done-when of issue 18).
Builds run in this process with one worker (``workers=1``: no worker start-up); "steady state"
is samples/s between the first and the last quarter of finished shards (start-up and tail
excluded), "whole" is samples over the build's seconds (listing and content hashing included).
in_build and at_load builds alternate in each repeat; medians. One thread everywhere
(``OMP_NUM_THREADS``, ``NUMBA_NUM_THREADS``, ``torch.set_num_threads(1)``, ``cv2``): per core.
Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.build import make_inputs, steady_rate, tree_cpu_seconds
from rawpairs.build import build
from rawpairs.config import BuildConfig


def _tar_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.tar"))


def build_table(jpg_dir: Path, repeats: int, work: Path) -> dict[str, Path]:
    """Whole-photo builds, 1 worker: samples/s and bytes per sample; returns the last builds."""
    configs = {"in_build": BuildConfig(), "at_load": BuildConfig(unprocess="at_load")}
    rates: dict[str, list[tuple[float, float, float]]] = {name: [] for name in configs}
    folders = {}
    for r in range(repeats):
        for name, config in configs.items():
            out = work / f"{name}-{r}"
            cpu = tree_cpu_seconds()
            result = build(jpg_dir, out, config, workers=1)
            cpu = (tree_cpu_seconds() - cpu) / result.samples
            rates[name].append((steady_rate(result), result.samples / result.seconds, cpu))
            folders[name] = out
            samples = result.samples
    jpeg = sum(p.stat().st_size for p in jpg_dir.iterdir())
    steady = {n: statistics.median(s for s, _, _ in v) for n, v in rates.items()}
    whole = {n: statistics.median(w for _, w, _ in v) for n, v in rates.items()}
    cpu = {n: statistics.median(c for _, _, c in v) for n, v in rates.items()}
    size = {n: _tar_bytes(f) / samples for n, f in folders.items()}
    kb = jpeg / samples / 1e3
    print(f"\n**Whole-photo builds**, {samples} JPEGs 500×375 (quality 90, {kb:.1f} kB each), "
          f"1 worker, median of {repeats}; load {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| | in_build | at_load | at_load / in_build |")
    print("|---|---|---|---|")
    print(f"| steady state, samples/s | {steady['in_build']:.1f} | {steady['at_load']:.1f} | "
          f"**{steady['at_load'] / steady['in_build']:.2f}×** |")  # fmt: skip
    print(f"| whole build, samples/s | {whole['in_build']:.1f} | {whole['at_load']:.1f} | "
          f"{whole['at_load'] / whole['in_build']:.2f}× |")  # fmt: skip
    less = cpu["in_build"] / cpu["at_load"]
    print(f"| CPU per sample (process tree), ms | {1e3 * cpu['in_build']:.2f} | "
          f"{1e3 * cpu['at_load']:.2f} | 1 / **{less:.2f}** |")  # fmt: skip
    ratio = size["at_load"] / size["in_build"]
    print(f"| shard bytes per sample, kB | {size['in_build'] / 1e3:.1f} | "
          f"{size['at_load'] / 1e3:.1f} | **{ratio:.3f}×** |")  # fmt: skip
    print(f"\nat_load shard bytes / source JPEG bytes: **{size['at_load'] * samples / jpeg:.3f}**")
    return folders


def crop_choice(jpg_dir: Path, work: Path, crop: int, crops: int) -> None:
    """Crops of lossy sources: bytes and decode time per sample of the JPEG re-encode (quality
    95, what the build does) against storing the source's bytes once with crop boxes."""
    out = work / f"crops-{crop}-{crops}"
    config = BuildConfig(unprocess="at_load", crop=crop, crops=crops)
    result = build(jpg_dir, out, config, workers=1)
    files = sorted(jpg_dir.iterdir())
    source = sum(p.stat().st_size for p in files) / len(files)
    stored = _tar_bytes(out) / result.samples
    full = [p.read_bytes() for p in files[:100]]
    t0 = time.perf_counter()
    for data in full:
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    decode_full = (time.perf_counter() - t0) / len(full)
    rgb = cv2.imdecode(np.frombuffer(full[0], np.uint8), cv2.IMREAD_COLOR)[:crop, :crop]
    q95 = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    t0 = time.perf_counter()
    for _ in range(len(full)):
        cv2.imdecode(np.frombuffer(q95, np.uint8), cv2.IMREAD_COLOR)
    decode_crop = (time.perf_counter() - t0) / len(full)
    print(f"| {crop} px × {crops} | {stored / 1e3:.1f} | {source / crops / 1e3:.1f} | "
          f"{decode_crop * 1e3:.2f} | {decode_full * 1e3:.2f} |")  # fmt: skip


def loader_table(folders: dict[str, Path], samples: int, crop: int) -> None:
    """Examples/s of one process (num_workers=0, one thread): today's loader on stored RAW, the
    at-load loader making the RAW in the worker (torch, CPU), and the at-load loader alone
    (raw_on_device) plus the time of ``make_raw`` on a batch (CPU standing in for the device)."""
    from distill.data import make_loader
    from distill.unprocess import make_raw

    batch = 16

    def rate(folder: Path, **kwargs) -> tuple[float, list[dict]]:
        loader = make_loader(sorted(folder.glob("*.tar")), batch_size=batch, crop=crop,
                             teacher_size=crop, seed=0, **kwargs)  # fmt: skip
        iterator = iter(loader)
        kept = [next(iterator)]  # warm-up: opens the first shard, compiles nothing
        t0 = time.perf_counter()
        for _ in range(samples // batch):
            kept.append(next(iterator))
        return samples // batch * batch / (time.perf_counter() - t0), kept[-4:]

    stored, _ = rate(folders["in_build"])
    worker, _ = rate(folders["at_load"])
    alone, batches = rate(folders["at_load"], raw_on_device=True)
    t0 = time.perf_counter()
    for _ in range(5):
        for b in batches:
            make_raw(b["raw"], b["recipe"])
    per_batch = (time.perf_counter() - t0) / (5 * len(batches))
    print(f"\n**Loader, one process, one thread**, crop {crop}, batch {batch}, {samples} samples"
          f"; load {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| loader | examples/s | vs stored RAW |")
    print("|---|---|---|")
    print(f"| stored RAW (in_build shards; today's loader) | {stored:.0f} | 1.00 |")
    print(f"| at-load, RAW made in the worker (torch CPU) | {worker:.0f} | {worker / stored:.2f} |")
    print(f"| at-load, loader alone (`raw_on_device`) | {alone:.0f} | {alone / stored:.2f} |")
    made = batch / per_batch
    print(f"| `make_raw` on one CPU thread | {made:.0f} | {made / stored:.2f} |")


def step_table(folders: dict[str, Path], batch: int, crop: int, device: str) -> None:
    """One distillation step (EfficientNet-Lite0 student and teacher) with stored RAW and with
    the RAW made from the recipe on ``device`` inside the step (Trainer._to_device)."""
    from distill.config import TrainConfig
    from distill.data import make_loader_from
    from distill.trainer import Trainer

    def trainer(folder: Path) -> tuple[Trainer, object]:
        shards = [str(p) for p in sorted(folder.glob("*.tar"))]
        config = TrainConfig(
            shards=shards, out=tempfile.mkdtemp(), steps=100, crop=crop, batch_size=batch,
            num_workers=1, progress=False, device=device,
        )  # fmt: skip
        t = Trainer(config)
        t.prepare()
        settings = config.loader(seed=0, rank=0, world_size=1, start_batch=0)
        loader = make_loader_from(shards, settings)
        return t, iter(loader)

    times: dict[str, list[float]] = {"in_build": [], "at_load": []}
    make: list[float] = []
    runs = {name: trainer(folders[name]) for name in times}
    for i in range(6):
        for name, (t, iterator) in runs.items():
            start = time.perf_counter()
            t.step(iterator)  # type: ignore[arg-type]
            if i >= 2:
                times[name].append(time.perf_counter() - start)
        t, iterator = runs["at_load"]
        b = next(iterator)  # type: ignore[call-overload]
        start = time.perf_counter()
        t._to_device(b)
        make.append(time.perf_counter() - start)
    s = {n: statistics.median(v) for n, v in times.items()}
    print(f"\n**Distillation step**, batch {batch}, crop {crop}, device {device}, "
          f"{torch.get_num_threads()} thread(s); load {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| | seconds |")
    print("|---|---|")
    print(f"| step, stored RAW | {s['in_build']:.3f} |")
    print(f"| step, RAW made from the recipe in the step | {s['at_load']:.3f} |")
    print(f"| of which moving the batch and `make_raw` | {statistics.median(make):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--loader-samples", type=int, default=256)
    parser.add_argument("--loader-crop", type=int, default=224)
    parser.add_argument("--step-batch", type=int, default=16)
    parser.add_argument("--step-crop", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name'"], capture_output=True, text=True)
    print(f"machine: {cpu.stdout.split(':')[-1].strip()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jpg_dir, _ = make_inputs(work / "inputs", args.photos, 0)
        folders = build_table(jpg_dir, args.repeats, work)
        print("\n**Crops of lossy sources** (at_load): bytes per sample stored (JPEG q95 re-encode)"
              " vs the source's bytes stored once per source (shared by its crops); decode per "
              "sample: the q95 crop vs the whole source\n")  # fmt: skip
        print("| crops | q95 crop, kB | source once, kB/sample | decode: crop, ms | source, ms |")
        print("|---|---|---|---|---|")
        subset = work / "subset"
        subset.mkdir()
        for p in sorted(jpg_dir.iterdir())[:200]:
            (subset / p.name).symlink_to(p)
        for crop, crops in ((256, 1), (256, 2), (224, 4)):
            crop_choice(subset, work, crop, crops)
        loader_table(folders, args.loader_samples, args.loader_crop)
        step_table(folders, args.step_batch, args.step_crop, args.device)


if __name__ == "__main__":
    main()
