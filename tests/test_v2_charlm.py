"""samples/charlm.nn, the character-level language model of issue 13,
against its PyTorch twin (tests/torch_twins.py's CharLM: nn.Embedding, a
learned positional table, nn.MultiheadAttention(batch_first=True) with a
causal mask, LayerNorm, Linear) loading the same state_dict, on both targets;
streamed token by token and in chunks equal to the whole sequence; the
stream's bound and the integer input's range check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnc

torch = pytest.importorskip("torch")

from torch_twins import CharLM  # noqa: E402  (needs torch)

TEXT = (Path(__file__).resolve().parent.parent / "samples" / "charlm.nn").read_text()
VOCAB, MAX_LEN = 48, 64


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-8))


@pytest.fixture(scope="module")
def twin():
    torch.manual_seed(0)
    model = CharLM().eval()
    with torch.no_grad():                               # non-trivial biases and norms
        for name, p in model.named_parameters():
            if name.endswith("bias") or name.startswith("norm"):
                p.add_(0.1 * torch.randn_like(p))
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return model, sd


def reference(model, tok: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tok, dtype=torch.long)).numpy()


@pytest.mark.parametrize("optimize", [True, False], ids=["O1", "O0"])
def test_whole_sequence_matches_the_pytorch_twin(target, twin, optimize):
    model, sd = twin
    m = nnc.build(TEXT, target=target, batch=2, weights=sd, optimize=optimize)
    rng = np.random.default_rng(1)
    for t in (64, 23, 1):
        tok = rng.integers(0, VOCAB, size=(2, t))
        y = m(tok)
        assert y.shape == (2, t, VOCAB)
        assert rel(y, reference(model, tok)) < 1e-4


def test_streaming_step_by_step_and_in_chunks_equals_the_whole_sequence(target, twin):
    model, sd = twin
    whole = nnc.build(TEXT, target=target, batch=2, weights=sd)
    s = nnc.build(TEXT, target=target, batch=2, weights=sd, stream=True)
    tok = np.random.default_rng(2).integers(0, VOCAB, size=(2, 40))
    ref = whole(tok)
    assert rel(ref, reference(model, tok)) < 1e-4
    steps = np.stack([s.step(tok[:, i]) for i in range(40)], axis=1)
    assert rel(steps, ref) < 1e-5
    s.reset()
    chunks = np.concatenate([s.stream(tok[:, :1]), s.stream(tok[:, 1:17]), s.stream(tok[:, 17:40])], axis=1)
    assert rel(chunks, ref) < 1e-5


def test_a_step_past_the_bound_says_to_reset(target, twin):
    _, sd = twin
    s = nnc.build(TEXT, target=target, weights=sd, stream=True)
    tok = np.random.default_rng(3).integers(0, VOCAB, size=(1, MAX_LEN))
    first = s.stream(tok)
    with pytest.raises(ValueError, match=r"reset\(\)"):
        s.step(tok[:, 0])
    s.reset()
    assert rel(s.step(tok[:, 0]), first[:, 0]) < 1e-5


@pytest.mark.parametrize("bad", [VOCAB, -1])
def test_a_token_out_of_range_is_a_value_error_naming_the_input(target, twin, bad):
    _, sd = twin
    m = nnc.build(TEXT, target=target, weights=sd)
    with pytest.raises(ValueError, match="`tokens`"):
        m(np.array([[1, bad, 3]], dtype=np.int64))
    s = nnc.build(TEXT, target=target, weights=sd, stream=True)
    with pytest.raises(ValueError, match="`tokens`"):
        s.step(np.array([bad], dtype=np.int64))
