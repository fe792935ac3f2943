"""The `nnc` command (INTERFACES.md sections 2 and 10, TRAINING.md).

In:  command-line arguments.
Out: exit code 0 (success), 1 (the model or an input file is wrong; the
     diagnostics go to stderr), 2 (bad command-line use, from argparse),
     130 (interrupted with Ctrl-C) or 70 (an internal error: a bug in nnc).
     Never a Python traceback (`NNC_TRACEBACK=1` shows one for an internal
     error).

    nnc --version
    nnc check MODEL.nn [--dim T=N] [--max-memory SIZE]
    nnc summary MODEL.nn [-t numpy|c] [--batch N] [--dim T=N] [--json] [--plan] [--plan-svg FILE.svg]
                [--train [--optimizer sgd|adam|adamw] [--loss L]] [--max-memory SIZE]
    nnc compile MODEL.nn [-t numpy|c] [-o DIR] [--weights FILE] [--batch N] [--dim T=N] [--stream] [-O0]
                [--max-memory SIZE]
    nnc run MODEL.nn --input [NAME=]IN.npy [--weights FILE] [-t numpy|c] [-o OUT.npy|OUT.npz] [--dim T=N]
            [--max-memory SIZE]
    nnc train MODEL.nn --data DATA.npz -o WEIGHTS.npz [...]          (train_cli.py)
    nnc grow OLD.nn NEW.nn --weights OLD.npz -o NEW.npz [...]        (grow_cli.py)
    nnc import MODEL.onnx [-o DIR]                                   (bridges_cli.py)
    nnc export MODEL.nn [--weights FILE] -o MODEL.onnx [--opset N]   (bridges_cli.py)
    nnc graph MODEL.nn [-o FILE.svg|.png|.dot] [--dim T=N]           (bridges_cli.py)

How errors reach the user (`cli_common.guarded`, shared by every command):
- `CompileError`: every diagnostic, rendered with its source line, then a
  count; a model file that cannot be read is one line (`error: no such file`).
- `UserError` (a missing C compiler, a bad weights file, an unwritable
  folder, a missing optional extra), `InputError` (an input array of
  `nnc run`) and any `OSError`: one line, `error: <message>`.
- A closed stdout (`nnc summary m.nn | head -1`) ends quietly with exit 1,
  as the Python documentation recommends for SIGPIPE.

The MODEL argument is always a path, whatever its suffix: it is never read
as model text.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from . import bridges_cli, grow_cli, train_cli
from .cli_common import EXIT_INTERNAL, EXIT_INTERRUPTED, FlagError, add_batch, add_dims, first_line, guarded, \
    print_diagnostics, size
from .diagnostics import UserError, printable

__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "InputError", "main"]


def _version() -> str:
    from nnc import __version__
    return f"nnc {__version__}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnc", description="Compile .nn neural-network models "
                                "into memory-planned NumPy and C99 execution plans.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("model", metavar="MODEL.nn", help="the model file")
        c.add_argument("--max-memory", dest="limits", type=size, metavar="SIZE",
                       help="the most memory one tensor, all weights, or the memory plan may take "
                            "(e.g. 512M, 8G; default 2G per tensor, 4G for the weights and for the plan)")
        return c

    def target(c: argparse.ArgumentParser, help: str | None = None) -> None:
        c.add_argument("-t", "--target", choices=("numpy", "c"), default="numpy", help=help)

    k = model_cmd("check", "parse and shape-check a model; print nothing but warnings on success")
    add_dims(k)

    s = model_cmd("summary", "print a table of layers, shapes, parameters, MACs, sizes and the memory plan")
    target(s, "the plan whose memory is reported (default numpy)")
    add_batch(s)
    add_dims(s)
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--plan", action="store_true", help="also draw the memory plan as a timeline, with a legend")
    s.add_argument("--plan-svg", metavar="FILE.svg", help="write the memory plan as an SVG picture")
    s.add_argument("--train", action="store_true",
                   help="also report the training plan's memory (TRAINING.md); with --plan, draw it")
    s.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None,
                   help="with --train: the optimizer state to count (sgd: with momentum, one buffer per "
                        "parameter; adam, adamw: two); default sgd")
    s.add_argument("--loss", choices=train_cli.LOSSES, default=None,
                   help="with --train: the loss of the training plan (default cross_entropy)")
    s.add_argument("-O0", dest="optimize", action="store_false", help="plan without optimisation passes")

    c = model_cmd("compile", "write the execution plan: NAME.py (+ NAME.npz) for numpy, NAME.c and NAME.h for c")
    target(c)
    c.add_argument("-o", "--output", default=".", metavar="DIR", help="the folder to write into (default: here)")
    c.add_argument("--weights", metavar="FILE", help=".npz or .safetensors weights (default: seeded initialisation)")
    add_batch(c)
    add_dims(c)
    c.add_argument("--stream", action="store_true", help="compile a streaming plan (step/stream/reset)")
    c.add_argument("-O0", dest="optimize", action="store_false", help="no optimisation passes (for debugging)")

    r = model_cmd("run", "compile and run once on an input array; print or save the output")
    r.add_argument("--input", required=True, action="append", metavar="[NAME=]IN.npy",
                   help="an input array (.npy, or .npz holding one array), [B, ...] or one example without "
                        "the batch axis (repeat for several inputs)")
    r.add_argument("--weights", metavar="FILE", help=".npz or .safetensors weights")
    target(r)
    r.add_argument("-o", "--output", metavar="OUT.npy",
                   help="save the output instead of printing it: OUT.npz holds every output by name, "
                        "any other name one output as .npy (written at exactly that path)")
    add_dims(r)

    train_cli.add_parser(sub)
    grow_cli.add_parser(sub)
    bridges_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return guarded(_COMMANDS[args.command], args)


class InputError(UserError, ValueError):
    """An input file or the output path of `nnc run` that cannot be used."""


def _model(args) -> Path:
    return Path(args.model)


def _check(args) -> int:
    from .frontend import check
    checked = check(_model(args), dict(args.dim), limits=args.limits)
    print_diagnostics(checked.warnings, checked.sources)
    return 0


def _summary(args) -> int:
    from .build import compile_plan
    from .frontend import check
    from .memory import memory_report
    from .summary import dumps, plan_legend, summary_dict, summary_table
    if not args.train and (args.optimizer or args.loss):
        raise FlagError(f"--{'optimizer' if args.optimizer else 'loss'} describes a training plan: add --train")
    if args.plan_svg and Path(args.plan_svg).suffix.lower() != ".svg":
        raise FlagError(f"--plan-svg {printable(args.plan_svg)}: the memory plan is an SVG picture, name it FILE.svg")
    args.optimizer, args.loss = args.optimizer or "sgd", args.loss or "cross_entropy"
    checked = check(_model(args), dict(args.dim), limits=args.limits)
    print_diagnostics(checked.warnings, checked.sources)
    bounded = checked.graph.bounds.keys() >= _symbols(checked.graph)
    if bounded:
        plan = compile_plan(_model(args), target=args.target, dims=dict(args.dim), optimize=args.optimize,
                            batch=args.batch, limits=args.limits, checked=checked, render=False)
        memory = plan.layout.figures(args.batch)
    else:
        plan = None
        memory = memory_report(checked.graph, args.batch)
    train = _train_memory(args, checked.graph, bounded) if args.train else None
    data = summary_dict(checked.graph, memory, target=args.target, train_memory=train)
    if args.plan_svg:
        bridges_cli.write_plan_svg(_model(args), args.plan_svg, batch=args.batch, dims=dict(args.dim) or None,
                                   target=args.target)
    if args.json:
        print(dumps(data))
        return 0
    print(summary_table(data))
    if args.plan and plan is not None:
        labels = [n.label for n in plan.graph.nodes]
        last = max((b.last for b in plan.layout.buffers), default=0)
        labels += ["(outputs, until the caller reads them)"] * (last + 1 - len(labels))
        print(f"\nmemory plan ({args.target}):")
        print(plan.layout.timeline())
        print(plan_legend(labels, args.batch))
    if args.plan and args.train and bounded:
        print(f"\ntraining memory plan (numpy, batch {args.batch}):")
        print(_train_timeline(args))
    if args.plan_svg:
        print(f"\nwrote {args.plan_svg}")
    return 0


def _train_memory(args, graph, bounded: bool) -> dict:
    """The `train_memory` object of `nnc summary --train`; without a bound
    for a named dimension, the figures that depend on it are None."""
    from .train import train_memory_report
    from .train_memory import optimizer_bytes, weights_bytes
    if bounded:
        return train_memory_report(_model(args), batch=args.batch, optimizer=args.optimizer, loss=args.loss,
                                   dims=dict(args.dim) or None)
    specs = graph.param_specs()
    trainable = [k for k, p in specs.items() if p.learnable]
    return {"batch": args.batch, "arena_bytes": None, "lower_bound_bytes": None, "saved_bytes": None,
            "gradient_bytes": None, "weights_bytes": weights_bytes(specs),
            "optimizer_bytes": optimizer_bytes(specs, trainable, args.optimizer)}


def _train_timeline(args) -> str:
    """The training plan's timeline and its legend (`--train --plan`)."""
    from .codegen import train_numpy
    from .summary import train_plan_legend
    from .train import train_graph
    from .train_memory import train_layout
    _, tg = train_graph(_model(args), loss=args.loss, dims=dict(args.dim) or None, limits=args.limits)
    lay = train_layout(tg, args.batch, scratch=train_numpy.scratch_bytes)
    return lay.timeline() + "\n" + train_plan_legend([s.label for s in tg.steps], args.batch)


def _symbols(graph) -> set[str]:
    from .memory import unbounded
    return set(unbounded(graph, {}))


def _compile(args) -> int:
    from ..runtime import weights as W
    from .build import compile_plan, write_plan
    from .frontend import check
    checked = check(_model(args), dict(args.dim), limits=args.limits)
    specs = {k: W.Spec(p.shape, p.init) for k, p in checked.graph.param_specs().items()}
    state = W.load(args.weights, specs) if args.weights else W.default_init(specs)
    options = dict(target=args.target, batch=args.batch, dims=dict(args.dim), state=state,
                   bundle_weights=args.target == "numpy", limits=args.limits)
    plan = compile_plan(_model(args), optimize=args.optimize, stream=args.stream, checked=checked, **options)
    print_diagnostics(plan.checked.warnings, plan.checked.sources)
    for path in write_plan(plan, args.output, state if args.target == "numpy" else None):
        print(path)
    return 0


# ---------------------------------------------------------------- nnc run

def _run(args) -> int:
    import numpy as np
    from .build import build
    from .frontend import check
    checked = check(_model(args), dict(args.dim), limits=args.limits)
    graph = checked.graph
    _check_output_path(args, [o.name for o in graph.outputs])
    arrays = _read_inputs(args, graph)
    batch = max((a.shape[0] for a in arrays.values() if a.ndim), default=1) or 1   # (a 0-d one: the model refuses it)
    dims = {**_dims_from_inputs(graph, arrays), **dict(args.dim)}
    model = build(_model(args), target=args.target, dims=dims or None, weights=args.weights, batch=batch,
                  limits=args.limits)
    try:
        outs = model(**arrays)
    except (ValueError, TypeError) as e:     # the model refuses these arrays (shape, dtype, names)
        raise InputError(first_line(str(e))) from None
    outs = outs if isinstance(outs, tuple) else (outs,)
    names = list(model.output_shapes)
    if args.output:
        _save_outputs(args.output, dict(zip(names, outs)))
    else:
        np.set_printoptions(threshold=200, precision=6, suppress=True)
        for n, o in zip(names, outs):
            print(f"{n} {list(o.shape)}:")
            print(o)
    return 0


def _is_npz(path: str) -> bool:
    return path.lower().endswith(".npz")


def _check_output_path(args, outputs: list[str]) -> None:
    """Several outputs need an .npz; checked before anything runs."""
    if args.output and len(outputs) > 1 and not _is_npz(args.output):
        raise InputError(f"the model has {len(outputs)} outputs ({', '.join(outputs)}): "
                         f"give `-o` a path ending in .npz to save them all")
    if args.output and os.path.isdir(args.output):
        raise InputError(f"`-o {printable(args.output)}` is a folder: give a file name")


def _save_outputs(path: str, outputs: dict) -> None:
    """`.npz`: every output by name; otherwise the one output as `.npy`.
    Written at exactly `path` (NumPy would add a suffix to a bare name)."""
    import numpy as np
    try:
        with open(path, "wb") as f:
            if _is_npz(path):
                np.savez(f, **outputs)
            else:
                (only,) = outputs.values()
                np.save(f, only)
    except OSError as e:      # a full disk names no file: say which one
        raise OSError(f"cannot write `{printable(path)}`: {e.strerror or e}") from None


def _starts_like_an_array(path: str) -> bool:
    """True when the file starts as a .npy (`\\x93NUMPY`) or a zip (.npz) file does."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return True
    return head == b"\x93NUMPY" or head[:2] == b"PK"


def _load_array(path: str, limits):
    """One input array from a .npy file, or an .npz holding one array; its
    header is checked first (no larger than the file, nor than the arena
    limit)."""
    import numpy as np

    from ..runtime.arrayfile import check_sizes
    from .memory import Limits
    from ..runtime.weights import _ZIP_ERRORS
    broken = (ValueError, RuntimeError, *_ZIP_ERRORS)       # a corrupt, truncated or encrypted file
    if os.path.isfile(path):
        check_sizes(path, InputError, Limits.of(limits).arena, "the memory limit (`--max-memory`)")
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"input file `{printable(path)}` does not exist") from None
    except IsADirectoryError:
        raise InputError(f"input `{printable(path)}` is a folder, not a .npy file") from None
    except broken as e:
        if not _starts_like_an_array(path):     # NumPy reads any other file as a pickle and says so
            raise InputError(f"`{printable(path)}` is not a .npy or .npz file") from None
        raise InputError(f"`{printable(path)}` is not a readable .npy array ({first_line(str(e))[:160]})") from None
    if isinstance(a, np.lib.npyio.NpzFile):
        with a:
            keys = list(a.keys())
            if len(keys) != 1:
                listed = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
                raise InputError(f"`{printable(path)}` holds {len(keys)} arrays ({listed or 'none'}); "
                                 "give a .npy file or an .npz with one array")
            try:
                a = a[keys[0]]
            except broken as e:
                raise InputError(f"`{printable(path)}`: array `{keys[0]}` cannot be read ({first_line(str(e))[:160]})") from None
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise InputError(f"`{printable(path)}` does not hold an array")
    if a.dtype.kind not in "fiub":
        raise InputError(f"`{printable(path)}` holds {a.dtype} values, not real numbers")
    return a


def _parse_inputs(args) -> list[tuple[str | None, str]]:
    result = []
    for item in args.input:
        name, sep, path = item.partition("=")
        result.append((name, path) if sep and name.isidentifier() else (None, item))
    return result


def _read_inputs(args, graph) -> dict:
    """input name -> array with its batch axis (added to one example)."""
    names = [i.name for i in graph.inputs]
    ranks = {i.name: len(i.shape) for i in graph.inputs}
    given = _parse_inputs(args)
    if len(given) != len(names):
        raise FlagError(f"the model takes {len(names)} input(s) ({', '.join(names)}), got {len(given)} --input")
    arrays = {}
    for i, (name, path) in enumerate(given):
        name = name or names[i]
        if name not in ranks:
            raise FlagError(f"--input {name}=...: the model has no input `{name}` (inputs: {', '.join(names)})")
        if name in arrays:
            raise FlagError(f"--input: input `{name}` is given twice")
        a = _load_array(path, args.limits)
        if a.ndim == ranks[name]:
            a = a[None]          # one example without its batch axis
        arrays[name] = a
    return arrays


def _dims_from_inputs(graph, arrays: dict) -> dict[str, int]:
    """A size for each named dimension, read from the input arrays (the
    longest wins), so that `nnc run` plans for exactly these inputs."""
    from .dims import Sym, Var
    dims: dict[str, int] = {}
    for inp in graph.inputs:
        a = arrays.get(inp.name)
        if a is None or a.ndim != len(inp.shape) + 1:
            continue            # the model reports the wrong rank
        for d, n in zip(inp.shape, a.shape[1:]):
            if isinstance(d, Sym) and d.const == 0 and len(d.terms) == 1 and d.terms[0][1] == 1 \
                    and isinstance(d.terms[0][0], Var) and n > 0:
                name = d.terms[0][0].name
                dims[name] = max(dims.get(name, 0), n)
    return dims


_COMMANDS = {"check": _check, "summary": _summary, "compile": _compile, "run": _run,
             "train": train_cli.run, "grow": grow_cli.run, **bridges_cli.COMMANDS}
