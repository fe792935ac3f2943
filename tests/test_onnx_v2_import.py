"""ONNX import of LANGUAGE.md section 9's ops (INTERFACES.md section 10):
PyTorch modules -> `torch.onnx.export` (the TorchScript exporter with
`TrainingMode.PRESERVE`, and the default dynamo exporter) -> `nnc.from_onnx`
-> `nnc.build` gives PyTorch's output.

- the section 9 samples' twins (tests/torch_twins.py): the imported weights
  carry the twin's state_dict keys, with the shapes of nnc's own sample;
- one small module per section 9 op or exporter pattern
  (tests/torch_twins_v2.py), each imported to the op it must become;
- hand-made graphs for what no exporter writes (GroupNormalization,
  GlobalMaxPool) and for refusals: one error naming every node.

The dynamo exports take seconds each and are marked slow. Skipped when onnx
or torch is not installed.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import nnc  # noqa: E402
from nnc.compiler.onnx_import import OnnxImportError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from torch_twins import BiLstmTagger, CharLM, GluTcn, TinyTransformer, UNetMini  # noqa: E402
from torch_twins_v2 import EXPECT, OPS, VOCAB  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

TWINS = {          # sample -> (twin, input shape without batch, integer input, nnc dims)
    "transformer": (TinyTransformer, (16,), True, {"T": 16}),
    "charlm": (CharLM, (16,), True, {"T": 16}),
    "unet": (UNetMini, (1, 32, 32), False, {}),
    "glu_tcn": (GluTcn, (1, 40), False, {"T": 40}),
    "bilstm_tagger": (BiLstmTagger, (10, 32), False, {"T": 10}),
}

TS_CANNOT_EXPORT = {"adaptive_avgpool1d_uneven"}     # the TorchScript exporter refuses uneven adaptive bins
DYNAMO_UNROLLS = {"rnn_relu_2layer", "rnn_tanh_bidirectional_nobias"}    # nn.RNN: per-step MatMul/Add/act nodes
DYNAMO_EXPECT = {"positional": "positional(9)"}     # dynamo folds `pos.weight[:T]` into a nameless constant


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _perturbed(factory, seed: int = 0):
    """The module with every parameter moved by N(0, 0.1): biases off 0 and
    norms off 1, so no two tensors are equal (the TorchScript exporter would
    alias equal ones under one name) and no projection bias is all zero."""
    torch.manual_seed(seed)
    module = factory().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def _inputs(shapes, integer: bool, batch: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, VOCAB, (batch, *s), generator=g) if integer else
                 torch.randn(batch, *s, generator=g) for s in shapes)


def _export(module, xs, path: Path, exporter: str) -> None:
    names = [f"x{i}" for i in range(len(xs))]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(module, xs, str(path), dynamo=True)
        else:
            torch.onnx.export(module, xs, str(path), dynamo=False, opset_version=17, input_names=names,
                              dynamic_axes={k: {0: "batch"} for k in names},
                              training=torch.onnx.TrainingMode.PRESERVE)


def _import_and_compare(module, xs, path: Path, exporter: str):
    """Export, import, build with the batch of `xs`, compare with PyTorch; the text and weights."""
    _export(module, xs, path, exporter)
    text, weights = nnc.from_onnx(path)
    model = nnc.build(text, batch=xs[0].shape[0], weights=weights)
    with torch.no_grad():
        expected = module(*xs).numpy()
    got = model(*[x.numpy() for x in xs])
    assert got.shape == expected.shape
    assert _rel(got, expected) < 1e-4, text
    return text, weights


# ---------------------------------------------------------------------- the section 9 samples

def _sample_shapes(sample: str) -> dict[str, tuple[int, ...]]:
    model = nnc.build(SAMPLES / f"{sample}.nn", dims=TWINS[sample][3] or None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("sample", list(TWINS))
def test_torchscript_export_of_sample_twin_imports_with_its_keys(sample, tmp_path):
    factory, shape, integer, _ = TWINS[sample]
    twin = _perturbed(factory)
    _, weights = _import_and_compare(twin, _inputs([shape], integer, 2), tmp_path / f"{sample}.onnx", "torchscript")
    assert set(weights) == set(twin.state_dict())
    assert {k: v.shape for k, v in weights.items()} == _sample_shapes(sample)


@pytest.mark.slow
@pytest.mark.parametrize("sample", list(TWINS))
def test_dynamo_export_of_sample_twin_imports_to_the_same_function(sample, tmp_path):
    factory, shape, integer, _ = TWINS[sample]
    twin = _perturbed(factory)
    _, weights = _import_and_compare(twin, _inputs([shape], integer, 2), tmp_path / f"{sample}.onnx", "dynamo")
    keys = set(twin.state_dict())
    if "pos.weight" in keys:        # dynamo folds pos.weight[:T] into a constant of T rows and no name
        keys = keys - {"pos.weight"} | {"positional_0.weight"}
    assert set(weights) == keys


def test_imported_transformer_is_the_samples_structure(tmp_path):
    twin = _perturbed(TinyTransformer)
    text, _ = _import_and_compare(twin, _inputs([(16,)], True, 2), tmp_path / "t.onnx", "torchscript")
    assert "x0: int[16]" in text
    steps = [line.split("=")[-1].strip() for line in text.splitlines()[2:-1]]
    ops = [s.split(": ")[-1].split("(")[0] for s in steps]
    assert ops == ["embedding", "positional"] + ["attention", "add", "layernorm", "dense", "gelu", "dense", "add",
                                                 "layernorm"] * 2 + ["mean", "dense"]


# ---------------------------------------------------------------------- one module per op

def _op_case(name: str, exporter: str, tmp_path: Path):
    factory, shapes, integer = OPS[name]
    module = _perturbed(factory)
    text, weights = _import_and_compare(module, _inputs(shapes, integer, 2), tmp_path / f"{name}.onnx", exporter)
    return module, text, weights


@pytest.mark.parametrize("name", [n for n in OPS if n not in TS_CANNOT_EXPORT])
def test_torchscript_export_of_op_imports_to_its_op(name, tmp_path):
    module, text, weights = _op_case(name, "torchscript", tmp_path)
    assert EXPECT[name] in text
    assert set(weights) == set(module.state_dict())


RECURRENT = [n for n in OPS if n.startswith(("gru", "lstm", "rnn_"))]


@pytest.mark.parametrize("name", RECURRENT)
def test_torchscript_export_with_a_fixed_batch_imports_its_recurrent_layer(name, tmp_path):
    """`torch.onnx.export(m, (x,), path, dynamo=False)` with no dynamic axes: the exporter writes a
    layer's zero state as a zero constant Expand-ed to [layers * dirs, B, H] (B read from the input's
    shape), which the importer refused as a fold it could not do."""
    factory, shapes, integer = OPS[name]
    module = _perturbed(factory)
    xs = _inputs(shapes, integer, 1)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, xs, str(path), dynamo=False)
    assert any(n.op_type == "Expand" for n in onnx.load(str(path)).graph.node)
    text, weights = nnc.from_onnx(path)
    assert EXPECT[name] in text
    with torch.no_grad():
        expected = module(*xs).numpy()
    assert _rel(nnc.build(text, weights=weights)(*[x.numpy() for x in xs]), expected) < 1e-4


class _ConvRecurrent(torch.nn.Module):
    """A CRNN front end: conv1d features, `.transpose(1, 2)`, a batch-first recurrent layer. The
    exporter joins the transpose with the layer's own into one Transpose(perm=[2, 0, 1])."""

    def __init__(self, kind: str):
        super().__init__()
        self.conv = torch.nn.Conv1d(2, 3, 3, padding=1)
        self.rnn = getattr(torch.nn, kind)(3, 5, batch_first=True)

    def forward(self, x):
        return self.rnn(self.conv(x).transpose(1, 2))[0]


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "RNN"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_a_conv_front_end_transposed_into_a_recurrent_layer_imports(kind, dynamic, tmp_path):
    """Refused as "an input that is not [T, B, F]"; with dynamic axes the zero state's Shape of
    the transposed features also held a size shape inference left unnamed (`unk__0`), refused
    although only the batch is read from it."""
    module = _perturbed(lambda: _ConvRecurrent(kind))
    path = tmp_path / "crnn.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 2, 10),), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "B", 2: "T"}} if dynamic else None)
    text, weights = nnc.from_onnx(path)
    assert "transpose((1, 0))" in text and f"rnn: {kind.lower()}(5)" in text
    x = torch.randn(2, 2, 10)
    model = nnc.build(text, weights=weights, batch=2, dims={"T": 10} if dynamic else None)
    with torch.no_grad():
        assert _rel(model(x.numpy()), module(x).numpy()) < 1e-4


class _BiGruClassifier(torch.nn.Module):
    """The text classifier's idiom: both directions' final states side by side."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.GRU(5, 6, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(12, 3)

    def forward(self, x):
        _, h_n = self.rnn(x)
        return self.fc(torch.cat((h_n[-2], h_n[-1]), dim=1))


class _StackedLstmLast(torch.nn.Module):
    """h_n[-1] of a two-layer LSTM: the top layer's final state."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(5, 7, num_layers=2, batch_first=True)
        self.fc = torch.nn.Linear(7, 2)

    def forward(self, x):
        _, (h_n, _) = self.rnn(x)
        return self.fc(h_n[-1])


class _TwoLayerBiGru(torch.nn.Module):
    """The same idiom on a two-layer two-way stack: h_n is [4, B, H], the top layer's two rows last."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.GRU(5, 6, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(12, 3)

    def forward(self, x):
        _, h_n = self.rnn(x)
        return self.fc(torch.cat((h_n[-2], h_n[-1]), dim=1))


@pytest.mark.parametrize("factory", [_BiGruClassifier, _StackedLstmLast, _TwoLayerBiGru])
@pytest.mark.parametrize("fixed", [True, False])
def test_final_states_of_two_way_and_stacked_layers_import(factory, fixed, tmp_path):
    """A two-way layer's Y_h was refused ("the final state of a bidirectional layer is used"), and a
    stack's h_n (each layer's Y_h joined by a Concat along the layer axis) too ("reads a value whose batch
    axis is not first"); the label made for the stack's second step, `rnn_1`-like `mods.0_1`, was no label."""
    module = _perturbed(factory)
    xs = _inputs([(6, 5)], False, 1 if fixed else 2)
    path = tmp_path / "m.onnx"
    if fixed:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, xs, str(path), dynamo=False)
        text, weights = nnc.from_onnx(path)
        with torch.no_grad():
            expected = module(*xs).numpy()
        assert _rel(nnc.build(text, weights=weights)(xs[0].numpy()), expected) < 1e-4
    else:
        _import_and_compare(module, xs, path, "torchscript")


@pytest.mark.parametrize("expand", [False, True])
def test_a_zero_state_of_the_batch_size_imports_expanded_or_not(expand, tmp_path):
    """ConstantOfShape([B, 1, H]) is the layer's zero state; an Expand of it to the same shape stays one
    (the fixed-batch Expand branch refused it as a constant of batch-dependent shape)."""
    from onnx import helper
    h, f, t = 4, 3, 5
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "ax"], ["bu"]),
             helper.make_node("Concat", ["bu", "one", "hh"], ["shape"], axis=0),
             helper.make_node("ConstantOfShape", ["shape"], ["z"],
                              value=onnx.numpy_helper.from_array(np.zeros(1, np.float32)))]
    h0 = "z"
    if expand:
        nodes.append(helper.make_node("Expand", ["z", "shape"], ["ze"]))
        h0 = "ze"
    nodes += [helper.make_node("GRU", ["x", "rnn.W", "rnn.R", "", "", h0], ["y", "yh"], hidden_size=h, layout=1,
                               linear_before_reset=1, name="/rnn/GRU"),
              helper.make_node("Squeeze", ["y", "ax2"], ["out"])]
    inits = {"i0": np.array(0, np.int64), "ax": np.array([0]), "ax2": np.array([2]), "one": np.array([1]),
             "hh": np.array([h]), "rnn.W": rng.standard_normal((1, 3 * h, f)).astype(np.float32),
             "rnn.R": rng.standard_normal((1, 3 * h, h)).astype(np.float32)}
    text, _ = nnc.from_onnx(_save(nodes, [("x", [t, f])], inits, tmp_path / "z.onnx"))
    assert "rnn: gru(4, bias=false)" in text


def test_a_time_major_recurrent_input_is_refused_saying_so(tmp_path):
    class TimeMajor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(5, 4)

        def forward(self, x):
            return self.rnn(x)[0]
    path = tmp_path / "t.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(TimeMajor().eval(), (torch.randn(6, 1, 5),), str(path), dynamo=False)
    with pytest.raises(OnnxImportError, match=r"/rnn/GRU.*batch_first=False.*batch_first=True"):
        nnc.from_onnx(path)


def test_a_label_made_unique_after_a_number_is_still_a_label():
    from nnc.compiler.onnx_import import _Importer
    imp = _Importer.__new__(_Importer)
    imp.labels, imp.reserved = {"mods.0", "fc"}, set()
    assert imp._unique("mods.0") == "mods.0._1" and imp._unique("fc") == "fc_1"


def test_an_expanded_constant_of_the_batch_size_that_is_not_zero_is_refused(tmp_path):
    from onnx import helper
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "ax"], ["bu"]),
             helper.make_node("Concat", ["bu", "one", "four"], ["shape"], axis=0),
             helper.make_node("Expand", ["h", "shape"], ["hb"]),
             helper.make_node("Add", ["x", "hb"], ["y"])]
    inits = {"h": np.full((1, 1, 4), 0.5, np.float32), "i0": np.array(0, np.int64), "ax": np.array([0]),
             "one": np.array([1]), "four": np.array([4])}
    path = _save(nodes, [("x", [1, 4])], inits, tmp_path / "e.onnx")
    with pytest.raises(OnnxImportError, match="Expand.*batch-dependent shape"):
        nnc.from_onnx(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in OPS if n not in DYNAMO_UNROLLS])
def test_dynamo_export_of_op_imports_to_its_op(name, tmp_path):
    module, text, weights = _op_case(name, "dynamo", tmp_path)
    assert DYNAMO_EXPECT.get(name, EXPECT[name]) in text
    if name not in DYNAMO_EXPECT:
        assert set(weights) == set(module.state_dict())


@pytest.mark.slow
def test_dynamo_unrolled_rnn_is_one_clear_error(tmp_path):
    factory, shapes, _ = OPS["rnn_relu_2layer"]
    _export(_perturbed(factory), _inputs(shapes, False, 2), tmp_path / "rnn.onnx", "dynamo")
    with pytest.raises(OnnxImportError, match=r"rnn\.onnx` has \d+ nodes? nnc cannot express: .*MatMul"):
        nnc.from_onnx(tmp_path / "rnn.onnx")


def test_stacked_layers_of_separate_modules_stay_separate_steps(tmp_path):
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.GRU(3, 4, batch_first=True, bidirectional=True)
            self.b = torch.nn.GRU(8, 5, batch_first=True)

        def forward(self, x):
            return self.b(self.a(x)[0])[0]

    text, weights = _import_and_compare(_perturbed(Two), _inputs([(6, 3)], False, 2), tmp_path / "two.onnx",
                                        "torchscript")
    assert "a: gru(4, bidirectional=true)" in text and "b: gru(5)" in text
    assert "a.weight_ih_l0_reverse" in weights and "b.weight_ih_l0" in weights


# ---------------------------------------------------------------------- attention that is not nnc's

class _MaskedAttention(torch.nn.Module):
    """Self-attention with a float mask that is not causal: not nnc's attention."""

    def __init__(self):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.register_buffer("mask", torch.randn(5, 5))

    def forward(self, x):
        return self.attn(x, x, x, attn_mask=self.mask, need_weights=False)[0]


def test_attention_with_another_mask_is_refused_naming_its_softmax(tmp_path):
    _export(_MaskedAttention().eval(), (torch.randn(2, 5, 8),), tmp_path / "masked.onnx", "torchscript")
    with pytest.raises(OnnxImportError) as e:
        nnc.from_onnx(tmp_path / "masked.onnx")
    assert "1 node" in str(e.value) and "`/attn/Softmax` (Softmax: a softmax between two projections" in str(e.value)


# ---------------------------------------------------------------------- hand-made graphs

def _save(nodes, inputs, inits, path: Path, opset: int = 17) -> Path:
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info(k, TensorProto.FLOAT, ["N", *shape]) for k, shape in inputs],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


@pytest.mark.parametrize("opset,per_group", [(18, True), (21, False)])
def test_group_normalization_node_imports_per_channel(opset, per_group, tmp_path):
    from onnx import helper
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 1.5, 2 if per_group else 6).astype(np.float32)
    bias = rng.normal(0, 0.1, 2 if per_group else 6).astype(np.float32)
    node = helper.make_node("GroupNormalization", ["x", "gn.weight", "gn.bias"], ["y"], name="/gn/GroupNormalization",
                            num_groups=2, epsilon=1e-3)
    path = _save([node], [("x", (6, 4, 5))], {"gn.weight": scale, "gn.bias": bias}, tmp_path / "gn.onnx", opset)
    text, weights = nnc.from_onnx(path)
    assert "gn: groupnorm(2, eps=0.001)" in text
    x = rng.standard_normal((3, 6, 4, 5)).astype(np.float32)
    w = np.repeat(scale, 3) if per_group else scale
    b = np.repeat(bias, 3) if per_group else bias
    expected = torch.nn.functional.group_norm(torch.from_numpy(x), 2, torch.from_numpy(w), torch.from_numpy(b),
                                              1e-3).numpy()
    np.testing.assert_array_equal(weights["gn.weight"], w)
    assert _rel(nnc.build(text, batch=3, weights=weights)(x), expected) < 1e-5


def test_global_max_pool_node_imports(tmp_path):
    from onnx import helper
    nodes = [helper.make_node("GlobalMaxPool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    text, weights = nnc.from_onnx(_save(nodes, [("x", (3, 4, 5))], {}, tmp_path / "gmp.onnx"))
    assert "global_maxpool" in text
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(nnc.build(text, batch=2, weights=weights)(x), x.max(axis=(2, 3)))


def test_clip_with_attribute_bounds_before_opset_11_is_a_clamp(tmp_path):
    from onnx import helper
    node = helper.make_node("Clip", ["x"], ["y"], min=-0.25, max=0.5)
    text, weights = nnc.from_onnx(_save([node], [("x", (7,))], {}, tmp_path / "clip.onnx", opset=9))
    assert "clamp(min=-0.25, max=0.5)" in text
    x = np.random.default_rng(2).standard_normal((2, 7)).astype(np.float32)
    np.testing.assert_array_equal(nnc.build(text, batch=2, weights=weights)(x), np.clip(x, -0.25, 0.5))


def test_section_9_variants_nnc_cannot_express_are_one_error_naming_each(tmp_path):
    from onnx import helper
    rng = np.random.default_rng(3)
    h = 4
    nodes = [
        helper.make_node("Resize", ["x", "", "sc"], ["r1"], name="/cubic/Resize", mode="cubic"),
        helper.make_node("Resize", ["x", "", "sc"], ["r2"], name="/corners/Resize", mode="linear",
                         coordinate_transformation_mode="align_corners"),
        helper.make_node("Pad", ["x", "pads"], ["p"], name="/wrap/Pad", mode="wrap"),
        helper.make_node("Pad", ["x", "pads3"], ["p3"], name="/three/Pad"),
        helper.make_node("Transpose", ["s"], ["st"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["st", "W", "R"], ["g"], name="/back/GRU", hidden_size=h, direction="reverse",
                         linear_before_reset=1),
        helper.make_node("Pow", ["x", "three"], ["cube"], name="/cube/Pow"),
        helper.make_node("Slice", ["x", "st0", "en0", "ax0", "neg"], ["rev"], name="/reverse/Slice"),
        helper.make_node("Add", ["x", "x"], ["y"], name="/ok/Add"),
    ]
    inits = {"sc": np.array([1, 1, 2, 2], np.float32), "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
             "pads3": np.array([0, 1, 1, 1, 0, 1, 1, 1], np.int64),
             "W": rng.standard_normal((1, 3 * h, 5)).astype(np.float32),
             "R": rng.standard_normal((1, 3 * h, h)).astype(np.float32), "three": np.array(3.0, np.float32),
             "st0": np.array([-1], np.int64), "en0": np.array([-100], np.int64), "ax0": np.array([3], np.int64),
             "neg": np.array([-1], np.int64)}
    path = _save(nodes, [("x", (3, 4, 4)), ("s", (6, 5))], inits, tmp_path / "bad9.onnx")
    with pytest.raises(OnnxImportError) as e:
        nnc.from_onnx(path)
    message = str(e.value)
    assert message.startswith("`") and "has 7 nodes nnc cannot express" in message
    for name, why in [("/cubic/Resize", "mode=cubic"), ("/corners/Resize", "align_corners"), ("/wrap/Pad", "mode=wrap"),
                      ("/three/Pad", "more than the last two axes"), ("/back/GRU", "direction=reverse"),
                      ("/cube/Pow", "exponent"), ("/reverse/Slice", "step of -1")]:
        assert f"`{name}`" in message and why in message, name
    assert "/ok/Add" not in message
