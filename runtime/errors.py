"""The exceptions that both the compiler and the runtime raise for problems a
user can fix outside model text.

In:  nothing (definitions only).
Out: `UserError` (the CLI prints its message as one line and exits 1) and
     `UsageError` (a bad argument to the Python API). They live in the runtime
     so that a generated NumPy module needs only NumPy and `nnc.runtime`
     (INTERFACES.md 7); `nnc.compiler.diagnostics` re-exports them.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix that is not located in model text (a missing
    C compiler, an unwritable folder, a bad weights file): the CLI prints its
    message as one line and exits 1; Python callers see the exception itself.
    Subclasses also derive from the built-in class that fits (`ValueError`,
    `OSError`, `RuntimeError`) so existing `except` clauses keep working."""


class UsageError(UserError, ValueError):
    """A bad argument to the Python API (a dimension size that is not an
    integer, a bad `limits=`): the message names the argument."""
