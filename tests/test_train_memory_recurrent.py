"""Training memory of the recurrent layers: backpropagation through time keeps
no gate from the forward (the backward recomputes them a chunk of
`recurrent._STEPS` steps at a time from the input and the hidden states; the
LSTM keeps its cells), so the scratch is bounded by a chunk, not the
sequence. Chunking changes no result: the kernels over several chunks (a
partial one included) equal torch.autograd in float64, stacked and two-way
layers too, and whole runs longer than a chunk equal PyTorch's."""

from __future__ import annotations

import math
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler.codegen import train_numpy
from nnc.compiler.train import train_graph, train_memory_report
from nnc.runtime import kernels as K
from nnc.runtime import recurrent as R
from nnc.runtime import recurrent_stack as RS

sys.path.insert(0, str(Path(__file__).parent))
import torch_train_twins as TT  # noqa: E402
from torch_twins import TWINS  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
try:
    import torch
    torch.set_num_threads(1)
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is the oracle")


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def _stale(shapes, dtype=np.float64) -> dict:
    """Scratch as a plan hands it over: exactly the declared buffers, stale contents."""
    return {k: np.full(s, np.nan, dtype) for k, s in shapes.items()}


@needs_torch
# ------------------------------------------------------------------ kernels over several chunks

@pytest.mark.parametrize("t", [7, 6, 1])
@pytest.mark.parametrize("kind,bias,nl", [("gru", True, "tanh"), ("gru", False, "tanh"), ("lstm", True, "tanh"),
                                          ("lstm", False, "tanh"), ("rnn", True, "tanh"), ("rnn", True, "relu")])
def test_chunked_bptt_equals_autograd_in_float64(kind, bias, nl, t, monkeypatch):
    monkeypatch.setattr(R, "_STEPS", 3)                  # chunks of 3 steps: 1 + 3 + 3 for t = 7
    b, f, h = 3, 5, 4
    torch.manual_seed(0)
    kw = {"nonlinearity": nl} if kind == "rnn" else {}
    m = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[kind](
        f, h, batch_first=True, bias=bias, **kw).double()
    x = np.random.default_rng(1).standard_normal((b, t, f))
    X = torch.tensor(x, requires_grad=True)
    y, _ = m(X)
    dy = np.random.default_rng(2).standard_normal(y.shape)
    y.backward(torch.tensor(dy))
    grab = lambda p: p.detach().numpy().copy()  # noqa: E731
    w_ih, w_hh = grab(m.weight_ih_l0), grab(m.weight_hh_l0)
    b_ih, b_hh = (grab(m.bias_ih_l0), grab(m.bias_hh_l0)) if bias else (None, None)
    out = np.full((b, t, h), np.nan)
    cells = np.full((b, t, h), np.nan)
    grads = dict(dx=np.ones_like(x), dw_ih=np.full_like(w_ih, np.nan), dw_hh=np.full_like(w_hh, np.nan),
                 db_ih=None if b_ih is None else np.full_like(b_ih, np.nan),
                 db_hh=None if b_hh is None else np.full_like(b_hh, np.nan))
    if kind == "gru":
        K.gru_train(x, w_ih, w_hh, b_ih, b_hh, out, scratch=_stale(K.gru_train_scratch(x.shape, h)))
        K.gru_backward(x, w_ih, w_hh, b_ih, b_hh, out, dy, accumulate_dx=True,
                       scratch=_stale(K.gru_backward_scratch(x.shape, h)), **grads)
    elif kind == "lstm":
        K.lstm_train(x, w_ih, w_hh, b_ih, b_hh, out, cells, scratch=_stale(K.lstm_train_scratch(x.shape, h)))
        K.lstm_backward(x, w_ih, w_hh, b_ih, b_hh, out, cells, dy, accumulate_dx=True,
                        scratch=_stale(K.lstm_backward_scratch(x.shape, h)), **grads)
    else:
        RS.rnn_train(x, w_ih, w_hh, b_ih, b_hh, out, nonlinearity=nl, scratch=_stale(RS.rnn_train_scratch(x.shape, h)))
        RS.rnn_backward(x, w_ih, w_hh, out, dy, nonlinearity=nl, accumulate_dx=True,
                        scratch=_stale(RS.rnn_backward_scratch(x.shape, h)), **grads)
    np.testing.assert_allclose(out, grab(y), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["dx"], 1.0 + X.grad.numpy(), rtol=1e-10, atol=1e-10)   # added to dx
    np.testing.assert_allclose(grads["dw_ih"], m.weight_ih_l0.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads["dw_hh"], m.weight_hh_l0.grad.numpy(), rtol=1e-10, atol=1e-10)
    if bias:
        np.testing.assert_allclose(grads["db_ih"], m.bias_ih_l0.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(grads["db_hh"], m.bias_hh_l0.grad.numpy(), rtol=1e-10, atol=1e-10)


def _layer(kind: str, hidden: int, layers: int, bi: bool, nl: str = "tanh") -> str:
    word = ", nonlinearity=relu" if nl == "relu" else ""
    return f"{kind}({hidden}{word}, layers={layers}, bidirectional={'true' if bi else 'false'})"


@needs_torch
@pytest.mark.parametrize("kind,layers,bi,nl", [("gru", 2, True, "tanh"), ("lstm", 2, True, "tanh"),
                                               ("rnn", 2, True, "relu"), ("lstm", 1, True, "tanh"),
                                               ("gru", 3, False, "tanh")])
def test_stacked_and_two_way_layers_over_several_chunks_give_autograds_gradients(kind, layers, bi, nl, monkeypatch):
    monkeypatch.setattr(R, "_STEPS", 3)                  # set before the plan is made: its scratch follows
    src = (f"model m(x: [7, 3]) {{\n    p = x -> pre: dense(5) -> tanh\n"
           f"    h = p -> r: {_layer(kind, 4, layers, bi, nl)}\n    return h -> o: dense(2)\n}}\n")
    batch = 3
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True, seed=1)
    state = {k: torch.tensor(v, dtype=torch.float64) for k, v in trainer.state_dict().items()}
    kw = {"nonlinearity": nl} if kind == "rnn" else {}
    twin = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[kind](
        5, 4, num_layers=layers, bidirectional=bi, batch_first=True, **kw).double()
    twin.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("r.")})
    lin = {k: v.clone().requires_grad_(True) for k, v in state.items() if not k.startswith("r.")}
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 7, 3)).astype(np.float32)
    y = rng.standard_normal((batch, 7, 2)).astype(np.float32)
    F = torch.nn.functional
    p = torch.tanh(F.linear(torch.tensor(x, dtype=torch.float64), lin["pre.weight"], lin["pre.bias"]))
    value = F.mse_loss(F.linear(twin(p)[0], lin["o.weight"], lin["o.bias"]), torch.tensor(y, dtype=torch.float64))
    loss = trainer.step(x, y)
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    for name, prm in twin.named_parameters():
        assert _rel(grads[f"r.{name}"], prm.grad.numpy()) < 1e-4, name
    for name, t in lin.items():                          # `pre` reads the recurrent layer's input gradient
        assert _rel(grads[name], t.grad.numpy()) < 1e-4, name


# ------------------------------------------------------------------ whole runs longer than a chunk

def _batches(shape, steps, batch, seed, out_shape, classes=None):
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(steps):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        y = rng.integers(0, classes, (batch, *out_shape[:-1])) if classes else \
            rng.standard_normal((batch, *out_shape)).astype(np.float32)
        result.append((x, y))
    return result


def _whole_run(model, twin, opt, loss, batches, batch, dims):
    trainer = nnc.train(model, loss=loss, optimizer=opt, batch=batch, dims=dims, seed=3)
    TT.load_state(twin, trainer.state_dict())
    ours = [trainer.step(x, y) for x, y in batches]
    theirs = TT.run_torch(twin, opt, loss, batches)
    assert _rel(ours, theirs) < 1e-4, (ours, theirs)
    state = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
    for k, v in trainer.state_dict().items():
        assert _rel(v, state[k]) < 1e-4, (k, _rel(v, state[k]))


@needs_torch
def test_gru_over_three_chunks_matches_pytorch_over_ten_steps():
    assert 40 > 2 * R._STEPS
    batches = _batches((40, 1), 10, 4, 4, (40, 1))
    batches += _batches((23, 1), 1, 2, 5, (23, 1))         # shorter and smaller than planned
    _whole_run(SAMPLES / "gru.nn", TWINS["gru"][0](), nnc.SGD(0.1, momentum=0.5), "mse", batches, 4, {"T": 40})


@needs_torch
def test_causal_conv_lstm_over_three_chunks_matches_pytorch_with_adamw():
    batches = _batches((37, 4), 10, 4, 2, (37, 5), classes=5)
    batches += _batches((19, 4), 1, 3, 3, (19, 5), classes=5)
    _whole_run(TT.SEQ, TT.Seq(), nnc.AdamW(lr=5e-3, weight_decay=0.05), "cross_entropy", batches, 4, {"T": 37})


# ------------------------------------------------------------------ the memory plan

def test_gru_keeps_only_its_output_and_its_arena_is_under_half_of_pytorchs_peak():
    # samples/gru.nn, batch 8, T = 64: h is 8 * 64 * 40 floats. The plan that saved every
    # step's gates (4H) beside h kept 409,600 bytes and had a 1,089,536-byte arena; PyTorch's
    # peak for this step is 0.904 MB (benchmarks/bench_train.py --no-speed --models gru)
    report = train_memory_report(SAMPLES / "gru.nn", batch=8, dims={"T": 64}, loss="mse")
    assert report["saved_bytes"] == 8 * 64 * 40 * 4
    assert report["arena_bytes"] <= 0.5 * 904_000
    assert report["arena_bytes"] <= 1.10 * report["lower_bound_bytes"]


def test_lstm_keeps_its_output_and_cells_only():
    # samples/lstm.nn, batch 4, T = 64, H = 32: h and c; the gates (4H a step) are not kept
    # (the old plan: 196,608 saved bytes and a 416,768-byte arena; PyTorch's peak 0.830 MB)
    report = train_memory_report(SAMPLES / "lstm.nn", batch=4, dims={"T": 64}, loss="mse")
    assert report["saved_bytes"] == 2 * 4 * 64 * 32 * 4
    assert report["arena_bytes"] <= 0.5 * 830_000


@pytest.mark.parametrize("kind,sequences", [("gru", 4), ("lstm", 8), ("rnn", 4)])
def test_a_stacked_two_way_layer_keeps_its_layers_outputs_and_lstm_cells(kind, sequences):
    # two layers, two directions, H = 8, batch 4, T = 32: the lower layer's output and the
    # upper one's (2H a step each), and for the LSTM the cells (H a step) of each layer and
    # direction, in units of one [B, T, H] sequence; the gates (G*H a step) are not kept
    src = f"model m(x: [T, 5]) {{\n    h = x -> r: {_layer(kind, 8, 2, True)}\n    return h -> o: dense(2)\n}}\n"
    report = train_memory_report(src, batch=4, dims={"T": 32}, loss="mse")
    assert report["saved_bytes"] == sequences * 4 * 32 * 8 * 4


@pytest.mark.parametrize("src", [
    "model m(x: [T, 3]) {\n    r: gru(16)\n    o: dense(2)\n}\n",
    "model m(x: [T, 3]) {\n    r: lstm(16)\n    o: dense(2)\n}\n",
    "model m(x: [T, 3]) {\n    r: lstm(16, layers=2, bidirectional=true)\n    o: dense(2)\n}\n",
    "model m(x: [T, 3]) {\n    r: rnn(16, layers=2)\n    o: dense(2)\n}\n",
])
def test_recurrent_kernel_scratch_does_not_grow_with_the_sequence(src):
    def scratch(t: int) -> dict[str, int]:
        _, tg = train_graph(src, loss="mse", dims={"T": t})
        total: dict[str, int] = {}
        for s in tg.steps:
            if s.node is not None and s.node.op.name in ("gru", "lstm", "rnn"):
                total[s.label] = sum(train_numpy.scratch_bytes(tg, s.index, 4).values())
        return total
    short, long = scratch(4 * R._STEPS), scratch(40 * R._STEPS)
    two_way = "bidirectional" in src     # the gradient of its lower layer's output [T, 2H] is scratch
    for label, nbytes in short.items():
        if two_way and label.startswith("backward"):
            assert long[label] - nbytes == 36 * R._STEPS * 4 * 2 * 16 * 4
        else:
            assert long[label] == nbytes, label


def test_scratch_is_used_from_its_start_by_a_smaller_batch_and_a_shorter_sequence():
    # the plan's scratch is sized at the planned batch and the longest sequence; a step with
    # fewer examples or steps gets a prefix of each buffer: shapes never exceed the planned ones
    for fn in (K.gru_backward_scratch, K.lstm_backward_scratch, K.gru_train_scratch, K.lstm_train_scratch,
               RS.rnn_backward_scratch, RS.rnn_train_scratch):
        planned = fn((8, 64, 5), 16)
        for b, t in [(1, 1), (3, 7), (8, 17), (5, 64)]:
            got = fn((b, t, 5), 16)
            assert got.keys() == planned.keys()
            for k in got:
                assert math.prod(got[k]) <= math.prod(planned[k]), (fn.__name__, k)


def test_bptt_allocates_nothing_that_grows_with_the_sequence():
    b, t, f, h = 8, 256, 8, 32
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, t, f)).astype(np.float32)
    w_ih, w_hh = (rng.standard_normal((4 * h, f)) * 0.3).astype(np.float32), \
        (rng.standard_normal((4 * h, h)) * 0.3).astype(np.float32)
    b_ih, b_hh = np.zeros(4 * h, np.float32), np.zeros(4 * h, np.float32)
    out, cells, dy = np.empty((b, t, h), np.float32), np.empty((b, t, h), np.float32), np.ones((b, t, h), np.float32)
    grads = dict(dx=np.empty_like(x), dw_ih=np.empty_like(w_ih), dw_hh=np.empty_like(w_hh),
                 db_ih=np.empty_like(b_ih), db_hh=np.empty_like(b_hh))
    fs = _stale(K.lstm_train_scratch(x.shape, h), np.float32)
    bs = _stale(K.lstm_backward_scratch(x.shape, h), np.float32)
    gs = _stale(K.gru_backward_scratch(x.shape, h), np.float32)
    g3 = dict(dx=grads["dx"], dw_ih=grads["dw_ih"][:3 * h], dw_hh=grads["dw_hh"][:3 * h],
              db_ih=grads["db_ih"][:3 * h], db_hh=grads["db_hh"][:3 * h])
    for _ in range(2):                                   # the second run is measured
        tracemalloc.start()
        K.lstm_train(x, w_ih, w_hh, b_ih, b_hh, out, cells, scratch=fs)
        K.lstm_backward(x, w_ih, w_hh, b_ih, b_hh, out, cells, dy, scratch=bs, **grads)
        K.gru_backward(x, w_ih[:3 * h], w_hh[:3 * h], b_ih[:3 * h], b_hh[:3 * h], out, dy, scratch=gs, **g3)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * 1024, peak                        # one sequence of h alone is 256 KiB
