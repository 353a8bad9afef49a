/*
 * gen_stop (gen_stop.h): the earliest complete stop string, else how much text no stop string can
 * still claim (stop strings are few and short: a direct scan is enough); and a sequence's text,
 * detokenized token by token, with what of it and of its tokens is final.
 */
#include "gen_stop.h"

#include <stdlib.h>
#include <string.h>

/* Whether text[at..len) is a proper prefix of s (the text ended inside a possible match). */
static bool partial_at(const char *s, size_t sl, const char *text, size_t at, size_t len)
{
    return len - at < sl && memcmp(text + at, s, len - at) == 0;
}

ss_stop_result ss_stop_scan(const char *const *stops, int n, const char *text, size_t len,
                            size_t from)
{
    ss_stop_result r = {.emit = len, .stopped = false, .which = -1};
    size_t longest = 0;
    for (int k = 0; k < n; k++) {
        size_t sl = stops[k] ? strlen(stops[k]) : 0;
        if (sl > longest) longest = sl;
    }
    /* a match ending after `from` starts at most longest - 1 bytes before it */
    size_t start = from >= longest ? from - longest + 1 : 0;
    for (size_t at = start; at < len; at++) {
        for (int k = 0; k < n; k++) {
            size_t sl = stops[k] ? strlen(stops[k]) : 0;
            if (!sl || text[at] != stops[k][0]) continue;
            if (at + sl <= len && memcmp(text + at, stops[k], sl) == 0)
                return (ss_stop_result){.emit = at, .stopped = true, .which = k};
            if (partial_at(stops[k], sl, text, at, len) && at < r.emit) r.emit = at;
        }
    }
    return r;
}

/* ------------------------------------------------------------------ a sequence's text */

#define NOT_WHOLE SIZE_MAX /* ends[i] of a token some of whose bytes the detokenizer holds */

struct ss_stop_text {
    char *stops[SS_GEN_MAX_STOPS];
    int n_stops;
    ss_tokenizer_stream *detok;
    char *text;
    size_t len, cap;
    size_t *ends; /* per token: the text's length once it is wholly decoded, or NOT_WHOLE */
    size_t n_tokens, cap_tokens;
    size_t scanned;   /* text[0, scanned) holds no complete stop string */
    size_t emit;      /* text[0, emit) is final */
    size_t text_sent; /* what take() gave out */
    size_t tokens_sent;
    bool stopped, finished, oom;
};

ss_status *ss_stop_text_new(const ss_tokenizer *tk, const char *const *stops, int n,
                            ss_stop_text **out)
{
    ss_stop_text *s = calloc(1, sizeof *s);
    ss_status *st = s ? ss_tokenizer_stream_new(tk, true, &s->detok) : NULL;
    for (int k = 0; s && !st && k < n && k < SS_GEN_MAX_STOPS; k++)
        if (!(s->stops[s->n_stops++] = strdup(stops[k]))) st = ss_errf(SS_ERR_NOMEM, "stop");
    if (!s || st) {
        ss_stop_text_free(s);
        *out = NULL;
        return st ? st : ss_errf(SS_ERR_NOMEM, "a sequence's text");
    }
    *out = s;
    return NULL;
}

void ss_stop_text_free(ss_stop_text *s)
{
    if (!s) return;
    for (int k = 0; k < s->n_stops; k++)
        free(s->stops[k]);
    ss_tokenizer_stream_free(s->detok);
    free(s->text);
    free(s->ends);
    free(s);
}

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static void add_text(ss_stop_text *s, const char *t, size_t n)
{
    if (!grow((void **)&s->text, &s->cap, s->len + n + 1, 1)) {
        s->oom = true;
        return;
    }
    memcpy(s->text + s->len, t, n);
    s->len += n;
    s->text[s->len] = 0;
}

/* Scan what was added; a complete stop string fixes the end of the text for good. */
static void scan(ss_stop_text *s)
{
    ss_stop_result r = ss_stop_scan((const char *const *)s->stops, s->n_stops,
                                    s->text ? s->text : "", s->len, s->scanned);
    s->scanned = s->len;
    s->emit = r.emit;
    s->stopped = r.stopped;
}

bool ss_stop_text_push(ss_stop_text *s, int64_t token)
{
    if (s->stopped || s->finished) return s->stopped;
    const char *t = NULL;
    size_t n = 0;
    ss_status *st = ss_tokenizer_stream_push(
        s->detok, token < 0 || token > INT32_MAX ? -1 : (int32_t)token, &t, &n);
    if (st) { /* outside the vocabulary */
        ss_status_free(st);
        t = "\xEF\xBF\xBD";
        n = 3;
    }
    add_text(s, t, n);
    if (!grow((void **)&s->ends, &s->cap_tokens, s->n_tokens + 1, sizeof *s->ends)) {
        s->oom = true;
        return false;
    }
    s->ends[s->n_tokens++] = ss_tokenizer_stream_held(s->detok) ? NOT_WHOLE : s->len;
    scan(s);
    return s->stopped;
}

void ss_stop_text_finish(ss_stop_text *s)
{
    if (s->finished) return;
    s->finished = true;
    const char *t = NULL;
    size_t n = 0;
    if (!s->stopped && !ss_tokenizer_stream_finish(s->detok, &t, &n)) add_text(s, t, n);
    if (!s->stopped) scan(s); /* a held byte turned U+FFFD could complete one */
    if (!s->stopped) s->emit = s->len;
}

/* Tokens [tokens_sent, result) have all their text below emit (without stop strings a token
 * goes at once: no text of it can be withheld for good). */
static size_t tokens_final(const ss_stop_text *s)
{
    if (s->finished || !s->n_stops) return s->n_tokens;
    size_t k = s->tokens_sent;
    for (size_t i = s->tokens_sent; i < s->n_tokens; i++) {
        if (s->ends[i] == NOT_WHOLE) continue;
        if (s->ends[i] > s->emit) break;
        k = i + 1;
    }
    return k;
}

void ss_stop_text_take(ss_stop_text *s, size_t *from, size_t *to, const char **text, size_t *len)
{
    *from = s->tokens_sent;
    *to = s->tokens_sent = tokens_final(s);
    size_t end = s->emit > s->text_sent ? s->emit : s->text_sent;
    *text = s->text ? s->text + s->text_sent : "";
    *len = end - s->text_sent;
    s->text_sent = end;
}

const char *ss_stop_text_all(const ss_stop_text *s, size_t *len)
{
    *len = s->finished ? s->emit : s->len;
    return s->text ? s->text : "";
}

bool ss_stop_text_oom(const ss_stop_text *s)
{
    return s->oom;
}
