"""Identifiers and escaped text for generated code.

In:  model names, labels, dimension names, paths and any other text that
     ends up in a generated file; they may hold anything a `.nn` file allows
     (dots, digits first) and, through the API and the file system, anything
     at all (quotes, backslashes, newlines, control characters, lone
     surrogates).
Out: - `Namespace`: identifiers valid in both C and Python, never a keyword of
       either nor a name the generated code uses itself, unique within the
       namespace and stable: the same requests in the same order give the
       same names, so golden files do not churn.
     - for generated Python, the one place text is escaped: `py_literal`
       (a Python literal that evaluates to the value), `py_doc` (text inside
       a `\"\"\"` docstring, on one line), `py_comment` (text after `#`, on
       one line). Their output is ASCII, so the file reads the same whatever
       encoding writes it, and nothing in it can end the string or comment it
       sits in. (The C generator has its own escaping function.)
"""

from __future__ import annotations

import keyword
import math
import re
import unicodedata
from typing import Any

C_KEYWORDS = frozenset("""
auto break case char const continue default do double else enum extern float for goto if inline int long
register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
_Bool _Complex _Imaginary _Alignas _Alignof _Atomic _Generic _Noreturn _Static_assert _Thread_local
bool true false NULL main errno assert
""".split())

# Names the generated NumPy module uses itself: its imports, classes, the
# methods' parameters and locals (`_views(self, batch, ...)`, `_run(self, v,
# ...)`, `_prepare`'s `s`), and builtins it calls.
PY_GENERATED = frozenset({
    "self", "np", "K", "W", "os", "batch", "views", "v", "s", "ctx", "dims", "Model", "ModelBase", "Spec",
    "fold_norm", "super", "object", "len", "range", "float", "int", "tuple", "dict"})

RESERVED = C_KEYWORDS | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | PY_GENERATED | {
    "None", "True", "False"}


def sanitize(text: str, *, fallback: str = "v", limit: int = 48) -> str:
    """A valid identifier resembling `text`: other characters become `_`,
    a leading digit gets a `_` before it, runs of `_` collapse."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", str(text))
    ident = re.sub(r"__+", "_", ident).strip("_") or fallback
    if ident[0].isdigit():
        ident = "_" + ident
    return ident[:limit]


class Namespace:
    def __init__(self, reserved: frozenset[str] = RESERVED, prefix: str = ""):
        self._taken: set[str] = set(reserved)
        self._given: dict[object, str] = {}
        self._prefix = prefix

    def __call__(self, key: object, text: str | None = None) -> str:
        """The identifier for `key`, made on first request from `text`
        (default: the key itself). Keys of different kinds (a label and a
        dimension of the same name) may be told apart by using tuples as keys
        with the name as `text`."""
        if key in self._given:
            return self._given[key]
        base = self._prefix + sanitize(key if text is None else text)
        if base in RESERVED and not self._prefix:
            base += "_"
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        self._given[key] = name
        return name


# ------------------------------------------------------------------ text in generated Python

def py_literal(x: Any) -> str:
    """Python source (ASCII) for a constant: str, int, float (also inf and
    nan), bool, None, and tuples, lists and dicts of them. Evaluating it gives
    back an equal value; subclasses of str and int are written as the plain
    type, so no `__repr__` of theirs runs."""
    if x is None or isinstance(x, bool):
        return repr(x)
    if isinstance(x, str):
        return ascii(str.__str__(x))
    if isinstance(x, int):
        return int.__repr__(int(x))
    if isinstance(x, float):
        x = float(x)
        if math.isnan(x):
            return "float('nan')"
        if math.isinf(x):
            return "float('inf')" if x > 0 else "-float('inf')"
        return float.__repr__(x)
    if isinstance(x, tuple):
        inner = ", ".join(py_literal(i) for i in x)
        return f"({inner},)" if len(x) == 1 else f"({inner})"
    if isinstance(x, list):
        return "[" + ", ".join(py_literal(i) for i in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in x.items()) + "}"
    raise TypeError(f"cannot write {type(x).__name__} {x!r} as a Python literal")


def _visible(text: str) -> str:
    """`text` with every character that is not printable ASCII written as a
    backslash escape (`\\n`, `\\x00`, `\\u2028`, `\\U0001f600`)."""
    return str.__str__(str(text)).encode("ascii", "backslashreplace").decode("ascii") \
        .translate(_CONTROL_ESCAPES)


_CONTROL_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(32), 127]} | {9: "\\t", 10: "\\n", 13: "\\r"}


def py_doc(text: str) -> str:
    """`text` for a `\"\"\"` docstring, on one line: backslashes, quotes and
    control characters are escaped, so the docstring reads back as `text`
    and nothing in it can end the string."""
    out = str.__str__(str(text)).replace("\\", "\\\\").replace('"', '\\"')
    return _visible(out)


def py_comment(text: str) -> str:
    """`text` for a `#` comment: one line of printable ASCII (other
    characters are written as escapes, line and paragraph breaks too)."""
    out = _visible(text)
    return "".join(c if c.isprintable() and unicodedata.category(c)[0] != "C" else "?" for c in out)
