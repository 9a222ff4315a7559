"""Does a camera profile help distillation? (issue 17; results in docs/calibrate.md)

Students are trained by label-free KD (the ``kd`` method and ``cpu`` preset of
:mod:`experiments.isp_distillation`) on the bundled training photos, whose RAW is simulated twice:
with the generic capture priors, and with the profile ``rawpairs calibrate`` writes for one
camera from its files in ``../shared/data/raw``. Both are scored on that camera's files in
``../shared/data/raw_more`` (real RAW, other scenes, never seen in training or calibration)
against the teacher on our forward ISP's RGB of the same files; the teacher's baselines on the
held-out RAW (naive, gray-world, full ISP) are printed beside them. Same photos, crops, seeds and
training: only the simulated camera differs.

Run: ``python -m experiments.profile_distillation --camera Kodak-DC120 --seeds 0 1 2``
(``--work DIR`` keeps shards and checkpoints).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.isp_distillation import METHODS, bundled_sources, make_config
from experiments.isp_distillation.data import build_shards
from experiments.isp_distillation.scoring import load_held_out, reference_rows
from experiments.isp_distillation.training import train_and_score

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _links(folder: Path, files: list[Path]) -> Path:
    folder.mkdir(parents=True)
    for path in files:
        (folder / path.name).symlink_to(path)
    return folder


def _build(src: Path, out: Path, config, crops: int, priors) -> None:  # type: ignore[no-untyped-def]
    """Pairs of ``src`` as :func:`experiments.isp_distillation.data.build_shards` makes them
    (random ``build_crop`` crops, seed 0), with these capture priors."""
    from rawpairs.build import build
    from rawpairs.config import BuildConfig

    build_config = BuildConfig(
        seed=0, crop=config.build_crop, crops=crops, max_side=config.max_side, priors=priors
    )
    result = build(src, out, build_config, workers=config.workers, samples_per_shard=64)
    if result.samples == 0 or result.errors:
        raise SystemExit(f"{src}: {result.summary}")


def run(camera: str, seeds: tuple[int, ...], work: Path, steps: int | None = None) -> dict:
    from distill.config import DEFAULT_TEACHERS
    from distill.models import load_teacher
    from rawpairs.calibrate import calibrate, raw_files
    from rawpairs.priors import CapturePriors

    started = time.perf_counter()
    config = make_config("cpu", seeds=seeds, methods=("kd",), steps=steps, eval_points=1)
    chosen = [p for p in raw_files(SHARED / "raw") if p.name.startswith(camera + "-")]
    held = [p for p in raw_files(SHARED / "raw_more") if p.name.startswith(camera + "-")]
    if not chosen or not held:
        raise SystemExit(f"{camera}: needs files in both {SHARED}/raw and {SHARED}/raw_more")
    profile_path = work / f"{camera}.json"
    calibrate(_links(work / "calibration", chosen), profile_path)
    profile = CapturePriors.from_json(profile_path.read_text())
    bundled_sources(work / "src", None, "heldout", "classify")  # photos only
    val = _links(work / "val_raw", held)
    build_shards(val, work / "shards" / "val", config, config.val_crops)  # real RAW: no priors
    for name, priors in (("generic", CapturePriors()), ("profile", profile)):
        _build(work / "src" / "train", work / "shards" / name, config, config.train_crops, priors)
    teacher = load_teacher(config.teacher or DEFAULT_TEACHERS[config.task]).to(config.device)
    helds = {"clean": load_held_out(work / "shards" / "val", teacher, config)}
    rows = reference_rows("clean", helds["clean"])
    kd = next(m for m in METHODS if m.name == "kd")
    for name in ("generic", "profile"):
        for seed in seeds:
            new, _, _ = train_and_score(
                config, kd, seed, work / "shards" / name, work / "runs" / f"{name}{seed}", helds
            )
            final = [r for r in new if r["step"] == config.steps]
            rows += [{**r, "method": f"kd ({name} priors)"} for r in final]
            elapsed = time.perf_counter() - started
            score = f"{final[0]['top1_agreement']:.1%}, KL {final[0]['kl']:.3f}"
            print(f"[{elapsed:6.0f} s] {name} seed {seed}: {score}", flush=True)
    return {
        "camera": camera,
        "calibrated_on": [p.name for p in chosen],
        "held_out": [p.name for p in held],
        "val_samples": helds["clean"].samples,
        "steps": config.steps,
        "seconds": round(time.perf_counter() - started),
        "rows": rows,
    }


def table(result: dict) -> str:
    """Markdown: top-1 agreement and KL per model, mean ± std over seeds."""
    lines = ["| model | seeds | top-1 agreement | KL (nats) |", "|---|---:|---:|---:|"]
    by_model: dict[str, list[dict]] = {}
    for row in result["rows"]:
        by_model.setdefault(row["method"], []).append(row)
    for model, rows in by_model.items():
        top1 = np.array([r["top1_agreement"] for r in rows])
        kl = np.array([r["kl"] for r in rows])
        spread = (lambda a, f: f" ± {a.std(ddof=1) * f:.1f}") if len(rows) > 1 else None
        t = f"{top1.mean():.1%}" + (spread(top1, 100) + " pp" if spread else "")
        k = f"{kl.mean():.3f}" + (f" ± {kl.std(ddof=1):.3f}" if spread else "")
        lines.append(f"| {model} | {len(rows)} | {t} | {k} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--camera", default="Kodak-DC120", help="file-name prefix of the model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="per student (preset: 160)")
    parser.add_argument("--work", default=None)
    parser.add_argument("--out", default=None, help="write the result JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="profile_distillation_") as tmp:
        result = run(args.camera, tuple(args.seeds), Path(args.work or tmp), args.steps)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
