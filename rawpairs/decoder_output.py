"""What native decoders print: captured from file descriptor 2 while they run, and sorted into
signs of damaged data (the caller fails the file) and other messages (passed on as
:class:`DecoderMessage` warnings, which a build reports through its ``warn`` callback)."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO
from warnings import warn

__all__ = ["DecoderMessage", "captured_stderr", "decoder_warnings"]

# Lines a decoder prints when it papers over damaged data: libjpeg's warnings ("Premature end of
# JPEG file", "Corrupt JPEG data: …") and LibRaw's ("<file>: data corrupted at N", "Unexpected end
# of file", "decoder table overflow").
_DAMAGE_WORDS = ("jpeg", "corrupt", "unexpected end", "premature end", "overflow", "data error")


def decoder_warnings(lines: list[str], path: Path | None = None) -> list[str]:
    """The damage warnings among captured stderr ``lines`` (the file name LibRaw prefixes is
    dropped); every other line is passed on as a :class:`DecoderMessage` warning, which the
    build reports through its ``warn`` callback (never straight into a progress bar's line)."""
    found, others = [], []
    for line in (line.strip() for line in lines):
        if not line:
            continue
        if any(word in line.lower() for word in _DAMAGE_WORDS):
            if path is not None and line.startswith(f"{path}:"):
                line = line[len(str(path)) + 1 :].strip()
            found.append(line)
        else:
            others.append(line)
    for line in others:  # not ours: pass it on
        warn(line, DecoderMessage, stacklevel=2)
    return found


class DecoderMessage(UserWarning):
    """A line a decoder (LibRaw, libpng, libjpeg) printed that is not a sign of damage."""


_STDERR_LOCK = threading.RLock()  # re-entrant: a capture may nest in another
_STDERR_SINK: dict[int, IO[bytes]] = {}  # this process's reusable sink, by process id
_stderr_depth = 0  # captures open now (under _STDERR_LOCK)


def _process_sink() -> IO[bytes]:
    """This process's reusable stderr sink (a forked child makes its own)."""
    sink = _STDERR_SINK.get(os.getpid())
    if sink is None:
        _STDERR_SINK.clear()  # a forked child's copy of its parent's
        sink = _STDERR_SINK[os.getpid()] = tempfile.TemporaryFile()  # noqa: SIM115 (kept open)
    return sink


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 (e.g. libjpeg's warnings). The
    outermost capture of a process reuses one emptied temporary file (a file per photo was a
    measurable part of an at-load build); a nested capture, or a forked child, has its own."""
    global _stderr_depth
    lines: list[str] = []
    with _STDERR_LOCK, ExitStack() as stack:
        # nested: a file of its own, so the outer capture's file keeps its lines
        sink = stack.enter_context(tempfile.TemporaryFile()) if _stderr_depth else _process_sink()
        sink.seek(0)
        sink.truncate()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        _stderr_depth += 1
        try:
            yield lines
        finally:
            _stderr_depth -= 1
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())
