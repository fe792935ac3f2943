"""The Python API under misuse (issue 9, items 1, 3, 6, 8, 9, 10, 11): hostile
strings never run as code, any dimension name makes a working NumPy module,
returned arrays belong to the caller and `out=` fills the caller's arrays
without allocating, inputs that alias the arena give the right numbers, a
shared model is safe across threads, a compiled module without its weights
file says so, and the streaming API's edges (`step` of a chunk, extra
arguments, inputs named like the API's own parameters, zero steps)."""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnc
from nnc.compiler.build import compile_plan
from nnc.compiler.codegen.names import py_comment, py_doc, py_literal
from nnc.compiler.diagnostics import UserError
from nnc.runtime.module import WeightsFileMissing

ROOT = Path(__file__).resolve().parent.parent

MLP = "model tiny(x: [4]) {\n    fc: dense(8) -> tanh\n    out: dense(3)\n}\n"
TWO = "model two(x: [4]) {\n    a = dense(3)\n    b = x -> dense(2)\n    return a, b\n}\n"
WIDE_STREAM = "model wide(x: [8, T]) {\n    conv1d(8192, 1)\n}\n"


def load_file_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def allocation(fn, calls: int = 100, warm: int = 100) -> tuple[float, float]:
    """(median peak bytes of one call, bytes kept per call) after a warm-up."""
    for _ in range(warm):
        fn()
    peaks = [0] * calls
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for i in range(calls):
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        peaks[i] = tracemalloc.get_traced_memory()[1] - before
    kept = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    return statistics.median(peaks), kept / calls


# ------------------------------------------------------------------ item 1: escaping

HOSTILE_NAMES = [
    'm"""; import os; os.system("touch PWNED"); """x.nn',
    "m'''; import os; os.system('touch PWNED'); '''x.nn",
    "line\nbreak\rreturn.nn",
    "back\\slash\\N{BULLET}\\x41\\u0041\\.nn",
    "caf\u00e9 \u2028 \U0001f600 \u202e.nn",
    'ends with a backslash\\.nn',
    '"\\".nn',
]


@pytest.mark.parametrize("fname", HOSTILE_NAMES)
def test_hostile_model_path_never_runs_as_code(tmp_path, monkeypatch, fname):
    monkeypatch.chdir(tmp_path)
    try:
        path = tmp_path / fname
        path.write_text(MLP)
    except (OSError, UnicodeEncodeError):
        pytest.skip("the file system refuses this name")
    model = nnc.build(path)                                   # load_module executes the text
    assert model(np.ones((1, 4))).shape == (1, 3)
    (text,) = compile_plan(path).files.values()
    compile(text, "generated.py", "exec")
    assert text.isascii()
    out = tmp_path / "build"
    proc = subprocess.run([sys.executable, "-m", "nnc", "compile", str(path), "-t", "numpy", "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    module = load_file_module(out / "tiny.py")
    assert str(path) in module.__doc__                        # the docstring reads back as the path
    assert module.Model()(np.ones((1, 4))).shape == (1, 3)
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()


@pytest.mark.parametrize("model_name,label", [
    ("None", "lambda"), ("self", "v.K"), ("lambda", "np.s"), ("print", "batch.dims"), ("nnc_x", "x.out"),
])
def test_hostile_model_names_and_labels_through_the_api(model_name, label):
    src = f"model {model_name}(x: [4]) {{\n    {label}: dense(3) -> relu\n    last: dense(2)\n}}\n"
    model = nnc.build(src)
    assert model(np.ones((2, 4))[:1]).shape == (1, 2)
    assert list(model.state_dict()) == [f"{label}.weight", f"{label}.bias", "last.weight", "last.bias"]


FRAGMENTS = ['"""', "'''", "\\", "\n", "\r", "\x00", "\\N{", "\udc80", "\u2028", "\x85", "\x0c", "#"]
TEXT = st.lists(st.text(max_size=6) | st.sampled_from(FRAGMENTS), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_python_escapes_keep_any_text_inert(text):
    assert eval(py_literal(text)) == text
    doc = compile(f'"""{py_doc(text)}"""\nx = 1\n', "t", "exec")
    namespace: dict = {}
    exec(doc, namespace)
    assert namespace["x"] == 1
    assert eval(f'"""{py_doc(text)}"""') == text
    comment = py_comment(text)
    assert comment.isascii() and comment.isprintable()
    exec(f"y = 2  # {comment}\nz = 3\n", namespace)
    assert namespace["z"] == 3


def test_python_literals_of_numbers_and_containers():
    value = {"a": (1, 2.5, float("inf"), -float("inf")), "b": [None, True], "c": {}}
    assert eval(py_literal(value)) == value
    assert np.isnan(eval(py_literal(float("nan"))))


# ------------------------------------------------------------------ item 3: dimension names

DIM_NAMES = st.sampled_from([
    "lambda", "self", "batch", "v", "K", "np", "s", "None", "True", "dims", "os", "x", "T", "Model", "Spec",
    "fold_norm", "super", "_", "__", "print", "int", "out", "args", "def", "class", "ctx", "memcpy", "size_t",
]) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda s: s not in {"model", "block", "return", "true", "false", "same", "valid", "causal"})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=DIM_NAMES, other=DIM_NAMES)
def test_any_dimension_name_makes_a_module_that_runs(name, other):
    if other == name:
        other = other + "_2"
    src = (f"model m(x: [2, {name}=8], y: [2, {other}=6]) {{\n    a = x -> conv1d(3, 3) -> relu\n"
           f"    b = y -> conv1d(3, 2, stride=2)\n    return a, b\n}}\n")
    model = nnc.build(src)
    assert model.DIMS == {name: 8, other: 6}
    assert model.input_shapes == {"x": (2, name), "y": (2, other)}
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((1, 2, 7)), rng.standard_normal((1, 2, 5))
    a, b = model(x, y)
    assert a.shape == (1, 3, 5) and b.shape == (1, 3, 2)
    reference = nnc.build(src.replace(f"{name}=8", "P=8").replace(f"{other}=6", "Q=6"))
    reference.load_weights(model.state_dict())
    ra, rb = reference(x, y)
    np.testing.assert_array_equal(a, ra)
    np.testing.assert_array_equal(b, rb)
    out = (np.empty((1, 3, 5), np.float32), np.empty((1, 3, 2), np.float32))
    assert model(x, y, out=out) is out                        # output sizes evaluated at the real names
    np.testing.assert_array_equal(out[1], b)
    with pytest.raises(ValueError, match=rf"\b{name}=9\b"):       # errors name the real dimension
        model(rng.standard_normal((1, 2, 9)), y)


# ------------------------------------------------------------------ item 8: outputs belong to the caller

def test_returned_arrays_are_not_changed_by_the_next_call(target):
    model = nnc.build(MLP, target=target)
    x1, x2 = np.ones((1, 4)), -np.ones((1, 4))
    y1 = model(x1)
    kept = y1.copy()
    y2 = model(x2)
    np.testing.assert_array_equal(y1, kept)
    assert not np.shares_memory(y1, y2) and not np.array_equal(y1, y2)


def test_a_list_of_step_results_holds_every_step(target):
    model = nnc.build(ROOT / "samples" / "gru.nn", target=target, stream=True)
    x = np.random.default_rng(4).standard_normal((200, 1, 1)).astype(np.float32)
    steps = [model.step(frame) for frame in x]
    whole = nnc.build(ROOT / "samples" / "gru.nn", target=target, dims={"T": 200})(x.transpose(1, 0, 2))
    np.testing.assert_allclose(np.stack(steps, axis=1)[:, :, 0], whole[:, :, 0], rtol=1e-4, atol=1e-5)
    assert len({s.tobytes() for s in steps}) == 200


def test_short_stream_chunks_come_back_as_fresh_arrays(target):
    model = nnc.build(ROOT / "samples" / "wavenet.nn", target=target, stream=True, dims={"T": 64})
    rng = np.random.default_rng(5)
    a = model.stream(rng.standard_normal((1, 1, 16)))
    kept = a.copy()
    b = model.stream(rng.standard_normal((1, 1, 16)))
    np.testing.assert_array_equal(a, kept)
    assert not np.shares_memory(a, b)


def test_out_is_filled_and_returned(target):
    model = nnc.build(TWO, target=target, batch=2)
    x = np.random.default_rng(6).standard_normal((2, 4))
    a, b = model(x)
    out = (np.empty((2, 3), np.float32), np.empty((2, 2), np.float32))
    assert model(x, out=out) is out
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_array_equal(out[1], b)
    single = nnc.build(MLP, target=target)
    y = np.empty((1, 3), np.float32)
    assert single(np.ones((1, 4)), out=y) is y
    np.testing.assert_array_equal(y, single(np.ones((1, 4))))


@pytest.mark.parametrize("bad,why", [
    (np.empty((1, 4), np.float32), "shape"),
    (np.empty((1, 3), np.float64), "dtype"),
    (np.empty((1, 6), np.float32)[:, ::2], "C-contiguous"),
    (np.broadcast_to(np.float32(0), (1, 3)), "read-only|C-contiguous"),
    ([1.0, 2.0, 3.0], "list|ndarray|array"),
    ((np.empty((1, 3), np.float32), np.empty((1, 3), np.float32)), "one array"),
])
def test_bad_out_is_a_clear_value_error(target, bad, why):
    model = nnc.build(MLP, target=target)
    with pytest.raises(ValueError, match=why):
        model(np.ones((1, 4)), out=bad)


def test_out_arrays_for_several_outputs_are_checked(target):
    model = nnc.build(TWO, target=target)
    with pytest.raises(ValueError, match="2 arrays"):
        model(np.ones((1, 4)), out=np.empty((1, 3), np.float32))
    shared = np.empty((1, 5), np.float32)
    with pytest.raises(ValueError, match="share memory"):
        model(np.ones((1, 4)), out=(shared[:, :3], shared[:, 1:3]))


def test_a_failed_out_check_leaves_the_stream_state_alone(target):
    model = nnc.build(ROOT / "samples" / "gru.nn", target=target, stream=True)
    frame = np.ones((1, 1), np.float32)
    first = model.step(frame)
    model.reset()
    with pytest.raises(ValueError):
        model.step(frame, out=np.empty((1, 7), np.float32))
    np.testing.assert_array_equal(model.step(frame), first)


def test_calls_with_out_allocate_nothing(target):
    src = "model r(x: [16384]) {\n    s = dense(4) -> relu\n    y = x -> tanh\n    return y, s\n}\n"
    model = nnc.build(src, target=target)
    x = np.ones((1, 16384), np.float32)
    out = (np.empty((1, 16384), np.float32), np.empty((1, 4), np.float32))    # 64 KiB and 16 bytes
    peak, kept = allocation(lambda: model(x, out=out))
    assert peak < 16 * 1024 and kept < 300
    assert model(x, out=out) is out
    fresh_peak, _ = allocation(lambda: model(x), calls=20, warm=5)
    assert fresh_peak >= 64 * 1024                            # the bound can tell a copy apart


def test_step_and_stream_with_out_allocate_nothing(target):
    model = nnc.build(WIDE_STREAM, target=target, stream=True, batch=2, dims={"T": 4})
    frame = np.ones((2, 8), np.float32)
    y = np.empty((2, 8192), np.float32)                       # 64 KiB a step
    peak, kept = allocation(lambda: model.step(frame, out=y), calls=200)
    assert peak < 32 * 1024 and kept < 300
    assert model.step(frame, out=y) is y
    chunk = np.ones((2, 8, 4), np.float32)
    ys = np.empty((2, 8192, 4), np.float32)                   # 256 KiB a chunk
    peak, kept = allocation(lambda: model.stream(chunk, out=ys), calls=100)
    assert peak < 64 * 1024 and kept < 300
    fresh_peak, _ = allocation(lambda: model.step(frame), calls=20, warm=5)
    assert fresh_peak >= 64 * 1024


def test_long_stream_with_out_matches_the_whole_sequence(target):
    path = ROOT / "samples" / "wavenet.nn"
    model = nnc.build(path, target=target, stream=True, dims={"T": 16})
    x = np.random.default_rng(7).standard_normal((1, 1, 70)).astype(np.float32)
    whole = nnc.build(path, target=target, dims={"T": 70})(x)
    y = np.empty((1, 1, 70), np.float32)
    assert model(x, out=y) is y                               # whole sequence from a fresh state, in pieces
    np.testing.assert_allclose(y, whole, rtol=1e-4, atol=1e-5)
    model.reset()
    assert model.stream(x, out=x) is x                        # the output overwrites its own input
    np.testing.assert_allclose(x, whole, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ item 9: aliasing

SKIP = "model skip(x: [16]) {\n    h = dense(16) -> relu\n    a = h -> dense(16)\n    return add(a, x)\n}\n"


def test_an_input_inside_the_arena_gives_the_right_numbers():
    model = nnc.build(SKIP)
    x = np.random.default_rng(8).standard_normal((1, 16)).astype(np.float32)
    expected = np.array(model(x.copy()))
    for start in range(0, model._arena.size - 16 + 1, 4):
        inside = model._arena[start:start + 16].reshape(1, 16)    # what old calls returned
        inside[...] = x
        np.testing.assert_allclose(model(inside), expected, rtol=1e-6)


def test_feeding_outputs_back_gives_the_right_numbers(target):
    model = nnc.build(SKIP, target=target)
    x = np.random.default_rng(9).standard_normal((1, 16)).astype(np.float32)
    y = model(x)
    twice = model(y)
    np.testing.assert_allclose(twice, nnc.build(SKIP, target=target)(y.copy()), rtol=1e-6)
    z = x.copy()
    assert model(z, out=z) is z                               # input and output in one array
    np.testing.assert_allclose(z, y, rtol=1e-6)


# ------------------------------------------------------------------ item 6: threads

def _hammer(model, inputs, expected, calls: int) -> list[str]:
    errors: list[str] = []
    barrier = threading.Barrier(len(inputs))

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(calls):
            y = model(inputs[i])
            if not np.allclose(y, expected[i], rtol=1e-5, atol=1e-6):
                errors.append(f"thread {i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_one_model_shared_by_eight_threads_gives_every_thread_its_answer(target):
    src = "model big(x: [64]) {\n    dense(256) -> tanh\n    dense(256) -> tanh\n    dense(8)\n}\n"
    model = nnc.build(src, target=target, batch=4)
    other = nnc.build(src, target="numpy", batch=4)
    rng = np.random.default_rng(10)
    inputs = [rng.standard_normal((4, 64)).astype(np.float32) for _ in range(8)]
    expected = [np.array(other(x)) for x in inputs]
    assert not _hammer(model, inputs, expected, 150)


def test_a_shared_streaming_model_never_mixes_signals_within_a_call(target):
    model = nnc.build(ROOT / "samples" / "wavenet.nn", target=target, stream=True, dims={"T": 16})
    other = nnc.build(ROOT / "samples" / "wavenet.nn", target="numpy", dims={"T": 40})
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal((1, 1, 40)).astype(np.float32) for _ in range(8)]
    expected = [np.array(other(x)) for x in inputs]
    assert not _hammer(model, inputs, expected, 40)


def test_load_weights_and_state_dict_hold_the_lock(target):
    model = nnc.build(MLP, target=target)
    state = model.state_dict()
    with model._lock:
        done = threading.Event()
        t = threading.Thread(target=lambda: (model.load_weights(state), done.set()))
        t.start()
        assert not done.wait(0.2)                             # waits for the call in progress
    t.join()
    assert done.is_set()


# ------------------------------------------------------------------ item 10: the weights file

def test_compiled_module_without_its_weights_file_names_it(tmp_path):
    out = tmp_path / "build"
    proc = subprocess.run([sys.executable, "-m", "nnc", "compile", str(ROOT / "samples" / "mlp.nn"),
                           "-t", "numpy", "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    weights = out / "mlp.npz"
    assert weights.exists()                                   # compile always writes it
    module = load_file_module(out / "mlp.py")
    stored = module.Model().state_dict()
    weights.unlink()
    with pytest.raises(WeightsFileMissing) as info:
        module.Model()
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, UserError)
    assert str(weights) in str(info.value) and 'init="default"' in str(info.value)
    assert info.value.filename == str(weights)
    default = module.Model(init="default")                    # asked for: seeded default weights
    assert set(default.state_dict()) == set(stored)
    given = module.Model(weights=stored)
    np.testing.assert_array_equal(given.state_dict()["dense_0.weight"], stored["dense_0.weight"])
    with pytest.raises(ValueError, match="init"):
        module.Model(init="random")
    with pytest.raises(ValueError, match="not both"):
        module.Model(weights=stored, init="default")


# ------------------------------------------------------------------ item 11: the streaming API's edges

def test_step_refuses_a_chunk_and_points_to_stream(target):
    model = nnc.build(ROOT / "samples" / "wavenet.nn", target=target, stream=True)
    with pytest.raises(ValueError, match="stream"):
        model.step(np.zeros((1, 1, 5), np.float32))
    with pytest.raises(ValueError, match="stream"):
        model.step(np.zeros((1, 1, 1), np.float32))


def test_step_errors_show_the_frame_shape(target):
    model = nnc.build(ROOT / "samples" / "gru.nn", target=target, stream=True, batch=2)
    with pytest.raises(ValueError) as info:
        model.step(np.zeros((1, 3), np.float32))
    assert "[B, 1]" in str(info.value) and "T" not in str(info.value).split("got")[0]
    with pytest.raises(ValueError, match=r"batch 3"):
        model.step(np.zeros((3, 1), np.float32))


def test_streaming_models_refuse_extra_positional_inputs(target):
    model = nnc.build(ROOT / "samples" / "gru.nn", target=target, stream=True)
    frame = np.zeros((1, 1), np.float32)
    with pytest.raises(TypeError, match="takes 1 input"):
        model.step(frame, frame)
    with pytest.raises(TypeError, match="takes 1 input"):
        model.stream(frame[:, None], frame[:, None])
    with pytest.raises(TypeError, match="takes 1 input"):
        model(frame[:, None], frame[:, None])
    with pytest.raises(TypeError, match="no input `y`"):
        model.step(y=frame)


def test_streaming_numpy_module_is_named_after_the_model():
    plan = compile_plan(ROOT / "samples" / "wavenet.nn", stream=True, dims={"T": 16})
    (text,) = plan.files.values()
    assert text.startswith('"""wavenet: ')
    assert "NAME = 'wavenet'" in text
    model = nnc.build(ROOT / "samples" / "wavenet.nn", stream=True)
    assert model.NAME == "wavenet"


PARAM_NAMES = "model m(self: [4], out: [4], args: [4]) {\n    a = self -> relu\n    b = out -> tanh\n" \
              "    c = args -> sigmoid\n    return concat(a, b, c, axis=0)\n}\n"


def test_inputs_named_like_the_api_parameters_are_passed_by_keyword(target):
    model = nnc.build(PARAM_NAMES, target=target)
    x = np.linspace(-1, 1, 4, dtype=np.float32)[None]
    y = model(self=x, out=x + 1, args=x + 2)
    np.testing.assert_allclose(y, model(x, x + 1, x + 2))
    np.testing.assert_allclose(y[0, 4:8], np.tanh(x[0] + 1), rtol=1e-6)
    dest = np.empty((1, 12), np.float32)
    assert model(self=x, out=x + 1, args=x + 2, out_=dest) is dest   # `out` is an input here: `out_=`
    np.testing.assert_array_equal(dest, y)


def test_stream_of_zero_steps_returns_empty_outputs(target):
    model = nnc.build(ROOT / "samples" / "wavenet.nn", target=target, stream=True)
    y = model.stream(np.zeros((1, 1, 0), np.float32))
    assert y.shape == (1, 1, 0) and y.dtype == np.float32
    lstm = nnc.build(ROOT / "samples" / "lstm.nn", target=target, stream=True, batch=2)
    empty = lstm.stream(np.zeros((2, 0, 8), np.float32))
    assert empty.shape == (2, 0, 4)
    dest = np.empty((2, 0, 4), np.float32)
    assert lstm.stream(np.zeros((2, 0, 8)), out=dest) is dest


def test_a_batch_past_the_arena_limit_is_a_value_error_before_allocating(tmp_path):
    """Model(batch=10**12) of a generated module raised MemoryError while
    allocating the inputs' staging; it is refused against the limit the plan
    was compiled with, as `nnc compile` refuses such a batch (E0208)."""
    src = "model m(x: [4]) {\n    dense(3)\n}\n"
    model = nnc.build(src)
    with pytest.raises(ValueError, match="more than the limit"):
        type(model)(batch=10**12)
    assert type(model)(batch=1000).batch == 1000
    small = nnc.build(src, limits={"arena": 1024})
    with pytest.raises(ValueError, match="limit of 1,024"):
        type(small)(batch=100)
    trainer = nnc.train(src, optimizer=nnc.SGD(0.1), batch=4)
    with pytest.raises(ValueError, match="larger than the planned batch 4"):
        type(trainer)(nnc.SGD(0.1), batch=10**12)
