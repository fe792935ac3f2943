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
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping

from .diagnostics import UserError
from .dims import Shape
from .ir import Graph, Node

LOSSES = ("cross_entropy", "mse", "bce_with_logits")


class TrainingError(UserError, ValueError):
    """A model or loss that cannot be trained as asked."""


class TensorKind(enum.Enum):
    INPUT = "input"            # the caller's array
    VALUE = "value"            # a forward value
    SAVED = "saved"            # kept by a training forward for its backward
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
    index: int
    kind: StepKind
    node: Node | None = None
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    saved: Mapping[str, str] = field(default_factory=dict)          # save name -> tensor
    input_grads: tuple[InputGrad, ...] = ()                         # BACKWARD
    param_grads: Mapping[str, str] = field(default_factory=dict)    # BACKWARD: param name -> tensor
    param: str | None = None                                        # UPDATE: the state key

    @property
    def label(self) -> str:
        if self.kind is StepKind.UPDATE:
            return f"update {self.param}"
        if self.kind is StepKind.LOSS:
            return "loss"
        assert self.node is not None
        return f"{self.kind.value} {self.node.label}"


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
    inputs = {i.name for i in graph.inputs}
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

    steps: list[Step] = []
    # forward, training mode
    for n in graph.nodes:
        tensors[n.label] = Tensor(n.label, TensorKind.VALUE, n.shape)
        saved = {}
        for name, s in n.op.backward.saves(n.attrs, [graph.shape_of(v) for v in n.inputs], n.shape).items():
            key = saved_name(n.label, name)
            tensors[key] = Tensor(key, TensorKind.SAVED, s.shape, s.dtype, s.batched)
            saved[name] = key
        steps.append(Step(len(steps), StepKind.FORWARD, n, reads=_unique(n.inputs),
                          writes=(n.label, *saved.values()), saved=saved))
    by_label = {s.node.label: s for s in steps}

    # the loss
    d_out = f"d:{output}"
    tensors[d_out] = Tensor(d_out, TensorKind.GRAD, graph.shape_of(output))
    steps.append(Step(len(steps), StepKind.LOSS, reads=(output,), writes=(d_out,)))

    # backward, reverse order; updates right after the gradient is complete
    written: set[str] = {output}          # values whose gradient some step has written
    trainable: list[str] = []
    for n in reversed(graph.nodes):
        if n.label not in needs_grad:
            continue
        rule = n.op.backward
        reads = [f"d:{n.label}"]
        if rule.needs_inputs:
            reads += [v for v in n.inputs]
        if rule.needs_output:
            reads.append(n.label)
        reads += list(by_label[n.label].saved.values())
        writes: list[str] = []
        grads: list[InputGrad] = []
        for i, v in enumerate(n.inputs):
            if v not in needs_grad:
                continue
            target = f"d:{v}"
            if v not in written:
                written.add(v)
                tensors[target] = Tensor(target, TensorKind.GRAD, graph.shape_of(v))
                grads.append(InputGrad(i, target))
                writes.append(target)
            elif rule.passes_gradient:
                grads.append(InputGrad(i, target, accumulate=True))
                reads.append(target)
                writes.append(target)
            else:
                partial = f"d:{v}~{n.label}" + (f"#{i}" if n.inputs.count(v) > 1 else "")
                tensors[partial] = Tensor(partial, TensorKind.PARTIAL, graph.shape_of(v))
                grads.append(InputGrad(i, target, accumulate=True, partial=partial))
                reads.append(target)
                writes += [partial, target]
        param_grads = {}
        for p in n.params:
            if p.learnable:
                key = n.param_key(p.name)
                name = f"d:{key}"
                tensors[name] = Tensor(name, TensorKind.PARAM_GRAD, p.shape, batched=False)
                param_grads[p.name] = name
                writes.append(name)
        steps.append(Step(len(steps), StepKind.BACKWARD, n, reads=_unique(reads), writes=_unique(writes),
                          saved=by_label[n.label].saved, input_grads=tuple(grads), param_grads=param_grads))
        for p_name, g in param_grads.items():
            key = n.param_key(p_name)
            trainable.append(key)
            steps.append(Step(len(steps), StepKind.UPDATE, n, reads=(g,), param=key))

    counters = tuple(f"{n.label}.num_batches_tracked" for n in graph.nodes if n.op.name == "batchnorm")
    return TrainGraph(graph, loss, output, tensors, tuple(steps), tuple(trainable), counters)


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
