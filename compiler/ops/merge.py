"""Merges: add, sub, mul and concat over named values.

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order, all of role MERGE.
     add, sub and mul need equal shapes; concat needs equal shapes except on
     its (resolved, non-negative, batch-free) `axis`. Mismatches name the
     values (`_names`, set by `lower.py`) and the axis that differs.
"""

from __future__ import annotations

from typing import Sequence

from ..dims import Dim, Shape, format_shape
from .base import ArgSpec, Attrs, Backward, Kind, OpSpec, Role, ShapeError
from .base import Units


def _merge_infer(op: str):
    def infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
        first = ins[0]
        for i, other in enumerate(ins[1:], start=1):
            if other != first:
                raise ShapeError("E0204", f"{op} of values with different shapes: "
                                 f"{_shape_diff(first, other, a.get('_names'), 0, i)}",
                                 help="make the branches produce the same shape")
        return first
    return infer


def _shape_diff(a: Shape, b: Shape, names, ia: int, ib: int) -> str:
    na = f"`{names[ia]}`" if names else f"input {ia}"
    nb = f"`{names[ib]}`" if names else f"input {ib}"
    text = f"{na} is {format_shape(a)}, {nb} is {format_shape(b)}"
    if len(a) != len(b):
        return text + f" (rank {len(a)} vs {len(b)})"
    axes = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return text + f" (axis {axes[0]} differs)"


def _concat_resolve(a: Attrs, ins) -> Attrs:
    rank = len(ins[0])
    axis = a["axis"]
    if not -rank <= axis < rank:
        raise ShapeError("E0306", f"concat axis {axis} is out of range for {format_shape(ins[0])}",
                         help=f"use an axis from {-rank} to {rank - 1} (the batch axis is not counted)",
                         arg="axis")
    return {**a, "axis": axis % rank}


def _concat_infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
    axis = a["axis"]
    first = ins[0]
    total: Dim = 0
    for i, s in enumerate(ins):
        if len(s) != len(first) or any(x != y for j, (x, y) in enumerate(zip(first, s)) if j != axis):
            names = a.get("_names")
            diff = _shape_diff(first, s, names, 0, i)
            if len(s) == len(first):
                bad = [j for j, (x, y) in enumerate(zip(first, s)) if j != axis and x != y][0]
                diff = diff.rsplit(" (", 1)[0] + f" (axis {bad} differs)"
            raise ShapeError("E0204", f"concat on axis {axis} of values that differ on another axis: {diff}",
                             help="only the concat axis may differ")
        total = total + s[axis]
    return tuple(total if j == axis else d for j, d in enumerate(first))


# add and concat pass the gradient on (whole, or a slice per input), sub negates the second
# input's; mul multiplies it by the other inputs. A value read twice accumulates (fan-out).
_PASS = Backward(needs_inputs=False, passes_gradient=True)

# Growth: add, sub and mul couple their inputs' units position by position (they must grow
# together); concat lists its inputs' units in turn on its axis (a grown input shifts the next).
_MERGE_UNITS = Units(lambda u: u.output(*u.merge()))
_CONCAT_UNITS = Units(lambda u: u.output(*u.concat(u.attrs["axis"])))

ENTRIES: tuple[OpSpec, ...] = (
    OpSpec("add", (), _merge_infer("add"), role=Role.MERGE, min_inputs=2, max_inputs=None,
           backward=_PASS, units=_MERGE_UNITS),
    OpSpec("sub", (), _merge_infer("sub"), role=Role.MERGE, min_inputs=2, max_inputs=2, backward=_PASS,
           units=_MERGE_UNITS),
    OpSpec("mul", (), _merge_infer("mul"), role=Role.MERGE, min_inputs=2, max_inputs=None,
           backward=Backward(), units=_MERGE_UNITS),
    OpSpec("concat", (ArgSpec("axis", Kind.INT, 0),), _concat_infer, role=Role.MERGE, min_inputs=2,
           max_inputs=None, resolve=_concat_resolve, backward=_PASS,
           units=_CONCAT_UNITS),
)
