/*
 * The int8-weight small-M GEMM of gemm_q8.h: packing, the row quantization, one VNNI kernel.
 * A part claims groups of GROUP adjacent 16-column blocks and reads their weights side by side
 * (GROUP streams, as the bf16 GEMV's ROW_GROUP), ROWS rows of A per pass over them (q8_part).
 */
#include "gemm_q8.h"

#include "gemm_kernel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define BLOCK 16 /* columns per 64-byte vector (x 4 k) */
#define GROUP 4  /* blocks a pass reads side by side */
#define COLS SS_GEMM_Q8_COLS
_Static_assert(COLS == BLOCK * GROUP, "a group is GROUP blocks");
#define ROWS 4             /* rows of A per pass: ROWS x GROUP accumulators */
#define KC 128             /* k quads per chunk when the rows take several passes */
#define MIN_PAR_MACS 65536 /* below this the pool's wake-up costs more than it saves */

static unsigned long n_calls;

static int64_t pad_n(int64_t N)
{
    return (N + COLS - 1) / COLS * COLS;
}

static int64_t pad_k(int64_t K)
{
    return (K + 3) / 4 * 4;
}

/* A's quantized rows: unsigned (int8 + 128), each padded to a multiple of 64 bytes. */
static int64_t row_bytes(int64_t K)
{
    return (pad_k(K) + 63) / 64 * 64;
}

bool ss_gemm_q8_supported(void)
{
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
#else
    return false;
#endif
}

unsigned long ss_gemm_q8_calls(void)
{
    return __atomic_load_n(&n_calls, __ATOMIC_RELAXED);
}

size_t ss_gemm_q8_packed_bytes(int64_t K, int64_t N)
{
    int64_t Np = pad_n(N);
    return (size_t)Np * (sizeof(float) + sizeof(int32_t)) + (size_t)Np * (size_t)pad_k(K);
}

void *ss_gemm_q8_alloc(int64_t K, int64_t N)
{
    return ss_huge_alloc(ss_gemm_q8_packed_bytes(K, N));
}

static float b_at(const float *B, int64_t ldb, bool tb, int64_t k, int64_t n)
{
    return B[tb ? n * ldb + k : k * ldb + n];
}

void ss_gemm_q8_pack(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, void *out)
{
    int64_t Np = pad_n(N), Kp = pad_k(K), K4 = Kp / 4;
    float *scale = out;
    int32_t *comp = (int32_t *)(scale + Np);
    int8_t *w = (int8_t *)(comp + Np);
    memset(scale, 0, (size_t)Np * sizeof *scale); /* absmax first, in B's own order */
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++)
            scale[n] = fmaxf(scale[n], fabsf(b_at(B, ldb, tb, k, n)));
    for (int64_t n = 0; n < Np; n++) {
        scale[n] /= 127.0f;
        comp[n] = 0;
    }
    for (int64_t b = 0; b < Np / BLOCK; b++)
        for (int64_t k4 = 0; k4 < K4; k4++)
            for (int c = 0; c < BLOCK; c++)
                for (int t = 0; t < 4; t++) {
                    int64_t k = 4 * k4 + t, n = b * BLOCK + c;
                    long q = 0;
                    if (k < K && n < N && scale[n] > 0) {
                        q = lrintf(b_at(B, ldb, tb, k, n) / scale[n]);
                        q = q > 127 ? 127 : q < -127 ? -127 : q;
                    }
                    w[(b * K4 + k4) * 64 + c * 4 + t] = (int8_t)q;
                    comp[n] += 128 * (int32_t)q;
                }
}

void ss_gemm_q8_pack_begin(int64_t K, int64_t N, void *out)
{
    memset(out, 0, ss_gemm_q8_packed_bytes(K, N));
}

void ss_gemm_q8_pack_column(const float *v, int64_t K, int64_t N, int64_t n, void *out)
{
    int64_t Np = pad_n(N), K4 = pad_k(K) / 4, b = n / BLOCK, c = n % BLOCK;
    float *scale = out;
    int32_t *comp = (int32_t *)(scale + Np);
    int8_t *w = (int8_t *)(comp + Np);
    float am = 0; /* absmax, NaN ignored as fmaxf ignores it */
    for (int64_t k = 0; k < K; k++)
        am = fabsf(v[k]) > am ? fabsf(v[k]) : am;
    float sc = am / 127.0f;
    int32_t sum = 0;
    for (int64_t k = 0; k < K && sc > 0; k++) {
        long q = lrintf(v[k] / sc);
        q = q > 127 ? 127 : q < -127 ? -127 : q;
        w[(b * K4 + k / 4) * 64 + c * 4 + k % 4] = (int8_t)q;
        sum += 128 * (int32_t)q;
    }
    scale[n] = sc, comp[n] = sum;
}

void ss_gemm_q8_pack_int(const void *B, bool is_unsigned, int64_t K, int64_t N, int64_t ldb,
                         bool tb, void *out)
{
    int64_t Np = pad_n(N), K4 = pad_k(K) / 4;
    float *scale = out;
    int32_t *comp = (int32_t *)(scale + Np);
    int8_t *w = (int8_t *)(comp + Np);
    for (int64_t n = 0; n < Np; n++) /* unused by ss_gemm_q8_i32: one scale; comp: the sums */
        scale[n] = 1.0f, comp[n] = 0;
    const uint8_t *bu = B;
    const int8_t *bs = B;
    for (int64_t b = 0; b < Np / BLOCK; b++)
        for (int64_t k4 = 0; k4 < K4; k4++)
            for (int c = 0; c < BLOCK; c++)
                for (int t = 0; t < 4; t++) {
                    int64_t k = 4 * k4 + t, n = b * BLOCK + c, at = tb ? n * ldb + k : k * ldb + n;
                    int v = 0;
                    if (k < K && n < N) v = is_unsigned ? (int)bu[at] - 128 : bs[at];
                    w[(b * K4 + k4) * 64 + c * 4 + t] = (int8_t)v;
                    comp[n] += v;
                }
}

const int32_t *ss_gemm_q8_colsum(const void *Bp, int64_t N)
{
    return (const int32_t *)((const float *)Bp + pad_n(N));
}

size_t ss_gemm_q8_scratch(int64_t M, int64_t K)
{
    int64_t m = M < SS_GEMM_Q8_MAX_M ? M : SS_GEMM_Q8_MAX_M; /* rows a pass quantizes */
    return (size_t)m * (size_t)row_bytes(K) + (size_t)m * sizeof(float) + 64;
}

typedef struct {
    int64_t M, N, K4, groups;
    const uint8_t *Aq; /* M rows of row_bytes(K) */
    int64_t ldq;
    const float *row_scale, *scale;
    const int32_t *comp;
    const int8_t *W;
    bool acc;
    float *C;
    int32_t *Ci; /* ss_gemm_q8_i32: the exact sums, stored as they are, column n0 first */
    int64_t n0;
    int64_t ldc;
    const uint8_t *const *taps; /* ss_gemm_q8_i32_taps: row r's tap t at taps[r * ntaps + t] */
    int64_t ntaps, tq;          /* ... each tq k quads */
    int64_t next;  /* the next group a part claims: ss_pool_run's parts claim their work */
    bool prefetch; /* one part takes every group in turn: it prefetches the next one's weights */
} q8_job;

#if defined(__x86_64__)
#define Q8_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* a's values times pre (tiny rows only: `prescaled`, a constant at each call, keeps the normal
 * rows' loop at one multiply) and inv, rounded, clamped to +-127, plus offset. */
Q8_TARGET static inline __attribute__((always_inline)) void
q8_convert_row(const float *a, int64_t K, float pre, float inv, uint8_t offset, uint8_t *q,
               const bool prescaled)
{
    __m512 vp = _mm512_set1_ps(pre), vi = _mm512_set1_ps(inv);
    __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127),
            off = _mm512_set1_epi32(offset);
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 x = _mm512_loadu_ps(a + k);
        if (prescaled) x = _mm512_mul_ps(x, vp);
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(x, vi));
        v = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, lo), hi), off);
        _mm_storeu_si128((__m128i *)(q + k), _mm512_cvtepi32_epi8(v));
    }
    for (; k < K; k++) {
        float v = nearbyintf(prescaled ? a[k] * pre * inv : a[k] * inv);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[k] = (uint8_t)((int)v + offset);
    }
}

Q8_TARGET float ss_gemm_q8_quantize_row(const float *a, int64_t K, uint8_t offset, uint8_t *q)
{
    __m512 m = _mm512_setzero_ps();
    __mmask16 nan = 0;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 v = _mm512_loadu_ps(a + k);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        m = _mm512_max_ps(m, _mm512_abs_ps(v));
    }
    float am = _mm512_reduce_max_ps(m);
    for (; k < K; k++) {
        nan |= a[k] != a[k];
        am = fmaxf(am, fabsf(a[k]));
    }
    /* A NaN or an infinity makes the row's step NaN, so its outputs are NaN (the int8 values
     * cannot carry an infinity); the values are then the offset, never a conversion of NaN. */
    if (nan || isinf(am)) {
        memset(q, offset, (size_t)K);
        return NAN;
    }
    /* A row whose largest |value| is below 127 / FLT_MAX has no finite 127 / am: it is scaled by
     * 2^64 first (exact), so tiny rows keep their signs and relative precision. */
    float pre = 1.0f, inv = 0.0f;
    if (am > 0) {
        if (!isfinite(127.0f / am)) pre = 0x1p64f;
        inv = 127.0f / (am * pre);
    }
    if (pre == 1.0f)
        q8_convert_row(a, K, 1.0f, inv, offset, q, false);
    else
        q8_convert_row(a, K, pre, inv, offset, q, true);
    return am / 127.0f;
}

/* Row r of A quantized: + 128 as uint8; the padding up to a multiple of 4 is 128 (zero), against
 * zero weights. */
Q8_TARGET static void quantize_row(const float *a, int64_t K, uint8_t *q, float *scale)
{
    *scale = ss_gemm_q8_quantize_row(a, K, 128, q);
    for (int64_t k = K; k < pad_k(K); k++)
        q[k] = 128;
}

/* The rows' k quads k0 .. k1 - 1 come in segments: the whole range over stored rows, or each
 * tap's part of it over gathered ones. q8_segment gives segment s0's end (*s1), the weights of
 * its first k quad's `base` (wg + base * 64) and the rows' pointers a[] indexed from base. */
Q8_TARGET static inline __attribute__((always_inline)) int64_t
q8_segment(const q8_job *j, int64_t r0, int rows, int64_t s0, int64_t k1, const int32_t **a,
           int64_t *s1)
{
    int64_t base = 0;
    *s1 = k1;
    if (j->taps) {
        int64_t t = s0 / j->tq;
        base = t * j->tq;
        if (base + j->tq < k1) *s1 = base + j->tq;
        for (int r = 0; r < rows; r++)
            a[r] = (const int32_t *)j->taps[(r0 + r) * j->ntaps + t];
    } else {
        for (int r = 0; r < rows; r++)
            a[r] = (const int32_t *)(j->Aq + (r0 + r) * j->ldq);
    }
    return base;
}

/* Rows r0 .. r0 + rows - 1 over k quads k0 .. k1 - 1 of group g's GROUP blocks: accumulators from
 * zero (first) or from the part's int32 buffer, back to it, or (last) to C. `rows` is a constant
 * at each call site (the switch below), so the loops over it unroll. */
/* The full tile's k loop (4 rows x 4 blocks) with its 16 accumulators as named variables: over
 * the arrays of the general loop gcc 12 copied every accumulator to another register and back and
 * spilled one, each k step (22 moves and a store around 16 vpdpbusd). */
#define Q8_DP(r, b) c##r##b = _mm512_dpbusd_epi32(c##r##b, x, w##b)
#define Q8_ROW(r)                                                                                  \
    do {                                                                                           \
        __m512i x = _mm512_set1_epi32(a[r][k]);                                                    \
        Q8_DP(r, 0);                                                                               \
        Q8_DP(r, 1);                                                                               \
        Q8_DP(r, 2);                                                                               \
        Q8_DP(r, 3);                                                                               \
    } while (0)
Q8_TARGET static inline __attribute__((always_inline)) void q8_loop4(const q8_job *j,
                                                                     const int8_t *wg, int64_t r0,
                                                                     int64_t k0, int64_t k1,
                                                                     __m512i (*acc)[GROUP])
{
    __m512i c00 = acc[0][0], c01 = acc[0][1], c02 = acc[0][2], c03 = acc[0][3];
    __m512i c10 = acc[1][0], c11 = acc[1][1], c12 = acc[1][2], c13 = acc[1][3];
    __m512i c20 = acc[2][0], c21 = acc[2][1], c22 = acc[2][2], c23 = acc[2][3];
    __m512i c30 = acc[3][0], c31 = acc[3][1], c32 = acc[3][2], c33 = acc[3][3];
    int64_t K4 = j->K4;
    for (int64_t s0 = k0, s1; s0 < k1; s0 = s1) { /* the accumulators stay in registers */
        const int32_t *a[ROWS];
        int64_t base = q8_segment(j, r0, ROWS, s0, k1, a, &s1);
        const int8_t *p0 = wg + base * 64, *p1 = p0 + K4 * 64, *p2 = p0 + 2 * K4 * 64,
                     *p3 = p0 + 3 * K4 * 64;
        for (int64_t k = s0 - base; k < s1 - base; k++) {
            __m512i w0 = _mm512_load_si512(p0 + k * 64), w1 = _mm512_load_si512(p1 + k * 64);
            __m512i w2 = _mm512_load_si512(p2 + k * 64), w3 = _mm512_load_si512(p3 + k * 64);
            Q8_ROW(0);
            Q8_ROW(1);
            Q8_ROW(2);
            Q8_ROW(3);
        }
    }
    acc[0][0] = c00, acc[0][1] = c01, acc[0][2] = c02, acc[0][3] = c03;
    acc[1][0] = c10, acc[1][1] = c11, acc[1][2] = c12, acc[1][3] = c13;
    acc[2][0] = c20, acc[2][1] = c21, acc[2][2] = c22, acc[2][3] = c23;
    acc[3][0] = c30, acc[3][1] = c31, acc[3][2] = c32, acc[3][3] = c33;
}
#undef Q8_ROW
#undef Q8_DP

Q8_TARGET static inline __attribute__((always_inline)) void
q8_tile(const q8_job *j, int64_t g, int64_t r0, int rows, int64_t k0, int64_t k1,
        int32_t (*sums)[COLS], bool first, bool last)
{
    const int8_t *wg = j->W + g * GROUP * j->K4 * 64;
    __m512i acc[ROWS][GROUP];
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < GROUP; b++)
            acc[r][b] =
                first ? _mm512_setzero_si512() : _mm512_load_si512(sums[r0 + r] + b * BLOCK);
    if (rows == ROWS)
        q8_loop4(j, wg, r0, k0, k1, acc);
    else
        for (int64_t s0 = k0, s1; s0 < k1; s0 = s1) {
            const int32_t *a[ROWS];
            int64_t base = q8_segment(j, r0, rows, s0, k1, a, &s1);
            const int8_t *wb = wg + base * 64;
            for (int64_t k = s0 - base; k < s1 - base; k++) {
                __m512i w[GROUP];
                for (int b = 0; b < GROUP; b++)
                    w[b] = _mm512_load_si512(wb + (b * j->K4 + k) * 64);
                for (int r = 0; r < rows; r++) {
                    __m512i x = _mm512_set1_epi32(a[r][k]);
                    for (int b = 0; b < GROUP; b++)
                        acc[r][b] = _mm512_dpbusd_epi32(acc[r][b], x, w[b]);
                }
            }
        }
    if (!last) {
        for (int r = 0; r < rows; r++)
            for (int b = 0; b < GROUP; b++)
                _mm512_store_si512(sums[r0 + r] + b * BLOCK, acc[r][b]);
        return;
    }
    for (int b = 0; b < GROUP; b++) {
        int64_t n = g * COLS + b * BLOCK;
        if (n >= j->N) break;
        __mmask16 mask =
            j->N - n >= BLOCK ? (__mmask16)0xffff : (__mmask16)((1u << (j->N - n)) - 1);
        if (j->Ci) {
            for (int r = 0; r < rows; r++)
                _mm512_mask_storeu_epi32(j->Ci + (r0 + r) * j->ldc + n - j->n0, mask, acc[r][b]);
            continue;
        }
        __m512i comp = _mm512_loadu_si512(j->comp + n);
        __m512 scale = _mm512_loadu_ps(j->scale + n);
        for (int r = 0; r < rows; r++) {
            __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][b], comp));
            v = _mm512_mul_ps(v, _mm512_mul_ps(scale, _mm512_set1_ps(j->row_scale[r0 + r])));
            float *c = j->C + (r0 + r) * j->ldc + n;
            if (j->acc) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, c));
            _mm512_mask_storeu_ps(c, mask, v);
        }
    }
}

/* A part's groups. Up to ROWS rows a group's weights stream once, whole; more rows go over them
 * in chunks of KC k quads (GROUP x 8 KiB), every row group of a chunk before the next chunk, so
 * the weights still come from memory once and the other rows read them from cache; the int32
 * sums wait in `sums` between chunks. Each output's k order is the same either way.
 * With j->prefetch, the next group's weights (GROUP blocks of K4 lines, each block crossing 4 KiB
 * pages that the hardware's stream prefetchers stop at) are prefetched into L2 a share before
 * each tile of this group: BERT-base's 12 layers of int8 weights (85 MB, from memory) ran at
 * ~372 GMAC/s against ~420 from L3, and 3-5% faster with it (bench/RUNTIME.md). */
Q8_TARGET static void q8_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    q8_job *j = ctx;
    int32_t sums[SS_GEMM_Q8_MAX_M][COLS] __attribute__((aligned(64)));
    int64_t kc = j->M <= ROWS ? j->K4 : KC;
    int64_t tiles = (j->K4 + kc - 1) / kc * ((j->M + ROWS - 1) / ROWS);
    for (int64_t g; (g = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < j->groups;) {
        int64_t lines = j->prefetch && g + 1 < j->groups ? GROUP * j->K4 : 0;
        const char *pf = lines ? (const char *)(j->W + (g + 1) * GROUP * j->K4 * 64) : NULL;
        int64_t share = (lines + tiles - 1) / tiles, done = 0;
        for (int64_t k0 = 0; k0 < j->K4; k0 += kc) {
            int64_t k1 = k0 + kc < j->K4 ? k0 + kc : j->K4;
            bool first = k0 == 0, last = k1 == j->K4;
            for (int64_t r0 = 0; r0 < j->M; r0 += ROWS) {
                for (int64_t end = done + share < lines ? done + share : lines; done < end; done++)
                    _mm_prefetch(pf + done * 64, _MM_HINT_T1);
                int64_t left = j->M - r0;
                switch (left >= ROWS ? ROWS : left) {
                case 1:
                    q8_tile(j, g, r0, 1, k0, k1, sums, first, last);
                    break;
                case 2:
                    q8_tile(j, g, r0, 2, k0, k1, sums, first, last);
                    break;
                case 3:
                    q8_tile(j, g, r0, 3, k0, k1, sums, first, last);
                    break;
                default:
                    q8_tile(j, g, r0, 4, k0, k1, sums, first, last);
                    break;
                }
            }
        }
    }
}

/* Rows 0 .. M - 1 (M <= SS_GEMM_Q8_MAX_M). */
static void q8_rows(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const void *Bp,
                    bool acc, float *C, int64_t ldc, int threads, void *scratch)
{
    int64_t Np = pad_n(N), ldq = row_bytes(K);
    uint8_t *Aq = scratch;
    float *row_scale = (float *)(Aq + M * ldq);
    for (int64_t r = 0; r < M; r++)
        quantize_row(A + r * lda, K, Aq + r * ldq, &row_scale[r]);
    const float *scale = Bp;
    const int32_t *comp = (const int32_t *)(scale + Np);
    q8_job j = {.M = M,
                .N = N,
                .K4 = pad_k(K) / 4,
                .groups = Np / COLS,
                .Aq = Aq,
                .ldq = ldq,
                .row_scale = row_scale,
                .scale = scale,
                .comp = comp,
                .W = (const int8_t *)(comp + Np),
                .acc = acc,
                .C = C,
                .ldc = ldc};
    int parts = threads < 1 ? 1 : threads;
    if (parts > j.groups) parts = (int)j.groups;
    if ((double)M * (double)N * (double)K < MIN_PAR_MACS) parts = 1;
    j.prefetch = parts == 1;
    ss_pool_run(parts, q8_part, &j);
}

void ss_gemm_q8(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const void *Bp,
                bool acc, float *C, int64_t ldc, int threads, void *scratch)
{
    if (M <= 0 || N <= 0) return;
    __atomic_add_fetch(&n_calls, 1, __ATOMIC_RELAXED);
    for (int64_t r = 0; r < M; r += SS_GEMM_Q8_MAX_M) {
        int64_t m = M - r < SS_GEMM_Q8_MAX_M ? M - r : SS_GEMM_Q8_MAX_M;
        q8_rows(m, N, K, A + r * lda, lda, Bp, acc, C + r * ldc, ldc, threads, scratch);
    }
}

/* ss_gemm_q8_i32 and ss_gemm_q8_i32_taps: A's rows stored (A, lda) or gathered (taps). */
static void q8_i32(int64_t M, int64_t N, int64_t K, const uint8_t *A, int64_t lda,
                   const uint8_t *const *taps, int64_t ntaps, int64_t tq, const void *Bp,
                   int64_t n0, int64_t n1, int32_t *C, int64_t ldc)
{
    if (M <= 0 || n1 <= n0) return;
    __atomic_add_fetch(&n_calls, 1, __ATOMIC_RELAXED);
    int64_t Np = pad_n(N);
    const int32_t *comp = (const int32_t *)((const float *)Bp + Np);
    for (int64_t r = 0; r < M; r += SS_GEMM_Q8_MAX_M) {
        int64_t m = M - r < SS_GEMM_Q8_MAX_M ? M - r : SS_GEMM_Q8_MAX_M;
        q8_job j = {.M = m,
                    .N = n1,
                    .K4 = pad_k(K) / 4,
                    .groups = (n1 + COLS - 1) / COLS,
                    .next = n0 / COLS,
                    .n0 = n0,
                    .Aq = taps ? NULL : A + r * lda,
                    .ldq = lda,
                    .taps = taps ? taps + r * ntaps : NULL,
                    .ntaps = ntaps,
                    .tq = tq,
                    .W = (const int8_t *)(comp + Np),
                    .Ci = C + r * ldc,
                    .ldc = ldc,
                    .prefetch = true};
        q8_part(&j, 0, 1);
    }
}

void ss_gemm_q8_i32(int64_t M, int64_t N, int64_t K, const uint8_t *A, int64_t lda, const void *Bp,
                    int64_t n0, int64_t n1, int32_t *C, int64_t ldc)
{
    q8_i32(M, N, K, A, lda, NULL, 0, 0, Bp, n0, n1, C, ldc);
}

void ss_gemm_q8_i32_taps(int64_t M, int64_t N, const uint8_t *const *taps, int64_t ntaps,
                         int64_t tq, const void *Bp, int64_t n0, int64_t n1, int32_t *C,
                         int64_t ldc)
{
    q8_i32(M, N, ntaps * tq * 4, NULL, 0, taps, ntaps, tq, Bp, n0, n1, C, ldc);
}
#else
void ss_gemm_q8(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const void *Bp,
                bool acc, float *C, int64_t ldc, int threads, void *scratch)
{
    (void)M, (void)N, (void)K, (void)A, (void)lda, (void)Bp, (void)acc, (void)C, (void)ldc;
    (void)threads, (void)scratch;
    abort(); /* plans take this path only where ss_gemm_q8_supported */
}

void ss_gemm_q8_i32(int64_t M, int64_t N, int64_t K, const uint8_t *A, int64_t lda, const void *Bp,
                    int64_t n0, int64_t n1, int32_t *C, int64_t ldc)
{
    (void)M, (void)N, (void)K, (void)A, (void)lda, (void)Bp, (void)n0, (void)n1, (void)C, (void)ldc;
    abort(); /* plans take this path only where ss_gemm_q8_supported */
}

void ss_gemm_q8_i32_taps(int64_t M, int64_t N, const uint8_t *const *taps, int64_t ntaps,
                         int64_t tq, const void *Bp, int64_t n0, int64_t n1, int32_t *C,
                         int64_t ldc)
{
    (void)M, (void)N, (void)taps, (void)ntaps, (void)tq, (void)Bp, (void)n0, (void)n1, (void)C;
    (void)ldc;
    abort();
}
#endif
