"""An exponential moving average of the student's weights (``--ema``): what validation and
``best.pt`` use when it is on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["EmaWeights"]


class EmaWeights:
    """Exponential moving average of a module's floating-point parameters and buffers.

    After each update ``avg ← decay·avg + (1 − decay)·weight``; :meth:`applied` swaps the averages
    into the module for a ``with`` block (validation, ``best.pt``) and restores the weights after.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.average = {
            name: value.detach().clone()
            for name, value in module.state_dict().items()
            if isinstance(value, torch.Tensor) and value.is_floating_point()
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for name, value in module.state_dict().items():
            if name in self.average:
                self.average[name].lerp_(value.detach(), 1 - self.decay)

    @contextlib.contextmanager
    def applied(self, module: nn.Module) -> Iterator[None]:
        state = module.state_dict()
        kept = {name: state[name].detach().clone() for name in self.average}
        module.load_state_dict(self.average, strict=False)
        try:
            yield
        finally:
            module.load_state_dict(kept, strict=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.average)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.average[name].copy_(value)
