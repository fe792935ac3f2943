"""What every `nnc` subcommand shares: argument types, and how a command's
errors become exit codes (INTERFACES.md section 2).

In:  command-line text (the argument types); a command function and its
     parsed arguments (`guarded`).
Out: parsed values, or `argparse.ArgumentTypeError` (argparse prints it and
     exits 2); `guarded(command, args)` -> the exit code: the command's own,
     or 1 (the model or an input is wrong: diagnostics, or one `error:` line),
     2 (`FlagError`: flags argparse cannot check alone), 130 (Ctrl-C),
     70 (a bug in nnc: one line; `NNC_TRACEBACK=1` shows the traceback).
     Never a Python traceback.

`cli.py` (check, summary, compile, run), `train_cli.py`, `grow_cli.py` and
`bridges_cli.py` all take their argument types and their error handling
from here, so `nnc train --dim` and `nnc summary --dim` accept and refuse
the same text, and every command reports errors the same way.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from typing import Any, Callable, Sequence

from .diagnostics import CompileError, Diagnostic, UserError, printable, render_all

EXIT_INTERNAL = 70      # sysexits.h EX_SOFTWARE
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class FlagError(Exception):
    """A flag combination argparse cannot express (`--optimizer sgd` without
    `--lr`); `guarded` prints it as argparse would and returns 2."""


# ------------------------------------------------------------------ argument types

def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive(text: str) -> int:
    """An integer of at least 1 (`--batch`, `--epochs`)."""
    v = _integer(text, "a positive integer")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def nonnegative(text: str) -> int:
    """An integer of at least 0 (`--seed`)."""
    v = _integer(text, "a non-negative integer")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def real(text: str) -> float:
    """A finite number (`--lr`, `--momentum`)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def dim(text: str) -> tuple[str, int]:
    """`NAME=N`: a bound for a named dimension, N a positive integer."""
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


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(text: str) -> int:
    """Bytes: `4096`, `512M`, `8G`, `8GiB`, `1.5G` (binary units)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m or len(m.group(1)) > 30:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 8G, got {text!r}")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return value


def add_dims(parser: argparse.ArgumentParser) -> None:
    """`--dim NAME=N`, repeatable; `args.dim` is a list of (name, size)."""
    parser.add_argument("--dim", type=dim, action="append", default=[], metavar="NAME=N",
                        help="a bound for a named input dimension (repeatable)")


def add_batch(parser: argparse.ArgumentParser, default: int = 1,
              help: str = "the largest batch the plan serves (default 1)") -> None:
    parser.add_argument("--batch", type=positive, default=default, metavar="N", help=help)


# ------------------------------------------------------------------ errors to exit codes

def guarded(command: Callable[[Any], int], args: Any, subject: str | None = None) -> int:
    """Run `command(args)` and turn what it raises into an exit code and
    stderr text. `subject` names what failed in the closing line of a
    `CompileError` (default: the model path, `args.model`)."""
    try:
        code = command(args)
        sys.stdout.flush()      # a closed pipe shows here, inside the handlers below
        return code
    except CompileError as e:
        return report(e, subject if subject is not None else f"`{printable(str(args.model))}`")
    except FlagError as e:
        error_line(str(e), prefix=f"nnc {getattr(args, 'command', '') or ''}".rstrip() + ": error: ")
        return 2
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except UserError as e:
        error_line(str(e))
        return 1
    except MemoryError:
        error_line("out of memory: the model or its inputs are too large for this machine "
                   "(`--max-memory SIZE` refuses such plans before allocating)")
        return 1
    except OSError as e:
        error_line(_os_message(e))
        return 1
    except Exception as e:      # noqa: BLE001 - a bug: say so in one line, not with a traceback
        if os.environ.get("NNC_TRACEBACK"):
            raise
        error_line(f"internal error: {type(e).__name__}: {first_line(str(e))}",
                   "this is a bug in nnc; run again with NNC_TRACEBACK=1 to see where it happened")
        return EXIT_INTERNAL


def report(e: CompileError, subject: str) -> int:
    """Every diagnostic with its source line, then `error: SUBJECT failed
    with N errors`; a model file that cannot be read is one line. Returns 1."""
    if len(e.diagnostics) == 1 and e.diagnostics[0].code == "E0004" and not e.sources:
        error_line(e.diagnostics[0].message)      # the file cannot be read: there is no source to show
        return 1
    print_diagnostics(e.diagnostics, e.sources)
    n = sum(1 for d in e.diagnostics if str(d.severity) == "error")
    error_line(f"{subject} failed with {n} error{'s' if n != 1 else ''}")
    return 1


def print_diagnostics(diags: Sequence[Diagnostic], sources) -> None:
    for text in render_all(diags, sources):
        print(text, file=sys.stderr)
        print(file=sys.stderr)


def error_line(message: str, *more: str, prefix: str = "error: ") -> None:
    """`error: message` on stderr, with control characters (from a file
    name, say) escaped but the message's own line breaks kept; `more` lines
    follow as they are."""
    text = "\n".join(printable(line) for line in message.split("\n"))
    try:
        print(f"{prefix}{text}", *more, sep="\n", file=sys.stderr)
    except (OSError, ValueError):
        pass


def first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


def _os_message(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.strerror}: `{printable(str(e.filename))}`"
    return first_line(str(e)) or type(e).__name__


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so that the flush at
    exit does not raise again (the Python documentation's recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
