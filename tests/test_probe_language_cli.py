"""A probe of the core language (LANGUAGE.md sections 1-8) and the CLI
(INTERFACES.md sections 2, 3, 5, 6) as an acceptance-test writer reads them:
every listed error with its code, line and column, the diagnostic layout to
the space, exit codes 0/1/2 with stdout and stderr kept apart, the summary's
JSON keys, and hostile inputs (BOM, CRLF, tabs, non-UTF-8, unicode, huge
numbers and dims, deep nesting, odd paths) that must never give a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler.cli import main
from nnc.compiler.frontend import check

from test_parse import BASIC, LENET      # the spec's LeNet and ResNet block, as in the parser tests


def cli(capsys, *args) -> tuple[int, str, str]:
    """`nnc ARGS` in this process; argparse's exit becomes the exit code."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


def write(folder: Path, text: str | bytes, name: str = "m.nn") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def diagnostics(text: str) -> list:
    with pytest.raises(nnc.CompileError) as info:
        check(text)
    return info.value.diagnostics


def one(text: str):
    (d,) = diagnostics(text)
    return d


def model(*lines: str, inputs: str = "x: [4]") -> str:
    return f"model m({inputs}) {{\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


# ---------------------------------------------------------------- section 1: the first example

def test_the_first_example_checks_silently_and_its_summary_json_has_the_spec_numbers(tmp_path, capsys):
    path = write(tmp_path, LENET, "lenet.nn")
    assert cli(capsys, "check", path) == (0, "", "")
    code, out, err = cli(capsys, "summary", path, "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert {"model", "inputs", "outputs", "params", "macs", "layers", "memory"} <= set(data)
    assert data["model"] == "lenet"
    assert data["inputs"] == {"x": [1, 28, 28]} and data["outputs"] == {"out": [10]}
    assert (data["params"], data["macs"]) == (61706, 416520)
    assert data["layers"][0] == {"label": "conv2d_0", "op": "conv2d", "shape": [6, 28, 28],
                                 "params": 156, "macs": 117600}
    assert [layer["label"] for layer in data["layers"] if layer["op"] == "dense"] == ["fc1", "fc2", "fc3"]
    memory = data["memory"]
    assert memory["batch"] == 1 and memory["weights_bytes"] == 246824
    for key in ("arena_bytes", "naive_bytes", "lower_bound_bytes"):
        assert isinstance(memory[key], int) and memory[key] > 0
    assert memory["lower_bound_bytes"] <= memory["naive_bytes"]


def test_summary_table_names_labels_ops_shapes_params_and_macs(tmp_path, capsys):
    code, out, err = cli(capsys, "summary", write(tmp_path, LENET, "lenet.nn"))
    assert code == 0 and err == ""
    row = next(line for line in out.splitlines() if line.startswith("fc1 "))
    assert row.split()[:2] == ["fc1", "dense"] and "[120]" in row and "48,120" in row and "48,000" in row
    assert "61,706" in out and "416,520" in out


# ---------------------------------------------------------------- section 6: the diagnostic layout

def test_the_rendering_is_the_spec_example_to_the_space(tmp_path):
    lines = ["model m(x: [1, 28, 28]) {", "    conv2d(6, 5, padding=same) -> relu", "    avgpool2d(2)",
             "    conv2d(16, 5) -> relu", "    avgpool2d(2)", "", "    dense(120)", "}"]
    write(tmp_path, "\n".join(lines) + "\n", "models/bad.nn")
    proc = subprocess.run([sys.executable, "-m", "nnc", "check", "models/bad.nn"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines()[:4] == [
        "models/bad.nn:7:5: error[E0203]: dense expects a vector per example, got [16, 5, 5]",
        "   7 |     dense(120)",
        "     |     ^^^^^^^^^^",
        "   = help: add `flatten` before it",
    ]


def test_the_python_api_names_the_diagnostic_fields_and_severity_compares_to_text():
    d = one(model("dens(3)"))
    assert (d.path, d.line, d.column, d.code, d.hint) == ("<input>", 2, 5, "E0105", "did you mean `dense`?")
    assert d.severity == "error" and str(d.severity) == "error"
    assert d.message == "unknown op `dens`"


# ---------------------------------------------------------------- section 2 of INTERFACES: exit codes

@pytest.mark.parametrize("argv", [
    [], ["check"], ["frob", "{m}"], ["check", "{m}", "--frob"], ["summary", "{m}", "-t", "rust"],
    ["summary", "{m}", "--batch", "0"], ["summary", "{m}", "--batch", "two"], ["summary", "{m}", "--dim", "T"],
    ["check", "{m}", "--dim", "T=0"], ["run", "{m}"], ["compile", "{m}", "-t", "js"], ["check", "{m}", "{m}"],
], ids=lambda a: " ".join(a) or "nothing")
def test_bad_command_line_use_exits_2_with_usage_on_stderr(tmp_path, capsys, argv):
    path = write(tmp_path, LENET)
    code, out, err = cli(capsys, *[a.replace("{m}", str(path)) for a in argv])
    assert code == 2 and out == "" and "error:" in err


def test_a_wrong_model_exits_1_with_diagnostics_on_stderr_only(tmp_path, capsys):
    path = write(tmp_path, model("dens(3)"))
    for command in (["check"], ["summary"], ["summary", "--json"], ["compile", "-o", tmp_path / "out"]):
        code, out, err = cli(capsys, command[0], path, *command[1:])
        assert code == 1 and out == "", command
        assert err.startswith(f"{path}:2:5: error[E0105]: unknown op `dens`")
    assert not (tmp_path / "out").exists()


def test_a_missing_model_file_exits_1_in_one_line(tmp_path, capsys):
    code, out, err = cli(capsys, "check", tmp_path / "absent.nn")
    assert code == 1 and out == "" and err.count("\n") == 1 and "absent.nn" in err


def test_the_real_command_never_shows_a_traceback(tmp_path):
    path = write(tmp_path, b"model m(x: [4]) {\n    dense(3) # \xe9\n\x00}\n")
    proc = subprocess.run(["nnc", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- section 8: every listed error

ERRORS = [
    # (id, source, code, line, column, text in the message or help)
    ("syntax", model("dense(3 -> relu"), "E0001", 2, 13, "expected `)`"),
    ("unknown op", model("dens(3)"), "E0105", 2, 5, "did you mean `dense`?"),
    ("unknown op in PyTorch case", model("Conv2d(4, 3)", inputs="x: [3, 8, 8]"), "E0105", 2, 5,
     "did you mean `conv2d`?"),
    ("unknown activation in PyTorch case", model("dense(3) -> ReLU"), "E0105", 2, 17, "did you mean `relu`?"),
    ("unknown keyword", model("dense(3, unit=4)"), "E0301", 2, 14, "did you mean `units`?"),
    ("missing positional", model("dense()"), "E0302", 2, 5, "units"),
    ("extra positional", model("relu(1)"), "E0303", 2, 10, "no arguments"),
    ("wrong kind", model("dense(same)"), "E0304", 2, 11, "positive integer"),
    ("misspelt word", model("conv1d(4, 3, padding=casual)", inputs="x: [4, 8]"), "E0104", 2, 26,
     "did you mean `causal`?"),
    ("misspelt bool", model("dense(3, bias=ture)"), "E0104", 2, 19, "did you mean `true`?"),
    ("rank", model("dense(120)", inputs="x: [16, 5, 5]"), "E0203", 2, 5, "flatten"),
    ("non-positive size", model("conv2d(4, 9)", inputs="x: [3, 8, 8]"), "E0201", 2, 5, "0"),
    ("undefined in a merge", model("add(x, z)"), "E0104", 2, 12, "undefined name `z`"),
    ("undefined returned", model("h = dense(3)", "return zzz"), "E0104", 3, 12, "undefined name `zzz`"),
    ("undefined source", model("h = dense(3)", "q = zz -> relu", "return h, q"), "E0104", 3, 9,
     "undefined name `zz`"),
    ("duplicate labels", model("a: dense(3)", "a: dense(3)"), "E0106", 3, 5, "duplicate label `a`"),
    ("block inputs", "block g(c)(a, b) {\n    return mul(a, b) -> dense(c)\n}\n" + model("g(3)"), "E0108", 5, 5,
     "takes 2 inputs, got 1"),
    ("recursion", "block b(c)(x) {\n    x -> b(c)\n}\n" + model("b(3)"), "E0107", 2, 10, "calls itself"),
    ("second model", model("relu") + model("relu").replace("model m", "model n"), "E0102", 4, 7, "second"),
    ("no model", "block b(c)(x) {\n    x -> dense(c)\n}\n", "E0101", 1, 1, "no `model`"),
    ("empty file", "", "E0101", 1, 1, "no `model`"),
    ("block arguments", "block b(c, d=2)(x) {\n    x -> dense(c * d)\n}\n" + model("b(3, 4, 5)"), "E0303", 5, 13,
     "the signature is `b(c, d=2)`"),
]


@pytest.mark.parametrize("text, code, line, column, words", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_each_listed_error_has_its_code_location_and_words(text, code, line, column, words):
    d = one(text)
    assert (d.code, d.line, d.column) == (code, line, column)
    assert words in f"{d.message} {d.hint}"


def test_groups_name_both_numbers_and_merges_both_shapes_and_the_axis():
    g = one(model("conv2d(4, 3, groups=4)", inputs="x: [6, 8, 8]"))
    assert g.code == "E0202" and "groups=4" in g.message and "6" in g.message
    out = one(model("conv2d(5, 3, groups=3)", inputs="x: [6, 8, 8]"))
    assert out.code == "E0202" and "3" in out.message and "5 output channels" in out.message
    m = one(model("add(x, y)", inputs="x: [4, 8], y: [5, 8]"))
    assert m.code == "E0204" and "[4, 8]" in m.message and "[5, 8]" in m.message and "axis 0" in m.message


def test_a_block_instance_used_twice_is_a_duplicate_label_at_the_second_call():
    text = BASIC + "model r(x: [8, 4, 4]) {\n    layer1.0: basic(8)\n    layer1.0: basic(8)\n}\n"
    d = one(text)
    assert (d.code, d.line, d.column, d.message) == ("E0106", 8, 5, "duplicate label `layer1.0`")
    clash = one(BASIC + "model r(x: [8, 4, 4]) {\n    a: conv2d(8, 1)\n    a: basic(8)\n}\n")
    assert (clash.code, clash.line) == ("E0106", 8)
    # distinct instances, and nested blocks in distinct instances, are fine
    check(BASIC + "model r(x: [8, 4, 4]) {\n    layer1.0: basic(8)\n    layer1.1: basic(8)\n}\n")


def test_block_parameters_are_prefixed_by_the_instance_label():
    text = BASIC + "model r(x: [8, 4, 4]) {\n    layer1.0: basic(8)\n}\n"
    keys = set(nnc.build(text).state_dict())
    assert {"layer1.0.conv1.weight", "layer1.0.bn1.running_mean", "layer1.0.bn2.bias"} <= keys


def test_every_independent_error_is_reported_in_order(tmp_path, capsys):
    text = model("dens(3)", "dense(2, unit=1)", "h = x -> relu", "add(h, q)")
    assert [(d.code, d.line) for d in diagnostics(text)] == [("E0105", 2), ("E0301", 3), ("E0104", 5)]
    code, _, err = cli(capsys, "check", write(tmp_path, text))
    assert code == 1 and err.count("error[") == 3 and err.rstrip().endswith("failed with 3 errors")


def test_independent_syntax_errors_on_different_lines_are_all_reported():
    assert [d.line for d in diagnostics(model("dense(3 4)", "relu", "dense(2;)"))] == [2, 4]


def test_an_unused_value_is_a_warning_and_check_succeeds(tmp_path, capsys):
    code, out, err = cli(capsys, "check", write(tmp_path, model("a = dense(3)", "b = x -> dense(5)")))
    assert code == 0 and out == ""
    assert err.startswith(f"{tmp_path / 'm.nn'}:2:5: warning[W0001]: `a` is never used")
    code, out, err = cli(capsys, "summary", tmp_path / "m.nn", "--json")
    assert code == 0 and json.loads(out)["outputs"] == {"out": [5]} and "W0001" in err


# ---------------------------------------------------------------- syntax messages and fix hints

@pytest.mark.parametrize("text, words, hint", [
    (model("dense(3,)"), "expected an expression after `,`", "remove the `,` before it"),
    (model("relu", inputs="x: [4,]"), "expected a dimension (a size or a name) after `,`", "remove the `,`"),
    (model("relu", inputs="x: []"), "expected a dimension (a size or a name) after `[`", None),
    (model("dense(3) ->", "relu"), "expected a step after `->`", "move the `->` there"),
    (model("add(x, dense(3))"), "found `(`", "compute it as a step of its own"),
    (model("dense(3) relu"), "expected `->` or end of line", "join the steps"),
    (model("dense(6 / 2)"), "unexpected character `/`", "integer division is written `//`"),
    (model("same = dense(3)"), "the keyword `same`", "is a keyword"),
    (model("conv2d(6 5)", inputs="x: [3, 8, 8]"), "expected `)` or `,` after `6`", "separate the items"),
    ("model m(x: [4]) {\n    dense(3)\n", "the file ends inside model `m`", "add `}`"),
])
def test_syntax_errors_say_what_was_expected_and_how_to_fix_it(text, words, hint):
    d = one(text)
    assert d.code in ("E0001", "E0002", "E0003") and words in d.message
    assert (d.hint is None) if hint is None else (hint in d.hint)


def test_a_trailing_arrow_before_the_closing_brace_gets_no_misleading_hint():
    d = one(model("dense(3) ->"))
    assert d.code == "E0001" and d.hint is None


# ---------------------------------------------------------------- lexical edge cases

@pytest.mark.parametrize("raw, code, line, column", [
    (b"\xef\xbb\xbfmodel m(x: [4]) {\n    dens(3)\n}\n", "E0105", 2, 5),          # a BOM
    (b"model m(x: [4]) {\r\n    dense(3)\r\n    dens(2)\r\n}\r\n", "E0105", 3, 5),  # CRLF
    (b"model m(x: [4]) {\r    dense(3)\r    dens(2)\r}\r", "E0105", 3, 5),          # lone CR
    (b"model m(x: [4]) {\n\tdense(3)\t->\tdens\n}\n", "E0105", 2, 14),              # tabs count 1
    ("model m(x: [4]) {\n    d\u00e9nse(3)\n}\n".encode(), "E0003", 2, 6),        # non-ASCII name
    (b"model m(x: [4]) {\n    dense(3) # \xe9t\xe9\n}\n", "E0004", 2, 16),         # not UTF-8
    (b"model m(x: [4]) {\n    dense(3)\x00\n}\n", "E0003", 2, 13),                  # NUL
    (b"model m(x: [4]) {\n    dense(99999999999999999999999)\n}\n", "E0306", 2, 11),
    (b"model m(x: [99999999999]) {\n    relu\n}\n", "E0207", 1, 13),
    (b"model m(x: [0]) {\n    relu\n}\n", "E0207", 1, 13),
    (b"model m(x: [4, 100000, 100000]) {\n    relu\n}\n", "E0208", 1, 9),
    (b"model m(x: [4]) {\n    dense(1e3)\n}\n", "E0304", 2, 11),
    (b"model m(x: [4]) {\n    dense(-0)\n}\n", "E0304", 2, 11),
    (b"model m(x: [4]) {\n    dense(8 // 0)\n}\n", "E0308", 2, 11),
    (b"model m(x: [4]) {\n    leaky_relu(slope=1e999)\n}\n", "E0304", 2, 16),
    (b"model m(x: [4]) {\n    dense(" + b"1 + " * 150 + b"1)\n}\n", "E0001", 2, 11),
], ids=["bom", "crlf", "cr", "tabs", "unicode-name", "latin1", "nul", "huge-number", "huge-dim", "zero-dim",
        "huge-tensor", "float-units", "minus-zero", "div-zero", "inf", "deep-expression"])
def test_hostile_text_is_a_located_diagnostic_on_the_cli(tmp_path, capsys, raw, code, line, column):
    path = write(tmp_path, raw)
    exit_code, out, err = cli(capsys, "check", path)
    assert exit_code == 1 and out == ""
    assert err.startswith(f"{path}:{line}:{column}: error[{code}]")


@pytest.mark.parametrize("text", [
    ("# header\nblock b(c)(x) {  # c\n    # c\n    x -> dense(c)  # c\n}  # c\n"
     "model m(x: [4]) {  # c\n\n    b(3)   # c\n    # c\n    -> relu # c\n\n    -> dense(2)\n}  # c\n# eof"),
    "model m(\n    x: [4],\n    y: [4]\n) {\n    add(x,\n        y)\n}",
    "model m(x: [4])\n{\n    dense(3)\n}",
    "model m(x: [4]) { dense(3) }",
    "model m(x: [4]) {\n    dense(3)\n}",                                      # no final newline
    "model m(x: [4]) { # \u00fcber \u202e \U0001f600\n    dense(3)\n}\n",      # unicode in comments
    "model " + "a" * 3000 + "(x: [4]) {\n    " + ".".join(["l" * 500] * 6) + ": dense(3)\n}\n",
    "model m(x: [" + ", ".join(["1"] * 31) + "]) {\n    flatten\n}\n",      # the most axes a value has
    "model m(x: [4]) {\n    dense(" + "(" * 300 + "3" + ")" * 300 + ")\n}\n",
    "model m(x: [4]) {\n    layer1.0.fc: dense(3)\n    7: relu\n    a.0.1: dense(2)\n}\n",
    "model m(x: [4]) {\n    leaky_relu(slope=-0.0) -> layernorm(eps=1E-3) -> dropout(.5)\n}\n",
])
def test_odd_but_valid_layouts_check(tmp_path, capsys, text):
    assert cli(capsys, "check", write(tmp_path, text)) == (0, "", "")


def test_keywords_are_not_names_and_labels_take_integers():
    assert one(model("relu").replace("model m", "model model")).code == "E0001"
    keys = set(nnc.build(model("layer1.0.fc: dense(3)", "7: relu", "a.0.1: dense(2)")).state_dict())
    assert keys == {"layer1.0.fc.weight", "layer1.0.fc.bias", "a.0.1.weight", "a.0.1.bias"}


# ---------------------------------------------------------------- compile and run

def test_compile_writes_the_numpy_module_and_its_weights_and_it_imports(tmp_path, capsys):
    code, out, err = cli(capsys, "compile", write(tmp_path, LENET, "lenet.nn"), "-o", tmp_path / "build")
    assert code == 0 and err == ""
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == ["lenet.npz", "lenet.py"]
    assert sorted(Path(line).name for line in out.split()) == ["lenet.npz", "lenet.py"]     # what it wrote
    script = ("import numpy as np, lenet; m = lenet.Model(batch=2, weights='lenet.npz'); "
              "print(m(np.zeros((2, 1, 28, 28))).shape, m.output_shapes)")
    proc = subprocess.run([sys.executable, "-c", script],
                          cwd=tmp_path / "build", capture_output=True, text=True)
    assert proc.stdout.strip() == "(2, 10) {'out': (10,)}", proc.stderr


@pytest.mark.parametrize("name, module", [("class", "class_"), ("lambda", "lambda_"), ("numpy", "numpy_"),
                                          ("wave", "wave"), ("LeNet", "LeNet"), ("Numpy", "Numpy_"),
                                          # imported before the plan is: `import os` gave the standard one
                                          ("os", "os_"), ("sys", "sys_"), ("json", "json_"), ("Random", "Random_")])
def test_a_model_name_that_is_a_keyword_or_numpy_gives_an_importable_module(tmp_path, capsys, name, module):
    src = write(tmp_path, model("dense(3)").replace("model m", f"model {name}"))
    code, _, _ = cli(capsys, "compile", src, "-o", tmp_path / "b")
    assert code == 0 and sorted(p.name for p in (tmp_path / "b").iterdir()) == [f"{module}.npz", f"{module}.py"]
    script = f"import numpy as np, {module} as m; print(m.Model(batch=1)(np.zeros((1, 4))).shape)"
    proc = subprocess.run([sys.executable, "-c", script],
                          cwd=tmp_path / "b", capture_output=True, text=True)
    assert proc.stdout.strip() == "(1, 3)", proc.stderr


def test_compile_c_writes_the_header_and_source(tmp_path, capsys):
    code, _, err = cli(capsys, "compile", write(tmp_path, LENET, "lenet.nn"), "-t", "c", "-o", tmp_path / "c")
    names = {p.name for p in (tmp_path / "c").iterdir()}
    assert code == 0 and err == "" and {"lenet.c", "lenet.h"} <= names
    header = (tmp_path / "c" / "lenet.h").read_text()
    for decl in ("lenet_ctx", "lenet_init", "lenet_forward"):
        assert decl in header


def test_run_prints_or_saves_the_output_from_a_path_with_spaces_and_quotes(tmp_path, capsys):
    folder = tmp_path / "a b 'c\""
    src = write(folder, model("dense(3)"), "my model.nn")
    np.save(folder / "in put.npy", np.arange(4, dtype=np.float32))
    code, out, err = cli(capsys, "run", src, "--input", folder / "in put.npy")
    assert code == 0 and err == "" and out.startswith("out [1, 3]:")
    code, _, _ = cli(capsys, "run", src, "--input", folder / "in put.npy", "-o", folder / "o.npy")
    assert code == 0 and np.load(folder / "o.npy").shape == (1, 3)


def test_run_refuses_bad_input_files_in_one_line_with_exit_1(tmp_path, capsys):
    src = write(tmp_path, model("dense(3)"))
    (tmp_path / "text.npy").write_text("garbage\n")
    np.savez(tmp_path / "one.npz", a=np.zeros(4, np.float32))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "one.npz").read_bytes()[:100])
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5), np.float32))
    raw = bytearray((tmp_path / "one.npz").read_bytes())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):      # the member marked encrypted (flag bit 0), both headers
        at = raw.index(header)
        flags = at + (6 if header == b"PK\x03\x04" else 8)
        raw[flags] |= 1
    (tmp_path / "locked.npz").write_bytes(bytes(raw))
    for name, words in (("text.npy", "is not a .npy or .npz file"), ("cut.npz", "not a readable"),
                        ("locked.npz", "cannot be read"), ("wrong.npy", "[B, 4]"), ("absent.npy", "does not exist")):
        code, out, err = cli(capsys, "run", src, "--input", tmp_path / name)
        assert (code, out) == (1, ""), name
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err


def test_weights_that_do_not_fit_are_listed_in_one_error(tmp_path, capsys):
    src = write(tmp_path, LENET, "lenet.nn")
    np.savez(tmp_path / "w.npz", **{"fc1.weight": np.zeros((120, 399), np.float32), "extra": np.zeros(3, np.float32)})
    np.save(tmp_path / "in.npy", np.zeros((1, 28, 28), np.float32))
    code, out, err = cli(capsys, "run", src, "--input", tmp_path / "in.npy", "--weights", tmp_path / "w.npz")
    assert code == 1 and out == ""
    assert "[120, 399]" in err and "missing" in err and "`fc3.bias`" in err and "`extra`" in err
