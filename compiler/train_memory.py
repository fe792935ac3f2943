"""Training memory: a training graph's tensors -> buffers with lifetimes -> one planned arena.

In:  a `TrainGraph` (`autodiff.py`), the planned batch, and a function naming
     each step's kernel scratch in bytes at that batch, or its choices by
     chunk of examples (the target's: the NumPy generator's
     `train_numpy.scratch_bytes`).
Out: `TrainLayout`: every tensor's buffer, every buffer's offset in one arena
     (`plan.plan`, the inference planner, checked with `verify_plan`), the
     chunk each chunked step takes, and `figures()`, the `train_memory`
     object of `nnc summary --train`.

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

Tensors share a buffer in four ways, decided in schedule order:
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
4. A batchnorm's backward (fused or not) and a convolution's or dense
   layer's backward write the input's gradient over the input when nothing
   reads that after this step (their kernels are done with each chunk of the
   input before they write that chunk's gradient); failing that, a fused
   batchnorm step without a pool writes it over the output's gradient.

A blocked update (`autodiff.py`: a large dense weight formed and applied by
blocks of rows) has no gradient tensor; it reads the layer's output gradient
and input, which therefore live until it (so the input's gradient is not
written over the input), and its scratch is its two tiles.

Scratch is sized last. A step whose kernels can take the batch in chunks of
examples offers its scratch per chunk size (`ChunkedScratch`). For a peak,
every step gets the largest chunk that keeps what is alive there plus its
scratch within the peak, so a step is chunked only where its scratch would
raise the peak (fewer, larger chunks run faster). The peaks tried run from
the unchunked plan's down to the smallest any choice allows (the largest,
over the steps, of what is alive plus that step's smallest scratch), with a
few between. Chunks cost time (a loop turn per chunk, smaller matmuls), so
the plan for the largest peak wins whose arena is within `CHUNK_SLACK` of
the smallest arena of them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

from . import plan as planner
from .autodiff import GRADIENT_KINDS, StepKind, Tensor, TensorKind, TrainGraph
from .dims import evaluate
from .ir import ParamSpec
from .memory import INPLACE_OPS, VIEW_OPS, reads_once
from .ops import ACTIVATIONS

ITEM_BYTES = {"float32": 4, "int32": 4, "uint8": 1}
FORWARD_INPLACE = INPLACE_OPS - {"batchnorm", "prelu"}     # batchnorm and prelu train through their own kernels
BACKWARD_VIEWS = frozenset({"flatten", "reshape", "identity", "add", "sub"}) | ACTIVATIONS
GRAD_OVER_INPUT = frozenset({"batchnorm", "conv1d", "conv2d", "depthwise_conv2d", "dense"})
CHUNK_SLACK = 1.15          # a plan with fewer chunks wins while its arena is within this of the smallest


@dataclass(frozen=True, slots=True)
class ChunkedScratch:
    """A step's scratch when its kernels can take the batch in chunks of
    examples: examples per chunk -> scratch name -> bytes (the largest key
    is the whole batch)."""

    options: Mapping[int, Mapping[str, int]]


# step -> scratch name -> bytes at the planned batch (or the choices by chunk)
TrainScratchFn = Callable[[TrainGraph, int, int], "Mapping[str, int] | ChunkedScratch"]


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
    chunks: Mapping[int, int] = field(default_factory=dict)   # step index -> examples per chunk, where chunked
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
            elif op in FORWARD_INPLACE and dies_at(src, s.index) and reads_once(node, src, lambda v: places.get(v, v)):
                join(node.label, src)
        if share and s.kind is StepKind.BACKWARD and op in BACKWARD_VIEWS and not s.chain:
            dy = f"d:{node.label}"
            fresh = [g for g in s.input_grads if not g.accumulate]
            # `add(a, a, a)`: the gradient it adds in twice must not be the one it reads
            once = [g.target for g in s.input_grads].count(fresh[0].target) == 1 if fresh else False
            if once and (op != "sub" or fresh[0].index == 0) and dies_at(dy, s.index):
                join(fresh[0].target, dy)
        if share and s.kind is StepKind.BACKWARD and op in GRAD_OVER_INPUT:
            fresh = [g for g in s.input_grads if not g.accumulate]
            x = s.sources.get(node.inputs[0], node.inputs[0])
            dy = f"d:{s.output}"
            pooled = any(n.op.name not in ACTIVATIONS for n in s.chain)
            if fresh and x in places and dies_at(x, s.index):
                join(fresh[0].target, x)
            elif fresh and op == "batchnorm" and s.chain and not pooled and dies_at(dy, s.index):
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
    alive = [0] * len(tg.steps)
    for b in buffers:
        for i in range(b.first, b.last + 1):
            alive[i] += b.size
    offers = [scratch(tg, s.index, batch) for s in tg.steps]
    plans = []
    for peak in _peaks(alive, offers, batch):
        sizes, chunks = _scratch_choices(alive, offers, batch, peak)
        placed = list(buffers)
        scratch_names: dict[int, dict[str, str]] = {}
        for s in tg.steps:
            for k, nbytes in sorted(sizes[s.index].items()):
                if nbytes > 0:
                    bname = f"{s.label}#{k}"
                    scratch_names.setdefault(s.index, {})[k] = bname
                    placed.append(planner.Buffer(bname, nbytes, s.index, s.index))
        plans.append((placed, planner.plan(placed), scratch_names, chunks))
    smallest = min(p[1].arena_bytes for p in plans)
    placed, result, scratch_names, chunks = next(p for p in plans if p[1].arena_bytes <= CHUNK_SLACK * smallest)
    planner.verify_plan(placed, result)
    return TrainLayout(batch, places, tuple(placed), scratch_names, result,
                       _figures(tg, members, placed, result, batch), chunks)


def _options(offer, batch: int) -> Mapping[int, Mapping[str, int]]:
    return offer.options if isinstance(offer, ChunkedScratch) else {batch: offer}


def _peaks(alive: list[int], offers: list, batch: int) -> list[int]:
    """The peaks to plan for, largest first: what is alive plus the whole
    batch's scratch at the worst step (no chunks), down to the smallest any
    choice of chunks allows, and a few between (the planner's heuristics may
    pack one of them tighter)."""
    def worst(pick) -> int:
        return max((alive[i] + pick(_options(o, batch)) for i, o in enumerate(offers)), default=0)
    low = worst(lambda opts: min(sum(v.values()) for v in opts.values()))
    high = worst(lambda opts: sum(opts[max(opts)].values()))
    return sorted({high, *(p for f in (1.5, 1.3, 1.2, 1.1, 1.05) if (p := int(low * f)) < high), low}, reverse=True)


def _scratch_choices(alive: list[int], offers: list, batch: int,
                     peak: int) -> tuple[dict[int, Mapping[str, int]], dict[int, int]]:
    """Every step's scratch (name -> bytes) for the largest chunks that keep
    the step within `peak` and, for the steps that take the batch in chunks
    smaller than it, the examples per chunk."""
    sizes: dict[int, Mapping[str, int]] = {}
    chunks: dict[int, int] = {}
    for i, offer in enumerate(offers):
        opts = _options(offer, batch)
        fits = [k for k, v in opts.items() if alive[i] + sum(v.values()) <= peak]
        k = max(fits) if fits else min(opts, key=lambda k: sum(opts[k].values()))
        sizes[i] = opts[k]
        if isinstance(offer, ChunkedScratch) and k < max(opts):
            chunks[i] = k
    return sizes, chunks


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
