"""Model summaries: the table of `nnc summary` and its `--json` object.

In:  a checked `ir.Graph` (before the inference passes: one row per step
     of the model as written), the `memory` object of a plan for it, the
     plan's target and batch, and optionally the `train_memory` object of
     its training plan (`train.train_memory_report`).
Out: `summary_dict` (INTERFACES.md section 5, plus what section 10 adds),
     `summary_table` (text), `plan_legend` and `train_plan_legend` (the key
     under a `--plan` timeline).

The JSON keeps section 5's fields as they are and adds:
- `"trainable_params"` (= `"params"`, PyTorch's `parameters()`) and
  `"non_trainable_params"` (stored statistics: batchnorm's running mean and
  variance, as Keras counts them; `num_batches_tracked` is a counter, not
  counted);
- `"connected_to"`: each step's label -> the values it reads (input names or
  step labels), for every step;
- `"sizes"`: the target and the bytes of the inputs, the activations (the
  plan's arena), the parameters (what the plan stores) and their total, at
  the batch;
- `"train_memory"` with `--train` (TRAINING.md section 1, "Memory").

The table shows the same: an input row per model input, a "connected to"
column (only in models that are not a chain: for merges and every step that
does not read the row above it), trainable / non-trainable / total
parameter counts, sizes in MB (10^6 bytes, as torchinfo prints them), the
memory plan and, with `--train`, the training plan's memory.

Sizes that depend on a named dimension are evaluated where every name in
them has a bound (`--dim T=4096` or `x: [1, T=4096]`) and printed as
expressions (`"T - 4"`) otherwise; byte figures without a bound are `null`
in the JSON and `-` in the table.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Sequence

from .dims import Dim, format_shape, to_json, try_evaluate
from .ir import Graph

FLOAT_BYTES = 4
MB = 10 ** 6


def _dim(d: Dim, bounds) -> int | str:
    v = try_evaluate(d, bounds)
    return v if v is not None else to_json(d)


def _shape(shape, bounds) -> list[int | str]:
    return [_dim(d, bounds) for d in shape]


def param_counts(graph: Graph) -> tuple[int, int]:
    """(trainable, non-trainable) entries of the model's state: learnable
    tensors, and stored statistics (batchnorm's running mean and variance)."""
    trainable = non_trainable = 0
    for spec in graph.param_specs().values():
        if spec.learnable:
            trainable += math.prod(spec.shape)
        else:
            non_trainable += math.prod(spec.shape)
    return trainable, non_trainable


def _input_bytes(graph: Graph, batch: int) -> int | None:
    total = 0
    for i in graph.inputs:
        sizes = [try_evaluate(d, graph.bounds) for d in i.shape]
        if any(s is None for s in sizes):
            return None
        total += math.prod(sizes) * FLOAT_BYTES
    return batch * total


def _sizes(graph: Graph, memory: dict[str, Any], target: str) -> dict[str, Any]:
    batch = memory["batch"]
    parts = {"input_bytes": _input_bytes(graph, batch), "activations_bytes": memory.get("arena_bytes"),
             "params_bytes": memory.get("weights_bytes")}
    total = None if any(v is None for v in parts.values()) else sum(parts.values())
    return {"target": target, "batch": batch, **parts, "total_bytes": total}


def summary_dict(graph: Graph, memory: dict[str, Any], *, target: str = "numpy",
                 train_memory: dict[str, Any] | None = None) -> dict[str, Any]:
    b = graph.bounds
    total_macs: Dim = 0
    layers = []
    for n in graph.nodes:
        total_macs = total_macs + n.macs
        layers.append({"label": n.label, "op": n.op.name, "shape": _shape(n.shape, b),
                       "params": n.params_count, "macs": _dim(n.macs, b)})
    trainable, non_trainable = param_counts(graph)
    data = {
        "model": graph.name,
        "inputs": {i.name: _shape(i.shape, b) for i in graph.inputs},
        "outputs": {o.name: _shape(graph.shape_of(o.value), b) for o in graph.outputs},
        "params": graph.params_count,
        "trainable_params": trainable,
        "non_trainable_params": non_trainable,
        "macs": _dim(total_macs, b),
        "layers": layers,
        **({"integer_inputs": ints} if (ints := [i.name for i in graph.inputs if i.dtype == "int32"]) else {}),
        "connected_to": {n.label: list(n.inputs) for n in graph.nodes},
        "memory": memory,
        "sizes": _sizes(graph, memory, target),
    }
    if train_memory is not None:
        data["train_memory"] = train_memory
    return data


def dumps(data: dict[str, Any]) -> str:
    """Indented JSON with each shape (a list of scalars) kept on one line."""
    import json
    import re
    text = json.dumps(data, indent=2)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(p.strip() for p in m.group(1).split(",")) + "]" if m.group(1) else "[]",
                  text)


# ------------------------------------------------------------------ the table

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


def _mb(v: int | None) -> str:
    return "-" if v is None else f"{v / MB:,.2f}"


def _connections(data: dict[str, Any]) -> list[str] | None:
    """The "connected to" cell of each row (inputs first, then layers), or
    None for a chain (every step reads the row above it)."""
    links = data.get("connected_to", {})
    cells = [""] * len(data["inputs"])
    previous = list(data["inputs"])[-1] if data["inputs"] else None
    shown = False
    for layer in data["layers"]:
        reads = links.get(layer["label"], [])
        if reads and reads != [previous]:
            cells.append(", ".join(reads))
            shown = True
        else:
            cells.append("")
        previous = layer["label"]
    return cells if shown else None


def _in_shape(name: str, shape, integer: set[str]) -> str:
    """An input's shape as the model declares it: `int[16]` for an integer input."""
    return ("int" if name in integer else "") + _fmt_shape(shape)


def summary_table(data: dict[str, Any]) -> str:
    header = ["label", "op", "output", "params", "MACs"]
    ints = set(data.get("integer_inputs", ()))
    rows = [[name, "input", _in_shape(name, shape, ints), "0", "0"] for name, shape in data["inputs"].items()]
    rows += [[l["label"], l["op"], _fmt_shape(l["shape"]), _num(l["params"]), _num(l["macs"])]
             for l in data["layers"]]
    total = ["total", "", "", _num(data["params"]), _num(data["macs"])]
    links = _connections(data)
    if links is not None:
        header.append("connected to")
        rows = [r + [c] for r, c in zip(rows, links)]
        total.append("")
    widths = [max(len(r[i]) for r in [header, total, *rows]) for i in range(len(header))]

    def line(r) -> str:
        left = "  ".join(r[i].ljust(widths[i]) for i in range(3))
        right = "  ".join(r[i].rjust(widths[i]) for i in range(3, 5))
        rest = "".join(f"  {r[i]}" for i in range(5, len(r)))
        return f"{left}  {right}{rest}".rstrip()

    rule = "-" * max(len(line(header)), *(len(line(r)) for r in rows))
    ins = ", ".join(f"{k}: {_in_shape(k, v, ints)}" for k, v in data["inputs"].items())
    outs = ", ".join(f"{k}: {_fmt_shape(v)}" for k, v in data["outputs"].items())
    out = [f"model {data['model']}({ins}) -> {outs}", "", line(header), rule]
    out += [line(r) for r in rows]
    out += [rule, line(total)]
    out += ["", *_param_lines(data)]
    m = data["memory"]
    unbounded = False
    if "sizes" in data:
        s = data["sizes"]
        out += ["", f"sizes in MB (batch {s['batch']}, {s['target']} plan):"]
        for text, key in (("input", "input_bytes"), ("activations", "activations_bytes"),
                          ("parameters", "params_bytes"), ("total", "total_bytes")):
            out.append(f"  {text:<12} {_mb(s[key]):>10}")
            unbounded |= s[key] is None
    out += ["", f"memory per call (batch {m['batch']}):"]
    out += _byte_lines(m, (("arena", "arena_bytes"), ("naive", "naive_bytes"),
                           ("lower bound", "lower_bound_bytes"), ("weights", "weights_bytes")))
    unbounded |= any(m.get(k) is None for k in ("arena_bytes", "naive_bytes", "lower_bound_bytes") if k in m)
    t = data.get("train_memory")
    if t is not None:
        out += ["", f"training memory per step (batch {t['batch']}, numpy training plan):"]
        out += _byte_lines(t, (("arena", "arena_bytes"), ("lower bound", "lower_bound_bytes"),
                               ("saved", "saved_bytes"), ("gradients", "gradient_bytes"),
                               ("weights", "weights_bytes"), ("optimizer", "optimizer_bytes")))
        unbounded |= any(t.get(k) is None for k in ("arena_bytes", "saved_bytes"))
    if unbounded:
        out.append("  (sizes marked - depend on a named dimension: give it a bound with --dim NAME=N)")
    return "\n".join(out)


def _param_lines(data: dict[str, Any]) -> list[str]:
    trainable = data.get("trainable_params", data["params"])
    fixed = data.get("non_trainable_params", 0)
    rows = [("trainable params", trainable), ("non-trainable params", fixed), ("total params", trainable + fixed)]
    width = max(len(_num(v)) for _, v in rows)
    lines = [f"{text:<21} {_num(v):>{width}}" for text, v in rows]
    if fixed:
        lines[1] += "  (batchnorm running statistics)"
    return lines


def _byte_lines(figures: dict[str, Any], labels) -> list[str]:
    return [f"  {text:<12} {_bytes(figures[key])}" for text, key in labels if key in figures]


def _fmt_shape(shape: list) -> str:
    return format_shape(shape)


# ------------------------------------------------------------------ --plan legends

_TIMELINE_KEY = ("each row is a buffer, ordered by its offset; `#` marks the steps where it is alive, `.` where "
                 "its bytes are free for others.")


def plan_legend(step_labels: Sequence[str], batch: int) -> str:
    """The key under the inference plan's timeline: what the rows, the
    bytes and the names mean, and which step each column is."""
    per = "for one example" + (f" (batch {batch} multiplies every offset and size)" if batch != 1 else "")
    steps = ", ".join(f"{i} {label}".replace(" ", "\N{NO-BREAK SPACE}") for i, label in enumerate(step_labels))
    return "\n".join([
        "legend:",
        *_wrap(_TIMELINE_KEY),
        *_wrap(f"[start, end) are byte offsets in the arena {per}."),
        *_wrap("a buffer is named by the step that writes it: `label` holds its output, `label#name` is its "
               "scratch, `label@name` its streaming state."),
        *_wrap(f"steps of the plan (a fused step, such as a convolution with its activation, is one "
               f"column): {steps}", indent="    "),
    ])


def train_plan_legend(step_labels: Sequence[str], batch: int) -> str:
    """The key under the training plan's timeline (`--train --plan`)."""
    kinds: list[tuple[str, int, int]] = []       # (kind, first step, last step)
    for i, label in enumerate(step_labels):
        kind = "backward and updates" if label.split(" ")[0] in ("backward", "update", "recompute") \
            else label.split(" ")[0]
        if kinds and kinds[-1][0] == kind:
            kinds[-1] = (kind, kinds[-1][1], i)
        else:
            kinds.append((kind, i, i))
    spans = ", ".join(f"{k} {a}" if a == b else f"{k} {a}..{b}" for k, a, b in kinds)
    return "\n".join([
        "legend:",
        *_wrap(_TIMELINE_KEY),
        *_wrap(f"[start, end) are byte offsets in the training arena at batch {batch}."),
        *_wrap("names: `label` is a step's output (kept for backward while its bar lasts), `label:name` "
               "something the step saves for backward, `d:name` the gradient of a value or parameter, "
               "`d:a~b` the part of `a`'s gradient that its reader `b` adds, `r:label` a value recomputed "
               "in backward for the steps that read it, `forward label#name` and `backward label#name` a "
               "step's scratch (a fused step's label joins its layers with `+`), `loss#name` the loss's, "
               "`update key#grad` and `update key#update` the gradient tile and optimizer scratch of a weight "
               "updated block by block of rows."),
        *_wrap(f"steps: {spans}"),
    ])


def _wrap(text: str, indent: str = "  ") -> list[str]:
    """Lines of at most 100 characters; a no-break space keeps a step's
    number with its label."""
    lines = textwrap.wrap(text, width=100, initial_indent="  ", subsequent_indent=indent,
                          break_on_hyphens=False, break_long_words=False)
    return [line.replace("\N{NO-BREAK SPACE}", " ") for line in lines]
