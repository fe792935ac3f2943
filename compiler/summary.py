"""Model summaries: the table of `nnc summary` and its `--json` object.

In:  a checked `ir.Graph` and a `memory.MemoryReport` for it.
Out: `summary_dict` (INTERFACES.md section 5) and `summary_table` (text).

Sizes that depend on a named dimension are evaluated where every name in
them has a bound (`--dim T=4096` or `x: [1, T=4096]`) and printed as
expressions (`"T - 4"`) otherwise.
"""

from __future__ import annotations

from typing import Any

from .dims import Dim, format_shape, to_json, try_evaluate
from .ir import Graph


def _dim(d: Dim, bounds) -> int | str:
    v = try_evaluate(d, bounds)
    return v if v is not None else to_json(d)


def _shape(shape, bounds) -> list[int | str]:
    return [_dim(d, bounds) for d in shape]


def summary_dict(graph: Graph, memory: dict[str, Any]) -> dict[str, Any]:
    b = graph.bounds
    total_macs: Dim = 0
    layers = []
    for n in graph.nodes:
        total_macs = total_macs + n.macs
        layers.append({"label": n.label, "op": n.op.name, "shape": _shape(n.shape, b),
                       "params": n.params_count, "macs": _dim(n.macs, b)})
    return {
        "model": graph.name,
        "inputs": {i.name: _shape(i.shape, b) for i in graph.inputs},
        "outputs": {o.name: _shape(graph.shape_of(o.value), b) for o in graph.outputs},
        "params": graph.params_count,
        "macs": _dim(total_macs, b),
        "layers": layers,
        "memory": memory,
    }


def dumps(data: dict[str, Any]) -> str:
    """Indented JSON with each shape (a list of scalars) kept on one line."""
    import json
    import re
    text = json.dumps(data, indent=2)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(p.strip() for p in m.group(1).split(",")) + "]" if m.group(1) else "[]",
                  text)


def _num(v: int | str | None) -> str:
    if v is None:
        return "-"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _bytes(v: int | None) -> str:
    if v is None:
        return "-"
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if v >= size:
            return f"{v / size:,.1f} {unit} ({v:,} B)"
    return f"{v:,} B"


def summary_table(data: dict[str, Any]) -> str:
    header = ("label", "op", "output", "params", "MACs")
    rows = [(l["label"], l["op"], _fmt_shape(l["shape"]), _num(l["params"]), _num(l["macs"]))
            for l in data["layers"]]
    total = ("total", "", "", _num(data["params"]), _num(data["macs"]))
    widths = [max(len(r[i]) for r in [header, total, *rows]) for i in range(5)]

    def line(r) -> str:
        left = "  ".join(r[i].ljust(widths[i]) for i in range(3))
        right = "  ".join(r[i].rjust(widths[i]) for i in range(3, 5))
        return f"{left}  {right}".rstrip()

    rule = "-" * len(line(header))
    ins = ", ".join(f"{k}: {_fmt_shape(v)}" for k, v in data["inputs"].items())
    outs = ", ".join(f"{k}: {_fmt_shape(v)}" for k, v in data["outputs"].items())
    out = [f"model {data['model']}({ins}) -> {outs}", "", line(header), rule]
    out += [line(r) for r in rows]
    out += [rule, line(total)]
    m = data["memory"]
    out += ["", f"memory per call (batch {m['batch']}):"]
    labels = [("arena", "arena_bytes"), ("naive", "naive_bytes"), ("lower bound", "lower_bound_bytes"),
              ("weights", "weights_bytes")]
    for text, key in labels:
        if key in m:
            out.append(f"  {text:<12} {_bytes(m[key])}")
    if any(m.get(k) is None for _, k in labels if k in m):
        out.append("  (sizes marked - depend on a named dimension: give it a bound with --dim NAME=N)")
    return "\n".join(out)


def _fmt_shape(shape: list) -> str:
    return format_shape(shape)
