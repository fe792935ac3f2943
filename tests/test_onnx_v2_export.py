"""`nnc.to_onnx` for the whole catalog (INTERFACES.md section 10, LANGUAGE.md section 9).

- every sample -> `to_onnx` -> onnxruntime gives nnc's own output on both
  targets, with the default weights and with perturbed ones (which must be
  the initializers, under the `state_dict` keys);
- a small model per section 9 op and variant (modes, stacked and two-way
  recurrent layers, causal attention, negative and tuple axes) gives nnc's
  output, at opset 17 and, where the ONNX form depends on the opset, at 13,
  18 and 21; named sizes stay dynamic (run at two lengths);
- every written model passes `onnx.checker.check_model(full_check=True)`.

Skipped when onnx / onnxruntime are not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import nnc  # noqa: E402
from nnc.compiler.frontend import check  # noqa: E402
from nnc.compiler.ir import integer_limits  # noqa: E402
from nnc.compiler.onnx_export import OnnxExportError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SAMPLES  # noqa: E402

ALL_SAMPLES = sorted(p.stem for p in SAMPLES.glob("*.nn"))
LARGE = {"resnet18", "mobilenetv2"}
SECTION9_SAMPLES = ["bilstm_tagger", "charlm", "glu_tcn", "transformer", "unet"]
T = 12                               # the size of a named dimension in these tests


# ---------------------------------------------------------------------- helpers

def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _perturbed(state, seed: int = 1) -> dict[str, np.ndarray]:
    """Weights unlike the defaults (nonzero biases, layernorm scales off 1, batchnorm statistics
    off 0 and 1) at the defaults' scale, so deep models stay finite."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in state.items():
        if k.endswith("running_var"):
            out[k] = (v * rng.uniform(0.5, 1.5, v.shape)).astype(np.float32)
        else:
            out[k] = (v * (1 + 0.2 * rng.standard_normal(v.shape)) + 0.05 * rng.standard_normal(v.shape)
                      ).astype(np.float32)
    return out


def _dims(source) -> dict[str, int]:
    g = check(source).graph
    return {str(d): T for i in g.inputs for d in i.shape if not isinstance(d, int)}


def _inputs(source, dims: dict[str, int], batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard normal floats; indices in [0, num) as int64 (what the ONNX model takes)."""
    g = check(source).graph
    limits = integer_limits(g)
    rng = np.random.default_rng(seed)
    xs = {}
    for i in g.inputs:
        shape = (batch, *[d if isinstance(d, int) else dims[str(d)] for d in i.shape])
        if i.dtype == "int32":
            xs[i.name] = rng.integers(0, limits[i.name], shape).astype(np.int64)
        else:
            xs[i.name] = rng.standard_normal(shape).astype(np.float32)
    return xs


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export(source, weights, path: Path, opset: int = 17) -> Path:
    out = nnc.to_onnx(source, weights, path, opset=opset)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    return out


def _compare(source, tmp_path, opset: int = 17, lengths=(T,), seed: int = 0):
    """Export `source` with perturbed weights; onnxruntime's output equals nnc's (NumPy plan) at
    every length of the named dimension."""
    dims = _dims(source)
    weights = _perturbed(nnc.build(source, dims=dims or None).state_dict(), seed)
    path = _export(source, weights, tmp_path / f"m{opset}.onnx", opset)
    session = _session(path)
    for length in lengths if dims else (None,):
        d = {k: length for k in dims}
        model = nnc.build(source, batch=2, dims=d or None, weights=weights)
        xs = _inputs(source, d, seed=seed)
        ours = model(**xs)
        theirs = session.run(None, xs)[0]
        assert theirs.shape == ours.shape, (theirs.shape, ours.shape)
        assert _rel(theirs, ours) < 1e-4, _rel(theirs, ours)
    return path


def _model(inputs: str, body: str) -> str:
    return f"model m({inputs}) {{\n    {body}\n}}\n"


# ---------------------------------------------------------------------- every sample

@pytest.mark.parametrize("sample", [pytest.param(s, marks=pytest.mark.slow) if s in LARGE else s
                                    for s in ALL_SAMPLES])
def test_exported_sample_runs_in_onnxruntime_with_nncs_results(sample, target, tmp_path):
    source = SAMPLES / f"{sample}.nn"
    dims = _dims(source)
    model = nnc.build(source, batch=2, dims=dims or None, target=target)
    xs = _inputs(source, dims)
    weights = _perturbed(model.state_dict())
    for name, w in (("default", None), ("perturbed", weights)):
        if w is not None:
            model.load_weights(w)
        path = _export(source, w, tmp_path / f"{sample}_{name}.onnx")
        ours = model(**xs)
        theirs = _session(path).run(None, xs)[0]
        assert theirs.shape == ours.shape
        assert _rel(theirs, ours) < 1e-4, name


@pytest.mark.parametrize("opset", [13, 18, 21])
@pytest.mark.parametrize("sample", SECTION9_SAMPLES)
def test_section9_samples_at_other_opsets(sample, opset, tmp_path):
    _compare(SAMPLES / f"{sample}.nn", tmp_path, opset=opset)


@pytest.mark.parametrize("sample", SECTION9_SAMPLES)
def test_initializers_are_the_state_dict(sample, tmp_path):
    source = SAMPLES / f"{sample}.nn"
    weights = _perturbed(nnc.build(source, dims=_dims(source) or None).state_dict())
    m = onnx.load(str(nnc.to_onnx(source, weights, tmp_path / "m.onnx")))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    assert list(inits) == list(weights)
    for k, v in weights.items():
        np.testing.assert_array_equal(inits[k], v)


def test_integer_input_is_int64_with_a_symbolic_length(tmp_path):
    path = nnc.to_onnx(SAMPLES / "charlm.nn", None, tmp_path / "charlm.onnx")
    (x,) = onnx.load(str(path)).graph.input
    assert x.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["batch", "T"]
    session = _session(path)
    for length in (1, 5, 64):                    # the causal mask and the positional rows follow T
        model = nnc.build(SAMPLES / "charlm.nn", batch=3, dims={"T": length})
        xs = _inputs(SAMPLES / "charlm.nn", {"T": length}, batch=3, seed=length)
        assert _rel(session.run(None, xs)[0], model(**xs)) < 1e-4
    with pytest.raises(Exception, match="(?i)out of .*bounds|invalid"):     # an index past the table
        session.run(None, {"tokens": np.full((1, 4), 48, np.int64)})


def test_unsupported_opsets_are_clear_errors(tmp_path):
    for opset in (12, 10_000, "17", True):
        with pytest.raises(OnnxExportError, match="opset .* is not supported: use 13 to"):
            nnc.to_onnx(SAMPLES / "mlp.nn", None, tmp_path / "m.onnx", opset=opset)


# ---------------------------------------------------------------------- one op at a time

SEQ = "x: [T, 8]"
SIG = "x: [4, T]"
IMG = "x: [4, 5, 6]"

CASES = {
    # conv_transpose1d/2d: output_padding, groups, dilation, no bias
    "conv_transpose1d": (SIG, "conv_transpose1d(6, 3, stride=2, padding=1, output_padding=1)"),
    "conv_transpose1d_groups_dilation": (SIG, "conv_transpose1d(6, 3, stride=3, output_padding=1, dilation=2, "
                                              "groups=2, bias=false)"),
    "conv_transpose2d": (IMG, "conv_transpose2d(6, (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0), "
                              "dilation=(1, 2), groups=2)"),
    "conv_transpose2d_square": (IMG, "conv_transpose2d(3, 2, stride=2)"),
    # output_padding at or past the stride (PyTorch allows it below the dilation; onnxruntime refused it)
    "conv_transpose1d_output_padding_dilation": (SIG, "conv_transpose1d(2, 3, dilation=2, output_padding=1)"),
    "conv_transpose2d_output_padding_dilation": (IMG, "conv_transpose2d(2, 3, stride=(2, 1), dilation=(1, 3), "
                                                      "output_padding=(1, 2), padding=(0, 1))"),
    "conv_transpose1d_output_padding_no_bias": (SIG, "conv_transpose1d(2, 2, stride=2, dilation=4, padding=1, "
                                                     "output_padding=3, bias=false)"),
    # upsample: nearest (1-d, 2-d, a pair), linear, bilinear
    "upsample_nearest1d": (SIG, "upsample(3)"),
    "upsample_nearest2d": (IMG, "upsample((2, 3))"),
    "upsample_linear": (SIG, "upsample(3, mode=linear)"),
    "upsample_bilinear": (IMG, "upsample(2, mode=bilinear)"),
    "upsample_bilinear_pair": (IMG, "upsample((3, 2), mode=bilinear)"),
    # pad: F.pad order, constant with a value, reflect, replicate
    "pad_constant": (SIG, "pad((1, 2), value=0.5)"),
    "pad_constant2d": (IMG, "pad((0, 1, 3, 2))"),
    "pad_reflect": (IMG, "pad((2, 1, 1, 3), mode=reflect)"),
    "pad_replicate": (IMG, "pad((1, 3, 2, 0), mode=replicate)"),
    "pad_replicate1d": (SIG, "pad((3, 1), mode=replicate)"),
    # pooling
    "global_maxpool1d": (SIG, "global_maxpool"),
    "global_maxpool2d": (IMG, "global_maxpool"),
    "adaptive_avgpool1d_equal_bins": ("x: [3, 8]", "adaptive_avgpool1d(4)"),
    "adaptive_avgpool1d_uneven": ("x: [3, 7]", "adaptive_avgpool1d(3)"),
    "adaptive_avgpool1d_grow": ("x: [3, 3]", "adaptive_avgpool1d(5)"),
    "adaptive_avgpool2d_equal_bins": ("x: [2, 4, 6]", "adaptive_avgpool2d(2)"),
    "adaptive_avgpool2d_uneven": ("x: [2, 5, 7]", "adaptive_avgpool2d((2, 3))"),
    "adaptive_avgpool2d_one_axis_kept": ("x: [2, 5, 7]", "adaptive_avgpool2d((3, 7))"),
    "adaptive_avgpool2d_rows_kept": ("x: [2, 5, 7]", "adaptive_avgpool2d((5, 3))"),
    # normalisation
    "groupnorm1d": (SIG, "groupnorm(2)"),
    "groupnorm2d": ("x: [6, 4, 5]", "groupnorm(3, eps=0.001)"),
    "groupnorm_one_group": (IMG, "groupnorm(1)"),
    "instancenorm": (SIG, "instancenorm"),
    "instancenorm_affine": (IMG, "instancenorm(eps=0.01, affine=true)"),
    "batchnorm_momentum": (SIG, "batchnorm(momentum=0.3)"),
    "layernorm": (SEQ, "layernorm(eps=0.001)"),
    # recurrent: stacked, two-way, without bias, rnn's nonlinearities
    "gru_stacked_bidirectional": (SEQ, "gru(5, layers=2, bidirectional=true)"),
    "gru_stacked": (SEQ, "gru(4, layers=3)"),
    "gru_bidirectional_no_bias": (SEQ, "gru(4, bidirectional=true, bias=false)"),
    "lstm_stacked_bidirectional": (SEQ, "lstm(5, layers=2, bidirectional=true)"),
    "lstm_stacked_no_bias": (SEQ, "lstm(3, layers=2, bias=false)"),
    "rnn": (SEQ, "rnn(5)"),
    "rnn_relu_stacked_bidirectional": (SEQ, "rnn(4, nonlinearity=relu, layers=2, bidirectional=true)"),
    "rnn_no_bias": (SEQ, "rnn(4, layers=2, bias=false)"),
    # the transformer family
    "embedding": ("tokens: int[T]", "embedding(10, 6)"),
    "embedding_of_selected_row": ("tokens: int[3, T]", "select(0, -1) -> embedding(7, 4)"),
    "embedding_of_a_slice": ("tokens: int[T, 4]", "transpose((1, 0)) -> slice(0, 1, 3) -> embedding(9, 3)"),
    "positional": (SEQ, "positional(16)"),
    "attention": (SEQ, "attention(2)"),
    "attention_causal": (SEQ, "attention(4, causal=true)"),
    "attention_causal_no_bias": (SEQ, "attention(2, causal=true, bias=false)"),
    "matmul": ("a: [3, 4, 5], b: [3, 5, 2]", "matmul(a, b)"),
    "matmul_named": ("a: [T, 5], b: [5, 3]", "matmul(a, b)"),
    "div": ("a: [3, T], b: [3, T]", "c = b -> exp\n    div(a, c)"),
    # axis ops
    "glu": ("x: [6, T]", "glu"),
    "glu_last_negative": ("x: [3, 8]", "glu(-1)"),
    "glu_middle": ("x: [3, 4, 5]", "glu(1)"),
    "slice": ("x: [3, 8]", "slice(1, 2)"),
    "slice_negative_step": ("x: [3, 8]", "slice(-1, -7, none, 2)"),
    "slice_clamped_end": ("x: [5, T]", "slice(0, 1, 100)"),
    "select": ("x: [3, 5, 4]", "select(1, 2)"),
    "select_negative": ("x: [3, 5, 4]", "select(-1, -2)"),
    "select_last_step": (SEQ, "select(0, -1)"),
    "select_first_step": (SEQ, "select(0, 0)"),
    "mean": ("x: [3, 4, 5]", "mean(0)"),
    "mean_tuple_negative": ("x: [3, 4, 5]", "mean((-1, -3))"),
    "mean_time": (SEQ, "mean(0)"),
    "sum_negative": ("x: [3, 4, 5]", "sum(-1)"),
    "sum_tuple": ("x: [3, T, 5]", "sum((0, -1))"),
    "max": ("x: [3, 4, 5]", "max(1)"),
    "max_tuple": ("x: [3, 4, 5]", "max((0, 2))"),
    # elementwise
    "clamp": (SIG, "clamp(-0.5, 0.5)"),
    "clamp_min": (SIG, "clamp(min=-0.2)"),
    "clamp_max": (SIG, "clamp(max=0.3)"),
    "neg": (SIG, "neg"),
    "abs": (SIG, "abs"),
    "exp": (SIG, "exp"),
    "log": (SIG, "abs -> log"),
    "sqrt": (SIG, "abs -> sqrt"),
    "square": (SIG, "square"),
    # older ops whose ONNX form depends on the opset
    "gelu": (SIG, "gelu"),
    "hardswish": (SIG, "hardswish"),
}

# forms that change with the opset (axes inputs, LayerNormalization, Gelu, HardSwish), and ops
# built from other ONNX ops (Unsqueeze/Squeeze, Range, Resize, Pad, Clip inputs)
BY_OPSET = ["mean", "mean_tuple_negative", "mean_time", "sum_negative", "max", "max_tuple", "layernorm", "gelu",
            "hardswish", "groupnorm2d", "attention_causal", "gru_stacked_bidirectional", "lstm_stacked_bidirectional",
            "rnn_relu_stacked_bidirectional", "upsample_bilinear", "upsample_nearest2d", "pad_reflect", "clamp_min",
            "adaptive_avgpool2d_uneven", "select_last_step"]

TWO_LENGTHS = (5, T)                 # named sizes are dynamic: one exported model, two lengths


@pytest.mark.parametrize("case", list(CASES))
def test_op_runs_in_onnxruntime_with_nncs_results(case, tmp_path):
    inputs, body = CASES[case]
    _compare(_model(inputs, body), tmp_path, lengths=TWO_LENGTHS)


@pytest.mark.parametrize("opset", [13, 18, 21])
@pytest.mark.parametrize("case", BY_OPSET)
def test_op_at_other_opsets(case, opset, tmp_path):
    inputs, body = CASES[case]
    _compare(_model(inputs, body), tmp_path, opset=opset, lengths=TWO_LENGTHS)


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_reductions_take_axes_as_an_input_from_opset_18(tmp_path):
    source = _model("x: [3, 4, 5]", "a = x -> mean((0, 2))\n    b = x -> max((0, 2))\n    c = x -> sum((0, 2))\n"
                    "    add(a, b, c)")
    for opset, axes_input in ((13, False), (17, False), (18, True), (21, True)):
        path = _compare(source, tmp_path, opset=opset)
        for n in onnx.load(str(path)).graph.node:
            if n.op_type in ("ReduceMean", "ReduceMax"):
                assert (len(n.input) == 2) == axes_input and any(a.name == "axes" for a in n.attribute) != axes_input
                assert len(n.input) == 2 or [list(a.ints) for a in n.attribute if a.name == "axes"] == [[1, 3]]
            if n.op_type == "ReduceSum":      # axes are an input from opset 13
                assert len(n.input) == 2


def test_opset_dependent_forms(tmp_path):
    source = _model(SEQ, "layernorm -> gelu -> hardswish")
    assert {"LayerNormalization", "Gelu", "HardSwish"}.isdisjoint(_ops(_compare(source, tmp_path, opset=13)))
    ops17 = _ops(_compare(source, tmp_path, opset=17))
    assert "LayerNormalization" in ops17 and "HardSwish" in ops17 and "Gelu" not in ops17
    assert "Gelu" in _ops(_compare(source, tmp_path, opset=20))


def test_standard_domain_and_exact_constructions(tmp_path):
    """No com.microsoft ops; an uneven adaptive pool is a constant averaging matrix, an even one
    AveragePool; a two-way stacked LSTM is one LSTM node per layer."""
    uneven = _ops(_compare(_model("x: [2, 5, 7]", "adaptive_avgpool2d((2, 3))"), tmp_path))
    assert "MatMul" in uneven and "AveragePool" not in uneven
    even = _ops(_compare(_model("x: [2, 4, 6]", "adaptive_avgpool2d(2)"), tmp_path))
    assert "AveragePool" in even and "MatMul" not in even
    path = _compare(SAMPLES / "bilstm_tagger.nn", tmp_path)
    m = onnx.load(str(path))
    assert {n.domain for n in m.graph.node} <= {""} and [o.domain for o in m.opset_import] == [""]
    lstms = [n for n in m.graph.node if n.op_type == "LSTM"]
    assert len(lstms) == 2
    assert all(onnx.helper.get_attribute_value(a) == b"bidirectional" for n in lstms for a in n.attribute
               if a.name == "direction")


# ---------------------------------------------------------------------- several section 9 ops, both targets

MIXED = {
    "image": """
model image_mix(x: [4, 9, 10]) {
    h = x -> pad((1, 2, 2, 1), mode=reflect) -> gn: groupnorm(2)
          -> up: conv_transpose2d(6, 3, stride=2, padding=1, output_padding=1, groups=2)   # [6, 24, 26]
    a = h -> adaptive_avgpool2d((5, 7))                                                    # [6, 5, 7]
    b = x -> inorm: instancenorm(affine=true) -> upsample((1, 2), mode=bilinear)
          -> pad((0, 0, 1, 0), mode=replicate) -> adaptive_avgpool2d((5, 7))              # [4, 5, 7]
    c = concat(a, b, axis=0) -> glu(0)                                                     # [5, 5, 7]
    m = c -> global_maxpool                                                                # [5]
    s = c -> mean((-1, -2)) -> clamp(min=-0.3)
    add(m, s) -> square -> neg
}
""",
    "sequence": """
model seq_mix(x: [T, 8]) {
    h = x -> rec: gru(6, layers=2, bidirectional=true)                                    # [T, 12]
    r = x -> rn: rnn(6, nonlinearity=relu, layers=2, bidirectional=true)
    a = add(h, r) -> pos: positional(32) -> attn: attention(3, causal=true)
    c = a -> transpose((1, 0)) -> ct: conv_transpose1d(4, 3, padding=1)                   # [4, T]
          -> upsample(2, mode=linear) -> pad((2, 0)) -> abs -> sqrt                        # [4, 2T + 2]
    l = c -> slice(0, 1, none, 2) -> exp -> log                                            # [2, 2T + 2]
    d = l -> max(-1)
    e = a -> select(0, -1) -> slice(0, -2) -> exp                                          # [2]
    div(d, e)
}
""",
}


@pytest.mark.parametrize("name", list(MIXED))
def test_mixed_models_on_both_targets(name, target, tmp_path):
    source = MIXED[name]
    dims = _dims(source)
    model = nnc.build(source, batch=2, dims=dims or None, target=target)
    weights = _perturbed(model.state_dict())
    model.load_weights(weights)
    xs = _inputs(source, dims)
    path = _export(source, weights, tmp_path / f"{name}.onnx")
    ours = model(**xs)
    theirs = _session(path).run(None, xs)[0]
    assert theirs.shape == ours.shape
    assert _rel(theirs, ours) < 1e-4
