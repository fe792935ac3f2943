"""Pooling: maxpool1d, maxpool2d, avgpool1d, avgpool2d and global_avgpool.

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order. Resolving turns the
     written arguments into per-axis `kernel`, `stride` (the kernel by
     default) and `pads`; the shape rule is PyTorch's floor-mode output size.
     global_avgpool reduces [C, ...] to [C]. No parameters.
"""

from __future__ import annotations

from typing import Sequence

from ..dims import Shape, format_shape
from .base import Units
from .base import AXIS_NAMES, ArgSpec, Attrs, Backward, Saved, Kind, OpSpec, ShapeError, _expect_rank, _pair, _window_out


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


# max pooling routes the gradient to each window's arg-max (saved by the training forward as an
# int32 flat index into the input's plane); average pooling spreads it over the window (padding counted)
_MAX_BACKWARD = Backward(saves=lambda a, ins, out: {"argmax": Saved(out, "int32")}, needs_inputs=False)
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
