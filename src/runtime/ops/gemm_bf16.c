/*
 * The bf16-weight small-M GEMM of gemm_bf16.h: packing, one tile kernel per ISA, the work split.
 * A tile is up to TILE_M rows x one 64-column block; a part claims whole blocks and runs every
 * row tile of its block over one chunk of CHUNK_KP k pairs (32 KiB of weights) before the next
 * chunk, the accumulators kept in memory between chunks, so a chunk comes from memory once and
 * from L1/L2 for the other rows; while they run, the tiles prefetch the chunk to come (the next
 * of the block, or the first of the block the part claimed next), so memory streams the weights
 * while the cores compute. Measured (bench_kernels --step: GPT-2-124M's 49 matrices at M = 32,
 * 250 MB, streamed from memory as served; Zen 5, 2 threads): 14.4 ms a step with whole-k tiles,
 * 12.9 with chunks and the prefetch, 15.3 with chunks and no prefetch. Each output's k order
 * stays, so the chunks change no bit. One row (M = 1, single-stream decode) on AVX-512 runs a GEMV
 * instead: up to ROW_GROUP adjacent blocks at once, each its own stream of weights, without
 * software prefetch. Measured on Zen 4 with vdpbf16ps (GPT-2-124M's decode weights, 1 thread, best
 * of 15 interleaved rounds): one block at a time with a prefetch 2 KiB ahead read 14-15 GB/s, a
 * plain read loop 24, six blocks at once 27. Per output the k order is the tile's, so a row's
 * result is the same bits on either path. Tiles of up to 6 rows (24 accumulators) from M = 6:
 * measured 1 thread, M = 32, CPU time (bench_kernels --cpu-time --bf16): 0-6% faster than 4 rows on
 * the GPT-2 shapes, 73-94% of the vdpbf16ps peak the same bench measures (~420 GFLOP/s a core).
 */
#include "gemm_bf16.h"

#include "gemm_kernel.h"

#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define BLOCK 64           /* columns per block */
#define TILE_M 6           /* rows per tile (AVX2: 1, its 16 registers hold one row of a block) */
#define MIN_PAR_MACS 65536 /* below this the pool's wake-up costs more than it saves */
#define ROW_GROUP 6        /* blocks an M = 1 GEMV reads at once: 24 zmm accumulators */
#define CHUNK_KP 128       /* k pairs a chunk: 32 KiB of a block's weights */
#define GROUP_ROWS 64      /* rows a block's chunks run over before the next rows */

static ss_bf16_variant forced;
static int64_t forced_max_m = -1;
static int forced_tile_rows;        /* bench hook: 0 = TILE_M */
static int64_t chunk_kp = CHUNK_KP; /* bench hook: k pairs per chunk */
static bool chunk_prefetch = true;  /* bench hook */
static unsigned long calls[SS_BF16_AVX512_DOT + 1];

typedef struct {
    ss_bf16_variant v;
    int64_t M, N, K, KP; /* KP: row pairs of B (K rounded up, halved) */
    const float *A;
    int64_t lda;
    const uint32_t *Ab; /* DOT: A's rows as bf16 pairs, KP a row */
    const uint16_t *Bp;
    bool acc;
    float *C;
    int64_t ldc, blocks, next;
    int group; /* M = 1 GEMV: blocks per claim */
} bf16_job;

/* A tile's share of one chunk of a block: k pairs kp0 .. kp1-1, its accumulators from zero
 * (first chunk) or from t, and the lines of the chunk to come it prefetches on the way (step
 * lines per k pair until n are issued). */
typedef struct {
    int64_t kp0, kp1;
    bool first;
    const char *pf;
    int64_t pf_n;
    int pf_step;
} span;

/* ------------------------------------------------------------------ variants */

bool ss_gemm_bf16_supported(ss_bf16_variant v)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    switch (v) {
    case SS_BF16_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case SS_BF16_AVX512:
        return __builtin_cpu_supports("avx512f");
    case SS_BF16_AVX512_DOT:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
    default:
        return true;
    }
#else
    return v == SS_BF16_C || v == SS_BF16_AUTO;
#endif
}

/* vdpbf16ps first: level with widening at M = 1 (both read B at bandwidth) and 1.3-2.5x faster
 * from M = 8 (batched decode), where widening pays a shift and a mask per weight per row tile;
 * measured on Zen 4, 2048 x 5632: M = 1 1.16 vs 1.25 ms, M = 32 8.6 vs 10.9 ms (1 thread). One
 * variant for every M keeps a row's result independent of its batch. */
ss_bf16_variant ss_gemm_bf16_pick(void)
{
    if (forced != SS_BF16_AUTO) return forced;
    static const ss_bf16_variant order[] = {SS_BF16_AVX512_DOT, SS_BF16_AVX512, SS_BF16_AVX2};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++)
        if (ss_gemm_bf16_supported(order[i])) return order[i];
    return SS_BF16_C;
}

void ss_gemm_bf16_force(ss_bf16_variant v)
{
    forced = v;
}

/* The row count up to which this kernel runs a GEMM of N columns rather than oneDNN's bf16
 * matmul on weights it prepacked. Measured (bench_kernels --bf16, GPT-2-124M's decode shapes,
 * Zen 4, oneDNN 2.6): one thread, both ~200 GFLOP/s; two threads, oneDNN 1.3-1.8x faster from
 * M = 4 on 768 .. 3072 columns, this kernel ahead on the 50257-column LM head. Yet served 32
 * streams with oneDNN from M = 4 (N < 8192) fell from 6.0-6.5x to 4.3-4.4x single-stream
 * (interleaved A/B, bench/RESULTS.md): on shared cores oneDNN's static OpenMP split waits for a
 * descheduled thread where this kernel's claimed blocks go to whichever thread runs. So every
 * decode M stays here; N is the hook for a crossover that wins served. */
int64_t ss_gemm_bf16_max_m(int64_t N)
{
    (void)N;
    if (forced_max_m >= 0) return forced_max_m;
    return SS_GEMM_BF16_MAX_M;
}

void ss_gemm_bf16_force_max_m(int64_t m)
{
    forced_max_m = m;
}

void ss_gemm_bf16_force_tile_rows(int rows)
{
    forced_tile_rows = rows >= 1 && rows <= TILE_M ? rows : 0;
}

void ss_gemm_bf16_force_chunk(int64_t kp, bool prefetch)
{
    chunk_kp = kp > 0 ? kp : CHUNK_KP;
    chunk_prefetch = prefetch;
}

const char *ss_gemm_bf16_name(ss_bf16_variant v)
{
    static const char *names[] = {"auto", "c", "avx2", "avx512", "avx512_bf16"};
    return (unsigned)v <= SS_BF16_AVX512_DOT ? names[v] : "?";
}

unsigned long ss_gemm_bf16_calls(ss_bf16_variant v)
{
    return (unsigned)v <= SS_BF16_AVX512_DOT ? __atomic_load_n(&calls[v], __ATOMIC_RELAXED) : 0;
}

/* ------------------------------------------------------------------ packing */

static int64_t row_pairs(int64_t K)
{
    return (K + 1) / 2;
}

size_t ss_gemm_bf16_packed_bytes(int64_t K, int64_t N)
{
    return (size_t)((N + BLOCK - 1) / BLOCK) * (size_t)row_pairs(K) * BLOCK * 2 * sizeof(uint16_t);
}

size_t ss_gemm_bf16_scratch(int64_t M, int64_t K)
{
    return (size_t)M * (size_t)row_pairs(K) * sizeof(uint32_t);
}

/* On huge pages (ss_huge_alloc): at M = 1 the GEMV streams every weight once per call, and with
 * 4 KiB pages it pays a TLB miss every 4 KiB of each of its streams. Measured on Zen 4
 * (GPT-2-124M's decode weights, 1 thread, best of 15 interleaved rounds): 10.5 -> 8.4 ms. */
uint16_t *ss_gemm_bf16_alloc(int64_t K, int64_t N)
{
    return ss_huge_alloc(ss_gemm_bf16_packed_bytes(K, N));
}

void ss_gemm_bf16_pack(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, uint16_t *out)
{
    int64_t KP = row_pairs(K), blocks = (N + BLOCK - 1) / BLOCK;
    for (int64_t b = 0; b < blocks; b++)
        for (int64_t kp = 0; kp < KP; kp++) {
            uint16_t *o = out + (b * KP + kp) * BLOCK * 2;
            for (int c = 0; c < BLOCK; c++)
                for (int par = 0; par < 2; par++) {
                    int64_t k = 2 * kp + par, n = b * BLOCK + c;
                    float v = k < K && n < N ? B[tb ? n * ldb + k : k * ldb + n] : 0.0f;
                    o[2 * c + par] = ss_f32_to_bf16(v);
                }
        }
}

/* ------------------------------------------------------------------ tile kernels
 * Each writes rows r0 .. r0+mr-1 of block b into t[mr][BLOCK]. */

/* Block b of the packed weights: KP row pairs x 64 columns x 2 bf16, one stream. */
static const void *block_weights(const bf16_job *j, int64_t b)
{
    return j->Bp + b * j->KP * BLOCK * 2;
}

static void tile_c(const bf16_job *j, int64_t r0, int mr, int64_t b, const span *s,
                   float t[][BLOCK])
{
    const uint32_t *w = (const uint32_t *)block_weights(j, b) + s->kp0 * BLOCK;
    if (s->first) memset(t, 0, sizeof(float) * BLOCK * (size_t)mr);
    for (int64_t kp = s->kp0; kp < s->kp1; kp++, w += BLOCK)
        for (int r = 0; r < mr; r++) {
            const float *a = j->A + (r0 + r) * j->lda + 2 * kp;
            float a0 = a[0], a1 = 2 * kp + 1 < j->K ? a[1] : 0.0f;
            for (int c = 0; c < BLOCK; c++) {
                uint32_t ue = w[c] << 16, uo = w[c] & 0xffff0000u;
                float e, o;
                memcpy(&e, &ue, sizeof e);
                memcpy(&o, &uo, sizeof o);
                t[r][c] += e * a0;
                t[r][c] += o * a1;
            }
        }
}

#if defined(__x86_64__)
#define AVX512 __attribute__((target("avx512f,avx2,fma")))
#define AVX512_DOT __attribute__((target("avx512f,avx512bf16,avx2,fma")))
#define AVX2 __attribute__((target("avx2,fma")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))

AVX512 ALWAYS_INLINE void acc512_zero(__m512 acc[][4], int mr)
{
    for (int r = 0; r < mr; r++)
        for (int p = 0; p < 4; p++)
            acc[r][p] = _mm512_setzero_ps();
}

AVX512 ALWAYS_INLINE void acc512_start(__m512 acc[][4], int mr, const span *s, float t[][BLOCK])
{
    if (s->first) {
        acc512_zero(acc, mr);
        return;
    }
    for (int r = 0; r < mr; r++)
        for (int p = 0; p < 4; p++)
            acc[r][p] = _mm512_loadu_ps(&t[r][16 * p]);
}

/* The prefetch of the chunk to come, s->pf_step lines per k pair. */
ALWAYS_INLINE void span_prefetch(const char **pf, int64_t *left, int step)
{
    for (int q = 0; q<step && * left> 0; q++, (*left)--, *pf += 64)
        _mm_prefetch(*pf, _MM_HINT_T0);
}

AVX512 ALWAYS_INLINE void acc512_store(__m512 acc[][4], int mr, float t[][BLOCK])
{
    for (int r = 0; r < mr; r++)
        for (int p = 0; p < 4; p++)
            _mm512_storeu_ps(&t[r][16 * p], acc[r][p]);
}

/* One k pair: the odd row's weight is 0 past an odd K (packed so), a1 must then be 0 too. */
AVX512 ALWAYS_INLINE void tile512_body(const bf16_job *j, int64_t r0, int mr, int64_t b,
                                       const span *s, float t[][BLOCK])
{
    __m512 acc[TILE_M][4];
    acc512_start(acc, mr, s, t);
    const __m512i *w = (const __m512i *)block_weights(j, b) + s->kp0 * 4;
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    const float *a = j->A + r0 * j->lda;
    int64_t full = j->K / 2, left = s->pf_n;
    const char *pf = s->pf;
    for (int64_t kp = s->kp0; kp < s->kp1; kp++, w += 4) {
        span_prefetch(&pf, &left, s->pf_step);
        for (int p = 0; p < 4; p++) {
            __m512i x = _mm512_load_si512(w + p);
            __m512 e = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
            __m512 o = _mm512_castsi512_ps(_mm512_and_si512(x, hi));
            for (int r = 0; r < mr; r++) {
                const float *ar = a + r * j->lda + 2 * kp;
                acc[r][p] = _mm512_fmadd_ps(e, _mm512_set1_ps(ar[0]), acc[r][p]);
                acc[r][p] = _mm512_fmadd_ps(o, _mm512_set1_ps(kp < full ? ar[1] : 0.0f), acc[r][p]);
            }
        }
    }
    acc512_store(acc, mr, t);
}

AVX512_DOT ALWAYS_INLINE void tiledot_body(const bf16_job *j, int64_t r0, int mr, int64_t b,
                                           const span *s, float t[][BLOCK])
{
    __m512 acc[TILE_M][4];
    acc512_start(acc, mr, s, t);
    const __m512i *w = (const __m512i *)block_weights(j, b) + s->kp0 * 4;
    const uint32_t *a = j->Ab + r0 * j->KP;
    int64_t left = s->pf_n;
    const char *pf = s->pf;
    for (int64_t kp = s->kp0; kp < s->kp1; kp++, w += 4) {
        span_prefetch(&pf, &left, s->pf_step);
        for (int p = 0; p < 4; p++) {
            __m512i x = _mm512_load_si512(w + p);
            for (int r = 0; r < mr; r++)
                acc[r][p] = _mm512_dpbf16_ps(
                    acc[r][p], (__m512bh)_mm512_set1_epi32((int)a[r * j->KP + kp]), (__m512bh)x);
        }
    }
    acc512_store(acc, mr, t);
}

/* One row: 8 accumulators of 8 columns; each 64-byte group is columns 16p .. 16p+15. */
AVX2 static void tile256(const bf16_job *j, int64_t r0, int mr, int64_t b, const span *s,
                         float t[][BLOCK])
{
    (void)mr;
    __m256 acc[8];
    for (int i = 0; i < 8; i++)
        acc[i] = s->first ? _mm256_setzero_ps() : _mm256_loadu_ps(&t[0][8 * i]);
    const __m256i *w = (const __m256i *)block_weights(j, b) + s->kp0 * 8;
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    const float *a = j->A + r0 * j->lda;
    int64_t full = j->K / 2;
    for (int64_t kp = s->kp0; kp < s->kp1; kp++, w += 8) {
        __m256 a0 = _mm256_set1_ps(a[2 * kp]), a1 = _mm256_set1_ps(kp < full ? a[2 * kp + 1] : 0);
        for (int i = 0; i < 8; i++) {
            __m256i x = _mm256_load_si256(w + i);
            __m256 e = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
            __m256 o = _mm256_castsi256_ps(_mm256_and_si256(x, hi));
            acc[i] = _mm256_fmadd_ps(e, a0, acc[i]);
            acc[i] = _mm256_fmadd_ps(o, a1, acc[i]);
        }
    }
    for (int i = 0; i < 8; i++)
        _mm256_storeu_ps(&t[0][8 * i], acc[i]);
}

/* The bodies at a constant row count, so their loops unroll into registers. */
#define SS_BF16_BY_ROWS(NAME, BODY, TARGET)                                                        \
    TARGET static void NAME(const bf16_job *j, int64_t r0, int mr, int64_t b, const span *s,       \
                            float t[][BLOCK])                                                      \
    {                                                                                              \
        switch (mr) {                                                                              \
        case 1:                                                                                    \
            BODY(j, r0, 1, b, s, t);                                                               \
            break;                                                                                 \
        case 2:                                                                                    \
            BODY(j, r0, 2, b, s, t);                                                               \
            break;                                                                                 \
        case 3:                                                                                    \
            BODY(j, r0, 3, b, s, t);                                                               \
            break;                                                                                 \
        case 4:                                                                                    \
            BODY(j, r0, 4, b, s, t);                                                               \
            break;                                                                                 \
        case 5:                                                                                    \
            BODY(j, r0, 5, b, s, t);                                                               \
            break;                                                                                 \
        default:                                                                                   \
            BODY(j, r0, TILE_M, b, s, t);                                                          \
        }                                                                                          \
    }
SS_BF16_BY_ROWS(tile512, tile512_body, AVX512)
SS_BF16_BY_ROWS(tiledot, tiledot_body, AVX512_DOT)

/* M = 1: blocks b .. b+nb-1 into t[nb][BLOCK], the nb blocks read side by side. Each output
 * takes the same operations in the same order as in tiledot_body / tile512_body. */
AVX512_DOT ALWAYS_INLINE void rowdot_body(const bf16_job *j, int64_t b, int nb, float t[][BLOCK])
{
    __m512 acc[ROW_GROUP][4];
    acc512_zero(acc, nb);
    const __m512i *w = block_weights(j, b);
    int64_t stride = j->KP * 4; /* vectors per block */
    for (int64_t kp = 0; kp < j->KP; kp++, w += 4) {
        __m512bh a = (__m512bh)_mm512_set1_epi32((int)j->Ab[kp]);
        for (int i = 0; i < nb; i++)
            for (int p = 0; p < 4; p++)
                acc[i][p] =
                    _mm512_dpbf16_ps(acc[i][p], a, (__m512bh)_mm512_load_si512(w + i * stride + p));
    }
    acc512_store(acc, nb, t);
}

AVX512 ALWAYS_INLINE void row512_body(const bf16_job *j, int64_t b, int nb, float t[][BLOCK])
{
    __m512 acc[ROW_GROUP][4];
    acc512_zero(acc, nb);
    const __m512i *w = block_weights(j, b);
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    int64_t stride = j->KP * 4, full = j->K / 2;
    for (int64_t kp = 0; kp < j->KP; kp++, w += 4) {
        __m512 a0 = _mm512_set1_ps(j->A[2 * kp]);
        __m512 a1 = _mm512_set1_ps(kp < full ? j->A[2 * kp + 1] : 0.0f);
        for (int i = 0; i < nb; i++)
            for (int p = 0; p < 4; p++) {
                __m512i x = _mm512_load_si512(w + i * stride + p);
                __m512 e = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
                __m512 o = _mm512_castsi512_ps(_mm512_and_si512(x, hi));
                acc[i][p] = _mm512_fmadd_ps(e, a0, acc[i][p]);
                acc[i][p] = _mm512_fmadd_ps(o, a1, acc[i][p]);
            }
    }
    acc512_store(acc, nb, t);
}

/* The GEMV bodies at a constant block count, for the same reason. */
#define SS_BF16_CASE_BLOCKS(BODY, N)                                                               \
    case N:                                                                                        \
        BODY(j, b, N, t);                                                                          \
        break;
#define SS_BF16_BY_BLOCKS(NAME, BODY, TARGET)                                                      \
    TARGET static void NAME(const bf16_job *j, int64_t b, int nb, float t[][BLOCK])                \
    {                                                                                              \
        switch (nb) {                                                                              \
            SS_BF16_CASE_BLOCKS(BODY, 1)                                                           \
            SS_BF16_CASE_BLOCKS(BODY, 2)                                                           \
            SS_BF16_CASE_BLOCKS(BODY, 3)                                                           \
            SS_BF16_CASE_BLOCKS(BODY, 4)                                                           \
            SS_BF16_CASE_BLOCKS(BODY, 5)                                                           \
        default:                                                                                   \
            BODY(j, b, ROW_GROUP, t);                                                              \
        }                                                                                          \
    }
SS_BF16_BY_BLOCKS(rowdot, rowdot_body, AVX512_DOT)
SS_BF16_BY_BLOCKS(row512, row512_body, AVX512)
#endif

typedef void (*tile_fn)(const bf16_job *j, int64_t r0, int mr, int64_t b, const span *s,
                        float t[][BLOCK]);

static tile_fn tile_for(ss_bf16_variant v, int *rows)
{
    *rows = TILE_M;
#if defined(__x86_64__)
    if (v == SS_BF16_AVX512) return tile512;
    if (v == SS_BF16_AVX512_DOT) return tiledot;
    if (v == SS_BF16_AVX2) {
        *rows = 1;
        return tile256;
    }
#else
    (void)v;
#endif
    return tile_c;
}

/* ------------------------------------------------------------------ work split */

static void put_tile(const bf16_job *j, int64_t r0, int mr, int64_t b, float t[][BLOCK])
{
    int64_t n0 = b * BLOCK, cols = j->N - n0 < BLOCK ? j->N - n0 : BLOCK;
    for (int r = 0; r < mr; r++) {
        float *c = j->C + (r0 + r) * j->ldc + n0;
        if (j->acc)
            for (int64_t i = 0; i < cols; i++)
                c[i] += t[r][i];
        else
            memcpy(c, t[r], sizeof(float) * (size_t)cols);
    }
}

/* Rows g0 .. g0+gm-1 of block b, chunk by chunk of k pairs: every row tile of the group runs
 * over a chunk before the next chunk, its accumulators kept in t between chunks, and the tiles
 * between them prefetch the chunk to come (the next of this block, or block `next`'s first;
 * next < 0: none), so memory streams the weights while the tiles compute. */
static void run_block(const bf16_job *j, tile_fn tile, int rows, int64_t b, int64_t next,
                      int64_t g0, int64_t gm, float t[][BLOCK])
{
    int64_t tiles = (gm + rows - 1) / rows;
    for (int64_t kp0 = 0; kp0 < j->KP; kp0 += chunk_kp) {
        int64_t kp1 = kp0 + chunk_kp < j->KP ? kp0 + chunk_kp : j->KP;
        const char *pf = NULL;
        int64_t lines = 0;
        if (kp1 < j->KP) {
            pf = (const char *)block_weights(j, b) + kp1 * BLOCK * 4;
            lines = (j->KP - kp1 < chunk_kp ? j->KP - kp1 : chunk_kp) * BLOCK * 4 / 64;
        } else if (next >= 0) {
            pf = block_weights(j, next);
            lines = (j->KP < chunk_kp ? j->KP : chunk_kp) * BLOCK * 4 / 64;
        }
        if (!chunk_prefetch) lines = 0;
        int64_t per = (lines + tiles - 1) / tiles;
        int step = (int)((per + (kp1 - kp0) - 1) / (kp1 - kp0));
        for (int64_t i = 0, r0 = 0; i < tiles; i++) {
            /* row tiles of near-equal size (32 rows: 6, 6, 5, 5, 5, 5 rather than 6 x 5 + 2) */
            int mr = (int)(gm / tiles + (i < gm % tiles));
            int64_t from = i * per < lines ? i * per : lines;
            span s = {.kp0 = kp0,
                      .kp1 = kp1,
                      .first = kp0 == 0,
                      .pf = pf ? pf + from * 64 : NULL,
                      .pf_n = lines - from < per ? lines - from : per,
                      .pf_step = step};
            tile(j, g0 + r0, mr, b, &s, t + r0);
            r0 += mr;
        }
    }
    put_tile(j, g0, (int)gm, b, t);
}

static void bf16_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    bf16_job *j = ctx;
    int rows;
    tile_fn tile = tile_for(j->v, &rows);
    if (forced_tile_rows && rows > forced_tile_rows) rows = forced_tile_rows;
    float t[GROUP_ROWS][BLOCK];
    /* the next block is claimed before this one runs, so its weights can be prefetched */
    int64_t b = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
    while (b < j->blocks) {
        int64_t next = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        for (int64_t g0 = 0; g0 < j->M; g0 += GROUP_ROWS) {
            int64_t gm = j->M - g0 < GROUP_ROWS ? j->M - g0 : GROUP_ROWS;
            run_block(j, tile, rows, b, g0 + gm == j->M && next < j->blocks ? next : -1, g0, gm, t);
        }
        b = next;
    }
}

typedef void (*row_fn)(const bf16_job *j, int64_t b, int nb, float t[][BLOCK]);

/* M = 1 on AVX-512: claims groups of j->group adjacent blocks until none is left. */
static void bf16_row_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    bf16_job *j = ctx;
#if defined(__x86_64__)
    row_fn row = j->v == SS_BF16_AVX512_DOT ? rowdot : row512;
    float t[ROW_GROUP][BLOCK];
    for (;;) {
        int64_t b = __atomic_fetch_add(&j->next, j->group, __ATOMIC_RELAXED);
        if (b >= j->blocks) return;
        int nb = (int)(j->blocks - b < j->group ? j->blocks - b : j->group);
        row(j, b, nb, t);
        for (int i = 0; i < nb; i++)
            put_tile(j, 0, 1, b + i, &t[i]);
    }
#endif
}

/* The M = 1 GEMV's blocks per claim. With sleeping pool workers (the default), fewer than
 * ROW_GROUP so that each part gets about 4 claims (768 columns, 2 parts: 2 blocks): a worker
 * takes ~30 us to wake, as long as 6 blocks of a 768 x 768 GEMV take, so with 2 claims of 6 the
 * caller often ran both alone; interleaved on the loaded machine (bench/RESULTS.md, issue 15)
 * the single stream was no faster with 6-block claims. With polling workers
 * (SHARDSERVE_POOL_SPIN_US) the worker joins at once and ROW_GROUP blocks a claim (6 streams,
 * the blocks shared out evenly: 12 blocks = 2 claims of 6) read fastest (bench_kernels
 * --decode). SS_GEMV_SPLIT_LEGACY keeps the small claims whatever the pool does. */
static int row_group(int64_t blocks, int parts)
{
    if (ss_pool_spin_us() > 0 && ss_gemm_gemv_split() != SS_GEMV_SPLIT_LEGACY) {
        int64_t claims = (blocks + ROW_GROUP - 1) / ROW_GROUP;
        return (int)((blocks + claims - 1) / claims);
    }
    if (parts <= 1) return ROW_GROUP;
    int64_t g = (blocks + 4 * parts - 1) / (4 * parts);
    return g < 1 ? 1 : g > ROW_GROUP ? ROW_GROUP : (int)g;
}

#if defined(__x86_64__)
/* ss_f32_to_bf16 on 16 floats: the same bits (nearest even; NaN kept quiet). */
AVX512 static void row_to_bf16_avx512(const float *a, int64_t K, uint16_t *out)
{
    const __m512i abs = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    const __m512i quiet = _mm512_set1_epi32(0x40);
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512i u = _mm512_castps_si512(_mm512_loadu_ps(a + k));
        __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs), inf);
        __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, odd)), 16);
        r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), quiet);
        _mm256_storeu_si256((__m256i *)(out + k), _mm512_cvtepi32_epi16(r));
    }
    for (; k < K; k++)
        out[k] = ss_f32_to_bf16(a[k]);
}
#endif

/* A's rows as bf16 pairs for vdpbf16ps (the odd K's last pair padded with 0): in memory, each
 * row's K values as bf16 in order, then a 0 when K is odd. */
static void round_rows(bf16_job *j, uint32_t *out)
{
    for (int64_t r = 0; r < j->M; r++) {
        const float *a = j->A + r * j->lda;
        uint16_t *o = (uint16_t *)(out + r * j->KP);
#if defined(__x86_64__)
        row_to_bf16_avx512(a, j->K, o); /* the DOT variant implies AVX-512F */
#else
        for (int64_t k = 0; k < j->K; k++)
            o[k] = ss_f32_to_bf16(a[k]);
#endif
        if (j->K % 2) o[j->K] = 0;
    }
    j->Ab = out;
}

void ss_gemm_bf16(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const uint16_t *Bp,
                  bool acc, float *C, int64_t ldc, int threads, void *scratch)
{
    if (M <= 0 || N <= 0) return;
    ss_bf16_variant v = ss_gemm_bf16_pick();
    if (!ss_gemm_bf16_supported(v)) v = SS_BF16_C;
    __atomic_add_fetch(&calls[v], 1, __ATOMIC_RELAXED);
    bf16_job j = {.v = v,
                  .M = M,
                  .N = N,
                  .K = K,
                  .KP = row_pairs(K),
                  .A = A,
                  .lda = lda,
                  .Bp = Bp,
                  .acc = acc,
                  .C = C,
                  .ldc = ldc,
                  .blocks = (N + BLOCK - 1) / BLOCK};
    if (v == SS_BF16_AVX512_DOT) round_rows(&j, scratch);
    int parts = threads < 1 ? 1 : threads;
    if (parts > j.blocks) parts = (int)j.blocks;
    if ((double)M * (double)N * (double)K < MIN_PAR_MACS) parts = 1;
    if (M == 1 && (v == SS_BF16_AVX512_DOT || v == SS_BF16_AVX512)) {
        j.group = row_group(j.blocks, parts);
        ss_pool_run(parts, bf16_row_part, &j);
        return;
    }
    ss_pool_run(parts, bf16_part, &j);
}
