"""Normalisation: batchnorm (over axis 0, the channels) and layernorm (over the last axis);
`SECTION9`: groupnorm and instancenorm (per example, over channel groups / each channel).

In:  the shared machinery of `base.py`.
Out: `ENTRIES`, their catalog entries in catalog order. Both keep the shape;
     resolving records `channels` or `features`; the parameters are `weight`
     and `bias` (and batchnorm's buffers `running_mean`, `running_var`).
"""

from __future__ import annotations

from ..ir import ParamSpec
from ..dims import format_shape
from .base import ArgSpec, Attrs, Backward, Kind, OpSpec, Saved, ShapeError, _known, _same
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
# (batchnorm, over the batch and every axis after the channels) or per position (layernorm).
# A batchnorm's output is recomputed from its input and statistics where a later backward reads
# it, and its training step takes in a masked activation and then a max pool after it (conv ->
# batchnorm -> relu -> maxpool keeps the conv's output, the statistics and one byte per pooled
# output; in-place activated batchnorm, Rota Bulo et al. 2018)
def _masked_activation(op) -> bool:
    return op.elementwise and op.backward is not None and op.backward.mask


def _max_pool(op) -> bool:
    return op.name in ("maxpool1d", "maxpool2d")


_BATCHNORM_BACKWARD = Backward(saves=lambda a, ins, out: {"mean": Saved((a["channels"],), batched=False),
                                                         "rstd": Saved((a["channels"],), batched=False)},
                               recompute=True, absorbs=(_masked_activation, _max_pool))
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
    OpSpec("batchnorm", (ArgSpec("eps", Kind.FLOAT, 1e-5), ArgSpec("momentum", Kind.PROB, 0.1)), _same,
           resolve=_batchnorm_resolve,
           params=_batchnorm_params, backward=_BATCHNORM_BACKWARD,
           units=Units(_batchnorm_units, varies=("channels",))),
    OpSpec("layernorm", (ArgSpec("eps", Kind.FLOAT, 1e-5),), _same, resolve=_layernorm_resolve,
           params=_layernorm_params, backward=_LAYERNORM_BACKWARD,
           units=Units(_layernorm_units, varies=("features",))),
)


# ------------------------------------------------------------------ section 9: groupnorm, instancenorm
# groupnorm(groups, eps) as nn.GroupNorm (affine): statistics per example over each group of
# C/groups channels and every trailing axis; instancenorm(eps, affine=false) as nn.InstanceNorm1d/2d
# (no running statistics): per example and channel over the trailing axes, i.e. groupnorm with one
# channel per group. Both resolve `channels` and `groups`; their training forward saves the mean
# and 1/sqrt(var + eps) per example and group.

def _groupnorm_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins          # [C] too, as nn.GroupNorm takes (N, C): a group's channels are its values
    c = _known(x[0], "channel count (axis 0)", "groupnorm", x)
    g = a["groups"]
    if c % g:
        common = [n for n in range(1, c + 1) if c % n == 0]
        raise ShapeError("E0202", f"groups={g} does not divide the {c} channels",
                         help=f"choose groups among {', '.join(map(str, common[-6:]))}", arg="groups")
    return {**a, "channels": c}


def _instancenorm_resolve(a: Attrs, ins) -> Attrs:
    (x,) = ins
    if len(x) < 2:
        raise ShapeError("E0203", f"instancenorm expects [C, T] or [C, H, W] per example, got {format_shape(x)}",
                         help="there is nothing to normalise over: use layernorm")
    c = _known(x[0], "channel count (axis 0)", "instancenorm", x)
    return {**a, "channels": c, "groups": c}


def _affine_params(a: Attrs, ins) -> tuple[ParamSpec, ...]:
    if not a.get("affine", True):
        return ()
    c = a["channels"]
    return (ParamSpec("weight", (c,), True, ("const", 1.0)), ParamSpec("bias", (c,), True, ("const", 0.0)))


_GROUP_BACKWARD = Backward(saves=lambda a, ins, out: {"mean": Saved((a["groups"],)), "rstd": Saved((a["groups"],))})


def _groupnorm_units(u) -> None:
    # per-channel parameters follow the channels; a group's statistics mix its channels (a warning)
    x = u.inputs[0]
    u.output(*x)
    if u.attrs["groups"] != u.attrs["channels"]:
        u.normalises(0)
    for name in ("weight", "bias"):
        u.param(name, u.channel(x[0]))


SECTION9: tuple[OpSpec, ...] = (
    OpSpec("groupnorm", (ArgSpec("groups", Kind.POS_INT), ArgSpec("eps", Kind.FLOAT, 1e-5)), _same,
           resolve=_groupnorm_resolve, params=_affine_params, backward=_GROUP_BACKWARD,
           units=Units(_groupnorm_units, varies=("channels",))),
    OpSpec("instancenorm", (ArgSpec("eps", Kind.FLOAT, 1e-5), ArgSpec("affine", Kind.BOOL, False)), _same,
           resolve=_instancenorm_resolve, params=_affine_params, backward=_GROUP_BACKWARD,
           units=Units(_groupnorm_units, varies=("channels", "groups"))),
)
