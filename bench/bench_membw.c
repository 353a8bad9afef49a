/*
 * bench_membw: memory read bandwidth for the generative bench's floor (bench/run_generate.sh).
 * Decode of one token reads every weight once, so weight bytes / this number is the fastest a
 * token can be; measured in the same run because the machine is shared and bandwidth drifts.
 *
 *   bench_membw [MiB] [threads] [huge] -> "read_gbps X" (best of several passes over a buffer
 *                                         far larger than the caches; "huge": on 2 MiB pages,
 *                                         as packed and resident weights are)
 */
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Sum with independent accumulators so the loop is bound by loads, not by the add latency. */
static float ss_membw_pass(const float *a, size_t n)
{
    float total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (size_t i = 0; i < n; i += 16) {
        float s = 0;
        for (int k = 0; k < 16; k++)
            s += a[i + k];
        total += s;
    }
    return total;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 1024;
    if (argc > 2) omp_set_num_threads(atoi(argv[2]));
    size_t n = mib * 1024 * 1024 / sizeof(float);
    /* Every page must differ: identical pages may share one physical page on a VM (KSM) and be
     * read from the caches (a buffer of i & 7 read at 88-141 GB/s here). */
    bool huge = argc > 3 && !strcmp(argv[3], "huge");
    float *a = huge ? aligned_alloc((size_t)2 << 20, n * sizeof *a) : malloc(n * sizeof *a);
    if (a && huge) madvise(a, n * sizeof *a, MADV_HUGEPAGE); /* before the first touch */
    if (!a) return fprintf(stderr, "bench_membw: cannot allocate %zu MiB\n", mib), 1;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(uint32_t)(i * 2654435761u);
    double best = 1e30, sink = 0;
    for (int r = 0; r < 7; r++) {
        double t0 = now_s();
        sink += ss_membw_pass(a, n);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    printf("read_gbps %.3f (best of 7 passes over %zu MiB in %s pages; checksum %g)\n",
           n * sizeof *a / best / 1e9, mib, huge ? "2 MiB" : "4 KiB", sink);
    free(a);
    return 0;
}
