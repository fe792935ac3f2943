"""`TrainerBase`: the trainer API over a hand-written one-dense-layer module
(and a dense + batchnorm one), against PyTorch; saving and resuming; the
strict loaders; gradients; checks of inputs and targets; no allocation in
the optimizer's per-parameter update."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

import nnc
from nnc.compiler.diagnostics import UserError
from nnc.runtime.losses import TargetError
from nnc.runtime.optim import SGD, Adam, AdamW
from nnc.runtime.trainer_base import DataError, OptimizerStateError, TrainerError
from nnc.runtime.weights import WeightsError
from tiny_trainers import torch_loss, torch_optimizer, torch_twin, trainer_class

OPTIMIZERS = {
    "sgd_momentum": lambda: SGD(0.1, momentum=0.9),
    "sgd_nesterov_wd": lambda: SGD(0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
    "adam": lambda: Adam(lr=1e-2),
    "adamw": lambda: AdamW(lr=1e-2, weight_decay=0.1),
}


def data(steps=10, batch=8, n_in=4, n_out=3, loss="cross_entropy", seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((batch, n_in)).astype(np.float32) for _ in range(steps)]
    if loss == "cross_entropy":
        ys = [rng.integers(0, n_out, batch) for _ in range(steps)]
    else:
        ys = [rng.random((batch, n_out)).astype(np.float32) for _ in range(steps)]
    return xs, ys


def rel(a, b, scale=0.0):
    """max |a - b| relative to max |b| (or to `scale` when larger: a value
    that is mathematically 0, as the bias gradient before a batchnorm)."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), scale, 1e-30))


@pytest.mark.parametrize("bn", [False, True], ids=["dense", "dense_bn"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_ten_steps_equal_pytorch_losses_weights_gradients_and_optimizer_state(opt, bn):
    torch = pytest.importorskip("torch")
    optimizer = OPTIMIZERS[opt]()
    trainer = trainer_class(bn=bn)(optimizer, batch=8, keep_gradients=True)
    twin = torch_twin(trainer, bn=bn)
    topt = torch_optimizer(optimizer, twin.parameters())
    xs, ys = data()
    for i, (x, y) in enumerate(zip(xs, ys)):
        loss = trainer.step(x, y)
        topt.zero_grad()
        tl = torch_loss("cross_entropy")(twin(torch.from_numpy(x)), torch.from_numpy(y))
        tl.backward()
        grads = {k: p.grad.numpy().copy() for k, p in twin.named_parameters()}
        topt.step()
        assert loss == pytest.approx(tl.item(), rel=1e-5), f"step {i}"
        mine = trainer.gradients()
        assert mine.keys() == grads.keys()
        scale = max(np.abs(g).max() for g in grads.values())
        for k in grads:
            assert rel(mine[k], grads[k], scale) < 1e-5, (i, k)
    theirs = twin.state_dict()
    ours = trainer.state_dict()
    assert list(ours) == list(theirs)
    for k, v in theirs.items():
        assert rel(ours[k], v.numpy()) < 1e-5, k
    state = trainer.optimizer_state_dict()
    names = dict(twin.named_parameters())
    for k, p in names.items():
        for n in optimizer.state_names:
            assert rel(state[f"{k}.{n}"], topt.state[p][n].numpy()) < 1e-5, (k, n)
    if optimizer.counts_steps:
        assert state["step"].dtype == np.int64 and state["step"].shape == () and state["step"] == 10
    else:
        assert "step" not in state


def test_state_dict_has_pytorch_keys_int64_counters_and_loads_into_torch_strictly():
    torch = pytest.importorskip("torch")
    trainer = trainer_class(bn=True)(Adam(), batch=4)
    xs, ys = data(steps=3, batch=4)
    for x, y in zip(xs, ys):
        trainer.step(x, y)
    sd = trainer.state_dict()
    assert list(sd) == ["fc.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                        "bn.num_batches_tracked"]
    assert sd["bn.num_batches_tracked"].dtype == np.int64 and sd["bn.num_batches_tracked"].shape == ()
    assert sd["bn.num_batches_tracked"] == 3
    assert all(v.dtype == np.float32 for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    twin = torch_twin(trainer, bn=True)          # load_state_dict(strict=True)
    assert int(twin.bn.num_batches_tracked) == 3
    sd["fc.weight"][...] = 0                     # a copy
    assert not np.all(trainer.state_dict()["fc.weight"] == 0)


@pytest.mark.parametrize("opt", ["sgd_momentum", "adam"])
def test_resume_from_saved_files_equals_an_uninterrupted_run(opt, tmp_path):
    cls = trainer_class(bn=True)
    xs, ys = data(steps=10)
    whole = cls(OPTIMIZERS[opt](), batch=8)
    losses = [whole.step(x, y) for x, y in zip(xs, ys)]
    first = cls(OPTIMIZERS[opt](), batch=8)
    for x, y in zip(xs[:5], ys[:5]):
        first.step(x, y)
    np.savez(tmp_path / "w.npz", **first.state_dict())
    np.savez(tmp_path / "opt.npz", **first.optimizer_state_dict())
    second = cls(OPTIMIZERS[opt](), batch=8, weights=tmp_path / "w.npz", seed=7)
    second.load_optimizer_state(tmp_path / "opt.npz")
    resumed = [second.step(x, y) for x, y in zip(xs[5:], ys[5:])]
    assert resumed == losses[5:]
    for k, v in whole.state_dict().items():
        np.testing.assert_array_equal(second.state_dict()[k], v, err_msg=k)
    for k, v in whole.optimizer_state_dict().items():
        np.testing.assert_array_equal(second.optimizer_state_dict()[k], v, err_msg=k)


def test_resume_sgd_with_dampening_decays_the_loaded_buffer_instead_of_resetting_it():
    cls = trainer_class()
    xs, ys = data(steps=4)
    make = lambda: SGD(0.1, momentum=0.9, dampening=0.5)   # noqa: E731
    whole = cls(make(), batch=8)
    losses = [whole.step(x, y) for x, y in zip(xs, ys)]
    first = cls(make(), batch=8)
    first.step(xs[0], ys[0])
    second = cls(make(), batch=8, weights=first.state_dict())
    second.load_optimizer_state(first.optimizer_state_dict())
    assert [second.step(x, y) for x, y in zip(xs[1:], ys[1:])] == losses[1:]


def test_load_weights_reads_num_batches_tracked_from_files_and_dicts_and_zeroes_it_when_absent(tmp_path):
    cls = trainer_class(bn=True)
    source = cls(Adam(), batch=4)
    xs, ys = data(steps=2, batch=4)
    for x, y in zip(xs, ys):
        source.step(x, y)
    np.savez(tmp_path / "w.npz", **source.state_dict())
    t = cls(Adam(), batch=4)
    t.load_weights(tmp_path / "w.npz")
    assert t.state_dict()["bn.num_batches_tracked"] == 2
    without = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    t.load_weights(without)
    assert t.state_dict()["bn.num_batches_tracked"] == 0
    np.testing.assert_array_equal(t.state_dict()["bn.running_var"], source.state_dict()["bn.running_var"])
    bad = dict(source.state_dict(), **{"bn.num_batches_tracked": np.array(-1)})
    with pytest.raises(WeightsError, match="num_batches_tracked"):
        t.load_weights(bad)


def test_load_weights_is_strict_and_names_every_problem():
    t = trainer_class()(Adam(), batch=2)
    sd = t.state_dict()
    bad = {"fc.weight": np.zeros((2, 2), np.float32), "extra": np.zeros(1, np.float32)}
    with pytest.raises(WeightsError) as e:
        t.load_weights(bad)
    text = str(e.value)
    assert "`fc.weight`" in text and "`fc.bias`" in text and "`extra`" in text
    np.testing.assert_array_equal(t.state_dict()["fc.weight"], sd["fc.weight"])   # unchanged


def test_load_optimizer_state_reports_every_problem_at_once():
    t = trainer_class()(Adam(), batch=2)
    state = t.optimizer_state_dict()
    state["fc.weight.exp_avg"] = np.zeros((5, 5), np.float32)
    del state["fc.bias.exp_avg_sq"]
    state["step"] = np.array(-3)
    state["junk"] = np.zeros(2)
    state["fc.bias.exp_avg"] = np.full(3, np.nan, np.float32)
    with pytest.raises(OptimizerStateError) as e:
        t.load_optimizer_state(state)
    text = str(e.value)
    for part in ("`fc.weight.exp_avg` has shape [5, 5]", "missing: `fc.bias.exp_avg_sq`", "unexpected: `junk`",
                 "`step` must be an integer from 0 to 2^62", "`fc.bias.exp_avg` holds NaN"):
        assert part in text
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)


def test_a_negative_average_of_squares_is_refused():
    """exp_avg_sq < 0 (a hostile file) made the next Adam update's square root NaN: the weights
    became NaN with exit 0."""
    t = trainer_class()(Adam(), batch=2)
    state = t.optimizer_state_dict()
    state["fc.weight.exp_avg_sq"] = np.full_like(state["fc.weight.exp_avg_sq"], -1.0)
    with pytest.raises(OptimizerStateError, match="`fc.weight.exp_avg_sq` holds negative values"):
        t.load_optimizer_state(state)


@pytest.mark.parametrize("step", [np.uint64(2 ** 64 - 1), np.int64(2 ** 63 - 1), np.float64(1e30)])
def test_a_step_count_past_int64_is_refused_not_an_overflow(step):
    """A hostile optimizer state's step of 2^64 - 1 was accepted, and the next update's int64 store
    overflowed (an internal error, exit 70, after training)."""
    t = trainer_class()(Adam(), batch=2)
    state = t.optimizer_state_dict()
    state["step"] = np.array(step)
    with pytest.raises(OptimizerStateError, match="`step` must be an integer from 0 to 2\\^62"):
        t.load_optimizer_state(state)


def test_load_optimizer_state_names_the_optimizer_that_saved_it(tmp_path):
    sgd = trainer_class()(SGD(0.1, momentum=0.9), batch=2)
    np.savez(tmp_path / "opt.npz", **sgd.optimizer_state_dict())
    adam = trainer_class()(Adam(), batch=2)
    with pytest.raises(OptimizerStateError, match=r"Adam \(it looks like SGD with momentum state\)"):
        adam.load_optimizer_state(tmp_path / "opt.npz")
    with pytest.raises(OptimizerStateError, match="does not exist"):
        adam.load_optimizer_state(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(OptimizerStateError, match="bad.npz"):
        adam.load_optimizer_state(tmp_path / "bad.npz")


def test_optimizer_state_accepts_a_float_step_as_torch_keeps_it():
    t = trainer_class()(Adam(), batch=2)
    state = t.optimizer_state_dict()
    state["step"] = np.array(4.0, dtype=np.float32)
    t.load_optimizer_state(state)
    assert t.optimizer_state_dict()["step"] == 4


def test_sgd_without_momentum_has_an_empty_optimizer_state():
    t = trainer_class()(SGD(0.1), batch=2)
    assert t.optimizer_state_dict() == {}
    t.load_optimizer_state({})


def test_gradients_need_keep_gradients_and_a_step():
    xs, ys = data(steps=1, batch=2)
    t = trainer_class()(Adam(), batch=2)
    t.step(xs[0], ys[0])
    with pytest.raises(TrainerError, match="keep_gradients=True"):
        t.gradients()
    k = trainer_class()(Adam(), batch=2, keep_gradients=True)
    with pytest.raises(TrainerError, match="no step"):
        k.gradients()
    k.step(xs[0], ys[0])
    g = k.gradients()
    assert set(g) == {"fc.weight", "fc.bias"} and g["fc.weight"].shape == (3, 4)


def test_step_returns_the_loss_before_the_update_and_predict_uses_the_updated_weights():
    xs, ys = data(steps=1, batch=8)
    t = trainer_class()(SGD(0.5), batch=8)
    before = t.state_dict()
    loss = t.step(xs[0], ys[0])
    logits = xs[0] @ before["fc.weight"].T + before["fc.bias"]
    shifted = logits - logits.max(1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(1)) - shifted[np.arange(8), ys[0]])
    assert loss == pytest.approx(expected, rel=1e-5)
    after = t.state_dict()
    out = t.predict(xs[0])
    np.testing.assert_allclose(out, xs[0] @ after["fc.weight"].T + after["fc.bias"], rtol=1e-6)


def test_predict_is_eval_mode_and_does_not_touch_running_statistics():
    t = trainer_class(bn=True)(Adam(), batch=4)
    xs, ys = data(steps=2, batch=4)
    t.step(xs[0], ys[0])
    sd = t.state_dict()
    out1 = t.predict(xs[1][:1])          # one example: eval mode uses the running statistics
    out2 = t.predict(xs[1][:1])
    np.testing.assert_array_equal(out1, out2)
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])


def test_a_partial_batch_steps_and_a_larger_one_is_refused():
    t = trainer_class()(Adam(), batch=8)
    xs, ys = data(steps=1, batch=8)
    t.step(xs[0][:3], ys[0][:3])
    with pytest.raises(ValueError, match="batch <= 8"):
        t.step(np.zeros((9, 4), np.float32), np.zeros(9, np.int64))


def test_step_checks_inputs_and_targets_with_messages_naming_them():
    t = trainer_class()(Adam(), batch=4)
    x = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"input `x` must have shape \[B, 4\]"):
        t.step(np.zeros((4, 5), np.float32), np.zeros(4, np.int64))
    with pytest.raises(TargetError, match=r"`y` holds class index 3 at \[2\]; the model's output has 3 classes"):
        t.step(x, np.array([0, 1, 3, 2]))
    with pytest.raises(TargetError, match="integer class indices"):
        t.step(x, np.zeros(4, np.float32))
    with pytest.raises(TargetError, match="`y` has 3 examples, the input has 4"):
        t.step(x, np.zeros(3, np.int64))
    with pytest.raises(TargetError, match="one-hot"):
        t.step(x, np.zeros((4, 3), np.int64))
    assert t.optimizer_state_dict()["step"] == 0          # nothing ran


def test_check_data_names_the_arrays():
    t = trainer_class(loss="mse")(Adam(), batch=4)
    x, y = t.check_data(np.zeros((10, 4)), np.zeros((10, 3)))
    assert x.dtype == np.float32 and y.dtype == np.float32 and len(x) == 10
    with pytest.raises(DataError, match=r"`x_val` must have shape \[N, 4\]"):
        t.check_data(np.zeros((10, 5)), np.zeros((10, 3)), x_name="x_val")
    with pytest.raises(TargetError, match="`y_val` must hold float values"):
        t.check_data(np.zeros((10, 4)), np.zeros((10, 3), np.int64), y_name="y_val")


def test_seed_sets_the_default_initialisation_and_the_dropout_generator():
    cls = trainer_class()
    a, b, c = cls(Adam(), seed=1), cls(Adam(), seed=1), cls(Adam(), seed=2)
    np.testing.assert_array_equal(a.state_dict()["fc.weight"], b.state_dict()["fc.weight"])
    assert not np.array_equal(a.state_dict()["fc.weight"], c.state_dict()["fc.weight"])
    assert a._rng.random() == b._rng.random() != c._rng.random()


def test_constructor_refuses_a_non_optimizer_and_a_bad_seed():
    cls = trainer_class()
    with pytest.raises(TypeError, match="nnc.SGD, nnc.Adam or nnc.AdamW"):
        cls("adam")
    with pytest.raises(ValueError, match="seed"):
        cls(Adam(), seed=-1)


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_apply_update_allocates_nothing(opt):
    t = trainer_class(n_in=100, n_out=100)(OPTIMIZERS[opt](), batch=2, keep_gradients=True)
    grad = np.random.default_rng(0).standard_normal((100, 100)).astype(np.float32) * 1e-3
    t._apply_update("fc.weight", grad)         # warm up
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()       # a collection in the loop is the interpreter's bookkeeping (it made a full run see 2 KB)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(200):
            t._apply_update("fc.weight", grad)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        if collecting:
            gc.enable()
    assert peak < 1024, peak          # a temporary of the 100x100 weight would be 40 KB


def test_an_optimizer_state_member_declaring_2_36_elements_is_refused_before_allocating(tmp_path):
    import io
    import zipfile
    from nnc.runtime.trainer_base import OptimizerStateError
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 36,)})
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fc.weight.momentum_buffer.npy", header.getvalue() + bytes(12))
    trainer = nnc.train("model m(x: [4]) {\n    fc: dense(3)\n}\n", optimizer=nnc.SGD(0.1, momentum=0.9), batch=2)
    with pytest.raises(OptimizerStateError, match="declares 274,877,906,944 bytes"):
        trainer.load_optimizer_state(path)
