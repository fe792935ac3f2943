"""Shape kernels: transpose, nearest-neighbour upsample and copy (which
serves flatten and reshape when they cannot alias) (the calling conventions are in `kernels.py`).

In:  x and the op's permutation or scale.
Out: the rearranged elements in `out`; the `*_backward` kernels put a
     gradient back (transpose) or sum it over each upsampled block.
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
