/* Times a generated C plan from C, with no Python in the loop.
 *
 *   cc -O3 -march=native -DPREFIX=lenet -DUPPER=LENET -DHEADER='"lenet.h"' \
 *      harness.c lenet.c -lm -o harness
 *   ./harness forward [B]      median ns per forward pass of B examples (default 1)
 *   ./harness step             median ns per NAME_step (one time step)
 *   ./harness stream 64        median ns per NAME_stream of 64 steps
 *
 * A plan whose input is integer (token ids) is built with -DVOCAB=N: the
 * input is int32_t, filled with ids below N. A call that returns an error
 * stops the harness (exit 2) instead of timing the error path.
 *
 * Used by bench.py; prints one number. The context and the buffers live on
 * the heap here (the plan itself never allocates); the context is aligned to
 * 64 bytes, as a vector register and a cache line: malloc's large blocks sit
 * 16 bytes past a page, which made every wide load of the arena straddle two
 * cache lines (MobileNetV2: 9.2-11.7 ms a call, 8.2-8.7 ms aligned). An optional third
 * argument is the number of timed blocks (default 31; each lasts ~2 ms).
 */
#define _POSIX_C_SOURCE 200112L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include HEADER

#define GLUE2(a, b) a##b
#define GLUE(a, b) GLUE2(a, b)
#define FN(x) GLUE(PREFIX, x)
#define SIZE(x) GLUE(UPPER, x)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static GLUE(PREFIX, _ctx) *ctx;
#ifdef VOCAB
typedef int32_t input_t;
#else
typedef float input_t;
#endif
static input_t *x;
static float *y;
static int mode, arg;
static volatile float sink;

static int once(void) {
    int b, err = 0;
#ifdef STREAMING
    if (mode == 1) return FN(_step)(ctx, x, y);
    if (mode == 2) return FN(_stream)(ctx, x, arg, y);
#endif
    for (b = 0; b < arg; b++)
        err |= FN(_forward)(ctx, x + (long)b * SIZE(_INPUT_SIZE), y + (long)b * SIZE(_OUTPUT_SIZE));
    return err;
}

int main(int argc, char **argv) {
    enum { MAX_BLOCKS = 101 };
    double times[MAX_BLOCKS], start;
    long reps = 1, i, n_in, n_out;
    int b, blocks;
    mode = argc > 1 && strcmp(argv[1], "step") == 0 ? 1 : argc > 1 && strcmp(argv[1], "stream") == 0 ? 2 : 0;
    arg = argc > 2 ? atoi(argv[2]) : (mode == 2 ? 64 : 1);
    blocks = argc > 3 ? atoi(argv[3]) : 31;
    if (arg < 1) arg = 1;
    if (blocks < 1 || blocks > MAX_BLOCKS) blocks = 31;
    n_in = (long)SIZE(_INPUT_SIZE) * arg + 64;
    n_out = (long)SIZE(_OUTPUT_SIZE) * arg + 64;
    if (posix_memalign((void **)&ctx, 64, sizeof *ctx) != 0) return 1;
    x = malloc(sizeof(input_t) * (size_t)n_in);
    y = malloc(sizeof(float) * (size_t)n_out);
    if (!ctx || !x || !y) return 1;
    FN(_init)(ctx);
#ifdef VOCAB
    for (i = 0; i < n_in; i++) x[i] = (input_t)((i * 7) % VOCAB);
#else
    for (i = 0; i < n_in; i++) x[i] = (float)sin(0.01 * (double)i);
#endif
    if (once() != 0) {
        fprintf(stderr, "harness: the plan returned an error\n");
        return 2;
    }
    /* calibrate: a block of calls lasts about 2 ms */
    for (;;) {
        start = now();
        for (i = 0; i < reps; i++) once();
        if (now() - start > 2e-3) break;
        reps *= 2;
    }
    for (b = 0; b < blocks; b++) {
        start = now();
        for (i = 0; i < reps; i++) once();
        times[b] = (now() - start) / (double)reps;
    }
    qsort(times, (size_t)blocks, sizeof times[0], cmp);
    sink = y[0];
    printf("%.1f\n", times[blocks / 2] * 1e9);
    free(ctx);
    free(x);
    free(y);
    return 0;
}
