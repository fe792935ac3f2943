"""conv_transpose1d/2d (LANGUAGE.md section 9): both targets against PyTorch at
-O0 and -O1 (stride, padding, output_padding, dilation, groups, bias), the
training gradients against torch.autograd, growth of `filters`, the streaming
refusal and the argument diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.compiler.diagnostics import CompileError
from numerics import rel_err

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)




def run(src: str, in_shape, reference, target: str, optimize: bool):
    model = nnc.build(src, target=target, batch=2, optimize=optimize)
    rng = np.random.default_rng(3)
    state = {k: rng.standard_normal(v.shape).astype(np.float32) * 0.5 for k, v in model.state_dict().items()}
    model.load_weights(state)
    x = rng.standard_normal((2, *in_shape)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x), {k: torch.from_numpy(v) for k, v in state.items()}).numpy()
    got = model(x)
    assert got.shape == expected.shape
    assert rel_err(got, expected) < 1e-4


CASES = {
    "2d_stride2_output_padding_grouped": (
        "model m(x: [4, 5, 6]) {\n    c: conv_transpose2d(6, 3, stride=2, padding=1, output_padding=1, groups=2)\n}",
        (4, 5, 6), lambda x, w: F.conv_transpose2d(x, w["c.weight"], w["c.bias"], stride=2, padding=1,
                                                    output_padding=1, groups=2)),
    "2d_pairs_dilation_no_bias": (
        "model m(x: [3, 4, 5]) {\n    c: conv_transpose2d(2, (2, 3), stride=(1, 2), padding=(0, 1), "
        "output_padding=(0, 1), dilation=(2, 1), bias=false)\n}",
        (3, 4, 5), lambda x, w: F.conv_transpose2d(x, w["c.weight"], None, stride=(1, 2), padding=(0, 1),
                                                    output_padding=(0, 1), dilation=(2, 1))),
    "2d_output_padding_below_dilation_not_stride": (
        "model m(x: [3, 4, 5]) {\n    c: conv_transpose2d(2, 3, output_padding=1, dilation=2)\n}",
        (3, 4, 5), lambda x, w: F.conv_transpose2d(x, w["c.weight"], w["c.bias"], output_padding=1, dilation=2)),
    "2d_depthwise_then_relu": (
        "model m(x: [4, 4, 5]) {\n    c: conv_transpose2d(8, 4, stride=2, padding=1, groups=4) -> relu\n}",
        (4, 4, 5), lambda x, w: F.relu(F.conv_transpose2d(x, w["c.weight"], w["c.bias"], stride=2, padding=1,
                                                           groups=4))),
    "1d_stride_padding_output_padding": (
        "model m(x: [3, 9]) {\n    c: conv_transpose1d(5, 4, stride=3, padding=2, output_padding=2)\n}",
        (3, 9), lambda x, w: F.conv_transpose1d(x, w["c.weight"], w["c.bias"], stride=3, padding=2,
                                                output_padding=2)),
    "1d_pointwise_after_conv": (
        "model m(x: [3, 10]) {\n    a: conv1d(4, 3) -> c: conv_transpose1d(3, 3, dilation=2, groups=1)\n}",
        (3, 10), lambda x, w: F.conv_transpose1d(F.conv1d(x, w["a.weight"], w["a.bias"]), w["c.weight"],
                                                 w["c.bias"], dilation=2)),
    "2d_written_into_a_concat_slice": (
        "model m(x: [4, 6, 6]) {\n    d = x -> a: conv2d(8, 3, stride=2, padding=1) -> relu\n"
        "    u = d -> up: conv_transpose2d(4, 2, stride=2)\n    concat(x, u) -> c: conv2d(2, 1)\n}",
        (4, 6, 6), lambda x, w: F.conv2d(torch.cat([x, F.conv_transpose2d(
            F.relu(F.conv2d(x, w["a.weight"], w["a.bias"], stride=2, padding=1)), w["up.weight"], w["up.bias"],
            stride=2)], 1), w["c.weight"], w["c.bias"])),
}


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_conv_transpose_matches_pytorch(case, optimize, target):
    src, shape, ref = CASES[case]
    run(src, shape, ref, target, optimize)


def test_conv_transpose_shapes_params_and_default_init():
    model = nnc.build("model m(x: [4, 7, 7]) {\n    c: conv_transpose2d(6, 3, stride=2, padding=1, "
                      "output_padding=1, groups=2)\n}", batch=1)
    sd = model.state_dict()
    assert sd["c.weight"].shape == (4, 3, 3, 3)          # [C, filters/groups, kh, kw]
    assert sd["c.bias"].shape == (6,)
    layer = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    assert model(np.zeros((1, 4, 7, 7), np.float32)).shape == layer(torch.zeros(1, 4, 7, 7)).shape
    bound = 1 / np.sqrt(3 * 9)                           # PyTorch's fan-in: weight axis 1 times the kernel
    assert np.abs(sd["c.weight"]).max() <= bound and np.abs(sd["c.weight"]).max() > bound * 0.8


@pytest.mark.parametrize("src, fragment", [
    ("model m(x: [6, 5, 5]) {\n    conv_transpose2d(4, 3, groups=4)\n}", "groups=4 does not divide the 6 input"),
    ("model m(x: [4, 5, 5]) {\n    conv_transpose2d(6, 3, groups=4)\n}", "groups=4 does not divide the 6 output"),
    ("model m(x: [4, 5, 5]) {\n    conv_transpose2d(6, 3, stride=2, output_padding=2)\n}",
     "output_padding 2 must be smaller than the stride 2 or the dilation 1"),
    ("model m(x: [4, 9]) {\n    conv_transpose1d(6, 3, output_padding=1)\n}", "output_padding 1 must be smaller"),
    ("model m(x: [4, 9]) {\n    conv_transpose2d(6, 3)\n}", "conv_transpose2d expects [C, H, W]"),
    ("model m(x: [4, 9]) {\n    conv_transpose1d(6, 2, padding=5)\n}", "output size on axis T would be"),
])
def test_conv_transpose_diagnostics(src, fragment):
    with pytest.raises(CompileError) as e:
        nnc.build(src)
    assert fragment in str(e.value)


def test_conv_transpose_cannot_stream():
    with pytest.raises(CompileError) as e:
        nnc.build("model m(x: [4, T]) {\n    up: conv_transpose1d(4, 2, stride=2)\n}", stream=True)
    assert "E0401" in str(e.value) and "`up` (conv_transpose1d) cannot stream" in str(e.value)


@pytest.mark.parametrize("src, shape, forward", [
    ("model m(x: [4, 5, 6]) {\n    c: conv_transpose2d(6, 3, stride=2, padding=1, output_padding=1, groups=2)\n"
     "    flatten\n    d: dense(3)\n}", (4, 5, 6),
     lambda x, P: F.linear(F.conv_transpose2d(x, P["c.weight"], P["c.bias"], stride=2, padding=1,
                                              output_padding=1, groups=2).flatten(1), P["d.weight"], P["d.bias"])),
    ("model m(x: [3, 5, 4]) {\n    c: conv_transpose2d(2, 3, output_padding=1, dilation=2, bias=false)\n"
     "    flatten\n    d: dense(3)\n}", (3, 5, 4),
     lambda x, P: F.linear(F.conv_transpose2d(x, P["c.weight"], None, output_padding=1, dilation=2).flatten(1),
                           P["d.weight"], P["d.bias"])),
    ("model m(x: [3, 7]) {\n    a: conv1d(4, 2) -> c: conv_transpose1d(5, 3, stride=2, padding=1)\n    flatten\n"
     "    d: dense(2)\n}", (3, 7),
     lambda x, P: F.linear(F.conv_transpose1d(F.conv1d(x, P["a.weight"], P["a.bias"]), P["c.weight"],
                                              P["c.bias"], stride=2, padding=1).flatten(1),
                           P["d.weight"], P["d.bias"])),
])
def test_conv_transpose_training_gradients_match_autograd(src, shape, forward):
    batch = 3
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True, seed=1)
    state = trainer.state_dict()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in state.items()}
    out = forward(torch.tensor(x, dtype=torch.float64), P)
    y = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    loss = trainer.step(x, y)
    value = F.mse_loss(out, torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    for k, p in P.items():
        ref = p.grad.numpy()
        assert np.linalg.norm(grads[k] - ref) / max(np.linalg.norm(ref), 1e-8) < 1e-4, k


def test_conv_transpose_grows_filters_on_weight_axis_1():
    old = "model m(x: [4, 5, 5]) {\n    c: conv_transpose2d(6, 3, stride=2, groups=2) -> relu\n    d: conv2d(3, 1)\n}"
    new = "model m(x: [4, 5, 5]) {\n    c: conv_transpose2d(10, 3, stride=2, groups=2) -> relu\n    d: conv2d(3, 1)\n}"
    small = nnc.build(old, batch=2)
    weights = small.state_dict()
    grown, _ = nnc.grow(old, new, weights)
    assert grown["c.weight"].shape == (4, 5, 3, 3)
    assert grown["c.bias"].shape == (10,)
    assert grown["d.weight"].shape == (3, 10, 1, 1)
    big = nnc.build(new, batch=2)
    big.load_weights(grown)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)
    assert rel_err(big(x), small(x)) < 1e-5                # new units start at zero: the function is kept
