"""Recurrent layers: gru and lstm (single layer, batch first, PyTorch's layout).

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order. Each takes a sequence
     [T, F] per example and gives [T, hidden]; the parameters are
     `weight_ih_l0`, `weight_hh_l0` (and the two biases) with G gates stacked
     (3 for GRU, 4 for LSTM).
"""

from __future__ import annotations

from typing import Sequence

from ..dims import Dim, Shape
from ..ir import ParamSpec
from .base import ArgSpec, Attrs, Backward, Kind, OpSpec, Saved, _expect_rank, _known, _uniform
from .base import Units


def _recurrent_units(gates: int):
    # hidden units are the own units; each gate block's rows follow them, and weight_hh
    # reads them back (its columns are a fan-in); the time axis is stepped over
    def rule(u) -> None:
        t, features = u.inputs[0]
        own = u.own(u.attrs["hidden"])
        rows = u.gates(own, gates)
        u.output(u.window(0, 0), own)
        u.param("weight_ih_l0", u.own_axis(rows), u.fan_in(features))
        u.param("weight_hh_l0", u.own_axis(rows), u.fan_in(own))
        u.param("bias_ih_l0", u.bias_axis(rows))
        u.param("bias_hh_l0", u.bias_axis(rows))
    return Units(rule, size=lambda a: a["hidden"], varies=("hidden", "in_features"))


def _recurrent(name: str, gates: int) -> OpSpec:
    def resolve(a: Attrs, ins: Sequence[Shape]) -> Attrs:
        (x,) = ins
        _expect_rank(name, x, 2, "a sequence [T, F]",
                     help="add `transpose((1, 0))` to turn [C, T] into [T, C]" if len(x) == 2 else
                     ("reshape it to [T, 1]" if len(x) == 1 else "add `flatten` or `reshape` to make it [T, F]"))
        f = _known(x[1], "feature size (last axis)", name, x)
        return {**a, "in_features": f}

    def infer(a: Attrs, ins) -> Shape:
        return (ins[0][0], a["hidden"])

    def params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
        h, f = a["hidden"], a["in_features"]
        init = _uniform(h)
        ps = [ParamSpec("weight_ih_l0", (gates * h, f), True, init),
              ParamSpec("weight_hh_l0", (gates * h, h), True, init)]
        if a["bias"]:
            ps += [ParamSpec("bias_ih_l0", (gates * h,), True, init),
                   ParamSpec("bias_hh_l0", (gates * h,), True, init)]
        return tuple(ps)

    def macs(a: Attrs, ins, out: Shape) -> Dim:
        h, f = a["hidden"], a["in_features"]
        return out[0] * (gates * h * (f + h))

    def saves(a: Attrs, ins, out: Shape) -> dict[str, Saved]:
        # every step's gates after their nonlinearity (GRU: r, z, n and W_hn h + b_hn;
        # LSTM: i, f, g, o) and the LSTM's cell states: backpropagation through time reads them
        h, t = a["hidden"], out[0]
        kept = {"gates": Saved((t, 4 * h))}
        if name == "lstm":
            kept["cells"] = Saved((t, h))
        return kept

    return OpSpec(name, (ArgSpec("hidden", Kind.POS_INT), ArgSpec("bias", Kind.BOOL, True)),
                  infer, resolve=resolve, params=params, macs=macs,
                  backward=Backward(saves=saves, needs_output=True), units=_recurrent_units(gates))


ENTRIES: tuple[OpSpec, ...] = (
    _recurrent("gru", 3),
    _recurrent("lstm", 4),
)
