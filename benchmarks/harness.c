/* Times a generated C plan from C, with no Python in the loop.
 *
 *   cc -O3 -march=native -DPREFIX=lenet -DUPPER=LENET -DHEADER='"lenet.h"' \
 *      harness.c lenet.c -lm -o harness
 *   ./harness forward          median ns per forward pass (batch 1)
 *   ./harness step             median ns per NAME_step (one time step)
 *   ./harness stream 64        median ns per NAME_stream of 64 steps
 *
 * Used by bench.py; prints one number. The context lives on the heap here
 * (the plan itself never allocates).
 */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
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
static float *x, *y;
static int mode, chunk;
static volatile float sink;

static void once(void) {
#ifdef STREAMING
    if (mode == 1) { FN(_step)(ctx, x, y); return; }
    if (mode == 2) { FN(_stream)(ctx, x, chunk, y); return; }
#endif
    FN(_forward)(ctx, x, y);
}

int main(int argc, char **argv) {
    enum { BLOCKS = 31 };
    double times[BLOCKS], start;
    long reps = 1, i;
    int b;
    mode = argc > 1 && strcmp(argv[1], "step") == 0 ? 1 : argc > 1 && strcmp(argv[1], "stream") == 0 ? 2 : 0;
    chunk = argc > 2 ? atoi(argv[2]) : 64;
    ctx = malloc(sizeof *ctx);
    x = malloc(sizeof(float) * (SIZE(_INPUT_SIZE) + 64));
    y = malloc(sizeof(float) * (SIZE(_OUTPUT_SIZE) + 64));
    if (!ctx || !x || !y) return 1;
    FN(_init)(ctx);
    for (i = 0; i < SIZE(_INPUT_SIZE); i++) x[i] = (float)sin(0.01 * (double)i);
    /* calibrate: a block of calls lasts about 2 ms */
    for (;;) {
        start = now();
        for (i = 0; i < reps; i++) once();
        if (now() - start > 2e-3) break;
        reps *= 2;
    }
    for (b = 0; b < BLOCKS; b++) {
        start = now();
        for (i = 0; i < reps; i++) once();
        times[b] = (now() - start) / (double)reps;
    }
    qsort(times, BLOCKS, sizeof times[0], cmp);
    sink = y[0];
    printf("%.1f\n", times[BLOCKS / 2] * 1e9);
    free(ctx);
    free(x);
    free(y);
    return 0;
}
