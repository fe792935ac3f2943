"""Section 9's axis ops: glu, slice, select and the reductions mean, sum, max.

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order. Every `axis` may be
     negative (counted from the end of the shape without batch) and resolves
     to a non-negative `axis` (`axes`, a sorted tuple, for the reductions).
     glu halves its axis (a * sigmoid(b), the halves in order, as F.glu);
     slice resolves Python's slice semantics with a positive step to `start`,
     `stop` (non-negative, clamped) and keeps `step`; select resolves a
     non-negative `index` (on a named axis only 0 or -1, kept as given) and
     drops the axis; mean/sum/max drop every axis
     they reduce (max as torch.amax). No parameters. The sliced, selected or
     halved axis must have a known size (a named time axis only where
     streaming allows it: glu, slice and select need the size to resolve).
"""

from __future__ import annotations

from ..dims import Shape, Sym, format_shape
from .base import ArgSpec, Attrs, Backward, Kind, OpSpec, ShapeError, Units, _known, describe


def _axis(op: str, axis: int, x: Shape, arg: str = "axis") -> int:
    if not -len(x) <= axis < len(x):
        raise ShapeError("E0306", f"{op} axis {axis} is out of range for {format_shape(x)}",
                         help=f"use an axis from {-len(x)} to {len(x) - 1} (the batch axis is not counted)",
                         arg=arg)
    return axis % len(x)


# ------------------------------------------------------------------ glu

def _glu_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    axis = _axis("glu", a["axis"], x)
    size = _known(x[axis], f"size on axis {axis}", "glu", x)
    if size % 2:
        raise ShapeError("E0205", f"glu halves axis {axis}, but its size {size} is odd ({format_shape(x)})",
                         help="give that axis an even size (e.g. twice the filters of the layer before)",
                         arg="axis")
    return {**a, "axis": axis}


def _glu_infer(a: Attrs, ins) -> Shape:
    (x,) = ins
    axis = a["axis"]
    return tuple(d // 2 if i == axis else d for i, d in enumerate(x))


def _glu_units(u) -> None:
    axis = u.attrs["axis"]
    out = list(u.inputs[0])
    if out[axis] is not None:
        out[axis] = u.opaque(0, axis, int(u.shape[axis]), f"glu splits axis {axis} into two halves")
    u.output(*out)


# ------------------------------------------------------------------ slice and select

def _slice_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    axis = _axis("slice", a["axis"], x)
    if a["step"] <= 0:
        raise ShapeError("E0306", f"slice takes a positive step, got {a['step']}", arg="step")
    size = _known(x[axis], f"size on axis {axis}", "slice", x,
                  help=f"`{x[axis]}` is a named size, known only when the model runs: slice an axis of fixed size "
                       f"(select({axis}, 0) or select({axis}, -1) takes the first or last step)")
    start, stop, step = slice(a["start"], a["end"], a["step"]).indices(size)
    count = len(range(start, stop, step))
    if count == 0:
        end = "none" if a["end"] is None else a["end"]
        raise ShapeError("E0201", f"slice({a['axis']}, {a['start']}, {end}) of axis {axis} (size {size}) "
                         f"is empty", help=f"indices run from {-size} to {size - 1}; `end` is exclusive",
                         arg="start")
    return {**a, "axis": axis, "start": start, "stop": start + (count - 1) * step + 1, "count": count}


def _slice_infer(a: Attrs, ins) -> Shape:
    (x,) = ins
    return tuple(a["count"] if i == a["axis"] else d for i, d in enumerate(x))


def _select_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    axis = _axis("select", a["axis"], x)
    index = a["index"]
    if isinstance(x[axis], Sym):
        # a named size (the time axis): its first and last step exist at every size
        if index not in (0, -1):
            raise ShapeError("E0306", f"select on axis {axis} of {format_shape(x)}, whose size `{x[axis]}` is "
                             f"named, takes index 0 or -1, got {index}", arg="index",
                             help="the size is known only when the model runs; `select(0, -1)` takes the last step")
        return {**a, "axis": axis, "index": index}
    size = _known(x[axis], f"size on axis {axis}", "select", x)
    if not -size <= index < size:
        raise ShapeError("E0306", f"select index {index} is out of range for axis {axis} of {format_shape(x)}",
                         help=f"use an index from {-size} to {size - 1}", arg="index")
    return {**a, "axis": axis, "index": index % size}


def _select_infer(a: Attrs, ins) -> Shape:
    (x,) = ins
    return tuple(d for i, d in enumerate(x) if i != a["axis"])


def _slice_units(u) -> None:
    axis = u.attrs["axis"]
    out = list(u.inputs[0])
    if out[axis] is not None:
        out[axis] = u.opaque(0, axis, int(u.shape[axis]), f"slice keeps part of axis {axis}")
    u.output(*out)


def _cut(u, axis: int, why: str) -> None:
    """A barrier: units on this input axis cannot grow through the op."""
    if u.inputs[0][axis] is not None:
        u.opaque(0, axis, 1, why)


def _select_units(u) -> None:
    axis = u.attrs["axis"]
    _cut(u, axis, f"select takes one position of axis {axis}")
    u.output(*(t for i, t in enumerate(u.inputs[0]) if i != axis))


# ------------------------------------------------------------------ reductions

def _reduce_resolve(op: str):
    def resolve(a: Attrs, ins) -> Attrs:
        (x,) = ins
        axes = sorted(_axis(op, ax, x) for ax in a["axis"])
        if len(set(axes)) != len(axes):
            raise ShapeError("E0306", f"{op} names an axis twice: {describe(a['axis'])}", arg="axis")
        if not axes:
            raise ShapeError("E0306", f"{op} needs at least one axis", arg="axis")
        return {**a, "axes": tuple(axes)}
    return resolve


def _reduce_infer(a: Attrs, ins) -> Shape:
    (x,) = ins
    return tuple(d for i, d in enumerate(x) if i not in a["axes"])


def _reduce_units(u) -> None:
    for axis in u.attrs["axes"]:
        _cut(u, axis, f"{u.node.op.name} reduces axis {axis}")
    u.output(*(t for i, t in enumerate(u.inputs[0]) if i not in u.attrs["axes"]))


def _reduce(name: str) -> OpSpec:
    # max reads its input and output (the gradient is shared among the maxima, as torch.amax's)
    return OpSpec(name, (ArgSpec("axis", Kind.AXES),), _reduce_infer, resolve=_reduce_resolve(name),
                  backward=Backward(needs_inputs=name == "max", needs_output=name == "max"),
                  units=Units(_reduce_units))


ENTRIES: tuple[OpSpec, ...] = (
    OpSpec("glu", (ArgSpec("axis", Kind.AXIS, 0),), _glu_infer, resolve=_glu_resolve,
           backward=Backward(), units=Units(_glu_units)),
    OpSpec("slice", (ArgSpec("axis", Kind.AXIS), ArgSpec("start", Kind.INT), ArgSpec("end", Kind.INT_OR_NONE, None),
                     ArgSpec("step", Kind.INT, 1)), _slice_infer, resolve=_slice_resolve,
           backward=Backward(needs_inputs=False), units=Units(_slice_units)),
    OpSpec("select", (ArgSpec("axis", Kind.AXIS), ArgSpec("index", Kind.INT)), _select_infer,
           resolve=_select_resolve, backward=Backward(needs_inputs=False), units=Units(_select_units)),
    _reduce("mean"),
    _reduce("sum"),
    _reduce("max"),
)
