"""Regression tests for bugs found by probing the section 9 ops against PyTorch.

In:  small `.nn` models built for both targets (the `target` fixture).
Out: assertions that each probed bug stays fixed.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnc


@pytest.mark.parametrize("shape,op,axes", [((2, 200_000), "sum", "1"), ((2, 200_000), "mean", "-1"),
                                           ((2, 400, 500), "sum", "(1, 2)"), ((2, 400, 500), "mean", "(-1, -2)")])
def test_long_reduction_keeps_float32_accuracy(target: str, shape: tuple, op: str, axes: str) -> None:
    """`sum`/`mean` over a long trailing axis: C once accumulated in float32 one
    element at a time (relative error ~1e-5 over 2e5 elements); now each
    contiguous run of reduced elements is summed in double, as NumPy does."""
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=(2, *shape)).astype(np.float32)
    model = nnc.build(f"model r(x: {list(shape)}) {{\n    {op}({axes})\n}}", target=target, batch=2)
    y = model(x)
    ax = tuple(a + 1 if a >= 0 else a for a in np.atleast_1d(eval(axes)))  # noqa: S307 - a literal
    ref = getattr(x.astype(np.float64), op)(axis=ax)
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() / np.abs(ref).max() < 1e-6
