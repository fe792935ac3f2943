"""The NumPy convolution speed paths (runtime/conv.py) against PyTorch.

Pins:
- depthwise convolution by tap columns (`tiles=(1, 0, block)`: every tap's
  run copied into columns, one batched matmul a block) and by taps
  (`(0, 0, block)`), with strides, dilations, channel multipliers, several
  blocks (a shorter last one), batches chunked into groups of examples;
  scratch filled with NaN first, so padding a later block relies on must be
  zero;
- the im2col tiles worked out once per geometry: tiles inside the input
  (no band), padded tiles, column tiles of one row, groups, chunks of
  examples, an output of one column;
- conv_transpose2d whose kernel equals its stride (one copy of a tile's
  products), tiled, grouped, batched, with and without bias;
- `conv2d_tiles` takes tap columns where their blocks are large enough and
  the taps where the budget leaves one channel only; tap columns chosen
  at a length bound fit a shorter input (a named dimension);
- a planned call of each path allocates nothing but NumPy's bookkeeping.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F

from nnc.runtime import kernels as K

torch.set_num_threads(1)


def randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def stale(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    return {name: np.full(shape, np.nan, dtype=np.float32) for name, shape in shapes.items()}


def assert_close(got: np.ndarray, want: torch.Tensor, tol: float = 1e-5) -> None:
    want = want.numpy()
    assert got.shape == want.shape and np.isfinite(got).all()
    err = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-30)
    assert err < tol, f"relative error {err:.3g}"


def torch_conv2d(x, w, b, stride, padding, dilation, groups, act):
    (top, bottom), (left, right) = padding
    y = F.conv2d(F.pad(torch.from_numpy(x), (left, right, top, bottom)), torch.from_numpy(w),
                 None if b is None else torch.from_numpy(b), stride=stride, dilation=dilation, groups=groups)
    return {None: lambda v: v, "relu6": F.relu6, "gelu": F.gelu}[act and act[0]](y)


def run_conv2d(x, w, b, tiles, stride, padding, dilation, groups, act):
    geo = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, act=act)
    y = torch_conv2d(x, w, b, stride, padding, dilation, groups, act)
    out = np.full(tuple(y.shape), np.nan, np.float32)
    K.conv2d(x, w, b, out, **geo, tiles=tiles, scratch=stale(K.conv2d_scratch(x.shape, w.shape, **geo, tiles=tiles)))
    return out, y


DEPTHWISE = {   # x shape, multiplier, kernel, stride, padding, dilation
    "3x3_s1": ((1, 10, 9, 11), 1, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    "3x3_s2": ((1, 10, 12, 9), 1, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    "5x5_s2_uneven_pad": ((2, 7, 13, 10), 1, (5, 5), (2, 2), ((2, 1), (0, 2)), (1, 1)),
    "3x2_s3x1_dilated": ((1, 6, 14, 9), 1, (3, 2), (3, 1), ((2, 0), (1, 1)), (2, 3)),
    "multiplier_2": ((2, 5, 8, 8), 2, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    "unpadded_s2": ((1, 9, 10, 10), 1, (3, 3), (2, 2), ((0, 0), (0, 0)), (1, 1)),
    "conv1d_like": ((3, 8, 1, 20), 1, (1, 5), (1, 2), ((0, 0), (2, 2)), (1, 1)),
}


@pytest.mark.parametrize("method", [0, 1], ids=["taps", "columns"])
@pytest.mark.parametrize("block", [1, 3, 100])
@pytest.mark.parametrize("case", list(DEPTHWISE))
def test_depthwise_matches_torch_by_either_method(case, block, method):
    shape, mult, (kh, kw), stride, padding, dilation = DEPTHWISE[case]
    c = shape[1]
    x, w, b = randn(*shape, seed=1), randn(c * mult, 1, kh, kw, seed=2), randn(c * mult, seed=3)
    act = ("gelu",) if block == 3 else ("relu6",)
    out, want = run_conv2d(x, w, None if block == 1 else b, (method, 0, block), stride, padding, dilation, c, act)
    assert_close(out, want)


def test_depthwise_in_chunks_of_examples_matches_torch(monkeypatch):
    """A batch larger than the scratch's chunk of examples (conv.TILE) runs chunk by chunk, each from block 0."""
    from nnc.runtime import conv
    monkeypatch.setattr(conv, "TILE", 600)
    conv._tiles.cache_clear(), conv._call_cached.cache_clear()
    try:
        x, w, b = randn(5, 6, 9, 9, seed=4), randn(6, 1, 3, 3, seed=5), randn(6, seed=6)
        for method in (0, 1):
            out, want = run_conv2d(x, w, b, (method, 0, 4), (2, 2), ((1, 1), (1, 1)), (1, 1), 6, None)
            assert_close(out, want)
    finally:
        conv._tiles.cache_clear(), conv._call_cached.cache_clear()


IM2COL = {   # x shape, w shape, tiles, stride, padding, dilation, groups
    "padded_rows": ((1, 4, 11, 9), (5, 4, 3, 3), (2, 9, 0), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "inside_tiles": ((1, 3, 12, 30), (4, 3, 3, 3), (1, 8, 0), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "column_tiles_strided": ((2, 3, 9, 40), (4, 3, 3, 5), (3, 7, 0), (2, 2), ((1, 2), (2, 1)), (1, 1), 1),
    "groups_batched": ((3, 6, 8, 8), (4, 3, 3, 3), (3, 8, 0), (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
    "unpadded_dilated": ((2, 3, 10, 11), (2, 3, 2, 3), (2, 4, 0), (1, 1), ((0, 0), (0, 0)), (2, 2), 1),
    "one_output_column": ((1, 3, 7, 3), (2, 3, 3, 3), (2, 1, 0), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "whole": ((2, 2, 6, 6), (3, 2, 3, 3), (6, 6, 0), (1, 1), ((2, 0), (1, 1)), (1, 1), 1),
}


@pytest.mark.parametrize("case", list(IM2COL))
def test_im2col_tiles_match_torch(case):
    shape, w_shape, tiles, stride, padding, dilation, groups = IM2COL[case]
    x, w, b = randn(*shape, seed=7), randn(*w_shape, seed=8), randn(w_shape[0], seed=9)
    out, want = run_conv2d(x, w, b, tiles, stride, padding, dilation, groups, ("relu6",))
    assert_close(out, want)
    again = out.copy()                                  # a second call on the same scratch: the same result
    K.conv2d(x, w, b, again, stride=stride, padding=padding, dilation=dilation, groups=groups, act=("relu6",),
             tiles=tiles)
    np.testing.assert_array_equal(again, out)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tiles", [(2, 3), (1, 2), (9, 9)])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose_kernel_equal_to_stride_matches_torch(groups, tiles, bias):
    x, w, b = randn(2, 4, 5, 7, seed=10), randn(4, 3, 2, 3, seed=11), randn(3 * groups, seed=12)
    geo = dict(stride=(2, 3), padding=((0, 0), (0, 0)), output_padding=(0, 0), dilation=(1, 1), groups=groups)
    b = b if bias else None
    want = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                              stride=(2, 3), groups=groups)
    out = np.full(tuple(want.shape), np.nan, np.float32)
    K.conv_transpose2d(x, w, b, out, **geo, tiles=tiles,
                       scratch=stale(K.conv_transpose2d_scratch(x.shape, w.shape, **geo, tiles=tiles)))
    assert_close(out, want)


GEO = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), act=("relu6",))


def test_depthwise_takes_columns_unless_the_budget_leaves_a_few_channels():
    assert K.conv2d_tiles((1, 384, 14, 14), (384, 1, 3, 3), groups=384, **GEO, budget=1 << 20)[0] == 1
    tiny = K.conv2d_tiles((1, 96, 112, 112), (96, 1, 3, 3), groups=96, budget=60000,
                          **{**GEO, "stride": (2, 2)})
    assert tiny[0] == 0 and tiny[2] >= 2                # taps: columns would fit one channel
    one_by_one = K.conv2d_tiles((1, 8, 9, 9), (8, 1, 1, 1), groups=8, **{**GEO, "padding": ((0, 0), (0, 0))})
    assert one_by_one[0] == 0                           # one tap: nothing to gather


def test_depthwise_blocks_are_even():
    _, _, block = K.conv2d_tiles((1, 384, 14, 14), (384, 1, 3, 3), groups=384, **GEO, budget=1 << 20)
    assert 384 % block == 0 or -(-384 // block) * block - 384 < -(-384 // block)


def test_columns_chosen_at_a_bound_fit_a_shorter_input():
    geo = dict(stride=1, padding=(2, 2), dilation=1, groups=16, act=("relu6",))
    tiles = K.conv1d_tiles((1, 16, 4096), (16, 1, 5), **geo, budget=200000)
    assert tiles[0] == 1 and tiles[2] < 16
    long = K.conv1d_scratch((1, 16, 4096), (16, 1, 5), **geo, tiles=tiles)
    assert sum(math.prod(s) for s in long.values()) <= 200000
    short_shapes = K.conv1d_scratch((1, 16, 37), (16, 1, 5), **geo, tiles=tiles)
    assert all(math.prod(short_shapes[k]) <= math.prod(long[k]) for k in long)
    x, w = randn(1, 16, 37, seed=13), randn(16, 1, 5, seed=14)
    out = np.empty((1, 16, 37), np.float32)
    K.conv1d(x, w, None, out, **geo, tiles=tiles, scratch=stale(short_shapes))
    want = F.relu6(F.conv1d(torch.from_numpy(x), torch.from_numpy(w), padding=2, groups=16))
    assert_close(out, want)


@pytest.mark.parametrize("call", ["columns", "taps", "im2col", "transpose"])
def test_a_planned_call_allocates_nothing(call):
    if call in ("columns", "taps"):
        x, w, b = randn(1, 64, 28, 28), randn(64, 1, 3, 3), randn(64)
        geo = dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=64, act=("relu6",),
                   tiles=(int(call == "columns"), 0, 24))
        out = np.empty((1, 64, 14, 14), np.float32)
        scratch = stale(K.conv2d_scratch(x.shape, w.shape, **geo))
        run = lambda: K.conv2d(x, w, b, out, **geo, scratch=scratch)
    elif call == "im2col":
        x, w, b = randn(1, 16, 32, 32), randn(8, 16, 3, 3), randn(8)
        geo = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1, act=("relu",),
                   tiles=(1, 32, 0))
        out = np.empty((1, 8, 32, 32), np.float32)
        scratch = stale(K.conv2d_scratch(x.shape, w.shape, **geo))
        run = lambda: K.conv2d(x, w, b, out, **geo, scratch=scratch)
    else:
        x, w, b = randn(1, 16, 16, 16), randn(16, 8, 2, 2), randn(8)
        geo = dict(stride=(2, 2), padding=((0, 0), (0, 0)), output_padding=(0, 0), dilation=(1, 1), groups=1,
                   tiles=(4, 16))
        out = np.empty((1, 8, 32, 32), np.float32)
        scratch = stale(K.conv_transpose2d_scratch(x.shape, w.shape, **geo))
        run = lambda: K.conv_transpose2d(x, w, b, out, **geo, scratch=scratch)
    run()
    old = np.setbufsize(256)
    tracemalloc.start()
    try:
        for _ in range(3):
            run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        np.setbufsize(old)
    assert peak < 16 * 1024, peak                       # views and index tuples; nothing output-sized (32 KiB or more)
