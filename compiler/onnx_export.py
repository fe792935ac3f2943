"""`.nn` to ONNX: the bridge behind `nnc export` and `nnc.to_onnx`.

In:  a model (a `.nn` path or model text), its weights (a `.npz` or
     `.safetensors` path, a dict of arrays, or None for the default
     initialisation), an output path and an opset (17 by default, 13 at least).
Out: `to_onnx(...)` writes an ONNX model that onnxruntime runs with the same
     results as `nnc.build`, and returns the path. Initializer names are the
     `state_dict` keys; the batch axis of every input and output is the
     dynamic dimension `batch`, and the model's named dimensions (`T`) are
     dynamic axes of the same names.

Every step of the checked (unoptimised) graph becomes one ONNX node or a few:
values keep their labels as ONNX value names. Where ONNX wants a weight in
another layout (GRU/LSTM gate order, a PRelu slope that broadcasts, a MatMul
weight), the initializer still holds the `state_dict` array and nodes in the
graph rearrange it (onnxruntime folds them when it loads the model).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .diagnostics import UserError
from .extras import require_onnx


class OnnxExportError(UserError, ValueError):
    """The model cannot be written as ONNX (an op without a translation, an
    opset too old for one of its ops, an unwritable path)."""


def to_onnx(model: Any, weights: Any = None, path: str | Path = "model.onnx", opset: int = 17) -> Path:
    """Write `model` with `weights` as an ONNX file at `path`; returns the path."""
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper
    from ..runtime import weights as W
    from .frontend import check
    from .passes import optimize
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < 13:
        raise OnnxExportError(f"opset {opset!r} is not supported: use 13 or newer")
    graph = check(model).graph
    # the weights exactly as `nnc.build` would hold them (the same keys, order and default draws)
    specs = {k: W.Spec(p.shape, p.init) for k, p in optimize(graph).param_specs().items()}
    state = W.default_init(specs) if weights is None else W.load(weights, specs)
    w = _Writer(graph, state, opset)
    for n in graph.nodes:
        w.node(n)
    inputs = [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, ["batch", *map(_dim, i.shape)])
              for i in graph.inputs]
    outputs = []
    for o in graph.outputs:
        name = o.value
        if o.name != o.value and o.name not in w.names:
            w.add("Identity", [o.value], [o.name])
            name = o.name
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                     ["batch", *map(_dim, graph.shape_of(o.value))]))
    initializers = [numpy_helper.from_array(np.ascontiguousarray(v, dtype=np.float32), k)
                    for k, v in state.items()]
    g = helper.make_graph(w.nodes, graph.name, inputs, outputs, initializers)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="nnc",
                          producer_version=_version())
    m.ir_version = min(m.ir_version, 10)
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as e:      # a bug in the translation, not the user's
        raise AssertionError(f"nnc wrote an invalid ONNX model: {e}") from None
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(m, str(out))
    except OSError as e:
        raise OnnxExportError(f"cannot write `{out}`: {e.strerror or e}") from None
    return out


def _version() -> str:
    import nnc
    return nnc.__version__


def _dim(d) -> int | str:
    """A size as ONNX writes it: a number, or a named dynamic size (`T`, `T - 4`)."""
    return d if isinstance(d, int) else str(d)


_SIMPLE = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "selu": "Selu", "softplus": "Softplus",
           "dropout": "Identity", "identity": "Identity"}


class _Writer:
    def __init__(self, graph, state: Mapping[str, np.ndarray], opset: int):
        self.graph = graph
        self.state = state
        self.opset = opset
        self.nodes: list = []
        self.names: set[str] = {i.name for i in graph.inputs} | set(state)
        self.count = 0

    def tmp(self, hint: str) -> str:
        self.count += 1
        name = f"{hint}/{self.count}"
        self.names.add(name)
        return name

    def add(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> list[str]:
        from onnx import helper
        # named as the TorchScript exporter names nodes (`/label/Op`), so an import recovers the label
        owner = outputs[0].split("/")[0]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=f"/{owner}/{op}_{len(self.nodes)}", **attrs))
        self.names.update(outputs)
        return outputs

    def const(self, hint: str, array) -> str:
        from onnx import helper, numpy_helper
        name = self.tmp(hint)
        self.nodes.append(helper.make_node("Constant", [], [name], name=f"/{name.split('/')[0]}/Constant_{len(self.nodes)}",
                                           value=numpy_helper.from_array(np.asarray(array))))
        return name

    def rank(self, value: str) -> int:
        return len(self.graph.shape_of(value)) + 1          # with the batch axis

    def node(self, n) -> None:
        name = n.op.name
        handler = getattr(self, f"_{name}", None)
        x, out = (n.inputs[0] if n.inputs else None), n.label
        if name in _SIMPLE:
            self.add(_SIMPLE[name], [x], [out])
        elif handler is None:
            raise OnnxExportError(f"`{n.label}`: nnc cannot write `{name}` as ONNX yet")
        else:
            handler(n, x, out)

    # ---------------------------------------------------------------- weighted

    def _dense(self, n, x, out):
        w, b = f"{n.label}.weight", f"{n.label}.bias"
        if self.rank(x) == 2:
            self.add("Gemm", [x, w] + ([b] if n.attrs["bias"] else []), [out], transB=1)
            return
        wt = self.add("Transpose", [w], [self.tmp(f"{n.label}/weight_t")], perm=[1, 0])[0]
        if not n.attrs["bias"]:
            self.add("MatMul", [x, wt], [out])
            return
        mm = self.add("MatMul", [x, wt], [self.tmp(f"{n.label}/matmul")])[0]
        self.add("Add", [mm, b], [out])

    def _conv(self, n, x, out):
        a = n.attrs
        inputs = [x, f"{n.label}.weight"] + ([f"{n.label}.bias"] if a["bias"] else [])
        pads = [p[0] for p in a["pads"]] + [p[1] for p in a["pads"]]
        self.add("Conv", inputs, [out], kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                 dilations=list(a["dilation"]), group=a["groups"], pads=pads)

    _conv1d = _conv2d = _depthwise_conv2d = _conv

    def _batchnorm(self, n, x, out):
        p = [f"{n.label}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        self.add("BatchNormalization", [x, *p], [out], epsilon=float(n.attrs["eps"]))

    def _layernorm(self, n, x, out):
        p = [f"{n.label}.weight", f"{n.label}.bias"]
        if self.opset < 17:
            raise OnnxExportError(f"`{n.label}`: layernorm needs opset 17 or newer (LayerNormalization)")
        self.add("LayerNormalization", [x, *p], [out], axis=-1, epsilon=float(n.attrs["eps"]))

    def _prelu(self, n, x, out):
        slope = f"{n.label}.weight"
        r = self.rank(x)
        if not n.attrs["shared"] and r > 2:
            shape = self.const(f"{n.label}/slope_shape", np.array([-1] + [1] * (r - 2), dtype=np.int64))
            slope = self.add("Reshape", [slope, shape], [self.tmp(f"{n.label}/slope")])[0]
        self.add("PRelu", [x, slope], [out])

    def _recurrent(self, n, x, out, kind: str):
        if n.attrs.get("layers", 1) > 1 or n.attrs.get("bidirectional"):
            raise OnnxExportError(f"`{n.label}`: nnc cannot write a stacked or bidirectional `{n.op.name}` as "
                                  "ONNX yet")
        H = n.attrs["hidden"]
        order = [1, 0, 2] if kind == "GRU" else [0, 3, 1, 2]      # ONNX's gates from torch's
        label = n.label

        def onnx_order(key: str, unsqueeze: bool = True) -> str:
            parts = []
            for g in order:
                s = self.const(f"{label}/s", np.array([g * H], np.int64))
                e = self.const(f"{label}/e", np.array([(g + 1) * H], np.int64))
                ax = self.const(f"{label}/a", np.array([0], np.int64))
                parts.append(self.add("Slice", [f"{label}.{key}", s, e, ax], [self.tmp(f"{label}/{key}")])[0])
            cat = self.add("Concat", parts, [self.tmp(f"{label}/{key}")], axis=0)[0]
            if not unsqueeze:
                return cat
            return self.add("Unsqueeze", [cat, self.const(f"{label}/axes", np.array([0], np.int64))],
                            [self.tmp(f"{label}/{key}")])[0]

        W, R = onnx_order("weight_ih_l0"), onnx_order("weight_hh_l0")
        inputs = [None, W, R]
        if n.attrs["bias"]:
            cat = self.add("Concat", [onnx_order("bias_ih_l0", False), onnx_order("bias_hh_l0", False)],
                           [self.tmp(f"{label}/bias")], axis=0)[0]
            inputs.append(self.add("Unsqueeze", [cat, self.const(f"{label}/axes", np.array([0], np.int64))],
                                   [self.tmp(f"{label}/bias")])[0])
        tm = self.add("Transpose", [x], [self.tmp(f"{label}/time_major")], perm=[1, 0, 2])[0]
        inputs[0] = tm
        extra = {"linear_before_reset": 1} if kind == "GRU" else {}
        y = self.add(kind, inputs, [self.tmp(f"{label}/y")], hidden_size=H, **extra)[0]
        sq = self.add("Squeeze", [y, self.const(f"{label}/axes", np.array([1], np.int64))],
                      [self.tmp(f"{label}/y")])[0]
        self.add("Transpose", [sq], [out], perm=[1, 0, 2])

    def _gru(self, n, x, out):
        self._recurrent(n, x, out, "GRU")

    def _lstm(self, n, x, out):
        self._recurrent(n, x, out, "LSTM")

    # ---------------------------------------------------------------- pooling

    def _pool(self, n, x, out, op: str):
        a = n.attrs
        pads = [p[0] for p in a["pads"]] + [p[1] for p in a["pads"]]
        extra = {"count_include_pad": 1} if op == "AveragePool" else {}
        self.add(op, [x], [out], kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=pads, **extra)

    def _maxpool1d(self, n, x, out):
        self._pool(n, x, out, "MaxPool")

    _maxpool2d = _maxpool1d

    def _avgpool1d(self, n, x, out):
        self._pool(n, x, out, "AveragePool")

    _avgpool2d = _avgpool1d

    def _global_avgpool(self, n, x, out):
        g = self.add("GlobalAveragePool", [x], [self.tmp(f"{n.label}/pooled")])[0]
        self.add("Flatten", [g], [out], axis=1)

    # ---------------------------------------------------------------- activations

    def _relu6(self, n, x, out):
        lo = self.const(f"{n.label}/min", np.array(0.0, np.float32))
        hi = self.const(f"{n.label}/max", np.array(6.0, np.float32))
        self.add("Clip", [x, lo, hi], [out])

    def _gelu(self, n, x, out):
        if self.opset >= 20:
            self.add("Gelu", [x], [out])
            return
        s = self.const(f"{n.label}/sqrt2", np.array(math.sqrt(2.0), np.float32))
        one = self.const(f"{n.label}/one", np.array(1.0, np.float32))
        half = self.const(f"{n.label}/half", np.array(0.5, np.float32))
        d = self.add("Div", [x, s], [self.tmp(f"{n.label}/div")])[0]
        e = self.add("Erf", [d], [self.tmp(f"{n.label}/erf")])[0]
        a = self.add("Add", [e, one], [self.tmp(f"{n.label}/add")])[0]
        m = self.add("Mul", [x, a], [self.tmp(f"{n.label}/mul")])[0]
        self.add("Mul", [m, half], [out])

    def _silu(self, n, x, out):
        s = self.add("Sigmoid", [x], [self.tmp(f"{n.label}/sigmoid")])[0]
        self.add("Mul", [x, s], [out])

    def _hardsigmoid(self, n, x, out):
        self.add("HardSigmoid", [x], [out], alpha=1.0 / 6.0, beta=0.5)

    def _hardswish(self, n, x, out):
        if self.opset >= 14:
            self.add("HardSwish", [x], [out])
            return
        h = self.add("HardSigmoid", [x], [self.tmp(f"{n.label}/hardsigmoid")], alpha=1.0 / 6.0, beta=0.5)[0]
        self.add("Mul", [x, h], [out])

    def _leaky_relu(self, n, x, out):
        self.add("LeakyRelu", [x], [out], alpha=float(n.attrs["slope"]))

    def _elu(self, n, x, out):
        self.add("Elu", [x], [out], alpha=float(n.attrs["alpha"]))

    def _softmax(self, n, x, out):
        self.add("Softmax", [x], [out], axis=int(n.attrs["axis"]) + 1)

    def _log_softmax(self, n, x, out):
        self.add("LogSoftmax", [x], [out], axis=int(n.attrs["axis"]) + 1)

    # ---------------------------------------------------------------- shapes

    def _flatten(self, n, x, out):
        self.add("Flatten", [x], [out], axis=1)

    def _reshape(self, n, x, out):
        shape = self.const(f"{n.label}/shape", np.array([0, *n.attrs["shape"]], np.int64))
        self.add("Reshape", [x, shape], [out])

    def _transpose(self, n, x, out):
        self.add("Transpose", [x], [out], perm=[0, *(p + 1 for p in n.attrs["perm"])])

    def _upsample(self, n, x, out):
        spatial = self.rank(x) - 2
        scale = n.attrs["scale"]
        scales = list(scale) if isinstance(scale, tuple) else [scale] * spatial
        s = self.const(f"{n.label}/scales", np.array([1.0, 1.0, *scales], np.float32))
        if n.attrs.get("mode", "nearest") != "nearest":      # linear, bilinear: align_corners=False
            self.add("Resize", [x, "", s], [out], mode="linear", coordinate_transformation_mode="pytorch_half_pixel")
            return
        self.add("Resize", [x, "", s], [out], mode="nearest", coordinate_transformation_mode="asymmetric",
                 nearest_mode="floor")

    # ---------------------------------------------------------------- merges

    def _add(self, n, x, out):
        if len(n.inputs) == 2:
            self.add("Add", list(n.inputs), [out])
        else:
            self.add("Sum", list(n.inputs), [out])

    def _sub(self, n, x, out):
        self.add("Sub", list(n.inputs), [out])

    def _mul(self, n, x, out):
        acc = n.inputs[0]
        for i, v in enumerate(n.inputs[1:]):
            last = i == len(n.inputs) - 2
            acc = self.add("Mul", [acc, v], [out if last else self.tmp(f"{n.label}/mul")])[0]

    def _concat(self, n, x, out):
        self.add("Concat", list(n.inputs), [out], axis=int(n.attrs["axis"]) + 1)
