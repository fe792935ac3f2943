"""From a model to an execution plan: the pipeline behind `nnc compile`,
`nnc run` and `nnc.build`.

In:  a `.nn` path or source text; target, batch, weights, bounds, options.
Out: `compile_plan(...)` -> `Plan` (the optimised graph, its memory layout,
     the generated files' text); `build(...)` -> a ready model object with the
     Python API of INTERFACES.md section 3.

Stages: `frontend.check` (parse, lower, infer shapes) -> `passes.optimize`
(unless `optimize=False`) -> `memory.layout` (with the target's scratch) ->
the target's code generator.

`limits=` (`memory.Limits`, an int, or a dict of `tensor`/`weights`/`arena`
bytes) bounds what is planned: a tensor or the weights past their limit are
E0208 from the front end, an arena past its limit at `batch` is E0208 here,
before any code allocates it.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .codegen import numpy as numpy_gen
from .codegen.names import sanitize
from .diagnostics import CompileError, UserError, error, printable
from .frontend import Checked, check
from .ir import Graph
from .memory import Layout, Limits, arena_problem, format_bytes, largest_buffer, layout, unbounded
from .passes import optimize as run_passes
from .stream import to_stream

TARGETS = ("numpy", "c")


@dataclass(frozen=True, slots=True)
class Plan:
    checked: Checked
    graph: Graph            # after the passes
    layout: Layout
    name: str               # the module / C prefix name
    files: Mapping[str, str]   # file name -> text


def module_name(graph: Graph) -> str:
    """The generated module's name and the C prefix: the model's name as
    written (INTERFACES.md: NAME.py, NAME_forward), made a valid identifier,
    and never `nnc...` (the C kernels' names, in any case). A Python keyword (`class`) or
    `numpy` (which the generated module imports) gets a `_` after it, so that
    `import NAME` works, and so does the name of a standard C header (`string`,
    `math`: the C plan's `NAME.h`, found through `-I DIR`, would stand in for
    `<string.h>`) or of a standard-library module that a Python process using
    the plan has already imported (`os`, `sys`, `json`: `import os` would give
    that one); other names are kept as written, other standard-library ones too
    (`test`, `wave`: a file beside the caller is found first)."""
    import keyword
    name = sanitize(graph.name, fallback="model") or "model"
    folded = name.lower()           # (a file system may ignore case: `Math.h` would stand in for <math.h>)
    if folded.startswith("nnc"):
        return "m_" + name
    if keyword.iskeyword(name) or folded == "numpy" or folded in C_HEADERS or folded in PRELOADED:
        return name + "_"
    return name


# Python's built-in modules and the standard-library ones that CPython 3.11's start-up, NumPy and
# nnc's runtime import (a fixed list, so that generated names do not depend on the machine)
PRELOADED = frozenset("""
abc ast atexit binascii bisect builtins bz2 codecs collections contextlib contextvars copy copyreg ctypes
dataclasses datetime dis encodings enum errno faulthandler fnmatch functools gc genericpath importlib inspect io
ipaddress itertools json keyword linecache lzma marshal math ntpath numbers opcode operator os pathlib pickle
platform posix posixpath pwd random re reprlib shutil site stat struct sys tempfile textwrap threading time token
tokenize types typing urllib warnings weakref xxsubtype zipfile zipimport zlib""".split())

C_HEADERS = frozenset({     # C99/C11's standard headers and the POSIX ones a C plan's user may include
    "assert", "complex", "ctype", "errno", "fenv", "float", "inttypes", "iso646", "limits", "locale", "math",
    "setjmp", "signal", "stdalign", "stdarg", "stdatomic", "stdbool", "stddef", "stdint", "stdio", "stdlib",
    "stdnoreturn", "string", "tgmath", "threads", "time", "uchar", "wchar", "wctype",
    "alloca", "dirent", "dlfcn", "fcntl", "malloc", "memory", "pthread", "sched", "strings", "unistd"})


def compile_plan(model: str | Path, *, target: str = "numpy", batch: int = 1,
                 dims: Mapping[str, int] | None = None, optimize: bool = True,
                 bundle_weights: bool = False, state: Mapping[str, np.ndarray] | None = None,
                 stream: bool = False, render: bool = True,
                 limits: Limits | int | Mapping[str, int] | None = None, checked: Checked | None = None) -> Plan:
    """`bundle_weights`: the NumPy module loads `NAME.npz` from beside itself by
    default. `state`: the weights the C file embeds (default: seeded init).
    `render=False` skips writing the text (the C model renders it with its
    own weights; a summary needs the layout only). `limits`: see the module docstring. `checked`: the front
    end's result for `model` with these `dims` and `limits`, when the caller
    already has it (the CLI), so the model is not parsed twice."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    limits = Limits.of(limits)
    if checked is None:
        checked = check(model, dims, limits=limits)
    graph = run_passes(checked.graph) if optimize else checked.graph
    if stream:
        graph = to_stream(graph, checked.sources)
    missing = unbounded(graph, graph.bounds)
    if missing:
        names = ", ".join(sorted(missing))
        first = sorted(missing)[0]
        raise CompileError([error(
            "E0207", f"the named dimension{'s' if len(missing) > 1 else ''} {names} need{'' if len(missing) > 1 else 's'} "
            f"a bound to plan memory", graph.inputs[0].span,
            help=f"give the largest size with `--dim {first}=N` (`dims={{'{first}': N}}` in Python) "
                 f"or in the model: `[{first}=N]`")], checked.sources)
    name = module_name(graph)
    if target == "numpy":
        lay = layout(graph, scratch=numpy_gen.scratch_bytes, share=optimize,
                     persistent=numpy_gen.state_bytes(graph), written=checked.graph)
        _check_arena(graph, lay, batch, limits, checked)
        if not render:
            return Plan(checked, graph, lay, name, {})
        text = numpy_gen.generate(graph, lay, name=name, source=str(checked.graph.path), batch=batch,
                                  weights_file=f"{name}.npz" if bundle_weights else None, arena_limit=limits.arena)
        return Plan(checked, graph, lay, name, {f"{name}.py": text})
    from .codegen import c as c_gen
    if optimize:
        graph = c_gen.fuse_blocks(graph)
    lay = layout(graph, scratch=c_gen.scratch_bytes, share=optimize, persistent=c_gen.state_bytes(graph),
                 written=checked.graph)
    _check_arena(graph, lay, batch, limits, checked)
    files = c_gen.generate(graph, lay, name=name, state=state, source=str(checked.graph.path)) if render else {}
    return Plan(checked, graph, lay, name, files)


def _check_arena(graph: Graph, lay: Layout, batch: int, limits: Limits, checked: Checked) -> None:
    message = arena_problem(graph, lay, batch, limits)
    if message is None:
        return
    owner, nbytes = largest_buffer(lay) or ("", 0)
    node = next((n for n in graph.nodes if n.label == owner), None)
    span = node.span if node is not None else graph.inputs[0].span
    notes = (f"the largest buffer, {format_bytes(batch * nbytes)} at batch {batch}, belongs to `{owner}`",) \
        if node is not None else ()
    raise CompileError([error("E0208", message, span, notes=notes,
                              help="plan for a smaller batch or bound, or raise the limit (`--max-memory SIZE`, "
                                   "or `limits=` in Python)")], checked.sources)


def load_module(name: str, text: str) -> types.ModuleType:
    """Execute a generated NumPy module's text as a module (it is our own
    generated code: every identifier in it was sanitised)."""
    module = types.ModuleType(name)
    module.__dict__["__name__"] = f"nnc_generated_{name}"
    code = compile(text, f"<nnc:{name}.py>", "exec")
    exec(code, module.__dict__)
    return module


def build(model: str | Path, target: str = "numpy", batch: int = 1, weights: Any = None,
          dims: Mapping[str, int] | None = None, stream: bool = False, optimize: bool = True,
          limits: Limits | int | Mapping[str, int] | None = None, checked: Checked | None = None):
    """The Python API: compile `model` and return a model object. `limits`:
    the largest tensor, weights and arena planned (`memory.Limits`);
    `checked`: as for `compile_plan`."""
    if isinstance(batch, np.integer):
        batch = int(batch)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    plan = compile_plan(model, target=target, batch=batch, dims=dims, optimize=optimize, stream=stream,
                        render=target == "numpy", limits=limits, checked=checked)
    if target == "numpy":
        module = load_module(plan.name, plan.files[f"{plan.name}.py"])
        obj = module.Model(batch=batch, weights=weights)
    else:
        from .codegen.cbuild import CModel
        obj = CModel(plan, batch=batch, weights=weights)
    obj._source = next(iter(plan.checked.sources.values()))   # its text, for nnc.to_onnx(model, ...)
    return obj


class OutputError(UserError, OSError):
    """The output folder cannot be made or written (it is a file, a parent is
    a file, no permission)."""


def write_plan(plan: Plan, out_dir: str | Path, weights: Mapping[str, np.ndarray] | None) -> list[Path]:
    """Write the plan's files into out_dir; for numpy also NAME.npz (weights).
    `OutputError` when the folder cannot be made or written."""
    out = Path(out_dir)
    shown = printable(str(out))
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write into `{shown}`: it is a file, not a folder")
    try:
        return _write(plan, out, weights)
    except OSError as e:
        where = printable(str(e.filename if e.filename is not None else out))
        raise OutputError(f"cannot write into `{shown}`: {e.strerror or e} (`{where}`)") from None


def _write(plan: Plan, out: Path, weights: Mapping[str, np.ndarray] | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in sorted(plan.files.items()):
        path = out / fname
        path.write_text(text)
        written.append(path)
    if weights is not None:
        path = out / f"{plan.name}.npz"
        with open(path, "wb") as f:
            np.savez(f, **weights)
        written.append(path)
    return written
