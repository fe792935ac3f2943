"""The base of every training module: the trainer's API and state, apart from the plan.

In:  a subclass (a generated training module, or a hand-written one in
     tests) that sets the class attributes below and defines
       `_train_step(batch, dims, arrays, y) -> float`: forward, loss and
           backward for one batch; it calls `self._apply_update(key, grad)`
           once per key of `TRAINABLE`, as soon as that gradient is complete,
           updates batchnorm running statistics and `num_batches_tracked` in
           `self._state`, draws dropout masks from `self._rng`, and returns
           the loss before the update;
       `_predict(batch, dims, arrays)`: the outputs in eval mode (a tuple of
           arrays, or one array; internal buffers are fine, they are copied);
     optionally `_setup()` (allocate the plan's memory, after the state
     exists) and `_prepare()` (recompute derived tensors after weights are
     loaded).
Out: the trainer API of TRAINING.md section 1: `Trainer(optimizer, batch=N,
     weights=..., seed=S, keep_gradients=False)`, `step(x, y)`,
     `predict(x)`, `state_dict()`, `load_weights(w)`,
     `optimizer_state_dict()`, `load_optimizer_state(d)`, `gradients()`,
     `grow(new_model, init, seed)` (for trainers made by `nnc.train`: it
     compiles through `compiler.train.grow_trainer`); also `input_shapes`,
     `output_shapes`, `check_data(x, y)` (a whole data set, for `nnc train`).

State, all plain dicts of arrays keyed by PyTorch names, so that growing a
layer can replace any of them with a larger array:
- `self._state`: every entry of the state_dict: the float32 parameters and
  running statistics of `PARAMS`, and the int64 0-d `num_batches_tracked`
  counters of `COUNTERS`, in PyTorch's order;
- `self._opt_state`: parameter key -> state name -> float32 array of the
  parameter's shape (`momentum_buffer`; `exp_avg`, `exp_avg_sq`);
- `self._step_count`: the updates done (Adam's `step`);
- `self._rng`: `np.random.Generator(np.random.PCG64(seed))`, for dropout.

Capacity (`_reserve`): a tensor stored with room lives in `self._storage[key]`
(its optimizer state in `self._opt_storage[key][name]`, a kept gradient in
`self._kept_storage[key]`) and the dicts above hold views of the current
shape (`self._room[key]`: the IndexMap from the current shape into the
storage). Views may be non-contiguous; every kernel and the optimizer
update take them as they are. `state_dict()` and
`optimizer_state_dict()` return contiguous copies of the current shapes.
A tensor sits at the start of its storage (every axis from 0); `_grow_state`
grows one whose storage keeps its shape in place: it moves the old entries
whose positions change inside the storage (`_move_in_place`), then writes
only the new entries.

Memory: the optimizer's scratch (one array as large as the largest
parameter that is not updated block by block in the arena, `ROW_BLOCKED`,
viewed per parameter) and, with `keep_gradients=True`, one
gradient copy per parameter are allocated when the trainer is built, and
again after a growth only when they have become too small (the arena
likewise, `_arena_buffer`); `_apply_update` allocates nothing.

Inputs are checked with `ModelBase`'s checks (same messages), the targets
with `losses.check_targets`. Every public method holds the instance's lock.
"""

from __future__ import annotations

import math
import os
import threading
import zipfile
from typing import Any, Mapping

import numpy as np

from .errors import UserError
from . import weights as W
from .arrayfile import check_sizes, memory_bytes
from .losses import TargetError, check_targets
from .module import ModelBase
from .optim import SGD, Adam

COUNTER_SUFFIX = ".num_batches_tracked"
STEP_KEY = "step"


class TrainerError(UserError, RuntimeError):
    """A trainer method called when it cannot answer (`gradients()` without
    `keep_gradients=True`, or before the first step)."""


class OptimizerStateError(UserError, ValueError):
    """An optimizer state file or dict that does not fit the trainer; the
    message lists every problem."""


class DataError(UserError, ValueError):
    """A data set whose arrays do not fit the model (`check_data`)."""


class TrainerBase:
    NAME: str = ""
    INPUTS: Mapping[str, tuple] = {}          # name -> per-example shape (ints, or dim names)
    OUTPUTS: Mapping[str, tuple] = {}         # the loss applies to the first output
    DIMS: Mapping[str, int] = {}              # named dimension -> bound (planned size)
    MIN_DIMS: Mapping[str, int] = {}
    PARAMS: Mapping[str, W.Spec] = {}         # state_dict key -> spec (parameters and running statistics)
    TRAINABLE: tuple[str, ...] = ()           # the keys of PARAMS the optimizer updates
    ROW_BLOCKED: tuple[str, ...] = ()         # of those, the ones updated block by block in the arena
    COUNTERS: tuple[str, ...] = ()            # "<batchnorm>.num_batches_tracked" keys
    LOSS: str = "cross_entropy"

    # the input checks of inference models, with the same messages
    _bind_inputs = ModelBase._bind_inputs
    _as_float32 = ModelBase._as_float32
    _as_int32 = ModelBase._as_int32
    INTEGER_INPUTS: Mapping[str, int] = {}    # integer input -> rows of its embedding table (ModelBase)
    _expected = ModelBase._expected
    _check = ModelBase._check
    _bound_shape = ModelBase._bound_shape
    _output_shapes = ModelBase._output_shapes

    def __init__(self, optimizer: SGD | Adam, batch: int = 1,
                 weights: str | os.PathLike | Mapping[str, Any] | None = None, *,
                 seed: int = 0, keep_gradients: bool = False):
        self._lock = threading.RLock()
        if not isinstance(optimizer, (SGD, Adam)):
            raise TypeError(f"optimizer must be nnc.SGD, nnc.Adam or nnc.AdamW, got {type(optimizer).__name__}")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        planned = getattr(self, "BATCH", None)     # a compiled plan's; refused before staging is allocated
        if planned is not None and batch > planned:
            raise ValueError(f"batch {batch} is larger than the planned batch {planned}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        unknown = [k for k in self.TRAINABLE if k not in self.PARAMS]
        assert not unknown, f"TRAINABLE keys missing from PARAMS: {unknown}"
        self.optimizer = optimizer
        self.batch = batch
        self.seed = int(seed)
        self.keep_gradients = bool(keep_gradients)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self._step_count = 0
        self._updates = 0
        self._has_gradients = False
        if weights is None:
            params = W.default_init(self.PARAMS, self.seed)
            counters: dict[str, int] = {}
        else:
            params = W.load(weights, self.PARAMS)
            counters = self._read_counters(weights)
        self._state = self._assemble(params, counters)
        self._opt_state = {k: {n: np.zeros(self._state[k].shape, dtype=np.float32)
                               for n in optimizer.state_names} for k in self.TRAINABLE}
        # capacity (`_reserve`): storage with room, of which the state entries are views
        self._storage: dict[str, np.ndarray] = {}
        self._opt_storage: dict[str, dict[str, np.ndarray]] = {}
        self._kept_storage: dict[str, np.ndarray] = {}
        self._room: dict[str, Any] = {}          # key -> IndexMap: current shape -> storage shape
        self._arena_room = 0                     # float32 elements the arena holds at least
        self._capacity: dict[str, int] = {}      # label -> units, as given to nnc.train
        self._allocate_update_buffers()
        self._staging = {name: np.zeros((batch, *self._bound_shape(shape)),
                                        dtype=np.int32 if name in self.INTEGER_INPUTS else np.float32)
                         for name, shape in self.INPUTS.items()}
        self._shape_cache: dict[tuple, tuple] = {}
        self._setup()
        self._prepare()

    # ------------------------------------------------------------ the API

    input_shapes = ModelBase.input_shapes
    output_shapes = ModelBase.output_shapes

    @property
    def loss(self) -> str:
        return self.LOSS

    def step(self, x: Any, y: Any) -> float:
        """Forward, loss, backward and update on one batch (1 to `batch`
        examples); returns the loss before the update."""
        with self._lock:
            arrays, batch, dims = self._inputs(x)
            if batch == 0:
                raise ValueError("a training step needs at least one example; `x` has batch 0")
            out_shape = self._output_shapes(batch, dims)[0][1:]
            target = check_targets(self.LOSS, y, out_shape, self.batch, batch=batch)
            self._updates = 0
            loss = self._train_step(batch, dims, arrays, target)
            if self._updates != len(self.TRAINABLE):
                raise AssertionError(f"the training step updated {self._updates} parameters, "
                                     f"expected {len(self.TRAINABLE)}")
            self._step_count += 1
            self._has_gradients = self.keep_gradients
            return float(loss)

    def predict(self, x: Any):
        """The outputs for `x` with the current weights, in eval mode (new arrays)."""
        with self._lock:
            arrays, batch, dims = self._inputs(x)
            if batch == 0:                          # B = 0 is within B <= batch: empty outputs, nothing runs
                outs = tuple(np.zeros(s, np.float32) for s in self._output_shapes(batch, dims))
            else:
                outs = self._predict(batch, dims, arrays)
            if isinstance(outs, tuple):
                copies = tuple(np.array(o, dtype=np.float32) for o in outs)
                return copies[0] if len(copies) == 1 else copies
            return np.array(outs, dtype=np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the weights, running statistics and `num_batches_tracked`
        (int64, 0-d), with PyTorch's keys."""
        with self._lock:
            return {k: v.copy() for k, v in self._state.items()}

    def load_weights(self, weights: str | os.PathLike | Mapping[str, Any]) -> None:
        """Strict, as `nnc.build`'s; `num_batches_tracked` is read when present
        (0 when absent). The optimizer state is kept."""
        with self._lock:
            params = W.load(weights, self.PARAMS)
            counters = self._read_counters(weights)
            for k, v in self._assemble(params, counters).items():
                np.copyto(self._state[k], v)
            self._prepare()

    def optimizer_state_dict(self) -> dict[str, np.ndarray]:
        """`"<param>.<state name>"` copies, and `"step"` (0-d int64) for Adam
        and AdamW: a checkpoint that `numpy.savez` writes and
        `load_optimizer_state` reads back."""
        with self._lock:
            out = {f"{k}.{n}": a.copy() for k, names in self._opt_state.items() for n, a in names.items()}
            if self.optimizer.counts_steps:
                out[STEP_KEY] = np.array(self._step_count, dtype=np.int64)
            return out

    def load_optimizer_state(self, state: str | os.PathLike | Mapping[str, Any]) -> None:
        """Strict: every missing or unexpected key and every wrong shape, dtype
        or value is reported in one `OptimizerStateError`."""
        with self._lock:
            if isinstance(state, Mapping):
                arrays, source = dict(state), "the optimizer state"
            else:
                path = os.fsdecode(os.fspath(state))
                arrays, source = read_npz(path, OptimizerStateError, "optimizer state"), \
                    f"the optimizer state in `{path}`"
            values, step = self._check_optimizer_state(arrays, source)
            for key, a in values.items():
                param, _, name = key.rpartition(".")
                np.copyto(self._opt_state[param][name], a)
            if step is not None:
                self._step_count = step
            elif values:
                # SGD's buffers exist now: the next update decays them (PyTorch after load_state_dict);
                # all-zero buffers are a state saved before any update (PyTorch's is empty then), so
                # the next update starts them as the gradient and a step-0 checkpoint resumes exactly
                self._step_count = max(self._step_count, 1) if any(np.any(a) for a in values.values()) else 0

    def gradients(self) -> dict[str, np.ndarray]:
        """The last step's gradients (PyTorch's `p.grad`: before weight decay
        and momentum), copies by parameter key."""
        with self._lock:
            if not self.keep_gradients:
                raise TrainerError("gradients() needs a trainer made with keep_gradients=True "
                                   "(gradient buffers are reused within a step otherwise)")
            if not self._has_gradients:
                raise TrainerError("no gradients yet: gradients() returns the last step's, and no step has run "
                                   "since the trainer was made or grown")
            return {k: g.copy() for k, g in self._kept.items()}

    def grow(self, new_model: Any, init: str = "zero", seed: int | None = None) -> None:
        """Continue training `new_model`, a wider edit of this trainer's model
        (TRAINING.md section 2): the weights, running statistics and
        optimizer state move to the new shapes (new entries as `nnc.grow`
        makes them, with `seed`, by default the trainer's; Adam's step
        kept), and the trainer takes the new model's plan in place. Within
        the `capacity=` given to `nnc.train`, tensors stay where they are.
        Refusals are `nnc.CompileError`s on the new model's text and leave
        the trainer unchanged."""
        from ..compiler.train import grow_trainer
        with self._lock:
            grow_trainer(self, new_model, init=init, seed=seed)

    def check_data(self, x: Any, y: Any, *, x_name: str = "x", y_name: str = "y") -> tuple[np.ndarray, np.ndarray]:
        """A whole data set for the single-input model: `x` [N, *input shape]
        and `y` as `step` takes them, any N >= 1; returns float32 `x` (int32
        indices, checked against the embedding, for an integer input) and the
        checked targets, or raises `DataError`/`TargetError` naming the array."""
        if len(self.INPUTS) != 1:
            raise DataError(f"the model has {len(self.INPUTS)} inputs ({', '.join(self.INPUTS)}); "
                            f"a data set gives one array `{x_name}`")
        (name, shape), = self.INPUTS.items()
        a = x if isinstance(x, np.ndarray) else np.asarray(x)
        if a.dtype.kind not in "fiu":
            raise DataError(f"`{x_name}` must hold real numbers, got dtype {a.dtype}")
        wanted = "[N, " + ", ".join(str(d) for d in shape) + "]"
        if a.ndim != len(shape) + 1 or a.shape[0] < 1:
            raise DataError(f"`{x_name}` must have shape {wanted} for the model's input `{name}`, got {list(a.shape)}")
        dims: dict[str, int] = {}
        for want, got in zip(shape, a.shape[1:]):
            if isinstance(want, str):
                low = self.MIN_DIMS.get(want, 1)
                if not low <= got <= self.DIMS[want]:
                    raise DataError(f"`{x_name}` has {want}={got}; the plan allows {low} <= {want} <= "
                                    f"{self.DIMS[want]} (shape {wanted})")
                dims[want] = got
            elif want != got:
                raise DataError(f"`{x_name}` must have shape {wanted} for the model's input `{name}`, "
                                f"got {list(a.shape)}")
        n = a.shape[0]
        out_shape = self._output_shapes(n, {k: dims[k] for k in self.DIMS if k in dims})[0][1:]
        target = check_targets(self.LOSS, y, out_shape, n, batch=n, name=y_name)
        if name in self.INTEGER_INPUTS:     # embedding indices: integers in range, kept integer
            num = self.INTEGER_INPUTS[name]
            if a.dtype.kind not in "iu":
                raise DataError(f"`{x_name}` must hold integer indices for the model's integer input `{name}`, "
                                f"got dtype {a.dtype} (convert with .astype(np.int64))")
            low, high = int(a.min()), int(a.max())
            if low < 0 or high >= num:
                bad = low if low < 0 else high
                at = tuple(int(i) for i in np.argwhere(a == bad)[0])
                raise DataError(f"`{x_name}` holds the index {bad} at {list(at)}, outside [0, {num}) "
                                f"of the embedding table that input `{name}` indexes")
            return np.ascontiguousarray(a, dtype=np.int32), target
        return np.ascontiguousarray(a, dtype=np.float32), target

    # ------------------------------------------------------------ for the subclass

    def _apply_update(self, key: str, grad: np.ndarray) -> None:
        """The optimizer's update of parameter `key` with its complete
        gradient (kept first when `keep_gradients`); allocates nothing."""
        if self.keep_gradients:
            np.copyto(self._kept[key], grad)
        self.optimizer.update(self._state[key], grad, self._opt_state[key], self._step_count + 1,
                              self._update_scratch[key])
        self._updates += 1

    def _setup(self) -> None:
        """Allocate the plan's memory (called once the state exists)."""

    def _prepare(self) -> None:
        """Recompute whatever the plan derives from `self._state`."""

    def _train_step(self, batch: int, dims: dict[str, int], arrays: list[np.ndarray], y: np.ndarray) -> float:
        raise NotImplementedError

    def _predict(self, batch: int, dims: dict[str, int], arrays: list[np.ndarray]):
        raise NotImplementedError

    def _allocate_update_buffers(self) -> None:
        """The optimizer's scratch (views of one array, as large as the
        largest parameter's storage) and the kept gradients (views of
        storage with room for parameters that have it), for the current
        parameter shapes; what is large enough already is kept."""
        shapes = {k: self._state[k].shape for k in self.TRAINABLE}
        whole = [k for k in shapes if k not in self.ROW_BLOCKED]    # blocked ones update with arena tiles
        need = max((math.prod(shapes[k]) for k in whole), default=0)
        room = max((self._storage[k].size for k in whole if k in self._storage), default=0)
        flat = getattr(self, "_update_flat", None)
        if flat is None or flat.size < max(need, room):
            flat = self._update_flat = np.zeros(max(need, room), dtype=np.float32)
        self._update_scratch = {k: flat[:math.prod(shapes[k])].reshape(shapes[k]) for k in whole}
        self._kept = {}
        if not self.keep_gradients:
            return
        kept_storage = {}
        for k, s in shapes.items():
            if k in self._storage:
                store = self._kept_storage.get(k)
                if store is None or store.shape != self._storage[k].shape:
                    store = np.zeros(self._storage[k].shape, dtype=np.float32)
                kept_storage[k] = store
                self._kept[k] = store[self._room[k].slices()]
            else:
                self._kept[k] = np.zeros(s, dtype=np.float32)
        self._kept_storage = kept_storage

    def _arena_buffer(self, nbytes: int) -> np.ndarray:
        """The arena for a plan of `nbytes`: the trainer's current one (zeroed)
        when it is large enough, else a new one, with room for `_arena_room`."""
        need = max(nbytes // 4, 1, self._arena_room)
        arena = getattr(self, "_arena", None)
        if arena is not None and arena.size >= need:
            arena.fill(0)
            return arena
        return np.zeros(need, dtype=np.float32)

    # ------------------------------------------------------------ capacity and growth

    def _reserve(self, room: Mapping[str, Any], arena_bytes: int) -> None:
        """Store the tensors of `room` (key -> IndexMap from the current shape
        to the shape with room, whose old entries form slices) in storage
        of that shape, and keep the state and optimizer state as views of
        it; the arena holds at least `arena_bytes`."""
        for key, m in room.items():
            store = np.zeros(m.new_shape, dtype=np.float32)
            view = store[m.slices()]
            np.copyto(view, self._state[key])
            self._state[key] = view
            self._storage[key] = store
            self._room[key] = m
            for name, a in self._opt_state.get(key, {}).items():
                ostore = np.zeros(m.new_shape, dtype=np.float32)
                oview = ostore[m.slices()]
                np.copyto(oview, a)
                self._opt_state[key][name] = oview
                self._opt_storage.setdefault(key, {})[name] = ostore
        self._arena_room = max(self._arena_room, arena_bytes // 4)
        self._allocate_update_buffers()
        self._setup()

    def _grow_state(self, growth: Any, room: Mapping[str, Any], init: str, seed: int) -> None:
        """Replace the state and optimizer state by the grown model's
        (`growth`: a `compiler.grow.Growth`; `room`: key -> IndexMap into
        storage with room for the new model, for tensors stored with room).
        A tensor whose storage keeps its shape and every old entry's place
        is grown in place: only its new entries are written. Nothing of the
        trainer changes before every new tensor exists."""
        sources = growth.net2net_sources(seed) if init == "net2net" else None
        state: dict[str, np.ndarray] = {}
        opt_state: dict[str, dict[str, np.ndarray]] = {}
        storage: dict[str, np.ndarray] = {}
        opt_storage: dict[str, dict[str, np.ndarray]] = {}
        writes: list[tuple[np.ndarray, np.ndarray]] = []     # in-place net2net copies, done last
        fills: list[tuple[str, np.ndarray, bool]] = []       # in-place new entries, done last
        moves: list[tuple[np.ndarray, tuple, tuple]] = []    # in-place old entries to their new places, before
        for key, value in self._state.items():
            if key not in growth.maps:                       # num_batches_tracked
                state[key] = value
                continue
            m = growth.maps[key]
            if key not in self._storage and key not in room and m.old_shape == m.new_shape and not m.moves:
                state[key] = value                           # untouched by the growth: kept where it is
                if key in self._opt_state:
                    opt_state[key] = self._opt_state[key]
                continue
            r = room.get(key)
            in_place = r is not None and key in self._storage and r.new_shape == self._storage[key].shape
            if in_place:
                store = storage[key] = self._storage[key]
                view = store[r.slices()]
                if init == "zero":
                    moves.append((store, value.shape, growth.maps[key].positions))
                    fills.append((key, view, True))
                else:
                    writes.append((view, growth.tensor(key, value, init, seed, sources)))
            else:
                new = growth.tensor(key, value, init, seed, sources)
                if r is not None:
                    store = storage[key] = np.zeros(r.new_shape, dtype=np.float32)
                    view = store[r.slices()]
                    np.copyto(view, new)
                else:
                    view = new
            state[key] = view
            if key in self._opt_state:
                opt_state[key] = {}
                for name, a in self._opt_state[key].items():
                    if in_place:
                        ostore = opt_storage.setdefault(key, {})[name] = self._opt_storage[key][name]
                        oview = ostore[r.slices()]
                        moves.append((ostore, a.shape, growth.maps[key].positions))
                        fills.append((key, oview, False))
                    elif r is not None:
                        ostore = opt_storage.setdefault(key, {})[name] = np.zeros(r.new_shape, dtype=np.float32)
                        oview = ostore[r.slices()]
                        growth.maps[key].place(a, out=oview)
                    else:
                        oview = growth.maps[key].place(a, 0.0)
                    opt_state[key][name] = oview
        for store, shape, positions in moves:
            _move_in_place(store, shape, positions)
        for key, out, fresh in fills:
            growth.fill_new(key, out, seed, fresh=fresh)
        for out, new in writes:
            np.copyto(out, new)
        self._state, self._opt_state = state, opt_state
        self._storage, self._opt_storage = storage, opt_storage
        self._room = {k: room[k] for k in storage}
        self._has_gradients = False

    # ------------------------------------------------------------ internals

    def _inputs(self, x: Any) -> tuple[list[np.ndarray], int, dict[str, int]]:
        """`x`: an array for a single-input model; a dict by input name or a
        tuple in input order for several inputs."""
        if len(self.INPUTS) == 1:
            given = {next(iter(self.INPUTS)): x}
        elif isinstance(x, Mapping):
            given = self._bind_inputs((), dict(x))
        elif isinstance(x, (tuple, list)):
            given = self._bind_inputs(tuple(x), {})
        else:
            raise TypeError(f"{self.NAME} takes {len(self.INPUTS)} inputs ({', '.join(self.INPUTS)}): "
                            f"pass a dict by name or a tuple")
        arrays = [self._as_float32(n, given[n]) for n in self.INPUTS]
        batch, dims = self._check(arrays)
        return arrays, batch, dims

    def _assemble(self, params: Mapping[str, np.ndarray], counters: Mapping[str, int]) -> dict[str, np.ndarray]:
        """The state_dict in PyTorch's order: each counter after its
        batchnorm's `running_var`."""
        state: dict[str, np.ndarray] = {}
        placed = set()
        after = {c[:-len(COUNTER_SUFFIX)] + ".running_var": c for c in self.COUNTERS}
        for k in self.PARAMS:
            state[k] = params[k]
            if k in after:
                c = after[k]
                state[c] = np.array(counters.get(c, 0), dtype=np.int64)
                placed.add(c)
        for c in self.COUNTERS:
            if c not in placed:
                state[c] = np.array(counters.get(c, 0), dtype=np.int64)
        return state

    def _read_counters(self, source: str | os.PathLike | Mapping[str, Any]) -> dict[str, int]:
        """`num_batches_tracked` values present in a weights dict or file
        (already checked by `weights.load`)."""
        if not self.COUNTERS:
            return {}
        if isinstance(source, Mapping):
            raw = {k: source[k] for k in self.COUNTERS if k in source}
            where = "the weights"
        else:
            path = os.fsdecode(os.fspath(source))
            raw = _read_members(path, self.COUNTERS)
            where = f"the weights in `{path}`"
        out: dict[str, int] = {}
        problems = []
        for k, v in raw.items():
            value = count_value(v)
            if value is None:
                problems.append(f"`{k}` must be an integer from 0 to 2^62 (PyTorch's int64 scalar)")
            else:
                out[k] = value
        if problems:
            raise W.WeightsError(f"{where} do not fit the model:\n  " + "\n  ".join(problems))
        return out

    def _check_optimizer_state(self, arrays: Mapping[str, Any], source: str) -> tuple[dict[str, np.ndarray], int | None]:
        expected = {f"{k}.{n}": a.shape for k, names in self._opt_state.items() for n, a in names.items()}
        keys = [k for k in arrays]
        problems: list[str] = []
        values: dict[str, np.ndarray] = {}
        for key, shape in expected.items():
            if key not in arrays:
                continue
            a = state_tensor(key, arrays[key], shape, "the parameter has", problems)
            if a is not None:
                values[key] = a
        step = None
        if self.optimizer.counts_steps and STEP_KEY in arrays:
            step = count_value(arrays[STEP_KEY])
            if step is None:
                problems.append(STEP_PROBLEM)
        missing = [k for k in expected if k not in arrays]
        if self.optimizer.counts_steps and STEP_KEY not in arrays:
            missing.append(STEP_KEY)
        allowed = set(expected) | ({STEP_KEY} if self.optimizer.counts_steps else set())
        unexpected = [str(k) for k in keys if k not in allowed]
        if missing:
            problems.append("missing: " + _listing(missing))
        if unexpected:
            problems.append("unexpected: " + _listing(unexpected))
        if problems:
            saved = _saved_by(unexpected)
            note = f" (it looks like {saved} state)" if saved and saved != self._optimizer_kind() else ""
            raise OptimizerStateError(f"{source} does not fit this trainer's {self._optimizer_kind()}{note}:\n  "
                                      + "\n  ".join(problems))
        return values, step

    def _optimizer_kind(self) -> str:
        opt = self.optimizer
        if isinstance(opt, SGD):
            return "SGD with momentum" if opt.momentum != 0 else "SGD without momentum"
        return type(opt).__name__


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(f"`{k}`" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _saved_by(keys: list[str]) -> str | None:
    if any(k.endswith(".momentum_buffer") for k in keys):
        return "SGD with momentum"
    if any(k.endswith((".exp_avg", ".exp_avg_sq")) for k in keys):
        return "Adam or AdamW"
    return None


def state_tensor(key: str, value: Any, shape: tuple, owner: str, problems: list[str]) -> np.ndarray | None:
    """One optimizer-state tensor, checked: an array of finite floats of
    `shape` (and no negative average of squares); None with the problem
    appended (`owner`: how the message names where the shape comes from)."""
    try:
        a = np.asarray(value)
    except Exception as e:  # any object may be passed
        problems.append(f"`{key}` is not an array of numbers ({str(e).splitlines()[0][:120]})")
        return None
    if a.dtype.kind != "f":
        problems.append(f"`{key}` has dtype {a.dtype}, expected floating-point values")
    elif a.shape != tuple(shape):
        problems.append(f"`{key}` has shape {list(a.shape)}, {owner} {list(shape)}")
    elif not np.isfinite(a).all():
        problems.append(f"`{key}` holds NaN or infinite values")
    elif key.endswith(".exp_avg_sq") and (a < 0).any():     # its square root is the next update's divisor
        problems.append(f"`{key}` holds negative values (Adam's average of squared gradients)")
    else:
        return a
    return None


STEP_PROBLEM = f"`{STEP_KEY}` must be an integer from 0 to 2^62 (the number of updates done)"
MAX_COUNT = 2 ** 62      # a count a step can still add to in int64 (2^64 - 1 overflowed: exit 70)


def count_value(v: Any) -> int | None:
    """A non-negative integer up to MAX_COUNT from a 0-d (or one-element)
    array of an integer, or of a float with an integral value (torch keeps
    Adam's step as a float tensor); None otherwise."""
    try:
        a = np.asarray(v)
    except Exception:
        return None
    if a.size != 1 or a.ndim > 1 or a.dtype.kind not in "iuf":
        return None
    value = a.reshape(()).item()
    if isinstance(value, float) and not (math.isfinite(value) and value == int(value)):
        return None
    value = int(value)
    return value if 0 <= value <= MAX_COUNT else None


def read_npz(path: str, error: type[Exception], what: str) -> dict[str, np.ndarray]:
    """Every array of a `.npz` file (allow_pickle=False), or `error` naming the file."""
    if not os.path.isfile(path):
        raise error(f"{what} file `{path}` does not exist" if not os.path.exists(path)
                    else f"{what} file `{path}` is not a regular file")
    try:
        check_sizes(path, error, memory_bytes(), "this machine's memory")
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise error(f"`{path}` holds a single array, not a set of named arrays (write it with numpy.savez)")
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        if isinstance(e, error):
            raise
        reason = (str(e).strip() or type(e).__name__).splitlines()[0][:200]
        raise error(f"`{path}` is not a readable .npz {what} file ({reason})") from None


def _read_members(path: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays under `keys` that a weights file (npz or safetensors) holds."""
    try:
        if zipfile.is_zipfile(path):
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in keys if k in data.files}
        from safetensors import safe_open
        with safe_open(path, framework="numpy") as f:
            names = set(f.keys())
            return {k: f.get_tensor(k) for k in keys if k in names}
    except Exception as e:  # the file passed weights.load; a member it skipped is unreadable
        reason = (str(e).strip() or type(e).__name__).splitlines()[0][:200]
        raise W.WeightsError(f"the `num_batches_tracked` entries of `{path}` cannot be read ({reason})") from None


__all__ = ["TrainerBase", "TrainerError", "OptimizerStateError", "DataError", "TargetError"]


def _move_in_place(store: np.ndarray, shape: tuple, positions: tuple) -> None:
    """Move the entries of a tensor of `shape`, held at the start of
    `store`, to `positions` (per axis, the new index of each old one:
    increasing, never below it, as growth places units) inside `store`,
    axis by axis, a hyperplane at a time from the last: a hyperplane moves
    only to where none waits to move, so nothing is allocated beyond one
    hyperplane. The entries left behind are new ones, written next."""
    region = [slice(0, n) for n in shape]
    for k, pos in enumerate(positions):
        for i in np.flatnonzero(pos != np.arange(len(pos)))[::-1].tolist():
            dst, src = list(region), list(region)
            dst[k], src[k] = int(pos[i]), i
            store[tuple(dst)] = store[tuple(src)]
        region[k] = slice(0, int(pos[-1]) + 1 if len(pos) else 0)
