"""The abstract syntax tree of a `.nn` file, exactly as written.

In:  nothing (these are the types that `parse.py` builds).
Out: frozen dataclasses, each carrying the `Span` of the text it came from.
     Nothing here is resolved: names, ops and arguments are checked by
     `lower.py`, which turns a `File` into the IR.

Grammar, informally (LANGUAGE.md is the contract):

    file      := (block | model)*
    model     := "model" NAME "(" input ("," input)* ")" "{" stmt* "}"
    input     := NAME ":" ["int"] "[" dim ("," dim)* "]"       dim := INT | NAME ["=" INT]
    block     := "block" NAME "(" [param ("," param)*] ")" "(" NAME ("," NAME)* ")" "{" stmt* "}"
    param     := NAME ["=" expr]
    stmt      := [NAME ("," NAME)* "="] chain  |  "return" chain ("," chain)*
    chain     := element ("->" element)*
    element   := [label ":"] NAME ["(" args ")" ["(" NAME ("," NAME)* ")"]]
    label     := (NAME | INT) ("." (NAME | INT))*
    args      := arg ("," arg)*          arg := [(NAME | keyword) "="] expr
    expr      := numbers, true/false, same/valid/causal, NAME, NAME.shape[expr],
                 tuples, + - * // and parentheses
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .diagnostics import Span


# ---------------------------------------------------------------- expressions

@dataclass(frozen=True, slots=True)
class Num:
    value: int | float
    span: Span


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Word:
    """One of the keywords `same`, `valid`, `causal`."""
    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class Name:
    """A bare identifier in an expression: a block parameter."""
    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class ShapeRef:
    """`value.shape[index]`: a dimension of a value in scope."""
    value: str
    index: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str                     # one of "+", "-", "*", "//"
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Neg:
    operand: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class TupleExpr:
    items: tuple["Expr", ...]
    span: Span


Expr = Union[Num, Bool, Word, Name, ShapeRef, BinOp, Neg, TupleExpr]


# ---------------------------------------------------------------- statements

@dataclass(frozen=True, slots=True)
class Arg:
    name: str | None            # None for a positional argument
    value: Expr
    span: Span                  # the whole `name=value` text


@dataclass(frozen=True, slots=True)
class Label:
    parts: tuple[str, ...]      # ("layer1", "0") for `layer1.0`
    span: Span

    @property
    def text(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Element:
    """One link of a chain.

    `relu`                  -> op="relu", args=None, inputs=None
    `fc1: dense(120)`       -> label, op="dense", args=(Arg,)
    `add(a, b)`             -> op="add", args=(Arg(Name a), Arg(Name b))
    `gate(16)(a, b)`        -> op="gate", args=(16,), inputs=(Name a, Name b)

    Whether an element is a value name, an op step, a merge or a block call is
    decided by `lower.py`, which knows the names in scope.
    """
    label: Label | None
    op: str
    op_span: Span
    args: tuple[Arg, ...] | None        # None when written without parentheses
    inputs: tuple[Name, ...] | None     # the second parenthesised group, if any
    span: Span


@dataclass(frozen=True, slots=True)
class Chain:
    elements: tuple[Element, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Assign:
    """`[targets =] chain`. targets is empty for a bare chain."""
    targets: tuple[Name, ...]
    chain: Chain
    span: Span


@dataclass(frozen=True, slots=True)
class Return:
    values: tuple[Chain, ...]
    span: Span


Statement = Union[Assign, Return]


# ---------------------------------------------------------------- definitions

@dataclass(frozen=True, slots=True)
class Dim:
    """One dimension of a model input: a size, or a name with an optional bound."""
    size: int | None
    name: str | None
    bound: int | None
    span: Span


@dataclass(frozen=True, slots=True)
class Input:
    """`name: [dims]`, or `name: int[dims]` for an integer input (`type` is
    the written type name, None when there is none)."""
    name: str
    dims: tuple[Dim, ...]
    span: Span
    type: str | None = None
    type_span: Span | None = None


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    name_span: Span
    inputs: tuple[Input, ...]
    body: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Block:
    name: str
    name_span: Span
    params: tuple[Param, ...]
    inputs: tuple[Name, ...]
    body: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class File:
    path: str
    source: str
    models: tuple[Model, ...]
    blocks: tuple[Block, ...]
