"""The dense kernel (the calling conventions are in `kernels.py`).

In:  x [B, F] or [B, T, F], w [O, F], bias [O] or None, a fused activation.
Out: x @ w.T + b, then the activation, in `out` [..., O].
"""

from __future__ import annotations

import numpy as np

from ._common import Act, Scratch, Shape
from .elementwise import activation_scratch, apply_activation


def dense_scratch(in_shape: Shape, w_shape: Shape, *, act: Act = None) -> dict[str, Shape]:
    """Scratch of `dense`: only its fused activation's."""
    return activation_scratch(act, tuple(in_shape[:-1]) + (w_shape[0],))


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *,
          act: Act = None, scratch: Scratch | None = None) -> None:
    """x @ w.T + b on the last axis: `x` [B, F] or [B, T, F], `w` [O, F], `out` [..., O]."""
    np.matmul(x, w.T, out=out)
    if b is not None:
        np.add(out, b, out=out)
    apply_activation(act, out, scratch)
