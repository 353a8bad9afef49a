/* shardserve's tokenizer against the reference (@huggingface/tokenizers), case by case: every text
 * of the corpus must encode to the reference's ids exactly, decode back, and every id sequence
 * must decode (whole and streamed one id at a time) to the reference's text. Text that is not
 * UTF-8 must be refused. Then the bench line: the same few MB encoded by both, same ids required.
 *   test_tokenizer_reference CASES_DIR   (written by tests/tokenizer/reference.js) */
#include "check.h"
#include "shardserve/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"

#include <cjson/cJSON.h>

#define MAX_SHOWN 8
#define MAX_TOKENIZERS 16

typedef struct {
    const char *dir;
    const char *names[MAX_TOKENIZERS];
    ss_tokenizer *tks[MAX_TOKENIZERS];
    int n, shown;
    size_t encodes, decodes;
} suite;

static size_t b64_decode(const char *in, unsigned char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 0;
    unsigned acc = 0, bits = 0;
    for (; *in && *in != '='; in++) {
        const char *p = strchr(alphabet, *in);
        if (!p) continue;
        acc = acc << 6 | (unsigned)(p - alphabet);
        bits += 6;
        if (bits >= 8) bits -= 8, out[n++] = (unsigned char)(acc >> bits);
    }
    return n;
}

static ss_tokenizer *tokenizer_of(suite *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) return s->tks[i];
    CHECK_MSG(s->n < MAX_TOKENIZERS, "more than %d tokenizers in the cases", MAX_TOKENIZERS);
    if (s->n == MAX_TOKENIZERS) return NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", s->dir, name);
    ss_tokenizer *tk = NULL;
    CHECK_OK(ss_tokenizer_load(path, &tk));
    s->names[s->n] = name;
    s->tks[s->n++] = tk;
    return tk;
}

static bool ids_equal(const cJSON *want, const int32_t *got, size_t n)
{
    if ((size_t)cJSON_GetArraySize(want) != n) return false;
    size_t i = 0;
    for (const cJSON *v = want->child; v; v = v->next, i++)
        if ((int32_t)v->valuedouble != got[i]) return false;
    return true;
}

static void show_ids(const char *label, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

static void check_encode(suite *s, ss_tokenizer *tk, const cJSON *c, unsigned char *buf)
{
    size_t len = b64_decode(cJSON_GetObjectItem(c, "text")->valuestring, buf);
    const cJSON *want = cJSON_GetObjectItem(c, "ids");
    bool add_special = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_special"));
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(ss_tokenizer_encode(tk, (const char *)buf, len, add_special, &ids, &n));
    bool same = ids && ids_equal(want, ids, n);
    CHECK_MSG(same, "encode mismatch on %zu bytes \"%.*s\"", len, (int)(len > 80 ? 80 : len), buf);
    if (!same && s->shown++ < MAX_SHOWN) {
        show_ids("got ", ids, n);
        char *printed = cJSON_PrintUnformatted(want);
        fprintf(stderr, "  want: %.400s\n", printed);
        free(printed);
    }
    size_t want_len = b64_decode(cJSON_GetObjectItem(c, "decoded")->valuestring, buf);
    char *text = NULL;
    size_t text_len = 0;
    CHECK_OK(ss_tokenizer_decode(tk, ids, n, false, &text, &text_len));
    CHECK_MSG(text && text_len == want_len && !memcmp(text, buf, want_len),
              "decode(encode(x)) differs from the reference's for \"%.*s\"",
              (int)(want_len > 80 ? 80 : want_len), buf);
    free(text);
    free(ids);
    s->encodes++;
}

/* The streamed pieces, concatenated; each must end on a whole character. */
static void check_stream(ss_tokenizer *tk, const int32_t *ids, size_t n, bool skip,
                         const unsigned char *want, size_t want_len)
{
    ss_tokenizer_stream *st = NULL;
    CHECK_OK(ss_tokenizer_stream_new(tk, skip, &st));
    size_t at = 0;
    bool same = true;
    for (size_t i = 0; i <= n && st; i++) {
        const char *piece = NULL;
        size_t len = 0;
        CHECK_OK(i < n ? ss_tokenizer_stream_push(st, ids[i], &piece, &len)
                       : ss_tokenizer_stream_finish(st, &piece, &len));
        same = same && piece && at + len <= want_len && !memcmp(want + at, piece, len);
        if (len)
            same = same && ((unsigned char)piece[len - 1] < 0x80 ||
                            ((unsigned char)piece[len - 1] & 0xC0) == 0x80);
        at += len;
    }
    CHECK_MSG(same && at == want_len, "streamed decode differs from the reference");
    ss_tokenizer_stream_free(st);
}

static void check_decode(suite *s, ss_tokenizer *tk, const cJSON *c, unsigned char *buf)
{
    size_t want_len = b64_decode(cJSON_GetObjectItem(c, "text")->valuestring, buf);
    const cJSON *jids = cJSON_GetObjectItem(c, "ids");
    bool skip = cJSON_IsTrue(cJSON_GetObjectItem(c, "skip_special"));
    size_t n = (size_t)cJSON_GetArraySize(jids), i = 0;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    for (const cJSON *v = jids->child; v; v = v->next)
        ids[i++] = (int32_t)v->valuedouble;
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(ss_tokenizer_decode(tk, ids, n, skip, &text, &len));
    bool same = text && len == want_len && !memcmp(text, buf, len);
    CHECK_MSG(same, "decode mismatch (%zu ids, skip_special %d)", n, skip);
    if (!same && s->shown++ < MAX_SHOWN) show_ids("ids", ids, n);
    check_stream(tk, ids, n, skip, buf, want_len);
    free(text);
    free(ids);
    s->decodes++;
}

/* Every encode case with one byte made invalid must be refused, naming the byte. */
static void check_invalid_utf8(ss_tokenizer *tk)
{
    static const char *const bad[] = {"abc\xff",
                                      "\xc3",
                                      "x\xe2\x82",
                                      "\xed\xa0\x80 surrogate",
                                      "\xc0\xaf overlong",
                                      "\xf4\x90\x80\x80 too big",
                                      "\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_ERR(ss_tokenizer_encode(tk, bad[i], strlen(bad[i]), true, &ids, &n),
                  "not valid UTF-8 at byte");
        CHECK(!ids && !n);
    }
}

/* NFC alone against String.prototype.normalize, text by text. */
static void check_nfc(const cJSON *cases, unsigned char *buf)
{
    size_t checked = 0, wrong = 0;
    for (const cJSON *c = cJSON_GetObjectItem(cases, "nfc")->child; c; c = c->next, checked++) {
        size_t len = b64_decode(cJSON_GetObjectItem(c, "text")->valuestring, buf);
        unsigned char want[256];
        size_t want_len = b64_decode(cJSON_GetObjectItem(c, "nfc")->valuestring, want);
        char *got = NULL;
        size_t got_len = 0;
        CHECK(ss_tok_nfc(buf, len, &got, &got_len));
        const char *text = got ? got : (const char *)buf;
        got_len = got ? got_len : len;
        bool same = got_len == want_len && !memcmp(text, want, want_len);
        if (!same && wrong++ < MAX_SHOWN) {
            fprintf(stderr, "NFC of");
            for (size_t i = 0; i < len; i++)
                fprintf(stderr, " %02x", buf[i]);
            fprintf(stderr, ": got %zu bytes, want %zu\n", got_len, want_len);
        }
        free(got);
    }
    printf("NFC: %zu texts, %zu differ from node's\n", checked, wrong);
    CHECK(checked > 1000 && wrong == 0);
}

static cJSON *read_json(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    void *data = NULL;
    size_t len = 0;
    CHECK_OK(ss_read_file(path, &data, &len));
    cJSON *j = data ? cJSON_ParseWithLength(data, len) : NULL;
    free(data);
    CHECK_MSG(j, "%s is not JSON", path);
    return j;
}

static void test_reference_cases(void)
{
    suite s = {.dir = test_argv[1]};
    cJSON *cases = read_json(s.dir, "cases.json");
    if (!cases) return;
    unsigned char *buf = malloc(1 << 22);
    for (const cJSON *c = cJSON_GetObjectItem(cases, "encode")->child; c; c = c->next) {
        ss_tokenizer *tk = tokenizer_of(&s, cJSON_GetObjectItem(c, "tokenizer")->valuestring);
        if (tk) check_encode(&s, tk, c, buf);
    }
    for (const cJSON *c = cJSON_GetObjectItem(cases, "decode")->child; c; c = c->next) {
        ss_tokenizer *tk = tokenizer_of(&s, cJSON_GetObjectItem(c, "tokenizer")->valuestring);
        if (tk) check_decode(&s, tk, c, buf);
    }
    if (s.n) check_invalid_utf8(s.tks[0]);
    check_nfc(cases, buf);
    printf("reference cases: %zu encodes, %zu decodes checked with %d tokenizers\n", s.encodes,
           s.decodes, s.n);
    /* every case was checked: none skipped for want of its tokenizer */
    CHECK(s.encodes == (size_t)cJSON_GetArraySize(cJSON_GetObjectItem(cases, "encode")));
    CHECK(s.decodes == (size_t)cJSON_GetArraySize(cJSON_GetObjectItem(cases, "decode")));
    for (int i = 0; i < s.n; i++)
        ss_tokenizer_free(s.tks[i]);
    free(buf);
    cJSON_Delete(cases);
}

static void test_bench_same_ids(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/bench.txt", test_argv[1]);
    void *text = NULL;
    size_t len = 0;
    CHECK_OK(ss_read_file(path, &text, &len));
    cJSON *ref = read_json(test_argv[1], "bench.json");
    ss_tokenizer *tk = NULL;
    snprintf(path, sizeof path, "%s/gpt2.json", test_argv[1]);
    CHECK_OK(ss_tokenizer_load(path, &tk));
    if (!text || !ref || !tk) return;
    int32_t *ids = NULL, *again = NULL;
    size_t n = 0, n_again = 0;
    uint64_t t0 = ss_now_ns();
    CHECK_OK(ss_tokenizer_encode(tk, text, len, false, &ids, &n));
    uint64_t t1 = ss_now_ns();
    CHECK_OK(ss_tokenizer_encode(tk, text, len, false, &again, &n_again));
    double fresh = (double)(t1 - t0) / 1e9, warm = (double)(ss_now_ns() - t1) / 1e9;
    CHECK_MSG(ids && ids_equal(cJSON_GetObjectItem(ref, "ids"), ids, n), "bench text: ids differ");
    CHECK(again && n_again == n && !memcmp(again, ids, n * sizeof *ids));
    double ref_s = cJSON_GetObjectItem(ref, "seconds")->valuedouble;
    printf("bench: %zu bytes of this repository's text -> %zu tokens (GPT-2), same ids from both\n",
           len, n);
    printf("| encoder | seconds | tokens/s | MB/s |\n|---|---|---|---|\n");
    const char *names[] = {"shardserve, fresh tokenizer", "shardserve, warm word cache",
                           "@huggingface/tokenizers (node)"};
    double secs[] = {fresh, warm, ref_s};
    for (int i = 0; i < 3; i++)
        printf("| %s | %.3f | %.0f | %.1f |\n", names[i], secs[i], (double)n / secs[i],
               (double)len / 1048576 / secs[i]);
    printf("shardserve (fresh) is %.1fx the reference's tokens/s\n", ref_s / fresh);
    free(again);
    free(ids);
    free(text);
    cJSON_Delete(ref);
    ss_tokenizer_free(tk);
}

TEST_MAIN(TEST(test_reference_cases), TEST(test_bench_same_ids))
