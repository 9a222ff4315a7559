"""Errors for bad inputs (each names the file and the cause in one line) and for builds that
cannot start, cannot run or cannot write their output."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BuildError",
    "BuildOutputError",
    "CorruptInputError",
    "EngineError",
    "GroupFailedError",
    "InputError",
    "SkippedInputError",
    "UnsupportedInputError",
]


class InputError(ValueError):
    """An input file that cannot become a sample. ``str(err)`` is ``"<path>: <cause>"``."""

    def __init__(self, path: str | Path, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class UnsupportedInputError(InputError):
    """A readable file of a kind we do not convert (non-Bayer sensor, a photo of float or 32-bit
    pixels, RAW content under a photo extension, a declared size above the pixel limit, …)."""


class CorruptInputError(InputError):
    """An unreadable file: empty, truncated, wrong contents for its extension, bad checksum."""


class SkippedInputError(InputError):
    """A good input the build leaves out on purpose: a photo smaller than ``--min-side`` or the
    crop (without ``--upscale``), a licence or README file. Counted as skipped, listed in
    ``skipped.jsonl``, never a failure."""


class BuildError(RuntimeError):
    """A build that cannot start (bad --src, bad options, configuration clash in --out)."""


class BuildOutputError(RuntimeError):
    """A build that stopped because its output cannot be written (disk full, permissions)."""


class EngineError(RuntimeError):
    """An engine that cannot run here (unknown name, Ray not installed)."""


class GroupFailedError(RuntimeError):
    """A task failed for a reason that is not its inputs' (the output cannot be written)."""
