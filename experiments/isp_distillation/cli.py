"""The command line: ``python -m experiments.isp_distillation`` (see :mod:`.__main__`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import (
    ABLATIONS,
    METHODS,
    PRESETS,
    RAW_DIR,
    SEGMENT_PRESETS,
    SPLITS,
    TASKS,
    ExperimentConfig,
    make_config,
)
from .experiment import run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.isp_distillation",
        description="ISP distillation vs baselines on held-out RAW–RGB pairs (docs/results.md).",
    )
    add = p.add_argument
    add("--preset", choices=sorted(PRESETS), default="cpu")
    add("--task", choices=TASKS, default=None,
        help="classify (default: ImageNet teacher) or segment (person segmentation teacher, "
             "photos of people)")  # fmt: skip
    add("--teacher", default=None, help="teacher (default: the task's; see distill train)")
    add("--out", default="experiments/results", help="tables (results.json, *.csv)")
    add("--figures", default="docs/figures", help="figure folder")
    add("--work", default=None, help="shards and checkpoints (default: a temporary folder)")
    add("--train-src", default=None, help="folder of training photos/RAW (with --val-src)")
    add("--val-src", default=None, help="folder of held-out photos/RAW")
    add("--labels", action="store_true", help="class = parent folder; adds 'supervised'")
    add("--raw-dir", default=None, help=f"camera RAW files to add (default {RAW_DIR})")
    add("--split", choices=SPLITS, default=None,
        help="bundled data: heldout (default; train → held-out sources) or tune (within the "
             "training sources, for choosing settings)")  # fmt: skip
    add("--freeze-backbone-steps", type=int, default=None, help="steps with the network frozen")
    add("--reuse-shards", action="store_true", default=None,
        help="use the pairs a previous run left in --work instead of building them (the same "
             "pairs for runs made at different times)")  # fmt: skip
    add("--steps", type=int, default=None)
    add("--eval-points", type=int, default=None)
    add("--batch-size", type=int, default=None)
    add("--crop", type=int, default=None)
    add("--lr", type=float, default=None, help="student backbone learning rate")
    add("--frontend-lr", type=float, default=None, help="RAW front-end learning rate")
    add("--seeds", type=int, nargs="+", default=None)
    add("--ablation-seeds", type=int, nargs="+", default=None, help="seeds of the ablations")
    add("--ablations", action="store_true", help=f"also train the ablations {list(ABLATIONS)}")
    add("--methods", nargs="+", default=None, choices=[m.name for m in METHODS])
    add("--device", default=None)
    add("--workers", type=int, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from rawpairs.errors import BuildError, InputError

    args = vars(_parser().parse_args(argv))
    for name in ("seeds", "ablation_seeds", "methods"):
        if args[name] is not None:
            args[name] = tuple(args[name])
    if args.pop("ablations"):
        defaults = (SEGMENT_PRESETS if args["task"] == "segment" else PRESETS)[args["preset"]]
        chosen = args["methods"] or defaults.get("methods", ExperimentConfig.methods)
        args["methods"] = (*chosen, *(m for m in ABLATIONS if m not in chosen))
    if args["labels"] and args["methods"] is None:
        args["methods"] = (*PRESETS[args["preset"]].get("methods", ExperimentConfig.methods),
                           "supervised")  # fmt: skip
    if not args["labels"]:
        args["labels"] = None
    preset = args.pop("preset")
    try:
        run(make_config(preset, **args))
    except (ValueError, FileNotFoundError, InputError, BuildError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
