/*
 * The layout pass (session.c: layout_plan): in the models of tests/onnx/layout_cases.py, Conv
 * networks keep their activations in oneDNN's blocked layout between Convs and MaxPools, so a run
 * reorders only at the chains' ends, and every output equals, bit for bit, the plain path's
 * (the pass off) and numpy's float64 reference within rounding, at 1 and 2 threads, under the
 * auto and onednn kernel modes. A planned run allocates nothing.
 */
#include "check.h"
#include "ops/isa.h"
#include "ops/onednn.h"
#include "shardserve/core.h"
#include "shardserve/runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc_count.h"

#define MAX_OUT 4

typedef struct {
    int n;
    ss_tensor t[MAX_OUT];
} tensors;

static void tensors_free(tensors *ts)
{
    for (int i = 0; i < ts->n; i++)
        ss_tensor_free(&ts->t[i]);
    ts->n = 0;
}

/* Runs the model twice (layout pass on or off) and copies the outputs; returns the second run's
 * reorders, or -1 on failure, and in *own how many of them onednn.c ran itself. */
static int run_model(const char *dir, const char *name, bool layout, int threads, tensors *out,
                     int *in_place, int *own)
{
    char path[4096];
    ss_layout_enable(layout);
    ss_session_options opt = {.blas_threads = threads};
    ss_session *s = NULL;
    snprintf(path, sizeof path, "%s/%s.onnx", dir, name);
    CHECK_OK(ss_session_create(path, &opt, &s));
    ss_tensor in = {0};
    snprintf(path, sizeof path, "%s/%s.in.npy", dir, name);
    CHECK_OK(ss_npy_read(path, &in));
    const ss_tensor *res = NULL;
    int reorders = -1;
    if (s) CHECK_OK(ss_session_run(s, &in, 1, &res));
    if (res) {
        int before = alloc_count;
        unsigned long r0 = ss_dnnl_reorder_calls(), own0 = ss_dnnl_own_relayout_calls();
        CHECK_OK(ss_session_run(s, &in, 1, &res));
        reorders = (int)(ss_dnnl_reorder_calls() - r0);
        *own = (int)(ss_dnnl_own_relayout_calls() - own0);
        CHECK_MSG(alloc_count == before, "%s: a planned run allocated %d times", name,
                  alloc_count - before);
    }
    ss_session_stats stats = {0};
    if (s) ss_session_get_stats(s, &stats);
    *in_place = stats.in_place_outputs;
    out->n = res ? ss_session_num_outputs(s) : 0;
    for (int i = 0; i < out->n && i < MAX_OUT; i++)
        CHECK_OK(ss_tensor_copy(&out->t[i], &res[i]));
    ss_tensor_free(&in);
    ss_session_free(s);
    ss_layout_enable(true);
    return reorders;
}

static void check_same(const char *name, const tensors *a, const tensors *b)
{
    CHECK_MSG(a->n == b->n && a->n > 0, "%s: %d vs %d outputs", name, a->n, b->n);
    for (int i = 0; i < a->n && i < b->n; i++)
        CHECK_MSG(a->t[i].nbytes == b->t[i].nbytes &&
                      memcmp(a->t[i].data, b->t[i].data, a->t[i].nbytes) == 0,
                  "%s: output %d differs with the layout pass on and off", name, i);
}

static void check_reference(const char *dir, const char *name, const tensors *got)
{
    for (int i = 0; i < got->n; i++) {
        char path[4096];
        ss_tensor want = {0};
        snprintf(path, sizeof path, "%s/%s.out%d.npy", dir, name, i);
        CHECK_OK(ss_npy_read(path, &want));
        int64_t n = ss_tensor_numel(&want), bad = -1;
        CHECK_MSG(n == ss_tensor_numel(&got->t[i]), "%s: output %d has %lld values, numpy %lld",
                  name, i, (long long)ss_tensor_numel(&got->t[i]), (long long)n);
        const float *p = got->t[i].data, *q = want.data;
        for (int64_t j = 0; j < n && n == ss_tensor_numel(&got->t[i]) && bad < 0; j++)
            if (!(fabsf(p[j] - q[j]) <= 1e-4f + 1e-4f * fabsf(q[j]))) bad = j;
        CHECK_MSG(bad < 0, "%s: output %d at %lld: %g, numpy %g", name, i, (long long)bad,
                  bad >= 0 ? p[bad] : 0, bad >= 0 ? q[bad] : 0);
        ss_tensor_free(&want);
    }
}

/* Whether an environment switch (onednn.c's same-binary comparisons) is "0". */
static bool env_off(const char *name)
{
    const char *e = getenv(name);
    return e && !strcmp(e, "0");
}

/* One case at 1 and 2 threads under the current kernel mode. min_own: relayouts onednn.c must run
 * itself per run with the pass, on AVX-512 (where oneDNN has Winograd Convs), unless the
 * environment turns them or the Winograd Convs off. */
static void check_case(const char *dir, const char *name, int max_on, int min_saved,
                       int min_in_place, int min_own)
{
    for (int threads = 1; threads <= 2; threads++) {
        tensors plain = {0}, kept = {0};
        int in_place_off = 0, in_place_on = 0, own_off = 0, own_on = 0;
        int off = run_model(dir, name, false, threads, &plain, &in_place_off, &own_off);
        int on = run_model(dir, name, true, threads, &kept, &in_place_on, &own_on);
        /* outputs written in their sum operand's slot (session.c: arena_in_place) */
        CHECK_MSG(in_place_on >= min_in_place, "%s: %d outputs written in place, %d expected", name,
                  in_place_on, min_in_place);
        printf("%s (%s, %d threads): %d reorders per run with the layout pass (%d relaid by "
               "onednn.c), %d without\n",
               name, ss_kernels_name(ss_kernels_mode()), threads, on, own_on, off);
        if (ss_isa_detect() >= SS_ISA_AVX512 && !env_off("SHARDSERVE_DNNL_RELAYOUT") &&
            !env_off("SHARDSERVE_DNNL_WINOGRAD"))
            CHECK_MSG(own_on >= min_own, "%s: onednn.c relaid %d tensors a run, %d expected", name,
                      own_on, min_own);
        CHECK_MSG(on >= 0 && on <= max_on, "%s: %d reorders per run, at most %d expected", name, on,
                  max_on);
        CHECK_MSG(off - on >= min_saved, "%s: the pass removed %d reorders of %d, %d expected",
                  name, off - on, off, min_saved);
        check_same(name, &kept, &plain);
        check_reference(dir, name, &kept);
        tensors_free(&plain);
        tensors_free(&kept);
    }
}

static void every_case(void)
{
    const char *dir = test_argv[1];
    char list[4096], line[256];
    snprintf(list, sizeof list, "%s/cases.txt", dir);
    FILE *f = fopen(list, "r");
    CHECK_MSG(f != NULL, "no %s", list);
    int cases = 0;
    while (f && fgets(line, sizeof line, f)) {
        char name[128];
        int outs, max_on, min_saved, min_in_place = 0, min_own = 0;
        if (sscanf(line, "%127s %d %d %d %d %d", name, &outs, &max_on, &min_saved, &min_in_place,
                   &min_own) < 4)
            continue;
        check_case(dir, name, max_on, min_saved, min_in_place, min_own);
        ss_kernels_force(SS_KERNELS_ONEDNN);
        check_case(dir, name, max_on, min_saved, min_in_place, min_own);
        ss_kernels_force(SS_KERNELS_AUTO);
        cases++;
    }
    if (f) fclose(f);
    CHECK_MSG(cases >= 2, "only %d cases in %s", cases, list);
}

TEST_MAIN(TEST(every_case))
