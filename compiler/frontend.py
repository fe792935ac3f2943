"""The front end as one call: source text or a path -> checked IR.

In:  a `.nn` path or model text, optional bounds for named dimensions, and
     optional memory limits (`memory.Limits`).
Out: `Checked(graph, warnings, sources)`, or `CompileError` with every
     diagnostic (syntax, names, arguments, shapes, sizes past the limits).
     Bad `dims` (a size that is not a positive integer) raise `UsageError`
     (a `ValueError`) naming the dimension.

A `Path`, or a `str` ending in `.nn` (any case) with no line break, is a file;
any other `str` is model text. `read_file` reads a path as a file whatever its
name (the CLI's rule: a path argument is always a path). Only regular files
are read: a folder, a FIFO or a device is E0004, so nothing ever waits on one.
"""

from __future__ import annotations

import operator
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .diagnostics import CompileError, Diagnostic, Sink, Span, UsageError, error, printable, split_lines
from .ir import Graph, verify
from .lower import lower
from .memory import Limits
from .parse import parse


@dataclass(frozen=True, slots=True)
class Checked:
    graph: Graph
    warnings: tuple[Diagnostic, ...]
    sources: Mapping[str, str]


def is_path(model: Any) -> bool:
    """True when `model` names a file rather than holding model text."""
    return isinstance(model, Path) or (isinstance(model, str) and model.lower().endswith(".nn")
                                       and "\n" not in model and "\r" not in model)


def read_source(model: str | Path) -> tuple[str, str]:
    """(path, text) of a model given as a Path, a str ending in `.nn`, or text."""
    if isinstance(model, os.PathLike) or is_path(model):
        return read_file(model)
    if not isinstance(model, str):
        raise TypeError(f"a model is a path or source text, not {type(model).__name__}")
    return "<input>", model


def read_file(path: str | os.PathLike) -> tuple[str, str]:
    """(path, text) of a model file; E0004 when it cannot be read as UTF-8 text."""
    name = os.fspath(path)
    if isinstance(name, bytes):
        name = os.fsdecode(name)

    shown = printable(name)

    def fail(message: str) -> CompileError:
        return CompileError([error("E0004", message, Span.point(name, 1, 1))])

    try:
        info = os.stat(name)
    except FileNotFoundError:
        raise fail(f"no such file: `{shown}`") from None
    except (OSError, ValueError) as e:        # ValueError: a NUL byte in the name
        raise fail(f"cannot read `{shown}`: {getattr(e, 'strerror', None) or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise fail(f"`{shown}` is a folder, not a model file")
    if not stat.S_ISREG(info.st_mode):
        raise fail(f"`{shown}` is not a regular file")
    try:
        raw = Path(name).read_bytes()
    except OSError as e:
        raise fail(f"cannot read `{shown}`: {e.strerror or e}") from None
    try:
        return name, raw.decode("utf-8")
    except UnicodeDecodeError as e:
        # located at the bad byte, with the text around it shown (undecodable bytes as U+FFFD)
        lines = split_lines(raw[:e.start].decode("utf-8"))
        line, column = len(lines), len(lines[-1]) + 1
        diag = error("E0004", f"the file is not UTF-8 text: invalid byte 0x{raw[e.start]:02X}",
                     Span.point(name, line, column), help="save the file as UTF-8")
        raise CompileError([diag], {name: raw.decode("utf-8", errors="replace")}) from None


def check_dims(dims: Mapping[str, int] | None) -> dict[str, int]:
    """`dims` as a dict of names to positive ints; `UsageError` naming the
    dimension otherwise (`{"T": "abc"}`, `{"T": 2.5}`, `{"T": 0}`)."""
    if dims is None:
        return {}
    if not isinstance(dims, Mapping):
        raise UsageError(f"dims must map dimension names to sizes, got {type(dims).__name__}")
    result = {}
    for name, size in dims.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise UsageError(f"dims: {name!r} is not a dimension name")
        try:
            value = operator.index(size) if not isinstance(size, bool) else None
        except TypeError:
            value = None
        if value is None:
            raise UsageError(f"dims[{name!r}] must be an integer, got {size!r}")
        if value <= 0:
            raise UsageError(f"dims[{name!r}] must be positive, got {value}")
        result[name] = value
    return result


def check(model: str | Path, dims: Mapping[str, int] | None = None, *,
          limits: Limits | int | Mapping[str, int] | None = None) -> Checked:
    bounds = check_dims(dims)
    path, text = read_source(model)
    sink = Sink(sources={path: text})
    file = parse(text, path)
    graph = lower(file, bounds, sink, Limits.of(limits))
    verify(graph)
    return Checked(graph, tuple(sink.warnings), dict(sink.sources))
