"""Acceptance-style probes of INTERFACES.md sections 3, 4, 7, 8 and 9, written
from the contract's wording rather than from the implementation.

In:  the samples (`samples/*.nn`), their PyTorch twins (tests/torch_twins.py)
     with PyTorch's own default initialisation exported exactly as section 4
     says (`numpy.savez(path, **{k: v.numpy() ...})`), and the system C
     compiler for the generated C (a harness compiled with
     `-std=c99 -Wall -Wextra -Werror`, and AddressSanitizer/UBSan where the
     compiler has them).
Out: checks that both targets (`target` fixture) accept every real dtype and
     any memory layout, refuse other inputs with a ValueError naming the
     expected shape, hand back arrays the caller owns, load PyTorch exports
     strictly, refuse pickles and broken files with one clear error, stream
     step by step and chunk by chunk like the whole sequence, and that the
     generated NumPy module and C files work on their own.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import nnc

sys.path.insert(0, str(Path(__file__).parent))
from conftest import HAS_CC
from torch_twins import INTEGER_TWINS, TWINS, V2_TWINS

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FACTORIES = {**{k: f for k, (f, _) in TWINS.items()}, **INTEGER_TWINS, **V2_TWINS}
T = 24                              # the sequence length of whole-sequence checks
TIMED = {"wavenet", "glu_tcn", "gru", "lstm", "charlm", "transformer", "bilstm_tagger"}
SHAPES = {"mlp": (784,), "lenet": (1, 28, 28), "concat": (3, 32, 32), "unet": (1, 32, 32),
          "resnet18": (3, 224, 224), "mobilenetv2": (3, 224, 224),
          "wavenet": (1, T), "glu_tcn": (1, T), "gru": (T, 1), "lstm": (T, 8), "bilstm_tagger": (T, 32),
          "charlm": (T,), "transformer": (T,)}
VOCAB = {"charlm": 48, "transformer": 1000}
needs_cc = pytest.mark.skipif(not HAS_CC, reason="no C compiler")


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def sample(name: str) -> Path:
    return SAMPLES / f"{name}.nn"


def twin_export(torch, name: str, path: Path):
    """A twin with PyTorch's default init, saved as section 4 says; returns the twin."""
    torch.manual_seed(0)
    twin = FACTORIES[name]().eval()
    np.savez(path, **{k: v.numpy() for k, v in twin.state_dict().items()})
    return twin


def inputs(name: str, batch: int, seed: int = 1, steps: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = SHAPES[name]
    if steps is not None:
        shape = tuple(steps if d == T else d for d in shape)
    if name in VOCAB:
        return rng.integers(0, VOCAB[name], (batch, *shape))
    return rng.standard_normal((batch, *shape)).astype(np.float32)


def close(got: np.ndarray, want: np.ndarray, tol: float = 1e-4) -> bool:
    return bool(np.abs(got - want).max() <= tol * max(1.0, float(np.abs(want).max())))


def _severity(d) -> str:
    """A diagnostic's severity as text, whether it is a str or an enum of str values."""
    return getattr(d.severity, "value", d.severity)


def stack_steps(frames: list, axis: int) -> np.ndarray:
    return np.stack(frames, axis=axis)


# ============================================================ section 3: the model object

def test_lenet_has_the_documented_shapes_names_and_calls(target):
    model = nnc.build(sample("lenet"), target=target, batch=2)
    assert model.input_shapes == {"x": (1, 28, 28)}
    assert model.output_shapes == {"out": (10,)}
    x = inputs("lenet", 2)
    y = model(x)
    assert isinstance(y, np.ndarray) and y.shape == (2, 10) and y.dtype == np.float32
    assert np.array_equal(model(x=x), y)


def test_build_reads_a_path_a_dot_nn_string_or_model_text():
    text = sample("mlp").read_text()
    x = inputs("mlp", 1)
    want = nnc.build(sample("mlp"))(x)
    assert np.array_equal(nnc.build(str(sample("mlp")))(x), want)
    assert np.array_equal(nnc.build(text)(x), want)
    with pytest.raises(nnc.CompileError) as info:
        nnc.build(str(SAMPLES / "no_such_model.nn"))       # read from disk, not parsed as text
    assert "no_such_model.nn" in str(info.value)


CONVERSIONS = {
    "float64": lambda x: x.astype(np.float64),
    "int32": lambda x: np.round(x * 4).astype(np.int32),
    "int64": lambda x: np.round(x * 4).astype(np.int64),
    "uint8": lambda x: np.abs(np.round(x * 4)).astype(np.uint8),
    "bool": lambda x: x > 0,
    "float16": lambda x: x.astype(np.float16),
    "big-endian": lambda x: x.astype(">f4"),
    "fortran": np.asfortranarray,
    "strided": lambda x: np.repeat(x, 2, axis=-1)[..., ::2],
    "transposed view": lambda x: np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2),
    "list": lambda x: x.tolist(),
}


def test_every_real_dtype_and_layout_is_converted_to_float32(target):
    model = nnc.build(sample("lenet"), target=target, batch=3)
    x = inputs("lenet", 3)
    for name, convert in CONVERSIONS.items():
        given = convert(x)
        if isinstance(given, np.ndarray) and given.ndim and name in ("float64", "strided"):
            given.flags.writeable = False                           # read-only arrays too
        as_f32 = np.asarray(given).astype(np.float32)
        assert np.array_equal(model(given), model(as_f32)), name
        if isinstance(given, np.ndarray):
            assert np.array_equal(np.asarray(convert(x)), np.asarray(given)), f"{name}: the input was changed"


@pytest.mark.parametrize("dtype", [np.complex64, "U8", object])
def test_inputs_that_are_not_real_numbers_are_value_errors(target, dtype):
    model = nnc.build(sample("mlp"), target=target)
    with pytest.raises(ValueError, match="x"):
        model(np.zeros((1, 784)).astype(dtype))


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 1, 1, 28, 28), (1, 1, 28, 27), (1, 3, 28, 28), (3, 1, 28, 28)])
def test_wrong_shapes_and_batches_beyond_the_plan_name_the_expected_shape(target, shape):
    model = nnc.build(sample("lenet"), target=target, batch=2)
    with pytest.raises(ValueError, match=r"1, 28, 28"):
        model(np.zeros(shape, np.float32))


def test_a_smaller_batch_gives_each_example_its_own_answer(target):
    model = nnc.build(sample("concat"), target=target, batch=4)
    x = inputs("concat", 4)
    whole = model(x)
    for b in range(1, 4):
        assert model(x[:b]).shape == (b, 10)
        assert np.allclose(model(x[:b]), whole[:b], rtol=1e-5, atol=1e-6)
    assert np.allclose(model(x[2:3]), whole[2:3], rtol=1e-5, atol=1e-6)


def test_an_empty_batch_is_within_the_plan_and_gives_empty_outputs(target):
    """`x: array [B, *input_shape], B <= batch`: B = 0 qualifies, as in NumPy and PyTorch."""
    model = nnc.build(sample("lenet"), target=target, batch=2)
    y = model(np.zeros((0, 1, 28, 28), np.float32))
    assert y.shape == (0, 10) and y.dtype == np.float32
    out = np.empty((0, 10), np.float32)
    assert model(np.zeros((0, 1, 28, 28)), out=out) is out


def test_an_empty_batch_streams_nothing_and_keeps_the_state(target):
    model = nnc.build(sample("gru"), target=target, batch=2, stream=True, dims={"T": 8})
    x = inputs("gru", 2, steps=6)
    want = model(x)
    model.reset()
    first = model.stream(x[:, :3])
    assert model.step(x[:0, 0]).shape == (0, 1)
    assert model.stream(x[:0, :2]).shape == (0, 2, 1)
    rest = model.stream(x[:, 3:])
    assert np.allclose(np.concatenate([first, rest], axis=1), want, rtol=1e-5, atol=1e-6)


def test_batch_may_be_any_integer_type(target):
    model = nnc.build(sample("mlp"), target=target, batch=np.int64(3))
    assert model(inputs("mlp", 3)).shape == (3, 10)
    with pytest.raises(ValueError, match="batch"):
        nnc.build(sample("mlp"), target=target, batch=2.5)


def test_nan_in_one_example_stays_in_that_example(target):
    model = nnc.build(sample("lenet"), target=target, batch=3)
    x = inputs("lenet", 3)
    want = model(x)
    x[0, 0, 3, 4] = np.nan
    x[2, 0, 0, 0] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y = model(x)
    assert np.isnan(y[0]).all()
    assert np.array_equal(y[1], want[1])


def test_returned_arrays_belong_to_the_caller(target):
    model = nnc.build(sample("mlp"), target=target, batch=2)
    x = inputs("mlp", 2)
    first = model(x)
    kept = first.copy()
    second = model(-x)
    assert not np.shares_memory(first, second)
    assert np.array_equal(first, kept)                      # the next call changed nothing
    first[...] = 7.0                                        # nor does changing a result change the model
    assert np.array_equal(model(x), kept)
    assert first.flags.writeable and first.flags.c_contiguous
    out = np.zeros((2, 10), np.float32)
    assert model(x, out=out) is out and np.array_equal(out, kept)
    state = model.state_dict()
    state["dense_0.weight"][...] = 0.0
    assert np.array_equal(model(x), kept)


def test_several_inputs_by_position_or_name_and_outputs_as_a_tuple(target):
    src = ("model pair(a: [4], b: [4]) {\n    s = add(a, b) -> h1: dense(3)\n"
           "    p = mul(a, b) -> h2: dense(2) -> relu\n    return s, p\n}\n")
    model = nnc.build(src, target=target, batch=2)
    assert model.input_shapes == {"a": (4,), "b": (4,)}
    assert model.output_shapes == {"s": (3,), "p": (2,)}
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 2, 4)).astype(np.float32)
    got = model(a, b)
    assert isinstance(got, tuple) and [g.shape for g in got] == [(2, 3), (2, 2)]
    for again in (model(a=a, b=b), model(b=b, a=a), model(a, b=b)):
        assert all(np.array_equal(g, h) for g, h in zip(got, again))
    w = model.state_dict()
    np.testing.assert_allclose(got[0], (a + b) @ w["h1.weight"].T + w["h1.bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], np.maximum((a * b) @ w["h2.weight"].T + w["h2.bias"], 0), rtol=1e-5, atol=1e-6)
    outs = (np.empty((2, 3), np.float32), np.empty((2, 2), np.float32))
    assert model(a, b, out=outs) is outs and np.array_equal(outs[1], got[1])


def test_compile_errors_carry_their_diagnostics():
    with pytest.raises(nnc.CompileError) as info:
        nnc.build("model m(x: [16, 5, 5]) {\n    dense(120)\n}\n")
    d = info.value.diagnostics[0]
    assert (d.line, d.column, _severity(d)) == (2, 5, "error")
    assert d.code.startswith("E") and "dense" in d.message and d.hint and "flatten" in d.hint
    assert d.path is not None


def test_a_sequence_longer_than_its_bound_is_a_value_error(target):
    model = nnc.build(sample("wavenet"), target=target, dims={"T": 32})
    assert model(np.zeros((1, 1, 20), np.float32)).shape == (1, 1, 20)       # any length up to the bound
    with pytest.raises(ValueError, match="T"):
        model(np.zeros((1, 1, 33), np.float32))


# ============================================================ section 4: weights

SMALL = ["mlp", "lenet", "concat", "unet", "wavenet", "glu_tcn", "gru", "lstm", "bilstm_tagger", "charlm",
         "transformer"]


def _check_twin(torch, name: str, target: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.npz"
    twin = twin_export(torch, name, path)
    dims = {"T": T} if name in TIMED else None
    model = nnc.build(sample(name), target=target, batch=2, weights=path, dims=dims)
    assert sorted(model.state_dict()) == sorted(k for k in twin.state_dict() if not k.endswith("num_batches_tracked"))
    x = inputs(name, 2)
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    got = model(x)
    assert got.shape == want.shape and close(got, want), f"{name}: {np.abs(got - want).max()}"


@pytest.mark.parametrize("name", SMALL)
def test_a_pytorch_export_loads_and_computes_the_twins_function(torch, target, name, tmp_path):
    _check_twin(torch, name, target, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_torchvision_style_exports_load_and_match(torch, target, name, tmp_path):
    _check_twin(torch, name, target, tmp_path)


def test_key_problems_are_reported_together_and_leave_the_model_as_it_was(target):
    model = nnc.build(sample("lenet"), target=target)
    x = inputs("lenet", 1)
    want = model(x)
    bad = model.state_dict()
    del bad["fc1.weight"]
    bad["fc9.weight"] = np.zeros((3, 3), np.float32)
    bad["fc2.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as info:
        model.load_weights(bad)
    text = str(info.value)
    assert "fc1.weight" in text and "fc9.weight" in text and "fc2.bias" in text
    assert np.array_equal(model(x), want)


def test_num_batches_tracked_is_accepted_and_ignored():
    model = nnc.build(sample("concat"))
    state = model.state_dict()
    state["bn.num_batches_tracked"] = np.array(12, dtype=np.int64)
    model.load_weights(state)
    assert "bn.num_batches_tracked" not in model.state_dict()


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("key", ["dense_2.bias", "extra"])
def test_pickled_object_arrays_are_refused_unread(tmp_path, key):
    model = nnc.build(sample("mlp"))
    marker = tmp_path / "unpickled"
    state = model.state_dict()
    evil = np.empty(10, dtype=object)
    evil[:] = [_Evil(str(marker))] * 10
    state[key] = evil
    path = tmp_path / "evil.npz"
    np.savez(path, **state)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        model.load_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "text", "npy"])
def test_a_broken_weights_file_is_one_value_error_naming_it(tmp_path, damage):
    model = nnc.build(sample("mlp"))
    good = tmp_path / "good.npz"
    np.savez(good, **model.state_dict())
    data = good.read_bytes()
    path = tmp_path / f"broken_{damage}.npz"
    if damage == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "flipped":
        middle = len(data) // 3
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("dense_0.weight = 1\n")
    else:
        np.save(tmp_path / "one.npy", np.zeros(3, np.float32))
        (tmp_path / "one.npy").rename(path)
    with pytest.raises(ValueError) as info:
        model.load_weights(path)
    assert path.name in str(info.value) and "\n  File " not in str(info.value)
    with pytest.raises(ValueError, match=path.name):
        nnc.build(sample("mlp"), weights=path)


def test_state_dict_round_trips_through_npz_and_safetensors(target, tmp_path):
    model = nnc.build(sample("gru"), target=target, dims={"T": 8})
    x = inputs("gru", 1, steps=8)
    state = {k: (v * 0.5).astype(np.float64) for k, v in model.state_dict().items()}   # float64, as torch may hold
    model.load_weights(state)
    want = model(x)
    saved = model.state_dict()
    assert all(v.dtype == np.float32 for v in saved.values())
    np.savez(tmp_path / "w.npz", **saved)
    fresh = nnc.build(sample("gru"), target=target, dims={"T": 8}, weights=tmp_path / "w.npz")
    assert np.array_equal(fresh(x), want)
    safetensors = pytest.importorskip("safetensors.numpy")
    safetensors.save_file(saved, str(tmp_path / "w.safetensors"))
    fresh.load_weights(str(tmp_path / "w.safetensors"))
    assert np.array_equal(fresh(x), want)


def test_default_initialisation_is_seeded_and_the_same_on_both_targets():
    targets = ["numpy", "c"] if HAS_CC else ["numpy"]
    states = [nnc.build(sample("concat"), target=t).state_dict() for t in targets]
    states.append(nnc.build(sample("concat")).state_dict())
    for s in states[1:]:
        assert list(s) == list(states[0]) and all(np.array_equal(s[k], states[0][k]) for k in s)
    s = states[0]
    assert (s["bn.running_mean"] == 0).all() and (s["bn.running_var"] == 1).all()
    bound = 1 / np.sqrt(s["head.weight"].shape[1])
    assert 0.9 * bound < np.abs(s["head.weight"]).max() <= bound                   # PyTorch's uniform(+-1/sqrt(fan_in))


# ============================================================ section 7: the generated NumPy module

def _import_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"probe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compiled_numpy_module_builds_from_its_own_weights_file(torch, tmp_path):
    weights = tmp_path / "twin.npz"
    twin = twin_export(torch, "lenet", weights)
    out = tmp_path / "build"
    proc = subprocess.run([sys.executable, "-m", "nnc", "compile", str(sample("lenet")), "-t", "numpy",
                           "-o", str(out), "--weights", str(weights)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (out / "lenet.py").is_file() and (out / "lenet.npz").is_file()
    lenet = _import_file(out / "lenet.py")
    x = inputs("lenet", 3)
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    model = lenet.Model(batch=3)
    assert model.input_shapes == {"x": (1, 28, 28)} and close(model(x), want)
    again = lenet.Model(batch=3, weights=str(weights))
    assert np.array_equal(again(x), model(x))


# ============================================================ section 8: the generated C

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "NAME.h"
int main(void) {
    static float x[UNAME_INPUT_SIZE], y[UNAME_OUTPUT_SIZE], y2[UNAME_OUTPUT_SIZE];
    if (fread(x, sizeof(float), UNAME_INPUT_SIZE, stdin) != UNAME_INPUT_SIZE) return 3;
    NAME_ctx *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    if (!a || !b) return 4;
    NAME_init(a);
    NAME_init(b);
    if (NAME_forward(a, x, y) != 0 || NAME_forward(b, x, y2) != 0) return 5;
    for (int i = 0; i < UNAME_OUTPUT_SIZE; i++) if (y[i] != y2[i]) return 6;
    fwrite(y, sizeof(float), UNAME_OUTPUT_SIZE, stdout);
    free(a);
    free(b);
    return 0;
}
"""

STREAM_HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "NAME.h"
#define N UNAME_INPUT_SIZE
int main(void) {
    static float x[N], whole[N], steps[N], chunks[N];
    static const int cuts[] = {0, 1, 6, 7, 40, N};
    if (fread(x, sizeof(float), N, stdin) != N) return 3;
    NAME_ctx *c = malloc(sizeof *c);
    if (!c) return 4;
    NAME_init(c);
    if (NAME_forward(c, x, whole) != 0) return 5;
    NAME_reset(c);
    for (int i = 0; i < N; i++) if (NAME_step(c, x + i, steps + i) != 0) return 6;
    NAME_reset(c);
    for (int k = 0; k + 1 < (int)(sizeof cuts / sizeof cuts[0]); k++)
        if (NAME_stream(c, x + cuts[k], cuts[k + 1] - cuts[k], chunks + cuts[k]) != 0) return 7;
    fwrite(whole, sizeof(float), N, stdout);
    fwrite(steps, sizeof(float), N, stdout);
    fwrite(chunks, sizeof(float), N, stdout);
    free(c);
    return 0;
}
"""


def _cc() -> str:
    from nnc.compiler.codegen.cbuild import find_compiler
    return find_compiler()


def _sanitizers(cc: str, folder: Path) -> list[str]:
    """ASan + UBSan flags when this compiler links them, else none."""
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"]
    probe = folder / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    ok = subprocess.run([cc, *flags, str(probe), "-o", str(folder / "probe")], capture_output=True, check=False).returncode == 0
    return flags if ok else []


@pytest.fixture(scope="module")
def c_builds(tmp_path_factory, torch):
    """lenet (plain) and wavenet (--stream, T=64) with their twins' weights:
    generated with `nnc compile`, linked with a harness under the strict flags."""
    if not HAS_CC:
        pytest.skip("no C compiler")
    cc = _cc()
    root = tmp_path_factory.mktemp("c_probe")
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", *_sanitizers(cc, root)]
    built = {}
    for name, extra, harness in [("lenet", [], HARNESS), ("wavenet", ["--stream", "--dim", "T=64"], STREAM_HARNESS)]:
        weights = root / f"{name}.npz"
        twin = twin_export(torch, name, weights)
        out = root / name
        proc = subprocess.run([sys.executable, "-m", "nnc", "compile", str(sample(name)), "-t", "c", "-o", str(out),
                               "--weights", str(weights), *extra], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        (out / "main.c").write_text(harness.replace("UNAME", name.upper()).replace("NAME", name))
        exe = out / "run"
        proc = subprocess.run([cc, *flags, f"-I{out}", str(out / f"{name}.c"), str(out / "main.c"), "-lm",
                               "-o", str(exe)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        built[name] = (exe, twin, out)
    return built


def _run(exe: Path, x: np.ndarray) -> np.ndarray:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")
    proc = subprocess.run([str(exe)], input=np.ascontiguousarray(x, np.float32).tobytes(), capture_output=True,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return np.frombuffer(proc.stdout, np.float32)


@needs_cc
def test_generated_c_compiles_strictly_and_computes_the_twin(c_builds, torch):
    exe, twin, _ = c_builds["lenet"]
    x = inputs("lenet", 1)
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()[0]
    assert close(_run(exe, x), want)


@needs_cc
def test_generated_c_streams_like_its_whole_sequence_and_the_twin(c_builds, torch):
    exe, twin, _ = c_builds["wavenet"]
    x = inputs("wavenet", 1, steps=64)
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy().reshape(-1)
    whole, steps, chunks = _run(exe, x).reshape(3, 64)
    assert close(whole, want)
    np.testing.assert_allclose(steps, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunks, whole, rtol=1e-5, atol=1e-6)


@needs_cc
@pytest.mark.skipif(shutil.which("nm") is None, reason="no nm")
def test_generated_c_has_no_mutable_globals(c_builds):
    for name in ("lenet", "wavenet"):
        _, _, out = c_builds[name]
        obj = out / f"{name}.o"
        subprocess.run([_cc(), "-std=c99", "-O1", "-c", str(out / f"{name}.c"), "-o", str(obj)], check=True)
        symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout.split("\n")
        writable = [s for s in symbols if len(s.split()) == 3 and s.split()[1] in "BbDdCGgSs"]
        assert writable == [], name


# ============================================================ section 9: streaming

STREAMING = {"wavenet": 2, "glu_tcn": 2, "gru": 1, "lstm": 1, "charlm": 1}   # sample -> time axis with batch


@pytest.mark.parametrize("name", sorted(STREAMING))
def test_every_streaming_sample_steps_and_chunks_like_its_whole_sequence(torch, target, name, tmp_path):
    axis = STREAMING[name]
    steps = 16 if name == "charlm" else 40            # charlm's key/value cache holds its bound: 16 steps
    path = tmp_path / "w.npz"
    twin = twin_export(torch, name, path)
    model = nnc.build(sample(name), target=target, batch=2, stream=True, dims={"T": 16}, weights=path)
    x = inputs(name, 2, steps=steps)
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    whole = model(x)
    assert close(whole, want)
    model.reset()
    stepped = stack_steps([model.step(np.take(x, i, axis=axis)) for i in range(steps)], axis)
    np.testing.assert_allclose(stepped, whole, rtol=1e-5, atol=1e-5)
    model.reset()
    cuts = [0, 1, 5, 6, 16] if name == "charlm" else [0, 1, 5, 6, 33, 40]       # one chunk longer than the bound
    chunked = np.concatenate([model.stream(np.take(x, range(a, b), axis=axis)) for a, b in itertools.pairwise(cuts)],
                             axis=axis)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)
    model.reset()                                     # a reset forgets everything: the same answers again
    again = stack_steps([model.step(np.take(x, i, axis=axis)) for i in range(3)], axis)
    np.testing.assert_allclose(again, np.take(whole, range(3), axis=axis), rtol=1e-5, atol=1e-5)


def test_audio_buffers_of_32_to_512_samples_stream_with_the_default_bound(target):
    model = nnc.build(sample("wavenet"), target=target, stream=True)
    reference = nnc.build(sample("wavenet"), dims={"T": 1500})
    reference.load_weights(model.state_dict())
    x = np.random.default_rng(3).standard_normal((1, 1, 1500)).astype(np.float32)
    want = reference(x)
    cuts = [0, 32, 544, 600, 1000, 1500]
    got = np.concatenate([model.stream(x[:, :, a:b]) for a, b in itertools.pairwise(cuts)], axis=2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_valid_convolutions_stream_from_a_full_receptive_field(target):
    src = "model v(x: [2, T]) {\n    a: conv1d(4, 3) -> relu\n    b: conv1d(3, 2, dilation=2)\n}\n"
    model = nnc.build(src, target=target, stream=True, dims={"T": 16}, batch=2)
    whole = nnc.build(src, target=target, dims={"T": 30}, batch=2)
    whole.load_weights(model.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 2, 30)).astype(np.float32)
    want = whole(x)                                   # [2, 3, 26]: the receptive field is 5 steps
    got = np.stack([model.step(x[:, :, i]) for i in range(30)], axis=-1)
    np.testing.assert_allclose(got[..., 4:], want, rtol=1e-5, atol=1e-5)
    model.reset()
    chunks = [model.stream(x[:, :, a:b]) for a, b in itertools.pairwise([0, 3, 20, 30])]   # [B, C, n] chunks
    np.testing.assert_allclose(np.concatenate(chunks, axis=-1)[..., 4:], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,layer", [("bilstm_tagger", "`rnn`"), ("transformer", "`layers.0.self_attn`")])
def test_samples_that_cannot_stream_are_refused_naming_the_layer(name, layer):
    with pytest.raises(nnc.CompileError) as info:
        nnc.build(sample(name), stream=True, dims={"T": 16})
    assert any(layer in d.message and _severity(d) == "error" for d in info.value.diagnostics)


@pytest.mark.parametrize("src,layer", [
    ("model m(x: [1, T]) {\n    c: conv1d(4, 3, padding=same)\n}\n", "`c`"),
    ("model m(x: [2, T]) {\n    p: maxpool1d(2)\n}\n", "`p`"),
    ("model m(x: [2, T]) {\n    s: softmax\n}\n", "`s`"),
])
def test_layers_that_see_the_future_or_merge_steps_are_refused(src, layer):
    with pytest.raises(nnc.CompileError) as info:
        nnc.build(src, stream=True, dims={"T": 16})
    assert layer in info.value.diagnostics[0].message


def test_a_model_without_a_time_dimension_cannot_stream():
    with pytest.raises(nnc.CompileError) as info:
        nnc.build(sample("lenet"), stream=True)
    assert _severity(info.value.diagnostics[0]) == "error"


def test_streaming_methods_need_a_streaming_plan(target):
    model = nnc.build(sample("gru"), target=target, dims={"T": 8})
    for call in (lambda: model.step(np.zeros((1, 1))), lambda: model.stream(np.zeros((1, 2, 1))), model.reset):
        with pytest.raises((TypeError, ValueError), match="stream"):
            call()


def test_a_step_past_the_key_value_cache_says_to_reset(target):
    model = nnc.build(sample("charlm"), target=target, stream=True, dims={"T": 8})
    tokens = inputs("charlm", 1, steps=9)
    for i in range(8):
        model.step(tokens[:, i])
    with pytest.raises(ValueError, match=r"reset\(\)"):
        model.step(tokens[:, 8])
    model.reset()
    assert model.step(tokens[:, 8]).shape == (1, 48)


def test_steps_take_frames_and_chunks_take_the_input_layout(target):
    model = nnc.build(sample("wavenet"), target=target, stream=True, dims={"T": 16}, batch=2)
    assert model.step(np.zeros((2, 1), np.float32)).shape == (2, 1)
    assert model.stream(np.zeros((2, 1, 5), np.float32)).shape == (2, 1, 5)
    with pytest.raises(ValueError):
        model.step(np.zeros((3, 1), np.float32))                # beyond the planned batch
    model.reset()
    with pytest.raises(ValueError):
        model.step(np.zeros((2, 2), np.float32))                # a frame of the wrong width


@pytest.mark.parametrize("target_", [
    "numpy",
    pytest.param("c", marks=needs_cc),
])
def test_an_infinite_input_to_a_gru_gives_pytorchs_answer(torch, target_, tmp_path):
    path = tmp_path / "w.npz"
    twin = twin_export(torch, "gru", path)
    model = nnc.build(sample("gru"), target=target_, dims={"T": 8}, weights=path)
    x = np.zeros((1, 8, 1), np.float32)
    x[0, 0, 0] = np.inf
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = model(x)
    assert np.isfinite(want).all() and np.isfinite(got).all() and close(got, want)
