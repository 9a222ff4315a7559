"""The end-to-end demo on bundled data: ``python -m examples.demo --out demo_out`` (``make demo``).

1. Writes real photos that scikit-image ships (no download) as JPEG/PNG into ``<out>/src/photos``,
   and turns two more into camera-like DNG files (simulated RAW, written with
   :func:`rawpairs.dng.write_dng`) in ``<out>/src/raw``, so both source kinds run. A zero-byte
   ``broken.dng`` shows how a bad input is reported without stopping the build.
   A ``LICENSE.txt`` beside them quotes scikit-image's licence statement for each image; the
   build names it in each split's dataset card (``README.md``).
2. Builds shards split by a hash of each file's path (``rawpairs build --val-fraction 0.25``:
   ``shards/train`` and ``shards/val``, each a complete build), then inspects and verifies
   both and writes a preview contact sheet of ``train`` (``rawpairs inspect``).
3. With ``--train-steps N`` (and the ``distill`` extra installed) runs a short CPU distillation
   on ``shards/train``, scored on ``shards/val`` at its start and end (the summary's held-out KL
   and agreement beside the teacher on the naive render), and evaluates the student's agreement
   with the teacher on ``shards/val``: photos the student never saw (a smoke run of the training
   path; see docs/results.md for the real comparison).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import cv2
import numpy as np

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry")
RAW_FROM = ("hubble_deep_field", "stereo_motorcycle")
VAL_FRACTION = 0.25  # puts retina and immunohistochemistry (by their paths' hashes) into val
# What scikit-image's documentation of each function says of the image's licence.
LICENCES = {
    "astronaut": "NASA Great Images; no known copyright restrictions, public domain",
    "chelsea": "no copyright restrictions, CC0 by the photographer (Stefan van der Walt)",
    "coffee": "no copyright restrictions, CC0 by the photographer (Rachel Michetti)",
    "rocket": "SpaceX photos, released in the public domain",
    "retina": "Wikimedia Commons, CC0 1.0 Universal Public Domain Dedication (M. Häggström)",
    "immunohistochemistry": "CMMI; no known copyright restrictions",
    "hubble_deep_field": "NASA HubbleSite, may be freely used in the public domain",
    "stereo_motorcycle": "Middlebury stereo datasets (Scharstein et al. 2014); scikit-image "
    "states no licence",
}


def _skimage_photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if isinstance(image, tuple):  # the stereo pair: take the left view
        image = image[0]
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def write_sources(src: Path, seed: int = 0) -> list[Path]:
    """Write the demo's photos, simulated DNGs and one broken file under ``src``."""
    from rawpairs.dng import write_dng
    from rawpairs.unprocess import simulate_raw

    (src / "photos").mkdir(parents=True, exist_ok=True)
    (src / "raw").mkdir(parents=True, exist_ok=True)
    written = []
    for i, name in enumerate(PHOTOS):
        rgb = _skimage_photo(name)
        path = src / "photos" / (f"{name}.jpg" if i % 2 == 0 else f"{name}.png")
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else []
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        written.append(path)
    rng = np.random.default_rng(seed)
    for name in RAW_FROM:
        rgb = _skimage_photo(name)
        rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
        mosaic, camera = simulate_raw(rgb, rng)
        path = src / "raw" / f"{name}.dng"
        write_dng(path, mosaic, camera, make="rawpairs", model="demo")
        written.append(path)
    lines = [f"{name}: {text}" for name, text in LICENCES.items()]
    licence = src / "LICENSE.txt"
    licence.write_text(
        "Images from scikit-image's skimage.data; licence as its documentation states:\n"
        + "\n".join(lines)
        + "\n",
        encoding="utf-8",
    )
    written.append(licence)
    broken = src / "raw" / "broken.dng"
    broken.write_bytes(b"")
    written.append(broken)
    return written


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--train-steps", type=int, default=0, show_default=True)
def main(out: Path, workers: int, train_steps: int) -> None:
    """Build, verify and preview pair shards from bundled photos (and optionally distil)."""
    from rawpairs.cli import main as cli

    src = out / "src"
    shards = out / "shards"
    write_sources(src)
    click.echo(f"demo sources written to {src}")
    build_args = ["build", "--src", str(src), "--out", str(shards), "--crop", "256"]
    build_args += ["--crops", "2", "--workers", str(workers), "--samples-per-shard", "8"]
    build_args += ["--overwrite", "--seed", "0", "--val-fraction", str(VAL_FRACTION)]
    train_shards, val_shards = shards / "train", shards / "val"
    for args in (
        build_args,
        ["inspect", str(shards), "--verify"],
        ["inspect", str(train_shards), "--preview", str(out / "preview.png")],
    ):
        click.echo(f"$ rawpairs {' '.join(args)}")
        code = cli.main(args=args, standalone_mode=False)
        if code:
            sys.exit(code)
    if train_steps:
        from distill.evaluate import main as evaluate
        from distill.train import main as train

        run = out / "run"
        args = ["--shards", str(train_shards), "--out", str(run), "--steps", str(train_steps)]
        args += ["--crop", "128", "--batch-size", "8", "--warmup-steps", "5", "--device", "cpu"]
        args += ["--num-workers", "0", "--no-progress", "--overwrite"]  # a re-run starts again
        args += ["--val-shards", str(val_shards)]  # the summary: held-out KL vs the naive render
        click.echo(f"$ distill train {' '.join(args)}")
        if train(args):
            sys.exit(1)
        args = ["--shards", str(val_shards), "--checkpoint", str(run / "last.pt")]
        args += ["--device", "cpu"]
        click.echo(f"$ distill evaluate {' '.join(args)}")
        if evaluate(args):
            sys.exit(1)
    click.echo(f"demo done: shards in {shards}, preview in {out / 'preview.png'}")


if __name__ == "__main__":
    main()
