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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except CompileError as e:
        _print_diagnostics(e.diagnostics, e.sources)
        n = sum(1 for d in e.diagnostics if str(d.severity) == "error")
        print(f"error: `{getattr(args, 'model', '')}` failed with {n} error{'s' if n != 1 else ''}",
              file=sys.stderr)
        return 1


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
    from .summary import summary_dict, summary_table
    checked = check(args.model, dict(args.dim))
    _print_diagnostics(checked.warnings, checked.sources)
    report = memory_report(checked.graph, args.batch, optimize=args.optimize)
    data = summary_dict(checked.graph, report.figures)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(summary_table(data))
        if args.plan:
            print()
            print(report.timeline())
    return 0


_COMMANDS = {"check": _check, "summary": _summary}
