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

import functools
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

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
    np.take(w, idx, axis=0, out=out, mode="clip")     # checked above; mode="raise" would buffer the whole out


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


# ------------------------------------------------------------------ attention (shared with the backward)

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


# ------------------------------------------------------------------ attention
# The forward's scratch is bounded by `budget` (floats per example): the heads
# run in groups of `hg` heads and the queries in blocks of `rb` rows. Per
# group, the keys and values of every step are one matmul each (`kv`, [2, T,
# hg * d]; the keys scaled by 1/sqrt(d)); per block of rows, the queries (`q`), the
# scores of the group's heads (`scores`, only the keys up to the block's last
# row when causal), the softmax (`stat` holds a query's maximum, then its sum),
# and the context, written straight into its columns
# of `out`. Last, `out` is projected by out_proj in place, a block of rows at
# a time through a copy in scratch (the group buffers are free by then). The
# tiles are chosen for the fewest NumPy calls that fit the budget.

ATTENTION_TILE = 1 << 16     # floats of scratch per example when no budget is given
# A block of at least this many queries keeps its scores key-major, [hg, keys,
# rows], so that the softmax reduces across rows in vectorised passes (a whole
# 64-query layer: 148 -> 124 us); a narrower block keeps them query-major, where
# NumPy's reduction along each short row of keys is the faster one.
_KEY_MAJOR = 48


@functools.lru_cache(maxsize=1024)
def _attention_tiles(t: int, e: int, heads: int, causal: bool, budget: int | None) -> tuple[int, int, int]:
    """(heads per group, query rows per block, rows per block of the output projection)."""
    limit = ATTENTION_TILE if budget is None else max(1, int(budget))
    d = e // heads
    best = None
    for hg in (h for h in range(heads, 0, -1) if heads % h == 0):
        kv = 2 * t * hg * d
        per_row = hg * d + hg * t + hg
        rb = max(1, min(t, (limit - kv) // per_row)) if limit > kv else 1
        blocks = -(-t // rb)
        room = max(kv + rb * per_row, limit)
        rows2 = max(1, min(t, room // e))
        calls = heads // hg * ((3 if hg == heads else 5) + blocks * (10 + causal)) + 3 * -(-t // rows2)
        size = kv + rb * per_row
        key = (size > limit, calls, -rb)
        if best is None or key < best[0]:
            best = (key, (hg, rb, rows2))
    return best[1]


def attention_tiles(shape: Shape, heads: int, *, causal: bool = False,
                    budget: int | None = None) -> tuple[int, int, int]:
    """(heads per group, query rows per block, rows per block of the output
    projection) whose scratch fits `budget` floats per example (default
    `ATTENTION_TILE`); a plan passes them as `tiles=`, chosen at the bound of
    the time dimension, so that shorter inputs take the same or smaller tiles."""
    b, t, e = shape
    return _attention_tiles(t, e, heads, causal, None if budget is None else int(budget))


def _clamped(shape: Shape, heads: int, causal: bool, budget, tiles) -> tuple[int, int, int]:
    hg, rb, rows2 = tiles if tiles is not None else attention_tiles(shape, heads, causal=causal, budget=budget)
    t = shape[1]
    return hg, max(1, min(t, rb)), max(1, min(t, rows2))


def attention_scratch(shape: Shape, heads: int, *, causal: bool = False, budget: int | None = None,
                      tiles: tuple[int, int, int] | None = None) -> dict[str, Shape]:
    """Scratch of `attention` for x [B, T, E] and `tiles` (`attention_tiles`,
    by default within `budget`): `kv`, `q`, `scores` and `stat` (see above)."""
    b, t, e = shape
    hg, rb, rows2 = _clamped(shape, heads, causal, budget, tiles)
    d = e // heads
    kv = max(2 * t * hg * d, rows2 * e)
    return {"kv": (b, kv), "q": (b, rb * hg * d), "scores": (b, hg * rb * t), "stat": (b, hg * rb)}


@functools.lru_cache(maxsize=64)
def _future(t: int) -> np.ndarray:
    """A read-only [2t - 1] row whose window [t - 1 - i, 2t - 1 - i) is 0 up to
    place i and -inf after it: the causal mask of row i, as a strided view."""
    row = np.zeros(2 * t - 1, np.float32)
    row[t:] = -np.inf
    row.flags.writeable = False
    return row


def _causal_block(t: int, r0: int, r1: int) -> np.ndarray:
    """[r1 - r0, r1 - r0]: the mask of rows r0..r1-1 over keys r0..r1-1 (keys before r0 are all visible)."""
    row = _future(t)
    n = r1 - r0
    return as_strided(row[t - 1:], shape=(n, n), strides=(-row.strides[0], row.strides[0]), writeable=False)


def attention(x: np.ndarray, w_in: np.ndarray, b_in: np.ndarray | None, w_out: np.ndarray,
              b_out: np.ndarray | None, out: np.ndarray, *, heads: int, causal: bool,
              budget: int | None = None, tiles: tuple[int, int, int] | None = None,
              scratch: Scratch | None = None) -> None:
    """nn.MultiheadAttention(E, heads, batch_first=True)(x, x, x)[0], with
    `attn_mask` the causal mask when `causal`; scratch as `attention_scratch`
    names it for the same `budget` and `tiles`. `out` must not overlap `x`."""
    bsz, t, e = x.shape
    hg, rb, rows2 = _clamped(x.shape, heads, causal, budget, tiles)
    s = _provide(scratch, lambda: attention_scratch(x.shape, heads, causal=causal, tiles=(hg, rb, rows2)))
    d = e // heads
    w = hg * d                                   # columns of a group
    scale = 1.0 / math.sqrt(d)
    for g0 in range(0, e, w):
        if w == e:                               # one group: keys and values are one matmul, [B, T, 2E]
            kv = _take(s["kv"], (bsz, t, 2 * e))
            np.matmul(x, w_in[e:].T, out=kv)
            if b_in is not None:
                np.add(kv, b_in[e:], out=kv)
            keys, values = kv[..., :e], kv[..., e:]
        else:
            kv = _take(s["kv"], (bsz, 2, t, w))
            for j, base in enumerate((e, 2 * e)):    # keys, values
                np.matmul(x, w_in[base + g0:base + g0 + w].T, out=kv[:, j])
                if b_in is not None:
                    np.add(kv[:, j], b_in[base + g0:base + g0 + w], out=kv[:, j])
            keys, values = kv[:, 0], kv[:, 1]
        np.multiply(keys, scale, out=keys)       # 1/sqrt(d) once per key, not per query block
        kh = keys.reshape(bsz, t, hg, d).transpose(0, 2, 1, 3)           # [B, hg, T, d]
        vh = values.reshape(bsz, t, hg, d).transpose(0, 2, 1, 3)         # [B, hg, T, d]
        for r0 in range(0, t, rb):
            r1 = min(t, r0 + rb)
            n, nk = r1 - r0, (r1 if causal else t)                        # queries, keys they see
            q = _take(s["q"], (bsz, n, w))
            np.matmul(x[:, r0:r1], w_in[g0:g0 + w].T, out=q)
            if b_in is not None:
                np.add(q, b_in[g0:g0 + w], out=q)
            qh = q.reshape(bsz, n, hg, d).transpose(0, 2, 1, 3)           # [B, hg, n, d]
            mask = _causal_block(t, r0, r1) if causal else None
            if n >= _KEY_MAJOR:                                           # sc [B, hg, keys, n]
                sc = _take(s["scores"], (bsz, hg, nk, n))
                np.matmul(kh[:, :, :nk], qh.transpose(0, 1, 3, 2), out=sc)
                axis, probs = -2, sc.transpose(0, 1, 3, 2)
                if causal:
                    mask, diag = mask.T, sc[:, :, r0:r1]
            else:                                                         # sc [B, hg, n, keys]
                sc = _take(s["scores"], (bsz, hg, n, nk))
                np.matmul(qh, kh[:, :, :nk].transpose(0, 1, 3, 2), out=sc)
                axis, probs = -1, sc
                if causal:
                    diag = sc[..., r0:r1]
            if causal:
                np.add(diag, mask, out=diag)
            stat = _take(s["stat"], (bsz, hg, 1, n) if axis == -2 else (bsz, hg, n, 1))
            np.maximum.reduce(sc, axis=axis, keepdims=True, out=stat)
            np.subtract(sc, stat, out=sc)
            np.exp(sc, out=sc)
            np.add.reduce(sc, axis=axis, keepdims=True, out=stat)
            np.divide(sc, stat, out=sc)
            ctx = out[:, r0:r1, g0:g0 + w].reshape(bsz, n, hg, d).transpose(0, 2, 1, 3)
            np.matmul(probs, vh[:, :, :nk], out=ctx)
    for r0 in range(0, t, rows2):
        r1 = min(t, r0 + rows2)
        ctx = _take(s["kv"], (bsz, r1 - r0, e))
        np.copyto(ctx, out[:, r0:r1])
        np.matmul(ctx, w_out.T, out=out[:, r0:r1])
        if b_out is not None:
            np.add(out[:, r0:r1], b_out, out=out[:, r0:r1])


def _take(buf: np.ndarray, shape: Shape) -> np.ndarray:
    """The first prod(shape) elements of the contiguous scratch `buf`, shaped `shape`."""
    return buf.reshape(-1)[:math.prod(shape)].reshape(shape)


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
