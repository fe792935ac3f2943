"""Streaming plans: step by step, chunk by chunk and whole-sequence runs agree,
state is carried and reset, and a model that cannot stream is told which
layer breaks it."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnc

from conftest import TARGETS

ROOT = Path(__file__).resolve().parent.parent


def offline(src: str, x: np.ndarray, target: str) -> np.ndarray:
    model = nnc.build(src, target=target, batch=x.shape[0], dims={"T": x.shape[2 if x.ndim == 3 else 1]})
    return np.array(model(x))


@pytest.mark.parametrize("name,axis", [("wavenet", 2), ("gru", 1), ("lstm", 1)])
def test_sample_streams_like_the_whole_sequence(name, axis, target):
    path = ROOT / "samples" / f"{name}.nn"
    stream = nnc.build(path, target=target, batch=2, stream=True, dims={"T": 32})
    shape = stream.input_shapes["x"]
    n = 70
    full_shape = [2] + [n if d == "T" else d for d in shape]
    x = np.random.default_rng(3).standard_normal(full_shape).astype(np.float32)
    whole = nnc.build(path, target=target, batch=2, dims={"T": n})(x).copy()
    stream.reset()
    steps = np.stack([np.array(stream.step(np.take(x, t, axis=axis))) for t in range(n)], axis=axis)
    np.testing.assert_allclose(steps, whole, rtol=1e-4, atol=1e-5)
    stream.reset()
    pieces = [np.array(stream.stream(np.take(x, range(a, b), axis=axis))) for a, b in [(0, 1), (1, 33), (33, 70)]]
    np.testing.assert_allclose(np.concatenate(pieces, axis=axis), whole, rtol=1e-4, atol=1e-5)


def test_reset_clears_the_carried_state(target):
    model = nnc.build(ROOT / "samples" / "gru.nn", target=target, stream=True)
    frame = np.ones((1, 1), np.float32)
    first = np.array(model.step(frame))
    second = np.array(model.step(frame))
    assert not np.allclose(first, second)          # the state moved on
    model.reset()
    np.testing.assert_array_equal(np.array(model.step(frame)), first)


@pytest.mark.parametrize("source", [ROOT / "samples" / "gru.nn", "VALID"])
def test_a_whole_call_leaves_the_stream_as_it_was(target, source):
    """A whole call is a forward pass, not part of the stream (INTERFACES.md 9: steps carry state across
    calls, reset clears it): steps after it start fresh, and a stream it interrupts goes on. It left the
    state at the end of its input (steps after `model(x)` were off by 0.03)."""
    src = VALID if source == "VALID" else source
    model = nnc.build(src, target=target, batch=2, stream=True, dims={"T": 16})
    channels = model.input_shapes["x"][0] if source == "VALID" else None
    x = np.random.default_rng(4).standard_normal((2, channels, 20) if channels else (2, 20, 1)).astype(np.float32)
    frame = (lambda t: x[:, :, t]) if channels else (lambda t: x[:, t])
    model(x)                                                  # first of all: the steps still start fresh
    steps = [np.array(model.step(frame(t))) for t in range(20)]
    model.reset()
    first = [np.array(model.step(frame(t))) for t in range(9)]
    model(x[:1])                                              # another batch, mid-stream, in pieces (20 > 16)
    model(x, out=model(x))
    rest = [np.array(model.step(frame(t))) for t in range(9, 20)]
    np.testing.assert_array_equal(np.stack(first + rest), np.stack(steps))


def test_step_returns_fresh_arrays_and_fills_out_without_allocating(target):
    model = nnc.build(ROOT / "samples" / "wavenet.nn", target=target, stream=True)
    frame = np.zeros((1, 1), np.float32)
    a = model.step(frame)
    b = model.step(frame)
    assert not np.shares_memory(a, b)          # each call's result belongs to the caller
    y = np.empty((1, 1), np.float32)
    for _ in range(300):                       # warm up: view caches, NumPy's own caches
        model.step(frame, out=y)
    peaks = [0] * 300
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for i in range(300):
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        assert model.step(frame, out=y) is y
        peaks[i] = tracemalloc.get_traced_memory()[1] - before
    kept = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    assert kept / 300 < 300                    # bytes kept per call
    assert sorted(peaks)[150] < 16 * 1024      # a call's temporaries: small Python objects only


VALID = "model v(x: [3, T]) {\n    c: conv1d(8, 5) -> relu\n    c2: conv1d(4, 3, dilation=2)\n}\n"


LATE = {   # a layer with history or state after valid convolutions: its input starts late
    "causal": "model a(x: [2, T]) {\n    v: conv1d(4, 3) -> tanh\n    c: conv1d(3, 3, padding=causal)\n}\n",
    "gru": "model b(x: [2, T]) {\n    v: conv1d(4, 3) -> tanh\n    transpose((1, 0))\n    r: gru(5)\n    d: dense(2)\n}\n",
    "dense": "model c(x: [2, T]) {\n    v: conv1d(4, 3)\n    transpose((1, 0))\n    d: dense(3) -> sigmoid\n"
             "    transpose((1, 0))\n    c: conv1d(3, 2, dilation=2, padding=causal)\n    c2: conv1d(2, 2)\n}\n",
    "attention": "model p(x: [2, T]) {\n    v: conv1d(8, 3)\n    transpose((1, 0))\n    pos: positional(64)\n"
                 "    att: attention(2, causal=true)\n    d: dense(2)\n}\n",
    # a causal pad after the valid convolution: its first steps are the offline pad's zeros, not copies of
    # the warm-up (a gru or attention after it never rejoined the offline output)
    "pad_gru": "model q(x: [2, T]) {\n    v: conv1d(4, 3)\n    p: pad((2, 0))\n    transpose((1, 0))\n"
               "    r: gru(3)\n}\n",
    "pad_valid": "model q(x: [2, T]) {\n    v: conv1d(3, 3)\n    p: pad((1, 0))\n    c: conv1d(2, 2, dilation=2)\n}\n",
    "pad_residual": "model q(x: [2, T]) {\n    a = x -> v: conv1d(2, 5) -> p: pad((4, 0))\n    add(a, x)\n"
                    "    c: conv1d(2, 3, padding=causal)\n}\n",
}


@pytest.mark.parametrize("name", sorted(LATE))
def test_a_layer_with_state_after_a_valid_convolution_starts_where_the_offline_pass_does(target, name):
    """INTERFACES.md 9: steps, chunks and whole calls equal the whole-sequence pass from the step where
    the valid convolutions' field is full. The offline pass starts a causal convolution after them on
    zeros, a recurrent layer on a zero state and a position count at 0; the stream ran them through
    the warm-up steps, and its first kept steps were off by up to 0.34."""
    src = LATE[name]
    stream = nnc.build(src, target=target, batch=2, stream=True, dims={"T": 16 if name != "attention" else 40})
    whole = nnc.build(src, target=target, batch=2, dims={"T": 40})
    whole.load_weights(stream.state_dict())
    x = np.random.default_rng(1).standard_normal((2, 2, 40)).astype(np.float32)
    want = whole(x)
    axis = 1 + stream.TIME_AXES["out"]
    late = 40 - want.shape[axis]
    np.testing.assert_allclose(stream(x), want, rtol=1e-4, atol=1e-5)
    stream.reset()
    steps = np.stack([stream.step(x[:, :, t]) for t in range(40)], axis=axis)
    np.testing.assert_allclose(np.take(steps, range(late, 40), axis=axis), want, rtol=1e-4, atol=1e-5)
    for cuts in ([0, 1, 3, 20, 40], [0, 40], [0, late, late + 1, 40]):
        stream.reset()
        pieces = np.concatenate([stream.stream(x[:, :, a:b]) for a, b in zip(cuts, cuts[1:])], axis=axis)
        np.testing.assert_allclose(np.take(pieces, range(late, 40), axis=axis), want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(pieces, steps, rtol=1e-5, atol=1e-6)    # the warm-up steps too


def test_a_whole_call_of_a_streaming_plan_with_valid_convolutions_is_the_offline_result(target):
    """INTERFACES.md section 9: steps equal the whole-sequence pass from the step where the receptive
    field (here 9 steps) is full; the streaming plan's own whole call gave all T steps, the first 8
    against zeros before the start, where the same model built without --stream gives T - 8."""
    stream = nnc.build(VALID, target=target, batch=2, stream=True, dims={"T": 16})
    whole = nnc.build(VALID, target=target, batch=2, dims={"T": 40})
    whole.load_weights(stream.state_dict())
    assert stream.output_shapes == whole.output_shapes == {"out": (4, "T - 8")}
    x = np.random.default_rng(5).standard_normal((2, 3, 40)).astype(np.float32)
    want = whole(x)
    got = stream(x)
    assert got.shape == want.shape == (2, 4, 32) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    stream.reset()
    steps = np.stack([stream.step(x[:, :, t]) for t in range(40)], axis=-1)
    np.testing.assert_allclose(steps[..., 8:], got, rtol=1e-5, atol=1e-6)
    y = np.empty((2, 4, 32), np.float32)
    assert stream(x, out=y) is y
    np.testing.assert_array_equal(y, got)
    assert stream(x[:, :, :9]).shape == (2, 4, 1)
    with pytest.raises(ValueError, match="T >= 9"):
        stream(x[:, :, :8])
    with pytest.raises(ValueError, match="shape"):                 # out= is checked before anything runs
        stream(x, out=np.empty((2, 4, 40), np.float32))

    def peak(call) -> int:
        for _ in range(3):
            call()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        call()
        grown = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        return grown
    # within the bound a whole call with out= allocates what a stream call does, not a T-step output
    long = nnc.build(VALID, target=target, batch=2, stream=True, dims={"T": 400})
    xl = np.random.default_rng(6).standard_normal((2, 3, 400)).astype(np.float32)
    kept, every = np.empty((2, 4, 392), np.float32), np.empty((2, 4, 400), np.float32)
    assert peak(lambda: long(xl, out=kept)) < peak(lambda: long.stream(xl, out=every)) + 2 * 4 * 400 * 4 // 2


def test_a_causal_pad_wider_than_the_history_after_it_keeps_every_step_of_a_whole_call(target):
    """The offline output is T + 3 long here (the pad adds steps a stream cannot): no warm-up to drop
    (it came out as -3, and a whole call returned the last 3 steps)."""
    src = "model m(x: [2, T]) {\n    p: pad((3, 0))\n    c: conv1d(4, 1)\n}\n"
    stream = nnc.build(src, target=target, stream=True, dims={"T": 30})
    assert stream.output_shapes == {"out": (4, "T")}
    x = np.random.default_rng(2).standard_normal((1, 2, 20)).astype(np.float32)
    got = stream(x)
    stream.reset()
    np.testing.assert_array_equal(got, stream.stream(x))


@pytest.mark.parametrize("src", [
    "model m(x: [T, 6]) {\n    d: dense(6)\n    reshape((-1, 2, 3))\n    softmax(axis=2)\n"
    "    reshape((-1, 6))\n    g: gru(4)\n}\n",
    "model m(x: [6, T]) {\n    reshape((2, 3, -1))\n    softmax(axis=1)\n    reshape((6, -1))\n"
    "    c: conv1d(4, 3, padding=causal)\n}\n",
], ids=["time_first", "time_last"])
def test_a_reshape_of_each_step_streams(target, src):
    """[T, 6] -> [T, 2, 3] -> [T, 6] (or [6, T] -> [2, 3, T]) rearranges each step's values: a per-step
    op (it was refused as one that "combines several time steps")."""
    stream = nnc.build(src, target=target, stream=True, batch=2, dims={"T": 16})
    whole = nnc.build(src, target=target, batch=2, dims={"T": 30})
    whole.load_weights(stream.state_dict())
    axis = 1 + stream.TIME_AXES["x"]
    x = np.random.default_rng(0).standard_normal((2, 30, 6) if axis == 1 else (2, 6, 30)).astype(np.float32)
    want = whole(x)
    steps = [stream.step(np.take(x, t, axis=axis)) for t in range(30)]
    np.testing.assert_allclose(np.stack(steps, axis=1 + stream.TIME_AXES["out"]), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stream(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("src", [
    "model m(x: [2, T]) {\n  p: pad((2, 0))\n  c: conv1d(3, 3, padding=causal)\n}\n",
    "model m(x: [2, T]) {\n  p: pad((1, 0))\n  c: conv1d(3, 3)\n}\n",
    "model m(x: [2, T]) {\n  p: pad((2, 0))\n  c: conv1d(3, 3)\n  c2: conv1d(3, 2, padding=causal)\n}\n",
])
def test_a_causal_pad_into_a_convolution_streams_the_offline_steps(src, target):
    """The pad's zeros are the history of the convolution right after it: stream step k is offline step
    k + (the steps the pad adds beyond that history), from the first step the field is full."""
    stream = nnc.build(src, target=target, stream=True, dims={"T": 32})
    whole = nnc.build(src, target=target, dims={"T": 20})
    w = {k: v + 0.5 for k, v in stream.state_dict().items()}      # biases far from zero
    stream.load_weights(w)
    whole.load_weights(w)
    x = np.random.default_rng(7).standard_normal((1, 2, 20)).astype(np.float32)
    want = whole(x)
    steps = np.stack([stream.step(x[:, :, t]) for t in range(20)], axis=-1)
    extra = want.shape[-1] - 20                 # > 0: offline steps before the first input step
    late = max(0, -extra)
    np.testing.assert_allclose(steps[..., late:], want[..., max(0, extra):], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("src,layer,why", [
    ("model m(x: [1, T]) {\n    c: conv1d(4, 3, stride=2)\n}", "c", "stride 2"),
    ("model m(x: [1, T]) {\n    c: conv1d(4, 3, padding=same)\n}", "c", "future"),
    ("model m(x: [1, T]) {\n    conv1d(4, 3, padding=causal)\n    p: maxpool1d(2)\n}", "p", "several time steps"),
    ("model m(x: [T, 4]) {\n    s: softmax(axis=0)\n}", "s", "along the time axis"),
    # a layer with state or history after the steps a causal pad adds before the input (the offline
    # pass feeds it those zeros, or a bias computed from them: the stream gave other values, off by 0.2)
    ("model m(x: [2, T]) {\n  p: pad((2, 0))\n  transpose((1, 0))\n  g: gru(3)\n}", "g", "causal pad"),
    ("model m(x: [2, T]) {\n  p: pad((2, 0))\n  c: conv1d(3, 1)\n  transpose((1, 0))\n  q: positional(40)\n}",
     "q", "causal pad"),
    ("model m(x: [4, T]) {\n  p: pad((2, 0))\n  transpose((1, 0))\n  a: attention(2, causal=true)\n}", "a",
     "causal pad"),
    ("model m(x: [2, T]) {\n  p: pad((4, 0))\n  c: conv1d(3, 3)\n  c2: conv1d(3, 2)\n}", "c2", "causal pad"),
    ("model m(x: [T, 6]) {\n  r: reshape((2, -1))\n}", "r", "reshapes across the time axis"),
    ("model m(x: [6, T]) {\n  r: reshape((3, -1))\n}", "r", "reshapes across the time axis"),
])
def test_layer_that_breaks_streaming_is_named(src, layer, why):
    with pytest.raises(nnc.CompileError) as info:
        nnc.build(src + "\n", stream=True)
    (d,) = info.value.diagnostics
    assert d.code == "E0401" and f"`{layer}`" in d.message and why in d.message
    assert d.line is not None


def test_model_without_time_dimension_cannot_stream():
    with pytest.raises(nnc.CompileError) as info:
        nnc.build(ROOT / "samples" / "lenet.nn", stream=True)
    assert info.value.diagnostics[0].code == "E0402"


def test_streaming_methods_need_a_streaming_plan():
    model = nnc.build(ROOT / "samples" / "mlp.nn")
    with pytest.raises(TypeError, match="stream=True"):
        model.step(np.zeros((1, 784)))


LAYERS = st.lists(st.sampled_from([
    "conv1d({c}, {k}, padding=causal, dilation={d})",
    "conv1d({c}, {k}, padding=causal, dilation={d}, groups=2)",
    "conv1d({c}, 1)",
    "tanh", "relu", "leaky_relu(slope=0.1)",
]), min_size=1, max_size=4)


@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=LAYERS, k=st.integers(1, 4), d=st.integers(1, 3), data=st.data())
def test_random_streamable_models_agree_for_any_chunking(target, layers, k, d, data):
    body = "\n".join("    " + layer.format(c=4, k=k, d=d) for layer in layers)
    src = f"model m(x: [2, T]) {{\n    h = conv1d(4, {k}, padding=causal)\n{body}\n    return add(h, h)\n}}\n"
    src = src.replace("    return add(h, h)", "    y = relu\n    return add(h, y)")
    n = 40
    x = np.random.default_rng(data.draw(st.integers(0, 1000))).standard_normal((1, 2, n)).astype(np.float32)
    whole = offline(src, x, "numpy")          # the NumPy plan's offline run is the reference for both
    model = nnc.build(src, target=target, stream=True, dims={"T": 16})
    cuts = sorted(set(data.draw(st.lists(st.integers(1, n - 1), max_size=6))))
    bounds = [0, *cuts, n]
    out = np.concatenate([np.array(model.stream(x[:, :, a:b])) for a, b in zip(bounds, bounds[1:])], axis=2)
    np.testing.assert_allclose(out, whole, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_a_shared_prelu_over_the_time_axis_streams(target):
    # one slope for every channel: elementwise, so streaming [T, F] is allowed (a per-channel one is not)
    m = nnc.build("model a(x: [T=12, 6]) {\n    dense(4)\n    prelu(shared=true)\n}", target=target,
                  stream=True, batch=2)
    w = m.state_dict()
    w["prelu_0.weight"] = np.array([0.1], np.float32)
    m.load_weights(w)
    x = np.random.default_rng(0).standard_normal((2, 12, 6)).astype(np.float32)
    whole = m(x)
    assert (whole < 0).any()
    m.reset()
    steps = np.stack([m.step(x[:, t]) for t in range(12)], axis=1)
    np.testing.assert_allclose(steps, whole, atol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_a_stream_refuses_another_batch_until_reset(target):
    """The carried state belongs to the stream's examples: a step with another
    batch size continues nothing (the NumPy plan read another example's state)."""
    m = nnc.build("model a(x: [3, T=20]) {\n    conv1d(2, 3, padding=causal)\n}", target=target, batch=3,
                  stream=True)
    x = np.random.default_rng(1).standard_normal((3, 3, 20)).astype(np.float32)
    m.step(x[:, :, 0])
    with pytest.raises(ValueError, match="carries the state of 3 example"):
        m.step(x[:1, :, 1])
    with pytest.raises(ValueError, match="call reset"):
        m.stream(x[:2, :, 1:4])
    m.step(x[:, :, 1])                                # the stream of 3 goes on
    m.reset()
    first = [m.step(x[:1, :, t]) for t in range(3)]   # a new stream of 1
    np.testing.assert_allclose(np.stack(first, axis=2), m(x[:1, :, :3]), atol=1e-6)


def test_a_step_shape_error_for_a_token_input_reads_b_alone():
    m = nnc.build("model a(x: int[T=8]) {\n    embedding(10, 4)\n}", stream=True)
    with pytest.raises(ValueError, match=r"must have shape \[B\] with B <= 1, got \[1, 2\]"):
        m.step(np.zeros((1, 2), np.int32))
