"""Reverse-mode differentiation on the IR: a checked graph and a loss -> the training graph.

In:  an `ir.Graph` straight from the front end (no inference passes: batchnorm
     is not folded, dropout is kept, nothing is fused) and a loss name.
Out: `TrainGraph`: the tensors of one training step and its schedule, a tuple
     of `Step`s: the forward steps (graph order, training mode), the loss
     step, then the backward steps in reverse graph order, each followed by
     the update steps of the parameters whose gradient it completed. Every
     step names the tensors it reads and writes, so the memory planner
     (`train_memory.py`) derives lifetimes from the schedule alone and any
     target's generator can follow it.

Tensors, by name (labels are value names, so they never clash with these):
    x, conv1          a model input (the caller's array) or a forward value
    conv1:argmax      what a training forward saves for its backward (`Backward.saves`)
    relu_0:mask       one byte per element standing for a float the backward would read
    r:bn1             a forward value recomputed in backward (transient)
    d:conv1           the gradient of a value
    d:conv1.weight    the gradient of a parameter (PyTorch's key after `d:`)
    d:x~conv1         a partial gradient: conv1's contribution to `d:x` when
                      another consumer wrote `d:x` first (fan-out); added in
                      the same step
The rules come from the catalog (`OpSpec.backward`): which forward tensors the
backward reads and what the training forward saves. A value gets a gradient
when it depends on a trainable parameter and the loss depends on it; a
parameter that does not reach the loss gets none and is not updated (as
PyTorch leaves `p.grad` None).

The saved set is kept small (Gist, Jain et al. 2018; in-place activated
batchnorm, Rota Bulo et al. 2018), in three ways, decided in this order:
1. Fused steps: a node whose rule `absorbs` the nodes after it (batchnorm:
   a masked activation, then a max pool) is one step with them when each
   value in between has that next node as its only reader and is no model
   output. The step writes only the last node's value and the saves of its
   nodes; its backward recomputes the values in between.
2. Recomputation: the output of a step whose head has `recompute` (and whose
   other nodes are elementwise) is not kept for the backward steps that read
   it when they read it directly (not through a view): a `RECOMPUTE` step
   writes `r:<value>` right before the first of them, and they read that.
3. Masks: an activation with `mask` whose backward would read a float
   tensor no other backward reads (even through a view) saves one byte per
   element instead (`<label>:mask`, uint8), written by its forward from its
   input.

Blocked updates: a parameter in its op's `Backward.row_blocks` (dense's
weight) with more than `BLOCKED_ABOVE` floats gets no gradient tensor: its
backward step leaves it out, and its UPDATE step (`blocked`) reads what the
backward read (the output's gradient and the input) and forms the gradient
a block of rows at a time, each block applied by the optimizer at once
(every optimizer's rule is elementwise). The target sizes the blocks; the
update comes after the backward step, so the input's gradient is formed
with the weight before the update.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Mapping

from .diagnostics import UserError
from .dims import Shape, evaluate
from .ir import Graph, Node
from .memory import VIEW_OPS
from .ops.base import Saved

LOSSES = ("cross_entropy", "mse", "bce_with_logits")
BLOCKED_ABOVE = 1 << 16     # floats (256 KB): a larger `row_blocks` parameter is updated by blocks of rows


class TrainingError(UserError, ValueError):
    """A model or loss that cannot be trained as asked."""


class TensorKind(enum.Enum):
    INPUT = "input"            # the caller's array
    VALUE = "value"            # a forward value
    SAVED = "saved"            # kept by a training forward for its backward
    RECOMPUTED = "recomputed"  # a forward value formed again in backward, for the steps that read it
    GRAD = "grad"              # the gradient of a value
    PARTIAL = "partial"        # one more contribution to a value's gradient
    PARAM_GRAD = "param_grad"  # the gradient of a parameter


GRADIENT_KINDS = frozenset({TensorKind.GRAD, TensorKind.PARTIAL, TensorKind.PARAM_GRAD})


@dataclass(frozen=True, slots=True)
class Tensor:
    """`shape` is per example when `batched` (the batch axis comes first at
    run time), else the whole tensor (parameter gradients, batch statistics)."""

    name: str
    kind: TensorKind
    shape: Shape
    dtype: str = "float32"
    batched: bool = True


class StepKind(enum.Enum):
    FORWARD = "forward"
    LOSS = "loss"
    BACKWARD = "backward"
    UPDATE = "update"
    RECOMPUTE = "recompute"    # a forward step again, in backward, into `r:<value>`


@dataclass(frozen=True, slots=True)
class InputGrad:
    """Where a backward step puts one input's gradient: `target` (`d:x`),
    written fresh, or, when `partial` is set, computed into that temporary
    and added to `target` (a later consumer of a fan-out). `partial` is None
    with `accumulate` for ops that add the output's gradient straight in."""

    index: int
    target: str
    accumulate: bool = False
    partial: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the schedule. A fused step (`chain`) covers `node` and the
    nodes after it: it reads `node`'s inputs and writes the last one's value.
    `sources` maps a forward value a BACKWARD or RECOMPUTE step reads to the
    tensor that holds it then (its recomputed `r:` copy)."""

    index: int
    kind: StepKind
    node: Node | None = None
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    saved: Mapping[str, str] = field(default_factory=dict)          # save name -> tensor
    input_grads: tuple[InputGrad, ...] = ()                         # BACKWARD
    param_grads: Mapping[str, str] = field(default_factory=dict)    # BACKWARD: param name -> tensor
    param: str | None = None                                        # UPDATE: the state key
    chain: tuple[Node, ...] = ()                                    # the nodes a fused step takes in after `node`
    sources: Mapping[str, str] = field(default_factory=dict)        # forward value -> tensor read in its place
    blocked: bool = False                                           # UPDATE: forms its gradient by blocks of rows

    @property
    def nodes(self) -> tuple[Node, ...]:
        return () if self.node is None else (self.node, *self.chain)

    @property
    def output(self) -> str:
        """The value a FORWARD or RECOMPUTE step computes (the last node's)."""
        return self.nodes[-1].label

    @property
    def label(self) -> str:
        if self.kind is StepKind.UPDATE:
            return f"update {self.param}"
        if self.kind is StepKind.LOSS:
            return "loss"
        assert self.node is not None
        return f"{self.kind.value} {'+'.join(n.label for n in self.nodes)}"


@dataclass(frozen=True, slots=True)
class TrainGraph:
    graph: Graph
    loss: str
    output: str                               # the value the loss reads (the first output)
    tensors: Mapping[str, Tensor]
    steps: tuple[Step, ...]
    trainable: tuple[str, ...]                # state keys the optimizer updates, in update order
    counters: tuple[str, ...]                 # `<batchnorm>.num_batches_tracked` keys

    def grad_of(self, value: str) -> str:
        return f"d:{value}"


def saved_name(label: str, name: str) -> str:
    return f"{label}:{name}"


def recomputed_name(value: str) -> str:
    return f"r:{value}"


def differentiate(graph: Graph, loss: str) -> TrainGraph:
    """The training graph of `graph` with `loss` on its first output."""
    if loss not in LOSSES:
        raise TrainingError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    for n in graph.nodes:
        if n.op.backward is None:
            raise AssertionError(f"the catalog entry of `{n.op.name}` has no backward rule")
        if n.activation is not None or n.norm is not None:
            raise AssertionError("training graphs are built from the unoptimised graph")
    output = graph.outputs[0].value
    tensors: dict[str, Tensor] = {i.name: Tensor(i.name, TensorKind.INPUT, i.shape) for i in graph.inputs}

    # which values carry a gradient: they depend on a trainable parameter and the loss depends on them
    depends: dict[str, bool] = {i.name: False for i in graph.inputs}
    for n in graph.nodes:
        depends[n.label] = any(p.learnable for p in n.params) or any(depends[v] for v in n.inputs)
    reaches: set[str] = {output}
    for n in reversed(graph.nodes):
        if n.label in reaches:
            reaches.update(n.inputs)
    needs_grad = {v for v in reaches if depends.get(v, False)}
    if output not in needs_grad:
        raise TrainingError(f"`{graph.name}` has no trainable parameter that its output depends on: "
                            "there is nothing to train")

    units = _units(graph, needs_grad)           # 1. fused steps
    views = _view_roots(graph)

    # the forward values each unit's backward reads, as the catalog's rules state them
    def value_reads(u: tuple[Node, ...]) -> list[str]:
        rule = u[0].op.backward
        reads = list(u[0].inputs) if rule.needs_inputs else []
        if rule.needs_output and len(u) == 1:
            reads.append(u[0].label)
        return reads

    grad_units = [u for u in units if u[-1].label in needs_grad]
    reads_of = {u[-1].label: value_reads(u) for u in grad_units}

    # 2. recomputation: values read by later backward steps, directly only
    recompute: set[str] = set()
    for u in units:
        if not u[0].op.backward.recompute or not all(n.op.elementwise for n in u[1:]):
            continue
        v = u[-1].label
        readers = [w for w, rs in reads_of.items() if w != v and v in rs]
        through_views = any(views.get(r) == v and r != v for rs in reads_of.values() for r in rs)
        if readers and not through_views and v not in outputs_of(graph):
            recompute.add(v)

    # 3. masks: a masked activation whose float is read by no other backward
    masked: set[str] = set()
    for u in grad_units:
        n = u[0]
        if len(u) > 1 or not n.op.backward.mask:
            continue
        src = n.label if n.op.backward.needs_output else n.inputs[0]
        others = {views.get(r, r) for w, rs in reads_of.items() if w != n.label for r in rs if r not in recompute}
        if views.get(src, src) not in others:
            masked.add(n.label)

    steps: list[Step] = []
    # forward, training mode
    by_label: dict[str, Step] = {}
    for u in units:
        out = u[-1]
        tensors[out.label] = Tensor(out.label, TensorKind.VALUE, out.shape)
        saved = {}
        for n in u:
            saves = dict(n.op.backward.saves(n.attrs, [graph.shape_of(v) for v in n.inputs], n.shape))
            if n.label in masked:
                saves["mask"] = Saved(n.shape, "uint8")
            for name, s in saves.items():
                key = saved_name(n.label, name)
                tensors[key] = Tensor(key, TensorKind.SAVED, s.shape, s.dtype, s.batched)
                saved[name] = key
        step = Step(len(steps), StepKind.FORWARD, u[0], reads=_unique(u[0].inputs),
                    writes=(out.label, *saved.values()), saved=saved, chain=u[1:])
        steps.append(step)
        by_label[out.label] = step

    # the loss
    d_out = f"d:{output}"
    tensors[d_out] = Tensor(d_out, TensorKind.GRAD, graph.shape_of(output))
    steps.append(Step(len(steps), StepKind.LOSS, reads=(output,), writes=(d_out,)))

    # backward, reverse order; updates right after the gradient is complete
    recomputed: set[str] = set()

    def source(v: str) -> str:
        """The tensor a backward step reads for forward value `v`, recomputing it first if it is not kept."""
        if v not in recompute:
            return v
        r = recomputed_name(v)
        if v not in recomputed:
            recomputed.add(v)
            fw = by_label[v]
            ins = {x: source(x) for x in fw.node.inputs}
            tensors[r] = Tensor(r, TensorKind.RECOMPUTED, graph.shape_of(v))
            steps.append(Step(len(steps), StepKind.RECOMPUTE, fw.node,
                              reads=_unique([*ins.values(), *fw.saved.values()]), writes=(r,), saved=fw.saved,
                              chain=fw.chain, sources={**{x: t for x, t in ins.items() if x != t}, v: r}))
        return r

    written: set[str] = {output}          # values whose gradient some step has written
    trainable: list[str] = []
    for u in reversed(units):
        n, last = u[0], u[-1]
        if last.label not in needs_grad:
            continue
        rule = n.op.backward
        fw = by_label[last.label]
        sources = {v: source(v) for v in reads_of[last.label]} if last.label not in masked else {}
        reads = [f"d:{last.label}", *sources.values(), *fw.saved.values()]
        writes: list[str] = []
        grads: list[InputGrad] = []
        fresh: set[str] = set()       # gradients this step writes first (`add(a, a)`: the second adds in)
        for i, v in enumerate(n.inputs):
            if v not in needs_grad:
                continue
            target = f"d:{v}"
            if v not in written:
                written.add(v)
                fresh.add(target)
                tensors[target] = Tensor(target, TensorKind.GRAD, graph.shape_of(v))
                grads.append(InputGrad(i, target))
                writes.append(target)
            elif rule.passes_gradient:
                grads.append(InputGrad(i, target, accumulate=True))
                reads += [] if target in fresh else [target]
                writes.append(target)
            else:
                partial = f"d:{v}~{n.label}" + (f"#{i}" if n.inputs.count(v) > 1 else "")
                tensors[partial] = Tensor(partial, TensorKind.PARTIAL, graph.shape_of(v))
                grads.append(InputGrad(i, target, accumulate=True, partial=partial))
                reads += [] if target in fresh else [target]
                writes += [partial, target]
        param_grads = {}
        blocked: set[str] = set()
        for p in n.params:
            if p.learnable and p.name in rule.row_blocks and len(u) == 1 \
                    and math.prod(evaluate(d, graph.bounds) for d in p.shape) > BLOCKED_ABOVE:
                blocked.add(p.name)
            elif p.learnable:
                key = n.param_key(p.name)
                name = f"d:{key}"
                tensors[name] = Tensor(name, TensorKind.PARAM_GRAD, p.shape, batched=False)
                param_grads[p.name] = name
                writes.append(name)
        backward = Step(len(steps), StepKind.BACKWARD, n, reads=_unique(reads), writes=_unique(writes),
                        saved=fw.saved, input_grads=tuple(grads), param_grads=param_grads, chain=u[1:],
                        sources={v: t for v, t in sources.items() if v != t})
        steps.append(backward)
        for p in n.params:
            key = n.param_key(p.name)
            if p.name in blocked:
                trainable.append(key)
                steps.append(Step(len(steps), StepKind.UPDATE, n, reads=_unique([f"d:{n.label}", *sources.values()]),
                                  param=key, sources=backward.sources, blocked=True))
            elif p.name in param_grads:
                trainable.append(key)
                steps.append(Step(len(steps), StepKind.UPDATE, n, reads=(param_grads[p.name],), param=key))

    counters = tuple(f"{n.label}.num_batches_tracked" for n in graph.nodes if n.op.name == "batchnorm")
    return TrainGraph(graph, loss, output, tensors, tuple(steps), tuple(trainable), counters)


def outputs_of(graph: Graph) -> set[str]:
    return {o.value for o in graph.outputs}


def _units(graph: Graph, needs_grad: set[str]) -> list[tuple[Node, ...]]:
    """The graph's nodes in order, grouped into the steps of the training
    forward: runs that a node's rule `absorbs` (each value in between read
    only by the next node, and no model output), single nodes elsewhere."""
    users = graph.users()
    outputs = outputs_of(graph)
    units: list[tuple[Node, ...]] = []
    nodes = list(graph.nodes)
    i = 0
    while i < len(nodes):
        unit = [nodes[i]]
        absorbs = list(nodes[i].op.backward.absorbs)
        while absorbs and i + len(unit) < len(nodes):
            cur, nxt = unit[-1], nodes[i + len(unit)]
            if users.get(cur.label) != [nxt.label] or cur.label in outputs or nxt.inputs != (cur.label,) \
                    or (cur.label in needs_grad) != (nxt.label in needs_grad):
                break
            while absorbs and not absorbs[0](nxt.op):
                absorbs.pop(0)
            if not absorbs:
                break
            absorbs.pop(0)
            unit.append(nxt)
        units.append(tuple(unit))
        i += len(unit)
    return units


def _view_roots(graph: Graph) -> dict[str, str]:
    """Forward value -> the value whose memory it is (a view's input, followed back)."""
    roots: dict[str, str] = {}
    for n in graph.nodes:
        if n.op.name in VIEW_OPS and n.op.name != "dropout":
            roots[n.label] = roots.get(n.inputs[0], n.inputs[0])
    return roots


def _unique(names) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def verify_train(tg: TrainGraph) -> None:
    """The training graph's invariants (failures are compiler bugs): every
    tensor read is an input or written by an earlier step (or the same step,
    for a partial gradient), each update follows the backward step that
    wrote its gradient, and every trainable parameter is updated once."""
    written: set[str] = {t.name for t in tg.tensors.values() if t.kind is TensorKind.INPUT}
    updated = []
    for s in tg.steps:
        for r in s.reads:
            assert r in tg.tensors, f"{s.label} reads the unknown tensor `{r}`"
            assert r in written, f"{s.label} reads `{r}` before any step writes it"
        written.update(s.writes)
        if s.kind is StepKind.UPDATE:
            updated.append(s.param)
    assert sorted(updated) == sorted(tg.trainable), "every trainable parameter is updated exactly once"
