"""ONNX bridges (INTERFACES.md section 10): `nnc.to_onnx` and `nnc.from_onnx`.

- every sample -> `to_onnx` -> onnxruntime gives nnc's own output;
- every sample's PyTorch twin -> `torch.onnx.export` (the TorchScript exporter
  with `TrainingMode.PRESERVE`, and the default dynamo exporter) -> `from_onnx`
  -> `nnc.build` gives PyTorch's output; ResNet-18 and MobileNetV2 keep the
  twin's parameter count and state_dict keys;
- the imported text of LeNet and the GRU model is golden, and so is the error
  for a model with unsupported nodes; a corrupt file is a clear error.

Skipped when onnx / onnxruntime (or torch, for the twins) are not installed.
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
ort = pytest.importorskip("onnxruntime")

import nnc  # noqa: E402
from nnc.compiler.bridges_cli import main as bridges_main  # noqa: E402
from nnc.compiler.diagnostics import UserError  # noqa: E402
from nnc.compiler.extras import MissingExtra  # noqa: E402
from nnc.compiler.onnx_import import OnnxImportError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SAMPLES  # noqa: E402
from torch_twins import DIMS, TWINS, load_seeded_weights  # noqa: E402

SMALL = ["mlp", "lenet", "gru", "lstm", "wavenet", "concat"]
LARGE = ["resnet18", "mobilenetv2"]


def _inputs(model, dims, batch, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((batch, *[dims[d] if isinstance(d, str) else d for d in shape]))
            .astype(np.float32) for k, shape in model.input_shapes.items()}


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ---------------------------------------------------------------------- export

@pytest.mark.parametrize("sample", SMALL + LARGE)
def test_exported_sample_runs_in_onnxruntime_with_nncs_results(sample, target, tmp_path):
    dims = DIMS.get(sample)
    path = nnc.to_onnx(SAMPLES / f"{sample}.nn", None, tmp_path / f"{sample}.onnx")
    model = nnc.build(SAMPLES / f"{sample}.nn", batch=2, dims=dims, target=target)
    xs = _inputs(model, dims or {}, 2)
    ours = model(**xs)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, xs)[0]
    assert theirs.shape == ours.shape
    assert _rel(theirs, ours) < 1e-4


def test_exported_initializers_are_the_state_dict(tmp_path):
    weights = {k: v + 0.5 for k, v in nnc.build(SAMPLES / "lenet.nn").state_dict().items()}
    path = nnc.to_onnx(SAMPLES / "lenet.nn", weights, tmp_path / "lenet.onnx")
    m = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    assert set(inits) == set(weights)
    for k, v in weights.items():
        np.testing.assert_array_equal(inits[k], v)


def test_a_built_model_exports_with_its_own_weights(target, tmp_path):
    model = nnc.build(SAMPLES / "lenet.nn", batch=2, target=target)
    model.load_weights({k: v + 0.25 for k, v in model.state_dict().items()})
    path = nnc.to_onnx(model, None, tmp_path / "lenet.onnx")
    xs = _inputs(model, {}, 2)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, xs)[0]
    assert _rel(theirs, model(**xs)) < 1e-4
    other = {k: v * 0 for k, v in model.state_dict().items()}       # given weights win over the model's own
    inits = {i.name: onnx.numpy_helper.to_array(i)
             for i in onnx.load(str(nnc.to_onnx(model, other, tmp_path / "z.onnx"))).graph.initializer}
    assert all(not v.any() for v in inits.values())


def test_exported_batch_and_named_dims_are_dynamic(tmp_path):
    path = nnc.to_onnx(SAMPLES / "wavenet.nn", None, tmp_path / "w.onnx")
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "T"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = nnc.build(SAMPLES / "wavenet.nn", batch=3, dims={"T": 100})
    x = np.random.default_rng(1).standard_normal((3, 1, 100)).astype(np.float32)
    assert _rel(session.run(None, {"x": x})[0], model(x)) < 1e-4


def test_export_then_import_gives_the_same_function(tmp_path):
    for sample in ("lenet", "gru", "wavenet"):
        dims = DIMS.get(sample)
        weights = nnc.build(SAMPLES / f"{sample}.nn", dims=dims).state_dict()
        path = nnc.to_onnx(SAMPLES / f"{sample}.nn", weights, tmp_path / f"{sample}.onnx")
        text, imported = nnc.from_onnx(path)
        assert set(imported) == set(weights)
        a = nnc.build(SAMPLES / f"{sample}.nn", batch=2, dims=dims)
        b = nnc.build(text, batch=2, dims=dims, weights=imported)
        xs = _inputs(a, dims or {}, 2)
        assert _rel(b(**xs), a(**xs)) < 1e-5, sample


# ---------------------------------------------------------------------- import of PyTorch exports

def _export_twin(sample: str, path: Path, exporter: str):
    torch = pytest.importorskip("torch")
    factory, shapes = TWINS[sample]
    module = factory().eval()
    load_seeded_weights(module, 0)
    batch = 1 if exporter == "dynamo" else 2
    xs = tuple(torch.from_numpy(np.random.default_rng(2).standard_normal((batch, *s)).astype(np.float32))
               for s in shapes.values())
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(module, xs, str(path), dynamo=True)
        else:
            torch.onnx.export(module, xs, str(path), dynamo=False, opset_version=17, input_names=list(shapes),
                              dynamic_axes={k: {0: "batch"} for k in shapes},
                              training=torch.onnx.TrainingMode.PRESERVE)
    with torch.no_grad():
        expected = module(*xs).numpy()
    return module, xs, expected


def _import_and_compare(sample, exporter, tmp_path):
    module, xs, expected = _export_twin(sample, tmp_path / f"{sample}.onnx", exporter)
    text, weights = nnc.from_onnx(tmp_path / f"{sample}.onnx")
    model = nnc.build(text, batch=xs[0].shape[0], weights=weights)
    assert _rel(model(*[x.numpy() for x in xs]), expected) < 1e-4
    return module, text, weights


@pytest.mark.parametrize("sample", SMALL)
def test_torchscript_export_of_twin_imports_to_the_same_function(sample, tmp_path):
    module, _, weights = _import_and_compare(sample, "torchscript", tmp_path)
    twin_keys = {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}
    if sample == "wavenet":      # the last layer's residual output is unused: the exporter drops it
        twin_keys -= {"layers.3.residual.weight", "layers.3.residual.bias"}
    assert set(weights) == twin_keys


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_sequentials_integer_labels_survive_import_and_its_state_dict_loads(exporter, tmp_path):
    """nn.Sequential's keys are `0.weight`, `2.bias`...: labels of integer segments (LANGUAGE.md 5), which
    the importer keeps (INTERFACES.md 10: PyTorch module paths survive), so its state_dict loads as is."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(4, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3)).eval()
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 4)).astype(np.float32))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(seq, (x,), str(tmp_path / "seq.onnx"), dynamo=exporter == "dynamo",
                          **({} if exporter == "dynamo" else {"input_names": ["x"]}))
    text, weights = nnc.from_onnx(tmp_path / "seq.onnx")
    assert set(weights) == set(seq.state_dict())
    model = nnc.build(text, weights={k: v.numpy() for k, v in seq.state_dict().items()})
    with torch.no_grad():
        assert _rel(model(x.numpy()), seq(x).numpy()) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("sample", SMALL)
def test_dynamo_export_of_twin_imports_to_the_same_function(sample, tmp_path):
    _import_and_compare(sample, "dynamo", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sample", LARGE)
def test_imported_torchvision_style_model_keeps_state_dict_keys_and_count(sample, tmp_path):
    module, text, weights = _import_and_compare(sample, "torchscript", tmp_path)
    twin = {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert {k: v.shape for k, v in weights.items()} == twin
    summary = nnc.build(text).state_dict()
    assert set(summary) == set(twin)
    from nnc.compiler.frontend import check
    assert check(text).graph.params_count == sum(p.numel() for p in module.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("sample", LARGE)
def test_dynamo_export_of_large_twin_imports_to_the_same_function(sample, tmp_path):
    _import_and_compare(sample, "dynamo", tmp_path)


@pytest.mark.parametrize("sample", ["lenet", "gru"])
def test_imported_text_is_golden(sample, tmp_path, golden):
    _export_twin(sample, tmp_path / f"{sample}.onnx", "torchscript")
    text, _ = nnc.from_onnx(tmp_path / f"{sample}.onnx")
    golden.check(f"onnx/{sample}.nn", text)


# ---------------------------------------------------------------------- hand-made ONNX graphs

def _save(graph, path: Path, opset: int = 17) -> Path:
    from onnx import helper
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def _unsupported_graph():
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((3, 3, 3, 3), np.float32), "conv.weight")
    nodes = [
        # asymmetric pads are a pad step now (tests/test_onnx_probe.py); an average pool of
        # TensorFlow's SAME padding, which leaves the padding out of the mean, is not expressible
        helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="/conv/Conv", kernel_shape=[3, 3],
                         pads=[1, 0, 0, 0]),
        helper.make_node("AveragePool", ["c"], ["p"], name="/pool/AveragePool", kernel_shape=[3, 3],
                         strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["p"], ["r"], name="/relu/Relu"),
        helper.make_node("Einsum", ["x", "x"], ["e"], name="/mix/Einsum", equation="bchw,bchw->bchw"),
        helper.make_node("Sigmoid", ["e"], ["s"], name="/after/Sigmoid"),     # downstream: not listed again
        helper.make_node("Clip", ["x"], ["k"], name="/clamp/Clip", min=-1.0, max=1.0),
        helper.make_node("Add", ["s", "k"], ["a"], name="/sum/Add"),
        helper.make_node("Add", ["a", "r"], ["y"], name="/sum/Add_1"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_graph(nodes, "bad", [x], [y], [w])


def test_unsupported_nodes_are_one_error_listing_each_by_name_and_op(tmp_path, monkeypatch, golden):
    monkeypatch.chdir(tmp_path)
    _save(_unsupported_graph(), Path("bad.onnx"))
    with pytest.raises(OnnxImportError) as e:
        nnc.from_onnx("bad.onnx")
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    message = str(e.value)
    for name in ("/pool/AveragePool", "/mix/Einsum", "/clamp/Clip"):
        assert f"`{name}`" in message
    assert "/after/Sigmoid" not in message and "/sum/Add" not in message and "/conv/Conv" not in message
    golden.check("onnx/unsupported_error.txt", message + "\n")


def test_unsupported_ops_after_an_unsupported_node_are_listed_too(tmp_path):
    """Gemm -> Sin -> Relu -> CumSum -> Cos: CumSum and Cos read values nnc
    could not make, yet are ops it has no translation for whatever they read,
    so they are named with Sin; Relu, which nnc translates, is not."""
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.ones((4, 4), np.float32), "fc.weight"),
             numpy_helper.from_array(np.zeros(4, np.float32), "fc.bias"),
             numpy_helper.from_array(np.array(1, np.int64), "axis")]
    nodes = [
        helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], name="/fc/Gemm", transB=1),
        helper.make_node("Sin", ["h"], ["s"], name="/Sin"),
        helper.make_node("Relu", ["s"], ["r"], name="/Relu"),
        helper.make_node("CumSum", ["r", "axis"], ["c"], name="/CumSum"),
        helper.make_node("Cos", ["c"], ["y"], name="/Cos"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    path = _save(helper.make_graph(nodes, "chain", [x], [y], inits), tmp_path / "chain.onnx")
    with pytest.raises(OnnxImportError) as e:
        nnc.from_onnx(path)
    message = str(e.value)
    assert message.endswith("has 3 nodes nnc cannot express: `/Sin` (Sin); `/CumSum` (CumSum); `/Cos` (Cos)")
    assert "/Relu" not in message and "/fc/Gemm" not in message


def test_an_attribute_refused_alone_is_named_after_an_unsupported_node(tmp_path):
    """Sin -> Gelu(tanh) -> Gelu: the first Gelu's attribute is refused
    whatever it reads, so it is named with Sin; the exact Gelu is not."""
    from onnx import TensorProto, helper
    nodes = [
        helper.make_node("Sin", ["x"], ["s"], name="/Sin"),
        helper.make_node("Gelu", ["s"], ["g"], name="/tanh/Gelu", approximate="tanh"),
        helper.make_node("Gelu", ["g"], ["y"], name="/exact/Gelu"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    path = _save(helper.make_graph(nodes, "gelus", [x], [y]), tmp_path / "gelus.onnx", opset=20)
    with pytest.raises(OnnxImportError) as e:
        nnc.from_onnx(path)
    message = str(e.value)
    assert message.endswith("has 2 nodes nnc cannot express: `/Sin` (Sin); `/tanh/Gelu` (Gelu: the tanh "
                            "approximation (nnc's gelu is the exact one))")


def test_corrupt_onnx_file_is_a_clear_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xfe")
    with pytest.raises(OnnxImportError, match="broken.onnx"):
        nnc.from_onnx(bad)
    truncated = tmp_path / "truncated.onnx"
    nnc.to_onnx(SAMPLES / "mlp.nn", None, tmp_path / "mlp.onnx")
    truncated.write_bytes((tmp_path / "mlp.onnx").read_bytes()[:5000])
    with pytest.raises(OnnxImportError, match="truncated.onnx"):
        nnc.from_onnx(truncated)
    with pytest.raises(OnnxImportError, match="no such file"):
        nnc.from_onnx(tmp_path / "missing.onnx")


def test_gemm_without_transb_and_asymmetric_same_padding_import(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    g = rng.standard_normal((2 * 4 * 4, 5)).astype(np.float32)       # [in, out]: transB=0
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="/c/Conv", kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("HardSigmoid", ["c"], ["h"], alpha=1 / 6, beta=0.5),
        helper.make_node("Flatten", ["h"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "g"], ["y"], name="/fc/Gemm"),
    ]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(g, "g")])
    path = _save(graph, tmp_path / "m.onnx")
    text, weights = nnc.from_onnx(path)
    assert "padding=same" in text and "fc: dense(5, bias=false)" in text
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert _rel(nnc.build(text, batch=2, weights=weights)(x), expected) < 1e-5


# ---------------------------------------------------------------------- command line and extras

def test_import_and_export_commands_write_their_files(tmp_path, capsys):
    onnx_path = tmp_path / "lenet.onnx"
    assert bridges_main(["export", str(SAMPLES / "lenet.nn"), "-o", str(onnx_path)]) == 0
    assert bridges_main(["import", str(onnx_path), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "lenet.nn").is_file() and (tmp_path / "out" / "lenet.npz").is_file()
    model = nnc.build(tmp_path / "out" / "lenet.nn", weights=tmp_path / "out" / "lenet.npz")
    assert model.output_shapes == {"out": (10,)}


def test_import_command_reports_a_corrupt_file_with_exit_1(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx")
    assert bridges_main(["import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.onnx" in err and "Traceback" not in err


def test_missing_onnx_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtra, match=r'pip install "nnc\[onnx\]"'):
        nnc.to_onnx(SAMPLES / "mlp.nn", None, tmp_path / "m.onnx")
    assert bridges_main(["export", str(SAMPLES / "mlp.nn"), "-o", str(tmp_path / "m.onnx")]) == 1
    assert 'pip install "nnc[onnx]"' in capsys.readouterr().err
