"""The C plan's fast paths for attention models stay exact against PyTorch
(1e-4): attention with its weights packed at code generation (each
projection a dense layer's [E][padded(E)] block, keys transposed so a
head's scores are sums of key rows, blocks of 16 scores with a tail, the
context in 16-, 8- or 1-column blocks by head size), batch and streaming,
causal or not, with and without biases, at lengths around the blocks;
nnc_dense's eight-row blocks (and the rows after them, with an
activation); gelu through the vectorised erf (special values as PyTorch's
but gelu(+inf) = +inf); layernorm's pairwise sums on rows far from zero."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.compiler.build import compile_plan
from nnc.compiler.codegen import c as c_gen

from conftest import HAS_CC

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.skipif(not HAS_CC, reason="no C compiler")


def _close(got, want, tol=1e-4):
    want = np.asarray(want)
    err = np.abs(np.asarray(got) - want).max()
    assert err <= tol * max(1.0, np.abs(want).max()), err


def _mha(e: int, heads: int, bias: bool, seed: int):
    torch.manual_seed(seed)
    mha = torch.nn.MultiheadAttention(e, heads, batch_first=True, bias=bias)
    if bias:
        with torch.no_grad():
            mha.in_proj_bias.normal_()
            mha.out_proj.bias.normal_()
    return mha, {f"a.{k}": v.detach().numpy() for k, v in mha.state_dict().items()}


# (E, heads): head sizes 16 (16-column context blocks), 8 (8-column), 3 and 1 (one column at a
# time); E = 1 (a one-output projection), 12 and 20 (rows padded to 16 and 32)
SHAPES = [(64, 4), (32, 4), (12, 4), (20, 2), (1, 1), (48, 3)]


@pytest.mark.parametrize("e,heads", SHAPES, ids=[f"e{e}h{h}" for e, h in SHAPES])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention_matches_pytorch_around_the_score_blocks(e, heads, causal):
    src = f"model m(x: [T, {e}]) {{\n    return x -> a: attention({heads}, causal={str(causal).lower()})\n}}\n"
    mha, sd = _mha(e, heads, True, e + heads)
    model = nnc.build(src, target="c", dims={"T": 37})
    model.load_weights(sd)
    for t in (37, 33, 32, 17, 16, 15, 1):       # full blocks of 16 scores, tails, a block past the keys
        x = np.random.default_rng(t).standard_normal((1, t, e)).astype(np.float32)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1) if causal else None
        with torch.no_grad():
            xt = torch.from_numpy(x)
            want = mha(xt, xt, xt, attn_mask=mask, need_weights=False)[0].numpy()
        _close(model(x), want)


def test_attention_without_biases_and_large_scores_matches_pytorch():
    src = "model m(x: [T, 32]) {\n    return x -> a: attention(2, bias=false)\n}\n"
    mha, sd = _mha(32, 2, False, 5)
    model = nnc.build(src, target="c", dims={"T": 20}, batch=2)
    model.load_weights(sd)
    x = 30.0 * np.random.default_rng(1).standard_normal((2, 20, 32)).astype(np.float32)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        want = mha(xt, xt, xt, need_weights=False)[0].numpy()
    _close(model(x), want)


def test_attention_weights_are_packed_as_dense_blocks():
    src = "model m(x: [T, 20]) {\n    return x -> a: attention(4)\n}\n"
    plan = compile_plan(src, target="c", dims={"T": 8}, render=False)
    _, sd = _mha(20, 4, True, 0)
    arrays = c_gen.kernel_arrays(plan.graph, sd)
    w, b = sd["a.in_proj_weight"], sd["a.in_proj_bias"]
    packed = arrays["a.in_proj_weight"].reshape(3, 20, 32)
    for i in range(3):
        assert np.array_equal(packed[i, :, :20], w[20 * i:20 * (i + 1)].T)
        assert not packed[i, :, 20:].any()
    assert np.array_equal(arrays["a.in_proj_bias"].reshape(3, 32)[:, :20], b.reshape(3, 20))
    assert np.array_equal(arrays["a.out_proj.weight"].reshape(20, 32)[:, :20], sd["a.out_proj.weight"].T)
    sizes = dict(c_gen._packed_sizes(plan.graph))
    assert {k: v.size for k, v in arrays.items()} == sizes


def test_streamed_attention_matches_the_whole_sequence():
    src = ("model m(tokens: int[T=40]) {\n    emb: embedding(30, 24)\n    pos: positional(40)\n"
           "    a: attention(3, causal=true)\n}\n")
    torch.manual_seed(3)
    state = {"emb.weight": torch.randn(30, 24).numpy(), "pos.weight": torch.randn(40, 24).numpy()}
    state.update(_mha(24, 3, True, 4)[1])
    tokens = np.random.default_rng(0).integers(0, 30, (1, 37))
    whole = nnc.build(src, target="c")
    whole.load_weights(state)
    want = whole(tokens)
    stream = nnc.build(src, target="c", stream=True)
    stream.load_weights(state)
    got = np.concatenate([stream.stream(tokens[:, i:i + n]) for i, n in ((0, 1), (1, 16), (17, 3), (20, 17))],
                         axis=1)
    _close(got, want, 1e-5)


@pytest.mark.parametrize("rows", [1, 7, 8, 13, 24])
@pytest.mark.parametrize("out", [5, 16, 40, 64, 100])
def test_dense_rows_in_blocks_of_eight_match_pytorch(rows, out):
    src = f"model m(x: [{rows}, 24]) {{\n    return x -> d: dense({out}) -> relu\n}}\n"
    torch.manual_seed(rows * out)
    lin = torch.nn.Linear(24, out)
    model = nnc.build(src, target="c", batch=2)
    model.load_weights({f"d.{k}": v.detach().numpy() for k, v in lin.state_dict().items()})
    x = np.random.default_rng(rows).standard_normal((2, rows, 24)).astype(np.float32)
    with torch.no_grad():
        want = F.relu(lin(torch.from_numpy(x))).numpy()
    _close(model(x), want, 1e-5)


def test_gelu_matches_pytorch_everywhere_and_keeps_its_special_values():
    n = 20007                                    # blocks of 16 and a tail
    src = f"model m(x: [{n}]) {{\n    return x -> gelu\n}}\n"
    model = nnc.build(src, target="c")
    x = np.concatenate([np.linspace(-12, 12, n - 7),
                        [np.nan, -np.inf, np.inf, 0.0, -0.0, 3.92, -3.92]]).astype(np.float32)
    got = model(x[None])[0]
    want = F.gelu(torch.from_numpy(x.astype(np.float64))).numpy()
    finite = np.isfinite(x)
    assert np.abs(got[finite] - want[finite]).max() < 2e-6
    assert np.isnan(got[n - 7]) and np.isnan(got[n - 6])          # NaN, and -inf * 0
    assert got[n - 5] == np.inf


def test_layernorm_of_rows_far_from_zero_matches_pytorch():
    src = "model m(x: [T, 77]) {\n    return x -> n: layernorm\n}\n"
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(77)
    with torch.no_grad():
        ln.weight.normal_(), ln.bias.normal_()
    model = nnc.build(src, target="c", dims={"T": 5})
    model.load_weights({f"n.{k}": v.detach().numpy() for k, v in ln.state_dict().items()})
    x = (1000.0 + np.random.default_rng(0).standard_normal((1, 5, 77))).astype(np.float32)
    with torch.no_grad():
        want = ln.double()(torch.from_numpy(x).double()).numpy()
    _close(model(x), want)
