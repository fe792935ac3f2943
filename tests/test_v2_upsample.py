"""upsample's section 9 modes: linear on [C, T] and bilinear on [C, H, W]
(align_corners=False, integer scales or a pair) on both targets against
PyTorch at -O0 and -O1, the training gradient, and the mode diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.compiler.diagnostics import CompileError
from numerics import rel_err

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)




CASES = {
    "linear_by_3": ("model m(x: [3, 7]) {\n    upsample(3, mode=linear)\n}", (3, 7),
                    lambda x: F.interpolate(x, scale_factor=3, mode="linear", align_corners=False)),
    "bilinear_by_2": ("model m(x: [3, 5, 6]) {\n    upsample(2, mode=bilinear)\n}", (3, 5, 6),
                      lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)),
    "bilinear_pair_one_row": ("model m(x: [2, 1, 4]) {\n    upsample((3, 2), mode=bilinear)\n}", (2, 1, 4),
                              lambda x: F.interpolate(x, scale_factor=(3, 2), mode="bilinear", align_corners=False)),
    "nearest_default_still": ("model m(x: [2, 3, 4]) {\n    upsample(2)\n}", (2, 3, 4),
                              lambda x: F.interpolate(x, scale_factor=2, mode="nearest")),
}


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_upsample_matches_pytorch(case, optimize, target):
    src, shape, ref = CASES[case]
    model = nnc.build(src, target=target, batch=2, optimize=optimize)
    x = np.random.default_rng(5).standard_normal((2, *shape)).astype(np.float32)
    expected = ref(torch.from_numpy(x)).numpy()
    got = model(x)
    assert got.shape == expected.shape
    assert rel_err(got, expected) < 1e-4


@pytest.mark.parametrize("src, shape, ref", [
    ("model m(x: [2, 4, 5]) {\n    c: conv2d(3, 2) -> upsample((2, 3), mode=bilinear)\n    flatten\n    d: dense(2)\n}",
     (2, 4, 5), lambda y: F.interpolate(y, scale_factor=(2, 3), mode="bilinear", align_corners=False)),
    ("model m(x: [2, 6]) {\n    c: conv1d(3, 2) -> upsample(2, mode=linear)\n    flatten\n    d: dense(2)\n}",
     (2, 6), lambda y: F.interpolate(y, scale_factor=2, mode="linear", align_corners=False)),
])
def test_upsample_training_gradient_matches_autograd(src, shape, ref):
    batch = 3
    trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True, seed=1)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in trainer.state_dict().items()}
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    conv = F.conv2d if len(shape) == 3 else F.conv1d
    out = F.linear(ref(conv(torch.tensor(x, dtype=torch.float64), P["c.weight"], P["c.bias"])).flatten(1),
                   P["d.weight"], P["d.bias"])
    y = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    loss = trainer.step(x, y)
    value = F.mse_loss(out, torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    for k, p in P.items():
        ref_g = p.grad.numpy()
        assert np.linalg.norm(grads[k] - ref_g) / max(np.linalg.norm(ref_g), 1e-8) < 1e-4, k


@pytest.mark.parametrize("src, fragment", [
    ("model m(x: [3, 5, 6]) {\n    upsample(2, mode=linear)\n}", "upsample(mode=linear) works on [C, T]"),
    ("model m(x: [3, 7]) {\n    upsample(2, mode=bilinear)\n}", "upsample(mode=bilinear) works on [C, H, W]"),
    ("model m(x: [3, 7]) {\n    upsample(2, mode=bicubic)\n}", "`nearest`, `linear` or `bilinear`"),
])
def test_upsample_mode_diagnostics(src, fragment):
    with pytest.raises(CompileError) as e:
        nnc.build(src)
    assert fragment in str(e.value)
