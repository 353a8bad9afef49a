/*
 * oneDNN matmul primitives for the runtime (see onednn.h) and the SHARDSERVE_KERNELS switch.
 *
 * One CPU engine per process, made on first use (plan time). Each ss_dnnl_matmul owns its
 * primitive, a stream and memory objects created with DNNL_MEMORY_NONE whose data handles are
 * re-pointed on every run (a pointer swap in 2.6). Constant weights are reordered once into the
 * primitive's preferred layout; in bf16 mode into bf16, and the f32 activations are reordered to
 * bf16 per run into the scratch area, after the primitive's own scratchpad.
 */
#include "onednn.h"
#include "gemm_kernel.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 64

/* libgomp's (oneDNN's OpenMP runtime), declared here rather than through a compiler's omp.h,
 * which under clang belongs to another runtime. */
extern int omp_get_max_threads(void);
extern void omp_set_num_threads(int n);

/* Binary post-ops' second operands (conv and matmul): constants copied, tensors bound per run. */
typedef struct {
    int n;
    int idx[SS_EPILOGUE_MAX_POSTOPS]; /* their post-op index */
    dnnl_memory_t mem[SS_EPILOGUE_MAX_POSTOPS];
    const ss_tensor *t[SS_EPILOGUE_MAX_POSTOPS]; /* operand read at run time, or NULL */
    float *data[SS_EPILOGUE_MAX_POSTOPS];        /* copied constant operand, or NULL */
} bin_ops;

static dnnl_status_t append_postops(const ss_postop *po_list, int n_po, bool sum, int nd,
                                    const int64_t *yd, dnnl_primitive_attr_t attr);
static ss_status *bin_ops_make(bin_ops *b, const ss_postop *po_list, int n_po, int first,
                               int64_t chan, dnnl_primitive_desc_t pd);
static int bin_ops_args(const bin_ops *b, dnnl_exec_arg_t *args);
static void bin_ops_free(bin_ops *b);

struct ss_dnnl_matmul {
    bin_ops bin; /* post-ops' operands */
    int n_po;
    dnnl_primitive_t prim;
    dnnl_stream_t stream;
    dnnl_memory_t src, wei, bias, dst, scratch;
    dnnl_primitive_t src_reorder; /* bf16: f32 activations -> bf16 */
    dnnl_memory_t src_f32;
    size_t prim_scratch, src_bf16_bytes;
    void *wei_packed, *bias_packed; /* owned copies (NULL: the caller's bytes are used) */
    ss_packed *wei_ref;             /* or the session's packed copy */
    bool wei_const, bias_const, owns_weights;
    int threads;
    char impl[64];
};

static dnnl_engine_t engine;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static ss_kernels forced;
static unsigned long n_calls, n_bf16_calls, n_mm_po_calls, n_conv_calls, n_conv_po_calls,
    n_wino_calls, n_packs, n_reorders, n_own_relayouts;
static int layout_off = -1; /* -1: not yet read from SHARDSERVE_LAYOUT */

/* ------------------------------------------------------------------ kernel selection */

static const char *kernel_names[] = {"auto", "onednn", "own", "blas"};

const char *ss_kernels_name(ss_kernels k)
{
    return (unsigned)k < 4 ? kernel_names[k] : "?";
}

void ss_kernels_force(ss_kernels k)
{
    forced = k;
}

static _Thread_local ss_kernels scoped; /* SS_KERNELS_AUTO: none */

ss_kernels ss_kernels_scope(ss_kernels k)
{
    ss_kernels was = scoped;
    scoped = k;
    return was;
}

ss_kernels ss_kernels_mode(void)
{
    if (scoped != SS_KERNELS_AUTO) return scoped;
    if (forced != SS_KERNELS_AUTO) return forced;
    const char *e = getenv("SHARDSERVE_KERNELS");
    if (!e || !*e) return SS_KERNELS_AUTO;
    for (int i = 0; i < 4; i++)
        if (strcmp(e, kernel_names[i]) == 0) return (ss_kernels)i;
    static bool warned;
    if (!warned) {
        warned = true;
        SS_WARN("SHARDSERVE_KERNELS='%s' is not one of auto, onednn, own, blas: using auto", e);
    }
    return SS_KERNELS_AUTO;
}

/* Shape classes, from bench_kernels on AMD EPYC (Zen 4, avx512_core_bf16), 1 thread, us per
 * call own / OpenBLAS / oneDNN (bench/RUNTIME.md):
 *  - tiny (1x64x32 Gemm): 0.3 / 0.3 / 0.7: a primitive's fixed cost per call dominates;
 *  - GEMV (M == 1, 1x4096x4096): 3600 / 3270 / 4830: memory-bound, the own GEMV streams W;
 *  - everything else: oneDNN ahead or level (128x96x16 22 / 4.7 / 5.0, 8x256x256 Gemm
 *    38 / 39 / 14, 32x4096x4096 19500 / 22200 / 13000).
 * Below AUTO_DNNL_MIN_PAR_MACS a primitive runs on one thread: at 2 threads the fork/join cost
 * tripled 128x96x16 (5 -> 15 us with sleeping workers; 2 -> 5-7 us with libgomp's team spinning,
 * the seed model in bench_runtime). Since the team spins between regions (the one pool), 1M
 * took MobileNetV2 at 2 threads from 2.85-2.97 to 2.58-2.60 ms (4M before; 0: 2.46-2.53 ms, but
 * BERT-tiny 42 -> 48 us); BERT-tiny and GPT-2-tiny stayed within the noise at 1M. */
#define AUTO_DNNL_MIN_MACS (1 << 15)
#define AUTO_DNNL_MIN_PAR_MACS (1 << 20)

bool ss_kernels_use_dnnl(ss_kernels mode, ss_dtype dt, int64_t M, int64_t K, int64_t N)
{
    if (dt != SS_DT_FLOAT32 || M <= 0 || K <= 0 || N <= 0) return false;
    if (mode == SS_KERNELS_ONEDNN) return true;
    return mode == SS_KERNELS_AUTO && M > 1 &&
           (double)M * (double)K * (double)N >= AUTO_DNNL_MIN_MACS;
}

int ss_dnnl_threads(int64_t macs, int threads)
{
    return macs < AUTO_DNNL_MIN_PAR_MACS ? 1 : threads;
}

unsigned long ss_dnnl_calls(void)
{
    return __atomic_load_n(&n_calls, __ATOMIC_RELAXED);
}

unsigned long ss_dnnl_packs(void)
{
    return __atomic_load_n(&n_packs, __ATOMIC_RELAXED);
}

unsigned long ss_dnnl_bf16_calls(void)
{
    return __atomic_load_n(&n_bf16_calls, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ engine and ISA */

static void engine_init(void)
{
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) engine = NULL;
}

static dnnl_engine_t get_engine(void)
{
    pthread_once(&engine_once, engine_init);
    return engine;
}

const char *ss_dnnl_isa_name(void)
{
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41:
        return "sse41";
    case dnnl_cpu_isa_avx:
        return "avx";
    case dnnl_cpu_isa_avx2:
        return "avx2";
    case dnnl_cpu_isa_avx2_vnni:
        return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core:
        return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni:
        return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16:
        return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx:
        return "avx512_core_amx";
    default:
        return "other";
    }
}

bool ss_dnnl_bf16_native(void)
{
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    return (isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
           (unsigned)dnnl_cpu_isa_avx512_core_bf16;
}

/* ------------------------------------------------------------------ helpers */

static ss_status *dnnl_err(dnnl_status_t s, const char *what)
{
    ss_code code = s == dnnl_unimplemented   ? SS_ERR_UNSUPPORTED
                   : s == dnnl_out_of_memory ? SS_ERR_NOMEM
                                             : SS_ERR_INTERNAL;
    return ss_errf(code, "oneDNN %s failed (status %d)", what, (int)s);
}

static void set_threads(int threads)
{
    if (threads > 0 && omp_get_max_threads() != threads) omp_set_num_threads(threads);
}

static size_t round_up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static dnnl_status_t plain_md(dnnl_memory_desc_t *md, int nd, const int64_t *dims,
                              const int64_t *strides, dnnl_data_type_t dt)
{
    dnnl_dims_t d, s;
    for (int i = 0; i < nd; i++)
        d[i] = dims[i];
    if (strides) {
        for (int i = 0; i < nd; i++)
            s[i] = strides[i];
        return dnnl_memory_desc_init_by_strides(md, nd, d, dt, s);
    }
    static const dnnl_format_tag_t tags[] = {
        dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde, dnnl_abcdef};
    if (nd <= 6) return dnnl_memory_desc_init_by_tag(md, nd, d, dt, tags[nd]);
    int64_t st = 1; /* dense row-major beyond 6 dims */
    for (int i = nd - 1; i >= 0; i--)
        s[i] = st, st *= dims[i];
    return dnnl_memory_desc_init_by_strides(md, nd, d, dt, s);
}

/* Runs a one-shot reorder from `from` (md, data) to `to` (md, data) at plan time. */
static ss_status *reorder_once(const dnnl_memory_desc_t *from_md, const void *from,
                               const dnnl_memory_desc_t *to_md, void *to, int threads)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t p = NULL;
    dnnl_memory_t a = NULL, b = NULL;
    dnnl_stream_t s = NULL;
    dnnl_status_t r = dnnl_reorder_primitive_desc_create(&pd, from_md, engine, to_md, engine, NULL);
    if (r == dnnl_success) r = dnnl_primitive_create(&p, pd);
    if (r == dnnl_success) r = dnnl_memory_create(&a, from_md, engine, (void *)from);
    if (r == dnnl_success) r = dnnl_memory_create(&b, to_md, engine, to);
    if (r == dnnl_success) r = dnnl_stream_create(&s, engine, dnnl_stream_default_flags);
    if (r == dnnl_success) {
        set_threads(threads);
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}};
        r = dnnl_primitive_execute(p, s, 2, args);
        if (r == dnnl_success) r = dnnl_stream_wait(s);
    }
    if (s) dnnl_stream_destroy(s);
    if (a) dnnl_memory_destroy(a);
    if (b) dnnl_memory_destroy(b);
    if (p) dnnl_primitive_destroy(p);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return r == dnnl_success ? NULL : dnnl_err(r, "weight reorder");
}

/* ------------------------------------------------------------------ matmul */

void ss_dnnl_matmul_free(ss_dnnl_matmul *m)
{
    if (!m) return;
    dnnl_memory_t mems[] = {m->src, m->wei, m->bias, m->dst, m->scratch, m->src_f32};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        if (mems[i]) dnnl_memory_destroy(mems[i]);
    if (m->prim) dnnl_primitive_destroy(m->prim);
    if (m->src_reorder) dnnl_primitive_destroy(m->src_reorder);
    if (m->stream) dnnl_stream_destroy(m->stream);
    bin_ops_free(&m->bin);
    ss_packed_release(m->wei_ref);
    free(m->wei_packed);
    free(m->bias_packed);
    free(m);
}

const char *ss_dnnl_matmul_impl(const ss_dnnl_matmul *m)
{
    return m->impl;
}

bool ss_dnnl_matmul_owns_weights(const ss_dnnl_matmul *m)
{
    return m->owns_weights;
}

static bool same_md(const void *a, const void *b)
{
    return dnnl_memory_desc_equal(a, b);
}

/* src (user_md) in the layout `want`: the session's copy if it has one, else reordered now into
 * a new buffer that goes to the session (*ref) or, without one, to the caller (*owned). */
static ss_status *packed_copy(ss_kctx *k, const void *src, const dnnl_memory_desc_t *user_md,
                              const dnnl_memory_desc_t *want, int threads, ss_packed **ref,
                              void **owned, void **handle)
{
    if (k && (*ref = ss_kctx_packed_find(k, src, want, same_md))) {
        *handle = ss_packed_data(*ref);
        return NULL;
    }
    size_t sz = dnnl_memory_desc_get_size(want);
    void *buf = aligned_alloc(ALIGN, round_up(sz ? sz : 1));
    if (!buf) return ss_errf(SS_ERR_NOMEM, "cannot allocate %zu bytes of packed weights", sz);
    ss_status *st = reorder_once(user_md, src, want, buf, threads);
    if (st) {
        free(buf);
        return st;
    }
    __atomic_add_fetch(&n_packs, 1, __ATOMIC_RELAXED);
    *handle = buf;
    if (!k || !(*ref = ss_kctx_packed_add(k, src, want, sizeof *want, buf))) *owned = buf;
    return NULL;
}

/* Constant weights into the primitive's layout: a copy unless the layout is the given one. */
static ss_status *pack_weights(ss_dnnl_matmul *m, const ss_dnnl_matmul_desc *d,
                               const dnnl_memory_desc_t *user_md, const dnnl_memory_desc_t *want)
{
    void *handle = (void *)d->wei_const;
    if (!dnnl_memory_desc_equal(user_md, want)) {
        ss_status *st = packed_copy(d->k, d->wei_const, user_md, want, d->threads, &m->wei_ref,
                                    &m->wei_packed, &handle);
        if (st) return st;
        m->owns_weights = true;
    }
    return dnnl_memory_create(&m->wei, want, engine, handle) == dnnl_success
               ? NULL
               : ss_errf(SS_ERR_NOMEM, "oneDNN memory");
}

/* A constant bias: one scaled dense copy (its bytes are the model's, beta applies). */
static ss_status *copy_bias(ss_dnnl_matmul *m, const ss_dnnl_matmul_desc *d,
                            const dnnl_memory_desc_t *md)
{
    size_t n = dnnl_memory_desc_get_size(md) / sizeof(float);
    m->bias_packed = aligned_alloc(ALIGN, round_up(n * sizeof(float) + 1));
    if (!m->bias_packed) return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        ((float *)m->bias_packed)[i] = d->bias_scale * d->bias_const[i];
    m->bias_const = true;
    return dnnl_memory_create(&m->bias, md, engine, m->bias_packed) == dnnl_success
               ? NULL
               : ss_errf(SS_ERR_NOMEM, "oneDNN memory");
}

static dnnl_status_t make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                                  dnnl_primitive_t *out);

/* The per-run f32 -> bf16 reorder of the activations (bf16 mode). */
static ss_status *make_src_reorder(ss_dnnl_matmul *m, const dnnl_memory_desc_t *f32_md,
                                   const dnnl_memory_desc_t *bf16_md)
{
    dnnl_status_t r = make_reorder(f32_md, bf16_md, &m->src_reorder);
    if (r == dnnl_success) r = dnnl_memory_create(&m->src_f32, f32_md, engine, DNNL_MEMORY_NONE);
    m->src_bf16_bytes = round_up(dnnl_memory_desc_get_size(bf16_md));
    return r == dnnl_success ? NULL : dnnl_err(r, "activation reorder");
}

/* Few rows (a prompt of a few tokens, a small batch) make the product memory-bound: the
 * primitive then reads the constant weights where they are, as it reads every run's activations.
 * A packed copy would cost a pass over all of W plus fresh pages for it at the first run (GPT-2
 * 124M, 7 rows: 460 ms of a 500 ms first prefill against 33 ms for the products) and win
 * nothing after, where the own GEMV still reads the original for single rows. */
static bool weights_in_place(const ss_dnnl_matmul_desc *d)
{
    int64_t rows = d->src_dims[d->nd - 2];
    for (int i = 0; i < d->nd - 2; i++)
        rows *= d->src_dims[i];
    return !d->bf16 && rows <= SS_DNNL_IN_PLACE_MAX_ROWS;
}

static ss_status *make_primitive(ss_dnnl_matmul *m, const ss_dnnl_matmul_desc *d,
                                 dnnl_primitive_desc_t *pd_out)
{
    dnnl_data_type_t in_dt = d->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t src_md, wei_md, dst_md, bias_md, src_user;
    dnnl_status_t r = plain_md(&src_user, d->nd, d->src_dims, d->src_strides, dnnl_f32);
    if (r == dnnl_success)
        r = d->bf16 ? plain_md(&src_md, d->nd, d->src_dims, NULL, dnnl_bf16)
                    : plain_md(&src_md, d->nd, d->src_dims, d->src_strides, dnnl_f32);
    if (r == dnnl_success) {
        if (d->wei_const && weights_in_place(d)) {
            r = plain_md(&wei_md, d->nd, d->wei_dims, d->wei_strides, dnnl_f32);
        } else if (d->wei_const) {
            dnnl_dims_t wd;
            for (int i = 0; i < d->nd; i++)
                wd[i] = d->wei_dims[i];
            r = dnnl_memory_desc_init_by_tag(&wei_md, d->nd, wd, in_dt, dnnl_format_tag_any);
        } else {
            r = plain_md(&wei_md, d->nd, d->wei_dims, d->wei_strides, dnnl_f32);
        }
    }
    if (r == dnnl_success) r = plain_md(&dst_md, d->nd, d->dst_dims, NULL, dnnl_f32);
    if (r == dnnl_success && d->has_bias)
        r = plain_md(&bias_md, d->nd, d->bias_dims, NULL, dnnl_f32);
    dnnl_matmul_desc_t md;
    if (r == dnnl_success)
        r = dnnl_matmul_desc_init(&md, &src_md, &wei_md, d->has_bias ? &bias_md : NULL, &dst_md);
    dnnl_primitive_attr_t attr = NULL;
    if (r == dnnl_success) r = dnnl_primitive_attr_create(&attr);
    if (r == dnnl_success)
        r = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (r == dnnl_success) r = append_postops(d->po, d->n_po, false, d->nd, d->dst_dims, attr);
    set_threads(d->threads);
    if (r == dnnl_success) r = dnnl_primitive_desc_create(pd_out, &md, attr, engine, NULL);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (r != dnnl_success && d->n_po && (r == dnnl_unimplemented || r == dnnl_invalid_arguments))
        return ss_errf(SS_ERR_UNSUPPORTED, "oneDNN matmul: post-ops not taken");
    if (r != dnnl_success) return dnnl_err(r, "matmul primitive");
    const char *impl = NULL;
    dnnl_primitive_desc_query(*pd_out, dnnl_query_impl_info_str, 0, &impl);
    if (d->require_impl && strcmp(impl ? impl : "?", d->require_impl))
        return ss_errf(SS_ERR_UNSUPPORTED, "oneDNN matmul: %d post-ops would run on %s", d->n_po,
                       impl ? impl : "?");
    ss_status *pst =
        bin_ops_make(&m->bin, d->po, d->n_po, 0, d->nd > 1 ? d->dst_dims[1] : 1, *pd_out);
    if (pst) return pst;
    m->n_po = d->n_po;
    r = dnnl_memory_create(&m->src, &src_md, engine, DNNL_MEMORY_NONE);
    if (r == dnnl_success) r = dnnl_memory_create(&m->dst, &dst_md, engine, DNNL_MEMORY_NONE);
    if (r == dnnl_success && !d->wei_const)
        r = dnnl_memory_create(&m->wei, &wei_md, engine, DNNL_MEMORY_NONE);
    if (r != dnnl_success) return dnnl_err(r, "memory");
    ss_status *st = d->bf16 ? make_src_reorder(m, &src_user, &src_md) : NULL;
    if (!st && d->has_bias)
        st = d->bias_const ? copy_bias(m, d, &bias_md)
             : dnnl_memory_create(&m->bias, &bias_md, engine, DNNL_MEMORY_NONE) == dnnl_success
                 ? NULL
                 : ss_errf(SS_ERR_NOMEM, "oneDNN memory");
    return st;
}

ss_status *ss_dnnl_matmul_create(const ss_dnnl_matmul_desc *d, ss_dnnl_matmul **out,
                                 size_t *scratch_bytes)
{
    *out = NULL;
    *scratch_bytes = 0;
    if (!get_engine()) return ss_errf(SS_ERR_UNSUPPORTED, "oneDNN has no CPU engine");
    if (d->nd < 2 || d->nd > SS_DNNL_MAX_DIMS || (d->bf16 && !d->wei_const))
        return ss_errf(SS_ERR_UNSUPPORTED, "oneDNN matmul: case not handled");
    ss_dnnl_matmul *m = calloc(1, sizeof *m);
    if (!m) return ss_errf(SS_ERR_NOMEM, "out of memory");
    m->threads = d->threads;
    m->wei_const = d->wei_const != NULL;
    dnnl_primitive_desc_t pd = NULL;
    ss_status *st = make_primitive(m, d, &pd);
    if (!st && d->wei_const) {
        dnnl_memory_desc_t user_md;
        plain_md(&user_md, d->nd, d->wei_dims, d->wei_strides, dnnl_f32);
        st = pack_weights(m, d, &user_md,
                          dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
    }
    if (!st) {
        const dnnl_memory_desc_t *sp =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        m->prim_scratch = sp ? round_up(dnnl_memory_desc_get_size(sp)) : 0;
        if (m->prim_scratch &&
            dnnl_memory_create(&m->scratch, sp, engine, DNNL_MEMORY_NONE) != dnnl_success)
            st = ss_errf(SS_ERR_NOMEM, "oneDNN memory");
        const char *impl = NULL;
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        snprintf(m->impl, sizeof m->impl, "%s", impl ? impl : "?");
    }
    if (!st && dnnl_primitive_create(&m->prim, pd) != dnnl_success)
        st = ss_errf(SS_ERR_INTERNAL, "oneDNN: cannot create the matmul primitive");
    if (!st && dnnl_stream_create(&m->stream, engine, dnnl_stream_default_flags) != dnnl_success)
        st = ss_errf(SS_ERR_INTERNAL, "oneDNN: cannot create a stream");
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (st) {
        ss_dnnl_matmul_free(m);
        return st;
    }
    *scratch_bytes = m->prim_scratch + m->src_bf16_bytes;
    *out = m;
    return NULL;
}

ss_status *ss_dnnl_matmul_run(ss_dnnl_matmul *m, const float *src, const float *wei,
                              const float *bias, float *dst, void *scratch)
{
    set_threads(m->threads);
    dnnl_status_t r = dnnl_success;
    if (m->src_reorder) { /* bf16: the activations go to the scratch area after the pad's end */
        void *bf = (char *)scratch + m->prim_scratch;
        dnnl_memory_set_data_handle(m->src_f32, (void *)src);
        dnnl_memory_set_data_handle(m->src, bf);
        dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, m->src_f32}, {DNNL_ARG_TO, m->src}};
        r = dnnl_primitive_execute(m->src_reorder, m->stream, 2, ra);
    } else {
        dnnl_memory_set_data_handle(m->src, (void *)src);
    }
    dnnl_exec_arg_t args[5 + SS_EPILOGUE_MAX_POSTOPS];
    int n = bin_ops_args(&m->bin, args);
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, m->src};
    if (!m->wei_const) dnnl_memory_set_data_handle(m->wei, (void *)wei);
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, m->wei};
    if (m->bias) {
        if (!m->bias_const) dnnl_memory_set_data_handle(m->bias, (void *)bias);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, m->bias};
    }
    dnnl_memory_set_data_handle(m->dst, dst);
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, m->dst};
    if (m->scratch) {
        dnnl_memory_set_data_handle(m->scratch, scratch);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, m->scratch};
    }
    if (r == dnnl_success) r = dnnl_primitive_execute(m->prim, m->stream, n, args);
    if (r == dnnl_success) r = dnnl_stream_wait(m->stream);
    __atomic_add_fetch(m->src_reorder ? &n_bf16_calls : &n_calls, 1, __ATOMIC_RELAXED);
    if (m->n_po) __atomic_add_fetch(&n_mm_po_calls, 1, __ATOMIC_RELAXED);
    return r == dnnl_success ? NULL : dnnl_err(r, "matmul execution");
}

/* ------------------------------------------------------------------ convolution */

/* An activation relayout run by this file instead of a oneDNN reorder: float32, 4-D,
 * channels-last (acdb) <-> 16-channel blocks (aBcd16b), the channels a multiple of 16. ResNet-50
 * on 2 threads has 22 of them a run, around its Winograd Convs: oneDNN 2.6's jit reorder took
 * 1.20 ms of a 22.6 ms run there against 0.32 ms on 1 thread (DNNL_VERBOSE, AMD EPYC Zen 5); a
 * split by pixels on the pool's team writes whole cache lines per thread. */
typedef struct {
    int64_t n, c, hw; /* hw == 0: none (the reorder primitive runs) */
    bool to_blocked;
} relayout;

struct ss_dnnl_conv {
    dnnl_primitive_t prim, x_reorder, y_reorder; /* reorders NULL when the layout is plain */
    relayout x_rl; /* X's, when it arrives channels-last from a layout-pass neighbour (Y's user
                    * layout is plain NCHW or Y stays in the primitive's) */
    dnnl_stream_t stream;
    dnnl_memory_t x_user, y_user, src, wei, bias, dst, scratch;
    size_t prim_scratch, src_bytes, dst_bytes;
    void *wei_packed, *bias_copy;
    ss_packed *wei_ref;
    int threads;
    char impl[64];
    int n_po;
    bin_ops bin;                  /* binary post-ops' operands */
    const ss_tensor *sum_t;       /* sum post-op's operand (post-op 0), or NULL */
    dnnl_memory_t sum_user;       /* it, in its own layout, when a reorder brings it into dst */
    dnnl_primitive_t sum_reorder; /* NULL: the layouts match, a copy */
    size_t sum_bytes;             /* dst's size (the copy) */
};

void ss_dnnl_conv_free(ss_dnnl_conv *c)
{
    if (!c) return;
    dnnl_memory_t mems[] = {c->x_user, c->y_user, c->src,     c->wei,
                            c->bias,   c->dst,    c->scratch, c->sum_user};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        if (mems[i]) dnnl_memory_destroy(mems[i]);
    dnnl_primitive_t prims[] = {c->prim, c->x_reorder, c->y_reorder, c->sum_reorder};
    for (size_t i = 0; i < sizeof prims / sizeof prims[0]; i++)
        if (prims[i]) dnnl_primitive_destroy(prims[i]);
    if (c->stream) dnnl_stream_destroy(c->stream);
    bin_ops_free(&c->bin);
    ss_packed_release(c->wei_ref);
    free(c->wei_packed);
    free(c->bias_copy);
    free(c);
}

const char *ss_dnnl_conv_impl(const ss_dnnl_conv *c)
{
    return c->impl;
}

/* A reorder primitive run per call; it must need no scratchpad (the library's is thread-local). */
static dnnl_status_t make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                                  dnnl_primitive_t *out)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t r = dnnl_primitive_attr_create(&attr);
    if (r == dnnl_success)
        r = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (r == dnnl_success)
        r = dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr);
    if (r == dnnl_success) {
        const dnnl_memory_desc_t *sp =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        if (sp && dnnl_memory_desc_get_size(sp) > 0) r = dnnl_unimplemented;
    }
    if (r == dnnl_success) r = dnnl_primitive_create(out, pd);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return r;
}

static bool has_tag(const dnnl_memory_desc_t *md, dnnl_format_tag_t tag)
{
    dnnl_memory_desc_t t;
    return md->ndims == 4 && md->data_type == dnnl_f32 &&
           dnnl_memory_desc_init_by_tag(&t, 4, md->dims, dnnl_f32, tag) == dnnl_success &&
           dnnl_memory_desc_equal(&t, md);
}

static relayout relayout_of(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to)
{
    static int off_cached = -1; /* plans may be made on several threads at once */
    int off = __atomic_load_n(&off_cached, __ATOMIC_RELAXED);
    if (off < 0) {
        const char *e = getenv("SHARDSERVE_DNNL_RELAYOUT");
        off = e && !strcmp(e, "0");
        __atomic_store_n(&off_cached, off, __ATOMIC_RELAXED);
    }
    relayout rl = {0};
    /* the index math uses from's dims for both sides: require them equal (make_reorder would
     * refuse different ones too, but the decision should not lean on that) */
    if (off || from->ndims != 4 || to->ndims != 4 || from->dims[1] % 16 ||
        memcmp(from->dims, to->dims, 4 * sizeof from->dims[0]))
        return rl;
    bool fwd = has_tag(from, dnnl_acdb) && has_tag(to, dnnl_aBcd16b);
    bool back = has_tag(from, dnnl_aBcd16b) && has_tag(to, dnnl_acdb);
    if (fwd || back)
        rl = (relayout){from->dims[0], from->dims[1], from->dims[2] * from->dims[3], fwd};
    return rl;
}

typedef struct {
    const relayout *rl;
    const float *x;
    float *y;
} relayout_job;

/* Pixels [part / parts, (part + 1) / parts) of the batch (run by ss_pool_run_split): each moves
 * its channels in 16-float runs (one cache line) between the pixel's row and the blocks' planes. */
static void relayout_part(void *ctx, int part, int parts)
{
    const relayout_job *j = ctx;
    const relayout *rl = j->rl;
    int64_t pixels = rl->n * rl->hw, nb = rl->c / 16, plane = rl->hw * 16;
    int64_t p0 = pixels * part / parts, p1 = pixels * (part + 1) / parts;
    int64_t from_step = rl->to_blocked ? 16 : plane, to_step = rl->to_blocked ? plane : 16;
    for (int64_t p = p0; p < p1; p++) {
        int64_t row = p * rl->c, block = ((p / rl->hw) * nb * rl->hw + p % rl->hw) * 16;
        const float *from = j->x + (rl->to_blocked ? row : block);
        float *to = j->y + (rl->to_blocked ? block : row);
        for (int64_t b = 0; b < nb; b++)
            memcpy(to + b * to_step, from + b * from_step, 64);
    }
}

/* On the pool's team when there are 64 KiB or more to move. */
static void relayout_run(const relayout *rl, const void *x, void *y, int threads)
{
    relayout_job j = {rl, x, y};
    int parts = rl->n * rl->hw * rl->c * 4 >= (64 << 10) && threads > 1 ? threads : 1;
    ss_pool_run_split(parts, relayout_part, &j);
    __atomic_add_fetch(&n_reorders, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&n_own_relayouts, 1, __ATOMIC_RELAXED);
}

/* The activation side: a plain user memory, and when the primitive wants another layout a
 * reorder plus a buffer of *bytes in the scratch area; *rl (when rl is given) says whether this
 * file runs that reorder itself (relayout_of). */
static dnnl_status_t conv_side(const dnnl_memory_desc_t *user, const dnnl_memory_desc_t *want,
                               bool into_prim, dnnl_memory_t *user_mem, dnnl_memory_t *prim_mem,
                               dnnl_primitive_t *reorder, size_t *bytes, relayout *rl)
{
    dnnl_status_t r = dnnl_memory_create(prim_mem, want, engine, DNNL_MEMORY_NONE);
    if (rl) *rl = (relayout){0};
    if (r != dnnl_success || dnnl_memory_desc_equal(user, want)) return r;
    if (rl) *rl = into_prim ? relayout_of(user, want) : relayout_of(want, user);
    *bytes = round_up(dnnl_memory_desc_get_size(want));
    r = dnnl_memory_create(user_mem, user, engine, DNNL_MEMORY_NONE);
    if (r == dnnl_success)
        r = into_prim ? make_reorder(user, want, reorder) : make_reorder(want, user, reorder);
    return r;
}

/* A binary post-op's operand: y's dims, or 1 but the channel, or all 1 (a scalar). */
static dnnl_status_t postop_md(const ss_postop *po, int nd, const int64_t *yd,
                               dnnl_memory_desc_t *md)
{
    int64_t dims[SS_DNNL_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        dims[i] = po->t ? yd[i] : po->chan && i == 1 ? yd[1] : 1;
    return plain_md(md, nd, dims, NULL, dnnl_f32);
}

/* po[0..n_po) as the primitive's post-ops (po[0] as a sum with `sum`), on a dst of dims yd. */
static dnnl_status_t append_postops(const ss_postop *po_list, int n_po, bool sum, int nd,
                                    const int64_t *yd, dnnl_primitive_attr_t attr)
{
    static const dnnl_alg_kind_t alg[] = {[SS_PO_RELU] = dnnl_eltwise_relu,
                                          [SS_PO_CLIP] = dnnl_eltwise_clip_v2,
                                          [SS_PO_LINEAR] = dnnl_eltwise_linear,
                                          [SS_PO_HSWISH] = dnnl_eltwise_hardswish,
                                          [SS_PO_LOGISTIC] = dnnl_eltwise_logistic,
                                          [SS_PO_GELU_ERF] = dnnl_eltwise_gelu_erf,
                                          [SS_PO_GELU_TANH] = dnnl_eltwise_gelu_tanh,
                                          [SS_PO_ADD] = dnnl_binary_add,
                                          [SS_PO_SUB] = dnnl_binary_sub,
                                          [SS_PO_MUL] = dnnl_binary_mul,
                                          [SS_PO_DIV] = dnnl_binary_div,
                                          [SS_PO_MAX] = dnnl_binary_max,
                                          [SS_PO_MIN] = dnnl_binary_min};
    if (n_po == 0) return dnnl_success;
    dnnl_post_ops_t ops = NULL;
    dnnl_status_t r = dnnl_post_ops_create(&ops);
    for (int i = 0; r == dnnl_success && i < n_po; i++) {
        const ss_postop *po = &po_list[i];
        dnnl_memory_desc_t md;
        if (i == 0 && sum) {
            r = dnnl_post_ops_append_sum(ops, 1.0f);
        } else if (po->kind < SS_PO_ADD) {
            r = dnnl_post_ops_append_eltwise(ops, 1.0f, alg[po->kind], po->alpha, po->beta);
        } else if ((r = postop_md(po, nd, yd, &md)) == dnnl_success) {
            r = dnnl_post_ops_append_binary(ops, alg[po->kind], &md);
        }
    }
    if (r == dnnl_success) r = dnnl_primitive_attr_set_post_ops(attr, ops);
    if (ops) dnnl_post_ops_destroy(ops);
    return r;
}

int ss_dnnl_postops_usable(const ss_postop *po, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (po[i].kind < SS_PO_ADD && po[j].kind == po[i].kind &&
                (po[j].alpha != po[i].alpha || po[j].beta != po[i].beta))
                return i;
    return n;
}

ss_status *ss_dnnl_fuse_postops(ss_kctx *k, ss_epilogue *ep, const ss_postop *po, int all,
                                ss_dnnl_postop_make make, void *ctx)
{
    for (int n = ss_dnnl_postops_usable(po, all); n > 0; n--) {
        if (n < all && po[n].steps == po[n - 1].steps) continue; /* not a whole step */
        bool took = false;
        ss_status *st = make(k, ctx, po, n, &took);
        if (st) return st;
        if (!took) continue;
        SS_DEBUG("%s: oneDNN runs %d fused steps as %d post-ops", k->node_name, po[n - 1].steps, n);
        ss_epilogue_drop(ep, po[n - 1].steps);
        return NULL;
    }
    return NULL;
}

/* The binary post-ops' operand memories among po[first..n_po) (po[0] may be a sum): constants
 * copied (64-byte aligned; a per-channel one has chan floats), tensors bound at run time. */
static ss_status *bin_ops_make(bin_ops *b, const ss_postop *po_list, int n_po, int first,
                               int64_t chan, dnnl_primitive_desc_t pd)
{
    for (int i = first; i < n_po; i++) {
        const ss_postop *po = &po_list[i];
        if (po->kind < SS_PO_ADD) continue;
        int k = b->n++;
        b->idx[k] = i;
        b->t[k] = po->t;
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(
            pd, dnnl_query_exec_arg_md, DNNL_ARG_ATTR_MULTIPLE_POST_OP(i) | DNNL_ARG_SRC_1);
        if (!md) return ss_errf(SS_ERR_INTERNAL, "oneDNN: no memory for post-op %d", i);
        void *h = DNNL_MEMORY_NONE;
        if (!po->t) {
            size_t n = po->chan ? (size_t)chan : 1;
            if (!(b->data[k] = aligned_alloc(ALIGN, round_up(n * sizeof(float)))))
                return ss_errf(SS_ERR_NOMEM, "out of memory");
            if (po->chan)
                memcpy(b->data[k], po->chan, n * sizeof(float));
            else
                b->data[k][0] = po->alpha;
            h = b->data[k];
        }
        if (dnnl_memory_create(&b->mem[k], md, engine, h) != dnnl_success)
            return ss_errf(SS_ERR_NOMEM, "oneDNN memory");
    }
    return NULL;
}

/* Binds the run-time operands and appends the operands' execution arguments; returns how many. */
static int bin_ops_args(const bin_ops *b, dnnl_exec_arg_t *args)
{
    for (int k = 0; k < b->n; k++) {
        if (b->t[k]) dnnl_memory_set_data_handle(b->mem[k], b->t[k]->data);
        args[k] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_MULTIPLE_POST_OP(b->idx[k]) | DNNL_ARG_SRC_1,
                                    b->mem[k]};
    }
    return b->n;
}

static void bin_ops_free(bin_ops *b)
{
    for (int k = 0; k < b->n; k++) {
        if (b->mem[k]) dnnl_memory_destroy(b->mem[k]);
        free(b->data[k]);
    }
    b->n = 0;
}

/* Winograd for the 3x3 stride-1 Convs where it won: 2-D, one group, no dilation, an output of at
 * least 14x14 and 64+ channels each way. oneDNN 2.6 has it for AVX-512 (jit_wino_4x3,
 * jit_fp32_wino_2x3); elsewhere creation fails and the Conv is direct. ResNet-50's 3x3 Convs, 1
 * thread, ms per call direct -> Winograd (AMD EPYC Zen 5, DNNL_VERBOSE): 64ch 56x56 1.11 -> 0.62,
 * 128ch 28x28 1.01 -> 0.67, 256ch 14x14 1.00 -> 0.72, but 512ch 7x7 1.22 -> 1.63, hence the
 * 14x14 floor. Not for float16 models (desc.direct_only): IS-Net fp16 (real_models) moved 0.6%
 * at an output, past its tolerance against onnxruntime's direct Convs. SHARDSERVE_DNNL_WINOGRAD=0
 * keeps every Conv direct (same-binary comparisons). */
static bool winograd_case(const ss_dnnl_conv_desc *d)
{
    static int off = -1;
    if (off < 0) {
        const char *e = getenv("SHARDSERVE_DNNL_WINOGRAD");
        off = e && !strcmp(e, "0");
    }
    return !off && !d->direct_only && d->nsp == 2 && d->group == 1 && d->C >= 64 && d->M >= 64 &&
           d->kernel[1] == 3 && d->kernel[2] == 3 && d->stride[1] == 1 && d->stride[2] == 1 &&
           d->dilation[1] == 1 && d->dilation[2] == 1 && d->out[1] >= 14 && d->out[2] >= 14;
}

static dnnl_status_t conv_pd_alg(const ss_dnnl_conv_desc *d, dnnl_alg_kind_t alg,
                                 dnnl_memory_desc_t *x_md, dnnl_memory_desc_t *y_md,
                                 dnnl_memory_desc_t *w_md, dnnl_primitive_desc_t *pd);

static dnnl_status_t conv_pd(const ss_dnnl_conv_desc *d, dnnl_memory_desc_t *x_md,
                             dnnl_memory_desc_t *y_md, dnnl_memory_desc_t *w_md,
                             dnnl_primitive_desc_t *pd)
{
    if (winograd_case(d) &&
        conv_pd_alg(d, dnnl_convolution_winograd, x_md, y_md, w_md, pd) == dnnl_success)
        return dnnl_success;
    return conv_pd_alg(d, dnnl_convolution_direct, x_md, y_md, w_md, pd);
}

static dnnl_status_t conv_pd_alg(const ss_dnnl_conv_desc *d, dnnl_alg_kind_t alg,
                                 dnnl_memory_desc_t *x_md, dnnl_memory_desc_t *y_md,
                                 dnnl_memory_desc_t *w_md, dnnl_primitive_desc_t *pd)
{
    int nd = d->nsp + 2, off = 3 - d->nsp;
    dnnl_dims_t xd = {d->N, d->C}, yd = {d->N, d->M}, wd, st, dl, pl, pr;
    for (int i = 0; i < d->nsp; i++) {
        xd[2 + i] = d->in[off + i], yd[2 + i] = d->out[off + i];
        st[i] = d->stride[off + i], dl[i] = d->dilation[off + i] - 1;
        pl[i] = d->pad_begin[off + i], pr[i] = d->pad_end[off + i];
    }
    int wn = d->group > 1 ? nd + 1 : nd, g = d->group > 1;
    if (g) wd[0] = d->group;
    wd[g] = d->M / d->group, wd[g + 1] = d->C / d->group;
    for (int i = 0; i < d->nsp; i++)
        wd[g + 2 + i] = d->kernel[off + i];
    dnnl_memory_desc_t src_any, dst_any, wei_any, bias_md;
    dnnl_status_t r = plain_md(x_md, nd, xd, NULL, dnnl_f32);
    if (r == dnnl_success) r = plain_md(y_md, nd, yd, NULL, dnnl_f32);
    if (r == dnnl_success) r = plain_md(w_md, wn, wd, NULL, dnnl_f32);
    if (r == dnnl_success)
        r = dnnl_memory_desc_init_by_tag(&src_any, nd, xd, dnnl_f32, dnnl_format_tag_any);
    if (r == dnnl_success)
        r = dnnl_memory_desc_init_by_tag(&dst_any, nd, yd, dnnl_f32, dnnl_format_tag_any);
    if (r == dnnl_success)
        r = dnnl_memory_desc_init_by_tag(&wei_any, wn, wd, dnnl_f32, dnnl_format_tag_any);
    dnnl_dims_t bd = {d->M};
    if (r == dnnl_success) r = dnnl_memory_desc_init_by_tag(&bias_md, 1, bd, dnnl_f32, dnnl_a);
    dnnl_convolution_desc_t cd;
    if (r == dnnl_success)
        r = dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, alg, &src_any,
                                                       &wei_any, d->bias_const ? &bias_md : NULL,
                                                       &dst_any, st, dl, pl, pr);
    dnnl_primitive_attr_t attr = NULL;
    if (r == dnnl_success) r = dnnl_primitive_attr_create(&attr);
    if (r == dnnl_success)
        r = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (r == dnnl_success) r = append_postops(d->po, d->n_po, d->sum, nd, yd, attr);
    set_threads(d->threads);
    if (r == dnnl_success) r = dnnl_primitive_desc_create(pd, &cd, attr, engine, NULL);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return r;
}

static ss_status *conv_constants(ss_dnnl_conv *c, const ss_dnnl_conv_desc *d,
                                 const dnnl_memory_desc_t *w_user, dnnl_primitive_desc_t pd)
{
    const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    void *handle = NULL;
    ss_status *st = packed_copy(d->k, d->wei_const, w_user, want, d->threads, &c->wei_ref,
                                &c->wei_packed, &handle);
    if (!st && dnnl_memory_create(&c->wei, want, engine, handle) != dnnl_success)
        st = ss_errf(SS_ERR_NOMEM, "oneDNN memory");
    if (st || !d->bias_const) return st;
    const dnnl_memory_desc_t *bmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
    c->bias_copy = aligned_alloc(ALIGN, round_up((size_t)d->M * sizeof(float)));
    if (!c->bias_copy) return ss_errf(SS_ERR_NOMEM, "out of memory");
    memcpy(c->bias_copy, d->bias_const, (size_t)d->M * sizeof(float));
    return dnnl_memory_create(&c->bias, bmd, engine, c->bias_copy) == dnnl_success
               ? NULL
               : ss_errf(SS_ERR_NOMEM, "oneDNN memory");
}

/* The sum operand's way into dst: from `layout` (NULL: plain, dims as dst's) by a copy when it
 * is dst's layout, else by a reorder. */
static dnnl_status_t conv_sum_side(ss_dnnl_conv *c, const dnnl_memory_desc_t *layout)
{
    const dnnl_memory_desc_t *want;
    dnnl_memory_get_memory_desc(c->dst, &want);
    dnnl_memory_desc_t plain;
    dnnl_status_t r = dnnl_success;
    if (!layout) {
        r = plain_md(&plain, want->ndims, want->dims, NULL, dnnl_f32);
        layout = &plain;
    }
    if (c->sum_reorder) dnnl_primitive_destroy(c->sum_reorder);
    if (c->sum_user) dnnl_memory_destroy(c->sum_user);
    c->sum_reorder = NULL, c->sum_user = NULL;
    c->sum_bytes = dnnl_memory_desc_get_size(want);
    if (r != dnnl_success || dnnl_memory_desc_equal(layout, want)) return r;
    r = dnnl_memory_create(&c->sum_user, layout, engine, DNNL_MEMORY_NONE);
    return r == dnnl_success ? make_reorder(layout, want, &c->sum_reorder) : r;
}

bool ss_dnnl_conv_sum_copies_into_y(const ss_dnnl_conv *c)
{
    return c->sum_t && !c->sum_reorder && !c->y_reorder;
}

ss_status *ss_dnnl_conv_sum_relayout(ss_dnnl_conv *c, const void *layout)
{
    if (!c->sum_t) return NULL;
    dnnl_status_t r = conv_sum_side(c, layout);
    return r == dnnl_success ? NULL : dnnl_err(r, "sum operand reorder");
}

ss_status *ss_dnnl_conv_create(const ss_dnnl_conv_desc *d, ss_dnnl_conv **out,
                               size_t *scratch_bytes)
{
    *out = NULL;
    *scratch_bytes = 0;
    if (!get_engine()) return ss_errf(SS_ERR_UNSUPPORTED, "oneDNN has no CPU engine");
    if (d->nsp < 1 || d->nsp > 3 || !d->wei_const || d->n_po < 0 ||
        d->n_po > SS_EPILOGUE_MAX_POSTOPS)
        return ss_errf(SS_ERR_UNSUPPORTED, "oneDNN conv: case not handled");
    ss_dnnl_conv *c = calloc(1, sizeof *c);
    if (!c) return ss_errf(SS_ERR_NOMEM, "out of memory");
    c->threads = d->threads;
    c->n_po = d->n_po;
    dnnl_memory_desc_t x_md, y_md, w_md;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t r = conv_pd(d, &x_md, &y_md, &w_md, &pd);
    ss_status *st = r == dnnl_success ? NULL
                    : d->n_po && (r == dnnl_unimplemented || r == dnnl_invalid_arguments)
                        ? ss_errf(SS_ERR_UNSUPPORTED, "oneDNN conv: post-ops not taken")
                        : dnnl_err(r, "convolution primitive");
    if (!st) {
        const char *impl = NULL;
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        snprintf(c->impl, sizeof c->impl, "%s", impl ? impl : "?");
        if (d->require_impl && strcmp(c->impl, d->require_impl))
            st = ss_errf(SS_ERR_UNSUPPORTED, "oneDNN conv: %d post-ops would run on %s", d->n_po,
                         c->impl);
    }
    if (!st) st = bin_ops_make(&c->bin, d->po, d->n_po, d->sum ? 1 : 0, d->M, pd);
    if (!st) {
        r = conv_side(&x_md, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), true,
                      &c->x_user, &c->src, &c->x_reorder, &c->src_bytes, &c->x_rl);
        if (r == dnnl_success)
            r = conv_side(&y_md, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), false,
                          &c->y_user, &c->dst, &c->y_reorder, &c->dst_bytes, NULL);
        if (r != dnnl_success) st = dnnl_err(r, "activation reorder");
    }
    if (!st && d->sum) {
        if (d->n_po < 1 || d->po[0].kind != SS_PO_ADD || !d->po[0].t)
            st = ss_errf(SS_ERR_UNSUPPORTED, "oneDNN conv: sum post-op without a tensor operand");
        else if ((c->sum_t = d->po[0].t), conv_sum_side(c, NULL) != dnnl_success)
            st = ss_errf(SS_ERR_INTERNAL, "oneDNN: cannot make the sum operand's reorder");
    }
    if (!st) st = conv_constants(c, d, &w_md, pd);
    if (!st) {
        const dnnl_memory_desc_t *sp =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        c->prim_scratch = sp ? round_up(dnnl_memory_desc_get_size(sp)) : 0;
        if (c->prim_scratch &&
            dnnl_memory_create(&c->scratch, sp, engine, DNNL_MEMORY_NONE) != dnnl_success)
            st = ss_errf(SS_ERR_NOMEM, "oneDNN memory");
    }
    if (!st && dnnl_primitive_create(&c->prim, pd) != dnnl_success)
        st = ss_errf(SS_ERR_INTERNAL, "oneDNN: cannot create the convolution primitive");
    if (!st && dnnl_stream_create(&c->stream, engine, dnnl_stream_default_flags) != dnnl_success)
        st = ss_errf(SS_ERR_INTERNAL, "oneDNN: cannot create a stream");
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (st) {
        ss_dnnl_conv_free(c);
        return st;
    }
    *scratch_bytes = c->prim_scratch + c->src_bytes + c->dst_bytes;
    *out = c;
    return NULL;
}

ss_status *ss_dnnl_conv_run(ss_dnnl_conv *c, const float *x, float *y, void *scratch)
{
    set_threads(c->threads);
    char *src = c->x_reorder ? (char *)scratch + c->prim_scratch : (char *)x;
    char *dst = c->y_reorder ? (char *)scratch + c->prim_scratch + c->src_bytes : (char *)y;
    dnnl_status_t r = dnnl_success;
    dnnl_memory_set_data_handle(c->src, src);
    dnnl_memory_set_data_handle(c->dst, dst);
    if (c->x_reorder && c->x_rl.hw) {
        relayout_run(&c->x_rl, x, src, c->threads);
    } else if (c->x_reorder) {
        dnnl_memory_set_data_handle(c->x_user, (void *)x);
        dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, c->x_user}, {DNNL_ARG_TO, c->src}};
        r = dnnl_primitive_execute(c->x_reorder, c->stream, 2, ra);
        __atomic_add_fetch(&n_reorders, 1, __ATOMIC_RELAXED);
    }
    if (r == dnnl_success && c->sum_t && c->sum_reorder) {
        dnnl_memory_set_data_handle(c->sum_user, c->sum_t->data);
        dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, c->sum_user}, {DNNL_ARG_TO, c->dst}};
        r = dnnl_primitive_execute(c->sum_reorder, c->stream, 2, ra);
        __atomic_add_fetch(&n_reorders, 1, __ATOMIC_RELAXED);
    } else if (c->sum_t && c->sum_t->data != (void *)dst) {
        memcpy(dst, c->sum_t->data, c->sum_bytes);
    }
    dnnl_exec_arg_t args[5 + SS_EPILOGUE_MAX_POSTOPS];
    int n = bin_ops_args(&c->bin, args);
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->wei};
    if (c->bias) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->bias};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->dst};
    if (c->scratch) {
        dnnl_memory_set_data_handle(c->scratch, scratch);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, c->scratch};
    }
    if (r == dnnl_success) r = dnnl_primitive_execute(c->prim, c->stream, n, args);
    if (r == dnnl_success && c->y_reorder) {
        dnnl_memory_set_data_handle(c->y_user, y);
        dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, c->dst}, {DNNL_ARG_TO, c->y_user}};
        r = dnnl_primitive_execute(c->y_reorder, c->stream, 2, ra);
        __atomic_add_fetch(&n_reorders, 1, __ATOMIC_RELAXED);
    }
    if (r == dnnl_success) r = dnnl_stream_wait(c->stream);
    __atomic_add_fetch(c->n_po ? &n_conv_po_calls : &n_conv_calls, 1, __ATOMIC_RELAXED);
    if (strstr(c->impl, "wino")) __atomic_add_fetch(&n_wino_calls, 1, __ATOMIC_RELAXED);
    return r == dnnl_success ? NULL : dnnl_err(r, "convolution execution");
}

unsigned long ss_dnnl_conv_winograd_calls(void)
{
    return __atomic_load_n(&n_wino_calls, __ATOMIC_RELAXED);
}

unsigned long ss_dnnl_conv_calls(void)
{
    return __atomic_load_n(&n_conv_calls, __ATOMIC_RELAXED) + ss_dnnl_conv_postop_calls();
}

unsigned long ss_dnnl_matmul_postop_calls(void)
{
    return __atomic_load_n(&n_mm_po_calls, __ATOMIC_RELAXED);
}

unsigned long ss_dnnl_conv_postop_calls(void)
{
    return __atomic_load_n(&n_conv_po_calls, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ layouts between primitives */

static void drop_side(dnnl_memory_t *user, dnnl_primitive_t *reorder, size_t *bytes)
{
    if (*reorder) dnnl_primitive_destroy(*reorder);
    if (*user) dnnl_memory_destroy(*user);
    *reorder = NULL, *user = NULL, *bytes = 0;
}

ss_status *ss_dnnl_conv_relayout(ss_dnnl_conv *c, const void *x_layout, bool y_native,
                                 const void **y_layout, size_t *scratch_bytes)
{
    dnnl_status_t r = dnnl_success;
    *y_layout = NULL;
    if (x_layout) {
        const dnnl_memory_desc_t *want;
        dnnl_memory_desc_t src_md;
        dnnl_memory_get_memory_desc(c->src, &want);
        src_md = *want;
        drop_side(&c->x_user, &c->x_reorder, &c->src_bytes);
        dnnl_memory_destroy(c->src);
        c->src = NULL;
        r = conv_side(x_layout, &src_md, true, &c->x_user, &c->src, &c->x_reorder, &c->src_bytes,
                      &c->x_rl);
    }
    if (r == dnnl_success && y_native) {
        drop_side(&c->y_user, &c->y_reorder, &c->dst_bytes);
        const dnnl_memory_desc_t *md;
        dnnl_memory_get_memory_desc(c->dst, &md);
        *y_layout = md;
    }
    *scratch_bytes = c->prim_scratch + c->src_bytes + c->dst_bytes;
    return r == dnnl_success ? NULL : dnnl_err(r, "activation reorder");
}

struct ss_dnnl_pool {
    dnnl_primitive_t prim, y_reorder; /* y_reorder: to plain, unless Y stays in the layout */
    dnnl_stream_t stream;
    dnnl_memory_t src, dst, y_user, scratch;
    size_t prim_scratch, dst_bytes;
    int threads;
};

void ss_dnnl_pool_free(ss_dnnl_pool *p)
{
    if (!p) return;
    dnnl_memory_t mems[] = {p->src, p->dst, p->y_user, p->scratch};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        if (mems[i]) dnnl_memory_destroy(mems[i]);
    if (p->prim) dnnl_primitive_destroy(p->prim);
    if (p->y_reorder) dnnl_primitive_destroy(p->y_reorder);
    if (p->stream) dnnl_stream_destroy(p->stream);
    free(p);
}

/* The pooling descriptor: ONNX's end pads as given unless ceil_mode made the output longer than
 * they imply, then as long as the last window needs (padding never wins a max). */
static dnnl_status_t pool_pd(const ss_dnnl_pool_desc *d, dnnl_primitive_desc_t *pd)
{
    const dnnl_memory_desc_t *src = d->src_layout;
    int nd = d->nsp + 2, off = 3 - d->nsp;
    dnnl_dims_t yd = {src->dims[0], src->dims[1]}, st, k, dl, pl, pr;
    for (int i = 0; i < d->nsp; i++) {
        int64_t j = off + i, ek = (d->kernel[j] - 1) * d->dilation[j] + 1;
        yd[2 + i] = d->out[j], st[i] = d->stride[j], k[i] = d->kernel[j];
        dl[i] = d->dilation[j] - 1, pl[i] = d->pad_begin[j], pr[i] = d->pad_end[j];
        if ((d->in[j] + pl[i] + pr[i] - ek) / st[i] + 1 != d->out[j])
            pr[i] = (d->out[j] - 1) * st[i] + ek - d->in[j] - pl[i];
    }
    dnnl_memory_desc_t dst_any;
    dnnl_pooling_v2_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_status_t r = dnnl_memory_desc_init_by_tag(&dst_any, nd, yd, dnnl_f32, dnnl_format_tag_any);
    if (r == dnnl_success)
        r = dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_inference, dnnl_pooling_max, src,
                                              &dst_any, st, k, dl, pl, pr);
    if (r == dnnl_success) r = dnnl_primitive_attr_create(&attr);
    if (r == dnnl_success)
        r = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    set_threads(d->threads);
    if (r == dnnl_success) r = dnnl_primitive_desc_create(pd, &desc, attr, engine, NULL);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return r;
}

/* Y in the primitive's layout (y_native: *y_layout is it), or a reorder to plain through the
 * scratch area. */
static dnnl_status_t pool_dst(ss_dnnl_pool *p, const dnnl_memory_desc_t *dst, bool y_native,
                              const void **y_layout)
{
    if (y_native) {
        dnnl_status_t r = dnnl_memory_create(&p->dst, dst, engine, DNNL_MEMORY_NONE);
        if (r == dnnl_success)
            dnnl_memory_get_memory_desc(p->dst, (const dnnl_memory_desc_t **)y_layout);
        return r;
    }
    dnnl_memory_desc_t plain;
    dnnl_status_t r = plain_md(&plain, dst->ndims, dst->dims, NULL, dnnl_f32);
    return r == dnnl_success ? conv_side(&plain, dst, false, &p->y_user, &p->dst, &p->y_reorder,
                                         &p->dst_bytes, NULL)
                             : r;
}

ss_status *ss_dnnl_pool_create(const ss_dnnl_pool_desc *d, ss_dnnl_pool **out,
                               size_t *scratch_bytes, const void **y_layout)
{
    *out = NULL, *scratch_bytes = 0, *y_layout = NULL;
    const dnnl_memory_desc_t *src = d->src_layout;
    if (!get_engine()) return ss_errf(SS_ERR_UNSUPPORTED, "oneDNN has no CPU engine");
    if (d->nsp < 1 || d->nsp > 3 || !src || src->ndims != d->nsp + 2)
        return ss_errf(SS_ERR_UNSUPPORTED, "oneDNN pooling: case not handled");
    ss_dnnl_pool *p = calloc(1, sizeof *p);
    if (!p) return ss_errf(SS_ERR_NOMEM, "out of memory");
    p->threads = d->threads;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t r = pool_pd(d, &pd);
    if (r == dnnl_success) r = dnnl_memory_create(&p->src, src, engine, DNNL_MEMORY_NONE);
    if (r == dnnl_success)
        r = pool_dst(p, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), d->y_native,
                     y_layout);
    const dnnl_memory_desc_t *sp =
        r == dnnl_success ? dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) : NULL;
    p->prim_scratch = sp ? round_up(dnnl_memory_desc_get_size(sp)) : 0;
    if (r == dnnl_success && p->prim_scratch)
        r = dnnl_memory_create(&p->scratch, sp, engine, DNNL_MEMORY_NONE);
    if (r == dnnl_success) r = dnnl_primitive_create(&p->prim, pd);
    if (r == dnnl_success) r = dnnl_stream_create(&p->stream, engine, dnnl_stream_default_flags);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (r != dnnl_success) {
        ss_dnnl_pool_free(p);
        *y_layout = NULL;
        return dnnl_err(r, "pooling primitive");
    }
    *scratch_bytes = p->prim_scratch + p->dst_bytes;
    *out = p;
    return NULL;
}

ss_status *ss_dnnl_pool_run(ss_dnnl_pool *p, const float *x, float *y, void *scratch)
{
    set_threads(p->threads);
    dnnl_memory_set_data_handle(p->src, (void *)x);
    dnnl_memory_set_data_handle(p->dst,
                                p->y_reorder ? (char *)scratch + p->prim_scratch : (void *)y);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, p->src}, {DNNL_ARG_DST, p->dst}};
    int n = 2;
    if (p->scratch) {
        dnnl_memory_set_data_handle(p->scratch, scratch);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->scratch};
    }
    dnnl_status_t r = dnnl_primitive_execute(p->prim, p->stream, n, args);
    if (r == dnnl_success && p->y_reorder) {
        dnnl_memory_set_data_handle(p->y_user, y);
        dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, p->dst}, {DNNL_ARG_TO, p->y_user}};
        r = dnnl_primitive_execute(p->y_reorder, p->stream, 2, ra);
        __atomic_add_fetch(&n_reorders, 1, __ATOMIC_RELAXED);
    }
    if (r == dnnl_success) r = dnnl_stream_wait(p->stream);
    return r == dnnl_success ? NULL : dnnl_err(r, "pooling execution");
}

size_t ss_dnnl_layout_bytes(const void *layout)
{
    return dnnl_memory_desc_get_size(layout);
}

unsigned long ss_dnnl_reorder_calls(void)
{
    return __atomic_load_n(&n_reorders, __ATOMIC_RELAXED);
}

unsigned long ss_dnnl_own_relayout_calls(void)
{
    return __atomic_load_n(&n_own_relayouts, __ATOMIC_RELAXED);
}

void ss_layout_enable(bool on)
{
    __atomic_store_n(&layout_off, on ? 0 : 1, __ATOMIC_RELAXED);
}

bool ss_layout_enabled(void)
{
    if (__atomic_load_n(&layout_off, __ATOMIC_RELAXED) < 0) {
        const char *e = getenv("SHARDSERVE_LAYOUT");
        ss_layout_enable(!(e && !strcmp(e, "0")));
    }
    return __atomic_load_n(&layout_off, __ATOMIC_RELAXED) == 0;
}
