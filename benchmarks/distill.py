"""Distillation throughput: loader alone, supervised step, distillation step (same model, batch),
and the distillation step without the RAW front-end (its network fed the front-end's output).

    python -m benchmarks.distill --shards SHARDS [--batch-size 8 --crop 96 --steps 10]
    python -m benchmarks.distill --shards SHARDS --teacher selfie-segmentation --crop 256

With a dense teacher (``--teacher selfie-segmentation`` or ``efficientnet-lite0-dense``) the
supervised step is the per-pixel cross-entropy on a label map (random labels: the cost is what
matters) and the distillation step the per-pixel KD of ``distill.losses``.

(run as a module from the repository root: as a script, this file would shadow the package).

Targets (docs/benchmarks.md): distillation step ≤ 1.35× the supervised step (the teacher only
runs forward, under no_grad); the RAW front-end (``distill.frontend``: demosaic, white balance,
colour, tone) adds ≤ 10 % to the distillation step; loader ≥ 3× the distillation step's
samples/s (the GPU never waits).
Each measurement is preceded by warm-up iterations; the median step time is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from distill.config import DEFAULT_TEACHER
from distill.data import make_loader
from distill.losses import CombinedLoss, Outputs
from distill.models import build_student, load_teacher, task_of


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_steps(fns: dict, steps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function; the calls are interleaved (one of each per
    round), so a change in machine load affects every mode alike and the ratios stay fair."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--teacher", default=DEFAULT_TEACHER, help="a distill.models.TEACHERS name")
    return p.parse_args()


def _loader_rate(batches: Iterator[dict], args: argparse.Namespace) -> float:
    """Samples per second the loader delivers (after ``warmup`` batches)."""
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(args.steps * 3):
        next(batches)
    return args.steps * 3 * args.batch_size / (time.perf_counter() - start)


def _step_functions(
    batch: dict, teacher: torch.nn.Module, labels: torch.Tensor, task: str, device: torch.device
) -> dict[str, Callable[[], None]]:
    """One training step of each mode (supervised, distillation with and without the RAW
    front-end), each with its own student and optimiser, on the same ``batch``."""
    amp = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    raw, rgb, wb = batch["raw"].to(device), batch["rgb"].to(device), batch["wb"].to(device)
    modes = (
        ("supervised", {"ce": 1.0}, True),
        ("distillation", {"kd": 1.0}, True),
        ("distillation_no_frontend", {"kd": 1.0}, False),
    )
    steps = {}
    for mode, weights, frontend in modes:
        student = build_student(teacher).to(device).train()
        criterion = CombinedLoss(weights)
        optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, foreach=True)
        with torch.no_grad():
            rendered = student.frontend(raw, wb)  # the network's input, computed once

        def forward(student=student, frontend=frontend, rendered=rendered) -> torch.Tensor:
            return student(raw, wb) if frontend else student.net(rendered)

        def step(forward=forward, criterion=criterion, optimizer=optimizer) -> None:
            with amp:
                if not criterion.needs_teacher and task == "segment":
                    loss = F.cross_entropy(forward().float(), labels)
                else:
                    target = Outputs(teacher(rgb)) if criterion.needs_teacher else None
                    loss, _ = criterion(Outputs(forward()), target, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps[mode] = step
    return steps


def main() -> None:
    args = _parse_args()
    device = torch.device(args.device)
    loader = make_loader(
        args.shards,
        batch_size=args.batch_size,
        crop=args.crop,
        teacher_size=args.crop,
        num_workers=args.num_workers,
    )
    batches = iter(loader)
    loader_sps = _loader_rate(batches, args)
    batch = next(batches)
    teacher = load_teacher(args.teacher).to(device)
    with torch.no_grad():
        probe = teacher(batch["rgb"].to(device))
    task = task_of(probe)
    # One class per image, or (dense) one per pixel of the student's map.
    label_shape = (args.batch_size,) if task == "classify" else (args.batch_size, *probe.shape[2:])
    labels = torch.randint(0, probe.shape[1], label_shape, device=device)
    steps = _step_functions(batch, teacher, labels, task, device)
    results = _median_steps(steps, args.steps, args.warmup, device)
    distill_sps = args.batch_size / results["distillation"]
    report = {
        "device": str(device),
        "teacher": args.teacher,
        "task": task,
        "batch_size": args.batch_size,
        "crop": args.crop,
        "loader_samples_per_s": round(loader_sps, 1),
        "supervised_step_s": round(results["supervised"], 4),
        "distillation_step_s": round(results["distillation"], 4),
        "distillation_no_frontend_step_s": round(results["distillation_no_frontend"], 4),
        "distill_over_supervised": round(results["distillation"] / results["supervised"], 3),
        "frontend_overhead": round(
            results["distillation"] / results["distillation_no_frontend"] - 1, 3
        ),
        "loader_over_distill": round(loader_sps / distill_sps, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
