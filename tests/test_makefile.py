"""The README's two commands (`make demo`, `make test`) on a stock system Python.

A distribution's python3 is often "externally managed" (PEP 668): `pip install` into it fails. The
Makefile must therefore never install into the interpreter it finds, only into a virtual
environment: the active one, or a project-local `.venv` it creates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(*args: str, virtual_env: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    if virtual_env is not None:
        env["VIRTUAL_ENV"] = virtual_env
    return subprocess.run(
        ["make", "-C", str(ROOT), "--no-print-directory", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )


@pytest.mark.parametrize("target", ["test", "demo"])
def test_without_active_venv_everything_runs_in_project_venv(target: str) -> None:
    plan = _make("-n", "-B", target, "PYTHON_SYSTEM=/usr/bin/python3-system").stdout.splitlines()
    assert plan[0].startswith("/usr/bin/python3-system -m venv .venv"), plan[0]
    commands = plan[1:]
    assert commands and all(line.startswith(".venv/bin/python -m ") for line in commands), commands
    assert not any("python3-system -m pip" in line for line in plan)


def test_active_venv_is_used_and_not_recreated(tmp_path: Path) -> None:
    venv = tmp_path / "env"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    plan = _make("-n", "test", virtual_env=str(venv)).stdout.splitlines()
    assert all(line.startswith(f"{venv}/bin/python -m ") for line in plan), plan


def test_venv_creation_failure_is_one_clear_line(tmp_path: Path) -> None:
    result = _make("install", "PYTHON_SYSTEM=false", f"VENV={tmp_path / 'venv'}")
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "python3-venv" in message[0], result.stderr
    assert not (tmp_path / "venv").exists()
