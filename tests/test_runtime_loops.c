/*
 * Recurrent and looping ops keep the planner's promise: once planned, a run allocates nothing.
 * LSTM/GRU/RNN (ONNX's node-case models) step through time in the plan's scratch; Scan and Loop
 * run a body planned once, carrying values in the node's scratch. Each model runs once to plan,
 * then ten more times with the allocation counter watching, and must give the same outputs.
 * Also: the planner folds values computed from inputs only where shape inference needs them, and
 * a run stays inside its bounds (a Loop stops at the deadline, values over max_run_bytes refused).
 * argv[1]: ONNX's node-case folder; argv[2]: the loop cases made by tests/onnx/loop_cases.py.
 */
#include "check.h"
#include "shardserve/runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc_count.h"

enum { MAX_IO = 8 };

/* Inputs shaped as the model declares: floats a fixed wave, integers `int_value`, bools true. */
static int make_inputs(const ss_session *s, ss_tensor *in, int64_t int_value)
{
    int n = ss_session_num_inputs(s);
    for (int i = 0; i < n && i < MAX_IO; i++) {
        const ss_onnx_value_info *vi = ss_session_input(s, i);
        int64_t dims[SS_MAX_DIMS];
        for (int d = 0; d < vi->ndim; d++)
            dims[d] = vi->dims[d] < 0 ? 1 : vi->dims[d];
        CHECK_OK(ss_tensor_alloc(&in[i], vi->dtype, vi->ndim < 0 ? 0 : vi->ndim, dims));
        for (int64_t j = 0; j < ss_tensor_numel(&in[i]); j++) {
            if (vi->dtype == SS_DT_FLOAT32)
                ((float *)in[i].data)[j] = 0.5f * sinf((float)(i * 7 + j));
            else if (vi->dtype == SS_DT_INT32)
                ((int32_t *)in[i].data)[j] = (int32_t)int_value;
            else if (vi->dtype == SS_DT_INT64)
                ((int64_t *)in[i].data)[j] = int_value;
            else if (vi->dtype == SS_DT_BOOL)
                ((unsigned char *)in[i].data)[j] = 1;
        }
    }
    return n;
}

/* Runs `path` once to plan, then ten times: no allocation, identical outputs. The outputs of
 * the last run are copied into `keep` (the caller frees them) when keep is not NULL. */
static void runs_without_allocating(const char *path, int64_t int_value, ss_tensor *keep)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(path, NULL, &s));
    if (!s) return;
    ss_tensor in[MAX_IO] = {0}, first[MAX_IO] = {0};
    int n_in = make_inputs(s, in, int_value), n_out = ss_session_num_outputs(s);
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run(s, in, n_in, &out));
    for (int j = 0; out && j < n_out && j < MAX_IO; j++)
        CHECK_OK(ss_tensor_copy(&first[j], &out[j]));
    long before = alloc_count;
    for (int r = 0; r < 10; r++)
        CHECK_OK(ss_session_run(s, in, n_in, &out));
    CHECK_MSG(alloc_count == before, "%s: %ld allocations in 10 planned runs", path,
              alloc_count - before);
    for (int j = 0; out && j < n_out && j < MAX_IO; j++) {
        CHECK_MSG(out[j].nbytes == first[j].nbytes &&
                      !memcmp(out[j].data, first[j].data, first[j].nbytes),
                  "%s: output %d changed between runs", path, j);
        if (keep) CHECK_OK(ss_tensor_copy(&keep[j], &out[j]));
    }
    for (int i = 0; i < MAX_IO; i++) {
        ss_tensor_free(&in[i]);
        ss_tensor_free(&first[i]);
    }
    ss_session_free(s);
}

static const char *path_of(int arg, const char *rel)
{
    static char buf[4][4096];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s/model.onnx", test_argv[arg], rel);
    return b;
}

static void recurrent_ops_run_without_allocating(void)
{
    runs_without_allocating(path_of(1, "test_lstm_with_peepholes"), 1, NULL);
    runs_without_allocating(path_of(1, "test_gru_seq_length"), 2, NULL);
    runs_without_allocating(path_of(1, "test_rnn_seq_length"), 2, NULL);
    runs_without_allocating(path_of(1, "test_lstm_batchwise"), 1, NULL);
}

static void scan_runs_without_allocating(void)
{
    ss_tensor out[MAX_IO] = {0};
    runs_without_allocating(path_of(1, "test_scan9_sum"), 0, out);
    /* y = initial + the sum of x's rows; make_inputs filled initial (input 0, [2]) and x
     * (input 1, [3,2]) with 0.5 sin(i * 7 + j) */
    for (int c = 0; c < 2 && out[0].data; c++) {
        double want = 0.5 * sin((double)c);
        for (int r = 0; r < 3; r++)
            want += 0.5 * sin((double)(7 + r * 2 + c));
        CHECK_NEAR(((const float *)out[0].data)[c], want, 1e-5);
    }
    for (int i = 0; i < MAX_IO; i++)
        ss_tensor_free(&out[i]);
}

static void loop_runs_without_allocating(void)
{
    ss_tensor out[MAX_IO] = {0};
    /* a, b <- b, a + b seven times (M = 7 from make_inputs) */
    runs_without_allocating(path_of(2, "test_loop_fibonacci_swap"), 7, out);
    for (int c = 0; c < 2 && out[0].data; c++) {
        double a = 0.5 * sin((double)(7 + c)), b = 0.5 * sin((double)(14 + c));
        for (int i = 0; i < 7; i++) {
            double t = a + b;
            a = b;
            b = t;
        }
        CHECK_NEAR(((const float *)out[0].data)[c], a, 1e-5);
    }
    for (int i = 0; i < MAX_IO; i++)
        ss_tensor_free(&out[i]);
    runs_without_allocating(path_of(2, "test_scan_reverse_axes"), 0, NULL);
}

static int plans_of(const ss_session *s)
{
    ss_session_stats st;
    ss_session_get_stats(s, &st);
    return st.n_plans;
}

/* One run of s with a single input x (all elements `v`); returns the first output's length. */
static int64_t run_with(ss_session *s, ss_dtype dt, int nd, const int64_t *dims, double v)
{
    ss_tensor x = {0};
    CHECK_OK(ss_tensor_alloc(&x, dt, nd, dims));
    for (int64_t i = 0; x.data && i < ss_tensor_numel(&x); i++)
        if (dt == SS_DT_INT32)
            ((int32_t *)x.data)[i] = (int32_t)v;
        else
            ((float *)x.data)[i] = (float)v + (float)i;
    const ss_tensor *out = NULL;
    CHECK_OK(ss_session_run(s, &x, 1, &out));
    ss_tensor_free(&x);
    return out ? ss_tensor_numel(&out[0]) : -1;
}

/* A value computed from inputs is folded only where shape inference cannot do without it:
 * HannWindow's expansion needs Range's limit (size - 0 from the input), so the plan follows the
 * input's value; MatMul merely prefers a constant second operand, so x @ x^T must not fold x^T
 * into the plan (every new x would re-plan). */
static void inputs_fold_only_when_needed(void)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(path_of(1, "test_hannwindow_expanded"), NULL, &s));
    if (s) {
        int base = plans_of(s);
        CHECK(run_with(s, SS_DT_INT32, 0, NULL, 10) == 10);
        CHECK(run_with(s, SS_DT_INT32, 0, NULL, 10) == 10);
        CHECK_MSG(plans_of(s) == base + 1, "%d plans for one size", plans_of(s) - base);
        CHECK(run_with(s, SS_DT_INT32, 0, NULL, 12) == 12);
        CHECK_MSG(plans_of(s) == base + 2, "%d plans for two sizes", plans_of(s) - base);
        ss_session_free(s);
    }
    CHECK_OK(ss_session_create(path_of(2, "test_matmul_input_transposed"), NULL, &s));
    if (!s) return;
    int64_t dims[2] = {3, 4};
    int base = plans_of(s);
    for (int r = 0; r < 3; r++)
        CHECK(run_with(s, SS_DT_FLOAT32, 2, dims, r) == 9);
    CHECK_MSG(plans_of(s) <= base + 1, "%d plans for three values of x", plans_of(s) - base);
    ss_session_free(s);
}

/* x0 = [1, 1, 1], scale all `scale`, limit 100, go true: the inputs of loop_while_outer_scope
 * (a Loop without a trip count, while sum(x) < limit). */
static void while_inputs(ss_tensor *in, float scale)
{
    int64_t three = 3;
    CHECK_OK(ss_tensor_alloc(&in[0], SS_DT_BOOL, 0, NULL));
    CHECK_OK(ss_tensor_alloc(&in[1], SS_DT_FLOAT32, 1, &three));
    CHECK_OK(ss_tensor_alloc(&in[2], SS_DT_FLOAT32, 1, &three));
    CHECK_OK(ss_tensor_alloc(&in[3], SS_DT_FLOAT32, 0, NULL));
    if (!in[0].data || !in[1].data || !in[2].data || !in[3].data) return;
    *(unsigned char *)in[0].data = 1;
    for (int i = 0; i < 3; i++)
        ((float *)in[1].data)[i] = 1, ((float *)in[2].data)[i] = scale;
    *(float *)in[3].data = 100;
}

/* A while loop that never ends (x * 1 stays under the limit) stops with SS_ERR_LIMIT soon after
 * the session's deadline, naming the node; the same session then runs an ending loop correctly.
 * `model`: the loop at the top, or inside an If's branch (the deadline reaches subgraphs). */
static void loop_stops_at_the_deadline_in(const char *model)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(path_of(2, model), NULL, &s));
    if (!s) return;
    ss_tensor in[4] = {0};
    while_inputs(in, 1);
    uint64_t t0 = ss_now_ns();
    ss_session_set_deadline(s, t0 + 200000000ull);
    const ss_tensor *out = NULL;
    ss_status *st = ss_session_run(s, in, 4, &out);
    double ms = (double)(ss_now_ns() - t0) / 1e6;
    CHECK_MSG(st && st->code == SS_ERR_LIMIT && strstr(st->msg, "time ran out") &&
                  strstr(st->msg, "Loop"),
              "%s: %s", model, st ? st->msg : "the endless loop returned");
    CHECK_MSG(ms < 2000, "%s: stopped %.0f ms after a 200 ms deadline", model, ms);
    CHECK(ss_session_stopped_at_deadline(s));
    ss_status_free(st);
    for (int i = 0; i < 4; i++)
        ss_tensor_free(&in[i]);
    ss_session_set_deadline(s, ss_now_ns() + 60000000000ull);
    while_inputs(in, 2); /* 2, 4, ... 64: sum 192 ends it after six iterations */
    CHECK(!ss_session_stopped_at_deadline(s));
    CHECK_OK(ss_session_run(s, in, 4, &out));
    if (out) CHECK_NEAR(((const float *)out[0].data)[2], 64, 1e-5);
    CHECK(!ss_session_stopped_at_deadline(s));
    for (int i = 0; i < 4; i++)
        ss_tensor_free(&in[i]);
    ss_session_free(s);
}

static void loop_stops_at_the_deadline(void)
{
    loop_stops_at_the_deadline_in("test_loop_while_outer_scope");
    loop_stops_at_the_deadline_in("test_if_while");
}

/* max_run_bytes: one value over the bound (HannWindow's Range sized by the input's value, x^T of a
 * long x, ones(n, n) folded from x's shape) or several under it that are alive together (a window
 * of 800 KB values) are refused with SS_ERR_LIMIT naming the value; smaller runs of the same
 * sessions go on. The model's own constants are not bounded (a Constant node of 100 bytes under a
 * 64-byte bound; W^T of a 200-byte initializer folded in an If's branch under 128 bytes). */
static void runs_over_max_run_bytes_are_refused(void)
{
    ss_session_options tiny = {.max_run_bytes = 64};
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(path_of(1, "test_constant"), &tiny, &s));
    if (s) {
        const ss_tensor *out = NULL;
        CHECK_OK(ss_session_run(s, NULL, 0, &out));
        if (out) CHECK(out[0].nbytes == 100);
        ss_session_free(s);
    }
    tiny.max_run_bytes = 128;
    CHECK_OK(ss_session_create(path_of(2, "test_if_model_constant"), &tiny, &s));
    if (s) {
        ss_tensor go = {0};
        CHECK_OK(ss_tensor_alloc(&go, SS_DT_BOOL, 0, NULL));
        const ss_tensor *out = NULL;
        if (go.data) *(unsigned char *)go.data = 1;
        CHECK_OK(go.data ? ss_session_run(s, &go, 1, &out) : NULL);
        if (out) CHECK_NEAR(*(const float *)out[0].data, 1225, 1e-3); /* 0 + 1 + ... + 49 */
        ss_tensor_free(&go);
        ss_session_free(s);
    }
    ss_session_options opt = {.max_run_bytes = 1 << 20};
    CHECK_OK(ss_session_create(path_of(1, "test_hannwindow_expanded"), &opt, &s));
    if (s) {
        ss_tensor x = {0};
        CHECK_OK(ss_tensor_alloc(&x, SS_DT_INT32, 0, NULL));
        ((int32_t *)x.data)[0] = 1 << 28; /* a 1 GiB window */
        const ss_tensor *out = NULL;
        ss_status *st = ss_session_run(s, &x, 1, &out);
        CHECK_MSG(st && st->code == SS_ERR_LIMIT && strstr(st->msg, "max_run_bytes") &&
                      strstr(st->msg, "1048576") && strstr(st->msg, "1073741824 bytes"),
                  "%s", st ? st->msg : "a 1 GiB window under a 1 MiB limit ran");
        ss_status_free(st);
        /* 800 KB a value, several alive at once */
        ((int32_t *)x.data)[0] = 200000;
        st = ss_session_run(s, &x, 1, &out);
        CHECK_MSG(st && st->code == SS_ERR_LIMIT && strstr(st->msg, "1048576") &&
                      strstr(st->msg, "the largest is"),
                  "%s", st ? st->msg : "a window of 800 KB values ran under a 1 MiB limit");
        ss_status_free(st);
        ss_tensor_free(&x);
        CHECK(run_with(s, SS_DT_INT32, 0, NULL, 10) == 10);
        ss_session_free(s);
    }
    /* ones(n, n) folded from x's shape alone: n = 1024 is 4 MiB */
    CHECK_OK(ss_session_create(path_of(2, "test_shape_square"), &opt, &s));
    if (s) {
        int64_t n = 1024;
        ss_tensor x = {0};
        CHECK_OK(ss_tensor_alloc(&x, SS_DT_FLOAT32, 1, &n));
        const ss_tensor *out = NULL;
        ss_status *st = x.data ? ss_session_run(s, &x, 1, &out) : NULL;
        CHECK_MSG(st && st->code == SS_ERR_LIMIT && strstr(st->msg, "would be a constant"), "%s",
                  st ? st->msg : "a 4 MiB constant from x's shape under a 1 MiB limit ran");
        ss_status_free(st);
        ss_tensor_free(&x);
        n = 4;
        CHECK(run_with(s, SS_DT_FLOAT32, 1, &n, 0) == 16);
        ss_session_free(s);
    }
    CHECK_OK(ss_session_create(path_of(2, "test_matmul_input_transposed"), &opt, &s));
    if (!s) return;
    ss_tensor x = {0};
    int64_t dims[2] = {3, 1 << 17}; /* x^T: 1.5 MiB */
    CHECK_OK(ss_tensor_alloc(&x, SS_DT_FLOAT32, 2, dims));
    const ss_tensor *out = NULL;
    ss_status *st = x.data ? ss_session_run(s, &x, 1, &out) : NULL;
    CHECK_MSG(st && st->code == SS_ERR_LIMIT && strstr(st->msg, "output 'xt' would be 1572864"),
              "%s", st ? st->msg : "a 1.5 MiB intermediate under a 1 MiB limit ran");
    ss_status_free(st);
    ss_tensor_free(&x);
    int64_t small[2] = {3, 4};
    CHECK(run_with(s, SS_DT_FLOAT32, 2, small, 1) == 9);
    ss_session_free(s);
}

TEST_MAIN(TEST(recurrent_ops_run_without_allocating), TEST(scan_runs_without_allocating),
          TEST(loop_runs_without_allocating), TEST(inputs_fold_only_when_needed),
          TEST(loop_stops_at_the_deadline), TEST(runs_over_max_run_bytes_are_refused))
