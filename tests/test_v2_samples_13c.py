"""samples/glu_tcn.nn and samples/bilstm_tagger.nn against PyTorch twins that
load the same state_dict, on both targets; the GLU TCN streams step by step
like the whole sequence, the tagger (bidirectional) refuses to stream, and
one training step of the tagger matches torch.autograd."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import nnc

sys.path.insert(0, str(Path(__file__).parent))
from torch_twins import BiLstmTagger, GluTcn  # noqa: E402

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _state(twin) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in twin.state_dict().items()}


@pytest.mark.parametrize("name,twin,shape", [("glu_tcn", GluTcn, (1, 40)), ("bilstm_tagger", BiLstmTagger, (40, 32))])
def test_sample_matches_its_pytorch_twin(name, twin, shape, target):
    torch.manual_seed(0)
    t = twin()
    model = nnc.build(SAMPLES / f"{name}.nn", target=target, batch=2, dims={"T": 40})
    assert list(model.state_dict()) == list(_state(t))
    model.load_weights(_state(t))
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    with torch.no_grad():
        expected = t(torch.from_numpy(x)).numpy()
    got = model(x)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_glu_tcn_streams_sample_by_sample_like_the_whole_signal(target):
    torch.manual_seed(0)
    state = _state(GluTcn())
    stream = nnc.build(SAMPLES / "glu_tcn.nn", target=target, batch=2, stream=True, dims={"T": 64})
    whole = nnc.build(SAMPLES / "glu_tcn.nn", target=target, batch=2, dims={"T": 64})
    stream.load_weights(state)
    whole.load_weights(state)
    x = np.random.default_rng(2).standard_normal((2, 1, 30)).astype(np.float32)
    expected = whole(x)
    steps = np.stack([stream.step(x[:, :, i]) for i in range(30)], axis=-1)
    np.testing.assert_allclose(steps, expected, rtol=1e-5, atol=1e-6)
    stream.reset()
    chunks = np.concatenate([stream.stream(x[:, :, :11]), stream.stream(x[:, :, 11:])], axis=-1)
    np.testing.assert_allclose(chunks, expected, rtol=1e-5, atol=1e-6)


def test_bilstm_tagger_cannot_stream_and_names_the_layer():
    with pytest.raises(nnc.CompileError) as info:
        nnc.build(SAMPLES / "bilstm_tagger.nn", stream=True, dims={"T": 64})
    d = info.value.diagnostics[0]
    assert d.code == "E0401" and "`rnn`" in d.message


def test_one_training_step_of_the_tagger_matches_autograd():
    trainer = nnc.train(SAMPLES / "bilstm_tagger.nn", loss="mse", optimizer=nnc.SGD(0.1), batch=2,
                        keep_gradients=True, seed=3, dims={"T": 7})
    t = BiLstmTagger().double()
    t.load_state_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in trainer.state_dict().items()})
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 7, 32)).astype(np.float32)
    y = rng.standard_normal((2, 7, 12)).astype(np.float32)
    value = F.mse_loss(t(torch.tensor(x, dtype=torch.float64)), torch.tensor(y, dtype=torch.float64))
    loss = trainer.step(x, y)
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item())
    grads = trainer.gradients()
    for k, p in t.named_parameters():
        ref = p.grad.numpy()
        assert np.linalg.norm(grads[k] - ref) / np.linalg.norm(ref) < 1e-4, k
