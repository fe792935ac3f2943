"""The `nnc` command (INTERFACES.md section 2).

In:  command-line arguments.
Out: exit code 0 (success), 1 (the model or an input file is wrong; the
     diagnostics go to stderr), 2 (bad command-line use, from argparse),
     130 (interrupted with Ctrl-C) or 70 (an internal error: a bug in nnc).
     Never a Python traceback (`NNC_TRACEBACK=1` shows one for an internal
     error).

    nnc check MODEL.nn [--dim T=N] [--max-memory SIZE]
    nnc summary MODEL.nn [--batch N] [--dim T=N] [--json] [--plan] [--max-memory SIZE]
    nnc compile MODEL.nn [-t numpy|c] [-o DIR] [--weights FILE] [--batch N] [--dim T=N] [--stream] [-O0]
                [--max-memory SIZE]
    nnc run MODEL.nn --input [NAME=]IN.npy [--weights FILE] [-t numpy|c] [-o OUT.npy|OUT.npz] [--dim T=N]
            [--max-memory SIZE]

How errors reach the user:
- `CompileError`: every diagnostic, rendered with its source line, then a
  count; a model file that cannot be read is one line (`error: no such file`).
- `UserError` (a missing C compiler, a bad weights file, an unwritable
  folder), `InputError` (an input array of `nnc run`) and any `OSError`: one
  line, `error: <message>`.
- A closed stdout (`nnc summary m.nn | head -1`) ends quietly with exit 1,
  as the Python documentation recommends for SIGPIPE.

The MODEL argument is always a path, whatever its suffix: it is never read
as model text.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from .diagnostics import CompileError, Diagnostic, UserError, printable, render_all

EXIT_INTERNAL = 70      # sysexits.h EX_SOFTWARE
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


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


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    """Bytes: `4096`, `512M`, `8G`, `8GiB`, `1.5G` (binary units)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m or len(m.group(1)) > 30:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 8G, got {text!r}")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnc", description="Compile .nn neural-network models "
                                "into memory-planned NumPy and C99 execution plans.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("model", metavar="MODEL.nn", help="the model file")
        c.add_argument("--max-memory", dest="limits", type=_size, metavar="SIZE",
                       help="the most memory one tensor, all weights, or the memory plan may take "
                            "(e.g. 512M, 8G; default 2G per tensor, 4G for the weights and for the plan)")
        return c

    def dims(c: argparse.ArgumentParser) -> None:
        c.add_argument("--dim", type=_dim, action="append", default=[], metavar="NAME=N",
                       help="a bound for a named input dimension (repeatable)")

    def batch(c: argparse.ArgumentParser) -> None:
        c.add_argument("--batch", type=_positive, default=1, metavar="N",
                       help="the largest batch the plan serves (default 1)")

    k = model_cmd("check", "parse and shape-check a model; print nothing but warnings on success")
    dims(k)

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
                   help="an input array (.npy, or .npz holding one array), [B, ...] or one example without "
                        "the batch axis (repeat for several inputs)")
    r.add_argument("--weights", metavar="FILE", help=".npz or .safetensors weights")
    r.add_argument("-t", "--target", choices=("numpy", "c"), default="numpy")
    r.add_argument("-o", "--output", metavar="OUT.npy",
                   help="save the output instead of printing it: OUT.npz holds every output by name, "
                        "any other name one output as .npy (written at exactly that path)")
    dims(r)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    try:
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()      # a closed pipe shows here, inside the handlers below
        return code
    except CompileError as e:
        return _report(args, e)
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (UserError, InputError) as e:
        _error(str(e))
        return 1
    except MemoryError:
        _error("out of memory: the model or its inputs are too large for this machine "
               "(`--max-memory SIZE` refuses such plans before allocating)")
        return 1
    except OSError as e:
        _error(_os_message(e))
        return 1
    except Exception as e:      # noqa: BLE001 - a bug: say so in one line, not with a traceback
        if os.environ.get("NNC_TRACEBACK"):
            raise
        _error(f"internal error: {type(e).__name__}: {_first_line(str(e))}",
               "this is a bug in nnc; run again with NNC_TRACEBACK=1 to see where it happened")
        return EXIT_INTERNAL


class InputError(UserError, ValueError):
    """An input file or the output path of `nnc run` that cannot be used."""


def _error(message: str, *more: str) -> None:
    """`error: message` on stderr, with control characters (from a file
    name, say) escaped but the message's own line breaks kept; `more` lines
    follow as they are."""
    text = "\n".join(printable(line) for line in message.split("\n"))
    try:
        print(f"error: {text}", *more, sep="\n", file=sys.stderr)
    except (OSError, ValueError):
        pass


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


def _os_message(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.strerror}: `{printable(str(e.filename))}`"
    return _first_line(str(e)) or type(e).__name__


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so that the flush at
    exit does not raise again (the Python documentation's recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _report(args, e: CompileError) -> int:
    if len(e.diagnostics) == 1 and e.diagnostics[0].code == "E0004":
        _error(e.diagnostics[0].message)       # the file cannot be read: there is no source to show
        return 1
    _print_diagnostics(e.diagnostics, e.sources)
    n = sum(1 for d in e.diagnostics if str(d.severity) == "error")
    _error(f"`{printable(args.model)}` failed with {n} error{'s' if n != 1 else ''}")
    return 1


def _print_diagnostics(diags: Sequence[Diagnostic], sources) -> None:
    for text in render_all(diags, sources):
        print(text, file=sys.stderr)
        print(file=sys.stderr)


def _model(args) -> Path:
    return Path(args.model)


def _check(args) -> int:
    from .frontend import check
    checked = check(_model(args), dict(args.dim), limits=args.limits)
    _print_diagnostics(checked.warnings, checked.sources)
    return 0


def _summary(args) -> int:
    from .frontend import check
    from .memory import memory_report
    from .summary import dumps, summary_dict, summary_table
    checked = check(_model(args), dict(args.dim), limits=args.limits)
    _print_diagnostics(checked.warnings, checked.sources)
    from .build import compile_plan
    if checked.graph.bounds.keys() >= _symbols(checked.graph):
        plan = compile_plan(_model(args), dims=dict(args.dim), optimize=args.optimize, batch=args.batch,
                            limits=args.limits, checked=checked)
        data = summary_dict(checked.graph, plan.layout.figures(args.batch))
    else:
        plan = None
        data = summary_dict(checked.graph, memory_report(checked.graph, args.batch))
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
    checked = check(_model(args), dict(args.dim), limits=args.limits)
    specs = {k: W.Spec(p.shape, p.init) for k, p in checked.graph.param_specs().items()}
    state = W.load(args.weights, specs) if args.weights else W.default_init(specs)
    options = dict(target=args.target, batch=args.batch, dims=dict(args.dim), state=state,
                   bundle_weights=args.target == "numpy", limits=args.limits)
    plan = compile_plan(_model(args), optimize=args.optimize, stream=args.stream, checked=checked, **options)
    _print_diagnostics(plan.checked.warnings, plan.checked.sources)
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
    batch = max((a.shape[0] for a in arrays.values()), default=1) or 1
    dims = {**_dims_from_inputs(graph, arrays), **dict(args.dim)}
    model = build(_model(args), target=args.target, dims=dims or None, weights=args.weights, batch=batch,
                  limits=args.limits)
    try:
        outs = model(**arrays)
    except (ValueError, TypeError) as e:     # the model refuses these arrays (shape, dtype, names)
        raise InputError(_first_line(str(e))) from None
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
    with open(path, "wb") as f:
        if _is_npz(path):
            np.savez(f, **outputs)
        else:
            (only,) = outputs.values()
            np.save(f, only)


def _load_array(path: str):
    """One input array from a .npy file, or an .npz holding one array."""
    import numpy as np
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"input file `{printable(path)}` does not exist") from None
    except IsADirectoryError:
        raise InputError(f"input `{printable(path)}` is a folder, not a .npy file") from None
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"`{printable(path)}` is not a readable .npy array ({_first_line(str(e))[:160]})") from None
    if isinstance(a, np.lib.npyio.NpzFile):
        with a:
            keys = list(a.keys())
            if len(keys) != 1:
                listed = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
                raise InputError(f"`{printable(path)}` holds {len(keys)} arrays ({listed or 'none'}); "
                                 "give a .npy file or an .npz with one array")
            try:
                a = a[keys[0]]
            except (ValueError, OSError, EOFError) as e:
                raise InputError(f"`{printable(path)}`: array `{keys[0]}` cannot be read ({_first_line(str(e))[:160]})") from None
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
        raise InputError(f"the model takes {len(names)} input(s) ({', '.join(names)}), got {len(given)} --input")
    arrays = {}
    for i, (name, path) in enumerate(given):
        name = name or names[i]
        if name not in ranks:
            raise InputError(f"the model has no input `{name}` (inputs: {', '.join(names)})")
        if name in arrays:
            raise InputError(f"input `{name}` is given twice")
        a = _load_array(path)
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


_COMMANDS = {"check": _check, "summary": _summary, "compile": _compile, "run": _run}
