"""AST -> IR: resolve names, expand blocks, evaluate arguments, infer shapes.

In:  an `ast.File` from `parse.py`, and optional bounds for named dimensions.
Out: an `ir.Graph` whose every node has a full label, resolved arguments, an
     output shape, its parameters and its MAC count; or a `CompileError`
     listing every independent problem.

How it works:
1. Check the file's structure: one `model`, unique block names, no block that
   calls itself (directly or through others).
2. Walk the model's statements in order with a `Scope` (the values in scope,
   the chain's current value, the label prefix, the automatic-label counters).
   Each chain element is a value name, a merge, a block call or an op step;
   which one is decided here, where the names in scope are known.
3. An op step binds its arguments to the catalog entry (`ops.py`), resolves
   them against the input shapes and infers the output shape. A block call
   walks the block's body in a child scope whose labels are prefixed by the
   call's label.
4. One cause gives one error: a step that fails yields a *poisoned* value.
   A step that consumes a poisoned value has no input shape: only what does
   not need one is checked (its op name and arguments), so independent
   mistakes further down a chain are still reported, and nothing cascades.
5. Sizes are checked against `memory.Limits` (one tensor, the weights'
   total) wherever every named dimension has a bound, and every size must be
   at least 1 at the bounds: E0208 and E0201 come from `nnc check`, before
   anything is allocated. Numbers beyond `MAX_NUMBER` are refused (E0306),
   block calls nest at most `MAX_BLOCK_DEPTH` deep and a model expands to at
   most `MAX_STEPS` steps (E0115), so no input can exhaust the stack or hang.
6. Values bound but never read are reported as warnings.

Shape inference therefore happens while lowering: `x.shape[0]` in an argument
needs the shapes of the values before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from . import ast
from .diagnostics import Sink, Span, did_you_mean, error, warning
from .dims import Dim, Sym, SymbolicError, format_shape, try_evaluate
from .ir import Graph, Input, Node, Output
from .memory import FLOAT_BYTES, Limits, format_bytes
from .ops import CATALOG, MAX_SIZE, REQUIRED, WORDS, ArgError, Kind, OpSpec, Role, ShapeError, coerce_arg

# Integer values (an `int[...]` input) pass only these ops and must reach `embedding` (LANGUAGE.md section 9).
INTEGER_PASSES = frozenset({"slice", "select", "reshape", "transpose", "flatten"})
INTEGER_READERS = frozenset({"embedding"})
ON_NUMBERS = frozenset({"add", "sub", "mul", "div", "dropout", "identity", "reshape"})   # besides activations: ops
# that take a value of one number per example (a reduction over every axis)

# Block calls nested deeper are refused (E0115): lowering walks them recursively.
MAX_BLOCK_DEPTH = 64
# A model that expands (through blocks) to more steps is refused (E0115).
MAX_STEPS = 100_000
# Axes of one example's value (32 with the batch axis): well within NumPy's
# 64, leaving room for the axes kernels add (windows, broadcasting).
MAX_RANK = 31
# Integers beyond this in an argument expression are refused (E0306).
MAX_NUMBER = 1 << 63


class _Poison:
    """The value of a step that failed: consumers are skipped without a new error."""

    def __repr__(self) -> str:
        return "<poison>"


POISON = _Poison()


@dataclass(eq=False)
class Binding:
    """A value reachable by name or as the chain's current value."""

    value: str | _Poison           # the IR value name, or POISON
    span: Span                     # where it was bound (for the unused warning)
    name: str | None               # the source name, None for an unnamed statement value
    used: bool = False


@dataclass
class Scope:
    prefix: str                                  # label prefix: "" or "layer1.0."
    names: dict[str, Binding] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)    # block parameters and dim names
    current: list[Binding] | None = None         # the previous statement's value(s)
    counters: dict[str, int] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)  # every binding, for warnings
    call_note: str | None = None                 # "in `layer1.0: basic(64)` at line 30"

    def auto_label(self, op: str) -> str:
        k = self.counters.get(op, 0)
        self.counters[op] = k + 1
        return f"{op}_{k}"


class Lowerer:
    def __init__(self, file: ast.File, bounds: Mapping[str, int] | None, sink: Sink,
                 limits: Limits | None = None):
        self.file = file
        self.sink = sink
        self.cli_bounds = dict(bounds or {})
        self.limits = limits or Limits()
        self.bounds: dict[str, int] = {}      # every bound known, once the model's inputs are read
        self.depth = 0                        # block calls being lowered, nested
        self.weights_bytes = 0
        self.weights_reported = False
        self.too_many_steps = False
        self.blocks: dict[str, ast.Block] = {}
        self.nodes: list[Node] = []
        self.shapes: dict[str, tuple] = {}
        self.integer: dict[str, str] = {}     # integer value -> the model input it comes from
        self.label_spans: dict[str, Span] = {}
        self.duplicates: set[tuple[str, Span]] = set()   # (label, span) already reported as E0106
        self.recursive: set[str] = set()
        self.lowered: set[str] = set()        # blocks whose body some call has lowered
        self.stack: list[str] = []

    # ------------------------------------------------------------ diagnostics

    def err(self, code: str, message: str, span: Span, scope: Scope | None = None, *,
            help: str | None = None, notes: tuple[str, ...] = ()) -> None:
        if scope is not None and scope.call_note:
            notes = notes + (scope.call_note,)
        self.sink.add(error(code, message, span, help=help, notes=notes))

    # ------------------------------------------------------------ structure

    def run(self) -> Graph | None:
        f = self.file
        for b in f.blocks:
            if b.name in self.blocks:
                first = self.blocks[b.name].name_span
                self.err("E0103", f"block `{b.name}` is defined twice", b.name_span,
                         notes=(f"first defined at line {first.line}",))
            elif b.name in CATALOG:
                self.err("E0103", f"block `{b.name}` has the name of a built-in op", b.name_span,
                         help="rename the block")
            else:
                self.blocks[b.name] = b
            for kind, items in (("parameter", b.params), ("input", b.inputs)):
                seen: set[str] = set()
                for item in items:
                    if item.name in seen:
                        self.err("E0109", f"block `{b.name}` declares the {kind} `{item.name}` twice", item.span)
                    seen.add(item.name)
        self._check_recursion()
        if not f.models:
            self.err("E0101", "the file has no `model`", Span(f.path, 1, 1, 1, 1),
                     help="add `model NAME(x: [...]) { ... }`")
            return None
        for extra in f.models[1:]:
            self.err("E0102", f"a second `model` (`{extra.name}`): a file holds exactly one",
                     extra.name_span, notes=(f"the first is `{f.models[0].name}` at line {f.models[0].span.line}",),
                     help="move it into a file of its own, or make it a `block`")
        return self._lower_model(f.models[0])

    def _check_recursion(self) -> None:
        calls: dict[str, list[tuple[str, Span]]] = {}
        for name, b in self.blocks.items():
            calls[name] = [(e.op, e.op_span) for stmt in b.body for chain in _chains(stmt)
                           for e in chain.elements if e.op in self.blocks]
        for name in self.blocks:
            # depth-first search for a path back to `name`
            seen: set[str] = set()
            todo = [(callee, span, [name, callee]) for callee, span in calls[name]]
            while todo:
                callee, span, path = todo.pop()
                if callee == name:
                    self.recursive.add(name)
                    if not (set(path[:-1]) & (self.recursive - {name})):
                        self.err("E0107", f"block `{name}` calls itself: " + " -> ".join(f"`{p}`" for p in path),
                                 self._first_call_span(name, path[1]),
                                 help="blocks cannot recurse: write the repeated steps out, or call the block "
                                      "several times from the model")
                    break
                if callee in seen:
                    continue
                seen.add(callee)
                todo.extend((c, s, path + [c]) for c, s in calls.get(callee, []))

    def _first_call_span(self, block: str, callee: str) -> Span:
        for stmt in self.blocks[block].body:
            for chain in _chains(stmt):
                for e in chain.elements:
                    if e.op == callee:
                        return e.op_span
        return self.blocks[block].name_span

    # ------------------------------------------------------------ the model

    def _lower_model(self, m: ast.Model) -> Graph | None:
        scope = Scope(prefix="")
        inputs: list[Input] = []
        bounds: dict[str, int] = {}
        dim_spans: dict[str, Span] = {}
        for inp in m.inputs:
            shape: list[Dim] = []
            for d in inp.dims:
                if d.name is None:
                    if d.size is None or d.size <= 0:
                        self.err("E0207", f"a dimension of `{inp.name}` is {d.size}: sizes must be positive", d.span)
                    elif d.size > MAX_SIZE:
                        self.err("E0207", f"a dimension of `{inp.name}` is {_number_text(d.size)}: sizes are at most "
                                 f"{MAX_SIZE:,}", d.span)
                    shape.append(d.size if d.size and d.size <= MAX_SIZE else 1)
                    continue
                shape.append(Sym.var(d.name))
                dim_spans.setdefault(d.name, d.span)
                if d.bound is not None:
                    if d.bound <= 0:
                        self.err("E0207", f"the bound of `{d.name}` must be positive, got {d.bound}", d.span)
                    elif d.bound > MAX_SIZE:
                        self.err("E0207", f"the bound of `{d.name}` is {_number_text(d.bound)}: bounds are at most "
                                 f"{MAX_SIZE:,}", d.span)
                    elif d.name in bounds and bounds[d.name] != d.bound:
                        self.err("E0207", f"`{d.name}` has two different bounds, {bounds[d.name]} and {d.bound}",
                                 d.span)
                    else:
                        bounds[d.name] = d.bound
                scope.params[d.name] = Sym.var(d.name)
            if inp.name in scope.names:
                self.err("E0109", f"model input `{inp.name}` is declared twice", inp.span)
                continue
            dtype = "float32"
            if inp.type is not None:
                if inp.type == "int":
                    dtype = "int32"
                    self.integer[inp.name] = inp.name
                else:
                    self.err("E0209", f"unknown input type `{inp.type}`", inp.type_span or inp.span,
                             help="write `int[...]` for integer indices, or `[...]` for numbers")
            b = Binding(inp.name, inp.span, inp.name)
            scope.names[inp.name] = b
            scope.bindings.append(b)
            inputs.append(Input(inp.name, tuple(shape), inp.span, dtype))
            self.shapes[inp.name] = tuple(shape)
        for name, value in self.cli_bounds.items():
            if name not in dim_spans:
                known = ", ".join(f"`{n}`" for n in dim_spans) or "none"
                self.err("E0207", f"`--dim {name}={value}` names no input dimension (named dimensions: {known})",
                         m.name_span)
            elif value <= 0:
                self.err("E0207", f"`--dim {name}={value}`: a bound must be positive", m.name_span)
            elif value > MAX_SIZE:
                self.err("E0207", f"`--dim {name}={_number_text(value)}`: bounds are at most {MAX_SIZE:,}",
                         m.name_span)
            else:
                bounds[name] = value
        self.bounds = bounds
        for i in inputs:
            if not self._fits(f"input `{i.name}`", i.shape, i.span, None):
                scope.names[i.name].value = POISON      # one cause, one error: its steps are not checked
        if inputs:
            scope.current = [scope.names[inputs[0].name]]
        results = self._body(m.body, scope, m.span)
        self._warn_unused(scope, results)
        self._check_unlowered()
        outputs = self._outputs(m, results)
        names = list(dim_spans)
        return Graph(name=m.name, inputs=tuple(inputs), nodes=tuple(self.nodes), outputs=tuple(outputs),
                     bounds=bounds, time_dim=names[0] if len(names) == 1 else None, path=self.file.path)

    def _check_unlowered(self) -> None:
        """Check the body of every block no call lowered (one the model never
        calls, or calls only after an error): LANGUAGE.md 8 reports every
        error, so its unknown ops, arguments and names are errors too. Its
        inputs and parameters have no value here, so only what needs no shape
        is checked, as after an error in a chain; it adds no steps."""
        for name, block in self.blocks.items():
            if name in self.lowered or name in self.recursive:
                continue
            scope = Scope(prefix=f"{name}.", params={p.name: POISON for p in block.params},
                          call_note=f"in block `{name}`, which the model does not run")
            for formal in block.inputs:
                b = Binding(POISON, formal.span, formal.name, True)
                scope.names[formal.name] = b
                scope.bindings.append(b)
            scope.current = [scope.names[block.inputs[0].name]] if block.inputs else None
            self._body(block.body, scope, block.span)

    def _outputs(self, m: ast.Model, results: list[tuple[Binding, ast.Chain | None]]) -> list[Output]:
        outputs: list[Output] = []
        taken: set[str] = set()
        single = len(results) == 1
        for i, (b, chain) in enumerate(results):
            if b.value is POISON:
                continue
            plain = chain is not None and _plain_name(chain)
            name = plain if plain and b.name == plain else ("out" if single else f"out{i}")
            base, k = name, 1
            while name in taken:
                name, k = f"{base}_{k}", k + 1
            taken.add(name)
            outputs.append(Output(name, b.value, chain.span if chain else m.span))
        return outputs

    # ------------------------------------------------------------ statements

    def _body(self, body: tuple, scope: Scope, span: Span) -> list[tuple[Binding, ast.Chain | None]]:
        """Run the statements; return the result values with the chains that made them."""
        returned: list[tuple[Binding, ast.Chain | None]] | None = None
        last: list[tuple[Binding, ast.Chain | None]] = []
        for stmt in body:
            if returned is not None:
                self.err("E0113", "a statement after `return` is never run", stmt.span, scope,
                         help="move `return` to the end")
                break
            if isinstance(stmt, ast.Return):
                returned = []
                for chain in stmt.values:
                    vals = self._chain(chain, scope, returned=True)
                    if vals is None:
                        returned.append((Binding(POISON, chain.span, None, True), chain))
                        continue
                    for v in vals:
                        v.used = True
                        returned.append((v, chain))
                continue
            vals = self._chain(stmt.chain, scope)
            if stmt.targets:
                if vals is not None and len(vals) != len(stmt.targets):
                    self.err("E0110", f"{len(stmt.targets)} names for {len(vals)} "
                             f"value{'s' if len(vals) != 1 else ''}", stmt.span, scope,
                             help=f"write {len(vals)} name{'s' if len(vals) != 1 else ''} before `=`")
                    vals = None
                bound: list[Binding] = []
                for i, t in enumerate(stmt.targets):
                    v = vals[i].value if vals is not None else POISON
                    b = Binding(v, t.span, t.name)
                    scope.names[t.name] = b
                    scope.bindings.append(b)
                    bound.append(b)
                scope.current = bound
            else:
                if vals is None:
                    scope.current = [Binding(POISON, stmt.span, None, True)]
                else:
                    fresh = []
                    for v in vals:
                        # an unnamed statement value: used if the next statement continues from it
                        nb = Binding(v.value, stmt.chain.span, None) if v.name is not None else v
                        if nb is not v:
                            nb.used = True  # a plain `x` statement re-reads a named value; no new warning
                        fresh.append(nb)
                    scope.bindings.extend(b for b in fresh if b.name is None)
                    scope.current = fresh
            last = [(b, stmt.chain) for b in scope.current]
        if returned is not None:
            return returned
        for b, _ in last:
            b.used = True
        if not body:
            self.err("E0114", "an empty body: nothing to compute", span, scope,
                     help="add at least one statement")
        # without `return` the outputs are unnamed ("out")
        return [(b, None) for b, _ in last]

    def _warn_unused(self, scope: Scope, results) -> None:
        for b in scope.bindings:
            if b.used or b.value is POISON:
                continue
            if b.name is None:
                self.sink.add(warning("W0001", "the value of this statement is never used", b.span,
                                      help="name it and use it, or remove the statement"))
            elif not b.name.startswith("_"):   # `_name` says "unused on purpose"
                self.sink.add(warning("W0001", f"`{b.name}` is never used", b.span,
                                      help="remove it, or start its name with `_` to keep it"))

    # ------------------------------------------------------------ chains

    def _chain(self, chain: ast.Chain, scope: Scope, returned: bool = False) -> list[Binding] | None:
        """The value(s) of a chain, or None when it failed (already reported).
        A bare name that is returned or starts a longer chain (`return y`,
        `y -> relu`) is read as a value: unknown, it is an undefined name."""
        elements = list(chain.elements)
        first = elements[0]
        vals = self._source(first, scope, as_value=returned or len(elements) > 1)
        for e in elements[1:]:
            if vals is None:
                # An earlier step failed: this one has no input shape, but its
                # op and arguments can still be checked (independent errors).
                self._check_unknown(e, scope)
                continue
            if len(vals) != 1:
                self.err("E0110", f"the chain continues from {len(vals)} values", e.span, scope,
                         help="bind them first: `a, b = ...`, then continue from one")
                vals = None
                continue
            vals = self._step(e, vals[0], scope)
        return vals

    def _check_unknown(self, e: ast.Element, scope: Scope, as_value: bool = False) -> None:
        """Check a step whose input failed: what needs no input shape
        (`as_value`: a bare name is read as a value, as `_source` says)."""
        self._claim(e, scope)
        if e.args is None and e.label is None and e.op in scope.names and e.op not in CATALOG \
                and e.op not in self.blocks:
            self.err("E0112", f"`{e.op}` is a value, not a step", e.span, scope,
                     help=f"start a new statement from it: `{e.op} -> ...`")
            return
        if e.inputs is not None or not self._check_op_name(e, scope, as_value):
            return
        if e.op in self.blocks:
            if e.op not in self.recursive:
                self._bind_block_params(e, self.blocks[e.op], scope)
            return
        spec = CATALOG[e.op]
        if spec.role is not Role.MERGE:
            self._bind_args(e, spec, list(e.args or ()), scope)

    def _lookup(self, name: str, span: Span, scope: Scope) -> Binding | None:
        b = scope.names.get(name)
        if b is None:
            self.err("E0104", f"undefined name `{name}`", span, scope,
                     help=did_you_mean(name, scope.names))
            return None
        b.used = True
        return b

    def _source(self, e: ast.Element, scope: Scope, as_value: bool = False) -> list[Binding] | None:
        bare = e.args is None and e.inputs is None and e.label is None
        if e.label is not None and e.args is None and e.inputs is None and e.op in scope.names \
                and e.op not in CATALOG and e.op not in self.blocks:
            self.err("E0112", f"`{e.label.text}:` labels a step, but `{e.op}` is a value", e.label.span, scope,
                     help=f"put the label on the step after it: `{e.op} -> {e.label.text}: ...`")
            return None
        if bare and e.op in scope.names:
            b = self._lookup(e.op, e.op_span, scope)
            return None if b is None or b.value is POISON else [b]
        spec = CATALOG.get(e.op)
        if spec is not None and spec.role is Role.MERGE:
            return self._merge(e, spec, scope)
        if e.inputs is not None:
            if e.op not in self.blocks:
                what = "op" if spec is not None else "name"
                self.err("E0111", f"`{e.op}` is an {what}, not a block: it takes one group of arguments",
                         e.span, scope)
                return None
            inputs = []
            for n in e.inputs:
                b = self._lookup(n.name, n.span, scope)
                if b is None:
                    return None
                inputs.append(b)
            if any(b.value is POISON for b in inputs):
                return None
            return self._call_block(e, self.blocks[e.op], inputs, scope)
        if scope.current is None:
            self.err("E0112", f"`{e.op}` has no value to start from", e.span, scope,
                     help="name a source first: `x -> ...`")
            return None
        if len(scope.current) != 1:
            self.err("E0110", f"the previous statement produced {len(scope.current)} values", e.span, scope,
                     help="bind them with `a, b = ...` and name the one to continue from")
            return None
        current = scope.current[0]
        current.used = True
        if current.value is POISON:
            # still check what can be checked without an input shape
            self._check_unknown(e, scope, as_value)
            return None
        return self._step(e, current, scope, first=True, as_value=as_value)

    def _check_op_name(self, e: ast.Element, scope: Scope, as_value: bool = False) -> bool:
        if e.op in CATALOG or e.op in self.blocks:
            return True
        bare = e.args is None and e.label is None
        candidates = list(CATALOG) + list(self.blocks)
        hint = _op_hint(e.op, candidates)
        if bare and (scope.names or as_value):
            value_hint = did_you_mean(e.op, scope.names)
            if (value_hint or as_value) and not hint:
                self.err("E0104", f"undefined name `{e.op}`", e.op_span, scope, help=value_hint)
                return False
        self.err("E0105", f"unknown op `{e.op}`", e.op_span, scope, help=hint)
        return False

    def _step(self, e: ast.Element, x: Binding, scope: Scope, first: bool = False,
              as_value: bool = False) -> list[Binding] | None:
        made = self._step_inner(e, x, scope, as_value)
        if made is None:
            self._claim(e, scope)
        return made

    def _claim(self, e: ast.Element, scope: Scope) -> None:
        """A labelled step that failed still takes its label, so that another
        step with it is reported (E0106) as if the first had worked."""
        if e.label is None or e.op in self.blocks:
            return
        label = scope.prefix + e.label.text
        if self.label_spans.get(label) is e.label.span or (label, e.label.span) in self.duplicates:
            return
        if not self._duplicate(label, e.label.span, e, scope):
            self.label_spans[label] = e.label.span

    def _step_inner(self, e: ast.Element, x: Binding, scope: Scope, as_value: bool) -> list[Binding] | None:
        if e.inputs is not None:
            self.err("E0111", f"`{e.op}` in the middle of a chain takes the chain's value; "
                     "a second argument group is only for a block used as a source", e.span, scope)
            return None
        if e.args is None and e.label is None and e.op in scope.names and e.op not in CATALOG \
                and e.op not in self.blocks:
            self.err("E0112", f"`{e.op}` is a value, not a step", e.span, scope,
                     help=f"start a new statement from it: `{e.op} -> ...`")
            return None
        if not self._check_op_name(e, scope, as_value):
            return None
        if e.op in self.blocks:
            return self._call_block(e, self.blocks[e.op], [x], scope)
        spec = CATALOG[e.op]
        if spec.role is Role.MERGE:
            self.err("E0111", f"`{e.op}` merges named values and starts a chain", e.span, scope,
                     help=f"write `{e.op}(a, b) -> ...` as a statement of its own")
            return None
        args = self._bind_args(e, spec, list(e.args or ()), scope)
        if args is None:
            return None
        node = self._make_node(e, spec, args, [x.value], scope)
        return None if node is None else [Binding(node, e.span, None)]

    def _merge(self, e: ast.Element, spec: OpSpec, scope: Scope) -> list[Binding] | None:
        made = self._merge_inner(e, spec, scope)
        if made is None:
            self._claim(e, scope)
        return made

    def _merge_inner(self, e: ast.Element, spec: OpSpec, scope: Scope) -> list[Binding] | None:
        positional = [a for a in (e.args or ()) if a.name is None]
        keywords = [a for a in (e.args or ()) if a.name is not None]
        values: list[Binding] = []
        ok = True
        for a in positional:
            if not isinstance(a.value, ast.Name):
                self.err("E0304", f"{e.op} takes value names, got an expression", a.span, scope,
                         help=f"name the value first: `v = ...`, then `{e.op}(v, ...)`")
                ok = False
                continue
            b = self._lookup(a.value.name, a.value.span, scope)
            if b is None:
                ok = False
            else:
                values.append(b)
        if not ok:
            return None
        if len(values) < spec.min_inputs or (spec.max_inputs is not None and len(values) > spec.max_inputs):
            want = str(spec.min_inputs) if spec.max_inputs == spec.min_inputs else f"at least {spec.min_inputs}"
            self.err("E0302" if len(values) < spec.min_inputs else "E0303",
                     f"{e.op} takes {want} values, got {len(values)}", e.span, scope)
            return None
        if any(b.value is POISON for b in values):
            self._bind_args(e, spec, keywords, scope)      # still check the arguments
            return None
        args = self._bind_args(e, spec, keywords, scope)
        if args is None:
            return None
        args["_names"] = [a.value.name for a in positional]
        node = self._make_node(e, spec, args, [b.value for b in values], scope)
        return None if node is None else [Binding(node, e.span, None)]

    # ------------------------------------------------------------ arguments

    def _bind_args(self, e: ast.Element, spec: OpSpec, given: list[ast.Arg], scope: Scope) -> dict | None:
        bound: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        ok = True
        names = [a.name for a in spec.args]
        position = 0
        earlier = None          # the earlier signature's argument a positional one took (its last)
        for a in given:
            value = _UNSET
            if a.name is None:
                if earlier is not None:
                    self.err("E0303", f"{spec.name} takes no positional argument after `{earlier}` given by "
                             f"position", a.span, scope, help=_signature_help(spec))
                    ok = False
                    break
                if position >= len(spec.args):
                    takes = f"at most {len(spec.args)}" if spec.args else "no"
                    self.err("E0303", f"{spec.name} takes {takes} argument{'s' if len(spec.args) != 1 else ''}, "
                             f"got {sum(1 for g in given if g.name is None)}", a.span, scope,
                             help=_signature_help(spec))
                    ok = False
                    break
                target = spec.args[position].name
                for at, name in spec.earlier:       # a value only the earlier signature's argument takes
                    if at == position:
                        value = self._eval(a.value, scope)
                        if value is not POISON and _takes(spec.args[names.index(name)], value) \
                                and not _takes(spec.args[position], value):
                            target = earlier = name
                position += 1
            else:
                if a.name not in names:
                    self.err("E0301", f"{spec.name} has no argument `{a.name}`", a.span, scope,
                             help=did_you_mean(a.name, names) or _signature_help(spec))
                    ok = False
                    continue
                target = a.name
            if target in bound:
                self.err("E0305", f"argument `{target}` of {spec.name} is given twice", a.span, scope)
                ok = False
                continue
            argspec = spec.args[names.index(target)]
            if value is not _UNSET:
                pass                        # evaluated above
            elif argspec.kind is Kind.WORD and isinstance(a.value, ast.Name) and a.value.name not in scope.params \
                    and a.value.name not in scope.names:
                value = a.value.name        # any bare word: a wrong one gets "one of ..., did you mean"
            else:
                value = self._eval(a.value, scope)
            if value is POISON:
                ok = False
                bound[target] = POISON
                continue
            try:
                bound[target] = coerce_arg(argspec, value)
            except ArgError as err:
                self.err("E0304", f"argument `{target}` of {spec.name} {err}", a.span, scope)
                ok = False
                bound[target] = POISON
            spans[target] = a.span
        for arg in spec.args:
            if arg.name not in bound:
                if arg.default is REQUIRED:
                    self.err("E0302", f"{spec.name} is missing its argument `{arg.name}`", e.span, scope,
                             help=_signature_help(spec))
                    ok = False
                else:
                    bound[arg.name] = arg.default
        if not ok:
            return None
        bound["_spans"] = spans
        return bound

    def _eval(self, x: ast.Expr, scope: Scope) -> Any:
        try:
            return self._eval_inner(x, scope)
        except SymbolicError as err:
            self.err("E0206", str(err), x.span, scope)
            return POISON

    def _eval_inner(self, x: ast.Expr, scope: Scope) -> Any:
        value = self._eval_node(x, scope)
        if value is not POISON and _too_large(value):
            self.err("E0306", f"number too large: {_number_text(value)}", x.span, scope,
                     help=f"numbers in arguments are at most {MAX_NUMBER:,} in magnitude")
            return POISON
        return value

    def _eval_node(self, x: ast.Expr, scope: Scope) -> Any:
        if isinstance(x, (ast.Num, ast.Bool, ast.Word)):
            return x.value
        if isinstance(x, ast.Name):
            if x.name in scope.params:
                return scope.params[x.name]
            if x.name in WORDS and x.name not in scope.names:
                return x.name            # a word value: `mode=bilinear`, `end=none` (coerce_arg makes None)
            # a misspelt word (`padding=sam`, `bias=ture`) finds its word too
            candidates = list(scope.params) + list(_ARGUMENT_WORDS)
            self.err("E0104", f"undefined name `{x.name}`", x.span, scope,
                     help=(f"`{x.name}` is a value; use `{x.name}.shape[i]` for its sizes" if x.name in scope.names
                           else did_you_mean(x.name, candidates)))
            return POISON
        if isinstance(x, ast.TupleExpr):
            items = [self._eval_inner(i, scope) for i in x.items]
            return POISON if any(i is POISON for i in items) else tuple(items)
        if isinstance(x, ast.ShapeRef):
            b = self._lookup(x.value, x.span, scope)
            index = self._eval_inner(x.index, scope)
            if b is None or index is POISON or b.value is POISON:
                return POISON
            shape = self.shapes[b.value]
            if not isinstance(index, int) or isinstance(index, bool):
                self.err("E0307", f"a shape index must be an integer, got {_kind_of(index)}", x.index.span, scope)
                return POISON
            if not -len(shape) <= index < len(shape):
                self.err("E0307", f"`{x.value}` has shape {format_shape(shape)}: index {index} is out of range",
                         x.index.span, scope,
                         help=f"use an index from 0 to {len(shape) - 1} (the batch axis is not counted)")
                return POISON
            return shape[index]
        if isinstance(x, ast.Neg):
            v = self._eval_inner(x.operand, scope)
            if v is POISON:
                return POISON
            if not _numeric(v):
                self.err("E0304", f"cannot negate {_kind_of(v)}", x.span, scope)
                return POISON
            return -v
        if isinstance(x, ast.BinOp):
            a = self._eval_inner(x.left, scope)
            b = self._eval_inner(x.right, scope)
            if a is POISON or b is POISON:
                return POISON
            for v, side in ((a, x.left), (b, x.right)):
                if not _numeric(v):
                    self.err("E0304", f"`{x.op}` needs numbers, got {_kind_of(v)}", side.span, scope)
                    return POISON
            if (isinstance(a, Sym) and isinstance(b, float)) or (isinstance(b, Sym) and isinstance(a, float)):
                self.err("E0304", f"`{x.op}` mixes the symbolic size `{a if isinstance(a, Sym) else b}` with a "
                         "fractional number: sizes are integers", x.span, scope)
                return POISON
            if x.op == "+":
                return a + b
            if x.op == "-":
                return a - b
            if x.op == "*":
                return a * b
            if b == 0:
                self.err("E0308", "division by zero", x.span, scope)
                return POISON
            if isinstance(b, int) and b < 0 and isinstance(a, Sym):
                self.err("E0206", f"cannot divide the symbolic size `{a}` by a negative number", x.span, scope)
                return POISON
            return a // b
        raise AssertionError(f"unknown expression {x!r}")

    # ------------------------------------------------------------ nodes

    def _make_node(self, e: ast.Element, spec: OpSpec, args: dict, inputs: list[str], scope: Scope) -> str | None:
        label = scope.prefix + (e.label.text if e.label else scope.auto_label(e.op))
        label_span = e.label.span if e.label else e.op_span
        spans: dict[str, Span] = args.pop("_spans")
        in_shapes = [self.shapes[v] for v in inputs]
        integer = [v for v in inputs if v in self.integer]
        if integer and spec.name not in INTEGER_PASSES | INTEGER_READERS:
            self.err("E0209", f"{spec.name} cannot read the integer input `{self.integer[integer[0]]}`", e.span,
                     scope, help="integer inputs are indices: they pass slice, select, reshape, transpose and "
                     "flatten and must reach `embedding`")
            return None
        if spec.name in INTEGER_READERS and len(integer) != len(inputs):
            self.err("E0209", f"{spec.name} reads integer indices, but its input holds numbers", e.span, scope,
                     help="declare the model input as integer: `tokens: int[T]`")
            return None
        if any(s == () for s in in_shapes) and not (spec.elementwise or spec.name in ON_NUMBERS):
            self.err("E0203", f"{spec.name} needs at least one axis per example, and its input is one number per "
                     "example ([])", e.span, scope,
                     help="reduce over fewer axes, or reshape((1,)) to give the number an axis")
            return None
        try:
            attrs = dict(spec.resolve(args, in_shapes)) if spec.resolve else dict(args)
            shape = spec.infer(attrs, in_shapes)
            params = spec.params(attrs, in_shapes)
            macs = spec.macs(attrs, *self._at_bounds(in_shapes, shape))
        except ShapeError as err:
            span = spans.get(err.arg, e.span) if err.arg else e.span
            self.err(err.code, err.message, span, scope, help=err.help)
            return None
        except SymbolicError as err:
            self.err("E0206", f"{spec.name}: {err}", e.span, scope)
            return None
        if spec.name == "positional" and in_shapes[0]:
            steps = try_evaluate(in_shapes[0][0], self.bounds)
            if steps is not None and steps > attrs["max_len"]:
                self.err("E0306", f"positional: the sequence has up to {steps} steps, more than "
                         f"max_len={attrs['max_len']}", spans.get("max_len", e.span), scope,
                         help=f"raise max_len to at least {steps}, or bound the time axis at {attrs['max_len']}")
                return None
        if self._duplicate(label, label_span, e, scope):
            return None
        if len(self.nodes) >= MAX_STEPS:
            if not self.too_many_steps:
                self.too_many_steps = True
                self.err("E0115", f"the model expands to more than {MAX_STEPS:,} steps", e.span, scope,
                         help="blocks that call blocks multiply the steps: call fewer")
            return None
        if not self._sizes_positive(spec.name, shape, e.span, scope) \
                or not self._fits(f"the output of {spec.name}", shape, e.span, scope) \
                or not self._weights_fit(spec.name, label, params, e.span, scope):
            return None
        self.label_spans[label] = label_span
        attrs = {k: v for k, v in attrs.items() if not k.startswith("_")}
        dtype = "float32"
        if integer and spec.name in INTEGER_PASSES:
            dtype = "int32"
            self.integer[label] = self.integer[integer[0]]
        self.nodes.append(Node(label, spec, tuple(inputs), attrs, shape, params, macs, e.span, dtype=dtype))
        self.shapes[label] = shape
        return label

    # ------------------------------------------------------------ sizes

    def _at_bounds(self, in_shapes, shape):
        """The shapes with every size at its bound, when all are bounded (so
        that a count with a product of two sizes, attention's T*T, is exact;
        linear symbolic sizes cannot hold it); else as they are."""
        sizes = [try_evaluate(d, self.bounds) for s in (*in_shapes, shape) for d in s]
        if any(v is None for v in sizes):
            return in_shapes, shape
        it = iter(sizes)
        return [tuple(next(it) for _ in s) for s in in_shapes], tuple(next(it) for _ in shape)

    def _fits(self, what: str, shape, span: Span, scope: Scope | None) -> bool:
        """False (and E0208) when one example of a value is larger than the
        tensor limit at the bounds (or E0203 when it has more axes than NumPy
        arrays take, the batch axis counted); True when it fits or a size is
        unbounded."""
        if len(shape) > MAX_RANK:
            self.err("E0203", f"{what} has {len(shape)} axes, "
                     f"more than the {MAX_RANK} a value of one example can have", span, scope,
                     help="merge axes with `reshape` or `flatten`")
            return False
        sizes = [try_evaluate(d, self.bounds) for d in shape]
        if any(v is None for v in sizes):
            return True
        nbytes = FLOAT_BYTES
        for v in sizes:
            nbytes *= max(v, 0)
        if nbytes <= self.limits.tensor:
            return True
        self.err("E0208", f"{what} {format_shape(shape)} takes {format_bytes(nbytes)} per example"
                 f"{_at_bounds(shape, self.bounds)}, more than the limit of {format_bytes(self.limits.tensor)} "
                 "for one tensor", span, scope, help=_LIMIT_HELP)
        return False

    def _sizes_positive(self, op: str, shape, span: Span, scope: Scope) -> bool:
        """False (and E0201) when a symbolic size is below 1 at the bounds
        (a kernel longer than the bounded input)."""
        for d in shape:
            if not isinstance(d, Sym):
                continue
            v = try_evaluate(d, self.bounds)
            if v is None or v >= 1:
                continue
            names = sorted(d.free_symbols())
            help = None
            if len(names) == 1:
                need = _least_length(d, names[0], self.bounds)
                if need is not None:
                    help = f"the input needs `{names[0]}` >= {need}: raise the bound to at least {need}"
            self.err("E0201", f"{op} gives the size `{d}`, which is {v} at the bound"
                     f"{_at_bounds(shape, self.bounds)}", span, scope, help=help)
            return False
        return True

    def _weights_fit(self, op: str, label: str, params, span: Span, scope: Scope) -> bool:
        """False (and E0208) when one weight tensor, or the weights so far,
        pass their limits."""
        total = 0
        for p in params:
            nbytes = FLOAT_BYTES
            for d in p.shape:
                nbytes *= d
            if nbytes > self.limits.tensor:
                self.err("E0208", f"{op}'s `{p.name}` {format_shape(p.shape)} takes {format_bytes(nbytes)}, "
                         f"more than the limit of {format_bytes(self.limits.tensor)} for one tensor", span, scope,
                         help=_LIMIT_HELP)
                return False
            total += nbytes
        self.weights_bytes += total
        if self.weights_bytes > self.limits.weights:
            if not self.weights_reported:
                self.weights_reported = True
                self.err("E0208", f"with `{label}` the weights take {format_bytes(self.weights_bytes)}, more than "
                         f"the limit of {format_bytes(self.limits.weights)} for all weights", span, scope,
                         help=_LIMIT_HELP)
            return False
        return True

    def _duplicate(self, label: str, span: Span, e: ast.Element, scope: Scope) -> bool:
        """Report E0106 when a step's or block call's full label is taken (True)."""
        if label not in self.label_spans and label not in self.shapes:
            return False
        where = self.label_spans.get(label)
        self.duplicates.add((label, span))
        self.err("E0106", f"duplicate label `{label}`", span, scope,
                 notes=(f"first used at line {where.line}",) if where else (),
                 help="give each step its own label" if e.label else
                 f"an unlabelled `{e.op}` step is labelled `{label}` automatically (spec section 5): "
                 "label it, or rename the step that took that label")
        return True

    def _call_block(self, e: ast.Element, block: ast.Block, inputs: list[Binding], scope: Scope) -> list[Binding] | None:
        if len(inputs) != len(block.inputs):
            self.err("E0108", f"block `{block.name}` takes {len(block.inputs)} input"
                     f"{'s' if len(block.inputs) != 1 else ''}, got {len(inputs)}", e.span, scope,
                     help=(f"call it as a source: `{block.name}(...)({', '.join(i.name for i in block.inputs)})`"
                           if len(block.inputs) > 1 else None))
            return None
        if block.name in self.recursive:
            return None  # reported once at the definition
        if self.too_many_steps:
            return None  # E0115 is reported: expanding the rest (2^20 calls for 20 doubling blocks) only costs time
        if self.depth >= MAX_BLOCK_DEPTH:
            self.err("E0115", f"block calls nest more than {MAX_BLOCK_DEPTH} deep at `{block.name}`", e.span,
                     scope, help="call fewer blocks from inside blocks")
            return None
        self.depth += 1
        try:
            return self._call_block_inner(e, block, inputs, scope)
        finally:
            self.depth -= 1

    def _call_block_inner(self, e: ast.Element, block: ast.Block, inputs: list[Binding],
                          scope: Scope) -> list[Binding] | None:
        self.lowered.add(block.name)
        params = self._bind_block_params(e, block, scope)
        label = e.label.text if e.label else scope.auto_label(e.op)
        # A block call is a step too (LANGUAGE.md section 5): its full label is
        # unique, and a second `layer1.0: basic(...)` is reported at the call.
        full, label_span = scope.prefix + label, (e.label.span if e.label else e.op_span)
        if self._duplicate(full, label_span, e, scope):
            return None
        self.label_spans[full] = label_span
        child = Scope(prefix=f"{scope.prefix}{label}.", params=params,
                      call_note=scope.call_note or f"in `{label}: {block.name}(...)` at line {e.span.line}")
        if params is None:
            return None
        for formal, actual in zip(block.inputs, inputs):
            b = Binding(actual.value, formal.span, formal.name)
            child.names[formal.name] = b
            child.bindings.append(b)
        child.current = [child.names[block.inputs[0].name]] if block.inputs else None
        results = self._body(block.body, child, block.span)
        if scope.call_note is None:
            self._warn_unused(child, results)
        if any(b.value is POISON for b, _ in results) or not results:
            return None
        return [Binding(b.value, e.span, None) for b, _ in results]

    def _bind_block_params(self, e: ast.Element, block: ast.Block, scope: Scope) -> dict | None:
        values: dict[str, Any] = {}
        names = [p.name for p in block.params]
        ok = True
        position = 0
        for a in e.args or ():
            if a.name is None:
                if position >= len(block.params):
                    takes = f"at most {len(block.params)}" if block.params else "no"
                    got = sum(1 for g in e.args if g.name is None)
                    self.err("E0303", f"block `{block.name}` takes {takes} argument"
                             f"{'s' if len(block.params) != 1 else ''}, got {got}", a.span, scope,
                             help=_block_signature_help(block))
                    ok = False
                    break
                target = names[position]
                position += 1
            elif a.name not in names:
                self.err("E0301", f"block `{block.name}` has no parameter `{a.name}`", a.span, scope,
                         help=did_you_mean(a.name, names))
                ok = False
                continue
            else:
                target = a.name
            if target in values:
                self.err("E0305", f"parameter `{target}` of `{block.name}` is given twice", a.span, scope)
                ok = False
                continue
            v = self._eval(a.value, scope)
            ok = ok and v is not POISON
            values[target] = v
        defaults = Scope(prefix="", params={})
        for p in block.params:
            if p.name not in values:
                if p.default is None:
                    self.err("E0302", f"block `{block.name}` is missing its parameter `{p.name}`", e.span, scope)
                    ok = False
                else:
                    values[p.name] = self._eval(p.default, defaults)
                    ok = ok and values[p.name] is not POISON
        return values if ok else None


# ---------------------------------------------------------------- helpers

# The words an argument may take (LANGUAGE.md sections 2 and 9), for "did you mean".
_ARGUMENT_WORDS = ("true", "false", "same", "valid", "causal", *sorted(WORDS))

_LIMIT_HELP = "make the model smaller, or raise the limit (`--max-memory SIZE`, or `limits=` in Python)"


def _too_large(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return abs(v) > MAX_NUMBER
    if isinstance(v, Sym):
        return abs(v.const) > MAX_NUMBER or any(abs(c) > MAX_NUMBER for _, c in v.terms)
    if isinstance(v, tuple):
        return any(_too_large(i) for i in v)
    return False


def _number_text(v: Any) -> str:
    """A number as text, or its number of digits when it is too long to show."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10 ** 24:
        try:
            return f"a number of {len(str(abs(v)))} digits"
        except ValueError:      # longer than Python converts to text
            return f"a number of about {int(abs(v).bit_length() * 0.30103)} digits"
    if isinstance(v, Sym):
        return "a size with a huge coefficient"
    if isinstance(v, tuple):
        return "(" + ", ".join(_number_text(i) for i in v) + ")"
    return str(v)


def _at_bounds(shape, bounds: Mapping[str, int]) -> str:
    names = sorted({n for d in shape if isinstance(d, Sym) for n in d.free_symbols()})
    return f" ({', '.join(f'{n}={bounds[n]}' for n in names)})" if names else ""


def _least_length(d: Sym, name: str, bounds: Mapping[str, int]) -> int | None:
    """The smallest value of `name` for which `d` is at least 1 (sizes grow
    with the length), or None beyond MAX_SIZE."""
    def fits(t: int) -> bool:
        v = try_evaluate(d, {**bounds, name: t})
        return v is not None and v >= 1
    if not fits(MAX_SIZE):
        return None
    lo, hi = 1, MAX_SIZE
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo

def _op_hint(name: str, candidates) -> str | None:
    """"did you mean" among the op and block names, but never a name that is
    only a part of the one written (`conv_transpose2d` is not `transpose`)."""
    hint = did_you_mean(name, candidates)
    if hint is None:
        return None
    match = hint.split("`")[1]
    return None if match in name and len(name) - len(match) >= 3 else hint


def _chains(stmt) -> list[ast.Chain]:
    return list(stmt.values) if isinstance(stmt, ast.Return) else [stmt.chain]


def _plain_name(chain: ast.Chain) -> str | None:
    if len(chain.elements) == 1:
        e = chain.elements[0]
        if e.args is None and e.inputs is None and e.label is None:
            return e.op
    return None


def _numeric(v: Any) -> bool:
    return (isinstance(v, (int, float, Sym))) and not isinstance(v, bool)


def _kind_of(v: Any) -> str:
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if isinstance(v, float):
        return f"the number {v}"
    if isinstance(v, str):
        return f"the word `{v}`"
    if isinstance(v, tuple):
        return "a tuple"
    return str(v)


_UNSET = object()      # an argument not evaluated yet


def _takes(arg, value) -> bool:
    """Whether argument `arg` accepts `value`."""
    try:
        coerce_arg(arg, value)
    except ArgError:
        return False
    return True


def _signature_help(spec: OpSpec) -> str:
    parts = []
    for a in spec.args:
        parts.append(a.name if a.default is REQUIRED else f"{a.name}={_default_text(a.default, a.name)}")
    return f"the signature is `{spec.name}({', '.join(parts)})`"


def _block_signature_help(block: ast.Block) -> str:
    from .format import format_expr
    parts = [p.name if p.default is None else f"{p.name}={format_expr(p.default)}" for p in block.params]
    return f"the signature is `{block.name}({', '.join(parts)})`"


def _default_text(v: Any, name: str = "") -> str:
    if v is None:
        return "k" if name == "stride" else "none"     # a pool's stride defaults to its kernel
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def lower(file: ast.File, bounds: Mapping[str, int] | None = None, sink: Sink | None = None,
          limits: Limits | None = None) -> Graph:
    """Lower a parsed file to a checked IR graph; raise CompileError on errors.
    Warnings are left in `sink` (created if not given)."""
    sink = sink if sink is not None else Sink()
    sink.sources.setdefault(file.path, file.source)
    graph = Lowerer(file, bounds, sink, limits).run()
    sink.raise_if_errors()
    assert graph is not None
    return graph
