/* The tokenizer on a small byte-level BPE the test writes itself: encoding with merges and added
 * tokens (lstrip/rstrip), the incremental detokenizer (a character split across ids is held back,
 * then emitted whole; invalid bytes become U+FFFD at once; streamed text equals the whole decode),
 * and bad input of every kind getting an error that names it. */
#include "check.h"
#include "shardserve/tokenizer.h"
#include "tokenizer/small_tokenizer.h"

static const char FFFD[] = "\xEF\xBF\xBD";

static ss_status *load_json(const cJSON *root, ss_tokenizer **tk)
{
    char *text = cJSON_PrintUnformatted(root);
    ss_status *st = ss_tokenizer_parse(text, strlen(text), "small", tk);
    free(text);
    return st;
}

static ss_tokenizer *small(void)
{
    cJSON *root = small_tokenizer();
    ss_tokenizer *tk = NULL;
    CHECK_OK(load_json(root, &tk));
    cJSON_Delete(root);
    return tk;
}

static void test_encode_merges_and_added_tokens(void)
{
    ss_tokenizer *tk = small();
    if (!tk) return;
    CHECK(ss_tokenizer_vocab_size(tk) == N_IDS);
    /* "hi" merges; " é" is a space then the é merge; <x> eats the spaces on both sides. */
    const char text[] = "hi \xC3\xA9<s> x  <x>  y";
    const int32_t want[] = {ID_HI, ' ', ID_E_ACUTE, ID_S, ' ', 'x', ID_X, 'y'};
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(ss_tokenizer_encode(tk, text, strlen(text), true, &ids, &n));
    CHECK_MSG(n == sizeof want / sizeof want[0] && !memcmp(ids, want, sizeof want), "got %zu ids",
              n);
    char *back = NULL;
    size_t len = 0;
    CHECK_OK(ss_tokenizer_decode(tk, ids, n, false, &back, &len));
    CHECK(back && !strcmp(back, "hi \xC3\xA9<s> x<x>y"));
    free(back);
    CHECK_OK(ss_tokenizer_decode(tk, ids, n, true, &back, &len));
    CHECK(back && !strcmp(back, "hi \xC3\xA9 x<x>y"));
    free(back);
    free(ids);
    ss_tokenizer_free(tk);
}

/* encode_at_most gives encode's ids while they are at most max_ids, and refuses one more (an
 * added token, or the post-processor's, counts like any other id). */
static void test_encode_at_most(void)
{
    ss_tokenizer *tk = small();
    if (!tk) return;
    const char text[] = "hi \xC3\xA9<s> x  <x>  y";
    int32_t *all = NULL, *ids = NULL;
    size_t n_all = 0, n = 0;
    CHECK_OK(ss_tokenizer_encode(tk, text, strlen(text), true, &all, &n_all));
    CHECK_OK(ss_tokenizer_encode_at_most(tk, text, strlen(text), true, n_all, &ids, &n));
    CHECK(n == n_all && ids && !memcmp(ids, all, n * sizeof *ids));
    free(ids);
    for (size_t most = 1; most < n_all; most++) {
        ids = NULL;
        n = 99;
        ss_status *st = ss_tokenizer_encode_at_most(tk, text, strlen(text), true, most, &ids, &n);
        CHECK_MSG(st && st->code == SS_ERR_LIMIT, "at most %zu of %zu ids", most, n_all);
        CHECK(!ids && n == 0);
        ss_status_free(st);
    }
    free(all);
    /* one word of 8 bytes, 4 ids ("hi" x 4): the bound is exact at the word's own ids, whether
     * the word is refused before its merges or after */
    CHECK_OK(ss_tokenizer_encode_at_most(tk, "hihihihi", 8, false, 4, &ids, &n));
    CHECK(n == 4 && ids[0] == ID_HI && ids[3] == ID_HI);
    free(ids);
    ss_status *st = ss_tokenizer_encode_at_most(tk, "hihihihi", 8, false, 3, &ids, &n);
    CHECK(st && st->code == SS_ERR_LIMIT && !ids);
    ss_status_free(st);
    /* a word of 1 MB without spaces is refused (at least 256 Ki ids), and SIZE_MAX bounds
     * nothing */
    size_t big = 1 << 20;
    char *word = malloc(big);
    if (word) {
        memset(word, 'h', big);
        st = ss_tokenizer_encode_at_most(tk, word, big, false, 10, &ids, &n);
        CHECK(st && st->code == SS_ERR_LIMIT && !ids);
        ss_status_free(st);
        CHECK_OK(ss_tokenizer_encode_at_most(tk, word, 4096, false, SIZE_MAX, &ids, &n));
        CHECK(n == 4096);
        free(ids);
        free(word);
    }
    ss_tokenizer_free(tk);
}

/* Cut text with a split function; the pieces, joined by '|', must be `want`. */
static void expect_split(const char *text, unsigned max_digits, const char *want)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t n = strlen(text);
    char got[256] = "";
    for (size_t i = 0; i < n;) {
        size_t end =
            max_digits ? ss_tok_split_llama3_next(s, n, i, max_digits) : ss_tok_split_next(s, n, i);
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%.*s", i ? "|" : "",
                 (int)(end - i), text + i);
        i = end;
    }
    CHECK_MSG(!strcmp(got, want), "split of \"%s\": got \"%s\", want \"%s\"", text, got, want);
}

/* The split regexes on cases worked out from the patterns by hand. */
static void test_split_regexes(void)
{
    expect_split("I'm  here 2024!\n\n x", 0, "I|'m| | here| 2024|!|\n\n| x");
    expect_split("it'S ok", 0, "it|'|S| ok");
    expect_split("\tab 12345 (x) it'S ok\n \n y", 3, "\tab| |123|45| (|x|)| it|'S| ok|\n \n| y");
    expect_split("12345", 1, "1|2|3|4|5");
    expect_split("a.\r\n\r\nb", 3, "a|.\r\n\r\n|b");
    /* (?i:'s) folds case as Unicode does: U+017F (long s) is an s */
    expect_split("'\xC5\xBFt", 3, "'\xC5\xBF|t");
}

static void expect_nfc(const char *text, const char *want)
{
    char *got = NULL;
    size_t len = 0;
    CHECK(ss_tok_nfc((const uint8_t *)text, strlen(text), &got, &len));
    const char *result = got ? got : text;
    len = got ? len : strlen(text);
    CHECK_MSG(len == strlen(want) && !memcmp(result, want, len), "NFC of \"%s\"", text);
    free(got);
}

/* NFC on cases worked out from the Unicode tables by hand. */
static void test_nfc(void)
{
    expect_nfc("plain ASCII", "plain ASCII");
    expect_nfc("e\xCC\x81", "\xC3\xA9");                                /* e + U+0301 -> é */
    expect_nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81"); /* jamo -> 각 */
    /* s + dot above (230) + dot below (220): reordered, then composed to U+1E69 */
    expect_nfc("s\xCC\x87\xCC\xA3", "\xE1\xB9\xA9");
    expect_nfc("\xE2\x84\xA6", "\xCE\xA9"); /* OHM SIGN -> GREEK CAPITAL OMEGA (singleton) */
    /* a mark of the same class blocks: a + U+0301 + U+0301 -> á + U+0301 */
    expect_nfc("a\xCC\x81\xCC\x81", "\xC3\xA1\xCC\x81");
}

/* Push ids one by one; each push must return exactly the expected piece. */
static void expect_pieces(ss_tokenizer *tk, const int32_t *ids, const char *const *pieces, size_t n,
                          const char *at_finish)
{
    ss_tokenizer_stream *s = NULL;
    CHECK_OK(ss_tokenizer_stream_new(tk, false, &s));
    if (!s) return;
    const char *text;
    size_t len;
    for (size_t i = 0; i < n; i++) {
        CHECK_OK(ss_tokenizer_stream_push(s, ids[i], &text, &len));
        CHECK_MSG(len == strlen(pieces[i]) && !memcmp(text, pieces[i], len),
                  "push %zu (id %d) gave %zu bytes \"%.*s\", want \"%s\"", i, ids[i], len, (int)len,
                  text, pieces[i]);
    }
    CHECK_OK(ss_tokenizer_stream_finish(s, &text, &len));
    CHECK_MSG(len == strlen(at_finish) && !memcmp(text, at_finish, len), "finish gave %zu bytes",
              len);
    ss_tokenizer_stream_free(s);
}

static void test_stream_holds_split_characters(void)
{
    ss_tokenizer *tk = small();
    if (!tk) return;
    /* é as two byte ids: nothing, then the whole character */
    expect_pieces(tk, (int32_t[]){'a', 0xC3, 0xA9, 'b'}, (const char *[]){"a", "", "\xC3\xA9", "b"},
                  4, "");
    /* a 4-byte emoji over four ids */
    expect_pieces(tk, (int32_t[]){0xF0, 0x9F, 0x98, 0x80},
                  (const char *[]){"", "", "", "\xF0\x9F\x98\x80"}, 4, "");
    /* a merged token completes a held lead byte: C3 then "hi" is invalid, so U+FFFD then "hi" */
    expect_pieces(tk, (int32_t[]){0xC3, ID_HI}, (const char *[]){"", "\xEF\xBF\xBDhi"}, 2, "");
    /* a byte that can never start a character is replaced at once */
    expect_pieces(tk, (int32_t[]){0xFF, 'z'}, (const char *[]){FFFD, "z"}, 2, "");
    /* an incomplete character at the end becomes one U+FFFD at finish */
    expect_pieces(tk, (int32_t[]){'q', 0xE2, 0x82}, (const char *[]){"q", "", ""}, 3, FFFD);
    /* an added token ends a held sequence like any other byte would */
    expect_pieces(tk, (int32_t[]){0xE2, ID_S}, (const char *[]){"", "\xEF\xBF\xBD<s>"}, 2, "");
    ss_tokenizer_free(tk);
}

static void test_stream_equals_whole_decode(void)
{
    ss_tokenizer *tk = small();
    if (!tk) return;
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        int32_t ids[16];
        size_t n = 1 + (size_t)(round % 16);
        for (size_t i = 0; i < n; i++)
            ids[i] = (int32_t)((seed = seed * 1103515245u + 12345u) >> 8) % N_IDS;
        bool skip = round % 3 == 0;
        char *whole = NULL;
        size_t whole_len = 0;
        CHECK_OK(ss_tokenizer_decode(tk, ids, n, skip, &whole, &whole_len));
        ss_tokenizer_stream *s = NULL;
        CHECK_OK(ss_tokenizer_stream_new(tk, skip, &s));
        size_t at = 0;
        bool same = whole && s;
        for (size_t i = 0; i <= n && same; i++) {
            const char *piece;
            size_t len;
            CHECK_OK(i < n ? ss_tokenizer_stream_push(s, ids[i], &piece, &len)
                           : ss_tokenizer_stream_finish(s, &piece, &len));
            same = at + len <= whole_len && !memcmp(whole + at, piece, len);
            at += len;
        }
        CHECK_MSG(same && at == whole_len, "round %d: streamed text differs from decode", round);
        ss_tokenizer_stream_free(s);
        free(whole);
    }
    ss_tokenizer_free(tk);
}

/* Load the small tokenizer with one change; the load must fail naming it. */
static void expect_load_error(void (*change)(cJSON *), const char *needle)
{
    cJSON *root = small_tokenizer();
    change(root);
    ss_tokenizer *tk = NULL;
    CHECK_ERR(load_json(root, &tk), needle);
    CHECK(!tk);
    cJSON_Delete(root);
}

static cJSON *model_of(cJSON *root)
{
    return cJSON_GetObjectItem(root, "model");
}
static void wordpiece(cJSON *r)
{
    cJSON_ReplaceItemInObject(model_of(r), "type", cJSON_CreateString("WordPiece"));
}
static void unknown_merge(cJSON *r)
{
    cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(r), "merges"), cJSON_CreateString("h zz"));
}
static void bad_merge(cJSON *r)
{
    cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(r), "merges"), cJSON_CreateString("hi"));
}
static void no_byte(cJSON *r)
{
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(model_of(r), "vocab"), "A");
}
static void negative_id(cJSON *r)
{
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(model_of(r), "vocab"), "hi",
                              cJSON_CreateNumber(-3));
}
static void huge_id(cJSON *r)
{
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(model_of(r), "vocab"), "hi",
                              cJSON_CreateNumber(1e12));
}
static void normalizer(cJSON *r)
{
    cJSON_AddItemToObject(r, "normalizer", cJSON_Parse("{\"type\": \"NFKC\"}"));
}
static void metaspace(cJSON *r)
{
    cJSON_ReplaceItemInObject(r, "pre_tokenizer", cJSON_Parse("{\"type\": \"Metaspace\"}"));
}
static void fallback(cJSON *r)
{
    cJSON_AddTrueToObject(model_of(r), "byte_fallback");
}
static void empty_added(cJSON *r)
{
    cJSON_AddItemToArray(cJSON_GetObjectItem(r, "added_tokens"), cJSON_Parse("{\"id\": 300}"));
}
static void other_split(cJSON *r)
{
    cJSON_ReplaceItemInObject(r, "pre_tokenizer",
                              cJSON_Parse("{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
                                          "\"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}, "
                                          "\"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", "
                                          "\"use_regex\": false}]}"));
}
static void template_unknown(cJSON *r)
{
    cJSON_AddItemToObject(r, "post_processor",
                          cJSON_Parse("{\"type\": \"TemplateProcessing\", \"single\": "
                                      "[{\"SpecialToken\": {\"id\": \"<bos>\"}}, {\"Sequence\": "
                                      "{\"id\": \"A\"}}], \"special_tokens\": {}}"));
}
static void template_bad_id(cJSON *r)
{
    cJSON_AddItemToObject(r, "post_processor",
                          cJSON_Parse("{\"type\": \"TemplateProcessing\", \"single\": "
                                      "[{\"SpecialToken\": {\"id\": \"<bos>\"}}], "
                                      "\"special_tokens\": {\"<bos>\": {\"ids\": [9000]}}}"));
}
static void no_model(cJSON *r)
{
    cJSON_DeleteItemFromObject(r, "model");
}

static void test_bad_tokenizer_json(void)
{
    ss_tokenizer *tk = NULL;
    CHECK_ERR(ss_tokenizer_parse("{\"model\": ", 10, "cut.json", &tk), "cut.json: not valid JSON");
    CHECK_ERR(ss_tokenizer_parse("[]", 2, "array.json", &tk), "is not a JSON object");
    CHECK_ERR(ss_tokenizer_load("/nonexistent/tokenizer.json", &tk), "/nonexistent/tokenizer.json");
    expect_load_error(wordpiece, "model.type WordPiece is not supported");
    expect_load_error(unknown_merge, "merge 2: 'zz' is not in the vocabulary");
    expect_load_error(bad_merge, "merge 2 'hi' is not \"a b\"");
    expect_load_error(no_byte, "byte 0x41 has no token");
    expect_load_error(negative_id, "the id of token 'hi' is not an integer");
    expect_load_error(huge_id, "the id of token 'hi' is not an integer");
    expect_load_error(normalizer, "normalizer NFKC is not supported");
    expect_load_error(metaspace, "pre_tokenizer Metaspace is not supported");
    expect_load_error(fallback, "model.byte_fallback (set) is not supported");
    expect_load_error(empty_added, "an added token has no content");
    expect_load_error(other_split, "pre_tokenizer Split regex \\w+ is not supported");
    expect_load_error(template_unknown, "names a special token it does not define: <bos>");
    expect_load_error(template_bad_id,
                      "post_processor adds id 9000, which is not in the vocabulary");
    expect_load_error(no_model, "has no \"model\" object");
}

static void test_bad_ids_and_text(void)
{
    ss_tokenizer *tk = small();
    if (!tk) return;
    char *text = NULL;
    size_t len = 0;
    CHECK_ERR(ss_tokenizer_decode(tk, (int32_t[]){'a', N_IDS}, 2, false, &text, &len),
              "token id 260 (at index 1) is not in the vocabulary");
    CHECK_ERR(ss_tokenizer_decode(tk, (int32_t[]){-1}, 1, false, &text, &len), "token id -1");
    CHECK(!text);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_ERR(ss_tokenizer_encode(tk, "ok\xC3", 3, false, &ids, &n), "not valid UTF-8 at byte 2");
    ss_tokenizer_stream *s = NULL;
    CHECK_OK(ss_tokenizer_stream_new(tk, false, &s));
    const char *piece;
    CHECK_ERR(ss_tokenizer_stream_push(s, 99999, &piece, &len), "token id 99999 (at index 0)");
    ss_tokenizer_stream_free(s);
    ss_tokenizer_free(tk);
}

TEST_MAIN(TEST(test_split_regexes), TEST(test_nfc), TEST(test_encode_merges_and_added_tokens),
          TEST(test_encode_at_most), TEST(test_stream_holds_split_characters),
          TEST(test_stream_equals_whole_decode), TEST(test_bad_tokenizer_json),
          TEST(test_bad_ids_and_text))
