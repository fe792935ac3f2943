"""The front end as one call: source text or a path -> checked IR.

In:  a `.nn` path or model text, optional bounds for named dimensions.
Out: `Checked(graph, warnings, sources)`, or `CompileError` with every
     diagnostic (syntax, names, arguments, shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .diagnostics import CompileError, Diagnostic, Sink, Span, error
from .ir import Graph, verify
from .lower import lower
from .parse import parse


@dataclass(frozen=True, slots=True)
class Checked:
    graph: Graph
    warnings: tuple[Diagnostic, ...]
    sources: Mapping[str, str]


def read_source(model: str | Path) -> tuple[str, str]:
    """(path, text) of a model given as a Path, a str ending in `.nn`, or text."""
    if isinstance(model, Path) or (isinstance(model, str) and model.endswith(".nn") and "\n" not in model):
        path = str(model)
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise CompileError([error("E0004", f"cannot read `{path}`: {e.strerror or e}", Span.point(path, 1, 1))]) from None
        try:
            return path, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CompileError([error("E0004", f"`{path}` is not UTF-8 text (byte {e.start})", Span.point(path, 1, 1))]) from None
    if not isinstance(model, str):
        raise TypeError(f"a model is a path or source text, not {type(model).__name__}")
    return "<input>", model


def check(model: str | Path, dims: Mapping[str, int] | None = None) -> Checked:
    path, text = read_source(model)
    sink = Sink(sources={path: text})
    file = parse(text, path)
    graph = lower(file, dims, sink)
    verify(graph)
    return Checked(graph, tuple(sink.warnings), dict(sink.sources))
