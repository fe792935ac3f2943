"""The NumPy code generator: an optimised graph and its memory layout -> the
source of an importable Python module.

In:  an `ir.Graph` (after `passes.optimize`) and its `memory.Layout` (made
     with `scratch_bytes` below, so the arena holds every kernel's scratch).
Out: the text of `NAME.py` (template `templates/numpy_module.py.j2`): a
     `Model` class whose `_views` hands every kernel its planned arena views
     and whose `_run` is one commented kernel call per step.

Every identifier in the module (values, inputs, parameters, named
dimensions) comes from one `names.Namespace`, so any label or dimension name
(`lambda`, `self`, `batch`, `v`, `K`) gives a module that imports; every other
string (the source path, names in the docstring, dict keys, comments) goes
through `names.py_literal`, `py_doc` or `py_comment`, so none can run as code.
The API still reports inputs and dimensions by their real names (`INPUTS`,
`DIMS`); `_views(batch, *dims)` takes the dimension sizes in `DIMS` order.

The skeleton is the template; each step's call comes from `KERNELS`, one
function per op of the catalog, which names the runtime kernel, its
arguments and its scratch function (`runtime/kernels.py` pairs every kernel
`NAME` that needs temporaries with `NAME_scratch`). Kernels that tile their
work get tiles chosen here within a scratch budget from the plan's room
("scratch budgets" below); recurrent nodes get their weights packed once, in
`_prepare`. Output is deterministic: the same graph gives the same bytes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jinja2

from ...runtime import kernels as K
from .. import ops as catalog
from ..dims import FloorDiv, Sym, Var, evaluate, floordiv, format_shape
from .. import memory
from ..ir import Graph, Node, integer_limits
from ..memory import Layout, min_dims
from .names import Namespace, py_comment, py_doc, py_literal

VERSION = "0.1.0"


class _Batch:
    """Stands for the batch size in a kernel call's shapes."""

    def __repr__(self) -> str:
        return "batch"


BATCH = _Batch()


@dataclass(frozen=True, slots=True)
class Ref:
    """A value or parameter in a kernel call, rendered by the generator."""

    kind: str          # "value", "param", "pack" (a recurrent node's packed weights), "none"
    key: str = ""


@dataclass(frozen=True, slots=True)
class Call:
    """One kernel call: `K.fn(*args, **kwargs)`; `scratch` is the scratch
    function's call (`K.fn_scratch(*scratch_args, **scratch_kwargs)`) if any."""

    fn: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    scratch_args: tuple[Any, ...] | None = None
    scratch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    scratch_fn: str | None = None          # default: f"{fn}_scratch"

    @property
    def scratch_name(self) -> str:
        return self.scratch_fn or f"{self.fn}_scratch"


def _shape(graph: Graph, value: str) -> tuple:
    return (BATCH, *graph.shape_of(value))


def _act(n: Node) -> tuple | None:
    a = n.activation
    return None if a is None else (a.op, *a.attrs.values())


def _bias(n: Node) -> Ref:
    has = any(p.name == "bias" for p in n.params) or n.norm is not None
    return Ref("param", f"{n.label}.bias") if has else Ref("none")


def _w(n: Node, name: str = "weight") -> Ref:
    return Ref("param", f"{n.label}.{name}")


def _x(n: Node, i: int = 0) -> Ref:
    return Ref("value", n.inputs[i])


def _out(n: Node) -> Ref:
    return Ref("value", n.label)


def _weight_shape(n: Node) -> tuple[int, ...]:
    return next(p.shape for p in n.params if p.name == "weight")


# ------------------------------------------------------------------ scratch budgets
# A kernel that tiles its work (convolutions, pooling, fused activations,
# attention, recurrent layers) gets tiles chosen within a budget: the float32
# elements of scratch per example its tiles may take. A step's budget is a
# share of the room its live values leave below their peak (the arena's lower
# bound) plus a share of that peak, so that scratch fills the gaps of the plan
# instead of growing it, and at most SCRATCH_CAP (a tile that large stays in
# L2 and its loops are few). The shares are tried from the most generous
# (`SHARES`): the first whose plan stays within TARGET times the lower bound
# is kept (larger tiles mean fewer NumPy calls). A kernel's smallest tile may
# still exceed a tiny budget.

SCRATCH_CAP = 1 << 20      # floats (4 MiB) per example: the largest budget
SHARES = ((1.0, 0.08), (1.0, 0.05), (0.75, 0.04), (0.5, 0.04), (0.25, 0.02))   # (of the room, of the peak)
TARGET = 1.095             # the arena the budgets may give, over the lower bound (the goal is 1.10)

_BUDGETS = memory.LastGraph()     # per thread: the budgets of the last graph `_budgets` saw


def _budgets(graph: Graph) -> dict[str, int]:
    """node label -> its budget (floats per example), computed once per graph
    and thread (`memory.LastGraph`: a layout and the code generated for it
    read the same budgets, whatever another thread compiles meanwhile)."""
    got = _BUDGETS.get(graph)
    if got is not None:
        return got
    live, peak = memory.live_profile(graph)
    state = state_bytes(graph)
    try:
        for room_share, peak_share in SHARES:
            budgets = {n.label: int(min(SCRATCH_CAP, max(1, (room_share * (peak - live[i]) + peak_share * peak) // 4)))
                       for i, n in enumerate(graph.nodes)}
            _BUDGETS.put(graph, budgets)               # what `budget` reads while this trial is laid out
            trial = memory.layout(graph, scratch=scratch_bytes, persistent=state)
            if trial.plan.arena_bytes <= TARGET * peak + sum(state.values()) or not trial.scratch:
                break          # met, or no kernel took scratch: a smaller share cannot shrink the arena
    except BaseException:
        _BUDGETS.put(None, None)                       # no half-chosen budgets left for this graph
        raise
    return budgets


def budget(graph: Graph, n: Node) -> int:
    """The scratch budget of `n`'s kernel, in float32 elements per example."""
    return _budgets(graph)[n.label]


def tiles(fn: str, graph: Graph, n: Node, *args: Any, **kwargs: Any) -> Any:
    """The tiles of kernel `fn` for `n` (`K.fn_tiles`), chosen within its
    budget at the bounds of the named dimensions: kernels whose tiles depend
    on the sizes get them as `tiles=`, so that a shorter input takes the same
    tiles or smaller ones and its scratch never outgrows the plan."""
    fit = getattr(K, f"{fn}_tiles")
    return fit(*_evaluate(args, graph.bounds), **_evaluate(kwargs, graph.bounds), budget=budget(graph, n))


# ------------------------------------------------------------------ one entry per op

def _conv(g: Graph, n: Node) -> Call:
    rank = len(n.shape) - 1
    a = n.attrs
    if n.history:
        geo = dict(dilation=a["dilation"][0], groups=a["groups"], act=_act(n))
        return Call("conv1d_stream", (_x(n), Ref("value", f"{n.label}@history"), _w(n), _bias(n), _out(n)), geo,
                    (_shape(g, n.inputs[0]), _weight_shape(n)), {"history": n.history, **geo})
    if rank == 2:
        geo = dict(stride=a["stride"], padding=a["pads"], dilation=a["dilation"], groups=a["groups"])
    else:
        geo = dict(stride=a["stride"][0], padding=a["pads"][0], dilation=a["dilation"][0], groups=a["groups"])
    fn = f"conv{rank}d"
    geo["act"] = _act(n)
    geo["tiles"] = tiles(fn, g, n, _shape(g, n.inputs[0]), _weight_shape(n), **geo)
    if _packs(g, n, geo):
        return Call(fn, (_x(n), _w(n), _bias(n), _out(n)), {**geo, "pack": Ref("pack", n.label)},
                    (_shape(g, n.inputs[0]), _weight_shape(n)), {**geo, "packed": True})
    return Call(fn, (_x(n), _w(n), _bias(n), _out(n)), geo, (_shape(g, n.inputs[0]), _weight_shape(n)), geo)


_PACK_GEOMETRY = ("stride", "padding", "dilation")     # what `K.conv2d_pack` takes of a conv2d call


def _packs(g: Graph, n: Node, geo: Mapping[str, Any]) -> bool:
    """Whether conv2d `n` (its call's `geo`, tiles chosen) runs on weights
    packed when they are loaded (`K.conv2d_packs`: a narrow one-channel input
    whose im2col columns the plan tiles); only for an input of fixed size,
    which the pack is made for."""
    shape = g.shape_of(n.inputs[0])
    if n.op.name != "conv2d" or not all(isinstance(d, int) for d in shape):
        return False
    return K.conv2d_packs((1, *shape), _weight_shape(n), groups=geo["groups"], tiles=geo["tiles"],
                          **{k: geo[k] for k in _PACK_GEOMETRY})


def _dense(g: Graph, n: Node) -> Call:
    return Call("dense", (_x(n), _w(n), _bias(n), _out(n)), {"act": _act(n)},
                (_shape(g, n.inputs[0]), _weight_shape(n)), {"act": _act(n), "budget": budget(g, n)})


def _pool(g: Graph, n: Node) -> Call:
    a = n.attrs
    if len(n.shape) == 2:
        geo = dict(kernel=a["kernel"][0], stride=a["stride"][0], padding=a["pads"][0])
    else:
        geo = dict(kernel=a["kernel"], stride=a["stride"], padding=a["pads"])
    geo["tiles"] = tiles(n.op.name, g, n, _shape(g, n.inputs[0]), **geo)
    return Call(n.op.name, (_x(n), _out(n)), geo, (_shape(g, n.inputs[0]),), geo)


def _plain(fn: str, *attrs: str) -> Callable[[Graph, Node], Call]:
    def entry(g: Graph, n: Node) -> Call:
        return Call(fn, (_x(n), _out(n), *(n.attrs[a] for a in attrs)))
    return entry


def _activation(g: Graph, n: Node) -> Call:
    params = tuple(n.attrs.values())
    needs = K.activation_scratch((n.op.name, *params), (1, 1))
    if not needs:
        return Call(n.op.name, (_x(n), _out(n), *params))
    return Call(n.op.name, (_x(n), _out(n), *params), {}, ((n.op.name, *params), _shape(g, n.label),
                                                             budget(g, n)), scratch_fn="activation_scratch")


def _scratch_fn_for(fn: str) -> Callable[[Graph, Node], Call]:
    """Kernels whose scratch depends on the output shape only."""
    def entry(g: Graph, n: Node) -> Call:
        args: tuple = (_x(n), _out(n))
        if fn == "layernorm":
            args = (_x(n), _w(n), _w(n, "bias"), n.attrs["eps"], _out(n))
        elif fn == "prelu":
            args = (_x(n), _w(n), _out(n))
        return Call(fn, args, {}, (_shape(g, n.label),))
    return entry


def _softmax(g: Graph, n: Node) -> Call:
    axis = n.attrs["axis"] + 1          # the kernels count the batch axis
    return Call(n.op.name, (_x(n), axis, _out(n)), {}, (_shape(g, n.label), axis))


def _batchnorm(g: Graph, n: Node) -> Call:
    return Call("batchnorm", (_x(n), _w(n, "running_mean"), _w(n, "running_var"), _w(n), _w(n, "bias"),
                              n.attrs["eps"], _out(n)))


def _add(g: Graph, n: Node) -> Call:
    ins = tuple(Ref("value", v) for v in n.inputs)
    return Call("add", (ins, _out(n)), {"act": _act(n)}, (_shape(g, n.label),),
                {"act": _act(n), "budget": budget(g, n)})


def _sub(g: Graph, n: Node) -> Call:
    return Call("sub", (_x(n), _x(n, 1), _out(n)))


def _mul(g: Graph, n: Node) -> Call:
    return Call("mul", (tuple(Ref("value", v) for v in n.inputs), _out(n)))


def _view(g: Graph, n: Node) -> Call:
    return Call("copy", (_x(n), _out(n)))


def _transpose(g: Graph, n: Node) -> Call:
    return Call("transpose", (_x(n), tuple(n.attrs["perm"]), _out(n)))


def _upsample(g: Graph, n: Node) -> Call:
    if n.attrs.get("mode", "nearest") != "nearest":        # linear, bilinear
        return Call("upsample_linear", (_x(n), n.attrs["scale"], _out(n)), {},
                    (_shape(g, n.inputs[0]), n.attrs["scale"]))
    return Call("upsample", (_x(n), n.attrs["scale"], _out(n)))


def _concat(g: Graph, n: Node) -> Call:
    return Call("concat", (tuple(Ref("value", v) for v in n.inputs), n.attrs["axis"], _out(n)))


def _stack_weights(n: Node) -> tuple:
    """Four per layer and direction, PyTorch's order; Ref("none") for absent biases."""
    from ..ops.recurrent import parts
    out = []
    for _, sfx in parts(n.attrs):
        out += [_w(n, f"weight_ih{sfx}"), _w(n, f"weight_hh{sfx}")]
        out += [_w(n, f"bias_ih{sfx}"), _w(n, f"bias_hh{sfx}")] if n.attrs["bias"] else [Ref("none"), Ref("none")]
    return tuple(out)


def _rnn_geometry(n: Node) -> dict[str, Any]:
    a = n.attrs
    return dict(hidden=a["hidden"], layers=a["layers"], dirs=2 if a["bidirectional"] else 1)


def _recurrent(g: Graph, n: Node) -> Call:
    """Every GRU, LSTM and RNN layer (stacked, two-way, streamed) runs on the
    recurrent engine (runtime/recurrent_infer.py) with its weights packed
    once when they are loaded (`_prepare`), in chunks of `tiles` steps."""
    geo = _rnn_geometry(n)
    shape = _shape(g, n.inputs[0])
    steps = tiles("rnn", g, n, n.op.name, shape, **geo)
    kw: dict[str, Any] = {"tiles": steps}
    if g.streaming:
        kw["states"] = tuple(Ref("value", f"{n.label}@{s}") for s in _STATE[n.op.name])
    return Call("rnn_forward", (_x(n), Ref("pack", n.label), _out(n)), kw, (n.op.name, shape),
                {**geo, "streaming": g.streaming, "tiles": steps}, scratch_fn="rnn_scratch")


_STATE = {"gru": ("h",), "lstm": ("h", "c"), "rnn": ("h",)}


def state_shapes(graph: Graph) -> dict[str, tuple]:
    """The carried state of a streaming plan, per example: name -> shape."""
    shapes: dict[str, tuple] = {}
    if not graph.streaming:
        return shapes
    for n in graph.nodes:
        if n.history:
            shapes[f"{n.label}@history"] = (graph.shape_of(n.inputs[0])[0], n.history)
        if n.op.name in _STATE:
            for s in _STATE[n.op.name]:
                shapes[f"{n.label}@{s}"] = (n.attrs["hidden"] * n.attrs["layers"],)   # every layer's
        if n.op.name in ("positional", "attention"):      # steps seen; attention's key/value cache
            shapes[f"{n.label}@position"] = (1,)
        if n.op.name == "attention":
            cache = graph.bounds[graph.time_dim]
            shapes[f"{n.label}@keys"] = (cache, n.shape[1])
            shapes[f"{n.label}@values"] = (cache, n.shape[1])
    return shapes


def state_bytes(graph: Graph) -> dict[str, int]:
    return {k: math.prod(s) * 4 for k, s in state_shapes(graph).items()}


def gate_regions(graph: Graph, layout: Layout) -> list[tuple[int, tuple[tuple[int, int], ...]]]:
    """The graph's gates as arena regions: per number of steps w (ascending),
    the (offset, bytes) per example of the state that stays clear until a
    stream has run w steps since its reset (stream.py)."""
    sizes = state_bytes(graph)
    by: dict[int, list[tuple[int, int]]] = {w: [] for _, w in graph.silent}     # steps run one at a time too
    for label, w in graph.gates:
        regions = [(layout.plan.offsets[k], b) for k, b in sizes.items() if k.rpartition("@")[0] == label]
        assert regions, f"gated `{label}` has no state (stream.STATEFUL and state_shapes disagree)"
        by.setdefault(w, []).extend(regions)
    return [(w, tuple(sorted(r))) for w, r in sorted(by.items())]


def _conv_transpose(g: Graph, n: Node) -> Call:
    a = n.attrs
    if len(n.shape) == 2:
        geo = dict(stride=a["stride"][0], padding=a["pads"][0], output_padding=a["output_padding"][0],
                   dilation=a["dilation"][0], groups=a["groups"])
    else:
        geo = dict(stride=a["stride"], padding=a["pads"], output_padding=a["output_padding"],
                   dilation=a["dilation"], groups=a["groups"])
    geo["tiles"] = tiles(n.op.name, g, n, _shape(g, n.inputs[0]), _weight_shape(n), **geo)
    return Call(n.op.name, (_x(n), _w(n), _bias(n), _out(n)), geo, (_shape(g, n.inputs[0]), _weight_shape(n)), geo)


# section 9's axis ops (compiler/ops/reduce.py); the kernels count the batch as axis 0
def _glu(g: Graph, n: Node) -> Call:
    return Call("glu", (_x(n), n.attrs["axis"] + 1, _out(n)))


def _slice(g: Graph, n: Node) -> Call:
    a = n.attrs
    return Call("slice_axis", (_x(n), a["axis"] + 1, a["start"], a["stop"], a["step"], _out(n)))


def _select(g: Graph, n: Node) -> Call:
    return Call("select_axis", (_x(n), n.attrs["axis"] + 1, n.attrs["index"], _out(n)))


def _reduce(g: Graph, n: Node) -> Call:
    return Call(f"reduce_{n.op.name}", (_x(n), tuple(a + 1 for a in n.attrs["axes"]), _out(n)))


def _groupnorm(g: Graph, n: Node) -> Call:
    a = n.attrs
    gamma, beta = (_w(n), _w(n, "bias")) if n.params else (Ref("none"), Ref("none"))
    return Call("groupnorm", (_x(n), gamma, beta, a["eps"], a["groups"], _out(n)), {},
                (_shape(g, n.label), a["groups"]))


def _adaptive(g: Graph, n: Node) -> Call:
    size = n.attrs["size"]
    if len(size) == 1:
        return Call("adaptive_avgpool1d", (_x(n), _out(n)), {"size": size[0]})
    return Call("adaptive_avgpool2d", (_x(n), _out(n)), {"size": size}, (_shape(g, n.inputs[0]),), {"size": size})


def _pad(g: Graph, n: Node) -> Call:
    a = n.attrs
    return Call("pad", (_x(n), _out(n), a["pads"], a["mode"], a["value"]))


# the transformer family (compiler/ops/attention.py, runtime/attention.py)
def _embedding(g: Graph, n: Node) -> Call:
    return Call("embedding", (_x(n), _w(n), _out(n)))


def _positional(g: Graph, n: Node) -> Call:
    if g.streaming:
        return Call("positional_stream", (_x(n), _w(n), Ref("value", f"{n.label}@position"), _out(n)))
    return Call("positional", (_x(n), _w(n), _out(n)))


def _attention(g: Graph, n: Node) -> Call:
    b = n.attrs["bias"]
    weights = (_w(n, "in_proj_weight"), _w(n, "in_proj_bias") if b else Ref("none"), _w(n, "out_proj.weight"),
               _w(n, "out_proj.bias") if b else Ref("none"))
    heads = n.attrs["heads"]
    if g.streaming:
        cache = g.bounds[g.time_dim]
        state = tuple(Ref("value", f"{n.label}@{s}") for s in ("keys", "values", "position"))
        return Call("attention_stream", (_x(n), *weights, *state, _out(n)), {"heads": heads},
                    (_shape(g, n.inputs[0]), heads, cache))
    geo = {"causal": n.attrs["causal"]}
    geo["tiles"] = tiles("attention", g, n, _shape(g, n.inputs[0]), heads, **geo)
    return Call("attention", (_x(n), *weights, _out(n)), {"heads": heads, **geo}, (_shape(g, n.inputs[0]), heads),
                geo)


def _binary(fn: str) -> Callable[[Graph, Node], Call]:
    def entry(g: Graph, n: Node) -> Call:
        return Call(fn, (_x(n), _x(n, 1), _out(n)))
    return entry


KERNELS: dict[str, Callable[[Graph, Node], Call]] = {
    "conv1d": _conv, "conv2d": _conv, "depthwise_conv2d": _conv,
    "conv_transpose1d": _conv_transpose, "conv_transpose2d": _conv_transpose,
    "dense": _dense,
    "maxpool1d": _pool, "maxpool2d": _pool, "avgpool1d": _pool, "avgpool2d": _pool,
    "global_avgpool": _plain("global_avgpool"),
    "batchnorm": _batchnorm, "layernorm": _scratch_fn_for("layernorm"), "prelu": _scratch_fn_for("prelu"),
    "softmax": _softmax, "log_softmax": _softmax,
    "flatten": _view, "reshape": _view, "dropout": _view, "identity": _view,
    "transpose": _transpose, "upsample": _upsample, "pad": _pad,
    "global_maxpool": _plain("global_maxpool"), "adaptive_avgpool1d": _adaptive, "adaptive_avgpool2d": _adaptive,
    "groupnorm": _groupnorm, "instancenorm": _groupnorm,
    "add": _add, "sub": _sub, "mul": _mul, "concat": _concat,
    "gru": _recurrent, "lstm": _recurrent, "rnn": _recurrent,
    **{a: _activation for a in catalog.ACTIVATIONS},
    "glu": _glu, "slice": _slice, "select": _select, "mean": _reduce, "sum": _reduce, "max": _reduce,
    "embedding": _embedding, "positional": _positional, "attention": _attention,
    "matmul": _binary("matmul"), "div": _binary("div"),
}


# ------------------------------------------------------------------ scratch sizes for the planner

def _evaluate(x: Any, bounds: Mapping[str, int]) -> Any:
    if x is BATCH:
        return 1
    if isinstance(x, Sym):
        return evaluate(x, bounds)
    if isinstance(x, tuple):
        return tuple(_evaluate(i, bounds) for i in x)
    return x


def scratch_bytes(node: Node, graph: Graph) -> dict[str, int]:
    """name -> bytes of one example, for `memory.layout`."""
    call = KERNELS[node.op.name](graph, node)
    if call.scratch_args is None:
        return {}
    fn = getattr(K, call.scratch_name)
    shapes = fn(*_evaluate(call.scratch_args, graph.bounds), **_evaluate(dict(call.scratch_kwargs), graph.bounds))
    return {k: math.prod(s) * 4 for k, s in shapes.items()}


# ------------------------------------------------------------------ rendering

@functools.cache       # one environment: its templates compile once per process
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("nnc.compiler.codegen", "templates"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, autoescape=False)
    env.filters.update(py=py_literal, doc=py_doc)
    return env


def code(x: Any, dim: Callable[[str], str] | None = None) -> str:
    """Python source for a constant of a kernel call (shapes may hold `batch`
    and named dimensions; `dim` gives a dimension's identifier in the
    generated code, the name itself by default)."""
    if isinstance(x, tuple):
        inner = ", ".join(code(i, dim) for i in x)
        return f"({inner},)" if len(x) == 1 else f"({inner})"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {code(v, dim)}" for k, v in x.items()) + "}"
    if isinstance(x, Sym):
        return f"({_renamed(x, dim) if dim else x})"
    if isinstance(x, _Batch):
        return "batch"
    if isinstance(x, (bool, int, float, str)) or x is None:
        return py_literal(x)
    raise TypeError(f"cannot write {x!r} as code")


def _renamed(x: Sym, dim: Callable[[str], str]) -> Sym | int:
    """The same size with every named dimension replaced by its identifier."""
    total: Sym | int = x.const
    for atom, c in x.terms:
        if isinstance(atom, Var):
            part = Sym.var(dim(atom.name))
        else:
            assert isinstance(atom, FloorDiv)
            part = floordiv(_renamed(atom.num, dim), atom.den)
        total = total + c * part
    return total


class _Render:
    def __init__(self, graph: Graph, layout: Layout):
        self.graph = graph
        self.layout = layout
        self.values = Namespace()
        self.params = Namespace(prefix="p_")
        self.inputs = {i.name: self.values(i.name) for i in graph.inputs}
        # named dimensions are locals of `_views`: identifiers from the same
        # namespace, keyed apart from the labels
        self.dims = {d: self.values(("dim", d), d) for d in sorted(graph.bounds)}

    def dim(self, name: str) -> str:
        return self.dims.get(name) or self.values(("dim", name), name)

    def code(self, x: Any) -> str:
        return code(x, self.dim)

    def arg(self, x: Any) -> str:
        if isinstance(x, Ref):
            if x.kind == "value":
                return self.inputs.get(x.key) or f"v.{self.values(x.key)}"
            if x.kind == "param":
                return f"self.{self.params(x.key)}"
            if x.kind == "pack":
                return f"self.{self.params(('pack', x.key), x.key + '_pack')}"
            return "None"
        if isinstance(x, tuple) and x and all(isinstance(i, Ref) for i in x):
            return "(" + ", ".join(self.arg(i) for i in x) + ("," if len(x) == 1 else "") + ")"
        return self.code(x)

    def scratch_view(self, n: Node) -> str:
        return f"v.{self.values(n.label + '#scratch')}"

    def call(self, n: Node, c: Call) -> str:
        parts = [self.arg(a) for a in c.args]
        parts += [f"{k}={self.arg(v)}" for k, v in c.kwargs.items()]
        if self.layout.scratch.get(n.label):
            parts.append(f"scratch={self.scratch_view(n)}")
        return f"K.{c.fn}({', '.join(parts)})"

    def scratch_line(self, n: Node, c: Call) -> str | None:
        if c.scratch_args is None or not self.layout.scratch.get(n.label):
            return None
        planned = {}
        for s, bname in sorted(self.layout.scratch.get(n.label, {}).items()):
            planned[s] = (self.layout.plan.offsets[bname], self.layout.sizes[bname])
        args = ", ".join([self.code(a) for a in c.scratch_args]
                         + [f"{k}={self.code(v)}" for k, v in c.scratch_kwargs.items()])
        return f"{self.scratch_view(n)} = self._scratch(batch, K.{c.scratch_name}({args}), {self.code(planned)})"


def _comment(n: Node) -> str:
    act = f" -> {n.activation.op}" if n.activation else ""
    norm = f" + {n.norm.label}" if n.norm else ""
    return "# " + py_comment(f"{n.label}: {n.op.name}{norm}{act} -> {format_shape(n.shape)}")


def _prepare(r: _Render, n: Node) -> list[str]:
    if not n.params:
        return []
    key = lambda p: f"s[{py_literal(n.param_key(p))}]"
    names = [p.name for p in n.params]
    if n.norm is not None:
        nl = n.norm.label
        bias = key("bias") if "bias" in names else "None"
        w, b = r.arg(_w(n)), r.arg(Ref("param", f"{n.label}.bias"))
        norm = ", ".join(f"s[{py_literal(f'{nl}.{p}')}]" for p in ("weight", "bias", "running_mean", "running_var"))
        return [f"{w}, {b} = fold_norm({key('weight')}, {bias}, {norm}, {py_literal(n.norm.eps)})", *_conv_pack(r, n)]
    lines = [f"{r.arg(_w(n, p))} = {key(p)}" for p in names]
    if n.op.name in _STATE:                 # the recurrent engine's packed weights
        geo = {**_rnn_geometry(n), "nonlinearity": n.attrs.get("nonlinearity", "tanh")}
        args = ", ".join(f"{k}={r.code(v)}" for k, v in geo.items())
        lines.append(f"{r.arg(Ref('pack', n.label))} = K.rnn_pack({py_literal(n.op.name)}, "
                     f"{r.arg(_stack_weights(n))}, {args})")
    return lines + _conv_pack(r, n)


def _conv_pack(r: _Render, n: Node) -> list[str]:
    """The packed-rows weights of conv2d `n` (`_packs`), made from the
    weight as loaded (batchnorm folded in)."""
    if n.op.name != "conv2d":
        return []
    call = _conv(r.graph, n)
    if "pack" not in call.kwargs:
        return []
    args = ", ".join(f"{k}={r.code(call.kwargs[k])}" for k in _PACK_GEOMETRY)
    shape = r.code((1, *r.graph.shape_of(n.inputs[0])))
    return [f"{r.arg(Ref('pack', n.label))} = K.conv2d_pack({r.arg(_w(n))}, {shape}, {args})"]


def _api_shape(shape) -> tuple:
    """A shape as the API reports it: sizes, and named ones by their text."""
    return tuple(d if isinstance(d, int) else str(d) for d in shape)


def generate(graph: Graph, layout: Layout, *, name: str, source: str, batch: int = 1,
             weights_file: str | None = None, arena_limit: int | None = None) -> str:
    """The module's text. Every identifier comes from one `Namespace`
    (labels, inputs, parameters and named dimensions), and every other string
    goes through `names.py_literal`, `py_doc` or `py_comment`."""
    r = _Render(graph, layout)
    views: list[str] = []
    slices: list[str] = []
    run: list[str] = []
    for n in graph.nodes:
        place = layout.places[n.label]
        ident = f"v.{r.values(n.label)}"
        shape = r.code((BATCH, *n.shape))
        src = n.inputs[0] if n.inputs else None
        if place.within is not None:
            lo, hi = place.channels
            slices.append(f"{ident} = v.{r.values(place.within)}[:, {r.code(lo)}:{r.code(hi)}]")
        elif place.buffer != n.label and src is not None and layout.places.get(src) == place:
            views.append(f"{ident} = v.{r.values(src)}.reshape({shape})")
        else:
            views.append(f"{ident} = self._region(batch, {layout.plan.offsets[place.buffer]}, "
                         f"{layout.sizes[place.buffer]}, {shape})")
        c = KERNELS[n.op.name](graph, n)
        line = r.scratch_line(n, c)
        if line:
            views.append(line)
        run.append(_comment(n))
        if n.op.name in ("flatten", "reshape", "dropout", "identity") and src not in r.inputs \
                and layout.places[src] == place:
            run.append("pass  # a view of its input: nothing to compute")
        elif n.op.name == "concat":
            copies = [v for v in n.inputs if layout.places.get(v, None) is None or
                      layout.places[v].within != n.label]
            if not copies:
                run.append("pass  # every input was written into its slice")
            elif len(copies) == len(n.inputs):
                run.append(r.call(n, c))
            else:
                more_slices, lines = _partial_concat(r, n, copies)
                slices += more_slices
                run += lines
        else:
            run.append(r.call(n, c))
        quiet = dict(graph.silent).get(n.label)
        if quiet:
            run.append(f"if self._steps < {quiet}:   # the offline pad's zeros, not the copied warm-up")
            run.append(f"    {ident}.fill(0.0)")

    for key, shape in state_shapes(graph).items():
        views.append(f"v.{r.values(key)} = self._region(batch, {layout.plan.offsets[key]}, {layout.sizes[key]}, "
                     f"{r.code((BATCH, *shape))})")
    dims = sorted(graph.bounds)
    limit = None if arena_limit in (None, memory.Limits().arena) else arena_limit
    time_axes = {}
    if graph.streaming:
        t = graph.time_dim
        for key, shape in [(i.name, i.shape) for i in graph.inputs] + \
                [(o.name, graph.shape_of(o.value)) for o in graph.outputs]:
            time_axes[key] = next(i for i, d in enumerate(shape) if isinstance(d, Sym) and str(d) == t)
    text = _env().get_template("numpy_module.py.j2").render(
        streaming=graph.streaming, time_axes=py_literal(time_axes),
        warmup=py_literal(dict(graph.warmup)) if graph.warmup else None,
        gates=py_literal(tuple(gate_regions(graph, layout))) if graph.gates or graph.silent else None,
        name=name, source=source, version=VERSION, batch=batch,
        input_names=list(r.inputs), input_idents=list(r.inputs.values()),
        inputs={i.name: [str(d) for d in i.shape] for i in graph.inputs},
        outputs={o.name: [str(d) for d in graph.shape_of(o.value)] for o in graph.outputs},
        inputs_repr=py_literal({i.name: _api_shape(i.shape) for i in graph.inputs}),
        integer_inputs_repr=py_literal(integer_limits(graph)),
        outputs_repr=py_literal({o.name: _api_shape(graph.shape_of(o.value)) for o in graph.outputs}),
        dims=dims, dim_idents=[r.dim(d) for d in dims],
        dims_text=", ".join(f"{d}={graph.bounds[d]}" for d in dims),
        dims_repr=py_literal({d: graph.bounds[d] for d in dims}),
        min_dims_repr=py_literal(dict(min_dims(graph))),
        arena_bytes=layout.plan.arena_bytes, naive_bytes=layout.naive_bytes,
        arena_limit=limit,
        regenerate=" ".join(["-t numpy", *(["--stream"] if graph.streaming else []),
                             *(f"--dim {d}={graph.bounds[d]}" for d in dims),
                             *([f"--batch {batch}"] if batch != 1 else []),
                             *([f"--max-memory {limit}"] if limit else [])]),
        lower_bound_bytes=layout.lower_bound_bytes, layout=_layout_rows(layout),
        weights_file=weights_file,
        params=[(py_literal(k), py_literal(tuple(s.shape)), py_literal(tuple(s.init)))
                for k, s in graph.param_specs().items()],
        prepare=[line for n in graph.nodes for line in _prepare(r, n)],
        views=views + slices, run=run,
        output_exprs=[r.arg(Ref("value", o.value)) for o in graph.outputs],
    )
    return text


def _partial_concat(r: _Render, n: Node, copies: list[str]) -> tuple[list[str], list[str]]:
    """Copy the inputs that were not written into their slice: the slices are
    views made in `_views` (their bounds may hold named dimensions, which
    are locals there), the copies lines of `_run`."""
    slices, lines = [], []
    start: Any = 0
    for v in n.inputs:
        size = r.graph.shape_of(v)[0]
        if v in copies:
            ident = r.values(("slice", n.label, v), f"{n.label}#{v}")
            slices.append(f"v.{ident} = v.{r.values(n.label)}[:, {r.code(start)}:{r.code(start + size)}]")
            lines.append(f"np.copyto(v.{ident}, {r.arg(Ref('value', v))})")
        start = start + size
    return slices, lines


def _layout_rows(layout: Layout) -> list[str]:
    rows = [f"{'offset':>10}  {'bytes':>10}  {'steps':<10}  buffer"]
    for b in sorted(layout.buffers, key=lambda b: (layout.plan.offsets[b.name], b.first, b.name)):
        rows.append(f"{layout.plan.offsets[b.name]:>10}  {b.size:>10}  {f'{b.first}..{b.last}':<10}  {b.name}")
    return rows
