"""The op catalog: every op of the language, in one table.

In:  nothing; `lower.py` looks ops up here by name.
Out: `CATALOG`, name -> `OpSpec`. An entry states the op's arguments (names,
     kinds, defaults), its role (a chain step or a merge source), how it
     resolves its arguments against the input shapes, its shape rule (with
     PyTorch's output-size formulas), its parameters in PyTorch's `state_dict`
     layout with their default initialisation, and its MAC count.

Rules raise `ShapeError`; `lower.py` turns it into a located diagnostic.
Shapes exclude the batch dimension and may be symbolic (`dims.Sym`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .dims import Dim, Shape, Sym, SymbolicError, floordiv, format_shape, product
from .ir import ParamSpec


class ShapeError(Exception):
    """A model that cannot work at this op. `arg` names the argument to point
    at, when the problem is in one."""

    def __init__(self, code: str, message: str, help: str | None = None, arg: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.help = help
        self.arg = arg


class Role(enum.Enum):
    STEP = "step"        # takes the chain's value: `-> relu`
    MERGE = "merge"      # a source over named values: `add(a, b)`


class Kind(enum.Enum):
    """What an argument accepts; `coerce` checks and normalises values."""

    POS_INT = "a positive integer"
    NONNEG_INT = "a non-negative integer"
    INT = "an integer"
    FLOAT = "a number"
    PROB = "a number from 0 to 1"
    BOOL = "`true` or `false`"
    SIZE = "a positive integer or a pair"             # kernel, stride, dilation
    PAD1D = "a non-negative integer, `valid`, `same` or `causal`"
    PAD2D = "a non-negative integer, a pair, `valid` or `same`"
    POOLPAD = "a non-negative integer or a pair"
    INTS = "a tuple of integers"
    SCALE = "a positive integer or a pair"


REQUIRED = object()
MAX_SIZE = 1 << 31        # no size, kernel or stride beyond what C's int holds


@dataclass(frozen=True, slots=True)
class ArgSpec:
    name: str
    kind: Kind
    default: Any = REQUIRED


Attrs = Mapping[str, Any]


@dataclass(frozen=True, slots=True, eq=False)
class OpSpec:
    name: str
    args: tuple[ArgSpec, ...]
    infer: Callable[[Attrs, Sequence[Shape]], Shape]
    role: Role = Role.STEP
    min_inputs: int = 1
    max_inputs: int | None = 1                 # None: any number
    resolve: Callable[[Attrs, Sequence[Shape]], Attrs] | None = None
    params: Callable[[Attrs, Sequence[Shape]], tuple[ParamSpec, ...]] = lambda a, ins: ()
    macs: Callable[[Attrs, Sequence[Shape], Shape], Dim] = lambda a, ins, out: 0
    elementwise: bool = False                  # an activation: same shape, fusable
    aliases: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<op {self.name}>"


# ------------------------------------------------------------- argument kinds

class ArgError(Exception):
    pass


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def coerce(kind: Kind, v: Any) -> Any:
    """Check that v is of the kind; return the normalised value or raise ArgError."""
    if isinstance(v, Sym):
        raise ArgError(f"must be {kind.value} known at compile time, got the symbolic size `{v}`")
    if _is_int(v) and abs(v) > MAX_SIZE:
        raise ArgError(f"must be at most {MAX_SIZE:,}, got {v:.3g}")
    if kind is Kind.POS_INT and _is_int(v) and v > 0:
        return v
    if kind is Kind.NONNEG_INT and _is_int(v) and v >= 0:
        return v
    if kind is Kind.INT and _is_int(v):
        return v
    if kind in (Kind.FLOAT, Kind.PROB) and (_is_int(v) or isinstance(v, float)):
        if not math.isfinite(float(v)):
            raise ArgError(f"must be a finite number, got {v}")
        if kind is Kind.PROB and not 0 <= v <= 1:
            raise ArgError(f"must be {kind.value}, got {v}")
        return float(v)
    if kind is Kind.BOOL and isinstance(v, bool):
        return v
    if kind in (Kind.SIZE, Kind.SCALE):
        if _is_int(v) and v > 0:
            return v
        if isinstance(v, tuple) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v):
            return v
    if kind is Kind.PAD1D:
        if (_is_int(v) and v >= 0) or v in ("valid", "same", "causal"):
            return v
    if kind is Kind.PAD2D:
        if (_is_int(v) and v >= 0) or v in ("valid", "same"):
            return v
        if isinstance(v, tuple) and len(v) == 2 and all(_is_int(x) and x >= 0 for x in v):
            return v
    if kind is Kind.POOLPAD:
        if _is_int(v) and v >= 0:
            return v
        if isinstance(v, tuple) and len(v) == 2 and all(_is_int(x) and x >= 0 for x in v):
            return v
    if kind is Kind.INTS:
        if _is_int(v):
            return (v,)
        if isinstance(v, tuple) and all(_is_int(x) for x in v):
            return v
    raise ArgError(f"must be {kind.value}, got {describe(v)}")


def describe(v: Any) -> str:
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if isinstance(v, str):
        return f"`{v}`"
    if isinstance(v, tuple):
        return "(" + ", ".join(describe(x).strip("`") for x in v) + ")" if v else "()"
    return f"`{v}`" if isinstance(v, Sym) else str(v)


# ------------------------------------------------------------- shape helpers

AXIS_NAMES = {1: ("T",), 2: ("H", "W")}


def _pair(v: int | tuple[int, int], n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


def _known(d: Dim, what: str, op: str, shape: Shape) -> int:
    if isinstance(d, Sym):
        raise ShapeError("E0206", f"{op} needs a known {what}, got {format_shape(shape)}",
                         help="only the time axis may be a named dimension here")
    return d


def _expect_rank(op: str, shape: Shape, rank: int, layout: str, help: str | None = None) -> None:
    if len(shape) != rank:
        raise ShapeError("E0203", f"{op} expects {layout} per example, got {format_shape(shape)}", help=help)


def _window_out(op: str, axis: str, size: Dim, k: int, s: int, pad: int, d: int) -> Dim:
    """PyTorch's output size: (in + pad - d*(k-1) - 1) // s + 1, checked positive."""
    span = d * (k - 1) + 1
    out = floordiv(size + pad - span, s) + 1
    if isinstance(out, int) and out <= 0:
        padded = f"{size} + {pad}" if pad else f"{size}"
        raise ShapeError(
            "E0201",
            f"{op} output size on axis {axis} would be {out}: the kernel spans {span} but the "
            f"{'padded ' if pad else ''}input is {padded}",
            help="use a smaller kernel, add padding, or remove a downsampling step before it")
    return out


def _uniform(fan_in: int) -> tuple[str, float]:
    return ("uniform", 1.0 / math.sqrt(fan_in)) if fan_in > 0 else ("const", 0.0)


# ------------------------------------------------------------- convolution

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
        if any(x != 1 for x in s):
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
                  resolve=_conv_resolve(rank, depthwise), params=_conv_params, macs=_conv_macs)


# ------------------------------------------------------------- dense, recurrent

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

    return OpSpec(name, (ArgSpec("hidden", Kind.POS_INT), ArgSpec("bias", Kind.BOOL, True)),
                  infer, resolve=resolve, params=params, macs=macs)


# ------------------------------------------------------------- pooling

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
    return OpSpec(name, args, infer, resolve=resolve)


def _global_avgpool_infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
    (x,) = ins
    if len(x) < 2:
        raise ShapeError("E0203", f"global_avgpool expects [C, ...] with at least one axis to pool, got {format_shape(x)}")
    return (x[0],)


# ------------------------------------------------------------- normalisation

def _batchnorm_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    return {**a, "channels": _known(x[0], "channel count (axis 0)", "batchnorm", x)}


def _batchnorm_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    c = a["channels"]
    return (ParamSpec("weight", (c,), True, ("const", 1.0)),
            ParamSpec("bias", (c,), True, ("const", 0.0)),
            ParamSpec("running_mean", (c,), False, ("const", 0.0)),
            ParamSpec("running_var", (c,), False, ("const", 1.0)))


def _layernorm_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    return {**a, "features": _known(x[-1], "size of the last axis", "layernorm", x)}


def _layernorm_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    f = a["features"]
    return (ParamSpec("weight", (f,), True, ("const", 1.0)), ParamSpec("bias", (f,), True, ("const", 0.0)))


def _prelu_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    c = 1 if a["shared"] else _known(x[0], "channel count (axis 0)", "prelu", x)
    return {**a, "channels": c}


def _prelu_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    return (ParamSpec("weight", (a["channels"],), True, ("const", 0.25)),)


# ------------------------------------------------------------- shape ops

def _same(a: Attrs, ins: Sequence[Shape]) -> Shape:
    return ins[0]


def _axis_resolve(op: str):
    def resolve(a: Attrs, ins) -> Attrs:
        (x,) = ins
        axis = a["axis"]
        if not -len(x) <= axis < len(x):
            raise ShapeError("E0306", f"{op} axis {axis} is out of range for {format_shape(x)}",
                             help=f"use an axis from {-len(x)} to {len(x) - 1} (the batch axis is not counted)",
                             arg="axis")
        return {**a, "axis": axis % len(x)}
    return resolve


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
    sc = _pair(scale, spatial)
    return (x[0], *(d * s for d, s in zip(x[1:], sc)))


# ------------------------------------------------------------- merges

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


# ------------------------------------------------------------- the table

def _act(name: str, *args: ArgSpec) -> OpSpec:
    return OpSpec(name, args, _same, elementwise=True)


_ENTRIES: list[OpSpec] = [
    OpSpec("dense", (ArgSpec("units", Kind.POS_INT), ArgSpec("bias", Kind.BOOL, True)), _dense_infer,
           resolve=_dense_resolve, params=_dense_params, macs=_dense_macs, aliases=("linear",)),
    _conv(1),
    _conv(2),
    _conv(2, depthwise=True),
    _pool("max", 1), _pool("max", 2), _pool("avg", 1), _pool("avg", 2),
    OpSpec("global_avgpool", (), _global_avgpool_infer),
    OpSpec("batchnorm", (ArgSpec("eps", Kind.FLOAT, 1e-5),), _same, resolve=_batchnorm_resolve,
           params=_batchnorm_params),
    OpSpec("layernorm", (ArgSpec("eps", Kind.FLOAT, 1e-5),), _same, resolve=_layernorm_resolve,
           params=_layernorm_params),
    _recurrent("gru", 3),
    _recurrent("lstm", 4),
    OpSpec("prelu", (ArgSpec("shared", Kind.BOOL, False),), _same, resolve=_prelu_resolve, params=_prelu_params),
    *(_act(n) for n in ("relu", "relu6", "sigmoid", "tanh", "gelu", "silu", "selu", "softplus",
                        "hardsigmoid", "hardswish")),
    _act("leaky_relu", ArgSpec("slope", Kind.FLOAT, 0.01)),
    _act("elu", ArgSpec("alpha", Kind.FLOAT, 1.0)),
    OpSpec("softmax", (ArgSpec("axis", Kind.INT, -1),), _same, resolve=_axis_resolve("softmax")),
    OpSpec("log_softmax", (ArgSpec("axis", Kind.INT, -1),), _same, resolve=_axis_resolve("log_softmax")),
    OpSpec("flatten", (), _flatten_infer),
    OpSpec("reshape", (ArgSpec("shape", Kind.INTS),), _reshape_infer),
    OpSpec("transpose", (ArgSpec("perm", Kind.INTS),), _transpose_infer),
    OpSpec("upsample", (ArgSpec("scale", Kind.SCALE),), _upsample_infer),
    OpSpec("dropout", (ArgSpec("p", Kind.PROB, 0.5),), _same),
    OpSpec("identity", (), _same),
    OpSpec("add", (), _merge_infer("add"), role=Role.MERGE, min_inputs=2, max_inputs=None),
    OpSpec("sub", (), _merge_infer("sub"), role=Role.MERGE, min_inputs=2, max_inputs=2),
    OpSpec("mul", (), _merge_infer("mul"), role=Role.MERGE, min_inputs=2, max_inputs=None),
    OpSpec("concat", (ArgSpec("axis", Kind.INT, 0),), _concat_infer, role=Role.MERGE, min_inputs=2,
           max_inputs=None, resolve=_concat_resolve),
]

CATALOG: dict[str, OpSpec] = {}
for _entry in _ENTRIES:
    CATALOG[_entry.name] = _entry
    for _alias in _entry.aliases:
        CATALOG[_alias] = _entry

# Activations that the fusion pass may fold into the op producing their input.
ACTIVATIONS = frozenset(e.name for e in _ENTRIES if e.elementwise)
