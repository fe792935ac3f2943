"""Shape kernels: transpose, nearest-neighbour and (bi)linear upsample, pad and copy (which
serves flatten and reshape when they cannot alias) (the calling conventions are in `kernels.py`).

In:  x and the op's permutation or scale.
Out: the rearranged elements in `out`; the `*_backward` kernels put a
     gradient back (transpose) or sum it over each upsampled block.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from ._common import _view
from .pool import DENSE_BINS, _along, _range_sums


def transpose(x: np.ndarray, perm: Sequence[int], out: np.ndarray) -> None:
    """The axes of each example permuted by `perm` (which leaves the batch out)."""
    np.copyto(out, x.transpose((0,) + tuple(p + 1 for p in perm)))


def upsample(x: np.ndarray, scale: int | Sequence[int], out: np.ndarray) -> None:
    """Nearest-neighbour upsampling of [B, C, T] or [B, C, H, W] by an integer
    scale (one per spatial axis, or one for all): out[..., i] = x[..., i // scale]."""
    spatial = x.shape[2:]
    scales = (scale,) * len(spatial) if isinstance(scale, int) else tuple(scale)
    src_shape, dst_shape = list(x.shape[:2]), list(x.shape[:2])
    for n, s in zip(spatial, scales):
        src_shape += [n, 1]
        dst_shape += [n, s]
    np.copyto(_view(out, tuple(dst_shape)), _view(x, tuple(src_shape)))


def copy(x: np.ndarray, out: np.ndarray) -> None:
    """`x`'s elements, in C order, into `out` (same size, any shape)."""
    np.copyto(out, _view(x, out.shape))


# ------------------------------------------------------------------ backward
# flatten and reshape need no kernel: their gradient is a view of dy.

def transpose_backward(dy: np.ndarray, perm: Sequence[int], *, dx: np.ndarray) -> None:
    """Gradient of `transpose`: dy's axes put back by the inverse of `perm`
    (which leaves the batch out)."""
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    np.copyto(dx, dy.transpose((0,) + tuple(i + 1 for i in inverse)))


def upsample_backward(dy: np.ndarray, scale: int | Sequence[int], *, dx: np.ndarray) -> None:
    """Gradient of `upsample` (nearest): each dx element is the sum of the
    scale block of dy it was copied to."""
    spatial = dx.shape[2:]
    scales = (scale,) * len(spatial) if isinstance(scale, int) else tuple(scale)
    blocks = list(dy.shape[:2])
    for n, s in zip(spatial, scales):
        blocks += [n, s]
    np.add.reduce(dy.reshape(blocks), axis=tuple(range(3, 2 + 2 * len(spatial), 2)), out=dx)


# ------------------------------------------------------------------ pad (section 9)
# `pads` ((before, after), ...) for the trailing axes of each example (the last axis last);
# `mode` "constant" (filled with `value`), "reflect" (mirrored without repeating the edge) or
# "replicate" (the edge repeated): F.pad's modes. Axes are padded one at a time, last first, so
# corners are as PyTorch's (the reflection of a reflection).

def _pad_sources(n: int, lo: int, hi: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """For the padded positions before and after: the index in the unpadded axis they copy."""
    before = np.arange(-lo, 0)
    after = np.arange(n, n + hi)
    if mode == "reflect":
        return -before, 2 * (n - 1) - after
    return np.zeros(lo, np.intp), np.full(hi, n - 1, np.intp)


def pad(x: np.ndarray, out: np.ndarray, pads: Sequence[Sequence[int]], mode: str = "constant",
        value: float = 0.0) -> None:
    """F.pad of `x` [B, ...] into `out`; `pads` covers the last len(pads) axes."""
    k = len(pads)
    first = x.ndim - k
    inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, x.shape[first:]))
    if mode == "constant":
        for i, (lo, hi) in enumerate(pads):
            axis = first + i
            if lo or hi:
                idx = [slice(None)] * out.ndim
                idx[axis] = slice(0, lo)
                out[tuple(idx)] = value
                idx[axis] = slice(lo + x.shape[axis], None)
                out[tuple(idx)] = value
        np.copyto(out[(Ellipsis, *inner)], x)
        return
    np.copyto(out[(Ellipsis, *inner)], x)
    for i in reversed(range(k)):       # the last axis first, over the rows already padded
        lo, hi = pads[i]
        if not (lo or hi):
            continue
        axis = first + i
        n = x.shape[axis]
        src_lo, src_hi = _pad_sources(n, lo, hi, mode)
        region = [slice(None)] * out.ndim
        for j in range(i + 1, k):      # the axes after this one are padded in full already
            region[first + j] = slice(None)
        for j in range(i):             # the ones before are not yet: their inner range only
            region[first + j] = inner[j]
        body = out[tuple(region)]
        idx = [slice(None)] * out.ndim
        idx[axis] = slice(0, lo)
        body[tuple(idx)] = np.take(body, src_lo + lo, axis=axis)
        idx[axis] = slice(lo + n, lo + n + hi)
        body[tuple(idx)] = np.take(body, src_hi + lo, axis=axis)


def pad_backward_scratch(out_shape: Sequence[int], mode: str = "constant") -> dict[str, tuple]:
    """Scratch of `pad_backward`: a copy of dy to fold the borders in (reflect, replicate)."""
    return {} if mode == "constant" else {"grad": tuple(out_shape)}


def pad_backward(dy: np.ndarray, pads: Sequence[Sequence[int]], mode: str = "constant", value: float = 0.0, *,
                 dx: np.ndarray, scratch=None) -> None:
    """Gradient of `pad`: the inner part of dy, plus (reflect, replicate) each border
    position's gradient added to the position it copied (the first padded axis first,
    undoing the forward's order)."""
    k = len(pads)
    first = dx.ndim - k
    inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, dx.shape[first:]))
    if mode == "constant":
        np.copyto(dx, dy[(Ellipsis, *inner)])
        return
    g = np.empty(dy.shape, dy.dtype) if scratch is None else scratch["grad"].reshape(dy.shape)
    np.copyto(g, dy)
    for i in range(k):
        lo, hi = pads[i]
        if not (lo or hi):
            continue
        axis = first + i
        n = dx.shape[axis]
        src_lo, src_hi = _pad_sources(n, lo, hi, mode)
        region = [slice(None)] * g.ndim
        for j in range(i):
            region[first + j] = inner[j]
        body = g[tuple(region)]
        for pos, src in list(zip(range(lo), src_lo)) + list(zip(range(lo + n, lo + n + hi), src_hi)):
            a = [slice(None)] * g.ndim
            b = [slice(None)] * g.ndim
            a[axis], b[axis] = int(src) + lo, pos
            body[tuple(a)] += body[tuple(b)]
    np.copyto(dx, g[(Ellipsis, *inner)])



# ------------------------------------------------------------------ linear and bilinear upsampling (section 9)
# F.interpolate(mode="linear"/"bilinear", align_corners=False, scale_factor=s): output position o
# reads source s = max((o + 0.5) / scale - 0.5, 0) between floor(s) and the next position
# (clamped to the last). Separable: one axis at a time, each output position gathering its two
# taps, so the work and the memory follow the output (an [n * scale, n] interpolation matrix
# would take gigabytes for a long axis).

@functools.lru_cache(maxsize=256)
def _taps(n: int, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w0, w1) [n * scale] each: output position o is w0[o] * x[i0[o]] + w1[o] * x[i1[o]]
    (float64 weights; i0 and i1 never decrease with o)."""
    src = np.maximum((np.arange(n * scale) + 0.5) / scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.intp), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    lam = src - i0
    taps = (i0, i1, 1.0 - lam, lam)
    for a in taps:
        a.setflags(write=False)
    return taps


@functools.lru_cache(maxsize=256)
def _tap_ranges(n: int, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lo0, hi0, lo1, hi1) [n] each: the output positions whose first tap is input j are
    lo0[j] .. hi0[j] - 1, those whose second tap is j lo1[j] .. hi1[j] - 1 (the taps are sorted)."""
    i0, i1, _, _ = _taps(n, scale)
    j = np.arange(n)
    ranges = (np.searchsorted(i0, j, "left"), np.searchsorted(i0, j, "right"),
              np.searchsorted(i1, j, "left"), np.searchsorted(i1, j, "right"))
    for a in ranges:
        a.setflags(write=False)
    return ranges


@functools.lru_cache(maxsize=256)
def _interp_matrix(n: int, scale: int, dtype) -> np.ndarray:
    """[n * scale, n]: row o holds output position o's two weights (small axes only)."""
    i0, i1, w0, w1 = _taps(n, scale)
    m = np.zeros((n * scale, n), np.float64)
    rows = np.arange(n * scale)
    np.add.at(m, (rows, i0), w0)
    np.add.at(m, (rows, i1), w1)
    m = m.astype(dtype)
    m.setflags(write=False)
    return m


def _interp_axis(x: np.ndarray, axis: int, scale: int, out: np.ndarray) -> None:
    """x upsampled along the (negative) `axis` by `scale` into `out`: as one product with the
    interpolation matrix while it is small (faster), else by gathering each position's taps."""
    n = x.shape[axis]
    if n * n * scale <= DENSE_BINS:
        m = _interp_matrix(n, scale, x.dtype.type)
        if axis == -1:
            np.matmul(x, m.T, out=out)
        else:
            np.matmul(m, x, out=out)
        return
    i0, i1, w0, w1 = _taps(x.shape[axis], scale)
    t = x.dtype.type
    np.multiply(np.take(x, i0, axis=axis), _along(w0.astype(t), axis), out=out)
    second = np.take(x, i1, axis=axis)
    second *= _along(w1.astype(t), axis)
    out += second


def _interp_axis_backward(dy: np.ndarray, axis: int, scale: int, dx: np.ndarray) -> None:
    """Gradient of `_interp_axis` along `axis`: input j gathers the weighted dy of the output
    positions that read it, each tap's a contiguous run (sums of runs as in `_range_sums`)."""
    n = dx.shape[axis]
    if n * n * scale <= DENSE_BINS:
        m = _interp_matrix(n, scale, dx.dtype.type)
        if axis == -1:
            np.matmul(dy, m, out=dx)
        else:
            np.matmul(m.T, dy, out=dx)
        return
    _, _, w0, w1 = _taps(dx.shape[axis], scale)
    lo0, hi0, lo1, hi1 = _tap_ranges(dx.shape[axis], scale)
    g = _range_sums(dy * _along(w0, axis), lo0, hi0, axis)
    g += _range_sums(dy * _along(w1, axis), lo1, hi1, axis)
    np.copyto(dx, g)


def _scales(scale, k: int) -> tuple[int, ...]:
    return (scale,) * k if isinstance(scale, int) else tuple(scale)


def upsample_linear_scratch(in_shape: Sequence[int], scale) -> dict[str, tuple]:
    """Scratch of `upsample_linear` (and its backward): the columns done, [B, C, H, OW] (2-d)."""
    if len(in_shape) == 3:
        return {}
    b, c, h, w = in_shape
    return {"rows": (b, c, h, w * _scales(scale, 2)[1])}


def upsample_linear(x: np.ndarray, scale, out: np.ndarray, *, scratch=None) -> None:
    """Linear ([B, C, T]) or bilinear ([B, C, H, W]) upsampling by integer scales, align_corners=False."""
    if x.ndim == 3:
        _interp_axis(x, -1, _scales(scale, 1)[0], out)
        return
    sh, sw = _scales(scale, 2)
    shape = upsample_linear_scratch(x.shape, scale)["rows"]
    rows = np.empty(shape, x.dtype) if scratch is None else scratch["rows"].reshape(shape)
    _interp_axis(x, -1, sw, rows)
    _interp_axis(rows, -2, sh, out)


def upsample_linear_backward(dy: np.ndarray, scale, *, dx: np.ndarray, scratch=None) -> None:
    """Gradient of `upsample_linear`: each axis's taps transposed, the rows first."""
    if dx.ndim == 3:
        _interp_axis_backward(dy, -1, _scales(scale, 1)[0], dx)
        return
    sh, sw = _scales(scale, 2)
    shape = upsample_linear_scratch(dx.shape, scale)["rows"]
    rows = np.empty(shape, dx.dtype) if scratch is None else scratch["rows"].reshape(shape)
    _interp_axis_backward(dy, -2, sh, rows)
    _interp_axis_backward(rows, -1, sw, dx)
