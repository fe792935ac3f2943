"""The NumPy training generator: a training graph and its memory layout ->
the source of an importable training module.

In:  a `TrainGraph` (`autodiff.py`) and its `TrainLayout` (`train_memory.py`,
     made with `scratch_bytes` below so that the arena holds every kernel's
     scratch).
Out: the text of `NAME_train.py` (template `templates/train_module.py.j2`): a
     `Trainer(TrainerBase)` class whose `_views` hands every step its planned
     arena views for one batch size and whose `_train_step` is one commented
     block per step of the schedule: the training forward, the loss, each
     backward step followed by the updates of the parameters it completed.

Each op has two entries, `FORWARD[op]` and `BACKWARD[op]`, a few lines that
call the op family's kernels in `runtime/` (`K.<op>_train`, `K.<op>_backward`,
the inference kernels where training changes nothing). They return `KCall`s
(a kernel call, with its scratch function when it has one, so the planner
sees the same scratch the code asks for) and plain lines. Fused steps (a
batchnorm with the activation and max pool it takes in) call the
`batchnorm_chain_*` kernels, recompute steps `batchnorm_chain_recompute`, and
masked activations `activation_mask` / `activation_backward_masked`.

Chunks. A call whose kernel works example by example offers its scratch per
chunk of examples (`train_memory.ChunkedScratch`), and the memory plan picks
the chunk: per-example kernels (the inference kernels, max pooling's
training forward) then run in a loop over chunks of the batch (`for part,
scratch in v.chunks_N`, the scratch views made for one chunk), the kernels
that chunk themselves (convolution backward, the batchnorm chains) get
`chunk=` in their scratch function. Output is deterministic: the same
training graph gives the same bytes.

Blocked updates. An UPDATE step marked `blocked` (a large dense weight, see
`autodiff.py`) forms the gradient `dense.weight_block_rows` rows at a time
into a planned tile and applies the optimizer to those rows of the
parameter and its state at once (`optim.update_rows`, with a tile-sized
scratch): `for rows, dw, scratch in v.blocks_N`, the tiles cut per block in
`_views`. Its scratch is the two tiles (`grad`, `update`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ...runtime import kernels as K
from ...runtime.dense import weight_block_rows
from ...runtime import losses as L
from ..autodiff import InputGrad, Step, StepKind, TrainGraph
from ..train_memory import ChunkedScratch
from ..dims import Sym, evaluate, format_shape
from ..ir import Node, integer_limits
from ..memory import min_dims
from . import numpy as inference
from .names import RESERVED, Namespace, py_comment, py_literal

LOCALS = frozenset({"v", "s", "y", "loss", "key", "batch", "dims", "arrays", "L", "Trainer",
                    "TrainerBase", "Spec", "_Views", "part", "scratch", "rows", "dw", "update_rows"})

VERSION = inference.VERSION
BATCH = inference.BATCH


@dataclass(frozen=True, slots=True)
class T:
    """A tensor of the training graph (a model input, a value, a gradient...)."""
    name: str


@dataclass(frozen=True, slots=True)
class P:
    """An entry of the trainer's state (`self._state[key]`)."""
    key: str


@dataclass(frozen=True, slots=True)
class Raw:
    """Python code passed through as it is."""
    text: str


@dataclass(frozen=True, slots=True)
class KCall:
    """`K.fn(*args, **kwargs)`; `scratch` is its scratch function's call
    `(name, args, kwargs)` (shapes with `BATCH`), or None. `chunks`: how the
    call takes the batch in chunks of examples, if it can: "loop" (the kernel
    works per example: called on each chunk) or "kernel" (it chunks itself:
    its scratch function takes `chunk=`)."""

    fn: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    scratch: tuple[str, tuple, Mapping[str, Any]] | None = None
    chunks: str | None = None


Item = "KCall | str"


# ------------------------------------------------------------------ helpers for the entries

def _shape(tg: TrainGraph, value: str) -> tuple:
    return (BATCH, *tg.graph.shape_of(value))


def _param(n: Node, name: str) -> P | None:
    return P(n.param_key(name)) if any(p.name == name for p in n.params) else None


def _pgrad(s: Step, name: str) -> T | None:
    g = s.param_grads.get(name)
    return T(g) if g else None


def _grad(s: Step, index: int) -> InputGrad | None:
    return next((g for g in s.input_grads if g.index == index), None)


def _dx(s: Step, index: int = 0) -> T | None:
    """Where a kernel writes input `index`'s gradient: the gradient itself, or
    the partial that is added to it after the call."""
    g = _grad(s, index)
    if g is None:
        return None
    return T(g.partial or g.target)


def _dy(s: Step) -> T:
    return T(f"d:{s.output}")


def _scratch_of(fn: str, args: tuple, kwargs: Mapping[str, Any]) -> tuple | None:
    name = f"{fn}_scratch"
    return (name, args, kwargs) if hasattr(K, name) else None


# What the inference plan passes to bound a kernel's scratch by its own arena (the inference
# generator's `budget` and `tiles`, and the packed weights those tiles chose): the training plan
# bounds scratch its own way, by chunks of examples, and lets the kernel take its default,
# fastest, tiles (on weights that change every step, so never packed).
INFERENCE_BOUNDS = ("budget", "tiles", "pack", "packed")


def _from_inference(tg: TrainGraph, n: Node) -> KCall:
    """The inference kernel's call (the forward of every op training does not
    change); inference kernels work example by example, so a loop over chunks
    of the batch may bound their scratch."""
    c = inference.KERNELS[n.op.name](tg.graph, n)
    args = tuple(_convert(a) for a in c.args)
    kwargs = {k: v for k, v in c.kwargs.items() if k not in INFERENCE_BOUNDS}
    scratch = None
    if c.scratch_args is not None:
        scratch = (c.scratch_name, c.scratch_args,
                   {k: v for k, v in c.scratch_kwargs.items() if k not in INFERENCE_BOUNDS})
    return KCall(c.fn, args, kwargs, scratch, "loop" if scratch is not None else None)


def _convert(a: Any) -> Any:
    if isinstance(a, inference.Ref):
        return {"value": lambda: T(a.key), "param": lambda: P(a.key), "none": lambda: None}[a.kind]()
    if isinstance(a, tuple) and a and all(isinstance(i, inference.Ref) for i in a):
        return tuple(_convert(i) for i in a)
    return a


def _geometry(n: Node, conv: bool) -> dict[str, Any]:
    a = n.attrs
    if len(n.shape) == 2:                  # 1-d: integers and a (left, right) padding
        geo = dict(stride=a["stride"][0], padding=a["pads"][0])
        if conv:
            geo.update(dilation=a["dilation"][0], groups=a["groups"])
        else:
            geo = dict(kernel=a["kernel"][0], **geo)
        return geo
    geo = dict(stride=a["stride"], padding=a["pads"])
    if conv:
        geo.update(dilation=a["dilation"], groups=a["groups"])
    else:
        geo = dict(kernel=a["kernel"], **geo)
    return geo


def _act_tuple(n: Node) -> tuple:
    return (n.op.name, *n.attrs.values())


def _chain_args(s: Step) -> dict[str, Any]:
    """The `act` and `pool` of a fused batchnorm step (2-D pooling geometry;
    a 1-D pool as 2-D on [B, C, 1, T])."""
    act = pool = None
    for n in s.chain:
        if n.op.name in inference.catalog.ACTIVATIONS:
            act = _act_tuple(n)
        else:
            a = n.attrs
            if len(a["kernel"]) == 1:
                pool = dict(kernel=(1, a["kernel"][0]), stride=(1, a["stride"][0]), padding=((0, 0), a["pads"][0]))
            else:
                pool = dict(kernel=a["kernel"], stride=a["stride"], padding=a["pads"])
    return dict(act=act, pool=pool)


# ------------------------------------------------------------------ forward, training mode

def _fw_inference(tg: TrainGraph, s: Step, r: "_Render") -> list:
    return [_from_inference(tg, s.node)]


def _fw_view(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    if r.lay.same_memory(n.label, n.inputs[0]):
        return ["pass  # a view of its input: nothing to compute"]
    return [KCall("copy", (T(n.inputs[0]), T(n.label)))]


def _fw_batchnorm(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    args = (T(n.inputs[0]), _param(n, "weight"), _param(n, "bias"), _param(n, "running_mean"),
            _param(n, "running_var"))
    stats = dict(out=T(s.output), mean=T(s.saved["mean"]), rstd=T(s.saved["rstd"]))
    if s.chain:
        geo = _chain_args(s)
        if geo["pool"] is not None:
            stats["argmax"] = T(s.saved["argmax"])
        call = KCall("batchnorm_chain_train", args, dict(eps=n.attrs["eps"], momentum=n.attrs["momentum"], **geo,
                                                         **stats),
                     ("batchnorm_chain_train_scratch", (_shape(tg, n.inputs[0]),), geo), "kernel")
    else:
        call = KCall("batchnorm_train", args, dict(eps=n.attrs["eps"], momentum=n.attrs["momentum"], **stats))
    return [call, f"s[{py_literal(n.param_key('num_batches_tracked'))}] += 1"]


def _fw_activation(tg: TrainGraph, s: Step, r: "_Render") -> list:
    """The inference kernel, after the one-byte mask of its input when the backward reads that."""
    call = _from_inference(tg, s.node)
    if "mask" not in s.saved:
        return [call]
    return [KCall("activation_mask", (_act_tuple(s.node), T(s.node.inputs[0]), T(s.saved["mask"]))), call]


def _fw_layernorm(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    return [KCall("layernorm_train", (T(n.inputs[0]), _param(n, "weight"), _param(n, "bias")),
                  dict(eps=n.attrs["eps"], out=T(n.label), mean=T(s.saved["mean"]), rstd=T(s.saved["rstd"])))]


def _fw_maxpool(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    fn = f"{n.op.name}_train"
    geo = _geometry(n, conv=False)
    return [KCall(fn, (T(n.inputs[0]), T(n.label), T(s.saved["argmax"])), geo,
                  _scratch_of(fn, (_shape(tg, n.inputs[0]),), geo), "loop")]


def _fw_dropout(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    return [KCall("dropout_train", (T(n.inputs[0]),),
                  dict(p=n.attrs["p"], rng=Raw("self._rng"), out=T(n.label), mask=T(s.saved["mask"])))]


def _recurrent_weights(n: Node) -> tuple:
    biases = (_param(n, "bias_ih_l0"), _param(n, "bias_hh_l0"))
    return (_param(n, "weight_ih_l0"), _param(n, "weight_hh_l0"), *biases)


def stacked(name: str, a) -> bool:
    from ..ops.recurrent import stacked as rule
    return rule(name, a)


def _stack_args(n: Node) -> tuple[tuple, dict]:
    from ..ops.recurrent import parts
    a = n.attrs
    weights = tuple(_param(n, f"{w}{sfx}") for _, sfx in parts(a) for w in ("weight_ih", "weight_hh", "bias_ih",
                                                                             "bias_hh"))
    act = {"nonlinearity": a["nonlinearity"]} if n.op.name == "rnn" else {}
    return weights, dict(hidden=a["hidden"], layers=a["layers"], dirs=2 if a["bidirectional"] else 1, **act)


def _stack_saved(s: Step) -> tuple:
    from ..ops.recurrent import parts
    n = s.node
    keep = []
    for _, sfx in parts(n.attrs):
        if n.op.name == "lstm":
            keep.append(T(s.saved[f"cells{sfx}"]))
    return tuple(keep) + tuple(T(s.saved[f"out_l{k}"]) for k in range(n.attrs["layers"] - 1))


def _fw_recurrent(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    if stacked(n.op.name, n.attrs):
        weights, geo = _stack_args(n)
        return [KCall("rnn_stack_train", (n.op.name, T(n.inputs[0]), weights, T(n.label), _stack_saved(s)), geo,
                      _scratch_of("rnn_stack_train", (n.op.name, _shape(tg, n.inputs[0])), geo))]
    fn = f"{n.op.name}_train"
    saved = (T(s.saved["cells"]),) if n.op.name == "lstm" else ()
    return [KCall(fn, (T(n.inputs[0]), *_recurrent_weights(n), T(n.label), *saved), {},
                  _scratch_of(fn, (_shape(tg, n.inputs[0]), n.attrs["hidden"]), {}))]


FORWARD: dict[str, Callable[[TrainGraph, Step, "_Render"], list]] = {
    **{op: _fw_inference for op in inference.KERNELS},
    "flatten": _fw_view, "reshape": _fw_view, "identity": _fw_view,
    **{a: _fw_activation for a in inference.catalog.ACTIVATIONS},
    "batchnorm": _fw_batchnorm, "layernorm": _fw_layernorm,
    "maxpool1d": _fw_maxpool, "maxpool2d": _fw_maxpool,
    "dropout": _fw_dropout,
    "global_maxpool": lambda tg, s, r: _fw_global_maxpool(tg, s, r),     # defined with its backward below
    "groupnorm": lambda tg, s, r: _fw_groupnorm(tg, s, r), "instancenorm": lambda tg, s, r: _fw_groupnorm(tg, s, r),
    "gru": _fw_recurrent, "lstm": _fw_recurrent, "rnn": _fw_recurrent,
}


# ------------------------------------------------------------------ backward

def _accumulate(s: Step, r: "_Render") -> list[str]:
    """Add the partial gradients this step computed to their targets (fan-out)."""
    return [f"np.add({r.arg(T(g.target))}, {r.arg(T(g.partial))}, out={r.arg(T(g.target))})"
            for g in s.input_grads if g.partial]


def _bw_conv(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    rank = len(n.shape) - 1
    fn = f"conv{rank}d_backward"
    geo = _geometry(n, conv=True)
    w_shape = next(p.shape for p in n.params if p.name == "weight")
    kw = dict(geo, dx=_dx(s), dw=_pgrad(s, "weight"), db=_pgrad(s, "bias"))
    return [KCall(fn, (T(n.inputs[0]), _param(n, "weight"), _dy(s)), kw,
                  _scratch_of(fn, (_shape(tg, n.inputs[0]), w_shape), dict(geo, need_dx=_dx(s) is not None)),
                  "kernel")]


def _bw_conv_transpose(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    fn = f"{n.op.name}_backward"
    geo = {k: v for k, v in inference.KERNELS[n.op.name](tg.graph, n).kwargs.items() if k != "tiles"}
    w_shape = next(p.shape for p in n.params if p.name == "weight")
    kw = dict(geo, dx=_dx(s), dw=_pgrad(s, "weight"), db=_pgrad(s, "bias"))
    return [KCall(fn, (T(n.inputs[0]), _param(n, "weight"), _dy(s)), kw,
                  _scratch_of(fn, (_shape(tg, n.inputs[0]), w_shape), dict(geo, need_dx=_dx(s) is not None)))]


def _fw_groupnorm(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    return [KCall("groupnorm_train", (T(n.inputs[0]), _param(n, "weight"), _param(n, "bias")),
                  dict(eps=n.attrs["eps"], groups=n.attrs["groups"], out=T(n.label), mean=T(s.saved["mean"]),
                       rstd=T(s.saved["rstd"])))]


def _bw_groupnorm(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    return [KCall("groupnorm_backward", (T(n.inputs[0]), _param(n, "weight"), _dy(s), T(s.saved["mean"]),
                                         T(s.saved["rstd"])),
                  dict(groups=n.attrs["groups"], dx=_dx(s), dgamma=_pgrad(s, "weight"), dbeta=_pgrad(s, "bias")),
                  ("groupnorm_backward_scratch", (_shape(tg, n.inputs[0]), n.attrs["groups"]), {}))]


def _fw_global_maxpool(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    return [KCall("global_maxpool_train", (T(n.inputs[0]), T(n.label), T(s.saved["argmax"])))]


def _bw_global_maxpool(tg: TrainGraph, s: Step, r: "_Render") -> list:
    return [KCall("global_maxpool_backward", (_dy(s), T(s.saved["argmax"])), dict(dx=_dx(s)))]


def _bw_adaptive(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    size = n.attrs["size"]
    if len(size) == 1:
        return [KCall("adaptive_avgpool1d_backward", (_dy(s),), dict(size=size[0], dx=_dx(s)))]
    in_hw = tuple(tg.graph.shape_of(n.inputs[0])[1:])
    return [KCall("adaptive_avgpool2d_backward", (_dy(s),), dict(size=size, dx=_dx(s)),
                  ("adaptive_avgpool2d_backward_scratch", (_shape(tg, n.label),), {"in_hw": in_hw}))]


def _bw_pad(tg: TrainGraph, s: Step, r: "_Render") -> list:
    a = s.node.attrs
    return [KCall("pad_backward", (_dy(s), a["pads"], a["mode"], a["value"]), dict(dx=_dx(s)),
                  _scratch_of("pad_backward", (_shape(tg, s.node.label),), {"mode": a["mode"]}))]


def _bw_dense(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    return [KCall("dense_backward", (T(n.inputs[0]), _param(n, "weight"), _dy(s)),
                  dict(dx=_dx(s), dw=_pgrad(s, "weight"), db=_pgrad(s, "bias")))]


def _bw_maxpool(tg: TrainGraph, s: Step, r: "_Render") -> list:
    fn = f"{s.node.op.name}_backward"
    argmax = s.saved["argmax"]
    geo = _geometry(s.node, conv=False) if tg.tensors[argmax].dtype == "uint8" else {}
    return [KCall(fn, (_dy(s), T(argmax)), dict(dx=_dx(s), **geo),
                  _scratch_of(fn, (_shape(tg, s.node.label),), {}))]


def _bw_avgpool(tg: TrainGraph, s: Step, r: "_Render") -> list:
    geo = _geometry(s.node, conv=False)
    return [KCall(f"{s.node.op.name}_backward", (_dy(s),), dict(geo, dx=_dx(s)))]


def _bw_global_avgpool(tg: TrainGraph, s: Step, r: "_Render") -> list:
    return [KCall("global_avgpool_backward", (_dy(s),), dict(dx=_dx(s)))]


def _bw_norm(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    if s.chain:
        geo = _chain_args(s)
        kw = dict(geo, argmax=T(s.saved["argmax"])) if geo["pool"] is not None else geo
        return [KCall("batchnorm_chain_backward", (T(n.inputs[0]), _param(n, "weight"), _param(n, "bias"), _dy(s),
                                                   T(s.saved["mean"]), T(s.saved["rstd"])),
                      dict(kw, dx=_dx(s), dgamma=_pgrad(s, "weight"), dbeta=_pgrad(s, "bias")),
                      ("batchnorm_chain_backward_scratch", (_shape(tg, n.inputs[0]),), geo), "kernel")]
    fn = f"{n.op.name}_backward"
    return [KCall(fn, (T(n.inputs[0]), _param(n, "weight"), _dy(s), T(s.saved["mean"]), T(s.saved["rstd"])),
                  dict(dx=_dx(s), dgamma=_pgrad(s, "weight"), dbeta=_pgrad(s, "bias")),
                  _scratch_of(fn, (_shape(tg, n.inputs[0]),), {}))]


def _bw_activation(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    if "mask" in s.saved:
        act = _act_tuple(n)
        return [KCall("activation_backward_masked", (act, T(s.saved["mask"]), _dy(s)), dict(dx=_dx(s)),
                      ("activation_backward_masked_scratch", (act, _shape(tg, n.label)), {}))]
    rule = n.op.backward
    x = T(n.inputs[0]) if rule.needs_inputs else None
    y = T(n.label) if rule.needs_output else None
    act = _act_tuple(n)
    return [KCall("activation_backward", (act, x, y, _dy(s)), dict(dx=_dx(s)),
                  _scratch_of("activation_backward", (act, _shape(tg, n.label)), {}))]


def _bw_prelu(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    return [KCall("prelu_backward", (T(n.inputs[0]), _param(n, "weight"), _dy(s)),
                  dict(dx=_dx(s), dw=_pgrad(s, "weight")), _scratch_of("prelu_backward", (_shape(tg, n.label),), {}))]


def _bw_softmax(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    fn = f"{n.op.name}_backward"
    axis = n.attrs["axis"] + 1          # the kernels count the batch axis
    return [KCall(fn, (T(n.label), _dy(s)), dict(axis=axis, dx=_dx(s)),
                  _scratch_of(fn, (_shape(tg, n.label), axis), {}))]


def _bw_dropout(tg: TrainGraph, s: Step, r: "_Render") -> list:
    return [KCall("dropout_backward", (_dy(s), T(s.saved["mask"])), dict(dx=_dx(s)))]


def _pass_on(s: Step, r: "_Render", g: InputGrad, source: str, negate: bool = False) -> str:
    """An input gradient that is the output's gradient (`source`: its code, a
    view in the input's shape): shared memory, a copy, or added in."""
    target = r.arg(T(g.target))
    if g.accumulate:
        return f"np.{'subtract' if negate else 'add'}({target}, {source}, out={target})"
    if negate:
        return f"np.negative({source}, out={target})"
    if r.lay.same_memory(g.target, f"d:{s.node.label}"):
        return "pass  # the input's gradient is the output's, in the same memory"
    return f"np.copyto({target}, {source})"


def _bw_view(tg: TrainGraph, s: Step, r: "_Render") -> list:
    (g,) = s.input_grads
    return [_pass_on(s, r, g, r.reshaped(f"d:{s.node.label}", g.target))]


def _bw_add(tg: TrainGraph, s: Step, r: "_Render") -> list:
    dy = r.arg(_dy(s))
    # copies first: a gradient sharing the output gradient's memory must not change before they read it
    order = sorted(s.input_grads, key=lambda g: r.lay.same_memory(g.target, f"d:{s.node.label}"))
    return [_pass_on(s, r, g, dy, negate=s.node.op.name == "sub" and g.index == 1) for g in order]


def _bw_concat(tg: TrainGraph, s: Step, r: "_Render") -> list:
    return [_pass_on(s, r, g, r.concat_slice(s, g.index)) for g in s.input_grads]


def _bw_mul(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    ins = tuple(T(v) for v in n.inputs)
    return [KCall("mul_backward", (ins, _dy(s), g.index), dict(dx=T(g.partial or g.target))) for g in s.input_grads]


def _bw_transpose(tg: TrainGraph, s: Step, r: "_Render") -> list:
    return [KCall("transpose_backward", (_dy(s), tuple(s.node.attrs["perm"])), dict(dx=_dx(s)))]


def _bw_upsample(tg: TrainGraph, s: Step, r: "_Render") -> list:
    if s.node.attrs.get("mode", "nearest") != "nearest":
        scale = s.node.attrs["scale"]
        return [KCall("upsample_linear_backward", (_dy(s), scale), dict(dx=_dx(s)),
                      ("upsample_linear_scratch", (_shape(tg, s.node.inputs[0]), scale), {}))]
    return [KCall("upsample_backward", (_dy(s), s.node.attrs["scale"]), dict(dx=_dx(s)))]


def _bw_recurrent(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    if stacked(n.op.name, n.attrs):
        from ..ops.recurrent import parts
        weights, geo = _stack_args(n)
        grads = tuple(_pgrad(s, f"{w}{sfx}") for _, sfx in parts(n.attrs)
                      for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        return [KCall("rnn_stack_backward", (n.op.name, T(n.inputs[0]), weights, T(n.label), _stack_saved(s), _dy(s)),
                      dict(dx=_dx(s), grads=grads, **geo),
                      _scratch_of("rnn_stack_backward", (n.op.name, _shape(tg, n.inputs[0])), geo))]
    fn = f"{n.op.name}_backward"
    saved = (T(s.saved["cells"]),) if n.op.name == "lstm" else ()
    kw = dict(dx=_dx(s), dw_ih=_pgrad(s, "weight_ih_l0"), dw_hh=_pgrad(s, "weight_hh_l0"),
              db_ih=_pgrad(s, "bias_ih_l0"), db_hh=_pgrad(s, "bias_hh_l0"))
    return [KCall(fn, (T(n.inputs[0]), *_recurrent_weights(n), T(n.label), *saved, _dy(s)), kw,
                  _scratch_of(fn, (_shape(tg, n.inputs[0]), n.attrs["hidden"]), {}))]


# section 9's axis ops (compiler/ops/reduce.py); the kernels count the batch as axis 0
def _bw_glu(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    axis = n.attrs["axis"] + 1
    return [KCall("glu_backward", (T(n.inputs[0]), _dy(s)), dict(axis=axis, dx=_dx(s)),
                  _scratch_of("glu_backward", (_shape(tg, n.inputs[0]), axis), {}))]


def _bw_slice(tg: TrainGraph, s: Step, r: "_Render") -> list:
    a = s.node.attrs
    if s.node.op.name == "select":
        return [KCall("select_axis_backward", (_dy(s),), dict(axis=a["axis"] + 1, index=a["index"], dx=_dx(s)))]
    return [KCall("slice_axis_backward", (_dy(s),),
                  dict(axis=a["axis"] + 1, start=a["start"], stop=a["stop"], step=a["step"], dx=_dx(s)))]


def _bw_reduce(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    axes = tuple(k + 1 for k in n.attrs["axes"])
    ins = (T(n.inputs[0]), T(n.label)) if n.op.name == "max" else ()
    return [KCall(f"reduce_{n.op.name}_backward", (*ins, _dy(s)), dict(axes=axes, dx=_dx(s)))]


# the transformer family (compiler/ops/attention.py, runtime/attention.py)
def _bw_embedding(tg: TrainGraph, s: Step, r: "_Render") -> list:
    return [KCall("embedding_backward", (T(s.node.inputs[0]), _dy(s)), dict(dw=_pgrad(s, "weight")))]


def _bw_positional(tg: TrainGraph, s: Step, r: "_Render") -> list:
    return [KCall("positional_backward", (_dy(s),), dict(dx=_dx(s), dw=_pgrad(s, "weight")))]


def _bw_attention(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    args = (T(n.inputs[0]), _param(n, "in_proj_weight"), _param(n, "in_proj_bias"), _param(n, "out_proj.weight"),
            _dy(s))
    kw = dict(heads=n.attrs["heads"], causal=n.attrs["causal"], dx=_dx(s), dw_in=_pgrad(s, "in_proj_weight"),
              db_in=_pgrad(s, "in_proj_bias"), dw_out=_pgrad(s, "out_proj.weight"),
              db_out=_pgrad(s, "out_proj.bias"))
    return [KCall("attention_backward", args, kw)]


def _bw_binary(tg: TrainGraph, s: Step, r: "_Render") -> list:
    n = s.node
    ins = tuple(T(v) for v in n.inputs)
    return [KCall(f"{n.op.name}_backward", (ins, _dy(s), g.index), dict(dx=T(g.partial or g.target)))
            for g in s.input_grads]


BACKWARD: dict[str, Callable[[TrainGraph, Step, "_Render"], list]] = {
    "conv1d": _bw_conv, "conv2d": _bw_conv, "depthwise_conv2d": _bw_conv,
    "conv_transpose1d": _bw_conv_transpose, "conv_transpose2d": _bw_conv_transpose,
    "dense": _bw_dense,
    "maxpool1d": _bw_maxpool, "maxpool2d": _bw_maxpool,
    "avgpool1d": _bw_avgpool, "avgpool2d": _bw_avgpool, "global_avgpool": _bw_global_avgpool,
    "batchnorm": _bw_norm, "layernorm": _bw_norm,
    "prelu": _bw_prelu, "softmax": _bw_softmax, "log_softmax": _bw_softmax, "dropout": _bw_dropout,
    "flatten": _bw_view, "reshape": _bw_view, "identity": _bw_view,
    "transpose": _bw_transpose, "upsample": _bw_upsample, "pad": _bw_pad,
    "global_maxpool": _bw_global_maxpool, "adaptive_avgpool1d": _bw_adaptive, "adaptive_avgpool2d": _bw_adaptive,
    "groupnorm": _bw_groupnorm, "instancenorm": _bw_groupnorm,
    "add": _bw_add, "sub": _bw_add, "mul": _bw_mul, "concat": _bw_concat,
    "gru": _bw_recurrent, "lstm": _bw_recurrent, "rnn": _bw_recurrent,
    **{a: _bw_activation for a in inference.catalog.ACTIVATIONS},
    "glu": _bw_glu, "slice": _bw_slice, "select": _bw_slice, "mean": _bw_reduce, "sum": _bw_reduce,
    "max": _bw_reduce,
    "embedding": _bw_embedding, "positional": _bw_positional, "attention": _bw_attention,
    "matmul": _bw_binary, "div": _bw_binary,
}


def _recompute(tg: TrainGraph, s: Step, r: "_Render") -> list:
    """A batchnorm's output (after the activation it takes in) formed again for the backward steps that read it."""
    n = s.node
    act = _chain_args(s)["act"]
    return [KCall("batchnorm_chain_recompute", (T(n.inputs[0]), _param(n, "weight"), _param(n, "bias"),
                                                T(s.saved["mean"]), T(s.saved["rstd"])),
                  dict(act=act, out=T(s.writes[0])),
                  ("batchnorm_chain_recompute_scratch", (_shape(tg, n.inputs[0]),), dict(act=act)), "kernel")]


def _loss(tg: TrainGraph, s: Step, r: "_Render") -> list:
    out = tg.output
    return [KCall(f"L.{tg.loss}", (T(out), Raw("y"), T(f"d:{out}")), {},
                  ("loss_scratch", (tg.loss, _shape(tg, out)), {}))]


def _items(tg: TrainGraph, s: Step, r: "_Render") -> list:
    r.step = s
    if s.kind is StepKind.FORWARD:
        return FORWARD[s.node.op.name](tg, s, r)
    if s.kind is StepKind.RECOMPUTE:
        return _recompute(tg, s, r)
    if s.kind is StepKind.BACKWARD:
        rule = BACKWARD.get(s.node.op.name)
        if rule is None:
            raise AssertionError(f"the NumPy training generator has no backward entry for `{s.node.op.name}`")
        return rule(tg, s, r) + _accumulate(s, r)
    if s.kind is StepKind.LOSS:
        return _loss(tg, s, r)
    if s.blocked:
        return _blocked_update(tg, s, r)
    return [f"self._apply_update({py_literal(s.param)}, {r.arg(T(s.reads[0]))})"]


def _blocked_param(s: Step):
    return next(p for p in s.node.params if s.node.param_key(p.name) == s.param)


def _blocks(tg: TrainGraph, s: Step) -> tuple[int, int, int]:
    """A blocked update's parameter rows, columns and rows per block."""
    o, f = (evaluate(d, tg.graph.bounds) for d in _blocked_param(s).shape)
    return o, f, weight_block_rows((o, f))


def _blocked_update(tg: TrainGraph, s: Step, r: "_Render") -> list:
    """The loop of a blocked update (the blocks are `v.blocks_N`, made in `_views`)."""
    n = s.node
    call = KCall("dense_backward", (T(n.inputs[0]), _param(n, _blocked_param(s).name), _dy(s)),
                 dict(dx=None, dw=Raw("dw"), db=None, rows=Raw("rows")))
    blocks = r.names(("blocks", s.index), f"blocks_{s.index}")
    return [f"for rows, dw, scratch in v.{blocks}:",
            "    " + r.call(call, None),
            f"    self._apply_update_rows({py_literal(s.param)}, rows, dw, scratch)"]


def _blocked_views(tg: TrainGraph, s: Step, r: "_Render", lay) -> str:
    o, f, rows = _blocks(tg, s)
    where = {k: (lay.plan.offsets[b], lay.sizes[b]) for k, b in sorted(lay.scratch.get(s.index, {}).items())}
    shapes = {"grad": (rows, f), "update": (rows, f)}
    blocks = r.names(("blocks", s.index), f"blocks_{s.index}")
    return f"v.{blocks} = self._row_blocks({o}, {rows}, self._scratch({r.code(shapes)}, {r.code(where)}))"


# ------------------------------------------------------------------ scratch sizes for the planner

def loss_scratch(kind: str, out_shape: tuple) -> dict[str, tuple]:
    shape = L.scratch_shape(kind, out_shape)
    return {"loss": shape} if math.prod(shape) > 0 else {}


def _scratch_fn(name: str) -> Callable:
    return loss_scratch if name == "loss_scratch" else getattr(K, name)


def _evaluate(x: Any, bounds: Mapping[str, int], batch: int) -> Any:
    if x is BATCH:
        return batch
    if isinstance(x, Sym):
        return evaluate(x, bounds)
    if isinstance(x, tuple):
        return tuple(_evaluate(i, bounds, batch) for i in x)
    if isinstance(x, dict):
        return {k: _evaluate(v, bounds, batch) for k, v in x.items()}
    return x


def _scratch_call(items: list) -> KCall | None:
    calls = [c for c in items if isinstance(c, KCall) and c.scratch is not None]
    assert len(calls) <= 1, "one kernel call with scratch per step"
    return calls[0] if calls else None


class _Sizer:
    """What `_items` needs of a renderer, for sizing scratch before the layout exists."""

    class _NoLayout:
        def same_memory(self, a: str, b: str) -> bool:
            return False

    lay = _NoLayout()

    def arg(self, x: Any) -> str:
        return ""

    def reshaped(self, *a) -> str:
        return ""

    def concat_slice(self, *a) -> str:
        return ""


def chunk_sizes(batch: int) -> list[int]:
    """The examples per chunk worth offering for `batch`: each number of
    chunks' smallest chunk size, largest first. ceil(batch / m) takes about
    2 sqrt(batch) values: one per run of m with the same floor((batch - 1) / m)."""
    n, m, sizes = batch - 1, 1, {1}
    while m <= n:
        q = n // m
        sizes.add(q + 1)
        m = n // q + 1
    return sorted(sizes, reverse=True)


def _scratch_shapes(tg: TrainGraph, call: KCall, batch: int, chunk: int | None) -> dict[str, tuple]:
    name, args, kwargs = call.scratch
    rows = batch if chunk is None or call.chunks != "loop" else min(batch, chunk)
    kwargs = dict(kwargs)
    if chunk is not None and call.chunks == "kernel":
        kwargs["chunk"] = chunk
    return _scratch_fn(name)(*_evaluate(args, tg.graph.bounds, rows), **_evaluate(kwargs, tg.graph.bounds, rows))


def scratch_bytes(tg: TrainGraph, step: int, batch: int) -> "dict[str, int] | ChunkedScratch":
    """Scratch name -> bytes at `batch` for one step, for `train_memory.train_layout`;
    by chunk of examples (`ChunkedScratch`) for a call that can take the batch in chunks."""
    s = tg.steps[step]
    if s.kind is StepKind.UPDATE and s.blocked:
        _, f, rows = _blocks(tg, s)
        return {"grad": rows * f * 4, "update": rows * f * 4}
    call = _scratch_call(_items(tg, s, _Sizer()))
    if call is None:
        return {}

    def nbytes(chunk: int | None) -> dict[str, int]:
        return {k: math.prod(s) * 4 for k, s in _scratch_shapes(tg, call, batch, chunk).items()}

    if call.chunks is None or batch == 1:
        return nbytes(None)
    return ChunkedScratch({k: nbytes(None if k == batch else k) for k in chunk_sizes(batch)})


# ------------------------------------------------------------------ rendering

class _Render:
    def __init__(self, tg: TrainGraph, lay):
        self.tg = tg
        self.lay = lay
        # the training step's own locals are never given to an input or a dimension
        self.names = Namespace(RESERVED | LOCALS)
        self.inputs = {i.name: self.names(("input", i.name), i.name) for i in tg.graph.inputs}
        self.dims = {d: self.names(("dim", d), d) for d in sorted(tg.graph.bounds)}
        self.extra_views: list[str] = []      # views of views (reshaped gradients, concat slices)
        self.step: Step | None = None         # the step being rendered (its `sources`)

    def dim(self, name: str) -> str:
        return self.dims.get(name) or self.names(("dim", name), name)

    def code(self, x: Any) -> str:
        return inference.code(x, self.dim)

    def code_rows(self, x: Any) -> str:
        """`code` with the batch written as `rows` (the examples of one chunk)."""
        return inference.code(_rows(x), lambda name: "rows" if name == _ROWS else self.dim(name))

    def ident(self, tensor: str) -> str:
        return self.names(("tensor", tensor), tensor.replace("d:", "d_").replace("~", "_from_"))

    def arg(self, x: Any) -> str:
        if isinstance(x, T):
            name = self.step.sources.get(x.name, x.name) if self.step is not None else x.name
            return self.inputs.get(name) or f"v.{self.ident(name)}"
        if isinstance(x, P):
            return f"s[{py_literal(x.key)}]"
        if isinstance(x, Raw):
            return x.text
        if x is None:
            return "None"
        if isinstance(x, tuple) and x and all(isinstance(i, (T, P)) or i is None for i in x) \
                and any(i is not None for i in x):
            return "(" + ", ".join(self.arg(i) for i in x) + ("," if len(x) == 1 else "") + ")"
        return self.code(x)

    def reshaped(self, source: str, like: str) -> str:
        """A view of tensor `source` in the shape of tensor `like`, made in `_views`."""
        key = ("reshaped", source, like)
        ident = self.names(key, f"{source}_as_{like}".replace("d:", "d_"))
        line = f"v.{ident} = {self.arg(T(source))}.reshape({self.code(_shape(self.tg, like[2:]))})"
        if line not in self.extra_views:
            self.extra_views.append(line)
        return f"v.{ident}"

    def concat_slice(self, s: Step, index: int) -> str:
        n = s.node
        axis = n.attrs["axis"]
        start: Any = 0
        for v in n.inputs[:index]:
            start = start + self.tg.graph.shape_of(v)[axis]
        stop = start + self.tg.graph.shape_of(n.inputs[index])[axis]
        ident = self.names(("slice", n.label, index), f"d_{n.label}_part{index}")
        lead = ", ".join([":"] * (axis + 1))
        line = f"v.{ident} = {self.arg(_dy(s))}[{lead}, {self.code(start)}:{self.code(stop)}]"
        if line not in self.extra_views:
            self.extra_views.append(line)
        return f"v.{ident}"

    def call(self, c: KCall, scratch: str | None, part: bool = False) -> str:
        """The call's line; with `part`, every batched tensor is cut to the chunk `part`."""
        def arg(a: Any) -> str:
            text = self.arg(a)
            if part and isinstance(a, T) and self.tg.tensors[a.name].batched:
                return f"{text}[part]"
            if part and isinstance(a, tuple) and a and all(isinstance(i, T) for i in a):
                return "(" + ", ".join(arg(i) for i in a) + ("," if len(a) == 1 else "") + ")"
            return text
        parts = [arg(a) for a in c.args]
        parts += [f"{k}={arg(v)}" for k, v in c.kwargs.items()]
        if scratch:
            parts.append(f"scratch={scratch}")
        fn = c.fn if c.fn.startswith("L.") else f"K.{c.fn}"
        return f"{fn}({', '.join(parts)})"

    def view(self, tensor: str) -> str:
        t = self.tg.tensors[tensor]
        shape = (BATCH, *t.shape) if t.batched else tuple(t.shape)
        region = {"int32": "_region_int32", "uint8": "_region_uint8"}.get(t.dtype, "_region")
        return (f"v.{self.ident(tensor)} = self.{region}({self.lay.offset(tensor)}, "
                f"{self.lay.sizes[self.lay.places[tensor]]}, {self.code(shape)})")


def _comment(tg: TrainGraph, s: Step) -> str:
    if s.kind is StepKind.LOSS:
        text = f"[{s.index}] loss: {tg.loss} of {tg.output} -> d:{tg.output}"
    elif s.kind is StepKind.UPDATE and s.blocked:
        text = (f"[{s.index}] update {s.param}: its gradient formed {_blocks(tg, s)[2]} rows at a time, "
                "each block applied at once")
    elif s.kind is StepKind.UPDATE:
        text = f"[{s.index}] update {s.param}"
    else:
        labels = "+".join(n.label for n in s.nodes)
        ops = "+".join(n.op.name for n in s.nodes)
        shape = format_shape(s.nodes[-1].shape)
        if s.kind is StepKind.FORWARD:
            text = f"[{s.index}] {labels}: {ops} -> {shape}"
        elif s.kind is StepKind.BACKWARD:       # may write nothing: a first layer whose weight is blocked
            text = f"[{s.index}] backward {labels}: {ops} {shape}"
        else:
            text = f"[{s.index}] recompute {labels}: {ops} -> {s.writes[0]} {shape}"
    return "# " + py_comment(text)


_ROWS = "@rows"      # the examples of one chunk, in the shapes of a chunked call's scratch


def _rows(x: Any) -> Any:
    if x is BATCH:
        return Sym.var(_ROWS)
    if isinstance(x, tuple):
        return tuple(_rows(i) for i in x)
    if isinstance(x, dict):
        return {k: _rows(v) for k, v in x.items()}
    return x


def generate(tg: TrainGraph, lay, *, name: str, source: str, batch: int) -> str:
    """The training module's text."""
    r = _Render(tg, lay)
    views: list[str] = []
    for tensor in tg.tensors:
        if tensor in lay.places:
            views.append(r.view(tensor))
    body: list[str] = []
    for s in tg.steps:
        items = _items(tg, s, r)
        body.append(_comment(tg, s))
        if s.kind is StepKind.BACKWARD and not s.writes:
            # its kernel calls would form nothing (every output None): the blocked update forms the weight's
            assert all(isinstance(i, KCall) and all(v is None for k, v in i.kwargs.items() if k.startswith("d"))
                       for i in items), s.label
            body.append("# (no gradient to form here: its weight's is formed by the blocked update below)")
            continue
        if s.kind is StepKind.UPDATE and s.blocked:
            views.append(_blocked_views(tg, s, r, lay))
            body += items
            continue
        scratch_call = _scratch_call(items)
        planned = lay.scratch.get(s.index, {})
        chunk = lay.chunks.get(s.index)
        loop = chunk is not None and bool(planned) and scratch_call is not None and scratch_call.chunks == "loop"
        scratch_ident = None
        if scratch_call is not None and planned:
            scratch_ident = f"v.{r.names(('scratch', s.index), f'scratch_{s.index}')}"
            fn, args, kwargs = scratch_call.scratch
            where = {k: (lay.plan.offsets[b], lay.sizes[b]) for k, b in sorted(planned.items())}
            if chunk is not None and scratch_call.chunks == "kernel":
                kwargs = dict(kwargs, chunk=chunk)
            code = r.code_rows if loop else r.code
            call_args = ", ".join([code(a) for a in args] + [f"{k}={code(v)}" for k, v in kwargs.items()])
            if fn == "loss_scratch":
                views.append(f"{scratch_ident} = self._scratch({{'loss': L.scratch_shape({call_args})}}, "
                             f"{r.code(where)})['loss']")
            elif loop:
                scratch_ident = f"v.{r.names(('chunks', s.index), f'chunks_{s.index}')}"
                views.append(f"rows = min(batch, {chunk})")
                views.append(f"{scratch_ident} = self._chunked(batch, rows, "
                             f"self._scratch(K.{fn}({call_args}), {r.code(where)}))")
            else:
                views.append(f"{scratch_ident} = self._scratch(K.{fn}({call_args}), {r.code(where)})")
        for item in items:
            if isinstance(item, KCall) and loop and item is scratch_call:
                body.append(f"for part, scratch in {scratch_ident}:")
                body.append("    " + r.call(item, "scratch", part=True))
            elif isinstance(item, KCall):
                line = r.call(item, scratch_ident if item is scratch_call else None)
                if s.kind is StepKind.LOSS:
                    line = f"loss = {line}"
                body.append(line)
            else:
                body.append(item)
    g = tg.graph
    dims = sorted(g.bounds)
    specs = g.param_specs()
    return inference._env().get_template("train_module.py.j2").render(
        name=name, source=source, version=VERSION, batch=batch, loss=tg.loss,
        inputs_repr=py_literal({i.name: inference._api_shape(i.shape) for i in g.inputs}),
        integer_inputs_repr=py_literal(integer_limits(g)),
        outputs_repr=py_literal({o.name: inference._api_shape(g.shape_of(o.value)) for o in g.outputs}),
        dims=dims, dim_idents=[r.dim(d) for d in dims],
        dims_repr=py_literal({d: g.bounds[d] for d in dims}),
        min_dims_repr=py_literal(dict(min_dims(g))),
        params=[(py_literal(k), py_literal(tuple(sp.shape)), py_literal(tuple(sp.init))) for k, sp in specs.items()],
        trainable=py_literal(tuple(tg.trainable)), counters=py_literal(tuple(tg.counters)),
        row_blocked=py_literal(tuple(s.param for s in tg.steps if s.blocked)),
        arena_bytes=lay.plan.arena_bytes, figures=lay.figures(), layout=_layout_rows(lay),
        input_idents=list(r.inputs.values()),
        views=views + r.extra_views, body=body, steps=len(tg.steps),
    )


def _layout_rows(lay) -> list[str]:
    rows = [f"{'offset':>10}  {'bytes':>10}  {'steps':<10}  buffer"]
    for b in sorted(lay.buffers, key=lambda b: (lay.plan.offsets[b.name], b.first, b.name)):
        rows.append(f"{lay.plan.offsets[b.name]:>10}  {b.size:>10}  {f'{b.first}..{b.last}':<10}  {b.name}")
    return rows
