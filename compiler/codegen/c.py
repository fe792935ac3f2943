"""The C code generator: an optimised graph and its memory layout -> C99.

In:  an `ir.Graph` (after `passes.optimize`, and `stream.to_stream` for a
     streaming plan), its `memory.Layout` (made with `scratch_bytes` and
     `state_bytes` below) and the weights to embed.
Out: `generate(...)` -> {file name: text}: `NAME.h` (the context type with
     the arena, the API, the sizes as `#define`s, the arena layout),
     `NAME.c` (weights as `static const float` arrays in the kernels'
     layouts, one commented kernel call per step) and `nnc_kernels.h` (the
     kernels, copied beside them so the folder builds alone).

Every value lives at its planned offset in the context's arena; model
inputs are read where the caller keeps them and outputs are copied out at
the end. Named dimensions are `int` parameters of the internal `run`
function, and every size that depends on them is a C expression, so one
plan serves any length up to the bound. The skeleton is the templates
(`templates/c_*.j2`); each step's lines come from `STEPS`, one function per
op of the catalog. Output is deterministic: the same graph and weights give
the same bytes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Mapping

import jinja2
import numpy as np

from ...runtime.weights import Spec, default_init, fold_norm
from .. import ops as catalog
from ..dims import FloorDiv, Sym, Var, evaluate, format_shape, product
from ..ir import Graph, Node
from ..memory import Layout
from . import numpy as numpy_gen
from .names import RESERVED, Namespace

VERSION = numpy_gen.VERSION
MR = 6            # rows of the packed weight blocks: NNC_MR in nnc_kernels.h
NR_MAX = 32       # NNC_NR_MAX: the widest register tile the panel scratch allows for
KC = 256          # NNC_KC
KERNELS_HEADER = "nnc_kernels.h"
LOCALS = frozenset({"A", "g", "in", "shape", "perm", "n", "m", "k", "done", "run"})   # the templates' own names

ACT_CODES = {"relu": "NNC_RELU", "relu6": "NNC_RELU6", "sigmoid": "NNC_SIGMOID", "tanh": "NNC_TANH",
             "gelu": "NNC_GELU", "silu": "NNC_SILU", "selu": "NNC_SELU", "softplus": "NNC_SOFTPLUS",
             "hardsigmoid": "NNC_HARDSIGMOID", "hardswish": "NNC_HARDSWISH", "leaky_relu": "NNC_LEAKY_RELU",
             "elu": "NNC_ELU"}


def kernels_source() -> str:
    return resources.files("nnc.runtime").joinpath("c", KERNELS_HEADER).read_text()


# ------------------------------------------------------------------ sizes as C expressions

def cexpr(d: Any, names: Mapping[str, str]) -> str:
    """A size (int or `Sym`) as a C `long` expression over the dimension
    parameters (`names`: dimension -> C identifier)."""
    if isinstance(d, int):
        return str(d)
    assert isinstance(d, Sym), d
    parts = []
    for atom, coeff in d.terms:
        if isinstance(atom, Var):
            a = names[atom.name]
        else:
            assert isinstance(atom, FloorDiv)
            a = f"nnc_floordiv({cexpr(atom.num, names)}, {atom.den})"
        parts.append(a if coeff == 1 else f"{coeff} * {a}")
    text = " + ".join(parts)
    if d.const:
        text += f" + {d.const}" if d.const > 0 else f" - {-d.const}"
    return f"({text})".replace("+ -", "- ")


def _numel(shape) -> Any:
    return product(shape) if shape else 1


def _is_depthwise(n: Node) -> bool:
    """One input channel per group, several groups: the direct depthwise kernel."""
    a = n.attrs
    return n.op.name in ("conv1d", "conv2d", "depthwise_conv2d") and a["in_channels"] == a["groups"] > 1


def _conv_kind(n: Node, graph: Graph) -> str:
    """The kernel of a convolution: the direct depthwise one, the one-step-
    at-a-time 1-d one for streaming plans (a call sees a few steps), or the
    packed matrix multiply."""
    if _is_depthwise(n):
        return "depthwise"
    if graph.streaming and n.op.name == "conv1d":
        return "direct"
    return "gemm"


def _conv_dims(n: Node) -> tuple[int, int]:
    """(M, K) of the packed matrix multiply of a convolution, per group."""
    a = n.attrs
    g = a["groups"]
    return a["filters"] // g, a["in_channels"] // g * math.prod(a["kernel"])


# ------------------------------------------------------------------ scratch and state for the planner

def scratch_bytes(node: Node, graph: Graph) -> dict[str, int]:
    """name -> bytes of one example, for `memory.layout`."""
    op = node.op.name
    if op in ("conv1d", "conv2d", "depthwise_conv2d"):
        out: dict[str, int] = {}
        if _conv_kind(node, graph) == "gemm":
            _, k = _conv_dims(node)
            out["panel"] = min(k, KC) * NR_MAX * 4
        if node.history:
            c, t = graph.shape_of(node.inputs[0])
            out["wide"] = c * (node.history + evaluate(t, graph.bounds)) * 4
        return out
    if op in ("gru", "lstm"):
        h = node.attrs["hidden"]
        gates = 3 if op == "gru" else 4
        out = {"gates": 2 * gates * h * 4}
        if not graph.streaming:
            out["h"] = h * 4
            if op == "lstm":
                out["c"] = h * 4
        return out
    return {}


state_shapes = numpy_gen.state_shapes
state_bytes = numpy_gen.state_bytes


# ------------------------------------------------------------------ weights in the kernels' layouts

def pack_conv(w: np.ndarray, groups: int) -> np.ndarray:
    """[C_out, C_in/g, *k] -> per group, blocks of MR rows: [g][ceil(M/MR)][K][MR]."""
    cout = w.shape[0]
    m = cout // groups
    k = int(np.prod(w.shape[1:]))
    mb = -(-m // MR)
    flat = w.reshape(groups, m, k)
    padded = np.zeros((groups, mb * MR, k), np.float32)
    padded[:, :m] = flat
    return padded.reshape(groups, mb, MR, k).transpose(0, 1, 3, 2).reshape(-1)


def kernel_arrays(graph: Graph, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays the C file embeds, by parameter key (`label.weight`, ...),
    from PyTorch-layout `state`: batchnorms folded, convolution weights
    packed, dense and recurrent weights transposed."""
    arrays: dict[str, np.ndarray] = {}
    for n in graph.nodes:
        if not n.params:
            continue
        p = {q.name: np.asarray(state[n.param_key(q.name)], np.float32) for q in n.params}
        if n.norm is not None:
            nl = n.norm.label
            p["weight"], p["bias"] = fold_norm(p["weight"], p.get("bias"), state[f"{nl}.weight"], state[f"{nl}.bias"],
                                               state[f"{nl}.running_mean"], state[f"{nl}.running_var"], n.norm.eps)
        op = n.op.name
        kind = _conv_kind(n, graph) if op in ("conv1d", "conv2d", "depthwise_conv2d") else None
        if kind == "gemm":
            p["weight"] = pack_conv(p["weight"], n.attrs["groups"])
        elif kind == "direct":
            w, g = p["weight"], n.attrs["groups"]
            p["weight"] = w.reshape(g, w.shape[0] // g, -1).transpose(0, 2, 1)
        elif op == "dense":
            p["weight"] = np.ascontiguousarray(p["weight"].T)
        elif op in ("gru", "lstm"):
            for key in ("weight_ih_l0", "weight_hh_l0"):
                p[key] = np.ascontiguousarray(p[key].T)
        for name, arr in p.items():
            arrays[n.param_key(name)] = np.ascontiguousarray(arr, np.float32).reshape(-1)
    return arrays


def c_floats(a: np.ndarray, per_line: int = 8) -> str:
    """Exact decimal literals (9 significant digits round-trip a float32)."""
    a = np.asarray(a, np.float32).reshape(-1)
    values = a.astype(np.float64).tolist()
    if np.isfinite(a).all():
        text = ("%.9g," * len(values)) % tuple(values)
        items = text[:-1].split(",")
    else:
        items = [("%.9g" % v) if math.isfinite(v) else ("NAN" if v != v else ("INFINITY" if v > 0 else "-INFINITY"))
                 for v in values]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return ",\n    ".join(lines)


# ------------------------------------------------------------------ one function per op

@dataclass
class _Ctx:
    graph: Graph
    layout: Layout
    values: Namespace
    params: Namespace
    dims: Mapping[str, str]
    inputs: Mapping[str, str]

    def v(self, value: str) -> str:
        return self.inputs.get(value) or self.values(value)

    def p(self, node: Node, name: str) -> str:
        return self.params(node.param_key(name))

    def e(self, d: Any) -> str:
        return cexpr(d, self.dims)

    def ints(self, sizes) -> str:
        """Sizes as a list of C `int` arguments."""
        return ", ".join(f"(int){self.e(d)}" if isinstance(d, Sym) else str(d) for d in sizes)

    def numel(self, value: str) -> str:
        return self.e(_numel(self.graph.shape_of(value)))

    def scratch(self, node: Node, name: str) -> str:
        return self.values(f"{node.label}#{name}")

    def state(self, node: Node, name: str) -> str:
        return self.values(f"{node.label}@{name}")


def _act(n: Node) -> str:
    if n.activation is None:
        return "NNC_ACT_NONE, 0.0f"
    alpha = next(iter(n.activation.attrs.values()), 0.0)
    return f"{ACT_CODES[n.activation.op]}, {_float(alpha)}"


def _float(x: Any) -> str:
    text = "%.9g" % float(x)
    return text + ("f" if any(ch in text for ch in ".e") else ".0f")


def _bias(c: _Ctx, n: Node) -> str:
    has = any(p.name == "bias" for p in n.params) or n.norm is not None
    return c.p(n, "bias") if has else "NULL"


def _conv(c: _Ctx, n: Node) -> list[str]:
    a = n.attrs
    x = c.graph.shape_of(n.inputs[0])
    if len(x) == 2:
        ih, iw, oh, ow = 1, x[1], 1, n.shape[1]
        (kh, kw), (sh, sw), (dh, dw) = (1, a["kernel"][0]), (1, a["stride"][0]), (1, a["dilation"][0])
        pt, pl = 0, a["pads"][0][0]
    else:
        ih, iw, oh, ow = x[1], x[2], n.shape[1], n.shape[2]
        (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
        pt, pl = a["pads"][0][0], a["pads"][1][0]
    if n.history:
        iw = n.history + x[1]       # the convolution runs over history + chunk
        pl = 0
    geo = [x[0], ih, iw, n.shape[0], oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, a["groups"]]
    lines = ["const nnc_conv g = {" + c.ints(geo) + "};"]
    kind = _conv_kind(n, c.graph)
    panel = c.scratch(n, "panel") if kind == "gemm" else "NULL"
    w, b = c.p(n, "weight"), _bias(c, n)
    if n.history:
        lines.append(f"nnc_conv1d_stream(&g, {c.v(n.inputs[0])}, {c.state(n, 'history')}, {n.history}, {w}, {b}, "
                     f"{c.v(n.label)}, {_act(n)}, NNC_CONV_{kind.upper()}, {c.scratch(n, 'wide')}, {panel});")
    elif kind == "depthwise":
        lines.append(f"nnc_depthwise(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)});")
    elif kind == "direct":
        lines.append(f"nnc_conv1d_direct(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)});")
    else:
        lines.append(f"nnc_conv2d(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)}, {panel});")
    return lines


def _dense(c: _Ctx, n: Node) -> list[str]:
    f = n.attrs["in_features"]
    rows = c.e(_numel(n.shape[:-1]))
    return [f"nnc_dense({c.v(n.inputs[0])}, {rows}, {f}, {n.shape[-1]}, {c.p(n, 'weight')}, {_bias(c, n)}, "
            f"{c.v(n.label)}, {_act(n)});"]


def _pool(c: _Ctx, n: Node) -> list[str]:
    a = n.attrs
    x = c.graph.shape_of(n.inputs[0])
    if len(x) == 2:
        dims = [x[0], 1, x[1], 1, n.shape[1], 1, a["kernel"][0], 1, a["stride"][0], 0, a["pads"][0][0]]
    else:
        dims = [x[0], x[1], x[2], n.shape[1], n.shape[2], *a["kernel"], *a["stride"], a["pads"][0][0],
                a["pads"][1][0]]
    args = c.ints(dims)
    is_max = int(n.op.name.startswith("max"))
    return [f"nnc_pool2d({c.v(n.inputs[0])}, {c.v(n.label)}, {args}, {is_max});"]


def _inner(c: _Ctx, value: str) -> str:
    shape = c.graph.shape_of(value)
    return c.e(_numel(shape[1:]))


def _global_avgpool(c: _Ctx, n: Node) -> list[str]:
    x = n.inputs[0]
    return [f"nnc_global_avgpool({c.v(x)}, {c.v(n.label)}, {c.graph.shape_of(x)[0]}, {_inner(c, x)});"]


def _batchnorm(c: _Ctx, n: Node) -> list[str]:
    x = n.inputs[0]
    ps = ", ".join(c.p(n, k) for k in ("running_mean", "running_var", "weight", "bias"))
    return [f"nnc_batchnorm({c.v(x)}, {c.v(n.label)}, {n.shape[0]}, {_inner(c, x)}, {ps}, {_float(n.attrs['eps'])});"]


def _layernorm(c: _Ctx, n: Node) -> list[str]:
    f = n.shape[-1]
    rows = c.e(_numel(n.shape[:-1]))
    return [f"nnc_layernorm({c.v(n.inputs[0])}, {c.v(n.label)}, {rows}, {f}, {c.p(n, 'weight')}, {c.p(n, 'bias')}, "
            f"{_float(n.attrs['eps'])});"]


def _prelu(c: _Ctx, n: Node) -> list[str]:
    x = n.inputs[0]
    return [f"nnc_prelu({c.v(x)}, {c.v(n.label)}, {c.e(n.shape[0])}, {_inner(c, x)}, {c.p(n, 'weight')}, "
            f"{n.attrs['channels']});"]


def _softmax(c: _Ctx, n: Node) -> list[str]:
    axis = n.attrs["axis"]
    outer, inner = c.e(_numel(n.shape[:axis])), c.e(_numel(n.shape[axis + 1:]))
    log = int(n.op.name == "log_softmax")
    return [f"nnc_softmax({c.v(n.inputs[0])}, {c.v(n.label)}, {outer}, (int){c.e(n.shape[axis])}, {inner}, {log});"]


def _activation(c: _Ctx, n: Node) -> list[str]:
    alpha = next(iter(n.attrs.values()), 0.0)
    return [f"nnc_activation({c.v(n.inputs[0])}, {c.v(n.label)}, {c.numel(n.label)}, {ACT_CODES[n.op.name]}, "
            f"{_float(alpha)});"]


def _merge(c: _Ctx, n: Node) -> list[str]:
    ins = ", ".join(c.v(v) for v in n.inputs)
    product_ = int(n.op.name == "mul")
    act = _act(n) if n.op.name == "add" else "NNC_ACT_NONE, 0.0f"
    return [f"const float *const in[{len(n.inputs)}] = {{{ins}}};",
            f"nnc_merge(in, {len(n.inputs)}, {c.v(n.label)}, {c.numel(n.label)}, {product_}, {act});"]


def _sub(c: _Ctx, n: Node) -> list[str]:
    return [f"nnc_sub({c.v(n.inputs[0])}, {c.v(n.inputs[1])}, {c.v(n.label)}, {c.numel(n.label)});"]


def _view(c: _Ctx, n: Node) -> list[str]:
    src = n.inputs[0]
    if src not in c.inputs and c.layout.places[src] == c.layout.places[n.label]:
        return ["/* a view of its input: nothing to compute */"]
    return [f"memmove({c.v(n.label)}, {c.v(src)}, (size_t){c.numel(n.label)} * sizeof(float));"]


def _concat(c: _Ctx, n: Node) -> list[str]:
    axis = n.attrs["axis"]
    outer, inner = c.e(_numel(n.shape[:axis])), c.e(_numel(n.shape[axis + 1:]))
    lines, start = [], 0
    total = c.e(n.shape[axis])
    for v in n.inputs:
        size = c.graph.shape_of(v)[axis]
        place = c.layout.places.get(v)
        if place is not None and place.within == n.label:
            lines.append(f"/* `{_comment_safe(v)}` was written into its slice */")
        else:
            lines.append(f"nnc_concat_part({c.v(v)}, {c.v(n.label)}, {outer}, {c.e(size)}, {inner}, {c.e(start)}, "
                         f"{total});")
        start = start + size
    return lines


def _transpose(c: _Ctx, n: Node) -> list[str]:
    x = c.graph.shape_of(n.inputs[0])
    perm = n.attrs["perm"]
    if len(x) > 4:
        raise NotImplementedError("transpose of more than 4 axes per example in C")
    shape = c.ints(x)
    return [f"const int shape[{len(x)}] = {{{shape}}}, perm[{len(x)}] = {{{', '.join(map(str, perm))}}};",
            f"nnc_transpose({c.v(n.inputs[0])}, {c.v(n.label)}, {len(x)}, shape, perm);"]


def _upsample(c: _Ctx, n: Node) -> list[str]:
    x = c.graph.shape_of(n.inputs[0])
    scale = n.attrs["scale"]
    if len(x) == 2:
        dims = [x[0], 1, x[1], 1, scale if isinstance(scale, int) else scale[0]]
    else:
        sh, sw = (scale, scale) if isinstance(scale, int) else scale
        dims = [x[0], x[1], x[2], sh, sw]
    args = c.ints(dims)
    return [f"nnc_upsample({c.v(n.inputs[0])}, {c.v(n.label)}, {args});"]


def _recurrent(c: _Ctx, n: Node) -> list[str]:
    x = c.graph.shape_of(n.inputs[0])
    h = n.attrs["hidden"]
    bias = n.attrs["bias"]
    ws = [c.p(n, "weight_ih_l0"), c.p(n, "weight_hh_l0"),
          c.p(n, "bias_ih_l0") if bias else "NULL", c.p(n, "bias_hh_l0") if bias else "NULL"]
    lines = []
    if c.graph.streaming:
        state = [c.state(n, "h")] + ([c.state(n, "c")] if n.op.name == "lstm" else [])
    else:
        state = [c.scratch(n, "h")] + ([c.scratch(n, "c")] if n.op.name == "lstm" else [])
        lines += [f"memset({s}, 0, {h} * sizeof(float));" for s in state]
    args = [f"(int){c.e(x[0])}", str(x[1]), str(h), c.v(n.inputs[0]), *ws, *state, c.v(n.label), c.scratch(n, "gates")]
    lines.append(f"nnc_{n.op.name}({', '.join(args)});")
    return lines


STEPS: dict[str, Callable[[_Ctx, Node], list[str]]] = {
    "conv1d": _conv, "conv2d": _conv, "depthwise_conv2d": _conv,
    "dense": _dense,
    "maxpool1d": _pool, "maxpool2d": _pool, "avgpool1d": _pool, "avgpool2d": _pool,
    "global_avgpool": _global_avgpool,
    "batchnorm": _batchnorm, "layernorm": _layernorm, "prelu": _prelu,
    "softmax": _softmax, "log_softmax": _softmax,
    "flatten": _view, "reshape": _view, "dropout": _view, "identity": _view,
    "transpose": _transpose, "upsample": _upsample,
    "add": _merge, "mul": _merge, "sub": _sub, "concat": _concat,
    "gru": _recurrent, "lstm": _recurrent,
    **{a: _activation for a in catalog.ACTIVATIONS},
}
assert set(STEPS) == {e.name for e in catalog.CATALOG.values()}, "every catalog op needs a C step"


# ------------------------------------------------------------------ rendering

def _comment_safe(text: str) -> str:
    """Text for inside a C comment: no comment terminator, no line breaks."""
    return re.sub(r"[^ -~]", "?", text).replace("*/", "* /").replace("/*", "/ *")


def _comment(n: Node) -> str:
    act = f" -> {n.activation.op}" if n.activation else ""
    norm = f" + {n.norm.label}" if n.norm else ""
    return _comment_safe(f"{n.label}: {n.op.name}{norm}{act} -> {format_shape(n.shape)}")


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("nnc.compiler.codegen", "templates"),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, autoescape=False)


@dataclass(frozen=True, slots=True)
class Port:
    """A model input or output as the C API sees it."""

    name: str          # the API name
    ident: str         # the C parameter
    size: str          # floats of one example, as a C expression over the dimensions
    bound: int         # floats at the bounds
    shape: str         # for comments
    pre: int = 1       # streaming: floats before the time axis (its outer extent) ...
    post: int = 1      # ... and after it, per step


def generate(graph: Graph, layout: Layout, *, name: str, state: Mapping[str, np.ndarray] | None = None,
             source: str | None = None) -> dict[str, str]:
    """{file name: text} of the C plan; `state` (PyTorch layout) defaults to
    the seeded initialisation."""
    specs = {k: Spec(p.shape, p.init) for k, p in graph.param_specs().items()}
    if state is None:
        state = default_init(specs)
    prefix = name                        # build.module_name: sanitised, and never nnc_*
    values = Namespace(prefix="v_")
    params = Namespace(prefix="w_")
    dim_names = Namespace(reserved=RESERVED | LOCALS)
    dims = {d: dim_names(("d_" + d) if re.match(r"(?i)(v|w|y|d)_|nnc", d) else d) for d in sorted(graph.bounds)}
    inputs = {i.name: values(i.name) for i in graph.inputs}
    c = _Ctx(graph, layout, values, params, dims, inputs)

    arrays = kernel_arrays(graph, state)
    weights = [(params(k), a.size, c_floats(a)) for k, a in arrays.items()]

    # pointers into the arena: buffers first, then concat slices
    pointers, slices = [], []
    for n in graph.nodes:
        place = layout.places[n.label]
        if place.within is not None:
            lo = place.channels[0]
            slices.append((values(n.label), f"{values(place.within)} + {lo} * {c.e(_numel(n.shape[1:]))}",
                           _comment_safe(n.label)))
        else:
            pointers.append((values(n.label), layout.offset(n.label) // 4, _comment_safe(n.label)))
    for label, names in layout.scratch.items():
        for s, bname in sorted(names.items()):
            pointers.append((values(bname), layout.plan.offsets[bname] // 4, _comment_safe(bname)))
    for key in state_shapes(graph):
        pointers.append((values(key), layout.plan.offsets[key] // 4, _comment_safe(key)))

    steps = []
    for n in graph.nodes:
        steps.append((_comment(n), STEPS[n.op.name](c, n)))

    t = graph.time_dim if graph.streaming else None

    def port(pname: str, ident: str, shape) -> Port:
        pre = post = 1
        if t is not None:
            axis = next(i for i, d in enumerate(shape) if isinstance(d, Sym) and str(d) == t)
            pre, post = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
        return Port(pname, ident, c.e(_numel(shape)), evaluate(_numel(shape), graph.bounds), format_shape(shape),
                    pre, post)

    in_ports = [port(i.name, inputs[i.name], i.shape) for i in graph.inputs]
    outputs = Namespace(prefix="y_")
    out_ports = [port(o.name, outputs(o.name), graph.shape_of(o.value)) for o in graph.outputs]
    out_values = [c.v(o.value) for o in graph.outputs]
    checks = _dim_checks(graph, c)

    used = "\n".join([line for _, lines in steps for line in lines] + [e for _, e, _ in slices] + out_values)
    unused = [ident for ident, _, _ in pointers + slices if not re.search(rf"\b{ident}\b", used)]
    state_regions = [(layout.plan.offsets[k] // 4, sz // 4) for k, sz in sorted(state_bytes(graph).items())]
    ctx = dict(
        name=prefix, upper=prefix.upper(), version=VERSION, source=_comment_safe(source or graph.path),
        arena_bytes=layout.plan.arena_bytes, arena_floats=max(1, -(-layout.plan.arena_bytes // 4)),
        naive_bytes=layout.naive_bytes, lower_bound_bytes=layout.lower_bound_bytes,
        layout=[_comment_safe(r) for r in numpy_gen._layout_rows(layout)],
        dims=[(d, dims[d], graph.bounds[d]) for d in sorted(graph.bounds)],
        inputs=in_ports, outputs=out_ports, out_values=out_values,
        weights=weights, pointers=pointers, unused=unused, slices=slices, steps=steps, checks=checks,
        streaming=graph.streaming, time=(dims[t] if t else None), state_regions=state_regions,
        chunk=graph.bounds.get(t, 0) if t else 0,
    )
    env = _env()
    return {f"{prefix}.h": env.get_template("c_header.h.j2").render(**ctx),
            f"{prefix}.c": env.get_template("c_source.c.j2").render(**ctx),
            KERNELS_HEADER: kernels_source()}


def _dim_checks(graph: Graph, c: _Ctx) -> list[str]:
    """C conditions that every symbolic size is at least 1 (a length too short
    for the model's valid convolutions fails instead of reading garbage)."""
    seen: dict[str, None] = {}
    for n in graph.nodes:
        for d in n.shape:
            if isinstance(d, Sym):
                seen.setdefault(f"{c.e(d)} < 1", None)
    return list(seen)

