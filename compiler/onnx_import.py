"""ONNX to `.nn`: the bridge behind `nnc import` and `nnc.from_onnx`.

In:  an `.onnx` file as `torch.onnx.export` writes it (opset 13 and newer,
     the TorchScript exporter and the dynamo one).
Out: `from_onnx(path) -> (source_text, weights)`: readable `.nn` text (one
     step per line) and its weights in PyTorch's layout, keyed like
     `state_dict()`. An op nnc cannot express is one `OnnxImportError` that
     lists every such node by name and op; a file that is not ONNX is an
     `OnnxImportError` naming the file.

How it works, in order:
1. Load the model and infer every value's shape (`onnx.shape_inference`).
   The first axis of every input is the batch: it is dropped (dynamic or 1).
   Other named input sizes become named dimensions (`x: [1, T]`).
2. Walk the nodes in order. A node whose inputs are all constant is folded
   with ONNX's reference evaluator (`Shape`, `Gather`, `Unsqueeze`, `Concat`
   chains feeding `Reshape` and `Pad`); `Shape` of a value knows its sizes,
   the batch as a marker that only `Reshape` may consume.
3. Each other node becomes a step. Every ONNX value maps to an nnc value and
   an axis map (which ONNX axis is the batch, which is nnc's axis i, which
   is a unit axis): `Transpose`, `Squeeze`, `Unsqueeze` and unit-only
   `Reshape` change the map alone, so the time-major transposes around ONNX
   `GRU`/`LSTM` and the unit axes of `GlobalAveragePool` cost no step. A step
   that reads a value whose map is not plain gets an nnc `transpose` and/or
   `reshape` first.
4. Exporter patterns become one step: `MatMul` + `Add` with constant weights
   (dense), `Pad` with zeros before `Conv` (its padding: `causal`, `same` or
   numbers), x * sigmoid(x) (silu), the erf form of gelu, `Unsqueeze` +
   `Concat` + `ReduceSum` (an n-ary add: `torch.stack(...).sum(0)`).
5. Labels come from the initializer names (`layer1.0.conv1.weight` ->
   `layer1.0.conv1`), else from the node: its module path in the dynamo
   exporter's metadata (`pkg.torch.onnx.name_scopes`) or the TorchScript
   exporter's node name (`/layer1/layer1.0/conv1/Conv`), else the op's
   automatic label. Labels are made unique.
6. Write the text: a value gets a name only when a later step other than the
   next one reads it (`name = step`, then `name -> step`).

Weights arrive in PyTorch's layout: ONNX GRU gates z, r, h become r, z, n;
LSTM gates i, o, f, c become i, f, g, o; `MatMul` weights are transposed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .diagnostics import UserError
from .extras import require_onnx
from .ops import CATALOG

BATCH = -(1 << 40)          # the batch size inside folded shape tensors: only Reshape may consume it


class OnnxImportError(UserError, ValueError):
    """The ONNX file cannot be read, or holds ops nnc cannot express (every
    such node is named in the message)."""


class _Unsupported(Exception):
    """One node cannot be expressed; the reason is shown after its name."""


class _Zeros:
    """A ConstantOfShape of zeros whose shape involves the batch (an RNN's initial state)."""


ZEROS = _Zeros()


@dataclass
class _Val:
    ref: str                        # the nnc value (an input name or a step id)
    axes: tuple                     # per ONNX axis: "B", an nnc axis (int), or None (a unit axis)


@dataclass
class _Step:
    id: str
    op: str
    args: str
    inputs: tuple[str, ...]
    label: str | None
    merge: bool = False


@dataclass
class _Pattern:
    """A group of nodes that become one step: `root` emits it, `absorbed` emit nothing."""

    root: Any
    absorbed: set = field(default_factory=set)
    kind: str = ""
    data: dict = field(default_factory=dict)


def from_onnx(path) -> tuple[str, dict[str, np.ndarray]]:
    """ONNX file -> (`.nn` source text, weights keyed like `state_dict()`)."""
    onnx = require_onnx()
    name = str(path)
    try:
        model = onnx.load(name)
    except FileNotFoundError:
        raise OnnxImportError(f"no such file: `{name}`") from None
    except IsADirectoryError:
        raise OnnxImportError(f"`{name}` is a folder, not an ONNX file") from None
    except Exception as e:      # noqa: BLE001 - protobuf raises several kinds on corrupt data
        raise OnnxImportError(f"`{name}` is not a readable ONNX model ({type(e).__name__})") from None
    if not model.graph.node and not model.graph.input:
        raise OnnxImportError(f"`{name}` is not a readable ONNX model (it holds no graph)")
    model_name = _identifier(Path(name).stem.split(".")[0]) or "model"
    return _Importer(model, name, model_name).run()


def _identifier(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", text)
    if s and s[0].isdigit():
        s = "m_" + s
    return s


_KEYWORDS = {"model", "block", "return", "true", "false", "same", "valid", "causal"}
_LABEL_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*$")


def _valid_label(text: str) -> bool:
    return bool(text) and bool(_LABEL_RE.match(text)) and not text[0].isdigit() \
        and not any(part in _KEYWORDS for part in text.split("."))


class _Importer:
    def __init__(self, model, path: str, name: str):
        import onnx
        from onnx import numpy_helper, shape_inference
        self.onnx = onnx
        self.path = path
        self.name = name
        try:
            model = shape_inference.infer_shapes(model, data_prop=True)
        except Exception:       # noqa: BLE001 - best effort: the values' own shapes stay
            pass
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.consts: dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.origin: dict[str, str] = {k: k for k in self.consts}      # const -> the initializer it came from
        self.shapes: dict[str, list] = {}
        for vi in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                        for d in t.shape.dim]
        self.vals: dict[str, _Val] = {}
        self.failed: set[str] = set()
        self.problems: list[tuple[str, str, str]] = []
        self.steps: list[_Step] = []
        self.labels: set[str] = set()
        self.auto: dict[str, int] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.consumers: dict[str, list] = {}
        for n in self.graph.node:
            for v in n.input:
                if v:
                    self.consumers.setdefault(v, []).append(n)
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.patterns: dict[int, _Pattern] = {}
        self.absorbed: set[int] = set()
        self.materialized: dict[str, str] = {}
        self.inputs: list[tuple[str, list]] = []

    # ------------------------------------------------------------------ driver

    def run(self) -> tuple[str, dict[str, np.ndarray]]:
        init_names = set(self.consts)
        for i in self.graph.input:
            if i.name in init_names:
                continue
            shape = self.shapes.get(i.name)
            if not shape or len(shape) < 2:
                raise OnnxImportError(f"`{self.path}`: input `{i.name}` needs a batch axis and at least one more")
            vname = self._value_name(i.name)
            dims = []
            for d in shape[1:]:
                if isinstance(d, int) and d > 0:
                    dims.append(d)
                else:
                    dims.append(_identifier(str(d)) if d else "N")
            self.inputs.append((vname, dims))
            self.vals[i.name] = _Val(vname, ("B", *range(len(shape) - 1)))
        self._find_patterns()
        for n in self.graph.node:
            self._node(n)
        outputs = []
        for o in self.graph.output:
            if o.name in self.failed:
                continue
            if o.name not in self.vals:
                self.problems.append((o.name, "output", "the model's output is a constant"))
                continue
            try:
                outputs.append(self._canonical(o.name, drop_units=True))
            except _Unsupported as e:
                self.problems.append((o.name, "output", str(e)))
        if self.problems:
            listed = "; ".join(f"`{name}` ({op}{': ' + why if why else ''})" for name, op, why in self.problems)
            n = len(self.problems)
            raise OnnxImportError(f"`{self.path}` has {n} node{'s' if n > 1 else ''} nnc cannot express: {listed}")
        return self._text(outputs), self.weights

    def _node(self, n) -> None:
        key = id(n)
        if key in self.absorbed:
            return
        ins = [v for v in n.input if v]
        pattern = self.patterns.get(key)
        outputs = list(n.output)
        if pattern is not None:
            outputs += [o for m in self.graph.node if id(m) in pattern.absorbed for o in m.output]
        if any(v in self.failed for v in ins):
            self.failed.update(outputs)
            return
        try:
            if key in self.patterns:
                self._pattern(self.patterns[key])
            elif n.op_type in _NEVER_FOLD or not all(v in self.consts for v in ins) or not ins and n.op_type != "Constant":
                handler = _HANDLERS.get(n.op_type)
                if handler is None:
                    raise _Unsupported("")
                handler(self, n)
            else:
                self._fold(n)
        except _Unsupported as e:
            self.problems.append((n.name or n.output[0], n.op_type, str(e)))
            self.failed.update(outputs)

    def _fold(self, n) -> None:
        from onnx.reference import ReferenceEvaluator
        inputs = [self.consts[v] if v else None for v in n.input]
        if any(isinstance(x, _Zeros) for x in inputs):
            raise _Unsupported("reads the zero state of a recurrent layer")
        try:
            if n.op_type == "Constant":
                from onnx import helper, numpy_helper
                attr = n.attribute[0]
                value = helper.get_attribute_value(attr)
                out = [numpy_helper.to_array(value) if attr.type == attr.TENSOR else np.array(value)]
            elif n.op_type == "Identity":
                out = [inputs[0]]
            else:
                feeds = {v: x for v, x in zip(n.input, inputs) if v}
                out = ReferenceEvaluator(n).run(None, feeds)
        except Exception as e:      # noqa: BLE001 - the evaluator raises anything
            raise _Unsupported(f"cannot fold its constant inputs: {type(e).__name__}") from None
        for name, value in zip(n.output, out):
            self.consts[name] = np.asarray(value)
        if n.op_type in ("Identity", "Transpose", "Cast", "Reshape", "Squeeze", "Unsqueeze") and n.input[0] in self.origin:
            self.origin[n.output[0]] = self.origin[n.input[0]]

    # ------------------------------------------------------------------ values

    def _shape(self, name: str) -> list:
        if name in self.shapes:
            return self.shapes[name]
        raise _Unsupported(f"the shape of `{name}` is unknown")

    def _rank(self, name: str) -> int:
        if name in self.vals:
            return len(self.vals[name].axes)
        return len(self._shape(name))

    def _value(self, name: str) -> _Val:
        if name in self.consts:
            raise _Unsupported(f"a constant operand `{name}` where nnc takes a computed value")
        return self.vals[name]

    def _const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts or isinstance(self.consts[name], _Zeros):
            raise _Unsupported(f"its {what} is not a constant")
        return self.consts[name]

    def _canonical(self, name: str, drop_units: bool = False) -> str:
        """The nnc value holding ONNX value `name` in ONNX's own layout, batch
        first; adds a transpose and/or reshape step when the axis map needs it.
        `drop_units`: a model output may keep nnc's shape (unit axes dropped)."""
        val = self._value(name)
        axes = val.axes
        if axes and axes[0] == "B" and list(axes[1:]) == list(range(len(axes) - 1)):
            return val.ref
        key = f"{name}|{drop_units}"
        if key in self.materialized:
            return self.materialized[key]
        if "B" not in axes:
            raise _Unsupported("its batch axis was merged away")
        if axes[0] != "B":
            raise _Unsupported("moves the batch axis away from the front")
        ints = [a for a in axes[1:] if a is not None]
        ref = val.ref
        if ints != sorted(ints):
            ref = self._emit("transpose", _tuple(ints), [ref])     # nnc axis j of the result is ints[j]
        if len(ints) != len(axes) - 1 and not drop_units:
            shape = self._shape(name)[1:]
            target = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
            if target.count(-1) > 1:
                raise _Unsupported("needs a reshape with more than one unknown size")
            ref = self._emit("reshape", _tuple(target), [ref])
        self.materialized[key] = ref
        return ref

    def _set(self, out: str, ref: str, rank: int) -> None:
        self.vals[out] = _Val(ref, ("B", *range(rank)))

    def _emit(self, op: str, args: str, inputs: list[str], label: str | None = None, merge: bool = False) -> str:
        sid = f"%{len(self.steps)}"
        self.steps.append(_Step(sid, op, args, tuple(inputs), label, merge))
        return sid

    def _step(self, n, op: str, args: str = "", label: str | None = None, rank_out: int | None = None,
              src: str | None = None) -> None:
        """One chain step reading `src` (default: the node's first input) in canonical layout."""
        src = src if src is not None else n.input[0]
        ref = self._canonical(src)
        rank = rank_out if rank_out is not None else self._rank(src) - 1
        self._set(n.output[0], self._emit(op, args, [ref], label), rank)

    # ------------------------------------------------------------------ labels

    def _label(self, n, *init_names: str, auto: str) -> str:
        """A unique label: from an initializer name (`fc.weight` -> `fc`), else from the node."""
        for init in init_names:
            origin = self.origin.get(init, init) if init else ""
            base, _, last = origin.rpartition(".")
            if base and last in ("weight", "bias", "running_mean", "running_var") and _valid_label(base):
                return self._unique(base)
        scope = _module_path(n)
        if scope and _valid_label(scope):
            return self._unique(scope)
        k = self.auto.get(auto, 0)
        while f"{auto}_{k}" in self.labels:
            k += 1
        self.auto[auto] = k + 1
        return self._unique(f"{auto}_{k}")

    def _unique(self, label: str) -> str:
        if label not in self.labels:
            self.labels.add(label)
            return label
        k = 1
        while f"{label}_{k}" in self.labels:
            k += 1
        self.labels.add(f"{label}_{k}")
        return f"{label}_{k}"

    def _put(self, label: str, name: str, array) -> None:
        self.weights[f"{label}.{name}"] = np.ascontiguousarray(np.asarray(array, dtype=np.float32))

    # ------------------------------------------------------------------ patterns

    def _find_patterns(self) -> None:
        nodes = list(self.graph.node)
        for n in nodes:
            if id(n) in self.absorbed:
                continue
            if n.op_type == "Pad":
                self._pad_pattern(n)
            elif n.op_type == "MatMul":
                self._matmul_pattern(n)
            elif n.op_type == "Erf":
                self._gelu_pattern(n)
            elif n.op_type == "Mul":
                self._silu_pattern(n)
            elif n.op_type == "ReduceSum":
                self._stack_sum_pattern(n)

    def _only_user(self, value: str):
        users = self.consumers.get(value, [])
        outputs = {o.name for o in self.graph.output}
        return users[0] if len(users) == 1 and value not in outputs else None

    def _pad_pattern(self, n) -> None:
        users = self.consumers.get(n.output[0], [])
        if users and all(u.op_type == "Conv" and u.input[0] == n.output[0] for u in users):
            for u in users:
                self.patterns[id(u)] = _Pattern(u, kind="conv", data={"pad": n})
            self.absorbed.add(id(n))

    def _matmul_pattern(self, n) -> None:
        user = self._only_user(n.output[0])
        if user is not None and user.op_type == "Add":
            other = user.input[1] if user.input[0] == n.output[0] else user.input[0]
            if self._is_initializer_chain(other):
                self.patterns[id(n)] = _Pattern(n, {id(user)}, "dense", {"add": user, "bias": other})
                self.absorbed.add(id(user))

    def _is_initializer_chain(self, name: str) -> bool:
        """True when `name` is an initializer or computed from constants alone."""
        if name in self.consts:
            return True
        p = self.producer.get(name)
        if p is None:
            return False
        return all(not v or self._is_initializer_chain(v) for v in p.input) and p.op_type not in _NEVER_FOLD

    def _gelu_pattern(self, erf) -> None:
        div = self.producer.get(erf.input[0])
        if div is None or div.op_type not in ("Div", "Mul"):
            return
        x = div.input[0]
        add = self._only_user(erf.output[0])
        if add is None or add.op_type != "Add":
            return
        mul1 = self._only_user(add.output[0])
        if mul1 is None or mul1.op_type != "Mul":
            return
        nodes = {id(div), id(erf), id(add), id(mul1)}
        root = mul1
        if x not in mul1.input:
            # 0.5 * x first, then times (1 + erf)
            other = mul1.input[0] if mul1.input[1] == add.output[0] else mul1.input[1]
            half = self.producer.get(other)
            if half is None or half.op_type != "Mul" or x not in half.input:
                return
            nodes.add(id(half))
        else:
            mul2 = self._only_user(mul1.output[0])
            if mul2 is None or mul2.op_type != "Mul":
                return
            nodes.add(id(mul2))
            root = mul2
        self.patterns[id(root)] = _Pattern(root, nodes - {id(root)}, "gelu", {"x": x})
        self.absorbed.update(nodes - {id(root)})

    def _silu_pattern(self, mul) -> None:
        for a, b in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
            sig = self.producer.get(b)
            if sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == a and self._only_user(b) is mul:
                self.patterns[id(mul)] = _Pattern(mul, {id(sig)}, "silu", {"x": a})
                self.absorbed.add(id(sig))
                return

    def _stack_sum_pattern(self, red) -> None:
        cat = self.producer.get(red.input[0])
        if cat is None or cat.op_type != "Concat" or self._only_user(cat.output[0]) is not red:
            return
        axis = _attr(cat, "axis", 0)
        unsq = [self.producer.get(v) for v in cat.input]
        if any(u is None or u.op_type != "Unsqueeze" or self._only_user(u.output[0]) is not cat for u in unsq):
            return
        self.patterns[id(red)] = _Pattern(red, {id(cat), *map(id, unsq)}, "stack_sum",
                                          {"axis": axis, "unsqueeze": unsq})
        self.absorbed.update({id(cat), *map(id, unsq)})

    def _pattern(self, p: _Pattern) -> None:
        n = p.root
        if p.kind == "conv":
            _conv(self, n, pad=p.data["pad"])
        elif p.kind == "dense":
            _matmul(self, n, add=p.data["add"], bias=p.data["bias"])
        elif p.kind == "gelu":
            self._step(n, "gelu", src=p.data["x"])
        elif p.kind == "silu":
            self._step(n, "silu", src=p.data["x"])
        elif p.kind == "stack_sum":
            axis = p.data["axis"]
            for u in p.data["unsqueeze"]:
                ax = _axes_of(self, u)
                if ax != [axis]:
                    raise _Unsupported("stacks on an axis it does not sum")
            axes = _axes_of(self, n)
            if axes != [axis] or _attr(n, "keepdims", 1) != 0:
                raise _Unsupported("sums a stack on another axis")
            refs = [self._canonical(u.input[0]) for u in p.data["unsqueeze"]]
            rank = self._rank(p.data["unsqueeze"][0].input[0]) - 1
            if len(refs) == 1:
                self.vals[n.output[0]] = self.vals[p.data["unsqueeze"][0].input[0]]
            else:
                self._set(n.output[0], self._emit("add", "", refs, merge=True), rank)

    # ------------------------------------------------------------------ text

    def _value_name(self, onnx_name: str) -> str:
        base = _identifier(onnx_name) or "x"
        if base in _KEYWORDS or base in CATALOG:
            base += "_"
        return base

    def _text(self, outputs: list[str]) -> str:
        readers: dict[str, list[int]] = {}
        for i, s in enumerate(self.steps):
            for v in s.inputs:
                readers.setdefault(v, []).append(i)
        names: dict[str, str] = {v: v for v, _ in self.inputs}
        taken = set(names)
        last = len(self.steps) - 1
        single_output_last = len(outputs) == 1 and self.steps and outputs[0] == self.steps[-1].id
        for i, s in enumerate(self.steps):
            users = readers.get(s.id, [])
            needs = any(u != i + 1 or self.steps[u].merge for u in users) or len(users) > 1
            if s.id in outputs and not (single_output_last and i == last):
                needs = True
            if needs:
                base = _identifier((s.label or s.op).replace(".", "_"))
                if base in _KEYWORDS or base in CATALOG or base in taken:
                    k = 0 if base in CATALOG else 1     # a value named like an op would read as that op
                    while f"{base}_{k}" in taken:
                        k += 1
                    base = f"{base}_{k}"
                taken.add(base)
                names[s.id] = base
        lines = []
        sig = ", ".join(f"{v}: [{', '.join(map(str, dims))}]" for v, dims in self.inputs)
        lines.append(f"# imported from {Path(self.path).name} by nnc import")
        lines.append(f"model {self.name}({sig}) {{")
        previous = self.inputs[0][0] if self.inputs else None
        for i, s in enumerate(self.steps):
            call = f"{s.op}({s.args})" if s.args else s.op
            if s.merge:
                call = f"{s.op}({', '.join(names[v] for v in s.inputs)}{', ' + s.args if s.args else ''})"
                text = call
            else:
                step = f"{s.label}: {call}" if s.label else call
                src = s.inputs[0]
                text = step if src == previous else f"{names[src]} -> {step}"
            if s.id in names:
                text = f"{names[s.id]} = {text}"
            lines.append(f"    {text}")
            previous = s.id
        if not (single_output_last and len(outputs) == 1):
            lines.append(f"    return {', '.join(names[o] for o in outputs)}")
        lines.append("}")
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- helpers

_NEVER_FOLD = frozenset({"Shape", "ConstantOfShape", "GRU", "LSTM", "RandomNormal", "RandomUniform",
                         "RandomNormalLike", "RandomUniformLike", "Multinomial"})


def _attr(n, name: str, default=None):
    from onnx import helper
    for a in n.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _module_path(n) -> str:
    """The PyTorch module a node came from: the dynamo exporter's name scopes,
    or the TorchScript exporter's node name `/layer1/layer1.0/conv1/Conv`."""
    for prop in n.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            parts = [s for s in scopes[1:-1] if s]
            return ".".join(parts)
    name = n.name
    if name.startswith("/"):
        parts = name.strip("/").split("/")
        if len(parts) >= 2:
            return parts[-2]
    return ""


def _tuple(values) -> str:
    values = list(values)
    return f"({', '.join(map(str, values))}{',' if len(values) == 1 else ''})"


def _num(x: float) -> str:
    x = float(x)
    if x == int(x) and abs(x) < 1e15:
        return f"{x:.1f}"
    return repr(float(np.float32(x))) if len(repr(x)) > 12 else repr(x)


def _axes_of(imp: _Importer, n) -> list[int] | None:
    """The `axes` of Squeeze/Unsqueeze/Reduce* (an input from opset 13, an attribute before)."""
    axes = _attr(n, "axes")
    if axes is None and len(n.input) > 1 and n.input[1]:
        axes = imp._const(n.input[1], "axes").tolist()
    if axes is None:
        return None
    rank = len(imp._shape(n.input[0])) + (len(axes) if n.op_type == "Unsqueeze" else 0)
    return sorted(int(a) % rank for a in np.atleast_1d(axes))


# ---------------------------------------------------------------------- handlers

def _conv(imp: _Importer, n, pad=None) -> None:
    w = imp._const(n.input[1], "weight")
    rank = w.ndim - 2
    if rank not in (1, 2):
        raise _Unsupported(f"a {rank}-d convolution")
    b = imp._const(n.input[2], "bias") if len(n.input) > 2 and n.input[2] else None
    k = list(_attr(n, "kernel_shape", w.shape[2:]))
    s = list(_attr(n, "strides", [1] * rank))
    d = list(_attr(n, "dilations", [1] * rank))
    g = _attr(n, "group", 1)
    auto_pad = _attr(n, "auto_pad", "NOTSET")
    pads = list(_attr(n, "pads", [0] * 2 * rank))
    if auto_pad not in ("NOTSET", "VALID"):
        if any(x != 1 for x in s):
            raise _Unsupported(f"auto_pad={auto_pad} with strides {s}")
        totals = [dd * (kk - 1) for kk, dd in zip(k, d)]
        lo = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
        pads = lo + [t - x for t, x in zip(totals, lo)]
    src = n.input[0]
    if pad is not None:
        extra = _pad_amounts(imp, pad, rank)
        pads = [p + e for p, e in zip(pads, extra)]
        src = pad.input[0]
    begins, ends = pads[:rank], pads[rank:]
    totals = [dd * (kk - 1) for kk, dd in zip(k, d)]
    if begins == ends:
        padding = None if not any(begins) else (str(begins[0]) if rank == 1 or begins[0] == begins[1]
                                                 else _tuple(begins))
    elif all(x == 1 for x in s) and rank == 1 and begins == totals and not any(ends):
        padding = "causal"
    elif all(x == 1 for x in s) and begins == [t // 2 for t in totals] and ends == [t - t // 2 for t in totals]:
        padding = "same"
    else:
        raise _Unsupported(f"asymmetric padding {pads}")
    c_in = imp._shape(src)[1]
    filters = w.shape[0]
    label = imp._label(n, n.input[1], auto=f"conv{rank}d")
    args = []
    if rank == 2 and g > 1 and g == c_in and filters % g == 0:
        op = "depthwise_conv2d"
        args.append(str(k[0]) if k[0] == k[1] else _tuple(k))
        if filters // g != 1:
            args.append(f"multiplier={filters // g}")
    else:
        op = f"conv{rank}d"
        args += [str(filters), str(k[0]) if rank == 1 or k[0] == k[1] else _tuple(k)]
    if any(x != 1 for x in s):
        args.append(f"stride={s[0] if rank == 1 or s[0] == s[1] else _tuple(s)}")
    if padding is not None:
        args.append(f"padding={padding}")
    if any(x != 1 for x in d):
        args.append(f"dilation={d[0] if rank == 1 or d[0] == d[1] else _tuple(d)}")
    if op != "depthwise_conv2d" and g != 1:
        args.append(f"groups={g}")
    if b is None:
        args.append("bias=false")
    imp._put(label, "weight", w)
    if b is not None:
        imp._put(label, "bias", b)
    imp._step(n, op, ", ".join(args), label, src=src)


def _pad_amounts(imp: _Importer, pad, rank: int) -> list[int]:
    mode = _attr(pad, "mode", "constant")
    if mode != "constant":
        raise _Unsupported(f"{mode} padding before a convolution")
    amounts = _attr(pad, "pads")
    if amounts is None:
        amounts = imp._const(pad.input[1], "padding").tolist()
    value = 0.0
    if len(pad.input) > 2 and pad.input[2]:
        value = float(imp._const(pad.input[2], "padding value").reshape(-1)[0])
    if value != 0.0:
        raise _Unsupported(f"padding with {value} before a convolution")
    amounts = [int(a) for a in amounts]
    full = len(amounts) // 2
    if len(pad.input) > 3 and pad.input[3]:
        raise _Unsupported("padding of selected axes")
    begins, ends = amounts[:full], amounts[full:]
    if any(begins[:2]) or any(ends[:2]):
        raise _Unsupported("padding of the batch or channel axis")
    return begins[2:] + ends[2:]


def _gemm(imp: _Importer, n) -> None:
    if _attr(n, "transA", 0):
        raise _Unsupported("transA=1")
    w = imp._const(n.input[1], "weight").astype(np.float32)
    if not _attr(n, "transB", 0):
        w = w.T
    w = w * np.float32(_attr(n, "alpha", 1.0))
    b = None
    if len(n.input) > 2 and n.input[2]:
        c = imp._const(n.input[2], "bias") * np.float32(_attr(n, "beta", 1.0))
        b = np.broadcast_to(c.reshape(-1) if c.size == w.shape[0] else c, (w.shape[0],))
    label = imp._label(n, n.input[1], n.input[2] if len(n.input) > 2 else "", auto="dense")
    imp._put(label, "weight", w)
    if b is not None:
        imp._put(label, "bias", b)
    imp._step(n, "dense", f"{w.shape[0]}" + ("" if b is not None else ", bias=false"), label, rank_out=1)


def _matmul(imp: _Importer, n, add=None, bias=None) -> None:
    if n.input[1] not in imp.consts:
        raise _Unsupported("a product of two computed values (matmul is not in the language yet)")
    w = imp._const(n.input[1], "weight")
    if w.ndim != 2:
        raise _Unsupported(f"a weight of rank {w.ndim}")
    b = None
    out = n.output[0]
    if add is not None:
        imp._fold_chain(bias)
        b = np.broadcast_to(imp._const(bias, "bias").reshape(-1), (w.shape[1],))
        out = add.output[0]
    label = imp._label(n, bias or "", n.input[1], auto="dense")
    imp._put(label, "weight", w.T)
    if b is not None:
        imp._put(label, "bias", b)
    src = n.input[0]
    ref = imp._canonical(src)
    imp._set(out, imp._emit("dense", f"{w.shape[1]}" + ("" if b is not None else ", bias=false"), [ref], label),
             imp._rank(src) - 1)


def _fold_chain(self: _Importer, name: str) -> None:
    """Constants computed by nodes not yet visited (a bias after its MatMul)."""
    if name in self.consts:
        return
    p = self.producer.get(name)
    if p is None:
        raise _Unsupported(f"`{name}` is not a constant")
    for v in p.input:
        if v:
            _fold_chain(self, v)
    self._fold(p)


_Importer._fold_chain = _fold_chain


def _pool(kind: str):
    def handler(imp: _Importer, n) -> None:
        rank = len(imp._shape(n.input[0])) - 2
        if rank not in (1, 2):
            raise _Unsupported(f"{rank}-d pooling")
        if len([o for o in n.output if o]) > 1 and any(imp.consumers.get(o) for o in n.output[1:]):
            raise _Unsupported("its indices are used")
        k = list(_attr(n, "kernel_shape"))
        s = list(_attr(n, "strides", [1] * rank))
        pads = list(_attr(n, "pads", [0] * 2 * rank))
        if _attr(n, "ceil_mode", 0):
            raise _Unsupported("ceil_mode=1")
        if any(x != 1 for x in _attr(n, "dilations", [1] * rank)):
            raise _Unsupported("dilated pooling")
        if _attr(n, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise _Unsupported("auto_pad")
        if pads[:rank] != pads[rank:]:
            raise _Unsupported(f"asymmetric padding {pads}")
        if kind == "avg" and any(pads) and not _attr(n, "count_include_pad", 0):
            raise _Unsupported("count_include_pad=0 with padding (nnc's avgpool counts the padding as zeros)")
        one = lambda v: str(v[0]) if rank == 1 or v[0] == v[1] else _tuple(v)      # noqa: E731
        args = [one(k)]
        if s != k:
            args.append(f"stride={one(s)}")
        if any(pads):
            args.append(f"padding={one(pads[:rank])}")
        imp._step(n, f"{kind}pool{rank}d", ", ".join(args))
    return handler


def _global_avgpool(imp: _Importer, n) -> None:
    ref = imp._canonical(n.input[0])
    rank = imp._rank(n.input[0])
    imp.vals[n.output[0]] = _Val(imp._emit("global_avgpool", "", [ref]), ("B", 0, *([None] * (rank - 2))))


def _reduce_mean(imp: _Importer, n) -> None:
    rank = imp._rank(n.input[0])
    axes = _axes_of(imp, n)
    if axes != list(range(2, rank)):
        raise _Unsupported(f"a mean over axes {axes} (only the spatial axes: global_avgpool)")
    ref = imp._canonical(n.input[0])
    keep = _attr(n, "keepdims", 1)
    imp.vals[n.output[0]] = _Val(imp._emit("global_avgpool", "", [ref]),
                                 ("B", 0, *([None] * (rank - 2))) if keep else ("B", 0))


def _batchnorm(imp: _Importer, n) -> None:
    if _attr(n, "training_mode", 0):
        raise _Unsupported("training_mode=1")
    names = ["weight", "bias", "running_mean", "running_var"]
    arrays = [imp._const(v, names[i]) for i, v in enumerate(n.input[1:5])]
    label = imp._label(n, n.input[1], n.input[3], auto="batchnorm")
    for key, a in zip(names, arrays):
        imp._put(label, key, a)
    eps = _attr(n, "epsilon", 1e-5)
    args = "" if abs(eps - 1e-5) < 1e-12 else f"eps={_num(eps)}"
    imp._step(n, "batchnorm", args, label)


def _layernorm(imp: _Importer, n) -> None:
    rank = imp._rank(n.input[0])
    if _attr(n, "axis", -1) % rank != rank - 1:
        raise _Unsupported("normalises more than the last axis")
    if any(imp.consumers.get(o) for o in n.output[1:] if o):
        raise _Unsupported("its mean or deviation is used")
    scale = imp._const(n.input[1], "weight")
    bias = imp._const(n.input[2], "bias") if len(n.input) > 2 and n.input[2] else np.zeros_like(scale)
    label = imp._label(n, n.input[1], auto="layernorm")
    imp._put(label, "weight", scale)
    imp._put(label, "bias", bias)
    eps = _attr(n, "epsilon", 1e-5)
    imp._step(n, "layernorm", "" if abs(eps - 1e-5) < 1e-12 else f"eps={_num(eps)}", label)


def _simple(op: str, check: Callable | None = None):
    def handler(imp: _Importer, n) -> None:
        args = check(imp, n) if check else ""
        imp._step(n, op, args or "")
    return handler


def _clip(imp: _Importer, n) -> None:
    lo = _attr(n, "min")
    hi = _attr(n, "max")
    if len(n.input) > 1 and n.input[1]:
        lo = float(imp._const(n.input[1], "minimum"))
    if len(n.input) > 2 and n.input[2]:
        hi = float(imp._const(n.input[2], "maximum"))
    if lo == 0 and hi == 6:
        imp._step(n, "relu6")
    elif lo == 0 and (hi is None or hi >= 3.4e38):
        imp._step(n, "relu")
    else:
        raise _Unsupported(f"clip to [{lo}, {hi}] (only relu6's [0, 6])")


def _check_attr(name: str, expected: float, default: float):
    def check(imp: _Importer, n) -> str:
        v = _attr(n, name, default)
        if abs(v - expected) > 1e-6:
            raise _Unsupported(f"{name}={v} (PyTorch's is {expected})")
        return ""
    return check


def _selu_check(imp: _Importer, n) -> str:
    _check_attr("alpha", 1.6732632423543772, 1.67326319217681884765625)(imp, n)
    _check_attr("gamma", 1.0507009873554805, 1.05070102214813232421875)(imp, n)
    return ""


def _hardsigmoid(imp: _Importer, n) -> None:
    if abs(_attr(n, "alpha", 0.2) - 1 / 6) > 1e-6 or abs(_attr(n, "beta", 0.5) - 0.5) > 1e-6:
        raise _Unsupported("alpha/beta other than PyTorch's 1/6 and 0.5")
    imp._step(n, "hardsigmoid")


def _gelu(imp: _Importer, n) -> None:
    if _attr(n, "approximate", "none") != "none":
        raise _Unsupported("the tanh approximation (nnc's gelu is the exact one)")
    imp._step(n, "gelu")


def _leaky(imp: _Importer, n) -> None:
    slope = _attr(n, "alpha", 0.01)
    imp._step(n, "leaky_relu", "" if abs(slope - 0.01) < 1e-9 else f"slope={_num(slope)}")


def _elu(imp: _Importer, n) -> None:
    alpha = _attr(n, "alpha", 1.0)
    imp._step(n, "elu", "" if alpha == 1.0 else f"alpha={_num(alpha)}")


def _prelu(imp: _Importer, n) -> None:
    slope = imp._const(n.input[1], "slope")
    c = imp._shape(n.input[0])[1] if imp._rank(n.input[0]) > 1 else None
    flat = slope.reshape(-1)
    label = imp._label(n, n.input[1], auto="prelu")
    if flat.size == 1:
        imp._put(label, "weight", flat)
        imp._step(n, "prelu", "shared=true", label)
        return
    if flat.size != c:
        raise _Unsupported(f"a slope of shape {list(slope.shape)}")
    imp._put(label, "weight", flat)
    imp._step(n, "prelu", "", label)


def _softmax(op: str):
    def handler(imp: _Importer, n) -> None:
        rank = imp._rank(n.input[0])
        axis = _attr(n, "axis", -1 if imp.opset >= 13 else 1)
        if imp.opset < 13 and axis % rank != rank - 1:
            raise _Unsupported("opset < 13 softmax over several axes")
        if axis % rank == 0:
            raise _Unsupported("over the batch axis")
        imp._step(n, op, "" if axis == -1 or axis == rank - 1 else f"axis={axis if axis < 0 else axis - 1}")
    return handler


def _merge(op: str):
    def handler(imp: _Importer, n) -> None:
        a, b = n.input[0], n.input[1]
        if a in imp.consts or b in imp.consts:
            raise _Unsupported("a constant operand (nnc merges computed values of equal shapes)")
        sa, sb = imp.shapes.get(a), imp.shapes.get(b)
        if sa and sb and len(sa) != len(sb):
            raise _Unsupported("broadcasting between different ranks")
        refs = [imp._canonical(a), imp._canonical(b)]
        imp._set(n.output[0], imp._emit(op, "", refs, merge=True), imp._rank(a) - 1)
    return handler


def _sum(imp: _Importer, n) -> None:
    refs = [imp._canonical(v) for v in n.input]
    if len(refs) == 1:
        imp.vals[n.output[0]] = imp.vals[n.input[0]]
        return
    imp._set(n.output[0], imp._emit("add", "", refs, merge=True), imp._rank(n.input[0]) - 1)


def _concat(imp: _Importer, n) -> None:
    rank = imp._rank(n.input[0])
    axis = _attr(n, "axis") % rank
    if axis == 0:
        raise _Unsupported("concatenates along the batch axis")
    refs = [imp._canonical(v) for v in n.input]
    args = "" if axis == 1 else f"axis={axis - 1}"
    imp._set(n.output[0], imp._emit("concat", args, refs, merge=True), rank - 1)


def _flatten(imp: _Importer, n) -> None:
    rank = imp._rank(n.input[0])
    if _attr(n, "axis", 1) != 1:
        raise _Unsupported(f"axis={_attr(n, 'axis', 1)} (only 1: keep the batch)")
    val = imp._value(n.input[0])
    real = [a for a in val.axes[1:] if a is not None]
    if val.axes[0] == "B" and len(real) <= 1:
        imp.vals[n.output[0]] = _Val(val.ref, ("B", *real)) if real else _Val(val.ref, val.axes[:1] + (None,))
        if real:
            return
    if rank == 2 and val.axes == ("B", 0):
        imp.vals[n.output[0]] = val
        return
    imp._step(n, "flatten", rank_out=1)


def _unit_reshape(val: _Val, src: list, dst: list, batch_one: bool) -> _Val | None:
    """The axis map after a reshape that only adds or drops unit axes, else
    None. `batch_one`: the exported batch is a static 1."""
    keep = [(a, d) for a, d in zip(val.axes, src) if not (a is None and d == 1)]
    batch_sizes = (BATCH, -1, 0, 1) if batch_one else (BATCH, -1, 0)
    out = []
    i = 0
    for d in dst:
        if i < len(keep) and (d == keep[i][1] or keep[i][0] == "B" and d in batch_sizes):
            out.append(keep[i][0])
            i += 1
        elif d == 1:
            out.append(None)
        else:
            return None
    return _Val(val.ref, tuple(out)) if i == len(keep) else None


def _reshape(imp: _Importer, n) -> None:
    target = [int(v) for v in imp._const(n.input[1], "shape").reshape(-1)]
    src_shape = imp._shape(n.input[0])
    val = imp._value(n.input[0])
    batch_axis = val.axes.index("B") if "B" in val.axes else None
    src = [BATCH if i == batch_axis else d for i, d in enumerate(src_shape)]
    allowzero = _attr(n, "allowzero", 0)
    dst = [src[i] if d == 0 and not allowzero and i < len(src) else d for i, d in enumerate(target)]
    batch_one = batch_axis is not None and src_shape[batch_axis] == 1
    mapped = _unit_reshape(val, src, dst, batch_one)
    if mapped is not None and "B" in mapped.axes:
        imp.vals[n.output[0]] = mapped
        return
    if not dst or (dst[0] not in (BATCH, -1, 0) and not (dst[0] == 1 and src_shape[0] == 1)):
        raise _Unsupported(f"reshapes the batch axis ({target})")
    rest = [d for d in dst[1:]]
    if -1 in rest and dst[0] == -1:
        raise _Unsupported(f"two unknown sizes in {target}")
    if BATCH in rest:
        raise _Unsupported(f"moves the batch into {target}")
    if len(rest) == 1:
        imp._step(n, "flatten", rank_out=1)
    else:
        imp._step(n, "reshape", _tuple(rest), rank_out=len(rest))


def _transpose(imp: _Importer, n) -> None:
    val = imp._value(n.input[0])
    perm = _attr(n, "perm", list(reversed(range(len(val.axes)))))
    imp.vals[n.output[0]] = _Val(val.ref, tuple(val.axes[p] for p in perm))


def _squeeze(imp: _Importer, n) -> None:
    val = imp._value(n.input[0])
    axes = _axes_of(imp, n)
    shape = imp._shape(n.input[0])
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    if any(val.axes[a] is not None for a in axes):
        if any(val.axes[a] == "B" for a in axes):
            raise _Unsupported("squeezes the batch axis")
        # a real axis of size 1: reshape it away in nnc
        ref = imp._canonical(n.input[0])
        rest = [d for i, d in enumerate(shape) if i not in axes][1:]
        imp._set(n.output[0], imp._emit("reshape", _tuple([d if isinstance(d, int) else -1 for d in rest]), [ref]),
                 len(rest))
        return
    imp.vals[n.output[0]] = _Val(val.ref, tuple(a for i, a in enumerate(val.axes) if i not in axes))


def _unsqueeze(imp: _Importer, n) -> None:
    val = imp._value(n.input[0])
    axes = _axes_of(imp, n)
    out = list(val.axes)
    for a in axes:
        out.insert(a, None)
    imp.vals[n.output[0]] = _Val(val.ref, tuple(out))


def _identity(imp: _Importer, n) -> None:
    imp.vals[n.output[0]] = imp._value(n.input[0])
    for o in n.output[1:]:
        if o and imp.consumers.get(o):
            raise _Unsupported("its mask is used")


def _resize(imp: _Importer, n) -> None:
    if _attr(n, "mode", "nearest") != "nearest":
        raise _Unsupported(f"mode={_attr(n, 'mode')} (only nearest)")
    shape = imp._shape(n.input[0])
    scales = None
    if len(n.input) > 2 and n.input[2] and np.asarray(imp.consts.get(n.input[2], [])).size:
        scales = [float(v) for v in imp._const(n.input[2], "scales")]
    elif len(n.input) > 3 and n.input[3]:
        sizes = imp._const(n.input[3], "sizes").tolist()
        scales = [1.0, 1.0] + [o / i for o, i in zip(sizes[2:], shape[2:])]
    if scales is None:
        raise _Unsupported("no constant scales")
    if scales[:2] != [1.0, 1.0] or any(s != int(s) or s < 1 for s in scales[2:]):
        raise _Unsupported(f"scales {scales} (only whole numbers on the spatial axes)")
    mode = _attr(n, "coordinate_transformation_mode", "half_pixel")
    nearest = _attr(n, "nearest_mode", "round_prefer_floor")
    if (mode, nearest) not in (("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
                               ("pytorch_half_pixel", "round_prefer_floor"), ("asymmetric", "round_prefer_ceil")) \
            and not (mode == "asymmetric" and nearest == "floor"):
        raise _Unsupported(f"coordinate_transformation_mode={mode}, nearest_mode={nearest}")
    ints = [int(s) for s in scales[2:]]
    imp._step(n, "upsample", str(ints[0]) if len(set(ints)) == 1 else _tuple(ints))


def _recurrent(kind: str):
    gates = 3 if kind == "gru" else 4

    def handler(imp: _Importer, n) -> None:
        if _attr(n, "direction", "forward") != "forward":
            raise _Unsupported(f"direction={_attr(n, 'direction')} (only forward)")
        if _attr(n, "layout", 0) != 0:
            raise _Unsupported("layout=1")
        if _attr(n, "clip") is not None or _attr(n, "activations") is not None:
            raise _Unsupported("custom activations or clipping")
        if kind == "gru" and not _attr(n, "linear_before_reset", 0):
            raise _Unsupported("linear_before_reset=0 (PyTorch's GRU is linear_before_reset=1)")
        if kind == "lstm" and (_attr(n, "input_forget", 0) or len(n.input) > 7 and n.input[7]):
            raise _Unsupported("peepholes or coupled gates")
        if len(n.input) > 4 and n.input[4]:
            raise _Unsupported("sequence lengths")
        for i in (5, 6):
            if len(n.input) > i and n.input[i]:
                init = imp.consts.get(n.input[i])
                if not (isinstance(init, _Zeros) or init is not None and not np.any(init)):
                    raise _Unsupported("a nonzero initial state")
        if any(imp.consumers.get(o) for o in n.output[1:] if o) or \
                any(o in {x.name for x in imp.graph.output} for o in n.output[1:] if o):
            raise _Unsupported("its final state is used")
        w = imp._const(n.input[1], "input weights")[0]
        r = imp._const(n.input[2], "recurrent weights")[0]
        hidden = _attr(n, "hidden_size", r.shape[-1])
        H = hidden
        order = [1, 0, 2] if kind == "gru" else [0, 2, 3, 1]     # torch's gates from ONNX's

        def torch_order(m):
            return np.concatenate([m[g * H:(g + 1) * H] for g in order], axis=0)

        label = imp._label(n, auto=kind)
        imp._put(label, "weight_ih_l0", torch_order(w))
        imp._put(label, "weight_hh_l0", torch_order(r))
        has_bias = len(n.input) > 3 and n.input[3]
        if has_bias:
            b = imp._const(n.input[3], "bias")[0]
            imp._put(label, "bias_ih_l0", torch_order(b[:gates * H]))
            imp._put(label, "bias_hh_l0", torch_order(b[gates * H:]))
        val = imp._value(n.input[0])
        if val.axes != (0, "B", 1):
            if val.axes == ("B", 0, 1):
                raise _Unsupported("a batch-first input (nnc expects the exporter's time-major transpose)")
            raise _Unsupported("an input that is not [T, B, F]")
        ref = imp._emit(kind, f"{hidden}" + ("" if has_bias else ", bias=false"), [val.ref], label)
        imp.vals[n.output[0]] = _Val(ref, (0, None, "B", 1))
    return handler


def _shape_op(imp: _Importer, n) -> None:
    val = imp._value(n.input[0])
    shape = imp._shape(n.input[0])
    dims = []
    for i, d in enumerate(shape):
        if val.axes[i] == "B":
            dims.append(BATCH)
        elif isinstance(d, int) and d > 0:
            dims.append(d)
        else:
            raise _Unsupported(f"the size {d} is not known when importing")
    start = _attr(n, "start", 0)
    end = _attr(n, "end", None)
    imp.consts[n.output[0]] = np.array(dims[start:end], dtype=np.int64)


def _constant_of_shape(imp: _Importer, n) -> None:
    from onnx import numpy_helper
    value = _attr(n, "value")
    v = 0.0 if value is None else float(numpy_helper.to_array(value).reshape(-1)[0])
    if n.input[0] in imp.consts and not np.any(imp.consts[n.input[0]] == BATCH):
        imp._fold(n)
        return
    if v != 0.0:
        raise _Unsupported("a constant of batch-dependent shape")
    imp.consts[n.output[0]] = ZEROS


_HANDLERS: dict[str, Callable] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_avgpool,
    "ReduceMean": _reduce_mean,
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
    "Relu": _simple("relu"),
    "Clip": _clip,
    "Sigmoid": _simple("sigmoid"),
    "Tanh": _simple("tanh"),
    "Gelu": _gelu,
    "Selu": _simple("selu", _selu_check),
    "Softplus": _simple("softplus"),
    "HardSigmoid": _hardsigmoid,
    "HardSwish": _simple("hardswish"),
    "LeakyRelu": _leaky,
    "Elu": _elu,
    "PRelu": _prelu,
    "Softmax": _softmax("softmax"),
    "LogSoftmax": _softmax("log_softmax"),
    "Add": _merge("add"),
    "Sub": _merge("sub"),
    "Mul": _merge("mul"),
    "Sum": _sum,
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Identity": _identity,
    "Dropout": _identity,
    "Resize": _resize,
    "Upsample": _resize,
    "GRU": _recurrent("gru"),
    "LSTM": _recurrent("lstm"),
    "Shape": _shape_op,
    "ConstantOfShape": _constant_of_shape,
}

