"""Compiling generated C and calling it from Python: the `target="c"` model.

In:  a C plan (`build.Plan`: the optimised graph and its layout) and weights.
Out: `CModel`, with exactly the interface of a generated NumPy model
     (`runtime.module.ModelBase`: `model(x)`, `input_shapes`,
     `output_shapes`, `load_weights`, `state_dict`, and `step`/`stream`/
     `reset` for streaming plans), running the compiled plan through
     `ctypes` one example at a time.

The weights are `static const` arrays in the C file, so loading weights
regenerates the C and compiles it again; compilation waits for the first
call, so building a model and then loading its weights compiles once.
Shared libraries are cached by the hash of their sources and the compiler
command under `$XDG_CACHE_HOME/nnc` (default `~/.cache/nnc`).

A streaming plan keeps one context (arena and carried state) per example
of the batch; other plans run every example in one context.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...runtime import weights as W
from ...runtime.module import ModelBase
from ..dims import Sym, evaluate
from ..memory import min_dims

CFLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-march=native")


class CompilerMissing(RuntimeError):
    """No C compiler on this machine."""


def find_compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise CompilerMissing('target="c" needs a C compiler (cc, gcc or clang) on PATH, or one named by $CC; '
                          'none was found (target="numpy" needs none)')


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "nnc"
    path.mkdir(parents=True, exist_ok=True)
    return path


def compile_shared(files: Mapping[str, str], name: str, flags: tuple[str, ...] = CFLAGS) -> Path:
    """Compile the plan's C files into a shared library, cached by content hash."""
    cc = find_compiler()
    digest = hashlib.sha256()
    for fname in sorted(files):
        digest.update(fname.encode() + b"\0" + files[fname].encode() + b"\0")
    digest.update("\0".join((cc, *flags)).encode())
    lib = cache_dir() / f"{name}-{digest.hexdigest()[:24]}.so"
    if lib.exists():
        return lib
    with tempfile.TemporaryDirectory(prefix="nnc-") as tmp:
        for fname, text in files.items():
            Path(tmp, fname).write_text(text)
        out = Path(tmp) / lib.name
        proc = subprocess.run([cc, *flags, "-o", str(out), str(Path(tmp) / f"{name}.c"), "-lm"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the C compiler failed on the generated {name}.c (a bug in nnc):\n"
                               f"{proc.stderr[-4000:]}")
        os.replace(out, lib)      # atomic: a concurrent build never sees half a library
    return lib


def _api_shape(shape) -> tuple:
    return tuple(d if isinstance(d, int) else str(d) for d in shape)


class CModel(ModelBase):
    """The C plan behind the Python API of INTERFACES.md section 3."""

    def __init__(self, plan: Any, batch: int = 1, weights: Any = None):
        g = plan.graph
        self._plan = plan
        self.NAME = plan.name
        self.INPUTS = {i.name: _api_shape(i.shape) for i in g.inputs}
        self.OUTPUTS = {o.name: _api_shape(g.shape_of(o.value)) for o in g.outputs}
        self._out_shapes = {o.name: g.shape_of(o.value) for o in g.outputs}
        self.DIMS = dict(g.bounds)
        self.MIN_DIMS = min_dims(g)
        self.PARAMS = {k: W.Spec(p.shape, p.init) for k, p in g.param_specs().items()}
        self.ARENA_BYTES = plan.layout.plan.arena_bytes
        self.STREAMING = g.streaming
        if g.streaming:
            t = g.time_dim
            self.TIME_AXES = {name: next(i for i, d in enumerate(shape) if isinstance(d, Sym) and str(d) == t)
                              for name, shape in [(i.name, i.shape) for i in g.inputs]
                              + [(o.name, g.shape_of(o.value)) for o in g.outputs]}
        self._lib: ctypes.CDLL | None = None
        self._contexts: list[Any] = []
        self._outputs: dict[tuple, list[np.ndarray]] = {}
        super().__init__(batch, weights)

    # ------------------------------------------------------------ ModelBase hooks

    def _setup(self) -> None:
        """Nothing to allocate before the library exists (see `_ensure`)."""

    def _prepare(self) -> None:
        self._lib = None            # the next call compiles the C with the new weights

    def _execute(self, arrays: list[np.ndarray], batch: int, dims: dict[str, int]) -> tuple:
        self._ensure()
        key = (batch, *dims.values())
        outs = self._outputs.get(key)
        if outs is None:
            outs = self._outputs[key] = [
                np.zeros((batch, *(evaluate(d, dims) if isinstance(d, Sym) else d for d in shape)), np.float32)
                for shape in self._out_shapes.values()]
        lengths = [ctypes.c_int(v) for v in dims.values()]     # none for a plan without named dimensions
        for b in range(batch):
            ctx = self._contexts[b if self.STREAMING else 0]
            ins = [ctypes.c_void_p(a[b].ctypes.data) for a in arrays]
            ys = [ctypes.c_void_p(o[b].ctypes.data) for o in outs]
            rc = self._run(ctx, *ins, *lengths, *ys)
            if rc != 0:
                size = ", ".join(f"{k}={v}" for k, v in dims.items())
                raise ValueError(f"{self.NAME}: the input length ({size}) is too short for this model: "
                                 f"a layer's output would have no steps")
        return tuple(outs)

    def _reset_state(self) -> None:
        self._ensure()
        for ctx in self._contexts:
            self._lib_reset(ctx)

    # ------------------------------------------------------------ the library

    def _ensure(self) -> None:
        if self._lib is not None:
            return
        from . import c as c_gen
        files = c_gen.generate(self._plan.graph, self._plan.layout, name=self.NAME, state=self._state)
        path = compile_shared(files, self.NAME)
        lib = ctypes.CDLL(str(path))
        name = self.NAME
        size_fn = getattr(lib, f"{name}_ctx_size")
        size_fn.restype = ctypes.c_size_t
        size = int(size_fn())
        init = getattr(lib, f"{name}_init")
        init.argtypes = [ctypes.c_void_p]
        init.restype = None
        if not self._contexts:
            count = self.batch if self.STREAMING else 1
            self._contexts = [(ctypes.c_char * size)() for _ in range(count)]
            for ctx in self._contexts:
                init(ctx)
        n_in, n_out = len(self.INPUTS), len(self.OUTPUTS)
        if self.STREAMING:
            fn = getattr(lib, f"{name}_stream")
            fn.argtypes = [ctypes.c_void_p] * (1 + n_in) + [ctypes.c_int] + [ctypes.c_void_p] * n_out
            reset = getattr(lib, f"{name}_reset")
            reset.argtypes = [ctypes.c_void_p]
            reset.restype = None
            self._lib_reset = reset
        elif self.DIMS:
            fn = getattr(lib, f"{name}_forward_len")
            fn.argtypes = [ctypes.c_void_p] * (1 + n_in) + [ctypes.c_int] * len(self.DIMS) + [ctypes.c_void_p] * n_out
        else:
            fn = getattr(lib, f"{name}_forward")
            fn.argtypes = [ctypes.c_void_p] * (1 + n_in + n_out)
        fn.restype = ctypes.c_int
        self._run = fn
        self._lib = lib
