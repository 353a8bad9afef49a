/*
 * The token-loop engine (src/generate/engine.h) driving a real model rewritten by `shardserve
 * shard --kv-pool` (tiny GPT-2 or Llama, in-process session; its KV block pool holds every
 * sequence):
 *  - one greedy request of the reference prompt yields PyTorch's 64 tokens;
 *  - 32 concurrent requests of different prompt lengths (greedy and seeded sampling) each equal
 *    their own run alone: continuous batching changes nothing;
 *  - the same 32 with a pool so small that sequences are preempted and recomputed.
 *   gen_engine PAGED_MODEL.onnx PROMPT.npy REF_TOKENS.npy
 */
#include "check.h"
#include "gen_engine.h"
#include "shardserve/runtime.h"

static ss_tensor prompt, ref;

typedef struct {
    ss_session *s;
    int ids, pos, seq, rows; /* input indices (rows: logit_rows, -1 when the model has none) */
    int64_t vocab, blocks;
} model;

static int input_index(ss_session *s, const char *name)
{
    for (int i = 0; i < ss_session_num_inputs(s); i++)
        if (!strcmp(ss_session_input(s, i)->name, name)) return i;
    return -1;
}

/* Runs one engine call on the session: the pool's frees and creates, then the model. */
static ss_status *run_call(model *m, const ss_gen_call *c, const float **logits, int64_t *rows)
{
    *logits = NULL;
    *rows = 0;
    for (int32_t i = 0; i < c->n_release; i++) {
        ss_status *st = ss_session_seq_free(m->s, c->release[i]);
        if (st) return st;
    }
    for (int32_t i = 0; i < c->n_create; i++) {
        ss_status *st = ss_session_seq_create(m->s, c->create[i]);
        if (st) return st;
    }
    if (!c->batch) return NULL;
    int64_t d2[2] = {c->batch, c->seq}, d1[1] = {c->batch};
    size_t nb = (size_t)(c->batch * c->seq) * sizeof(int64_t);
    ss_tensor in[4];
    int64_t dr[1] = {c->n_logit_rows};
    ss_status *st = ss_tensor_borrow(&in[m->ids], SS_DT_INT64, 2, d2, (void *)c->input_ids, nb);
    if (!st) st = ss_tensor_borrow(&in[m->pos], SS_DT_INT64, 2, d2, (void *)c->positions, nb);
    if (!st)
        st = ss_tensor_borrow(&in[m->seq], SS_DT_INT64, 1, d1, (void *)c->seq_ids,
                              (size_t)c->batch * sizeof(int64_t));
    if (!st && m->rows >= 0)
        st = ss_tensor_borrow(&in[m->rows], SS_DT_INT64, 1, dr, (void *)c->logit_rows,
                              (size_t)c->n_logit_rows * sizeof(int64_t));
    const ss_tensor *outs = NULL;
    if (!st) st = ss_session_run(m->s, in, m->rows >= 0 ? 4 : 3, &outs);
    if (!st) *logits = outs[0].data, *rows = outs[0].dims[0];
    return st;
}

/* The session and its pool's size in blocks (known once a step has planned the pool). */
static void model_open(model *m, size_t kv_bytes)
{
    ss_session_options opt = {.kv_cache_bytes = kv_bytes};
    memset(m, 0, sizeof *m);
    CHECK_OK(ss_session_create(test_argv[1], &opt, &m->s));
    if (!m->s) return;
    m->ids = input_index(m->s, "input_ids");
    m->pos = input_index(m->s, "position_ids");
    m->seq = input_index(m->s, "seq_ids");
    m->rows = input_index(m->s, "logit_rows");
    CHECK(m->ids >= 0 && m->pos >= 0 && m->seq >= 0);
    CHECK(ss_session_num_inputs(m->s) == (m->rows >= 0 ? 4 : 3));
    int64_t tok = 0, pos = 0, id = 0, row = 0, rows = 0, free_blocks = 0;
    ss_gen_call warm = {.batch = 1,
                        .seq = 1,
                        .input_ids = &tok,
                        .positions = &pos,
                        .seq_ids = &id,
                        .logit_rows = &row,
                        .n_logit_rows = 1,
                        .create = &id,
                        .n_create = 1};
    const float *logits;
    CHECK_OK(run_call(m, &warm, &logits, &rows));
    CHECK_OK(ss_session_seq_free(m->s, 0));
    ss_session_kv_blocks(m->s, &m->blocks, &free_blocks);
    CHECK(m->blocks > 0 && free_blocks == m->blocks);
    m->vocab = ss_session_output(m->s, 0)->dims[2];
    CHECK(m->vocab > 0);
}

typedef struct {
    int64_t tokens[128];
    int32_t n;
    ss_gen_state end;
} result;

static void on_token(void *ctx, int64_t token, ss_gen_state state, const char *error)
{
    result *r = ctx;
    if (token >= 0 && r->n < 128) r->tokens[r->n++] = token;
    if (state != SS_GEN_RUNNING) r->end = state;
    if (error) fprintf(stderr, "request failed: %s\n", error);
}

static ss_gen_engine *engine_for(const model *m)
{
    ss_gen_options o = {.vocab = (int32_t)m->vocab, .sched = {(int32_t)m->blocks, 16, 256, 32, 64}};
    ss_gen_engine *e = NULL;
    CHECK_OK(ss_gen_engine_new(&o, &e));
    return e;
}

/* Runs the engine on the model until idle; false when a call failed. */
static bool drain(model *m, ss_gen_engine *e, int *calls, int *widest)
{
    ss_gen_call c;
    bool ok = true;
    while (ss_gen_next(e, &c)) {
        const float *logits = NULL;
        int64_t rows = 0;
        ss_status *st = run_call(m, &c, &logits, &rows);
        if (c.batch > *widest) *widest = (int)c.batch;
        (*calls)++;
        if (st)
            fprintf(stderr, "call of %lld x %lld: %s\n", (long long)c.batch, (long long)c.seq,
                    st->msg);
        ok = ok && !st;
        if (st)
            ss_gen_refused(e, st->msg); /* the runtime refused the call's inputs */
        else
            ss_gen_done(e, logits, rows, NULL);
        ss_status_free(st);
    }
    return ok;
}

static void greedy_equals_pytorch(void)
{
    model m;
    model_open(&m, 0);
    if (!m.s) return;
    ss_gen_engine *e = engine_for(&m);
    ss_gen_params p = {.sample = ss_sample_defaults(), .max_tokens = (int32_t)ref.dims[0]};
    p.sample.temperature = 0;
    result r = {0};
    uint64_t h;
    CHECK_OK(ss_gen_submit(e, prompt.data, (int32_t)prompt.dims[0], &p, on_token, &r, &h, NULL));
    int calls = 0, widest = 0;
    CHECK(drain(&m, e, &calls, &widest));
    CHECK(r.end == SS_GEN_LENGTH && r.n == ref.dims[0]);
    CHECK_MSG(!memcmp(r.tokens, ref.data, sizeof(int64_t) * (size_t)ref.dims[0]),
              "the engine's greedy tokens differ from PyTorch's");
    ss_gen_engine_free(e);
    ss_session_free(m.s);
}

/* Request i: a prompt of 1 + (5 i mod 19) tokens, 8 + i mod 25 new ones; odd ones sampled. */
static void request(int i, int64_t vocab, int64_t *toks, int32_t *n, ss_gen_params *p)
{
    *n = 1 + (5 * i) % 19;
    for (int32_t k = 0; k < *n; k++)
        toks[k] = (k < prompt.dims[0] ? ((int64_t *)prompt.data)[k] + i : 7 * k + i) % vocab;
    *p = (ss_gen_params){.sample = ss_sample_defaults(), .max_tokens = 8 + i % 25};
    p->sample.temperature = i % 2 ? 0.8f : 0.0f;
    p->sample.top_k = i % 4 == 1 ? 10 : 0;
    p->sample.top_p = i % 4 == 3 ? 0.9f : 1.0f;
    p->sample.seed = 1000u + (uint64_t)i;
}

static void submit(ss_gen_engine *e, int i, int64_t vocab, result *r)
{
    int64_t toks[32];
    int32_t n;
    ss_gen_params p;
    request(i, vocab, toks, &n, &p);
    memset(r, 0, sizeof *r);
    uint64_t h;
    CHECK_OK(ss_gen_submit(e, toks, n, &p, on_token, r, &h, NULL));
}

/* 32 requests at once, on a pool of kv_bytes (0: the default), equal each request alone. */
static void batched_equals_alone(size_t kv_bytes)
{
    enum { N = 32 };
    static result alone[N], together[N];
    model m;
    model_open(&m, 0);
    if (!m.s) return;
    int calls = 0, widest = 0;
    for (int i = 0; i < N; i++) {
        ss_gen_engine *e = engine_for(&m);
        submit(e, i, m.vocab, &alone[i]);
        CHECK(drain(&m, e, &calls, &widest));
        ss_gen_engine_free(e);
    }
    ss_session_free(m.s);
    model_open(&m, kv_bytes);
    ss_gen_engine *e = engine_for(&m);
    for (int i = 0; i < N; i++)
        submit(e, i, m.vocab, &together[i]);
    calls = widest = 0;
    CHECK(drain(&m, e, &calls, &widest));
    ss_sched_stats st = ss_gen_stats(e);
    int same = 0;
    for (int i = 0; i < N; i++) {
        int d = 0;
        while (d < together[i].n && d < alone[i].n && together[i].tokens[d] == alone[i].tokens[d])
            d++;
        bool eq = together[i].n == alone[i].n && d == alone[i].n && together[i].end == alone[i].end;
        CHECK_MSG(eq, "request %d: %d tokens batched, %d alone, first difference at %d", i,
                  together[i].n, alone[i].n, d);
        same += eq;
    }
    printf("    pool of %lld blocks: %d calls, widest batch %d, %llu preemptions, %d of %d equal\n",
           (long long)m.blocks, calls, widest, (unsigned long long)st.preempted, same, N);
    CHECK(widest > 8);
    if (kv_bytes) CHECK(st.preempted > 0);
    ss_gen_engine_free(e);
    ss_session_free(m.s);
}

static void batched_equals_alone_default_pool(void)
{
    batched_equals_alone(0);
}

/* About 12 blocks of 16 tokens for 32 requests of up to 51 tokens: preemption certain. */
static void batched_equals_alone_small_pool(void)
{
    model m;
    model_open(&m, 0); /* the default pool (64 MiB) tells the bytes of a block */
    if (!m.s) return;
    size_t block_bytes = ((size_t)64 << 20) / (size_t)m.blocks;
    ss_session_free(m.s);
    batched_equals_alone(block_bytes * 12 + block_bytes / 2);
}

int main(int argc, char **argv)
{
    test_argc = argc, test_argv = argv;
    if (argc != 4) return fprintf(stderr, "usage: %s PAGED.onnx PROMPT.npy REF.npy\n", argv[0]), 2;
    CHECK_OK(ss_npy_read(argv[2], &prompt));
    CHECK_OK(ss_npy_read(argv[3], &ref));
    if (check_failures) return 1;
    static const test_case cases[] = {TEST(greedy_equals_pytorch),
                                      TEST(batched_equals_alone_default_pool),
                                      TEST(batched_equals_alone_small_pool)};
    int rc = run_tests(cases, 3);
    ss_tensor_free(&prompt);
    ss_tensor_free(&ref);
    return rc;
}
