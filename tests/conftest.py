"""Shared fixtures.

Golden files live under tests/golden/. A test compares text with
`golden.check("summaries/lenet.txt", text)`; run `pytest --update-golden` to
rewrite the files after a deliberate change, then review the diff like code.

The suite compiles C into a temporary cache, never the user's
`~/.cache/nnc`: `XDG_CACHE_HOME` points at a folder made for the session
(and removed after it) before any test runs, so subprocesses (the CLI tests)
inherit it too. `NNC_TEST_CACHE=DIR` keeps the compiled libraries in DIR
instead, to reuse them from one run to the next.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
GOLDEN = Path(__file__).resolve().parent / "golden"


_SESSION_CACHE: dict[str, str | None] = {}


def pytest_configure(config):
    """Point the compile cache at a temporary folder for the whole session."""
    if "XDG_CACHE_HOME" in _SESSION_CACHE:
        return
    keep = os.environ.get("NNC_TEST_CACHE")
    folder = keep or tempfile.mkdtemp(prefix="nnc-test-cache-")
    _SESSION_CACHE["XDG_CACHE_HOME"] = os.environ.get("XDG_CACHE_HOME")
    _SESSION_CACHE["folder"] = None if keep else folder
    os.environ["XDG_CACHE_HOME"] = folder


def pytest_unconfigure(config):
    if "XDG_CACHE_HOME" not in _SESSION_CACHE:
        return
    previous = _SESSION_CACHE.pop("XDG_CACHE_HOME")
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous
    folder = _SESSION_CACHE.pop("folder", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the golden files under tests/golden/ instead of comparing")


class Golden:
    def __init__(self, update: bool):
        self.update = update

    def check(self, name: str, text: str) -> None:
        path = GOLDEN / name
        if self.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        if not path.exists():
            pytest.fail(f"golden file {path.relative_to(ROOT)} is missing: run pytest --update-golden")
        expected = path.read_text()
        assert text == expected, f"output differs from {path.relative_to(ROOT)} (pytest --update-golden rewrites it)"


@pytest.fixture
def golden(request) -> Golden:
    return Golden(request.config.getoption("--update-golden"))


def _has_c_compiler() -> bool:
    from nnc.compiler.codegen.cbuild import CompilerMissing, find_compiler
    try:
        find_compiler()
    except CompilerMissing:
        return False
    return True


HAS_CC = _has_c_compiler()
# Every test that takes `target` runs against both execution plans.
TARGETS = ["numpy", pytest.param("c", marks=pytest.mark.skipif(not HAS_CC, reason="no C compiler"))]


@pytest.fixture(params=TARGETS)
def target(request) -> str:
    return request.param
