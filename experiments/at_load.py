"""Classification distillation on at-load shards against stored-RAW shards (issue 18).

    python -m experiments.at_load [--steps 160] [--seeds 0 1 2] [--out experiments/results_at_load]

The bundled photos of the ISP-distillation experiment (training and held-out split of
``experiments.isp_distillation``), saved as JPEG (quality 90, as photo collections are), are
built twice into training shards with the experiment's settings (112 px crops, 24 per photo,
longer side ≤ 384): ``--unprocess in_build`` (RAW stored) and ``--unprocess at_load`` (RGB + recipe;
crops of a JPEG are re-encoded at quality 95). Held-out shards: ``in_build``, 24 crops per photo.
The same KD recipe (``experiments.isp_distillation`` defaults: batch 12, 96 px, T = 4) trains a
student per seed on: stored shards; at-load shards; at-load shards with ``--fresh-cameras``.
Reported: held-out top-1 agreement with the teacher and KL, mean over seeds and the spread, with
the evaluation's 95 % source-bootstrap interval of each run, beside the student's step-0 score
(the untrained student: the teacher behind the identity RAW front-end) and the baselines (the
teacher on a naive, gray-world and full-ISP render of the same held-out RAW). Writes
``results.json`` and ``results.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

CONDITIONS = {
    "stored RAW (in_build)": ("in_build", False),
    "at_load": ("at_load", False),
    "at_load, --fresh-cameras": ("at_load", True),
}


def _sources(folder: Path) -> None:
    """The experiment's held-out split of the bundled photos, as JPEG (quality 90)."""
    import cv2

    from experiments.isp_distillation.data import bundled_sources

    bundled_sources(folder / "png", None, "heldout")
    for png in sorted((folder / "png").rglob("*.png")):
        target = folder / "jpg" / png.parent.name / f"{png.stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 90])


def _build(src: Path, out: Path, unprocess: str, crops: int) -> int:
    from rawpairs.build import build
    from rawpairs.config import BuildConfig

    config = BuildConfig(seed=0, crop=112, crops=crops, max_side=384, unprocess=unprocess)
    return build(src, out, config, workers=1, samples_per_shard=64).samples


def run(steps: int, seeds: list[int], out: Path) -> dict[str, Any]:
    """Build, train and score (module docstring); temporary files are removed."""
    import torch

    torch.set_num_threads(1)  # a shared 2-core machine: two threads only contend
    with tempfile.TemporaryDirectory(prefix="at_load_experiment-") as tmp:
        return _run(Path(tmp), steps, seeds, out)


def _run(work: Path, steps: int, seeds: list[int], out: Path) -> dict[str, Any]:
    import torch

    from distill.checkpoint import load_checkpoint
    from distill.evaluate import evaluate
    from distill.heldout import BASELINES
    from distill.models import load_teacher
    from distill.step import build_student_for
    from distill.train import TrainConfig, train

    _sources(work)
    sizes = {}
    for unprocess in ("in_build", "at_load"):
        _build(work / "jpg" / "train", work / f"train-{unprocess}", unprocess, 24)
        sizes[unprocess] = sum(
            p.stat().st_size for p in (work / f"train-{unprocess}").glob("*.tar")
        )
    _build(work / "jpg" / "val", work / "val", "in_build", 24)
    rows = []
    step0: dict[int, dict[str, Any]] = {}
    for name, (unprocess, fresh) in CONDITIONS.items():
        for seed in seeds:
            run_dir = work / f"run-{unprocess}-{fresh}-{seed}"
            config = TrainConfig(
                shards=str(work / f"train-{unprocess}"), out=str(run_dir), steps=steps,
                batch_size=12, crop=96, temperature=4.0, lr=5e-5, frontend_lr=2e-2,
                warmup_steps=max(1, steps // 10), seed=seed, device="cpu", num_workers=0,
                log_every=max(1, steps // 20), checkpoint_every=0, progress=False,
                fresh_cameras=fresh,
            )  # fmt: skip
            if seed not in step0:  # the untrained student depends on the seed, not the shards
                torch.manual_seed(seed)  # its initialisation, as train draws it
                teacher = load_teacher(config.teacher)
                initial = build_student_for(config, teacher)
                step0[seed] = evaluate(initial, teacher, str(work / "val"), batch_size=32, crop=96)
            start = step0[seed]
            summary = train(config)
            student, teacher, _ = load_checkpoint(summary["checkpoint"])
            scores = evaluate(student, teacher, str(work / "val"), batch_size=32, crop=96)
            s = scores["student"]
            rows.append(
                {
                    "condition": name,
                    "seed": seed,
                    "top1": s["top1_agreement"],
                    "kl": s["kl"],
                    "top1_step0": start["student"]["top1_agreement"],
                    "kl_step0": start["student"]["kl"],
                    "ci": s["ci"],
                    "samples": scores["samples"],
                    "baselines_top1": {b: scores[b]["top1_agreement"] for b in BASELINES},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    result = {"steps": steps, "seeds": seeds, "train_shard_bytes": sizes, "runs": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(table(result))
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['steps']} KD steps per run, seeds {result['seeds']}; held-out top-1 agreement "
        "with the teacher and KL (nats) on in_build held-out shards",
        "",
        "| training shards | top-1 agreement, mean ± sd over seeds (step 0) | per seed (95 % CI) "
        "| KL (step 0) |",
        "|---|---|---|---|",
    ]
    for name in CONDITIONS:
        runs = [r for r in result["runs"] if r["condition"] == name]
        top1 = [r["top1"] for r in runs]
        sd = statistics.stdev(top1) if len(top1) > 1 else 0.0
        each = ", ".join(
            f"{r['top1']:.3f} [{lo:.3f}, {hi:.3f}]"
            for r in runs
            for lo, hi in [r["ci"]["top1_agreement"]]
        )
        kl = statistics.mean(r["kl"] for r in runs)
        top1_0 = statistics.mean(r["top1_step0"] for r in runs)
        kl_0 = statistics.mean(r["kl_step0"] for r in runs)
        lines.append(
            f"| {name} | {statistics.mean(top1):.3f} ± {sd:.3f} ({top1_0:.3f}) | {each} "
            f"| {kl:.3f} ({kl_0:.3f}) |"
        )
    base = result["runs"][0]["baselines_top1"]
    lines += ["", "Baselines (the teacher on a render of the same held-out RAW, top-1 agreement): "
              f"naive {base['naive_teacher']:.3f}, gray-world {base['grayworld_teacher']:.3f}, "
              f"full ISP {base['isp_teacher']:.3f}."]  # fmt: skip
    sizes = result["train_shard_bytes"]
    lines += ["", f"Training shard bytes: in_build {sizes['in_build'] / 1e6:.1f} MB, at_load "
              f"{sizes['at_load'] / 1e6:.1f} MB."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("experiments/results_at_load"))
    args = parser.parse_args()
    print(table(run(args.steps, args.seeds, args.out)))


if __name__ == "__main__":
    main()
