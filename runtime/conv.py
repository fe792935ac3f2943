"""Convolution kernels: conv2d and conv1d (which runs as conv2d on
[B, C, 1, T]), and the transposed conv_transpose2d/1d (end of file), with
their scratch functions (the calling conventions are in `kernels.py`).

In:  x [B, C_in, H, W] (or [B, C_in, T]), w [C_out, C_in/groups, *kernel],
     bias [C_out] or None, explicit padding, a fused activation, scratch.
Out: PyTorch's convolution, then the activation, in `out` [B, C_out, OH, OW].

Methods. Convolutions take one of three paths. A 1x1 stride-1 unpadded
convolution is one matmul on the input itself. A depthwise convolution
(groups == C_in > 1) reads each kernel tap as one contiguous run per channel
(see `_windows.py`, "windows as contiguous runs"; pooling reads its windows
the same way): a block of channels copies every tap's run into columns and
runs one batched matmul (`_depthwise_columns`), or, when the budget leaves
room for one channel only, does a multiply and an add per tap. Every other
convolution pads into scratch, copies its im2col columns into scratch
through a strided view, and runs one BLAS matmul per tile (per group);
a plan runs a narrow one-channel convolution whose columns it would have to
tile as one matmul on weights it packed once (`conv2d_pack`, "packed rows"
below).
Python loops run over taps, stride phases, groups or inputs, never over
pixels or channels. `conv2d_backward` and `conv1d_backward` give dx, dw and
db from dy ("backward" below).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._common import (Act, Pads2d, Scratch, Shape, _ones, _padded_shape, _pads2d, _pair, _provide, _provide_as,
                      _tap_span, _view, _window_out)
from ._windows import (_TapPlan, _narrow, _phase_span, _phase_writer, _split_phases, _tap_grids, _tap_plan,
                       _tap_run, _write_phases)
from .elementwise import activation_scratch, apply_activation


class _ConvPath(Enum):
    DEPTHWISE = "depthwise"     # groups == C_in > 1: a multiply-add per kernel tap, a block of channels at a time
    POINTWISE = "pointwise"     # 1x1, stride 1, unpadded: a matmul on the input itself
    IM2COL = "im2col"           # the rest: columns of a tile of output pixels in scratch, one matmul per tile


@dataclass(frozen=True, slots=True)
class _ConvPlan:
    path: _ConvPath
    out_shape: Shape                       # [B, C_out, OH, OW]
    taps: _TapPlan | None                  # the depthwise path's


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
        return _ConvPlan(_ConvPath.DEPTHWISE, out_shape, _tap_plan((h, w), (kh, kw), stride, dilation, pads))
    if kh == kw == 1 and stride == (1, 1) and _padded_shape(in_shape, pads) is None:
        return _ConvPlan(_ConvPath.POINTWISE, out_shape, None)
    return _ConvPlan(_ConvPath.IM2COL, out_shape, None)


_COLS = 1 << 16     # elements of im2col columns per chunk of examples: the columns stay in cache, scratch bounded


def _chunk(bsz: int, per_example: int) -> int:
    """Examples per chunk of a batch of `bsz` whose columns take `per_example`
    elements each: as many as fit `_COLS`, at least one (never more than the
    batch, so a smaller batch's chunk is never larger)."""
    return max(1, min(bsz, _COLS // max(1, per_example)))


# ------------------------------------------------------------------ forward tiles
# The forward's scratch is bounded by `budget` (float32 elements per example;
# the compiler gives each step a share of the room in its memory plan), not by
# the layer: the im2col path builds the columns of a tile of output rows (a
# tile of columns of one row when one row is too large, as in 1-d
# convolutions over long signals) and multiplies them straight into that tile
# of `out`; the depthwise path works on a block of channels (its tiles are
# (1, 0, block) for tap columns, (0, 0, block) for a multiply-add per tap;
# blocks of one size, so that one set of views serves them all); a fused
# activation with temporaries runs piece by piece. At batch B a tile covers
# the same pixels of every example (B times the scratch, as the plan scales).
# The smallest tile (one row, at least `_MIN_COLS` columns; one channel) may
# exceed a tiny budget. Elementwise work (bias, activation) runs on whole
# contiguous arrays, not on strided tiles: NumPy buffers a ufunc over strided
# operands (allocating up to 8192 elements per operand), copies do not. One
# exception: a depthwise block's bias is added as its wide result is narrowed
# into `out` (`_finish`), one strided pass instead of a whole add and a copy;
# its buffer is NumPy's fixed one (`np.getbufsize()`), whatever the layer.
# A tile's loop body is its copies and its matmul: where the tiles fall, the
# band strips to zero and the views' shapes are worked out once per geometry
# (`_im2col_schedule`); views drop axes of length 1 (NumPy's per-call cost
# grows with the axes) and matmul operands have equal rank (2-d at batch 1,
# one group), which spares NumPy's broadcasting loop. Per-call code uses no
# generator expressions: each leaves a reference cycle that only the garbage
# collector frees, which the plan's allocation check counts.

TILE = 1 << 16      # floats of scratch per example when no budget is given
_DW_BLOCK = 1 << 16  # floats of a depthwise block's accumulator at most (its 9 taps run over it in L2)
_DW_COLS = 1 << 18   # floats of a depthwise block's tap columns and result at most (they stay in L2)
_MIN_COLS = 16      # the narrowest tile of output columns (narrower matmuls are mostly call overhead)
_SMALL_BAND = 1 << 13  # floats of a padded band that one fill zeroes faster than its strips one by one
_MIN_TILE = 1 << 11  # floats of scratch below which a layer runs whole (its tiles would save a few KB)


def _act_floats(act: Act) -> int:
    """Floats of the fused activation's temporaries per element of a piece it runs on."""
    temps = activation_scratch(act, (1, 1 << 20), budget=1 << 62)
    return -(-sum(math.prod(s) for s in temps.values()) // (1 << 20))


def _act_tile(act: Act, bsz: int, elements: int) -> dict[str, Shape]:
    """The fused activation's scratch for pieces of `elements` per example."""
    return activation_scratch(act, (bsz, elements), budget=_act_floats(act) * elements)


@dataclass(frozen=True, slots=True)
class _Tiles:
    rows: int                              # im2col: output rows per tile
    cols: int                              # im2col: output columns per tile (OW unless rows == 1)
    channels: int                          # depthwise: input channels per block
    padded: bool                           # im2col: the tile reads a zero-padded band of the input
    scratch: tuple[tuple[str, Shape], ...]
    examples: int = 1                      # examples a tile covers at once (the batch's first axis of scratch)


def _largest(fits, lo: int, hi: int) -> int:
    """The largest n in [lo, hi] with fits(n) (cost grows with n), or lo."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


@functools.lru_cache(maxsize=4096)
def _choose(in_shape: Shape, w_shape: Shape, stride: tuple[int, int], pads: Pads2d, dilation: tuple[int, int],
            groups: int, act: Act, budget: int | None) -> tuple[int, int, int]:
    """The largest tiles whose scratch fits `budget`: (output rows, output
    columns, input channels) per tile; the path reads the entries it uses (a
    1x1 convolution's first entry is the elements of its activation's pieces;
    a depthwise one's is 1 for tap columns, 0 for a multiply-add per tap:
    columns take up to `_DW_COLS` floats a block, unless the budget leaves
    fewer than two channels a block, whose calls would cost more than the
    taps'; two do not, at any stride: MobileNetV2's 96@112 stride-2 layer
    takes 2.1 ms in blocks of two, 2.2 ms by taps in blocks of six)."""
    plan = _conv_plan(in_shape, w_shape, stride, pads, dilation, groups)
    b, c_in, h, w = in_shape
    c_out, cg_in, kh, kw = w_shape
    oh, ow = plan.out_shape[2:]
    limit = TILE if budget is None else max(1, int(budget))
    per_act = _act_floats(act)
    if plan.path is _ConvPath.POINTWISE:
        return (limit // per_act if per_act else 0), 0, 0
    if plan.path is _ConvPath.DEPTHWISE:
        tp = plan.taps
        mult, taps, run = c_out // c_in, kh * kw, tp.run_length
        per = len(tp.phases) * tp.plane + (1 + (taps > 1)) * mult * run + per_act * mult * oh * ow
        cached = _DW_BLOCK // (mult * run)                   # a block's tap loop stays in cache
        n = max(1, min(c_in, limit // per, cached))
        if taps > 1:                                         # tap columns: see `_depthwise_columns`
            per_cols = len(tp.phases) * tp.plane + (taps + mult) * run + per_act * mult * oh * ow
            m = min(c_in, limit // per_cols, max(1, _DW_COLS // ((taps + mult) * run)))
            if m >= min(c_in, 2):                            # else blocks so small that their calls cost more
                return 1, 0, -(-c_in // -(-c_in // m))       # as many blocks, all of one size (one set of views)
        return 0, 0, -(-c_in // -(-c_in // n))
    (sh, sw), (dh, dw) = stride, dilation
    padded = _padded_shape(in_shape, pads) is not None

    def cost(rows: int, cols: int) -> int:
        band = c_in * ((rows - 1) * sh + (kh - 1) * dh + 1) * ((cols - 1) * sw + (kw - 1) * dw + 1) if padded else 0
        return band + (c_in * kh * kw + per_act * c_out) * rows * cols

    if cost(oh, ow) <= _MIN_TILE:                 # a small layer is never tiled
        return oh, ow, 0
    if cost(1, ow) <= limit:
        return _largest(lambda r: cost(r, ow) <= limit, 1, oh), ow, 0
    return 1, _largest(lambda c: cost(1, c) <= limit, min(ow, _MIN_COLS), ow), 0


def conv2d_tiles(in_shape: Shape, w_shape: Shape, *, stride: tuple[int, int], padding: Pads2d,
                 dilation: tuple[int, int], groups: int, act: Act = None,
                 budget: int | None = None) -> tuple[int, int, int]:
    """The tiles of `conv2d` whose scratch fits `budget` floats per example
    (default `TILE`): (output rows, output columns, input channels). A plan
    chooses them at the bounds of its named dimensions and passes them as
    `tiles=`, so that shorter inputs take the same tiles or smaller ones."""
    return _choose(tuple(in_shape), tuple(w_shape), _pair(stride), _pads2d(padding), _pair(dilation), groups, act,
                   None if budget is None else int(budget))


@functools.lru_cache(maxsize=4096)
def _tiles(in_shape: Shape, w_shape: Shape, stride: tuple[int, int], pads: Pads2d, dilation: tuple[int, int],
           groups: int, act: Act, spec: tuple[int, int, int]) -> _Tiles:
    """The tiles `spec` clamped to this input, and their scratch: for as many
    examples at once as fit `TILE` floats (at least one), so that a large
    batch runs in chunks of examples and its scratch stops growing."""
    plan = _conv_plan(in_shape, w_shape, stride, pads, dilation, groups)
    bsz, c_in, h, w = in_shape
    c_out, cg_in, kh, kw = w_shape
    oh, ow = plan.out_shape[2:]
    if plan.path is _ConvPath.POINTWISE:
        piece = max(1, min(c_out * oh * ow, spec[0]))
        b = max(1, min(bsz, TILE // (piece * _act_floats(act) or 1)))
        return _Tiles(0, 0, 0, False, tuple(_act_tile(act, b, piece).items()) if _act_floats(act) else ())
    if plan.path is _ConvPath.DEPTHWISE:
        tp = plan.taps
        n, mult, taps = max(1, min(c_in, spec[2])), c_out // c_in, kh * kw
        columns = spec[0] == 1 and taps > 1
        per = (len(tp.phases) * tp.plane + ((taps + mult) if columns else (1 + (taps > 1)) * mult) * tp.run_length
               + _act_floats(act) * mult * oh * ow) * n
        b = max(1, min(bsz, TILE // per))
        scratch = [("phases", tp.phases_shape(b, n)), ("wide", tp.wide_shape(b, n * mult))]
        if columns:                        # the taps' columns, whose matmul with the weights is the products
            scratch.append(("products", (b, n, taps * tp.run_length)))
        elif taps > 1:
            scratch.append(("products", tp.wide_shape(b, n * mult)))
        scratch += _act_tile(act, b, n * mult * oh * ow).items()
        return _Tiles(int(columns), 0, n, False, tuple(scratch), b)
    (sh, sw), (dh, dw) = stride, dilation
    padded = _padded_shape(in_shape, pads) is not None
    rows, cols = max(1, min(oh, spec[0])), max(1, min(ow, spec[1]))
    if cols < ow:
        rows = 1
    br, bc = (rows - 1) * sh + (kh - 1) * dh + 1, (cols - 1) * sw + (kw - 1) * dw + 1
    per = (c_in * br * bc if padded else 0) + (cg_in * groups * kh * kw + _act_floats(act) * c_out) * rows * cols
    b = max(1, min(bsz, TILE // per))
    scratch = []
    if padded:
        scratch.append(("padded", (b, c_in, br, bc)))
    scratch.append(("cols", (b, groups, cg_in * kh * kw, rows * cols)))
    scratch += _act_tile(act, b, c_out * rows * cols).items()
    return _Tiles(rows, cols, 0, padded, tuple(scratch), b)


def _geometry(in_shape, w_shape, stride, padding, dilation, groups, act, budget, tiles) -> _Tiles:
    return _call(tuple(in_shape), tuple(w_shape), stride, padding, dilation, groups, act, budget, tiles)[1]


def _call_uncached(in_shape, w_shape, stride, padding, dilation, groups, act, budget, tiles):
    """(the path, the tiles, stride, padding, dilation normalised, the im2col
    schedule or None) of a call's arguments."""
    stride, pads, dilation = _pair(stride), _pads2d(padding), _pair(dilation)
    if tiles is None:
        tiles = _choose(in_shape, w_shape, stride, pads, dilation, groups, act, None if budget is None else int(budget))
    plan = _conv_plan(in_shape, w_shape, stride, pads, dilation, groups)
    tl = _tiles(in_shape, w_shape, stride, pads, dilation, groups, act, tuple(tiles))
    schedule = None
    if plan.path is _ConvPath.IM2COL:
        schedule = _im2col_schedule(tuple(in_shape), tuple(w_shape), plan.out_shape[2:], stride, pads, dilation,
                                    groups, tl)
    return plan, tl, stride, pads, dilation, schedule


_call_cached = functools.lru_cache(maxsize=4096)(_call_uncached)


def _call(in_shape, w_shape, stride, padding, dilation, groups, act, budget, tiles):
    """`_call_uncached`, cached for hashable arguments (a plan's tuples): one lookup a call."""
    try:
        return _call_cached(in_shape, w_shape, stride, padding, dilation, groups, act, budget, tiles)
    except TypeError:                               # lists among the arguments
        return _call_uncached(in_shape, w_shape, stride, padding, dilation, groups, act, budget, tiles)


def conv2d_scratch(in_shape: Shape, w_shape: Shape, *, stride: tuple[int, int], padding: Pads2d,
                   dilation: tuple[int, int], groups: int, act: Act = None, budget: int | None = None,
                   tiles: tuple[int, int, int] | None = None, packed: bool = False) -> dict[str, Shape]:
    """Scratch of `conv2d`, by path, for `tiles` (`conv2d_tiles`; by default
    the largest within `budget` floats per example, default `TILE`): im2col
    needs `cols` (and `padded`, its input band, when padded); depthwise needs
    `phases`, `wide` (and `products` beyond one tap: the taps' products, or
    with tap columns the columns whose matmul gives them); a 1x1 stride-1 unpadded
    convolution needs none; packed rows (`packed`) need `rows`. Plus the
    fused activation's."""
    if packed:
        return _packed_scratch(tuple(in_shape), tuple(w_shape), _pads2d(padding), act)
    return dict(_geometry(in_shape, w_shape, stride, padding, dilation, groups, act, budget, tiles).scratch)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *,
           stride: tuple[int, int], padding: Pads2d, dilation: tuple[int, int], groups: int,
           act: Act = None, budget: int | None = None, tiles: tuple[int, int, int] | None = None,
           pack: np.ndarray | None = None, scratch: Scratch | None = None) -> None:
    """PyTorch's conv2d of `x` [B, C_in, H, W] with `w` [C_out, C_in/groups, kh, kw]
    and bias `b` [C_out] (or None), then `act`, into `out` [B, C_out, OH, OW];
    scratch as `conv2d_scratch` names it for the same `budget` and `tiles`
    (and `packed=True` when `pack`, `w` packed by `conv2d_pack`, is given)."""
    if pack is not None:
        stride, pads = _pair(stride), _pads2d(padding)
        scratch = _provide(scratch, lambda: _packed_scratch(tuple(x.shape), tuple(w.shape), pads, act))
        _packed_rows(x, w, pack, out, stride, pads, _pair(dilation), groups, scratch)
        if b is not None:
            np.add(out, b[:, None, None], out=out)
        apply_activation(act, out, scratch)
        return
    plan, tl, stride, pads, dilation, schedule = _call(x.shape, w.shape, stride, padding, dilation, groups, act,
                                                       budget, tiles)
    if scratch is None:
        scratch = _provide(scratch, lambda: dict(tl.scratch))
    bsz, nb = x.shape[0], tl.examples
    if plan.path is _ConvPath.DEPTHWISE:
        kernel = _depthwise_columns if tl.rows else _depthwise
        for b0 in range(0, bsz, nb):
            kernel(x[b0:b0 + nb], w, b, out[b0:b0 + nb], plan.taps, tl.channels, act, scratch)
        return
    if plan.path is _ConvPath.POINTWISE:
        _pointwise(x, w, out, groups)
    else:
        _im2col(x, w, out, stride, dilation, groups, tl, schedule, scratch)
    if b is not None:
        np.add(out, b[:, None, None], out=out)
    apply_activation(act, out, scratch)


def _pointwise(x: np.ndarray, w: np.ndarray, out: np.ndarray, groups: int) -> None:
    bsz, c_in, h, wd = x.shape
    c_out = w.shape[0]
    w3 = _view(w, (groups, c_out // groups, c_in // groups))
    np.matmul(w3, _view(x, (bsz, groups, c_in // groups, h * wd)),
              out=_view(out, (bsz, groups, c_out // groups, h * wd)))


def _take(buf: np.ndarray, shape: Shape) -> np.ndarray:
    """The first prod(shape) elements of the contiguous scratch `buf`, shaped `shape`."""
    return buf.reshape(-1)[:math.prod(shape)].reshape(shape)


def _windows_view(src: np.ndarray, groups: int, kernel: tuple[int, int], nr: int, nc: int,
                  stride: tuple[int, int], dilation: tuple[int, int], squeeze: int = 0) -> np.ndarray:
    """The im2col windows of `src` [B, C, H, W] for `nr` x `nc` output pixels
    as a read-only strided view [B, G, C/G, kh, kw, nr, nc], without those of
    its first `squeeze` axes that are 1 long (NumPy copies fewer axes faster)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    s0, s1, s2, s3 = src.strides
    cg = src.shape[1] // groups
    shape = (src.shape[0], groups, cg, kh, kw, nr, nc)
    strides = (s0, cg * s1, s1, dh * s2, dw * s3, sh * s2, sw * s3)
    if squeeze:
        keep = [i for i, n in enumerate(shape) if n != 1 or i >= squeeze]
        shape, strides = tuple([shape[i] for i in keep]), tuple([strides[i] for i in keep])
    if src.flags.c_contiguous:                  # a view on its buffer: much cheaper than as_strided
        return np.ndarray(shape, src.dtype, src, 0, strides)
    return as_strided(src, shape=shape, strides=strides, writeable=False)


@functools.lru_cache(maxsize=1024)
def _im2col_schedule(in_shape: Shape, w_shape: Shape, out_hw: tuple[int, int], stride: tuple[int, int],
                     pads: Pads2d, dilation: tuple[int, int], groups: int, tiles: _Tiles) -> tuple:
    """The work of `_im2col` for one geometry, worked out once:
    - per chunk of examples (b0, examples, steps), per tile a step: (its
      scratch views' key, index tuples of the band's strips to zero, (band,
      input) indices of the band copy or None, index of the in-place windows
      or None, index of the output tile, whether that index is on the output
      viewed [.., cog, OH * OW] (else [.., cog, OH, OW]));
    - the in-place windows' (rows, columns, first input row, first input
      column), or None when no tile reads in place;
    - per key (examples, tile rows, tile columns) the scratch views' shapes
      (elements): the matmul's columns, the columns as windows (axes of
      length 1 dropped, like the windows'), the band, the band's windows
      and their strides."""
    total, c_in, h, wd = in_shape
    _, cg_in, kh, kw = w_shape
    oh, ow = out_hw
    (sh, sw), (dh, dw), ((top, _), (left, _)) = stride, dilation, pads
    k = cg_in * kh * kw
    # windows read in place: every output pixel's (unpadded), or those whose
    # window lies inside the input, from the first such row and column
    r_in, q_in = -(-top // sh), -(-left // sw)
    r_out = max(r_in, min(oh, (h - (kh - 1) * dh - 1 + top) // sh + 1))
    q_out = max(q_in, min(ow, (wd - (kw - 1) * dw - 1 + left) // sw + 1))

    def at(a: int, n: int):                       # a tile axis: an index when one long (the view drops it)
        return a if n == 1 else slice(a, a + n)

    chunks, views, framed, inside_any = [], {}, None, False   # framed: (band, columns) whose side strips are 0
    for b0 in range(0, total, tiles.examples):
        bsz, steps = min(total, b0 + tiles.examples) - b0, []
        lead = (bsz,) * (bsz > 1) + (groups,) * (groups > 1)
        for r0 in range(0, oh, tiles.rows):
            nr = min(oh, r0 + tiles.rows) - r0
            for c0 in range(0, ow, tiles.cols):
                nc = min(ow, c0 + tiles.cols) - c0
                br, bc = (nr - 1) * sh + (kh - 1) * dh + 1, (nc - 1) * sw + (kw - 1) * dw + 1
                if (bsz, nr, nc) not in views:
                    full = (bsz, groups, cg_in, kh, kw, nr, nc)
                    band = (bsz, c_in, br, bc)
                    s0, s1, s2 = c_in * br * bc, br * bc, bc
                    strides = (s0, cg_in * s1, s1, dh * s2, dw, sh * s2, sw)
                    keep = [i for i, n in enumerate(full) if n != 1]
                    views[(bsz, nr, nc)] = (lead + (k, nr * nc), tuple(full[i] for i in keep), band,
                                            tuple(strides[i] for i in keep))
                fills, copy, window = [], None, None
                if not tiles.padded:
                    window = (Ellipsis, at(r0, nr), at(c0, nc))
                elif r_in <= r0 and r0 + nr <= r_out and q_in <= c0 and c0 + nc <= q_out:   # inside: no band
                    window, inside_any = (Ellipsis, at(r0 - r_in, nr), at(c0 - q_in, nc)), True
                else:
                    y0, x0 = r0 * sh - top, c0 * sw - left
                    u0, u1 = min(br, max(0, -y0)), max(0, min(br, h - y0))
                    v0, v1 = min(bc, max(0, -x0)), max(0, min(bc, wd - x0))
                    u1, v1 = max(u0, u1), max(v0, v1)
                    if u0:
                        fills.append((Ellipsis, slice(0, u0), slice(None)))
                    if u1 < br:
                        fills.append((Ellipsis, slice(u1, None), slice(None)))
                    if framed != (br, bc, v0, v1):      # else the side strips are still zero
                        if v0:
                            fills.append((Ellipsis, slice(u0, u1), slice(0, v0)))
                        if v1 < bc:
                            fills.append((Ellipsis, slice(u0, u1), slice(v1, None)))
                        framed = (br, bc, v0, v1)
                    if len(fills) > 1 and bsz * c_in * br * bc <= _SMALL_BAND:
                        fills = [(Ellipsis,)]           # one call zeroes a small band faster than its strips
                    copy = ((Ellipsis, slice(u0, u1), slice(v0, v1)),
                            (Ellipsis, slice(y0 + u0, y0 + u1), slice(x0 + v0, x0 + v1)))
                flat = nc == ow
                out = (Ellipsis, slice(r0 * ow, (r0 + nr) * ow)) if flat else (Ellipsis, r0, slice(c0, c0 + nc))
                steps.append(((bsz, nr, nc), tuple(fills), copy, window, out, flat))
        chunks.append((b0, bsz, tuple(steps)))
    if not tiles.padded:
        origin = (oh, ow, 0, 0)
    else:
        origin = (r_out - r_in, q_out - q_in, r_in * sh - top, q_in * sw - left) if inside_any else None
    return tuple(chunks), origin, tuple(views.items())


def _im2col(x: np.ndarray, w: np.ndarray, out: np.ndarray, stride: tuple[int, int], dilation: tuple[int, int],
            groups: int, tiles: _Tiles, schedule: tuple, scratch: Scratch) -> None:
    """Group by group of `tiles.examples` examples, tile by tile of output
    pixels (the group's examples at once): the tile's input band
    (zero-padded in scratch when the convolution pads), its columns copied
    from the band (or in place from the input, when the tile's windows lie
    inside it) through a strided view, one matmul per group straight into
    the tile of `out`. The tiles' slices and the views' shapes are worked
    out once per geometry (`_im2col_schedule`), the views once a call, so
    that a tile costs its copies and its matmul."""
    c_out, cg_in, kh, kw = w.shape
    oh, ow = out.shape[2:]
    cog, k = c_out // groups, cg_in * kh * kw
    chunks, origin, recipes = schedule
    cols_buf, band_buf = scratch["cols"], scratch.get("padded")
    views = {}                                       # (examples, tile rows, tile columns) -> scratch views
    for key, (cols_shape, win_shape, band_shape, win_strides) in recipes:
        band = windows = None
        if tiles.padded:
            dt = band_buf.dtype
            band = np.ndarray(band_shape, dt, band_buf)
            windows = np.ndarray(win_shape, dt, band_buf, 0, tuple([s * dt.itemsize for s in win_strides]))
        views[key] = (np.ndarray(cols_shape, cols_buf.dtype, cols_buf), np.ndarray(win_shape, cols_buf.dtype, cols_buf),
                      band, windows)
    copyto, matmul = np.copyto, np.matmul
    for b0, bsz, steps in chunks:
        xb, ob = (x, out) if bsz == x.shape[0] else (x[b0:b0 + bsz], out[b0:b0 + bsz])
        lead = (bsz,) * (bsz > 1) + (groups,) * (groups > 1)
        w_op = _view(w, (1,) * (bsz > 1) + (groups,) * (groups > 1) + (cog, k))
        grid = flat = None                           # the output as [.., cog, OH, OW] and [.., cog, OH * OW]
        whole = None
        if origin is not None:
            rows, cols, y0, x0 = origin
            whole = _windows_view(xb[:, :, y0:, x0:], groups, (kh, kw), rows, cols, stride, dilation, squeeze=5)
        for key, fills, copy, window, o, on_flat in steps:
            cols, cols_w, band, windows = views[key]
            if copy is not None:
                for f in fills:
                    band[f].fill(0.0)
                copyto(band[copy[0]], xb[copy[1]])
                copyto(cols_w, windows)
            else:
                copyto(cols_w, whole[window])
            if on_flat:
                if flat is None:
                    flat = _view(ob, lead + (cog, oh * ow))
                matmul(w_op, cols, out=flat[o])
            else:
                if grid is None:
                    grid = _view(ob, lead + (cog, oh, ow))
                matmul(w_op, cols, out=grid[o])


# ------------------------------------------------------------------ packed rows
# A convolution of one input channel (a first layer) reads kh * kw floats of
# columns per output pixel against one float of input, so a plan within its
# arena bound tiles its columns finely, and the tiles cost more in NumPy calls
# than in arithmetic. A plan runs it instead as one batched matmul on its
# weights packed once (`conv2d_pack`) into a banded matrix per filter,
# T [C_out, kh * W, OW] with T[c, i * W + q * sw - left + j * dw, q] =
# w[c, 0, i, j]: output row r of filter c is input rows r * sh - top ..
# r * sh - top + kh - 1, read in place as one run of kh * W floats, times
# T[c]. The width padding is T's missing entries; the height padding is zero
# rows of scratch (`rows`, the input copied once into [B, top + H + bottom,
# W]; with a fused activation that takes temporaries, the start of its
# `act_tmp`, whose pieces are then at least that large: the rows are dead
# once the matmul has read them). Each output reads W / kw times the products
# of im2col, so it is taken for narrow inputs and small packs only
# (`conv2d_packs`).

_PACK = 1 << 16         # floats of a pack at most
_PACK_WIDTH = 8         # input columns per kernel column at most (the products read per useful one)


def conv2d_packs(in_shape: Shape, w_shape: Shape, *, stride: tuple[int, int], padding: Pads2d,
                 dilation: tuple[int, int], groups: int, tiles: tuple[int, int, int] | None = None) -> bool:
    """Whether a plan runs this convolution on packed rows: one input
    channel, no groups, no dilation along the height (or one kernel row), a
    narrow input (W at most `_PACK_WIDTH` kernel widths), a pack within
    `_PACK` floats, and im2col `tiles` that split the output (an untiled
    im2col is as fast)."""
    b, c_in, h, wd = in_shape
    c_out, cg_in, kh, kw = w_shape
    (sh, sw), (dh, dw), pads = _pair(stride), _pair(dilation), _pads2d(padding)
    if c_in != 1 or groups != 1 or cg_in != 1 or (dh != 1 and kh > 1) or wd > _PACK_WIDTH * kw:
        return False
    oh = _window_out(h, kh, sh, dh, *pads[0])
    ow = _window_out(wd, kw, sw, dw, *pads[1])
    if min(oh, ow) < 1 or c_out * kh * wd * ow > _PACK:
        return False
    return tiles is None or tiles[0] < oh or tiles[1] < ow


def conv2d_pack(w: np.ndarray, in_shape: Shape, *, stride: tuple[int, int], padding: Pads2d,
                dilation: tuple[int, int]) -> np.ndarray:
    """`w` [C_out, 1, kh, kw] as the banded matrices of packed rows for inputs
    of `in_shape` (its width decides them): read-only [C_out, kh * W, OW]."""
    c_out, _, kh, kw = w.shape
    wd = in_shape[3]
    sw, dw = _pair(stride)[1], _pair(dilation)[1]
    left, right = _pads2d(padding)[1]
    ow = _window_out(wd, kw, sw, dw, left, right)
    t = np.zeros((c_out, kh, wd, ow), w.dtype)
    q = np.arange(ow)
    for j in range(kw):
        col = q * sw - left + j * dw
        inside = (col >= 0) & (col < wd)
        t[:, :, col[inside], q[inside]] = w[:, 0, :, j][:, :, None]
    t = t.reshape(c_out, kh * wd, ow)
    t.flags.writeable = False
    return t


def _packed_scratch(in_shape: Shape, w_shape: Shape, pads: Pads2d, act: Act) -> dict[str, Shape]:
    b, _, h, wd = in_shape
    c_out = w_shape[0]
    (top, bottom), _ = pads
    rows, per = (top + h + bottom) * wd, _act_floats(act)
    if per:                                        # the rows in `act_tmp` (above)
        return _act_tile(act, b, max(c_out * wd, -(-rows // per)))
    return {"rows": (b, rows)}


def _packed_rows(x: np.ndarray, w: np.ndarray, pack: np.ndarray, out: np.ndarray, stride: tuple[int, int],
                 pads: Pads2d, dilation: tuple[int, int], groups: int, scratch: Scratch) -> None:
    """out = the convolution of one input channel, by packed rows (above)."""
    bsz, c_in, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    sh, ((top, bottom), _) = stride[0], pads
    oh, ow = out.shape[2:]
    if (c_in != 1 or groups != 1 or (dilation[0] != 1 and kh > 1) or pack.shape != (c_out, kh * wd, ow)
            or oh != _window_out(h, kh, sh, dilation[0], top, bottom)):
        raise ValueError(f"a pack {list(pack.shape)} does not fit a convolution of input {list(x.shape)} "
                         f"with weight {list(w.shape)}")
    rows = _take(scratch["rows"] if "rows" in scratch else scratch["act_tmp"], (bsz, top + h + bottom, wd))
    rows[:, :top].fill(0.0)
    rows[:, top + h:].fill(0.0)
    np.copyto(rows[:, top:top + h], x[:, 0])
    s0, s1, s2 = rows.strides
    runs = np.ndarray((bsz, 1, oh, kh * wd), rows.dtype, rows, 0, (s0, 0, sh * s1, s2))   # row r: its kh input rows
    np.matmul(runs, pack, out=out)


def _depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, tp: _TapPlan,
               block: int, act: Act, scratch: Scratch) -> None:
    """A block of `block` channels at a time (all examples): output channel o
    reads input channel o // multiplier, the wide result is viewed as
    [B, n, multiplier, OH * wq], and each tap is one broadcast multiply (into
    `products`) and one add; the wide block without its garbage columns,
    plus the bias, goes into `out` in one pass (`_finish`), then the activation."""
    bsz, c_in = x.shape[:2]
    c_out, _, kh, kw = w.shape
    mult = c_out // c_in
    w3 = _view(w, (c_in, mult, kh * kw))
    writers: dict[int, tuple] = {}
    for c0 in range(0, c_in, block):
        n = min(c_in, c0 + block) - c0
        phases = _take(scratch["phases"], tp.phases_shape(bsz, n))
        xb = x[:, c0:c0 + n]
        if c0 == 0:         # a later block's planes are planes the first block framed (the same phase in
            _split_phases(xb, phases, tp, 0.0)  # each place, shorter blocks included): their padding is still 0
        else:
            if n not in writers:
                writers[n] = _phase_writer(phases, tp, x.shape[2:])
            _write_phases(xb, writers[n])
        wide = _take(scratch["wide"], tp.wide_shape(bsz, n * mult))
        acc = _view(wide, (bsz, n, mult, tp.run_length))
        if kh * kw > 1:
            products = _take(scratch["products"], acc.shape)
        for t in range(kh * kw):
            run = _tap_run(phases, tp, t)[:, :, None]
            weight = w3[c0:c0 + n, :, t, None]
            if t == 0:
                np.multiply(run, weight, out=acc)
            else:
                np.multiply(run, weight, out=products)
                np.add(acc, products, out=acc)
        o = out[:, c0 * mult:(c0 + n) * mult]
        _finish(_narrow(wide, tp), b, c0 * mult, o)
        apply_activation(act, o, scratch)


def _finish(narrow: np.ndarray, b: np.ndarray | None, start: int, o: np.ndarray) -> None:
    """o = the wide result without its garbage columns (`narrow`, [B, n * mult,
    OH, OW]) plus the bias of output channels start.. (one pass: the add
    writes `o`; NumPy buffers it in its fixed ufunc buffer, see above)."""
    if b is None:
        np.copyto(o, narrow)
    else:
        np.add(narrow, b[start:start + o.shape[1]].reshape(-1, 1, 1), out=o)


@functools.lru_cache(maxsize=1024)
def _columns_copies(tp: _TapPlan, kernel: tuple[int, int], bsz: int, n: int) -> tuple[tuple[Shape, ...], ...]:
    """The copies of `_depthwise_columns` for a block of `n` channels of `bsz`
    examples, one per stride phase (`_tap_grids`): (shape, offset and strides
    in the columns [B, n, kh, kw, run], offset and strides in the phases
    [B, n, phases, plane]), in elements, without the axes of length 1
    (NumPy copies fewer axes faster)."""
    kh, kw = kernel
    taps, run, k = kh * kw, tp.run_length, len(tp.phases)
    copies = []
    for g in _tap_grids(tp, kernel):
        shape = (bsz, n, g.ni, g.nj, run)
        dst = (n * taps * run, taps * run, g.di * kw * run, g.dj * run, 1)
        src = (n * k * tp.plane, k * tp.plane, g.row_step, g.col_step, 1)
        keep = [i for i, d in enumerate(shape) if d != 1]
        copies.append((tuple([shape[i] for i in keep]), (g.i0 * kw + g.j0) * run, tuple([dst[i] for i in keep]),
                       g.phase * tp.plane + g.start, tuple([src[i] for i in keep])))
    return tuple(copies)


def _depthwise_columns(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, tp: _TapPlan,
                       block: int, act: Act, scratch: Scratch) -> None:
    """`_depthwise` by tap columns, a block of `block` channels at a time (all
    examples): every tap's run copied into `products` [B, n, kh * kw, OH * wq]
    (one strided copy per stride phase, `_tap_grids`), then one batched
    matmul, per input channel its multiplier's weights [mult, kh * kw] times
    its columns, gives the wide result; it goes into `out` without the
    garbage columns, plus the bias, in one pass (`_finish`); the activation.
    Two passes over the columns instead of two ufunc calls per tap."""
    bsz, c_in, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    mult, taps, run = c_out // c_in, kh * kw, tp.run_length
    (oh, ow), wq = tp.out_hw, tp.wq
    lead = (bsz,) * (bsz > 1)
    w3 = _view(w, (1,) * (bsz > 1) + (c_in, mult, taps))
    views: dict[int, tuple] = {}                     # channels of a block -> its scratch views
    for c0 in range(0, c_in, block):
        n = min(c_in, c0 + block) - c0
        v = views.get(n)
        if v is None:
            phases = _take(scratch["phases"], tp.phases_shape(bsz, n))
            cols = _take(scratch["products"], (bsz, n, taps * run))
            wide = _take(scratch["wide"], (bsz, n * mult, run))
            ci, pi = cols.itemsize, phases.itemsize
            copies = tuple([(np.ndarray(shape, cols.dtype, cols, d0 * ci, tuple([s * ci for s in ds])),
                             np.ndarray(shape, phases.dtype, phases, s0 * pi, tuple([s * pi for s in ss])))
                            for shape, d0, ds, s0, ss in _columns_copies(tp, (kh, kw), bsz, n)])
            v = views[n] = (phases, _phase_writer(phases, tp, (h, wd)), copies, _view(cols, lead + (n, taps, run)),
                            _view(wide, lead + (n, mult, run)), _view(wide, (bsz, n * mult, oh, wq))[..., :ow])
        phases, writer, copies, cols, acc, narrow = v
        xb = x[:, c0:c0 + n]
        if c0 == 0:         # a later block's planes are planes the first block framed (the same phase in
            _split_phases(xb, phases, tp, 0.0)  # each place, shorter blocks included): their padding is still 0
        else:
            _write_phases(xb, writer)
        for dst, src in copies:
            np.copyto(dst, src)
        np.matmul(w3[..., c0:c0 + n, :, :], cols, out=acc)
        o = out[:, c0 * mult:(c0 + n) * mult]
        _finish(narrow, b, c0 * mult, o)
        apply_activation(act, o, scratch)


def _as_2d_conv_args(stride: int, padding: Sequence[int], dilation: int) -> tuple[tuple, Pads2d, tuple]:
    left, right = padding
    return (1, int(stride)), ((0, 0), (int(left), int(right))), (1, int(dilation))


def conv1d_tiles(in_shape: Shape, w_shape: Shape, *, stride: int, padding: tuple[int, int], dilation: int,
                 groups: int, act: Act = None, budget: int | None = None) -> tuple[int, int, int]:
    """`conv2d_tiles` for the [B, C, 1, T] view."""
    s, p, d = _as_2d_conv_args(stride, padding, dilation)
    b, c, t = in_shape
    o, cg, k = w_shape
    return conv2d_tiles((b, c, 1, t), (o, cg, 1, k), stride=s, padding=p, dilation=d, groups=groups, act=act,
                        budget=budget)


def conv1d_scratch(in_shape: Shape, w_shape: Shape, *, stride: int, padding: tuple[int, int],
                   dilation: int, groups: int, act: Act = None, budget: int | None = None,
                   tiles: tuple[int, int, int] | None = None) -> dict[str, Shape]:
    """Scratch of `conv1d`, which runs as `conv2d` on [B, C, 1, T]: the same
    names and conv2d's shapes for that view."""
    s, p, d = _as_2d_conv_args(stride, padding, dilation)
    b, c, t = in_shape
    o, cg, k = w_shape
    return conv2d_scratch((b, c, 1, t), (o, cg, 1, k), stride=s, padding=p, dilation=d, groups=groups, act=act,
                          budget=budget, tiles=tiles)


def conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *,
           stride: int, padding: tuple[int, int], dilation: int, groups: int,
           act: Act = None, budget: int | None = None, tiles: tuple[int, int, int] | None = None,
           scratch: Scratch | None = None) -> None:
    """PyTorch's conv1d of `x` [B, C_in, T] with `w` [C_out, C_in/groups, k],
    padding `(left, right)` (causal is `(dilation * (k - 1), 0)`), into `out` [B, C_out, OT]."""
    s, p, d = _as_2d_conv_args(stride, padding, dilation)
    conv2d(x[:, :, None, :], w[:, :, None, :], b, out[:, :, None, :], stride=s, padding=p, dilation=d,
           groups=groups, act=act, budget=budget, tiles=tiles, scratch=scratch)


# ------------------------------------------------------------------ backward
# Training: the gradients of conv2d and conv1d with respect to the input, the
# weight and the bias, from the forward input `x` and the output gradient
# `dy`. Every path but the 1x1 one reads the input the way the depthwise
# forward does (`_windows.py`): split into stride phases, each kernel tap one
# contiguous run per channel of OH rows of the phase width wq ("wide": the
# columns from OW on are garbage). `dy` is copied wide with zeros in those
# columns, so whatever the garbage columns hold adds nothing.
# - grouped and dense convolutions, a chunk of examples at a time: the phases
#   channel-major, [K, C_in, (n + 1) * plane], `dy` wide into [C_out, n * plane];
#   per tap and group dw's tap = dy_t @ run.T and the run's input gradient
#   w_tap.T @ dy_t, added into gradient phases (the input's phase buffer) with
#   one flat contiguous add over the group's channels, then copied out to dx
#   (`_windowed_backward`). Without dx (a first layer), when an example's
#   im2col columns fit `_COLS`, dw is one batched matmul of dy, read in place,
#   with each example's columns (`_im2col_dw`). A 1x1 stride-1 unpadded convolution needs no
#   windows: dw from a transposed copy of x, dx = w.T @ dy per example.
# - depthwise (groups == C_in > 1): the tap's weight gradient is a dot
#   product of wide dy with the tap's run per channel and example
#   (np.vecdot), summed over the batch at the end; dx gathers w * dy tap by
#   tap into the gradient phases.

def _conv_backward_buffers(in_shape: Shape, w_shape: Shape, stride: tuple[int, int], pads: Pads2d,
                           dilation: tuple[int, int], groups: int, need_dx: bool,
                           chunk: int | None = None) -> dict[str, Shape]:
    """Every path works chunk by chunk of examples, the chunk being the first
    axis of its scratch (`phases` or `cols`): im2col takes as many as fit
    `_COLS`, the others the whole batch, and `chunk` caps both; the weight
    gradient of later chunks is added through `dw_part`."""
    plan = _conv_plan(in_shape, w_shape, stride, pads, dilation, groups)
    b, c_in, h, w = in_shape
    c_out, cg_in, kh, kw = w_shape
    nb = b if chunk is None else max(1, min(b, chunk))
    if plan.path is _ConvPath.POINTWISE:
        shapes = {"cols": (nb, c_in * h * w), "dy_t": (nb, c_out * h * w)}
    else:
        tp = _tap_plan((h, w), (kh, kw), stride, dilation, pads)
        if plan.path is _ConvPath.DEPTHWISE:
            shapes = {"phases": tp.phases_shape(nb, c_in), "dy_wide": tp.wide_shape(nb, c_out),
                      "dw_parts": (nb, c_out * kh * kw)}
            if need_dx:
                shapes |= {"dphases": tp.phases_shape(nb, c_in),
                           "products": (nb, _block_size(nb, c_in, tp.run_length))}
        else:
            k, plane = len(tp.phases), tp.plane
            row = cg_in * plane if need_dx else 0
            per = c_in * k * plane + c_out * plane + row
            if not need_dx and (columns := _columns_dw(in_shape, w_shape, pads, plan.out_shape, nb)) is not None:
                return columns
            nb = min(nb, _chunk(b, per))
            while nb > 1 and nb * per + nb * -(-row // nb) > _COLS:     # cols' share of the closing plane
                nb -= 1
            # phases [K, C_in, (nb + 1) * plane] (a zero plane closes the last run), dy_t [C_out, nb, plane],
            # cols: a tap's input gradient [C_in/G, (nb + 1) * plane], rows as long as a phase's channels
            shapes = {"dy_t": (nb, c_out * plane), "phases": (nb + 1, c_in * k * plane),
                      "taps": (kh * kw, c_out * cg_in)}
            if need_dx:
                shapes["cols"] = (nb, row + -(-row // nb))
    if nb < b:
        shapes["dw_part"] = w_shape
    return shapes


def conv2d_backward_scratch(in_shape: Shape, w_shape: Shape, *, stride: tuple[int, int], padding: Pads2d,
                            dilation: tuple[int, int], groups: int, need_dx: bool = True,
                            chunk: int | None = None) -> dict[str, Shape]:
    """Scratch of `conv2d_backward`, by path: a 1x1 stride-1 unpadded
    convolution needs `cols` and `dy_t`; other non-depthwise ones `dy_t`,
    `phases` and `taps` (and `cols` with `need_dx`, dx wanted); depthwise
    needs `phases`, `dy_wide`, `dw_parts`, and with `need_dx` also `dphases`
    and `products`; without dx, where `_columns_dw` takes it, `cols`,
    `parts` and `padded` (when padded). `chunk` caps the examples the kernel
    takes at once (the first axis of `dy_t`, `cols` or `dy_wide`); below the
    batch, `dw_part` (like the weight) too."""
    return _conv_backward_buffers(tuple(in_shape), tuple(w_shape), _pair(stride), _pads2d(padding),
                                  _pair(dilation), groups, need_dx, chunk)


def conv2d_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, *, stride: tuple[int, int], padding: Pads2d,
                    dilation: tuple[int, int], groups: int, dx: np.ndarray | None, dw: np.ndarray | None,
                    db: np.ndarray | None, scratch: Scratch | None = None) -> None:
    """Gradients of `conv2d` (without its activation): from the input `x`
    [B, C_in, H, W], the weight `w` and the output gradient `dy`
    [B, C_out, OH, OW], overwrite `dx` (like x), `dw` (like w) and `db` [C_out]
    (each may be None: not wanted). Parameter gradients are summed over the
    batch. `dy` may be a channel slice of a larger gradient (concat). `dx` may
    be `x`: each chunk of examples is done with its input before its dx is
    written (the training plan puts dx over a dying input)."""
    stride, pads, dilation = _pair(stride), _pads2d(padding), _pair(dilation)
    plan = _conv_plan(x.shape, w.shape, stride, pads, dilation, groups)
    scratch = _provide_as(scratch, lambda: _conv_backward_buffers(x.shape, w.shape, stride, pads, dilation,
                                                                  groups, dx is not None), x.dtype)
    if db is not None:
        _bias_gradient(dy, db, scratch.get("dy_t", scratch.get("cols")))
    if plan.path is _ConvPath.DEPTHWISE:
        _depthwise_backward(x, w, dy, dx, dw, plan.taps, scratch)
    elif plan.path is _ConvPath.POINTWISE:
        _pointwise_backward(x, w, dy, dx, dw, groups, scratch)
    else:
        if "taps" not in scratch:                   # the columns layout (`_columns_dw`): dw only
            if dx is not None:
                raise ValueError("conv backward: the scratch was planned without dx (need_dx=False), "
                                 "but dx was passed")
            if dw is not None:
                _im2col_dw(x, dy, dw, stride, pads, dilation, groups, scratch)
        else:
            _windowed_backward(x, w, dy, dx, dw, groups, _tap_plan(x.shape[2:], w.shape[2:], stride, dilation, pads),
                               scratch)


def _bias_gradient(dy: np.ndarray, db: np.ndarray, buf: np.ndarray | None) -> None:
    """db = dy [B, C, ...] summed over examples and pixels: each example's
    channels times a vector of ones (one BLAS call; NumPy's reduce over axes
    0 and 2 runs about 2.5x slower), into `buf` (scratch the backward
    overwrites later), then summed over the examples."""
    b, c = dy.shape[:2]
    grid = dy.reshape(b, c, -1)
    if buf is None or buf.size < b * c or buf.dtype != dy.dtype:
        np.add.reduce(grid, axis=(0, 2), out=db)
        return
    part = _view(buf.reshape(-1)[:b * c], (b, c))
    np.matmul(grid, _ones(grid.shape[2], dy.dtype.str), out=part)
    np.add.reduce(part, axis=0, out=db)


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
        nb = scratch["cols"].shape[0]
        dw3 = _view(dw, w3.shape)
        for b0 in range(0, bsz, nb):
            bs = slice(b0, min(bsz, b0 + nb))
            n = bs.stop - bs.start
            cols = _transposed(x[bs], scratch["cols"][:n], groups, h * wd)
            dy_t = _transposed(dy[bs], scratch["dy_t"][:n], groups, h * wd)
            target = dw3 if b0 == 0 else _view(scratch["dw_part"], w3.shape)
            np.matmul(dy_t, cols.transpose(0, 2, 1), out=target)
            if b0:
                np.add(dw3, target, out=dw3)
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


def _chunk_dy(flat: np.ndarray, dy: np.ndarray, plane: int, tp: _TapPlan, fresh: bool) -> np.ndarray:
    """A chunk's output gradient `dy` [n, C, OH, OW] copied into `flat` as
    [C, n, plane], each example's plane wide (OH rows of wq) and zero past OW
    and past OH * wq; the zeros are written only when `fresh` (the chunk's
    layout changed), since the copy never touches them."""
    n, c = dy.shape[:2]
    (oh, ow), wq, length = tp.out_hw, tp.wq, tp.run_length
    dy_t = _view(flat[:c * n * plane], (c, n, plane))
    grid = _view(dy_t[:, :, :length], (c, n, oh, wq))
    np.copyto(grid[..., :ow], dy.transpose(1, 0, 2, 3))
    if fresh:
        grid[..., ow:].fill(0)
        dy_t[:, :, length:].fill(0)
    return dy_t


def _windowed_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, dx: np.ndarray | None,
                       dw: np.ndarray | None, groups: int, tp: _TapPlan, scratch: Scratch) -> None:
    """Chunk by chunk of examples (the first axis of `dy_t`); the weight
    gradient of later chunks is added in through `dw_part`. The chunk's
    input is split into stride phases laid out phase by phase, channel-major
    within a phase, each channel's planes one after another across the
    examples, [K, C_in, (n + 1) * plane], and its output gradient into [C_out, n * plane],
    wide, zero from OH * wq on in each example's plane. A tap's run then
    reads every example at once as one contiguous row of n * plane per
    channel (what it reads past an example's OH * wq meets zeros; the last
    plane is zero), so each tap is one matmul per group with the long axis
    innermost in both operands (BLAS runs these [C_out/G, span] x [span,
    C_in/G] products two to three times faster than the same products laid
    out position-major): dw's tap from dy_t @ run.T, the input gradient's
    run from w_tap.T @ dy_t into `cols` rows as long as a channel of a
    phase (zero past the run), so that one flat contiguous add takes it
    into the gradient phases (the same buffer) for the whole group; those
    are copied out to dx. The zeros and the padding are written again only
    when a chunk's layout changes (its example count) or dx overwrote them."""
    bsz, c_in = x.shape[:2]
    c_out, cg_in, kh, kw = w.shape
    cog, k, plane = c_out // groups, len(tp.phases), tp.plane
    nb = scratch["dy_t"].shape[0]
    rows = scratch["phases"].shape[0]
    taps = _view(scratch["taps"], (kh * kw, groups, cog, cg_in))
    w4 = _view(w, (groups, cog, cg_in, kh * kw))
    dw4 = None if dw is None else _view(dw, w4.shape)
    part4 = None if dw is None or nb >= bsz else _view(scratch["dw_part"], w4.shape)
    flat_dy = scratch["dy_t"].reshape(-1)
    phases = _view(scratch["phases"], (k, c_in, rows * plane))
    last = 0
    for b0 in range(0, bsz, nb):
        bs = slice(b0, min(bsz, b0 + nb))
        n = bs.stop - bs.start
        span, fresh, last = n * plane, n != last, n      # zeros and padding stay while the layout does
        dy_t = _chunk_dy(flat_dy, dy[bs], plane, tp, fresh)
        dy_g = _view(dy_t, (groups, cog, span))
        per_example = _view(phases, (k, c_in, rows, plane))[:, :, :n].transpose(2, 1, 0, 3)    # [n, C, K, plane]
        if dw is not None:
            framed = not fresh and dx is None               # dx's gradient phases overwrite the padding
            _split_phases(x[bs], per_example, tp, 0.0, frame=not framed)
            if not framed:
                phases[:, :, span:span + plane].fill(0)
            for t, (ph, start) in enumerate(tp.runs):
                run = phases[ph, :, start:start + span]
                for g in range(groups):
                    np.matmul(dy_g[g], run[g * cg_in:(g + 1) * cg_in].T, out=taps[t, g])
            target = dw4 if b0 == 0 else part4
            np.copyto(target, taps.transpose(1, 2, 3, 0))
            if b0:
                np.add(dw4, part4, out=dw4)
        if dx is None:
            continue
        # a tap's product [C_in/G, span] lands in `tmp` rows as long as a channel of a
        # phase, zero past span: one contiguous add over the group's channels (NumPy
        # buffers a ufunc over a strided 2-d run, several times slower)
        channel = rows * plane
        reach = (cg_in - 1) * channel + span
        tmp = _view(scratch["cols"].reshape(-1)[:cg_in * channel], (cg_in, channel))
        tmp[:, span:].fill(0)
        flat, tmp_flat = phases.reshape(-1), tmp.reshape(-1)[:reach]
        phases[:, :, :span + plane].fill(0)
        np.copyto(taps, w4.transpose(3, 0, 1, 2))           # each tap's weight contiguous: BLAS takes its .T
        for t, (ph, start) in enumerate(tp.runs):
            for g in range(groups):
                np.matmul(taps[t, g].T, dy_g[g], out=tmp[:, :span])
                o = (ph * c_in + g * cg_in) * channel + start
                np.add(flat[o:o + reach], tmp_flat, out=flat[o:o + reach])
        _merge_phases(per_example, dx[bs], tp)


_PARTS = 1 << 12     # floats of a weight whose gradient the columns path takes (each example's share)


def _columns_dw(in_shape: Shape, w_shape: Shape, pads: Pads2d, out_shape: Shape, nb: int) -> dict[str, Shape] | None:
    """The scratch of dw from each example's im2col columns (`_im2col_dw`,
    for a layer without dx: a first layer), or None when one example's
    columns exceed `_COLS`: `cols`, `parts` (each example's share of dw),
    `padded` (the input band, when the convolution pads), for as many
    examples as fit `_COLS` (at most `nb`). Its matmuls have the long axis
    inside and every tap on one side, where a tap-by-tap product of a layer
    with few input channels is skinny and each tap another pass over dy
    (LeNet's first layer: 1.7x faster, in no more scratch at batch 32); not
    for a weight of more than `_PARTS` floats, whose share per example can
    outweigh the columns (a 256-channel layer over 3x3 pixels ran 11x slower
    than tap by tap). Both tests hold for every shorter input when they hold
    at the plan's bound (a plan keeps its scratch layout for shorter inputs)."""
    b, c_in = in_shape[:2]
    (kh, kw), (oh, ow) = w_shape[2:], out_shape[2:]
    cols = c_in * kh * kw * oh * ow
    if cols > _COLS or math.prod(w_shape) > _PARTS:
        return None                 # one example's columns too large, or its share of dw
    padded = _padded_shape(in_shape, pads)
    band = 0 if padded is None else math.prod(padded[1:])
    nb = min(nb, _chunk(b, band + cols + math.prod(w_shape)))
    shapes = {"cols": (nb, cols), "parts": (nb, math.prod(w_shape))}
    if band:
        shapes["padded"] = (nb, band)
    if nb < b:
        shapes["dw_part"] = w_shape
    return shapes


def _im2col_dw(x: np.ndarray, dy: np.ndarray, dw: np.ndarray, stride: tuple[int, int], pads: Pads2d,
               dilation: tuple[int, int], groups: int, scratch: Scratch) -> None:
    """dw alone, chunk by chunk of examples (the first axis of `cols`): the
    chunk's input copied into a zero-framed band when the convolution pads,
    each example's columns [G, C_in/G * kh * kw, OH * OW] copied from it
    through a strided view as the forward's im2col does, then one batched
    matmul of dy's examples [G, C_out/G, OH * OW], read where they are, with
    the columns' transposes into `parts`, summed over the chunk into dw
    (later chunks added through `dw_part`)."""
    bsz, c_in, h, wd = x.shape
    c_out, cg_in, kh, kw = dw.shape
    oh, ow = dy.shape[2:]
    (top, bottom), (left, right) = pads
    cog, k = c_out // groups, cg_in * kh * kw
    nb = scratch["cols"].shape[0]
    dw3 = _view(dw, (groups, cog, k))
    part = None if nb >= bsz else _view(scratch["dw_part"], dw3.shape)
    last = 0
    for b0 in range(0, bsz, nb):
        n = min(bsz, b0 + nb) - b0
        src = x[b0:b0 + n]
        if "padded" in scratch:
            band = _view(scratch["padded"][:n], (n, c_in, h + top + bottom, wd + left + right))
            if n != last:                           # the frame stays zero while the layout does
                band.fill(0)
            np.copyto(band[:, :, top:top + h, left:left + wd], src)
            src = band
        last = n
        windows = _windows_view(src, groups, (kh, kw), oh, ow, stride, dilation)
        cols = _view(scratch["cols"][:n], windows.shape)
        np.copyto(cols, windows)
        parts = _view(scratch["parts"][:n], (n, groups, cog, k))
        np.matmul(dy[b0:b0 + n].reshape(n, groups, cog, oh * ow),
                  _view(cols, (n, groups, k, oh * ow)).transpose(0, 1, 3, 2), out=parts)
        target = dw3 if b0 == 0 else part
        np.add.reduce(parts, axis=0, out=target)
        if b0:
            np.add(dw3, part, out=dw3)


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
    """Chunk by chunk of examples (the scratch's first axis); the weight
    gradient of later chunks is added through `dw_part`."""
    bsz = x.shape[0]
    nb = scratch["dy_wide"].shape[0]
    for b0 in range(0, bsz, nb):
        bs = slice(b0, min(bsz, b0 + nb))
        n = bs.stop - bs.start
        part = {k: v[:n] for k, v in scratch.items() if k != "dw_part"}
        target = dw if dw is None or b0 == 0 else _view(scratch["dw_part"], dw.shape)
        _depthwise_backward_chunk(x[bs], w, dy[bs], None if dx is None else dx[bs], target, tp, part)
        if dw is not None and b0:
            np.add(dw, target, out=dw)


def _depthwise_backward_chunk(x: np.ndarray, w: np.ndarray, dy: np.ndarray, dx: np.ndarray | None,
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
                            dilation: int, groups: int, need_dx: bool = True,
                            chunk: int | None = None) -> dict[str, Shape]:
    """Scratch of `conv1d_backward`: conv2d_backward's for the [B, C, 1, T] view."""
    s, p, d = _as_2d_conv_args(stride, padding, dilation)
    b, c, t = in_shape
    o, cg, k = w_shape
    return conv2d_backward_scratch((b, c, 1, t), (o, cg, 1, k), stride=s, padding=p, dilation=d, groups=groups,
                                   need_dx=need_dx, chunk=chunk)


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


def _extended(x: np.ndarray, full: Shape | None, scratch: Scratch) -> np.ndarray:
    if full is None:
        return x
    buf = _view(scratch["x_full"], full)
    buf.fill(0)
    np.copyto(buf[:, :, :x.shape[2], :x.shape[3]], x)
    return buf


@functools.lru_cache(maxsize=1024)
def _convt_choose(in_shape: Shape, w_shape: Shape, groups: int, budget: int | None) -> tuple[int, int]:
    """(input rows, input columns) per tile of conv_transpose2d whose products fit `budget`."""
    b, c, h, w = in_shape
    _, fg, kh, kw = w_shape
    per = fg * groups * kh * kw                    # products per input pixel
    limit = TILE if budget is None else max(1, int(budget))
    if per * w <= limit:
        return max(1, min(h, limit // (per * w))), w
    return 1, max(min(w, _MIN_COLS), min(w, limit // per))


def conv_transpose2d_tiles(in_shape: Shape, w_shape: Shape, *, stride, padding, output_padding, dilation,
                           groups: int, budget: int | None = None) -> tuple[int, int]:
    """(input rows, input columns) per tile of `conv_transpose2d` whose scratch
    fits `budget` floats per example (default `TILE`); a plan passes them as
    `tiles=`, chosen at the bounds of its named dimensions."""
    return _convt_choose(tuple(in_shape), tuple(w_shape), groups, None if budget is None else int(budget))


def _convt_tiles(in_shape: Shape, w_shape: Shape, groups: int, budget, tiles) -> tuple[int, int]:
    rows, cols = tiles if tiles is not None else _convt_choose(tuple(in_shape), tuple(w_shape), groups, budget)
    h, w = in_shape[2:]
    rows, cols = max(1, min(h, rows)), max(1, min(w, cols))
    return (1 if cols < w else rows), cols


def conv_transpose2d_scratch(in_shape: Shape, w_shape: Shape, *, stride, padding, output_padding, dilation,
                             groups: int, budget: int | None = None,
                             tiles: tuple[int, int] | None = None) -> dict[str, Shape]:
    """Scratch of `conv_transpose2d`: the `products` of a tile of input pixels
    with every tap of the weight (`tiles`, by default within `budget`)."""
    rows, cols = _convt_tiles(in_shape, w_shape, groups, budget, tiles)
    _, fg, kh, kw = w_shape
    return {"products": (in_shape[0], fg * groups * kh * kw * rows * cols)}


def conv_transpose2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *, stride, padding,
                     output_padding, dilation, groups: int, budget: int | None = None,
                     tiles: tuple[int, int] | None = None, scratch: Scratch | None = None) -> None:
    """PyTorch's conv_transpose2d of `x` [B, C, H, W] with `w` [C, F/groups, kh, kw], padding
    `((top, bottom), (left, right))` and `output_padding` (sh, sw), plus bias `b` [F] (or
    None), into `out` [B, F, OH, OW]. Tile by tile of input pixels (all examples at once):
    one matmul gives the tile's products with every tap ([F, kh, kw, pixels], the weight
    read as [C, F * kh * kw]), and each tap's products are added into the output pixels it
    reaches (a strided view of `out`, which starts as the bias)."""
    (sh, sw), ((pt, _), (pl, _)), (dh, dw) = _pair(stride), _pads2d(padding), _pair(dilation)
    shape, _ = _convt_geometry(x.shape, w.shape, (sh, sw), padding, output_padding, (dh, dw), groups)
    assert out.shape == shape, (out.shape, shape)
    bsz, c, h, wd = x.shape
    _, fg, kh, kw = w.shape
    f, oh, ow = shape[1:]
    rows, cols = _convt_tiles(x.shape, w.shape, groups, budget, tiles)
    scratch = _provide_as(scratch, lambda: conv_transpose2d_scratch(
        x.shape, w.shape, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
        groups=groups, tiles=(rows, cols)), x.dtype)
    wt = _view(w, (groups, c // groups, fg * kh * kw)).transpose(0, 2, 1)       # [G, F/G * kh * kw, C/G]
    if (kh, kw) == (sh, sw) and (dh, dw) == (1, 1) and (oh, ow) == (h * sh, wd * sw) and pt == pl == 0:
        _convt_exact(x, wt, b, out, rows, cols, scratch)
        return
    if b is None:
        out.fill(0)
    else:
        np.copyto(out, b[:, None, None])
    for y0 in range(0, h, rows):
        nr = min(h, y0 + rows) - y0
        for x0 in range(0, wd, cols):
            nc = min(wd, x0 + cols) - x0
            prod = _take(scratch["products"], (bsz, groups, fg * kh * kw, nr * nc))
            src = x[:, :, y0:y0 + nr, x0:x0 + nc]
            np.matmul(wt, _view(src, (bsz, groups, c // groups, nr * nc)), out=prod)
            taps = _view(prod, (bsz, f, kh, kw, nr, nc))
            for i in range(kh):
                u0, u1 = _tap_span(nr, oh, sh, (y0 * sh) + i * dh - pt)
                if u0 >= u1:
                    continue
                for j in range(kw):
                    v0, v1 = _tap_span(nc, ow, sw, (x0 * sw) + j * dw - pl)
                    if v0 >= v1:
                        continue
                    oy, ox = (y0 + u0) * sh + i * dh - pt, (x0 + v0) * sw + j * dw - pl
                    o = out[:, :, oy:oy + (u1 - u0 - 1) * sh + 1:sh, ox:ox + (v1 - v0 - 1) * sw + 1:sw]
                    np.add(o, taps[:, :, i, j, u0:u1, v0:v1], out=o)


def _convt_exact(x: np.ndarray, wt: np.ndarray, b: np.ndarray | None, out: np.ndarray, rows: int, cols: int,
                 scratch: Scratch) -> None:
    """conv_transpose2d whose kernel equals its stride, unpadded (the taps of
    different input pixels never meet: every output pixel is one product):
    per tile one matmul and one strided copy of its products into `out`
    (viewed [B, F, kh, kw, H, W]), then the bias."""
    bsz, c, h, wd = x.shape
    groups, fk = wt.shape[0], wt.shape[1]
    f, kh, kw = out.shape[1], out.shape[2] // h, out.shape[3] // wd
    lead = (bsz,) * (bsz > 1) + (groups,) * (groups > 1)
    w_op = wt.reshape((1,) * (bsz > 1) + (groups,) * (groups > 1) + wt.shape[1:])
    s0, s1, s2, s3 = out.strides
    spread = np.ndarray((bsz, f, kh, kw, h, wd), out.dtype, out, 0, (s0, s1, s2, s3, kh * s2, kw * s3)) \
        if out.flags.c_contiguous else as_strided(out, (bsz, f, kh, kw, h, wd), (s0, s1, s2, s3, kh * s2, kw * s3))
    views: dict[tuple[int, int], tuple] = {}
    for y0 in range(0, h, rows):
        nr = min(h, y0 + rows) - y0
        for x0 in range(0, wd, cols):
            nc = min(wd, x0 + cols) - x0
            v = views.get((nr, nc))
            if v is None:
                prod = _take(scratch["products"], (bsz, f * kh * kw, nr * nc))
                v = views[(nr, nc)] = (_view(prod, lead + (fk, nr * nc)), _view(prod, (bsz, f, kh, kw, nr, nc)))
            prod, taps = v
            np.matmul(w_op, _view(x[:, :, y0:y0 + nr, x0:x0 + nc], lead + (c // groups, nr * nc)), out=prod)
            np.copyto(spread[..., y0:y0 + nr, x0:x0 + nc], taps)
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


def conv_transpose1d_tiles(in_shape: Shape, w_shape: Shape, *, stride: int, padding, output_padding: int,
                           dilation: int, groups: int, budget: int | None = None) -> tuple[int, int]:
    """`conv_transpose2d_tiles` for the [B, C, 1, T] view."""
    b, c, t = in_shape
    return conv_transpose2d_tiles((b, c, 1, t), (*w_shape[:2], 1, w_shape[2]), groups=groups, budget=budget,
                                  **_convt_1d(stride, padding, output_padding, dilation))


def conv_transpose1d_scratch(in_shape: Shape, w_shape: Shape, *, stride: int, padding, output_padding: int,
                             dilation: int, groups: int, budget: int | None = None,
                             tiles: tuple[int, int] | None = None) -> dict[str, Shape]:
    """Scratch of `conv_transpose1d`: conv_transpose2d's for the [B, C, 1, T] view."""
    b, c, t = in_shape
    return conv_transpose2d_scratch((b, c, 1, t), (*w_shape[:2], 1, w_shape[2]), groups=groups, budget=budget,
                                    tiles=tiles, **_convt_1d(stride, padding, output_padding, dilation))


def conv_transpose1d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *, stride: int, padding,
                     output_padding: int, dilation: int, groups: int, budget: int | None = None,
                     tiles: tuple[int, int] | None = None, scratch: Scratch | None = None) -> None:
    """PyTorch's conv_transpose1d of `x` [B, C, T] with `w` [C, F/groups, k], padding `(p, p)`,
    run as conv_transpose2d on [B, C, 1, T]."""
    conv_transpose2d(x[:, :, None, :], w[:, :, None, :], b, out[:, :, None, :], groups=groups, budget=budget,
                     tiles=tiles, scratch=scratch, **_convt_1d(stride, padding, output_padding, dilation))


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
