"""Convolutions: conv1d, conv2d and depthwise_conv2d; `TRANSPOSED`: conv_transpose1d/2d (section 9).

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order. Resolving turns the
     written arguments into explicit per-axis `kernel`, `stride`, `dilation`,
     `pads` (`same`, `valid` and `causal` resolved), `groups`, `filters` and
     `in_channels`; the shape rule is PyTorch's output-size formula; the
     parameters are `weight` [filters, in/groups, *kernel] and `bias`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

from ..dims import Dim, Shape, product
from ..ir import ParamSpec
from .base import Units
from .base import (AXIS_NAMES, ArgSpec, Backward, Attrs, Kind, OpSpec, ShapeError, _expect_rank, _known, _pair,
                   _uniform, _window_out)


def _conv_resolve(rank: int, depthwise: bool):
    op = "depthwise_conv2d" if depthwise else f"conv{rank}d"

    def resolve(a: Attrs, ins: Sequence[Shape]) -> Attrs:
        (x,) = ins
        layout = "[C, T]" if rank == 1 else "[C, H, W]"
        other = {1: "use conv2d for [C, H, W] images", 2: "use conv1d for [C, T] signals"}
        help = None
        if len(x) == rank + 2 and rank == 1:
            help = other[1]
        elif len(x) == rank and rank == 2:
            help = other[2]
        elif len(x) == 1:
            help = f"reshape it to {'[1, N]' if rank == 1 else '[1, H, W]'} first"
        _expect_rank(op, x, rank + 1, layout, help)
        c = _known(x[0], "channel count", op, x)
        if any(isinstance(v, tuple) for v in (a["k"], a["stride"], a["dilation"])) and rank == 1:
            raise ShapeError("E0304", f"{op} takes a single integer per size, not a pair")
        k = _pair(a["k"], rank)
        s = _pair(a["stride"], rank)
        d = _pair(a["dilation"], rank)
        if depthwise:
            groups = c
            filters = c * a["multiplier"]
        else:
            groups, filters = a["groups"], a["filters"]
            if c % groups:
                raise ShapeError("E0202", f"groups={groups} does not divide the {c} input channels",
                                 help=_divisor_help(c, filters, groups), arg="groups")
            if filters % groups:
                raise ShapeError("E0202", f"groups={groups} does not divide the {filters} output channels",
                                 help=_divisor_help(c, filters, groups), arg="groups")
        pads = _resolve_padding(op, a["padding"], rank, k, s, d)
        out = dict(a)
        out.update(kernel=k, stride=s, dilation=d, groups=groups, filters=filters, pads=pads,
                   in_channels=c)
        out.pop("k", None)
        out.pop("multiplier", None)
        return out

    return resolve


def _divisor_help(c: int, f: int, g: int) -> str:
    common = [n for n in range(1, min(c, f) + 1) if c % n == 0 and f % n == 0]
    return f"choose groups among {', '.join(map(str, common[-6:]))}"


def _resolve_padding(op: str, p: Any, rank: int, k, s, d) -> tuple[tuple[int, int], ...]:
    if p == "valid":
        return ((0, 0),) * rank
    if p in ("same", "causal"):
        if p == "same" and any(x != 1 for x in s):       # causal is a left pad at any stride
            raise ShapeError("E0306", f"padding={p} needs stride 1, got stride {s[0] if rank == 1 else s}",
                             help="give the padding as a number", arg="padding")
        totals = [dd * (kk - 1) for kk, dd in zip(k, d)]
        if p == "causal":
            return tuple((t, 0) for t in totals)
        return tuple((t // 2, t - t // 2) for t in totals)
    if isinstance(p, tuple) and rank == 1:
        raise ShapeError("E0304", f"{op} takes one padding number, not a pair", arg="padding")
    pp = _pair(p, rank)
    return tuple((x, x) for x in pp)


def _conv_infer(op: str, a: Attrs, ins: Sequence[Shape]) -> Shape:
    (x,) = ins
    rank = len(x) - 1
    out = [a["filters"]]
    for i in range(rank):
        lo, hi = a["pads"][i]
        out.append(_window_out(op, AXIS_NAMES[rank][i], x[1 + i], a["kernel"][i], a["stride"][i],
                               lo + hi, a["dilation"][i]))
    return tuple(out)


def _conv_params(a: Attrs, ins: Sequence[Shape]) -> tuple[ParamSpec, ...]:
    per_group = a["in_channels"] // a["groups"]
    fan_in = per_group * math.prod(a["kernel"])
    ps = [ParamSpec("weight", (a["filters"], per_group, *a["kernel"]), True, _uniform(fan_in))]
    if a["bias"]:
        ps.append(ParamSpec("bias", (a["filters"],), True, _uniform(fan_in)))
    return tuple(ps)


def _conv_macs(a: Attrs, ins: Sequence[Shape], out: Shape) -> Dim:
    per_output = (a["in_channels"] // a["groups"]) * math.prod(a["kernel"])
    return product(out) * per_output


def _conv_units(u) -> None:
    # filters are the own units, laid out group by group; the input channels are the fan-in
    # (within each group); a depthwise layer's units follow their input channel
    a = u.attrs
    c, *spatial = u.inputs[0]
    if u.node.op.name == "depthwise_conv2d":
        own = u.own_per_channel(0, 0, a["filters"] // a["groups"])
        fan_in = None
    else:
        own = u.own(a["filters"], a["groups"])
        fan_in = u.fan_in(c, a["groups"])
    u.output(own, *(u.window(0, 1 + i) for i in range(len(spatial))))
    u.param("weight", u.own_axis(own), fan_in, *(None,) * len(spatial))
    u.param("bias", u.bias_axis(own))


_CONV_UNITS = Units(_conv_units, size=lambda a: a["filters"] // a["groups"], varies=("filters", "in_channels"))
_DEPTHWISE_UNITS = Units(_conv_units, size=lambda a: a["filters"] // a["groups"],
                         varies=("filters", "in_channels", "groups"))


def _conv(rank: int, depthwise: bool = False) -> OpSpec:
    name = "depthwise_conv2d" if depthwise else f"conv{rank}d"
    lead = (ArgSpec("k", Kind.SIZE), ArgSpec("multiplier", Kind.POS_INT, 1)) if depthwise else \
        (ArgSpec("filters", Kind.POS_INT), ArgSpec("k", Kind.SIZE))
    pad_kind = Kind.PAD1D if rank == 1 else Kind.PAD2D
    rest = (ArgSpec("stride", Kind.SIZE, 1), ArgSpec("padding", pad_kind, 0),
            ArgSpec("dilation", Kind.SIZE, 1))
    if not depthwise:
        rest += (ArgSpec("groups", Kind.POS_INT, 1),)
    rest += (ArgSpec("bias", Kind.BOOL, True),)
    return OpSpec(name, lead + rest, lambda a, ins: _conv_infer(name, a, ins),
                  resolve=_conv_resolve(rank, depthwise), params=_conv_params, macs=_conv_macs,
                  backward=Backward(),     # reads x (for the weight's gradient) and the weight
                  units=_DEPTHWISE_UNITS if depthwise else _CONV_UNITS)


ENTRIES: tuple[OpSpec, ...] = (
    _conv(1),
    _conv(2),
    _conv(2, depthwise=True),
)


# ------------------------------------------------------------------ transposed convolutions
# conv_transpose1d/2d as nn.ConvTranspose1d/2d. Resolving gives per-axis `kernel`, `stride`,
# `dilation`, `pads` (the same padding on both sides), `output_padding`, plus `groups`, `filters`
# and `in_channels`; the weight is [C, filters/groups, *kernel] (PyTorch's layout: the input
# channels first) and its default initialisation bound is 1/sqrt(filters/groups * prod(kernel)),
# as PyTorch computes the fan-in from the weight's axis 1.

def _convt_resolve(rank: int):
    op = f"conv_transpose{rank}d"

    def resolve(a: Attrs, ins: Sequence[Shape]) -> Attrs:
        (x,) = ins
        _expect_rank(op, x, rank + 1, "[C, T]" if rank == 1 else "[C, H, W]",
                     help=f"use conv_transpose{2 if rank == 1 else 1}d for {'[C, H, W]' if rank == 1 else '[C, T]'}"
                     if len(x) in (2, 3) else None)
        c = _known(x[0], "channel count", op, x)
        if rank == 1:
            for name in ("k", "stride", "padding", "output_padding", "dilation"):
                if isinstance(a[name], tuple):
                    raise ShapeError("E0304", f"{op} takes a single integer per size, not a pair", arg=name)
        k, s, d = _pair(a["k"], rank), _pair(a["stride"], rank), _pair(a["dilation"], rank)
        p, op_ = _pair(a["padding"], rank), _pair(a["output_padding"], rank)
        groups, filters = a["groups"], a["filters"]
        if c % groups:
            raise ShapeError("E0202", f"groups={groups} does not divide the {c} input channels",
                             help=_divisor_help(c, filters, groups), arg="groups")
        if filters % groups:
            raise ShapeError("E0202", f"groups={groups} does not divide the {filters} output channels",
                             help=_divisor_help(c, filters, groups), arg="groups")
        for o, ss, dd in zip(op_, s, d):
            if o >= ss and o >= dd:
                raise ShapeError("E0306", f"output_padding {o} must be smaller than the stride {ss} or the "
                                 f"dilation {dd}", help=f"use output_padding of at most {max(ss, dd) - 1}",
                                 arg="output_padding")
        out = {key: v for key, v in a.items() if key not in ("k", "padding")}
        out.update(kernel=k, stride=s, dilation=d, pads=tuple((pp, pp) for pp in p), output_padding=op_,
                   groups=groups, filters=filters, in_channels=c)
        return out

    return resolve


def _convt_infer(op: str, a: Attrs, ins: Sequence[Shape]) -> Shape:
    (x,) = ins
    rank = len(x) - 1
    out: list[Dim] = [a["filters"]]
    for i in range(rank):
        k, s, d, (p, _), o = (a["kernel"][i], a["stride"][i], a["dilation"][i], a["pads"][i],
                              a["output_padding"][i])
        size = (x[1 + i] - 1) * s - 2 * p + d * (k - 1) + o + 1
        if isinstance(size, int) and size <= 0:
            raise ShapeError("E0201", f"{op} output size on axis {AXIS_NAMES[rank][i]} would be {size}: the "
                             f"padding {p} on each side removes more than the {size + 2 * p} computed positions",
                             help="use less padding", arg="padding")
        out.append(size)
    return tuple(out)


def _convt_params(a: Attrs, ins: Sequence[Shape]) -> tuple[ParamSpec, ...]:
    per_group = a["filters"] // a["groups"]
    fan_in = per_group * math.prod(a["kernel"])
    ps = [ParamSpec("weight", (a["in_channels"], per_group, *a["kernel"]), True, _uniform(fan_in))]
    if a["bias"]:
        ps.append(ParamSpec("bias", (a["filters"],), True, _uniform(fan_in)))
    return tuple(ps)


def _convt_macs(a: Attrs, ins: Sequence[Shape], out: Shape) -> Dim:
    # every input element meets filters/groups * prod(kernel) weights
    return product(ins[0]) * (a["filters"] // a["groups"]) * math.prod(a["kernel"])


def _convt_units(u) -> None:
    # filters are the own units (axis 1 of the weight, group by group); the input channels are
    # the fan-in (axis 0 of the weight)
    a = u.attrs
    c, *spatial = u.inputs[0]
    own = u.own(a["filters"], a["groups"])
    u.output(own, *(u.window(0, 1 + i) for i in range(len(spatial))))
    # axis 1 holds one group's filters, as a grouped fan-in axis holds one group's channels
    fan_in = u.fan_in(c, a["groups"])    # axis 0 holds every group's input channels
    u.param("weight", None if fan_in is None else replace(fan_in, whole=True),
            replace(u.own_axis(own), groups=a["groups"]), *(None,) * len(spatial))
    u.param("bias", u.bias_axis(own))


def _conv_transpose(rank: int) -> OpSpec:
    name = f"conv_transpose{rank}d"
    args = (ArgSpec("filters", Kind.POS_INT), ArgSpec("k", Kind.SIZE), ArgSpec("stride", Kind.SIZE, 1),
            ArgSpec("padding", Kind.POOLPAD, 0), ArgSpec("output_padding", Kind.POOLPAD, 0),
            ArgSpec("dilation", Kind.SIZE, 1), ArgSpec("groups", Kind.POS_INT, 1), ArgSpec("bias", Kind.BOOL, True))
    return OpSpec(name, args, lambda a, ins: _convt_infer(name, a, ins), resolve=_convt_resolve(rank),
                  params=_convt_params, macs=_convt_macs, backward=Backward(),
                  units=Units(_convt_units, size=lambda a: a["filters"] // a["groups"],
                              varies=("filters", "in_channels")))


TRANSPOSED: tuple[OpSpec, ...] = (_conv_transpose(1), _conv_transpose(2))
