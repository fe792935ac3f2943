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

import math

import numpy as np

from ._common import Scratch, Shape, _ones, _pads2d, _pair, _provide, _provide_as, _view, _window_out
from .elementwise import activation_backward_masked, activation_mask, activation_scratch, apply_activation
from .pool import _argmax_offsets, maxpool2d_train, maxpool2d_train_scratch


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


def _channel_sums(a3: np.ndarray) -> np.ndarray:
    """[C]: a gradient [B, C, S] summed over examples and positions, each
    example's channels times ones in one BLAS call, then over the examples
    (NumPy's reduce over axes 0 and 2 takes about twice as long)."""
    return np.add.reduce(np.matmul(a3, _ones(a3.shape[2], a3.dtype.str)), axis=0)


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
    sum_dy = _channel_sums(dy3)
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


def _rows(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A per-row array of layernorm (one number per position of x.shape[:-1])
    viewed as x.shape[:-1], whatever shape its buffer was planned with."""
    return _view(a, x.shape[:-1])


def layernorm_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float, out: np.ndarray,
                    mean: np.ndarray, rstd: np.ndarray) -> None:
    """`layernorm` over the last axis, saving `mean` and `rstd` =
    1/sqrt(var + eps), one number per row: shaped x.shape[:-1], or any shape
    of that size (the training plan saves [B, 1] for a one-axis x [B, F])."""
    n = x.shape[-1]
    mean, rstd = _rows(mean, x), _rows(rstd, x)
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
    axes. `dx` may be `dy`; `mean` and `rstd` as `layernorm_train` takes them."""
    scratch = _provide_as(scratch, lambda: layernorm_backward_scratch(x.shape), x.dtype)
    xhat, row_g, row_gx = scratch["xhat"], scratch["row_g"], scratch["row_gx"]
    mean, rstd = _rows(mean, x), _rows(rstd, x)
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


# ------------------------------------------------------------------ fused batchnorm chains
# Training. A batchnorm, the masked activation after it (relu, relu6,
# leaky_relu, clamp: `elementwise.MASKED`) and a max pool after that run as
# one step that keeps, for the backward, only the batchnorm's input x, its
# mean and rstd [C] and the pool's winning taps (one byte per output): the
# normalised and activated values in between are recomputed from x, chunk by
# chunk of examples (the first axis of the scratch; `chunk` caps it), in the
# forward and in the backward, as in-place activated batchnorm (Rota Bulo et
# al. 2018) and Gist's recomputation (Jain et al. 2018) do. Every recomputed
# value is formed as the forward forms it, z = (x - mean) * (rstd * gamma) +
# beta, so masks and arg-max agree bit for bit.
# - forward: the statistics over the whole batch, then per chunk z, the
#   activation in place and the pool (into `out`, taps into `argmax`); without
#   a pool z is written straight into `out`.
# - backward: with xhat = (x - mean) * rstd and dz = dy * f'(z) (at the pool's
#   winners only, with a pool), dbeta = sum(dz), dgamma = sum(dz * xhat) and
#   dx = gamma * rstd * (dz - dbeta / n - xhat * dgamma / n). `dy` is
#   overwritten (with dz); `dx` may be `x` (the saved input, dead after this
#   step) or, without a pool, `dy`.
# - recompute: z and the activation into `out`, as the forward.

def _pool2d(pool: dict | None) -> tuple | None:
    if pool is None:
        return None
    return _pair(pool["kernel"]), _pair(pool["stride"]), _pads2d(pool["padding"])


def _as4d(a: np.ndarray) -> np.ndarray:
    """[B, C, T] as [B, C, 1, T] (pooled chains); 4-D arrays as they are."""
    return a[:, :, None, :] if a.ndim == 3 else a


def _chain_rows(in_shape: Shape, chunk: int | None) -> int:
    b = in_shape[0]
    return b if chunk is None else max(1, min(b, chunk))


def _pooled_shape(in_shape: Shape, geo: tuple) -> Shape:
    """[B, C, OH, OW] of a max pool over `in_shape` ([B, C, H, W] or [B, C, T] as [B, C, 1, T])."""
    kernel, stride, pads = geo
    b, c, h, w = in_shape if len(in_shape) == 4 else (in_shape[0], in_shape[1], 1, in_shape[2])
    return (b, c, _window_out(h, kernel[0], stride[0], 1, *pads[0]), _window_out(w, kernel[1], stride[1], 1, *pads[1]))


def _tiles_input(geo: tuple) -> bool:
    """The pool's windows tile its input (stride = kernel, no padding)."""
    kernel, stride, pads = geo
    return stride == kernel and pads == ((0, 0), (0, 0))


def batchnorm_chain_train_scratch(in_shape: Shape, *, act=None, pool: dict | None = None,
                                  chunk: int | None = None) -> dict[str, Shape]:
    """Scratch of `batchnorm_chain_train`. Without a pool, the activation's
    temporaries for a chunk of x (`act.` + their names), if any. With a pool
    whose windows tile x, `z` (like the pooled output, and at least one
    example of x) and `mask` (bytes), and the activation's temporaries for the
    pooled output: each tap is normalised from a strided view of x, for the
    whole batch. With other pools, `z` (a chunk of x) and
    the pool's own scratch (`pool.` + `maxpool2d_train_scratch`'s names)."""
    geo = _pool2d(pool)
    nb = _chain_rows(in_shape, chunk)
    if geo is not None and _tiles_input(geo):
        pooled = _pooled_shape(in_shape, geo)       # z: like the output, and at least one example of x
        return {"z": (max(math.prod(pooled), math.prod(in_shape[1:])),),
                "mask": (*pooled[:2], -(-math.prod(pooled[2:]) // 4)),
                **{f"act.{k}": v for k, v in activation_scratch(act, pooled).items()}}
    part = (nb, *in_shape[1:])
    shapes = {f"act.{k}": v for k, v in activation_scratch(act, part).items()}
    if geo is not None:
        kernel, stride, pads = geo
        shapes["z"] = part
        part4 = part if len(part) == 4 else (nb, part[1], 1, part[2])
        shapes |= {f"pool.{k}": v for k, v in maxpool2d_train_scratch(part4, kernel=kernel, stride=stride,
                                                                      padding=pads).items()}
    return shapes


def _sub(scratch: Scratch, prefix: str, n: int) -> dict[str, np.ndarray]:
    """The scratch views named `prefix` + name, cut to `n` examples."""
    return {k[len(prefix):]: v[:n] for k, v in scratch.items() if k.startswith(prefix)}


def _affine_into(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, beta: np.ndarray, out: np.ndarray) -> None:
    """out = (x - mean) * scale + beta per channel (axis 1; the forward's z), any rank >= 3."""
    lead = (slice(None),) + (None,) * (x.ndim - 2)
    np.subtract(x, mean[lead], out=out)
    np.multiply(out, scale[lead], out=out)
    np.add(out, beta[lead], out=out)


def batchnorm_chain_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                          running_var: np.ndarray, *, eps: float, momentum: float, act, pool: dict | None,
                          out: np.ndarray, mean: np.ndarray, rstd: np.ndarray, argmax: np.ndarray | None = None,
                          scratch: Scratch | None = None) -> None:
    """`batchnorm_train`, then `act` (None or a masked activation), then max
    pooling (`pool`: None or {kernel, stride, padding}, 2-D; a [B, C, T] input
    pools as [B, C, 1, T]) into `out`, the winning taps into `argmax` (uint8,
    like out); only `out`, `mean`, `rstd` and `argmax` are written beside the
    scratch."""
    geo = _pool2d(pool)
    if geo is None:
        batchnorm_train(x, gamma, beta, running_mean, running_var, eps=eps, momentum=momentum, out=out, mean=mean,
                        rstd=rstd)
        _chunked_activation(act, out, scratch)
        return
    s = _provide_as(scratch, lambda: batchnorm_chain_train_scratch(x.shape, act=act, pool=pool), x.dtype)
    x3 = _channels(x)
    bsz, n = x3.shape[0], x3.shape[0] * x3.shape[2]
    if n < 2:
        raise ValueError(f"batchnorm in training needs more than one value per channel, got input {list(x.shape)}")
    np.add.reduce(x3, axis=(0, 2), out=mean)
    np.divide(mean, n, out=mean)
    var = np.zeros_like(mean)
    temp = s["z"].reshape(-1)
    nb = max(1, temp.size // (x3.shape[1] * x3.shape[2]))       # examples of x the buffer holds
    for b0 in range(0, bsz, nb):
        d = _view(temp[:x3[b0:b0 + nb].size], x3[b0:b0 + nb].shape)
        np.subtract(x3[b0:b0 + nb], mean[:, None], out=d)
        var += np.add.reduce(np.vecdot(d, d), axis=0)
    _running_update(running_mean, running_var, mean, var, momentum, n)
    np.divide(var, n, out=rstd)
    np.add(rstd, eps, out=rstd)
    np.sqrt(rstd, out=rstd)
    np.reciprocal(rstd, out=rstd)
    scale = rstd * gamma
    kernel, stride, pads = geo
    if _tiles_input(geo):
        _tiled_chain_pool(_as4d(x), mean, scale, beta, act, kernel, _as4d(out), _as4d(argmax), s)
        return
    for b0 in range(0, bsz, nb):
        m = min(bsz, b0 + nb) - b0
        z = _view(s["z"][:m], x[b0:b0 + m].shape)
        _affine_into(x[b0:b0 + m], mean, scale, beta, z)
        apply_activation(act, z, _sub(s, "act.", m))
        maxpool2d_train(_as4d(z), _as4d(out[b0:b0 + m]), _as4d(argmax[b0:b0 + m]), kernel=kernel, stride=stride,
                        padding=pads, scratch=_sub(s, "pool.", m))


def _tiled_chain_pool(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, beta: np.ndarray, act, kernel,
                      out: np.ndarray, taps: np.ndarray, s: Scratch) -> None:
    """Max pooling of act(z) whose windows tile x [B, C, H, W]: tap by tap, z
    formed from a strided view of x (no x-sized temporary), the running
    maximum in `out` and the last tap that raised it in `taps` (uint8)."""
    (kh, kw), (oh, ow) = kernel, out.shape[2:]
    windows = x[:, :, :oh * kh, :ow * kw].reshape(*x.shape[:2], oh, kh, ow, kw)
    z = _view(s["z"].reshape(-1)[:out.size], out.shape)
    mask = s["mask"].reshape(-1).view(np.bool_)[:out.size].reshape(out.shape)
    temps = _sub(s, "act.", out.shape[0])
    taps.fill(0)
    for t in range(kh * kw):
        dst = out if t == 0 else z
        _affine_into(windows[:, :, :, t // kw, :, t % kw], mean, scale, beta, dst)
        apply_activation(act, dst, temps)
        if t:
            np.greater(z, out, out=mask)
            np.multiply(mask.view(np.uint8), t, out=mask.view(np.uint8))
            np.maximum(taps, mask.view(np.uint8), out=taps)
            np.maximum(out, z, out=out)


def _running_update(running_mean, running_var, mean, var, momentum: float, n: int) -> None:
    """PyTorch's running statistics: r = (1 - momentum) * r + momentum * stat (unbiased variance)."""
    np.multiply(running_mean, 1.0 - momentum, out=running_mean)
    running_mean += momentum * mean
    np.multiply(running_var, 1.0 - momentum, out=running_var)
    running_var += (momentum / (n - 1)) * var


def _chunked_activation(act, out: np.ndarray, scratch: Scratch | None) -> None:
    """`act` in place on `out`, chunk by chunk of examples as the scratch's `act.` views allow."""
    if act is None:
        return
    s = _provide_as(scratch, lambda: {f"act.{k}": v for k, v in activation_scratch(act, out.shape).items()},
                    out.dtype)
    temps = _sub(s, "act.", out.shape[0])
    if not temps:
        apply_activation(act, out)
        return
    nb = next(iter(temps.values())).shape[0]
    for b0 in range(0, out.shape[0], nb):
        m = min(out.shape[0], b0 + nb) - b0
        apply_activation(act, out[b0:b0 + m], {k: v[:m] for k, v in temps.items()})


def batchnorm_chain_recompute_scratch(in_shape: Shape, *, act=None, chunk: int | None = None) -> dict[str, Shape]:
    """Scratch of `batchnorm_chain_recompute`: the activation's temporaries for a chunk, if any."""
    nb = _chain_rows(in_shape, chunk)
    return {f"act.{k}": v for k, v in activation_scratch(act, (nb, *in_shape[1:])).items()}


def batchnorm_chain_recompute(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
                              rstd: np.ndarray, *, act, out: np.ndarray, scratch: Scratch | None = None) -> None:
    """The output of `batchnorm_chain_train` without a pool, again, from the
    saved input and statistics (the same bits)."""
    _affine_into(_channels(x), mean, rstd * gamma, beta, _view(out, _channels(x).shape))
    _chunked_activation(act, out, scratch)


def batchnorm_chain_backward_scratch(in_shape: Shape, *, act=None, pool: dict | None = None,
                                     chunk: int | None = None) -> dict[str, Shape]:
    """Scratch of `batchnorm_chain_backward`, for a chunk of examples: `xhat`
    and, with an activation or a pool, `z` (like x; like the pooled output with
    a pool: the winners' positions first, int32 in its storage), and with an
    activation `mask` (bytes, four to a float32)."""
    nb = _chain_rows(in_shape, chunk)
    geo = _pool2d(pool)
    if geo is None:
        part = (nb, *in_shape[1:])
    else:
        kernel, stride, pads = geo
        h, w = (in_shape[2], in_shape[3]) if len(in_shape) == 4 else (1, in_shape[2])
        oh = _window_out(h, kernel[0], stride[0], 1, *pads[0])
        ow = _window_out(w, kernel[1], stride[1], 1, *pads[1])
        part = (nb, in_shape[1], oh * ow)
    shapes = {"xhat": part}
    if act is not None or geo is not None:
        shapes["z"] = part
    if act is not None:
        shapes["mask"] = (*part[:2], -(-math.prod(part[2:]) // 4))
    return shapes


def batchnorm_chain_backward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dy: np.ndarray, mean: np.ndarray,
                             rstd: np.ndarray, *, act, pool: dict | None, argmax: np.ndarray | None = None,
                             dx: np.ndarray | None, dgamma: np.ndarray | None, dbeta: np.ndarray | None,
                             scratch: Scratch | None = None) -> None:
    """Gradients of `batchnorm_chain_train` from the gradient `dy` of its
    output (pooled, with a pool): overwrite `dx` (like x), `dgamma`, `dbeta`
    (each may be None). Overwrites `dy`; `dx` may be `x`, or `dy` without a
    pool."""
    geo = _pool2d(pool)
    s = _provide_as(scratch, lambda: batchnorm_chain_backward_scratch(x.shape, act=act, pool=pool), x.dtype)
    x3 = _channels(x)
    bsz, c = x3.shape[:2]
    n = bsz * x3.shape[2]
    nb = s["xhat"].shape[0]
    scale = rstd * gamma
    dy3 = _view(dy, (bsz, c, dy.size // (bsz * c)))
    if geo is not None:
        offsets, corners = _argmax_offsets(_as4d(x).shape[2:], *geo)
        plane, row = x3.shape[2], (geo[0][1], _as4d(x).shape[3])
    sum_dz = np.zeros_like(mean)
    sum_dz_xhat = np.zeros_like(mean)
    for b0 in range(0, bsz, nb):
        m = min(bsz, b0 + nb) - b0
        xh = _view(s["xhat"][:m], dy3[b0:b0 + m].shape)
        if geo is None:
            src = x3[b0:b0 + m]
        else:
            index = _winners(argmax[b0:b0 + m], offsets, corners, plane, s["z"][:m], row)
            _gather(x3[b0:b0 + m].reshape(-1), index.reshape(-1), xh.reshape(-1))
            src = xh
        dz = dy3[b0:b0 + m]
        if act is not None:
            z = _view(s["z"][:m], xh.shape)
            mask = s["mask"][:m].reshape(-1).view(np.bool_)[:z.size].reshape(z.shape)
            _affine_into(src, mean, scale, beta, z)
            activation_mask(act, z, mask)
            activation_backward_masked(act, mask, dz, dx=dz, scratch={"act_tmp": z})
        np.subtract(src, mean[:, None], out=xh)
        np.multiply(xh, rstd[:, None], out=xh)
        sum_dz += _channel_sums(dz)
        sum_dz_xhat += np.add.reduce(np.vecdot(dz, xh), axis=0)
    if dbeta is not None:
        np.copyto(dbeta, sum_dz)
    if dgamma is not None:
        np.copyto(dgamma, sum_dz_xhat)
    if dx is None:
        return
    dx3 = _view(dx, x3.shape)
    a, b = -sum_dz_xhat / n * scale, -sum_dz / n * scale      # dx = xhat * a + b (+ dz * scale)
    slope = rstd * a                                          # = x * slope + shift (+ dz * scale)
    shift = b - mean * slope
    for b0 in range(0, bsz, nb):
        m = min(bsz, b0 + nb) - b0
        dz = dy3[b0:b0 + m]
        if geo is None:
            h = _view(s["xhat"][:m], x3[b0:b0 + m].shape)
            np.multiply(x3[b0:b0 + m], slope[:, None], out=h)
            np.add(h, shift[:, None], out=h)
            np.multiply(dz, scale[:, None], out=dz)
            np.add(h, dz, out=dx3[b0:b0 + m])
        else:
            h = dx3[b0:b0 + m]
            np.multiply(x3[b0:b0 + m], slope[:, None], out=h)
            np.add(h, shift[:, None], out=h)
            index = _winners(argmax[b0:b0 + m], offsets, corners, plane, s["z"][:m], row)
            np.multiply(dz, scale[:, None], out=dz)
            _scatter_add(h.reshape(-1), index.reshape(-1), dz.reshape(-1))


_PIECE = 4096     # indices at a time: NumPy turns int32 indices into an intp copy (8 bytes each)


def _gather(src: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """out = src[index] (int32 indices, all valid) in pieces: np.take's copy
    of the indices as intp, and its buffer of `out` under mode="raise", would
    grow with the batch."""
    for i in range(0, index.size, _PIECE):
        np.take(src, index[i:i + _PIECE], out=out[i:i + _PIECE], mode="clip")


def _scatter_add(dst: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """dst[index] += values, repeated indices summed (np.add.at), in pieces."""
    for i in range(0, index.size, _PIECE):
        np.add.at(dst, index[i:i + _PIECE], values[i:i + _PIECE])


def _winners(taps: np.ndarray, offsets: np.ndarray, corners: np.ndarray, plane: int, buf: np.ndarray,
             row: tuple[int, int]) -> np.ndarray:
    """The flat positions, in a chunk of x [m, C, plane], of the pool's winning
    taps `taps` [m, C, OH, OW] (uint8), as int32 in the float32 scratch `buf`.
    `row`: (kw, W), the kernel's and the input's width. A tap t = i * kw + j
    lies offsets[0] + t + i * (W - kw) from its window's corner: for kw a power
    of two, i = t >> log2(kw) (about half the time of a lookup in `offsets`,
    whose uint8 indices NumPy copies to intp)."""
    m, c = taps.shape[:2]
    index = buf.reshape(-1).view(np.int32)[:taps.size].reshape(m * c, -1)
    grid = index.reshape(taps.shape)
    kw, width = row
    if kw & (kw - 1) == 0:
        np.right_shift(taps, kw.bit_length() - 1, out=grid)
        np.multiply(grid, width - kw, out=grid)
        np.add(grid, taps, out=grid)
        if offsets[0]:
            np.add(grid, offsets[0], out=grid)
    else:
        np.take(offsets, taps, out=grid, mode="clip")    # mode="raise" would buffer all of out
    np.add(grid, corners, out=grid)
    np.add(index, np.arange(0, m * c * plane, plane, dtype=np.int32)[:, None], out=index)
    return index
