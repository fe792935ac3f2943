/* nnc_kernels.h - the C kernels every generated nnc plan includes.
 *
 * In:  one example at a time, in PyTorch's layout without the batch axis
 *      ([C, H, W], [C, T], [T, F], [F]); weights in the kernel layouts the
 *      code generator writes (documented at each kernel); scratch memory
 *      planned in the caller's arena.
 * Out: results written to caller-owned memory. Nothing here allocates,
 *      keeps state or touches global data: every function is `static inline`
 *      and reentrant, so many models and contexts can run side by side.
 *
 * C99 plus libm. Inner loops are written for the compiler's vectoriser:
 * fixed-size register tiles, no calls in inner loops (exp and tanh are
 * inlined polynomials), no reductions that would need reassociation.
 * NNC_FMA uses fused multiply-add where the target has it.
 */
#ifndef NNC_KERNELS_H
#define NNC_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The register tile of the matrix multiply: NNC_MR rows of weights (the
 * code generator packs weights in blocks of this many rows) times NNC_NR
 * output columns (chosen here from the vector width). */
#define NNC_MR 6
#if defined(__AVX512F__)
#define NNC_NR 32
#elif defined(__AVX__) || defined(__ARM_NEON)
#define NNC_NR 16
#else
#define NNC_NR 8
#endif
#define NNC_NR_MAX 32 /* the panel scratch the planner reserves assumes this */
#define NNC_KC 256    /* depth of one packed panel */

/* Optional threads: with -fopenmp the loops over independent channels,
 * transforms and tiles of the convolutions run in parallel (each iteration
 * writes its own outputs and scratch); without it the pragmas are not
 * there at all (no unknown-pragma warning). NNC_OMP_FOR_IF parallelises
 * when the local `nnc_par` is nonzero. */
#if defined(_OPENMP)
#define NNC_OMP_FOR _Pragma("omp parallel for schedule(static)")
#define NNC_OMP_FOR_IF _Pragma("omp parallel for schedule(static) if(nnc_par)")
#else
#define NNC_OMP_FOR
#define NNC_OMP_FOR_IF
#endif

#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define NNC_FMA(a, b, c) fmaf((a), (b), (c))
#else
#define NNC_FMA(a, b, c) ((a) * (b) + (c))
#endif

enum {
    NNC_ACT_NONE, NNC_RELU, NNC_RELU6, NNC_SIGMOID, NNC_TANH, NNC_GELU, NNC_SILU, NNC_SELU, NNC_SOFTPLUS,
    NNC_HARDSIGMOID, NNC_HARDSWISH, NNC_LEAKY_RELU, NNC_ELU,
    NNC_NEG, NNC_ABS, NNC_EXP, NNC_LOG, NNC_SQRT, NNC_SQUARE
};

static inline long nnc_floordiv(long a, long b) {
    long q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* ------------------------------------------------------------------ elementwise math */

/* a ? x : y on the float's bits, for a comparison result `a` (0 or 1).
 * A conditional expression whose arms the compiler may not evaluate
 * speculatively (floating-point operations can trap) stays a branch at -O2
 * on SSE/AVX2 targets ("control flow in loop"); this select never does, so
 * loops calling nnc_expf, nnc_sigmoidf and nnc_tanhf vectorise everywhere. */
static inline float nnc_sel(int a, float x, float y) {
    int32_t m = -(int32_t)a, ix, iy, r;
    float f;
    memcpy(&ix, &x, sizeof ix);
    memcpy(&iy, &y, sizeof iy);
    r = (ix & m) | (iy & ~m);
    memcpy(&f, &r, sizeof f);
    return f;
}

/* exp(x) to about 2 ulp: x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial
 * for exp(r) and the exponent built in the float's bits. Every select is
 * branch-free (nnc_sel): NaN and arguments out of range are clamped before
 * the float -> int conversion (a NaN or huge value must never reach it:
 * undefined behaviour), and the result is fixed up after it (NaN stays NaN,
 * exp(+inf) = +inf, exp(-inf) = 0). */
static inline float nnc_expf(float x) {
    int32_t bits;
    float n, r, p, c, y, scale;
    c = nnc_sel(x < 88.3762626647949f, x, 88.3762626647949f);     /* NaN -> the upper clamp */
    c = nnc_sel(c > -87.3365447505531f, c, -87.3365447505531f);
    /* round to nearest by adding and removing 1.5 * 2^23 (floorf would not vectorise) */
    n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    r = c - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    bits = ((int32_t)n + 127) * 8388608;    /* 2^n, built in the exponent bits; n in [-126, 127] */
    memcpy(&scale, &bits, sizeof scale);
    y = p * scale;
    y = nnc_sel(x > 88.7228390f, INFINITY, y);                     /* beyond FLT_MAX */
    y = nnc_sel(x < -103.972084f, 0.0f, y);                        /* below the smallest subnormal */
    return nnc_sel(x == x, y, x);                                  /* NaN in, NaN out */
}

static inline float nnc_sigmoidf(float x) { return 1.0f / (1.0f + nnc_expf(-x)); }

/* tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|); odd polynomial near 0
 * where that form would lose relative precision. Both are computed and one
 * selected: no branch. */
static inline float nnc_tanhf(float x) {
    const float a = fabsf(x), e = nnc_expf(-2.0f * a), x2 = x * x;
    const float t = copysignf((1.0f - e) / (1.0f + e), x);
    const float p = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
    return nnc_sel(a < 0.0625f, p, t);
}

static inline void nnc_act(float *x, long n, int act, float alpha) {
    long i;
    switch (act) {
    case NNC_RELU:
        for (i = 0; i < n; i++) x[i] = x[i] < 0.0f ? 0.0f : x[i];   /* NaN stays NaN, as in NumPy and PyTorch */
        break;
    case NNC_RELU6:
        for (i = 0; i < n; i++) x[i] = x[i] < 0.0f ? 0.0f : (x[i] > 6.0f ? 6.0f : x[i]);
        break;
    case NNC_SIGMOID:
        for (i = 0; i < n; i++) x[i] = nnc_sigmoidf(x[i]);
        break;
    case NNC_TANH:
        for (i = 0; i < n; i++) x[i] = nnc_tanhf(x[i]);
        break;
    case NNC_GELU:
        /* -inf gives -inf * 0 = NaN, as PyTorch and the NumPy plan do */
        for (i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        break;
    case NNC_SILU:
        /* -inf gives -inf * 0 = NaN, as PyTorch and the NumPy plan do */
        for (i = 0; i < n; i++) x[i] = x[i] * nnc_sigmoidf(x[i]);
        break;
    case NNC_SELU:
        for (i = 0; i < n; i++)
            x[i] = 1.0507009873554805f * (x[i] > 0.0f ? x[i] : 1.6732632423543772f * (nnc_expf(x[i]) - 1.0f));
        break;
    case NNC_SOFTPLUS:
        for (i = 0; i < n; i++) x[i] = x[i] > 20.0f ? x[i] : log1pf(expf(x[i]));
        break;
    case NNC_HARDSIGMOID:
        for (i = 0; i < n; i++) {
            float t = x[i] + 3.0f;
            t = t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t);
            x[i] = t / 6.0f;
        }
        break;
    case NNC_HARDSWISH:
        for (i = 0; i < n; i++) {
            float t = x[i] + 3.0f;
            t = t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t);
            x[i] = x[i] * t / 6.0f;
        }
        break;
    case NNC_LEAKY_RELU:
        for (i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : alpha * x[i];
        break;
    case NNC_ELU:
        for (i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : alpha * expm1f(x[i]);
        break;
    /* section 9's elementwise math: libm's, so NaN, log(0) = -inf, log(-1) = NaN as in PyTorch */
    case NNC_NEG:
        for (i = 0; i < n; i++) x[i] = -x[i];
        break;
    case NNC_ABS:
        for (i = 0; i < n; i++) x[i] = fabsf(x[i]);
        break;
    case NNC_EXP:
        for (i = 0; i < n; i++) x[i] = nnc_expf(x[i]);
        break;
    case NNC_LOG:
        for (i = 0; i < n; i++) x[i] = logf(x[i]);
        break;
    case NNC_SQRT:
        for (i = 0; i < n; i++) x[i] = sqrtf(x[i]);
        break;
    case NNC_SQUARE:
        for (i = 0; i < n; i++) x[i] = x[i] * x[i];
        break;
    default:
        break;
    }
}

/* An activation as its own step: y = act(x); y may be x. */
static inline void nnc_activation(const float *x, float *y, long n, int act, float alpha) {
    if (y != x) memmove(y, x, (size_t)n * sizeof *y);
    nnc_act(y, n, act, alpha);
}

#if defined(__GNUC__) && !defined(NNC_PLAIN_C)
#define NNC_VEC 1
/* With GCC and Clang, the widest tile is eight named vector accumulators
 * of the target's width (GNU vector extensions; plain C99 elsewhere, or
 * with -DNNC_PLAIN_C): a compiler keeps named variables in registers at any
 * optimisation level, where an array indexed in a loop stays in memory at
 * -O2. Loads and stores go through memcpy (no alignment or aliasing
 * assumption). GCC in ISO C mode does not contract a * b + c into a fused
 * multiply-add; the attribute asks for it on this function only. */
#if defined(__AVX512F__)
#define NNC_VL 16
#elif defined(__AVX__)
#define NNC_VL 8
#else
#define NNC_VL 4
#endif
typedef float nnc_vf __attribute__((vector_size(NNC_VL * sizeof(float))));
#if defined(__clang__)
#define NNC_CONTRACT
#else
#define NNC_CONTRACT __attribute__((optimize("fp-contract=fast")))
#endif

typedef int32_t nnc_vi __attribute__((vector_size(NNC_VL * sizeof(float))));
static inline nnc_vf nnc_ldv(const float *p) {
    nnc_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
#endif

/* ------------------------------------------------------------------ matrix multiply */

#if defined(NNC_VEC) && NNC_NR == 2 * NNC_VL
/* The register tile as twelve named vector accumulators (NNC_NR is two
 * vectors of the target's width: 32, 16 or 8 floats), so that they stay in
 * registers at any optimisation level; the epilogue of a full-width tile
 * (the common case) adds the old C, the bias and applies relu/relu6 in
 * registers too. Other tiles go through a small array on the stack. */
NNC_CONTRACT static inline void nnc_micro(int kc, const float *restrict a, const float *restrict b, long ldb,
                                          float *restrict c, long ldc, int mr, int nr, int first, int last,
                                          const float *restrict bias, int act, float alpha) {
    nnc_vf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0}, c40 = {0},
           c41 = {0}, c50 = {0}, c51 = {0};
    int k, i;
    for (k = 0; k < kc; k++) {
        nnc_vf b0, b1;
        const float *ak = a + (long)k * NNC_MR;
        memcpy(&b0, b + (long)k * ldb, sizeof b0);
        memcpy(&b1, b + (long)k * ldb + NNC_VL, sizeof b1);
        c00 += ak[0] * b0, c01 += ak[0] * b1;
        c10 += ak[1] * b0, c11 += ak[1] * b1;
        c20 += ak[2] * b0, c21 += ak[2] * b1;
        c30 += ak[3] * b0, c31 += ak[3] * b1;
        c40 += ak[4] * b0, c41 += ak[4] * b1;
        c50 += ak[5] * b0, c51 += ak[5] * b1;
    }
    {
        nnc_vf t[NNC_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
        const nnc_vf zero = {0}, six = zero + 6.0f;
        if (nr == NNC_NR) {
            for (i = 0; i < mr; i++) {
                float *row = c + i * ldc;
                nnc_vf v0 = t[i][0], v1 = t[i][1];
                if (!first) {
                    v0 += nnc_ldv(row), v1 += nnc_ldv(row + NNC_VL);
                }
                if (last && bias) {
                    v0 += bias[i], v1 += bias[i];
                }
                if (last && (act == NNC_RELU || act == NNC_RELU6)) {
                    /* x < 0 -> 0 on the bits (NaN compares false and stays) */
                    v0 = (nnc_vf)((nnc_vi)v0 & ~(v0 < zero)), v1 = (nnc_vf)((nnc_vi)v1 & ~(v1 < zero));
                    if (act == NNC_RELU6) {
                        const nnc_vi m0 = v0 > six, m1 = v1 > six;
                        v0 = (nnc_vf)(((nnc_vi)v0 & ~m0) | ((nnc_vi)six & m0));
                        v1 = (nnc_vf)(((nnc_vi)v1 & ~m1) | ((nnc_vi)six & m1));
                    }
                }
                memcpy(row, &v0, sizeof v0), memcpy(row + NNC_VL, &v1, sizeof v1);
                if (last && act && act != NNC_RELU && act != NNC_RELU6) nnc_act(row, nr, act, alpha);
            }
        } else {
            float tile[NNC_MR][NNC_NR];
            int j;
            memcpy(tile, t, sizeof tile);
            for (i = 0; i < mr; i++) {
                float *row = c + i * ldc;
                if (!first)
                    for (j = 0; j < nr; j++) tile[i][j] += row[j];
                if (last && bias)
                    for (j = 0; j < nr; j++) tile[i][j] += bias[i];
                for (j = 0; j < nr; j++) row[j] = tile[i][j];
                if (last && act) nnc_act(row, nr, act, alpha);
            }
        }
    }
}
#else

/* C[0:mr, 0:nr] (row stride ldc) = or += A-panel [kc][NNC_MR] x B [kc]
 * rows of NNC_NR floats, ldb apart (a packed panel: ldb = NNC_NR; a 1x1
 * convolution's input read in place: its plane size). On the last depth
 * block (`last`), adds `bias` (per row, may be NULL) and applies the
 * activation to the stored rows. */
static inline void nnc_micro(int kc, const float *a, const float *b, long ldb, float *c, long ldc, int mr, int nr,
                             int first, int last, const float *bias, int act, float alpha) {
    float acc[NNC_MR][NNC_NR];
    int i, j, k;
    for (i = 0; i < NNC_MR; i++)
        for (j = 0; j < NNC_NR; j++) acc[i][j] = 0.0f;
    for (k = 0; k < kc; k++) {
        const float *bk = b + (long)k * ldb;
        const float *ak = a + (long)k * NNC_MR;
        for (i = 0; i < NNC_MR; i++) {
            const float av = ak[i];
            for (j = 0; j < NNC_NR; j++) acc[i][j] = NNC_FMA(av, bk[j], acc[i][j]);
        }
    }
    for (i = 0; i < mr; i++) {
        float *row = c + i * ldc;
        if (!first)
            for (j = 0; j < nr; j++) acc[i][j] += row[j];
        if (last && bias)
            for (j = 0; j < nr; j++) acc[i][j] += bias[i];
        for (j = 0; j < nr; j++) row[j] = acc[i][j];
        if (last && act) nnc_act(row, nr, act, alpha);
    }
}
#endif

/* ------------------------------------------------------------------ convolution */

/* The geometry of one convolution, 1-d as h = kh = 1. */
typedef struct {
    int cin, h, w;          /* input [cin, h, w] */
    int cout, oh, ow;       /* output [cout, oh, ow] */
    int kh, kw, sh, sw, pt, pl, dh, dw, groups;
    int kc;                 /* rows of a packed panel (the planner sized its scratch); 0: NNC_KC */
} nnc_conv;

/* Pack the B panel of an implicit im2col: rows k0..k0+kc of the column
 * matrix of group `g` (row k = (channel, tap)), columns n0..n0+nr (output
 * pixels), zero beyond nr and outside the input. The nr pixels fall into
 * runs along output rows; within a run the input is read with one stride. */
static inline void nnc_pack_cols(const nnc_conv *p, const float *x, int g, int k0, int kc, long n0, int nr,
                                 float *panel) {
    int run_j[NNC_NR], run_len[NNC_NR], run_oh[NNC_NR], run_q[NNC_NR];
    int runs = 0, j, k, r, taps = p->kh * p->kw, cg = p->cin / p->groups;
    for (j = 0; j < nr; j += run_len[runs++]) {
        long n = n0 + j;
        run_j[runs] = j;
        run_oh[runs] = (int)(n / p->ow);
        run_q[runs] = (int)(n % p->ow);
        run_len[runs] = nr - j < p->ow - run_q[runs] ? nr - j : p->ow - run_q[runs];
    }
    for (k = 0; k < kc; k++) {
        int kk = k0 + k, c = g * cg + kk / taps, t = kk % taps;
        int di = (t / p->kw) * p->dh, dj = (t % p->kw) * p->dw;
        const float *plane = x + (long)c * p->h * p->w;
        float *dst = panel + (long)k * NNC_NR;
        for (r = 0; r < runs; r++) {
            float *d = dst + run_j[r];
            const int len = run_len[r], ih = run_oh[r] * p->sh - p->pt + di, iw0 = run_q[r] * p->sw - p->pl + dj;
            int lo = 0, hi = len, q;
            if (ih < 0 || ih >= p->h) {
                hi = 0;
            } else {
                /* the outputs q of the run whose input column iw0 + q*sw lies in [0, w) */
                if (iw0 < 0) lo = (-iw0 + p->sw - 1) / p->sw;
                if (iw0 + (long)(len - 1) * p->sw >= p->w) hi = p->w - 1 - iw0 < 0 ? 0 : (p->w - 1 - iw0) / p->sw + 1;
                if (lo > hi) lo = hi;
            }
            for (q = 0; q < lo; q++) d[q] = 0.0f;
            if (hi > lo) {
                const float *src = plane + (long)ih * p->w + iw0;
                if (p->sw == 1)
                    memcpy(d + lo, src + lo, (size_t)(hi - lo) * sizeof *d);
                else
                    for (q = lo; q < hi; q++) d[q] = src[(long)q * p->sw];
            }
            for (q = hi; q < len; q++) d[q] = 0.0f;
        }
        for (j = nr; j < NNC_NR; j++) dst[j] = 0.0f;
    }
}

/* PyTorch's convolution as a packed matrix multiply: for each group, the
 * weights `wp` are packed by the code generator as [ceil(M/MR)][K][MR]
 * (M = cout/groups rows, K = cin/groups*kh*kw, zero rows to fill the last
 * block), groups one after another; `panel` is scratch of
 * min(K, kc) * NNC_NR_MAX floats (kc = p->kc, or NNC_KC when 0). Bias and
 * activation are fused. */
static inline void nnc_conv2d(const nnc_conv *p, const float *x, const float *wp, const float *bias, float *y,
                              int act, float alpha, float *panel) {
    const int M = p->cout / p->groups, K = p->cin / p->groups * p->kh * p->kw;
    const int mb = (M + NNC_MR - 1) / NNC_MR, KC = p->kc > 0 ? p->kc : NNC_KC;
    const long N = (long)p->oh * p->ow;
    /* a 1x1 convolution of stride 1 without padding: the input [K, N] is the
     * column matrix itself, read in place for every full tile */
    const int pointwise = p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && p->pt == 0 && p->pl == 0 &&
                          p->oh == p->h && p->ow == p->w;
    const int nnc_par = pointwise;    /* other tiles share the packed panel */
    (void)nnc_par;                    /* read by NNC_OMP_FOR_IF only */
    int g;
    long n0;
    for (g = 0; g < p->groups; g++) {
        const float *wg = wp + (long)g * mb * NNC_MR * K;
        float *yg = y + (long)g * M * N;
        const float *bg = bias ? bias + g * M : NULL;
        NNC_OMP_FOR_IF
        for (n0 = 0; n0 < N; n0 += NNC_NR) {
            int nr = (int)(N - n0 < NNC_NR ? N - n0 : NNC_NR), i, k0;
            for (k0 = 0; k0 < K; k0 += KC) {
                int kc = K - k0 < KC ? K - k0 : KC;
                const float *b = panel;
                long ldb = NNC_NR;
                if (pointwise && nr == NNC_NR) {
                    b = x + ((long)g * K + k0) * N + n0;
                    ldb = N;
                } else {
                    nnc_pack_cols(p, x, g, k0, kc, n0, nr, panel);
                }
                for (i = 0; i < M; i += NNC_MR) {
                    int mr = M - i < NNC_MR ? M - i : NNC_MR;
                    nnc_micro(kc, wg + (long)i * K + (long)k0 * NNC_MR, b, ldb, yg + (long)i * N + n0, N, mr, nr,
                              k0 == 0, k0 + kc >= K, bg ? bg + i : NULL, act, alpha);
                }
            }
        }
    }
}

/* A 3x3 convolution of stride 1 (no dilation, one group) by Winograd's
 * F(2x2, 3x3): each 2x2 block of outputs (a tile) takes 16 multiplies per
 * input channel instead of 36. `u` holds the 16 transformed weight matrices
 * G g G^T (the code generator transforms them), each packed like
 * nnc_conv2d's weights with K = cin: [16][ceil(cout/MR)][cin][MR]. For each
 * block of NNC_NR tiles: the inputs' 4x4 patches are transformed (B^T d B)
 * into `scratch` [16][cin][NNC_NR], 16 packed matrix multiplies give
 * [16][ceil(cout/MR) MR][NNC_NR] (after it in `scratch`), and the output
 * transform (A^T m A), bias and activation write the 2x2 outputs.
 * Scratch: 16 (cin + ceil(cout/MR) MR) NNC_NR_MAX floats. */
static inline void nnc_conv3x3_wino(const nnc_conv *p, const float *x, const float *u, const float *bias, float *y,
                                    int act, float alpha, float *scratch) {
    const int cin = p->cin, cout = p->cout, mb = (cout + NNC_MR - 1) / NNC_MR;
    const int tw = (p->ow + 1) / 2, th = (p->oh + 1) / 2, T = tw * th;
    const long us = (long)mb * NNC_MR * cin, vs = (long)cin * NNC_NR, ms = (long)mb * NNC_MR * NNC_NR;
    float *v = scratch, *m = scratch + 16 * vs;
    int t0, c, j, e, i;
    for (t0 = 0; t0 < T; t0 += NNC_NR) {
        const int nt = T - t0 < NNC_NR ? T - t0 : NNC_NR;
        int oy[NNC_NR], ox[NNC_NR];
        for (j = 0; j < NNC_NR; j++) {
            const int t = t0 + (j < nt ? j : 0);
            oy[j] = t / tw * 2;
            ox[j] = t % tw * 2;
        }
        NNC_OMP_FOR
        for (c = 0; c < cin; c++) {
            const float *plane = x + (long)c * p->h * p->w;
            float d[16][NNC_NR], q[16][NNC_NR];
            int j, e, r;
            for (j = 0; j < NNC_NR; j++) {
                const int iy = oy[j] - p->pt, ix = ox[j] - p->pl;
                if (j < nt && iy >= 0 && ix >= 0 && iy + 4 <= p->h && ix + 4 <= p->w) {
                    const float *src = plane + (long)iy * p->w + ix;
                    for (r = 0; r < 4; r++)
                        for (e = 0; e < 4; e++) d[r * 4 + e][j] = src[(long)r * p->w + e];
                } else {
                    for (r = 0; r < 4; r++)
                        for (e = 0; e < 4; e++) {
                            const int yy = iy + r, xx = ix + e;
                            d[r * 4 + e][j] = j < nt && yy >= 0 && yy < p->h && xx >= 0 && xx < p->w
                                                  ? plane[(long)yy * p->w + xx] : 0.0f;
                        }
                }
            }
            /* B^T d B over all tiles at once: rows, then columns */
            for (e = 0; e < 4; e++)
                for (j = 0; j < NNC_NR; j++) {
                    q[e][j] = d[e][j] - d[8 + e][j];
                    q[4 + e][j] = d[4 + e][j] + d[8 + e][j];
                    q[8 + e][j] = d[8 + e][j] - d[4 + e][j];
                    q[12 + e][j] = d[4 + e][j] - d[12 + e][j];
                }
            for (r = 0; r < 4; r++) {
                float *o0 = v + (long)(r * 4) * vs + (long)c * NNC_NR, *o1 = o0 + vs, *o2 = o1 + vs, *o3 = o2 + vs;
                for (j = 0; j < NNC_NR; j++) {
                    o0[j] = q[r * 4][j] - q[r * 4 + 2][j];
                    o1[j] = q[r * 4 + 1][j] + q[r * 4 + 2][j];
                    o2[j] = q[r * 4 + 2][j] - q[r * 4 + 1][j];
                    o3[j] = q[r * 4 + 1][j] - q[r * 4 + 3][j];
                }
            }
        }
        /* one transformed input matrix at a time, so that it stays in L1
         * while every block of output channels reads it */
        NNC_OMP_FOR
        for (e = 0; e < 16; e++) {
            int i;
            for (i = 0; i < cout; i += NNC_MR)
                nnc_micro(cin, u + e * us + (long)i * cin, v + e * vs, NNC_NR, m + e * ms + (long)i * NNC_NR, NNC_NR,
                          NNC_MR, NNC_NR, 1, 1, NULL, NNC_ACT_NONE, 0.0f);
        }
        NNC_OMP_FOR
        for (i = 0; i < cout; i++) {
            int j, e;
            {
                float o[4][NNC_NR];
                float *out = y + (long)i * p->oh * p->ow;
                const float b = bias ? bias[i] : 0.0f, *q = m + (long)i * NNC_NR;
                for (j = 0; j < NNC_NR; j++) {
                    /* A^T m A: rows 0+1+2 and 1-2-3, then the same on columns */
                    float s0[4], s1[4];
                    for (e = 0; e < 4; e++) {
                        const float a0 = q[e * ms + j], a1 = q[(4 + e) * ms + j], a2 = q[(8 + e) * ms + j];
                        const float a3 = q[(12 + e) * ms + j];
                        s0[e] = a0 + a1 + a2;
                        s1[e] = a1 - a2 - a3;
                    }
                    o[0][j] = s0[0] + s0[1] + s0[2] + b;
                    o[1][j] = s0[1] - s0[2] - s0[3] + b;
                    o[2][j] = s1[0] + s1[1] + s1[2] + b;
                    o[3][j] = s1[1] - s1[2] - s1[3] + b;
                }
                if (act) nnc_act(&o[0][0], 4 * NNC_NR, act, alpha);
                for (j = 0; j < nt; j++) {
                    float *at = out + (long)oy[j] * p->ow + ox[j];
                    const int right = ox[j] + 1 < p->ow, down = oy[j] + 1 < p->oh;
                    at[0] = o[0][j];
                    if (right) at[1] = o[1][j];
                    if (down) at[p->ow] = o[2][j];
                    if (right && down) at[p->ow + 1] = o[3][j];
                }
            }
        }
    }
}

/* A convolution with one input channel per group (depthwise, channel
 * multiplier cout/cin): direct, row by row. `w` is PyTorch's
 * [cout, 1, kh, kw]. */
/* One output row of a 3x3 depthwise convolution (no dilation) whose three
 * input rows x0, x1, x2 all lie inside the input: the nine taps summed in
 * registers, one store per output (the general loop below reads and
 * writes the row once per tap). Columns whose taps all lie inside the row
 * run unchecked and vectorise (stride 1 or 2); the few at the edges check.
 * The result is clamped to [lo_clamp, hi_clamp] (relu and relu6 fused;
 * -inf, inf for none: NaN stays NaN). */
static inline void nnc_dw3x3_row(const float *restrict x0, const float *restrict x1, const float *restrict x2,
                                 const float *restrict wo, float b, float *restrict row, int w, int ow, int sw,
                                 int pl, float lo_clamp, float hi_clamp) {
    const float w0 = wo[0], w1 = wo[1], w2 = wo[2], w3 = wo[3], w4 = wo[4], w5 = wo[5], w6 = wo[6], w7 = wo[7];
    const float w8 = wo[8];
    int lo = (pl + sw - 1) / sw, hi = w - 3 + pl < 0 ? 0 : (w - 3 + pl) / sw + 1, q, j;
    if (hi > ow) hi = ow;
    if (lo > hi) lo = hi;
    if (sw == 1) {
        const float *a = x0 - pl, *c = x1 - pl, *d = x2 - pl;
        for (q = lo; q < hi; q++) {
            float s = b;
            s = NNC_FMA(w0, a[q], s), s = NNC_FMA(w1, a[q + 1], s), s = NNC_FMA(w2, a[q + 2], s);
            s = NNC_FMA(w3, c[q], s), s = NNC_FMA(w4, c[q + 1], s), s = NNC_FMA(w5, c[q + 2], s);
            s = NNC_FMA(w6, d[q], s), s = NNC_FMA(w7, d[q + 1], s), s = NNC_FMA(w8, d[q + 2], s);
            s = s < lo_clamp ? lo_clamp : s;
            row[q] = s > hi_clamp ? hi_clamp : s;
        }
    } else {
        for (q = lo; q < hi; q++) {
            const long i = (long)q * sw - pl;
            float s = b;
            s = NNC_FMA(w0, x0[i], s), s = NNC_FMA(w1, x0[i + 1], s), s = NNC_FMA(w2, x0[i + 2], s);
            s = NNC_FMA(w3, x1[i], s), s = NNC_FMA(w4, x1[i + 1], s), s = NNC_FMA(w5, x1[i + 2], s);
            s = NNC_FMA(w6, x2[i], s), s = NNC_FMA(w7, x2[i + 1], s), s = NNC_FMA(w8, x2[i + 2], s);
            s = s < lo_clamp ? lo_clamp : s;
            row[q] = s > hi_clamp ? hi_clamp : s;
        }
    }
    for (q = 0; q < ow; q++) {
        float s = b;
        if (q == lo) q = hi;            /* the edges only */
        if (q >= ow) break;
        for (j = 0; j < 3; j++) {
            const long i = (long)q * sw - pl + j;
            if (i < 0 || i >= w) continue;
            s = NNC_FMA(wo[j], x0[i], s), s = NNC_FMA(wo[3 + j], x1[i], s), s = NNC_FMA(wo[6 + j], x2[i], s);
        }
        s = s < lo_clamp ? lo_clamp : s;
        row[q] = s > hi_clamp ? hi_clamp : s;
    }
}

/* Rows 1 .. h-2 of a 3x3 depthwise convolution of stride 1 and padding 1
 * (output h x w = input): along the flattened plane every output n reads
 * x[n + (i-1) w + (j-1)], one long loop that vectorises whatever the row
 * width (MobileNet's 7- and 14-wide rows waste most of a vector row by
 * row); the first and last column of each row, where that formula would
 * read the neighbouring row, are then recomputed with their padding. */
static inline void nnc_dw3x3_plane(const float *restrict x, const float *restrict wo, float b, float *restrict out,
                                   int h, int w, float lo_clamp, float hi_clamp) {
    const float w0 = wo[0], w1 = wo[1], w2 = wo[2], w3 = wo[3], w4 = wo[4], w5 = wo[5], w6 = wo[6], w7 = wo[7];
    const float w8 = wo[8];
    const long end = (long)(h - 1) * w - 1;
    long n;
    int r;
    for (n = w + 1; n < end; n++) {
        float s = b;
        s = NNC_FMA(w0, x[n - w - 1], s), s = NNC_FMA(w1, x[n - w], s), s = NNC_FMA(w2, x[n - w + 1], s);
        s = NNC_FMA(w3, x[n - 1], s), s = NNC_FMA(w4, x[n], s), s = NNC_FMA(w5, x[n + 1], s);
        s = NNC_FMA(w6, x[n + w - 1], s), s = NNC_FMA(w7, x[n + w], s), s = NNC_FMA(w8, x[n + w + 1], s);
        s = s < lo_clamp ? lo_clamp : s;
        out[n] = s > hi_clamp ? hi_clamp : s;
    }
    for (r = 1; r < h - 1; r++) {
        const long f = (long)r * w, l = f + w - 1;
        float s = b, t = b;
        s = NNC_FMA(w1, x[f - w], s), s = NNC_FMA(w2, x[f - w + 1], s);
        s = NNC_FMA(w4, x[f], s), s = NNC_FMA(w5, x[f + 1], s);
        s = NNC_FMA(w7, x[f + w], s), s = NNC_FMA(w8, x[f + w + 1], s);
        t = NNC_FMA(w0, x[l - w - 1], t), t = NNC_FMA(w1, x[l - w], t);
        t = NNC_FMA(w3, x[l - 1], t), t = NNC_FMA(w4, x[l], t);
        t = NNC_FMA(w6, x[l + w - 1], t), t = NNC_FMA(w7, x[l + w], t);
        s = s < lo_clamp ? lo_clamp : s;
        t = t < lo_clamp ? lo_clamp : t;
        out[f] = s > hi_clamp ? hi_clamp : s;
        out[l] = t > hi_clamp ? hi_clamp : t;
    }
}

static inline void nnc_depthwise(const nnc_conv *p, const float *x, const float *w, const float *bias, float *y,
                                 int act, float alpha) {
    const int mult = p->cout / p->cin;
    const int k3 = p->kh == 3 && p->kw == 3 && p->dh == 1 && p->dw == 1;
    const int fused = act == NNC_ACT_NONE || act == NNC_RELU || act == NNC_RELU6;
    const float lo_clamp = act == NNC_RELU || act == NNC_RELU6 ? 0.0f : -INFINITY;
    const float hi_clamp = act == NNC_RELU6 ? 6.0f : INFINITY;
    const int same = k3 && p->sh == 1 && p->sw == 1 && p->pt == 1 && p->pl == 1 && p->oh == p->h &&
                     p->ow == p->w && p->h >= 3 && p->w >= 2;
    int o;
    NNC_OMP_FOR
    for (o = 0; o < p->cout; o++) {
        const float *plane = x + (long)(o / mult) * p->h * p->w;
        const float *wo = w + (long)o * p->kh * p->kw;
        float *out = y + (long)o * p->oh * p->ow;
        const float b = bias ? bias[o] : 0.0f;
        int r, i, j, c0;
        if (same) {
            nnc_dw3x3_plane(plane, wo, b, out, p->h, p->w, fused ? lo_clamp : -INFINITY, fused ? hi_clamp : INFINITY);
            if (!fused) nnc_act(out + p->w, (long)(p->h - 2) * p->w, act, alpha);
        }
        for (r = 0; r < p->oh; r++) {
            float *row = out + (long)r * p->ow;
            const int top = r * p->sh - p->pt;
            if (same && r > 0 && r < p->oh - 1) continue;     /* done by nnc_dw3x3_plane */
            if (k3 && top >= 0 && top + 2 < p->h) {
                const float *in = plane + (long)top * p->w;
                nnc_dw3x3_row(in, in + p->w, in + 2 * p->w, wo, b, row, p->w, p->ow, p->sw, p->pl,
                              fused ? lo_clamp : -INFINITY, fused ? hi_clamp : INFINITY);
                if (!fused) nnc_act(row, p->ow, act, alpha);
                continue;
            }
            for (c0 = 0; c0 < p->ow; c0++) row[c0] = b;
            for (i = 0; i < p->kh; i++) {
                int ih = r * p->sh - p->pt + i * p->dh;
                const float *in;
                if (ih < 0 || ih >= p->h) continue;
                in = plane + (long)ih * p->w;
                for (j = 0; j < p->kw; j++) {
                    /* output columns whose input column c*sw + off lies inside the row */
                    int off = j * p->dw - p->pl, lo = 0, hi = p->ow, c;
                    const float wv = wo[i * p->kw + j];
                    if (off < 0) lo = (-off + p->sw - 1) / p->sw;
                    if ((long)(hi - 1) * p->sw + off >= p->w) hi = p->w - 1 - off < 0 ? 0 : (p->w - 1 - off) / p->sw + 1;
                    if (lo > hi) lo = hi;
                    if (p->sw == 1) {
                        const float *src = in + off;
                        for (c = lo; c < hi; c++) row[c] = NNC_FMA(wv, src[c], row[c]);
                    } else {
                        for (c = lo; c < hi; c++) row[c] = NNC_FMA(wv, in[c * p->sw + off], row[c]);
                    }
                }
            }
            if (act) nnc_act(row, p->ow, act, alpha);
        }
    }
}

/* A 1-d convolution one output step at a time, for the few steps of a
 * streaming call: every input element adds a scaled weight row to the
 * step's outputs. `wt` is each group's weights transposed, [g][K][M]
 * (K = cin/groups * kw, row k = (channel, tap); M = cout/groups). */
static inline void nnc_conv1d_direct(const nnc_conv *p, const float *x, const float *wt, const float *bias, float *y,
                                     int act, float alpha) {
    enum { BLOCK = 64 };
    const int M = p->cout / p->groups, cg = p->cin / p->groups, K = cg * p->kw;
    float acc[BLOCK];
    int t, g, o0, c, i, j;
    for (t = 0; t < p->ow; t++) {
        for (g = 0; g < p->groups; g++) {
            for (o0 = 0; o0 < M; o0 += BLOCK) {
                const int m = M - o0 < BLOCK ? M - o0 : BLOCK;
                for (j = 0; j < m; j++) acc[j] = bias ? bias[g * M + o0 + j] : 0.0f;
                for (c = 0; c < cg; c++) {
                    const float *row = x + (long)(g * cg + c) * p->w;
                    for (i = 0; i < p->kw; i++) {
                        const int iw = t * p->sw - p->pl + i * p->dw;
                        const float *w = wt + ((long)g * K + c * p->kw + i) * M + o0;
                        float xv;
                        if (iw < 0 || iw >= p->w) continue;
                        xv = row[iw];
                        for (j = 0; j < m; j++) acc[j] = NNC_FMA(xv, w[j], acc[j]);
                    }
                }
                if (act) nnc_act(acc, m, act, alpha);
                for (j = 0; j < m; j++) y[(long)(g * M + o0 + j) * p->ow + t] = acc[j];
            }
        }
    }
}

enum { NNC_CONV_GEMM, NNC_CONV_DEPTHWISE, NNC_CONV_DIRECT };

/* A streaming causal convolution over a chunk x [cin, n]: `hist` [cin, h]
 * holds the h = dilation*(k-1) steps before the chunk. Runs the convolution
 * (stride 1, no padding) over history + chunk in `wide` [cin, h + n], then
 * keeps the last h steps. `p` describes the convolution over `wide`;
 * `kind` picks the kernel (NNC_CONV_*), `wp` is in that kernel's layout. */
static inline void nnc_conv1d_stream(const nnc_conv *p, const float *x, float *hist, int h, const float *wp,
                                     const float *bias, float *y, int act, float alpha, int kind, float *wide,
                                     float *panel) {
    const int n = p->w - h;
    int c;
    for (c = 0; c < p->cin; c++) {
        float *row = wide + (long)c * p->w;
        memcpy(row, hist + (long)c * h, (size_t)h * sizeof *row);
        memcpy(row + h, x + (long)c * n, (size_t)n * sizeof *row);
    }
    if (kind == NNC_CONV_DEPTHWISE)
        nnc_depthwise(p, wide, wp, bias, y, act, alpha);
    else if (kind == NNC_CONV_DIRECT)
        nnc_conv1d_direct(p, wide, wp, bias, y, act, alpha);
    else
        nnc_conv2d(p, wide, wp, bias, y, act, alpha, panel);
    for (c = 0; c < p->cin; c++) memcpy(hist + (long)c * h, wide + (long)c * p->w + n, (size_t)h * sizeof *hist);
}

/* ------------------------------------------------------------------ dense and recurrent */

/* Matrix-vector products. Weights are W transposed with zero-padded rows,
 * [in][ld] with ld a multiple of NNC_VB (`c.padded`), biases padded to ld:
 * every input element adds a scaled weight row to a tile of outputs held
 * in registers (no reductions), and every tile is full, so the inner loops
 * have constant trip counts and vectorise even at -O2 (whose cost model
 * vectorises only loops that need no remainder). The widest tile the
 * registers hold is used first: more independent accumulators hide the
 * latency of the multiply-adds. */
#define NNC_VB 16
#if defined(__AVX512F__)
#define NNC_DT 128
#elif defined(__AVX__) || defined(__ARM_NEON)
#define NNC_DT 64
#else
#define NNC_DT 32
#endif

/* acc[0:T] = bias[o0:o0+T] (or 0) + x[0:in] . wt[:, o0:o0+T]; T a constant. */
#define NNC_GEMV_TILE(T, x, in, ld, wt, bias, o0, acc)                                                 \
    do {                                                                                               \
        int k_, j_;                                                                                    \
        for (j_ = 0; j_ < (T); j_++) (acc)[j_] = (bias) ? (bias)[(o0) + j_] : 0.0f;                    \
        for (k_ = 0; k_ < (in); k_++) {                                                                \
            const float xv_ = (x)[k_];                                                                 \
            const float *w_ = (wt) + (long)k_ * (ld) + (o0);                                           \
            for (j_ = 0; j_ < (T); j_++) (acc)[j_] = NNC_FMA(xv_, w_[j_], (acc)[j_]);                  \
        }                                                                                              \
    } while (0)

#if defined(__GNUC__) && !defined(NNC_PLAIN_C)
/* out[0:8 NNC_VL] = bias[o0:] (or 0) + x[0:in] . wt[:, o0:o0 + 8 NNC_VL]. */
NNC_CONTRACT static void nnc_gemv_wide(const float *restrict x, int in, int ld, const float *restrict wt,
                                       const float *restrict bias, int o0, float *restrict out) {
    nnc_vf a0, a1, a2, a3, a4, a5, a6, a7, w0, w1, w2, w3, w4, w5, w6, w7;
    int k;
    if (bias) {
        const float *b = bias + o0;
        memcpy(&a0, b, sizeof a0), memcpy(&a1, b + NNC_VL, sizeof a1), memcpy(&a2, b + 2 * NNC_VL, sizeof a2);
        memcpy(&a3, b + 3 * NNC_VL, sizeof a3), memcpy(&a4, b + 4 * NNC_VL, sizeof a4);
        memcpy(&a5, b + 5 * NNC_VL, sizeof a5), memcpy(&a6, b + 6 * NNC_VL, sizeof a6);
        memcpy(&a7, b + 7 * NNC_VL, sizeof a7);
    } else {
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = (nnc_vf){0};
    }
    for (k = 0; k < in; k++) {
        const float *w = wt + (long)k * ld + o0;
        const nnc_vf xv = (nnc_vf){0} + x[k];
        memcpy(&w0, w, sizeof w0), memcpy(&w1, w + NNC_VL, sizeof w1), memcpy(&w2, w + 2 * NNC_VL, sizeof w2);
        memcpy(&w3, w + 3 * NNC_VL, sizeof w3), memcpy(&w4, w + 4 * NNC_VL, sizeof w4);
        memcpy(&w5, w + 5 * NNC_VL, sizeof w5), memcpy(&w6, w + 6 * NNC_VL, sizeof w6);
        memcpy(&w7, w + 7 * NNC_VL, sizeof w7);
        a0 = a0 + xv * w0, a1 = a1 + xv * w1, a2 = a2 + xv * w2, a3 = a3 + xv * w3;
        a4 = a4 + xv * w4, a5 = a5 + xv * w5, a6 = a6 + xv * w6, a7 = a7 + xv * w7;
    }
    memcpy(out, &a0, sizeof a0), memcpy(out + NNC_VL, &a1, sizeof a1), memcpy(out + 2 * NNC_VL, &a2, sizeof a2);
    memcpy(out + 3 * NNC_VL, &a3, sizeof a3), memcpy(out + 4 * NNC_VL, &a4, sizeof a4);
    memcpy(out + 5 * NNC_VL, &a5, sizeof a5), memcpy(out + 6 * NNC_VL, &a6, sizeof a6);
    memcpy(out + 7 * NNC_VL, &a7, sizeof a7);
}
#undef NNC_DT
#define NNC_DT (8 * NNC_VL)
#define NNC_GEMV_WIDE(x, in, ld, wt, bias, o0, acc) nnc_gemv_wide(x, in, ld, wt, bias, o0, acc)
#else
#define NNC_GEMV_WIDE(x, in, ld, wt, bias, o0, acc) NNC_GEMV_TILE(NNC_DT, x, in, ld, wt, bias, o0, acc)
#endif

/* y[0:out] = bias + x[0:in] W^T for one row; wt [in][ld], ld = padded(out) > 1. */
static inline void nnc_gemv(const float *restrict x, int in, int out, int ld, const float *restrict wt,
                            const float *restrict bias, float *restrict y) {
    float acc[NNC_DT];
    int o0 = 0, m;
    for (; o0 + NNC_DT <= ld; o0 += NNC_DT) {
        NNC_GEMV_WIDE(x, in, ld, wt, bias, o0, acc);
        m = out - o0 < NNC_DT ? out - o0 : NNC_DT;
        memcpy(y + o0, acc, (size_t)m * sizeof *y);
    }
    for (; o0 < ld; o0 += NNC_VB) {
        NNC_GEMV_TILE(NNC_VB, x, in, ld, wt, bias, o0, acc);
        m = out - o0 < NNC_VB ? out - o0 : NNC_VB;
        memcpy(y + o0, acc, (size_t)m * sizeof *y);
    }
}

/* y[r] = x[r] W^T + b for each of `rows` rows, then the activation; `wt` is
 * W transposed with padded rows, [in][ld] (ld = out for one output, else
 * out rounded up to NNC_VB). y must not overlap x. */
static inline void nnc_dense(const float *x, long rows, int in, int out, int ld, const float *wt, const float *bias,
                             float *y, int act, float alpha) {
    long r;
    int k, j;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * in;
        float *yr = y + r * out;
        if (out == 1) {
            /* one output: a dot product, in 16 independent partial sums */
            float part[16], sum = bias ? bias[0] : 0.0f;
            for (j = 0; j < 16; j++) part[j] = 0.0f;
            for (k = 0; k + 16 <= in; k += 16)
                for (j = 0; j < 16; j++) part[j] = NNC_FMA(xr[k + j], wt[k + j], part[j]);
            for (; k < in; k++) sum = NNC_FMA(xr[k], wt[k], sum);
            for (j = 0; j < 16; j++) sum += part[j];
            yr[0] = sum;
        } else {
            nnc_gemv(xr, in, out, ld, wt, bias, yr);
        }
        if (act) nnc_act(yr, out, act, alpha);
    }
}

/* The recurrent gate loops run in blocks of NNC_GB units with constant
 * trip counts (they vectorise at -O2), the last H % NNC_GB units one by
 * one; they are functions so that `restrict` tells the compiler the gate
 * arrays and the states do not overlap. */
#define NNC_GB 8

/* One GRU step's gates; gi, gh hold the gates r, z, n at 0, H, 2H:
 * r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z),
 * n = tanh(gi_n + r gh_n), h' = n + z (h - n). */
static inline void nnc_gru_gates(const float *restrict gi, const float *restrict gh, const float *restrict prev,
                                 float *restrict cur, int H) {
    int j0 = 0, j;
    for (; j0 + NNC_GB <= H; j0 += NNC_GB) {
        const float *restrict a = gi + j0, *restrict b = gh + j0, *restrict p = prev + j0;
        float *restrict o = cur + j0;
        for (j = 0; j < NNC_GB; j++) {
            const float r = nnc_sigmoidf(a[j] + b[j]), z = nnc_sigmoidf(a[H + j] + b[H + j]);
            const float n = nnc_tanhf(a[2 * H + j] + r * b[2 * H + j]);
            o[j] = n + z * (p[j] - n);
        }
    }
    for (j = j0; j < H; j++) {
        const float r = nnc_sigmoidf(gi[j] + gh[j]), z = nnc_sigmoidf(gi[H + j] + gh[H + j]);
        const float n = nnc_tanhf(gi[2 * H + j] + r * gh[2 * H + j]);
        cur[j] = n + z * (prev[j] - n);
    }
}

/* PyTorch's GRU (gates r, z, n) over x [T, F] from state h [H]; y [T, H] is
 * the hidden state at every step and h ends as the last one. Weights
 * transposed and padded: wih_t [F][G], whh_t [H][G], G = padded(3H), the
 * gates at columns 0, H and 2H; biases [G] or NULL. Scratch: 2G. */
static inline void nnc_gru(int T, int F, int H, const float *x, const float *wih_t, const float *whh_t,
                           const float *bih, const float *bhh, float *h, float *y, float *scratch) {
    const int G = (3 * H + NNC_VB - 1) / NNC_VB * NNC_VB;
    float *gi = scratch, *gh = scratch + G;
    int t;
    for (t = 0; t < T; t++) {
        const float *prev = t ? y + (long)(t - 1) * H : h;
        nnc_gemv(x + (long)t * F, F, G, G, wih_t, bih, gi);
        nnc_gemv(prev, H, G, G, whh_t, bhh, gh);
        nnc_gru_gates(gi, gh, prev, y + (long)t * H, H);
    }
    if (T > 0) memcpy(h, y + (long)(T - 1) * H, (size_t)H * sizeof *h);
}

/* One LSTM step's gates (i, f, g, o at 0, H, 2H, 3H of gi and gh). */
static inline void nnc_lstm_gates(const float *restrict gi, const float *restrict gh, float *restrict c,
                                  float *restrict cur, int H) {
    int j0 = 0, j;
    for (; j0 + NNC_GB <= H; j0 += NNC_GB) {
        const float *restrict a = gi + j0, *restrict b = gh + j0;
        float *restrict cc = c + j0, *restrict o = cur + j0;
        for (j = 0; j < NNC_GB; j++) {
            const float ig = nnc_sigmoidf(a[j] + b[j]), fg = nnc_sigmoidf(a[H + j] + b[H + j]);
            const float gg = nnc_tanhf(a[2 * H + j] + b[2 * H + j]), og = nnc_sigmoidf(a[3 * H + j] + b[3 * H + j]);
            cc[j] = fg * cc[j] + ig * gg;
            o[j] = og * nnc_tanhf(cc[j]);
        }
    }
    for (j = j0; j < H; j++) {
        const float ig = nnc_sigmoidf(gi[j] + gh[j]), fg = nnc_sigmoidf(gi[H + j] + gh[H + j]);
        const float gg = nnc_tanhf(gi[2 * H + j] + gh[2 * H + j]), og = nnc_sigmoidf(gi[3 * H + j] + gh[3 * H + j]);
        c[j] = fg * c[j] + ig * gg;
        cur[j] = og * nnc_tanhf(c[j]);
    }
}

/* PyTorch's LSTM (gates i, f, g, o) over x [T, F] from state (h, c); y [T, H].
 * Weights transposed and padded as for the GRU, [F][G] and [H][G] with
 * G = padded(4H). Scratch: 2G. */
static inline void nnc_lstm(int T, int F, int H, const float *x, const float *wih_t, const float *whh_t,
                            const float *bih, const float *bhh, float *h, float *c, float *y, float *scratch) {
    const int G = (4 * H + NNC_VB - 1) / NNC_VB * NNC_VB;
    float *gi = scratch, *gh = scratch + G;
    int t;
    for (t = 0; t < T; t++) {
        const float *prev = t ? y + (long)(t - 1) * H : h;
        nnc_gemv(x + (long)t * F, F, G, G, wih_t, bih, gi);
        nnc_gemv(prev, H, G, G, whh_t, bhh, gh);
        nnc_lstm_gates(gi, gh, c, y + (long)t * H, H);
    }
    if (T > 0) memcpy(h, y + (long)(T - 1) * H, (size_t)H * sizeof *h);
}

/* ------------------------------------------------------------------ pooling and normalisation */

/* Max (`is_max`) or average pooling of x [c, h, w]; padding counts as -inf
 * for max and as zeros for the average (PyTorch's count_include_pad=True). */
static inline void nnc_pool2d(const float *x, float *y, int c, int h, int w, int oh, int ow, int kh, int kw, int sh,
                              int sw, int pt, int pl, int is_max) {
    /* row by row, one pass per tap over the output row (the taps' order
     * per output is the order of the plain loops): the loops along the
     * row have no branch and vectorise */
    int ch, r, q, i, j;
    const float inv = 1.0f / (float)(kh * kw);
    for (ch = 0; ch < c; ch++) {
        const float *plane = x + (long)ch * h * w;
        float *out = y + (long)ch * oh * ow;
        for (r = 0; r < oh; r++) {
            float *row = out + (long)r * ow;
            for (q = 0; q < ow; q++) row[q] = is_max ? -INFINITY : 0.0f;
            for (i = 0; i < kh; i++) {
                const int ih = r * sh - pt + i;
                const float *in;
                if (ih < 0 || ih >= h) continue;
                in = plane + (long)ih * w;
                for (j = 0; j < kw; j++) {
                    /* the output columns whose input column q*sw + off lies inside the row */
                    const int off = j - pl;
                    int lo = 0, hi = ow;
                    if (off < 0) lo = (-off + sw - 1) / sw;
                    if ((long)(hi - 1) * sw + off >= w) hi = w - 1 - off < 0 ? 0 : (w - 1 - off) / sw + 1;
                    if (lo > hi) lo = hi;
                    if (is_max) {
                        for (q = lo; q < hi; q++) {
                            const float v = in[(long)q * sw + off];
                            row[q] = v > row[q] || v != v ? v : row[q];   /* NaN propagates */
                        }
                    } else {
                        for (q = lo; q < hi; q++) row[q] += in[(long)q * sw + off];
                    }
                }
            }
            if (!is_max)
                for (q = 0; q < ow; q++) row[q] *= inv;
        }
    }
}

/* Mean over the `inner` elements of each of `c` channels. */
static inline void nnc_global_avgpool(const float *x, float *y, int c, long inner) {
    int ch;
    long i;
    for (ch = 0; ch < c; ch++) {
        double s = 0.0;
        for (i = 0; i < inner; i++) s += x[(long)ch * inner + i];
        y[ch] = (float)(s / (double)inner);
    }
}

/* Inference batch norm over channels of [c, inner]; y may be x. */
static inline void nnc_batchnorm(const float *x, float *y, int c, long inner, const float *mean, const float *var,
                                 const float *gamma, const float *beta, float eps) {
    int ch;
    long i;
    for (ch = 0; ch < c; ch++) {
        const float s = gamma[ch] / sqrtf(var[ch] + eps), t = beta[ch] - mean[ch] * s;
        for (i = 0; i < inner; i++) y[(long)ch * inner + i] = x[(long)ch * inner + i] * s + t;
    }
}

/* Layer norm over the last axis (n) of `rows` rows, biased variance. */
static inline void nnc_layernorm(const float *x, float *y, long rows, int n, const float *gamma, const float *beta,
                                 float eps) {
    long r;
    int i;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        double mean = 0.0, var = 0.0;
        float inv;
        for (i = 0; i < n; i++) mean += xr[i];
        mean /= n;
        for (i = 0; i < n; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= n;
        inv = (float)(1.0 / sqrt(var + eps));
        for (i = 0; i < n; i++) yr[i] = ((float)(xr[i] - mean)) * inv * gamma[i] + beta[i];
    }
}

/* x where x >= 0, w * x elsewhere; w has `nw` entries (1 or c) over [c, inner]. */
static inline void nnc_prelu(const float *x, float *y, int c, long inner, const float *w, int nw) {
    int ch;
    long i;
    for (ch = 0; ch < c; ch++) {
        const float a = w[nw == 1 ? 0 : ch];
        for (i = 0; i < inner; i++) {
            const float v = x[(long)ch * inner + i];
            y[(long)ch * inner + i] = v >= 0.0f ? v : a * v;
        }
    }
}

/* softmax (or log_softmax) along the middle axis of [outer, n, inner]; y may be x. */
static inline void nnc_softmax(const float *x, float *y, long outer, int n, long inner, int log_form) {
    long o, q;
    int i;
    for (o = 0; o < outer; o++) {
        for (q = 0; q < inner; q++) {
            const float *xs = x + o * n * inner + q;
            float *ys = y + o * n * inner + q;
            float top = xs[0], sum = 0.0f;
            for (i = 1; i < n; i++) top = xs[(long)i * inner] > top ? xs[(long)i * inner] : top;
            for (i = 0; i < n; i++) sum += expf(xs[(long)i * inner] - top);
            if (log_form) {
                const float shift = top + logf(sum);
                for (i = 0; i < n; i++) ys[(long)i * inner] = xs[(long)i * inner] - shift;
            } else {
                for (i = 0; i < n; i++) ys[(long)i * inner] = expf(xs[(long)i * inner] - top) / sum;
            }
        }
    }
}

/* ------------------------------------------------------------------ merges and shape ops */

/* y = x[0] + x[1] + ... (or the product), then the activation; y may be any
 * of the inputs: each block is combined on the stack before it is stored. */
static inline void nnc_merge(const float *const *xs, int count, float *y, long n, int product, int act, float alpha) {
    enum { BLOCK = 256 };
    float tmp[BLOCK];
    long i0, i;
    int k;
    for (i0 = 0; i0 < n; i0 += BLOCK) {
        const long m = n - i0 < BLOCK ? n - i0 : BLOCK;
        for (i = 0; i < m; i++) tmp[i] = xs[0][i0 + i];
        for (k = 1; k < count; k++) {
            const float *src = xs[k] + i0;
            if (product)
                for (i = 0; i < m; i++) tmp[i] *= src[i];
            else
                for (i = 0; i < m; i++) tmp[i] += src[i];
        }
        if (act) nnc_act(tmp, m, act, alpha);
        memcpy(y + i0, tmp, (size_t)m * sizeof *y);
    }
}

static inline void nnc_sub(const float *a, const float *b, float *y, long n) {
    long i;
    for (i = 0; i < n; i++) y[i] = a[i] - b[i];
}

/* One input of a concat along the middle axis of [outer, size, inner]:
 * written at `start` of an output axis `total` long. */
static inline void nnc_concat_part(const float *x, float *y, long outer, long size, long inner, long start,
                                   long total) {
    long o;
    for (o = 0; o < outer; o++)
        memmove(y + (o * total + start) * inner, x + o * size * inner, (size_t)(size * inner) * sizeof *y);
}

/* y = x with its axes permuted: out axis i is in axis perm[i]. Up to 4 axes
 * run as four nested loops; more axes as an odometer over the outer output
 * axes with a strided inner loop, using `work` (2 * rank longs of the
 * caller's stack: the input stride of each output axis and the counters). */
static inline void nnc_transpose(const float *x, float *y, int rank, const int *shape, const int *perm, long *work) {
    long in_stride[4], stride[4];
    int dims[4], a, i0, i1, i2, i3;
    long s = 1, n = 0;
    if (rank > 4) {
        long *st = work, *idx = work + rank, inner, q, off = 0, count = 1;
        const int last = rank - 1;
        for (a = 0; a < rank; a++) idx[a] = 0;
        for (a = last; a >= 0; a--) {
            for (i0 = 0; i0 < rank; i0++)   /* st[i]: the input stride of output axis i */
                if (perm[i0] == a) st[i0] = s;
            s *= shape[a];
        }
        for (a = 0; a < last; a++) count *= shape[perm[a]];
        inner = shape[perm[last]];
        for (; count > 0; count--) {
            for (q = 0; q < inner; q++) y[n++] = x[off + q * st[last]];
            for (a = last - 1; a >= 0; a--) {          /* advance the odometer */
                off += st[a];
                if (++idx[a] < shape[perm[a]]) break;
                off -= st[a] * shape[perm[a]];
                idx[a] = 0;
            }
        }
        return;
    }
    for (a = rank - 1; a >= 0; a--) {
        in_stride[a] = s;
        s *= shape[a];
    }
    for (a = 0; a < 4; a++) {
        dims[a] = a < rank ? shape[perm[a]] : 1;
        stride[a] = a < rank ? in_stride[perm[a]] : 0;
    }
    for (i0 = 0; i0 < dims[0]; i0++)
        for (i1 = 0; i1 < dims[1]; i1++)
            for (i2 = 0; i2 < dims[2]; i2++)
                for (i3 = 0; i3 < dims[3]; i3++)
                    y[n++] = x[i0 * stride[0] + i1 * stride[1] + i2 * stride[2] + i3 * stride[3]];
}

/* Nearest-neighbour upsampling of [c, h, w] by (sh, sw) (1-d: h = sh = 1). */
static inline void nnc_upsample(const float *x, float *y, int c, int h, int w, int sh, int sw) {
    int ch, r, q;
    const int ow = w * sw;
    for (ch = 0; ch < c; ch++)
        for (r = 0; r < h * sh; r++) {
            const float *in = x + ((long)ch * h + r / sh) * w;
            float *out = y + ((long)ch * h * sh + r) * ow;
            for (q = 0; q < ow; q++) out[q] = in[q / sw];
        }
}

#endif /* NNC_KERNELS_H */
#include "nnc_v2_spatial.h"
#include "nnc_v2_tensor.h"
#include "nnc_v2_attention.h"
