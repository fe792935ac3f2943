"""Shared fixtures.

Golden files live under tests/golden/. A test compares text with
`golden.check("summaries/lenet.txt", text)`; run `pytest --update-golden` to
rewrite the files after a deliberate change, then review the diff like code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
GOLDEN = Path(__file__).resolve().parent / "golden"


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
