"""Pooling kernels: max and average pooling in 1-D and 2-D (1-D runs as 2-D
on [B, C, 1, T]) and global average pooling (the calling conventions are in `kernels.py`).

In:  x [B, C, H, W] (or [B, C, T]), kernel, stride, explicit padding, scratch
     as named by the `*pool*_scratch` functions.
Out: PyTorch's pooling (floor mode; average pooling counts padding as zeros)
     in `out`. Windows are read as contiguous runs (`_windows.py`).
"""

from __future__ import annotations

import numpy as np

from ._common import Pads2d, Scratch, Shape, _pads2d, _pair, _per_example, _provide, _view
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
