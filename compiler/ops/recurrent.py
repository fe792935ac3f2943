"""Recurrent layers: gru, lstm and rnn (stacked and two-way, batch first, PyTorch's layout).

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order. Each takes a sequence
     [T, F] per example and gives [T, hidden * (2 if bidirectional)]; the
     parameters are `weight_ih_l{k}`, `weight_hh_l{k}` (and the two biases)
     per layer k, and `..._l{k}_reverse` for the backward direction, with G
     gates stacked (3 for GRU, 4 for LSTM, 1 for RNN, whose `nonlinearity`
     is `tanh` or `relu`); layer k > 0 reads the previous
     layer's output, both directions side by side, as nn.GRU/nn.LSTM.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..dims import Dim, Shape
from ..ir import ParamSpec
from .base import ArgSpec, Attrs, Backward, Kind, OpSpec, Saved, ShapeError, _expect_rank, _known, _uniform
from .base import Units

# Stacked layers nnc plans in one recurrent step. Each layer is listed (its
# weights, saved tensors, growth units) before any size is checked, so a
# count past this is refused first (E0306) rather than listed for minutes.
MAX_LAYERS = 1024


def stacked(name: str, a: Attrs) -> bool:
    """Whether the layer runs through the stacked kernels (`rnn_stack`): more
    than one layer or direction, or nn.RNN (which has no single-layer kernel)."""
    return name == "rnn" or a["layers"] > 1 or a["bidirectional"]


def parts(a: Attrs) -> list[tuple[int, str]]:
    """(layer, name suffix) of every layer and direction, in PyTorch's
    `state_dict` order: `_l0`, `_l0_reverse`, `_l1`, ..."""
    dirs = ("", "_reverse") if a["bidirectional"] else ("",)
    return [(k, f"_l{k}{d}") for k in range(a["layers"]) for d in dirs]


def _recurrent_units(gates: int):
    # hidden units are the own units of every layer and direction (they grow together); each
    # gate block's rows follow them, and weight_hh reads them back (its columns are a fan-in);
    # a later layer reads the previous layer's output (both directions side by side); the
    # time axis is stepped over
    def rule(u) -> None:
        t, features = u.inputs[0]
        a = u.attrs
        own = u.own(a["hidden"])
        layer_in, out = features, None
        for k in range(a["layers"]):
            outs = []
            for layer, sfx in parts(a):
                if layer != k:
                    continue
                units = own if sfx == "_l0" else u.own_more(sfx, len(own))
                rows = u.gates(units, gates)
                u.param(f"weight_ih{sfx}", u.own_axis(rows), u.fan_in(layer_in))
                u.param(f"weight_hh{sfx}", u.own_axis(rows), u.fan_in(units))
                u.param(f"bias_ih{sfx}", u.bias_axis(rows))
                u.param(f"bias_hh{sfx}", u.bias_axis(rows))
                outs.append(units)
            out = outs[0] if len(outs) == 1 else np.concatenate(outs)
            layer_in = out
        u.output(u.window(0, 0), out)
    return Units(rule, size=lambda a: a["hidden"], varies=("hidden", "in_features"))


def _recurrent(name: str, gates: int) -> OpSpec:
    def resolve(a: Attrs, ins: Sequence[Shape]) -> Attrs:
        (x,) = ins
        _expect_rank(name, x, 2, "a sequence [T, F]",
                     help="add `transpose((1, 0))` to turn [C, T] into [T, C]" if len(x) == 2 else
                     ("reshape it to [T, 1]" if len(x) == 1 else "add `flatten` or `reshape` to make it [T, F]"))
        f = _known(x[1], "feature size (last axis)", name, x)
        if a["layers"] > MAX_LAYERS:
            raise ShapeError("E0306", f"{name}: layers={a['layers']} is more than the {MAX_LAYERS} stacked layers "
                             "nnc plans in one step", arg="layers",
                             help="stack fewer layers, or chain several recurrent steps")
        return {**a, "in_features": f}

    def infer(a: Attrs, ins) -> Shape:
        return (ins[0][0], a["hidden"] * (2 if a["bidirectional"] else 1))

    def params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
        h, f = a["hidden"], a["in_features"]
        init = _uniform(h)
        ps = []
        for k, sfx in parts(a):
            width = f if k == 0 else h * (2 if a["bidirectional"] else 1)
            ps += [ParamSpec(f"weight_ih{sfx}", (gates * h, width), True, init),
                   ParamSpec(f"weight_hh{sfx}", (gates * h, h), True, init)]
            if a["bias"]:
                ps += [ParamSpec(f"bias_ih{sfx}", (gates * h,), True, init),
                       ParamSpec(f"bias_hh{sfx}", (gates * h,), True, init)]
        return tuple(ps)

    def macs(a: Attrs, ins, out: Shape) -> Dim:
        h, f, dirs = a["hidden"], a["in_features"], 2 if a["bidirectional"] else 1
        per_step = sum(gates * h * ((f if k == 0 else h * dirs) + h) for k, _ in parts(a))
        return out[0] * per_step

    def saves(a: Attrs, ins, out: Shape) -> dict[str, Saved]:
        # backpropagation through time recomputes each step's gates from the input and the
        # output (the hidden states), a chunk of steps at a time, so it keeps no gate; the
        # LSTM keeps its cell states, and a stacked layer each lower layer's output (the
        # next one's input)
        h, t = a["hidden"], out[0]
        kept = {}
        if name == "lstm":
            for _, sfx in parts(a):
                kept["cells" if not stacked(name, a) else f"cells{sfx}"] = Saved((t, h))
        for k in range(a["layers"] - 1):
            kept[f"out_l{k}"] = Saved((t, out[1]))
        return kept

    act = (ArgSpec("nonlinearity", Kind.WORD, "tanh", choices=("tanh", "relu")),) if name == "rnn" else ()
    return OpSpec(name, (ArgSpec("hidden", Kind.POS_INT), *act, ArgSpec("layers", Kind.POS_INT, 1),
                         ArgSpec("bidirectional", Kind.BOOL, False), ArgSpec("bias", Kind.BOOL, True)),
                  infer, resolve=resolve, params=params, macs=macs,
                  earlier=((1, "bias"),) if name != "rnn" else (),   # LANGUAGE.md 6: gru(hidden, bias)
                  backward=Backward(saves=saves, needs_output=True), units=_recurrent_units(gates))


ENTRIES: tuple[OpSpec, ...] = (
    _recurrent("gru", 3),
    _recurrent("lstm", 4),
    _recurrent("rnn", 1),
)
