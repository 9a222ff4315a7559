"""The ``distill`` command: ``distill train|evaluate|export|predict [OPTIONS]``.

Each subcommand is the ``main`` of its module with the same options (``python -m distill.train``
… keep working); ``distill SUBCOMMAND --help`` lists them, every subcommand takes ``--config
FILE.yaml`` (:mod:`distill.options`). Modules are imported only for the subcommand that runs, so
a missing ``rawpairs[distill]`` extra is reported in one line (exit status 2).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from distill.extras import missing_extra

__all__ = ["COMMANDS", "main"]

# Subcommand → (module whose main(argv, prog) runs it, one-line description).
COMMANDS = {
    "train": ("distill.train", "distil a frozen RGB teacher into a RAW student"),
    "evaluate": ("distill.evaluate", "agreement with the teacher on held-out shards, vs baselines"),
    "export": ("distill.export", "TorchScript / ONNX export and student.json (its input)"),
    "predict": ("distill.predict", "run an export on RAW files: top-k classes or masks"),
}


def usage() -> str:
    lines = ["usage: distill {" + ",".join(COMMANDS) + "} [OPTIONS]", "", "subcommands:"]
    lines += [f"  {name:<10}{text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "distill SUBCOMMAND --help lists its options; each takes --config FILE.yaml."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; returns its exit status (2 for an unknown one or a missing extra)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(
            f"error: unknown subcommand {name!r}; expected one of {list(COMMANDS)}", file=sys.stderr
        )
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        message = missing_extra(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return module.main(rest, prog=f"distill {name}")


if __name__ == "__main__":
    sys.exit(main())
