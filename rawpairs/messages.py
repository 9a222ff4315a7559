"""Error messages on one line: what a terminal, ``errors.jsonl`` and a ``ValueError`` show."""

from __future__ import annotations

__all__ = ["MESSAGE_LIMIT", "one_line"]

MESSAGE_LIMIT = 300  # characters of a message (an error record's, a wrapped cause)


def one_line(message: str | BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` (an exception: its text, or its type's name when it has none) on one line:
    runs of whitespace, newlines included, become one space; at most ``limit`` characters (a cut
    ends with ``…``: a huge value is not echoed); undecodable bytes (surrogate escapes of file
    names) become ``\\x..`` escapes, so the text can be written as UTF-8."""
    text = " ".join(str(message).split())
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
