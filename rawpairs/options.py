"""One source of truth for the options of a build: a field of a dataclass is a command-line flag.

:func:`option` declares a field together with its flag's help text, range and choices;
:func:`click_options` turns the fields of such a dataclass into ``click`` options (``max_side``
→ ``--max-side``), so ``rawpairs build`` writes each option once, in
:class:`rawpairs.config.BuildConfig`. :func:`choice_fields` names the fields that are
:class:`rawpairs.choices.Choice` enums (parsed from their strings, written back as strings).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING
from typing import Any

import click

from rawpairs.choices import Choice

__all__ = ["choice_fields", "click_options", "from_flags", "option"]


def option(
    default: Any = MISSING,
    help: str | None = None,
    *,
    factory: Callable[[], Any] | None = None,
    low: int | None = None,
    choices: Sequence[str] | None = None,
    flag: bool = True,
    from_flag: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field with its command-line flag.

    ``help``: the flag's help text; ``low``: smallest integer the flag takes (``None``: any);
    ``choices``: the strings the flag takes (default: all values of the field's
    :class:`~rawpairs.choices.Choice` enum); ``flag=False``: the field has no flag of its own;
    ``from_flag``: turns the flag's value (``None`` when it is not given) into the field's value,
    for a flag that spells the field differently (``--labels folder`` → ``labels=True``).
    """
    metadata = {"help": help, "low": low, "choices": choices, "flag": flag, "from_flag": from_flag}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _types(cls: type) -> dict[str, Any]:
    """The field types of dataclass ``cls``, ``X | None`` given as ``X``."""
    types = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        types[name] = args[0] if len(args) == 1 else hint
    return types


def choice_fields(cls: type) -> dict[str, type[Choice]]:
    """The fields of dataclass ``cls`` whose type is a :class:`~rawpairs.choices.Choice` enum."""
    return {
        name: kind
        for name, kind in _types(cls).items()
        if isinstance(kind, type) and issubclass(kind, Choice)
    }


def _click_option(f: dataclasses.Field, kind: Any) -> Callable[[Callable], Callable]:
    """The ``click.option`` of one field declared with :func:`option`."""
    meta = f.metadata
    name = "--" + f.name.replace("_", "-")
    kwargs: dict[str, Any] = {"help": meta["help"]}
    if meta["from_flag"] is not None:  # spelled differently: a choice, absent by default
        return click.option(name, type=click.Choice(meta["choices"]), default=None, **kwargs)
    if kind is bool:
        return click.option(name, is_flag=True, **kwargs)
    default = f.default.value if isinstance(f.default, Choice) else f.default
    if isinstance(kind, type) and issubclass(kind, Choice):
        kwargs["type"] = click.Choice(meta["choices"] or kind.values())
    elif kind is int:
        kwargs["type"] = click.IntRange(min=meta["low"]) if meta["low"] is not None else int
    else:
        raise TypeError(f"{f.name}: no command-line type for {kind!r}")
    return click.option(name, default=default, show_default=default is not None, **kwargs)


def click_options(cls: type) -> Callable[[Callable], Callable]:
    """A decorator adding one ``click`` option per field of dataclass ``cls`` declared with
    :func:`option` (in field order; fields with ``flag=False`` have none)."""
    types = _types(cls)
    flags = [f for f in dataclasses.fields(cls) if f.metadata.get("flag")]

    def decorate(command: Callable) -> Callable:
        for f in reversed(flags):  # click lists options in decorator order, outermost first
            command = _click_option(f, types[f.name])(command)
        return command

    return decorate


def from_flags(cls: type, values: dict[str, Any], **given: Any) -> Any:
    """An instance of dataclass ``cls`` from the parsed values of its flags (by field name;
    other keys of ``values`` are left out), and the ``given`` fields that have no flag."""
    kwargs = dict(given)
    for f in dataclasses.fields(cls):
        if f.metadata.get("flag"):
            convert = f.metadata["from_flag"]
            kwargs[f.name] = values[f.name] if convert is None else convert(values[f.name])
    return cls(**kwargs)
