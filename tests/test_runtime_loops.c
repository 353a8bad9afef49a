/*
 * Recurrent and looping ops keep the planner's promise: once planned, a run allocates nothing.
 * LSTM/GRU/RNN (ONNX's node-case models) step through time in the plan's scratch; Scan and Loop
 * run a body planned once, carrying values in the node's scratch. Each model runs once to plan,
 * then ten more times with the allocation counter watching, and must give the same outputs.
 * Also: the planner folds values computed from inputs only where shape inference needs them.
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

TEST_MAIN(TEST(recurrent_ops_run_without_allocating), TEST(scan_runs_without_allocating),
          TEST(loop_runs_without_allocating), TEST(inputs_fold_only_when_needed))
