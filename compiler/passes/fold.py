"""Fold an inference batchnorm into the convolution or dense layer before it.

y = gamma * (W x + b - mean) / sqrt(var + eps) + beta is a layer with weight
W * s and bias (b - mean) * s + beta, s = gamma / sqrt(var + eps). The node
records the fold (`Node.norm`); the effective tensors are computed when the
weights are loaded (`runtime.weights.effective`), so the state_dict keeps
PyTorch's keys and `load_weights` works on the optimised plan.
"""

from __future__ import annotations

from dataclasses import replace

from ..ir import FoldedNorm, Graph, Node
from .rewrite import bypass, single_reader

FOLDABLE = frozenset({"conv1d", "conv2d", "depthwise_conv2d", "dense"})


def fold_batchnorm(graph: Graph) -> Graph:
    reader = single_reader(graph)
    by_label = {n.label: n for n in graph.nodes}
    removed: dict[str, str] = {}
    replaced: dict[str, Node] = {}
    for n in graph.nodes:
        if n.op.name != "batchnorm":
            continue
        src = by_label.get(n.inputs[0])
        if src is None or src.op.name not in FOLDABLE or reader.get(src.label) != n.label:
            continue
        if src.activation is not None or src.norm is not None:
            continue
        if src.op.name == "dense" and len(src.shape) != 1:
            continue   # batchnorm normalises axis 0, dense acts on the last
        replaced[src.label] = replace(src, norm=FoldedNorm(n.label, n.attrs["eps"], n.params))
        removed[n.label] = src.label
    return bypass(graph, removed, replaced) if removed else graph
