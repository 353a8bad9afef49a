/* See gemm_q4.h. */
#include "gemm_q4.h"

#include "gemm_kernel.h"
#include "gemm_q8.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define COLS 16 /* columns per group: one vector of int32 sums */
#define ROWS 4  /* rows per pass over a group's weights */
#define MIN_PAR_MACS 65536

static unsigned long n_calls;

unsigned long ss_gemm_q4_calls(void)
{
    return __atomic_load_n(&n_calls, __ATOMIC_RELAXED);
}

bool ss_gemm_q4_usable(int64_t K, int64_t block, int bits)
{
    return bits == 4 && block >= 8 && block % 8 == 0 && K >= 1 && K <= SS_GEMM_Q8_MAX_K &&
           ss_gemm_q8_supported();
}

static int64_t groups_of(int64_t N)
{
    return (N + COLS - 1) / COLS;
}

static int64_t blocks_of(int64_t K, int64_t block)
{
    return (K + block - 1) / block;
}

/* Bytes of a group's weights, then of its scales and zero points. */
static size_t group_weight_bytes(int64_t K, int64_t block)
{
    return (size_t)blocks_of(K, block) * (size_t)(block / 8) * 64;
}

static size_t group_param_bytes(int64_t K, int64_t block)
{
    return (size_t)blocks_of(K, block) * COLS * (sizeof(float) + 1);
}

size_t ss_gemm_q4_packed_bytes(int64_t K, int64_t N, int64_t block)
{
    size_t b = (size_t)groups_of(N) * (group_weight_bytes(K, block) + group_param_bytes(K, block));
    return (b + 63) / 64 * 64;
}

void ss_gemm_q4_pack(const uint8_t *B, const float *scales, const uint8_t *zp, int64_t K,
                     int64_t N, int64_t block, void *out)
{
    int64_t G = groups_of(N), nb = blocks_of(K, block), cb = block / 8, blob = block / 2;
    int64_t zrow = (nb + 1) / 2;
    uint8_t *W = out;
    float *S = (float *)(W + (size_t)G * group_weight_bytes(K, block));
    uint8_t *Z = (uint8_t *)(S + G * nb * COLS);
    memset(out, 0, ss_gemm_q4_packed_bytes(K, N, block));
    for (int64_t n = 0; n < N; n++) {
        int64_t g = n / COLS, c = n % COLS;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *src = B + (n * nb + b) * blob;
            uint8_t *dst = W + ((g * nb + b) * cb) * 64;
            for (int64_t i = 0; i < block && b * block + i < K; i++) {
                int q = (src[i / 2] >> (i % 2 * 4)) & 15;
                int64_t v = i / 8, j = i % 8; /* vector v, low (j < 4) or high nibble */
                dst[v * 64 + c * 4 + j % 4] |= (uint8_t)(j < 4 ? q : q << 4);
            }
            S[(g * nb + b) * COLS + c] = scales[n * nb + b];
            Z[(g * nb + b) * COLS + c] = zp ? (uint8_t)((zp[n * zrow + b / 2] >> (b % 2 * 4)) & 15)
                                            : 8;
        }
    }
}

/* A's rows as int8 over whole blocks (zeros past K), each block's sum, each row's scale. */
static size_t row_bytes(int64_t K, int64_t block)
{
    return ((size_t)blocks_of(K, block) * (size_t)block + 63) / 64 * 64;
}

size_t ss_gemm_q4_scratch(int64_t M, int64_t K, int64_t block)
{
    return (size_t)M * (row_bytes(K, block) + sizeof(int32_t) * (size_t)blocks_of(K, block) +
                        sizeof(float)) +
           64;
}

#if defined(__x86_64__)
#define Q4_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))

typedef struct {
    int64_t M, N, nb, block, G;
    const int8_t *Aq;     /* M rows of row_bytes */
    int64_t ldq;          /* row_bytes */
    const int32_t *asum;  /* M x nb */
    const float *rscale;  /* M */
    const uint8_t *W;     /* packed weights */
    const float *S;       /* scales */
    const uint8_t *Z;     /* zero points */
    float *C;
    int64_t ldc;
    int64_t next; /* the next group a part claims */
} q4_job;

/* A row of A as int8 (symmetric, absmax / 127; a NaN or infinity gives a NaN scale, so NaN
 * outputs, as gemm_q8.h's rows), zeros up to whole blocks, and each block's sum. */
Q4_TARGET static void q4_row(const float *a, int64_t K, int64_t nb, int64_t block, int8_t *q,
                             int32_t *asum, float *scale)
{
    float am = 0;
    bool bad = false;
    for (int64_t k = 0; k < K; k++) {
        float v = fabsf(a[k]);
        bad |= !(v <= 3.402823466e+38f);
        am = v > am ? v : am;
    }
    float inv = !bad && am > 0 ? 127.0f / am : 0.0f;
    *scale = bad ? NAN : am / 127.0f;
    for (int64_t k = 0; k < K; k++) {
        float v = nearbyintf(a[k] * inv);
        q[k] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
    }
    memset(q + K, 0, (size_t)(nb * block - K));
    for (int64_t b = 0; b < nb; b++) {
        int32_t s = 0;
        for (int64_t i = 0; i < block; i++)
            s += q[b * block + i];
        asum[b] = s;
    }
}

/* Rows r0 .. r0 + R - 1 of group g: per block, exact int32 sums of the 4-bit values times A,
 * less the zero point times the block's sum of A, scaled into float32 accumulators. R is a
 * constant at each call site, so the row loops unroll. */
Q4_TARGET static inline __attribute__((always_inline)) void q4_tile(const q4_job *j, int64_t g,
                                                                    int64_t r0, int R)
{
    __m512 acc[ROWS];
    const int8_t *a[ROWS];
    for (int r = 0; r < R; r++)
        acc[r] = _mm512_setzero_ps(), a[r] = j->Aq + (r0 + r) * j->ldq;
    const __m512i low = _mm512_set1_epi8(15);
    int64_t cb = j->block / 8;
    const uint8_t *w = j->W + (size_t)g * (size_t)(j->nb * cb) * 64;
    for (int64_t b = 0; b < j->nb; b++) {
        __m512i sum[ROWS];
        for (int r = 0; r < R; r++)
            sum[r] = _mm512_setzero_si512();
        for (int64_t c = 0; c < cb; c++, w += 64) {
            __m512i v = _mm512_loadu_si512(w);
            __m512i lo = _mm512_and_si512(v, low);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
            int64_t k0 = b * j->block + c * 8;
            for (int r = 0; r < R; r++) {
                int32_t x0, x1;
                memcpy(&x0, a[r] + k0, 4);
                memcpy(&x1, a[r] + k0 + 4, 4);
                sum[r] = _mm512_dpbusd_epi32(sum[r], lo, _mm512_set1_epi32(x0));
                sum[r] = _mm512_dpbusd_epi32(sum[r], hi, _mm512_set1_epi32(x1));
            }
        }
        int64_t pb = g * j->nb + b;
        __m512 scale = _mm512_loadu_ps(j->S + pb * COLS);
        __m512i zp = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(j->Z + pb * COLS)));
        for (int r = 0; r < R; r++) {
            __m512i t = _mm512_mullo_epi32(zp, _mm512_set1_epi32(j->asum[(r0 + r) * j->nb + b]));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sum[r], t)), scale,
                                     acc[r]);
        }
    }
    int64_t n0 = g * COLS, left = j->N - n0;
    __mmask16 mask = left >= COLS ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    for (int r = 0; r < R; r++) {
        __m512 y = _mm512_mul_ps(acc[r], _mm512_set1_ps(j->rscale[r0 + r]));
        _mm512_mask_storeu_ps(j->C + (r0 + r) * j->ldc + n0, mask, y);
    }
}

Q4_TARGET static void q4_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    q4_job *j = ctx;
    for (int64_t g; (g = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < j->G;)
        for (int64_t r0 = 0; r0 < j->M; r0 += ROWS) {
            switch (j->M - r0 >= ROWS ? ROWS : j->M - r0) {
            case 1:
                q4_tile(j, g, r0, 1);
                break;
            case 2:
                q4_tile(j, g, r0, 2);
                break;
            case 3:
                q4_tile(j, g, r0, 3);
                break;
            default:
                q4_tile(j, g, r0, 4);
                break;
            }
        }
}
#endif

void ss_gemm_q4(int64_t M, int64_t N, int64_t K, int64_t block, const float *A, int64_t lda,
                const void *packed, float *C, int64_t ldc, int threads, void *scratch)
{
#if defined(__x86_64__)
    if (M <= 0 || N <= 0) return;
    __atomic_add_fetch(&n_calls, 1, __ATOMIC_RELAXED);
    int64_t nb = blocks_of(K, block), G = groups_of(N), ldq = (int64_t)row_bytes(K, block);
    uint8_t *sc = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    int8_t *Aq = (int8_t *)sc;
    int32_t *asum = (int32_t *)(sc + M * ldq);
    float *rscale = (float *)(asum + M * nb);
    for (int64_t r = 0; r < M; r++)
        q4_row(A + r * lda, K, nb, block, Aq + r * ldq, asum + r * nb, rscale + r);
    const uint8_t *W = packed;
    const float *S = (const float *)(W + (size_t)G * group_weight_bytes(K, block));
    q4_job j = {.M = M,
                .N = N,
                .nb = nb,
                .block = block,
                .G = G,
                .Aq = Aq,
                .ldq = ldq,
                .asum = asum,
                .rscale = rscale,
                .W = W,
                .S = S,
                .Z = (const uint8_t *)(S + G * nb * COLS),
                .C = C,
                .ldc = ldc};
    int parts = threads < 1 ? 1 : threads;
    if (parts > G) parts = (int)G;
    if ((double)M * (double)N * (double)K < MIN_PAR_MACS) parts = 1;
    ss_pool_run(parts, q4_part, &j);
#else
    (void)M, (void)N, (void)K, (void)block, (void)A, (void)lda, (void)packed, (void)C, (void)ldc;
    (void)threads, (void)scratch;
#endif
}
