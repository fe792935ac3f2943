"""The NumPy kernels of `nnc.runtime.kernels` against torch.nn.functional.

Every comparison uses random float32 inputs and the relative error
max|got - want| / max|want| < 1e-5. Scratch buffers come from each kernel's
scratch function and are filled with NaN first, so a kernel that reads
scratch it did not write shows up as NaN in its output.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from nnc.runtime import kernels as K  # noqa: E402

torch.set_num_threads(1)

TOL = 1e-5
SENTINEL = 7.25


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (rng(seed).standard_normal(shape) * scale).astype(np.float32)


def planned(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Scratch views as a plan would hand them over: right shapes, stale contents."""
    return {name: np.full(shape, np.nan, dtype=np.float32) for name, shape in shapes.items()}


def assert_close(got: np.ndarray, want, tol: float = TOL) -> None:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape
    assert np.all(np.isfinite(got) == np.isfinite(want)), "non-finite values differ"
    finite = np.isfinite(want)
    scale = max(float(np.abs(want[finite]).max(initial=0.0)), 1e-30)
    err = float(np.abs(got[finite] - want[finite]).max(initial=0.0)) / scale
    assert err < tol, f"relative error {err:.3g} >= {tol:g}"


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


TORCH_ACT = {
    "relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "silu": F.silu, "gelu": F.gelu, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
    "selu": F.selu, "softplus": F.softplus,
    "leaky_relu": lambda v, slope: F.leaky_relu(v, slope), "elu": lambda v, alpha: F.elu(v, alpha),
}
ACTS = [("relu",), ("relu6",), ("leaky_relu", 0.2), ("sigmoid",), ("tanh",), ("silu",), ("gelu",),
        ("hardswish",), ("hardsigmoid",), ("elu", 1.0), ("elu", 1.7), ("selu",), ("softplus",),
        ("leaky_relu", -0.5)]


def torch_act(act, v: torch.Tensor) -> torch.Tensor:
    return v if act is None else TORCH_ACT[act[0]](v, *act[1:])


# ------------------------------------------------------------------ conv2d

# (x shape, w shape, stride, padding ((top, bottom), (left, right)), dilation, groups, path)
CONV2D_CASES = {
    "3x3_same": ((2, 8, 10, 9), (16, 8, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, "im2col"),
    "pointwise": ((2, 8, 7, 7), (12, 8, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, "pointwise"),
    "pointwise_groups_4": ((1, 8, 5, 6), (12, 2, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 4, "pointwise"),
    "1x1_stride_2": ((1, 8, 9, 9), (16, 8, 1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), 1, "im2col"),
    "groups_2_padded": ((2, 8, 9, 9), (6, 4, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2, "im2col"),
    "groups_4_stride_2": ((1, 8, 11, 11), (8, 2, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 4, "im2col"),
    "depthwise": ((2, 6, 9, 9), (6, 1, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 6, "depthwise"),
    "depthwise_stride_2_asymmetric": ((1, 6, 12, 12), (6, 1, 3, 3), (2, 2), ((0, 1), (0, 1)), (1, 1), 6,
                                      "depthwise"),
    "depthwise_multiplier_2_dilation_2": ((1, 4, 10, 10), (8, 1, 3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 4,
                                          "depthwise"),
    "depthwise_1x1": ((1, 6, 5, 5), (6, 1, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 6, "depthwise"),
    "depthwise_dilation_3_stride_2": ((2, 4, 13, 12), (4, 1, 3, 2), (2, 2), ((3, 3), (1, 2)), (3, 3), 4,
                                      "depthwise"),
    "depthwise_stride_3_wider_than_kernel": ((1, 3, 10, 11), (3, 1, 2, 2), (3, 3), ((1, 0), (0, 1)), (1, 1), 3,
                                             "depthwise"),
    "depthwise_stride_2_on_1x1": ((1, 4, 1, 1), (4, 1, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 4, "depthwise"),
    "asymmetric_padding": ((1, 3, 8, 7), (5, 3, 4, 2), (1, 1), ((1, 2), (0, 1)), (1, 1), 1, "im2col"),
    "dilation_2_stride_2": ((2, 4, 13, 12), (6, 4, 3, 3), (2, 2), ((2, 2), (2, 2)), (2, 2), 1, "im2col"),
    "one_input_channel_5x5": ((1, 1, 12, 12), (6, 1, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1, "im2col"),
    "rectangular_stride_2_1": ((1, 4, 9, 6), (4, 4, 3, 1), (2, 1), ((1, 1), (0, 0)), (1, 1), 1, "im2col"),
    "padding_wider_than_kernel": ((1, 3, 7, 7), (2, 3, 2, 2), (3, 3), ((3, 3), (2, 2)), (1, 1), 1, "im2col"),
}


def torch_conv2d(x, w, b, stride, padding, dilation, groups, act):
    (top, bottom), (left, right) = padding
    xt = F.pad(t(x), (left, right, top, bottom))
    y = F.conv2d(xt, t(w), None if b is None else t(b), stride=stride, dilation=dilation, groups=groups)
    return torch_act(act, y)


@pytest.mark.parametrize("case", list(CONV2D_CASES), ids=list(CONV2D_CASES))
def test_conv2d_matches_torch(case):
    x_shape, w_shape, stride, padding, dilation, groups, _ = CONV2D_CASES[case]
    index = list(CONV2D_CASES).index(case)
    act = ACTS[index % len(ACTS)]
    x, w = randn(*x_shape, seed=index), randn(*w_shape, seed=100 + index, scale=0.3)
    b = randn(w_shape[0], seed=200 + index) if index % 3 else None
    want = torch_conv2d(x, w, b, stride, padding, dilation, groups, act)
    out = np.full(tuple(want.shape), np.nan, dtype=np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    scratch = planned(K.conv2d_scratch(x_shape, w_shape, act=act, **kw))
    K.conv2d(x, w, b, out, act=act, scratch=scratch, **kw)
    assert_close(out, want)


@pytest.mark.parametrize("case", list(CONV2D_CASES), ids=list(CONV2D_CASES))
def test_conv2d_scratch_names_follow_the_fast_path(case):
    x_shape, w_shape, stride, padding, dilation, groups, path = CONV2D_CASES[case]
    names = set(K.conv2d_scratch(x_shape, w_shape, stride=stride, padding=padding, dilation=dilation,
                                 groups=groups))
    padded = any(p for pair in padding for p in pair)
    several_taps = w_shape[2] * w_shape[3] > 1
    expected = {
        "im2col": {"cols"} | ({"padded"} if padded else set()),
        "pointwise": set(),
        "depthwise": {"phases", "wide"} | ({"products"} if several_taps else set()),
    }[path]
    assert names == expected


def stale_infinities(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Scratch holding +inf and -inf side by side, which meet as inf - inf if read."""
    out = {}
    for name, shape in shapes.items():
        buf = np.full(math.prod(shape), np.inf, dtype=np.float32)
        buf[1::2] = -np.inf
        out[name] = buf.reshape(shape)
    return out


@pytest.mark.parametrize("case", ["depthwise_stride_2_asymmetric", "depthwise_dilation_3_stride_2"])
def test_depthwise_reads_no_stale_scratch_even_in_dropped_columns(case):
    x_shape, w_shape, stride, padding, dilation, groups, _ = CONV2D_CASES[case]
    x, w = randn(*x_shape), randn(*w_shape, seed=1)
    w[::2] = 0.0                                 # pruned filters would meet stale infinities as 0 * inf
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    want = torch_conv2d(x, w, None, stride, padding, dilation, groups, None)
    out = np.empty(tuple(want.shape), dtype=np.float32)
    with np.errstate(invalid="raise"):
        K.conv2d(x, w, None, out, act=None, scratch=stale_infinities(K.conv2d_scratch(x_shape, w_shape, **kw)), **kw)
    assert_close(out, want)


def test_conv2d_rejects_weights_that_do_not_fit_the_groups():
    with pytest.raises(ValueError, match="groups=2"):
        K.conv2d_scratch((1, 6, 5, 5), (4, 2, 3, 3), stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1),
                         groups=2)


def test_conv2d_without_scratch_allocates_its_own():
    x, w, b = randn(1, 4, 6, 6), randn(5, 4, 3, 3, seed=1), randn(5, seed=2)
    out = np.empty((1, 5, 6, 6), dtype=np.float32)
    K.conv2d(x, w, b, out, stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1,
             act=("silu",), scratch=None)
    assert_close(out, torch_conv2d(x, w, b, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, ("silu",)))


# ------------------------------------------------------------------ conv1d

# (x shape, w shape, stride, (left, right), dilation, groups)
CONV1D_CASES = {
    "k3_same": ((2, 4, 16), (6, 4, 3), 1, (1, 1), 1, 1),
    "causal_dilation_4": ((1, 3, 20), (5, 3, 3), 1, (8, 0), 4, 1),
    "stride_2_groups_2": ((2, 4, 15), (6, 2, 3), 2, (1, 1), 1, 2),
    "depthwise_multiplier_2_causal": ((1, 5, 12), (10, 1, 3), 1, (2, 0), 1, 5),
    "depthwise_dilation_2_stride_2": ((2, 4, 17), (4, 1, 3), 2, (2, 2), 2, 4),
    "pointwise": ((3, 6, 9), (4, 6, 1), 1, (0, 0), 1, 1),
    "dilation_2_stride_3_groups_4": ((1, 8, 23), (8, 2, 2), 3, (0, 3), 2, 4),
    "valid_k5": ((3, 2, 11), (3, 2, 5), 1, (0, 0), 1, 1),
}


def torch_conv1d(x, w, b, stride, padding, dilation, groups, act=None):
    y = F.conv1d(F.pad(t(x), padding), t(w), None if b is None else t(b), stride=stride, dilation=dilation,
                 groups=groups)
    return torch_act(act, y)


@pytest.mark.parametrize("case", list(CONV1D_CASES), ids=list(CONV1D_CASES))
def test_conv1d_matches_torch(case):
    x_shape, w_shape, stride, padding, dilation, groups = CONV1D_CASES[case]
    index = list(CONV1D_CASES).index(case)
    act = ACTS[(index * 5) % len(ACTS)]
    x, w, b = randn(*x_shape, seed=index), randn(*w_shape, seed=50 + index), randn(w_shape[0], seed=9)
    want = torch_conv1d(x, w, b, stride, padding, dilation, groups, act)
    out = np.full(tuple(want.shape), np.nan, dtype=np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    K.conv1d(x, w, b, out, act=act, scratch=planned(K.conv1d_scratch(x_shape, w_shape, act=act, **kw)), **kw)
    assert_close(out, want)


# ------------------------------------------------------------------ dense

@pytest.mark.parametrize("x_shape", [(3, 10), (2, 5, 10)], ids=["vectors", "sequences"])
@pytest.mark.parametrize("act", [None, ("gelu",), ("leaky_relu", 0.1)])
def test_dense_matches_torch_on_the_last_axis(x_shape, act):
    x, w, b = randn(*x_shape), randn(7, 10, seed=1), randn(7, seed=2)
    want = torch_act(act, F.linear(t(x), t(w), t(b)))
    out = np.full(tuple(want.shape), np.nan, dtype=np.float32)
    K.dense(x, w, b, out, act=act, scratch=planned(K.dense_scratch(x_shape, w.shape, act=act)))
    assert_close(out, want)


def test_dense_without_bias():
    x, w = randn(4, 6), randn(3, 6, seed=1)
    out = np.empty((4, 3), dtype=np.float32)
    K.dense(x, w, None, out, act=None)
    assert_close(out, F.linear(t(x), t(w)))


# ------------------------------------------------------------------ pooling

@pytest.mark.parametrize("kernel,stride,pad", [((3, 3), (2, 2), 1), ((2, 2), (2, 2), 0), ((3, 2), (1, 2), 1),
                                               ((2, 2), (3, 3), 1), ((3, 3), (1, 1), 1)])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool2d_matches_torch(kind, kernel, stride, pad):
    x = randn(2, 3, 9, 8)
    padding = ((pad, pad), (min(pad, kernel[1] // 2),) * 2)
    if kind == "max":
        want = F.max_pool2d(t(x), kernel, stride, (padding[0][0], padding[1][0]))
    else:
        want = F.avg_pool2d(t(x), kernel, stride, (padding[0][0], padding[1][0]), count_include_pad=True)
    out = np.full(tuple(want.shape), np.nan, dtype=np.float32)
    scratch = planned(getattr(K, f"{kind}pool2d_scratch")(x.shape, kernel=kernel, stride=stride, padding=padding))
    getattr(K, f"{kind}pool2d")(x, out, kernel=kernel, stride=stride, padding=padding, scratch=scratch)
    assert_close(out, want)


def test_avgpool2d_reads_no_stale_scratch_even_in_dropped_columns():
    x = randn(1, 3, 9, 8)
    kw = dict(kernel=(3, 3), stride=(2, 2), padding=((1, 1), (1, 1)))
    out = np.empty((1, 3, 5, 4), dtype=np.float32)
    with np.errstate(invalid="raise"):
        K.avgpool2d(x, out, scratch=stale_infinities(K.avgpool2d_scratch(x.shape, **kw)), **kw)
    assert_close(out, F.avg_pool2d(t(x), 3, 2, 1))


def test_maxpool2d_padding_never_wins_over_negative_inputs():
    x = -np.abs(randn(1, 2, 5, 5)) - 10.0
    out = np.empty((1, 2, 3, 3), dtype=np.float32)
    padding = ((1, 1), (1, 1))
    K.maxpool2d(x, out, kernel=(3, 3), stride=(2, 2), padding=padding,
                scratch=planned(K.maxpool2d_scratch(x.shape, kernel=(3, 3), stride=(2, 2), padding=padding)))
    assert_close(out, F.max_pool2d(t(x), 3, 2, 1))


@pytest.mark.parametrize("kernel,stride,pad", [(3, 1, 1), (4, 2, 2), (2, 2, 0)])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool1d_matches_torch(kind, kernel, stride, pad):
    x = randn(2, 3, 13)
    if kind == "max":
        want = F.max_pool1d(t(x), kernel, stride, pad)
    else:
        want = F.avg_pool1d(t(x), kernel, stride, pad, count_include_pad=True)
    out = np.full(tuple(want.shape), np.nan, dtype=np.float32)
    scratch = planned(getattr(K, f"{kind}pool1d_scratch")(x.shape, kernel=kernel, stride=stride,
                                                             padding=(pad, pad)))
    getattr(K, f"{kind}pool1d")(x, out, kernel=kernel, stride=stride, padding=(pad, pad), scratch=scratch)
    assert_close(out, want)


@pytest.mark.parametrize("x_shape,out_shape", [((2, 5, 6, 7), (2, 5)), ((2, 5, 9), (2, 5)),
                                               ((1, 4, 3, 3), (1, 4, 1, 1))])
def test_global_avgpool_averages_every_trailing_axis(x_shape, out_shape):
    x = randn(*x_shape)
    out = np.empty(out_shape, dtype=np.float32)
    K.global_avgpool(x, out)
    want = t(x).flatten(2).mean(dim=2).reshape(out_shape)
    assert_close(out, want)


# ------------------------------------------------------------------ normalisation

@pytest.mark.parametrize("x_shape", [(4, 6), (2, 6, 5), (2, 6, 4, 3)])
def test_batchnorm_matches_torch_inference(x_shape):
    x = randn(*x_shape)
    mean, gamma, beta = randn(6, seed=1), randn(6, seed=2), randn(6, seed=3)
    var = np.abs(randn(6, seed=4)) + 0.1
    want = F.batch_norm(t(x), t(mean), t(var), t(gamma), t(beta), training=False, eps=1e-5)
    out = np.empty(x_shape, dtype=np.float32)
    K.batchnorm(x, mean, var, gamma, beta, 1e-5, out)
    assert_close(out, want)


@pytest.mark.parametrize("x_shape", [(3, 10), (2, 5, 16)])
@pytest.mark.parametrize("in_place", [False, True], ids=["out_of_place", "in_place"])
def test_layernorm_matches_torch_on_the_last_axis(x_shape, in_place):
    x = randn(*x_shape, scale=3.0) + 5.0
    gamma, beta = randn(x_shape[-1], seed=1), randn(x_shape[-1], seed=2)
    want = F.layer_norm(t(x), (x_shape[-1],), t(gamma), t(beta), eps=1e-5)
    out = x if in_place else np.empty(x_shape, dtype=np.float32)
    K.layernorm(x, gamma, beta, 1e-5, out, scratch=planned(K.layernorm_scratch(x_shape)))
    assert_close(out, want)


@pytest.mark.parametrize("channels", [5, 1], ids=["per_channel", "shared"])
@pytest.mark.parametrize("in_place", [False, True], ids=["out_of_place", "in_place"])
def test_prelu_matches_torch(channels, in_place):
    x, w = randn(2, 5, 4, 3), randn(channels, seed=1)
    want = F.prelu(t(x), t(w))
    out = x if in_place else np.empty(x.shape, dtype=np.float32)
    K.prelu(x, w, out, scratch=planned(K.prelu_scratch(x.shape)))
    assert_close(out, want)


# ------------------------------------------------------------------ activations

def act_kernel(act, x, out):
    name, *params = act
    scratch = K.activation_scratch(act, x.shape)
    kwargs = {"scratch": planned(scratch)} if scratch else {}
    getattr(K, name)(x, out, *params, **kwargs)


@pytest.mark.parametrize("act", ACTS, ids=["-".join(map(str, a)) for a in ACTS])
def test_activation_kernel_matches_torch_and_keeps_its_input(act):
    x = randn(3, 4, 50, scale=4.0)
    before = x.copy()
    out = np.full(x.shape, np.nan, dtype=np.float32)
    act_kernel(act, x, out)
    assert_close(out, torch_act(act, t(before)))
    assert np.array_equal(x, before)


@pytest.mark.parametrize("act", ACTS, ids=["-".join(map(str, a)) for a in ACTS])
def test_activation_runs_in_place(act):
    x = randn(3, 4, 50, scale=4.0)
    want = torch_act(act, t(x.copy()))
    act_kernel(act, x, x)
    assert_close(x, want)


@pytest.mark.parametrize("act", ACTS, ids=["-".join(map(str, a)) for a in ACTS])
def test_apply_activation_is_the_kernel_in_place(act):
    x = randn(2, 3, 7, 7, scale=4.0)
    want = torch_act(act, t(x.copy()))
    K.apply_activation(act, x, planned(K.activation_scratch(act, x.shape)))
    assert_close(x, want)


def test_relu6_boundaries_are_exact():
    x = np.array([[-np.inf, -1e-7, -0.0, 0.0, 1e-7, 3.0, np.nextafter(6, 0), 6.0, np.nextafter(6, 7), 1e30,
                   np.inf]], dtype=np.float32)
    out = np.empty_like(x)
    K.relu6(x, out)
    assert np.array_equal(out, F.relu6(t(x)).numpy())


def test_gelu_is_the_exact_erf_form_over_minus_10_to_10():
    x = np.linspace(-10, 10, 200_001, dtype=np.float32)[None, :]
    out = np.empty_like(x)
    K.gelu(x, out, scratch=planned(K.activation_scratch(("gelu",), x.shape)))
    exact = np.array([v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x[0].astype(np.float64)])
    assert np.abs(out[0] - exact).max() < 1e-6
    assert_close(out, F.gelu(t(x)))


def test_erf_core_is_within_1e7_of_erf_in_float32():
    z = np.linspace(-6, 6, 100_001)
    u = np.square(np.clip(z, -K._ERF_CLAMP, K._ERF_CLAMP))
    num, den = np.empty_like(u), np.empty_like(u)
    K._erf_over_z(u, num, den)
    got = (np.clip(z, -K._ERF_CLAMP, K._ERF_CLAMP) * num).astype(np.float32)
    exact = np.array([math.erf(v) for v in z])
    assert np.abs(got - exact).max() < 1e-7


def test_softplus_switches_to_identity_above_threshold_20():
    x = np.array([[-100.0, -20.0, 0.0, 19.0, 19.99, 20.0, 20.01, 21.0, 50.0, 100.0, 1e6]], dtype=np.float32)
    out = np.empty_like(x)
    K.softplus(x, out, scratch=planned(K.activation_scratch(("softplus",), x.shape)))
    assert_close(out, F.softplus(t(x)), tol=1e-7)
    assert np.array_equal(out[0, 6:], x[0, 6:])


@pytest.mark.parametrize("act", ACTS, ids=["-".join(map(str, a)) for a in ACTS])
def test_activation_of_extreme_inputs_raises_no_floating_point_error(act):
    x = np.array([[-1e30, -1e4, -100.0, -88.8, 0.0, 88.8, 100.0, 1e4, 1e30]], dtype=np.float32)
    want = torch_act(act, t(x.copy()))
    out = np.empty_like(x)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        act_kernel(act, x, out)
    assert_close(out, want)


# ------------------------------------------------------------------ softmax

@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
def test_softmax_matches_torch_along_any_axis(kind, axis):
    x = randn(3, 4, 6, scale=5.0)
    x[0, 0, 0] = 80.0                            # exp would overflow without the max shift
    want = getattr(F, kind)(t(x), dim=axis)
    out = np.full(x.shape, np.nan, dtype=np.float32)
    scratch = planned(getattr(K, f"{kind}_scratch")(x.shape, axis))
    getattr(K, kind)(x, axis, out, scratch=scratch)
    assert_close(out, want)


def test_softmax_runs_in_place():
    x = randn(2, 10, scale=3.0)
    want = F.softmax(t(x.copy()), dim=-1)
    K.softmax(x, -1, x, scratch=planned(K.softmax_scratch(x.shape, -1)))
    assert_close(x, want)


def test_log_softmax_refuses_to_run_in_place():
    x = randn(2, 10)
    with pytest.raises(ValueError, match="in place"):
        K.log_softmax(x, -1, x)


# ------------------------------------------------------------------ merges and shape ops

def test_add_of_three_reads_the_input_it_overwrites_first():
    a, b, c = randn(2, 3, 4), randn(2, 3, 4, seed=1), randn(2, 3, 4, seed=2)
    want = F.relu(t(a) + t(b) + t(c))
    K.add((a, b, c), b, act=("relu",))
    assert_close(b, want)


def test_sub_and_mul_match_torch():
    a, b, c = randn(2, 3, 4), randn(2, 3, 4, seed=1), randn(2, 3, 4, seed=2)
    out = np.empty_like(a)
    K.sub(a, b, out)
    assert_close(out, t(a) - t(b))
    want = t(a) * t(b) * t(c)
    K.mul((a, b, c), c)
    assert_close(c, want)


@pytest.mark.parametrize("axis", [0, 1])
def test_concat_counts_axes_without_the_batch(axis):
    a = randn(2, 3, 4)
    b = randn(2, 5, 4, seed=1) if axis == 0 else randn(2, 3, 2, seed=1)
    want = torch.cat([t(a), t(b)], dim=axis + 1)
    out = np.empty(tuple(want.shape), dtype=np.float32)
    K.concat((a, b), axis, out)
    assert_close(out, want)


@pytest.mark.parametrize("x_shape,perm", [((2, 5, 3), (1, 0)), ((2, 3, 4, 5), (2, 0, 1))])
def test_transpose_permutes_the_axes_of_each_example(x_shape, perm):
    x = randn(*x_shape)
    want = t(x).permute(0, *(p + 1 for p in perm))
    out = np.empty(tuple(want.shape), dtype=np.float32)
    K.transpose(x, perm, out)
    assert_close(out, want)


@pytest.mark.parametrize("x_shape,scale", [((2, 3, 5), 3), ((1, 2, 3, 4), 2), ((1, 2, 3, 4), (2, 3))])
def test_upsample_is_torch_nearest(x_shape, scale):
    x = randn(*x_shape)
    factor = float(scale) if isinstance(scale, int) else tuple(float(s) for s in scale)
    want = F.interpolate(t(x), scale_factor=factor, mode="nearest")
    out = np.empty(tuple(want.shape), dtype=np.float32)
    K.upsample(x, scale, out)
    assert_close(out, want)


def test_copy_keeps_c_order_across_shapes():
    x = randn(2, 3, 4)
    out = np.empty((2, 12), dtype=np.float32)
    K.copy(x, out)
    assert np.array_equal(out, x.reshape(2, 12))


# ------------------------------------------------------------------ writing into a concat slice

SLICE_CASES = {
    "conv2d_im2col": ("conv2d", CONV2D_CASES["groups_2_padded"]),
    "conv2d_pointwise": ("conv2d", CONV2D_CASES["pointwise"]),
    "conv2d_depthwise": ("conv2d", CONV2D_CASES["depthwise"]),
    "conv1d_causal": ("conv1d", CONV1D_CASES["causal_dilation_4"]),
}


def _concat_slice(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A sentinel-filled concat buffer with 5 more channels than `shape`, and
    the view of its channels 2:2+C, contiguous per example but not across the batch."""
    big = np.full((shape[0], shape[1] + 5) + tuple(shape[2:]), SENTINEL, dtype=np.float32)
    return big, big[:, 2:2 + shape[1]]


def _assert_only_slice_written(big: np.ndarray, width: int) -> None:
    assert np.all(big[:, :2] == SENTINEL) and np.all(big[:, 2 + width:] == SENTINEL)


@pytest.mark.parametrize("case", list(SLICE_CASES), ids=list(SLICE_CASES))
def test_conv_writes_into_a_concat_slice(case):
    op, (x_shape, w_shape, stride, padding, dilation, groups, *_) = SLICE_CASES[case]
    x_shape = (2,) + tuple(x_shape[1:])
    x, w, b = randn(*x_shape), randn(*w_shape, seed=1), randn(w_shape[0], seed=2)
    act = ("silu",)
    reference = torch_conv2d if op == "conv2d" else torch_conv1d
    want = reference(x, w, b, stride, padding, dilation, groups, act)
    big, out = _concat_slice(tuple(want.shape))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    scratch = planned(getattr(K, f"{op}_scratch")(x_shape, w_shape, act=act, **kw))
    getattr(K, op)(x, w, b, out, act=act, scratch=scratch, **kw)
    assert_close(np.ascontiguousarray(out), want)
    _assert_only_slice_written(big, w_shape[0])


X4, SEQ, W_DENSE = randn(2, 4, 6, 6), randn(2, 3, 8), randn(5, 8, seed=1)

# name -> (output shape, kernel writing into `out`, torch reference)
SLICE_WRITERS = {
    "maxpool2d": ((2, 4, 3, 3),
                  lambda out: K.maxpool2d(X4, out, kernel=(3, 3), stride=(2, 2), padding=((1, 1), (1, 1))),
                  lambda: F.max_pool2d(t(X4), 3, 2, 1)),
    "avgpool1d": ((2, 4, 3),
                  lambda out: K.avgpool1d(X4[:, :, 0], out, kernel=2, stride=2, padding=(0, 0)),
                  lambda: F.avg_pool1d(t(X4[:, :, 0]), 2, 2)),
    "dense_gelu": ((2, 3, 5),
                   lambda out: K.dense(SEQ, W_DENSE, None, out, act=("gelu",)),
                   lambda: F.gelu(F.linear(t(SEQ), t(W_DENSE)))),
    "hardswish": ((2, 4, 6, 6), lambda out: K.hardswish(X4, out), lambda: F.hardswish(t(X4))),
    "add_relu": ((2, 4, 6, 6), lambda out: K.add((X4, X4[:, ::-1]), out, act=("relu",)),
                 lambda: F.relu(t(X4) + t(X4[:, ::-1]))),
}


@pytest.mark.parametrize("name", list(SLICE_WRITERS), ids=list(SLICE_WRITERS))
def test_pool_dense_activation_and_add_write_into_a_concat_slice(name):
    shape, run, reference = SLICE_WRITERS[name]
    big, out = _concat_slice(shape)
    run(out)
    assert_close(np.ascontiguousarray(out), reference())
    _assert_only_slice_written(big, shape[1])


# ------------------------------------------------------------------ the scratch contract

SCRATCH_FUNCTIONS = {
    "conv2d_im2col": lambda b: K.conv2d_scratch((b, 8, 9, 9), (6, 4, 3, 3), stride=(1, 1), padding=((1, 1),) * 2,
                                                dilation=(1, 1), groups=2, act=("gelu",)),
    "conv2d_depthwise": lambda b: K.conv2d_scratch((b, 6, 9, 9), (12, 1, 3, 3), stride=(2, 2),
                                                   padding=((0, 1),) * 2, dilation=(1, 1), groups=6),
    "conv1d": lambda b: K.conv1d_scratch((b, 4, 20), (4, 4, 3), stride=1, padding=(2, 0), dilation=1, groups=1,
                                         act=("elu", 1.0)),
    "dense": lambda b: K.dense_scratch((b, 7, 10), (5, 10), act=("silu",)),
    "maxpool2d": lambda b: K.maxpool2d_scratch((b, 3, 8, 8), kernel=(3, 3), stride=(2, 2), padding=((1, 1),) * 2),
    "avgpool1d": lambda b: K.avgpool1d_scratch((b, 3, 8), kernel=3, stride=1, padding=(1, 1)),
    "layernorm": lambda b: K.layernorm_scratch((b, 5, 16)),
    "prelu": lambda b: K.prelu_scratch((b, 4, 3)),
    "softmax_over_batch": lambda b: K.softmax_scratch((b, 10), 0),
    "log_softmax": lambda b: K.log_softmax_scratch((b, 4, 10), -1),
    "add": lambda b: K.add_scratch((b, 4, 3), act=("softplus",)),
}


@pytest.mark.parametrize("name", list(SCRATCH_FUNCTIONS), ids=list(SCRATCH_FUNCTIONS))
def test_scratch_at_batch_b_fits_b_times_the_plan_for_one(name):
    one = SCRATCH_FUNCTIONS[name](1)
    for batch in (2, 5):
        many = SCRATCH_FUNCTIONS[name](batch)
        assert many.keys() == one.keys()
        for key, shape in many.items():
            assert math.prod(shape) <= batch * math.prod(one[key])


def _peak_bytes(call) -> int:
    call()                                       # warm caches (conv plans, numpy internals)
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_conv2d_3x3_on_64x56x56_allocates_nothing_large():
    x, w, b = randn(1, 64, 56, 56), randn(64, 64, 3, 3, seed=1), randn(64, seed=2)
    out = np.empty((1, 64, 56, 56), dtype=np.float32)
    kw = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1, act=("relu",))
    scratch = planned(K.conv2d_scratch(x.shape, w.shape, **kw))
    assert _peak_bytes(lambda: K.conv2d(x, w, b, out, scratch=scratch, **kw)) < 64 * 1024


PLANNED_CALLS = {
    "depthwise_relu6": lambda: _conv_call((1, 32, 56, 56), (32, 1, 3, 3), 32, ("relu6",)),
    "pointwise_hardswish": lambda: _conv_call((1, 32, 28, 28), (64, 32, 1, 1), 1, ("hardswish",)),
    "im2col_gelu": lambda: _conv_call((1, 16, 28, 28), (16, 16, 3, 3), 1, ("gelu",)),
    "maxpool2d": lambda: _planned_call(K.maxpool2d, randn(1, 32, 56, 56), (1, 32, 28, 28),
                                       K.maxpool2d_scratch((1, 32, 56, 56), kernel=(3, 3), stride=(2, 2),
                                                        padding=((1, 1),) * 2),
                                       kernel=(3, 3), stride=(2, 2), padding=((1, 1),) * 2),
    "layernorm": lambda: _planned_call(lambda x, out, scratch: K.layernorm(x, np.ones(256, np.float32),
                                                                           np.zeros(256, np.float32), 1e-5, out,
                                                                           scratch=scratch),
                                       randn(1, 128, 256), (1, 128, 256), K.layernorm_scratch((1, 128, 256))),
    "softmax": lambda: _planned_call(lambda x, out, scratch: K.softmax(x, -1, out, scratch=scratch),
                                     randn(1, 128, 256), (1, 128, 256), K.softmax_scratch((1, 128, 256), -1)),
}


def _conv_call(x_shape, w_shape, groups, act):
    x, w, b = randn(*x_shape), randn(*w_shape, seed=1), randn(w_shape[0], seed=2)
    kw = dict(stride=(1, 1), padding=((w_shape[2] // 2,) * 2,) * 2, dilation=(1, 1), groups=groups, act=act)
    scratch = planned(K.conv2d_scratch(x_shape, w_shape, **kw))
    out = np.empty((x_shape[0], w_shape[0]) + x_shape[2:], dtype=np.float32)
    return lambda: K.conv2d(x, w, b, out, scratch=scratch, **kw)


def _planned_call(fn, x, out_shape, scratch_shapes, **kw):
    out, scratch = np.empty(out_shape, dtype=np.float32), planned(scratch_shapes)
    return lambda: fn(x, out, scratch=scratch, **kw)


@pytest.mark.parametrize("name", list(PLANNED_CALLS), ids=list(PLANNED_CALLS))
def test_kernels_with_planned_scratch_allocate_nothing_large(name):
    assert _peak_bytes(PLANNED_CALLS[name]()) < 64 * 1024


def test_gelu_of_large_negative_inputs_is_zero_as_in_torch():
    # the erf fit is clamped, so Phi(x) stayed ~7e-9 and gelu(-1e30) was -7e21
    x = np.array([[-10.0, -1e4, -1e10, -1e30, -3e38, np.nan]], np.float32)
    out = np.empty_like(x)
    K.gelu(x, out)
    assert np.all(out[0, :5] == 0.0)
    assert np.isnan(out[0, 5])
