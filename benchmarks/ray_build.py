"""Ray engine vs local engine: build throughput on this machine, and per-sample costs for scaling.

    python -m benchmarks.ray_build [--photos 960] [--repeats 3] [--cores-per-node 32]
                                   [--price-per-hour 1.36] [--photos-total 1281167]

Inputs: ImageNet-sized (500×375) JPEGs cut from scikit-image's bundled photos (as in
benchmarks/build.py), built whole (no crop, PNG level 1, the default configuration).

Measured: for the local engine (2 workers), the Ray engine on a 2-CPU Ray instance started once
beforehand (median of ``--repeats`` alternating runs) and the Ray engine starting its own
instance: the seconds to the first finished shard (start-up), the samples/s after it (steady
state) and the CPU time per sample of the whole process tree (driver, workers, Ray's daemons; read
from /proc, so Linux only). Then the per-sample costs a cluster estimate needs: worker CPU time
(a 1-worker build), the driver's CPU time (records only: each task writes its own shard), bytes
through Ray's object store (tasks and records) and bytes written. Prints Markdown for
docs/benchmarks.md and the estimate table for docs/scale.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import ray

from benchmarks.build import make_inputs, tree_cpu_seconds
from rawpairs.build import BuildResult, build
from rawpairs.config import BuildConfig

CONFIG = BuildConfig()
WORKERS = 2


class Run(NamedTuple):
    first: float  # seconds from the call to the first finished shard (start-up)
    rate: float  # samples/s after it
    cpu: float  # CPU seconds per sample of this process and all its descendants
    driver: float  # driver CPU seconds per sample, besides groups it built itself
    moved: float  # bytes per sample between processes (pipes or object store)
    size: int  # bytes of shards written


def build_run(src: Path, engine: str, workers: int = WORKERS) -> tuple[Run, BuildResult]:
    """One whole build with ``engine`` into a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = tree_cpu_seconds()
        result = build(src, Path(tmp) / "out", CONFIG, workers=workers, engine=engine)
        cpu = (tree_cpu_seconds() - cpu0) / result.samples
        size = sum(p.stat().st_size for p in (Path(tmp) / "out").glob("rawpairs-*.tar"))
    marks = result.stats["records"]
    (t1, _), (t2, _) = marks[0], marks[-1]
    rate = sum(n for _, n in marks[1:]) / (t2 - t1) if t2 > t1 else float("nan")
    n = result.samples
    driver = result.stats["driver_overhead_cpu_s"] / n
    return Run(t1, rate, cpu, driver, result.stats["ipc_bytes"] / n, size), result


def ray_startup() -> float:
    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=WORKERS,
        object_store_memory=100 * 2**20,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    return time.perf_counter() - t0


def estimate(
    worker_s: float, driver_s: float, bytes_per_sample: float, args: argparse.Namespace
) -> list[str]:
    """Markdown: hours and cost of ``--photos-total`` photos on N nodes, one build (one driver,
    the Ray engine over all nodes, each task writing its shard to shared storage)."""
    nic = 1.25e9 * 0.8  # 10 Gbit/s at 80 %: each node's egress to the storage
    cores_rate, network_rate = args.cores_per_node / worker_s, nic / bytes_per_sample
    node_rate = min(cores_rate, network_rate)
    driver_rate = 1 / driver_s
    rows = [
        f"One driver handles {driver_rate:,.0f} samples/s of records "
        f"({driver_rate * worker_s:,.0f} worker cores' output); a node writes "
        f"{node_rate * bytes_per_sample / 1e6:,.0f} MB/s.\n",
        "| nodes | samples/s | hours | cost | limited by |",
        "|---|---|---|---|---|",
    ]
    for nodes in (1, 4, 16, 64, 256):
        rate = min(nodes * node_rate, driver_rate)
        hours = args.photos_total / rate / 3600
        cost = hours * (nodes + 1) * args.price_per_hour
        limit = (
            "driver"
            if rate == driver_rate
            else "cores"
            if cores_rate <= network_rate
            else "network"
        )
        rows.append(f"| {nodes} | {rate:,.0f} | {hours:.2f} | ${cost:,.0f} | {limit} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=960)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores-per-node", type=int, default=32)
    parser.add_argument("--price-per-hour", type=float, default=1.36)
    parser.add_argument("--photos-total", type=int, default=1_281_167)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, ray {ray.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        src, _ = make_inputs(Path(tmp), args.photos, 0)
        load = os.getloadavg()[0]
        one, _ = build_run(src, "local", workers=1)
        cold, _ = build_run(src, "ray")  # starts and stops its own Ray instance
        startup = ray_startup()
        runs: dict[str, list[Run]] = {"local": [], "ray": []}
        for _ in range(args.repeats):
            for engine, results in runs.items():
                results.append(build_run(src, engine)[0])
        ray.shutdown()
    med = {e: Run(*map(statistics.median, zip(*rs, strict=True))) for e, rs in runs.items()}
    print(f"\n{args.photos} photos 500×375 → pairs (PNG level 1), {WORKERS} workers, median of")
    print(f"{args.repeats} alternating runs; load average {load:.1f} → {os.getloadavg()[0]:.1f}; ")
    print(f"ray.init of a 2-CPU instance {startup:.1f} s\n")
    print("| engine | first shard after | samples/s after it | vs local | CPU ms/sample "
          "| driver ms/sample | bytes/sample between processes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    lo = med["local"]
    rows = [
        ("local, 1 worker (in this process)", one),
        ("local, 2 workers", lo),
        ("ray (instance already running)", med["ray"]),
        ("ray (starts its own instance)", cold),
    ]
    for name, run in rows:
        print(
            f"| {name} | {run.first:.1f} s | {run.rate:.1f} | {run.rate / lo.rate:.2f} | "
            f"{1e3 * run.cpu:.1f} | {1e3 * run.driver:.3f} | {run.moved:.0f} |"
        )
    per_sample = lo.size / args.photos
    worker_s = one.cpu
    print(f"\nbytes written per sample: {per_sample / 1e3:.0f} kB")
    print(
        f"\n{args.photos_total:,} photos, {args.cores_per_node} cores/node, "
        f"${args.price_per_hour}/node-hour (+1 driver node), 10 Gbit/s per node:\n"
    )
    print("\n".join(estimate(worker_s, med["ray"].driver, per_sample, args)))


if __name__ == "__main__":
    main()
