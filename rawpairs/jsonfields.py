"""Checked reads of parsed JSON values: each raises ``ValueError`` naming the field.

Shared by every reader of a JSON document we write: a sample's ``json`` member
(:mod:`rawpairs.metadata`) and ``index.json`` (:mod:`rawpairs.manifest`).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

__all__ = ["check_fields", "check_nulls", "enum_value", "int_value", "json_object", "str_value"]


def json_object(d: Any, name: str) -> dict:
    """``d`` itself if it is a JSON object; ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(d, dict):
        raise ValueError(f"{name} must be a JSON object, got {type(d).__name__}")
    return d


def check_fields(d: Any, name: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict:
    """``d`` if it is an object with every ``required`` field and no field outside
    ``required`` and ``optional``."""
    json_object(d, name)
    missing = [f for f in required if f not in d]
    unknown = sorted(set(d) - set(required) - set(optional))
    if missing:
        raise ValueError(f"{name} lacks {', '.join(missing)}")
    if unknown:
        raise ValueError(f"{name} has unknown fields {unknown}")
    return d


def check_nulls(d: dict, name: str, fields: Any) -> None:
    """Fields of ``d`` that do not apply must be null."""
    for f in sorted(fields):
        if d[f] is not None:
            raise ValueError(f"{name}.{f} does not apply and must be null, got {d[f]!r:.40}")


def int_value(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` if it is an integer (not a bool) ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r:.40}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def str_value(value: Any, name: str) -> str:
    """``value`` if it is a string."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r:.40}")
    return value


def enum_value(kind: type[Enum], value: Any, name: str) -> Any:
    """The member of ``kind`` whose value is exactly the string ``value`` (no aliases)."""
    for member in kind:
        if isinstance(value, str) and value == member.value:
            return member
    choices = ", ".join(repr(m.value) for m in kind)
    raise ValueError(f"{name} must be one of {choices}, got {value!r:.40}")
