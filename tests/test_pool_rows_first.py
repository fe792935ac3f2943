"""The rows-first method of 2-D pooling (runtime/pool.py,
`_pool_rows_first`, tiles -n): the kernel rows of every output row into
scratch, then the kernel columns into the output. Max and average pooling
against PyTorch in float64 on NaN-filled scratch, and the rule that picks it
(ResNet-18's 3x3 stride-2 max pool, whose phases do not fit its budget)."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.runtime import kernels as K

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (batch, channels, H, W, kernel, stride, padding)
GEOMETRIES = [
    (1, 5, 17, 13, (3, 3), (2, 2), ((1, 1), (1, 1))),
    (2, 3, 9, 10, (2, 3), (1, 2), ((1, 1), (0, 1))),
    (1, 4, 8, 8, (3, 2), (3, 1), ((0, 0), (1, 1))),
    (2, 6, 12, 7, (5, 5), (2, 3), ((2, 2), (2, 2))),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("block", [1, 2, 100])
def test_rows_first_equals_pytorch(geometry, kind, block):
    bsz, c, h, w, kernel, stride, pads = geometry
    rng = np.random.default_rng(h * w + block)
    x = rng.standard_normal((bsz, c, h, w))
    x[0, 0, 1, 1] = np.nan                               # NaN stays NaN, in its windows only
    fill = -np.inf if kind == "max" else 0.0
    xp = torch.from_numpy(np.pad(x, ((0, 0), (0, 0), *pads), constant_values=fill))
    want = (F.max_pool2d(xp, kernel, stride) if kind == "max" else F.avg_pool2d(xp, kernel, stride)).numpy()
    geo = dict(kernel=kernel, stride=stride, padding=pads)
    # scratch planned for a larger batch, full of NaN: every float read must be written first
    scratch = {k: np.full(s, np.nan) for k, s in
               K.maxpool2d_scratch((bsz + 1, c, h, w), tiles=-block, **geo).items()}
    assert set(scratch) == {"rows"}
    for _ in range(2):
        out = np.full(want.shape, 7.0)
        (K.maxpool2d if kind == "max" else K.avgpool2d)(x, out, tiles=-block, scratch=scratch, **geo)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
        np.testing.assert_allclose(out[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-12, atol=1e-12)


def test_the_rule_takes_rows_first_when_phases_do_not_fit():
    geo = dict(kernel=(3, 3), stride=(2, 2), padding=((1, 1), (1, 1)))
    resnet = (1, 64, 112, 112)
    assert K.maxpool2d_tiles(resnet, budget=1 << 22, **geo) > 0              # phases of 8 channels fit
    assert K.maxpool2d_tiles(resnet, budget=20_000, **geo) == -1             # rows of a channel (6,272 floats)
    assert K.maxpool2d_tiles(resnet, budget=5_000, **geo) == 0               # not even those: taps in place
    assert K.maxpool2d_tiles((1, 64, 16, 16), budget=2_000, **geo) == 0       # small planes: taps in place
    assert K.maxpool2d_tiles((1, 64, 112, 112), budget=20_000, kernel=(1, 3), stride=(1, 2),
                             padding=((0, 0), (1, 1))) == 0                   # one kernel row: nothing to gain
