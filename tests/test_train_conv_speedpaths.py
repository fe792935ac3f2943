"""The training kernels' faster formulations give autograd's gradients.

- conv2d_backward (not 1x1, not depthwise) keeps its stride phases channel
  by channel and adds each tap's input gradient into them with one flat add
  over a whole group of channels, through `cols` rows as long as a channel
  of the phases and zero past the chunk: checked in float64 against
  PyTorch, with NaN-filled scratch (any unzeroed gap shows), several
  channels per group, several stride phases, a last chunk shorter than
  the others.
- Without dx (a first layer), dw from each example's im2col columns in one
  batched matmul a chunk (`_columns_dw`), when an example's columns fit
  `_COLS`; with dx, or larger columns, the tap-by-tap path. Both, chunked
  with a shorter last chunk (the padding and the zeros are written once
  per layout), strided, dilated, grouped, against PyTorch in float64 with
  NaN-filled scratch.
- avgpool2d_backward, when its windows tile the input, divides dy into
  each pixel position of the windows in turn (kh * kw divisions): bit for
  bit PyTorch's in float32, for windows 2x2, 3x2, 1x3 and 3x1, and the
  other path (overlapping windows) alike.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnc.runtime import conv as C
from nnc.runtime import pool as P

torch = pytest.importorskip("torch")

CONV_CASES = [  # x shape, w shape, stride, padding, dilation, groups, chunk
    ((5, 6, 9, 8), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2, 2),     # 3 channels a group, chunks 2, 2, 1
    ((4, 4, 11, 10), (6, 4, 3, 2), (2, 2), ((1, 0), (1, 1)), (1, 1), 1, 3),   # 4 stride phases, chunks 3, 1
    ((3, 2, 10, 10), (3, 2, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1, None),
    ((3, 6, 14, 14), (4, 6, 5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, 2),    # LeNet's second conv, smaller
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_backward_flat_tap_adds_equal_autograd(case):
    xs, ws, stride, pads, dil, groups, chunk = case
    kw = dict(stride=stride, padding=pads, dilation=dil, groups=groups)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    plan = C._conv_plan(xs, ws, stride, pads, dil, groups)
    assert plan.path is C._ConvPath.IM2COL
    dy = rng.standard_normal(plan.out_shape)
    shapes = C.conv2d_backward_scratch(xs, ws, chunk=chunk, **kw)
    scratch = {k: np.full(s, np.nan) for k, s in shapes.items()}
    dx, dw, db = np.full(xs, np.nan), np.full(ws, np.nan), np.full(ws[0], np.nan)
    C.conv2d_backward(x, w, dy, dx=dx, dw=dw, db=db, scratch=scratch, **kw)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    (pt, pb), (pl, pr) = pads
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (pl, pr, pt, pb)), tw, stride=stride,
                                    dilation=dil, groups=groups)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-10)


def test_conv_backward_cols_hold_a_channel_row_per_group_channel():
    shapes = C.conv2d_backward_scratch((32, 6, 14, 14), (16, 6, 5, 5), stride=(1, 1), padding=((0, 0), (0, 0)),
                                       dilation=(1, 1), groups=1)
    nb, plane = shapes["dy_t"][0], shapes["dy_t"][1] // 16
    assert shapes["phases"][0] == nb + 1
    assert shapes["cols"][0] == nb and shapes["cols"][0] * shapes["cols"][1] >= 6 * (nb + 1) * plane
    assert nb * (shapes["dy_t"][1] + shapes["phases"][1] + shapes["cols"][1]) <= C._COLS


DW_CASES = [  # x shape, w shape, stride, padding, dilation, groups, need dx, columns
    ((7, 1, 12, 11), (4, 1, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1, False, True),
    ((7, 1, 12, 11), (3, 1, 3, 2), (2, 1), ((1, 1), (0, 1)), (1, 2), 1, False, True),    # strided, dilated
    ((7, 1, 10, 9), (2, 1, 1, 3), (1, 1), ((0, 0), (1, 1)), (1, 1), 1, False, True),     # one row of taps
    ((7, 4, 10, 9), (6, 2, 3, 3), (2, 2), ((1, 0), (0, 1)), (1, 1), 2, False, True),     # grouped, asymmetric pads
    ((7, 3, 12, 11), (4, 3, 3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, False, True),    # unpadded: no band
    ((7, 1, 12, 11), (4, 1, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1, True, False),
    ((7, 3, 12, 11), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, True, False),
    ((7, 3, 32, 31), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, False, False),   # columns past _COLS
    ((7, 8, 3, 3), (64, 8, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, False, False),    # dw past _PARTS
]


@pytest.mark.parametrize("case", DW_CASES)
def test_conv_backward_columns_and_tap_by_tap_equal_autograd(case, monkeypatch):
    xs, ws, stride, pads, dil, groups, need_dx, columns = case
    monkeypatch.setattr(C, "_COLS", 1 << 14)         # chunks of 2 examples whatever the path: 2, 2, 2, 1
    kw = dict(stride=stride, padding=pads, dilation=dil, groups=groups)
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    dy = rng.standard_normal(C._conv_plan(xs, ws, stride, pads, dil, groups).out_shape)
    shapes = C.conv2d_backward_scratch(xs, ws, need_dx=need_dx, chunk=2, **kw)
    assert ("taps" not in shapes) == columns and shapes["cols" if columns else "dy_t"][0] == 2
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    (pt, pb), (pl, pr) = pads
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (pl, pr, pt, pb)), tw, stride=stride, dilation=dil,
                                    groups=groups)
    ty.backward(torch.tensor(dy))
    scratch = {k: np.full(s, np.nan) for k, s in shapes.items()}
    for _ in range(2):                              # a second call on the same scratch: its zeros are kept
        dx = np.full(xs, np.nan) if need_dx else None
        dw, db = np.full(ws, np.nan), np.full(ws[0], np.nan)
        C.conv2d_backward(x, w, dy, dx=dx, dw=dw, db=db, scratch=scratch, **kw)
        np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-10)
        if need_dx:
            np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
        for a in scratch.values():                  # another kernel's data in the shared scratch
            a[...] = 7.0


@pytest.mark.parametrize("kernel", [(2, 2), (4, 2), (3, 2), (1, 3), (3, 1)])
def test_avgpool_backward_tiling_windows_bit_for_bit(kernel):
    rng = np.random.default_rng(4)
    dy = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    xs = (3, 4, 5 * kernel[0], 6 * kernel[1])
    dx = np.full(xs, np.nan, np.float32)
    P.avgpool2d_backward(dy, kernel=kernel, stride=kernel, padding=((0, 0), (0, 0)), dx=dx)
    tx = torch.zeros(xs, requires_grad=True)
    torch.nn.functional.avg_pool2d(tx, kernel, kernel).backward(torch.tensor(dy))
    np.testing.assert_array_equal(dx, tx.grad.numpy())


def test_avgpool_backward_overlapping_windows_match_autograd():
    rng = np.random.default_rng(5)
    xs = (2, 3, 9, 8)
    tx = torch.zeros(xs, requires_grad=True)
    y = torch.nn.functional.avg_pool2d(tx, 3, 2, 1)
    dy = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(torch.tensor(dy))
    dx = np.full(xs, np.nan, np.float32)
    P.avgpool2d_backward(dy, kernel=(3, 3), stride=(2, 2), padding=((1, 1), (1, 1)), dx=dx)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_a_dx_the_columns_scratch_cannot_form_is_refused_not_left_unwritten():
    """Scratch planned with need_dx=False takes the columns dw-only layout;
    a dx passed anyway must not stay unwritten."""
    xs, ws = (3, 1, 12, 9), (5, 1, 3, 4)
    kw = dict(stride=(2, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1)
    shapes = C.conv2d_backward_scratch(xs, ws, need_dx=False, **kw)
    assert "taps" not in shapes
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    dy = rng.standard_normal(C._conv_plan(xs, ws, (2, 1), ((0, 0), (0, 0)), (1, 1), 1).out_shape)
    scratch = {k: np.zeros(s) for k, s in shapes.items()}
    with pytest.raises(ValueError, match="need_dx=False"):
        C.conv2d_backward(x, w, dy, dx=np.zeros(xs), dw=np.zeros(ws), db=None, scratch=scratch, **kw)


@pytest.mark.parametrize("xs, ws, pads", [
    ((4, 3, 1, 64), (16, 3, 1, 5), ((0, 0), (4, 0))),       # a causal conv1d first layer over T = 64
    ((4, 1, 28, 28), (6, 1, 5, 5), ((2, 2), (2, 2))),       # LeNet's
    ((4, 8, 9, 9), (64, 8, 3, 3), ((1, 1), (1, 1))),        # a weight past _PARTS: taps
])
def test_a_shorter_input_keeps_the_layout_chosen_at_the_bound(xs, ws, pads):
    """A plan sizes its scratch at the bound of its named dimensions and takes
    views of it for shorter inputs, by name: the layout may not change."""
    kw = dict(stride=(1, 1), padding=pads, dilation=(1, 1), groups=1, need_dx=False)
    names = set(C.conv2d_backward_scratch(xs, ws, **kw))
    for t in range(ws[3], xs[3]):
        assert set(C.conv2d_backward_scratch((*xs[:3], t), ws, **kw)) <= names | {"dw_part"}
