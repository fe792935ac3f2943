"""The training kernels of `nnc.runtime.kernels` (training forwards and
backward rules, one per catalog op) against torch.autograd.

Every comparison runs in float32 and passes when ||got - want|| / ||want|| <
1e-4. Kernels with a scratch function run twice: allocating their own
scratch, and with planned views from the scratch function filled with NaN or
+inf first (stale arena contents), so reading scratch before writing it shows.
A float64 finite-difference check of our own rules (`FD_CASES`) covers a
representative subset; `test_fd_check_catches_a_wrong_rule` shows it fails on
a flipped sign.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from nnc.runtime import kernels as K  # noqa: E402

torch.set_num_threads(1)

RTOL = 1e-4


def randn(*shape: int, seed: int = 0, scale: float = 1.0, dtype=np.float32) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def tt(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.ascontiguousarray(a), requires_grad=grad)


def assert_close(got: np.ndarray, want, rtol: float = RTOL) -> None:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.all(np.isfinite(got)), "non-finite values"
    err = float(np.linalg.norm((got - want).ravel().astype(np.float64)))
    scale = max(float(np.linalg.norm(want.ravel().astype(np.float64))), 1e-30)
    assert err / scale < rtol, f"relative error {err / scale:.3g} >= {rtol:g}"


def planned(shapes: dict[str, tuple[int, ...]], fill: float = np.nan) -> dict[str, np.ndarray]:
    """Scratch as a plan hands it over: the right shapes, stale contents."""
    return {name: np.full(shape, fill, dtype=np.float32) for name, shape in shapes.items()}


def scratch_variants(shapes: dict[str, tuple[int, ...]]) -> list:
    return [None, planned(shapes), planned(shapes, np.inf)]


def empty_like_or_none(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.full(a.shape, np.nan, dtype=a.dtype)


# ------------------------------------------------------------------ conv2d

# (x shape, w shape, stride, padding ((top, bottom), (left, right)), dilation, groups)
CONV2D_CASES = {
    "3x3_same": ((2, 4, 9, 8), (6, 4, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "pointwise": ((2, 6, 5, 5), (8, 6, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "pointwise_groups_2": ((2, 6, 4, 5), (4, 3, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 2),
    "1x1_stride_2": ((2, 4, 7, 7), (6, 4, 1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), 1),
    "grouped_dilated_strided_asym": ((2, 8, 11, 12), (8, 2, 3, 3), (2, 3), ((2, 0), (1, 3)), (2, 1), 4),
    "5x5_valid": ((3, 3, 12, 12), (5, 3, 5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "stride_beyond_kernel": ((2, 4, 13, 10), (6, 4, 2, 2), (3, 3), ((0, 0), (0, 0)), (1, 1), 1),
    "depthwise": ((2, 6, 9, 9), (6, 1, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 6),
    "depthwise_mult_2_strided": ((2, 5, 9, 10), (10, 1, 3, 3), (2, 2), ((1, 1), (0, 2)), (1, 2), 5),
    "depthwise_stride_beyond_kernel": ((2, 6, 13, 10), (12, 1, 2, 2), (3, 3), ((0, 0), (0, 0)), (1, 1), 6),
    "depthwise_5x5_dilated": ((1, 4, 12, 12), (4, 1, 5, 5), (1, 1), ((4, 4), (4, 4)), (2, 2), 4),
}


def torch_conv2d_grads(x, w, b, dy, stride, pads, dilation, groups):
    X, W = tt(x, True), tt(w, True)
    B = tt(b, True) if b is not None else None
    (top, bottom), (left, right) = pads
    y = F.conv2d(F.pad(X, (left, right, top, bottom)), W, B, stride=stride, dilation=dilation, groups=groups)
    y.backward(tt(dy))
    return y, X.grad, W.grad, None if B is None else B.grad


def conv_out_shape(x_shape, w_shape, stride, pads, dilation):
    out = [x_shape[0], w_shape[0]]
    for i, n in enumerate(x_shape[2:]):
        k = w_shape[2 + i]
        out.append((n + sum(pads[i]) - dilation[i] * (k - 1) - 1) // stride[i] + 1)
    return tuple(out)


@pytest.mark.parametrize("case", CONV2D_CASES, ids=list(CONV2D_CASES))
def test_conv2d_backward_matches_autograd(case):
    x_shape, w_shape, stride, pads, dilation, groups = CONV2D_CASES[case]
    x, w, b = randn(*x_shape, seed=1), randn(*w_shape, seed=2), randn(w_shape[0], seed=3)
    dy = randn(*conv_out_shape(x_shape, w_shape, stride, pads, dilation), seed=4)
    _, gx, gw, gb = torch_conv2d_grads(x, w, b, dy, stride, pads, dilation, groups)
    kw = dict(stride=stride, padding=pads, dilation=dilation, groups=groups)
    for scratch in scratch_variants(K.conv2d_backward_scratch(x_shape, w_shape, **kw)):
        dx, dw, db = empty_like_or_none(x), empty_like_or_none(w), empty_like_or_none(b)
        K.conv2d_backward(x, w, dy, dx=dx, dw=dw, db=db, scratch=scratch, **kw)
        assert_close(dx, gx)
        assert_close(dw, gw)
        assert_close(db, gb)


@pytest.mark.parametrize("case", ["3x3_same", "pointwise", "depthwise_mult_2_strided"])
def test_conv2d_backward_without_input_gradient_needs_less_scratch(case):
    x_shape, w_shape, stride, pads, dilation, groups = CONV2D_CASES[case]
    x, w = randn(*x_shape, seed=1), randn(*w_shape, seed=2)
    dy = randn(*conv_out_shape(x_shape, w_shape, stride, pads, dilation), seed=4)
    _, _, gw, _ = torch_conv2d_grads(x, w, None, dy, stride, pads, dilation, groups)
    kw = dict(stride=stride, padding=pads, dilation=dilation, groups=groups)
    shapes = K.conv2d_backward_scratch(x_shape, w_shape, need_dx=False, **kw)
    size = sum(np.prod(s) for s in shapes.values())
    if case == "3x3_same":      # dw from each example's columns: more than the taps' layout at batch 2, bounded
        from nnc.runtime import conv
        assert "taps" not in shapes and size <= conv._COLS
    else:
        assert size <= sum(np.prod(s) for s in K.conv2d_backward_scratch(x_shape, w_shape, **kw).values())
    dw = np.empty_like(w)
    K.conv2d_backward(x, w, dy, dx=None, dw=dw, db=None, scratch=planned(shapes), **kw)
    assert_close(dw, gw)


def test_conv2d_backward_reads_a_channel_slice_of_a_concat_gradient():
    x_shape, w_shape, stride, pads, dilation, groups = CONV2D_CASES["3x3_same"]
    x, w = randn(*x_shape, seed=1), randn(*w_shape, seed=2)
    out_shape = conv_out_shape(x_shape, w_shape, stride, pads, dilation)
    big = randn(out_shape[0], out_shape[1] + 5, *out_shape[2:], seed=5)
    dy = big[:, 2:2 + out_shape[1]]
    _, gx, gw, _ = torch_conv2d_grads(x, w, None, dy, stride, pads, dilation, groups)
    dx, dw = np.empty_like(x), np.empty_like(w)
    K.conv2d_backward(x, w, dy, stride=stride, padding=pads, dilation=dilation, groups=groups, dx=dx, dw=dw, db=None)
    assert_close(dx, gx)
    assert_close(dw, gw)


@pytest.mark.parametrize("groups", [1, 32], ids=["windowed", "depthwise"])
def test_conv2d_backward_with_planned_scratch_allocates_nothing_large(groups):
    """Only NumPy's fixed-size iterator buffers (8192 elements per strided operand) and Python objects."""
    x_shape, w_shape = (8, 32, 32, 32), (32, 32 // groups, 3, 3)
    stride, pads, dilation = (2, 2), ((1, 1), (1, 1)), (1, 1)
    x, w = randn(*x_shape, seed=1), randn(*w_shape, seed=2)
    dy = randn(*conv_out_shape(x_shape, w_shape, stride, pads, dilation), seed=4)
    kw = dict(stride=stride, padding=pads, dilation=dilation, groups=groups)
    scratch = planned(K.conv2d_backward_scratch(x_shape, w_shape, **kw))
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty(w_shape[0], np.float32)
    K.conv2d_backward(x, w, dy, dx=dx, dw=dw, db=db, scratch=scratch, **kw)
    tracemalloc.start()
    K.conv2d_backward(x, w, dy, dx=dx, dw=dw, db=db, scratch=scratch, **kw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 128 * 1024, peak              # x alone is 1 MiB, the scratch 4 MiB


# ------------------------------------------------------------------ conv1d

# (x shape, w shape, stride, padding (left, right), dilation, groups)
CONV1D_CASES = {
    "causal_dilated": ((2, 4, 16), (6, 4, 3), 1, (4, 0), 2, 1),
    "same": ((2, 4, 15), (5, 4, 5), 1, (2, 2), 1, 1),
    "asymmetric_strided": ((2, 4, 17), (6, 4, 4), 2, (1, 2), 1, 1),
    "grouped": ((2, 6, 12), (9, 2, 3), 1, (1, 1), 1, 3),
    "depthwise_causal": ((2, 5, 14), (10, 1, 3), 1, (4, 0), 2, 5),
}


@pytest.mark.parametrize("case", CONV1D_CASES, ids=list(CONV1D_CASES))
def test_conv1d_backward_matches_autograd(case):
    x_shape, w_shape, stride, (left, right), dilation, groups = CONV1D_CASES[case]
    x, w, b = randn(*x_shape, seed=1), randn(*w_shape, seed=2), randn(w_shape[0], seed=3)
    X, W, B = tt(x, True), tt(w, True), tt(b, True)
    y = F.conv1d(F.pad(X, (left, right)), W, B, stride=stride, dilation=dilation, groups=groups)
    dy = randn(*y.shape, seed=4)
    y.backward(tt(dy))
    kw = dict(stride=stride, padding=(left, right), dilation=dilation, groups=groups)
    for scratch in scratch_variants(K.conv1d_backward_scratch(x_shape, w_shape, **kw)):
        dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        K.conv1d_backward(x, w, dy, dx=dx, dw=dw, db=db, scratch=scratch, **kw)
        assert_close(dx, X.grad)
        assert_close(dw, W.grad)
        assert_close(db, B.grad)


# ------------------------------------------------------------------ dense

@pytest.mark.parametrize("x_shape", [(4, 7), (3, 5, 7)], ids=["BF", "BTF"])
@pytest.mark.parametrize("bias", [True, False])
def test_dense_backward_matches_autograd(x_shape, bias):
    x, w, b = randn(*x_shape, seed=1), randn(6, 7, seed=2), randn(6, seed=3)
    X, W, B = tt(x, True), tt(w, True), tt(b, True) if bias else None
    y = F.linear(X, W, B)
    dy = randn(*y.shape, seed=4)
    y.backward(tt(dy))
    dx, dw = np.empty_like(x), np.empty_like(w)
    db = np.empty_like(b) if bias else None
    K.dense_backward(x, w, dy, dx=dx, dw=dw, db=db)
    assert_close(dx, X.grad)
    assert_close(dw, W.grad)
    if bias:
        assert_close(db, B.grad)


def test_dense_backward_reads_a_feature_slice_of_a_concat_gradient():
    x, w = randn(3, 4, 7, seed=1), randn(6, 7, seed=2)
    big = randn(3, 4, 10, seed=3)
    dy = big[:, :, 1:7]
    X, W = tt(x, True), tt(w, True)
    F.linear(X, W).backward(tt(dy))
    dx, dw = np.empty_like(x), np.empty_like(w)
    K.dense_backward(x, w, dy, dx=dx, dw=dw, db=None)
    assert_close(dx, X.grad)
    assert_close(dw, W.grad)


# ------------------------------------------------------------------ pooling

# (x shape, kernel, stride, padding per axis): overlapping, tiling, asymmetric, stride beyond kernel
MAXPOOL2D_CASES = {
    "3x3_s2_p1": ((2, 3, 9, 8), (3, 3), (2, 2), (1, 1)),
    "2x2_s2": ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0)),
    "3x2_s1x2_p1": ((1, 2, 7, 9), (3, 2), (1, 2), (1, 1)),
    "2x2_s3": ((2, 2, 10, 10), (2, 2), (3, 3), (0, 0)),
    "4x2_s4x2": ((2, 3, 8, 8), (4, 2), (4, 2), (0, 0)),      # windows tile the input: one matmul backward
}


@pytest.mark.parametrize("case", MAXPOOL2D_CASES, ids=list(MAXPOOL2D_CASES))
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_maxpool2d_train_and_backward_match_autograd(case, ties):
    """With ties (small integers), the arg-max is the first maximum in
    row-major window order, as PyTorch's CPU kernel: indices equal exactly."""
    x_shape, k, s, p = MAXPOOL2D_CASES[case]
    x = np.random.default_rng(1).integers(-2, 3, x_shape).astype(np.float32) if ties else randn(*x_shape, seed=1)
    X = tt(x, True)
    y, idx = F.max_pool2d(X, k, s, p, return_indices=True)
    dy = randn(*y.shape, seed=2)
    y.backward(tt(dy))
    pads = ((p[0], p[0]), (p[1], p[1]))
    kw = dict(kernel=k, stride=s, padding=pads)
    for scratch in scratch_variants(K.maxpool2d_train_scratch(x_shape, **kw)):
        out = np.full(y.shape, np.nan, np.float32)
        argmax = np.full(y.shape, -1, np.int32)
        K.maxpool2d_train(x, out, argmax, scratch=scratch, **kw)
        np.testing.assert_array_equal(out, y.detach().numpy())
        np.testing.assert_array_equal(argmax, idx.numpy())
        bs = K.maxpool2d_backward_scratch(y.shape)
        for bscratch in (None, planned(bs)):
            dx = np.full_like(x, np.nan)
            K.maxpool2d_backward(dy, argmax, dx=dx, scratch=bscratch)
            assert_close(dx, X.grad)


def test_maxpool1d_train_and_backward_match_autograd():
    x = np.random.default_rng(3).integers(-2, 3, (2, 3, 17)).astype(np.float32)
    X = tt(x, True)
    y, idx = F.max_pool1d(X, 3, 2, 1, return_indices=True)
    dy = randn(*y.shape, seed=2)
    y.backward(tt(dy))
    out, argmax = np.empty(y.shape, np.float32), np.empty(y.shape, np.int32)
    K.maxpool1d_train(x, out, argmax, kernel=3, stride=2, padding=(1, 1))
    np.testing.assert_array_equal(out, y.detach().numpy())
    np.testing.assert_array_equal(argmax, idx.numpy())
    dx = np.empty_like(x)
    K.maxpool1d_backward(dy, argmax, dx=dx)
    assert_close(dx, X.grad)


@pytest.mark.parametrize("case", MAXPOOL2D_CASES, ids=list(MAXPOOL2D_CASES))
def test_avgpool2d_backward_counts_padding_as_torch(case):
    x_shape, k, s, p = MAXPOOL2D_CASES[case]
    X = tt(randn(*x_shape, seed=1), True)
    y = F.avg_pool2d(X, k, s, p)          # count_include_pad=True, PyTorch's default
    dy = randn(*y.shape, seed=2)
    y.backward(tt(dy))
    dx = np.full(x_shape, np.nan, np.float32)
    K.avgpool2d_backward(dy, kernel=k, stride=s, padding=((p[0], p[0]), (p[1], p[1])), dx=dx)
    assert_close(dx, X.grad)


def test_avgpool1d_backward_matches_autograd():
    X = tt(randn(2, 3, 15, seed=1), True)
    y = F.avg_pool1d(X, 4, 3, 2)
    dy = randn(*y.shape, seed=2)
    y.backward(tt(dy))
    dx = np.full((2, 3, 15), np.nan, np.float32)
    K.avgpool1d_backward(dy, kernel=4, stride=3, padding=(2, 2), dx=dx)
    assert_close(dx, X.grad)


@pytest.mark.parametrize("x_shape", [(2, 3, 5, 4), (2, 3, 7)])
def test_global_avgpool_backward_matches_autograd(x_shape):
    X = tt(randn(*x_shape, seed=1), True)
    y = X.mean(dim=tuple(range(2, len(x_shape))))
    dy = randn(*y.shape, seed=2)
    y.backward(tt(dy))
    dx = np.full(x_shape, np.nan, np.float32)
    K.global_avgpool_backward(dy, dx=dx)
    assert_close(dx, X.grad)


# ------------------------------------------------------------------ norms

@pytest.mark.parametrize("x_shape", [(4, 3, 5, 6), (6, 5), (3, 4, 7)], ids=["BCHW", "BC", "BCT"])
def test_batchnorm_train_matches_torch_including_running_stats(x_shape):
    c = x_shape[1]
    x = randn(*x_shape, seed=1, scale=2.0) + 1.5
    gamma, beta = randn(c, seed=2), randn(c, seed=3)
    rm, rv = randn(c, seed=4), np.abs(randn(c, seed=5)) + 0.5
    X, G, B = tt(x, True), tt(gamma, True), tt(beta, True)
    RM, RV = tt(rm), tt(rv)
    y = F.batch_norm(X, RM, RV, G, B, training=True, momentum=0.1, eps=1e-5)
    dy = randn(*x_shape, seed=6)
    y.backward(tt(dy))
    out, mean, rstd = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
    K.batchnorm_train(x, gamma, beta, rm, rv, eps=1e-5, momentum=0.1, out=out, mean=mean, rstd=rstd)
    assert_close(out, y)
    assert_close(rm, RM)
    assert_close(rv, RV)                  # unbiased variance in the running statistics
    axes = (0,) + tuple(range(2, len(x_shape)))
    assert_close(mean, x.astype(np.float64).mean(axis=axes))
    assert_close(rstd, 1 / np.sqrt(x.astype(np.float64).var(axis=axes) + 1e-5))
    dx, dgamma, dbeta = np.empty_like(x), np.empty_like(gamma), np.empty_like(beta)
    K.batchnorm_backward(x, gamma, dy, mean, rstd, dx=dx, dgamma=dgamma, dbeta=dbeta)
    assert_close(dx, X.grad)
    assert_close(dgamma, G.grad)
    assert_close(dbeta, B.grad)
    dgamma2 = np.empty_like(gamma)
    K.batchnorm_backward(x, gamma, dy, mean, rstd, dx=None, dgamma=dgamma2, dbeta=None)
    assert_close(dgamma2, G.grad)


def test_batchnorm_train_rejects_one_value_per_channel():
    x = randn(1, 3, seed=1)
    c = np.empty(3, np.float32)
    with pytest.raises(ValueError, match="more than one value per channel"):
        K.batchnorm_train(x, c, c, c, c, eps=1e-5, momentum=0.1, out=np.empty_like(x), mean=c.copy(), rstd=c.copy())


@pytest.mark.parametrize("x_shape", [(4, 9), (2, 5, 8)], ids=["BF", "BTF"])
def test_layernorm_train_and_backward_match_autograd(x_shape):
    n = x_shape[-1]
    x = randn(*x_shape, seed=1, scale=3.0) + 2.0
    gamma, beta = randn(n, seed=2), randn(n, seed=3)
    X, G, B = tt(x, True), tt(gamma, True), tt(beta, True)
    y = F.layer_norm(X, (n,), G, B, 1e-5)
    dy = randn(*x_shape, seed=4)
    y.backward(tt(dy))
    out, mean, rstd = (np.empty_like(x), np.empty(x_shape[:-1], np.float32), np.empty(x_shape[:-1], np.float32))
    K.layernorm_train(x, gamma, beta, eps=1e-5, out=out, mean=mean, rstd=rstd)
    assert_close(out, y)
    for scratch in scratch_variants(K.layernorm_backward_scratch(x_shape)):
        dx, dgamma, dbeta = dy.copy(), np.empty_like(gamma), np.empty_like(beta)
        K.layernorm_backward(x, gamma, dx, mean, rstd, dx=dx, dgamma=dgamma, dbeta=dbeta, scratch=scratch)  # in place
        assert_close(dx, X.grad)
        assert_close(dgamma, G.grad)
        assert_close(dbeta, B.grad)


# ------------------------------------------------------------------ prelu and activations

@pytest.mark.parametrize("x_shape", [(3, 4, 5, 5), (6, 4)], ids=["BCHW", "BC"])
@pytest.mark.parametrize("shared", [False, True])
def test_prelu_backward_matches_autograd(x_shape, shared):
    x = randn(*x_shape, seed=1)
    x.reshape(-1)[:5] = 0.0                       # the kink: torch takes the slope at 0
    w = randn(1 if shared else x_shape[1], seed=2, scale=0.5)
    X, W = tt(x, True), tt(w, True)
    y = F.prelu(X, W)
    dy = randn(*x_shape, seed=3)
    y.backward(tt(dy))
    for scratch in scratch_variants(K.prelu_backward_scratch(x_shape)):
        dx, dw = np.empty_like(x), np.empty_like(w)
        K.prelu_backward(x, w, dy, dx=dx, dw=dw, scratch=scratch)
        assert_close(dx, X.grad)
        assert_close(dw, W.grad)


TORCH_ACT = {
    "relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "silu": F.silu, "gelu": F.gelu, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
    "selu": F.selu, "softplus": F.softplus,
    "leaky_relu": lambda v, slope: F.leaky_relu(v, slope), "elu": lambda v, alpha: F.elu(v, alpha),
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt,
    "square": torch.square, "clamp": lambda v, lo, hi: torch.clamp(v, lo, hi),
}
ACTS = [("relu",), ("relu6",), ("leaky_relu", 0.2), ("leaky_relu", -0.5), ("sigmoid",), ("tanh",), ("silu",),
        ("gelu",), ("hardswish",), ("hardsigmoid",), ("elu", 1.0), ("elu", 1.7), ("selu",), ("softplus",),
        ("neg",), ("abs",), ("exp",), ("log",), ("sqrt",), ("square",), ("clamp", -3.0, 6.0), ("clamp", None, 0.5),
        ("clamp", 0.5, None)]
# kinks and branch edges of every activation, and values whose exp would overflow
SPECIAL = [0.0, 3.0, -3.0, 6.0, -6.0, 20.0, 20.5, 19.5, 100.0, -100.0, 88.5, -90.0, 1e-3, -1e-3]


DOMAIN = {"exp": lambda x: np.clip(x, -80.0, 80.0), "log": lambda x: np.abs(x) + 0.1,
          "sqrt": lambda x: np.abs(x) + 0.1}


def test_every_catalog_activation_has_a_backward():
    from nnc.compiler.ops import elementwise as ops
    names = {e.name for e in ops.ENTRIES if e.elementwise}
    assert names == {a[0] for a in ACTS}
    for e in ops.ENTRIES:
        if e.elementwise and e.backward is not None:      # the catalog saves what the kernel reads
            assert K.activation_backward_reads(e.name) == ("y" if e.backward.needs_output else "x"), e.name


@pytest.mark.parametrize("act", ACTS, ids=["-".join(map(str, a)) for a in ACTS])
def test_activation_backward_matches_autograd(act):
    x = randn(3, 4, 20, seed=1, scale=5.0)
    x[0, 0, :len(SPECIAL)] = SPECIAL
    if act[0] in DOMAIN:              # section 9's math where its gradient is finite (NaN/inf: test_v2_tensor)
        x = DOMAIN[act[0]](x)
    X = tt(x, True)
    y = TORCH_ACT[act[0]](X, *act[1:])
    dy = randn(*x.shape, seed=2)
    y.backward(tt(dy))
    reads = K.activation_backward_reads(act[0])
    xin, yin = (x, None) if reads == "x" else (None, y.detach().numpy())
    for scratch in scratch_variants(K.activation_backward_scratch(act, x.shape)):
        dx = np.empty_like(x)
        K.activation_backward(act, xin, yin, dy, dx=dx, scratch=scratch)
        assert_close(dx, X.grad, rtol=1e-5)
        np.testing.assert_allclose(dx[0, 0, :len(SPECIAL)], X.grad.numpy()[0, 0, :len(SPECIAL)], rtol=1e-5,
                                   atol=1e-6)
    inplace = dy.copy()
    K.activation_backward(act, xin, yin, inplace, dx=inplace)
    assert_close(inplace, X.grad, rtol=1e-5)


def test_activation_backward_says_what_it_reads():
    x = randn(2, 3, seed=1)
    with pytest.raises(ValueError, match="reads its input"):
        K.activation_backward(("gelu",), None, x, x, dx=np.empty_like(x))
    with pytest.raises(ValueError, match="reads its output"):
        K.activation_backward(("relu",), x, None, x, dx=np.empty_like(x))


# ------------------------------------------------------------------ softmax

@pytest.mark.parametrize("shape_axis", [((4, 7), 1), ((3, 5, 6), 2), ((3, 5, 6), 1), ((2, 3, 4, 5), 1)],
                         ids=["BK-1", "BTK-2", "BTK-1", "BCHW-1"])
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_backward_matches_autograd(shape_axis, log):
    shape, axis = shape_axis
    X = tt(randn(*shape, seed=1, scale=3.0), True)
    y = (F.log_softmax if log else F.softmax)(X, dim=axis)
    dy = randn(*shape, seed=2)
    y.backward(tt(dy))
    yv = y.detach().numpy()
    kernel = K.log_softmax_backward if log else K.softmax_backward
    shapes = (K.log_softmax_backward_scratch if log else K.softmax_backward_scratch)(shape, axis)
    for scratch in scratch_variants(shapes):
        dx = np.empty(shape, np.float32)
        kernel(yv, dy, axis=axis, dx=dx, scratch=scratch)
        assert_close(dx, X.grad)
    inplace = dy.copy()
    kernel(yv, inplace, axis=axis, dx=inplace)
    assert_close(inplace, X.grad)


# ------------------------------------------------------------------ dropout

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_statistics_and_backward(p):
    x = randn(64, 32, 16, seed=1)
    out, mask = np.empty_like(x), np.empty_like(x)
    K.dropout_train(x, p=p, rng=np.random.default_rng(7), out=out, mask=mask)
    scale = np.float32(1.0 / (1.0 - p))
    assert set(np.unique(mask)) <= {np.float32(0.0), scale}
    kept = float((mask != 0).mean())
    n = mask.size
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)       # 5 sigma
    assert abs(float(mask.mean()) - 1.0) < 5 * np.sqrt(p / (1 - p) / n)
    np.testing.assert_array_equal(out, x * mask)
    # draws are independent: the kept fraction of each example spreads as a binomial one
    per_row = (mask.reshape(64, -1) != 0).mean(axis=1)
    assert 0.5 < per_row.std() / np.sqrt(p * (1 - p) / (mask.size // 64)) < 1.5
    # the same seed draws the same mask
    mask2 = np.empty_like(x)
    K.dropout_train(x, p=p, rng=np.random.default_rng(7), out=np.empty_like(x), mask=mask2)
    np.testing.assert_array_equal(mask, mask2)
    # backward: torch's rule for a fixed mask, dx = dy * mask
    X = tt(x, True)
    (X * tt(mask)).backward(tt(randn(*x.shape, seed=3)))
    dx = np.empty_like(x)
    K.dropout_backward(randn(*x.shape, seed=3), mask, dx=dx)
    assert_close(dx, X.grad)


def test_dropout_p0_keeps_everything_and_p1_drops_everything():
    x = randn(4, 5, seed=1)
    out, mask = np.empty_like(x), np.empty_like(x)
    K.dropout_train(x, p=0.0, rng=np.random.default_rng(0), out=out, mask=mask)
    np.testing.assert_array_equal(out, x)
    K.dropout_train(x, p=1.0, rng=np.random.default_rng(0), out=out, mask=mask)
    assert not out.any() and np.isfinite(mask).all()


# ------------------------------------------------------------------ shape ops and merges

def test_transpose_backward_matches_autograd():
    X = tt(randn(2, 3, 4, 5, seed=1), True)
    perm = (2, 0, 1)                     # without the batch
    y = X.permute(0, 3, 1, 2)
    dy = randn(*y.shape, seed=2)
    y.backward(tt(dy))
    dx = np.empty((2, 3, 4, 5), np.float32)
    K.transpose_backward(dy, perm, dx=dx)
    assert_close(dx, X.grad)


@pytest.mark.parametrize("shape_scale", [((2, 3, 4, 5), (2, 3)), ((2, 3, 4, 5), 2), ((2, 3, 6), 3)])
def test_upsample_backward_sums_each_block(shape_scale):
    shape, scale = shape_scale
    X = tt(randn(*shape, seed=1), True)
    factor = scale if isinstance(scale, int) else tuple(float(s) for s in scale)
    y = F.interpolate(X, scale_factor=factor, mode="nearest")
    dy = randn(*y.shape, seed=2)
    y.backward(tt(dy))
    dx = np.empty(shape, np.float32)
    K.upsample_backward(dy, scale, dx=dx)
    assert_close(dx, X.grad)


@pytest.mark.parametrize("n", [2, 3])
def test_mul_backward_matches_autograd(n):
    xs = [randn(3, 4, 5, seed=k) for k in range(n)]
    Xs = [tt(a, True) for a in xs]
    y = Xs[0]
    for a in Xs[1:]:
        y = y * a
    dy = randn(3, 4, 5, seed=9)
    y.backward(tt(dy))
    for k in range(n):
        dx = np.empty_like(xs[0])
        K.mul_backward(xs, dy, k, dx=dx)
        assert_close(dx, Xs[k].grad)
    inplace = dy.copy()
    K.mul_backward(xs, inplace, 0, dx=inplace)
    assert_close(inplace, Xs[0].grad)


def test_add_sub_concat_gradients_are_dy_its_negation_and_its_slices():
    """The rules the generator applies without a kernel (training-design.md)."""
    a, b, c = (tt(randn(2, 3, 4, seed=k), True) for k in range(3))
    dy = randn(2, 3, 4, seed=5)
    ((a + b) - c).backward(tt(dy))
    assert_close(a.grad.numpy(), dy)
    assert_close(b.grad.numpy(), dy)
    assert_close(c.grad.numpy(), np.negative(dy))
    a.grad = b.grad = None
    y = torch.cat([a, b], dim=2)                  # concat axis 1 without the batch
    dyc = randn(*y.shape, seed=6)
    y.backward(tt(dyc))
    assert_close(a.grad.numpy(), dyc[:, :, :4])
    assert_close(b.grad.numpy(), dyc[:, :, 4:])


# ------------------------------------------------------------------ recurrent

def torch_rnn(kind: str, f: int, h: int, bias: bool):
    torch.manual_seed(0)
    return (torch.nn.GRU if kind == "gru" else torch.nn.LSTM)(f, h, batch_first=True, bias=bias)


def rnn_arrays(m, bias: bool):
    grab = lambda t: t.detach().numpy().copy()  # noqa: E731
    return (grab(m.weight_ih_l0), grab(m.weight_hh_l0), grab(m.bias_ih_l0) if bias else None,
            grab(m.bias_hh_l0) if bias else None)


def run_rnn(kind, x, w_ih, w_hh, b_ih, b_hh, dy, scratch_fill=None):
    b, t, _ = x.shape
    hidden = w_hh.shape[1]
    g = 3 if kind == "gru" else 4
    out = np.full((b, t, hidden), np.nan, x.dtype)
    grads = dict(dx=np.empty_like(x), dw_ih=np.empty_like(w_ih), dw_hh=np.empty_like(w_hh),
                 db_ih=None if b_ih is None else np.empty(g * hidden, x.dtype),
                 db_hh=None if b_hh is None else np.empty(g * hidden, x.dtype))
    train_s, back_s = ((K.gru_train_scratch, K.gru_backward_scratch) if kind == "gru"
                       else (K.lstm_train_scratch, K.lstm_backward_scratch))
    fs = None if scratch_fill is None else planned(train_s(x.shape, hidden), scratch_fill)
    bs = None if scratch_fill is None else planned(back_s(x.shape, hidden), scratch_fill)
    if kind == "gru":
        K.gru_train(x, w_ih, w_hh, b_ih, b_hh, out, scratch=fs)
        if dy is not None:
            K.gru_backward(x, w_ih, w_hh, b_ih, b_hh, out, dy, scratch=bs, **grads)
    else:
        cells = np.full((b, t, hidden), np.nan, x.dtype)
        K.lstm_train(x, w_ih, w_hh, b_ih, b_hh, out, cells, scratch=fs)
        if dy is not None:
            K.lstm_backward(x, w_ih, w_hh, b_ih, b_hh, out, cells, dy, scratch=bs, **grads)
    return out, grads


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("bias", [True, False])
def test_recurrent_train_and_bptt_match_autograd(kind, bias):
    m = torch_rnn(kind, 5, 4, bias)
    x = randn(3, 6, 5, seed=1)
    X = tt(x, True)
    y, _ = m(X)
    dy = randn(*y.shape, seed=2)
    y.backward(tt(dy))
    w_ih, w_hh, b_ih, b_hh = rnn_arrays(m, bias)
    for fill in (None, np.nan, np.inf):
        out, g = run_rnn(kind, x, w_ih, w_hh, b_ih, b_hh, dy, fill)
        assert_close(out, y)
        assert_close(g["dx"], X.grad)
        assert_close(g["dw_ih"], m.weight_ih_l0.grad)
        assert_close(g["dw_hh"], m.weight_hh_l0.grad)
        if bias:
            assert_close(g["db_ih"], m.bias_ih_l0.grad)
            assert_close(g["db_hh"], m.bias_hh_l0.grad)
        else:
            assert g["db_ih"] is None


def test_recurrent_train_forward_equals_the_inference_kernel():
    m = torch_rnn("lstm", 5, 4, True)
    x = randn(2, 7, 5, seed=3)
    w = rnn_arrays(m, True)
    want = np.empty((2, 7, 4), np.float32)
    K.lstm(x, *w, want)
    got, _ = run_rnn("lstm", x, *w, None)
    assert_close(got, want, rtol=1e-6)
    m = torch_rnn("gru", 5, 4, True)
    w = rnn_arrays(m, True)
    K.gru(x, *w, want)
    got, _ = run_rnn("gru", x, *w, None)
    assert_close(got, want, rtol=1e-6)


# ------------------------------------------------------------------ float64 finite differences

def fd_check(forward, backward, inputs: dict[str, np.ndarray], out_shape, eps: float = 1e-6,
             seed: int = 0) -> None:
    """Central differences of L = sum(forward(**inputs) * R) for every element
    of every input, against backward(inputs, R) -> {name: gradient}."""
    r = np.random.default_rng(seed).standard_normal(out_shape)
    grads = backward(inputs, r)
    for name, grad in grads.items():
        a = inputs[name]
        num = np.empty_like(a)
        flat, nflat = a.reshape(-1), num.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + eps
            hi = float(np.vdot(forward(**inputs), r))
            flat[i] = keep - eps
            lo = float(np.vdot(forward(**inputs), r))
            flat[i] = keep
            nflat[i] = (hi - lo) / (2 * eps)
        err = np.linalg.norm(grad - num) / max(np.linalg.norm(num), 1e-12)
        assert err < 1e-6, f"d{name}: relative error {err:.3g} against finite differences"


def f64(*shape, seed):
    return randn(*shape, seed=seed, dtype=np.float64)


def f64_scratch(shapes):
    return {k: np.full(s, np.nan) for k, s in shapes.items()}


def _fd_conv2d(flip: float = 1.0):
    kw = dict(stride=(2, 1), padding=((1, 2), (2, 0)), dilation=(1, 2), groups=2)
    x, w, b = f64(2, 4, 7, 8, seed=1), f64(6, 2, 3, 3, seed=2), f64(6, seed=3)
    out_shape = conv_out_shape(x.shape, w.shape, kw["stride"], kw["padding"], kw["dilation"])

    def forward(x, w, b):
        out = np.empty(out_shape)
        K.conv2d(x, w, b, out, scratch=f64_scratch(K.conv2d_scratch(x.shape, w.shape, **kw)), **kw)
        return out

    def backward(inp, dy):
        g = {k: np.empty_like(v) for k, v in inp.items()}
        K.conv2d_backward(inp["x"], inp["w"], dy, dx=g["x"], dw=g["w"], db=g["b"], **kw)
        g["w"] *= flip
        return g
    return forward, backward, dict(x=x, w=w, b=b), out_shape


def _fd_depthwise():
    kw = dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=3)
    x, w = f64(2, 3, 7, 6, seed=1), f64(6, 1, 3, 3, seed=2)
    out_shape = conv_out_shape(x.shape, w.shape, kw["stride"], kw["padding"], kw["dilation"])

    def forward(x, w):
        out = np.empty(out_shape)
        K.conv2d(x, w, None, out, scratch=f64_scratch(K.conv2d_scratch(x.shape, w.shape, **kw)), **kw)
        return out

    def backward(inp, dy):
        g = {k: np.empty_like(v) for k, v in inp.items()}
        K.conv2d_backward(inp["x"], inp["w"], dy, dx=g["x"], dw=g["w"], db=None, **kw)
        return g
    return forward, backward, dict(x=x, w=w), out_shape


def _fd_batchnorm():
    x, gamma, beta = f64(4, 3, 2, 3, seed=1) * 2 + 1, f64(3, seed=2), f64(3, seed=3)

    def forward(x, gamma, beta):
        out, c = np.empty_like(x), np.empty(3)
        K.batchnorm_train(x, gamma, beta, np.zeros(3), np.ones(3), eps=1e-5, momentum=0.1, out=out, mean=c,
                          rstd=c.copy())
        return out

    def backward(inp, dy):
        mean, rstd = np.empty(3), np.empty(3)
        K.batchnorm_train(inp["x"], inp["gamma"], inp["beta"], np.zeros(3), np.ones(3), eps=1e-5, momentum=0.1,
                          out=np.empty_like(inp["x"]), mean=mean, rstd=rstd)
        g = {k: np.empty_like(v) for k, v in inp.items()}
        K.batchnorm_backward(inp["x"], inp["gamma"], dy, mean, rstd, dx=g["x"], dgamma=g["gamma"], dbeta=g["beta"])
        return g
    return forward, backward, dict(x=x, gamma=gamma, beta=beta), x.shape


def _fd_layernorm():
    x, gamma, beta = f64(2, 3, 5, seed=1) * 2 + 1, f64(5, seed=2), f64(5, seed=3)

    def stats(x):
        return np.empty(x.shape[:-1]), np.empty(x.shape[:-1])

    def forward(x, gamma, beta):
        out = np.empty_like(x)
        mean, rstd = stats(x)
        K.layernorm_train(x, gamma, beta, eps=1e-5, out=out, mean=mean, rstd=rstd)
        return out

    def backward(inp, dy):
        mean, rstd = stats(inp["x"])
        K.layernorm_train(inp["x"], inp["gamma"], inp["beta"], eps=1e-5, out=np.empty_like(inp["x"]), mean=mean,
                          rstd=rstd)
        g = {k: np.empty_like(v) for k, v in inp.items()}
        K.layernorm_backward(inp["x"], inp["gamma"], dy, mean, rstd, dx=g["x"], dgamma=g["gamma"], dbeta=g["beta"])
        return g
    return forward, backward, dict(x=x, gamma=gamma, beta=beta), x.shape


def _fd_recurrent(kind: str):
    def fd():
        g, h = (3 if kind == "gru" else 4), 3
        inputs = dict(x=f64(2, 4, 3, seed=1), w_ih=f64(g * h, 3, seed=2) * 0.5, w_hh=f64(g * h, h, seed=3) * 0.5,
                      b_ih=f64(g * h, seed=4) * 0.5, b_hh=f64(g * h, seed=5) * 0.5)

        def forward(x, w_ih, w_hh, b_ih, b_hh):
            out, _ = run_rnn(kind, x, w_ih, w_hh, b_ih, b_hh, None)
            return out

        def backward(inp, dy):
            _, grads = run_rnn(kind, inp["x"], inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"], dy)
            return dict(x=grads["dx"], w_ih=grads["dw_ih"], w_hh=grads["dw_hh"], b_ih=grads["db_ih"],
                        b_hh=grads["db_hh"])
        return forward, backward, inputs, (2, 4, h)
    return fd


def _fd_softmax(log: bool):
    def fd():
        x, axis = f64(2, 4, 3, seed=1), 1
        fwd, bwd = (K.log_softmax, K.log_softmax_backward) if log else (K.softmax, K.softmax_backward)
        scratch_fn = K.log_softmax_scratch if log else K.softmax_scratch

        def forward(x):
            out = np.empty_like(x)
            fwd(x, axis, out, scratch=f64_scratch(scratch_fn(x.shape, axis)))
            return out

        def backward(inp, dy):
            dx = np.empty_like(dy)
            bwd(forward(inp["x"]), dy, axis=axis, dx=dx)
            return dict(x=dx)
        return forward, backward, dict(x=x), x.shape
    return fd


def _fd_maxpool():
    x = f64(2, 2, 7, 6, seed=1)
    kw = dict(kernel=(3, 3), stride=(2, 2), padding=((1, 1), (1, 1)))
    out_shape = (2, 2, 4, 3)

    def run(x):
        out, argmax = np.empty(out_shape), np.empty(out_shape, np.int32)
        K.maxpool2d_train(x, out, argmax, **kw)
        return out, argmax

    def backward(inp, dy):
        dx = np.empty_like(inp["x"])
        K.maxpool2d_backward(dy, run(inp["x"])[1], dx=dx)
        return dict(x=dx)
    return lambda x: run(x)[0], backward, dict(x=x), out_shape


def _fd_gelu():
    x = f64(3, 7, seed=1) * 2

    def forward(x):                        # the exact erf form, in float64
        return F.gelu(torch.from_numpy(x)).numpy()

    def backward(inp, dy):
        dx = np.empty_like(dy)
        K.activation_backward(("gelu",), inp["x"], None, dy, dx=dx)
        return dict(x=dx)
    return forward, backward, dict(x=x), x.shape


FD_CASES = {
    "conv2d_grouped_dilated_strided": _fd_conv2d, "depthwise_mult_2": _fd_depthwise,
    "batchnorm": _fd_batchnorm, "layernorm": _fd_layernorm, "gru": _fd_recurrent("gru"),
    "lstm": _fd_recurrent("lstm"), "softmax": _fd_softmax(False), "log_softmax": _fd_softmax(True),
    "maxpool2d": _fd_maxpool, "gelu": _fd_gelu,
}


@pytest.mark.parametrize("case", FD_CASES, ids=list(FD_CASES))
def test_backward_rule_matches_float64_finite_differences(case):
    forward, backward, inputs, out_shape = FD_CASES[case]()
    fd_check(forward, backward, inputs, out_shape)


def test_fd_check_catches_a_wrong_rule():
    forward, backward, inputs, out_shape = _fd_conv2d(flip=-1.0)
    with pytest.raises(AssertionError, match="dw"):
        fd_check(forward, backward, inputs, out_shape)
