"""Issue 21 (one concept per file, each constant once), the ``rawpairs`` side: no torch here."""

from __future__ import annotations

import errno
import os

import pytest

from rawpairs import shards


@pytest.mark.parametrize(
    ("code", "machine"),
    [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EACCES, False), (errno.EIO, False)],
)
def test_a_full_disk_or_quota_is_the_machines_error_not_the_sources(code, machine):
    """No space and no quota stop the build (every later source would fail the same way);
    other errors are the source's. The numbers are the platform's, not Linux literals."""
    assert shards._is_output_error(OSError(code, os.strerror(code))) is machine
