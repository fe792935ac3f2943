"""The symbolic size algebra of `compiler/dims.py`.

Pins the canonical forms the shape rules produce (`T - 4`, `(T - 1) // 2 + 1`,
`T // 2 - 2`), that equal sizes written differently compare equal, evaluation
against a binding of the names, and the two operations that leave the algebra
(a product of two symbolic sizes, a division by one). With hypothesis: random
linear expressions with floor divisions evaluate exactly as Python's integer
arithmetic does, and their printed form (which the code generators emit as
code) reads back as the same value.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnc.compiler.dims import (Sym, SymbolicError, evaluate, floordiv, format_shape, free_symbols,
                               product, to_json, try_evaluate)

T = Sym.var("T")
N = Sym.var("N")


def conv_out(size, k: int, s: int = 1, p: int = 0, d: int = 1):
    """PyTorch's output size, written with the dims operators as ops.py does."""
    return floordiv(size + 2 * p - d * (k - 1) - 1, s) + 1


# ---------------------------------------------------------------- canonical forms

def test_valid_conv_of_kernel_5_prints_t_minus_4():
    out = conv_out(T, 5)
    assert out == T - 4
    assert str(out) == "T - 4"


def test_stride_2_kernel_3_padding_1_conv_prints_familiar_form():
    assert str(conv_out(T, 3, s=2, p=1)) == "(T - 1) // 2 + 1"


def test_halving_then_subtracting_prints_t_floordiv_2_minus_2():
    assert str(floordiv(T, 2) - 2) == "T // 2 - 2"


def test_pool_of_2_then_valid_conv_of_3_gives_t_floordiv_2_minus_2():
    pooled = conv_out(T, 2, s=2)
    assert pooled == floordiv(T, 2)
    assert str(conv_out(pooled, 3)) == "T // 2 - 2"


def test_same_padding_conv_gives_back_the_named_size_itself():
    out = floordiv(T + 2 - 2 - 1, 1) + 1
    assert out == T and str(out) == "T"


def test_a_size_that_cancels_out_becomes_a_plain_int():
    assert T - T == 0 and isinstance(T - T, int)
    assert (T + 3) - T == 3


def test_multiples_of_the_divisor_are_pulled_out_of_a_floor_division():
    assert floordiv(2 * T + 4, 2) == T + 2
    assert str(floordiv(2 * T + 4, 2)) == "T + 2"
    assert floordiv(6 * T + 1, 3) == 2 * T


def test_the_constant_of_a_floor_division_keeps_a_remainder_in_minus_k_to_0():
    assert floordiv(T + 1, 2) == floordiv(T - 1, 2) + 1
    assert str(floordiv(T + 1, 2)) == "(T - 1) // 2 + 1"
    assert str(floordiv(T - 5, 2)) == "(T - 1) // 2 - 2"


def test_terms_are_ordered_names_first_then_divisions():
    assert str(floordiv(T, 2) + N + T) == "N + T + T // 2"
    assert floordiv(T, 2) + N + T == T + (N + floordiv(T, 2))


def test_coefficients_and_negation_print_readably():
    assert str(3 * T) == "3 * T" and 3 * T == T * 3
    assert str(-T + 5) == "-T + 5" and 5 - T == -T + 5
    assert str(2 * floordiv(T, 2)) == "2 * (T // 2)"


def test_dividing_by_one_changes_nothing():
    assert floordiv(T - 3, 1) == T - 3


def test_nested_floor_divisions_equal_one_division_by_the_product():
    # floor(floor(T / 2) / 3) == floor(T / 6) for every integer T: two pools of
    # 2 and 3 give the same size as one pool of 6.
    assert floordiv(floordiv(T, 2), 3) == floordiv(T, 6)


def test_a_coefficient_larger_than_the_divisor_is_split():
    # floor(3T / 2) == T + floor(T / 2) for every integer T.
    assert floordiv(3 * T, 2) == T + floordiv(T, 2)


# ---------------------------------------------------------------- queries

def test_evaluate_binds_every_name():
    size = conv_out(T, 3, s=2, p=1) + floordiv(N, 4)
    assert evaluate(size, {"T": 100, "N": 9}) == 50 + 2
    assert evaluate(7, {}) == 7


def test_evaluate_of_an_unbound_name_raises_key_error_and_try_evaluate_gives_none():
    with pytest.raises(KeyError):
        evaluate(T - 4, {"N": 3})
    assert try_evaluate(T - 4, {"N": 3}) is None
    assert try_evaluate(T - 4, {"T": 10}) == 6


def test_free_symbols_look_inside_floor_divisions():
    assert free_symbols((3, floordiv(N, 2) + 1, T - 1)) == {"N", "T"}
    assert free_symbols((3, 4)) == frozenset()


def test_product_of_a_shape_with_one_symbolic_axis_is_linear():
    assert product((2, T, 3)) == 6 * T
    assert product((4, 5)) == 20


def test_product_of_two_symbolic_axes_is_refused():
    with pytest.raises(SymbolicError, match="not linear"):
        product((T, N))


def test_json_and_text_forms():
    assert to_json(T - 4) == "T - 4" and to_json(12) == 12
    assert format_shape((16, T - 4)) == "[16, T - 4]"


# ---------------------------------------------------------------- errors

def test_product_of_two_symbolic_sizes_is_an_error():
    with pytest.raises(SymbolicError, match="both sizes are symbolic"):
        T * T
    with pytest.raises(SymbolicError):
        (T + 1) * (N - 2)


def test_division_by_a_symbolic_size_is_an_error():
    with pytest.raises(SymbolicError, match="symbolic size"):
        T // T
    with pytest.raises(SymbolicError, match="symbolic size"):
        64 // T


@pytest.mark.parametrize("k", [0, -2])
def test_division_by_a_non_positive_integer_is_an_error(k):
    with pytest.raises(SymbolicError):
        floordiv(T, k)


# ---------------------------------------------------------------- hypothesis

@dataclass(frozen=True, slots=True)
class Expr:
    """A random size expression over `T`, kept as a tree so that it can be
    evaluated both through dims and with plain Python integers."""

    op: str                        # "T", "const", "+", "-", "neg", "*", "//"
    left: "Expr | None" = None
    right: "Expr | None" = None
    value: int = 0                 # the constant, the factor, or the divisor

    def build(self):
        """The expression as a dims value (a Sym or an int)."""
        if self.op == "T":
            return T
        if self.op == "const":
            return self.value
        if self.op == "+":
            return self.left.build() + self.right.build()
        if self.op == "-":
            return self.left.build() - self.right.build()
        if self.op == "neg":
            return -self.left.build()
        if self.op == "*":
            return self.left.build() * self.value
        return floordiv(self.left.build(), self.value)

    def compute(self, t: int) -> int:
        """The expression's value for T = t, in Python integer arithmetic."""
        if self.op == "T":
            return t
        if self.op == "const":
            return self.value
        if self.op == "+":
            return self.left.compute(t) + self.right.compute(t)
        if self.op == "-":
            return self.left.compute(t) - self.right.compute(t)
        if self.op == "neg":
            return -self.left.compute(t)
        if self.op == "*":
            return self.left.compute(t) * self.value
        return self.left.compute(t) // self.value


LEAVES = st.one_of(st.just(Expr("T")), st.integers(-20, 20).map(lambda v: Expr("const", value=v)))


def _extend(children):
    return st.one_of(
        st.tuples(children, children).map(lambda lr: Expr("+", *lr)),
        st.tuples(children, children).map(lambda lr: Expr("-", *lr)),
        children.map(lambda e: Expr("neg", e)),
        st.tuples(children, st.integers(-4, 5)).map(lambda ev: Expr("*", ev[0], value=ev[1])),
        st.tuples(children, st.integers(1, 7)).map(lambda ev: Expr("//", ev[0], value=ev[1])),
    )


EXPRESSIONS = st.recursive(LEAVES, _extend, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(EXPRESSIONS)
def test_linear_expressions_with_floor_division_evaluate_like_python_ints(expr):
    size = expr.build()
    for t in range(0, 201):
        assert evaluate(size, {"T": t}) == expr.compute(t), (str(size), t)


@settings(max_examples=200, deadline=None)
@given(EXPRESSIONS)
def test_building_an_expression_twice_gives_equal_sizes(expr):
    assert expr.build() == expr.build()
    assert hash(expr.build()) == hash(expr.build())


@settings(max_examples=200, deadline=None)
@given(EXPRESSIONS)
def test_printed_form_reads_back_as_python_with_the_same_value(expr):
    # The NumPy code generator writes symbolic sizes into generated code as
    # `(str(size))`, so the text must mean the same thing to Python.
    size = expr.build()
    for t in (0, 1, 2, 3, 7, 50, 199):
        assert eval(str(size), {"T": t}) == expr.compute(t), (str(size), t)


def test_negated_floor_division_prints_with_parentheses():
    size = -floordiv(T, 2) + 5
    assert eval(str(size), {"T": 1}) == 5      # -(1 // 2) + 5, not (-1) // 2 + 5
