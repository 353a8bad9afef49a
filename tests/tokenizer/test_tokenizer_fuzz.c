/*
 * libFuzzer target for the tokenizer (built with -DSS_FUZZ=ON and clang). The first byte picks
 * what the rest is:
 *   0  a tokenizer.json: it loads or gets an error naming it, never a crash or a leak;
 *   1  text for a small byte-level tokenizer: non-UTF-8 is refused naming the byte, anything else
 *      encodes and decodes back to exactly the same bytes (no added token there strips spaces);
 *   2  token ids (little-endian int16): decoding gives an error or text, and the streamed text
 *      equals the whole decode;
 *   3  text for NFC: valid UTF-8 normalizes to valid UTF-8, and normalizing again changes nothing.
 */
#define _GNU_SOURCE /* memmem */
#include "shardserve/tokenizer.h"
#include "tokenizer/small_tokenizer.h"

#include <stdlib.h>
#include <string.h>

static ss_tokenizer *small_loaded(void)
{
    static ss_tokenizer *tk;
    if (tk) return tk;
    cJSON *root = small_tokenizer();
    char *json = cJSON_PrintUnformatted(root);
    ss_status *st = ss_tokenizer_parse(json, strlen(json), "small", &tk);
    free(json);
    cJSON_Delete(root);
    if (st) abort();
    return tk;
}

static void fuzz_load(const uint8_t *data, size_t size)
{
    ss_tokenizer *tk = NULL;
    ss_status *st = ss_tokenizer_parse((const char *)data, size, "fuzz", &tk);
    if (st) {
        if (strncmp(st->msg, "tokenizer fuzz", 14) != 0 || tk) abort();
        ss_status_free(st);
        return;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    st = ss_tokenizer_encode(tk, "Hello, world! 123 \xC3\xA9", 19, true, &ids, &n);
    if (st) abort(); /* a tokenizer that loads encodes any UTF-8 */
    free(ids);
    ss_tokenizer_free(tk);
}

static void fuzz_roundtrip(const uint8_t *data, size_t size)
{
    ss_tokenizer *tk = small_loaded();
    int32_t *ids = NULL;
    size_t n = 0;
    ss_status *st = ss_tokenizer_encode(tk, (const char *)data, size, true, &ids, &n);
    if (st) {
        if (!strstr(st->msg, "not valid UTF-8 at byte") || ids) abort();
        ss_status_free(st);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    if ((st = ss_tokenizer_decode(tk, ids, n, false, &text, &len))) abort();
    bool strips = memmem(data, size, "<x>", 3) != NULL;
    if (!strips && (len != size || memcmp(text, data, size))) abort();
    free(text);
    free(ids);
}

static void fuzz_decode(const uint8_t *data, size_t size)
{
    ss_tokenizer *tk = small_loaded();
    size_t n = size / 2;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = (int16_t)(data[2 * i] | data[2 * i + 1] << 8);
    bool skip = size % 2;
    char *whole = NULL;
    size_t whole_len = 0;
    ss_status *st = ss_tokenizer_decode(tk, ids, n, skip, &whole, &whole_len);
    ss_tokenizer_stream *s = NULL;
    if (ss_tokenizer_stream_new(tk, skip, &s)) abort();
    size_t at = 0;
    ss_status *stream_st = NULL;
    for (size_t i = 0; i <= n && !stream_st; i++) {
        const char *piece;
        size_t len;
        stream_st = i < n ? ss_tokenizer_stream_push(s, ids[i], &piece, &len)
                          : ss_tokenizer_stream_finish(s, &piece, &len);
        if (!stream_st && !st && (at + len > whole_len || memcmp(whole + at, piece, len))) abort();
        at += stream_st ? 0 : len;
    }
    if (!st != !stream_st || (!st && at != whole_len)) abort(); /* both fail on the same bad id */
    ss_status_free(st);
    ss_status_free(stream_st);
    ss_tokenizer_stream_free(s);
    free(whole);
    free(ids);
}

static void fuzz_nfc(const uint8_t *data, size_t size)
{
    if (ss_tok_utf8_check(data, size) != size) return;
    char *once = NULL, *twice = NULL;
    size_t once_len = 0, twice_len = 0;
    if (!ss_tok_nfc(data, size, &once, &once_len)) abort();
    const uint8_t *normal = once ? (const uint8_t *)once : data;
    size_t normal_len = once ? once_len : size;
    if (ss_tok_utf8_check(normal, normal_len) != normal_len) abort();
    if (!ss_tok_nfc(normal, normal_len, &twice, &twice_len)) abort();
    if (twice && (twice_len != normal_len || memcmp(twice, normal, normal_len))) abort();
    free(once);
    free(twice);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    switch (data[0] % 4) {
    case 0:
        fuzz_load(data + 1, size - 1);
        break;
    case 1:
        fuzz_roundtrip(data + 1, size - 1);
        break;
    case 2:
        fuzz_decode(data + 1, size - 1);
        break;
    default:
        fuzz_nfc(data + 1, size - 1);
        break;
    }
    return 0;
}
