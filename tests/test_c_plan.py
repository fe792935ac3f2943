"""The C plan as C: every sample's generated files compile alone under strict
warnings, the object file allocates nothing and holds no writable data, a
harness runs them under AddressSanitizer and UndefinedBehaviorSanitizer, the
streaming API (`NAME_step`, `NAME_stream`, `NAME_reset`) agrees with the
NumPy plan (for a million GRU steps too), NaN and infinite inputs and models
with two named dimensions run clean under the sanitizers too, identifiers are
safe whatever the labels hold, and LeNet's C is pinned by a golden file.

(The numbers of the C plan through `nnc.build(target="c")` are checked with
every other target-parametrised test: samples, ops, streaming, the API.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler.build import compile_plan, write_plan
from nnc.compiler.codegen import cbuild
from nnc.compiler.diagnostics import UserError

from conftest import HAS_CC
from torch_twins import DIMS

pytestmark = pytest.mark.skipif(not HAS_CC, reason="no C compiler")

ROOT = Path(__file__).resolve().parent.parent
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
SMALL = ["mlp", "lenet", "concat", "wavenet", "gru", "lstm"]
STREAMING = ["wavenet", "gru", "lstm"]


def cc() -> str:
    return cbuild.find_compiler()


def write(name: str, tmp: Path, *, stream: bool = False, dims=None, source: str | None = None, state=None) -> str:
    plan = compile_plan(source if source is not None else ROOT / "samples" / f"{name}.nn", target="c",
                        dims=dims or DIMS.get(name), stream=stream, state=state)
    write_plan(plan, tmp, None)
    return plan.name


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


# ------------------------------------------------------------------ the files compile alone, strictly

@pytest.mark.parametrize("name", [*SMALL, "resnet18", "mobilenetv2"])
def test_sample_compiles_without_warnings_and_allocates_nothing(name, tmp_path):
    stem = write(name, tmp_path)
    obj = tmp_path / f"{stem}.o"
    run([cc(), *STRICT, "-O2", "-c", str(tmp_path / f"{stem}.c"), "-o", str(obj)])
    symbols = run(["nm", str(obj)]).stdout
    undefined = {line.split()[-1] for line in symbols.splitlines() if line.split()[-2:-1] == ["U"]}
    assert not undefined & {"malloc", "calloc", "realloc", "free"}, undefined
    writable = [line for line in symbols.splitlines() if len(line.split()) == 3 and line.split()[1] in "BbDdGgSs"]
    assert writable == [], f"writable global data: {writable}"


def _native_ok() -> bool:
    probe = subprocess.run([cc(), "-march=native", "-E", "-x", "c", "-"], input="", capture_output=True, text=True)
    return probe.returncode == 0


ALL_SAMPLES = sorted(p.stem for p in (ROOT / "samples").glob("*.nn"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_SAMPLES)
def test_every_sample_compiles_without_warnings_at_o3_for_the_native_cpu(name, tmp_path):
    """Users build plans with -O3 -march=native (the benchmark does): GCC's
    loop analysis there warned on the activation loops' remainders
    (-Waggressive-loop-optimizations) where -O2 was clean."""
    if not _native_ok():
        pytest.skip("the compiler has no -march=native")
    signature = next(line for line in (ROOT / "samples" / f"{name}.nn").read_text().splitlines()
                     if line.startswith("model"))
    dims = DIMS.get(name) or ({"T": 64} if re.search(r"\bT\b(?!=)", signature) else None)
    stem = write(name, tmp_path, dims=dims)
    run([cc(), *STRICT, "-O3", "-march=native", "-c", str(tmp_path / f"{stem}.c"), "-o", str(tmp_path / "x.o")])


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_plan_compiles_without_warnings_and_allocates_nothing(name, tmp_path):
    stem = write(name, tmp_path, stream=True)
    obj = tmp_path / f"{stem}.o"
    run([cc(), *STRICT, "-O2", "-c", str(tmp_path / f"{stem}.c"), "-o", str(obj)])
    symbols = run(["nm", str(obj)]).stdout
    assert not re.search(r"\bU (malloc|calloc|realloc|free)\b", symbols)
    assert not [s for s in symbols.splitlines() if len(s.split()) == 3 and s.split()[1] in "BbDdGgSs"]
    for fn in ("reset", "step", "stream", "forward", "init"):
        assert re.search(rf"\bT {stem}_{fn}\b", symbols)


@pytest.mark.parametrize("source,stream", [
    ("model m(x: [T=8, 4]) {\n  dense(3)\n}\n", True),     # streams, but no layer keeps state
    ("model r(x: [4]) {\n  return x\n}\n", False),         # the plan only copies its input
    # a global average over a multiple of 4: GCC 12 -O2 saw a 2^62-iteration tail loop (-Werror)
    ("model g(x: [4, 6, 6]) {\n  global_avgpool\n}\n", False),
    ("model g(x: [T=8, 6]) {\n  global_avgpool\n}\n", False),     # a named channel axis: d_T
    ("model g(x: [T=8, 6]) {\n  global_maxpool\n}\n", False),
])
def test_degenerate_plans_compile_without_warnings(source, stream, tmp_path):
    stem = write("", tmp_path, stream=stream, source=source)
    for level in ("-O0", "-O1", "-O2", "-O3", "-Os"):
        run([cc(), *STRICT, level, "-c", str(tmp_path / f"{stem}.c"), "-o", str(tmp_path / "x.o")])


def test_header_states_sizes_and_the_api(tmp_path):
    write("lenet", tmp_path)
    header = (tmp_path / "lenet.h").read_text()
    assert "#define LENET_INPUT_SIZE 784" in header and "#define LENET_OUTPUT_SIZE 10" in header
    assert re.search(r"#define LENET_ARENA_BYTES \d+", header)
    assert "typedef struct lenet_ctx lenet_ctx;" in header
    assert "void lenet_init(lenet_ctx *ctx);" in header
    assert "int lenet_forward(lenet_ctx *ctx, const float *v_x, float *y_out);" in header
    assert (tmp_path / "nnc_kernels.h").exists()


def test_generated_c_is_deterministic():
    a = compile_plan(ROOT / "samples" / "wavenet.nn", target="c", dims={"T": 64}, stream=True).files
    b = compile_plan(ROOT / "samples" / "wavenet.nn", target="c", dims={"T": 64}, stream=True).files
    assert a == b


def _elide_weights(text: str) -> str:
    return re.sub(r"(\} \w+_weights = \{)\n.*?\n(\};)", r"\1 ... \2", text, flags=re.S)


def test_generated_c_golden(golden, monkeypatch):
    monkeypatch.chdir(ROOT)
    plan = compile_plan("samples/lenet.nn", target="c")
    golden.check("c/lenet.h.txt", plan.files["lenet.h"])
    golden.check("c/lenet.c.txt", _elide_weights(plan.files["lenet.c"]))


# ------------------------------------------------------------------ a harness under the sanitizers

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include "{name}.h"

static float *load(const char *path, long *count) {{
    FILE *f = fopen(path, "rb");
    float *data;
    if (!f) exit(3);
    fseek(f, 0, SEEK_END);
    *count = ftell(f) / (long)sizeof(float);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)(*count > 0 ? *count : 1) * sizeof(float));
    if (fread(data, sizeof(float), (size_t)*count, f) != (size_t)*count) exit(4);
    fclose(f);
    return data;
}}

/* usage: harness forward IN OUT | harness step IN OUT F G | harness stream IN OUT F G CHUNK
 *        | harness len IN OUT D1 D2 ... (forward_len at those sizes, one example) */
int main(int argc, char **argv) {{
    long n, i;
    float *x = load(argv[2], &n), *y = NULL;
    {name}_ctx *ctx = malloc(sizeof *ctx);
    FILE *out = fopen(argv[3], "wb");
    {name}_init(ctx);
    if (argv[1][0] == 'l') {{
{forward_len}
    }}
    else if (argv[1][0] == 'f') {{
{forward}
    }}
{streaming}
    fclose(out);
    free(ctx);
    free(x);
    free(y);
    (void)argc;
    return 0;
}}
"""

FORWARD = r"""        long examples = n / {upper}_INPUT_SIZE;
        y = malloc((size_t)examples * {upper}_OUTPUT_SIZE * sizeof(float));
        for (i = 0; i < examples; i++)
            if ({name}_forward(ctx, x + i * {upper}_INPUT_SIZE, y + i * {upper}_OUTPUT_SIZE)) return 5;
        fwrite(y, sizeof(float), (size_t)(examples * {upper}_OUTPUT_SIZE), out);"""

STREAM_HARNESS = r"""
    else {{
        long f = atol(argv[4]), g = atol(argv[5]), chunk = argc > 6 ? atol(argv[6]) : 1;
        long steps = n / f;
        y = malloc((size_t)(steps * g) * sizeof(float));
        for (i = 0; i < steps; i += chunk) {{
            long m = steps - i < chunk ? steps - i : chunk;
            int rc = argv[1][1] == 't' && argv[1][2] == 'e' ? {name}_step(ctx, x + i * f, y + i * g)
                                                           : {name}_stream(ctx, x + i * f, (int)m, y + i * g);
            if (rc) return 6;
        }}
        for (i = 0; i < steps * g; i++)
            if (!isfinite(y[i])) return 7;
        fwrite(y, sizeof(float), (size_t)(steps * g), out);
    }}
"""


def sanitizers_work() -> bool:
    flags = ["-fsanitize=address,undefined"]
    probe = subprocess.run([cc(), *flags, "-x", "c", "-", "-o", "/dev/null"], input="int main(void){return 0;}",
                           capture_output=True, text=True)
    return probe.returncode == 0


def build_harness(name: str, tmp: Path, flags: list[str], *, stream: bool = False, dims=None,
                  source: str | None = None, forward_len: str | None = None, state=None) -> Path:
    stem = write(name, tmp, stream=stream, dims=dims, source=source, state=state)
    forward = "        return 2;" if forward_len else FORWARD.format(name=stem, upper=stem.upper())
    text = HARNESS.format(name=stem, upper=stem.upper(), forward_len=forward_len or "        return 2;", forward=forward,
                          streaming=STREAM_HARNESS.format(name=stem) if stream else "    else return 2;")
    (tmp / "harness.c").write_text(text)
    exe = tmp / "harness"
    run([cc(), *flags, "-I", str(tmp), str(tmp / "harness.c"), str(tmp / f"{stem}.c"), "-o", str(exe), "-lm"])
    return exe


def call(exe: Path, mode: str, x: np.ndarray, tmp: Path, *extra: int) -> np.ndarray:
    (tmp / "in.bin").write_bytes(np.ascontiguousarray(x, np.float32).tobytes())
    run([str(exe), mode, str(tmp / "in.bin"), str(tmp / "out.bin"), *map(str, extra)])
    return np.frombuffer((tmp / "out.bin").read_bytes(), np.float32)


# float-cast-overflow is not part of GCC's `undefined`: a NaN reaching a float -> int conversion must fail
SANITIZE = ["-std=c99", "-O1", "-g", "-fsanitize=address,undefined,float-cast-overflow",
            "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


@pytest.mark.parametrize("name", SMALL)
def test_forward_is_clean_under_sanitizers_and_matches_numpy(name, tmp_path):
    if not sanitizers_work():
        pytest.skip("the C compiler cannot build with -fsanitize=address,undefined")
    exe = build_harness(name, tmp_path, SANITIZE)
    model = nnc.build(ROOT / "samples" / f"{name}.nn", batch=3, dims=DIMS.get(name))
    shape = tuple(DIMS.get(name, {}).get(d, d) if isinstance(d, str) else d for d in model.input_shapes["x"])
    x = np.random.default_rng(5).standard_normal((3, *shape)).astype(np.float32)
    got = call(exe, "forward", x, tmp_path)
    want = np.asarray(model(x)).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", STREAMING)
def test_step_and_stream_are_clean_under_sanitizers_and_match_numpy(name, tmp_path):
    if not sanitizers_work():
        pytest.skip("the C compiler cannot build with -fsanitize=address,undefined")
    exe = build_harness(name, tmp_path, SANITIZE, stream=True, dims={"T": 16})
    model = nnc.build(ROOT / "samples" / f"{name}.nn", stream=True, dims={"T": 16})
    f, g = (np.prod([d for d in s if d != "T"]) for s in (model.input_shapes["x"], model.output_shapes["out"]))
    steps = 50
    x = np.random.default_rng(6).standard_normal((steps, f)).astype(np.float32)   # time-major frames
    frames = x.reshape(steps, *(d for d in model.input_shapes["x"] if d != "T"))
    want = np.stack([np.array(model.step(fr[None])).reshape(-1) for fr in frames]).reshape(-1)
    np.testing.assert_allclose(call(exe, "step", x, tmp_path, f, g), want, rtol=1e-4, atol=1e-5)
    # every streaming sample's chunks are contiguous in the harness's time-major buffer
    # ([n, F] for the recurrent ones, one channel for WaveNet)
    np.testing.assert_allclose(call(exe, "stream", x, tmp_path, f, g, 7), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(call(exe, "stream", x, tmp_path, f, g, 40), want, rtol=1e-4, atol=1e-5)


GATED = ("model q(x: [1, T]) {\n    v: conv1d(4, 3) -> tanh\n    p: pad((1, 0))\n    transpose((1, 0))\n    r: gru(5)\n"
         "    d: dense(1)\n    transpose((1, 0))\n    c: conv1d(1, 2, padding=causal)\n}\n")


def test_a_gated_stream_is_clean_under_sanitizers_and_matches_numpy(tmp_path):
    """Layers after a valid convolution keep their state clear for its warm-up (the context's step
    count, NAME_stream cutting a chunk there): strict at every level, clean under the sanitizers,
    and step by step and in chunks across the gates as the NumPy plan."""
    stem = write("", tmp_path, stream=True, source=GATED, dims={"T": 16})
    for level in ("-O0", "-O2", "-Os"):
        run([cc(), *STRICT, level, "-c", str(tmp_path / f"{stem}.c"), "-o", str(tmp_path / "x.o")])
    if not sanitizers_work():
        pytest.skip("the C compiler cannot build with -fsanitize=address,undefined")
    exe = build_harness("", tmp_path, SANITIZE, stream=True, dims={"T": 16}, source=GATED)
    model = nnc.build(GATED, stream=True, dims={"T": 16})
    x = np.random.default_rng(6).standard_normal((50, 1)).astype(np.float32)
    want = np.stack([np.array(model.step(fr[None])).reshape(-1) for fr in x]).reshape(-1)
    np.testing.assert_allclose(call(exe, "step", x, tmp_path, 1, 1), want, rtol=1e-4, atol=1e-5)
    for chunk in (1, 3, 40):
        np.testing.assert_allclose(call(exe, "stream", x, tmp_path, 1, 1, chunk), want, rtol=1e-4, atol=1e-5)


ACTIVATIONS = ["relu", "relu6", "sigmoid", "tanh", "gelu", "silu", "selu", "softplus", "hardsigmoid", "hardswish",
               "leaky_relu", "elu"]
EVERY_ACTIVATION = "model acts(x: [6]) {\n" + "".join(f"    a{i} = x -> {a}\n" for i, a in enumerate(ACTIVATIONS)) \
    + f"    return concat({', '.join(f'a{i}' for i in range(len(ACTIVATIONS)))}, axis=0)\n}}\n"
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, 1e30, -50.0]


def test_nan_and_infinite_inputs_are_clean_under_sanitizers_and_propagate_as_numpy(tmp_path):
    if not sanitizers_work():
        pytest.skip("the C compiler cannot build with -fsanitize=address,undefined")
    exe = build_harness("acts", tmp_path, SANITIZE, source=EVERY_ACTIVATION)
    x = np.array([SPECIAL, [np.nan, 95.0, -95.0, -110.0, 88.6, -88.6]], np.float32)
    got = call(exe, "forward", x, tmp_path).reshape(2, -1)
    with np.errstate(all="ignore"):
        want = np.asarray(nnc.build(EVERY_ACTIVATION, batch=2)(x))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])


@pytest.mark.parametrize("name", ["mlp", "lenet", "concat"])
def test_samples_run_clean_under_sanitizers_on_nan_and_infinite_inputs(name, tmp_path):
    if not sanitizers_work():
        pytest.skip("the C compiler cannot build with -fsanitize=address,undefined")
    exe = build_harness(name, tmp_path, SANITIZE)
    model = nnc.build(ROOT / "samples" / f"{name}.nn", batch=2)
    shape = model.input_shapes["x"]
    x = np.random.default_rng(7).standard_normal((2, *shape)).astype(np.float32)
    x.reshape(2, -1)[0, ::3] = np.nan
    x.reshape(2, -1)[1, ::5] = np.inf
    x.reshape(2, -1)[1, 1::7] = -np.inf
    got = call(exe, "forward", x, tmp_path)
    with np.errstate(all="ignore"):
        want = np.asarray(model(x)).reshape(-1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


TWO_DIMS = """model two(x: [2, Z=8], y: [3, A=8]) {
    p = x -> conv1d(4, 3, padding=1) -> relu
    q = y -> conv1d(4, 1) -> tanh
    return concat(p, q, axis=1)
}
"""

TWO_DIMS_CALL = """        long z = atol(argv[4]), a = atol(argv[5]);
        y = malloc((size_t)(4 * (z + a)) * sizeof(float));
        /* the C API takes the named dimensions sorted by name: A, then Z */
        if (two_forward_len(ctx, x, x + 2 * z, (int)a, (int)z, y)) return 5;
        fwrite(y, sizeof(float), (size_t)(4 * (z + a)), out);
"""


def test_two_named_dimensions_are_clean_under_sanitizers_and_match_numpy(tmp_path):
    if not sanitizers_work():
        pytest.skip("the C compiler cannot build with -fsanitize=address,undefined")
    exe = build_harness("two", tmp_path, SANITIZE, source=TWO_DIMS, forward_len=TWO_DIMS_CALL)
    model = nnc.build(TWO_DIMS)
    rng = np.random.default_rng(8)
    for z, a in [(5, 5), (8, 1), (1, 8), (3, 7)]:     # the last pair also goes through Python below
        x, y = rng.standard_normal((1, 2, z)).astype(np.float32), rng.standard_normal((1, 3, a)).astype(np.float32)
        got = call(exe, "len", np.concatenate([x.reshape(-1), y.reshape(-1)]), tmp_path, z, a)
        np.testing.assert_allclose(got, np.asarray(model(x, y)).reshape(-1), rtol=1e-4, atol=1e-5)
    # through Python too: the sizes reach the library in the same order
    np.testing.assert_allclose(nnc.build(TWO_DIMS, target="c")(x, y), model(x, y), rtol=1e-4, atol=1e-5)


SELF_ATTENTION = """model selfsim(x: [T=24, 16]) {
    xt = x -> transpose((1, 0))
    s = matmul(x, xt) -> softmax
    return matmul(s, x)
}
"""

SELF_ATTENTION_CALL = """        long t = atol(argv[4]);
        y = malloc((size_t)(16 * t) * sizeof(float));
        if (selfsim_forward_len(ctx, x, (int)t, y)) return 5;
        fwrite(y, sizeof(float), (size_t)(16 * t), out);
"""


def test_values_of_t_by_t_elements_are_clean_under_sanitizers_and_match_torch(tmp_path):
    """Attention written with matmul: the scores are [T, T], planned at the bound (T = 24), and every
    shorter sequence runs in the same arena, without a read or write outside it."""
    if not sanitizers_work():
        pytest.skip("the C compiler cannot build with -fsanitize=address,undefined")
    torch = pytest.importorskip("torch")
    exe = build_harness("selfsim", tmp_path, SANITIZE, source=SELF_ATTENTION, forward_len=SELF_ATTENTION_CALL)
    for t in (24, 23, 7, 1):
        x = np.random.default_rng(t).standard_normal((1, t, 16)).astype(np.float32)
        xt = torch.from_numpy(x)
        want = (torch.softmax(xt @ xt.transpose(1, 2), -1) @ xt).numpy()
        np.testing.assert_allclose(call(exe, "len", x, tmp_path, t), want.reshape(-1), rtol=1e-4, atol=1e-5)
    x = np.random.default_rng(1).standard_normal((2, 9, 16)).astype(np.float32)
    np.testing.assert_allclose(nnc.build(SELF_ATTENTION, target="c", batch=2)(x), nnc.build(SELF_ATTENTION, batch=2)(x),
                               rtol=1e-4, atol=1e-5)


def test_a_million_gru_steps_stay_finite_and_equal_the_numpy_plan(tmp_path):
    exe = build_harness("gru", tmp_path, ["-std=c99", "-O2"], stream=True, dims={"T": 4096})
    n = 1_000_000
    t = np.arange(n, dtype=np.float64)
    x = (0.8 * np.sin(2 * np.pi * 440 * t / 48_000) + 0.1 * np.random.default_rng(8).standard_normal(n))
    x = x.astype(np.float32).reshape(n, 1)
    got = call(exe, "step", x, tmp_path, 1, 1)
    model = nnc.build(ROOT / "samples" / "gru.nn", stream=True, dims={"T": 4096})
    want = np.concatenate([np.array(model.stream(x[None, i:i + 4096])).reshape(-1) for i in range(0, n, 4096)])
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


# ------------------------------------------------------------------ names, errors, the command line

HOSTILE = """model int(x: [4]) {
    static: dense(6) -> relu
    free: dense(6)
    A: relu
    g.in.run: tanh
    malloc = n.m.k: dense(3)
    return add(malloc, malloc)
}
"""


def test_labels_that_are_c_keywords_or_library_names_give_safe_code(tmp_path):
    exe = build_harness("int", tmp_path, ["-O1", *STRICT], source=HOSTILE)
    text = (tmp_path / "int.c").read_text()
    assert "const float *const w_static_weight = W + " in text
    model = nnc.build(HOSTILE, batch=2)
    x = np.random.default_rng(9).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(call(exe, "forward", x, tmp_path), np.asarray(model(x)).reshape(-1), rtol=1e-5)


def test_models_named_like_the_kernels_get_their_own_prefix():
    plan = compile_plan("model nnc_dense(x: [4]) {\n    dense(2)\n}\n", target="c")
    assert set(plan.files) == {"m_nnc_dense.h", "m_nnc_dense.c", "nnc_kernels.h"}


def test_a_missing_c_compiler_is_a_clear_error_when_the_model_is_built(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(cbuild.CompilerMissing, match="C compiler") as info:
        nnc.build("model m(x: [4]) {\n    dense(2)\n}\n", target="c")
    assert isinstance(info.value, UserError) and isinstance(info.value, RuntimeError)


def test_length_too_short_for_valid_convolutions_is_a_value_error(target):
    model = nnc.build("model m(x: [1, T]) {\n    conv1d(2, 5)\n}\n", target=target, dims={"T": 32})
    assert model(np.ones((1, 1, 9))).shape == (1, 2, 5)
    assert model(np.ones((1, 1, 5))).shape == (1, 2, 1)
    with pytest.raises(ValueError, match="allows 5 <= T <= 32"):
        model(np.ones((1, 1, 4)))


def test_load_weights_uses_the_new_weights_without_compiling(monkeypatch):
    model = nnc.build("model m(x: [4]) {\n    fc: dense(2)\n}\n", target="c")
    x = np.ones((1, 4), np.float32)
    before = np.array(model(x))
    state = model.state_dict()

    def no_compiling(*args, **kwargs):
        raise AssertionError("load_weights compiled C")

    monkeypatch.setattr(cbuild, "compile_shared", no_compiling)
    monkeypatch.setattr(subprocess, "Popen", no_compiling)
    monkeypatch.setattr(subprocess, "run", no_compiling)
    model.load_weights({"fc.weight": state["fc.weight"] * 0, "fc.bias": np.array([1, 2], np.float32)})
    np.testing.assert_array_equal(model(x), [[1, 2]])
    model.load_weights(state)
    np.testing.assert_array_equal(model(x), before)


def test_cli_compile_writes_a_folder_that_builds_alone_and_run_uses_c(tmp_path):
    out = tmp_path / "build"
    proc = subprocess.run([sys.executable, "-m", "nnc", "compile", str(ROOT / "samples" / "lenet.nn"), "-t", "c",
                           "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["lenet.c", "lenet.h", "nnc_kernels.h"]
    run([cc(), *STRICT, "-O2", "-c", "lenet.c", "-o", "lenet.o"], cwd=out)
    x = np.random.default_rng(2).standard_normal((784,)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-m", "nnc", "run", str(ROOT / "samples" / "mlp.nn"), "-t", "c",
                           "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), nnc.build(ROOT / "samples" / "mlp.nn")(x[None]),
                               rtol=1e-5)


def test_every_context_starts_on_a_64_byte_boundary():
    """A C model's contexts are aligned to a cache line (ctypes' large buffers
    sit 16 bytes past a page: every wide load of the arena straddled two lines)."""
    model = nnc.build(ROOT / "samples" / "gru.nn", target="c", batch=3, dims={"T": 8}, stream=True)
    assert len(model._contexts) == 3 and all(ctx.value % 64 == 0 for ctx in model._contexts)
    x = np.random.default_rng(0).standard_normal((3, 8, 1)).astype(np.float32)
    twin = nnc.build(ROOT / "samples" / "gru.nn", batch=3, dims={"T": 8}, stream=True)
    twin.load_weights(model.state_dict())
    np.testing.assert_allclose(model(x), twin(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the streaming API's lengths and return values

LENGTHS_MAIN = r"""
#include <stdio.h>
#include <string.h>
#include "{name}.h"
int main(void) {{
    static {name}_ctx ctx;
    static {xtype} x[{upper}_INPUT_SIZE];
    static float y[{upper}_OUTPUT_SIZE + 1];
    int i, rc;
    for (i = 0; i < {upper}_INPUT_SIZE; i++) x[i] = ({xtype})(i % 7);
    {name}_init(&ctx);
    y[{upper}_OUTPUT_SIZE] = 12345.0f;                       /* one float past the output: must stay */
    for (i = 0; i < {upper}_OUTPUT_SIZE; i++) y[i] = -7.0f;
    rc = {name}_forward_len(&ctx, x, {upper}_MAX_T + 1, y);  /* longer than the caller's buffers */
    printf("%d %d\n", rc, y[0] == -7.0f && y[{upper}_OUTPUT_SIZE] == 12345.0f);
    rc = {name}_forward_len(&ctx, x, 0, y);
    printf("%d %d\n", rc, y[0] == -7.0f);
    rc = {name}_forward_len(&ctx, x, {upper}_MAX_T, y);
    printf("%d %d\n", rc, y[{upper}_OUTPUT_SIZE] == 12345.0f);
    {bad}
    return 0;
}}
"""


@pytest.mark.parametrize("name,xtype", [("gru", "float"), ("charlm", "int32_t")])
def test_a_streaming_forward_len_refuses_lengths_past_the_bound_and_writes_nothing(name, xtype, tmp_path):
    """forward_len of a streaming plan was reset + stream(n): stream takes any n (in pieces), so a
    length past the bound read and wrote past the caller's [bound] buffers (ASan: a heap overflow in
    gru's stream, a stack read in charlm's) and returned 0. charlm's 3 (a token outside the table)
    also came back as 1 from a stream cut into pieces."""
    if not sanitizers_work():
        pytest.skip("the C compiler cannot build with -fsanitize=address,undefined")
    stem = write(name, tmp_path, stream=True, dims={"T": 16})
    bad = ""
    if xtype == "int32_t":       # a bad token in the second piece of a stream longer than the bound
        bad = ("{ static int32_t long_x[40]; static float long_y[40 * 48]; memset(long_x, 0, sizeof long_x);\n"
               f"      long_x[30] = 1000; {stem}_reset(&ctx);\n"
               f"      printf(\"%d\\n\", {stem}_stream(&ctx, long_x, 40, long_y)); }}")
    (tmp_path / "main.c").write_text(LENGTHS_MAIN.format(name=stem, upper=stem.upper(), xtype=xtype, bad=bad))
    exe = tmp_path / "main"
    run([cc(), *SANITIZE, "-I", str(tmp_path), str(tmp_path / "main.c"), str(tmp_path / f"{stem}.c"), "-o",
         str(exe), "-lm"])
    lines = run([str(exe)]).stdout.split("\n")
    assert lines[:3] == ["1 1", "1 1", "0 1"]
    if xtype == "int32_t":
        assert lines[3] == "3"


def test_the_header_states_lengths_return_values_and_how_to_regenerate(tmp_path):
    stem = write("charlm", tmp_path, stream=True, dims={"T": 16})
    header = (tmp_path / f"{stem}.h").read_text()
    assert "-t c --stream --dim T=16`" in header
    assert "-t c --stream --dim T=16`" in (tmp_path / f"{stem}.c").read_text()
    assert "input  tokens: [T] (16 int32 values at the bound)" in header
    assert "values (int32 or float) of one example's input" in header
    assert "2 when a stream passes the time bound" in header and "3 when an integer input" in header
    src = "model v(x: [2, T]) {\n    a: conv1d(4, 3, dilation=2)\n    b: conv1d(1, 2)\n}\n"
    stem = write("v", tmp_path, source=src, dims={"T": 32})
    header = (tmp_path / f"{stem}.h").read_text()
    assert "T: any length from 6 to 32" in header and "-t c --dim T=32`" in header
    assert "when a stream passes" not in header and "integer input" not in header


@pytest.mark.parametrize("model", ["string", "math", "stdint", "time", "Math", "LeNet"])
def test_a_model_named_like_a_c_header_does_not_shadow_it(model, tmp_path):
    # the name as written (NAME_forward); a header's name in any case gets a `_`
    stem = write(model, tmp_path, source=f"model {model}(x: [4]) {{\n    fc: dense(2)\n}}\n")
    header = model.lower() if model != "LeNet" else "stdio"
    if model == "LeNet":
        assert stem == "LeNet" and (tmp_path / "LeNet.h").exists()
    else:
        assert stem == f"{model}_" and not (tmp_path / f"{model}.h").exists()
    (tmp_path / "main.c").write_text(f'#include <{header}.h>\n#include "{stem}.h"\nint main(void) {{\n'
                                     f'    static {stem}_ctx ctx;\n    float x[4] = {{0}}, y[2];\n'
                                     f'    {stem}_init(&ctx);\n    return {stem}_forward(&ctx, x, y);\n}}\n')
    exe = tmp_path / "main"
    run([cc(), "-std=c99", "-Wall", "-Werror", "-I", str(tmp_path), str(tmp_path / "main.c"),
         str(tmp_path / f"{stem}.c"), "-o", str(exe), "-lm"])
    run([str(exe)])
