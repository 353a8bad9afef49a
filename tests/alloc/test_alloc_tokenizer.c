/*
 * The tokenizer under allocation failure: a byte-level BPE tokenizer.json parsed (the small one
 * of the tokenizer's unit tests: merges in both forms, added tokens), a text encoded (merges,
 * an added token, multi-byte characters) and the ids decoded back, with the 1st, 2nd, 3rd ...
 * allocation failing. Every run must give exactly the clean run's ids and text, or fail with an
 * out-of-memory error (cJSON's parser returns NULL both for bad JSON and when it runs out, so
 * the parse error stands for one too), with nothing leaked and no crash.
 */
#include "allocfail.h"
#include "check.h"
#include "shardserve/tokenizer.h"
#include "tokenizer/small_tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define TEXT "hi <s> caf\xc3\xa9 hi<x> \xe2\x82\xac h i"

typedef struct {
    const char *json;
    int32_t *ids;
    size_t n_ids;
    char *text;
    size_t len;
} tok_case;

static ss_status *run_tokenizer(void *ctx)
{
    tok_case *c = ctx;
    c->ids = NULL, c->text = NULL;
    ss_tokenizer *tk = NULL;
    ss_status *st = ss_tokenizer_parse(c->json, strlen(c->json), "small tokenizer.json", &tk);
    if (!st) st = ss_tokenizer_encode(tk, TEXT, strlen(TEXT), false, &c->ids, &c->n_ids);
    if (!st) st = ss_tokenizer_decode(tk, c->ids, c->n_ids, false, &c->text, &c->len);
    ss_tokenizer_free(tk);
    if (st) {
        free(c->ids), free(c->text);
        c->ids = NULL, c->text = NULL;
    }
    return st;
}

static int32_t *want_ids;
static size_t want_n, want_len;
static char *want_text;

static bool verify_tokenizer(void *ctx)
{
    tok_case *c = ctx;
    bool same = c->n_ids == want_n && !memcmp(c->ids, want_ids, want_n * sizeof *want_ids) &&
                c->len == want_len && !memcmp(c->text, want_text, c->len);
    if (!same)
        fprintf(stderr, "  got %zu ids, text '%.*s'\n", c->n_ids, (int)c->len,
                c->text ? c->text : "");
    free(c->ids), free(c->text);
    c->ids = NULL, c->text = NULL;
    return same;
}

static void parse_encode_decode(void)
{
    cJSON *root = small_tokenizer();
    char *json = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    CHECK(json != NULL);
    if (!json) return;
    tok_case c = {.json = json};
    CHECK_OK(run_tokenizer(&c));
    want_ids = c.ids, want_n = c.n_ids, want_text = c.text, want_len = c.len;
    CHECK_MSG(c.text && strstr(c.text, "caf\xc3\xa9") && strstr(c.text, "\xe2\x82\xac"),
              "the clean run's text: '%s'", c.text ? c.text : "");
    /* the merges and both added tokens are in the ids */
    bool hi = false, s = false, x = false;
    for (size_t i = 0; i < want_n; i++)
        hi |= want_ids[i] == ID_HI, s |= want_ids[i] == ID_S, x |= want_ids[i] == ID_X;
    CHECK(hi && s && x);
    allocfail_case a = {.name = "tokenizer.json, encode, decode",
                        .ctx = &c,
                        .run = run_tokenizer,
                        .verify = verify_tokenizer};
    long allocs = 0;
    CHECK(allocfail_loop(&a, &allocs) == 0);
    CHECK_MSG(allocs > 100, "%ld allocations", allocs);
    printf("tokenizer.json, encode, decode: %ld allocations, each failed in turn\n", allocs);
    free(want_ids);
    free(want_text);
    free(json);
}

TEST_MAIN(TEST(parse_encode_decode))
