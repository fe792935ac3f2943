"""Convolution kernels that work chunk by chunk of examples: their scratch is
bounded whatever the batch, and chunking changes no result (checked against
one chunk over the whole batch and against PyTorch's autograd)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnc.runtime import conv as C

CASES = [  # x shape, w shape, stride, padding, dilation, groups
    ((7, 3, 9, 8), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ((5, 4, 11, 9), (6, 2, 3, 2), (2, 1), ((2, 0), (1, 1)), (1, 2), 2),
    ((6, 2, 10, 10), (3, 2, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1),
    ((4, 3, 12, 12), (5, 3, 3, 3), (2, 2), ((0, 0), (0, 0)), (2, 2), 1),
]


def _scratch(shapes):
    return {k: np.full(s, np.nan, np.float64) for k, s in shapes.items()}


def _backward(x, w, dy, kw):
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty(w.shape[0], x.dtype)
    sc = _scratch(C.conv2d_backward_scratch(x.shape, w.shape, **kw))
    C.conv2d_backward(x, w, dy, dx=dx, dw=dw, db=db, scratch=sc, **kw)
    return dx, dw, db


@pytest.mark.parametrize("case", CASES)
def test_chunked_conv_backward_and_forward_equal_a_single_chunk_and_autograd(case, monkeypatch):
    torch = pytest.importorskip("torch")
    xs, ws, stride, pads, dil, groups = case
    kw = dict(stride=stride, padding=pads, dilation=dil, groups=groups)
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    plan = C._conv_plan(xs, ws, stride, pads, dil, groups)
    dy = rng.standard_normal(plan.out_shape)
    whole = _backward(x, w, dy, kw)
    out_whole = np.empty(plan.out_shape)
    C.conv2d(x, w, None, out_whole, scratch=_scratch(C.conv2d_scratch(xs, ws, **kw)), **kw)
    monkeypatch.setattr(C, "_COLS", 1)                  # one example per chunk
    C._conv_plan.cache_clear()
    chunked = _backward(x, w, dy, kw)
    assert C.conv2d_backward_scratch(xs, ws, **kw)["cols"][0] == 1
    out = np.empty(plan.out_shape)
    C.conv2d(x, w, None, out, scratch=_scratch(C.conv2d_scratch(xs, ws, **kw)), **kw)
    C._conv_plan.cache_clear()
    np.testing.assert_allclose(out, out_whole, rtol=1e-12, atol=1e-12)
    for a, b in zip(chunked, whole):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    (ph, _), (pw, _) = pads
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (pw, pads[1][1], ph, pads[0][1])), tw,
                                    stride=stride, dilation=dil, groups=groups)
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(chunked[0], tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(chunked[1], tw.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_conv_scratch_stops_growing_with_the_batch():
    def total(batch, fn):
        shapes = fn((batch, 6, 28, 28), (16, 6, 5, 5), stride=1, padding=((2, 2), (2, 2)), dilation=1, groups=1)
        return sum(math.prod(s) for s in shapes.values())
    for fn in (C.conv2d_scratch, C.conv2d_backward_scratch):
        assert total(256, fn) == total(64, fn) >= total(2, fn) >= total(1, fn)   # a few examples' worth at most
    small = C.conv2d_backward_scratch((512, 1, 8, 8), (4, 1, 3, 3), stride=1, padding=((1, 1), (1, 1)),
                                      dilation=1, groups=1)
    per_example = small["dy_t"][1] + small["phases"][1] + small["cols"][1]     # the backward's chunk: < the batch
    assert small["dy_t"][0] * per_example <= C._COLS < 512 * per_example


@pytest.mark.parametrize("act", [("relu",), ("relu6",), ("leaky_relu", 0.1), ("tanh",), ("sigmoid",), ("elu", 1.0),
                                 ("hardswish",), ("silu",)])
def test_activation_backward_block_by_block_equals_whole_arrays_also_in_place(act, monkeypatch):
    from nnc.runtime import elementwise as E
    if act[0] not in E._GRADS:
        pytest.skip(f"{act[0]} is not an activation here")
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 5, 7)) * 4).astype(np.float32)
    src = {"x": x, "y": np.maximum(x, 0) if act[0] == "relu" else x}
    dy = rng.standard_normal(x.shape).astype(np.float32)
    whole = np.empty_like(x)
    E.activation_backward(act, x, src["y"], dy, dx=whole)
    monkeypatch.setattr(E, "_ACT_BLOCK", 7)
    assert E.activation_backward_scratch(act, x.shape)["act_tmp"] == (7,)
    inplace = dy.copy()
    E.activation_backward(act, x, src["y"], inplace, dx=inplace,
                          scratch={k: np.full(s, np.nan, np.float32)
                                   for k, s in E.activation_backward_scratch(act, x.shape).items()})
    np.testing.assert_array_equal(inplace, whole)
