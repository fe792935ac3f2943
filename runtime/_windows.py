"""Windows as contiguous runs: how depthwise convolution and pooling read
every kernel tap over whole arrays.

In:  an input [B, C, H, W] and its window geometry (kernel, stride, dilation,
     explicit padding).
Out: `_tap_plan`, the cached geometry of the phases and runs; `_split_phases`,
     the input copied (padded with a fill value) into its stride phases
     (`_phase_writer` / `_write_phases`: its copies made ahead, for block after
     block of channels whose padding is already there); `_tap_run`, the
     contiguous run one tap reads for every output pixel; `_tap_grids`, the
     taps grouped by phase so that one strided view holds a phase's runs; and
     `_narrow`, the [B, C, OH, OW] part of a "wide" result.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ._common import Pads2d, Shape, _fill_frame, _view, _window_out


# Depthwise convolution and pooling visit every kernel tap over whole arrays.
# A tap's strided view of the padded input would make NumPy's inner loops only
# OW elements long, so the input is first copied into stride phases: phase
# (p, q) holds padded rows p, p + sh, ... and columns q, q + sw, ..., each
# phase a flat plane of phase rows of width wq. Then tap (i, j) reads, for all
# output pixels at once, ONE contiguous run per channel: OH rows of the plane
# starting at row (i*dh) // sh, column (j*dw) // sw of phase ((i*dh) % sh,
# (j*dw) % sw). The results come out "wide" ([OH, wq] per channel); columns
# from OW on are garbage (finite, from the fill) and are dropped at the end.

@dataclass(frozen=True, slots=True)
class _TapPlan:
    out_hw: tuple[int, int]
    hq: int                                   # rows of a phase
    wq: int                                   # width of a phase row
    plane: int                                # elements per phase plane: its rows and the overrun of the last run
    phases: tuple[tuple[int, int], ...]       # the stride phases (p, q) some tap reads
    runs: tuple[tuple[int, int], ...]         # per tap, row-major: (index in `phases`, start in the plane)
    stride: tuple[int, int]
    pads: Pads2d

    @property
    def run_length(self) -> int:
        return self.out_hw[0] * self.wq

    def phases_shape(self, batch: int, channels: int) -> Shape:
        return (batch, channels, len(self.phases), self.plane)

    def wide_shape(self, batch: int, channels: int) -> Shape:
        return (batch, channels, self.run_length)


@functools.lru_cache(maxsize=4096)
def _tap_plan(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int], pads: Pads2d) -> _TapPlan:
    (h, w), (kh, kw), (sh, sw), (dh, dw) = in_hw, kernel, stride, dilation
    out_h = _window_out(h, kh, sh, dh, *pads[0])
    out_w = _window_out(w, kw, sw, dw, *pads[1])
    hq = -(-(h + sum(pads[0])) // sh)
    wq = -(-(w + sum(pads[1])) // sw)
    taps = [((i * dh) % sh, (j * dw) % sw, (i * dh) // sh * wq + (j * dw) // sw)
            for i in range(kh) for j in range(kw)]
    phases = tuple(sorted({(p, q) for p, q, _ in taps}))
    runs = tuple((phases.index((p, q)), start) for p, q, start in taps)
    # (i*dh)//sh + out_h <= hq, so only the last row of a run can overrun the plane
    plane = hq * wq + (kw - 1) * dw // sw
    return _TapPlan((out_h, out_w), hq, wq, plane, phases, runs, (sh, sw), pads)


def _phase_span(phase: int, stride: int, lo: int, size: int, count: int) -> tuple[int, int]:
    """The phase rows [first, end) that hold input rather than padding: padded
    index phase + u * stride in [lo, lo + size), with u < count."""
    first = max(0, -(-(lo - phase) // stride))
    end = min(count, max(first, -(-(lo + size - phase) // stride)))
    return first, end


def _split_phases(x: np.ndarray, phases: np.ndarray, tp: _TapPlan, fill: float, frame: bool = True) -> None:
    """Write `x` [B, C, H, W], padded with `fill`, into `phases` [B, C, n, plane];
    with `frame=False` only the input pixels (the padding already holds `fill`)."""
    bsz, c, h, w = x.shape
    (sh, sw), ((top, _), (left, _)), hq, wq = tp.stride, tp.pads, tp.hq, tp.wq
    for k, (p, q) in enumerate(tp.phases):
        plane = phases[:, :, k]
        grid = _view(plane[:, :, :hq * wq], (bsz, c, hq, wq))
        u0, u1 = _phase_span(p, sh, top, h, hq)
        v0, v1 = _phase_span(q, sw, left, w, wq)
        if frame:
            plane[:, :, hq * wq:].fill(fill)
            _fill_frame(grid, (u0, u1), (v0, v1), fill)
        r0, c0 = p + u0 * sh - top, q + v0 * sw - left
        np.copyto(grid[:, :, u0:u1, v0:v1], x[:, :, r0:r0 + (u1 - u0) * sh:sh, c0:c0 + (v1 - v0) * sw:sw])


@functools.lru_cache(maxsize=1024)
def _phase_spans(tp: _TapPlan, in_hw: tuple[int, int]) -> tuple[tuple[int, tuple, tuple], ...]:
    """Per phase of `_split_phases` for an input of `in_hw`: (its index, the
    index of its grid [.., hq, wq] that holds input pixels, the index of
    those pixels in the input [.., H, W])."""
    (h, w), (sh, sw), ((top, _), (left, _)) = in_hw, tp.stride, tp.pads
    spans = []
    for k, (p, q) in enumerate(tp.phases):
        u0, u1 = _phase_span(p, sh, top, h, tp.hq)
        v0, v1 = _phase_span(q, sw, left, w, tp.wq)
        r0, c0 = p + u0 * sh - top, q + v0 * sw - left
        spans.append((k, (Ellipsis, slice(u0, u1), slice(v0, v1)),
                      (Ellipsis, slice(r0, r0 + (u1 - u0) * sh, sh), slice(c0, c0 + (v1 - v0) * sw, sw))))
    return tuple(spans)


def _phase_writer(phases: np.ndarray, tp: _TapPlan, in_hw: tuple[int, int]) -> tuple[tuple[np.ndarray, tuple], ...]:
    """The copies of `_split_phases(.., frame=False)` into `phases` [B, C, n,
    plane] made ahead: (destination view, index into the input) per phase,
    for `_write_phases` to run block after block of channels."""
    bsz, c = phases.shape[:2]
    hq, wq = tp.hq, tp.wq
    return tuple([(_view(phases[:, :, k, :hq * wq], (bsz, c, hq, wq))[grid], src)
                  for k, grid, src in _phase_spans(tp, in_hw)])


def _write_phases(x: np.ndarray, writer: tuple[tuple[np.ndarray, tuple], ...]) -> None:
    """The input pixels of `x` [B, C, H, W] into the phases `writer` was made for."""
    for dst, src in writer:
        np.copyto(dst, x[src])


def _tap_run(phases: np.ndarray, tp: _TapPlan, tap: int) -> np.ndarray:
    """[B, C, OH * wq]: what kernel tap `tap` (row-major) reads for every output pixel."""
    k, start = tp.runs[tap]
    return phases[:, :, k, start:start + tp.run_length]


def _narrow(wide: np.ndarray, tp: _TapPlan) -> np.ndarray:
    """The [B, C, OH, OW] part of a wide result [B, C, OH * wq]."""
    (oh, ow), (bsz, c) = tp.out_hw, wide.shape[:2]
    return _view(wide, (bsz, c, oh, tp.wq))[:, :, :, :ow]


@dataclass(frozen=True, slots=True)
class _TapGrid:
    """The taps that read one phase: kernel rows i0, i0 + di, ... (ni of
    them) by columns j0, j0 + dj, ... (nj), whose runs start at `start` in
    the phase's plane plus `row_step` per tap row and `col_step` per tap
    column, so one strided view holds all their runs."""
    phase: int
    i0: int
    j0: int
    ni: int
    nj: int
    di: int
    dj: int
    start: int
    row_step: int
    col_step: int


@functools.lru_cache(maxsize=1024)
def _tap_grids(tp: _TapPlan, kernel: tuple[int, int]) -> tuple[_TapGrid, ...]:
    """The kernel taps of `tp` grouped by the phase they read (`_TapGrid`):
    the taps reading phase (p, q) are the rows i with i * dh = p (mod sh) by
    the columns j with j * dw = q (mod sw), each an arithmetic progression
    whose runs start a fixed step apart."""
    kw = kernel[1]
    grids = []
    for k in range(len(tp.phases)):
        taps = [(t // kw, t % kw) for t, (ph, _) in enumerate(tp.runs) if ph == k]
        rows, cols = sorted({i for i, _ in taps}), sorted({j for _, j in taps})
        di = rows[1] - rows[0] if len(rows) > 1 else 1
        dj = cols[1] - cols[0] if len(cols) > 1 else 1
        start = tp.runs[rows[0] * kw + cols[0]][1]
        row_step = tp.runs[(rows[0] + di) * kw + cols[0]][1] - start if len(rows) > 1 else 0
        col_step = tp.runs[rows[0] * kw + cols[0] + dj][1] - start if len(cols) > 1 else 0
        grid = _TapGrid(k, rows[0], cols[0], len(rows), len(cols), di, dj, start, row_step, col_step)
        assert taps == [(i, j) for i in rows for j in cols] and all(
            tp.runs[i * kw + j][1] == start + (i - rows[0]) // di * row_step + (j - cols[0]) // dj * col_step
            for i, j in taps), (tp, taps)
        grids.append(grid)
    return tuple(grids)
