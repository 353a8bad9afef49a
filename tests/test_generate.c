/*
 * generate: sampling against the reference definitions (HF logits processors, vLLM, OpenAI) on
 * small hand-checked vocabularies, the seeded draw against its distribution, and stop strings
 * over streamed text.
 */
#include "check.h"
#include "gen_sample.h"
#include "gen_stop.h"

#include <math.h>
#include <string.h>

#define V 6

static ss_sampler *sampler(size_t vocab)
{
    ss_sampler *s = NULL;
    CHECK_OK(ss_sampler_new(vocab, &s));
    return s;
}

/* The ids left finite after the processors, as a bit mask (the draw is then skipped by giving
 * temperature 1 and reading the logits back). */
static unsigned kept(const ss_sample_params *p, const float *z0)
{
    float z[V];
    memcpy(z, z0, sizeof z);
    ss_sampler *s = sampler(V);
    ss_rng rng;
    ss_rng_seed(&rng, 1);
    ss_sample_next(s, p, &rng, z, NULL, 0, NULL, 0);
    ss_sampler_free(s);
    unsigned mask = 0;
    for (int i = 0; i < V; i++)
        if (!isinf(z[i])) mask |= 1u << i;
    return mask;
}

static void greedy_takes_the_first_maximum(void)
{
    float z[V] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, 0.0f};
    ss_sample_params p = ss_sample_defaults();
    p.temperature = 0;
    ss_sampler *s = sampler(V);
    ss_rng rng;
    ss_rng_seed(&rng, 7);
    CHECK(ss_sample_next(s, &p, &rng, z, NULL, 0, NULL, 0) == 1);
    ss_sampler_free(s);
}

/* Greedy without penalties reads the logits in place (ss_sample_greedy, the token loop's fast
 * path): the same first maximum as ss_sample_next wherever it sits in the 64-wide runs it
 * compares at once (first, inside, across a tie with a later run, the very last id); -1 when the
 * parameters ask for more than an argmax. */
static void greedy_in_place_takes_the_first_maximum(void)
{
    enum { N = 50257 };
    static float z[N], copy[N];
    static const size_t at[][2] = {{0, 9},     {63, 64},       {64, 5000},
                                   {130, 131}, {N - 1, N - 1}, {40000, N - 1}};
    ss_sampler *s = sampler(N);
    ss_sample_params p = ss_sample_defaults();
    p.temperature = 0;
    for (size_t c = 0; c < sizeof at / sizeof at[0]; c++) {
        for (size_t i = 0; i < N; i++)
            z[i] = (float)((i * 7919) % 1000) / 1000.0f;
        z[at[c][0]] = z[at[c][1]] = 3.0f; /* two equal maxima: the first wins */
        memcpy(copy, z, sizeof z);
        int32_t fast = ss_sample_greedy(s, &p, z);
        CHECK_MSG(fast == (int32_t)at[c][0], "case %zu: %d, want %zu", c, fast, at[c][0]);
        CHECK(!memcmp(copy, z, sizeof z)); /* read only */
        ss_rng rng;
        ss_rng_seed(&rng, 1);
        CHECK(ss_sample_next(s, &p, &rng, z, NULL, 0, NULL, 0) == fast);
    }
    p.repetition_penalty = 1.1f;
    CHECK(ss_sample_greedy(s, &p, z) == -1);
    p = ss_sample_defaults();
    p.temperature = 0.5f;
    CHECK(ss_sample_greedy(s, &p, z) == -1);
    ss_sampler_free(s);
}

static void top_k_keeps_ties_with_the_kth(void)
{
    float z[V] = {3, 1, 2, 2, 0, -1};
    ss_sample_params p = ss_sample_defaults();
    p.top_k = 2;
    CHECK(kept(&p, z) == 0x0d); /* 3 and both 2s (HF: scores < kth value go) */
    p.top_k = 1;
    CHECK(kept(&p, z) == 0x01);
    p.top_k = 6;
    CHECK(kept(&p, z) == 0x3f);
}

static void top_p_keeps_the_smallest_set_with_mass_p(void)
{
    /* probabilities 0.5, 0.3, 0.15, 0.05, 0, 0: ascending cumulative 0.05 0.2 0.5 1.0 */
    float z[V] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f), -INFINITY, -INFINITY};
    ss_sample_params p = ss_sample_defaults();
    p.top_p = 0.78f; /* cumulative <= 0.22 goes: 0.05 and 0.15 */
    CHECK_MSG(kept(&p, z) == 0x03, "mask %#x", kept(&p, z));
    p.top_p = 0.75f; /* <= 0.25 goes: the same two */
    CHECK(kept(&p, z) == 0x03);
    p.top_p = 0.9f; /* <= 0.1 goes: 0.05 only */
    CHECK(kept(&p, z) == 0x07);
    p.top_p = 0.1f; /* the likeliest always stays */
    CHECK(kept(&p, z) == 0x01);
}

static void top_p_over_a_large_vocabulary(void)
{
    /* 50,000 ids: the pre-filter must drop exactly what a full sort drops */
    enum { N = 50000 };
    static float z[N], zc[N];
    ss_rng rng;
    ss_rng_seed(&rng, 3);
    for (int i = 0; i < N; i++)
        z[i] = (float)(ss_rng_uniform(&rng) * 12.0);
    memcpy(zc, z, sizeof z);
    ss_sample_params p = ss_sample_defaults();
    p.top_p = 0.9f;
    ss_sampler *s = sampler(N);
    ss_sample_next(s, &p, &rng, zc, NULL, 0, NULL, 0);
    /* the reference: probabilities, kept = the smallest descending prefix with mass >= p */
    double m = 0, sum = 0;
    for (int i = 0; i < N; i++)
        m = z[i] > m ? z[i] : m;
    static double pr[N];
    for (int i = 0; i < N; i++)
        sum += pr[i] = exp(z[i] - m);
    double kept_mass = 0, dropped_mass = 0, min_kept = 1, max_dropped = 0;
    for (int i = 0; i < N; i++) {
        double q = pr[i] / sum;
        if (isinf(zc[i])) {
            dropped_mass += q;
            if (q > max_dropped) max_dropped = q;
        } else {
            kept_mass += q;
            if (q < min_kept) min_kept = q;
        }
    }
    CHECK_MSG(dropped_mass <= 0.1 + 1e-6, "dropped %g", dropped_mass);
    CHECK_MSG(dropped_mass + min_kept > 0.1 - 1e-6, "could drop more: %g + %g", dropped_mass,
              min_kept);
    CHECK_MSG(max_dropped <= min_kept, "dropped %g above kept %g", max_dropped, min_kept);
    CHECK(kept_mass >= 0.9 - 1e-6);
    ss_sampler_free(s);
}

static int descending(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

static void top_k_over_a_large_vocabulary(void)
{
    /* 50,000 ids with many ties (values on a grid of 64): a small k takes the heap, a large one
     * the quickselect; both keep exactly the ids >= the k-th largest of a full sort */
    enum { N = 50000 };
    static float z[N], zc[N], sorted[N];
    ss_rng rng;
    ss_rng_seed(&rng, 5);
    for (int i = 0; i < N; i++)
        z[i] = (float)(ss_rng_next(&rng) % 64) / 8.0f;
    memcpy(sorted, z, sizeof z);
    qsort(sorted, N, sizeof *sorted, descending);
    ss_sampler *s = sampler(N);
    const int ks[] = {1, 50, 700, 3125, 3126, 40000};
    for (size_t t = 0; t < sizeof ks / sizeof *ks; t++) {
        memcpy(zc, z, sizeof z);
        ss_sample_params p = ss_sample_defaults();
        p.top_k = ks[t];
        ss_sample_next(s, &p, &rng, zc, NULL, 0, NULL, 0);
        float kth = sorted[ks[t] - 1];
        int wrong = 0;
        for (int i = 0; i < N; i++)
            wrong += (isinf(zc[i]) != 0) != (z[i] < kth);
        CHECK_MSG(wrong == 0, "top_k %d: %d ids kept or dropped against the sort", ks[t], wrong);
    }
    ss_sampler_free(s);
}

static void min_p_is_relative_to_the_likeliest(void)
{
    float z[V] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f), -INFINITY, -INFINITY};
    ss_sample_params p = ss_sample_defaults();
    p.min_p = 0.25f; /* cut 0.125: 0.05 goes */
    CHECK(kept(&p, z) == 0x07);
    p.min_p = 0.7f; /* cut 0.35 */
    CHECK(kept(&p, z) == 0x01);
}

static void penalties_follow_ctrl_and_openai(void)
{
    ss_sampler *s = sampler(V);
    ss_rng rng;
    ss_rng_seed(&rng, 1);
    float z[V] = {2, -2, 1, 1, 0.5f, 3};
    ss_sample_params p = ss_sample_defaults();
    p.repetition_penalty = 2;
    p.top_k = V;                                 /* no masking: read the penalised logits back */
    const int32_t seen[] = {0, 1, 1, 4, 99, -3}; /* repeats count once; bad ids ignored */
    ss_sample_next(s, &p, &rng, z, seen, 6, NULL, 0);
    CHECK_NEAR(z[0], 1.0, 1e-6);
    CHECK_NEAR(z[1], -4.0, 1e-6);
    CHECK_NEAR(z[2], 1.0, 1e-6);
    CHECK_NEAR(z[4], 0.25, 1e-6);
    float y[V] = {2, -2, 1, 1, 0.5f, 3};
    p = ss_sample_defaults();
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    const int32_t out[] = {2, 2, 2, 5};
    ss_sample_next(s, &p, &rng, y, NULL, 0, out, 4);
    CHECK_NEAR(y[2], 1 - 3 * 0.25 - 0.5, 1e-6);
    CHECK_NEAR(y[5], 3 - 0.25 - 0.5, 1e-6);
    CHECK_NEAR(y[0], 2, 1e-6);
    /* the counts start from zero on the next step */
    float w[V] = {2, -2, 1, 1, 0.5f, 3};
    ss_sample_next(s, &p, &rng, w, NULL, 0, out, 1);
    CHECK_NEAR(w[2], 1 - 0.25 - 0.5, 1e-6);
    ss_sampler_free(s);
}

static void draws_follow_the_distribution_and_the_seed(void)
{
    const float z0[4] = {0.0f, 1.0f, 2.0f, -INFINITY};
    ss_sample_params p = ss_sample_defaults();
    p.temperature = 0.5f; /* softmax of (0, 2, 4) */
    double e[3] = {exp(-4.0), exp(-2.0), 1.0}, sum = e[0] + e[1] + e[2];
    ss_sampler *s = sampler(4);
    ss_rng rng;
    ss_rng_seed(&rng, 42);
    enum { DRAWS = 200000 };
    int count[4] = {0};
    for (int i = 0; i < DRAWS; i++) {
        float z[4];
        memcpy(z, z0, sizeof z);
        count[ss_sample_next(s, &p, &rng, z, NULL, 0, NULL, 0)]++;
    }
    CHECK(count[3] == 0);
    for (int k = 0; k < 3; k++) {
        double want = DRAWS * e[k] / sum, sd = sqrt(want);
        CHECK_MSG(fabs(count[k] - want) < 5 * sd + 1, "id %d drawn %d times, expected %.0f", k,
                  count[k], want);
    }
    /* the same seed, the same tokens; another seed, another sequence */
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        ss_rng_seed(&rng, run == 2 ? 8 : 7);
        for (int i = 0; i < 64; i++) {
            float z[4];
            memcpy(z, z0, sizeof z);
            (run == 0 ? a : run == 1 ? b : c)[i] = ss_sample_next(s, &p, &rng, z, NULL, 0, NULL, 0);
        }
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    ss_sampler_free(s);
}

/* A vocabulary of whole groups (the draw sums GROUP = 256 ids at a time) and a tail: draws land
 * where the distribution says, in the first id of a group, inside one, in the last whole group
 * and in the tail, with temperature applied. */
static void draws_over_groups_and_the_tail(void)
{
    enum { N = 5003, DRAWS = 100000 };
    static const int at[] = {0, 300, 2560, 4863, 4999};
    static const float logit[] = {1.0f, 0.0f, 0.5f, -0.25f, 1.5f};
    static float z[N], work[N];
    for (int i = 0; i < N; i++)
        z[i] = -INFINITY;
    double e[5], sum = 0;
    ss_sample_params p = ss_sample_defaults();
    p.temperature = 0.75f;
    for (int k = 0; k < 5; k++)
        sum += e[k] = exp(logit[k] / p.temperature), z[at[k]] = logit[k];
    ss_sampler *s = sampler(N);
    ss_rng rng;
    ss_rng_seed(&rng, 3);
    int count[5] = {0}, other = 0;
    for (int d = 0; d < DRAWS; d++) {
        int32_t id = ss_sample_from(s, &p, &rng, z, work, NULL, 0, NULL, 0);
        int k = 0;
        while (k < 5 && at[k] != id)
            k++;
        k < 5 ? count[k]++ : other++;
    }
    CHECK_MSG(other == 0, "%d draws of ids with zero probability", other);
    for (int k = 0; k < 5; k++) {
        double want = DRAWS * e[k] / sum, sd = sqrt(want);
        CHECK_MSG(fabs(count[k] - want) < 5 * sd + 1, "id %d drawn %d times, expected %.0f", at[k],
                  count[k], want);
    }
    ss_sampler_free(s);
}

/* ss_sample_from leaves the logits as they are and draws what ss_sample_next draws in place,
 * with penalties, top-k, top-p and min-p: the same tokens from the same seed. */
static void sample_from_equals_in_place(void)
{
    enum { N = 1000 };
    static float z[N], copy[N], work[N];
    for (int i = 0; i < N; i++)
        z[i] = (float)((i * 7919) % 1000) / 250.0f - 2.0f;
    const int32_t seen[] = {5, 17, 17, 999, 3};
    ss_sample_params p = ss_sample_defaults();
    p.temperature = 0.9f, p.top_k = 400, p.top_p = 0.8f, p.min_p = 0.01f;
    p.repetition_penalty = 1.3f, p.presence_penalty = 0.5f, p.frequency_penalty = 0.25f;
    ss_sampler *s = sampler(N);
    ss_rng a, b;
    ss_rng_seed(&a, 11);
    ss_rng_seed(&b, 11);
    for (int d = 0; d < 200; d++) {
        memcpy(copy, z, sizeof z);
        int32_t from = ss_sample_from(s, &p, &a, z, work, seen, 5, seen + 2, 3);
        int32_t next = ss_sample_next(s, &p, &b, copy, seen, 5, seen + 2, 3);
        CHECK_MSG(from == next, "draw %d: %d from a copy, %d in place", d, from, next);
        CHECK(memcmp(work, copy, sizeof work) == 0);
    }
    for (int i = 0; i < N; i++)
        CHECK(z[i] == (float)((i * 7919) % 1000) / 250.0f - 2.0f);
    ss_sampler_free(s);
}

static void set_top_p_zero(ss_sample_params *p)
{
    p->top_p = 0;
}
static void set_temperature_negative(ss_sample_params *p)
{
    p->temperature = -1;
}
static void set_temperature_nan(ss_sample_params *p)
{
    p->temperature = NAN;
}
static void set_repetition_zero(ss_sample_params *p)
{
    p->repetition_penalty = 0;
}
static void set_frequency_three(ss_sample_params *p)
{
    p->frequency_penalty = 3;
}
static void set_top_k_minus_two(ss_sample_params *p)
{
    p->top_k = -2;
}

static void bad_parameters_are_named(void)
{
    static const struct {
        const char *name;
        void (*set)(ss_sample_params *);
    } cases[] = {
        {"top_p", set_top_p_zero},
        {"temperature", set_temperature_negative},
        {"temperature", set_temperature_nan},
        {"repetition_penalty", set_repetition_zero},
        {"frequency_penalty", set_frequency_three},
        {"top_k", set_top_k_minus_two},
    };
    ss_sample_params p = ss_sample_defaults();
    const char *param = "unset";
    CHECK_OK(ss_sample_check(&p, &param));
    CHECK(!strcmp(param, "unset")); /* a good request names nothing */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        p = ss_sample_defaults();
        cases[i].set(&p);
        param = NULL;
        CHECK_ERR(ss_sample_check(&p, &param), cases[i].name);
        CHECK(param && !strcmp(param, cases[i].name));
        CHECK_ERR(ss_sample_check(&p, NULL), cases[i].name);
    }
    ss_sampler *s = NULL;
    CHECK_ERR(ss_sampler_new(0, &s), "vocabulary");
}

static void stop_strings_end_and_hold_back(void)
{
    const char *stops[] = {"\n\n", "END", ""};
    ss_stop_result r = ss_stop_scan(stops, 3, "hello wor", 9, 0);
    CHECK(!r.stopped && r.emit == 9);
    r = ss_stop_scan(stops, 3, "hello E", 7, 0); /* "E" may become "END": held */
    CHECK(!r.stopped && r.emit == 6);
    r = ss_stop_scan(stops, 3, "hello EN", 8, 6);
    CHECK(!r.stopped && r.emit == 6);
    r = ss_stop_scan(stops, 3, "hello ENX", 9, 6); /* ruled out: all of it goes */
    CHECK(!r.stopped && r.emit == 9);
    r = ss_stop_scan(stops, 3, "hello END and more", 18, 6);
    CHECK(r.stopped && r.emit == 6 && r.which == 1);
    r = ss_stop_scan(stops, 3, "a\n", 2, 0);
    CHECK(!r.stopped && r.emit == 1);
    r = ss_stop_scan(stops, 3, "a\n\nb", 4, 2); /* a match straddling what was scanned */
    CHECK(r.stopped && r.emit == 1 && r.which == 0);
    r = ss_stop_scan(stops, 0, "anything", 8, 0);
    CHECK(!r.stopped && r.emit == 8);
}

/* GPT-2's byte-to-character map (bytes_to_unicode): printable bytes stand for themselves. */
static unsigned byte_char(unsigned b)
{
    unsigned shifted = 0;
    for (unsigned x = 0; x < b; x++)
        shifted += !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE);
    bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    return self ? b : 256 + shifted;
}

/* A byte-level tokenizer.json: ids a b E N D Ġ(space) ND Ã(0xC3) ©(0xA9) x, then every other
 * byte (a byte-level vocabulary has all 256). */
static char *tiny_tokenizer(void)
{
    static char json[16384];
    const unsigned first[] = {'a', 'b', 'E', 'N', 'D', ' ', 0, 0xC3, 0xA9, 'x'};
    size_t n = (size_t)snprintf(json, sizeof json, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
    int id = 0;
    for (unsigned b = 0; b < 256 + 10; b++) {
        unsigned byte = b < 10 ? first[b] : b - 10;
        bool listed = false;
        for (int k = 0; b >= 10 && k < 10; k++)
            listed = listed || (k != 6 && first[k] == byte);
        if (listed) continue;
        if (b == 6)
            n += (size_t)snprintf(json + n, sizeof json - n, "\"ND\": 6, ");
        else
            n += (size_t)snprintf(json + n, sizeof json - n, "\"\\u%04x\": %d, ", byte_char(byte),
                                  id);
        id++;
    }
    snprintf(json + n - 2, sizeof json - n + 2,
             "}, \"merges\": [\"N D\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\", "
             "\"add_prefix_space\": false, \"use_regex\": true}, \"decoder\": {\"type\": "
             "\"ByteLevel\"}}");
    return json;
}

/* Push ids; then what take() gives: tokens [from, to) and the text piece. */
static void take_after(ss_stop_text *s, const int64_t *ids, int n, size_t from, size_t to,
                       const char *text)
{
    for (int i = 0; i < n; i++)
        ss_stop_text_push(s, ids[i]);
    size_t f = 0, t = 0, len = 0;
    const char *piece = NULL;
    ss_stop_text_take(s, &f, &t, &piece, &len);
    CHECK(f == from && t == to && len == strlen(text) && !memcmp(piece, text, len));
}

static ss_stop_text *text_with(ss_tokenizer *tk, const char *stop)
{
    ss_stop_text *s = NULL;
    const char *stops[] = {stop};
    ss_status *st = ss_stop_text_new(tk, stops, stop ? 1 : 0, &s);
    CHECK(!st);
    ss_status_free(st);
    return s;
}

/* A sequence's text: a stop string ends it and is cut from the text while the tokens keep the
 * one that completed it (vLLM's rule), even when the match ends inside that token; while it could
 * still match, neither its text nor its tokens are released; a split UTF-8 character is held. */
static void stop_text_follows_vllm(void)
{
    ss_tokenizer *tk = NULL;
    const char *json = tiny_tokenizer();
    ss_status *st = ss_tokenizer_parse(json, strlen(json), "tiny", &tk);
    if (st) fprintf(stderr, "%s\n", st->msg);
    CHECK(!st);
    ss_status_free(st);
    if (!tk) return;
    size_t len = 0;
    ss_stop_text *s = text_with(tk, "EN"); /* ends inside the token "ND" */
    take_after(s, (int64_t[]){0, 5}, 2, 0, 2, "a ");
    take_after(s, (int64_t[]){2}, 1, 2, 2, ""); /* "E" may become "EN": held */
    CHECK(ss_stop_text_push(s, 6));             /* "ND" completes it */
    ss_stop_text_finish(s);
    take_after(s, NULL, 0, 2, 4, ""); /* E and ND: the tokens of the match, in the last piece */
    CHECK(!strncmp(ss_stop_text_all(s, &len), "a ", len) && len == 2);
    ss_stop_text_free(s);

    s = text_with(tk, "END"); /* a partial match ruled out: all of it goes */
    take_after(s, (int64_t[]){2, 3}, 2, 0, 0, "");
    take_after(s, (int64_t[]){9}, 1, 0, 3, "ENx");
    ss_stop_text_free(s);

    s = text_with(tk, "\xC3\xA9"); /* é from two tokens: the first byte is held, not its token */
    take_after(s, (int64_t[]){0, 7}, 2, 0, 1, "a");
    CHECK(ss_stop_text_push(s, 8));
    ss_stop_text_finish(s);
    take_after(s, NULL, 0, 1, 3, "");
    ss_stop_text_free(s);

    s = text_with(tk,
                  NULL); /* no stop strings: tokens at once, a lone lead byte U+FFFD at the end */
    take_after(s, (int64_t[]){0, 7}, 2, 0, 2, "a");
    ss_stop_text_finish(s);
    take_after(s, NULL, 0, 2, 2, "\xEF\xBF\xBD");
    CHECK(ss_stop_text_all(s, &len) && len == 4);
    ss_stop_text_free(s);
    ss_tokenizer_free(tk);
}

TEST_MAIN(TEST(greedy_takes_the_first_maximum), TEST(greedy_in_place_takes_the_first_maximum),
          TEST(top_k_keeps_ties_with_the_kth), TEST(top_p_keeps_the_smallest_set_with_mass_p),
          TEST(top_p_over_a_large_vocabulary), TEST(top_k_over_a_large_vocabulary),
          TEST(min_p_is_relative_to_the_likeliest), TEST(penalties_follow_ctrl_and_openai),
          TEST(draws_follow_the_distribution_and_the_seed), TEST(draws_over_groups_and_the_tail),
          TEST(sample_from_equals_in_place), TEST(bad_parameters_are_named),
          TEST(stop_strings_end_and_hold_back), TEST(stop_text_follows_vllm))
