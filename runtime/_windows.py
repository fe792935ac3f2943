"""Windows as contiguous runs: how depthwise convolution and pooling read
every kernel tap over whole arrays.

In:  an input [B, C, H, W] and its window geometry (kernel, stride, dilation,
     explicit padding).
Out: `_tap_plan`, the cached geometry of the phases and runs; `_split_phases`,
     the input copied (padded with a fill value) into its stride phases;
     `_tap_run`, the contiguous run one tap reads for every output pixel; and
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


def _tap_run(phases: np.ndarray, tp: _TapPlan, tap: int) -> np.ndarray:
    """[B, C, OH * wq]: what kernel tap `tap` (row-major) reads for every output pixel."""
    k, start = tp.runs[tap]
    return phases[:, :, k, start:start + tp.run_length]


def _narrow(wide: np.ndarray, tp: _TapPlan) -> np.ndarray:
    """The [B, C, OH, OW] part of a wide result [B, C, OH * wq]."""
    (oh, ow), (bsz, c) = tp.out_hw, wide.shape[:2]
    return _view(wide, (bsz, c, oh, tp.wq))[:, :, :, :ow]
