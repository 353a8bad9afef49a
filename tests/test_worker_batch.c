/*
 * The worker's batching rules as pure functions (src/worker/batch.c): batch size from the model
 * and the servable's cap, merging instances into a batch tensor (with padding and a clear error
 * for a row of the wrong size), and slicing an instance's share of a batched output.
 */
#include "check.h"

#include "batch.h"

static void batch_size_rules(void)
{
    CHECK(ss_batch_size(false, false, 8, 0) == 1); /* no batch dim: one instance per call */
    CHECK(ss_batch_size(true, false, 8, 0) == 8);  /* the model's fixed batch */
    CHECK(ss_batch_size(true, false, 8, 4) == 4);  /* capped by max_batch_size */
    CHECK(ss_batch_size(true, false, 8, 16) ==
          8); /* a cap above the model's batch changes nothing */
    CHECK(ss_batch_size(true, true, -1, 0) == SS_BATCH_DYNAMIC_DEFAULT);
    CHECK(ss_batch_size(true, true, -1, 5) == 5);
    CHECK(ss_batch_size(true, true, -1, 100000) == SS_BATCH_MAX);
    CHECK(ss_batch_size(true, false, 0, 0) == 1); /* a model that says 0 still runs one */
}

static void row(ss_tensor *t, float v)
{
    int64_t dims[1] = {3};
    CHECK_OK(ss_tensor_alloc(t, SS_DT_FLOAT32, 1, dims));
    for (int i = 0; i < 3; i++)
        ((float *)t->data)[i] = v + (float)i;
}

static void merge_pads_with_first_instance(void)
{
    ss_tensor a, b, dst;
    row(&a, 10);
    row(&b, 20);
    int64_t dims[2] = {4, 3};
    CHECK_OK(ss_tensor_alloc(&dst, SS_DT_FLOAT32, 2, dims));
    const ss_tensor *rows[] = {&a, &b};
    CHECK_OK(ss_batch_merge(&dst, rows, 2));
    const float *d = dst.data;
    float want[12] = {10, 11, 12, 20, 21, 22, 10, 11, 12, 10, 11, 12};
    for (int i = 0; i < 12; i++)
        CHECK_MSG(d[i] == want[i], "element %d: %g, want %g", i, d[i], want[i]);
    ss_tensor_free(&a);
    ss_tensor_free(&b);
    ss_tensor_free(&dst);
}

static void merge_refuses_a_row_of_the_wrong_size(void)
{
    ss_tensor a, small, dst;
    row(&a, 1);
    int64_t one[1] = {2};
    CHECK_OK(ss_tensor_alloc(&small, SS_DT_FLOAT32, 1, one));
    int64_t dims[2] = {2, 3};
    CHECK_OK(ss_tensor_alloc(&dst, SS_DT_FLOAT32, 2, dims));
    const ss_tensor *rows[] = {&a, &small};
    CHECK_ERR(ss_batch_merge(&dst, rows, 2), "instance 1 has 8 bytes, the batch row takes 12");
    const ss_tensor *too_many[] = {&a, &a, &a};
    CHECK_ERR(ss_batch_merge(&dst, too_many, 3), "batch of 2 rows for 3 instances");
    ss_tensor_free(&a);
    ss_tensor_free(&small);
    ss_tensor_free(&dst);
}

static void slice_takes_one_row(void)
{
    ss_tensor out, piece;
    int64_t dims[3] = {3, 2, 2};
    CHECK_OK(ss_tensor_alloc(&out, SS_DT_INT32, 3, dims));
    for (int i = 0; i < 12; i++)
        ((int32_t *)out.data)[i] = i;
    CHECK_OK(ss_batch_slice(&out, 3, 2, false, &piece));
    CHECK(piece.ndim == 2 && piece.dims[0] == 2 && piece.dims[1] == 2);
    for (int i = 0; i < 4; i++)
        CHECK(((int32_t *)piece.data)[i] == 8 + i);
    ss_tensor_free(&piece);
    CHECK_OK(ss_batch_slice(&out, 3, 1, true, &piece)); /* whole: a copy of everything */
    CHECK(piece.ndim == 3 && piece.nbytes == out.nbytes && ((int32_t *)piece.data)[11] == 11);
    ss_tensor_free(&piece);
    CHECK_ERR(ss_batch_slice(&out, 4, 0, false, &piece), "model output has 3 rows for 4 instances");
    CHECK_ERR(ss_batch_slice(&out, 3, 3, false, &piece), "model output has 3 rows for 3 instances");
    ss_tensor_free(&out);
}

static void slice_copies_strings(void)
{
    /* a batched string output: each instance's share must own its own bytes (a shallow copy of
     * the ss_string pointers freed them twice) */
    ss_tensor out, a, b;
    int64_t dims[2] = {2, 2};
    CHECK_OK(ss_tensor_alloc(&out, SS_DT_STRING, 2, dims));
    const char *words[4] = {"ab", "", "c\0d", "efg"};
    size_t lens[4] = {2, 0, 3, 3};
    for (int k = 0; k < 4; k++)
        CHECK_OK(ss_tensor_set_string(&out, k, words[k], lens[k]));
    CHECK_OK(ss_batch_slice(&out, 2, 0, false, &a));
    CHECK_OK(ss_batch_slice(&out, 2, 1, false, &b));
    ss_tensor_free(&out); /* the slices must not point into it */
    const ss_string *sa = a.data, *sb = b.data;
    CHECK(a.ndim == 1 && a.dims[0] == 2 && sa[0].len == 2 && !memcmp(sa[0].data, "ab", 2) &&
          sa[1].len == 0);
    CHECK(sb[0].len == 3 && !memcmp(sb[0].data, "c\0d", 3) && sb[1].len == 3 &&
          !memcmp(sb[1].data, "efg", 3));
    ss_tensor_free(&a);
    ss_tensor_free(&b);
}

static void the_window_runs_unbatched_jobs_ahead(void)
{
    /* the pipeline's depth always */
    CHECK(ss_batch_may_dispatch(0, 1, false, 8, 0, 1u << 30));
    CHECK(ss_batch_may_dispatch(1, 2, true, 8, 1u << 20, 1u << 20));
    /* beyond it: only unbatched jobs of a pipelined servable, within the bytes and the count */
    CHECK(ss_batch_may_dispatch(2, 2, true, 1, 96 * 1024, 48 * 1024));
    CHECK(ss_batch_may_dispatch(3, 2, true, 1, 144 * 1024, 48 * 1024));
    CHECK(!ss_batch_may_dispatch(4, 2, true, 1, 192 * 1024, 48 * 1024));
    CHECK(!ss_batch_may_dispatch(2, 2, true, 1, 96 * 1024, 128 * 1024));
    CHECK(!ss_batch_may_dispatch(2, 2, true, 8, 0, 16));
    CHECK(!ss_batch_may_dispatch(1, 1, false, 1, 0, 16));
    CHECK(!ss_batch_may_dispatch(2 + SS_AHEAD_JOBS_MAX, 2, true, 1, 0, 0));
    CHECK(ss_batch_may_dispatch(1 + SS_AHEAD_JOBS_MAX, 2, true, 1, 0, 0));
}

TEST_MAIN(TEST(batch_size_rules), TEST(the_window_runs_unbatched_jobs_ahead),
          TEST(slice_copies_strings), TEST(merge_pads_with_first_instance),
          TEST(merge_refuses_a_row_of_the_wrong_size), TEST(slice_takes_one_row))
