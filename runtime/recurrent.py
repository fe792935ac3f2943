"""Recurrent kernels: PyTorch's single-layer GRU and LSTM (batch_first).

In:  x [B, T, F]; weights in PyTorch's layout (w_ih [G*H, F], w_hh [G*H, H],
     biases [G*H] or None; G = 3 for GRU with gates r, z, n and 4 for LSTM
     with gates i, f, g, o); the carried state h [B, H] (and c [B, H]).
Out: out [B, T, H], the hidden state at every step; the chunk kernels leave
     the last state in h (and c) for the next call.

Inference (`gru`, `lstm` and their `_chunk` kernels) runs on the recurrent
engine of `recurrent_infer.py`: input projections a chunk of steps at a
time, then a loop over the steps with the hidden projection a matmul per
step. Scratch comes from the paired `*_scratch` functions (batch first,
linear in the batch), as everywhere in `kernels.py`. Training: `gru_train`
and `lstm_train` run the sequence a chunk of steps at a time (the LSTM also
saves its cells), and the `*_backward` kernels backpropagate through the
whole sequence, recomputing the gates a chunk at a time from x and the
output ("training" below): their scratch is bounded by the chunk.
"""

from __future__ import annotations

import numpy as np


# The inference kernels below run on the recurrent engine (recurrent_infer.py),
# which packs the weights on each call when given PyTorch's arrays (a plan
# packs them once, when its weights are loaded, and calls `rnn_forward`).

def _engine_scratch(kind: str, in_shape, hidden: int, streaming: bool) -> dict[str, tuple]:
    from .recurrent_infer import rnn_scratch
    return rnn_scratch(kind, in_shape, hidden=hidden, streaming=streaming)


def _engine(kind: str, x, weights, out, states, scratch) -> None:
    from .recurrent_infer import as_pack, rnn_forward
    rnn_forward(x, as_pack(kind, weights, hidden=weights[1].shape[1]), out, states=states, scratch=scratch)


def gru_chunk_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    return _engine_scratch("gru", in_shape, hidden, True)


def gru_chunk(x, h, w_ih, w_hh, b_ih, b_hh, out, *, scratch=None) -> None:
    """The GRU over the chunk x [B, n, F] from state h [B, H]; h ends as the last step."""
    _engine("gru", x, (w_ih, w_hh, b_ih, b_hh), out, (h,), scratch)


def gru_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    return _engine_scratch("gru", in_shape, hidden, False)


def gru(x, w_ih, w_hh, b_ih, b_hh, out, *, scratch=None) -> None:
    """The GRU over the whole sequence from a zero state."""
    _engine("gru", x, (w_ih, w_hh, b_ih, b_hh), out, None, scratch)


def lstm_chunk_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    return _engine_scratch("lstm", in_shape, hidden, True)


def lstm_chunk(x, h, c, w_ih, w_hh, b_ih, b_hh, out, *, scratch=None) -> None:
    """The LSTM over the chunk x [B, n, F] from state (h, c); both end as the last step."""
    _engine("lstm", x, (w_ih, w_hh, b_ih, b_hh), out, (h, c), scratch)


def lstm_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    return _engine_scratch("lstm", in_shape, hidden, False)


def lstm(x, w_ih, w_hh, b_ih, b_hh, out, *, scratch=None) -> None:
    """The LSTM over the whole sequence from zero states."""
    _engine("lstm", x, (w_ih, w_hh, b_ih, b_hh), out, None, scratch)


# ------------------------------------------------------------------ training
# The training forwards run the sequence from a zero state like `gru` and
# `lstm`, a chunk of at most `_STEPS` time steps at a time (the input
# projection of a chunk is one matmul); the GRU saves nothing beside its
# output, the LSTM its cell states. The backward (BPTT) runs the chunks from
# the last one: it recomputes a chunk's gates from the layer's input x and the
# saved hidden states (matmuls and elementwise work over the whole chunk),
# turns them into per-step factors, and then steps back through the chunk: the
# gate gradients of step t are the running state gradients times that step's
# factors, and the previous state's gradient is one [B, G*H] @ [G*H, H] matmul
# (the step's gate gradients gathered side by side in `row`). dx, dW_ih, dW_hh
# and the bias gradients are matmuls per chunk (added up over the chunks). So the scratch is bounded by the
# chunk, not the sequence, and no gate is kept from the forward to the
# backward. A chunk's factors are stored slot by slot, each slot an [n*B, H]
# block with time-major rows, so that the elementwise work reads and writes
# whole contiguous blocks (NumPy makes no overlap copies and no iterator
# buffers for them). Flat scratch buffers are used from their start: a
# partial chunk, a smaller batch or a narrower input uses a prefix.

_STEPS = 16       # time steps per chunk in the training kernels


def _steps(t: int) -> int:
    return min(t, _STEPS)


def _chunks(t: int):
    """The chunks [t0, t1) of a sequence of t steps, from the last one."""
    c = max(_STEPS, 1)
    for t1 in range(t, 0, -c):
        yield max(t1 - c, 0), t1


def _scratch_as(scratch, shapes: dict[str, tuple], dtype) -> dict:
    return scratch if scratch is not None else {k: np.empty(s, dtype) for k, s in shapes.items()}


def _take(flat: np.ndarray, *shape: int) -> np.ndarray:
    """The first prod(shape) elements of a flat scratch buffer, as an array of `shape`."""
    n = 1
    for d in shape:
        n *= d
    return flat[:n].reshape(shape)


def _blocks(a: np.ndarray, k: int) -> np.ndarray:
    """a [k*H, ...] (weights, biases, their gradients) as k gate blocks [k, H, ...]: always a view."""
    v = a.view()
    v.shape = (k, a.shape[0] // k, *a.shape[1:])
    return v


def _sigmoid_safe(x: np.ndarray) -> None:
    """In-place sigmoid whose exp cannot overflow (any dtype)."""
    np.negative(x, out=x)
    np.clip(x, -np.inf, 88.0, out=x)
    np.exp(x, out=x)
    np.add(x, 1.0, out=x)
    np.reciprocal(x, out=x)


def _bias(a: np.ndarray, b) -> None:
    if b is not None:
        np.add(a, b, out=a)


def _time_major(flat, src, t0: int, t1: int, shift: bool = False) -> np.ndarray:
    """src[:, t0:t1] [B, n, W] copied time-major into [n, B, W] (from `flat`);
    with `shift` the steps before, src[:, t0-1:t1-1], zero before the first."""
    b, n, w = src.shape[0], t1 - t0, src.shape[2]
    dst = _take(flat, n, b, w)
    if not shift:
        np.copyto(dst, src[:, t0:t1].transpose(1, 0, 2))
    elif t0 == 0:
        dst[0].fill(0.0)
        np.copyto(dst[1:], src[:, :t1 - 1].transpose(1, 0, 2))
    else:
        np.copyto(dst, src[:, t0 - 1:t1 - 1].transpose(1, 0, 2))
    return dst


def _dot(a, b, *, out) -> None:
    """out = a @ b for 2-D operands: np.dot (the least overhead on small
    operands), or np.matmul when the weight `b` is a strided view of storage
    with room (`capacity=`): np.dot would copy the whole weight every call,
    matmul hands its row stride to BLAS."""
    if b.flags.c_contiguous or b.flags.f_contiguous:
        np.dot(a, b, out=out)
    else:
        np.matmul(a, b, out=out)


def _recompute(F, slots: slice, rows, w, blocks: slice, gates: int, b) -> None:
    """F[slots] = rows @ W^T + b for the gate blocks `blocks` of w [G*H, W]
    (np.dot per block: NumPy's matmul is slow when W is 1)."""
    wb = _blocks(w, gates)
    for i, k in enumerate(range(blocks.start, blocks.stop)):
        _dot(rows, wb[k].T, out=F[slots.start + i])
    if b is not None:
        np.add(F[slots], _blocks(b, gates)[blocks, None, :], out=F[slots])


def _project(flat_x, flat_g, x, t0: int, t1: int, w, b) -> np.ndarray:
    """x[:, t0:t1] @ w^T + b time-major [n, B, G*H] (from `flat_g`), through a
    time-major copy of the chunk's inputs (in `flat_x`)."""
    xs = _time_major(flat_x, x, t0, t1)
    n, batch = xs.shape[0], xs.shape[1]
    g = _take(flat_g, n * batch, w.shape[0])
    _dot(xs.reshape(n * batch, -1), w.T, out=g)
    _bias(g, b)
    return g.reshape(n, batch, w.shape[0])


def _acc(first: bool, target, value_fn, tmp) -> None:
    """target = value (first chunk) or target += value; `value_fn(out)` writes the value."""
    if first:
        value_fn(target)
    else:
        t = _take(tmp, *target.shape)
        value_fn(t)
        np.add(target, t, out=target)


def _grad(first: bool, grad, gates: int, blocks: slice, d, rows, s) -> None:
    """The gate blocks `blocks` of a weight's gradient [G*H, W] (+)= d^T rows,
    or of a bias's gradient (rows None) (+)= the sum of d, from the gate
    gradients d [k, n*B, H] of a chunk."""
    if grad is None:
        return
    target = _blocks(grad, gates)[blocks]
    if rows is None:                    # a sum over the rows: a matmul with ones (a reduction is slower)
        ones = _take(s["ones"], d.shape[1])
        ones.fill(1.0)
        _acc(first, target, lambda o: np.matmul(ones, d, out=o), s["btmp"])
    else:
        _acc(first, target, lambda o: np.matmul(d.transpose(0, 2, 1), rows, out=o), s["wtmp"])


def _input_grad(F, order, w_ih, gates: int, xs, dx, t0: int, t1: int, accumulate: bool, s) -> None:
    """dx[:, t0:t1] = (or +=) sum over (slot, gate block) in `order` of
    F[slot] @ W_ih's block, through `xs` (free by now) and `s["dx"]`."""
    if dx is None:
        return
    wb = _blocks(w_ih, gates)
    for i, (slot, block) in enumerate(order):
        if i == 0:
            _dot(F[slot], wb[block], out=xs)
        else:
            part = _take(s["dx"], *xs.shape)
            _dot(F[slot], wb[block], out=part)
            np.add(xs, part, out=xs)
    chunk = xs.reshape(t1 - t0, dx.shape[0], dx.shape[2]).transpose(1, 0, 2)
    if accumulate:
        np.add(dx[:, t0:t1], chunk, out=dx[:, t0:t1])
    else:
        np.copyto(dx[:, t0:t1], chunk)


def _no_steps(dx, grads, accumulate_dx: bool) -> None:
    if dx is not None and not accumulate_dx:
        dx.fill(0.0)
    for g in grads:
        if g is not None:
            g.fill(0.0)


def _backward_scratch(in_shape, hidden: int, gates: int, slots: int) -> dict[str, tuple]:
    """A backward's scratch for chunks of `_steps(T)` steps: `slots` factor
    blocks [n*B, H] (`fac`), the chunk's inputs and starting states
    time-major (`xs`, `ps`), the running state gradient `dh`, `wtmp` and
    `btmp` for adding up the weight and bias gradients over the chunks; with
    more than one gate a step's gate gradients side by side (`row`), the
    previous state's gradient through W_hh (`dhw`) and a part of dx (`dx`);
    `ones` for the bias gradients; the GRU's two temporaries, the LSTM's cell
    gradient `dc`."""
    b, t, f = in_shape
    m = b * _steps(t)
    out = {"fac": (slots * m * hidden,), "xs": (m * f,), "ps": (m * hidden,), "dh": (b, hidden),
           "wtmp": (gates * hidden * max(f, hidden),), "btmp": (gates * hidden,), "ones": (m,)}
    if gates > 1:
        out.update(row=(b * gates * hidden,), dhw=(b, hidden), dx=(m * f,))
    if gates == 3:
        out.update(tmp=(m * hidden,), tmp2=(m * hidden,))
    if gates == 4:
        out["dc"] = (b, hidden)
    return out


def gru_train_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    """Scratch of `gru_train`: a chunk's inputs `xs` and input projections
    `gi` (time-major), one step's hidden projection `gh` and the running state `h`."""
    b, t, f = in_shape
    m = b * _steps(t)
    return {"xs": (m * f,), "gi": (m * 3 * hidden,), "gh": (b, 3 * hidden), "h": (b, hidden)}


def gru_train(x, w_ih, w_hh, b_ih, b_hh, out, *, scratch=None) -> None:
    """`gru` over the whole sequence from a zero state into `out` [B, T, H],
    a chunk of steps at a time, with the sigmoid `gru_backward` recomputes."""
    H = w_hh.shape[1]
    s = _scratch_as(scratch, gru_train_scratch(x.shape, H), x.dtype)
    gh, h = s["gh"], s["h"]
    h.fill(0.0)
    for t0, t1 in reversed(list(_chunks(x.shape[1]))):
        gi = _project(s["xs"], s["gi"], x, t0, t1, w_ih, b_ih)
        for t in range(t0, t1):
            if t == 0:
                gh.fill(0.0)
            else:
                _dot(h, w_hh.T, out=gh)
            _bias(gh, b_hh)
            g = gi[t - t0]
            rz, n = g[:, :2 * H], g[:, 2 * H:]
            np.add(rz, gh[:, :2 * H], out=rz)
            _sigmoid_safe(rz)
            np.multiply(rz[:, :H], gh[:, 2 * H:], out=gh[:, 2 * H:])
            np.add(n, gh[:, 2 * H:], out=n)
            np.tanh(n, out=n)
            np.subtract(h, n, out=h)              # h' = n + z * (h - n)
            np.multiply(h, rz[:, H:], out=h)
            np.add(h, n, out=h)
            np.copyto(out[:, t], h)


def gru_backward_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    """Scratch of `gru_backward`, bounded by a chunk of steps (5 factor blocks)."""
    return _backward_scratch(in_shape, hidden, 3, 5)


def gru_backward(x, w_ih, w_hh, b_ih, b_hh, out, dy, *, dx, dw_ih, dw_hh, db_ih, db_hh, accumulate_dx=False,
                 scratch=None) -> None:
    """Gradients of `gru_train` through the whole sequence, from the output
    gradient `dy` [B, T, H]: overwrite dx [B, T, F] (or add to it with
    `accumulate_dx`), dw_ih, dw_hh and (unless None, as any of them) db_ih,
    db_hh. Reads the input x and the output `out`, nothing else of the forward."""
    B, T, H = x.shape[0], x.shape[1], w_hh.shape[1]
    s = _scratch_as(scratch, gru_backward_scratch(x.shape, H), x.dtype)
    if T == 0:
        _no_steps(dx, (dw_ih, dw_hh, db_ih, db_hh), accumulate_dx)
        return
    dh, dhw, row = s["dh"], s["dhw"], _take(s["row"], B, 3 * H)
    rows = row.reshape(B, 3, H).transpose(1, 0, 2)
    dh.fill(0.0)
    for k, (t0, t1) in enumerate(_chunks(T)):
        n, first = t1 - t0, k == 0
        m = n * B
        xs = _time_major(s["xs"], x, t0, t1).reshape(m, x.shape[2])
        ps = _time_major(s["ps"], out, t0, t1, shift=True).reshape(m, H)
        S = _take(s["fac"], 5, m, H)
        hn, tmp = _take(s["tmp"], 1, m, H), _take(s["tmp2"], m, H)
        # the gates: r, z = sigmoid(x W_ir,z^T + h W_hr,z^T + biases) in S1, S2;
        # hn = h W_hn^T + b_hn; n = tanh(x W_in^T + b_in + r * hn) in S0
        _recompute(S, slice(1, 3), xs, w_ih, slice(0, 2), 3, b_ih)
        _recompute(S, slice(3, 5), ps, w_hh, slice(0, 2), 3, b_hh)
        np.add(S[1:3], S[3:5], out=S[1:3])
        _sigmoid_safe(S[1:3])
        _recompute(S, slice(0, 1), xs, w_ih, slice(2, 3), 3, b_ih)
        _recompute(hn, slice(0, 1), ps, w_hh, slice(2, 3), 3, b_hh)
        hn = hn[0]
        np.multiply(S[1], hn, out=S[3])
        np.add(S[0], S[3], out=S[0])
        np.tanh(S[0], out=S[0])
        # the factors, in S0..S4: n: (1 - z)(1 - n^2);  r: n's * hn * r (1 - r);
        # z: (h_prev - n) z (1 - z);  W_hn h + b_hn: n's * r;  z itself (dh * z to h_prev)
        np.copyto(S[4], S[2])
        np.subtract(1.0, S[2], out=S[3])
        np.subtract(ps, S[0], out=tmp)
        np.multiply(S[2], S[3], out=S[2])
        np.multiply(S[2], tmp, out=S[2])
        np.multiply(S[0], S[0], out=tmp)
        np.subtract(1.0, tmp, out=tmp)
        np.multiply(S[3], tmp, out=S[3])
        np.subtract(1.0, S[1], out=tmp)
        np.multiply(tmp, S[1], out=tmp)
        np.multiply(tmp, hn, out=tmp)
        np.multiply(tmp, S[3], out=tmp)
        np.copyto(S[0], S[3])
        np.multiply(S[3], S[1], out=S[3])
        np.copyto(S[1], tmp)
        # per step: [dgi_n, dgi_r = dgh_r, dgi_z = dgh_z, dgh_n, dh * z] = dh * factors;
        # the previous state's gradient: dh * z + dgh @ W_hh (dgh side by side in `row`)
        F4 = S.reshape(5, n, B, H)
        for t in reversed(range(n)):
            np.add(dh, dy[:, t0 + t], out=dh)
            ft = F4[:, t]
            np.multiply(ft, dh, out=ft)
            np.copyto(rows, ft[1:4])
            _dot(row, w_hh, out=dhw)
            np.add(ft[4], dhw, out=dh)
        _grad(first, dw_ih, 3, slice(0, 2), S[1:3], xs, s)
        _grad(first, dw_ih, 3, slice(2, 3), S[0:1], xs, s)
        _grad(first, dw_hh, 3, slice(0, 3), S[1:4], ps, s)
        _grad(first, db_ih, 3, slice(0, 2), S[1:3], None, s)
        _grad(first, db_ih, 3, slice(2, 3), S[0:1], None, s)
        _grad(first, db_hh, 3, slice(0, 3), S[1:4], None, s)
        _input_grad(S, ((1, 0), (2, 1), (0, 2)), w_ih, 3, xs, dx, t0, t1, accumulate_dx, s)


def lstm_train_scratch(in_shape, hidden: int) -> dict[str, tuple]:
    """Scratch of `lstm_train`: a chunk's inputs `xs` and gates `gi`
    (time-major) and one step's hidden projection `gh`."""
    b, t, f = in_shape
    m = b * _steps(t)
    return {"xs": (m * f,), "gi": (m * 4 * hidden,), "gh": (b, 4 * hidden)}


def lstm_train(x, w_ih, w_hh, b_ih, b_hh, out, cells, *, scratch=None) -> None:
    """`lstm` over the whole sequence from zero states into `out` [B, T, H],
    a chunk of steps at a time, saving the cell states `cells` [B, T, H]."""
    H = w_hh.shape[1]
    s = _scratch_as(scratch, lstm_train_scratch(x.shape, H), x.dtype)
    gh = s["gh"]
    for t0, t1 in reversed(list(_chunks(x.shape[1]))):
        gates = _project(s["xs"], s["gi"], x, t0, t1, w_ih, b_ih)
        for t in range(t0, t1):
            g = gates[t - t0]
            if t > 0:
                _dot(out[:, t - 1], w_hh.T, out=gh)
                np.add(g, gh, out=g)
            _bias(g, b_hh)
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
    """Scratch of `lstm_backward`, bounded by a chunk of steps (8 factor blocks)."""
    return _backward_scratch(in_shape, hidden, 4, 8)


def lstm_backward(x, w_ih, w_hh, b_ih, b_hh, out, cells, dy, *, dx, dw_ih, dw_hh, db_ih, db_hh, accumulate_dx=False,
                  scratch=None) -> None:
    """Gradients of `lstm_train` through the whole sequence, from the output
    gradient `dy` [B, T, H]: overwrite dx [B, T, F] (or add to it with
    `accumulate_dx`), dw_ih, dw_hh and (unless None, as any of them) db_ih,
    db_hh. Reads the input x, the output `out` and the cells."""
    B, T, H = x.shape[0], x.shape[1], w_hh.shape[1]
    s = _scratch_as(scratch, lstm_backward_scratch(x.shape, H), x.dtype)
    if T == 0:
        _no_steps(dx, (dw_ih, dw_hh, db_ih, db_hh), accumulate_dx)
        return
    dh, dc, dhw, row = s["dh"], s["dc"], s["dhw"], _take(s["row"], B, 4 * H)
    rows = row.reshape(B, 4, H).transpose(1, 0, 2)
    dh.fill(0.0)
    dc.fill(0.0)
    for k, (t0, t1) in enumerate(_chunks(T)):
        n, first = t1 - t0, k == 0
        m = n * B
        xs = _time_major(s["xs"], x, t0, t1).reshape(m, x.shape[2])
        ps = _time_major(s["ps"], out, t0, t1, shift=True).reshape(m, H)
        S = _take(s["fac"], 8, m, H)
        # the gates i, f, g, o in S0..S3
        _recompute(S, slice(0, 4), xs, w_ih, slice(0, 4), 4, b_ih)
        _recompute(S, slice(4, 8), ps, w_hh, slice(0, 4), 4, b_hh)
        np.add(S[0:4], S[4:8], out=S[0:4])
        _sigmoid_safe(S[0:2])
        np.tanh(S[2], out=S[2])
        _sigmoid_safe(S[3])
        _time_major(S[6].reshape(-1), cells, t0, t1)                 # c
        _time_major(S[7].reshape(-1), cells, t0, t1, shift=True)     # c_prev
        # the factors: i: g i (1 - i), f: c_prev f (1 - f), g: i (1 - g^2) [x dc];
        # o: tanh(c) o (1 - o), c: o (1 - tanh(c)^2) [x dh]; f itself (dc * f to c_prev)
        np.tanh(S[6], out=S[6])
        np.copyto(S[5], S[1])
        np.multiply(S[6], S[6], out=S[4])
        np.subtract(1.0, S[4], out=S[4])
        np.multiply(S[4], S[3], out=S[4])
        np.multiply(S[6], S[3], out=S[6])
        np.subtract(1.0, S[3], out=S[3])
        np.multiply(S[3], S[6], out=S[3])
        np.subtract(1.0, S[1], out=S[6])
        np.multiply(S[6], S[1], out=S[6])
        np.multiply(S[6], S[7], out=S[1])
        np.multiply(S[2], S[2], out=S[6])
        np.subtract(1.0, S[6], out=S[6])
        np.multiply(S[6], S[0], out=S[6])
        np.subtract(1.0, S[0], out=S[7])
        np.multiply(S[7], S[0], out=S[7])
        np.multiply(S[7], S[2], out=S[0])
        np.copyto(S[2], S[6])
        # per step: dc += dh * c's factor; [di, df, dg] = dc * factors, do = dh * o's;
        # the previous states: dc * f and [di, df, dg, do] @ W_hh (side by side in `row`)
        F4 = S.reshape(8, n, B, H)
        for t in reversed(range(n)):
            ft = F4[:, t]
            np.add(dh, dy[:, t0 + t], out=dh)
            np.multiply(dh, ft[4], out=dhw)
            np.add(dc, dhw, out=dc)
            np.multiply(ft[0:3], dc, out=ft[0:3])
            np.multiply(ft[3], dh, out=ft[3])
            np.multiply(dc, ft[5], out=dc)
            np.copyto(rows, ft[0:4])
            _dot(row, w_hh, out=dh)
        d = S[0:4]
        _grad(first, dw_ih, 4, slice(0, 4), d, xs, s)
        _grad(first, dw_hh, 4, slice(0, 4), d, ps, s)
        _grad(first, db_ih, 4, slice(0, 4), d, None, s)
        if db_hh is not None and db_ih is not None:
            np.copyto(db_hh, db_ih)
        else:
            _grad(first, db_hh, 4, slice(0, 4), d, None, s)
        _input_grad(S, ((0, 0), (1, 1), (2, 2), (3, 3)), w_ih, 4, xs, dx, t0, t1, accumulate_dx, s)
