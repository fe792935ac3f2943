"""The C plan's fast convolution paths agree with the NumPy plan (1e-4), and
its arena stays near the live-set lower bound: Winograd F(2x2, 3x3) on odd
sizes, paddings and concat slices, the 3x3 depthwise kernels (whole-plane
for stride 1 with padding 1, row by row otherwise; fused and unfused
activations; rows one and two wide), 1x1 convolutions read in place
(partial tiles, panels deeper than one block), and the arena including
kernel scratch within 1.10x of the lower bound on every sample."""

from __future__ import annotations

import re

from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler.build import compile_plan
from nnc.compiler.codegen import c as c_gen

from conftest import HAS_CC
from torch_twins import DIMS

pytestmark = pytest.mark.skipif(not HAS_CC, reason="no C compiler")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ["mlp", "lenet", "concat", "resnet18", "mobilenetv2", "wavenet", "gru", "lstm", "unet"]
STREAMING = ["wavenet", "gru", "lstm"]


def c_matches_numpy(tmp_path: Path, source: str, shape: tuple[int, ...], seed: int = 0) -> str:
    """Build `source` for both targets with the same random weights, run one
    random input through both, assert they agree; returns the generated C."""
    path = tmp_path / "m.nn"
    path.write_text(source)
    ref = nnc.build(path, target="numpy", batch=2)
    fast = nnc.build(path, target="c", batch=2)
    rng = np.random.default_rng(seed)
    state = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in ref.state_dict().items()}
    ref.load_weights(state)
    fast.load_weights(state)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    want, got = ref(x), fast(x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    plan = compile_plan(path, target="c")
    return next(text for name, text in plan.files.items() if name.endswith(".c"))


@pytest.mark.parametrize("cin,h,w,cout,pad", [(2, 21, 23, 7, 1), (3, 32, 32, 16, 1), (5, 19, 24, 13, 0),
                                              (1, 30, 17, 6, 2)])
def test_winograd_convolution_matches_numpy_plan_on_odd_sizes(tmp_path, cin, h, w, cout, pad):
    # a wide layer first: the room beside the 3x3 convolution's values that
    # Winograd's scratch needs (a lone convolution would have none)
    src = (f"model m(x: [{cin}, {h}, {w}]) {{\n    wide: conv2d(128, 1)\n    narrow: conv2d({cin}, 1)\n"
           f"    c: conv2d({cout}, 3, padding={pad}) -> relu\n}}\n")
    text = c_matches_numpy(tmp_path, src, (cin, h, w))
    assert "nnc_conv3x3_wino" in text


def test_winograd_is_not_chosen_where_its_scratch_would_grow_the_arena(tmp_path):
    src = "model m(x: [3, 32, 32]) {\n    c: conv2d(16, 3, padding=1)\n}\n"
    text = c_matches_numpy(tmp_path, src, (3, 32, 32))
    assert "nnc_conv3x3_wino" not in text


def test_small_3x3_convolution_stays_a_matrix_multiply(tmp_path):
    src = "model m(x: [4, 8, 8]) {\n    c: conv2d(8, 3, padding=1)\n}\n"
    text = c_matches_numpy(tmp_path, src, (4, 8, 8))
    # a matrix multiply: packed, or over shifted input planes (nnc_conv_planes)
    assert "nnc_conv3x3_wino" not in text and ("nnc_conv2d(" in text or "nnc_conv_planes(" in text)


def test_winograd_writes_its_concat_slice_only(tmp_path):
    src = """model m(x: [3, 20, 20]) {
    n = x -> wide: conv2d(128, 1) -> narrow: conv2d(3, 1)
    a = n -> p: conv2d(4, 1) -> relu
    b = n -> q: conv2d(5, 3, padding=1) -> relu
    concat(a, b, axis=0)
}
"""
    assert "nnc_conv3x3_wino" in c_matches_numpy(tmp_path, src, (3, 20, 20))


@pytest.mark.parametrize("h,w,stride,pad,act", [(9, 11, 1, 1, "relu6"), (10, 13, 2, 1, "relu6"), (7, 5, 2, 0, "relu"),
                                                (3, 3, 1, 0, "relu6"), (4, 4, 2, 1, "sigmoid"),
                                                (5, 17, 1, 2, "relu6"), (12, 12, 1, 1, "tanh"),
                                                (3, 2, 1, 1, "relu"), (4, 1, 1, 1, "relu6"), (7, 3, 1, 1, "relu6")])
def test_depthwise_3x3_matches_numpy_plan(tmp_path, h, w, stride, pad, act):
    src = (f"model m(x: [6, {h}, {w}]) {{\n"
           f"    c: depthwise_conv2d(3, stride={stride}, padding={pad}) -> {act}\n}}\n")
    # by phase planes (nnc_depthwise_cv: channels side by side on AVX-512) or row by row
    assert re.search(r"nnc_depthwise(_cv)?\(", c_matches_numpy(tmp_path, src, (6, h, w)))


@pytest.mark.parametrize("pool", ["global_avgpool", "global_maxpool"])
@pytest.mark.parametrize("t", [8, 5])
def test_global_pooling_over_a_named_axis_matches_numpy_plan(tmp_path, pool, t):
    # [C, ...] -> [C] with C the named dimension: the channel count is the call's (d_T), at the bound and below
    path = tmp_path / "m.nn"
    path.write_text(f"model m(x: [T=8, 6]) {{\n    {pool}\n}}\n")
    ref, fast = nnc.build(path, target="numpy", batch=2), nnc.build(path, target="c", batch=2)
    x = np.random.default_rng(t).standard_normal((2, t, 6)).astype(np.float32)
    want = x.mean(axis=2) if pool == "global_avgpool" else x.max(axis=2)
    np.testing.assert_allclose(ref(x), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fast(x), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(5, 7, 9), (3, 1, 2), (2, 64, 64)])
def test_global_average_pooling_matches_numpy_plan(tmp_path, shape):
    # four chains of the plane (a remainder of 3, of 2 with no full round, none), in double
    c_matches_numpy(tmp_path, f"model m(x: [{', '.join(map(str, shape))}]) {{\n    global_avgpool\n}}\n", shape)


@pytest.mark.parametrize("inputs,units", [(3072, 10), (33, 24), (100, 40), (31, 10), (64, 1), (7, 1), (12, 1),
                                          (20, 1), (45, 1)])
def test_narrow_dense_layers_match_numpy_plan(tmp_path, inputs, units):
    # outputs in 16-wide blocks summed in four chains of inputs (a remainder of one: 33; fewer than 32
    # inputs: one chain; one output: the dot product, in whole vectors, then 8 wide, then one by one:
    # fewer than a vector (7, 12), vectors and the last few (20), all three (45))
    src = f"model m(x: [{inputs}]) {{\n    d: dense({units})\n}}\n"
    c_matches_numpy(tmp_path, src, (inputs,))


@pytest.mark.parametrize("inputs,units,bias", [(1283, 1000, "true"), (520, 512, "false"), (2049, 130, "true")])
def test_dense_layers_past_l2_match_numpy_plan(tmp_path, inputs, units, bias):
    # 256K weights or more: rows streamed eight at a time across all columns (nnc_gemv_rows), with a
    # partial last block of rows (1283, 2049) and of columns (1000, 130), and without a bias
    src = f"model m(x: [{inputs}]) {{\n    d: dense({units}, bias={bias}) -> relu\n}}\n"
    c_matches_numpy(tmp_path, src, (inputs,))
    rows = f"model m(x: [3, {inputs}]) {{\n    d: dense({units}, bias={bias})\n}}\n"
    c_matches_numpy(tmp_path, rows, (3, inputs))


@pytest.mark.parametrize("c,h,w,layer", [
    (20, 17, 23, "depthwise_conv2d(5, multiplier=2, stride=2, padding=2) -> relu6"),
    (33, 14, 14, "depthwise_conv2d(3, stride=2, padding=1) -> sigmoid"),
    (16, 12, 9, "depthwise_conv2d(3, padding=2, dilation=2)"),
])
def test_depthwise_with_channels_side_by_side_matches_numpy_plan(tmp_path, c, h, w, layer):
    # blocks of 16 channels and a partial one, a multiplier, strides, dilation, an activation after
    src = f"model m(x: [{c}, {h}, {w}]) {{\n    d: {layer}\n}}\n"
    text = c_matches_numpy(tmp_path, src, (c, h, w))
    assert "nnc_depthwise_cv(" in text


@pytest.mark.parametrize("cin,h,w,filters,groups", [(300, 10, 10, 10, 1), (16, 8, 8, 10, 1), (7, 9, 11, 10, 1),
                                                    (16, 40, 41, 30, 1), (24, 20, 23, 40, 2), (96, 12, 12, 20, 1),
                                                    (1, 8, 9, 5, 1)])
def test_pointwise_convolution_read_in_place_matches_numpy_plan(tmp_path, cin, h, w, filters, groups):
    # 100 pixels: three full tiles read in place and a partial one packed;
    # 300 channels: more than one panel deep; 16 channels over 1,640 pixels: blocks of
    # NNC_PW_BLOCK / 16 pixels, the last block short, then a partial tile; two groups of 12; the
    # deepest that takes pixel blocks on AVX-512 (96: two tiles a block); one input channel
    src = f"model m(x: [{cin}, {h}, {w}]) {{\n    c: conv2d({filters}, 1, groups={groups}) -> relu6\n}}\n"
    c_matches_numpy(tmp_path, src, (cin, h, w))


def test_panel_is_bounded_by_the_layer_output():
    plan = compile_plan(ROOT / "samples" / "lenet.nn", target="c", render=False)
    rows = {n.label: c_gen.panel_rows(n, plan.graph) for n in plan.graph.nodes if n.op.name == "conv2d"}
    assert rows == {"conv2d_0": 25, "conv2d_1": 64}


@pytest.mark.parametrize("name,stream", [*[(s, False) for s in SAMPLES], *[(s, True) for s in STREAMING]])
def test_c_arena_with_scratch_is_within_ten_percent_of_the_lower_bound(name, stream):
    plan = compile_plan(ROOT / "samples" / f"{name}.nn", target="c", render=False, stream=stream,
                        dims=DIMS.get(name))
    lay = plan.layout
    assert lay.plan.arena_bytes <= 1.10 * lay.lower_bound_bytes, (lay.plan.arena_bytes, lay.lower_bound_bytes)
