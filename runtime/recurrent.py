"""Recurrent kernels: PyTorch's single-layer GRU and LSTM (batch_first).

In:  x [B, T, F]; weights in PyTorch's layout (w_ih [G*H, F], w_hh [G*H, H],
     biases [G*H] or None; G = 3 for GRU with gates r, z, n and 4 for LSTM
     with gates i, f, g, o); the carried state h [B, H] (and c [B, H]).
Out: out [B, T, H], the hidden state at every step; the chunk kernels leave
     the last state in h (and c) for the next call.

The input projection of all T steps is one matmul into scratch; then the
loop runs over time steps only, with the hidden projection a matmul per
step. Scratch comes from the paired `*_scratch` functions (batch first,
linear in the batch), as everywhere in `kernels.py`.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(x: np.ndarray) -> None:
    np.negative(x, out=x)
    np.exp(x, out=x)
    np.add(x, 1.0, out=x)
    np.reciprocal(x, out=x)


def gru_chunk_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    b, t, _ = in_shape
    return {"gi": (b, t, 3 * hidden), "gh": (b, 3 * hidden)}


def gru_chunk(x, h, w_ih, w_hh, b_ih, b_hh, out, *, scratch=None) -> None:
    """The GRU over the chunk x [B, n, F] from state h [B, H]; h ends as the last step."""
    hidden = h.shape[1]
    if scratch is None:
        scratch = {k: np.empty(s, np.float32) for k, s in gru_chunk_scratch(x.shape, hidden).items()}
    gi, gh = scratch["gi"], scratch["gh"]
    np.matmul(x, w_ih.T, out=gi)
    if b_ih is not None:
        np.add(gi, b_ih, out=gi)
    H = hidden
    prev = h
    for t in range(x.shape[1]):
        np.matmul(prev, w_hh.T, out=gh)
        if b_hh is not None:
            np.add(gh, b_hh, out=gh)
        g = gi[:, t]
        rz = g[:, :2 * H]
        np.add(rz, gh[:, :2 * H], out=rz)
        _sigmoid(rz)
        n = g[:, 2 * H:]
        np.multiply(rz[:, :H], gh[:, 2 * H:], out=gh[:, 2 * H:])
        np.add(n, gh[:, 2 * H:], out=n)
        np.tanh(n, out=n)
        z = rz[:, H:]
        # h' = n + z * (h - n)
        ht = out[:, t]
        np.subtract(prev, n, out=ht)
        np.multiply(ht, z, out=ht)
        np.add(ht, n, out=ht)
        prev = ht
    if x.shape[1]:
        np.copyto(h, prev)


def gru_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    return {**gru_chunk_scratch(in_shape, hidden), "h": (in_shape[0], hidden)}


def gru(x, w_ih, w_hh, b_ih, b_hh, out, *, scratch=None) -> None:
    """The GRU over the whole sequence from a zero state."""
    if scratch is None:
        scratch = {k: np.empty(s, np.float32) for k, s in gru_scratch(x.shape, w_hh.shape[1]).items()}
    h = scratch["h"]
    h.fill(0.0)
    gru_chunk(x, h, w_ih, w_hh, b_ih, b_hh, out, scratch=scratch)


def lstm_chunk_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    b, t, _ = in_shape
    return {"gi": (b, t, 4 * hidden), "gh": (b, 4 * hidden)}


def lstm_chunk(x, h, c, w_ih, w_hh, b_ih, b_hh, out, *, scratch=None) -> None:
    """The LSTM over the chunk x [B, n, F] from state (h, c); both end as the last step."""
    H = h.shape[1]
    if scratch is None:
        scratch = {k: np.empty(s, np.float32) for k, s in lstm_chunk_scratch(x.shape, H).items()}
    gi, gh = scratch["gi"], scratch["gh"]
    np.matmul(x, w_ih.T, out=gi)
    if b_ih is not None:
        np.add(gi, b_ih, out=gi)
    prev = h
    for t in range(x.shape[1]):
        np.matmul(prev, w_hh.T, out=gh)
        if b_hh is not None:
            np.add(gh, b_hh, out=gh)
        g = gi[:, t]
        np.add(g, gh, out=g)
        _sigmoid(g[:, :2 * H])             # i, f
        np.tanh(g[:, 2 * H:3 * H], out=g[:, 2 * H:3 * H])
        _sigmoid(g[:, 3 * H:])             # o
        np.multiply(c, g[:, H:2 * H], out=c)
        np.multiply(g[:, :H], g[:, 2 * H:3 * H], out=g[:, :H])
        np.add(c, g[:, :H], out=c)
        ht = out[:, t]
        np.tanh(c, out=ht)
        np.multiply(ht, g[:, 3 * H:], out=ht)
        prev = ht
    if x.shape[1]:
        np.copyto(h, prev)


def lstm_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    return {**lstm_chunk_scratch(in_shape, hidden), "h": (in_shape[0], hidden), "c": (in_shape[0], hidden)}


def lstm(x, w_ih, w_hh, b_ih, b_hh, out, *, scratch=None) -> None:
    """The LSTM over the whole sequence from zero states."""
    if scratch is None:
        scratch = {k: np.empty(s, np.float32) for k, s in lstm_scratch(x.shape, w_hh.shape[1]).items()}
    h, c = scratch["h"], scratch["c"]
    h.fill(0.0)
    c.fill(0.0)
    lstm_chunk(x, h, c, w_ih, w_hh, b_ih, b_hh, out, scratch=scratch)
