"""The ONNX bridges as a new user meets them (INTERFACES.md section 10).

- Asymmetric padding: a Conv, ConvTranspose or pool with uneven `pads` or
  `auto_pad=SAME_UPPER/SAME_LOWER` (PyTorch's `padding='same'` with an even
  kernel, `F.pad` before a conv or (with -inf) a max pool as timm writes it,
  ceil_mode max pools, TensorFlow's SAME) imports as a `pad` step plus the op
  with the symmetric part, equal to onnxruntime and PyTorch; what stays
  inexpressible is a named error.
- Every sample through the commands: `nnc export` -> onnxruntime equals nnc,
  `nnc import` writes DIR/NAME.nn and DIR/NAME.npz that pass `nnc check` and
  `nnc compile` (both targets) and compute the sample's function; `nnc graph`
  draws every sample as .dot, .svg and .png, `nnc summary --plan-svg` too.
- Bad input: a missing or broken `onnx` package, corrupt, truncated, empty,
  folder, non-ONNX and invalid-graph files are one `error:` line and exit 1;
  hostile names in a graph import to a valid `.nn` that keeps the state_dict
  keys it can.
- Hostile tensors: an initializer or Constant whose data is shorter or longer
  than its shape, of a non-number type or a negative size, external data
  outside the model's folder, missing or short, and a folded constant past
  the size limits (Expand, ConstantOfShape, Range, Tile, Pad) are one error
  line naming it, refused before anything large is allocated.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import nnc  # noqa: E402
from nnc.compiler.cli import main as nnc_main  # noqa: E402
from nnc.compiler.onnx_import import OnnxImportError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SAMPLES  # noqa: E402

HAS_DOT = bool(__import__("shutil").which("dot"))
ALL = sorted(p.stem for p in SAMPLES.glob("*.nn"))
LARGE = {"resnet18", "mobilenetv2"}
NAMED_T = 16            # the size given to a sample's named dimension


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _run(argv, capsys) -> tuple[int, str, str]:
    code = nnc_main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_node(tmp_path, op, size, rank, channels=3, weight=None, bias=True, name="m", **attrs) -> Path:
    """A model of one `op` node on x: [N, channels, size...] (weights drawn at random)."""
    rng = np.random.default_rng(7)
    inputs, inits = ["x"], []
    if weight is not None:
        inits.append(numpy_helper.from_array(rng.standard_normal(weight).astype(np.float32), "op.weight"))
        inputs.append("op.weight")
        if bias:
            out_channels = weight[0] if op == "Conv" else weight[1]
            inits.append(numpy_helper.from_array(rng.standard_normal(out_channels).astype(np.float32), "op.bias"))
            inputs.append("op.bias")
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], name=f"/op/{op}", **attrs)], name,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, *[size] * rank])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))
    return path


def _same_as_onnxruntime(path: Path, shape, targets=("numpy", "c"), tol=1e-5) -> str:
    """Import `path`, build it on each target and compare with onnxruntime; returns the text."""
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    text, weights = nnc.from_onnx(path)
    for target in targets:
        assert _rel(nnc.build(text, batch=2, weights=weights, target=target)(x), expected) < tol, (target, text)
    return text


# ---------------------------------------------------------------------- asymmetric padding: PyTorch

def _torch_export(module, x, path: Path, exporter: str):
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(module, (x,), str(path), dynamo=True)
        else:
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})
    with torch.no_grad():
        return module(x).numpy()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("rank", [1, 2])
def test_torch_same_padding_with_an_even_kernel_imports_equal_to_pytorch(rank, exporter, tmp_path, target):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    conv = torch.nn.Conv1d if rank == 1 else torch.nn.Conv2d
    module = torch.nn.Sequential(conv(3, 6, 4, padding="same"), torch.nn.ReLU(),
                                 conv(6, 5, 4, padding="same", dilation=3), torch.nn.Tanh(),
                                 conv(5, 4, 2, padding="same", bias=False)).eval()
    x = torch.randn(2, 3, *[13] * rank)
    expected = _torch_export(module, x, tmp_path / "same.onnx", exporter)
    text, weights = nnc.from_onnx(tmp_path / "same.onnx")
    assert text.count("padding=same") == 3 and "pad(" not in text       # the split PyTorch uses is nnc's `same`
    assert _rel(nnc.build(text, batch=2, weights=weights, target=target)(x.numpy()), expected) < 1e-4


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_f_pad_before_conv_and_timm_max_pool_same_import_equal_to_pytorch(exporter, tmp_path, target):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    class PadNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

        def forward(self, x):
            x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)     # timm's MaxPool2dSame
            x = self.conv(F.pad(x, (1, 0, 2, 1)))                                   # F.pad folded into the conv
            a = F.max_pool2d(x, 2, 2, ceil_mode=True)
            b = F.max_pool2d(F.pad(x, (1, 1, 0, 1), value=float("-inf")), 3, 2)
            return torch.cat([a[..., :2, :2], b[..., :2, :2]], 1)

    torch.manual_seed(0)
    module = PadNet().eval()
    x = torch.randn(2, 3, 17, 17)
    expected = _torch_export(module, x, tmp_path / "pads.onnx", exporter)
    text, weights = nnc.from_onnx(tmp_path / "pads.onnx")
    assert "mode=replicate" in text and "pad((1, 0, 1, 0))" in text
    assert "conv: conv2d(4, 3, stride=2, padding=(1, 0))" in text
    assert _rel(nnc.build(text, batch=2, weights=weights, target=target)(x.numpy()), expected) < 1e-4


# ---------------------------------------------------------------------- asymmetric padding: onnx.helper graphs

AUTO_PAD = [  # (op, rank, kernel, stride, size): even kernels, odd totals, strides with odd sizes
    ("Conv", 1, 4, 1, 9), ("Conv", 2, 4, 1, 7), ("Conv", 2, 3, 2, 8), ("Conv", 1, 2, 3, 10),
    ("MaxPool", 2, 4, 1, 7), ("MaxPool", 2, 3, 2, 8), ("MaxPool", 1, 2, 2, 9),
    ("AveragePool", 2, 4, 1, 7), ("AveragePool", 1, 3, 2, 8),
    ("ConvTranspose", 1, 4, 2, 5), ("ConvTranspose", 2, 3, 2, 4), ("ConvTranspose", 2, 4, 1, 5),
]


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("op,rank,k,s,size", AUTO_PAD)
def test_auto_pad_same_matches_onnxruntime(op, rank, k, s, size, mode, tmp_path):
    attrs = {"kernel_shape": [k] * rank, "strides": [s] * rank, "auto_pad": mode}
    weight = {"Conv": (4, 3, *[k] * rank), "ConvTranspose": (3, 4, *[k] * rank)}.get(op)
    if op == "AveragePool":
        attrs["count_include_pad"] = 1
    text = _same_as_onnxruntime(_one_node(tmp_path, op, size, rank, weight=weight, **attrs), (3, *[size] * rank))
    total = (-(-size // s) - 1) * s + k - size if op != "ConvTranspose" else k - s
    if op == "Conv" and s == 1 and mode == "SAME_UPPER":        # PyTorch's split: nnc's `same`
        assert "padding=same" in text and "pad(" not in text, text
    elif total % 2:     # the odd cell is where the mode puts it: a pad step (or a slice) says so
        assert ("pad(" in text) != ("slice(" in text), text


@pytest.mark.parametrize("op,pads,expect", [
    ("Conv", [1, 0, 0, 1], ["pad((0, 1, 1, 0))", "conv2d(4, 3)"]),
    ("Conv", [2, 1, 1, 2], ["pad((0, 1, 1, 0))", "conv2d(4, 3, padding=1)"]),
    ("MaxPool", [2, 0, 1, 2], ["pad((0, 2, 1, 0), mode=replicate)", "maxpool2d(3, stride=1, padding=(1, 0))"]),
    ("AveragePool", [0, 1, 1, 1], ["pad((0, 0, 0, 1))", "avgpool2d(3, stride=1, padding=(0, 1))"]),
    ("ConvTranspose", [2, 0, 1, 1], ["conv_transpose2d(4, 3, padding=(1, 0))", "slice(1, 1)"]),
])
def test_asymmetric_pads_are_a_pad_step_and_the_symmetric_rest(op, pads, expect, tmp_path):
    attrs = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": pads}
    weight = {"Conv": (4, 3, 3, 3), "ConvTranspose": (3, 4, 3, 3)}.get(op)
    if op == "AveragePool":
        attrs["count_include_pad"] = 1
    text = _same_as_onnxruntime(_one_node(tmp_path, op, 7, 2, weight=weight, **attrs), (3, 7, 7))
    for line in expect:
        assert line in text, text


def test_max_pool_ceil_mode_is_end_padding(tmp_path):
    path = _one_node(tmp_path, "MaxPool", 8, 2, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    text = _same_as_onnxruntime(path, (3, 8, 8))
    assert "mode=replicate" in text and "padding=1" in text


@pytest.mark.parametrize("op,attrs,why", [
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, "count_include_pad=0"),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1, "count_include_pad": 1},
     "nnc's avgpool has no ceil mode"),
    ("MaxPool", {"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]}, "not smaller than the kernel"),
    ("ConvTranspose", {"kernel_shape": [2, 2], "strides": [3, 3], "auto_pad": "SAME_LOWER"},
     "a stride larger than the kernel"),
])
def test_padding_nnc_cannot_express_is_a_named_error(op, attrs, why, tmp_path):
    weight = (3, 4, 2, 2) if op == "ConvTranspose" else None
    path = _one_node(tmp_path, op, 7, 2, weight=weight, **attrs)
    with pytest.raises(OnnxImportError, match=f"`/op/{op}` \\({op}: .*{why}"):
        nnc.from_onnx(path)


def test_strided_auto_pad_on_a_named_size_is_a_named_error(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 3, 3), np.float32), "c.weight")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "c.weight"], ["y"], name="/c/Conv", kernel_shape=[3],
                                                strides=[2], auto_pad="SAME_UPPER")], "m",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "T"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    with pytest.raises(OnnxImportError, match=r"auto_pad=SAME_UPPER with stride 2 on an axis of unknown size \(`T`\)"):
        nnc.from_onnx(tmp_path / "m.onnx")


def test_a_minus_inf_pad_not_before_a_max_pool_is_a_named_error(tmp_path):
    graph = helper.make_graph([
        helper.make_node("Pad", ["x", "p", "v"], ["y"], name="/pad/Pad", mode="constant")], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 2], np.int64), "p"),
         numpy_helper.from_array(np.array(-np.inf, np.float32), "v")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    with pytest.raises(OnnxImportError, match=r"`/pad/Pad` \(Pad: a padding value of -inf"):
        nnc.from_onnx(tmp_path / "m.onnx")


@pytest.mark.parametrize("pads", ["(0, 0, 1, 2)", "(0, 1, 1, 0)", "(2, 1, 0, 3)", "(1, 2)"])
@pytest.mark.parametrize("mode", ["constant", "replicate", "reflect"])
def test_c_pad_equals_numpy_pad(pads, mode):
    # GCC 12 at -O3 -march=native miscompiled the C kernel's one-loop row (rows of zeros for `(0, 0, 1, 2)`)
    text = f"model m(x: [3, 4, 5]) {{\n    pad({pads}, mode={mode}, value=-2.5)\n}}\n" if mode == "constant" else \
        f"model m(x: [3, 4, 5]) {{\n    pad({pads}, mode={mode})\n}}\n"
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(nnc.build(text, batch=2, target="c")(x), nnc.build(text, batch=2)(x))


# ---------------------------------------------------------------------- every sample through the commands

def _dims(path: Path) -> dict[str, int]:
    """The sample's named dimensions without a bound in its header, each given NAMED_T."""
    import re
    header = re.search(r"^model [^{]*", path.read_text(), re.M).group(0)
    return {d: NAMED_T for d in re.findall(r"\b([A-Z][A-Za-z0-9_]*)\b(?!\s*=)", header.split("(", 1)[1])}


def _sample_inputs(model, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = {}
    for name, shape in model.input_shapes.items():
        shape = [NAMED_T if isinstance(d, str) else d for d in shape]
        if name in getattr(model, "INTEGER_INPUTS", {}):
            xs[name] = rng.integers(0, 8, (2, *shape)).astype(np.int64)
        else:
            xs[name] = rng.standard_normal((2, *shape)).astype(np.float32)
    return xs


@pytest.mark.parametrize("sample", [pytest.param(s, marks=pytest.mark.slow) if s in LARGE else s for s in ALL])
def test_every_sample_exports_runs_imports_checks_and_compiles(sample, tmp_path, capsys):
    src = SAMPLES / f"{sample}.nn"
    dims = _dims(src)
    dim_args = [a for d in dims for a in ("--dim", f"{d}={NAMED_T}")]
    code, out, err = _run(["export", src, "-o", tmp_path / f"{sample}.onnx"], capsys)
    assert code == 0 and err == "", err
    ours = nnc.build(src, batch=2, dims=dims or None)
    xs = _sample_inputs(ours)
    expected = ours(**xs)
    expected = list(expected.values()) if isinstance(expected, dict) else [expected]
    session = ort.InferenceSession(str(tmp_path / f"{sample}.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: xs[i.name] for i in session.get_inputs()})
    for a, b in zip(got, expected):
        assert _rel(np.asarray(a).reshape(np.shape(b)), b) < 1e-4

    out_dir = tmp_path / "out"
    code, out, err = _run(["import", tmp_path / f"{sample}.onnx", "-o", out_dir], capsys)
    assert code == 0 and err == "", err
    nn, npz = out_dir / f"{sample}.nn", out_dir / f"{sample}.npz"
    assert nn.is_file() and npz.is_file()
    assert _run(["check", nn, *dim_args], capsys)[0] == 0
    for target in ("numpy", "c"):
        code, out, err = _run(["compile", nn, "-t", target, "--weights", npz, "-o", tmp_path / target, *dim_args],
                              capsys)
        assert code == 0, err
    imported = nnc.build(nn, batch=2, weights=npz, dims=dims or None)
    again = imported(**dict(zip(imported.input_shapes, xs.values())))
    again = list(again.values()) if isinstance(again, dict) else [again]
    for a, b in zip(again, expected):
        assert _rel(a, b) < 1e-5


def test_a_named_size_that_cuts_a_positional_table_is_bounded_by_it(tmp_path):
    path = nnc.to_onnx(SAMPLES / "charlm.nn", None, tmp_path / "charlm.onnx")
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in onnx.load(str(path)).graph.value_info}
    assert shapes["pos"] == ["batch", "T", 32]          # every step's shape is written, named sizes by name
    text, _ = nnc.from_onnx(path)
    assert "model charlm(tokens: int[T=64])" in text and "pos = pos: positional(64)" in text


@pytest.mark.parametrize("sample", ["lenet", "charlm", "unet", "wavenet"])
def test_pictures_of_samples_through_the_commands(sample, tmp_path, capsys):
    src = SAMPLES / f"{sample}.nn"
    dim_args = [a for d in _dims(src) for a in ("--dim", f"{d}={NAMED_T}")]
    code, _, err = _run(["graph", src, "-o", tmp_path / "g.dot"], capsys)
    assert code == 0, err
    dot = (tmp_path / "g.dot").read_text()
    labels = [n.label for n in nnc.compiler.frontend.check(src).graph.nodes]
    assert dot.startswith("digraph") and all(f'"{label}"' in dot for label in labels)
    if sample == "charlm":
        assert "int[T]" in dot          # an integer input says so, as the summary does
    if HAS_DOT:
        for suffix in (".svg", ".png"):
            code, _, err = _run(["graph", src, "-o", tmp_path / f"g{suffix}"], capsys)
            assert code == 0, err
        ET.parse(tmp_path / "g.svg")
        assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = _run(["summary", src, "--plan-svg", tmp_path / "plan.svg", *dim_args], capsys)
    assert code == 0, err
    ET.parse(tmp_path / "plan.svg")


def test_the_wrong_kind_of_model_file_names_the_command_that_reads_it(tmp_path, capsys):
    onnx_path = nnc.to_onnx(SAMPLES / "mlp.nn", None, tmp_path / "mlp.onnx")
    for argv in (["export", onnx_path, "-o", tmp_path / "x.onnx"], ["graph", onnx_path]):
        code, _, err = _run(argv, capsys)
        assert code == 1 and f"`nnc import {onnx_path}`" in err and err.count("\n") == 1
    code, _, err = _run(["import", SAMPLES / "mlp.nn"], capsys)
    assert code == 1 and "nnc export" in err and err.count("\n") == 1


# ---------------------------------------------------------------------- missing or broken extras

@pytest.mark.parametrize("failure,says", [
    ("raise ImportError('No module named onnx')", "which is not installed"),
    ("raise TypeError('Descriptors cannot be created directly')", "fails to import (TypeError"),
])
def test_a_missing_or_broken_onnx_is_one_line_and_exit_1(failure, says, tmp_path):
    shim = tmp_path / "shim" / "onnx"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(failure + "\n")
    onnx_path = nnc.to_onnx(SAMPLES / "mlp.nn", None, tmp_path / "mlp.onnx")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", "")])}
    for argv in (["export", str(SAMPLES / "mlp.nn"), "-o", str(tmp_path / "x.onnx")],
                 ["import", str(onnx_path), "-o", str(tmp_path / "out")]):
        done = subprocess.run([sys.executable, "-m", "nnc", *argv], capture_output=True, text=True, env=env)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and says in done.stderr
        assert 'pip install "nnc[onnx]"' in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- bad files

def _graph_file(path: Path, nodes, inputs, outputs, opset=17) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.opset_import[0].version = opset
    path.write_bytes(model.SerializeToString())
    return path


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = nnc.to_onnx(SAMPLES / "lenet.nn", None, tmp / "lenet.onnx").read_bytes()
    files = {}

    def put(name, data, says):
        (tmp / name).write_bytes(data)
        files[name] = (tmp / name, says)

    put("empty.onnx", b"", "holds no graph")
    put("truncated.onnx", good[:3000], "truncated, or not an ONNX file")
    put("cut.onnx", good[:20], "not a readable ONNX model")
    put("random.onnx", np.random.default_rng(0).bytes(4000), "not a readable ONNX model")
    put("text.onnx", (SAMPLES / "lenet.nn").read_bytes(), "not a readable ONNX model")
    (tmp / "folder.onnx").mkdir()
    files["folder.onnx"] = (tmp / "folder.onnx", "is a folder")
    files["missing.onnx"] = (tmp / "missing.onnx", "no such file")
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    x = [("x", ["N", 3])]
    files["dangling.onnx"] = (_graph_file(tmp / "dangling.onnx", [helper.make_node("Relu", ["q"], ["y"])], x, ["y"]),
                              "reads `q`, which no input, initializer or node makes")
    files["twice.onnx"] = (_graph_file(tmp / "twice.onnx", relu + [helper.make_node("Relu", ["y"], ["x"])], x, ["y"]),
                           "makes `x` again")
    cycle = [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])]
    files["cycle.onnx"] = (_graph_file(tmp / "cycle.onnx", cycle, x, ["a"]), "its nodes form a cycle")
    files["no_output.onnx"] = (_graph_file(tmp / "no_output.onnx", relu, x, []), "has no outputs")
    files["lost_output.onnx"] = (_graph_file(tmp / "lost_output.onnx", relu, x, ["z"]), "`z` is made by no node")
    files["future.onnx"] = (_graph_file(tmp / "future.onnx", relu, x, ["y"], opset=999), "uses opset 999, newer")
    import onnx as onnx_module
    onnx_module.save_model(onnx_module.load_from_string(good), str(tmp / "external.onnx"), save_as_external_data=True,
                           location="external.onnx.data", size_threshold=0)
    (tmp / "external.onnx.data").unlink()
    files["external.onnx"] = (tmp / "external.onnx", "external.onnx.data")
    return files


def test_bad_files_are_one_error_line_and_exit_1(tmp_path, capsys):
    for name, (path, says) in _bad_files(tmp_path).items():
        code, out, err = _run(["import", path, "-o", tmp_path / "out"], capsys)
        assert code == 1, (name, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert says in err and path.name in err, (name, err)
    assert not (tmp_path / "out").exists()


def test_nodes_out_of_order_are_sorted_as_onnxruntime_does(tmp_path):
    path = nnc.to_onnx(SAMPLES / "lenet.nn", None, tmp_path / "lenet.onnx")
    model = onnx.load(str(path))
    nodes = list(model.graph.node)[::-1]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    (tmp_path / "reversed").mkdir()
    onnx.save(model, str(tmp_path / "reversed" / "lenet.onnx"))
    assert nnc.from_onnx(tmp_path / "reversed" / "lenet.onnx")[0] == nnc.from_onnx(path)[0]


def test_truncated_and_bit_flipped_files_never_crash(tmp_path):
    good = nnc.to_onnx(SAMPLES / "gru.nn", None, tmp_path / "gru.onnx").read_bytes()
    rng = np.random.default_rng(3)
    bad = tmp_path / "bad.onnx"
    for i in range(60):
        if i % 2:
            data = bytearray(good)
            for at in rng.integers(0, len(good), 3):
                data[at] ^= 1 << int(rng.integers(0, 8))
            data = bytes(data)
        else:
            data = good[:int(rng.integers(0, len(good)))]
        bad.write_bytes(data)
        try:
            nnc.from_onnx(bad)
        except OnnxImportError as e:
            assert "\n" not in str(e)


def test_an_op_of_another_domain_is_named_not_read_as_the_standard_one(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="/fused/Relu", domain="com.microsoft")
    path = _graph_file(tmp_path / "m.onnx", [node], [("x", ["N", 3])], ["y"])
    with pytest.raises(OnnxImportError, match=r"`/fused/Relu` \(Relu: an op of the `com.microsoft` domain"):
        nnc.from_onnx(path)


def test_two_run_time_sizes_in_one_input_are_a_clear_error(tmp_path):
    path = _graph_file(tmp_path / "hw.onnx", [helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 3, "H", "W"])],
                       ["y"])
    with pytest.raises(OnnxImportError, match=r"input `x` has 2 sizes known only at run time \(`H`, `W`\)"):
        nnc.from_onnx(path)


# ---------------------------------------------------------------------- hostile names

def _hostile_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    names = ['conv".weight', "layer\n1.weight", "a*/b.weight", "ñame.weight", "model.weight", "return.weight",
             "relu.weight", "x.weight", "1.weight", "same.weight"]
    inits = {n: rng.standard_normal((4, 4 if i else 3, 1, 1)).astype(np.float32) for i, n in enumerate(names)}
    inits.update({"fc.weight": rng.standard_normal((5, 64)).astype(np.float32),
                  "fc_1.weight": rng.standard_normal((5, 64)).astype(np.float32)})
    node_names = ['/c"onv/Conv', "/layer\n1/Conv", "*/ evil */", "ñ", "/model/Conv", "/return/Conv", "/relu/Conv",
                  "/x/Conv", "/1/Conv", "/same/Conv"]
    nodes, v = [], "x"
    for i, (w, nn_) in enumerate(zip(names, node_names)):
        nodes.append(helper.make_node("Conv", [v, w], [f"c{i}"], name=nn_, kernel_shape=[1, 1]))
        v = f"c{i}"
    nodes[3].metadata_props.add(key="pkg.torch.onnx.name_scopes", value="5")
    nodes[4].metadata_props.add(key="pkg.torch.onnx.name_scopes", value="[" * 5000)
    nodes += [helper.make_node("Relu", [v], ["same"], name="same"),
              helper.make_node("Flatten", ["same"], ["flat"], name='/flatten"/Flatten'),
              helper.make_node("Gemm", ["flat", "fc.weight"], ['out"1'], name="/fc/Gemm", transB=1),
              helper.make_node("Gemm", ["flat", "fc.weight"], ["out\n2"], name="/fc/Gemm_1", transB=1),   # shared
              helper.make_node("Gemm", ["flat", "fc_1.weight"], ["model"], name="/fc_1/Gemm", transB=1)]
    graph = helper.make_graph(nodes, 'hostile"graph */', [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                         ['batch"', 3, 4, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in ('out"1', "out\n2", "model")],
                              [numpy_helper.from_array(a, k) for k, a in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_hostile_names_import_to_a_valid_readable_model(tmp_path, capsys):
    path = _hostile_model(tmp_path / "model.onnx")          # `model` is a keyword too
    code, out, err = _run(["import", path, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    nn, npz = tmp_path / "out" / "model.nn", tmp_path / "out" / "model.npz"
    text = nn.read_text()
    assert text.startswith("# imported from model.onnx by nnc import\nmodel model_(x_1: [3, 4, 4]) {\n")
    assert all(line.startswith(("#", "model ", "    ", "}")) for line in text.splitlines()), text
    weights = dict(np.load(npz))
    # the keys that are labels survive (the input gives way: `x_1`); the others become op labels
    assert {"x.weight", "relu.weight", "fc.weight", "fc_1.weight"} <= set(weights)
    assert not any(c in key for key in weights for c in '"\n*/ñ') and "model.weight" not in weights
    assert _run(["check", nn], capsys)[0] == 0
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = nnc.build(nn, batch=2, weights=npz)(x)
    got = list(got.values()) if isinstance(got, dict) else list(got)
    np.testing.assert_allclose(weights["fc_1.weight"], numpy_helper.to_array(
        next(i for i in onnx.load(str(path)).graph.initializer if i.name == "fc_1.weight")))
    for a, b in zip(got, expected):
        assert _rel(a, b) < 1e-5


@pytest.mark.parametrize("filename,model_line", [
    ("return.onnx", "model return_("), ("1net.onnx", "model m_1net("), ("a b(c).onnx", "model a_b_c_("),
    ("new\nline.onnx", "model new_line("), ("模型.onnx", "model net("), ("resnet-v1.7.onnx", "model resnet_v1_7("),
])
def test_file_names_become_valid_model_names(filename, model_line, tmp_path, capsys):
    path = _graph_file(tmp_path / filename, [helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 3])], ["y"])
    code, _, err = _run(["import", path, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    nn = tmp_path / "out" / (filename[:-5] + ".nn")
    lines = nn.read_text().splitlines()
    assert lines[1].startswith(model_line) and lines[0].isprintable()
    assert _run(["check", nn], capsys)[0] == 0


def test_input_and_size_names_never_collide(tmp_path):
    cases = [([("x", ["b", 3, "x"])], "x: [3, x_1]"), ([("T", ["b", "T"])], "T: [T_1]"),
             ([("a", ["b", "same"]), ("c", ["b", "model"])], "a: [same_], c: [model_]"),
             ([("x.1", ["b", None]), ("x_1", ["b", None])], "x_1: [N], x_1_1: [N_1]")]
    for inputs, signature in cases:
        nodes = [helper.make_node("Relu", [n], [f"o{i}"]) for i, (n, _) in enumerate(inputs)]
        path = _graph_file(tmp_path / "m.onnx", nodes, inputs, [f"o{i}" for i in range(len(inputs))])
        text, _ = nnc.from_onnx(path)
        assert f"model m({signature})" in text


def test_a_step_label_never_takes_an_input_name(tmp_path):
    w = numpy_helper.from_array(np.ones((5, 3), np.float32), "onnx::Gemm_5")       # not a parameter's name
    graph = helper.make_graph([helper.make_node("Gemm", ["dense_0", "onnx::Gemm_5"], ["y"], transB=1)], "m",
                              [helper.make_tensor_value_info("dense_0", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    text, weights = nnc.from_onnx(tmp_path / "m.onnx")
    assert "model m(dense_0: [3])" in text and "dense_1: dense(5, bias=false)" in text and set(weights) == {
        "dense_1.weight"}


# ---------------------------------------------------------------------- hostile tensors and constant folding

def _weight_file(path: Path, weight, nodes=None, x_shape=("N", 4)) -> Path:
    """x @ `weight` (a TensorProto named fc.weight) -> y, or `nodes` reading x and making y."""
    nodes = nodes or [helper.make_node("MatMul", ["x", "fc.weight"], ["y"], name="/fc/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [weight] if weight is not None else [])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def _tensor(data_type, dims, raw=None, name="fc.weight", **fields) -> onnx.TensorProto:
    t = TensorProto(name=name, data_type=data_type, dims=dims)
    if raw is not None:
        t.raw_data = raw
    for key, values in fields.items():
        getattr(t, key).extend(values)
    return t


def _refused(path: Path, says: str | tuple[str, ...], capsys) -> None:
    """`nnc import` is one error line with exit 1 and `from_onnx` an OnnxImportError, both saying `says`
    (each of them)."""
    says = (says,) if isinstance(says, str) else says
    code, _, err = _run(["import", path, "-o", path.parent / "out"], capsys)
    assert code == 1, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(part in err for part in says), err
    with pytest.raises(OnnxImportError) as caught:
        nnc.from_onnx(path)
    assert all(part in str(caught.value) for part in says) and "\n" not in str(caught.value)
    assert not (path.parent / "out").exists()


@pytest.mark.parametrize("case,weight,says", [
    ("short_raw", _tensor(TensorProto.FLOAT, [4, 3], b"\0" * 5),
     "initializer `fc.weight` of shape [4, 3] (float) needs 48 bytes of data, the file holds 5"),
    ("short_typed", _tensor(TensorProto.FLOAT, [4, 3], float_data=[1.0] * 5),
     "initializer `fc.weight` of shape [4, 3] (float) needs 12 numbers, the file holds 5"),
    ("huge_no_data", _tensor(TensorProto.FLOAT, [100000] * 3, b""),
     "of shape [100000, 100000, 100000] (float) needs 4,000,000,000,000,000 bytes of data, the file holds 0"),
    ("huge_no_typed", _tensor(TensorProto.INT64, [100000] * 3),
     "needs 1,000,000,000,000,000 numbers, the file holds 0"),
    ("negative", _tensor(TensorProto.FLOAT, [-4, -3], b"\0" * 48),
     "initializer `fc.weight` has a negative size in its shape [-4, -3]"),
    ("string", _tensor(TensorProto.STRING, [4, 3], string_data=[b"a"] * 12),
     "initializer `fc.weight` holds elements of type `string`; nnc reads numbers"),
    ("complex", _tensor(TensorProto.COMPLEX64, [4, 3], b"\0" * 96),
     "initializer `fc.weight` holds elements of type `complex64`"),
    ("undefined", _tensor(TensorProto.UNDEFINED, [4, 3], b"\0" * 48), "elements of type `undefined`"),
    ("unknown_type", _tensor(99, [4, 3], b"\0" * 48), "elements of type number 99"),
])
def test_a_malformed_initializer_is_one_error_line_naming_it(case, weight, says, tmp_path, capsys):
    _refused(_weight_file(tmp_path / f"{case}.onnx", weight), says, capsys)


def test_a_malformed_constant_node_is_one_error_line_naming_it(tmp_path, capsys):
    nodes = [helper.make_node("Constant", [], ["w"], name="/fc/Constant",
                              value=_tensor(TensorProto.FLOAT, [4, 3], b"\0" * 7, name="w")),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    _refused(_weight_file(tmp_path / "m.onnx", None, nodes),
             "the `value` of node `/fc/Constant` (Constant) of shape [4, 3] (float) needs 48 bytes", capsys)


def _external(tmp_path: Path, location: str, **info) -> Path:
    """x @ fc.weight ([4, 3] float) whose data is in `location` (with `offset`, `length`)."""
    weight = _tensor(TensorProto.FLOAT, [4, 3])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, **info}.items():
        weight.external_data.add(key=key, value=str(value))
    (tmp_path / "model").mkdir(exist_ok=True)
    return _weight_file(tmp_path / "model" / "m.onnx", weight)


def test_external_data_beside_the_model_is_read(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = _external(tmp_path, "w.bin", offset=8, length=48)
    (path.parent / "w.bin").write_bytes(b"\1" * 8 + w.tobytes() + b"\2" * 8)
    text, weights = nnc.from_onnx(path)
    np.testing.assert_array_equal(weights["fc.weight"], w.T)


@pytest.mark.parametrize("location,info,file_bytes,says", [
    ("../../etc/passwd", {}, None, "keeps its data in `../../etc/passwd`, outside the model's folder"),
    ("../outside.bin", {}, None, "keeps its data in `../outside.bin`, outside the model's folder"),
    ("link.bin", {}, None, "keeps its data in `link.bin`, outside the model's folder"),
    ("/etc/passwd", {}, None, "keeps its data in `/etc/passwd`, an absolute path"),
    ("missing.bin", {}, None, "keeps its data in `missing.bin`, which does not exist"),
    ("w.bin", {}, 5, "keeps its data in `w.bin`, which holds 5 bytes from offset 0; its shape [4, 3] needs 48"),
    ("w.bin", {"offset": 10 ** 15}, 4096, "which holds 0 bytes from offset 1,000,000,000,000,000"),
    ("w.bin", {"length": 40}, 48, "needs 48 bytes of data, its external data says 40"),
    ("w.bin", {"offset": "ten"}, 48, "an offset or length that is not a number"),
    ("", {}, None, "keeps its data in another file but names none"),
])
def test_external_data_outside_the_folder_short_or_missing_is_refused(location, info, file_bytes, says, tmp_path,
                                                                      capsys):
    path = _external(tmp_path, location, **info)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 48)       # a file of the right size, but not in the folder
    if location == "link.bin":
        (path.parent / "link.bin").symlink_to(tmp_path / "outside.bin")
    if file_bytes is not None:
        (path.parent / location).write_bytes(b"\0" * file_bytes)
    _refused(path, says, capsys)


def _folded(path: Path, op: str, inputs: dict, x_shape=("N", 4), **attrs) -> Path:
    """`op` on constants (Constant nodes), added to the input x: a constant node the import folds."""
    nodes = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(v), name))
             for name, v in inputs.items()]
    nodes += [helper.make_node(op, list(inputs), ["c"], name=f"/big/{op}", **attrs),
              helper.make_node("Add", ["x", "c"], ["y"])]
    return _weight_file(path, None, nodes, x_shape)


@pytest.mark.parametrize("op,inputs,attrs,says", [
    ("Expand", {"v": np.ones((1, 1, 1), np.float32), "s": np.array([1, 1 << 20, 1 << 20, 1 << 20])}, {},
     "its result of shape [1, 1048576, 1048576, 1048576] would take 4 EiB"),
    ("ConstantOfShape", {"s": np.array([100000] * 3)}, {},
     "its result of shape [100000, 100000, 100000] would take 3.6 PiB"),
    ("Range", {"a": np.array(0), "b": np.array(1 << 62), "d": np.array(1)}, {},
     "its result of shape [4611686018427387904] would take 32 EiB"),
    ("Range", {"a": np.array(0.0, np.float32), "b": np.array(1e30, np.float32), "d": np.array(1e-30, np.float32)},
     {}, "would take about 10^60 bytes"),
    ("Tile", {"v": np.ones((1, 4), np.float32), "r": np.array([1 << 40, 1 << 20])}, {},
     "its result of shape [1099511627776, 4194304] would take 16 EiB"),
    ("Pad", {"v": np.ones((1, 4), np.float32), "p": np.array([0, 0, 1 << 40, 1 << 40])}, {},
     "its result of shape [1099511627777, 1099511627780] would take about 10^24 bytes"),
])
def test_folding_a_constant_larger_than_the_tensor_limit_is_refused_before_computing_it(op, inputs, attrs, says,
                                                                                      tmp_path, capsys):
    path = _folded(tmp_path / "m.onnx", op, inputs, **attrs)
    _refused(path, (f"cannot fold the constant node `/big/{op}` ({op}): its result of shape", says,
                    "more than the limit of 2 GiB (2,147,483,648 B) for one tensor"), capsys)


def test_the_reported_expand_of_four_gib_is_refused_before_allocating(tmp_path, capsys):
    """The probe's case: Expand of a constant to [1, 32768, 32768] (4 GiB of float32). Refused at
    once, before the evaluator makes it (old code made the array)."""
    path = _folded(tmp_path / "m.onnx", "Expand", {"v": np.ones((1, 1, 1), np.float32),
                                                   "s": np.array([1, 32768, 32768])}, x_shape=("N", 32768, 32768))
    _refused(path, "`/big/Expand` (Expand): its result of shape [1, 32768, 32768] would take 4 GiB "
             "(4,294,967,296 B), more than the limit of 2 GiB", capsys)


def test_constants_together_beyond_the_weights_limit_are_refused(tmp_path, capsys, monkeypatch):
    from nnc.compiler import onnx_import
    from nnc.compiler.memory import Limits
    monkeypatch.setattr(onnx_import, "LIMITS", Limits(tensor=1 << 20, weights=3 << 19))     # 1 MiB, 1.5 MiB
    big = np.ones((1, 200_000), np.float32)                                                  # 800 KB each
    inits = [numpy_helper.from_array(big, f"b{k}.weight") for k in range(2)]
    nodes = [helper.make_node("Add", ["x", "b0.weight"], ["h"]), helper.make_node("Add", ["h", "b1.weight"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 200_000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "inits.onnx"))
    _refused(tmp_path / "inits.onnx", "its constants take more than the limit of 1.5 MiB (1,572,864 B) for all "
             "weights (initializer `b1.weight` brings them to 1.5 MiB (1,600,000 B))", capsys)
    path = _folded(tmp_path / "one.onnx", "Expand", {"v": np.ones((1, 1), np.float32),
                                                     "s": np.array([1, 300_000])}, x_shape=("N", 300_000))
    _refused(path, "`/big/Expand` (Expand): its result of shape [1, 300000] would take 1.1 MiB (1,200,000 B), "
             "more than the limit of 1 MiB (1,048,576 B) for one tensor", capsys)
    nodes = [helper.make_node("Constant", [], ["v"], value=numpy_helper.from_array(np.ones((1, 1), np.float32), "v")),
             helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array([1, 200_000]), "s"))]
    nodes += [helper.make_node("Expand", ["v", "s"], [f"e{k}"], name=f"/e{k}/Expand") for k in range(2)]
    nodes += [helper.make_node("Add", ["x", "e0"], ["h"]), helper.make_node("Add", ["h", "e1"], ["y"])]
    _refused(_weight_file(tmp_path / "two.onnx", None, nodes, ("N", 200_000)),
             "`/e1/Expand` (Expand): its result of shape [1, 200000] (781.2 KiB (800,000 B)) would bring the folded "
             "constants to more than the limit of 1.5 MiB (1,572,864 B) for all weights", capsys)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB is Linux's")
def test_shape_inference_never_spends_memory_on_each_element_of_a_long_1d_value(tmp_path):
    """ONNX's data propagation spends ~140 bytes on each element of a 1-D value of known
    length that Cast, Add, Concat... read, even without its data: a value_info claiming
    10**7 elements for a shape tensor made 1.4 GB. The import reads such a model (the
    claim is false; nothing uses the value) with no more memory than a plain one."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
             helper.make_node("Relu", ["x"], ["y"])]
    claim = helper.make_tensor_value_info("s", TensorProto.INT64, [10 ** 7])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], value_info=[claim])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "claim.onnx"))
    plain = _graph_file(tmp_path / "plain.onnx", [helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 4])], ["y"])
    script = ("import resource, sys, nnc; text, _ = nnc.from_onnx(sys.argv[1]); assert 'relu' in text, text; "
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    peaks = []
    for path in (plain, tmp_path / "claim.onnx"):
        done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        peaks.append(int(done.stdout.split()[-1]))
    assert peaks[1] - peaks[0] < 300_000, peaks        # KiB: old code peaked 1.4 GB higher
