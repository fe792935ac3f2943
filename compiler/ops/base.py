"""The shared machinery of the op catalog, which every family module builds on.

In:  nothing from the family modules.
Out: `OpSpec` (one catalog entry: arguments, role, resolve, shape rule,
     parameters, MACs, and the empty slots `backward` and `units` for the
     training and growth stages), `ArgSpec` and `Kind` (an argument and what it
     accepts), `coerce` (checks and normalises an argument's value),
     `ShapeError` (what rules raise; `lower.py` turns it into a located
     diagnostic), and the helpers the families share: PyTorch's sliding-window
     output size (`_window_out`), rank and known-size checks, pair expansion,
     default initialisation, and the identity shape rule `_same`.

Shapes exclude the batch dimension and may be symbolic (`dims.Sym`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..dims import Dim, Shape, Sym, floordiv, format_shape
from ..ir import ParamSpec


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
    FLOAT_OR_NONE = "a number or `none`"
    INT_OR_NONE = "an integer or `none`"
    AXIS = "an axis (an integer, negative counts from the end)"
    AXES = "an axis or a tuple of axes"
    WORD = "one of the words"                          # the allowed words are ArgSpec.choices


# The words that are values where an argument takes them (LANGUAGE.md section 9);
# elsewhere they stay names (ops, block parameters). `none` is Python None.
WORDS = frozenset({"none", "nearest", "linear", "bilinear", "constant", "reflect", "replicate", "tanh", "relu"})


REQUIRED = object()
MAX_SIZE = 1 << 31        # no size, kernel or stride beyond what C's int holds


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """One argument. `choices`: the words a `Kind.WORD` argument accepts. An
    argument whose default is None also accepts the word `none`."""

    name: str
    kind: Kind
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()


Attrs = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Saved:
    """A tensor an op's training forward writes for its backward, beside its
    output: `shape` per example when `batched` (the batch axis comes first),
    else the whole tensor (batchnorm's per-channel statistics)."""

    shape: Shape
    dtype: str = "float32"
    batched: bool = True


def no_saves(a: Attrs, ins: Sequence[Shape], out: Shape) -> Mapping[str, Saved]:
    return {}


@dataclass(frozen=True, slots=True)
class Backward:
    """An op's reverse-mode rule, target-independent (the training stage's
    generators turn it into kernel calls): what the backward step reads.

    `saves`: the extra tensors the training forward writes (name -> Saved);
    `needs_inputs` / `needs_output`: the backward reads the forward inputs /
    output; `passes_gradient`: each input's gradient is the output's gradient
    itself, up to a view, a slice or a sign (add, sub, concat, flatten,
    reshape, identity), so a second contribution is added straight from it,
    without a temporary.

    Smaller saved sets (`autodiff.py` decides where they apply): `mask`: the
    derivative is piecewise constant, so one byte per element of where the
    input was stands for the float tensor the backward reads, when no other
    backward reads that tensor (relu, relu6, leaky_relu, clamp); `recompute`:
    the output is cheap to form again from what the backward keeps anyway
    (batchnorm: its input and batch statistics), so a later backward that
    reads it gets it recomputed instead of kept; `absorbs`: the ops a
    training step of this op takes in after it, in order, each optional
    (tests on the next op's entry): the fused step keeps only this op's and
    their saves, and its backward recomputes the values in between.

    `row_blocks`: the parameters whose gradient the backward can form a
    block of rows (the layer's own units) at a time from the inputs and the
    output's gradient alone (dense: dW[r] = dy[:, r].T @ x), so that a large
    one is formed and applied by the optimizer block by block instead of
    being held whole (`autodiff.py`)."""

    saves: Callable[[Attrs, Sequence[Shape], Shape], Mapping[str, Saved]] = no_saves
    needs_inputs: bool = True
    needs_output: bool = False
    passes_gradient: bool = False
    mask: bool = False
    recompute: bool = False
    absorbs: tuple[Callable[["OpSpec"], bool], ...] = ()
    row_blocks: tuple[str, ...] = ()


class UnitAxis(enum.Enum):
    """What the entries along one axis of a parameter are, for growth."""

    OWN = "own"            # the layer's own units: rows of its weight, entries of its bias
    FAN_IN = "fan_in"      # the units of the input the layer reads: a weight's columns
    CHANNEL = "channel"    # a per-unit parameter of an op that keeps its input's units (norms, prelu)


@dataclass(frozen=True, slots=True)
class Units:
    """An op's unit-axis (growth) rule, read by `compiler/grow.py`.

    `rule(u)` states, with the helpers of the `grow.UnitContext` it is given,
    which axis of the output carries which units (kept from an input, the
    op's own, merged, concatenated, flattened) and the role of every axis of
    each parameter (`UnitAxis`). `size(attrs)` is the output size a growth
    may raise (units per group; None for ops without units of their own);
    `varies` names the resolved arguments that may differ between the old and
    the grown model (the output size, and sizes derived from the input)."""

    rule: Callable[[Any], None]
    size: Callable[[Attrs], int] | None = None
    varies: tuple[str, ...] = ()


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
    # an earlier signature's positional argument that a value the current one refuses still reaches:
    # (position, argument), e.g. v1's `gru(hidden, bias)` under v2's `gru(hidden, layers, ...)`: a
    # true/false second argument is the bias, a number the layers; no positional argument follows it
    earlier: tuple[tuple[int, str], ...] = ()
    # Slots for the coming stages, None until an op's rule is written there:
    # `backward`, the training stage's reverse-mode rule (TRAINING.md): the
    #   gradients of the op's inputs and parameters from its output's;
    # `units`, the growth stage's unit-axis rule: which axis of the output and
    #   of each parameter grows when the op gains units (filters, features, hidden).
    backward: Backward | None = None
    units: Units | None = None

    def __repr__(self) -> str:
        return f"<op {self.name}>"


# ------------------------------------------------------------- argument kinds

class ArgError(Exception):
    pass


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def coerce_arg(arg: ArgSpec, v: Any) -> Any:
    """`coerce` for one argument: also the word `none` (when the default is
    None) and the words of a `Kind.WORD` argument, with "did you mean"."""
    if v == "none" and isinstance(v, str):
        if arg.default is None:
            return None
        if arg.kind is not Kind.WORD or "none" not in arg.choices:
            raise ArgError(f"must be {_kind_text(arg)}, got `none`")
    if arg.kind is Kind.WORD:
        if isinstance(v, str) and v in arg.choices:
            return v
        import difflib
        close = difflib.get_close_matches(v, arg.choices, n=1, cutoff=0.5) if isinstance(v, str) else []
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise ArgError(f"must be {_kind_text(arg)}, got {describe(v)}{hint}")
    return coerce(arg.kind, v)


def _kind_text(arg: ArgSpec) -> str:
    if arg.kind is Kind.WORD:
        words = [f"`{w}`" for w in arg.choices]
        return words[0] if len(words) == 1 else "one of " + ", ".join(words[:-1]) + " or " + words[-1]
    return arg.kind.value + (" or `none`" if arg.default is None else "")


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
    if kind in (Kind.INT, Kind.AXIS) and _is_int(v):
        return v
    if kind is Kind.AXES:
        if _is_int(v):
            return (v,)
        if isinstance(v, tuple) and v and all(_is_int(x) for x in v):
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
    if kind in (Kind.FLOAT_OR_NONE, Kind.INT_OR_NONE) and (v is None or v == "none"):
        return None
    if kind is Kind.FLOAT_OR_NONE:
        return coerce(Kind.FLOAT, v) if _is_int(v) or isinstance(v, float) else _fail(kind, v)
    if kind is Kind.INT_OR_NONE and _is_int(v):
        return v
    if kind is Kind.INTS:
        if _is_int(v):
            return (v,)
        if isinstance(v, tuple) and all(_is_int(x) for x in v):
            return v
    raise ArgError(f"must be {kind.value}, got {describe(v)}")


def _fail(kind: Kind, v: Any) -> Any:
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


def _axis(op: str, axis: int, shape: Shape, arg: str = "axis") -> int:
    """A `Kind.AXIS` value normalised against a shape without batch: negative
    axes count from the end; out of range is E0306 on the argument."""
    rank = len(shape)
    if not -rank <= axis < rank:
        raise ShapeError("E0306", f"{op}: axis {axis} is out of range for {format_shape(shape)}",
                         help=f"use an axis from {-rank} to {rank - 1} (the batch axis is not counted)", arg=arg)
    return axis % rank


def _axes(op: str, axes: Sequence[int], shape: Shape, arg: str = "axis") -> tuple[int, ...]:
    """A `Kind.AXES` value normalised (`_axis` each), sorted; a repeat is E0306."""
    out = [_axis(op, a, shape, arg) for a in axes]
    if len(set(out)) != len(out):
        raise ShapeError("E0306", f"{op}: an axis is named twice in {describe(tuple(axes))}", arg=arg)
    return tuple(sorted(out))


def _pair(v: int | tuple[int, int], n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


def _known(d: Dim, what: str, op: str, shape: Shape, help: str | None = None) -> int:
    if isinstance(d, Sym):
        raise ShapeError("E0206", f"{op} needs a known {what}, got {format_shape(shape)}",
                         help=help or f"`{d}` is a named size, known only when the model runs: {op} needs a fixed "
                                      "size there (a named dimension is an axis the layers keep, such as time)")
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


def _same(a: Attrs, ins: Sequence[Shape]) -> Shape:
    return ins[0]
