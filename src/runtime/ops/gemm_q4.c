/*
 * The 4-bit-weight GEMM of gemm_q4.h: packing, the signed row quantization, one VNNI kernel.
 * A part claims groups of GROUP adjacent 16-column blocks and reads their records side by side
 * (GROUP streams, as gemm_q8.c): 1 or 2 rows of A per pass over the whole group, or 4 rows per
 * pass over half of it (the sums of 4 rows x 4 blocks would not fit the registers).
 */
#include "gemm_q4.h"

#include "gemm_kernel.h"
#include "gemm_q8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define BLOCK 16 /* columns per record */
#define GROUP 4  /* column blocks a pass reads side by side */
#define COLS (BLOCK * GROUP)
#define ROWS 4                    /* most rows of A per pass (over GROUP / 2 blocks) */
#define MIN_PAR_WEIGHTS (1 << 18) /* below this the pool's wake-up costs more than it saves */

static unsigned long n_calls;

static int64_t pad_n(int64_t N)
{
    return (N + COLS - 1) / COLS * COLS;
}

static int64_t kblocks(int64_t K, int64_t bs)
{
    return (K + bs - 1) / bs;
}

/* One record: a column block's nibbles for one k block, its scales and zero points. */
static size_t rec_bytes(int64_t bs)
{
    return (size_t)bs * 8 + BLOCK * sizeof(float) + BLOCK;
}

/* A's quantized row: K padded to whole k blocks, then to a multiple of 64 bytes. */
static int64_t row_bytes(int64_t K, int64_t bs)
{
    return (kblocks(K, bs) * bs + 63) / 64 * 64;
}

bool ss_gemm_q4_block_ok(int64_t bs)
{
    return bs >= 8 && bs <= 4096 && (bs & (bs - 1)) == 0;
}

unsigned long ss_gemm_q4_calls(void)
{
    return __atomic_load_n(&n_calls, __ATOMIC_RELAXED);
}

size_t ss_gemm_q4_packed_bytes(int64_t K, int64_t N, int64_t bs)
{
    return (size_t)(pad_n(N) / BLOCK) * (size_t)kblocks(K, bs) * rec_bytes(bs);
}

void *ss_gemm_q4_alloc(int64_t K, int64_t N, int64_t bs)
{
    size_t bytes = ss_gemm_q4_packed_bytes(K, N, bs);
    void *p = ss_huge_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void ss_gemm_q4_pack_column(const uint8_t *q, const float *scale, const uint8_t *zero, int64_t K,
                            int64_t N, int64_t bs, int64_t n, void *out)
{
    (void)N;
    int64_t nb = kblocks(K, bs), c = n % BLOCK;
    size_t rb = rec_bytes(bs);
    uint8_t *recs = (uint8_t *)out + (size_t)(n / BLOCK) * (size_t)nb * rb;
    for (int64_t kb = 0; kb < nb; kb++) {
        uint8_t *rec = recs + (size_t)kb * rb;
        for (int64_t i = 0; i < bs && kb * bs + i < K; i++) {
            int j = (int)(i % 8);
            uint8_t *byte = rec + (i / 8) * 64 + c * 4 + j % 4;
            *byte |= (uint8_t)((q[kb * bs + i] & 15) << (j < 4 ? 0 : 4));
        }
        memcpy(rec + bs * 8 + c * (int64_t)sizeof(float), &scale[kb], sizeof(float));
        rec[bs * 8 + BLOCK * sizeof(float) + c] = zero[kb];
    }
}

size_t ss_gemm_q4_scratch(int64_t M, int64_t K, int64_t bs)
{
    int64_t nb = kblocks(K, bs);
    return (size_t)M * ((size_t)row_bytes(K, bs) + (size_t)nb * sizeof(float) + sizeof(float)) + 64;
}

typedef struct {
    int64_t M, N, bs, nb, groups;
    const int8_t *Aq; /* M rows of ldq bytes */
    int64_t ldq;
    const float *asum;      /* M rows of nb block sums of Aq */
    const float *row_scale; /* M */
    const uint8_t *W;
    float *C;
    int64_t ldc;
    int64_t next;  /* the next group a part claims */
    bool prefetch; /* one part takes every group in turn: it prefetches the next one's records */
} q4_job;

#if defined(__x86_64__)
#define Q4_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* Row a as int8: absmax / 127 as its scale, round to nearest even, padded with 0 to whole k blocks;
 * each block's sum of the int8 values. A NaN makes the scale NaN (NaN outputs, as float32's). */
Q4_TARGET static void quantize_row(const float *a, int64_t K, int64_t bs, int8_t *q, float *asum,
                                   float *scale)
{
    *scale = ss_gemm_q8_quantize_row(a, K, 0, (uint8_t *)q);
    int64_t nb = kblocks(K, bs);
    memset(q + K, 0, (size_t)(nb * bs - K));
    for (int64_t kb = 0; kb < nb; kb++) {
        int32_t s = 0;
        for (int64_t i = 0; i < bs; i++)
            s += q[kb * bs + i];
        asum[kb] = (float)s;
    }
}

/* Rows r0 .. r0 + rows - 1 of group g's blocks b0 .. b0 + nblk - 1: `rows` and `nblk` are
 * constants at each call site, so the loops over them unroll into named registers. */
Q4_TARGET static inline __attribute__((always_inline)) void
q4_tile(const q4_job *j, int64_t g, int64_t r0, int rows, int b0, int nblk, bool prefetch)
{
    size_t rb = rec_bytes(j->bs);
    int64_t bs = j->bs, steps = bs / 8;
    const uint8_t *recs[GROUP];
    for (int b = 0; b < nblk; b++)
        recs[b] = j->W + (size_t)(g * GROUP + b0 + b) * (size_t)j->nb * rb;
    const int32_t *a[ROWS];
    const float *asum[ROWS];
    for (int r = 0; r < rows; r++) {
        a[r] = (const int32_t *)(j->Aq + (r0 + r) * j->ldq);
        asum[r] = j->asum + (r0 + r) * j->nb;
    }
    const __m512i nib = _mm512_set1_epi8(15);
    __m512 f[ROWS][GROUP];
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nblk; b++)
            f[r][b] = _mm512_setzero_ps();
    for (int64_t kb = 0; kb < j->nb; kb++) {
        if (prefetch) /* the next group's records at this k block, into L2 */
            for (int b = 0; b < nblk; b++)
                for (size_t off = 0; off < rb; off += 64)
                    _mm_prefetch((const char *)recs[b] + GROUP * (size_t)j->nb * rb +
                                     (size_t)kb * rb + off,
                                 _MM_HINT_T1);
        __m512i d[ROWS][GROUP];
        for (int r = 0; r < rows; r++)
            for (int b = 0; b < nblk; b++)
                d[r][b] = _mm512_setzero_si512();
        const int64_t quad = kb * bs / 4;
        for (int64_t s = 0; s < steps; s++) {
            __m512i wl[GROUP], wh[GROUP];
            for (int b = 0; b < nblk; b++) {
                __m512i w = _mm512_loadu_si512(recs[b] + (size_t)kb * rb + s * 64);
                wl[b] = _mm512_and_si512(w, nib);
                wh[b] = _mm512_and_si512(_mm512_srli_epi16(w, 4), nib);
            }
            for (int r = 0; r < rows; r++) {
                __m512i xl = _mm512_set1_epi32(a[r][quad + 2 * s]);
                __m512i xh = _mm512_set1_epi32(a[r][quad + 2 * s + 1]);
                for (int b = 0; b < nblk; b++) {
                    d[r][b] = _mm512_dpbusd_epi32(d[r][b], wl[b], xl);
                    d[r][b] = _mm512_dpbusd_epi32(d[r][b], wh[b], xh);
                }
            }
        }
        for (int b = 0; b < nblk; b++) {
            const uint8_t *tail = recs[b] + (size_t)kb * rb + bs * 8;
            __m512 sc = _mm512_loadu_ps(tail);
            __m512 z = _mm512_cvtepi32_ps(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(tail + 64))));
            for (int r = 0; r < rows; r++) {
                __m512 t =
                    _mm512_fnmadd_ps(z, _mm512_set1_ps(asum[r][kb]), _mm512_cvtepi32_ps(d[r][b]));
                f[r][b] = _mm512_fmadd_ps(t, sc, f[r][b]);
            }
        }
    }
    for (int b = 0; b < nblk; b++) {
        int64_t n = g * COLS + (b0 + b) * BLOCK;
        if (n >= j->N) break;
        __mmask16 mask =
            j->N - n >= BLOCK ? (__mmask16)0xffff : (__mmask16)((1u << (j->N - n)) - 1);
        for (int r = 0; r < rows; r++)
            _mm512_mask_storeu_ps(j->C + (r0 + r) * j->ldc + n, mask,
                                  _mm512_mul_ps(f[r][b], _mm512_set1_ps(j->row_scale[r0 + r])));
    }
}

Q4_TARGET static void q4_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    q4_job *j = ctx;
    for (int64_t g; (g = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < j->groups;)
        for (int64_t r0 = 0; r0 < j->M;) {
            bool pf = j->prefetch && r0 == 0 && g + 1 < j->groups;
            if (j->M - r0 >= ROWS) {
                q4_tile(j, g, r0, ROWS, 0, GROUP / 2, pf);
                q4_tile(j, g, r0, ROWS, GROUP / 2, GROUP / 2, pf);
                r0 += ROWS;
            } else if (j->M - r0 >= 2) {
                q4_tile(j, g, r0, 2, 0, GROUP, pf);
                r0 += 2;
            } else {
                q4_tile(j, g, r0, 1, 0, GROUP, pf);
                r0 += 1;
            }
        }
}

void ss_gemm_q4(int64_t M, int64_t N, int64_t K, int64_t bs, const float *A, int64_t lda,
                const void *Bp, float *C, int64_t ldc, int threads, void *scratch)
{
    if (M <= 0 || N <= 0) return;
    if (!ss_gemm_q4_block_ok(bs)) abort(); /* plans check it */
    __atomic_add_fetch(&n_calls, 1, __ATOMIC_RELAXED);
    int64_t nb = kblocks(K, bs), ldq = row_bytes(K, bs);
    int8_t *Aq = scratch;
    float *asum = (float *)(Aq + M * ldq), *row_scale = asum + M * nb;
    for (int64_t r = 0; r < M; r++)
        quantize_row(A + r * lda, K, bs, Aq + r * ldq, asum + r * nb, &row_scale[r]);
    q4_job j = {.M = M,
                .N = N,
                .bs = bs,
                .nb = nb,
                .groups = pad_n(N) / COLS,
                .Aq = Aq,
                .ldq = ldq,
                .asum = asum,
                .row_scale = row_scale,
                .W = Bp,
                .C = C,
                .ldc = ldc};
    int parts = threads < 1 ? 1 : threads;
    if (parts > j.groups) parts = (int)j.groups;
    if ((double)N * (double)K < MIN_PAR_WEIGHTS) parts = 1;
    j.prefetch = parts == 1;
    ss_pool_run(parts, q4_part, &j);
}
#else
void ss_gemm_q4(int64_t M, int64_t N, int64_t K, int64_t bs, const float *A, int64_t lda,
                const void *Bp, float *C, int64_t ldc, int threads, void *scratch)
{
    (void)M, (void)N, (void)K, (void)bs, (void)A, (void)lda, (void)Bp, (void)C, (void)ldc;
    (void)threads, (void)scratch;
    abort(); /* plans take this path only where ss_gemm_q8_supported */
}
#endif
