"""`trainer.grow(new_model)` and `nnc.train(..., capacity=...)` (TRAINING.md
section 2): training continues on the grown model exactly as a PyTorch model
grown by hand (old entries kept in place, nnc's new rows, zero fan-in,
zero-padded momentum and Adam moments, Adam's step kept); with capacity,
growing moves nothing and allocates nothing in proportion to the weights."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import nnc

sys.path.insert(0, str(Path(__file__).parent))
import torch_train_twins as TT  # noqa: E402

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

TOL = 1e-4


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


# ------------------------------------------------------------------ models and their twins

MLP = """
model mlp(x: [6]) {
    l1: dense(%d) -> tanh
    l2: dense(4)
}
"""


class Mlp(nn.Module):
    def __init__(self, h: int) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(6, h), nn.Linear(h, 4)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


CONV = """
model convnet(x: [2, 6, 6]) {
    c1: conv2d(%d, 3, padding=1, bias=false) -> bn: batchnorm -> relu
    c2: conv2d(%d, 3)                                # [D, 4, 4]
    flatten
    fc: dense(3)
}
"""


class Conv(nn.Module):
    def __init__(self, c: int, d: int) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv2d(2, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.fc = nn.Conv2d(c, d, 3), nn.Linear(d * 16, 3)

    def forward(self, x):
        return self.fc(self.c2(F.relu(self.bn(self.c1(x)))).flatten(1))


RNN = """
model rnn(x: [5, 3]) {
    rnn: %s(%d)
    head: dense(4)                                   # logits per time step
}
"""


class Rnn(nn.Module):
    def __init__(self, kind: str, h: int) -> None:
        super().__init__()
        self.rnn = (nn.GRU if kind == "gru" else nn.LSTM)(3, h, batch_first=True)
        self.head = nn.Linear(h, 4)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


# ------------------------------------------------------------------ growing by hand

def _pad(old: np.ndarray, new_shape, old_view=None, new_view=None) -> np.ndarray:
    """`old` at the leading corner of zeros of `new_shape` (seen as `new_view`, old as `old_view`)."""
    out = np.zeros(new_shape, np.float32)
    o = old.reshape(old_view or old.shape)
    n = out.reshape(new_view or new_shape)
    n[tuple(slice(0, s) for s in o.shape)] = o
    return out


def _rows(a: np.ndarray, fresh: np.ndarray, old_rows: int, view=None) -> np.ndarray:
    """`a` with its rows from `old_rows` on (per block of `view`) taken from `fresh`: nnc's new units."""
    out = a.copy()
    o, f = out.reshape(view or out.shape), fresh.reshape(view or out.shape)
    idx = (slice(None),) * (o.ndim - 2 if view else 0) + (slice(old_rows, None),)
    o[idx] = f[idx]
    return out


def grow_mlp(old: dict, nnc_new: dict, h0: int, h: int) -> dict:
    return {"l1.weight": _rows(_pad(old["l1.weight"], (h, 6)), nnc_new["l1.weight"], h0),
            "l1.bias": _pad(old["l1.bias"], (h,)),
            "l2.weight": _pad(old["l2.weight"], (4, h)), "l2.bias": old["l2.bias"]}


def grow_conv(old: dict, nnc_new: dict, c0: int, d0: int, c: int, d: int) -> dict:
    """(An optimizer state grows by this too, from zeros: its batchnorm keys are 0 and absent.)"""
    one = 1.0 if "bn.running_var" in old else 0.0
    old = {k: old.get(k, np.zeros(3, np.float32)) for k in {*old, "bn.running_mean", "bn.running_var"}}
    w = {"c1.weight": _rows(_pad(old["c1.weight"], (c, 2, 3, 3)), nnc_new["c1.weight"], c0),
         "bn.weight": np.concatenate([old["bn.weight"], np.full(c - c0, one, np.float32)]),
         "bn.bias": _pad(old["bn.bias"], (c,)), "bn.running_mean": _pad(old["bn.running_mean"], (c,)),
         "bn.running_var": np.concatenate([old["bn.running_var"], np.full(c - c0, one, np.float32)]),
         "c2.weight": _rows(_pad(old["c2.weight"], (d, c, 3, 3)), nnc_new["c2.weight"], d0),
         "c2.bias": _pad(old["c2.bias"], (d,)),
         # flatten: channel k owns the 16 columns k*16 .. k*16+15
         "fc.weight": _pad(old["fc.weight"], (3, d * 16), (3, d0, 16), (3, d, 16)), "fc.bias": old["fc.bias"]}
    if "bn.num_batches_tracked" in old:
        w["bn.num_batches_tracked"] = old["bn.num_batches_tracked"]
    return w


def grow_rnn(old: dict, nnc_new: dict, kind: str, h0: int, h: int) -> dict:
    g = 3 if kind == "gru" else 4
    w = {"rnn.weight_ih_l0": _rows(_pad(old["rnn.weight_ih_l0"], (g * h, 3), (g, h0, 3), (g, h, 3)),
                                   nnc_new["rnn.weight_ih_l0"], h0, (g, h, 3)),
         "rnn.weight_hh_l0": _rows(_pad(old["rnn.weight_hh_l0"], (g * h, h), (g, h0, h0), (g, h, h)),
                                   nnc_new["rnn.weight_hh_l0"], h0, (g, h, h)),
         "rnn.bias_ih_l0": _pad(old["rnn.bias_ih_l0"], (g * h,), (g, h0), (g, h)),
         "rnn.bias_hh_l0": _pad(old["rnn.bias_hh_l0"], (g * h,), (g, h0), (g, h)),
         "head.weight": _pad(old["head.weight"], (4, h)), "head.bias": old["head.bias"]}
    return w


def _pad_like(old: dict, new: dict, grow) -> dict:
    """The optimizer state grown by hand: each state array padded as its parameter (new entries 0)."""
    return {k: v for k, v in grow(old, {k: np.zeros_like(v) for k, v in new.items()}).items() if k in old}


# ------------------------------------------------------------------ the oracle

def _torch_state(module, optimizer) -> dict[str, dict[str, np.ndarray]]:
    names = {p: n for n, p in module.named_parameters()}
    return {names[p]: {k: (v.detach().numpy().copy() if v.dim() else float(v)) for k, v in s.items()}
            for p, s in optimizer.state.items()}


def _torch_steps(module, optimizer, loss, batches) -> list[float]:
    out = []
    for x, y in batches:
        optimizer.zero_grad()
        value = TT.torch_loss(loss, module(torch.from_numpy(x)), torch.from_numpy(y.astype(np.int64)))
        value.backward()
        optimizer.step()
        out.append(value.item())
    return out


def _batches(shape, classes, n, batch, seed, per_step=None):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, *shape)).astype(np.float32),
             rng.integers(0, classes, (batch, per_step) if per_step else batch)) for _ in range(n)]


def _continuity(old_src, new_src, make, grow, opt, shape, classes, per_step=None, k=3):
    """Train k steps, grow, train k more; nnc against PyTorch grown by hand."""
    batches = _batches(shape, classes, 2 * k, 4, seed=5, per_step=per_step)
    trainer = nnc.train(old_src, optimizer=opt, batch=4, seed=2)
    old_twin = make(old=True)
    TT.load_state(old_twin, trainer.state_dict())
    old_twin.train()
    old_opt = TT.torch_optimizer(opt, old_twin.parameters())
    ours = [trainer.step(x, y) for x, y in batches[:k]]
    theirs = _torch_steps(old_twin, old_opt, "cross_entropy", batches[:k])

    trainer.grow(new_src)
    grown = trainer.state_dict()
    old_w = {k: v.detach().numpy().copy() for k, v in old_twin.state_dict().items()}
    by_hand = grow(old_w, grown)
    assert by_hand.keys() == grown.keys()
    for key in grown:           # nnc's weights are PyTorch's, grown by hand (nnc's new rows aside)
        assert grown[key].shape == by_hand[key].shape, key
        assert _rel(grown[key], by_hand[key]) < TOL, (key, _rel(grown[key], by_hand[key]))

    new_twin = make(old=False)
    TT.load_state(new_twin, by_hand)
    new_twin.train()
    new_opt = TT.torch_optimizer(opt, new_twin.parameters())
    state = _torch_state(old_twin, old_opt)
    params = dict(new_twin.named_parameters())
    names = list(state[next(iter(state))].keys())
    for name in names:
        if name == "step":
            continue
        padded = _pad_like({k: s[name] for k, s in state.items()}, grown, grow)
        for key, p in params.items():
            new_opt.state[p][name] = torch.from_numpy(padded[key])
    if "step" in names:
        for key, p in params.items():
            new_opt.state[p]["step"] = torch.tensor(float(state[key]["step"]))
    ours += [trainer.step(x, y) for x, y in batches[k:]]
    theirs += _torch_steps(new_twin, new_opt, "cross_entropy", batches[k:])
    assert _rel(ours, theirs) < TOL, (ours, theirs)
    final = {k: v.detach().numpy() for k, v in new_twin.state_dict().items()}
    for key, v in trainer.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert int(v) == int(final[key]), key
        else:
            assert _rel(v, final[key]) < TOL, (key, _rel(v, final[key]))
    ours_opt = trainer.optimizer_state_dict()
    if "step" in ours_opt:
        assert int(ours_opt["step"]) == 2 * k
    return trainer


OPTIMIZERS = [pytest.param(nnc.SGD(0.1, momentum=0.9, weight_decay=1e-3), id="sgd-momentum"),
              pytest.param(nnc.Adam(lr=1e-2), id="adam")]


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_a_grown_dense_mlp_trains_on_as_pytorch_grown_by_hand(opt):
    _continuity(MLP % 5, MLP % 8, lambda old: Mlp(5 if old else 8),
                lambda w, new: grow_mlp(w, new, 5, 8), opt, (6,), 4)


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_a_grown_conv_batchnorm_net_trains_on_as_pytorch_grown_by_hand(opt):
    _continuity(CONV % (3, 4), CONV % (5, 6), lambda old: Conv(3, 4) if old else Conv(5, 6),
                lambda w, new: grow_conv(w, new, 3, 4, 5, 6), opt, (2, 6, 6), 3)


def test_growing_within_capacity_leaves_the_tensors_it_does_not_reach_where_they_are():
    """TRAINING.md 2: within capacity growth moves no entry that keeps its position and allocates
    nothing in proportion to the parameters. The layers before the grown one and the consumer's bias
    (no tensor with room) were copied to new arrays, their Adam moments too: 6.8 MB at the peak for
    2.4 MB of parameters."""
    src = "model m(x: [512]) {\n    big: dense(1024) -> relu\n    h: dense(%d) -> relu\n    o: dense(10)\n}\n"
    a = nnc.train(src % 64, optimizer=nnc.Adam(1e-3), batch=4, capacity={"h": 128})
    x, y = _batches((512,), 10, 1, 4, seed=2)[0]
    a.step(x, y)
    untouched = ("big.weight", "big.bias", "o.bias")
    arrays = {k: a._state[k] for k in untouched}
    moments = {k: dict(a._opt_state[k]) for k in untouched}
    weight_bytes = sum(v.nbytes for v in a._state.values())
    tracemalloc.start()
    try:
        a.grow(src % 100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.4 * weight_bytes, (peak, weight_bytes)     # the compiler's objects, h's 36 new rows
    for k in untouched:
        assert a._state[k] is arrays[k]
        assert all(a._opt_state[k][name] is m for name, m in moments[k].items())
    b = nnc.train(src % 100, optimizer=nnc.Adam(1e-3), batch=4, weights=a.state_dict())
    b.load_optimizer_state(a.optimizer_state_dict())
    assert _rel(a.step(x, y), b.step(x, y)) < 1e-6


@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn"])
def test_a_step_with_capacity_allocates_what_one_without_does(kind):
    """TRAINING.md: a step allocates nothing the plan could have preallocated. With room, the
    recurrent weight is a strided view of its storage, and np.dot copied it on every call (789 KB a
    step against 65 KB for gru(256))."""
    src = f"model m(x: [5, 128]) {{\n    h: {kind}(256)\n    select(0, -1)\n    o: dense(10)\n}}\n"
    x, y = _batches((5, 128), 10, 1, 4, seed=3)[0]
    peaks = []
    for room in (None, {"h": 512}):
        a = nnc.train(src, optimizer=nnc.Adam(1e-3), batch=4, capacity=room)
        a.step(x, y)
        a.step(x, y)
        tracemalloc.start()
        try:
            a.step(x, y)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    # NumPy's ufuncs take an iteration buffer (8192 elements an operand, freed after the call) over
    # the strided views: a constant, not a copy of the weights
    assert peaks[1] < max(peaks[0], 2 * 8192 * 4) + 16 * 1024, peaks


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_a_grown_recurrent_net_trains_on_as_pytorch_grown_by_hand(opt, kind):
    _continuity(RNN % (kind, 4), RNN % (kind, 7), lambda old: Rnn(kind, 4 if old else 7),
                lambda w, new: grow_rnn(w, new, kind, 4, 7), opt, (5, 3), 4, per_step=5)


def test_grow_places_new_rows_as_nnc_grow_does_and_keeps_the_step_count():
    opt = nnc.Adam(lr=1e-2)
    batches = _batches((6,), 4, 2, 4, seed=1)
    trainer = nnc.train(MLP % 5, optimizer=opt, batch=4, seed=7)
    for x, y in batches:
        trainer.step(x, y)
    w, o = trainer.state_dict(), trainer.optimizer_state_dict()
    trainer.grow(MLP % 8, seed=3)
    w2, o2 = nnc.grow(MLP % 5, MLP % 8, w, o, seed=3)
    for k, v in w2.items():
        np.testing.assert_array_equal(trainer.state_dict()[k], v, err_msg=k)
    for k, v in o2.items():
        np.testing.assert_array_equal(trainer.optimizer_state_dict()[k], v, err_msg=k)
    assert int(trainer.optimizer_state_dict()["step"]) == 2
    assert trainer.predict(batches[0][0]).shape == (4, 4)


def test_grow_with_net2net_keeps_the_function():
    trainer = nnc.train(CONV % (3, 4), optimizer=nnc.SGD(0.05, momentum=0.9), batch=4)
    x, y = _batches((2, 6, 6), 3, 1, 4, seed=3)[0]
    trainer.step(x, y)
    before = trainer.predict(x)
    trainer.grow(CONV % (5, 4), init="net2net", seed=1)
    np.testing.assert_allclose(trainer.predict(x), before, rtol=1e-5, atol=1e-5)
    assert np.isfinite(trainer.step(x, y))


def test_a_refused_growth_is_a_diagnostic_on_the_new_model_and_leaves_the_trainer_unchanged():
    trainer = nnc.train(CONV % (3, 4), optimizer=nnc.Adam(lr=1e-2), batch=4)
    x, y = _batches((2, 6, 6), 3, 1, 4, seed=3)[0]
    trainer.step(x, y)
    cls, w, o = type(trainer), trainer.state_dict(), trainer.optimizer_state_dict()
    twin = nnc.train(CONV % (3, 4), optimizer=nnc.Adam(lr=1e-2), batch=4, weights=w)
    twin.load_optimizer_state(o)
    for bad, code in ((CONV % (2, 4), "E0501"), (CONV.replace("c2:", "k2:") % (3, 4), "E0502"),
                      (CONV.replace("padding=1", "padding=0") % (3, 4), "E0503")):
        with pytest.raises(nnc.CompileError) as e:
            trainer.grow(bad)
        assert code in str(e.value), str(e.value)
        assert type(trainer) is cls
        for k, v in trainer.state_dict().items():
            np.testing.assert_array_equal(v, w[k], err_msg=k)
        for k, v in trainer.optimizer_state_dict().items():
            np.testing.assert_array_equal(v, o[k], err_msg=k)
    with pytest.raises(ValueError, match="init"):
        trainer.grow(CONV % (5, 4), init="random")
    assert trainer.step(x, y) == twin.step(x, y)


# ------------------------------------------------------------------ capacity

WIDE = "model wide(x: [1024]) {\n    h: dense(%d) -> relu\n    out: dense(10)\n}\n"


def test_growing_within_capacity_keeps_the_weight_buffers_and_allocates_almost_nothing():
    """The issue's case: a 1024->2048 dense layer with capacity 4096, grown to 2304 units."""
    opt = nnc.SGD(0.01, momentum=0.9)
    batches = _batches((1024,), 10, 4, 8, seed=4)
    a = nnc.train(WIDE % 2048, optimizer=opt, batch=8, capacity={"h": 4096})
    b = nnc.train(WIDE % 2048, optimizer=opt, batch=8, weights=a.state_dict())
    assert a.state_dict()["h.weight"].shape == (2048, 1024)
    assert a.optimizer_state_dict()["out.weight.momentum_buffer"].shape == (10, 2048)
    for x, y in batches[:2]:
        assert _rel(a.step(x, y), b.step(x, y)) < 1e-6      # (views into room: a BLAS may round them apart)
    keys = ("h.weight", "h.bias", "out.weight")
    storage = {k: a._storage[k] for k in keys}
    buffers = {k: a._opt_storage[k]["momentum_buffer"] for k in keys}
    assert all(s.shape[0 if k != "out.weight" else 1] == 4096 for k, s in storage.items())
    old = {k: a._state[k].copy() for k in keys}
    old_moments = {k: a._opt_state[k]["momentum_buffer"].copy() for k in keys}
    weight_bytes = 2304 * 1024 * 4

    tracemalloc.start()
    try:
        a.grow(WIDE % 2304)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # about 0.85-1.0 MB of compiler objects, whatever the layer (more after a long test run: caches)
    assert peak < 0.15 * weight_bytes, peak

    for k in keys:
        assert a._storage[k] is storage[k] and a._opt_storage[k]["momentum_buffer"] is buffers[k]
        assert np.shares_memory(a._state[k], storage[k])
        assert a._state[k].ctypes.data == storage[k].ctypes.data      # the view starts where it did
        corner = tuple(slice(0, n) for n in old[k].shape)
        np.testing.assert_array_equal(storage[k][corner], old[k])      # old entries untouched, in place
        np.testing.assert_array_equal(buffers[k][corner], old_moments[k])
    assert a.state_dict()["h.weight"].shape == (2304, 1024)
    assert a.state_dict()["out.weight"].shape == (10, 2304)
    assert a.optimizer_state_dict()["h.weight.momentum_buffer"].shape == (2304, 1024)

    b.grow(WIDE % 2304)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(a.state_dict()[k], v, err_msg=k)
    for x, y in batches[2:]:
        assert _rel(a.step(x, y), b.step(x, y)) < 1e-6
    for k, v in b.state_dict().items():
        assert _rel(a.state_dict()[k], v) < 1e-6, k


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_a_recurrent_layer_grows_within_capacity_in_its_storage_and_as_without(kind):
    """Gate-stacked tensors with room: growing 256 -> 384 hidden units within 512 moves each
    gate's rows inside the storage (the probe measured 6 MB of new arrays for 2 MB of weights)."""
    src = "model r(x: [6, 64]) {\n    rnn: %s(%%d)\n    select(0, -1)\n    head: dense(10)\n}\n" % kind
    opt = nnc.Adam(lr=1e-3)
    batches = _batches((6, 64), 10, 3, 4, seed=5)
    a = nnc.train(src % 256, optimizer=opt, batch=4, capacity={"rnn": 512})
    b = nnc.train(src % 256, optimizer=opt, batch=4, weights=a.state_dict())
    for x, y in batches[:2]:
        assert _rel(a.step(x, y), b.step(x, y)) < 1e-6
    stores = {k: (v, a._opt_storage[k]["exp_avg_sq"]) for k, v in a._storage.items()}
    assert {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "head.weight"} <= set(stores)
    weight_bytes = sum(v.nbytes for v in b.state_dict().values()) * 384 // 256
    tracemalloc.start()
    try:
        a.grow(src % 384)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    b.grow(src % 384)
    assert peak < 0.5 * weight_bytes, (peak, weight_bytes)     # compiler objects only, no tensor
    for k, (store, moment) in stores.items():
        assert a._storage[k] is store and a._opt_storage[k]["exp_avg_sq"] is moment, k
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(a.state_dict()[k], v, err_msg=k)
    for k, v in b.optimizer_state_dict().items():
        np.testing.assert_array_equal(a.optimizer_state_dict()[k], v, err_msg=k)
    x, y = batches[2]
    assert _rel(a.step(x, y), b.step(x, y)) < 1e-6


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_capacity_trains_exactly_as_without_and_grows_the_same(opt):
    """Strided parameter views through every kernel the conv net calls (conv fan-in,
    batchnorm, flatten into dense), the optimizers and predict."""
    batches = _batches((2, 6, 6), 3, 4, 4, seed=8)
    a = nnc.train(CONV % (3, 4), optimizer=opt, batch=4, capacity={"c1": 8, "c2": 9}, keep_gradients=True)
    b = nnc.train(CONV % (3, 4), optimizer=opt, batch=4, weights=a.state_dict(), keep_gradients=True)
    assert not a._state["c2.weight"].flags.c_contiguous
    for x, y in batches[:2]:
        assert _rel(a.step(x, y), b.step(x, y)) < 1e-6      # (views into room: a BLAS may round them apart)
    for k, v in b.gradients().items():
        assert _rel(a.gradients()[k], v) < 1e-5, k
    arena, scratch = a._arena, a._update_flat
    a.grow(CONV % (5, 6))
    b.grow(CONV % (5, 6))
    assert a._arena is arena and a._update_flat is scratch     # planned at capacity: nothing reallocated
    for x, y in batches[2:]:
        assert _rel(a.step(x, y), b.step(x, y)) < 1e-6
    np.testing.assert_allclose(a.predict(batches[0][0]), b.predict(batches[0][0]), rtol=1e-5, atol=1e-6)
    for k, v in b.optimizer_state_dict().items():
        assert v.shape == a.optimizer_state_dict()[k].shape
        assert _rel(a.optimizer_state_dict()[k], v) < 1e-5, k
    assert a.gradients()["fc.weight"].shape == (3, 96)


@pytest.mark.parametrize("room", [{"pre": 10}, {"pre": 10, "rnn": 8}])
def test_capacity_before_and_on_a_recurrent_layer_trains_and_grows_like_without(room):
    """A gru reading a layer with room reads a strided fan-in; its own gate-stacked
    tensors, with room of their own, are the start of their storage, and a growth within
    it moves each gate's block inside that storage (they were reallocated)."""
    src = "model r(x: [5, 3]) {\n    pre: dense(%d) -> tanh\n    rnn: gru(%d)\n    head: dense(4)\n}\n"
    opt = nnc.Adam(lr=1e-2)
    batches = _batches((5, 3), 4, 4, 4, seed=2, per_step=5)
    a = nnc.train(src % (4, 3), optimizer=opt, batch=4, capacity=room)
    b = nnc.train(src % (4, 3), optimizer=opt, batch=4, weights=a.state_dict())
    assert "pre.weight" in a._storage and "rnn.weight_ih_l0" in a._storage
    assert ("rnn.weight_hh_l0" in a._storage) == ("rnn" in room)
    for x, y in batches[:2]:
        assert _rel(a.step(x, y), b.step(x, y)) < 1e-6      # (views into room: a BLAS may round them apart)
    stores = {k: (v, a._opt_storage[k]["exp_avg"]) for k, v in a._storage.items()}
    a.grow(src % (6, 5))
    b.grow(src % (6, 5))
    for k, (store, moment) in stores.items():          # within capacity: grown in place
        assert (a._storage[k] is store and a._opt_storage[k]["exp_avg"] is moment) == \
            (k.startswith("pre") or "rnn" in room), k
    for k, v in b.optimizer_state_dict().items():
        np.testing.assert_array_equal(a.optimizer_state_dict()[k], v, err_msg=k)
    for x, y in batches[2:]:
        assert _rel(a.step(x, y), b.step(x, y)) < 1e-6


def test_growing_beyond_capacity_reallocates_and_still_trains_the_same():
    batches = _batches((6,), 4, 4, 4, seed=6)
    a = nnc.train(MLP % 5, optimizer=nnc.SGD(0.1, momentum=0.5), batch=4, capacity={"l1": 6})
    b = nnc.train(MLP % 5, optimizer=nnc.SGD(0.1, momentum=0.5), batch=4, weights=a.state_dict())
    for x, y in batches[:2]:
        assert _rel(a.step(x, y), b.step(x, y)) < 1e-6      # (views into room: a BLAS may round them apart)
    store = a._storage["l1.weight"]
    a.grow(MLP % 9)
    b.grow(MLP % 9)
    assert "l1.weight" not in a._storage and not np.shares_memory(a._state["l1.weight"], store)
    assert a._capacity == {"l1": 9}    # the room is used up: the tensors have their own shapes again
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(a.state_dict()[k], v, err_msg=k)
    for x, y in batches[2:]:
        assert _rel(a.step(x, y), b.step(x, y)) < 1e-6
    a.grow(MLP % 11)                  # and again, from the reallocated storage
    assert a.state_dict()["l2.weight"].shape == (4, 11)


def test_state_dicts_of_a_trainer_with_capacity_have_exactly_the_current_shapes():
    a = nnc.train(MLP % 5, optimizer=nnc.Adam(), batch=2, capacity={"l1": 64})
    assert {k: v.shape for k, v in a.state_dict().items()} == \
        {"l1.weight": (5, 6), "l1.bias": (5,), "l2.weight": (4, 5), "l2.bias": (4,)}
    assert a.optimizer_state_dict()["l2.weight.exp_avg"].shape == (4, 5)
    assert all(v.flags.c_contiguous for v in a.state_dict().values())
    a.load_weights(a.state_dict())
    a.load_optimizer_state(a.optimizer_state_dict())


@pytest.mark.parametrize("capacity, message", [
    ({"l3": 8}, "`l3` is not a step"),
    ({"l1": 4}, "less than the layer's current size 5"),
    ({"l1": 0}, "positive integer"),
    ({"tanh_0": 8}, "has no units"),
    ([("l1", 8)], "must map layer labels"),
])
def test_a_bad_capacity_is_a_clear_error(capacity, message):
    with pytest.raises(ValueError, match="capacity") as e:
        nnc.train(MLP % 5, optimizer=nnc.Adam(), batch=2, capacity=capacity)
    assert message in str(e.value)
