"""The `nnc` command (INTERFACES.md section 2).

In:  command-line arguments.
Out: exit code 0 (success), 1 (the model or an input file is wrong; the
     diagnostics go to stderr) or 2 (bad command-line use, from argparse).

    nnc check MODEL.nn
    nnc summary MODEL.nn [--batch N] [--dim T=N] [--json] [--plan]
    nnc compile MODEL.nn [-t numpy|c] [-o DIR] [--weights FILE] [--batch N] [--dim T=N] [--stream] [-O0]
    nnc run MODEL.nn --input IN.npy [--weights FILE] [-t numpy|c] [-o OUT.npy]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .diagnostics import CompileError, Diagnostic, render


def _dim(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=SIZE, got {text!r}")
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the size in {text!r} is not an integer") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"the size in {text!r} must be positive")
    return name, size


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnc", description="Compile .nn neural-network models "
                                "into memory-planned NumPy and C99 execution plans.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("model", metavar="MODEL.nn", help="the model file")
        return c

    def dims(c: argparse.ArgumentParser) -> None:
        c.add_argument("--dim", type=_dim, action="append", default=[], metavar="NAME=N",
                       help="a bound for a named input dimension (repeatable)")

    def batch(c: argparse.ArgumentParser) -> None:
        c.add_argument("--batch", type=_positive, default=1, metavar="N",
                       help="the largest batch the plan serves (default 1)")

    model_cmd("check", "parse and shape-check a model; print nothing but warnings on success")

    s = model_cmd("summary", "print a table of layers, shapes, parameters, MACs and the memory plan")
    batch(s)
    dims(s)
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--plan", action="store_true", help="also draw the memory plan as a timeline")
    s.add_argument("-O0", dest="optimize", action="store_false", help="plan without optimisation passes")

    c = model_cmd("compile", "write the execution plan: NAME.py (+ NAME.npz) for numpy, NAME.c and NAME.h for c")
    c.add_argument("-t", "--target", choices=("numpy", "c"), default="numpy")
    c.add_argument("-o", "--output", default=".", metavar="DIR", help="the folder to write into (default: here)")
    c.add_argument("--weights", metavar="FILE", help=".npz or .safetensors weights (default: seeded initialisation)")
    batch(c)
    dims(c)
    c.add_argument("--stream", action="store_true", help="compile a streaming plan (step/stream/reset)")
    c.add_argument("-O0", dest="optimize", action="store_false", help="no optimisation passes (for debugging)")

    r = model_cmd("run", "compile and run once on an input array; print or save the output")
    r.add_argument("--input", required=True, action="append", metavar="[NAME=]IN.npy",
                   help="an input array, [B, ...] or one example without the batch axis (repeat for several inputs)")
    r.add_argument("--weights", metavar="FILE", help=".npz or .safetensors weights")
    r.add_argument("-t", "--target", choices=("numpy", "c"), default="numpy")
    r.add_argument("-o", "--output", metavar="OUT.npy", help="save the output instead of printing it")
    dims(r)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..runtime.weights import WeightsError
    try:
        return _COMMANDS[args.command](args)
    except CompileError as e:
        _print_diagnostics(e.diagnostics, e.sources)
        n = sum(1 for d in e.diagnostics if str(d.severity) == "error")
        print(f"error: `{args.model}` failed with {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    except (WeightsError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        if args.command != "run":    # only `run` feeds user arrays to the model
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1


class InputError(Exception):
    """An input file of `nnc run` that cannot be used."""


def _print_diagnostics(diags: Sequence[Diagnostic], sources) -> None:
    for d in diags:
        print(render(d, sources.get(d.path or "")), file=sys.stderr)
        print(file=sys.stderr)


def _check(args) -> int:
    from .frontend import check
    checked = check(args.model)
    _print_diagnostics(checked.warnings, checked.sources)
    return 0


def _summary(args) -> int:
    from .frontend import check
    from .memory import memory_report
    from .summary import dumps, summary_dict, summary_table
    checked = check(args.model, dict(args.dim))
    _print_diagnostics(checked.warnings, checked.sources)
    from .build import compile_plan
    data = summary_dict(checked.graph, memory_report(checked.graph, args.batch))
    if checked.graph.bounds.keys() >= _symbols(checked.graph):
        plan = compile_plan(args.model, dims=dict(args.dim), optimize=args.optimize, batch=args.batch)
        data["memory"] = plan.layout.figures(args.batch)
    else:
        plan = None
    if args.json:
        print(dumps(data))
    else:
        print(summary_table(data))
        if args.plan and plan is not None:
            print()
            print(plan.layout.timeline())
    return 0


def _symbols(graph) -> set[str]:
    from .memory import unbounded
    return set(unbounded(graph, {}))


def _compile(args) -> int:
    from ..runtime import weights as W
    from .build import compile_plan, write_plan
    from .frontend import check
    checked = check(args.model, dict(args.dim))
    specs = {k: W.Spec(p.shape, p.init) for k, p in checked.graph.param_specs().items()}
    state = W.load(args.weights, specs) if args.weights else W.default_init(specs)
    options = dict(target=args.target, batch=args.batch, dims=dict(args.dim), state=state,
                   bundle_weights=args.target == "numpy")
    plan = compile_plan(args.model, optimize=args.optimize, stream=args.stream, **options)
    _print_diagnostics(plan.checked.warnings, plan.checked.sources)
    for path in write_plan(plan, args.output, state if args.target == "numpy" else None):
        print(path)
    return 0


def _run(args) -> int:
    import numpy as np
    from .build import build
    model = build(args.model, target=args.target, dims=dict(args.dim) or None, weights=args.weights,
                  batch=_batch_of(args))
    arrays = _read_inputs(args, model)
    outs = model(**arrays)
    outs = outs if isinstance(outs, tuple) else (outs,)
    names = list(model.output_shapes)
    if args.output:
        if len(outs) == 1:
            np.save(args.output, outs[0])
        else:
            np.savez(args.output, **dict(zip(names, outs)))
    else:
        np.set_printoptions(threshold=200, precision=6, suppress=True)
        for n, o in zip(names, outs):
            print(f"{n} {list(o.shape)}:")
            print(o)
    return 0


def _load_npy(path: str):
    import numpy as np
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"input file `{path}` does not exist") from None
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"`{path}` is not a readable .npy array ({str(e).splitlines()[0][:160]})") from None
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise InputError(f"`{path}` holds several arrays; give a .npy file with one")
    if a.dtype.kind not in "fiub":
        raise InputError(f"`{path}` holds {a.dtype} values, not real numbers")
    return a


def _parse_inputs(args) -> list[tuple[str | None, str]]:
    result = []
    for item in args.input:
        name, sep, path = item.partition("=")
        result.append((name, path) if sep and name.isidentifier() else (None, item))
    return result


def _batch_of(args) -> int:
    from .frontend import check
    checked = check(args.model, dict(args.dim) or None)
    arrays = [_load_npy(p) for _, p in _parse_inputs(args)]
    ranks = {i.name: len(i.shape) for i in checked.graph.inputs}
    first = next(iter(ranks.values()))
    a = arrays[0]
    return a.shape[0] if a.ndim == first + 1 and a.shape[0] > 0 else 1


def _read_inputs(args, model) -> dict:
    names = list(model.input_shapes)
    given = _parse_inputs(args)
    if len(given) != len(names):
        raise InputError(f"the model takes {len(names)} input(s) ({', '.join(names)}), got {len(given)} --input")
    arrays = {}
    for i, (name, path) in enumerate(given):
        name = name or names[i]
        if name not in model.input_shapes:
            raise InputError(f"the model has no input `{name}` (inputs: {', '.join(names)})")
        a = _load_npy(path)
        if a.ndim == len(model.input_shapes[name]):
            a = a[None]          # one example without its batch axis
        arrays[name] = a
    return arrays


_COMMANDS = {"check": _check, "summary": _summary, "compile": _compile, "run": _run}
