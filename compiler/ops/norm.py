"""Normalisation: batchnorm (over axis 0, the channels) and layernorm (over the last axis).

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order. Both keep the shape;
     resolving records `channels` or `features`; the parameters are `weight`
     and `bias` (and batchnorm's buffers `running_mean`, `running_var`).
"""

from __future__ import annotations

from ..ir import ParamSpec
from .base import ArgSpec, Attrs, Backward, Kind, OpSpec, Saved, _known, _same
from .base import Units


def _batchnorm_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    return {**a, "channels": _known(x[0], "channel count (axis 0)", "batchnorm", x)}


def _batchnorm_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    c = a["channels"]
    return (ParamSpec("weight", (c,), True, ("const", 1.0)),
            ParamSpec("bias", (c,), True, ("const", 0.0)),
            ParamSpec("running_mean", (c,), False, ("const", 0.0)),
            ParamSpec("running_var", (c,), False, ("const", 1.0)))


def _layernorm_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    return {**a, "features": _known(x[-1], "size of the last axis", "layernorm", x)}


def _layernorm_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    f = a["features"]
    return (ParamSpec("weight", (f,), True, ("const", 1.0)), ParamSpec("bias", (f,), True, ("const", 0.0)))


# training mode: batch statistics; the forward saves the mean and 1/sqrt(var + eps) per channel
# (batchnorm, over the batch and every axis after the channels) or per position (layernorm)
_BATCHNORM_BACKWARD = Backward(saves=lambda a, ins, out: {"mean": Saved((a["channels"],), batched=False),
                                                         "rstd": Saved((a["channels"],), batched=False)})
_LAYERNORM_BACKWARD = Backward(saves=lambda a, ins, out: {"mean": Saved(out[:-1] or (1,)),
                                                         "rstd": Saved(out[:-1] or (1,))})


def _batchnorm_units(u) -> None:
    # per-channel parameters follow the channels' units (new entries: 1, 0, 0, 1)
    x = u.inputs[0]
    u.output(*x)
    for name in ("weight", "bias", "running_mean", "running_var"):
        u.param(name, u.channel(x[0]))


def _layernorm_units(u) -> None:
    # per-feature parameters follow the last axis; growing it changes the statistics (a warning)
    x = u.inputs[0]
    u.output(*x)
    u.normalises(len(x) - 1)
    for name in ("weight", "bias"):
        u.param(name, u.channel(x[-1]))


ENTRIES: tuple[OpSpec, ...] = (
    OpSpec("batchnorm", (ArgSpec("eps", Kind.FLOAT, 1e-5),), _same, resolve=_batchnorm_resolve,
           params=_batchnorm_params, backward=_BATCHNORM_BACKWARD,
           units=Units(_batchnorm_units, varies=("channels",))),
    OpSpec("layernorm", (ArgSpec("eps", Kind.FLOAT, 1e-5),), _same, resolve=_layernorm_resolve,
           params=_layernorm_params, backward=_LAYERNORM_BACKWARD,
           units=Units(_layernorm_units, varies=("features",))),
)
