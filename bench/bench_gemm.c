/*
 * bench_gemm: the GEMM shape that decides the MLP benchmark (C[M,4096] = A[M,4096] x W[4096,4096],
 * four layers, W row-major as an ONNX initializer stores it), with candidate kernels side by side,
 * interleaved in one process so that a noisy neighbour hits them alike.
 *
 *   bench_gemm [--m M] [--threads T] [--rounds R] [--weights FILE [--thp]]
 *
 * Variants:
 *   openblas-sgemm   what src/runtime/ops/matmul.c does today: cblas_sgemm, which packs W on every
 * call openblas-sgemv   M == 1 only: cblas_sgemv streams W once, no packing own-inplace      an
 * AVX-512 kernel (12 x 32 register tile) that reads W where it lies, no copy own-prepacked    the
 * same kernel on W repacked once into 32-column panels (what onnxruntime does at session creation;
 * costs anonymous memory equal to the weights) The own kernels are a measured sketch for the
 * runtime's authors, not production code: they need AVX-512F (skipped otherwise), N % 32 == 0 and K
 * % 256 == 0, and split N over T pthreads.
 *
 * W is anonymous memory, or with --weights the first 4 x K x N floats of FILE mapped read-only as
 * the ONNX loader maps external data (--thp adds madvise(MADV_HUGEPAGE) before first touch).
 * Prints wall and process-CPU medians per variant, and a checksum against openblas-sgemm.
 */
#include <cblas.h>
#include <fcntl.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define N_DIM 4096
#define K_DIM 4096
#define LAYERS 4
#define MR 12  /* rows per register tile */
#define NR 32  /* columns per register tile = 2 zmm */
#define KC 256 /* k per tile pass: a 256 x 32 panel of W is 32 KiB, L1-resident */

typedef enum { V_SGEMM, V_SGEMV, V_INPLACE, V_PREPACKED, N_VARIANTS } variant;
static const char *variant_names[N_VARIANTS] = {"openblas-sgemm", "openblas-sgemv", "own-inplace",
                                                "own-prepacked"};

static double clock_s(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* C[MR x 32] (+)= Ap[kc][MR] x B[kc rows, stride ldb][32] */
__attribute__((target("avx512f"))) static void tile_12x32(const float *restrict Ap,
                                                          const float *restrict B, size_t ldb,
                                                          float *restrict C, size_t ldc, int acc)
{
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 16
    for (int m = 0; m < MR; m++) {
        c0[m] = acc ? _mm512_loadu_ps(C + m * ldc) : _mm512_setzero_ps();
        c1[m] = acc ? _mm512_loadu_ps(C + m * ldc + 16) : _mm512_setzero_ps();
    }
    for (int k = 0; k < KC; k++) {
        const float *b = B + k * ldb;
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        _mm_prefetch((const char *)(b + 16 * ldb), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + 16 * ldb + 16), _MM_HINT_T0);
        const float *a = Ap + k * MR;
#pragma GCC unroll 16
        for (int m = 0; m < MR; m++) {
            __m512 av = _mm512_set1_ps(a[m]);
            c0[m] = _mm512_fmadd_ps(av, b0, c0[m]);
            c1[m] = _mm512_fmadd_ps(av, b1, c1[m]);
        }
    }
#pragma GCC unroll 16
    for (int m = 0; m < MR; m++) {
        _mm512_storeu_ps(C + m * ldc, c0[m]);
        _mm512_storeu_ps(C + m * ldc + 16, c1[m]);
    }
}

typedef struct {
    int M, n_begin, n_end, packed;
    const float *Ap; /* A packed as [ceil(M/MR)][K][MR], zero rows past M */
    const float *W;
    float *C;
} own_job;

static void *own_worker(void *arg)
{
    const own_job *j = arg;
    int n_mb = (j->M + MR - 1) / MR;
    float tmp[MR * NR];
    for (int n0 = j->n_begin; n0 < j->n_end; n0 += NR) {
        for (int k0 = 0; k0 < K_DIM; k0 += KC) {
            const float *b = j->packed ? j->W + (size_t)n0 * K_DIM + (size_t)k0 * NR
                                       : j->W + (size_t)k0 * N_DIM + n0;
            size_t ldb = j->packed ? NR : N_DIM;
            for (int mb = 0; mb < n_mb; mb++) {
                const float *ap = j->Ap + ((size_t)mb * K_DIM + k0) * MR;
                int rows = j->M - mb * MR < MR ? j->M - mb * MR : MR;
                float *c = j->C + (size_t)mb * MR * N_DIM + n0;
                if (rows == MR) {
                    tile_12x32(ap, b, ldb, c, N_DIM, k0 > 0);
                    continue;
                }
                for (int m = 0; k0 > 0 && m < rows; m++)
                    memcpy(tmp + m * NR, c + m * N_DIM, sizeof(float) * NR);
                tile_12x32(ap, b, ldb, tmp, NR, k0 > 0);
                for (int m = 0; m < rows; m++)
                    memcpy(c + m * N_DIM, tmp + m * NR, sizeof(float) * NR);
            }
        }
    }
    return NULL;
}

static void own_gemm(int M, const float *A, const float *W, int packed, float *C, float *Ap,
                     int threads)
{
    int n_mb = (M + MR - 1) / MR;
    for (int mb = 0; mb < n_mb; mb++)
        for (int k = 0; k < K_DIM; k++)
            for (int m = 0; m < MR; m++) {
                int r = mb * MR + m;
                Ap[((size_t)mb * K_DIM + k) * MR + m] = r < M ? A[(size_t)r * K_DIM + k] : 0.0f;
            }
    own_job jobs[64];
    pthread_t tid[64];
    int panels = N_DIM / NR;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (own_job){
            M, panels * t / threads * NR, panels * (t + 1) / threads * NR, packed, Ap, W, C};
        if (t > 0) pthread_create(&tid[t], NULL, own_worker, &jobs[t]);
    }
    own_worker(&jobs[0]);
    for (int t = 1; t < threads; t++)
        pthread_join(tid[t], NULL);
}

static void layer(variant v, int M, const float *in, const float *W, const float *Wp, float *out,
                  float *Ap, int threads)
{
    switch (v) {
    case V_SGEMM:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N_DIM, K_DIM, 1.0f, in, K_DIM, W,
                    N_DIM, 0.0f, out, N_DIM);
        break;
    case V_SGEMV:
        cblas_sgemv(CblasRowMajor, CblasTrans, K_DIM, N_DIM, 1.0f, W, N_DIM, in, 1, 0.0f, out, 1);
        break;
    case V_INPLACE:
        own_gemm(M, in, W, 0, out, Ap, threads);
        break;
    case V_PREPACKED:
        own_gemm(M, in, Wp, 1, out, Ap, threads);
        break;
    default:
        break;
    }
}

int main(int argc, char **argv)
{
    int M = 32, threads = 1, rounds = 8, thp = 0;
    const char *wfile = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--m") && i + 1 < argc)
            M = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--weights") && i + 1 < argc)
            wfile = argv[++i];
        else if (!strcmp(argv[i], "--thp"))
            thp = 1;
        else {
            fprintf(
                stderr,
                "usage: bench_gemm [--m M] [--threads T] [--rounds R] [--weights FILE [--thp]]\n");
            return 2;
        }
    }
    if (M < 1 || threads < 1 || threads > 64 || rounds < 1) return 2;
    openblas_set_num_threads(threads);
    size_t wn = (size_t)LAYERS * K_DIM * N_DIM;
    float *W;
    if (wfile) {
        int fd = open(wfile, O_RDONLY);
        W = fd < 0 ? MAP_FAILED : mmap(NULL, wn * sizeof(float), PROT_READ, MAP_PRIVATE, fd, 0);
        if (W == MAP_FAILED) {
            perror(wfile);
            return 1;
        }
        if (thp) madvise(W, wn * sizeof(float), MADV_HUGEPAGE);
        close(fd);
    } else {
        W = aligned_alloc(1 << 21, wn * sizeof(float));
        if (!W) return 1;
        srand(1);
        for (size_t i = 0; i < wn; i++)
            W[i] = (float)(rand() % 17 - 8) * (1.0f / 256);
    }
    bool own_ok = __builtin_cpu_supports("avx512f");
    float *Wp = own_ok ? aligned_alloc(64, wn * sizeof(float)) : NULL; /* prepacked panels */
    for (int l = 0; Wp && l < LAYERS; l++)
        for (int n0 = 0; n0 < N_DIM; n0 += NR)
            for (int k = 0; k < K_DIM; k++)
                memcpy(Wp + (size_t)l * K_DIM * N_DIM + (size_t)n0 * K_DIM + (size_t)k * NR,
                       W + (size_t)l * K_DIM * N_DIM + (size_t)k * N_DIM + n0, sizeof(float) * NR);
    size_t act = (size_t)M * K_DIM;
    float *x = malloc(act * sizeof(float)),
          *bufs[2] = {malloc(act * sizeof(float)), malloc(act * sizeof(float))};
    float *Ap = aligned_alloc(64, (size_t)(M + MR) * K_DIM * sizeof(float));
    if (!x || !bufs[0] || !bufs[1] || !Ap) return 1;
    for (size_t i = 0; i < act; i++)
        x[i] = (float)((int)(i % 13) - 6) * 0.1f;

    bool use[N_VARIANTS] = {true, M == 1, own_ok, own_ok};
    double wall[N_VARIANTS][64], cpu[N_VARIANTS][64], sum[N_VARIANTS] = {0};
    if (rounds > 64) rounds = 64;
    for (int r = -1; r < rounds; r++) { /* round -1 warms up (and faults in a mapped file) */
        for (int v = 0; v < N_VARIANTS; v++) {
            if (!use[v]) continue;
            double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
            const float *in = x;
            for (int l = 0; l < LAYERS; l++) {
                float *out = bufs[l % 2];
                layer((variant)v, M, in, W + (size_t)l * K_DIM * N_DIM,
                      Wp ? Wp + (size_t)l * K_DIM * N_DIM : NULL, out, Ap, threads);
                for (size_t i = 0; i < (size_t)M * N_DIM; i++)
                    out[i] = out[i] > 0 ? out[i] : 0; /* Relu */
                in = out;
            }
            if (r < 0) {
                for (size_t i = 0; i < (size_t)M * N_DIM; i++)
                    sum[v] += fabs(in[i]);
                continue;
            }
            wall[v][r] = clock_s(CLOCK_MONOTONIC) - w0;
            cpu[v][r] = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
    }
    double flop = 2.0 * M * N_DIM * K_DIM * LAYERS;
    printf("M=%d threads=%d weights=%s%s openblas core=%s\n", M, threads,
           wfile ? wfile : "anonymous", thp ? " (MADV_HUGEPAGE)" : "", openblas_get_corename());
    printf("| variant | wall median | CPU median | GFLOP/s per CPU-second | checksum vs sgemm "
           "|\n|---|---|---|---|---|\n");
    for (int v = 0; v < N_VARIANTS; v++) {
        if (!use[v]) continue;
        qsort(wall[v], (size_t)rounds, sizeof(double), cmp_double);
        qsort(cpu[v], (size_t)rounds, sizeof(double), cmp_double);
        double wm = wall[v][rounds / 2], cm = cpu[v][rounds / 2];
        printf("| %s | %.2f ms | %.2f ms | %.1f | %s |\n", variant_names[v], wm * 1e3, cm * 1e3,
               flop / cm / 1e9, fabs(sum[v] - sum[0]) <= 1e-3 * sum[0] ? "ok" : "MISMATCH");
    }
    return 0;
}
