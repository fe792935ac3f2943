"""AST -> canonical `.nn` text.

In:  an `ast.File` (usually from `parse.py`).
Out: its text in one canonical layout: blocks first, then models, a blank
     line between definitions, four-space indentation, one statement per
     line with its whole chain on that line (`a -> b -> c`), `, ` between
     items, ` = ` only around a statement's targets, and parentheses in an
     expression only where precedence needs them. Comments are not in the
     AST, so they are not in the output.

`parse(format_file(parse(text)))` equals `parse(text)` in everything but spans.
"""

from __future__ import annotations

import math

from . import ast

INDENT = " " * 4

# Binding strength: `+ -` < `* //` < unary minus < everything else.
_SUM, _PRODUCT, _UNARY, _ATOM = 1, 2, 3, 4
_LEVEL = {"+": _SUM, "-": _SUM, "*": _PRODUCT, "//": _PRODUCT}


def format_file(file: ast.File) -> str:
    """The canonical text of a whole file."""
    definitions = [_block(b) for b in file.blocks] + [_model(m) for m in file.models]
    return "\n".join(definitions)


# ---------------------------------------------------------------- definitions

def _model(model: ast.Model) -> str:
    inputs = ", ".join(_input(i) for i in model.inputs)
    return f"model {model.name}({inputs}) {_body(model.body)}"


def _input(inp: ast.Input) -> str:
    return f"{inp.name}: {inp.type or ''}[{', '.join(_dim(d) for d in inp.dims)}]"


def _dim(dim: ast.Dim) -> str:
    if dim.name is None:
        return str(dim.size)
    return dim.name if dim.bound is None else f"{dim.name}={dim.bound}"


def _block(block: ast.Block) -> str:
    params = ", ".join(_param(p) for p in block.params)
    inputs = ", ".join(n.name for n in block.inputs)
    return f"block {block.name}({params})({inputs}) {_body(block.body)}"


def _param(param: ast.Param) -> str:
    return param.name if param.default is None else f"{param.name}={format_expr(param.default)}"


def _body(body: tuple[ast.Statement, ...]) -> str:
    lines = ["{"] + [INDENT + _statement(s) for s in body] + ["}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- statements

def _statement(stmt: ast.Statement) -> str:
    if isinstance(stmt, ast.Return):
        return "return " + ", ".join(_chain(c) for c in stmt.values)
    chain = _chain(stmt.chain)
    if not stmt.targets:
        return chain
    return f"{', '.join(t.name for t in stmt.targets)} = {chain}"


def _chain(chain: ast.Chain) -> str:
    return " -> ".join(_element(e) for e in chain.elements)


def _element(element: ast.Element) -> str:
    text = element.op if element.label is None else f"{element.label.text}: {element.op}"
    if element.args is not None:
        text += f"({', '.join(_arg(a) for a in element.args)})"
    if element.inputs is not None:
        text += f"({', '.join(n.name for n in element.inputs)})"
    return text


def _arg(arg: ast.Arg) -> str:
    value = format_expr(arg.value)
    return value if arg.name is None else f"{arg.name}={value}"


# ---------------------------------------------------------------- expressions

def format_expr(expr: ast.Expr) -> str:
    """The text of an expression, parenthesised only where precedence needs it."""
    if isinstance(expr, ast.Num):
        return _number(expr.value)
    if isinstance(expr, ast.Bool):
        return "true" if expr.value else "false"
    if isinstance(expr, ast.Word):
        return expr.value
    if isinstance(expr, ast.Name):
        return expr.name
    if isinstance(expr, ast.ShapeRef):
        return f"{expr.value}.shape[{format_expr(expr.index)}]"
    if isinstance(expr, ast.TupleExpr):
        items = ", ".join(format_expr(x) for x in expr.items)
        return f"({items},)" if len(expr.items) == 1 else f"({items})"
    if isinstance(expr, ast.Neg):
        return "-" + _operand(expr.operand, _UNARY)
    if isinstance(expr, ast.BinOp):
        level = _LEVEL[expr.op]
        # Left-associative: the right operand needs parentheses at equal level.
        left = _operand(expr.left, level)
        right = _operand(expr.right, level + 1)
        return f"{left} {expr.op} {right}"
    raise TypeError(f"not an expression: {expr!r}")


def _level(expr: ast.Expr) -> int:
    if isinstance(expr, ast.BinOp):
        return _LEVEL[expr.op]
    if isinstance(expr, ast.Neg):
        return _UNARY
    return _ATOM


def _operand(expr: ast.Expr, needed: int) -> str:
    text = format_expr(expr)
    return f"({text})" if _level(expr) < needed else text


def _number(value: int | float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "1e999"          # what a literal too large for a float reads as
    return repr(value)
