/*
 * Small-M float32 GEMM on a row-major B read in place (see gemm_kernel.h).
 *
 * Loop order per column chunk: K in blocks of KC rows; for each block, the rows of A are packed
 * (on the stack, KC x M floats) so a tile broadcasts A from one contiguous line; then every
 * 32-column panel of the chunk runs its M blocks as register tiles (AVX-512: up to 12 rows x 32
 * columns in 24 zmm accumulators; AVX2: 6 x 16 in 12 ymm). A KC x 32 panel of B (32 KiB) is
 * loaded from memory once and reused from L1 by the other M blocks; while the first M block
 * runs, the next panel's rows are prefetched. C takes alpha * partial sum after each K block
 * (it stays in L2 for M <= 64). Column tails use masked loads and stores, so any N works.
 * M == 1 on AVX-512 is a GEMV instead (gemv512): twelve rows of B per step, each read as one long
 * contiguous run, about 1.5x faster than the 1-row tile on the 4096 x 4096 MLP.
 *
 * Work is split into column chunks that the caller and the pool's workers claim with an atomic
 * counter, so a descheduled thread (a shared machine) does not hold the others up. The M == 1
 * GEMV on up to 4096 columns is split by rows of B instead (see GEMV_K_PIECES).
 */
#define _GNU_SOURCE
#include "gemm_kernel.h"

#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KC 256
#define MR512 12
#define MR256 6
#define PANEL 32         /* columns per chunk unit (and AVX-512 tile width) */
#define MAX_WORKERS 63   /* pool workers besides the caller */
#define MIN_PAR_FLOP 4e6 /* below this (~40 us of work) one thread: waking a worker costs more */

typedef struct {
    ss_gemm_variant v;
    int64_t M, N, K;
    float alpha;
    const float *A;
    int64_t lda;
    const float *B;
    int64_t ldb;
    bool acc;
    float *C;
    int64_t ldc;
    int64_t chunk_cols, n_chunks;
    int64_t next_chunk; /* claimed with __atomic_fetch_add */
    int k_pieces;       /* M == 1 GEMV split over K: pieces of B's rows (1: split over N) */
    float *partial;     /* k_pieces > 1: piece p > 0 sums into partial + (p - 1) * N */
} gemm_job;

/* ------------------------------------------------------------------ variant choice */

static ss_gemm_variant forced;
static unsigned long calls[4];

unsigned long ss_gemm_calls(ss_gemm_variant v)
{
    return (unsigned)v < 4 ? __atomic_load_n(&calls[v], __ATOMIC_RELAXED) : 0;
}

bool ss_gemm_supported(ss_gemm_variant v)
{
    switch (v) {
    case SS_GEMM_BLAS:
        return true;
    case SS_GEMM_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case SS_GEMM_AVX512:
        return __builtin_cpu_supports("avx512f");
    default:
        return false;
    }
}

ss_gemm_variant ss_gemm_pick(void)
{
    if (forced != SS_GEMM_AUTO) return forced;
    if (ss_gemm_supported(SS_GEMM_AVX512)) return SS_GEMM_AVX512;
    if (ss_gemm_supported(SS_GEMM_AVX2)) return SS_GEMM_AVX2;
    return SS_GEMM_BLAS;
}

void ss_gemm_force(ss_gemm_variant v)
{
    forced = v;
}

const char *ss_gemm_variant_name(ss_gemm_variant v)
{
    static const char *names[] = {"auto", "blas", "avx2", "avx512"};
    return (unsigned)v < 4 ? names[v] : "?";
}

/* Packs rows [r0, r0 + R) x cols [k0, k0 + kc) of A as ap[k * R + m]. */
static void pack_a(const float *restrict A, int64_t lda, int r0, int R, int64_t k0, int kc,
                   float *restrict ap)
{
    for (int m = 0; m < R; m++) {
        const float *src = A + (int64_t)(r0 + m) * lda + k0;
        for (int k = 0; k < kc; k++)
            ap[k * R + m] = src[k];
    }
}

/* M split into n blocks of near-equal size <= mr (32 rows -> 11, 11, 10 rather than 12, 12, 8). */
static int m_blocks(int M, int mr, int *start, int *rows)
{
    int nb = (M + mr - 1) / mr, base = M / nb, extra = M % nb, r = 0;
    for (int b = 0; b < nb; b++) {
        start[b] = r;
        rows[b] = base + (b < extra);
        r += rows[b];
    }
    return nb;
}

/* ------------------------------------------------------------------ AVX-512 */

#define T512 __attribute__((target("avx512f,fma")))

static inline __attribute__((always_inline)) T512 void
tile512(const int R, const bool masked, const bool pf, const float *restrict ap,
        const float *restrict b, int64_t ldb, int kc, float *restrict c, int64_t ldc, float alpha,
        bool load_c, __mmask16 m0, __mmask16 m1)
{
    __m512 x0[MR512], x1[MR512];
#pragma GCC unroll 12
    for (int m = 0; m < R; m++)
        x0[m] = x1[m] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float *bk = b + k * ldb;
        __m512 b0 = masked ? _mm512_maskz_loadu_ps(m0, bk) : _mm512_loadu_ps(bk);
        __m512 b1 = masked ? _mm512_maskz_loadu_ps(m1, bk + 16) : _mm512_loadu_ps(bk + 16);
        if (pf) {
            _mm_prefetch((const char *)(bk + 32), _MM_HINT_T0);
            _mm_prefetch((const char *)(bk + 48), _MM_HINT_T0);
        }
        const float *a = ap + k * R;
#pragma GCC unroll 12
        for (int m = 0; m < R; m++) {
            __m512 av = _mm512_set1_ps(a[m]);
            x0[m] = _mm512_fmadd_ps(av, b0, x0[m]);
            x1[m] = _mm512_fmadd_ps(av, b1, x1[m]);
        }
    }
    __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 12
    for (int m = 0; m < R; m++) {
        float *cm = c + m * ldc;
        if (masked) {
            __m512 r0 = load_c ? _mm512_fmadd_ps(x0[m], va, _mm512_maskz_loadu_ps(m0, cm))
                               : _mm512_mul_ps(x0[m], va);
            __m512 r1 = load_c ? _mm512_fmadd_ps(x1[m], va, _mm512_maskz_loadu_ps(m1, cm + 16))
                               : _mm512_mul_ps(x1[m], va);
            _mm512_mask_storeu_ps(cm, m0, r0);
            _mm512_mask_storeu_ps(cm + 16, m1, r1);
        } else {
            __m512 r0 =
                load_c ? _mm512_fmadd_ps(x0[m], va, _mm512_loadu_ps(cm)) : _mm512_mul_ps(x0[m], va);
            __m512 r1 = load_c ? _mm512_fmadd_ps(x1[m], va, _mm512_loadu_ps(cm + 16))
                               : _mm512_mul_ps(x1[m], va);
            _mm512_storeu_ps(cm, r0);
            _mm512_storeu_ps(cm + 16, r1);
        }
    }
}

#define TILE512_CASE(R)                                                                            \
    case R:                                                                                        \
        if (masked)                                                                                \
            tile512(R, true, false, ap, b, ldb, kc, c, ldc, alpha, load_c, m0, m1);                \
        else if (pf)                                                                               \
            tile512(R, false, true, ap, b, ldb, kc, c, ldc, alpha, load_c, m0, m1);                \
        else                                                                                       \
            tile512(R, false, false, ap, b, ldb, kc, c, ldc, alpha, load_c, m0, m1);               \
        break;

static T512 void tile512_any(int R, bool masked, bool pf, const float *ap, const float *b,
                             int64_t ldb, int kc, float *c, int64_t ldc, float alpha, bool load_c,
                             __mmask16 m0, __mmask16 m1)
{
    switch (R) {
        TILE512_CASE(1)
        TILE512_CASE(2)
        TILE512_CASE(3)
        TILE512_CASE(4)
        TILE512_CASE(5)
        TILE512_CASE(6)
        TILE512_CASE(7)
        TILE512_CASE(8)
        TILE512_CASE(9)
        TILE512_CASE(10)
        TILE512_CASE(11)
        TILE512_CASE(12)
    default:
        break;
    }
}

static T512 void cols512(const gemm_job *j, int64_t n0, int64_t n1)
{
    float ap[SS_GEMM_SMALL_MAX_M * KC] __attribute__((aligned(64)));
    int start[SS_GEMM_SMALL_MAX_M], rows[SS_GEMM_SMALL_MAX_M];
    int nb = m_blocks((int)j->M, MR512, start, rows);
    for (int64_t k0 = 0; k0 < j->K; k0 += KC) {
        int kc = j->K - k0 < KC ? (int)(j->K - k0) : KC;
        for (int bi = 0; bi < nb; bi++)
            pack_a(j->A, j->lda, start[bi], rows[bi], k0, kc, ap + (int64_t)start[bi] * kc);
        bool load_c = j->acc || k0 > 0;
        for (int64_t n = n0; n < n1; n += 32) {
            int w = n1 - n < 32 ? (int)(n1 - n) : 32;
            bool masked = w < 32, pf = n + 32 < n1;
            __mmask16 m0 = (__mmask16)(w >= 16 ? 0xFFFF : (1u << w) - 1);
            __mmask16 m1 = (__mmask16)(w >= 32 ? 0xFFFF : w > 16 ? (1u << (w - 16)) - 1 : 0);
            const float *b = j->B + k0 * j->ldb + n;
            for (int bi = 0; bi < nb; bi++)
                tile512_any(rows[bi], masked, pf && bi == 0, ap + (int64_t)start[bi] * kc, b,
                            j->ldb, kc, j->C + start[bi] * j->ldc + n, j->ldc, j->alpha, load_c, m0,
                            m1);
        }
    }
}

/* M == 1: a GEMV. GEMV_ROWS rows of B at a time, each read as one contiguous run over the
 * chunk's columns (long runs the hardware prefetcher follows), added into C, which stays in
 * L1/L2. Twelve rows, not four: C is loaded and stored a third as often and twelve streams are
 * in flight; measured on Zen 4 (GPT-2-124M's decode weights, 1 thread, best of 21 interleaved
 * rounds) 22 ms a token's weights at 12 rows, 24-26 at 8, 24 at 16, 27-29 at 4. Per output the
 * k order is the same whatever the rows per step, so the bits are too. */
#define GEMV_ROWS 12

/* M == 1 over threads. A part that takes a column range reads each row of B in short runs (96
 * columns when 2 threads split a 768-column matrix in 4 chunks each), which Zen 4 streams far
 * below its bandwidth. So B of up to GEMV_K_SPLIT_MAX_N columns is split by rows instead: K in
 * GEMV_K_PIECES pieces, each one contiguous range of B claimed whole, the pieces after the first
 * summed into a partial vector of their own and added to C in piece order after the call. The
 * pieces are the same for any thread count, so are the bits. Wider B (the LM head) is split by
 * columns in chunks of at least GEMV_MIN_COLS. */
#define GEMV_K_PIECES 4
#define GEMV_K_SPLIT_MAX_N 4096
#define GEMV_MIN_COLS 1024

static ss_gemv_split gemv_split;

void ss_gemm_force_gemv_split(ss_gemv_split s)
{
    gemv_split = s;
}

ss_gemv_split ss_gemm_gemv_split(void)
{
    return gemv_split;
}

static inline __attribute__((always_inline)) T512 __mmask16 mask16(int64_t cnt)
{
    return (__mmask16)(cnt >= 16 ? 0xFFFF : cnt > 0 ? (1u << cnt) - 1 : 0);
}

/* c[n0, n1) (+)= alpha * a[k .. k+R) x rows k .. k+R of B (c = when init). */
static inline __attribute__((always_inline)) T512 void
gemv512_rows(const gemm_job *j, int64_t k, const int R, float *c, bool init, int64_t n0, int64_t n1)
{
    const float *b = j->B + k * j->ldb;
    int64_t ldb = j->ldb;
    __m512 a[GEMV_ROWS];
    for (int r = 0; r < R; r++)
        a[r] = _mm512_set1_ps(j->alpha * j->A[k + r]);
    int64_t n = n0;
    for (; n + 16 <= n1; n += 16) {
        __m512 x = init ? _mm512_setzero_ps() : _mm512_loadu_ps(c + n);
        for (int r = 0; r < R; r++)
            x = _mm512_fmadd_ps(a[r], _mm512_loadu_ps(b + r * ldb + n), x);
        _mm512_storeu_ps(c + n, x);
    }
    if (n < n1) {
        __mmask16 m = mask16(n1 - n);
        __m512 x = init ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, c + n);
        for (int r = 0; r < R; r++)
            x = _mm512_fmadd_ps(a[r], _mm512_maskz_loadu_ps(m, b + r * ldb + n), x);
        _mm512_mask_storeu_ps(c + n, m, x);
    }
}

/* c[n0, n1) (+)= rows k0 .. k1 of B (k1 > k0) times a[k0 .. k1). */
static T512 void gemv512(const gemm_job *j, int64_t k0, int64_t k1, float *c, bool init, int64_t n0,
                         int64_t n1)
{
    int64_t k = k0;
    for (; k + GEMV_ROWS <= k1; k += GEMV_ROWS, init = false)
        gemv512_rows(j, k, GEMV_ROWS, c, init, n0, n1);
    for (; k + 4 <= k1; k += 4, init = false)
        gemv512_rows(j, k, 4, c, init, n0, n1);
    for (; k < k1; k++, init = false)
        gemv512_rows(j, k, 1, c, init, n0, n1);
}

/* First row of K piece p of the GEMV (a multiple of GEMV_ROWS but for the end). */
static int64_t piece_row(const gemm_job *j, int64_t p)
{
    return p >= j->k_pieces ? j->K : j->K * p / j->k_pieces / GEMV_ROWS * GEMV_ROWS;
}

/* Column chunk c of the GEMV: every column of K piece c, or the columns of chunk c. */
static T512 void gemv512_chunk(const gemm_job *j, int64_t c)
{
    if (j->k_pieces > 1) {
        float *out = c == 0 ? j->C : j->partial + (c - 1) * j->N;
        gemv512(j, piece_row(j, c), piece_row(j, c + 1), out, c > 0 || !j->acc, 0, j->N);
        return;
    }
    int64_t n0 = c * j->chunk_cols, n1 = n0 + j->chunk_cols < j->N ? n0 + j->chunk_cols : j->N;
    gemv512(j, 0, j->K, j->C, !j->acc, n0, n1);
}

/* ------------------------------------------------------------------ AVX2 + FMA */

#define T256 __attribute__((target("avx2,fma")))

static inline __attribute__((always_inline)) T256 void
tile256(const int R, const bool masked, const bool pf, const float *restrict ap,
        const float *restrict b, int64_t ldb, int kc, float *restrict c, int64_t ldc, float alpha,
        bool load_c, __m256i m0, __m256i m1)
{
    __m256 x0[MR256], x1[MR256];
#pragma GCC unroll 6
    for (int m = 0; m < R; m++)
        x0[m] = x1[m] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float *bk = b + k * ldb;
        __m256 b0 = masked ? _mm256_maskload_ps(bk, m0) : _mm256_loadu_ps(bk);
        __m256 b1 = masked ? _mm256_maskload_ps(bk + 8, m1) : _mm256_loadu_ps(bk + 8);
        if (pf) _mm_prefetch((const char *)(bk + 16), _MM_HINT_T0);
        const float *a = ap + k * R;
#pragma GCC unroll 6
        for (int m = 0; m < R; m++) {
            __m256 av = _mm256_broadcast_ss(a + m);
            x0[m] = _mm256_fmadd_ps(av, b0, x0[m]);
            x1[m] = _mm256_fmadd_ps(av, b1, x1[m]);
        }
    }
    __m256 va = _mm256_set1_ps(alpha);
#pragma GCC unroll 6
    for (int m = 0; m < R; m++) {
        float *cm = c + m * ldc;
        if (masked) {
            __m256 r0 = load_c ? _mm256_fmadd_ps(x0[m], va, _mm256_maskload_ps(cm, m0))
                               : _mm256_mul_ps(x0[m], va);
            __m256 r1 = load_c ? _mm256_fmadd_ps(x1[m], va, _mm256_maskload_ps(cm + 8, m1))
                               : _mm256_mul_ps(x1[m], va);
            _mm256_maskstore_ps(cm, m0, r0);
            _mm256_maskstore_ps(cm + 8, m1, r1);
        } else {
            __m256 r0 =
                load_c ? _mm256_fmadd_ps(x0[m], va, _mm256_loadu_ps(cm)) : _mm256_mul_ps(x0[m], va);
            __m256 r1 = load_c ? _mm256_fmadd_ps(x1[m], va, _mm256_loadu_ps(cm + 8))
                               : _mm256_mul_ps(x1[m], va);
            _mm256_storeu_ps(cm, r0);
            _mm256_storeu_ps(cm + 8, r1);
        }
    }
}

#define TILE256_CASE(R)                                                                            \
    case R:                                                                                        \
        if (masked)                                                                                \
            tile256(R, true, false, ap, b, ldb, kc, c, ldc, alpha, load_c, m0, m1);                \
        else if (pf)                                                                               \
            tile256(R, false, true, ap, b, ldb, kc, c, ldc, alpha, load_c, m0, m1);                \
        else                                                                                       \
            tile256(R, false, false, ap, b, ldb, kc, c, ldc, alpha, load_c, m0, m1);               \
        break;

static T256 void tile256_any(int R, bool masked, bool pf, const float *ap, const float *b,
                             int64_t ldb, int kc, float *c, int64_t ldc, float alpha, bool load_c,
                             __m256i m0, __m256i m1)
{
    switch (R) {
        TILE256_CASE(1)
        TILE256_CASE(2)
        TILE256_CASE(3)
        TILE256_CASE(4)
        TILE256_CASE(5)
        TILE256_CASE(6)
    default:
        break;
    }
}

static T256 void cols256(const gemm_job *j, int64_t n0, int64_t n1)
{
    float ap[SS_GEMM_SMALL_MAX_M * KC] __attribute__((aligned(32)));
    int start[SS_GEMM_SMALL_MAX_M], rows[SS_GEMM_SMALL_MAX_M];
    int nb = m_blocks((int)j->M, MR256, start, rows);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t k0 = 0; k0 < j->K; k0 += KC) {
        int kc = j->K - k0 < KC ? (int)(j->K - k0) : KC;
        for (int bi = 0; bi < nb; bi++)
            pack_a(j->A, j->lda, start[bi], rows[bi], k0, kc, ap + (int64_t)start[bi] * kc);
        bool load_c = j->acc || k0 > 0;
        for (int64_t n = n0; n < n1; n += 16) {
            int w = n1 - n < 16 ? (int)(n1 - n) : 16;
            bool masked = w < 16, pf = n + 16 < n1;
            __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(w), lane);
            __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(w - 8), lane);
            const float *b = j->B + k0 * j->ldb + n;
            for (int bi = 0; bi < nb; bi++)
                tile256_any(rows[bi], masked, pf && bi == 0, ap + (int64_t)start[bi] * kc, b,
                            j->ldb, kc, j->C + start[bi] * j->ldc + n, j->ldc, j->alpha, load_c, m0,
                            m1);
        }
    }
}

/* ------------------------------------------------------------------ work split and pool */

/* Claims column chunks until none is left. */
static void run_chunks(gemm_job *j)
{
    for (;;) {
        int64_t c = __atomic_fetch_add(&j->next_chunk, 1, __ATOMIC_RELAXED);
        if (c >= j->n_chunks) return;
        if (j->v == SS_GEMM_AVX512 && j->M == 1) {
            gemv512_chunk(j, c);
            continue;
        }
        int64_t n0 = c * j->chunk_cols, n1 = n0 + j->chunk_cols < j->N ? n0 + j->chunk_cols : j->N;
        if (j->v == SS_GEMM_AVX512)
            cols512(j, n0, n1);
        else
            cols256(j, n0, n1);
    }
}

/* The pool is libgomp's, the OpenMP runtime oneDNN runs on: one team of threads for every op, so
 * no second set of workers waits for a core the other's need, and while libgomp's workers spin
 * after a region (its wait policy) the next op, ours or oneDNN's, starts on them at once.
 * SHARDSERVE_POOL=own selects this file's own pthread pool instead (for same-binary comparisons).
 * libgomp's ABI (what `#pragma omp parallel` compiles to) is called directly: no -fopenmp, so gcc
 * and clang builds alike use the one runtime oneDNN is linked with. */
extern void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);

typedef struct {
    ss_pool_fn fn;
    void *ctx;
} omp_task;

static void omp_part(void *arg)
{
    const omp_task *t = arg;
    t->fn(t->ctx, omp_get_thread_num(), omp_get_num_threads());
}

static int pool_kind = -1; /* 1: libgomp's team, 0: the own pool */
static bool omp_busy;      /* a call holds the team */

bool ss_pool_is_openmp(void)
{
    int k = __atomic_load_n(&pool_kind, __ATOMIC_RELAXED);
    if (k < 0) {
        const char *e = getenv("SHARDSERVE_POOL");
        k = !(e && strcmp(e, "own") == 0);
        __atomic_store_n(&pool_kind, k, __ATOMIC_RELAXED);
    }
    return k == 1;
}

/* Like the own pool: parts on the calling thread and parts - 1 of the team, or the caller alone
 * when another call holds the team. */
static void omp_run(int parts, ss_pool_fn fn, void *ctx)
{
    if (parts <= 1 || __atomic_exchange_n(&omp_busy, true, __ATOMIC_ACQUIRE)) {
        fn(ctx, 0, 1);
        return;
    }
    omp_task t = {fn, ctx};
    GOMP_parallel(omp_part, &t, (unsigned)parts, 0);
    __atomic_store_n(&omp_busy, false, __ATOMIC_RELEASE);
}

static struct {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;  /* gen changed */
    pthread_cond_t done;  /* a part that was taken finished, or a worker started */
    pthread_mutex_t busy; /* held by the call that owns the workers */
    int n_workers, started, parts, taken, finished; /* taken/finished: parts of this task */
    unsigned gen;
    ss_pool_fn fn; /* the task: fn(ctx, part, parts) on each part */
    void *ctx;
    bool atfork;
} pool = {PTHREAD_MUTEX_INITIALIZER,
          PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER,
          0,
          0,
          0,
          0,
          0,
          0,
          NULL,
          NULL,
          false};

/* How long an idle worker, and a caller waiting for its workers, poll before sleeping on the
 * condition variable (SHARDSERVE_POOL_SPIN_US; default 0: sleep at once). A sleeping worker took
 * ~30 us to start on a task on this 2-vCPU VM (bench_kernels --decode's hand-off line), as long
 * as half of a 768 x 768 float32 GEMV, and a decode step hands out 49 GEMVs with small ops
 * between them: polling 50 us took 14-34% off a step's bf16 GEMVs in bench_kernels --decode
 * (sum of each matrix's best call; float32 6% faster in one run, 12% slower in another), but on the
 * shared, loaded machine the bf16 single stream got slower with it and took more CPU (gen_greedy,
 * interleaved A/B, bench/RESULTS.md issue 15), so it is off unless asked for. */
#define POOL_SPIN_US 0
static int spin_us = POOL_SPIN_US;

void ss_pool_set_spin_us(int us)
{
    spin_us = us < 0 ? POOL_SPIN_US : us;
}

int ss_pool_spin_us(void)
{
    return __atomic_load_n(&spin_us, __ATOMIC_RELAXED);
}

static double mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* Polls until *v != old (want_change) or *v >= old (!want_change) or spin_us pass; unlocked.
 * (Yielding between bursts of polling was tried: on a loaded machine the yielded worker then
 * waited for a time slice and took its piece in ~2% of hand-offs, against ~40% sleeping.) */
static void spin_wait(const unsigned *v, unsigned old, bool want_change)
{
    int budget = __atomic_load_n(&spin_us, __ATOMIC_RELAXED);
    if (budget <= 0) return;
    double end = mono_us() + budget;
    for (unsigned i = 1;; i++) {
        unsigned x = __atomic_load_n(v, __ATOMIC_ACQUIRE);
        if (want_change ? x != old : x >= old) return;
#if defined(__x86_64__)
        _mm_pause();
#endif
        if (i % 64 == 0 && mono_us() > end) return;
    }
}

static void *worker_main(void *arg)
{
    int idx = (int)(intptr_t)arg; /* part index, 1-based (the caller is part 0) */
    pthread_mutex_lock(&pool.lock);
    unsigned seen = pool.gen;
    pool.started++;
    pthread_cond_broadcast(&pool.done);
    for (;;) {
        if (pool.gen == seen) {
            pthread_mutex_unlock(&pool.lock);
            spin_wait(&pool.gen, seen, true);
            pthread_mutex_lock(&pool.lock);
        }
        while (pool.gen == seen)
            pthread_cond_wait(&pool.wake, &pool.lock);
        seen = pool.gen;
        /* not needed this time, or woken after the caller closed the task */
        if (idx >= pool.parts) continue;
        ss_pool_fn fn = pool.fn;
        void *ctx = pool.ctx;
        int parts = pool.parts;
        pool.taken++;
        pthread_mutex_unlock(&pool.lock);
        fn(ctx, idx, parts);
        pthread_mutex_lock(&pool.lock);
        __atomic_add_fetch(&pool.finished, 1, __ATOMIC_RELEASE);
        pthread_cond_signal(&pool.done);
    }
    return NULL;
}

/* A forked child has no workers: start over (the parent's workers stay the parent's). */
static void pool_atfork_child(void)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pool.lock = m;
    pool.busy = m;
    pool.wake = c;
    pool.done = c;
    pool.n_workers = pool.started = pool.parts = pool.taken = pool.finished = 0;
    pool.fn = NULL;
    pool.ctx = NULL;
}

int ss_gemm_pool_reserve(int threads)
{
    static bool env_read;
    if (!__atomic_exchange_n(&env_read, true, __ATOMIC_RELAXED)) {
        const char *e = getenv("SHARDSERVE_POOL_SPIN_US"); /* the poll's budget; 0: none */
        if (e && *e) ss_pool_set_spin_us(atoi(e) > 100000 ? 100000 : atoi(e));
    }
    if (threads > MAX_WORKERS + 1) threads = MAX_WORKERS + 1;
    if (ss_pool_is_openmp()) return threads < 1 ? 1 : threads; /* libgomp starts its team */
    pthread_mutex_lock(&pool.busy); /* no call runs while workers are added */
    pthread_mutex_lock(&pool.lock);
    if (!pool.atfork) pool.atfork = pthread_atfork(NULL, NULL, pool_atfork_child) == 0;
    sigset_t all, old;
    sigfillset(&all);
    /* a fault a worker causes is its own: blocked, the kernel would kill the process without
     * running the handler (shm_guard's SIGBUS handler for a client's shrunk memory) */
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* workers inherit it: no signal lands on them */
    while (pool.n_workers < threads - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)(pool.n_workers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pool.n_workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    while (pool.started < pool.n_workers)
        pthread_cond_wait(&pool.done, &pool.lock);
    int n = pool.n_workers + 1;
    pthread_mutex_unlock(&pool.lock);
    pthread_mutex_unlock(&pool.busy);
    return n;
}

static void blas_gemm(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, bool acc, float *C, int64_t ldc)
{
    if (M == 1) {
        /* beta = 0 is not trusted to clear NaN garbage in every OpenBLAS version */
        if (!acc) memset(C, 0, sizeof(float) * (size_t)N);
        cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)K, (blasint)N, alpha, B, (blasint)ldb, A, 1,
                    1.0f, C, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)M, (blasint)N, (blasint)K,
                alpha, A, (blasint)lda, B, (blasint)ldb, acc ? 1.0f : 0.0f, C, (blasint)ldc);
}

static void tiles(ss_gemm_variant v, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, bool acc, float *C, int64_t ldc,
                  int threads);

/* Narrow B (at most NARROW_N columns: a rank's slice of a projection split over many ranks, a
 * classifier's last layer): each output is a dot of A's row and B's column, 16 k at a time, with
 * B's columns first copied out as rows (K padded to 16 with zeros). The tile kernels' 32-column
 * tiles would be 2/32 used at N = 2 (128 x 96 x 2: 7 us, the seed example's shard on each of its
 * 8 ranks). One thread, as the tiles would be: so narrow a B is one column chunk, one part. */
#define NARROW_N 8
#define NARROW_MAX_KN 8192

static bool narrow_case(ss_gemm_variant v, int64_t M, int64_t N, int64_t K)
{
    return v == SS_GEMM_AVX512 && M > 1 && N <= NARROW_N && (K + 15) / 16 * 16 * N <= NARROW_MAX_KN;
}

static T512 void narrow512(int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                           int64_t lda, const float *B, int64_t ldb, bool acc, float *C,
                           int64_t ldc)
{
    float bt[NARROW_MAX_KN] __attribute__((aligned(64)));
    int64_t Kp = (K + 15) / 16 * 16;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < K; k++)
            bt[n * Kp + k] = B[k * ldb + n];
        for (int64_t k = K; k < Kp; k++)
            bt[n * Kp + k] = 0.0f;
    }
    __mmask16 tail = mask16(K % 16 ? K % 16 : 16);
    for (int64_t m = 0; m < M; m++) {
        const float *a = A + m * lda;
        __m512 s[NARROW_N];
        for (int n = 0; n < NARROW_N; n++)
            s[n] = _mm512_setzero_ps();
        for (int64_t k0 = 0; k0 < Kp; k0 += 16) {
            __m512 x = k0 + 16 <= K ? _mm512_loadu_ps(a + k0) : _mm512_maskz_loadu_ps(tail, a + k0);
            for (int n = 0; n < NARROW_N; n++)
                if (n < N) s[n] = _mm512_fmadd_ps(x, _mm512_load_ps(bt + n * Kp + k0), s[n]);
        }
        for (int n = 0; n < NARROW_N; n++)
            if (n < N) {
                float v = alpha * _mm512_reduce_add_ps(s[n]);
                C[m * ldc + n] = acc ? C[m * ldc + n] + v : v;
            }
    }
}

void ss_gemm_small(ss_gemm_variant v, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, bool acc, float *C, int64_t ldc,
                   int threads)
{
    if (M <= 0 || N <= 0) return;
    if (v == SS_GEMM_AUTO) v = ss_gemm_pick();
    if (K == 0 || v == SS_GEMM_BLAS || !ss_gemm_supported(v)) {
        __atomic_add_fetch(&calls[SS_GEMM_BLAS], 1, __ATOMIC_RELAXED);
        if (K == 0) {
            if (!acc)
                for (int64_t i = 0; i < M; i++)
                    memset(C + i * ldc, 0, sizeof(float) * (size_t)N);
            return;
        }
        blas_gemm(M, N, K, alpha, A, lda, B, ldb, acc, C, ldc);
        return;
    }
    __atomic_add_fetch(&calls[v], 1, __ATOMIC_RELAXED);
    if (narrow_case(v, M, N, K)) {
        narrow512(M, N, K, alpha, A, lda, B, ldb, acc, C, ldc);
        return;
    }
    /* passes of at most 64 rows, of near-equal size (65 -> 33 + 32, not 64 + a GEMV) */
    int64_t passes = (M + SS_GEMM_SMALL_MAX_M - 1) / SS_GEMM_SMALL_MAX_M;
    for (int64_t p = 0, r0 = 0; p < passes; p++) {
        int64_t r1 = M * (p + 1) / passes;
        tiles(v, r1 - r0, N, K, alpha, A + r0 * lda, lda, B, ldb, acc, C + r0 * ldc, ldc, threads);
        r0 = r1;
    }
}

/* A part of a GEMM: claims column chunks until none is left (the part index does not matter). */
static void gemm_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    run_chunks(ctx);
}

/* One pass: M <= SS_GEMM_SMALL_MAX_M rows on the tile kernels, over the pool. */
static void tiles(ss_gemm_variant v, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, bool acc, float *C, int64_t ldc,
                  int threads)
{
    gemm_job j = {v, M, N, K, alpha, A, lda, B, ldb, acc, C, ldc, 0, 0, 0, 1, NULL};
    int64_t panels = (N + PANEL - 1) / PANEL;
    int parts = threads < 1 ? 1 : threads;
    if (2.0 * (double)M * (double)N * (double)K < MIN_PAR_FLOP) parts = 1;
    if (v == SS_GEMM_AVX512 && M == 1 && gemv_split != SS_GEMV_SPLIT_LEGACY) {
        /* K pieces whatever the threads (the bits do not depend on them), summed in order */
        float partial[(GEMV_K_PIECES - 1) * GEMV_K_SPLIT_MAX_N];
        if (gemv_split == SS_GEMV_SPLIT_DEFAULT && N <= GEMV_K_SPLIT_MAX_N &&
            K >= GEMV_K_PIECES * GEMV_ROWS) {
            j.k_pieces = GEMV_K_PIECES;
            j.partial = partial;
            j.n_chunks = GEMV_K_PIECES;
            ss_pool_run(parts, gemm_part, &j);
            for (int p = 1; p < GEMV_K_PIECES; p++) {
                const float *x = partial + (p - 1) * N;
                for (int64_t n = 0; n < N; n++)
                    C[n] += x[n];
            }
            return;
        }
        /* else long contiguous runs of columns: about 4 chunks per part, of >= GEMV_MIN_COLS */
        int64_t cols = (N + 4 * parts - 1) / (4 * parts);
        if (cols < GEMV_MIN_COLS) cols = (N + parts - 1) / parts;
        j.chunk_cols = (cols + 15) / 16 * 16;
        j.n_chunks = (N + j.chunk_cols - 1) / j.chunk_cols;
        ss_pool_run(parts, gemm_part, &j);
        return;
    }
    if (parts > panels) parts = (int)panels;
    /* about 4 chunks per part, so a late thread leaves its share to the others */
    int64_t per = parts == 1 ? panels : (panels + 4 * parts - 1) / (4 * parts);
    j.chunk_cols = per * PANEL;
    j.n_chunks = (N + j.chunk_cols - 1) / j.chunk_cols;
    ss_pool_run(parts, gemm_part, &j);
}

/* Takes the workers for up to `parts` parts; returns the parts granted (> 1: this call holds
 * pool.busy until it is done). Another call owning the workers gets 1: it runs alone instead of
 * waiting. */
static int pool_acquire(int parts)
{
    if (parts <= 1 || pthread_mutex_trylock(&pool.busy) != 0) return 1;
    int granted = parts > pool.n_workers + 1 ? pool.n_workers + 1 : parts; /* n_workers: busy */
    if (granted <= 1) pthread_mutex_unlock(&pool.busy);
    return granted;
}

typedef struct {
    ss_pool_fn fn;
    void *ctx;
    int parts, next; /* next: the next share not yet claimed */
} split_job;

static void split_part(void *arg, int part, int parts)
{
    split_job *j = arg;
    (void)part, (void)parts;
    for (int i; (i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < j->parts;)
        j->fn(j->ctx, i, j->parts);
}

void ss_pool_run_split(int parts, ss_pool_fn fn, void *ctx)
{
    split_job j = {fn, ctx, parts < 1 ? 1 : parts, 0};
    ss_pool_run(j.parts, split_part, &j);
}

void ss_pool_run(int parts, ss_pool_fn fn, void *ctx)
{
    if (ss_pool_is_openmp()) {
        omp_run(parts, fn, ctx);
        return;
    }
    parts = pool_acquire(parts);
    if (parts <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool.lock);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.parts = parts;
    pool.taken = pool.finished = 0;
    __atomic_add_fetch(&pool.gen, 1, __ATOMIC_RELEASE); /* workers poll it unlocked */
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    fn(ctx, 0, parts); /* returns when every piece of work has been claimed */
    pthread_mutex_lock(&pool.lock);
    /* Close the task: a worker not yet scheduled (a busy machine) skips it instead of being
     * waited for; only the parts already taken are, as they may still be working. */
    pool.parts = 0;
    if (pool.finished < pool.taken) { /* taken stays: no worker takes a closed task */
        unsigned taken = (unsigned)pool.taken;
        pthread_mutex_unlock(&pool.lock);
        spin_wait((const unsigned *)&pool.finished, taken, false);
        pthread_mutex_lock(&pool.lock);
    }
    while (pool.finished < pool.taken)
        pthread_cond_wait(&pool.done, &pool.lock);
    pool.fn = NULL;
    pool.ctx = NULL;
    pool.parts = 0;
    pthread_mutex_unlock(&pool.lock);
    pthread_mutex_unlock(&pool.busy);
}
