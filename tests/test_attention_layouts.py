"""The NumPy attention kernel's two score layouts (runtime/attention.py): a
block of at least `_KEY_MAJOR` queries keeps its scores key-major, a
narrower one query-major. Both against nn.MultiheadAttention in float64,
causal or not, on NaN-filled scratch, with the heads in groups and the
queries in blocks that mix the two layouts."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.runtime import attention as A

torch = pytest.importorskip("torch")

T, E, HEADS = 64, 32, 4


@pytest.mark.parametrize("tiles", [(4, 64, 64), (2, 48, 32), (1, 20, 64), (4, 1, 64)])
@pytest.mark.parametrize("causal", [False, True])
def test_both_layouts_equal_pytorch(tiles, causal):
    rng = np.random.default_rng(tiles[1])
    mha = torch.nn.MultiheadAttention(E, HEADS, batch_first=True).double()
    x = rng.standard_normal((2, T, E))
    mask = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1) if causal else None
    with torch.no_grad():
        want = mha(*(torch.from_numpy(x),) * 3, attn_mask=mask, need_weights=False)[0].numpy()
    scratch = {k: np.full(s, np.nan) for k, s in A.attention_scratch(x.shape, HEADS, causal=causal,
                                                                     tiles=tiles).items()}
    w_in, b_in = mha.in_proj_weight.detach().numpy(), mha.in_proj_bias.detach().numpy()
    w_out, b_out = mha.out_proj.weight.detach().numpy(), mha.out_proj.bias.detach().numpy()
    for _ in range(2):                                   # again on the dirty scratch
        out = np.full_like(x, np.nan)
        A.attention(x, w_in, b_in, w_out, b_out, out, heads=HEADS, causal=causal, tiles=tiles, scratch=scratch)
        np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)
