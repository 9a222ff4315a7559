"""The bundled sources and their split; pair shards built by :func:`rawpairs.build.build`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .config import (
    RAW_EXTENSIONS,
    SPLITS,
    TRAIN_PHOTOS,
    TUNE_PHOTOS,
    TUNE_RAWS,
    VAL_PHOTOS,
    VAL_RAWS,
    ExperimentConfig,
)


def _write_photo(path: Path, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), cv2.cvtColor(rgb[..., :3], cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write PNG")


def _people_sources(folder: Path, split: str) -> list[str]:
    """Photos of people (:mod:`.people`, fetched once into the cache) for ``--task segment``:
    its held-out split, or for ``"tune"`` its training photos with every third held back."""
    from .people import write_people_photos

    cache = Path(os.environ.get("DISTILL_CACHE", Path.home() / ".cache" / "rawpairs")) / "people"
    if split == "heldout":
        return write_people_photos(folder, cache)
    staging = folder / "_people"
    notes = write_people_photos(staging, cache)
    for part in ("train", "val"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(sorted((staging / "train").iterdir())):
        path.rename(folder / ("val" if index % 3 == 2 else "train") / path.name)
    shutil.rmtree(staging)
    return [*notes, "tune split: every third training photo of people held back"]


def bundled_sources(
    folder: Path, raw_dir: Path | None, split: str = "heldout", task: str = "classify"
) -> list[str]:
    """Write a split of the bundled sources to ``folder/{train,val}``; return notes.

    ``split="heldout"``: training sources → ``train``, held-out sources → ``val``. ``"tune"``:
    the training sources only, ``TUNE_PHOTOS``/``TUNE_RAWS`` → ``val``, the rest → ``train`` (for
    choosing settings without looking at the held-out sources). Photos are written as PNG; RAW
    files are linked. The motorcycle views are one scene and stay together (held out).
    ``task="segment"``: photos of people (:mod:`.people`) instead of scikit-image's, plus the RAW
    files of ``raw_dir`` if given.
    """
    import skimage.data

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    notes = []
    if task == "segment":
        notes += _people_sources(folder, split)
        return notes + _link_raws(folder, raw_dir, split)
    for part in ("train", "val"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    if split == "tune":
        photos = (
            ("train", tuple(p for p in TRAIN_PHOTOS if p not in TUNE_PHOTOS)),
            ("val", TUNE_PHOTOS),
        )
    else:
        photos = (("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS))
    for part, names in photos:
        for name in names:
            image = getattr(skimage.data, name)()
            if name == "stereo_motorcycle":
                _write_photo(folder / part / "motorcycle_left.png", image[0])
                _write_photo(folder / part / "motorcycle_right.png", image[1])
            else:
                _write_photo(folder / part / f"{name}.png", image)
    return notes + _link_raws(folder, raw_dir, split)


def _link_raws(folder: Path, raw_dir: Path | None, split: str) -> list[str]:
    """Link the RAW files of ``raw_dir`` into ``folder/{train,val}`` by the split; notes."""
    notes = []
    if raw_dir is not None:
        raws = (
            sorted(p for p in raw_dir.iterdir() if p.suffix.lower() in RAW_EXTENSIONS)
            if raw_dir.is_dir()
            else []
        )
        if raws:
            for path in raws:
                if split == "tune":
                    if path.name in VAL_RAWS:
                        continue
                    part = "val" if path.name in TUNE_RAWS else "train"
                else:
                    part = "val" if path.name in VAL_RAWS else "train"
                link = folder / part / path.name
                if not link.exists():
                    link.symlink_to(path)
        else:
            notes.append(f"no RAW files at {raw_dir}: photos only")
    else:
        notes.append("RAW files not used (preset)")
    return notes


def _existing_shards(folder: Path) -> dict[str, Any]:
    """The shards a previous run left in ``folder`` (``--reuse-shards``): their count."""
    shards = sorted(folder.glob("*.tar"))
    if not shards:
        raise ValueError(f"{folder}: no shards to reuse (run once without --reuse-shards)")
    return {"shards": len(shards)}


def build_shards(src: Path, out: Path, config: ExperimentConfig, crops: int) -> dict[str, Any]:
    """Pair shards of ``src`` (random ``build_crop`` crops, seed 0); returns the build counts."""
    from rawpairs.build import build
    from rawpairs.config import BuildConfig

    build_config = BuildConfig(
        seed=0,
        crop=config.build_crop,
        crops=crops,
        max_side=config.max_side,
        labels=config.labels,
    )
    result = build(
        src,
        out,
        build_config,
        workers=config.workers,
        samples_per_shard=64,
        overwrite=True,
        warn=lambda line: print(f"  build warning: {line}", flush=True),
    )
    if result.samples == 0:
        raise ValueError(f"{src}: no pairs were built")
    return {"sources": result.sources, "samples": result.samples, "errors": result.errors}
