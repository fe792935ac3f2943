"""Shared graph surgery for the passes: remove a node and let its readers read
another value instead."""

from __future__ import annotations

from dataclasses import replace

from ..ir import Graph, Node


def single_reader(graph: Graph) -> dict[str, str | None]:
    """value -> the label of its only reader, or None when it has none or several
    or is a model output."""
    outputs = {o.value for o in graph.outputs}
    result: dict[str, str | None] = {}
    for v, readers in graph.users().items():
        result[v] = readers[0] if len(readers) == 1 and v not in outputs else None
    return result


def bypass(graph: Graph, removed: dict[str, str], replaced: dict[str, Node] | None = None) -> Graph:
    """Drop the nodes in `removed` (label -> the value that stands for it from now
    on) and swap in `replaced` nodes by label."""
    replaced = replaced or {}

    def resolve(v: str) -> str:
        while v in removed:
            v = removed[v]
        return v

    nodes = []
    for n in graph.nodes:
        if n.label in removed:
            continue
        n = replaced.get(n.label, n)
        ins = tuple(resolve(v) for v in n.inputs)
        nodes.append(n if ins == n.inputs else replace(n, inputs=ins))
    outputs = tuple(replace(o, value=resolve(o.value)) for o in graph.outputs)
    return replace(graph, nodes=tuple(nodes), outputs=outputs)
