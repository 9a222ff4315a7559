"""Which split a source goes to in a ``--val-fraction`` build: a hash of its relative path."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from rawpairs.errors import BuildError
from rawpairs.sample import is_documentation

__all__ = ["Split", "check_val_fraction", "in_split", "split_of"]


@dataclass(frozen=True)
class Split:
    """One part of a split build: ``name`` (``train`` or ``val``) and the fraction of sources
    that go to ``val``."""

    name: str
    val_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "val_fraction": self.val_fraction}


def split_of(relpath: str, val_fraction: float) -> str:
    """``"val"`` or ``"train"`` for a source, from its path relative to ``--src`` only: the
    first 8 bytes of SHA-256(path) as a fraction of 2⁶⁴ below ``val_fraction`` → ``val``. So a
    source keeps its split when files are added or removed, the folder moves, or the build runs
    elsewhere; and every crop of one source stays in one split (no leak from train into val)."""
    digest = hashlib.sha256(relpath.encode("utf-8", "surrogateescape")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def in_split(relpath: str, split: Split) -> bool:
    """Whether a source belongs to ``split``: by :func:`split_of`, except licence and README
    files, which go to both (skipped there, and named in both cards)."""
    return is_documentation(relpath) or split_of(relpath, split.val_fraction) == split.name


def check_val_fraction(val_fraction: float) -> None:
    """Raise :class:`BuildError` unless ``0 < val_fraction < 1``."""
    if not 0 < val_fraction < 1:
        raise BuildError(f"--val-fraction must be in (0, 1), got {val_fraction}")
