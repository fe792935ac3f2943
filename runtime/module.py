"""The base of every generated NumPy model: what does not depend on the plan.

In:  a generated subclass that sets the class attributes below and defines
     `_views(batch, dims)` (the planned views of the arena for one batch size
     and named-dimension sizes) and `_run(views, *inputs)` (the kernel calls).
Out: the Python API of INTERFACES.md section 3: `Model(batch=N, weights=...)`,
     `model(x)`, `model(x=x)`, `input_shapes`, `output_shapes`,
     `load_weights`, `state_dict`.

The arena is allocated once, when the model is built; views for a batch size
(and named-dimension sizes) are made on first use and kept, so a call writes
into memory that already exists. Outputs are views of the arena: the same
arrays come back on every call and are overwritten by the next one.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from . import weights as W


class ModelBase:
    NAME: str = ""
    INPUTS: Mapping[str, tuple] = {}          # name -> per-example shape (ints, or dim names)
    OUTPUTS: Mapping[str, tuple] = {}
    DIMS: Mapping[str, int] = {}              # named dimension -> bound (planned size)
    MIN_DIMS: Mapping[str, int] = {}          # named dimension -> the shortest length every layer can take
    PARAMS: Mapping[str, W.Spec] = {}         # state_dict key -> spec, schedule order
    ARENA_BYTES: int = 0                      # per example: the plan scales with the batch
    WEIGHTS_FILE: str | None = None           # the .npz written beside the module, if any
    STREAMING: bool = False                   # a streaming plan: step / stream / reset
    TIME_AXES: Mapping[str, int] = {}         # streaming: per-example time axis of each input and output

    def __init__(self, batch: int = 1, weights: str | os.PathLike | Mapping[str, Any] | None = None):
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        self.batch = batch
        self._setup()
        self._staging = {name: np.zeros((batch, *self._bound_shape(shape)), dtype=np.float32)
                         for name, shape in self.INPUTS.items()}
        self._view_cache: dict[tuple, Any] = {}
        if weights is None and self.WEIGHTS_FILE and os.path.exists(self.WEIGHTS_FILE):
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
        return {k: tuple(v) for k, v in self.OUTPUTS.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._state.items()}

    def load_weights(self, weights: str | os.PathLike | Mapping[str, Any]) -> None:
        self._state = W.load(weights, self.PARAMS)
        self._prepare()

    def __call__(self, *args: Any, **kwargs: Any):
        if self.STREAMING:
            # a whole sequence from a fresh state: the offline result
            self.reset()
            return self.stream(*args, **kwargs)
        return self._forward(*args, **kwargs)

    # ------------------------------------------------------------ streaming

    def reset(self) -> None:
        """Forget the carried state (convolution history, recurrent state)."""
        self._require_streaming("reset")
        self._reset_state()

    def step(self, *args: Any, **kwargs: Any):
        """One time step: each input without its time axis ([B, C] or [B, F]);
        returns one output step."""
        self._require_streaming("step")
        names = list(self.INPUTS)
        given = dict(zip(names, args), **kwargs)
        frames = {}
        for name, frame in given.items():
            a = np.asarray(frame)
            if name in self.INPUTS and a.ndim == len(self.INPUTS[name]):
                a = np.expand_dims(a, 1 + self.TIME_AXES[name])
            frames[name] = a
        outs = self._forward(**frames)
        outs = outs if isinstance(outs, tuple) else (outs,)
        # basic indexing: each step is a view of the output buffer, not a copy
        steps = tuple(o[(slice(None),) * (1 + self.TIME_AXES[n]) + (0,)] for n, o in zip(self.OUTPUTS, outs))
        return steps[0] if len(steps) == 1 else steps

    def stream(self, *args: Any, **kwargs: Any):
        """A chunk of consecutive steps, in the input layout with a time axis of
        any length n ([B, C, n] or [B, n, F]); returns the outputs for those n
        steps. Chunks up to the planned length run in place; longer ones are cut
        into pieces (and their outputs joined into new arrays)."""
        self._require_streaming("stream")
        names = list(self.INPUTS)
        given = dict(zip(names, args), **kwargs)
        arrays = {k: (v if isinstance(v, np.ndarray) else np.asarray(v)) for k, v in given.items()}
        (t,) = self.DIMS
        limit = self.DIMS[t]
        lengths = {a.shape[1 + self.TIME_AXES[k]] for k, a in arrays.items()
                   if k in self.TIME_AXES and a.ndim == len(self.INPUTS[k]) + 1}
        n = lengths.pop() if len(lengths) == 1 else None
        if n is None or n <= limit:
            return self._forward(**arrays)
        pieces = []
        for start in range(0, n, limit):
            part = {k: np.take(a, range(start, min(n, start + limit)), axis=1 + self.TIME_AXES[k])
                    for k, a in arrays.items()}
            outs = self._forward(**part)
            outs = outs if isinstance(outs, tuple) else (outs,)
            pieces.append([o.copy() for o in outs])
        joined = tuple(np.concatenate([p[i] for p in pieces], axis=1 + self.TIME_AXES[name])
                       for i, name in enumerate(self.OUTPUTS))
        return joined[0] if len(joined) == 1 else joined

    def _reset_state(self) -> None:
        self._arena.fill(0.0)      # the state lives in the arena; scratch may be cleared too

    def _require_streaming(self, what: str) -> None:
        if not self.STREAMING:
            raise TypeError(f"`{what}` needs a streaming plan: build with stream=True (or compile with --stream)")

    def _forward(self, *args: Any, **kwargs: Any):
        arrays = self._bind_inputs(args, kwargs)
        batch, dims = self._check(arrays)
        outs = self._execute(arrays, batch, dims)
        return outs[0] if len(outs) == 1 else tuple(outs)

    # ------------------------------------------------------------ what a plan provides

    def _setup(self) -> None:
        """Allocate the plan's memory (the NumPy plan: one arena)."""
        self._arena = np.zeros(max(self.batch * self.ARENA_BYTES // 4, 1), dtype=np.float32)

    def _execute(self, arrays: list[np.ndarray], batch: int, dims: dict[str, int]) -> tuple:
        key = (batch, *dims.values())
        views = self._view_cache.get(key)
        if views is None:
            views = self._view_cache[key] = self._views(batch, **dims)
        return self._run(views, *arrays)

    def _prepare(self) -> None:
        """Compute the kernels' effective tensors from `self._state`."""
        raise NotImplementedError

    def _views(self, batch: int, **dims: int) -> Any:
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

    # ------------------------------------------------------------ input checking

    def _bound_shape(self, shape: tuple) -> tuple[int, ...]:
        return tuple(self.DIMS[d] if isinstance(d, str) else d for d in shape)

    def _bind_inputs(self, args: tuple, kwargs: dict) -> list[np.ndarray]:
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
        return [self._as_float32(n, given[n]) for n in names]

    def _as_float32(self, name: str, x: Any) -> np.ndarray:
        a = x if isinstance(x, np.ndarray) else np.asarray(x)
        if a.dtype.kind not in "fiub":
            raise ValueError(f"input `{name}` must hold real numbers, got dtype {a.dtype}")
        if a.dtype == np.float32 and a.flags.c_contiguous:
            return a
        stage = self._staging[name]
        if a.ndim != stage.ndim or any(s > m for s, m in zip(a.shape, stage.shape)):
            return np.ascontiguousarray(a, dtype=np.float32)   # _check reports the shape
        view = stage[tuple(slice(0, s) for s in a.shape)]
        if not view.flags.c_contiguous:
            return np.ascontiguousarray(a, dtype=np.float32)
        np.copyto(view, a, casting="unsafe")
        return view

    def _expected(self, name: str) -> str:
        dims = ", ".join(str(d) for d in self.INPUTS[name])
        return f"[B, {dims}] with B <= {self.batch}"

    def _check(self, arrays: list[np.ndarray]) -> tuple[int, dict[str, int]]:
        batch = None
        dims: dict[str, int] = {}
        for name, a in zip(self.INPUTS, arrays):
            shape = self.INPUTS[name]
            if a.ndim != len(shape) + 1:
                raise ValueError(f"input `{name}` must have shape {self._expected(name)}, got {list(a.shape)}")
            b = a.shape[0]
            if not 1 <= b <= self.batch:
                raise ValueError(f"input `{name}` has batch {b}; this model was built for batch <= {self.batch} "
                                 f"(shape {self._expected(name)})")
            if batch is not None and b != batch:
                raise ValueError(f"inputs have different batch sizes ({batch} and {b})")
            batch = b
            for want, got in zip(shape, a.shape[1:]):
                if isinstance(want, str):
                    low = self.MIN_DIMS.get(want, 1)
                    if got < low or got > self.DIMS[want]:
                        raise ValueError(f"input `{name}` has {want}={got}; the plan allows {low} <= {want} <= "
                                         f"{self.DIMS[want]} (shape {self._expected(name)})")
                    if dims.setdefault(want, got) != got:
                        raise ValueError(f"inputs disagree on {want}: {dims[want]} and {got}")
                elif want != got:
                    raise ValueError(f"input `{name}` must have shape {self._expected(name)}, got {list(a.shape)}")
        assert batch is not None
        return batch, {k: dims[k] for k in self.DIMS if k in dims}
