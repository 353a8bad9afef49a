/*
 * generate/sched: continuous batching over a paged KV pool — decodes before prefill chunks,
 * chunked prefill sampling only at the prompt's end, new sequences waiting for blocks, the
 * latest admitted preempted and recomputed, and a long random run whose every step is checked
 * against the invariants (no block held twice, every token computed in order, every sequence
 * finishing with exactly its tokens).
 */
#include "check.h"
#include "gen_sched.h"

static ss_sched *make(int32_t blocks, int32_t bs, int32_t step, int32_t running, int32_t seqs)
{
    ss_sched_options o = {blocks, bs, step, running, seqs};
    ss_sched *s = NULL;
    CHECK_OK(ss_sched_new(&o, &s));
    return s;
}

static int32_t add(ss_sched *s, int32_t prompt, int32_t max_new)
{
    int32_t seq = -1;
    CHECK_OK(ss_sched_add(s, prompt, max_new, &seq));
    return seq;
}

/* Runs a step: samples a token for every item that asks. Returns the item count. */
static int32_t run(ss_sched *s, ss_sched_item *it)
{
    int32_t n = 0;
    ss_sched_step(s, it, 64, &n);
    ss_sched_done(s, it, n);
    for (int32_t i = 0; i < n; i++)
        if (it[i].sample) ss_sched_append(s, it[i].seq);
    return n;
}

static void decodes_first_then_chunked_prefill(void)
{
    ss_sched *s = make(64, 4, 8, 8, 8);
    ss_sched_item it[64];
    int32_t a = add(s, 3, 10);
    CHECK(run(s, it) == 1 && it[0].seq == a && it[0].start == 0 && it[0].n == 3 && it[0].sample);
    int32_t b = add(s, 20, 10); /* 20 tokens with a budget of 8: chunks 7, 8, 5 (after a's 1) */
    int32_t n = run(s, it);
    CHECK(n == 2 && it[0].seq == a && it[0].n == 1 && it[0].start == 3 && it[0].sample);
    CHECK(it[1].seq == b && it[1].start == 0 && it[1].n == 7 && !it[1].sample);
    n = run(s, it);
    CHECK(n == 2 && it[0].seq == a && it[1].seq == b && it[1].start == 7 && it[1].n == 7);
    n = run(s, it);
    CHECK(n == 2 && it[1].seq == b && it[1].start == 14 && it[1].n == 6 && it[1].sample);
    CHECK(ss_sched_tokens(s, b) == 21 && ss_sched_cached(s, b) == 20);
    n = run(s, it); /* both decode now */
    CHECK(n == 2 && it[0].n == 1 && it[1].n == 1 && it[0].sample && it[1].sample);
    int32_t nb = 0;
    ss_sched_blocks(s, b, &nb);
    CHECK(nb == 6); /* 21 cached tokens in blocks of 4 */
    ss_sched_free(s);
}

static void new_sequences_wait_for_blocks(void)
{
    ss_sched *s = make(4, 4, 64, 8, 8); /* 16 tokens in all */
    ss_sched_item it[64];
    int32_t a = add(s, 12, 4), b = add(s, 8, 0);
    CHECK(run(s, it) == 1 && it[0].seq == a); /* b's 2 blocks are not free */
    ss_sched_stats st = ss_sched_get_stats(s);
    CHECK(st.running == 1 && st.waiting == 1 && st.blocks_used == 3 && st.blocks_free == 1);
    ss_sched_remove(s, a); /* finished: its blocks go back */
    CHECK(run(s, it) == 1 && it[0].seq == b && it[0].n == 8);
    st = ss_sched_get_stats(s);
    CHECK(st.running == 1 && st.waiting == 0 && st.blocks_used == 2);
    int32_t seq = 0;
    CHECK_ERR(ss_sched_add(s, 10, 7, &seq), "the pool has 4");
    ss_sched_free(s);
}

static void the_latest_admitted_is_preempted_and_recomputed(void)
{
    ss_sched *s = make(4, 2, 64, 8, 8); /* 8 tokens in all */
    ss_sched_item it[64];
    int32_t a = add(s, 3, 4), b = add(s, 3, 4); /* 2 blocks each once prefilled */
    CHECK(run(s, it) == 2);                     /* both prefilled and sampled: 4 tokens each */
    CHECK(run(s, it) == 2);                     /* the 4th token of each fits its 2 blocks */
    /* a's 5th token needs a third block: b (admitted later) is preempted */
    int32_t n = run(s, it);
    CHECK(n == 1 && it[0].seq == a && it[0].start == 4);
    ss_sched_stats st = ss_sched_get_stats(s);
    CHECK(st.preempted == 1 && st.running == 1 && st.waiting == 1);
    int32_t gone[8];
    CHECK(ss_sched_take_preempted(s, gone, 8) == 1 && gone[0] == b);
    CHECK(ss_sched_take_preempted(s, gone, 8) == 0);
    CHECK(ss_sched_cached(s, b) == 0 && ss_sched_tokens(s, b) == 5);
    ss_sched_remove(s, a);
    n = run(s, it); /* b returns: all 5 of its tokens again, sampling its 6th */
    CHECK(n == 1 && it[0].seq == b && it[0].start == 0 && it[0].n == 5 && it[0].sample);
    ss_sched_free(s);
}

/* A long random workload: arrivals, different lengths, cancellations, a tight pool. */
static void random_run_keeps_the_invariants(void)
{
    enum { SEQS = 12, BLOCKS = 24, BS = 4 };
    ss_sched *s = make(BLOCKS, BS, 16, 6, SEQS);
    ss_sched_item it[64];
    int32_t want[SEQS], made = 0, finished = 0, cancelled = 0;
    unsigned rnd = 12345;
    for (int step = 0; step < 5000 && finished + cancelled < 60; step++) {
        rnd = rnd * 1103515245u + 12345u;
        if (made < 60 && (rnd >> 16) % 3 == 0) {
            int32_t prompt = 1 + (int32_t)((rnd >> 8) % 30), more = 1 + (int32_t)((rnd >> 4) % 40);
            int32_t seq = -1;
            ss_status *st = ss_sched_add(s, prompt, more, &seq); /* full: tried again later */
            if (!st) {
                want[seq] = prompt + more;
                made++;
            }
            ss_status_free(st);
        }
        int32_t n = 0;
        ss_sched_step(s, it, 64, &n);
        bool owner[BLOCKS] = {false};
        int32_t tokens = 0;
        for (int32_t i = 0; i < n; i++) {
            int32_t nb = 0;
            const int32_t *b = ss_sched_blocks(s, it[i].seq, &nb);
            CHECK(it[i].start == ss_sched_cached(s, it[i].seq)); /* in order, none skipped */
            CHECK(nb * BS >= it[i].start + it[i].n);             /* room for what it writes */
            for (int32_t k = 0; k < nb; k++) {
                CHECK(b[k] >= 0 && b[k] < BLOCKS && !owner[b[k]]);
                owner[b[k]] = true;
            }
            tokens += it[i].n;
        }
        CHECK(tokens <= 16);
        ss_sched_stats st = ss_sched_get_stats(s);
        CHECK(st.blocks_used + st.blocks_free == BLOCKS && st.running <= 6);
        ss_sched_done(s, it, n);
        for (int32_t i = 0; i < n; i++) {
            int32_t q = it[i].seq;
            if (!it[i].sample) continue;
            ss_sched_append(s, q);
            if (ss_sched_tokens(s, q) == want[q]) {
                ss_sched_remove(s, q);
                finished++;
            } else if ((rnd >> 20) % 97 == 0) {
                ss_sched_remove(s, q); /* the client went away */
                cancelled++;
            }
        }
    }
    ss_sched_stats st = ss_sched_get_stats(s);
    CHECK_MSG(finished + cancelled == made && made == 60, "made %d, finished %d, cancelled %d",
              made, finished, cancelled);
    CHECK(st.blocks_used == 0 && st.running == 0 && st.waiting == 0);
    CHECK_MSG(st.preempted > 0, "the pool never ran out: the run does not test preemption");
    printf("    60 sequences, %llu preemptions\n", (unsigned long long)st.preempted);
    ss_sched_free(s);
}

static void bad_options_are_refused(void)
{
    ss_sched_options o = {0, 16, 64, 4, 4};
    ss_sched *s = NULL;
    CHECK_ERR(ss_sched_new(&o, &s), "blocks 0");
    o = (ss_sched_options){8, 16, 64, 4, 2};
    CHECK_ERR(ss_sched_new(&o, &s), "sequences >= running");
    s = make(8, 4, 64, 1, 1);
    int32_t seq;
    CHECK_OK(ss_sched_add(s, 1, 1, &seq));
    CHECK_ERR(ss_sched_add(s, 1, 1, &seq), "generate.max_sequences");
    CHECK_ERR(ss_sched_add(s, 0, 1, &seq), "prompt of 0");
    ss_sched_free(s);
}

TEST_MAIN(TEST(decodes_first_then_chunked_prefill), TEST(new_sequences_wait_for_blocks),
          TEST(the_latest_admitted_is_preempted_and_recomputed),
          TEST(random_run_keeps_the_invariants), TEST(bad_options_are_refused))
