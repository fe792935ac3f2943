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
 * transforms and tiles of the convolutions, and the column runs of a large
 * matrix-vector product, run in parallel (each iteration writes its own
 * outputs and scratch); without it the pragmas are not there at all (no
 * unknown-pragma warning). NNC_OMP_FOR_IF parallelises when the local
 * `nnc_par` is nonzero; NNC_MAX_THREADS() is the threads a parallel loop
 * may get (1 without OpenMP), for loops cut into one run a thread. A loop
 * of fewer than NNC_PAR_WORK multiply-adds stays on one thread: waking and
 * joining the others cost more than its share (a small model on two
 * threads was several times slower than on one). */
#if !defined(NNC_PAR_WORK)
#define NNC_PAR_WORK (1L << 20)   /* multiply-adds (or taps) below which a loop stays on one thread */
#endif
#if defined(_OPENMP)
#include <omp.h>
#define NNC_THREADS 1     /* loops that need scratch of their own per thread take it only then */
#define NNC_MAX_THREADS() omp_get_max_threads()
#define NNC_OMP_FOR _Pragma("omp parallel for schedule(static)")
#define NNC_OMP_FOR_IF _Pragma("omp parallel for schedule(static) if(nnc_par)")
#else
#define NNC_THREADS 0
#define NNC_MAX_THREADS() 1
#define NNC_OMP_FOR
#define NNC_OMP_FOR_IF
#endif

/* A hint to fetch the cache line at p (GCC and Clang; nothing elsewhere). */
#if defined(__GNUC__)
#define NNC_PREFETCH(p) __builtin_prefetch(p)
#else
#define NNC_PREFETCH(p) ((void)(p))
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

/* The scalar math below is inlined wherever it is used, so that loops over
 * it vectorise: GCC's inliner would otherwise keep a call to nnc_expf in
 * some of them (a scalar call per element). */
#if defined(__GNUC__)
#define NNC_INLINE static inline __attribute__((always_inline))
#else
#define NNC_INLINE static inline
#endif

/* a ? x : y on the float's bits, for a comparison result `a` (0 or 1).
 * A conditional expression whose arms the compiler may not evaluate
 * speculatively (floating-point operations can trap) stays a branch at -O2
 * on SSE/AVX2 targets ("control flow in loop"); this select never does, so
 * loops calling nnc_expf, nnc_sigmoidf and nnc_tanhf vectorise everywhere. */
NNC_INLINE float nnc_sel(int a, float x, float y) {
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
NNC_INLINE float nnc_expf(float x) {
    int32_t bits;
    float n, r, p, c, y, scale;
    c = nnc_sel(x < 88.3762626647949f, x, 88.3762626647949f);     /* NaN -> the upper clamp */
    c = nnc_sel(c > -87.3365447505531f, c, -87.3365447505531f);
    /* round to nearest by adding and removing 1.5 * 2^23 (floorf would not vectorise) */
    n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    r = NNC_FMA(n, -0.693359375f, c);
    r = NNC_FMA(n, 2.12194440e-4f, r);
    p = 1.9875691500e-4f;
    p = NNC_FMA(p, r, 1.3981999507e-3f);
    p = NNC_FMA(p, r, 8.3334519073e-3f);
    p = NNC_FMA(p, r, 4.1665795894e-2f);
    p = NNC_FMA(p, r, 1.6666665459e-1f);
    p = NNC_FMA(p, r, 5.0000001201e-1f);
    p = NNC_FMA(p * r, r, r) + 1.0f;
    bits = ((int32_t)n + 127) * 8388608;    /* 2^n, built in the exponent bits; n in [-126, 127] */
    memcpy(&scale, &bits, sizeof scale);
    y = p * scale;
    y = nnc_sel(x > 88.7228390f, INFINITY, y);                     /* beyond FLT_MAX */
    y = nnc_sel(x < -103.972084f, 0.0f, y);                        /* below the smallest subnormal */
    return nnc_sel(x == x, y, x);                                  /* NaN in, NaN out */
}

NNC_INLINE float nnc_sigmoidf(float x) { return 1.0f / (1.0f + nnc_expf(-x)); }

/* tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|); odd polynomial near 0
 * where that form would lose relative precision. Both are computed and one
 * selected: no branch. */
NNC_INLINE float nnc_tanhf(float x) {
    const float a = fabsf(x), e = nnc_expf(-2.0f * a), x2 = x * x;
    const float t = copysignf((1.0f - e) / (1.0f + e), x);
    const float p = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
    return nnc_sel(a < 0.0625f, p, t);
}

/* erf(x) to about 4e-7 (absolute): x clamped to [-4, 4], then x P(x^2) /
 * Q(x^2) of degrees 13 and 8 (Eigen's fast erf); exactly +-1 beyond 3.92,
 * where float's erf is, so gelu(-inf) stays -inf * 0 = NaN. Branch-free:
 * it vectorises. NaN in, NaN out. */
NNC_INLINE float nnc_erff(float x) {
    float c, c2, p, q, e;
    c = nnc_sel(x > -4.0f, x, -4.0f);
    c = nnc_sel(c < 4.0f, c, 4.0f);
    c = nnc_sel(x == x, c, x);
    c2 = c * c;
    p = NNC_FMA(c2, -2.72614225801306e-10f, 2.77068142495902e-08f);
    p = NNC_FMA(p, c2, -2.10102402082508e-06f);
    p = NNC_FMA(p, c2, -5.69250639462346e-05f);
    p = NNC_FMA(p, c2, -7.34990630326855e-04f);
    p = NNC_FMA(p, c2, -2.95459980854025e-03f);
    p = NNC_FMA(p, c2, -1.60960333262415e-02f);
    q = NNC_FMA(c2, -1.45660718464996e-05f, -2.13374055278905e-04f);
    q = NNC_FMA(q, c2, -1.68282697438203e-03f);
    q = NNC_FMA(q, c2, -7.37332916720468e-03f);
    q = NNC_FMA(q, c2, -1.42647390514189e-02f);
    e = c * p / q;
    e = nnc_sel(c > 3.92f, 1.0f, e);
    return nnc_sel(c < -3.92f, -1.0f, e);
}

/* 16 elements at b_ = p, each b_[j_] replaced by `expr`: a loop with a
 * constant trip count, which vectorises at -O2 (a loop over n would need a
 * remainder, which -O2's cost model does not take). */
#define NNC_ACT_BLOCK(p, expr)                                                                              \
    do {                                                                                                    \
        float *const b_ = (p);                                                                              \
        int j_;                                                                                             \
        for (j_ = 0; j_ < 16; j_++) b_[j_] = (expr);                                                        \
    } while (0)

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
        for (i = 0; i < (n & ~15L); i += 16) NNC_ACT_BLOCK(x + i, nnc_sigmoidf(b_[j_]));
        for (i = n & ~15L; i < n; i++) x[i] = nnc_sigmoidf(x[i]);
        break;
    case NNC_TANH:
        for (i = 0; i < (n & ~15L); i += 16) NNC_ACT_BLOCK(x + i, nnc_tanhf(b_[j_]));
        for (i = n & ~15L; i < n; i++) x[i] = nnc_tanhf(x[i]);
        break;
    case NNC_GELU:
        /* -inf gives -inf * 0 = NaN, as PyTorch and the NumPy plan do */
        for (i = 0; i < (n & ~15L); i += 16)
            NNC_ACT_BLOCK(x + i, 0.5f * b_[j_] * (1.0f + nnc_erff(b_[j_] * 0.70710678118654752f)));
        if (i < n) {             /* the last n % 16 through a block on the stack */
            float t[16] = {0.0f};
            memcpy(t, x + i, (size_t)(n - i) * sizeof *t);
            NNC_ACT_BLOCK(t, 0.5f * b_[j_] * (1.0f + nnc_erff(b_[j_] * 0.70710678118654752f)));
            memcpy(x + i, t, (size_t)(n - i) * sizeof *t);
        }
        break;
    case NNC_SILU:
        /* -inf gives -inf * 0 = NaN, as PyTorch and the NumPy plan do */
        for (i = 0; i < (n & ~15L); i += 16) NNC_ACT_BLOCK(x + i, b_[j_] * nnc_sigmoidf(b_[j_]));
        for (i = n & ~15L; i < n; i++) x[i] = x[i] * nnc_sigmoidf(x[i]);
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

/* relu (NNC_RELU) or relu6 (NNC_RELU6) of a vector on its bits: x < 0 -> 0, x > 6 -> 6 (NaN compares
 * false and stays NaN) */
NNC_INLINE nnc_vf nnc_vrelu(nnc_vf v, int act) {
    const nnc_vf zero = {0}, six = zero + 6.0f;
    v = (nnc_vf)((nnc_vi)v & ~(v < zero));
    if (act == NNC_RELU6) {
        const nnc_vi m = v > six;
        v = (nnc_vf)(((nnc_vi)v & ~m) | ((nnc_vi)six & m));
    }
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
NNC_CONTRACT static inline void nnc_micro_end(const nnc_vf t[NNC_MR][2], float *restrict c, long ldc, int mr, int nr,
                                              int first, int last, const float *restrict bias, int act, float alpha) {
    int i;
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
            if (last && (act == NNC_RELU || act == NNC_RELU6)) v0 = nnc_vrelu(v0, act), v1 = nnc_vrelu(v1, act);
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

/* The tile's multiply-adds over kc rows of B, row k at BROW (an expression in k). */
#define NNC_MICRO_LOOP(BROW)                                                                                \
    nnc_vf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0}, c40 = {0}, \
           c41 = {0}, c50 = {0}, c51 = {0};                                                                 \
    int k;                                                                                                  \
    for (k = 0; k < kc; k++) {                                                                              \
        nnc_vf b0, b1;                                                                                      \
        const float *ak = a + (long)k * lda, *bk = (BROW);                                                  \
        memcpy(&b0, bk, sizeof b0);                                                                         \
        memcpy(&b1, bk + NNC_VL, sizeof b1);                                                                \
        c00 += ak[0] * b0, c01 += ak[0] * b1;                                                               \
        c10 += ak[1] * b0, c11 += ak[1] * b1;                                                               \
        c20 += ak[2] * b0, c21 += ak[2] * b1;                                                               \
        c30 += ak[3] * b0, c31 += ak[3] * b1;                                                               \
        c40 += ak[4] * b0, c41 += ak[4] * b1;                                                               \
        c50 += ak[5] * b0, c51 += ak[5] * b1;                                                               \
    }                                                                                                       \
    {                                                                                                       \
        const nnc_vf t[NNC_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}}; \
        nnc_micro_end(t, c, ldc, mr, nr, first, last, bias, act, alpha);                                    \
    }
#else
static inline void nnc_micro_end(float acc[NNC_MR][NNC_NR], float *c, long ldc, int mr, int nr, int first, int last,
                                 const float *bias, int act, float alpha) {
    int i, j;
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

#define NNC_MICRO_LOOP(BROW)                                                                                \
    float acc[NNC_MR][NNC_NR];                                                                              \
    int i, j, k;                                                                                            \
    for (i = 0; i < NNC_MR; i++)                                                                            \
        for (j = 0; j < NNC_NR; j++) acc[i][j] = 0.0f;                                                      \
    for (k = 0; k < kc; k++) {                                                                              \
        const float *bk = (BROW), *ak = a + (long)k * lda;                                                  \
        for (i = 0; i < NNC_MR; i++) {                                                                      \
            const float av = ak[i];                                                                         \
            for (j = 0; j < NNC_NR; j++) acc[i][j] = NNC_FMA(av, bk[j], acc[i][j]);                         \
        }                                                                                                   \
    }                                                                                                       \
    nnc_micro_end(acc, c, ldc, mr, nr, first, last, bias, act, alpha);
#endif

#if !defined(NNC_CONTRACT)
#define NNC_CONTRACT
#endif

/* C[0:mr, 0:nr] (row stride ldc) = or += A-panel [kc][NNC_MR] x B [kc]
 * rows of NNC_NR floats, ldb apart (a packed panel: ldb = NNC_NR; a 1x1
 * convolution's input read in place: its plane size). On the last depth
 * block (`last`), adds `bias` (per row, may be NULL) and applies the
 * activation to the stored rows. */
NNC_CONTRACT static inline void nnc_micro(int kc, const float *restrict a, const float *restrict b, long ldb,
                                          float *restrict c, long ldc, int mr, int nr, int first, int last,
                                          const float *restrict bias, int act, float alpha) {
    const long lda = NNC_MR;
    NNC_MICRO_LOOP(b + (long)k * ldb)
}

/* The same with A's row k at a + k * lda (the rows of a wider weight block: nnc_pw_planes). */
NNC_CONTRACT static inline void nnc_micro_lda(int kc, const float *restrict a, long lda, const float *restrict b,
                                              long ldb, float *restrict c, long ldc, int mr, int nr, int first,
                                              int last, const float *restrict bias, int act, float alpha) {
    NNC_MICRO_LOOP(b + (long)k * ldb)
}

/* The same with B's row k at b + off[k] (shifted input planes). */
NNC_CONTRACT static inline void nnc_micro_off(int kc, const float *restrict a, const float *restrict b,
                                              const int *restrict off, float *restrict c, long ldc, int mr, int nr,
                                              int first, int last, const float *restrict bias, int act,
                                              float alpha) {
    const long lda = NNC_MR;
    NNC_MICRO_LOOP(b + off[k])
}

/* ------------------------------------------------------------------ convolution */

/* The geometry of one convolution, 1-d as h = kh = 1. */
typedef struct {
    int cin, h, w;          /* input [cin, h, w] */
    int cout, oh, ow;       /* output [cout, oh, ow] */
    int kh, kw, sh, sw, pt, pl, dh, dw, groups;
    int kc;                 /* rows of a packed panel (the planner sized its scratch); 0: NNC_KC;
                             * nnc_conv_bcast: input channels of one depth block (0: all) */
    int nc;                 /* nnc_conv_bcast: output rows of one band (0: all) */
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

#define NNC_PW_BLOCK 6144   /* floats of a shallow pointwise convolution's input block */

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
    const int nnc_par = pointwise && (long)M * K * N >= NNC_PAR_WORK;    /* other tiles share the packed panel */
    /* a shallow one (blocks of at least two tiles in NNC_PW_BLOCK floats: K <= 96 with 32-pixel
     * tiles) reads its input in blocks of NB pixels (L1), each block once for all output rows, at its
     * whole depth (the packed weights are K deep; the panel depth KC does not enter): every output row
     * is then written in runs of NB pixels, not NNC_NR (MobileNetV2's 16 -> 96 expansion at 112x112
     * wrote 96 rows 128 bytes at a time) */
    const long NB0 = NNC_PW_BLOCK / K / NNC_NR * NNC_NR;
    const long NB = NB0 > NNC_NR ? NB0 : NNC_NR;      /* never 0: OpenMP divides by a loop's step */
    const long full = pointwise && NB > NNC_NR ? N / NNC_NR * NNC_NR : 0;
    int g;
    long n0;
    for (g = 0; g < p->groups; g++) {
        const float *wg = wp + (long)g * mb * NNC_MR * K;
        float *yg = y + (long)g * M * N;
        const float *bg = bias ? bias + g * M : NULL;
        const float *xg = x + (long)g * K * N;
        long nb;
        /* each loop twice: with OpenMP a parallel construct costs a call into the runtime even when its
         * if() is false, and its body moves into a function of its own (a small model's hundreds of
         * small layers: twice its time), so a loop of little work takes the plain copy */
#define NNC_CONV2D_BLOCKS                                                                                    \
    for (nb = 0; nb < full; nb += NB) {                                                                     \
        const long ne = nb + NB < full ? nb + NB : full;                                                    \
        long n1;                                                                                            \
        int i;                                                                                              \
        for (i = 0; i < M; i += NNC_MR)                                                                     \
            for (n1 = nb; n1 < ne; n1 += NNC_NR)                                                            \
                nnc_micro(K, wg + (long)i * K, xg + n1, N, yg + (long)i * N + n1, N,                        \
                          M - i < NNC_MR ? M - i : NNC_MR, NNC_NR, 1, 1, bg ? bg + i : NULL, act, alpha);   \
    }
#define NNC_CONV2D_TILES                                                                                     \
    for (n0 = full; n0 < N; n0 += NNC_NR) {                                                                 \
        int nr = (int)(N - n0 < NNC_NR ? N - n0 : NNC_NR), i, k0;                                           \
        for (k0 = 0; k0 < K; k0 += KC) {                                                                    \
            int kc = K - k0 < KC ? K - k0 : KC;                                                             \
            const float *b = panel;                                                                         \
            long ldb = NNC_NR;                                                                              \
            if (pointwise && nr == NNC_NR) {                                                                \
                b = x + ((long)g * K + k0) * N + n0;                                                        \
                ldb = N;                                                                                    \
            } else {                                                                                        \
                nnc_pack_cols(p, x, g, k0, kc, n0, nr, panel);                                              \
            }                                                                                               \
            for (i = 0; i < M; i += NNC_MR) {                                                               \
                int mr = M - i < NNC_MR ? M - i : NNC_MR;                                                   \
                nnc_micro(kc, wg + (long)i * K + (long)k0 * NNC_MR, b, ldb, yg + (long)i * N + n0, N, mr,   \
                          nr, k0 == 0, k0 + kc >= K, bg ? bg + i : NULL, act, alpha);                       \
            }                                                                                               \
        }                                                                                                   \
    }
        if (NNC_THREADS && nnc_par) {     /* (a region only for a loop of more than one iteration) */
            if (full > NB) {
                NNC_OMP_FOR
                NNC_CONV2D_BLOCKS
            } else {
                NNC_CONV2D_BLOCKS
            }
            if (N - full > NNC_NR) {
                NNC_OMP_FOR
                NNC_CONV2D_TILES
            } else {
                NNC_CONV2D_TILES
            }
        } else {
            NNC_CONV2D_BLOCKS
            NNC_CONV2D_TILES
        }
#undef NNC_CONV2D_BLOCKS
#undef NNC_CONV2D_TILES
    }
}

/* ------------------------------------------------------------------ direct convolution over output channels */

/* A direct convolution vectorised along output channels (one group), for
 * layers whose outputs are few pixels (a tile of NNC_NR pixels would be
 * mostly padding) or whose input is read with a stride or a large kernel
 * (packing its columns would cost as much as the multiplies): a register
 * tile of NNC_PT output pixels (consecutive along the flattened band) times NNC_CV output
 * channels (two vectors); each input value is broadcast from where it lies,
 * each weight vector read once per tile. The weights are packed by the
 * code generator in blocks of NNC_CB output channels, [cout'/NNC_CB][K][NNC_CB]
 * (K = cin*kh*kw in PyTorch's order; cout' = cout rounded up to 32, zeros
 * beyond cout): a tap's row of a block is one 64-byte line, so a tile of
 * 16 channels (AVX2) reads whole lines, not every other one (its weights
 * then take all of L1's sets, not half), and a tile of 32 (AVX-512) reads
 * two blocks side by side, `hi` floats apart. */
#define NNC_CB 16
#if defined(__AVX512F__) || defined(__aarch64__)
#define NNC_PT 7              /* 32 vector registers: 14 accumulators */
#else
#define NNC_PT 6
#endif
#if defined(NNC_VEC)
#define NNC_CV (2 * NNC_VL)   /* output channels of one register tile: a divisor of NNC_CB, or 2 * NNC_CB */
#else
#define NNC_CV 8
#endif
#define NNC_BCAST_TAPS 1024   /* most taps of one depth block (kh*kw must not exceed it) */
#define NNC_BCAST_OWN 2048    /* with OpenMP, the most floats of partial sums a block of output channels keeps
                               * on its thread's stack (a 7x7 band's: 1,568 on AVX-512) */

#if defined(NNC_VEC) && NNC_VL == 8 && !defined(__clang__)
#define NNC_BCAST_T8 1
/* v[0:8] (rows) transposed in registers: stage k swaps bit k of the row
 * index with bit k of the column index (as nnc_t16) */
#define NNC_T8_STAGE(k, m_lo, m_hi)                                                          \
    for (i = 0; i < 8; i++)                                                                  \
        if (!(i & (k))) {                                                                    \
            const nnc_vf a = v[i], b = v[i + (k)];                                           \
            v[i] = __builtin_shuffle(a, b, m_lo), v[i + (k)] = __builtin_shuffle(a, b, m_hi); \
        }
static inline void nnc_t8(nnc_vf v[8]) {
    int i;
    NNC_T8_STAGE(1, ((nnc_vi){0, 8, 2, 10, 4, 12, 6, 14}), ((nnc_vi){1, 9, 3, 11, 5, 13, 7, 15}))
    NNC_T8_STAGE(2, ((nnc_vi){0, 1, 8, 9, 4, 5, 12, 13}), ((nnc_vi){2, 3, 10, 11, 6, 7, 14, 15}))
    NNC_T8_STAGE(4, ((nnc_vi){0, 1, 2, 3, 8, 9, 10, 11}), ((nnc_vi){4, 5, 6, 7, 12, 13, 14, 15}))
}
#undef NNC_T8_STAGE
#else
#define NNC_BCAST_T8 0
#endif

/* The end of a tile t[0:NNC_PT][0:NNC_CV] (pixel-major): the bias, the
 * activation, then written transposed into `out` (channel c of pixel q at
 * out[c*N + q]) for the first nch channels and npix pixels. */
static inline void nnc_bcast_store(float *restrict t, const float *restrict bias, int act, float alpha,
                                   float *restrict out, long N, int nch, int npix) {
    float b[NNC_CV];
    int c, q;
    for (c = 0; c < NNC_CV; c++) b[c] = bias && c < nch ? bias[c] : 0.0f;
    for (q = 0; q < NNC_PT; q++)
        for (c = 0; c < NNC_CV; c++) t[q * NNC_CV + c] += b[c];
    if (act == NNC_RELU || act == NNC_RELU6) {
        const float hi = act == NNC_RELU6 ? 6.0f : INFINITY;
        for (c = 0; c < NNC_PT * NNC_CV; c++) {
            const float v = t[c] < 0.0f ? 0.0f : t[c];     /* NaN stays NaN */
            t[c] = v > hi ? hi : v;
        }
    } else if (act) {
        nnc_act(t, NNC_PT * NNC_CV, act, alpha);
    }
#if NNC_BCAST_T8
    if (npix == NNC_PT) {
        /* eight channels at a time: their NNC_PT pixels transposed in registers (two zero rows), each
         * channel's pixels one short store instead of NNC_PT scalar ones */
        int c8;
        for (c8 = 0; c8 < nch; c8 += 8) {
            nnc_vf v[8];
            for (q = 0; q < 8; q++) v[q] = q < NNC_PT ? nnc_ldv(t + q * NNC_CV + c8) : (nnc_vf){0};
            nnc_t8(v);
            for (c = 0; c < 8 && c8 + c < nch; c++) memcpy(out + (long)(c8 + c) * N, &v[c], NNC_PT * sizeof *out);
        }
        return;
    }
#endif
    for (c = 0; c < nch; c++)
        for (q = 0; q < npix; q++) out[c * N + q] = t[q * NNC_CV + c];
}

#if defined(NNC_VEC)
/* part[0:NNC_PT][0:NNC_CV] = (first ? 0 : part) + the sums over K taps:
 * pixel q of tap k reads x0[pix[q] + off[k]]; the weights w advance NNC_CB
 * floats a tap, the tile's second vector of channels at w + hi. */
NNC_CONTRACT static inline void nnc_bcast_tile(const float *restrict x0, const long *restrict pix,
                                               const int *restrict off, int K, const float *restrict w,
                                               long hi, float *restrict part, int first) {
    nnc_vf a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51;
    const float *restrict x_0 = x0 + pix[0], *restrict x_1 = x0 + pix[1], *restrict x_2 = x0 + pix[2];
    const float *restrict x_3 = x0 + pix[3], *restrict x_4 = x0 + pix[4], *restrict x_5 = x0 + pix[5];
#if NNC_PT > 6
    nnc_vf a60, a61;
    const float *restrict x_6 = x0 + pix[6];
#endif
    int k;
    if (first) {
        a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = a40 = a41 = a50 = a51 = (nnc_vf){0};
#if NNC_PT > 6
        a60 = a61 = (nnc_vf){0};
#endif
    } else {
        a00 = nnc_ldv(part), a01 = nnc_ldv(part + NNC_VL), a10 = nnc_ldv(part + 2 * NNC_VL);
        a11 = nnc_ldv(part + 3 * NNC_VL), a20 = nnc_ldv(part + 4 * NNC_VL), a21 = nnc_ldv(part + 5 * NNC_VL);
        a30 = nnc_ldv(part + 6 * NNC_VL), a31 = nnc_ldv(part + 7 * NNC_VL), a40 = nnc_ldv(part + 8 * NNC_VL);
        a41 = nnc_ldv(part + 9 * NNC_VL), a50 = nnc_ldv(part + 10 * NNC_VL), a51 = nnc_ldv(part + 11 * NNC_VL);
#if NNC_PT > 6
        a60 = nnc_ldv(part + 12 * NNC_VL), a61 = nnc_ldv(part + 13 * NNC_VL);
#endif
    }
    for (k = 0; k < K; k++, w += NNC_CB) {
        const nnc_vf w0 = nnc_ldv(w), w1 = nnc_ldv(w + hi);
        const int o = off[k];
        a00 += x_0[o] * w0, a01 += x_0[o] * w1;
        a10 += x_1[o] * w0, a11 += x_1[o] * w1;
        a20 += x_2[o] * w0, a21 += x_2[o] * w1;
        a30 += x_3[o] * w0, a31 += x_3[o] * w1;
        a40 += x_4[o] * w0, a41 += x_4[o] * w1;
        a50 += x_5[o] * w0, a51 += x_5[o] * w1;
#if NNC_PT > 6
        a60 += x_6[o] * w0, a61 += x_6[o] * w1;
#endif
    }
    memcpy(part, &a00, sizeof a00), memcpy(part + NNC_VL, &a01, sizeof a01);
    memcpy(part + 2 * NNC_VL, &a10, sizeof a10), memcpy(part + 3 * NNC_VL, &a11, sizeof a11);
    memcpy(part + 4 * NNC_VL, &a20, sizeof a20), memcpy(part + 5 * NNC_VL, &a21, sizeof a21);
    memcpy(part + 6 * NNC_VL, &a30, sizeof a30), memcpy(part + 7 * NNC_VL, &a31, sizeof a31);
    memcpy(part + 8 * NNC_VL, &a40, sizeof a40), memcpy(part + 9 * NNC_VL, &a41, sizeof a41);
    memcpy(part + 10 * NNC_VL, &a50, sizeof a50), memcpy(part + 11 * NNC_VL, &a51, sizeof a51);
#if NNC_PT > 6
    memcpy(part + 12 * NNC_VL, &a60, sizeof a60), memcpy(part + 13 * NNC_VL, &a61, sizeof a61);
#endif
}
#else
static inline void nnc_bcast_tile(const float *x0, const long *pix, const int *off, int K, const float *w,
                                  long hi, float *part, int first) {
    float acc[NNC_PT][NNC_CV];      /* NNC_CV <= NNC_CB here: the tile's channels are one block's */
    int k, q, o;
    (void)hi;
    for (q = 0; q < NNC_PT; q++)
        for (o = 0; o < NNC_CV; o++) acc[q][o] = first ? 0.0f : part[q * NNC_CV + o];
    for (k = 0; k < K; k++, w += NNC_CB)
        for (q = 0; q < NNC_PT; q++) {
            const float xv = x0[pix[q] + off[k]];
            for (o = 0; o < NNC_CV; o++) acc[q][o] = NNC_FMA(xv, w[o], acc[q][o]);
        }
    for (q = 0; q < NNC_PT; q++)
        for (o = 0; o < NNC_CV; o++) part[q * NNC_CV + o] = acc[q][o];
}
#endif

/* The pixels of tile t of a band of np output pixels, rows ow wide (pixel
 * n is output row n / ow, column n % ow; the tiles run along the flattened
 * band, so that a narrow output wastes no part of a tile at the end of each
 * row): where each reads its first input in the band (rows wp floats,
 * strides sh, sw), into pix[0:NNC_PT]; returns its first pixel. The last
 * tile ends at the band's last pixel, redoing a few of the one before; a
 * band of fewer than NNC_PT pixels repeats its last one. */
static inline long nnc_bcast_pixels(long t, long np, int ow, long wp, int sh, int sw, long *pix) {
    const long n0 = np > NNC_PT && t * NNC_PT > np - NNC_PT ? np - NNC_PT : t * NNC_PT;
    long r = n0 / ow;         /* one division a tile: the row and column step along from here */
    int q, col = (int)(n0 - r * ow);
    for (q = 0; q < NNC_PT; q++) {
        pix[q] = r * sh * wp + (long)col * sw;
        if (n0 + q + 1 < np && ++col == ow) col = 0, r++;      /* past the band's end: its last pixel again */
    }
    return n0;
}

/* Tiles t0..t1 of a 1x1 convolution of stride 1 without padding read in
 * place (nnc_conv_bcast), output channels c0.. (one register tile's):
 * through every depth block of CR channels, tile t's partial sums at
 * parts + t * NNC_PT * NNC_CV (with more than one block), then stored with
 * the bias and activation. Tiles run along the flattened plane; the last
 * ends at the last pixel, redoing a few of the one before. */
static inline void nnc_bcast_in_place(const nnc_conv *p, const float *x, const float *wc, const float *bias,
                                      float *y, int act, float alpha, float *parts, int c0, long t0, long t1,
                                      int CR, long hi) {
    const long N = (long)p->oh * p->ow;
    const int K = p->cin, nch = p->cout - c0 < NNC_CV ? p->cout - c0 : NNC_CV;
    const float *wb = wc + (long)(c0 / NNC_CB) * K * NNC_CB + c0 % NNC_CB;
    long pix[NNC_PT], t;
    int q, kb;
    for (q = 0; q < NNC_PT; q++) pix[q] = q;
    for (kb = 0; kb < p->cin; kb += CR) {
        const int depth = p->cin - kb < CR ? p->cin - kb : CR, last = kb + depth >= p->cin;
        int off[NNC_BCAST_TAPS], k;
        for (k = 0; k < depth; k++) off[k] = (int)(k * N);
        for (t = t0; t < t1; t++) {
            const long n0 = t * NNC_PT < N - NNC_PT ? t * NNC_PT : N - NNC_PT;
            float tmp[NNC_PT * NNC_CV];
            float *part = CR < p->cin ? parts + t * NNC_PT * NNC_CV : tmp;
            nnc_bcast_tile(x + kb * N + n0, pix, off, depth, wb + (long)kb * NNC_CB, hi, part, kb == 0);
            if (last)
                nnc_bcast_store(part, bias ? bias + c0 : NULL, act, alpha, y + (long)c0 * N + n0, N, nch, NNC_PT);
        }
    }
}

/* Output channels c0.. (one register tile's) of a band of nnc_conv_bcast,
 * tiles t0..t1 of its `tiles`: every depth block of CR channels over them,
 * their partial sums at `parts` (with more than one block), stored with the
 * bias and the activation at the band's first output row r0. */
static inline void nnc_bcast_band_block(const nnc_conv *p, const float *band, const float *wc, const float *bias,
                                        float *y, int act, float alpha, float *parts, int c0, int r0, int CR,
                                        long hi, long plane, long wp, long np, long tiles, int npix, long t0,
                                        long t1) {
    const int taps = p->kh * p->kw, K = p->cin * taps;
    const long N = (long)p->oh * p->ow;
    const int nch = p->cout - c0 < NNC_CV ? p->cout - c0 : NNC_CV;
    const float *wb = wc + (long)(c0 / NNC_CB) * K * NNC_CB + c0 % NNC_CB;
    int kb;
    for (kb = 0; kb < p->cin; kb += CR) {
        const int depth = p->cin - kb < CR ? p->cin - kb : CR, last = kb + depth >= p->cin;
        /* the next depth block's weights (the next block of channels' first), fetched a share
         * per tile while this block's, read by the first tile, stay in L1 for the others */
        const float *next = last ? wc + (long)((c0 + NNC_CV) / NNC_CB) * K * NNC_CB + (c0 + NNC_CV) % NNC_CB
                                 : wb + (long)(kb + depth) * taps * NNC_CB;
        const long lines = c0 + NNC_CV < p->cout || !last ? (long)CR * taps * NNC_CB / 16 : 0;   /* a block's */
        const long share = (lines + tiles - 1) / tiles;
        int off[NNC_BCAST_TAPS], k = 0, e, j, d;
        long fetched = 0, l, t;
        for (d = 0; d < depth; d++)
            for (e = 0; e < p->kh; e++)
                for (j = 0; j < p->kw; j++) off[k++] = (int)(d * plane + (long)e * p->dh * wp + j * p->dw);
        for (t = t0; t < t1; t++) {
            float tmp[NNC_PT * NNC_CV];
            float *part = CR < p->cin ? parts + t * NNC_PT * NNC_CV : tmp;
            long pix[NNC_PT];
            const long n0 = nnc_bcast_pixels(t, np, p->ow, wp, p->sh, p->sw, pix);
            for (l = 0; l < share && fetched < lines; l++, fetched++) {
                NNC_PREFETCH(next + fetched * 16);
                if (NNC_CV > NNC_CB) NNC_PREFETCH(next + hi + fetched * 16);
            }
            nnc_bcast_tile(band + kb * plane, pix, off, k, wb + (long)kb * taps * NNC_CB, hi, part, kb == 0);
            if (last)
                nnc_bcast_store(part, bias ? bias + c0 : NULL, act, alpha,
                                y + (long)c0 * N + (long)r0 * p->ow + n0, N, nch, npix);
        }
    }
}

/* The convolution. The input is copied with its zero padding into `scratch`
 * in bands of p->nc output rows (0: all): per input channel
 * (nc-1)*sh + (kh-1)*dh + 1 rows of (ow-1)*sw + (kw-1)*dw + 1 floats. The
 * band's output pixels run in tiles of NNC_PT along the flattened band
 * (nnc_bcast_pixels). The depth runs in blocks of p->kc input channels (0:
 * all; at most NNC_BCAST_TAPS taps); with more than one block the partial
 * sums of the band's tiles (NNC_PT*NNC_CV floats each) follow the band in
 * `scratch`; with OpenMP, where a band's fit in NNC_BCAST_OWN floats they
 * sit on the stack of the thread running the block of output channels, and
 * the blocks run in parallel (as they do without partial sums) when the
 * layer has NNC_PAR_WORK multiply-adds or more; one block
 * of output channels and one of depth (the stem) runs its tiles in parallel
 * instead. A 1x1 convolution of stride 1 without padding reads its input in
 * place (no band; its partial sums, ceil(oh*ow/NNC_PT) tiles, at the start). */
static inline void nnc_conv_bcast(const nnc_conv *p, const float *x, const float *wc, const float *bias, float *y,
                                  int act, float alpha, float *scratch) {
    const int taps = p->kh * p->kw, K = p->cin * taps, most = NNC_BCAST_TAPS / taps;
    const int CR = p->kc > 0 && p->kc < p->cin && p->kc < most ? p->kc : (p->cin < most ? p->cin : most);
    const int R = p->nc > 0 && p->nc < p->oh ? p->nc : p->oh;
    const long wp = (long)(p->ow - 1) * p->sw + (long)(p->kw - 1) * p->dw + 1;
    const long N = (long)p->oh * p->ow;
    /* where a tile's second vector of weights is: the same row of the next block (a 32-channel tile),
     * or the second half of the row */
    const long hi = NNC_CV > NNC_CB ? (long)K * NNC_CB : NNC_CV / 2;
    int r0;
    if (taps == 1 && p->sh == 1 && p->sw == 1 && p->pt == 0 && p->pl == 0 && p->oh == p->h && p->ow == p->w &&
        N >= NNC_PT) {
        /* a 1x1 convolution of stride 1 without padding: its pixels are the input's own, read in place
         * in tiles of NNC_PT along the flattened plane (the last one ends at the last pixel, redoing a
         * few); no band, the partial sums in `scratch` */
        const long nt = (N + NNC_PT - 1) / NNC_PT;
        const int own = CR >= p->cin || nt * NNC_PT * NNC_CV <= NNC_BCAST_OWN;
        /* partial sums in the shared scratch, or one block of channels: threads take runs of tiles */
        const int nthr = NNC_MAX_THREADS(), big = (long)p->cout * p->cin * N >= NNC_PAR_WORK;
        const int by_runs = nthr > 1 && big && nt > 2 && (!own || p->cout <= NNC_CV);
        const int nnc_par = own && big && !by_runs && p->cout > NNC_CV;
        int c0;
#if NNC_THREADS
        if (by_runs) {
            /* every tile its own partial sums; the last redoes a few pixels of the one before: after them */
            const int runs = nt - 1 < nthr ? (int)(nt - 1) : nthr;
            int u;
            NNC_OMP_FOR
            for (u = 0; u < runs; u++) {
                int b;
                for (b = 0; b < p->cout; b += NNC_CV)
                    nnc_bcast_in_place(p, x, wc, bias, y, act, alpha, scratch, b, (nt - 1) * u / runs,
                                       (nt - 1) * (u + 1) / runs, CR, hi);
            }
            for (c0 = 0; c0 < p->cout; c0 += NNC_CV)
                nnc_bcast_in_place(p, x, wc, bias, y, act, alpha, scratch, c0, nt - 1, nt, CR, hi);
            return;
        }
#else
        (void)by_runs;
#endif
        if (NNC_THREADS && nnc_par) {     /* (a plain copy otherwise: see NNC_PAR_WORK) */
            NNC_OMP_FOR
            for (c0 = 0; c0 < p->cout; c0 += NNC_CV) {
                float mine[NNC_BCAST_OWN];    /* partial sums, where there are any: the thread's own */
                nnc_bcast_in_place(p, x, wc, bias, y, act, alpha,
                                   nt * NNC_PT * NNC_CV <= NNC_BCAST_OWN ? mine : scratch, c0, 0, nt, CR, hi);
            }
        } else {
            for (c0 = 0; c0 < p->cout; c0 += NNC_CV)
                nnc_bcast_in_place(p, x, wc, bias, y, act, alpha, scratch, c0, 0, nt, CR, hi);
        }
        return;
    }
    for (r0 = 0; r0 < p->oh; r0 += R) {
        const int rows = p->oh - r0 < R ? p->oh - r0 : R, bh = (rows - 1) * p->sh + (p->kh - 1) * p->dh + 1;
        const long plane = (long)bh * wp, np = (long)rows * p->ow, tiles = (np + NNC_PT - 1) / NNC_PT;
        const int npix = np < NNC_PT ? (int)np : NNC_PT;
        /* one block of output channels and of depth: threads take its tiles (NNC_THREADS) */
        const int big = (long)p->cout * K * np >= NNC_PAR_WORK;
        const int by_tiles = NNC_MAX_THREADS() > 1 && big && p->cout <= NNC_CV && CR >= p->cin && tiles > 2;
        const int nnc_par = big && p->cout > NNC_CV && (CR >= p->cin || tiles * NNC_PT * NNC_CV <= NNC_BCAST_OWN);
        float *band = scratch, *shared = scratch + (long)p->cin * plane;
        int c, i, c0;
        /* the band: input rows r0*sh - pt .. + bh, columns -pl .., zeros outside */
        for (c = 0; c < p->cin; c++)
            for (i = 0; i < bh; i++) {
                float *d = band + c * plane + (long)i * wp;
                const int ih = r0 * p->sh - p->pt + i;
                long q, lo = p->pl < wp ? p->pl : wp, end = p->pl + p->w < wp ? p->pl + p->w : wp;
                if (ih < 0 || ih >= p->h) end = lo;
                for (q = 0; q < lo; q++) d[q] = 0.0f;
                if (end > lo) memcpy(d + lo, x + ((long)c * p->h + ih) * p->w, (size_t)(end - lo) * sizeof *d);
                for (q = end > lo ? end : lo; q < wp; q++) d[q] = 0.0f;
            }
#if NNC_THREADS
        if (by_tiles) {
            /* a run of tiles a thread, each tile its own sums and pixels (no partial sums: one depth
             * block); the last redoes a few pixels of the one before: after them */
            const int runs = tiles - 1 < NNC_MAX_THREADS() ? (int)(tiles - 1) : NNC_MAX_THREADS();
            int u;
            NNC_OMP_FOR
            for (u = 0; u < runs; u++)
                nnc_bcast_band_block(p, band, wc, bias, y, act, alpha, shared, 0, r0, CR, hi, plane, wp, np, tiles,
                                     npix, (tiles - 1) * u / runs, (tiles - 1) * (u + 1) / runs);
            nnc_bcast_band_block(p, band, wc, bias, y, act, alpha, shared, 0, r0, CR, hi, plane, wp, np, tiles, npix,
                                 tiles - 1, tiles);
            continue;
        }
#else
        (void)by_tiles;
#endif
        if (NNC_THREADS && nnc_par) {     /* (a plain copy otherwise: see NNC_PAR_WORK) */
            NNC_OMP_FOR
            for (c0 = 0; c0 < p->cout; c0 += NNC_CV) {
                float own[NNC_BCAST_OWN];     /* partial sums, where there are any: the thread's own */
                nnc_bcast_band_block(p, band, wc, bias, y, act, alpha,
                                     tiles * NNC_PT * NNC_CV <= NNC_BCAST_OWN ? own : shared, c0, r0, CR, hi, plane,
                                     wp, np, tiles, npix, 0, tiles);
            }
        } else {
            for (c0 = 0; c0 < p->cout; c0 += NNC_CV)
                nnc_bcast_band_block(p, band, wc, bias, y, act, alpha, shared, c0, r0, CR, hi, plane, wp, np, tiles,
                                     npix, 0, tiles);
        }
    }
}

/* ------------------------------------------------------------------ direct convolution along output rows */

/* A direct convolution vectorised along output pixels (one group), for
 * shallow layers (few input channels times taps: a stem), whose outputs
 * nnc_conv_bcast stores one float at a time: a register tile of NNC_RB
 * output channels times one vector of NNC_RV consecutive pixels of an
 * output row. Each tap reads one vector of input for the NNC_RB channels,
 * whose weights it broadcasts from nnc_conv_bcast's packing ([cout'/NNC_CB]
 * [K][NNC_CB], a tap's channels side by side; here cout' = cout rounded up
 * to 16), and each channel's pixels are stored as one vector, with the bias
 * and the activation. The input is copied into `scratch` in bands of p->nc
 * output rows (0: all) by column phase: per input channel, band row and
 * phase f < sw, the zero-padded input's columns f, f + sw, ...
 * (NNC_ROWS_WQ), so that tap (i, j) of output pixel ox reads phase
 * (j*dw) % sw at column ox + (j*dw) / sw, and a tap of a vector of pixels is
 * one contiguous load at any stride. The columns past ow (to whole
 * multiples of 32 floats) are computed and not stored. K = cin*kh*kw must
 * not exceed NNC_BCAST_TAPS (the planner gives it at most 288). With 16-float
 * vectors, a layer of at most 8 output channels takes tiles of 8 channels
 * times two vectors (NNC_ROWS_TWO), not half-empty ones of 16. */
#if defined(NNC_VEC) && NNC_VL == 16
#define NNC_RB 16             /* 32 vector registers: 16 accumulators */
#define NNC_ROWS_TWO 1
#else
#define NNC_RB 8
#define NNC_ROWS_TWO 0
#endif
#if defined(NNC_VEC)
#define NNC_RV NNC_VL
#else
#define NNC_RV 8
#endif
#define NNC_ROWS_WQ(p) (((p)->ow + 31) / 32 * 32 + ((p)->kw - 1) * (p)->dw / (p)->sw)

/* Output channels c0.. (nch of them) of NNC_RV pixels from x0 of output
 * row oy of the band (`src`: the row's first phase column x0; tap k at
 * src + off[k]), stored at `y` (channel c at y + c*N, n pixels). */
#if defined(NNC_VEC)
/* One channel's vector of a tile: plus its bias (b: NULL for none), the activation, its first n pixels
 * stored at `row`. */
static inline void nnc_rows_put(nnc_vf v, const float *b, int act, float alpha, float *restrict row, int n) {
    if (b) v += *b;
    if (act == NNC_RELU || act == NNC_RELU6) v = nnc_vrelu(v, act);
    if (n == NNC_VL)              /* (a store of known size: no call) */
        memcpy(row, &v, sizeof v);
    else
        memcpy(row, &v, (size_t)n * sizeof *row);
    if (act && act != NNC_RELU && act != NNC_RELU6) nnc_act(row, n, act, alpha);
}

#if NNC_RB == 16
#define NNC_RB_EACH(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#else
#define NNC_RB_EACH(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
#endif
#define NNC_RB_ZERO(i) nnc_vf a##i = {0};
#define NNC_RB_FMA(i) a##i += v * w[i];
#define NNC_RB_LIST(i) a##i,
NNC_CONTRACT static inline void nnc_rows_tile(const float *restrict src, const int *restrict off, int K,
                                              const float *restrict w, const float *restrict bias, int act,
                                              float alpha, float *restrict y, long N, int nch, int n) {
    int k, c;
    NNC_RB_EACH(NNC_RB_ZERO)
    for (k = 0; k < K; k++, w += NNC_CB) {
        const nnc_vf v = nnc_ldv(src + off[k]);
        NNC_RB_EACH(NNC_RB_FMA)
    }
    {
        const nnc_vf t[NNC_RB] = {NNC_RB_EACH(NNC_RB_LIST)};
        for (c = 0; c < nch; c++) nnc_rows_put(t[c], bias ? bias + c : NULL, act, alpha, y + c * N, n);
    }
}
#if NNC_ROWS_TWO
/* nnc_rows_tile for at most 8 channels of 2*NNC_VL pixels (n of them) */
#define NNC_R8_EACH(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
#define NNC_R8_ZERO(i) nnc_vf a##i = {0}, b##i = {0};
#define NNC_R8_FMA(i) a##i += v * w[i], b##i += u * w[i];
#define NNC_R8_LIST_A(i) a##i,
#define NNC_R8_LIST_B(i) b##i,
NNC_CONTRACT static inline void nnc_rows_tile2(const float *restrict src, const int *restrict off, int K,
                                               const float *restrict w, const float *restrict bias, int act,
                                               float alpha, float *restrict y, long N, int nch, int n) {
    int k, c;
    NNC_R8_EACH(NNC_R8_ZERO)
    for (k = 0; k < K; k++, w += NNC_CB) {
        const nnc_vf v = nnc_ldv(src + off[k]), u = nnc_ldv(src + off[k] + NNC_VL);
        NNC_R8_EACH(NNC_R8_FMA)
    }
    {
        const nnc_vf ta[8] = {NNC_R8_EACH(NNC_R8_LIST_A)}, tb[8] = {NNC_R8_EACH(NNC_R8_LIST_B)};
        for (c = 0; c < nch; c++) {
            nnc_rows_put(ta[c], bias ? bias + c : NULL, act, alpha, y + c * N, n < NNC_VL ? n : NNC_VL);
            if (n > NNC_VL) nnc_rows_put(tb[c], bias ? bias + c : NULL, act, alpha, y + c * N + NNC_VL, n - NNC_VL);
        }
    }
}
#undef NNC_R8_EACH
#undef NNC_R8_ZERO
#undef NNC_R8_FMA
#undef NNC_R8_LIST_A
#undef NNC_R8_LIST_B
#endif
#undef NNC_RB_EACH
#undef NNC_RB_ZERO
#undef NNC_RB_FMA
#undef NNC_RB_LIST
#else
static inline void nnc_rows_tile(const float *src, const int *off, int K, const float *w, const float *bias,
                                 int act, float alpha, float *y, long N, int nch, int n) {
    float acc[NNC_RB][NNC_RV];
    int k, c, l;
    for (c = 0; c < NNC_RB; c++)
        for (l = 0; l < NNC_RV; l++) acc[c][l] = 0.0f;
    for (k = 0; k < K; k++, w += NNC_CB) {
        const float *s = src + off[k];
        for (c = 0; c < NNC_RB; c++)
            for (l = 0; l < NNC_RV; l++) acc[c][l] = NNC_FMA(s[l], w[c], acc[c][l]);
    }
    for (c = 0; c < nch; c++) {
        float *row = y + c * N;
        for (l = 0; l < n; l++) row[l] = acc[c][l] + (bias ? bias[c] : 0.0f);
        if (act) nnc_act(row, n, act, alpha);
    }
}
#endif

/* Row i of channel c of the band of nnc_conv_rows from output row r0:
 * input row r0*sh - pt + i by column phase, at scratch + c*plane, zeros
 * outside the input. */
static inline void nnc_rows_band(const nnc_conv *p, const float *x, float *scratch, int r0, int c, int i, long plane,
                                 long wq) {
    const int S = p->sw, ih = r0 * p->sh - p->pt + i;
    int f;
    for (f = 0; f < S; f++) {
        float *d = scratch + c * plane + ((long)i * S + f) * wq;
        /* phase column q is input column q*S + f - pl: inside for q in [lo, hi) */
        long lo = 0, hi = 0, q;
        if (ih >= 0 && ih < p->h && p->w + p->pl - f > 0) {
            lo = p->pl - f > 0 ? (p->pl - f + S - 1) / S : 0;
            hi = (p->w - 1 + p->pl - f) / S + 1;
            if (hi > wq) hi = wq;
            if (lo > hi) lo = hi;
        }
        for (q = 0; q < lo; q++) d[q] = 0.0f;
        if (hi > lo) {
            const float *s = x + ((long)c * p->h + ih) * p->w;
            for (q = lo; q < hi; q++) d[q] = s[q * S + f - p->pl];
        }
        for (q = hi; q < wq; q++) d[q] = 0.0f;
    }
}

/* Pixels of one tile of nnc_conv_rows along an output row: two vectors
 * for a layer of at most 8 output channels where NNC_ROWS_TWO, else one. */
#define NNC_ROWS_PIX(p) (NNC_ROWS_TWO && (p)->cout <= 8 ? 2 * NNC_RV : NNC_RV)

/* The tile of output channels c0.. and pixels x0.. of row oy of a band from
 * output row r0. */
static inline void nnc_rows_at(const nnc_conv *p, const float *band, const int *off, int K, long wq,
                               const float *wc, const float *bias, int act, float alpha, float *y, int r0, int oy,
                               int x0, int c0) {
    const long N = (long)p->oh * p->ow;
    const int px = NNC_ROWS_PIX(p), n = p->ow - x0 < px ? p->ow - x0 : px;
    const float *src = band + (long)oy * p->sh * p->sw * wq + x0;
    const float *w = wc + (long)(c0 / NNC_CB) * K * NNC_CB + c0 % NNC_CB;
    float *out = y + (long)c0 * N + (long)(r0 + oy) * p->ow + x0;
    const int nch = p->cout - c0 < NNC_RB ? p->cout - c0 : NNC_RB;
#if NNC_ROWS_TWO
    if (px > NNC_RV) {
        nnc_rows_tile2(src, off, K, w, bias ? bias + c0 : NULL, act, alpha, out, N, nch, n);
        return;
    }
#endif
    nnc_rows_tile(src, off, K, w, bias ? bias + c0 : NULL, act, alpha, out, N, nch, n);
}

static inline void nnc_conv_rows(const nnc_conv *p, const float *x, const float *wc, const float *bias, float *y,
                                 int act, float alpha, float *scratch) {
    const int K = p->cin * p->kh * p->kw, S = p->sw;
    const int R = p->nc > 0 && p->nc < p->oh ? p->nc : p->oh;
    const long wq = NNC_ROWS_WQ(p), plane = (long)((R - 1) * p->sh + (p->kh - 1) * p->dh + 1) * S * wq;
    /* threads copy a band's rows and take its tiles, in one parallel region for the layer (one a band
     * cost more than a small layer's tiles on one thread), where a band has four tiles a thread */
    const int nthr = NNC_MAX_THREADS(), px = NNC_ROWS_PIX(p);
    const long band_tiles = (long)R * ((p->ow + px - 1) / px) * ((p->cout + NNC_RB - 1) / NNC_RB);
    const int nnc_par = nthr > 1 && (long)p->cout * K * p->oh * p->ow >= NNC_PAR_WORK && band_tiles >= 4L * nthr;
    int off[NNC_BCAST_TAPS], c, i, j, k = 0, r0, u;
    for (c = 0; c < p->cin; c++)
        for (i = 0; i < p->kh; i++)
            for (j = 0; j < p->kw; j++)
                off[k++] = (int)(c * plane + ((long)i * p->dh * S + j * p->dw % S) * wq + j * p->dw / S);
#if NNC_THREADS
    if (nnc_par) {
        const int nx = (p->ow + px - 1) / px, ncb = (p->cout + NNC_RB - 1) / NNC_RB;
#pragma omp parallel private(r0, u)
        for (r0 = 0; r0 < p->oh; r0 += R) {
            const int rows = p->oh - r0 < R ? p->oh - r0 : R, bh = (rows - 1) * p->sh + (p->kh - 1) * p->dh + 1;
            long t;
#pragma omp for schedule(static)
            for (u = 0; u < p->cin * bh; u++) nnc_rows_band(p, x, scratch, r0, u / bh, u % bh, plane, wq);
            /* tile t: its row, then its vector along the row, then its block of channels */
#pragma omp for schedule(static)
            for (t = 0; t < (long)rows * nx * ncb; t++)
                nnc_rows_at(p, scratch, off, K, wq, wc, bias, act, alpha, y, r0, (int)(t / ncb / nx),
                            (int)(t / ncb % nx) * px, (int)(t % ncb) * NNC_RB);
        }
        return;
    }
#else
    (void)nnc_par;
#endif
    for (r0 = 0; r0 < p->oh; r0 += R) {
        const int rows = p->oh - r0 < R ? p->oh - r0 : R, bh = (rows - 1) * p->sh + (p->kh - 1) * p->dh + 1;
        int oy, x0, c0;
        for (u = 0; u < p->cin * bh; u++) nnc_rows_band(p, x, scratch, r0, u / bh, u % bh, plane, wq);
        for (oy = 0; oy < rows; oy++)
            for (x0 = 0; x0 < p->ow; x0 += px)
                for (c0 = 0; c0 < p->cout; c0 += NNC_RB)
                    nnc_rows_at(p, scratch, off, K, wq, wc, bias, act, alpha, y, r0, oy, x0, c0);
    }
}

/* A convolution of one group as a matrix multiply over shifted input
 * planes: for a band of p->nc output rows (0: all), the input of every
 * channel is split by stride phase into sh*sw zero-padded planes (as
 * nnc_depthwise does: plane (a, b) holds padded input rows r*sh + a,
 * columns q*sw + b, rows WQ = ow + (kw-1)*dw/sw wide), so that row k of the
 * column matrix (channel, tap) is one plane read from a fixed offset:
 * nnc_micro_off multiplies the packed weights (nnc_conv2d's layout) with it
 * in place, no packing. The products, for every position r*WQ + q of the
 * band (the columns q >= ow computed and dropped), go to a staging block
 * [ceil(M/MR)*MR][NP] (NP: the band's positions rounded up to NNC_NR_MAX)
 * after the planes in `scratch`, then the valid columns to the output.
 * The depth runs in blocks of p->kc taps (0: NNC_KC; at most NNC_BCAST_TAPS).
 * Scratch: NNC_PLANES_SCRATCH floats. */
#define NNC_PLANES_SCRATCH(cin, cout, sh, sw, kh, kw, dh, dw, ow, rows)                                   \
    ((long)(cin) * (sh) * (sw) * ((rows) + ((kh) - 1) * (dh) / (sh) + 1) * ((ow) + ((kw) - 1) * (dw) / (sw)) + \
     NNC_NR_MAX + ((long)(cout) + NNC_MR - 1) / NNC_MR * NNC_MR *                                           \
                      (((long)(rows) * ((ow) + ((kw) - 1) * (dw) / (sw)) + NNC_NR_MAX - 1) / NNC_NR_MAX * NNC_NR_MAX))

static inline void nnc_conv_planes(const nnc_conv *p, const float *x, const float *wp, const float *bias, float *y,
                                   int act, float alpha, float *scratch) {
    const int sh = p->sh, sw = p->sw, taps = p->kh * p->kw, K = p->cin * taps, M = p->cout;
    const int R = p->nc > 0 && p->nc < p->oh ? p->nc : p->oh, WQ = p->ow + (p->kw - 1) * p->dw / sw;
    const int KC = p->kc > 0 && p->kc < NNC_BCAST_TAPS ? p->kc : (NNC_KC < NNC_BCAST_TAPS ? NNC_KC : NNC_BCAST_TAPS);
    const long N = (long)p->oh * p->ow;
    int r0;
    for (r0 = 0; r0 < p->oh; r0 += R) {
        const int rows = p->oh - r0 < R ? p->oh - r0 : R, YP = rows + (p->kh - 1) * p->dh / sh + 1;
        const long ps = (long)YP * WQ, cs = ps * sh * sw, n = (long)rows * WQ;
        const long NP = (n + NNC_NR_MAX - 1) / NNC_NR_MAX * NNC_NR_MAX;
        float *stage = scratch + p->cin * cs + NNC_NR_MAX;
        int c, a, b, yy, k0, i, r;
        long n0;
        /* the planes some tap reads, their padding as zeros, and the block after them that the last tiles read */
        for (c = 0; c < p->cin; c++) {
            const float *plane = x + (long)c * p->h * p->w;
            for (a = 0; a < sh; a++)
                for (b = 0; b < sw; b++) {
                    int lo_x, hi_x, used = 0, t;
                    for (t = 0; t < taps; t++)
                        used |= (t / p->kw * p->dh) % sh == a && (t % p->kw * p->dw) % sw == b;
                    if (!used) continue;
                    lo_x = p->pl - b > 0 ? (p->pl - b + sw - 1) / sw : 0;
                    hi_x = (p->w + p->pl - b + sw - 1) / sw;
                    if (hi_x > WQ) hi_x = WQ;
                    if (lo_x > hi_x) lo_x = hi_x;
                    for (yy = 0; yy < YP; yy++) {
                        float *d = scratch + c * cs + (a * sw + b) * ps + (long)yy * WQ;
                        const int ih = (r0 + yy) * sh + a - p->pt, inside = ih >= 0 && ih < p->h;
                        const int l = inside ? lo_x : 0, h = inside ? hi_x : 0;
                        const float *s = plane + (long)ih * p->w + b - p->pl;
                        int xx;
                        for (xx = 0; xx < l; xx++) d[xx] = 0.0f;
                        if (sw == 1)
                            for (xx = l; xx < h; xx++) d[xx] = s[xx];
                        else if (sw == 2)
                            for (xx = l; xx < h; xx++) d[xx] = s[2 * xx];
                        else
                            for (xx = l; xx < h; xx++) d[xx] = s[(long)xx * sw];
                        for (xx = h > l ? h : l; xx < WQ; xx++) d[xx] = 0.0f;
                    }
                }
        }
        memset(scratch + p->cin * cs, 0, NNC_NR_MAX * sizeof *scratch);
        for (k0 = 0; k0 < K; k0 += KC) {
            const int kc = K - k0 < KC ? K - k0 : KC;
            int off[NNC_BCAST_TAPS], k;
            for (k = 0; k < kc; k++) {
                const int kk = k0 + k, t = kk % taps, ti = t / p->kw * p->dh, tj = t % p->kw * p->dw;
                off[k] = (int)((kk / taps) * cs + ((ti % sh) * sw + tj % sw) * ps + (long)(ti / sh) * WQ + tj / sw);
            }
            for (n0 = 0; n0 < NP; n0 += NNC_NR)
                for (i = 0; i < M; i += NNC_MR)
                    nnc_micro_off(kc, wp + (long)i * K + (long)k0 * NNC_MR, scratch + n0, off, stage + i * NP + n0, NP,
                                  M - i < NNC_MR ? M - i : NNC_MR, NNC_NR, k0 == 0, k0 + kc >= K,
                                  bias ? bias + i : NULL, act, alpha);
        }
        for (i = 0; i < M; i++)
            for (r = 0; r < rows; r++)
                memcpy(y + i * N + (long)(r0 + r) * p->ow, stage + i * NP + (long)r * WQ, (size_t)p->ow * sizeof *y);
    }
}

/* A 3x3 convolution of stride 1 (no dilation, one group) by Winograd's
 * F(m x m, 3x3), m = 2 or 4: each m x m block of outputs (a tile) takes
 * (m+2)^2 multiplies per input channel where the direct convolution takes
 * 9 m^2 (16 for 36 with F(2x2, 3x3); 36 for 144 with F(4x4, 3x3), whose
 * transforms add rounding, about 1e-5 of the output's magnitude on
 * ResNet-18's layers, within the 1e-4 the plan promises). `u` holds the
 * E = (m+2)^2 transformed weight matrices G g G^T (the code generator
 * transforms them), each packed like nnc_conv2d's weights with K = cin:
 * [E][ceil(cout/MR)][cin][MR].
 *
 * The tiles go in blocks of p->nc whole tile rows (0: one), numbered
 * f = r*W1 + tx with one spare tile a row (W1 = tw + 1), so that every
 * transform is a long vectorised loop with each operand at a fixed offset:
 * the block's input rows are copied, zero-padded, into a band in the order
 * of their row phase (input row m*r + a of the block at slot a*(nc+1) + r,
 * each m*W1 wide); split by column phase q (P_q[i] = band[m*i + q]), row
 * phase a is then P_q[a*(nc+1)*W1 + f], the row transform (B^T along the
 * row) reads P_q at f and f + 1, the column transform reads row phase k%m
 * at f + (k/m)*W1. E transformed matrices [cin][NB] (NB = nc*W1 rounded up
 * to NNC_NR_MAX), E packed matrix multiplies give [ceil(cout/MR) MR][NB],
 * and the output transform (A^T m A), bias and activation write the
 * outputs; the spare tiles' values are dropped.
 * Scratch: NNC_WINO_SCRATCH(m, cin, cout, nc, tw) floats. */
#define NNC_WINO_NB(nc, tw) (((long)(nc) * ((tw) + 1) + NNC_NR_MAX - 1) / NNC_NR_MAX * NNC_NR_MAX)
#define NNC_WINO_SCRATCH(m, cin, cout, nc, tw)                                                              \
    (((long)(m) + 2) * ((m) + 2) * ((long)(cin) + ((cout) + NNC_MR - 1) / NNC_MR * NNC_MR) *                 \
         NNC_WINO_NB(nc, tw) +                                                                              \
     40 * ((long)(m) * ((nc) + 1) * ((tw) + 1) + 1) + 40 * NNC_WINO_NB(nc, tw))

/* p_q[i] = band[m*i + q], i < n. */
static inline void nnc_wino_split2(const float *restrict band, long n, float *restrict p0, float *restrict p1) {
    long i;
    for (i = 0; i < n; i++) p0[i] = band[2 * i], p1[i] = band[2 * i + 1];
}

static inline void nnc_wino_split4(const float *restrict band, long n, float *restrict p0, float *restrict p1,
                                   float *restrict p2, float *restrict p3) {
    long i;
    for (i = 0; i < n; i++) {
        p0[i] = band[4 * i], p1[i] = band[4 * i + 1], p2[i] = band[4 * i + 2], p3[i] = band[4 * i + 3];
    }
}

/* B^T d: o_e[i] = sum_k B^T[e][k] d_k[i], i < n, for F(2x2, 3x3) ... */
static inline void nnc_wino_bt2(const float *restrict d0, const float *restrict d1, const float *restrict d2,
                                const float *restrict d3, long n, float *restrict o0, float *restrict o1,
                                float *restrict o2, float *restrict o3) {
    long i;
    for (i = 0; i < n; i++) {
        const float a0 = d0[i], a1 = d1[i], a2 = d2[i], a3 = d3[i];
        o0[i] = a0 - a2, o1[i] = a1 + a2, o2[i] = a2 - a1, o3[i] = a1 - a3;
    }
}

/* ... and F(4x4, 3x3) */
static inline void nnc_wino_bt4(const float *restrict d0, const float *restrict d1, const float *restrict d2,
                                const float *restrict d3, const float *restrict d4, const float *restrict d5, long n,
                                float *restrict o0, float *restrict o1, float *restrict o2, float *restrict o3,
                                float *restrict o4, float *restrict o5) {
    long i;
    for (i = 0; i < n; i++) {
        const float a0 = d0[i], a1 = d1[i], a2 = d2[i], a3 = d3[i], a4 = d4[i], a5 = d5[i];
        o0[i] = 4.0f * a0 - 5.0f * a2 + a4;
        o1[i] = a3 + a4 - 4.0f * (a1 + a2);
        o2[i] = 4.0f * (a1 - a2) - a3 + a4;
        o3[i] = 2.0f * (a3 - a1) - a2 + a4;
        o4[i] = 2.0f * (a1 - a3) - a2 + a4;
        o5[i] = 4.0f * a1 - 5.0f * a3 + a5;
    }
}

/* A^T q down the columns: s_y[i] = sum_k A^T[y][k] q_k[i], i < n, for F(2x2, 3x3) ... */
static inline void nnc_wino_at2(const float *restrict q0, const float *restrict q1, const float *restrict q2,
                                const float *restrict q3, long n, float *restrict s0, float *restrict s1) {
    long i;
    for (i = 0; i < n; i++) s0[i] = q0[i] + q1[i] + q2[i], s1[i] = q1[i] - q2[i] - q3[i];
}

/* ... and F(4x4, 3x3) */
static inline void nnc_wino_at4(const float *restrict q0, const float *restrict q1, const float *restrict q2,
                                const float *restrict q3, const float *restrict q4, const float *restrict q5, long n,
                                float *restrict s0, float *restrict s1, float *restrict s2, float *restrict s3) {
    long i;
    for (i = 0; i < n; i++) {
        const float p12 = q1[i] + q2[i], m12 = q1[i] - q2[i], p34 = q3[i] + q4[i], m34 = q3[i] - q4[i];
        s0[i] = q0[i] + p12 + p34;
        s1[i] = m12 + 2.0f * m34;
        s2[i] = p12 + 4.0f * p34;
        s3[i] = m12 + 8.0f * m34 + q5[i];
    }
}

/* ... and along the rows, interleaved into an output row: row[m*i + x] = (s A)[x] + b */
static inline void nnc_wino_at2_row(const float *restrict s0, const float *restrict s1, const float *restrict s2,
                                    const float *restrict s3, long n, float b, float *restrict row) {
    long i;
    for (i = 0; i < n; i++) {
        row[2 * i] = s0[i] + s1[i] + s2[i] + b;
        row[2 * i + 1] = s1[i] - s2[i] - s3[i] + b;
    }
}

static inline void nnc_wino_at4_row(const float *restrict s0, const float *restrict s1, const float *restrict s2,
                                    const float *restrict s3, const float *restrict s4, const float *restrict s5,
                                    long n, float b, float *restrict row) {
    long i;
    for (i = 0; i < n; i++) {
        const float p12 = s1[i] + s2[i], m12 = s1[i] - s2[i], p34 = s3[i] + s4[i], m34 = s3[i] - s4[i];
        row[4 * i] = s0[i] + p12 + p34 + b;
        row[4 * i + 1] = m12 + 2.0f * m34 + b;
        row[4 * i + 2] = p12 + 4.0f * p34 + b;
        row[4 * i + 3] = m12 + 8.0f * m34 + s5[i] + b;
    }
}

/* Winograd's multiply e of E: the products mo [ceil(cout/MR)*MR][NB] of the
 * transformed weights u + e*us (packed, us floats a matrix) and the
 * transformed input v [cin][NB]; the next matrix's weights fetched a share
 * per block of output channels meanwhile. */
static inline void nnc_wino_mult(int e, int E, const float *u, long us, const float *v, long NB, float *mo, int cin,
                                 int cout, int mb) {
    const float *next = u + (e + 1 < E ? e + 1 : 0) * us;
    const long share = (us / 16 + mb - 1) / mb;
    int o0;
    long l, f0;
    for (o0 = 0; o0 < cout; o0 += NNC_MR) {
        for (l = 0; l < share; l++) NNC_PREFETCH(next + ((long)(o0 / NNC_MR) * share + l) * 16);
        for (f0 = 0; f0 < NB; f0 += NNC_NR)
            nnc_micro(cin, u + e * us + (long)o0 * cin, v + f0, NB, mo + (long)o0 * NB + f0, NB, NNC_MR, NNC_NR, 1, 1,
                      NULL, NNC_ACT_NONE, 0.0f);
    }
}

/* (inlined into each of its two callers, so that m is a constant there) */
NNC_INLINE void nnc_winograd(int m, const nnc_conv *p, const float *x, const float *u, const float *bias, float *y,
                             int act, float alpha, float *scratch) {
    const int a_ = m + 2, E = a_ * a_, cin = p->cin, cout = p->cout, mb = (cout + NNC_MR - 1) / NNC_MR;
    const int tw = (p->ow + m - 1) / m, th = (p->oh + m - 1) / m, W1 = tw + 1, RB = p->nc > 0 ? p->nc : 1;
    const long us = (long)mb * NNC_MR * cin;
    const float lo = act == NNC_RELU || act == NNC_RELU6 ? 0.0f : -INFINITY, hi = act == NNC_RELU6 ? 6.0f : INFINITY;
    const int fused = act == NNC_ACT_NONE || act == NNC_RELU || act == NNC_RELU6;
    /* the input columns a band row holds: m*W1 from -pl, the row's [lo_c, hi_c) inside the input */
    const int lo_c = p->pl < m * W1 ? p->pl : m * W1, hi_c = p->pl + p->w < m * W1 ? p->pl + p->w : m * W1;
    int ty0;
    for (ty0 = 0; ty0 < th; ty0 += RB) {
        const int nty = th - ty0 < RB ? th - ty0 : RB, rows = m * nty + 2;
        const long F = (long)nty * W1, PH = (long)(nty + 1) * W1, G = m * PH;   /* tiles, a row phase, groups */
        const long NB = (F + NNC_NR - 1) / NNC_NR * NNC_NR, vs = (long)cin * NB, ms = (long)mb * NNC_MR * NB;
        const int nnc_par = (long)E * cin * cout * F >= NNC_PAR_WORK;
        float *v = scratch, *mo = v + E * vs, *band = mo + E * ms;        /* band: m G + 4 floats */
        float *ph = band + m * G + 4, *t = ph + m * (G + 1);              /* ph: m (G + 1), t: (m+2) (G + 1) */
        long f;
        int c, i, e, r, yy;
        /* the input transform: V[e][c][f], zeros beyond F. Where the band holds padding is the same for
         * every channel: zeroed once, never written */
        memset(band, 0, ((size_t)m * G + 4) * sizeof *band);
        for (c = 0; c < cin; c++) {
            const float *plane = x + (long)c * p->h * p->w;
            float *o = v + (long)c * NB;
            for (r = 0; r < rows; r++) {
                const int iy = ty0 * m - p->pt + r;
                if (iy >= 0 && iy < p->h && hi_c > lo_c)
                    memcpy(band + ((r % m) * (nty + 1) + r / m) * (long)m * W1 + lo_c, plane + (long)iy * p->w,
                           (size_t)(hi_c - lo_c) * sizeof *band);
            }
            if (m == 2) {
                float *p0 = ph, *p1 = ph + (G + 1);
                nnc_wino_split2(band, G + 1, p0, p1);
                /* B^T along the rows, every row at once: t[e][i] over the groups i < G */
                nnc_wino_bt2(p0, p1, p0 + 1, p1 + 1, G, t, t + (G + 1), t + 2 * (G + 1), t + 3 * (G + 1));
                /* B^T down the columns: row k of a tile is row phase k % 2, k / 2 tile rows on */
                for (e = 0; e < 4; e++) {
                    const float *te = t + e * (G + 1);
                    nnc_wino_bt2(te, te + PH, te + W1, te + PH + W1, F, o + (long)e * vs, o + (long)(4 + e) * vs,
                                 o + (long)(8 + e) * vs, o + (long)(12 + e) * vs);
                }
            } else {
                float *p0 = ph, *p1 = ph + (G + 1), *p2 = ph + 2 * (G + 1), *p3 = ph + 3 * (G + 1);
                nnc_wino_split4(band, G + 1, p0, p1, p2, p3);
                nnc_wino_bt4(p0, p1, p2, p3, p0 + 1, p1 + 1, G, t, t + (G + 1), t + 2 * (G + 1), t + 3 * (G + 1),
                             t + 4 * (G + 1), t + 5 * (G + 1));
                /* row k of a tile is row phase k % 4, k / 4 tile rows on */
                for (e = 0; e < 6; e++) {
                    const float *te = t + e * (G + 1);
                    nnc_wino_bt4(te, te + PH, te + 2 * PH, te + 3 * PH, te + W1, te + PH + W1, F, o + (long)e * vs,
                                 o + (long)(6 + e) * vs, o + (long)(12 + e) * vs, o + (long)(18 + e) * vs,
                                 o + (long)(24 + e) * vs, o + (long)(30 + e) * vs);
                }
            }
            for (e = 0; e < E; e++)
                for (f = F; f < NB; f++) o[e * vs + f] = 0.0f;
        }
        /* one transformed input matrix at a time, so that it stays in L1 while every block of
         * output channels reads it; the next one's weights (read from memory otherwise: E of them
         * outgrow L2) fetched a share per block meanwhile */
        if (NNC_THREADS && nnc_par) {   /* (threads: each its own matrices, the outputs apart) */
            NNC_OMP_FOR
            for (e = 0; e < E; e++) nnc_wino_mult(e, E, u, us, v + e * vs, NB, mo + e * ms, cin, cout, mb);
        } else {                        /* (a plain copy: see NNC_PAR_WORK) */
            for (e = 0; e < E; e++) nnc_wino_mult(e, E, u, us, v + e * vs, NB, mo + e * ms, cin, cout, mb);
        }
        /* the output transform, bias and activation, one output channel at a time: s[y][e2][f], then
         * the rows o[y][m*f + x] */
        for (i = 0; i < cout; i++) {
            float *s = band, *o = band + 4 * a_ * NB, *out = y + (long)i * p->oh * p->ow;
            const float b = bias ? bias[i] : 0.0f;
            for (e = 0; e < a_; e++) {
                const float *q = mo + (long)e * ms + (long)i * NB;
                if (m == 2)
                    nnc_wino_at2(q, q + 4 * ms, q + 8 * ms, q + 12 * ms, F, s + e * NB, s + (4 + e) * NB);
                else
                    nnc_wino_at4(q, q + 6 * ms, q + 12 * ms, q + 18 * ms, q + 24 * ms, q + 30 * ms, F, s + e * NB,
                                 s + (6 + e) * NB, s + (12 + e) * NB, s + (18 + e) * NB);
            }
            for (yy = 0; yy < m; yy++) {
                const float *sy = s + yy * a_ * NB;
                if (m == 2)
                    nnc_wino_at2_row(sy, sy + NB, sy + 2 * NB, sy + 3 * NB, F, b, o + yy * 4 * NB);
                else
                    nnc_wino_at4_row(sy, sy + NB, sy + 2 * NB, sy + 3 * NB, sy + 4 * NB, sy + 5 * NB, F, b,
                                     o + yy * 4 * NB);
            }
            for (r = 0; r < nty; r++)
                for (yy = 0; yy < m && (ty0 + r) * m + yy < p->oh; yy++) {
                    const float *restrict src = o + yy * 4 * NB + (long)m * r * W1;
                    float *restrict dst = out + (long)((ty0 + r) * m + yy) * p->ow;
                    if (fused) {
                        for (f = 0; f < p->ow; f++) {
                            const float v0 = src[f] < lo ? lo : src[f];
                            dst[f] = v0 > hi ? hi : v0;
                        }
                    } else {
                        memcpy(dst, src, (size_t)p->ow * sizeof *dst);
                        nnc_act(dst, p->ow, act, alpha);
                    }
                }
        }
    }
}

/* F(2x2, 3x3) and F(4x4, 3x3). */
static inline void nnc_conv3x3_wino(const nnc_conv *p, const float *x, const float *u, const float *bias, float *y,
                                    int act, float alpha, float *scratch) {
    nnc_winograd(2, p, x, u, bias, y, act, alpha, scratch);
}

static inline void nnc_conv3x3_wino4(const nnc_conv *p, const float *x, const float *u, const float *bias, float *y,
                                     int act, float alpha, float *scratch) {
    nnc_winograd(4, p, x, u, bias, y, act, alpha, scratch);
}

/* A convolution with one input channel per group (depthwise, channel
 * multiplier cout/cin): direct, row by row (nnc_depthwise_rows, below) or
 * by phase planes (nnc_depthwise, after it). `w` is PyTorch's
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

static inline void nnc_depthwise_rows(const nnc_conv *p, const float *x, const float *w, const float *bias,
                                      float *y, int act, float alpha) {
    const int mult = p->cout / p->cin;
    const int k3 = p->kh == 3 && p->kw == 3 && p->dh == 1 && p->dw == 1;
    const int fused = act == NNC_ACT_NONE || act == NNC_RELU || act == NNC_RELU6;
    const float lo_clamp = act == NNC_RELU || act == NNC_RELU6 ? 0.0f : -INFINITY;
    const float hi_clamp = act == NNC_RELU6 ? 6.0f : INFINITY;
    const int same = k3 && p->sh == 1 && p->sw == 1 && p->pt == 1 && p->pl == 1 && p->oh == p->h &&
                     p->ow == p->w && p->h >= 3 && p->w >= 2;
    const int nnc_par = (long)p->cout * p->oh * p->ow * p->kh * p->kw >= NNC_PAR_WORK;
    int o;
    (void)nnc_par;                    /* read by NNC_OMP_FOR_IF only */
    NNC_OMP_FOR_IF
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

/* A depthwise convolution by phase planes: for a band of output rows, the
 * input (with its zero padding) is split by stride phase into sh*sw planes,
 * plane (a, b) holding padded input rows r*sh + a and columns q*sw + b, each
 * row WQ = ow + (kw-1)*dw/sw wide. Tap (i, j) then reads plane
 * (i*dh % sh, j*dw % sw) at one fixed offset (i*dh/sh rows, j*dw/sw
 * columns) from the output's own position: the whole band is one long
 * vectorised loop over positions r*WQ + q, whatever the stride, the row
 * width (MobileNet's 7- and 14-wide rows) or the kernel, the columns
 * q >= ow computed and dropped. Scratch: NNC_DW_SCRATCH floats. */
#define NNC_DW_BLOCK 64    /* positions of one register block (four vectors on AVX-512) */
#define NNC_DW_SCRATCH(sh, sw, kh, kw, dh, dw, ow, rows)                                                \
    ((long)(sh) * (sw) * ((rows) + ((kh) - 1) * (dh) / (sh) + 1) * ((ow) + ((kw) - 1) * (dw) / (sw)) + \
     (long)(rows) * ((ow) + ((kw) - 1) * (dw) / (sw)) + 2 * NNC_DW_BLOCK)

#if defined(NNC_VEC)
/* a clamped to [lo, hi] on the bits: a < lo -> lo, a > hi -> hi (NaN compares false and stays) */
static inline nnc_vf nnc_vclamp(nnc_vf a, nnc_vf lo, nnc_vf hi) {
    a = (nnc_vf)(((nnc_vi)a & ~(a < lo)) | ((nnc_vi)lo & (a < lo)));
    return (nnc_vf)(((nnc_vi)a & ~(a > hi)) | ((nnc_vi)hi & (a > hi)));
}

/* acc[0:n] (n rounded up to NNC_DW_BLOCK) = b + sum over taps t of
 * wo[t] * src[t][0:n], clamped to [lo, hi]. */
NNC_CONTRACT static inline void nnc_dw_sum(const float *const *src, const float *wo, int taps, float b, float lo,
                                           float hi, float *restrict acc, long n) {
    const nnc_vf vlo = (nnc_vf){0} + lo, vhi = (nnc_vf){0} + hi;
    long p0;
    int t;
    for (p0 = 0; p0 < n; p0 += 4 * NNC_VL) {
        nnc_vf a0 = (nnc_vf){0} + b, a1 = a0, a2 = a0, a3 = a0;
        for (t = 0; t < taps; t++) {
            const float *s = src[t] + p0;
            const float wv = wo[t];
            a0 += wv * nnc_ldv(s), a1 += wv * nnc_ldv(s + NNC_VL);
            a2 += wv * nnc_ldv(s + 2 * NNC_VL), a3 += wv * nnc_ldv(s + 3 * NNC_VL);
        }
        a0 = nnc_vclamp(a0, vlo, vhi), a1 = nnc_vclamp(a1, vlo, vhi);
        a2 = nnc_vclamp(a2, vlo, vhi), a3 = nnc_vclamp(a3, vlo, vhi);
        memcpy(acc + p0, &a0, sizeof a0), memcpy(acc + p0 + NNC_VL, &a1, sizeof a1);
        memcpy(acc + p0 + 2 * NNC_VL, &a2, sizeof a2), memcpy(acc + p0 + 3 * NNC_VL, &a3, sizeof a3);
    }
}
#else
static inline void nnc_dw_sum(const float *const *src, const float *wo, int taps, float b, float lo, float hi,
                              float *acc, long n) {
    float a[NNC_DW_BLOCK];
    long p0;
    int t, j;
    for (p0 = 0; p0 < n; p0 += NNC_DW_BLOCK) {
        for (j = 0; j < NNC_DW_BLOCK; j++) a[j] = b;
        for (t = 0; t < taps; t++)
            for (j = 0; j < NNC_DW_BLOCK; j++) a[j] = NNC_FMA(wo[t], src[t][p0 + j], a[j]);
        for (j = 0; j < NNC_DW_BLOCK; j++) {
            const float v = a[j] < lo ? lo : a[j];
            acc[p0 + j] = v > hi ? hi : v;
        }
    }
}
#endif

/* The depthwise convolution (channel multiplier cout/cin; `w` is PyTorch's
 * [cout, 1, kh, kw]) in bands of p->nc output rows, with `scratch` of
 * NNC_DW_SCRATCH(...) floats for them; without scratch (NULL), or with more
 * than NNC_DW_TAPS taps or NNC_DW_PHASES phases a side, row by row. Where
 * the planes hold padding is the same for every channel: it is zeroed once
 * a band, and each channel only copies its values in. */
/* e0[lo:hi] = sr[2*lo : 2*hi : 2], e1[lo:hi] = sr[2*lo+1 : 2*hi : 2]: a row's two column phases. With
 * GCC's 8-float vectors, chunks of 8 deinterleaved in registers, the last one ending at hi (redoing a
 * few) instead of a scalar tail: MobileNetV2's rows are 56 long, and the tail cost as much as the rest */
static inline void nnc_deint2(const float *restrict sr, float *restrict e0, float *restrict e1, int lo, int hi) {
    int xx;
#if defined(NNC_VEC) && NNC_VL == 8 && !defined(__clang__)
    if (hi - lo >= NNC_VL) {
        const nnc_vi even = {0, 2, 4, 6, 8, 10, 12, 14}, odd = {1, 3, 5, 7, 9, 11, 13, 15};
        for (xx = lo;; xx += NNC_VL) {
            nnc_vf v0, v1, ev, od;
            if (xx > hi - NNC_VL) xx = hi - NNC_VL;
            v0 = nnc_ldv(sr + 2 * xx), v1 = nnc_ldv(sr + 2 * xx + NNC_VL);
            ev = __builtin_shuffle(v0, v1, even), od = __builtin_shuffle(v0, v1, odd);
            memcpy(e0 + xx, &ev, sizeof ev), memcpy(e1 + xx, &od, sizeof od);
            if (xx == hi - NNC_VL) return;
        }
    }
#endif
    for (xx = lo; xx < hi; xx++) e0[xx] = sr[2 * xx], e1[xx] = sr[2 * xx + 1];
}

#define NNC_DW_TAPS 64
#define NNC_DW_PHASES 8
static inline void nnc_depthwise(const nnc_conv *p, const float *x, const float *w, const float *bias, float *y,
                                 int act, float alpha, float *scratch) {
    const int mult = p->cout / p->cin, taps = p->kh * p->kw, sh = p->sh, sw = p->sw;
    const int R = p->nc > 0 && p->nc < p->oh ? p->nc : p->oh, WQ = p->ow + (p->kw - 1) * p->dw / sw;
    const int fused = act == NNC_ACT_NONE || act == NNC_RELU || act == NNC_RELU6;
    const float lo = act == NNC_RELU || act == NNC_RELU6 ? 0.0f : -INFINITY, hi = act == NNC_RELU6 ? 6.0f : INFINITY;
    int r0;
    if (!scratch || taps > NNC_DW_TAPS || sh > NNC_DW_PHASES || sw > NNC_DW_PHASES) {
        nnc_depthwise_rows(p, x, w, bias, y, act, alpha);
        return;
    }
    for (r0 = 0; r0 < p->oh; r0 += R) {
        const int rows = p->oh - r0 < R ? p->oh - r0 : R, YP = rows + (p->kh - 1) * p->dh / sh + 1;
        const long ps = (long)YP * WQ, n = (long)rows * WQ;
        float *acc = scratch + sh * sw * ps + NNC_DW_BLOCK;
        const float *src[NNC_DW_TAPS];
        int x_lo[NNC_DW_PHASES], x_hi[NNC_DW_PHASES], y_lo[NNC_DW_PHASES], y_hi[NNC_DW_PHASES];
        int a, c, t, o;
        /* plane (a, c) row yy, column xx holds input row (r0+yy)*sh + a - pt, column xx*sw + c - pl:
         * the rows [y_lo, y_hi) and columns [x_lo, x_hi) of it lie inside the input */
        for (a = 0; a < sh; a++) {
            const int first = (r0 * sh + a - p->pt), need = -first;
            y_lo[a] = need > 0 ? (need + sh - 1) / sh : 0;
            y_hi[a] = first >= p->h ? 0 : (p->h - 1 - first) / sh + 1;
            if (y_hi[a] > YP) y_hi[a] = YP;
            if (y_lo[a] > y_hi[a]) y_lo[a] = y_hi[a];
        }
        for (c = 0; c < sw; c++) {
            x_lo[c] = p->pl - c > 0 ? (p->pl - c + sw - 1) / sw : 0;
            x_hi[c] = (p->w + p->pl - c + sw - 1) / sw;
            if (x_hi[c] > WQ) x_hi[c] = WQ;
            if (x_lo[c] > x_hi[c]) x_lo[c] = x_hi[c];
        }
        for (t = 0; t < taps; t++) {
            const int i = t / p->kw * p->dh, j = t % p->kw * p->dw;
            src[t] = scratch + ((i % sh) * sw + j % sw) * ps + (long)(i / sh) * WQ + j / sw;
        }
        /* the padding, and the block after the planes that the last block reads (never stores) */
        memset(scratch, 0, (size_t)(sh * sw * ps + NNC_DW_BLOCK) * sizeof *scratch);
        for (o = 0; o < p->cout; o++) {
            const float *plane = x + (long)(o / mult) * p->h * p->w;
            float *out = y + (long)o * p->oh * p->ow + (long)r0 * p->ow;
            int yy, xx, r;
            if (sw == 2) {
                /* both column phases of a row in one pass (a vectorised deinterleave), the input
                 * rows in their order (row phase a of phase row yy is input row yy*sh + a: one
                 * stream, not one per row phase); phase 1 starts and ends no later than phase 0
                 * (x_lo[1] <= x_lo[0] <= x_hi[1] <= x_hi[0]), so it has a head and phase 0 a tail
                 * of their own */
                int first = y_lo[0], end = y_hi[0];
                for (a = 1; a < sh; a++) {
                    if (y_lo[a] < first) first = y_lo[a];
                    if (y_hi[a] > end) end = y_hi[a];
                }
                for (yy = first; yy < end; yy++)
                    for (a = 0; a < sh; a++)
                        if (yy >= y_lo[a] && yy < y_hi[a]) {
                            const float *restrict sr = plane + (long)((r0 + yy) * sh + a - p->pt) * p->w - p->pl;
                            float *restrict e0 = scratch + (a * sw) * ps + (long)yy * WQ, *restrict e1 = e0 + ps;
                            for (xx = x_lo[1]; xx < x_lo[0]; xx++) e1[xx] = sr[2 * xx + 1];
                            nnc_deint2(sr, e0, e1, x_lo[0], x_hi[1]);
                            for (xx = x_hi[1]; xx < x_hi[0]; xx++) e0[xx] = sr[2 * xx];
                        }
            } else
            for (a = 0; a < sh; a++)
                for (c = 0; c < sw; c++) {
                    const int len = x_hi[c] - x_lo[c];
                    const float *s = plane + (long)(r0 * sh + a - p->pt) * p->w + (long)x_lo[c] * sw + c - p->pl;
                    float *d = scratch + (a * sw + c) * ps + x_lo[c];
                    for (yy = y_lo[a]; yy < y_hi[a]; yy++) {
                        const float *sr = s + (long)yy * sh * p->w;
                        float *dr = d + (long)yy * WQ;
                        if (sw == 1)
                            for (xx = 0; xx < len; xx++) dr[xx] = sr[xx];
                        else
                            for (xx = 0; xx < len; xx++) dr[xx] = sr[(long)xx * sw];
                    }
                }
            nnc_dw_sum(src, w + (long)o * taps, taps, bias ? bias[o] : 0.0f, fused ? lo : -INFINITY,
                       fused ? hi : INFINITY, acc, n);
            for (r = 0; r < rows; r++) {
                float *row = out + (long)r * p->ow;
                const float *q = acc + (long)r * WQ;
                for (xx = 0; xx < p->ow; xx++) row[xx] = q[xx];
                if (!fused) nnc_act(row, p->ow, act, alpha);
            }
        }
    }
}

/* The depthwise convolution with NNC_DWC = 16 output channels side by side
 * (nnc_depthwise_cv: for AVX-512 with GCC, whose 16-float vectors it uses;
 * elsewhere it is nnc_depthwise by phase planes in bands of p->nc rows, in
 * the same scratch). Each block's input rows are transposed, L at a time as
 * they are first needed (L = ceil(96 / w), at most h), into a ring of
 * Kr = (kh-1)*dh + L rows of [WP][16] floats (zero columns for the padding,
 * zero rows above and below the input): every output position of the block
 * is then kh*kw multiply-adds of 16-wide rows, whatever the stride or the
 * plane's size, where the phase planes copy each channel's plane and run
 * loops as short as its rows (MobileNet's 7- and 14-wide planes, and its
 * stride-2 layers). Output rows are staged as [ow][16] and transposed back
 * into the block's planes. The transposes are 16x16 in registers (four
 * butterfly stages of two-source shuffles). Scratch: NNC_DWC_SCRATCH floats (the code generator's
 * `_dwc_scratch` mirrors it).
 *
 * nnc_pw_depthwise is the same convolution of a 1x1 one's output that is
 * never stored (MobileNetV2's expansion and depthwise layers): a refill of
 * the ring computes the 1x1 convolution's rows of the block's 16 channels
 * there, each position one 16-wide row of multiply-adds over the input
 * channels, where the unfused plan writes the whole expanded tensor (4.8 MB
 * for MobileNetV2's 96 channels of 112x112) and reads it back to transpose
 * it (MobileNetV2 block by block, AVX-512: 16 -> 96 channels at 112x112
 * and the stride-2 depthwise layer 0.73 -> 0.56 ms, 96 -> 576 at 14x14
 * 0.31 -> 0.28). Other targets compute a block's planes by the matrix
 * multiply instead (nnc_pw_depthwise below). */
#define NNC_DWC 16
#define NNC_DWC_STAGE 4096    /* floats of the output staging: rows of [ow][16] */
#define NNC_DWC_RUN 96        /* input positions a ring refill takes at least */
static inline long nnc_dwc_width(int w, int pl, int ow, int sw, int kw, int dw) {
    const long need = (long)(ow - 1) * sw + (long)(kw - 1) * dw + 1, have = (long)w + pl;
    return need > have ? need : have;
}
/* the ring slot of input row `row` (negative above the input) */
static inline long nnc_dwc_slot(int row, int Kr) { return ((row % Kr) + Kr) % Kr; }
static inline int nnc_dwc_batch(int w, int h) {
    const int b = (NNC_DWC_RUN + w - 1) / w;
    return b < h ? b : h;
}
static inline int nnc_dwc_rows(int ow, int oh) {
    const int r = NNC_DWC_STAGE / (ow * NNC_DWC);
    return r < 1 ? 1 : r > oh ? oh : r;
}
#define NNC_DWC_OWN 10240     /* c.DWC_SCRATCH: the most floats of it a thread keeps on its stack (40 KiB) */
#define NNC_DWC_SCRATCH(kh, dh, h, w, pl, ow, oh, sw, kw, dw)                                          \
    ((long)NNC_DWC * (((kh) - 1) * (dh) + nnc_dwc_batch(w, h)) * nnc_dwc_width(w, pl, ow, sw, kw, dw) + \
     (long)NNC_DWC * (ow) * nnc_dwc_rows(ow, oh))

/* The 1x1 convolution (stride 1, no padding) whose output only a depthwise
 * convolution reads, computed inside it (nnc_pw_depthwise). */
typedef struct {
    const float *x;     /* its input [cin][h][w] (h, w: the depthwise convolution's input size) */
    int cin;
    const float *w;     /* weights in blocks of NNC_PWB output channels, [K][NNC_PWB] each, zeros past cout */
    const float *b;     /* bias [cout], or NULL */
    int act;            /* NNC_ACT_NONE, NNC_RELU or NNC_RELU6 */
} nnc_pw;
#define NNC_PWB 48          /* output channels of a block of nnc_pw's weights: whole 16-lane rows and MR-row tiles */

#if defined(NNC_VEC) && NNC_VL == 16 && !defined(__clang__)
#define NNC_DWC_T16 1
/* v[0:16] (rows) transposed in registers: stage k swaps bit k of the row
 * index with bit k of the column index */
#define NNC_T16_STAGE(k, m_lo, m_hi)                                                         \
    for (i = 0; i < 16; i++)                                                                 \
        if (!(i & (k))) {                                                                    \
            const nnc_vf a = v[i], b = v[i + (k)];                                          \
            v[i] = __builtin_shuffle(a, b, m_lo), v[i + (k)] = __builtin_shuffle(a, b, m_hi); \
        }
static inline void nnc_t16(nnc_vf v[16]) {
    int i;
    NNC_T16_STAGE(1, ((nnc_vi){0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}),
                  ((nnc_vi){1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}))
    NNC_T16_STAGE(2, ((nnc_vi){0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}),
                  ((nnc_vi){2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}))
    NNC_T16_STAGE(4, ((nnc_vi){0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}),
                  ((nnc_vi){4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}))
    NNC_T16_STAGE(8, ((nnc_vi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}),
                  ((nnc_vi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}))
}
#undef NNC_T16_STAGE

/* Flat positions [p0, p1) of the block's nl input planes (src[l]) into the
 * ring: position p (row p / w) goes to slot (row mod Kr), column pl + p % w,
 * lane l; lanes nl .. 15 get zeros. */
static inline void nnc_dwc_in(const float *const *src, int nl, long p0, long p1, int w, int Kr, long slot, int pl,
                              float *ring) {
    long p = p0;
    int l, col = (int)(p % w), s = (int)((p / w) % Kr);
    float *d = ring + (long)s * slot + (long)(pl + col) * NNC_DWC;
    int c;
    for (; p + 16 <= p1; p += 16) {
        nnc_vf v[16];
        for (l = 0; l < 16; l++)
            if (l < nl)
                memcpy(&v[l], src[l] + p, sizeof v[l]);
            else
                v[l] = (nnc_vf){0};
        nnc_t16(v);
        for (c = 0; c < 16; c++) {
            memcpy(d, &v[c], sizeof v[c]);
            d += NNC_DWC;
            if (++col == w) {
                col = 0;
                if (++s == Kr) s = 0;
                d = ring + (long)s * slot + (long)pl * NNC_DWC;
            }
        }
    }
    for (; p < p1; p++) {
        for (l = 0; l < NNC_DWC; l++) d[l] = l < nl ? src[l][p] : 0.0f;
        d += NNC_DWC;
        if (++col == w) {
            col = 0;
            if (++s == Kr) s = 0;
            d = ring + (long)s * slot + (long)pl * NNC_DWC;
        }
    }
}

/* Input rows [r0, r1) of the block of 16 channels from o0 into the ring,
 * computed: position q of row r is e->b + sum over k of x[k][r][q] times
 * the channels' weights of input k, clamped for e->act; NNC_PWT positions
 * of the rows' flattened run at a time (named accumulators stay in
 * registers at any optimisation level; a tile may span rows, as
 * MobileNetV2's 7- and 14-wide ones do). Lanes past the layer's channels
 * get the zero weights' 0. */
#define NNC_PWT 8
NNC_CONTRACT static inline void nnc_dwc_pw(const nnc_pw *e, int o0, int nl, int r0, int r1, int w, long hw, int Kr,
                                           long slot, int pl, float *ring) {
    const float *wb = e->w + (long)(o0 / NNC_PWB) * e->cin * NNC_PWB + o0 % NNC_PWB, *x = e->x;
    const float lo = e->act == NNC_RELU || e->act == NNC_RELU6 ? 0.0f : -INFINITY;
    const nnc_vf vlo = (nnc_vf){0} + lo, vhi = (nnc_vf){0} + (e->act == NNC_RELU6 ? 6.0f : INFINITY);
    const long p1 = (long)r1 * w;
    nnc_vf vb = {0};
    long p = (long)r0 * w;
    int l, k, col = 0, s = (int)nnc_dwc_slot(r0, Kr);
    float *d = ring + (long)s * slot + (long)pl * NNC_DWC;
    for (l = 0; l < nl; l++) vb[l] = e->b ? e->b[o0 + l] : 0.0f;
    while (p < p1) {
        nnc_vf acc[NNC_PWT];
        int n = p1 - p < NNC_PWT ? (int)(p1 - p) : NNC_PWT, t;
        if (n == NNC_PWT) {
            nnc_vf a0 = vb, a1 = vb, a2 = vb, a3 = vb, a4 = vb, a5 = vb, a6 = vb, a7 = vb;
            for (k = 0; k < e->cin; k++) {
                const nnc_vf wv = nnc_ldv(wb + (long)k * NNC_PWB);
                const float *xk = x + k * hw + p;
                a0 += xk[0] * wv, a1 += xk[1] * wv, a2 += xk[2] * wv, a3 += xk[3] * wv;
                a4 += xk[4] * wv, a5 += xk[5] * wv, a6 += xk[6] * wv, a7 += xk[7] * wv;
            }
            if (col + NNC_PWT <= w) {         /* within the row: stored from the registers */
                a0 = nnc_vclamp(a0, vlo, vhi), a1 = nnc_vclamp(a1, vlo, vhi);
                a2 = nnc_vclamp(a2, vlo, vhi), a3 = nnc_vclamp(a3, vlo, vhi);
                memcpy(d, &a0, sizeof a0), memcpy(d + NNC_DWC, &a1, sizeof a1);
                memcpy(d + 2 * NNC_DWC, &a2, sizeof a2), memcpy(d + 3 * NNC_DWC, &a3, sizeof a3);
                a4 = nnc_vclamp(a4, vlo, vhi), a5 = nnc_vclamp(a5, vlo, vhi);
                a6 = nnc_vclamp(a6, vlo, vhi), a7 = nnc_vclamp(a7, vlo, vhi);
                memcpy(d + 4 * NNC_DWC, &a4, sizeof a4), memcpy(d + 5 * NNC_DWC, &a5, sizeof a5);
                memcpy(d + 6 * NNC_DWC, &a6, sizeof a6), memcpy(d + 7 * NNC_DWC, &a7, sizeof a7);
                d += NNC_PWT * NNC_DWC, col += NNC_PWT, p += NNC_PWT;
                if (col == w) {
                    col = 0;
                    if (++s == Kr) s = 0;
                    d = ring + (long)s * slot + (long)pl * NNC_DWC;
                }
                continue;
            }
            acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3, acc[4] = a4, acc[5] = a5, acc[6] = a6, acc[7] = a7;
        } else {
            for (t = 0; t < n; t++) {
                nnc_vf a0 = vb;
                for (k = 0; k < e->cin; k++) a0 += x[k * hw + p + t] * nnc_ldv(wb + (long)k * NNC_PWB);
                acc[t] = a0;
            }
        }
        for (t = 0; t < n; t++) {
            const nnc_vf v = nnc_vclamp(acc[t], vlo, vhi);
            memcpy(d, &v, sizeof v);
            d += NNC_DWC;
            if (++col == w) {
                col = 0;
                if (++s == Kr) s = 0;
                d = ring + (long)s * slot + (long)pl * NNC_DWC;
            }
        }
        p += n;
    }
}

/* Staged outputs [n][16] to flat positions [0, n) of the nl planes dst[l]. */
static inline void nnc_dwc_out(const float *stage, long n, int nl, float *const *dst) {
    long p = 0;
    int l;
    for (; p + 16 <= n; p += 16) {
        nnc_vf v[16];
        memcpy(v, stage + p * NNC_DWC, sizeof v);
        nnc_t16(v);
        for (l = 0; l < nl; l++) memcpy(dst[l] + p, &v[l], sizeof v[l]);
    }
    for (l = 0; l < nl; l++) {
        float *d = dst[l];
        long q;
        for (q = p; q < n; q++) d[q] = stage[q * NNC_DWC + l];
    }
}

/* The ring method, of the input planes x (pre NULL) or of the 1x1 convolution pre computes. */
NNC_CONTRACT static inline void nnc_dwc_run(const nnc_conv *p, const nnc_pw *pre, const float *x, const float *w,
                                            const float *bias, float *y, int act, float alpha, float *scratch) {
    const int mult = p->cout / p->cin, taps = p->kh * p->kw, K = (p->kh - 1) * p->dh + 1;
    const int R = nnc_dwc_rows(p->ow, p->oh), L = nnc_dwc_batch(p->w, p->h), Kr = K - 1 + L;
    const long WP = nnc_dwc_width(p->w, p->pl, p->ow, p->sw, p->kw, p->dw), slot = WP * NNC_DWC;
    const long hw = (long)p->h * p->w, ohw = (long)p->oh * p->ow, st = (long)p->sw * NNC_DWC;
    const int fused = act == NNC_ACT_NONE || act == NNC_RELU || act == NNC_RELU6;
    const float lo = act == NNC_RELU || act == NNC_RELU6 ? 0.0f : -INFINITY, hi = act == NNC_RELU6 ? 6.0f : INFINITY;
    const nnc_vf vlo = (nnc_vf){0} + lo, vhi = (nnc_vf){0} + hi;     /* +-inf unless relu or relu6 */
    /* with OpenMP the blocks of NNC_DWC channels run on threads, each with a ring and stage of its own
     * on its stack (the plan's scratch holds one), when there is enough work: the taps and a fused
     * expansion's multiply-adds */
    const long work = (long)p->cout * (ohw * taps + (pre ? hw * pre->cin : 0));
    const int nnc_par = NNC_THREADS && Kr * slot + (long)R * p->ow * NNC_DWC <= NNC_DWC_OWN && work >= NNC_PAR_WORK;
    int o0;
    (void)nnc_par;                    /* read by NNC_OMP_FOR_IF only */
    /* the ring's padding columns, which no refill writes; every row a block reads it refills first */
    if (!nnc_par) memset(scratch, 0, (size_t)(Kr * slot) * sizeof *scratch);
    NNC_OMP_FOR_IF
    for (o0 = 0; o0 < p->cout; o0 += NNC_DWC) {
        const int nl = p->cout - o0 < NNC_DWC ? p->cout - o0 : NNC_DWC;
        const float *src[NNC_DWC];
        float *dst[NNC_DWC];
        nnc_vf wr[NNC_DW_TAPS], vb;
#if NNC_THREADS
        float own[NNC_DWC_OWN];
        float *ring = nnc_par ? own : scratch;
#else
        float *ring = scratch;
#endif
        float *stage = ring + Kr * slot;
        int l, t, r, r0, next = -p->pt;     /* next: the input row the ring takes next */
        if (nnc_par) memset(ring, 0, (size_t)(Kr * slot) * sizeof *ring);
        for (l = 0; l < NNC_DWC; l++) {     /* lanes past nl repeat the block's first channel */
            const int o = o0 + (l < nl ? l : 0);
            vb[l] = bias ? bias[o] : 0.0f;
            for (t = 0; t < taps; t++) wr[t][l] = w[(long)o * taps + t];
            src[l] = x ? x + (long)(o / mult) * hw : NULL;
            dst[l] = y + (long)o * ohw;
        }
        for (r0 = 0; r0 < p->oh; r0 += R) {
            const int rows = p->oh - r0 < R ? p->oh - r0 : R;
            for (r = r0; r < r0 + rows; r++) {
                const int top = r * p->sh - p->pt;
                const float *rowp[NNC_DW_TAPS];
                float *orow = stage + (long)(r - r0) * p->ow * NNC_DWC;
                int q = 0;
                /* input rows up to top + K - 1 into the ring, L at a time: padding rows zeroed, the
                 * rest transposed or computed (a refill overwrites only rows above top: Kr = K - 1 + L) */
                while (next < top + K) {
                    const int end = next + L, a = next > 0 ? next : 0, b = end < p->h ? end : p->h;
                    int z;
                    for (z = next; z < end; z++)
                        if (z < a || z >= b)
                            memset(ring + nnc_dwc_slot(z, Kr) * slot + (long)p->pl * NNC_DWC, 0,
                                   (size_t)p->w * NNC_DWC * sizeof *ring);
                    if (a < b && pre)
                        nnc_dwc_pw(pre, o0, nl, a, b, p->w, hw, Kr, slot, p->pl, ring);
                    else if (a < b)
                        nnc_dwc_in(src, nl, (long)a * p->w, (long)b * p->w, p->w, Kr, slot, p->pl, ring);
                    next = end;
                }
                for (t = 0; t < p->kh; t++) {
                    const int ih = top + t * p->dh;
                    rowp[t] = ring + nnc_dwc_slot(ih, Kr) * slot;
                }
                if (p->kh == 3 && p->kw == 3 && p->dw == 1) {
                    /* four positions at a time: independent chains of nine multiply-adds */
                    const float *a0 = rowp[0], *a1 = rowp[1], *a2 = rowp[2];
                    const nnc_vf w0 = wr[0], w1 = wr[1], w2 = wr[2], w3 = wr[3], w4 = wr[4], w5 = wr[5];
                    const nnc_vf w6 = wr[6], w7 = wr[7], w8 = wr[8];
                    long c0 = 0;
                    nnc_vf e0, e1, e2, e3;
#define NNC_DWC_POS(acc)                                                                                \
    acc = vb + w0 * nnc_ldv(a0 + c0), acc += w1 * nnc_ldv(a0 + c0 + 16), acc += w2 * nnc_ldv(a0 + c0 + 32), \
    acc += w3 * nnc_ldv(a1 + c0), acc += w4 * nnc_ldv(a1 + c0 + 16), acc += w5 * nnc_ldv(a1 + c0 + 32),      \
    acc += w6 * nnc_ldv(a2 + c0), acc += w7 * nnc_ldv(a2 + c0 + 16), acc += w8 * nnc_ldv(a2 + c0 + 32);      \
    acc = nnc_vclamp(acc, vlo, vhi);                                                                   \
    memcpy(orow + (long)q * NNC_DWC, &acc, sizeof acc), q++, c0 += st;
                    while (q + 4 <= p->ow) {
                        NNC_DWC_POS(e0)
                        NNC_DWC_POS(e1)
                        NNC_DWC_POS(e2)
                        NNC_DWC_POS(e3)
                    }
                    while (q < p->ow) {
                        NNC_DWC_POS(e0)
                    }
#undef NNC_DWC_POS
                } else {
                    for (; q < p->ow; q++) {
                        nnc_vf acc = vb;
                        int i, j;
                        for (i = 0; i < p->kh; i++)
                            for (j = 0; j < p->kw; j++)
                                acc += wr[i * p->kw + j] * nnc_ldv(rowp[i] + q * st + (long)j * p->dw * NNC_DWC);
                        acc = nnc_vclamp(acc, vlo, vhi);
                        memcpy(orow + (long)q * NNC_DWC, &acc, sizeof acc);
                    }
                }
            }
            {
                float *d[NNC_DWC];
                for (l = 0; l < nl; l++) d[l] = dst[l] + (long)r0 * p->ow;
                nnc_dwc_out(stage, (long)rows * p->ow, nl, d);
                if (!fused)
                    for (l = 0; l < nl; l++) nnc_act(d[l], (long)rows * p->ow, act, alpha);
            }
        }
    }
}
#endif

static inline void nnc_depthwise_cv(const nnc_conv *p, const float *x, const float *w, const float *bias, float *y,
                                    int act, float alpha, float *scratch) {
#if defined(NNC_DWC_T16)
    if (scratch && p->kh * p->kw <= NNC_DW_TAPS) {
        nnc_dwc_run(p, NULL, x, w, bias, y, act, alpha, scratch);
        return;
    }
#endif
    nnc_depthwise(p, x, w, bias, y, act, alpha, scratch);   /* by phase planes, or row by row without scratch */
}

/* The depthwise convolution `p` (one output channel per input channel) of
 * the 1x1 convolution `pre`: the ring method above with AVX-512 and GCC
 * (NNC_DWC_SCRATCH floats of scratch); elsewhere block by block of fb =
 * p->kc channels (16 or a multiple of NNC_PWB), the block's planes of the
 * 1x1 convolution computed whole into the scratch (fb h w floats, never more
 * than the 1x1 convolution's output the plan does not keep), its last
 * columns zero-padded after them where h w is not whole tiles, then
 * nnc_depthwise on the planes in the rest (its phase planes in bands of
 * p->nc rows; none: row by row): NNC_PW_PLANES floats and that. */
#define NNC_PW_PLANES(cout, h, w, cin, fb, tail) \
    ((long)((cout) < (fb) ? (cout) : (fb)) * (h) * (w) + ((tail) ? (long)NNC_NR_MAX * (cin) : 0))

/* One register tile of columns c[0:nr] of mr rows of the block's planes (row stride hw), their weights at
 * a (row k at a + k NNC_PWB). */
static inline void nnc_pw_tile(const nnc_pw *e, int mr, long hw, const float *a, const float *b, long ldb, float *c,
                               int nr, const float *bias) {
    const int K = e->cin;
    int k0;
    for (k0 = 0; k0 < K; k0 += NNC_KC) {
        const int kc = K - k0 < NNC_KC ? K - k0 : NNC_KC;
        nnc_micro_lda(kc, a + (long)k0 * NNC_PWB, NNC_PWB, b + k0 * ldb, ldb, c, hw, mr, nr, k0 == 0, k0 + kc >= K,
                      bias, e->act, 0.0f);
    }
}

/* planes[l] = the 1x1 convolution's output channel o0 + l, l < nl, by the
 * matrix multiply's register tile, up to MR rows at a time within a block
 * of the weights (read in place, NNC_PWB floats a row), the input read in
 * place (its full tiles over threads with OpenMP), its last columns from
 * `bp` ([K][NNC_NR], zero-padded: packed once for every block). */
static inline void nnc_pw_planes(const nnc_pw *e, int o0, int nl, long hw, float *planes, const float *bp) {
    const int K = e->cin;
    const long full = hw / NNC_NR * NNC_NR;
    long n0;
    int i, mr;
    /* a block starts at a multiple of 16 and holds 16 or a multiple of 48 channels, so no tile of 6 rows
     * crosses a block of the weights (its last tile of a 16-channel block is 4 rows) */
    for (i = 0; i < nl; i += mr) {
        const int r = o0 + i;
        const float *a = e->w + (long)(r / NNC_PWB) * K * NNC_PWB + r % NNC_PWB, *bias = e->b ? e->b + r : NULL;
        float *rows = planes + (long)i * hw;
        mr = nl - i < NNC_MR ? nl - i : NNC_MR;
        if (NNC_THREADS && (long)mr * K * full >= NNC_PAR_WORK) {     /* (else a plain copy: NNC_PAR_WORK) */
            NNC_OMP_FOR
            for (n0 = 0; n0 < full; n0 += NNC_NR) nnc_pw_tile(e, mr, hw, a, e->x + n0, hw, rows + n0, NNC_NR, bias);
        } else {
            for (n0 = 0; n0 < full; n0 += NNC_NR) nnc_pw_tile(e, mr, hw, a, e->x + n0, hw, rows + n0, NNC_NR, bias);
        }
        if (full < hw) nnc_pw_tile(e, mr, hw, a, bp, NNC_NR, rows + full, (int)(hw - full), bias);
    }
}

static inline void nnc_pw_depthwise(const nnc_conv *p, const nnc_pw *pre, const float *w, const float *bias, float *y,
                                    int act, float alpha, float *scratch) {
#if defined(NNC_DWC_T16)
    if (p->kh * p->kw <= NNC_DW_TAPS) {
        nnc_dwc_run(p, pre, NULL, w, bias, y, act, alpha, scratch);
        return;
    }
#endif
    {
        const long hw = (long)p->h * p->w, ohw = (long)p->oh * p->ow, taps = (long)p->kh * p->kw;
        const int fb = p->kc > 0 ? p->kc : NNC_DWC;    /* channels of a block */
        const long full = hw / NNC_NR * NNC_NR;
        float *planes = scratch, *bp = planes + (p->cout < fb ? p->cout : fb) * hw;
        float *rest = scratch + NNC_PW_PLANES(p->cout, p->h, p->w, pre->cin, fb, hw % NNC_NR_MAX);
        int o0, k, j;
        for (k = 0; full < hw && k < pre->cin; k++)
            for (j = 0; j < NNC_NR; j++) bp[(long)k * NNC_NR + j] = full + j < hw ? pre->x[k * hw + full + j] : 0.0f;
        for (o0 = 0; o0 < p->cout; o0 += fb) {
            nnc_conv g = *p;
            g.cin = g.cout = g.groups = p->cout - o0 < fb ? p->cout - o0 : fb;
            g.kc = 0;
            nnc_pw_planes(pre, o0, g.cout, hw, planes, bp);
            nnc_depthwise(&g, planes, w + o0 * taps, bias ? bias + o0 : NULL, y + o0 * ohw, act, alpha,
                          p->nc > 0 ? rest : NULL);
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

/* Streaming 1-d convolutions (stride 1, the only ones a streaming plan
 * has): output frame t, tap i reads input frame u = t + i dw - h, from
 * `hist` (the h = dw (kw - 1) frames before the chunk, kept time-major,
 * [h][cin], so that moving it on is one memmove) where u < 0 and from the
 * chunk x [cin][n] otherwise; h = 0 for a pointwise convolution (no
 * history). `wt` is each group's weights transposed, [g][K][M] (K =
 * cin/groups kw, row k = c kw + i; M = cout/groups); y is [cout][n].
 * Every output is bias + the sum over taps i, then channels c, of x w, in
 * that order on every path, so a frame's result does not depend on how the
 * stream was cut into chunks. */

/* The input of tap i of frame t: where channel 0 of the group starting at
 * channel c0 is, and the distance between channels. */
static inline const float *nnc_tap(const float *x, int n, const float *hist, int h, int cin, int c0, int u,
                                   long *stride) {
    if (u < 0) {
        *stride = 1;
        return hist + (long)(h + u) * cin + c0;
    }
    *stride = n;
    return x + (long)c0 * n + u;
}

#if defined(NNC_VEC)
/* NNC_VL outputs o0.. of group g at frame t, one vector (no activation). */
NNC_CONTRACT static void nnc_conv1d_frame_vec(const nnc_conv *p, const float *x, int n, const float *hist, int h,
                                              const float *wt, const float *bias, int g, int o0, int t,
                                              float *out) {
    const int M = p->cout / p->groups, cg = p->cin / p->groups, kw = p->kw;
    nnc_vf a;
    int i, c;
    if (bias) memcpy(&a, bias + (long)g * M + o0, sizeof a);
    else a = (nnc_vf){0};
    for (i = 0; i < kw; i++) {
        long s;
        const float *src = nnc_tap(x, n, hist, h, p->cin, g * cg, t + i * p->dw - h, &s);
        const float *w = wt + ((long)g * cg * kw + i) * M + o0;
        for (c = 0; c < cg; c++) a = a + nnc_ldv(w + (long)c * kw * M) * src[c * s];
    }
    memcpy(out, &a, sizeof a);
}

/* Outputs o0..o0+3 of group g at frames t0..t0+NNC_VL, every tap inside the
 * chunk: a register tile of four outputs times a vector of frames. */
NNC_CONTRACT static void nnc_conv1d_tile(const nnc_conv *p, const float *x, int n, int h, const float *wt,
                                         const float *bias, int g, int o0, int t0, float *y) {
    const int M = p->cout / p->groups, cg = p->cin / p->groups, kw = p->kw;
    const float *b = bias ? bias + (long)g * M + o0 : NULL;
    nnc_vf a0 = (nnc_vf){0} + (b ? b[0] : 0.0f), a1 = (nnc_vf){0} + (b ? b[1] : 0.0f);
    nnc_vf a2 = (nnc_vf){0} + (b ? b[2] : 0.0f), a3 = (nnc_vf){0} + (b ? b[3] : 0.0f);
    float *out = y + (long)(g * M + o0) * n + t0;
    int i, c;
    for (i = 0; i < kw; i++) {
        const float *src = x + (long)g * cg * n + t0 + i * p->dw - h;
        const float *w = wt + ((long)g * cg * kw + i) * M + o0;
        for (c = 0; c < cg; c++) {
            const nnc_vf xv = nnc_ldv(src + (long)c * n);
            const float *wc = w + (long)c * kw * M;
            a0 = a0 + xv * wc[0], a1 = a1 + xv * wc[1], a2 = a2 + xv * wc[2], a3 = a3 + xv * wc[3];
        }
    }
    memcpy(out, &a0, sizeof a0), memcpy(out + n, &a1, sizeof a1);
    memcpy(out + 2 * (long)n, &a2, sizeof a2), memcpy(out + 3 * (long)n, &a3, sizeof a3);
}
#endif

/* Outputs o0..o0+m of group g at frame t, one at a time (no activation). */
static inline void nnc_conv1d_frame_scalar(const nnc_conv *p, const float *x, int n, const float *hist, int h,
                                           const float *wt, const float *bias, int g, int o0, int m, int t,
                                           float *y) {
    const int M = p->cout / p->groups, cg = p->cin / p->groups, kw = p->kw;
    int i, c, j;
    for (j = 0; j < m; j++) {
        float a = bias ? bias[g * M + o0 + j] : 0.0f;
        for (i = 0; i < kw; i++) {
            long s;
            const float *src = nnc_tap(x, n, hist, h, p->cin, g * cg, t + i * p->dw - h, &s);
            const float *w = wt + ((long)g * cg * kw + i) * M + o0 + j;
            for (c = 0; c < cg; c++) a = NNC_FMA(src[c * s], w[(long)c * kw * M], a);
        }
        y[(long)(g * M + o0 + j) * n + t] = a;
    }
}

/* Every output at frame t. */
static inline void nnc_conv1d_frame(const nnc_conv *p, const float *x, int n, const float *hist, int h,
                                    const float *wt, const float *bias, int t, float *y) {
    const int M = p->cout / p->groups;
    int g, o0 = 0;
    for (g = 0; g < p->groups; g++) {
        o0 = 0;
#if defined(NNC_VEC)
        for (; o0 + NNC_VL <= M; o0 += NNC_VL) {
            float v[NNC_VL];
            int j;
            nnc_conv1d_frame_vec(p, x, n, hist, h, wt, bias, g, o0, t, v);
            for (j = 0; j < NNC_VL; j++) y[(long)(g * M + o0 + j) * n + t] = v[j];
        }
#endif
        if (o0 < M) nnc_conv1d_frame_scalar(p, x, n, hist, h, wt, bias, g, o0, M - o0, t, y);
    }
}

/* The convolution over a chunk x [cin][n] (n = p->w = p->ow) after the h
 * frames in `hist`, which then moves on to the last h frames of history +
 * chunk; the activation last, over all of y. */
static inline void nnc_conv1d_stream(const nnc_conv *p, const float *x, float *hist, int h, const float *wt,
                                     const float *bias, float *y, int act, float alpha) {
    const int n = p->ow, cin = p->cin;
    int t = 0, c, r;
#if defined(NNC_VEC)
    {
        /* frames h.. read the chunk only: tiles of four outputs by NNC_VL frames */
        const int M = p->cout / p->groups;
        int t0, g, o0;
        for (t = 0; t < h && t < n; t++) nnc_conv1d_frame(p, x, n, hist, h, wt, bias, t, y);
        for (t0 = t; t0 + NNC_VL <= n; t0 += NNC_VL) {
            for (g = 0; g < p->groups; g++) {
                for (o0 = 0; o0 + 4 <= M; o0 += 4) nnc_conv1d_tile(p, x, n, h, wt, bias, g, o0, t0, y);
                for (t = t0; o0 < M && t < t0 + NNC_VL; t++)
                    nnc_conv1d_frame_scalar(p, x, n, hist, h, wt, bias, g, o0, M - o0, t, y);
            }
        }
        t = t0;
    }
#endif
    for (; t < n; t++) nnc_conv1d_frame(p, x, n, hist, h, wt, bias, t, y);
    if (h > 0) {
        /* the last h frames of history + chunk, time-major */
        const int keep = n < h ? h - n : 0;
        if (keep) memmove(hist, hist + (long)n * cin, (size_t)keep * (size_t)cin * sizeof *hist);
        for (r = keep; r < h; r++)
            for (c = 0; c < cin; c++) hist[(long)r * cin + c] = x[(long)c * n + n - h + r];
    }
    if (act) nnc_act(y, (long)p->cout * n, act, alpha);
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
    /* a scalar times a vector splats it without the `+ 0` of a vector literal */
    for (k = 0; k < in; k++) {
        const float *w = wt + (long)k * ld + o0;
        const float xk = x[k];
        memcpy(&w0, w, sizeof w0), memcpy(&w1, w + NNC_VL, sizeof w1), memcpy(&w2, w + 2 * NNC_VL, sizeof w2);
        memcpy(&w3, w + 3 * NNC_VL, sizeof w3), memcpy(&w4, w + 4 * NNC_VL, sizeof w4);
        memcpy(&w5, w + 5 * NNC_VL, sizeof w5), memcpy(&w6, w + 6 * NNC_VL, sizeof w6);
        memcpy(&w7, w + 7 * NNC_VL, sizeof w7);
        a0 = a0 + w0 * xk, a1 = a1 + w1 * xk, a2 = a2 + w2 * xk, a3 = a3 + w3 * xk;
        a4 = a4 + w4 * xk, a5 = a5 + w5 * xk, a6 = a6 + w6 * xk, a7 = a7 + w7 * xk;
    }
    memcpy(out, &a0, sizeof a0), memcpy(out + NNC_VL, &a1, sizeof a1), memcpy(out + 2 * NNC_VL, &a2, sizeof a2);
    memcpy(out + 3 * NNC_VL, &a3, sizeof a3), memcpy(out + 4 * NNC_VL, &a4, sizeof a4);
    memcpy(out + 5 * NNC_VL, &a5, sizeof a5), memcpy(out + 6 * NNC_VL, &a6, sizeof a6);
    memcpy(out + 7 * NNC_VL, &a7, sizeof a7);
}
#if NNC_VL == 4
/* With 128-bit vectors (16 registers on SSE): twelve accumulators, 48
 * outputs, so that the splat and the loop's own instructions are shared by
 * more multiply-adds (without fused multiply-add, the loop is bound by
 * instruction issue). */
#define NNC_GEMV_W12 48
NNC_CONTRACT static void nnc_gemv_wide12(const float *restrict x, int in, int ld, const float *restrict wt,
                                         const float *restrict bias, int o0, float *restrict out) {
    nnc_vf a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
    int k;
    if (bias) {
        const float *b = bias + o0;
        a0 = nnc_ldv(b), a1 = nnc_ldv(b + 4), a2 = nnc_ldv(b + 8), a3 = nnc_ldv(b + 12), a4 = nnc_ldv(b + 16);
        a5 = nnc_ldv(b + 20), a6 = nnc_ldv(b + 24), a7 = nnc_ldv(b + 28), a8 = nnc_ldv(b + 32);
        a9 = nnc_ldv(b + 36), a10 = nnc_ldv(b + 40), a11 = nnc_ldv(b + 44);
    } else {
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = (nnc_vf){0};
    }
    for (k = 0; k < in; k++) {
        const float *w = wt + (long)k * ld + o0;
        const float xk = x[k];
        a0 = a0 + nnc_ldv(w) * xk, a1 = a1 + nnc_ldv(w + 4) * xk, a2 = a2 + nnc_ldv(w + 8) * xk;
        a3 = a3 + nnc_ldv(w + 12) * xk, a4 = a4 + nnc_ldv(w + 16) * xk, a5 = a5 + nnc_ldv(w + 20) * xk;
        a6 = a6 + nnc_ldv(w + 24) * xk, a7 = a7 + nnc_ldv(w + 28) * xk, a8 = a8 + nnc_ldv(w + 32) * xk;
        a9 = a9 + nnc_ldv(w + 36) * xk, a10 = a10 + nnc_ldv(w + 40) * xk, a11 = a11 + nnc_ldv(w + 44) * xk;
    }
    memcpy(out, &a0, sizeof a0), memcpy(out + 4, &a1, sizeof a1), memcpy(out + 8, &a2, sizeof a2);
    memcpy(out + 12, &a3, sizeof a3), memcpy(out + 16, &a4, sizeof a4), memcpy(out + 20, &a5, sizeof a5);
    memcpy(out + 24, &a6, sizeof a6), memcpy(out + 28, &a7, sizeof a7), memcpy(out + 32, &a8, sizeof a8);
    memcpy(out + 36, &a9, sizeof a9), memcpy(out + 40, &a10, sizeof a10), memcpy(out + 44, &a11, sizeof a11);
}
#endif
#undef NNC_DT
#define NNC_DT (8 * NNC_VL)
#define NNC_GEMV_WIDE(x, in, ld, wt, bias, o0, acc) nnc_gemv_wide(x, in, ld, wt, bias, o0, acc)
#else
#define NNC_GEMV_WIDE(x, in, ld, wt, bias, o0, acc) NNC_GEMV_TILE(NNC_DT, x, in, ld, wt, bias, o0, acc)
#endif

#if defined(NNC_VEC) && NNC_VL >= 8
/* acc[0:NNC_VB] = bias[o0:] (or 0) + x[0:in] . wt[:, o0:o0 + NNC_VB] in four
 * chains of rows (k mod 4) added pairwise at the end: in one chain every
 * multiply-add waits on the last, and a narrow layer's product (a
 * classifier's 10 outputs over 3,072 inputs) is nothing else. */
#define NNC_GEMV_NARROW 1
NNC_CONTRACT static void nnc_gemv_narrow(const float *restrict x, int in, int ld, const float *restrict wt,
                                         const float *restrict bias, int o0, float *restrict acc) {
#if NNC_VL == 16
    nnc_vf a0 = bias ? nnc_ldv(bias + o0) : (nnc_vf){0}, a1 = (nnc_vf){0}, a2 = a1, a3 = a1;
    int k;
    for (k = 0; k + 4 <= in; k += 4) {
        const float *w = wt + (long)k * ld + o0;
        a0 += x[k] * nnc_ldv(w), a1 += x[k + 1] * nnc_ldv(w + ld);
        a2 += x[k + 2] * nnc_ldv(w + 2L * ld), a3 += x[k + 3] * nnc_ldv(w + 3L * ld);
    }
    for (; k < in; k++) a0 += x[k] * nnc_ldv(wt + (long)k * ld + o0);
    a0 = (a0 + a1) + (a2 + a3);
    memcpy(acc, &a0, sizeof a0);
#else
    nnc_vf a0 = bias ? nnc_ldv(bias + o0) : (nnc_vf){0}, b0 = bias ? nnc_ldv(bias + o0 + 8) : (nnc_vf){0};
    nnc_vf a1 = (nnc_vf){0}, b1 = a1, a2 = a1, b2 = a1, a3 = a1, b3 = a1;
    int k;
    for (k = 0; k + 4 <= in; k += 4) {
        const float *w = wt + (long)k * ld + o0;
        a0 += x[k] * nnc_ldv(w), b0 += x[k] * nnc_ldv(w + 8);
        a1 += x[k + 1] * nnc_ldv(w + ld), b1 += x[k + 1] * nnc_ldv(w + ld + 8);
        a2 += x[k + 2] * nnc_ldv(w + 2L * ld), b2 += x[k + 2] * nnc_ldv(w + 2L * ld + 8);
        a3 += x[k + 3] * nnc_ldv(w + 3L * ld), b3 += x[k + 3] * nnc_ldv(w + 3L * ld + 8);
    }
    for (; k < in; k++) {
        const float *w = wt + (long)k * ld + o0;
        a0 += x[k] * nnc_ldv(w), b0 += x[k] * nnc_ldv(w + 8);
    }
    a0 = (a0 + a1) + (a2 + a3), b0 = (b0 + b1) + (b2 + b3);
    memcpy(acc, &a0, sizeof a0), memcpy(acc + 8, &b0, sizeof b0);
#endif
}
#endif

/* A matrix of NNC_GEMV_STREAM floats or more (past L2): y[0:out] = bias +
 * x[0:in] . wt, NNC_GEMV_ROWS rows of wt at a time across all the columns
 * of a run (all of them on one thread; with OpenMP, a run of 16-column
 * blocks a thread), the sums kept in y, 16 columns at a time (the last
 * partial block in `tail`). The tiled kernels below read a matrix by column
 * tiles, a short piece of every row in turn: each row of a wide matrix
 * starts a new page (4 KB for a 1,000-way classifier), where the hardware
 * prefetcher stops; here a few rows stream whole (or their run's piece), in
 * order. Each output's sum is taken as in the wide tiles (the bias, then
 * k = 0, 1, ...). ld: a multiple of 16 (columns past the last 16-column
 * block that holds an output are not computed). */
#define NNC_GEMV_STREAM (1L << 18)
#define NNC_GEMV_ROWS 8
#if defined(NNC_VEC)
/* s[0:16] += x[0:kn] . w rows (ld apart), in 16 / NNC_VL vectors */
#define NNC_ROWS_BLOCK(kn)                                                                          \
    do {                                                                                            \
        nnc_vf a0 = nnc_ldv(s), a1 = NNC_VL < 16 ? nnc_ldv(s + NNC_VL % 16) : a0;                  \
        nnc_vf a2 = NNC_VL < 8 ? nnc_ldv(s + 2 * NNC_VL % 16) : a0;                                 \
        nnc_vf a3 = NNC_VL < 8 ? nnc_ldv(s + 3 * NNC_VL % 16) : a0;                                 \
        for (j = 0; j < (kn); j++) {                                                                \
            const float xk = x[k + j], *w = wt + (long)(k + j) * ld + o;                            \
            a0 += xk * nnc_ldv(w);                                                                  \
            if (NNC_VL < 16) a1 += xk * nnc_ldv(w + NNC_VL % 16);                                   \
            if (NNC_VL < 8) a2 += xk * nnc_ldv(w + 2 * NNC_VL % 16), a3 += xk * nnc_ldv(w + 3 * NNC_VL % 16); \
        }                                                                                           \
        memcpy(s, &a0, sizeof a0);                                                                  \
        if (NNC_VL < 16) memcpy(s + NNC_VL % 16, &a1, sizeof a1);                                  \
        if (NNC_VL < 8) memcpy(s + 2 * NNC_VL % 16, &a2, sizeof a2), memcpy(s + 3 * NNC_VL % 16, &a3, sizeof a3); \
    } while (0)
#else
#define NNC_ROWS_BLOCK(kn)                                                                          \
    do {                                                                                            \
        float a[16];                                                                                \
        for (i = 0; i < 16; i++) a[i] = s[i];                                                       \
        for (j = 0; j < (kn); j++) {                                                                \
            const float xk = x[k + j], *w = wt + (long)(k + j) * ld + o;                            \
            for (i = 0; i < 16; i++) a[i] = NNC_FMA(xk, w[i], a[i]);                                \
        }                                                                                           \
        for (i = 0; i < 16; i++) s[i] = a[i];                                                       \
    } while (0)
#endif
NNC_CONTRACT static void nnc_gemv_rows_part(const float *restrict x, int in, int out, int ld,
                                            const float *restrict wt, const float *restrict bias, float *restrict y,
                                            int o0, int o1) {
    float tail[16];
    const int full = out / 16 * 16;
    int k, o, i, j;
    for (o = o0; o < o1 && o < out; o++) y[o] = bias ? bias[o] : 0.0f;
    for (i = 0; i < 16; i++) tail[i] = bias && full + i < out ? bias[full + i] : 0.0f;
    for (k = 0; k < in; k += NNC_GEMV_ROWS) {
        const int kn = in - k < NNC_GEMV_ROWS ? in - k : NNC_GEMV_ROWS;
        for (o = o0; o < o1; o += 16) {
            float *restrict s = o < full ? y + o : tail;
            if (kn == NNC_GEMV_ROWS)           /* a constant trip count: the loop unrolls */
                NNC_ROWS_BLOCK(NNC_GEMV_ROWS);
            else
                NNC_ROWS_BLOCK(kn);
        }
    }
    if (o0 <= full && full < o1)         /* the run that holds the partial block */
        for (i = 0; full + i < out; i++) y[full + i] = tail[i];
}

/* The columns in one run of 16-column blocks a thread, at least
 * NNC_ROWS_RUN blocks a run (with OpenMP; else one run of whole rows), each
 * run its rows' pieces in order. Every output's sum is taken in the same
 * order either way. */
#define NNC_ROWS_RUN 4
static void nnc_gemv_rows(const float *restrict x, int in, int out, int ld, const float *restrict wt,
                          const float *restrict bias, float *restrict y) {
    const int groups = (out + 15) / 16, nthr = (long)in * out >= NNC_PAR_WORK ? NNC_MAX_THREADS() : 1;
    const int fit = groups / NNC_ROWS_RUN > 1 ? groups / NNC_ROWS_RUN : 1, runs = fit < nthr ? fit : nthr;
    int u;
    NNC_OMP_FOR
    for (u = 0; u < runs; u++)
        nnc_gemv_rows_part(x, in, out, ld, wt, bias, y, 16 * (int)((long)groups * u / runs),
                           16 * (int)((long)groups * (u + 1) / runs));
}
#undef NNC_ROWS_BLOCK

/* y[0:out] = bias + x[0:in] W^T for one row; wt [in][ld], ld = padded(out) > 1. */
static inline void nnc_gemv(const float *restrict x, int in, int out, int ld, const float *restrict wt,
                            const float *restrict bias, float *restrict y) {
    float acc[NNC_DT > 48 ? NNC_DT : 48];
    int o0 = 0, m;
    if ((long)in * ld >= NNC_GEMV_STREAM && ld % 16 == 0 && out <= ld) {
        nnc_gemv_rows(x, in, out, ld, wt, bias, y);
        return;
    }
#if defined(NNC_GEMV_W12)
    for (; o0 + NNC_GEMV_W12 <= ld; o0 += NNC_GEMV_W12) {
        if (out - o0 >= NNC_GEMV_W12) {
            nnc_gemv_wide12(x, in, ld, wt, bias, o0, y + o0);
            continue;
        }
        nnc_gemv_wide12(x, in, ld, wt, bias, o0, acc);
        memcpy(y + o0, acc, (size_t)(out - o0) * sizeof *y);
    }
#endif
    for (; o0 + NNC_DT <= ld; o0 += NNC_DT) {
        if (out - o0 >= NNC_DT) {          /* a full tile: straight into y */
            NNC_GEMV_WIDE(x, in, ld, wt, bias, o0, y + o0);
            continue;
        }
        NNC_GEMV_WIDE(x, in, ld, wt, bias, o0, acc);
        memcpy(y + o0, acc, (size_t)(out - o0) * sizeof *y);
    }
    for (; o0 < ld; o0 += NNC_VB) {
#if defined(NNC_GEMV_NARROW)
        if (in >= 32)
            nnc_gemv_narrow(x, in, ld, wt, bias, o0, acc);
        else
#endif
            NNC_GEMV_TILE(NNC_VB, x, in, ld, wt, bias, o0, acc);
        m = out - o0 < NNC_VB ? out - o0 : NNC_VB;
        memcpy(y + o0, acc, (size_t)m * sizeof *y);
    }
}

#if defined(NNC_VEC)
/* Eight rows of y = x W^T + b at columns o0 .. o0 + NNC_VL (rows of x `in`
 * floats apart, of y `out` apart; no more than out - o0 columns stored):
 * eight accumulators, independent chains of multiply-adds that share each
 * weight vector, where one row's matrix-vector product of a narrow layer
 * (out <= 64) has one chain a tile and waits on its latency. */
NNC_CONTRACT static void nnc_dense8(const float *restrict x, int in, int out, int ld, const float *restrict wt,
                                    const float *restrict bias, int o0, float *restrict y) {
    nnc_vf a0, a1, a2, a3, a4, a5, a6, a7, w;
    const int m = out - o0 < NNC_VL ? out - o0 : NNC_VL;
    int k;
    a0 = bias ? nnc_ldv(bias + o0) : (nnc_vf){0};
    a1 = a2 = a3 = a4 = a5 = a6 = a7 = a0;
    for (k = 0; k < in; k++) {
        w = nnc_ldv(wt + (long)k * ld + o0);
        a0 = a0 + x[k] * w, a1 = a1 + x[in + k] * w, a2 = a2 + x[2 * in + k] * w, a3 = a3 + x[3 * in + k] * w;
        a4 = a4 + x[4 * in + k] * w, a5 = a5 + x[5 * in + k] * w, a6 = a6 + x[6 * in + k] * w;
        a7 = a7 + x[7 * in + k] * w;
    }
    y += o0;
    if (m == NNC_VL) {             /* a full vector: a store of constant size, not a call */
        memcpy(y, &a0, sizeof a0), memcpy(y + out, &a1, sizeof a1), memcpy(y + 2 * out, &a2, sizeof a2);
        memcpy(y + 3 * out, &a3, sizeof a3), memcpy(y + 4 * out, &a4, sizeof a4);
        memcpy(y + 5 * out, &a5, sizeof a5), memcpy(y + 6 * out, &a6, sizeof a6);
        memcpy(y + 7 * out, &a7, sizeof a7);
        return;
    }
    memcpy(y, &a0, (size_t)m * sizeof *y), memcpy(y + out, &a1, (size_t)m * sizeof *y);
    memcpy(y + 2 * out, &a2, (size_t)m * sizeof *y), memcpy(y + 3 * out, &a3, (size_t)m * sizeof *y);
    memcpy(y + 4 * out, &a4, (size_t)m * sizeof *y), memcpy(y + 5 * out, &a5, (size_t)m * sizeof *y);
    memcpy(y + 6 * out, &a6, (size_t)m * sizeof *y), memcpy(y + 7 * out, &a7, (size_t)m * sizeof *y);
}
#endif

/* y[r] = x[r] W^T + b for each of `rows` rows, then the activation; `wt` is
 * W transposed with padded rows, [in][ld] (ld = out for one output, else
 * out rounded up to NNC_VB). y must not overlap x. With vector extensions,
 * a narrow layer (out <= 64) takes its rows eight at a time (nnc_dense8). */
static inline void nnc_dense(const float *x, long rows, int in, int out, int ld, const float *wt, const float *bias,
                             float *y, int act, float alpha) {
    long r, r8 = 0;
    int k, j;
#if defined(NNC_VEC)
    if (out > 1 && out <= 64) r8 = rows / 8 * 8;
    for (r = 0; r < r8; r += 8) {
        for (j = 0; j < out; j += NNC_VL) nnc_dense8(x + r * in, in, out, ld, wt, bias, j, y + r * out);
        if (act) nnc_act(y + r * out, 8L * out, act, alpha);
    }
#endif
    for (r = r8; r < rows; r++) {
        const float *xr = x + r * in;
        float *yr = y + r * out;
        if (out == 1) {
            /* one output: a dot product, in 8 independent partial sums added
             * up pairwise (a short dependency chain: a GRU-40's output layer
             * is on the critical path of every streaming step) */
            float part[8], sum = bias ? bias[0] : 0.0f;
            for (j = 0; j < 8; j++) part[j] = 0.0f;
            k = 0;
#if defined(NNC_VEC)
            /* whole vectors first: the row is often a state a gate loop has
             * just stored in vectors (a GRU-40's hidden state), and the
             * 8-wide loop's one-float loads from inside those stores were
             * not forwarded on Zen 4 (step 178 -> 162 ns, -march=native).
             * Not a contracted function: GCC multiplies and adds apart. */
            if (in >= NNC_VL) {
                float lane[NNC_VL];
                nnc_vf acc = nnc_ldv(xr) * nnc_ldv(wt);
                for (k = NNC_VL; k + NNC_VL <= in; k += NNC_VL) acc += nnc_ldv(xr + k) * nnc_ldv(wt + k);
                memcpy(lane, &acc, sizeof acc);
                for (j = 0; j < NNC_VL; j++) part[j % 8] += lane[j];
            }
#endif
            for (; k + 8 <= in; k += 8)
                for (j = 0; j < 8; j++) part[j] = NNC_FMA(xr[k + j], wt[k + j], part[j]);
            for (; k < in; k++) sum = NNC_FMA(xr[k], wt[k], sum);
            for (j = 0; j < 4; j++) part[j] += part[j + 4];
            yr[0] = sum + ((part[0] + part[2]) + (part[1] + part[3]));
        } else {
            nnc_gemv(xr, in, out, ld, wt, bias, yr);
        }
        if (act) nnc_act(yr, out, act, alpha);
    }
}

/* The gate activations of the recurrent layers. tanh is a rational
 * function, x P(x^2) / Q(x^2) of degrees 9 and 8 on |x| clamped to 8 (the
 * coefficients fitted for nnc to the least maximum error on [0, 8]): within
 * 3.2e-7 of tanh everywhere (a few ulp near 1), |tanh| <= 1, NaN stays NaN,
 * and one division without exp; sigmoid(x) = (1 + tanh(x / 2)) / 2. Gates
 * scale bounded states, so absolute accuracy is what they need; an
 * activation as its own step keeps the exp forms and their relative
 * accuracy for tiny sigmoids. The clamp of |x| is nnc_sel, not a
 * conditional expression, which GCC's -O2 vectoriser takes for control flow. */
NNC_INLINE float nnc_gate_tanh(float x) {
    const float a = fabsf(x), c = nnc_sel(a > 8.0f, 8.0f, a), s = c * c;
    const float p = NNC_FMA(s, NNC_FMA(s, NNC_FMA(s, 1.50617474e-8f, 2.17732013e-5f), 3.56415333e-3f), 0.134381890f);
    const float q = NNC_FMA(s, NNC_FMA(s, NNC_FMA(s, NNC_FMA(s, 8.45363672e-7f, 3.39917489e-4f), 2.61360053e-2f),
                                       0.467715085f), 1.0f);
    return copysignf(c * NNC_FMA(s, p, 0.99999994f) / q, x);
}

/* The same rational with x / 2 and the halving folded into its coefficients:
 * within 1.8e-7 of sigmoid, in [0, 1]. */
NNC_INLINE float nnc_gate_sigmoid(float x) {
    const float a = fabsf(x), c = nnc_sel(a > 16.0f, 16.0f, a), s = c * c;
    const float p = NNC_FMA(s, NNC_FMA(s, NNC_FMA(s, 1.47087377e-11f, 8.50515676e-8f), 5.56898958e-5f), 8.39886814e-3f);
    const float q = NNC_FMA(s, NNC_FMA(s, NNC_FMA(s, NNC_FMA(s, 3.30220185e-9f, 5.31121077e-6f), 1.63350033e-3f),
                                       0.116928771f), 1.0f);
    return 0.5f + copysignf(c * NNC_FMA(s, p, 0.249999985f) / q, x);
}

/* The gate loops run over blocks of NNC_GB units, a multiple of the vector
 * width, then blocks of 8, with constant trip counts and no control flow
 * (they vectorise at -O2, whose cost model takes only loops that need no
 * remainder); the last H % 8 units go through one block of zero-padded
 * copies. They are functions so that `restrict` tells the compiler the gate
 * arrays and the states do not overlap, each running all its blocks, so the
 * activations' constants are set up once a step. */
#if defined(NNC_VEC) && NNC_VL >= 16
#define NNC_GB 16
#else
#define NNC_GB 8
#endif

/* `blocks` blocks of W units of a GRU step's gates: a, b point at the
 * first unit in gi and gh, whose gates r, z, n are H apart; p at the
 * previous state, o at the new one:
 * r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z),
 * n = tanh(gi_n + r gh_n), h' = n + z (h - n). */
#define NNC_GRU_UNITS(W)                                                                                    \
    for (j0 = 0; j0 < blocks * (W); j0 += (W))                                                              \
        for (j = j0; j < j0 + (W); j++) {                                                                   \
            const float r = nnc_gate_sigmoid(a[j] + b[j]), z = nnc_gate_sigmoid(a[H + j] + b[H + j]);       \
            const float n = nnc_gate_tanh(NNC_FMA(r, b[2 * H + j], a[2 * H + j]));                          \
            o[j] = NNC_FMA(z, p[j] - n, n);                                                                 \
        }

static inline void nnc_gru_block(const float *restrict a, const float *restrict b, const float *restrict p,
                                 float *restrict o, int H, int blocks) {
    int j0, j;
    NNC_GRU_UNITS(NNC_GB)
}

static inline void nnc_gru_block8(const float *restrict a, const float *restrict b, const float *restrict p,
                                  float *restrict o, int H, int blocks) {
    int j0, j;
    NNC_GRU_UNITS(8)
}

/* Copies m < 8 floats of each of `gates` rows H apart into rows of 8,
 * zero-padded: the last units of a recurrent step. */
static inline void nnc_gate_tail(const float *x, int H, int gates, int m, float *out) {
    int g;
    memset(out, 0, (size_t)gates * 8 * sizeof *out);
    for (g = 0; g < gates; g++) memcpy(out + g * 8, x + (long)g * H, (size_t)m * sizeof *out);
}

/* One GRU step's gates; gi, gh hold the gates r, z, n at 0, H, 2H. */
static inline void nnc_gru_gates(const float *restrict gi, const float *restrict gh, const float *restrict prev,
                                 float *restrict cur, int H) {
    int j0 = H / NNC_GB * NNC_GB;
    if (j0) nnc_gru_block(gi, gh, prev, cur, H, H / NNC_GB);
    if (j0 + 8 <= H) {
        nnc_gru_block8(gi + j0, gh + j0, prev + j0, cur + j0, H, 1);
        j0 += 8;
    }
    if (j0 < H) {
        float a[24], b[24], p[8], o[8];
        nnc_gate_tail(gi + j0, H, 3, H - j0, a);
        nnc_gate_tail(gh + j0, H, 3, H - j0, b);
        nnc_gate_tail(prev + j0, H, 1, H - j0, p);
        nnc_gru_block8(a, b, p, o, 8, 1);
        memcpy(cur + j0, o, (size_t)(H - j0) * sizeof *o);
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

/* `blocks` blocks of W units of an LSTM step's gates (i, f, g, o, H apart
 * from a and b); the cell state c is updated in place, o gets the new
 * hidden state. */
#define NNC_LSTM_UNITS(W)                                                                                   \
    for (j0 = 0; j0 < blocks * (W); j0 += (W))                                                              \
        for (j = j0; j < j0 + (W); j++) {                                                                   \
            const float ig = nnc_gate_sigmoid(a[j] + b[j]), fg = nnc_gate_sigmoid(a[H + j] + b[H + j]);     \
            const float gg = nnc_gate_tanh(a[2 * H + j] + b[2 * H + j]);                                    \
            const float og = nnc_gate_sigmoid(a[3 * H + j] + b[3 * H + j]);                                \
            const float cn = NNC_FMA(fg, c[j], ig * gg);                                                    \
            c[j] = cn;                                                                                      \
            o[j] = og * nnc_gate_tanh(cn);                                                                  \
        }

static inline void nnc_lstm_block(const float *restrict a, const float *restrict b, float *restrict c,
                                  float *restrict o, int H, int blocks) {
    int j0, j;
    NNC_LSTM_UNITS(NNC_GB)
}

static inline void nnc_lstm_block8(const float *restrict a, const float *restrict b, float *restrict c,
                                   float *restrict o, int H, int blocks) {
    int j0, j;
    NNC_LSTM_UNITS(8)
}

/* One LSTM step's gates (i, f, g, o at 0, H, 2H, 3H of gi and gh). */
static inline void nnc_lstm_gates(const float *restrict gi, const float *restrict gh, float *restrict c,
                                  float *restrict cur, int H) {
    int j0 = H / NNC_GB * NNC_GB;
    if (j0) nnc_lstm_block(gi, gh, c, cur, H, H / NNC_GB);
    if (j0 + 8 <= H) {
        nnc_lstm_block8(gi + j0, gh + j0, c + j0, cur + j0, H, 1);
        j0 += 8;
    }
    if (j0 < H) {
        float a[32], b[32], cc[8], o[8];
        nnc_gate_tail(gi + j0, H, 4, H - j0, a);
        nnc_gate_tail(gh + j0, H, 4, H - j0, b);
        nnc_gate_tail(c + j0, H, 1, H - j0, cc);
        nnc_lstm_block8(a, b, cc, o, 8, 1);
        memcpy(c + j0, cc, (size_t)(H - j0) * sizeof *cc);
        memcpy(cur + j0, o, (size_t)(H - j0) * sizeof *o);
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
/* The larger of a (so far) and b, in PyTorch's rule: b when it is larger or NaN, so a NaN propagates. */
static inline float nnc_max_nan(float a, float b) { return b > a || b != b ? b : a; }

static inline void nnc_pool2d(const float *x, float *y, int c, int h, int w, int oh, int ow, int kh, int kw, int sh,
                              int sw, int pt, int pl, int is_max) {
    /* row by row, one pass per tap over the output row (the taps' order
     * per output is the order of the plain loops): the loops along the
     * row have no branch and vectorise. A strided pooling first splits each
     * input row into its sw column phases (padding as -inf or zeros, which
     * leave the max or the sum as they are), so that every tap reads one
     * phase contiguously; rows too wide for the phase buffer are read in
     * place with the stride. */
    enum { ROW = 1024 };
    float ph[ROW];
    int ch, r, q, i, j;
    const float inv = 1.0f / (float)(kh * kw), pad = is_max ? -INFINITY : 0.0f;
    const int wq = ow + (kw - 1) / (sw > 0 ? sw : 1);
    if (is_max && kh == sh && kw == sw && kh >= 2 && pt == 0 && pl == 0 && (long)ow * kw == w && (long)oh * kh <= h &&
        w <= ROW) {
        /* a max over windows that tile each row (2x2 stride 2, no padding): a chunk of output rows
         * at a time, the kh rows of every window combined into ph (contiguous passes), then each run
         * of kw neighbours along the flattened chunk (w = ow * kw: no window crosses a row). Two
         * long loops a chunk, where the passes per tap below run nine short ones an output row. The
         * same values in another order: a zero's sign and a NaN's payload may differ from theirs. */
        const int R = ROW / w;
        for (ch = 0; ch < c; ch++) {
            const float *plane = x + (long)ch * h * w;
            float *out = y + (long)ch * oh * ow;
            int r0;
            for (r0 = 0; r0 < oh; r0 += R) {
                const int rows = oh - r0 < R ? oh - r0 : R;
                const long n = (long)rows * ow;
                long k;
                for (r = 0; r < rows; r++) {
                    const float *in = plane + (long)(r0 + r) * kh * w;
                    float *m = ph + (long)r * w;
                    for (q = 0; q < w; q++) {
                        const float u = in[w + q], v = in[q];
                        m[q] = nnc_max_nan(v, u);
                    }
                    for (i = 2; i < kh; i++)
                        for (q = 0; q < w; q++) {
                            const float u = in[(long)i * w + q];
                            m[q] = nnc_max_nan(m[q], u);
                        }
                }
                if (kw == 2) {
                    for (k = 0; k < n; k++) {
                        const float u = ph[2 * k + 1], v = ph[2 * k];
                        out[(long)r0 * ow + k] = nnc_max_nan(v, u);
                    }
                } else {
                    for (k = 0; k < n; k++) {
                        float v = ph[k * kw];
                        for (j = 1; j < kw; j++) {
                            const float u = ph[k * kw + j];
                            v = nnc_max_nan(v, u);
                        }
                        out[(long)r0 * ow + k] = v;
                    }
                }
            }
        }
        return;
    }
    if (sw > 1 && (long)sw * wq <= ROW) {
        for (ch = 0; ch < c; ch++) {
            const float *plane = x + (long)ch * h * w;
            float *out = y + (long)ch * oh * ow;
            for (r = 0; r < oh; r++) {
                float *row = out + (long)r * ow;
                for (q = 0; q < ow; q++) row[q] = pad;
                for (i = 0; i < kh; i++) {
                    const int ih = r * sh - pt + i;
                    const float *in;
                    int b;
                    if (ih < 0 || ih >= h) continue;
                    in = plane + (long)ih * w;
                    for (b = 0; b < sw; b++) {
                        /* phase b: ph[b*wq + xx] = in[xx*sw + b - pl], inside [lo, hi) */
                        float *d = ph + b * wq;
                        int lo = pl - b > 0 ? (pl - b + sw - 1) / sw : 0, hi = (w + pl - b + sw - 1) / sw, xx;
                        if (hi > wq) hi = wq;
                        if (lo > hi) lo = hi;
                        for (xx = 0; xx < lo; xx++) d[xx] = pad;
                        if (sw == 2)
                            for (xx = lo; xx < hi; xx++) d[xx] = in[2 * xx + b - pl];
                        else
                            for (xx = lo; xx < hi; xx++) d[xx] = in[(long)xx * sw + b - pl];
                        for (xx = hi; xx < wq; xx++) d[xx] = pad;
                    }
                    for (j = 0; j < kw; j++) {
                        const float *src = ph + (j % sw) * wq + j / sw;
                        if (is_max) {
                            for (q = 0; q < ow; q++) {
                                const float v = src[q];
                                row[q] = nnc_max_nan(row[q], v);
                            }
                        } else {
                            for (q = 0; q < ow; q++) row[q] += src[q];
                        }
                    }
                }
                if (!is_max)
                    for (q = 0; q < ow; q++) row[q] *= inv;
            }
        }
        return;
    }
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
                            row[q] = nnc_max_nan(row[q], v);
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

/* Mean over the `inner` elements of each of `c` channels, summed in double
 * in four chains (i mod 4) added pairwise: one chain waited on every
 * addition's latency (MobileNetV2's 1280 x 49: 22-24 -> 18-19 us). */
static inline void nnc_global_avgpool(const float *x, float *y, int c, long inner) {
    int ch;
    long i;
    for (ch = 0; ch < c; ch++) {
        const float *r = x + (long)ch * inner;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        /* the bound of the quads computed first: GCC 12's -O2 took `i + 4 <= inner` then `i < inner`, with
         * inner a constant multiple of 4, for a loop of 2^62 iterations (-Waggressive-loop-optimizations) */
        const long quads = inner / 4 * 4;
        for (i = 0; i < quads; i += 4) s0 += r[i], s1 += r[i + 1], s2 += r[i + 2], s3 += r[i + 3];
        for (i = quads; i < inner; i++) s0 += r[i];
        y[ch] = (float)(((s0 + s1) + (s2 + s3)) / (double)inner);
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
        double mean, var, part[8];  /* sums in 8 lanes of doubles, added pairwise: they vectorise */
        float inv;
        int j, w;
        for (j = 0; j < 8; j++) part[j] = 0.0;
        for (i = 0; i + 8 <= n; i += 8)
            for (j = 0; j < 8; j++) part[j] += xr[i + j];
        for (; i < n; i++) part[0] += xr[i];
        for (w = 4; w > 0; w /= 2)
            for (j = 0; j < w; j++) part[j] += part[j + w];
        mean = part[0] / n;
        for (j = 0; j < 8; j++) part[j] = 0.0;
        for (i = 0; i + 8 <= n; i += 8)
            for (j = 0; j < 8; j++) part[j] += (xr[i + j] - mean) * (xr[i + j] - mean);
        for (; i < n; i++) part[0] += (xr[i] - mean) * (xr[i] - mean);
        for (w = 4; w > 0; w /= 2)
            for (j = 0; j < w; j++) part[j] += part[j + w];
        var = part[0] / n;
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
