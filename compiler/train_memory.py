"""Training memory: a training graph's tensors -> buffers with lifetimes -> one planned arena.

In:  a `TrainGraph` (`autodiff.py`), the planned batch, and a function naming
     each step's kernel scratch in bytes at that batch (the target's: the
     NumPy generator's `train_numpy.scratch_bytes`).
Out: `TrainLayout`: every tensor's buffer, every buffer's offset in one arena
     (`plan.plan`, the inference planner, checked with `verify_plan`), and
     `figures()`, the `train_memory` object of `nnc summary --train`.

Unlike the inference plan (made for one example and scaled), the training
plan is made in bytes at the planned batch: parameter gradients and batch
statistics do not grow with the batch. A smaller batch uses the first part
of each batched buffer.

The schedule is the training graph's: step i is `tg.steps[i]`. A tensor lives
from the step that first writes it to the last step that reads it (a
tensor nothing reads lives for its own step); scratch lives for its step.
Gradients are values like the others: a parameter's gradient lives from its
backward step to its update step, right after, and its memory is reused by
the next ones. Persistent state (weights, running statistics, optimizer
state) is not in the arena.

Tensors share a buffer in three ways, decided in schedule order:
1. A forward view (`flatten`, `reshape`, `identity`) is its input's memory
   (unless the input is the caller's array).
2. A forward activation or merge (`add`, `sub`, `mul` on the first input)
   writes over its input when nothing reads that buffer after this step
   (the backward rules' reads included: `relu` keeps only its output, so it
   runs in place; `gelu` keeps its input, so it does not).
3. A backward view (`flatten`, `reshape`, `identity`, and the first input of
   `add` and `sub`) and an activation's backward (its kernel may write dx over
   dy) make the input's gradient the output gradient's memory when nothing
   reads that after this step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

from . import plan as planner
from .autodiff import GRADIENT_KINDS, StepKind, Tensor, TensorKind, TrainGraph
from .dims import evaluate
from .ir import ParamSpec
from .memory import INPLACE_OPS, VIEW_OPS
from .ops import ACTIVATIONS

ITEM_BYTES = {"float32": 4, "int32": 4}
FORWARD_INPLACE = INPLACE_OPS - {"batchnorm", "prelu"}     # batchnorm and prelu train through their own kernels
BACKWARD_VIEWS = frozenset({"flatten", "reshape", "identity", "add", "sub"}) | ACTIVATIONS

# step -> scratch name -> bytes at the planned batch
TrainScratchFn = Callable[[TrainGraph, int, int], Mapping[str, int]]


def no_scratch(tg: TrainGraph, step: int, batch: int) -> Mapping[str, int]:
    return {}


def tensor_bytes(t: Tensor, batch: int, bounds: Mapping[str, int]) -> int:
    n = math.prod(evaluate(d, bounds) for d in t.shape) * ITEM_BYTES[t.dtype]
    return batch * n if t.batched else n


@dataclass(frozen=True, slots=True)
class TrainLayout:
    batch: int
    places: Mapping[str, str]                          # tensor -> buffer (inputs have none)
    buffers: tuple[planner.Buffer, ...]
    scratch: Mapping[int, Mapping[str, str]]           # step index -> scratch name -> buffer
    plan: planner.Plan
    figures_: Mapping[str, int] = field(repr=False)
    sizes: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", {b.name: b.size for b in self.buffers})

    def offset(self, tensor: str) -> int:
        return self.plan.offsets[self.places[tensor]]

    def same_memory(self, a: str, b: str) -> bool:
        return a in self.places and self.places.get(a) == self.places.get(b)

    def figures(self) -> dict[str, int]:
        return dict(self.figures_)

    def timeline(self) -> str:
        return planner.timeline(self.buffers, self.plan)


def train_layout(tg: TrainGraph, batch: int, *, scratch: TrainScratchFn = no_scratch,
                 share: bool = True) -> TrainLayout:
    """Place every tensor and scratch buffer of one training step in one arena."""
    bounds = tg.graph.bounds
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for s in tg.steps:
        for w in s.writes:
            first.setdefault(w, s.index)
            last[w] = max(last.get(w, s.index), s.index)
        for r in s.reads:
            last[r] = max(last.get(r, s.index), s.index)
    inputs = {t.name for t in tg.tensors.values() if t.kind is TensorKind.INPUT}

    members: dict[str, list[str]] = {}          # buffer -> tensors
    places: dict[str, str] = {}

    def dies_at(tensor: str, step: int) -> bool:
        return tensor not in inputs and all(last[t] <= step for t in members[places[tensor]])

    def join(tensor: str, other: str) -> None:
        places[tensor] = places[other]
        members[places[other]].append(tensor)

    for s in tg.steps:
        node = s.node
        op = node.op.name if node is not None else None
        if share and s.kind is StepKind.FORWARD and node.inputs and node.inputs[0] not in inputs:
            src = node.inputs[0]
            if op in VIEW_OPS and op != "dropout":
                join(node.label, src)
            elif op in FORWARD_INPLACE and dies_at(src, s.index):
                join(node.label, src)
        if share and s.kind is StepKind.BACKWARD and op in BACKWARD_VIEWS:
            dy = f"d:{node.label}"
            fresh = [g for g in s.input_grads if not g.accumulate]
            if fresh and (op != "sub" or fresh[0].index == 0) and dies_at(dy, s.index):
                join(fresh[0].target, dy)
        for w in s.writes:
            if w not in places:
                places[w] = w
                members[w] = [w]

    buffers = []
    for name, ts in members.items():
        size = max(tensor_bytes(tg.tensors[t], batch, bounds) for t in ts)
        lo = min(first[t] for t in ts)
        hi = max(last[t] for t in ts)
        if size > 0:
            buffers.append(planner.Buffer(name, size, lo, hi))
    scratch_names: dict[int, dict[str, str]] = {}
    for s in tg.steps:
        for k, nbytes in sorted(scratch(tg, s.index, batch).items()):
            if nbytes > 0:
                bname = f"{s.label}#{k}"
                scratch_names.setdefault(s.index, {})[k] = bname
                buffers.append(planner.Buffer(bname, nbytes, s.index, s.index))
    result = planner.plan(buffers)
    planner.verify_plan(buffers, result)
    return TrainLayout(batch, places, tuple(buffers), scratch_names, result,
                       _figures(tg, members, buffers, result, batch))


def _figures(tg: TrainGraph, members, buffers, result: planner.Plan, batch: int) -> dict[str, int]:
    by_name = {b.name: b for b in buffers}
    backward_reads = {r for s in tg.steps if s.kind is StepKind.BACKWARD for r in s.reads}
    saved = 0
    gradient_buffers = []
    for name, ts in members.items():
        if name not in by_name:
            continue
        kinds = {tg.tensors[t].kind for t in ts}
        if kinds & {TensorKind.VALUE, TensorKind.SAVED} and any(t in backward_reads for t in ts):
            saved += by_name[name].size
        if kinds <= GRADIENT_KINDS:
            gradient_buffers.append(by_name[name])
    return {"batch": batch, "arena_bytes": result.arena_bytes, "lower_bound_bytes": planner.lower_bound(buffers),
            "saved_bytes": saved, "gradient_bytes": planner.lower_bound(gradient_buffers)}


def weights_bytes(specs: Mapping[str, ParamSpec]) -> int:
    return sum(math.prod(p.shape) * 4 for p in specs.values())


def optimizer_bytes(specs: Mapping[str, ParamSpec], trainable, optimizer) -> int:
    """The optimizer state of the trainable parameters: `optimizer` an
    `nnc.SGD`/`Adam`/`AdamW`, or "sgd" (with momentum: one buffer each) or
    "adam" (two)."""
    per = {"sgd": 1, "adam": 2, "adamw": 2}
    total = sum(math.prod(specs[k].shape) * 4 for k in trainable)
    if isinstance(optimizer, str):
        return per[optimizer] * total
    return sum(optimizer.state_bytes(math.prod(specs[k].shape) * 4) for k in trainable)
