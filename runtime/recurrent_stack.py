"""Stacked and two-way recurrent layers (nn.GRU / nn.LSTM / nn.RNN with
num_layers and bidirectional), built from the single-layer kernels of
`recurrent.py` and the RNN's below (tanh or relu, `nonlinearity`).

In:  `kind` "gru", "lstm" or "rnn"; x [B, T, F]; `weights`, a flat tuple of four
     arrays per layer and direction in PyTorch's order (`_l0`, `_l0_reverse`,
     `_l1`, ...): w_ih, w_hh, b_ih, b_hh (biases None without bias); `hidden`,
     `layers`, `dirs` (1 or 2).
Out: out [B, T, dirs * H], the last layer's outputs, the forward direction
     in the first H columns and the reverse one (run from the last step to
     the first) in the next H, as PyTorch. Inference (`rnn_stack`,
     `rnn_stack_chunk`, which streams one-way stacks carrying every layer's
     state, [B, layers * H] each for h and c, and the one-layer `rnn`,
     `rnn_chunk`) runs on the recurrent engine of `recurrent_infer.py`, with
     scratch bounded by a chunk of steps. Training (the reverse direction on
     time-reversed views of its input and output, nothing copied):
     `rnn_stack_train` also keeps each lower layer's output (and the LSTM's
     cells); `rnn_stack_backward` runs BPTT per layer and direction from the
     top with the single-layer backward kernels, which recompute the gates a
     chunk of steps at a time; the reverse direction adds its input gradient
     to the forward one's in place.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import recurrent as R
from .recurrent_infer import as_pack, rnn_forward
from .recurrent_infer import rnn_scratch as rnn_scratch_of

_REV = slice(None, None, -1)
_FWD = slice(None)
_SAVES = {"gru": 0, "lstm": 1, "rnn": 0}     # tensors kept per layer and direction: the LSTM's cells


# ------------------------------------------------------------------ nn.RNN (one layer)
# h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu. The
# backward reads the outputs only: tanh' = 1 - h^2, relu' = (h > 0).

def rnn_chunk_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    return rnn_scratch_of("rnn", in_shape, hidden=hidden, streaming=True)


def rnn_chunk(x, h, w_ih, w_hh, b_ih, b_hh, out, *, nonlinearity: str = "tanh", scratch=None) -> None:
    """The RNN over the chunk x [B, n, F] from state h [B, H]; h ends as the last step."""
    pack = as_pack("rnn", (w_ih, w_hh, b_ih, b_hh), hidden=h.shape[1], nonlinearity=nonlinearity)
    rnn_forward(x, pack, out, states=(h,), scratch=scratch)


def rnn_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    return rnn_scratch_of("rnn", in_shape, hidden=hidden)


def rnn(x, w_ih, w_hh, b_ih, b_hh, out, *, nonlinearity: str = "tanh", scratch=None) -> None:
    """The RNN over the whole sequence from a zero state."""
    pack = as_pack("rnn", (w_ih, w_hh, b_ih, b_hh), hidden=w_hh.shape[1], nonlinearity=nonlinearity)
    rnn_forward(x, pack, out, scratch=scratch)


def rnn_train_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    """Scratch of `rnn_train`: a chunk's inputs `xs` and input projections `gi`
    (time-major) and one step's `gh`."""
    b, t, f = in_shape
    m = b * R._steps(t)
    return {"xs": (m * f,), "gi": (m * hidden,), "gh": (b, hidden)}


def rnn_train(x, w_ih, w_hh, b_ih, b_hh, out, *, nonlinearity: str = "tanh", scratch=None) -> None:
    """`rnn` from a zero state, a chunk of `recurrent._STEPS` steps at a time (bounded scratch)."""
    hidden = w_hh.shape[1]
    s = R._scratch_as(scratch, rnn_train_scratch(x.shape, hidden), x.dtype)
    gh = s["gh"]
    for t0, t1 in reversed(list(R._chunks(x.shape[1]))):
        gi = R._project(s["xs"], s["gi"], x, t0, t1, w_ih, b_ih)
        for t in range(t0, t1):
            ht = out[:, t]
            if t == 0:
                gh.fill(0.0)
            else:
                R._dot(out[:, t - 1], w_hh.T, out=gh)
            R._bias(gh, b_hh)
            np.add(gi[t - t0], gh, out=ht)
            if nonlinearity == "relu":
                np.clip(ht, 0.0, np.inf, out=ht)
            else:
                np.tanh(ht, out=ht)


def rnn_backward_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    """Scratch of `rnn_backward`, bounded by a chunk of steps (as `gru_backward`'s)."""
    return R._backward_scratch(in_shape, hidden, 1, 1)


def rnn_backward(x, w_ih, w_hh, out, dy, *, nonlinearity: str = "tanh", dx, dw_ih, dw_hh, db_ih, db_hh,
                 accumulate_dx: bool = False, scratch=None) -> None:
    """Gradients of `rnn` through the whole sequence (BPTT) from dy [B, T, H],
    a chunk of steps at a time: act'(h) of the chunk's steps (tanh' = 1 - h^2,
    relu' = h > 0), then per step dgates = dh * act'(h), dh_prev = dgates @ W_hh."""
    b, T, hidden = x.shape[0], x.shape[1], w_hh.shape[1]
    s = R._scratch_as(scratch, rnn_backward_scratch(x.shape, hidden), x.dtype)
    if T == 0:
        R._no_steps(dx, (dw_ih, dw_hh, db_ih, db_hh), accumulate_dx)
        return
    dh = s["dh"]
    dh.fill(0.0)
    for k, (t0, t1) in enumerate(R._chunks(T)):
        n, first = t1 - t0, k == 0
        m = n * b
        xs = R._time_major(s["xs"], x, t0, t1).reshape(m, x.shape[2])
        ps = R._time_major(s["ps"], out, t0, t1, shift=True).reshape(m, hidden)
        d = R._time_major(s["fac"], out, t0, t1)
        if nonlinearity == "relu":
            np.greater(d, 0, out=d)
        else:
            np.multiply(d, d, out=d)
            np.subtract(1.0, d, out=d)
        for t in reversed(range(n)):
            np.add(dh, dy[:, t0 + t], out=dh)
            np.multiply(d[t], dh, out=d[t])
            R._dot(d[t], w_hh, out=dh)
        d1 = d.reshape(1, m, hidden)
        R._grad(first, dw_ih, 1, slice(0, 1), d1, xs, s)
        R._grad(first, dw_hh, 1, slice(0, 1), d1, ps, s)
        R._grad(first, db_ih, 1, slice(0, 1), d1, None, s)
        R._grad(first, db_hh, 1, slice(0, 1), d1, None, s)
        R._input_grad(d1, ((0, 0),), w_ih, 1, xs, dx, t0, t1, accumulate_dx, s)


def rnn_stack_scratch(kind: str, in_shape, hidden: int, layers: int, dirs: int) -> dict[str, tuple]:
    """Scratch of `rnn_stack`: the recurrent engine's (`recurrent_infer.rnn_scratch`)."""
    return rnn_scratch_of(kind, in_shape, hidden=hidden, layers=layers, dirs=dirs)


def rnn_stack(kind: str, x, weights: Sequence, out, *, hidden: int, layers: int, dirs: int,
              nonlinearity: str = "tanh", scratch=None) -> None:
    """The stacked (and two-way) GRU, LSTM or RNN over the whole sequence from
    zero states, on the recurrent engine (`weights`: PyTorch's flat tuple, or a pack)."""
    pack = as_pack(kind, weights, hidden=hidden, layers=layers, dirs=dirs, nonlinearity=nonlinearity)
    rnn_forward(x, pack, out, scratch=scratch)


def rnn_stack_chunk_scratch(kind: str, in_shape, hidden: int, layers: int, dirs: int) -> dict[str, tuple]:
    return rnn_scratch_of(kind, in_shape, hidden=hidden, layers=layers, dirs=1, streaming=True)


def rnn_stack_chunk(kind: str, x, states: Sequence, weights: Sequence, out, *, hidden: int, layers: int,
                    dirs: int = 1, nonlinearity: str = "tanh", scratch=None) -> None:
    """A one-way stack over the chunk x [B, n, F] from its carried states
    (h, and c for the LSTM, each [B, layers * H]); they end as the last step."""
    pack = as_pack(kind, weights, hidden=hidden, layers=layers, dirs=1, nonlinearity=nonlinearity)
    rnn_forward(x, pack, out, states=states, scratch=scratch)


# ------------------------------------------------------------------ training

def _widest(in_shape, hidden: int, layers: int, dirs: int) -> tuple:
    """`in_shape` with the widest input any layer reads (layer k > 0 reads dirs * H)."""
    b, t, f = in_shape
    return (b, t, max(f, dirs * hidden) if layers > 1 else f)


def rnn_stack_train_scratch(kind: str, in_shape, hidden: int, layers: int, dirs: int,
                            nonlinearity: str = "tanh") -> dict[str, tuple]:
    return {"gru": R.gru_train_scratch, "lstm": R.lstm_train_scratch, "rnn": rnn_train_scratch}[kind](
        _widest(in_shape, hidden, layers, dirs), hidden)


def rnn_stack_train(kind: str, x, weights: Sequence, out, saved: Sequence, *, hidden: int, layers: int, dirs: int,
                    nonlinearity: str = "tanh", scratch=None) -> None:
    """`rnn_stack` from zero states, keeping what the backward reads beside
    the input and output: `saved` holds, for the LSTM, per layer and direction
    its cells [B, T, H] in their own time order, then the outputs
    [B, T, dirs * H] of the layers below the last."""
    per = _SAVES[kind]
    mids = saved[per * layers * dirs:]
    H = hidden
    for k in range(layers):
        src = x if k == 0 else mids[k - 1]
        dst = out if k == layers - 1 else mids[k]
        for d in range(dirs):
            i = k * dirs + d
            w = weights[4 * i:4 * i + 4]
            t = _REV if d else _FWD
            keep = saved[per * i:per * i + per]
            if kind == "rnn":
                rnn_train(src[:, t], *w, dst[:, t, d * H:(d + 1) * H], nonlinearity=nonlinearity, scratch=scratch)
            elif kind == "gru":
                R.gru_train(src[:, t], *w, dst[:, t, d * H:(d + 1) * H], scratch=scratch)
            else:
                R.lstm_train(src[:, t], *w, dst[:, t, d * H:(d + 1) * H], *keep, scratch=scratch)


def rnn_stack_backward_scratch(kind: str, in_shape, hidden: int, layers: int, dirs: int,
                               nonlinearity: str = "tanh") -> dict[str, tuple]:
    """Scratch of `rnn_stack_backward`: the single-layer backward's (for the
    widest layer input) and, for a two-way stack, one gradient of a lower
    layer's output (`dmid`); the other lower layers' output gradients reuse dy."""
    b, t, f = in_shape
    out = dict({"gru": R.gru_backward_scratch, "lstm": R.lstm_backward_scratch,
                "rnn": rnn_backward_scratch}[kind](_widest(in_shape, hidden, layers, dirs), hidden))
    if dirs == 2 and layers > 1:
        out["dmid"] = (b, t, dirs * hidden)
    return out


def rnn_stack_backward(kind: str, x, weights: Sequence, out, saved: Sequence, dy, *, hidden: int, layers: int,
                       dirs: int, dx, grads: Sequence, nonlinearity: str = "tanh", scratch=None) -> None:
    """Gradients of `rnn_stack_train` from the output gradient dy: overwrite
    dx (unless None) and `grads` (four per layer and direction, as
    `weights`; None: not wanted). dy is overwritten: it holds the gradients of
    lower layers' outputs. A one-way layer writes its input gradient over its
    output gradient, a chunk at a time behind its reads; a two-way one reads
    all of its output gradient in each direction, so it alternates between dy
    and `dmid`. The reverse direction adds its input gradient to the forward one's."""
    if scratch is None:
        scratch = {k: np.empty(s, x.dtype) for k, s in
                   rnn_stack_backward_scratch(kind, x.shape, hidden, layers, dirs).items()}
    per = _SAVES[kind]
    mids = saved[per * layers * dirs:]
    H = hidden

    def grad_of_mid(j: int):           # the gradient of layer j's output, j < layers - 1
        return dy if dirs == 1 or (layers - 2 - j) % 2 else scratch["dmid"]

    for k in reversed(range(layers)):
        src = x if k == 0 else mids[k - 1]
        dst = out if k == layers - 1 else mids[k]
        ddst = dy if k == layers - 1 else grad_of_mid(k)
        dsrc = dx if k == 0 else grad_of_mid(k - 1)
        for d in range(dirs):
            i = k * dirs + d
            w = weights[4 * i:4 * i + 4]
            g = grads[4 * i:4 * i + 4]
            t = _REV if d else _FWD
            cols = slice(d * H, (d + 1) * H)
            target = None if dsrc is None else dsrc[:, t]
            kw = dict(dx=target, dw_ih=g[0], dw_hh=g[1], db_ih=g[2], db_hh=g[3], accumulate_dx=d == 1,
                      scratch=scratch)
            if kind == "rnn":
                rnn_backward(src[:, t], w[0], w[1], dst[:, t, cols], ddst[:, t, cols], nonlinearity=nonlinearity,
                             **kw)
            elif kind == "gru":
                R.gru_backward(src[:, t], *w, dst[:, t, cols], ddst[:, t, cols], **kw)
            else:
                R.lstm_backward(src[:, t], *w, dst[:, t, cols], *saved[per * i:per * i + per], ddst[:, t, cols],
                                **kw)
