"""samples/unet.nn (issue 13 item 4: a U-Net with conv_transpose2d): both
targets at -O0 and -O1 against its PyTorch twin (`torch_twins.UNetMini`)
loading the same state_dict, live and through the stored reference data, and
one training step's gradients against autograd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnc
from torch_twins import UNetMini, seeded_state_dict
from numerics import rel_err

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "unet.nn"
DATA = Path(__file__).resolve().parent / "data" / "unet.npz"




@pytest.mark.parametrize("optimize", [True, False])
def test_unet_matches_the_stored_reference(target, optimize):
    data = np.load(DATA)
    model = nnc.build(SAMPLE, target=target, batch=2, optimize=optimize)
    model.load_weights(seeded_state_dict({k: v.shape for k, v in model.state_dict().items()}, int(data["seed"])))
    y = model(data["input_x"])
    assert y.shape == data["output_0"].shape == (2, 1, 32, 32)
    assert rel_err(y, data["output_0"]) < 1e-4


def test_unet_loads_the_twins_state_dict_unchanged(target):
    twin = UNetMini().eval()
    model = nnc.build(SAMPLE, target=target, batch=3)
    model.load_weights({k: v.numpy() for k, v in twin.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((3, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    assert rel_err(model(x), expected) < 1e-4


def test_unet_training_step_matches_autograd():
    twin = UNetMini().double()
    trainer = nnc.train(SAMPLE, loss="mse", optimizer=nnc.SGD(0.1), batch=2, keep_gradients=True, seed=3)
    twin.load_state_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in trainer.state_dict().items()})
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    y = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    loss = trainer.step(x, y)
    value = torch.nn.functional.mse_loss(twin(torch.tensor(x, dtype=torch.float64)),
                                         torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    for k, p in twin.named_parameters():
        ref = p.grad.numpy()
        assert np.linalg.norm(grads[k] - ref) / max(np.linalg.norm(ref), 1e-8) < 1e-4, k
