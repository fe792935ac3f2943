"""Drop the ops that do nothing at inference: `dropout` and `identity`."""

from __future__ import annotations

from ..ir import Graph

NOOPS = frozenset({"dropout", "identity"})


def drop_noops(graph: Graph) -> Graph:
    inputs = {i.name for i in graph.inputs}
    outputs = {o.value for o in graph.outputs}
    removed: dict[str, str] = {}
    for n in graph.nodes:
        # an output that would become a model input keeps its copy
        if n.op.name in NOOPS and not (n.label in outputs and n.inputs[0] in inputs):
            removed[n.label] = n.inputs[0]
    from .rewrite import bypass
    return bypass(graph, removed) if removed else graph
