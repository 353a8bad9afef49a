/*
 * Broadcast planning and the row driver shared by the elementwise op families (see
 * broadcast.h). Planning happens once per plan in infer; ss_ew_plan_run allocates nothing.
 */
#include "broadcast.h"
#include "gemm_kernel.h"

#include <stdio.h>
#include <string.h>

ss_status *ss_bcast_shape(const ss_kctx *k, int n, const ss_tensor *const *ins, ss_tensor *out)
{
    int nd = 0;
    for (int i = 0; i < n; i++)
        if (ins[i]->ndim > nd) nd = ins[i]->ndim;
    int64_t dims[SS_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        int64_t v = 1;
        for (int i = 0; i < n; i++) {
            int id = d - (nd - ins[i]->ndim);
            int64_t di = id >= 0 ? ins[i]->dims[id] : 1;
            if (di == 1) continue;
            if (v != 1 && v != di) {
                char msg[640] = "", sb[128];
                size_t len = 0;
                for (int j = 0; j < n && len + 140 < sizeof msg; j++) {
                    ss_shape_str(ins[j]->ndim, ins[j]->dims, sb, sizeof sb);
                    len +=
                        (size_t)snprintf(msg + len, sizeof msg - len, "%s%s", j ? " and " : "", sb);
                }
                return ss_op_err(k, SS_ERR_INVALID, "shapes %s do not broadcast", msg);
            }
            v = di;
        }
        dims[d] = v;
    }
    out->ndim = nd;
    memcpy(out->dims, dims, sizeof(int64_t) * (size_t)nd);
    return NULL;
}

void ss_ew_plan_init(ss_ew_plan *p, int n, const ss_tensor *const *ins, int out_ndim,
                     const int64_t *out_dims, ss_ew_fn fn, ss_dtype out_dt, bool halves)
{
    memset(p, 0, sizeof *p);
    p->n_in = n;
    p->fn = fn;
    p->out_dt = out_dt;
    p->out_es = ss_dtype_size(out_dt);
    p->cvt_out = halves && ss_ew_is_half(out_dt);
    for (int i = 0; i < n; i++) {
        p->in_dt[i] = ins[i]->dtype;
        p->in_es[i] = ss_dtype_size(ins[i]->dtype);
        if (halves && ss_ew_is_half(ins[i]->dtype)) p->cvt_in |= 1u << i;
    }
    p->numel = ss_shape_numel(out_ndim, out_dims);
    /* has[i][d]: operand i spans output dim d (else it broadcasts there). Size-1 output dims
     * are dropped; neighbours with the same has-pattern for every operand are merged. */
    int64_t dims[SS_MAX_DIMS];
    unsigned has[SS_MAX_DIMS]; /* bit i per operand */
    int nd = 0;
    for (int d = 0; d < out_ndim; d++) {
        if (out_dims[d] == 1) continue;
        unsigned h = 0;
        for (int i = 0; i < n; i++) {
            int id = d - (out_ndim - ins[i]->ndim);
            if (id >= 0 && ins[i]->dims[id] != 1) h |= 1u << i;
        }
        if (nd > 0 && has[nd - 1] == h) {
            dims[nd - 1] *= out_dims[d];
        } else {
            dims[nd] = out_dims[d];
            has[nd++] = h;
        }
    }
    if (nd == 0) { /* a single element */
        dims[0] = 1;
        has[0] = (1u << n) - 1;
        nd = 1;
    }
    p->ndim = nd;
    memcpy(p->dims, dims, sizeof(int64_t) * (size_t)nd);
    for (int i = 0; i < n; i++) {
        int64_t run = 1;
        for (int d = nd - 1; d >= 0; d--) {
            bool h = has[d] & (1u << i);
            p->stride[i][d] = h ? run : 0;
            if (h) run *= dims[d];
        }
    }
    p->inner = dims[nd - 1];
    p->mode = has[nd - 1];
}

ss_status *ss_ew_plan_state(ss_kctx *k, int n, const ss_tensor *const *ins,
                            const ss_tensor *out_shape, ss_ew_fn fn, ss_dtype out_dt, bool halves,
                            ss_ew_plan **out)
{
    ss_ew_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    ss_ew_plan_init(p, n, ins, out_shape->ndim, out_shape->dims, fn, out_dt, halves);
    p->threads = ss_op_par_parts(k, p->numel);
    if (out) *out = p;
    return NULL;
}

int ss_op_par_parts(const ss_kctx *k, int64_t elems)
{
    int threads = ss_kctx_threads(k);
    return threads > 1 && elems >= SS_EW_PAR_MIN_ELEMS ? ss_gemm_pool_reserve(threads) : 1;
}

void ss_ew_half_to_f32(ss_dtype dt, const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    if (dt == SS_DT_BFLOAT16) {
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)s[i] << 16;
            memcpy(&dst[i], &u, 4);
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            dst[i] = ss_f16_to_f32(s[i]);
    }
}

void ss_ew_f32_to_half(ss_dtype dt, const float *src, void *dst, int64_t n)
{
    uint16_t *d = dst;
    if (dt == SS_DT_BFLOAT16)
        for (int64_t i = 0; i < n; i++)
            d[i] = ss_f32_to_bf16(src[i]);
    else
        for (int64_t i = 0; i < n; i++)
            d[i] = ss_f32_to_f16(src[i]);
}

/* One row through float32 stack buffers for float16/bfloat16 operands or output. */
static void run_row_converted(const ss_ew_plan *p, const void *const *in, void *out, int64_t n,
                              unsigned mode)
{
    float buf[SS_BC_MAX + 1][SS_EW_CHUNK];
    const void *ptr[SS_BC_MAX];
    for (int i = 0; i < p->n_in; i++) /* scalar operands are converted once */
        if ((p->cvt_in & (1u << i)) && !(mode & (1u << i)))
            ss_ew_half_to_f32(p->in_dt[i], in[i], buf[i], 1);
    for (int64_t o = 0; o < n; o += SS_EW_CHUNK) {
        int64_t m = n - o < SS_EW_CHUNK ? n - o : SS_EW_CHUNK;
        for (int i = 0; i < p->n_in; i++) {
            bool vec = mode & (1u << i), cvt = p->cvt_in & (1u << i);
            const char *src = (const char *)in[i] + (vec ? (size_t)o * p->in_es[i] : 0);
            if (cvt && vec) ss_ew_half_to_f32(p->in_dt[i], src, buf[i], m);
            ptr[i] = cvt ? (const void *)buf[i] : (const void *)src;
        }
        char *dst = (char *)out + (size_t)o * p->out_es;
        p->fn(ptr, p->cvt_out ? (void *)buf[SS_BC_MAX] : (void *)dst, m, mode, &p->prm);
        if (p->cvt_out) ss_ew_f32_to_half(p->out_dt, buf[SS_BC_MAX], dst, m);
    }
}

static inline void run_row(const ss_ew_plan *p, const void *const *in, void *out, int64_t n,
                           unsigned mode)
{
    if (p->cvt_in || p->cvt_out)
        run_row_converted(p, in, out, n, mode);
    else
        p->fn(in, out, n, mode, &p->prm);
}

/* Output units [u0, u1): elements of the one row when the layout has one dim, else rows. */
static void run_units(const ss_ew_plan *p, const void *const *in, void *out, int64_t u0, int64_t u1)
{
    const void *ptr[SS_BC_MAX];
    if (p->ndim == 1) {
        for (int i = 0; i < p->n_in; i++) /* vector operands advance, scalars stay */
            ptr[i] = (const char *)in[i] + ((p->mode >> i) & 1u ? (size_t)u0 * p->in_es[i] : 0);
        run_row(p, ptr, (char *)out + (size_t)u0 * p->out_es, u1 - u0, p->mode);
        return;
    }
    int64_t idx[SS_MAX_DIMS] = {0}, off[SS_BC_MAX] = {0};
    int outer_nd = p->ndim - 1;
    for (int64_t d = outer_nd - 1, r = u0; d >= 0; d--) { /* row u0's index and offsets */
        idx[d] = r % p->dims[d];
        r /= p->dims[d];
        for (int i = 0; i < p->n_in; i++)
            off[i] += idx[d] * p->stride[i][d];
    }
    size_t row_bytes = (size_t)p->inner * p->out_es;
    char *y = (char *)out + (size_t)u0 * row_bytes;
    for (int64_t u = u0; u < u1; u++, y += row_bytes) {
        for (int i = 0; i < p->n_in; i++)
            ptr[i] = (const char *)in[i] + (size_t)off[i] * p->in_es[i];
        run_row(p, ptr, y, p->inner, p->mode);
        for (int d = outer_nd - 1; d >= 0; d--) {
            for (int i = 0; i < p->n_in; i++)
                off[i] += p->stride[i][d];
            if (++idx[d] < p->dims[d]) break;
            for (int i = 0; i < p->n_in; i++)
                off[i] -= p->stride[i][d] * p->dims[d];
            idx[d] = 0;
        }
    }
}

static unsigned long n_parallel_runs;

unsigned long ss_ew_parallel_runs(void)
{
    return __atomic_load_n(&n_parallel_runs, __ATOMIC_RELAXED);
}

typedef struct {
    const ss_ew_plan *p;
    const void *const *in;
    void *out;
    int64_t units, chunk; /* units claimed per step */
    int64_t next;         /* the next unclaimed unit (__atomic_fetch_add) */
} ew_job;

/* Claims chunks of units until none is left (see ss_pool_run). */
static void ew_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    ew_job *j = ctx;
    for (;;) {
        int64_t u0 = __atomic_fetch_add(&j->next, j->chunk, __ATOMIC_RELAXED);
        if (u0 >= j->units) return;
        run_units(j->p, j->in, j->out, u0, u0 + j->chunk < j->units ? u0 + j->chunk : j->units);
    }
}

void ss_ew_plan_run(const ss_ew_plan *p, const void *const *in, void *out)
{
    if (p->numel <= 0) return;
    ew_job j = {p, in, out, p->ndim == 1 ? p->inner : p->numel / p->inner, 0, 0};
    if (p->threads > 1) {
        /* about 4 chunks per thread, so a late thread leaves its share to the others; a row's
         * elements in multiples of 16 so that chunks do not share float32 cache lines */
        int64_t align = p->ndim == 1 ? 16 : 1, per = j.units / (4 * (int64_t)p->threads) + 1;
        j.chunk = (per + align - 1) / align * align;
        __atomic_add_fetch(&n_parallel_runs, 1, __ATOMIC_RELAXED);
        ss_pool_run(p->threads, ew_part, &j);
    } else {
        run_units(p, in, out, 0, j.units);
    }
}

ss_status *ss_ew_legacy_operand(const ss_kctx *k, const ss_tensor *a, const ss_tensor *b,
                                ss_tensor *b_out)
{
    *b_out = *b;
    if (k->opset >= 7) return NULL;
    char sa[128], sb[128];
    if (ss_onnx_attr_int(k->node, "broadcast", 0) == 0) {
        if (!ss_shape_equal(a->ndim, a->dims, b->ndim, b->dims))
            return ss_op_err(k, SS_ERR_INVALID,
                             "shapes %s and %s differ and broadcast=0 (opset %lld)",
                             ss_shape_str(a->ndim, a->dims, sa, sizeof sa),
                             ss_shape_str(b->ndim, b->dims, sb, sizeof sb), (long long)k->opset);
        return NULL;
    }
    if (!ss_onnx_attr_find(k->node, "axis")) return NULL;
    int64_t axis = ss_onnx_attr_int(k->node, "axis", 0);
    if (axis < 0) axis += a->ndim;
    if (axis < 0 || axis + b->ndim > a->ndim)
        return ss_op_err(k, SS_ERR_INVALID, "B %s does not fit A %s at axis %lld",
                         ss_shape_str(b->ndim, b->dims, sb, sizeof sb),
                         ss_shape_str(a->ndim, a->dims, sa, sizeof sa), (long long)axis);
    for (int64_t d = axis + b->ndim; d < a->ndim; d++)
        b_out->dims[b_out->ndim++] = 1;
    return NULL;
}

ss_status *ss_ew_run(ss_kctx *k)
{
    const ss_ew_plan *p = k->state;
    const void *in[SS_BC_MAX] = {0};
    for (int i = 0; i < p->n_in; i++)
        in[i] = k->in[i]->data;
    ss_ew_plan_run(p, in, k->out[0]->data);
    return NULL;
}
