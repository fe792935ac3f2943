"""`nnc train`: train a model on arrays from a `.npz` file (TRAINING.md
section 1, "Command line").

In:  the parsed arguments of

    nnc train MODEL.nn --data DATA.npz [--loss cross_entropy|mse|bce_with_logits]
              [--optimizer sgd|adam|adamw] [--lr F] [--momentum F] [--weight-decay F]
              [--batch N] [--epochs N] [--seed S] [--weights INIT] [--resume OPT.npz]
              [--dim NAME=N] -o WEIGHTS.npz [--save-optimizer OPT.npz]

Out: exit code 0 with the trained weights (PyTorch keys) in `-o` and the
     optimizer state in `--save-optimizer`; 1 when the model, the data or a
     file is wrong (the model's diagnostics, or one `error:` line naming the
     array or file); 2 for bad command-line use.

`add_parser(subparsers)` adds the command to `nnc`'s parser; `run(args)`
runs it. The trainer comes from `nnc.train`.

Steps:
1. Build the optimizer from the flags (defaults as `torch.optim`; SGD needs
   `--lr`); check that the output files can be written, before any work.
2. Read `DATA.npz` (`allow_pickle=False`): `x` and `y`, optionally `x_val`
   and `y_val` (both or neither); every other array is ignored with a
   warning. Each array must hold real, finite numbers, one entry per example
   along its first axis.
3. `nnc.train(MODEL, loss, optimizer, batch=min(--batch, examples), weights,
   dims, seed)`; then the arrays are checked against the model: `x` against
   its input shape, `y` against its output and the loss (class indices in
   range for cross entropy). `--resume` loads the optimizer state.
4. Each epoch draws a permutation from `np.random.Generator(PCG64(seed))`
   (one generator for the whole run: every epoch differs, every run with the
   same seed repeats) and steps through it in batches of `--batch`; the last
   batch keeps the remaining examples (PyTorch DataLoader's default,
   `drop_last=False`). A `tqdm` bar on stderr shows the running loss (the
   mean over the epoch's examples so far) and examples per second.
5. After each epoch one line on stdout: the epoch's training loss and, with
   validation data, the validation loss (eval mode, the mean over all
   validation elements) and for cross entropy the accuracy.
6. Write the weights (`numpy.savez` to exactly the given path) and the
   optimizer state, and print their paths.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import zipfile
from typing import Any

import numpy as np

from ..runtime.arrayfile import check_sizes, memory_bytes
from ..runtime.losses import LOSS_FUNCTIONS, LOSSES, accuracy_count
from ..runtime.optim import OPTIMIZERS, OptimizerError
from ..runtime.trainer_base import DataError
from .cli_common import FlagError, add_batch, add_dims, guarded, nonnegative, positive, real
from .diagnostics import UserError

DATA_ARRAYS = ("x", "y", "x_val", "y_val")


class OutputError(UserError, OSError):
    """An output file of `nnc train` that cannot be written."""


# ------------------------------------------------------------------ the parser

def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `nnc train` to the subparsers of `nnc`'s parser."""
    text = "train a model on arrays from a .npz file; write its weights with PyTorch keys"
    p = subparsers.add_parser("train", help=text, description=text)
    p.add_argument("model", metavar="MODEL.nn", help="the model file")
    p.add_argument("--data", required=True, metavar="DATA.npz",
                   help="arrays x and y, optionally x_val and y_val")
    p.add_argument("--loss", choices=LOSSES, default="cross_entropy", help="default: cross_entropy")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam", help="default: adam")
    p.add_argument("--lr", type=real, metavar="F", help="learning rate (required for sgd; adam/adamw: 0.001)")
    p.add_argument("--momentum", type=real, metavar="F", help="sgd's momentum (default 0)")
    p.add_argument("--weight-decay", type=real, metavar="F",
                   help="default: 0 (sgd, adam), 0.01 (adamw, decoupled)")
    add_batch(p, default=32, help="examples per step (default 32)")
    p.add_argument("--epochs", type=positive, default=1, metavar="N", help="passes over the data (default 1)")
    p.add_argument("--seed", type=nonnegative, default=0, metavar="S",
                   help="seeds the initialisation, the shuffling and dropout (default 0)")
    p.add_argument("--weights", metavar="INIT", help="initial weights, .npz or .safetensors (default: seeded)")
    p.add_argument("--resume", metavar="OPT.npz", help="optimizer state to continue from (--save-optimizer's file)")
    add_dims(p)
    p.add_argument("-o", "--output", required=True, metavar="WEIGHTS.npz", help="where to write the trained weights")
    p.add_argument("--save-optimizer", metavar="OPT.npz", help="where to write the optimizer state")
    return p


# ------------------------------------------------------------------ running

def run(args: argparse.Namespace) -> int:
    """Train as the arguments say; the exit code (`cli_common.guarded`)."""
    return guarded(_run, args)


def _run(args: argparse.Namespace) -> int:
    optimizer = make_optimizer(args.optimizer, args.lr, args.momentum, args.weight_decay)
    if args.save_optimizer and os.path.abspath(args.output) == os.path.abspath(args.save_optimizer):
        raise FlagError("-o and --save-optimizer name the same file")
    _check_outputs(args)
    try:
        return _train(args, optimizer)
    except KeyboardInterrupt:
        print("\nnnc train: interrupted; nothing was written", file=sys.stderr)
        raise


def make_optimizer(name: str, lr: float | None, momentum: float | None, weight_decay: float | None):
    """The optimizer the flags describe; `FlagError` (exit 2) for flags that
    do not apply or values torch.optim refuses."""
    kwargs: dict[str, float] = {}
    if name == "sgd":
        if lr is None:
            raise FlagError("--optimizer sgd needs --lr (SGD has no default learning rate)")
        if momentum is not None:
            kwargs["momentum"] = momentum
    elif momentum is not None:
        raise FlagError(f"--momentum applies to --optimizer sgd only, not {name}")
    if lr is not None:
        kwargs["lr"] = lr
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    try:
        return OPTIMIZERS[name](**kwargs)
    except OptimizerError as e:
        raise FlagError(str(e)) from None


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse outputs that cannot be written before training, not after."""
    paths = [args.output] + ([args.save_optimizer] if args.save_optimizer else [])
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise OutputError(f"cannot write `{path}`: it is a folder")
        if not os.path.isdir(folder):
            raise OutputError(f"cannot write `{path}`: the folder `{folder}` does not exist")


def _dims(args: argparse.Namespace, data: dict) -> dict[str, int] | None:
    """`--dim` sizes, and for every other named dimension of the model's
    input the longest the data holds (as `nnc run` sizes it from its input)."""
    from .cli import _dims_from_inputs
    from .diagnostics import CompileError, UserError
    from .frontend import check
    try:
        graph = check(args.model).graph
    except (CompileError, UserError, OSError):
        return dict(args.dim) or None      # nnc.train reports it
    if len(graph.inputs) != 1:
        return dict(args.dim) or None
    name = graph.inputs[0].name
    found: dict[str, int] = {}
    for key in ("x", "x_val"):
        if key in data and hasattr(data[key], "ndim"):
            for d, size in _dims_from_inputs(graph, {name: data[key]}).items():
                found[d] = max(found.get(d, 0), size)
    return {**found, **dict(args.dim)} or None


def _train(args: argparse.Namespace, optimizer) -> int:
    import nnc

    data = load_data(args.data)
    n = len(data["x"])
    trainer = nnc.train(args.model, loss=args.loss, optimizer=optimizer, batch=min(args.batch, n),
                        weights=args.weights, dims=_dims(args, data), target="numpy", seed=args.seed,
                        keep_gradients=False, capacity=None)
    x, y = trainer.check_data(data["x"], data["y"])
    val = None
    if "x_val" in data:
        val = trainer.check_data(data["x_val"], data["y_val"], x_name="x_val", y_name="y_val")
    if args.resume:
        trainer.load_optimizer_state(args.resume)
    batch = trainer.batch
    rng = np.random.Generator(np.random.PCG64(args.seed))
    xbuf = np.empty((batch, *x.shape[1:]), dtype=x.dtype)
    ybuf = np.empty((batch, *y.shape[1:]), dtype=y.dtype)
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(n)
        train_loss = _epoch(trainer, x, y, order, xbuf, ybuf, f"epoch {epoch}/{args.epochs}")
        line = f"epoch {epoch}/{args.epochs}: train loss {train_loss:.6g}"
        if val is not None:
            val_loss, accuracy = evaluate(trainer, *val, args.loss)
            line += f", val loss {val_loss:.6g}"
            if accuracy is not None:
                line += f", val accuracy {100 * accuracy:.2f}%"
        print(line, flush=True)
        if not math.isfinite(train_loss):
            print(f"warning: the training loss is {train_loss} (a smaller --lr may help)", file=sys.stderr)
    _save(args.output, trainer.state_dict())
    print(args.output)
    if args.save_optimizer:
        _save(args.save_optimizer, trainer.optimizer_state_dict())
        print(args.save_optimizer)
    return 0


def _epoch(trainer, x: np.ndarray, y: np.ndarray, order: np.ndarray, xbuf: np.ndarray, ybuf: np.ndarray,
           desc: str) -> float:
    """One pass in the order given; the mean of the step losses weighted by
    their examples."""
    from tqdm import tqdm

    n = len(order)
    batch = len(xbuf)
    total = 0.0
    seen = 0
    tty = sys.stderr.isatty()
    with tqdm(total=n, desc=desc, unit="ex", file=sys.stderr, mininterval=0.1 if tty else 10.0,
              dynamic_ncols=True) as bar:
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            m = len(idx)
            xb = np.take(x, idx, axis=0, out=xbuf[:m])
            yb = np.take(y, idx, axis=0, out=ybuf[:m])
            try:
                loss = trainer.step(xb, yb)
            except ValueError as e:     # PyTorch's DataLoader(drop_last=False) fails the same way
                if m != 1 or "more than one value per channel" not in str(e):
                    raise
                if n == 1:
                    raise DataError(f"`x` holds 1 example, and {e}") from None
                raise DataError(f"the last batch holds 1 example ({n} examples, --batch {batch}), and {e}; "
                                f"use a --batch that leaves more than one example over") from None
            total += loss * m
            seen += m
            bar.update(m)
            bar.set_postfix_str(f"loss {total / seen:.4f}", refresh=False)
    return total / seen


def evaluate(trainer, x: np.ndarray, y: np.ndarray, loss: str) -> tuple[float, float | None]:
    """The loss over a whole data set in eval mode (`predict`), in batches;
    and the accuracy for cross entropy."""
    fn = LOSS_FUNCTIONS[loss]
    total = 0.0
    elements = 0
    correct = 0
    grad = None
    for start in range(0, len(x), trainer.batch):
        out = trainer.predict(x[start:start + trainer.batch])
        yb = y[start:start + trainer.batch]
        if grad is None or grad.shape[1:] != out.shape[1:]:
            grad = np.empty((trainer.batch, *out.shape[1:]), dtype=np.float32)
        count = out.size // out.shape[-1] if loss == "cross_entropy" else out.size
        total += fn(out, yb, grad[:len(out)]) * count
        elements += count
        if loss == "cross_entropy":
            correct += accuracy_count(out, yb)
    return total / elements, (correct / elements if loss == "cross_entropy" else None)


# ------------------------------------------------------------------ files

def load_data(path: str) -> dict[str, np.ndarray]:
    """The arrays of a data file, checked for what does not need the model:
    presence, real finite numbers, one entry per example; `DataError`
    naming the file and the array otherwise."""
    if not os.path.exists(path):
        raise DataError(f"data file `{path}` does not exist")
    if not os.path.isfile(path):
        raise DataError(f"data file `{path}` is not a regular file")
    check_sizes(path, DataError, memory_bytes(), "this machine's memory")
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise DataError(f"`{path}` is not a readable .npz file ({_reason(e)})") from None
    if not hasattr(npz, "files"):
        raise DataError(f"`{path}` holds a single array; write the data with numpy.savez(path, x=..., y=...)")
    with npz:
        names = list(npz.files)
        missing = [k for k in ("x", "y") if k not in names]
        if missing:
            held = ", ".join(f"`{k}`" for k in names) or "nothing"
            raise DataError(f"`{path}` has no array " + " or ".join(f"`{k}`" for k in missing)
                            + f" (it holds {held}); write it with numpy.savez(path, x=..., y=...)")
        for a, b in (("x_val", "y_val"), ("y_val", "x_val")):
            if a in names and b not in names:
                raise DataError(f"`{path}` has `{a}` but no `{b}`: validation needs both")
        arrays: dict[str, np.ndarray] = {}
        for k in DATA_ARRAYS:
            if k in names:
                try:
                    arrays[k] = npz[k]
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                    raise DataError(f"array `{k}` in `{path}` cannot be read ({_reason(e)})") from None
    ignored = [k for k in names if k not in DATA_ARRAYS]
    if ignored:
        print(f"warning: `{path}`: ignoring array{'s' if len(ignored) > 1 else ''} "
              + ", ".join(f"`{k}`" for k in ignored), file=sys.stderr)
    for x_name, y_name in (("x", "y"), ("x_val", "y_val")):
        if x_name not in arrays:
            continue
        xs, ys = arrays[x_name], arrays[y_name]
        for k, a in ((x_name, xs), (y_name, ys)):
            if a.dtype.kind not in "fiu":
                raise DataError(f"`{k}` holds {a.dtype} values; expected real numbers")
            if a.ndim == 0:
                raise DataError(f"`{k}` is a single number; expected one entry per example along its first axis")
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                bad = int(np.flatnonzero(~np.isfinite(a).reshape(len(a), -1).all(axis=1))[0])
                raise DataError(f"`{k}` holds NaN or infinite values (first in example {bad})")
        if len(xs) == 0:
            raise DataError(f"`{x_name}` holds no examples")
        if len(ys) != len(xs):
            raise DataError(f"`{y_name}` has {len(ys)} entries but `{x_name}` has {len(xs)} examples; "
                            f"they must pair up along the first axis")
    return arrays


def _save(path: str, arrays: dict[str, np.ndarray]) -> None:
    try:
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    except OSError as e:
        raise OutputError(f"cannot write `{path}` ({e.strerror or _reason(e)})") from None


def _reason(e: BaseException) -> str:
    return (str(e).strip() or type(e).__name__).splitlines()[0][:200]
