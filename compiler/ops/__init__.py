"""The op catalog: every op of the language, one module per family.

In:  nothing; `lower.py` looks ops up here by name.
Out: `CATALOG`, name (and alias) -> `OpSpec`, and `ACTIVATIONS`, the names of
     the activations the fusion pass may fold into their producer. An entry
     states the op's arguments (names, kinds, defaults), its role (a chain step
     or a merge source), how it resolves its arguments against the input
     shapes, its shape rule (with PyTorch's output-size formulas), its
     parameters in PyTorch's `state_dict` layout with their default
     initialisation, and its MAC count; `backward` and `units` are slots for
     the training and growth stages.

    module          ops
    --------------  ---------------------------------------------------------
    base.py         none: OpSpec, ArgSpec, Kind, coerce, ShapeError, helpers
    dense.py        dense (linear)
    conv.py         conv1d, conv2d, depthwise_conv2d, conv_transpose1d/2d
    pool.py         maxpool1d/2d, avgpool1d/2d, global_avgpool, global_maxpool, adaptive_avgpool1d/2d
    norm.py         batchnorm, layernorm, groupnorm, instancenorm
    recurrent.py    gru, lstm
    elementwise.py  prelu, activations, softmax, log_softmax, dropout, identity
    shape.py        flatten, reshape, transpose, upsample, pad
    reduce.py       glu, slice, select, mean, sum, max
    merge.py        add, sub, mul, concat
    attention.py    embedding, positional, attention; sources matmul, div

A new op goes into its family's `ENTRIES`. Rules raise `ShapeError`;
`lower.py` turns it into a located diagnostic. Shapes exclude the batch
dimension and may be symbolic (`dims.Sym`).
"""

from __future__ import annotations

from . import attention, conv, dense, elementwise, merge, norm, pool, recurrent, reduce, shape
from .base import (AXIS_NAMES, MAX_SIZE, REQUIRED, WORDS, ArgError, ArgSpec, Attrs, Kind, OpSpec, Role,
                   ShapeError, coerce, coerce_arg, describe)

__all__ = ["ACTIVATIONS", "AXIS_NAMES", "CATALOG", "MAX_SIZE", "REQUIRED", "ArgError", "ArgSpec", "Attrs",
           "Kind", "OpSpec", "Role", "ShapeError", "WORDS", "coerce", "coerce_arg", "describe"]

# The catalog's order is the language's: "did you mean" breaks ties by it.
_ENTRIES: list[OpSpec] = [
    *dense.ENTRIES,
    *conv.ENTRIES,
    *conv.TRANSPOSED,
    *pool.ENTRIES,
    *pool.SECTION9,
    *norm.ENTRIES,
    *norm.SECTION9,
    *recurrent.ENTRIES,
    *elementwise.ENTRIES,
    *shape.ENTRIES,
    shape.PAD,
    *reduce.ENTRIES,
    *elementwise.PASSTHROUGH,
    *merge.ENTRIES,
    *attention.ENTRIES,
    *attention.SOURCES,
]

CATALOG: dict[str, OpSpec] = {}
for _entry in _ENTRIES:
    CATALOG[_entry.name] = _entry
    for _alias in _entry.aliases:
        CATALOG[_alias] = _entry

# Activations that the fusion pass may fold into the op producing their input.
ACTIVATIONS = frozenset(e.name for e in _ENTRIES if e.elementwise)
