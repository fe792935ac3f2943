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

from .cli_common import FlagError, guarded, nonnegative
from .diagnostics import printable, render_all


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
    p.add_argument("--seed", type=nonnegative, default=0, metavar="S", help="seeds new weights and net2net's choices")
    p.add_argument("-o", "--output", required=True, metavar="NEW.npz", help="where to write the new weights")
    p.add_argument("--optimizer-out", metavar="OPT2.npz", help="where to write the moved optimizer state")
    return p


def run(args: argparse.Namespace) -> int:
    """Grow as the arguments say; the exit code (`cli_common.guarded`)."""
    subject = f"growing `{printable(args.old)}` into `{printable(args.new)}`"
    return guarded(_run, args, subject=subject)


def _run(args: argparse.Namespace) -> int:
    if args.optimizer_out and not args.optimizer_state:
        raise FlagError("--optimizer-out needs --optimizer-state")
    if args.optimizer_out and os.path.abspath(args.optimizer_out) == os.path.abspath(args.output):
        raise FlagError("-o and --optimizer-out name the same file")
    from . import grow as G
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


def _save(path: str, arrays: dict) -> None:
    """`numpy.savez` at exactly `path` (savez would add `.npz` to other names)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)
