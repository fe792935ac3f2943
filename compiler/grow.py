"""Growth: carry trained weights and optimizer state from a model to a wider
edit of it (TRAINING.md section 2).

In:  two checked, unoptimised graphs (`frontend.check(model).graph`): the old
     model and the new one, whose only differences are the output sizes of
     weighted layers (dense units, convolution filters, depthwise multiplier,
     gru/lstm hidden size); the old weights (and optimizer state) as dicts of
     arrays with PyTorch's keys.
Out: `plan(old, new) -> Growth`: an `IndexMap` per tensor (old shape, new
     shape, and per axis the new position of every old index), the value
     layouts, the warnings; `Growth.weights(...)` and
     `Growth.optimizer_state(...)` move the tensors, `Growth.tensor(key,
     ...)` one of them, and `Growth.fill_new(key, out, seed)` writes only
     the new entries into an array or view of the new shape (a trainer
     growing within capacity, in place). `grow(...)` is
     `nnc.grow`: models and files in, `(weights2, opt2)` out.
     `capacity(graph, {label: units})` gives the same maps from a model's
     tensors into storage with room for that many units (for `nnc.train`'s
     `capacity=`). Refusals are `CompileError`s located on the new model.

How it works:
1. Compare the models step by step, matched by full label: inputs, ops,
   wiring, outputs and every resolved argument except those the op's growth
   rule lets vary (`ops.base.Units.varies`); a layer's size may only rise.
2. Unit-axis analysis (`analyse`): every axis of every value gets either
   None (a plain axis: its size cannot change) or one *tag* per position,
   naming what sits there: unit j of group g of layer L, a flattened pair
   (unit, spatial index), a merged tuple of the inputs' tags, a gate row.
   Each op's rule lives with its catalog entry (`OpSpec.units`) and states,
   through a `UnitContext`, the output's tags and the role of each parameter
   axis (own units, fan-in, per-channel). Tags are interned integers shared
   by the two analyses, so the tag of a unit is the same in both models.
3. The new position of an old index is where its tag sits in the new model.
   Merges must keep their inputs aligned (E0505), a grouped convolution's
   input channels must stay in their groups, and an op that mixes a unit
   axis (a pool over it, a reshape splitting it) stops growth there (E0506).
4. Moving a tensor: old entries are placed at their new positions. `zero`:
   new units' own entries come from the default initialisation of the new
   model (`runtime.weights.default_init(new specs, seed)`), their biases 0,
   per-channel parameters their constant initial value, every other new
   entry 0. `net2net`: every new unit copies a seeded random old unit (the
   same choice for all layers whose units meet at a merge, and for
   depthwise groups the copy of their input channel's source), and fan-in
   entries are divided by the number of copies of their unit.
   Optimizer state: old entries placed, every new entry 0.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..runtime.weights import DRAWN, draw
from .diagnostics import CompileError, Diagnostic, UsageError, error, warning
from .ir import Graph, Node
from .ops.base import UnitAxis

INITS = ("zero", "net2net")
STATE_NAMES = ("momentum_buffer", "exp_avg", "exp_avg_sq")
STEP_KEY = "step"
COUNTER_SUFFIX = ".num_batches_tracked"


class GrowthWarning(UserWarning):
    """A growth that cannot keep the function (through a layernorm or softmax)."""


# ------------------------------------------------------------------ tags

class Tags:
    """Interned tags: a key (a tuple) <-> a small integer, shared by the
    analyses of the old and the new model. Keys:
      ("u", label, group, j)    unit j of a layer; group is an int, or
                                ("in", tag) for a depthwise layer (the input
                                channel the unit filters)
      ("gate", unit, k)         the row of gate k of a recurrent unit
      ("flat", (tag, ...))      an element of a flattened (or merged-axes) value
      ("merge", (tag, ...))     a position of add/sub/mul: the inputs' tags there
      ("cat", label, i, tag)    a tag of input i of concat `label` that an
                                earlier input already put on the axis
                                (`concat(a, a)`: each copy its own position)
      ("i", p)                  plain position p of an axis without units
      ("pos", label, axis, p)   position p of an axis an op made opaque
    """

    def __init__(self) -> None:
        self._ids: dict[tuple, int] = {}
        self.keys: list[tuple] = []

    def id(self, key: tuple) -> int:
        i = self._ids.get(key)
        if i is None:
            i = len(self.keys)
            self._ids[key] = i
            self.keys.append(key)
        return i

    def ids(self, keys) -> np.ndarray:
        return np.fromiter((self.id(k) for k in keys), dtype=np.int64)

    def positions(self, n: int) -> np.ndarray:
        return self.ids(("i", p) for p in range(n))

    def units_in(self, tag: int, memo: dict[int, frozenset]) -> frozenset:
        """The layer units (`u` tags) a tag is made of."""
        got = memo.get(tag)
        if got is None:
            key = self.keys[tag]
            if key[0] == "u":
                got = frozenset((tag,))
            elif key[0] == "gate":
                got = self.units_in(key[1], memo)
            elif key[0] == "cat":
                got = self.units_in(key[3], memo)
            elif key[0] in ("flat", "merge"):
                got = frozenset().union(*(self.units_in(p, memo) for p in key[1]))
            else:
                got = frozenset()
            memo[tag] = got
        return got

    def layer_of(self, tag: int) -> str:
        return self.keys[tag][1]


Layout = tuple  # one entry per axis of a value: None, or an int64 array of tags


@dataclass(frozen=True, slots=True)
class ParamAxis:
    """The role of one axis of a parameter and the tags along it. A grouped
    fan-in (`groups` > 1) carries the tags of every input channel; the weight
    axis holds one group's worth."""

    role: UnitAxis
    tags: np.ndarray
    groups: int = 1
    bias: bool = False
    whole: bool = False     # a grouped axis that holds every group (a transposed conv's input channels)

    @property
    def size(self) -> int:
        return len(self.tags) if self.whole else len(self.tags) // self.groups


@dataclass(frozen=True, slots=True)
class Barrier:
    label: str
    input: int
    axis: int
    why: str


@dataclass
class Analysis:
    graph: Graph
    tags: Tags
    capacity: Mapping[str, int] = field(default_factory=dict)
    layouts: dict[str, Layout] = field(default_factory=dict)
    params: dict[str, tuple[ParamAxis | None, ...]] = field(default_factory=dict)
    own: dict[str, np.ndarray] = field(default_factory=dict)         # layer -> its units' tags
    merges: list[tuple[Node, list[Layout], tuple[int, ...]]] = field(default_factory=list)
    barriers: list[Barrier] = field(default_factory=list)
    norms: list[tuple[Node, int]] = field(default_factory=list)     # (node, the input axis it normalises)


class UnitContext:
    """What an op's growth rule (`OpSpec.units.rule`) sees and sets: the
    node (`label`, `attrs`), its inputs' layouts (`inputs`) and shapes
    (`shapes`), its output `shape`; it calls `output(*axes)` once and
    `param(name, *axes)` per parameter (axes from `own_axis`, `bias_axis`,
    `fan_in`, `channel`, or None for a fixed axis such as a kernel's)."""

    def __init__(self, analysis: Analysis, node: Node, inputs: list[Layout], shapes: list[tuple]):
        self.node = node
        self.label = node.label
        self.attrs = node.attrs
        self.inputs = inputs
        self.shapes = shapes
        self.shape = node.shape
        self._an = analysis
        self._tags = analysis.tags
        self.layout: Layout | None = None
        self.params: dict[str, tuple[ParamAxis | None, ...]] = {}

    # the results
    def output(self, *axes) -> None:
        self.layout = tuple(axes)

    def param(self, name: str, *axes) -> None:
        if any(p.name == name for p in self.node.params):
            self.params[name] = tuple(axes)

    # parameter axes
    def own_axis(self, tags: np.ndarray) -> ParamAxis:
        return ParamAxis(UnitAxis.OWN, tags)

    def bias_axis(self, tags: np.ndarray) -> ParamAxis:
        return ParamAxis(UnitAxis.OWN, tags, bias=True)

    def fan_in(self, tags: np.ndarray | None, groups: int = 1) -> ParamAxis | None:
        return None if tags is None else ParamAxis(UnitAxis.FAN_IN, tags, groups)

    def channel(self, tags: np.ndarray | None) -> ParamAxis | None:
        return None if tags is None else ParamAxis(UnitAxis.CHANNEL, tags)

    # the layer's own units
    def own(self, total: int, groups: int = 1) -> np.ndarray:
        """Tags of `total` units in `groups` groups (each group's units
        consecutive, as PyTorch lays out grouped convolutions)."""
        total = self._room(total, groups)
        per = total // groups
        tags = self._tags.ids(("u", self.label, g, j) for g in range(groups) for j in range(per))
        self._an.own[self.label] = tags
        return tags

    def own_per_channel(self, input: int, axis: int, per_channel: int) -> np.ndarray:
        """A depthwise layer's units: `per_channel` for each input channel,
        keyed by that channel's tag, so they follow it when the input grows."""
        per_channel = self._room(per_channel, 1)
        channels = self.inputs[input][axis]
        if channels is None:
            channels = self._tags.positions(self.shapes[input][axis])
        tags = self._tags.ids(("u", self.label, ("in", int(c)), j) for c in channels for j in range(per_channel))
        self._an.own[self.label] = tags
        return tags

    def own_more(self, part: str, total: int) -> np.ndarray:
        """More units of the layer, distinct from `own`'s and keyed by `part`
        (a stacked or two-way recurrent layer's later layers and directions:
        they grow with it)."""
        tags = self._tags.ids(("u", self.label, part, j) for j in range(total))
        self._an.own[(self.label, part)] = tags
        return tags

    def gates(self, own: np.ndarray, count: int) -> np.ndarray:
        """Rows of `count` gate blocks stacked (PyTorch's recurrent layout)."""
        return self._tags.ids(("gate", int(t), k) for k in range(count) for t in own)

    def _room(self, size: int, groups: int) -> int:
        room = self._an.capacity.get(self.label)
        if room is None:
            return size
        if room < size or room % groups:
            raise UsageError(f"capacity[{self.label!r}] = {room} is "
                             + (f"less than the layer's size {size}" if room < size
                                else f"not a multiple of its {groups} groups"))
        return room

    # axes derived from the inputs
    def window(self, input: int, axis: int, out_axis: int | None = None) -> np.ndarray | None:
        """An output axis computed from an input axis by a sliding window,
        pooling or upsampling: a plain axis stays plain; units there cannot
        grow (a barrier)."""
        tags = self.inputs[input][axis]
        if tags is None:
            return None
        return self.opaque(input, axis, self.shape[axis if out_axis is None else out_axis],
                           f"{self.node.op.name} mixes positions along axis {axis}")

    def reduced(self, input: int, axis: int) -> None:
        """An input axis the op reduces away (global_avgpool's spatial axes)."""
        if self.inputs[input][axis] is not None:
            self._an.barriers.append(Barrier(self.label, input, axis,
                                             f"{self.node.op.name} reduces axis {axis}"))

    def opaque(self, input: int, axis: int, size: int, why: str) -> np.ndarray:
        self._an.barriers.append(Barrier(self.label, input, axis, why))
        return self._tags.ids(("pos", self.label, axis, p) for p in range(size))

    def normalises(self, axis: int) -> None:
        self._an.norms.append((self.node, axis))

    def flatten(self, input: int = 0) -> np.ndarray | None:
        x, shape = self.inputs[input], self.shapes[input]
        return self._combine(x, shape)

    def _combine(self, axes: Layout, sizes: tuple) -> np.ndarray | None:
        if all(a is None for a in axes):
            return None
        if len(axes) == 1:
            return axes[0]
        parts = [a if a is not None else self._tags.positions(int(n)) for a, n in zip(axes, sizes)]
        grid = np.stack(np.meshgrid(*parts, indexing="ij"), axis=-1).reshape(-1, len(parts))
        return self._tags.ids(("flat", tuple(row)) for row in grid.tolist())

    def reshape(self, input: int = 0) -> Layout:
        """Axes kept whole (or merged, as flatten does) follow; an axis with
        units that is split is opaque."""
        x, ins, outs = self.inputs[input], self.shapes[input], self.shape
        if all(a is None for a in x):
            return (None,) * len(outs)
        groups = _reshape_groups(ins, outs)
        if groups is None:
            for k, a in enumerate(x):
                if a is not None:
                    self._an.barriers.append(Barrier(self.label, input, k, "reshape splits or mixes this axis"))
            return tuple(self._tags.ids(("pos", self.label, o, p) for p in range(int(n))) if isinstance(n, int)
                         else None for o, n in enumerate(outs))
        result = [None] * len(outs)
        for in_axes, out_axes in groups:
            sub = tuple(x[k] for k in in_axes)
            if all(a is None for a in sub):
                continue
            if len(out_axes) == 1:
                result[out_axes[0]] = self._combine(sub, tuple(ins[k] for k in in_axes))
            else:
                for k in in_axes:
                    if x[k] is not None:
                        self._an.barriers.append(Barrier(self.label, input, k, "reshape splits this axis"))
                for o in out_axes:
                    result[o] = self._tags.ids(("pos", self.label, o, p) for p in range(int(outs[o])))
        return tuple(result)

    def merge(self) -> Layout:
        """add/sub/mul: every axis couples the inputs' tags position by position."""
        rank = len(self.shape)
        axes = tuple(range(rank))
        self._an.merges.append((self.node, list(self.inputs), axes))
        return tuple(self._merged(k) for k in axes)

    def concat(self, axis: int) -> Layout:
        """The concat axis lists each input's tags in turn; the others couple."""
        rank = len(self.shape)
        others = tuple(k for k in range(rank) if k != axis)
        self._an.merges.append((self.node, list(self.inputs), others))
        result = [None if k == axis else self._merged(k) for k in range(rank)]
        if all(x[axis] is None for x in self.inputs):
            result[axis] = None
        else:
            parts, seen = [], set()
            for i, (x, s) in enumerate(zip(self.inputs, self.shapes)):
                part = x[axis] if x[axis] is not None \
                    else self._tags.ids(("pos", self.label, (i, axis), p) for p in range(int(s[axis])))
                if seen.intersection(part.tolist()):      # the same units again: a position of their own
                    part = self._tags.ids(("cat", self.label, i, int(t)) for t in part)
                seen.update(part.tolist())
                parts.append(part)
            result[axis] = np.concatenate(parts)
        return tuple(result)

    def _merged(self, axis: int) -> np.ndarray | None:
        cols = [x[axis] for x in self.inputs]
        if all(c is None for c in cols):
            return None
        n = int(self.shape[axis])
        cols = [c if c is not None else self._tags.ids(("pos", self.label, (i, axis), p) for p in range(n))
                for i, c in enumerate(cols)]
        return self._tags.ids(("merge", tuple(row)) for row in np.stack(cols, axis=-1).tolist())


def _reshape_groups(ins: tuple, outs: tuple) -> list[tuple[tuple[int, ...], tuple[int, ...]]] | None:
    """Consecutive axes of equal products: [(input axes, output axes), ...];
    None when sizes are symbolic and do not match one to one."""
    if any(not isinstance(d, int) for d in (*ins, *outs)):
        if len(ins) == len(outs) and all(a == b for a, b in zip(ins, outs)):
            return [((k,), (k,)) for k in range(len(ins))]
        return None
    groups = []
    i = j = 0
    while i < len(ins) or j < len(outs):
        gi, gj = [i], [j]
        if i >= len(ins) or j >= len(outs):
            return None
        pi, pj = ins[i], outs[j]
        i += 1
        j += 1
        while pi != pj:
            if pi < pj:
                if i >= len(ins):
                    return None
                pi *= ins[i]
                gi.append(i)
                i += 1
            else:
                if j >= len(outs):
                    return None
                pj *= outs[j]
                gj.append(j)
                j += 1
        groups.append((tuple(gi), tuple(gj)))
    return groups


def analyse(graph: Graph, tags: Tags | None = None, capacity: Mapping[str, int] | None = None) -> Analysis:
    """The unit-axis analysis of a checked, unoptimised graph. With
    `capacity`, the named layers are analysed as if they had that many units
    (the layouts then describe storage with room, not the graph's values)."""
    an = Analysis(graph, tags or Tags(), dict(capacity or {}))
    for i in graph.inputs:
        an.layouts[i.name] = (None,) * len(i.shape)
    for node in graph.nodes:
        rule = node.op.units
        if rule is None:
            raise AssertionError(f"op `{node.op.name}` has no growth rule (`units=` in its catalog entry)")
        u = UnitContext(an, node, [an.layouts[v] for v in node.inputs], [graph.shape_of(v) for v in node.inputs])
        rule.rule(u)
        assert u.layout is not None and len(u.layout) == len(node.shape), f"`{node.label}`: bad layout"
        if not an.capacity:
            for a, n in zip(u.layout, node.shape):
                assert a is None or len(a) == n, f"`{node.label}`: {len(a)} tags for an axis of {n}"
        an.layouts[node.label] = u.layout
        for p in node.params:
            axes = u.params.get(p.name, (None,) * len(p.shape))
            assert len(axes) == len(p.shape), f"`{node.label}.{p.name}`: {len(axes)} axes for {p.shape}"
            an.params[node.param_key(p.name)] = axes
    return an


# ------------------------------------------------------------------ index maps

@dataclass(frozen=True, slots=True)
class IndexMap:
    """Where a tensor's entries go: `positions[k][i]` is the new index along
    axis k of old index i, so `new[np.ix_(*positions)] = old` moves every old
    entry. Entries of `new` that no old one reaches are new."""

    old_shape: tuple[int, ...]
    new_shape: tuple[int, ...]
    positions: tuple[np.ndarray, ...]

    def place(self, old: np.ndarray, fill: float = 0.0, out: np.ndarray | None = None) -> np.ndarray:
        """A new array (or `out`) holding `old` at its new positions, `fill` elsewhere."""
        if out is None:
            out = np.full(self.new_shape, fill, dtype=old.dtype)
        out[np.ix_(*self.positions)] = old
        return out

    def slices(self) -> tuple[slice | None, ...]:
        """Per axis, the slice the old entries fill when they stay together
        in order (None where they are spread out)."""
        result = []
        for p in self.positions:
            if len(p) == 0 or np.array_equal(p, np.arange(p[0], p[0] + len(p))):
                result.append(slice(int(p[0]) if len(p) else 0, int(p[0]) + len(p) if len(p) else 0))
            else:
                result.append(None)
        return tuple(result)

    @property
    def moves(self) -> bool:
        """Whether any old entry changes position."""
        return any(not np.array_equal(p, np.arange(len(p))) for p in self.positions)


def _locate(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Index in `new` of each tag of `old`; -1 where it is missing."""
    if len(new) == 0:
        return np.full(len(old), -1, dtype=np.int64)
    order = np.argsort(new, kind="stable")
    at = np.searchsorted(new, old, sorter=order)
    at = np.minimum(at, len(new) - 1)
    found = order[at]
    return np.where(new[found] == old, found, -1)


@dataclass
class _AxisMove:
    role: UnitAxis | None
    positions: np.ndarray          # old index -> new index (within a group for grouped fan-in)
    new_size: int
    axis: ParamAxis | None         # in the new model
    old_axis: ParamAxis | None


_CHUNK = 1 << 14      # elements drawn at once for new units' fresh entries


def _new_indices(m: "_AxisMove") -> np.ndarray:
    """The indices of an axis (within a group) that no old entry reaches."""
    new = np.ones(m.new_size, dtype=bool)
    new[m.positions] = False
    return np.flatnonzero(new)


class Growth:
    """The result of `plan`: the index maps of every tensor and value, the
    warnings, and the methods that move tensors."""

    def __init__(self, old: Analysis, new: Analysis, moves: dict[str, list[_AxisMove]],
                 warns: list[Diagnostic], sources: Mapping[str, str]):
        self.old, self.new = old, new
        self._moves = moves
        self.warnings = warns
        self.sources = dict(sources)
        self.maps: dict[str, IndexMap] = {
            k: IndexMap(tuple(len(m.positions) if m.axis is None or m.axis.groups == 1 or m.axis.whole
                              else m.old_axis.size
                              for m in axes),
                        tuple(m.new_size for m in axes), tuple(m.positions for m in axes))
            for k, axes in moves.items()}
        self.values: dict[str, tuple[np.ndarray | None, ...]] = {}
        for name, layout in new.layouts.items():
            old_layout = old.layouts[name]
            self.values[name] = tuple(None if a is None else _locate(b, a) for a, b in zip(layout, old_layout))

    # --------------------------------------------------------- weights

    def weights(self, weights: Mapping[str, np.ndarray], init: str = "zero", seed: int = 0) -> dict[str, np.ndarray]:
        """The new model's weights (float32, PyTorch keys, in the new model's
        order; `num_batches_tracked` entries given are passed through)."""
        _check_init(init, seed)
        sources = self.net2net_sources(seed) if init == "net2net" else None
        out: dict[str, np.ndarray] = {}
        for key in self.new.graph.param_specs():
            out[key] = self.tensor(key, np.asarray(weights[key], dtype=np.float32), init, seed, sources)
        for key, value in weights.items():
            if isinstance(key, str) and key.endswith(COUNTER_SUFFIX):
                out[key] = np.array(value, dtype=np.int64)
        return out

    def tensor(self, key: str, old: np.ndarray, init: str = "zero", seed: int = 0,
               sources: dict[int, int] | None = None) -> np.ndarray:
        """One tensor of the new model from its old value (`sources`: the
        net2net choice, `net2net_sources(seed)`, made once for all tensors)."""
        if init == "net2net":
            return self._copy(key, old, self.net2net_sources(seed) if sources is None else sources)
        out = np.empty(self.maps[key].new_shape, dtype=np.float32)
        self.fill_new(key, out, seed)
        return self.maps[key].place(old, out=out)

    def fill_new(self, key: str, out: np.ndarray, seed: int = 0, fresh: bool = True) -> None:
        """`init="zero"`'s new entries of tensor `key` written into `out` (an
        array or a view of the new shape); the entries at old positions are
        left alone. New units' own entries get the default initialisation
        of the new model (`runtime.weights.default_init(new specs, seed)`,
        drawn here only where needed, in bounded chunks), their biases 0,
        per-channel entries their constant initial value; every other new
        entry 0 (with `fresh=False` every new entry 0: the optimizer state).
        Allocates nothing in proportion to the tensor."""
        axes = self._moves[key]
        news = [(k, m, _new_indices(m)) for k, m in enumerate(axes) if m.axis is not None]
        for k, m, idx in news:
            if len(idx):
                out[(slice(None),) * k + (idx,)] = 0.0
        if not fresh:
            return
        spec = self.new.graph.param_specs()[key]
        kind, value = spec.init
        for k, m, idx in news:
            if not len(idx) or m.role not in (UnitAxis.OWN, UnitAxis.CHANNEL) or m.axis.bias:
                continue
            where = (slice(None),) * k
            if kind not in DRAWN:
                out[where + (idx,)] = value
            elif k == 0:
                self._draw_rows(key, out, idx, kind, value, seed)
            else:     # an own axis after the first (an embedding's dim): every row drawn, its new columns kept
                self._draw_rows(key, out, np.arange(out.shape[0]), kind, value, seed, keep=where + (idx,))

    def _stream(self, key: str, seed: int, skip: int = 0) -> np.random.Generator:
        """`default_init`'s generator positioned at element `skip` of tensor
        `key` (drawn tensors take DRAWN[kind] doubles an element, in key order)."""
        offset = 0
        for k, p in self.new.graph.param_specs().items():
            if k == key:
                skip *= DRAWN[p.init[0]]
                break
            offset += DRAWN.get(p.init[0], 0) * int(np.prod(p.shape, dtype=np.int64))
        bits = np.random.PCG64(seed)
        bits.advance(offset + skip)
        return np.random.Generator(bits)

    def _draw_rows(self, key: str, out: np.ndarray, rows: np.ndarray, kind: str, value: float, seed: int,
                   keep: tuple | None = None) -> None:
        """Rows `rows` of `key`'s default initialisation into `out`, in chunks
        (`keep`: only those entries of each chunk, an index of its axes)."""
        row = int(np.prod(out.shape[1:], dtype=np.int64))
        per = max(1, _CHUNK // max(row, 1))
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run in np.split(rows, breaks):
            r0, r1 = int(run[0]), int(run[-1]) + 1
            rng = self._stream(key, seed, r0 * row)
            for a in range(r0, r1, per):
                b = min(r1, a + per)
                block = draw(rng, kind, value, (b - a, *out.shape[1:]))
                if keep is None:
                    out[a:b] = block
                else:
                    out[a:b][keep] = block[keep]

    def _copy(self, key: str, old: np.ndarray, sources: dict[int, int]) -> np.ndarray:
        gather, scales, grouped = [], [], None
        for k, m in enumerate(self._moves[key]):
            if m.axis is None:
                gather.append(np.arange(m.new_size))
                scales.append(None)
                continue
            per_group = self._axis_sources(key, m, sources)
            if len(per_group) > 1:      # a grouped fan-in: each group of rows reads its own inputs
                grouped = (k, per_group)
                gather.append(np.arange(old.shape[k]))
                scales.append(None)
                continue
            src, count = per_group[0]
            gather.append(src)
            scales.append(1.0 / count if m.role is UnitAxis.FAN_IN else None)
        out = old[np.ix_(*gather)].astype(np.float32)
        for k, s in enumerate(scales):
            if s is not None and np.any(s != 1.0):
                out *= s.reshape((-1,) + (1,) * (out.ndim - k - 1)).astype(np.float32)
        if grouped is not None:     # a grouped conv's fan-in, or a grouped transposed conv's own units
            k, per_group = grouped
            assert k == 1, f"`{key}`: a grouped axis {k}"
            fan_in = self._moves[key][k].role is UnitAxis.FAN_IN
            rows = out.shape[0] // len(per_group)
            parts = []
            for g, (src, count) in enumerate(per_group):
                block = out[g * rows:(g + 1) * rows][:, src]
                parts.append(block / count.reshape((-1,) + (1,) * (out.ndim - 2)).astype(np.float32) if fan_in
                             else block)
            out = np.concatenate(parts, axis=0)
        return out

    def _axis_sources(self, key: str, m: _AxisMove, sources: dict[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """For a net2net copy: the old index each new index copies, and how
        many new indices copy the same old one; one pair per group of a
        grouped fan-in, else one."""
        a, b = m.axis, m.old_axis
        g = 1 if a.whole else a.groups      # a whole axis keeps each channel in its group (`_moves`)
        per_new, per_old = len(a.tags) // g, len(b.tags) // g
        result = []
        for group in range(g):
            new_tags = a.tags[group * per_new:(group + 1) * per_new]
            old_tags = b.tags[group * per_old:(group + 1) * per_old]
            src_tags = np.fromiter((sources.get(int(t), int(t)) for t in new_tags), dtype=np.int64, count=len(new_tags))
            src = _locate(src_tags, old_tags)
            if np.any(src < 0):
                q = int(np.flatnonzero(src < 0)[0])
                raise CompileError([error(
                    "E0507", f"net2net cannot copy a unit for `{key}`: the copy of "
                    f"{self._describe(int(new_tags[q]))} is not one old position",
                    _owner(self.new.graph, key).span,
                    help="merged or concatenated values grow in ways no single copy keeps; use init=\"zero\"")],
                    self.sources)
            count = np.bincount(src, minlength=per_old)[src]
            result.append((src, count))
        return result

    def _describe(self, tag: int) -> str:
        units = sorted(self.new.tags.units_in(tag, {}))
        if not units:
            return "a position"
        key = self.new.tags.keys[units[0]]
        return f"unit {key[3]} of `{key[1]}`"

    def net2net_sources(self, seed: int) -> dict[int, int]:
        """new tag -> the old tag it copies, for every new tag in a
        parameter axis (old tags copy themselves)."""
        tags = self.old.tags
        old_units = set()
        for t in self.old.own.values():
            old_units.update(t.tolist())
        old_tags = set(old_units)
        for layout in self.old.layouts.values():
            for a in layout:
                if a is not None:
                    old_tags.update(a.tolist())
        choice = _choose_units(self.old, self.new, old_units, old_tags, seed)
        memo: dict[int, int] = {}

        def src(t: int) -> int:
            got = memo.get(t)
            if got is not None:
                return got
            key = tags.keys[t]
            kind = key[0]
            if kind == "u":
                if t in old_units:
                    got = t
                elif _of_new_channel(tags, t, old_tags):
                    # a depthwise unit of a new input channel: the same unit of the channel it copies
                    same = tags.id(("u", key[1], ("in", src(key[2][1])), key[3]))
                    got = same if same in old_units else src(same)
                else:
                    got = choice.get(t, t)
            elif kind == "gate":
                got = tags.id(("gate", src(key[1]), key[2]))
            elif kind == "cat":
                got = tags.id(("cat", key[1], key[2], src(key[3])))
            elif kind in ("flat", "merge"):
                got = tags.id((kind, tuple(src(p) for p in key[1])))
            else:
                got = t
            memo[t] = got
            return got

        result: dict[int, int] = {}
        for axes in self._moves.values():
            for m in axes:
                if m.axis is not None:
                    for t in np.setdiff1d(m.axis.tags, m.old_axis.tags).tolist():
                        result[t] = src(t)
        return result

    # --------------------------------------------------------- optimizer state

    def optimizer_state(self, state: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Old entries at their new positions, new entries 0; `step` kept."""
        out: dict[str, np.ndarray] = {}
        for key, value in state.items():
            if key == STEP_KEY:
                out[key] = np.array(value, dtype=np.int64)
                continue
            param, _, name = key.rpartition(".")
            a = np.asarray(value, dtype=np.float32)
            out[key] = self.maps[param].place(a, 0.0)
        return out


def _of_new_channel(tags: Tags, unit: int, old_tags: set[int]) -> bool:
    """Whether a unit of a depthwise layer filters an input channel the old
    model did not have (a grown layer's new unit). A channel of a plain axis
    (a model input's) is never new: such an axis does not grow."""
    g = tags.keys[unit][2]
    return isinstance(g, tuple) and g[1] not in old_tags and bool(tags.units_in(g[1], {}))


def _choose_units(old: Analysis, new: Analysis, old_units: set[int], old_tags: set[int],
                  seed: int) -> dict[int, int]:
    """net2net's random choice: each new unit -> the old unit it copies. Units
    whose values meet at a merge form one class and copy one old class
    (drawn among the old classes of the same layers and groups), so merged
    values stay copies of each other."""
    tags = new.tags
    rng = np.random.default_rng(seed)

    def is_dependent(t: int) -> bool:        # a depthwise unit of a new input channel
        return _of_new_channel(tags, t, old_tags)

    def classes(an: Analysis, wanted) -> list[list[int]]:
        parent: dict[int, int] = {}

        def find(t: int) -> int:
            while parent[t] != t:
                parent[t] = parent[parent[t]]
                t = parent[t]
            return t

        order: list[int] = []
        for units in an.own.values():
            for t in units.tolist():
                if wanted(t) and t not in parent:
                    parent[t] = t
                    order.append(t)
        memo: dict[int, frozenset] = {}
        for node, layouts, axes in an.merges:
            for k in axes:
                cols = [x[k] for x in layouts if x[k] is not None]
                if len(cols) < 2:
                    continue
                for row in np.stack(cols, axis=-1).tolist():
                    members = [u for t in row for u in tags.units_in(t, memo) if u in parent]
                    for u in members[1:]:
                        a, b = find(members[0]), find(u)
                        if a != b:
                            parent[b] = a
        groups: dict[int, list[int]] = {}
        for t in order:
            groups.setdefault(find(t), []).append(t)
        return list(groups.values())

    def signature(cls: list[int]) -> tuple:
        return tuple(sorted(((tags.keys[t][1], repr(tags.keys[t][2])) for t in cls)))

    by_signature: dict[tuple, list[list[int]]] = {}
    for cls in classes(old, lambda t: True):
        by_signature.setdefault(signature(cls), []).append(cls)
    choice: dict[int, int] = {}
    for cls in classes(new, lambda t: t not in old_units and not is_dependent(t)):
        candidates = by_signature.get(signature(cls))
        if not candidates or len(set(signature(cls))) != len(cls):
            key = tags.keys[cls[0]]
            raise CompileError([error("E0507", f"net2net finds no old unit for unit {key[3]} of `{key[1]}` to copy",
                                      new.graph.node(key[1]).span, help="use init=\"zero\"")])
        pick = candidates[int(rng.integers(len(candidates)))]
        by_layer = {(tags.keys[t][1], repr(tags.keys[t][2])): t for t in pick}
        for t in cls:
            choice[t] = by_layer[(tags.keys[t][1], repr(tags.keys[t][2]))]
    return choice


def _check_init(init: str, seed: Any) -> None:
    if init not in INITS:
        raise UsageError(f"init must be \"zero\" or \"net2net\", got {init!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")


# ------------------------------------------------------------------ comparing the models

def plan(old: Graph, new: Graph, sources: Mapping[str, str] | None = None) -> Growth:
    """The growth from `old` to `new` (checked, unoptimised graphs):
    `CompileError` on the new model's text for what growth cannot do."""
    sources = dict(sources or {})
    diags = _compare(old, new)
    if diags:
        raise CompileError(diags, sources)
    tags = Tags()
    a, b = analyse(old, tags), analyse(new, tags)
    diags, warns = _check_flow(a, b)
    if diags:
        raise CompileError(_unique(diags), sources)
    moves: dict[str, list[_AxisMove]] = {}
    for key, spec in new.param_specs().items():
        try:
            moves[key] = _moves(key, a.params[key], b.params[key], old.param_specs()[key].shape, spec.shape)
        except _GroupError as e:
            node = _owner(new, key)
            diags.append(error("E0506", f"`{node.label}` (groups={e.groups}) cannot take its grown input: "
                               f"its old input channels would move to other groups", node.span,
                               help="grow the layer feeding it with the same groups, or give it groups=1"))
    if diags:
        raise CompileError(_unique(diags), sources)
    return Growth(a, b, moves, warns, sources)


def _owner(graph: Graph, key: str) -> Node:
    """The node whose state_dict holds `key` (a folded batchnorm's: the layer it folds into), as
    Graph.param_specs names them; not the label before the key's last dot (attention's
    `a.out_proj.weight`)."""
    for n in graph.nodes:
        if any(n.param_key(p.name) == key for p in n.params) or (
                n.norm is not None and any(f"{n.norm.label}.{p.name}" == key for p in n.norm.params)):
            return n
    raise KeyError(key)


class _GroupError(Exception):
    def __init__(self, groups: int):
        self.groups = groups


def _moves(key: str, old_axes, new_axes, old_shape, new_shape) -> list[_AxisMove]:
    result = []
    for k, (oa, na) in enumerate(zip(old_axes, new_axes)):
        if oa is None or na is None:
            assert oa is None and na is None and old_shape[k] == new_shape[k], f"`{key}` axis {k}"
            result.append(_AxisMove(None, np.arange(old_shape[k]), new_shape[k], None, None))
            continue
        assert oa.role is na.role and oa.groups == na.groups, f"`{key}` axis {k}"
        g = na.groups
        pos = _locate(oa.tags, na.tags)
        assert np.all(pos >= 0), f"`{key}` axis {k}: an old unit is missing"
        if g > 1:
            per_old, per_new = len(oa.tags) // g, len(na.tags) // g
            old_group = np.arange(len(oa.tags)) // per_old
            if np.any(pos // per_new != old_group):
                raise _GroupError(g)
            if not na.whole:       # one group's worth on the axis: every group must move alike
                within = (pos % per_new).reshape(g, per_old)
                if np.any(within != within[0]):
                    raise _GroupError(g)
                pos = within[0]
        result.append(_AxisMove(na.role, pos, na.size, na, oa))
    return result


def _compare(old: Graph, new: Graph) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    old_inputs = {i.name: i for i in old.inputs}
    for i in new.inputs:
        was = old_inputs.get(i.name)
        if was is None:
            diags.append(error("E0504", f"the model input `{i.name}` is not in the old model", i.span,
                               help="growth keeps the model's inputs: " + ", ".join(
                                   f"`{j.name}: {list(j.shape)}`" for j in old.inputs)))
        elif was.shape != i.shape:
            diags.append(error("E0504", f"the model input `{i.name}` changed shape from "
                               f"{_shape(was.shape)} to {_shape(i.shape)}", i.span,
                               help="growth changes layers' output sizes only, never the model's inputs"))
    for name in old_inputs:
        if name not in {i.name for i in new.inputs}:
            diags.append(error("E0504", f"the old model's input `{name}` is missing", new.inputs[0].span))

    old_nodes = {n.label: (k, n) for k, n in enumerate(old.nodes)}
    new_labels = {n.label for n in new.nodes}
    for n in new.nodes:
        if n.label not in old_nodes:
            diags.append(error("E0502", f"`{n.label}` is not in the old model", n.span,
                               help="growth keeps every step and its label; a new layer needs a new training"))
            continue
        _, o = old_nodes[n.label]
        diags += _compare_node(o, n)
    for label, (k, o) in old_nodes.items():
        if label in new_labels:
            continue
        after = [n for n in new.nodes if n.label in old_nodes and old_nodes[n.label][0] > k]
        at = (after[0] if after else new.nodes[-1]).span
        diags.append(error("E0502", f"`{label}` of the old model is missing", at,
                           notes=(f"`{label}` is at line {o.span.line} of `{o.span.path}`",),
                           help="growth keeps every step and its label"))
    old_outputs = [(o.name, o.value) for o in old.outputs]
    for o in new.outputs:
        if (o.name, o.value) not in old_outputs and o.value in old_nodes:
            diags.append(error("E0503", f"the output `{o.name}` is not the old model's "
                               f"({', '.join(f'`{a}` = `{b}`' for a, b in old_outputs)})", o.span))
    return _unique(diags)


def _compare_node(o: Node, n: Node) -> list[Diagnostic]:
    if o.op is not n.op:
        return [error("E0503", f"`{n.label}` is `{n.op.name}` here but `{o.op.name}` in the old model", n.span,
                      help="growth changes layers' output sizes only")]
    diags = []
    if o.inputs != n.inputs:
        diags.append(error("E0503", f"`{n.label}` reads {_names(n.inputs)} here but {_names(o.inputs)} "
                           f"in the old model", n.span))
    rule = n.op.units
    varies = set(rule.varies) if rule else set()
    for k in sorted(set(o.attrs) | set(n.attrs)):
        if k in varies:
            continue
        a, b = o.attrs.get(k), n.attrs.get(k)
        if a != b:
            diags.append(error("E0503", f"`{n.label}`: `{k}` changed from {_value(a)} to {_value(b)}", n.span,
                               help="growth changes layers' output sizes only"))
    if rule is not None and rule.size is not None and not diags:
        before, after = rule.size(o.attrs), rule.size(n.attrs)
        if after < before:
            diags.append(error("E0501", f"`{n.label}` shrinks from {before} to {after} "
                               f"{'units' if n.op.name == 'dense' else _size_word(n)}", n.span,
                               help="growth only adds units; removing units (pruning) is not supported"))
    return diags


def _size_word(n: Node) -> str:
    return {"depthwise_conv2d": "channels per input channel (multiplier)", "gru": "hidden units", "rnn": "hidden units",
            "lstm": "hidden units"}.get(n.op.name, "filters" if n.attrs.get("groups", 1) == 1 else "filters per group")


def _check_flow(a: Analysis, b: Analysis) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """Barriers and merges of the new model against the old; the warnings for
    normalisations over a grown axis."""
    diags: list[Diagnostic] = []
    warns: list[Diagnostic] = []
    new = b.graph
    for bar in b.barriers:
        node = new.node(bar.label)
        v = node.inputs[bar.input]
        if _changed(a.layouts[v][bar.axis], b.layouts[v][bar.axis]):
            diags.append(error("E0506", f"`{node.label}` cannot take grown units: {bar.why}, which carries "
                               f"the units of {_layers(b, b.layouts[v][bar.axis])}", node.span,
                               help="grow a layer whose units do not reach this op"))
    groups = _coupling(a)
    for node, layouts, axes in b.merges:
        for k in axes:
            moved = []
            for v in node.inputs:
                old_t, new_t = a.layouts[v][k], b.layouts[v][k]
                moved.append(None if old_t is None else _locate(old_t, new_t))
            real = [m for m in moved if m is not None]
            if any(not np.array_equal(real[0], m) for m in real[1:]):
                names = _layers(b, *(b.layouts[v][k] for v in node.inputs if b.layouts[v][k] is not None))
                together = groups.get(node.label)
                diags.append(error(
                    "E0505", f"the inputs of `{node.label}` ({node.op.name}) would no longer line up: "
                    f"their units on axis {k} grow at different positions", node.span,
                    notes=(f"the units meeting here come from {names}",),
                    help=f"grow these layers together, by the same number of units: {together}"
                    if together else None))
    for node, k in b.norms:
        v = node.inputs[0]
        if _changed(a.layouts[v][k], b.layouts[v][k]):
            warns.append(warning("W0002", f"`{node.label}` ({node.op.name}) normalises over axis {k}, which "
                                 f"grows: the grown model does not compute the old function", node.span,
                                 notes=(f"the units there come from {_layers(b, b.layouts[v][k])}",)))
    return diags, warns


def _coupling(an: Analysis) -> dict[str, str]:
    """merge label -> the layers whose units meet there (transitively
    through other merges), as text: the layers that must grow together."""
    tags = an.tags
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    memo: dict[int, frozenset] = {}
    touched: dict[str, set[str]] = {}
    for node, layouts, axes in an.merges:
        layers: set[str] = set()
        for k in axes:
            for x in layouts:
                if x[k] is not None:
                    for t in np.unique(x[k]).tolist():
                        layers.update(tags.layer_of(u) for u in tags.units_in(t, memo))
        touched[node.label] = layers
        first = next(iter(sorted(layers)), None)
        for layer in layers:
            parent[find(layer)] = find(first)
    order = {n.label: k for k, n in enumerate(an.graph.nodes)}
    result = {}
    for label, layers in touched.items():
        if layers:
            root = find(next(iter(layers)))
            group = sorted((x for x in parent if find(x) == root), key=lambda x: order.get(x, 0))
            result[label] = ", ".join(f"`{x}`" for x in group)
    return result


def _changed(old: np.ndarray | None, new: np.ndarray | None) -> bool:
    if old is None or new is None:
        return (old is None) != (new is None)
    return len(old) != len(new) or not np.array_equal(old, new)


def _layers(an: Analysis, *arrays: np.ndarray) -> str:
    memo: dict[int, frozenset] = {}
    layers: list[str] = []
    for arr in arrays:
        for t in np.unique(arr).tolist():
            for u in an.tags.units_in(t, memo):
                name = an.tags.layer_of(u)
                if name not in layers:
                    layers.append(name)
    order = {n.label: k for k, n in enumerate(an.graph.nodes)}
    layers.sort(key=lambda x: order.get(x, 0))
    return ", ".join(f"`{x}`" for x in layers[:8]) + (f" and {len(layers) - 8} more" if len(layers) > 8 else "") \
        if layers else "no layer"


def _explain_merges(e: CompileError, old: Graph) -> CompileError:
    """The new model does not compile: to its E0204 errors (merged shapes
    disagree) add the layers that must grow together, from the old model."""
    if not any(d.code == "E0204" for d in e.diagnostics):
        return e
    an = analyse(old)
    groups = _coupling(an)
    merges = [(node.span, node.label) for node, _, _ in an.merges]
    diags = []
    for d in e.diagnostics:
        if d.code == "E0204" and d.span is not None:
            prefix = next((n.split("`")[1].split(":")[0] for n in d.notes if n.startswith("in `")), None)
            found = [label for span, label in merges
                     if (span.line, span.column) == (d.span.line, d.span.column)
                     and (prefix is None or label.startswith(prefix + "."))]
            texts = sorted({groups[label] for label in found if label in groups})
            if texts:
                d = Diagnostic(d.severity, d.code, d.message, d.span,
                               d.notes + tuple(f"these layers must grow together: {t}" for t in texts[:3]),
                               d.help)
        diags.append(d)
    return CompileError(diags, e.sources)


def _unique(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in diags:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _shape(s) -> str:
    return "[" + ", ".join(str(d) for d in s) + "]"


def _names(values) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _value(v: Any) -> str:
    """An argument's value as a `.nn` file writes it (`true`, `(3, 3)`)."""
    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (tuple, list)):
            return "(" + ", ".join(map(text, v)) + ("," if len(v) == 1 else "") + ")"
        return str(v)
    return "(none)" if v is None else f"`{text(v)}`"


# ------------------------------------------------------------------ capacity

def capacity(graph: Graph, room: Mapping[str, int]) -> dict[str, IndexMap]:
    """Storage with room: for each tensor of `graph` (PyTorch key) an
    `IndexMap` from its shape to the shape with room for `room[label]` units
    of each named layer (the value written in the model: dense units, conv
    filters, depthwise multiplier, gru/lstm hidden size), and where its
    entries sit there. Tensors no named layer reaches map onto themselves."""
    if not isinstance(room, Mapping):
        raise UsageError(f"capacity must map layer labels to unit counts, got {type(room).__name__}")
    problems = []
    for label, n in room.items():
        try:
            node = graph.node(label)
        except KeyError:
            problems.append(f"`{label}` is not a step of the model")
            continue
        if node.op.units is None or node.op.units.size is None:
            problems.append(f"`{label}` ({node.op.name}) has no units to grow")
        elif not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            problems.append(f"capacity[{label!r}] must be a positive integer, got {n!r}")
    if problems:
        raise UsageError("capacity: " + "; ".join(problems))
    tags = Tags()
    a = analyse(graph, tags)
    b = analyse(graph, tags, {k: int(v) for k, v in room.items()})
    maps = {}
    for key, spec in graph.param_specs().items():
        moves = _moves(key, a.params[key], b.params[key], spec.shape,
                       tuple(x.size if x is not None else n for x, n in zip(b.params[key], spec.shape)))
        maps[key] = IndexMap(spec.shape, tuple(m.new_size for m in moves), tuple(m.positions for m in moves))
    return maps


# ------------------------------------------------------------------ nnc.grow

def grow(old_model, new_model, weights, optimizer_state=None, init: str = "zero", seed: int = 0,
         dims: Mapping[str, int] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """`nnc.grow`: the weights (and optimizer state) of `old_model` moved to
    `new_model`. Models are paths or source text; weights and optimizer
    state are paths (.npz; weights also .safetensors) or dicts of arrays,
    checked strictly against the old model. Warnings (W0002) are issued as
    `GrowthWarning`s."""
    growth, w, opt = prepare(old_model, new_model, weights, optimizer_state, init, seed, dims)
    for d in growth.warnings:
        warnings.warn(GrowthWarning(_render(d, growth.sources)), stacklevel=2)
    return growth.weights(w, init, seed), (None if opt is None else growth.optimizer_state(opt))


def prepare(old_model, new_model, weights, optimizer_state=None, init: str = "zero", seed: int = 0,
            dims: Mapping[str, int] | None = None):
    """Check everything `grow` needs, before any tensor moves: (growth,
    old weights, old optimizer state or None)."""
    from . import frontend
    from ..runtime import weights as W
    _check_init(init, seed)
    old = frontend.check(old_model, dims)
    try:
        new = frontend.check(new_model, dims)
    except CompileError as e:
        raise _explain_merges(e, old.graph) from None
    sources = {**old.sources, **new.sources}
    growth = plan(old.graph, new.graph, sources)
    specs = {k: W.Spec(p.shape, p.init) for k, p in old.graph.param_specs().items()}
    w = W.load(weights, specs)
    w.update(_counters(weights))
    opt = None if optimizer_state is None else read_optimizer_state(optimizer_state, old.graph)
    return growth, w, opt


def _counters(weights) -> dict[str, np.ndarray]:
    """The `num_batches_tracked` entries of a weights dict or .npz file (kept as they are)."""
    if isinstance(weights, Mapping):
        items = weights.items()
    else:
        try:
            with np.load(os.fspath(weights), allow_pickle=False) as data:
                items = [(k, data[k]) for k in data.files if k.endswith(COUNTER_SUFFIX)]
        except Exception:  # safetensors, or unreadable: weights.load has checked what matters
            return {}
    out = {}
    for k, v in items:
        if isinstance(k, str) and k.endswith(COUNTER_SUFFIX):
            a = np.asarray(v)
            if a.size == 1 and a.dtype.kind in "iuf":
                out[k] = np.array(int(a.reshape(())), dtype=np.int64)
    return out


def read_optimizer_state(state, graph: Graph) -> dict[str, np.ndarray]:
    """An optimizer state (path or dict) checked against the old model's
    parameters: `"<param>.momentum_buffer"` (SGD) or `.exp_avg`,
    `.exp_avg_sq` and `"step"` (Adam, AdamW), every parameter alike."""
    from ..runtime.trainer_base import STEP_PROBLEM, OptimizerStateError, count_value, read_npz, state_tensor
    if isinstance(state, Mapping):
        arrays, source = dict(state), "the optimizer state"
    else:
        path = os.fsdecode(os.fspath(state))
        arrays, source = read_npz(path, OptimizerStateError, "optimizer state"), f"the optimizer state in `{path}`"
    params = {k: p.shape for k, p in graph.param_specs().items() if p.learnable}
    problems, names = [], set()
    out: dict[str, np.ndarray] = {}
    unexpected = []
    for key, value in arrays.items():
        if key == STEP_KEY:
            step = count_value(value)
            if step is None:
                problems.append(STEP_PROBLEM)
            else:
                out[key] = np.array(step, dtype=np.int64)
            continue
        param, _, name = str(key).rpartition(".")
        if param not in params or name not in STATE_NAMES:
            unexpected.append(str(key))
            continue
        names.add(name)
        a = state_tensor(key, value, params[param], f"the old model's `{param}` has", problems)
        if a is not None:
            out[key] = a.astype(np.float32)
    adam = bool(names & {"exp_avg", "exp_avg_sq"}) or STEP_KEY in arrays
    if adam and "momentum_buffer" in names:
        problems.append("it mixes SGD's `momentum_buffer` with Adam's `exp_avg`, `exp_avg_sq` and `step`")
    # Adam's state is both moments of every parameter, whichever of them the dict names
    required = {"exp_avg", "exp_avg_sq"} if adam else names
    missing = [f"{p}.{n}" for n in sorted(required) for p in params if f"{p}.{n}" not in arrays]
    if adam and STEP_KEY not in arrays:
        missing.append(STEP_KEY)
    if missing:
        problems.append("missing: " + ", ".join(f"`{k}`" for k in missing[:20])
                        + (f" and {len(missing) - 20} more" if len(missing) > 20 else ""))
    if unexpected:
        problems.append("unexpected: " + ", ".join(f"`{k}`" for k in unexpected[:20])
                        + (f" and {len(unexpected) - 20} more" if len(unexpected) > 20 else ""))
    if problems:
        raise OptimizerStateError(f"{source} does not fit the old model:\n  " + "\n  ".join(problems))
    return out


def _render(d: Diagnostic, sources: Mapping[str, str]) -> str:
    from .diagnostics import render_all
    return render_all([d], sources)[0]


# the names other stages use (trainer.grow, in compiler/train.py)
check_init = _check_init
explain_merges = _explain_merges
render = _render
