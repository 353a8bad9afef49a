/*
 * The exact 8-bit matrix product of the quantized ops (q8mm.h): A converted to the kernel's rows
 * in a first pass over the pool, then pieces of rows x columns through gemm_q8's int32 kernel,
 * each piece's rows corrected by the zero points' terms and handed to the op's finisher.
 */
#include "q8mm.h"

#include "common.h"
#include "gemm_kernel.h"
#include "gemm_q8.h"
#include "isa.h"
#include "onednn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROWS SS_GEMM_Q8_MAX_M
/* Columns a piece takes at most: its int32 sums (64 KiB) and its columns' weights (K x 256
 * bytes) then stay in the core's L2 while the piece's rows are finished and the other row blocks
 * read the same weights; whole rows of a wide B (3072 columns: 768 KiB of sums) did not, and ran
 * the kernel a third slower. */
#define MAX_COLS SS_Q8MM_MAX_COLS
#define MIN_PAR_MACS 65536 /* below this one part does it all */

static bool same_pack(const void *a, const void *b)
{
    return !memcmp(a, b, 4 * sizeof(int64_t));
}

void ss_q8mm_release(ss_q8mm *g)
{
    ss_packed_release(g->bref);
    free(g->bowned);
    g->bref = NULL, g->bowned = NULL, g->bpack = NULL;
}

/* A part's block of sums. */
static size_t part_bytes(const ss_q8mm *g)
{
    return (sizeof(int32_t) * (size_t)(ROWS * g->cols) + 63) / 64 * 64;
}

/* One batch's packed B, when B is packed per call. */
static size_t b_bytes(const ss_q8mm *g)
{
    return g->bpack ? 0 : (ss_gemm_q8_packed_bytes(g->K, g->N) + 63) / 64 * 64;
}

/* Each batch's packed B (per call only), A's converted rows and their sums, then the parts'
 * blocks. */
static size_t shared_bytes(const ss_q8mm *g)
{
    size_t b = (size_t)g->batch * b_bytes(g) +
               (size_t)(g->batch * g->M) * ((size_t)g->lda + sizeof(int32_t));
    return (b + 63) / 64 * 64;
}

size_t ss_q8mm_scratch(const ss_q8mm *g)
{
    return shared_bytes(g) + (size_t)g->parts * part_bytes(g) + 64;
}

void ss_q8mm_columns(const ss_tensor *bz, const ss_tensor *bs, float mult, int64_t N, int32_t *zb,
                     float *scale)
{
    bool z_col = bz && ss_tensor_numel(bz) != 1, s_col = ss_tensor_numel(bs) != 1;
    for (int64_t n = 0; n < N; n++) {
        zb[n] = bz ? (int32_t)ss_op_elem_i64(bz, z_col ? n : 0) : 0;
        scale[n] = mult * (float)ss_op_elem_f64(bs, s_col ? n : 0);
    }
}

bool ss_q8mm_plan(ss_kctx *k, ss_q8mm *g, int ia, int ib)
{
    const ss_tensor *a = k->in[ia], *b = k->in[ib], *bv = ss_kctx_value(k, ib);
    if (!ss_gemm_q8_supported() || ss_kernels_mode() == SS_KERNELS_BLAS || g->M < 1 || g->N < 1 ||
        g->K < 1 || g->K > SS_GEMM_Q8_MAX_K || g->batch < 1 || !k->plan ||
        (g->ta && a->dtype == SS_DT_FLOAT32))
        return false;
    g->a_signed = a->dtype == SS_DT_INT8;
    g->a_float = a->dtype == SS_DT_FLOAT32;
    g->b_unsigned = b->dtype == SS_DT_UINT8;
    g->lda = (g->K + 3) / 4 * 4;
    if (bv && bv->data && b->ndim <= 2) {
        int64_t lay[4] = {g->K, g->N, g->b_unsigned, g->tb};
        const char *key = (const char *)bv->data + 5; /* q8mm's copies (matmul.c 1-3, conv.c 4) */
        g->bref = ss_kctx_packed_find(k, key, lay, same_pack);
        if (g->bref) {
            g->bpack = ss_packed_data(g->bref);
        } else {
            uint8_t *pack = ss_huge_alloc(ss_gemm_q8_packed_bytes(g->K, g->N));
            if (!pack) return false;
            ss_gemm_q8_pack_int(bv->data, g->b_unsigned, g->K, g->N, g->tb ? g->K : g->N, g->tb,
                                pack);
            g->bpack = pack;
            g->bref = ss_kctx_packed_add(k, key, lay, sizeof lay, pack);
            if (!g->bref) g->bowned = pack;
        }
        ss_kctx_drop_const_pages(k, ib);
    }
    int t = ss_kctx_threads(k);
    g->parts = t > 1 ? ss_gemm_pool_reserve(t) : 1;
    /* enough pieces for every part (twice over) where the rows alone do not give them */
    int64_t pieces = g->batch * ((g->M + ROWS - 1) / ROWS),
            groups = (g->N + SS_GEMM_Q8_COLS - 1) / SS_GEMM_Q8_COLS;
    int64_t split = pieces >= 2 * g->parts ? 1 : (2 * g->parts + pieces - 1) / pieces;
    if (split > groups) split = groups;
    g->cols = (groups + split - 1) / split * SS_GEMM_Q8_COLS;
    if (g->cols > MAX_COLS) g->cols = MAX_COLS;
    SS_DEBUG("%s: int8 VNNI kernel (M %lld, K %lld, N %lld, B %s)", k->node_name, (long long)g->M,
             (long long)g->K, (long long)g->N, g->bpack ? "packed once" : "packed per run");
    return true;
}

/* ------------------------------------------------------------------ the passes */

typedef struct {
    const ss_q8mm *g;
    const ss_q8mm_io *io;
    uint8_t *bq;       /* every batch's B packed (B not packed at plan time) */
    uint8_t *aq;       /* every batch's rows of A as the kernel reads them */
    int32_t *rsum;     /* ... and their sums */
    uint8_t *parts_at; /* the parts' blocks, part_bytes each */
    int64_t rblocks, cchunks, items;
    int64_t next; /* the next piece a part claims */
} job;

/* A row of uint8 (int8 when flip is 0x80: + 128) as the kernel's row, and its sum. */
SS_ISA_INLINE int32_t row_u8_body(const uint8_t *restrict x, int64_t K, uint8_t flip,
                                  uint8_t *restrict row)
{
    int32_t sum = 0;
    for (int64_t kk = 0; kk < K; kk++) {
        uint8_t u = x[kk] ^ flip;
        row[kk] = u;
        sum += u;
    }
    return sum;
}
SS_ISA_VARIANTS(int32_t, row_u8,
                (const uint8_t *restrict x, int64_t K, uint8_t flip, uint8_t *restrict row),
                (x, K, flip, row))

/* A float32 row quantized to uint8 (DynamicQuantizeMatMul's A), and its sum. NaN quantizes to 0,
 * as onnxruntime's clamp (MAXPS) makes it. */
SS_ISA_INLINE int32_t row_dyn_body(const float *restrict x, int64_t K, float scale, float zero,
                                   uint8_t *restrict row)
{
    int32_t sum = 0;
    for (int64_t kk = 0; kk < K; kk++) {
        float v = rintf(x[kk] / scale) + zero;
        uint8_t u = (uint8_t)(int32_t)(v != v || v < 0 ? 0 : v > 255 ? 255 : v);
        row[kk] = u;
        sum += u;
    }
    return sum;
}
SS_ISA_VARIANTS(int32_t, row_dyn,
                (const float *restrict x, int64_t K, float scale, float zero,
                 uint8_t *restrict row),
                (x, K, scale, zero, row))

/* The exact sums of a row's n columns, every step mod 2^32 (so in uint32). */
SS_ISA_INLINE void exact_body(int32_t *restrict S, const int32_t *restrict colsum,
                              const int32_t *restrict zb, int zb_step, int64_t n, uint32_t za,
                              uint32_t c, uint32_t ra)
{
    if (zb_step == 0) { /* one zero point for B: a constant term (the loop vectorizes) */
        uint32_t t = (c - (uint32_t)zb[0]) * ra;
        for (int64_t i = 0; i < n; i++)
            S[i] = (int32_t)((uint32_t)S[i] - za * (uint32_t)colsum[i] + t);
        return;
    }
    for (int64_t i = 0; i < n; i++) /* zb_step 1 */
        S[i] = (int32_t)((uint32_t)S[i] - za * (uint32_t)colsum[i] + (c - (uint32_t)zb[i]) * ra);
}
SS_ISA_VARIANTS(void, exact,
                (int32_t *restrict S, const int32_t *restrict colsum, const int32_t *restrict zb,
                 int zb_step, int64_t n, uint32_t za, uint32_t c, uint32_t ra),
                (S, colsum, zb, zb_step, n, za, c, ra))

static int64_t offset_of(const job *j, int64_t bi, bool b_side)
{
    return j->io->offset ? j->io->offset(j->io->ctx, bi, b_side) : 0;
}

/* Rows r0 .. r0 + rows - 1 of batch bi as the kernel's uint8 rows, and their sums. */
static void convert_rows(const job *j, int64_t bi, int64_t r0, int64_t rows, uint8_t *q,
                         int32_t *rsum)
{
    const ss_q8mm *g = j->g;
    const ss_q8mm_io *io = j->io;
    int64_t ao = offset_of(j, bi, false);
    uint8_t flip = g->a_signed ? 0x80 : 0;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = q + r * g->lda;
        int64_t m = r0 + r;
        if (g->a_float) {
            rsum[r] = row_dyn((const float *)io->a + ao + m * g->K, g->K, io->dyn_scale,
                              (float)io->za[0], row);
        } else if (!g->ta) {
            rsum[r] = row_u8((const uint8_t *)io->a + ao + m * g->K, g->K, flip, row);
        } else {
            const uint8_t *x = (const uint8_t *)io->a + ao + m;
            int32_t sum = 0;
            for (int64_t kk = 0; kk < g->K; kk++) {
                row[kk] = x[kk * g->M] ^ flip;
                sum += row[kk];
            }
            rsum[r] = sum;
        }
        for (int64_t kk = g->K; kk < g->lda; kk++)
            row[kk] = 0;
    }
}

/* The first pass: each batch's row blocks of A converted, and each batch's B packed once when it
 * was not at plan time (items past batch x rblocks). */
static void convert_pass(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    job *j = ctx;
    const ss_q8mm *g = j->g;
    int64_t conv_items = g->batch * j->rblocks;
    for (int64_t i; (i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < j->items;) {
        if (i >= conv_items) {
            int64_t bi = i - conv_items;
            ss_gemm_q8_pack_int((const uint8_t *)j->io->b + offset_of(j, bi, true), g->b_unsigned,
                                g->K, g->N, g->tb ? g->K : g->N, g->tb, j->bq + bi * b_bytes(g));
            continue;
        }
        int64_t bi = i / j->rblocks, r0 = i % j->rblocks * ROWS;
        int64_t rows = g->M - r0 < ROWS ? g->M - r0 : ROWS, at = bi * g->M + r0;
        convert_rows(j, bi, r0, rows, j->aq + at * g->lda, j->rsum + at);
    }
}

static void piece_pass(void *ctx, int part, int parts)
{
    (void)parts;
    job *j = ctx;
    const ss_q8mm *g = j->g;
    const ss_q8mm_io *io = j->io;
    int32_t *S = (int32_t *)(j->parts_at + (size_t)part * part_bytes(g));
    uint32_t c = g->b_unsigned ? 128 : 0, shift = g->a_signed ? 128 : 0;
    for (int64_t i; (i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < j->items;) {
        /* a column range's row blocks one after another: they read the same weights */
        int64_t bi = i / (j->rblocks * j->cchunks), r0 = i % j->rblocks * ROWS;
        int64_t n0 = i / j->rblocks % j->cchunks * g->cols;
        int64_t n1 = n0 + g->cols < g->N ? n0 + g->cols : g->N;
        int64_t rows = g->M - r0 < ROWS ? g->M - r0 : ROWS, at = bi * g->M + r0;
        const uint8_t *bp = g->bpack ? g->bpack : j->bq + bi * b_bytes(g);
        ss_gemm_q8_i32(rows, g->N, g->K, j->aq + at * g->lda, g->lda, bp, n0, n1, S, g->cols);
        const int32_t *colsum = ss_gemm_q8_colsum(bp, g->N);
        for (int64_t r = 0; r < rows; r++) {
            int64_t m = r0 + r;
            uint32_t za = (uint32_t)io->za[m * io->za_step] + shift; /* in A' terms */
            uint32_t ra = (uint32_t)j->rsum[at + r] - (uint32_t)g->K * za;
            int32_t *s = S + r * g->cols;
            exact(s, colsum + n0, io->zb + n0 * io->zb_step, io->zb_step, n1 - n0, za, c, ra);
            io->finish(io->ctx, s, bi, m, n0, n1);
        }
    }
}

static int parts_for(const ss_q8mm *g, int64_t items)
{
    if ((double)g->batch * (double)g->M * (double)g->N * (double)g->K < MIN_PAR_MACS) return 1;
    return g->parts < items ? g->parts : (int)items;
}

void ss_q8mm_run(const ss_q8mm *g, const ss_q8mm_io *io, void *scratch)
{
    uint8_t *sc = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    job j = {.g = g, .io = io, .bq = sc, .aq = sc + (size_t)g->batch * b_bytes(g)};
    j.rsum = (int32_t *)(j.aq + g->batch * g->M * g->lda);
    j.parts_at = sc + shared_bytes(g);
    j.rblocks = (g->M + ROWS - 1) / ROWS;
    j.cchunks = (g->N + g->cols - 1) / g->cols;
    j.items = g->batch * j.rblocks + (g->bpack ? 0 : g->batch);
    ss_pool_run(parts_for(g, j.items), convert_pass, &j);
    j.items = g->batch * j.rblocks * j.cchunks;
    j.next = 0;
    ss_pool_run(parts_for(g, j.items), piece_pass, &j);
}
