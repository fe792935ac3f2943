"""Convolution kernels: conv2d and conv1d (which runs as conv2d on
[B, C, 1, T]), and the transposed conv_transpose2d/1d (end of file), with
their scratch functions (the calling conventions are in `kernels.py`).

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
pixels or channels. `conv2d_backward` and `conv1d_backward` give dx, dw and
db from dy ("backward" below).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._common import (Act, Pads2d, Scratch, Shape, _pad_into, _padded_shape, _pads2d, _pair, _provide, _provide_as,
                      _view, _window_out)
from ._windows import _TapPlan, _narrow, _phase_span, _split_phases, _tap_plan, _tap_run
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
    nb = _chunk(b, c_in * kh * kw * oh * ow)
    scratch = [] if padded is None else [("padded", (nb, *padded[1:]))]
    scratch.append(("cols", (nb, groups, cg_in * kh * kw, oh * ow)))
    return _ConvPlan(_ConvPath.IM2COL, out_shape, tuple(scratch), padded is not None, None)


_COLS = 1 << 16     # elements of im2col columns per chunk of examples: the columns stay in cache, scratch bounded


def _chunk(bsz: int, per_example: int) -> int:
    """Examples per chunk of a batch of `bsz` whose columns take `per_example`
    elements each: as many as fit `_COLS`, at least one (never more than the
    batch, so a smaller batch's chunk is never larger)."""
    return max(1, min(bsz, _COLS // max(1, per_example)))


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
            nb = scratch["cols"].shape[0]
            for b0 in range(0, x.shape[0], nb):
                bs = slice(b0, min(x.shape[0], b0 + nb))
                n = bs.stop - bs.start
                src = _pad_into(x[bs], scratch["padded"][:n], pads, 0.0) if plan.padded else x[bs]
                _im2col_matmul(src, w, out[bs], stride, dilation, groups, scratch["cols"][:n])
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


# ------------------------------------------------------------------ backward
# Training: the gradients of conv2d and conv1d with respect to the input, the
# weight and the bias, from the forward input `x` and the output gradient
# `dy`. Every path but the 1x1 one reads the input the way the depthwise
# forward does (`_windows.py`): split into stride phases, each kernel tap one
# contiguous run per channel of OH rows of the phase width wq ("wide": the
# columns from OW on are garbage). `dy` is copied wide with zeros in those
# columns, so whatever the garbage columns hold adds nothing.
# - grouped and dense convolutions: the tap runs are copied into columns laid
#   out [G, K, B * OH * wq] (K = C_in/G * kh * kw), `dy` into [G, C_out/G,
#   B * OH * wq]; dw = dy_t @ cols.T is one matmul per group over the whole
#   batch; the column gradients w.T @ dy_t overwrite the columns, and each tap
#   adds its run back into gradient phases (reusing the input's phase
#   buffer), which are then copied out to dx: col2im as one contiguous add
#   per tap. A 1x1 stride-1 unpadded convolution needs no windows: dw from a
#   transposed copy of x, dx = w.T @ dy per example.
# - depthwise (groups == C_in > 1): the tap's weight gradient is a dot
#   product of wide dy with the tap's run per channel and example
#   (np.vecdot), summed over the batch at the end; dx gathers w * dy tap by
#   tap into the gradient phases.

def _conv_backward_buffers(in_shape: Shape, w_shape: Shape, stride: tuple[int, int], pads: Pads2d,
                           dilation: tuple[int, int], groups: int, need_dx: bool) -> dict[str, Shape]:
    plan = _conv_plan(in_shape, w_shape, stride, pads, dilation, groups)
    b, c_in, h, w = in_shape
    c_out, cg_in, kh, kw = w_shape
    if plan.path is _ConvPath.POINTWISE:
        return {"cols": (b, c_in * h * w), "dy_t": (b, c_out * h * w)}
    tp = _tap_plan((h, w), (kh, kw), stride, dilation, pads)
    if plan.path is _ConvPath.DEPTHWISE:
        shapes = {"phases": tp.phases_shape(b, c_in), "dy_wide": tp.wide_shape(b, c_out),
                  "dw_parts": (b, c_out * kh * kw)}
        if need_dx:
            shapes |= {"dphases": tp.phases_shape(b, c_in),
                       "products": (b, _block_size(b, c_in, tp.run_length))}
        return shapes
    nb = _chunk(b, c_in * kh * kw * tp.run_length)
    shapes = {"phases": tp.phases_shape(nb, c_in), "cols": (nb, c_in * kh * kw * tp.run_length),
              "dy_t": (nb, c_out * tp.run_length)}
    if nb < b:
        shapes["dw_part"] = w_shape
    return shapes


def conv2d_backward_scratch(in_shape: Shape, w_shape: Shape, *, stride: tuple[int, int], padding: Pads2d,
                            dilation: tuple[int, int], groups: int, need_dx: bool = True) -> dict[str, Shape]:
    """Scratch of `conv2d_backward`, by path: a 1x1 stride-1 unpadded
    convolution needs `cols` and `dy_t`; other non-depthwise ones also
    `phases`; depthwise needs `phases`, `dy_wide`, `dw_parts`, and with
    `need_dx` (dx is wanted) also `dphases` and `products`."""
    return _conv_backward_buffers(tuple(in_shape), tuple(w_shape), _pair(stride), _pads2d(padding),
                                  _pair(dilation), groups, need_dx)


def conv2d_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, *, stride: tuple[int, int], padding: Pads2d,
                    dilation: tuple[int, int], groups: int, dx: np.ndarray | None, dw: np.ndarray | None,
                    db: np.ndarray | None, scratch: Scratch | None = None) -> None:
    """Gradients of `conv2d` (without its activation): from the input `x`
    [B, C_in, H, W], the weight `w` and the output gradient `dy`
    [B, C_out, OH, OW], overwrite `dx` (like x), `dw` (like w) and `db` [C_out]
    (each may be None: not wanted). Parameter gradients are summed over the
    batch. `dy` may be a channel slice of a larger gradient (concat)."""
    stride, pads, dilation = _pair(stride), _pads2d(padding), _pair(dilation)
    plan = _conv_plan(x.shape, w.shape, stride, pads, dilation, groups)
    scratch = _provide_as(scratch, lambda: _conv_backward_buffers(x.shape, w.shape, stride, pads, dilation,
                                                                  groups, dx is not None), x.dtype)
    if db is not None:
        np.add.reduce(dy.reshape(dy.shape[0], dy.shape[1], -1), axis=(0, 2), out=db)
    if plan.path is _ConvPath.DEPTHWISE:
        _depthwise_backward(x, w, dy, dx, dw, plan.taps, scratch)
    elif plan.path is _ConvPath.POINTWISE:
        _pointwise_backward(x, w, dy, dx, dw, groups, scratch)
    else:
        tp = _tap_plan(x.shape[2:], w.shape[2:], stride, dilation, pads)
        _windowed_backward(x, w, dy, dx, dw, groups, tp, scratch)


def _transposed(a: np.ndarray, buf: np.ndarray, groups: int, length: int) -> np.ndarray:
    """`a` [B, C, ...] (C * `length` per example, spatial axes folded) copied
    into `buf` as [G, C/G, B * length]: the batch folded into the columns."""
    bsz, c = a.shape[:2]
    t = _view(buf, (groups, c // groups, bsz, length))
    np.copyto(t, a.reshape(bsz, groups, c // groups, length).transpose(1, 2, 0, 3))
    return _view(t, (groups, c // groups, bsz * length))


def _pointwise_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, dx: np.ndarray | None,
                        dw: np.ndarray | None, groups: int, scratch: Scratch) -> None:
    bsz, c_in, h, wd = x.shape
    c_out = w.shape[0]
    w3 = _view(w, (groups, c_out // groups, c_in // groups))
    if dw is not None:
        cols = _transposed(x, scratch["cols"], groups, h * wd)
        dy_t = _transposed(dy, scratch["dy_t"], groups, h * wd)
        np.matmul(dy_t, cols.transpose(0, 2, 1), out=_view(dw, w3.shape))
    if dx is not None:
        np.matmul(w3.transpose(0, 2, 1), dy.reshape(bsz, groups, c_out // groups, h * wd),
                  out=_view(dx, (bsz, groups, c_in // groups, h * wd)))


def _wide_dy(dy: np.ndarray, buf: np.ndarray, tp: _TapPlan) -> np.ndarray:
    """`dy` [B, C, OH, OW] copied into `buf` as [B, C, OH * wq], zero in the garbage columns."""
    (oh, ow), (bsz, c) = tp.out_hw, dy.shape[:2]
    grid = _view(buf, (bsz, c, oh, tp.wq))
    np.copyto(grid[:, :, :, :ow], dy)
    grid[:, :, :, ow:].fill(0)
    return _view(buf, (bsz, c, tp.run_length))


def _windowed_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, dx: np.ndarray | None,
                       dw: np.ndarray | None, groups: int, tp: _TapPlan, scratch: Scratch) -> None:
    """Chunk by chunk of examples (`_chunk`, as the scratch function sized
    them); the weight gradient of later chunks is added in through `dw_part`."""
    bsz, c_in = x.shape[:2]
    c_out, cg_in, kh, kw = w.shape
    taps, length, cog = kh * kw, tp.run_length, c_out // groups
    nb = _chunk(bsz, c_in * taps * length)
    w3 = _view(w, (groups, cog, cg_in * taps))
    dw3 = None if dw is None else _view(dw, w3.shape)
    part3 = None if dw is None or nb >= bsz else _view(scratch["dw_part"], w3.shape)
    flat_cols, flat_dy = scratch["cols"].reshape(-1), scratch["dy_t"].reshape(-1)
    for b0 in range(0, bsz, nb):
        bs = slice(b0, min(bsz, b0 + nb))
        n = bs.stop - bs.start
        phases = scratch["phases"][:n]
        # dy_t [G, C_out/G, n * OH * wq]: wide dy, the chunk folded into the columns
        dy_t = _view(flat_dy[:c_out * n * length], (groups, cog, n, tp.out_hw[0], tp.wq))
        np.copyto(dy_t[..., :tp.out_hw[1]], dy[bs].reshape(n, groups, cog, *tp.out_hw).transpose(1, 2, 0, 3, 4))
        dy_t[..., tp.out_hw[1]:].fill(0)
        dy_t = _view(dy_t, (groups, cog, n * length))
        cols = _view(flat_cols[:c_in * taps * n * length], (groups, cg_in, taps, n, length))
        cols2 = _view(cols, (groups, cg_in * taps, n * length))
        if dw is not None:
            _split_phases(x[bs], phases, tp, 0.0)
            _gather_runs(phases, cols, tp, groups)
            target = dw3 if b0 == 0 else part3
            for g in range(groups):     # np.dot: NumPy's matmul with a transposed operand and out= is not BLAS
                np.dot(dy_t[g], cols2[g].T, out=target[g])
            if b0:
                np.add(dw3, part3, out=dw3)
        if dx is None:
            continue
        for g in range(groups):
            np.dot(w3[g].T, dy_t[g], out=cols2[g])
        phases.fill(0)
        cols_c = _view(cols, (c_in, taps, n, length))     # groups and their channels are one axis
        for t in range(taps):
            k, start = tp.runs[t]
            run = phases[:, :, k, start:start + length]
            np.add(run, cols_c[:, t].transpose(1, 0, 2), out=run)
        _merge_phases(phases, dx[bs], tp)


def _gather_runs(phases: np.ndarray, cols: np.ndarray, tp: _TapPlan, groups: int) -> None:
    """Every tap's run of `phases` [n, C, k, plane] into `cols` [G, C/G, taps, n, length]:
    one strided copy per phase row of taps (all taps at once for stride 1)."""
    n, c = phases.shape[:2]
    length, taps = tp.run_length, cols.shape[2]
    if len(tp.phases) == 1 and taps > 1:
        starts = [start for _, start in tp.runs]
        kw = next((i for i in range(1, taps) if starts[i] - starts[i - 1] != starts[1] - starts[0]), taps)
        if taps % kw == 0 and all(starts[r * kw + j] == starts[r * kw] + j * (starts[1] - starts[0])
                                  for r in range(taps // kw) for j in range(kw)) and \
                len({starts[r * kw] - starts[(r - 1) * kw] for r in range(1, taps // kw)}) <= 1:
            item = phases.itemsize
            s0, s1 = phases.strides[:2]
            step_j = (starts[1] - starts[0]) * item
            step_i = (starts[kw] - starts[0]) * item if taps > kw else 0
            src = as_strided(phases[:, :, 0, starts[0]:], shape=(groups, c // groups, taps // kw, kw, n, length),
                             strides=(c // groups * s1, s1, step_i, step_j, s0, item), writeable=False)
            np.copyto(_view(cols, src.shape), src)
            return
    for t in range(taps):
        np.copyto(cols[:, :, t], _tap_run(phases, tp, t).reshape(n, groups, c // groups, length).transpose(1, 2, 0, 3))


_CHUNK = 1 << 16      # elements per block of the depthwise backward's tap loops: its arrays stay in cache


def _blocks(bsz: int, channels: int, length: int) -> list[tuple[slice, slice]]:
    """(examples, channels) blocks of about _CHUNK elements of rows `length` long."""
    per_example = channels * length
    if per_example <= _CHUNK:
        step = max(1, _CHUNK // per_example)
        return [(slice(b, min(bsz, b + step)), slice(0, channels)) for b in range(0, bsz, step)]
    step = max(1, _CHUNK // length)
    return [(slice(b, b + 1), slice(c, min(channels, c + step))) for b in range(bsz) for c in range(0, channels, step)]


def _block_size(bsz: int, channels: int, length: int) -> int:
    """The largest block `_blocks` makes, in elements per example of the batch
    (so that the scratch shape stays linear in the batch)."""
    per_example = channels * length
    if per_example <= _CHUNK:
        return per_example
    return min(channels, max(1, _CHUNK // length)) * length


def _depthwise_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, dx: np.ndarray | None,
                        dw: np.ndarray | None, tp: _TapPlan, scratch: Scratch) -> None:
    """Tap loops run block by block (`_blocks`), so that the wide dy, the
    runs and the products of a block stay in cache over all taps."""
    bsz, c_in = x.shape[:2]
    c_out, _, kh, kw = w.shape
    mult, taps, length = c_out // c_in, kh * kw, tp.run_length
    dyw = _view(_wide_dy(dy, scratch["dy_wide"], tp), (bsz, c_in, mult, length))
    blocks = _blocks(bsz, c_in, length)
    if dw is not None:
        phases = scratch["phases"]
        _split_phases(x, phases, tp, 0.0)
        parts = _view(scratch["dw_parts"], (bsz, c_in, mult, taps))
        for bs, cs in blocks:
            for t in range(taps):
                k, start = tp.runs[t]
                np.einsum("bcml,bcl->bcm", dyw[bs, cs], phases[bs, cs, k, start:start + length],
                          out=parts[bs, cs, :, t])
        np.add.reduce(parts, axis=0, out=_view(dw, (c_in, mult, taps)))
    if dx is None:
        return
    dphases, products = scratch["dphases"], scratch["products"].reshape(-1)
    w3 = _view(w, (c_in, mult, taps))
    for bs, cs in blocks:
        block = dphases[bs, cs]
        block.fill(0)
        nb, nc = block.shape[:2]
        prod = _view(products[:nb * nc * length], (nb, nc, length))
        for t in range(taps):
            k, start = tp.runs[t]
            run = block[:, :, k, start:start + length]
            for m in range(mult):
                np.multiply(dyw[bs, cs, m], w3[cs, m, t, None], out=prod)
                np.add(run, prod, out=run)
    _merge_phases(dphases, dx, tp)


def _merge_phases(phases: np.ndarray, dx: np.ndarray, tp: _TapPlan) -> None:
    """The inverse of `_split_phases`: the unpadded input pixels of `phases`
    into `dx` [B, C, H, W]; pixels of a phase no tap reads are 0."""
    bsz, c, h, w = dx.shape
    (sh, sw), ((top, _), (left, _)), hq, wq = tp.stride, tp.pads, tp.hq, tp.wq
    if len(tp.phases) < sh * sw:
        dx.fill(0)
    for k, (p, q) in enumerate(tp.phases):
        grid = _view(phases[:, :, k, :hq * wq], (bsz, c, hq, wq))
        u0, u1 = _phase_span(p, sh, top, h, hq)
        v0, v1 = _phase_span(q, sw, left, w, wq)
        r0, c0 = p + u0 * sh - top, q + v0 * sw - left
        np.copyto(dx[:, :, r0:r0 + (u1 - u0) * sh:sh, c0:c0 + (v1 - v0) * sw:sw], grid[:, :, u0:u1, v0:v1])


def conv1d_backward_scratch(in_shape: Shape, w_shape: Shape, *, stride: int, padding: tuple[int, int],
                            dilation: int, groups: int, need_dx: bool = True) -> dict[str, Shape]:
    """Scratch of `conv1d_backward`: conv2d_backward's for the [B, C, 1, T] view."""
    s, p, d = _as_2d_conv_args(stride, padding, dilation)
    b, c, t = in_shape
    o, cg, k = w_shape
    return conv2d_backward_scratch((b, c, 1, t), (o, cg, 1, k), stride=s, padding=p, dilation=d, groups=groups,
                                   need_dx=need_dx)


def conv1d_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, *, stride: int, padding: tuple[int, int],
                    dilation: int, groups: int, dx: np.ndarray | None, dw: np.ndarray | None,
                    db: np.ndarray | None, scratch: Scratch | None = None) -> None:
    """Gradients of `conv1d` (x [B, C_in, T], w [C_out, C_in/groups, k],
    padding `(left, right)`), run as `conv2d_backward` on [B, C, 1, T]."""
    s, p, d = _as_2d_conv_args(stride, padding, dilation)
    conv2d_backward(x[:, :, None, :], w[:, :, None, :], dy[:, :, None, :], stride=s, padding=p, dilation=d,
                    groups=groups, dx=None if dx is None else dx[:, :, None, :],
                    dw=None if dw is None else dw[:, :, None, :], db=db, scratch=scratch)


# ------------------------------------------------------------------ transposed convolutions
# conv_transpose2d is the input gradient of the conv2d that maps the transposed convolution's
# output [B, F, OH, OW] back onto its input [B, C, H, W] with the same weight [C, F/groups, kh, kw]
# (PyTorch's ConvTranspose layout is that conv2d's): the forward runs `conv2d_backward` for dx
# only, its backward runs `conv2d` for dx and `conv2d_backward` for dw. With an output_padding
# not smaller than the stride (allowed when it is smaller than the dilation) that conv2d has
# more output rows than the input has: the input is zero-extended in scratch (`x_full`).

def _convt_geometry(in_shape: Shape, w_shape: Shape, stride, padding, output_padding, dilation, groups):
    """(output shape, the zero-extended input's shape or None) of conv_transpose2d."""
    b, c, h, w = in_shape
    _, fg, kh, kw = w_shape
    (sh, sw), (dh, dw), (oph, opw) = _pair(stride), _pair(dilation), _pair(output_padding)
    (pt, pb), (pl, pr) = _pads2d(padding)
    oh = (h - 1) * sh - pt - pb + dh * (kh - 1) + oph + 1
    ow = (w - 1) * sw - pl - pr + dw * (kw - 1) + opw + 1
    ch = _window_out(oh, kh, sh, dh, pt, pb)
    cw = _window_out(ow, kw, sw, dw, pl, pr)
    out = (b, fg * groups, oh, ow)
    return out, (None if (ch, cw) == (h, w) else (b, c, ch, cw))


def conv_transpose2d_scratch(in_shape: Shape, w_shape: Shape, *, stride, padding, output_padding, dilation,
                             groups: int) -> dict[str, Shape]:
    """Scratch of `conv_transpose2d`: conv2d_backward's (dx only) for its output, plus `x_full`
    when the input must be zero-extended."""
    out, full = _convt_geometry(tuple(in_shape), tuple(w_shape), stride, padding, output_padding, dilation, groups)
    shapes = conv2d_backward_scratch(out, w_shape, stride=_pair(stride), padding=_pads2d(padding),
                                     dilation=_pair(dilation), groups=groups, need_dx=True)
    shapes = {k: v for k, v in shapes.items() if k not in ("dw_part",)}
    if full is not None:
        shapes["x_full"] = full
    return shapes


def _extended(x: np.ndarray, full: Shape | None, scratch: Scratch) -> np.ndarray:
    if full is None:
        return x
    buf = _view(scratch["x_full"], full)
    buf.fill(0)
    np.copyto(buf[:, :, :x.shape[2], :x.shape[3]], x)
    return buf


def conv_transpose2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *, stride, padding,
                     output_padding, dilation, groups: int, scratch: Scratch | None = None) -> None:
    """PyTorch's conv_transpose2d of `x` [B, C, H, W] with `w` [C, F/groups, kh, kw], padding
    `((top, bottom), (left, right))` and `output_padding` (sh, sw), plus bias `b` [F] (or
    None), into `out` [B, F, OH, OW]."""
    geo = (_pair(stride), _pads2d(padding), _pair(output_padding), _pair(dilation), groups)
    shape, full = _convt_geometry(x.shape, w.shape, *geo)
    assert out.shape == shape, (out.shape, shape)
    scratch = _provide_as(scratch, lambda: conv_transpose2d_scratch(x.shape, w.shape, stride=geo[0],
                                                                     padding=geo[1], output_padding=geo[2],
                                                                     dilation=geo[3], groups=groups), x.dtype)
    src = _extended(x, full, scratch)
    # the conv2d's input is only sized here (dw is not wanted): `out` stands for it
    conv2d_backward(out, w, src, stride=geo[0], padding=geo[1], dilation=geo[3], groups=groups, dx=out, dw=None,
                    db=None, scratch=scratch)
    if b is not None:
        np.add(out, b[:, None, None], out=out)


def conv_transpose2d_backward_scratch(in_shape: Shape, w_shape: Shape, *, stride, padding, output_padding,
                                      dilation, groups: int, need_dx: bool = True) -> dict[str, Shape]:
    """Scratch of `conv_transpose2d_backward`: conv2d's (for dx, names prefixed `f.`),
    conv2d_backward's (for dw, prefixed `b.`) and `x_full` when the input is zero-extended
    (then dx also goes through `dx_full`)."""
    out, full = _convt_geometry(tuple(in_shape), tuple(w_shape), stride, padding, output_padding, dilation, groups)
    conv_in = full or tuple(in_shape)
    shapes: dict[str, Shape] = {}
    if need_dx:
        shapes |= {f"f.{k}": v for k, v in conv2d_scratch(out, w_shape, stride=_pair(stride),
                                                          padding=_pads2d(padding), dilation=_pair(dilation),
                                                          groups=groups).items()}
    shapes |= {f"b.{k}": v for k, v in conv2d_backward_scratch(out, w_shape, stride=_pair(stride),
                                                               padding=_pads2d(padding), dilation=_pair(dilation),
                                                               groups=groups, need_dx=False).items()}
    if full is not None:
        shapes["x_full"] = conv_in
        if need_dx:
            shapes["dx_full"] = conv_in
    return shapes


def conv_transpose2d_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, *, stride, padding, output_padding,
                              dilation, groups: int, dx: np.ndarray | None, dw: np.ndarray | None,
                              db: np.ndarray | None, scratch: Scratch | None = None) -> None:
    """Gradients of `conv_transpose2d` from its input `x`, weight `w` and output gradient `dy`
    [B, F, OH, OW]: overwrite `dx` (like x), `dw` (like w) and `db` [F] (None: not wanted);
    parameter gradients summed over the batch."""
    geo = (_pair(stride), _pads2d(padding), _pair(output_padding), _pair(dilation), groups)
    _, full = _convt_geometry(x.shape, w.shape, *geo)
    scratch = _provide_as(scratch, lambda: conv_transpose2d_backward_scratch(
        x.shape, w.shape, stride=geo[0], padding=geo[1], output_padding=geo[2], dilation=geo[3], groups=groups,
        need_dx=dx is not None), x.dtype)
    if db is not None:
        np.add.reduce(dy.reshape(dy.shape[0], dy.shape[1], -1), axis=(0, 2), out=db)
    if dx is not None:
        fs = {k[2:]: v for k, v in scratch.items() if k.startswith("f.")}
        target = dx if full is None else _view(scratch["dx_full"], full)
        conv2d(dy, w, None, target, stride=geo[0], padding=geo[1], dilation=geo[3], groups=groups, scratch=fs)
        if full is not None:
            np.copyto(dx, target[:, :, :dx.shape[2], :dx.shape[3]])
    if dw is not None:
        bs = {k[2:]: v for k, v in scratch.items() if k.startswith("b.")}
        conv2d_backward(dy, w, _extended(x, full, scratch), stride=geo[0], padding=geo[1], dilation=geo[3],
                        groups=groups, dx=None, dw=dw, db=None, scratch=bs)


def _convt_1d(stride: int, padding, output_padding: int, dilation: int) -> dict:
    left, right = padding
    return dict(stride=(1, int(stride)), padding=((0, 0), (int(left), int(right))),
                output_padding=(0, int(output_padding)), dilation=(1, int(dilation)))


def conv_transpose1d_scratch(in_shape: Shape, w_shape: Shape, *, stride: int, padding, output_padding: int,
                             dilation: int, groups: int) -> dict[str, Shape]:
    """Scratch of `conv_transpose1d`: conv_transpose2d's for the [B, C, 1, T] view."""
    b, c, t = in_shape
    return conv_transpose2d_scratch((b, c, 1, t), (*w_shape[:2], 1, w_shape[2]), groups=groups,
                                    **_convt_1d(stride, padding, output_padding, dilation))


def conv_transpose1d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *, stride: int, padding,
                     output_padding: int, dilation: int, groups: int, scratch: Scratch | None = None) -> None:
    """PyTorch's conv_transpose1d of `x` [B, C, T] with `w` [C, F/groups, k], padding `(p, p)`,
    run as conv_transpose2d on [B, C, 1, T]."""
    conv_transpose2d(x[:, :, None, :], w[:, :, None, :], b, out[:, :, None, :], groups=groups, scratch=scratch,
                     **_convt_1d(stride, padding, output_padding, dilation))


def conv_transpose1d_backward_scratch(in_shape: Shape, w_shape: Shape, *, stride: int, padding,
                                      output_padding: int, dilation: int, groups: int,
                                      need_dx: bool = True) -> dict[str, Shape]:
    """Scratch of `conv_transpose1d_backward`: the 2-d one's for the [B, C, 1, T] view."""
    b, c, t = in_shape
    return conv_transpose2d_backward_scratch((b, c, 1, t), (*w_shape[:2], 1, w_shape[2]), groups=groups,
                                             need_dx=need_dx, **_convt_1d(stride, padding, output_padding, dilation))


def conv_transpose1d_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, *, stride: int, padding,
                              output_padding: int, dilation: int, groups: int, dx: np.ndarray | None,
                              dw: np.ndarray | None, db: np.ndarray | None, scratch: Scratch | None = None) -> None:
    """Gradients of `conv_transpose1d`, as conv_transpose2d_backward on [B, C, 1, T]."""
    conv_transpose2d_backward(x[:, :, None, :], w[:, :, None, :], dy[:, :, None, :], groups=groups,
                              dx=None if dx is None else dx[:, :, None, :],
                              dw=None if dw is None else dw[:, :, None, :], db=db, scratch=scratch,
                              **_convt_1d(stride, padding, output_padding, dilation))
