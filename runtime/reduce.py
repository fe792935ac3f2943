"""Axis kernels of section 9: glu, slice, select and the reductions (the
calling conventions are in `kernels.py`).

In:  x batch first; `axis` (and `axes`) count the batch as axis 0; slice's
     `start`, `stop`, `step` resolved by the compiler (non-negative, positive
     step); select's `index` non-negative.
Out: the result in `out` (never overlapping x): glu = a * sigmoid(b) for the
     two halves of `axis` (F.glu); slice and select copy the chosen positions;
     reduce_sum / reduce_mean / reduce_max reduce `axes` away (max as
     torch.amax: NaN propagates). Training: the `*_backward` kernels overwrite
     `dx` (the output's gradient scattered back; max shares it evenly among
     tied maxima, as torch.amax).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._common import Scratch, Shape, _clip, _provide_as


def _halves(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    half = x.shape[axis] // 2
    lead = (slice(None),) * axis
    return x[lead + (slice(0, half),)], x[lead + (slice(half, None),)]


def glu(x: np.ndarray, axis: int, out: np.ndarray) -> None:
    """The first half of `axis` times the sigmoid of the second: F.glu(x, axis)."""
    a, b = _halves(x, axis)
    np.negative(b, out=out)
    _clip(out, -np.inf, 88.0, out=out)          # exp(88) is finite: sigmoid(-inf) = 0, never inf/inf
    np.exp(out, out=out)
    np.add(out, 1.0, out=out)
    np.divide(a, out, out=out)


def slice_axis(x: np.ndarray, axis: int, start: int, stop: int, step: int, out: np.ndarray) -> None:
    """x[..., start:stop:step, ...] along `axis`."""
    np.copyto(out, x[(slice(None),) * axis + (slice(start, stop, step),)])


def select_axis(x: np.ndarray, axis: int, index: int, out: np.ndarray) -> None:
    """x[..., index, ...] along `axis`, which is dropped."""
    np.copyto(out, x[(slice(None),) * axis + (index,)])


def reduce_sum(x: np.ndarray, axes: Sequence[int], out: np.ndarray) -> None:
    np.add.reduce(x, axis=tuple(axes), out=out)


def reduce_mean(x: np.ndarray, axes: Sequence[int], out: np.ndarray) -> None:
    np.add.reduce(x, axis=tuple(axes), out=out)
    np.divide(out, np.prod([x.shape[a] for a in axes]), out=out)


def reduce_max(x: np.ndarray, axes: Sequence[int], out: np.ndarray) -> None:
    np.maximum.reduce(x, axis=tuple(axes), out=out)


# ------------------------------------------------------------------ backward

def glu_backward_scratch(shape: Shape, axis: int) -> dict[str, Shape]:
    """Scratch of `glu_backward`: the sigmoid of the second half (the output's shape)."""
    half = list(shape)
    half[axis] //= 2
    return {"gate": tuple(half)}


def glu_backward(x: np.ndarray, dy: np.ndarray, *, axis: int, dx: np.ndarray, scratch: Scratch | None = None) -> None:
    """da = dy * s, db = dy * a * s * (1 - s), s = sigmoid(b)."""
    s = _provide_as(scratch, lambda: glu_backward_scratch(x.shape, axis), x.dtype)["gate"]
    a, b = _halves(x, axis)
    da, db = _halves(dx, axis)
    np.negative(b, out=s)
    _clip(s, -np.inf, 88.0, out=s)
    np.exp(s, out=s)
    np.add(s, 1.0, out=s)
    np.reciprocal(s, out=s)
    np.subtract(1.0, s, out=db)
    np.multiply(db, s, out=db)
    np.multiply(db, a, out=db)
    np.multiply(db, dy, out=db)
    np.multiply(dy, s, out=da)


def slice_axis_backward(dy: np.ndarray, *, axis: int, start: int, stop: int, step: int, dx: np.ndarray) -> None:
    dx.fill(0.0)
    np.copyto(dx[(slice(None),) * axis + (slice(start, stop, step),)], dy)


def select_axis_backward(dy: np.ndarray, *, axis: int, index: int, dx: np.ndarray) -> None:
    dx.fill(0.0)
    np.copyto(dx[(slice(None),) * axis + (index,)], dy)


def _kept(dy: np.ndarray, axes: Sequence[int], ndim: int) -> np.ndarray:
    """dy with the reduced axes back as size 1 (broadcasts against x)."""
    return np.expand_dims(dy, tuple(axes)) if len(axes) else dy


def reduce_sum_backward(dy: np.ndarray, *, axes: Sequence[int], dx: np.ndarray) -> None:
    np.copyto(dx, _kept(dy, axes, dx.ndim))


def reduce_mean_backward(dy: np.ndarray, *, axes: Sequence[int], dx: np.ndarray) -> None:
    np.copyto(dx, _kept(dy, axes, dx.ndim))
    np.divide(dx, np.prod([dx.shape[a] for a in axes]), out=dx)


def reduce_max_backward(x: np.ndarray, y: np.ndarray, dy: np.ndarray, *, axes: Sequence[int],
                        dx: np.ndarray) -> None:
    """dy shared evenly among the positions equal to the maximum (torch.amax)."""
    axes = tuple(axes)
    np.equal(x, _kept(y, axes, x.ndim), out=dx)
    count = np.add.reduce(dx, axis=axes, keepdims=True)
    np.divide(dx, np.maximum(count, 1.0), out=dx)
    np.multiply(dx, _kept(dy, axes, x.ndim), out=dx)
