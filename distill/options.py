"""What every ``distill`` subcommand shares on its command line: help that prints each default
once, ``--config FILE.yaml`` and the resolved configuration a run folder keeps.

A configuration file is a flat YAML mapping whose keys are the subcommand's options spelled with
underscores (``--batch-size 4`` ↔ ``batch_size: 4``); values fill the options' defaults, so flags
given on the command line override them. An unknown key, a value of the wrong type or outside an
option's choices ends the command with one line (exit status 2) naming the file and the key.
:func:`write_config` writes a run's resolved configuration (``config.yaml``) atomically, in the
same format, so ``distill train --config RUN/config.yaml`` repeats the run.

This module imports neither torch nor the models (a missing extra is still reported in a line).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from rawpairs.storage import write_text_atomic

__all__ = [
    "CONFIG_NAME",
    "HelpFormatter",
    "add_config_option",
    "parse_args",
    "read_config",
    "write_config",
]

CONFIG_NAME = "config.yaml"  # the resolved configuration in a run folder, beside last.pt
_FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help once (``none`` for a ``None`` or empty
    default): not when the help already speaks of its default (or ``BooleanOptionalAction``
    added it), nor for a required option, ``--help`` or a positional argument."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or not action.option_strings
            or action.required
            or action.dest == "config"
            or default is argparse.SUPPRESS
        ):
            return text
        if default is None or default == []:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE.yaml``: option values from a YAML file, overridden by the command line."""
    parser.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="YAML file of option values: flat keys spelled as the options with underscores "
        "(batch_size: 4); flags on the command line override it",
    )


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by destination, without ``--help`` and ``--config``."""
    return {
        action.dest: action
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "config")
    }


def _scalar(action: argparse.Action, where: str, value: Any) -> Any:
    """One YAML value converted as the option's ``type`` converts a command-line string.

    Numbers may be written as strings (YAML 1.1 reads ``5e-5`` as one); an option with its own
    converter (a comma list) also takes a YAML list of strings.
    """
    kind = action.type
    custom = kind not in (None, str, int, float)
    if custom and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, bool | list | dict) or (kind is int and isinstance(value, float)):
        raise ValueError(f"{where}: expected {_kind_name(kind)}, got {value!r}")
    if kind in (None, str):
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if custom and not isinstance(value, str):
        raise ValueError(f"{where}: expected {_kind_name(kind)}, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise ValueError(f"{where}: expected {_kind_name(kind)}, got {value!r}") from None


def _kind_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", None: "a string"}.get(
        kind, "a string or a list of strings"
    )


def _coerce(action: argparse.Action, where: str, value: Any) -> Any:
    """A configuration value as the option would hold it after parsing the command line."""
    if value is None:
        return None
    if isinstance(action, _FLAGS):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if many or isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        if isinstance(action.nargs, int) and len(items) != action.nargs:
            raise ValueError(f"{where}: expected a list of {action.nargs} values, got {value!r}")
        if action.nargs == "+" and not items:
            raise ValueError(f"{where}: expected at least one value")
        result = [_scalar(action, where, item) for item in items]
    else:
        result = _scalar(action, where, value)
    if action.choices is not None:
        for item in result if many else [result]:
            if item not in action.choices:
                raise ValueError(f"{where}: expected one of {list(action.choices)}, got {item!r}")
    return result


def read_config(path: str | os.PathLike[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The option values of YAML file ``path`` for ``parser`` (destination → parsed value).

    Raises ``ValueError`` (one line naming the file and the key) for a missing or unreadable file,
    invalid YAML, a top level that is not a mapping, an unknown key or a bad value.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the configuration ({err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ValueError(f"{path}: not valid YAML{at} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    options = _options(parser)
    values = {}
    for key, value in data.items():
        if key not in options:
            close = difflib.get_close_matches(str(key).replace("-", "_"), list(options), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{path}: unknown key {key!r}{hint}; keys are {parser.prog}'s options with "
                "underscores, e.g. batch_size"
            )
        values[key] = _coerce(options[key], f"{path}: {key}", value)
    return values


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the values of ``--config FILE`` (when given) as defaults.

    A bad configuration file ends the process with status 2 and one line on stderr.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argparse.ArgumentParser(prog=parser.prog, add_help=False)
    first.error = parser.error  # type: ignore[method-assign] # report as the parser does
    first.add_argument("--config")
    known, _ = first.parse_known_args(argv)
    if known.config:
        try:
            values = read_config(known.config, parser)
        except ValueError as err:
            _fail(str(err))
        options = _options(parser)
        for dest in values:
            options[dest].required = False  # given by the file
        parser.set_defaults(**values)
    return parser.parse_args(argv)


def write_config(values: Mapping[str, Any], path: str | os.PathLike[str], header: str = "") -> Path:
    """Write ``values`` (plain data) as a flat YAML mapping to ``path`` atomically (temporary
    file, then rename); ``header``: comment lines put first. Returns the path."""
    path = Path(path)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    text = comment + yaml.safe_dump(dict(values), sort_keys=False, default_flow_style=None)
    return write_text_atomic(path, text)
