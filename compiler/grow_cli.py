"""`nnc grow`: move trained weights (and optimizer state) to a wider edit of
the model (TRAINING.md section 2).

In:  the parsed arguments of

    nnc grow OLD.nn NEW.nn --weights OLD.npz [--optimizer-state OPT.npz]
             [--init zero|net2net] [--seed S] -o NEW.npz [--optimizer-out OPT2.npz]

Out: exit code 0 with the new weights in `-o` (and the moved optimizer state
     in `--optimizer-out`); 1 when a model, the weights or the optimizer state
     do not fit (the diagnostics on the new model, or one `error:` line); 2
     for bad command-line use. Warnings (W0002) go to stderr. Nothing is
     written unless everything succeeded.

`add_parser(subparsers)` adds the command to `nnc`'s parser; `run(args)`
runs it with `compiler.grow`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

from .diagnostics import CompileError, UserError, render_all


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `nnc grow` to the subparsers of `nnc`'s parser."""
    text = "move trained weights and optimizer state to a wider edit of the model"
    p = subparsers.add_parser("grow", help=text, description=text)
    p.add_argument("old", metavar="OLD.nn", help="the model the weights were trained with")
    p.add_argument("new", metavar="NEW.nn", help="the same model with wider layers")
    p.add_argument("--weights", required=True, metavar="OLD.npz", help="the old model's weights (.npz or .safetensors)")
    p.add_argument("--optimizer-state", metavar="OPT.npz", help="the old optimizer state (nnc train --save-optimizer)")
    p.add_argument("--init", choices=("zero", "net2net"), default="zero",
                   help="new units: zero (exactly the old function) or net2net (copies of old units); default zero")
    p.add_argument("--seed", type=_seed, default=0, metavar="S", help="seeds new weights and net2net's choices")
    p.add_argument("-o", "--output", required=True, metavar="NEW.npz", help="where to write the new weights")
    p.add_argument("--optimizer-out", metavar="OPT2.npz", help="where to write the moved optimizer state")
    return p


def run(args: argparse.Namespace) -> int:
    """Grow as the arguments say; the exit code."""
    if args.optimizer_out and not args.optimizer_state:
        print("nnc grow: error: --optimizer-out needs --optimizer-state", file=sys.stderr)
        return 2
    if args.optimizer_out and os.path.abspath(args.optimizer_out) == os.path.abspath(args.output):
        print("nnc grow: error: -o and --optimizer-out name the same file", file=sys.stderr)
        return 2
    from . import grow as G
    try:
        growth, weights, state = G.prepare(args.old, args.new, args.weights, args.optimizer_state,
                                           args.init, args.seed)
        for text in render_all(growth.warnings, growth.sources):
            print(text, file=sys.stderr)
        new_weights = growth.weights(weights, args.init, args.seed)
        new_state = None if state is None else growth.optimizer_state(state)
        _save(args.output, new_weights)
        if args.optimizer_out:
            _save(args.optimizer_out, new_state)
        return 0
    except CompileError as e:
        if len(e.diagnostics) == 1 and e.diagnostics[0].code == "E0004":
            print(f"error: {e.diagnostics[0].message}", file=sys.stderr)
            return 1
        for text in render_all(e.diagnostics, e.sources):
            print(text, file=sys.stderr)
        n = sum(1 for d in e.diagnostics if str(d.severity) == "error")
        print(f"error: growing `{args.old}` into `{args.new}` failed with {n} error{'s' if n != 1 else ''}",
              file=sys.stderr)
        return 1
    except (UserError, OSError) as e:
        message = str(e) if not isinstance(e, OSError) or isinstance(e, UserError) else \
            (f"{e.strerror}: `{e.filename}`" if e.filename and e.strerror else str(e))
        print(f"error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nerror: interrupted", file=sys.stderr)
        return 130


def _save(path: str, arrays: dict) -> None:
    """`numpy.savez` at exactly `path` (savez would add `.npz` to other names)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)
