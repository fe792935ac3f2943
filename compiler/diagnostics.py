"""Diagnostics: source spans, located errors and warnings, and their rendering.

In:  spans taken from the parser, and the messages that the passes produce.
Out: `Diagnostic` values, `CompileError` (what the API raises) and the
     rustc-style text that the CLI prints:

    models/bad.nn:7:5: error[E0203]: dense expects a vector per example, got [16, 5, 5]
       7 |     dense(120)
         |     ^^^^^^^^^^
       = help: add `flatten` before it

Every code that the compiler can emit is listed in `CODES`; `docs/diagnostics.md`
is the user-facing table and a test keeps the two equal.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Mapping

from ..runtime.errors import UsageError, UserError  # noqa: F401  (re-exported: defined with the runtime)


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file. Lines and columns count from 1; the end
    column is exclusive (one past the last character)."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int

    @staticmethod
    def point(path: str, line: int, column: int) -> "Span":
        return Span(path, line, column, line, column + 1)


class Severity(str, enum.Enum):
    """A `str` enum, so `d.severity == "error"` holds as well as `is Severity.ERROR`."""

    ERROR = "error"
    WARNING = "warning"

    def __str__(self) -> str:
        return self.value


# The stable diagnostic codes. docs/diagnostics.md documents the same table.
CODES: dict[str, str] = {
    # syntax
    "E0001": "syntax error: a token that cannot stand here",
    "E0002": "syntax error: the file ends in the middle of a statement",
    "E0003": "syntax error: a character that is not part of the language",
    "E0004": "the model file cannot be read, or is not UTF-8 text",
    # structure and names
    "E0101": "the file has no `model`",
    "E0102": "the file has more than one `model`",
    "E0103": "two blocks share a name, or a block shadows an op",
    "E0104": "an undefined value name",
    "E0105": "an unknown op or block",
    "E0106": "two steps have the same full label",
    "E0107": "a block calls itself, directly or through other blocks",
    "E0108": "a block called with the wrong number of inputs",
    "E0109": "a name declared twice in one model or block header",
    "E0110": "destructuring into a number of names different from the values returned",
    "E0111": "an op used where it cannot stand (a merge as a step, a layer as a source)",
    "E0112": "a value used as a step, or a step where a value is expected",
    "E0113": "a statement after `return`",
    "E0114": "a model or block with an empty body",
    "E0115": "block calls nested too deep, or a model expanding to too many steps",
    # arguments
    "E0301": "an unknown keyword argument",
    "E0302": "a missing positional argument",
    "E0303": "too many positional arguments",
    "E0304": "an argument of the wrong kind",
    "E0305": "an argument given twice",
    "E0306": "an argument value out of range, or a number too large",
    "E0307": "a bad `NAME.shape[i]` reference",
    "E0308": "division by zero in an argument expression",
    # shapes
    "E0201": "a non-positive output size",
    "E0202": "`groups` does not divide the channels",
    "E0203": "an input rank the op cannot take",
    "E0204": "merged values whose shapes disagree",
    "E0205": "a size that cannot be split as asked: a reshape that changes the element count, glu on an odd axis",
    "E0206": "a symbolic dimension where a known size is needed",
    "E0207": "a bad dimension bound",
    "E0208": "a tensor, the weights or the memory plan larger than the memory limit",
    "E0209": "an integer value where numbers are needed (only `embedding` reads integers), or an unknown input type",
    # streaming
    "E0401": "a layer that cannot stream along the time axis",
    "E0402": "a model without a named time dimension compiled for streaming",
    # growth (nnc grow): the new model against the old one
    "E0501": "a layer that shrinks in the grown model",
    "E0502": "a step label that disappears from the grown model, or appears in it",
    "E0503": "a changed op, argument, input wiring or output other than a layer's output size",
    "E0504": "a changed model input",
    "E0505": "merged values whose units would no longer line up",
    "E0506": "grown units that cannot pass an op (pooled, reshaped or moved across groups)",
    "E0507": "net2net cannot copy units consistently here",
    # warnings
    "W0001": "a value that is computed but never used",
    "W0002": "growth through a layernorm, softmax or log_softmax: the grown model computes another function",
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    span: Span | None
    notes: tuple[str, ...] = ()
    help: str | None = None

    # The Python API's contract names these fields.
    @property
    def path(self) -> str | None:
        return self.span.path if self.span else None

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None

    @property
    def hint(self) -> str | None:
        return self.help

    def __str__(self) -> str:
        return render(self, None)


def error(code: str, message: str, span: Span | None, *, help: str | None = None,
          notes: tuple[str, ...] = ()) -> Diagnostic:
    assert code in CODES, code
    return Diagnostic(Severity.ERROR, code, message, span, notes, help)


def warning(code: str, message: str, span: Span | None, *, help: str | None = None,
            notes: tuple[str, ...] = ()) -> Diagnostic:
    assert code in CODES, code
    return Diagnostic(Severity.WARNING, code, message, span, notes, help)


class CompileError(Exception):
    """The model (or an input file) is wrong. `diagnostics` lists every
    independent problem found; `str()` renders them with source excerpts."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = list(diagnostics)
        self.sources = dict(sources or {})
        # Rendered on demand: thousands of diagnostics must not cost a render each time one is raised.
        n = len(self.diagnostics)
        super().__init__(f"{n} diagnostic{'s' if n != 1 else ''}")

    def render(self) -> str:
        return "\n".join(render_all(self.diagnostics, self.sources))

    def __str__(self) -> str:
        return self.render()


@dataclass
class Sink:
    """Collects diagnostics while a stage runs; `raise_if_errors` ends the stage."""

    sources: dict[str, str] = field(default_factory=dict)
    items: list[Diagnostic] = field(default_factory=list)
    _seen: set[Diagnostic] = field(default_factory=set, repr=False)

    def add(self, diag: Diagnostic) -> None:
        if diag not in self._seen:
            self._seen.add(diag)
            self.items.append(diag)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.WARNING]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise CompileError(_sorted(self.errors), self.sources)


def _sorted(diags: list[Diagnostic]) -> list[Diagnostic]:
    def key(d: Diagnostic):
        s = d.span
        return (s.path, s.line, s.column) if s else ("", 0, 0)
    return sorted(diags, key=key)


SHOWN_LINE = 160      # the most characters of a source line a diagnostic shows


def render(diag: Diagnostic, source: str | list[str] | None) -> str:
    """The rustc-style text of one diagnostic. `source` is the text of the
    file the span points into, or its lines (`split_lines`) when many
    diagnostics of one file are rendered."""
    s = diag.span
    head = f"{diag.severity}[{diag.code}]: {diag.message}"
    if s is None:
        lines = [head]
    else:
        lines = [f"{printable(s.path)}:{s.line}:{s.column}: {head}"]
        text = _source_line(source, s.line)
        if text is not None:
            gutter = len(str(s.line))
            end = s.end_column if s.end_line == s.line else len(text) + 1
            column = s.column
            if len(text) > SHOWN_LINE:
                # a window around the span, so one huge line cannot flood the terminal
                start = max(0, min(column - 1 - SHOWN_LINE // 4, len(text) - SHOWN_LINE))
                text = ("..." if start else "") + text[start:start + SHOWN_LINE] + \
                    ("..." if start + SHOWN_LINE < len(text) else "")
                shift = start - (3 if start else 0)
                column, end = column - shift, end - shift
            width = max(1, min(end, len(text) + 1) - column)
            # INTERFACES.md section 6: three spaces, the line number, ` | `.
            lines.append(f"{' ' * 3}{s.line} | {text}")
            lines.append(f"{' ' * (3 + gutter)} | {' ' * (column - 1)}{'^' * width}")
    for note in diag.notes:
        lines.append(f"   = note: {note}")
    if diag.help:
        lines.append(f"   = help: {diag.help}")
    return "\n".join(lines)


def printable(text: str) -> str:
    """`text` with every character that is not printable escaped (`\\n`,
    `\\x1b`, `\\u202e`): a file name can neither break a message into lines nor
    send control sequences to the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def render_all(diags, sources: Mapping[str, str]) -> list[str]:
    """The text of each diagnostic; every source is split into lines once."""
    lines: dict[str, list[str]] = {}
    parts = []
    for d in diags:
        path = d.path or ""
        if path not in lines and path in sources:
            lines[path] = split_lines(sources[path])
        parts.append(render(d, lines.get(path)))
    return parts


def split_lines(source: str) -> list[str]:
    """The lines of a source as the parser counts them: only \\n, \\r\\n and \\r
    end a line (str.splitlines also splits on \\x0c, \\u2028 ...)."""
    return re.split(r"\r\n|\r|\n", source)


def _source_line(source: str | list[str] | None, line: int) -> str | None:
    if source is None:
        return None
    all_lines = split_lines(source) if isinstance(source, str) else source
    if 1 <= line <= len(all_lines):
        # A tab counts as one column, so show it as one space to keep the carets aligned;
        # other control characters (an escape sequence in a comment) show as one U+FFFD.
        text = all_lines[line - 1].replace("\t", " ")
        return text if text.isprintable() else "".join(c if c.isprintable() else "\ufffd" for c in text)
    return None


def did_you_mean(name: str, candidates) -> str | None:
    """A `help` text naming the closest candidate, if one is close enough."""
    import difflib
    pool = set(candidates)
    if not name:
        return None
    key = name.lower()      # case is ignored: `Conv2d` and `ReLU` find `conv2d` and `relu`
    if len(pool) > 64:
        # A close match shares a first or last letter and has about the same
        # length; filtering on that first keeps thousands of errors in a scope
        # of thousands of names linear rather than quadratic.
        n = len(name)
        pool = {c for c in pool if abs(len(c) - n) <= 2 and c[:1].lower() in (key[:1], key[-1:])}
    folded: dict[str, str] = {}
    for c in sorted(pool):
        folded.setdefault(c.lower(), c)
    match = difflib.get_close_matches(key, sorted(folded), n=1, cutoff=0.6)
    return f"did you mean `{folded[match[0]]}`?" if match else None
