"""Shape kernels: transpose, nearest-neighbour upsample and copy (which
serves flatten and reshape when they cannot alias) (the calling conventions are in `kernels.py`).

In:  x and the op's permutation or scale.
Out: the rearranged elements in `out`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._common import _view


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
