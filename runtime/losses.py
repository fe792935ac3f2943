"""Losses: PyTorch's `cross_entropy`, `mse_loss` and
`binary_cross_entropy_with_logits` (mean reduction), value and gradient.

In:  the model's output (float32, C order), the targets as `check_targets`
     returns them, an array `grad_out` of the output's shape, and optionally
     a float32 `scratch` of `scratch_shape(kind, output.shape)` (or any
     C-ordered float32 array with at least as many elements: a plan's scratch
     for its largest batch serves every smaller one).
Out: each loss function returns the loss (a Python float, the mean over all
     elements: batch and time steps, and features for `mse` and
     `bce_with_logits`) and writes d loss / d output into `grad_out`.
     `check_targets` returns the targets as the loss functions take them
     (intp class indices, or float32) or raises `TargetError` naming the
     array.

    cross_entropy    output [B, K] or [B, T, K] (logits), y [B] or [B, T] class indices
    mse              y of the output's shape
    bce_with_logits  y of the output's shape

Numerics, float32 throughout as PyTorch's:
- cross entropy subtracts each row's maximum before `exp` (log-sum-exp):
  loss = mean(log(sum(exp(x - max))) - (x[y] - max)); gradient
  (softmax - onehot) / rows. Logits of +-1e4 give exact 0 and 1.
- `bce_with_logits` computes PyTorch's per-element
  `(1 - y) * x - log_sigmoid(x)` with `log_sigmoid(x) = min(x, 0) -
  log1p(exp(-|x|))`, and the gradient `(sigmoid(x) - y) / N` as its autograd
  formula does (`sigmoid` overflows to exactly 0 and 1, without warnings).
- sums are NumPy's pairwise float32 sums.

Memory: nothing of the output's size is allocated when `scratch` is given
(`bce_with_logits` needs one output-sized scratch array, `cross_entropy` three
numbers per row); cross entropy's gather and scatter at the target indices
allocate O(rows) index temporaries. Without `scratch`, it is allocated.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .errors import UserError

LOSSES = ("cross_entropy", "mse", "bce_with_logits")


class TargetError(UserError, ValueError):
    """Targets that do not fit the model's output and the loss."""


# ------------------------------------------------------------------ the losses

def cross_entropy(output: np.ndarray, target: np.ndarray, grad_out: np.ndarray | None,
                  scratch: np.ndarray | None = None) -> float:
    """`F.cross_entropy` over logits [..., K] (the class axis last) with
    integer targets [...]; `grad_out=None` computes the loss only."""
    k = output.shape[-1]
    x = output.reshape(-1, k)
    rows = x.shape[0]
    t = target.reshape(-1)
    if grad_out is None:
        grad_out = np.empty(output.shape, dtype=np.float32)
    elif not grad_out.flags.c_contiguous:
        raise ValueError("cross_entropy writes its gradient through a flat view: grad_out must be C-contiguous")
    g = grad_out.reshape(-1, k)
    if scratch is None:
        scratch = np.empty((3, rows), dtype=np.float32)
    work = scratch.reshape(-1)
    row_max, row_sum, picked = work[:rows], work[rows:2 * rows], work[2 * rows:3 * rows]
    np.max(x, axis=1, out=row_max)
    np.subtract(x, row_max[:, None], out=g)                  # shifted logits
    flat = np.arange(rows) * k + t                            # the target's position in each row
    gf = grad_out.reshape(-1)
    np.take(gf, flat, out=picked, mode="clip")                # x[y] - max (targets checked)
    np.exp(g, out=g)
    np.sum(g, axis=1, out=row_sum)
    g /= row_sum[:, None]                                     # softmax
    gf[flat] -= 1.0
    g /= np.float32(rows)
    np.log(row_sum, out=row_sum)
    row_sum -= picked                                         # -log_softmax[y] per row
    return float(row_sum.sum()) / rows


def mse(output: np.ndarray, target: np.ndarray, grad_out: np.ndarray | None,
        scratch: np.ndarray | None = None) -> float:
    """`F.mse_loss`: mean((output - target)^2); gradient 2 (output - target) / N."""
    if grad_out is None:
        grad_out = np.empty(output.shape, dtype=np.float32)
    n = output.size
    np.subtract(output, target, out=grad_out)
    grad_out *= grad_out
    loss = float(grad_out.sum()) / n
    np.subtract(output, target, out=grad_out)
    grad_out *= np.float32(2.0 / n)                           # mse_loss_backward: norm * (x - y)
    return loss


def bce_with_logits(output: np.ndarray, target: np.ndarray, grad_out: np.ndarray | None,
                    scratch: np.ndarray | None = None) -> float:
    """`F.binary_cross_entropy_with_logits`: mean((1 - y) x - log_sigmoid(x));
    gradient (sigmoid(x) - y) / N."""
    if grad_out is None:
        grad_out = np.empty(output.shape, dtype=np.float32)
    n = output.size
    work = (np.empty(output.shape, dtype=np.float32) if scratch is None
            else scratch.reshape(-1)[:n].reshape(output.shape))
    x, y, g = output, target, grad_out
    np.abs(x, out=work)                                       # log1p(exp(-|x|))
    np.negative(work, out=work)
    np.exp(work, out=work)
    np.log1p(work, out=work)
    np.minimum(x, 0.0, out=g)                                 # log_sigmoid(x) = min(x, 0) - log1p(...)
    np.subtract(g, work, out=work)
    np.subtract(1.0, y, out=g)                                # (1 - y) * x - log_sigmoid(x)
    g *= x
    np.subtract(g, work, out=work)
    loss = float(work.sum()) / n
    with np.errstate(over="ignore"):                          # exp(-x) = inf: sigmoid 0, as torch
        np.negative(x, out=g)
        np.exp(g, out=g)
    g += 1.0
    np.reciprocal(g, out=g)                                   # sigmoid(x)
    g -= y
    g /= np.float32(n)
    return loss


LOSS_FUNCTIONS: dict[str, Callable[..., float]] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
    "bce_with_logits": bce_with_logits,
}


def _kind(kind: str) -> str:
    if kind not in LOSS_FUNCTIONS:
        raise ValueError(f"unknown loss {kind!r}: choose one of {', '.join(LOSSES)}")
    return kind


def scratch_shape(kind: str, out_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The float32 scratch the loss takes for an output of `out_shape` (batch
    axis included); `(0,)` when it needs none."""
    _kind(kind)
    if kind == "cross_entropy":
        return (3, math.prod(out_shape[:-1]))
    if kind == "bce_with_logits":
        return tuple(out_shape)
    return (0,)


def accuracy_count(output: np.ndarray, target: np.ndarray) -> int:
    """How many positions of a cross-entropy output have the target class as
    their largest logit (ties count for the first class, as `argmax`)."""
    return int(np.count_nonzero(output.argmax(axis=-1) == target))


# ------------------------------------------------------------------ targets

def _shape_text(shape: tuple) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_targets(kind: str, y: Any, out_shape: tuple[int, ...], batch_max: int, *,
                  batch: int | None = None, name: str = "y") -> np.ndarray:
    """The targets `y` for a model output of per-example shape `out_shape`
    (ints), checked: shape `[B, *out_shape]` (`[B, *out_shape[:-1]]` of class
    indices in `[0, K)` for cross entropy), `1 <= B <= batch_max`, and `B ==
    batch` when given. Returns intp class indices or float32 values, C order
    (`y` itself when it already is); raises `TargetError` naming `name`."""
    _kind(kind)
    out_shape = tuple(out_shape)
    try:
        a = y if isinstance(y, np.ndarray) else np.asarray(y)
    except Exception as e:  # any object may be passed: report what NumPy says about it
        raise TargetError(f"`{name}` is not an array of numbers ({str(e).splitlines()[0][:160]})") from None
    output = f"the model's output [B, {', '.join(str(d) for d in out_shape)}]"
    if kind == "cross_entropy":
        want = out_shape[:-1]
        k = out_shape[-1]
        what = (f"integer class indices {_shape_text(('B', *want))}" + f" for cross_entropy over {output}")
        if a.dtype.kind not in "iu":
            hint = " (convert with .astype(np.int64))" if a.dtype.kind in "fb" else ""
            raise TargetError(f"`{name}` must hold {what}, got dtype {a.dtype}{hint}")
    else:
        want = out_shape
        what = f"float values {_shape_text(('B', *want))} for {kind}, the shape of {output}"
        if a.dtype.kind != "f":
            hint = " (convert with .astype(np.float32))" if a.dtype.kind in "iub" else ""
            raise TargetError(f"`{name}` must hold {what}, got dtype {a.dtype}{hint}")
    if a.ndim != len(want) + 1 or tuple(a.shape[1:]) != want:
        hint = ""
        if kind == "cross_entropy" and a.ndim == len(out_shape) + 1 and tuple(a.shape[1:]) == out_shape:
            hint = " (one-hot targets? pass the class indices: y.argmax(-1))"
        raise TargetError(f"`{name}` must hold {what}, got shape {_shape_text(a.shape)}{hint}")
    b = a.shape[0]
    if batch is not None and b != batch:
        raise TargetError(f"`{name}` has {b} example{'s' if b != 1 else ''}, the input has {batch}")
    if not 1 <= b <= batch_max:
        raise TargetError(f"`{name}` has batch {b}; the trainer was built for batch <= {batch_max}")
    if kind == "cross_entropy":
        if a.size and (a.min() < 0 or a.max() >= k):
            bad = np.flatnonzero((a < 0) | (a >= k))[0]
            where = ", ".join(str(int(i)) for i in np.unravel_index(bad, a.shape))
            raise TargetError(f"`{name}` holds class index {a.reshape(-1)[bad]} at [{where}]; "
                              f"the model's output has {k} classes (0 to {k - 1})")
        return a if a.dtype == np.intp and a.flags.c_contiguous else np.ascontiguousarray(a, dtype=np.intp)
    return a if a.dtype == np.float32 and a.flags.c_contiguous else np.ascontiguousarray(a, dtype=np.float32)
