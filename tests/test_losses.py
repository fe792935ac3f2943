"""Losses (`runtime/losses.py`): values and gradients equal
`torch.nn.functional` (autograd) in float32, also over time steps and for
logits of +-1e4; `check_targets` names the array and the problem; no
output-sized allocation when a scratch is given."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

from nnc.compiler.diagnostics import UserError
from nnc.runtime.losses import (LOSS_FUNCTIONS, LOSSES, TargetError, accuracy_count, check_targets,
                                scratch_shape)


def torch_fn(kind):
    F = pytest.importorskip("torch.nn.functional")
    if kind == "cross_entropy":
        return lambda x, y: F.cross_entropy(x.reshape(-1, x.shape[-1]), y.reshape(-1))
    return {"mse": F.mse_loss, "bce_with_logits": F.binary_cross_entropy_with_logits}[kind]


def make(kind, shape, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    if kind == "cross_entropy":
        y = rng.integers(0, shape[-1], shape[:-1])
    elif kind == "mse":
        y = rng.standard_normal(shape).astype(np.float32)
    else:
        y = rng.random(shape).astype(np.float32)
        y[..., 0] = rng.random(shape[:-1]) > 0.5          # hard labels too
    return x, y


def compare(kind, x, y, scratch=True):
    torch = pytest.importorskip("torch")
    grad = np.full_like(x, np.nan)
    s = np.empty(scratch_shape(kind, x.shape), np.float32) if scratch else None
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # no overflow or invalid-value warnings
        loss = LOSS_FUNCTIONS[kind](x, y, grad, s)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ref = torch_fn(kind)(tx, torch.from_numpy(y))
    ref.backward()
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)
    g = tx.grad.numpy()
    np.testing.assert_allclose(grad, g, rtol=1e-5, atol=1e-7 * float(np.abs(g).max()))


CASES = [("cross_entropy", (32, 10)), ("cross_entropy", (4, 7, 10)), ("cross_entropy", (1, 2)),
         ("mse", (8, 5)), ("mse", (3, 6, 4)), ("bce_with_logits", (16, 3)), ("bce_with_logits", (2, 5, 3))]


@pytest.mark.parametrize("kind, shape", CASES)
def test_loss_and_gradient_equal_torch(kind, shape):
    compare(kind, *make(kind, shape))


@pytest.mark.parametrize("kind, shape", [c for c in CASES if c[0] != "mse"])
def test_extreme_logits_are_stable_and_equal_torch(kind, shape):
    x, y = make(kind, shape, seed=3)
    x = np.where(x > 0, 1e4, -1e4).astype(np.float32)
    x.reshape(-1)[::3] = 0.5
    compare(kind, x, y)


@pytest.mark.parametrize("kind", LOSSES)
def test_without_scratch_and_without_grad(kind):
    x, y = make(kind, (6, 4))
    compare(kind, x, y, scratch=False)
    g = np.empty_like(x)
    assert LOSS_FUNCTIONS[kind](x, y, None) == LOSS_FUNCTIONS[kind](x, y, g)


@pytest.mark.parametrize("kind", LOSSES)
def test_a_scratch_planned_for_a_larger_batch_serves_a_smaller_one(kind):
    x, y = make(kind, (5, 4, 3))
    big = np.empty(scratch_shape(kind, (9, 4, 3)), np.float32)
    g1, g2 = np.empty_like(x), np.empty_like(x)
    assert LOSS_FUNCTIONS[kind](x, y, g1, big) == LOSS_FUNCTIONS[kind](x, y, g2)
    np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("kind", LOSSES)
def test_no_output_sized_allocation_with_a_scratch(kind):
    x, y = make(kind, (64, 50, 20))          # 64000 floats: 256 kB
    g = np.empty_like(x)
    s = np.empty(scratch_shape(kind, x.shape), np.float32)
    LOSS_FUNCTIONS[kind](x, y, g, s)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        LOSS_FUNCTIONS[kind](x, y, g, s)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    rows = 64 * 50
    # cross entropy: index temporaries of a few int64 per row; the others: nothing
    assert peak < (4 * 8 * rows if kind == "cross_entropy" else 4096), peak


def test_cross_entropy_refuses_a_gradient_array_it_could_not_write_in_place():
    x, y = make("cross_entropy", (4, 3))
    with pytest.raises(ValueError, match="C-contiguous"):
        LOSS_FUNCTIONS["cross_entropy"](x, y, np.empty((3, 4), np.float32).T)


def test_accuracy_count():
    out = np.array([[0.1, 0.9], [2.0, 1.0], [0.0, 0.0]], np.float32)
    assert accuracy_count(out, np.array([1, 1, 0])) == 2


# ------------------------------------------------------------------ check_targets

def test_cross_entropy_targets_are_returned_as_intp_without_copy_when_possible():
    y = np.array([0, 2, 1], dtype=np.intp)
    assert check_targets("cross_entropy", y, (3,), 4) is y
    y32 = check_targets("cross_entropy", np.array([0, 2, 1], np.int32), (3,), 4)
    assert y32.dtype == np.intp
    seq = check_targets("cross_entropy", [[0, 1], [2, 2]], (2, 3), 2)
    assert seq.shape == (2, 2)


def test_float_targets_are_returned_as_float32():
    y = np.zeros((2, 3), np.float32)
    assert check_targets("mse", y, (3,), 2) is y
    assert check_targets("bce_with_logits", np.zeros((2, 3)), (3,), 2).dtype == np.float32


@pytest.mark.parametrize("kind, y, out_shape, pattern", [
    ("cross_entropy", np.zeros(3, np.float32), (4,),
     r"`y` must hold integer class indices \[B\] for cross_entropy over the model's output \[B, 4\], "
     r"got dtype float32 \(convert with .astype\(np.int64\)\)"),
    ("cross_entropy", np.array([0, 4, 1]), (4,),
     r"`y` holds class index 4 at \[1\]; the model's output has 4 classes \(0 to 3\)"),
    ("cross_entropy", np.array([[0, 1], [1, -1]]), (2, 4), r"`y` holds class index -1 at \[1, 1\]"),
    ("cross_entropy", np.zeros((3, 2), np.int64), (4,), r"got shape \[3, 2\]"),
    ("cross_entropy", np.zeros((3, 4), np.int64), (4,), r"one-hot targets\? pass the class indices"),
    ("cross_entropy", np.array(["a", "b"]), (4,), r"got dtype <U1"),
    ("mse", np.zeros((3, 4), np.int64), (4,), r"`y` must hold float values \[B, 4\] for mse.*int64 "
                                              r"\(convert with .astype\(np.float32\)\)"),
    ("bce_with_logits", np.zeros((3, 5), np.float32), (4,), r"got shape \[3, 5\]"),
    ("mse", np.zeros((9, 4), np.float32), (4,), r"`y` has batch 9; the trainer was built for batch <= 8"),
])
def test_bad_targets_name_y_and_the_problem(kind, y, out_shape, pattern):
    with pytest.raises(TargetError, match=pattern) as e:
        check_targets(kind, y, out_shape, 8)
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)


def test_targets_batch_must_equal_the_inputs_and_the_name_is_used():
    with pytest.raises(TargetError, match="`y_val` has 3 examples, the input has 4"):
        check_targets("mse", np.zeros((3, 2), np.float32), (2,), 8, batch=4, name="y_val")


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        check_targets("l1", np.zeros(2), (2,), 2)
