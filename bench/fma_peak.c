/* See fma_peak.h. */
#include "fma_peak.h"

#include "ops/isa.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* 12 independent chains: enough to cover 2 FMA pipes x 4-5 cycles of latency on current x86. */
#define CHAINS(OP)                                                                                 \
    a0 = OP(a0), a1 = OP(a1), a2 = OP(a2), a3 = OP(a3), a4 = OP(a4), a5 = OP(a5), a6 = OP(a6),     \
    a7 = OP(a7), a8 = OP(a8), a9 = OP(a9), a10 = OP(a10), a11 = OP(a11)
#define DECL(T, SET)                                                                               \
    T a0 = SET(0.f), a1 = SET(1.f), a2 = SET(2.f), a3 = SET(3.f), a4 = SET(4.f), a5 = SET(5.f),    \
      a6 = SET(6.f), a7 = SET(7.f), a8 = SET(8.f), a9 = SET(9.f), a10 = SET(10.f), a11 = SET(11.f)
#define SUM(ADD)                                                                                   \
    a0 = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7))),                        \
    a8 = ADD(ADD(a8, a9), ADD(a10, a11)), a0 = ADD(a0, a8)

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static float chains_avx512(uint64_t iters)
{
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    DECL(__m512, _mm512_set1_ps);
#define F512(a) _mm512_fmadd_ps(a, m, c)
    for (uint64_t i = 0; i < iters; i++)
        CHAINS(F512);
    SUM(_mm512_add_ps);
    return _mm512_reduce_add_ps(a0);
}

__attribute__((target("avx2,fma"))) static float chains_avx2(uint64_t iters)
{
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    DECL(__m256, _mm256_set1_ps);
#define F256(a) _mm256_fmadd_ps(a, m, c)
    for (uint64_t i = 0; i < iters; i++)
        CHAINS(F256);
    SUM(_mm256_add_ps);
    return _mm256_cvtss_f32(a0);
}

static float chains_sse(uint64_t iters)
{
    const __m128 m = _mm_set1_ps(0.999999f), c = _mm_set1_ps(1e-7f);
    DECL(__m128, _mm_set1_ps);
#define F128(a) _mm_add_ps(_mm_mul_ps(a, m), c)
    for (uint64_t i = 0; i < iters; i++)
        CHAINS(F128);
    SUM(_mm_add_ps);
    return _mm_cvtss_f32(a0);
}
#endif

/* flops per iteration of one chain step (12 chains x lanes x 2) and the kernel for `isa` */
static double flops_per_iter(ss_isa isa)
{
    return 12.0 * 2.0 * (isa == SS_ISA_AVX512 ? 16 : isa == SS_ISA_AVX2 ? 8 : 4);
}

static float run_chains(ss_isa isa, uint64_t iters)
{
#if defined(__x86_64__)
    switch (isa) {
    case SS_ISA_AVX512:
        return chains_avx512(iters);
    case SS_ISA_AVX2:
        return chains_avx2(iters);
    default:
        return chains_sse(iters);
    }
#else
    (void)isa, (void)iters;
    return 0.f;
#endif
}

typedef struct {
    ss_isa isa;
    uint64_t iters;
    pthread_barrier_t *start;
    double cpu_s, t0, t1; /* thread CPU time; monotonic start and end */
    volatile float sink;
} worker;

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *worker_main(void *p)
{
    worker *w = p;
    pthread_barrier_wait(w->start);
    w->t0 = clock_s(CLOCK_MONOTONIC);
    double c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    w->sink = run_chains(w->isa, w->iters);
    w->cpu_s = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    w->t1 = clock_s(CLOCK_MONOTONIC);
    return NULL;
}

fma_peak fma_peak_measure(int threads, double seconds, int repeats)
{
    ss_isa isa = ss_isa_detect();
    fma_peak best = {.isa = isa == SS_ISA_AVX512 ? "avx512"
                            : isa == SS_ISA_AVX2 ? "avx2"
                                                 : "sse",
                     .threads = threads};
    if (threads < 1) threads = best.threads = 1;
    if (threads > 64) threads = best.threads = 64;
    /* size the run from a short calibration on this thread */
    double t0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    volatile float sink = run_chains(isa, 1000000);
    (void)sink;
    double per_iter = (clock_s(CLOCK_THREAD_CPUTIME_ID) - t0) / 1e6;
    uint64_t iters = (uint64_t)(seconds / (per_iter > 0 ? per_iter : 1e-9));
    if (iters < 1000) iters = 1000;
    double flops = flops_per_iter(isa) * (double)iters;
    for (int r = 0; r < repeats; r++) {
        worker w[64];
        pthread_t tid[64];
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
        for (int i = 0; i < threads; i++) {
            w[i] = (worker){.isa = isa, .iters = iters, .start = &start};
            pthread_create(&tid[i], NULL, worker_main, &w[i]);
        }
        pthread_barrier_wait(&start);
        for (int i = 0; i < threads; i++)
            pthread_join(tid[i], NULL);
        pthread_barrier_destroy(&start);
        /* from the first thread's start to the last one's end (the caller may wake late) */
        double first = w[0].t0, last = w[0].t1;
        for (int i = 1; i < threads; i++) {
            if (w[i].t0 < first) first = w[i].t0;
            if (w[i].t1 > last) last = w[i].t1;
        }
        double wall = last - first;
        double g_wall = flops * threads / wall * 1e-9, g_cpu = 0;
        for (int i = 0; i < threads; i++)
            g_cpu += flops / w[i].cpu_s * 1e-9;
        if (g_wall > best.gflops_wall) best.gflops_wall = g_wall;
        if (g_cpu > best.gflops_cpu) best.gflops_cpu = g_cpu;
    }
    return best;
}

/* ------------------------------------------------------------------ read bandwidth */

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static float sum_avx512(const float *a, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
        s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_load_ps(a + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_load_ps(a + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

__attribute__((target("avx2"))) static float sum_avx2(const float *a, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps(a + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(a + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(a + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(a + i + 24));
    }
    return _mm256_cvtss_f32(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}
#endif

static float sum_floats(const float *a, size_t n)
{
#if defined(__x86_64__)
    ss_isa isa = ss_isa_detect();
    if (isa == SS_ISA_AVX512) return sum_avx512(a, n);
    if (isa == SS_ISA_AVX2) return sum_avx2(a, n);
#endif
    float s[4] = {0};
    for (size_t i = 0; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++)
            s[j] += a[i + j];
    return s[0] + s[1] + s[2] + s[3];
}

typedef struct {
    const float *a;
    size_t n;
    pthread_barrier_t *start;
    double t0, t1;
    volatile float sink;
} reader;

static void *reader_main(void *p)
{
    reader *r = p;
    pthread_barrier_wait(r->start);
    r->t0 = clock_s(CLOCK_MONOTONIC);
    r->sink = sum_floats(r->a, r->n);
    r->t1 = clock_s(CLOCK_MONOTONIC);
    return NULL;
}

double read_bw_measure(int threads, size_t mib, int repeats)
{
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    size_t n = mib << 18; /* floats */
    float *a = NULL;
    if (posix_memalign((void **)&a, 64, n * sizeof(float)) != 0) return 0;
    /* touch every page before timing, with data no two pages share: a buffer of identical pages
     * (all zero, or a pattern one page long) read at 88-141 GB/s on this VM, not from DRAM */
    for (size_t i = 0; i < n; i++)
        a[i] = (float)i;
    size_t share = n / (size_t)threads / 64 * 64;
    double best = 0;
    for (int rep = 0; rep < repeats; rep++) {
        reader r[64];
        pthread_t tid[64];
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
        for (int i = 0; i < threads; i++) {
            r[i] = (reader){.a = a + (size_t)i * share, .n = share, .start = &start};
            pthread_create(&tid[i], NULL, reader_main, &r[i]);
        }
        pthread_barrier_wait(&start);
        for (int i = 0; i < threads; i++)
            pthread_join(tid[i], NULL);
        pthread_barrier_destroy(&start);
        double first = r[0].t0, last = r[0].t1;
        for (int i = 1; i < threads; i++) {
            if (r[i].t0 < first) first = r[i].t0;
            if (r[i].t1 > last) last = r[i].t1;
        }
        double gbps = (double)share * (double)threads * sizeof(float) / (last - first) * 1e-9;
        if (gbps > best) best = gbps;
    }
    free(a);
    return best;
}
