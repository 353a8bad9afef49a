/*
 * bench_kernels: MatMul / Gemm per shape class through the op table (as the planner calls them)
 * under each kernel mode (SHARDSERVE_KERNELS own, blas, onednn, and auto), interleaved in one
 * process so a noisy neighbour hits them alike. This is the measurement behind auto's choice in
 * src/runtime/ops/onednn.c (ss_kernels_use_dnnl); the weights are constant, as initializers are.
 *
 *   bench_kernels [--cpu-time] [--conv-only | --bf16 | --mlp [--mlp-rows 32,64]] [--threads T]
 *                 [--rounds R]
 *
 * Prints per shape: the median microseconds per call of each mode and which library auto took;
 * then Conv shapes (NCHW in and out as ONNX has them, constant W and B): own im2col + OpenBLAS
 * against oneDNN including its per-call layout reorders. --bf16 instead: GPT-2-124M's decode
 * MatMuls under --weights bf16 at M = 1 .. 64 rows, the own bf16 kernel (gemm_bf16.c) against
 * oneDNN's bf16 matmul, both on weights prepacked at plan time (the measurement behind
 * ss_gemm_bf16_max_m).
 *
 * Every table starts with the CPU's measured f32 FMA peak (fma_peak.h) at 1 and T threads. --mlp:
 * only issue 10's MLP GEMMs (4 layers of 32x4096x4096, each its own constant weights) under each
 * mode at 1 and T threads, as GFLOP/s and % of that peak (CPU-time rate: the cores' speed when
 * they run); --mlp-rows sets other row counts.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fma_peak.h"
#include "ops/gemm_bf16.h"
#include "ops/gemm_f32p.h"
#include "ops/isa.h"
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

static void node_make(node_run *r, const shape *s, ss_tensor *in, int threads, bool bf16)
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
                     .bf16_weights = bf16};
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
 * (max_m = 0): the median microseconds per call over `rounds`, both interleaved. */
static void bf16_row(int64_t M, int64_t K, int64_t N, int threads, int rounds)
{
    shape s = {"bf16", "MatMul", M, K, N, false, false};
    int64_t ad[2] = {M, K}, bd[2] = {K, N};
    ss_tensor in[2] = {rand_tensor(2, ad), rand_tensor(2, bd)};
    node_run runs[2];
    for (int m = 0; m < 2; m++) {
        ss_gemm_bf16_force_max_m(m == 0 ? M : 0);
        node_make(&runs[m], &s, in, threads, true);
    }
    ss_gemm_bf16_force_max_m(-1);
    int reps = (double)M * K * N < 1e8 ? 20 : 5;
    double t[2][64];
    unsigned long dnnl_bf16 = ss_dnnl_bf16_calls();
    for (int r = 0; r < rounds; r++)
        for (int mi = 0; mi < 2; mi++) {
            int m = r % 2 ? 1 - mi : mi;
            runs[m].def->run(&runs[m].k); /* warm */
            double t0 = now_us();
            for (int i = 0; i < reps; i++)
                runs[m].def->run(&runs[m].k);
            t[m][r] = (now_us() - t0) / reps;
        }
    bool dnnl_ok = ss_dnnl_bf16_calls() > dnnl_bf16;
    double med[2];
    for (int m = 0; m < 2; m++) {
        qsort(t[m], (size_t)rounds, sizeof(double), cmp_double);
        med[m] = t[m][rounds / 2];
    }
    double gflop = 2e-3 * (double)M * (double)K * (double)N;
    printf("| %lldx%lld | %lld | %.1f (%.0f) | %.1f (%.0f)%s | %s |\n", (long long)K, (long long)N,
           (long long)M, med[0], gflop / med[0], med[1], gflop / med[1], dnnl_ok ? "" : " f32!",
           med[0] <= med[1] ? "own" : "onednn");
    fflush(stdout);
    for (int m = 0; m < 2; m++)
        node_free(&runs[m]);
    for (int i = 0; i < 2; i++)
        ss_tensor_free(&in[i]);
}

static void bf16_table(int threads, int rounds)
{
    static const int64_t kn[][2] = {
        {768, 2304}, {768, 768}, {768, 3072}, {3072, 768}, {768, 50257}};
    static const int64_t ms[] = {1, 2, 4, 8, 16, 32, 64};
    if (rounds > 64) rounds = 64;
    printf("bf16 weights, own kernel %s vs oneDNN ISA %s, %d thread(s); median us per call "
           "(GFLOP/s) (%s)\n",
           ss_gemm_bf16_name(ss_gemm_bf16_pick()), ss_dnnl_isa_name(), threads,
           bench_clock == CLOCK_MONOTONIC ? "wall time" : "process CPU time");
    printf("| K x N | M | own | onednn | faster |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof kn / sizeof kn[0]; i++)
        for (size_t j = 0; j < sizeof ms / sizeof ms[0]; j++)
            bf16_row(ms[j], kn[i][0], kn[i][1], threads, rounds);
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
            node_make(&runs[m][l], &s, in[l], threads, false);
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

int main(int argc, char **argv)
{
    int threads = 1, rounds = 5;
    bool conv_only = false, bf16 = false, mlp = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cpu-time"))
            bench_clock = CLOCK_PROCESS_CPUTIME_ID;
        else if (!strcmp(argv[i], "--conv-only"))
            conv_only = true;
        else if (!strcmp(argv[i], "--bf16"))
            bf16 = true;
        else if (!strcmp(argv[i], "--mlp"))
            mlp = true;
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
    fma_peak peak1 = peak_row(1), peakT = threads > 1 ? peak_row(threads) : peak1;
    if (mlp) {
        printf("oneDNN ISA %s; auto: %s; median us per layer (%s); %% of the FMA peak at the same "
               "threads\n",
               ss_dnnl_isa_name(),
               ss_gemm_f32p_usable(32, 4096, 4096) ? "own kernel on packed weights for 17-64 rows"
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
            node_make(&runs[m], s, in, threads, false);
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
