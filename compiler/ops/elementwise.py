"""Elementwise and per-position ops: prelu, the activations, softmax,
log_softmax, dropout and identity.

In:  the shared machinery of `base.py`.
Out: `ENTRIES` (prelu, the activations, softmax, log_softmax) and
     `PASSTHROUGH` (dropout, identity: the input itself at inference), their
     catalog entries in catalog order. All keep the shape. The activations are
     marked `elementwise` (the fusion pass may fold them into their producer);
     prelu's parameter is `weight` [C] (or [1] when `shared`); softmax's
     resolved `axis` is non-negative and leaves out the batch.
"""

from __future__ import annotations

from ..dims import format_shape
from ..ir import ParamSpec
from .base import ArgSpec, Attrs, Backward, Kind, OpSpec, Saved, ShapeError, _known, _same
from .base import Units


def _prelu_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    c = 1 if a["shared"] else _known(x[0], "channel count (axis 0)", "prelu", x)
    return {**a, "channels": c}


def _prelu_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    return (ParamSpec("weight", (a["channels"],), True, ("const", 0.25)),)


def _axis_resolve(op: str):
    def resolve(a: Attrs, ins) -> Attrs:
        (x,) = ins
        axis = a["axis"]
        if not -len(x) <= axis < len(x):
            raise ShapeError("E0306", f"{op} axis {axis} is out of range for {format_shape(x)}",
                             help=f"use an axis from {-len(x)} to {len(x) - 1} (the batch axis is not counted)",
                             arg="axis")
        return {**a, "axis": axis % len(x)}
    return resolve


# The activations whose derivative PyTorch computes from the output alone (so the training
# forward may run them in place); the others read their input.
FROM_OUTPUT = frozenset({"relu", "relu6", "sigmoid", "tanh", "neg", "exp", "sqrt"})


def _keep_units(u) -> None:
    u.output(*u.inputs[0])


def _prelu_units(u) -> None:
    x = u.inputs[0]
    u.output(*x)
    u.param("weight", None if u.attrs["shared"] else u.channel(x[0]))


def _softmax_units(u) -> None:
    # softmax over a grown axis changes every output there (a warning)
    u.output(*u.inputs[0])
    u.normalises(u.attrs["axis"])


_KEEP = Units(_keep_units)


# The activations whose derivative is piecewise constant: their backward needs one byte per
# element (where the input was), not the float tensor, unless another backward reads that anyway.
MASKED = frozenset({"relu", "relu6", "leaky_relu", "clamp"})


def _act(name: str, *args: ArgSpec) -> OpSpec:
    from_output = name in FROM_OUTPUT
    return OpSpec(name, args, _same, elementwise=True,
                  backward=Backward(needs_inputs=not from_output, needs_output=from_output, mask=name in MASKED),
                  units=_KEEP)


def _clamp_resolve(a: Attrs, ins) -> Attrs:
    if a["min"] is None and a["max"] is None:
        raise ShapeError("E0302", "clamp needs at least one bound: `min`, `max` or both",
                         help="write `clamp(min=0)`, `clamp(max=1)` or `clamp(-1, 1)`")
    # in the argument order whatever the keyword order (`clamp(max=1)`): kernels take (min, max)
    return {"min": a["min"], "max": a["max"]}


def _clamp() -> OpSpec:
    spec = _act("clamp", ArgSpec("min", Kind.FLOAT_OR_NONE, None), ArgSpec("max", Kind.FLOAT_OR_NONE, None))
    return OpSpec(spec.name, spec.args, _same, resolve=_clamp_resolve, elementwise=True, backward=spec.backward,
                  units=_KEEP)


ENTRIES: tuple[OpSpec, ...] = (
    OpSpec("prelu", (ArgSpec("shared", Kind.BOOL, False),), _same, resolve=_prelu_resolve, params=_prelu_params,
           backward=Backward(), units=Units(_prelu_units, varies=("channels",))),
    *(_act(n) for n in ("relu", "relu6", "sigmoid", "tanh", "gelu", "silu", "selu", "softplus",
                        "hardsigmoid", "hardswish")),
    _act("leaky_relu", ArgSpec("slope", Kind.FLOAT, 0.01)),
    _act("elu", ArgSpec("alpha", Kind.FLOAT, 1.0)),
    # section 9's elementwise math (fusable like the activations); clamp needs a bound
    *(_act(n) for n in ("neg", "abs", "exp", "log", "sqrt", "square")),
    _clamp(),
    OpSpec("softmax", (ArgSpec("axis", Kind.INT, -1),), _same, resolve=_axis_resolve("softmax"),
           backward=Backward(needs_inputs=False, needs_output=True), units=Units(_softmax_units)),
    OpSpec("log_softmax", (ArgSpec("axis", Kind.INT, -1),), _same, resolve=_axis_resolve("log_softmax"),
           backward=Backward(needs_inputs=False, needs_output=True), units=Units(_softmax_units)),
)

PASSTHROUGH: tuple[OpSpec, ...] = (
    # training mode: the mask (0 or 1/(1-p)) drawn from the trainer's generator is saved
    OpSpec("dropout", (ArgSpec("p", Kind.PROB, 0.5),), _same,
           backward=Backward(saves=lambda a, ins, out: {"mask": Saved(out)}, needs_inputs=False), units=_KEEP),
    OpSpec("identity", (), _same, backward=Backward(needs_inputs=False, passes_gradient=True), units=_KEEP),
)
