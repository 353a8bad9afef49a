/*
 * Element-wise fusion (ops/fusion.h, session.c: fuse_plan): every model of
 * tests/onnx/fusion_cases.py gives the same outputs fused and unfused (within float rounding), at
 * 1 and 2 threads, fuses exactly the nodes it should (none where the value between has another
 * reader, is a graph output, or grows by broadcasting), and a fused run allocates nothing; under
 * BLAS kernels too (the quantized products' float64 path, which fuses one node fewer). With
 * every Conv on oneDNN, the Convs the case names run their chain's leading steps as post-ops, with
 * the same outputs.
 */
#include "check.h"
#include "ops/fusion.h"
#include "ops/gemm_q8.h"
#include "ops/onednn.h"
#include "shardserve/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc_count.h"

#define MAX_IO 4

typedef struct {
    int n;
    ss_tensor t[MAX_IO];
} tensors;

static void tensors_free(tensors *ts)
{
    for (int i = 0; i < ts->n; i++)
        ss_tensor_free(&ts->t[i]);
    ts->n = 0;
}

/* Deterministic inputs of the session's declared (static) shapes, in [-4, 4). */
static void make_inputs(const ss_session *s, unsigned seed, tensors *in)
{
    in->n = ss_session_num_inputs(s);
    for (int i = 0; i < in->n; i++) {
        const ss_onnx_value_info *vi = ss_session_input(s, i);
        ss_status *st = ss_tensor_alloc(&in->t[i], SS_DT_FLOAT32, vi->ndim, vi->dims);
        CHECK_OK(st);
        float *x = in->t[i].data;
        for (int64_t j = 0; j < ss_tensor_numel(&in->t[i]); j++) {
            seed = seed * 1664525u + 1013904223u;
            x[j] = (float)(seed >> 8) / (float)(1u << 24) * 8.0f - 4.0f;
        }
    }
}

/* Runs the model once (fusion on or off, `threads`) and copies the outputs; returns the session's
 * fused node count, or -1 on failure. Fused sessions also run a second time counting allocations.
 */
static int run_model(const char *path, bool fuse, int threads, unsigned seed, tensors *out)
{
    ss_fusion_enable(fuse);
    ss_session_options opt = {.blas_threads = threads};
    ss_session *s = NULL;
    ss_status *st = ss_session_create(path, &opt, &s);
    CHECK_OK(st);
    if (!s) return -1;
    tensors in = {0};
    make_inputs(s, seed, &in);
    const ss_tensor *res = NULL;
    CHECK_OK(ss_session_run(s, in.t, in.n, &res));
    int fused = res ? ss_session_fused_nodes(s) : -1;
    int before = alloc_count;
    if (res) CHECK_OK(ss_session_run(s, in.t, in.n, &res));
    CHECK_MSG(alloc_count == before, "%s: a planned run allocated %d times", path,
              alloc_count - before);
    out->n = res ? ss_session_num_outputs(s) : 0;
    for (int i = 0; i < out->n; i++)
        CHECK_OK(ss_tensor_copy(&out->t[i], &res[i]));
    tensors_free(&in);
    ss_session_free(s);
    ss_fusion_enable(true);
    return fused;
}

static void check_close(const char *name, const tensors *a, const tensors *b)
{
    CHECK_MSG(a->n == b->n && a->n > 0, "%s: %d vs %d outputs", name, a->n, b->n);
    for (int i = 0; i < a->n && i < b->n; i++) {
        const ss_tensor *x = &a->t[i], *y = &b->t[i];
        CHECK_MSG(ss_tensor_numel(x) == ss_tensor_numel(y), "%s: output %d size", name, i);
        const float *p = x->data, *q = y->data;
        int64_t bad = -1;
        for (int64_t j = 0; j < ss_tensor_numel(x) && bad < 0; j++)
            if (!(fabsf(p[j] - q[j]) <= 1e-5f + 1e-5f * fabsf(q[j]))) bad = j;
        CHECK_MSG(bad < 0, "%s: output %d differs at %lld: fused %g, unfused %g", name, i,
                  (long long)bad, bad >= 0 ? p[bad] : 0, bad >= 0 ? q[bad] : 0);
    }
}

/* One case at 1 and 2 threads under the current kernel mode; post-op Convs per run, or -1. */
static int case_matches_unfused(const char *name, const char *path, int want, unsigned seed,
                                int *mm_po)
{
    int po = -1;
    *mm_po = -1;
    for (int threads = 1; threads <= 2; threads++) {
        tensors plain = {0}, fused = {0};
        int none = run_model(path, false, threads, seed, &plain);
        unsigned long po0 = ss_dnnl_conv_postop_calls(), mm0 = ss_dnnl_matmul_postop_calls();
        int got = run_model(path, true, threads, seed, &fused);
        int runs = (int)(ss_dnnl_conv_postop_calls() - po0) / 2; /* run_model runs twice */
        int mm_runs = (int)(ss_dnnl_matmul_postop_calls() - mm0) / 2;
        CHECK_MSG(po < 0 || po == runs, "%s: %d post-op Convs at 1 thread, %d at 2", name, po,
                  runs);
        CHECK_MSG(*mm_po < 0 || *mm_po == mm_runs, "%s: %d post-op MatMuls at 1 thread, %d at 2",
                  name, *mm_po, mm_runs);
        po = runs;
        *mm_po = mm_runs;
        CHECK_MSG(none == 0, "%s: fused %d nodes with fusion off", name, none);
        CHECK_MSG(got == want, "%s (%d threads): fused %d nodes, expected %d", name, threads, got,
                  want);
        check_close(name, &fused, &plain);
        tensors_free(&plain);
        tensors_free(&fused);
    }
    return po;
}

static void every_case_matches_unfused(void)
{
    char list[4096], line[256];
    snprintf(list, sizeof list, "%s/cases.txt", test_argv[1]);
    FILE *f = fopen(list, "r");
    CHECK_MSG(f != NULL, "no %s", list);
    int cases = 0;
    while (f && fgets(line, sizeof line, f)) {
        char name[128], path[4096];
        int want = -1, want_po = -1, want_mm = -1, want_no_vnni = -1, mm = -1;
        if (sscanf(line, "%127s %d %d %d %d", name, &want, &want_po, &want_mm, &want_no_vnni) != 5)
            continue;
        snprintf(path, sizeof path, "%s/%s.onnx", test_argv[1], name);
        /* with BLAS kernels the quantized products take their float64 path, as without VNNI */
        ss_kernels_force(SS_KERNELS_BLAS);
        case_matches_unfused(name, path, want_no_vnni, 7u + (unsigned)cases, &mm);
        ss_kernels_force(SS_KERNELS_AUTO);
        if (!ss_gemm_q8_supported()) want = want_no_vnni;
        case_matches_unfused(name, path, want, 7u + (unsigned)cases, &mm);
        ss_kernels_force(SS_KERNELS_ONEDNN);
        int po = case_matches_unfused(name, path, want, 7u + (unsigned)cases, &mm);
        ss_kernels_force(SS_KERNELS_AUTO);
        CHECK_MSG(po == want_po, "%s: %d Convs ran post-ops on oneDNN, expected %d", name, po,
                  want_po);
        CHECK_MSG(mm == want_mm, "%s: %d MatMuls ran post-ops on oneDNN, expected %d", name, mm,
                  want_mm);
        cases++;
    }
    if (f) fclose(f);
    CHECK_MSG(cases >= 32, "only %d cases in %s", cases, list);
}

TEST_MAIN(TEST(every_case_matches_unfused))
