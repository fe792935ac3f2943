"""Normalisation kernels: inference batch norm and layer norm (the calling conventions are in `kernels.py`).

In:  x [B, C, ...] with running statistics and affine parameters [C]
     (batchnorm), or x [..., F] with affine parameters [F] (layernorm);
     layernorm's `stat` scratch.
Out: the normalised x in `out`.
"""

from __future__ import annotations

import numpy as np

from ._common import Scratch, Shape, _provide


def batchnorm(x: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
              eps: float, out: np.ndarray) -> None:
    """Inference batch norm on axis 1 of [B, C, ...]: (x - mean) / sqrt(var + eps) * gamma + beta.
    Allocates only the [C] scale and shift."""
    scale = gamma / np.sqrt(var + np.float32(eps))
    shift = beta - mean * scale
    bshape = (-1,) + (1,) * (x.ndim - 2)
    np.multiply(x, scale.reshape(bshape), out=out)
    np.add(out, shift.reshape(bshape), out=out)


def layernorm_scratch(shape: Shape) -> dict[str, Shape]:
    """Scratch of `layernorm`: `stat`, one number per normalised row."""
    return {"stat": tuple(shape[:-1]) + (1,)}


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, out: np.ndarray, *,
              scratch: Scratch | None = None) -> None:
    """Layer norm over the last axis (biased variance), then * gamma + beta."""
    stat = _provide(scratch, lambda: layernorm_scratch(x.shape))["stat"]
    n = x.shape[-1]
    np.add.reduce(x, axis=-1, keepdims=True, out=stat)
    np.divide(stat, n, out=stat)
    np.subtract(x, stat, out=out)
    np.vecdot(out, out, out=stat[..., 0])
    np.divide(stat, n, out=stat)
    np.add(stat, eps, out=stat)
    np.sqrt(stat, out=stat)
    np.divide(out, stat, out=out)
    np.multiply(out, gamma, out=out)
    np.add(out, beta, out=out)
