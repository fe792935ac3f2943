"""Activation memory: values -> buffers with lifetimes -> one planned arena.

In:  a checked (usually optimised) `ir.Graph` (its bounds size the named
     dimensions), and a function that names each node's scratch buffers.
Out: `Layout`: every value's place (a buffer, a byte offset, and for a concat
     input the slice of the concat it lives in), every buffer's place in the
     arena (from `plan.plan`), and the figures `nnc summary` reports; also
     `LastGraph`, where a code generator keeps the scratch sizes it derived
     from trial layouts of a graph (one per thread).

The plan is made for one example: every size scales with the batch, so at
batch B each buffer sits at B times its planned offset (a kernel's scratch at
batch B must not exceed B times its scratch at batch 1).

The schedule is the graph's node order: node i runs at step i. A buffer lives
from the step that first writes it to the last step that reads it; the
model's outputs live to the end. Model inputs belong to the caller.

Values share buffers in three ways, decided in schedule order:
1. A view (`flatten`, `reshape`, `dropout`, `identity`) is its input's memory.
2. An in-place op (an activation, batchnorm, `add`/`sub`/`mul` on its first
   input) writes over its input when that input's buffer is read by nothing
   after this step.
3. A `concat` on axis 0 gets its inputs written straight into their slices:
   an input produced by a node, read only by this concat, and owning its
   buffer alone, is placed inside the concat's buffer.
Scratch buffers (im2col columns, padded copies) live for their one step;
the state of a streaming plan (`label@history`, `label@h`, ...) lives across
every step, so it survives from one call to the next.

`Limits` are the largest sizes nnc plans (one tensor, all weights, the arena
at the plan's batch); the front end checks the first two (`lower.py`),
`check_arena` the last, before anything is allocated.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping

from . import plan as planner
from .dims import evaluate, free_symbols, is_symbolic
from .ir import Graph, Node
from ..runtime.limits import GiB, Limits, format_bytes  # noqa: F401  (re-exported: the runtime checks its arena too)

FLOAT_BYTES = 4


class LastGraph:
    """A planner's answer for the last graph it worked one out for, one per
    thread: code generators derive scratch sizes from trial layouts of a graph,
    and the layout and the code generated for it must read the same answer,
    whatever another thread compiles meanwhile."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, graph: Graph):
        """The answer kept for `graph`, or None."""
        entry = getattr(self._local, "entry", None)
        return entry[1] if entry is not None and entry[0] is graph else None

    def put(self, graph: Graph | None, answer) -> None:
        """Keep `answer` for `graph` (None: forget, as after a failed trial)."""
        self._local.entry = None if graph is None else (graph, answer)


VIEW_OPS = frozenset({"flatten", "reshape", "dropout", "identity"})
INPLACE_OPS = frozenset({"relu", "relu6", "sigmoid", "tanh", "gelu", "silu", "selu", "softplus", "hardsigmoid",
                         "hardswish", "leaky_relu", "elu", "batchnorm", "add", "sub", "mul", "prelu",
                         "neg", "abs", "exp", "log", "sqrt", "square", "clamp"})

# node, graph -> scratch name -> bytes for one example
ScratchFn = Callable[[Node, Graph], Mapping[str, int]]


def no_scratch(node: Node, graph: Graph) -> Mapping[str, int]:
    return {}


@dataclass(frozen=True, slots=True)
class Place:
    """Where a value lives: `buffer` at byte `offset`; a concat input also
    names the concat's value and its channel range in it."""

    buffer: str
    offset: int = 0
    within: str | None = None              # the concat value whose slice this is
    channels: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Layout:
    places: Mapping[str, Place]            # value -> place (every node's value)
    buffers: tuple[planner.Buffer, ...]    # what the planner placed
    scratch: Mapping[str, Mapping[str, str]]   # node label -> scratch name -> buffer name
    plan: planner.Plan
    naive_bytes: int
    weights_bytes: int
    sizes: Mapping[str, int] = field(init=False, repr=False, compare=False)   # buffer -> bytes

    def __post_init__(self) -> None:
        # computed once: code generators look sizes up for every node
        object.__setattr__(self, "sizes", {b.name: b.size for b in self.buffers})

    def offset(self, value: str) -> int:
        p = self.places[value]
        return self.plan.offsets[p.buffer] + p.offset

    @property
    def lower_bound_bytes(self) -> int:
        """The largest total of values alive at one step (views and in-place
        results are the memory they share; scratch is not a value)."""
        return planner.lower_bound([b for b in self.buffers if not is_scratch(b.name)])

    def figures(self, batch: int) -> dict[str, int]:
        return {"batch": batch, "arena_bytes": batch * self.plan.arena_bytes, "naive_bytes": batch * self.naive_bytes,
                "lower_bound_bytes": batch * self.lower_bound_bytes, "weights_bytes": self.weights_bytes}

    def timeline(self) -> str:
        return planner.timeline(self.buffers, self.plan)


def is_scratch(buffer: str) -> bool:
    """Scratch and streaming state are buffers, not values."""
    return "#" in buffer or "@" in buffer


def value_bytes(shape, bounds: Mapping[str, int]) -> int:
    """Bytes of one example of a value, at the bounds of its named dimensions."""
    return math.prod(evaluate(d, bounds) for d in shape) * FLOAT_BYTES


def weights_bytes(graph: Graph) -> int:
    return sum(math.prod(p.shape) * FLOAT_BYTES for n in graph.nodes for p in n.params)


def unbounded(graph: Graph, bounds: Mapping[str, int]) -> frozenset[str]:
    names: frozenset[str] = frozenset()
    for i in graph.inputs:
        names |= free_symbols(i.shape)
    for n in graph.nodes:
        names |= free_symbols(n.shape)
    return names - set(bounds)


def min_dims(graph: Graph) -> dict[str, int]:
    """named dimension -> the shortest length for which every size in the
    graph is at least 1 (sizes grow with the length: bisect)."""
    sizes = [d for n in graph.nodes for d in n.shape if is_symbolic(d)]
    result = {}
    for name, bound in sorted(graph.bounds.items()):
        def fits(t: int) -> bool:
            env = {**graph.bounds, name: t}
            return all(evaluate(d, env) >= 1 for d in sizes)
        lo, hi = 1, bound
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
        result[name] = lo
    return result


@dataclass
class _Buf:
    size: int
    first: int
    last: int
    values: list[str] = field(default_factory=list)


def layout(graph: Graph, *, scratch: ScratchFn = no_scratch, share: bool = True,
           persistent: Mapping[str, int] | None = None, written: Graph | None = None) -> Layout:
    """Place every value and scratch buffer of `graph` in one arena.
    `share=False` gives every value a buffer of its own (for `-O0` debugging).
    `written`: the graph as the model states it, before the passes fused or
    folded steps away; `naive_bytes` counts each of its steps' values (default:
    `graph`'s), so it does not change with the optimiser."""
    bounds = graph.bounds
    end = len(graph.nodes)
    users = graph.users()
    last_use: dict[str, int] = {}
    index = {n.label: i for i, n in enumerate(graph.nodes)}
    for v, readers in users.items():
        last_use[v] = max((index[r] for r in readers), default=index.get(v, -1))
    for o in graph.outputs:
        last_use[o.value] = end
    inputs = {i.name for i in graph.inputs}

    bufs: dict[str, _Buf] = {}
    places: dict[str, Place] = {}
    concat_of = _concat_slices(graph, users, inputs) if share else {}

    def extend(buffer: str, step: int) -> None:
        b = bufs[buffer]
        b.last = max(b.last, step)
        b.first = min(b.first, step)

    for i, n in enumerate(graph.nodes):
        size = value_bytes(n.shape, bounds)
        name = n.op.name
        src = n.inputs[0] if n.inputs else None
        if share and name in VIEW_OPS and src not in inputs:
            places[n.label] = places[src]
        elif share and name in INPLACE_OPS and src not in inputs and _dies_here(places[src].buffer, bufs, i, last_use) \
                and places[src].within is None and reads_once(n, src, lambda v: places[v].buffer if v in places else v):
            places[n.label] = places[src]
        elif n.label in concat_of:
            continue   # placed with its concat, below
        else:
            places[n.label] = Place(n.label)
            bufs[n.label] = _Buf(size, i, i)
            if name == "concat" and n.label in concat_of.values():
                c0 = 0
                for v in n.inputs:
                    c = graph.shape_of(v)[0]
                    if concat_of.get(v) == n.label:
                        per_channel = size // n.shape[0]
                        places[v] = Place(n.label, c0 * per_channel, within=n.label, channels=(c0, c0 + c))
                        bufs[n.label].values.append(v)
                        extend(n.label, index[v])
                    c0 += c
        bufs[places[n.label].buffer].values.append(n.label)
        extend(places[n.label].buffer, last_use.get(n.label, i))

    scratch_names: dict[str, dict[str, str]] = {}
    buffers = [planner.Buffer(k, b.size, b.first, b.last) for k, b in bufs.items()]
    for i, n in enumerate(graph.nodes):
        for s, nbytes in scratch(n, graph).items():
            if nbytes > 0:
                bname = f"{n.label}#{s}"
                scratch_names.setdefault(n.label, {})[s] = bname
                buffers.append(planner.Buffer(bname, nbytes, i, i))
    for name, nbytes in sorted((persistent or {}).items()):
        # streaming state: alive across every step, so nothing else ever overlaps it
        buffers.append(planner.Buffer(name, nbytes, 0, end))
    naive = sum(value_bytes(n.shape, bounds) for n in (written or graph).nodes)
    result = planner.plan(buffers)
    planner.verify_plan(buffers, result)      # every plan is checked, not only in tests
    return Layout(places, tuple(buffers), scratch_names, result, naive, weights_bytes(written or graph))


def reads_once(node: Node, src: str, buffer_of: Callable[[str], str]) -> bool:
    """Whether `node` reads the memory of `src` through one input only, so
    that its result may overwrite it: `add(a, b, a)` summed in place of `a`
    would read the second `a` after the first pass overwrote it."""
    return sum(buffer_of(v) == buffer_of(src) for v in node.inputs) == 1


def _dies_here(buffer: str, bufs: dict[str, _Buf], step: int, last_use: Mapping[str, int]) -> bool:
    """True when nothing after `step` reads any value living in `buffer`."""
    return all(last_use.get(v, -1) <= step for v in bufs[buffer].values)


def _concat_slices(graph: Graph, users, inputs) -> dict[str, str]:
    """value -> the concat it is written into directly."""
    result: dict[str, str] = {}
    producers = {n.label: n for n in graph.nodes}
    outputs = {o.value for o in graph.outputs}
    for n in graph.nodes:
        if n.op.name != "concat" or n.attrs["axis"] != 0 or not isinstance(n.shape[0], int):
            continue
        for v in n.inputs:
            p = producers.get(v)
            if v in inputs or p is None or v in outputs or n.inputs.count(v) != 1 or users[v] != [n.label]:
                continue
            if p.op.name in VIEW_OPS or p.op.name in INPLACE_OPS or v in result:
                continue   # it would share memory with another value
            result[v] = n.label
    return result


def live_profile(graph: Graph) -> tuple[list[int], int]:
    """The bytes of values (not scratch) alive at each step of `graph`
    without scratch, and the peak the planner places them in (the live-set
    lower bound): what a kernel's scratch budget is measured against."""
    values = [b for b in layout(graph).buffers if not is_scratch(b.name)]
    live = [0] * len(graph.nodes)
    for b in values:
        for step in range(b.first, min(b.last, len(live) - 1) + 1):
            live[step] += b.size
    return live, planner.lower_bound(values)


def arena_problem(graph: Graph, lay: Layout, batch: int, limits: Limits) -> str | None:
    """The E0208 message when the arena at `batch` is larger than the limit
    (with the largest buffer named), else None. Checked before the plan's
    code allocates anything."""
    arena = batch * lay.plan.arena_bytes
    if arena <= limits.arena:
        return None
    return (f"the memory plan needs {format_bytes(arena)} at batch {batch}, more than the limit of "
            f"{format_bytes(limits.arena)} for the arena")


def largest_buffer(lay: Layout) -> tuple[str, int] | None:
    """(the node label owning the largest buffer, its bytes for one example);
    the buffer is a value, a scratch buffer or streaming state."""
    if not lay.buffers:
        return None
    b = max(lay.buffers, key=lambda b: (b.size, b.name))
    return b.name.split("#")[0].split("@")[0], b.size


def memory_report(graph: Graph, batch: int, *, scratch: ScratchFn = no_scratch, share: bool = True) -> dict:
    """The `memory` object of `nnc summary --json`; sizes are None while a
    named dimension has no bound."""
    if unbounded(graph, graph.bounds):
        return {"batch": batch, "arena_bytes": None, "naive_bytes": None, "lower_bound_bytes": None,
                "weights_bytes": weights_bytes(graph)}
    return layout(graph, scratch=scratch, share=share).figures(batch)
