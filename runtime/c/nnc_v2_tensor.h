/* Section 9's tensor ops (helper 13C): clamp, glu, slice/select (strided
 * copies), the reductions mean/sum/max, and the stacked and two-way
 * recurrent layers (nnc_rnn_stack). Included at the end of
 * nnc_kernels.h; every array is float32, C order, the batch folded into the
 * outer extent. */
#ifndef NNC_V2_TENSOR_H
#define NNC_V2_TENSOR_H

/* y = min(max(x, lo), hi), a bound skipped when its flag is 0; NaN stays NaN
 * (a comparison with NaN is false), lo > hi gives hi, as torch.clamp. */
static inline void nnc_clamp(const float *x, float *y, long n, int has_lo, float lo, int has_hi, float hi) {
    long i;
    for (i = 0; i < n; i++) {
        float v = x[i];
        if (has_lo && v < lo) v = lo;
        if (has_hi && v > hi) v = hi;
        y[i] = v;
    }
}

/* x seen as [outer, n, inner]: y = the first half of the middle axis times
 * the sigmoid of the second (F.glu), y as [outer, n/2, inner]. */
static inline void nnc_glu(const float *x, float *y, long outer, long n, long inner) {
    const long half = n / 2;
    long o, i;
    for (o = 0; o < outer; o++) {
        const float *a = x + o * n * inner, *b = a + half * inner;
        float *yo = y + o * half * inner;
        for (i = 0; i < half * inner; i++) yo[i] = a[i] * nnc_sigmoidf(b[i]);
    }
}

/* x seen as [outer, n, inner]: y = x[:, start : start + count*step : step, :]
 * (select is count 1). */
static inline void nnc_slice(const float *x, float *y, long outer, long n, long inner, long start, long count,
                             long step) {
    long o, j;
    for (o = 0; o < outer; o++)
        for (j = 0; j < count; j++)
            memcpy(y + (o * count + j) * inner, x + (o * n + start + j * step) * inner, (size_t)inner * sizeof *y);
}

enum { NNC_REDUCE_SUM, NNC_REDUCE_MEAN, NNC_REDUCE_MAX };

/* y = x reduced over the axes flagged in `reduced` (x of `rank` <= 8 axes
 * `shape`; y holds the others in order): a sum, a mean, or a maximum that
 * propagates NaN (torch.amax). One pass over x in C order; the trailing
 * reduced axes form contiguous runs, each summed in double before it is
 * added, so a long reduced last axis keeps float32 accuracy. */
static inline void nnc_reduce(const float *x, float *y, int rank, const long *shape, const int *reduced, int op) {
    long idx[8] = {0}, ystride[8], total = 1, count = 1, ysize = 1, run = 1, i, j, off = 0;
    int k, lead = rank;
    for (k = rank - 1; k >= 0; k--) {
        ystride[k] = reduced[k] ? 0 : ysize;
        if (reduced[k]) count *= shape[k]; else ysize *= shape[k];
        total *= shape[k];
    }
    while (lead > 0 && reduced[lead - 1]) run *= shape[--lead];   /* trailing reduced axes: one run */
    for (i = 0; i < ysize; i++) y[i] = op == NNC_REDUCE_MAX ? -INFINITY : 0.0f;
    for (i = 0; i < total; i += run) {
        const float *r = x + i;
        if (op == NNC_REDUCE_MAX) {
            for (j = 0; j < run; j++) {
                const float v = r[j];
                if (v > y[off] || v != v) y[off] = y[off] != y[off] ? y[off] : v;
            }
        } else {
            double s = 0.0;
            for (j = 0; j < run; j++) s += r[j];
            y[off] = (float)((double)y[off] + s);
        }
        for (k = lead - 1; k >= 0; k--) {        /* the next run's index, carrying */
            off += ystride[k];
            if (++idx[k] < shape[k]) break;
            off -= ystride[k] * shape[k];
            idx[k] = 0;
        }
    }
    if (op == NNC_REDUCE_MEAN)
        for (i = 0; i < ysize; i++) y[i] /= (float)count;
}

/* The gate columns of a recurrent layer's packed weights (c.padded):
 * (3 GRU, 4 LSTM, 1 RNN) x H rounded up to NNC_VB, or 1 for one column. */
static inline int nnc_rnn_width(int kind, int H) {
    const int n = (kind == 0 ? 3 : kind == 1 ? 4 : 1) * H;
    return n == 1 ? 1 : (n + NNC_VB - 1) / NNC_VB * NNC_VB;
}

/* y[0:G] = b + x[0:in] W^T with W packed as [in][G] (one column: a dot product). */
static inline void nnc_rnn_gemv(const float *x, int in, int G, const float *wt, const float *b, float *y) {
    if (G == 1)
        nnc_dense(x, 1, in, 1, 1, wt, b, y, NNC_ACT_NONE, 0.0f);
    else
        nnc_gemv(x, in, G, G, wt, b, y);
}

/* One step of one layer and direction of a GRU (`kind` 0), LSTM (1) or RNN
 * (2 tanh, 3 relu): gi = W_ih in + b_ih, gh = W_hh prev + b_hh (G floats
 * each), then the gates write the new hidden state `cur` (c: the LSTM's
 * cell, updated). `w` is the packed w_ih, w_hh and the biases (or NULL).
 * `in` may be `cur` (a layer running in place over its input): it is read
 * into gi before `cur` is written; `prev` must not overlap `cur`. */
static inline void nnc_rnn_step(int kind, int F, int H, const float *in, const float *prev, const float *const *w,
                                float *c, float *cur, float *gi, float *gh) {
    const int G = nnc_rnn_width(kind, H);
    int j;
    nnc_rnn_gemv(in, F, G, w[0], w[2], gi);
    nnc_rnn_gemv(prev, H, G, w[1], w[3], gh);
    if (kind == 0) {
        nnc_gru_gates(gi, gh, prev, cur, H);
    } else if (kind == 1) {
        nnc_lstm_gates(gi, gh, c, cur, H);
    } else {
        for (j = 0; j < H; j++) {
            const float v = gi[j] + gh[j];
            cur[j] = kind == 3 ? (v < 0.0f ? 0.0f : v) : nnc_tanhf(v);
        }
    }
}

/* One layer and direction over T steps: input rows `in` + t ins (fin
 * floats), output rows `out` + t outs; forward, or from the last step back
 * (`rev`); h0 is the state before the first step, c the LSTM's cell. */
static inline void nnc_rnn_run(int kind, int T, int fin, int H, const float *in, long ins, float *out, long outs,
                               int rev, const float *h0, const float *const *w, float *c, float *gi, float *gh) {
    int s;
    for (s = 0; s < T; s++) {
        const int t = rev ? T - 1 - s : s;
        const float *prev = s == 0 ? h0 : out + (long)(rev ? t + 1 : t - 1) * outs;
        nnc_rnn_step(kind, fin, H, in + (long)t * ins, prev, w, c, out + (long)t * outs, gi, gh);
    }
}

/* Row i of a block of rows kept in two places: rows 0..rows_a in a, the rest in b. */
static inline float *nnc_rnn_row(float *a, int rows_a, float *b, int H, int i) {
    return i < rows_a ? a + (long)i * H : b + (long)(i - rows_a) * H;
}

/* The floats of nnc_rnn_stack's `tile` (c.rnn_tile mirrors it). */
static inline long nnc_rnn_tile(int kind, int H, int layers, int dirs) {
    return 2L * nnc_rnn_width(kind, H) + 3L * H + (dirs == 2 && layers > 1 ? 2L * H : 0);
}

/* Stacked and two-way GRU (`kind` 0), LSTM (1) or RNN (2 tanh, 3 relu), as
 * nn.GRU/nn.LSTM/nn.RNN with num_layers and bidirectional, over x [T, F]
 * into y [T, dirs * H] (the reverse direction in columns H..2H, in time
 * order). `w` holds four pointers per layer and direction (`_l0`,
 * `_l0_reverse`, `_l1`, ...): the packed w_ih, w_hh and biases (or NULL).
 * `carry` (a streaming one-way stack): h and c hold [layers][H] states,
 * kept between calls; else they are NULL and every state starts at zero.
 *
 * Memory is y and small scratch, never a [T, G] gate buffer or a reversed
 * copy of the input:
 * - one-way: each layer runs over the whole sequence in y, in place;
 * - two-way, one layer: the forward direction writes y's columns 0..H, the
 *   reverse one (from the last step) columns H..2H, both reading x;
 * - two-way, L >= 2 layers: layers 0..L-3 alternate between `mid` [T, 2H]
 *   and y so that layer L-3's output X is in mid (X is x when L = 2); the top
 *   two layers then run in y alone. (1) Layer L-2's reverse direction
 *   writes y[:, H:2H]. (2) Layer L-2's forward direction (its rows in the
 *   ring of `seg` rows, its state saved in `ckpt` at the start of every
 *   block of `seg` steps but the first and the last; blocks end at T) runs
 *   step by step with layer L-1's forward direction, which writes
 *   y[:, 0:H]. (3) Layer L-1's reverse direction runs a block at a time
 *   from the end: the block's layer L-2 forward rows are recomputed from its
 *   saved state into the ring (the last block's are still there) and each step
 *   writes its output over the layer L-2 reverse row it read. The price of
 *   the arena at y alone is one more pass of layer L-2's forward direction
 *   over T - seg steps (none when seg >= T).
 * Scratch: `tile` (nnc_rnn_tile floats: gi, gh [G], a zero state [H], two
 * cells [2H], an input row [2H] for L >= 2 two-way), the ring of seg >= 2
 * rows (rows_a of them in seg_a [rows_a][H], the rest in seg_b) and ckpt
 * [max(0, ceil(T/seg) - 2)][lstm ? 2H : H] (L >= 2 two-way), mid [T, 2H]
 * (L >= 3 two-way). */
static inline void nnc_rnn_stack(int kind, int T, int F, int H, int layers, int dirs, const float *x,
                                 const float *const *w, float *h, float *c, int carry, float *y, float *tile,
                                 float *seg_a, int rows_a, float *seg_b, int seg, float *ckpt, float *mid) {
    const int G = nnc_rnn_width(kind, H), lstm = kind == 1, S = lstm ? 2 * H : H;
    const long wide = 2L * H;
    const size_t row_bytes = (size_t)H * sizeof(float);
    float *gi = tile, *gh = tile + G, *zero = tile + 2L * G, *ca = zero + H, *cb = ca + H, *row = cb + H;
    const float *X = x;
    const float *const *wa, *const *wb;
    int k, t, j, first, blocks, fx = F;
    memset(zero, 0, row_bytes);
    if (dirs == 1) {
        for (k = 0; k < layers; k++) {
            const int fin = k ? H : F;
            float *cell = carry && lstm ? c + (long)k * H : ca;
            if (!(carry && lstm)) memset(ca, 0, row_bytes);
            nnc_rnn_run(kind, T, fin, H, k ? y : x, fin, y, H, 0, carry ? h + (long)k * H : zero, w + 4 * k, cell,
                        gi, gh);
            if (carry && T > 0) memcpy(h + (long)k * H, y + (long)(T - 1) * H, row_bytes);
        }
        return;
    }
    for (k = 0; k < layers - 2 || (layers == 1 && k == 0); k++) {
        /* a plain two-way layer: x or the layer below (in mid or y) into mid, y (one layer) or y */
        const float *src = k == 0 ? x : ((layers - 2 - k) % 2 == 0 ? mid : y);
        float *dst = layers == 1 ? y : ((layers - 3 - k) % 2 == 0 ? mid : y);
        const int fin = k ? (int)wide : F;
        memset(ca, 0, row_bytes);
        nnc_rnn_run(kind, T, fin, H, src, fin, dst, wide, 0, zero, w + 8 * k, ca, gi, gh);
        memset(ca, 0, row_bytes);
        nnc_rnn_run(kind, T, fin, H, src, fin, dst + H, wide, 1, zero, w + 8 * k + 4, ca, gi, gh);
    }
    if (layers == 1) return;
    if (layers > 2) X = mid, fx = (int)wide;
    wa = w + 8 * (layers - 2);
    wb = w + 8 * (layers - 1);
    /* (1) layer L-2 backwards into y[:, H:2H] */
    memset(ca, 0, row_bytes);
    nnc_rnn_run(kind, T, fx, H, X, fx, y + H, wide, 1, zero, wa + 4, ca, gi, gh);
    /* (2) layer L-2 forwards (rows in the ring, states saved) with layer L-1 forwards into y[:, 0:H]. Blocks
     * end at T: the first holds `first` steps, the others seg, and step t is row (t + seg - first) % seg of
     * the ring, so the last block's rows are in order when the pass ends. */
    first = T - (T - 1) / seg * seg;
    blocks = (T - 1) / seg + 1;
    memset(ca, 0, row_bytes);
    memset(cb, 0, row_bytes);
    for (t = 0; t < T; t++) {
        float *a = nnc_rnn_row(seg_a, rows_a, seg_b, H, (t + seg - first) % seg);
        const float *pa = t ? nnc_rnn_row(seg_a, rows_a, seg_b, H, (t - 1 + seg - first) % seg) : zero;
        if (t >= first && (t - first) % seg == 0 && (t - first) / seg + 1 < blocks - 1) {
            float *s = ckpt + (long)((t - first) / seg) * S;     /* the state before block (t - first) / seg + 1 */
            memcpy(s, pa, row_bytes);
            if (lstm) memcpy(s + H, ca, row_bytes);
        }
        nnc_rnn_step(kind, fx, H, X + (long)t * fx, pa, wa, ca, a, gi, gh);
        memcpy(row, a, row_bytes);
        memcpy(row + H, y + (long)t * wide + H, row_bytes);
        nnc_rnn_step(kind, (int)wide, H, row, t ? y + (long)(t - 1) * wide : zero, wb, cb, y + (long)t * wide, gi, gh);
    }
    /* (3) layer L-1 backwards into y[:, H:2H], a block at a time from the end; every block but the last
     * first recomputes its layer L-2 forward rows from the state saved before it */
    memset(cb, 0, row_bytes);
    for (j = blocks - 1; j >= 0; j--) {
        const int t0 = j ? first + (j - 1) * seg : 0, t1 = first + j * seg;
        if (j < blocks - 1) {
            const float *pa = zero;
            if (j > 0) {
                pa = ckpt + (long)(j - 1) * S;
                if (lstm) memcpy(ca, pa + H, row_bytes);
            } else {
                memset(ca, 0, row_bytes);
            }
            for (t = t0; t < t1; t++) {
                float *a = nnc_rnn_row(seg_a, rows_a, seg_b, H, (t + seg - first) % seg);
                nnc_rnn_step(kind, fx, H, X + (long)t * fx, pa, wa, ca, a, gi, gh);
                pa = a;
            }
        }
        for (t = t1 - 1; t >= t0; t--) {
            float *out = y + (long)t * wide + H;
            memcpy(row, nnc_rnn_row(seg_a, rows_a, seg_b, H, (t + seg - first) % seg), row_bytes);
            memcpy(row + H, out, row_bytes);
            nnc_rnn_step(kind, (int)wide, H, row, t < T - 1 ? out + wide : zero, wb + 4, cb, out, gi, gh);
        }
    }
}

#endif /* NNC_V2_TENSOR_H */
