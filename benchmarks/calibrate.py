"""Is a camera profile worth it? Simulated RAW against real RAW of the same camera.

For each camera model of ``../shared/data/raw`` the model's files there are calibrated
(:func:`rawpairs.calibrate.calibrate`), and the held-out files of that model in
``../shared/data/raw_more`` (other scenes; the 550D, which has none there, is compared with its
own calibration file and flagged) are the real RAW to match. Each held-out file's scene is turned
into a photo by our default render, then ``rawpairs build`` simulates a RAW from that photo twice:
with the default (generic) priors and with ``--camera PROFILE``. Same scene, so the statistics
differ only by how the camera was simulated. Statistics of a mosaic, on linear values (black
removed, divided by white − black), per the sample's own CFA:

- ``R/G``, ``B/G``: mean red (blue) site value over mean green site value;
- ``level``: mean site value (the exposure);
- ``clipped``: fraction of sites at or above the white level;
- ``noise@0.1``, ``noise@0.5``: noise variance at levels 0.1 and 0.5, ``shot · x + read``: for a
  real file as :func:`rawpairs.calibrate.neighbour_noise` estimates it, for a simulated one the
  noise the simulation added (the sample's ``noise_shot``, ``noise_read``; an estimate from the
  simulated mosaic would also count the real noise the photo kept from its RAW).

Printed: per model, the real value (mean over the compared files) and the simulated mean ÷ the
real mean (clipped: simulated − real) with and without the profile. Run: ``python -m
benchmarks.calibrate`` (about two minutes on one core).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import cv2
import numpy as np

from rawpairs.build import build
from rawpairs.calibrate import calibrate, neighbour_noise, raw_files
from rawpairs.camera import Camera
from rawpairs.config import BuildConfig
from rawpairs.priors import CapturePriors
from rawpairs.raw_files import read_raw
from rawpairs.sample import Source, make_samples
from rawpairs.schema import decode_sample
from rawpairs.tarwalk import read_shard

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# File-name prefixes of the camera models of ../shared/data/raw (see its README).
MODELS = ("Canon-EOS550D", "Canon-PowerShot_G2", "Canon-PowerShot_S40", "Kodak-DC50", "Kodak-DC120")
STATS = ("R/G", "B/G", "level", "clipped", "noise@0.1", "noise@0.5")


@dataclass(frozen=True)
class MosaicStats:
    """The statistics of one mosaic (module docstring)."""

    values: dict[str, float]


def mosaic_stats(
    mosaic: np.ndarray, camera: Camera, noise: tuple[float, float] | None = None
) -> MosaicStats:
    """Statistics of a uint16 mosaic read with ``camera`` (pure). ``noise`` (shot, read): the
    noise the mosaic is known to carry; ``None``: estimated from the mosaic."""
    means = np.zeros(3)
    counts = np.zeros(3)
    clipped = 0
    for pos, channel in enumerate(camera.cfa.channels):
        y, x = divmod(pos, 2)
        raw = mosaic[y::2, x::2].astype(np.float64)
        black = camera.black_level[pos]
        means[channel] += ((raw - black) / (camera.white_level - black)).sum()
        counts[channel] += raw.size
        clipped += int((raw >= camera.white_level).sum())
    means /= counts
    if noise is None:
        estimate = neighbour_noise(mosaic, camera)
        noise = (np.nan, np.nan) if estimate is None else (estimate.shot, estimate.read)
    return MosaicStats(
        {
            "R/G": means[0] / means[1],
            "B/G": means[2] / means[1],
            "level": float(np.average(means, weights=counts)),
            "clipped": clipped / mosaic.size,
            "noise@0.1": noise[0] * 0.1 + noise[1],
            "noise@0.5": noise[0] * 0.5 + noise[1],
        }
    )


def _model_files(folder: Path, model: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in raw_files(folder) if p.name.startswith(model + "-")]


def _simulated(photos: Path, out: Path, priors: CapturePriors) -> dict[str, MosaicStats]:
    """Build the photos with ``priors``; statistics of each simulated mosaic by photo name."""
    result = build(photos, out, BuildConfig(seed=0, priors=priors), workers=1)
    assert result.errors == 0, result.summary
    stats = {}
    for shard in sorted(out.glob("rawpairs-*.tar")):
        for tar_sample in read_shard(shard):
            sample = decode_sample(tar_sample.members, shard.name, tar_sample.key)
            cam = sample.meta.camera
            noise = (cam.noise_shot, cam.noise_read)  # what the simulation added
            stats[Path(sample.meta.source.path).stem] = mosaic_stats(sample.raw, cam, noise)
    return stats


def compare_model(model: str, work: Path) -> dict[str, object]:
    """Calibrate ``model`` on raw/, simulate its held-out scenes with and without the profile."""
    chosen = _model_files(SHARED / "raw", model)
    held = _model_files(SHARED / "raw_more", model) or chosen
    cal = work / model / "calibration"
    cal.mkdir(parents=True)
    for path in chosen:
        (cal / path.name).symlink_to(path)
    profile_path = work / model / f"{model}.json"
    calibrate(cal, profile_path)
    profile = CapturePriors.from_json(profile_path.read_text())
    photos = work / model / "photos"
    photos.mkdir()
    real = {}
    for path in held:
        (sample,) = make_samples(Source(str(path), path.name, "raw"), BuildConfig())
        cv2.imwrite(str(photos / f"{path.stem}.png"), cv2.cvtColor(sample.rgb, cv2.COLOR_RGB2BGR))
        capture = read_raw(path)
        real[path.stem] = mosaic_stats(capture.mosaic, capture.camera)
    generic = _simulated(photos, work / model / "generic", CapturePriors())
    profiled = _simulated(photos, work / model / "profile", profile)
    return {
        "held_out": held is not chosen,
        "files": len(held),
        "calibrated_on": len(chosen),
        "real": real,
        "generic": generic,
        "profile": profiled,
    }


def _summary(rows: dict[str, MosaicStats], real: dict[str, MosaicStats], stat: str) -> float:
    """Mean over files of the simulated value ÷ the mean of the real ones (clipped: minus). A
    ratio of means, not a mean of ratios: a real file whose noise estimate is ~0 (lossy Kodak
    files) would dominate the latter."""
    sim = float(np.mean([rows[k].values[stat] for k in real]))
    ref = float(np.mean([s.values[stat] for s in real.values()]))
    return sim - ref if stat == "clipped" else sim / ref


def _cell(value: float, stat: str, *, difference: bool) -> str:
    if stat == "clipped":
        return f"{value:+.2%}" if difference else f"{value:.2%}"
    return f"{value:.2f}×" if difference else f"{value:.3g}"


def main() -> None:
    if not (SHARED / "raw").is_dir():
        raise SystemExit(f"{SHARED / 'raw'} is absent: nothing to compare")
    print(
        "| camera | files (calibrated / compared) | statistic | real | generic priors | profile |"
    )
    print("|---|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="rawpairs-calibrate-bench-") as tmp:
        for model in MODELS:
            r = compare_model(model, Path(tmp))
            real = r["real"]
            files = f"{r['calibrated_on']} / {r['files']}" + ("" if r["held_out"] else " (same)")
            for stat in STATS:
                real_mean = float(np.mean([s.values[stat] for s in real.values()]))
                cells = [_cell(real_mean, stat, difference=False)] + [
                    _cell(_summary(r[kind], real, stat), stat, difference=True)
                    for kind in ("generic", "profile")
                ]
                print(f"| {model} | {files} | {stat} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
