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

/* The most steps of one block of input projections (nnc_rnn_proj; c.RNN_BLOCK). */
#define NNC_RNN_KB 4

#if defined(NNC_VEC)
/* NNC_PROJ_V: vectors of one block of columns (four on AVX-512's 32
 * registers: 16 accumulators; two elsewhere). */
#if NNC_VL >= 16
#define NNC_PROJ_V 4
#else
#define NNC_PROJ_V 2
#endif

/* The accumulators of vector v (< V) of the R (1, 2 or 4) steps += their inputs' element i times w. */
#define NNC_PROJ_FMA(R, V, v, w, s0, s1, s2, s3)                                                             \
    if ((V) > (v)) {                                                                                       \
        w = nnc_ldv(wp + (v) * NNC_VL);                                                                    \
        s0 = s0 + w * x0[i];                                                                               \
        if ((R) > 1) s1 = s1 + w * x1[i];                                                                  \
        if ((R) > 2) s2 = s2 + w * x2[i], s3 = s3 + w * x3[i];                                             \
    }

/* Rows [0, n) of wt from wp on (advanced past them) times the n inputs x0..x3 of the steps. */
#define NNC_PROJ_ROWS(R, V, n)                                                                             \
    for (i = 0; i < (n); i++, wp += G) {                                                                   \
        NNC_PROJ_FMA(R, V, 0, w0, s00, s10, s20, s30)                                                      \
        NNC_PROJ_FMA(R, V, 1, w1, s01, s11, s21, s31)                                                      \
        NNC_PROJ_FMA(R, V, 2, w2, s02, s12, s22, s32)                                                      \
        NNC_PROJ_FMA(R, V, 3, w3, s03, s13, s23, s33)                                                      \
    }

/* Stores vector v (< V) of the first k steps' accumulators at column o0 + v NNC_VL. */
#define NNC_PROJ_STORE(V, v, s0, s1, s2, s3)                                                               \
    if ((V) > (v))                                                                                         \
        for (j = 0; j < k; j++) {                                                                          \
            const nnc_vf u = j == 0 ? s0 : j == 1 ? s1 : j == 2 ? s2 : s3;                                 \
            memcpy(gi + (long)j * G + o0 + (v) * NNC_VL, &u, sizeof u);                                    \
        }

/* One block of V vectors of columns at o0 for R steps (constants): bias, the a rows, the c rows, stores. */
#define NNC_PROJ_BLOCK(R, V)                                                                               \
    do {                                                                                                   \
        const float *wp = wt + o0, *x0 = a0, *x1 = a1, *x2 = a2, *x3 = a3;                                 \
        nnc_vf s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33;             \
        nnc_vf w0, w1, w2, w3, z = {0};                                                                    \
        s00 = bias ? nnc_ldv(bias + o0) : z;                                                               \
        s01 = (V) > 1 && bias ? nnc_ldv(bias + o0 + NNC_VL) : z;                                           \
        s02 = (V) > 2 && bias ? nnc_ldv(bias + o0 + 2 * NNC_VL) : z;                                       \
        s03 = (V) > 3 && bias ? nnc_ldv(bias + o0 + 3 * NNC_VL) : z;                                       \
        s10 = s20 = s30 = s00, s11 = s21 = s31 = s01, s12 = s22 = s32 = s02, s13 = s23 = s33 = s03;        \
        NNC_PROJ_ROWS(R, V, fa)                                                                            \
        x0 = c0, x1 = c1, x2 = c2, x3 = c3;                                                                \
        NNC_PROJ_ROWS(R, V, fc)                                                                            \
        NNC_PROJ_STORE(V, 0, s00, s10, s20, s30)                                                           \
        NNC_PROJ_STORE(V, 1, s01, s11, s21, s31)                                                           \
        NNC_PROJ_STORE(V, 2, s02, s12, s22, s32)                                                           \
        NNC_PROJ_STORE(V, 3, s03, s13, s23, s33)                                                           \
        (void)w1, (void)w2, (void)w3;                                                                      \
    } while (0)

NNC_CONTRACT static void nnc_rnn_proj_vec(int k, const float *const *a, int fa, const float *const *c, int fc,
                                          int G, const float *restrict wt, const float *restrict bias,
                                          float *restrict gi) {
    const float *a0 = a[0], *a1 = a[k > 1 ? 1 : 0], *a2 = a[k > 2 ? 2 : k - 1], *a3 = a[k > 3 ? 3 : k - 1];
    const float *c0 = fc ? c[0] : a0, *c1 = fc ? c[k > 1 ? 1 : 0] : a0, *c2 = fc ? c[k > 2 ? 2 : k - 1] : a0;
    const float *c3 = fc ? c[k > 3 ? 3 : k - 1] : a0;
    int o0 = 0, i, j;
    if (k <= 2) {         /* one or two steps (a sequence's last): no copies of them */
        for (; o0 + NNC_PROJ_V * NNC_VL <= G; o0 += NNC_PROJ_V * NNC_VL) {
            if (k == 1) NNC_PROJ_BLOCK(1, NNC_PROJ_V);
            else NNC_PROJ_BLOCK(2, NNC_PROJ_V);
        }
        for (; o0 < G; o0 += NNC_VL) {
            if (k == 1) NNC_PROJ_BLOCK(1, 1);
            else NNC_PROJ_BLOCK(2, 1);
        }
        return;
    }
    for (; o0 + NNC_PROJ_V * NNC_VL <= G; o0 += NNC_PROJ_V * NNC_VL) NNC_PROJ_BLOCK(4, NNC_PROJ_V);
    for (; o0 < G; o0 += NNC_VL) NNC_PROJ_BLOCK(4, 1);
}
#undef NNC_PROJ_BLOCK
#undef NNC_PROJ_STORE
#undef NNC_PROJ_ROWS
#undef NNC_PROJ_FMA
#endif

/* The input projections of k <= NNC_RNN_KB steps in one pass over the
 * weights: gi[j G : j G + G] = b + [a[j] | c[j]] W for j < k, W packed
 * [fa + fc][G] (c.pack_rows), a[j] of fa floats, c[j] of fc floats (fc may
 * be 0: no second part). A step's own matrix-vector product reads W_ih
 * once a step; a layer reading two-way outputs has twice as many input
 * weights as recurrent ones, and they come from L2, not L1. The register
 * tile (nnc_rnn_proj_vec, above) is four steps of NNC_PROJ_V vectors (rows
 * j >= k repeat row k - 1 and are not stored; one or two steps take a tile
 * of their own); one step without a second part is nnc_rnn_gemv, one
 * column (G = 1) a dot product a step. */
static inline void nnc_rnn_proj(int k, const float *const *a, int fa, const float *const *c, int fc, int G,
                                const float *wt, const float *bias, float *gi) {
    int j, i, o;
    if (k == 1 && !fc) {                 /* one step (a stream's): the plain product */
        nnc_rnn_gemv(a[0], fa, G, wt, bias, gi);
        return;
    }
#if defined(NNC_VEC)
    if (G % NNC_VL == 0) {
        nnc_rnn_proj_vec(k, a, fa, c, fc, G, wt, bias, gi);
        return;
    }
#endif
    for (j = 0; j < k; j++) {
        float *y = gi + (long)j * G;
        for (o = 0; o < G; o++) y[o] = bias ? bias[o] : 0.0f;
        for (i = 0; i < fa + fc; i++) {
            const float xv = i < fa ? a[j][i] : c[j][i - fa], *w = wt + (long)i * G;
            for (o = 0; o < G; o++) y[o] = NNC_FMA(xv, w[o], y[o]);
        }
    }
}

/* One step of one layer and direction of a GRU (`kind` 0), LSTM (1) or RNN
 * (2 tanh, 3 relu) from its input projection gi (G floats, nnc_rnn_proj):
 * gh = W_hh prev + b_hh, then the gates write the new hidden state `cur`
 * (c: the LSTM's cell, updated). `w` is the packed w_ih, w_hh and the
 * biases (or NULL); `prev` must not overlap `cur`. */
static inline void nnc_rnn_cell(int kind, int H, const float *gi, const float *prev, const float *const *w, float *c,
                                float *cur, float *gh) {
    const int G = nnc_rnn_width(kind, H);
    int j;
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
 * (`rev`); h0 is the state before the first step, c the LSTM's cell. The
 * input projections go in blocks of kb <= NNC_RNN_KB steps into gi
 * [kb][G]; `in` may be `out` (a layer running in place over its input): a
 * block's rows are read before its steps write them. */
static inline void nnc_rnn_run(int kind, int T, int fin, int H, const float *in, long ins, float *out, long outs,
                               int rev, const float *h0, const float *const *w, float *c, float *gi, float *gh,
                               int kb) {
    const int G = nnc_rnn_width(kind, H);
    const float *rows[NNC_RNN_KB];
    int s0, j, k;
    for (s0 = 0; s0 < T; s0 += kb) {
        k = T - s0 < kb ? T - s0 : kb;
        for (j = 0; j < k; j++) rows[j] = in + (long)(rev ? T - 1 - s0 - j : s0 + j) * ins;
        nnc_rnn_proj(k, rows, fin, NULL, 0, G, w[0], w[2], gi);
        for (j = 0; j < k; j++) {
            const int s = s0 + j, t = rev ? T - 1 - s : s;
            const float *prev = s == 0 ? h0 : out + (long)(rev ? t + 1 : t - 1) * outs;
            nnc_rnn_cell(kind, H, gi + (long)j * G, prev, w, c, out + (long)t * outs, gh);
        }
    }
}

/* Row i of a block of rows kept in two places: rows 0..rows_a in a, the rest in b. */
static inline float *nnc_rnn_row(float *a, int rows_a, float *b, int H, int i) {
    return i < rows_a ? a + (long)i * H : b + (long)(i - rows_a) * H;
}

/* Stacked and two-way GRU (`kind` 0), LSTM (1) or RNN (2 tanh, 3 relu), as
 * nn.GRU/nn.LSTM/nn.RNN with num_layers and bidirectional, over x [T, F]
 * into y [T, dirs * H] (the reverse direction in columns H..2H, in time
 * order). `w` holds four pointers per layer and direction (`_l0`,
 * `_l0_reverse`, `_l1`, ...): the packed w_ih, w_hh and biases (or NULL).
 * `carry` (a streaming one-way stack): h and c hold [layers][H] states,
 * kept between calls; else they are NULL and every state starts at zero.
 * The input projections of kb (1..NNC_RNN_KB) steps at a time are one pass
 * over a layer's input weights (nnc_rnn_proj).
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
 *   with layer L-1's forward direction, kb steps of one then kb of the
 *   other, the latter writing y[:, 0:H]. (3) Layer L-1's reverse direction
 *   runs a block at a time from the end: the block's layer L-2 forward rows
 *   are recomputed from its saved state into the ring (the last block's are
 *   still there) and each step writes its output over the layer L-2 reverse
 *   row it read (a projection block reads its rows first). The price of
 *   the arena at y alone is one more pass of layer L-2's forward direction
 *   over T - seg steps (none when seg >= T).
 * Scratch: `tile` ((kb + 1) G + 3H floats, c.rnn_tile: gi [kb][G], gh [G],
 * a zero state [H], two cells [2H]), the ring of seg >= 2 rows (rows_a of them in seg_a
 * [rows_a][H], the rest in seg_b) and ckpt [max(0, ceil(T/seg) - 2)][lstm ?
 * 2H : H] (L >= 2 two-way), mid [T, 2H] (L >= 3 two-way). */
static inline void nnc_rnn_stack(int kind, int T, int F, int H, int layers, int dirs, const float *x,
                                 const float *const *w, float *h, float *c, int carry, float *y, float *tile, int kb,
                                 float *seg_a, int rows_a, float *seg_b, int seg, float *ckpt, float *mid) {
    const int G = nnc_rnn_width(kind, H), lstm = kind == 1, S = lstm ? 2 * H : H;
    const long wide = 2L * H;
    const size_t row_bytes = (size_t)H * sizeof(float);
    float *gi, *gh, *zero, *ca, *cb;
    const float *X = x;
    const float *const *wa, *const *wb;
    const float *xr[NNC_RNN_KB], *ar[NNC_RNN_KB], *yr[NNC_RNN_KB];
    int k, t, t0, i, j, n, first, blocks, fx = F;
    if (kb < 1 || kb > NNC_RNN_KB) kb = kb < 1 ? 1 : NNC_RNN_KB;      /* the tile is sized for the clamped kb */
    gi = tile, gh = tile + (long)kb * G, zero = gh + G, ca = zero + H, cb = ca + H;
    memset(zero, 0, row_bytes);
    if (dirs == 1) {
        for (k = 0; k < layers; k++) {
            const int fin = k ? H : F;
            float *cell = carry && lstm ? c + (long)k * H : ca;
            if (!(carry && lstm)) memset(ca, 0, row_bytes);
            nnc_rnn_run(kind, T, fin, H, k ? y : x, fin, y, H, 0, carry ? h + (long)k * H : zero, w + 4 * k, cell,
                        gi, gh, kb);
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
        nnc_rnn_run(kind, T, fin, H, src, fin, dst, wide, 0, zero, w + 8 * k, ca, gi, gh, kb);
        memset(ca, 0, row_bytes);
        nnc_rnn_run(kind, T, fin, H, src, fin, dst + H, wide, 1, zero, w + 8 * k + 4, ca, gi, gh, kb);
    }
    if (layers == 1) return;
    if (layers > 2) X = mid, fx = (int)wide;
    wa = w + 8 * (layers - 2);
    wb = w + 8 * (layers - 1);
    if (kb > seg) kb = seg;       /* a block's ring rows are all alive at once */
    /* (1) layer L-2 backwards into y[:, H:2H] */
    memset(ca, 0, row_bytes);
    nnc_rnn_run(kind, T, fx, H, X, fx, y + H, wide, 1, zero, wa + 4, ca, gi, gh, kb);
    /* (2) layer L-2 forwards (rows in the ring, states saved) with layer L-1 forwards into y[:, 0:H]. Blocks
     * end at T: the first holds `first` steps, the others seg, and step t is row (t + seg - first) % seg of
     * the ring, so the last block's rows are in order when the pass ends. */
    first = T - (T - 1) / seg * seg;
    blocks = (T - 1) / seg + 1;
    memset(ca, 0, row_bytes);
    memset(cb, 0, row_bytes);
    for (t0 = 0; t0 < T; t0 += kb) {
        n = T - t0 < kb ? T - t0 : kb;
        for (i = 0; i < n; i++) xr[i] = X + (long)(t0 + i) * fx;
        nnc_rnn_proj(n, xr, fx, NULL, 0, G, wa[0], wa[2], gi);
        for (i = 0; i < n; i++) {
            const float *pa;
            t = t0 + i;
            ar[i] = nnc_rnn_row(seg_a, rows_a, seg_b, H, (t + seg - first) % seg);
            yr[i] = y + (long)t * wide + H;
            pa = t ? nnc_rnn_row(seg_a, rows_a, seg_b, H, (t - 1 + seg - first) % seg) : zero;
            if (t >= first && (t - first) % seg == 0 && (t - first) / seg + 1 < blocks - 1) {
                float *s = ckpt + (long)((t - first) / seg) * S;     /* the state before block (t - first) / seg + 1 */
                memcpy(s, pa, row_bytes);
                if (lstm) memcpy(s + H, ca, row_bytes);
            }
            nnc_rnn_cell(kind, H, gi + (long)i * G, pa, wa, ca, (float *)ar[i], gh);
        }
        nnc_rnn_proj(n, ar, H, yr, H, G, wb[0], wb[2], gi);
        for (i = 0; i < n; i++) {
            t = t0 + i;
            nnc_rnn_cell(kind, H, gi + (long)i * G, t ? y + (long)(t - 1) * wide : zero, wb, cb, y + (long)t * wide, gh);
        }
    }
    /* (3) layer L-1 backwards into y[:, H:2H], a block at a time from the end; every block but the last
     * first recomputes its layer L-2 forward rows from the state saved before it */
    memset(cb, 0, row_bytes);
    for (j = blocks - 1; j >= 0; j--) {
        const int b0 = j ? first + (j - 1) * seg : 0, b1 = first + j * seg;
        if (j < blocks - 1) {
            const float *pa = zero;
            if (j > 0) {
                pa = ckpt + (long)(j - 1) * S;
                if (lstm) memcpy(ca, pa + H, row_bytes);
            } else {
                memset(ca, 0, row_bytes);
            }
            for (t0 = b0; t0 < b1; t0 += kb) {
                n = b1 - t0 < kb ? b1 - t0 : kb;
                for (i = 0; i < n; i++) xr[i] = X + (long)(t0 + i) * fx;
                nnc_rnn_proj(n, xr, fx, NULL, 0, G, wa[0], wa[2], gi);
                for (i = 0; i < n; i++) {
                    float *a = nnc_rnn_row(seg_a, rows_a, seg_b, H, (t0 + i + seg - first) % seg);
                    nnc_rnn_cell(kind, H, gi + (long)i * G, pa, wa, ca, a, gh);
                    pa = a;
                }
            }
        }
        for (t0 = b1 - 1; t0 >= b0; t0 -= kb) {      /* steps t0, t0 - 1, ..., t0 - n + 1 */
            n = t0 - b0 + 1 < kb ? t0 - b0 + 1 : kb;
            for (i = 0; i < n; i++) {
                ar[i] = nnc_rnn_row(seg_a, rows_a, seg_b, H, (t0 - i + seg - first) % seg);
                yr[i] = y + (long)(t0 - i) * wide + H;
            }
            nnc_rnn_proj(n, ar, H, yr, H, G, wb[4], wb[6], gi);
            for (i = 0; i < n; i++) {
                float *out = y + (long)(t0 - i) * wide + H;
                nnc_rnn_cell(kind, H, gi + (long)i * G, t0 - i < T - 1 ? out + wide : zero, wb + 4, cb, out, gh);
            }
        }
    }
}

#endif /* NNC_V2_TENSOR_H */
