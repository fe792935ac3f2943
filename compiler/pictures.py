"""Pictures of a model: its graph (Graphviz) and its memory plan (SVG).

In:  a model (a `.nn` path or model text); for the plan, a compiled plan's
     graph and layout (`build.compile_plan`).
Out: `graph_dot(model) -> str`, the DOT text of the model's graph;
     `render(dot_text, path)` writes it as `.dot`, or as `.svg`/`.png` through
     Graphviz's `dot` command (`MissingExtra` when it is not installed);
     `plan_svg(graph, layout, batch) -> str`, the memory plan as plain SVG
     written here (no dependency); `write_plan_svg(model, path, ...)` compiles
     and writes it. Both texts are deterministic: the same model gives the
     same bytes.

The graph: a box per step (its label, op and output shape), an oval per
model input and output, merges (`add`, `sub`, `mul`, `concat`) as ellipses
with an edge from each input, and each block instance as a cluster titled
`label: block` (a step belongs to the instance its span lies in: the block's
definition). Every box shows the step's whole label, as the summary does.

The plan: x is the schedule (one column per step, labelled with the step's
label), y the arena offset; every buffer is a bar from the step that first
writes it to the step that last reads it, at its planned offset and as tall
as its size, labelled with the step that owns it. Scratch buffers (`#`) and
streaming state (`@`) have their own colours. Each bar carries `data-buffer`,
`data-offset`, `data-size`, `data-first` and `data-last` (bytes at the
picture's batch) so tools and tests can read the plan back.
"""

from __future__ import annotations

import subprocess
from html import escape
from pathlib import Path
from typing import Any, Mapping

from .diagnostics import Span, UserError
from .dims import format_shape
from .extras import require_dot

MERGES = frozenset({"add", "sub", "mul", "concat"})

_FAMILY_COLOURS = {
    "conv": "#cfe2ff", "dense": "#d1e7dd", "norm": "#fff3cd", "pool": "#ffe5d0", "recurrent": "#e2d9f3",
    "act": "#f1f3f5", "shape": "#f8f9fa", "merge": "#f8d7da",
}


PICTURE_SUFFIXES = (".dot", ".gv", ".svg", ".png")     # what `render` writes


class PictureError(UserError, OSError):
    """A picture cannot be written (an unknown suffix, `dot` failed, an unwritable path)."""


def _family(op: str) -> str:
    if op in MERGES:
        return "merge"
    if op.startswith(("conv", "depthwise")):
        return "conv"
    if op == "dense":
        return "dense"
    if op in ("batchnorm", "layernorm"):
        return "norm"
    if "pool" in op:
        return "pool"
    if op in ("gru", "lstm", "rnn"):
        return "recurrent"
    if op in ("flatten", "reshape", "transpose", "upsample", "dropout", "identity"):
        return "shape"
    return "act"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _instances(graph, file) -> dict[str, tuple[str, str]]:
    """node label -> (block instance label, block name), for steps made inside a block."""
    from . import ast as A
    block_elements: dict[Span, tuple[int, str, Span]] = {}
    for b in file.blocks:
        for st in b.body:
            chains = []
            if isinstance(st, A.Assign):
                chains = [st.chain]
            elif isinstance(st, A.Return):
                chains = list(st.values)
            elif isinstance(st, A.Chain):
                chains = [st]
            for chain in chains:
                for e in chain.elements:
                    parts = len(e.label.parts) if e.label is not None else 1
                    block_elements[e.span] = (parts, b.name, b.span)
    result = {}
    for n in graph.nodes:
        hit = block_elements.get(n.span)
        if hit is None:
            continue
        parts, block, _ = hit
        segments = n.label.split(".")
        if len(segments) > parts:
            result[n.label] = (".".join(segments[:-parts]), block)
    return result


def graph_dot(model: Any, dims: Mapping[str, int] | None = None) -> str:
    """The DOT text of `model`'s graph (a `.nn` path or model text)."""
    from .frontend import check, read_source
    from .parse import parse
    checked = check(model, dims)
    graph = checked.graph
    path, text = read_source(model)
    instances = _instances(graph, parse(text, path))
    lines = [f"digraph {_quote(graph.name)} {{",
             '    graph [rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.3, '
             f'label={_quote(graph.name)}, labelloc=t];',
             '    node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, margin="0.12,0.04"];',
             '    edge [arrowsize=0.6, color="#555555"];']
    for i in graph.inputs:
        text = i.name + "\n" + ("int" if i.dtype == "int32" else "") + format_shape(i.shape)    # as in the summary
        lines.append(f"    {_quote(i.name)} [shape=oval, fillcolor=\"#ffffff\", label={_quote(text)}];")

    def box(n) -> str:
        op = n.op.name
        text = "\n".join([n.label, op, format_shape(n.shape)])      # the label the summary and errors use
        colour = _FAMILY_COLOURS[_family(op)]
        if op in MERGES:
            return f"{_quote(n.label)} [shape=ellipse, fillcolor=\"{colour}\", label={_quote(text)}];"
        return f"{_quote(n.label)} [fillcolor=\"{colour}\", label={_quote(text)}];"

    # clusters, nested by label prefix, in order of first appearance
    order: list[str] = []
    members: dict[str, list] = {}
    for n in graph.nodes:
        inst = instances.get(n.label, ("", ""))[0]
        if inst not in members:
            members[inst] = []
            order.append(inst)
        members[inst].append(n)
    block_of = {inst: block for inst, block in instances.values()}

    def parent(inst: str) -> str:
        best = ""
        for other in order:
            if other and other != inst and inst.startswith(other + ".") and len(other) > len(best):
                best = other
        return best

    children: dict[str, list[str]] = {}
    for inst in order:
        if inst:
            children.setdefault(parent(inst), []).append(inst)

    def emit(inst: str, depth: int) -> None:
        pad = "    " * depth
        if inst:
            lines.append(f"{pad}subgraph {_quote('cluster_' + inst)} {{")
            lines.append(f"{pad}    label={_quote(f'{inst}: {block_of[inst]}')}; style=\"rounded,dashed\"; "
                         "color=\"#888888\"; fontsize=10;")
        inner = pad + ("    " if inst else "")
        for n in members.get(inst, []):
            lines.append(inner + box(n))
        for child in children.get(inst, []):
            emit(child, depth + 1 if inst else depth)
        if inst:
            lines.append(f"{pad}}}")

    emit("", 1)
    for n in graph.nodes:
        for v in n.inputs:
            lines.append(f"    {_quote(v)} -> {_quote(n.label)};")
    for o in graph.outputs:
        name = f"output:{o.name}"
        text = o.name + "\n" + format_shape(graph.shape_of(o.value))
        lines.append(f"    {_quote(name)} [shape=oval, fillcolor=\"#ffffff\", label={_quote(text)}];")
        lines.append(f"    {_quote(o.value)} -> {_quote(name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, path: str | Path) -> Path:
    """Write DOT text as `.dot`, or render it to `.svg` / `.png` with `dot`."""
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in PICTURE_SUFFIXES:
        raise PictureError(f"cannot write `{out}`: choose a .svg, .png or .dot file")
    try:
        if suffix in (".dot", ".gv"):
            out.write_text(dot_text)
            return out
        dot = require_dot()
        done = subprocess.run([dot, f"-T{suffix[1:]}", "-o", str(out)], input=dot_text.encode(),
                              capture_output=True, timeout=300)
    except OSError as e:
        raise PictureError(f"cannot write `{out}`: {e.strerror or e}") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise PictureError(f"`dot` could not draw `{out}`: {message[0] if message else 'no message'}")
    return out


# ---------------------------------------------------------------------- the memory plan

_PLAN_COLOURS = {"value": "#8fb8de", "scratch": "#f2c572", "state": "#b39ddb"}


def _kind(buffer: str) -> str:
    return "scratch" if "#" in buffer else "state" if "@" in buffer else "value"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} B"


def plan_svg(graph, layout, batch: int = 1, title: str | None = None) -> str:
    """The memory plan of `layout` (for `graph`, at `batch`) as SVG text."""
    steps = max([len(graph.nodes)] + [b.last + 1 for b in layout.buffers])
    arena = max(batch * layout.plan.arena_bytes, 1)
    sx = max(8.0, min(40.0, 1100.0 / max(steps, 1)))
    plot_h = 420.0
    sy = plot_h / arena
    left, top = 80.0, 50.0
    label_room = 170.0
    width = left + steps * sx + 30.0
    height = top + plot_h + label_room
    title = title or f"{graph.name}: memory plan at batch {batch}"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" font-size="10">',
           f'<title>{escape(title)}</title>',
           f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
           f'<text x="{left:.1f}" y="20" font-size="13">{escape(title)}</text>',
           f'<text x="{left:.1f}" y="36" fill="#555555">arena {_bytes(arena)} ({arena:,} B); '
           f'{len(layout.buffers)} buffers; x: steps, y: offset in the arena</text>']
    # legend
    lx = width - 250
    for i, (kind, colour) in enumerate(sorted(_PLAN_COLOURS.items())):
        x = lx + i * 80
        out.append(f'<rect x="{x:.1f}" y="10" width="10" height="10" fill="{colour}" stroke="#333333" '
                   f'stroke-width="0.5"/><text x="{x + 14:.1f}" y="19">{kind}</text>')
    # axes and grid
    out.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{steps * sx:.1f}" height="{plot_h:.1f}" '
               'fill="#fafafa" stroke="#999999" stroke-width="0.5"/>')
    for k in range(5):
        value = arena * k // 4
        y = top + value * sy
        out.append(f'<line x1="{left - 4:.1f}" y1="{y:.1f}" x2="{left + steps * sx:.1f}" y2="{y:.1f}" '
                   'stroke="#dddddd" stroke-width="0.5"/>')
        out.append(f'<text x="{left - 6:.1f}" y="{y + 3:.1f}" text-anchor="end">{_bytes(value)}</text>')
    names = [n.label for n in graph.nodes] + ["(outputs)"] * (steps - len(graph.nodes))
    for i, name in enumerate(names[:steps]):
        x = left + (i + 0.5) * sx
        y = top + plot_h + 8
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" transform="rotate(60 {x:.1f} {y:.1f})" '
                   f'font-size="{min(10.0, sx * 0.9):.1f}">{escape(name)}</text>')
    # bars
    offsets = layout.plan.offsets
    for b in sorted(layout.buffers, key=lambda b: (b.first, offsets[b.name], b.name)):
        off, size = batch * offsets[b.name], batch * b.size
        x = left + b.first * sx
        w = (b.last - b.first + 1) * sx
        y = top + off * sy
        h = max(size * sy, 0.8)
        kind = _kind(b.name)
        out.append(f'<g class="buffer"><title>{escape(b.name)}: {_bytes(size)} at offset {off:,}, '
                   f'steps {b.first} to {b.last}</title>'
                   f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" fill="{_PLAN_COLOURS[kind]}" '
                   f'stroke="#333333" stroke-width="0.5" data-buffer="{escape(b.name)}" data-offset="{off}" '
                   f'data-size="{size}" data-first="{b.first}" data-last="{b.last}" data-kind="{kind}"/>')
        label = b.name.split("#")[0].split("@")[0]
        if h >= 9 and w >= 6 * min(len(label), 4):
            chars = int(w / 5.5)
            shown = label if len(label) <= chars else label[:max(chars - 1, 1)] + "…"
            out.append(f'<text x="{x + 2:.2f}" y="{y + min(h / 2 + 3, h - 1):.2f}" font-size="8">'
                       f'{escape(shown)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_plan_svg(model: Any, path: str | Path, batch: int = 1, dims: Mapping[str, int] | None = None,
                   target: str = "numpy") -> Path:
    """Compile `model` for `target` and write its memory plan as SVG at `path`
    (a `.svg` file: the plan is drawn here, not by Graphviz)."""
    from .build import compile_plan
    if Path(path).suffix.lower() != ".svg":
        raise PictureError(f"cannot write `{Path(path)}`: the memory plan is an SVG picture, name it FILE.svg")
    plan = compile_plan(model, target=target, batch=batch, dims=dims, render=False)
    text = plan_svg(plan.graph, plan.layout, batch)
    out = Path(path)
    try:
        out.write_text(text)
    except OSError as e:
        raise PictureError(f"cannot write `{out}`: {e.strerror or e}") from None
    return out
