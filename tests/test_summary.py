"""`nnc summary`: golden tables and JSON for every sample, the JSON contract of
INTERFACES.md section 5, symbolic sizes, and the command line's behaviour."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nnc.compiler.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted(p.stem for p in (ROOT / "samples").glob("*.nn"))


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", SAMPLES)
def test_summary_table_golden(name, golden, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = run_cli(capsys, "summary", f"samples/{name}.nn")
    assert code == 0 and err == ""
    golden.check(f"summaries/{name}.txt", out)


@pytest.mark.parametrize("name", SAMPLES)
def test_summary_json_golden(name, golden, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, _ = run_cli(capsys, "summary", f"samples/{name}.nn", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {"model", "inputs", "outputs", "params", "macs", "layers", "memory"}
    golden.check(f"summaries/{name}.json", out)


def test_lenet_json_matches_the_spec_example(capsys):
    code, out, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"), "--json")
    data = json.loads(out)
    assert data["model"] == "lenet"
    assert data["inputs"] == {"x": [1, 28, 28]}
    assert data["outputs"] == {"out": [10]}
    assert data["params"] == 61706 and data["macs"] == 416520
    assert data["layers"][0] == {"label": "conv2d_0", "op": "conv2d", "shape": [6, 28, 28],
                                 "params": 156, "macs": 117600}
    memory = data["memory"]
    assert memory["batch"] == 1 and memory["weights_bytes"] == 246824
    for key in ("arena_bytes", "naive_bytes", "lower_bound_bytes"):
        assert isinstance(memory[key], int) and memory[key] > 0
    assert memory["lower_bound_bytes"] <= memory["arena_bytes"]


@pytest.mark.parametrize("name,params", [("resnet18", 11_689_512), ("mobilenetv2", 3_504_872),
                                         ("lenet", 61_706)])
def test_published_parameter_counts(name, params, capsys):
    _, out, _ = run_cli(capsys, "summary", str(ROOT / "samples" / f"{name}.nn"), "--json")
    assert json.loads(out)["params"] == params


def test_batch_scales_the_memory_figures(capsys):
    _, one, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"), "--json")
    _, eight, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"), "--json", "--batch", "8")
    m1, m8 = json.loads(one)["memory"], json.loads(eight)["memory"]
    assert m8["batch"] == 8 and m8["arena_bytes"] == 8 * m1["arena_bytes"]
    assert m8["weights_bytes"] == m1["weights_bytes"]


SIGNAL = "model sig(x: [1, T]) {\n    conv1d(4, 5) -> relu\n    conv1d(8, 3, stride=2, padding=1)\n}\n"


def test_symbolic_shapes_print_as_expressions_until_bounded(tmp_path, capsys):
    path = tmp_path / "sig.nn"
    path.write_text(SIGNAL)
    _, out, _ = run_cli(capsys, "summary", str(path), "--json")
    data = json.loads(out)
    assert data["layers"][0]["shape"] == [4, "T - 4"]
    assert data["layers"][2]["shape"] == [8, "(T - 1) // 2 - 1"]   # (T - 4 - 1) // 2 + 1
    assert data["memory"]["arena_bytes"] is None
    _, out, _ = run_cli(capsys, "summary", str(path), "--json", "--dim", "T=100")
    data = json.loads(out)
    assert data["layers"][0]["shape"] == [4, 96]
    assert data["layers"][2]["shape"] == [8, 48]
    assert isinstance(data["memory"]["arena_bytes"], int)


def test_plan_timeline_is_drawn(capsys):
    code, out, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"), "--plan")
    assert code == 0 and "conv2d_0" in out.split("memory per call")[1]


def test_bad_command_line_exits_2():
    proc = subprocess.run([sys.executable, "-m", "nnc", "summary", "x.nn", "--dim", "T"], capture_output=True)
    assert proc.returncode == 2
    proc = subprocess.run([sys.executable, "-m", "nnc", "frobnicate"], capture_output=True)
    assert proc.returncode == 2


def test_check_prints_nothing_on_success():
    proc = subprocess.run([sys.executable, "-m", "nnc", "check", str(ROOT / "samples" / "resnet18.nn")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
