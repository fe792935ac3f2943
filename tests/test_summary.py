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


@pytest.mark.parametrize("name", ["lenet", "resnet18", "transformer"])
@pytest.mark.parametrize("target", ["numpy", "c"])
def test_naive_bytes_counts_every_listed_layer_whatever_the_optimiser(name, target, capsys):
    """INTERFACES.md 5: every intermediate value with a buffer of its own. A
    relu fused into its conv and a batchnorm folded into it are values of the
    model all the same, so the figure is the sum of the `layers` rows, at -O0
    as with the passes."""
    path = str(ROOT / "samples" / f"{name}.nn")
    _, out, _ = run_cli(capsys, "summary", path, "--json", "-t", target, "--batch", "2")
    data = json.loads(out)
    listed = 0
    for layer in data["layers"]:
        n = 4
        for d in layer["shape"]:
            n *= d
        listed += n
    assert data["memory"]["naive_bytes"] == 2 * listed
    _, plain, _ = run_cli(capsys, "summary", path, "--json", "-t", target, "--batch", "2", "-O0")
    assert json.loads(plain)["memory"]["naive_bytes"] == 2 * listed


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


# ---------------------------------------------------------------- issue 14 item 4: what torchinfo and Keras show

def summary_json(capsys, *args: str) -> dict:
    code, out, err = run_cli(capsys, "summary", *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("name", SAMPLES)
def test_trainable_and_non_trainable_counts_equal_the_torch_twins(name, capsys):
    pytest.importorskip("torch")
    from torch_twins import INTEGER_TWINS, TWINS, V2_TWINS
    twin = TWINS[name][0]() if name in TWINS else {**INTEGER_TWINS, **V2_TWINS}[name]()
    trainable = sum(p.numel() for p in twin.parameters())
    statistics = sum(b.numel() for key, b in twin.state_dict(keep_vars=True).items()
                     if key.endswith((".running_mean", ".running_var")))
    data = summary_json(capsys, str(ROOT / "samples" / f"{name}.nn"))
    assert data["trainable_params"] == data["params"] == trainable
    assert data["non_trainable_params"] == statistics


def test_table_counts_trainable_and_non_trainable_parameters(capsys):
    _, out, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "resnet18.nn"))
    assert "trainable params      11,689,512" in out
    assert "non-trainable params       9,600  (batchnorm running statistics)" in out
    assert "total params          11,699,112" in out


def test_table_starts_with_an_input_row(capsys):
    _, out, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"))
    lines = out.splitlines()
    rows = lines[lines.index("-" * len(lines[2])) + 1:]
    assert rows[0].split() == ["x", "input", "[1,", "28,", "28]", "0", "0"]
    assert rows[1].split()[0] == "conv2d_0"


def test_merges_and_branches_show_what_they_are_connected_to(capsys):
    _, out, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "concat.nn"))
    header = next(line for line in out.splitlines() if line.startswith("label"))
    assert header.endswith("connected to")
    row = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert row["mix1.concat_0"].endswith("mix1.relu_0, mix1.relu_2")
    assert row["mix1.branch3.0"].endswith("relu_0")       # a branch that does not read the row above
    assert row["mix1.relu_1"].endswith("0")                # reads the row above: no entry
    data = summary_json(capsys, str(ROOT / "samples" / "concat.nn"))
    assert data["connected_to"]["mix1.concat_0"] == ["mix1.relu_0", "mix1.relu_2"]
    assert data["connected_to"]["stem"] == ["x"]


def test_a_chain_has_no_connected_to_column(capsys):
    _, out, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"))
    assert "connected to" not in out


def test_sizes_in_mb_follow_the_chosen_target(capsys):
    lenet = str(ROOT / "samples" / "lenet.nn")
    for target in ("numpy", "c"):
        data = summary_json(capsys, lenet, "-t", target, "--batch", "2")
        sizes, memory = data["sizes"], data["memory"]
        assert sizes["target"] == target and sizes["batch"] == 2
        assert sizes["input_bytes"] == 2 * 28 * 28 * 4
        assert sizes["activations_bytes"] == memory["arena_bytes"]
        assert sizes["params_bytes"] == memory["weights_bytes"]
        assert sizes["total_bytes"] == sizes["input_bytes"] + sizes["activations_bytes"] + sizes["params_bytes"]
        _, out, _ = run_cli(capsys, "summary", lenet, "-t", target, "--batch", "2")
        assert f"sizes in MB (batch 2, {target} plan):" in out
        assert f"  activations  {memory['arena_bytes'] / 1e6:>10,.2f}" in out


def test_sizes_that_need_a_bound_are_null(tmp_path, capsys):
    path = tmp_path / "sig.nn"
    path.write_text(SIGNAL)
    sizes = summary_json(capsys, str(path))["sizes"]
    assert sizes["input_bytes"] is None and sizes["total_bytes"] is None
    assert sizes["params_bytes"] == (4 * 5 + 4 + 8 * 4 * 3 + 8) * 4


def test_train_adds_the_training_plans_memory(capsys):
    from nnc.compiler.train import train_memory_report
    lenet = str(ROOT / "samples" / "lenet.nn")
    data = summary_json(capsys, lenet, "--train", "--batch", "4", "--optimizer", "adam")
    assert data["train_memory"] == train_memory_report(lenet, batch=4, optimizer="adam")
    sgd = summary_json(capsys, lenet, "--train", "--batch", "4")["train_memory"]
    assert data["train_memory"]["optimizer_bytes"] == 2 * sgd["optimizer_bytes"] == 2 * 61706 * 4
    assert "train_memory" not in summary_json(capsys, lenet)
    _, out, _ = run_cli(capsys, "summary", lenet, "--train", "--batch", "4")
    section = out.split("training memory per step (batch 4, numpy training plan):")[1]
    assert f"saved        {sgd['saved_bytes'] / 1024:,.1f} KiB ({sgd['saved_bytes']:,} B)" in section
    assert "optimizer" in section


def test_train_without_a_bound_reports_the_persistent_state_only(tmp_path, capsys):
    path = tmp_path / "sig.nn"
    path.write_text(SIGNAL)
    t = summary_json(capsys, str(path), "--train")["train_memory"]
    assert t["arena_bytes"] is None and t["saved_bytes"] is None
    assert t["weights_bytes"] == t["optimizer_bytes"] == (4 * 5 + 4 + 8 * 4 * 3 + 8) * 4


def test_plan_has_a_legend_naming_the_steps(capsys):
    code, out, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"), "--plan")
    assert code == 0
    legend = " ".join(out.split("legend:")[1].split())       # the legend wraps at 100 columns
    assert "`#` marks the steps where it is alive" in legend
    assert "0 conv2d_0" in legend and "7 fc3" in legend       # the plan's steps: relus fused
    assert "8 (outputs, until the caller reads them)" in legend
    assert "`label#name` is its scratch" in legend


def test_train_plan_draws_the_training_timeline(capsys):
    code, out, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"), "--train", "--plan",
                           "--batch", "2")
    assert code == 0
    training = " ".join(out.split("training memory plan (numpy, batch 2):")[1].split())
    assert "d:fc3.weight" in training                 # parameter gradients are buffers of the plan
    assert "steps: forward 0..11, loss 12, backward and updates 13..34" in training


def test_plan_svg_writes_the_chosen_targets_plan(tmp_path, capsys):
    import xml.etree.ElementTree as ET
    from nnc.compiler.build import compile_plan
    out_svg = tmp_path / "plan.svg"
    code, out, err = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"), "-t", "c",
                             "--plan-svg", str(out_svg))
    assert code == 0, err
    assert out.rstrip().endswith(f"wrote {out_svg}")
    bars = [e for e in ET.parse(out_svg).iter() if e.get("data-buffer")]
    plan = compile_plan(ROOT / "samples" / "lenet.nn", target="c", render=False)
    assert {(b.get("data-buffer"), int(b.get("data-offset"))) for b in bars} == \
        {(b.name, plan.layout.plan.offsets[b.name]) for b in plan.layout.buffers}
    code, out, _ = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"), "--json",
                           "--plan-svg", str(tmp_path / "again.svg"))
    assert code == 0 and json.loads(out)["model"] == "lenet" and (tmp_path / "again.svg").is_file()


def test_plan_svg_needs_a_bound_and_a_writable_path(tmp_path, capsys):
    path = tmp_path / "sig.nn"
    path.write_text(SIGNAL)
    code, out, err = run_cli(capsys, "summary", str(path), "--plan-svg", str(tmp_path / "p.svg"))
    assert code == 1 and out == "" and "E0207" in err and "--dim T=N" in err
    code, out, err = run_cli(capsys, "summary", str(ROOT / "samples" / "lenet.nn"),
                             "--plan-svg", str(tmp_path / "missing" / "p.svg"))
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1


def test_version_command():
    proc = subprocess.run([sys.executable, "-m", "nnc", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "nnc 0.1.0\n"


@pytest.mark.parametrize("signature, dims", [("x: [16, 8]", []), ("x: [T=16, 8]", []), ("x: [T, 8]", ["--dim", "T=16"])])
def test_attention_macs_count_the_square_of_a_bounded_length(signature, dims, capsys, tmp_path):
    """4*T*E^2 + 2*T^2*E (choices.md): a bounded T counted T^2 as T (4352 for 8192)."""
    (tmp_path / "a.nn").write_text(f"model m({signature}) {{\n    a: attention(2)\n}}\n")
    code, out, _ = run_cli(capsys, "summary", str(tmp_path / "a.nn"), "--json", *dims)
    assert code == 0 and json.loads(out)["macs"] == 4 * 16 * 8 * 8 + 2 * 16 * 16 * 8


def test_weights_bytes_count_every_tensor_of_the_state_dict_at_every_level(capsys, tmp_path):
    """choices.md: every tensor the model stores, batchnorm's running statistics included; the
    optimised graph (batchnorm folded into the convolution) once counted only the conv weights."""
    src = tmp_path / "b.nn"
    src.write_text("model m(x: [4, 8, 8]) {\n    conv2d(8, 3, bias=false) -> batchnorm -> relu\n}\n")
    state = 8 * 4 * 9 + 4 * 8          # conv weight; weight, bias, running mean and variance
    for level in ([], ["-O0"]):
        code, out, _ = run_cli(capsys, "summary", str(src), "--json", *level)
        assert code == 0 and json.loads(out)["memory"]["weights_bytes"] == 4 * state
