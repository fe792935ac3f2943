"""Function preservation on the sample models: grown at a random layer by a
random number of units, `zero` gives the old outputs (at the old units'
positions; the same function in exact arithmetic, within 4e-6 relative in
float32) and `net2net` the same within 1e-5 relative."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnc
from nnc.compiler import frontend
from nnc.compiler import grow as G
from nnc.runtime import weights as W

from conftest import SAMPLES

# (sample, text to replace, replacement with {n} for the grown size, the old size)
EDITS = [
    ("mlp", "dense(256)", "dense({n})", 256),
    ("mlp", "dense(128)", "dense({n})", 128),
    ("lenet", "conv2d(6, 5", "conv2d({n}, 5", 6),
    ("lenet", "conv2d(16, 5)", "conv2d({n}, 5)", 16),
    ("lenet", "fc1: dense(120)", "fc1: dense({n})", 120),
    ("gru", "gru(40)", "gru({n})", 40),
    ("lstm", "lstm(32)", "lstm({n})", 32),
    ("concat", "mix1: inception(8, 16)", "mix1: inception({n}, 16)", 8),       # concat shifts branch3
    ("concat", "stem: conv2d(16", "stem: conv2d({n}", 16),                   # batchnorm, two consumers
    ("wavenet", "end.0: conv1d(16, 1)", "end.0: conv1d({n}, 1)", 16),
    ("wavenet", "skip: conv1d(x.shape[0], 1)", "skip: conv1d(x.shape[0] + {n} - 16, 1)", 16),  # 4 skips added
]
HEAVY = [
    ("resnet18", ("down(512)", "basic(512)"), ("down({n})", "basic({n})"), 512),  # residual adds grow together
    ("mobilenetv2", "features.16: inverted_res(160)", "features.16: inverted_res(160, t={n})", 6),  # depthwise
]
DIMS = {"gru": {"T": 6}, "lstm": {"T": 6}, "wavenet": {"T": 8}}


def check_growth(name, old_text, new_text, old_size, grow_by, init, seed):
    path = SAMPLES / f"{name}.nn"
    old = new = path.read_text()
    pairs = zip(old_text, new_text) if isinstance(old_text, tuple) else [(old_text, new_text)]
    for a, b in pairs:
        assert old.count(a) == 1
        new = new.replace(a, b.format(n=old_size + grow_by))
    dims = DIMS.get(name)
    g_old = frontend.check(old).graph
    specs = {k: W.Spec(p.shape, p.init) for k, p in g_old.param_specs().items()}
    rng = np.random.default_rng(seed)
    w = {k: rng.uniform(-0.5, 0.5, s.shape).astype(np.float32) for k, s in specs.items()}
    for k in w:
        if k.endswith("running_var"):
            w[k] = np.abs(w[k]) + 0.5
    w2, _ = nnc.grow(old, new, w, init=init, seed=seed)
    m1 = nnc.build(old, batch=2, weights=w, dims=dims, optimize=False)
    m2 = nnc.build(new, batch=2, weights=w2, dims=dims, optimize=False)
    shape = [dims[d] if isinstance(d, str) else d for d in next(iter(m1.input_shapes.values()))]
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    y1, y2 = m1(x), m2(x)
    where = G.plan(g_old, frontend.check(new).graph).values[g_old.outputs[0].value]
    index = [np.arange(2)] + [np.arange(n) if a is None else a for n, a in zip(y2.shape[1:], where)]
    y2 = y2[np.ix_(*index)]
    if init == "zero":
        # the same sums with zero terms added, but a BLAS picks its blocking (and the order of
        # a sum) by the product's shape: equal up to float32 rounding, never promised bitwise
        assert np.max(np.abs(y2 - y1)) <= 4e-6 * np.max(np.abs(y1))
    else:
        assert np.max(np.abs(y2 - y1)) <= 1e-5 * np.max(np.abs(y1)) + 1e-7


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edit=st.sampled_from(EDITS), grow_by=st.integers(1, 5), init=st.sampled_from(["zero", "net2net"]),
       seed=st.integers(0, 1000))
def test_growing_a_sample_keeps_its_function(edit, grow_by, init, seed):
    check_growth(*edit, grow_by, init, seed)


@pytest.mark.parametrize("edit", EDITS, ids=[f"{e[0]}:{e[1][:12]}" for e in EDITS])
def test_every_sample_edit_keeps_the_function_under_net2net(edit):
    check_growth(*edit, 3, "net2net", 1)


@pytest.mark.slow
@pytest.mark.parametrize("init", ["zero", "net2net"])
@pytest.mark.parametrize("edit", HEAVY, ids=[e[0] for e in HEAVY])
def test_growing_resnet18_and_mobilenetv2_keeps_their_function(edit, init):
    check_growth(*edit, 1 if edit[0] == "mobilenetv2" else 16, init, 0)
