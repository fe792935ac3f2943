"""NumPy kernels of the transformer family: embedding, positional, attention,
matmul and div, with their training backward kernels.

In:  batch-first arrays (`[B, T, E]`, indices `[B, ...]` as int32, or as
     float32 holding integers when they passed a copy through the arena),
     parameters in PyTorch's layout (`nn.Embedding.weight [num, dim]`,
     `nn.MultiheadAttention`'s `in_proj_weight [3E, E]`, `in_proj_bias`,
     `out_proj.weight`, `out_proj.bias`).
Out: the result written into `out` (PyTorch's semantics). Attention's softmax
     subtracts each row's maximum before `exp` (stable); `causal` masks the
     future steps. An index outside the table, or a sequence longer than the
     positional table, is a ValueError; nothing is read out of bounds.

Backward kernels overwrite the gradients they are given (`dx=`, `dw=`, ...;
None: not wanted) and sum parameter gradients over the batch.
"""

from __future__ import annotations

import math

import numpy as np

from ._common import Scratch, Shape, _provide

# ------------------------------------------------------------------ embedding


def _indices(x: np.ndarray, num: int) -> np.ndarray:
    idx = x.astype(np.intp, copy=False) if x.dtype.kind in "iu" else np.rint(x).astype(np.intp)
    if idx.size and (idx.min() < 0 or idx.max() >= num):
        bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
        raise ValueError(f"embedding: index {bad} is outside [0, {num}) of its table")
    return idx


def embedding(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """out[..., :] = w[x[...]] (x: integer indices, any shape after the batch)."""
    idx = _indices(x, w.shape[0])
    np.take(w, idx, axis=0, out=out)


def embedding_backward(x: np.ndarray, dy: np.ndarray, *, dw: np.ndarray | None) -> None:
    if dw is None:
        return
    idx = _indices(x, dw.shape[0])
    dw.fill(0)
    np.add.at(dw, idx.reshape(-1), dy.reshape(-1, dw.shape[1]))


# ------------------------------------------------------------------ positional

def positional(x: np.ndarray, w: np.ndarray, out: np.ndarray, offset: int = 0) -> None:
    """out = x + w[offset:offset + T] for x [B, T, E]."""
    t = x.shape[1]
    if offset + t > w.shape[0]:
        raise ValueError(f"positional: position {offset + t - 1} is past max_len={w.shape[0]}"
                         + (" (call reset() to start a new sequence)" if offset else ""))
    np.add(x, w[offset:offset + t], out=out)


def positional_stream(x: np.ndarray, w: np.ndarray, position: np.ndarray, out: np.ndarray) -> None:
    """`positional` of the next chunk of a stream: `position` [B, 1] counts
    the steps seen since the last reset (every example of a batch alike)."""
    offset = int(position[0, 0])
    positional(x, w, out, offset)
    position += x.shape[1]


def positional_backward(dy: np.ndarray, *, dx: np.ndarray | None, dw: np.ndarray | None) -> None:
    if dw is not None:
        t = dy.shape[1]
        dw.fill(0)
        np.add.reduce(dy, axis=0, out=dw[:t])
    if dx is not None and dx is not dy:
        np.copyto(dx, dy)


# ------------------------------------------------------------------ attention

def attention_scratch(shape: Shape, heads: int) -> dict[str, Shape]:
    """Scratch of `attention` for x [B, T, E]: the projections `qkv`, the
    `scores` of every head and the heads' `context`."""
    b, t, e = shape
    return {"qkv": (b, t, 3 * e), "scores": (b, heads, t, t), "context": (b, t, e)}


def _softmax_rows(s: np.ndarray) -> None:
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)


def _heads(a: np.ndarray, heads: int) -> np.ndarray:
    """[B, T, E] -> a [B, h, T, d] view."""
    b, t, e = a.shape
    return a.reshape(b, t, heads, e // heads).transpose(0, 2, 1, 3)


def _attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, causal: bool, scores: np.ndarray,
            context: np.ndarray, past: int = 0) -> None:
    """context = softmax(q k^T / sqrt(d) [masked]) v, heads split from E.
    q [B, Tq, E], k and v [B, Tk, E]; query i sits at position past + i."""
    d = q.shape[2] // heads
    qh, kh, vh = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    np.matmul(qh, kh.transpose(0, 1, 3, 2), out=scores)
    scores *= 1.0 / math.sqrt(d)
    if causal:
        tq, tk = scores.shape[2], scores.shape[3]
        future = np.arange(tk)[None, :] > (past + np.arange(tq))[:, None]
        scores[:, :, future] = -np.inf
    _softmax_rows(scores)
    np.matmul(scores, vh, out=_heads(context, heads))


def attention(x: np.ndarray, w_in: np.ndarray, b_in: np.ndarray | None, w_out: np.ndarray,
              b_out: np.ndarray | None, out: np.ndarray, *, heads: int, causal: bool,
              scratch: Scratch | None = None) -> None:
    """nn.MultiheadAttention(E, heads, batch_first=True)(x, x, x)[0], with
    `attn_mask` the causal mask when `causal`."""
    s = _provide(scratch, lambda: attention_scratch(x.shape, heads))
    e = x.shape[2]
    qkv, scores, context = s["qkv"], s["scores"], s["context"]
    np.matmul(x, w_in.T, out=qkv)
    if b_in is not None:
        qkv += b_in
    _attend(qkv[..., :e], qkv[..., e:2 * e], qkv[..., 2 * e:], heads, causal, scores, context)
    np.matmul(context, w_out.T, out=out)
    if b_out is not None:
        out += b_out


def attention_stream_scratch(shape: Shape, heads: int, cache: int) -> dict[str, Shape]:
    b, t, e = shape
    return {"qkv": (b, t, 3 * e), "scores": (b, heads, t, cache), "context": (b, t, e)}


def attention_stream(x: np.ndarray, w_in: np.ndarray, b_in: np.ndarray | None, w_out: np.ndarray,
                     b_out: np.ndarray | None, keys: np.ndarray, values: np.ndarray, position: np.ndarray,
                     out: np.ndarray, *, heads: int, scratch: Scratch | None = None) -> None:
    """Causal attention over the next chunk of a stream: the chunk's keys and
    values join the cache (`keys`, `values` [B, L, E], L the time bound;
    `position` [B, 1] the steps cached); a step past L is a ValueError."""
    b, t, e = x.shape
    past = int(position[0, 0])
    limit = keys.shape[1]
    if past + t > limit:
        raise ValueError(f"attention: the stream is {past + t} steps long, past the key/value cache of {limit} "
                         "steps (the time bound); call reset() to start a new sequence")
    s = _provide(scratch, lambda: attention_stream_scratch(x.shape, heads, limit))
    qkv, context = s["qkv"], s["context"]
    np.matmul(x, w_in.T, out=qkv)
    if b_in is not None:
        qkv += b_in
    keys[:, past:past + t] = qkv[..., e:2 * e]
    values[:, past:past + t] = qkv[..., 2 * e:]
    n = past + t
    scores = s["scores"][..., :n]
    _attend(qkv[..., :e], keys[:, :n], values[:, :n], heads, True, scores, context, past)
    np.matmul(context, w_out.T, out=out)
    if b_out is not None:
        out += b_out
    position += t


def attention_backward(x: np.ndarray, w_in: np.ndarray, b_in: np.ndarray | None, w_out: np.ndarray,
                       dy: np.ndarray, *, heads: int, causal: bool, dx: np.ndarray | None,
                       dw_in: np.ndarray | None, db_in: np.ndarray | None, dw_out: np.ndarray | None,
                       db_out: np.ndarray | None) -> None:
    """Gradients of `attention` (it recomputes the forward's projections and
    probabilities, in the dtype of x)."""
    b, t, e = x.shape
    d = e // heads
    qkv = x @ w_in.T
    if b_in is not None:
        qkv = qkv + b_in
    scores = np.empty((b, heads, t, t), x.dtype)
    context = np.empty((b, t, e), x.dtype)
    q, k, v = qkv[..., :e], qkv[..., e:2 * e], qkv[..., 2 * e:]
    _attend(q, k, v, heads, causal, scores, context)
    p = scores
    if db_out is not None:
        np.add.reduce(dy.reshape(-1, e), axis=0, out=db_out)
    if dw_out is not None:
        np.matmul(dy.reshape(-1, e).T, context.reshape(-1, e), out=dw_out)
    dcontext = dy @ w_out                                        # [B, T, E]
    dch = _heads(dcontext, heads)                                # [B, h, T, d]
    qh, kh, vh = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    dv = p.transpose(0, 1, 3, 2) @ dch                           # [B, h, T, d]
    dp = dch @ vh.transpose(0, 1, 3, 2)                          # [B, h, T, T]
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    ds *= 1.0 / math.sqrt(d)
    dq = ds @ kh
    dk = ds.transpose(0, 1, 3, 2) @ qh
    dqkv = np.empty((b, t, 3 * e), x.dtype)
    for i, g in enumerate((dq, dk, dv)):
        dqkv[..., i * e:(i + 1) * e] = g.transpose(0, 2, 1, 3).reshape(b, t, e)
    if db_in is not None:
        np.add.reduce(dqkv.reshape(-1, 3 * e), axis=0, out=db_in)
    if dw_in is not None:
        np.matmul(dqkv.reshape(-1, 3 * e).T, x.reshape(-1, e), out=dw_in)
    if dx is not None:
        np.matmul(dqkv, w_in, out=dx)


# ------------------------------------------------------------------ matmul, div

def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.matmul(a, b, out=out)


def matmul_backward(inputs: tuple[np.ndarray, np.ndarray], dy: np.ndarray, index: int, *,
                    dx: np.ndarray) -> None:
    a, b = inputs
    if index == 0:
        np.matmul(dy, np.swapaxes(b, -1, -2), out=dx)
    else:
        np.matmul(np.swapaxes(a, -1, -2), dy, out=dx)


def div(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.divide(a, b, out=out)


def div_backward(inputs: tuple[np.ndarray, np.ndarray], dy: np.ndarray, index: int, *, dx: np.ndarray) -> None:
    a, b = inputs
    if index == 0:
        np.divide(dy, b, out=dx)
    else:
        np.multiply(dy, a, out=dx)
        np.divide(dx, b, out=dx)
        np.divide(dx, b, out=dx)
        np.negative(dx, out=dx)
