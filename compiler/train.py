"""From a model to a training plan: the pipeline behind `nnc.train` and `nnc summary --train`.

In:  a `.nn` path or source text, a loss, an optimizer (`nnc.SGD`, `Adam`,
     `AdamW`), the planned batch, bounds for named dimensions.
Out: `compile_training(...)` -> `TrainingPlan` (the training graph, its
     memory layout, the generated module's text and the inference plan's,
     for `predict`); `train(...)` -> a ready trainer (TRAINING.md section 1);
     `train_memory_report(...)` -> the `train_memory` object of `nnc summary
     --train`; `rebuild(trainer, model)`, the seam the growth stage uses;
     `grow_trainer(trainer, new_model, init, seed)`, behind `trainer.grow`.

Growth (`trainer.grow`): the new model's plan is compiled and the growth
planned (`compiler/grow.py`) before anything changes, so a refusal leaves
the trainer as it was; then the state moves (`TrainerBase._grow_state`) and
the trainer takes the new plan (`rebuild`).

Capacity (`capacity={label: units}`): `grow.capacity` gives, per tensor, the
shape with room and where the current entries sit; tensors whose entries
form one block of it (every axis a slice) are stored with room and the
trainer works on views of the current shape (`TrainerBase._reserve`). The
arena is sized for the model at capacity (`_arena_at`), so a growth within
it allocates no arena either.

Stages: `frontend.check` (no inference passes: batchnorm stays a layer of its
own with batch statistics, dropout draws masks, nothing is fused) ->
`autodiff.differentiate` (the training graph) -> `train_memory.train_layout`
(one arena at the planned batch, with the NumPy kernels' scratch) ->
`codegen.train_numpy.generate` -> `build.load_module`. The inference plan
(`build.compile_plan`, optimised) serves `predict`, so a trainer predicts
exactly what `nnc.build` with its `state_dict()` computes.

The trainer's state is plain dicts of arrays keyed by PyTorch names (the
weights, running statistics and counters; the optimizer state per
parameter): a plan made for another model with the same keys, and shapes
that the new plan states, takes them over (`rebuild`).
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..runtime.optim import SGD, Adam
from . import grow as G
from .autodiff import LOSSES, TrainGraph, TrainingError, differentiate, verify_train
from .build import compile_plan, load_module, module_name
from .codegen import train_numpy
from .diagnostics import CompileError, UserError, error
from .frontend import Checked, check
from .memory import Limits, unbounded
from .train_memory import TrainLayout, optimizer_bytes, train_layout, weights_bytes

TARGETS = ("numpy",)


class TrainingTargetError(UserError, ValueError):
    """A training plan asked for a target that has none yet."""


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    checked: Checked
    train_graph: TrainGraph
    layout: TrainLayout
    name: str
    text: str                 # the training module
    eval_name: str
    eval_text: str            # the inference module, for predict


def _check_target(target: str) -> None:
    if target == "c":
        raise TrainingTargetError("training plans are NumPy-only for now; target='c' comes later "
                                  "(train with target='numpy', then compile the trained weights for C)")
    if target not in TARGETS:
        raise TrainingTargetError(f"unknown target {target!r} for training: use 'numpy'")


def _check_batch(batch: Any) -> None:
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")


def train_graph(model: str | Path, *, loss: str = "cross_entropy", dims: Mapping[str, int] | None = None,
                limits: Limits | int | Mapping[str, int] | None = None) -> tuple[Checked, TrainGraph]:
    """The checked model and its training graph (bounds checked)."""
    if loss not in LOSSES:
        raise TrainingError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    checked = check(model, dims, limits=Limits.of(limits))
    graph = checked.graph
    missing = unbounded(graph, graph.bounds)
    if missing:
        first = sorted(missing)[0]
        raise CompileError([error(
            "E0207", f"the named dimension{'s' if len(missing) > 1 else ''} {', '.join(sorted(missing))} "
            f"need{'' if len(missing) > 1 else 's'} a bound to plan memory", graph.inputs[0].span,
            help=f"give the largest size with `dims={{'{first}': N}}` or in the model: `[{first}=N]`")],
            checked.sources)
    tg = differentiate(graph, loss)
    verify_train(tg)
    return checked, tg


def compile_training(model: str | Path, *, loss: str = "cross_entropy", batch: int = 1,
                     dims: Mapping[str, int] | None = None, target: str = "numpy",
                     limits: Limits | int | Mapping[str, int] | None = None) -> TrainingPlan:
    _check_target(target)
    _check_batch(batch)
    checked, tg = train_graph(model, loss=loss, dims=dims, limits=limits)
    # the inference plan first: its arena at this batch (E0208 past the limit) is a quick lower bound of
    # the training plan's, refused before the training layout weighs every chunking of the batch
    inference = compile_plan(model, target="numpy", batch=batch, dims=dims, limits=limits)
    lay = train_layout(tg, batch, scratch=train_numpy.scratch_bytes)
    name = module_name(tg.graph)
    text = train_numpy.generate(tg, lay, name=name, source=str(tg.graph.path), batch=batch)
    return TrainingPlan(checked, tg, lay, name, text, inference.name, inference.files[f"{inference.name}.py"])


def trainer_class(plan: TrainingPlan) -> type:
    """The generated `Trainer` class of a plan, with its inference model attached."""
    cls = load_module(f"{plan.name}_train", plan.text).Trainer
    cls.EVAL_MODEL = load_module(plan.eval_name, plan.eval_text).Model
    return cls


def train(model: str | Path, loss: str = "cross_entropy", optimizer: SGD | Adam | None = None, batch: int = 32,
          weights: Any = None, dims: Mapping[str, int] | None = None, target: str = "numpy", seed: int = 0,
          keep_gradients: bool = False, capacity: Mapping[str, int] | None = None):
    """A trainer for `model` (TRAINING.md section 1); `capacity` ({label:
    units}) stores the tensors indexed by those layers' units with room
    for that many (TRAINING.md section 2, docs/growth.md)."""
    _check_target(target)
    if optimizer is None:
        raise TypeError("train() needs an optimizer: nnc.SGD(lr), nnc.Adam() or nnc.AdamW()")
    if not isinstance(optimizer, (SGD, Adam)):
        raise TypeError(f"optimizer must be nnc.SGD, nnc.Adam or nnc.AdamW, got {type(optimizer).__name__}")
    plan = compile_training(model, loss=loss, batch=batch, dims=dims, target=target)
    options = {"loss": loss, "batch": batch, "dims": dict(dims) if dims else None}
    room: dict[str, int] = {}
    reserve: dict[str, Any] = {}
    arena = 0
    if capacity is not None:
        room = _check_capacity(capacity, plan.checked.graph)
        reserve = _with_room(G.capacity(plan.checked.graph, room))
        arena = _arena_at(model, room, options)
    trainer = trainer_class(plan)(optimizer, batch=batch, weights=weights, seed=seed,
                                  keep_gradients=keep_gradients)
    trainer._plan_options = options
    trainer._checked = plan.checked
    trainer._capacity = room
    if room:
        trainer._reserve(reserve, arena)
    return trainer


def rebuild(trainer, model: str | Path, plan: TrainingPlan | None = None, cls: type | None = None) -> None:
    """Give `trainer` the plan of `model` in place (the growth seam). The
    caller first replaces `trainer._state` and `trainer._opt_state` (plain
    dicts keyed by PyTorch names) with arrays of the new model's shapes; this
    compiles the new plan with the trainer's loss, batch and bounds (or takes
    `plan`, compiled so already, and its class `cls`), swaps the trainer's class for the new
    plan's, and reallocates what depends on shapes and has become too
    small: the arena and its views, the optimizer's scratch, the kept
    gradients. The step count, the generator and the optimizer are kept."""
    if plan is None:
        plan = compile_training(model, **trainer._plan_options)
    if cls is None:
        cls = trainer_class(plan)
    missing = [k for k in cls.PARAMS if k not in trainer._state]
    assert not missing, f"the new model's state is not in the trainer: {missing[:5]}"
    trainer.__class__ = cls
    trainer._checked = plan.checked
    trainer._setup()
    trainer._allocate_update_buffers()
    trainer._prepare()


# ------------------------------------------------------------------ growth and capacity

def grow_trainer(trainer, new_model: str | Path, init: str = "zero", seed: int | None = None) -> None:
    """`trainer.grow(new_model, init, seed)`: check the growth and compile the
    new plan (any refusal leaves the trainer as it was), then move the state
    (`TrainerBase._grow_state`) and swap the plan (`rebuild`). `seed`
    None: the trainer's seed."""
    if getattr(trainer, "_plan_options", None) is None:
        from ..runtime.trainer_base import TrainerError
        raise TrainerError("grow() needs a trainer made by nnc.train (it compiles the new model's plan)")
    seed = trainer.seed if seed is None else seed
    G.check_init(init, seed)
    options = trainer._plan_options
    old = trainer._checked
    # the new plan first: nothing else is alive while its module loads
    try:
        plan = compile_training(new_model, **options)
    except CompileError as e:
        raise G.explain_merges(e, old.graph) from None
    cls = trainer_class(plan)
    new = plan.checked
    room, reserve, arena_room = trainer._capacity, {}, trainer._arena_room
    if room:
        sizes = {label: new.graph.node(label).op.units.size(new.graph.node(label).attrs) for label in room}
        wanted = {label: max(n, sizes[label]) for label, n in room.items()}
        specs = new.graph.param_specs()
        if wanted == room and all(k in specs and all(n <= m for n, m in zip(specs[k].shape, store.shape))
                                  for k, store in trainer._storage.items()):
            # within capacity, and no layer without room grew into a tensor with room: the storage stays
            reserve = {k: G.IndexMap(specs[k].shape, store.shape, tuple(np.arange(n) for n in specs[k].shape))
                       for k, store in trainer._storage.items()}
        else:
            try:
                reserve = _with_room(G.capacity(new.graph, wanted))
            except UserError:         # a room the new model's groups do not divide: no room
                reserve = {}
        if wanted != room:            # beyond capacity: the room follows the new sizes
            arena_room = max(arena_room, _arena_at(new_model, wanted, options) // 4)
    growth = G.plan(old.graph, new.graph, {**old.sources, **new.sources})
    for d in growth.warnings:
        warnings.warn(G.GrowthWarning(G.render(d, growth.sources)), stacklevel=3)
    trainer._grow_state(growth, reserve, init, int(seed))
    del growth, reserve
    if room:
        trainer._capacity, trainer._arena_room = wanted, arena_room
    rebuild(trainer, new_model, plan, cls)


def _check_capacity(capacity: Any, graph) -> dict[str, int]:
    """`capacity=` as {label: units}, each at least the layer's size."""
    if not isinstance(capacity, Mapping):
        raise CapacityError(f"capacity must map layer labels to unit counts, e.g. {{'fc1': 4096}}; "
                            f"got {type(capacity).__name__}")
    room = {}
    problems = []
    for label, n in capacity.items():
        if not isinstance(label, str):
            problems.append(f"{label!r} is not a layer label")
            continue
        try:
            node = graph.node(label)
        except KeyError:
            near = difflib.get_close_matches(label, [x.label for x in graph.nodes], n=1)
            problems.append(f"`{label}` is not a step of the model" + (f" (did you mean `{near[0]}`?)" if near else ""))
            continue
        if node.op.units is None or node.op.units.size is None:
            problems.append(f"`{label}` ({node.op.name}) has no units to grow")
            continue
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            problems.append(f"capacity[{label!r}] must be a positive integer, got {n!r}")
            continue
        size = node.op.units.size(node.attrs)
        if n < size:
            problems.append(f"capacity[{label!r}] = {n} is less than the layer's current size {size}")
            continue
        room[label] = int(n)
    if problems:
        raise CapacityError("capacity: " + "; ".join(problems))
    return room


class CapacityError(UserError, ValueError):
    """A `capacity=` that does not fit the model (unknown label, a layer
    without units, fewer units than it has)."""


def _with_room(maps: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors that get room, each stored at the start of its storage
    (every axis from 0: one strided view, whatever its layout): an
    `IndexMap` from its shape into the storage's, position i at i. A growth
    within the room moves the entries whose positions change inside the
    storage (`TrainerBase._grow_state`): gate blocks, groups, a fan-in
    spread by concat or transpose."""
    return {k: G.IndexMap(m.old_shape, m.new_shape, tuple(np.arange(n) for n in m.old_shape))
            for k, m in maps.items() if m.new_shape != m.old_shape}


def _arena_at(model: str | Path, room: Mapping[str, int], options: Mapping[str, Any]) -> int:
    """The arena bytes of the model's training plan with the layers of
    `room` at that many units, so that growing within it needs no new
    arena; 0 when that model does not lower (an argument elsewhere that
    names a size, such as a reshape): the arena is then reallocated by a
    growth that needs more."""
    from .lower import Lowerer
    from .parse import parse
    from .diagnostics import Sink
    from .frontend import check_dims, read_source

    class _AtCapacity(Lowerer):
        def _make_node(self, e, spec, args, inputs, scope):
            label = scope.prefix + (e.label.text if e.label else f"{e.op}_{scope.counters.get(e.op, 0)}")
            if label in room:
                name = next((a for a in _SIZE_ARGS if a in args), None)
                if name is not None:
                    args[name] = room[label]
            return super()._make_node(e, spec, args, inputs, scope)

    try:
        path, text = read_source(model)
        sink = Sink(sources={path: text})
        graph = _AtCapacity(parse(text, path), check_dims(options["dims"]), sink).run()
        sink.raise_if_errors()
        if graph is None or any(n.op.units.size(n.attrs) != room[n.label] for n in graph.nodes if n.label in room):
            return 0
        tg = differentiate(graph, options["loss"])
        return train_layout(tg, options["batch"], scratch=train_numpy.scratch_bytes).plan.arena_bytes
    except (CompileError, UserError, ValueError, KeyError, AssertionError):
        return 0


_SIZE_ARGS = ("units", "filters", "multiplier", "hidden")     # the output size a growth raises, by op


def train_memory_report(model: str | Path, *, batch: int = 1, optimizer: Any = "sgd", loss: str = "cross_entropy",
                        dims: Mapping[str, int] | None = None) -> dict[str, int]:
    """The `train_memory` object of `nnc summary --train`: arena_bytes,
    lower_bound_bytes, saved_bytes, gradient_bytes (at `batch`), and the
    persistent weights_bytes and optimizer_bytes (`optimizer`: "sgd" for SGD
    with momentum, "adam", or an optimizer object)."""
    _check_batch(batch)
    checked, tg = train_graph(model, loss=loss, dims=dims)
    lay = train_layout(tg, batch, scratch=train_numpy.scratch_bytes)
    specs = tg.graph.param_specs()
    report = lay.figures()
    report.update(weights_bytes=weights_bytes(specs),
                  optimizer_bytes=optimizer_bytes(specs, tg.trainable, optimizer))
    return report
