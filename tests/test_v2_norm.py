"""groupnorm, instancenorm and batchnorm's momentum (LANGUAGE.md section 9):
both targets against PyTorch at -O0 and -O1, training gradients vs autograd
(and layernorm's training step on values of one, two and three axes),
the running statistics with a non-default momentum, growth, streaming and
diagnostics."""

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
    "groupnorm_image": ("model m(x: [6, 4, 5]) {\n    n: groupnorm(3, eps=0.001)\n}", (6, 4, 5),
                        lambda x, w: F.group_norm(x, 3, w["n.weight"], w["n.bias"], 0.001)),
    "groupnorm_one_group_signal": ("model m(x: [4, 9]) {\n    n: groupnorm(1)\n}", (4, 9),
                                   lambda x, w: F.group_norm(x, 1, w["n.weight"], w["n.bias"])),
    "groupnorm_after_conv_relu": (
        "model m(x: [3, 6, 6]) {\n    c: conv2d(8, 3) -> n: groupnorm(4) -> relu\n}", (3, 6, 6),
        lambda x, w: F.relu(F.group_norm(F.conv2d(x, w["c.weight"], w["c.bias"]), 4, w["n.weight"], w["n.bias"]))),
    # nn.GroupNorm takes (N, C): a group's values are its channels (it was E0203)
    "groupnorm_features": ("model m(x: [12]) {\n    d: dense(6)\n    n: groupnorm(2)\n}", (12,),
                           lambda x, w: F.group_norm(F.linear(x, w["d.weight"], w["d.bias"]), 2, w["n.weight"],
                                                     w["n.bias"])),
    "instancenorm_plain": ("model m(x: [3, 5, 6]) {\n    instancenorm\n}", (3, 5, 6),
                           lambda x, w: F.instance_norm(x)),
    "instancenorm_affine_1d": ("model m(x: [4, 11]) {\n    n: instancenorm(eps=0.01, affine=true)\n}", (4, 11),
                               lambda x, w: F.instance_norm(x, weight=w["n.weight"], bias=w["n.bias"], eps=0.01)),
}


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_norm_matches_pytorch(case, optimize, target):
    src, shape, ref = CASES[case]
    model = nnc.build(src, target=target, batch=2, optimize=optimize)
    rng = np.random.default_rng(5)
    state = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in model.state_dict().items()}
    model.load_weights(state)
    x = (rng.standard_normal((2, *shape)) * 3 + 1).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x), {k: torch.from_numpy(v) for k, v in state.items()}).numpy()
    got = model(x)
    assert got.shape == expected.shape
    assert rel_err(got, expected) < 1e-4


def test_parameters_follow_pytorch():
    sd = nnc.build("model m(x: [6, 4]) {\n    a: groupnorm(2)\n    b: instancenorm\n    c: instancenorm(affine=true)\n}"
                   ).state_dict()
    assert sorted(sd) == ["a.bias", "a.weight", "c.bias", "c.weight"]
    assert (sd["a.weight"] == 1).all() and (sd["a.bias"] == 0).all()


@pytest.mark.parametrize("norm, ref", [
    ("n: groupnorm(2)", lambda y, P: F.group_norm(y, 2, P["n.weight"], P["n.bias"])),
    ("n: instancenorm(affine=true)", lambda y, P: F.instance_norm(y, weight=P["n.weight"], bias=P["n.bias"])),
    ("instancenorm", lambda y, P: F.instance_norm(y)),
])
def test_norm_training_gradients_match_autograd(norm, ref):
    src = f"model m(x: [2, 6, 7]) {{\n    c: conv2d(4, 2) -> {norm}\n    flatten\n    d: dense(2)\n}}"
    batch = 3
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True, seed=1)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in trainer.state_dict().items()}
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 2, 6, 7)).astype(np.float32)
    out = F.linear(ref(F.conv2d(torch.tensor(x, dtype=torch.float64), P["c.weight"], P["c.bias"]), P).flatten(1),
                   P["d.weight"], P["d.bias"])
    y = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    loss = trainer.step(x, y)
    value = F.mse_loss(out, torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    assert sorted(grads) == sorted(P)
    # a conv bias before an instance norm has a zero gradient, which float32 forms as rounding noise
    # of the sums that cancel: it is compared absolutely, against a hundredth of the largest gradient
    floor = 1e-2 * max(np.linalg.norm(p.grad.numpy()) for p in P.values())
    for k, p in P.items():
        ref_g = p.grad.numpy()
        assert np.linalg.norm(grads[k] - ref_g) / max(np.linalg.norm(ref_g), floor) < 1e-4, k


def test_groupnorm_of_features_trains_as_autograd_and_exports():
    """groupnorm on [C] (nn.GroupNorm's (N, C)): the training step's gradients equal autograd's and the
    ONNX export runs in onnxruntime with nnc's output."""
    src = "model m(x: [5]) {\n    h: dense(6)\n    n: groupnorm(3)\n    o: dense(2)\n}"
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=4, keep_gradients=True, seed=3)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in trainer.state_dict().items()}
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32)
    h = F.group_norm(F.linear(torch.tensor(x, dtype=torch.float64), P["h.weight"], P["h.bias"]), 3, P["n.weight"],
                     P["n.bias"])
    value = F.mse_loss(F.linear(h, P["o.weight"], P["o.bias"]), torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(trainer.step(x, y) - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    for k, p in P.items():
        assert rel_err(grads[k], p.grad.numpy()) < 1e-4, k
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import tempfile
    weights = trainer.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        nnc.to_onnx(src, weights, f"{tmp}/m.onnx")
        got = ort.InferenceSession(f"{tmp}/m.onnx").run(None, {"x": x})[0]
    np.testing.assert_allclose(got, nnc.build(src, batch=4, weights=weights)(x), rtol=1e-4, atol=1e-5)


def _layernorm(y, P, label, eps=1e-5):
    return F.layer_norm(y, (y.shape[-1],), P[f"{label}.weight"], P[f"{label}.bias"], eps)


def _dense(y, P, label):
    return F.linear(y, P[f"{label}.weight"], P[f"{label}.bias"])


# layernorm in training on values of one, two and three axes (a one-axis value saves its
# statistics as [B, 1], which the kernels once refused), with eps, first in the model (no dx),
# chained, and at batch 1
LAYERNORM_TRAINING = {
    "one_axis": ("model m(x: [4]) {\n    d: dense(5) -> n: layernorm\n    o: dense(3)\n}", (4,),
                 lambda x, P: _dense(_layernorm(_dense(x, P, "d"), P, "n"), P, "o")),
    "one_axis_last": ("model m(x: [4]) {\n    d: dense(5) -> n: layernorm\n}", (4,),
                      lambda x, P: _layernorm(_dense(x, P, "d"), P, "n")),
    "one_axis_first_with_eps": ("model m(x: [6]) {\n    n: layernorm(eps=0.01)\n    o: dense(3)\n}", (6,),
                                lambda x, P: _dense(_layernorm(x, P, "n", 0.01), P, "o")),
    "one_axis_twice": ("model m(x: [4]) {\n    d: dense(5) -> a: layernorm -> relu -> b: layernorm\n"
                       "    o: dense(2)\n}", (4,),
                       lambda x, P: _dense(_layernorm(F.relu(_layernorm(_dense(x, P, "d"), P, "a")), P, "b"), P, "o")),
    "two_axes": ("model m(x: [3, 4]) {\n    d: dense(5) -> n: layernorm(eps=0.001)\n    flatten\n    o: dense(2)\n}",
                 (3, 4), lambda x, P: _dense(_layernorm(_dense(x, P, "d"), P, "n", 0.001).flatten(1), P, "o")),
    # (the relu keeps the conv's bias, constant along the normalised axis, from a zero gradient)
    "three_axes": ("model m(x: [2, 5, 6]) {\n    c: conv2d(3, 2) -> relu -> n: layernorm\n    flatten\n"
                   "    o: dense(2)\n}", (2, 5, 6),
                   lambda x, P: _dense(_layernorm(F.relu(F.conv2d(x, P["c.weight"], P["c.bias"])), P, "n").flatten(1),
                                       P, "o")),
}


@pytest.mark.parametrize("batch", [3, 1])
@pytest.mark.parametrize("case", sorted(LAYERNORM_TRAINING))
def test_layernorm_training_step_matches_autograd_on_every_rank(case, batch):
    src, shape, ref = LAYERNORM_TRAINING[case]
    rng = np.random.default_rng(7)
    # random weights, the layernorms' gains around 1 (not 1 and 0, so that gamma and beta take
    # part in every gradient)
    weights = {}
    for k, v in nnc.build(src).state_dict().items():
        gain = 1.0 if v.ndim == 1 and k.endswith(".weight") else 0.0
        weights[k] = (rng.standard_normal(v.shape) * 0.5 + gain).astype(np.float32)
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, weights=weights, keep_gradients=True)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in weights.items()}
    x = (rng.standard_normal((batch, *shape)) * 2 + 0.5).astype(np.float32)
    out = ref(torch.tensor(x, dtype=torch.float64), P)
    y = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    loss = trainer.step(x, y)
    value = F.mse_loss(out, torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads, after = trainer.gradients(), trainer.state_dict()
    assert sorted(grads) == sorted(P)
    for k, p in P.items():
        assert rel_err(grads[k], p.grad) < 1e-4, k
        assert rel_err(after[k], p.detach() - 0.1 * p.grad) < 1e-5, k


def test_batchnorm_momentum_moves_the_running_statistics_as_pytorch():
    src = "model m(x: [3, 4, 4]) {\n    b: batchnorm(momentum=0.3)\n    flatten\n    d: dense(2)\n}"
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.0), batch=5, seed=1)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 3, 4, 4)) * 2 + 1).astype(np.float32)
    trainer.step(x, rng.standard_normal((5, 2)).astype(np.float32))
    bn = torch.nn.BatchNorm2d(3, momentum=0.3)
    bn.train()
    bn(torch.from_numpy(x))
    sd = trainer.state_dict()
    np.testing.assert_allclose(sd["b.running_mean"], bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sd["b.running_var"], bn.running_var.numpy(), rtol=1e-5, atol=1e-6)


def test_batchnorm_momentum_must_be_a_fraction():
    with pytest.raises(CompileError) as e:
        nnc.build("model m(x: [3, 4]) {\n    batchnorm(momentum=2)\n}")
    assert "momentum" in str(e.value)


@pytest.mark.parametrize("src, fragment", [
    ("model m(x: [6, 4]) {\n    groupnorm(4)\n}", "groups=4 does not divide the 6 channels"),
    ("model m(x: [6]) {\n    instancenorm\n}", "instancenorm expects [C, T] or [C, H, W]"),
])
def test_norm_diagnostics(src, fragment):
    with pytest.raises(CompileError) as e:
        nnc.build(src)
    assert fragment in str(e.value)


def test_instancenorm_over_time_cannot_stream():
    with pytest.raises(CompileError) as e:
        nnc.build("model m(x: [3, T]) {\n    n: instancenorm\n}", stream=True)
    assert "E0401" in str(e.value) and "`n` (instancenorm) cannot stream" in str(e.value)


def test_norm_parameters_grow_with_their_channels():
    old = "model m(x: [3, 6, 6]) {\n    a: conv2d(4, 3) -> n: instancenorm(affine=true) -> g: groupnorm(2)\n}"
    new = old.replace("conv2d(4, 3)", "conv2d(6, 3)")
    from nnc.compiler.grow import GrowthWarning
    with pytest.warns(GrowthWarning, match="`g`"):        # a group's statistics now mix in new channels
        grown, _ = nnc.grow(old, new, nnc.build(old).state_dict())
    assert grown["n.weight"].shape == (6,) and grown["g.weight"].shape == (6,)
    assert (grown["n.weight"][4:] == 1).all() and (grown["g.bias"][4:] == 0).all()
