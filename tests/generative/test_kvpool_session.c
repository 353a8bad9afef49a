/*
 * Sequences of a session's KV block pool, through a model rewritten by `shardserve shard
 * --kv-pool` (tests/generative: tiny GPT-2 or Llama, PyTorch's greedy tokens as the reference):
 *  - two sequences created and freed explicitly, decoding in one batch at different positions
 *    (the second joins late, the first leaves early), each equal to the reference on its own;
 *  - a pool of 3 blocks: a sequence that outgrows it fails naming the pool's size, a new sequence
 *    is refused while no block is free, and after a free the blocks serve a new sequence exactly.
 *   test_kvpool_session PAGED_MODEL.onnx PROMPT.npy REF_TOKENS.npy
 */
#include "check.h"
#include "shardserve/runtime.h"

static ss_tensor prompt, ref;

typedef struct {
    ss_session *s;
    int ids, pos, seq, rows; /* input indices (rows: logit_rows) */
} paged;

static void paged_open(paged *p, size_t kv_bytes)
{
    ss_session_options opt = {.kv_cache_bytes = kv_bytes};
    p->s = NULL;
    CHECK_OK(ss_session_create(test_argv[1], &opt, &p->s));
    p->ids = p->pos = p->seq = p->rows = -1;
    for (int i = 0; p->s && i < ss_session_num_inputs(p->s); i++) {
        const char *n = ss_session_input(p->s, i)->name;
        int *slot = !strcmp(n, "input_ids")      ? &p->ids
                    : !strcmp(n, "position_ids") ? &p->pos
                    : !strcmp(n, "seq_ids")      ? &p->seq
                    : !strcmp(n, "logit_rows")   ? &p->rows
                                                 : NULL;
        if (slot) *slot = i;
    }
    CHECK(p->ids >= 0 && p->pos >= 0 && p->seq >= 0 && p->rows >= 0 &&
          ss_session_num_inputs(p->s) == 4);
}

/* One step of `t` tokens for each of `batch` sequences (row b: sequence seq[b], its tokens
 * tokens[b*t..] at positions start[b]..); next[b] is the argmax of the row's last logits. The
 * model returns logits for the rows in logit_rows: here every row, in reverse order (so a row
 * that came back from the wrong place would be seen). */
static ss_status *paged_step(paged *p, int batch, int t, const int64_t *seq, const int64_t *start,
                             const int64_t *tokens, int64_t *next)
{
    int64_t pos[64], d2[2] = {batch, t}, d1[1] = {batch};
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < t; i++)
            pos[b * t + i] = start[b] + i;
    ss_tensor in[4];
    int64_t rows[64], d_rows[1] = {batch};
    for (int b = 0; b < batch; b++)
        rows[b] = batch - 1 - b;
    size_t nb = (size_t)batch * (size_t)t * sizeof(int64_t);
    ss_status *st = ss_tensor_borrow(&in[p->ids], SS_DT_INT64, 2, d2, (void *)tokens, nb);
    if (!st) st = ss_tensor_borrow(&in[p->pos], SS_DT_INT64, 2, d2, pos, nb);
    if (!st) st = ss_tensor_borrow(&in[p->seq], SS_DT_INT64, 1, d1, (void *)seq, batch * 8u);
    if (!st) st = ss_tensor_borrow(&in[p->rows], SS_DT_INT64, 1, d_rows, rows, batch * 8u);
    const ss_tensor *outs = NULL;
    if (!st) st = ss_session_run(p->s, in, 4, &outs);
    if (!st && outs[0].dims[0] != batch)
        st = ss_errf(SS_ERR_INVALID, "%lld rows of logits for %d logit_rows",
                     (long long)outs[0].dims[0], batch);
    for (int b = 0; !st && b < batch; b++) {
        int64_t vocab = outs[0].dims[2];
        const float *row =
            (const float *)outs[0].data + ((int64_t)(batch - 1 - b) * t + t - 1) * vocab;
        next[b] = 0;
        for (int64_t v = 1; v < vocab; v++)
            next[b] = row[v] > row[next[b]] ? v : next[b];
    }
    return st;
}

/* Prefill of the prompt for sequence `seq`: the reference's first token. */
static void prefill(paged *p, int64_t seq)
{
    int64_t zero = 0, next = -1;
    CHECK_OK(ss_session_seq_create(p->s, seq));
    CHECK_OK(paged_step(p, 1, (int)prompt.dims[0], &seq, &zero, prompt.data, &next));
    CHECK(next == ((int64_t *)ref.data)[0]);
}

static void two_sequences_in_one_batch(void)
{
    paged p;
    paged_open(&p, 0);
    const int64_t *want = ref.data, n_prompt = prompt.dims[0];
    int64_t seq[2] = {11, 22}, done[2] = {1, 0}; /* reference tokens produced so far */
    prefill(&p, seq[0]);
    for (int i = 0; i < 10; i++, done[0]++) { /* 11 alone */
        int64_t start = n_prompt + done[0] - 1, next = -1;
        CHECK_OK(paged_step(&p, 1, 1, seq, &start, &want[done[0] - 1], &next));
        CHECK(next == want[done[0]]);
    }
    prefill(&p, seq[1]), done[1] = 1; /* 22 joins, 11 tokens behind */
    for (int i = 0; i < 20; i++, done[0]++, done[1]++) {
        int64_t start[2], tok[2], next[2] = {-1, -1};
        for (int b = 0; b < 2; b++)
            start[b] = n_prompt + done[b] - 1, tok[b] = want[done[b] - 1];
        CHECK_OK(paged_step(&p, 2, 1, seq, start, tok, next));
        CHECK_MSG(next[0] == want[done[0]] && next[1] == want[done[1]],
                  "step %d: %lld %lld, want %lld %lld", i, (long long)next[0], (long long)next[1],
                  (long long)want[done[0]], (long long)want[done[1]]);
    }
    CHECK(ss_session_seq_length(p.s, seq[0]) == n_prompt + done[0] - 1);
    CHECK_OK(ss_session_seq_free(p.s, seq[0])); /* 11 leaves; 22 goes on alone */
    CHECK(ss_session_seq_length(p.s, seq[0]) == -1);
    for (; done[1] < ref.dims[0]; done[1]++) {
        int64_t start = n_prompt + done[1] - 1, next = -1;
        CHECK_OK(paged_step(&p, 1, 1, &seq[1], &start, &want[done[1] - 1], &next));
        CHECK(next == want[done[1]]);
    }
    CHECK_ERR(paged_step(&p, 1, 1, seq, (int64_t[]){0}, want, (int64_t[1]){0}),
              "sequence 11 was never created");
    ss_session_free(p.s);
}

/* Decodes sequence `seq` (prefilled) until it holds `len` tokens or fails; the status. */
static ss_status *decode_to(paged *p, int64_t seq, int64_t len)
{
    const int64_t *want = ref.data;
    ss_status *st = NULL;
    for (int64_t pos = prompt.dims[0]; pos < len && !st; pos++) {
        int64_t i = pos - prompt.dims[0], next = -1;
        st = paged_step(p, 1, 1, &seq, &pos, &want[i], &next);
        if (!st) CHECK(next == want[i + 1]);
    }
    return st;
}

/* A pool of 3 blocks of 16 tokens: 48 tokens in all. The default pool's block count gives the
 * bytes of a block (the model's layers, KV heads and head size). */
static void full_pool(void)
{
    paged p;
    int64_t total = 0, free_blocks = 0;
    paged_open(&p, (size_t)64 << 20);
    prefill(&p, 1);
    ss_session_kv_blocks(p.s, &total, &free_blocks);
    CHECK(total > 3 && free_blocks == total - 1);
    ss_session_free(p.s);
    if (total <= 3) return;
    paged_open(&p, (size_t)(3.5 * (double)((size_t)64 << 20) / (double)total));
    prefill(&p, 1);
    ss_session_kv_blocks(p.s, &total, &free_blocks);
    CHECK(total == 3 && free_blocks == 2);
    CHECK_ERR(decode_to(&p, 1, 60), "all 3 blocks of 16 tokens");
    CHECK(ss_session_seq_length(p.s, 1) == 48);
    CHECK_ERR(ss_session_seq_create(p.s, 2), "KV cache pool full");
    CHECK_OK(ss_session_seq_free(p.s, 1));
    prefill(&p, 2); /* the freed blocks, reused: no trace of sequence 1 */
    CHECK_OK(decode_to(&p, 2, 48));
    ss_session_free(p.s);
}

int main(int argc, char **argv)
{
    test_argc = argc, test_argv = argv;
    if (argc != 4) return fprintf(stderr, "usage: %s PAGED.onnx PROMPT.npy REF.npy\n", argv[0]), 2;
    CHECK_OK(ss_npy_read(argv[2], &prompt));
    CHECK_OK(ss_npy_read(argv[3], &ref));
    if (check_failures) return 1;
    static const test_case cases[] = {TEST(two_sequences_in_one_batch), TEST(full_pool)};
    int rc = run_tests(cases, 2);
    ss_tensor_free(&prompt);
    ss_tensor_free(&ref);
    return rc;
}
