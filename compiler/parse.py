"""Text -> AST: parse a `.nn` file with the grammar in `grammar/nn.lark`.

In:  the source text of one `.nn` file and the path to name in spans.
Out: an `ast.File` whose every node carries the exact `Span` of its text, or a
     `CompileError` holding the syntax diagnostics: E0001 (a token that cannot
     stand there), E0002 (the file ends in the middle of something) or E0003
     (a character that is not part of the language). No other exception ever
     leaves `parse`, whatever the input.

How it works:
1. Line endings are normalised to "\\n" (so CRLF and lone CR files get the
   line numbers an editor shows) and a leading byte-order mark is blanked.
2. Lark's LALR(1) parser with the contextual lexer builds a parse tree; the
   `_Brackets` post-lexer drops line breaks inside `( )` and `[ ]`, so long
   argument and input lists may span several lines.
3. `_ToAst`, a lark `Transformer` (the non-recursive kind), builds the AST.
   It never raises.
4. Expressions nested deeper than `MAX_DEPTH` are refused (E0001), so no later
   stage can run out of Python stack on a pathological input.
5. Lark's `UnexpectedInput` becomes one friendly diagnostic: what was
   expected in plain words, what was found, and where, with a `help` line for
   the common slips (a missing `)` or `]`, `=` for `:` in an input, a `->`
   with nothing before it, a `{` never closed). After an error the statement
   holding it is blanked out and the file parsed again, so that independent
   errors in other statements are reported too (see `_statement_lines`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from importlib import resources
from typing import Iterator

from lark import Lark, Token, Transformer_NonRecursive, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from . import ast
from .diagnostics import CompileError, Diagnostic, Span, error

# Expressions nested deeper are refused: later stages walk them recursively.
MAX_DEPTH = 100

# Numbers longer than this are refused: Python will not print a longer int.
MAX_DIGITS = 4000


def parse(source: str, path: str = "<input>") -> ast.File:
    """Parse the text of a `.nn` file; raise `CompileError` on a syntax error
    (every independent one, see `_statement_lines`)."""
    text = _normalise(source)
    diags: list[Diagnostic] = []
    work, floor, budget = text, 0, RECOVERY_CHARS
    while True:
        try:
            tree = _parser().parse(work)
            break
        except (UnexpectedCharacters, UnexpectedToken, _NumberTooLong) as e:
            diag = _syntax_error(e, work, path)
        if diag.code == "E0002" and work is not text:
            diag = dataclasses.replace(diag, span=_end_of_text(text, path))   # a statement taken out ends no file
        elif diags and diag.span.line <= floor:
            break                   # a consequence of the statement taken out, not an error of its own
        diags.append(diag)
        budget -= _offset(work, diag.span.line)     # lark stopped at the error
        statement = _statement_lines(work, diag) if len(diags) < MAX_SYNTAX_ERRORS and budget >= len(work) else None
        if statement is None:
            break
        work, floor = _blanked(work, *statement), statement[1]
    if diags:
        raise CompileError(diags, {path: source}) from None
    builder = _ToAst(path, source)
    file = builder.transform(tree)
    late = [error("E0001", "a positional argument after a keyword argument", span,
                  help="put the positional arguments first, as in `dense(64, bias=false)`")
            for span in builder.late_positional]
    if builder.too_deep is not None:
        late.append(error("E0001", f"this expression nests more than {MAX_DEPTH} levels deep",
                          builder.too_deep, help="split it into smaller expressions"))
    if late:
        raise CompileError(late, {path: source})
    return file


def _normalise(source: str) -> str:
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    if text.startswith("\ufeff"):
        text = " " + text[1:]       # same length: columns on line 1 stay put
    return text


# After a syntax error the statement holding it is blanked out (its lines
# replaced by spaces, so every position stays put) and the file parsed again,
# so that the errors of other statements are reported too (LANGUAGE.md
# section 8: every independent error). Only a statement that can be taken out
# cleanly is: from the error's line, inside a body at bracket depth 0 (counted
# as `_Brackets` does), with no `{` or `}` and no `model` or `block` header, to
# the end of its `->` continuation lines and of any `( )` or `[ ]` it opens
# (the lines of its chain above parsed: they stay). An error at or before the
# statement taken out ends the search, as do MAX_SYNTAX_ERRORS errors and
# RECOVERY_CHARS characters parsed in all (lark parses about 100 KB a second);
# the end of the file is reported where it is and ends it too.

MAX_SYNTAX_ERRORS = 20
RECOVERY_CHARS = 400_000


def _syntax_error(e: Exception, text: str, path: str) -> Diagnostic:
    if isinstance(e, UnexpectedCharacters):
        return _bad_character(e, text, path)
    if isinstance(e, UnexpectedToken):
        return _unexpected_token(e, text, path)
    return error("E0001", f"a number with {len(e.token)} digits is too long", _token_span(e.token, path),
                 help=f"numbers have at most {MAX_DIGITS} digits")


def _code(line: str) -> str:
    return line.split("#", 1)[0]


def _depth(code: str, depth: int) -> int:
    """The `( [` depth after a line's code, from `depth` before it; a closer
    with nothing open counts nothing (as in `_Brackets`)."""
    for ch in code:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
    return depth


def _offset(text: str, line: int) -> int:
    """The index in `text` where `line` (from 1) starts."""
    offset = 0
    for _ in range(line - 1):
        offset = text.index("\n", offset) + 1
    return offset


def _statement_lines(text: str, diag: Diagnostic) -> tuple[int, int] | None:
    """The first and last line (from 1) of the statement holding `diag`, when
    it can be blanked out cleanly (above), else None."""
    if diag.code == "E0002":
        return None
    codes = [_code(line) for line in text.split("\n")]
    at = diag.span.line
    depth = braces = 0
    for code in codes[:at - 1]:
        depth = _depth(code, depth)
        braces += code.count("{") - code.count("}")
    if depth or braces < 1 or codes[at - 1].lstrip().startswith(("model", "block")):
        return None                 # inside a bracket opened above, outside every body, or a header
    following = [""] * (len(codes) + 1)      # the next line with code after each line, stripped
    for i in range(len(codes) - 1, -1, -1):
        following[i] = codes[i + 1].strip() if i + 1 < len(codes) and codes[i + 1].strip() else following[i + 1]
    for last in range(at, len(codes) + 1):
        code = codes[last - 1]
        if "{" in code or "}" in code:
            return None
        depth = _depth(code, depth)
        if depth == 0 and not following[last - 1].startswith("->"):
            return None if following[last - 1].startswith("{") else (at, last)     # `{`: a header's body
    return None


def _blanked(text: str, first: int, last: int) -> str:
    lines = text.split("\n")
    for i in range(first - 1, last):
        lines[i] = " " * len(lines[i])
    return "\n".join(lines)


# ---------------------------------------------------------------- the parser

class _NumberTooLong(Exception):
    """Raised by the post-lexer; `parse` turns it into a diagnostic."""

    def __init__(self, token: Token):
        super().__init__(str(token))
        self.token = token


# Brackets by lark's terminal names. Line breaks are free inside `( )` and `[ ]`.
_CLOSING = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_OPENING = {closer: opener for opener, closer in _CLOSING.items()}
_OPENERS = frozenset(_CLOSING)
_CLOSERS = frozenset(_OPENING)
_LINES_FREE_OPEN = frozenset({"LPAR", "LSQB"})
_LINES_FREE_CLOSE = frozenset({"RPAR", "RSQB"})


class _Brackets:
    """Post-lexer: drop line breaks inside `( )` and `[ ]`; refuse huge numbers.

    `_NL` is always accepted by the contextual lexer, so a line break inside
    brackets is lexed and then dropped here. `->` is always accepted too, so
    that `dense(3 -> relu` reads `->` (and reports a missing `)`) instead of
    a minus sign followed by a stray `>`.
    """

    always_accept = ("_NL", "_ARROW")

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        for token in stream:
            if token.type in _LINES_FREE_OPEN:
                depth += 1
            elif token.type in _LINES_FREE_CLOSE:
                depth = max(0, depth - 1)
            elif token.type == "_NL" and depth > 0:
                continue
            elif token.type == "INT" and len(token) > MAX_DIGITS:
                raise _NumberTooLong(token)
            yield token


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("nnc.grammar").joinpath("nn.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", postlex=_Brackets(),
                propagate_positions=True, maybe_placeholders=True)


# ---------------------------------------------------------------- tree -> AST

def _token_span(token: Token, path: str) -> Span:
    return Span(path, token.line, token.column, token.end_line, token.end_column)


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Build `ast` nodes from the parse tree. Checks nothing, raises nothing.

    Non-recursive, so a pathologically deep tree cannot overflow the stack.
    It notes the first expression deeper than MAX_DEPTH in `too_deep`, and
    every positional argument after a keyword one in `late_positional`, for
    `parse` to refuse.
    """

    def __init__(self, path: str, source: str):
        super().__init__(visit_tokens=False)
        self.path = path
        self.source = source
        self.too_deep: Span | None = None
        self.late_positional: list[Span] = []     # `dense(bias=false, 3)`: LANGUAGE.md 4 puts positional ones first
        # The height of every compound expression built so far, by id: the
        # tree under construction keeps them all alive, so ids are unique.
        self._heights: dict[int, int] = {}

    def _compound(self, node, operands):
        """Record the height of a new compound expression node; return it."""
        height = 1 + max(self._heights.get(id(x), 1) for x in operands)
        self._heights[id(node)] = height
        if height > MAX_DEPTH and self.too_deep is None:
            self.too_deep = node.span
        return node

    def _span(self, meta) -> Span:
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, token: Token) -> Span:
        return _token_span(token, self.path)

    # ------------------------------------------------------------ definitions

    def start(self, meta, children) -> ast.File:
        models = tuple(c for c in children if isinstance(c, ast.Model))
        blocks = tuple(c for c in children if isinstance(c, ast.Block))
        return ast.File(self.path, self.source, models, blocks)

    def model(self, meta, children) -> ast.Model:
        name, *inputs, body = children
        return ast.Model(str(name), self._tspan(name), tuple(inputs), body, self._span(meta))

    def input(self, meta, children) -> ast.Input:
        name, type_, *dims = children
        if type_ is None:
            return ast.Input(str(name), tuple(dims), self._span(meta))
        return ast.Input(str(name), tuple(dims), self._span(meta), str(type_), self._tspan(type_))

    def input_type(self, meta, children) -> Token:
        (token,) = children
        return token

    def dim_size(self, meta, children) -> ast.Dim:
        (size,) = children
        return ast.Dim(int(size), None, None, self._span(meta))

    def dim_name(self, meta, children) -> ast.Dim:
        (name,) = children
        return ast.Dim(None, str(name), None, self._span(meta))

    def dim_bound(self, meta, children) -> ast.Dim:
        name, bound = children
        return ast.Dim(None, str(name), int(bound), self._span(meta))

    def block(self, meta, children) -> ast.Block:
        name, params, *inputs, body = children
        return ast.Block(str(name), self._tspan(name), params, tuple(inputs), body, self._span(meta))

    def params(self, meta, children) -> tuple[ast.Param, ...]:
        return tuple(c for c in children if c is not None)

    def param(self, meta, children) -> ast.Param:
        name, default = children
        return ast.Param(str(name), default, self._span(meta))

    def body(self, meta, children) -> tuple[ast.Statement, ...]:
        return tuple(c for c in children if c is not None)

    # ------------------------------------------------------------ statements

    def assign(self, meta, children) -> ast.Assign:
        targets, chain = children
        return ast.Assign(targets or (), chain, self._span(meta))

    def targets(self, meta, children) -> tuple[ast.Name, ...]:
        return tuple(children)

    def return_(self, meta, children) -> ast.Return:
        return ast.Return(tuple(children), self._span(meta))

    def chain(self, meta, children) -> ast.Chain:
        return ast.Chain(tuple(children), self._span(meta))

    def element(self, meta, children) -> ast.Element:
        label, op, args, inputs = children
        return ast.Element(label, str(op), self._tspan(op), args, inputs, self._span(meta))

    def label(self, meta, children) -> ast.Label:
        return ast.Label(tuple(str(c) for c in children), self._span(meta))

    def arguments(self, meta, children) -> tuple[ast.Arg, ...]:
        args = tuple(c for c in children if c is not None)
        keyword = False
        for a in args:
            if a.name is None and keyword:
                self.late_positional.append(a.span)
            keyword = keyword or a.name is not None
        return args

    def positional(self, meta, children) -> ast.Arg:
        (value,) = children
        return ast.Arg(None, value, self._span(meta))

    def keyword(self, meta, children) -> ast.Arg:
        name, value = children
        return ast.Arg(str(name), value, self._span(meta))

    def inputs(self, meta, children) -> tuple[ast.Name, ...]:
        return tuple(children)

    def name(self, meta, children) -> ast.Name:
        (token,) = children
        return ast.Name(str(token), self._span(meta))

    # ------------------------------------------------------------ expressions

    def binop(self, meta, children) -> ast.BinOp:
        left, op, right = children
        return self._compound(ast.BinOp(str(op), left, right, self._span(meta)), (left, right))

    def neg(self, meta, children) -> ast.Neg:
        _minus, operand = children
        return self._compound(ast.Neg(operand, self._span(meta)), (operand,))

    def int_literal(self, meta, children) -> ast.Num:
        (token,) = children
        return ast.Num(int(token), self._span(meta))

    def float_literal(self, meta, children) -> ast.Num:
        (token,) = children
        return ast.Num(float(token), self._span(meta))

    def true(self, meta, children) -> ast.Bool:
        return ast.Bool(True, self._span(meta))

    def false(self, meta, children) -> ast.Bool:
        return ast.Bool(False, self._span(meta))

    def word(self, meta, children) -> ast.Word:
        (token,) = children
        return ast.Word(str(token), self._span(meta))

    def var(self, meta, children) -> ast.Name:
        (token,) = children
        return ast.Name(str(token), self._span(meta))

    def shape_ref(self, meta, children) -> ast.ShapeRef:
        value, index = children
        return self._compound(ast.ShapeRef(str(value), index, self._span(meta)), (index,))

    def tuple_expr(self, meta, children) -> ast.TupleExpr:
        return self._compound(ast.TupleExpr(tuple(children), self._span(meta)), children)


# ---------------------------------------------------------------- syntax errors

# Plain words for lark's terminal names, in the order a message lists them
# ("expected `)` or `,`").
_WORDS = {
    "RPAR": "`)`", "RSQB": "`]`", "RBRACE": "`}`",
    "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`", "DOT": "`.`",
    "_ARROW": "`->`", "LPAR": "`(`", "LSQB": "`[`", "LBRACE": "`{`",
    "_MODEL": "`model`", "_BLOCK": "`block`", "_RETURN": "`return`", "_SHAPE": "`shape`",
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number",
    "TRUE": "`true`", "FALSE": "`false`", "SAME": "`same`", "VALID": "`valid`", "CAUSAL": "`causal`",
    "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`", "DSLASH": "`//`",
    "_NL": "end of line", "$END": "end of file",
}

_KEYWORDS = frozenset({"_MODEL", "_BLOCK", "_RETURN", "TRUE", "FALSE", "SAME", "VALID", "CAUSAL"})
_EXPRESSION_START = frozenset({"INT", "FLOAT", "NAME", "LPAR", "MINUS",
                               "TRUE", "FALSE", "SAME", "VALID", "CAUSAL"})
_STATEMENT_START = frozenset({"NAME", "INT", "_RETURN"})
_OPERATORS = frozenset({"PLUS", "MINUS", "STAR", "DSLASH"})
# After these a new chain starts, so a `->` there has nothing to continue.
_CHAIN_STARTS_AFTER = frozenset({"_NL", "LBRACE", "RBRACE", "EQUAL", "_RETURN", "COMMA"})


class _Context:
    """What the parser had read when it stopped, from the value stack of
    lark's LALR parser: the item just before, and the brackets still open."""

    def __init__(self, value_stack: list, text: str):
        self.stack = value_stack
        self.text = text
        self.previous = value_stack[-1] if value_stack else None
        self.open: list[int] = []       # stack indices of unclosed `(`, `[`, `{`
        for i, item in enumerate(value_stack):
            if not isinstance(item, Token):
                continue
            if item.type in _OPENERS:
                self.open.append(i)
            elif item.type in _CLOSERS and self.open and _OPENING[item.type] == value_stack[self.open[-1]].type:
                self.open.pop()

    @property
    def previous_type(self) -> str | None:
        return self.previous.type if isinstance(self.previous, Token) else None

    def previous_text(self) -> str | None:
        """The source text just before, when it is short enough to quote."""
        item = self.previous
        if isinstance(item, Token):
            return None if item.type == "_NL" else item.value
        if isinstance(item, Tree) and not item.meta.empty:
            text = self.text[item.meta.start_pos:item.meta.end_pos]
            return text if "\n" not in text and len(text) <= 24 else None
        return None

    def previous_end(self) -> tuple[int, int] | None:
        """(line, column) just after the item before, unless that was a line break."""
        item = self.previous
        if isinstance(item, Token) and item.type != "_NL":
            return item.end_line, item.end_column
        if isinstance(item, Tree) and not item.meta.empty:
            return item.meta.end_line, item.meta.end_column
        return None

    def label_before(self, token: Token) -> str:
        """The dotted label written just before `token` on its line."""
        line = self.text.split("\n")[token.line - 1][:token.column - 1]
        return re.search(r"[A-Za-z0-9_.]*$", line.rstrip()).group()

    def is_open(self, opener_type: str) -> bool:
        return any(self.stack[i].type == opener_type for i in self.open)

    def innermost_open(self) -> Token | None:
        return self.stack[self.open[-1]] if self.open else None

    def closable(self, accepts: set[str]) -> Token | None:
        """The innermost open `(` or `[`, if its closer could come next."""
        opener = self.innermost_open()
        if opener is not None and opener.type != "LBRACE" and _CLOSING[opener.type] in accepts:
            return opener
        return None

    def definition(self) -> str | None:
        """`model `m`` or `block `b``: the definition whose body is open, if any."""
        for i in reversed(self.open):
            if self.stack[i].type != "LBRACE":
                continue
            for j in range(i - 1, -1, -1):
                item = self.stack[j]
                if isinstance(item, Token) and item.type in ("_MODEL", "_BLOCK"):
                    return f"{item.value} `{self.stack[j + 1]}`"
        return None


def _expected_words(accepts: set[str], context: _Context) -> list[str]:
    """What the parser could have accepted, as a short list of plain words.

    Groups collapse ("a statement", "an expression"). Alternatives that are
    legal but never what the writer meant are left out when others remain:
    operators, the end of the file, a `.` that would go on with a label or
    a shape reference, a `,` between targets where a label may end, a blank
    line where a line starts, `}` where the line could end, and a second
    `(...)` group after `)`.
    """
    expected = set(accepts)
    words: list[str] = []
    if _STATEMENT_START <= expected:
        expected -= _STATEMENT_START
        words.append("a statement")
    elif _EXPRESSION_START <= expected:
        expected -= _EXPRESSION_START
        words.append("an expression")
    elif expected == {"NAME", "INT"} and context.previous_type != "DOT":
        expected.clear()
        opener = context.innermost_open()
        if opener is not None and opener.type == "LSQB":      # an input's shape: `x: [4, T]`
            words.append("a dimension (a size or a name)")
        else:
            words.append("a step" if context.previous_type == "_ARROW" else "a value or a step")
    optional = set(_OPERATORS) | {"$END", "DOT"}
    if "COLON" in expected:
        optional.add("COMMA")       # `a, b = ...` is rarer than `label: op` here
    if context.previous_type in (None, "_NL", "LBRACE"):
        optional.add("_NL")
    if "_NL" in expected:
        optional.add("RBRACE")
    if context.previous_type == "RPAR":
        optional.add("LPAR")
    if words or expected - optional:
        expected -= optional
    return words + [w for key, w in _WORDS.items() if key in expected]


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def _quote(text: str) -> str:
    if len(text) > 24:
        text = text[:23] + "…"
    return f"`{text}`"


def _describe(token: Token) -> str:
    if token.type in ("_NL", "$END"):
        return _WORDS[token.type]
    if token.type in _KEYWORDS:
        return f"the keyword {_quote(token.value)}"
    return _quote(token.value)


def _after(context: _Context) -> str:
    text = context.previous_text()
    return f" after {_quote(text)}" if text else ""


def _at(token: Token) -> str:
    return f"line {token.line}, column {token.column}"


def _close_help(opener: Token) -> str:
    return f"add {_WORDS[_CLOSING[opener.type]]} to close the `{opener.value}` at {_at(opener)}"


def _unexpected_token(e: UnexpectedToken, text: str, path: str) -> Diagnostic:
    context = _Context(e.state.value_stack, text)
    accepts = e.interactive_parser.accepts()
    if e.token.type == "$END":
        return _unexpected_end(accepts, context, text, path)
    return _unexpected(e.token, accepts, context, path)


def _unexpected(found: Token, accepts: set[str], context: _Context, path: str) -> Diagnostic:
    """E0001 for a token the parser cannot take here, with help for the common slips."""
    span = _token_span(found, path)
    found_text = _describe(found)
    opener = context.closable(accepts)

    if found.type == "_ARROW" and (context.previous is None
                                   or context.previous_type in _CHAIN_STARTS_AFTER):
        return error("E0001", "`->` with no step before it", span,
                     help="a line that starts with `->` continues the chain of the line before it; "
                          "start the chain with a value or a step")
    if found.type in _CLOSERS and opener is None and not context.is_open(_OPENING[found.type]):
        opening = _WORDS[_OPENING[found.type]]
        return error("E0001", f"unmatched `{found.value}`", span,
                     help=f"remove it, or add the {opening} it closes")
    if accepts == {"COLON"} and context.previous_type == "NAME":
        # Only a model input's name must be followed by exactly `:`.
        name = context.previous.value
        return error("E0001", f"expected `:` after the input name `{name}`, found {found_text}", span,
                     help=f"declare an input with its shape: `{name}: [...]`")

    end = context.previous_end()
    if opener is not None and end is not None and found.line > end[0]:
        # Line breaks inside brackets are skipped, so the mistake is at the end
        # of the line before rather than at the next line's first token.
        span = Span.point(path, *end)
        found_text += f" on line {found.line}"
    message = f"expected {_join(_expected_words(accepts, context))}{_after(context)}, found {found_text}"
    return error("E0001", message, span, help=_help(found, accepts, context))


def _help(found: Token, accepts: set[str], context: _Context) -> str | None:
    if found.type in _KEYWORDS and "NAME" in accepts:
        return f"`{found.value}` is a keyword and cannot be used as a name"
    if accepts == {"LPAR"} and context.previous_type == "RPAR":
        return "a block lists its inputs after its parameters: `block b(c)(x)`"
    if found.type == "NAME" and "COLON" in accepts and context.previous_type in ("NAME", "INT"):
        return f"a label is followed by `:`, as in `{context.label_before(found)}: {found.value}`"
    if found.type in ("NAME", "INT") and "_ARROW" in accepts and "_NL" in accepts:
        return "join the steps of a chain with `->`, or put each on its own line"
    if found.type == "_NL" and context.previous_type == "_ARROW" and _next_code_line(context.text, found.line)[:1] \
            not in ("", "}"):
        return "a chain goes on to the next line when that line starts with `->`: move the `->` there"
    if found.type in ("RPAR", "RSQB") and context.previous_type == "COMMA":
        return "remove the `,` before it"
    end = context.previous_end()
    inner = context.innermost_open()
    if found.type == "LPAR" and context.previous_type == "NAME" and end == (found.line, found.column) \
            and inner is not None and inner.type == "LPAR" and context.definition() is not None:
        return (f"`{context.previous.value}(...)` cannot stand inside an argument list: "
                f"compute it as a step of its own (`v = ... -> {context.previous.value}(...)`), then pass `v`")
    opener = context.closable(accepts)
    if opener is None:
        return None
    end = context.previous_end()
    if end == (found.line, found.column) and found.type in ("NAME", "INT", "FLOAT"):
        return None     # glued to the token before: a mistyped word, not a missing bracket
    spaced_on_same_line = end is not None and found.line == end[0]
    if found.type in _EXPRESSION_START and "COMMA" in accepts and spaced_on_same_line:
        return "separate the items with `,`"
    return _close_help(opener)


def _next_code_line(text: str, line: int) -> str:
    """The first line after `line` (counting from 1) that holds code, stripped; "" at the end."""
    for rest in text.split("\n")[line:]:
        code = _code(rest).strip()
        if code:
            return code
    return ""


def _unexpected_end(accepts: set[str], context: _Context, text: str, path: str) -> Diagnostic:
    """E0002 at the end of the last line that is not blank."""
    span = _end_of_text(text, path)
    opener = context.innermost_open()
    definition = context.definition()
    if "RBRACE" in accepts and opener is not None and opener.type == "LBRACE" and definition:
        return error("E0002", f"the file ends inside {definition}: expected `}}`", span,
                     help=_close_help(opener))
    message = f"unexpected end of file: expected {_join(_expected_words(accepts, context))}{_after(context)}"
    closable = context.closable(accepts)
    help = _close_help(closable) if closable is not None else None
    return error("E0002", message, span, help=help)


def _end_of_text(text: str, path: str) -> Span:
    """A point just after the last character of the file that is not blank."""
    lines = text.rstrip().split("\n")
    return Span.point(path, len(lines), len(lines[-1]) + 1)


def _bad_character(e: UnexpectedCharacters, text: str, path: str) -> Diagnostic:
    char = text[e.pos_in_stream]
    if char.isprintable() and not char.isspace():
        shown = f"`{char}`"
    else:
        shown = f"U+{ord(char):04X} ({unicodedata.name(char, 'a control character').lower()})"
    return error("E0003", f"unexpected character {shown}", Span.point(path, e.line, e.column),
                 help=_character_help(char))


def _character_help(char: str) -> str | None:
    if char == "/":
        return "integer division is written `//`"
    if char == ";":
        return "a statement ends at the end of its line: remove the `;`"
    if char in "\"'":
        return "the language has no strings"
    if char.isspace():
        return "replace it with a plain space"
    if char.isalpha():
        return "names are made of ASCII letters, digits and `_`"
    return None
