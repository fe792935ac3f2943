"""Section 9's elementwise math (clamp, neg, abs, exp, log, sqrt, square) and
axis ops (glu, slice, select, mean, sum, max) in every stage: against
PyTorch live on both targets at -O0 and -O1 (NaN/inf as PyTorch's), their
gradients through a training plan against torch.autograd, the fusion of
the new activations, the streaming and growth rules, and the diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.compiler import frontend
from nnc.compiler.passes import optimize
from nnc.runtime import kernels as K
from numerics import rel_err

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)




def _model(shape, body: str) -> str:
    dims = ", ".join(map(str, shape))
    return f"model m(x: [{dims}]) {{\n    return x -> {body}\n}}\n"


# ------------------------------------------------------------------ against PyTorch, both targets

CASES = {
    "neg": ((3, 5), "neg", torch.neg),
    "abs": ((3, 5), "abs", torch.abs),
    "exp": ((3, 5), "exp", torch.exp),
    "log_of_abs": ((3, 5), "abs -> log", lambda x: torch.log(torch.abs(x))),
    "sqrt_of_square": ((3, 5), "square -> sqrt", lambda x: torch.sqrt(torch.square(x))),
    "clamp_both": ((3, 5), "clamp(-0.5, 0.25)", lambda x: torch.clamp(x, -0.5, 0.25)),
    "clamp_min_only": ((3, 5), "clamp(min=-0.1)", lambda x: torch.clamp(x, min=-0.1)),
    "clamp_max_only": ((3, 5), "clamp(max=0.3)", lambda x: torch.clamp(x, max=0.3)),
    "clamp_max_before_min": ((3, 5), "clamp(max=0.3, min=-0.2)", lambda x: torch.clamp(x, -0.2, 0.3)),
    "clamp_max_none_word": ((3, 5), "clamp(0, max=none)", lambda x: torch.clamp(x, min=0)),
    "clamp_min_above_max_gives_max": ((3, 5), "clamp(1, 0)", lambda x: torch.clamp(x, 1, 0)),
    "glu_default_axis": ((6, 5), "glu", lambda x: F.glu(x, 1)),
    "glu_negative_axis": ((3, 5, 4), "glu(-1)", lambda x: F.glu(x, -1)),
    "slice_negative_start_step": ((7, 5), "slice(0, -5, 6, 2)", lambda x: x[:, -5:6:2]),
    "slice_end_clamps": ((7, 5), "slice(1, 1, 100)", lambda x: x[:, :, 1:100]),
    "slice_end_none_word": ((7, 5), "slice(-1, -3, none)", lambda x: x[:, :, -3:]),
    "slice_negative_end": ((7, 5), "slice(0, 1, -1, 3)", lambda x: x[:, 1:-1:3]),
    "select_last_step": ((7, 5), "select(0, -1)", lambda x: x[:, -1]),
    "select_middle_axis": ((3, 7, 5), "select(1, 2)", lambda x: x[:, :, 2]),
    "mean_tuple_negative": ((3, 7, 5), "mean((0, -1))", lambda x: x.mean((1, 3))),
    "sum_one_axis": ((3, 7, 5), "sum(1)", lambda x: x.sum(2)),
    "max_two_axes": ((3, 7, 5), "max((1, 2))", lambda x: x.amax((2, 3))),
    # one number per example: the output is [B], as in PyTorch (it was E0306)
    "mean_every_axis": ((3, 7, 5), "mean((0, 1, 2))", lambda x: x.mean((1, 2, 3))),
    "sum_the_only_axis": ((7,), "sum(0) -> tanh", lambda x: torch.tanh(x.sum(1))),
    "max_every_axis_then_reshape": ((3, 5), "max((0, 1)) -> reshape((1,))", lambda x: x.amax((1, 2))[:, None]),
    "select_the_only_axis": ((7,), "select(0, -2) -> relu", lambda x: torch.relu(x[:, -2])),
}


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_pytorch(case, optimize, target):
    shape, body, ref = CASES[case]
    model = nnc.build(_model(shape, body), target=target, batch=2, optimize=optimize)
    x = np.random.default_rng(3).standard_normal((2, *shape)).astype(np.float32)
    expected = ref(torch.from_numpy(x)).numpy()
    got = model(x)
    assert got.shape == expected.shape
    assert rel_err(got, expected) < 1e-4


def test_ops_after_a_dense_layer_fuse_and_match_pytorch(target):
    src = """model m(x: [4, 6]) {
    h = x -> c: dense(6) -> exp
    a = h -> neg -> abs -> sqrt -> square -> log
    b = x -> clamp(-0.5, max=0.5)
    return add(a, b)
}"""
    graph = optimize(frontend.check(src).graph)
    assert any(n.op.name == "dense" and n.activation and n.activation.op == "exp" for n in graph.nodes)
    rng = np.random.default_rng(1)
    for opt in (True, False):
        m = nnc.build(src, target=target, batch=2, optimize=opt)
        state = {k: (rng.standard_normal(v.shape) * 0.3).astype(np.float32) for k, v in m.state_dict().items()}
        m.load_weights(state)
        x = rng.standard_normal((2, 4, 6)).astype(np.float32)
        tx = torch.from_numpy(x)
        c = torch.exp(F.linear(tx, torch.from_numpy(state["c.weight"]), torch.from_numpy(state["c.bias"])))
        expected = torch.log(torch.square(torch.sqrt(torch.abs(-c)))) + torch.clamp(tx, -0.5, 0.5)
        assert rel_err(m(x), expected.numpy()) < 1e-4


SPECIAL = np.array([0.0, -0.0, -1.0, 1.0, 100.0, -100.0, np.inf, -np.inf, np.nan, 1e-30], np.float32)


@pytest.mark.parametrize("body,ref", [
    ("log", torch.log), ("sqrt", torch.sqrt), ("exp", torch.exp), ("square", torch.square),
    ("abs", torch.abs), ("neg", torch.neg), ("clamp(-1, 1)", lambda x: torch.clamp(x, -1, 1)),
    ("max(0)", lambda x: x.amax(1)), ("glu(-1)", lambda x: F.glu(x, -1)),
])
def test_nan_and_inf_behave_as_in_pytorch(body, ref, target):
    x = np.stack([SPECIAL, SPECIAL[::-1]])[None].repeat(2, axis=0)          # [2, 2, 10]
    if body == "max(0)":
        x = np.transpose(x, (0, 2, 1)).copy()                               # NaN in some columns only
    model = nnc.build(_model(x.shape[1:], body), target=target, batch=2)
    expected = ref(torch.from_numpy(x)).numpy()
    # atol: below float32's normal range (exp(-100) is subnormal) the kernels may flush
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-37, equal_nan=True)


# ------------------------------------------------------------------ training

def test_gradients_through_every_new_op_match_autograd():
    src = """model m(x: [5, 6]) {
    h = x -> a: dense(8) -> glu(-1) -> clamp(-0.8, 0.9) -> square -> neg -> exp -> sqrt -> abs
    g = h -> b: dense(6) -> log_softmax -> neg -> log
    s = g -> slice(1, -4, 6, 2) -> select(1, -1)
    q = h -> mean(0) -> d: dense(5)
    r = h -> max(1)
    k = h -> sum(-1)
    return add(s, r, k, q) -> c: dense(3)
}"""
    batch = 4
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True, seed=1)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in trainer.state_dict().items()
         if k in trainer.TRAINABLE}

    def forward(x):
        h = F.linear(x, P["a.weight"], P["a.bias"])
        h = torch.abs(torch.sqrt(torch.exp(-torch.square(torch.clamp(F.glu(h, -1), -0.8, 0.9)))))
        g = torch.log(-F.log_softmax(F.linear(h, P["b.weight"], P["b.bias"]), -1))
        q = F.linear(h.mean(1), P["d.weight"], P["d.bias"])
        return F.linear(g[:, :, -4:6:2][:, :, -1] + h.amax(2) + h.sum(-1) + q, P["c.weight"], P["c.bias"])

    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 5, 6)).astype(np.float32)
    out = forward(torch.tensor(x, dtype=torch.float64))
    y = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    loss = trainer.step(x, y)
    value = F.mse_loss(out, torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    for k, p in P.items():
        ref = p.grad.numpy()
        assert np.linalg.norm(grads[k] - ref) / max(np.linalg.norm(ref), 1e-8) < 1e-4, k


@pytest.mark.parametrize("act,ref", [
    (("neg",), torch.neg), (("abs",), torch.abs), (("exp",), torch.exp), (("log",), torch.log),
    (("sqrt",), torch.sqrt), (("square",), torch.square), (("clamp", -0.3, 0.4), lambda v: torch.clamp(v, -0.3, 0.4)),
    (("clamp", None, 0.4), lambda v: torch.clamp(v, max=0.4)), (("clamp", 0.0, None), lambda v: torch.clamp(v, 0.0)),
])
def test_activation_backward_matches_autograd_at_the_kinks(act, ref):
    x = np.array([[-1.5, -0.3, 0.0, 0.4, 0.5, 2.0, 1e-3]], np.float64)
    if act[0] in ("log", "sqrt"):
        x = np.abs(x) + 0.25
    dy = np.linspace(-1, 1, x.size).reshape(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    y = ref(tx)
    y.backward(torch.tensor(dy))
    dx = np.empty_like(x)
    K.activation_backward(act, x, y.detach().numpy(), dy, dx=dx)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_max_backward_shares_the_gradient_among_ties_as_amax():
    x = np.array([[[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]])
    y = np.max(x, axis=2)
    dy = np.array([[6.0, 9.0]])
    dx = np.empty_like(x)
    K.reduce_max_backward(x, y, dy, axes=(2,), dx=dx)
    tx = torch.tensor(x, requires_grad=True)
    tx.amax(2).backward(torch.tensor(dy))
    np.testing.assert_array_equal(dx, tx.grad.numpy())


# ------------------------------------------------------------------ streaming

STREAMS = "model m(x: [T, 6]) {\n    return x -> glu(1) -> clamp(min=-0.2) -> exp -> slice(1, 1) -> mean(-1) -> neg\n}"


def test_axis_ops_off_the_time_axis_stream_like_the_whole_sequence(target):
    s = nnc.build(STREAMS, target=target, batch=2, stream=True, dims={"T": 32})
    whole = nnc.build(STREAMS, target=target, batch=2, dims={"T": 20})
    x = np.random.default_rng(4).standard_normal((2, 20, 6)).astype(np.float32)
    expected = whole(x)
    chunks = np.concatenate([s.stream(x[:, :7]), s.stream(x[:, 7:])], axis=1)
    np.testing.assert_allclose(chunks, expected, rtol=1e-6)
    s.reset()
    steps = np.stack([s.step(x[:, i]) for i in range(20)], axis=1)
    np.testing.assert_allclose(steps, expected, rtol=1e-6)


@pytest.mark.parametrize("body,why", [
    ("mean(0)", "reduces over the time axis"),
    ("max((0, 1)) -> neg", "reduces over the time axis"),
    ("select(0, -1)", "takes one step of the whole time axis"),
    ("sum(0)", "reduces over the time axis"),
])
def test_a_reduction_or_select_over_the_time_axis_cannot_stream(body, why):
    with pytest.raises(nnc.CompileError) as info:
        nnc.build(_model(("T", 6), body), stream=True, dims={"T": 16})
    d = info.value.diagnostics[0]
    assert d.code == "E0401" and why in d.message and "`" in d.message


def test_select_last_step_of_a_named_time_axis_classifies_the_sequence(target):
    src = "model m(x: [T, 6]) {\n    return x -> select(0, -1) -> c: dense(3)\n}"
    m = nnc.build(src, target=target, batch=2, dims={"T": 12})
    state = {k: np.random.default_rng(5).standard_normal(v.shape).astype(np.float32)
             for k, v in m.state_dict().items()}
    m.load_weights(state)
    for t in (1, 5, 12):
        x = np.random.default_rng(t).standard_normal((2, t, 6)).astype(np.float32)
        expected = x[:, -1] @ state["c.weight"].T + state["c.bias"]
        np.testing.assert_allclose(m(x), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ growth

GROWN = """model net(x: [4, 6]) {
    h = x -> a: dense(%d) -> exp -> clamp(max=2.0) -> square -> log -> abs -> sqrt -> neg
    return h -> slice(0, 1, 4) -> mean(0) -> b: dense(3)
}"""


@pytest.mark.parametrize("init", ["zero", "net2net"])
def test_growth_through_elementwise_ops_and_reductions_of_other_axes_keeps_the_function(init):
    old, new = GROWN % 4, GROWN % 7
    rng = np.random.default_rng(1)
    w = {k: rng.uniform(-1, 1, v.shape).astype(np.float32)
         for k, v in frontend.check(old).graph.param_specs().items()}
    w2, _ = nnc.grow(old, new, w, init=init, seed=4)
    x = rng.standard_normal((2, 4, 6)).astype(np.float32)
    y1 = nnc.build(old, batch=2, weights=w, optimize=False)(x)
    y2 = nnc.build(new, batch=2, weights=w2, optimize=False)(x)
    np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tail,why", [
    ("sum(1)", "sum reduces axis 1"), ("max(1)", "max reduces axis 1"), ("glu(1)", "glu splits axis 1"),
    ("select(1, 0)", "select takes one position of axis 1"), ("slice(1, 0, 2)", "slice keeps part of axis 1"),
])
def test_an_op_that_cuts_the_grown_units_refuses_growth(tail, why):
    src = "model net(x: [4, 6]) {\n    h = x -> a: dense(%d)\n    return h -> " + tail + "\n}"
    w = {k: np.zeros(v.shape, np.float32) for k, v in frontend.check(src % 4).graph.param_specs().items()}
    with pytest.raises(nnc.CompileError) as info:
        nnc.grow(src % 4, src % 6, w)
    d = info.value.diagnostics[0]
    assert d.code == "E0506" and why in d.message


def test_numbers_per_example_merge_train_and_export(target):
    """Values of one number per example ([]) go through merges and activations, train with the
    gradients of autograd, and export to an ONNX model onnxruntime runs with nnc's output."""
    src = ("model m(x: [3, 4]) {\n    h = x -> d: dense(5) -> tanh\n    a = h -> mean((0, 1))\n"
           "    b = h -> select(1, 0) -> max(0)\n    d = sub(a, b)\n    q = mul(b, b)\n    return div(d, q)\n}\n")
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=3, keep_gradients=True, seed=2)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in trainer.state_dict().items()}
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((3, 3, 4)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    h = torch.tanh(F.linear(torch.tensor(x, dtype=torch.float64), P["d.weight"], P["d.bias"]))
    a, b = h.mean((1, 2)), h[:, :, 0].amax(1)
    out = (a - b) / (b * b)
    value = F.mse_loss(out, torch.tensor(y, dtype=torch.float64))
    value.backward()
    model = nnc.build(src, target=target, batch=3, weights=trainer.state_dict())
    assert model.output_shapes == {"out": ()}
    assert rel_err(model(x), out.detach().numpy()) < 1e-4
    assert abs(trainer.step(x, y) - value.item()) <= 1e-5 * abs(value.item())
    for k, g in trainer.gradients().items():
        assert rel_err(g, P[k].grad.numpy()) < 1e-4, k
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        nnc.to_onnx(src, trainer.state_dict(), f"{tmp}/m.onnx")
        got = ort.InferenceSession(f"{tmp}/m.onnx").run(None, {"x": x})[0]
    assert got.shape == (3,)
    np.testing.assert_allclose(got, nnc.build(src, batch=3, weights=trainer.state_dict())(x), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ diagnostics

@pytest.mark.parametrize("shape,body,code,text", [
    ((3, 5), "clamp", "E0302", "clamp needs at least one bound"),
    ((3, 5), "clamp(none, none)", "E0302", "clamp needs at least one bound"),
    ((3, 5), "glu", "E0205", "size 3 is odd"),
    ((3, 5), "glu(2)", "E0306", "axis 2 is out of range"),
    ((7, 5), "slice(0, 5, 2)", "E0201", "is empty"),
    ((7, 5), "slice(0, 9)", "E0201", "is empty"),
    ((7, 5), "slice(0, 1, 4, 0)", "E0306", "positive step"),
    ((7, 5), "slice(0, 1, 4, -1)", "E0306", "positive step"),
    ((7, 5), "select(0, 7)", "E0306", "select index 7 is out of range"),
    ((7, 5), "select(1, -6)", "E0306", "select index -6 is out of range"),
    (("T", 5), "select(0, 2)", "E0306", "takes index 0 or -1"),
    ((3, 4), "mean((0, 1)) -> dense(2)", "E0203", "dense needs at least one axis per example"),
    ((3,), "select(0, 1) -> softmax", "E0203", "softmax needs at least one axis per example"),
    ((3, 4, 5), "sum((1, -2))", "E0306", "twice"),
    ((3, 4), "max(3)", "E0306", "out of range"),
])
def test_misuse_is_a_located_diagnostic(shape, body, code, text):
    dims = {"T": 8} if "T" in shape else None
    with pytest.raises(nnc.CompileError) as info:
        frontend.check(_model(shape, body), dims)
    d = info.value.diagnostics[0]
    assert d.code == code and text in d.message, (d.code, d.message)
