"""The fully connected layer: dense (alias linear).

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, its catalog entry. It acts on the last axis, so it takes a
     vector [F] or a sequence [T, F] per example; resolving records
     `in_features`; the parameters are `weight` [units, F] and `bias` [units].
"""

from __future__ import annotations

from typing import Sequence

from ..dims import Dim, Shape, format_shape, product
from ..ir import ParamSpec
from .base import ArgSpec, Attrs, Backward, Kind, OpSpec, ShapeError, _known, _uniform
from .base import Units


def _dense_resolve(a: Attrs, ins: Sequence[Shape]) -> Attrs:
    (x,) = ins
    if len(x) > 2:
        raise ShapeError("E0203", f"dense expects a vector per example, got {format_shape(x)}",
                         help="add `flatten` before it")
    f = _known(x[-1], "input size (last axis)", "dense", x)
    return {**a, "in_features": f}


def _dense_infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
    return (*ins[0][:-1], a["units"])


def _dense_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    f = a["in_features"]
    ps = [ParamSpec("weight", (a["units"], f), True, _uniform(f))]
    if a["bias"]:
        ps.append(ParamSpec("bias", (a["units"],), True, _uniform(f)))
    return tuple(ps)


def _dense_macs(a: Attrs, ins, out: Shape) -> Dim:
    return product(out) * a["in_features"]


def _dense_units(u) -> None:
    # the last axis is the fan-in; the leading one (time) keeps its layout
    *rest, features = u.inputs[0]
    own = u.own(u.attrs["units"])
    u.output(*rest, own)
    u.param("weight", u.own_axis(own), u.fan_in(features))
    u.param("bias", u.bias_axis(own))


_DENSE_UNITS = Units(_dense_units, size=lambda a: a["units"], varies=("units", "in_features"))


ENTRIES: tuple[OpSpec, ...] = (
    OpSpec("dense", (ArgSpec("units", Kind.POS_INT), ArgSpec("bias", Kind.BOOL, True)), _dense_infer,
           resolve=_dense_resolve, params=_dense_params, macs=_dense_macs, aliases=("linear",),
           backward=Backward(row_blocks=("weight",)),     # reads x and the weight; dW by rows
           units=_DENSE_UNITS),
)
