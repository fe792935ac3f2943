"""The IR: a model as a flat, topologically ordered graph of ops with shapes.

In:  built by `lower.py` from the AST (blocks expanded, labels resolved,
     arguments evaluated, shapes inferred); rewritten by `passes/`.
Out: `Graph`, read by the summary, the planner and the code generators.

Every node produces exactly one value, named by the node's full label
(`layer1.0.conv1`); model inputs are values named by the input. Shapes exclude
the batch dimension and may hold symbolic sizes (`dims.Sym`). Parameters are
named `<label>.<param>` as in PyTorch's `state_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .diagnostics import Span
from .dims import Dim, Shape, format_shape


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One tensor a node owns. `learnable` is False for batchnorm's running
    statistics. `init` is the default initialisation: ("uniform", bound),
    ("normal", std) or ("const", value), PyTorch's defaults."""

    name: str
    shape: tuple[int, ...]
    learnable: bool = True
    init: tuple[str, float] = ("const", 0.0)


@dataclass(frozen=True, slots=True)
class Activation:
    """An elementwise activation fused into the node that produces its input."""

    op: str                           # catalog name: "relu", "leaky_relu", ...
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FoldedNorm:
    """An inference batchnorm folded into the node before it: the node's
    effective weight and bias are computed from its own parameters and these
    (keyed `<label>.weight`, `.bias`, `.running_mean`, `.running_var`) when
    weights are loaded."""

    label: str
    eps: float
    params: tuple[ParamSpec, ...]


@dataclass(frozen=True, slots=True)
class Node:
    label: str                        # full label; also the name of the value it produces
    op: Any                           # the catalog entry (`ops.OpSpec`)
    inputs: tuple[str, ...]           # names of the values it reads
    attrs: Mapping[str, Any]          # resolved arguments (see the op's entry)
    shape: Shape                      # output shape, without batch
    params: tuple[ParamSpec, ...]
    macs: Dim
    span: Span
    activation: Activation | None = None   # set by the fusion pass
    norm: FoldedNorm | None = None         # set by the batchnorm folding pass
    history: int = 0                       # streaming: time steps of input a conv1d keeps between calls
    dtype: str = "float32"                 # "int32" for integer values (an integer input through slice/select/...)
    pre: "Node | None" = None              # set by the C plan's block fusion: a 1x1 convolution whose output only
                                           # this depthwise one reads, computed inside its kernel (never stored);
                                           # the node then reads that convolution's input

    def parts(self) -> tuple["Node", ...]:
        """The nodes this one computes: its `pre` (if any), then itself."""
        return (self.pre, self) if self.pre is not None else (self,)

    @property
    def params_count(self) -> int:
        total = 0
        for p in self.params:
            if p.learnable:
                n = 1
                for d in p.shape:
                    n *= d
                total += n
        return total

    def param_key(self, name: str) -> str:
        return f"{self.label}.{name}"


@dataclass(frozen=True, slots=True)
class Input:
    name: str
    shape: Shape
    span: Span
    dtype: str = "float32"            # "int32" for `tokens: int[T]` (indices for embedding)


@dataclass(frozen=True, slots=True)
class Output:
    name: str                         # the name the API uses ("out" when unnamed)
    value: str                        # the value it returns
    span: Span


@dataclass(frozen=True, slots=True)
class Graph:
    name: str
    inputs: tuple[Input, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Output, ...]
    bounds: Mapping[str, int]         # named dimension -> bound, where one is known
    time_dim: str | None = None       # the named dimension a streaming plan steps along
    path: str = "<input>"
    streaming: bool = False           # a chunk of the time axis per call, state carried (stream.py)
    warmup: tuple[tuple[str, int], ...] = ()   # streaming: output -> its steps (> 0) before the `valid`
                                               # convolutions' receptive field is full (a whole call drops them)
    gates: tuple[tuple[str, int], ...] = ()    # streaming: layer -> the steps (> 0) its input starts late by,
                                               # after valid convolutions: its state is cleared until then
    silent: tuple[tuple[str, int], ...] = ()   # streaming: a causal pad after valid convolutions -> the steps
                                               # (> 0) its output is zeros for (the offline pad's zeros)
    _by_label: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # built on first use

    def node(self, label: str) -> Node:
        if len(self._by_label) != len(self.nodes):      # an index, so lookups stay O(1) on big graphs
            self._by_label.clear()
            self._by_label.update((n.label, n) for n in self.nodes)
        return self._by_label[label]

    def shape_of(self, value: str) -> Shape:
        for i in self.inputs:
            if i.name == value:
                return i.shape
        return self.node(value).shape

    def users(self) -> dict[str, list[str]]:
        """value name -> labels of the nodes that read it, in schedule order."""
        result: dict[str, list[str]] = {i.name: [] for i in self.inputs}
        for n in self.nodes:
            result.setdefault(n.label, [])
            for v in n.inputs:
                result[v].append(n.label)
        return result

    @property
    def params_count(self) -> int:
        return sum(part.params_count for n in self.nodes for part in n.parts())

    def param_specs(self) -> dict[str, ParamSpec]:
        """Every tensor of the model's state_dict, keyed by its full name, in
        schedule order; folded batchnorms keep their own keys."""
        specs: dict[str, ParamSpec] = {}
        for n in (part for node in self.nodes for part in node.parts()):
            for p in n.params:
                specs[n.param_key(p.name)] = p
            if n.norm is not None:
                for p in n.norm.params:
                    specs[f"{n.norm.label}.{p.name}"] = p
        return specs


def integer_limits(graph: Graph) -> dict[str, int]:
    """Integer input -> the number of rows its indices may address: the
    smallest `num` of the embeddings its values reach (through slice, select,
    reshape, transpose, flatten). Indices must lie in [0, num)."""
    origin = {i.name: i.name for i in graph.inputs if i.dtype == "int32"}
    limits: dict[str, int] = {}
    for n in graph.nodes:
        for v in n.inputs:
            if v not in origin:
                continue
            if n.dtype == "int32":
                origin[n.label] = origin[v]
            elif "num" in n.attrs:
                src = origin[v]
                limits[src] = min(limits.get(src, n.attrs["num"]), n.attrs["num"])
    return {i.name: limits.get(i.name, 0) for i in graph.inputs if i.dtype == "int32"}


def verify(graph: Graph) -> None:
    """Check the IR's invariants. A failure is a compiler bug, not a user error."""
    seen: set[str] = {i.name for i in graph.inputs}
    assert len(seen) == len(graph.inputs), "duplicate input names"
    for n in graph.nodes:
        assert n.label not in seen, f"value `{n.label}` defined twice"
        for v in n.inputs:
            assert v in seen, f"`{n.label}` reads `{v}` before it is defined"
        assert isinstance(n.shape, tuple), f"`{n.label}` has no shape"
        seen.add(n.label)
    for o in graph.outputs:
        assert o.value in seen, f"output `{o.name}` names unknown value `{o.value}`"
    assert len({o.name for o in graph.outputs}) == len(graph.outputs), "duplicate output names"


def dump(graph: Graph) -> str:
    """A readable text form of the graph, for golden tests and debugging."""
    lines = [f"graph {graph.name}(" + ", ".join(f"{i.name}: {'int' if i.dtype == 'int32' else ''}"
                                               f"{format_shape(i.shape)}" for i in graph.inputs) + ")"]
    for n in graph.nodes:
        args = ", ".join(f"{k}={v}" for k, v in n.attrs.items())
        act = f" +{n.activation.op}" if n.activation else ""
        act = (f" +{n.norm.label}" if n.norm else "") + act
        if n.pre is not None:
            act = f" <{n.pre.label}: {n.pre.op.name}" + (f" +{n.pre.norm.label}" if n.pre.norm else "") + \
                (f" +{n.pre.activation.op}" if n.pre.activation else "") + ">" + act
        lines.append(f"  {n.label} = {n.op.name}{act}({', '.join(n.inputs)}; {args}) -> {format_shape(n.shape)}")
    lines.append("  return " + ", ".join(f"{o.name}={o.value}" for o in graph.outputs))
    return "\n".join(lines)
