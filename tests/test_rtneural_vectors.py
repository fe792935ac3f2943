"""nnc against RTNeural's reference vectors: independent test data for the
recurrent, convolutional and dense layers.

What goes in: the models and vectors vendored under tests/data/rtneural/ (the
README there names the source repository, the commit of every file, how the
long vectors were shortened and RTNeural's BSD-3-Clause notice). RTNeural made
them with PyTorch and Keras; nnc never saw them while it was written.

What comes out: each RTNeural model is written as `.nn` text, its JSON weights
become a PyTorch-layout `state_dict` (a `torch` export is that already, with
the label in front; the Keras export is converted, see `keras_dense`), and the
NumPy and C plans must reproduce the y vector
- on the whole sequence (`model(x)`),
- step by step (`step`) and chunk by chunk (`stream`) for the models that can
  stream, from the step where a `valid` convolution's receptive field is full
  (INTERFACES.md section 9),
all within RTNeural's own tolerance: its tests compare with
`DoubleNear(1e-6)`, for float as for double, and so does this file.

A convolution with stride 3 and a transposed convolution cannot stream: nnc
must say so, naming the layer. The last tests show the comparison is not
toothless: one recurrent weight nudged by 1e-2, or the GRU's r and z gates swapped
(the Keras order mistake), is caught.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

import nnc

DATA = Path(__file__).resolve().parent / "data" / "rtneural"
ATOL = 1e-6            # RTNeural's tests: EXPECT_THAT(outputs, Pointwise(DoubleNear(1e-6), expected))


def csv(name: str) -> np.ndarray:
    """A vendored CSV as float64, always 2-D (one row per line)."""
    return np.loadtxt(DATA / name, delimiter=",", ndmin=2)


def torch_json(name: str, label: str) -> dict[str, np.ndarray]:
    """RTNeural's dump of a PyTorch `state_dict` (json.dump of `m.state_dict()`).
    Its keys are the module's own (`gru.weight_ih_l0`, or `weight` for a bare
    Conv1d); `label` is put in front when the dump is of a bare module."""
    raw = json.loads((DATA / name).read_text())
    prefix = f"{label}." if label else ""
    return {prefix + k: np.asarray(v, np.float32) for k, v in raw.items()}


def keras_dense(name: str) -> dict[str, np.ndarray]:
    """RTNeural's Keras export (python/model_utils.py: `layer.get_weights()`
    per layer) to nnc's PyTorch layout. A Keras Dense kernel is [in, out] and
    computes x @ kernel + bias; nn.Linear's weight is [out, in] and computes
    x @ weight.T + bias, so weight = kernel.T and the bias is unchanged.
    Activation layers carry no weights; dense layers become l0, l1, ..."""
    layers = json.loads((DATA / name).read_text())["layers"]
    dense = [layer["weights"] for layer in layers if layer["type"] == "dense"]
    out = {}
    for i, (kernel, bias) in enumerate(dense):
        out[f"l{i}.weight"] = np.ascontiguousarray(np.asarray(kernel, np.float32).T)
        out[f"l{i}.bias"] = np.asarray(bias, np.float32)
    return out


@dataclass(frozen=True)
class Case:
    """One RTNeural vector: the `.nn` text, its weights, x and y with a batch
    axis, whether the model can stream, and the time axis of x and y (1 for
    [T, F] sequences, 2 for [C, T] signals)."""
    source: str
    weights: Callable[[], dict[str, np.ndarray]]
    x: Callable[[], np.ndarray]
    y: Callable[[], np.ndarray]
    streams: bool
    time_axis: int
    receptive: int = 1          # input steps behind the first output of a valid convolution


def _seq(name: str, n: int | None = None) -> Callable[[], np.ndarray]:
    """A one-column vector as [1, T, 1]."""
    return lambda: csv(name)[:n, :1].reshape(1, -1, 1)


def _signal(name: str, transpose: bool = False) -> Callable[[], np.ndarray]:
    """A [C, T] block as [1, C, T]; RTNeural stores the group-conv input as [T, C]."""
    return lambda: (csv(name).T if transpose else csv(name))[None]


CASES = {
    # python/gru_torch.py: torch.nn.GRU(1, 8) then nn.Linear(8, 1), x of 1000 samples.
    "gru_torch": Case(
        "model gru_torch(x: [T, 1]) {\n    gru: gru(8)\n    dense: dense(1)\n}\n",
        lambda: torch_json("gru_torch.json", ""),
        _seq("torch_x_python.csv"), _seq("gru_torch_y_python.csv"), True, 1),
    # python/lstm_torch.py: torch.nn.LSTM(1, 8) then nn.Linear(8, 1), the same x.
    "lstm_torch": Case(
        "model lstm_torch(x: [T, 1]) {\n    lstm: lstm(8)\n    dense: dense(1)\n}\n",
        lambda: torch_json("lstm_torch.json", ""),
        _seq("torch_x_python.csv"), _seq("lstm_torch_y_python.csv"), True, 1),
    # python/conv1d_torch_stride.py: Conv1d(1, 12, 5, stride=3, padding='valid'); 98 samples give 32 outputs.
    "conv1d_torch_stride_3": Case(
        "model conv1d_stride(x: [1, T]) {\n    conv: conv1d(12, 5, stride=3)\n}\n",
        lambda: torch_json("conv1d_torch_stride_3.json", "conv"),
        lambda: csv("torch_x_python.csv")[:98, :1].T[None], _signal("conv1d_torch_y_python_stride_3.csv"),
        False, 2),
    # python/conv1d_torch_group.py: Conv1d(6, 3, 3, groups=3) on a [6, T] signal.
    "conv1d_torch_group_6_3_3_1_3": Case(
        "model group_6_3_3_1_3(x: [6, T]) {\n    conv: conv1d(3, 3, groups=3)\n}\n",
        lambda: torch_json("conv1d_torch_group_3_1.json", "conv"),
        _signal("conv1d_torch_group_x_python.csv", transpose=True),
        _signal("conv1d_torch_group_y_python_6_3_3_1_3.csv"), True, 2, receptive=3),
    # Conv1d(6, 3, 4, dilation=10, groups=3): a receptive field of 31 steps.
    "conv1d_torch_group_6_3_4_10_3": Case(
        "model group_6_3_4_10_3(x: [6, T]) {\n    conv: conv1d(3, 4, dilation=10, groups=3)\n}\n",
        lambda: torch_json("conv1d_torch_group_6_3_4_10_3.json", "conv"),
        _signal("conv1d_torch_group_x_python.csv", transpose=True),
        _signal("conv1d_torch_group_y_python_6_3_4_10_3.csv"), True, 2, receptive=31),
    # Conv1d(6, 6, 1, groups=6): depthwise, one scale and bias per channel.
    "conv1d_torch_group_6_6_1_1_6": Case(
        "model group_6_6_1_1_6(x: [6, T]) {\n    conv: conv1d(6, 1, groups=6)\n}\n",
        lambda: torch_json("conv1d_torch_group_6_6_1_1_6.json", "conv"),
        _signal("conv1d_torch_group_x_python.csv", transpose=True),
        _signal("conv1d_torch_group_y_python_6_6_1_1_6.csv"), True, 2),
    # python/convtranspose1d_torch.py: ConvTranspose1d(4, 15, 5, stride=3, padding=3);
    # 12 input steps give 32 outputs, the first 32 of the full vector (later inputs
    # only reach outputs from 3 * 12 - 3 = 33 on).
    "convtranspose1d_torch": Case(
        "model convtranspose1d(x: [4, T]) {\n    up: conv_transpose1d(15, 5, stride=3, padding=3)\n}\n",
        lambda: torch_json("convtranspose1d_torch.json", "up"),
        _signal("convtranspose1d_torch_x_python.csv"), _signal("convtranspose1d_torch_y_python.csv"),
        False, 2),
    # python/dense.py (Keras): Dense(8) tanh, Dense(8) relu, Dense(8) elu,
    # Dense(8) softmax, Dense(1) on x = 500 sin(0.1 pi n); one sample per time step.
    "dense": Case(
        "model dense(x: [T, 1]) {\n"
        "    l0: dense(8) -> tanh\n"
        "    l1: dense(8) -> relu\n"
        "    l2: dense(8) -> elu\n"
        "    l3: dense(8) -> softmax\n"
        "    l4: dense(1)\n"
        "}\n",
        lambda: keras_dense("dense.json"),
        _seq("dense_x_python.csv"), _seq("dense_y_python.csv"), True, 1),
}

STREAMING = [name for name, case in CASES.items() if case.streams]


@cache
def inputs(name: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    case = CASES[name]
    return case.x(), case.y(), case.weights()


def steps_of(x: np.ndarray, axis: int) -> int:
    return x.shape[axis]


@pytest.mark.parametrize("name", list(CASES))
def test_whole_sequence_matches_rtneural(name, target):
    case = CASES[name]
    x, y, weights = inputs(name)
    model = nnc.build(case.source, target=target, weights=weights, dims={"T": steps_of(x, case.time_axis)})
    out = np.array(model(x))
    assert out.shape == y.shape, f"{name}: nnc gives {out.shape}, RTNeural's vector is {y.shape}"
    np.testing.assert_allclose(out, y, rtol=0, atol=ATOL, err_msg=f"{name} ({target}), whole sequence")


@pytest.mark.parametrize("name", STREAMING)
def test_step_by_step_and_chunks_match_rtneural(name, target):
    case = CASES[name]
    x, y, weights = inputs(name)
    axis, skip = case.time_axis, case.receptive - 1
    n = steps_of(x, axis)
    model = nnc.build(case.source, target=target, weights=weights, stream=True, dims={"T": n})
    whole = np.array(model(x))                       # a streaming plan's whole call: the offline result
    assert whole.shape == y.shape, f"{name}: a whole call gives {whole.shape}, RTNeural's vector is {y.shape}"
    np.testing.assert_allclose(whole, y, rtol=0, atol=ATOL, err_msg=f"{name} ({target}), whole streaming call")
    model.reset()
    steps = np.stack([np.array(model.step(np.take(x, t, axis=axis))) for t in range(n)], axis=axis)
    got = np.take(steps, range(skip, n), axis=axis)
    assert got.shape == y.shape, f"{name}: steps give {got.shape}, RTNeural's vector is {y.shape}"
    np.testing.assert_allclose(got, y, rtol=0, atol=ATOL, err_msg=f"{name} ({target}), step by step")
    model.reset()
    cuts = [0, 1, min(n, 37), n]       # a single step, an odd-sized chunk, the rest
    pieces = [np.array(model.stream(np.take(x, range(a, b), axis=axis))) for a, b in pairwise(cuts) if b > a]
    chunks = np.take(np.concatenate(pieces, axis=axis), range(skip, n), axis=axis)
    np.testing.assert_allclose(chunks, y, rtol=0, atol=ATOL, err_msg=f"{name} ({target}), chunk by chunk")


@pytest.mark.parametrize("name,label", [("conv1d_torch_stride_3", "conv"), ("convtranspose1d_torch", "up")])
def test_models_that_cannot_stream_say_which_layer(name, label):
    with pytest.raises(nnc.CompileError) as err:
        nnc.build(CASES[name].source, stream=True)
    assert any(f"`{label}`" in d.message and "cannot stream" in d.message for d in err.value.diagnostics)


def test_a_weight_nudged_by_1e_2_is_caught():
    case = CASES["gru_torch"]
    x, y, weights = inputs("gru_torch")
    nudged = {k: v.copy() for k, v in weights.items()}
    nudged["gru.weight_hh_l0"][5, 3] += 1e-2
    out = np.array(nnc.build(case.source, weights=nudged, dims={"T": x.shape[1]})(x))
    assert np.abs(out - y).max() > 10 * ATOL


def test_gru_gates_in_keras_order_are_caught():
    # Keras stores a GRU's gates as z, r, h; PyTorch (and nnc) as r, z, n. Loading
    # a Keras-ordered tensor without reordering must not pass unnoticed.
    case = CASES["gru_torch"]
    x, y, weights = inputs("gru_torch")
    h = 8
    swapped = {k: v.copy() for k, v in weights.items()}
    for key in ("gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.bias_hh_l0"):
        swapped[key][: 2 * h] = np.concatenate([weights[key][h: 2 * h], weights[key][:h]])
    out = np.array(nnc.build(case.source, weights=swapped, dims={"T": x.shape[1]})(x))
    assert np.abs(out - y).max() > 10 * ATOL
