"""The parser (text -> AST with spans), its syntax errors, and the formatter.

Pins every construct of LANGUAGE.md sections 2-7, exact spans of a few nodes,
line-continuation and bracket rules, the friendly syntax errors with their
positions, the parse -> format -> parse round trip, and (with hypothesis)
that no input whatsoever escapes as anything but `CompileError`.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnc.compiler import ast
from nnc.compiler.diagnostics import CompileError, Diagnostic, Span
from nnc.compiler.format import format_expr, format_file
from nnc.compiler.parse import MAX_DEPTH, MAX_SYNTAX_ERRORS, parse

ROOT = Path(__file__).resolve().parent.parent

LENET = """\
# LeNet-5 on 28x28 grey images. Only output sizes are written.
model lenet(x: [1, 28, 28]) {
    conv2d(6, 5, padding=same) -> relu
    avgpool2d(2)
    conv2d(16, 5) -> relu
    avgpool2d(2)
    flatten
    fc1: dense(120) -> relu      # input size 400 is inferred
    fc2: dense(84) -> relu
    fc3: dense(10)
}
"""

BASIC = """\
block basic(c)(x) {
    h = x -> conv1: conv2d(c, 3, padding=1, bias=false) -> bn1: batchnorm -> relu
          -> conv2: conv2d(c, 3, padding=1, bias=false) -> bn2: batchnorm
    return add(h, x) -> relu
}
"""


# ---------------------------------------------------------------- helpers

def strip(node):
    """An AST as nested tuples without spans (and without File.path/source),
    so that two parses of differently laid out text compare equal."""
    if isinstance(node, ast.File):
        return ("File", strip(node.models), strip(node.blocks))
    if dataclasses.is_dataclass(node):
        return (type(node).__name__,) + tuple(
            strip(getattr(node, f.name)) for f in dataclasses.fields(node)
            if not isinstance(getattr(node, f.name), Span))
    if isinstance(node, tuple):
        return tuple(strip(x) for x in node)
    return node


def model_body(text: str) -> tuple[ast.Statement, ...]:
    """The statements of a one-model file."""
    (model,) = parse(text).models
    return model.body


def chain_of(line: str) -> ast.Chain:
    """The chain of a single statement written inside a model."""
    (stmt,) = model_body(f"model m(x: [1]) {{\n    {line}\n}}\n")
    return stmt.chain


def expr_of(text: str) -> ast.Expr:
    """The expression written as the only argument of a step."""
    (element,) = chain_of(f"f({text})").elements
    (arg,) = element.args
    return arg.value


def syntax_error(text: str, path: str = "bad.nn") -> Diagnostic:
    with pytest.raises(CompileError) as info:
        parse(text, path)
    (diag,) = info.value.diagnostics
    return diag


def at(diag: Diagnostic) -> tuple[int, int]:
    return diag.span.line, diag.span.column


def span(line: int, column: int, end_line: int, end_column: int, path: str = "<input>") -> Span:
    return Span(path, line, column, end_line, end_column)


# ---------------------------------------------------------------- definitions

def test_lenet_parses_to_one_model_with_a_statement_per_line():
    file = parse(LENET, "lenet.nn")
    assert file.path == "lenet.nn" and file.source == LENET and file.blocks == ()
    (model,) = file.models
    assert model.name == "lenet"
    (x,) = model.inputs
    assert x.name == "x" and [d.size for d in x.dims] == [1, 28, 28]
    assert len(model.body) == 8
    first = model.body[0].chain
    assert [e.op for e in first.elements] == ["conv2d", "relu"]
    conv = first.elements[0]
    assert [strip(a) for a in conv.args] == [
        ("Arg", None, ("Num", 6)), ("Arg", None, ("Num", 5)), ("Arg", "padding", ("Word", "same"))]
    fc1 = model.body[5].chain.elements[0]
    assert fc1.label.parts == ("fc1",) and fc1.op == "dense"


def test_model_inputs_take_sizes_names_and_bounded_names():
    (model,) = parse("model m(x: [1, 28, 28], y: [T, F=40]) {\n}\n").models
    x, y = model.inputs
    assert [(d.size, d.name, d.bound) for d in x.dims] == [(1, None, None), (28, None, None), (28, None, None)]
    assert [(d.size, d.name, d.bound) for d in y.dims] == [(None, "T", None), (None, "F", 40)]
    assert model.body == ()


def test_block_headers_with_defaults_several_inputs_and_no_parameters():
    file = parse("block basic(c, stride=1)(x) {\n}\nblock gate(c)(a, b) {\n}\nblock b()(x) {\n}\n")
    basic, gate, b = file.blocks
    assert [(p.name, strip(p.default)) for p in basic.params] == [("c", None), ("stride", ("Num", 1))]
    assert [n.name for n in basic.inputs] == ["x"]
    assert [n.name for n in gate.inputs] == ["a", "b"]
    assert b.params == () and [n.name for n in b.inputs] == ["x"]
    assert file.models == ()


def test_a_file_may_hold_no_model_or_several():
    assert parse("").models == () and parse("").blocks == ()
    two = parse("model a(x: [1]) {\n}\nmodel b(x: [1]) {\n}\n")
    assert [m.name for m in two.models] == ["a", "b"]


def test_body_may_open_on_the_next_line_and_close_on_the_last_statements_line():
    body = model_body("model m(x: [4])\n{\n    dense(3)\n    relu }\n")
    assert [s.chain.elements[0].op for s in body] == ["dense", "relu"]
    assert [s.chain.elements[0].op for s in model_body("model m(x: [4]) { relu }")] == ["relu"]


# ---------------------------------------------------------------- statements

def test_element_forms_keep_what_was_written():
    relu, fc1, merge, cat, call, value, empty = chain_of(
        "relu -> fc1: dense(120) -> add(a, b) -> concat(a, b, axis=0) -> gate(16)(a, b) -> x -> op()").elements
    assert (relu.op, relu.label, relu.args, relu.inputs) == ("relu", None, None, None)
    assert fc1.label.text == "fc1" and strip(fc1.args) == (("Arg", None, ("Num", 120)),)
    assert strip(merge.args) == (("Arg", None, ("Name", "a")), ("Arg", None, ("Name", "b")))
    assert cat.args[2].name == "axis" and strip(cat.args[2].value) == ("Num", 0)
    assert strip(call.args) == (("Arg", None, ("Num", 16)),)
    assert [n.name for n in call.inputs] == ["a", "b"]
    assert (value.op, value.args) == ("x", None)
    assert empty.args == () and empty.inputs is None


def test_labels_are_dotted_names_and_integers_never_floats():
    body = model_body("model m(x: [1]) {\n    layer1.0: basic(64)\n    features.0.1: conv2d(3, 3)\n"
                      "    0: dense(3)\n    a.b.10.c: relu\n}\n")
    assert [s.chain.elements[0].label.parts for s in body] == [
        ("layer1", "0"), ("features", "0", "1"), ("0",), ("a", "b", "10", "c")]


def test_targets_destructuring_and_return_of_several_chains():
    assign, ret = model_body("model m(x: [1]) {\n    a, b = blk(3)\n    return add(a, b) -> relu, b\n}\n")
    assert [t.name for t in assign.targets] == ["a", "b"]
    assert [[e.op for e in c.elements] for c in ret.values] == [["add", "relu"], ["b"]]
    (bare,) = model_body("model m(x: [1]) {\n    dense(3)\n}\n")
    assert bare.targets == ()


# ---------------------------------------------------------------- expressions

@pytest.mark.parametrize("text, value", [
    ("120", 120), ("0", 0), ("1e-5", 1e-5), ("0.2", 0.2), (".5", 0.5), ("3.", 3.0), ("2E3", 2000.0),
])
def test_numbers_are_ints_or_floats_by_how_they_are_written(text, value):
    num = expr_of(text)
    assert isinstance(num, ast.Num) and num.value == value and type(num.value) is type(value)


def test_negative_numbers_are_neg_nodes():
    assert strip(expr_of("-1")) == ("Neg", ("Num", 1))
    assert strip(expr_of("-x")) == ("Neg", ("Name", "x"))


@pytest.mark.parametrize("text, tree", [
    ("a + b * c", ("BinOp", "+", ("Name", "a"), ("BinOp", "*", ("Name", "b"), ("Name", "c")))),
    ("(a + b) * c", ("BinOp", "*", ("BinOp", "+", ("Name", "a"), ("Name", "b")), ("Name", "c"))),
    ("a - b - c", ("BinOp", "-", ("BinOp", "-", ("Name", "a"), ("Name", "b")), ("Name", "c"))),
    ("a // 2 * 3", ("BinOp", "*", ("BinOp", "//", ("Name", "a"), ("Num", 2)), ("Num", 3))),
    ("-a * b", ("BinOp", "*", ("Neg", ("Name", "a")), ("Name", "b"))),
    ("a - -1", ("BinOp", "-", ("Name", "a"), ("Neg", ("Num", 1)))),
    ("--a", ("Neg", ("Neg", ("Name", "a")))),
])
def test_operators_follow_the_usual_precedence_and_associativity(text, tree):
    assert strip(expr_of(text)) == tree


def test_tuples_including_one_tuples_and_nesting():
    assert strip(expr_of("(3, 3)")) == ("TupleExpr", (("Num", 3), ("Num", 3)))
    assert strip(expr_of("(3,)")) == ("TupleExpr", (("Num", 3),))
    assert strip(expr_of("(3)")) == ("Num", 3)
    assert strip(expr_of("((1, 2), -1)")) == (
        "TupleExpr", (("TupleExpr", (("Num", 1), ("Num", 2))), ("Neg", ("Num", 1))))


def test_keywords_words_names_and_shape_references():
    assert strip(expr_of("true")) == ("Bool", True)
    assert strip(expr_of("false")) == ("Bool", False)
    assert [strip(expr_of(w)) for w in ("same", "valid", "causal")] == [
        ("Word", "same"), ("Word", "valid"), ("Word", "causal")]
    # A keyword is only a keyword as a whole word.
    assert [strip(expr_of(n)) for n in ("truely", "model_size", "_same")] == [
        ("Name", "truely"), ("Name", "model_size"), ("Name", "_same")]
    assert strip(expr_of("x.shape[0] * 6")) == (
        "BinOp", "*", ("ShapeRef", "x", ("Num", 0)), ("Num", 6))
    assert strip(expr_of("x.shape[-1 + k]")) == (
        "ShapeRef", "x", ("BinOp", "+", ("Neg", ("Num", 1)), ("Name", "k")))


def test_shape_is_an_ordinary_name_outside_a_shape_reference():
    (element,) = chain_of("reshape(shape=(shape, -1))").elements
    (arg,) = element.args
    assert arg.name == "shape"
    assert strip(arg.value) == ("TupleExpr", (("Name", "shape"), ("Neg", ("Num", 1))))


# ---------------------------------------------------------------- layout

def test_a_line_starting_with_arrow_continues_the_chain_across_blank_and_comment_lines():
    body = model_body(
        "model m(x: [1]) {\n"
        "    h = x -> dense(4)   # first\n"
        "\n"
        "        # a comment line between\n"
        "\t\n"
        "        -> relu\n"
        "        -> dense(2)\n"
        "    h\n"
        "}\n")
    assign, last = body
    assert [e.op for e in assign.chain.elements] == ["x", "dense", "relu", "dense"]
    assert assign.chain.span == span(2, 9, 7, 20)
    assert assign.span == span(2, 5, 7, 20)
    assert [e.op for e in last.chain.elements] == ["h"]


def test_line_breaks_inside_brackets_are_free():
    text = ("model m(\n    x: [\n        3,\n        32, 32\n    ],\n    y: [4]\n) {\n"
            "    conv2d(\n        16,    # filters\n        (3,\n         3),\n\n        padding=1\n    )\n}\n")
    (model,) = parse(text).models
    assert [i.name for i in model.inputs] == ["x", "y"]
    (stmt,) = model.body
    (conv,) = stmt.chain.elements
    assert strip(conv.args) == (("Arg", None, ("Num", 16)),
                                ("Arg", None, ("TupleExpr", (("Num", 3), ("Num", 3)))),
                                ("Arg", "padding", ("Num", 1)))
    assert conv.span == span(8, 5, 14, 6)


@pytest.mark.parametrize("variant", [
    pytest.param(lambda s: s.replace("\n", "\r\n"), id="crlf"),
    pytest.param(lambda s: s.replace("\n", "\r"), id="cr"),
    pytest.param(lambda s: s.replace("    ", "\t"), id="tabs"),
    pytest.param(lambda s: s.rstrip("\n"), id="no-final-newline"),
    pytest.param(lambda s: "\ufeff" + s, id="byte-order-mark"),
    pytest.param(lambda s: s.replace("# input size 400 is inferred", "# größe 400 — 推断 ✓"), id="unicode-comment"),
    pytest.param(lambda s: "\n\n# only a comment\n\n" + s + "\n\n# trailing\n", id="blank-lines"),
])
def test_layout_variants_parse_to_the_same_ast(variant):
    assert strip(parse(variant(LENET))) == strip(parse(LENET))


def test_crlf_keeps_line_and_column_numbers():
    fc3 = model_body(LENET.replace("\n", "\r\n"))[-1].chain.elements[0]
    assert fc3.span == span(10, 5, 10, 19)


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment", "  \t\n# c\n\n"])
def test_empty_and_comment_only_files_parse_to_an_empty_file(text):
    file = parse(text)
    assert file.models == () and file.blocks == ()


# ---------------------------------------------------------------- spans

def test_spans_of_the_basic_block_are_exact():
    (block,) = parse(BASIC, "basic.nn").blocks
    p = "basic.nn"
    assert block.span == Span(p, 1, 1, 5, 2)
    assert block.name_span == Span(p, 1, 7, 1, 12)
    assert block.params[0].span == Span(p, 1, 13, 1, 14)
    assert block.inputs[0].span == Span(p, 1, 16, 1, 17)
    h, ret = block.body
    assert h.targets[0].span == Span(p, 2, 5, 2, 6)
    assert h.chain.span == Span(p, 2, 9, 3, 74)            # across the continuation line
    conv1 = h.chain.elements[1]
    assert conv1.span == Span(p, 2, 14, 2, 56)             # label through `)`
    assert conv1.label.span == Span(p, 2, 14, 2, 19)
    assert conv1.op_span == Span(p, 2, 21, 2, 27)
    assert conv1.args[2].span == Span(p, 2, 34, 2, 43)     # `padding=1`
    assert conv1.args[2].value.span == Span(p, 2, 42, 2, 43)
    assert ret.span == Span(p, 4, 5, 4, 29)
    add = ret.values[0].elements[0]
    assert add.span == Span(p, 4, 12, 4, 21)
    assert add.args[1].value.span == Span(p, 4, 19, 4, 20)


def test_spans_of_inputs_dims_and_expressions_are_exact():
    text = "model m(x: [1, T=40]) {\n    f(-(a + 1) * 2, (3, 3), y.shape[0])\n    g(16)(a, b)\n}\n"
    (model,) = parse(text).models
    assert model.span == span(1, 1, 4, 2)
    assert model.name_span == span(1, 7, 1, 8)
    (x,) = model.inputs
    assert x.span == span(1, 9, 1, 21)
    assert [d.span for d in x.dims] == [span(1, 13, 1, 14), span(1, 16, 1, 20)]
    product, pair, ref = (a.value for a in model.body[0].chain.elements[0].args)
    assert product.span == span(2, 7, 2, 19)
    assert product.left.span == span(2, 7, 2, 15)          # `-(a + 1)`
    assert product.left.operand.span == span(2, 9, 2, 14)  # `a + 1`, without its parentheses
    assert pair.span == span(2, 21, 2, 27)
    assert ref.span == span(2, 29, 2, 39)
    call = model.body[1].chain.elements[0]
    assert call.span == span(3, 5, 3, 16)                  # through the inputs' `)`
    assert [n.span for n in call.inputs] == [span(3, 11, 3, 12), span(3, 14, 3, 15)]


# ---------------------------------------------------------------- syntax errors

def test_missing_paren_points_at_the_token_that_cannot_follow_the_argument():
    diag = syntax_error("model m(x: [784]) {\n    dense(120 -> relu\n    dense(10)\n}\n")
    assert diag.code == "E0001" and diag.path == "bad.nn"
    assert at(diag) == (2, 15)
    assert diag.message == "expected `)` or `,` after `120`, found `->`"
    assert diag.help == "add `)` to close the `(` at line 2, column 10"


def test_missing_paren_before_a_line_break_points_at_the_end_of_the_line():
    diag = syntax_error("model m(x: [784]) {\n    dense(120\n    dense(10)\n}\n")
    assert at(diag) == (2, 14)
    assert diag.message == "expected `)` or `,` after `120`, found `dense` on line 3"
    assert diag.help == "add `)` to close the `(` at line 2, column 10"


def test_missing_comma_between_arguments():
    diag = syntax_error("model m(x: [784]) {\n    conv2d(6 5)\n}\n")
    assert at(diag) == (2, 14)
    assert diag.message == "expected `)` or `,` after `6`, found `5`"
    assert diag.help == "separate the items with `,`"
    multi_line = syntax_error("model m(x: [784]) {\n    conv2d(\n        6 5)\n}\n")
    assert at(multi_line) == (3, 11) and multi_line.help == "separate the items with `,`"


def test_wrong_closing_bracket_names_the_open_one():
    diag = syntax_error("model m(x: [784]) {\n    dense(3]\n}\n")
    assert at(diag) == (2, 12)
    assert diag.message == "expected `)` or `,` after `3`, found `]`"
    assert diag.help == "add `)` to close the `(` at line 2, column 10"


def test_missing_bracket_in_an_input_shape():
    diag = syntax_error("model m(x: [1, 28, 28) {\n    dense(10)\n}\n")
    assert at(diag) == (1, 22)
    assert diag.message == "expected `]` or `,` after `28`, found `)`"
    assert diag.help == "add `]` to close the `[` at line 1, column 12"


def test_equals_instead_of_colon_in_an_input_declaration():
    diag = syntax_error("model m(x = [784]) {\n    dense(10)\n}\n")
    assert (diag.code, at(diag)) == ("E0001", (1, 11))
    assert diag.message == "expected `:` after the input name `x`, found `=`"
    assert diag.help == "declare an input with its shape: `x: [...]`"


@pytest.mark.parametrize("text, position", [
    ("-> relu\nmodel m(x: [1]) {\n}\n", (1, 1)),
    ("model m(x: [1]) {\n\n    -> relu\n}\n", (3, 5)),
    ("model m(x: [1]) {\n    h =\n        -> relu\n}\n", (3, 9)),
    ("model m(x: [1]) {\n    return x,\n        -> relu\n}\n", (3, 9)),
])
def test_arrow_with_nothing_before_it(text, position):
    diag = syntax_error(text)
    assert (diag.code, at(diag)) == ("E0001", position)
    assert diag.message == "`->` with no step before it"
    assert "continues the chain of the line before it" in diag.help


def test_unclosed_brace_is_reported_at_the_end_of_the_last_line():
    diag = syntax_error("model m(x: [784]) {\n    dense(120) -> relu\n    dense(10)\n\n\n")
    assert diag.code == "E0002"
    assert diag.span == Span.point("bad.nn", 3, 14)
    assert diag.message == "the file ends inside model `m`: expected `}`"
    assert diag.help == "add `}` to close the `{` at line 1, column 19"
    block = syntax_error("block b(c)(x) {\n    relu   # last words")
    assert at(block) == (2, 24) and block.message == "the file ends inside block `b`: expected `}`"


def test_end_of_file_in_the_middle_of_a_statement():
    inside_parens = syntax_error("model m(x: [784]) {\n    dense(120")
    assert (inside_parens.code, at(inside_parens)) == ("E0002", (2, 14))
    assert inside_parens.message == "unexpected end of file: expected `)` or `,` after `120`"
    assert inside_parens.help == "add `)` to close the `(` at line 2, column 10"
    after_arrow = syntax_error("model m(x: [784]) {\n    dense(120) ->")
    assert after_arrow.message == "unexpected end of file: expected a step after `->`"


@pytest.mark.parametrize("char, help", [
    ("$", None),
    ("/", "integer division is written `//`"),
    (";", "a statement ends at the end of its line: remove the `;`"),
    ("\u00a0", "replace it with a plain space"),
    ("é", "names are made of ASCII letters, digits and `_`"),
])
def test_unexpected_character(char, help):
    diag = syntax_error(f"model m(x: [784]) {{\n    dense(12{char}) -> relu\n}}\n")
    assert (diag.code, at(diag)) == ("E0003", (2, 13))
    assert diag.message.startswith("unexpected character")
    assert diag.help == help


def test_control_characters_are_named_not_printed():
    diag = syntax_error("model m(x: [1]) {\n\x00\n}\n")
    assert diag.message == "unexpected character U+0000 (a control character)"


@pytest.mark.parametrize("text, message", [
    ("model m(x: [1]) {\n    same = dense(3)\n}\n", "expected a statement or `}`, found the keyword `same`"),
    ("model model(x: [1]) {\n}\n", "expected a name after `model`, found the keyword `model`"),
])
def test_keywords_cannot_be_names(text, message):
    diag = syntax_error(text)
    assert diag.message == message
    assert diag.help.endswith("is a keyword and cannot be used as a name")


@pytest.mark.parametrize("text, position, message", [
    ("model m(x: [1]) {\n    dense(3) relu\n}\n", (2, 14), "expected `->` or end of line after `)`, found `relu`"),
    ("model m(x: [1]) {\n    dense(3))\n}\n", (2, 13), "unmatched `)`"),
    ("block b(c) {\n}\n", (1, 12), "expected `(` after `)`, found `{`"),
    ("modelx m(x: [1]) {\n}\n", (1, 1), "expected `model` or `block`, found `modelx`"),
    ("model m(x: [1]) {\n    dense(x.shap[0])\n}\n", (2, 13), "expected `shape` after `.`, found `shap`"),
    ("model m(x: [1]) {\n    return\n}\n", (2, 11), "expected a value or a step after `return`, found end of line"),
    ("model m() {\n}\n", (1, 9), "expected a name after `(`, found `)`"),
    ("model m(x: [1]) {\n    dense(3) ->\n    relu\n}\n", (2, 16), "expected a step after `->`, found end of line"),
    ("model m(x: [1]) {\n}\n}\n", (3, 1), "unmatched `}`"),
])
def test_other_syntax_errors_say_what_was_expected_and_found(text, position, message):
    diag = syntax_error(text)
    assert (diag.code, at(diag), diag.message) == ("E0001", position, message)


def test_a_label_without_its_colon_gets_a_help_naming_the_whole_label():
    diag = syntax_error("model m(x: [1]) {\n    layer1.0 basic(3)\n}\n")
    assert (at(diag), diag.message) == ((2, 14), "expected `:` after `0`, found `basic`")
    assert diag.help == "a label is followed by `:`, as in `layer1.0: basic`"


@pytest.mark.parametrize("text,position", [("dense(bias=false, 3)", (2, 23)), ("conv1d(4, padding=1, 3)", (2, 26)),
                                           ("b(k=1, x)", (2, 12))])
def test_a_positional_argument_after_a_keyword_one_is_refused(text, position):
    """LANGUAGE.md 4: positional arguments come first (it was taken as the
    first missing positional one)."""
    diag = syntax_error("model m(x: [3, 8]) {\n    " + text + "\n}\n")
    assert (diag.code, at(diag), diag.message) == ("E0001", position, "a positional argument after a keyword argument")
    assert "first" in diag.help


def test_expression_nested_too_deep_is_refused_not_a_recursion_error():
    diag = syntax_error("model m(x: [1]) {\n    f(" + "-" * (MAX_DEPTH + 5) + "1)\n}\n")
    assert diag.code == "E0001" and "nests more than" in diag.message
    long_sum = syntax_error("model m(x: [1]) {\n    f(" + " + ".join(["1"] * (MAX_DEPTH + 5)) + ")\n}\n")
    assert long_sum.code == "E0001"
    nested = "(" * 500 + "1" + ")" * 500             # parentheses alone add no depth
    assert strip(expr_of(nested)) == ("Num", 1)


def test_a_number_too_long_to_print_is_refused():
    diag = syntax_error("model m(x: [1]) {\n    f(" + "9" * 5000 + ")\n}\n")
    assert (diag.code, at(diag)) == ("E0001", (2, 7))


def test_compile_error_renders_the_source_line_with_carets():
    text = "model m(x: [784]) {\n    dense(120 -> relu\n}\n"
    with pytest.raises(CompileError) as info:
        parse(text, "bad.nn")
    assert info.value.sources == {"bad.nn": text}
    assert str(info.value).splitlines()[:3] == [
        "bad.nn:2:15: error[E0001]: expected `)` or `,` after `120`, found `->`",
        "   2 |     dense(120 -> relu",
        "     |               ^^",
    ]


@pytest.mark.parametrize("path", sorted((ROOT / "tests" / "errors").glob("*.nn")), ids=lambda p: p.stem)
def test_error_samples_parse_unless_they_expect_a_syntax_error(path):
    text = path.read_text()
    expected = text.splitlines()[0].removeprefix("# expect:").split()
    syntax = [code for code in expected if code.startswith("E000")]
    if syntax:
        assert [d.code for d in pytest.raises(CompileError, parse, text).value.diagnostics] == syntax
    else:
        parse(text, str(path))


# ---------------------------------------------------------------- formatting

def test_integer_input_and_keyword_argument_names_parse():
    file = parse("model m(tokens: int[T=8], x: [3]) {\n    tokens -> attention(4, causal=true, same=1)\n}\n")
    tokens, x = file.models[0].inputs
    assert (tokens.type, x.type) == ("int", None)
    assert (tokens.type_span.line, tokens.type_span.column, tokens.type_span.end_column) == (1, 17, 20)
    args = file.models[0].body[0].chain.elements[1].args
    assert [a.name for a in args] == [None, "causal", "same"]
    assert args[1].value == ast.Bool(True, args[1].value.span)


def test_section_9_words_parse_as_names_in_arguments_and_as_op_names():
    file = parse("model m(x: [3]) {\n    x -> relu -> f(mode=bilinear, end=none, n=tanh) -> tanh\n}\n")
    elements = file.models[0].body[0].chain.elements
    assert [e.op for e in elements] == ["x", "relu", "f", "tanh"]
    assert [a.value.name for a in elements[2].args] == ["bilinear", "none", "tanh"]


def test_format_writes_the_canonical_layout():
    text = ("# c\nblock gate(c, k=(3,3))(a, b){\n  return mul(a,b)\n}\n"
            "model m(x: [1, T=40])\n{\n  h, g = x->gate(-c*2, (1,))( x , x )   # note\n"
            "       -> f(padding=same, s=x.shape[0]//2, z=(a+b)*-c, w=a-(b-c))\n  0.1.a: relu\n}\n")
    assert format_file(parse(text)) == (
        "block gate(c, k=(3, 3))(a, b) {\n"
        "    return mul(a, b)\n"
        "}\n"
        "\n"
        "model m(x: [1, T=40]) {\n"
        "    h, g = x -> gate(-c * 2, (1,))(x, x) -> f(padding=same, s=x.shape[0] // 2, "
        "z=(a + b) * -c, w=a - (b - c))\n"
        "    0.1.a: relu\n"
        "}\n")


@pytest.mark.parametrize("text", [
    pytest.param(LENET, id="lenet"),
    pytest.param(BASIC, id="basic"),
    pytest.param(BASIC + "\n" + LENET.replace("fc3: dense(10)", "layer1.0: basic(64)\n    fc3: dense(10)"),
                 id="basic-and-lenet"),
    pytest.param("model m(x: [2, T], y: [T=100, 3]) {\n    a, b = s(1e-5, 0.2, .5, 1e999, -(1 - 2), (3,))(x, y)\n"
                 "    return a -> f(-a.shape[-1] // 2 * (3 + 4), --1, true, causal), b\n}\n", id="expressions"),
    pytest.param("model m(tokens: int[T=128], x: [T, 3]) {\n    tokens -> embedding(100, 16) -> "
                 "attention(4, causal=true, bias=false) -> upsample(2, mode=bilinear) -> slice(0, 1, end=none)\n}\n",
                 id="section-9-words-and-integer-inputs"),
] + [pytest.param(p.read_text(), id=p.stem) for p in sorted((ROOT / "samples").glob("*.nn"))])
def test_format_round_trip_gives_back_the_same_ast(text):
    first = parse(text)
    formatted = format_file(first)
    assert strip(parse(formatted)) == strip(first)
    assert format_file(parse(formatted)) == formatted      # the canonical text is a fixed point


def _expressions():
    """Random expression ASTs (with a dummy span) of every kind."""
    nowhere = Span("<gen>", 1, 1, 1, 1)
    leaves = st.one_of(
        st.integers(0, 10**6).map(lambda v: ast.Num(v, nowhere)),
        st.floats(0, 1e30, allow_nan=False, allow_infinity=False).map(lambda v: ast.Num(v, nowhere)),
        st.booleans().map(lambda v: ast.Bool(v, nowhere)),
        st.sampled_from(["same", "valid", "causal"]).map(lambda v: ast.Word(v, nowhere)),
        st.sampled_from(["a", "b", "c_1", "shape"]).map(lambda v: ast.Name(v, nowhere)),
    )

    def compound(children):
        return st.one_of(
            st.builds(lambda op, l, r: ast.BinOp(op, l, r, nowhere),
                      st.sampled_from(["+", "-", "*", "//"]), children, children),
            children.map(lambda x: ast.Neg(x, nowhere)),
            st.lists(children, min_size=1, max_size=3).map(lambda xs: ast.TupleExpr(tuple(xs), nowhere)),
            children.map(lambda x: ast.ShapeRef("x", x, nowhere)),
        )

    return st.recursive(leaves, compound, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(_expressions())
def test_formatted_expressions_parse_back_to_the_same_tree(expr):
    assert strip(expr_of(format_expr(expr))) == strip(expr)


# ---------------------------------------------------------------- robustness

def _only_compile_errors(text: str) -> None:
    try:
        parse(text, "fuzz.nn")
    except CompileError as e:
        assert 1 <= len(e.diagnostics) <= MAX_SYNTAX_ERRORS
        for diag in e.diagnostics:
            assert diag.code in ("E0001", "E0002", "E0003")
            assert diag.span.line >= 1 and diag.span.column >= 1
        lines = [(d.span.line, d.code == "E0002") for d in e.diagnostics]
        assert lines == sorted(set(lines))                  # one a statement, in order; the end of the file last
        str(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("()[]{}:,=.#->\n\t\r model block"),
               max_size=120))
def test_random_text_raises_nothing_but_compile_error(text):
    _only_compile_errors(text)


_SOURCE = BASIC + LENET.replace("model lenet(x: [1, 28, 28])", "model lenet(x: [1, T=28, 28], t: int[T])")
_PIECES = list("()[]{}:,=.#-+*/>\n\r\t 0123456789_aZ\u00e9\x00\ufeff") + [
    "->", "//", "model", "block", "return", "true", "same", "shape", "1e-5", ".5", "9" * 40,
    "int", "int[", "causal=", "true=", "none", "bilinear"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(1, 8))
def test_mutations_of_a_valid_file_raise_nothing_but_compile_error(rng: random.Random, count):
    text = _SOURCE
    for _ in range(count):
        i = rng.randrange(len(text) + 1)
        j = min(len(text), i + rng.randrange(4))
        kind = rng.randrange(3)
        if kind == 0:
            text = text[:i] + text[j:]                                  # delete
        elif kind == 1:
            text = text[:i] + rng.choice(_PIECES) + text[i:]            # insert
        else:
            text = text[:i] + rng.choice(_PIECES) + text[j:]            # replace
    _only_compile_errors(text)


def test_a_300_line_file_parses_well_under_100_ms():
    files = [p.read_text() for p in sorted((ROOT / "samples").glob("*.nn"))]
    parts: list[str] = []
    while "\n".join(parts).count("\n") < 300:                    # whole sample files, about 300 lines
        parts.append(files[len(parts) % len(files)])
    text = "\n".join(parts)
    assert 300 <= text.count("\n") < 400
    parse(text)                                                   # build the cached parser
    best = min(_timed(parse, text) for _ in range(5))
    assert best < 0.1, f"{best * 1000:.0f} ms"


def _timed(fn, *args) -> float:
    start = time.process_time()       # CPU time: other processes on the machine do not count
    fn(*args)
    return time.process_time() - start


# ---------------------------------------------------------------- every independent syntax error

def syntax_errors(text: str) -> list[tuple[int, str]]:
    with pytest.raises(CompileError) as info:
        parse(text, "bad.nn")
    return [(d.span.line, d.code) for d in info.value.diagnostics]


def body(*lines: str, header: str = "model m(x: [4]) {") -> str:
    return header + "\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


@pytest.mark.parametrize("lines, expected", [
    # two statements with an error each, a good one between: both reported
    (("dense(3 4)", "relu", "dense(2;)"), [(2, "E0001"), (4, "E0003")]),
    # a chain continued on the next lines is taken out whole: its `->` lines make no error of their own
    (("h = x -> dense(3 4)", "    -> relu", "    -> dense(2)", "dense(5,,)"), [(2, "E0001"), (5, "E0001")]),
    # an error on the continuation line: the chain from its first line
    (("h = x -> dense(3)", "    -> relu 7", "    -> dense(2)", "dense(5,,)"), [(3, "E0001"), (5, "E0001")]),
    # an argument list over several lines is taken out to its `)`
    (("dense(3 4,", "      bias=false)", "relu", "dense(2;)"), [(2, "E0001"), (5, "E0003")]),
    # a `(` never closed: the rest cannot be told apart from it, so one error
    (("dense(3 -> relu", "dense(2;)", "relu"), [(2, "E0001")]),
])
def test_every_independent_syntax_error_is_reported_once(lines, expected):
    assert syntax_errors(body(*lines)) == expected


def test_errors_in_a_block_and_in_the_model_are_both_reported():
    text = body("h = x -> dense(c c)", "return h", header="block b(c)(x) {") + body("b(3) ->", "relu 5 6")
    assert syntax_errors(text) == [(2, "E0001"), (6, "E0001"), (7, "E0001")]    # a chain never ends in `->`


def test_an_error_outside_a_body_or_at_the_end_of_the_file_ends_the_search():
    """A header is never taken out; an unclosed body is reported where the file ends."""
    assert syntax_errors(body("dense(3 4)", header="model m(x: [4] {")) == [(1, "E0001")]
    assert syntax_errors(body("dense(3 4)", "relu") + "model n(x: [4]) {\n    relu\n") == [(2, "E0001"), (6, "E0002")]
    assert syntax_errors(body("dense(3 4)") + "model n(x: [4]) {\n    relu 4\n    relu 5\n") == [
        (2, "E0001"), (5, "E0001"), (6, "E0001"), (6, "E0002")]     # the end of the file where it is


def test_at_most_max_syntax_errors_are_reported_and_a_long_file_stays_fast():
    assert syntax_errors(body(*["dense(3 4)"] * (MAX_SYNTAX_ERRORS + 10))) == [
        (line, "E0001") for line in range(2, MAX_SYNTAX_ERRORS + 2)]
    text = body(*["dense(3 4)"] * 20000)                         # ~270 KB: the budget allows about one reparse
    parse_errors = _timed(lambda: syntax_errors(text))
    assert parse_errors < 15, f"{parse_errors:.1f} s"


@pytest.mark.parametrize("text, expected", [
    # a body never closed before the next definition, whose `{` opens on its own line: one error, not two
    ("model m(x: [1]) {\n    relu\n\nblock b(c)(x)\n{\n    return x\n}\n", [(4, "E0001")]),
    ("model m(x: [1]) {\n    relu\nmodel n(x: [4])\n    relu 3\n", [(3, "E0001")]),    # a header stays
    # a stray `)` counts nothing, as in the lexer: the next line is not "unmatched"
    ("model m(x: [4]) {\n    dense(1 2)) -> relu(\n    3)\n    relu\n}\n", [(2, "E0001")]),
    # the last statement's error does not hide the body left open
    ("model m(x: [1]) {\n    dense(10)\n    relu relu\n", [(3, "E0001"), (3, "E0002")]),
])
def test_recovery_reports_no_consequence_and_misses_no_end(text, expected):
    assert syntax_errors(text) == expected


def test_recovery_over_a_long_continued_chain_is_linear():
    text = "model m(x: [1]) {\na a\n" + "->a\n" * 20000 + "}\n"
    assert _timed(lambda: syntax_errors(text)) < 5
