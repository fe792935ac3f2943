"""Compiling generated C and calling it from Python: the `target="c"` model.

In:  a C plan (`build.Plan` with `NAME.c`, `NAME.h`, `nnc_kernels.h`).
Out: `CModel`, with the same interface as a generated NumPy model
     (`model(x)`, `input_shapes`, `output_shapes`, `load_weights`,
     `state_dict`, and `step`/`stream`/`reset` for streaming plans), running
     the shared library through `ctypes` one example at a time.

Shared libraries are cached by the hash of their sources and compiler flags
under `$XDG_CACHE_HOME/nnc` (default `~/.cache/nnc`), so a model compiles
once. Weights are `static const` arrays in the C file: loading new weights
regenerates and recompiles it (cached too).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ...runtime import weights as W

CFLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-march=native", "-ffp-contract=off")


class CompilerMissing(RuntimeError):
    """No C compiler on this machine."""


def find_compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise CompilerMissing("target=\"c\" needs a C compiler (cc, gcc or clang) on PATH; none was found")


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
    digest.update(" ".join((cc, *flags)).encode())
    lib = cache_dir() / f"{name}-{digest.hexdigest()[:20]}.so"
    if lib.exists():
        return lib
    with tempfile.TemporaryDirectory(prefix="nnc-") as tmp:
        for fname, text in files.items():
            Path(tmp, fname).write_text(text)
        out = Path(tmp) / lib.name
        proc = subprocess.run([cc, *flags, "-o", str(out), str(Path(tmp) / f"{name}.c"), "-lm"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the C compiler failed on the generated {name}.c (an nnc bug):\n{proc.stderr[-4000:]}")
        os.replace(out, lib)      # atomic: a concurrent build never sees half a library
    return lib


class CModel:
    """The C plan behind the Python API."""

    def __init__(self, plan_fn: Callable[[Mapping[str, np.ndarray]], Any], meta: Mapping[str, Any],
                 batch: int, weights: Any):
        self._plan_fn = plan_fn            # state -> Plan with the C files for those weights
        self._meta = meta
        self.batch = batch
        self._specs = {k: W.Spec(s, init) for k, (s, init) in meta["params"].items()}
        state = W.default_init(self._specs) if weights is None else W.load(weights, self._specs)
        self._load(state)

    # ------------------------------------------------------------ weights

    def _load(self, state: dict[str, np.ndarray]) -> None:
        plan = self._plan_fn(state)
        name = plan.name
        path = compile_shared(plan.files, name)
        lib = ctypes.CDLL(str(path))
        self._lib = lib
        self._state = state
        m = self._meta
        self._ctx = ctypes.create_string_buffer(lib_size(lib, name))
        self._forward = getattr(lib, f"{name}_forward_len" if m["dims"] else f"{name}_forward")
        self._forward.restype = ctypes.c_int
        getattr(lib, f"{name}_init")(self._ctx)
        if m["streaming"]:
            self._reset = getattr(lib, f"{name}_reset")
            self._stream = getattr(lib, f"{name}_stream")
            self._stream.restype = ctypes.c_int

    def load_weights(self, weights: Any) -> None:
        self._load(W.load(weights, self._specs))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._state.items()}

    @property
    def input_shapes(self) -> dict[str, tuple]:
        return {k: tuple(v) for k, v in self._meta["inputs"].items()}

    @property
    def output_shapes(self) -> dict[str, tuple]:
        return {k: tuple(v) for k, v in self._meta["outputs"].items()}


def lib_size(lib: ctypes.CDLL, name: str) -> int:
    fn = getattr(lib, f"{name}_ctx_size")
    fn.restype = ctypes.c_size_t
    return int(fn())
