"""The paper's comparison, end to end: build RAW–RGB pairs, train RAW students, score them.

``python -m experiments.isp_distillation --preset cpu --out experiments/results`` reproduces the
comparison of *ISP Distillation* (Schwartz, Bronstein, Giryes, arXiv 2101.10203) at CPU scale:

1. **Data.** Training and evaluation pairs come from *different* source images (never the same
   photo on both sides). Default sources: the real photos scikit-image ships and the camera RAW
   files in ``../shared/data/raw`` (skipped with a note when absent); ``--train-src`` /
   ``--val-src`` take any folders of photos or RAW files instead (ImageNet-style class folders
   with ``--labels``). Pairs are built by :func:`rawpairs.build.build`: photos get a simulated RAW
   (inverse ISP), RAW files an RGB from our forward ISP.
2. **Models.** Teacher: the offline EfficientNet-Lite0 on sRGB. Students (``METHODS``): label-free
   KD (the paper's method), cross-entropy on the teacher's hard top-1 labels, KD from a
   randomly initialised student, KD on darkened noisier RAW (low light), and cross-entropy on true
   labels when the data has them.
3. **Scores** on the held-out pairs, against the teacher on the aligned RGB: top-1 / top-5
   agreement and mean KL(teacher ‖ model) in nats (:func:`distill.heldout.score`), also for the
   teacher on a naive render of the RAW ("no ISP", :func:`distill.frontend.naive_render`).
   Students are scored at several steps (training resumes exactly between them), over seeds.

Outputs: ``<out>/results.json`` (configuration, every score, summary, timings),
``<out>/summary.csv`` (the final table), ``<out>/curves.csv`` (scores per step) and three figures
in ``--figures``; the Markdown table is printed. Shards and checkpoints go to ``--work`` (a
temporary folder unless given).
"""

from .cli import main
from .config import (
    ABLATIONS,
    METHODS,
    PRESETS,
    REFERENCE_LABELS,
    TRAIN_PHOTOS,
    TUNE_RAWS,
    VAL_PHOTOS,
    VAL_RAWS,
    ExperimentConfig,
    Method,
    make_config,
)
from .data import bundled_sources
from .experiment import run
from .scoring import load_held_out, reference_rows, source_intervals
from .tables import interval_table, markdown_table, summarize

__all__ = [
    "ABLATIONS",
    "METHODS",
    "PRESETS",
    "REFERENCE_LABELS",
    "TRAIN_PHOTOS",
    "TUNE_RAWS",
    "VAL_PHOTOS",
    "VAL_RAWS",
    "ExperimentConfig",
    "Method",
    "bundled_sources",
    "interval_table",
    "load_held_out",
    "main",
    "make_config",
    "markdown_table",
    "reference_rows",
    "run",
    "source_intervals",
    "summarize",
]
