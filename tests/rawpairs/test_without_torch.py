"""The dataset builder needs no deep-learning stack: every ``rawpairs`` module imports and every
test of ``tests/rawpairs`` is collected with torch, Ray and ``distill`` made unimportable, and no
test there imports them inside a function either (issue 21 item 7)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from codeshape import imported_names

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "ray", "distill")

_BLOCKER = f"""
import importlib.abc, pkgutil, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked: rawpairs must not need it")
        return None

sys.meta_path.insert(0, Blocker())
import rawpairs
for module in pkgutil.iter_modules(rawpairs.__path__):
    __import__(f"rawpairs.{{module.name}}")
import pytest
sys.exit(pytest.main(["-q", "--collect-only", "-p", "no:cacheprovider", "tests/rawpairs"]))
"""


def test_rawpairs_and_its_tests_load_without_torch_ray_or_distill() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKER], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " tests collected" in done.stdout  # exit 0: no collection errors


def test_no_rawpairs_test_imports_torch_or_distill_anywhere() -> None:
    """Function-level imports too (collection does not run them)."""
    tests = ROOT / "tests"
    shared = [tests / "conftest.py", tests / "shardkit.py", tests / "codeshape.py"]
    found = [
        f"{path.name}: {name}"
        for path in [*sorted((tests / "rawpairs").glob("*.py")), *shared]
        for name in imported_names(ast.parse(path.read_text()))
        if name.split(".")[0] in ("torch", "distill")
    ]
    assert not found, found
