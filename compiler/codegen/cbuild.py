"""Compiling generated C and calling it from Python: the `target="c"` model.

In:  a C plan (`build.Plan`: the optimised graph and its layout) and weights.
Out: `CModel`, with exactly the interface of a generated NumPy model
     (`runtime.module.ModelBase`: `model(x)`, `input_shapes`,
     `output_shapes`, `load_weights`, `state_dict`, and `step`/`stream`/
     `reset` for streaming plans), running the compiled plan through
     `ctypes` one example at a time.

Code and weights are apart. The shared library is generated without weights
(`c.generate(..., embed_weights=False)`), so it depends on the model's
structure only and is cached by it: building the same structure again, or
loading other weights, compiles nothing. The weights are packed in NumPy
(`c.pack_weights`) into one array that the model keeps alive and every
context points at (`NAME_init(ctx, weights)`, `NAME_set_weights`). The
library is compiled when the model is built, not at its first call; when
that takes more than a second, one line on stderr says so.

Shared libraries are cached by the hash of their sources and the compiler
command under `$XDG_CACHE_HOME/nnc` (default `~/.cache/nnc`); when that
folder cannot be written, under a temporary folder of this process.
Failures are `UserError`s with one line: no compiler (`CompilerMissing`),
a compiler that does not work (`CompilerFailed`, naming it); only the
default compiler failing on nnc's own code while it compiles a trivial
program is reported as a bug in nnc.

A streaming plan keeps one context (arena and carried state) per example
of the batch; other plans run every example in one context. The named
dimensions are passed in `c.dim_order`, the order of the C API.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...runtime import weights as W
from ...runtime.module import ModelBase
from ..diagnostics import UserError
from ..dims import Sym, evaluate
from ..ir import integer_limits
from ..memory import min_dims
from . import c as c_gen

CFLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-march=native")
ANNOUNCE_AFTER = 1.0    # seconds of compiling before saying so on stderr
_ALIGN = 64             # bytes: where each model context starts (a cache line, an AVX-512 vector)


class CompilerMissing(UserError, RuntimeError):
    """No C compiler on this machine."""


class CompilerFailed(UserError, RuntimeError):
    """The C compiler did not work (it is not nnc's generated code that is wrong)."""


def compiler_command() -> list[str]:
    """The compiler and its own leading arguments: `$CC` if set (it may hold
    arguments, `ccache gcc`), else the first of cc, gcc, clang on PATH."""
    cc = os.environ.get("CC", "").strip()
    if cc:
        try:
            parts = shlex.split(cc)
        except ValueError:
            parts = []
        path = shutil.which(parts[0]) if parts else None
        if path is None:
            raise CompilerMissing(f"$CC is {cc!r}, which is not a program on PATH: set CC to a C compiler "
                                  f"(cc, gcc or clang) or unset it")
        return [path, *parts[1:]]
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    raise CompilerMissing('target="c" needs a C compiler (cc, gcc or clang) on PATH, or one named by $CC; '
                          'none was found (target="numpy" needs none)')


def find_compiler() -> str:
    """The compiler's path (see `compiler_command`)."""
    return compiler_command()[0]


_FALLBACK_CACHE: Path | None = None


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/nnc` (an absolute `XDG_CACHE_HOME`, else `~/.cache`);
    if that cannot be written, a temporary folder private to this process
    (removed when it exits)."""
    global _FALLBACK_CACHE
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "nnc"
    if _writable(path):
        return path
    if _FALLBACK_CACHE is None or not _FALLBACK_CACHE.is_dir():
        _FALLBACK_CACHE = Path(tempfile.mkdtemp(prefix="nnc-cache-"))
        atexit.register(shutil.rmtree, _FALLBACK_CACHE, True)
    return _FALLBACK_CACHE


def _first_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    short = " | ".join(lines[:count])
    return (short[:400] + "...") if len(short) > 400 else (short or "no message")


def _compiler_works(cmd: list[str]) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="nnc-probe-") as tmp:
        src = Path(tmp, "probe.c")
        src.write_text("int nnc_probe(int x) { return x + 1; }\n")
        try:
            proc = subprocess.run([*cmd, "-std=c99", "-fPIC", "-shared", "-o", str(Path(tmp, "probe.so")), str(src)],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, str(e)
        return proc.returncode == 0, proc.stderr


def _describe(cmd: list[str]) -> str:
    cc = os.environ.get("CC", "").strip()
    return f"`{cc}` (from $CC)" if cc else f"`{cmd[0]}`"


def compile_shared(files: Mapping[str, str], name: str, flags: tuple[str, ...] = CFLAGS,
                   what: str | None = None) -> Path:
    """Compile the plan's C files into a shared library, cached by content
    hash. `what` (e.g. "resnet18 (C, 11.7 M parameters)") is announced on
    stderr when compiling takes longer than ANNOUNCE_AFTER seconds."""
    cmd = compiler_command()
    digest = hashlib.sha256()
    for fname in sorted(files):
        digest.update(fname.encode() + b"\0" + files[fname].encode() + b"\0")
    digest.update("\0".join((*cmd, *flags)).encode())
    cache = cache_dir()
    lib = cache / f"{name}-{digest.hexdigest()[:24]}.so"
    if lib.exists():
        return lib
    with tempfile.TemporaryDirectory(prefix="nnc-") as tmp:
        for fname, text in files.items():
            Path(tmp, fname).write_text(text)
        out = Path(tmp) / lib.name
        start = time.monotonic()
        try:
            proc = subprocess.Popen([*cmd, *flags, "-o", str(out), str(Path(tmp) / f"{name}.c"), "-lm"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as e:
            raise CompilerFailed(f"the C compiler {_describe(cmd)} could not be started: {e}") from None
        announced = False
        try:
            stdout, stderr = proc.communicate(timeout=ANNOUNCE_AFTER)
        except subprocess.TimeoutExpired:
            announced = True
            print(f"nnc: compiling {what or name}...", end="", file=sys.stderr, flush=True)
            stdout, stderr = proc.communicate()
        if announced:
            print(f" {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
        if proc.returncode != 0:
            works, probe_err = _compiler_works(cmd)
            if not works or os.environ.get("CC", "").strip():
                reason = _first_lines(stderr or stdout or probe_err)
                raise CompilerFailed(f"the C compiler {_describe(cmd)} failed (exit {proc.returncode}) on the "
                                     f"generated {name}.c{'' if works else ' and on a one-line test program'}: "
                                     f"{reason}")
            raise RuntimeError(f"the C compiler `{cmd[0]}` failed on the generated {name}.c (a bug in nnc):\n"
                               f"{stderr[-4000:]}")
        if not Path(out).is_file():
            raise CompilerFailed(f"the C compiler {_describe(cmd)} reported success on the generated {name}.c "
                                 f"but wrote no library")
        try:
            os.replace(out, lib)      # atomic: a concurrent build never sees half a library
        except OSError:
            lib = cache_dir() / lib.name   # the cache went away meanwhile: a private temporary one
            shutil.copyfile(out, lib)
    return lib


def _api_shape(shape) -> tuple:
    return tuple(d if isinstance(d, int) else str(d) for d in shape)


def _parameter_text(count: int) -> str:
    return f"{count / 1e6:.1f} M" if count >= 100_000 else f"{count:,}"


class CModel(ModelBase):
    """The C plan behind the Python API of INTERFACES.md section 3."""

    def __init__(self, plan: Any, batch: int = 1, weights: Any = None):
        g = plan.graph
        self._plan = plan
        self.NAME = plan.name
        self.INPUTS = {i.name: _api_shape(i.shape) for i in g.inputs}
        self.INTEGER_INPUTS = integer_limits(g)        # C reads them as `const int32_t *`
        self.OUTPUTS = {o.name: _api_shape(g.shape_of(o.value)) for o in g.outputs}
        self._out_shapes = {o.name: g.shape_of(o.value) for o in g.outputs}
        self.DIMS = dict(g.bounds)
        self._dim_order = c_gen.dim_order(g.bounds)      # the C API's order of the named dimensions
        self.MIN_DIMS = min_dims(g)
        self.PARAMS = {k: W.Spec(p.shape, p.init) for k, p in g.param_specs().items()}
        self.ARENA_BYTES = plan.layout.plan.arena_bytes
        self.STREAMING = g.streaming
        if g.streaming:
            t = g.time_dim
            self.TIME_AXES = {name: next(i for i, d in enumerate(shape) if isinstance(d, Sym) and str(d) == t)
                              for name, shape in [(i.name, i.shape) for i in g.inputs]
                              + [(o.name, g.shape_of(o.value)) for o in g.outputs]}
            if g.warmup:
                self.WARMUP = dict(g.warmup)
        self._lib: ctypes.CDLL | None = None
        self._contexts: list[Any] = []            # aligned pointers into `_buffers`
        self._buffers: list[Any] = []
        self._outputs: dict[tuple, list[np.ndarray]] = {}
        self._packed: np.ndarray | None = None     # the weights every context points at: kept alive here
        super().__init__(batch, weights)

    # ------------------------------------------------------------ ModelBase hooks

    def _setup(self) -> None:
        """Compile (or find in the cache) the structure's library and make the
        contexts, before any weights exist: building the model compiles."""
        self._load_library()

    def _prepare(self) -> None:
        """Pack `self._state` and point every context at it: no compiling."""
        packed = c_gen.pack_weights(self._plan.graph, self._state)
        for ctx in self._contexts:
            self._set_weights(ctx, packed.ctypes.data)
        self._packed = packed       # the old array is freed only after no context points at it

    def _execute(self, arrays: list[np.ndarray], batch: int, dims: dict[str, int]) -> tuple:
        key = (batch, *(dims.get(d, self.DIMS[d]) for d in self._dim_order))
        outs = self._outputs.get(key)
        if outs is None:
            outs = self._outputs[key] = [
                np.zeros((batch, *(evaluate(d, dims) if isinstance(d, Sym) else d for d in shape)), np.float32)
                for shape in self._out_shapes.values()]
        # in the order of the C parameters (c.dim_order), not the order of the inputs
        lengths = [ctypes.c_int(v) for v in key[1:]]     # none for a plan without named dimensions
        for b in range(batch):
            ctx = self._contexts[b if self.STREAMING else 0]
            ins = [ctypes.c_void_p(a[b].ctypes.data) for a in arrays]
            ys = [ctypes.c_void_p(o.ctypes.data + b * o.strides[0]) for o in outs]   # o[b] may be one number
            rc = self._run(ctx, *ins, *lengths, *ys)
            if rc == 2:      # positional / causal attention of a streaming plan (runtime/c/nnc_v2_attention.h)
                raise ValueError(f"{self.NAME}: the stream is longer than the time bound "
                                 f"({', '.join(f'{k}={v}' for k, v in self.DIMS.items())}) of its positional table "
                                 f"or key/value cache; call reset() to start a new sequence")
            if rc == 3:      # an index outside an embedding table (the input checks catch it first)
                raise ValueError(f"{self.NAME}: an integer input holds an index outside its embedding table")
            if rc != 0:
                size = ", ".join(f"{k}={v}" for k, v in dims.items())
                raise ValueError(f"{self.NAME}: the input length ({size}) is too short for this model: "
                                 f"a layer's output would have no steps")
        return tuple(outs)

    def _reset_state(self) -> None:
        for ctx in self._contexts:
            self._lib_reset(ctx)

    def _save_state(self) -> list[bytes]:
        return [ctypes.string_at(ctx, self._ctx_size) for ctx in self._contexts]

    def _restore_state(self, saved: list[bytes]) -> None:
        for ctx, data in zip(self._contexts, saved):
            ctypes.memmove(ctx, data, self._ctx_size)

    # ------------------------------------------------------------ the library

    def _load_library(self) -> None:
        g = self._plan.graph
        files = c_gen.generate(g, self._plan.layout, name=self.NAME, embed_weights=False)
        count = sum(int(np.prod(s.shape)) for s in self.PARAMS.values())
        path = compile_shared(files, self.NAME, what=f"{self.NAME} (C, {_parameter_text(count)} parameters)")
        lib = ctypes.CDLL(str(path))
        name = self.NAME
        size_fn = getattr(lib, f"{name}_ctx_size")
        size_fn.restype = ctypes.c_size_t
        size = self._ctx_size = int(size_fn())
        init = getattr(lib, f"{name}_init")
        init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        init.restype = None
        set_weights = getattr(lib, f"{name}_set_weights")
        set_weights.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        set_weights.restype = None
        self._set_weights = set_weights
        count = self.batch if self.STREAMING else 1
        # each context 64-byte aligned (a cache line, an AVX-512 vector): ctypes' large buffers sit 16
        # bytes past a page, and the kernels' wide loads then straddle cache lines (~10% on MobileNetV2)
        self._buffers = [(ctypes.c_char * (size + _ALIGN))() for _ in range(count)]
        self._contexts = [ctypes.c_void_p(-(-ctypes.addressof(buf) // _ALIGN) * _ALIGN) for buf in self._buffers]
        for ctx in self._contexts:
            init(ctx, None)          # no weights yet: `_prepare` gives them
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
