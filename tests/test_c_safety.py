"""The C plan under misuse (issue 9): named dimensions reach C in one order
whatever their names, any name or path is safe in C text, NaN and infinite
inputs propagate as on the NumPy plan, every transpose and `[Z, A]` shape is
planned, compiler and cache problems are one-line `UserError`s, and the
library is compiled once per structure, when the model is built.

(The sanitizer runs with NaN/inf inputs and two named dimensions are in
test_c_plan.py, beside the harness they use.)"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnc
from nnc.compiler import ops as catalog
from nnc.compiler.build import compile_plan, write_plan
from nnc.compiler.codegen import c as c_gen
from nnc.compiler.codegen import cbuild
from nnc.compiler.diagnostics import UserError
from nnc.compiler.frontend import check
from nnc.compiler.memory import layout
from nnc.compiler.passes import optimize

from conftest import HAS_CC

pytestmark = pytest.mark.skipif(not HAS_CC, reason="no C compiler")

ROOT = Path(__file__).resolve().parent.parent
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def both(source: str, *args, **kw):
    return nnc.build(source, target="c", **kw), nnc.build(source, target="numpy", **kw)


# ------------------------------------------------------------------ item 2: one order of the named dimensions

TWO_DIMS = "model m(x: [2, {a}=8], y: [3, {b}=8]) {{\n    p = x -> relu\n    q = y -> tanh\n    return p, q\n}}\n"


def test_two_named_dimensions_reach_c_in_the_order_the_c_api_declares():
    # Z is declared first but sorts last: the old Python side passed Z's size where C read A's
    cm, npm = both(TWO_DIMS.format(a="Z", b="A"))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((1, 2, 3)).astype(np.float32), rng.standard_normal((1, 3, 7)).astype(np.float32)
    for got, want in zip(cm(x, y), npm(x, y)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,6}", fullmatch=True)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(NAME, min_size=2, max_size=2, unique=True), sizes=st.tuples(st.integers(1, 8),
                                                                                 st.integers(1, 8)))
def test_any_two_dimension_names_give_the_numpy_plan_s_numbers(names, sizes):
    a, b = names
    source = TWO_DIMS.format(a=a, b=b)
    try:
        cm, npm = both(source)
    except nnc.CompileError:
        return          # a name the language refuses (a keyword of its own) is not this test's concern
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, sizes[0])).astype(np.float32)
    y = rng.standard_normal((1, 3, sizes[1])).astype(np.float32)
    for got, want in zip(cm(x, y), npm(x, y)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_dim_order_is_the_one_the_generated_c_declares():
    plan = compile_plan(TWO_DIMS.format(a="Z", b="A"), target="c")
    header = plan.files["m.h"]
    assert c_gen.dim_order(plan.graph.bounds) == ["A", "Z"]
    assert "const float *v_y, int d_A, int d_Z, float *y_p" in header


# ------------------------------------------------------------------ item 3: names and text in C

C_NAMES = ["memcpy", "size_t", "NAN", "int", "ctx", "n", "k", "in", "run", "A", "g", "W", "work", "INFINITY",
           "sqrtf", "uint8_t", "d_T", "v_x", "t", "T"]


@pytest.mark.parametrize("dim", C_NAMES)
def test_dimension_names_that_are_c_names_compile_and_run(dim):
    source = f"model m(x: [2, {dim}=8]) {{\n    relu\n    transpose((1, 0))\n    softmax\n}}\n"
    cm, npm = both(source)
    x = np.random.default_rng(2).standard_normal((1, 2, 5)).astype(np.float32)
    np.testing.assert_allclose(cm(x), npm(x), rtol=1e-5, atol=1e-6)


def test_dimensions_differing_in_case_get_distinct_macros(tmp_path):
    plan = compile_plan("model m(x: [t=4, 3], y: [T=5, 3]) {\n    p = x -> relu\n    q = y -> relu\n"
                        "    return p, q\n}\n", target="c")
    header = plan.files["m.h"]
    assert "#define M_MAX_T 5" in header and "#define M_MAX_T_1 4" in header
    write_plan(plan, tmp_path, None)
    subprocess.run([cbuild.find_compiler(), *STRICT, "-c", "m.c", "-o", "m.o"], cwd=tmp_path, check=True)


HOSTILE_TEXT = ["a */ int evil; /* b", "line\nbreak", "tri??/\ngraph", "back\\", "caf\u00e9 \u2603", "q\"uote",
                "// comment", "x?\x00?y", "*/", "/*", "a/*/b"]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_c_text_keeps_any_text_inside_its_comment_or_string(text):
    out = c_gen.c_text(text)
    assert out.isascii() and out.isprintable()
    for bad in ("*/", "/*", "//", "??", "\\", '"', "\n"):
        assert bad not in out, (text, out)


def test_a_hostile_file_name_gives_a_c_file_that_compiles_strictly(tmp_path):
    folder = tmp_path / "we*" / "ird??"          # the path holds `*/` and `??/`
    folder.mkdir(parents=True)
    path = folder / "m \\ caf\u00e9 \" .nn"
    path.write_text("model m(x: [4]) {\n    fc: dense(2)\n}\n")
    plan = compile_plan(path, target="c")
    out = tmp_path / "out"
    write_plan(plan, out, None)
    text = (out / "m.c").read_text() + (out / "m.h").read_text()
    assert text.isascii() and "??" not in text.replace("\\077", "")
    subprocess.run([cbuild.find_compiler(), *STRICT, "-Wtrigraphs", "-c", "m.c", "-o", "m.o"], cwd=out, check=True)


def test_labels_and_dimension_names_never_meet_the_c_library():
    names = {"memcpy", "memset", "memmove", "size_t", "NAN", "INFINITY", "expf", "erff", "int32_t", "NULL"}
    assert names <= c_gen.C_RESERVED


# ------------------------------------------------------------------ item 7: NaN and infinities

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -1.5, 2.0, 100.0, -100.0], np.float32)
HUGE = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 88.5, -88.5, 95.0, -95.0, -110.0], np.float32)


@pytest.mark.parametrize("act", sorted(catalog.ACTIVATIONS))
def test_activations_propagate_nan_and_infinities_as_the_numpy_plan(act):
    step = "clamp(-1, 1)" if act == "clamp" else act          # clamp needs a bound
    cm, npm = both(f"model m(x: [{SPECIAL.size}]) {{\n    {step}\n}}\n")
    with np.errstate(all="ignore"):
        got, want = np.asarray(cm(SPECIAL[None]))[0], np.asarray(npm(SPECIAL[None]))[0]
    assert np.isnan(got[0]), f"{act}(NaN) = {got[0]} on C"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_activations_agree_with_torch_on_nan_and_where_torch_gives_a_number():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fns = {"relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": F.gelu,
           "silu": F.silu, "selu": F.selu, "softplus": F.softplus, "hardsigmoid": F.hardsigmoid,
           "hardswish": F.hardswish, "leaky_relu": F.leaky_relu, "elu": F.elu}
    x = np.concatenate([SPECIAL, HUGE])
    for act, fn in fns.items():
        model = nnc.build(f"model m(x: [{x.size}]) {{\n    {act}\n}}\n", target="c")
        got = np.asarray(model(x[None]))[0]
        want = fn(torch.from_numpy(x.copy())).numpy()
        # every value, -inf * 0 = NaN forms (gelu(-inf), silu(-inf)) included, as PyTorch's, except
        # torch's gelu(+inf) = NaN (its vectorised erf), where nnc keeps the limit +inf
        where = ~((act == "gelu") & (x == np.inf))
        np.testing.assert_allclose(got[where], want[where], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=act)


def test_maxpool_and_clamps_keep_nan():
    cm, npm = both("model m(x: [1, 6]) {\n    maxpool1d(2)\n    relu6\n    hardsigmoid\n}\n")
    x = np.array([[[1.0, np.nan, 2.0, 3.0, -np.inf, np.inf]]], np.float32)
    got = np.asarray(cm(x))
    np.testing.assert_allclose(got, np.asarray(npm(x)), equal_nan=True)
    assert np.isnan(got[0, 0, 0])


@pytest.mark.parametrize("shape,layer", [((3, 32, 32), "maxpool2d(2)"), ((2, 9, 12), "maxpool2d(3)"),
                                         ((2, 7, 10), "maxpool2d(2)"), ((2, 8, 9), "maxpool2d(2)"),
                                         ((1, 6, 1040), "maxpool2d(2)"), ((2, 8, 8), "maxpool2d(2, stride=1)")])
def test_max_pooling_keeps_nan_and_infinities_where_windows_tile_the_rows(shape, layer):
    # windows tiling each row (2x2 and 3x3, an odd row left over) run two long passes a chunk of rows;
    # a width not a multiple of the window, one past the row buffer and an overlapping stride do not
    cm, npm = both(f"model m(x: [{', '.join(map(str, shape))}]) {{\n    {layer}\n}}\n", batch=2)
    x = np.random.default_rng(5).standard_normal((2, *shape)).astype(np.float32)
    flat = x.reshape(-1)
    flat[::7], flat[3::11], flat[5::13] = np.nan, np.inf, -np.inf
    got, want = np.asarray(cm(x)), np.asarray(npm(x))
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got).any() and np.isinf(got).any()


# ------------------------------------------------------------------ item 12: shapes C must plan

@pytest.mark.parametrize("shape, perm", [((2, 3, 2, 2, 2, 1), (0, 2, 1, 4, 3, 5)),      # PixelShuffle's permute
                                         ((2, 3, 4, 5, 2), (4, 0, 3, 1, 2)),
                                         ((1, 2, 1, 3, 2, 2, 2), (6, 5, 4, 3, 2, 1, 0))])
def test_transpose_of_more_than_four_axes_matches_numpy(shape, perm):
    source = f"model m(x: [{', '.join(map(str, shape))}]) {{\n    transpose(({', '.join(map(str, perm))}))\n}}\n"
    x = np.random.default_rng(3).standard_normal((2, *shape)).astype(np.float32)
    got = nnc.build(source, target="c", batch=2)(x)
    np.testing.assert_array_equal(got, x.transpose(0, *(p + 1 for p in perm)))


def test_the_c_generator_plans_a_value_with_two_named_dimensions(tmp_path):
    # element counts Z * A: products of sizes in C, no SymbolicError (built below the API's own checks)
    source = "model m(x: [Z=6, A=5]) {\n    relu\n    softmax\n    transpose((1, 0))\n    sigmoid\n}\n"
    graph = optimize(check(source).graph)
    lay = layout(graph, scratch=c_gen.scratch_bytes, persistent=c_gen.state_bytes(graph))
    files = c_gen.generate(graph, lay, name="za")
    assert "(long)(d_Z) * (long)(d_A)" in files["za.c"] or "(long)(d_A) * (long)(d_Z)" in files["za.c"]
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "za.h"\nint main(void) {\n    static za_ctx ctx;\n'
        '    float x[12], y[12];\n    int i;\n    for (i = 0; i < 12; i++) x[i] = (float)i / 7.0f - 0.5f;\n'
        '    za_init(&ctx);\n    if (za_forward_len(&ctx, x, 3, 4, y)) return 1;\n'
        '    for (i = 0; i < 12; i++) printf("%.7g\\n", y[i]);\n    return 0;\n}\n')
    exe = tmp_path / "za"
    subprocess.run([cbuild.find_compiler(), *STRICT, "-fsanitize=address,undefined", "main.c", "za.c", "-o",
                    str(exe), "-lm"], cwd=tmp_path, check=True)
    got = np.array(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split(), float)
    x = (np.arange(12, dtype=np.float32) / 7.0 - 0.5).reshape(4, 3)       # Z=4, A=3
    e = np.exp(np.maximum(x, 0) - np.maximum(x, 0).max(axis=1, keepdims=True))
    want = 1 / (1 + np.exp(-(e / e.sum(axis=1, keepdims=True)).T))
    np.testing.assert_allclose(got, want.reshape(-1), rtol=1e-5)


# ------------------------------------------------------------------ item 12: compiler and cache problems

SMALL = "model m(x: [4]) {\n    fc: dense(3) -> relu\n}\n"


def test_cc_naming_no_program_is_a_user_error(monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-nnc")
    with pytest.raises(cbuild.CompilerMissing, match="no-such-compiler-nnc") as info:
        nnc.build(SMALL, target="c")
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


@pytest.mark.parametrize("script", ["exit 1", "echo 'cc1: fatal error: out of cheese' >&2; exit 4"])
def test_a_failing_cc_is_a_user_error_that_names_it(monkeypatch, tmp_path, script):
    fake = tmp_path / "mycc"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(fake))
    with pytest.raises(cbuild.CompilerFailed) as info:
        nnc.build(SMALL, target="c")
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert str(fake) in message and "failed" in message and "bug in nnc" not in message


def test_cc_false_on_the_command_line_is_one_line_and_exit_1(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((4,), np.float32))
    model = tmp_path / "m.nn"
    model.write_text(SMALL)
    env = dict(os.environ, CC="false")
    proc = subprocess.run([sys.executable, "-m", "nnc", "run", str(model), "-t", "c", "--input", str(x)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "`false`" in proc.stderr


def test_an_unwritable_cache_falls_back_to_a_private_temporary_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    folder = cbuild.cache_dir()
    assert folder.is_dir() and not str(folder).startswith(str(blocker))
    model = nnc.build(SMALL, target="c")
    assert model(np.ones((1, 4), np.float32)).shape == (1, 3)


def test_the_test_suite_compiles_into_a_temporary_cache():
    home_cache = Path(os.path.expanduser("~")) / ".cache"
    folder = cbuild.cache_dir().resolve()
    assert home_cache.resolve() not in folder.parents, folder


# ------------------------------------------------------------------ item 18: code apart from weights

def test_the_library_is_compiled_when_the_model_is_built_and_shared_by_its_structure(monkeypatch):
    calls = []
    real = cbuild.compile_shared
    monkeypatch.setattr(cbuild, "compile_shared", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    rng = np.random.default_rng(4)
    w1 = {"fc.weight": rng.standard_normal((3, 4)).astype(np.float32), "fc.bias": np.zeros(3, np.float32)}
    w2 = {"fc.weight": rng.standard_normal((3, 4)).astype(np.float32), "fc.bias": np.ones(3, np.float32)}
    a = nnc.build(SMALL, target="c", weights=w1)
    assert calls == ["m"]                          # at build time, not at the first call
    b = nnc.build(SMALL, target="c", weights=w2)
    assert a._lib._name == b._lib._name            # one library for the structure, whatever the weights
    x = rng.standard_normal((1, 4)).astype(np.float32)
    np.testing.assert_allclose(a(x), np.maximum(x @ w1["fc.weight"].T, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b(x), np.maximum(x @ w2["fc.weight"].T + 1, 0), rtol=1e-5, atol=1e-6)


def test_a_long_compile_is_announced_once_on_stderr(monkeypatch, capfd):
    monkeypatch.setattr(cbuild, "ANNOUNCE_AFTER", 0.0)
    nnc.build("model announce(x: [5]) {\n    fc: dense(7)\n}\n", target="c")
    err = capfd.readouterr().err
    assert err.count("nnc: compiling announce (C, 42 parameters)...") == 1
    assert err.rstrip().endswith(" s")


def test_embedded_weights_are_one_string_and_equal_the_packed_array(tmp_path):
    state = {"fc.weight": np.array([[1.5, -0.0, np.inf, 2.0 ** -140]] * 3, np.float32),
             "fc.bias": np.array([np.nan, 1.0, -3.25], np.float32)}
    plan = compile_plan(SMALL, target="c", state=state)
    text = plan.files["m.c"]
    assert text.count("static const") == 1 and "static const float" not in text
    write_plan(plan, tmp_path, None)
    (tmp_path / "dump.c").write_text(
        '#include <stdio.h>\n#include "m.h"\nint main(void) {\n    static m_ctx ctx;\n    int i;\n'
        '    m_init(&ctx);\n    fwrite(ctx.weights, sizeof(float), M_WEIGHTS_FLOATS, stdout);\n'
        '    for (i = 0; i < 0; i++) (void)i;\n    return 0;\n}\n')
    exe = tmp_path / "dump"
    subprocess.run([cbuild.find_compiler(), *STRICT, "dump.c", "m.c", "-o", str(exe), "-lm"], cwd=tmp_path,
                   check=True)
    got = np.frombuffer(subprocess.run([str(exe)], capture_output=True, check=True).stdout, np.float32)
    want = c_gen.pack_weights(plan.graph, state)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_weight_slots_follow_the_structure_alone():
    graph = check(ROOT / "samples" / "lenet.nn").graph
    slots, total = c_gen.weight_slots(optimize(graph))
    assert all(at % c_gen.WEIGHT_ALIGN == 0 for at, _ in slots.values())
    assert total >= sum(size for _, size in slots.values())
