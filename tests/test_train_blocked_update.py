"""Blocked updates: a large dense weight's gradient is formed a block of rows
at a time and each block is applied by the optimizer at once, so the
training arena holds a tile instead of the whole gradient. The result must
equal the unblocked plan (and PyTorch) for every optimizer, and
`keep_gradients=True` must still return whole gradients."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler import autodiff
from nnc.compiler.train import compile_training
from nnc.runtime import dense as dense_kernels

sys.path.insert(0, str(Path(__file__).parent))
import torch_train_twins as TT  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

# dense_1's weight (250 x 300 = 75,000 floats) is blocked and the layer has an input gradient:
# that gradient must be formed with the weight before its update
WIDE = """
model wide(x: [64]) {
    dense(300) -> relu
    dense(250) -> tanh
    dense(5)
}
"""
# a dense layer on [B, T, F]: dense_0's weight (192 x 400) is blocked
SEQ = """
model seq(x: [T=6, 400]) {
    dense(192) -> relu
    dense(3)
}
"""
# dense_1 reads a batchnorm's output recomputed for its backward (`r:relu_0`): its blocked update reads that too;
# dense_0 has no bias (batchnorm's shift takes its place) and no input gradient, so its backward step forms nothing
BN = """
model bn(x: [400]) {
    dense(256, bias=false)
    batchnorm
    relu
    dense(300)
    dense(4)
}
"""

OPTIMIZERS = {
    "sgd": nnc.SGD(0.05),
    "sgd_momentum_dampening": nnc.SGD(0.05, momentum=0.9, dampening=0.3),
    "sgd_nesterov_wd": nnc.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "sgd_momentum_wd": nnc.SGD(0.05, momentum=0.8, weight_decay=0.02),
    "adam": nnc.Adam(1e-3),
    "adam_wd": nnc.Adam(1e-3, weight_decay=0.05),
    "adamw": nnc.AdamW(1e-3, weight_decay=0.1),
}


def _data(shape, steps, batch, classes=None, out_shape=None, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(steps):
        b = batch if i < steps - 1 else max(1, batch // 2)      # the last batch smaller than the planned one
        x = rng.standard_normal((b, *shape)).astype(np.float32)
        y = rng.integers(0, classes, b) if classes else rng.standard_normal((b, *out_shape)).astype(np.float32)
        out.append((x, y))
    return out


def _unblocked(monkeypatch):
    monkeypatch.setattr(autodiff, "BLOCKED_ABOVE", 1 << 62)


def _blocked_steps(plan):
    return [s for s in plan.train_graph.steps if s.kind is autodiff.StepKind.UPDATE and s.blocked]


def _run(model, opt, loss, batches, batch, keep=False):
    trainer = nnc.train(model, loss=loss, optimizer=opt, batch=batch, seed=5, keep_gradients=keep)
    losses = [trainer.step(x, y) for x, y in batches]
    return trainer, losses


def _rel(a, b, start=0.0):
    """How far `a` is from `b`, relative to how far training moved `b` from `start`. The blocked sums
    are those of the whole product in another order (BLAS picks its kernels by shape), and Adam's
    update divides a gradient by its own size: float32 rounding, not a fixed count of ulps, bounds it."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    moved = np.linalg.norm(b - np.asarray(start, np.float64))
    return float(np.linalg.norm(a - b) / moved) if moved else float(np.abs(a - b).max())


CASES = {"mlp": (SAMPLES / "mlp.nn", "cross_entropy", dict(shape=(784,), classes=10), 16, ["dense_0.weight"]),
         "wide": (WIDE, "cross_entropy", dict(shape=(64,), classes=5), 8, ["dense_1.weight"]),
         "bn": (BN, "cross_entropy", dict(shape=(400,), classes=4), 8, ["dense_1.weight", "dense_0.weight"]),
         "seq": (SEQ, "mse", dict(shape=(6, 400), out_shape=(6, 3)), 4, ["dense_0.weight"])}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_plans_block_exactly_the_large_dense_weights(case):
    model, loss, _, batch, blocked = CASES[case]
    plan = compile_training(model, loss=loss, batch=batch)
    assert [s.param for s in _blocked_steps(plan)] == blocked
    for key in blocked:
        assert f"d:{key}" not in plan.train_graph.tensors       # no whole-gradient buffer anywhere
        assert f"self._apply_update_rows({key!r}, rows, dw, scratch)" in plan.text
    assert compile_training(model, loss=loss, batch=batch).text == plan.text      # deterministic
    assert plan.text.count("each block applied at once") == len(blocked)           # one comment per step
    tile = dense_kernels.WEIGHT_TILE * 4
    for s in _blocked_steps(plan):
        scratch = {k: plan.layout.sizes[b] for k, b in plan.layout.scratch[s.index].items()}
        assert set(scratch) == {"grad", "update"} and all(v <= tile for v in scratch.values())


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_blocked_updates_equal_the_unblocked_plan_over_several_steps(case, opt_name, monkeypatch):
    model, loss, data, batch, _ = CASES[case]
    opt = OPTIMIZERS[opt_name]
    batches = _data(steps=5, batch=batch, **data)
    blocked, blocked_losses = _run(model, opt, loss, batches, batch)
    _unblocked(monkeypatch)
    whole, whole_losses = _run(model, opt, loss, batches, batch)
    assert not _blocked_steps(compile_training(model, loss=loss, batch=batch))
    np.testing.assert_allclose(blocked_losses, whole_losses, rtol=1e-5)
    start = nnc.train(model, loss=loss, optimizer=opt, batch=batch, seed=5).state_dict()
    ours, theirs = blocked.state_dict(), whole.state_dict()
    for k in ours:
        # the weight gradient's block sums run over the same examples as the whole product's
        assert _rel(ours[k], theirs[k], start[k]) < 1e-5, (k, _rel(ours[k], theirs[k], start[k]))
    so, st = blocked.optimizer_state_dict(), whole.optimizer_state_dict()
    assert so.keys() == st.keys()
    for k in so:
        if k == "step":
            assert int(so[k]) == int(st[k]) == len(batches)
        else:
            assert _rel(so[k], st[k]) < 1e-5, k


def _trains_like(model, twin, opt, batches, seed):
    """nnc's trainer of `model` and its PyTorch `twin`, from the same start: the same losses and weights."""
    trainer = nnc.train(model, optimizer=opt, batch=len(batches[0][0]), seed=seed)
    TT.load_state(twin, trainer.state_dict())
    ours = [trainer.step(x, y) for x, y in batches]
    theirs = TT.run_torch(twin, opt, "cross_entropy", batches)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    for k, v in twin.state_dict().items():
        a, b = trainer.state_dict()[k].astype(np.float64), v.detach().numpy().astype(np.float64)
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b), k


@pytest.mark.parametrize("opt_name", ["sgd_nesterov_wd", "adam", "adamw"])
def test_blocked_updates_match_pytorch(opt_name):
    torch = pytest.importorskip("torch")
    opt = OPTIMIZERS[opt_name]

    class Wide(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense_0 = torch.nn.Linear(64, 300)
            self.dense_1 = torch.nn.Linear(300, 250)
            self.dense_2 = torch.nn.Linear(250, 5)

        def forward(self, x):
            return self.dense_2(torch.tanh(self.dense_1(torch.relu(self.dense_0(x)))))

    assert _blocked_steps(compile_training(WIDE, batch=8))
    _trains_like(WIDE, Wide(), opt, _data((64,), 6, 8, classes=5), seed=2)


@pytest.mark.parametrize("opt_name", ["sgd_momentum_wd", "adamw"])
def test_a_blocked_first_layer_without_bias_trains_like_pytorch(opt_name):
    """dense_0 of BN has nothing to form in its backward step (no bias, no input gradient): the plan
    compiles and its blocked update alone trains it."""
    torch = pytest.importorskip("torch")
    opt = OPTIMIZERS[opt_name]
    assert "dense_0.bias" not in nnc.train(BN, optimizer=opt, batch=8).state_dict()

    class Bn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense_0 = torch.nn.Linear(400, 256, bias=False)
            self.batchnorm_0 = torch.nn.BatchNorm1d(256)
            self.dense_1 = torch.nn.Linear(256, 300)
            self.dense_2 = torch.nn.Linear(300, 4)

        def forward(self, x):
            return self.dense_2(self.dense_1(torch.relu(self.batchnorm_0(self.dense_0(x)))))

    assert [s.param for s in _blocked_steps(compile_training(BN, batch=8))] == ["dense_1.weight", "dense_0.weight"]
    _trains_like(BN, Bn(), opt, _data((400,), 5, 8, classes=4), seed=3)


def test_the_mlp_training_arena_is_at_most_half_of_its_unblocked_arena_and_of_the_weight_gradient(monkeypatch):
    blocked = compile_training(SAMPLES / "mlp.nn", batch=32)
    _unblocked(monkeypatch)
    whole = compile_training(SAMPLES / "mlp.nn", batch=32)
    assert whole.layout.plan.arena_bytes >= 784 * 256 * 4          # it held dense_0's whole weight gradient
    assert blocked.layout.plan.arena_bytes <= whole.layout.plan.arena_bytes // 2
    assert blocked.layout.plan.arena_bytes < 784 * 256 * 4 // 2


@pytest.mark.parametrize("case", ["mlp", "wide"])
def test_keep_gradients_still_returns_whole_gradients(case, monkeypatch):
    model, loss, data, batch, blocked_keys = CASES[case]
    batches = _data(steps=3, batch=batch, **data)
    opt = nnc.SGD(0.1, momentum=0.9)
    blocked, _ = _run(model, opt, loss, batches, batch, keep=True)
    grads = blocked.gradients()
    _unblocked(monkeypatch)
    whole, _ = _run(model, opt, loss, batches, batch, keep=True)
    expected = whole.gradients()
    assert grads.keys() == expected.keys()
    for k in expected:
        assert grads[k].shape == expected[k].shape
        assert _rel(grads[k], expected[k]) < 1e-5, k
    for k in blocked_keys:
        assert np.abs(grads[k]).sum() > 0


def test_blocked_updates_after_growth_keep_training(tmp_path):
    trainer = nnc.train(WIDE, optimizer=nnc.Adam(1e-3), batch=8, seed=1)
    for x, y in _data((64,), 2, 8, classes=5):
        trainer.step(x, y)
    trainer.grow(WIDE.replace("dense(250)", "dense(280)"))
    assert trainer.state_dict()["dense_1.weight"].shape == (280, 300)
    losses = [trainer.step(x, y) for x, y in _data((64,), 3, 8, classes=5, seed=4)]
    assert all(np.isfinite(losses))
    assert int(trainer.optimizer_state_dict()["step"]) == 5


def test_the_optimizer_scratch_outside_the_arena_skips_blocked_parameters():
    """A blocked weight updates with arena tiles, so the trainer's one
    whole-parameter scratch is sized by the largest other parameter (the
    MLP's dense_1.weight, 128 x 256), not by dense_0.weight (256 x 784)."""
    t = nnc.train(SAMPLES / "mlp.nn", loss="cross_entropy", optimizer=nnc.Adam(0.01), batch=32)
    assert t.ROW_BLOCKED == ("dense_0.weight",)
    assert t._update_flat.size == 128 * 256


def test_blocks_hold_at_least_16_rows_of_a_wide_weight():
    """A 4096-wide layer would take 4 rows a block within the 16K-float tile:
    1024 matmuls, each re-reading x. Blocks keep 16 rows at least."""
    assert dense_kernels.weight_block_rows((256, 784)) == 20       # the MLP: the tile decides
    assert dense_kernels.weight_block_rows((4096, 4096)) == 16
    assert dense_kernels.weight_block_rows((8, 20000)) == 8          # never more rows than the weight has
