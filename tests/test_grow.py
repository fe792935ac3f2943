"""Growth (TRAINING.md section 2): the unit-axis maps of every rule, the
migration of weights and optimizer state, the refusals, `nnc.grow` and
`nnc grow`. PyTorch models grown by hand are the oracle where torch is
installed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import nnc
from nnc.compiler import frontend
from nnc.compiler import grow as G
from nnc.runtime import weights as W

try:
    import torch
except ImportError:  # the torch oracles are skipped, the rest runs
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def specs(model):
    g = frontend.check(model).graph
    return {k: W.Spec(p.shape, p.init) for k, p in g.param_specs().items()}


def random_weights(model, seed=1):
    """Weights with nothing at a default value (batchnorm statistics too)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in specs(model).items():
        a = rng.uniform(-1, 1, size=s.shape).astype(np.float32)
        if k.endswith("running_var"):
            a = np.abs(a) + 0.5
        out[k] = a
    return out


def plan(old, new):
    return G.plan(frontend.check(old).graph, frontend.check(new).graph)


def assert_same_function(y2, y1):
    """`y2` (the grown model's output) is `y1` (the old one's) up to float32 rounding. The weights
    themselves are checked bit for bit; the outputs are not, because a BLAS picks its blocking, and
    with it the order of a sum, by the matrices' shape (OpenBLAS 0.3.31 rounds rows 0..2 of a 5-row
    product differently from the 3-row one), and the grown model's sums run over extra zero terms."""
    scale = max(1.0, float(np.abs(y1).max()))
    np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=1e-6 * scale)


def outputs_at_old_positions(old, new, w_old, w_new, x, dims=None):
    """The old model's output and the new model's output at the old units' positions."""
    m1 = nnc.build(old, batch=len(x), weights=w_old, optimize=False, dims=dims)
    m2 = nnc.build(new, batch=len(x), weights=w_new, optimize=False, dims=dims)
    y1, y2 = m1(x), m2(x)
    g = frontend.check(old).graph
    p = plan(old, new)
    where = p.values[g.outputs[0].value]
    index = [np.arange(y2.shape[0])] + [np.arange(y2.shape[k + 1]) if a is None else a for k, a in enumerate(where)]
    return y1, y2[np.ix_(*index)]


# ------------------------------------------------------------------ the forum thread's examples

TWO_LINEAR = """
model net(x: [2]) {
    fc1: dense(%d)
    fc2: dense(2)
}
"""


@needs_torch
def test_two_linear_layers_widening_the_first_matches_pytorch_grown_by_hand():
    old, new = TWO_LINEAR % 2, TWO_LINEAR % 3
    w = random_weights(old)
    w2, _ = nnc.grow(old, new, w, seed=5)
    # PyTorch by hand: the new row of fc1 is fresh, fc2 gets a zero column at dim 1 index 2
    fc1, fc2 = torch.nn.Linear(2, 3), torch.nn.Linear(3, 2)
    fresh = W.default_init(specs(new), 5)
    with torch.no_grad():
        fc1.weight[:2] = torch.tensor(w["fc1.weight"])
        fc1.weight[2] = torch.tensor(fresh["fc1.weight"][2])
        fc1.bias[:2] = torch.tensor(w["fc1.bias"])
        fc1.bias[2] = 0.0
        fc2.weight.zero_()
        fc2.weight[:, :2] = torch.tensor(w["fc2.weight"])
        fc2.bias[:] = torch.tensor(w["fc2.bias"])
    expected = {"fc1.weight": fc1.weight, "fc1.bias": fc1.bias, "fc2.weight": fc2.weight, "fc2.bias": fc2.bias}
    for k, t in expected.items():
        assert w2[k].shape == tuple(t.shape)
        for index in np.ndindex(w2[k].shape):
            assert w2[k][index] == np.float32(t.detach().numpy()[index]), (k, index)
    x = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    torch_out = fc2(fc1(torch.tensor(x))).detach().numpy()
    before = nnc.build(old, batch=4, weights=w)(x)
    np.testing.assert_allclose(torch_out, before, rtol=1e-6, atol=1e-6)
    assert_same_function(nnc.build(new, batch=4, weights=w2)(x), before)


CONV_CONV = """
model net(x: [2, 6, 6]) {
    conv1: conv2d(%d, 3, padding=1) -> relu
    conv2: conv2d(4, 3)
}
"""


@needs_torch
def test_conv_to_conv_widening_places_the_fan_in_at_dim_1_like_pytorch_by_hand():
    old, new = CONV_CONV % 3, CONV_CONV % 5
    w = random_weights(old)
    w2, _ = nnc.grow(old, new, w, seed=2)
    fresh = W.default_init(specs(new), 2)
    c1, c2 = torch.nn.Conv2d(2, 5, 3, padding=1), torch.nn.Conv2d(5, 4, 3)
    with torch.no_grad():
        c1.weight[:3] = torch.tensor(w["conv1.weight"])
        c1.weight[3:] = torch.tensor(fresh["conv1.weight"][3:])
        c1.bias[:3] = torch.tensor(w["conv1.bias"])
        c1.bias[3:] = 0
        c2.weight.zero_()
        c2.weight[:, :3] = torch.tensor(w["conv2.weight"])
        c2.bias[:] = torch.tensor(w["conv2.bias"])
    for k, t in {"conv1.weight": c1.weight, "conv1.bias": c1.bias, "conv2.weight": c2.weight,
                 "conv2.bias": c2.bias}.items():
        t = t.detach().numpy()
        assert w2[k].shape == t.shape
        for index in np.ndindex(t.shape):
            assert w2[k][index] == t[index], (k, index)
    x = np.random.default_rng(1).standard_normal((2, 2, 6, 6)).astype(np.float32)
    y1, y2 = outputs_at_old_positions(old, new, w, w2, x)
    assert_same_function(y2, y1)
    np.testing.assert_allclose(c2(torch.relu(c1(torch.tensor(x)))).detach().numpy(), y2, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ one mapping test per rule

def test_concat_grown_first_input_shifts_the_second_inputs_columns():
    src = """
model net(x: [3, 4, 4]) {
    a = x -> a: conv2d(%d, 1)
    b = x -> b: conv2d(3, 1)
    concat(a, b, axis=0) -> head: conv2d(5, 1)
}
"""
    p = plan(src % 2, src % 4)
    assert p.maps["head.weight"].new_shape == (5, 7, 1, 1)
    np.testing.assert_array_equal(p.maps["head.weight"].positions[1], [0, 1, 4, 5, 6])
    w = random_weights(src % 2)
    w2, _ = nnc.grow(src % 2, src % 4, w)
    np.testing.assert_array_equal(w2["head.weight"][:, 4:], w["head.weight"][:, 2:])
    assert not w2["head.weight"][:, 2:4].any()


@pytest.mark.parametrize("init", ["zero", "net2net"])
@pytest.mark.parametrize("merge", ["concat(a, a, axis=0)", "concat(b, a, b, axis=-1)", "concat(a, r, axis=0)"])
def test_a_concat_listing_the_same_units_twice_keeps_each_copys_columns(merge, init):
    """`concat(a, a)` (or `a` beside `relu(a)`): each copy of a unit has its
    own columns in the consumer, both shift and both keep their weights (the
    second copy's columns overwrote the first's, and the rest were lost)."""
    src = ("model net(x: [5]) {\n  a = x -> la: dense(%d)\n  b = x -> lb: dense(3)\n  r = a -> relu\n"
           f"  c = {merge}\n  return c -> d: dense(2)\n}}\n")
    old, new = src % 2, src % 3
    w = random_weights(old)
    opt = {f"{k}.momentum_buffer": np.random.default_rng(4).standard_normal(v.shape).astype(np.float32)
           for k, v in w.items()}
    w2, opt2 = nnc.grow(old, new, w, opt, init=init, seed=2)
    cols = {"concat(a, a, axis=0)": [0, 1, 3, 4], "concat(b, a, b, axis=-1)": [0, 1, 2, 3, 4, 6, 7, 8],
            "concat(a, r, axis=0)": [0, 1, 3, 4]}[merge]
    np.testing.assert_array_equal(opt2["d.weight.momentum_buffer"][:, cols], opt["d.weight.momentum_buffer"])
    assert not np.delete(opt2["d.weight.momentum_buffer"], cols, axis=1).any()
    if init == "zero":
        np.testing.assert_array_equal(w2["d.weight"][:, cols], w["d.weight"])
        assert not np.delete(w2["d.weight"], cols, axis=1).any()
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    y1, y2 = outputs_at_old_positions(old, new, w, w2, x)
    assert_same_function(y2, y1)


def test_flatten_gives_each_channel_a_block_of_spatial_columns():
    src = """
model net(x: [1, 3, 3]) {
    c: conv2d(%d, 3, padding=1)
    flatten
    fc: dense(2)
}
"""
    p = plan(src % 2, src % 3)
    pos = p.maps["fc.weight"].positions[1]
    np.testing.assert_array_equal(pos, np.arange(18))          # channel c keeps columns c*9 .. c*9+8
    assert p.maps["fc.weight"].new_shape == (2, 27)
    w = random_weights(src % 2)
    w2, _ = nnc.grow(src % 2, src % 3, w)
    assert not w2["fc.weight"][:, 18:].any()


def test_flatten_after_transpose_interleaves_the_units_with_the_time_steps():
    src = """
model net(x: [2, 3]) {
    c: conv1d(%d, 1)
    transpose((1, 0))
    flatten
    fc: dense(2)
}
"""
    p = plan(src % 2, src % 4)
    # [C, T] -> [T, C] -> column t*C + c: with C 2 -> 4, old column t*2+c goes to t*4+c
    np.testing.assert_array_equal(p.maps["fc.weight"].positions[1], [0, 1, 4, 5, 8, 9])


RESIDUAL = """
model net(x: [2, 5, 5]) {
    a = x -> a: conv2d(%d, 3, padding=1)
    b = x -> b: conv2d(%d, 1)
    add(a, b) -> relu -> head: conv2d(2, 1)
}
"""


def test_residual_add_whose_branches_grow_together_keeps_the_function():
    old, new = RESIDUAL % (3, 3), RESIDUAL % (5, 5)
    w = random_weights(old)
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 5)).astype(np.float32)
    for init in ("zero", "net2net"):
        w2, _ = nnc.grow(old, new, w, init=init, seed=4)
        y1, y2 = outputs_at_old_positions(old, new, w, w2, x)
        assert_same_function(y2, y1)


def test_residual_add_with_one_branch_grown_names_the_layers_that_must_grow_together():
    with pytest.raises(nnc.CompileError) as e:
        nnc.grow(RESIDUAL % (3, 3), RESIDUAL % (5, 3), random_weights(RESIDUAL % (3, 3)))
    d = e.value.diagnostics[0]
    assert d.code == "E0204"
    assert any("`a`, `b`" in n and "grow together" in n for n in d.notes)


def test_merge_whose_inputs_grow_at_different_positions_is_e0505():
    src = """
model net(x: [2, 4]) {
    p = x -> p: conv1d(%d, 1)
    q = x -> q: conv1d(2, 1)
    r = x -> r: conv1d(%d, 1)
    c = concat(p, q, axis=0)
    add(c, r) -> head: conv1d(1, 1)
}
"""
    with pytest.raises(nnc.CompileError) as e:
        plan(src % (2, 4), src % (3, 5))
    d = e.value.diagnostics[0]
    assert d.code == "E0505" and "add_0" in d.message and "`p`" in d.help and "`r`" in d.help


DEPTHWISE = """
model net(x: [2, 5, 5]) {
    pw: conv2d(%d, 1) -> relu
    dw: depthwise_conv2d(3, multiplier=%d, padding=1) -> relu
    head: conv2d(2, 1)
}
"""


def test_depthwise_multiplier_grows_within_each_group():
    p = plan(DEPTHWISE % (3, 2), DEPTHWISE % (3, 3))
    np.testing.assert_array_equal(p.maps["dw.weight"].positions[0], [0, 1, 3, 4, 6, 7])
    np.testing.assert_array_equal(p.maps["head.weight"].positions[1], [0, 1, 3, 4, 6, 7])


def test_depthwise_after_a_grown_layer_gets_new_groups_at_the_end():
    p = plan(DEPTHWISE % (3, 2), DEPTHWISE % (4, 2))
    np.testing.assert_array_equal(p.maps["dw.weight"].positions[0], np.arange(6))
    assert p.maps["dw.weight"].new_shape == (8, 1, 3, 3)


@pytest.mark.parametrize("init", ["zero", "net2net"])
@pytest.mark.parametrize("sizes", [((3, 2), (3, 4)), ((3, 2), (5, 2)), ((3, 2), (4, 3))])
def test_depthwise_growth_keeps_the_function(init, sizes):
    old, new = DEPTHWISE % sizes[0], DEPTHWISE % sizes[1]
    w = random_weights(old)
    w2, _ = nnc.grow(old, new, w, init=init, seed=7)
    x = np.random.default_rng(3).standard_normal((2, 2, 5, 5)).astype(np.float32)
    y1, y2 = outputs_at_old_positions(old, new, w, w2, x)
    np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("init", ["zero", "net2net"])
@pytest.mark.parametrize("src", [
    # a depthwise layer on the model's input: its channels are no grown layer's units (net2net recursed forever)
    "model net(x: [3, 6, 6]) {\n  dw: depthwise_conv2d(3, multiplier=%d, padding=1)\n  pw: conv2d(4, 1)\n}\n",
    # a grouped transposed convolution: net2net copies its own units within their group and divides
    # only the consumer's fan-in (it divided the layer's own weights too)
    "model net(x: [4, 6]) {\n  t: conv_transpose1d(%d, 3, groups=2)\n  c: conv1d(3, 1)\n}\n",
    "model net(x: [4, 5, 5]) {\n  t: conv_transpose2d(%d, 2, stride=2, groups=2)\n  c: conv2d(2, 1)\n}\n",
])
def test_grouped_own_units_grow_and_keep_the_function(src, init):
    old, new = src % 2, src % 4
    w = random_weights(old)
    w2, _ = nnc.grow(old, new, w, init=init, seed=3)
    x = np.random.default_rng(3).standard_normal((2, *frontend.check(old).graph.inputs[0].shape)).astype(np.float32)
    y1, y2 = outputs_at_old_positions(old, new, w, w2, x)
    assert_same_function(y2, y1)


AFTER = "model net(x: [4, 6]) {\n  g: conv1d(%d, 1, groups=%d)\n  t: conv_transpose1d(%d, 2, stride=2, groups=2)\n" \
        "  c: conv1d(3, 1)\n}\n"


@pytest.mark.parametrize("init", ["zero", "net2net"])
@pytest.mark.parametrize("sizes", [((6, 2, 4), (6, 2, 6)), ((6, 2, 4), (10, 2, 4)), ((6, 2, 4), (8, 2, 6))],
                         ids=["own", "input", "both"])
def test_a_grouped_transposed_convolution_after_a_weighted_layer_grows(sizes, init):
    """A transposed convolution's weight holds every group's input channels on axis 0 (its filters
    one group's worth on axis 1): growth read axis 0 as one group's worth and crashed (exit 70) as
    soon as its input was a layer's units."""
    old, new = AFTER % sizes[0], AFTER % sizes[1]
    w = random_weights(old)
    w2, _ = nnc.grow(old, new, w, init=init, seed=3)
    assert w2["t.weight"].shape == (sizes[1][0], sizes[1][2] // 2, 2)
    x = np.random.default_rng(3).standard_normal((2, 4, 6)).astype(np.float32)
    y1, y2 = outputs_at_old_positions(old, new, w, w2, x)
    assert_same_function(y2, y1)


def test_a_grouped_transposed_convolution_refuses_an_input_that_moves_channels_across_groups():
    old, new = AFTER % (6, 1, 4), AFTER % (8, 1, 4)      # g's units 3, 4, 5 would land in group 0
    with pytest.raises(nnc.CompileError, match="E0506"):
        nnc.grow(old, new, random_weights(old))


BN = """
model net(x: [2, 4, 4]) {
    c: conv2d(%d, 3, padding=1) -> bn: batchnorm -> relu
    head: conv2d(2, 1)
}
"""


def test_batchnorm_after_the_grown_layer_gets_identity_entries_under_zero():
    w = random_weights(BN % 2)
    w2, _ = nnc.grow(BN % 2, BN % 4, w)
    for name, value in (("weight", 1), ("bias", 0), ("running_mean", 0), ("running_var", 1)):
        np.testing.assert_array_equal(w2[f"bn.{name}"][:2], w[f"bn.{name}"])
        np.testing.assert_array_equal(w2[f"bn.{name}"][2:], [value, value])


def test_batchnorm_after_the_grown_layer_copies_the_source_unit_under_net2net():
    w = random_weights(BN % 2)
    w2, _ = nnc.grow(BN % 2, BN % 4, w, init="net2net", seed=1)
    for j in (2, 3):
        src = [i for i in range(2) if np.array_equal(w2["c.weight"][j], w["c.weight"][i])]
        assert len(src) == 1
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert w2[f"bn.{name}"][j] == w[f"bn.{name}"][src[0]]
    x = np.random.default_rng(4).standard_normal((2, 2, 4, 4)).astype(np.float32)
    y1, y2 = outputs_at_old_positions(BN % 2, BN % 4, w, w2, x)
    np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=1e-6)


RECURRENT = """
model net(x: [T, 3]) {
    rnn: %s(%d)
    head: dense(2)
}
"""


@pytest.mark.parametrize("op, gates", [("gru", 3), ("lstm", 4)])
def test_recurrent_gate_blocks_grow_each_gate_and_weight_hh_on_both_axes(op, gates):
    p = plan(RECURRENT % (op, 3), RECURRENT % (op, 5))
    rows = np.concatenate([k * 5 + np.arange(3) for k in range(gates)])
    np.testing.assert_array_equal(p.maps["rnn.weight_ih_l0"].positions[0], rows)
    np.testing.assert_array_equal(p.maps["rnn.weight_hh_l0"].positions[0], rows)
    np.testing.assert_array_equal(p.maps["rnn.weight_hh_l0"].positions[1], np.arange(3))
    np.testing.assert_array_equal(p.maps["rnn.bias_hh_l0"].positions[0], rows)
    assert p.maps["rnn.weight_hh_l0"].new_shape == (gates * 5, 5)


@needs_torch
@pytest.mark.parametrize("init", ["zero", "net2net"])
@pytest.mark.parametrize("op", ["gru", "lstm"])
def test_recurrent_growth_keeps_the_function_in_pytorch(op, init):
    old, new = RECURRENT % (op, 3), RECURRENT % (op, 5)
    w = random_weights(old)
    w2, _ = nnc.grow(old, new, w, init=init, seed=3)
    layer = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[op]
    r1, r2 = layer(3, 3, batch_first=True), layer(3, 5, batch_first=True)
    r1.load_state_dict({k[4:]: torch.tensor(v) for k, v in w.items() if k.startswith("rnn.")})
    r2.load_state_dict({k[4:]: torch.tensor(v) for k, v in w2.items() if k.startswith("rnn.")})
    x = torch.tensor(np.random.default_rng(5).standard_normal((2, 6, 3)).astype(np.float32))
    h1 = r1(x)[0].detach().numpy()
    h2 = r2(x)[0].detach().numpy()
    if init == "zero":
        np.testing.assert_allclose(h2[..., :3], h1, rtol=1e-6, atol=1e-6)
    y1 = h1 @ w["head.weight"].T + w["head.bias"]
    y2 = h2 @ w2["head.weight"].T + w2["head.bias"]
    np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=1e-5)


def test_a_layer_feeding_two_consumers_pads_both_fan_ins():
    src = """
model net(x: [4]) {
    h = x -> a: dense(%d) -> relu
    p = h -> b: dense(2)
    q = h -> c: dense(3)
    return p, q
}
"""
    w = random_weights(src % 3)
    w2, _ = nnc.grow(src % 3, src % 5, w)
    for k in ("b.weight", "c.weight"):
        np.testing.assert_array_equal(w2[k][:, :3], w[k])
        assert not w2[k][:, 3:].any()
    m1 = nnc.build(src % 3, batch=2, weights=w)
    m2 = nnc.build(src % 5, batch=2, weights=w2)
    x = np.random.default_rng(6).standard_normal((2, 4)).astype(np.float32)
    for y1, y2 in zip(m1(x), m2(x)):
        assert_same_function(y2, y1)


def test_layernorm_over_a_grown_axis_is_allowed_with_a_warning_naming_it():
    src = """
model net(x: [4]) {
    a: dense(%d) -> ln: layernorm
    b: dense(2)
}
"""
    with pytest.warns(G.GrowthWarning, match="`ln`"):
        nnc.grow(src % 3, src % 4, random_weights(src % 3))


# ------------------------------------------------------------------ net2net

def test_net2net_copies_a_unit_and_splits_its_outgoing_weights_by_the_count():
    old, new = TWO_LINEAR % 2, TWO_LINEAR % 4
    w = random_weights(old)
    w2, _ = nnc.grow(old, new, w, init="net2net", seed=11)
    sources = []
    for j in range(4):
        match = [i for i in range(2) if np.array_equal(w2["fc1.weight"][j], w["fc1.weight"][i])
                 and w2["fc1.bias"][j] == w["fc1.bias"][i]]
        assert len(match) == 1
        sources.append(match[0])
    assert sources[:2] == [0, 1]
    counts = np.bincount(sources, minlength=2)
    for j, i in enumerate(sources):
        np.testing.assert_allclose(w2["fc2.weight"][:, j], w["fc2.weight"][:, i] / counts[i], rtol=1e-7)


def test_net2net_choices_follow_the_seed():
    old, new = TWO_LINEAR % 2, TWO_LINEAR % 9
    w = random_weights(old)
    a = nnc.grow(old, new, w, init="net2net", seed=1)[0]["fc1.weight"]
    b = nnc.grow(old, new, w, init="net2net", seed=1)[0]["fc1.weight"]
    c = nnc.grow(old, new, w, init="net2net", seed=2)[0]["fc1.weight"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ------------------------------------------------------------------ optimizer state

def test_adam_state_moves_with_the_units_new_entries_zero_and_step_kept():
    old, new = CONV_CONV % 3, CONV_CONV % 5
    w = random_weights(old)
    rng = np.random.default_rng(8)
    opt = {"step": np.array(7)}
    for k, s in specs(old).items():
        opt[f"{k}.exp_avg"] = rng.standard_normal(s.shape).astype(np.float32)
        opt[f"{k}.exp_avg_sq"] = rng.random(s.shape).astype(np.float32)
    for init in ("zero", "net2net"):
        _, opt2 = nnc.grow(old, new, w, opt, init=init)
        assert int(opt2["step"]) == 7
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt2[f"conv1.weight.{name}"][:3], opt[f"conv1.weight.{name}"])
            assert not opt2[f"conv1.weight.{name}"][3:].any()
            np.testing.assert_array_equal(opt2[f"conv2.weight.{name}"][:, :3], opt[f"conv2.weight.{name}"])
            assert not opt2[f"conv2.weight.{name}"][:, 3:].any()


def test_sgd_momentum_buffers_move_and_a_bad_state_is_refused():
    old, new = TWO_LINEAR % 2, TWO_LINEAR % 3
    w = random_weights(old)
    opt = {f"{k}.momentum_buffer": np.ones(s.shape, np.float32) for k, s in specs(old).items()}
    _, opt2 = nnc.grow(old, new, w, opt)
    assert opt2["fc2.weight.momentum_buffer"].tolist() == [[1, 1, 0], [1, 1, 0]]
    assert "step" not in opt2
    bad = dict(opt)
    bad["fc1.weight.momentum_buffer"] = np.ones((3, 2), np.float32)
    bad["nope.exp_avg"] = np.ones(2, np.float32)
    with pytest.raises(ValueError, match="fc1.weight.momentum_buffer.*shape|unexpected"):
        nnc.grow(old, new, w, bad)


# ------------------------------------------------------------------ refusals

def test_a_shrinking_layer_is_e0501_on_the_new_model():
    with pytest.raises(nnc.CompileError) as e:
        plan(TWO_LINEAR % 3, TWO_LINEAR % 2)
    d = e.value.diagnostics[0]
    assert d.code == "E0501" and "`fc1` shrinks from 3 to 2" in d.message and d.line == 3


def test_a_label_that_appears_or_disappears_is_e0502():
    old = TWO_LINEAR % 2
    with pytest.raises(nnc.CompileError) as e:
        plan(old, old.replace("fc2:", "out:"))
    codes = sorted((d.code, d.message) for d in e.value.diagnostics)
    assert [c for c, _ in codes] == ["E0502", "E0502"]
    assert any("`out` is not in the old model" in m for _, m in codes)
    assert any("`fc2` of the old model is missing" in m for _, m in codes)


def test_a_changed_argument_or_input_is_refused():
    with pytest.raises(nnc.CompileError) as e:
        plan(CONV_CONV % 3, (CONV_CONV % 3).replace("conv2d(4, 3)", "conv2d(4, 1)"))
    assert e.value.diagnostics[0].code == "E0503" and "`kernel`" in e.value.diagnostics[0].message
    with pytest.raises(nnc.CompileError) as e:       # told as the model text writes it, not as Python
        plan(TWO_LINEAR % 2, (TWO_LINEAR % 2).replace("dense(2)", "dense(2, bias=false)"))
    assert "`bias` changed from `true` to `false`" in e.value.diagnostics[0].message
    with pytest.raises(nnc.CompileError) as e:
        plan(TWO_LINEAR % 2, (TWO_LINEAR % 2).replace("[2]", "[3]"))
    assert e.value.diagnostics[0].code == "E0504"


def test_weights_that_do_not_fit_the_old_model_are_a_weights_error():
    w = random_weights(TWO_LINEAR % 3)
    with pytest.raises(W.WeightsError):
        nnc.grow(TWO_LINEAR % 2, TWO_LINEAR % 4, w)


def test_pooling_over_a_grown_axis_is_e0506():
    src = """
model net(x: [2, 4]) {
    c: conv1d(%d, 1)
    transpose((1, 0))
    maxpool1d(2)
    flatten
    fc: dense(2)
}
"""
    with pytest.raises(nnc.CompileError) as e:
        plan(src % 4, src % 6)
    assert e.value.diagnostics[0].code == "E0506"


def test_a_grouped_conv_whose_old_channels_would_change_group_is_e0506():
    src = """
model net(x: [2, 4]) {
    c: conv1d(%d, 1)
    g: conv1d(4, 1, groups=2)
}
"""
    with pytest.raises(nnc.CompileError) as e:
        plan(src % 4, src % 6)
    assert e.value.diagnostics[0].code == "E0506" and "groups=2" in e.value.diagnostics[0].message


def test_grouped_conv_grows_within_each_group_and_its_grouped_consumer_follows():
    src = """
model net(x: [2, 4]) {
    c: conv1d(%d, 1, groups=2)
    g: conv1d(4, 1, groups=2)
}
"""
    p = plan(src % 4, src % 6)
    np.testing.assert_array_equal(p.maps["c.weight"].positions[0], [0, 1, 3, 4])
    np.testing.assert_array_equal(p.maps["g.weight"].positions[1], [0, 1])
    w = random_weights(src % 4)
    for init in ("zero", "net2net"):
        w2, _ = nnc.grow(src % 4, src % 6, w, init=init, seed=3)
        x = np.random.default_rng(9).standard_normal((2, 2, 4)).astype(np.float32)
        y1, y2 = outputs_at_old_positions(src % 4, src % 6, w, w2, x)
        np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=1e-6)



ATTENDED = """
model net(x: [6, 8]) {
    a: attention(2)
    d: dense(%d)
    o: dense(1)
}
"""


@pytest.mark.parametrize("init", ["zero", "net2net"])
def test_a_model_with_attention_grows_a_layer_after_it(init):
    """attention's out_proj keys (`a.out_proj.weight`) are not the label before their last dot: growth
    looked their owner up that way and raised KeyError 'a.out_proj' on any model holding attention."""
    w = random_weights(ATTENDED % 4)
    w2, _ = nnc.grow(ATTENDED % 4, ATTENDED % 6, w, init=init, seed=2)
    for k in ("a.in_proj_weight", "a.in_proj_bias", "a.out_proj.weight", "a.out_proj.bias"):
        np.testing.assert_array_equal(w2[k], w[k])
    x = np.random.default_rng(4).standard_normal((2, 6, 8)).astype(np.float32)
    y1, y2 = outputs_at_old_positions(ATTENDED % 4, ATTENDED % 6, w, w2, x)
    assert_same_function(y2, y1)
    same, _ = nnc.grow(ATTENDED % 4, ATTENDED % 4, w)         # unchanged text: unchanged weights
    for k, v in w.items():
        np.testing.assert_array_equal(same[k], v)


def test_a_grouped_conv_error_names_its_layer_when_a_batchnorm_folds_into_the_one_before():
    src = """
model net(x: [2, 4]) {
    c: conv1d(%d, 1) -> bn: batchnorm
    g: conv1d(4, 1, groups=2)
}
"""
    with pytest.raises(nnc.CompileError) as e:
        plan(src % 4, src % 6)
    d = e.value.diagnostics[0]
    assert d.code == "E0506" and "`g`" in d.message and d.line == 4


# ------------------------------------------------------------------ capacity

def test_capacity_places_entries_so_growing_within_it_moves_nothing():
    src = """
model net(x: [3, 4]) {
    a = x -> a: conv1d(%d, 1)
    b = x -> b: conv1d(3, 1)
    concat(a, b, axis=0) -> head: conv1d(5, 1)
}
"""
    g_old = frontend.check(src % 2).graph
    g_new = frontend.check(src % 4).graph
    room_old = G.capacity(g_old, {"a": 8})
    room_new = G.capacity(g_new, {"a": 8})
    assert room_old["head.weight"].new_shape == room_new["head.weight"].new_shape == (5, 11, 1)
    # b's columns sit after a's room in both: they do not move when a grows within it
    np.testing.assert_array_equal(room_old["head.weight"].positions[1], [0, 1, 8, 9, 10])
    np.testing.assert_array_equal(room_new["head.weight"].positions[1], [0, 1, 2, 3, 8, 9, 10])
    assert room_old["a.weight"].slices()[0] == slice(0, 2)
    with pytest.raises(ValueError, match="less than"):
        G.capacity(g_new, {"a": 3})


# ------------------------------------------------------------------ the command line

def nnc_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", "import sys; from nnc.compiler import grow_cli; import argparse;"
                           "p = argparse.ArgumentParser(prog='nnc'); s = p.add_subparsers(dest='command');"
                           "grow_cli.add_parser(s); a = p.parse_args(sys.argv[1:]); sys.exit(grow_cli.run(a))",
                           *args], capture_output=True, text=True, cwd=cwd)


def test_cli_grows_weights_and_optimizer_state(tmp_path):
    (tmp_path / "old.nn").write_text(CONV_CONV % 3)
    (tmp_path / "new.nn").write_text(CONV_CONV % 4)
    w = random_weights(CONV_CONV % 3)
    np.savez(tmp_path / "w.npz", **w)
    opt = {f"{k}.momentum_buffer": np.ones(s.shape, np.float32) for k, s in specs(CONV_CONV % 3).items()}
    np.savez(tmp_path / "opt.npz", **opt)
    r = nnc_cli("grow", "old.nn", "new.nn", "--weights", "w.npz", "--optimizer-state", "opt.npz",
                "--init", "net2net", "--seed", "3", "-o", "w2.npz", "--optimizer-out", "opt2.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    expected, _ = nnc.grow(CONV_CONV % 3, CONV_CONV % 4, w, init="net2net", seed=3)
    with np.load(tmp_path / "w2.npz") as got:
        for k, v in expected.items():
            np.testing.assert_array_equal(got[k], v)
    with np.load(tmp_path / "opt2.npz") as got:
        assert got["conv2.weight.momentum_buffer"].shape == (4, 4, 3, 3)


def test_cli_grows_a_model_holding_attention(tmp_path):
    (tmp_path / "old.nn").write_text(ATTENDED % 4)
    (tmp_path / "new.nn").write_text(ATTENDED % 6)
    np.savez(tmp_path / "w.npz", **random_weights(ATTENDED % 4))
    r = nnc_cli("grow", "old.nn", "new.nn", "--weights", "w.npz", "-o", "w2.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "w2.npz") as got:
        assert got["d.weight"].shape == (6, 8) and got["o.weight"].shape == (1, 6)


def test_cli_refuses_a_shrink_and_mismatched_weights_with_exit_1_and_no_traceback(tmp_path):
    (tmp_path / "old.nn").write_text(CONV_CONV % 3)
    (tmp_path / "small.nn").write_text(CONV_CONV % 2)
    (tmp_path / "new.nn").write_text(CONV_CONV % 4)
    np.savez(tmp_path / "w.npz", **random_weights(CONV_CONV % 3))
    np.savez(tmp_path / "other.npz", **random_weights(CONV_CONV % 4))
    r = nnc_cli("grow", "old.nn", "small.nn", "--weights", "w.npz", "-o", "w2.npz", cwd=tmp_path)
    assert r.returncode == 1 and "E0501" in r.stderr and "Traceback" not in r.stderr
    assert "small.nn:3:" in r.stderr
    r = nnc_cli("grow", "old.nn", "new.nn", "--weights", "other.npz", "-o", "w2.npz", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
    assert "conv1.weight" in r.stderr
    assert not (tmp_path / "w2.npz").exists()


def test_new_rows_drawn_in_chunks_equal_the_default_initialisation_of_the_new_model():
    """`Growth.fill_new` draws only the new units' rows (gate blocks: several runs of rows)
    and equals `default_init` of the whole new model with the seed."""
    src = "model r(x: [5, 3]) {\n    pre: dense(%d) -> tanh\n    rnn: gru(%d)\n    head: dense(4)\n}\n"
    old, new = frontend.check(src % (4, 3)).graph, frontend.check(src % (6, 5)).graph
    growth = G.plan(old, new)
    fresh = W.default_init({k: W.Spec(p.shape, p.init) for k, p in new.param_specs().items()}, 11)
    for key, rows in (("pre.weight", [4, 5]), ("rnn.weight_ih_l0", [3, 4, 8, 9, 13, 14]),
                      ("rnn.weight_hh_l0", [3, 4, 8, 9, 13, 14])):
        out = np.full(growth.maps[key].new_shape, np.nan, np.float32)
        growth.fill_new(key, out, 11)
        np.testing.assert_array_equal(out[rows], fresh[key][rows], err_msg=key)
    out = np.full((15, 5), np.nan, np.float32)
    growth.fill_new("rnn.weight_hh_l0", out, 11, fresh=False)
    assert np.all(out[rows] == 0) and np.all(out[:, [3, 4]] == 0) and np.isnan(out[0, 0])


def test_widening_an_embedding_draws_its_new_columns_in_chunks():
    """New columns of a table draw every row's values (the generator runs row by row), in chunks:
    drawing the whole 16 MB table at once took ten times its size."""
    import tracemalloc
    src = "model e(t: int[T=6]) {\n    emb: embedding(50000, %d)\n    head: dense(3)\n}\n"
    growth = G.plan(frontend.check(src % 64).graph, frontend.check(src % 80).graph)
    out = np.zeros(growth.maps["emb.weight"].new_shape, np.float32)
    tracemalloc.start()
    try:
        growth.fill_new("emb.weight", out, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.2 * out.nbytes, peak
    assert np.all(out[:, 64:] != 0) and np.all(out[:, :64] == 0)


def test_new_entries_of_normal_tables_and_after_them_equal_the_default_initialisation():
    """Embedding and positional tables draw N(0, 1) as nn.Embedding does (two doubles an element,
    Box-Muller): their new columns, and a dense layer's new rows after them, are the new model's."""
    src = "model e(t: int[T=6]) {\n    emb: embedding(20, %d)\n    pos: positional(8)\n    head: dense(%d)\n}\n"
    old, new = frontend.check(src % (4, 3)).graph, frontend.check(src % (6, 5)).graph
    growth = G.plan(old, new)
    fresh = W.default_init({k: W.Spec(p.shape, p.init) for k, p in new.param_specs().items()}, 5)
    assert abs(float(fresh["emb.weight"].std()) - 1) < 0.15 and np.abs(fresh["emb.weight"]).max() > 1.8
    for key, index in (("emb.weight", np.s_[:, 4:]), ("pos.weight", np.s_[:, 4:]), ("head.weight", np.s_[3:])):
        out = np.full(growth.maps[key].new_shape, np.nan, np.float32)
        growth.fill_new(key, out, 5)
        np.testing.assert_array_equal(out[index], fresh[key][index], err_msg=key)
