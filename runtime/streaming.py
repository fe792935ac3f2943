"""Kernels of streaming plans: a convolution over a chunk of time steps that
keeps the last steps of its input for the next call.

In:  a chunk `x` [B, C, n], the carried `history` [B, C, h] (h = dilation *
     (k - 1), the steps the kernel reaches back), weights as for `conv1d`.
Out: `out` [B, F, n], the causal convolution of history + chunk; `history`
     updated to the last h steps of history + chunk.

Same conventions as `kernels.py`: preplanned views, scratch from the paired
`conv1d_stream_scratch`, nothing large allocated.
"""

from __future__ import annotations

import numpy as np

from . import kernels as K


def conv1d_stream_scratch(in_shape, w_shape, *, history: int, dilation: int, groups: int,
                          act=None) -> dict[str, tuple]:
    b, c, n = in_shape
    wide = (b, c, history + n)
    inner = K.conv1d_scratch(wide, w_shape, stride=1, padding=(0, 0), dilation=dilation, groups=groups, act=act)
    return {"wide": wide, **{f"conv_{k}": v for k, v in inner.items()}}


def conv1d_stream(x: np.ndarray, history: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *,
                  dilation: int, groups: int, act=None, scratch=None) -> None:
    h = history.shape[2]
    n = x.shape[2]
    if scratch is None:
        shapes = conv1d_stream_scratch(x.shape, w.shape, history=h, dilation=dilation, groups=groups, act=act)
        scratch = {k: np.empty(s, np.float32) for k, s in shapes.items()}
    wide = scratch["wide"]
    wide[:, :, :h] = history
    wide[:, :, h:] = x
    inner = {k[5:]: v for k, v in scratch.items() if k.startswith("conv_")}
    K.conv1d(wide, w, b, out, stride=1, padding=(0, 0), dilation=dilation, groups=groups, act=act,
             scratch=inner or None)
    np.copyto(history, wide[:, :, n:])
