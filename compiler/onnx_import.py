"""ONNX to `.nn`: the bridge behind `nnc import` and `nnc.from_onnx`.

In:  an `.onnx` file as `torch.onnx.export` writes it (opset 13 and newer,
     the TorchScript exporter and the dynamo one).
Out: `from_onnx(path) -> (source_text, weights)`: readable `.nn` text (one
     step per line) and its weights in PyTorch's layout, keyed like
     `state_dict()`. An op nnc cannot express is one `OnnxImportError` that
     lists every such node by name and op; a file that is not ONNX is an
     `OnnxImportError` naming the file.

Hostile files are refused before anything large is allocated: every tensor
the import reads (initializers, a node's tensor attribute) must be of a
number type with sizes >= 0 and hold the bytes its shape needs (external
data only from a file inside the model's folder, read no further than it
needs), and a folded constant is sized before it is computed. One tensor
and all the constants together stay within `memory.Limits`' defaults for
one tensor and all weights (they become the weights).

How it works, in order:
1. Load the model, check its structure (a known opset, outputs, every value
   made once before it is read) and its tensors (above), and infer every
   value's shape (`onnx.shape_inference`, its data propagation only as far
   as it cannot exhaust memory; again on a copy with constant chains folded
   when sizes stay unknown). The first axis of every input is the batch: it is
   dropped (dynamic or 1). Other named input sizes become named dimensions
   (`x: [1, T]`).
2. Walk the nodes in order. A node whose inputs are all constant is folded
   with ONNX's reference evaluator (`Shape`, `Gather`, `Unsqueeze`, `Concat`
   chains feeding `Reshape` and `Pad`); `Shape` of a value knows its sizes,
   the batch as a marker that only `Reshape` may consume, a named size as a
   marker that may end a `Reshape` or cut a positional table's rows.
3. Each other node becomes a step. Every ONNX value maps to an nnc value and
   an axis map (which ONNX axis is the batch, which is nnc's axis i, which
   is a unit axis, which is a bidirectional layer's direction axis):
   `Transpose`, `Squeeze`, `Unsqueeze`, unit-only `Reshape` and the reshape
   joining the two directions change the map alone, so the time-major glue
   around ONNX `GRU`/`LSTM`/`RNN`, the unit axes of `GlobalAveragePool` and
   of `keepdims` reductions cost no step. A step that reads a value whose
   map is not plain gets an nnc `transpose` and/or `reshape` first. Values
   computed from a model input's shape alone are not "live": they fold.
   A node that reads a value nnc could not make is named too when it is
   refused whatever it reads (an op without a handler, an attribute its
   handler never takes: `_check_op`), and left out otherwise: a node nnc
   can express, or one that might have folded, is no second error.
4. Asymmetric padding (uneven `pads`, `auto_pad=SAME_*`, a zero `Pad`
   before `Conv`, a -inf `Pad` before `MaxPool`) keeps its symmetric part in
   the op and puts the rest in a `pad` step before it (edge copies for max
   pools, exact there; a transposed conv's rest is a `slice` after it).
   Exporter patterns become one step: `MatMul` + `Add` with constant weights
   (dense), `Pad` with zeros before `Conv` (its padding: `causal`, `same` or
   numbers), x * sigmoid(x) (silu), the erf form of gelu, `Unsqueeze` +
   `Concat` + `ReduceSum` (an n-ary add: `torch.stack(...).sum(0)`), `Split`
   + `Sigmoid` + `Mul` (glu), `Reshape` + `InstanceNormalization` + `Reshape`
   + `Mul` + `Add` (groupnorm), a constant table `[T, E]` added to `[B, T, E]`
   (positional), one recurrent node per layer of the same PyTorch module
   (one stacked step). Two patterns are regions checked by their function:
   nn.MultiheadAttention's self-attention (an input projection to 3E, one
   softmax, an output projection, and everything between) and the dynamo
   exporter's `GatherND` decompositions (linear upsampling, adaptive average
   pooling). The region is run on a random input with ONNX's reference
   evaluator and compared with nnc's op for each candidate setting (heads,
   causal; mode, size); no match is an error naming the region's softmax or
   GatherND. Some ops become a few steps: a one-way recurrent layer's final
   state `Y_h` is its output's last step (`select(0, -1)`; that layer ends
   its stack), a two-way layer's the forward half of its last step and the
   reverse half of its first (`[2, H]`), and the layers' states joined into
   `h_n` (a Concat along their unit axis) are reshaped rows of one concat, `LayerNormalization` over k > 1 trailing axes is a layernorm
   between two reshapes, `Mish` is softplus, tanh and a mul.
5. Labels come from the initializer names (`layer1.0.conv1.weight` ->
   `layer1.0.conv1`, `attn.in_proj_bias` -> `attn`), else from the node: its
   module path in the dynamo exporter's metadata
   (`pkg.torch.onnx.name_scopes`) or the TorchScript exporter's node name
   (`/layer1/layer1.0/conv1/Conv`, `/layers.0/self_attn/MatMul`), else the
   op's automatic label. Labels are made unique.
6. Write the text: a value gets a name only when a later step other than the
   next one reads it (`name = step`, then `name -> step`). An integer model
   input is declared `int[...]`. The text must pass `nnc check`, else the
   import is an error quoting the first diagnostic.

Weights arrive in PyTorch's layout: ONNX GRU gates z, r, h become r, z, n;
LSTM gates i, o, f, c become i, f, g, o (both directions, every layer:
`weight_ih_l1_reverse`); `MatMul` weights are transposed; attention's
projections become `in_proj_weight`, `in_proj_bias`, `out_proj.*`.
"""

from __future__ import annotations

import ast
import heapq
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .diagnostics import UserError
from .extras import require_onnx
from .memory import Limits, format_bytes
from .ops import CATALOG

BATCH = -(1 << 40)          # the batch size inside folded shape tensors: only Reshape may consume it
DIM_BASE = -(1 << 42)       # DIM_BASE - k: an input's k-th named size in folded shape tensors
UNKNOWN_BASE = -(1 << 44)   # UNKNOWN_BASE - k: the k-th size shape inference could not name (`unk__0`):
                            # a shape tensor may carry it past, nothing may compute with it
LIMITS = Limits()           # one constant at most `tensor` bytes, the file's and the folded ones at most `weights`


class OnnxImportError(UserError, ValueError):
    """The ONNX file cannot be read, or holds ops nnc cannot express (every
    such node is named in the message)."""


class _Unsupported(Exception):
    """One node cannot be expressed; the reason is shown after its name.
    `node`: the node to name instead of the one being translated (the
    softmax of an attention pattern)."""

    def __init__(self, why: str, node=None):
        super().__init__(why)
        self.node = node


class _Zeros:
    """A ConstantOfShape of zeros whose shape involves the batch (an RNN's initial state)."""


@dataclass
class _Rows:
    """`table[:T]`: the first rows of an initializer, as many as an input's named size T (a positional table)."""

    table: np.ndarray
    origin: str
    size: str           # the ONNX name of the size


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
class _Stack:
    """The step of a recurrent layer stack and what a layer must share to join it."""

    step: _Step
    settings: tuple         # (kind, hidden, bidirectional, bias, nonlinearity)
    layers: int = 0


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
    shown = _shown(name)
    try:
        model = onnx.load(name, load_external_data=False)      # read below, checked first
    except FileNotFoundError:
        raise OnnxImportError(f"no such file: `{shown}`") from None
    except IsADirectoryError:
        raise OnnxImportError(f"`{shown}` is a folder, not an ONNX file") from None
    except PermissionError:
        raise OnnxImportError(f"cannot read `{shown}`: permission denied") from None
    except Exception as e:      # noqa: BLE001 - protobuf raises several kinds on corrupt data
        detail = _shown(str(e).strip().splitlines()[0] if str(e).strip() else "")
        detail = f": {detail[:200]}" if detail and type(e).__name__ != "DecodeError" else ""
        hint = " (truncated, or not an ONNX file)" if type(e).__name__ == "DecodeError" else ""
        raise OnnxImportError(f"`{shown}` is not a readable ONNX model{hint} ({type(e).__name__}{detail})") from None
    if not model.graph.node and not model.graph.input:
        raise OnnxImportError(f"`{shown}` is not a readable ONNX model (it holds no graph)")
    _check_structure(onnx, model, shown)
    _check_tensors(model, shown, Path(name).parent)
    return _Importer(model, shown, model_name(name)).run()


def file_stem(path) -> str:
    """The NAME of `nnc import`'s NAME.nn and NAME.npz: the file name without
    `.onnx` (`resnet18-v1.7.onnx` -> `resnet18-v1.7`, `.onnx` -> `model`)."""
    stem = Path(str(path)).name
    if stem.lower().endswith(".onnx"):
        stem = stem[:-5]
    return stem.strip(".") or "model"


def model_name(path) -> str:
    """The `.nn` model's name: the file's stem made an identifier, not a keyword."""
    base = _identifier(file_stem(path))
    if not base.strip("_"):
        return "net"
    return base + "_" if base in _KEYWORDS else base


def _check_structure(onnx, model, path: str) -> None:
    """What every ONNX graph must be, checked before importing: an opset
    the installed `onnx` knows, outputs, every value made once and made
    before it is read (nodes out of order are sorted, as onnxruntime does;
    a cycle is an error). A hand-edited or truncated graph is one error
    naming the file, never a crash."""
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and opset > newest:
        raise OnnxImportError(f"`{path}` uses opset {opset}, newer than the installed onnx {onnx.__version__} knows "
                              f"({newest}): upgrade it (pip install -U onnx)")
    if not graph.output:
        raise OnnxImportError(f"`{path}` is not a valid ONNX model: its graph has no outputs")
    given = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    made = set(given)
    producer: dict[str, int] = {}
    for k, n in enumerate(graph.node):
        what = f"node `{_shown(n.name)}`" if n.name else f"node {k} ({_shown(n.op_type)})"
        for v in n.output:
            if v and v in made:
                raise OnnxImportError(f"`{path}` is not a valid ONNX model: {what} makes `{_shown(v)}` again")
            made.add(v)
            producer[v] = k
    unsorted = False
    for k, n in enumerate(graph.node):
        what = f"node `{_shown(n.name)}`" if n.name else f"node {k} ({_shown(n.op_type)})"
        for v in n.input:
            if v and v not in made:
                raise OnnxImportError(f"`{path}` is not a valid ONNX model: {what} reads `{_shown(v)}`, which no "
                                      "input, initializer or node makes")
            unsorted |= bool(v) and v not in given and producer[v] >= k
    if unsorted:        # ONNX wants nodes in order; onnxruntime sorts them itself, and so does nnc
        order = _topological(graph.node, given, producer)
        if order is None:
            raise OnnxImportError(f"`{path}` is not a valid ONNX model: its nodes form a cycle")
        nodes = [graph.node[k] for k in order]
        del graph.node[:]
        graph.node.extend(nodes)
    for o in graph.output:
        if o.name not in made:
            raise OnnxImportError(f"`{path}` is not a valid ONNX model: its output `{_shown(o.name)}` is made by "
                                  "no node")


_READ_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 16})
"""The tensor element types the import reads: float, the integers, bool, float16, double, bfloat16."""


def _check_tensors(model, path: str, folder: Path) -> None:
    """Every tensor the import reads (the initializers, a node's tensor
    attribute such as Constant's `value`) checked before it becomes an
    array: a number type, sizes >= 0, the bytes its shape needs, within
    `LIMITS` (each, and all together); external data is read here, once
    all of that holds, from a file inside the model's folder. A bad tensor
    is one `OnnxImportError` naming it."""
    total = 0
    for what, t in _graph_tensors(model.graph):
        nbytes = _tensor_bytes(t, what, path)
        if nbytes > LIMITS.tensor:
            raise OnnxImportError(f"`{path}`: {what} of shape {_dims_text(t.dims)} takes {format_bytes(nbytes)}, "
                                  f"more than the limit of {format_bytes(LIMITS.tensor)} for one tensor")
        total += nbytes
        if total > LIMITS.weights:
            raise OnnxImportError(f"`{path}`: its constants take more than the limit of "
                                  f"{format_bytes(LIMITS.weights)} for all weights ({what} brings them to "
                                  f"{format_bytes(total)})")
        if t.data_location == t.EXTERNAL:
            _read_external(t, what, nbytes, path, folder)


def _graph_tensors(graph):
    """(what, TensorProto) for each initializer and each tensor attribute of a node."""
    for t in graph.initializer:
        yield f"initializer `{_shown(t.name)}`", t
    for k, n in enumerate(graph.node):
        node = f"node `{_shown(n.name)}`" if n.name else f"node {k}"
        for a in n.attribute:
            if a.type == a.TENSOR:
                yield f"the `{_shown(a.name)}` of {node} ({_shown(n.op_type)})", a.t
            elif a.type == a.TENSORS:
                for t in a.tensors:
                    yield f"a tensor in the `{_shown(a.name)}` of {node} ({_shown(n.op_type)})", t


def _tensor_bytes(t, what: str, path: str) -> int:
    """The bytes tensor `t` holds, once checked: its type, its sizes and,
    for data in the file itself, that it is as long as they say (external
    data is checked by `_read_external`)."""
    from onnx import helper
    bad = f"`{path}` is not a valid ONNX model: {what}"
    if t.data_type not in _READ_TYPES:
        try:
            kind = f"`{t.DataType.Name(t.data_type).lower()}`"
        except ValueError:
            kind = f"number {t.data_type}"
        raise OnnxImportError(f"`{path}`: {what} holds elements of type {kind}; nnc reads numbers (float, int, "
                              "bool tensors)")
    if any(d < 0 for d in t.dims):
        raise OnnxImportError(f"{bad} has a negative size in its shape {_dims_text(t.dims)}")
    if t.HasField("segment"):
        raise OnnxImportError(f"`{path}`: {what} is a segment of a tensor, which nnc does not read")
    count = math.prod(t.dims)
    itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    nbytes = count * itemsize
    shape = f"of shape {_dims_text(t.dims)} ({t.DataType.Name(t.data_type).lower()})"
    if t.data_location == t.EXTERNAL:
        return nbytes
    if t.HasField("raw_data"):
        if len(t.raw_data) != nbytes:
            raise OnnxImportError(f"{bad} {shape} needs {nbytes:,} bytes of data, the file holds "
                                  f"{len(t.raw_data):,}")
    else:
        held = len(getattr(t, helper.tensor_dtype_to_field(t.data_type)))
        if held != count:
            raise OnnxImportError(f"{bad} {shape} needs {count:,} numbers, the file holds {held:,}")
    return nbytes


def _external_fields(t, what: str, path: str) -> tuple[str, int, int | None]:
    """(location, offset, length or None) of a tensor whose data is in another file."""
    info = {e.key: e.value for e in t.external_data}
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise OnnxImportError(f"`{path}` is not a valid ONNX model: {what} gives its external data an offset or "
                              "length that is not a number") from None
    if offset < 0 or (length is not None and length < 0):
        raise OnnxImportError(f"`{path}` is not a valid ONNX model: {what} gives its external data a negative "
                              "offset or length")
    return info.get("location", ""), offset, length


def _read_external(t, what: str, nbytes: int, path: str, folder: Path) -> None:
    """Tensor `t`'s data read in from its external file, once checked: the
    file is inside the model's folder (no absolute path, no `..` or link
    leading out) and holds the `nbytes` the tensor's shape needs from the
    offset on; only those are read."""
    location, offset, length = _external_fields(t, what, path)
    where = f"`{path}`: {what} keeps its data in `{_shown(location)}`"
    if not location:
        raise OnnxImportError(f"`{path}` is not a valid ONNX model: {what} keeps its data in another file but "
                              "names none")
    if Path(location).is_absolute() or location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        raise OnnxImportError(f"{where}, an absolute path: external data must be a file in the model's folder")
    try:
        home = folder.resolve()
        file = (folder / location).resolve()
    except (OSError, ValueError, RuntimeError):
        raise OnnxImportError(f"{where}, which is not a usable path") from None
    if not file.is_relative_to(home):
        raise OnnxImportError(f"{where}, outside the model's folder: external data must be a file in the "
                              "model's folder")
    if not file.exists():
        raise OnnxImportError(f"{where}, which does not exist (it belongs beside the model)")
    if not file.is_file():
        raise OnnxImportError(f"{where}, which is not a file")
    if length is not None and length != nbytes:
        raise OnnxImportError(f"`{path}` is not a valid ONNX model: {what} of shape {_dims_text(t.dims)} needs "
                              f"{nbytes:,} bytes of data, its external data says {length:,}")
    size = file.stat().st_size
    if offset + nbytes > size:
        held = max(size - offset, 0)
        raise OnnxImportError(f"{where}, which holds {held:,} bytes from offset {offset:,}; its shape "
                              f"{_dims_text(t.dims)} needs {nbytes:,}")
    try:
        with open(file, "rb") as f:
            f.seek(offset)
            data = f.read(nbytes)
    except OSError as e:
        raise OnnxImportError(f"`{path}`: cannot read the data of {what} from `{_shown(str(file))}` "
                              f"({e.strerror or type(e).__name__})") from None
    if len(data) != nbytes:
        raise OnnxImportError(f"`{path}`: the data of {what} in `{_shown(str(file))}` ended early")
    t.raw_data = data
    del t.external_data[:]
    t.data_location = t.DEFAULT


def _dims_text(dims) -> str:
    """A tensor's shape for a message, a long one cut short."""
    shown = ", ".join(str(d) for d in list(dims)[:8])
    return f"[{shown}{', ...' if len(dims) > 8 else ''}]"


def _topological(nodes, given: set[str], producer: dict[str, int]) -> list[int] | None:
    """The node indices in an order where each node follows those it reads
    (the file's order among ready nodes); None for a cycle."""
    waiting = [{producer[v] for v in n.input if v and v not in given} for n in nodes]
    readers: dict[int, list[int]] = {}
    for k, deps in enumerate(waiting):
        for d in deps:
            readers.setdefault(d, []).append(k)
    ready = [k for k, deps in enumerate(waiting) if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for r in readers.get(k, []):
            waiting[r].discard(k)
            if not waiting[r]:
                heapq.heappush(ready, r)
    return order if len(order) == len(nodes) else None


def _value_shapes(graph) -> dict[str, list]:
    """Each value's shape as ONNX records it: ints, dimension names, None."""
    shapes = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return shapes


_PROPAGATING = frozenset({"Add", "Sub", "Mul", "Cast", "Concat", "Gather", "Slice", "Squeeze", "Unsqueeze"})
"""The ops whose values ONNX's data propagation computes (besides Shape and Size, which read only a rank)."""
_PROBE_BYTES = 256 << 20    # the largest random input a pattern is checked on
_PROPAGATED = 1 << 16       # the longest 1-D value data propagation may read (onnx spends ~140 bytes an element)
_BARE = 4096                # initializers of more elements are only a shape to inference (never a shape tensor)


def _inferred(model) -> None:
    """Fills in the shapes ONNX infers for `model`'s values (its value_info
    and outputs), with data propagation (sizes computed by shape arithmetic)
    as far as it is safe. onnx spends ~140 bytes on each element of a 1-D
    value of known length that a propagating op reads, so a ConstantOfShape
    of [10**12] feeding a Cast would exhaust memory: a node that may read a
    1-D value longer than `_PROPAGATED` (so ONNX's plain inference, which is
    safe, tells) is checked on a propagation of the nodes before it, and the
    propagation stops before the first that would. Inference sees the
    initializers of more than `_BARE` elements as inputs of their shape,
    without their data. Raises what onnx raises."""
    from onnx import shape_inference
    bare = _bare(model)
    plain = shape_inference.infer_shapes(bare)
    nodes = list(bare.graph.node)
    shapes = _inferred_shapes(plain.graph)
    risky = [k for k, n in enumerate(nodes) if n.op_type in _PROPAGATING and n.domain in ("", "ai.onnx")
             and not all(_short(shapes.get(v)) for v in n.input if v)]
    end, checked = len(nodes), set()
    for k in risky:
        if k in checked:
            continue
        shapes = _inferred_shapes(shape_inference.infer_shapes(_first_nodes(bare, k), data_prop=True).graph)
        made = set(shapes) | {v for n in nodes[:k] for v in n.output}
        for j in (j for j in risky if j >= k and j not in checked):
            ins = [v for v in nodes[j].input if v]
            if all(v in made for v in ins):
                if any(_long(shapes.get(v)) for v in ins):
                    end = j         # reads a long 1-D value: no propagation from here on
                    break
                checked.add(j)
        if end < len(nodes):
            break
    if end == len(nodes):
        done = shape_inference.infer_shapes(bare, data_prop=True).graph
        infos, outputs = list(done.value_info), list(done.output)
    else:
        first = shape_inference.infer_shapes(_first_nodes(bare, end), data_prop=True).graph
        propagated = {vi.name: vi for vi in first.value_info}
        infos = list({**{vi.name: vi for vi in plain.graph.value_info}, **propagated}.values())
        outputs = [propagated.get(o.name, o) for o in plain.graph.output]
    given = _names(model.graph.input) | _names(model.graph.output)
    del model.graph.value_info[:]
    model.graph.value_info.extend(vi for vi in infos if vi.name not in given)
    for o, inferred in zip(model.graph.output, outputs):
        o.type.CopyFrom(inferred.type)


def _names(values) -> set[str]:
    return {v.name for v in values}


def _short(shape) -> bool:
    """A value shape inference knows is not a long 1-D one (rank known, not 1, or length at most `_PROPAGATED`)."""
    return shape is not None and (len(shape) != 1 or isinstance(shape[0], int) and shape[0] <= _PROPAGATED)


def _long(shape) -> bool:
    """A 1-D value longer than `_PROPAGATED`."""
    return shape is not None and len(shape) == 1 and isinstance(shape[0], int) and shape[0] > _PROPAGATED


def _inferred_shapes(graph) -> dict[str, list]:
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    shapes.update(_value_shapes(graph))
    return shapes


def _bare(model):
    """A copy of `model` for shape inference: its initializers of more than
    `_BARE` elements are inputs of their type and shape, without data."""
    from onnx import helper
    g = model.graph
    big = [t for t in g.initializer if math.prod(t.dims) > _BARE]
    declared = _names(g.input)
    inputs = [*g.input, *(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big
                          if t.name not in declared)]
    small = [t for t in g.initializer if math.prod(t.dims) <= _BARE]
    graph = helper.make_graph(g.node, g.name, inputs, g.output, small, value_info=g.value_info)
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version,
                             functions=model.functions)


def _first_nodes(bare, k: int):
    """`bare` cut to its first `k` nodes (what the outputs declare kept as value_info)."""
    from onnx import helper
    g = bare.graph
    graph = helper.make_graph(g.node[:k], g.name, g.input, [], g.initializer, value_info=[*g.value_info, *g.output])
    return helper.make_model(graph, opset_imports=bare.opset_import, ir_version=bare.ir_version,
                             functions=bare.functions)


def _shapes_after_folding(model) -> dict[str, list]:
    """The value shapes ONNX infers once every node of constant inputs is
    replaced by its value: the TorchScript exporter computes `F.pad`'s
    amounts with ConstantOfShape, Concat, Slice... chains that ONNX's shape
    inference does not see through, and every size after such a Pad would
    be unknown. Best effort: {} when anything fails."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    try:
        graph = model.graph
        inits = {i.name: i for i in graph.initializer}
        values: dict[str, np.ndarray] = {}
        inputs = {i.name for i in graph.input} - set(inits)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        made, kept = [], []
        spent = 0       # the bytes of the folded values (LIMITS.weights)
        for n in graph.node:
            ins = [v for v in n.input if v]
            if n.op_type in _NEVER_FOLD - {"ConstantOfShape"} or \
                    any(v in inputs or (v not in inits and v not in values) for v in ins) or \
                    (not ins and n.op_type != "Constant") or any(a.type == a.GRAPH for a in n.attribute):
                kept.append(n)
                inputs.update(o for o in n.output if o)
                continue
            feeds = {v: values[v] if v in values else numpy_helper.to_array(inits[v]) for v in ins}
            try:
                size = _fold_size(n, feeds, opset) if n.op_type != "Constant" else None
                if size is None and n.op_type in _GROWING or size and _too_big(*size, spent):
                    raise ValueError("too large to fold, or of a size unknown before it is made")
                outs = [np.asarray(value) for value in ReferenceEvaluator(n).run(None, feeds)]
                if any(_too_big(value.shape, value.nbytes, spent) for value in outs):
                    raise ValueError("too large to fold")
            except Exception:       # noqa: BLE001 - not foldable: kept as a node
                kept.append(n)
                inputs.update(o for o in n.output if o)
                continue
            for name, value in zip(n.output, outs):
                values[name] = value
                spent += value.nbytes
                made.append(numpy_helper.from_array(values[name], name))
        if not made:
            return {}
        g = helper.make_graph(kept, graph.name, graph.input, graph.output, [*graph.initializer, *made])
        folded = helper.make_model(g, opset_imports=model.opset_import, ir_version=model.ir_version)
        _inferred(folded)
        return _value_shapes(folded.graph)
    except Exception:       # noqa: BLE001 - best effort: the first inference's shapes stay
        return {}


_GROWING = frozenset({"Expand", "ConstantOfShape", "Tile", "Range", "Pad", "Resize", "Upsample", "OneHot",
                      "ConvTranspose", "MaxUnpool", "CenterCropPad", "Col2Im", "DFT", "STFT", "MelWeightMatrix",
                      "HannWindow", "HammingWindow", "BlackmanWindow"})
"""Ops whose result's size is set by an input's values or an attribute, not
by their inputs' sizes: folded only when that size is known beforehand."""


def _fold_size(n, feeds: dict[str, Any], opset: int) -> tuple[list[int], int] | None:
    """The shape and bytes of the largest result of folding node `n` on
    `feeds`, known before computing it (ONNX's shape inference, given the
    values of the small inputs; Range's count directly); None when they
    cannot be told."""
    from onnx import defs, helper, numpy_helper, shape_inference
    if n.op_type == "Range":
        try:
            start, limit, delta = (np.asarray(feeds[v]) for v in n.input)
        except (KeyError, ValueError):
            return None
        count = _range_count(start, limit, delta)
        return None if count is None else ([count], count * start.dtype.itemsize)
    try:
        schema = defs.get_schema(n.op_type, opset, n.domain)
        types, data = {}, {}
        for v, x in feeds.items():
            x = np.asarray(x)
            types[v] = helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
            if x.size <= _BARE:
                data[v] = numpy_helper.from_array(x, v)
        outs = shape_inference.infer_node_outputs(schema, n, types, data)
    except Exception:       # noqa: BLE001 - shape inference raises several kinds: the size is unknown
        return None
    largest = None
    for o in n.output:
        t = outs[o].tensor_type if o in outs else None
        if t is None or not t.HasField("shape") or not all(d.HasField("dim_value") and d.dim_value >= 0
                                                           for d in t.shape.dim):
            return None
        shape = [d.dim_value for d in t.shape.dim]
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 8
        nbytes = math.prod(shape) * itemsize
        if largest is None or nbytes > largest[1]:
            largest = (shape, nbytes)
    return largest


def _range_count(start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> int | None:
    """The length of Range(start, limit, delta), without making it; None when it has none."""
    try:
        s, lim, d = (x.reshape(-1)[0] for x in (start, limit, delta))
        if all(x.dtype.kind in "iu" for x in (start, limit, delta)):
            s, lim, d = int(s), int(lim), int(d)
            return max(-((s - lim) // d), 0)
        return max(math.ceil((float(lim) - float(s)) / float(d)), 0)
    except (ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError, AttributeError):
        return None


def _too_big(shape, nbytes: int, folded: int) -> str | None:
    """Why a folded value of `shape` and `nbytes` may not be made when the
    folded ones so far take `folded` bytes: past `LIMITS`; None when it fits."""
    if nbytes > LIMITS.tensor:
        return (f"its result of shape {_dims_text(shape)} would take {format_bytes(nbytes)}, more than the limit "
                f"of {format_bytes(LIMITS.tensor)} for one tensor")
    if folded + nbytes > LIMITS.weights:
        return (f"its result of shape {_dims_text(shape)} ({format_bytes(nbytes)}) would bring the folded "
                f"constants to more than the limit of {format_bytes(LIMITS.weights)} for all weights")
    return None


def _shown(text: str) -> str:
    """A name from the file as one printable line (`\\n` for a line break)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def _identifier(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", text)
    if s and s[0].isdigit():
        s = "m_" + s
    return s


_KEYWORDS = {"model", "block", "return", "true", "false", "same", "valid", "causal"}
_LABEL_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*$")


def _valid_label(text: str) -> bool:
    return bool(text) and bool(_LABEL_RE.match(text)) \
        and not any(part in _KEYWORDS for part in text.split("."))


class _Importer:
    def __init__(self, model, path: str, name: str):
        import onnx
        from onnx import numpy_helper
        self.onnx = onnx
        self.path = path
        self.name = name
        try:
            _inferred(model)
        except Exception:       # noqa: BLE001 - best effort: the values' own shapes stay
            pass
        self.graph = model.graph
        self.opset_imports = list(model.opset_import)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.consts: dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.origin: dict[str, str] = {k: k for k in self.consts}      # const -> the initializer it came from
        self.reserved = {_param_base(k) for k in self.consts} - {""}     # labels the initializers give
        self.shapes: dict[str, list] = _value_shapes(self.graph)
        if any(not all(isinstance(d, int) for d in shape[1:]) for shape in self.shapes.values()):
            for name, shape in _shapes_after_folding(model).items():     # sizes hidden behind constant chains
                old = self.shapes.get(name)
                if old is None or len(old) != len(shape):
                    self.shapes[name] = shape
                else:
                    self.shapes[name] = [a if isinstance(a, int) or not isinstance(b, int) else b
                                         for a, b in zip(old, shape)]
        self.vals: dict[str, _Val] = {}
        self.failed: set[str] = set()
        self.problems: list[tuple[str, str, str]] = []
        self.steps: list[_Step] = []
        self.labels: set[str] = set()
        self.auto: dict[str, int] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.folded = 0                             # the bytes of the constants folding made (LIMITS.weights)
        self.consumers: dict[str, list] = {}
        for n in self.graph.node:
            for v in n.input:
                if v:
                    self.consumers.setdefault(v, []).append(n)
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.patterns: dict[int, _Pattern] = {}
        self.absorbed: set[int] = set()
        self.materialized: dict[str, str] = {}
        self.inputs: list[tuple[str, list, bool]] = []
        self.outputs = {o.name for o in self.graph.output}
        self.live = self._liveness()
        self.table_origin: dict[str, str] = {}      # a folded Slice [0:k] of an initializer's rows -> that initializer
        self.stacks: dict[int, _Stack] = {}        # an ONNX GRU/LSTM/RNN node -> the stacked step it went into
        self.dim_names: dict[Any, str] = {}         # an input's ONNX size name -> its nnc name
        self.dim_markers: dict[int, str] = {}       # DIM_BASE - k -> the k-th ONNX size name (in folded shapes)
        self.unknown_sizes: dict[int, str] = {}     # UNKNOWN_BASE - k -> an unnamed size, for messages
        self.bounds: dict[str, int] = {}            # an nnc size name -> its bound (a positional table's rows)

    # ------------------------------------------------------------------ driver

    def run(self) -> tuple[str, dict[str, np.ndarray]]:
        init_names = set(self.consts)
        for i in self.graph.input:
            if i.name in init_names:
                continue
            shape = self.shapes.get(i.name)
            if not shape or len(shape) < 2:
                raise OnnxImportError(f"`{self.path}`: input `{_shown(i.name)}` needs a batch axis and at least "
                                      "one more")
            vname = self._value_name(i.name)
            integer = i.type.tensor_type.elem_type in _INTEGER_TYPES
            if 0 in shape[1:]:
                raise OnnxImportError(f"`{self.path}`: input `{_shown(i.name)}` of shape {shape} is empty (an axis "
                                      "of size 0)")
            dims = []
            for d in shape[1:]:
                if isinstance(d, int) and d > 0:
                    dims.append(d)
                else:
                    dims.append(self._dim_name(d, vname))
            self.inputs.append((vname, dims, integer))
            self.vals[i.name] = _Val(vname, ("B", *range(len(shape) - 1)))
        self.labels.update(v for v, _, _ in self.inputs)       # a step's label is never an input's name
        self._find_patterns()
        for n in self.graph.node:
            self._node(n)
        outputs = []
        for o in self.graph.output:
            if o.name in self.failed:
                continue
            p = self.producer.get(o.name)
            op = p.op_type if p is not None else "output"      # the node that made the output, to name
            if o.name not in self.vals:
                if p is not None and o.name not in self.consts and o.name != p.output[0]:
                    k = list(p.output).index(o.name) + 1
                    self.problems.append((o.name, op, f"its output {k} (nnc computes only the first)"))
                else:
                    self.problems.append((o.name, op, "the model's output is a constant"))
                continue
            try:
                outputs.append(self._canonical(o.name, drop_units=True))
            except _Unsupported as e:
                self.problems.append((o.name, op, str(e)))
        if self.problems:
            listed = "; ".join(f"`{_shown(name)}` ({_shown(op)}{': ' + _shown(why) if why else ''})"
                               for name, op, why in self.problems)
            n = len(self.problems)
            raise OnnxImportError(f"`{self.path}` has {n} node{'s' if n > 1 else ''} nnc cannot express: {listed}")
        text = self._text(outputs)
        self._check(text)
        return text, self.weights

    def _check(self, text: str) -> None:
        """The written model must pass `nnc check`: an error here rather than
        a `.nn` the user cannot compile. An input with two sizes named only at
        run time is the common cause (nnc plans sizes linear in one name)."""
        from .diagnostics import CompileError
        from .frontend import check
        for v, dims, _ in self.inputs:
            named = [d for d in dims if isinstance(d, str)]
            if len(named) > 1:
                onnx_names = {n: k for k, n in self.dim_names.items() if isinstance(k, str)}
                shown = ", ".join(f"`{_shown(onnx_names.get(d, d))}`" for d in named)
                raise OnnxImportError(f"`{self.path}`: input `{v}` has {len(named)} sizes known only at run time "
                                      f"({shown}); nnc plans at most one named size per tensor: export the model "
                                      "with fixed sizes for all but one (torch.onnx.export without those "
                                      "dynamic_axes / dynamic_shapes)")
        try:
            check(text)
        except CompileError as e:
            first = next((d for d in e.diagnostics if d.severity.name.lower() == "error"), None)
            what = first.message if first else str(e)
            if first and first.line:
                what = f"line {first.line}: {what}"
            raise OnnxImportError(f"`{self.path}`: the imported model does not pass `nnc check` ({what})") from None

    def _node(self, n) -> None:
        key = id(n)
        if key in self.absorbed:
            return
        ins = [v for v in n.input if v]
        pattern = self.patterns.get(key)
        outputs = list(n.output)
        if pattern is not None:
            inside = [m for m in self.graph.node if id(m) in pattern.absorbed]
            outputs += [o for m in inside for o in m.output]
            ins += [v for m in inside for v in m.input if v]
        blocked = any(v in self.failed for v in ins)      # reads a value nnc could not make
        if blocked:
            self.failed.update(outputs)
        try:
            if n.domain not in ("", "ai.onnx"):
                raise _Unsupported(f"an op of the `{n.domain}` domain (nnc reads the standard ONNX ops)")
            if blocked:     # named only if refused whatever it reads; a pattern or a fold needs its inputs
                if pattern is None and self._translated(n, ins):
                    _check_op(self, n)
            elif pattern is not None:
                self._pattern(pattern)
            elif self._translated(n, ins):
                _check_op(self, n)
                _HANDLERS[n.op_type](self, n)
            else:
                self._fold(n)
        except _Unsupported as e:
            at = e.node or n
            self.problems.append((at.name or next((o for o in at.output if o), ""), at.op_type, str(e)))
            self.failed.update(outputs)

    def _translated(self, n, ins: list[str]) -> bool:
        """Whether the node becomes steps rather than being folded (folding
        needs every input constant). An input that failed counts as one that
        might have been constant unless it is live: the node might have
        folded, so nothing is said about it."""
        if n.op_type in _NEVER_FOLD or not ins and n.op_type != "Constant":
            return True
        return any(v in self.live if v in self.failed else v not in self.consts for v in ins)

    def _liveness(self) -> set[str]:
        """The values that depend on a model input through more than its
        shape: what a step must compute. `Shape` (and what is made from it)
        is not live; it folds."""
        live = {i.name for i in self.graph.input if i.name not in self.consts}
        for n in self.graph.node:
            if n.op_type in ("Shape", "Size", "ConstantOfShape"):
                continue
            if any(v in live for v in n.input if v):
                live.update(o for o in n.output if o)
        return live

    def _fold(self, n) -> None:
        from onnx.reference import ReferenceEvaluator
        inputs = [self.consts[v] if v else None for v in n.input]
        size = next((m for m in map(self._marked, inputs) if m), None)
        if size is not None:        # a named size: it may move through shape tensors, or cut a table's rows
            if n.op_type == "Slice" and size in self.dim_names and not self._marked(inputs[0]) and \
                    n.input[0] in self.origin and \
                    np.ndim(inputs[0]) == 2 and self._rows_from_zero(n, marked=True):
                self.consts[n.output[0]] = _Rows(inputs[0], self.origin[n.input[0]], size)
                return
            if n.op_type not in _SHAPE_MOVES:
                raise _Unsupported(f"computes with the size `{size}` of an input, known only when the model runs")
        if n.op_type == "Expand" and isinstance(inputs[1], np.ndarray) and np.any(inputs[1] == BATCH):
            if isinstance(inputs[0], _Zeros) or isinstance(inputs[0], np.ndarray) and not np.any(inputs[0]):
                self.consts[n.output[0]] = ZEROS      # the TorchScript exporter's zero state: zeros expanded to [.., B, H]
                return
            raise _Unsupported("a constant of batch-dependent shape")
        if any(isinstance(x, _Zeros) for x in inputs):
            if n.op_type in _ZEROS_KEEP and isinstance(inputs[0], _Zeros) and \
                    (n.op_type != "Concat" or all(isinstance(x, _Zeros) for x in inputs)):
                for o in n.output:
                    self.consts[o] = ZEROS
                return
            raise _Unsupported("reads the zero state of a recurrent layer")
        attr = n.attribute[0] if n.op_type == "Constant" and n.attribute else None
        if attr is not None and attr.type not in (attr.TENSOR, attr.FLOAT, attr.FLOATS, attr.INT, attr.INTS):
            raise _Unsupported("a constant that is not numbers (text, or a sparse tensor)")
        feeds = {v: x for v, x in zip(n.input, inputs) if v}
        if n.op_type not in ("Constant", "Identity"):      # sized before it is made
            size = _fold_size(n, feeds, self.opset)
            if size is None and n.op_type in _GROWING:
                raise _Unsupported("cannot fold its constant inputs: the size of its result is not known before "
                                   "computing it")
            why = size and _too_big(*size, self.folded)
            if why:
                self._refuse_fold(n, why)
        try:
            if n.op_type == "Constant":
                from onnx import helper, numpy_helper
                attr = n.attribute[0]
                value = helper.get_attribute_value(attr)
                out = [numpy_helper.to_array(value) if attr.type == attr.TENSOR else np.array(value)]
            elif n.op_type == "Identity":
                out = [inputs[0]]
            else:
                out = ReferenceEvaluator(n).run(None, feeds)
        except Exception as e:      # noqa: BLE001 - the evaluator raises anything
            raise _Unsupported(f"cannot fold its constant inputs: {type(e).__name__}") from None
        out = [np.asarray(value) for value in out]
        made = n.op_type not in ("Constant", "Identity")      # a Constant's tensor was checked with the file's
        for value in out if made else []:
            why = _too_big(value.shape, value.nbytes, self.folded)
            if why:
                self._refuse_fold(n, why)
        for name, value in zip(n.output, out):
            self.consts[name] = value
            self.folded += value.nbytes if made else 0
        if n.op_type == "Identity" and _param_base(n.output[0]):
            self.origin[n.output[0]] = n.output[0]      # the TorchScript exporter's alias of an equal tensor
        elif n.op_type in ("Identity", "Transpose", "Cast", "Reshape", "Squeeze", "Unsqueeze") and \
                n.input[0] in self.origin:
            self.origin[n.output[0]] = self.origin[n.input[0]]
        elif n.op_type == "Slice" and n.input[0] in self.origin and self._rows_from_zero(n):
            self.table_origin[n.output[0]] = self.origin[n.input[0]]

    def _refuse_fold(self, n, why: str):
        node = f"`{_shown(n.name)}`" if n.name else f"making `{_shown(next((o for o in n.output if o), ''))}`"
        raise OnnxImportError(f"`{self.path}`: cannot fold the constant node {node} ({_shown(n.op_type)}): {why}")

    def _rows_from_zero(self, n, marked: bool = False) -> bool:
        """A Slice taking rows 0..k of axis 0 with step 1 (`table[:T]`);
        `marked`: k is an input's named size."""
        try:
            starts, ends = (self.consts[v].reshape(-1) for v in n.input[1:3])
            axes = self.consts[n.input[3]].reshape(-1) if len(n.input) > 3 and n.input[3] else [0]
            steps = self.consts[n.input[4]].reshape(-1) if len(n.input) > 4 and n.input[4] else [1]
        except (KeyError, AttributeError, ValueError):
            return False
        if len(starts) != 1 or list(axes) != [0] or int(starts[0]) != 0 or int(steps[0]) != 1:
            return False
        return int(ends[0]) <= DIM_BASE if marked else int(ends[0]) > 0

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
        if "D" in axes:
            raise _Unsupported("reads the two directions of a bidirectional recurrent layer apart")
        if "B" not in axes:
            raise _Unsupported("its batch axis was merged away")
        if axes[0] != "B":
            raise _Unsupported("reads a value whose batch axis is not first (nnc computes batch-first values)")
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
            base = _param_base(origin)
            if base:
                return self._unique(base)
        scope = _module_path(n)
        if scope and _valid_label(scope):
            return self._unique(scope)
        k = self.auto.get(auto, 0)
        while f"{auto}_{k}" in self.labels or f"{auto}_{k}" in self.reserved:
            k += 1
        self.auto[auto] = k + 1
        return self._unique(f"{auto}_{k}")

    def _unique(self, label: str) -> str:
        """`label`, or `label_1`, `label_2`... when taken; never the label
        an initializer's name gives another step (its state_dict key)."""
        if label not in self.labels:
            self.labels.add(label)
            return label
        # a label's segments are names or numbers: `mods.0` goes on as `mods.0._1` (`mods.0_1` is neither)
        more = f"{label}._" if label.rpartition(".")[2].isdigit() else f"{label}_"
        k = 1
        while f"{more}{k}" in self.labels or f"{more}{k}" in self.reserved:
            k += 1
        self.labels.add(f"{more}{k}")
        return f"{more}{k}"

    def _put(self, label: str, name: str, array) -> None:
        if np.asarray(array).dtype.kind in "OSUc":        # text, objects, complex: not weights
            raise _Unsupported(f"its weights `{_shown(name)}` are not numbers ({np.asarray(array).dtype})")
        self.weights[f"{label}.{name}"] = np.ascontiguousarray(np.asarray(array, dtype=np.float32))

    # ------------------------------------------------------------------ patterns

    def _find_patterns(self) -> None:
        nodes = list(self.graph.node)
        for n in nodes:             # regions first: they hold nodes the patterns below would take
            if n.op_type == "Softmax":
                self._attention_pattern(n)
        for n in nodes:
            if n.op_type == "GatherND":
                self._resample_pattern(n)
            elif n.op_type == "InstanceNormalization":
                self._groupnorm_pattern(n)
        for n in nodes:
            if id(n) in self.absorbed or id(n) in self.patterns:
                continue
            if n.op_type == "Split":
                self._glu_pattern(n)
            elif n.op_type == "Pad":
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
        """A constant Pad read only by Conv nodes (zeros: their padding) or
        only by MaxPool nodes (-inf, as timm's `MaxPool2dSame` pads: theirs);
        a Pad with another value is emitted as its own step when they are."""
        users = self.consumers.get(n.output[0], [])
        if _attr(n, "mode", "constant") != "constant" or n.output[0] in self.outputs or not users or \
                any(u.input[0] != n.output[0] or id(u) in self.patterns for u in users):
            return
        for op, kind in (("Conv", "conv"), ("MaxPool", "maxpool")):
            if all(u.op_type == op for u in users):
                for u in users:
                    self.patterns[id(u)] = _Pattern(u, kind=kind, data={"pad": n})
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

    # ------------------------------------------------------------------ regions

    def _next(self, value: str):
        """The one reader of `value` other than `Shape` nodes, else None."""
        users = [c for c in self.consumers.get(value, []) if c.op_type != "Shape"]
        return users[0] if len(users) == 1 and value not in self.outputs else None

    def _is_projection(self, n) -> bool:
        """A MatMul/Gemm of a computed value by a constant matrix (a linear layer)."""
        if n.op_type not in ("MatMul", "Gemm") or len(n.input) < 2 or n.input[0] not in self.live:
            return False
        if n.op_type == "Gemm" and _attr(n, "transA", 0):
            return False
        w = n.input[1]
        return w not in self.live and self._is_initializer_chain(w) and len(self._static_shape(w) or ()) == 2

    def _static_shape(self, name: str) -> tuple | None:
        if name in self.consts and not isinstance(self.consts[name], _Zeros):
            return tuple(self.consts[name].shape)
        shape = self.shapes.get(name)
        return tuple(shape) if shape and all(isinstance(d, int) and d > 0 for d in shape) else None

    def _fan(self, n) -> tuple[int, int]:
        """(inputs, outputs) of a projection."""
        a, b = self._static_shape(n.input[1])
        return (b, a) if n.op_type == "Gemm" and _attr(n, "transB", 0) else (a, b)

    def _projections(self, start, backward: bool) -> list | None:
        """The projections met first walking the computed values from `start`
        (against or along the data flow); None when the walk reaches a model
        input or output first."""
        found, seen, stack = [], {id(start)}, [start]
        while stack:
            n = stack.pop()
            if len(seen) > 800:
                return None
            if backward:
                nxt = [self.producer.get(v) for v in n.input if v and v in self.live]
                if any(m is None for m in nxt):
                    return None
            else:
                if any(o in self.outputs for o in n.output):
                    return None
                nxt = [c for o in n.output if o in self.live for c in self.consumers.get(o, [])]
            for m in nxt:
                if id(m) not in seen:
                    seen.add(id(m))
                    (found if self._is_projection(m) else stack).append(m)
        return found

    def _between(self, x: str, y: str) -> set[int]:
        """The nodes on a path from value `x` to value `y` (every input, Shape ones too)."""
        anc: set[int] = set()
        stack = [y]
        while stack:
            v = stack.pop()
            p = self.producer.get(v)
            if v == x or p is None or id(p) in anc:
                continue
            anc.add(id(p))
            stack.extend(i for i in p.input if i)
        desc: set[int] = set()
        stack = [x]
        while stack:
            for c in self.consumers.get(stack.pop(), []):
                if id(c) not in desc and id(c) in anc:
                    desc.add(id(c))
                    stack.extend(o for o in c.output if o)
        return desc

    def _sealed(self, ids: set[int], y: str) -> bool:
        """No value made inside the region but `y` is read outside it."""
        for n in self.graph.node:
            if id(n) in ids:
                for o in n.output:
                    if o and o != y and (o in self.outputs or any(id(c) not in ids for c in self.consumers.get(o, []))):
                        return False
        return True

    def _same_shape(self, a: str, b: str) -> bool:
        sa, sb = self.shapes.get(a), self.shapes.get(b)
        return bool(sa) and sa == sb and all(d for d in sa)

    def _attention_pattern(self, sm) -> None:
        """nn.MultiheadAttention's self-attention as the exporters write it:
        one input projection to 3E, a softmax, one output projection, and the
        reshapes and transposes between them. The region is found here by its
        projections; its function is checked numerically when it is emitted."""
        if id(sm) in self.absorbed or sm.output[0] not in self.live:
            return
        ins, outs = self._projections(sm, True), self._projections(sm, False)
        if not ins or not outs or len(ins) != 1 or len(outs) != 1:
            return
        pin, pout = ins[0], outs[0]
        e, three_e = self._fan(pin)
        if three_e != 3 * e or self._fan(pout) != (e, e):
            return
        v, bias_add = pout.output[0], None
        nxt = self._next(v)
        if pout.op_type == "MatMul" and nxt is not None and nxt.op_type == "Add":
            other = nxt.input[1] if nxt.input[0] == v else nxt.input[0]
            if other not in self.live and self._is_initializer_chain(other):
                bias_add, v = nxt, nxt.output[0]
        chain = [v]
        while v not in self.outputs:
            c = self._next(v)
            if c is None or c.op_type not in _LAYOUT_OPS:
                break
            v = c.output[0]
            chain.append(v)
        xs = [pin.input[0]]
        while True:
            p = self.producer.get(xs[-1])
            if p is None or p.op_type not in ("Transpose", "Identity") or xs[-1] in self.outputs:
                break
            xs.append(p.input[0])
        for x in reversed(xs):
            for y in reversed(chain):
                if not self._same_shape(x, y) or len(self.shapes[x]) != 3:
                    continue
                ids = self._between(x, y)
                inside = [n for n in self.graph.node if id(n) in ids]
                if {id(pin), id(pout), id(sm)} <= ids and self._sealed(ids, y) and \
                        sum(n.op_type == "Softmax" for n in inside) == 1 and \
                        sum(self._is_projection(n) for n in inside) == 2 and \
                        not any(id(n) in self.absorbed or id(n) in self.patterns for n in inside):
                    root = self.producer[y]
                    self.patterns[id(root)] = _Pattern(root, ids - {id(root)}, "attention", {
                        "x": x, "y": y, "nodes": inside, "in": pin, "out": pout, "out_add": bias_add, "softmax": sm})
                    self.absorbed.update(ids - {id(root)})
                    return

    def _resample_pattern(self, g) -> None:
        """The dynamo exporter's GatherND decompositions (linear upsampling,
        adaptive average pooling with uneven bins): the region from the
        gathered value to the first single value of a resampled shape; its
        function is checked numerically when it is emitted."""
        if id(g) in self.absorbed or g.input[0] not in self.live or g.input[1] in self.live:
            return
        x, ids = g.input[0], {id(g)}
        while x not in self.outputs:
            p = self.producer.get(x)
            if p is None or p.op_type not in _LAYOUT_OPS or id(p) in self.absorbed:
                break
            ids.add(id(p))
            x = p.input[0]
        sx = self.shapes.get(x)
        if not sx or len(sx) not in (3, 4):
            return
        for _ in range(64):
            inside = [n for n in self.graph.node if id(n) in ids]
            made = {o for n in inside for o in n.output if o}
            frontier = [o for o in made
                        if o in self.outputs or any(id(c) not in ids for c in self.consumers.get(o, []))]
            if len(frontier) == 1 and _resampled(sx, self.shapes.get(frontier[0])) and self._sealed(ids, frontier[0]):
                y = frontier[0]
                root = self.producer[y]
                self.patterns[id(root)] = _Pattern(root, ids - {id(root)}, "resample",
                                                   {"x": x, "y": y, "nodes": inside})
                self.absorbed.update(ids - {id(root)})
                return
            grow = {id(c): c for o in frontier for c in self.consumers.get(o, [])
                    if id(c) not in ids and id(c) not in self.absorbed and any(out in self.live for out in c.output)
                    and all(i in made or i == x or i not in self.live for i in c.input if i)}
            if not grow or len(ids) + len(grow) > 60:
                return
            ids.update(grow)

    def _groupnorm_pattern(self, inn) -> None:
        """nn.GroupNorm as both exporters write it: Reshape to [B, G, -1],
        InstanceNormalization, Reshape back, Mul by the weight, Add the bias."""
        r1 = self.producer.get(inn.input[0])
        if r1 is None or r1.op_type != "Reshape" or self._only_user(r1.output[0]) is not inn:
            return
        r2 = self._only_user(inn.output[0])
        if r2 is None or r2.op_type != "Reshape" or id(r2) in self.absorbed:
            return
        nodes, mul, add = [r1, inn, r2], None, None
        m = self._only_user(r2.output[0])
        if m is not None and m.op_type == "Mul" and \
                any(v not in self.live and self._is_initializer_chain(v) for v in m.input):
            nodes.append(m)
            mul = m
            a = self._only_user(m.output[0])
            if a is not None and a.op_type == "Add" and \
                    any(v not in self.live and self._is_initializer_chain(v) for v in a.input):
                nodes.append(a)
                add = a
        root = nodes[-1]
        self.patterns[id(root)] = _Pattern(root, {id(n) for n in nodes[:-1]}, "groupnorm",
                                           {"reshape": r1, "norm": inn, "mul": mul, "add": add})
        self.absorbed.update(id(n) for n in nodes[:-1])

    def _glu_pattern(self, split) -> None:
        """F.glu: Split in two halves, the first times the sigmoid of the second."""
        outs = [o for o in split.output]
        if len(outs) != 2:
            return
        a, b = outs
        sig, mul = self._only_user(b), self._only_user(a)
        if sig is None or sig.op_type != "Sigmoid" or mul is None or mul.op_type != "Mul" or \
                self._only_user(sig.output[0]) is not mul or sorted(mul.input) != sorted([a, sig.output[0]]):
            return
        self.patterns[id(mul)] = _Pattern(mul, {id(split), id(sig)}, "glu", {"split": split})
        self.absorbed.update({id(split), id(sig)})

    def _run_region(self, nodes: list, x: str, y: str, value: np.ndarray) -> np.ndarray:
        """The region's output for input `value`, by ONNX's reference evaluator."""
        from onnx import TensorProto, helper, numpy_helper
        from onnx.reference import ReferenceEvaluator
        made = {o for n in nodes for o in n.output}
        inits = []
        for v in sorted({v for n in nodes for v in n.input if v and v not in made and v != x}):
            c = self.consts.get(v)
            if c is None or isinstance(c, _Zeros):
                raise _Unsupported(f"`{v}` inside the pattern is not a constant")
            inits.append(numpy_helper.from_array(np.asarray(c), v))
        graph = helper.make_graph(nodes, "region", [helper.make_tensor_value_info(x, TensorProto.FLOAT, value.shape)],
                                  [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=self.opset_imports)
        try:
            return np.asarray(ReferenceEvaluator(model).run(None, {x: value})[0], dtype=np.float64)
        except Exception as e:      # noqa: BLE001 - the evaluator raises anything
            raise _Unsupported(f"cannot evaluate the pattern ({type(e).__name__})") from None

    def _probe(self, x: str) -> np.ndarray:
        """A random input in `x`'s ONNX shape (a dynamic batch of 2, another dynamic size 5)."""
        shape = self.shapes.get(x)
        if not shape:
            raise _Unsupported(f"the shape of `{x}` must be known to recognise the pattern")
        dims = [d if isinstance(d, int) and d > 0 else 2 if i == 0 else 5 for i, d in enumerate(shape)]
        if math.prod(dims) * 4 > _PROBE_BYTES:
            raise _Unsupported(f"`{_shown(x)}` of shape {_dims_text(dims)} is too large to recognise the pattern on "
                               f"(at most {format_bytes(_PROBE_BYTES)})")
        return np.random.default_rng(0).standard_normal(dims).astype(np.float32)

    def _projection_weights(self, n, add) -> tuple[np.ndarray, np.ndarray | None]:
        """A projection's weight in PyTorch's [out, in] layout and its bias."""
        self._fold_chain(n.input[1])
        w = self._const(n.input[1], "weight").astype(np.float32)
        b = None
        if n.op_type == "Gemm":
            if _attr(n, "alpha", 1.0) != 1.0 or _attr(n, "beta", 1.0) != 1.0:
                raise _Unsupported("a projection with alpha or beta other than 1")
            w = w if _attr(n, "transB", 0) else w.T
            if len(n.input) > 2 and n.input[2]:
                self._fold_chain(n.input[2])
                b = self._const(n.input[2], "bias").reshape(-1)
        else:
            w = w.T
            if add is not None:
                other = add.input[1] if add.input[0] == n.output[0] else add.input[0]
                self._fold_chain(other)
                b = self._const(other, "bias").reshape(-1)
        return np.ascontiguousarray(w), b

    def _attention(self, p: _Pattern) -> None:
        d = p.data
        x, y, pin, pout = d["x"], d["y"], d["in"], d["out"]
        ref = self._canonical(x)            # first: a value nnc cannot read is that error, not this one
        in_add = None
        nxt = self._next(pin.output[0])
        if pin.op_type == "MatMul" and nxt is not None and nxt.op_type == "Add" and \
                id(nxt) in p.absorbed | {id(p.root)} and any(v not in self.live for v in nxt.input):
            in_add = nxt
        wi, bi = self._projection_weights(pin, in_add)
        wo, bo = self._projection_weights(pout, d["out_add"])
        e = wo.shape[0]
        if bi is not None and bi.size != 3 * e or bo is not None and bo.size != e:
            raise _Unsupported("projection biases of unexpected sizes")
        has_bias = bi is not None or bo is not None
        bi = np.zeros(3 * e, np.float32) if bi is None else bi
        bo = np.zeros(e, np.float32) if bo is None else bo
        probe = self._probe(x)
        got = self._run_region(d["nodes"], x, y, probe)
        x64 = probe.astype(np.float64)
        match = next(((heads, causal) for heads in range(1, e + 1) if e % heads == 0 for causal in (False, True)
                      if _close(got, _np_attention(x64, wi, bi, wo, bo, heads, causal))), None)
        if match is None:
            raise _Unsupported("a softmax between two projections that is not nn.MultiheadAttention's "
                               "self-attention (query = key = value, no mask or a causal one)")
        heads, causal = match
        named = [(pin.input[1], ".in_proj_weight"), (pout.input[1], ".out_proj.weight")]
        named += [(v, ".in_proj_bias") for v in (in_add.input if in_add else pin.input[2:])]
        bases = [o[:-len(suffix)] for v, suffix in named
                 if (o := self.origin.get(v, "")).endswith(suffix) and _valid_label(o[:-len(suffix)])]
        label = self._unique(bases[0]) if bases else self._label(d["softmax"], auto="attention")
        self._put(label, "in_proj_weight", wi)
        if has_bias:
            self._put(label, "in_proj_bias", bi)
        self._put(label, "out_proj.weight", wo)
        if has_bias:
            self._put(label, "out_proj.bias", bo)
        args = [str(heads)] + (["causal=true"] if causal else []) + ([] if has_bias else ["bias=false"])
        self._set(y, self._emit("attention", ", ".join(args), [ref], label), 2)

    def _resample(self, p: _Pattern) -> None:
        x, y = p.data["x"], p.data["y"]
        probe = self._probe(x)
        got = self._run_region(p.data["nodes"], x, y, probe)
        ins, outs = probe.shape[2:], got.shape[2:]
        x64 = probe.astype(np.float64)
        step = None
        if got.shape[:2] == probe.shape[:2]:
            if all(o % i == 0 and o >= i for o, i in zip(outs, ins)):
                scales = [o // i for o, i in zip(outs, ins)]
                if _close(got, _np_upsample(x64, scales, "nearest")):
                    step = ("upsample", _one(scales))
                elif _close(got, _np_upsample(x64, scales, "linear")):
                    step = ("upsample", f"{_one(scales)}, mode={'linear' if len(ins) == 1 else 'bilinear'}")
            if step is None and all(o <= i for o, i in zip(outs, ins)) and _close(got, _np_adaptive_avg(x64, outs)):
                step = (f"adaptive_avgpool{len(ins)}d", _one(outs))
        if step is None:
            raise _Unsupported("a GatherND pattern that is neither an upsampling nor an adaptive average pooling")
        self._set(y, self._emit(*step, [self._canonical(x)]), self._rank(x) - 1)

    def _pattern(self, p: _Pattern) -> None:
        n = p.root
        if p.kind in ("attention", "resample"):
            try:
                self._attention(p) if p.kind == "attention" else self._resample(p)
            except _Unsupported as e:      # named by the node that shows what the region is
                e.node = e.node or p.data.get("softmax") or next(m for m in p.data["nodes"] if m.op_type == "GatherND")
                raise
        elif p.kind == "groupnorm":
            _groupnorm_pattern(self, p)
        elif p.kind == "glu":
            split = p.data["split"]
            rank = self._rank(split.input[0])
            axis = _attr(split, "axis", 0) % rank
            size = self._shape(split.input[0])[axis]
            if len(split.input) > 1 and split.input[1]:
                parts = [int(v) for v in self._const(split.input[1], "split sizes").reshape(-1)]
                if len(set(parts)) != 1:
                    raise _Unsupported(f"a split into unequal parts {parts}")
            elif isinstance(size, int) and size % 2:
                raise _Unsupported(f"a split of an odd size {size}")
            if self._value(split.input[0]).axes[axis] == "B":
                raise _Unsupported("splits the batch axis")
            self._step(n, "glu", str(axis - 1), src=split.input[0])
        elif p.kind == "conv":
            _conv(self, n, pad=p.data["pad"])
        elif p.kind == "maxpool":
            _pool("max")(self, n, pad=p.data["pad"])
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
        """A model input's name: the ONNX name made an identifier, unique."""
        base = _identifier(onnx_name) or "x"
        if base in _KEYWORDS or base in CATALOG:
            base += "_"
        taken = {v for v, _, _ in self.inputs} | set(self.dim_names.values()) | self.reserved
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        return name

    def _dim_name(self, d, owner: str) -> str:
        """The nnc name of a named (or unnamed: `N`, `N_1`...) size of input
        `owner`; the same ONNX name is the same nnc name."""
        if d and d in self.dim_names:
            return self.dim_names[d]
        base = _identifier(str(d)) if d else "N"
        if base in _KEYWORDS or base in CATALOG:
            base += "_"
        taken = {v for v, _, _ in self.inputs} | set(self.dim_names.values()) | {owner}
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        self.dim_names[d if d else object()] = name
        if d:
            self.dim_markers[DIM_BASE - len(self.dim_markers)] = d
        return name

    def _marked(self, x) -> str | None:
        """The ONNX name of the first named input size a folded shape tensor holds, else None."""
        if isinstance(x, np.ndarray) and x.dtype.kind == "i" and x.size and np.any(x <= DIM_BASE):
            first = int(x[x <= DIM_BASE].reshape(-1)[0])
            return self.dim_markers.get(first) or self.unknown_sizes.get(first, "?")
        return None

    def _unknown_size(self, d) -> int:
        """The marker of a size ONNX shape inference left unnamed: the shape
        tensor folds on (a Gather of its batch), a step that uses the size is refused."""
        for marker, name in self.unknown_sizes.items():
            if name == str(d):
                return marker
        marker = UNKNOWN_BASE - len(self.unknown_sizes)
        self.unknown_sizes[marker] = str(d)
        return marker

    def _text(self, outputs: list[str]) -> str:
        readers: dict[str, list[int]] = {}
        for i, s in enumerate(self.steps):
            for v in s.inputs:
                readers.setdefault(v, []).append(i)
        names: dict[str, str] = {v: v for v, _, _ in self.inputs}
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
        sig = ", ".join(f"{v}: {'int' if integer else ''}[{', '.join(_bounded(d, self.bounds) for d in dims)}]"
                        for v, dims, integer in self.inputs)
        shown = "".join(c if c.isprintable() else "?" for c in Path(self.path).name)
        lines.append(f"# imported from {shown} by nnc import")
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

_ZEROS_KEEP = frozenset({"Slice", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Expand", "Cast",
                         "Concat"})
_INTEGER_TYPES = frozenset({2, 3, 4, 5, 6, 7, 12, 13})      # uint8, int8, uint16, int16, int32, int64, uint32, uint64
_NEVER_FOLD = frozenset({"Shape", "ConstantOfShape", "GRU", "LSTM", "RNN", "RandomNormal", "RandomUniform",
                         "RandomNormalLike", "RandomUniformLike", "Multinomial"})


_SHAPE_MOVES = frozenset({"Gather", "Concat", "Unsqueeze", "Squeeze", "Identity", "Cast", "Slice", "Reshape"})
"""Folded ops that may carry an input's named size (a marker) through a shape tensor."""


def _bounded(d, bounds: dict[str, int]) -> str:
    return f"{d}={bounds[d]}" if isinstance(d, str) and d in bounds else str(d)


_LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Identity", "Dropout", "Squeeze", "Unsqueeze"})


def _resampled(sx, sy) -> bool:
    """`sy` is `sx` ([B, C, spatial...]) with its spatial sizes scaled up by
    whole numbers or reduced: a shape an upsampling or adaptive pool makes."""
    if not sx or not sy or len(sx) != len(sy) or sx[:2] != sy[:2]:
        return False
    a, b = sx[2:], sy[2:]
    if not all(isinstance(d, int) and d > 0 for d in a + b) or a == b:
        return False
    return all(o % i == 0 for o, i in zip(b, a)) or all(o <= i for o, i in zip(b, a))


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and bool(np.abs(got - want).max() <= 1e-4 * max(np.abs(want).max(), 1e-3))


def _np_attention(x, wi, bi, wo, bo, heads: int, causal: bool) -> np.ndarray:
    """nn.MultiheadAttention(batch_first=True) self-attention on [B, T, E] (float64)."""
    b, t, e = x.shape
    d = e // heads
    q, k, v = np.split(x @ wi.T.astype(np.float64) + bi, 3, axis=-1)
    q, k, v = (m.reshape(b, t, heads, d).transpose(0, 2, 1, 3) for m in (q, k, v))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    if causal:
        s = np.where(np.triu(np.ones((t, t), bool), 1), -np.inf, s)
    s = np.exp(s - s.max(-1, keepdims=True))
    o = (s / s.sum(-1, keepdims=True)) @ v
    return o.transpose(0, 2, 1, 3).reshape(b, t, e) @ wo.T.astype(np.float64) + bo


def _np_upsample(x: np.ndarray, scales: list[int], mode: str) -> np.ndarray:
    """PyTorch's nearest or (bi)linear upsampling (align_corners=False) of the trailing axes."""
    for k, scale in enumerate(scales):
        axis = x.ndim - len(scales) + k
        n = x.shape[axis]
        dst = np.arange(n * scale)
        if mode == "nearest":
            x = np.take(x, dst // scale, axis=axis)
            continue
        src = np.maximum((dst + 0.5) / scale - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n - 1)
        i1 = np.minimum(i0 + 1, n - 1)
        lam = (src - i0).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
        x = np.take(x, i0, axis=axis) * (1 - lam) + np.take(x, i1, axis=axis) * lam
    return x


def _np_adaptive_avg(x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """PyTorch's adaptive average pooling of the trailing axes (bins floor(i*L/n) .. ceil((i+1)*L/n))."""
    for k, size in enumerate(sizes):
        axis = x.ndim - len(sizes) + k
        n = x.shape[axis]
        parts = [np.take(x, range(i * n // size, -(-(i + 1) * n // size)), axis=axis).mean(axis=axis, keepdims=True)
                 for i in range(size)]
        x = np.concatenate(parts, axis=axis)
    return x


def _attr(n, name: str, default=None):
    from onnx import helper
    for a in n.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


_PARAM_NAMES = ("weight", "bias", "running_mean", "running_var", "in_proj_weight", "in_proj_bias")


def _param_base(name: str) -> str:
    """`layer1.0.conv1.weight` -> `layer1.0.conv1`; "" when `name` is not a
    parameter's name (`onnx::MatMul_12`, `val_3`)."""
    base, _, last = name.rpartition(".")
    return base if base and last in _PARAM_NAMES and _valid_label(base) else ""


def _module_path(n) -> str:
    """The PyTorch module a node came from: the dynamo exporter's name scopes
    (`['', 'layers.0', 'layers.0.self_attn', 'linear']`), or the TorchScript
    exporter's node name (`/layer1/layer1.0/conv1/Conv`, `/layers.0/self_attn/MatMul`):
    `layer1.0.conv1`, `layers.0.self_attn`."""
    parts: list[str] = []
    for prop in n.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value) if len(prop.value) < 100_000 else None
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                break
            if isinstance(scopes, (list, tuple)):
                parts = [s for s in scopes[1:-1] if s and isinstance(s, str)]
            break
    else:
        if n.name.startswith("/"):
            parts = n.name.strip("/").split("/")[:-1]
    path = ""
    for p in parts:             # each level is either a full path or a name relative to the one before
        path = p if not path or p.startswith(path + ".") else f"{path}.{p}"
    return path


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
    pads = _window_pads(imp, n, k, s, d)
    src = n.input[0]
    if pad is not None:
        extra = _pad_amounts(imp, pad, rank)
        if extra is not None:       # a zero Pad before the convolution: one padding for both
            pads, src = [p + e for p, e in zip(pads, extra)], pad.input[0]
        elif pad.output[0] not in imp.vals:     # a Pad the convolution cannot take: its own step
            _pad(imp, pad)
    padding = _conv_padding(pads, k, s, d)
    if padding is None:         # asymmetric: the remainder is a pad step, the symmetric part stays
        keep = [min(lo, hi) for lo, hi in zip(pads[:rank], pads[rank:])]
        src = _pad_before(imp, n, src, [p - x for p, x in zip(pads[:rank], keep)],
                          [p - x for p, x in zip(pads[rank:], keep)])
        padding = _conv_padding(keep + keep, k, s, d)
    padding = padding or None
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


def _explicit_pads(n, rank: int) -> tuple[str, list[int] | None]:
    """A node's `auto_pad` and, unless it is SAME_*, its `pads` (begins, then
    ends; zeros for VALID); other auto_pad values and negative pads are refused."""
    auto_pad = _attr(n, "auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", "VALID"):
        pads = [int(p) for p in _attr(n, "pads", [0] * 2 * rank)]
        if auto_pad == "VALID" or not any(pads):
            return auto_pad, [0] * 2 * rank
        if min(pads) < 0:
            raise _Unsupported(f"negative padding {pads}")
        return auto_pad, pads
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise _Unsupported(f"auto_pad={auto_pad}")
    return auto_pad, None


def _window_pads(imp: _Importer, n, k, s, d) -> list[int]:
    """A Conv/ConvTranspose/pool node's padding as ONNX `pads` (begins, then
    ends), `auto_pad` resolved: SAME_UPPER puts the odd cell at the end,
    SAME_LOWER at the beginning; with strides the total depends on the input
    size (output = ceil(size / stride)), which must then be known."""
    rank = len(k)
    auto_pad, pads = _explicit_pads(n, rank)
    if pads is not None:
        return pads
    sizes = imp._shape(n.input[0])[2:]
    totals = []
    for i in range(rank):
        span = d[i] * (k[i] - 1) + 1
        if s[i] == 1:
            totals.append(span - 1)
            continue
        if not (isinstance(sizes[i], int) and sizes[i] > 0):
            raise _Unsupported(f"auto_pad={auto_pad} with stride {s[i]} on an axis of unknown size "
                               f"(`{sizes[i] or '?'}`): the padding depends on the size")
        totals.append(max((-(-sizes[i] // s[i]) - 1) * s[i] + span - sizes[i], 0))
    small = [t // 2 for t in totals]
    big = [t - t // 2 for t in totals]
    return small + big if auto_pad == "SAME_UPPER" else big + small


def _pad_before(imp: _Importer, n, src: str, begins: list[int], ends: list[int], mode: str = "constant") -> str:
    """A `pad` step on the spatial axes of ONNX value `src` (a node's
    asymmetric padding, taken out of the node); returns the padded value's
    name for the node to read."""
    if not any(begins) and not any(ends):
        return src
    amounts = [begins[-1], ends[-1]] + ([begins[-2], ends[-2]] if len(begins) == 2 and (begins[-2] or ends[-2]) else [])
    args = _tuple(amounts) + ("" if mode == "constant" else f", mode={mode}")
    out = f"{n.output[0]}\0pad"            # a name no ONNX value has
    shape = imp._shape(src)
    imp.shapes[out] = [*shape[:2], *[x + lo + hi if isinstance(x, int) and x > 0 else None
                                     for x, lo, hi in zip(shape[2:], begins, ends)]]
    imp._set(out, imp._emit("pad", args, [imp._canonical(src)]), len(shape) - 1)
    return out


def _conv_padding(pads: list[int], k, s, d) -> str | None:
    """A convolution's ONNX pads as nnc's `padding` ("" for none), or None
    when nnc cannot say it (asymmetric, other than `same` or `causal`)."""
    rank = len(k)
    begins, ends = list(pads[:rank]), list(pads[rank:])
    totals = [dd * (kk - 1) for kk, dd in zip(k, d)]
    if begins == ends:
        return "" if not any(begins) else (str(begins[0]) if rank == 1 or begins[0] == begins[1] else _tuple(begins))
    if all(x == 1 for x in s) and rank == 1 and begins == totals and not any(ends):
        return "causal"
    if all(x == 1 for x in s) and begins == [t // 2 for t in totals] and ends == [t - t // 2 for t in totals]:
        return "same"
    return None


def _pad_spec(imp: _Importer, pad) -> tuple[str, list[int], list[int], float]:
    """(mode, begins, ends, value) of a Pad node, one begin and end per ONNX axis."""
    mode = _attr(pad, "mode", "constant")
    amounts = _attr(pad, "pads")
    if amounts is None:
        amounts = imp._const(pad.input[1], "padding").reshape(-1).tolist()
    value = _attr(pad, "value", 0.0)
    if len(pad.input) > 2 and pad.input[2]:
        value = float(imp._const(pad.input[2], "padding value").reshape(-1)[0])
    if len(pad.input) > 3 and pad.input[3]:
        raise _Unsupported("padding of selected axes")
    amounts = [int(a) for a in amounts]
    full = len(amounts) // 2
    return mode, amounts[:full], amounts[full:], float(value)


def _pad_amounts(imp: _Importer, pad, rank: int) -> list[int] | None:
    """A zero Pad's amounts on the spatial axes, for the convolution after
    it; None when the convolution cannot take it (a value other than 0, or
    padding of the batch or channel axis)."""
    mode, begins, ends, value = _pad_spec(imp, pad)
    if mode != "constant" or value != 0.0 or any(begins[:2]) or any(ends[:2]) or min(begins + ends) < 0:
        return None
    return begins[2:] + ends[2:]


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}


def _pad(imp: _Importer, n) -> None:
    mode, begins, ends, value = _pad_spec(imp, n)
    if mode not in _PAD_MODES:
        raise _Unsupported(f"mode={mode} (nnc pads with constant, reflect or edge)")
    if min(begins + ends, default=0) < 0:
        raise _Unsupported("negative padding (a crop)")
    if mode == "constant" and not np.isfinite(value) and any(begins + ends):
        raise _Unsupported(f"a padding value of {value} (nnc's pad takes a finite value; -inf is taken only "
                           "by the max pools a Pad feeds)")
    rank = len(begins)
    padded = [i for i in range(rank) if begins[i] or ends[i]]
    if not padded:
        imp.vals[n.output[0]] = imp._value(n.input[0])
        return
    if padded[0] == 0:
        raise _Unsupported("pads the batch axis")
    if padded[0] < rank - 2:
        raise _Unsupported("pads more than the last two axes")
    amounts = [begins[-1], ends[-1]] + ([begins[-2], ends[-2]] if padded[0] == rank - 2 else [])
    args = [_tuple(amounts)]
    if _PAD_MODES[mode] != "constant":
        args.append(f"mode={_PAD_MODES[mode]}")
    elif value != 0.0:
        args.append(f"value={_f32(value)}")
    imp._step(n, "pad", ", ".join(args))


def _one(v) -> str:
    """An nnc size: an int, or a pair when the two differ."""
    v = [int(x) for x in v]
    return str(v[0]) if len(v) == 1 or len(set(v)) == 1 else _tuple(v)


def _f32(x: float) -> str:
    """A float32 value in its shortest form (`0.7`, not `0.699999988`)."""
    return np.format_float_positional(np.float32(x), trim="0")


def _conv_transpose(imp: _Importer, n) -> None:
    w = imp._const(n.input[1], "weight")
    rank = w.ndim - 2
    if rank not in (1, 2):
        raise _Unsupported(f"a {rank}-d transposed convolution")
    if _attr(n, "output_shape") is not None:
        raise _Unsupported("output_shape (nnc takes padding and output_padding)")
    b = imp._const(n.input[2], "bias") if len(n.input) > 2 and n.input[2] else None
    k = list(_attr(n, "kernel_shape", w.shape[2:]))
    s = list(_attr(n, "strides", [1] * rank))
    d = list(_attr(n, "dilations", [1] * rank))
    g = _attr(n, "group", 1)
    out_pad = list(_attr(n, "output_padding", [0] * rank))
    pads = _transpose_pads(imp, n, k, s, d, out_pad)
    # a transposed convolution's pads crop its output: the symmetric part is
    # nnc's padding, the rest a slice after it
    keep = [min(lo, hi) for lo, hi in zip(pads[:rank], pads[rank:])]
    label = imp._label(n, n.input[1], auto=f"conv_transpose{rank}d")
    args = [str(w.shape[1] * g), _one(k)]
    if any(x != 1 for x in s):
        args.append(f"stride={_one(s)}")
    if any(keep):
        args.append(f"padding={_one(keep)}")
    if any(out_pad):
        args.append(f"output_padding={_one(out_pad)}")
    if any(x != 1 for x in d):
        args.append(f"dilation={_one(d)}")
    if g != 1:
        args.append(f"groups={g}")
    if b is None:
        args.append("bias=false")
    imp._put(label, "weight", w)
    if b is not None:
        imp._put(label, "bias", b)
    ref = imp._emit(f"conv_transpose{rank}d", ", ".join(args), [imp._canonical(n.input[0])], label)
    for i in range(rank):
        lo, hi = pads[i] - keep[i], pads[rank + i] - keep[i]
        if lo or hi:
            ref = imp._emit("slice", f"{i + 1}, {lo}" + (f", {-hi}" if hi else ""), [ref])
    imp._set(n.output[0], ref, rank + 1)


def _transpose_pads(imp: _Importer, n, k, s, d, out_pad) -> list[int]:
    """A ConvTranspose's `pads` with `auto_pad` resolved: SAME_* crops the
    full output to input * stride, the odd cell at the end (SAME_UPPER) or
    the beginning (SAME_LOWER), as the ONNX specification and onnxruntime do."""
    rank = len(k)
    auto_pad, pads = _explicit_pads(n, rank)
    if pads is not None:
        return pads
    totals = []
    for i in range(rank):
        full_minus_out = out_pad[i] + d[i] * (k[i] - 1) + 1 - s[i]     # (full output) - size * stride
        if full_minus_out < 0:
            raise _Unsupported(f"auto_pad={auto_pad} where the output is longer than the full transposed "
                               "convolution (a stride larger than the kernel)")
        totals.append(full_minus_out)
    small = [t // 2 for t in totals]
    big = [t - t // 2 for t in totals]
    return small + big if auto_pad == "SAME_UPPER" else big + small


def _gemm_check(imp: _Importer, n) -> None:
    if _attr(n, "transA", 0):
        raise _Unsupported("transA=1")


def _gemm(imp: _Importer, n) -> None:
    w = imp._const(n.input[1], "weight").astype(np.float32)
    if not _attr(n, "transB", 0):
        w = w.T
    w = w * np.float32(_attr(n, "alpha", 1.0))
    b = None
    if len(n.input) > 2 and n.input[2]:
        c = imp._const(n.input[2], "bias") * np.float32(_attr(n, "beta", 1.0))
        c = c[0] if c.ndim == 2 and c.shape[0] == 1 else c
        if c.ndim > 1 or c.size not in (1, w.shape[0]):     # a row per example: C of shape [M, N] or [M, 1]
            raise _Unsupported(f"a bias C of shape {list(c.shape)} (nnc adds one bias per output, the same for "
                               "every example)")
        b = np.broadcast_to(c.reshape(-1), (w.shape[0],))
    label = imp._label(n, n.input[1], n.input[2] if len(n.input) > 2 else "", auto="dense")
    imp._put(label, "weight", w)
    if b is not None:
        imp._put(label, "bias", b)
    imp._step(n, "dense", f"{w.shape[0]}" + ("" if b is not None else ", bias=false"), label, rank_out=1)


def _matmul(imp: _Importer, n, add=None, bias=None) -> None:
    if n.input[0] in imp.live and n.input[1] in imp.live:
        sa, sb = imp._shape(n.input[0]), imp._shape(n.input[1])
        if len(sa) != len(sb) or len(sa) < 3:
            raise _Unsupported(f"a product of ranks {len(sa)} and {len(sb)} (nnc's matmul takes equal ranks of at "
                               "least 2 besides the batch)")
        if sa[1:-2] != sb[1:-2]:
            raise _Unsupported(f"broadcasting between {sa} and {sb}")
        refs = [imp._canonical(n.input[0]), imp._canonical(n.input[1])]
        imp._set(n.output[0], imp._emit("matmul", "", refs, merge=True), len(sa) - 1)
        return
    if n.input[1] not in imp.consts:
        raise _Unsupported("a product of a constant by a computed value")
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
    def handler(imp: _Importer, n, pad=None) -> None:
        src = n.input[0]
        if pad is not None:         # a Pad before a max pool: its padding when it pads with -inf
            mode, begins, ends, value = _pad_spec(imp, pad)
            if not any(begins + ends):
                imp.vals[pad.output[0]] = imp._value(pad.input[0])
            elif mode == "constant" and value == -np.inf and not any(begins[:2] + ends[:2]) and \
                    min(begins + ends) >= 0:
                src = pad.input[0]
            elif pad.output[0] not in imp.vals:
                _pad(imp, pad)
        rank = len(imp._shape(n.input[0])) - 2
        if rank not in (1, 2):
            raise _Unsupported(f"{rank}-d pooling")
        if len([o for o in n.output if o]) > 1 and any(imp.consumers.get(o) for o in n.output[1:]):
            raise _Unsupported("its indices are used")
        k = list(_attr(n, "kernel_shape"))
        s = list(_attr(n, "strides", [1] * rank))
        if any(x != 1 for x in _attr(n, "dilations", [1] * rank)):
            raise _Unsupported("dilated pooling")
        pads = _window_pads(imp, n, k, s, [1] * rank)
        if src != n.input[0]:
            pads = [p + e for p, e in zip(pads, begins[2:] + ends[2:])]
        if kind == "max" and any(p >= kk for p, kk in zip(pads, k + k)):
            raise _Unsupported(f"padding {pads} not smaller than the kernel {k} (windows of padding alone)")
        if _attr(n, "ceil_mode", 0):
            pads = pads[:rank] + [p + e for p, e in zip(pads[rank:], _ceil_extra(imp, src, k, s, pads, kind))]
        if kind == "avg" and any(pads) and not _attr(n, "count_include_pad", 0):
            raise _Unsupported("count_include_pad=0 with padding (nnc's avgpool counts the padding as zeros)")
        if not any(pads) and list(imp._shape(n.input[0])[2:]) == k:    # one window over everything
            _global_pool(kind)(imp, n)
            return
        # nnc pools take symmetric padding of at most half the kernel; the rest
        # is a pad step before: zeros for average pooling (counted, as
        # count_include_pad=1 counts them), the edge values for max pooling,
        # which equal -inf there: every window holds a real cell (each side
        # pads less than the kernel) and, being contiguous, the edge cell that
        # the copies repeat, so they never change a maximum
        keep = [min(lo, hi, kk // 2) for lo, hi, kk in zip(pads[:rank], pads[rank:], k)]
        begins = [p - x for p, x in zip(pads[:rank], keep)]
        ends = [p - x for p, x in zip(pads[rank:], keep)]
        if any(begins) or any(ends):
            src = _pad_before(imp, n, src, begins, ends, "constant" if kind == "avg" else "replicate")
        args = [_one(k)]
        if s != k:
            args.append(f"stride={_one(s)}")
        if any(keep):
            args.append(f"padding={_one(keep)}")
        imp._step(n, f"{kind}pool{rank}d", ", ".join(args), src=src)
    return handler


def _ceil_extra(imp: _Importer, src: str, k, s, pads, kind: str) -> list[int]:
    """ceil_mode=1 as extra padding at the end of each axis: the cells the
    last, partial window reaches past the input (PyTorch's rule: a window
    must start inside the input or its left padding). Exact for max pooling
    only; average pooling divides a partial window by fewer cells."""
    rank = len(k)
    sizes = imp._shape(src)[2:]
    extra = []
    for i in range(rank):
        if not (isinstance(sizes[i], int) and sizes[i] > 0):
            raise _Unsupported(f"ceil_mode=1 on an axis of unknown size (`{sizes[i] or '?'}`)")
        size = sizes[i] + pads[i] + pads[rank + i]
        out = -(-(size - k[i]) // s[i]) + 1
        if (out - 1) * s[i] >= sizes[i] + pads[i]:
            out -= 1
        extra.append(max((out - 1) * s[i] + k[i] - size, 0))
    if any(extra) and kind == "avg":
        raise _Unsupported("ceil_mode=1 where the last window is partial (nnc's avgpool has no ceil mode)")
    return extra


def _global_pool(kind: str):
    def handler(imp: _Importer, n) -> None:
        ref = imp._canonical(n.input[0])
        rank = imp._rank(n.input[0])
        if rank < 3:
            raise _Unsupported("a global pool of a value without spatial axes")
        imp.vals[n.output[0]] = _Val(imp._emit(f"global_{kind}pool", "", [ref]), ("B", 0, *([None] * (rank - 2))))
    return handler


def _reduce(op: str):
    """ReduceMean/ReduceSum/ReduceMax -> mean/sum/max over nnc's axes; a mean
    or max over every spatial axis of [B, C, ...] is global_avgpool/global_maxpool."""
    def handler(imp: _Importer, n) -> None:
        rank = imp._rank(n.input[0])
        axes = _axes_of(imp, n)
        keep = _attr(n, "keepdims", 1)
        if not axes:
            if _attr(n, "noop_with_empty_axes", 0):
                imp.vals[n.output[0]] = imp._value(n.input[0])
                return
            raise _Unsupported("reduces every axis, the batch too")
        ref = imp._canonical(n.input[0])
        if 0 in axes:
            raise _Unsupported("reduces the batch axis")
        if axes == list(range(1, rank)):
            raise _Unsupported("reduces every axis but the batch (nnc keeps at least one axis per example)")
        if op in ("mean", "max") and rank >= 3 and axes == list(range(2, rank)):
            sid = imp._emit(f"global_{'avg' if op == 'mean' else 'max'}pool", "", [ref])
        else:
            nnc = [a - 1 for a in axes]
            sid = imp._emit(op, str(nnc[0]) if len(nnc) == 1 else _tuple(nnc), [ref])
        if not keep:
            imp._set(n.output[0], sid, rank - 1 - len(axes))
            return
        out, j = ["B"], 0
        for i in range(1, rank):
            out.append(None if i in axes else j)
            j += i not in axes
        imp.vals[n.output[0]] = _Val(sid, tuple(out))
    return handler


def _instancenorm(imp: _Importer, n) -> None:
    if imp._rank(n.input[0]) < 3:
        raise _Unsupported("a value without axes to normalise over")
    scale = imp._const(n.input[1], "scale").reshape(-1)
    bias = imp._const(n.input[2], "bias").reshape(-1)
    eps = _attr(n, "epsilon", 1e-5)
    affine = bool(_param_base(imp.origin.get(n.input[1], ""))) or not (np.all(scale == 1) and np.all(bias == 0))
    args = ([] if abs(eps - 1e-5) < 1e-12 else [f"eps={_f32(eps)}"]) + (["affine=true"] if affine else [])
    label = None
    if affine:
        label = imp._label(n, n.input[1], n.input[2], auto="instancenorm")
        imp._put(label, "weight", scale)
        imp._put(label, "bias", bias)
    imp._step(n, "instancenorm", ", ".join(args), label)


def _per_channel(imp: _Importer, node, live: str, c: int, what: str) -> np.ndarray:
    """The constant operand of a Mul/Add after a groupnorm, as one value per channel."""
    other = next(v for v in node.input if v != live)
    imp._fold_chain(other)
    value = imp._const(other, what).reshape(-1)
    if value.size == 1:
        return np.full(c, value[0], np.float32)
    if value.size != c:
        raise _Unsupported(f"a groupnorm {what} of {value.size} values for {c} channels")
    return value


def _groupnorm_pattern(imp: _Importer, p: _Pattern) -> None:
    r1, inn, mul, add = p.data["reshape"], p.data["norm"], p.data["mul"], p.data["add"]
    x = r1.input[0]
    shape = imp._shape(x)
    c = shape[1] if len(shape) >= 3 else None
    if not isinstance(c, int):
        raise _Unsupported("a groupnorm of a value without a known channel count")
    imp._fold_chain(r1.input[1])
    target = [int(v) for v in imp._const(r1.input[1], "shape").reshape(-1)]
    if len(target) != 3 or target[1] <= 0 or c % target[1]:
        raise _Unsupported(f"an instance normalisation of a reshape to {target} (not groups of channels)")
    groups = target[1]
    scale, bias = (imp._const(v, "scale").reshape(-1) for v in inn.input[1:3])
    if not (np.all(scale == 1) and np.all(bias == 0)):
        raise _Unsupported("a groupnorm whose groups have their own scale")
    weight, shift = np.ones(c, np.float32), np.zeros(c, np.float32)
    r2_out = imp._only_user(inn.output[0]).output[0]
    if mul is not None:
        weight = _per_channel(imp, mul, r2_out, c, "weight")
    if add is not None:
        shift = _per_channel(imp, add, mul.output[0], c, "bias")
    eps = _attr(inn, "epsilon", 1e-5)
    names = [v for m in (mul, add) if m is not None for v in m.input]
    label = imp._label(mul or inn, *names, auto="groupnorm")
    imp._put(label, "weight", weight)
    imp._put(label, "bias", shift)
    args = [str(groups)] + ([] if abs(eps - 1e-5) < 1e-12 else [f"eps={_f32(eps)}"])
    imp._step(p.root, "groupnorm", ", ".join(args), label, src=x)


def _groupnorm(imp: _Importer, n) -> None:
    """ONNX GroupNormalization (opset 18: a scale per group; 21: per channel)."""
    shape = imp._shape(n.input[0])
    c = shape[1] if len(shape) >= 3 else None
    groups = _attr(n, "num_groups")
    if not isinstance(c, int) or not groups or c % groups:
        raise _Unsupported(f"num_groups={groups} for {c} channels")
    arrays = []
    for v, what in ((n.input[1], "scale"), (n.input[2], "bias")):
        a = imp._const(v, what).reshape(-1)
        if a.size == groups and groups != c:
            a = np.repeat(a, c // groups)
        if a.size != c:
            raise _Unsupported(f"a {what} of {a.size} values for {c} channels in {groups} groups")
        arrays.append(a)
    eps = _attr(n, "epsilon", 1e-5)
    label = imp._label(n, n.input[1], n.input[2], auto="groupnorm")
    imp._put(label, "weight", arrays[0])
    imp._put(label, "bias", arrays[1])
    imp._step(n, "groupnorm", ", ".join([str(groups)] + ([] if abs(eps - 1e-5) < 1e-12 else [f"eps={_f32(eps)}"])),
              label)


def _gather(imp: _Importer, n) -> None:
    """A constant table indexed by computed integers: embedding. A computed
    value indexed by a constant: select (a scalar index) or a one-row slice."""
    data, idx = n.input[0], n.input[1]
    axis = _attr(n, "axis", 0)
    if data not in imp.live and idx in imp.live:
        imp._fold_chain(data)
        table = imp._const(data, "table")
        if table.ndim != 2 or axis != 0:
            raise _Unsupported(f"a lookup in a table of shape {list(table.shape)} on axis {axis} (embedding takes rows "
                               "of a 2-d table)")
        label = imp._label(n, data, auto="embedding")
        imp._put(label, "weight", table)
        imp._step(n, "embedding", f"{table.shape[0]}, {table.shape[1]}", label, rank_out=imp._rank(idx), src=idx)
        return
    if data in imp.live and idx not in imp.live:
        index = imp._const(idx, "index")
        rank = imp._rank(data)
        a = axis % rank
        val = imp._value(data)
        if val.axes[a] == "B":
            raise _Unsupported("indexes the batch axis")
        if val.axes[a] is None and index.size == 1 and int(index.reshape(-1)[0]) in (0, -1):
            # the one row of a unit axis (`h_n[-1]` of a one-layer GRU): the axis map alone
            imp.vals[n.output[0]] = _Val(val.ref, val.axes[:a] + val.axes[a + 1:] if index.ndim == 0 else val.axes)
            return
        if isinstance(val.axes[a], int) and val.axes[0] != "B" and index.ndim == 0:
            # a row of the layers' (or directions') final states [L, B, H] (`h_n[-1]`): select on its nnc axis
            j = val.axes[a]
            ref = imp._emit("select", f"{j}, {int(index)}", [val.ref])
            imp.vals[n.output[0]] = _Val(ref, tuple(x - 1 if isinstance(x, int) and x > j else x
                                                    for i, x in enumerate(val.axes) if i != a))
            return
        if index.ndim == 0:
            imp._step(n, "select", f"{a - 1}, {int(index)}", rank_out=rank - 2)
        elif index.size == 1 and index.ndim == 1:
            k = int(index[0])
            imp._step(n, "slice", f"{a - 1}, {k}" + ("" if k == -1 else f", {k + 1}"))
        else:
            raise _Unsupported(f"gathers {index.size} indices (nnc selects one, or slices)")
        return
    raise _Unsupported("indices computed from the data")


_BIG = 1 << 62


def _slice(imp: _Importer, n) -> None:
    if len(n.input) < 3:
        raise _Unsupported("Slice before opset 10 (attributes)")
    starts, ends = (imp._const(v, what).reshape(-1) for v, what in zip(n.input[1:3], ("starts", "ends")))
    rank = imp._rank(n.input[0])
    shape = imp._shape(n.input[0])
    axes = imp._const(n.input[3], "axes").reshape(-1) if len(n.input) > 3 and n.input[3] else range(len(starts))
    steps = imp._const(n.input[4], "steps").reshape(-1) if len(n.input) > 4 and n.input[4] else [1] * len(starts)
    cuts = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        start, end, a, step = int(start), int(end), int(axis) % rank, int(step)
        size = shape[a] if isinstance(shape[a], int) and shape[a] > 0 else None
        if step <= 0:
            raise _Unsupported(f"a step of {step} (nnc slices forwards)")
        to_end = end >= _BIG or size is not None and end >= size
        if start in (0, -_BIG) and to_end and step == 1 or size is not None and start <= -size and to_end and step == 1:
            continue
        if imp._value(n.input[0]).axes[a] == "B":
            raise _Unsupported("slices the batch axis")
        if size is not None and not range(*slice(start, end, step).indices(size)):
            raise _Unsupported(f"an empty slice [{start}:{end}:{step}] of an axis of size {size}")
        cuts.append(f"{a - 1}, {start}" + ("" if to_end else f", {end}") + ("" if step == 1 else f", step={step}"))
    if not cuts:
        imp.vals[n.output[0]] = imp._value(n.input[0])
        return
    ref = imp._canonical(n.input[0])
    for args in cuts:
        ref = imp._emit("slice", args, [ref])
    imp._set(n.output[0], ref, rank - 1)


def _split(imp: _Importer, n) -> None:
    rank = imp._rank(n.input[0])
    axis = _attr(n, "axis", 0) % rank
    size = imp._shape(n.input[0])[axis]
    if imp._value(n.input[0]).axes[axis] == "B":
        raise _Unsupported("splits the batch axis")
    outs = list(n.output)
    if len(n.input) > 1 and n.input[1]:
        parts = [int(v) for v in imp._const(n.input[1], "split sizes").reshape(-1)]
    elif _attr(n, "split") is not None:
        parts = list(_attr(n, "split"))
    elif isinstance(size, int):
        each = -(-size // len(outs))
        parts = [min(each, size - i * each) for i in range(len(outs))]
    else:
        raise _Unsupported("a split of an axis of unknown size")
    ref = imp._canonical(n.input[0])
    start = 0
    for out, k in zip(outs, parts):
        if out and (imp.consumers.get(out) or out in imp.outputs):
            imp._set(out, imp._emit("slice", f"{axis - 1}, {start}, {start + k}", [ref]), rank - 1)
        start += k


def _add(imp: _Importer, n) -> None:
    """Two computed values: add. A computed [B, T, E] plus a constant [T, E]:
    positional (a learned table; `table[:T]` of an initializer keeps its
    name and all its rows)."""
    consts = [v for v in n.input[:2] if v not in imp.live]
    if not consts:
        _merge("add")(imp, n)
        return
    c = consts[0]
    x = n.input[1] if c == n.input[0] else n.input[0]
    rows = imp.consts.get(c)
    sx = imp._shape(x)
    if isinstance(rows, _Rows):         # table[:T] + x, T a named size: positional, bounded by the table
        if len(sx) != 3 or sx[1] != rows.size or sx[2] != rows.table.shape[1]:
            raise _Unsupported(f"adds rows of `{rows.origin}` to a value of shape {sx}")
        label = imp._label(n, rows.origin, auto="positional")
        imp._put(label, "weight", rows.table)
        name = imp.dim_names[rows.size]
        imp.bounds[name] = min(imp.bounds.get(name, rows.table.shape[0]), rows.table.shape[0])
        imp._step(n, "positional", str(rows.table.shape[0]), label, src=x)
        return
    table = imp._const(c, "added constant")
    if len(sx) == 3 and all(isinstance(d, int) for d in sx[1:]) and table.shape[-2:] == tuple(sx[1:]) \
            and table.size == sx[1] * sx[2]:
        origin = imp.table_origin.get(c)
        if origin is not None and imp.consts[origin].ndim == 2:
            weight = imp.consts[origin]
            label = imp._label(n, origin, auto="positional")
        else:
            weight = table.reshape(sx[1:])
            label = imp._label(n, auto="positional")
        imp._put(label, "weight", weight)
        imp._step(n, "positional", str(weight.shape[0]), label, src=x)
        return
    raise _Unsupported(f"adds a constant of shape {list(table.shape)} (nnc adds a constant only as a positional "
                       "table [T, E] to [T, E])")


def _mul(imp: _Importer, n) -> None:
    if n.input[0] == n.input[1] and n.input[0] in imp.live:
        imp._step(n, "square")
        return
    if any(v not in imp.live for v in n.input[:2]):
        raise _Unsupported("scales by a constant (nnc multiplies computed values of equal shapes)")
    _merge("mul")(imp, n)


def _pow(imp: _Importer, n) -> None:
    exponent = imp._const(n.input[1], "exponent").reshape(-1)
    if exponent.size != 1 or float(exponent[0]) not in (1.0, 2.0, 0.5):
        raise _Unsupported(f"an exponent of {exponent.tolist()} (nnc has square and sqrt)")
    e = float(exponent[0])
    if e == 1.0:
        imp.vals[n.output[0]] = imp._value(n.input[0])
        return
    imp._step(n, "square" if e == 2.0 else "sqrt")


def _div(imp: _Importer, n) -> None:
    if any(v not in imp.live for v in n.input[:2]):
        raise _Unsupported("divides by or into a constant (nnc divides computed values of equal shapes)")
    _merge("div")(imp, n)


def _batchnorm_check(imp: _Importer, n) -> None:
    if _attr(n, "training_mode", 0):
        raise _Unsupported("training_mode=1")


def _batchnorm(imp: _Importer, n) -> None:
    names = ["weight", "bias", "running_mean", "running_var"]
    arrays = [imp._const(v, names[i]) for i, v in enumerate(n.input[1:5])]
    label = imp._label(n, n.input[1], n.input[3], auto="batchnorm")
    for key, a in zip(names, arrays):
        imp._put(label, key, a)
    eps = _attr(n, "epsilon", 1e-5)
    args = "" if abs(eps - 1e-5) < 1e-12 else f"eps={_num(eps)}"
    imp._step(n, "batchnorm", args, label)


def _layernorm(imp: _Importer, n) -> None:
    """LayerNormalization over the last axis: layernorm. Over the last k > 1
    axes (PyTorch's `nn.LayerNorm([C, H, W])`): those axes flattened into
    one, layernorm (its weight and bias flattened too), the shape restored."""
    rank = imp._rank(n.input[0])
    axis = _attr(n, "axis", -1) % rank
    if axis == 0:
        raise _Unsupported("normalises over the batch axis")
    if any(imp.consumers.get(o) for o in n.output[1:] if o):
        raise _Unsupported("its mean or deviation is used")
    shape = imp._shape(n.input[0])[1:]
    inner = shape[axis - 1:]
    if axis < rank - 1 and not all(isinstance(d, int) and d > 0 for d in shape):
        raise _Unsupported(f"normalises the last {rank - axis} axes of a value of unknown sizes {shape}")
    scale = imp._const(n.input[1], "weight")
    bias = imp._const(n.input[2], "bias") if len(n.input) > 2 and n.input[2] else np.zeros_like(scale)
    if axis < rank - 1:
        scale, bias = (np.broadcast_to(a, inner).reshape(-1) for a in (scale, bias))
    label = imp._label(n, n.input[1], auto="layernorm")
    imp._put(label, "weight", scale)
    imp._put(label, "bias", bias)
    eps = _attr(n, "epsilon", 1e-5)
    args = "" if abs(eps - 1e-5) < 1e-12 else f"eps={_num(eps)}"
    if axis == rank - 1:
        imp._step(n, "layernorm", args, label)
        return
    ref = imp._emit("reshape", _tuple([*shape[:axis - 1], int(np.prod(inner))]), [imp._canonical(n.input[0])])
    ref = imp._emit("layernorm", args, [ref], label)
    imp._set(n.output[0], imp._emit("reshape", _tuple(shape), [ref]), rank - 1)


def _simple(op: str):
    def handler(imp: _Importer, n) -> None:
        imp._step(n, op)
    return handler


def _clip_check(imp: _Importer, n) -> None:
    if imp.opset >= 11 and (_attr(n, "min") is not None or _attr(n, "max") is not None):
        raise _Unsupported(f"min and max as attributes, which Clip has only before opset 11 (this model is opset "
                           f"{imp.opset})")


def _clip(imp: _Importer, n) -> None:
    lo = _attr(n, "min")
    hi = _attr(n, "max")
    if len(n.input) > 1 and n.input[1]:
        lo = float(imp._const(n.input[1], "minimum").reshape(-1)[0])
    if len(n.input) > 2 and n.input[2]:
        hi = float(imp._const(n.input[2], "maximum").reshape(-1)[0])
    lo = None if lo is None or lo <= -3.4e38 else lo
    hi = None if hi is None or hi >= 3.4e38 else hi
    if lo == 0 and hi == 6:
        imp._step(n, "relu6")
    elif lo == 0 and hi is None:
        imp._step(n, "relu")
    elif lo is None and hi is None:
        imp.vals[n.output[0]] = imp._value(n.input[0])
    else:
        imp._step(n, "clamp", ", ".join(f"{k}={_f32(v)}" for k, v in (("min", lo), ("max", hi)) if v is not None))


def _mish(imp: _Importer, n) -> None:
    """Mish, x * tanh(softplus(x)): three steps, as nnc has no mish op."""
    x = imp._canonical(n.input[0])
    t = imp._emit("tanh", "", [imp._emit("softplus", "", [x])])
    imp._set(n.output[0], imp._emit("mul", "", [x, t], merge=True), imp._rank(n.input[0]) - 1)


def _check_attr(name: str, expected: float, default: float):
    def check(imp: _Importer, n) -> None:
        v = _attr(n, name, default)
        if abs(v - expected) > 1e-6:
            raise _Unsupported(f"{name}={v} (PyTorch's is {expected})")
    return check


def _selu_check(imp: _Importer, n) -> None:
    _check_attr("alpha", 1.6732632423543772, 1.67326319217681884765625)(imp, n)
    _check_attr("gamma", 1.0507009873554805, 1.05070102214813232421875)(imp, n)


def _hardsigmoid_check(imp: _Importer, n) -> None:
    if abs(_attr(n, "alpha", 0.2) - 1 / 6) > 1e-6 or abs(_attr(n, "beta", 0.5) - 0.5) > 1e-6:
        raise _Unsupported("alpha/beta other than PyTorch's 1/6 and 0.5")


def _gelu_check(imp: _Importer, n) -> None:
    if _attr(n, "approximate", "none") != "none":
        raise _Unsupported("the tanh approximation (nnc's gelu is the exact one)")


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
        if sa and sb and any(isinstance(x, int) and isinstance(y, int) and 0 < x != y > 0 for x, y in zip(sa, sb)):
            raise _Unsupported(f"broadcasting between shapes {sa} and {sb} (nnc merges values of equal shapes)")
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
    if any(v in imp.vals and imp.vals[v].axes[axis] == "B" for v in n.input):
        raise _Unsupported("concatenates along the batch axis")
    if _stack_states(imp, n, axis):
        return
    refs = [imp._canonical(v) for v in n.input]
    args = "" if axis == 1 else f"axis={axis - 1}"
    imp._set(n.output[0], imp._emit("concat", args, refs, merge=True), rank - 1)


def _stack_states(imp: _Importer, n, axis: int) -> bool:
    """A Concat of values whose batch axis is not first and whose nnc axes are
    in order: the layers' final states joined into h_n. Along a unit axis
    (one-way layers' [1, B, H]) each gets that axis in nnc (a reshape); along
    an nnc axis (two-way layers' [2, B, H]) they are concatenated as they
    are; the result keeps the axis map. False for any other Concat."""
    vals = [imp.vals.get(v) for v in n.input]
    if any(v is None for v in vals) or len({v.axes for v in vals}) != 1:
        return False
    axes = vals[0].axes
    ints = [a for a in axes if isinstance(a, int)]
    if axes[0] == "B" or "B" not in axes or "D" in axes or ints != list(range(len(ints))):
        return False
    if isinstance(axes[axis], int):     # two-way layers' states [2, B, H] joined into h_n [2L, B, H]
        j = axes[axis]
        imp.vals[n.output[0]] = _Val(imp._emit("concat", "" if j == 0 else f"axis={j}", [v.ref for v in vals],
                                              merge=True), axes)
        return True
    if axes[axis] is not None:
        return False
    shape = imp._shape(n.input[0])
    inner = [shape[i] for i, a in enumerate(axes) if isinstance(a, int)]
    if not all(isinstance(d, int) and d > 0 for d in inner):
        return False
    k = sum(isinstance(a, int) for a in axes[:axis])            # the new nnc axis
    target = _tuple(inner[:k] + [1] + inner[k:])
    refs = [imp._emit("reshape", target, [v.ref]) for v in vals]
    ref = imp._emit("concat", "" if k == 0 else f"axis={k}", refs, merge=True)
    imp.vals[n.output[0]] = _Val(ref, tuple(k if i == axis else a + 1 if isinstance(a, int) and a >= k else a
                                            for i, a in enumerate(axes)))
    return True


def _flatten_check(imp: _Importer, n) -> None:
    if _attr(n, "axis", 1) != 1:
        raise _Unsupported(f"axis={_attr(n, 'axis', 1)} (only 1: keep the batch)")


def _flatten(imp: _Importer, n) -> None:
    rank = imp._rank(n.input[0])
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


def _unit_reshape(val: _Val, src: list, dst: list, batch_static: int | None) -> _Val | None:
    """The axis map after a reshape that only adds or drops unit axes, else
    None. `batch_static`: the exported batch size when it is static."""
    keep = [(a, d) for a, d in zip(val.axes, src) if not (a is None and d == 1)]
    batch_sizes = (BATCH, -1, 0) + ((batch_static,) if batch_static else ())
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


def _merge_directions(val: _Val, src: list, dst: list) -> _Val | None:
    """The axis map after the reshape that joins a bidirectional layer's
    direction axis with its hidden axis (`[T, B, 2, H]` -> `[T, B, 2H]`, the
    two directions side by side as in PyTorch), else None."""
    i = val.axes.index("D")
    if i + 1 >= len(val.axes) or not isinstance(val.axes[i + 1], int) or len(dst) != len(src) - 1:
        return None
    h = src[i + 1]
    want = src[:i] + [2 * h if isinstance(h, int) else None] + src[i + 2:]
    known = [d for d in dst if d != -1]
    for j, (d, w) in enumerate(zip(dst, want)):
        if d == -1 and len(known) == len(dst) - 1:
            continue
        if d != w and not (w == BATCH and d in (BATCH, 0)) and not (d == 0 and j < len(src) and src[j] == w):
            return None
    return _Val(val.ref, val.axes[:i] + val.axes[i + 1:])


def _reshape(imp: _Importer, n) -> None:
    target = [int(v) for v in imp._const(n.input[1], "shape").reshape(-1)]
    unknown = [imp.unknown_sizes[v] for v in target if v in imp.unknown_sizes]
    if unknown:
        raise _Unsupported(f"the size {unknown[0]} is not known when importing")
    target = [imp.dim_markers.get(v, v) if v <= DIM_BASE else v for v in target]   # a named size: its name
    src_shape = imp._shape(n.input[0])
    val = imp._value(n.input[0])
    batch_axis = val.axes.index("B") if "B" in val.axes else None
    if "D" in val.axes:
        src = [BATCH if a == "B" else d for a, d in zip(val.axes, src_shape)]
        mapped = _merge_directions(val, src, [BATCH if batch_axis is not None and i == batch_axis and
                                              d == src_shape[batch_axis] else d for i, d in enumerate(target)])
        if mapped is None:
            raise _Unsupported("reads the two directions of a bidirectional recurrent layer apart")
        imp.vals[n.output[0]] = mapped
        return
    src = [BATCH if i == batch_axis else d for i, d in enumerate(src_shape)]
    allowzero = _attr(n, "allowzero", 0)
    dst = [src[i] if d == 0 and not allowzero and i < len(src) else d for i, d in enumerate(target)]
    batch_static = src_shape[batch_axis] if batch_axis is not None and isinstance(src_shape[batch_axis], int) \
        and src_shape[batch_axis] > 0 else None
    mapped = _unit_reshape(val, src, dst, batch_static)
    if mapped is not None and "B" in mapped.axes:
        imp.vals[n.output[0]] = mapped
        return
    if not dst or (dst[0] not in (BATCH, -1, 0) and not (batch_axis == 0 and dst[0] == batch_static)):
        raise _Unsupported(f"reshapes the batch axis ({target})")
    rest = [d for d in dst[1:]]
    if -1 in rest and dst[0] == -1:
        raise _Unsupported(f"two unknown sizes in {target}")
    if BATCH in rest:
        raise _Unsupported(f"moves the batch into {target}")
    if dst[0] == -1 and batch_axis == 0 and all(isinstance(d, int) and d > 0 for d in [*src_shape[1:], *rest]) \
            and int(np.prod(rest)) != int(np.prod(src_shape[1:])):      # a -1 that is not the batch: [-1, 2, 3, 4]
        raise _Unsupported(f"reshapes the batch axis ({target})")
    if any(isinstance(d, str) for d in rest):       # a named size: the one unknown size of the reshape
        if -1 in rest or sum(isinstance(d, str) for d in rest) > 1:
            raise _Unsupported(f"a reshape to {target}, with more than one size known only when the model runs")
        rest = [-1 if isinstance(d, str) else d for d in rest]
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
        if any(val.axes[a] in ("B", "D") for a in axes):
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
        if o and (imp.consumers.get(o) or o in imp.outputs):
            raise _Unsupported("its mask is used")


def _dropout(imp: _Importer, n) -> None:
    """Dropout at inference: the identity. With `training_mode` true it
    drops at random, which nnc's inference cannot (a ratio of 0 aside)."""
    if len(n.input) > 2 and n.input[2]:
        training = imp._const(n.input[2], "training_mode")
        ratio = imp._const(n.input[1], "ratio") if len(n.input) > 1 and n.input[1] else np.float32(0.5)
        if np.any(training) and np.any(ratio):
            raise _Unsupported("training_mode=true (random masks; nnc's dropout is the identity at inference)")
    _identity(imp, n)


def _resize_check(imp: _Importer, n) -> None:
    mode = _attr(n, "mode", "nearest")
    old = n.op_type == "Upsample" or imp.opset < 11      # Upsample and Resize-10: (X, scales), asymmetric
    if mode not in ("nearest", "linear") and not (old and mode == "bilinear"):
        raise _Unsupported(f"mode={mode} (nnc upsamples nearest, linear or bilinear)")
    if old and mode != "nearest":
        raise _Unsupported(f"{n.op_type}-{imp.opset}'s {mode} mode (asymmetric coordinates; nnc interpolates with "
                           "align_corners=false, half-pixel)")


def _resize(imp: _Importer, n) -> None:
    """Resize (opset 11+: scales or sizes, `axes` from 18) and Upsample /
    Resize-10 (scales only, asymmetric coordinates: nearest equals nnc's,
    linear does not) with whole scales on the spatial axes -> upsample."""
    mode = _attr(n, "mode", "nearest")
    old = n.op_type == "Upsample" or imp.opset < 11      # Upsample and Resize-10: (X, scales), asymmetric
    shape = imp._shape(n.input[0])
    rank = len(shape)
    if mode == "linear" and rank not in (3, 4):
        raise _Unsupported(f"linear resizing of {rank - 2} spatial axes (nnc: linear on 1, bilinear on 2)")
    axes = [int(a) % rank for a in _attr(n, "axes", range(rank))]
    given = None
    if old:
        given = _attr(n, "scales")          # Upsample-7: an attribute
        if given is None and len(n.input) > 1 and n.input[1]:
            given = imp._const(n.input[1], "scales").reshape(-1).tolist()
    elif len(n.input) > 2 and n.input[2] and np.asarray(imp.consts.get(n.input[2], [])).size:
        given = imp._const(n.input[2], "scales").reshape(-1).tolist()
    elif len(n.input) > 3 and n.input[3]:
        sizes = imp._const(n.input[3], "sizes").reshape(-1).tolist()
        if any(not (isinstance(shape[a], int) and shape[a] > 0) for a in axes if a > 0):
            raise _Unsupported("output sizes for an axis of unknown size")
        given = [o / shape[a] if isinstance(shape[a], int) and shape[a] > 0 else 1.0 for o, a in zip(sizes, axes)]
        policy = _attr(n, "keep_aspect_ratio_policy", "stretch")
        if policy in ("not_larger", "not_smaller"):     # one scale for every axis listed
            one = (min if policy == "not_larger" else max)((g for g, a in zip(given, axes) if a > 1), default=1.0)
            given = [one if a > 1 else g for g, a in zip(given, axes)]
    if given is None:
        raise _Unsupported("no constant scales")
    scales = [1.0] * rank
    for a, v in zip(axes, given):
        scales[a] = float(v)
    if scales[:2] != [1.0, 1.0] or any(s != int(s) or s < 1 for s in scales[2:]):
        raise _Unsupported(f"scales {scales} (only whole numbers on the spatial axes)")
    ints = [int(s) for s in scales[2:]]
    scale = str(ints[0]) if len(set(ints)) == 1 else _tuple(ints)
    if all(s == 1 for s in ints):
        imp.vals[n.output[0]] = imp._value(n.input[0])
        return
    coords = "asymmetric" if old else _attr(n, "coordinate_transformation_mode", "half_pixel")
    if mode == "linear":
        if coords not in ("half_pixel", "pytorch_half_pixel"):
            raise _Unsupported(f"coordinate_transformation_mode={coords} (nnc interpolates with align_corners=false)")
        imp._step(n, "upsample", f"{scale}, mode={'linear' if rank == 3 else 'bilinear'}")
        return
    # nearest with a whole scale s is nnc's source index floor(i / s): asymmetric
    # coordinates (i / s) rounded down, or half-pixel ones ((i + 0.5) / s - 0.5,
    # never halfway between two cells) rounded either way at a tie
    nearest = "floor" if old else _attr(n, "nearest_mode", "round_prefer_floor")
    if (coords, nearest) not in (("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
                                 ("half_pixel", "round_prefer_ceil"), ("pytorch_half_pixel", "round_prefer_floor"),
                                 ("pytorch_half_pixel", "round_prefer_ceil")):
        raise _Unsupported(f"coordinate_transformation_mode={coords}, nearest_mode={nearest}")
    imp._step(n, "upsample", scale)


_GATES = {"gru": 3, "lstm": 4, "rnn": 1}
_TORCH_GATES = {"gru": [1, 0, 2], "lstm": [0, 2, 3, 1], "rnn": [0]}     # PyTorch's gates from ONNX's
_DEFAULT_ACTIVATIONS = {"gru": ["sigmoid", "tanh"], "lstm": ["sigmoid", "tanh", "tanh"], "rnn": ["tanh"]}
_RECURRENT = ("GRU", "LSTM", "RNN")


def _stack_below(imp: _Importer, n):
    """The recurrent node whose sequence output feeds `n` through layout glue
    only (the TorchScript and dynamo exporters write one node per layer), of
    the same op and PyTorch module; None otherwise."""
    v = n.input[0]
    while v not in imp.outputs:
        p = imp.producer.get(v)
        if p is None or len([c for c in imp.consumers.get(v, []) if c.op_type != "Shape"]) != 1:
            return None
        if p.op_type in _RECURRENT:
            if any(imp.consumers.get(o) or o in imp.outputs for o in p.output[1:] if o):
                return None         # its final state is read: it stays the last layer of its step
            path = _module_path(p)
            return p if p.op_type == n.op_type and v == p.output[0] and path and path == _module_path(n) else None
        if p.op_type not in _LAYOUT_OPS:
            return None
        v = p.input[0]
    return None


def _activations(n) -> list[str] | None:
    """A recurrent node's `activations`, lowercase, both directions' in a row."""
    acts = _attr(n, "activations")
    return None if acts is None else [(a.decode() if isinstance(a, bytes) else a).lower() for a in acts]


def _recurrent_check(kind: str):
    def check(imp: _Importer, n) -> None:
        direction = _attr(n, "direction", "forward")
        if direction not in ("forward", "bidirectional"):
            raise _Unsupported(f"direction={direction} (nnc reads forwards, or both ways)")
        layout = _attr(n, "layout", 0)
        if layout not in (0, 1):
            raise _Unsupported(f"layout={layout}")
        if _attr(n, "clip") is not None or _attr(n, "activation_alpha") is not None or \
                _attr(n, "activation_beta") is not None:
            raise _Unsupported("clipping or activation parameters")
        acts = _activations(n)
        if acts is not None:
            per = len(acts) // (2 if direction == "bidirectional" else 1)
            if direction == "bidirectional" and acts[:per] != acts[per:]:
                raise _Unsupported("different activations in the two directions")
            if acts[:per] != _DEFAULT_ACTIVATIONS[kind] and not (kind == "rnn" and acts[:per] == ["relu"]):
                raise _Unsupported(f"activations {acts[:per]} (PyTorch's are {_DEFAULT_ACTIVATIONS[kind]})")
        if kind == "gru" and not _attr(n, "linear_before_reset", 0):
            raise _Unsupported("linear_before_reset=0 (PyTorch's GRU is linear_before_reset=1)")
        if kind == "lstm" and (_attr(n, "input_forget", 0) or len(n.input) > 7 and n.input[7]):
            raise _Unsupported("peepholes or coupled gates")
        if len(n.input) > 4 and n.input[4]:
            raise _Unsupported("sequence lengths")
    return check


def _recurrent(kind: str):
    gates = _GATES[kind]

    def handler(imp: _Importer, n) -> None:
        two = _attr(n, "direction", "forward") == "bidirectional"
        layout = _attr(n, "layout", 0)      # 0: X [T, B, F], Y [T, D, B, H]; 1: X [B, T, F], Y [B, T, D, H]
        acts = _activations(n)
        nonlinearity = acts[0] if kind == "rnn" and acts else "tanh"      # tanh or relu (_recurrent_check)
        for i in (5, 6):
            if len(n.input) > i and n.input[i]:
                init = imp.consts.get(n.input[i])
                if not (isinstance(init, _Zeros) or init is not None and not np.any(init)):
                    raise _Unsupported("a nonzero initial state")
        def used(i):
            return len(n.output) > i and n.output[i] and (imp.consumers.get(n.output[i]) or n.output[i] in imp.outputs)
        if used(2):
            raise _Unsupported("its final cell state is used")
        w = imp._const(n.input[1], "input weights")
        r = imp._const(n.input[2], "recurrent weights")
        hidden = int(_attr(n, "hidden_size", r.shape[-1]))
        h = hidden

        def torch_order(m):
            return np.concatenate([m[g * h:(g + 1) * h] for g in _TORCH_GATES[kind]], axis=0)

        b = imp._const(n.input[3], "bias") if len(n.input) > 3 and n.input[3] else None
        has_bias = b is not None and bool(np.any(b))      # PyTorch's bias=False exports zeros or nothing
        val = imp._value(n.input[0])
        need = (0, "B", 1) if layout == 0 else ("B", 0, 1)
        if len(val.axes) == 3 and val.axes.index("B") == need.index("B") if "B" in val.axes else False:
            order = [val.axes[need.index(j)] for j in (0, 1)]     # the nnc axes of time and of features
            if order == [1, 0]:         # `conv1d(x).transpose(1, 2)` into a batch-first GRU: one Transpose
                val = _Val(imp._emit("transpose", _tuple(order), [val.ref]), need)
        if val.axes != need:
            if val.axes == ("B", 0, 1):
                raise _Unsupported("an input whose axis 0 it reads as time (layout=0, PyTorch's batch_first=False) "
                                   "where nnc's batch is axis 0: export a batch_first=True module, or transpose "
                                   "the input to [B, T, F] in the module")
            raise _Unsupported(f"an input that is not {'[T, B, F]' if layout == 0 else '[B, T, F] (layout=1)'}")
        settings = (kind, hidden, two, has_bias, nonlinearity)
        below = _stack_below(imp, n)
        stack = imp.stacks.get(id(below)) if below is not None else None
        if stack is None or stack.settings != settings or val.ref != stack.step.id:
            stack = None
        label = stack.step.label if stack else imp._label(n, auto=kind)
        layer = stack.layers if stack else 0
        for d in range(2 if two else 1):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            imp._put(label, f"weight_ih{suffix}", torch_order(w[d]))
            imp._put(label, f"weight_hh{suffix}", torch_order(r[d]))
            if has_bias:
                imp._put(label, f"bias_ih{suffix}", torch_order(b[d][:gates * h]))
                imp._put(label, f"bias_hh{suffix}", torch_order(b[d][gates * h:]))
        args = [str(hidden)]
        if nonlinearity != "tanh":
            args.append(f"nonlinearity={nonlinearity}")
        if layer > 0:
            args.append(f"layers={layer + 1}")
        if two:
            args.append("bidirectional=true")
        if not has_bias:
            args.append("bias=false")
        if stack is None:
            imp._emit(kind, ", ".join(args), [val.ref], label)
            stack = _Stack(imp.steps[-1], settings)
        else:
            stack.step.args = ", ".join(args)
        stack.layers += 1
        imp.stacks[id(n)] = stack
        d_axis = "D" if two else None
        imp.vals[n.output[0]] = _Val(stack.step.id, (0, d_axis, "B", 1) if layout == 0 else ("B", 0, d_axis, 1))
        if used(1) and not two:         # Y_h of a one-way layer: its last time step
            last = imp._emit("select", "0, -1", [stack.step.id])
            imp.vals[n.output[1]] = _Val(last, (None, "B", 0) if layout == 0 else ("B", None, 0))
        elif used(1):       # Y_h [2, B, H]: the forward half of the last step, the reverse half of the first
            rows = []
            for index, cut in (("-1", f"0, 0, {h}"), ("0", f"0, {h}")):
                row = imp._emit("slice", cut, [imp._emit("select", f"0, {index}", [stack.step.id])])
                rows.append(imp._emit("reshape", _tuple([1, h]), [row]))
            both = imp._emit("concat", "", rows, merge=True)
            imp.vals[n.output[1]] = _Val(both, (0, "B", 1) if layout == 0 else ("B", 0, 1))
    return handler


def _shape_op(imp: _Importer, n) -> None:
    const = imp.consts.get(n.input[0])
    if const is not None and not isinstance(const, _Zeros):
        imp.consts[n.output[0]] = np.array(const.shape[_attr(n, "start", 0):_attr(n, "end", None)], dtype=np.int64)
        return
    val = imp._value(n.input[0])
    shape = imp._shape(n.input[0])
    dims = []
    for i, d in enumerate(shape):
        if val.axes[i] == "B":
            dims.append(BATCH)
        elif isinstance(d, int) and d > 0:
            dims.append(d)
        elif d in imp.dim_names:
            dims.append(next(m for m, name in imp.dim_markers.items() if name == d))
        else:
            dims.append(imp._unknown_size(d))
    start = _attr(n, "start", 0)
    end = _attr(n, "end", None)
    imp.consts[n.output[0]] = np.array(dims[start:end], dtype=np.int64)


def _constant_of_shape(imp: _Importer, n) -> None:
    from onnx import numpy_helper
    value = _attr(n, "value")
    if value is not None and numpy_helper.to_array(value).size != 1:
        raise _Unsupported("its `value` must hold one number")
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
    "GlobalAveragePool": _global_pool("avg"),
    "GlobalMaxPool": _global_pool("max"),
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "ConvTranspose": _conv_transpose,
    "Pad": _pad,
    "InstanceNormalization": _instancenorm,
    "GroupNormalization": _groupnorm,
    "Gather": _gather,
    "Slice": _slice,
    "Split": _split,
    "Pow": _pow,
    "Div": _div,
    "Neg": _simple("neg"),
    "Abs": _simple("abs"),
    "Exp": _simple("exp"),
    "Log": _simple("log"),
    "Sqrt": _simple("sqrt"),
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
    "Relu": _simple("relu"),
    "Clip": _clip,
    "Sigmoid": _simple("sigmoid"),
    "Tanh": _simple("tanh"),
    "Gelu": _simple("gelu"),
    "Selu": _simple("selu"),
    "Softplus": _simple("softplus"),
    "Mish": _mish,
    "HardSigmoid": _simple("hardsigmoid"),
    "HardSwish": _simple("hardswish"),
    "LeakyRelu": _leaky,
    "Elu": _elu,
    "PRelu": _prelu,
    "Softmax": _softmax("softmax"),
    "LogSoftmax": _softmax("log_softmax"),
    "Add": _add,
    "Sub": _merge("sub"),
    "Mul": _mul,
    "Sum": _sum,
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Identity": _identity,
    "Dropout": _dropout,
    "Resize": _resize,
    "Upsample": _resize,
    "GRU": _recurrent("gru"),
    "LSTM": _recurrent("lstm"),
    "RNN": _recurrent("rnn"),
    "Shape": _shape_op,
    "ConstantOfShape": _constant_of_shape,
}


# What `_check_op` refuses from a node's attributes alone, whatever its inputs;
# each handler runs after its check.
_ATTRIBUTE_CHECKS: dict[str, Callable] = {
    "Gemm": _gemm_check,
    "BatchNormalization": _batchnorm_check,
    "Clip": _clip_check,
    "Gelu": _gelu_check,
    "Selu": _selu_check,
    "HardSigmoid": _hardsigmoid_check,
    "Flatten": _flatten_check,
    "Resize": _resize_check,
    "Upsample": _resize_check,
    "GRU": _recurrent_check("gru"),
    "LSTM": _recurrent_check("lstm"),
    "RNN": _recurrent_check("rnn"),
}


def _check_op(imp: _Importer, n) -> None:
    """Refuse what nnc cannot express whatever the node reads: an op it has
    no handler for, or an attribute the handler never takes. Run before the
    handler, and alone for a node that reads a value nnc could not make, so
    such a node is named too (and one nnc can express is not)."""
    if n.op_type not in _HANDLERS:
        raise _Unsupported("")
    check = _ATTRIBUTE_CHECKS.get(n.op_type)
    if check is not None:
        check(imp, n)
