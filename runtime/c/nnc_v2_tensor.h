/* Section 9's tensor ops (helper 13C): clamp, glu, slice/select (strided
 * copies) and the reductions mean/sum/max. Included at the end of
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
 * propagates NaN (torch.amax). One pass over x in C order. */
static inline void nnc_reduce(const float *x, float *y, int rank, const long *shape, const int *reduced, int op) {
    long idx[8] = {0}, ystride[8], total = 1, count = 1, ysize = 1, i, off = 0;
    int k;
    for (k = rank - 1; k >= 0; k--) {
        ystride[k] = reduced[k] ? 0 : ysize;
        if (reduced[k]) count *= shape[k]; else ysize *= shape[k];
        total *= shape[k];
    }
    for (i = 0; i < ysize; i++) y[i] = op == NNC_REDUCE_MAX ? -INFINITY : 0.0f;
    for (i = 0; i < total; i++) {
        const float v = x[i];
        if (op == NNC_REDUCE_MAX) {
            if (v > y[off] || v != v) y[off] = y[off] != y[off] ? y[off] : v;
        } else {
            y[off] += v;
        }
        for (k = rank - 1; k >= 0; k--) {        /* the next index, carrying */
            off += ystride[k];
            if (++idx[k] < shape[k]) break;
            off -= ystride[k] * shape[k];
            idx[k] = 0;
        }
    }
    if (op == NNC_REDUCE_MEAN)
        for (i = 0; i < ysize; i++) y[i] /= (float)count;
}

/* One RNN layer (nn.RNN) over x [T, F] from state h [H]: y_t = act(W_ih x_t +
 * b_ih + W_hh y_{t-1} + b_hh), act tanh or relu (`relu`); weights packed as
 * nnc_gru's with G = padded(H); h ends as the last step. Scratch: 2G. */
static inline void nnc_rnn(int T, int F, int H, int relu, const float *x, const float *wih_t, const float *whh_t,
                           const float *bih, const float *bhh, float *h, float *y, float *scratch) {
    const int G = (H + NNC_VB - 1) / NNC_VB * NNC_VB;
    float *gi = scratch, *gh = scratch + G;
    int t, j;
    for (t = 0; t < T; t++) {
        const float *prev = t ? y + (long)(t - 1) * H : h;
        float *cur = y + (long)t * H;
        nnc_gemv(x + (long)t * F, F, G, G, wih_t, bih, gi);
        nnc_gemv(prev, H, G, G, whh_t, bhh, gh);
        for (j = 0; j < H; j++) {
            const float v = gi[j] + gh[j];
            cur[j] = relu ? (v < 0.0f ? 0.0f : v) : nnc_tanhf(v);
        }
    }
    if (T > 0) memcpy(h, y + (long)(T - 1) * H, (size_t)H * sizeof *h);
}

/* Stacked and two-way GRU (`kind` 0), LSTM (1) or RNN (2 tanh, 3 relu), as nn.GRU/nn.LSTM/nn.RNN with
 * num_layers and bidirectional, over x [T, F] into y [T, dirs * H]. `w` holds
 * four pointers per layer and direction (`_l0`, `_l0_reverse`, `_l1`, ...):
 * the packed w_ih, w_hh and the biases (or NULL), as nnc_gru takes them.
 * h and c hold [layers * dirs][H] states: zeroed first unless `carry` (a
 * streaming one-way stack keeps them between calls). Scratch: `gates` (2G),
 * `seq` [T, H] (one direction's output), `rev` [T, max(F, dirs*H)] (a
 * time-reversed input) and `mid` [2][T, dirs*H] (the lower layers' outputs;
 * unused with one layer). The reverse direction runs on the reversed input
 * and its output is written back in time order. */
static inline void nnc_rnn_stack(int kind, int T, int F, int H, int layers, int dirs, const float *x,
                                 const float *const *w, float *h, float *c, int carry, float *y, float *gates,
                                 float *seq, float *rev, float *mid) {
    const long wide = (long)dirs * H;
    const int lstm = kind == 1;
    int k, d, t;
    if (!carry) {
        memset(h, 0, (size_t)layers * dirs * H * sizeof *h);
        if (lstm) memset(c, 0, (size_t)layers * dirs * H * sizeof *c);
    }
    for (k = 0; k < layers; k++) {
        const float *src = k == 0 ? x : mid + (long)((k - 1) % 2) * T * wide;
        const int fin = k == 0 ? F : (int)wide;
        float *dst = k == layers - 1 ? y : mid + (long)(k % 2) * T * wide;
        for (d = 0; d < dirs; d++) {
            const int i = k * dirs + d;
            const float *in = src;
            if (d) {
                for (t = 0; t < T; t++) memcpy(rev + (long)t * fin, src + (long)(T - 1 - t) * fin, (size_t)fin * sizeof *rev);
                in = rev;
            }
            if (kind >= 2)
                nnc_rnn(T, fin, H, kind == 3, in, w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3], h + (long)i * H,
                        seq, gates);
            else if (lstm)
                nnc_lstm(T, fin, H, in, w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3], h + (long)i * H,
                         c + (long)i * H, seq, gates);
            else
                nnc_gru(T, fin, H, in, w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3], h + (long)i * H, seq, gates);
            for (t = 0; t < T; t++)
                memcpy(dst + (long)t * wide + (long)d * H, seq + (long)(d ? T - 1 - t : t) * H, (size_t)H * sizeof *dst);
        }
    }
}

#endif /* NNC_V2_TENSOR_H */
