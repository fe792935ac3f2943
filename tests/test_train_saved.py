"""The training plan's saved set: one-byte masks for piecewise-linear
activations, batchnorm fused with the activation and max pool after it
(keeping the conv output, the statistics and one byte per pooled output),
batchnorm outputs recomputed in backward, gradients written over dying
inputs, and scratch taken in chunks of examples only where it would raise the
peak. The figures are pinned (the plan before kept whole float32 activations:
LeNet saved 1,034,752 bytes at batch 32, the conv+batchnorm net 397,984), the
kernels are checked against PyTorch's autograd, and whole steps against
float64 autograd."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler import train_memory
from nnc.compiler.autodiff import StepKind, TensorKind
from nnc.compiler.train import compile_training, train_graph, train_memory_report
from nnc.runtime import conv as C
from nnc.runtime import elementwise as E
from nnc.runtime import norm as N

sys.path.insert(0, str(Path(__file__).parent))
import torch_train_twins as TT  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

# PyTorch's peak for one SGD-momentum step (`benchmarks/bench_train.py`: the
# ATen CPU allocator's bytes above the step's start, torch 2.13): the goal is
# a training arena at most half of it
TORCH_PEAK = {"lenet": 2_455_768, "convbn": 593_772, "mobilenetv2": 630_062_248}


# ------------------------------------------------------------------ the saved set, pinned

def test_lenet_keeps_one_byte_masks_where_no_backward_reads_the_relu_float():
    report = train_memory_report(SAMPLES / "lenet.nn", batch=32)
    # masks of the conv relus (no backward reads them as floats: average pooling needs nothing),
    # the pooled values the next layer's weight gradient reads, the dense relus' outputs (the next
    # dense layer reads them anyway, so no mask): 150,528 + 150,528 + 51,200 + 51,200 + 15,360 + 10,752
    assert report["saved_bytes"] == 429_568
    assert report["arena_bytes"] <= 0.5 * TORCH_PEAK["lenet"]
    _, tg = train_graph(SAMPLES / "lenet.nn")
    masks = {t.name: t.dtype for t in tg.tensors.values() if t.name.endswith(":mask")}
    assert masks == {"relu_0:mask": "uint8", "relu_1:mask": "uint8"}


def test_conv_batchnorm_net_fuses_batchnorm_relu_maxpool_and_keeps_one_byte_taps():
    report = train_memory_report(TT.CONV_BN, batch=32)
    # c1 (147,456) and its statistics, the pooled output (36,864) and its winning taps (9,216, one
    # byte each), c2 (13,824) and its statistics, the global average (1,536)
    assert report["saved_bytes"] == 209_056
    assert report["arena_bytes"] <= 0.5 * TORCH_PEAK["convbn"]
    _, tg = train_graph(TT.CONV_BN)
    labels = [s.label for s in tg.steps if s.kind in (StepKind.FORWARD, StepKind.BACKWARD)]
    assert "forward bn1+relu_0+maxpool2d_0" in labels and "backward bn1+relu_0+maxpool2d_0" in labels
    assert "forward bn2+relu6_0" in labels
    assert tg.tensors["maxpool2d_0:argmax"].dtype == "uint8"
    assert "bn1" not in tg.tensors and "relu_0" not in tg.tensors     # never materialised
    assert not any(s.kind is StepKind.RECOMPUTE for s in tg.steps)    # c2 reads the pooled output, kept


def test_mobilenetv2_recomputes_batchnorm_outputs_for_the_layers_that_read_them():
    _, tg = train_graph(SAMPLES / "mobilenetv2.nn")
    recompute = [s for s in tg.steps if s.kind is StepKind.RECOMPUTE]
    # every batchnorm output a convolution reads: the stem's, the first block's two, each block's
    # expansion and depthwise ones (16 x 2) and the projections of the six blocks without a shortcut
    assert len(recompute) == 1 + 2 + 32 + 6
    backward_reads = {r for s in tg.steps if s.kind is StepKind.BACKWARD for r in s.reads}
    for s in recompute:
        assert tg.tensors[s.writes[0]].kind is TensorKind.RECOMPUTED
        assert s.output not in backward_reads              # the forward's copy is not kept for them
        reader = tg.steps[s.index + 1]          # formed right before the first step that reads it
        assert reader.kind is StepKind.BACKWARD and s.writes[0] in reader.reads
    report = train_memory_report(SAMPLES / "mobilenetv2.nn", batch=8)
    assert report["saved_bytes"] <= 221_000_000           # was 427,617,536
    assert report["arena_bytes"] <= 0.5 * TORCH_PEAK["mobilenetv2"]


def test_a_relu_whose_output_the_next_layer_reads_keeps_it_and_saves_no_mask():
    _, tg = train_graph("model m(x: [8]) {\n a: dense(8) -> relu\n b: dense(4) -> relu\n global: identity\n"
                        " c: dense(2)\n}")
    assert not any(t.dtype == "uint8" for t in tg.tensors.values())


def test_gradients_go_over_dying_inputs_and_recomputed_values():
    plan = compile_training(SAMPLES / "mobilenetv2.nn", batch=2)
    lay = plan.layout
    # the depthwise conv's input is recomputed for its weight gradient; its input gradient reuses that memory
    assert lay.same_memory("d:features.2.relu6_0", "r:features.2.relu6_0")
    # a batchnorm's input gradient reuses its saved input (the conv output)
    assert lay.same_memory("d:features.2.conv.0.0", "features.2.conv.0.0")


# ------------------------------------------------------------------ kernels

@pytest.mark.parametrize("act", [("relu",), ("relu6",), ("leaky_relu", 0.1), ("clamp", -0.5, 0.7),
                                 ("clamp", None, 0.7), ("clamp", -0.5, None)])
def test_masked_backward_equals_the_float_backward_at_kinks_and_nan(act):
    x = np.array([-1, 0, 0.5, 6, 6.5, 3, np.nan, -0.5, 0.7, 1e30, -np.inf, 1e-30], np.float32)
    y = np.empty_like(x)
    getattr(E, act[0])(x, y, *act[1:])
    dy = np.arange(1, x.size + 1, dtype=np.float32)
    ref = np.empty_like(x)
    E.activation_backward(act, x, y, dy, dx=ref)
    mask = np.full(x.shape, 7, np.uint8)
    E.activation_mask(act, x, mask)
    inplace = dy.copy()
    E.activation_backward_masked(act, mask, inplace, dx=inplace)
    apart = np.empty_like(x)
    E.activation_backward_masked(act, mask, dy, dx=apart)
    np.testing.assert_array_equal(inplace, ref)
    np.testing.assert_array_equal(apart, ref)


POOLS = [None, dict(kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0))),
         dict(kernel=(3, 3), stride=(2, 2), padding=((1, 1), (1, 1))),
         dict(kernel=(2, 4), stride=(1, 2), padding=((1, 1), (1, 1)))]     # kw a power of two, padded


@pytest.mark.parametrize("shape", [(5, 3, 7, 6), (4, 3, 9)])
@pytest.mark.parametrize("act", [None, ("relu",), ("relu6",), ("leaky_relu", 0.1), ("clamp", -0.5, 0.7)])
@pytest.mark.parametrize("pool", POOLS)
def test_batchnorm_chain_kernels_match_autograd_in_chunks_and_in_place(shape, act, pool):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    if pool is not None and len(shape) == 3:
        pool = dict(kernel=(1, pool["kernel"][0]), stride=(1, pool["stride"][0]), padding=((0, 0), pool["padding"][1]))
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    c = shape[1]
    g, b = rng.standard_normal(c), rng.standard_normal(c)
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, g, b))
    trm, trv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    y = F.batch_norm(tx, trm, trv, tg, tb, training=True)
    if act is not None:
        y = {"relu": F.relu, "relu6": F.relu6, "leaky_relu": lambda v: F.leaky_relu(v, 0.1),
             "clamp": lambda v: torch.clamp(v, -0.5, 0.7)}[act[0]](y)
    if pool is not None:
        k, s, p = pool["kernel"], pool["stride"], pool["padding"]
        y = F.max_pool1d(y, k[1], s[1], p[1][0]) if len(shape) == 3 else F.max_pool2d(y, k, s, p[0][0])
    dy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.tensor(dy))
    for chunk in (None, 2):
        rm, rv, mean, rstd = np.zeros(c), np.ones(c), np.empty(c), np.empty(c)
        out = np.empty(tuple(y.shape))
        taps = np.empty(out.shape, np.uint8) if pool else None
        nan = {k: np.full(v, np.nan) for k, v in N.batchnorm_chain_train_scratch(shape, act=act, pool=pool,
                                                                                 chunk=chunk).items()}
        N.batchnorm_chain_train(x, g, b, rm, rv, eps=1e-5, momentum=0.1, act=act, pool=pool, out=out, mean=mean,
                                rstd=rstd, argmax=taps, scratch=nan)
        np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-10, atol=1e-7)   # clamp's bounds are float32
        np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-10)
        np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-10)
        if pool is None:
            again = np.empty_like(out)
            N.batchnorm_chain_recompute(x, g, b, mean, rstd, act=act, out=again, scratch={
                k: np.full(v, np.nan) for k, v in N.batchnorm_chain_recompute_scratch(shape, act=act,
                                                                                     chunk=chunk).items()})
            np.testing.assert_array_equal(again, out)         # the same bits as the forward
        for where in ("apart", "over x", "over dy"):
            if where == "over dy" and pool is not None:
                continue
            xs, dys = x.copy(), dy.copy()
            dx = {"apart": np.empty_like(x), "over x": xs, "over dy": dys}[where]
            dgamma, dbeta = np.empty(c), np.empty(c)
            nan = {k: np.full(v, np.nan) for k, v in N.batchnorm_chain_backward_scratch(shape, act=act, pool=pool,
                                                                                        chunk=chunk).items()}
            N.batchnorm_chain_backward(xs, g, b, dys, mean, rstd, act=act, pool=pool, argmax=taps, dx=dx,
                                       dgamma=dgamma, dbeta=dbeta, scratch=nan)
            for got, ref in ((dx, tx.grad), (dgamma, tg.grad), (dbeta, tb.grad)):
                np.testing.assert_allclose(got, ref.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", [  # x shape, w shape, stride, padding, groups
    ((5, 4, 9, 8), (6, 4, 3, 3), (2, 1), ((1, 1), (0, 1)), 1),      # im2col, in chunks
    ((5, 4, 6, 6), (8, 4, 1, 1), (1, 1), ((0, 0), (0, 0)), 1),      # pointwise
    ((5, 4, 9, 9), (8, 1, 3, 3), (2, 2), ((1, 1), (1, 1)), 4),      # depthwise
])
@pytest.mark.parametrize("chunk", [None, 2])
def test_conv_backward_writes_dx_over_x_and_in_chunks_as_apart(case, chunk):
    xs, ws, stride, pads, groups = case
    kw = dict(stride=stride, padding=pads, dilation=(1, 1), groups=groups)
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    dy = rng.standard_normal(C._conv_plan(xs, ws, stride, pads, (1, 1), groups).out_shape)
    ref = [np.empty_like(x), np.empty_like(w), np.empty(ws[0])]
    C.conv2d_backward(x, w, dy, dx=ref[0], dw=ref[1], db=ref[2], **kw)
    shapes = C.conv2d_backward_scratch(xs, ws, chunk=chunk, **kw)
    assert chunk is None or all(s[0] <= chunk for k, s in shapes.items() if k in ("dy_t", "cols", "dy_wide"))
    inplace = x.copy()
    dw, db = np.empty_like(w), np.empty(ws[0])
    C.conv2d_backward(inplace, w, dy, dx=inplace, dw=dw, db=db,
                      scratch={k: np.full(s, np.nan) for k, s in shapes.items()}, **kw)
    for got, want in zip((inplace, dw, db), ref):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ whole steps against autograd

CHAINS = """
model chains(x: [3, 10, 10]) {
    p = x -> b0: batchnorm                                   # on the model input: no input gradient
      -> c1: conv2d(6, 3, padding=1, bias=false) -> b1: batchnorm -> relu
      -> maxpool2d(3, stride=2, padding=1)                   # overlapping, padded windows  [6, 5, 5]
      -> c2: conv2d(6, 3, padding=1, bias=false) -> b2: batchnorm -> leaky_relu(0.1)
    q = p -> c3: depthwise_conv2d(3, padding=1, bias=false) -> b3: batchnorm -> clamp(-0.5, 0.7)
    r = p -> c4: conv2d(6, 1, bias=false) -> b4: batchnorm  # a lone batchnorm, read by two convs
    s = r -> c5: conv2d(6, 1, bias=false)
    t = r -> c6: conv2d(6, 3, padding=1)
    add(q, s, t) -> global_avgpool -> d: dense(3)
}
"""


def _chains_torch(x, P, S):
    import torch.nn.functional as F

    def bn(v, name):
        return F.batch_norm(v, S[f"{name}.running_mean"], S[f"{name}.running_var"], P[f"{name}.weight"],
                            P[f"{name}.bias"], training=True, momentum=0.1, eps=1e-5)
    p = F.relu(bn(F.conv2d(bn(x, "b0"), P["c1.weight"], padding=1), "b1"))
    p = F.leaky_relu(bn(F.conv2d(F.max_pool2d(p, 3, 2, 1), P["c2.weight"], padding=1), "b2"), 0.1)
    q = bn(F.conv2d(p, P["c3.weight"], padding=1, groups=6), "b3").clamp(-0.5, 0.7)
    r = bn(F.conv2d(p, P["c4.weight"]), "b4")
    s = F.conv2d(r, P["c5.weight"])
    t = F.conv2d(r, P["c6.weight"], P["c6.bias"], padding=1)
    return F.linear((q + s + t).mean((2, 3)), P["d.weight"], P["d.bias"])


CHAINS_1D = """
model chains1d(x: [4, 16]) {
    c: conv1d(6, 3, padding=same, bias=false) -> b: batchnorm -> relu6
    maxpool1d(2)                                             # [6, 8]
    e: conv1d(5, 3, bias=false) -> f: batchnorm -> relu
    flatten
    d: dense(3)
}
"""


def _chains_1d_torch(x, P, S):
    import torch.nn.functional as F

    def bn(v, name):
        return F.batch_norm(v, S[f"{name}.running_mean"], S[f"{name}.running_var"], P[f"{name}.weight"],
                            P[f"{name}.bias"], training=True, momentum=0.1, eps=1e-5)
    h = F.max_pool1d(F.relu6(bn(F.conv1d(x, P["c.weight"], padding=1), "b")), 2)
    h = F.relu(bn(F.conv1d(h, P["e.weight"]), "f"))
    return F.linear(h.flatten(1), P["d.weight"], P["d.bias"])


def _step_against_autograd(text, forward, in_shape, classes, batch=4, rows=None):
    """One step of `rows` examples (default: the planned `batch`) against float64 autograd."""
    torch = pytest.importorskip("torch")
    trainer = nnc.train(text, loss="cross_entropy", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True,
                        seed=1)
    state = trainer.state_dict()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((rows or batch, *in_shape)).astype(np.float32)
    y = rng.integers(0, classes, rows or batch)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in state.items()
         if k in trainer.TRAINABLE}
    S = {k: torch.tensor(np.array(v), dtype=torch.float64) for k, v in state.items() if k not in trainer.TRAINABLE}
    loss = trainer.step(x, y)
    value = torch.nn.functional.cross_entropy(forward(torch.tensor(x, dtype=torch.float64), P, S),
                                              torch.tensor(y))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    assert sorted(grads) == sorted(P)
    for k, p in P.items():
        ref = p.grad.numpy()
        assert np.linalg.norm(grads[k] - ref) / max(np.linalg.norm(ref), 1e-8) < 1e-4, k
    for k, v in S.items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            np.testing.assert_allclose(trainer.state_dict()[k], v.numpy(), rtol=1e-5, atol=1e-6)
    return trainer


def test_fused_recomputed_and_lone_batchnorms_give_autograds_gradients():
    trainer = _step_against_autograd(CHAINS, _chains_torch, (3, 10, 10), 3)
    _, tg = train_graph(CHAINS)
    kinds = {s.label: s.kind for s in tg.steps}
    assert "forward b1+relu_0+maxpool2d_0" in kinds and "forward b3+clamp_0" in kinds
    # b0 for c1's weight gradient, the leaky relu's output for c3's and c4's, b4 for c5's and c6's
    assert {s.output for s in tg.steps if s.kind is StepKind.RECOMPUTE} == {"b0", "leaky_relu_0", "b4"}
    assert trainer.ARENA_BYTES > 0


def test_one_dimensional_chains_give_autograds_gradients():
    _step_against_autograd(CHAINS_1D, _chains_1d_torch, (4, 16), 3)


@pytest.mark.parametrize("rows", [2, 5])
def test_a_batch_smaller_than_the_planned_one_gives_autograds_gradients(rows):
    _step_against_autograd(CHAINS, _chains_torch, (3, 10, 10), 3, batch=8, rows=rows)
    _step_against_autograd(TT.CONV_BN, _convbn_torch, (3, 12, 12), 5, batch=32, rows=rows)


def _convbn_torch(x, P, S):
    import torch.nn.functional as F

    def bn(v, name):
        return F.batch_norm(v, S[f"{name}.running_mean"], S[f"{name}.running_var"], P[f"{name}.weight"],
                            P[f"{name}.bias"], training=True, momentum=0.1, eps=1e-5)
    h = F.max_pool2d(F.relu(bn(F.conv2d(x, P["c1.weight"], padding=1), "bn1")), 2)
    h = F.relu6(bn(F.conv2d(h, P["c2.weight"], stride=2, padding=1), "bn2"))
    return F.linear(h.mean((2, 3)), P["fc.weight"], P["fc.bias"])


CHUNKY = """
model chunky(x: [3, 16, 16]) {
    c1: conv2d(8, 3, padding=1) -> relu
    maxpool2d(3, stride=2, padding=1)
    c2: conv2d(8, 3, padding=1, bias=false) -> b2: batchnorm -> relu
    flatten
    d: dense(5)
}
"""


@pytest.mark.parametrize("text,shape", [(CHUNKY, (3, 16, 16)), (TT.CONV_BN, (3, 12, 12))])
def test_scratch_taken_in_chunks_gives_the_same_step(text, shape, monkeypatch):
    """The smallest arena (every step chunked as far as the peak allows) trains as the unchunked plan."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, *shape)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    runs = {}
    for slack in (1.0, 1e9):
        monkeypatch.setattr(train_memory, "CHUNK_SLACK", slack)
        plan = compile_training(text, batch=8)
        trainer = nnc.train(text, optimizer=nnc.SGD(0.1), batch=8, keep_gradients=True, seed=2)
        runs[slack] = (plan, [trainer.step(x, y) for _ in range(2)], trainer.gradients())
    (chunked, losses, grads), (whole, whole_losses, whole_grads) = runs[1.0], runs[1e9]
    assert chunked.layout.chunks and not whole.layout.chunks
    assert chunked.layout.plan.arena_bytes < whole.layout.plan.arena_bytes
    assert "chunk=" in chunked.text
    if text is CHUNKY:
        assert "for part, scratch in v.chunks_" in chunked.text      # the max pool's forward, example by example
    np.testing.assert_allclose(losses, whole_losses, rtol=1e-5)
    for k in grads:
        np.testing.assert_allclose(grads[k], whole_grads[k], rtol=1e-4, atol=1e-6)
