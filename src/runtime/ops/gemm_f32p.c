/* See gemm_f32p.h. */
#include "gemm_f32p.h"

#include "gemm_kernel.h"
#include "isa.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define PANEL SS_GEMM_F32P_PANEL /* columns per panel: 4 AVX-512 vectors */
#define NV 4
#define MR 6   /* rows per register tile */
#define KC 512 /* k per block: 128 KiB of a panel, reread from L2 by each pass of M */
#define MIN_K 64
#define MIN_N 64
#define MIN_PAR_MACS (1 << 22) /* below this one thread does it (the pool's wake-up) */

static unsigned long n_calls;

unsigned long ss_gemm_f32p_calls(void)
{
    return __atomic_load_n(&n_calls, __ATOMIC_RELAXED);
}

bool ss_gemm_f32p_usable(int64_t M, int64_t K, int64_t N, bool tb)
{
#if defined(__x86_64__)
    return ss_isa_active == SS_ISA_AVX512 && M >= (tb ? 1 : SS_GEMM_F32P_MIN_M) &&
           M <= SS_GEMM_F32P_MAX_M && K >= MIN_K && N >= MIN_N;
#else
    (void)M, (void)K, (void)N, (void)tb;
    return false;
#endif
}

static int64_t panels_of(int64_t N)
{
    return (N + PANEL - 1) / PANEL;
}

size_t ss_gemm_f32p_packed_bytes(int64_t K, int64_t N)
{
    return (size_t)panels_of(N) * (size_t)K * PANEL * sizeof(float);
}

float *ss_gemm_f32p_alloc(int64_t K, int64_t N)
{
    return ss_huge_alloc(ss_gemm_f32p_packed_bytes(K, N));
}

void ss_gemm_f32p_pack_panel(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, int64_t p,
                             float *out)
{
    int64_t n0 = p * PANEL, w = N - n0 < PANEL ? N - n0 : PANEL;
    for (int64_t k = 0; k < K; k++) {
        float *o = out + (p * K + k) * PANEL;
        if (!tb) {
            memcpy(o, B + k * ldb, (size_t)w * sizeof(float));
        } else {
            for (int64_t c = 0; c < w; c++)
                o[c] = B[c * ldb + k];
        }
        for (int64_t c = w; c < PANEL; c++)
            o[c] = 0.0f;
    }
}

void ss_gemm_f32p_pack(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, float *out)
{
    for (int64_t p = 0; p < panels_of(N); p++)
        ss_gemm_f32p_pack_panel(B + (tb ? p * PANEL * ldb : p * PANEL), K, N, ldb, tb, p, out);
}

/* ------------------------------------------------------------------ AVX-512 tile */

#if defined(__x86_64__)
/* C[mr x 64] (=, or += unless first) A[mr x kc] x P[kc x 64]; mask: the panel's valid columns
 * per vector (all ones but in the last panel). mr is a constant in each instantiation. */
__attribute__((target("avx512f"), always_inline)) static inline void
tile(int mr, int64_t kc, const float *A, int64_t lda, const float *P, float *C, int64_t ldc,
     bool first, const __mmask16 *mask)
{
    __m512 c[MR][NV];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++)
            if (i < mr)
                c[i][v] = first ? _mm512_setzero_ps()
                                : _mm512_maskz_loadu_ps(mask[v], C + i * ldc + 16 * v);
    for (int64_t k = 0; k < kc; k++) {
        __m512 b[NV];
        for (int v = 0; v < NV; v++)
            b[v] = _mm512_load_ps(P + k * PANEL + 16 * v);
        for (int i = 0; i < MR; i++)
            if (i < mr) {
                __m512 a = _mm512_set1_ps(A[i * lda + k]);
                for (int v = 0; v < NV; v++)
                    c[i][v] = _mm512_fmadd_ps(a, b[v], c[i][v]);
            }
    }
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++)
            if (i < mr) _mm512_mask_storeu_ps(C + i * ldc + 16 * v, mask[v], c[i][v]);
}

#define TILE_FN(R)                                                                                 \
    __attribute__((target("avx512f"), noinline)) static void tile##R(                              \
        int64_t kc, const float *A, int64_t lda, const float *P, float *C, int64_t ldc,            \
        bool first, const __mmask16 *mask)                                                         \
    {                                                                                              \
        tile(R, kc, A, lda, P, C, ldc, first, mask);                                               \
    }
TILE_FN(1)
TILE_FN(2)
TILE_FN(3)
TILE_FN(4)
TILE_FN(5)
TILE_FN(6)

typedef void (*tile_fn)(int64_t, const float *, int64_t, const float *, float *, int64_t, bool,
                        const __mmask16 *);
static const tile_fn tiles[MR + 1] = {NULL, tile1, tile2, tile3, tile4, tile5, tile6};
#endif

typedef struct {
    int64_t M, N, K, lda, ldc, panels;
    const float *A, *Bp;
    float *C;
    bool acc;     /* C += A x B */
    int64_t next; /* the next panel to claim */
} f32p_job;

static void f32p_panel(const f32p_job *j, int64_t p)
{
#if defined(__x86_64__)
    __mmask16 mask[NV];
    int64_t n0 = p * PANEL, w = j->N - n0 < PANEL ? j->N - n0 : PANEL;
    for (int v = 0; v < NV; v++) {
        int64_t valid = w - 16 * v;
        mask[v] = valid >= 16  ? (__mmask16)0xffff
                  : valid <= 0 ? (__mmask16)0
                               : (__mmask16)((1u << valid) - 1);
    }
    const float *P = j->Bp + p * j->K * PANEL;
    for (int64_t kb = 0; kb < j->K; kb += KC) {
        int64_t kc = j->K - kb < KC ? j->K - kb : KC;
        for (int64_t m0 = 0; m0 < j->M; m0 += MR) {
            int mr = (int)(j->M - m0 < MR ? j->M - m0 : MR);
            tiles[mr](kc, j->A + m0 * j->lda + kb, j->lda, P + kb * PANEL, j->C + m0 * j->ldc + n0,
                      j->ldc, kb == 0 && !j->acc, mask);
        }
    }
#else
    (void)j, (void)p;
#endif
}

static void f32p_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    f32p_job *j = ctx;
    for (;;) {
        int64_t p = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (p >= j->panels) return;
        f32p_panel(j, p);
    }
}

void ss_gemm_f32p(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bp,
                  bool acc, float *C, int64_t ldc, int threads)
{
    if (M <= 0 || N <= 0 || (K <= 0 && acc)) return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; i++)
            memset(C + i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    __atomic_add_fetch(&n_calls, 1, __ATOMIC_RELAXED);
    f32p_job j = {.M = M,
                  .N = N,
                  .K = K,
                  .lda = lda,
                  .ldc = ldc,
                  .panels = panels_of(N),
                  .A = A,
                  .Bp = Bp,
                  .C = C,
                  .acc = acc};
    int parts = threads < 1 ? 1 : threads;
    if (parts > j.panels) parts = (int)j.panels;
    if ((double)M * (double)N * (double)K < MIN_PAR_MACS) parts = 1;
    ss_pool_run(parts, f32p_part, &j);
}
