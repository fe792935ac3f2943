"""The C plan's streaming kernels on the shapes the samples do not reach:
the rational gate activations of the recurrent layers (their accuracy and
their NaN and infinities, built at -O2 without -march and with it), GRU and
LSTM layers whose hidden size leaves every kind of remainder to the gate
blocks (16, 8, fewer), and streaming 1-d convolutions wide enough for the
tiled path (frames inside the chunk) next to the frame-at-a-time one
(frames that read the history), cut into chunks shorter than, equal to and
longer than the history. Each model runs step by step and chunk by chunk
against the NumPy plan's whole-sequence run (1e-4)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import nnc
from nnc.compiler.codegen import c as c_gen
from nnc.compiler.codegen import cbuild

from conftest import HAS_CC

pytestmark = pytest.mark.skipif(not HAS_CC, reason="no C compiler")

GATES = r"""
#include <math.h>
#include <stdio.h>
#include "nnc_kernels.h"
int main(void) {
    double et = 0, es = 0;
    int bounded = 1;
    long i;
    for (i = -2000000; i <= 2000000; i++) {
        const float x = (float)i * 1e-5f;
        const float t = nnc_gate_tanh(x), s = nnc_gate_sigmoid(x);
        const double dt = fabs(t - tanh((double)x)), ds = fabs(s - 1.0 / (1.0 + exp(-(double)x)));
        et = dt > et ? dt : et;
        es = ds > es ? ds : es;
        bounded &= t >= -1.0f && t <= 1.0f && s >= 0.0f && s <= 1.0f;
    }
    printf("%.9g %.9g %d\n", et, es, bounded);
    printf("%g %g %g %g %g %g\n", nnc_gate_tanh(INFINITY), nnc_gate_tanh(-INFINITY), nnc_gate_tanh(NAN),
           nnc_gate_sigmoid(INFINITY), nnc_gate_sigmoid(-INFINITY), nnc_gate_sigmoid(NAN));
    return 0;
}
"""


@pytest.mark.parametrize("flags", [["-O2"], ["-O3", "-march=native"]])
def test_gate_activations_are_accurate_bounded_and_keep_nan(tmp_path, flags):
    (tmp_path / "nnc_kernels.h").write_text(c_gen.kernels_source())
    (tmp_path / "gates.c").write_text(GATES)
    exe = tmp_path / "gates"
    subprocess.run([cbuild.find_compiler(), "-std=c99", *flags, str(tmp_path / "gates.c"), "-o", str(exe), "-lm"],
                   check=True, capture_output=True)
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    et, es, bounded = lines[0].split()
    assert float(et) < 4e-7 and float(es) < 2.5e-7 and bounded == "1", lines[0]
    t_inf, t_minf, t_nan, s_inf, s_minf, s_nan = (float(v) for v in lines[1].split())
    assert (t_inf, t_minf, s_inf) == (1.0, -1.0, 1.0) and 0.0 <= s_minf < 1e-7
    assert np.isnan(t_nan) and np.isnan(s_nan)


def stream_matches_whole(src: str, shape: tuple[int, ...], axis: int, cuts: list[int], chunk: int = 16,
                         seed: int = 0) -> None:
    """The C plan stepped and streamed in pieces cut at `cuts` equals the
    NumPy plan's whole-sequence run, with the same random weights (`axis`:
    the time axis of `shape`)."""
    ax, n = axis + 1, shape[axis]                       # the time axis with the batch axis in front
    x = np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)
    reference = nnc.build(src, target="numpy", dims={"T": n})
    rng = np.random.default_rng(seed + 1)
    state = {k: (0.5 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in reference.state_dict().items()}
    reference.load_weights(state)
    whole = np.array(reference(x))
    model = nnc.build(src, target="c", stream=True, dims={"T": chunk})
    model.load_weights(state)
    steps = np.stack([np.array(model.step(np.take(x, t, axis=ax))) for t in range(n)], axis=ax)
    np.testing.assert_allclose(steps, whole, rtol=1e-4, atol=1e-5)
    model.reset()
    bounds = [0, *cuts, n]
    pieces = [np.array(model.stream(np.take(x, range(a, b), axis=ax))) for a, b in zip(bounds, bounds[1:])]
    np.testing.assert_allclose(np.concatenate(pieces, axis=ax), whole, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer", ["gru", "lstm"])
@pytest.mark.parametrize("hidden", [5, 13, 24, 40, 50])
def test_recurrent_gate_blocks_and_remainders_stream_like_the_whole_sequence(layer, hidden):
    src = f"model m(x: [T, 3]) {{\n    r: {layer}({hidden})\n    out: dense(2)\n}}\n"
    stream_matches_whole(src, (37, 3), 0, [1, 17, 20])


@pytest.mark.parametrize("conv", [
    "conv1d(20, 3, dilation=2, padding=causal)",             # h = 4: history and chunk frames in one call
    "conv1d(18, 2, dilation=8, padding=causal, groups=2)",   # h = 8, 9 outputs a group: tiles and a remainder
    "conv1d(6, 5, padding=causal, groups=6)",                # depthwise, h = 4
    "conv1d(21, 1)",                                         # pointwise: no history
])
def test_streaming_convolutions_tile_and_step_like_the_whole_sequence(conv):
    src = f"model m(x: [6, T]) {{\n    c: {conv} -> tanh\n    out: conv1d(3, 1)\n}}\n"
    # chunks of 1, 3 (shorter than the history), 8, 40 and 64 (the bound: several tiles of frames)
    stream_matches_whole(src, (6, 140), 1, [1, 4, 12, 52, 76], chunk=64)
