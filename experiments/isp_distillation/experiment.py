"""The whole comparison: data, references, students, tables and figures (:func:`run`)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from distill.config import DEFAULT_TEACHERS
from distill.heldout import HeldOut
from distill.models import load_teacher

from .config import METHODS, REFERENCE_LABELS, ExperimentConfig
from .data import _existing_shards, build_shards, bundled_sources
from .figures import plot_bars, plot_curves, plot_examples, plot_masks
from .scoring import load_held_out, reference_rows, source_intervals
from .tables import final_rows, interval_table, markdown_table, summarize, write_csv
from .training import train_and_score


def _log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)


def run(config: ExperimentConfig) -> dict[str, Any]:
    """Run the whole comparison; write tables and figures; return the ``results.json`` content."""
    config.validate()
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    out, figures = Path(config.out), Path(config.figures)
    out.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    temporary = tempfile.TemporaryDirectory(prefix="isp_distillation_") if not config.work else None
    work = Path(config.work or temporary.name)  # type: ignore[union-attr]
    notes: list[str] = []
    timings: dict[str, float] = {}
    try:
        data = _pairs(config, work, notes, timings, started)
        helds, rows = _references(config, work, timings, started)
        final_logits, example_student = _students(config, work, helds, rows, timings, started)
        summary = summarize(rows)
        final = final_rows(summary, config.steps)
        for condition, held in helds.items():
            for base in held.baselines:
                final_logits[(base, condition)] = [held.baselines[base]]
        intervals = source_intervals(final_logits, helds)
        t0 = time.perf_counter()
        _figures(config, summary, final, helds, example_student)
        timings["figures"] = time.perf_counter() - t0
    finally:
        if temporary is not None:
            temporary.cleanup()
    timings["total"] = time.perf_counter() - started
    results = {
        "config": dataclasses.asdict(config),
        "data": data,
        "val_samples": helds["clean"].samples,
        "val_sources": len(set(helds["clean"].sources)),
        "notes": notes,
        "machine": _machine(load_start),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "final": final,
        "intervals": intervals,
        "summary": summary,
        "rows": rows,
    }
    _write(out, results)
    _log(started, f"done: {json.dumps(results['timings_s'])}; notes: {notes}")
    return results


def _headline(config: ExperimentConfig) -> str:
    return "miou" if config.task == "segment" else "top1_agreement"


def _pairs(
    config: ExperimentConfig,
    work: Path,
    notes: list[str],
    timings: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """The train and val pair shards under ``work/shards`` (built, or reused), from the given
    sources or the bundled ones (copied under ``work/src``); what they hold."""
    if config.train_src is not None:
        train_src, val_src = Path(config.train_src), Path(config.val_src or "")
    else:
        raw_dir = Path(config.raw_dir) if config.raw_dir else None
        notes += bundled_sources(work / "src", raw_dir, config.split, config.task)
        train_src, val_src = work / "src" / "train", work / "src" / "val"
        if not config.labels:
            notes.append("the bundled data has no class labels: no true-label baseline")
    t0 = time.perf_counter()
    if config.reuse_shards:
        data = {part: _existing_shards(work / "shards" / part) for part in ("train", "val")}
        notes.append(f"pairs reused from {work / 'shards'} (not rebuilt)")
    else:
        data = {
            "train": build_shards(train_src, work / "shards" / "train", config, config.train_crops),
            "val": build_shards(val_src, work / "shards" / "val", config, config.val_crops),
        }
    timings["build"] = time.perf_counter() - t0
    _log(started, f"built pairs {data} in {timings['build']:.1f} s")
    return data


def _references(
    config: ExperimentConfig, work: Path, timings: dict[str, float], started: float
) -> tuple[dict[str, HeldOut], list[dict[str, Any]]]:
    """The held-out pairs of each condition (clean, low light) with the teacher's and the
    baselines' logits, and the reference rows they score."""
    t0 = time.perf_counter()
    teacher = load_teacher(config.teacher or DEFAULT_TEACHERS[config.task]).to(config.device)
    helds = {
        condition: load_held_out(work / "shards" / "val", teacher, config, low_light)
        for condition, low_light in (("clean", None), ("low_light", config.low_light))
    }
    rows: list[dict[str, Any]] = []
    for condition, held in helds.items():
        rows += reference_rows(condition, held)
    timings["reference"] = time.perf_counter() - t0
    _log(started, f"teacher and baselines scored in {timings['reference']:.1f} s")
    return helds, rows


def _students(
    config: ExperimentConfig,
    work: Path,
    helds: dict[str, HeldOut],
    rows: list[dict[str, Any]],
    timings: dict[str, float],
    started: float,
) -> tuple[dict[tuple[str, str], list[list[torch.Tensor]]], torch.nn.Module | None]:
    """Train and score every method and seed (rows appended to ``rows``); returns the final
    logits per (method, condition), one list per seed, and the first ``kd`` student."""
    headline = _headline(config)
    methods = {m.name: m for m in METHODS}
    example_student = None
    final_logits: dict[tuple[str, str], list[list[torch.Tensor]]] = {}
    for name in config.methods:
        t0 = time.perf_counter()
        seeds = config.ablation_seeds if methods[name].ablation else config.seeds
        for seed in seeds:
            run_dir = work / "runs" / f"{name}-seed{seed}"
            shards = work / "shards" / "train"
            new_rows, logits, student = train_and_score(
                config, methods[name], seed, shards, run_dir, helds
            )
            rows += new_rows
            for condition, values in logits.items():
                final_logits.setdefault((name, condition), []).append(values)
            if name == "kd" and example_student is None:
                example_student = student
            last = new_rows[-len(helds) if not methods[name].low_light else -1]
            _log(
                started,
                f"{name} seed {seed}: {headline} {last[headline]:.1%}, "
                f"KL {last['kl']:.3f} ({last['condition']})",
            )
        timings[name] = time.perf_counter() - t0
        _log(started, f"{name}: {len(seeds)} seeds in {timings[name]:.1f} s")
    return final_logits, example_student


def _figures(
    config: ExperimentConfig,
    summary: list[dict[str, Any]],
    final: list[dict[str, Any]],
    helds: dict[str, HeldOut],
    example_student: torch.nn.Module | None,
) -> None:
    """The curves, the bars and the examples (or masks) of the first ``kd`` student."""
    segment = config.task == "segment"
    prefix = "isp_distillation_segment" if segment else "isp_distillation"
    figures = Path(config.figures)
    labels = {m.name: m.label for m in METHODS} | REFERENCE_LABELS
    plot_curves(summary, labels, figures / f"{prefix}_curves.png", _headline(config))
    bars = ("pixel_agreement", "miou", "person_iou") if segment else None
    plot_bars(final, labels, figures / f"{prefix}_bars.png", *([bars] if bars else []))
    if example_student is not None:
        examples = plot_masks if segment else plot_examples
        examples(
            helds["clean"], example_student, config.examples,
            figures / f"{prefix}_examples.png",
        )  # fmt: skip


def _machine(load_start: float) -> dict[str, Any]:
    """Where the numbers were measured: platform, CPUs, torch threads and version, load."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg()[0],
        "torch": torch.__version__,
    }


def _write(out: Path, results: dict[str, Any]) -> None:
    """``results.json``, the summary, curve and interval CSVs; the tables printed."""
    labels = {m.name: m.label for m in METHODS} | REFERENCE_LABELS
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_csv(out / "summary.csv", results["final"])
    write_csv(out / "curves.csv", [e for e in results["summary"] if e["step"] >= 0])
    write_csv(out / "intervals.csv", results["intervals"])
    print(markdown_table(results["final"], labels))
    print(interval_table(results["intervals"], labels))
