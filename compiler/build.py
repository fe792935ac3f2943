"""From a model to an execution plan: the pipeline behind `nnc compile`,
`nnc run` and `nnc.build`.

In:  a `.nn` path or source text; target, batch, weights, bounds, options.
Out: `compile_plan(...)` -> `Plan` (the optimised graph, its memory layout,
     the generated files' text); `build(...)` -> a ready model object with the
     Python API of INTERFACES.md section 3.

Stages: `frontend.check` (parse, lower, infer shapes) -> `passes.optimize`
(unless `optimize=False`) -> `memory.layout` (with the target's scratch) ->
the target's code generator.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .codegen import numpy as numpy_gen
from .codegen.names import sanitize
from .diagnostics import CompileError, error
from .frontend import Checked, check
from .ir import Graph
from .memory import Layout, layout, unbounded
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
    """The generated module's name and the C prefix: a valid identifier, and
    never `nnc...` (the C kernels' names)."""
    name = sanitize(graph.name, fallback="model").lower() or "model"
    return "m_" + name if name.startswith("nnc") else name


def compile_plan(model: str | Path, *, target: str = "numpy", batch: int = 1,
                 dims: Mapping[str, int] | None = None, optimize: bool = True,
                 bundle_weights: bool = False, state: Mapping[str, np.ndarray] | None = None,
                 stream: bool = False, render: bool = True) -> Plan:
    """`bundle_weights`: the NumPy module loads `NAME.npz` from beside itself by
    default. `state`: the weights the C file embeds (default: seeded init).
    `render=False` skips writing the C text (the C model renders it with its
    own weights)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    checked = check(model, dims)
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
                     persistent=numpy_gen.state_bytes(graph))
        source = str(checked.graph.path)
        text = numpy_gen.generate(graph, lay, name=name, source=source, batch=batch,
                                  weights_file=f"{name}.npz" if bundle_weights else None)
        return Plan(checked, graph, lay, name, {f"{name}.py": text})
    from .codegen import c as c_gen
    lay = layout(graph, scratch=c_gen.scratch_bytes, share=optimize, persistent=c_gen.state_bytes(graph))
    files = c_gen.generate(graph, lay, name=name, state=state, source=str(checked.graph.path)) if render else {}
    return Plan(checked, graph, lay, name, files)


def load_module(name: str, text: str) -> types.ModuleType:
    """Execute a generated NumPy module's text as a module (it is our own
    generated code: every identifier in it was sanitised)."""
    module = types.ModuleType(name)
    module.__dict__["__name__"] = f"nnc_generated_{name}"
    code = compile(text, f"<nnc:{name}.py>", "exec")
    exec(code, module.__dict__)
    return module


def build(model: str | Path, target: str = "numpy", batch: int = 1, weights: Any = None,
          dims: Mapping[str, int] | None = None, stream: bool = False, optimize: bool = True):
    """The Python API: compile `model` and return a model object."""
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    plan = compile_plan(model, target=target, batch=batch, dims=dims, optimize=optimize, stream=stream,
                        render=target == "numpy")
    if target == "numpy":
        module = load_module(plan.name, plan.files[f"{plan.name}.py"])
        return module.Model(batch=batch, weights=weights)
    from .codegen.cbuild import CModel
    return CModel(plan, batch=batch, weights=weights)


def write_plan(plan: Plan, out_dir: str | Path, weights: Mapping[str, np.ndarray] | None) -> list[Path]:
    """Write the plan's files into out_dir; for numpy also NAME.npz (weights)."""
    out = Path(out_dir)
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
