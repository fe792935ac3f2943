"""Pooling: maxpool1d, maxpool2d, avgpool1d, avgpool2d and global_avgpool; `SECTION9`:
global_maxpool, adaptive_avgpool1d/2d.

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order. Resolving turns the
     written arguments into per-axis `kernel`, `stride` (the kernel by
     default) and `pads`; the shape rule is PyTorch's floor-mode output size.
     global_avgpool reduces [C, ...] to [C]. No parameters.
"""

from __future__ import annotations

import math

from typing import Sequence

from ..dims import Shape, format_shape
from .base import Units
from .base import AXIS_NAMES, ArgSpec, Attrs, Backward, Saved, Kind, OpSpec, ShapeError, _expect_rank, _pair, _window_out
from .base import _known


def _pool_units(u) -> None:
    # channels keep their units; units cannot grow along a pooled axis
    c, *spatial = u.inputs[0]
    u.output(c, *(u.window(0, 1 + i) for i in range(len(spatial))))


def _global_avgpool_units(u) -> None:
    c, *spatial = u.inputs[0]
    for i in range(len(spatial)):
        u.reduced(0, 1 + i)
    u.output(c)


def _pool(kind: str, rank: int) -> OpSpec:
    name = f"{kind}pool{rank}d"

    def resolve(a: Attrs, ins: Sequence[Shape]) -> Attrs:
        (x,) = ins
        layout = "[C, T]" if rank == 1 else "[C, H, W]"
        _expect_rank(name, x, rank + 1, layout)
        if rank == 1 and any(isinstance(a[n], tuple) for n in ("k", "stride", "padding") if a[n] is not None):
            raise ShapeError("E0304", f"{name} takes a single integer per size, not a pair")
        k = _pair(a["k"], rank)
        s = _pair(a["stride"], rank) if a["stride"] is not None else k
        p = _pair(a["padding"], rank)
        for kk, pp in zip(k, p):
            if pp * 2 > kk:
                raise ShapeError("E0306", f"{name} padding {pp} is more than half the kernel {kk}",
                                 help=f"use padding of at most {kk // 2}", arg="padding")
        return {"kernel": k, "stride": s, "pads": tuple((pp, pp) for pp in p)}

    def infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
        (x,) = ins
        out = [x[0]]
        for i in range(rank):
            out.append(_window_out(name, AXIS_NAMES[rank][i], x[1 + i], a["kernel"][i], a["stride"][i],
                                   2 * a["pads"][i][0], 1))
        return tuple(out)

    args = (ArgSpec("k", Kind.SIZE), ArgSpec("stride", Kind.SIZE, None), ArgSpec("padding", Kind.POOLPAD, 0))
    return OpSpec(name, args, infer, resolve=resolve, backward=_MAX_BACKWARD if kind == "max" else _AVG_BACKWARD,
                  units=Units(_pool_units))


# max pooling routes the gradient to each window's arg-max (saved by the training forward as the
# winning tap of its window, one byte, or as an int32 flat index into the input's plane for windows
# of more than 255 taps); average pooling spreads it over the window (padding counted)
def _argmax_saves(a: Attrs, ins, out) -> dict[str, Saved]:
    return {"argmax": Saved(out, "uint8" if math.prod(a["kernel"]) <= 255 else "int32")}


_MAX_BACKWARD = Backward(saves=_argmax_saves, needs_inputs=False)
_AVG_BACKWARD = Backward(needs_inputs=False)


def _global_avgpool_infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
    (x,) = ins
    if len(x) < 2:
        raise ShapeError("E0203", f"global_avgpool expects [C, ...] with at least one axis to pool, got {format_shape(x)}")
    return (x[0],)


ENTRIES: tuple[OpSpec, ...] = (
    _pool("max", 1), _pool("max", 2), _pool("avg", 1), _pool("avg", 2),
    OpSpec("global_avgpool", (), _global_avgpool_infer, backward=_AVG_BACKWARD,
           units=Units(_global_avgpool_units)),
)


# ------------------------------------------------------------------ section 9: global_maxpool, adaptive_avgpool
# global_maxpool reduces [C, ...] to [C] (its training forward saves each channel's flat arg-max);
# adaptive_avgpool1d/2d(size) average PyTorch's bins: output i of an axis of n averages input
# positions floor(i * n / size) .. ceil((i + 1) * n / size) - 1; the pooled sizes must be known.

def _global_maxpool_infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
    (x,) = ins
    if len(x) < 2:
        raise ShapeError("E0203", f"global_maxpool expects [C, ...] with at least one axis to pool, got "
                         f"{format_shape(x)}")
    return (x[0],)


_GLOBAL_MAX_BACKWARD = Backward(saves=lambda a, ins, out: {"argmax": Saved(out, "int32")}, needs_inputs=False)


def _adaptive(rank: int) -> OpSpec:
    name = f"adaptive_avgpool{rank}d"

    def resolve(a: Attrs, ins: Sequence[Shape]) -> Attrs:
        (x,) = ins
        _expect_rank(name, x, rank + 1, "[C, T]" if rank == 1 else "[C, H, W]")
        if rank == 1 and isinstance(a["size"], tuple):
            raise ShapeError("E0304", f"{name} takes a single integer size, not a pair", arg="size")
        for d in x[1:]:
            _known(d, "size to pool", name, x)
        return {"size": _pair(a["size"], rank)}

    def infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
        return (ins[0][0], *a["size"])

    def macs(a: Attrs, ins: Sequence[Shape], out: Shape) -> int:
        return 0

    return OpSpec(name, (ArgSpec("size", Kind.SIZE),), infer, resolve=resolve, macs=macs,
                  backward=Backward(needs_inputs=False), units=Units(_pool_units))


SECTION9: tuple[OpSpec, ...] = (
    OpSpec("global_maxpool", (), _global_maxpool_infer, backward=_GLOBAL_MAX_BACKWARD,
           units=Units(_global_avgpool_units)),
    _adaptive(1), _adaptive(2),
)
