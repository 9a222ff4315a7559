"""How the student's weights move: the optimiser's parameter groups and the learning-rate
schedule (linear warm-up, then cosine decay; the network frozen for its first steps)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from distill.config import TrainConfig

__all__ = ["lr_factor", "lr_factors", "make_optimizer"]


def lr_factor(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier for 0-based ``step``: linear warm-up, then cosine decay.

    Steps ``0 … warmup−1`` ramp as (step+1)/warmup; afterwards
    ``min_ratio + (1 − min_ratio)·(1 + cos(π·t))/2`` with t the fraction of the decay done.
    """
    if step < warmup:
        return (step + 1) / warmup
    decay = max(1, steps - warmup)
    t = min(1.0, (step - warmup) / decay)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def lr_factors(config: TrainConfig) -> list[Callable[[int], float]]:
    """Learning-rate multipliers of :func:`make_optimizer`'s three groups: warm-up + cosine
    (:func:`lr_factor`); the network's two are 0 for the first ``freeze_backbone_steps`` steps."""

    def front(step: int) -> float:
        return lr_factor(step, config.steps, config.warmup_steps, config.min_lr_ratio)

    def backbone(step: int) -> float:
        return 0.0 if step < config.freeze_backbone_steps else front(step)

    return [front, backbone, backbone]


def make_optimizer(
    config: TrainConfig, trained: nn.Module, frontend: nn.Module
) -> torch.optim.Optimizer:
    """The optimiser over every trainable parameter of ``trained``, in three groups: the RAW
    ``frontend``'s (``frontend_lr``, no weight decay: its identity/sRGB initialisation is not a
    small-weight prior), the network's weights (``lr``, ``weight_decay``) and its 1-D
    parameters — norm scales and shifts, biases — (``lr``, no weight decay: shrinking them is no
    regulariser; timm's ``param_groups_weight_decay``)."""
    front = {id(p) for p in frontend.parameters()}
    params = [p for p in trained.parameters() if p.requires_grad]
    network = [p for p in params if id(p) not in front]
    groups = [
        {
            "params": [p for p in params if id(p) in front],
            "lr": config.frontend_lr,
            "weight_decay": 0.0,
        },
        {"params": [p for p in network if p.ndim > 1]},
        {"params": [p for p in network if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            groups, lr=config.lr, weight_decay=config.weight_decay, foreach=True
        )
    return torch.optim.SGD(
        groups,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        foreach=True,
    )
