"""`.nn` to ONNX: the bridge behind `nnc export` and `nnc.to_onnx`.

In:  a model (a `.nn` path or model text), its weights (a `.npz` or
     `.safetensors` path, a dict of arrays, or None for the default
     initialisation), an output path and an opset (17 by default; 13 up to
     the newest the installed `onnx` knows).
Out: `to_onnx(...)` writes an ONNX model that onnxruntime runs with the same
     results as `nnc.build`, and returns the path. Initializer names are the
     `state_dict` keys; the batch axis of every input and output is the
     dynamic dimension `batch`, and the model's named dimensions (`T`) are
     dynamic axes of the same names. An integer input (`tokens: int[T]`) is
     an int64 tensor, as `torch.onnx.export` writes `nn.Embedding` indices.

Every step of the checked (unoptimised) graph becomes one ONNX node or a few,
all from the standard `ai.onnx` domain: values keep their labels as ONNX
value names, and the helper values a step needs are named `label/what/N`, in
nodes named `/label/Op_i` (as the TorchScript exporter names them, so an
import recovers the label). Where ONNX wants a weight in another layout
(GRU/LSTM gate order, stacked directions, a PRelu slope that broadcasts, a
MatMul weight), the initializer still holds the `state_dict` array and nodes
in the graph rearrange it (onnxruntime folds them when it loads the model).

Forms that depend on the opset: ReduceMean/ReduceMax take their axes as an
input from opset 18 (an attribute before; ReduceSum from 13); layernorm is
LayerNormalization from 17 and ReduceMean arithmetic before; gelu is Gelu
from 20 and its erf formula before; hardswish is HardSwish from 14. Ops
without an ONNX twin are written as small exact subgraphs: groupnorm as
Reshape + InstanceNormalization (every opset), adaptive average pooling as
AveragePool when the bins are equal and as MatMul with a constant pooling
matrix (PyTorch's bins) otherwise, attention as nn.MultiheadAttention's
MatMul/Softmax arithmetic with a Where mask built from Range for `causal`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .diagnostics import UserError
from .extras import require_onnx


class OnnxExportError(UserError, ValueError):
    """The model cannot be written as ONNX (an op without a translation, an
    opset outside the supported range, an unwritable path)."""


MIN_OPSET = 13


def to_onnx(model: Any, weights: Any = None, path: str | Path = "model.onnx", opset: int = 17) -> Path:
    """Write `model` with `weights` as an ONNX file at `path`; returns the path. `model`: a `.nn` path,
    model text, or a model `nnc.build` returned (then `weights` defaults to its own, `state_dict()`)."""
    source = getattr(model, "_source", None) if not isinstance(model, (str, os.PathLike)) else None
    if isinstance(source, str):
        weights = model.state_dict() if weights is None else weights
        model = source
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper
    from ..runtime import weights as W
    from .frontend import check
    from .passes import optimize
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise OnnxExportError(f"opset {opset!r} is not supported: use {MIN_OPSET} to {newest} "
                              f"(onnx {onnx.__version__})")
    graph = check(model).graph
    # the weights exactly as `nnc.build` would hold them (the same keys, order and default draws)
    specs = {k: W.Spec(p.shape, p.init) for k, p in optimize(graph).param_specs().items()}
    state = W.default_init(specs) if weights is None else W.load(weights, specs)
    w = _Writer(graph, state, opset)
    for n in graph.nodes:
        w.node(n)
    inputs = [helper.make_tensor_value_info(i.name, TensorProto.INT64 if i.dtype == "int32" else TensorProto.FLOAT,
                                            ["batch", *map(_dim, i.shape)])
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
    # every step's value with its shape (named sizes by name): ONNX's own inference loses a named
    # size at a Slice whose end is read from Shape (a positional table's rows), and Netron shows these
    done = {o.name for o in outputs} | {i.name for i in graph.inputs}
    value_info = [helper.make_tensor_value_info(n.label, TensorProto.INT64 if n.dtype == "int32" else TensorProto.FLOAT,
                                                ["batch", *map(_dim, n.shape)])
                  for n in graph.nodes if n.label in w.names and n.label not in done]
    g = helper.make_graph(w.nodes, graph.name, inputs, outputs, initializers, value_info=value_info)
    ops = [helper.make_opsetid("", opset)]
    m = helper.make_model(g, opset_imports=ops, producer_name="nnc", producer_version=_version())
    # the oldest IR version that carries the opset: the widest range of runtimes loads it
    m.ir_version = helper.find_min_ir_version_for(ops)
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


def _bins(n: int, size: int) -> np.ndarray:
    """[n, size]: column i averages PyTorch's adaptive bin i of an axis of n,
    positions floor(i * n / size) .. ceil((i + 1) * n / size) - 1."""
    m = np.zeros((n, size), np.float32)
    for i in range(size):
        lo, hi = (i * n) // size, -(-((i + 1) * n) // size)
        m[lo:hi, i] = 1.0 / (hi - lo)
    return m


# elementwise ops with one ONNX twin and no attributes
_SIMPLE = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "selu": "Selu", "softplus": "Softplus",
           "dropout": "Identity", "identity": "Identity", "neg": "Neg", "abs": "Abs", "exp": "Exp",
           "log": "Log", "sqrt": "Sqrt"}

# ONNX's gates from PyTorch's: GRU r, z, n -> z, r, h; LSTM i, f, g, o -> i, o, f, c
_GATES = {"GRU": (1, 0, 2), "LSTM": (0, 3, 1, 2), "RNN": (0,)}


class _Writer:
    def __init__(self, graph, state: Mapping[str, np.ndarray], opset: int):
        self.graph = graph
        self.state = state
        self.opset = opset
        self.nodes: list = []
        self.names: set[str] = {i.name for i in graph.inputs} | set(state)
        self.count = 0

    # ---------------------------------------------------------------- building blocks

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

    def step(self, op: str, inputs: list[str], hint: str, **attrs) -> str:
        """One node with one output named after `hint` (`label/what`); returns the output."""
        return self.add(op, inputs, [self.tmp(hint)], **attrs)[0]

    def const(self, hint: str, array) -> str:
        from onnx import helper, numpy_helper
        name = self.tmp(hint)
        node = f"/{name.split('/')[0]}/Constant_{len(self.nodes)}"
        self.nodes.append(helper.make_node("Constant", [], [name], name=node,
                                           value=numpy_helper.from_array(np.asarray(array))))
        return name

    def ints(self, hint: str, values: Sequence[int]) -> str:
        return self.const(hint, np.array(list(values), np.int64))

    def scalar(self, hint: str, value: float) -> str:
        return self.const(hint, np.array(value, np.float32))

    def rank(self, value: str) -> int:
        return len(self.graph.shape_of(value)) + 1          # with the batch axis

    def size(self, label: str, x: str, axis: int, scalar: bool = False) -> str:
        """Axis `axis` (with batch) of `x` as an int64 tensor of shape [1], or [] when `scalar`:
        a constant when the size is known, read from `Shape` when it is named."""
        d = self.graph.shape_of(x)[axis - 1]
        if isinstance(d, int):
            return self.const(f"{label}/size", np.array(d if scalar else [d], np.int64))
        shape = self.step("Shape", [x], f"{label}/shape")
        index = self.const(f"{label}/axis", np.array(axis if scalar else [axis], np.int64))
        return self.step("Gather", [shape, index], f"{label}/size", axis=0)

    def reduce(self, op: str, x: str, axes: Sequence[int], out: str, keepdims: int) -> str:
        """`op` (ReduceMean, ReduceSum, ReduceMax) over `axes` (with batch): the axes are an input
        from opset 18 (ReduceSum: 13), an attribute before."""
        if op == "ReduceSum" or self.opset >= 18:
            return self.add(op, [x, self.ints(f"{out.split('/')[0]}/axes", axes)], [out], keepdims=keepdims)[0]
        return self.add(op, [x], [out], axes=list(axes), keepdims=keepdims)[0]

    def channels(self, label: str, param: str, rank: int) -> str:
        """A per-channel parameter [C] reshaped to [C, 1, ...], to broadcast over [B, C, ...] of `rank`."""
        shape = self.ints(f"{label}/{param}_shape", [-1] + [1] * (rank - 2))
        return self.step("Reshape", [f"{label}.{param}", shape], f"{label}/{param}")

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
        wt = self.step("Transpose", [w], f"{n.label}/weight_t", perm=[1, 0])
        if not n.attrs["bias"]:
            self.add("MatMul", [x, wt], [out])
            return
        mm = self.step("MatMul", [x, wt], f"{n.label}/matmul")
        self.add("Add", [mm, b], [out])

    def _conv(self, n, x, out):
        a = n.attrs
        inputs = [x, f"{n.label}.weight"] + ([f"{n.label}.bias"] if a["bias"] else [])
        pads = [p[0] for p in a["pads"]] + [p[1] for p in a["pads"]]
        self.add("Conv", inputs, [out], kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                 dilations=list(a["dilation"]), group=a["groups"], pads=pads)

    _conv1d = _conv2d = _depthwise_conv2d = _conv

    def _conv_transpose(self, n, x, out):
        # the weight [C, filters/groups, *k] is ONNX's layout as it is PyTorch's
        a = n.attrs
        inputs = [x, f"{n.label}.weight"] + ([f"{n.label}.bias"] if a["bias"] else [])
        pads = [p[0] for p in a["pads"]] + [p[1] for p in a["pads"]]
        output_padding = list(a["output_padding"])
        if any(op >= st for op, st in zip(output_padding, a["stride"])):
            # PyTorch allows output_padding up to the dilation, onnxruntime only below the stride. It
            # only crops less at the end: a smaller end pad, and past the padding by a stride or more,
            # zero input steps appended (they add only the bias) with the surplus cropped
            ends = [p[1] - op for p, op in zip(a["pads"], output_padding)]
            extra = [max(0, -e) for e in ends]
            more = [0 if e < st else -(-e // st) for e, st in zip(extra, a["stride"])]   # input steps
            if any(more):
                grow = self.ints(f"{n.label}/pads", [0] * (2 + len(more)) + [0, 0] + more)
                inputs[0] = self.step("Pad", [x, grow], f"{n.label}/padded", mode="constant")
            pads = [p[0] for p in a["pads"]] + [st * q - e if q else max(0, end)
                                                for st, q, e, end in zip(a["stride"], more, extra, ends)]
            output_padding = [0 if q else e for q, e in zip(more, extra)]
        self.add("ConvTranspose", inputs, [out], kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                 dilations=list(a["dilation"]), group=a["groups"], pads=pads, output_padding=output_padding)

    _conv_transpose1d = _conv_transpose2d = _conv_transpose

    def _batchnorm(self, n, x, out):
        # inference: the running statistics; `momentum` only matters in training
        p = [f"{n.label}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        self.add("BatchNormalization", [x, *p], [out], epsilon=float(n.attrs["eps"]))

    def _layernorm(self, n, x, out):
        p = [f"{n.label}.weight", f"{n.label}.bias"]
        eps = float(n.attrs["eps"])
        if self.opset >= 17:
            self.add("LayerNormalization", [x, *p], [out], axis=-1, epsilon=eps)
            return
        label = n.label
        last = self.rank(x) - 1
        mean = self.reduce("ReduceMean", x, [last], self.tmp(f"{label}/mean"), keepdims=1)
        d = self.step("Sub", [x, mean], f"{label}/centred")
        var = self.reduce("ReduceMean", self.step("Mul", [d, d], f"{label}/square"), [last],
                          self.tmp(f"{label}/var"), keepdims=1)
        std = self.step("Sqrt", [self.step("Add", [var, self.scalar(f"{label}/eps", eps)], f"{label}/var_eps")],
                        f"{label}/std")
        y = self.step("Mul", [self.step("Div", [d, std], f"{label}/normed"), p[0]], f"{label}/scaled")
        self.add("Add", [y, p[1]], [out])

    def _groupnorm(self, n, x, out):
        # [B, C, ...] -> [B, G, C/G * ...]: InstanceNormalization normalises each (example, group);
        # then back to the input's shape and the per-channel affine
        a, label, r = n.attrs, n.label, self.rank(x)
        g = a["groups"]
        grouped = self.step("Reshape", [x, self.ints(f"{label}/groups_shape", [0, g, -1])], f"{label}/grouped")
        ones = self.const(f"{label}/ones", np.ones(g, np.float32))
        zeros = self.const(f"{label}/zeros", np.zeros(g, np.float32))
        normed = self.step("InstanceNormalization", [grouped, ones, zeros], f"{label}/normed",
                           epsilon=float(a["eps"]))
        y = self.step("Reshape", [normed, self.step("Shape", [x], f"{label}/shape")], f"{label}/ungrouped")
        y = self.step("Mul", [y, self.channels(label, "weight", r)], f"{label}/scaled")
        self.add("Add", [y, self.channels(label, "bias", r)], [out])

    def _instancenorm(self, n, x, out):
        a, label = n.attrs, n.label
        if a["affine"]:
            p = [f"{label}.weight", f"{label}.bias"]
        else:
            c = a["channels"]
            p = [self.const(f"{label}/ones", np.ones(c, np.float32)),
                 self.const(f"{label}/zeros", np.zeros(c, np.float32))]
        self.add("InstanceNormalization", [x, *p], [out], epsilon=float(a["eps"]))

    def _prelu(self, n, x, out):
        slope = f"{n.label}.weight"
        if not n.attrs["shared"] and self.rank(x) > 2:
            slope = self.channels(n.label, "weight", self.rank(x))
        self.add("PRelu", [x, slope], [out])

    def _recurrent(self, n, x, out, kind: str):
        """Each layer one ONNX GRU/LSTM/RNN (direction=bidirectional for two-way layers) on the
        time-major sequence [T, B, F]; its output [T, dirs, B, H] becomes the next layer's input
        [T, B, dirs * H] (Transpose + Reshape), and batch-first again at the end."""
        a, label = n.attrs, n.label
        H = a["hidden"]
        dirs = ("", "_reverse") if a["bidirectional"] else ("",)
        # the rows of ONNX's gate order, taken from PyTorch's stacked gates by one Gather
        rows = np.concatenate([np.arange(g * H, (g + 1) * H) for g in _GATES[kind]]).astype(np.int64)[None]
        order = self.const(f"{label}/gate_order", rows)

        def stacked(key: str, layer: int, axis: int = 0) -> str:
            # [dirs, G*H, ...]: each direction's tensor in ONNX's gate order, the directions stacked
            parts = [self.step("Gather", [f"{label}.{key}_l{layer}{d}", order], f"{label}/{key}", axis=0)
                     for d in dirs]
            return parts[0] if len(parts) == 1 else self.step("Concat", parts, f"{label}/{key}", axis=axis)

        extra: dict[str, Any] = {}
        if kind == "GRU":
            extra["linear_before_reset"] = 1            # PyTorch's GRU: r * (W_hn h + b_hn)
        if kind == "RNN":
            extra["activations"] = [a["nonlinearity"].capitalize()] * len(dirs)
        if len(dirs) == 2:
            extra["direction"] = "bidirectional"
        seq = self.step("Transpose", [x], f"{label}/time_major", perm=[1, 0, 2])
        for k in range(a["layers"]):
            inputs = [seq, stacked("weight_ih", k), stacked("weight_hh", k)]
            if a["bias"]:
                per_dir = [self.step("Concat", [self.step("Gather", [f"{label}.bias_{w}_l{k}{d}", order],
                                                          f"{label}/bias_{w}", axis=0) for w in ("ih", "hh")],
                                     f"{label}/bias", axis=1) for d in dirs]
                inputs.append(per_dir[0] if len(per_dir) == 1 else
                              self.step("Concat", per_dir, f"{label}/bias", axis=0))
            y = self.step(kind, inputs, f"{label}/y", hidden_size=H, **extra)        # [T, dirs, B, H]
            if len(dirs) == 1:
                seq = self.step("Squeeze", [y, self.ints(f"{label}/axes", [1])], f"{label}/y")
            else:
                y = self.step("Transpose", [y], f"{label}/y", perm=[0, 2, 1, 3])   # [T, B, dirs, H]
                seq = self.step("Reshape", [y, self.ints(f"{label}/y_shape", [0, 0, 2 * H])], f"{label}/y")
        self.add("Transpose", [seq], [out], perm=[1, 0, 2])

    def _gru(self, n, x, out):
        self._recurrent(n, x, out, "GRU")

    def _lstm(self, n, x, out):
        self._recurrent(n, x, out, "LSTM")

    def _rnn(self, n, x, out):
        self._recurrent(n, x, out, "RNN")

    # ---------------------------------------------------------------- the transformer family

    def _embedding(self, n, x, out):
        # int64 indices (out-of-range ones are onnxruntime's error, as nnc's)
        self.add("Gather", [f"{n.label}.weight", x], [out], axis=0)

    def _positional(self, n, x, out):
        label = n.label
        rows = self.step("Slice", [f"{label}.weight", self.ints(f"{label}/start", [0]), self.size(label, x, 1),
                                   self.ints(f"{label}/axes", [0])], f"{label}/rows")
        self.add("Add", [x, rows], [out])

    def _attention(self, n, x, out):
        """nn.MultiheadAttention(E, heads, batch_first=True)(x, x, x)[0] written out:
        q, k, v from one projection, heads split as [B, h, T, d], softmax(q k^T / sqrt(d)) v,
        the future steps set to -inf before the softmax when causal, the heads joined and projected."""
        a, label = n.attrs, n.label
        e, h = a["embed"], a["heads"]
        d = e // h
        wt = self.step("Transpose", [f"{label}.in_proj_weight"], f"{label}/in_proj_t", perm=[1, 0])
        qkv = self.step("MatMul", [x, wt], f"{label}/qkv")
        if a["bias"]:
            qkv = self.step("Add", [qkv, f"{label}.in_proj_bias"], f"{label}/qkv")
        split = self.ints(f"{label}/heads_shape", [0, 0, h, d])
        axes = self.ints(f"{label}/axes", [2])

        def part(i: int, what: str, perm: list[int]) -> str:
            s = self.step("Slice", [qkv, self.ints(f"{label}/start", [i * e]), self.ints(f"{label}/end", [(i + 1) * e]),
                                    axes], f"{label}/{what}")
            return self.step("Transpose", [self.step("Reshape", [s, split], f"{label}/{what}")], f"{label}/{what}",
                             perm=perm)

        q = part(0, "q", [0, 2, 1, 3])                      # [B, h, T, d]
        k = part(1, "k", [0, 2, 3, 1])                      # [B, h, d, T]
        v = part(2, "v", [0, 2, 1, 3])
        scores = self.step("MatMul", [q, k], f"{label}/scores")
        scores = self.step("Mul", [scores, self.scalar(f"{label}/scale", 1.0 / math.sqrt(d))], f"{label}/scores")
        if a["causal"]:
            t = self.size(label, x, 1, scalar=True)
            steps = self.step("Range", [self.const(f"{label}/zero", np.array(0, np.int64)), t,
                                        self.const(f"{label}/one", np.array(1, np.int64))], f"{label}/steps")
            rows = self.step("Unsqueeze", [steps, self.ints(f"{label}/axes", [1])], f"{label}/query_steps")
            cols = self.step("Unsqueeze", [steps, self.ints(f"{label}/axes", [0])], f"{label}/key_steps")
            future = self.step("Greater", [cols, rows], f"{label}/future")          # [T, T]
            scores = self.step("Where", [future, self.scalar(f"{label}/minus_inf", -np.inf), scores],
                               f"{label}/masked")
        probs = self.step("Softmax", [scores], f"{label}/weights", axis=-1)
        ctx = self.step("Transpose", [self.step("MatMul", [probs, v], f"{label}/context")], f"{label}/context",
                        perm=[0, 2, 1, 3])
        ctx = self.step("Reshape", [ctx, self.ints(f"{label}/joined_shape", [0, 0, e])], f"{label}/context")
        wo = self.step("Transpose", [f"{label}.out_proj.weight"], f"{label}/out_proj_t", perm=[1, 0])
        if not a["bias"]:
            self.add("MatMul", [ctx, wo], [out])
            return
        y = self.step("MatMul", [ctx, wo], f"{label}/out_proj")
        self.add("Add", [y, f"{label}.out_proj.bias"], [out])

    def _matmul(self, n, x, out):
        self.add("MatMul", list(n.inputs), [out])

    def _div(self, n, x, out):
        self.add("Div", list(n.inputs), [out])

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
        g = self.step("GlobalAveragePool", [x], f"{n.label}/pooled")
        self.add("Flatten", [g], [out], axis=1)

    def _global_maxpool(self, n, x, out):
        g = self.step("GlobalMaxPool", [x], f"{n.label}/pooled")
        self.add("Flatten", [g], [out], axis=1)

    def _adaptive_avgpool(self, n, x, out):
        """Equal bins (the size divides the axis): AveragePool. Otherwise PyTorch's bins as a
        constant [n, size] averaging matrix per axis: x @ P on the last axis, P^T @ x on the
        one before it."""
        label = n.label
        sizes = n.attrs["size"]
        spatial = [int(d) for d in self.graph.shape_of(x)[1:]]
        if all(s_in % s_out == 0 for s_in, s_out in zip(spatial, sizes)):
            k = [s_in // s_out for s_in, s_out in zip(spatial, sizes)]
            self.add("AveragePool", [x], [out], kernel_shape=k, strides=k, pads=[0] * (2 * len(k)))
            return
        y = x
        last = len(spatial) - 1
        for i in reversed(range(len(spatial))):
            final = i == 0
            target = [out] if final else [self.tmp(f"{label}/pooled")]
            if spatial[i] == sizes[i] and not final:        # nothing to pool on this axis
                continue
            p = _bins(spatial[i], sizes[i])
            if i == last:
                y = self.add("MatMul", [y, self.const(f"{label}/bins", p)], target)[0]
            else:
                y = self.add("MatMul", [self.const(f"{label}/bins", np.ascontiguousarray(p.T)), y], target)[0]

    _adaptive_avgpool1d = _adaptive_avgpool2d = _adaptive_avgpool

    # ---------------------------------------------------------------- activations

    def _relu6(self, n, x, out):
        self.add("Clip", [x, self.scalar(f"{n.label}/min", 0.0), self.scalar(f"{n.label}/max", 6.0)], [out])

    def _clamp(self, n, x, out):
        lo, hi = n.attrs["min"], n.attrs["max"]
        inputs = [x, "" if lo is None else self.scalar(f"{n.label}/min", float(lo))]
        if hi is not None:
            inputs.append(self.scalar(f"{n.label}/max", float(hi)))
        self.add("Clip", inputs, [out])

    def _square(self, n, x, out):
        self.add("Mul", [x, x], [out])

    def _gelu(self, n, x, out):
        if self.opset >= 20:
            self.add("Gelu", [x], [out])
            return
        s = self.scalar(f"{n.label}/sqrt2", math.sqrt(2.0))
        one = self.scalar(f"{n.label}/one", 1.0)
        half = self.scalar(f"{n.label}/half", 0.5)
        e = self.step("Erf", [self.step("Div", [x, s], f"{n.label}/div")], f"{n.label}/erf")
        m = self.step("Mul", [x, self.step("Add", [e, one], f"{n.label}/add")], f"{n.label}/mul")
        self.add("Mul", [m, half], [out])

    def _silu(self, n, x, out):
        s = self.step("Sigmoid", [x], f"{n.label}/sigmoid")
        self.add("Mul", [x, s], [out])

    def _hardsigmoid(self, n, x, out):
        self.add("HardSigmoid", [x], [out], alpha=1.0 / 6.0, beta=0.5)

    def _hardswish(self, n, x, out):
        if self.opset >= 14:
            self.add("HardSwish", [x], [out])
            return
        h = self.step("HardSigmoid", [x], f"{n.label}/hardsigmoid", alpha=1.0 / 6.0, beta=0.5)
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
        self.add("Reshape", [x, self.ints(f"{n.label}/shape", [0, *n.attrs["shape"]])], [out])

    def _transpose(self, n, x, out):
        self.add("Transpose", [x], [out], perm=[0, *(p + 1 for p in n.attrs["perm"])])

    def _upsample(self, n, x, out):
        # PyTorch's nearest reads x[i // s]: asymmetric coordinates rounded down; linear and
        # bilinear with align_corners=False are half_pixel (for whole scales >= 1 the same as
        # pytorch_half_pixel); the edges clamp in both
        spatial = self.rank(x) - 2
        scale = n.attrs["scale"]
        scales = list(scale) if isinstance(scale, tuple) else [scale] * spatial
        s = self.const(f"{n.label}/scales", np.array([1.0, 1.0, *scales], np.float32))
        if n.attrs.get("mode", "nearest") != "nearest":
            self.add("Resize", [x, "", s], [out], mode="linear", coordinate_transformation_mode="half_pixel")
            return
        self.add("Resize", [x, "", s], [out], mode="nearest", coordinate_transformation_mode="asymmetric",
                 nearest_mode="floor")

    def _pad(self, n, x, out):
        # F.pad's pairs (resolved to axis order) -> ONNX's [begin of every axis..., end of every axis...]
        a, r = n.attrs, self.rank(x)
        pairs = [(0, 0)] * (r - len(a["pads"])) + [tuple(p) for p in a["pads"]]
        pads = self.ints(f"{n.label}/pads", [p[0] for p in pairs] + [p[1] for p in pairs])
        mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[a["mode"]]
        if mode == "constant":
            self.add("Pad", [x, pads, self.scalar(f"{n.label}/value", float(a["value"]))], [out], mode=mode)
        else:
            self.add("Pad", [x, pads], [out], mode=mode)

    # ---------------------------------------------------------------- axis ops

    def _glu(self, n, x, out):
        label, axis = n.label, n.attrs["axis"] + 1
        half = int(self.graph.shape_of(x)[axis - 1]) // 2
        axes = self.ints(f"{label}/axes", [axis])

        def cut(lo: int, hi: int, what: str) -> str:
            return self.step("Slice", [x, self.ints(f"{label}/start", [lo]), self.ints(f"{label}/end", [hi]), axes],
                             f"{label}/{what}")

        gate = self.step("Sigmoid", [cut(half, 2 * half, "gate")], f"{label}/gate")
        self.add("Mul", [cut(0, half, "value"), gate], [out])

    def _slice(self, n, x, out):
        a, label = n.attrs, n.label
        self.add("Slice", [x, self.ints(f"{label}/start", [a["start"]]), self.ints(f"{label}/end", [a["stop"]]),
                           self.ints(f"{label}/axes", [a["axis"] + 1]), self.ints(f"{label}/steps", [a["step"]])],
                 [out])

    def _select(self, n, x, out):
        # a scalar index drops the axis; -1 (the last step of a named axis) counts from the end
        index = self.const(f"{n.label}/index", np.array(n.attrs["index"], np.int64))
        self.add("Gather", [x, index], [out], axis=n.attrs["axis"] + 1)

    def _reduction(self, n, x, out, op: str):
        self.reduce(op, x, [ax + 1 for ax in n.attrs["axes"]], out, keepdims=0)

    def _mean(self, n, x, out):
        self._reduction(n, x, out, "ReduceMean")

    def _sum(self, n, x, out):
        self._reduction(n, x, out, "ReduceSum")

    def _max(self, n, x, out):
        self._reduction(n, x, out, "ReduceMax")

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
