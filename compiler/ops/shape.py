"""Shape ops: flatten, reshape, transpose, upsample (nearest, linear, bilinear) and `PAD` (pad).

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order. Each shape rule leaves
     out the batch axis; reshape infers one -1 and checks the element count,
     also for symbolic sizes. No parameters.
"""

from __future__ import annotations

import math

from ..dims import Shape, Sym, SymbolicError, floordiv, format_shape, product
from .base import ArgSpec, Attrs, Backward, Kind, OpSpec, ShapeError, _pair, describe
from .base import Units


def _flatten_infer(a: Attrs, ins) -> Shape:
    (x,) = ins
    try:
        return (product(x),)
    except SymbolicError as e:
        raise ShapeError("E0206", f"flatten cannot count the elements of {format_shape(x)}: {e}") from None


def _reshape_infer(a: Attrs, ins) -> Shape:
    (x,) = ins
    target = a["shape"]
    if sum(1 for d in target if d == -1) > 1:
        raise ShapeError("E0306", f"reshape allows one -1, got {describe(target)}", arg="shape")
    if any(d == 0 or d < -1 for d in target):
        raise ShapeError("E0306", f"reshape sizes must be positive (or one -1), got {describe(target)}",
                         arg="shape")
    try:
        total = product(x)
    except SymbolicError as e:
        raise ShapeError("E0206", f"reshape cannot count the elements of {format_shape(x)}: {e}") from None
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if isinstance(total, Sym):
            rest = floordiv(total, known)
            if rest * known != total:
                raise ShapeError("E0205", f"reshape to {describe(target)} does not divide the "
                                 f"{total} elements of {format_shape(x)}", arg="shape")
        elif total % known:
            raise ShapeError("E0205", f"reshape to {describe(target)} does not divide the {total} elements of "
                             f"{format_shape(x)}", help=f"the sizes other than -1 must divide {total}", arg="shape")
        else:
            rest = total // known
        return tuple(rest if d == -1 else d for d in target)
    if total != known:
        raise ShapeError("E0205", f"reshape to {describe(target)} has {known} elements, but {format_shape(x)} "
                         f"has {total}", help="use -1 for the size to infer", arg="shape")
    return tuple(target)


def _transpose_infer(a: Attrs, ins) -> Shape:
    (x,) = ins
    perm = a["perm"]
    if sorted(perm) != list(range(len(x))):
        raise ShapeError("E0306", f"transpose needs a permutation of the axes 0..{len(x) - 1} of "
                         f"{format_shape(x)}, got {describe(perm)}",
                         help="the batch axis is not counted", arg="perm")
    return tuple(x[p] for p in perm)


def _upsample_infer(a: Attrs, ins) -> Shape:
    (x,) = ins
    spatial = len(x) - 1
    if spatial not in (1, 2):
        raise ShapeError("E0203", f"upsample expects [C, T] or [C, H, W] per example, got {format_shape(x)}")
    scale = a["scale"]
    if isinstance(scale, tuple) and spatial == 1:
        raise ShapeError("E0304", "upsample of [C, T] takes one scale, not a pair", arg="scale")
    mode = a.get("mode", "nearest")
    if mode == "linear" and spatial != 1:
        raise ShapeError("E0306", f"upsample(mode=linear) works on [C, T], got {format_shape(x)}",
                         help="use mode=bilinear for [C, H, W]", arg="mode")
    if mode == "bilinear" and spatial != 2:
        raise ShapeError("E0306", f"upsample(mode=bilinear) works on [C, H, W], got {format_shape(x)}",
                         help="use mode=linear for [C, T]", arg="mode")
    sc = _pair(scale, spatial)
    return (x[0], *(d * s for d, s in zip(x[1:], sc)))


# Growth: flatten gives each element the pair (its units, its position), so channel c owns the
# columns c*S .. (c+1)*S-1; reshape follows axes it keeps whole or merges, and stops units on an
# axis it splits; transpose permutes the layouts; upsample repeats positions, not units.
def _flatten_units(u) -> None:
    u.output(u.flatten(0))


def _reshape_units(u) -> None:
    u.output(*u.reshape(0))


def _transpose_units(u) -> None:
    x = u.inputs[0]
    u.output(*(x[p] for p in u.attrs["perm"]))


def _upsample_units(u) -> None:
    c, *spatial = u.inputs[0]
    u.output(c, *(u.window(0, 1 + i) for i in range(len(spatial))))


ENTRIES: tuple[OpSpec, ...] = (
    # the gradient of a view is the output's gradient seen in the input's shape
    OpSpec("flatten", (), _flatten_infer, backward=Backward(needs_inputs=False, passes_gradient=True),
           units=Units(_flatten_units)),
    OpSpec("reshape", (ArgSpec("shape", Kind.INTS),), _reshape_infer,
           backward=Backward(needs_inputs=False, passes_gradient=True),
           units=Units(_reshape_units, varies=("shape",))),
    OpSpec("transpose", (ArgSpec("perm", Kind.INTS),), _transpose_infer, backward=Backward(needs_inputs=False),
           units=Units(_transpose_units)),
    # section 9: `mode` nearest, linear ([C, T]) or bilinear ([C, H, W]), align_corners=False
    OpSpec("upsample", (ArgSpec("scale", Kind.SCALE),
                        ArgSpec("mode", Kind.WORD, "nearest", ("nearest", "linear", "bilinear"))), _upsample_infer,
           backward=Backward(needs_inputs=False),     # each input position sums its block
           units=Units(_upsample_units)),
)


# ------------------------------------------------------------------ pad (LANGUAGE.md section 9)
# `padding` in F.pad order: (left, right) for the last axis, (left, right, top, bottom) for the
# last two. Resolving gives `pads`, ((before, after), ...) for the padded trailing axes in axis
# order, the last axis last. Reflect padding must be smaller than its axis (PyTorch's rule).

PAD_MODES = ("constant", "reflect", "replicate")


def _pad_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    p = a["padding"]
    if len(p) not in (2, 4) or len(p) // 2 > len(x):
        raise ShapeError("E0306", f"pad takes (left, right) or (left, right, top, bottom), got {describe(p)} for "
                         f"{format_shape(x)}", help="F.pad order: the last axis first", arg="padding")
    if any(v < 0 for v in p):
        raise ShapeError("E0306", f"pad sizes must not be negative, got {describe(p)}",
                         help="use slice to cut an axis", arg="padding")
    pairs = [(p[i], p[i + 1]) for i in range(0, len(p), 2)][::-1]     # axis order: the last axis last
    axes = tuple(range(len(x) - len(pairs), len(x)))
    if a["mode"] == "reflect":
        for axis, (lo, hi) in zip(axes, pairs):
            if not (lo or hi):
                continue
            size = x[axis]
            if isinstance(size, Sym):
                raise ShapeError("E0206", f"pad(mode=reflect) needs a known size on axis {axis}, got "
                                 f"{format_shape(x)}", arg="mode")
            if max(lo, hi) >= size:
                raise ShapeError("E0306", f"reflect padding {max(lo, hi)} is not smaller than the size {size} of "
                                 f"axis {axis}", help=f"use reflect padding of at most {size - 1}, or "
                                 "mode=replicate", arg="padding")
    return {"pads": tuple(pairs), "mode": a["mode"], "value": a["value"]}


def _pad_infer(a: Attrs, ins) -> Shape:
    (x,) = ins
    first = len(x) - len(a["pads"])
    return tuple(d if i < first else d + sum(a["pads"][i - first]) for i, d in enumerate(x))


def _pad_units(u) -> None:
    # a padded axis gains positions (a barrier for units there); the other axes keep theirs
    x = u.inputs[0]
    first = len(x) - len(u.attrs["pads"])
    u.output(*(x[i] if i < first or not any(u.attrs["pads"][i - first]) else u.window(0, i)
               for i in range(len(x))))


PAD = OpSpec("pad", (ArgSpec("padding", Kind.INTS), ArgSpec("mode", Kind.WORD, "constant", PAD_MODES),
                     ArgSpec("value", Kind.FLOAT, 0.0)), _pad_infer, resolve=_pad_resolve,
             backward=Backward(needs_inputs=False),     # the output's gradient, folded back onto the input
             units=Units(_pad_units))
