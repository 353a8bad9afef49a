/*
 * generate/engine against a strict fake model with a KV cache of its own: the fake keeps every
 * pool sequence's tokens, refuses a call that writes out of order, uses an id it never created
 * or creates one twice, and returns logits that depend on the whole cached history (so a token
 * missing or duplicated after a preemption changes the output). Checked: 32 concurrent requests
 * with different prompt lengths each equal their own run alone (greedy and seeded sampling),
 * also with a pool so small that sequences are preempted and recomputed; stop ids and
 * max_tokens end requests; cancellation and a failed call end theirs and free their pool
 * sequences; a lost pool fails what it held and serves the rest; bad requests are refused naming
 * the input. The fake answers with a row of logits per row, or (compact) only the call's
 * logit_rows, which must each be the last row of a sequence in the call; both give the same tokens.
 */
#include "check.h"
#include "gen_engine.h"

#include <stdlib.h>
#include <string.h>

#define VOCAB 97
#define MAX_POOL 4096

/* ------------------------------------------------------------------ the fake model */

typedef struct {
    bool live;
    int64_t tokens[512];
    int32_t n;
} fake_seq;

static fake_seq pool[MAX_POOL];
static int64_t calls, rows_in_calls, max_batch;
static bool compact; /* the fake returns only the logit_rows' logits, as `shard --kv-pool` makes */
/* positions the fake's table has (a learned position embedding): a call with a row past it
 * fails as a whole, before it changes anything, as a Gather out of range does */
static int64_t pos_limit = 1 << 30;

static uint64_t history_hash(const fake_seq *s, int32_t upto)
{
    uint64_t h = 1469598103934665603ull;
    for (int32_t i = 0; i < upto; i++)
        h = (h ^ (uint64_t)s->tokens[i]) * 1099511628211ull;
    return h;
}

/* Keeps only the call's logit_rows' logits, in order, after checking each is the last row of its
 * sequence in the call; NULL or the error. */
static const char *compact_rows(const ss_gen_call *c, float *logits)
{
    if (c->n_logit_rows < 1 || c->n_logit_rows > c->batch) return "logit_rows: a bad count";
    for (int32_t i = 0; i < c->n_logit_rows; i++) {
        int64_t r = c->logit_rows[i];
        if (r < 0 || r >= c->batch || (i && r <= c->logit_rows[i - 1]))
            return "logit_rows: out of range or out of order";
        if (r + 1 < c->batch && c->seq_ids[r + 1] == c->seq_ids[r])
            return "logit_rows: a row that is not its sequence's last";
        memmove(logits + i * c->seq * VOCAB, logits + r * c->seq * VOCAB,
                sizeof(float) * (size_t)(c->seq * VOCAB));
    }
    return NULL;
}

/* Runs one call; NULL or the error. logits [batch, seq, VOCAB], or [n_logit_rows, seq, VOCAB]
 * when compact. */
static const char *fake_run(const ss_gen_call *c, float *logits)
{
    calls++;
    rows_in_calls += c->batch;
    for (int64_t r = 0; r < c->batch * c->seq; r++)
        if (c->positions[r] >= pos_limit) return "position out of range of the table";
    if (c->batch > max_batch) max_batch = c->batch;
    for (int32_t i = 0; i < c->n_release; i++) {
        if (c->release[i] < 0 || c->release[i] >= MAX_POOL || !pool[c->release[i]].live)
            return "release of an unknown sequence";
        pool[c->release[i]].live = false;
    }
    for (int32_t i = 0; i < c->n_create; i++) {
        if (c->create[i] < 0 || c->create[i] >= MAX_POOL || pool[c->create[i]].live)
            return "create of an existing sequence";
        pool[c->create[i]] = (fake_seq){.live = true};
    }
    for (int64_t r = 0; r < c->batch; r++) {
        int64_t id = c->seq_ids[r];
        if (id < 0 || id >= MAX_POOL || !pool[id].live) return "unknown sequence";
        fake_seq *s = &pool[id];
        for (int64_t k = 0; k < c->seq; k++) {
            if (c->positions[r * c->seq + k] != s->n) return "a position out of order";
            s->tokens[s->n++] = c->input_ids[r * c->seq + k];
            uint64_t h = history_hash(s, s->n);
            float *row = logits + (r * c->seq + k) * VOCAB;
            for (int v = 0; v < VOCAB; v++)
                row[v] = (float)((h >> (v % 50)) % 1000) / 250.0f; /* 0..4: sampling matters */
        }
    }
    return compact && c->batch ? compact_rows(c, logits) : NULL;
}

/* The rows of logits fake_run returned for c. */
static int64_t fake_rows(const ss_gen_call *c)
{
    return compact ? c->n_logit_rows : c->batch;
}

static int live_pool_sequences(void)
{
    int n = 0;
    for (int i = 0; i < MAX_POOL; i++)
        n += pool[i].live;
    return n;
}

/* ------------------------------------------------------------------ requests */

typedef struct {
    int64_t tokens[128];
    int32_t n;
    ss_gen_state end;
    bool ended;
    char error[128];
} result;

static void on_token(void *ctx, int64_t token, ss_gen_state state, const char *error)
{
    result *r = ctx;
    CHECK(!r->ended);
    if (token >= 0) r->tokens[r->n++] = token;
    if (state != SS_GEN_RUNNING) {
        r->ended = true;
        r->end = state;
        snprintf(r->error, sizeof r->error, "%s", error ? error : "");
    }
}

/* A fresh engine talks to a fresh pool (a new agent group). */
static ss_gen_engine *engine(int32_t blocks, int32_t block_size, int32_t step, int32_t running)
{
    memset(pool, 0, sizeof pool);
    ss_gen_options o = {.vocab = VOCAB, .sched = {blocks, block_size, step, running, 64}};
    ss_gen_engine *e = NULL;
    CHECK_OK(ss_gen_engine_new(&o, &e));
    return e;
}

/* Runs the engine until idle; returns the calls made. */
static int64_t drain(ss_gen_engine *e)
{
    static float logits[256 * 64 * VOCAB];
    int64_t before = calls;
    ss_gen_call c;
    while (ss_gen_next(e, &c)) {
        CHECK(c.batch * c.seq <= 256 * 64);
        const char *err = fake_run(&c, logits);
        CHECK_MSG(!err, "%s", err);
        ss_gen_done(e, err ? NULL : logits, fake_rows(&c), err);
    }
    return calls - before;
}

static void prompt_of(int i, int64_t *p, int32_t *n)
{
    *n = 1 + (i * 7) % 23;
    for (int32_t k = 0; k < *n; k++)
        p[k] = (i * 31 + k * 5) % VOCAB;
}

static ss_gen_params params(int i, bool sampled)
{
    ss_gen_params p = {.sample = ss_sample_defaults(), .max_tokens = 20 + i % 17};
    p.sample.temperature = sampled ? 0.9f : 0.0f;
    p.sample.top_k = sampled ? 20 : 0;
    p.sample.top_p = sampled ? 0.95f : 1.0f;
    p.sample.repetition_penalty = sampled ? 1.1f : 1.0f;
    p.sample.seed = (uint64_t)i * 977;
    return p;
}

static uint64_t submit(ss_gen_engine *e, int i, bool sampled, result *r)
{
    int64_t prompt[64];
    int32_t n;
    prompt_of(i, prompt, &n);
    ss_gen_params p = params(i, sampled);
    uint64_t h = 0;
    memset(r, 0, sizeof *r);
    CHECK_OK(ss_gen_submit(e, prompt, n, &p, on_token, r, &h, NULL));
    return h;
}

/* 32 requests at once equal each one alone; blocks: the pool (small ones force preemption). */
static void concurrent_equals_alone(bool sampled, int32_t blocks)
{
    enum { N = 32 };
    static result alone[N], together[N];
    for (int i = 0; i < N; i++) {
        ss_gen_engine *e = engine(512, 4, 64, 16);
        submit(e, i, sampled, &alone[i]);
        drain(e);
        CHECK(alone[i].ended && alone[i].end == SS_GEN_LENGTH && alone[i].n == 20 + i % 17);
        ss_gen_engine_free(e);
    }
    ss_gen_engine *e = engine(blocks, 4, 64, 16);
    int64_t batch_before = max_batch;
    max_batch = 0;
    for (int i = 0; i < N; i++)
        submit(e, i, sampled, &together[i]);
    int64_t n_calls = drain(e);
    ss_sched_stats st = ss_gen_stats(e);
    for (int i = 0; i < N; i++) {
        CHECK(together[i].ended && together[i].end == alone[i].end);
        CHECK_MSG(together[i].n == alone[i].n && !memcmp(together[i].tokens, alone[i].tokens,
                                                         sizeof(int64_t) * (size_t)alone[i].n),
                  "request %d differs when batched", i);
    }
    CHECK(max_batch > 1); /* decodes were batched */
    CHECK(st.blocks_used == 0 && st.running == 0 && st.waiting == 0);
    CHECK_MSG(live_pool_sequences() == 0, "%d pool sequences left", live_pool_sequences());
    printf("    %s, %d blocks: %lld calls, largest batch %lld, %llu preemptions\n",
           sampled ? "sampled" : "greedy", blocks, (long long)n_calls, (long long)max_batch,
           (unsigned long long)st.preempted);
    if (blocks < 100) CHECK(st.preempted > 0);
    max_batch = batch_before > max_batch ? batch_before : max_batch;
    ss_gen_engine_free(e);
}

static void greedy_32_streams_equal_their_single_runs(void)
{
    concurrent_equals_alone(false, 512);
}

static void sampled_32_streams_equal_their_single_runs(void)
{
    concurrent_equals_alone(true, 512);
}

static void preemption_changes_nothing(void)
{
    concurrent_equals_alone(true, 40); /* 160 tokens for 32 requests of up to 59 */
}

static void stop_ids_and_cancellation(void)
{
    result a, b;
    ss_gen_engine *e = engine(64, 4, 64, 8);
    submit(e, 3, false, &a);
    drain(e);
    /* the same request with its 5th token as a stop id ends there, that token included */
    result c;
    memset(&c, 0, sizeof c);
    int64_t prompt[64];
    int32_t n;
    prompt_of(3, prompt, &n);
    ss_gen_params p = params(3, false);
    p.stop_ids = &a.tokens[4];
    p.n_stop_ids = 1;
    uint64_t h;
    CHECK_OK(ss_gen_submit(e, prompt, n, &p, on_token, &c, &h, NULL));
    drain(e);
    int32_t first = 0;
    while (a.tokens[first] != a.tokens[4])
        first++;
    CHECK(c.ended && c.end == SS_GEN_STOP && c.n == first + 1);
    /* cancelled after its prefill: ends CANCELLED, its pool sequence freed by the next call */
    uint64_t hb = submit(e, 5, false, &b);
    ss_gen_call call;
    static float logits[64 * VOCAB];
    CHECK(ss_gen_next(e, &call));
    CHECK(!fake_run(&call, logits));
    ss_gen_done(e, logits, fake_rows(&call), NULL);
    CHECK(b.n == 1 && !b.ended);
    int live = live_pool_sequences();
    ss_gen_cancel(e, hb);
    submit(e, 6, false, &a);
    drain(e);
    CHECK(b.ended && b.end == SS_GEN_CANCELLED && b.n == 1);
    CHECK(a.ended && a.end == SS_GEN_LENGTH);
    CHECK_MSG(live_pool_sequences() == 0, "%d pool sequences left (%d before b was cancelled)",
              live_pool_sequences(), live);
    ss_gen_engine_free(e);
}

/* A step is one call of one-token rows: a running sequence's decode and a new prompt's tokens,
 * in position order, together (one pass over the weights for both). */
static void decodes_and_prompts_share_a_call(void)
{
    result a, b;
    ss_gen_engine *e = engine(64, 4, 64, 8);
    submit(e, 1, false, &a);
    ss_gen_call c;
    static float logits[64 * VOCAB];
    CHECK(ss_gen_next(e, &c) && !fake_run(&c, logits)); /* a's prompt */
    ss_gen_done(e, logits, fake_rows(&c), NULL);
    CHECK(a.n == 1);
    submit(e, 2, false, &b);
    int64_t prompt[64];
    int32_t n;
    prompt_of(2, prompt, &n);
    CHECK(ss_gen_next(e, &c));
    CHECK_MSG(c.seq == 1 && c.batch == 1 + n, "a call of [%lld, %lld], want [%d, 1]",
              (long long)c.batch, (long long)c.seq, 1 + n);
    CHECK(c.seq_ids[0] != c.seq_ids[1]); /* a's decode, then b's prompt */
    CHECK(c.n_logit_rows == 2 && c.logit_rows[0] == 0 && c.logit_rows[1] == n); /* each's last */
    for (int32_t k = 0; k < n; k++)
        CHECK(c.seq_ids[1 + k] == c.seq_ids[1] && c.positions[1 + k] == k &&
              c.input_ids[1 + k] == prompt[k]);
    CHECK(!fake_run(&c, logits));
    ss_gen_done(e, logits, fake_rows(&c), NULL);
    CHECK(a.n == 2 && b.n == 1); /* each sampled from its last row */
    drain(e);
    CHECK(a.ended && b.ended && live_pool_sequences() == 0);
    ss_gen_engine_free(e);
}

static void a_failed_call_fails_its_requests(void)
{
    result a, b;
    ss_gen_engine *e = engine(64, 4, 64, 8);
    submit(e, 1, false, &a);
    ss_gen_call c;
    static float logits[64 * VOCAB];
    CHECK(ss_gen_next(e, &c)); /* a's prefill alone: b comes after it was planned */
    CHECK(c.batch >= 1 && !fake_run(&c, logits));
    submit(e, 2, false, &b);
    ss_gen_done(e, NULL, 0, "rank 3: out of memory");
    drain(e);
    CHECK(a.ended && a.end == SS_GEN_FAILED && strstr(a.error, "rank 3: out of memory"));
    CHECK(b.ended && b.end == SS_GEN_LENGTH);
    CHECK(ss_gen_active(e) == 0 && live_pool_sequences() == 0);
    ss_gen_engine_free(e);
}

/* A call of several sequences that the group failed (a rank lost: not the model's refusal of an
 * input) fails every request in it at once with that error: none is tried again alone, where the
 * next call would meet the broken group and fail with a later, less telling error. */
static void a_failed_group_fails_the_whole_call(void)
{
    enum { N = 3 };
    static result r[N];
    ss_gen_engine *e = engine(64, 4, 64, 8);
    for (int i = 0; i < N; i++)
        submit(e, i, false, &r[i]);
    ss_gen_call c;
    static float logits[64 * 64 * VOCAB];
    CHECK(ss_gen_next(e, &c) && !fake_run(&c, logits));
    int held = 0;
    for (int64_t k = 0; k < c.batch; k++)
        held += !k || c.seq_ids[k] != c.seq_ids[k - 1]; /* a sequence's rows are adjacent */
    CHECK_MSG(held == N, "the first call holds %d of the %d requests", held, N);
    ss_gen_done(e, NULL, 0, "worker unavailable: rank 1 (pid 42) is gone");
    int64_t rows = rows_in_calls;
    drain(e); /* a call that only frees their pool sequences */
    CHECK_MSG(rows_in_calls == rows, "%lld rows were run after the group failed",
              (long long)(rows_in_calls - rows));
    for (int i = 0; i < N; i++)
        CHECK_MSG(r[i].ended && r[i].end == SS_GEN_FAILED && strstr(r[i].error, "pid 42"),
                  "request %d: ended %d (%d), %s", i, r[i].ended, r[i].end, r[i].error);
    CHECK(ss_gen_active(e) == 0 && live_pool_sequences() == 0);
    ss_gen_engine_free(e);
}

/* A call of several sequences that fails (one of them is past the model's position table) fails
 * only that sequence: the others run alone until each call of their own succeeds, and end as
 * they would have alone. */
static void a_refused_sequence_fails_alone(void)
{
    enum { N = 6 };
    static result alone[N], together[N], bad;
    pos_limit = 60; /* every request i < N stays below it (at most 23 + 36 positions) */
    for (int i = 0; i < N; i++) {
        ss_gen_engine *e = engine(512, 4, 64, 16);
        submit(e, i, true, &alone[i]);
        drain(e);
        ss_gen_engine_free(e);
    }
    ss_gen_engine *e = engine(512, 4, 64, 16);
    for (int i = 0; i < N; i++)
        submit(e, i, true, &together[i]);
    int64_t prompt[50];
    for (int k = 0; k < 50; k++)
        prompt[k] = (k * 11) % VOCAB;
    ss_gen_params p = params(0, true);
    p.max_tokens = 40; /* its 11th token goes in at position 60, while the others decode */
    uint64_t h = 0;
    memset(&bad, 0, sizeof bad);
    CHECK_OK(ss_gen_submit(e, prompt, 50, &p, on_token, &bad, &h, NULL));
    static float logits[256 * 64 * VOCAB];
    ss_gen_call c;
    int failed_calls = 0;
    while (ss_gen_next(e, &c)) {
        const char *err = fake_run(&c, logits);
        failed_calls += err != NULL;
        if (err)
            ss_gen_refused(e, err);
        else
            ss_gen_done(e, logits, fake_rows(&c), NULL);
    }
    pos_limit = 1 << 30;
    CHECK(bad.ended && bad.end == SS_GEN_FAILED && strstr(bad.error, "position out of range"));
    CHECK_MSG(bad.n == 11, "the refused request ended after %d tokens", bad.n);
    for (int i = 0; i < N; i++)
        CHECK_MSG(
            together[i].ended && together[i].end == alone[i].end && together[i].n == alone[i].n &&
                !memcmp(together[i].tokens, alone[i].tokens, sizeof(int64_t) * (size_t)alone[i].n),
            "request %d differs from its run alone (%d tokens, ended %d)", i, together[i].n,
            together[i].end);
    CHECK(failed_calls >= 2); /* the batch, then the sequence alone */
    CHECK(ss_gen_active(e) == 0 && live_pool_sequences() == 0);
    printf("    %d failed calls; the other %d requests equal their runs alone\n", failed_calls, N);
    ss_gen_engine_free(e);
}

static void a_lost_pool_fails_what_it_held(void)
{
    result r[4];
    ss_gen_engine *e = engine(64, 4, 8, 2); /* two run, two wait */
    for (int i = 0; i < 4; i++)
        submit(e, 10 + i, false, &r[i]);
    ss_gen_call c;
    static float logits[64 * VOCAB];
    for (int k = 0; k < 3 && ss_gen_next(e, &c); k++) {
        CHECK(!fake_run(&c, logits));
        ss_gen_done(e, logits, fake_rows(&c), NULL);
    }
    memset(pool, 0, sizeof pool); /* the agents restarted */
    ss_gen_pool_lost(e, "rank 1 died: killed by signal 9");
    int failed = 0;
    for (int i = 0; i < 4; i++)
        failed += r[i].ended && r[i].end == SS_GEN_FAILED && strstr(r[i].error, "signal 9");
    CHECK_MSG(failed == 2, "%d failed", failed);
    drain(e); /* the queued two run on the new pool */
    for (int i = 0; i < 4; i++)
        CHECK(r[i].ended && (r[i].end == SS_GEN_FAILED || r[i].end == SS_GEN_LENGTH));
    CHECK(ss_gen_active(e) == 0 && live_pool_sequences() == 0);
    ss_gen_engine_free(e);
}

/* A model that returns only the sampled rows' logits (logit_rows) gives every request the same
 * tokens as one that returns a row per row, also batched with preemption; a call answered with
 * another number of rows fails its requests, naming the counts. */
static void logit_rows_change_nothing(void)
{
    enum { N = 8 };
    static result every[N], only[N];
    for (int pass = 0; pass < 2; pass++) {
        compact = pass == 1;
        ss_gen_engine *e = engine(40, 4, 64, 16);
        for (int i = 0; i < N; i++)
            submit(e, i, true, pass ? &only[i] : &every[i]);
        drain(e);
        ss_gen_engine_free(e);
    }
    for (int i = 0; i < N; i++)
        CHECK_MSG(
            only[i].ended && only[i].end == every[i].end && only[i].n == every[i].n &&
                !memcmp(only[i].tokens, every[i].tokens, sizeof(int64_t) * (size_t)every[i].n),
            "request %d differs with logit_rows", i);
    compact = true;
    concurrent_equals_alone(true, 40);
    compact = false;
    result a;
    ss_gen_engine *e = engine(64, 4, 64, 8);
    submit(e, 1, false, &a);
    ss_gen_call c;
    static float logits[64 * VOCAB];
    CHECK(ss_gen_next(e, &c) && !fake_run(&c, logits));
    CHECK(c.n_logit_rows == 1 && c.logit_rows[0] == c.batch - 1);
    ss_gen_done(e, logits, c.batch + 1, NULL);
    CHECK_MSG(a.ended && a.end == SS_GEN_FAILED && strstr(a.error, "rows of logits"), "%s",
              a.error);
    CHECK(ss_gen_active(e) == 0);
    ss_gen_engine_free(e);
}

static void bad_requests_are_refused(void)
{
    ss_gen_engine *e = engine(8, 4, 64, 8);
    ss_gen_params p = params(0, false);
    uint64_t h;
    int64_t prompt[3] = {1, VOCAB, 2};
    const char *param = NULL;
    CHECK_ERR(ss_gen_submit(e, prompt, 3, &p, on_token, NULL, &h, &param), "prompt token 1");
    CHECK(param && !strcmp(param, "prompt"));
    CHECK_ERR(ss_gen_submit(e, prompt, 0, &p, on_token, NULL, &h, &param), "no tokens");
    CHECK(param && !strcmp(param, "prompt"));
    p.max_tokens = 0;
    CHECK_ERR(ss_gen_submit(e, prompt, 1, &p, on_token, NULL, &h, &param), "max_tokens");
    CHECK(param && !strcmp(param, "max_tokens"));
    p.max_tokens = 40; /* 41 tokens: 11 blocks of 4, the pool has 8 */
    CHECK_ERR(ss_gen_submit(e, prompt, 1, &p, on_token, NULL, &h, &param), "the pool has 8");
    CHECK(param == NULL); /* the request as a whole, no one input */
    p.max_tokens = 4;
    p.sample.top_p = 2;
    CHECK_ERR(ss_gen_submit(e, prompt, 1, &p, on_token, NULL, &h, NULL), "top_p");
    CHECK_ERR(ss_gen_submit(e, prompt, 1, &p, on_token, NULL, &h, &param), "top_p");
    CHECK(param && !strcmp(param, "top_p"));
    CHECK(ss_gen_active(e) == 0);
    ss_gen_engine_free(e);
}

TEST_MAIN(TEST(greedy_32_streams_equal_their_single_runs),
          TEST(sampled_32_streams_equal_their_single_runs), TEST(preemption_changes_nothing),
          TEST(stop_ids_and_cancellation), TEST(decodes_and_prompts_share_a_call),
          TEST(a_failed_call_fails_its_requests), TEST(a_refused_sequence_fails_alone),
          TEST(a_failed_group_fails_the_whole_call), TEST(a_lost_pool_fails_what_it_held),
          TEST(logit_rows_change_nothing), TEST(bad_requests_are_refused))
