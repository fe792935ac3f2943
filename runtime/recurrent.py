"""Recurrent kernels: PyTorch's single-layer GRU and LSTM (batch_first).

In:  x [B, T, F]; weights in PyTorch's layout (w_ih [G*H, F], w_hh [G*H, H],
     biases [G*H] or None; G = 3 for GRU with gates r, z, n and 4 for LSTM
     with gates i, f, g, o); the carried state h [B, H] (and c [B, H]).
Out: out [B, T, H], the hidden state at every step; the chunk kernels leave
     the last state in h (and c) for the next call.

The input projection of all T steps is one matmul into scratch; then the
loop runs over time steps only, with the hidden projection a matmul per
step. Scratch comes from the paired `*_scratch` functions (batch first,
linear in the batch), as everywhere in `kernels.py`. Training: `gru_train`
and `lstm_train` also save their gates (and cells), and the `*_backward`
kernels backpropagate through the whole sequence ("training" below).
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


# ------------------------------------------------------------------ training
# The training forwards run the sequence from a zero state like `gru` and
# `lstm` and also save what the backward needs: the GRU's gates r, z, n and
# W_hn h + b_hn per step, the LSTM's gates i, f, g, o (after their
# nonlinearities) and cell states. The backward runs through time from the
# last step (BPTT), one [B, G*H] @ [G*H, H] matmul per step for the gradient
# of the previous hidden state; the gate gradients of all steps are kept, so
# dx, dW_ih, dW_hh and the bias gradients are one matmul or sum each at the end.

def _scratch_as(scratch, shapes: dict[str, tuple], dtype) -> dict:
    return scratch if scratch is not None else {k: np.empty(s, dtype) for k, s in shapes.items()}


def _sigmoid_safe(x: np.ndarray) -> None:
    """In-place sigmoid whose exp cannot overflow (any dtype)."""
    np.negative(x, out=x)
    np.clip(x, -np.inf, 88.0, out=x)
    np.exp(x, out=x)
    np.add(x, 1.0, out=x)
    np.reciprocal(x, out=x)


def gru_train_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    """Scratch of `gru_train`: `gh`, one step's hidden projection."""
    return {"gh": (in_shape[0], 3 * hidden)}


def gru_train(x, w_ih, w_hh, b_ih, b_hh, out, gates, *, scratch=None) -> None:
    """`gru` over the whole sequence from a zero state into `out` [B, T, H],
    saving `gates` [B, T, 4H]: per step r, z, n and W_hn h + b_hn."""
    H = w_hh.shape[1]
    gh = _scratch_as(scratch, gru_train_scratch(x.shape, H), x.dtype)["gh"]
    np.matmul(x, w_ih.T, out=gates[:, :, :3 * H])
    if b_ih is not None:
        np.add(gates[:, :, :3 * H], b_ih, out=gates[:, :, :3 * H])
    for t in range(x.shape[1]):
        if t == 0:
            gh.fill(0.0)
        else:
            np.matmul(out[:, t - 1], w_hh.T, out=gh)
        if b_hh is not None:
            np.add(gh, b_hh, out=gh)
        g = gates[:, t]
        rz, n, hn = g[:, :2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        np.add(rz, gh[:, :2 * H], out=rz)
        _sigmoid_safe(rz)
        np.copyto(hn, gh[:, 2 * H:])
        np.multiply(rz[:, :H], hn, out=gh[:, 2 * H:])
        np.add(n, gh[:, 2 * H:], out=n)
        np.tanh(n, out=n)
        ht = out[:, t]                        # h' = n + z * (h - n)
        if t == 0:
            np.negative(n, out=ht)
        else:
            np.subtract(out[:, t - 1], n, out=ht)
        np.multiply(ht, rz[:, H:], out=ht)
        np.add(ht, n, out=ht)


def _previous_states(out: np.ndarray, prev: np.ndarray) -> None:
    """prev[:, t] = out[:, t - 1], prev[:, 0] = 0: the hidden state each step starts from."""
    prev[:, 0].fill(0.0)
    np.copyto(prev[:, 1:], out[:, :-1])


def _input_gradients(x, w_ih, w_hh, dgi, dgh, prev, *, dx, dw_ih, dw_hh, db_ih, db_hh) -> None:
    """The gradients that sum over steps, from the per-step gate gradients
    `dgi` (of x W_ih^T + b_ih) and `dgh` (of h W_hh^T + b_hh), [B, T, G*H]."""
    gh_rows = dgh.shape[-1]
    di2, dh2 = dgi.reshape(-1, gh_rows), dgh.reshape(-1, gh_rows)
    if dw_ih is not None:
        np.matmul(di2.T, x.reshape(-1, x.shape[-1]), out=dw_ih)
    if dw_hh is not None:
        np.matmul(dh2.T, prev.reshape(-1, prev.shape[-1]), out=dw_hh)
    if db_ih is not None:
        np.add.reduce(di2, axis=0, out=db_ih)
    if db_hh is not None:
        np.add.reduce(dh2, axis=0, out=db_hh)
    if dx is not None:
        np.matmul(dgi, w_ih, out=dx)


def gru_backward_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    """Scratch of `gru_backward`: the gate gradients of every step (`dgi`,
    `dgh` [B, T, 3H]), the states the steps start from (`prev` [B, T, H]),
    the running state gradient `dh` and two [B, H] temporaries."""
    b, t, _ = in_shape
    return {"dgi": (b, t, 3 * hidden), "dgh": (b, t, 3 * hidden), "prev": (b, t, hidden),
            "dh": (b, hidden), "tmp": (b, hidden), "tmp2": (b, hidden)}


def gru_backward(x, w_ih, w_hh, out, gates, dy, *, dx, dw_ih, dw_hh, db_ih, db_hh, scratch=None) -> None:
    """Gradients of `gru_train` through the whole sequence, from the output
    gradient `dy` [B, T, H]: overwrite dx [B, T, F], dw_ih, dw_hh and (unless
    None, as any of them) db_ih, db_hh."""
    H = w_hh.shape[1]
    s = _scratch_as(scratch, gru_backward_scratch(x.shape, H), x.dtype)
    dgi, dgh, prev, dh, tmp, tmp2 = (s[k] for k in ("dgi", "dgh", "prev", "dh", "tmp", "tmp2"))
    _previous_states(out, prev)
    dh.fill(0.0)
    for t in reversed(range(x.shape[1])):
        np.add(dh, dy[:, t], out=dh)
        g = gates[:, t]
        r, z, n, hn = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        di, dhg = dgi[:, t], dgh[:, t]
        da_r, da_z, da_n = di[:, :H], di[:, H:2 * H], di[:, 2 * H:]
        # z: dh * (h_prev - n) * z * (1 - z)
        np.subtract(prev[:, t], n, out=da_z)
        np.multiply(da_z, dh, out=da_z)
        np.subtract(1.0, z, out=tmp)
        np.multiply(tmp, z, out=tmp2)
        np.multiply(da_z, tmp2, out=da_z)
        # n: dh * (1 - z) * (1 - n^2)
        np.multiply(tmp, dh, out=da_n)
        np.multiply(n, n, out=tmp2)
        np.subtract(1.0, tmp2, out=tmp2)
        np.multiply(da_n, tmp2, out=da_n)
        # W_hn h + b_hn: da_n * r;  r: da_n * hn * r * (1 - r)
        np.multiply(da_n, r, out=dhg[:, 2 * H:])
        np.multiply(da_n, hn, out=da_r)
        np.subtract(1.0, r, out=tmp)
        np.multiply(tmp, r, out=tmp)
        np.multiply(da_r, tmp, out=da_r)
        np.copyto(dhg[:, :2 * H], di[:, :2 * H])
        # the previous state: dh * z + dgh @ W_hh
        np.multiply(dh, z, out=dh)
        np.matmul(dhg, w_hh, out=tmp)
        np.add(dh, tmp, out=dh)
    _input_gradients(x, w_ih, w_hh, dgi, dgh, prev, dx=dx, dw_ih=dw_ih, dw_hh=dw_hh, db_ih=db_ih, db_hh=db_hh)


def lstm_train_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    """Scratch of `lstm_train`: `gh`, one step's hidden projection."""
    return {"gh": (in_shape[0], 4 * hidden)}


def lstm_train(x, w_ih, w_hh, b_ih, b_hh, out, gates, cells, *, scratch=None) -> None:
    """`lstm` over the whole sequence from zero states into `out` [B, T, H],
    saving `gates` [B, T, 4H] (i, f, g, o after their nonlinearities) and the
    cell states `cells` [B, T, H]."""
    H = w_hh.shape[1]
    gh = _scratch_as(scratch, lstm_train_scratch(x.shape, H), x.dtype)["gh"]
    np.matmul(x, w_ih.T, out=gates)
    if b_ih is not None:
        np.add(gates, b_ih, out=gates)
    for t in range(x.shape[1]):
        g = gates[:, t]
        if t > 0:
            np.matmul(out[:, t - 1], w_hh.T, out=gh)
            np.add(g, gh, out=g)
        if b_hh is not None:
            np.add(g, b_hh, out=g)
        _sigmoid_safe(g[:, :2 * H])             # i, f
        np.tanh(g[:, 2 * H:3 * H], out=g[:, 2 * H:3 * H])
        _sigmoid_safe(g[:, 3 * H:])             # o
        c = cells[:, t]
        np.multiply(g[:, :H], g[:, 2 * H:3 * H], out=c)
        if t > 0:
            np.multiply(cells[:, t - 1], g[:, H:2 * H], out=gh[:, :H])
            np.add(c, gh[:, :H], out=c)
        ht = out[:, t]
        np.tanh(c, out=ht)
        np.multiply(ht, g[:, 3 * H:], out=ht)


def lstm_backward_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    """Scratch of `lstm_backward`: the gate gradients of every step (`dgates`
    [B, T, 4H]), the states the steps start from (`prev` [B, T, H]), the
    running state gradients `dh`, `dc` and two [B, H] temporaries."""
    b, t, _ = in_shape
    return {"dgates": (b, t, 4 * hidden), "prev": (b, t, hidden), "dh": (b, hidden), "dc": (b, hidden),
            "tmp": (b, hidden), "tmp2": (b, hidden)}


def lstm_backward(x, w_ih, w_hh, out, gates, cells, dy, *, dx, dw_ih, dw_hh, db_ih, db_hh, scratch=None) -> None:
    """Gradients of `lstm_train` through the whole sequence, from the output
    gradient `dy` [B, T, H]: overwrite dx [B, T, F], dw_ih, dw_hh and (unless
    None, as any of them) db_ih, db_hh."""
    H = w_hh.shape[1]
    s = _scratch_as(scratch, lstm_backward_scratch(x.shape, H), x.dtype)
    dgates, prev, dh, dc, tmp, tmp2 = (s[k] for k in ("dgates", "prev", "dh", "dc", "tmp", "tmp2"))
    _previous_states(out, prev)
    dh.fill(0.0)
    dc.fill(0.0)
    for t in reversed(range(x.shape[1])):
        np.add(dh, dy[:, t], out=dh)
        g = gates[:, t]
        i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        d = dgates[:, t]
        di, df, dg, do = d[:, :H], d[:, H:2 * H], d[:, 2 * H:3 * H], d[:, 3 * H:]
        np.tanh(cells[:, t], out=tmp)                       # tanh(c)
        # o: dh * tanh(c) * o * (1 - o)
        np.multiply(dh, tmp, out=do)
        np.subtract(1.0, o, out=tmp2)
        np.multiply(tmp2, o, out=tmp2)
        np.multiply(do, tmp2, out=do)
        # c: dc += dh * o * (1 - tanh(c)^2)
        np.multiply(tmp, tmp, out=tmp)
        np.subtract(1.0, tmp, out=tmp)
        np.multiply(tmp, o, out=tmp)
        np.multiply(tmp, dh, out=tmp)
        np.add(dc, tmp, out=dc)
        # i: dc * g * i * (1 - i);  g: dc * i * (1 - g^2);  f: dc * c_prev * f * (1 - f)
        np.subtract(1.0, i, out=tmp)
        np.multiply(tmp, i, out=tmp)
        np.multiply(tmp, gg, out=tmp)
        np.multiply(dc, tmp, out=di)
        np.multiply(gg, gg, out=tmp)
        np.subtract(1.0, tmp, out=tmp)
        np.multiply(tmp, i, out=tmp)
        np.multiply(dc, tmp, out=dg)
        if t > 0:
            np.subtract(1.0, f, out=tmp)
            np.multiply(tmp, f, out=tmp)
            np.multiply(tmp, cells[:, t - 1], out=tmp)
            np.multiply(dc, tmp, out=df)
        else:
            df.fill(0.0)
        # the previous states: dc * f and dgates @ W_hh
        np.multiply(dc, f, out=dc)
        np.matmul(d, w_hh, out=dh)
    _input_gradients(x, w_ih, w_hh, dgates, dgates, prev, dx=dx, dw_ih=dw_ih, dw_hh=dw_hh, db_ih=db_ih, db_hh=db_hh)
