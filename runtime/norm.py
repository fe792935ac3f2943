"""Normalisation kernels: inference batch norm, layer norm, and group norm (which also serves
instance norm) (the calling conventions are in `kernels.py`).

In:  x [B, C, ...] with running statistics and affine parameters [C]
     (batchnorm), or x [..., F] with affine parameters [F] (layernorm);
     layernorm's `stat` scratch.
Out: the normalised x in `out`. Training: `batchnorm_train` (batch
     statistics, running statistics updated) and `layernorm_train` also save
     mean and 1/std; the `*_backward` kernels give dx, dgamma and dbeta.
"""

from __future__ import annotations

import numpy as np

from ._common import Scratch, Shape, _provide, _provide_as, _view


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


# ------------------------------------------------------------------ training
# Batch norm in training normalises with the batch's statistics over every
# axis but the channels (biased variance) and moves the running statistics
# towards them (unbiased variance), as PyTorch; both norms save the mean and
# 1/sqrt(var + eps) for the backward, which needs no other temporaries than
# [C] (batchnorm) or the `layernorm_backward_scratch` views.

def _channels(x: np.ndarray) -> np.ndarray:
    """[B, C, S] view of [B, C, ...] (S = 1 for [B, C])."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def batchnorm_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                    running_var: np.ndarray, *, eps: float, momentum: float, out: np.ndarray, mean: np.ndarray,
                    rstd: np.ndarray) -> None:
    """Training batch norm on axis 1 of [B, C, ...]: `out` = (x - mean) * rstd
    * gamma + beta with the batch's per-channel mean and biased variance;
    `mean`, `rstd` [C] saved; `running_mean` and `running_var` updated in place
    as r = (1 - momentum) * r + momentum * stat, with the unbiased variance."""
    x3 = _channels(x)
    out3 = _view(out, x3.shape)
    n = x3.shape[0] * x3.shape[2]
    if n < 2:
        raise ValueError(f"batchnorm in training needs more than one value per channel, got input {list(x.shape)}")
    np.add.reduce(x3, axis=(0, 2), out=mean)
    np.divide(mean, n, out=mean)
    np.subtract(x3, mean[:, None], out=out3)
    var = np.add.reduce(np.vecdot(out3, out3), axis=0)             # [C]: the sum of squared deviations
    np.multiply(running_mean, 1.0 - momentum, out=running_mean)
    running_mean += momentum * mean
    np.multiply(running_var, 1.0 - momentum, out=running_var)
    running_var += (momentum / (n - 1)) * var
    np.divide(var, n, out=rstd)
    np.add(rstd, eps, out=rstd)
    np.sqrt(rstd, out=rstd)
    np.reciprocal(rstd, out=rstd)
    np.multiply(out3, (rstd * gamma)[:, None], out=out3)
    np.add(out3, beta[:, None], out=out3)


def batchnorm_backward(x: np.ndarray, gamma: np.ndarray, dy: np.ndarray, mean: np.ndarray, rstd: np.ndarray, *,
                       dx: np.ndarray | None, dgamma: np.ndarray | None, dbeta: np.ndarray | None) -> None:
    """Gradients of `batchnorm_train` (batch statistics): with xhat = (x -
    mean) * rstd and n values per channel, dbeta = sum(dy), dgamma = sum(dy *
    xhat), dx = gamma * rstd * (dy - dbeta / n - xhat * dgamma / n). `dx` must
    not overlap `dy` or `x`. Allocates only [B, C] and [C] temporaries."""
    x3, dy3 = _channels(x), _channels(dy)
    n = x3.shape[0] * x3.shape[2]
    sum_dy = np.add.reduce(dy3, axis=(0, 2))
    if dx is None:
        # sum(dy * (x - mean)) without an x-sized temporary
        sum_dy_xhat = (np.add.reduce(np.vecdot(dy3, x3), axis=0) - mean * sum_dy) * rstd
    else:
        dx3 = _view(dx, x3.shape)
        np.subtract(x3, mean[:, None], out=dx3)
        np.multiply(dx3, rstd[:, None], out=dx3)                # xhat
        sum_dy_xhat = np.add.reduce(np.vecdot(dy3, dx3), axis=0)
    if dbeta is not None:
        np.copyto(dbeta, sum_dy)
    if dgamma is not None:
        np.copyto(dgamma, sum_dy_xhat)
    if dx is None:
        return
    np.multiply(dx3, -sum_dy_xhat[:, None] / n, out=dx3)
    np.add(dx3, dy3, out=dx3)
    np.subtract(dx3, (sum_dy / n)[:, None], out=dx3)
    np.multiply(dx3, (gamma * rstd)[:, None], out=dx3)


def layernorm_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float, out: np.ndarray,
                    mean: np.ndarray, rstd: np.ndarray) -> None:
    """`layernorm` over the last axis, saving `mean` and `rstd` =
    1/sqrt(var + eps), both shaped x.shape[:-1]."""
    n = x.shape[-1]
    np.add.reduce(x, axis=-1, out=mean)
    np.divide(mean, n, out=mean)
    np.subtract(x, mean[..., None], out=out)
    np.vecdot(out, out, out=rstd)
    np.divide(rstd, n, out=rstd)
    np.add(rstd, eps, out=rstd)
    np.sqrt(rstd, out=rstd)
    np.reciprocal(rstd, out=rstd)
    np.multiply(out, rstd[..., None], out=out)
    np.multiply(out, gamma, out=out)
    np.add(out, beta, out=out)


def layernorm_backward_scratch(shape: Shape) -> dict[str, Shape]:
    """Scratch of `layernorm_backward`: `xhat` like x, and two numbers per
    normalised row (`row_g`, `row_gx`)."""
    rows = tuple(shape[:-1])
    return {"xhat": tuple(shape), "row_g": rows, "row_gx": rows}


def layernorm_backward(x: np.ndarray, gamma: np.ndarray, dy: np.ndarray, mean: np.ndarray, rstd: np.ndarray, *,
                       dx: np.ndarray | None, dgamma: np.ndarray | None, dbeta: np.ndarray | None,
                       scratch: Scratch | None = None) -> None:
    """Gradients of `layernorm_train`: with xhat = (x - mean) * rstd, g = dy *
    gamma and means over the normalised axis, dx = rstd * (g - mean(g) - xhat *
    mean(g * xhat)); dgamma = sum(dy * xhat), dbeta = sum(dy) over all other
    axes. `dx` may be `dy`."""
    scratch = _provide_as(scratch, lambda: layernorm_backward_scratch(x.shape), x.dtype)
    xhat, row_g, row_gx = scratch["xhat"], scratch["row_g"], scratch["row_gx"]
    n = x.shape[-1]
    np.subtract(x, mean[..., None], out=xhat)
    np.multiply(xhat, rstd[..., None], out=xhat)
    rows_dy = dy.reshape(-1, n)
    if dbeta is not None:
        np.add.reduce(rows_dy, axis=0, out=dbeta)
    if dgamma is not None:
        np.vecdot(rows_dy, _view(xhat, rows_dy.shape), axis=0, out=dgamma)
    if dx is None:
        return
    np.multiply(dy, gamma, out=dx)                                  # g
    np.add.reduce(dx, axis=-1, out=row_g)
    np.divide(row_g, n, out=row_g)
    np.vecdot(dx, xhat, out=row_gx)
    np.divide(row_gx, n, out=row_gx)
    np.multiply(xhat, row_gx[..., None], out=xhat)
    np.subtract(dx, xhat, out=dx)
    np.subtract(dx, row_g[..., None], out=dx)
    np.multiply(dx, rstd[..., None], out=dx)


# ------------------------------------------------------------------ section 9: groupnorm, instancenorm
# One kernel for both: statistics per example over each of `groups` groups of channels and every
# trailing axis (biased variance), then per-channel gamma and beta (None: not affine).
# instancenorm is groupnorm with one channel per group.

def groupnorm_scratch(shape: Shape, groups: int) -> dict[str, Shape]:
    """Scratch of `groupnorm`: `mean` and `rstd`, one number per example and group."""
    return {"mean": (shape[0], groups), "rstd": (shape[0], groups)}


def _affine(out: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None) -> None:
    o3 = _channels(out)
    if gamma is not None:
        np.multiply(o3, gamma[:, None], out=o3)
    if beta is not None:
        np.add(o3, beta[:, None], out=o3)


def _group_stats(x: np.ndarray, groups: int, eps: float, out: np.ndarray, mean: np.ndarray, rstd: np.ndarray) -> None:
    """out = (x - mean) * rstd per example and group; mean, rstd [B, G] written."""
    b = x.shape[0]
    xg = x.reshape(b, groups, -1)
    og = _view(out, xg.shape)
    n = xg.shape[2]
    np.add.reduce(xg, axis=2, out=mean)
    np.divide(mean, n, out=mean)
    np.subtract(xg, mean[:, :, None], out=og)
    np.vecdot(og, og, out=rstd)
    np.divide(rstd, n, out=rstd)
    np.add(rstd, eps, out=rstd)
    np.sqrt(rstd, out=rstd)
    np.reciprocal(rstd, out=rstd)
    np.multiply(og, rstd[:, :, None], out=og)


def groupnorm(x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, eps: float, groups: int,
              out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """F.group_norm of [B, C, ...] with `groups` groups (instance norm: groups = C)."""
    s = _provide_as(scratch, lambda: groupnorm_scratch(x.shape, groups), x.dtype)
    _group_stats(x, groups, eps, out, _view(s["mean"], (x.shape[0], groups)), _view(s["rstd"], (x.shape[0], groups)))
    _affine(out, gamma, beta)


def groupnorm_train(x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, *, eps: float, groups: int,
                    out: np.ndarray, mean: np.ndarray, rstd: np.ndarray) -> None:
    """`groupnorm` saving `mean` and `rstd` [B, G] for the backward."""
    _group_stats(x, groups, eps, out, mean, rstd)
    _affine(out, gamma, beta)


def groupnorm_backward_scratch(shape: Shape, groups: int) -> dict[str, Shape]:
    """Scratch of `groupnorm_backward`: `xhat` and `g` like x, `row_g`, `row_gx` [B, G]."""
    return {"xhat": tuple(shape), "g": tuple(shape), "row_g": (shape[0], groups), "row_gx": (shape[0], groups)}


def groupnorm_backward(x: np.ndarray, gamma: np.ndarray | None, dy: np.ndarray, mean: np.ndarray, rstd: np.ndarray, *,
                       groups: int, dx: np.ndarray | None, dgamma: np.ndarray | None, dbeta: np.ndarray | None,
                       scratch: Scratch | None = None) -> None:
    """Gradients of `groupnorm_train`: with xhat = (x - mean) * rstd and g = dy * gamma, per
    example and group (means over its elements) dx = rstd * (g - mean(g) - xhat * mean(g *
    xhat)); dgamma = sum(dy * xhat), dbeta = sum(dy) per channel over the batch and positions."""
    s = _provide_as(scratch, lambda: groupnorm_backward_scratch(x.shape, groups), x.dtype)
    b = x.shape[0]
    xg = x.reshape(b, groups, -1)
    n = xg.shape[2]
    xhat = _view(s["xhat"], xg.shape)
    np.subtract(xg, mean[:, :, None], out=xhat)
    np.multiply(xhat, rstd[:, :, None], out=xhat)
    dy3, xhat3 = _channels(dy), _view(s["xhat"], _channels(dy).shape)
    if dbeta is not None:
        np.add.reduce(dy3, axis=(0, 2), out=dbeta)
    if dgamma is not None:
        np.add.reduce(np.vecdot(dy3, xhat3), axis=0, out=dgamma)
    if dx is None:
        return
    g3 = _view(s["g"], dy3.shape)
    if gamma is None:
        np.copyto(g3, dy3)
    else:
        np.multiply(dy3, gamma[:, None], out=g3)
    g = _view(s["g"], xg.shape)
    row_g, row_gx = _view(s["row_g"], (b, groups)), _view(s["row_gx"], (b, groups))
    np.add.reduce(g, axis=2, out=row_g)
    np.divide(row_g, n, out=row_g)
    np.vecdot(g, xhat, out=row_gx)
    np.divide(row_gx, n, out=row_gx)
    np.multiply(xhat, row_gx[:, :, None], out=xhat)
    np.subtract(g, xhat, out=g)
    np.subtract(g, row_g[:, :, None], out=g)
    np.multiply(g, rstd[:, :, None], out=_view(dx, xg.shape))
