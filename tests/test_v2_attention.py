"""The transformer family (LANGUAGE.md section 9): embedding, positional,
attention, matmul and div against PyTorch live on both targets at -O0 and
-O1; integer inputs and their checks; streaming with a key/value cache;
gradients against torch.autograd; growth; diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.compiler.diagnostics import CompileError

torch = pytest.importorskip("torch")
F = torch.nn.functional


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-8))


def codes(text: str) -> list[str]:
    with pytest.raises(CompileError) as info:
        nnc.build(text)
    return [d.code for d in info.value.diagnostics]


ENCODER = """model tf(tokens: int[T=16]) {{
    emb: embedding(50, 32)
    pos: positional(16)
    attn: attention(4, causal={causal}, bias={bias})
}}
"""


def _torch_encoder(causal: bool, bias: bool, seed: int = 0):
    torch.manual_seed(seed)
    emb = torch.nn.Embedding(50, 32)
    pos = torch.randn(16, 32)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True, bias=bias)
    if bias:
        with torch.no_grad():
            mha.in_proj_bias.normal_()
            mha.out_proj.bias.normal_()
    sd = {"emb.weight": emb.weight.detach().numpy(), "pos.weight": pos.numpy()}
    sd.update({f"attn.{k}": v.detach().numpy() for k, v in mha.state_dict().items()})

    def forward(tok: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = emb(torch.tensor(tok, dtype=torch.long)) + pos[:tok.shape[1]]
            t = tok.shape[1]
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1) if causal else None
            return mha(x, x, x, attn_mask=mask, need_weights=False)[0].numpy()
    return sd, forward


@pytest.mark.parametrize("optimize", [True, False], ids=["O1", "O0"])
@pytest.mark.parametrize("causal,bias", [(True, True), (False, True), (False, False)])
def test_encoder_matches_pytorch(target, optimize, causal, bias):
    sd, forward = _torch_encoder(causal, bias)
    text = ENCODER.format(causal=str(causal).lower(), bias=str(bias).lower())
    m = nnc.build(text, target=target, batch=3, weights=sd, optimize=optimize)
    rng = np.random.default_rng(1)
    for t in (16, 11, 1):
        tok = rng.integers(0, 50, size=(3, t))
        assert rel(m(tok), forward(tok)) < 1e-4


def test_attention_softmax_is_stable_for_large_scores(target):
    sd, forward = _torch_encoder(True, True)
    sd = {k: v * (40.0 if k == "attn.in_proj_weight" else 1.0) for k, v in sd.items()}
    m = nnc.build(ENCODER.format(causal="true", bias="true"), target=target, weights=sd)
    tok = np.arange(16)[None] % 50
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    mha.load_state_dict({k[5:]: torch.tensor(v) for k, v in sd.items() if k.startswith("attn.")})
    with torch.no_grad():
        x = torch.tensor(sd["emb.weight"])[torch.tensor(tok)] + torch.tensor(sd["pos.weight"])
        ref = mha(x, x, x, attn_mask=torch.triu(torch.ones(16, 16, dtype=torch.bool), 1), need_weights=False)[0]
    y = m(tok)
    assert np.isfinite(y).all() and rel(y, ref.numpy()) < 1e-4


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint8])
def test_integer_inputs_take_any_integer_dtype(target, dtype):
    sd, forward = _torch_encoder(False, True)
    m = nnc.build(ENCODER.format(causal="false", bias="true"), target=target, weights=sd)
    tok = np.array([[1, 2, 49, 0, 7]], dtype=dtype)
    assert rel(m(tok), forward(tok.astype(np.int64))) < 1e-4


@pytest.mark.parametrize("bad", [50, -1, 2**40])
def test_an_index_outside_the_table_is_a_value_error_naming_the_input(target, bad):
    m = nnc.build(ENCODER.format(causal="false", bias="true"), target=target)
    with pytest.raises(ValueError, match=r"input `tokens` holds the index .* outside \[0, 50\)"):
        m(np.array([[1, bad, 3]], dtype=np.int64))


def test_float_arrays_are_refused_for_an_integer_input(target):
    m = nnc.build(ENCODER.format(causal="false", bias="true"), target=target)
    with pytest.raises(ValueError, match="input `tokens` takes integer indices, got dtype float32"):
        m(np.zeros((1, 4), np.float32))


def test_the_c_kernel_itself_refuses_an_index_outside_the_table(target):
    if target != "c":
        pytest.skip("the C plan's own check")
    m = nnc.build(ENCODER.format(causal="false", bias="true"), target="c")
    bad = np.array([[1, 50, 3]], dtype=np.int32)            # past the Python checks, straight to the plan
    with pytest.raises(ValueError, match="outside its embedding table"):
        m._execute([bad], 1, {"T": 3})


def test_the_c_api_takes_const_int32_pointers(tmp_path):
    from nnc.compiler.build import compile_plan
    path = tmp_path / "tf.nn"
    path.write_text(ENCODER.format(causal="false", bias="true"))
    files = compile_plan(path, target="c").files
    header = next(text for name, text in files.items() if name.endswith("tf.h"))
    assert "int tf_forward(tf_ctx *ctx, const int32_t *v_tokens, float *y_out);" in header
    assert "#include <stdint.h>" in header


INDEXED = """model m(tokens: int[2, T=8]) {
    select(0, -1) -> emb: embedding(10, 4)
}
"""


def test_integer_values_pass_select_to_an_embedding(target):
    m = nnc.build(INDEXED, target=target)
    w = m.state_dict()["emb.weight"]
    tok = np.array([[[1, 2, 3], [4, 5, 9]]])
    assert rel(m(tok), w[tok[:, 1]]) < 1e-6


# ------------------------------------------------------------------ matmul, div

MATMUL = """model m(a: [3, 4, 5], b: [3, 5, 2], c: [3, 4, 2]) {
    p = matmul(a, b)
    return div(p, c)
}
"""


@pytest.mark.parametrize("optimize", [True, False], ids=["O1", "O0"])
def test_matmul_and_div_match_pytorch(target, optimize):
    m = nnc.build(MATMUL, target=target, batch=2, optimize=optimize)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 5, 2))
    c = rng.uniform(0.5, 2.0, (2, 3, 4, 2))
    ref = torch.matmul(torch.tensor(a), torch.tensor(b)) / torch.tensor(c)
    assert rel(m(a, b, c), ref.numpy()) < 1e-4


@pytest.mark.parametrize("text,code", [
    ("model m(a: [4, 5], b: [4, 2]) {\n    matmul(a, b)\n}\n", "E0204"),
    ("model m(a: [2, 4, 5], b: [3, 5, 2]) {\n    matmul(a, b)\n}\n", "E0204"),
    ("model m(a: [5], b: [5, 2]) {\n    matmul(a, b)\n}\n", "E0203"),
    ("model m(a: [4, 5], b: [5, 4]) {\n    div(a, b)\n}\n", "E0204"),
    ("model m(x: [T=8, 30]) {\n    attention(4)\n}\n", "E0306"),
    ("model m(x: [8, 32]) {\n    positional(4)\n}\n", "E0306"),
    ("model m(x: [T=8, 32]) {\n    positional(4)\n}\n", "E0306"),
    ("model m(x: [32]) {\n    attention(4)\n}\n", "E0203"),
    ("model m(x: [T=8, 32]) {\n    embedding(10, 4)\n}\n", "E0209"),
])
def test_diagnostics(text, code):
    assert codes(text) == [code]


def test_heads_that_do_not_divide_e_point_at_heads():
    with pytest.raises(CompileError) as info:
        nnc.build("model m(x: [T=8, 30]) {\n    attention(4)\n}\n")
    d = info.value.diagnostics[0]
    assert "heads=4 does not divide the embedding size 30" in d.message and d.column == 15


# ------------------------------------------------------------------ streaming

LM = """model lm(tokens: int[T=12]) {
    emb: embedding(20, 16)
    pos: positional(12)
    attn: attention(2, causal=true)
    out: dense(20)
}
"""


def test_causal_attention_streams_token_by_token(target):
    whole = nnc.build(LM, target=target, batch=2)
    s = nnc.build(LM, target=target, batch=2, stream=True, weights=whole.state_dict())
    tok = np.random.default_rng(0).integers(0, 20, size=(2, 10))
    ref = whole(tok)
    steps = np.stack([s.step(tok[:, i]) for i in range(10)], axis=1)
    assert rel(steps, ref) < 1e-5
    s.reset()
    chunks = np.concatenate([s.stream(tok[:, :4]), s.stream(tok[:, 4:])], axis=1)
    assert rel(chunks, ref) < 1e-5


def test_a_step_past_the_cache_says_to_reset(target):
    s = nnc.build(LM, target=target, stream=True)
    s.stream(np.zeros((1, 12), np.int64))
    with pytest.raises(ValueError, match=r"reset\(\)"):
        s.step(np.zeros((1,), np.int64))
    s.reset()
    s.step(np.zeros((1,), np.int64))


def test_non_causal_attention_cannot_stream():
    with pytest.raises(CompileError) as info:
        nnc.build(LM.replace("causal=true", "causal=false"), stream=True)
    (d,) = info.value.diagnostics
    assert d.code == "E0401" and "`attn` (attention) cannot stream" in d.message


# ------------------------------------------------------------------ training

def test_gradients_match_autograd():
    text = """model tf(tokens: int[8]) {
    e = emb: embedding(30, 16)
    p = e -> pos: positional(8)
    a = p -> attn: attention(4, causal=true)
    h = add(p, a) -> ln: layernorm
    q = h -> qd: dense(16)
    ht = h -> transpose((1, 0))
    s = matmul(q, ht) -> sm: softmax(-1)
    m = matmul(s, h)
    g = h -> sigmoid
    d = div(m, g)
    return add(m, d) -> out: dense(3)
}
"""
    batch = 3
    trainer = nnc.train(text, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True, seed=1)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in trainer.state_dict().items()}
    rng = np.random.default_rng(2)
    x = rng.integers(0, 30, size=(batch, 8))
    y = rng.standard_normal((batch, 8, 3)).astype(np.float32)
    loss = trainer.step(x, y)
    mask = torch.triu(torch.ones(8, 8, dtype=torch.bool), 1)
    e = P["emb.weight"][torch.tensor(x)]
    p = e + P["pos.weight"][:8]
    pt = p.transpose(0, 1)
    a = F.multi_head_attention_forward(pt, pt, pt, 16, 4, P["attn.in_proj_weight"], P["attn.in_proj_bias"],
                                       None, None, False, 0.0, P["attn.out_proj.weight"], P["attn.out_proj.bias"],
                                       training=False, need_weights=False, attn_mask=mask)[0].transpose(0, 1)
    h = F.layer_norm(p + a, (16,), P["ln.weight"], P["ln.bias"])
    q = h @ P["qd.weight"].T + P["qd.bias"]
    s = torch.softmax(torch.matmul(q, h.transpose(1, 2)), -1)
    m = torch.matmul(s, h)
    out = (m + m / torch.sigmoid(h)) @ P["out.weight"].T + P["out.bias"]
    value = F.mse_loss(out, torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    for k, p in P.items():
        ref = p.grad.numpy()
        assert np.linalg.norm(grads[k] - ref) / max(np.linalg.norm(ref), 1e-8) < 1e-4, k


# ------------------------------------------------------------------ growth

GROW = "model m(tokens: int[T=8]) {{\n    emb: embedding(30, {dim})\n{middle}    out: dense(4)\n}}\n"


def test_embedding_grows_dim():
    old, new = GROW.format(dim=8, middle=""), GROW.format(dim=12, middle="")
    w = nnc.build(old).state_dict()
    grown, _ = nnc.grow(old, new, w)
    assert grown["emb.weight"].shape == (30, 12)
    np.testing.assert_array_equal(grown["emb.weight"][:, :8], w["emb.weight"])
    tok = np.array([[1, 5, 29]])
    np.testing.assert_allclose(nnc.build(new, weights=grown)(tok), nnc.build(old, weights=w)(tok), atol=1e-6)


def test_attention_cannot_grow():
    middle = "    attn: attention(4)\n"
    old, new = GROW.format(dim=8, middle=middle), GROW.format(dim=12, middle=middle)
    w = nnc.build(old).state_dict()
    with pytest.raises(CompileError) as info:
        nnc.grow(old, new, w)
    (d,) = info.value.diagnostics
    assert d.code == "E0506" and "attention cannot grow" in d.message


# ------------------------------------------------------------------ the sample

@pytest.mark.parametrize("optimize", [True, False], ids=["O1", "O0"])
def test_transformer_sample_matches_its_pytorch_twin(target, optimize):
    from pathlib import Path

    from torch_twins import TinyTransformer
    torch.manual_seed(0)
    twin = TinyTransformer().eval()
    with torch.no_grad():                # PyTorch's init, with biases and norms moved off 0 and 1
        for p in twin.parameters():
            p.add_(0.1 * torch.randn_like(p))
    sd = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
    sample = Path(__file__).resolve().parent.parent / "samples" / "transformer.nn"
    m = nnc.build(sample, target=target, batch=2, weights=sd, optimize=optimize)
    tok = np.random.default_rng(4).integers(0, 1000, size=(2, 64))
    with torch.no_grad():
        ref = twin(torch.tensor(tok)).numpy()
    assert rel(m(tok), ref) < 1e-4
    short = tok[:, :9]
    with torch.no_grad():
        assert rel(m(short), twin(torch.tensor(short)).numpy()) < 1e-4
