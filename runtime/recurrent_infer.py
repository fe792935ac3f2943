"""The inference engine of the recurrent kernels: GRU, LSTM and RNN layers,
stacked and two-way, over a whole sequence or a streamed chunk, with scratch
bounded by a chunk of time steps.

In:  `kind` "gru", "lstm" or "rnn"; x [B, T, F]; the layer weights packed
     once by `rnn_pack` (from PyTorch's flat tuple: w_ih, w_hh, b_ih, b_hh per
     layer and direction); `chunk`, the time steps whose input projections
     are one matmul (`rnn_tiles` picks it within a scratch budget); scratch as
     `rnn_scratch` names it; for a stream, the carried states h (and c), each
     [B, layers * H].
Out: out [B, T, dirs * H] (the forward direction's outputs in the first H
     columns, the reverse one's in the next H, as PyTorch).

The pack. Weights are transposed for `x @ W`, the hidden biases folded into
the input biases where PyTorch adds them unchanged (every LSTM and RNN gate,
the GRU's r and z; the GRU keeps b_hn, which r multiplies), and the gates
whose nonlinearity is a sigmoid are scaled by 1/2, so that one tanh serves
every gate of a step (sigmoid(a) = (1 + tanh(a / 2)) / 2); the LSTM's gates
are reordered to o, i, f, g, so that its three sigmoids are one slice and
i, f one slice beside g and the cell (see below). The two directions of a
layer sit side by side ([2, ...]). For a run step by step, `aug` stacks a
layer's weights for one matmul of the row [h, 1, x] (every bias in it). The
GRU's n gate takes 1 and x there, and W_hn h + b_hn is a second matmul of
[h, 1] (`augh`), so that an infinite x meets no zero weight (inf * 0 = NaN
where PyTorch is finite); its `aug` also gives -z beside z, so that one
tanh gives 1 - z and z. The chunked GRU's `whh` has columns n | r, z | 0:
one add of a step's input projections completes r, z and n's input part.

A step. The gates go to a block of scratch per direction: the LSTM's holds
the cell after its gates, so that at batch 1 [i, f] * [g, c] is one
multiply; the GRU's row is [n, h, 1, x], n's slot beside h, so that
h' = (1 - z) * n + z * h is one multiply of [1 - z, z] by [n, h] and one
add. Constants are 0-d arrays (a ufunc converts a Python float at every
call), outputs positional, and the products np.dot where it takes the
operands as they are (its call costs a fraction of np.matmul's at these
sizes). The views and loops of a run are made once, for the scratch arrays,
pack, states and sizes of a call, and kept while the scratch lives
(`_run_for`: a plan passes the same arrays at every call), so that a step
is only NumPy calls, in one Python function for a direction: at batch 1
step by step, the LSTM's 10 (the input copied in, one matmul, 7
elementwise, the state copied out), the GRU's 12 (the same with two
matmuls and 8 elementwise), the RNN's 4; chunked, the LSTM's 9, the GRU's
12, the RNN's 3. A two-way layer's directions run one after the other at batch 1 (a call
on contiguous views is quicker than one on both directions' strided ones).

Schedules. Chunks of one step (tiles = 1, the plan's choice when its scratch
is tight) run step by step on rows [h, 1, x] (`hx`): no input projection is
kept, the input is copied into the row and the state is the row's h. Longer
chunks take a chunk's input projections as one matmul into `gi`, and a step
is then the hidden matmul plus the step's projections.
- one-way stacks run every layer over a step (or a chunk) before the next
  (a layer's output feeds the next one in `hx` or in `mid`, in place), so no
  layer's whole output is kept: each lower layer carries its state in `hx`
  or `h` (and its cell in its block).
- a two-way layer runs both directions together, the reverse one stepping
  from the last step back (chunked: its chunk of inputs copied in its step
  order, `xrev`, states in `h`); layers below the last two write their
  outputs whole (`mid0`, `mid1`), the second-to-last (or a lone layer) into
  `out`. The last layer then runs its reverse direction into `keep` [B, T, H]
  (reading `out`), its forward one into out's forward half (reading a step of
  `out` before writing it), and `keep` is copied to out's reverse half: one
  direction of the layer below is kept whole beside the output, not both.
Without a carried state the first step starts from zero (chunked: it skips
the hidden matmul, and one-way stacks' last layers read their previous state
from `out`, a two-way stack's last layer from `out` or `keep`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GATES = {"gru": 3, "lstm": 4, "rnn": 1}
RNN_TILE = 1 << 14       # floats of scratch per example when no budget is given


@dataclass(frozen=True, slots=True)
class RnnPack:
    """The weights of a recurrent layer stack in the engine's layout (see above)."""

    kind: str
    hidden: int
    layers: int
    dirs: int
    nonlinearity: str
    wih: tuple[np.ndarray, ...]            # per layer: [dirs, F_k, G*H]
    whh: tuple[np.ndarray, ...]            # per layer: [dirs, H, G*H] (GRU: [dirs, H, 4H], columns n | r, z | 0)
    bias: tuple[np.ndarray, ...]           # per layer: [dirs, G*H]
    bhn: tuple[np.ndarray | None, ...]     # per layer, GRU with biases: [dirs, 1, H], b_hn
    aug: tuple[np.ndarray, ...] = ()       # per layer: [dirs, H + 1 + F_k, G*H] for [h, 1, x] @ aug
                                           # (GRU: 4H columns r, -z, z, n; n from 1 and x only)
    augh: tuple[np.ndarray, ...] = ()      # per layer, GRU: [dirs, H + 1, H] for [h, 1] @ augh = W_hn h + b_hn


def _gate_rows(kind: str, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(PyTorch's gate rows in the packed order, their scale)."""
    if kind == "lstm":                                    # i, f, g, o -> o, i, f, g
        order = np.r_[3 * h:4 * h, 0:2 * h, 2 * h:3 * h]
        scale = np.r_[np.full(3 * h, 0.5), np.ones(h)]
    elif kind == "gru":                                   # r, z scaled; n as is
        order = np.arange(3 * h)
        scale = np.r_[np.full(2 * h, 0.5), np.ones(h)]
    else:
        order, scale = np.arange(h), np.ones(h)
    return order, scale.astype(np.float32)


def rnn_pack(kind: str, weights: Sequence, *, hidden: int, layers: int = 1, dirs: int = 1,
             nonlinearity: str = "tanh") -> RnnPack:
    """Pack PyTorch's flat weight tuple (w_ih, w_hh, b_ih, b_hh per layer and
    direction; biases None without bias) for the engine."""
    if kind not in GATES:
        raise ValueError(f"unknown recurrent kind {kind!r}")
    h = hidden
    order, scale = _gate_rows(kind, h)
    wih, whh, bias, bhn, aug, augh = [], [], [], [], [], []
    for k in range(layers):
        layer = [weights[4 * (k * dirs + d):4 * (k * dirs + d) + 4] for d in range(dirs)]
        dtype = np.result_type(*(np.asarray(w[0]).dtype for w in layer))
        wi = np.stack([np.asarray(w[0])[order].T * scale for w in layer]).astype(dtype)
        wh = np.stack([np.asarray(w[1])[order].T * scale for w in layer]).astype(dtype)
        b = np.zeros((dirs, GATES[kind] * h), dtype)
        n_bias = np.zeros((dirs, 1, h), dtype)
        for d, (_, _, b_ih, b_hh) in enumerate(layer):
            if b_ih is not None:
                b[d] += np.asarray(b_ih)[order]
            if b_hh is not None:
                hh = np.asarray(b_hh)[order]
                if kind == "gru":
                    b[d, :2 * h] += hh[:2 * h]
                    n_bias[d, 0] = hh[2 * h:]
                else:
                    b[d] += hh
        b = (b * scale).astype(dtype)
        a = np.concatenate([wh, b[:, None, :], wi], axis=1)              # rows h, 1, x
        if kind == "gru":                                               # columns r, -z, z, n
            a[:, :h, 2 * h:] = 0.0                     # n from 1 and x: W_hn h + b_hn is augh's
            a = np.concatenate([a[..., :h], -a[..., h:2 * h], a[..., h:]], axis=-1)
            augh.append(np.concatenate([wh[..., 2 * h:], n_bias], axis=1))
            w4 = np.zeros((dirs, h, 4 * h), dtype)
            w4[..., :h], w4[..., h:3 * h] = wh[..., 2 * h:], wh[..., :2 * h]
            wh = w4
        wih.append(wi)
        whh.append(wh)
        bias.append(b)
        bhn.append(n_bias if kind == "gru" and any(w[3] is not None for w in layer) else None)
        aug.append(a)
    wih, whh, bias, aug, augh = ([np.ascontiguousarray(a) for a in arrays] for arrays in (wih, whh, bias, aug, augh))
    for arrays in (wih, whh, bias, bhn, aug, augh):       # (contiguous: np.dot takes them as they are)
        for arr in arrays:
            if arr is not None:
                arr.flags.writeable = False
    return RnnPack(kind, h, layers, dirs, nonlinearity, tuple(wih), tuple(whh), tuple(bias), tuple(bhn), tuple(aug),
                   tuple(augh))


def as_pack(kind: str, weights, *, hidden: int, layers: int = 1, dirs: int = 1,
            nonlinearity: str = "tanh") -> RnnPack:
    """`weights` if it is already a pack, else its pack (made now: allocates)."""
    if isinstance(weights, RnnPack):
        return weights
    return rnn_pack(kind, weights, hidden=hidden, layers=layers, dirs=dirs, nonlinearity=nonlinearity)


# ------------------------------------------------------------------ scratch

def _block(kind: str, stepwise: bool) -> int:
    """A step's gate block per example and direction, in units of H (see "A step")."""
    return {"lstm": 5, "gru": 5 if stepwise else 4, "rnn": 1}[kind]


def _pad(kind: str, hidden: int) -> int:
    """The GRU's row [n, h, 1, x] has n's slot before h; the others' [h, 1, x] none."""
    return hidden if kind == "gru" else 0


def _rev_width(f: int, hidden: int, layers: int) -> int:
    """The widest input of a two-way stack's layers run both ways at once (all but the last)."""
    return max(f, 2 * hidden) if layers > 2 else f


def _fixed_and_step(kind: str, f: int, hidden: int, layers: int, dirs: int, steps: int) -> tuple[int, int]:
    """(floats of chunked scratch that do not grow with the chunk, floats per step of the chunk), per
    example (`rnn_scratch`'s, streaming or not alike)."""
    g, blk = GATES[kind] * hidden, _block(kind, False) * hidden
    if dirs != 2:
        fixed = blk * (layers if kind == "lstm" else 1) + hidden * layers
        return fixed, g + (hidden if layers > 1 else 0)
    fixed = 2 * blk + 2 * hidden + (steps * hidden if layers > 1 else 0)
    fixed += max(0, min(layers - 2, 2)) * steps * 2 * hidden
    return fixed, 2 * g + _rev_width(f, hidden, layers)


def rnn_tiles(kind: str, in_shape, *, hidden: int, layers: int = 1, dirs: int = 1,
              budget: int | None = None) -> int:
    """Time steps per chunk whose scratch fits `budget` floats per example
    (default `RNN_TILE`), at least one; a plan passes it as `tiles=`, chosen
    at the bound of the time dimension."""
    _, t, f = in_shape
    fixed, per_step = _fixed_and_step(kind, f, hidden, layers, dirs, t)
    limit = RNN_TILE if budget is None else int(budget)
    return max(1, min(t, (limit - fixed) // per_step)) if t else 1


def rnn_scratch(kind: str, in_shape, *, hidden: int, layers: int = 1, dirs: int = 1, streaming: bool = False,
                budget: int | None = None, tiles: int | None = None) -> dict[str, tuple]:
    """Scratch of `rnn_forward` for x `in_shape` and chunks of `tiles` steps
    (by default within `budget`): `gh` (a step's gate block per direction;
    the LSTM's holds its cell, one per layer of a one-way stack), `hx` (the
    rows [h, 1, x] of a run step by step), `gi` (a chunk's input
    projections), `h` (states: lower layers', streamed ones, both directions
    of a layer), `mid` (a one-way stack's chunk between layers), `xrev`,
    `keep`, `mid0`, `mid1` (two-way stacks, see the schedules)."""
    b, t, f = in_shape
    chunk = max(1, min(t, tiles if tiles is not None else rnn_tiles(kind, in_shape, hidden=hidden, layers=layers,
                                                                    dirs=dirs, budget=budget)))
    h, g = hidden, GATES[kind] * hidden
    stepwise = _stepwise(dirs, tiles, kind, in_shape, hidden, layers, budget)
    blk, pad = _block(kind, stepwise) * h, _pad(kind, h)
    if dirs != 2:
        gates = (b, layers * blk if kind == "lstm" else blk)
        if stepwise:
            return {"hx": (b, sum(pad + h + 1 + (f if k == 0 else h) for k in range(layers))), "gh": gates}
        shapes = {"gi": (b, chunk * g), "gh": gates}
        states = layers if streaming else layers - 1      # the last layer reads its state from `out`
        if states:
            shapes["h"] = (b, states * h)
        if layers > 1:
            shapes["mid"] = (b, chunk * h)
        return shapes
    shapes = {"gh": (b, 2 * blk)}
    if stepwise:
        shapes["hx"] = (b, max(2 * (pad + h + 1 + _rev_width(f, h, layers)), pad + 3 * h + 1 if layers > 1 else 0))
    else:
        shapes.update(gi=(b, 2 * chunk * g), h=(b, 2 * h), xrev=(b, chunk * _rev_width(f, h, layers)))
    if layers > 1:
        shapes["keep"] = (b, t * h)
    for k in range(min(layers - 2, 2)):
        shapes[f"mid{k}"] = (b, t * 2 * h)
    return shapes


def _stepwise(dirs: int, tiles, kind: str, in_shape, hidden: int, layers: int, budget) -> bool:
    """Chunks of one step (the planned tiles, not the clamped ones) run step
    by step on rows [h, 1, x] (`_prep_one_step`, `_prep_both_steps`, `_prep_top_steps`)."""
    if tiles is None:
        tiles = rnn_tiles(kind, in_shape, hidden=hidden, layers=layers, dirs=dirs, budget=budget)
    return tiles == 1


def _take(buf: np.ndarray, *shape: int) -> np.ndarray:
    return buf.reshape(-1)[:math.prod(shape)].reshape(shape)


def _shaped(a: np.ndarray, *shape: int) -> np.ndarray:
    """A view of `a` in `shape` (never a copy: numpy raises if it would need one)."""
    v = a.view()
    v.shape = shape
    return v


def _consts(dtype) -> tuple[np.ndarray, np.ndarray]:
    """0.5 and 0 as 0-d arrays: a ufunc takes them much quicker than Python floats."""
    half, zero = np.array(0.5, dtype), np.array(0.0, dtype)
    half.flags.writeable = zero.flags.writeable = False
    return half, zero


def _dot_ok(a: np.ndarray, w: np.ndarray, out: np.ndarray) -> bool:
    """np.dot takes these as they are (no copy): 2-D, rows of unit stride, w
    and out contiguous, out of the product's dtype."""
    s = a.itemsize
    return (a.ndim == w.ndim == out.ndim == 2 and out.flags.c_contiguous and w.flags.c_contiguous
            and a.strides[1] == s and a.strides[0] > 0 and a.strides[0] % s == 0 and a.strides[0] >= s * a.shape[1]
            and np.result_type(a, w) == out.dtype)


def _mm(w: np.ndarray, out: np.ndarray, *operands: np.ndarray):
    """np.dot (a fraction of np.matmul's call cost at these sizes) if it takes every operand as it is, else
    np.matmul."""
    return np.dot if all(_dot_ok(a, w, out) for a in operands) else np.matmul


# ------------------------------------------------------------------ the elementwise part of a step
# `finish(prev, h)` completes a step whose pre-activations are in the gate blocks: the new state into h
# (prev: the old one, which only the chunked GRU reads). Outputs are positional (a keyword costs a little).

def _lstm_cell(gates, c, pair, half):
    """gates [..., 4H] (o, i, f, g; the sigmoid ones halved: one tanh serves every gate), c [..., H] updated.
    `pair`: views [i, f] and [g, c] of one block (batch 1: the cell follows the gates), one multiply for both
    products."""
    H = c.shape[-1]
    s, o, i, f, gg = gates[..., :3 * H], gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:3 * H], gates[..., 3 * H:]
    tanh, mul, add = np.tanh, np.multiply, np.add
    if pair is not None:
        p, q = pair

        def finish(prev, h):
            tanh(gates, gates)
            mul(s, half, s)                    # sigmoid = (1 + tanh(a/2)) / 2
            add(s, half, s)
            mul(p, q, p)                       # i * g, f * c
            add(i, f, c)
            tanh(c, h)
            mul(h, o, h)
    else:
        def finish(prev, h):
            tanh(gates, gates)
            mul(s, half, s)
            add(s, half, s)
            mul(i, gg, i)
            mul(c, f, c)
            add(c, i, c)
            tanh(c, h)
            mul(h, o, h)
    return finish


def _lstm_loop(gates, c, pair, half, m, a, w, h, xin):
    """`_lstm_cell`'s steps with a pair, as one loop(xs, outs): each step's x copied into xin, the matmul
    m(a, w) into gates, the state h copied out."""
    H = c.shape[-1]
    s, o, i, f = gates[..., :3 * H], gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:3 * H]
    p, q = pair

    def loop(xs, outs):
        tanh, mul, add, copyto = np.tanh, np.multiply, np.add, np.copyto
        for xt, ot in zip(xs, outs):
            copyto(xin, xt)
            m(a, w, gates)
            tanh(gates, gates)
            mul(s, half, s)
            add(s, half, s)
            mul(p, q, p)
            add(i, f, c)
            tanh(c, h)
            mul(h, o, h)
            copyto(ot, h)
    return loop


def _gru_cell(rz, nh, n, half):
    """Chunked: rz [..., 2H] (halved), nh = W_hn h + b_hn, n the input part of the n gate:
    n = tanh(n + r * nh); h' = n + z * (h - n)."""
    H = nh.shape[-1]
    r, z = rz[..., :H], rz[..., H:]
    tanh, mul, add, sub = np.tanh, np.multiply, np.add, np.subtract

    def finish(prev, h):
        tanh(rz, rz)
        mul(rz, half, rz)
        add(rz, half, rz)
        mul(nh, r, nh)
        add(n, nh, n)
        tanh(n, n)
        sub(prev, n, h)
        mul(h, z, h)
        add(h, n, h)
    return finish


def _gru_row_cell(g, nh, row, half):
    """Step by step: g [..., 4H] = r, 1 - z, z (halved, before the nonlinearity) and n's input part;
    nh = W_hn h + b_hn; row [..., n, h, ...]: n = tanh(n + r * nh) goes to n's slot, beside h, so that
    h' = (1 - z) * n + z * h is one multiply and one add."""
    H = nh.shape[-1]
    rzz, r, zz, nx = g[..., :3 * H], g[..., :H], g[..., H:3 * H], g[..., 3 * H:]
    n, nh2, h = row[..., :H], row[..., :2 * H], row[..., H:2 * H]
    tanh, mul, add = np.tanh, np.multiply, np.add

    def finish(prev, h_=None):
        tanh(rzz, rzz)
        mul(rzz, half, rzz)
        add(rzz, half, rzz)
        mul(nh, r, nh)
        add(nx, nh, n)
        tanh(n, n)
        mul(zz, nh2, nh2)                      # (1 - z) * n, z * h
        add(n, h, h)
    return finish


def _gru_loop(g, nh, row, half, m0, a0, w0, m1, a1, w1, xin):
    """`_gru_row_cell`'s steps whole, as `_lstm_loop` (the matmuls m0(a0, w0) into g, m1(a1, w1) into nh)."""
    H = nh.shape[-1]
    rzz, r, zz, nx = g[..., :3 * H], g[..., :H], g[..., H:3 * H], g[..., 3 * H:]
    n, nh2, h = row[..., :H], row[..., :2 * H], row[..., H:2 * H]

    def loop(xs, outs):
        tanh, mul, add, copyto = np.tanh, np.multiply, np.add, np.copyto
        for xt, ot in zip(xs, outs):
            copyto(xin, xt)
            m0(a0, w0, g)
            m1(a1, w1, nh)
            tanh(rzz, rzz)
            mul(rzz, half, rzz)
            add(rzz, half, rzz)
            mul(nh, r, nh)
            add(nx, nh, n)
            tanh(n, n)
            mul(zz, nh2, nh2)
            add(n, h, h)
            copyto(ot, h)
    return loop


def _rnn_cell(g, nl, zero):
    if nl == "relu":
        def finish(prev, h):
            np.maximum(g, zero, out=h)
    else:
        def finish(prev, h):
            np.tanh(g, h)
    return finish


def _blocks(kind: str, blk, b: int, H: int, nl: str, consts, row=None, c=None):
    """The views of gate blocks blk [D, b * block] and their `finish`, squeezed to [b, ...] for one
    direction: (dot targets [D, b, ...], cell or None, finish, extra). Step by step (`row`: the rows
    [D, b, pad + H + 1 + F]), extra is the GRU's W_hn h + b_hn targets; chunked, the GRU's (part of the
    block that takes a step's projections, W_hn h + b_hn part); the LSTM's, its pair or None. `c`: a cell
    elsewhere (a streamed LSTM)."""
    D = blk.shape[0]
    half, zero = consts
    sq = (lambda a: a[0]) if D == 1 else (lambda a: a)
    extra = None
    if kind == "lstm":
        targets = _shaped(blk[:, :b * 4 * H], D, b, 4 * H)
        pair = None
        if c is None:
            c = _shaped(blk[:, b * 4 * H:], D, b, H)
            if b == 1:
                pair = (sq(blk[:, H:3 * H]), sq(blk[:, 3 * H:5 * H]))
        c = sq(c)
        finish = _lstm_cell(sq(targets), c, pair, half)
        extra = pair
    elif kind == "gru" and row is not None:
        targets = _shaped(blk[:, :b * 4 * H], D, b, 4 * H)
        extra = _shaped(blk[:, b * 4 * H:], D, b, H)
        finish = _gru_row_cell(sq(targets), sq(extra), sq(row), half)
    elif kind == "gru":
        targets = _shaped(blk, D, b, 4 * H)
        g = sq(targets)
        finish = _gru_cell(g[..., H:3 * H], g[..., :H], g[..., 3 * H:], half)
        extra = (g[..., H:], g[..., :H])
    else:
        targets = _shaped(blk, D, b, H)
        finish = _rnn_cell(sq(targets), nl, zero)
    return targets, c, finish, extra


# ------------------------------------------------------------------ step by step

def _rows(hx, kind: str, H: int):
    """The views of rows hx [..., pad + H + 1 + F] (see `_pad`): (x, h, the 1)."""
    p = _pad(kind, H)
    return hx[..., p + H + 1:], hx[..., p:p + H], hx[..., p + H]


def _aug_cell(kind: str, pack: RnnPack, k: int, dirs: Sequence[int], hx, blk, b: int, consts, c=None):
    """The steps of layer k's directions `dirs` (run together) on their rows hx [D, b, pad + H + 1 + F]
    with gate blocks blk [D, b * block]: (step, cell, loop). step() leaves the new state in the rows' h;
    loop(xs, outs) (one direction) runs a step for each xs[t], copied into the row, and copies its state
    out to outs[t] (the LSTM with a pair and the GRU in one function: no call but NumPy's per step)."""
    H, p = pack.hidden, _pad(kind, pack.hidden)
    targets, c, finish, nh = _blocks(kind, blk, b, H, pack.nonlinearity, consts, hx, c)
    h = hx[0, :, p:p + H] if len(dirs) == 1 else hx[..., p:p + H]
    xin = hx[0, :, p + H + 1:]
    products = [(hx[j, :, p:], pack.aug[k][d], targets[j]) for j, d in enumerate(dirs)]
    if kind == "gru":
        products += [(hx[j, :, p:p + H + 1], pack.augh[k][d], nh[j]) for j, d in enumerate(dirs)]
    products = [(_mm(w, o, a), a, w, o) for a, w, o in products]
    loop = None
    if len(products) == 1:
        (m0, a0, w0, o0), = products
        if kind == "lstm" and nh is not None:           # (the LSTM's extra: its pair)
            loop = _lstm_loop(o0, c, nh, consts[0], m0, a0, w0, h, xin)

        def step():
            m0(a0, w0, o0)
            finish(h, h)
    elif len(products) == 2:
        (m0, a0, w0, o0), (m1, a1, w1, o1) = products
        if kind == "gru":
            loop = _gru_loop(o0, o1, hx[0], consts[0], m0, a0, w0, m1, a1, w1, xin)

        def step():
            m0(a0, w0, o0)
            m1(a1, w1, o1)
            finish(h, h)
    else:
        def step():
            for m, a, w, o in products:
                m(a, w, o)
            finish(h, h)
    if loop is None and len(dirs) == 1:
        def loop(xs, outs):
            copyto = np.copyto
            for xt, ot in zip(xs, outs):
                copyto(xin, xt)
                step()
                copyto(ot, h)
    return step, c, loop


def _prep_one_step(pack: RnnPack, scratch, b: int, T: int, f: int, states):
    """A one-way stack step by step, each layer's state in its row [h, 1, x]
    (`hx`): the step's gates with every bias are one matmul (the GRU's two),
    no input projection is kept. Returns run(x, out, states)."""
    kind, H, L = pack.kind, pack.hidden, pack.layers
    widths = [_pad(kind, H) + H + 1 + (f if k == 0 else H) for k in range(L)]
    hx_all = _take(scratch["hx"], b, sum(widths))
    gh = scratch["gh"].reshape(-1)
    consts = _consts(gh.dtype)
    blk_w = b * _block(kind, True) * H
    carry_cell = kind == "lstm" and states is not None and b == 1 and T >= 3   # the cell in the block (pair)
    layers, inits, o = [], [], 0
    for k in range(L):
        hx = hx_all[:, o:o + widths[k]]
        o += widths[k]
        xin, h, one = _rows(hx, kind, H)
        blk = gh[k * blk_w:(k + 1) * blk_w] if kind == "lstm" else gh[:blk_w]
        c = None
        if kind == "lstm" and states is not None and not carry_cell:
            c = states[1][None, :, k * H:(k + 1) * H]
        step, c, loop = _aug_cell(kind, pack, k, (0,), hx[None], blk[None], b, consts, c)
        own = kind == "lstm" and (states is None or carry_cell)
        inits.append((slice(k * H, (k + 1) * H), one, h, c if own else None))
        layers.append((xin, step, h))
    copyto = np.copyto

    def run(x, out, states):
        for cols, one, h, c in inits:
            one.fill(1.0)
            if states is None:
                h.fill(0.0)
                if c is not None:
                    c.fill(0.0)
            else:
                copyto(h, states[0][:, cols])
                if c is not None:
                    copyto(c, states[1][:, cols])
        xs, outs = x.swapaxes(0, 1), out.swapaxes(0, 1)
        if L == 1:
            loop(xs, outs)
        else:
            for xt, ot in zip(xs, outs):
                src = xt
                for xin, step, h in layers:
                    copyto(xin, src)
                    step()
                    src = h
                copyto(ot, src)
        if states is not None:
            for cols, _, h, c in inits:
                copyto(states[0][:, cols], h)
                if c is not None:
                    copyto(states[1][:, cols], c)
    return run


def _prep_both_steps(pack: RnnPack, k: int, scratch, b: int, f: int):
    """Layer k of a two-way stack, step by step from zero states: run(src,
    fwd_out, rev_out), the forward direction from the first step into
    `fwd_out`, the reverse one from the last into `rev_out` (each [B, T, H]).
    At batch 1 one direction runs after the other (a call on one direction's
    contiguous views is quicker than one on both directions' strided ones),
    else both at once."""
    kind, H = pack.kind, pack.hidden
    hx = _take(scratch["hx"], 2, b, _pad(kind, H) + H + 1 + f)
    xin, h, one = _rows(hx, kind, H)
    blk = _take(scratch["gh"], 2, b * _block(kind, True) * H)
    consts = _consts(blk.dtype)
    if b == 1:
        (_, c0, loop0), (_, c1, loop1) = [_aug_cell(kind, pack, k, (d,), hx[d:d + 1], blk[d:d + 1], b, consts)
                                          for d in (0, 1)]
        cells, step = [c0, c1], None
    else:
        step, c, _ = _aug_cell(kind, pack, k, (0, 1), hx, blk, b, consts)
        cells = [c]
    cells = [c for c in cells if c is not None]
    xf, xr, hf, hr = xin[0], xin[1], h[0], h[1]
    copyto = np.copyto

    def run(src, fwd_out, rev_out):
        one.fill(1.0)
        h.fill(0.0)
        for c in cells:
            c.fill(0.0)
        xs, fo, ro = src.swapaxes(0, 1), fwd_out.swapaxes(0, 1), rev_out.swapaxes(0, 1)
        if step is None:
            loop0(xs, fo)
            loop1(xs[::-1], ro[::-1])
            return
        for sf, sr, of, orv in zip(xs, xs[::-1], fo, ro[::-1]):
            copyto(xf, sf)
            copyto(xr, sr)
            step()
            copyto(of, hf)
            copyto(orv, hr)
    return run


def _prep_top_steps(pack: RnnPack, k: int, d: int, scratch, b: int):
    """The last layer of a two-way stack, direction d, step by step:
    run(out, dst) from the layer below's outputs in `out` [B, T, 2H], into dst
    [B, T, H]."""
    kind, H = pack.kind, pack.hidden
    hx = _take(scratch["hx"], 1, b, _pad(kind, H) + 3 * H + 1)
    _, h, one = _rows(hx, kind, H)
    blk = _take(scratch["gh"], 1, b * _block(kind, True) * H)
    _, c, loop = _aug_cell(kind, pack, k, (d,), hx, blk, b, _consts(blk.dtype))

    def run(out, dst):
        one.fill(1.0)
        h.fill(0.0)
        if c is not None:
            c.fill(0.0)
        xs, ds = out.swapaxes(0, 1), dst.swapaxes(0, 1)
        if d:
            xs, ds = xs[::-1], ds[::-1]
        loop(xs, ds)
    return run


# ------------------------------------------------------------------ chunked

def _chunk_cell(kind: str, pack: RnnPack, k: int, dirs: Sequence[int], blk, b: int, consts, samples, c=None):
    """Layer k's directions `dirs` over a chunk's input projections: (first(g_t), steps, finish, cell).
    first puts a first step's pre-activations (from a zero state) in the blocks blk [D, b * block] from its
    projections g_t ([b, G*H]; both directions: [2, b, G*H]), and finish(prev, h) completes it. One
    direction: steps(gs, rows, prev) runs the steps of projections gs into rows (each [b, H]) from the state
    prev [b, H] and returns the last (the LSTM with a pair and the GRU in one function: no call but NumPy's
    per step). Both: steps(g_t) runs one step from the states samples[0] [2, b, H] into them. `samples`:
    the arrays prev will be (for the choice of matmul)."""
    H, D = pack.hidden, len(dirs)
    targets, c, finish, extra = _blocks(kind, blk, b, H, pack.nonlinearity, consts, None, c)
    acc, nh = extra if kind == "gru" else (targets[0] if D == 1 else targets, None)
    bhn = pack.bhn[k] if kind == "gru" else None
    if bhn is not None and D == 1:
        bhn = bhn[dirs[0]]
    whh = [pack.whh[k][d] for d in dirs]
    add, copyto = np.add, np.copyto

    def first(g_t):                            # from a zero state
        copyto(acc, g_t)
        if nh is not None:
            if bhn is None:
                nh.fill(0.0)
            else:
                copyto(nh, bhn)
    if D == 2:
        state = samples[0]
        p0, p1, t0, t1, w0, w1 = state[0], state[1], targets[0], targets[1], whh[0], whh[1]
        m0, m1 = _mm(w0, t0, p0), _mm(w1, t1, p1)

        def both(g_t):
            m0(p0, w0, t0)
            m1(p1, w1, t1)
            add(acc, g_t, acc)
            if bhn is not None:
                add(nh, bhn, nh)
            finish(state, state)
        return first, both, finish, c
    w, g = whh[0], targets[0]
    m = _mm(w, g, *samples)
    if kind == "lstm" and extra is not None:
        steps = _lstm_chunk_loop(g, c, extra, consts[0], m, w)
    elif kind == "gru":
        steps = _gru_chunk_loop(g, consts[0], m, w, bhn)
    else:
        def steps(gs, rows, prev):
            for g_t, h in zip(gs, rows):
                m(prev, w, g)
                add(acc, g_t, acc)
                finish(prev, h)
                prev = h
            return prev
    return first, steps, finish, c


def _lstm_chunk_loop(gates, c, pair, half, m, w):
    """`_lstm_cell`'s steps with a pair over a chunk (see `_chunk_cell`)."""
    H = c.shape[-1]
    s, o, i, f = gates[..., :3 * H], gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:3 * H]
    p, q = pair

    def steps(gs, rows, prev):
        tanh, mul, add = np.tanh, np.multiply, np.add
        for g_t, h in zip(gs, rows):
            m(prev, w, gates)
            add(gates, g_t, gates)
            tanh(gates, gates)
            mul(s, half, s)
            add(s, half, s)
            mul(p, q, p)
            add(i, f, c)
            tanh(c, h)
            mul(h, o, h)
            prev = h
        return prev
    return steps


def _gru_chunk_loop(g, half, m, w, bhn):
    """`_gru_cell`'s steps over a chunk (see `_chunk_cell`): g [b, 4H] = W_hn h + b_hn | r, z, n."""
    H = g.shape[-1] // 4
    nh, acc, rz, r, z, n = g[..., :H], g[..., H:], g[..., H:3 * H], g[..., H:2 * H], g[..., 2 * H:3 * H], g[..., 3 * H:]

    def steps(gs, rows, prev):
        tanh, mul, add, sub = np.tanh, np.multiply, np.add, np.subtract
        for g_t, h in zip(gs, rows):
            m(prev, w, g)
            add(acc, g_t, acc)
            if bhn is not None:
                add(nh, bhn, nh)
            tanh(rz, rz)
            mul(rz, half, rz)
            add(rz, half, rz)
            mul(nh, r, nh)
            add(n, nh, n)
            tanh(n, n)
            sub(prev, n, h)
            mul(h, z, h)
            add(h, n, h)
            prev = h
        return prev
    return steps


def _gi_steps(gi, axis: int = 1) -> list:
    """The per-step views of a chunk's projections gi [..., n, G] (step axis `axis`)."""
    return list(np.moveaxis(gi, axis, 0))


def _run_chunk(first, steps, finish, gs, rows, prev, zero) -> np.ndarray:
    """The steps of one chunk of one direction: projections `gs`, outputs `rows` (each [b, H]), from
    state prev (None: zero); returns the last state's row."""
    if prev is None:
        first(gs[0])
        finish(zero, rows[0])
        prev, gs, rows = rows[0], gs[1:], rows[1:]
    return steps(gs, rows, prev)


def _prep_one_way(pack: RnnPack, scratch, b: int, T: int, chunk: int, states, out):
    """A one-way stack a chunk at a time: run(x, out, states) (`out` here: for the choice of matmul)."""
    kind, H, L = pack.kind, pack.hidden, pack.layers
    G = GATES[kind] * H
    gh = scratch["gh"].reshape(-1)
    consts = _consts(gh.dtype)
    zero = consts[1]
    blk_w = b * _block(kind, False) * H
    if states is not None:
        hs = [states[0][:, k * H:(k + 1) * H] for k in range(L)]
    else:
        hs = [_take(scratch["h"], L - 1, b, H)[k] for k in range(L - 1)] + [None]
    carry_cell = kind == "lstm" and states is not None and b == 1 and T >= 3
    full_gi = _take(scratch["gi"], b, chunk, G)
    full_steps = _gi_steps(full_gi)
    full_mid = _take(scratch["mid"], b, chunk, H) if L > 1 else None
    gi_buf, mid_buf = scratch["gi"], scratch.get("mid")   # (the run keeps no reference to `scratch`: see _run_for)
    cells, own = [], []
    for k in range(L):
        blk = gh[k * blk_w:(k + 1) * blk_w] if kind == "lstm" else gh[:blk_w]
        c = None
        if kind == "lstm" and states is not None and not carry_cell:
            c = states[1][None, :, k * H:(k + 1) * H]
        samples = [out[:, 0] if k == L - 1 else full_mid[:, 0]] + ([hs[k]] if hs[k] is not None else [])
        first, steps, finish, c = _chunk_cell(kind, pack, k, (0,), blk[None], b, consts, samples, c)
        if kind == "lstm" and (states is None or carry_cell):
            own.append((slice(k * H, (k + 1) * H), c))
        cells.append((pack.wih[k][0], pack.bias[k][0], first, steps, finish))

    def run(x, out, states):
        for cols, c in own:
            if states is None:
                c.fill(0.0)
            else:
                np.copyto(c, states[1][:, cols])
        T = x.shape[1]
        for t0 in range(0, T, chunk):
            n = min(T, t0 + chunk) - t0
            gi = full_gi if n == chunk else _take(gi_buf, b, n, G)
            gs = full_steps if n == chunk else _gi_steps(gi)
            mid = full_mid if n == chunk or L == 1 else _take(mid_buf, b, n, H)
            for k, (wih, bias, first, steps, finish) in enumerate(cells):
                src = x[:, t0:t0 + n] if k == 0 else mid
                dst = out[:, t0:t0 + n] if k == L - 1 else mid
                np.matmul(src, wih, out=gi)                      # the chunk's input projections
                np.add(gi, bias, out=gi)
                if states is not None or t0 > 0:
                    prev = hs[k] if hs[k] is not None else out[:, t0 - 1]
                else:
                    prev = None                                 # a zero state
                prev = _run_chunk(first, steps, finish, gs, dst.swapaxes(0, 1), prev, zero)
                if hs[k] is not None:
                    np.copyto(hs[k], prev)
        if states is not None:
            for cols, c in own:
                np.copyto(states[1][:, cols], c)
    return run


def _prep_both_chunks(pack: RnnPack, k: int, scratch, b: int, f: int, chunk: int, sample):
    """Layer k of a two-way stack, from zero states, a chunk of steps at a
    time: run(src, fwd_out, rev_out) as `_prep_both_steps` (`sample`: a row
    of the outputs, for the choice of matmul). The reverse direction's chunk
    of inputs is copied in its step order (`xrev`), so that step t of both is
    gi[:, :, t]. At batch 1 one direction runs its chunk after the other,
    each from its output before the chunk; else both at once, from the
    states `h`."""
    kind, H = pack.kind, pack.hidden
    G = GATES[kind] * H
    blk = _take(scratch["gh"], 2, b * _block(kind, False) * H)
    consts = _consts(blk.dtype)
    zero = consts[1]
    hs = _take(scratch["h"], 2, b, H)
    h0, h1 = hs[0], hs[1]
    full_gi = _take(scratch["gi"], 2, b, chunk, G)
    gi_buf, xrev_buf = scratch["gi"], scratch["xrev"]
    if b == 1:
        apart = [_chunk_cell(kind, pack, k, (d,), blk[d:d + 1], b, consts, [sample]) for d in (0, 1)]
        cells = [cell[3] for cell in apart]
        full_steps = [_gi_steps(full_gi[d]) for d in (0, 1)]
    else:
        first, both, finish, c = _chunk_cell(kind, pack, k, (0, 1), blk, b, consts, [hs])
        cells = [c]
        full_steps = _gi_steps(full_gi, 2)
    cells = [c for c in cells if c is not None]
    bias = pack.bias[k][:, None, None, :]
    wih0, wih1 = pack.wih[k][0], pack.wih[k][1]
    copyto = np.copyto

    def run(src, fwd_out, rev_out):
        for c in cells:
            c.fill(0.0)
        T = src.shape[1]
        for t0 in range(0, T, chunk):
            n = min(T, t0 + chunk) - t0
            gi = full_gi if n == chunk else _take(gi_buf, 2, b, n, G)
            xrev = _take(xrev_buf, b, n, f)
            copyto(xrev, src[:, T - t0 - n:T - t0][:, ::-1])
            np.matmul(src[:, t0:t0 + n], wih0, out=gi[0])
            np.matmul(xrev, wih1, out=gi[1])
            np.add(gi, bias, out=gi)
            fo = fwd_out[:, t0:t0 + n].swapaxes(0, 1)
            ro = rev_out[:, T - t0 - n:T - t0].swapaxes(0, 1)[::-1]
            if b == 1:
                for d, (first_d, steps_d, finish_d, _), rows, prev in (
                        (0, apart[0], fo, None if t0 == 0 else fwd_out[:, t0 - 1]),
                        (1, apart[1], ro, None if t0 == 0 else rev_out[:, T - t0])):
                    gs = full_steps[d] if n == chunk else _gi_steps(gi[d])
                    _run_chunk(first_d, steps_d, finish_d, gs, rows, prev, zero)
                continue
            gs = full_steps if n == chunk else _gi_steps(gi, 2)
            for i, (g_t, of, orv) in enumerate(zip(gs, fo, ro)):
                if t0 == 0 and i == 0:
                    first(g_t)
                    finish(zero, hs)
                else:
                    both(g_t)
                copyto(of, h0)
                copyto(orv, h1)
    return run


def _prep_top_chunks(pack: RnnPack, k: int, d: int, scratch, b: int, chunk: int, sample):
    """The last layer of a two-way stack, direction d, a chunk of steps at a
    time: run(out, dst) as `_prep_top_steps` (`sample`: a row of dst, for the
    choice of matmul); the reverse direction takes a chunk's projections (in
    time order) from its last step back."""
    kind, H = pack.kind, pack.hidden
    G = GATES[kind] * H
    blk = _take(scratch["gh"], 1, b * _block(kind, False) * H)
    consts = _consts(blk.dtype)
    first, steps, finish, c = _chunk_cell(kind, pack, k, (d,), blk, b, consts, [sample])
    order = -1 if d else 1
    full_gi = _take(scratch["gi"], b, chunk, G)
    gi_buf = scratch["gi"]
    full_steps = _gi_steps(full_gi)[::order]
    wih, bias = pack.wih[k][d], pack.bias[k][d]

    def run(out, dst):
        if c is not None:
            c.fill(0.0)
        T = out.shape[1]
        for j0 in range(0, T, chunk):
            n = min(T, j0 + chunk) - j0
            t0 = j0 if d == 0 else T - j0 - n                 # the chunk's steps [t0, t0 + n), in time order
            gi = full_gi if n == chunk else _take(gi_buf, b, n, G)
            gs = full_steps if n == chunk else _gi_steps(gi)[::order]
            np.matmul(out[:, t0:t0 + n], wih, out=gi)
            np.add(gi, bias, out=gi)
            rows = dst[:, t0:t0 + n].swapaxes(0, 1)[::order]
            prev = None if j0 == 0 else dst[:, t0 - 1] if d == 0 else dst[:, t0 + n]
            _run_chunk(first, steps, finish, gs, rows, prev, consts[1])
    return run


# ------------------------------------------------------------------ schedules

def _prep_two_way(pack: RnnPack, scratch, b: int, T: int, f: int, chunk: int, stepwise: bool, out):
    """A two-way stack (see the schedules): run(x, out, states)."""
    H, L = pack.hidden, pack.layers
    mids = [_take(scratch[f"mid{k % 2}"], b, T, 2 * H) for k in range(min(L - 2, 2))]
    lower = []
    for k in range(max(L - 1, 1)):                              # lower layers: whole outputs, ping-pong
        fk = f if k == 0 else 2 * H
        sample = (mids[k % 2] if k < L - 2 else out)[:, 0, :H]
        lower.append(_prep_both_steps(pack, k, scratch, b, fk) if stepwise
                     else _prep_both_chunks(pack, k, scratch, b, fk, chunk, sample))
    top = []
    if L > 1:                                                   # the last layer: reverse (kept), then forward
        keep = _take(scratch["keep"], b, T, H)
        for d, dst in ((1, keep), (0, None)):
            sample = keep[:, 0] if dst is not None else out[:, 0, :H]
            top.append((d, dst, _prep_top_steps(pack, L - 1, d, scratch, b) if stepwise
                        else _prep_top_chunks(pack, L - 1, d, scratch, b, chunk, sample)))

    def run(x, out, states):
        src = x
        for k, both in enumerate(lower):
            dst = mids[k % 2] if k < L - 2 else out
            both(src, dst[..., :H], dst[..., H:])
            src = dst
        for d, dst, last in top:
            last(out, out[..., :H] if dst is None else dst)
        if top:
            np.copyto(out[..., H:], top[0][1])
    return run


_RUNS: dict[int, tuple] = {}    # id(scratch["gh"]) -> (a weak reference to it, the objects and the sizes
                                # the run is for, the run)


def _run_for(scratch, objects: tuple, values: tuple, make):
    """The prepared run for these scratch arrays, pack and states (`objects`,
    the same objects) and sizes (`values`, equal), made once: a plan passes
    the same arrays at every call, and the views and steps of a run cost
    about as much as a few steps. Kept only for scratch that views memory
    it does not own (a plan's arena): the run's views hold the owner, not
    scratch["gh"], so that the entry goes when that array goes."""
    gh = scratch["gh"]
    if gh.base is None:
        return make()
    entry = _RUNS.get(id(gh))
    if (entry is not None and entry[0]() is gh and entry[2] == values and len(entry[1]) == len(objects)
            and all(a is b for a, b in zip(entry[1], objects))):
        return entry[3]
    run = make()
    key = id(gh)
    _RUNS[key] = (weakref.ref(gh, lambda _, key=key, runs=_RUNS: runs.pop(key, None)), objects, values, run)
    return run


def rnn_forward(x: np.ndarray, pack: RnnPack, out: np.ndarray, *, tiles: int | None = None,
                budget: int | None = None, states: Sequence[np.ndarray] | None = None, scratch=None) -> None:
    """The stack over x [B, T, F] into out [B, T, dirs * H]: from zero states,
    or (one-way stacks) from the carried `states` (h, and c for the LSTM,
    each [B, layers * H]), which end as the last step."""
    kind, H, L, D = pack.kind, pack.hidden, pack.layers, pack.dirs
    b, T, f = x.shape
    streaming = states is not None
    if streaming and D != 1:
        raise ValueError("a two-way recurrent layer cannot stream")
    planned = tiles if tiles is not None else rnn_tiles(kind, x.shape, hidden=H, layers=L, dirs=D, budget=budget)
    chunk = max(1, min(T, planned))
    kept = scratch is not None
    if scratch is None:
        scratch = {k: np.empty(s, x.dtype) for k, s in
                   rnn_scratch(kind, x.shape, hidden=H, layers=L, dirs=D, streaming=streaming, tiles=planned).items()}
    if T == 0:
        return
    stepwise = _stepwise(D, planned, kind, x.shape, H, L, None)
    if D == 2:
        def make():
            return _prep_two_way(pack, scratch, b, T, f, chunk, stepwise, out)
    elif stepwise:
        def make():
            return _prep_one_step(pack, scratch, b, T, f, states)
    else:
        def make():
            return _prep_one_way(pack, scratch, b, T, chunk, states, out)
    if kept:
        objects = (pack, *(v for k, v in scratch.items() if k != "gh"), *(states or ()))
        run = _run_for(scratch, objects, (b, T, f, chunk, stepwise, out.strides, out.dtype), make)
    else:
        run = make()
    run(x, out, states)
