"""The packed-rows path of conv2d (runtime/conv.py): a one-channel
convolution as one batched matmul on its weights packed once into banded
matrices. The kernel against PyTorch in float64 on dirty scratch, the rule
that picks it, and the plans that use it (LeNet's first layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler.build import compile_plan
from nnc.runtime import kernels as K

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent

# (batch, H, W, filters, kh, kw, stride, padding, dilation)
GEOMETRIES = [
    (1, 28, 28, 6, 5, 5, (1, 1), ((2, 2), (2, 2)), (1, 1)),        # LeNet's first layer
    (3, 17, 13, 4, 3, 2, (2, 3), ((1, 0), (2, 1)), (1, 2)),        # strided, asymmetric, dilated along the width
    (2, 9, 30, 5, 1, 4, (1, 2), ((0, 0), (3, 0)), (3, 2)),         # one kernel row: any height dilation
    (2, 8, 8, 3, 4, 4, (2, 2), ((3, 3), (3, 3)), (1, 1)),          # padding near the kernel's size
    (2, 6, 7, 2, 6, 3, (1, 1), ((0, 0), (0, 0)), (1, 1)),          # a kernel as tall as the input: one output row
]


def _reference(x, w, b, stride, pads, dilation, act):
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    y = torch.nn.functional.conv2d(torch.from_numpy(xp), torch.from_numpy(w), torch.from_numpy(b), stride=stride,
                                   dilation=dilation)
    return {None: y, ("relu",): torch.relu(y), ("gelu",): torch.nn.functional.gelu(y)}[act].numpy()


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("act", [None, ("relu",), ("gelu",)])
def test_packed_rows_equal_pytorch(geometry, act):
    bsz, h, wd, filters, kh, kw, stride, pads, dilation = geometry
    rng = np.random.default_rng(hash(geometry) % 1000)
    x = rng.standard_normal((bsz, 1, h, wd))
    w = rng.standard_normal((filters, 1, kh, kw))
    b = rng.standard_normal(filters)
    geo = dict(stride=stride, padding=pads, dilation=dilation)
    assert K.conv2d_packs(x.shape, w.shape, groups=1, **geo)
    pack = K.conv2d_pack(w, x.shape, **geo)
    assert not pack.flags.writeable
    # scratch planned for a larger batch and full of NaN: every float read must be written first
    scratch = {k: np.full(s, np.nan) for k, s in
               K.conv2d_scratch((bsz + 2, 1, h, wd), w.shape, groups=1, act=act, packed=True, **geo).items()}
    want = _reference(x, w, b, stride, pads, dilation, act)
    for _ in range(2):                                   # a second call on the dirty scratch
        out = np.full(want.shape, np.nan)
        K.conv2d(x, w, b, out, groups=1, act=act, pack=pack, scratch=scratch, **geo)
        np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-6 if act == ("gelu",) else 1e-10)   # gelu: 5e-7 fit


def test_packed_rows_of_a_strided_input_view():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2, 3, 20, 20))
    x = base[:, 1:2, ::2, 1:17]                          # one channel of a larger array, strided
    w = rng.standard_normal((4, 1, 3, 3))
    b = np.zeros(4)
    geo = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1))
    out = np.empty((2, 4, 10, 16))
    scratch = {k: np.empty(s) for k, s in K.conv2d_scratch(x.shape, w.shape, groups=1, packed=True, **geo).items()}
    K.conv2d(x, w, b, out, groups=1, pack=K.conv2d_pack(w, x.shape, **geo), scratch=scratch, **geo)
    np.testing.assert_allclose(out, _reference(np.ascontiguousarray(x), w, b, (1, 1), geo["padding"], (1, 1), None),
                               rtol=1e-10, atol=1e-10)


def test_the_rule_takes_narrow_one_channel_convolutions_that_would_be_tiled():
    geo = dict(stride=(1, 1), padding=((2, 2), (2, 2)), dilation=(1, 1), groups=1)
    lenet = ((1, 1, 28, 28), (6, 1, 5, 5))
    assert K.conv2d_packs(*lenet, **geo, tiles=(2, 28, 0))
    assert not K.conv2d_packs(*lenet, **geo, tiles=(28, 28, 0))          # untiled im2col is as fast
    assert not K.conv2d_packs((1, 2, 28, 28), (6, 2, 5, 5), **geo)        # two input channels
    assert not K.conv2d_packs((1, 1, 28, 28), (6, 1, 5, 5), **{**geo, "dilation": (2, 1)})
    assert not K.conv2d_packs((1, 1, 28, 41), (6, 1, 5, 5), **geo)        # wider than 8 kernel widths
    assert not K.conv2d_packs((1, 1, 28, 40), (64, 1, 5, 5), **geo)       # a pack over _PACK floats
    assert not K.conv2d_packs((1, 2, 28, 28), (2, 1, 5, 5), **{**geo, "groups": 2})


def test_a_pack_for_another_input_is_refused():
    w = np.ones((2, 1, 3, 3))
    geo = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1))
    pack = K.conv2d_pack(w, (1, 1, 8, 8), **geo)
    with pytest.raises(ValueError, match="does not fit"):
        K.conv2d(np.ones((1, 1, 8, 9)), w, None, np.empty((1, 2, 8, 9)), groups=1, pack=pack, **geo)


def test_lenets_plan_packs_its_first_layer_and_keeps_its_arena():
    plan = compile_plan(ROOT / "samples" / "lenet.nn")
    text = plan.files["lenet.py"]
    assert text.count("K.conv2d_pack(") == 1 and text.count("pack=self.") == 1
    assert plan.layout.plan.arena_bytes <= 1.10 * plan.layout.lower_bound_bytes


def test_a_packed_plan_follows_load_weights():
    from torch_twins import LeNet
    model = nnc.build(ROOT / "samples" / "lenet.nn", batch=3)
    x = np.random.default_rng(2).standard_normal((3, 1, 28, 28)).astype(np.float32)
    model(x)                                              # packed from the initial weights
    rng = np.random.default_rng(3)
    state = {k: (rng.standard_normal(v.shape) * 0.3).astype(np.float32) for k, v in model.state_dict().items()}
    model.load_weights(state)
    twin = LeNet()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_the_training_step_never_packs_but_its_predict_does():
    from nnc.compiler.train import compile_training
    plan = compile_training(ROOT / "samples" / "lenet.nn", batch=2)
    assert "conv2d_pack" not in plan.text                # its weights change every step
    assert "K.conv2d_pack(" in plan.eval_text            # predict re-prepares the inference plan each call


FOLDED = """model m(x: [1, 20, 20]) {
    c: conv2d(6, 5, padding=2, bias=false) -> bn: batchnorm -> relu
    flatten
    fc: dense(10)
}
"""


def _random_state(model, rng):
    state = {}
    for k, v in model.state_dict().items():
        a = (rng.standard_normal(v.shape) * 0.3).astype(np.float32)
        state[k] = v if "num_batches" in k else (np.abs(a) + 0.5 if "running_var" in k else a)
    return state


def _folded_reference(state, x):
    t = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in state.items() if "num_batches" not in k}
    y = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64)), t["c.weight"], padding=2)
    y = torch.nn.functional.batch_norm(y, t["bn.running_mean"], t["bn.running_var"], t["bn.weight"], t["bn.bias"],
                                       False, 0.0, 1e-5)
    return torch.nn.functional.linear(torch.relu(y).flatten(1), t["fc.weight"], t["fc.bias"]).numpy()


def test_a_packed_layer_with_a_folded_batchnorm_equals_pytorch():
    assert "K.conv2d_pack(self.p_c_weight" in compile_plan(FOLDED).files["m.py"]    # packed from the folded weight
    model = nnc.build(FOLDED, batch=4)
    rng = np.random.default_rng(4)
    state = _random_state(model, rng)
    model.load_weights(state)
    x = rng.standard_normal((3, 1, 20, 20)).astype(np.float32)
    want = _folded_reference(state, x)
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_trainers_predict_uses_its_current_weights_on_the_packed_plan():
    trainer = nnc.train(FOLDED, optimizer=nnc.SGD(0.05), batch=4, seed=1)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 1, 20, 20)).astype(np.float32)
    y = rng.integers(0, 10, 4)
    before = trainer.predict(x)
    for _ in range(3):
        trainer.step(x, y)
    state = trainer.state_dict()
    want = _folded_reference(state, x)
    after = trainer.predict(x)
    assert np.abs(after - before).max() > 1e-3                 # the steps changed the function
    np.testing.assert_allclose(after, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
