/*
 * The planner's promises: outputs are right, buffers are reused by lifetime, a run allocates
 * nothing once planned, a new dynamic dim re-plans (and only then), and load errors name the op,
 * node and opset.
 */
#include "check.h"
#include "shardserve/runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc_count.h"
#include "gemm_f32p.h"

static char path_buf[4096];
static const char *fixture(const char *rel)
{
    snprintf(path_buf, sizeof path_buf, "%s/%s", test_argv[1], rel);
    return path_buf;
}

static void ones(ss_tensor *t, int64_t rows, int64_t cols)
{
    int64_t dims[2] = {rows, cols};
    ss_status *st = ss_tensor_alloc(t, SS_DT_FLOAT32, 2, dims);
    if (st) {
        ss_status_free(st);
        return;
    }
    for (int64_t i = 0; i < rows * cols; i++)
        ((float *)t->data)[i] = 1.0f;
}

static bool all_equal(const ss_tensor *t, float v)
{
    for (int64_t i = 0; i < ss_tensor_numel(t); i++)
        if (((const float *)t->data)[i] != v) return false;
    return true;
}

static void seed_model_gives_minus_48(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("good.onnx"), NULL, &s));
    if (!s) return;
    ss_tensor x;
    ones(&x, 128, 96);
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    if (out) {
        CHECK(out[0].dtype == SS_DT_FLOAT32 && out[0].ndim == 2 && out[0].dims[0] == 128 &&
              out[0].dims[1] == 16);
        CHECK(all_equal(&out[0], -48.0f));
    }
    ss_tensor_free(&x);
    ss_session_free(s);
}

/* ss_session_run_into: an elementwise output (the seed's Neg) lands in the caller's buffer; a
 * buffer too small is left alone, and plain runs afterwards use the session's own buffer again. */
static void run_into_writes_the_output_in_place(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("good.onnx"), NULL, &s));
    if (!s) return;
    ss_tensor x;
    ones(&x, 128, 96);
    size_t bytes = 128 * 16 * sizeof(float);
    float *dest = calloc(128 * 16, sizeof(float));
    void *d[1] = {dest};
    size_t cap[1] = {bytes}, small[1] = {bytes - 4};
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run_into(s, &x, 1, d, cap, &out));
    if (out) CHECK(out[0].data == (void *)dest && all_equal(&out[0], -48.0f));
    memset(dest, 0, bytes);
    CHECK_OK(ss_session_run_into(s, &x, 1, d, small, &out));
    if (out) CHECK(out[0].data != (void *)dest && all_equal(&out[0], -48.0f));
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    if (out) CHECK(out[0].data != (void *)dest && all_equal(&out[0], -48.0f));
    CHECK_MSG(dest[0] == 0.0f && dest[128 * 16 - 1] == 0.0f,
              "a run wrote into the caller's buffer");
    free(dest);
    ss_tensor_free(&x);
    ss_session_free(s);
}

static void run_allocates_nothing(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("ext/good_ext.onnx"), NULL, &s));
    if (!s) return;
    ss_tensor x;
    ones(&x, 128, 96);
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    long before = alloc_count;
    for (int i = 0; i < 10; i++)
        CHECK_OK(ss_session_run(s, &x, 1, &out));
    CHECK_MSG(alloc_count == before, "%ld allocations in 10 planned runs", alloc_count - before);
    if (out) CHECK(all_equal(&out[0], -48.0f));
    ss_tensor_free(&x);
    ss_session_free(s);
}

/* SHARDSERVE_WEIGHTS=resident: packing the weights for a kernel leaves the resident source
 * intact (it is the only copy; a mapped file's pages may be dropped, anonymous ones would read
 * back as zeros), so a later plan can pack them again. */
static void resident_weights_survive_packing(void)
{
    setenv("SHARDSERVE_WEIGHTS", "resident", 1);
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("ext/good_ext.onnx"), NULL, &s));
    unsetenv("SHARDSERVE_WEIGHTS");
    if (!s) return;
    ss_tensor x;
    ones(&x, 128, 96);
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    if (out) CHECK(all_equal(&out[0], -48.0f));
    const ss_onnx_model *m = ss_session_model(s);
    const ss_tensor *w = ss_onnx_find_init(m, "W");
    CHECK(m->n_maps == 1 && m->maps[0].resident && w && w->nbytes == 96 * 16 * 4);
    int zeros = 0;
    for (int i = 0; w && i < 96 * 16; i++)
        zeros += ((const float *)w->data)[i] != 0.5f;
    CHECK_MSG(zeros == 0, "%d of the resident weights changed after the plan packed them", zeros);
    ss_tensor_free(&x);
    ss_session_free(s);
}

/* A Gemm with transB (a torch Linear on 2-D input) packs its weight for the own kernel where the
 * kernel applies, unless another node reads the same weight (a tied LM head and its embedding's
 * Gather): the packed copy could not replace that one, only sit beside it. Both give the same
 * numbers. */
static void gemm_transb_packs_only_a_weight_it_alone_reads(void)
{
    float want[2][128];
    for (int tied = 0; tied < 2; tied++) {
        ss_session *s = NULL;
        CHECK_OK(ss_session_create(fixture(tied ? "gemm_transb_tied.onnx" : "gemm_transb.onnx"),
                                   NULL, &s));
        if (!s) return;
        ss_tensor in[2] = {0};
        int64_t xd[2] = {2, 96}, idd[1] = {2};
        CHECK_OK(ss_tensor_alloc(&in[0], SS_DT_FLOAT32, 2, xd));
        CHECK_OK(ss_tensor_alloc(&in[1], SS_DT_INT64, 1, idd));
        for (int i = 0; i < 2 * 96; i++)
            ((float *)in[0].data)[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
        ((int64_t *)in[1].data)[0] = 5, ((int64_t *)in[1].data)[1] = 127;
        unsigned long before = ss_gemm_f32p_calls();
        const ss_tensor *out = NULL;
        CHECK_OK(ss_session_run(s, in, tied ? 2 : 1, &out));
        unsigned long packed = ss_gemm_f32p_calls() - before;
        bool usable = ss_gemm_f32p_usable(2, 96, 128, true);
        CHECK_MSG(packed == (usable && !tied ? 1u : 0u),
                  "%s: the packed kernel ran %lu times (AVX-512 kernel usable: %d)",
                  tied ? "tied weight" : "sole reader", packed, usable);
        if (out && out[0].ndim == 2 && out[0].dims[1] == 128)
            for (int i = 0; i < 2 * 128; i++) {
                float y = ((const float *)out[0].data)[i];
                if (!tied)
                    want[i / 128][i % 128] = y;
                else
                    CHECK_MSG(fabsf(y - want[i / 128][i % 128]) <= 1e-4f * (1 + fabsf(y)),
                              "y[%d] is %g tied, %g untied", i, y, want[i / 128][i % 128]);
            }
        else
            CHECK_MSG(0, "no [2, 128] output");
        ss_tensor_free(&in[0]);
        ss_tensor_free(&in[1]);
        ss_session_free(s);
    }
}

static void arena_reuses_buffers(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("chain.onnx"), NULL, &s));
    if (!s) return;
    ss_tensor x;
    ones(&x, 256, 256);
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    if (out) CHECK(all_equal(&out[0], 1.0f)); /* 16 negations */
    ss_session_stats st;
    ss_session_get_stats(s, &st);
    size_t one = 256 * 256 * 4;
    CHECK_MSG(st.naive_bytes == 16 * one, "naive %zu", st.naive_bytes);
    CHECK_MSG(st.arena_bytes <= 2 * one, "arena %zu bytes for a chain of 16 [256,256] tensors",
              st.arena_bytes);
    CHECK(st.n_exec_nodes == 16);
    ss_tensor_free(&x);
    ss_session_free(s);
}

static void dynamic_dim_replans_only_on_change(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("dynamic.onnx"), NULL, &s));
    if (!s) return;
    ss_tensor a, b;
    ones(&a, 4, 96);
    ones(&b, 9, 96);
    const ss_tensor *out = NULL;
    ss_session_stats st;
    CHECK_OK(ss_session_run(s, &a, 1, &out));
    ss_session_get_stats(s, &st);
    int plans = st.n_plans;
    CHECK_OK(ss_session_run(s, &a, 1, &out));
    ss_session_get_stats(s, &st);
    CHECK(st.n_plans == plans);
    CHECK_OK(ss_session_run(s, &b, 1, &out));
    ss_session_get_stats(s, &st);
    CHECK(st.n_plans == plans + 1);
    if (out) CHECK(out[0].dims[0] == 9 && all_equal(&out[0], -48.0f));
    ss_tensor_free(&a);
    ss_tensor_free(&b);
    ss_session_free(s);
}

/* dynamic.onnx (x [N, 96] -> MatMul by 0.5 -> Neg) on n rows of ones: n rows, all -48. */
static void run_rows(ss_session *s, int64_t n)
{
    ss_tensor x;
    const ss_tensor *out = NULL;
    ones(&x, n, 96);
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    if (out)
        CHECK_MSG(out[0].dims[0] == n && all_equal(&out[0], -48.0f), "rows %lld", (long long)n);
    ss_tensor_free(&x);
}

/* A decode loop's way: the batch dim grows by one a run, so every run re-plans; the arena of the
 * last plan is reused while large enough and grows by half again when not, so 40 plans take a
 * handful of arenas; a far smaller shape afterwards gets an arena of its own size. Every output
 * stays right (the reused arena holds the last run's values, not zeros). */
static void replans_reuse_the_arena(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("dynamic.onnx"), NULL, &s));
    if (!s) return;
    ss_session_stats st;
    for (int64_t n = 1; n <= 40; n++)
        run_rows(s, n);
    ss_session_get_stats(s, &st);
    CHECK_MSG(st.n_plans >= 40, "%d plans for 40 shapes", st.n_plans);
    CHECK_MSG(st.n_arenas >= 2 && st.n_arenas <= 12, "%d arenas for 40 growing shapes",
              st.n_arenas);
    int arenas = st.n_arenas;
    run_rows(s, 2);
    ss_session_get_stats(s, &st);
    CHECK_MSG(st.n_arenas == arenas + 1, "a shape 20 times smaller kept the large arena");
    ss_session_free(s);
}

/* runtime internals (ops/onednn.h), linked in statically */
unsigned long ss_dnnl_packs(void);
unsigned long ss_dnnl_calls(void);

/* Under oneDNN, a re-plan for another batch size reuses the session's packed weights instead of
 * reordering them again, and a planned run allocates nothing in our code. */
static void replan_reuses_packed_weights(void)
{
    setenv("SHARDSERVE_KERNELS", "onednn", 1);
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("dynamic.onnx"), NULL, &s));
    ss_tensor a, b;
    ones(&a, 4, 96);
    ones(&b, 9, 96);
    const ss_tensor *out = NULL;
    unsigned long calls = ss_dnnl_calls();
    CHECK_OK(s ? ss_session_run(s, &a, 1, &out) : NULL);
    unsigned long packs = ss_dnnl_packs();
    CHECK_MSG(ss_dnnl_calls() > calls, "the MatMul did not run on oneDNN");
    CHECK_OK(s ? ss_session_run(s, &b, 1, &out) : NULL);
    if (out) CHECK(out[0].dims[0] == 9 && all_equal(&out[0], -48.0f));
    CHECK_OK(s ? ss_session_run(s, &a, 1, &out) : NULL);
    if (out) CHECK(out[0].dims[0] == 4 && all_equal(&out[0], -48.0f));
    CHECK_MSG(ss_dnnl_packs() == packs, "%lu repacks over 2 re-plans", ss_dnnl_packs() - packs);
    long before = alloc_count;
    for (int i = 0; i < 10; i++)
        CHECK_OK(s ? ss_session_run(s, &a, 1, &out) : NULL);
    CHECK_MSG(alloc_count == before, "%ld allocations in 10 planned oneDNN runs",
              alloc_count - before);
    ss_tensor_free(&a);
    ss_tensor_free(&b);
    ss_session_free(s);
    unsetenv("SHARDSERVE_KERNELS");
}

static void bad_inputs_are_named(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("good.onnx"), NULL, &s));
    if (!s) return;
    ss_tensor x;
    ones(&x, 3, 96);
    const ss_tensor *out;
    CHECK_ERR(ss_session_run(s, &x, 1, &out),
              "input 'x' has shape [3,96], the model expects [128,96]");
    CHECK_ERR(ss_session_run(s, &x, 2, &out), "takes 1 inputs, 2 given");
    ss_tensor_free(&x);
    int64_t dims[2] = {128, 96};
    CHECK_OK(ss_tensor_alloc(&x, SS_DT_INT32, 2, dims));
    CHECK_ERR(ss_session_run(s, &x, 1, &out),
              "input 'x' has type int32, the model expects float32");
    ss_tensor_free(&x);
    ss_session_free(s);
}

static void fill2(ss_tensor *t, int64_t rows, int64_t cols, float v)
{
    int64_t dims[2] = {rows, cols};
    ss_status *st = ss_tensor_alloc(t, SS_DT_FLOAT32, 2, dims);
    if (st) {
        ss_status_free(st);
        return;
    }
    for (int64_t i = 0; i < rows * cols; i++)
        ((float *)t->data)[i] = v;
}

/* If whose condition is a dim: decided at plan time, only the taken branch planned (the other
 * would not even plan for these shapes) and run, nothing allocated per run. */
static void if_on_shape_runs_taken_branch(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("if_shape.onnx"), NULL, &s));
    if (!s) return;
    ss_tensor x4, x3;
    fill2(&x4, 2, 4, 1.0f);
    fill2(&x3, 2, 3, 1.0f);
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run(s, &x4, 1, &out));
    if (out) CHECK(out[0].dims[1] == 4 && all_equal(&out[0], -1.0f));
    long before = alloc_count;
    for (int i = 0; i < 10; i++)
        CHECK_OK(ss_session_run(s, &x4, 1, &out));
    CHECK_MSG(alloc_count == before, "%ld allocations in 10 planned If runs", alloc_count - before);
    CHECK_OK(ss_session_run(s, &x3, 1, &out)); /* D = 3: the else branch, x + [1,2,3] */
    if (out) {
        const float *y = out[0].data;
        CHECK(out[0].dims[1] == 3 && y[0] == 2.0f && y[1] == 3.0f && y[5] == 4.0f);
    }
    ss_tensor_free(&x4);
    ss_tensor_free(&x3);
    ss_session_free(s);
}

/* If on a run-time bool: both branches planned once, the chosen one run, nested If reading
 * names from two scopes out; switching branches neither re-plans nor allocates. */
static void if_on_data_switches_without_replanning(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("if_data.onnx"), NULL, &s));
    if (!s) return;
    ss_tensor in[2];
    int64_t none[1] = {0};
    CHECK_OK(ss_tensor_alloc(&in[0], SS_DT_BOOL, 0, none));
    fill2(&in[1], 2, 3, 1.0f);
    const ss_tensor *out = NULL;
    ss_session_stats st;
    bool flags[4] = {true, false, true, false};
    long before = 0;
    int plans = 0;
    for (int r = 0; r < 4; r++) {
        *(unsigned char *)in[0].data = flags[r];
        CHECK_OK(ss_session_run(s, in, 2, &out));
        if (r == 0) {
            ss_session_get_stats(s, &st);
            plans = st.n_plans;
            before = alloc_count;
        }
        if (!out) continue;
        const float *y = out[0].data;
        for (int i = 0; i < 6; i++) { /* W = 0..5, x = 1 */
            float want = flags[r] ? (1.0f + (float)i) * 2.0f : 1.0f - (float)i;
            CHECK_MSG(y[i] == want, "run %d element %d: %g, expected %g", r, i, y[i], want);
        }
    }
    CHECK_MSG(alloc_count == before, "%ld allocations switching branches", alloc_count - before);
    ss_session_get_stats(s, &st);
    CHECK(st.n_plans == plans);
    ss_tensor_free(&in[0]);
    ss_tensor_free(&in[1]);
    ss_session_free(s);
}

/* Runs if_fit.onnx (then: x reshaped to [-1,4], else to [-1,3]) on c and x = 0..n-1; checks y has
 * `rows` rows of the branch's width and the error when c picks a branch x does not fit. */
static void run_if_fit(ss_session *s, bool c, int64_t n, int64_t rows, const char *err)
{
    ss_tensor in[2];
    int64_t none[1] = {0}, dims[1] = {n};
    CHECK_OK(ss_tensor_alloc(&in[0], SS_DT_BOOL, 0, none));
    CHECK_OK(ss_tensor_alloc(&in[1], SS_DT_FLOAT32, 1, dims));
    if (!in[0].data || !in[1].data) return;
    *(unsigned char *)in[0].data = c;
    for (int64_t i = 0; i < n; i++)
        ((float *)in[1].data)[i] = (float)i;
    const ss_tensor *out = NULL;
    if (err) {
        CHECK_ERR(ss_session_run(s, in, 2, &out), err);
    } else {
        CHECK_OK(ss_session_run(s, in, 2, &out));
        int64_t w = c ? 4 : 3;
        CHECK_MSG(out && out[0].ndim == 2 && out[0].dims[0] == rows && out[0].dims[1] == w,
                  "c=%d n=%lld: wrong output shape", c, (long long)n);
        for (int64_t i = 0; out && i < n; i++)
            CHECK(((const float *)out[0].data)[i] == (float)i);
    }
    ss_tensor_free(&in[0]);
    ss_tensor_free(&in[1]);
}

/* A condition on an input's value whose branches do not both plan for these shapes (or plan to
 * different shapes): only the branch taken is planned, as onnxruntime runs only that one, and a
 * new condition value plans again. */
static void if_on_input_value_plans_the_branch_taken(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("if_fit.onnx"), NULL, &s));
    if (!s) return;
    run_if_fit(s, true, 8, 2, NULL);  /* else_branch cannot reshape 8 elements to [-1,3] */
    run_if_fit(s, false, 9, 3, NULL); /* then_branch cannot reshape 9 to [-1,4] */
    run_if_fit(s, true, 8, 2, NULL);
    run_if_fit(s, false, 8, 0, "Reshape");
    ss_session_free(s);
    CHECK_OK(ss_session_create(fixture("if_ragged.onnx"), NULL, &s));
    if (!s) return;
    ss_tensor in[2];
    int64_t none[1] = {0};
    CHECK_OK(ss_tensor_alloc(&in[0], SS_DT_BOOL, 0, none));
    ones(&in[1], 2, 3);
    const ss_tensor *out = NULL;
    for (int r = 0; r < 3 && in[0].data && in[1].data; r++) {
        *(unsigned char *)in[0].data = r != 1; /* then: [2,3] as is; else: transposed, [3,2] */
        CHECK_OK(ss_session_run(s, in, 2, &out));
        if (out) CHECK(out[0].dims[0] == (r != 1 ? 2 : 3) && all_equal(&out[0], 1.0f));
    }
    ss_tensor_free(&in[0]);
    ss_tensor_free(&in[1]);
    ss_session_free(s);
}

static void load_errors_name_the_node(void)
{
    ss_session *s = NULL;
    CHECK_ERR(ss_session_create(fixture("unsupported_op.onnx"), NULL, &s),
              "unsupported op 'Foo' (node 'mystery', domain ai.onnx, opset 13)");
    /* every missing op in one message, subgraphs included, each once with its first node */
    const char *all[] = {
        "4 unsupported ops: ", "'Foo' (node 'mystery' and 1 more, domain ai.onnx, opset 13)",
        "'Bar' (node 'odd', domain com.example, opset 1)",
        "'Qux' (node 'holder', domain ai.onnx, opset 13)",
        "'Zap' (node 'deep' in body of 'holder', domain ai.onnx, opset 13)"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        CHECK_ERR(ss_session_create(fixture("unsupported_ops.onnx"), NULL, &s), all[i]);
    CHECK_ERR(ss_session_create(fixture("dangling_input.onnx"), NULL, &s),
              "input 'nowhere' is not produced");
    CHECK(s == NULL);
}

/* Runs nonzero.onnx on x and checks idx = -(indices of x's nonzeros) and sq = x*x. */
static void run_nonzero(ss_session *s, const float *xv, int64_t nnz)
{
    ss_tensor x;
    int64_t dims[1] = {6};
    CHECK_OK(ss_tensor_alloc(&x, SS_DT_FLOAT32, 1, dims));
    if (!x.data) return;
    memcpy(x.data, xv, sizeof(float) * 6);
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    if (out) {
        CHECK_MSG(out[0].ndim == 2 && out[0].dims[0] == 1 && out[0].dims[1] == nnz,
                  "idx has %lld columns, expected %lld", (long long)out[0].dims[1], (long long)nnz);
        for (int64_t i = 0, c = 0; i < 6 && out[0].dims[1] == nnz; i++)
            if (xv[i] != 0) CHECK(((const float *)out[0].data)[c++] == -(float)i);
        for (int i = 0; i < 6; i++)
            CHECK(((const float *)out[1].data)[i] == xv[i] * xv[i]);
    }
    ss_tensor_free(&x);
}

/* A mid-run re-plan (NonZero's count changed) builds the new plan while the old one lives; the
 * old arena must not stay with the session once the run returns: it holds one arena between
 * runs, within max_run_bytes with its headroom. */
static void mid_run_replans_hold_one_arena(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("nonzero.onnx"), NULL, &s));
    if (!s) return;
    static const float a[6] = {0, 1, 0, -2, 0, 3}, c[6] = {0, 0, 0, 0, 0, -7},
                       d[6] = {1, 2, 3, 4, 5, 6};
    const float *xs[] = {a, c, d, a, d, c};
    const int64_t nnz[] = {3, 1, 6, 3, 6, 1};
    ss_session_stats st;
    for (int r = 0; r < 6; r++) {
        run_nonzero(s, xs[r], nnz[r]);
        ss_session_get_stats(s, &st);
        CHECK_MSG(st.spare_arena_bytes == 0, "run %d: %zu bytes of a freed plan's arena held", r,
                  st.spare_arena_bytes);
        CHECK(st.arena_cap_bytes >= st.arena_bytes);
    }
    ss_session_free(s);
}

/* The headroom a growing shape gets stays within the run's byte limit. */
static void arena_headroom_stays_under_the_limit(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("dynamic.onnx"), NULL, &s));
    if (!s) return;
    ss_session_stats st;
    run_rows(s, 30);
    ss_session_get_stats(s, &st);
    size_t need30 = st.arena_bytes;
    ss_session_free(s);
    s = NULL;
    /* a limit that is not a multiple of the arena's alignment, just over the need for 30 rows */
    ss_session_options opt = {.max_run_bytes = need30 + 17};
    CHECK_OK(ss_session_create(fixture("dynamic.onnx"), &opt, &s));
    if (!s) return;
    for (int64_t n = 16; n <= 30; n += 7) {
        run_rows(s, n);
        ss_session_get_stats(s, &st);
        CHECK_MSG(st.arena_cap_bytes <= opt.max_run_bytes, "%lld rows: a %zu-byte arena, limit %zu",
                  (long long)n, st.arena_cap_bytes, opt.max_run_bytes);
    }
    ss_session_free(s);
}

static void data_dependent_shape_replans_only_on_change(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("nonzero.onnx"), NULL, &s));
    if (!s) return;
    static const float a[6] = {0, 1, 0, -2, 0, 3}, b[6] = {4, 5, 6, 0, 0, 0},
                       c[6] = {0, 0, 0, 0, 0, -7};
    ss_session_stats st;
    run_nonzero(s, a, 3);
    ss_session_get_stats(s, &st);
    int plans = st.n_plans;
    run_nonzero(s, a, 3);
    run_nonzero(s, b, 3); /* another value, the same shape: the plan stays */
    ss_session_get_stats(s, &st);
    CHECK_MSG(st.n_plans == plans, "%d plans, expected %d", st.n_plans, plans);
    run_nonzero(s, c, 1);
    ss_session_get_stats(s, &st);
    CHECK_MSG(st.n_plans == plans + 1, "%d plans, expected %d", st.n_plans, plans + 1);
    run_nonzero(s, a, 3);
    ss_session_free(s);
}

/* Runs computed_limit.onnx for n and checks y = -[0, 1, ..., n] and y2 = [0, ..., 2n-1]. */
static void run_computed_limit(ss_session *s, int64_t n)
{
    ss_tensor x;
    CHECK_OK(ss_tensor_alloc(&x, SS_DT_INT64, 0, NULL));
    if (!x.data) return;
    *(int64_t *)x.data = n;
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    if (out) {
        CHECK_MSG(out[0].ndim == 1 && out[0].dims[0] == n + 1, "y has %lld values for n = %lld",
                  (long long)out[0].dims[0], (long long)n);
        for (int64_t i = 0; i <= n && out[0].dims[0] == n + 1; i++)
            CHECK(((const float *)out[0].data)[i] == -(float)i);
        CHECK_MSG(out[1].ndim == 1 && out[1].dims[0] == 2 * n, "y2 has %lld values for n = %lld",
                  (long long)out[1].dims[0], (long long)n);
        for (int64_t i = 0; i < 2 * n && out[1].dims[0] == 2 * n; i++)
            CHECK(((const int64_t *)out[1].data)[i] == i);
    }
    ss_tensor_free(&x);
}

static void computed_shape_replans_only_on_change(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture("computed_limit.onnx"), NULL, &s));
    if (!s) return;
    ss_session_stats st;
    run_computed_limit(s, 3);
    ss_session_get_stats(s, &st);
    int plans = st.n_plans;
    run_computed_limit(s, 3);
    ss_session_get_stats(s, &st);
    CHECK_MSG(st.n_plans == plans, "%d plans, expected %d", st.n_plans, plans);
    /* both computed limits come from the input n alone, so the planner computes them when it
     * plans (the plan depends on n's value): one plan per new n, none for a repeated one */
    run_computed_limit(s, 6);
    run_computed_limit(s, 0);
    ss_session_get_stats(s, &st);
    CHECK_MSG(st.n_plans == plans + 2, "%d plans, expected %d", st.n_plans, plans + 2);
    run_computed_limit(s, 0);
    ss_session_get_stats(s, &st);
    CHECK_MSG(st.n_plans == plans + 2, "%d plans, expected %d", st.n_plans, plans + 2);
    ss_session_free(s);
    /* after planning shapes alone (the shard tool, a session that never ran) the session still
     * runs right */
    CHECK_OK(ss_session_create(fixture("computed_limit.onnx"), NULL, &s));
    if (!s) return;
    ss_tensor desc = {.dtype = SS_DT_INT64, .ndim = 0};
    ss_status_free(ss_session_plan_shapes(s, &desc, 1));
    run_computed_limit(s, 2);
    ss_session_free(s);
}

/* Collectives standing in for two ranks that hold the same shard: allreduce doubles, allgather
 * repeats each rank's part; every call is counted, a contribution without output apart. */
typedef struct {
    int allreduce, gathered, contributed;
    float last[16];      /* the last float32 allreduce's contribution (its first 16 values) */
    ss_collectives coll; /* what the session calls (fake_session) */
} fake_comm;

static int fake_size(void *ctx, const char *group)
{
    (void)ctx;
    return strcmp(group, "world") ? -1 : 2;
}

static int fake_rank(void *ctx, const char *group)
{
    (void)ctx, (void)group;
    return 0;
}

static ss_status *fake_allreduce(void *ctx, const char *group, void *buf, ss_dtype dt, size_t n)
{
    (void)group;
    fake_comm *f = ctx;
    f->allreduce++;
    for (size_t i = 0; i < n; i++) {
        if (dt == SS_DT_INT64) {
            ((int64_t *)buf)[i] *= 2;
            continue;
        }
        if (i < 16) f->last[i] = ((float *)buf)[i];
        ((float *)buf)[i] *= 2;
    }
    return NULL;
}

static ss_status *fake_allgather(void *ctx, const char *group, const ss_tensor *in, int axis,
                                 ss_tensor *out)
{
    (void)group;
    fake_comm *f = ctx;
    if (!out) return f->contributed++, NULL;
    f->gathered++;
    size_t outer = 1, row = ss_dtype_size(in->dtype);
    for (int d = 0; d < in->ndim; d++)
        *(d < axis ? &outer : &row) *= (size_t)in->dims[d];
    for (size_t o = 0; o < outer; o++)
        for (int k = 0; k < 2; k++)
            memcpy((char *)out->data + (o * 2 + (size_t)k) * row, (const char *)in->data + o * row,
                   row);
    return NULL;
}

static ss_status *fake_other(void *ctx, const char *group, int root, void *buf, size_t n)
{
    (void)ctx, (void)group, (void)root, (void)buf, (void)n;
    return ss_errf(SS_ERR_INTERNAL, "not in this model");
}

/* A session of that model over the fake communicator f (zeroed first; it must outlive s). */
static ss_session *fake_session(const char *model, fake_comm *f)
{
    *f = (fake_comm){.coll = {.ctx = f,
                              .group_size = fake_size,
                              .group_rank = fake_rank,
                              .allreduce = fake_allreduce,
                              .allgather = fake_allgather,
                              .broadcast = fake_other}};
    ss_session_options opt = {.coll = &f->coll};
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(fixture(model), &opt, &s));
    return s;
}

/* y = -AllGather(Relu(AllReduce(x W0))) and z = Sigmoid(x) against the same math in C. */
static void check_collectives_outputs(const ss_tensor *x, const ss_tensor *out)
{
    const float *xv = x->data, *y = out[0].data, *z = out[1].data;
    float w0[36];
    for (int i = 0; i < 36; i++)
        w0[i] = (float)(i - 17) / 10;
    int bad = 0;
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < 6; j++) {
            float a = 0;
            for (int k = 0; k < 6; k++)
                a += xv[r * 6 + k] * w0[k * 6 + j];
            float c = 2 * a > 0 ? 2 * a : 0, zz = 1 / (1 + expf(-xv[r * 6 + j]));
            bad += fabsf(y[r * 12 + j] + c) > 1e-4f || fabsf(y[r * 12 + 6 + j] + c) > 1e-4f ||
                   fabsf(z[r * 6 + j] - zz) > 1e-5f;
        }
    CHECK_MSG(bad == 0, "%d of 24 positions wrong", bad);
}

/* ss_session_run_effects (a rank whose outputs nobody reads) runs the collectives and what they
 * read: the AllReduce runs, the AllGather only contributes (its output feeds only Neg), Neg and
 * Sigmoid are skipped; it allocates nothing once planned, and full runs around it stay right. */
static void run_effects_runs_only_the_collectives(void)
{
    fake_comm f;
    ss_session *s = fake_session("collectives.onnx", &f);
    if (!s) return;
    ss_tensor x;
    int64_t dims[2] = {4, 6};
    CHECK_OK(ss_tensor_alloc(&x, SS_DT_FLOAT32, 2, dims));
    for (int i = 0; i < 24; i++)
        ((float *)x.data)[i] = (float)((i * 7) % 11) / 5 - 1;
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    if (out) check_collectives_outputs(&x, out);
    CHECK(f.allreduce == 1 && f.gathered == 1 && f.contributed == 0);
    long before = alloc_count;
    CHECK_OK(ss_session_run_effects(s, &x, 1));
    CHECK_MSG(alloc_count == before, "%ld allocations in a planned run for effects",
              alloc_count - before);
    CHECK_MSG(f.allreduce == 2 && f.gathered == 1 && f.contributed == 1,
              "after a run for effects: %d allreduces, %d gathers, %d contributions", f.allreduce,
              f.gathered, f.contributed);
    for (int i = 0; i < 24; i++)
        ((float *)x.data)[i] = -((float *)x.data)[i];
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    if (out) check_collectives_outputs(&x, out);
    CHECK(f.allreduce == 3 && f.gathered == 2 && f.contributed == 1);
    ss_tensor_free(&x);
    ss_session_free(s);
}

/* A plan that waits for a run-time value (Range's limit comes out of an AllReduce) cannot know
 * before it runs what its later nodes read: a first run for effects only must still compute
 * what the second AllReduce contributes (-x + sum(0..2k-1) = 14 13 12 11 for x = 1 2 3 4, k = 3),
 * as a full run does. */
static void run_effects_on_a_plan_that_waits_for_a_value(void)
{
    for (int effects_first = 0; effects_first < 2; effects_first++) {
        fake_comm f;
        ss_session *s = fake_session("collectives_partial.onnx", &f);
        if (!s) return;
        float xv[4] = {1, 2, 3, 4};
        int64_t k = 3, d4[1] = {4};
        ss_tensor in[2];
        CHECK_OK(ss_tensor_borrow(&in[0], SS_DT_FLOAT32, 1, d4, xv, sizeof xv));
        CHECK_OK(ss_tensor_borrow(&in[1], SS_DT_INT64, 0, NULL, &k, sizeof k));
        for (int run = 0; run < 2; run++) {
            const ss_tensor *out;
            memset(f.last, 0, sizeof f.last);
            CHECK_OK(effects_first || run ? ss_session_run_effects(s, in, 2)
                                          : ss_session_run(s, in, 2, &out));
            CHECK_MSG(f.last[0] == 14 && f.last[1] == 13 && f.last[2] == 12 && f.last[3] == 11,
                      "%s run %d contributed %g %g %g %g", effects_first ? "effects" : "full", run,
                      f.last[0], f.last[1], f.last[2], f.last[3]);
        }
        ss_session_free(s);
    }
}

TEST_MAIN(TEST(seed_model_gives_minus_48), TEST(run_effects_runs_only_the_collectives),
          TEST(run_effects_on_a_plan_that_waits_for_a_value),
          TEST(run_into_writes_the_output_in_place),
          TEST(data_dependent_shape_replans_only_on_change), TEST(mid_run_replans_hold_one_arena),
          TEST(arena_headroom_stays_under_the_limit), TEST(computed_shape_replans_only_on_change),
          TEST(run_allocates_nothing), TEST(resident_weights_survive_packing),
          TEST(gemm_transb_packs_only_a_weight_it_alone_reads), TEST(arena_reuses_buffers),
          TEST(dynamic_dim_replans_only_on_change), TEST(replans_reuse_the_arena),
          TEST(replan_reuses_packed_weights), TEST(bad_inputs_are_named),
          TEST(load_errors_name_the_node), TEST(if_on_shape_runs_taken_branch),
          TEST(if_on_data_switches_without_replanning),
          TEST(if_on_input_value_plans_the_branch_taken))
