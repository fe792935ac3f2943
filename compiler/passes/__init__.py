"""Optimisation passes on the IR, each a plain function `Graph -> Graph` that
keeps the model's function exactly.

In:  a checked `ir.Graph` from `lower.py`.
Out: the same model with fewer, fused nodes:
     - `simplify.drop_noops`: `dropout` and `identity` disappear;
     - `fold.fold_batchnorm`: an inference batchnorm after a convolution or a
       dense layer becomes part of that layer's weights (applied when weights
       are loaded, so `state_dict()` keeps PyTorch's keys);
     - `fuse.fuse_activations`: an activation after a layer runs inside the
       layer's kernel.
`flatten` and `reshape` become views in the memory layout (`memory.py`), not here.
"""

from __future__ import annotations

from ..ir import Graph, verify
from .fold import fold_batchnorm
from .fuse import fuse_activations
from .simplify import drop_noops

PIPELINE = (drop_noops, fold_batchnorm, fuse_activations)


def optimize(graph: Graph) -> Graph:
    for p in PIPELINE:
        graph = p(graph)
        verify(graph)
    return graph
