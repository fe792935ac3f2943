"""The recurrent engine's steps (runtime/recurrent_infer.py): every schedule
(step by step at tiles = 1, chunked otherwise; one-way stacks, streamed or
not; two-way stacks), at batch 1 (the LSTM's one multiply for i*g and f*c,
a two-way layer's directions run apart) and batch 2, matches PyTorch from
stale scratch; an infinite input to a GRU gives PyTorch's finite answer on
every schedule; and a step is a fixed, small number of NumPy calls (the
per-step cost at small sizes is call overhead, so the count is the speed).
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from nnc.runtime import recurrent_infer as R

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TORCH = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}


def _net(kind, f, h, layers=1, dirs=1, bias=True, nl="tanh", seed=0):
    torch.manual_seed(seed)
    kw = {"nonlinearity": nl} if kind == "rnn" else {}
    net = TORCH[kind](f, h, num_layers=layers, bidirectional=dirs == 2, bias=bias, batch_first=True, **kw)
    weights = []
    for k in range(layers):
        for d in range(dirs):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            weights += [getattr(net, f"weight_ih{sfx}").detach().numpy(), getattr(net, f"weight_hh{sfx}").detach().numpy()]
            weights += [getattr(net, f"bias_{n}{sfx}").detach().numpy() if bias else None for n in ("ih", "hh")]
    return net, R.rnn_pack(kind, weights, hidden=h, layers=layers, dirs=dirs, nonlinearity=nl)


def _stale(kind, shape, h, layers, dirs, tiles, streaming=False, dtype=np.float32):
    shapes = R.rnn_scratch(kind, shape, hidden=h, layers=layers, dirs=dirs, tiles=tiles, streaming=streaming)
    return {k: np.full(s, np.nan, dtype) for k, s in shapes.items()}


def _run(x, pack, tiles, states=None):
    kind, h, layers, dirs = pack.kind, pack.hidden, pack.layers, pack.dirs
    out = np.full((*x.shape[:2], dirs * h), np.nan, x.dtype)
    R.rnn_forward(x, pack, out, tiles=tiles, states=states,
                  scratch=_stale(kind, x.shape, h, layers, dirs, tiles, states is not None, x.dtype))
    return out


CASES = [("lstm", 1, 1, True, "tanh"), ("gru", 1, 1, True, "tanh"), ("rnn", 1, 1, True, "relu"),
         ("lstm", 2, 1, False, "tanh"), ("gru", 3, 1, False, "tanh"), ("rnn", 2, 1, True, "tanh"),
         ("lstm", 1, 2, True, "tanh"), ("gru", 1, 2, True, "tanh"), ("lstm", 2, 2, True, "tanh"),
         ("gru", 2, 2, True, "tanh"), ("rnn", 2, 2, True, "relu"), ("lstm", 3, 2, False, "tanh"),
         ("gru", 4, 2, True, "tanh")]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kind,layers,dirs,bias,nl", CASES)
def test_every_schedule_matches_pytorch(kind, layers, dirs, bias, nl, batch):
    net, pack = _net(kind, 5, 6, layers, dirs, bias, nl)
    x = np.random.default_rng(1).standard_normal((batch, 11, 5)).astype(np.float32)
    want = net(torch.from_numpy(x))[0].detach().numpy()
    for tiles in (1, 2, 4, 11):                         # 1: step by step; else chunked, partial last chunks
        got = _run(x, pack, tiles)
        assert np.abs(got - want).max() < 1e-5, (tiles, np.abs(got - want).max())


def test_float64_runs_in_float64():
    net, _ = _net("lstm", 3, 4, 2, 2)
    pack64 = R.rnn_pack("lstm", [None if w is None else w.astype(np.float64) for w in _flat(net, 2, 2)], hidden=4,
                        layers=2, dirs=2)
    x = np.random.default_rng(2).standard_normal((1, 7, 3))
    want = net.double()(torch.from_numpy(x))[0].detach().numpy()
    for tiles in (1, 3):
        got = _run(x, pack64, tiles)
        assert got.dtype == np.float64 and np.abs(got - want).max() < 1e-12


def _flat(net, layers, dirs):
    out = []
    for k in range(layers):
        for d in range(dirs):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            out += [getattr(net, f"{n}{sfx}").detach().numpy() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    return out


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kind,layers", [("lstm", 1), ("lstm", 2), ("gru", 2), ("rnn", 1)])
def test_a_stream_in_pieces_is_the_whole_sequence(kind, layers, batch):
    net, pack = _net(kind, 4, 5, layers)
    x = np.random.default_rng(3).standard_normal((batch, 12, 4)).astype(np.float32)
    want, last = net(torch.from_numpy(x))
    want = want.detach().numpy()
    for tiles in (1, 3):
        states = [np.zeros((batch, layers * 5), np.float32) for _ in range(2 if kind == "lstm" else 1)]
        got = np.concatenate([_run(x[:, a:b], pack, tiles, states) for a, b in ((0, 1), (1, 3), (3, 8), (8, 12))],
                             axis=1)
        assert np.abs(got - want).max() < 1e-5
        h_n = (last[0] if kind == "lstm" else last).detach().numpy()      # [layers, B, H]
        assert np.abs(states[0] - h_n.transpose(1, 0, 2).reshape(batch, -1)).max() < 1e-5
        if kind == "lstm":
            c_n = last[1].detach().numpy().transpose(1, 0, 2).reshape(batch, -1)
            assert np.abs(states[1] - c_n).max() < 1e-5


@pytest.mark.parametrize("layers,dirs", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_an_infinite_input_to_a_gru_gives_pytorchs_finite_answer_on_every_schedule(layers, dirs):
    net, pack = _net("gru", 3, 5, layers, dirs)
    x = np.random.default_rng(4).standard_normal((1, 8, 3)).astype(np.float32)
    x[0, 2, 1], x[0, 5, 0] = np.inf, -np.inf
    want = net(torch.from_numpy(x))[0].detach().numpy()
    assert np.isfinite(want).all()
    with np.errstate(invalid="ignore", over="ignore"):
        for tiles in (1, 3):
            got = _run(x, pack, tiles)
            assert np.isfinite(got).all() and np.abs(got - want).max() < 1e-5, tiles


def _calls_on_one_scratch(nets, x, kind, layers, dirs, tiles, arena):
    """Calls on one scratch (views of one buffer, as a plan's, or arrays of their own) between which its
    memory is overwritten (other kernels use it); returns (whether the run is kept, a weak reference to the
    memory)."""
    scratch = _stale(kind, x.shape, 6, layers, dirs, tiles)
    if arena:
        memory = np.empty(sum(a.size for a in scratch.values()), np.float32)
        offsets = np.cumsum([0] + [a.size for a in scratch.values()])
        scratch = {k: memory[o:o + a.size].reshape(a.shape) for (k, a), o in zip(scratch.items(), offsets)}
    for net, pack in (nets[0], nets[0], nets[1], nets[0]):
        for buf in scratch.values():
            buf.fill(np.nan)
        out = np.full((1, 10, dirs * 6), np.nan, np.float32)
        R.rnn_forward(x, pack, out, tiles=tiles, scratch=scratch)
        assert np.abs(out - net(torch.from_numpy(x))[0].detach().numpy()).max() < 1e-5
    kept = any(entry[0]() is scratch["gh"] for entry in R._RUNS.values())
    return kept, weakref.ref(memory if arena else scratch["gh"])


@pytest.mark.parametrize("kind,layers,dirs", [("lstm", 1, 1), ("gru", 2, 1), ("lstm", 2, 2), ("gru", 1, 2)])
def test_a_run_kept_for_its_scratch_follows_new_weights_and_overwritten_scratch(kind, layers, dirs):
    nets = [_net(kind, 5, 6, layers, dirs, seed=s) for s in (0, 1)]
    x = np.random.default_rng(6).standard_normal((1, 10, 5)).astype(np.float32)
    before = len(R._RUNS)
    for tiles, arena in ((1, True), (4, True), (1, False)):
        kept, gone = _calls_on_one_scratch(nets, x, kind, layers, dirs, tiles, arena)
        assert kept == arena
        gc.collect()
        assert gone() is None and len(R._RUNS) == before     # a kept run goes with its scratch


# ------------------------------------------------------------------ NumPy calls per step

COUNTED = ("tanh", "multiply", "add", "subtract", "maximum", "dot", "matmul", "copyto")


def _calls(monkeypatch, x, pack, tiles=1) -> dict[str, int]:
    count = dict.fromkeys(COUNTED, 0)
    for name in COUNTED:
        fn = getattr(np, name)

        def wrapped(*a, _fn=fn, _name=name, **kw):
            count[_name] += 1
            return _fn(*a, **kw)
        monkeypatch.setattr(np, name, wrapped)
    try:
        _run(x, pack, tiles)
    finally:
        monkeypatch.undo()
    return count


@pytest.mark.parametrize("kind,layers,dirs,tiles,per_step", [
    ("lstm", 1, 1, 1, 10),      # step by step: copy x in, one matmul, 7 elementwise, copy the state out
    ("gru", 1, 1, 1, 12),       # two matmuls (W_hn h apart: an infinite x meets no zero weight), 8 elementwise
    ("rnn", 1, 1, 1, 4),
    ("lstm", 2, 1, 1, 19),      # the second layer takes the first's state with one copy
    ("lstm", 2, 2, 1, 40),      # the lower layer's directions (20), then the last layer's, one after the other
    ("lstm", 1, 1, 64, 9),      # chunked: the hidden matmul, the step's projections added, 7 elementwise
    ("gru", 1, 1, 64, 12),      # + b_hn
    ("rnn", 1, 1, 64, 3),
    ("lstm", 2, 2, 64, 36),
])
def test_a_step_at_batch_1_is_a_fixed_number_of_numpy_calls(monkeypatch, kind, layers, dirs, tiles, per_step):
    _, pack = _net(kind, 8, 16, layers, dirs)
    rng = np.random.default_rng(5)
    short, long = (rng.standard_normal((1, t, 8)).astype(np.float32) for t in (9, 41))
    few, many = _calls(monkeypatch, short, pack, tiles), _calls(monkeypatch, long, pack, tiles)
    assert sum(many.values()) - sum(few.values()) == 32 * per_step
    assert many["matmul"] == few["matmul"]             # a step's products are np.dot (a fraction of the call cost)
