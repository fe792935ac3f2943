"""Elementwise and per-position kernels: the activations, prelu, softmax and
log_softmax, and the fused-activation helpers the other kernels call
(the calling conventions are in `kernels.py`).

In:  x and `out` of the same shape (`out` may be `x`, except for
     log_softmax); activation parameters; `scratch` as named by
     `activation_scratch`, `prelu_scratch`, `softmax_scratch` and
     `log_softmax_scratch`.
Out: f(x) in `out`. `activation_scratch(act, shape)` and
     `apply_activation(act, arr, scratch)` run a fused activation, None or
     `(name, *params)`, in place after conv, dense and add. Training: the
     `*_backward` kernels (every activation, prelu, softmax, log_softmax,
     dropout) and `dropout_train` ("backward" below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ._common import Act, Scratch, Shape, _clip, _per_example, _provide, _provide_as, _view


# ------------------------------------------------------------------ activations
# Each kernel writes f(x) into `out`, which may be `x` itself. Those whose
# formula needs the input after `out` is written take temporaries from
# `scratch` (named by `activation_scratch`). Bounds against a scalar use the
# clip ufunc (`_clip`): np.maximum/np.minimum with a scalar operand missed
# NumPy's SIMD loops, and np.clip's Python wrapper costs ~1.6 us a call.

_SOFTPLUS_THRESHOLD = 20.0               # torch's default: softplus(x) = x above it
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_SQRT1_2 = 0.7071067811865476

# erf(z) / z = P(z^2) / Q(z^2) for |z| <= 4 (erf(4) rounds to 1 in float32), a
# Lawson-weighted least-squares rational fit of degree (6, 5) in z^2 whose
# absolute error on erf is below 1.6e-9. Evaluated in float64 (float32
# arithmetic alone would add ~4e-7) and rounded to float32, it stays within
# 3.2e-8 of erf. Coefficients low to high.
_ERF_CLAMP = 4.0
_ERF_NUM = (1.1283791821074514, 0.18471036623608914, 0.05433254376133521, 0.0038395225788719605,
            0.00038268985596902, 4.7804755445687085e-06, -1.3666452286691809e-08)
_ERF_DEN = (1.0, 0.49702884546723325, 0.11382626685938217, 0.015453494630838751,
            0.0013095745028984449, 6.400866431084124e-05)


def _tmp(scratch: Scratch | None, shape: Shape) -> np.ndarray:
    return scratch["act_tmp"] if scratch is not None else np.empty(shape, dtype=np.float32)


# Activations with temporaries run piece by piece: the temporaries hold one
# piece (at most `ACT_TILE` elements per example, or the caller's budget), so
# their scratch is bounded whatever the array's size and stays in cache. A
# piece is a view of the array split along its leading axes (`_pieces`), so
# any strided array works (a concat's channel slice, a convolution's tile).

ACT_TILE = 1 << 14       # elements per example of an activation's temporaries when no budget is given


def _take(buf: np.ndarray, shape: Shape) -> np.ndarray:
    """The first prod(shape) elements of the contiguous scratch `buf`, shaped `shape`."""
    return buf.reshape(-1)[:math.prod(shape)].reshape(shape)


def _pieces(shape: Shape, cap: int):
    """Index tuples of views of an array of `shape`, each at most `cap`
    elements (at least one along the last axis), that cover it in order."""
    if math.prod(shape) <= cap:
        yield ()
        return
    inner, k = 1, len(shape)
    while k > 1 and inner * shape[k - 1] <= cap:
        inner *= shape[k - 1]
        k -= 1
    step = max(1, cap // inner)
    for lead in np.ndindex(*shape[:k - 1]):
        for s0 in range(0, shape[k - 1], step):
            yield lead + (slice(s0, s0 + step),)


def _tile_elements(shape: Shape, per_element: int, budget: int | None) -> int:
    """Elements per example of the pieces an activation on `shape` runs on:
    all of them, or as many as `budget` floats of temporaries hold."""
    cap = ACT_TILE if budget is None else max(1, int(budget) // per_element)
    return max(1, min(_per_example(shape), cap))


def _one_temp_tile(shape: Shape, budget: int | None = None) -> dict[str, Shape]:
    return {"act_tmp": (shape[0], _tile_elements(shape, 1, budget))}


def _gelu_tile(shape: Shape, budget: int | None = None) -> dict[str, Shape]:
    # two float32 temporaries of a piece, side by side
    return {"act_tmp": (shape[0], 2 * _tile_elements(shape, 2, budget))}


def _by_pieces(core: Callable, x: np.ndarray, out: np.ndarray, params: tuple, scratch: Scratch | None,
               temps: Callable[[Shape], dict[str, Shape]]) -> None:
    """core(x, out, tmp, *params) over pieces that fit the one temporary `act_tmp`."""
    buf = _provide(scratch, lambda: temps(x.shape))["act_tmp"]
    if x.shape == out.shape and buf.size >= x.size and buf.shape == x.shape:
        core(x, out, buf, *params)
        return
    for idx in _pieces(x.shape, buf.size):
        xp = x[idx]
        core(xp, out[idx], _take(buf, xp.shape), *params)


def _sigmoid_into(x: np.ndarray, out: np.ndarray) -> None:
    """1 / (1 + exp(-x)); exp overflows to inf for x < -88.7, giving 0 as
    float32 PyTorch does (so silu(-inf) is -inf * 0 = NaN on every target)."""
    np.negative(x, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    np.add(out, 1.0, out=out)
    np.reciprocal(out, out=out)


def relu(x: np.ndarray, out: np.ndarray) -> None:
    """max(x, 0)."""
    _clip(x, 0.0, np.inf, out=out)


def relu6(x: np.ndarray, out: np.ndarray) -> None:
    """min(max(x, 0), 6)."""
    _clip(x, 0.0, 6.0, out=out)


def sigmoid(x: np.ndarray, out: np.ndarray) -> None:
    """1 / (1 + exp(-x))."""
    _sigmoid_into(x, out)


def tanh(x: np.ndarray, out: np.ndarray) -> None:
    np.tanh(x, out=out)


def hardsigmoid(x: np.ndarray, out: np.ndarray) -> None:
    """relu6(x + 3) / 6."""
    np.add(x, 3.0, out=out)
    _clip(out, 0.0, 6.0, out=out)
    np.divide(out, 6.0, out=out)


def hardswish(x: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """x * relu6(x + 3) / 6."""
    _by_pieces(_hardswish, x, out, (), scratch, _one_temp_tile)


def _hardswish(x: np.ndarray, out: np.ndarray, t: np.ndarray) -> None:
    np.add(x, 3.0, out=t)
    _clip(t, 0.0, 6.0, out=t)
    np.multiply(x, t, out=out)
    np.divide(out, 6.0, out=out)


def silu(x: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """x * sigmoid(x)."""
    _by_pieces(_silu, x, out, (), scratch, _one_temp_tile)


def _silu(x: np.ndarray, out: np.ndarray, t: np.ndarray) -> None:
    _sigmoid_into(x, t)
    with np.errstate(invalid="ignore"):       # -inf * 0 = NaN, as in PyTorch
        np.multiply(x, t, out=out)


def leaky_relu(x: np.ndarray, out: np.ndarray, slope: float = 0.01, *, scratch: Scratch | None = None) -> None:
    """x where x > 0, slope * x elsewhere."""
    _by_pieces(_leaky_relu, x, out, (slope,), scratch, _one_temp_tile)


def _leaky_relu(x: np.ndarray, out: np.ndarray, t: np.ndarray, slope: float) -> None:
    _clip(x, -np.inf, 0.0, out=t)
    np.multiply(t, slope, out=t)
    _clip(x, 0.0, np.inf, out=out)
    np.add(out, t, out=out)


def elu(x: np.ndarray, out: np.ndarray, alpha: float = 1.0, *, scratch: Scratch | None = None) -> None:
    """x where x > 0, alpha * (exp(x) - 1) elsewhere."""
    _by_pieces(_elu, x, out, (alpha,), scratch, _one_temp_tile)


def _elu(x: np.ndarray, out: np.ndarray, t: np.ndarray, alpha: float) -> None:
    _clip(x, -np.inf, 0.0, out=t)
    np.expm1(t, out=t)
    np.multiply(t, alpha, out=t)
    _clip(x, 0.0, np.inf, out=out)
    np.add(out, t, out=out)


def selu(x: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """scale * elu(x, alpha) with PyTorch's constants."""
    _by_pieces(_selu, x, out, (), scratch, _one_temp_tile)


def _selu(x: np.ndarray, out: np.ndarray, t: np.ndarray) -> None:
    _elu(x, out, t, _SELU_ALPHA)
    np.multiply(out, _SELU_SCALE, out=out)


def softplus(x: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """log(1 + exp(x)), and x itself above 20 (torch's beta=1, threshold=20).
    Below the threshold log1p(exp(x)) > x, so the maximum picks the branch."""
    _by_pieces(_softplus, x, out, (), scratch, _one_temp_tile)


def _softplus(x: np.ndarray, out: np.ndarray, t: np.ndarray) -> None:
    _clip(x, -np.inf, _SOFTPLUS_THRESHOLD, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    np.maximum(x, t, out=out)


def _horner(coeffs: Sequence[float], u: np.ndarray, acc: np.ndarray) -> None:
    """acc = sum(coeffs[k] * u**k)."""
    np.multiply(u, coeffs[-1], out=acc)
    np.add(acc, coeffs[-2], out=acc)
    for c in reversed(coeffs[:-2]):
        np.multiply(acc, u, out=acc)
        np.add(acc, c, out=acc)


def _erf_over_z(u: np.ndarray, num: np.ndarray, den: np.ndarray) -> None:
    """num = erf(z) / z for float64 `u` = z**2 (z already clamped to +-4); `den` is a temporary."""
    _horner(_ERF_NUM, u, num)
    _horner(_ERF_DEN, u, den)
    np.divide(num, den, out=num)


def _gelu_shapes(shape: Shape) -> dict[str, Shape]:
    # three float64 arrays of x's size, held by one float32 buffer that gelu
    # reinterprets (correct at any 4-byte offset, faster at an 8-byte one)
    return {"act_f64": (shape[0], 6 * _per_example(shape))}


# The forward gelu evaluates Phi from erfc in float32, piece by piece with two
# temporaries: q = erfc(|x| / sqrt 2) / 2 by Abramowitz and Stegun 7.1.26
# (t = 1 / (1 + p |x| / sqrt 2), q = t P(t) exp(-x^2 / 2) / 2, absolute error
# below 1.5e-7 / 2), then Phi = 1/2 + sign(x) (1/2 - q) and x * Phi. Its
# absolute error stays below 5e-7 over the whole line; as in torch's float32
# `1 + erf`, Phi is exactly 0 where q is below half an ulp of 1/2 (x < -5.4),
# gelu(+inf) = +inf and gelu(-inf) = -inf * 0 = NaN. 20 passes: t P(t) / 2 is
# monic in s = c t (c**5 = a5 / 2), and s = (c / p') / (1 / p' + |x|) takes two.
# (The backward keeps its float64 erf below.)
_AS_HALF = (0.127414796, -0.142248368, 0.7107068705, -0.7265760135, 0.5307027145)   # A&S a1..a5, halved
_AS_C = _AS_HALF[4] ** 0.2
_AS_MONIC = tuple(a / _AS_C ** (k + 1) for k, a in enumerate(_AS_HALF[:4]))      # s^5 + m4 s^4 + ... + m1 s
_AS_INV_P = math.sqrt(2.0) / 0.3275911


def gelu(x: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2)), torch's exact (default)
    form, within 5e-7 (see above); `out` may be `x`."""
    buf = _provide(scratch, lambda: _gelu_tile(x.shape))["act_tmp"]
    cap = buf.size // 2
    # one error state for every piece: x^2 overflows to inf (exp gives 0) and -inf * 0 is NaN, as in PyTorch
    with np.errstate(over="ignore", invalid="ignore"):
        for idx in _pieces(x.shape, cap):
            xp = x[idx]
            u = _take(buf, xp.shape)
            acc = buf.reshape(-1)[cap:cap + xp.size].reshape(xp.shape)
            _gelu(xp, out[idx], u, acc)


# the fit's constants as float32 scalars (a Python float operand costs a conversion per call), and the
# ufuncs called with positional outputs: a gelu piece is ~18 calls, so their fixed cost is the piece's
_G_INV_P, _G_CP, _G_HALF, _G_NEG_HALF = (np.float32(v) for v in (_AS_INV_P, _AS_C * _AS_INV_P, 0.5, -0.5))
_G_MONIC = tuple(np.float32(m) for m in _AS_MONIC)


def _gelu(x: np.ndarray, out: np.ndarray, u: np.ndarray, acc: np.ndarray) -> None:
    """One piece of gelu, under the caller's error state; Phi = 1/2 + copysign(1/2 - q, x)."""
    mul, add = np.multiply, np.add
    np.absolute(x, u)
    add(u, _G_INV_P, u)
    np.divide(_G_CP, u, u)                       # s = c t
    add(u, _G_MONIC[3], acc)
    for m in reversed(_G_MONIC[:3]):
        mul(acc, u, acc)
        add(acc, m, acc)
    mul(acc, u, acc)                             # t P(t) / 2
    np.square(x, u)
    mul(u, _G_NEG_HALF, u)
    np.exp(u, u)
    mul(acc, u, acc)                             # q
    np.subtract(_G_HALF, acc, acc)
    np.copysign(acc, x, acc)
    add(acc, _G_HALF, acc)                       # Phi
    mul(x, acc, out)


def _clamped_z(x: np.ndarray, z: np.ndarray) -> None:
    """z = x / sqrt 2 in float64, clamped to the range of the erf fit."""
    np.copyto(z, x)
    np.multiply(z, _SQRT1_2, out=z)
    _clip(z, -_ERF_CLAMP, _ERF_CLAMP, out=z)


# Section 9's elementwise math, as PyTorch computes it: NaN in gives NaN out,
# log(0) = -inf, log and sqrt of a negative number are NaN, exp and square
# overflow to inf (NumPy's floating-point warnings are silenced: these are
# values, not errors). clamp(x, lo, hi) = min(max(x, lo), hi), either bound
# None; lo > hi gives hi everywhere, as torch.clamp.

def neg(x: np.ndarray, out: np.ndarray) -> None:
    """-x."""
    np.negative(x, out=out)


def abs(x: np.ndarray, out: np.ndarray) -> None:  # noqa: A001 (the op's name)
    """|x|."""
    np.absolute(x, out=out)


def exp(x: np.ndarray, out: np.ndarray) -> None:
    """e^x (inf past float32's range)."""
    with np.errstate(over="ignore"):
        np.exp(x, out=out)


def log(x: np.ndarray, out: np.ndarray) -> None:
    """The natural logarithm: -inf at 0, NaN below."""
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log(x, out=out)


def sqrt(x: np.ndarray, out: np.ndarray) -> None:
    """The square root: NaN below 0."""
    with np.errstate(invalid="ignore"):
        np.sqrt(x, out=out)


def square(x: np.ndarray, out: np.ndarray) -> None:
    """x * x."""
    with np.errstate(over="ignore"):
        np.square(x, out=out)


def clamp(x: np.ndarray, out: np.ndarray, min: float | None = None, max: float | None = None) -> None:  # noqa: A002
    """min(max(x, min), max) with either bound None (absent); NaN stays NaN."""
    if min is not None:
        np.maximum(x, np.float32(min), out=out)     # np.maximum propagates NaN, as torch.clamp
        x = out
    if max is not None:
        np.minimum(x, np.float32(max), out=out)
    elif min is None:
        np.copyto(out, x)


@dataclass(frozen=True, slots=True)
class _Activation:
    kernel: Callable[..., None]
    temps: Callable[..., dict[str, Shape]] | None   # (shape, budget) -> scratch shapes for an array of this shape


def _one_temp(shape: Shape) -> dict[str, Shape]:
    return {"act_tmp": tuple(shape)}


_ACTIVATIONS: dict[str, _Activation] = {
    "relu": _Activation(relu, None),
    "relu6": _Activation(relu6, None),
    "sigmoid": _Activation(sigmoid, None),
    "tanh": _Activation(tanh, None),
    "hardsigmoid": _Activation(hardsigmoid, None),
    "hardswish": _Activation(hardswish, _one_temp_tile),
    "silu": _Activation(silu, _one_temp_tile),
    "leaky_relu": _Activation(leaky_relu, _one_temp_tile),
    "elu": _Activation(elu, _one_temp_tile),
    "selu": _Activation(selu, _one_temp_tile),
    "softplus": _Activation(softplus, _one_temp_tile),
    "gelu": _Activation(gelu, _gelu_tile),
    **{f.__name__: _Activation(f, None) for f in (neg, abs, exp, log, sqrt, square, clamp)},
}


def activation_scratch(act: Act, shape: Shape, budget: int | None = None) -> dict[str, Shape]:
    """Scratch of the activation `act` (None or `(name, *params)`) on an array
    of `shape`: temporaries for one piece of at most `ACT_TILE` elements per
    example, or as many as `budget` floats per example hold."""
    if act is None:
        return {}
    temps = _ACTIVATIONS[act[0]].temps
    return temps(tuple(shape), budget) if temps is not None else {}


def apply_activation(act: Act, arr: np.ndarray, scratch: Scratch | None = None) -> None:
    """Apply `act` (None or `(name, *params)`) to `arr` in place. `scratch`
    holds at least the views `activation_scratch(act, arr.shape)` names."""
    if act is None:
        return
    name, *params = act
    spec = _ACTIVATIONS[name]
    if spec.temps is None:
        spec.kernel(arr, arr, *params)
    else:
        spec.kernel(arr, arr, *params, scratch=scratch)


def prelu_scratch(shape: Shape) -> dict[str, Shape]:
    """Scratch of `prelu`: one temporary like its input."""
    return _one_temp(tuple(shape))


def prelu(x: np.ndarray, w: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """x where x >= 0, w * x elsewhere; `w` is [C] on axis 1 or [1]."""
    t = _tmp(scratch, x.shape)
    slope = w.reshape((-1,) + (1,) * (x.ndim - 2))
    _clip(x, -np.inf, 0.0, out=t)
    np.multiply(t, slope, out=t)
    _clip(x, 0.0, np.inf, out=out)
    np.add(out, t, out=out)


# ------------------------------------------------------------------ softmax

def _reduced(shape: Shape, axis: int) -> Shape:
    shape = list(shape)
    shape[axis] = 1
    return tuple(shape)


def softmax_scratch(shape: Shape, axis: int) -> dict[str, Shape]:
    """Scratch of `softmax`: `stat`, `shape` reduced along `axis`."""
    return {"stat": _reduced(shape, axis)}


def softmax(x: np.ndarray, axis: int, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """exp(x - max) / sum(exp(x - max)) along `axis` (batch is axis 0). `out` may be `x`."""
    stat = _provide(scratch, lambda: softmax_scratch(x.shape, axis))["stat"]
    np.maximum.reduce(x, axis=axis, keepdims=True, out=stat)
    np.subtract(x, stat, out=out)
    np.exp(out, out=out)
    np.add.reduce(out, axis=axis, keepdims=True, out=stat)
    np.divide(out, stat, out=out)


def log_softmax_scratch(shape: Shape, axis: int) -> dict[str, Shape]:
    """Scratch of `log_softmax`: `max` and `sum`, `shape` reduced along `axis`."""
    reduced = _reduced(shape, axis)
    return {"max": reduced, "sum": reduced}


def log_softmax(x: np.ndarray, axis: int, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """x - max - log(sum(exp(x - max))) along `axis`. `out` must not overlap `x`."""
    if np.may_share_memory(x, out):
        raise ValueError("log_softmax cannot run in place: it reads x after writing out")
    scratch = _provide(scratch, lambda: log_softmax_scratch(x.shape, axis))
    top, total = scratch["max"], scratch["sum"]
    np.maximum.reduce(x, axis=axis, keepdims=True, out=top)
    np.subtract(x, top, out=out)
    np.exp(out, out=out)
    np.add.reduce(out, axis=axis, keepdims=True, out=total)
    np.log(total, out=total)
    np.subtract(x, top, out=out)
    np.subtract(out, total, out=out)


# ------------------------------------------------------------------ backward
# Training. Each activation's backward multiplies dy by the derivative f'(x),
# formed in scratch from the input x or, where that is exact, the output y
# (`activation_backward_reads` says which: the generator saves only that
# one). The forms follow PyTorch's backward kernels, including the value at
# the kinks (relu'(0) = 0, leaky_relu'(0) = slope, elu'(0) = alpha,
# hardsigmoid'(+-3) = 0, hardswish'(-3) = 0, hardswish'(3) = 1), and are
# NaN-safe: no exp can overflow and no inf meets a 0 (steps are
# comparisons written as 0.0 or 1.0 by np.greater into the float scratch,
# much faster than np.heaviside; never a product with a mask of an
# overflowed branch). `dx`
# may be `dy` (in place) in every backward kernel of this section.

def _d_relu(v, t, u):
    np.greater(v, 0, out=t)                                   # y > 0


def _d_relu6(v, t, u):
    np.subtract(6.0, v, out=t)                                    # 0 < y < 6  <=>  y * (6 - y) > 0
    np.multiply(t, v, out=t)
    np.greater(t, 0, out=t)


def _d_sigmoid(v, t, u):
    np.subtract(1.0, v, out=t)                                    # y * (1 - y)
    np.multiply(t, v, out=t)


def _d_tanh(v, t, u):
    np.multiply(v, v, out=t)                                      # 1 - y^2
    np.subtract(1.0, t, out=t)


def _d_hardsigmoid(v, t, u):
    np.multiply(v, v, out=t)                                      # 1/6 where -3 < x < 3
    np.subtract(9.0, t, out=t)
    np.greater(t, 0, out=t)
    np.divide(t, 6.0, out=t)


def _d_hardswish(v, t, u):
    np.multiply(v, v, out=t)                                      # x/3 + 1/2 where -3 < x < 3, 1 from 3 on
    np.subtract(9.0, t, out=t)
    np.greater(t, 0, out=t)
    np.divide(v, 3.0, out=u)
    np.add(u, 0.5, out=u)
    np.multiply(t, u, out=t)
    np.subtract(v, 3.0, out=u)
    np.heaviside(u, 1.0, out=u)
    np.add(t, u, out=t)


def _d_leaky_relu(v, t, u, slope=0.01):
    np.greater(v, 0, out=t)                                   # 1 where x > 0, slope elsewhere
    np.multiply(t, 1.0 - slope, out=t)
    np.add(t, slope, out=t)


def _d_elu(v, t, u, alpha=1.0, scale=1.0):
    _clip(v, -np.inf, 0.0, out=t)                               # alpha * exp(x) where x <= 0, 1 above
    np.exp(t, out=t)
    np.multiply(t, alpha * scale, out=t)
    np.greater(v, 0, out=u)
    np.multiply(u, scale - alpha * scale, out=u)
    np.add(t, u, out=t)


def _d_selu(v, t, u):
    _d_elu(v, t, u, _SELU_ALPHA, _SELU_SCALE)


def _d_softplus(v, t, u):
    _sigmoid_into(v, t)                                           # sigmoid(x), 1 above the threshold
    np.subtract(v, _SOFTPLUS_THRESHOLD, out=u)
    np.greater(u, 0, out=u)
    np.fmax(t, u, out=t)                                          # s <= 1: the step lifts it to 1


def _d_silu(v, t, u):
    _sigmoid_into(v, t)                                           # s * (1 + x * (1 - s))
    np.subtract(1.0, t, out=u)
    np.multiply(u, v, out=u)
    np.add(u, 1.0, out=u)
    np.multiply(t, u, out=t)


def _d_neg(v, t, u):
    t.fill(-1.0)                                                  # -1


def _d_abs(v, t, u):
    np.sign(v, out=t)                                             # sign(x): 0 at 0, NaN at NaN


def _d_exp(v, t, u):
    np.copyto(t, v)                                               # y


def _d_log(v, t, u):
    with np.errstate(divide="ignore"):
        np.reciprocal(v, out=t)                                   # 1 / x


def _d_sqrt(v, t, u):
    with np.errstate(divide="ignore"):
        np.multiply(v, 2.0, out=t)                                # 1 / (2 y): inf at 0, as torch
        np.reciprocal(t, out=t)


def _d_square(v, t, u):
    np.multiply(v, 2.0, out=t)                                    # 2 x


def _d_clamp(v, t, u, lo=None, hi=None):
    # 1 where lo <= x <= hi (bounds inclusive, as torch's clamp_backward), else 0; NaN x: 0
    if lo is None and hi is None:
        t.fill(1.0)
        return
    if lo is not None:
        np.greater_equal(v, lo, out=t)
    if hi is not None:
        if lo is None:
            np.less_equal(v, hi, out=t)
        else:
            np.less_equal(v, hi, out=u)
            np.multiply(t, u, out=t)


@dataclass(frozen=True, slots=True)
class _Grad:
    reads: str                     # "x": the input, "y": the output
    temps: int                     # temporaries like x: 1 (act_tmp) or 2 (act_tmp, act_tmp2); 0: gelu's float64
    factor: Callable[..., None] | None


_GRADS: dict[str, _Grad] = {
    "relu": _Grad("y", 1, _d_relu),
    "relu6": _Grad("y", 1, _d_relu6),
    "sigmoid": _Grad("y", 1, _d_sigmoid),
    "tanh": _Grad("y", 1, _d_tanh),
    "hardsigmoid": _Grad("x", 1, _d_hardsigmoid),
    "hardswish": _Grad("x", 2, _d_hardswish),
    "leaky_relu": _Grad("x", 1, _d_leaky_relu),
    "elu": _Grad("x", 2, _d_elu),
    "selu": _Grad("x", 2, _d_selu),
    "softplus": _Grad("x", 2, _d_softplus),
    "silu": _Grad("x", 2, _d_silu),
    "gelu": _Grad("x", 0, None),
    "neg": _Grad("y", 1, _d_neg),
    "abs": _Grad("x", 1, _d_abs),
    "exp": _Grad("y", 1, _d_exp),
    "log": _Grad("x", 1, _d_log),
    "sqrt": _Grad("y", 1, _d_sqrt),
    "square": _Grad("x", 1, _d_square),
    "clamp": _Grad("x", 2, _d_clamp),
}


def activation_backward_reads(name: str) -> str:
    """What the backward of activation `name` reads: "x" (its input) or "y" (its output)."""
    return _GRADS[name].reads


_ACT_BLOCK = 1 << 14     # elements per block of an activation's backward: its temporaries stay in cache


def activation_backward_scratch(act: Act, shape: Shape) -> dict[str, Shape]:
    """Scratch of `activation_backward`: one or two temporaries of one block
    (`act_tmp`, `act_tmp2`: at most `_ACT_BLOCK` elements, whatever the
    array's size), or gelu's float64 buffer (`act_f64`)."""
    grad = _GRADS[act[0]]
    if grad.temps == 0:
        return _gelu_shapes(tuple(shape))
    block = (min(math.prod(shape), _ACT_BLOCK),)
    return {"act_tmp": block} | ({"act_tmp2": block} if grad.temps == 2 else {})


def activation_backward(act: Act, x: np.ndarray | None, y: np.ndarray | None, dy: np.ndarray, *,
                        dx: np.ndarray, scratch: Scratch | None = None) -> None:
    """dx = dy * f'(x) for the activation `act` = (name, *params); `x` is its
    input and `y` its output (only the one `activation_backward_reads` names
    is read; the other may be None). Runs block by block over the flattened
    arrays (any of them non-contiguous: one block of fresh temporaries)."""
    name, *params = act
    grad = _GRADS[name]
    src = y if grad.reads == "y" else x
    if src is None:
        raise ValueError(f"the backward of {name} reads its {'output' if grad.reads == 'y' else 'input'}")
    if grad.temps == 0:
        _gelu_backward(src, dy, dx, scratch)
        return
    if not (src.flags.c_contiguous and dy.flags.c_contiguous and dx.flags.c_contiguous):
        t = np.empty_like(src)
        grad.factor(src, t, np.empty_like(src) if grad.temps == 2 else None, *params)
        np.multiply(dy, t, out=dx)
        return
    scratch = _provide_as(scratch, lambda: activation_backward_scratch(act, src.shape), src.dtype)
    tmp, tmp2 = scratch["act_tmp"].reshape(-1), scratch.get("act_tmp2")
    tmp2 = None if tmp2 is None else tmp2.reshape(-1)
    v, g, d = src.reshape(-1), dy.reshape(-1), dx.reshape(-1)
    size, block = v.size, tmp.size
    for i in range(0, size, block):
        j = min(size, i + block)
        t = tmp[:j - i]
        grad.factor(v[i:j], t, None if tmp2 is None else tmp2[:j - i], *params)
        np.multiply(g[i:j], t, out=d[i:j])


# One-byte masks (Gist, Jain et al. 2018): the piecewise-linear activations'
# derivatives take two values, 1 and c (0, or leaky_relu's slope), so their
# backward needs one byte per element of where the input was, not the
# float32 input or output. The training forward writes the mask from the
# input (before an in-place activation overwrites it): True where f'(x) = 1,
# relu and leaky_relu: x > 0; relu6: 0 < x < 6; clamp: lo <= x <= hi
# (inclusive, as torch's clamp_backward). So NaN inputs get c, as in the
# float forms above, and PyTorch's values at the kinks hold. The backward
# forms the factor block by block in float scratch (a cast from bool: no
# ufunc buffers; `where=` with a random mask is twenty times slower) and
# multiplies. `mask` is bool or uint8 (viewed as bool), shaped like x.

MASKED = frozenset({"relu", "relu6", "leaky_relu", "clamp"})


def _as_bool(mask: np.ndarray) -> np.ndarray:
    return mask if mask.dtype == np.bool_ else mask.view(np.bool_)


_PIECE = 8192


def _and_compare(compare, x: np.ndarray, bound: float, m: np.ndarray) -> None:
    """m &= compare(x, bound) in place, in pieces of the flattened arrays: a
    masked ufunc (`where=m`) takes a temporary as large as its operands."""
    if not (x.flags.c_contiguous and m.flags.c_contiguous):
        compare(x, bound, where=m, out=m)
        return
    xf, mf = x.reshape(-1), m.reshape(-1)
    for i in range(0, xf.size, _PIECE):
        compare(xf[i:i + _PIECE], bound, where=mf[i:i + _PIECE], out=mf[i:i + _PIECE])


def activation_mask(act: Act, x: np.ndarray, mask: np.ndarray) -> None:
    """The one-byte mask of `act` = (name, *params) at its input `x`, into
    `mask` (bool or uint8, like x): True where the derivative is 1."""
    name, *params = act
    m = _as_bool(mask)
    if name in ("relu", "leaky_relu"):
        np.greater(x, 0, out=m)
    elif name == "relu6":
        np.greater(x, 0, out=m)
        _and_compare(np.less, x, 6.0, m)
    elif name == "clamp":
        lo, hi = params
        m.fill(True)
        if lo is not None:
            np.greater_equal(x, lo, out=m)
        if hi is not None:
            _and_compare(np.less_equal, x, hi, m)
    else:
        raise ValueError(f"{name} has no one-byte mask: its derivative is not piecewise constant")


def activation_backward_masked_scratch(act: Act, shape: Shape) -> dict[str, Shape]:
    """Scratch of `activation_backward_masked`: `act_tmp`, one block (at most `_ACT_BLOCK` elements)."""
    return {"act_tmp": (min(math.prod(shape), _ACT_BLOCK),)}


def activation_backward_masked(act: Act, mask: np.ndarray, dy: np.ndarray, *, dx: np.ndarray,
                               scratch: Scratch | None = None) -> None:
    """dx = dy * f'(x) from the mask `activation_mask` wrote, block by block
    (example by example where dy or dx is strided: a concat's channel slice);
    `dx` may be `dy`."""
    name, *params = act
    tmp = _provide_as(scratch, lambda: activation_backward_masked_scratch(act, dy.shape), dy.dtype)["act_tmp"]
    if not (dy.flags.c_contiguous and dx.flags.c_contiguous and mask.flags.c_contiguous):
        for b in range(dy.shape[0]):
            activation_backward_masked(act, mask[b], dy[b], dx=dx[b], scratch={"act_tmp": tmp})
        return
    tmp = tmp.reshape(-1)
    m, g, d = _as_bool(mask).reshape(-1), dy.reshape(-1), dx.reshape(-1)
    for i in range(0, g.size, tmp.size):
        j = min(g.size, i + tmp.size)
        t = tmp[:j - i]
        np.copyto(t, m[i:j])
        if name == "leaky_relu":
            slope = params[0]
            np.multiply(t, 1.0 - slope, out=t)
            np.add(t, slope, out=t)
        np.multiply(g[i:j], t, out=d[i:j])


def _gelu_backward(x: np.ndarray, dy: np.ndarray, dx: np.ndarray, scratch: Scratch | None) -> None:
    """dx = dy * (Phi(x) + x * phi(x)), in float64 temporaries as the forward."""
    buf = _provide(scratch, lambda: _gelu_shapes(x.shape))["act_f64"]
    z, num, den = _view(buf, (buf.size,)).view(np.float64).reshape((3,) + x.shape)
    _clamped_z(x, z)
    np.square(z, out=z)
    _erf_over_z(z, num, den)
    _clamped_z(x, z)
    np.multiply(num, z, out=num)                 # erf(x / sqrt 2)
    np.add(num, 1.0, out=num)
    np.multiply(num, 0.5, out=num)               # Phi(x)
    np.copyto(den, x)
    np.multiply(den, den, out=z)
    np.multiply(z, -0.5, out=z)
    np.exp(z, out=z)
    np.multiply(z, _INV_SQRT_2PI, out=z)         # phi(x)
    np.multiply(z, den, out=z)
    np.add(num, z, out=num)
    np.copyto(den, dy)
    np.multiply(num, den, out=num)
    np.copyto(dx, num)


_INV_SQRT_2PI = 0.3989422804014327


def prelu_backward_scratch(shape: Shape) -> dict[str, Shape]:
    """Scratch of `prelu_backward`: one temporary like its input."""
    return _one_temp(tuple(shape))


def prelu_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, *, dx: np.ndarray | None,
                   dw: np.ndarray | None, scratch: Scratch | None = None) -> None:
    """Gradients of `prelu` as PyTorch's: dx = dy where x > 0, w * dy
    elsewhere; dw = the sum of dy * x where x <= 0, per channel (axis 1) or
    over everything when `w` is shared ([1])."""
    t = _provide_as(scratch, lambda: prelu_backward_scratch(x.shape), x.dtype)["act_tmp"]
    bsz = x.shape[0]
    if dw is not None:
        _clip(x, -np.inf, 0.0, out=t)
        if w.size == 1:
            dw[0] = np.vecdot(t.reshape(bsz, -1), dy.reshape(bsz, -1)).sum()
        else:
            c = x.shape[1]
            np.add.reduce(np.vecdot(t.reshape(bsz, c, -1), dy.reshape(bsz, c, -1)), axis=0, out=dw)
    if dx is not None:
        slope = w.reshape((-1,) + (1,) * (x.ndim - 2))
        np.heaviside(x, 0.0, out=t)
        np.multiply(t, 1.0 - slope, out=t)
        np.add(t, slope, out=t)
        np.multiply(dy, t, out=dx)


def softmax_backward_scratch(shape: Shape, axis: int) -> dict[str, Shape]:
    """Scratch of `softmax_backward`: `stat`, `shape` reduced along `axis`."""
    return {"stat": _reduced(shape, axis)}


def softmax_backward(y: np.ndarray, dy: np.ndarray, *, axis: int, dx: np.ndarray,
                     scratch: Scratch | None = None) -> None:
    """dx = y * (dy - sum(dy * y)) along `axis` (batch is axis 0), from the output y."""
    stat = _provide_as(scratch, lambda: softmax_backward_scratch(y.shape, axis), y.dtype)["stat"]
    np.vecdot(dy, y, axis=axis, out=np.squeeze(stat, axis))
    np.subtract(dy, stat, out=dx)
    np.multiply(dx, y, out=dx)


def log_softmax_backward_scratch(shape: Shape, axis: int) -> dict[str, Shape]:
    """Scratch of `log_softmax_backward`: `stat` (reduced along `axis`) and `exp` (like the array)."""
    return {"stat": _reduced(shape, axis), "exp": tuple(shape)}


def log_softmax_backward(y: np.ndarray, dy: np.ndarray, *, axis: int, dx: np.ndarray,
                         scratch: Scratch | None = None) -> None:
    """dx = dy - exp(y) * sum(dy) along `axis`, from the output y."""
    scratch = _provide_as(scratch, lambda: log_softmax_backward_scratch(y.shape, axis), y.dtype)
    stat, e = scratch["stat"], scratch["exp"]
    np.add.reduce(dy, axis=axis, keepdims=True, out=stat)
    np.exp(y, out=e)
    np.multiply(e, stat, out=e)
    np.subtract(dy, e, out=dx)


def dropout_train(x: np.ndarray, *, p: float, rng: np.random.Generator, out: np.ndarray, mask: np.ndarray) -> None:
    """Training dropout: `mask` (contiguous, like x) = 1/(1-p) where a uniform
    draw `rng.random` is >= p (probability 1 - p), else 0; `out` = x * mask.
    p = 0 keeps everything and draws nothing; p = 1 drops everything."""
    if p <= 0.0:
        mask.fill(1.0)
    elif p >= 1.0:
        mask.fill(0.0)
    else:
        rng.random(dtype=mask.dtype, out=mask)
        np.subtract(mask, p, out=mask)
        np.heaviside(mask, 1.0, out=mask)
        np.multiply(mask, 1.0 / (1.0 - p), out=mask)
    np.multiply(x, mask, out=out)


def dropout_backward(dy: np.ndarray, mask: np.ndarray, *, dx: np.ndarray) -> None:
    """dx = dy * mask (the mask of `dropout_train`)."""
    np.multiply(dy, mask, out=dx)
