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
are reordered to i, f, o, g so that its three sigmoids are one slice. The
two directions of a layer sit side by side ([2, ...]), so one matmul runs
both when they read the same input.

Schedules. A step is one [B, H] @ [H, G*H] matmul and elementwise work over
[B, G*H] (both directions at once where they run together). The input
projections of a chunk of steps are one matmul into `gi`.
- one-way stacks run chunk by chunk, every layer over the chunk before the
  next chunk (a layer's output chunk feeds the next layer in `mid`, in
  place), so no layer's whole output is kept: each lower layer carries its
  state in `h` (and `c`).
- a two-way layer runs both directions together, the reverse one stepping
  from the last step back; layers below the last two write their outputs
  whole (`mid0`, `mid1`). The last two layers need one direction of the
  layer below kept whole, not both: the second-to-last layer's forward
  outputs go to `keep` [B, T, H] and its reverse outputs to the reverse half
  of `out`; then the last layer runs its forward direction (from `keep` and
  that half, into the forward half) and last its reverse direction, which
  overwrites the reverse half step by step after reading it. A lone two-way
  layer reads x and writes `out` directly.
Without a carried state the first step skips the hidden matmul (the state is
zero), and the forward direction of the last layer reads its previous state
from `out`; no state buffer is needed there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

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
    whh: tuple[np.ndarray, ...]            # per layer: [dirs, H, G*H]
    bias: tuple[np.ndarray, ...]           # per layer: [dirs, G*H]
    bhn: tuple[np.ndarray | None, ...]     # per layer, GRU with biases: [dirs, 1, H], b_hn
    aug: tuple[np.ndarray, ...] = ()       # per layer: [dirs, H + F_k + 1, G'] for [h, x, 1] @ aug (see `_one_step`)


def _gate_rows(kind: str, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(PyTorch's gate rows in the packed order, their scale)."""
    if kind == "lstm":                                    # i, f, g, o -> i, f, o, g
        order = np.r_[0:2 * h, 3 * h:4 * h, 2 * h:3 * h]
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
    wih, whh, bias, bhn = [], [], [], []
    for k in range(layers):
        layer = [weights[4 * (k * dirs + d):4 * (k * dirs + d) + 4] for d in range(dirs)]
        dtype = np.result_type(*(np.asarray(w[0]).dtype for w in layer))
        wih.append(np.stack([np.asarray(w[0])[order].T * scale for w in layer]).astype(dtype))
        whh.append(np.stack([np.asarray(w[1])[order].T * scale for w in layer]).astype(dtype))
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
        bias.append((b * scale).astype(dtype))
        bhn.append(n_bias if kind == "gru" and any(w[3] is not None for w in layer) else None)
    aug = [_augmented(kind, h, wi, wh, bi, bn) for wi, wh, bi, bn in zip(wih, whh, bias, bhn)]
    for arrays in (wih, whh, bias, bhn, aug):
        for a in arrays:
            if a is not None:
                a.flags.writeable = False
    return RnnPack(kind, h, layers, dirs, nonlinearity, tuple(wih), tuple(whh), tuple(bias), tuple(bhn), tuple(aug))


def _augmented(kind: str, h: int, wih, whh, bias, bhn) -> np.ndarray:
    """[dirs, H + F + 1, G']: one matmul of [h, x, 1] gives a step's gates with
    every bias; the GRU's G' = 4H keeps the n gate's two parts apart: r and z
    (both inputs), W_hn h + b_hn, W_in x + b_in."""
    if kind != "gru":
        return np.concatenate([whh, wih, bias[:, None, :]], axis=1)
    dirs, f = wih.shape[:2]
    a = np.zeros((dirs, h + f + 1, 4 * h), wih.dtype)
    a[:, :h, :2 * h], a[:, h:h + f, :2 * h], a[:, -1, :2 * h] = whh[..., :2 * h], wih[..., :2 * h], bias[:, :2 * h]
    a[:, :h, 2 * h:3 * h] = whh[..., 2 * h:]
    if bhn is not None:
        a[:, -1, 2 * h:3 * h] = bhn[:, 0]
    a[:, h:h + f, 3 * h:], a[:, -1, 3 * h:] = wih[..., 2 * h:], bias[:, 2 * h:]
    return a


def as_pack(kind: str, weights, *, hidden: int, layers: int = 1, dirs: int = 1,
            nonlinearity: str = "tanh") -> RnnPack:
    """`weights` if it is already a pack, else its pack (made now: allocates)."""
    if isinstance(weights, RnnPack):
        return weights
    return rnn_pack(kind, weights, hidden=hidden, layers=layers, dirs=dirs, nonlinearity=nonlinearity)


# ------------------------------------------------------------------ scratch

def _fixed_and_step(kind: str, f: int, hidden: int, layers: int, dirs: int, steps: int) -> tuple[int, int]:
    """(floats of scratch that do not grow with the chunk, floats per step of the chunk), per example."""
    g = GATES[kind] * hidden
    d = 2 if dirs == 2 else 1
    fixed = d * g + d * hidden * (2 if kind == "lstm" else 1) * layers
    per_step = d * g
    if dirs == 1 and layers > 1:
        per_step += hidden                                  # mid
    if dirs == 2:
        per_step += max(f, 2 * hidden if layers > 1 else f)  # xrev
    if dirs == 2 and layers > 1:
        fixed += steps * hidden                             # keep
        per_step += 2 * hidden                              # the last layer's assembled input
        if layers > 2:
            fixed += min(layers - 2, 2) * steps * 2 * hidden
    return fixed, per_step


def rnn_tiles(kind: str, in_shape, *, hidden: int, layers: int = 1, dirs: int = 1,
              budget: int | None = None) -> int:
    """Time steps per chunk whose scratch fits `budget` floats per example
    (default `RNN_TILE`), at least one; a plan passes it as `tiles=`, chosen
    at the bound of the time dimension."""
    b, t, f = in_shape
    fixed, per_step = _fixed_and_step(kind, f, hidden, layers, dirs, t)
    limit = RNN_TILE if budget is None else int(budget)
    return max(1, min(t, (limit - fixed) // per_step)) if t else 1


def rnn_scratch(kind: str, in_shape, *, hidden: int, layers: int = 1, dirs: int = 1, streaming: bool = False,
                budget: int | None = None, tiles: int | None = None) -> dict[str, tuple]:
    """Scratch of `rnn_forward` for x `in_shape` and chunks of `tiles` steps
    (by default within `budget`): `gi` (a chunk's input projections), `gh` (a
    step's gates), `h`/`c` (states: lower layers' and batched directions'),
    `mid` (a one-way stack's chunk between layers), `xrev`, `keep`, `inbuf`,
    `mid0`, `mid1` (two-way stacks, see the schedules)."""
    b, t, f = in_shape
    chunk = max(1, min(t, tiles if tiles is not None else rnn_tiles(kind, in_shape, hidden=hidden, layers=layers,
                                                                    dirs=dirs, budget=budget)))
    h, g = hidden, GATES[kind] * hidden
    d = 2 if dirs == 2 else 1
    if _stepwise(dirs, tiles, kind, in_shape, hidden, layers, budget):
        shapes = {"hx": (b, sum(h + (f if k == 0 else h) + 1 for k in range(layers))),
                  "gh": (b, 4 * h if kind == "gru" else g)}
        if kind == "lstm" and not streaming:
            shapes["c"] = (b, layers * h)
        return shapes
    shapes = {"gi": (b, d * chunk * g), "gh": (b, d * g)}
    if dirs == 1:
        states = layers if streaming else layers - 1      # the last layer reads its state from `out`
        if states:
            shapes["h"] = (b, states * h)
        if kind == "lstm" and not streaming:
            shapes["c"] = (b, layers * h)
        if layers > 1:
            shapes["mid"] = (b, chunk * h)
        return shapes
    shapes["h"] = (b, 2 * h)
    shapes["xrev"] = (b, chunk * max(f, 2 * h if layers > 1 else f))
    if kind == "lstm":
        shapes["c"] = (b, 2 * h)
    if layers > 1:
        shapes["keep"] = (b, t * h)
        shapes["inbuf"] = (b, chunk * 2 * h)
    for k in range(min(layers - 2, 2)):
        shapes[f"mid{k}"] = (b, t * 2 * h)
    return shapes


def _stepwise(dirs: int, tiles, kind: str, in_shape, hidden: int, layers: int, budget) -> bool:
    """One-way stacks with chunks of one step (the planned tiles, not the
    clamped ones) run step by step on [h, x, 1] (`_one_step`)."""
    if dirs != 1:
        return False
    if tiles is None:
        tiles = rnn_tiles(kind, in_shape, hidden=hidden, layers=layers, dirs=dirs, budget=budget)
    return tiles == 1


def _take(buf: np.ndarray, *shape: int) -> np.ndarray:
    return buf.reshape(-1)[:math.prod(shape)].reshape(shape)


# ------------------------------------------------------------------ one step

def _lstm_step(nl: str, g: np.ndarray, gi: np.ndarray, prev: np.ndarray | None, whh: np.ndarray, bhn,
               c: np.ndarray, h_out: np.ndarray) -> None:
    """One LSTM step (leading axes: directions and batch alike in every
    operand): g [..., 4H] scratch, gi [..., 4H] the input projection with the
    folded biases, prev [..., H] the previous state (None: zero), whh
    [..., H, 4H], c [..., H] the cell (updated), h_out [..., H] the new
    state (it may be `prev`: the matmul reads prev into g first)."""
    H = h_out.shape[-1]
    if prev is None:
        np.tanh(gi, out=g)
    else:
        np.matmul(prev, whh, out=g)
        np.add(g, gi, out=g)
        np.tanh(g, out=g)
    s = g[..., :3 * H]                         # i, f, o: sigmoid = (1 + tanh(a/2)) / 2
    np.multiply(s, 0.5, out=s)
    np.add(s, 0.5, out=s)
    i = g[..., :H]
    np.multiply(i, g[..., 3 * H:], out=i)      # i * g
    if prev is None:
        np.copyto(c, i)
    else:
        np.multiply(c, g[..., H:2 * H], out=c)
        np.add(c, i, out=c)
    np.tanh(c, out=h_out)
    np.multiply(h_out, g[..., 2 * H:3 * H], out=h_out)


def _rnn_step(nl: str, g: np.ndarray, gi: np.ndarray, prev: np.ndarray | None, whh: np.ndarray, bhn, c,
              h_out: np.ndarray) -> None:
    """One RNN step: h = act(gi + prev @ whh), act tanh or relu (see `_lstm_step`)."""
    if prev is None:
        np.copyto(h_out, gi)
    else:
        np.matmul(prev, whh, out=g)
        np.add(g, gi, out=h_out)
    if nl == "relu":
        np.clip(h_out, 0.0, np.inf, out=h_out)
    else:
        np.tanh(h_out, out=h_out)


def _gru_step(nl: str, g: np.ndarray, gi: np.ndarray, prev: np.ndarray | None, whh: np.ndarray,
              bhn: np.ndarray | None, c, h_out: np.ndarray) -> None:
    """One GRU step: r, z = sigmoid; n = tanh(gi_n + r * (h W_hn + b_hn));
    h' = n + z * (h - n) (see `_lstm_step`; g [..., 3H])."""
    H = h_out.shape[-1]
    rz, n = g[..., :2 * H], g[..., 2 * H:]
    if prev is None:
        np.tanh(gi[..., :2 * H], out=rz)
    else:
        np.matmul(prev, whh, out=g)
        np.add(rz, gi[..., :2 * H], out=rz)
        np.tanh(rz, out=rz)
    np.multiply(rz, 0.5, out=rz)
    np.add(rz, 0.5, out=rz)
    if prev is None:
        if bhn is None:
            n.fill(0.0)
        else:
            np.copyto(n, np.broadcast_to(bhn, n.shape))
    elif bhn is not None:
        np.add(n, bhn, out=n)
    np.multiply(n, rz[..., :H], out=n)
    np.add(n, gi[..., 2 * H:], out=n)
    np.tanh(n, out=n)
    z = rz[..., H:]
    if prev is None:                            # h' = n - z * n
        np.multiply(z, n, out=h_out)
        np.subtract(n, h_out, out=h_out)
    else:
        np.subtract(prev, n, out=h_out)
        np.multiply(h_out, z, out=h_out)
        np.add(h_out, n, out=h_out)


_STEPS = {"lstm": _lstm_step, "gru": _gru_step, "rnn": _rnn_step}


def _step(kind: str, nonlinearity: str, g: np.ndarray, gi: np.ndarray, prev: np.ndarray | None, whh: np.ndarray,
          bhn: np.ndarray | None, c: np.ndarray | None, h_out: np.ndarray) -> None:
    _STEPS[kind](nonlinearity, g, gi, prev, whh, bhn, c, h_out)


# ------------------------------------------------------------------ schedules

def rnn_forward(x: np.ndarray, pack: RnnPack, out: np.ndarray, *, tiles: int | None = None,
                budget: int | None = None, states: Sequence[np.ndarray] | None = None, scratch=None) -> None:
    """The stack over x [B, T, F] into out [B, T, dirs * H]: from zero states,
    or (one-way stacks) from the carried `states` (h, and c for the LSTM,
    each [B, layers * H]), which end as the last step."""
    kind, H, L, D = pack.kind, pack.hidden, pack.layers, pack.dirs
    b, T, _ = x.shape
    streaming = states is not None
    if streaming and D != 1:
        raise ValueError("a two-way recurrent layer cannot stream")
    chunk = max(1, min(T, tiles if tiles is not None else rnn_tiles(kind, x.shape, hidden=H, layers=L, dirs=D,
                                                                    budget=budget)))
    planned = tiles if tiles is not None else rnn_tiles(kind, x.shape, hidden=H, layers=L, dirs=D, budget=budget)
    if scratch is None:
        scratch = {k: np.empty(s, x.dtype) for k, s in
                   rnn_scratch(kind, x.shape, hidden=H, layers=L, dirs=D, streaming=streaming, tiles=planned).items()}
    if T == 0:
        return
    if _stepwise(D, planned, kind, x.shape, H, L, None):
        _one_step(x, pack, out, states, scratch)
    elif D == 1:
        _one_way(x, pack, out, chunk, states, scratch)
    else:
        _two_way(x, pack, out, chunk, scratch)


def _one_way(x, pack: RnnPack, out, chunk: int, states, scratch) -> None:
    kind, H, L = pack.kind, pack.hidden, pack.layers
    b, T, _ = x.shape
    G = GATES[kind] * H
    step, nl = _STEPS[kind], pack.nonlinearity
    gh = _take(scratch["gh"], b, G)
    if states is not None:
        hs = [states[0][:, k * H:(k + 1) * H] for k in range(L)]
        cs = [states[1][:, k * H:(k + 1) * H] for k in range(L)] if kind == "lstm" else [None] * L
    else:
        hs = [_take(scratch["h"], L - 1, b, H)[k] for k in range(L - 1)] + [None]
        cs = list(_take(scratch["c"], L, b, H)) if kind == "lstm" else [None] * L
    layers = [(pack.wih[k][0], pack.bias[k][0], pack.whh[k][0], None if pack.bhn[k] is None else pack.bhn[k][0])
              for k in range(L)]
    full_gi = _take(scratch["gi"], b, chunk, G)
    full_mid = _take(scratch["mid"], b, chunk, H) if L > 1 else None
    for t0 in range(0, T, chunk):
        n = min(T, t0 + chunk) - t0
        gi = full_gi if n == chunk else _take(scratch["gi"], b, n, G)
        mid = full_mid if n == chunk or L == 1 else _take(scratch["mid"], b, n, H)
        for k, (wih, bias, whh, bhn) in enumerate(layers):
            src = x[:, t0:t0 + n] if k == 0 else mid
            dst = out[:, t0:t0 + n] if k == L - 1 else mid
            np.matmul(src, wih, out=gi)                          # the chunk's input projections
            np.add(gi, bias, out=gi)
            if states is not None or t0 > 0:
                prev = hs[k] if hs[k] is not None else out[:, t0 - 1]
            else:
                prev = None                                     # a zero state
            for t in range(n):
                h = dst[:, t]
                step(nl, gh, gi[:, t], prev, whh, bhn, cs[k], h)
                prev = h
            if hs[k] is not None:
                np.copyto(hs[k], prev)


def _one_step(x, pack: RnnPack, out, states, scratch) -> None:
    """A one-way stack step by step, each layer's state in its [h, x, 1] row
    (`hx`): one matmul with the augmented weights gives the step's gates with
    every bias, no input projection is kept."""
    kind, H, L = pack.kind, pack.hidden, pack.layers
    b, T, f = x.shape
    step, nl = _AUG_STEPS[kind], pack.nonlinearity
    widths = [H + (f if k == 0 else H) + 1 for k in range(L)]
    hx_all = _take(scratch["hx"], b, sum(widths))
    g = _take(scratch["gh"], b, pack.aug[0].shape[-1])
    if kind == "lstm":
        cs = ([states[1][:, k * H:(k + 1) * H] for k in range(L)] if states is not None
              else list(_take(scratch["c"], L, b, H)))
    else:
        cs = [None] * L
    rows = []
    for k in range(L):
        hx = hx_all[:, sum(widths[:k]):sum(widths[:k + 1])]
        if states is None:
            hx[:, :H].fill(0.0)
            if cs[k] is not None:
                cs[k].fill(0.0)
        else:
            np.copyto(hx[:, :H], states[0][:, k * H:(k + 1) * H])
        hx[:, -1].fill(1.0)
        rows.append((hx, hx[:, :H], hx[:, H:-1], pack.aug[k][0], cs[k]))
    for t in range(T):
        src = x[:, t]
        for hx, h, xin, aug, c in rows:
            np.copyto(xin, src)
            step(nl, g, hx, aug, c, h)
            src = h
        np.copyto(out[:, t], src)
    if states is not None:
        for k, (_, h, _, _, _) in enumerate(rows):
            np.copyto(states[0][:, k * H:(k + 1) * H], h)


def _lstm_aug(nl: str, g, hx, aug, c, h) -> None:
    """An LSTM step from [h, x, 1] (see `_lstm_step`); h is overwritten with the new state."""
    H = h.shape[-1]
    np.matmul(hx, aug, out=g)
    np.tanh(g, out=g)
    s = g[..., :3 * H]
    np.multiply(s, 0.5, out=s)
    np.add(s, 0.5, out=s)
    i = g[..., :H]
    np.multiply(i, g[..., 3 * H:], out=i)
    np.multiply(c, g[..., H:2 * H], out=c)
    np.add(c, i, out=c)
    np.tanh(c, out=h)
    np.multiply(h, g[..., 2 * H:3 * H], out=h)


def _gru_aug(nl: str, g, hx, aug, c, h) -> None:
    """A GRU step from [h, x, 1]: g = [r, z | W_hn h + b_hn | W_in x + b_in]."""
    H = h.shape[-1]
    np.matmul(hx, aug, out=g)
    rz, nh, n = g[..., :2 * H], g[..., 2 * H:3 * H], g[..., 3 * H:]
    np.tanh(rz, out=rz)
    np.multiply(rz, 0.5, out=rz)
    np.add(rz, 0.5, out=rz)
    np.multiply(nh, rz[..., :H], out=nh)
    np.add(n, nh, out=n)
    np.tanh(n, out=n)
    np.subtract(h, n, out=h)                   # h' = n + z * (h - n)
    np.multiply(h, rz[..., H:], out=h)
    np.add(h, n, out=h)


def _rnn_aug(nl: str, g, hx, aug, c, h) -> None:
    np.matmul(hx, aug, out=g)
    if nl == "relu":
        np.clip(g, 0.0, np.inf, out=h)
    else:
        np.tanh(g, out=h)


_AUG_STEPS = {"lstm": _lstm_aug, "gru": _gru_aug, "rnn": _rnn_aug}


def _two_way(x, pack: RnnPack, out, chunk: int, scratch) -> None:
    H, L = pack.hidden, pack.layers
    b, T, _ = x.shape
    src = x
    for k in range(L - 2):                                     # lower layers: whole outputs, ping-pong
        dst = _take(scratch[f"mid{k % 2}"], b, T, 2 * H)
        _both(src, pack, k, dst[..., :H], dst[..., H:], chunk, scratch)
        src = dst
    if L == 1:
        _both(src, pack, 0, out[..., :H], out[..., H:], chunk, scratch)
        return
    keep = _take(scratch["keep"], b, T, H)
    _both(src, pack, L - 2, keep, out[..., H:], chunk, scratch)
    for d in (0, 1):                                            # the last layer: forward, then reverse
        _last(keep, out, pack, L - 1, d, chunk, scratch)


def _both(src, pack: RnnPack, k: int, fwd_out, rev_out, chunk: int, scratch) -> None:
    """Layer k, both directions at once, from zero states: the forward one
    from the first step into `fwd_out`, the reverse one from the last into
    `rev_out` (each [B, T, H]). The reverse direction's chunk of inputs is
    copied in its step order (`xrev`), so that step t of both is gi[:, :, t]."""
    kind, H = pack.kind, pack.hidden
    b, T, f = src.shape
    G = GATES[kind] * H
    gh = _take(scratch["gh"], 2, b, G)
    hs = _take(scratch["h"], 2, b, H)
    cs = _take(scratch["c"], 2, b, H) if kind == "lstm" else None
    for t0 in range(0, T, chunk):
        n = min(T, t0 + chunk) - t0
        gi = _take(scratch["gi"], 2, b, n, G)
        xrev = _take(scratch["xrev"], b, n, f)
        np.copyto(xrev, src[:, T - t0 - n:T - t0][:, ::-1])
        np.matmul(src[:, t0:t0 + n], pack.wih[k][0], out=gi[0])
        np.matmul(xrev, pack.wih[k][1], out=gi[1])
        np.add(gi, pack.bias[k][:, None, None, :], out=gi)
        for t in range(n):
            first = t0 == 0 and t == 0
            _step(kind, pack.nonlinearity, gh, gi[:, :, t], None if first else hs, pack.whh[k], pack.bhn[k], cs, hs)
            np.copyto(fwd_out[:, t0 + t], hs[0])
            np.copyto(rev_out[:, T - 1 - t0 - t], hs[1])


def _last(keep, out, pack: RnnPack, k: int, d: int, chunk: int, scratch) -> None:
    """The last layer of a two-way stack, direction d, from the layer below:
    forward outputs in `keep`, reverse outputs in out's reverse half (which
    the reverse direction overwrites step by step after reading it). A
    chunk's inputs are assembled in its step order (`inbuf`)."""
    kind, H = pack.kind, pack.hidden
    b, T, _ = keep.shape
    G = GATES[kind] * H
    gh = _take(scratch["gh"], b, G)
    h = _take(scratch["h"], b, H)
    c = _take(scratch["c"], b, H) if kind == "lstm" else None
    dst = out[..., d * H:(d + 1) * H]
    bhn = None if pack.bhn[k] is None else pack.bhn[k][d]
    for j0 in range(0, T, chunk):
        n = min(T, j0 + chunk) - j0
        t0 = j0 if d == 0 else T - j0 - n                     # the chunk's steps [t0, t0 + n), in time order
        order = slice(None) if d == 0 else slice(None, None, -1)
        inbuf = _take(scratch["inbuf"], b, n, 2 * H)
        np.copyto(inbuf[..., :H], keep[:, t0:t0 + n][:, order])
        np.copyto(inbuf[..., H:], out[:, t0:t0 + n, H:][:, order])
        gi = _take(scratch["gi"], b, n, G)
        np.matmul(inbuf, pack.wih[k][d], out=gi)
        np.add(gi, pack.bias[k][d], out=gi)
        for j in range(n):
            _step(kind, pack.nonlinearity, gh, gi[:, j], None if j0 == 0 and j == 0 else h, pack.whh[k][d], bhn, c,
                  h)
            np.copyto(dst[:, t0 + j if d == 0 else t0 + n - 1 - j], h)
