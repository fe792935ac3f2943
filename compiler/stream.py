"""Streaming plans: a model that runs a chunk of its time axis per call and
carries convolution history and recurrent state across calls.

In:  an optimised `ir.Graph` whose inputs have one named dimension, the time
     axis (`x: [C, T]` for conv1d stacks, `x: [T, F]` for recurrent ones).
Out: `to_stream(graph)`: the graph of one chunk of T steps, in which every
     value's time axis is exactly `T` long (a conv1d keeps `history` earlier
     steps of its input instead of padding), or a `CompileError` naming each
     layer that breaks streaming (E0401) or a model with no time axis (E0402).

The time axis is followed through every op: elementwise ops, `dense` (on
another axis), `gru`/`lstm` (axis 0), merges, `transpose` (which moves it) and
a `reshape` that keeps it whole (with as many values before it) keep one
output step per input step.
A causal or `valid` conv1d with stride 1 does too, with a history of
`dilation * (k - 1)` steps: the causal one equals the whole-sequence result
from the first step, the `valid` one from the step where its receptive field
is full (the graph's `warmup`: per output, the steps before it, which a whole
call drops, so that `model(x)` has the offline length and values). A causal `pad` streams as a copy whose zeros are the
history of the convolution right after it; a layer with history or state
further on would need the steps the pad adds before the first input step,
and is refused. A layer with history or state whose input starts `w`
steps late (after valid convolutions) is *gated* (the graph's `gates`): its
state stays clear for the first `w` steps after a reset, so a causal
convolution, a recurrent layer or a position counter after a valid
convolution starts where the offline pass starts it. A causal pad after valid
convolutions is *silent* (the graph's `silent`) for its input's first `w`
steps: it gives zeros, the offline pad's zeros, not the copied warm-up.
Everything else that touches the time axis
(a stride, right padding, pooling, flatten, ...) breaks streaming; glu, slice,
select and the reductions stream when their axis is not the time axis.
Embedding and div act per step; positional and causal attention carry a
position counter (and attention a key/value cache as long as the time bound;
a step past it is a ValueError that says to reset()); a non-causal attention
cannot stream.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping

from .diagnostics import Sink, error
from .dims import Sym
from .ir import Graph, Node

ELEMENTWISE = frozenset({"relu", "relu6", "sigmoid", "tanh", "gelu", "silu", "selu", "softplus", "hardsigmoid",
                         "hardswish", "leaky_relu", "elu", "dropout", "identity", "batchnorm", "prelu",
                         "neg", "abs", "exp", "log", "sqrt", "square", "clamp"})
DEFAULT_CHUNK = 512
STATEFUL = frozenset({"gru", "lstm", "rnn", "positional", "attention"})   # state other than a conv's history


def _time_axis(shape, name: str) -> int | None:
    axes = [i for i, d in enumerate(shape) if isinstance(d, Sym) and name in d.free_symbols()]
    return axes[0] if len(axes) == 1 else None


def to_stream(graph: Graph, sources: Mapping[str, str] | None = None) -> Graph:
    sink = Sink(sources=dict(sources or {}))
    names = sorted({d.name for i in graph.inputs for d in _vars(i.shape)})
    if len(names) != 1:
        what = "no named dimension" if not names else f"{len(names)} named dimensions ({', '.join(names)})"
        span = graph.inputs[0].span if graph.inputs else None
        sink.add(error("E0402", f"a streaming plan needs one named time dimension, and `{graph.name}` has {what}",
                       span, help="name the time axis of the input: `x: [C, T]` or `x: [T, F]`"))
        sink.raise_if_errors()
    t = names[0]
    T = Sym.var(t)
    axis: dict[str, int | None] = {}
    for i in graph.inputs:
        axis[i.name] = _time_axis(i.shape, t)
        if axis[i.name] is None or i.shape[axis[i.name]] != T:
            sink.add(error("E0402", f"input `{i.name}` must have `{t}` as one of its axes to stream", i.span))
    nodes: list[Node] = []
    gates: list[tuple[str, int]] = []
    silent: list[tuple[str, int]] = []
    for n in graph.nodes:
        ins = [axis.get(v) for v in n.inputs]
        if any(a is None for a in ins):
            axis[n.label] = None          # already reported upstream
            continue
        problem, out_axis, history = _rule(n, ins, graph)
        late = _late(graph, n.inputs[0], axis, T) if n.inputs and not problem else 0   # < 0: a pad's steps
        if late < 0 and (n.op.name in STATEFUL or history and graph.node(n.inputs[0]).op.name != "pad"):
            problem = (f"it reads {-late} step{'s' if late < -1 else ''} made of a causal pad's zeros before "
                       f"the first input step, which a stream cannot give it (a pad streams only into the "
                       f"convolution right after it)")
        if problem:
            sink.add(error("E0401", f"`{n.label}` ({n.op.name}) cannot stream: {problem}", n.span,
                           help="a streaming plan keeps one output step per input step: use causal or valid "
                                "convolutions with stride 1, and ops that act per time step"))
            axis[n.label] = None
            continue
        axis[n.label] = out_axis
        shape = tuple(T if i == out_axis else d for i, d in enumerate(n.shape))
        attrs = dict(n.attrs)
        if n.op.name == "conv1d":
            attrs["pads"] = ((0, 0),)
        if n.op.name == "pad" and axis[n.label] == len(n.shape) - 1 and any(n.attrs["pads"][-1]):
            attrs["pads"] = (*n.attrs["pads"][:-1], (0, 0))     # a causal pad streams as a copy
            if late > 0:            # the copy of a warm-up step stands where the offline pass has a zero
                silent.append((n.label, late))
        nodes.append(replace(n, shape=shape, attrs=attrs, history=history))
        if late > 0 and (n.op.name in STATEFUL or history and _late(graph, n.label, axis, T) < late + history):
            gates.append((n.label, late))     # a valid convolution's own warm-up covers a late input
    sink.raise_if_errors()
    bound = graph.bounds.get(t, DEFAULT_CHUNK)
    lost = ((o.name, _warmup(T - graph.shape_of(o.value)[axis[o.value]])) for o in graph.outputs)
    warmup = tuple((name, w) for name, w in lost if w)
    return replace(graph, nodes=tuple(nodes), bounds={t: bound}, time_dim=t, streaming=True, warmup=warmup,
                   gates=tuple(gates), silent=tuple(silent))


def _late(graph: Graph, value: str, axis: Mapping[str, int | None], T: Sym) -> int:
    """How many steps a value starts after the input in the offline pass (its valid convolutions'
    steps; < 0 where a causal pad makes it longer): stream step s is its offline step s - late."""
    lost = T - graph.shape_of(value)[axis[value]]
    return lost if isinstance(lost, int) else 0


def _warmup(lost) -> int:
    """The steps an output's `valid` convolutions take from the offline length; 0 where the offline
    output is longer (a causal `pad` wider than the history after it: a stream cannot add steps)."""
    return lost if isinstance(lost, int) and lost > 0 else 0


def _vars(shape):
    for d in shape:
        if isinstance(d, Sym):
            for atom, _ in d.terms:
                if hasattr(atom, "name"):
                    yield atom


def _rule(n: Node, ins: list[int], graph: Graph) -> tuple[str | None, int | None, int]:
    """(problem, the output's time axis, conv history) for one node."""
    op = n.op.name
    a = ins[0]
    if op in ("add", "sub", "mul", "concat"):
        if len(set(ins)) != 1:
            return "its inputs have their time axes in different places", None, 0
        if op == "concat" and n.attrs["axis"] == a:
            return "it concatenates along the time axis", None, 0
        return None, a, 0
    if op in ELEMENTWISE:
        if op == "batchnorm" and a == 0:
            return "it normalises per channel along axis 0, which is the time axis", None, 0
        if op == "prelu" and a == 0 and not n.attrs.get("shared"):
            return "its slope is per channel along axis 0, which is the time axis", None, 0
        return None, a, 0
    if op in ("softmax", "log_softmax"):
        return ("it normalises along the time axis", None, 0) if n.attrs["axis"] == a else (None, a, 0)
    if op == "layernorm":
        rank = len(graph.shape_of(n.inputs[0]))
        return ("it normalises along the time axis", None, 0) if a == rank - 1 else (None, a, 0)
    if op == "dense":
        rank = len(graph.shape_of(n.inputs[0]))
        return ("it mixes the time steps (the time axis is its input axis)", None, 0) if a == rank - 1 \
            else (None, a, 0)
    if op in ("gru", "lstm", "rnn"):
        if n.attrs.get("bidirectional"):
            return "a bidirectional layer reads the sequence from its end", None, 0
        return (None, 0, 0) if a == 0 else ("its time axis must be axis 0 of [T, F]", None, 0)
    if op == "transpose":
        return None, list(n.attrs["perm"]).index(a), 0
    if op == "reshape":       # [T, 6] -> [T, 2, 3], [6, T] -> [2, 3, T]: each step's values rearranged
        x, y = graph.shape_of(n.inputs[0]), n.shape
        at = [i for i, d in enumerate(y) if d == x[a]]
        sizes = [*x[:a], *x[a + 1:], *(d for i, d in enumerate(y) if i not in at)]
        if len(at) == 1 and all(isinstance(d, int) for d in sizes) \
                and math.prod(x[:a]) == math.prod(y[:at[0]]) and math.prod(x[a + 1:]) == math.prod(y[at[0] + 1:]):
            return None, at[0], 0
        return "it reshapes across the time axis (a streaming reshape keeps the time axis whole, with the " \
               "same number of values before it)", None, 0
    if op == "conv1d":
        if a != 1:
            return "its time axis must be axis 1 of [C, T]", None, 0
        stride, dil, k = n.attrs["stride"][0], n.attrs["dilation"][0], n.attrs["kernel"][0]
        left, right = n.attrs["pads"][0]
        if stride != 1:
            return f"it has stride {stride} along the time axis", None, 0
        if right != 0:
            return f"its padding looks {right} step{'s' if right > 1 else ''} into the future", None, 0
        return None, 1, dil * (k - 1)
    if op == "pad":
        rank = len(graph.shape_of(n.inputs[0]))
        pads = n.attrs["pads"]
        first = rank - len(pads)
        if a < first or not any(pads[a - first]):
            return None, a, 0                  # the time axis is not padded: a per-step op
        lo, hi = pads[a - first]
        if a != rank - 1 or rank != 2 or hi or n.attrs["mode"] != "constant" or n.attrs["value"] != 0 \
                or len(pads) != 1:
            return "only a causal pad streams on the time axis: zeros on the left of [C, T]", None, 0
        return None, a, 0       # the zeros on the left are the history of what follows: see to_stream
    if op in ("conv_transpose1d", "conv_transpose2d"):
        return "a transposed convolution spreads each input step over several output steps", None, 0
    if op in ("glu", "slice", "select", "mean", "sum", "max"):
        return _axis_rule(n, a)
    if op in ("embedding", "positional", "attention", "matmul", "div"):
        return _attention_rule(n, ins, graph)
    return "it combines several time steps", None, 0


def _attention_rule(n: Node, ins: list[int], graph: Graph) -> tuple[str | None, int | None, int]:
    """The transformer family: embedding and div act per step; positional
    (a position counter) and causal attention (a key/value cache sized by
    the time bound) carry state; matmul streams when the time axis is a
    leading (batch-like) axis of both sides."""
    op, a = n.op.name, ins[0]
    if op == "embedding":
        return None, a, 0
    if op == "div":
        return (None, a, 0) if len(set(ins)) == 1 else ("its inputs have their time axes in different places",
                                                        None, 0)
    if op == "matmul":
        rank = len(graph.shape_of(n.inputs[0]))
        if len(set(ins)) != 1 or a >= rank - 2:
            return "it multiplies along the time axis (it mixes time steps)", None, 0
        return None, a, 0
    if a != 0:
        return "its time axis must be axis 0 of [T, E]", None, 0
    if op == "attention" and not n.attrs["causal"]:
        return "a non-causal attention looks at future steps (use attention(heads, causal=true))", None, 0
    return None, 0, 0


def _axis_rule(n: Node, a: int) -> tuple[str | None, int | None, int]:
    """Section 9's axis ops stream when they leave the time axis alone."""
    op = n.op.name
    if op in ("mean", "sum", "max"):
        axes = n.attrs["axes"]
        if a in axes:
            return "it reduces over the time axis", None, 0
        return None, a - sum(1 for k in axes if k < a), 0
    if n.attrs["axis"] != a:
        return None, a - (op == "select" and n.attrs["axis"] < a), 0
    why = {"glu": "it halves the time axis", "slice": "it takes part of the time axis",
           "select": "it takes one step of the whole time axis"}
    return why[op], None, 0
