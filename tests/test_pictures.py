"""Pictures (INTERFACES.md section 10): `nnc graph` and the memory-plan SVG.

The DOT text is golden for two samples and checked by structure (every step
and every edge present, blocks as clusters); rendered SVG parses as XML and
holds every step; the plan SVG's bars are the plan's buffers at their
offsets. Rendering tests skip when Graphviz's `dot` is not installed.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET

import pytest

from conftest import SAMPLES
from nnc.compiler.bridges_cli import main as bridges_main
from nnc.compiler.build import compile_plan
from nnc.compiler.extras import MissingExtra
from nnc.compiler.frontend import check
from nnc.compiler.pictures import PictureError, graph_dot, plan_svg, render, write_plan_svg

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("sample", ["lenet", "wavenet"])
def test_graph_dot_is_golden(sample, golden):
    golden.check(f"pictures/{sample}.dot", graph_dot(SAMPLES / f"{sample}.nn"))


@pytest.mark.parametrize("sample", ["lenet", "wavenet", "concat", "resnet18"])
def test_graph_dot_has_every_step_and_edge(sample):
    text = graph_dot(SAMPLES / f"{sample}.nn")
    graph = check(SAMPLES / f"{sample}.nn").graph
    declared = set(re.findall(r'^\s*"([^"]+)" \[', text, re.M))
    edges = set(re.findall(r'^\s*"([^"]+)" -> "([^"]+)";', text, re.M))
    assert {n.label for n in graph.nodes} | {i.name for i in graph.inputs} <= declared
    for n in graph.nodes:
        for v in n.inputs:
            assert (v, n.label) in edges
    assert len(edges) == sum(len(n.inputs) for n in graph.nodes) + len(graph.outputs)
    assert graph_dot(SAMPLES / f"{sample}.nn") == text          # deterministic


def test_blocks_are_clusters_titled_with_their_block():
    text = graph_dot(SAMPLES / "resnet18.nn")
    titles = re.findall(r'subgraph "cluster_([^"]+)"', text)
    assert titles == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    assert 'label="layer2.0: down"' in text and 'label="layer1.0: basic"' in text
    # a step inside a cluster shows its whole label (the summary's), a merge its label too
    assert '"layer2.0.downsample.0" [fillcolor="#cfe2ff", label="layer2.0.downsample.0\\nconv2d\\n[128, 28, 28]"]' in text
    assert re.search(r'"layer1\.0\.add_0" \[shape=ellipse, [^\]]*label="layer1\.0\.add_0\\nadd\\n', text)
    labels = re.findall(r'label="([^"\\]+)\\n', text)
    assert {n.label for n in check(SAMPLES / "resnet18.nn").graph.nodes} <= set(labels)


@needs_dot
def test_rendered_svg_parses_and_holds_every_step(tmp_path):
    out = render(graph_dot(SAMPLES / "concat.nn"), tmp_path / "concat.svg")
    root = ET.parse(out).getroot()
    titles = [t.text for g in root.iter(f"{SVG}g") for t in g.findall(f"{SVG}title")
              if g.get("class") == "node"]
    graph = check(SAMPLES / "concat.nn").graph
    assert {n.label for n in graph.nodes} <= set(titles)
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) == sum(len(n.inputs) for n in graph.nodes) + len(graph.outputs)


@needs_dot
def test_graph_command_writes_svg_png_and_dot(tmp_path):
    for suffix in ("svg", "png", "dot"):
        out = tmp_path / f"lenet.{suffix}"
        assert bridges_main(["graph", str(SAMPLES / "lenet.nn"), "-o", str(out)]) == 0
        assert out.stat().st_size > 100
    assert (tmp_path / "lenet.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_dot_says_what_to_install_but_dot_files_still_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MissingExtra, match="graphviz"):
        render(graph_dot(SAMPLES / "mlp.nn"), tmp_path / "mlp.svg")
    assert bridges_main(["graph", str(SAMPLES / "mlp.nn"), "-o", str(tmp_path / "mlp.svg")]) == 1
    assert "apt install graphviz" in capsys.readouterr().err
    assert render(graph_dot(SAMPLES / "mlp.nn"), tmp_path / "mlp.dot").read_text().startswith("digraph")


def _bars(svg_text: str) -> dict[str, dict[str, int]]:
    root = ET.fromstring(svg_text)
    bars = {}
    for rect in root.iter(f"{SVG}rect"):
        if rect.get("data-buffer") is not None:
            bars[rect.get("data-buffer")] = {k: int(rect.get(f"data-{k}")) for k in ("offset", "size", "first", "last")}
    return bars


@pytest.mark.parametrize("sample,batch", [("lenet", 1), ("wavenet", 2), ("concat", 3)])
def test_plan_svg_bars_are_the_plans_buffers_at_their_offsets(sample, batch):
    dims = {"T": 64} if sample == "wavenet" else None
    plan = compile_plan(SAMPLES / f"{sample}.nn", batch=batch, dims=dims, render=False)
    text = plan_svg(plan.graph, plan.layout, batch)
    bars = _bars(text)
    assert set(bars) == {b.name for b in plan.layout.buffers}
    for b in plan.layout.buffers:
        assert bars[b.name] == {"offset": batch * plan.layout.plan.offsets[b.name], "size": batch * b.size,
                                "first": b.first, "last": b.last}
    for n in plan.graph.nodes:                      # every step labels its column
        assert f">{n.label}</text>" in text
    assert plan_svg(plan.graph, plan.layout, batch) == text


@pytest.mark.parametrize("name", ["plan.png", "plan.dot", "plan"])
def test_the_plan_picture_is_refused_under_another_suffix_before_writing(name, tmp_path):
    """SVG text was written into `p.png` without a word."""
    with pytest.raises(PictureError, match="name it FILE.svg"):
        write_plan_svg(SAMPLES / "lenet.nn", tmp_path / name)
    assert not (tmp_path / name).exists()


def test_write_plan_svg_draws_the_chosen_targets_plan(tmp_path):
    out = write_plan_svg(SAMPLES / "resnet18.nn", tmp_path / "plan.svg", batch=1, dims=None, target="c")
    bars = _bars(out.read_text())
    plan = compile_plan(SAMPLES / "resnet18.nn", target="c", render=False)
    assert {k: v["offset"] for k, v in bars.items()} == dict(plan.layout.plan.offsets)
    assert max(b["offset"] + b["size"] for b in bars.values()) <= plan.layout.plan.arena_bytes
