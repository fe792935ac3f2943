"""The base of every model object, NumPy and C: what does not depend on the plan.

In:  a subclass that sets the class attributes below and provides the plan:
     the generated NumPy module defines `_views(batch, *dims)` (the planned
     views of the arena for one batch size and the named-dimension sizes, in
     `DIMS` order) and `_run(views, *inputs)` (the kernel calls); the C model
     (`codegen/cbuild.py`) overrides `_setup`, `_execute`, `_reset_state`,
     `_save_state` and `_restore_state`.
Out: the Python API of INTERFACES.md section 3: `Model(batch=N, weights=...)`,
     `model(x)`, `model(x=x)`, `model(x, out=y)`, `input_shapes`,
     `output_shapes`, `load_weights`, `state_dict`, and for streaming plans
     `step`, `stream`, `reset`.

Memory. The arena is allocated once, when the model is built; views for a
batch size (and named-dimension sizes) are made on first use and kept, so a
call computes in memory that already exists. `_execute` returns internal
buffers (arena views, the C model's output buffers); this class copies them
into arrays that belong to the caller: fresh ones, or the caller's own given
as `out=` (one array, or a tuple for several outputs; checked for shape,
float32, C order and writability), which a call fills and returns without
allocating. An input that shares memory with the arena is copied into the
model's staging buffers first, so passing any array back in is safe.

Keywords. The API methods take the model's inputs positionally or by name;
their own `self` is positional-only, so inputs may be called `self`, `args`
or `kwargs`. The keyword for the caller's output arrays is `out`; a model
with an input named `out` takes that input by `out=` and the output arrays
by `out_=` (one more `_` for each further clash).

Threads. Every public entry (`model(...)`, `step`, `stream`, `reset`,
`load_weights`, `state_dict`) holds the instance's lock, so one model may be
shared by several threads: calls run one at a time, each with its own
inputs, and a streaming call's steps are never interleaved with another
call's. Separate instances run in parallel.

Weights. A compiled module that has its weights file (`NAME.npz` beside
it) loads it when no `weights=` is given; if the file is missing, building
the model raises `WeightsFileMissing` naming it, unless the caller asks for
the seeded default initialisation with `init="default"`. A model without a
weights file of its own (`nnc.build`) starts from the default
initialisation.
"""

from __future__ import annotations

import ast
import errno
import math
import os
import re
import threading
from typing import Any, Mapping

import numpy as np

from .errors import UserError
from .limits import Limits
from . import weights as W

INITS = (None, "default")


class WeightsFileMissing(UserError, FileNotFoundError):
    """A compiled module's weights file is not beside it."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.errno = errno.ENOENT
        self.filename = path

    def __str__(self) -> str:
        return self.args[0]


class ModelBase:
    NAME: str = ""
    INPUTS: Mapping[str, tuple] = {}          # name -> per-example shape (ints, or dim names)
    OUTPUTS: Mapping[str, tuple] = {}
    DIMS: Mapping[str, int] = {}              # named dimension -> bound (planned size)
    MIN_DIMS: Mapping[str, int] = {}          # named dimension -> the shortest length every layer can take
    PARAMS: Mapping[str, W.Spec] = {}         # state_dict key -> spec, schedule order
    ARENA_BYTES: int = 0                      # per example: the plan scales with the batch
    ARENA_LIMIT: int = Limits().arena         # the arena limit it was compiled with (`--max-memory`)
    WEIGHTS_FILE: str | None = None           # the .npz written beside the module, if any
    STREAMING: bool = False                   # a streaming plan: step / stream / reset
    TIME_AXES: Mapping[str, int] = {}         # streaming: per-example time axis of each input and output
    WARMUP: Mapping[str, int] = {}            # streaming: per output, the steps before its `valid` convolutions'
                                              # receptive field is full (a whole call drops them)
    GATES: tuple = ()                         # streaming, NumPy: (w, ((offset, bytes), ...)) per w ascending, the
                                              # state a layer after valid convolutions keeps clear for w steps
    _steps: int = 0                           # NumPy streaming: steps since reset, counted up to the last gate
    INTEGER_INPUTS: Mapping[str, int] = {}    # integer input -> rows of the table it indexes: [0, num)
    _source: str | None = None                # the model text nnc.build compiled (nnc.to_onnx reads it)

    def __init__(self, batch: int = 1, weights: str | os.PathLike | Mapping[str, Any] | None = None, *,
                 init: str | None = None):
        """`weights`: a `.npz`/`.safetensors` path or a dict of arrays.
        `init="default"`: the seeded default initialisation, also for a
        compiled module whose weights file is missing."""
        self._lock = threading.RLock()
        self._carried: int | None = None   # the batch whose state a stream carries (None: fresh state)
        if isinstance(batch, np.integer):
            batch = int(batch)
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        if init not in INITS:
            raise ValueError(f'init must be None or "default", got {init!r}')
        if init is not None and weights is not None:
            raise ValueError('give either weights or init="default", not both')
        need = batch * (self.ARENA_BYTES + sum(4 * math.prod(self._bound_shape(shape))
                                               for shape in self.INPUTS.values()))
        if need > self.ARENA_LIMIT:
            raise ValueError(f"batch={batch} needs {need:,} bytes for the arena and the inputs, more than the "
                             f"limit of {self.ARENA_LIMIT:,} this plan was compiled with: use a smaller batch, "
                             "or compile with a larger limit (`--max-memory`, `limits=`)")
        self.batch = batch
        self._setup()
        self._staging = {name: np.zeros((batch, *self._bound_shape(shape)),
                                        dtype=np.int32 if name in self.INTEGER_INPUTS else np.float32)
                         for name, shape in self.INPUTS.items()}
        self._view_cache: dict[tuple, Any] = {}
        self._shape_cache: dict[tuple, tuple] = {}
        if weights is None and init is None and self.WEIGHTS_FILE:
            if not os.path.isfile(self.WEIGHTS_FILE):
                raise WeightsFileMissing(
                    f"the weights file `{self.WEIGHTS_FILE}` of the compiled model `{self.NAME}` is missing: "
                    f"compile the model again, pass weights=PATH, or init=\"default\" for the seeded "
                    f"default weights", self.WEIGHTS_FILE)
            weights = self.WEIGHTS_FILE
        if weights is None:
            self._state = W.default_init(self.PARAMS)
        else:
            self._state = W.load(weights, self.PARAMS)
        self._prepare()

    # ------------------------------------------------------------ the API

    @property
    def input_shapes(self) -> dict[str, tuple]:
        return {k: tuple(v) for k, v in self.INPUTS.items()}

    @property
    def output_shapes(self) -> dict[str, tuple]:
        """The outputs of a whole call (a streaming plan's with `valid` convolutions: the offline lengths)."""
        return {k: tuple(f"{d} - {self.WARMUP[k]}" if self.WARMUP.get(k) and i == self.TIME_AXES[k] else d
                         for i, d in enumerate(v)) for k, v in self.OUTPUTS.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        with self._lock:
            return {k: v.copy() for k, v in self._state.items()}

    def load_weights(self, weights: str | os.PathLike | Mapping[str, Any]) -> None:
        with self._lock:
            state = W.load(weights, self.PARAMS)
            self._state = state
            self._prepare()

    def __call__(self, /, *args: Any, **kwargs: Any):
        """The outputs for whole inputs (a streaming plan runs from a fresh
        state: the offline result, and leaves the state of a stream as it
        was); `out=` takes the caller's arrays."""
        out = kwargs.pop(self._out_keyword(), None)
        with self._lock:
            if self.STREAMING:
                return self._whole_call(args, kwargs, out)
            return self._forward(args, kwargs, out)

    def _whole_call(self, args: tuple, kwargs: dict, out: Any):
        """A whole call of a streaming plan is a forward pass, not part of the
        stream: the state a stream carries is put aside and back (a fresh
        one is cleared again), so `step`/`stream` go on as if it had not run."""
        carried = self._carried
        saved = self._save_state() if carried is not None else None
        self._reset_state()
        self._carried = None
        try:
            if self.WARMUP:
                return self._whole(args, kwargs, out)
            return self._stream(args, kwargs, out)
        finally:
            if saved is None:
                self._reset_state()
            else:
                self._restore_state(saved)
            self._carried = carried

    # ------------------------------------------------------------ streaming

    def reset(self) -> None:
        """Forget the carried state (convolution history, recurrent state)."""
        self._require_streaming("reset")
        with self._lock:
            self._reset_state()
            self._carried = None

    def step(self, /, *args: Any, **kwargs: Any):
        """One time step: each input without its time axis ([B, C] or [B, F]);
        returns one output step, without its time axis too."""
        self._require_streaming("step")
        out = kwargs.pop(self._out_keyword(), None)
        with self._lock:
            return self._step(args, kwargs, out)

    def stream(self, /, *args: Any, **kwargs: Any):
        """A chunk of consecutive steps, in the input layout with a time axis of
        any length n >= 0 ([B, C, n] or [B, n, F]); returns the outputs for
        those n steps. Chunks up to the planned length run in place; longer
        ones run in pieces of the planned length."""
        self._require_streaming("stream")
        out = kwargs.pop(self._out_keyword(), None)
        with self._lock:
            return self._stream(args, kwargs, out)

    def _reset_state(self) -> None:
        self._arena.fill(0.0)      # the state lives in the arena; scratch may be cleared too
        self._steps = 0

    def _save_state(self) -> Any:
        return self._arena.copy(), self._steps

    def _restore_state(self, saved: Any) -> None:
        np.copyto(self._arena, saved[0])
        self._steps = saved[1]

    def _carry(self, batch: int) -> None:
        """The state carried from the last step belongs to its batch of
        examples: another batch size continues no stream (refused, before
        anything is computed, until `reset`)."""
        if self._carried is not None and batch != self._carried:
            raise ValueError(f"the stream carries the state of {self._carried} example(s); this call has "
                             f"{batch}: call reset() to start a stream of {batch}")
        self._carried = batch

    def _require_streaming(self, what: str) -> None:
        if not self.STREAMING:
            raise TypeError(f"`{what}` needs a streaming plan: build with stream=True (or compile with --stream)")

    def _out_keyword(self) -> str:
        key = "out"
        while key in self.INPUTS:
            key += "_"
        return key

    # ------------------------------------------------------------ one call (the lock is held)

    def _forward(self, args: tuple, kwargs: dict, out: Any):
        given = self._bind_inputs(args, kwargs)
        arrays = [self._as_float32(n, given[n]) for n in self.INPUTS]
        batch, dims = self._check(arrays)
        dest = self._destination(out, self._output_shapes(batch, dims))
        if batch == 0:
            return self._nothing(self._output_shapes(batch, dims), out, dest)
        outs = self._execute(arrays, batch, dims)
        return self._deliver(outs, out, dest)

    def _step(self, args: tuple, kwargs: dict, out: Any):
        given = self._bind_inputs(args, kwargs)
        arrays = []
        batch = None
        for name, shape in self.INPUTS.items():
            x = given[name]
            a = x if isinstance(x, np.ndarray) else np.asarray(x)
            axis = self.TIME_AXES[name]
            frame = tuple(d for i, d in enumerate(shape) if i != axis)
            expected = f"[{', '.join(['B', *(str(d) for d in frame)])}] with B <= {self.batch}"
            if a.ndim == len(shape) + 1:
                raise ValueError(f"`step` takes one time step: input `{name}` must have shape {expected}, "
                                 f"got {list(a.shape)}, a chunk of steps; pass chunks to `stream`")
            if a.ndim != len(frame) + 1 or tuple(a.shape[1:]) != frame:
                raise ValueError(f"`step` takes one time step: input `{name}` must have shape {expected}, "
                                 f"got {list(a.shape)}")
            if not 0 <= a.shape[0] <= self.batch:
                raise ValueError(f"input `{name}` has batch {a.shape[0]}; this model was built for batch <= "
                                 f"{self.batch} (shape {expected})")
            if batch is not None and a.shape[0] != batch:
                raise ValueError(f"inputs have different batch sizes ({batch} and {a.shape[0]})")
            batch = a.shape[0]
            arrays.append(self._as_float32(name, np.expand_dims(a, 1 + axis)))
        batch, dims = self._check(arrays)
        if batch == 0:
            return self._nothing(self._frame_shapes(batch), out, self._destination(out, self._frame_shapes(batch)))
        self._carry(batch)
        frames = self._frame_shapes(batch)
        dest = self._destination(out, frames)
        outs = self._execute(arrays, batch, dims)
        steps = tuple(o.reshape(shape) for o, shape in zip(outs, frames))   # drops the time axis of length 1
        return self._deliver(steps, out, dest)

    def _stream(self, args: tuple, kwargs: dict, out: Any):
        given = self._bind_inputs(args, kwargs)
        raw = self._real_inputs(given)
        batch, dims = self._check(raw, chunk=True)
        if batch == 0:
            shapes = self._output_shapes(batch, dims)
            return self._nothing(shapes, out, self._destination(out, shapes))
        self._carry(batch)
        (t,) = self.DIMS
        n, limit = dims[t], self.DIMS[t]
        shapes = self._output_shapes(batch, dims)
        dest = self._destination(out, shapes)
        if 0 < n <= limit:
            arrays = [self._as_float32(name, a) for name, a in zip(self.INPUTS, raw)]
            return self._deliver(self._execute(arrays, batch, dims), out, dest)
        results = dest if dest is not None else tuple(np.empty(s, np.float32) for s in shapes)
        if dest is not None and any(np.may_share_memory(r, a) for r in results for a in raw):
            raw = [np.array(a) for a in raw]    # the outputs are written piece by piece
        for start in range(0, n, limit):
            stop = min(n, start + limit)
            arrays = [self._as_float32(name, a[self._time_slice(name, start, stop)])
                      for name, a in zip(self.INPUTS, raw)]
            outs = self._execute(arrays, batch, {t: stop - start})
            for name, r, o in zip(self.OUTPUTS, results, outs):
                np.copyto(r[self._time_slice(name, start, stop)], o)
        if dest is not None:
            return out
        return results[0] if len(results) == 1 else results

    def _whole(self, args: tuple, kwargs: dict, out: Any):
        """A whole call of a streaming plan whose `valid` convolutions delay an
        output: the stream of the whole input from a fresh state, less each
        output's first WARMUP steps (computed against zeros before the start):
        the offline length and values. Within the bound it runs in place
        and copies only the kept steps (with `out=`, nothing is allocated but
        the pieces of the first steps of a gated plan, `_execute_gated`)."""
        given = self._bind_inputs(args, kwargs)
        raw = self._real_inputs(given)
        batch, dims = self._check(raw, chunk=True)
        (t,) = self.DIMS
        n, need = dims[t], max(self.WARMUP.values()) + 1
        if n < need:
            raise ValueError(f"input `{next(iter(self.INPUTS))}` has {t}={n}; a whole call needs {t} >= {need}, "
                             f"the steps its valid convolutions read for their first output (step and stream "
                             f"take any length)")
        keep = {name: self._time_slice(name, self.WARMUP.get(name, 0), n) for name in self.OUTPUTS}
        shapes = tuple(self._kept_shape(s, name) for name, s in zip(self.OUTPUTS, self._output_shapes(batch, dims)))
        dest = self._destination(out, shapes)
        if batch == 0:
            return self._nothing(shapes, out, dest)
        if n > self.DIMS[t]:                     # in pieces: the whole stream, then its kept steps
            full = self._stream((), given, None)
            full = full if isinstance(full, tuple) else (full,)
        else:
            self._carry(batch)
            full = self._execute([self._as_float32(name, a) for name, a in zip(self.INPUTS, raw)], batch, dims)
        return self._deliver(tuple(f[keep[name]] for name, f in zip(self.OUTPUTS, full)), out, dest)

    def _real_inputs(self, given: dict) -> list[np.ndarray]:
        """The bound inputs as arrays (no copy), each of real numbers (a ValueError names one that is not)."""
        raw = [given[n] if isinstance(given[n], np.ndarray) else np.asarray(given[n]) for n in self.INPUTS]
        for name, a in zip(self.INPUTS, raw):
            if a.dtype.kind not in "fiub":
                raise ValueError(f"input `{name}` must hold real numbers, got dtype {a.dtype}")
        return raw

    def _kept_shape(self, shape: tuple, name: str) -> tuple:
        """An output's shape with its first WARMUP steps dropped."""
        axis = 1 + self.TIME_AXES[name]
        return shape[:axis] + (shape[axis] - self.WARMUP.get(name, 0),) + shape[axis + 1:]

    def _time_slice(self, name: str, start: int, stop: int) -> tuple:
        return (slice(None),) * (1 + self.TIME_AXES[name]) + (slice(start, stop),)

    def _destination(self, out: Any, shapes: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, ...] | None:
        """The caller's output arrays, checked, or None to return fresh ones."""
        if out is None:
            return None
        names = list(self.OUTPUTS)
        several = isinstance(out, (tuple, list))
        arrays = tuple(out) if several else (out,)
        if len(arrays) != len(names):
            what = "one array" if len(names) == 1 else f"a tuple of {len(names)} arrays ({', '.join(names)})"
            raise ValueError(f"out= takes {what} for the outputs of {self.NAME}, got "
                             + (f"{len(arrays)}" if several else type(out).__name__))
        for name, a, shape in zip(names, arrays, shapes):
            want = f"a writable C-contiguous float32 array of shape {list(shape)}"
            if not isinstance(a, np.ndarray):
                raise ValueError(f"out= for output `{name}` must be {want}, got {type(a).__name__}")
            problem = (f"shape {list(a.shape)}" if a.shape != shape else
                       f"dtype {a.dtype}" if a.dtype != np.float32 else
                       "an array that is not C-contiguous" if not a.flags.c_contiguous else
                       "a read-only array" if not a.flags.writeable else None)
            if problem:
                raise ValueError(f"out= for output `{name}` must be {want}, got {problem}")
        for i, a in enumerate(arrays):
            for b in arrays[i + 1:]:
                if np.may_share_memory(a, b):
                    raise ValueError("out= arrays must not share memory with each other")
        return arrays

    def _nothing(self, shapes: tuple[tuple[int, ...], ...], out: Any, dest: tuple[np.ndarray, ...] | None):
        """An empty batch (B = 0 is within `B <= batch`): nothing runs and no
        stream state changes; the outputs are empty, as in NumPy and PyTorch."""
        return self._deliver(tuple(np.zeros(s, np.float32) for s in shapes), out, dest)

    def _deliver(self, outs: tuple, out: Any, dest: tuple[np.ndarray, ...] | None):
        """Copy the plan's output buffers into the caller's arrays."""
        if dest is None:
            fresh = tuple(o.copy() for o in outs)
            return fresh[0] if len(fresh) == 1 else fresh
        for d, o in zip(dest, outs):
            np.copyto(d, o)
        return out

    # ------------------------------------------------------------ what a plan provides

    def _setup(self) -> None:
        """Allocate the plan's memory (the NumPy plan: one arena)."""
        self._arena = np.zeros(max(self.batch * self.ARENA_BYTES // 4, 1), dtype=np.float32)

    def _execute(self, arrays: list[np.ndarray], batch: int, dims: dict[str, int]) -> tuple:
        """Run the plan; returns its output buffers (the caller copies them)."""
        if self.GATES and self._steps < self.GATES[-1][0]:
            return self._execute_gated(arrays, batch, dims)
        return self._run_plan(arrays, batch, dims)

    def _run_plan(self, arrays: list[np.ndarray], batch: int, dims: dict[str, int]) -> tuple:
        key = (batch, *dims.values())
        views = self._view_cache.get(key)
        if views is None:
            views = self._view_cache[key] = self._views(batch, *map(dims.get, self.DIMS))
        return self._run(views, *arrays)

    def _execute_gated(self, arrays: list[np.ndarray], batch: int, dims: dict[str, int]) -> tuple:
        """The first steps of a stream whose gates are not all open run one at
        a time (so every way of cutting a sequence gives the same steps), and
        a gated layer's state is cleared after each step up to its gate: its
        input starts there, where the offline pass begins it."""
        (t,) = self.DIMS
        n = dims[t]
        outs = tuple(np.empty(s, np.float32) for s in self._output_shapes(batch, dims))
        start = 0
        while start < n:
            stop = start + 1 if self._steps < self.GATES[-1][0] else n
            pieces = [np.ascontiguousarray(a[self._time_slice(name, start, stop)])
                      for name, a in zip(self.INPUTS, arrays)]
            got = self._run_plan(pieces, batch, {t: stop - start})
            for name, o, g in zip(self.OUTPUTS, outs, got):
                np.copyto(o[self._time_slice(name, start, stop)], g)
            self._steps += stop - start
            for w, regions in self.GATES:
                if self._steps <= w:
                    for offset, size in regions:
                        self._arena[batch * offset // 4:batch * (offset + size) // 4] = 0.0
            start = stop
        return outs

    def _prepare(self) -> None:
        """Compute the kernels' effective tensors from `self._state`."""
        raise NotImplementedError

    def _views(self, batch: int, *dims: int) -> Any:
        raise NotImplementedError

    def _run(self, views: Any, *inputs: np.ndarray) -> tuple:
        raise NotImplementedError

    def _region(self, batch: int, offset: int, size: int, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 view of the arena for a buffer planned at `offset` with
        `size` bytes per example; at batch B every buffer sits at B * offset."""
        start = batch * offset // 4
        n = 1
        for d in shape:
            n *= d
        if n * 4 > batch * size:
            raise AssertionError(f"a view of {list(shape)} exceeds its planned {size} bytes per example")
        return self._arena[start:start + n].reshape(shape)

    def _scratch(self, batch: int, shapes: Mapping[str, tuple], planned: Mapping[str, tuple[int, int]]) -> dict:
        """Views for a kernel's scratch: `shapes` from its scratch function at
        this batch, `planned` (name -> offset, bytes per example) from the plan."""
        return {k: self._region(batch, planned[k][0], planned[k][1], tuple(s)) for k, s in shapes.items()
                if math.prod(s) > 0}

    # ------------------------------------------------------------ shapes

    def _output_shapes(self, batch: int, dims: Mapping[str, int]) -> tuple[tuple[int, ...], ...]:
        """The outputs' shapes at this batch and these named-dimension sizes."""
        key = (batch, *dims.values())
        shapes = self._shape_cache.get(key)
        if shapes is None:
            shapes = self._shape_cache[key] = tuple(
                (batch, *(_size(d, dims) for d in shape)) for shape in self.OUTPUTS.values())
        return shapes

    def _frame_shapes(self, batch: int) -> tuple[tuple[int, ...], ...]:
        """A streaming plan's output shapes for one step, without the time axis."""
        key = ("frame", batch)
        shapes = self._shape_cache.get(key)
        if shapes is None:
            shapes = self._shape_cache[key] = tuple(
                (batch, *(d for i, d in enumerate(shape) if i != self.TIME_AXES[name]))
                for name, shape in self.OUTPUTS.items())
        return shapes

    def _bound_shape(self, shape: tuple) -> tuple[int, ...]:
        return tuple(self.DIMS[d] if isinstance(d, str) else d for d in shape)

    # ------------------------------------------------------------ input checking

    def _bind_inputs(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        names = list(self.INPUTS)
        if len(args) > len(names):
            raise TypeError(f"{self.NAME} takes {len(names)} input{'s' if len(names) != 1 else ''} "
                            f"({', '.join(names)}), got {len(args)}")
        given = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in self.INPUTS:
                raise TypeError(f"{self.NAME} has no input `{k}` (inputs: {', '.join(names)})")
            if k in given:
                raise TypeError(f"input `{k}` given twice")
            given[k] = v
        missing = [n for n in names if n not in given]
        if missing:
            raise TypeError(f"{self.NAME} is missing input{'s' if len(missing) != 1 else ''} "
                            + ", ".join(f"`{m}`" for m in missing))
        return given

    def _as_float32(self, name: str, x: Any) -> np.ndarray:
        """`x` as a C-contiguous float32 array the plan may read while it
        writes its arena: the array itself, or a copy in the staging buffer
        (other dtypes and layouts, and arrays that share the arena's memory)."""
        a = x if isinstance(x, np.ndarray) else np.asarray(x)
        if name in self.INTEGER_INPUTS:
            return self._as_int32(name, a)
        if a.dtype.kind not in "fiub":
            raise ValueError(f"input `{name}` must hold real numbers, got dtype {a.dtype}")
        arena = getattr(self, "_arena", None)
        shared = arena is not None and np.may_share_memory(a, arena)
        if a.dtype == np.float32 and a.flags.c_contiguous and not shared:
            return a
        stage = self._staging[name]
        if a.ndim != stage.ndim or any(s > m for s, m in zip(a.shape, stage.shape)):
            return np.array(a, dtype=np.float32, order="C")   # _check reports the shape
        view = stage[tuple(slice(0, s) for s in a.shape)]
        if not view.flags.c_contiguous:
            return np.array(a, dtype=np.float32, order="C")
        np.copyto(view, a, casting="unsafe")
        return view

    def _as_int32(self, name: str, a: np.ndarray) -> np.ndarray:
        """An integer input as a C-contiguous int32 array of indices, each in
        [0, num) of the embedding it reaches; anything else is a ValueError
        naming the input (checked before the conversion, so nothing wraps)."""
        if a.dtype.kind not in "iu":
            raise ValueError(f"input `{name}` takes integer indices, got dtype {a.dtype}")
        num = self.INTEGER_INPUTS[name]
        if a.size:
            low, high = int(a.min()), int(a.max())
            if low < 0 or high >= num:
                bad = low if low < 0 else high
                raise ValueError(f"input `{name}` holds the index {bad}, outside [0, {num}) of its embedding table")
        return np.array(a, dtype=np.int32, order="C")

    def _expected(self, name: str) -> str:
        dims = ", ".join(str(d) for d in self.INPUTS[name])
        return f"[B, {dims}] with B <= {self.batch}"

    def _check(self, arrays: list[np.ndarray], chunk: bool = False) -> tuple[int, dict[str, int]]:
        """The batch size and named-dimension sizes of the inputs, or a
        ValueError naming the expected shape. `chunk`: a streaming chunk,
        whose time axis may have any length (0 too)."""
        batch = None
        dims: dict[str, int] = {}
        for name, a in zip(self.INPUTS, arrays):
            shape = self.INPUTS[name]
            if a.ndim != len(shape) + 1:
                raise ValueError(f"input `{name}` must have shape {self._expected(name)}, got {list(a.shape)}")
            b = a.shape[0]
            if not 0 <= b <= self.batch:
                raise ValueError(f"input `{name}` has batch {b}; this model was built for batch <= {self.batch} "
                                 f"(shape {self._expected(name)})")
            if batch is not None and b != batch:
                raise ValueError(f"inputs have different batch sizes ({batch} and {b})")
            batch = b
            for want, got in zip(shape, a.shape[1:]):
                if isinstance(want, str):
                    low = self.MIN_DIMS.get(want, 1)
                    if not chunk and (got < low or got > self.DIMS[want]):
                        raise ValueError(f"input `{name}` has {want}={got}; the plan allows {low} <= {want} <= "
                                         f"{self.DIMS[want]} (shape {self._expected(name)})")
                    if dims.setdefault(want, got) != got:
                        raise ValueError(f"inputs disagree on {want}: {dims[want]} and {got}")
                elif want != got:
                    raise ValueError(f"input `{name}` must have shape {self._expected(name)}, got {list(a.shape)}")
        assert batch is not None
        return batch, {k: dims[k] for k in self.DIMS if k in dims}


_NAME = re.compile(r"[^\W\d]\w*")


def _size(d: int | str, dims: Mapping[str, int]) -> int:
    """A size of `OUTPUTS`: an int, or the text of a symbolic size (`T`,
    `(T - 1) // 2 + 1`) evaluated at `dims`."""
    if isinstance(d, int):
        return d
    if d in dims:
        return dims[d]
    text = _NAME.sub(lambda m: str(dims[m.group()]), d)
    return _arith(ast.parse(text, mode="eval").body)


def _arith(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_arith(node.operand)
    if isinstance(node, ast.BinOp):
        a, b = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if isinstance(node.op, ast.FloorDiv):
            return a // b
    raise ValueError(f"not a size expression: {ast.dump(node)}")
