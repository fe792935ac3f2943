"""What the kernel modules share: the array type aliases and small helpers.

In:  nothing from the other kernel modules.
Out: the aliases `Shape`, `Scratch`, `Act`, `Pads2d`; `_view` (a reshape that
     never copies), `_provide` (the caller's scratch or fresh arrays;
     `_provide_as` in a given dtype), `_window_out` (PyTorch's sliding-window
     output length), `_tap_span` (the outputs a kernel tap reads inside the
     unpadded input), padding helpers
     (`_padded_shape`, `_fill_frame`, `_pad_into`), argument normalisers
     (`_pair`, `_pads2d`) and `_clip` (the clip ufunc itself).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, Sequence

import numpy as np

try:                                     # the clip ufunc, without np.clip's Python wrapper (~1.6 us a call)
    from numpy._core.umath import clip as _clip
except ImportError:                      # NumPy 1.x
    from numpy.core.umath import clip as _clip  # noqa: F401

Shape = tuple[int, ...]
Scratch = Mapping[str, np.ndarray]
Act = tuple | None                       # None or (name, *params)
Pads2d = tuple[tuple[int, int], tuple[int, int]]


# ------------------------------------------------------------------ helpers

def _view(a: np.ndarray, shape: Shape) -> np.ndarray:
    """`a` reshaped without copying (raises if only a copy could do it)."""
    return a.reshape(shape, copy=False)


def _provide(scratch: Scratch | None, shapes: Callable[[], Mapping[str, Shape]]) -> Scratch:
    """The caller's planned views, or fresh arrays when it planned none."""
    if scratch is not None:
        return scratch
    return {name: np.empty(shape, dtype=np.float32) for name, shape in shapes().items()}


def _provide_as(scratch: Scratch | None, shapes: Callable[[], Mapping[str, Shape]], dtype) -> Scratch:
    """`_provide` for kernels that also run in float64 (the backward kernels'
    gradient checks): fresh arrays take the dtype of the data."""
    if scratch is not None:
        return scratch
    return {name: np.empty(shape, dtype=dtype) for name, shape in shapes().items()}


def _per_example(shape: Shape) -> int:
    return math.prod(shape[1:])


def _window_out(size: int, kernel: int, stride: int, dilation: int, lo: int, hi: int) -> int:
    """Output length of a sliding window, as PyTorch computes it (floor mode)."""
    return (size + lo + hi - dilation * (kernel - 1) - 1) // stride + 1


def _tap_span(out_len: int, size: int, stride: int, offset: int) -> tuple[int, int]:
    """Output positions [o0, o1) whose input index o * stride + offset lies in
    [0, size): the part of a kernel tap (at `offset` from the window's padded
    corner) that reads the input rather than padding."""
    o0 = min(out_len, max(0, -(-(-offset) // stride)))
    o1 = min(out_len, max(o0, -(-(size - offset) // stride)))
    return o0, o1


def _padded_shape(in_shape: Shape, pads: Pads2d) -> Shape | None:
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return None
    b, c, h, w = in_shape
    return (b, c, h + top + bottom, w + left + right)


def _fill_frame(grid: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], fill: float) -> None:
    """Set everything of [B, C, H, W] `grid` outside the rectangle `rows` x `cols` to `fill`."""
    (r0, r1), (c0, c1) = rows, cols
    grid[:, :, :r0].fill(fill)
    grid[:, :, r1:].fill(fill)
    grid[:, :, r0:r1, :c0].fill(fill)
    grid[:, :, r0:r1, c1:].fill(fill)


def _pad_into(x: np.ndarray, buf: np.ndarray, pads: Pads2d, fill: float) -> np.ndarray:
    """`x` written into the middle of `buf` with its border set to `fill`."""
    (top, _), (left, _) = pads
    h, w = x.shape[2:]
    _fill_frame(buf, (top, top + h), (left, left + w), fill)
    np.copyto(buf[:, :, top:top + h, left:left + w], x)
    return buf


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pads2d(padding: Sequence[Sequence[int]]) -> Pads2d:
    (top, bottom), (left, right) = padding
    return ((int(top), int(bottom)), (int(left), int(right)))


@functools.lru_cache(maxsize=256)
def _ones(n: int, dtype: str) -> np.ndarray:
    """A read-only vector of n ones (a matmul with it sums rows in one BLAS call)."""
    ones = np.ones(n, dtype)
    ones.flags.writeable = False
    return ones
