"""Elementwise and per-position kernels: the activations, prelu, softmax and
log_softmax, and the fused-activation helpers the other kernels call
(the calling conventions are in `kernels.py`).

In:  x and `out` of the same shape (`out` may be `x`, except for
     log_softmax); activation parameters; `scratch` as named by
     `activation_scratch`, `prelu_scratch`, `softmax_scratch` and
     `log_softmax_scratch`.
Out: f(x) in `out`. `activation_scratch(act, shape)` and
     `apply_activation(act, arr, scratch)` run a fused activation, None or
     `(name, *params)`, in place after conv, dense and add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ._common import Act, Scratch, Shape, _per_example, _provide, _view


# ------------------------------------------------------------------ activations
# Each kernel writes f(x) into `out`, which may be `x` itself. Those whose
# formula needs the input after `out` is written take temporaries from
# `scratch` (named by `activation_scratch`). Bounds against a scalar use
# np.clip: np.maximum/np.minimum with a scalar operand miss NumPy's SIMD loops
# and run about four times slower.

_EXP_MAX = 88.0                          # exp(88) is finite in float32; sigmoid(-88) is 6e-39 already
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


def _sigmoid_into(x: np.ndarray, out: np.ndarray) -> None:
    np.negative(x, out=out)
    np.clip(out, -np.inf, _EXP_MAX, out=out)
    np.exp(out, out=out)
    np.add(out, 1.0, out=out)
    np.reciprocal(out, out=out)


def relu(x: np.ndarray, out: np.ndarray) -> None:
    """max(x, 0)."""
    np.clip(x, 0.0, np.inf, out=out)


def relu6(x: np.ndarray, out: np.ndarray) -> None:
    """min(max(x, 0), 6)."""
    np.clip(x, 0.0, 6.0, out=out)


def sigmoid(x: np.ndarray, out: np.ndarray) -> None:
    """1 / (1 + exp(-x))."""
    _sigmoid_into(x, out)


def tanh(x: np.ndarray, out: np.ndarray) -> None:
    np.tanh(x, out=out)


def hardsigmoid(x: np.ndarray, out: np.ndarray) -> None:
    """relu6(x + 3) / 6."""
    np.add(x, 3.0, out=out)
    np.clip(out, 0.0, 6.0, out=out)
    np.divide(out, 6.0, out=out)


def hardswish(x: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """x * relu6(x + 3) / 6."""
    t = _tmp(scratch, x.shape)
    np.add(x, 3.0, out=t)
    np.clip(t, 0.0, 6.0, out=t)
    np.multiply(x, t, out=out)
    np.divide(out, 6.0, out=out)


def silu(x: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """x * sigmoid(x)."""
    t = _tmp(scratch, x.shape)
    _sigmoid_into(x, t)
    np.multiply(x, t, out=out)


def leaky_relu(x: np.ndarray, out: np.ndarray, slope: float = 0.01, *, scratch: Scratch | None = None) -> None:
    """x where x > 0, slope * x elsewhere."""
    t = _tmp(scratch, x.shape)
    np.clip(x, -np.inf, 0.0, out=t)
    np.multiply(t, slope, out=t)
    np.clip(x, 0.0, np.inf, out=out)
    np.add(out, t, out=out)


def elu(x: np.ndarray, out: np.ndarray, alpha: float = 1.0, *, scratch: Scratch | None = None) -> None:
    """x where x > 0, alpha * (exp(x) - 1) elsewhere."""
    t = _tmp(scratch, x.shape)
    np.clip(x, -np.inf, 0.0, out=t)
    np.expm1(t, out=t)
    np.multiply(t, alpha, out=t)
    np.clip(x, 0.0, np.inf, out=out)
    np.add(out, t, out=out)


def selu(x: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """scale * elu(x, alpha) with PyTorch's constants."""
    elu(x, out, _SELU_ALPHA, scratch=scratch)
    np.multiply(out, _SELU_SCALE, out=out)


def softplus(x: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """log(1 + exp(x)), and x itself above 20 (torch's beta=1, threshold=20).
    Below the threshold log1p(exp(x)) > x, so the maximum picks the branch."""
    t = _tmp(scratch, x.shape)
    np.clip(x, -np.inf, _SOFTPLUS_THRESHOLD, out=t)
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


def gelu(x: np.ndarray, out: np.ndarray, *, scratch: Scratch | None = None) -> None:
    """x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2)), torch's exact (default) form.
    Computed in float64 temporaries and rounded once into `out`; the casts are
    plain copies, since mixing dtypes inside a ufunc would allocate its buffers."""
    buf = _provide(scratch, lambda: _gelu_shapes(x.shape))["act_f64"]
    z, num, den = _view(buf, (buf.size,)).view(np.float64).reshape((3,) + x.shape)
    _clamped_z(x, z)
    np.square(z, out=z)
    _erf_over_z(z, num, den)
    _clamped_z(x, z)
    np.multiply(num, z, out=num)                 # erf(z)
    np.add(num, 1.0, out=num)
    np.multiply(num, 0.5, out=num)               # Phi(x)
    np.copyto(den, x)
    np.multiply(num, den, out=num)
    np.copyto(out, num)


def _clamped_z(x: np.ndarray, z: np.ndarray) -> None:
    """z = x / sqrt 2 in float64, clamped to the range of the erf fit."""
    np.copyto(z, x)
    np.multiply(z, _SQRT1_2, out=z)
    np.clip(z, -_ERF_CLAMP, _ERF_CLAMP, out=z)


@dataclass(frozen=True, slots=True)
class _Activation:
    kernel: Callable[..., None]
    temps: Callable[[Shape], dict[str, Shape]] | None   # scratch shapes for an array of this shape


def _one_temp(shape: Shape) -> dict[str, Shape]:
    return {"act_tmp": tuple(shape)}


_ACTIVATIONS: dict[str, _Activation] = {
    "relu": _Activation(relu, None),
    "relu6": _Activation(relu6, None),
    "sigmoid": _Activation(sigmoid, None),
    "tanh": _Activation(tanh, None),
    "hardsigmoid": _Activation(hardsigmoid, None),
    "hardswish": _Activation(hardswish, _one_temp),
    "silu": _Activation(silu, _one_temp),
    "leaky_relu": _Activation(leaky_relu, _one_temp),
    "elu": _Activation(elu, _one_temp),
    "selu": _Activation(selu, _one_temp),
    "softplus": _Activation(softplus, _one_temp),
    "gelu": _Activation(gelu, _gelu_shapes),
}


def activation_scratch(act: Act, shape: Shape) -> dict[str, Shape]:
    """Scratch of the activation `act` (None or `(name, *params)`) on an array of `shape`."""
    if act is None:
        return {}
    temps = _ACTIVATIONS[act[0]].temps
    return temps(tuple(shape)) if temps is not None else {}


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
    np.clip(x, -np.inf, 0.0, out=t)
    np.multiply(t, slope, out=t)
    np.clip(x, 0.0, np.inf, out=out)
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
