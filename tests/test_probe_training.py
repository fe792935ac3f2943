"""Probes of TRAINING.md found by an acceptance-style pass: `nnc.grow`
refuses an optimizer state that is not a whole SGD or Adam state (section 1's
layout), instead of passing on a state no trainer can load."""

from __future__ import annotations

import numpy as np
import pytest

import nnc

OLD = """
model m(x: [6]) {
    l3: dense(4)
    l4: dense(2)
}
"""
NEW = OLD.replace("dense(4)", "dense(6)")


def _adam_state():
    t = nnc.train(OLD, loss="mse", optimizer=nnc.Adam(), batch=2)
    t.step(np.ones((2, 6), np.float32), np.ones((2, 2), np.float32))
    return t.state_dict(), t.optimizer_state_dict()


@pytest.mark.parametrize("case, pattern", [
    ("step only", r"missing: `l3\.weight\.exp_avg`"),
    ("no exp_avg_sq", r"missing: `l3\.weight\.exp_avg_sq`"),
    ("mixed", r"mixes SGD's `momentum_buffer`"),
])
def test_grow_refuses_an_incomplete_or_mixed_adam_state(case, pattern):
    w, o = _adam_state()
    bad = {"step only": {"step": o["step"]},
           "no exp_avg_sq": {k: v for k, v in o.items() if "exp_avg_sq" not in k},
           "mixed": {**o, **{k.replace("exp_avg_sq", "momentum_buffer"): v for k, v in o.items()
                             if "exp_avg_sq" in k}}}[case]
    with pytest.raises(ValueError, match=pattern):
        nnc.grow(OLD, NEW, w, bad)


def test_grow_still_takes_a_whole_adam_state_and_an_empty_plain_sgd_state():
    w, o = _adam_state()
    _, o2 = nnc.grow(OLD, NEW, w, o)
    assert o2["l3.weight.exp_avg_sq"].shape == (6, 6) and int(o2["step"]) == 1
    assert nnc.grow(OLD, NEW, w, {})[1] == {}


MLP = """
model m(x: [6]) {
    a: dense(4) -> tanh
    b: dense(2)
}
"""


@pytest.mark.parametrize("trained_first", [False, True])
def test_an_sgd_dampening_state_saved_before_any_step_resumes_exactly(trained_first, tmp_path):
    # PyTorch's SGD state is empty before the first update, which then sets the
    # buffer to the gradient (not (1 - dampening) * gradient); nnc's all-zero
    # buffers saved at step 0 must load back as that fresh state
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((3, 6)).astype(np.float32), rng.integers(0, 2, 3)) for _ in range(3)]
    opt = nnc.SGD(0.1, momentum=0.9, dampening=0.5)
    t1 = nnc.train(MLP, loss="cross_entropy", optimizer=opt, batch=3, seed=0)
    np.savez(tmp_path / "opt.npz", **t1.optimizer_state_dict())
    t2 = nnc.train(MLP, loss="cross_entropy", optimizer=opt, batch=3, seed=0)
    if trained_first:           # a trainer that has stepped, then loads a step-0 checkpoint
        t2.step(*batches[0])
        t2.load_weights(t1.state_dict())
    t2.load_optimizer_state(tmp_path / "opt.npz")
    assert [t1.step(*b) for b in batches] == [t2.step(*b) for b in batches]
    s1, s2 = t1.optimizer_state_dict(), t2.optimizer_state_dict()
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)


def test_loaded_nonzero_sgd_buffers_are_still_decayed_on_the_next_update():
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((3, 6)).astype(np.float32), rng.integers(0, 2, 3)) for _ in range(4)]
    opt = nnc.SGD(0.1, momentum=0.9, dampening=0.5)
    t1 = nnc.train(MLP, loss="cross_entropy", optimizer=opt, batch=3, seed=0)
    t1.step(*batches[0])
    t2 = nnc.train(MLP, loss="cross_entropy", optimizer=opt, batch=3, seed=0)
    t2.load_weights(t1.state_dict())
    t2.load_optimizer_state(t1.optimizer_state_dict())
    assert [t1.step(*b) for b in batches[1:]] == [t2.step(*b) for b in batches[1:]]


def test_growth_into_a_matmul_names_the_reduction_as_such():
    old = "model m(x: [3, 3]) {\n a = x -> e: dense(4)\n b = x -> f: dense(4) -> transpose((1, 0))\n matmul(a, b)\n}"
    w = nnc.train(old, loss="mse", optimizer=nnc.SGD(0.1), batch=1).state_dict()
    with pytest.raises(nnc.CompileError, match=r"`matmul_0` cannot take grown units: matmul reduces axis 1"):
        nnc.grow(old, old.replace("dense(4)", "dense(6)"), w)


@pytest.mark.parametrize("n, batch, code", [(9, 4, 1), (9, 3, 0), (1, 4, 1)])
def test_nnc_train_with_a_last_batch_of_one_before_a_batchnorm_is_a_clear_error(n, batch, code, tmp_path, capsys):
    from nnc.compiler import cli
    model = tmp_path / "bn.nn"
    model.write_text("model m(x: [6]) {\n    a: dense(4) -> bn: batchnorm\n    b: dense(2)\n}\n")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((n, 6)).astype(np.float32), y=rng.integers(0, 2, n))
    rc = cli.main(["train", str(model), "--data", str(tmp_path / "d.npz"), "--batch", str(batch),
                   "-o", str(tmp_path / "w.npz")])
    err = capsys.readouterr().err
    assert rc == code, err
    if code:
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and "1 example" in last and "more than one value per channel" in last
        assert "internal error" not in err and "Traceback" not in err


EMB = "model m(t: int[T]) {\n    emb: embedding(7, 4)\n    h: dense(3)\n}\n"


def _emb_data(path, **override):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.integers(0, 7, (8, 5)), "y": rng.integers(0, 3, (8, 5)),
              "x_val": rng.integers(0, 7, (4, 5)), "y_val": rng.integers(0, 3, (4, 5))}
    arrays.update(override)
    np.savez(path, **arrays)
    return arrays


def test_nnc_train_trains_a_model_with_an_integer_input_as_the_python_api(tmp_path, capsys):
    from nnc.compiler import cli
    model = tmp_path / "e.nn"
    model.write_text(EMB)
    data = _emb_data(tmp_path / "d.npz")
    rc = cli.main(["train", str(model), "--data", str(tmp_path / "d.npz"), "--batch", "8", "--optimizer", "sgd",
                   "--lr", "0.1", "-o", str(tmp_path / "w.npz")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "val accuracy" in out.out
    t = nnc.train(EMB, loss="cross_entropy", optimizer=nnc.SGD(0.1), batch=8, dims={"T": 5})
    order = np.random.Generator(np.random.PCG64(0)).permutation(8)
    t.step(data["x"][order], data["y"][order])
    w = np.load(tmp_path / "w.npz")
    for k, v in t.state_dict().items():
        np.testing.assert_allclose(w[k], v, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("override, pattern", [
    ({"x": np.full((8, 5), 7)}, r"^error: `x` holds the index 7 at \[0, 0\], outside \[0, 7\)"),
    ({"x": np.zeros((8, 5), np.float32)}, r"^error: `x` must hold integer indices .* got dtype float32"),
    ({"x_val": np.full((4, 5), -1)}, r"^error: `x_val` holds the index -1"),
])
def test_nnc_train_with_bad_indices_for_an_integer_input_names_the_array(override, pattern, tmp_path, capsys):
    import re
    from nnc.compiler import cli
    model = tmp_path / "e.nn"
    model.write_text(EMB)
    _emb_data(tmp_path / "d.npz", **override)
    rc = cli.main(["train", str(model), "--data", str(tmp_path / "d.npz"), "-o", str(tmp_path / "w.npz")])
    err = capsys.readouterr().err
    assert rc == 1 and "internal error" not in err and "Traceback" not in err
    assert re.search(pattern, err.strip().splitlines()[-1]), err


def test_an_empty_batch_predicts_empty_outputs_and_a_step_refuses_it():
    t = nnc.train("model m(x: [1, 8, 8]) {\n    c: conv2d(4, 3) -> relu -> flatten -> fc: dense(3)\n}", loss="mse",
                  optimizer=nnc.SGD(0.1), batch=4)
    empty = t.predict(np.zeros((0, 1, 8, 8), np.float32))
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    with pytest.raises(ValueError, match="at least one example"):
        t.step(np.zeros((0, 1, 8, 8), np.float32), np.zeros((0, 3), np.float32))
    assert t.predict(np.ones((2, 1, 8, 8), np.float32)).shape == (2, 3)
