/* nnc_v2_attention.h - the transformer family's C kernels (LANGUAGE.md section 9):
 * embedding, positional, attention (multi-head self-attention as
 * nn.MultiheadAttention with q = k = v, a numerically stable softmax, an
 * optional causal mask, and a key/value cache for streaming; one query row
 * at a time, so its scratch is the keys and values and a row of scores),
 * matmul, div.
 * Parameters are in PyTorch's layout, but attention's, packed at code
 * generation (`c.pack_attention`). Included at the end of nnc_kernels.h
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

/* Attention's weights in the kernels' layouts (`c.pack_attention`): the
 * query, key and value projections one after another, and the output
 * projection, each W transposed with zero-padded rows [e][ld] (ld =
 * padded(e), as a dense layer's), so every projection is nnc_dense's
 * vectorised matrix-vector product; biases padded to ld. */
#define NNC_AB 16 /* keys of one block of scores (a constant trip count: it vectorises) */

/* row[j] = scale * q[0:d] . kt[0:d][j] for j < n: keys transposed, row c
 * of kt ldk floats long (ldk >= n), so each block of NNC_AB scores is a
 * sum of d scaled key rows; a block that would pass ldk is done one score
 * at a time. */
NNC_INLINE void nnc_attn_scores(const float *restrict q, const float *restrict kt, long ldk, int n, int d,
                                float scale, float *restrict row)
{
    int j0, j, c;
    for (j0 = 0; j0 < n && j0 + NNC_AB <= ldk; j0 += NNC_AB) {
        float acc[NNC_AB];
        const int m = n - j0 < NNC_AB ? n - j0 : NNC_AB;
        for (j = 0; j < NNC_AB; j++) acc[j] = 0.0f;
        for (c = 0; c < d; c++) {
            const float qc = q[c];
            const float *kc = kt + c * ldk + j0;
            for (j = 0; j < NNC_AB; j++) acc[j] = NNC_FMA(qc, kc[j], acc[j]);
        }
        for (j = 0; j < m; j++) row[j0 + j] = acc[j] * scale;
    }
    for (j = j0; j < n; j++) {
        float acc = 0.0f;
        for (c = 0; c < d; c++) acc = NNC_FMA(q[c], kt[c * ldk + j], acc);
        row[j] = acc * scale;
    }
}

/* The largest of row[0:n] (NaN entries ignored, -inf when there are none):
 * NNC_AB lanes, each a chain of comparisons, folded pairwise (with GNU
 * vector extensions, lanes of one vector, compared and selected on the
 * bits: GCC does not vectorise the lanes of a max written with arrays). */
NNC_INLINE float nnc_attn_max(const float *restrict row, int n)
{
    float top[NNC_AB], t;
    int j0 = 0, j, w;
#if defined(NNC_VEC)
    nnc_vf best = (nnc_vf){0} - INFINITY;
    for (; j0 + NNC_VL <= n; j0 += NNC_VL) {
        const nnc_vf r = nnc_ldv(row + j0);
        const nnc_vi m = r > best;
        best = (nnc_vf)(((nnc_vi)r & m) | ((nnc_vi)best & ~m));
    }
    memcpy(top, &best, sizeof best);
    w = NNC_VL;
#else
    for (j = 0; j < NNC_AB; j++) top[j] = -INFINITY;
    for (; j0 + NNC_AB <= n; j0 += NNC_AB)
        for (j = 0; j < NNC_AB; j++) top[j] = row[j0 + j] > top[j] ? row[j0 + j] : top[j];
    w = NNC_AB;
#endif
    for (j = j0; j < n; j++) top[0] = row[j] > top[0] ? row[j] : top[0];
    for (w /= 2; w > 0; w /= 2)
        for (j = 0; j < w; j++) top[j] = top[j + w] > top[j] ? top[j + w] : top[j];
    t = top[0];
    return t;
}

/* row[0:n] = exp(row - max row), in place; returns 1 / their sum (kept in
 * NNC_AB lanes, added pairwise). */
NNC_INLINE float nnc_attn_softmax(float *restrict row, int n)
{
    float sum[NNC_AB];
    const float t = nnc_attn_max(row, n);
    int j0, j, w;
    for (j = 0; j < NNC_AB; j++) sum[j] = 0.0f;
    for (j0 = 0; j0 + NNC_AB <= n; j0 += NNC_AB)
        for (j = 0; j < NNC_AB; j++) {
            const float e = nnc_expf(row[j0 + j] - t);
            row[j0 + j] = e;
            sum[j] += e;
        }
    for (j = j0; j < n; j++) {
        row[j] = nnc_expf(row[j] - t);
        sum[0] += row[j];
    }
    for (w = NNC_AB / 2; w > 0; w /= 2)
        for (j = 0; j < w; j++) sum[j] += sum[j + w];
    return 1.0f / sum[0];
}

/* ctx[0:w] = inv * sum_j p[j] v[j][0:w] for j < n (rows of v ldv apart):
 * eight partial sums over j, so eight independent chains of multiply-adds;
 * w is a constant where it is inlined (8 or 16 columns). */
NNC_INLINE void nnc_attn_mix(const float *restrict p, const float *restrict v, long ldv, int n, float inv, int w,
                             float *restrict ctx)
{
    float a0[NNC_AB], a1[NNC_AB], a2[NNC_AB], a3[NNC_AB], a4[NNC_AB], a5[NNC_AB], a6[NNC_AB], a7[NNC_AB];
    int j, c;
    for (c = 0; c < w; c++) a0[c] = a1[c] = a2[c] = a3[c] = a4[c] = a5[c] = a6[c] = a7[c] = 0.0f;
    for (j = 0; j + 8 <= n; j += 8) {
        const float *v0 = v + j * ldv;
        for (c = 0; c < w; c++) {
            a0[c] = NNC_FMA(p[j], v0[c], a0[c]);
            a1[c] = NNC_FMA(p[j + 1], v0[ldv + c], a1[c]);
            a2[c] = NNC_FMA(p[j + 2], v0[2 * ldv + c], a2[c]);
            a3[c] = NNC_FMA(p[j + 3], v0[3 * ldv + c], a3[c]);
            a4[c] = NNC_FMA(p[j + 4], v0[4 * ldv + c], a4[c]);
            a5[c] = NNC_FMA(p[j + 5], v0[5 * ldv + c], a5[c]);
            a6[c] = NNC_FMA(p[j + 6], v0[6 * ldv + c], a6[c]);
            a7[c] = NNC_FMA(p[j + 7], v0[7 * ldv + c], a7[c]);
        }
    }
    for (; j < n; j++)
        for (c = 0; c < w; c++) a0[c] = NNC_FMA(p[j], v[j * ldv + c], a0[c]);
    for (c = 0; c < w; c++) ctx[c] = (((a0[c] + a1[c]) + (a2[c] + a3[c])) + ((a4[c] + a5[c]) + (a6[c] + a7[c]))) * inv;
}

/* The context of one head: ctx[0:d] from probabilities p[0:n] (not yet
 * normalised: times inv) over value rows ldv apart. */
static inline void nnc_attn_context(const float *p, const float *v, long ldv, int n, float inv, int d, float *ctx)
{
    int c;
    if (d % 16 == 0) {
        for (c = 0; c < d; c += 16) nnc_attn_mix(p, v + c, ldv, n, inv, 16, ctx + c);
    } else if (d % 8 == 0) {
        for (c = 0; c < d; c += 8) nnc_attn_mix(p, v + c, ldv, n, inv, 8, ctx + c);
    } else {
        long j;
        for (c = 0; c < d; c++) ctx[c] = 0.0f;
        for (j = 0; j < n; j++)
            for (c = 0; c < d; c++) ctx[c] = NNC_FMA(p[j], v[j * ldv + c], ctx[c]);
        for (c = 0; c < d; c++) ctx[c] *= inv;
    }
}

/* One query row's context, head by head, into ctx [e] (not overlapping q).
 * Keys: transposed, kt [e][ldk] (column j is key j), when ldk > 0; else
 * rows of `kt` e floats apart (the streaming cache). Values: rows of v, e
 * floats apart; n keys and values. row: scratch of n floats, a head's
 * scores, softmaxed in place (numerically stable: the largest score is
 * subtracted first). */
static inline void nnc_attend_row(const float *q, const float *kt, long ldk, const float *v, int n, int e, int heads,
                                  float *row, float *ctx)
{
    int d = e / heads, h, j, c;
    float scale = 1.0f / sqrtf((float)d), inv;
    for (h = 0; h < heads; h++) {
        const float *qh = q + (long)h * d;
        if (ldk > 0) {
            nnc_attn_scores(qh, kt + (long)h * d * ldk, ldk, n, d, scale, row);
        } else {
            for (j = 0; j < n; j++) {
                const float *kj = kt + (long)j * e + (long)h * d;
                float acc = 0.0f;
                for (c = 0; c < d; c++) acc = NNC_FMA(qh[c], kj[c], acc);
                row[j] = acc * scale;
            }
        }
        inv = nnc_attn_softmax(row, n);
        nnc_attn_context(row, v + (long)h * d, e, n, inv, d, ctx + (long)h * d);
    }
}

/* Self-attention of x [t, e] into out [t, e] (out must not overlap x),
 * weights packed (`c.pack_attention`, ld = padded(e)); every projection a
 * matrix multiply over all rows (nnc_dense). The keys first, into
 * out (free until the queries), then transposed into kv [0, e t) (key j is
 * column j of an [e][t] matrix: a head's scores are sums of key rows); the
 * values into kv [e t, 2 e t) as [t][e]; the queries into out; then one
 * query row at a time, copied to q, its context over rows 0 .. t - 1 (or
 * 0 .. i when causal) into out's row i; last, the contexts copied into kv
 * (free by then) and projected back into out. Scratch: kv [2 e t], q [e],
 * row [t] (one head's scores): no [t, t] matrix and no [t, 3e] projection. */
static inline void nnc_attention(const float *x, int t, int e, int heads, int causal, const float *w_in,
                                 const float *b_in, const float *w_out, const float *b_out, float *out, float *kv,
                                 float *q, float *row)
{
    const int ld = e == 1 ? 1 : (e + 15) / 16 * 16;
    const long we = (long)e * ld;
    float *kt = kv, *v = kv + (long)e * t;
    int i, c, j;
    nnc_dense(x, t, e, e, ld, w_in + we, b_in ? b_in + ld : NULL, out, NNC_ACT_NONE, 0.0f);
    for (j = 0; j < t; j++)
        for (c = 0; c < e; c++) kt[(long)c * t + j] = out[(long)j * e + c];
    nnc_dense(x, t, e, e, ld, w_in + 2 * we, b_in ? b_in + 2 * ld : NULL, v, NNC_ACT_NONE, 0.0f);
    nnc_dense(x, t, e, e, ld, w_in, b_in, out, NNC_ACT_NONE, 0.0f);
    for (i = 0; i < t; i++) {
        float *oi = out + (long)i * e;
        memcpy(q, oi, (size_t)e * sizeof *q);
        nnc_attend_row(q, kt, t, v, causal ? i + 1 : t, e, heads, row, oi);
    }
    memcpy(kv, out, (size_t)t * e * sizeof *kv);
    nnc_dense(kv, t, e, e, ld, w_out, b_out, out, NNC_ACT_NONE, 0.0f);
}

/* Causal attention over the next t steps of a stream: the steps' keys and
 * values join the cache (keys, values [limit, e], rows; *count rows
 * filled), their queries go into out, and each step's query attends over
 * every cached row up to its own (later rows are never read), its context
 * into out's row, then through the output projection (the context copied
 * to q first). Returns 1, changing nothing, when the stream would pass
 * `limit` steps. Scratch: q [e] and row [limit]. Weights as nnc_attention's. */
static inline int nnc_attention_stream(const float *x, int t, int e, int heads, const float *w_in, const float *b_in,
                                       const float *w_out, const float *b_out, float *keys, float *values,
                                       float *count, int limit, float *out, float *q, float *row)
{
    const int ld = e == 1 ? 1 : (e + 15) / 16 * 16;
    const long we = (long)e * ld;
    long past = (long)count[0];
    int i;
    if (past + t > limit) return 1;
    nnc_dense(x, t, e, e, ld, w_in + we, b_in ? b_in + ld : NULL, keys + past * e, NNC_ACT_NONE, 0.0f);
    nnc_dense(x, t, e, e, ld, w_in + 2 * we, b_in ? b_in + 2 * ld : NULL, values + past * e, NNC_ACT_NONE, 0.0f);
    nnc_dense(x, t, e, e, ld, w_in, b_in, out, NNC_ACT_NONE, 0.0f);
    for (i = 0; i < t; i++) {
        float *oi = out + (long)i * e;
        memcpy(q, oi, (size_t)e * sizeof *q);
        nnc_attend_row(q, keys, 0, values, (int)(past + i + 1), e, heads, row, oi);
        memcpy(q, oi, (size_t)e * sizeof *q);
        nnc_dense(q, 1, e, e, ld, w_out, b_out, oi, NNC_ACT_NONE, 0.0f);
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
