"""Ray engine vs local engine: build throughput on this machine, and per-sample costs for scaling.

    python benchmarks/ray_build.py [--photos 960] [--repeats 5] [--cores-per-node 32]
                                   [--price-per-hour 1.36] [--photos-total 1281167]

Inputs: ImageNet-sized (500×375) JPEGs cut from scikit-image's bundled photos (as in
benchmarks/build.py), built whole (no crop, PNG level 1, the default configuration).

Measured: for the local engine (2 spawned workers), the Ray engine on a 2-CPU Ray instance
started once beforehand (median of ``--repeats`` alternating runs) and the Ray engine starting
its own instance: the seconds to the first written sample (start-up), the samples/s after it
(steady state) and the CPU time per sample of the whole process tree (driver, workers, Ray's
daemons; read from /proc, so Linux only; steadier than wall time on a shared machine). Then the
per-sample costs a cluster estimate needs: worker CPU time, the driver's write time (tar, fsync,
SHA-256) and object-store round trip, and bytes written. Prints Markdown for docs/benchmarks.md
and the estimate table for docs/scale.md.
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
from build import make_inputs  # benchmarks/build.py: this script's folder is on sys.path

from rawpairs.build import build, discover_sources
from rawpairs.sample import BuildConfig, process_source
from rawpairs.shards import ShardWriter

CONFIG = BuildConfig()
WORKERS = 2


class Run(NamedTuple):
    first: float  # seconds from the call to the first written sample (start-up)
    rate: float  # samples/s after the first
    cpu: float  # CPU seconds per sample of this process and all its descendants
    size: int  # bytes of shards written


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


def build_run(src: Path, engine: str) -> Run:
    """One whole build with ``engine`` into a temporary folder."""
    marks: list[tuple[float, int]] = []

    def progress(done: int, total: int, written: int, errors: int) -> None:
        marks.append((time.perf_counter(), written))

    with tempfile.TemporaryDirectory() as tmp:
        cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
        result = build(
            src, Path(tmp) / "out", CONFIG, workers=WORKERS, engine=engine, progress=progress
        )
        cpu = (tree_cpu_seconds() - cpu0) / result.samples
        size = sum(p.stat().st_size for p in (Path(tmp) / "out").glob("rawpairs-*.tar"))
    (t1, n1), (t2, n2) = marks[0], marks[-1]
    return Run(t1 - t0, (n2 - n1) / (t2 - t1), cpu, size)


def per_sample_costs(src: Path) -> dict[str, float]:
    """Seconds per sample: worker CPU, driver write, object-store put+get (Ray running)."""
    sources, _ = discover_sources(src)
    process_source(sources[0], CONFIG)  # warm-up: imports, numba cache
    t0 = time.perf_counter()
    results = [process_source(s, CONFIG) for s in sources]
    worker = (time.perf_counter() - t0) / len(sources)
    samples = [members for _, payload in results for members, _ in payload]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        writer = ShardWriter(Path(tmp), 0)
        for members in samples:
            writer.add(members)
        writer.commit()
        write = (time.perf_counter() - t0) / len(samples)
    t0 = time.perf_counter()
    for result in results:
        ray.get(ray.put(result))
    transfer = (time.perf_counter() - t0) / len(samples)
    return {"worker": worker, "write": write, "transfer": transfer}


def ray_startup() -> float:
    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=WORKERS,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    return time.perf_counter() - t0


def estimate(
    costs: dict[str, float], bytes_per_sample: float, args: argparse.Namespace
) -> list[str]:
    """Markdown: hours and cost of ``--photos-total`` photos on N nodes.

    Either one build (one driver, the Ray engine over all nodes, plus a driver node) or one
    build per node over its own slice of the sources (N drivers, each node's local engine).
    """
    nic = 1.25e9 * 0.8  # 10 Gbit/s at 80 %: the driver's ingress
    driver_rate = min(1 / (costs["write"] + costs["transfer"]), nic / bytes_per_sample)
    node_rate = args.cores_per_node / costs["worker"]
    rows = [
        f"One driver writes at most {driver_rate:,.0f} samples/s: "
        f"{driver_rate * costs['worker']:.1f} worker cores keep it busy.\n",
        "| nodes | one build: samples/s | hours | cost | one build per node: samples/s "
        "| hours | cost |",
        "|---|---|---|---|---|---|---|",
    ]
    for nodes in (1, 4, 16, 64):
        one = min(nodes * node_rate, driver_rate)
        each = nodes * min(node_rate, driver_rate)
        h1, h2 = args.photos_total / one / 3600, args.photos_total / each / 3600
        c1, c2 = h1 * (nodes + 1) * args.price_per_hour, h2 * nodes * args.price_per_hour
        cells = (nodes, f"{one:,.0f}", f"{h1:.2f}", f"${c1:,.0f}", f"{each:,.0f}", f"{h2:.2f}")
        rows.append("| " + " | ".join(map(str, cells)) + f" | ${c2:,.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=960)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cores-per-node", type=int, default=32)
    parser.add_argument("--price-per-hour", type=float, default=1.36)
    parser.add_argument("--photos-total", type=int, default=1_281_167)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, ray {ray.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        src, _ = make_inputs(Path(tmp), args.photos, 0)
        cold = build_run(src, "ray")  # starts and stops its own Ray instance
        startup = ray_startup()
        runs: dict[str, list[Run]] = {"local": [], "ray": []}
        for _ in range(args.repeats):
            for engine, results in runs.items():
                results.append(build_run(src, engine))
        costs = per_sample_costs(src)
        ray.shutdown()
    med = {e: Run(*map(statistics.median, zip(*rs, strict=True))) for e, rs in runs.items()}
    print(f"\n{args.photos} photos 500×375 → pairs (PNG level 1), {WORKERS} workers, median of")
    print(f"{args.repeats} alternating runs; load average {os.getloadavg()[0]:.1f}; ", end="")
    print(f"ray.init of a 2-CPU instance {startup:.1f} s\n")
    print(
        "| engine | first sample after | samples/s after it | vs local | CPU ms/sample | vs local |"
    )
    print("|---|---|---|---|---|---|")
    lo = med["local"]
    rows = [
        ("local (spawns 2 processes per build)", lo),
        ("ray (instance already running)", med["ray"]),
        ("ray (starts its own instance)", cold),
    ]
    for name, run in rows:
        cpu = f"{1e3 * run.cpu:.1f} | {run.cpu / lo.cpu:.2f}" if run is not cold else "– | –"
        print(f"| {name} | {run.first:.1f} s | {run.rate:.1f} | {run.rate / lo.rate:.2f} | {cpu} |")
    size = lo.size
    per_sample = size / args.photos
    print("\n| per sample | value |")
    print("|---|---|")
    print(f"| worker CPU time (read, unprocess, encode) | {1e3 * costs['worker']:.1f} ms |")
    print(f"| driver write (tar, fsync, SHA-256) | {1e3 * costs['write']:.2f} ms |")
    print(f"| driver object-store put + get | {1e3 * costs['transfer']:.2f} ms |")
    print(f"| bytes written | {per_sample / 1e3:.0f} kB |")
    print(
        f"\n{args.photos_total:,} photos, {args.cores_per_node} cores/node, "
        f"${args.price_per_hour}/node-hour, one driver on a 10 Gbit/s link:\n"
    )
    print("\n".join(estimate(costs, per_sample, args)))


if __name__ == "__main__":
    main()
