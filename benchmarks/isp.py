"""ISP speed on one core: forward (bilinear, Malvar) and inverse (noise on, off), exposure, binning.

Sizes: 12 MP (4000×3000) and an ImageNet-sized photo (500×374: 375 rows cropped to an even
count, as the builder does). Each figure is the least thread CPU time of several runs, as MP/s
and as a ratio to one streaming numpy pass over the same data (``np.multiply(a, 1.0001, out=b)``
on the float32 H×W×3 image); for 500×374 also samples/s. Context rows: the stage-by-stage numpy
reference of the inverse ISP, numpy's and rawpairs' Gaussian generators, and decoding the JPEG.

Run: ``python -m benchmarks.isp`` (prints a Markdown table for docs/benchmarks.md).
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import platform
import subprocess
import time
from collections.abc import Callable

import cv2
import numpy as np
import skimage.data

from rawpairs.cfa import bin_mosaic
from rawpairs.isp import auto_exposure, process
from rawpairs.priors import sample_camera
from rawpairs.rng import standard_normal
from rawpairs.unprocess import unprocess, unprocess_reference

cv2.setNumThreads(1)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Least CPU time of this thread over ``repeats`` runs, after one warm-up run.

    Everything timed runs on this one thread, so its CPU time is the work done; unlike wall
    time it does not count the time other processes hold the core on a shared machine.
    """
    fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return min(times)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    photo = skimage.data.astronaut()
    camera = sample_camera(np.random.default_rng(0))
    sizes = {"12 MP (4000×3000)": (3000, 4000, 5), "500×374": (374, 500, 50)}
    print(f"CPU: {cpu_name()}; one thread; numpy {np.__version__}")
    print("| image | step | ms | MP/s | × one numpy pass | samples/s |")
    print("|---|---|---:|---:|---:|---:|")
    for label, (h, w, repeats) in sizes.items():
        rgb = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
        image_f32 = rgb.astype(np.float32)
        scratch = np.empty_like(image_f32)
        t_pass = best_of(lambda a=image_f32, b=scratch: np.multiply(a, 1.0001, out=b), repeats)
        raw = unprocess(rgb, camera, noise=False)
        ok, jpeg = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        steps: dict[str, Callable[[], object]] = {
            "one numpy pass (float32 H×W×3)": lambda a=image_f32, b=scratch: np.multiply(
                a, 1.0001, out=b
            ),
            "inverse ISP, noise on": lambda x=rgb: unprocess(
                x, camera, rng=np.random.default_rng(1)
            ),
            "inverse ISP, noise off": lambda x=rgb: unprocess(x, camera, noise=False),
            "forward ISP, bilinear": lambda r=raw: process(r, camera, demosaic="bilinear"),
            "forward ISP, Malvar": lambda r=raw: process(r, camera, demosaic="malvar"),
            "exposure rule (auto_exposure)": lambda r=raw: auto_exposure(r, camera),
            "Bayer binning ×2 (bin_mosaic)": lambda r=raw: bin_mosaic(r, 2),
            "context: numpy Generator.standard_normal (H×W float32)": lambda n=h * w: (
                np.random.default_rng(1).standard_normal(n, dtype=np.float32)
            ),
            "context: rawpairs.rng.standard_normal (H×W float32)": lambda n=h * w: standard_normal(
                np.random.default_rng(1), n
            ),
            "context: JPEG decode (cv2, quality 90)": lambda j=jpeg: cv2.imdecode(
                j, cv2.IMREAD_COLOR
            ),
            "context: inverse ISP, numpy stage-by-stage reference": lambda x=rgb: (
                unprocess_reference(x, camera, rng=np.random.default_rng(1))
            ),
        }
        for step, fn in steps.items():
            reps = 1 if "reference" in step and h * w > 1e6 else repeats
            t = best_of(fn, reps)
            rate = f"{1 / t:.0f}" if h * w < 1e6 else ""
            print(
                f"| {label} | {step} | {t * 1e3:.2f} | {h * w / t / 1e6:.0f} | "
                f"{t / t_pass:.1f} | {rate} |"
            )


if __name__ == "__main__":
    main()
