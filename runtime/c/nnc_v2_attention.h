/* nnc_v2_attention.h - the transformer family's C kernels (LANGUAGE.md section 9):
 * embedding, positional, attention (multi-head self-attention as
 * nn.MultiheadAttention with q = k = v, a numerically stable softmax, an
 * optional causal mask, and a key/value cache for streaming), matmul, div.
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

/* The heads' context of `t` queries at positions past .. past + t - 1 over
 * keys/values rows 0 .. (causal ? own position : n - 1): q rows have stride
 * qs, k and v rows stride kvs; ctx [t, e]; row: scratch of n floats. */
static inline void nnc_attend(const float *q, long qs, const float *k, const float *v, long kvs, int t, int n, int e,
                       int heads, int causal, long past, float *ctx, float *row)
{
    int d = e / heads, i, h, j, c;
    float scale = 1.0f / sqrtf((float)d);
    for (i = 0; i < t; i++) {
        int last = causal ? (int)(past + i) : n - 1;
        if (last > n - 1) last = n - 1;
        for (h = 0; h < heads; h++) {
            const float *qi = q + (long)i * qs + (long)h * d;
            float *out = ctx + (long)i * e + (long)h * d;
            float top = -INFINITY, sum = 0.0f;
            for (j = 0; j <= last; j++) {
                const float *kj = k + (long)j * kvs + (long)h * d;
                float acc = 0.0f;
                for (c = 0; c < d; c++) acc += qi[c] * kj[c];
                row[j] = acc * scale;
                if (row[j] > top) top = row[j];
            }
            for (j = 0; j <= last; j++) {
                row[j] = expf(row[j] - top);
                sum += row[j];
            }
            for (c = 0; c < d; c++) out[c] = 0.0f;
            for (j = 0; j <= last; j++) {
                const float *vj = v + (long)j * kvs + (long)h * d;
                float p = row[j] / sum;
                for (c = 0; c < d; c++) out[c] += p * vj[c];
            }
        }
    }
}

/* Self-attention of x [t, e]: qkv [t, 3e], ctx [t, e], row [t] scratch. */
static inline void nnc_attention(const float *x, int t, int e, int heads, int causal, const float *w_in,
                          const float *b_in, const float *w_out, const float *b_out, float *out, float *qkv,
                          float *ctx, float *row)
{
    nnc_attention_linear(x, t, e, 3 * e, w_in, b_in, qkv);
    nnc_attend(qkv, 3L * e, qkv + e, qkv + 2 * e, 3L * e, t, t, e, heads, causal, 0, ctx, row);
    nnc_attention_linear(ctx, t, e, e, w_out, b_out, out);
}

/* Causal attention over the next t steps of a stream: their keys and values
 * join the cache (keys, values [limit, e]; *count rows filled). Returns 1,
 * changing nothing, when the stream would pass `limit` steps. */
static inline int nnc_attention_stream(const float *x, int t, int e, int heads, const float *w_in, const float *b_in,
                                const float *w_out, const float *b_out, float *keys, float *values,
                                float *count, int limit, float *out, float *qkv, float *ctx, float *row)
{
    long past = (long)count[0];
    int i;
    if (past + t > limit) return 1;
    nnc_attention_linear(x, t, e, 3 * e, w_in, b_in, qkv);
    for (i = 0; i < t; i++) {
        memcpy(keys + (past + i) * e, qkv + (long)i * 3 * e + e, (size_t)e * sizeof(float));
        memcpy(values + (past + i) * e, qkv + (long)i * 3 * e + 2 * e, (size_t)e * sizeof(float));
    }
    nnc_attend(qkv, 3L * e, keys, values, e, t, (int)(past + t), e, heads, 1, past, ctx, row);
    nnc_attention_linear(ctx, t, e, e, w_out, b_out, out);
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
