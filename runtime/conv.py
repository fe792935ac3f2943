"""Convolution kernels: conv2d and conv1d (which runs as conv2d on
[B, C, 1, T]), with their scratch functions (the calling conventions are in `kernels.py`).

In:  x [B, C_in, H, W] (or [B, C_in, T]), w [C_out, C_in/groups, *kernel],
     bias [C_out] or None, explicit padding, a fused activation, scratch.
Out: PyTorch's convolution, then the activation, in `out` [B, C_out, OH, OW].

Methods. Convolutions take one of three paths. A 1x1 stride-1 unpadded
convolution is one matmul on the input itself. A depthwise convolution
(groups == C_in > 1) is a multiply and an add per kernel tap over whole
arrays, reading each tap as one contiguous run per channel (see `_windows.py`,
"windows as contiguous runs"); pooling reads its windows the same way. Every other
convolution pads into scratch, copies its im2col columns into scratch
through an `as_strided` view, and runs one BLAS matmul per example and group.
Python loops run over taps, stride phases, groups or inputs, never over
pixels or channels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._common import (Act, Pads2d, Scratch, Shape, _pad_into, _padded_shape, _pads2d, _pair, _provide, _view,
                      _window_out)
from ._windows import _TapPlan, _narrow, _split_phases, _tap_plan, _tap_run
from .elementwise import activation_scratch, apply_activation


class _ConvPath(Enum):
    DEPTHWISE = "depthwise"     # groups == C_in > 1: a multiply-add per kernel tap
    POINTWISE = "pointwise"     # 1x1, stride 1, unpadded: a matmul on the input itself
    IM2COL = "im2col"           # the rest: columns in scratch, one matmul per example and group


@dataclass(frozen=True, slots=True)
class _ConvPlan:
    path: _ConvPath
    out_shape: Shape                       # [B, C_out, OH, OW]
    buffers: tuple[tuple[str, Shape], ...]  # the path's scratch: (name, shape)
    padded: bool                           # im2col reads a zero-padded copy of the input
    taps: _TapPlan | None                  # the depthwise path's

    def scratch(self, act: Act) -> dict[str, Shape]:
        return dict(self.buffers) | activation_scratch(act, self.out_shape)


@functools.lru_cache(maxsize=4096)
def _conv_plan(in_shape: Shape, w_shape: Shape, stride: tuple[int, int], pads: Pads2d,
               dilation: tuple[int, int], groups: int) -> _ConvPlan:
    b, c_in, h, w = in_shape
    c_out, cg_in, kh, kw = w_shape
    if c_in != cg_in * groups or c_out % groups:
        raise ValueError(f"weight {list(w_shape)} with groups={groups} does not fit input {list(in_shape)}")
    oh = _window_out(h, kh, stride[0], dilation[0], *pads[0])
    ow = _window_out(w, kw, stride[1], dilation[1], *pads[1])
    out_shape = (b, c_out, oh, ow)
    if groups > 1 and groups == c_in:
        tp = _tap_plan((h, w), (kh, kw), stride, dilation, pads)
        scratch = [("phases", tp.phases_shape(b, c_in)), ("wide", tp.wide_shape(b, c_out))]
        if kh * kw > 1:
            scratch.append(("products", tp.wide_shape(b, c_out)))
        return _ConvPlan(_ConvPath.DEPTHWISE, out_shape, tuple(scratch), False, tp)
    padded = _padded_shape(in_shape, pads)
    if kh == kw == 1 and stride == (1, 1) and padded is None:
        return _ConvPlan(_ConvPath.POINTWISE, out_shape, (), False, None)
    scratch = [] if padded is None else [("padded", padded)]
    scratch.append(("cols", (b, groups, cg_in * kh * kw, oh * ow)))
    return _ConvPlan(_ConvPath.IM2COL, out_shape, tuple(scratch), padded is not None, None)


def conv2d_scratch(in_shape: Shape, w_shape: Shape, *, stride: tuple[int, int], padding: Pads2d,
                   dilation: tuple[int, int], groups: int, act: Act = None) -> dict[str, Shape]:
    """Scratch of `conv2d`, by path: im2col needs `cols` (and `padded` when
    padded); depthwise needs `phases`, `wide` (and `products` beyond one tap);
    a 1x1 stride-1 unpadded convolution needs none. Plus the fused activation's."""
    plan = _conv_plan(tuple(in_shape), tuple(w_shape), _pair(stride), _pads2d(padding), _pair(dilation), groups)
    return plan.scratch(act)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *,
           stride: tuple[int, int], padding: Pads2d, dilation: tuple[int, int], groups: int,
           act: Act = None, scratch: Scratch | None = None) -> None:
    """PyTorch's conv2d of `x` [B, C_in, H, W] with `w` [C_out, C_in/groups, kh, kw]
    and bias `b` [C_out] (or None), then `act`, into `out` [B, C_out, OH, OW]."""
    stride, pads, dilation = _pair(stride), _pads2d(padding), _pair(dilation)
    plan = _conv_plan(x.shape, w.shape, stride, pads, dilation, groups)
    scratch = _provide(scratch, lambda: plan.scratch(act))
    if plan.path is _ConvPath.DEPTHWISE:
        _depthwise(x, w, b, out, plan.taps, scratch)      # adds the bias while dropping the wide columns
    else:
        if plan.path is _ConvPath.POINTWISE:
            _pointwise(x, w, out, groups)
        else:
            src = _pad_into(x, scratch["padded"], pads, 0.0) if plan.padded else x
            _im2col_matmul(src, w, out, stride, dilation, groups, scratch["cols"])
        if b is not None:
            np.add(out, b[:, None, None], out=out)
    apply_activation(act, out, scratch)


def _pointwise(x: np.ndarray, w: np.ndarray, out: np.ndarray, groups: int) -> None:
    bsz, c_in, h, wd = x.shape
    c_out = w.shape[0]
    w3 = _view(w, (groups, c_out // groups, c_in // groups))
    np.matmul(w3, _view(x, (bsz, groups, c_in // groups, h * wd)),
              out=_view(out, (bsz, groups, c_out // groups, h * wd)))


def _im2col_matmul(src: np.ndarray, w: np.ndarray, out: np.ndarray, stride: tuple[int, int],
                   dilation: tuple[int, int], groups: int, cols: np.ndarray) -> None:
    bsz, c_in = src.shape[:2]
    c_out, cg_in, kh, kw = w.shape
    oh, ow = out.shape[2:]
    s0, s1, s2, s3 = src.strides
    windows = as_strided(src, shape=(bsz, groups, cg_in, kh, kw, oh, ow),
                         strides=(s0, cg_in * s1, s1, dilation[0] * s2, dilation[1] * s3,
                                  stride[0] * s2, stride[1] * s3), writeable=False)
    np.copyto(_view(cols, windows.shape), windows)
    np.matmul(_view(w, (groups, c_out // groups, cg_in * kh * kw)), cols,
              out=_view(out, (bsz, groups, c_out // groups, oh * ow)))


def _depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, tp: _TapPlan,
               scratch: Scratch) -> None:
    """Output channel o reads input channel o // multiplier: the wide result is
    viewed as [B, C_in, multiplier, OH * wq], and each tap is one broadcast
    multiply (into `products`) and one add."""
    bsz, c_in = x.shape[:2]
    c_out, _, kh, kw = w.shape
    mult = c_out // c_in
    phases = scratch["phases"]
    _split_phases(x, phases, tp, 0.0)
    acc = _view(scratch["wide"], (bsz, c_in, mult, tp.run_length))
    w3 = _view(w, (c_in, mult, kh * kw))
    for t in range(kh * kw):
        run = _tap_run(phases, tp, t)[:, :, None]
        weight = w3[:, :, t, None]
        if t == 0:
            np.multiply(run, weight, out=acc)
        else:
            products = _view(scratch["products"], acc.shape)
            np.multiply(run, weight, out=products)
            np.add(acc, products, out=acc)
    narrow = _narrow(scratch["wide"], tp)
    if b is None:
        np.copyto(out, narrow)
    else:
        np.add(narrow, b[:, None, None], out=out)


def _as_2d_conv_args(stride: int, padding: Sequence[int], dilation: int) -> tuple[tuple, Pads2d, tuple]:
    left, right = padding
    return (1, int(stride)), ((0, 0), (int(left), int(right))), (1, int(dilation))


def conv1d_scratch(in_shape: Shape, w_shape: Shape, *, stride: int, padding: tuple[int, int],
                   dilation: int, groups: int, act: Act = None) -> dict[str, Shape]:
    """Scratch of `conv1d`, which runs as `conv2d` on [B, C, 1, T]: the same
    names and conv2d's shapes for that view."""
    s, p, d = _as_2d_conv_args(stride, padding, dilation)
    b, c, t = in_shape
    o, cg, k = w_shape
    return conv2d_scratch((b, c, 1, t), (o, cg, 1, k), stride=s, padding=p, dilation=d, groups=groups, act=act)


def conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *,
           stride: int, padding: tuple[int, int], dilation: int, groups: int,
           act: Act = None, scratch: Scratch | None = None) -> None:
    """PyTorch's conv1d of `x` [B, C_in, T] with `w` [C_out, C_in/groups, k],
    padding `(left, right)` (causal is `(dilation * (k - 1), 0)`), into `out` [B, C_out, OT]."""
    s, p, d = _as_2d_conv_args(stride, padding, dilation)
    conv2d(x[:, :, None, :], w[:, :, None, :], b, out[:, :, None, :], stride=s, padding=p, dilation=d,
           groups=groups, act=act, scratch=scratch)
