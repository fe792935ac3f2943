"""Diagnostics: every broken model under tests/errors/ gives exactly the codes
its first line expects, rendered as in its golden file; codes are documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import nnc
from nnc.compiler.diagnostics import CODES, Severity
from nnc.compiler.frontend import check

ERRORS = sorted((Path(__file__).parent / "errors").glob("*.nn"))
ROOT = Path(__file__).resolve().parent.parent


def expected_codes(path: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect:"), f"{path.name} must start with `# expect: CODE ...`"
    return first.split(":", 1)[1].split()


def test_there_are_at_least_25_broken_models():
    assert len(ERRORS) >= 25


@pytest.mark.parametrize("path", ERRORS, ids=[p.stem for p in ERRORS])
def test_broken_model_reports_expected_codes_in_order(path: Path, golden, monkeypatch):
    monkeypatch.chdir(ROOT)   # paths in the rendered text stay relative, as a user types them
    with pytest.raises(nnc.CompileError) as info:
        check(path.relative_to(ROOT).as_posix())
    diags = info.value.diagnostics
    assert [d.code for d in diags] == expected_codes(path)
    for d in diags:
        assert d.severity is Severity.ERROR
        assert d.line is not None and d.line >= 1 and d.column >= 1
        assert d.code in CODES
    golden.check(f"errors/{path.stem}.txt", info.value.render() + "\n")


def test_rendering_matches_the_spec_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    lines = ["model m(x: [1, 28, 28]) {", "    conv2d(16, 23)", "    # pad", "", "", "",
             "    dense(120)", "}"]
    (tmp_path / "models" / "bad.nn").write_text("\n".join(lines) + "\n")
    with pytest.raises(nnc.CompileError) as info:
        check("models/bad.nn")
    assert str(info.value) == (
        "models/bad.nn:7:5: error[E0203]: dense expects a vector per example, got [16, 6, 6]\n"
        "   7 |     dense(120)\n"
        "     |     ^^^^^^^^^^\n"
        "   = help: add `flatten` before it")
    d = info.value.diagnostics[0]
    assert (d.path, d.line, d.column, d.code, d.hint) == ("models/bad.nn", 7, 5, "E0203", "add `flatten` before it")


def test_cli_exits_1_with_diagnostics_on_stderr_and_no_traceback():
    path = ERRORS[0]
    proc = subprocess.run([sys.executable, "-m", "nnc", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "error[" in proc.stderr and "Traceback" not in proc.stderr


def test_unused_value_is_a_warning_and_check_still_succeeds(tmp_path):
    src = "model m(x: [8]) {\n    h = dense(4)\n    x -> dense(2)\n}\n"
    checked = check(src)
    assert [(w.code, w.line) for w in checked.warnings] == [("W0001", 2)]
    assert "`h` is never used" in checked.warnings[0].message


def test_a_label_taken_by_hand_from_an_automatic_one_says_where_it_came_from():
    """Spec section 5: an unlabelled step is OP_K whatever labels exist, so
    `relu_0: dense(4)` then `relu` is a duplicate; the help names the cause."""
    with pytest.raises(nnc.CompileError) as e:
        check("model m(x: [4]) {\n    relu_0: dense(4)\n    relu\n}\n")
    (d,) = e.value.diagnostics
    assert d.code == "E0106" and d.line == 3
    assert "labelled `relu_0` automatically" in d.help


def test_underscore_names_are_unused_on_purpose():
    assert check("model m(x: [8]) {\n    _h = dense(4)\n    x -> dense(2)\n}\n").warnings == ()


def test_code_table_in_docs_equals_the_compiler_table():
    text = (ROOT / "docs" / "diagnostics.md").read_text()
    documented = dict(re.findall(r"^\| `([EW]\d{4})` \| (.+?) \|$", text, flags=re.M))
    assert documented == CODES


def test_missing_file_is_a_diagnostic_not_a_traceback(tmp_path):
    with pytest.raises(nnc.CompileError) as info:
        check(str(tmp_path / "absent.nn"))
    assert info.value.diagnostics[0].code == "E0004"


def test_a_huge_source_line_is_shown_as_a_window_around_the_span():
    from nnc.compiler.diagnostics import SHOWN_LINE
    text = "model m(x: [10]) {\n    " + "a = x\n" + "    b = x" + " -> relu" * 2000 + " -> nosuch\n}\n"
    with pytest.raises(nnc.CompileError) as info:
        nnc.build(text)
    rendered = str(info.value)
    assert len(rendered) < 4 * SHOWN_LINE + 400
    source, carets = [l for l in rendered.splitlines() if " | " in l][:2]
    start = carets.index("^")
    assert source[start:start + len("nosuch")] == "nosuch"
