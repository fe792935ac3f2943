"""Fuzzing the front end: broken models give diagnostics, never tracebacks.

Takes the samples, applies thousands of seeded random mutations (characters,
tokens and lines deleted, duplicated or swapped; tokens of the language's
vocabulary inserted or substituted; numbers replaced by small expressions) and
runs `frontend.check` on each. The only exception allowed out is
`nnc.CompileError` (success is fine too).

A crash fails the test with, for each distinct crash site, the mutant shrunk
to a minimal input that still crashes there, and its traceback. The generator
is a seeded `random.Random`, so a failure repeats exactly. A list of
hand-written edge inputs (found while probing the front end) is checked the
same way.

The probe's mutators (issue 9) run as a second, smaller fuzz: huge numbers
(400 digits, 2**31 to 2**64), deep nesting (block calls, parentheses,
negations), dimension names that are keywords of C or Python, and hostile
file names, which go through the command line (`nnc check`, `nnc summary`):
there only a clean exit 0 or 1 with no traceback is allowed.

Integer inputs (issue 13) get their own family: models over `x: int[...]`
(well- and ill-formed declarations) followed by one to five random ops,
half of them mutated once more; again only CompileError or success.
"""

from __future__ import annotations

import random
import re
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from dataclasses import dataclass
from pathlib import Path

import pytest

from nnc import CompileError
from nnc.compiler.cli import main
from nnc.compiler.frontend import check
from nnc.compiler.ops import CATALOG

SAMPLES = {p.stem: p.read_text() for p in sorted((Path(__file__).resolve().parent.parent / "samples").glob("*.nn"))}
MUTANTS_PER_SAMPLE = 375          # 3000 in all over the eight samples
SEED = 20251123

TOKEN = re.compile(r"->|//|[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\S")

VOCABULARY = (
    "->", "(", ")", ",", "=", ":", "[", "]", "{", "}", ".", "+", "-", "*", "//", "#", "\n",
    "0", "1", "2", "3", "-1", "16", "0.5", "1e-5", "99999999999999999999",
    "model", "block", "return", "same", "valid", "causal", "true", "false", "shape",
    "x", "h", "c", "T", "T=64", "x.shape[0]", "x.shape[1]", "x.shape[-1]",
    "axis=1", "padding=causal", "stride=2", "groups=3", "bias=false",
    *sorted(CATALOG),
)


@dataclass(frozen=True, slots=True)
class Crash:
    """An exception other than CompileError: where it was raised, and how."""

    site: tuple[str, str, int]       # (exception type, file name, line) of the innermost frame
    traceback: str


def run(text: str) -> Crash | None:
    """Check a model text; a Crash if anything but CompileError escapes."""
    try:
        check(text)
    except CompileError:
        return None
    except Exception as e:        # noqa: BLE001 - any other exception is the finding
        frame = traceback.extract_tb(e.__traceback__)[-1]
        site = (type(e).__name__, Path(frame.filename).name, frame.lineno)
        return Crash(site, "".join(traceback.format_exception(e, limit=-4)))
    return None


# ---------------------------------------------------------------- mutations

def mutate_characters(rng: random.Random, text: str) -> str:
    i = rng.randrange(len(text))
    action = rng.choice(("delete", "duplicate", "swap"))
    if action == "delete":
        return text[:i] + text[i + 1:]
    if action == "duplicate":
        return text[:i] + text[i] + text[i:]
    j = rng.randrange(len(text))
    chars = list(text)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def mutate_tokens(rng: random.Random, text: str) -> str:
    tokens = list(TOKEN.finditer(text))
    if not tokens:
        return text + rng.choice(VOCABULARY)
    m = rng.choice(tokens)
    action = rng.choice(("delete", "duplicate", "swap", "insert", "replace"))
    if action == "delete":
        return text[:m.start()] + text[m.end():]
    if action == "duplicate":
        return text[:m.end()] + " " + m.group() + text[m.end():]
    if action == "swap":
        other = rng.choice(tokens)
        first, second = sorted((m, other), key=lambda t: t.start())
        if first.start() == second.start():
            return text
        return (text[:first.start()] + second.group() + text[first.end():second.start()] + first.group()
                + text[second.end():])
    word = rng.choice(VOCABULARY)
    if action == "insert":
        return text[:m.start()] + word + " " + text[m.start():]
    return text[:m.start()] + word + text[m.end():]


def mutate_lines(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    action = rng.choice(("delete", "duplicate", "swap"))
    if action == "delete":
        del lines[i]
    elif action == "duplicate":
        lines.insert(i, lines[j])
    else:
        lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


EXPRESSION_ATOMS = ("0", "1", "3", "-2", "0.5", "1e-5", "true", "same", "x.shape[0]", "x.shape[1]",
                    "x.shape[-1]", "c", "T", "(2, 2)")


def mutate_expression(rng: random.Random, text: str) -> str:
    """Replace a number (an argument, a size, a label segment) with a small
    expression: arguments are expressions, and sizes may be symbolic."""
    numbers = [m for m in TOKEN.finditer(text) if m.group()[0].isdigit()]
    if not numbers:
        return text
    m = rng.choice(numbers)
    a, b = rng.choice(EXPRESSION_ATOMS), rng.choice(EXPRESSION_ATOMS)
    op = rng.choice(("+", "-", "*", "//"))
    return text[:m.start()] + f"{a} {op} {b}" + text[m.end():]


MUTATIONS = (mutate_characters, mutate_tokens, mutate_tokens, mutate_lines, mutate_expression)


def mutants(sample: str, count: int, mutations=MUTATIONS, seed: str = ""):
    """`count` seeded mutants of a sample, each 1 to 3 mutations away from it."""
    rng = random.Random(f"{SEED}-{sample}{seed}")
    for _ in range(count):
        text = SAMPLES[sample]
        for _ in range(rng.randint(1, 3)):
            if text:
                text = rng.choice(mutations)(rng, text)
        yield text


# ---------------------------------------------------------------- the probe's mutators

HUGE_NUMBERS = ("9" * 400, "1" + "0" * 4000, str(2 ** 31 - 1), str(2 ** 31), str(2 ** 31 + 1), str(2 ** 32),
                str(2 ** 53 + 1), str(2 ** 63 - 1), str(2 ** 63), str(2 ** 64), str(10 ** 12), "1e400", "1e-400")


def mutate_huge_number(rng: random.Random, text: str) -> str:
    """Replace a number (a size, an argument, a bound) with a huge one."""
    numbers = [m for m in TOKEN.finditer(text) if m.group()[0].isdigit()]
    if not numbers:
        return text
    m = rng.choice(numbers)
    return text[:m.start()] + rng.choice(HUGE_NUMBERS) + text[m.end():]


def mutate_deep_nesting(rng: random.Random, text: str) -> str:
    """Wrap a number in many parentheses or minus signs, or call the model's
    steps through a tower of blocks each calling the next."""
    depth = rng.choice((40, 65, 101, 200))
    numbers = [m for m in TOKEN.finditer(text) if m.group()[0].isdigit()]
    kind = rng.choice(("parentheses", "negations", "tuples", "blocks"))
    if kind == "blocks" or not numbers:
        tower = "".join(f"block deep{i}()(v) {{\n    deep{i + 1}\n}}\n" for i in range(depth))
        tower += f"block deep{depth}()(v) {{\n    relu\n}}\n"
        return tower + re.sub(r"\brelu\b", "deep0", text, count=1)
    m = rng.choice(numbers)
    if kind == "parentheses":
        wrapped = "(" * depth + m.group() + ")" * depth
    elif kind == "negations":
        wrapped = "-" * depth + m.group()
    else:
        wrapped = "(" * depth + m.group() + ",)" * depth
    return text[:m.start()] + wrapped + text[m.end():]


KEYWORD_NAMES = ("lambda", "self", "batch", "v", "None", "class", "def", "import", "int", "float", "memcpy",
                 "size_t", "NAN", "INFINITY", "main", "return_", "static", "restrict", "_Bool", "out", "x",
                 "__init__", "__builtins__", "np", "T", "T2", "Z", "A")


def mutate_dimension_name(rng: random.Random, text: str) -> str:
    """Give a model input a named dimension called like a keyword or a
    built-in of C or Python, with or without a bound."""
    header = re.search(r"^model\s+\w+\s*\(([^)]*)\)", text, flags=re.M)
    if not header:
        return text
    sizes = list(re.finditer(r"\b[0-9]+\b|\b[A-Za-z_]\w*(?==[0-9])|(?<=[\[,] )[A-Z]\b", header.group(1)))
    if not sizes:
        return text
    m = rng.choice(sizes)
    name = rng.choice(KEYWORD_NAMES)
    new = rng.choice((name, f"{name}={m.group()}" if m.group().isdigit() else name))
    start, end = header.start(1) + m.start(), header.start(1) + m.end()
    return text[:start] + new + text[end:]


PROBE_MUTATIONS = (mutate_huge_number, mutate_deep_nesting, mutate_dimension_name, mutate_tokens)
PROBE_MUTANTS_PER_SAMPLE = 40


# ---------------------------------------------------------------- shrinking

def shrink(text: str, site: tuple[str, str, int]) -> str:
    """A smaller text that still crashes at `site`: drop lines, then single
    tokens or pairs of neighbouring ones (`, name`), while the crash stays,
    until nothing helps."""
    def crashes_here(candidate: str) -> bool:
        crash = run(candidate)
        return crash is not None and crash.site == site

    changed = True
    while changed:
        changed = False
        lines = text.split("\n")
        i = 0
        while i < len(lines):
            kept = lines[:i] + lines[i + 1:]
            if crashes_here("\n".join(kept)):
                lines, changed = kept, True
            else:
                i += 1
        text = "\n".join(lines)
        i = 0
        while True:
            tokens = list(TOKEN.finditer(text))
            if i >= len(tokens):
                break
            ends = [tokens[j].end() for j in (i, i + 1) if j < len(tokens)]
            candidates = (text[:tokens[i].start()] + text[end:] for end in ends)
            smaller = next((c for c in candidates if crashes_here(c)), None)
            if smaller is not None:
                text, changed = smaller, True
            else:
                i += 1
    return text


def report(crashes: dict[tuple[str, str, int], str]) -> str:
    parts = [f"{len(crashes)} crash site(s); each with a minimal input and its traceback:"]
    for site, text in crashes.items():
        crash = run(text)
        parts.append(f"\n--- {site[0]} at {site[1]}:{site[2]}\n{text!r}\n\n{crash.traceback if crash else ''}")
    return "\n".join(parts)


# ---------------------------------------------------------------- the tests

@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_mutated_sample_raises_only_compile_error(sample):
    found: dict[tuple[str, str, int], str] = {}
    for text in mutants(sample, MUTANTS_PER_SAMPLE):
        crash = run(text)
        if crash is not None and crash.site not in found:
            found[crash.site] = shrink(text, crash.site)
    assert not found, report(found)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_probe_mutants_raise_only_compile_error(sample):
    found: dict[tuple[str, str, int], str] = {}
    for text in mutants(sample, PROBE_MUTANTS_PER_SAMPLE, PROBE_MUTATIONS, seed="-probe"):
        crash = run(text)
        if crash is not None and crash.site not in found:
            found[crash.site] = text       # not shrunk: deep towers shrink slowly
    assert not found, report(found)


def test_probe_mutators_change_the_text():
    rng = random.Random(SEED)
    for mutate in PROBE_MUTATIONS[:3]:
        assert sum(mutate(rng, SAMPLES["wavenet"]) != SAMPLES["wavenet"] for _ in range(20)) >= 15


HOSTILE_NAMES = (
    'm"""; import os; os.system("touch PWNED"); """x.nn', "m'; rm -rf .; '.nn", "$(touch PWNED).nn",
    "`touch PWNED`.nn", "m */ int x; /*.nn", "m\\.nn", "m%s%n%x.nn", "m{0}{{}}.nn", "model m(x: [4]) {.nn",
    "-o.nn", "--help.nn", " m .nn", "m\nline.nn", "m\rcr.nn", "m\tx.nn", "m\x1b[31mred.nn", "mé.nn", "m😀.nn",
    "m\u202e.nn", "NUL.nn", "m.NN", "m.txt", "m", ".nn", "m" * 240 + ".nn",
)


def cli(*args: str) -> tuple[int, str]:
    """Run `nnc` in-process; (exit code, stderr). SystemExit (argparse) counts as its code."""
    err = StringIO()
    with redirect_stdout(StringIO()), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_file_names_through_the_command_line_exit_cleanly(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name          # a `/` in the name makes a folder with a hostile name
    path.parent.mkdir(parents=True, exist_ok=True)
    for text in (SAMPLES["lenet"], SAMPLES["lenet"].replace("dense(120)", "dense(120, pading=1)")):
        try:
            path.write_text(text)
        except OSError:
            pytest.skip("the file system refuses this name")
        for command in ("check", "summary"):
            code, err = cli(command, "--", str(path))
            assert code in (0, 1), err
            assert "Traceback" not in err and "internal error" not in err
            assert all(c.isprintable() or c == "\n" for c in err), "a control character reached the terminal"
            if text != SAMPLES["lenet"]:
                assert code == 1 and "E0301" in err
        missing = path.with_name("missing-" + path.name)
        code, err = cli("check", "--", str(missing))
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "PWNED").exists()


def test_mutants_are_deterministic_and_mostly_different_from_the_sample():
    first = list(mutants("lenet", 50))
    assert first == list(mutants("lenet", 50))
    assert sum(text != SAMPLES["lenet"] for text in first) > 45


def test_shrinking_keeps_only_what_the_crash_needs(monkeypatch):
    site = ("KeyError", "lower.py", 1)
    # A stand-in front end that "crashes" whenever the text mentions `fc3`.
    monkeypatch.setattr(sys.modules[__name__], "run", lambda text: Crash(site, "") if "fc3" in text else None)
    assert shrink(SAMPLES["lenet"], site).strip() == "fc3"


TRICKY = {
    "symbolic_size_times_a_float": "model m(x: [2, T]) {\n    dense(x.shape[1] * 0.5)\n}\n",
    "float_times_a_symbolic_size": "model m(x: [2, T]) {\n    dense(0.5 * x.shape[1])\n}\n",
    "symbolic_size_plus_a_float": "model m(x: [2, T]) {\n    dense(x.shape[1] + 0.5)\n}\n",
    "float_minus_a_symbolic_size": "model m(x: [2, T]) {\n    dense(0.5 - x.shape[1])\n}\n",
    "symbolic_size_floordiv_a_float": "model m(x: [2, T]) {\n    dense(x.shape[1] // 0.5)\n}\n",
    "symbolic_size_times_a_symbolic_size": "model m(x: [2, T]) {\n    dense(x.shape[1] * x.shape[1])\n}\n",
    "int_floordiv_a_symbolic_size": "model m(x: [2, T]) {\n    dense(4 // x.shape[1])\n}\n",
    "symbolic_size_floordiv_zero": "model m(x: [2, T]) {\n    dense(x.shape[1] // 0)\n}\n",
    "shape_index_is_a_float": "model m(x: [2, 3]) {\n    dense(x.shape[0.5])\n}\n",
    "shape_index_is_a_boolean": "model m(x: [2, 3]) {\n    dense(x.shape[true])\n}\n",
    "product_of_huge_numbers": "model m(x: [2]) {\n    dense(99999999999999999999 * 99999999999999999999)\n}\n",
    "nan_argument": "model m(x: [2]) {\n    leaky_relu(1e400 - 1e400)\n}\n",
    "reshape_of_a_symbolic_length": "model m(x: [2, T]) {\n    reshape((-1, 4))\n}\n",
    "flatten_of_two_named_sizes": "model m(x: [T, N]) {\n    flatten\n}\n",
    "block_with_an_empty_body": "block b()(y) {\n}\nmodel m(x: [2]) {\n    b\n}\n",
    "mutually_recursive_blocks": "block a()(x) {\n    b\n}\nblock b()(x) {\n    a\n}\nmodel m(x: [2]) {\n    a\n}\n",
    "block_input_named_twice": "block b()(y, y) {\n    relu\n}\nmodel m(x: [2]) {\n    b()(x, x)\n}\n",
    "continuing_from_two_values": "block two()(x) {\n    return x, x\n}\nmodel m(x: [2]) {\n    two\n    relu\n}\n",
    "label_equal_to_an_input": "model m(x: [2]) {\n    x: relu\n}\n",
    "select_of_the_only_axis": "model m(x: [8]) {\n    select(0, -1)\n}\n",
    "select_of_an_integer_input_s_only_axis": "model m(x: int[T=8]) {\n    select(0, -1) -> embedding(10, 4)\n}\n",
}


@pytest.mark.parametrize("text", list(TRICKY.values()), ids=list(TRICKY))
def test_tricky_input_raises_only_compile_error(text):
    crash = run(text)
    assert crash is None, crash.traceback


# ---------------------------------------------------------------- integer inputs (issue 13)

INTEGER_INPUTS = ("int[T=8]", "int[T=8]", "int[8]", "int[2, T=8]", "int[T=8, 2]", "int[T]", "int[0]", "int[]",
                  "int", "int[T=8", "int[T=-1]", "int[T=8.5]", "int[T=99999999999999999999]", "int int[T=8]")
INTEGER_OPS = (
    "embedding(10, 4)", "embedding(10, 4)", "embedding(0, 4)", "embedding(10, 0)", "embedding(-1, 4)",
    "embedding(10)", "embedding(10, 4, 2)", "embedding(2.5, 4)", "embedding(num=10, dim=4)",
    "slice(0, 1)", "slice(0, -3, none)", "slice(-1, 2, 1, 2)", "slice(0, 9, 2)", "slice(0, 0, 0)",
    "select(0, -1)", "select(0, 8)", "select(-1, 0)", "reshape((2, 4))", "reshape((-1,))",
    "transpose((1, 0))", "transpose", "flatten", "positional(8)", "positional(4)", "attention(2, causal=true)",
    "attention(4)", "dense(3)", "conv1d(4, 3)", "relu", "gelu", "layernorm", "mean(0)", "sum(-1)",
    "max(0)", "clamp(min=0)", "neg", "exp", "glu", "pad((1, 0))", "lstm(4)", "gru(4, layers=2)",
    "softmax(-1)", "global_maxpool", "upsample(2)", "matmul(x, x)", "div(x, x)", "add(x, x)",
    "concat(x, x)", "emb: embedding(10, 4)", "x",
)


def integer_model(rng: random.Random) -> str:
    """A model over an integer input `x` followed by one to five random ops,
    sometimes named and sometimes referring back to the input."""
    lines = [f"model m(x: {rng.choice(INTEGER_INPUTS)}) {{"]
    for i in range(rng.randint(1, 5)):
        op = rng.choice(INTEGER_OPS)
        if rng.random() < 0.2:
            lines.append(f"    v{i} = x -> {op}")
        elif rng.random() < 0.1:
            lines.append(f"    return {op}")
        else:
            lines.append(f"    {op}")
    lines.append("}")
    return "\n".join(lines) + "\n"


INTEGER_MODELS = 300


def test_integer_input_models_raise_only_compile_error():
    rng = random.Random(f"{SEED}-integer")
    found: dict[tuple[str, str, int], str] = {}
    for _ in range(INTEGER_MODELS):
        text = integer_model(rng)
        if rng.random() < 0.5:
            text = rng.choice(MUTATIONS)(rng, text)
        crash = run(text)
        if crash is not None and crash.site not in found:
            found[crash.site] = text
    assert not found, report(found)


def test_integer_input_models_reach_both_outcomes():
    """The family is not all errors: some models compile (the integers reach an embedding)."""
    rng = random.Random(f"{SEED}-integer")
    outcomes = {run_outcome(integer_model(rng)) for _ in range(INTEGER_MODELS)}
    assert outcomes == {"ok", "CompileError"}


def run_outcome(text: str) -> str:
    try:
        check(text)
    except CompileError:
        return "CompileError"
    return "ok"
