"""The NumPy kernels that generated modules call: preplanned views in, results
written into `out`, nothing large allocated.

In:  float32 C-contiguous arrays, batch first (`[B, C, H, W]`, `[B, C, T]`,
     `[B, T, F]`, `[B, F]`), all views of the model's one arena; parameters
     in PyTorch's layout; and, for kernels that need temporaries, a `scratch`
     dict of arena views named and shaped by the kernel's scratch function.
Out: the result, written into `out` with PyTorch's semantics (the tests pin
     every kernel to `torch.nn.functional`). `out` may also be a channel slice
     of a concat's buffer (contiguous per example, strided across the batch):
     conv, dense, pooling, activations and merges accept that.

Scratch. A kernel that needs temporaries has a pure function of shapes that
names them: `NAME_scratch(...) -> {name: shape}`. Shapes count the batch as
their first axis and scale linearly with it, so a plan made for one example
holds at batch B. The kernel takes `scratch=` with views of exactly those
shapes, whose contents it never reads before writing; `scratch=None`
allocates them instead (for tests and one-off calls, not for planned code).

    kernel                                          scratch function
    ----------------------------------------------  ---------------------------------------------
    conv2d(x, w, b, out, *, stride, padding,        conv2d_scratch(in_shape, w_shape, *, stride,
           dilation, groups, act, scratch)              padding, dilation, groups, act=None)
    conv1d(same, 1-D arguments)                     conv1d_scratch(same, 1-D arguments)
    dense(x, w, b, out, *, act, scratch)            dense_scratch(in_shape, w_shape, *, act=None)
    maxpool2d(x, out, *, kernel, stride, padding,   maxpool2d_scratch(in_shape, *, kernel, stride,
              scratch), avgpool2d(same)                 padding), avgpool2d_scratch(same)
    maxpool1d, avgpool1d(same, 1-D arguments)       maxpool1d_scratch, avgpool1d_scratch(same,
                                                        1-D arguments)
    global_avgpool(x, out)                          none
    batchnorm(x, mean, var, gamma, beta, eps, out)  none
    layernorm(x, gamma, beta, eps, out, *, scratch) layernorm_scratch(shape)
    prelu(x, w, out, *, scratch)                    prelu_scratch(shape)
    relu, relu6, sigmoid, tanh, hardsigmoid(x, out) none
    silu, selu, softplus, hardswish, gelu           activation_scratch((name, *params), shape)
      (x, out, *, scratch),
      leaky_relu(x, out, slope, *, scratch),
      elu(x, out, alpha, *, scratch)
    softmax(x, axis, out, *, scratch)               softmax_scratch(shape, axis)
    log_softmax(x, axis, out, *, scratch)           log_softmax_scratch(shape, axis)
    add(inputs, out, *, act, scratch)               add_scratch(shape, *, act=None)
    sub(a, b, out), mul(inputs, out)                none
    concat(inputs, axis, out), transpose(x, perm,   none
      out), upsample(x, scale, out), copy(x, out)

Arguments. `stride` and `dilation` are `(sh, sw)` (an int for 1-D kernels);
`padding` is explicit, `((top, bottom), (left, right))` or `(left, right)`
for 1-D (the compiler resolves `same`, `valid` and `causal`). `act` is a
fused activation, None or `(name, *params)` such as `("leaky_relu", 0.01)`;
`apply_activation` runs it in place. `axis` counts the batch as axis 0,
except in `concat` and `transpose`, whose axes and permutation leave it out.

Methods. Convolutions take one of three paths. A 1x1 stride-1 unpadded
convolution is one matmul on the input itself. A depthwise convolution
(groups == C_in > 1) is a multiply and an add per kernel tap over whole
arrays, reading each tap as one contiguous run per channel (see "windows as
contiguous runs"); pooling reads its windows the same way. Every other
convolution pads into scratch, copies its im2col columns into scratch
through an `as_strided` view, and runs one BLAS matmul per example and group.
Python loops run over taps, stride phases, groups or inputs, never over
pixels or channels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

Shape = tuple[int, ...]
Scratch = Mapping[str, np.ndarray]
Act = tuple | None                       # None or (name, *params)
Pads2d = tuple[tuple[int, int], tuple[int, int]]


# ------------------------------------------------------------------ helpers

def _view(a: np.ndarray, shape: Shape) -> np.ndarray:
    """`a` reshaped without copying (raises if only a copy could do it)."""
    return a.reshape(shape, copy=False)


def _provide(scratch: Scratch | None, shapes: Callable[[], Mapping[str, Shape]]) -> Scratch:
    """The caller's planned views, or fresh arrays when it planned none."""
    if scratch is not None:
        return scratch
    return {name: np.empty(shape, dtype=np.float32) for name, shape in shapes().items()}


def _per_example(shape: Shape) -> int:
    return math.prod(shape[1:])


def _window_out(size: int, kernel: int, stride: int, dilation: int, lo: int, hi: int) -> int:
    """Output length of a sliding window, as PyTorch computes it (floor mode)."""
    return (size + lo + hi - dilation * (kernel - 1) - 1) // stride + 1


def _padded_shape(in_shape: Shape, pads: Pads2d) -> Shape | None:
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return None
    b, c, h, w = in_shape
    return (b, c, h + top + bottom, w + left + right)


def _fill_frame(grid: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], fill: float) -> None:
    """Set everything of [B, C, H, W] `grid` outside the rectangle `rows` x `cols` to `fill`."""
    (r0, r1), (c0, c1) = rows, cols
    grid[:, :, :r0].fill(fill)
    grid[:, :, r1:].fill(fill)
    grid[:, :, r0:r1, :c0].fill(fill)
    grid[:, :, r0:r1, c1:].fill(fill)


def _pad_into(x: np.ndarray, buf: np.ndarray, pads: Pads2d, fill: float) -> np.ndarray:
    """`x` written into the middle of `buf` with its border set to `fill`."""
    (top, _), (left, _) = pads
    h, w = x.shape[2:]
    _fill_frame(buf, (top, top + h), (left, left + w), fill)
    np.copyto(buf[:, :, top:top + h, left:left + w], x)
    return buf


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pads2d(padding: Sequence[Sequence[int]]) -> Pads2d:
    (top, bottom), (left, right) = padding
    return ((int(top), int(bottom)), (int(left), int(right)))


def _alias_first(inputs: Sequence[np.ndarray], out: np.ndarray) -> list[np.ndarray]:
    """Inputs of a commutative merge, the one `out` overwrites (if any) first,
    so that it is read before it is written."""
    ordered = list(inputs)
    for k, a in enumerate(ordered):
        if np.shares_memory(a, out):
            ordered.insert(0, ordered.pop(k))
            break
    return ordered


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


# ------------------------------------------------------------------ windows as contiguous runs
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


def _split_phases(x: np.ndarray, phases: np.ndarray, tp: _TapPlan, fill: float) -> None:
    """Write `x` [B, C, H, W], padded with `fill`, into `phases` [B, C, n, plane]."""
    bsz, c, h, w = x.shape
    (sh, sw), ((top, _), (left, _)), hq, wq = tp.stride, tp.pads, tp.hq, tp.wq
    for k, (p, q) in enumerate(tp.phases):
        plane = phases[:, :, k]
        plane[:, :, hq * wq:].fill(fill)
        grid = _view(plane[:, :, :hq * wq], (bsz, c, hq, wq))
        u0, u1 = _phase_span(p, sh, top, h, hq)
        v0, v1 = _phase_span(q, sw, left, w, wq)
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


# ------------------------------------------------------------------ convolution

class _ConvPath(Enum):
    DEPTHWISE = "depthwise"     # groups == C_in > 1: a multiply-add per kernel tap
    POINTWISE = "pointwise"     # 1x1, stride 1, unpadded: a matmul on the input itself
    IM2COL = "im2col"           # the rest: columns in scratch, one matmul per example and group


@dataclass(frozen=True, slots=True)
class _ConvPlan:
    path: _ConvPath
    out_shape: Shape                       # [B, C_out, OH, OW]
    buffers: tuple[tuple[str, Shape], ...]  # the path's scratch: (name, shape)
    padded: bool                           # im2col reads a zero-padded copy of the input
    taps: _TapPlan | None                  # the depthwise path's

    def scratch(self, act: Act) -> dict[str, Shape]:
        return dict(self.buffers) | activation_scratch(act, self.out_shape)


@functools.lru_cache(maxsize=4096)
def _conv_plan(in_shape: Shape, w_shape: Shape, stride: tuple[int, int], pads: Pads2d,
               dilation: tuple[int, int], groups: int) -> _ConvPlan:
    b, c_in, h, w = in_shape
    c_out, cg_in, kh, kw = w_shape
    if c_in != cg_in * groups or c_out % groups:
        raise ValueError(f"weight {list(w_shape)} with groups={groups} does not fit input {list(in_shape)}")
    oh = _window_out(h, kh, stride[0], dilation[0], *pads[0])
    ow = _window_out(w, kw, stride[1], dilation[1], *pads[1])
    out_shape = (b, c_out, oh, ow)
    if groups > 1 and groups == c_in:
        tp = _tap_plan((h, w), (kh, kw), stride, dilation, pads)
        scratch = [("phases", tp.phases_shape(b, c_in)), ("wide", tp.wide_shape(b, c_out))]
        if kh * kw > 1:
            scratch.append(("products", tp.wide_shape(b, c_out)))
        return _ConvPlan(_ConvPath.DEPTHWISE, out_shape, tuple(scratch), False, tp)
    padded = _padded_shape(in_shape, pads)
    if kh == kw == 1 and stride == (1, 1) and padded is None:
        return _ConvPlan(_ConvPath.POINTWISE, out_shape, (), False, None)
    scratch = [] if padded is None else [("padded", padded)]
    scratch.append(("cols", (b, groups, cg_in * kh * kw, oh * ow)))
    return _ConvPlan(_ConvPath.IM2COL, out_shape, tuple(scratch), padded is not None, None)


def conv2d_scratch(in_shape: Shape, w_shape: Shape, *, stride: tuple[int, int], padding: Pads2d,
                   dilation: tuple[int, int], groups: int, act: Act = None) -> dict[str, Shape]:
    """Scratch of `conv2d`, by path: im2col needs `cols` (and `padded` when
    padded); depthwise needs `phases`, `wide` (and `products` beyond one tap);
    a 1x1 stride-1 unpadded convolution needs none. Plus the fused activation's."""
    plan = _conv_plan(tuple(in_shape), tuple(w_shape), _pair(stride), _pads2d(padding), _pair(dilation), groups)
    return plan.scratch(act)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *,
           stride: tuple[int, int], padding: Pads2d, dilation: tuple[int, int], groups: int,
           act: Act = None, scratch: Scratch | None = None) -> None:
    """PyTorch's conv2d of `x` [B, C_in, H, W] with `w` [C_out, C_in/groups, kh, kw]
    and bias `b` [C_out] (or None), then `act`, into `out` [B, C_out, OH, OW]."""
    stride, pads, dilation = _pair(stride), _pads2d(padding), _pair(dilation)
    plan = _conv_plan(x.shape, w.shape, stride, pads, dilation, groups)
    scratch = _provide(scratch, lambda: plan.scratch(act))
    if plan.path is _ConvPath.DEPTHWISE:
        _depthwise(x, w, b, out, plan.taps, scratch)      # adds the bias while dropping the wide columns
    else:
        if plan.path is _ConvPath.POINTWISE:
            _pointwise(x, w, out, groups)
        else:
            src = _pad_into(x, scratch["padded"], pads, 0.0) if plan.padded else x
            _im2col_matmul(src, w, out, stride, dilation, groups, scratch["cols"])
        if b is not None:
            np.add(out, b[:, None, None], out=out)
    apply_activation(act, out, scratch)


def _pointwise(x: np.ndarray, w: np.ndarray, out: np.ndarray, groups: int) -> None:
    bsz, c_in, h, wd = x.shape
    c_out = w.shape[0]
    w3 = _view(w, (groups, c_out // groups, c_in // groups))
    np.matmul(w3, _view(x, (bsz, groups, c_in // groups, h * wd)),
              out=_view(out, (bsz, groups, c_out // groups, h * wd)))


def _im2col_matmul(src: np.ndarray, w: np.ndarray, out: np.ndarray, stride: tuple[int, int],
                   dilation: tuple[int, int], groups: int, cols: np.ndarray) -> None:
    bsz, c_in = src.shape[:2]
    c_out, cg_in, kh, kw = w.shape
    oh, ow = out.shape[2:]
    s0, s1, s2, s3 = src.strides
    windows = as_strided(src, shape=(bsz, groups, cg_in, kh, kw, oh, ow),
                         strides=(s0, cg_in * s1, s1, dilation[0] * s2, dilation[1] * s3,
                                  stride[0] * s2, stride[1] * s3), writeable=False)
    np.copyto(_view(cols, windows.shape), windows)
    np.matmul(_view(w, (groups, c_out // groups, cg_in * kh * kw)), cols,
              out=_view(out, (bsz, groups, c_out // groups, oh * ow)))


def _depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, tp: _TapPlan,
               scratch: Scratch) -> None:
    """Output channel o reads input channel o // multiplier: the wide result is
    viewed as [B, C_in, multiplier, OH * wq], and each tap is one broadcast
    multiply (into `products`) and one add."""
    bsz, c_in = x.shape[:2]
    c_out, _, kh, kw = w.shape
    mult = c_out // c_in
    phases = scratch["phases"]
    _split_phases(x, phases, tp, 0.0)
    acc = _view(scratch["wide"], (bsz, c_in, mult, tp.run_length))
    w3 = _view(w, (c_in, mult, kh * kw))
    for t in range(kh * kw):
        run = _tap_run(phases, tp, t)[:, :, None]
        weight = w3[:, :, t, None]
        if t == 0:
            np.multiply(run, weight, out=acc)
        else:
            products = _view(scratch["products"], acc.shape)
            np.multiply(run, weight, out=products)
            np.add(acc, products, out=acc)
    narrow = _narrow(scratch["wide"], tp)
    if b is None:
        np.copyto(out, narrow)
    else:
        np.add(narrow, b[:, None, None], out=out)


def _as_2d_conv_args(stride: int, padding: Sequence[int], dilation: int) -> tuple[tuple, Pads2d, tuple]:
    left, right = padding
    return (1, int(stride)), ((0, 0), (int(left), int(right))), (1, int(dilation))


def conv1d_scratch(in_shape: Shape, w_shape: Shape, *, stride: int, padding: tuple[int, int],
                   dilation: int, groups: int, act: Act = None) -> dict[str, Shape]:
    """Scratch of `conv1d`, which runs as `conv2d` on [B, C, 1, T]: the same
    names and conv2d's shapes for that view."""
    s, p, d = _as_2d_conv_args(stride, padding, dilation)
    b, c, t = in_shape
    o, cg, k = w_shape
    return conv2d_scratch((b, c, 1, t), (o, cg, 1, k), stride=s, padding=p, dilation=d, groups=groups, act=act)


def conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *,
           stride: int, padding: tuple[int, int], dilation: int, groups: int,
           act: Act = None, scratch: Scratch | None = None) -> None:
    """PyTorch's conv1d of `x` [B, C_in, T] with `w` [C_out, C_in/groups, k],
    padding `(left, right)` (causal is `(dilation * (k - 1), 0)`), into `out` [B, C_out, OT]."""
    s, p, d = _as_2d_conv_args(stride, padding, dilation)
    conv2d(x[:, :, None, :], w[:, :, None, :], b, out[:, :, None, :], stride=s, padding=p, dilation=d,
           groups=groups, act=act, scratch=scratch)


# ------------------------------------------------------------------ dense

def dense_scratch(in_shape: Shape, w_shape: Shape, *, act: Act = None) -> dict[str, Shape]:
    """Scratch of `dense`: only its fused activation's."""
    return activation_scratch(act, tuple(in_shape[:-1]) + (w_shape[0],))


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray, *,
          act: Act = None, scratch: Scratch | None = None) -> None:
    """x @ w.T + b on the last axis: `x` [B, F] or [B, T, F], `w` [O, F], `out` [..., O]."""
    np.matmul(x, w.T, out=out)
    if b is not None:
        np.add(out, b, out=out)
    apply_activation(act, out, scratch)


# ------------------------------------------------------------------ pooling

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


# ------------------------------------------------------------------ normalisation

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


# ------------------------------------------------------------------ merges

def add_scratch(shape: Shape, *, act: Act = None) -> dict[str, Shape]:
    """Scratch of `add`: only its fused activation's."""
    return activation_scratch(act, tuple(shape))


def add(inputs: Sequence[np.ndarray], out: np.ndarray, *, act: Act = None, scratch: Scratch | None = None) -> None:
    """The sum of `inputs` (any of which `out` may be), then `act`."""
    first, *rest = _alias_first(inputs, out)
    if not rest:
        np.copyto(out, first)
    for k, a in enumerate(rest):
        np.add(first if k == 0 else out, a, out=out)
    apply_activation(act, out, scratch)


def sub(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.subtract(a, b, out=out)


def mul(inputs: Sequence[np.ndarray], out: np.ndarray) -> None:
    """The elementwise product of `inputs` (any of which `out` may be)."""
    first, *rest = _alias_first(inputs, out)
    if not rest:
        np.copyto(out, first)
    for k, a in enumerate(rest):
        np.multiply(first if k == 0 else out, a, out=out)


def concat(inputs: Sequence[np.ndarray], axis: int, out: np.ndarray) -> None:
    """`inputs` side by side along `axis`, counted without the batch (0 is array axis 1)."""
    offset = 0
    index = [slice(None)] * out.ndim
    for a in inputs:
        size = a.shape[axis + 1]
        index[axis + 1] = slice(offset, offset + size)
        np.copyto(out[tuple(index)], a)
        offset += size


# ------------------------------------------------------------------ shape ops

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


# Kernels of their own modules, reached through `K` like every other kernel.
from .streaming import conv1d_stream, conv1d_stream_scratch  # noqa: E402
from .recurrent import (gru, gru_chunk, gru_chunk_scratch, gru_scratch, lstm, lstm_chunk,  # noqa: E402
                        lstm_chunk_scratch, lstm_scratch)
