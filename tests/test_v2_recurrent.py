"""Section 9's stacked and two-way recurrent layers and `rnn`: nn.GRU /
nn.LSTM / nn.RNN(num_layers=k, bidirectional=...) state dicts load
unchanged and match PyTorch on both targets at -O0 and -O1; BPTT per layer
and direction against torch.autograd; stacked one-way layers stream step by
step, a bidirectional one is E0401; growth grows hidden in every layer and
direction and keeps the function; bad words are diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.compiler import frontend

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)

TORCH = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}


def _flag(b: bool) -> str:
    return "true" if b else "false"


def _layer(kind: str, hidden: int, layers: int, bi: bool, bias: bool = True, nl: str = "tanh") -> str:
    word = ", nonlinearity=relu" if nl == "relu" else ""
    return f"{kind}({hidden}{word}, layers={layers}, bidirectional={_flag(bi)}, bias={_flag(bias)})"


def _twin(kind: str, f: int, hidden: int, layers: int, bi: bool, bias: bool = True, nl: str = "tanh"):
    kw = {"nonlinearity": nl} if kind == "rnn" else {}
    return TORCH[kind](f, hidden, num_layers=layers, bidirectional=bi, bias=bias, batch_first=True, **kw)


CONFIGS = [("gru", 2, True, True, "tanh"), ("lstm", 2, True, True, "tanh"), ("lstm", 3, False, False, "tanh"),
           ("gru", 1, True, False, "tanh"), ("rnn", 1, False, True, "tanh"), ("rnn", 2, True, True, "relu")]
IDS = [f"{k}-l{n}-{'bi' if b else 'uni'}-{'bias' if c else 'nobias'}-{nl}" for k, n, b, c, nl in CONFIGS]


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("kind,layers,bi,bias,nl", CONFIGS, ids=IDS)
def test_pytorch_state_dict_loads_unchanged_and_matches(kind, layers, bi, bias, nl, optimize, target):
    torch.manual_seed(layers)
    twin = _twin(kind, 5, 4, layers, bi, bias, nl)
    src = f"model m(x: [T, 5]) {{\n    return x -> r: {_layer(kind, 4, layers, bi, bias, nl)}\n}}\n"
    model = nnc.build(src, target=target, batch=2, dims={"T": 9}, optimize=optimize)
    state = {f"r.{k}": v.detach().numpy() for k, v in twin.state_dict().items()}
    assert list(model.state_dict()) == list(state)          # the same names, in PyTorch's order
    model.load_weights(state)
    for t in (9, 4):
        x = np.random.default_rng(t).standard_normal((2, t, 5)).astype(np.float32)
        expected = twin(torch.from_numpy(x))[0].detach().numpy()
        got = model(x)
        assert got.shape == (2, t, 4 * (2 if bi else 1))
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


@pytest.mark.parametrize("kind,layers,bi,bias,nl", CONFIGS, ids=IDS)
def test_bptt_through_every_layer_and_direction_matches_autograd(kind, layers, bi, bias, nl):
    src = (f"model m(x: [6, 3]) {{\n    h = x -> r: {_layer(kind, 4, layers, bi, bias, nl)}\n"
           f"    return h -> o: dense(2)\n}}\n")
    batch = 3
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True, seed=1)
    state = trainer.state_dict()
    twin = _twin(kind, 3, 4, layers, bi, bias, nl).double()
    twin.load_state_dict({k[2:]: torch.tensor(v, dtype=torch.float64) for k, v in state.items() if k.startswith("r.")})
    w = torch.tensor(state["o.weight"], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(state["o.bias"], dtype=torch.float64, requires_grad=True)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 6, 3)).astype(np.float32)
    y = rng.standard_normal((batch, 6, 2)).astype(np.float32)
    value = F.mse_loss(F.linear(twin(torch.tensor(x, dtype=torch.float64))[0], w, b), torch.tensor(y, dtype=torch.float64))
    loss = trainer.step(x, y)
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    assert sorted(grads) == sorted([f"r.{n}" for n, _ in twin.named_parameters()] + ["o.weight", "o.bias"])
    for name, p in twin.named_parameters():
        ref = p.grad.numpy()
        assert np.linalg.norm(grads[f"r.{name}"] - ref) / np.linalg.norm(ref) < 1e-4, name


@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn"])
def test_a_stacked_one_way_layer_streams_step_by_step_like_the_whole_sequence(kind, target):
    src = f"model m(x: [T, 5]) {{\n    return x -> r: {kind}(4, layers=3) -> d: dense(2)\n}}\n"
    stream = nnc.build(src, target=target, batch=2, stream=True, dims={"T": 16})
    whole = nnc.build(src, target=target, batch=2, dims={"T": 16})
    rng = np.random.default_rng(3)
    state = {k: (rng.standard_normal(v.shape) * 0.4).astype(np.float32) for k, v in whole.state_dict().items()}
    stream.load_weights(state)
    whole.load_weights(state)
    x = rng.standard_normal((2, 13, 5)).astype(np.float32)
    expected = whole(x)
    chunks = np.concatenate([stream.stream(x[:, :6]), stream.stream(x[:, 6:])], axis=1)
    np.testing.assert_allclose(chunks, expected, rtol=1e-5, atol=1e-6)
    stream.reset()
    steps = np.stack([stream.step(x[:, i]) for i in range(13)], axis=1)
    np.testing.assert_allclose(steps, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn"])
def test_a_bidirectional_layer_cannot_stream(kind):
    src = f"model m(x: [T, 5]) {{\n    return x -> r: {kind}(4, bidirectional=true)\n}}\n"
    with pytest.raises(nnc.CompileError) as info:
        nnc.build(src, stream=True, dims={"T": 16})
    d = info.value.diagnostics[0]
    assert d.code == "E0401" and "`r`" in d.message and "bidirectional" in d.message


@pytest.mark.parametrize("init", ["zero", "net2net"])
@pytest.mark.parametrize("kind,layers,bi", [("gru", 2, True), ("lstm", 3, False), ("rnn", 2, True)])
def test_growth_grows_hidden_in_every_layer_and_direction_and_keeps_the_function(kind, layers, bi, init):
    src = ("model net(x: [5, 3]) {\n    pre: dense(4) -> tanh\n"
           f"    rnn: {kind}(%d, layers={layers}, bidirectional={_flag(bi)})\n    head: dense(2)\n}}\n")
    old, new = src % 4, src % 6
    rng = np.random.default_rng(1)
    w = {k: rng.uniform(-1, 1, v.shape).astype(np.float32) for k, v in frontend.check(old).graph.param_specs().items()}
    w2, _ = nnc.grow(old, new, w, init=init, seed=4)
    specs = frontend.check(new).graph.param_specs()
    assert {k: v.shape for k, v in w2.items()} == {k: tuple(s.shape) for k, s in specs.items()}
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y1 = nnc.build(old, batch=2, weights=w, optimize=False)(x)
    y2 = nnc.build(new, batch=2, weights=w2, optimize=False)(x)
    np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=1e-6)


def test_an_unknown_nonlinearity_is_a_diagnostic_with_a_suggestion():
    with pytest.raises(nnc.CompileError) as info:
        frontend.check("model m(x: [9, 5]) {\n    return x -> rnn(4, nonlinearity=relux)\n}\n")
    d = info.value.diagnostics[0]
    assert d.code == "E0304" and "`relu`" in d.message
