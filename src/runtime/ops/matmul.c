/*
 * MatMul (numpy semantics: 1-D promotion, broadcast batch dims) and Gemm.
 * When the right operand is a plain matrix (a Linear layer's weight), every batch row of the left
 * operand is folded into M so the whole op is one GEMM call.
 *
 * Three kernel libraries, chosen per node at plan time (SHARDSERVE_KERNELS, see onednn.h):
 *  - oneDNN (float32): a matmul primitive made for the node's fixed shapes; constant weights are
 *    reordered once into its preferred layout (bf16 with --weights bf16 on CPUs with native bf16
 *    math) and the file-mapped original's pages are dropped; Gemm's C is its bias.
 *  - own (gemm_kernel.c): float32 with B a constant matrix and folded M <= SS_GEMM_TILE_MAX_M:
 *    register-tile kernels that read B in place.
 *  - own packed (gemm_f32p.c, auto only): float32 MatMul and Gemm (alpha 1) with B a constant
 *    matrix and folded M in SS_GEMM_F32P_MIN_M..MAX_M on AVX-512, from 1 row when Gemm's B is
 *    transposed: B packed once into 64-column panels at plan time (the mapped original's pages
 *    dropped, as for oneDNN's copy), register tiles of 6 x 64.
 *  - OpenBLAS: everything else (float64, odd cases), sgemv / dgemv when M == 1.
 *  - bf16 (gemm_bf16.c): with --weights bf16, constant weights and folded M <=
 *    SS_GEMM_BF16_MAX_M (decode): the weights converted once to bf16 and read at half the bytes;
 *    where oneDNN would run the node in bf16, only up to ss_gemm_bf16_max_m(N) (measured per ISA).
 *  - int8 (gemm_q8.c): with --weights int8 on AVX512-VNNI, constant weights, any M: the weights
 *    quantized once per column, the rows of A on every call (measured faster than the bf16 paths
 *    from 1 to 256 rows, bench/RUNTIME.md).
 * auto takes the measured best per shape class (onednn.c: ss_kernels_use_dnnl; the numbers are
 * in bench/RUNTIME.md): tiny products and GEMVs (M == 1) stay on the own kernel or OpenBLAS,
 * everything else goes to oneDNN.
 */
#include "../op.h"
#include "gemm_bf16.h"
#include "gemm_f32p.h"
#include "gemm_kernel.h"
#include "gemm_q8.h"
#include "onednn.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

static const ss_dtype float_types[] = {SS_DT_FLOAT32, SS_DT_FLOAT64};

typedef enum { PATH_BLAS = 0, PATH_OWN, PATH_DNNL, PATH_BF16, PATH_F32P, PATH_Q8 } gemm_path;

/* The kernel a node runs on, decided at plan time. */
typedef struct {
    gemm_path path;
    ss_gemm_variant small; /* PATH_OWN */
    int threads;           /* PATH_OWN and the packed paths: parts of the own pool */
    ss_dnnl_matmul *dnnl;  /* PATH_DNNL */
    /* PATH_BF16, PATH_F32P, PATH_Q8: the own kernel's packed copy of the weights */
    ss_packed *packed_ref; /* the session's */
    void *packed_owned;    /* without a session */
    const void *packed;    /* the copy used */
} kernel_choice;

/* The own small-M kernel for a float32 GEMM of M rows whose B (input b_index) is a constant
 * matrix, or SS_GEMM_AUTO when it does not apply. Reserves the worker pool at plan time. */
static ss_gemm_variant small_variant(ss_kctx *k, int b_index, int64_t M, int *threads)
{
    const ss_tensor *b = k->in[b_index];
    if (b->dtype != SS_DT_FLOAT32 || b->ndim != 2 || M < 1 || M > SS_GEMM_TILE_MAX_M ||
        !ss_kctx_value(k, b_index))
        return SS_GEMM_AUTO;
    ss_gemm_variant v = ss_gemm_pick();
    if (v == SS_GEMM_BLAS) return SS_GEMM_AUTO;
    int t = ss_kctx_threads(k);
    *threads = t > 1 ? ss_gemm_pool_reserve(t) : 1;
    return v;
}

/* Makes the oneDNN primitive; on UNSUPPORTED the node falls back (returns NULL, c unchanged). */
static ss_status *try_dnnl(ss_kctx *k, ss_dnnl_matmul_desc *d, int b_index, kernel_choice *c)
{
    int64_t macs = d->src_dims[d->nd - 2] * d->src_dims[d->nd - 1] * d->wei_dims[d->nd - 1];
    for (int i = 0; i < d->nd - 2; i++)
        macs *= d->dst_dims[i];
    d->threads = ss_dnnl_threads(macs, ss_kctx_threads(k));
    d->bf16 = k->weights == SS_WEIGHTS_BF16 && d->wei_const && ss_dnnl_bf16_native();
    d->k = k;
    size_t scratch = 0;
    ss_status *st = ss_dnnl_matmul_create(d, &c->dnnl, &scratch);
    if (st && st->code == SS_ERR_UNSUPPORTED && d->bf16) { /* bf16 not taken: f32 then */
        ss_status_free(st);
        d->bf16 = false;
        st = ss_dnnl_matmul_create(d, &c->dnnl, &scratch);
    }
    if (st && st->code == SS_ERR_UNSUPPORTED) {
        SS_DEBUG("%s: oneDNN: %s; another kernel runs it", k->node_name, st->msg);
        ss_status_free(st);
        return NULL;
    }
    if (st) return ss_op_err(k, st->code, "%s", st->msg);
    c->path = PATH_DNNL;
    if (scratch > k->scratch_bytes) k->scratch_bytes = scratch;
    if (d->wei_const && ss_dnnl_matmul_owns_weights(c->dnnl)) ss_kctx_drop_const_pages(k, b_index);
    SS_DEBUG("%s: oneDNN %s", k->node_name, ss_dnnl_matmul_impl(c->dnnl));
    return NULL;
}

/* The own kernels' packed copies of constant weights (bf16, f32 panels), found again by the
 * weights' address plus a per-kind offset: oneDNN's copies of the same weights are keyed by the
 * address itself and compare their layouts as oneDNN descriptors, which ours are not; the bf16 copy
 * is keyed one byte past the address, the f32 copy two. */
typedef struct {
    int64_t K, N, ldb;
    int tb;
} packed_layout;

static bool same_packed_layout(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(packed_layout)) == 0;
}

/* How an own kernel packs constant weights: its functions (the wrappers give them one type) and
 * the offset its copies are keyed by. */
typedef struct {
    int key_off;
    const char *what;
    size_t (*bytes)(int64_t K, int64_t N);
    void *(*alloc)(int64_t K, int64_t N);
    void (*fill)(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, void *out);
} packing;

static void *bf16_alloc(int64_t K, int64_t N)
{
    return ss_gemm_bf16_alloc(K, N);
}

static void bf16_fill(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, void *out)
{
    ss_gemm_bf16_pack(B, K, N, ldb, tb, out);
}

static void *f32p_alloc(int64_t K, int64_t N)
{
    return ss_gemm_f32p_alloc(K, N);
}

static void f32p_fill(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, void *out)
{
    ss_gemm_f32p_pack(B, K, N, ldb, tb, out);
}

static const packing bf16_packing = {1, "bf16 weights", ss_gemm_bf16_packed_bytes, bf16_alloc,
                                     bf16_fill};
static const packing f32p_packing = {2, "packed weights", ss_gemm_f32p_packed_bytes, f32p_alloc,
                                     f32p_fill};
static const packing q8_packing = {3, "int8 weights", ss_gemm_q8_packed_bytes, ss_gemm_q8_alloc,
                                   ss_gemm_q8_pack};

/* Path `path` on the packed copy of B (input 1, a constant [K, N], or [N, K] when tb): the
 * session's copy if another node made it, else made here and shared; B's file-mapped pages are
 * dropped, the own pool reserved, and the kernel's scratch claimed. */
static ss_status *pack_weights(ss_kctx *k, const packing *pk, int64_t K, int64_t N, bool tb,
                               gemm_path path, size_t scratch, kernel_choice *c)
{
    const ss_tensor *bv = ss_kctx_value(k, 1);
    packed_layout lay = {K, N, k->in[1]->dims[1], tb};
    const char *key = (const char *)bv->data + pk->key_off;
    c->packed_ref = ss_kctx_packed_find(k, key, &lay, same_packed_layout);
    if (c->packed_ref) {
        c->packed = ss_packed_data(c->packed_ref);
    } else {
        void *w = pk->alloc(K, N);
        if (!w)
            return ss_op_err(k, SS_ERR_NOMEM, "cannot allocate %zu bytes of %s", pk->bytes(K, N),
                             pk->what);
        pk->fill(bv->data, K, N, lay.ldb, tb, w);
        c->packed = w;
        c->packed_ref = ss_kctx_packed_add(k, key, &lay, sizeof lay, w);
        if (!c->packed_ref) c->packed_owned = w;
    }
    ss_kctx_drop_const_pages(k, 1);
    int t = ss_kctx_threads(k);
    c->threads = t > 1 ? ss_gemm_pool_reserve(t) : 1;
    if (scratch > k->scratch_bytes) k->scratch_bytes = scratch;
    c->path = path;
    return NULL;
}

/* Whether input 1 is a constant float32 matrix an own kernel can pack. */
static bool packable(ss_kctx *k)
{
    const ss_tensor *b = k->in[1], *bv = ss_kctx_value(k, 1);
    return b->dtype == SS_DT_FLOAT32 && b->ndim == 2 && bv && bv->data;
}

/* PATH_BF16 for a float32 GEMM of M rows (batch folded) whose B (input 1, [K, N], or [N, K] when
 * tb) is a constant, under --weights bf16; nothing changes when it does not apply. */
static ss_status *try_bf16(ss_kctx *k, int64_t M, int64_t K, int64_t N, bool tb, kernel_choice *c)
{
    bool dnnl_bf16 =
        ss_kernels_use_dnnl(ss_kernels_mode(), SS_DT_FLOAT32, M, K, N) && ss_dnnl_bf16_native();
    int64_t max_m = dnnl_bf16 ? ss_gemm_bf16_max_m(N) : SS_GEMM_BF16_MAX_M;
    if (k->weights != SS_WEIGHTS_BF16 || !packable(k) || M < 1 || M > max_m ||
        ss_kernels_mode() == SS_KERNELS_BLAS)
        return NULL;
    return pack_weights(k, &bf16_packing, K, N, tb, PATH_BF16, ss_gemm_bf16_scratch(M, K), c);
}

/* PATH_Q8 for a float32 GEMM (batch folded) whose B is a constant, under --weights int8 on a CPU
 * with AVX512-VNNI; nothing changes when it does not apply. */
static ss_status *try_q8(ss_kctx *k, int64_t M, int64_t K, int64_t N, bool tb, kernel_choice *c)
{
    if (k->weights != SS_WEIGHTS_INT8 || !packable(k) || M < 1 || K > SS_GEMM_Q8_MAX_K ||
        ss_kernels_mode() == SS_KERNELS_BLAS || !ss_gemm_q8_supported())
        return NULL;
    SS_DEBUG("%s: own int8 kernel (%lld rows)", k->node_name, (long long)M);
    return pack_weights(k, &q8_packing, K, N, tb, PATH_Q8, ss_gemm_q8_scratch(M, K), c);
}

/* PATH_F32P for a float32 GEMM of M rows (batch folded) whose B (input 1, [K, N], or [N, K] when
 * tb) is a constant, in auto mode where gemm_f32p.h's kernel applies (own keeps the in-place
 * tile kernels, onednn and blas their libraries); nothing changes when it does not. */
static ss_status *try_f32p(ss_kctx *k, int64_t M, int64_t K, int64_t N, bool tb, kernel_choice *c)
{
    if (ss_kernels_mode() != SS_KERNELS_AUTO || !packable(k) || !ss_gemm_f32p_usable(M, K, N, tb))
        return NULL;
    /* B stored transposed and read by another node too (a tied LM head and the embedding's
     * Gather): the packed copy could not replace it, only double it; it is read in place */
    if (tb && !ss_kctx_sole_reader(k, 1)) return NULL;
    SS_DEBUG("%s: own f32 kernel on packed weights", k->node_name);
    return pack_weights(k, &f32p_packing, K, N, tb, PATH_F32P, 0, c);
}

static void release_choice(kernel_choice *c)
{
    ss_packed_release(c->packed_ref);
    free(c->packed_owned);
    c->packed_ref = NULL;
    c->packed_owned = NULL;
    ss_dnnl_matmul_free(c->dnnl);
    c->dnnl = NULL;
}

typedef struct {
    int64_t M, K, N;
    int batch_nd;               /* broadcast batch dims of the output */
    int64_t batch[SS_MAX_DIMS]; /* output batch dims */
    int64_t a_stride[SS_MAX_DIMS],
        b_stride[SS_MAX_DIMS]; /* per batch dim, in matrices (0 = broadcast) */
    int64_t n_batch;
    bool fold_a; /* b is one matrix and a's batch is contiguous: one gemm with M * n_batch rows */
    kernel_choice kc;
    ss_dnnl_matmul_desc dnnl_desc; /* PATH_DNNL: what the primitive was made from */
} matmul_plan;

static void matmul_release(void *state)
{
    release_choice(&((matmul_plan *)state)->kc);
}

/* Dense row-major strides for dims. */
static void dense_strides(int nd, const int64_t *dims, int64_t *strides)
{
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--)
        strides[i] = s, s *= dims[i];
}

/* MatMul through oneDNN: 2-D when a folds (one weight matrix), else batched with a's and b's
 * batch dims padded to the output's rank (size-1 dims broadcast). */
static ss_status *matmul_dnnl(ss_kctx *k, matmul_plan *p, const int64_t *ad, int an,
                              const int64_t *bd, int bn)
{
    ss_dnnl_matmul_desc d = {0};
    int nd = p->fold_a ? 2 : p->batch_nd + 2;
    d.nd = nd;
    for (int i = 0; i < nd - 2; i++) {
        int ia = i - (nd - an), ib = i - (nd - bn);
        d.src_dims[i] = ia >= 0 ? ad[ia] : 1;
        d.wei_dims[i] = ib >= 0 ? bd[ib] : 1;
        d.dst_dims[i] = p->batch[i];
    }
    d.src_dims[nd - 2] = p->fold_a ? p->M * p->n_batch : p->M;
    d.src_dims[nd - 1] = d.wei_dims[nd - 2] = p->K;
    d.wei_dims[nd - 1] = p->N;
    d.dst_dims[nd - 2] = d.src_dims[nd - 2];
    d.dst_dims[nd - 1] = p->N;
    dense_strides(nd, d.src_dims, d.src_strides);
    dense_strides(nd, d.wei_dims, d.wei_strides);
    const ss_tensor *bv = ss_kctx_value(k, 1);
    d.wei_const = bv && bv->data ? bv->data : NULL;
    p->dnnl_desc = d;
    return try_dnnl(k, &p->dnnl_desc, 1, &p->kc);
}

/* Remakes the primitive from d; true when it took (the old one is released). */
static bool matmul_remake(ss_kctx *k, matmul_plan *p, ss_dnnl_matmul_desc *d, ss_status **st)
{
    kernel_choice c = {0};
    *st = try_dnnl(k, d, 1, &c);
    if (*st || c.path != PATH_DNNL) return false;
    release_choice(&p->kc);
    p->kc = c;
    return true;
}

/* ss_dnnl_postop_make for matmul_fuse: ctx is the implementation the plain primitive has. */
static ss_status *matmul_postops_make(ss_kctx *k, void *ctx, const ss_postop *po, int n, bool *took)
{
    matmul_plan *p = k->state;
    ss_dnnl_matmul_desc d = p->dnnl_desc;
    d.po = po, d.n_po = n, d.require_impl = ctx;
    ss_status *st = NULL;
    *took = matmul_remake(k, p, &d, &st);
    return st;
}

/* The planner's hook (op.h): a fused chain that starts with a constant bias along the last axis
 * (BERT's and GPT-2's Linear layers: MatMul then Add) has oneDNN add it as the matmul's bias,
 * and the longest run of steps after it that oneDNN takes as post-ops on the same
 * implementation (a residual Add, BERT's GELU, a scale) runs in the primitive too, while the
 * product is still in registers, instead of in passes over the output afterwards.
 * SHARDSERVE_DNNL_POSTOPS=0 leaves every step but the bias on the pass. */
static ss_status *matmul_fuse(ss_kctx *k, ss_epilogue *ep)
{
    matmul_plan *p = k->state;
    if (!p || p->kc.path != PATH_DNNL) return NULL;
    ss_status *st = NULL;
    const float *bias = ss_epilogue_lead_bias(ep);
    if (bias && !p->dnnl_desc.has_bias) {
        ss_dnnl_matmul_desc d = p->dnnl_desc;
        d.has_bias = true;
        for (int i = 0; i < d.nd; i++)
            d.bias_dims[i] = i == d.nd - 1 ? d.dst_dims[i] : 1;
        d.bias_const = bias;
        d.bias_scale = 1;
        if (matmul_remake(k, p, &d, &st)) {
            p->dnnl_desc = d;
            ss_epilogue_drop(ep, 1);
            SS_DEBUG("%s: oneDNN adds the bias of the fused chain", k->node_name);
        }
        if (st) return st;
    }
    const char *env = getenv("SHARDSERVE_DNNL_POSTOPS");
    if (env && !strcmp(env, "0")) return NULL;
    ss_postop po[SS_EPILOGUE_MAX_POSTOPS];
    int all = ss_epilogue_postops(ep, po, SS_EPILOGUE_MAX_POSTOPS);
    /* a per-channel operand is along the output's axis 1, which the primitive's (folded) dst does
     * not have: such steps stay on the pass */
    for (int i = 0; i < all; i++)
        if (po[i].chan) all = i;
    char impl[64];
    snprintf(impl, sizeof impl, "%s", ss_dnnl_matmul_impl(p->kc.dnnl));
    return ss_dnnl_fuse_postops(k, ep, po, all, matmul_postops_make, impl);
}

static ss_status *matmul_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = ss_op_expect_dtype(k, 0, float_types, 2);
    if (st) return st;
    const ss_tensor *a = k->in[0], *b = k->in[1];
    if (a->dtype != b->dtype) return ss_op_err(k, SS_ERR_INVALID, "inputs have different types");
    if (a->ndim == 0 || b->ndim == 0)
        return ss_op_err(k, SS_ERR_INVALID, "inputs must have rank >= 1");
    matmul_plan *p = calloc(1, sizeof *p);
    if (!p) return ss_errf(SS_ERR_NOMEM, "out of memory");
    k->state = p;
    /* Promote 1-D operands: a [K] -> [1,K], b [K] -> [K,1]. */
    int64_t ad[SS_MAX_DIMS + 1], bd[SS_MAX_DIMS + 1];
    int an = a->ndim, bn = b->ndim;
    if (an == 1)
        ad[0] = 1, ad[1] = a->dims[0], an = 2;
    else
        memcpy(ad, a->dims, sizeof(int64_t) * (size_t)an);
    if (bn == 1)
        bd[0] = b->dims[0], bd[1] = 1, bn = 2;
    else
        memcpy(bd, b->dims, sizeof(int64_t) * (size_t)bn);
    p->M = ad[an - 2];
    p->K = ad[an - 1];
    p->N = bd[bn - 1];
    if (bd[bn - 2] != p->K) {
        char sa[128], sb[128];
        return ss_op_err(k, SS_ERR_INVALID, "inner dims differ: %s x %s",
                         ss_shape_str(a->ndim, a->dims, sa, sizeof sa),
                         ss_shape_str(b->ndim, b->dims, sb, sizeof sb));
    }
    int abn = an - 2, bbn = bn - 2;
    p->batch_nd = abn > bbn ? abn : bbn;
    int64_t as = 1, bs = 1;
    p->n_batch = 1;
    for (int i = p->batch_nd - 1; i >= 0; i--) {
        int ia = i - (p->batch_nd - abn), ib = i - (p->batch_nd - bbn);
        int64_t da = ia >= 0 ? ad[ia] : 1, db = ib >= 0 ? bd[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return ss_op_err(k, SS_ERR_INVALID, "batch dims %lld and %lld do not broadcast",
                             (long long)da, (long long)db);
        p->batch[i] = da == 1 ? db : da; /* 1 broadcasts to any size, 0 too */
        p->a_stride[i] = da == 1 ? 0 : as;
        p->b_stride[i] = db == 1 ? 0 : bs;
        as *= da;
        bs *= db;
        p->n_batch *= p->batch[i];
    }
    p->fold_a = bs == 1 && as == p->n_batch;
    ss_kernels mode = ss_kernels_mode();
    if (p->fold_a && bn == b->ndim) st = try_q8(k, p->M * p->n_batch, p->K, p->N, false, &p->kc);
    if (!st && p->kc.path == PATH_BLAS && p->fold_a && bn == b->ndim)
        st = try_bf16(k, p->M * p->n_batch, p->K, p->N, false, &p->kc);
    if (!st && p->kc.path == PATH_BLAS && p->fold_a && bn == b->ndim)
        st = try_f32p(k, p->M * p->n_batch, p->K, p->N, false, &p->kc);
    if (st) return st;
    if (p->kc.path == PATH_BLAS &&
        ss_kernels_use_dnnl(mode, a->dtype, p->M * p->n_batch, p->K, p->N)) {
        st = matmul_dnnl(k, p, ad, an, bd, bn);
        if (st) return st;
    }
    if (p->kc.path == PATH_BLAS && mode != SS_KERNELS_BLAS && p->fold_a && bn == b->ndim) {
        p->kc.small = small_variant(k, 1, p->M * p->n_batch, &p->kc.threads);
        if (p->kc.small != SS_GEMM_AUTO) p->kc.path = PATH_OWN;
    }
    ss_tensor *o = k->out[0];
    o->dtype = a->dtype;
    o->ndim = 0;
    for (int i = 0; i < p->batch_nd; i++)
        o->dims[o->ndim++] = p->batch[i];
    if (a->ndim > 1) o->dims[o->ndim++] = p->M;
    if (b->ndim > 1) o->dims[o->ndim++] = p->N;
    if (o->ndim > SS_MAX_DIMS) return ss_op_err(k, SS_ERR_LIMIT, "output rank too large");
    return NULL;
}

void ss_op_blas_gemm(ss_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                     const void *A, int64_t lda, const void *B, int64_t ldb, float beta, void *C)
{
    if (M == 0 || N == 0) return;
    if (M == 1 && !ta) { /* a vector times a matrix: stream B once instead of packing it */
        /* y = B^T x (B is [K, N]) or B x (B stored [N, K]); beta = 0 is not trusted to clear NaN
         * garbage in every OpenBLAS version */
        if (beta == 0.0f) memset(C, 0, (size_t)N * (dt == SS_DT_FLOAT32 ? 4 : 8));
        if (dt == SS_DT_FLOAT32)
            cblas_sgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, (blasint)(tb ? N : K),
                        (blasint)(tb ? K : N), alpha, B, (blasint)ldb, A, 1, 1.0f, C, 1);
        else
            cblas_dgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, (blasint)(tb ? N : K),
                        (blasint)(tb ? K : N), alpha, B, (blasint)ldb, A, 1, 1.0, C, 1);
        return;
    }
    if (dt == SS_DT_FLOAT32)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb,
                    beta, C, (blasint)N);
    else
        cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb,
                    beta, C, (blasint)N);
}

static ss_status *matmul_run(ss_kctx *k)
{
    const matmul_plan *p = k->state;
    size_t es = ss_dtype_size(k->in[0]->dtype);
    const char *A = k->in[0]->data, *B = k->in[1]->data;
    char *C = k->out[0]->data;
    int64_t M = p->M, K = p->K, N = p->N;
    if (K == 0) {
        memset(C, 0, k->out[0]->nbytes);
        return NULL;
    }
    if (p->kc.path == PATH_DNNL)
        return ss_dnnl_matmul_run(p->kc.dnnl, (const float *)A, (const float *)B, NULL, (float *)C,
                                  k->scratch);
    if (p->kc.path == PATH_Q8) {
        ss_gemm_q8(M * p->n_batch, N, K, (const float *)A, K, p->kc.packed, false, (float *)C, N,
                   p->kc.threads, k->scratch);
        return NULL;
    }
    if (p->kc.path == PATH_BF16) {
        ss_gemm_bf16(M * p->n_batch, N, K, (const float *)A, K, p->kc.packed, false, (float *)C, N,
                     p->kc.threads, k->scratch);
        return NULL;
    }
    if (p->kc.path == PATH_F32P) {
        ss_gemm_f32p(M * p->n_batch, N, K, (const float *)A, K, p->kc.packed, false, (float *)C, N,
                     p->kc.threads);
        return NULL;
    }
    if (p->kc.path == PATH_OWN) {
        ss_gemm_small(p->kc.small, M * p->n_batch, N, K, 1.0f, (const float *)A, K,
                      (const float *)B, N, false, (float *)C, N, p->kc.threads);
        return NULL;
    }
    if (p->fold_a) {
        ss_op_blas_gemm(k->in[0]->dtype, false, false, M * p->n_batch, N, K, 1.0f, A, K, B, N, 0.0f,
                        C);
        return NULL;
    }
    int64_t idx[SS_MAX_DIMS] = {0};
    for (int64_t bi = 0; bi < p->n_batch; bi++) {
        int64_t ao = 0, bo = 0;
        for (int d = 0; d < p->batch_nd; d++)
            ao += idx[d] * p->a_stride[d], bo += idx[d] * p->b_stride[d];
        ss_op_blas_gemm(k->in[0]->dtype, false, false, M, N, K, 1.0f, A + (size_t)(ao * M * K) * es,
                        K, B + (size_t)(bo * K * N) * es, N, 0.0f, C + (size_t)(bi * M * N) * es);
        for (int d = p->batch_nd - 1; d >= 0 && ++idx[d] == p->batch[d]; d--)
            idx[d] = 0;
    }
    return NULL;
}

/* ------------------------------------------------------------------ Gemm */

typedef struct {
    bool ta, tb;
    int64_t M, N, K;
    float alpha, beta;
    kernel_choice kc;
    bool dnnl_bias; /* oneDNN adds C itself */
} gemm_plan;

static void gemm_release(void *state)
{
    release_choice(&((gemm_plan *)state)->kc);
}

/* Gemm through oneDNN: transposes are stride swaps, C (beta * C when constant) is the bias.
 * alpha != 1, and beta != 1 on a C known only at run time, stay with the other kernels. */
static ss_status *gemm_dnnl(ss_kctx *k, gemm_plan *p)
{
    const ss_tensor *c = k->n_in > 2 ? k->in[2] : NULL;
    const ss_tensor *cv = c ? ss_kctx_value(k, 2) : NULL;
    bool c_const = cv && cv->data;
    bool use_c = c && p->beta != 0.0f;
    if (p->alpha != 1.0f || (use_c && p->beta != 1.0f && !c_const)) return NULL;
    ss_dnnl_matmul_desc d = {.nd = 2};
    d.src_dims[0] = d.dst_dims[0] = p->M;
    d.src_dims[1] = d.wei_dims[0] = p->K;
    d.wei_dims[1] = d.dst_dims[1] = p->N;
    d.src_strides[0] = p->ta ? 1 : p->K, d.src_strides[1] = p->ta ? p->M : 1;
    d.wei_strides[0] = p->tb ? 1 : p->N, d.wei_strides[1] = p->tb ? p->K : 1;
    const ss_tensor *bv = ss_kctx_value(k, 1);
    d.wei_const = bv && bv->data ? bv->data : NULL;
    if (use_c) {
        d.has_bias = true;
        d.bias_dims[0] = c->ndim == 2 ? c->dims[0] : 1;
        d.bias_dims[1] = c->ndim >= 1 ? c->dims[c->ndim - 1] : 1;
        d.bias_const = c_const ? cv->data : NULL;
        d.bias_scale = p->beta;
    }
    ss_status *st = try_dnnl(k, &d, 1, &p->kc);
    p->dnnl_bias = use_c && p->kc.path == PATH_DNNL;
    return st;
}

static ss_status *gemm_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 3);
    if (!st) st = ss_op_expect_dtype(k, 0, float_types, 2);
    if (st) return st;
    const ss_tensor *a = k->in[0], *b = k->in[1], *c = k->n_in > 2 ? k->in[2] : NULL;
    if (a->ndim != 2 || b->ndim != 2)
        return ss_op_err(k, SS_ERR_INVALID, "A and B must be matrices");
    if (a->dtype != b->dtype || (c && c->dtype != a->dtype))
        return ss_op_err(k, SS_ERR_INVALID, "inputs have different types");
    gemm_plan *p = calloc(1, sizeof *p);
    if (!p) return ss_errf(SS_ERR_NOMEM, "out of memory");
    k->state = p;
    p->ta = ss_onnx_attr_int(k->node, "transA", 0) != 0;
    p->tb = ss_onnx_attr_int(k->node, "transB", 0) != 0;
    p->alpha = ss_onnx_attr_float(k->node, "alpha", 1.0f);
    p->beta = ss_onnx_attr_float(k->node, "beta", 1.0f);
    if (ss_onnx_attr_find(k->node, "broadcast"))
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "attribute 'broadcast' (opset < 7) is not supported");
    p->M = p->ta ? a->dims[1] : a->dims[0];
    p->K = p->ta ? a->dims[0] : a->dims[1];
    int64_t kb = p->tb ? b->dims[1] : b->dims[0];
    p->N = p->tb ? b->dims[0] : b->dims[1];
    if (kb != p->K)
        return ss_op_err(k, SS_ERR_INVALID, "inner dims differ (%lld vs %lld)", (long long)p->K,
                         (long long)kb);
    if (c) { /* C broadcasts unidirectionally to [M, N] */
        int64_t cm = c->ndim == 2 ? c->dims[0] : 1;
        int64_t cn = c->ndim >= 1 ? c->dims[c->ndim - 1] : 1;
        if (c->ndim > 2 || (cm != 1 && cm != p->M) || (cn != 1 && cn != p->N))
            return ss_op_err(k, SS_ERR_INVALID, "C does not broadcast to [%lld,%lld]",
                             (long long)p->M, (long long)p->N);
    }
    ss_kernels mode = ss_kernels_mode();
    if (!p->ta && p->alpha == 1.0f) st = try_q8(k, p->M, p->K, p->N, p->tb, &p->kc);
    if (!st && p->kc.path == PATH_BLAS && !p->ta && p->alpha == 1.0f)
        st = try_bf16(k, p->M, p->K, p->N, p->tb, &p->kc);
    if (!st && p->kc.path == PATH_BLAS && !p->ta && p->alpha == 1.0f)
        st = try_f32p(k, p->M, p->K, p->N, p->tb, &p->kc);
    if (!st && p->kc.path == PATH_BLAS && ss_kernels_use_dnnl(mode, a->dtype, p->M, p->K, p->N))
        st = gemm_dnnl(k, p);
    if (st) return st;
    if (p->kc.path == PATH_BLAS && mode != SS_KERNELS_BLAS && !p->ta && !p->tb) {
        p->kc.small = small_variant(k, 1, p->M, &p->kc.threads);
        if (p->kc.small != SS_GEMM_AUTO) p->kc.path = PATH_OWN;
    }
    ss_tensor *o = k->out[0];
    o->dtype = a->dtype;
    o->ndim = 2;
    o->dims[0] = p->M;
    o->dims[1] = p->N;
    return NULL;
}

static void fill_bias(const ss_tensor *c, ss_dtype dt, int64_t M, int64_t N, float beta, void *out)
{
    int64_t cm = c->ndim == 2 ? c->dims[0] : 1;
    int64_t cn = c->ndim >= 1 ? c->dims[c->ndim - 1] : 1;
    for (int64_t i = 0; i < M; i++) {
        int64_t ci = cm == 1 ? 0 : i;
        if (dt == SS_DT_FLOAT32) {
            const float *src = (const float *)c->data + ci * cn;
            float *dst = (float *)out + i * N;
            if (cn == 1)
                for (int64_t j = 0; j < N; j++)
                    dst[j] = beta * src[0];
            else
                for (int64_t j = 0; j < N; j++)
                    dst[j] = beta * src[j];
        } else {
            const double *src = (const double *)c->data + ci * cn;
            double *dst = (double *)out + i * N;
            if (cn == 1)
                for (int64_t j = 0; j < N; j++)
                    dst[j] = beta * src[0];
            else
                for (int64_t j = 0; j < N; j++)
                    dst[j] = beta * src[j];
        }
    }
}

static ss_status *gemm_run(ss_kctx *k)
{
    const gemm_plan *p = k->state;
    const ss_tensor *a = k->in[0], *b = k->in[1], *c = k->n_in > 2 ? k->in[2] : NULL;
    void *out = k->out[0]->data;
    if (p->kc.path == PATH_DNNL)
        return ss_dnnl_matmul_run(p->kc.dnnl, a->data, b->data, p->dnnl_bias ? c->data : NULL, out,
                                  k->scratch);
    float beta = 0.0f;
    if (c && p->beta != 0.0f) {
        fill_bias(c, a->dtype, p->M, p->N, p->beta, out);
        beta = 1.0f;
    }
    if (p->K == 0 || p->alpha == 0.0f) {
        if (beta == 0.0f) memset(out, 0, k->out[0]->nbytes);
        return NULL;
    }
    if (p->kc.path == PATH_Q8) {
        ss_gemm_q8(p->M, p->N, p->K, a->data, a->dims[1], p->kc.packed, beta != 0.0f, out, p->N,
                   p->kc.threads, k->scratch);
        return NULL;
    }
    if (p->kc.path == PATH_BF16) {
        ss_gemm_bf16(p->M, p->N, p->K, a->data, a->dims[1], p->kc.packed, beta != 0.0f, out, p->N,
                     p->kc.threads, k->scratch);
        return NULL;
    }
    if (p->kc.path == PATH_F32P) {
        ss_gemm_f32p(p->M, p->N, p->K, a->data, a->dims[1], p->kc.packed, beta != 0.0f, out, p->N,
                     p->kc.threads);
        return NULL;
    }
    if (p->kc.path == PATH_OWN) {
        ss_gemm_small(p->kc.small, p->M, p->N, p->K, p->alpha, a->data, a->dims[1], b->data,
                      b->dims[1], beta != 0.0f, out, p->N, p->kc.threads);
        return NULL;
    }
    ss_op_blas_gemm(a->dtype, p->ta, p->tb, p->M, p->N, p->K, p->alpha, a->data, a->dims[1],
                    b->data, b->dims[1], beta, out);
    return NULL;
}

const ss_op_def ss_ops_matmul[] = {
    {"", "MatMul", 1, 21, matmul_infer, matmul_run, 0, matmul_release, matmul_fuse},
    {"", "Gemm", 7, 21, gemm_infer, gemm_run, 0, gemm_release},
    {0},
};
