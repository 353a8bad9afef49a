/*
 * bench_kernels: MatMul / Gemm per shape class through the op table (as the planner calls them)
 * under each kernel mode (SHARDSERVE_KERNELS own, blas, onednn, and auto), interleaved in one
 * process so a noisy neighbour hits them alike. This is the measurement behind auto's choice in
 * src/runtime/ops/onednn.c (ss_kernels_use_dnnl); the weights are constant, as initializers are.
 *
 *   bench_kernels [--cpu-time] [--conv-only | --bf16 | --decode | --attention | --step |
 *                  --mlp [--mlp-rows 32,64] | --int8 | --vmath] [--threads T] [--rounds R]
 *
 * Prints per shape: the median microseconds per call of each mode and which library auto took;
 * then Conv shapes (NCHW in and out as ONNX has them, constant W and B): own im2col + OpenBLAS
 * against oneDNN including its per-call layout reorders. --bf16 instead: GPT-2-124M's decode
 * MatMuls under --weights bf16 at M = 1 .. 256 rows (decode batches, then prefill-sized ones), the
 * own bf16 kernel (gemm_bf16.c) against oneDNN's bf16 matmul, both on weights prepacked at plan
 * time (the measurement behind ss_gemm_bf16_max_m). --decode: the 49 weight matrices of one
 * GPT-2-124M decode step (12 x 768x2304, 768x768, 768x3072, 3072x768 and the 768x50257 LM head) at
 * M = 1 through the op table, float32 (own GEMV on the weights in place) and --weights bf16 (own
 * GEMV on the packed copy), on 1 and 2 threads, the GEMV's thread split of before issue 15 (legacy)
 * against the current one, the float32 weights packed in gemm_f32p.h's 64-column panels on 2 MiB
 * pages (one contiguous stream per panel) through ss_gemm_f32p at M = 1, and a plain AVX-512 read
 * of the float32 weights on 1 and 2 threads (the floor), all interleaved in rounds; per step: best
 * and median wall ms, GB/s at the median, median process CPU ms.
 *
 * Every table starts with the CPU's measured f32 FMA peak (fma_peak.h) at 1 and T threads. --mlp:
 * only issue 10's MLP GEMMs (4 layers of 32x4096x4096, each its own constant weights) under each
 * mode at 1 and T threads, as GFLOP/s and % of that peak (CPU-time rate: the cores' speed when
 * they run); --mlp-rows sets other row counts. --attention: the KV pool's PagedAttention for one
 * decode step of 32 sequences (GPT-2-124M's 12 layers of 12 heads of 64) at 64, 256 and 512
 * cached tokens, float32 blocks against bf16 blocks (src/runtime/ops/kvpool.c), interleaved.
 * --step: the 49 bf16 matrices of one GPT-2-124M step at M = 32 rows (SS_BENCH_M), 250 MB, so
 * streamed from memory as served: the bf16 kernel's k-chunk sizes, with and without the prefetch
 * of the next chunk, against whole-k tiles (gemm_bf16.c), interleaved. --int8: does an int8 path
 * pay (issue 10 item 5)? The MLP's 4 layers of 4096x4096 at M = 1, 32 and 128 rows, float32 and
 * --weights bf16 as the runtime runs them (auto) against oneDNN's int8 matmul with per-column int8
 * weights and dynamic per-tensor int8 activations (absmax, quantized on every call, inside the
 * timing) and --weights int8 as the runtime runs it (ops/gemm_q8.c), on 1 and T threads,
 * interleaved; with each one's relative L2 error against float32. --vmath: the row-wise float32
 * ops of a transformer, those on vmath.h's exp (Softmax rows of BERT-base's attention, of 1024 and
 * of GPT-2's 50257-entry vocabulary; Sigmoid and Tanh over a 128x3072 activation) and
 * LayerNormalization (BERT-base's 128x768), through the op table at every ISA level this CPU runs
 * (isa.h, forced in turn), against the same loops written plainly (libm's expf and tanhf; double
 * sums) in the same rounds.
 */
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "cpu_model.h"
#include "fma_peak.h"
#include "ops/gemm_bf16.h"
#include "ops/gemm_f32p.h"
#include "ops/gemm_kernel.h"
#include "ops/gemm_q8.h"
#include "ops/isa.h"
#include "ops/kvpool.h"
#include "ops/onednn.h"
#include "op.h"

typedef struct {
    const char *name, *op;
    int64_t M, K, N;
    bool tb, bias;
} shape;

static const shape shapes[] = {
    {"seed 128x96x16", "MatMul", 128, 96, 16, false, false},
    {"tiny gemm 1x64x32 +bias", "Gemm", 1, 64, 32, true, true},
    {"gemm 8x256x256 +bias", "Gemm", 8, 256, 256, true, true},
    {"gemm 32x512x512 +bias", "Gemm", 32, 512, 512, true, true},
    {"bert-tiny 8x128x512", "MatMul", 8, 128, 512, false, false},
    {"gemv 1x1024x1024", "MatMul", 1, 1024, 1024, false, false},
    {"gemv 1x4096x4096", "MatMul", 1, 4096, 4096, false, false},
    {"32x1024x1024", "MatMul", 32, 1024, 1024, false, false},
    {"mlp 32x4096x4096", "MatMul", 32, 4096, 4096, false, false},
    {"256x1024x1024", "MatMul", 256, 1024, 1024, false, false},
};

static const ss_kernels modes[] = {SS_KERNELS_OWN, SS_KERNELS_BLAS, SS_KERNELS_ONEDNN,
                                   SS_KERNELS_AUTO};
#define N_MODES 4

/* --cpu-time: the process's CPU time (all threads) instead of wall time, which on a shared,
 * overloaded machine is mostly time spent descheduled. */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now_us(void)
{
    struct timespec t;
    clock_gettime(bench_clock, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static ss_tensor rand_tensor(int nd, const int64_t *dims)
{
    ss_tensor t = {0};
    ss_status *st = ss_tensor_alloc(&t, SS_DT_FLOAT32, nd, dims);
    if (st) abort();
    for (int64_t i = 0; i < ss_tensor_numel(&t); i++)
        ((float *)t.data)[i] = (float)(rand() % 200 - 100) / 100.0f;
    return t;
}

typedef struct {
    Onnx__NodeProto node;
    Onnx__AttributeProto attr;
    Onnx__AttributeProto *ap[1];
    ss_kctx k;
    ss_tensor *in[3], out;
    ss_tensor *outp[1];
    const ss_op_def *def;
} node_run;

static void node_make(node_run *r, const shape *s, ss_tensor *in, int threads, ss_weights weights)
{
    memset(r, 0, sizeof *r);
    onnx__node_proto__init(&r->node);
    r->node.op_type = (char *)s->op;
    r->node.name = (char *)"bench";
    if (s->tb) {
        onnx__attribute_proto__init(&r->attr);
        r->attr.name = (char *)"transB";
        r->attr.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        r->attr.i = 1;
        r->ap[0] = &r->attr;
        r->node.attribute = r->ap;
        r->node.n_attribute = 1;
    }
    int n_in = s->bias ? 3 : 2;
    for (int i = 0; i < n_in; i++)
        r->in[i] = &in[i];
    r->outp[0] = &r->out;
    r->def = ss_op_find("", s->op, 13);
    r->k = (ss_kctx){.node = &r->node,
                     .node_name = "bench",
                     .opset = 13,
                     .n_in = n_in,
                     .n_out = 1,
                     .in = r->in,
                     .out = r->outp,
                     .threads = threads,
                     .weights = weights};
    ss_status *st = r->def->infer(&r->k);
    if (!st) st = ss_tensor_alloc(&r->out, r->out.dtype, r->out.ndim, r->out.dims);
    if (!st && r->k.scratch_bytes)
        r->k.scratch = aligned_alloc(64, (r->k.scratch_bytes + 63) / 64 * 64);
    if (st) {
        fprintf(stderr, "%s: %s\n", s->name, st->msg);
        exit(1);
    }
}

static void node_free(node_run *r)
{
    if (r->def->release) r->def->release(r->k.state);
    free(r->k.state);
    free(r->k.scratch);
    ss_tensor_free(&r->out);
}

typedef struct {
    const char *name;
    int64_t C, M, group, H, K, stride, pad;
} conv_shape;

static const conv_shape conv_shapes[] = {
    {"ResNet 3x3 64->64 56x56", 64, 64, 1, 56, 3, 1, 1},
    {"ResNet 1x1 256->64 56x56", 256, 64, 1, 56, 1, 1, 0},
    {"stem 7x7/2 3->64 224x224", 3, 64, 1, 224, 7, 2, 3},
    {"MobileNet dw 3x3 128ch 64x64", 128, 128, 128, 64, 3, 1, 1},
    {"MobileNet dw 3x3/2 32ch 112x112", 32, 32, 32, 112, 3, 2, 1},
    {"small 3x3 8->8 16x16", 8, 8, 1, 16, 3, 1, 1},
    /* pointwise shapes of PP-OCRv4 det at 96x128 (square stand-ins of its 48x64 .. 3x4 maps) */
    {"PP-OCR 1x1 16->32 48x48", 16, 32, 1, 48, 1, 1, 0},
    {"PP-OCR 1x1 48->96 16x16", 48, 96, 1, 16, 1, 1, 0},
    {"PP-OCR 1x1 192->192 7x7", 192, 192, 1, 7, 1, 1, 0},
    {"PP-OCR 1x1 384->384 4x4", 384, 384, 1, 4, 1, 1, 0},
    {"PP-OCR SE 1x1 96->24 1x1", 96, 24, 1, 1, 1, 1, 0},
};

static double time_conv(const conv_shape *c, ss_tensor *in, ss_kernels mode, int threads, int reps,
                        int rounds, const char **impl_used)
{
    Onnx__NodeProto node;
    Onnx__AttributeProto at[3], *ap[3] = {&at[0], &at[1], &at[2]};
    int64_t pads[4] = {c->pad, c->pad, c->pad, c->pad}, strides[2] = {c->stride, c->stride};
    onnx__node_proto__init(&node);
    node.op_type = (char *)"Conv";
    node.name = (char *)"bench";
    for (int i = 0; i < 3; i++)
        onnx__attribute_proto__init(&at[i]);
    at[0].name = (char *)"pads", at[0].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    at[0].ints = pads, at[0].n_ints = 4;
    at[1].name = (char *)"strides", at[1].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    at[1].ints = strides, at[1].n_ints = 2;
    at[2].name = (char *)"group", at[2].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    at[2].i = c->group;
    node.attribute = ap;
    node.n_attribute = 3;
    node.n_input = 3, node.n_output = 1;
    ss_tensor out = {0}, *ins[3] = {&in[0], &in[1], &in[2]}, *outs[1] = {&out};
    const ss_op_def *d = ss_op_find("", "Conv", 13);
    ss_kctx k = {.node = &node,
                 .node_name = "bench",
                 .opset = 13,
                 .n_in = 3,
                 .n_out = 1,
                 .in = ins,
                 .out = outs,
                 .threads = threads};
    ss_kernels_force(mode);
    unsigned long before = ss_dnnl_conv_calls();
    ss_status *st = d->infer(&k);
    ss_kernels_force(SS_KERNELS_AUTO);
    if (!st) st = ss_tensor_alloc(&out, out.dtype, out.ndim, out.dims);
    if (!st && k.scratch_bytes) k.scratch = aligned_alloc(64, (k.scratch_bytes + 63) / 64 * 64);
    if (st) {
        fprintf(stderr, "%s: %s\n", c->name, st->msg);
        exit(1);
    }
    double *t = calloc((size_t)rounds, sizeof(double));
    d->run(&k);
    for (int r = 0; r < rounds; r++) {
        double t0 = now_us();
        for (int i = 0; i < reps; i++)
            d->run(&k);
        t[r] = (now_us() - t0) / reps;
    }
    *impl_used = ss_dnnl_conv_calls() != before ? "onednn" : "own";
    qsort(t, (size_t)rounds, sizeof(double), cmp_double);
    double med = t[rounds / 2];
    free(t);
    if (d->release) d->release(k.state);
    free(k.state);
    free(k.scratch);
    ss_tensor_free(&out);
    return med;
}

static void conv_table(int threads, int rounds)
{
    /* "own, baseline ISA": the own loops (depthwise) forced to their x86-64 baseline variant,
     * i.e. what they ran before they were compiled per ISA (isa.h) */
    printf("\n| Conv (N=1, NCHW) | own | own, baseline ISA | blas | onednn | auto | auto took |\n"
           "|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof conv_shapes / sizeof conv_shapes[0]; i++) {
        const conv_shape *c = &conv_shapes[i];
        int64_t xd[4] = {1, c->C, c->H, c->H}, wd[4] = {c->M, c->C / c->group, c->K, c->K},
                bd[1] = {c->M};
        ss_tensor in[3] = {rand_tensor(4, xd), rand_tensor(4, wd), rand_tensor(1, bd)};
        const char *impl = NULL, *auto_impl = NULL;
        double own = time_conv(c, in, SS_KERNELS_OWN, threads, 20, rounds, &impl);
        ss_isa best = ss_isa_active;
        ss_isa_force(SS_ISA_BASE);
        double own_base = time_conv(c, in, SS_KERNELS_OWN, threads, 20, rounds, &impl);
        ss_isa_force(best);
        double blas = time_conv(c, in, SS_KERNELS_BLAS, threads, 20, rounds, &impl);
        double dnnl = time_conv(c, in, SS_KERNELS_ONEDNN, threads, 20, rounds, &impl);
        double au = time_conv(c, in, SS_KERNELS_AUTO, threads, 20, rounds, &auto_impl);
        printf("| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %s |\n", c->name, own, own_base, blas,
               dnnl, au, auto_impl);
        fflush(stdout);
        for (int j = 0; j < 3; j++)
            ss_tensor_free(&in[j]);
    }
}

/* One MatMul [M, K] x [K, N] under --weights bf16 on the own kernel (max_m = M) or oneDNN
 * (max_m = 0), and under --weights int8 (the own int8 kernel up to SS_GEMM_Q8_MAX_M rows where
 * the CPU has VNNI, else float32): the median microseconds per call over `rounds`, interleaved. */
static void bf16_row(int64_t M, int64_t K, int64_t N, int threads, int rounds)
{
    shape s = {"bf16", "MatMul", M, K, N, false, false};
    int64_t ad[2] = {M, K}, bd[2] = {K, N};
    ss_tensor in[2] = {rand_tensor(2, ad), rand_tensor(2, bd)};
    node_run runs[3];
    for (int m = 0; m < 2; m++) {
        ss_gemm_bf16_force_max_m(m == 0 ? M : 0);
        node_make(&runs[m], &s, in, threads, SS_WEIGHTS_BF16);
    }
    ss_gemm_bf16_force_max_m(-1);
    node_make(&runs[2], &s, in, threads, SS_WEIGHTS_INT8);
    int reps = (double)M * K * N < 1e8 ? 20 : 5;
    /* own with 6-row tiles (the default), own with 4-row tiles (before), oneDNN, int8 */
    static const int tile_rows[4] = {0, 4, 0, 0}, node_of[4] = {0, 0, 1, 2};
    double t[4][64];
    unsigned long dnnl_bf16 = ss_dnnl_bf16_calls(), q8 = ss_gemm_q8_calls();
    for (int r = 0; r < rounds; r++)
        for (int mi = 0; mi < 4; mi++) {
            int m = r % 2 ? 3 - mi : mi;
            node_run *n = &runs[node_of[m]];
            ss_gemm_bf16_force_tile_rows(tile_rows[m]);
            n->def->run(&n->k); /* warm */
            double t0 = now_us();
            for (int i = 0; i < reps; i++)
                n->def->run(&n->k);
            t[m][r] = (now_us() - t0) / reps;
            ss_gemm_bf16_force_tile_rows(0);
        }
    bool dnnl_ok = ss_dnnl_bf16_calls() > dnnl_bf16, q8_ok = ss_gemm_q8_calls() > q8;
    double med[4];
    for (int m = 0; m < 4; m++) {
        qsort(t[m], (size_t)rounds, sizeof(double), cmp_double);
        med[m] = t[m][rounds / 2];
    }
    double gflop = 2e-3 * (double)M * (double)K * (double)N;
    printf(
        "| %lldx%lld | %lld | %.1f (%.0f) | %.1f (%.0f) | %.1f (%.0f)%s | %s | %.1f (%.0f)%s |\n",
        (long long)K, (long long)N, (long long)M, med[0], gflop / med[0], med[1], gflop / med[1],
        med[2], gflop / med[2], dnnl_ok ? "" : " f32!", med[0] <= med[2] ? "own" : "onednn", med[3],
        gflop / med[3], q8_ok ? "" : " f32!");
    fflush(stdout);
    for (int m = 0; m < 3; m++)
        node_free(&runs[m]);
    for (int i = 0; i < 2; i++)
        ss_tensor_free(&in[i]);
}

/* One thread's vdpbf16ps peak: 12 independent accumulators from registers, best of 5 runs. */
__attribute__((target("avx512f,avx512bf16"))) static double dpbf16_peak_gflops(void)
{
    __m512 acc[12];
    for (int i = 0; i < 12; i++)
        acc[i] = _mm512_set1_ps((float)i);
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = a;
    double best = 0;
    for (int run = 0; run < 5; run++) {
        long n = 2000000;
        double t0 = now_us();
        for (long i = 0; i < n; i++) {
#pragma GCC unroll 12
            for (int k = 0; k < 12; k++)
                acc[k] = _mm512_dpbf16_ps(acc[k], a, b);
            __asm__ volatile("" : "+v"(a));
        }
        double us = now_us() - t0, g = 64.0 * 12 * (double)n / us / 1e3;
        if (g > best) best = g;
    }
    float sink = 0;
    for (int i = 0; i < 12; i++)
        sink += _mm512_reduce_add_ps(acc[i]);
    if (sink == 1.5f) printf(" ");
    return best;
}

static void bf16_table(int threads, int rounds)
{
    static const int64_t kn[][2] = {
        {768, 2304}, {768, 768}, {768, 3072}, {3072, 768}, {768, 50257}};
    static const int64_t ms[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    const char *only_m = getenv("SS_BENCH_M"); /* one M only */
    if (rounds > 64) rounds = 64;
    printf("bf16 weights, own kernel %s vs oneDNN ISA %s, %d thread(s); median us per call "
           "(GFLOP/s) (%s)\n",
           ss_gemm_bf16_name(ss_gemm_bf16_pick()), ss_dnnl_isa_name(), threads,
           bench_clock == CLOCK_MONOTONIC ? "wall time" : "process CPU time");
    if (ss_gemm_bf16_supported(SS_BF16_AVX512_DOT))
        printf("vdpbf16ps peak of one thread (12 independent chains, registers only): %.0f "
               "GFLOP/s\n",
               dpbf16_peak_gflops());
    printf("| K x N | M | own, 6-row tiles | own, 4-row tiles | onednn | faster | int8 weights |\n"
           "|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof kn / sizeof kn[0]; i++)
        for (size_t j = 0; j < sizeof ms / sizeof ms[0]; j++)
            if (!only_m || atoll(only_m) == ms[j])
                bf16_row(ms[j], kn[i][0], kn[i][1], threads, rounds);
}

/* ------------------------------------------------------------------ --decode */

#define STEP_MATS 49

typedef struct {
    const float *p;
    int64_t n, next; /* floats; next: 64 KiB pieces claimed */
    double sum[64];
} read_job;

__attribute__((target("avx512f"))) static void read_part(void *ctx, int part, int parts)
{
    (void)parts;
    read_job *j = ctx;
    const int64_t piece = 16384;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (;;) {
        int64_t i0 = __atomic_fetch_add(&j->next, piece, __ATOMIC_RELAXED);
        if (i0 >= j->n) break;
        int64_t i1 = i0 + piece < j->n ? i0 + piece : j->n, i = i0;
        for (; i + 64 <= i1; i += 64) {
            s0 = _mm512_add_ps(s0, _mm512_loadu_ps(j->p + i));
            s1 = _mm512_add_ps(s1, _mm512_loadu_ps(j->p + i + 16));
            s2 = _mm512_add_ps(s2, _mm512_loadu_ps(j->p + i + 32));
            s3 = _mm512_add_ps(s3, _mm512_loadu_ps(j->p + i + 48));
        }
    }
    j->sum[part & 63] += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), s2));
    j->sum[part & 63] += _mm512_reduce_add_ps(s3);
}

static double clock_ms(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* A task of 2 pieces of 50 us each: what handing work to a pool worker costs (50 us a call if
 * the worker starts at once, 100 if it never does). */
typedef struct {
    int next, by_worker;
} trip_job;

static void trip_part(void *ctx, int part, int parts)
{
    (void)parts;
    trip_job *j = ctx;
    while (__atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED) < 2) {
        if (part) j->by_worker++;
        double t0 = clock_ms(CLOCK_MONOTONIC);
        while (clock_ms(CLOCK_MONOTONIC) - t0 < 0.05) {
        }
    }
}

static void pool_trip(int spin)
{
    ss_pool_set_spin_us(spin);
    int n = 500, worker = 0;
    double t0 = clock_ms(CLOCK_MONOTONIC), c0 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
    for (int i = 0; i < n; i++) {
        trip_job j = {0, 0};
        ss_pool_run(2, trip_part, &j);
        worker += j.by_worker > 0;
    }
    ss_pool_set_spin_us(-1);
    printf("pool hand-off (2 parts, 2 pieces of 50 us), workers poll %d us: %.1f us wall, %.1f us "
           "CPU per call, the worker "
           "took a piece in %d of %d\n",
           spin, (clock_ms(CLOCK_MONOTONIC) - t0) * 1e3 / n,
           (clock_ms(CLOCK_PROCESS_CPUTIME_ID) - c0) * 1e3 / n, worker, n);
}

typedef struct {
    const char *name;
    bool bf16, read, huge; /* huge: float32 weights copied to 2 MiB pages */
    int threads;
    ss_gemv_split split;
    int spin;       /* ss_pool_set_spin_us */
    node_run *runs; /* STEP_MATS */
    ss_tensor (*in)[2];
    double bytes, *wall, *cpu;
    double mat_best[STEP_MATS]; /* each matrix's fastest call, ms */
    bool packed;                /* float32 weights packed in 64-column panels (gemm_f32p.h) */
    float **packs;              /* packed: each matrix's panels */
    float *out;                 /* packed: C */
} decode_cfg;

/* One step; with `best`, each matrix's call is timed and its fastest kept. */
static void decode_step(decode_cfg *c, ss_tensor *w, bool best)
{
    ss_pool_set_spin_us(c->spin);
    ss_gemm_force_gemv_split(c->split);
    for (int i = 0; i < STEP_MATS; i++) {
        double t0 = best ? clock_ms(CLOCK_MONOTONIC) : 0;
        if (c->read) {
            read_job j = {.p = w[i].data, .n = ss_tensor_numel(&w[i])};
            ss_pool_run(c->threads, read_part, &j);
        } else if (c->packed) {
            const ss_tensor *x = &c->in[i][0];
            ss_gemm_f32p(1, w[i].dims[1], w[i].dims[0], x->data, w[i].dims[0], c->packs[i], false,
                         c->out, w[i].dims[1], c->threads);
        } else {
            c->runs[i].def->run(&c->runs[i].k);
        }
        if (best) {
            double t = clock_ms(CLOCK_MONOTONIC) - t0;
            if (c->mat_best[i] == 0 || t < c->mat_best[i]) c->mat_best[i] = t;
        }
    }
    ss_gemm_force_gemv_split(SS_GEMV_SPLIT_DEFAULT);
    ss_pool_set_spin_us(-1);
}

static int cmp_double_med(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n / 2;
}

static void decode_table(int rounds)
{
    if (!__builtin_cpu_supports("avx512f")) {
        printf("--decode: needs AVX-512F\n");
        return;
    }
    static const int64_t kn[4][2] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}};
    ss_tensor w[STEP_MATS], a[2];
    int64_t kinds[STEP_MATS][2];
    double f32_bytes = 0;
    for (int i = 0; i < STEP_MATS; i++) {
        int64_t K = i == STEP_MATS - 1 ? 768 : kn[i % 4][0],
                N = i == STEP_MATS - 1 ? 50257 : kn[i % 4][1];
        kinds[i][0] = K, kinds[i][1] = N;
        int64_t bd[2] = {K, N};
        w[i] = rand_tensor(2, bd);
        f32_bytes += 4.0 * (double)K * (double)N;
    }
    int64_t a0[2] = {1, 768}, a1[2] = {1, 3072};
    a[0] = rand_tensor(2, a0), a[1] = rand_tensor(2, a1);
    ss_gemm_pool_reserve(2);
    decode_cfg cfg[] = {
        {"read loop (floor)", false, true, false, 1, 0, 50, 0, 0, 0, 0, 0},
        {"read loop (floor)", false, true, false, 2, 0, 50, 0, 0, 0, 0, 0},
        {"read loop, 2 MiB pages", false, true, true, 1, 0, 50, 0, 0, 0, 0, 0},
        {"read loop, 2 MiB pages", false, true, true, 2, 0, 50, 0, 0, 0, 0, 0},
        {"f32 old (legacy split, no poll)", false, false, false, 1, SS_GEMV_SPLIT_LEGACY, 0, 0, 0,
         0, 0, 0},
        {"f32 old (legacy split, no poll)", false, false, false, 2, SS_GEMV_SPLIT_LEGACY, 0, 0, 0,
         0, 0, 0},
        {"f32 column chunks >= 1024", false, false, false, 2, SS_GEMV_SPLIT_COLUMNS, 50, 0, 0, 0, 0,
         0},
        {"f32 new (workers sleep at once, default)", false, false, false, 2, SS_GEMV_SPLIT_DEFAULT,
         0, 0, 0, 0, 0, 0},
        {"f32 new (K pieces, poll 50 us)", false, false, false, 1, SS_GEMV_SPLIT_DEFAULT, 50, 0, 0,
         0, 0, 0},
        {"f32 new (K pieces, poll 50 us)", false, false, false, 2, SS_GEMV_SPLIT_DEFAULT, 50, 0, 0,
         0, 0, 0},
        {"bf16 old (legacy split, no poll)", true, false, false, 1, SS_GEMV_SPLIT_LEGACY, 0, 0, 0,
         0, 0, 0},
        {"bf16 old (legacy split, no poll)", true, false, false, 2, SS_GEMV_SPLIT_LEGACY, 0, 0, 0,
         0, 0, 0},
        {"bf16 default (workers sleep: small claims as before)", true, false, false, 2,
         SS_GEMV_SPLIT_DEFAULT, 0, 0, 0, 0, 0, 0},
        {"bf16 6-block claims (workers poll 50 us)", true, false, false, 1, SS_GEMV_SPLIT_DEFAULT,
         50, 0, 0, 0, 0, 0},
        {"bf16 6-block claims (workers poll 50 us)", true, false, false, 2, SS_GEMV_SPLIT_DEFAULT,
         50, 0, 0, 0, 0, 0},
        {"f32 new, weights on 2 MiB pages", false, false, true, 1, SS_GEMV_SPLIT_DEFAULT, 50, 0, 0,
         0, 0, 0},
        {"f32 new, weights on 2 MiB pages", false, false, true, 2, SS_GEMV_SPLIT_DEFAULT, 50, 0, 0,
         0, 0, 0},
        {.name = "f32 packed 64-column panels", .threads = 1, .spin = 50, .packed = true},
        {.name = "f32 packed 64-column panels", .threads = 2, .spin = 50, .packed = true},
        {.name = "f32 packed 64-column panels, no poll", .threads = 2, .packed = true},
    };
    int n_cfg = (int)(sizeof cfg / sizeof *cfg);
    node_run *bf16_runs[3] = {NULL, NULL, NULL}; /* per thread count: shared by the splits */
    node_run *f32_runs[3] = {NULL, NULL, NULL}, *huge_runs[3] = {NULL, NULL, NULL};
    ss_tensor wh[STEP_MATS]; /* the float32 weights again, on 2 MiB pages */
    for (int i = 0; i < STEP_MATS; i++) {
        wh[i] = w[i];
        const size_t huge = (size_t)2 << 20;
        void *p = NULL;
        if (posix_memalign(&p, huge, (w[i].nbytes + huge - 1) / huge * huge)) abort();
        madvise(p, (w[i].nbytes + huge - 1) / huge * huge, MADV_HUGEPAGE);
        memcpy(p, w[i].data, w[i].nbytes);
        wh[i].data = p;
        wh[i].storage = w[i].storage;
    }
    for (int c = 0; c < n_cfg; c++) {
        cfg[c].wall = calloc((size_t)rounds, sizeof(double));
        cfg[c].cpu = calloc((size_t)rounds, sizeof(double));
        cfg[c].bytes = cfg[c].bf16 ? f32_bytes / 2 : f32_bytes;
        if (cfg[c].read) continue;
        if (cfg[c].packed) {
            static float **packs, *out;
            if (!packs) {
                packs = calloc(STEP_MATS, sizeof *packs);
                out = calloc(50257 + 64, sizeof *out);
                for (int i = 0; i < STEP_MATS; i++) {
                    packs[i] = ss_gemm_f32p_alloc(kinds[i][0], kinds[i][1]);
                    ss_gemm_f32p_pack(w[i].data, kinds[i][0], kinds[i][1], kinds[i][1], false,
                                      packs[i]);
                }
            }
            cfg[c].packs = packs, cfg[c].out = out;
            cfg[c].in = calloc(STEP_MATS, sizeof *cfg[c].in);
            for (int i = 0; i < STEP_MATS; i++)
                cfg[c].in[i][0] = a[kinds[i][0] == 768 ? 0 : 1];
            continue;
        }
        node_run **set = cfg[c].bf16   ? &bf16_runs[cfg[c].threads]
                         : cfg[c].huge ? &huge_runs[cfg[c].threads]
                                       : &f32_runs[cfg[c].threads];
        if (!*set) {
            *set = calloc(STEP_MATS, sizeof(node_run));
            cfg[c].in = calloc(STEP_MATS, sizeof *cfg[c].in);
            for (int i = 0; i < STEP_MATS; i++) {
                shape s = {"decode", "MatMul", 1, kinds[i][0], kinds[i][1], false, false};
                cfg[c].in[i][0] = a[kinds[i][0] == 768 ? 0 : 1];
                cfg[c].in[i][1] = cfg[c].huge ? wh[i] : w[i];
                if (!cfg[c].bf16) ss_kernels_force(SS_KERNELS_OWN);
                node_make(&(*set)[i], &s, cfg[c].in[i], cfg[c].threads,
                          cfg[c].bf16 ? SS_WEIGHTS_BF16 : SS_WEIGHTS_F32);
                ss_kernels_force(SS_KERNELS_AUTO);
            }
        }
        cfg[c].runs = *set;
    }
    unsigned long f32_calls = ss_gemm_calls(SS_GEMM_AVX512);
    int reps = 3;
    for (int r = 0; r < rounds; r++)
        for (int ci = 0; ci < n_cfg; ci++) {
            decode_cfg *c = &cfg[r % 2 ? n_cfg - 1 - ci : ci];
            decode_step(c, c->huge ? wh : w, true); /* warm, and each matrix timed alone */
            double t0 = clock_ms(CLOCK_MONOTONIC), c0 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
            for (int i = 0; i < reps; i++)
                decode_step(c, c->huge ? wh : w, false);
            c->wall[r] = (clock_ms(CLOCK_MONOTONIC) - t0) / reps;
            c->cpu[r] = (clock_ms(CLOCK_PROCESS_CPUTIME_ID) - c0) / reps;
        }
    if (ss_gemm_calls(SS_GEMM_AVX512) == f32_calls) printf("warning: f32 not on the own GEMV\n");
    printf("GPT-2-124M decode step, 49 weight matrices at M = 1 (f32 %.0f MB, bf16 %.0f MB), bf16 "
           "kernel %s; %d interleaved rounds of %d steps\n",
           f32_bytes / 1e6, f32_bytes / 2e6, ss_gemm_bf16_name(ss_gemm_bf16_pick()), rounds, reps);
    pool_trip(0);
    pool_trip(50);
    printf(
        "sum of best = each matrix's fastest call over the rounds, summed (what a step takes when "
        "no neighbour runs during any call; other columns time whole steps)\n");
    printf(
        "| kernel | threads | sum of best ms | GB/s (sum of best) | best ms/step | median ms/step "
        "| GB/s (median) | CPU ms/step (median) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int c = 0; c < n_cfg; c++) {
        int m = cmp_double_med(cfg[c].wall, rounds);
        double best = cfg[c].wall[0], med = cfg[c].wall[m];
        m = cmp_double_med(cfg[c].cpu, rounds);
        double sum = 0;
        for (int i = 0; i < STEP_MATS; i++)
            sum += cfg[c].mat_best[i];
        printf("| %s | %d | %.2f | %.1f | %.2f | %.2f | %.1f | %.2f |\n", cfg[c].name,
               cfg[c].threads, sum, cfg[c].bytes / sum / 1e6, best, med, cfg[c].bytes / med / 1e6,
               cfg[c].cpu[m]);
    }
}

/* --step: the 49 bf16 weight matrices of one GPT-2-124M step at M rows (batched decode, default
 * 32; SS_BENCH_M), 250 MB of packed weights, more than any cache, so every call streams its
 * weights from memory as in the served model: the kernel's k-chunks with the next chunk
 * prefetched against whole-k tiles, interleaved rounds. */
static void step_table(int threads, int rounds)
{
    if (!ss_gemm_bf16_supported(SS_BF16_AVX512) && !ss_gemm_bf16_supported(SS_BF16_AVX2)) {
        printf("--step: needs AVX2 or AVX-512\n");
        return;
    }
    const char *env_m = getenv("SS_BENCH_M");
    int64_t M = env_m ? strtoll(env_m, NULL, 10) : 32;
    static const int64_t kn[4][2] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}};
    static node_run runs[STEP_MATS];
    static ss_tensor in[STEP_MATS][2];
    int64_t a0[2] = {M, 768}, a1[2] = {M, 3072};
    ss_tensor a[2] = {rand_tensor(2, a0), rand_tensor(2, a1)};
    double flop = 0;
    ss_gemm_pool_reserve(threads);
    ss_gemm_bf16_force_max_m(M);
    for (int i = 0; i < STEP_MATS; i++) {
        int64_t K = i == STEP_MATS - 1 ? 768 : kn[i % 4][0],
                N = i == STEP_MATS - 1 ? 50257 : kn[i % 4][1];
        int64_t bd[2] = {K, N};
        in[i][0] = a[K == 768 ? 0 : 1];
        in[i][1] = rand_tensor(2, bd);
        shape s = {"step", "MatMul", M, K, N, false, false};
        node_make(&runs[i], &s, in[i], threads, SS_WEIGHTS_BF16);
        free(in[i][1].data); /* the packed copy is what runs */
        flop += 2.0 * (double)M * (double)K * (double)N;
    }
    ss_gemm_bf16_force_max_m(-1);
    static const struct {
        const char *name;
        int64_t kp;
        bool prefetch;
    } cfg[] = {{"whole k per tile, no prefetch (the tiling before)", 1 << 30, false},
               {"chunks of 64 k pairs, next prefetched", 64, true},
               {"chunks of 128 k pairs, next prefetched (default)", 0, true},
               {"chunks of 128 k pairs, no prefetch", 128, false},
               {"chunks of 256 k pairs, next prefetched", 256, true}};
    enum { N_CFG = sizeof cfg / sizeof *cfg };
    double *t[N_CFG];
    for (int c = 0; c < N_CFG; c++)
        t[c] = calloc((size_t)rounds, sizeof(double));
    for (int r = 0; r < rounds; r++)
        for (int ci = 0; ci < N_CFG; ci++) {
            int c = r % 2 ? N_CFG - 1 - ci : ci;
            ss_gemm_bf16_force_chunk(cfg[c].kp, cfg[c].prefetch);
            double t0 = clock_ms(bench_clock);
            for (int rep = 0; rep < 3; rep++)
                for (int i = 0; i < STEP_MATS; i++)
                    runs[i].def->run(&runs[i].k);
            t[c][r] = (clock_ms(bench_clock) - t0) / 3;
        }
    ss_gemm_bf16_force_chunk(0, true);
    char cpu[128];
    cpu_model_name(cpu, sizeof cpu);
    printf("CPU: %s\n", cpu);
    printf("GPT-2-124M step at M = %lld, 49 bf16 matrices (%.0f MB packed), kernel %s, %d "
           "thread(s); %d interleaved rounds of 3 steps\n",
           (long long)M, flop / (double)M / 1e6, ss_gemm_bf16_name(ss_gemm_bf16_pick()), threads,
           rounds);
    printf("| tiles | median ms/step | GFLOP/s | best ms/step |\n|---|---:|---:|---:|\n");
    for (int c = 0; c < N_CFG; c++) {
        int m = cmp_double_med(t[c], rounds);
        printf("| %s | %.2f | %.0f | %.2f |\n", cfg[c].name, t[c][m], flop / t[c][m] / 1e6,
               t[c][0]);
    }
}

/* --mlp's row counts (issue 10's batch is 32; the others bound the own packed kernel's range) */
static int64_t mlp_ms[8] = {32};

static fma_peak peak_row(int threads)
{
    fma_peak p = fma_peak_measure(threads, 0.2, 3);
    printf("f32 FMA peak, %s chains, %d thread(s): %.1f GFLOP/s (CPU-time rate), %.1f GFLOP/s "
           "(wall)\n",
           p.isa, p.threads, p.gflops_cpu, p.gflops_wall);
    fflush(stdout);
    return p;
}

/* issue 10's MLP GEMMs under each mode at `threads`: 4 layers of M x 4096 x 4096, each with its
 * own weights as in the model (256 MiB of f32 weights streamed per call, more than any cache),
 * median us per layer, GFLOP/s and % of `peak`. */
#define MLP_LAYERS 4
static void mlp_rows(int64_t M, int threads, int rounds, const fma_peak *peak)
{
    char name[64];
    snprintf(name, sizeof name, "%lldx4096x4096 x%d", (long long)M, MLP_LAYERS);
    const shape s = {name, "MatMul", M, 4096, 4096, false, false};
    int64_t ad[2] = {s.M, s.K}, bd[2] = {s.K, s.N};
    ss_tensor x = rand_tensor(2, ad), w[MLP_LAYERS];
    for (int l = 0; l < MLP_LAYERS; l++)
        w[l] = rand_tensor(2, bd);
    static node_run runs[N_MODES][MLP_LAYERS];
    ss_tensor in[MLP_LAYERS][2]; /* the nodes point into this */
    for (int l = 0; l < MLP_LAYERS; l++)
        in[l][0] = x, in[l][1] = w[l];
    openblas_set_num_threads(threads);
    for (int m = 0; m < N_MODES; m++) {
        ss_kernels_force(modes[m]);
        for (int l = 0; l < MLP_LAYERS; l++)
            node_make(&runs[m][l], &s, in[l], threads, SS_WEIGHTS_F32);
    }
    ss_kernels_force(SS_KERNELS_AUTO);
    double *t[N_MODES];
    for (int m = 0; m < N_MODES; m++)
        t[m] = calloc((size_t)rounds, sizeof(double));
    const int reps = 3;
    for (int r = 0; r < rounds; r++)
        for (int mi = 0; mi < N_MODES; mi++) {
            int m = r % 2 ? N_MODES - 1 - mi : mi;
            for (int l = 0; l < MLP_LAYERS; l++) /* warm */
                runs[m][l].def->run(&runs[m][l].k);
            double t0 = now_us();
            for (int i = 0; i < reps; i++)
                for (int l = 0; l < MLP_LAYERS; l++)
                    runs[m][l].def->run(&runs[m][l].k);
            t[m][r] = (now_us() - t0) / (reps * MLP_LAYERS);
        }
    double gflop = 2e-3 * (double)s.M * (double)s.K * (double)s.N; /* per us -> GFLOP/s */
    static const char *names[N_MODES] = {"own (in place)", "blas", "onednn", "auto"};
    for (int m = 0; m < N_MODES; m++) {
        qsort(t[m], (size_t)rounds, sizeof(double), cmp_double);
        double med = t[m][rounds / 2], g = gflop / med, gbest = gflop / t[m][0];
        /* CPU time counts all threads: the rate per busy core times `threads` */
        if (bench_clock != CLOCK_MONOTONIC) g *= threads, gbest *= threads;
        printf("| %s | %d | %s | %.0f | %.1f | %.0f%% | %.1f |\n", s.name, threads, names[m], med,
               g, 100.0 * g / peak->gflops_cpu, gbest);
        free(t[m]);
        for (int l = 0; l < MLP_LAYERS; l++)
            node_free(&runs[m][l]);
    }
    fflush(stdout);
    ss_tensor_free(&x);
    for (int l = 0; l < MLP_LAYERS; l++)
        ss_tensor_free(&w[l]);
}

/* ------------------------------------------------------------------ --int8 */

/* libgomp's, as in src/runtime/ops/onednn.c: oneDNN sizes its kernels by the caller's count. */
extern void omp_set_num_threads(int n);

/* One layer y = x W on oneDNN's int8 matmul: W quantized once per output column (symmetric, scale
 * absmax / 127) and reordered into the primitive's layout; x quantized on every call with one
 * scale for the tensor; the output scale of column n, act_scale x w_scale[n], is given at run
 * time. */
typedef struct {
    int64_t M, K, N;
    float *w_scale, *out_scale;
    int8_t *xq;
    void *w_packed, *scratch;
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, dst, osc, pad;
    char impl[64];
} q8_layer;

#define Q8_CHECK(call)                                                                             \
    do {                                                                                           \
        dnnl_status_t r_ = (call);                                                                 \
        if (r_ != dnnl_success) {                                                                  \
            fprintf(stderr, "oneDNN int8: %s failed (status %d)\n", #call, (int)r_);               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void q8_make(q8_layer *q, const ss_tensor *w, int64_t M, int threads)
{
    int64_t K = w->dims[0], N = w->dims[1];
    const float *wf = w->data;
    *q = (q8_layer){.M = M, .K = K, .N = N};
    q->w_scale = malloc((size_t)N * sizeof(float));
    q->out_scale = malloc((size_t)N * sizeof(float));
    q->xq = aligned_alloc(64, (size_t)((M * K + 63) / 64 * 64));
    int8_t *wq = malloc((size_t)(K * N));
    if (!q->w_scale || !q->out_scale || !q->xq || !wq) abort();
    for (int64_t n = 0; n < N; n++) {
        float m = 0;
        for (int64_t k = 0; k < K; k++)
            m = fmaxf(m, fabsf(wf[k * N + n]));
        q->w_scale[n] = m > 0 ? m / 127.0f : 1.0f;
    }
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++)
            wq[k * N + n] = (int8_t)lrintf(wf[k * N + n] / q->w_scale[n]);
    omp_set_num_threads(threads);
    Q8_CHECK(dnnl_engine_create(&q->eng, dnnl_cpu, 0));
    Q8_CHECK(dnnl_stream_create(&q->strm, q->eng, dnnl_stream_default_flags));
    dnnl_dims_t sd = {M, K}, wd = {K, N}, dd = {M, N}, od = {N};
    dnnl_memory_desc_t src_md, wei_any, wei_plain, dst_md, osc_md;
    Q8_CHECK(dnnl_memory_desc_init_by_tag(&src_md, 2, sd, dnnl_s8, dnnl_ab));
    Q8_CHECK(dnnl_memory_desc_init_by_tag(&wei_any, 2, wd, dnnl_s8, dnnl_format_tag_any));
    Q8_CHECK(dnnl_memory_desc_init_by_tag(&wei_plain, 2, wd, dnnl_s8, dnnl_ab));
    Q8_CHECK(dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, dnnl_f32, dnnl_ab));
    Q8_CHECK(dnnl_memory_desc_init_by_tag(&osc_md, 1, od, dnnl_f32, dnnl_a));
    dnnl_matmul_desc_t md;
    Q8_CHECK(dnnl_matmul_desc_init(&md, &src_md, &wei_any, NULL, &dst_md));
    dnnl_primitive_attr_t attr;
    Q8_CHECK(dnnl_primitive_attr_create(&attr));
    Q8_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    Q8_CHECK(dnnl_primitive_attr_set_output_scales(attr, 1, 1 << 1, &DNNL_RUNTIME_F32_VAL));
    dnnl_primitive_desc_t pd;
    Q8_CHECK(dnnl_primitive_desc_create(&pd, &md, attr, q->eng, NULL));
    dnnl_primitive_attr_destroy(attr);
    const char *impl = NULL;
    Q8_CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    snprintf(q->impl, sizeof q->impl, "%s", impl ? impl : "?");
    const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *spd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t wbytes = dnnl_memory_desc_get_size(want), sbytes = dnnl_memory_desc_get_size(spd);
    q->w_packed = aligned_alloc(64, (wbytes + 63) / 64 * 64);
    q->scratch = sbytes ? aligned_alloc(64, (sbytes + 63) / 64 * 64) : NULL;
    if (!q->w_packed || (sbytes && !q->scratch)) abort();
    dnnl_memory_t plain;
    Q8_CHECK(dnnl_memory_create(&plain, &wei_plain, q->eng, wq));
    Q8_CHECK(dnnl_memory_create(&q->wei, want, q->eng, q->w_packed));
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t reorder;
    Q8_CHECK(dnnl_reorder_primitive_desc_create(&rpd, &wei_plain, q->eng, want, q->eng, NULL));
    Q8_CHECK(dnnl_primitive_create(&reorder, rpd));
    dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, q->wei}};
    Q8_CHECK(dnnl_primitive_execute(reorder, q->strm, 2, ra));
    Q8_CHECK(dnnl_stream_wait(q->strm));
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(plain);
    free(wq);
    Q8_CHECK(dnnl_memory_create(&q->src, &src_md, q->eng, q->xq));
    Q8_CHECK(dnnl_memory_create(&q->dst, &dst_md, q->eng, DNNL_MEMORY_NONE));
    Q8_CHECK(dnnl_memory_create(&q->osc, &osc_md, q->eng, q->out_scale));
    Q8_CHECK(dnnl_memory_create(&q->pad, spd, q->eng, q->scratch));
    Q8_CHECK(dnnl_primitive_create(&q->prim, pd));
    dnnl_primitive_desc_destroy(pd);
}

static void q8_free(q8_layer *q)
{
    dnnl_primitive_destroy(q->prim);
    dnnl_memory_destroy(q->src);
    dnnl_memory_destroy(q->wei);
    dnnl_memory_destroy(q->dst);
    dnnl_memory_destroy(q->osc);
    dnnl_memory_destroy(q->pad);
    dnnl_stream_destroy(q->strm);
    dnnl_engine_destroy(q->eng);
    free(q->w_scale);
    free(q->out_scale);
    free(q->xq);
    free(q->w_packed);
    free(q->scratch);
}

__attribute__((target("avx512f,avx512bw"))) static float absmax_avx512(const float *x, int64_t n)
{
    __m512 m = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    float r = _mm512_reduce_max_ps(m);
    for (; i < n; i++)
        r = fmaxf(r, fabsf(x[i]));
    return r;
}

/* Round to nearest even (the default MXCSR mode) and saturate to int8. */
__attribute__((target("avx512f,avx512bw"))) static void quantize_avx512(const float *x, int64_t n,
                                                                        float inv, int8_t *q)
{
    __m512 s = _mm512_set1_ps(inv);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(
                                                 _mm512_mul_ps(_mm512_loadu_ps(x + i), s))));
    for (; i < n; i++)
        q[i] = (int8_t)fmaxf(-128.0f, fminf(127.0f, nearbyintf(x[i] * inv)));
}

static void q8_run(q8_layer *q, const float *x, float *y)
{
    int64_t n = q->M * q->K;
    bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    float am = 0;
    if (avx512)
        am = absmax_avx512(x, n);
    else
        for (int64_t i = 0; i < n; i++)
            am = fmaxf(am, fabsf(x[i]));
    float s = am > 0 ? am / 127.0f : 1.0f, inv = 1.0f / s;
    if (avx512)
        quantize_avx512(x, n, inv, q->xq);
    else
        for (int64_t i = 0; i < n; i++)
            q->xq[i] = (int8_t)fmaxf(-128.0f, fminf(127.0f, nearbyintf(x[i] * inv)));
    for (int64_t j = 0; j < q->N; j++)
        q->out_scale[j] = s * q->w_scale[j];
    dnnl_memory_set_data_handle(q->dst, y);
    dnnl_exec_arg_t args[6] = {{DNNL_ARG_SRC, q->src},
                               {DNNL_ARG_WEIGHTS, q->wei},
                               {DNNL_ARG_DST, q->dst},
                               {DNNL_ARG_ATTR_OUTPUT_SCALES, q->osc},
                               {DNNL_ARG_SCRATCHPAD, q->pad}};
    Q8_CHECK(dnnl_primitive_execute(q->prim, q->strm, q->scratch ? 5 : 4, args));
    Q8_CHECK(dnnl_stream_wait(q->strm));
}

static double rel_l2(const float *a, const float *ref, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The MLP's 4 layers at M rows on `threads`: float32, bf16 and int8 weights through the op table
 * (auto, as the runtime runs them; int8 is gemm_q8.c where the CPU has VNNI) and the oneDNN int8
 * layers above, interleaved; median us per layer.
 * Each mode streams 256 MiB of weights per pass, more than any cache: the 4 float32 matrices,
 * 2 packed bf16 copies and 4 int8 copies of each. Every layer reads the same x (a chain would
 * compound three different errors into one). */
#define B16_LAYERS (2 * MLP_LAYERS)
#define Q8_LAYERS (4 * MLP_LAYERS)
static void int8_row(int64_t M, int threads, int rounds)
{
    const shape s = {"int8", "MatMul", M, 4096, 4096, false, false};
    int64_t ad[2] = {M, 4096}, bd[2] = {4096, 4096};
    ss_tensor x = rand_tensor(2, ad), w[MLP_LAYERS];
    static node_run f32[MLP_LAYERS], b16[B16_LAYERS];
    static q8_layer q8[Q8_LAYERS];
    static node_run own[Q8_LAYERS];
    const int modes_n = 4;
    ss_tensor in[MLP_LAYERS][2];
    float *y8 = malloc((size_t)(M * 4096) * sizeof(float));
    if (!y8) abort();
    for (int l = 0; l < MLP_LAYERS; l++) {
        w[l] = rand_tensor(2, bd);
        in[l][0] = x, in[l][1] = w[l];
        node_make(&f32[l], &s, in[l], threads, SS_WEIGHTS_F32);
    }
    for (int l = 0; l < B16_LAYERS; l++)
        node_make(&b16[l], &s, in[l % MLP_LAYERS], threads, SS_WEIGHTS_BF16);
    for (int l = 0; l < Q8_LAYERS; l++) {
        q8_make(&q8[l], &w[l % MLP_LAYERS], M, threads);
        node_make(&own[l], &s, in[l % MLP_LAYERS], threads, SS_WEIGHTS_INT8);
    }
    unsigned long q8_calls = ss_gemm_q8_calls();
    static const int layers[4] = {MLP_LAYERS, B16_LAYERS, Q8_LAYERS, Q8_LAYERS};
    double *t[4];
    for (int m = 0; m < modes_n; m++)
        t[m] = calloc((size_t)rounds, sizeof(double));
    const int reps = M >= 32 ? 3 : 10;
    double err_b16 = 0, err_q8 = 0, err_gv = 0;
    for (int r = 0; r < rounds; r++)
        for (int mi = 0; mi < modes_n; mi++) {
            int m = r % 2 ? modes_n - 1 - mi : mi;
            double t0 = 0;
            for (int i = -1; i < reps; i++) { /* i == -1: warm, not timed */
                if (i == 0) t0 = now_us();
                for (int l = 0; l < layers[m]; l++) {
                    if (m == 0) f32[l].def->run(&f32[l].k);
                    if (m == 1) b16[l].def->run(&b16[l].k);
                    if (m == 2) {
                        omp_set_num_threads(threads);
                        q8_run(&q8[l], x.data, y8);
                    }
                    if (m == 3) own[l].def->run(&own[l].k);
                }
            }
            t[m][r] = (now_us() - t0) / (reps * layers[m]);
        }
    for (int l = 0; l < MLP_LAYERS; l++) { /* errors: every layer on the same x */
        f32[l].def->run(&f32[l].k);
        b16[l].def->run(&b16[l].k);
        q8_run(&q8[l], x.data, y8);
        int64_t n = M * 4096;
        err_b16 = fmax(err_b16, rel_l2(b16[l].out.data, f32[l].out.data, n));
        err_q8 = fmax(err_q8, rel_l2(y8, f32[l].out.data, n));
        own[l].def->run(&own[l].k);
        err_gv = fmax(err_gv, rel_l2(own[l].out.data, f32[l].out.data, n));
    }
    bool own_ok = ss_gemm_q8_calls() > q8_calls; /* else the int8 flag kept float32 */
    double med[4];
    for (int m = 0; m < modes_n; m++) {
        qsort(t[m], (size_t)rounds, sizeof(double), cmp_double);
        med[m] = t[m][rounds / 2];
    }
    double gflop = 2e-3 * (double)M * 4096.0 * 4096.0, best = med[3] < med[2] ? med[3] : med[2];
    printf("| %lld | %d | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f, %.1f GB/s)%s | "
           "%.2fx | %.2fx | %.1e | %.1e / %.1e | %s |\n",
           (long long)M, threads, med[0], gflop / med[0], med[1], gflop / med[1], med[2],
           gflop / med[2], med[3], gflop / med[3], 16.0 * 1048576 / med[3] / 1e3,
           own_ok ? "" : " f32!", med[0] / best, med[1] / best, err_b16, err_q8, err_gv,
           q8[0].impl);
    fflush(stdout);
    for (int m = 0; m < modes_n; m++)
        free(t[m]);
    for (int l = 0; l < B16_LAYERS; l++)
        node_free(&b16[l]);
    for (int l = 0; l < Q8_LAYERS; l++) {
        node_free(&own[l]);
        q8_free(&q8[l]);
    }
    for (int l = 0; l < MLP_LAYERS; l++) {
        node_free(&f32[l]);
        ss_tensor_free(&w[l]);
    }
    ss_tensor_free(&x);
    free(y8);
}

static void int8_table(int threads, int rounds)
{
    char cpu[128];
    cpu_model_name(cpu, sizeof cpu);
    printf("CPU: %s; oneDNN ISA %s; int8 dot products: %s; median us per 4096x4096 layer "
           "(GFLOP/s), %s\n",
           cpu, ss_dnnl_isa_name(),
           __builtin_cpu_supports("avx512vnni") ? "AVX512-VNNI" : "no VNNI",
           bench_clock == CLOCK_MONOTONIC ? "wall time" : "process CPU time");
    printf(
        "| M | threads | float32 (auto) | bf16 weights (auto) | int8 on oneDNN | int8 weights "
        "(auto: gemm_q8.c) | best int8 vs float32 | best int8 vs bf16 | bf16 error | int8 error, "
        "oneDNN / own | int8 oneDNN impl |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n");
    static const int64_t ms[] = {1, 32, 128};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        int8_row(ms[i], 1, rounds);
        if (threads > 1) int8_row(ms[i], threads, rounds);
    }
}

/* ------------------------------------------------------------------ --attention */

/* One batched decode step's PagedAttention (all 12 layers of GPT-2-124M: 12 heads of 64) for 32
 * sequences of `len` cached tokens, keys and values in float32 or bf16 blocks: median us per step
 * over `rounds`, the two pools' steps interleaved. Each step writes one token a sequence and is
 * then taken back (the sequences are made again), so every round reads the same lengths. */
enum { AT_SEQS = 32, AT_LAYERS = 12, AT_HEADS = 12, AT_HD = 64 };

static double attention_step(ss_kvpool *pool, ss_kv_layer **layers, int64_t len, int threads,
                             float *q, float *kv, float *out)
{
    int64_t ids[AT_SEQS], pos[AT_SEQS];
    for (int b = 0; b < AT_SEQS; b++) {
        ids[b] = b, pos[b] = len;
        ss_kvpool_seq_free(pool, b);
        ss_kvpool_seq_create(pool, b);
    }
    /* the past: len tokens a sequence, written as one prefill row each (not timed) */
    for (int b = 0; b < AT_SEQS; b++) {
        int64_t p0[1024];
        for (int64_t t = 0; t < len; t++)
            p0[t] = t;
        for (int l = 0; l < AT_LAYERS; l++) {
            ss_kv_step s = {q, kv, kv, &ids[b], p0, out, 1, len, AT_HEADS, 0.125f, 1};
            ss_status *st = ss_kvpool_attend(pool, layers[l], &s);
            if (st) fprintf(stderr, "%s\n", st->msg), ss_status_free(st), exit(1);
        }
    }
    double t0 = now_us();
    for (int l = 0; l < AT_LAYERS; l++) {
        ss_kv_step s = {q, kv, kv, ids, pos, out, AT_SEQS, 1, AT_HEADS, 0.125f, threads};
        ss_status *st = ss_kvpool_attend(pool, layers[l], &s);
        if (st) fprintf(stderr, "%s\n", st->msg), ss_status_free(st), exit(1);
    }
    return now_us() - t0;
}

static void attention_table(int threads, int rounds)
{
    static const int64_t lens[] = {64, 256, 512};
    size_t bytes = (size_t)AT_SEQS * 600 * AT_LAYERS * 2 * AT_HEADS * AT_HD * sizeof(float);
    float *q = malloc(sizeof(float) * 1024 * AT_HEADS * AT_HD),
          *kv = malloc(sizeof(float) * 1024 * AT_HEADS * AT_HD),
          *out = malloc(sizeof(float) * 1024 * AT_HEADS * AT_HD);
    for (size_t i = 0; i < (size_t)1024 * AT_HEADS * AT_HD; i++)
        q[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f,
        kv[i] = (float)((i * 104729) % 997) / 997.0f - 0.5f;
    ss_kvpool *pool[2];
    ss_kv_layer *layers[2][AT_LAYERS];
    for (int d = 0; d < 2; d++) {
        ss_status *st = ss_kvpool_create(bytes, 16, AT_LAYERS, d == 1, &pool[d]);
        for (int l = 0; !st && l < AT_LAYERS; l++)
            st = ss_kvpool_layer(pool[d], l, AT_HEADS, AT_HD, &layers[d][l]);
        if (st) fprintf(stderr, "%s\n", st->msg), exit(1);
    }
    int parts = threads > 1 ? ss_gemm_pool_reserve(threads) : 1;
    char cpu[256];
    cpu_model_name(cpu, sizeof cpu);
    printf("CPU: %s; attention ISA %s\n", cpu, ss_isa_name(ss_isa_active));
    printf("PagedAttention, one decode step of %d sequences x %d layers (%d heads of %d), %d "
           "part(s); median us per step (%s), KV bytes the step reads\n",
           AT_SEQS, AT_LAYERS, AT_HEADS, AT_HD, parts,
           bench_clock == CLOCK_MONOTONIC ? "wall time" : "process CPU time");
    printf(
        "| cached tokens | float32 blocks | bf16 blocks | bf16 vs float32 | MB read f32 / bf16 |\n"
        "|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        double t[2][64];
        for (int r = 0; r < rounds && r < 64; r++)
            for (int k = 0; k < 2; k++) {
                int d = r % 2 ? 1 - k : k;
                t[d][r] = attention_step(pool[d], layers[d], lens[i], parts, q, kv, out);
            }
        int n = rounds < 64 ? rounds : 64;
        qsort(t[0], (size_t)n, sizeof(double), cmp_double);
        qsort(t[1], (size_t)n, sizeof(double), cmp_double);
        double mb =
            (double)AT_SEQS * (double)(lens[i] + 1) * AT_LAYERS * 2 * AT_HEADS * AT_HD * 4 / 1e6;
        printf("| %lld | %.0f | %.0f | %.2fx | %.0f / %.0f |\n", (long long)lens[i], t[0][n / 2],
               t[1][n / 2], t[0][n / 2] / t[1][n / 2], mb, mb / 2);
        fflush(stdout);
    }
    for (int d = 0; d < 2; d++)
        ss_kvpool_free(pool[d]);
    free(q), free(kv), free(out);
}

/* ------------------------------------------------------------------ --vmath */

typedef struct {
    const char *name, *op;
    int64_t rows, n;
} vmath_case;

/* The libm baseline of a case: a plain loop per row, as a straightforward kernel would be. */
static void vmath_libm(const vmath_case *c, const float *x, float *y)
{
    bool softmax = !strcmp(c->op, "Softmax"), ln = !strcmp(c->op, "LayerNormalization"),
         sigmoid = !strcmp(c->op, "Sigmoid"); /* else Tanh */
    for (int64_t r = 0; r < c->rows; r++) {
        const float *a = x + r * c->n;
        float *b = y + r * c->n;
        if (softmax) {
            float mx = a[0];
            for (int64_t i = 1; i < c->n; i++)
                mx = a[i] > mx ? a[i] : mx;
            double sum = 0;
            for (int64_t i = 0; i < c->n; i++)
                sum += b[i] = expf(a[i] - mx);
            float inv = (float)(1.0 / sum);
            for (int64_t i = 0; i < c->n; i++)
                b[i] *= inv;
        } else if (ln) { /* scale 1, bias 0 */
            double sum = 0, sq = 0;
            for (int64_t i = 0; i < c->n; i++)
                sum += a[i];
            double m = sum / (double)c->n;
            for (int64_t i = 0; i < c->n; i++)
                sq += (a[i] - m) * (a[i] - m);
            float is = (float)(1.0 / sqrt(sq / (double)c->n + 1e-5));
            for (int64_t i = 0; i < c->n; i++)
                b[i] = (a[i] - (float)m) * is;
        } else if (sigmoid) {
            for (int64_t i = 0; i < c->n; i++)
                b[i] = 1.0f / (1.0f + expf(-a[i]));
        } else {
            for (int64_t i = 0; i < c->n; i++)
                b[i] = tanhf(a[i]);
        }
    }
}

static void vmath_table(int rounds)
{
    static const vmath_case cases[] = {
        {"Softmax 1536x128 (BERT-base, a layer's attention)", "Softmax", 1536, 128},
        {"Softmax 48x1024", "Softmax", 48, 1024},
        {"Softmax 2x50257 (GPT-2 vocabulary)", "Softmax", 2, 50257},
        {"Sigmoid 128x3072", "Sigmoid", 128, 3072},
        {"Tanh 128x3072", "Tanh", 128, 3072},
        {"LayerNormalization 128x768 (BERT-base)", "LayerNormalization", 128, 768},
    };
    ss_isa best = ss_isa_detect();
    char cpu[256];
    cpu_model_name(cpu, sizeof cpu);
    printf("CPU: %s; widest kernel ISA %s; 1 thread; median us per call (%s), rounds "
           "interleaved; the op's float32 kernels at each ISA level vs the same loops on libm\n",
           cpu, ss_isa_name(best),
           bench_clock == CLOCK_MONOTONIC ? "wall time" : "process CPU time");
    printf("| case | libm | base | avx2 | avx512 | libm / widest |\n|---|---|---|---|---|---|\n");
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const vmath_case *c = &cases[ci];
        int64_t dims[2] = {c->rows, c->n};
        ss_tensor x = rand_tensor(2, dims), y = {0}, scale = rand_tensor(1, &c->n),
                  bias = rand_tensor(1, &c->n), *ins[3] = {&x, &scale, &bias}, *outs[1] = {&y};
        for (int64_t i = 0; i < ss_tensor_numel(&x); i++)
            ((float *)x.data)[i] *= 8.0f; /* -8 .. 8: every branch of the exp and tanh */
        for (int64_t i = 0; i < c->n; i++)
            ((float *)scale.data)[i] = 1.0f, ((float *)bias.data)[i] = 0.0f;
        bool ln = !strcmp(c->op, "LayerNormalization");
        Onnx__NodeProto node;
        onnx__node_proto__init(&node);
        node.op_type = (char *)c->op;
        node.name = (char *)"bench";
        int opset = ln ? 17 : 13; /* LayerNormalization is an operator from opset 17 */
        const ss_op_def *d = ss_op_find("", c->op, opset);
        ss_kctx k = {.node = &node,
                     .node_name = "bench",
                     .opset = opset,
                     .n_in = ln ? 3 : 1,
                     .n_out = 1,
                     .in = ins,
                     .out = outs,
                     .threads = 1};
        ss_status *st = d->infer(&k);
        if (!st) st = ss_tensor_alloc(&y, y.dtype, y.ndim, y.dims);
        if (!st && k.scratch_bytes) k.scratch = aligned_alloc(64, (k.scratch_bytes + 63) / 64 * 64);
        if (st) {
            fprintf(stderr, "%s: %s\n", c->name, st->msg);
            exit(1);
        }
        int reps = (int)(2000000 / ss_tensor_numel(&x)) + 1;
        double *t[4];
        for (int v = 0; v < 4; v++)
            t[v] = calloc((size_t)rounds, sizeof(double));
        for (int r = 0; r < rounds; r++)
            for (int v = 0; v < 4; v++) { /* 0: libm, 1 + level: the op at that ISA level */
                if (v > 0 && v - 1 > (int)best) continue;
                if (v > 0) ss_isa_force((ss_isa)(v - 1));
                double t0 = now_us();
                for (int i = 0; i < reps; i++)
                    if (v == 0)
                        vmath_libm(c, (const float *)x.data, (float *)y.data);
                    else
                        d->run(&k);
                t[v][r] = (now_us() - t0) / reps;
            }
        ss_isa_force(best);
        double med[4] = {0};
        for (int v = 0; v < 4; v++) {
            qsort(t[v], (size_t)rounds, sizeof(double), cmp_double);
            med[v] = t[v][rounds / 2];
        }
        printf("| %s | %.1f |", c->name, med[0]);
        for (int v = 1; v < 4; v++)
            printf(v - 1 > (int)best ? " - |" : " %.1f |", med[v]);
        printf(" %.2fx |\n", med[0] / med[1 + (int)best]);
        fflush(stdout);
        for (int v = 0; v < 4; v++)
            free(t[v]);
        if (d->release) d->release(k.state);
        free(k.state);
        free(k.scratch);
        ss_tensor_free(&x);
        ss_tensor_free(&y);
        ss_tensor_free(&scale);
        ss_tensor_free(&bias);
    }
}

int main(int argc, char **argv)
{
    int threads = 1, rounds = 5;
    bool conv_only = false, bf16 = false, mlp = false, decode = false, attention = false,
         step = false, int8 = false, vmath = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cpu-time"))
            bench_clock = CLOCK_PROCESS_CPUTIME_ID;
        else if (!strcmp(argv[i], "--conv-only"))
            conv_only = true;
        else if (!strcmp(argv[i], "--bf16"))
            bf16 = true;
        else if (!strcmp(argv[i], "--mlp"))
            mlp = true;
        else if (!strcmp(argv[i], "--decode"))
            decode = true;
        else if (!strcmp(argv[i], "--attention"))
            attention = true;
        else if (!strcmp(argv[i], "--step"))
            step = true;
        else if (!strcmp(argv[i], "--int8"))
            int8 = true;
        else if (!strcmp(argv[i], "--vmath"))
            vmath = true;
        else if (!strcmp(argv[i], "--mlp-rows") && i + 1 < argc) /* e.g. 16,17,32,64,65 */
            for (int n = 0; n < 8 && argv[i + 1][0]; n++) {
                char *end;
                mlp_ms[n] = strtoll(argv[i + 1], &end, 10);
                argv[i + 1] = *end ? end + 1 : end;
                if (n + 1 < 8) mlp_ms[n + 1] = 0;
            }
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
    }
    if (threads < 1) threads = 1;
    if (rounds < 1) rounds = 1;
    if (attention) {
        attention_table(threads, rounds);
        return 0;
    }
    if (int8) {
        int8_table(threads, rounds);
        return 0;
    }
    if (vmath) {
        vmath_table(rounds);
        return 0;
    }
    fma_peak peak1 = peak_row(1), peakT = threads > 1 ? peak_row(threads) : peak1;
    if (mlp) {
        printf("oneDNN ISA %s; auto: %s; median us per layer (%s); %% of the FMA peak at the same "
               "threads\n",
               ss_dnnl_isa_name(),
               ss_gemm_f32p_usable(32, 4096, 4096, false)
                   ? "own kernel on packed weights for 17-64 rows"
                   : "oneDNN",
               bench_clock == CLOCK_MONOTONIC ? "wall time" : "process CPU time");
        printf("| shape | threads | mode | us | GFLOP/s | of peak | GFLOP/s, best round |\n"
               "|---|---|---|---|---|---|---|\n");
        for (size_t i = 0; i < sizeof mlp_ms / sizeof mlp_ms[0] && mlp_ms[i] > 0; i++) {
            mlp_rows(mlp_ms[i], 1, rounds, &peak1);
            if (threads > 1) mlp_rows(mlp_ms[i], threads, rounds, &peakT);
        }
        return 0;
    }
    openblas_set_num_threads(threads);
    if (step) {
        step_table(threads, rounds);
        return 0;
    }
    if (decode) {
        decode_table(rounds);
        return 0;
    }
    if (bf16) {
        bf16_table(threads, rounds);
        return 0;
    }
    if (conv_only) {
        conv_table(threads, rounds);
        return 0;
    }
    printf("oneDNN ISA %s, %d thread(s); median us per call (%s)\n", ss_dnnl_isa_name(), threads,
           bench_clock == CLOCK_MONOTONIC ? "wall time" : "process CPU time");
    printf("| shape | own | blas | onednn | auto | auto took |\n|---|---|---|---|---|---|\n");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *s = &shapes[si];
        int64_t ad[2] = {s->M, s->K}, bd[2] = {s->tb ? s->N : s->K, s->tb ? s->K : s->N},
                cd[1] = {s->N};
        ss_tensor in[3] = {rand_tensor(2, ad), rand_tensor(2, bd), rand_tensor(1, cd)};
        node_run runs[N_MODES];
        unsigned long dnnl_before = 0;
        for (int m = 0; m < N_MODES; m++) {
            ss_kernels_force(modes[m]);
            node_make(&runs[m], s, in, threads, SS_WEIGHTS_F32);
        }
        ss_kernels_force(SS_KERNELS_AUTO);
        double macs = (double)s->M * (double)s->K * (double)s->N;
        int reps = macs < 1e6 ? 2000 : macs < 1e8 ? 100 : 10;
        double *t[N_MODES];
        for (int m = 0; m < N_MODES; m++)
            t[m] = calloc((size_t)rounds, sizeof(double));
        for (int r = 0; r < rounds; r++)
            for (int mi = 0; mi < N_MODES; mi++) {
                int m = r % 2 ? N_MODES - 1 - mi : mi;
                runs[m].def->run(&runs[m].k); /* warm */
                if (m == N_MODES - 1) dnnl_before = ss_dnnl_calls();
                double t0 = now_us();
                for (int i = 0; i < reps; i++)
                    runs[m].def->run(&runs[m].k);
                t[m][r] = (now_us() - t0) / reps;
                if (m == N_MODES - 1) dnnl_before = ss_dnnl_calls() - dnnl_before;
            }
        printf("| %s |", s->name);
        for (int m = 0; m < N_MODES; m++) {
            qsort(t[m], (size_t)rounds, sizeof(double), cmp_double);
            printf(" %.1f |", t[m][rounds / 2]);
            free(t[m]);
        }
        printf(" %s |\n", dnnl_before ? "onednn" : "own/blas");
        fflush(stdout);
        for (int m = 0; m < N_MODES; m++)
            node_free(&runs[m]);
        for (int i = 0; i < 3; i++)
            ss_tensor_free(&in[i]);
    }
    conv_table(threads, rounds);
    return 0;
}
