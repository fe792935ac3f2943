/* nnc_v2_spatial.h - the C kernels of LANGUAGE.md section 9's spatial ops:
 * transposed convolutions (and, as they land, padding, resizing, pooling and
 * normalisation variants).
 *
 * In:  one example at a time, in PyTorch's layout without the batch axis;
 *      weights in PyTorch's layout, except a transposed convolution's
 *      (packed by the code generator, `pack_conv_transpose` in codegen/c.py).
 * Out: results written to caller-owned memory, as nnc_kernels.h's kernels.
 *
 * Included at the end of nnc_kernels.h (the code generator inlines it into
 * the one nnc_kernels.h it writes), so everything defined there is in scope.
 */
#ifndef NNC_V2_SPATIAL_H
#define NNC_V2_SPATIAL_H

/* The first and one-past-last input index i in [0, n) whose output index
 * i * s + off lies in [0, on): the part of a transposed-convolution tap that
 * lands inside the output. */
static inline void nnc_tap_range(int n, int s, int off, int on, int *lo, int *hi) {
    int a = 0, b = n;
    if (off < 0) a = (-off + s - 1) / s;
    if (off >= on) b = 0;
    else if ((long)(n - 1) * s + off >= on) b = (on - 1 - off) / s + 1;
    *lo = a;
    *hi = b > a ? b : a;
}

/* PyTorch's conv_transpose2d of x [cin, h, w] with w [cin][cout/groups][kh][kw]
 * and bias [cout] (or NULL) into y [cout, oh, ow], `pt`, `pl` the padding
 * (both sides; output rows past the computed ones, output_padding, get the
 * bias only; 1-d: h = kh = sh = dh = 1, pt = 0; the geometry is nnc_conv's),
 * as a packed matrix multiply and a scatter: per group, the
 * columns C[(co, a, b)][n] = sum_ci W[ci][co][a][b] x[ci][n] of NNC_NR input
 * pixels at a time (the input read in place; a short last tile copied into
 * `panel`), NNC_MR rows of C at a time in a register tile's worth of stack,
 * each row then added to the output positions its tap reaches (stored with
 * the bias when each output is reached by one tap only). `wp` is packed by
 * the code generator as nnc_conv2d's weights of a convolution with M =
 * cout/groups*kh*kw rows and K = cin/groups deep: [groups][ceil(M/MR)][K][MR].
 * Scratch: `panel`, min(K, kc) * NNC_NR_MAX floats (kc = p->kc, or NNC_KC
 * when 0); NULL when h*w is a multiple of NNC_NR_MAX (no short tile). */
static inline void nnc_conv_transpose_gemm(const nnc_conv *p, const float *x, const float *wp, const float *bias,
                                           float *y, float *panel) {
    const int cig = p->cin / p->groups, cog = p->cout / p->groups, taps = p->kh * p->kw;
    const int M = cog * taps, K = cig, mb = (M + NNC_MR - 1) / NNC_MR;
    const int KC = p->kc > 0 ? p->kc : NNC_KC;
    const long N = (long)p->h * p->w, plane = (long)p->oh * p->ow;
    /* kernel = stride, no dilation, padding or output_padding: every output
     * is one tap of one input, stored once with its bias (no fill first) */
    const int once = p->kh == p->sh && p->kw == p->sw && p->dh == 1 && p->dw == 1 && p->pt == 0 && p->pl == 0 &&
                     p->oh == p->h * p->sh && p->ow == p->w * p->sw;
    int g, co;
    long n0;
    for (co = 0; co < (once ? 0 : p->cout); co++) {
        const float v = bias ? bias[co] : 0.0f;
        float *yc = y + co * plane;
        long q;
        for (q = 0; q < plane; q++) yc[q] = v;
    }
    for (g = 0; g < p->groups; g++) {
        const float *wg = wp + (long)g * mb * NNC_MR * K, *xg = x + (long)g * K * N;
        float *yg = y + (long)g * cog * plane;
        for (n0 = 0; n0 < N; n0 += NNC_NR) {
            const int nr = (int)(N - n0 < NNC_NR ? N - n0 : NNC_NR);
            int run_i[NNC_NR], run_j[NNC_NR], run_c[NNC_NR], run_len[NNC_NR];
            int runs = 0, j, m0;
            for (j = 0; j < nr; j += run_len[runs++]) {
                const long n = n0 + j;
                run_j[runs] = j;
                run_i[runs] = (int)(n / p->w);
                run_c[runs] = (int)(n % p->w);
                run_len[runs] = nr - j < p->w - run_c[runs] ? nr - j : p->w - run_c[runs];
            }
            for (m0 = 0; m0 < M; m0 += NNC_MR) {
                const int mc = M - m0 < NNC_MR ? M - m0 : NNC_MR;
                float tile[NNC_MR * NNC_NR];
                int k0, m, r;
                for (k0 = 0; k0 < K; k0 += KC) {
                    const int kc = K - k0 < KC ? K - k0 : KC;
                    const float *b = xg + (long)k0 * N + n0;
                    long ldb = N;
                    if (nr < NNC_NR && (m0 == 0 || K > KC)) {   /* the short last tile, zero beyond nr */
                        int k, q;
                        for (k = 0; k < kc; k++) {
                            float *d = panel + (long)k * NNC_NR;
                            memcpy(d, b + (long)k * N, (size_t)nr * sizeof *d);
                            for (q = nr; q < NNC_NR; q++) d[q] = 0.0f;
                        }
                    }
                    if (nr < NNC_NR) {
                        b = panel;
                        ldb = NNC_NR;
                    }
                    nnc_micro(kc, wg + (long)m0 * K + (long)k0 * NNC_MR, b, ldb, tile, NNC_NR, mc, nr, k0 == 0,
                              k0 + kc >= K, NULL, NNC_ACT_NONE, 0.0f);
                }
                for (m = 0; m < mc; m++) {
                    const int o = (m0 + m) / taps, t = (m0 + m) % taps;
                    const int dy = (t / p->kw) * p->dh - p->pt, dx = (t % p->kw) * p->dw - p->pl;
                    const float *row = tile + (long)m * NNC_NR;
                    const float bv = bias ? bias[g * cog + o] : 0.0f;
                    float *yo = yg + (long)o * plane;
                    for (r = 0; r < runs; r++) {
                        const int oy = run_i[r] * p->sh + dy, ox = run_c[r] * p->sw + dx;
                        int lo, hi, q;
                        if (oy < 0 || oy >= p->oh) continue;
                        nnc_tap_range(run_len[r], p->sw, ox, p->ow, &lo, &hi);
                        {
                            const float *src = row + run_j[r];
                            float *dst = yo + (long)oy * p->ow + ox;
                            if (once)
                                for (q = lo; q < hi; q++) dst[(long)q * p->sw] = src[q] + bv;
                            else if (p->sw == 1)
                                for (q = lo; q < hi; q++) dst[q] += src[q];
                            else
                                for (q = lo; q < hi; q++) dst[(long)q * p->sw] += src[q];
                        }
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ pad */

#define NNC_PAD_CONSTANT 0
#define NNC_PAD_REFLECT 1
#define NNC_PAD_REPLICATE 2

/* The unpadded index an index i of a padded axis (lo before, n long) reads,
 * or -1 for the constant fill. */
static inline int nnc_pad_source(int i, int lo, int n, int mode) {
    int j = i - lo;
    if (j >= 0 && j < n) return j;
    if (mode == NNC_PAD_CONSTANT) return -1;
    if (mode == NNC_PAD_REPLICATE) return j < 0 ? 0 : n - 1;
    return j < 0 ? -j : 2 * (n - 1) - j;       /* reflect: the compiler checked lo, hi < n */
}

/* F.pad of `outer` planes [h, w] (1-d: h = 1, t = b = 0): (t, b) rows and (l, r) columns. */
static inline void nnc_pad(const float *x, float *y, long outer, int h, int w, int t, int b, int l, int r, int mode,
                           float value) {
    const int oh = h + t + b, ow = w + l + r;
    long o;
    int i, j;
    for (o = 0; o < outer; o++) {
        const float *xp = x + o * h * w;
        float *yp = y + o * oh * ow;
        for (i = 0; i < oh; i++) {
            const int si = nnc_pad_source(i, t, h, mode);
            float *yr = yp + (long)i * ow;
            const float *xr;
            if (si < 0) {
                for (j = 0; j < ow; j++) yr[j] = value;
                continue;
            }
            /* the row's edges, then its copy: one loop choosing per column between
             * `value` and a load was miscompiled by GCC 12 at -O3 -march=native */
            xr = xp + (long)si * w;
            for (j = 0; j < l; j++) yr[j] = mode == NNC_PAD_CONSTANT ? value : xr[nnc_pad_source(j, l, w, mode)];
            memcpy(yr + l, xr, (size_t)w * sizeof(float));
            for (j = l + w; j < ow; j++) yr[j] = mode == NNC_PAD_CONSTANT ? value : xr[nnc_pad_source(j, l, w, mode)];
        }
    }
}

/* ------------------------------------------------------------------ pooling */

/* Maximum over the `inner` elements of each of `c` channels. */
static inline void nnc_global_maxpool(const float *x, float *y, int c, long inner) {
    int ch;
    long i;
    for (ch = 0; ch < c; ch++) {
        const float *xc = x + (long)ch * inner;
        float m = xc[0];
        for (i = 1; i < inner; i++) m = xc[i] > m ? xc[i] : m;
        y[ch] = m;
    }
}

/* F.adaptive_avg_pool2d of [c, h, w] to [c, oh, ow] (1-d: h = oh = 1): output (i, j)
 * averages rows floor(i*h/oh) .. ceil((i+1)*h/oh)-1 and the same for columns. */
static inline void nnc_adaptive_avgpool(const float *x, float *y, int c, int h, int w, int oh, int ow) {
    int ch, i, j, r, q;
    for (ch = 0; ch < c; ch++)
        for (i = 0; i < oh; i++) {
            const int r0 = (int)(((long)i * h) / oh), r1 = (int)(((long)(i + 1) * h + oh - 1) / oh);
            for (j = 0; j < ow; j++) {
                const int q0 = (int)(((long)j * w) / ow), q1 = (int)(((long)(j + 1) * w + ow - 1) / ow);
                double s = 0.0;
                for (r = r0; r < r1; r++)
                    for (q = q0; q < q1; q++) s += x[((long)ch * h + r) * w + q];
                y[((long)ch * oh + i) * ow + j] = (float)(s / ((double)(r1 - r0) * (q1 - q0)));
            }
        }
}

/* ------------------------------------------------------------------ normalisation */

/* Group norm of [c, inner] in `groups` groups of c/groups channels (instance norm:
 * groups = c), biased variance, then per-channel gamma and beta (NULL: not affine). */
static inline void nnc_groupnorm(const float *x, float *y, int c, long inner, int groups, const float *gamma,
                                 const float *beta, float eps) {
    const int per = c / groups;
    const long n = (long)per * inner;
    int g, ch;
    long i;
    for (g = 0; g < groups; g++) {
        const float *xg = x + (long)g * n;
        double mean = 0.0, var = 0.0;
        float m, r;
        for (i = 0; i < n; i++) mean += xg[i];
        mean /= (double)n;
        for (i = 0; i < n; i++) {
            const double d = xg[i] - mean;
            var += d * d;
        }
        m = (float)mean;
        r = (float)(1.0 / sqrt(var / (double)n + (double)eps));
        for (ch = g * per; ch < (g + 1) * per; ch++) {
            const float s = r * (gamma ? gamma[ch] : 1.0f), t = beta ? beta[ch] : 0.0f;
            const float *xc = x + (long)ch * inner;
            float *yc = y + (long)ch * inner;
            for (i = 0; i < inner; i++) yc[i] = (xc[i] - m) * s + t;
        }
    }
}

/* ------------------------------------------------------------------ linear and bilinear upsampling */

/* Source index and weight of output position o of an axis upsampled by s
 * (align_corners=false): src = max((o + 0.5) / s - 0.5, 0). */
static inline void nnc_interp_src(int o, int s, int n, int *i0, int *i1, float *lam) {
    double src = ((double)o + 0.5) / (double)s - 0.5;
    int a;
    if (src < 0.0) src = 0.0;
    a = (int)src;
    if (a > n - 1) a = n - 1;
    *i0 = a;
    *i1 = a + 1 < n ? a + 1 : n - 1;
    *lam = (float)(src - a);
}

/* Bilinear upsampling of [c, h, w] by (sh, sw), align_corners=false (1-d linear: h = sh = 1). */
static inline void nnc_upsample_linear(const float *x, float *y, int c, int h, int w, int sh, int sw) {
    const int oh = h * sh, ow = w * sw;
    int ch, r, q;
    for (ch = 0; ch < c; ch++) {
        const float *xc = x + (long)ch * h * w;
        float *yc = y + (long)ch * oh * ow;
        for (r = 0; r < oh; r++) {
            int r0, r1;
            float lr;
            const float *a, *b;
            nnc_interp_src(r, sh, h, &r0, &r1, &lr);
            a = xc + (long)r0 * w;
            b = xc + (long)r1 * w;
            for (q = 0; q < ow; q++) {
                int q0, q1;
                float lq, top, bot;
                nnc_interp_src(q, sw, w, &q0, &q1, &lq);
                top = a[q0] * (1.0f - lq) + a[q1] * lq;
                bot = b[q0] * (1.0f - lq) + b[q1] * lq;
                yc[(long)r * ow + q] = top * (1.0f - lr) + bot * lr;
            }
        }
    }
}

#endif /* NNC_V2_SPATIAL_H */
