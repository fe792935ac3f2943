"""Fuse an elementwise activation into the op that produces its input, so the
activation runs inside that op's kernel on data still in cache."""

from __future__ import annotations

from dataclasses import replace

from ..ir import Activation, Graph, Node
from .rewrite import bypass, single_reader

# producers whose kernels apply a fused activation to their output
PRODUCERS = frozenset({"conv1d", "conv2d", "depthwise_conv2d", "dense", "add"})
FUSABLE = frozenset({"relu", "relu6", "leaky_relu", "sigmoid", "tanh", "silu", "gelu", "hardsigmoid",
                     "hardswish", "elu", "selu", "softplus", "neg", "abs", "exp", "log", "sqrt", "square"})


def fuse_activations(graph: Graph) -> Graph:
    reader = single_reader(graph)
    by_label = {n.label: n for n in graph.nodes}
    removed: dict[str, str] = {}
    replaced: dict[str, Node] = {}
    for n in graph.nodes:
        if n.op.name not in FUSABLE:
            continue
        src = replaced.get(n.inputs[0]) or by_label.get(n.inputs[0])
        if src is None or src.op.name not in PRODUCERS or src.activation is not None:
            continue
        if reader.get(src.label) != n.label:
            continue
        replaced[src.label] = replace(src, activation=Activation(n.op.name, dict(n.attrs)))
        removed[n.label] = src.label
    return bypass(graph, removed, replaced) if removed else graph
