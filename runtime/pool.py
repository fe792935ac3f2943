"""Pooling kernels: max and average pooling in 1-D and 2-D (1-D runs as 2-D
on [B, C, 1, T]), global average and max pooling, adaptive average pooling (the calling
conventions are in `kernels.py`).

In:  x [B, C, H, W] (or [B, C, T]), kernel, stride, explicit padding, scratch
     as named by the `*pool*_scratch` functions.
Out: PyTorch's pooling (floor mode; average pooling counts padding as zeros)
     in `out`. Windows are read as contiguous runs (`_windows.py`).
     Training: `maxpool*_train` also write the arg-max, and the `*_backward`
     kernels turn an output gradient into the input's ("backward" below).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ._common import (Pads2d, Scratch, Shape, _pads2d, _pair, _per_example, _provide, _provide_as, _tap_span, _view,
                      _window_out)
from ._windows import _TapPlan, _narrow, _split_phases, _tap_plan, _tap_run


def maxpool2d_scratch(in_shape: Shape, *, kernel: tuple[int, int], stride: tuple[int, int],
                      padding: Pads2d) -> dict[str, Shape]:
    """Scratch of `maxpool2d`: the input split into `phases` (padded) and the
    `wide` result (see "windows as contiguous runs")."""
    b, c, h, w = in_shape
    tp = _tap_plan((h, w), _pair(kernel), _pair(stride), (1, 1), _pads2d(padding))
    return {"phases": tp.phases_shape(b, c), "wide": tp.wide_shape(b, c)}


avgpool2d_scratch = maxpool2d_scratch      # the same windows, read the same way


def _pool2d(x: np.ndarray, kernel, stride, padding, scratch: Scratch | None, fill: float,
            accumulate: np.ufunc) -> tuple[np.ndarray, _TapPlan]:
    """The taps of every window combined by `accumulate`, as a wide result."""
    tp = _tap_plan(x.shape[2:], _pair(kernel), _pair(stride), (1, 1), _pads2d(padding))
    scratch = _provide(scratch, lambda: maxpool2d_scratch(x.shape, kernel=kernel, stride=stride, padding=padding))
    phases, acc = scratch["phases"], scratch["wide"]
    _split_phases(x, phases, tp, fill)
    np.copyto(acc, _tap_run(phases, tp, 0))
    for t in range(1, len(tp.runs)):
        accumulate(acc, _tap_run(phases, tp, t), out=acc)
    return acc, tp


def maxpool2d(x: np.ndarray, out: np.ndarray, *, kernel: tuple[int, int], stride: tuple[int, int],
              padding: Pads2d, scratch: Scratch | None = None) -> None:
    """PyTorch's max_pool2d; padding counts as -inf."""
    acc, tp = _pool2d(x, kernel, stride, padding, scratch, -np.inf, np.maximum)
    np.copyto(out, _narrow(acc, tp))


def avgpool2d(x: np.ndarray, out: np.ndarray, *, kernel: tuple[int, int], stride: tuple[int, int],
              padding: Pads2d, scratch: Scratch | None = None) -> None:
    """PyTorch's avg_pool2d with count_include_pad=True: padding counts as zeros."""
    acc, tp = _pool2d(x, kernel, stride, padding, scratch, 0.0, np.add)
    np.divide(_narrow(acc, tp), len(tp.runs), out=out)


def maxpool1d_scratch(in_shape: Shape, *, kernel: int, stride: int, padding: tuple[int, int]) -> dict[str, Shape]:
    """Scratch of `maxpool1d`, which runs as `maxpool2d` on [B, C, 1, T]: the
    2-D names and shapes for that view."""
    b, c, t = in_shape
    return maxpool2d_scratch((b, c, 1, t), kernel=(1, kernel), stride=(1, stride), padding=((0, 0), tuple(padding)))


avgpool1d_scratch = maxpool1d_scratch


def maxpool1d(x: np.ndarray, out: np.ndarray, *, kernel: int, stride: int, padding: tuple[int, int],
              scratch: Scratch | None = None) -> None:
    maxpool2d(x[:, :, None, :], out[:, :, None, :], kernel=(1, kernel), stride=(1, stride),
              padding=((0, 0), tuple(padding)), scratch=scratch)


def avgpool1d(x: np.ndarray, out: np.ndarray, *, kernel: int, stride: int, padding: tuple[int, int],
              scratch: Scratch | None = None) -> None:
    avgpool2d(x[:, :, None, :], out[:, :, None, :], kernel=(1, kernel), stride=(1, stride),
              padding=((0, 0), tuple(padding)), scratch=scratch)


def global_avgpool(x: np.ndarray, out: np.ndarray) -> None:
    """Mean over every axis after the channels: [B, C, ...] -> `out` [B, C] (or [B, C, 1, ...])."""
    bsz, c = x.shape[:2]
    flat = _view(x, (bsz, c, _per_example(x.shape) // c))
    target = _view(out, (bsz, c))
    np.add.reduce(flat, axis=2, out=target)
    np.divide(target, flat.shape[2], out=target)


# ------------------------------------------------------------------ backward
# Training. Max pooling's training forward also writes, per output, the flat
# index in the input's H*W plane of the element it took (the first maximum in
# row-major window order, as PyTorch's CPU kernel), so the backward routes
# each gradient there, summing where windows overlap. Average pooling's
# backward spreads each gradient over its window, 1/(kh*kw) to every tap
# (count_include_pad=True: padding counts); a tap's share goes through a
# strided view of dx clipped to the unpadded input.

def _as_dtype(buf: np.ndarray, dtype, shape: Shape) -> np.ndarray:
    """The first elements of scratch `buf` (any dtype, contiguous)
    reinterpreted as `dtype` and shaped `shape`."""
    return buf.reshape(-1).view(dtype)[:math.prod(shape)].reshape(shape)


def maxpool2d_train_scratch(in_shape: Shape, *, kernel: tuple[int, int], stride: tuple[int, int],
                            padding: Pads2d) -> dict[str, Shape]:
    """Scratch of `maxpool2d_train`: `maxpool2d`'s, plus `taps` (the winning
    tap per wide output, int32 in float32 storage) and `mask` (bytes, packed
    four to a float32)."""
    b, c, h, w = in_shape
    tp = _tap_plan((h, w), _pair(kernel), _pair(stride), (1, 1), _pads2d(padding))
    return {**maxpool2d_scratch(in_shape, kernel=kernel, stride=stride, padding=padding),
            "taps": tp.wide_shape(b, c), "mask": (b, c, -(-tp.run_length // 4))}


@functools.lru_cache(maxsize=1024)
def _argmax_offsets(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                    pads: Pads2d) -> tuple[np.ndarray, np.ndarray]:
    """Per tap, its offset in the H*W plane from the window's corner; per
    output pixel, the plane index of its window's corner (padding included)."""
    (h, w), (kh, kw), (sh, sw), ((top, _), (left, _)) = in_hw, kernel, stride, pads
    oh = _window_out(h, kh, sh, 1, *pads[0])
    ow = _window_out(w, kw, sw, 1, *pads[1])
    offsets = np.array([(i - top) * w + (j - left) for i in range(kh) for j in range(kw)], dtype=np.int32)
    corners = (np.arange(oh, dtype=np.int32)[:, None] * (sh * w) + np.arange(ow, dtype=np.int32) * sw)
    offsets.flags.writeable = corners.flags.writeable = False
    return offsets, corners


def maxpool2d_train(x: np.ndarray, out: np.ndarray, argmax: np.ndarray, *, kernel: tuple[int, int],
                    stride: tuple[int, int], padding: Pads2d, scratch: Scratch | None = None) -> None:
    """`maxpool2d` into `out`, and into `argmax` (int32, shaped like out) the
    flat H*W index of each output's element: the first maximum of its window
    in row-major order, as PyTorch's CPU kernel (NaN inputs excepted)."""
    kernel, stride, pads = _pair(kernel), _pair(stride), _pads2d(padding)
    tp = _tap_plan(x.shape[2:], kernel, stride, (1, 1), pads)
    scratch = _provide_as(scratch, lambda: maxpool2d_train_scratch(x.shape, kernel=kernel, stride=stride,
                                                                   padding=pads), x.dtype)
    phases, acc = scratch["phases"], scratch["wide"]
    wide = acc.shape
    taps = _as_dtype(scratch["taps"], np.int32, wide)
    mask = _as_dtype(scratch["mask"], np.bool_, wide)
    _split_phases(x, phases, tp, -np.inf)
    np.copyto(acc, _tap_run(phases, tp, 0))
    taps.fill(0)
    for t in range(1, len(tp.runs)):
        run = _tap_run(phases, tp, t)
        np.greater(run, acc, out=mask)
        np.copyto(taps, t, where=mask)
        np.maximum(acc, run, out=acc)
    np.copyto(out, _narrow(acc, tp))
    offsets, corners = _argmax_offsets(x.shape[2:], kernel, stride, pads)
    np.take(offsets, _narrow(taps, tp), out=argmax, mode="clip")
    np.add(argmax, corners, out=argmax)


def maxpool_backward_scratch(out_shape: Shape) -> dict[str, Shape]:
    """Scratch of `maxpool2d_backward` and `maxpool1d_backward`: `index`, one
    int32 (in float32 storage) per output element."""
    return {"index": tuple(out_shape)}


maxpool2d_backward_scratch = maxpool1d_backward_scratch = maxpool_backward_scratch


def maxpool2d_backward(dy: np.ndarray, argmax: np.ndarray, *, dx: np.ndarray, scratch: Scratch | None = None) -> None:
    """dx = 0, plus each output gradient added at its `argmax` (summed where
    windows overlap). Works for any rank: [B, C, ...] with argmax indexing
    the flattened spatial axes of dx."""
    bsz, c = dx.shape[:2]
    plane = _per_example(dx.shape) // c
    index = _as_dtype(_provide(scratch, lambda: maxpool_backward_scratch(argmax.shape))["index"], np.int32,
                      (bsz * c, argmax.size // (bsz * c)))
    np.add(argmax.reshape(index.shape), np.arange(0, bsz * c * plane, plane, dtype=np.int32)[:, None], out=index)
    dx.fill(0)
    np.add.at(_view(dx, (dx.size,)), index.reshape(-1), dy.reshape(-1))


maxpool1d_backward = maxpool2d_backward


def maxpool1d_train_scratch(in_shape: Shape, *, kernel: int, stride: int, padding: tuple[int, int]) -> dict[str, Shape]:
    """Scratch of `maxpool1d_train`: maxpool2d_train's for the [B, C, 1, T] view."""
    b, c, t = in_shape
    return maxpool2d_train_scratch((b, c, 1, t), kernel=(1, kernel), stride=(1, stride),
                                   padding=((0, 0), tuple(padding)))


def maxpool1d_train(x: np.ndarray, out: np.ndarray, argmax: np.ndarray, *, kernel: int, stride: int,
                    padding: tuple[int, int], scratch: Scratch | None = None) -> None:
    """`maxpool1d` and the index in T of each output's element, as `maxpool2d_train`."""
    maxpool2d_train(x[:, :, None, :], out[:, :, None, :], argmax[:, :, None, :], kernel=(1, kernel),
                    stride=(1, stride), padding=((0, 0), tuple(padding)), scratch=scratch)


def avgpool2d_backward(dy: np.ndarray, *, kernel: tuple[int, int], stride: tuple[int, int], padding: Pads2d,
                       dx: np.ndarray) -> None:
    """Gradient of `avgpool2d` (count_include_pad=True): each output gradient
    divided by kh*kw and added to every input pixel of its window."""
    (kh, kw), (sh, sw), ((top, _), (left, _)) = _pair(kernel), _pair(stride), _pads2d(padding)
    h, w = dx.shape[2:]
    oh, ow = dy.shape[2:]
    if (kh, kw) == (sh, sw) and top == left == 0 and (h, w) == (oh * kh, ow * kw) and dx.flags.c_contiguous:
        # windows tile the input: each output gradient broadcast over its window (no strided adds, no buffers)
        np.copyto(_view(dx, (*dx.shape[:2], oh, kh, ow, kw)), dy[:, :, :, None, :, None])
        np.divide(dx, kh * kw, out=dx)
        return
    dx.fill(0)
    for i in range(kh):
        o0, o1 = _tap_span(oh, h, sh, i - top)
        if o0 == o1:
            continue
        r0 = o0 * sh + i - top
        for j in range(kw):
            p0, p1 = _tap_span(ow, w, sw, j - left)
            if p0 == p1:
                continue
            c0 = p0 * sw + j - left
            target = dx[:, :, r0:r0 + (o1 - o0 - 1) * sh + 1:sh, c0:c0 + (p1 - p0 - 1) * sw + 1:sw]
            np.add(target, dy[:, :, o0:o1, p0:p1], out=target)
    np.divide(dx, kh * kw, out=dx)


def avgpool1d_backward(dy: np.ndarray, *, kernel: int, stride: int, padding: tuple[int, int], dx: np.ndarray) -> None:
    """Gradient of `avgpool1d`, as `avgpool2d_backward` on [B, C, 1, T]."""
    avgpool2d_backward(dy[:, :, None, :], kernel=(1, kernel), stride=(1, stride), padding=((0, 0), tuple(padding)),
                       dx=dx[:, :, None, :])


def global_avgpool_backward(dy: np.ndarray, *, dx: np.ndarray) -> None:
    """Gradient of `global_avgpool`: dy [B, C] (or [B, C, 1, ...]) divided by
    the pooled size, at every position of dx [B, C, ...]."""
    bsz, c = dx.shape[:2]
    size = _per_example(dx.shape) // c
    np.divide(dy.reshape(bsz, c, 1), size, out=_view(dx, (bsz, c, size)))


# ------------------------------------------------------------------ section 9: global_maxpool, adaptive_avgpool

def global_maxpool(x: np.ndarray, out: np.ndarray) -> None:
    """Maximum over every axis after the channels: [B, C, ...] -> `out` [B, C]."""
    bsz, c = x.shape[:2]
    np.maximum.reduce(_view(x, (bsz, c, _per_example(x.shape) // c)), axis=2, out=_view(out, (bsz, c)))


def global_maxpool_train(x: np.ndarray, out: np.ndarray, argmax: np.ndarray) -> None:
    """`global_maxpool` that also writes each channel's flat arg-max (the first maximum) into
    `argmax` [B, C] (int32)."""
    bsz, c = x.shape[:2]
    flat = _view(x, (bsz, c, _per_example(x.shape) // c))
    idx = np.argmax(flat, axis=2)
    np.copyto(argmax, idx, casting="unsafe")
    np.copyto(_view(out, (bsz, c)), np.take_along_axis(flat, idx[:, :, None], axis=2)[:, :, 0])


def global_maxpool_backward(dy: np.ndarray, argmax: np.ndarray, *, dx: np.ndarray) -> None:
    """Gradient of `global_maxpool`: dy [B, C] at each channel's arg-max, zero elsewhere."""
    bsz, c = dx.shape[:2]
    flat = _view(dx, (bsz, c, _per_example(dx.shape) // c))
    flat.fill(0)
    np.put_along_axis(flat, argmax.astype(np.intp)[:, :, None], dy.reshape(bsz, c, 1), axis=2)


@functools.lru_cache(maxsize=256)
def _bins(n: int, size: int, dtype=np.float32) -> np.ndarray:
    """PyTorch's adaptive-average bins as a matrix [size, n] (made once per shape): row i
    holds 1/len over floor(i * n / size) .. ceil((i + 1) * n / size) - 1."""
    m = np.zeros((size, n), dtype)
    for i in range(size):
        lo, hi = (i * n) // size, -(-((i + 1) * n) // size)
        m[i, lo:hi] = 1.0 / (hi - lo)
    m.setflags(write=False)
    return m


def adaptive_avgpool2d_scratch(in_shape: Shape, *, size: tuple[int, int]) -> dict[str, Shape]:
    """Scratch of `adaptive_avgpool2d` (and of its backward): the rows pooled, [B, C, H, OW]."""
    b, c, h, _ = in_shape
    return {"rows": (b, c, h, size[1])}


def adaptive_avgpool2d(x: np.ndarray, out: np.ndarray, *, size: tuple[int, int],
                       scratch: Scratch | None = None) -> None:
    """F.adaptive_avg_pool2d of [B, C, H, W] to `size`: the bins are separable, so two
    matrix products, over the columns then the rows."""
    b, c, h, w = x.shape
    scratch = _provide_as(scratch, lambda: adaptive_avgpool2d_scratch(x.shape, size=size), x.dtype)
    rows = _view(scratch["rows"], (b, c, h, size[1]))
    np.matmul(x, _bins(w, size[1], x.dtype.type).T, out=rows)
    np.matmul(_bins(h, size[0], x.dtype.type), rows, out=out)


def adaptive_avgpool2d_backward_scratch(out_shape: Shape, *, in_hw: tuple[int, int]) -> dict[str, Shape]:
    b, c, oh, _ = out_shape
    return {"rows": (b, c, in_hw[0], out_shape[3])}


def adaptive_avgpool2d_backward(dy: np.ndarray, *, size: tuple[int, int], dx: np.ndarray,
                                scratch: Scratch | None = None) -> None:
    """Gradient of `adaptive_avgpool2d`: dx = Bh.T @ dy @ Bw with the bin matrices."""
    b, c, h, w = dx.shape
    scratch = _provide_as(scratch, lambda: adaptive_avgpool2d_backward_scratch(dy.shape, in_hw=(h, w)), dx.dtype)
    rows = _view(scratch["rows"], (b, c, h, size[1]))
    np.matmul(_bins(h, size[0], dx.dtype.type).T, dy, out=rows)
    np.matmul(rows, _bins(w, size[1], dx.dtype.type), out=dx)


def adaptive_avgpool1d(x: np.ndarray, out: np.ndarray, *, size: int) -> None:
    """F.adaptive_avg_pool1d of [B, C, T] to `size`: one matrix product."""
    np.matmul(x, _bins(x.shape[2], size, x.dtype.type).T, out=out)


def adaptive_avgpool1d_backward(dy: np.ndarray, *, size: int, dx: np.ndarray) -> None:
    """Gradient of `adaptive_avgpool1d`: dx = dy @ B."""
    np.matmul(dy, _bins(dx.shape[2], size, dx.dtype.type), out=dx)
