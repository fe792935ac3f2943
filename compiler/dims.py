"""Symbolic dimensions: sizes that depend on a named input dimension.

In:  integers and the names of model input dimensions (`T`).
Out: `Dim` values (a plain `int`, or a `Sym` expression) closed under `+`, `-`,
     `*` by an integer and `//` by a positive integer, kept in one canonical
     form so that equal sizes compare equal (`(T + 2 - 2 - 1) // 1 + 1` is `T`).

A `Sym` is a linear combination of atoms plus a constant. An atom is a named
dimension or a floor division `(expr) // k` that cannot be simplified further.
Floor division pulls out the whole multiples of `k` from every coefficient,
and the constant down to a remainder in (-k, 0]; nested divisions merge. So
`(2*T + 4) // 2` becomes `T + 2`, `(3*T) // 2` becomes `T + T // 2`,
`(T + 1) // 2` becomes `(T - 1) // 2 + 1`, `T // 2 // 3` becomes `T // 6`, and
each size has one form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union


class SymbolicError(ValueError):
    """An operation that leaves the supported forms (a product of two symbolic
    sizes, a division by a symbolic size)."""


@dataclass(frozen=True, slots=True, order=True)
class Var:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class FloorDiv:
    num: "Sym"
    den: int

    def __str__(self) -> str:
        inner = str(self.num)
        if self.num.const != 0 or len(self.num.terms) > 1 or self.num.terms[0][1] != 1:
            inner = f"({inner})"
        return f"{inner} // {self.den}"


Atom = Union[Var, FloorDiv]


def _atom_key(atom: Atom) -> tuple:
    # Named dimensions first (alphabetically), then floor divisions.
    return (0, atom.name) if isinstance(atom, Var) else (1, str(atom))


@dataclass(frozen=True, slots=True)
class Sym:
    terms: tuple[tuple[Atom, int], ...]     # sorted by _atom_key, coefficients != 0
    const: int

    # -- construction

    @staticmethod
    def var(name: str) -> "Sym":
        return Sym(((Var(name), 1),), 0)

    # -- arithmetic (results are normalised: a Sym with no terms becomes an int)

    def __add__(self, other: "Dim") -> "Dim":
        o = _as_sym(other)
        coeffs: dict[Atom, int] = dict(self.terms)
        for atom, c in o.terms:
            coeffs[atom] = coeffs.get(atom, 0) + c
        return _make(coeffs, self.const + o.const)

    __radd__ = __add__

    def __neg__(self) -> "Dim":
        return _make({a: -c for a, c in self.terms}, -self.const)

    def __sub__(self, other: "Dim") -> "Dim":
        return self + (-_as_sym(other))

    def __rsub__(self, other: "Dim") -> "Dim":
        return _as_sym(other) + (-self)

    def __mul__(self, other: "Dim") -> "Dim":
        if isinstance(other, Sym):
            raise SymbolicError(f"cannot multiply `{self}` by `{other}`: both sizes are symbolic")
        if not isinstance(other, int):
            return NotImplemented
        return _make({a: c * other for a, c in self.terms}, self.const * other)

    __rmul__ = __mul__

    def __floordiv__(self, other: "Dim") -> "Dim":
        if isinstance(other, Sym):
            raise SymbolicError(f"cannot divide `{self}` by the symbolic size `{other}`")
        if not isinstance(other, int):
            return NotImplemented
        return floordiv(self, other)

    def __rfloordiv__(self, other: "Dim") -> "Dim":
        raise SymbolicError(f"cannot divide by the symbolic size `{self}`")

    # -- queries

    def free_symbols(self) -> frozenset[str]:
        names: set[str] = set()
        for atom, _ in self.terms:
            if isinstance(atom, Var):
                names.add(atom.name)
            else:
                names |= atom.num.free_symbols()
        return frozenset(names)

    def evaluate(self, env: Mapping[str, int]) -> int:
        total = self.const
        for atom, c in self.terms:
            if isinstance(atom, Var):
                if atom.name not in env:
                    raise KeyError(atom.name)
                total += c * env[atom.name]
            else:
                total += c * (atom.num.evaluate(env) // atom.den)
        return total

    def __str__(self) -> str:
        parts: list[str] = []
        for atom, c in self.terms:
            text = str(atom)
            if isinstance(atom, FloorDiv) and abs(c) != 1:
                text = f"({text})"
            mag = abs(c)
            body = text if mag == 1 else f"{mag} * {text}"
            if not parts:
                if c < 0 and isinstance(atom, FloorDiv) and mag == 1:
                    body = f"({body})"      # `-T // 2` would read as `(-T) // 2`
                parts.append(body if c > 0 else f"-{body}")
            else:
                parts.append(f"+ {body}" if c > 0 else f"- {body}")
        if self.const:
            parts.append(f"+ {self.const}" if self.const > 0 else f"- {-self.const}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Sym({self})"


Dim = Union[int, Sym]
Shape = tuple[Dim, ...]


def _as_sym(d: Dim) -> Sym:
    if isinstance(d, Sym):
        return d
    if isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"not a dimension: {d!r}")
    return Sym((), d)


def _make(coeffs: Mapping[Atom, int], const: int) -> Dim:
    terms = tuple(sorted(((a, c) for a, c in coeffs.items() if c != 0), key=lambda t: _atom_key(t[0])))
    return Sym(terms, const) if terms else const


def floordiv(d: Dim, k: int) -> Dim:
    """`d // k` for a positive integer k, simplified."""
    if k <= 0:
        raise SymbolicError(f"cannot divide a size by {k}")
    if isinstance(d, int):
        return d // k
    if k == 1:
        return d
    if len(d.terms) == 1 and isinstance(d.terms[0][0], FloorDiv) and d.terms[0][1] == 1:
        # (X // m + c) // k == (X + m*c) // (m*k)
        inner = d.terms[0][0]
        return floordiv(inner.num + inner.den * d.const, inner.den * k)
    whole: dict[Atom, int] = {}
    rest: dict[Atom, int] = {}
    for atom, c in d.terms:
        q, r = divmod(c, k)          # the whole multiples of k leave the division
        if q:
            whole[atom] = q
        if r:
            rest[atom] = r
    # Split the constant as k*q + r with r in (-k, 0], so that the common
    # `(T - 1) // 2 + 1` keeps its familiar form and every size has one form.
    q = -((-d.const) // k)
    r = d.const - k * q
    if not rest:
        return _make(whole, d.const // k)
    inner = _make(rest, r)
    assert isinstance(inner, Sym)
    whole[FloorDiv(inner, k)] = whole.get(FloorDiv(inner, k), 0) + 1
    return _make(whole, q)


def is_symbolic(d: Dim) -> bool:
    return isinstance(d, Sym)


def evaluate(d: Dim, env: Mapping[str, int]) -> int:
    return d if isinstance(d, int) else d.evaluate(env)


def try_evaluate(d: Dim, env: Mapping[str, int]) -> int | None:
    """The value of `d` if every name in it has a value in env, else None."""
    if isinstance(d, int):
        return d
    try:
        return d.evaluate(env)
    except KeyError:
        return None


def free_symbols(shape) -> frozenset[str]:
    names: frozenset[str] = frozenset()
    for d in shape:
        if isinstance(d, Sym):
            names |= d.free_symbols()
    return names


def product(shape) -> Dim:
    total: Dim = 1
    for d in shape:
        if isinstance(total, Sym) and isinstance(d, Sym):
            raise SymbolicError(f"the element count of {format_shape(shape)} is not linear in its symbols")
        total = d * total if isinstance(d, Sym) else total * d
    return total


def format_dim(d: Dim) -> str:
    return str(d)


def format_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def to_json(d: Dim) -> int | str:
    return d if isinstance(d, int) else str(d)
