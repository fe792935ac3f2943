"""upsample's section 9 modes: linear on [C, T] and bilinear on [C, H, W]
(align_corners=False, integer scales or a pair) on both targets against
PyTorch at -O0 and -O1, the training gradient, and the mode diagnostics."""

from __future__ import annotations

import tracemalloc

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


# ------------------------------------------------------------------ long axes: memory follows the output

# A long axis of n upsampled by 2, then pooled adaptively to 3n/2: an [n * scale, n] interpolation
# matrix or a [size, n] bin matrix would take hundreds of megabytes here (gigabytes at n = 20000).
# Each case has its own n, so that no kernel finds its tables made by another case.
LONG_AXES = {
    ("linear_then_adaptive1d", "forward"): 4000,
    ("linear_then_adaptive1d", "training"): 4100,
    ("bilinear_then_adaptive2d", "forward"): 3000,
    ("bilinear_then_adaptive2d", "training"): 3100,
}


def _long_axis_model(case: str, n: int) -> tuple[str, tuple[int, ...], int]:
    """(source, input shape per example, bytes of the upsampled activation at batch 2)."""
    if case == "linear_then_adaptive1d":
        return (f"model m(x: [2, {n}]) {{\n    c: conv1d(2, 1) -> upsample(2, mode=linear)\n"
                f"    adaptive_avgpool1d({3 * n // 2})\n    flatten\n    d: dense(1)\n}}", (2, n), 2 * 2 * 2 * n * 4)
    return (f"model m(x: [2, 2, {n}]) {{\n    c: conv2d(2, 1) -> upsample(2, mode=bilinear)\n"
            f"    adaptive_avgpool2d((3, {3 * n // 2}))\n    flatten\n    d: dense(1)\n}}", (2, 2, n), 2 * 2 * 4 * 2 * n * 4)


def _peak(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("case, phase", sorted(LONG_AXES))
def test_long_axis_upsample_and_adaptive_pool_allocate_in_proportion_to_the_output(case, phase):
    """The forward pass, or a training step (the backward kernels included), on a long axis
    allocates a small multiple of the upsampled activation, not the square of the axis (the
    kernels' index tables, 8 bytes a position, and float64 prefix sums make the multiple: 6 to
    12 here, against some 3000 for the matrices)."""
    src, shape, upsampled = _long_axis_model(case, LONG_AXES[case, phase])
    x = np.random.default_rng(3).standard_normal((2, *shape)).astype(np.float32)
    if phase == "forward":
        model = nnc.build(src, target="numpy", batch=2)
        peak = _peak(lambda: model(x))
    else:
        trainer = nnc.train(src, loss="mse", optimizer=nnc.SGD(0.1), batch=2)
        peak = _peak(lambda: trainer.step(x, np.zeros((2, 1), np.float32)))
    assert peak < 32 * upsampled, peak


@pytest.mark.parametrize("n, size", [(7, 5), (9, 13), (40, 3), (33, 33)])
def test_long_axis_kernels_equal_the_dense_products_they_replace(n, size, monkeypatch):
    """The prefix-sum and tap-gathering paths (taken past DENSE_BINS) give what the small-axis
    matrix products give, forward and backward, on both axes of a 4-D value."""
    from nnc.runtime import pool as P
    from nnc.runtime import shape as S
    rng = np.random.default_rng(n * 100 + size)
    x = rng.standard_normal((2, 3, n, n + 1)).astype(np.float32)
    dy_pool = rng.standard_normal((2, 3, size, size + 2)).astype(np.float32)
    dy_up = rng.standard_normal((2, 3, 2 * n, 3 * (n + 1))).astype(np.float32)

    def run():
        pooled = np.empty((2, 3, size, size + 2), np.float32)
        P.adaptive_avgpool2d(x, pooled, size=(size, size + 2))
        dpool = np.empty_like(x)
        P.adaptive_avgpool2d_backward(dy_pool, size=(size, size + 2), dx=dpool)
        up = np.empty((2, 3, 2 * n, 3 * (n + 1)), np.float32)
        S.upsample_linear(x, (2, 3), up)
        dup = np.empty_like(x)
        S.upsample_linear_backward(dy_up, (2, 3), dx=dup)
        return pooled, dpool, up, dup

    dense = run()
    monkeypatch.setattr(P, "DENSE_BINS", 0)
    monkeypatch.setattr(S, "DENSE_BINS", 0)
    for a, b in zip(dense, run()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
