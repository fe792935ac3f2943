"""One namespace hands out the identifiers of generated code.

In:  model names and labels, which may hold anything a `.nn` file allows
     (dots, digits first) and, through the API, anything at all.
Out: identifiers valid in both C and Python, never a keyword of either,
     unique within the namespace and stable: the same requests in the same
     order give the same names, so golden files do not churn.
"""

from __future__ import annotations

import keyword
import re

C_KEYWORDS = frozenset("""
auto break case char const continue default do double else enum extern float for goto if inline int long
register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
_Bool _Complex _Imaginary _Alignas _Alignof _Atomic _Generic _Noreturn _Static_assert _Thread_local
bool true false NULL main errno assert
""".split())

RESERVED = C_KEYWORDS | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | {
    "self", "np", "K", "W", "None", "True", "False", "batch", "views", "v", "ctx"}


def sanitize(text: str, *, fallback: str = "v", limit: int = 48) -> str:
    """A valid identifier resembling `text`: other characters become `_`,
    a leading digit gets a `_` before it, runs of `_` collapse."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", text)
    ident = re.sub(r"__+", "_", ident).strip("_") or fallback
    if ident[0].isdigit():
        ident = "_" + ident
    return ident[:limit]


class Namespace:
    def __init__(self, reserved: frozenset[str] = RESERVED, prefix: str = ""):
        self._taken: set[str] = set(reserved)
        self._given: dict[str, str] = {}
        self._prefix = prefix

    def __call__(self, key: str) -> str:
        """The identifier for `key`, made on first request."""
        if key in self._given:
            return self._given[key]
        base = self._prefix + sanitize(key)
        if base in RESERVED and not self._prefix:
            base += "_"
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        self._given[key] = name
        return name
