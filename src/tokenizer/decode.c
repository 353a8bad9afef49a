/* Ids to text, whole or one id at a time. Each id stands for bytes (its vocab token through the
 * byte-level map, or an added token's content); the bytes are turned into UTF-8 text the way the
 * reference does (Rust's from_utf8_lossy, the WHATWG TextDecoder): each maximal subpart of an
 * invalid sequence becomes one U+FFFD. The streaming form holds back a trailing sequence that is
 * incomplete but could still become valid, so what it returns is always whole characters and its
 * concatenation equals the whole decode. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len, cap;
} text_buf;

static bool buf_reserve(text_buf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) return false;
    b->data = data;
    b->cap = cap;
    return true;
}

/* Bytes a valid sequence led by b needs after it, with the bounds of its second byte; 0 when b
 * cannot lead one. */
static size_t lead_needs(uint8_t b, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80, *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) return 1;
    if (b >= 0xE0 && b <= 0xEF) {
        *lo = b == 0xE0 ? 0xA0 : 0x80, *hi = b == 0xED ? 0x9F : 0xBF;
        return 2;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        *lo = b == 0xF0 ? 0x90 : 0x80, *hi = b == 0xF4 ? 0x8F : 0xBF;
        return 3;
    }
    return 0;
}

/* Append the lossy text of s[0..n) to out (which has room for 3 bytes per input byte); returns how
 * many input bytes were used: all of them when final, else all but an incomplete tail. */
static size_t utf8_lossy(const uint8_t *s, size_t n, bool final, text_buf *out)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    size_t i = 0;
    while (i < n) {
        uint8_t lo, hi;
        size_t need = s[i] < 0x80 ? 0 : lead_needs(s[i], &lo, &hi), j = i + 1, k = 0;
        if (s[i] >= 0x80 && !need) {
            memcpy(out->data + out->len, replacement, 3), out->len += 3, i++;
            continue;
        }
        for (; k < need && j < n; k++, j++) {
            uint8_t c = s[j];
            if (c < (k ? 0x80 : lo) || c > (k ? 0xBF : hi)) break;
        }
        if (k == need) {
            memcpy(out->data + out->len, s + i, j - i), out->len += j - i, i = j;
        } else if (j == n && !final) {
            return i; /* could still complete */
        } else {
            memcpy(out->data + out->len, replacement, 3), out->len += 3, i = j;
        }
    }
    return n;
}

static ss_status *check_id(const ss_tokenizer *tk, int32_t id, size_t index)
{
    if (id >= 0 && id < tk->size && (tk->flags[id] & SS_TOK_PRESENT)) return NULL;
    return ss_errf(SS_ERR_INVALID,
                   "token id %d (at index %zu) is not in the vocabulary of %s "
                   "(%d ids)",
                   id, index, tk->what, tk->size);
}

ss_status *ss_tokenizer_decode(const ss_tokenizer *tk, const int32_t *ids, size_t n_ids,
                               bool skip_special, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        ss_status *st = check_id(tk, ids[i], i);
        if (st) return st;
        total += tk->piece_len[ids[i]];
    }
    uint8_t *bytes = malloc(total ? total : 1);
    text_buf out = {malloc(3 * total + 1), 0, 3 * total + 1};
    if (!bytes || !out.data) {
        free(bytes);
        free(out.data);
        return ss_errf(SS_ERR_NOMEM, "decoding %zu ids: no memory for %zu bytes", n_ids, total);
    }
    size_t n = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (skip_special && (tk->flags[ids[i]] & SS_TOK_SPECIAL)) continue;
        memcpy(bytes + n, tk->piece[ids[i]], tk->piece_len[ids[i]]);
        n += tk->piece_len[ids[i]];
    }
    utf8_lossy(bytes, n, true, &out);
    free(bytes);
    out.data[out.len] = 0;
    *text = out.data;
    *len = out.len;
    return NULL;
}

struct ss_tokenizer_stream {
    const ss_tokenizer *tk;
    bool skip_special;
    size_t pushed;   /* ids so far, for error messages */
    uint8_t held[4]; /* an incomplete UTF-8 sequence (at most 3 bytes) */
    size_t n_held;
    text_buf in, out; /* reused across pushes */
};

ss_status *ss_tokenizer_stream_new(const ss_tokenizer *tk, bool skip_special,
                                   ss_tokenizer_stream **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for a stream", tk->what);
    (*out)->tk = tk;
    (*out)->skip_special = skip_special;
    return NULL;
}

/* Decode held bytes + piece; keep the incomplete tail (unless final) for the next call. */
static ss_status *stream_emit(ss_tokenizer_stream *s, const char *piece, size_t n, bool final,
                              const char **text, size_t *len)
{
    s->in.len = 0;
    s->out.len = 0;
    if (!buf_reserve(&s->in, s->n_held + n) || !buf_reserve(&s->out, 3 * (s->n_held + n)))
        return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for a %zu-byte token", s->tk->what,
                       n);
    memcpy(s->in.data, s->held, s->n_held);
    if (n) memcpy(s->in.data + s->n_held, piece, n);
    s->in.len = s->n_held + n;
    size_t used = utf8_lossy((const uint8_t *)s->in.data, s->in.len, final, &s->out);
    s->n_held = s->in.len - used;
    memcpy(s->held, s->in.data + used, s->n_held);
    s->out.data[s->out.len] = 0;
    *text = s->out.data;
    *len = s->out.len;
    return NULL;
}

ss_status *ss_tokenizer_stream_push(ss_tokenizer_stream *s, int32_t id, const char **text,
                                    size_t *len)
{
    *text = "";
    *len = 0;
    const ss_tokenizer *tk = s->tk;
    ss_status *st = check_id(tk, id, s->pushed++);
    if (st) return st;
    if (s->skip_special && (tk->flags[id] & SS_TOK_SPECIAL)) return NULL;
    return stream_emit(s, tk->piece[id], tk->piece_len[id], false, text, len);
}

ss_status *ss_tokenizer_stream_finish(ss_tokenizer_stream *s, const char **text, size_t *len)
{
    return stream_emit(s, NULL, 0, true, text, len);
}

size_t ss_tokenizer_stream_held(const ss_tokenizer_stream *s)
{
    return s->n_held;
}

void ss_tokenizer_stream_free(ss_tokenizer_stream *s)
{
    if (!s) return;
    free(s->in.data);
    free(s->out.data);
    free(s);
}
