"""Normalisation: batchnorm (over axis 0, the channels) and layernorm (over the last axis).

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order. Both keep the shape;
     resolving records `channels` or `features`; the parameters are `weight`
     and `bias` (and batchnorm's buffers `running_mean`, `running_var`).
"""

from __future__ import annotations

from ..ir import ParamSpec
from .base import ArgSpec, Attrs, Kind, OpSpec, _known, _same


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


ENTRIES: tuple[OpSpec, ...] = (
    OpSpec("batchnorm", (ArgSpec("eps", Kind.FLOAT, 1e-5),), _same, resolve=_batchnorm_resolve,
           params=_batchnorm_params),
    OpSpec("layernorm", (ArgSpec("eps", Kind.FLOAT, 1e-5),), _same, resolve=_layernorm_resolve,
           params=_layernorm_params),
)
