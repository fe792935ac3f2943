"""The dense kernel (the calling conventions are in `kernels.py`).

In:  x [B, F] or [B, T, F], w [O, F], bias [O] or None, a fused activation.
Out: x @ w.T + b, then the activation, in `out` [..., O]; `dense_backward`
     gives dx, dw and db from dy, or only some rows of dw (`rows`): a
     training plan forms a large weight gradient a block of `weight_block_rows`
     rows at a time and applies the optimizer to each block at once.
"""

from __future__ import annotations

import numpy as np

from ._common import Act, Scratch, Shape
from .elementwise import activation_scratch, apply_activation

WEIGHT_TILE = 1 << 14   # floats of one block of a weight gradient formed by rows (and of its update's scratch)
WEIGHT_MIN_ROWS = 16     # rows per block at least: fewer make the matmuls that form them re-read x too often


def weight_block_rows(w_shape: Shape) -> int:
    """Rows of an [O, F] weight gradient per block: as many as fit in
    `WEIGHT_TILE` floats, but at least `WEIGHT_MIN_ROWS` (a 4096-wide layer
    took 4 rows a block: 1024 matmuls, each re-reading x, 1.7x the time of
    the whole gradient; 16 rows cost a 64K-float tile there)."""
    o, f = w_shape
    return max(1, min(o, max(WEIGHT_MIN_ROWS, WEIGHT_TILE // max(f, 1))))


def dense_scratch(in_shape: Shape, w_shape: Shape, *, act: Act = None, budget: int | None = None) -> dict[str, Shape]:
    """Scratch of `dense`: only its fused activation's (pieces within `budget` floats per example)."""
    return activation_scratch(act, tuple(in_shape[:-1]) + (w_shape[0],), budget)


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *,
          act: Act = None, scratch: Scratch | None = None) -> None:
    """x @ w.T + b on the last axis: `x` [B, F] or [B, T, F], `w` [O, F], `out` [..., O]."""
    np.matmul(x, w.T, out=out)
    if b is not None:
        np.add(out, b, out=out)
    apply_activation(act, out, scratch)


# ------------------------------------------------------------------ backward

def dense_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, *, dx: np.ndarray | None,
                   dw: np.ndarray | None, db: np.ndarray | None, rows: slice | None = None) -> None:
    """Gradients of `dense` (without its activation): from `x` [B, F] or
    [B, T, F], `w` [O, F] and `dy` [..., O], overwrite `dx` = dy @ w, `dw` =
    dy.T @ x and `db` = the sum of dy, summed over the batch (and time). Each
    may be None. One matmul each; nothing allocated when x and dy fold to 2-D
    without a copy (contiguous, or channel slices of a concat's gradient).
    `dx` may be `x` (dw is formed first). With `rows` (a slice of the
    output units), `dw` [rows, F] gets only those rows of the weight's
    gradient: dy[..., rows].T @ x, the same sums as the whole product's rows."""
    o, f = w.shape
    if dw is not None:
        dy2 = dy.reshape(-1, o)
        np.matmul((dy2 if rows is None else dy2[:, rows]).T, x.reshape(-1, f), out=dw)
    if db is not None:
        np.add.reduce(dy.reshape(-1, o), axis=0, out=db)
    if dx is not None:
        np.matmul(dy, w, out=dx)
