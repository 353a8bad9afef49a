/*
 * bench_sample: the sampler's cost per sequence per step (it runs on the worker's loop thread,
 * once for every running sequence), against a plain scalar implementation of the same
 * definitions in the same run: expf softmax, qsort for top-p, a full sort for top-k.
 *
 *   bench_sample [ROUNDS]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu_model.h"
#include "gen_sample.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ the plain baseline */

static const float *g_key;

static int by_key_desc(const void *a, const void *b)
{
    float x = g_key[*(const int *)a], y = g_key[*(const int *)b];
    return x > y ? -1 : x < y;
}

static int plain_sample(const ss_sample_params *p, ss_rng *rng, float *z, size_t n, double *pr,
                        int *order)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (z[i] > z[best]) best = i;
    if (p->temperature < 1e-5f) return (int)best;
    for (size_t i = 0; i < n; i++)
        z[i] /= p->temperature;
    for (size_t i = 0; i < n; i++)
        order[i] = (int)i;
    g_key = z;
    if (p->top_k > 0 || p->top_p < 1) qsort(order, n, sizeof *order, by_key_desc);
    size_t keep = p->top_k > 0 ? (size_t)p->top_k : n;
    double m = z[order[0]], sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += pr[i] = exp((double)(z[i] - (float)m));
    if (p->top_p < 1) {
        double acc = 0;
        for (size_t i = 0; i < keep; i++)
            if ((acc += pr[order[i]] / sum) >= p->top_p) keep = i + 1;
    }
    double total = 0;
    for (size_t i = 0; i < keep; i++)
        total += pr[order[i]];
    double u = ss_rng_uniform(rng) * total, acc = 0;
    for (size_t i = 0; i < keep; i++)
        if ((acc += pr[order[i]]) > u) return order[i];
    return order[0];
}

/* ------------------------------------------------------------------ timing */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 9;
    if (rounds < 1) rounds = 1;
    char cpu[256];
    cpu_model_name(cpu, sizeof cpu);
    printf("CPU: %s; ISA: avx512f %s, avx2 %s (the sampler's passes are cloned per ISA)\n", cpu,
           __builtin_cpu_supports("avx512f") ? "yes" : "no",
           __builtin_cpu_supports("avx2") ? "yes" : "no");
    printf(
        "| vocab | sampling | shardserve median | plain median | ratio |\n|---|---|---|---|---|\n");
    const size_t vocabs[] = {50257, 128256};
    const char *names[] = {"greedy", "temperature 1", "temperature 0.8, top_p 0.9", "top_k 50"};
    for (size_t v = 0; v < 2; v++) {
        size_t n = vocabs[v];
        float *z = malloc(n * sizeof *z), *w = malloc(n * sizeof *w);
        double *pr = malloc(n * sizeof *pr);
        int *order = malloc(n * sizeof *order);
        ss_sampler *s = NULL;
        ss_status *st = ss_sampler_new(n, &s);
        if (st || !z || !w || !pr || !order) return 1;
        ss_rng rng;
        ss_rng_seed(&rng, 1);
        for (size_t i = 0; i < n; i++) /* logits like a model's: a few large, most near 0 */
            z[i] = (float)(3.0 * log(1.0 / (1.0 - ss_rng_uniform(&rng))));
        for (int c = 0; c < 4; c++) {
            ss_sample_params p = ss_sample_defaults();
            p.temperature = c == 0 ? 0.0f : c == 2 ? 0.8f : 1.0f;
            p.top_p = c == 2 ? 0.9f : 1.0f;
            p.top_k = c == 3 ? 50 : 0;
            double ours[64], plain[64];
            int r_max = rounds < 64 ? rounds : 64, reps = 20;
            long sink = 0;
            for (int r = 0; r < r_max; r++) { /* interleaved */
                double t0 = now_s();
                for (int k = 0; k < reps; k++) /* as the token loop: the row stays */
                    sink += ss_sample_from(s, &p, &rng, z, w, NULL, 0, NULL, 0);
                ours[r] = (now_s() - t0) / reps;
                t0 = now_s();
                for (int k = 0; k < reps; k++) {
                    memcpy(w, z, n * sizeof *z);
                    sink += plain_sample(&p, &rng, w, n, pr, order);
                }
                plain[r] = (now_s() - t0) / reps;
            }
            qsort(ours, (size_t)r_max, sizeof *ours, cmp_double);
            qsort(plain, (size_t)r_max, sizeof *plain, cmp_double);
            double a = ours[r_max / 2], b = plain[r_max / 2];
            printf("| %zu | %s | %.1f us | %.1f us | %.1fx |%s\n", n, names[c], a * 1e6, b * 1e6,
                   b / a, sink == 42 ? " " : "");
        }
        ss_sampler_free(s);
        free(z), free(w), free(pr), free(order);
    }
    return 0;
}
