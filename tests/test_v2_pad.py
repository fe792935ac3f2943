"""pad (LANGUAGE.md section 9): constant, reflect and replicate in F.pad order
on both targets against PyTorch at -O0 and -O1 (reflect at its largest
padding), the training gradient, the streaming rule (a causal zero pad streams
as a delay line; anything else on the time axis is E0401) and diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.compiler.diagnostics import CompileError
from numerics import rel_err

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)




CASES = {
    "constant_value_last_two_axes": ("model m(x: [3, 5, 6]) {\n    pad((1, 2, 0, 3), value=1.5)\n}", (3, 5, 6),
                                     lambda x, w: F.pad(x, (1, 2, 0, 3), value=1.5)),
    "reflect_at_the_largest_padding": ("model m(x: [3, 4, 5]) {\n    pad((4, 4, 3, 1), mode=reflect)\n}", (3, 4, 5),
                                       lambda x, w: F.pad(x, (4, 4, 3, 1), mode="reflect")),
    "replicate_beyond_the_size": ("model m(x: [2, 3, 4]) {\n    pad((5, 0, 1, 6), mode=replicate)\n}", (2, 3, 4),
                                  lambda x, w: F.pad(x, (5, 0, 1, 6), mode="replicate")),
    "reflect_1d": ("model m(x: [3, 7]) {\n    pad((2, 6), mode=reflect)\n}", (3, 7),
                   lambda x, w: F.pad(x, (2, 6), mode="reflect")),
    "last_axis_of_an_image": ("model m(x: [2, 3, 4]) {\n    pad((1, 2), mode=replicate)\n}", (2, 3, 4),
                              lambda x, w: F.pad(x.reshape(2, 6, 4), (1, 2), mode="replicate").reshape(2, 2, 3, 7)),
    "reflect_then_conv": ("model m(x: [3, 8, 8]) {\n    pad((1, 1, 1, 1), mode=reflect) -> c: conv2d(4, 3) -> relu\n}",
                          (3, 8, 8), lambda x, w: F.relu(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"),
                                                                  w["c.weight"], w["c.bias"]))),
}


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_pad_matches_pytorch(case, optimize, target):
    src, shape, ref = CASES[case]
    model = nnc.build(src, target=target, batch=2, optimize=optimize)
    rng = np.random.default_rng(5)
    state = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in model.state_dict().items()}
    model.load_weights(state)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x), {k: torch.from_numpy(v) for k, v in state.items()}).numpy()
    got = model(x)
    assert got.shape == expected.shape
    assert rel_err(got, expected) < 1e-4


@pytest.mark.parametrize("src, fragment", [
    ("model m(x: [3, 4, 5]) {\n    pad((5, 0), mode=reflect)\n}", "reflect padding 5 is not smaller than the size 5"),
    ("model m(x: [3, 4, 5]) {\n    pad((0, 0, 4, 0), mode=reflect)\n}", "not smaller than the size 4 of axis 1"),
    ("model m(x: [3, 4, 5]) {\n    pad((1, 1, 1))\n}", "pad takes (left, right) or (left, right, top, bottom)"),
    ("model m(x: [5]) {\n    pad((1, 1, 1, 1))\n}", "pad takes (left, right)"),
    ("model m(x: [3, 4, 5]) {\n    pad((1, -1))\n}", "pad sizes must not be negative"),
    ("model m(x: [3, 4, 5]) {\n    pad((1, 1), mode=reflekt)\n}", "did you mean `reflect`"),
    ("model m(x: [3, T]) {\n    pad((1, 1), mode=reflect)\n}", "needs a known size"),
])
def test_pad_diagnostics(src, fragment):
    with pytest.raises(CompileError) as e:
        nnc.build(src)
    assert fragment in str(e.value)


CAUSAL = "model m(x: [3, T]) {\n    pad((4, 0)) -> c: conv1d(5, 3, dilation=2) -> relu\n}"


def test_causal_pad_streams_like_the_whole_sequence(target):
    n = 40
    x = np.random.default_rng(4).standard_normal((2, 3, n)).astype(np.float32)
    whole = nnc.build(CAUSAL, target=target, batch=2, dims={"T": n})
    stream = nnc.build(CAUSAL, target=target, batch=2, stream=True, dims={"T": 16})
    weights = whole.state_dict()
    stream.load_weights(weights)
    expected = np.array(whole(x))
    steps = np.stack([np.array(stream.step(x[:, :, t])) for t in range(n)], axis=2)
    np.testing.assert_allclose(steps, expected, rtol=1e-4, atol=1e-5)
    stream.reset()
    pieces = [np.array(stream.stream(x[:, :, a:b])) for a, b in [(0, 1), (1, 3), (3, 19), (19, 40)]]
    np.testing.assert_allclose(np.concatenate(pieces, axis=2), expected, rtol=1e-4, atol=1e-5)


def test_pad_off_the_time_axis_streams_per_step(target):
    src = "model m(x: [T, 3]) {\n    pad((1, 2), mode=replicate) -> d: dense(2)\n}"
    x = np.random.default_rng(4).standard_normal((1, 9, 3)).astype(np.float32)
    whole = nnc.build(src, target=target, dims={"T": 9})
    stream = nnc.build(src, target=target, stream=True)
    stream.load_weights(whole.state_dict())
    steps = np.stack([np.array(stream.step(x[:, t])) for t in range(9)], axis=1)
    np.testing.assert_allclose(steps, np.array(whole(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("src", [
    "model m(x: [3, T]) {\n    p: pad((0, 2))\n}",
    "model m(x: [3, T]) {\n    p: pad((2, 0), value=1)\n}",
    "model m(x: [3, 5, T]) {\n    p: pad((2, 0))\n}",
])
def test_non_causal_pad_on_the_time_axis_cannot_stream(src):
    with pytest.raises(CompileError) as e:
        nnc.build(src, stream=True)
    assert "E0401" in str(e.value) and "`p` (pad) cannot stream" in str(e.value)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate"])
def test_pad_training_gradient_matches_autograd(mode):
    src = (f"model m(x: [2, 4, 5]) {{\n    pad((3, 1, 2, 3), mode={mode}) -> c: conv2d(3, 2)\n    flatten\n"
           "    d: dense(2)\n}")
    batch = 3
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True, seed=1)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in trainer.state_dict().items()}
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 2, 4, 5)).astype(np.float32)
    tx = torch.tensor(x, dtype=torch.float64)
    out = F.linear(F.conv2d(F.pad(tx, (3, 1, 2, 3), mode=mode), P["c.weight"], P["c.bias"]).flatten(1),
                   P["d.weight"], P["d.bias"])
    y = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    loss = trainer.step(x, y)
    value = F.mse_loss(out, torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    for k, p in P.items():
        ref = p.grad.numpy()
        assert np.linalg.norm(grads[k] - ref) / max(np.linalg.norm(ref), 1e-8) < 1e-4, k


def test_pad_kernel_gradient_matches_autograd():
    from nnc.runtime import kernels as K
    rng = np.random.default_rng(0)
    for mode in ("reflect", "replicate", "constant"):
        x = rng.standard_normal((2, 3, 4, 5))
        tx = torch.tensor(x, requires_grad=True)
        ty = F.pad(tx, (4, 2, 3, 1), mode=mode)
        dy = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(dy))
        dx = np.empty_like(x)
        K.pad_backward(dy, ((3, 1), (4, 2)), mode, dx=dx)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_pad_keeps_channel_units_for_growth():
    old = "model m(x: [3, 6, 6]) {\n    a: conv2d(4, 3) -> pad((1, 1, 1, 1), mode=reflect) -> b: conv2d(2, 3)\n}"
    new = old.replace("conv2d(4, 3)", "conv2d(6, 3)")
    grown, _ = nnc.grow(old, new, nnc.build(old).state_dict())
    assert grown["a.weight"].shape == (6, 3, 3, 3) and grown["b.weight"].shape == (2, 6, 3, 3)
