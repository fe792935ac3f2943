"""global_maxpool and adaptive_avgpool1d/2d (LANGUAGE.md section 9) on both
targets against PyTorch at -O0 and -O1 (PyTorch's uneven bins, growing and
shrinking), training gradients vs autograd, growth through them, the
streaming refusal and diagnostics."""

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
    "global_maxpool_image": ("model m(x: [4, 5, 6]) {\n    global_maxpool\n}", (4, 5, 6),
                             lambda x: x.amax(dim=(2, 3))),
    "global_maxpool_signal_then_dense": ("model m(x: [4, 9]) {\n    c: conv1d(3, 2) -> global_maxpool\n}", (4, 9),
                                         None),
    "adaptive2d_uneven_bins": ("model m(x: [3, 7, 10]) {\n    adaptive_avgpool2d((3, 4))\n}", (3, 7, 10),
                               lambda x: F.adaptive_avg_pool2d(x, (3, 4))),
    "adaptive2d_to_one": ("model m(x: [3, 5, 6]) {\n    adaptive_avgpool2d(1)\n}", (3, 5, 6),
                          lambda x: F.adaptive_avg_pool2d(x, 1)),
    "adaptive2d_larger_than_input": ("model m(x: [2, 3, 4]) {\n    adaptive_avgpool2d((5, 6))\n}", (2, 3, 4),
                                     lambda x: F.adaptive_avg_pool2d(x, (5, 6))),
    "adaptive1d": ("model m(x: [3, 11]) {\n    adaptive_avgpool1d(4)\n}", (3, 11),
                   lambda x: F.adaptive_avg_pool1d(x, 4)),
}


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_pool_matches_pytorch(case, optimize, target):
    src, shape, ref = CASES[case]
    model = nnc.build(src, target=target, batch=2, optimize=optimize)
    rng = np.random.default_rng(5)
    state = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in model.state_dict().items()}
    model.load_weights(state)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    tx = torch.from_numpy(x)
    if ref is None:
        expected = F.conv1d(tx, torch.from_numpy(state["c.weight"]), torch.from_numpy(state["c.bias"])).amax(dim=2)
    else:
        expected = ref(tx)
    got = model(x)
    assert got.shape == tuple(expected.shape)
    assert rel_err(got, expected.detach().numpy()) < 1e-4


@pytest.mark.parametrize("pool, ref", [
    ("global_maxpool", lambda y: y.amax(dim=(2, 3))),
    ("adaptive_avgpool2d((2, 3))", lambda y: F.adaptive_avg_pool2d(y, (2, 3)).flatten(1)),
])
def test_pool_training_gradients_match_autograd(pool, ref):
    src = f"model m(x: [2, 6, 7]) {{\n    c: conv2d(3, 2) -> {pool}\n    flatten\n    d: dense(2)\n}}"
    batch = 3
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True, seed=1)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in trainer.state_dict().items()}
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 2, 6, 7)).astype(np.float32)
    out = F.linear(ref(F.conv2d(torch.tensor(x, dtype=torch.float64), P["c.weight"], P["c.bias"])),
                   P["d.weight"], P["d.bias"])
    y = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    loss = trainer.step(x, y)
    value = F.mse_loss(out, torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    for k, p in P.items():
        ref_g = p.grad.numpy()
        assert np.linalg.norm(grads[k] - ref_g) / max(np.linalg.norm(ref_g), 1e-8) < 1e-4, k


def test_adaptive_avgpool1d_kernel_gradient():
    from nnc.runtime import kernels as K
    x = np.random.default_rng(0).standard_normal((2, 3, 13))
    tx = torch.tensor(x, requires_grad=True)
    ty = F.adaptive_avg_pool1d(tx, 5)
    dy = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    dx = np.empty_like(x)
    K.adaptive_avgpool1d_backward(dy, size=5, dx=dx)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool", ["global_maxpool", "adaptive_avgpool2d(2)"])
def test_channels_grow_through_the_pools(pool):
    old = f"model m(x: [3, 6, 6]) {{\n    a: conv2d(4, 3) -> {pool}\n    flatten\n    d: dense(2)\n}}"
    new = old.replace("conv2d(4, 3)", "conv2d(5, 3)")
    grown, _ = nnc.grow(old, new, nnc.build(old).state_dict())
    assert grown["a.weight"].shape == (5, 3, 3, 3)
    assert grown["d.weight"].shape[1] == (5 if pool == "global_maxpool" else 20)


@pytest.mark.parametrize("src, fragment", [
    ("model m(x: [3, T]) {\n    adaptive_avgpool1d(4)\n}", "needs a known size to pool"),
    ("model m(x: [3, 8]) {\n    adaptive_avgpool2d(4)\n}", "adaptive_avgpool2d expects [C, H, W]"),
    ("model m(x: [3, 8]) {\n    adaptive_avgpool1d((2, 2))\n}", "single integer size"),
    ("model m(x: [3]) {\n    global_maxpool\n}", "at least one axis to pool"),
])
def test_pool_diagnostics(src, fragment):
    with pytest.raises(CompileError) as e:
        nnc.build(src)
    assert fragment in str(e.value)


def test_global_maxpool_over_time_cannot_stream():
    with pytest.raises(CompileError) as e:
        nnc.build("model m(x: [3, T]) {\n    g: global_maxpool\n}", stream=True)
    assert "E0401" in str(e.value) and "`g` (global_maxpool) cannot stream" in str(e.value)
