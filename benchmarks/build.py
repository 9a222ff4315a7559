"""Build scaling: 1 vs 2 workers (and the default count), whole build and steady state, for photos
and DNGs; start-up; driver CPU and bytes between processes per sample; byte-identity under repeats.

    python -m benchmarks.build [--photos 1000] [--raws 64] [--repeats 3] [--sizes 4 16 64 256]
                               [--identity-runs 0]

Inputs are made here from scikit-image's bundled photos: ImageNet-sized (500×375) JPEGs, and
DNGs of simulated RAW at 1000×750. Whole builds are timed from outside, as whole
``python -m rawpairs.cli build`` processes (interpreter, imports and worker start-up included),
alternating 1 worker, 2 workers and the default in each repeat (medians reported). Steady state,
driver CPU and bytes between processes come from the same builds run in this process
(``BuildResult.stats``). Prints Markdown for docs/benchmarks.md; run on a quiet machine (the
load average is printed beside each table).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from skimage import data
from webdataset import TarWriter

from rawpairs.build import BuildResult, build
from rawpairs.config import BuildConfig
from rawpairs.dng import write_dng
from rawpairs.unprocess import simulate_raw

NAMES = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "immunohistochemistry")
WORKER_COUNTS = (1, 2, None)  # None: the default (one per core)


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
    """``photos`` 500×375 JPEGs (quality 90) in ``root/jpg``, ``raws`` 1000×750 DNGs in
    ``root/raw``."""
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


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def whole_build(src: Path, args: list[str], workers: int | None) -> float:
    """Wall seconds of one ``rawpairs build`` process into a new folder."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "rawpairs.cli", "build", "--src", str(src)]
        command += ["--out", str(Path(tmp) / "out"), "--quiet", *args]
        if workers is not None:
            command += ["--workers", str(workers)]
        t0 = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=_env())
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr[-2000:]}")
        return time.perf_counter() - t0


def tree_cpu_seconds() -> float:
    """User + system CPU time of this process, its descendants and their reaped children."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        children.setdefault(int(fields[1]), []).append(int(entry))
        times[int(entry)] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def in_process(src: Path, config: BuildConfig, workers: int | None) -> tuple[BuildResult, float]:
    """A build in this process, and the CPU seconds per sample of the whole process tree
    (this process, its workers and their fork server)."""
    with tempfile.TemporaryDirectory() as tmp:
        cpu = tree_cpu_seconds()
        result = build(src, Path(tmp) / "out", config, workers=workers)
        return result, (tree_cpu_seconds() - cpu) / result.samples


def steady_rate(result: BuildResult) -> float:
    """Samples/s between the first and the last quarter of finished shards (start-up and the
    tail excluded)."""
    marks = result.stats["records"]
    a, b = len(marks) // 4, len(marks) - 1 - len(marks) // 4
    if b <= a:
        return result.samples / result.seconds
    samples = sum(n for _, n in marks[a + 1 : b + 1])
    return samples / (marks[b][0] - marks[a][0])


def scaling_table(name: str, src: Path, args: list[str], config: BuildConfig, repeats: int) -> None:
    load = os.getloadavg()[0]
    walls: dict[int | None, list[float]] = {w: [] for w in WORKER_COUNTS}
    for _ in range(repeats):
        for w in WORKER_COUNTS:
            walls[w].append(whole_build(src, args, w))
    measured = {w: in_process(src, config, w) for w in (1, 2)}
    results = {w: r for w, (r, _) in measured.items()}
    cpu = {w: c for w, (_, c) in measured.items()}
    wall = {w: statistics.median(v) for w, v in walls.items()}
    steady = {w: steady_rate(r) for w, r in results.items()}
    two = results[2]
    n = two.samples
    startup = two.stats.get("worker_startup_s") or [float("nan")]
    print(f"\n**{name}**, {n} samples, median of {repeats}; load average {load:.1f} → ", end="")
    print(f"{os.getloadavg()[0]:.1f}\n")
    print("| | 1 worker | 2 workers | 2w / 1w | default | default / 1w |")
    print("|---|---|---|---|---|---|")
    print(
        f"| whole build (process), s | {wall[1]:.2f} | {wall[2]:.2f} | {wall[1] / wall[2]:.2f} | "
        f"{wall[None]:.2f} | {wall[1] / wall[None]:.2f} |"
    )
    print(
        f"| steady state, samples/s | {steady[1]:.1f} | {steady[2]:.1f} | "
        f"{steady[2] / steady[1]:.2f} | | |"
    )
    print(
        f"| CPU per sample (process tree), ms | {1e3 * cpu[1]:.1f} | {1e3 * cpu[2]:.1f} | "
        f"{cpu[2] / cpu[1]:.2f} | | |"
    )
    print(
        f"\n2 workers: driver CPU {1e3 * two.stats['driver_overhead_cpu_s'] / n:.3f} ms/sample ",
        end="",
    )
    print(
        f"(besides the {two.stats['groups_here']} of {two.shards} shards it built itself during ",
        end="",
    )
    print(f"start-up), {two.stats['ipc_bytes'] / n:.0f} bytes/sample between processes, ", end="")
    print(f"worker start-up (spawn → ready) {statistics.median(startup):.2f} s.")


def small_builds(jpg_dir: Path, sizes: list[int], repeats: int) -> None:
    """Whole builds of the first N photos: the default worker count against 1 worker."""
    print(f"\n**Small builds** (photos, PNG), median of {repeats}; load {os.getloadavg()[0]:.1f}\n")
    print("| photos | 1 worker, s | default, s | default / 1 worker (time) |")
    print("|---|---|---|---|")
    files = sorted(jpg_dir.iterdir())
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            for f in files[:size]:
                (src / f.name).symlink_to(f)
            one = statistics.median(whole_build(src, [], 1) for _ in range(repeats))
            default = statistics.median(whole_build(src, [], None) for _ in range(repeats))
        print(f"| {size} | {one:.2f} | {default:.2f} | {default / one:.2f} |")


def process_startup(repeats: int) -> float:
    """Seconds of ``python -m rawpairs.cli --help``: interpreter + the CLI's imports."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rawpairs.cli", "--help"], check=True,
                       capture_output=True, env=_env())  # fmt: skip
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _hold_for_a_worker(after_sources: int) -> Callable[[int, int, int, int], None]:
    """A progress callback holding the build, once, after ``after_sources``, until a worker has
    started (so that workers write the next shards)."""
    waited: list[bool] = []

    def progress(done: int, total: int, written: int, errors: int) -> None:
        if done >= after_sources and not waited:
            while not multiprocessing.active_children():
                time.sleep(0.05)
            time.sleep(0.3)
            waited.append(True)

    return progress


def identity_runs(jpg_dir: Path, runs: int) -> None:
    """``runs`` two-worker builds of the photos, one shard per 8 sources, workers started however
    small the build (every other run waits for one after 3 shards, so that workers write the
    rest): all byte-identical?"""
    import rawpairs.pool

    rawpairs.pool.WORKERS_WORTH_S = 0.0
    files = sorted(jpg_dir.iterdir())[:96]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for f in files:
            (src / f.name).symlink_to(f)
        config = BuildConfig(crop=128, crops=2)
        reference = None
        differ = by_workers = 0
        for run in range(runs):
            out = Path(tmp) / f"out{run % 2}"
            progress = _hold_for_a_worker(24) if run % 2 else None
            result = build(
                src, out, config, workers=2, sources_per_shard=8, overwrite=True, progress=progress
            )
            by_workers += result.stats["groups_here"] < result.shards
            tree = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "build.json"}
            if reference is None:
                reference = tree
            differ += tree != reference
            for p in out.iterdir():
                p.unlink()
            out.rmdir()
    print(
        f"\n{runs} two-worker builds of {len(files)} photos ({by_workers} with shards written by "
        f"workers): {differ} differed from the first."
    )


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
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--raws", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[4, 16, 64, 256])
    parser.add_argument("--identity-runs", type=int, default=0)
    args = parser.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    cv2.setNumThreads(1)
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name'"], capture_output=True, text=True)
    print(f"machine: {cpu.stdout.split(':')[-1].strip()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        jpg_dir, raw_dir = make_inputs(Path(tmp), args.photos, args.raws)
        print(f"\nCLI process start-up (python -m rawpairs.cli --help): {process_startup(3):.2f} s")
        tables = [
            ("photo 500×375 → pair (PNG level 1)", jpg_dir, [], BuildConfig()),
            ("photo 500×375 → pair (JPEG q95)", jpg_dir, ["--rgb-format", "jpeg"],
             BuildConfig(rgb_format="jpeg")),
            ("DNG 1000×750 → pair (PNG, Malvar)", raw_dir, [], BuildConfig()),
        ]  # fmt: skip
        for name, src, cli_args, config in tables:
            scaling_table(name, src, cli_args, config, args.repeats)
        if args.sizes:
            small_builds(jpg_dir, args.sizes, args.repeats)
        if args.identity_runs:
            identity_runs(jpg_dir, args.identity_runs)
        packing = plain_packing(jpg_dir)
        print(f"\nplain webdataset packing of the same JPEG files: {packing:.0f} files/s")


if __name__ == "__main__":
    main()
