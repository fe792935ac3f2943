/* nnc_v2_attention.h - the transformer family's C kernels (LANGUAGE.md section 9):
 * embedding, positional, attention (multi-head self-attention as
 * nn.MultiheadAttention with q = k = v, a numerically stable softmax, an
 * optional causal mask, and a key/value cache for streaming; one query row
 * at a time, so its scratch is the keys and values and a row of scores),
 * matmul, div.
 * Parameters are in PyTorch's layout. Included at the end of nnc_kernels.h
 * (inlined into the generated file). */
#ifndef NNC_V2_ATTENTION_H
#define NNC_V2_ATTENTION_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* out[r][:] = w[idx[r]][:] for n indices; returns 1 (and writes nothing past
 * the last good row) on an index outside [0, num): never reads outside w. */
static inline int nnc_embedding(const int32_t *idx, long n, int num, int dim, const float *w, float *out)
{
    long r;
    for (r = 0; r < n; r++) {
        int32_t k = idx[r];
        if (k < 0 || k >= num) return 1;
        memcpy(out + r * dim, w + (long)k * dim, (size_t)dim * sizeof(float));
    }
    return 0;
}

/* out = x + w[offset .. offset + t) for x [t, e]; returns 1 past max_len rows. */
static inline int nnc_positional(const float *x, float *out, int t, int e, const float *w, int max_len, long offset)
{
    long i, n = (long)t * e;
    if (offset < 0 || offset + t > max_len) return 1;
    w += offset * e;
    for (i = 0; i < n; i++) out[i] = x[i] + w[i];
    return 0;
}

/* y[t][o] = b[o] + sum_i x[t][i] * w[o][i] (w [rows_out, cols] in PyTorch's layout) */
static inline void nnc_attention_linear(const float *x, int t, int in, int outn, const float *w, const float *b,
                                 float *y)
{
    int r, o, i;
    for (r = 0; r < t; r++) {
        const float *xr = x + (long)r * in;
        float *yr = y + (long)r * outn;
        for (o = 0; o < outn; o++) {
            const float *wo = w + (long)o * in;
            float acc = b ? b[o] : 0.0f;
            for (i = 0; i < in; i++) acc += xr[i] * wo[i];
            yr[o] = acc;
        }
    }
}

/* One query row's context, head by head, in place: q [e] holds the query
 * and ends holding its context. Keys and values are rows 0 .. n - 1 of k and
 * v (row stride kvs); row: scratch of n floats, a head's scores, softmaxed in
 * place (numerically stable: the largest score is subtracted first). A head's
 * query is read in full before its context overwrites it. */
static inline void nnc_attend_row(float *q, const float *k, const float *v, long kvs, int n, int e, int heads,
                                  float *row)
{
    int d = e / heads, h, j, c;
    float scale = 1.0f / sqrtf((float)d);
    for (h = 0; h < heads; h++) {
        float *qh = q + (long)h * d;
        float top = -INFINITY, sum = 0.0f;
        for (j = 0; j < n; j++) {
            const float *kj = k + (long)j * kvs + (long)h * d;
            float acc = 0.0f;
            for (c = 0; c < d; c++) acc += qh[c] * kj[c];
            row[j] = acc * scale;
            if (row[j] > top) top = row[j];
        }
        for (j = 0; j < n; j++) {
            row[j] = expf(row[j] - top);
            sum += row[j];
        }
        for (c = 0; c < d; c++) qh[c] = 0.0f;
        for (j = 0; j < n; j++) {
            const float *vj = v + (long)j * kvs + (long)h * d;
            float p = row[j] / sum;
            for (c = 0; c < d; c++) qh[c] += p * vj[c];
        }
    }
}

/* Self-attention of x [t, e] into out [t, e] (out must not overlap x): the
 * keys and values of every row first, then one query row at a time (its
 * projection, its context over rows 0 .. t - 1, or 0 .. i when causal, and
 * the output projection straight into out). Scratch: kv [t, 2e] (each row's
 * key and value side by side), q [e] (one query, then its context), row [t]
 * (one head's scores): no [t, t] matrix and no [t, 3e] projection. */
static inline void nnc_attention(const float *x, int t, int e, int heads, int causal, const float *w_in,
                                 const float *b_in, const float *w_out, const float *b_out, float *out, float *kv,
                                 float *q, float *row)
{
    int i;
    nnc_attention_linear(x, t, e, 2 * e, w_in + (long)e * e, b_in ? b_in + e : NULL, kv);
    for (i = 0; i < t; i++) {
        nnc_attention_linear(x + (long)i * e, 1, e, e, w_in, b_in, q);
        nnc_attend_row(q, kv, kv + e, 2L * e, causal ? i + 1 : t, e, heads, row);
        nnc_attention_linear(q, 1, e, e, w_out, b_out, out + (long)i * e);
    }
}

/* Causal attention over the next t steps of a stream: each step's key and
 * value join the cache (keys, values [limit, e]; *count rows filled) and its
 * query attends over every cached row up to its own. Returns 1, changing
 * nothing, when the stream would pass `limit` steps. Scratch: q [e] and
 * row [limit]. */
static inline int nnc_attention_stream(const float *x, int t, int e, int heads, const float *w_in, const float *b_in,
                                       const float *w_out, const float *b_out, float *keys, float *values,
                                       float *count, int limit, float *out, float *q, float *row)
{
    long past = (long)count[0];
    int i;
    if (past + t > limit) return 1;
    for (i = 0; i < t; i++) {
        const float *xi = x + (long)i * e;
        const long at = past + i;
        nnc_attention_linear(xi, 1, e, e, w_in + (long)e * e, b_in ? b_in + e : NULL, keys + at * e);
        nnc_attention_linear(xi, 1, e, e, w_in + 2L * e * e, b_in ? b_in + 2 * e : NULL, values + at * e);
        nnc_attention_linear(xi, 1, e, e, w_in, b_in, q);
        nnc_attend_row(q, keys, values, e, (int)(at + 1), e, heads, row);
        nnc_attention_linear(q, 1, e, e, w_out, b_out, out + (long)i * e);
    }
    count[0] = (float)(past + t);
    return 0;
}

/* out[g] = a[g] @ b[g] for `batch` matrices a [n, k], b [k, m]. */
static inline void nnc_matmul(const float *a, const float *b, float *out, long batch, int n, int k, int m)
{
    long g;
    int i, j, c;
    for (g = 0; g < batch; g++) {
        const float *ag = a + g * n * k, *bg = b + g * k * m;
        float *og = out + g * n * m;
        for (i = 0; i < n; i++) {
            float *o = og + (long)i * m;
            for (j = 0; j < m; j++) o[j] = 0.0f;
            for (c = 0; c < k; c++) {
                float s = ag[(long)i * k + c];
                const float *br = bg + (long)c * m;
                for (j = 0; j < m; j++) o[j] += s * br[j];
            }
        }
    }
}

static inline void nnc_div(const float *a, const float *b, float *out, long n)
{
    long i;
    for (i = 0; i < n; i++) out[i] = a[i] / b[i];
}

#endif /* NNC_V2_ATTENTION_H */
