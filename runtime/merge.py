"""Merge kernels: add, sub, mul and concat (the calling conventions are in `kernels.py`).

In:  the input arrays (`out` may be one of add's or mul's inputs, or a
     channel slice of a concat's buffer); add's fused activation.
Out: their sum, difference, product or concatenation in `out`;
     `mul_backward` gives one input's gradient (the others need no kernel).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._common import Act, Scratch, Shape
from .elementwise import activation_scratch, apply_activation


def _alias_first(inputs: Sequence[np.ndarray], out: np.ndarray) -> list[np.ndarray]:
    """Inputs of a commutative merge, the one `out` overwrites (if any) first,
    so that it is read before it is written."""
    ordered = list(inputs)
    for k, a in enumerate(ordered):
        if np.shares_memory(a, out):
            ordered.insert(0, ordered.pop(k))
            break
    return ordered


def add_scratch(shape: Shape, *, act: Act = None, budget: int | None = None) -> dict[str, Shape]:
    """Scratch of `add`: only its fused activation's (pieces within `budget` floats per example)."""
    return activation_scratch(act, tuple(shape), budget)


def add(inputs: Sequence[np.ndarray], out: np.ndarray, *, act: Act = None, scratch: Scratch | None = None) -> None:
    """The sum of `inputs` (any of which `out` may be), then `act`."""
    first, *rest = _alias_first(inputs, out)
    if not rest:
        np.copyto(out, first)
    for k, a in enumerate(rest):
        np.add(first if k == 0 else out, a, out=out)
    apply_activation(act, out, scratch)


def sub(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.subtract(a, b, out=out)


def mul(inputs: Sequence[np.ndarray], out: np.ndarray) -> None:
    """The elementwise product of `inputs` (any of which `out` may be)."""
    first, *rest = _alias_first(inputs, out)
    if not rest:
        np.copyto(out, first)
    for k, a in enumerate(rest):
        np.multiply(first if k == 0 else out, a, out=out)


def concat(inputs: Sequence[np.ndarray], axis: int, out: np.ndarray) -> None:
    """`inputs` side by side along `axis`, counted without the batch (0 is array axis 1)."""
    offset = 0
    index = [slice(None)] * out.ndim
    for a in inputs:
        size = a.shape[axis + 1]
        index[axis + 1] = slice(offset, offset + size)
        np.copyto(out[tuple(index)], a)
        offset += size


# ------------------------------------------------------------------ backward
# add passes dy to each input, sub passes dy and -dy, concat a slice of dy
# to each input: the generated code aliases or copies them, no kernel needed.

def mul_backward(inputs: Sequence[np.ndarray], dy: np.ndarray, index: int, *, dx: np.ndarray) -> None:
    """Gradient of `mul` for input `index`: dy times every other input. `dx`
    may be `dy`, not another input."""
    others = [a for k, a in enumerate(inputs) if k != index]
    np.multiply(dy, others[0], out=dx)
    for a in others[1:]:
        np.multiply(dx, a, out=dx)
