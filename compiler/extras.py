"""Optional extras: the packages and programs only the bridges need.

In:  nothing.
Out: `require_onnx()` -> the `onnx` module, `require_onnxruntime()`, and
     `require_dot()` -> the path of Graphviz's `dot`; each raises
     `MissingExtra` (a `UserError`: the CLI prints it and exits 1) saying what
     to install when the extra is missing.
"""

from __future__ import annotations

import shutil

from .diagnostics import UserError

ONNX_HINT = 'pip install "nnc[onnx]" (in a checkout of nnc: pip install -e ".[onnx]")'
DOT_HINT = "apt install graphviz (or brew install graphviz), or write a .dot file instead"


class MissingExtra(UserError, RuntimeError):
    """An optional dependency is not installed; the message says what to install."""


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise MissingExtra(f"this needs the `onnx` package, which is not installed: {ONNX_HINT}") from None
    except Exception as e:      # noqa: BLE001 - a broken install (a protobuf mismatch raises TypeError)
        raise MissingExtra(f"the `onnx` package is installed but fails to import ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); reinstall it: {ONNX_HINT}") from None
    return onnx


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtra(f"this needs the `onnxruntime` package, which is not installed: {ONNX_HINT}") from None
    except Exception as e:      # noqa: BLE001 - a broken install
        raise MissingExtra(f"the `onnxruntime` package is installed but fails to import ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); reinstall it: {ONNX_HINT}") from None
    return onnxruntime


def require_dot() -> str:
    path = shutil.which("dot")
    if path is None:
        raise MissingExtra(f"drawing .svg or .png needs Graphviz's `dot` command, which is not installed: {DOT_HINT}")
    return path
