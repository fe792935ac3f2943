"""The section 9 front end: word values, keywords as argument names, negative
axes, word choices with "did you mean", integer inputs and where their values
may go, and the op-name hints for the new names."""

from __future__ import annotations

import pytest

from nnc.compiler import ops
from nnc.compiler.diagnostics import CompileError
from nnc.compiler.ir import dump
from nnc.compiler.lower import lower
from nnc.compiler.ops.base import ArgSpec, Kind, OpSpec, ShapeError, _axes, _axis, _same, coerce_arg
from nnc.compiler.parse import parse

PROBE = OpSpec("probe", (
    ArgSpec("axis", Kind.AXIS, -1),
    ArgSpec("mode", Kind.WORD, "nearest", choices=("nearest", "linear", "bilinear")),
    ArgSpec("end", Kind.INT, None),
    ArgSpec("causal", Kind.BOOL, False),
    ArgSpec("act", Kind.WORD, "tanh", choices=("tanh", "relu")),
), lambda a, ins: ins[0], resolve=lambda a, ins: {**a, "axis": _axis("probe", a["axis"], ins[0])})


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setitem(ops.CATALOG, "probe", PROBE)
    import nnc.compiler.lower as L
    monkeypatch.setitem(L.CATALOG, "probe", PROBE)


def graph(text: str):
    return lower(parse(text))


def errors(text: str) -> list[tuple[str, str]]:
    with pytest.raises(CompileError) as info:
        lower(parse(text))
    return [(d.code, d.message) for d in info.value.diagnostics]


def probe_attrs(args: str, params: str = "") -> dict:
    if params:
        text = f"block b({params})(x) {{\n    return x -> probe({args})\n}}\nmodel m(x: [4, 6]) {{\n    b()\n}}\n"
    else:
        text = f"model m(x: [4, 6]) {{\n    probe({args})\n}}\n"
    return dict(graph(text).nodes[0].attrs)


def test_words_become_lowercase_strings_and_none_becomes_none(probe):
    a = probe_attrs("0, mode=bilinear, end=none, causal=true, act=relu")
    assert (a["mode"], a["end"], a["causal"], a["act"]) == ("bilinear", None, True, "relu")
    assert probe_attrs("")["mode"] == "nearest"


def test_a_block_parameter_named_like_a_word_keeps_its_value(probe):
    assert probe_attrs("mode=linear", params="linear=nearest")["mode"] == "nearest"


def test_words_stay_op_names():
    g = graph("model m(x: [4]) {\n    relu -> tanh\n}\n")
    assert [n.op.name for n in g.nodes] == ["relu", "tanh"]


def test_a_wrong_word_says_which_words_are_allowed_and_suggests_one(probe):
    [(code, message)] = errors("model m(x: [4, 6]) {\n    probe(mode=bilinaer)\n}\n")
    assert code == "E0304"
    assert "one of `nearest`, `linear` or `bilinear`" in message and "did you mean `bilinear`?" in message
    [(code, message)] = errors("model m(x: [4, 6]) {\n    probe(act=linear)\n}\n")
    assert code == "E0304" and "`tanh` or `relu`" in message


def test_none_only_where_an_argument_accepts_it(probe):
    [(code, message)] = errors("model m(x: [4, 6]) {\n    probe(axis=none)\n}\n")
    assert code == "E0304" and "got `none`" in message


def test_a_word_where_a_number_is_needed_is_an_argument_error():
    [(code, message)] = errors("model m(x: [4]) {\n    dense(relu)\n}\n")
    assert code == "E0304" and "got `relu`" in message


def test_negative_axes_count_from_the_end(probe):
    assert probe_attrs("-1")["axis"] == 1
    assert probe_attrs("-2")["axis"] == 0
    [(code, message)] = errors("model m(x: [4, 6]) {\n    probe(-3)\n}\n")
    assert code == "E0306" and "axis -3 is out of range for [4, 6]" in message


def test_axes_helper_normalises_sorts_and_refuses_repeats():
    assert _axes("sum", (-1, 0), (2, 3, 4)) == (0, 2)
    with pytest.raises(ShapeError, match="named twice"):
        _axes("sum", (2, -1), (2, 3, 4))
    assert coerce_arg(ArgSpec("axis", Kind.AXES), -1) == (-1,)
    assert coerce_arg(ArgSpec("axis", Kind.AXES), (0, -1)) == (0, -1)


def test_keywords_name_arguments(probe):
    assert probe_attrs("causal=true")["causal"] is True


def test_integer_input_has_int32_dtype_in_the_ir():
    g = graph("model m(tokens: int[T=8], x: [3]) {\n    x -> relu\n}\n")
    assert [i.dtype for i in g.inputs] == ["int32", "float32"]
    assert dump(g).startswith("graph m(tokens: int[T], x: [3])")


def test_integer_input_reaching_a_conv_is_located_error():
    with pytest.raises(CompileError) as info:
        graph("model m(tokens: int[2, T=8]) {\n    conv1d(4, 3) -> relu\n}\n")
    (d,) = info.value.diagnostics
    assert (d.code, d.line, d.column) == ("E0209", 2, 5)
    assert "conv1d cannot read the integer input `tokens`" in d.message


@pytest.mark.parametrize("chain", ["relu", "flatten -> dense(3)", "transpose((1, 0)) -> softmax"])
def test_integer_values_pass_only_shape_ops(chain):
    codes = [c for c, _ in errors(f"model m(tokens: int[2, T=8]) {{\n    {chain}\n}}\n")]
    assert codes == ["E0209"]


def test_integer_values_keep_their_dtype_through_shape_ops():
    g = graph("model m(tokens: int[2, 8]) {\n    transpose((1, 0)) -> flatten -> reshape((4, 4))\n}\n")
    assert [n.dtype for n in g.nodes] == ["int32"] * 3


def test_an_unknown_input_type_is_an_error():
    [(code, message)] = errors("model m(x: float[4]) {\n    relu\n}\n")
    assert code == "E0209" and "unknown input type `float`" in message


def test_an_op_name_containing_a_shorter_one_is_not_suggested_it(monkeypatch):
    import nnc.compiler.lower as L
    for name in ("conv_transpose2d", "conv_transpose1d"):
        monkeypatch.delitem(L.CATALOG, name, raising=False)
    [(code, message)] = errors("model m(x: [4, 6, 6]) {\n    conv_transpose2d(8, 3)\n}\n")
    assert code == "E0105"
    with pytest.raises(CompileError) as info:
        graph("model m(x: [4, 6, 6]) {\n    conv_transpose2d(8, 3)\n}\n")
    assert "transpose" not in (info.value.diagnostics[0].hint or "")
    with pytest.raises(CompileError) as info:
        graph("model m(x: [4, 6, 6]) {\n    transpos((0, 2, 1))\n}\n")
    assert info.value.diagnostics[0].hint == "did you mean `transpose`?"


def test_new_names_are_suggested(monkeypatch):
    import nnc.compiler.lower as L
    monkeypatch.setitem(L.CATALOG, "conv_transpose2d", OpSpec("conv_transpose2d", (), _same))
    with pytest.raises(CompileError) as info:
        graph("model m(x: [4, 6, 6]) {\n    conv_transpose2(8, 3)\n}\n")
    assert info.value.diagnostics[0].hint == "did you mean `conv_transpose2d`?"
