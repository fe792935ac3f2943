"""The bridge commands of `nnc` (INTERFACES.md section 10): import, export, graph.

In:  `add_parser(subparsers)` registers the three subcommands on `nnc`'s
     argparse subparsers; `run(args)` runs the one parsed (`COMMANDS` maps
     each name to its function). `write_plan_svg` is the function behind
     `nnc summary --plan-svg FILE`.
Out: exit code 0; problems raise `UserError` subclasses (a missing extra
     says what to install; an unsupported ONNX node list; a corrupt file;
     an `.onnx` file given to export or graph, a `.nn` file to import),
     which `cli.main` (`cli_common.guarded`) prints as one `error:` line with
     exit 1.

    nnc import MODEL.onnx [-o DIR]                       -> DIR/NAME.nn, DIR/NAME.npz
    nnc export MODEL.nn [--weights FILE] -o MODEL.onnx [--opset N]
    nnc graph MODEL.nn [-o FILE.svg|.png|.dot] [--dim T=N]   (default: MODEL.svg beside the model)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .build import OutputError
from .cli_common import FlagError, add_dims, positive
from .diagnostics import UserError, printable
from .pictures import PICTURE_SUFFIXES, write_plan_svg

__all__ = ["COMMANDS", "add_parser", "run", "write_plan_svg"]


def add_parser(subparsers) -> None:
    i = subparsers.add_parser("import", help="convert an ONNX model into NAME.nn and NAME.npz",
                              description="convert an ONNX model (as torch.onnx.export writes it) into a readable "
                                          ".nn model and its weights")
    i.add_argument("model", metavar="MODEL.onnx", help="the ONNX file")
    i.add_argument("-o", "--output", default=".", metavar="DIR", help="the folder to write into (default: here)")

    e = subparsers.add_parser("export", help="write a model and its weights as ONNX",
                              description="write a model and its weights as an ONNX model onnxruntime runs")
    e.add_argument("model", metavar="MODEL.nn", help="the model file")
    e.add_argument("--weights", metavar="FILE", help=".npz or .safetensors weights (default: seeded initialisation)")
    e.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    e.add_argument("--opset", type=positive, default=17, metavar="N", help="the ONNX opset (default 17, at least 13)")

    g = subparsers.add_parser("graph", help="draw the model's graph (Graphviz)",
                              description="draw the model's graph: a box per step, blocks as clusters")
    g.add_argument("model", metavar="MODEL.nn", help="the model file")
    g.add_argument("-o", "--output", metavar="FILE", help=".svg, .png or .dot (default: MODEL.svg)")
    add_dims(g)


class WrongModelFile(UserError, ValueError):
    """An ONNX file given where a `.nn` model belongs, or the other way round."""


def _import(args) -> int:
    from .onnx_import import file_stem, from_onnx
    if Path(args.model).suffix.lower() == ".nn" and Path(args.model).is_file():
        raise WrongModelFile(f"`{args.model}` is a .nn model; `nnc import` reads ONNX files (`nnc export "
                             f"{args.model} -o MODEL.onnx` writes one)")
    source, weights = from_onnx(args.model)
    out = Path(args.output)
    name = file_stem(args.model)
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write into `{out}`: it is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.nn").write_text(source)
        with open(out / f"{name}.npz", "wb") as f:
            np.savez(f, **weights)
    except OSError as e:
        raise OutputError(f"cannot write into `{out}`: {e.strerror or e}") from None
    print(f"wrote {out / f'{name}.nn'} and {out / f'{name}.npz'}")
    return 0


def _not_onnx(model: str, command: str) -> None:
    """An `.onnx` file where a `.nn` model belongs: say which command reads it."""
    if Path(model).suffix.lower() == ".onnx" and Path(model).is_file():
        raise WrongModelFile(f"`{model}` is an ONNX file; `nnc {command}` reads a .nn model: convert it first "
                             f"with `nnc import {model}`")


def _export(args) -> int:
    from .onnx_export import to_onnx
    _not_onnx(args.model, "export")
    path = to_onnx(Path(args.model), args.weights, args.output, opset=args.opset)
    print(f"wrote {path}")
    return 0


def _graph(args) -> int:
    from .pictures import graph_dot, render
    _not_onnx(args.model, "graph")
    out = Path(args.output) if args.output else Path(args.model).with_suffix(".svg")
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise FlagError(f"-o {printable(str(out))}: choose a .svg, .png or .dot file")
    text = graph_dot(Path(args.model), dict(args.dim) or None)
    render(text, out)
    print(f"wrote {out}")
    return 0


COMMANDS = {"import": _import, "export": _export, "graph": _graph}


def run(args) -> int:
    """Run the parsed bridge command; problems raise `UserError` (exit 1 in `cli.main`)."""
    return COMMANDS[args.command](args)


def main(argv=None) -> int:
    """`python -m nnc.compiler.bridges_cli ...`: the same as `nnc ...`."""
    from .cli import main as nnc_main
    return nnc_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
