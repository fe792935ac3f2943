"""The transformer family (LANGUAGE.md section 9): embedding, positional,
attention, and the sources matmul and div.

In:  the shared machinery of `base.py`.
Out: `ENTRIES` (steps) and `SOURCES` (merges), their catalog entries.

    embedding(num, dim)       integer indices [...] -> [..., dim]; weight [num, dim]
    positional(max_len)       [T, E] + weight[:T]; weight [max_len, E]; T <= max_len
    attention(heads, causal=false, bias=true)
                              [T, E] -> [T, E], nn.MultiheadAttention(E, heads, batch_first=True)
                              with q = k = v: in_proj_weight [3E, E], in_proj_bias [3E],
                              out_proj.weight [E, E], out_proj.bias [E]; heads divide E
    matmul(a, b)              [..., n, k] @ [..., k, m] -> [..., n, m], leading axes equal
    div(a, b)                 a / b, equal shapes

Initialisation follows PyTorch: attention's in_proj_weight is xavier-uniform,
out_proj.weight kaiming-uniform (1/sqrt(E)), both biases 0; embedding and
positional tables draw N(0, 1), as `nn.Embedding` does.
"""

from __future__ import annotations

import math
from typing import Sequence

from ..dims import Dim, Shape, Sym, format_shape, product
from ..ir import ParamSpec
from .base import ArgSpec, Attrs, Backward, Kind, OpSpec, Role, ShapeError, Units, _known

TABLE_INIT = ("normal", 1.0)


# ------------------------------------------------------------------ embedding

def _embedding_infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
    return (*ins[0], a["dim"])


def _embedding_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    return (ParamSpec("weight", (a["num"], a["dim"]), True, TABLE_INIT),)


def _embedding_units(u) -> None:
    # the rows are the table's entries (fixed); its columns are the layer's own units
    own = u.own(u.attrs["dim"])
    u.output(*u.inputs[0], own)
    u.param("weight", None, u.own_axis(own))


# ------------------------------------------------------------------ positional

def _sequence(op: str, x: Shape) -> int:
    if len(x) != 2:
        raise ShapeError("E0203", f"{op} expects [T, E] per example, got {format_shape(x)}")
    return _known(x[1], "embedding size (last axis)", op, x)


def _positional_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    e = _sequence("positional", x)
    t = x[0]
    if isinstance(t, int) and t > a["max_len"]:
        raise ShapeError("E0306", f"positional: the sequence has {t} steps, more than max_len={a['max_len']}",
                         help=f"raise max_len to at least {t}", arg="max_len")
    return {**a, "embed": e}


def _positional_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    return (ParamSpec("weight", (a["max_len"], a["embed"]), True, TABLE_INIT),)


def _positional_units(u) -> None:
    x = u.inputs[0]
    u.output(*x)
    u.param("weight", None, u.channel(x[1]))


# ------------------------------------------------------------------ attention

def _attention_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    e = _sequence("attention", x)
    if e % a["heads"]:
        raise ShapeError("E0306", f"attention: heads={a['heads']} does not divide the embedding size {e}",
                         help="choose heads that divide E (each head takes E / heads features)", arg="heads")
    return {**a, "embed": e}


def _attention_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    e = a["embed"]
    ps = [ParamSpec("in_proj_weight", (3 * e, e), True, ("uniform", math.sqrt(6.0 / (4 * e))))]
    if a["bias"]:
        ps.append(ParamSpec("in_proj_bias", (3 * e,), True, ("const", 0.0)))
    ps.append(ParamSpec("out_proj.weight", (e, e), True, ("uniform", 1.0 / math.sqrt(e))))
    if a["bias"]:
        ps.append(ParamSpec("out_proj.bias", (e,), True, ("const", 0.0)))
    return tuple(ps)


def _times(a: Dim, b: Dim) -> Dim:
    """a * b; sizes stay linear in a named dimension, so a product of two
    symbolic sizes counts one of them as 1 (MAC figures of unbounded shapes
    are per key step, not per sequence)."""
    return a if isinstance(a, Sym) and isinstance(b, Sym) else a * b


def _attention_macs(a: Attrs, ins, out: Shape) -> Dim:
    t, e = ins[0]
    return t * 4 * e * e + _times(t, t) * 2 * e


def _attention_units(u) -> None:
    # attention mixes every feature into every head: units reaching it, or its own, cannot grow
    x = u.inputs[0]
    steps = x[0]
    features = u.opaque(0, 1, u.shape[1], "attention mixes every feature into every head (attention cannot grow)")
    u.output(steps, features)
    for name in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
        p = next((p for p in u.node.params if p.name == name), None)
        if p is not None:
            u.param(name, *(None for _ in p.shape))


# ------------------------------------------------------------------ matmul, div

def _matmul_infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
    x, y = ins
    names = a.get("_names") or ["a", "b"]
    if len(x) < 2 or len(y) < 2:
        raise ShapeError("E0203", f"matmul takes values of rank 2 or more, got {format_shape(x)} and "
                                  f"{format_shape(y)}")
    if len(x) != len(y) or tuple(x[:-2]) != tuple(y[:-2]):
        raise ShapeError("E0204", f"matmul of `{names[0]}` {format_shape(x)} and `{names[1]}` {format_shape(y)}: "
                                  "the leading axes must be equal (no broadcasting)")
    if x[-1] != y[-2]:
        raise ShapeError("E0204", f"matmul of `{names[0]}` {format_shape(x)} and `{names[1]}` {format_shape(y)}: "
                                  f"{x[-1]} columns against {y[-2]} rows",
                         help="the last axis of the first must equal the second-to-last of the second")
    return (*x[:-1], y[-1])


def _matmul_macs(a: Attrs, ins, out: Shape) -> Dim:
    return _times(product(out), ins[0][-1])


def _div_infer(a: Attrs, ins: Sequence[Shape]) -> Shape:
    x, y = ins
    if tuple(x) != tuple(y):
        names = a.get("_names") or ["a", "b"]
        raise ShapeError("E0204", f"div of `{names[0]}` {format_shape(x)} and `{names[1]}` {format_shape(y)}: "
                                  "the shapes must be equal")
    return x


def _matmul_units(u) -> None:
    x, y = u.inputs
    n = len(x)
    u.reduced(0, n - 1)
    u.reduced(1, n - 2)
    u.output(*x[:-1], y[-1])


def _div_units(u) -> None:
    u.output(*u.merge())


ENTRIES: tuple[OpSpec, ...] = (
    OpSpec("embedding", (ArgSpec("num", Kind.POS_INT), ArgSpec("dim", Kind.POS_INT)), _embedding_infer,
           params=_embedding_params, macs=lambda a, ins, out: 0,
           backward=Backward(),                 # reads the indices
           units=Units(_embedding_units, size=lambda a: a["dim"], varies=("dim",))),
    OpSpec("positional", (ArgSpec("max_len", Kind.POS_INT),), lambda a, ins: ins[0], resolve=_positional_resolve,
           params=_positional_params, backward=Backward(needs_inputs=False),
           units=Units(_positional_units, varies=("embed",))),
    OpSpec("attention", (ArgSpec("heads", Kind.POS_INT), ArgSpec("causal", Kind.BOOL, False),
                         ArgSpec("bias", Kind.BOOL, True)), lambda a, ins: ins[0], resolve=_attention_resolve,
           params=_attention_params, macs=_attention_macs, backward=Backward(),
           units=Units(_attention_units, varies=("embed",))),
)

SOURCES: tuple[OpSpec, ...] = (
    OpSpec("matmul", (), _matmul_infer, role=Role.MERGE, min_inputs=2, max_inputs=2, macs=_matmul_macs,
           backward=Backward(), units=Units(_matmul_units)),
    OpSpec("div", (), _div_infer, role=Role.MERGE, min_inputs=2, max_inputs=2,
           macs=lambda a, ins, out: product(out), backward=Backward(needs_output=True),
           units=Units(_div_units)),
)
