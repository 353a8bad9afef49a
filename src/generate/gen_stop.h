/*
 * gen_stop: stop strings, applied in the token loop for every front end. A sequence's tokens are
 * detokenized as they are sampled (the servable's tokenizer.json); the text so far is scanned for
 * the earliest stop string, and one that appears ends the sequence (finish_reason "stop").
 *
 * What the outputs mean (vLLM's rules): the text ends before the stop string, which is never part
 * of it; the tokens keep every sampled token up to and including the one that completed the match,
 * even when the stop string ends inside it (so tokens and text may disagree on the tail: the
 * tokens are what the model produced, the text what the client asked to see).
 *
 * Streaming: text is released only once no stop string can still claim it (a tail that is a proper
 * prefix of one is held, as is an incomplete UTF-8 sequence), and with stop strings a token only
 * once all of its text has been released; the tokens held when a stop string completes (those
 * whose text overlaps it) come out in the last piece, so the pieces add up to the whole outputs.
 */
#ifndef SS_GENERATE_STOP_H
#define SS_GENERATE_STOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shardserve/core.h"
#include "shardserve/tokenizer.h"

#define SS_GEN_MAX_STOPS 4        /* stop strings per request (OpenAI's limit) */
#define SS_GEN_MAX_STOP_BYTES 256 /* bytes of one stop string */

typedef struct {
    size_t emit;  /* text[0..emit) is final: it can be sent */
    bool stopped; /* a stop string begins at emit: the output ends there */
    int which;    /* the stop string found (index into stops), -1 if none */
} ss_stop_result;

/* Scan text[0..len) for stops[0..n) (empty strings ignored). from: bytes already scanned and
 * found free of a complete stop string (a match may still end after it); pass 0 to rescan. */
ss_stop_result ss_stop_scan(const char *const *stops, int n, const char *text, size_t len,
                            size_t from);

/* One sequence's text and stop strings (n may be 0: text only). The strings are copied. */
typedef struct ss_stop_text ss_stop_text;
ss_status *ss_stop_text_new(const ss_tokenizer *tk, const char *const *stops, int n,
                            ss_stop_text **out);
void ss_stop_text_free(ss_stop_text *s);

/* The next sampled token; true: a stop string is complete (the sequence must end with it). An id
 * outside the vocabulary reads as U+FFFD, as decoding does. */
bool ss_stop_text_push(ss_stop_text *s, int64_t token);
/* The sequence has ended: what the detokenizer held joins the text, and everything is final. */
void ss_stop_text_finish(ss_stop_text *s);
/* What became final since the last call: tokens [*from, *to) of those pushed and a text piece
 * (valid until the next push). */
void ss_stop_text_take(ss_stop_text *s, size_t *from, size_t *to, const char **text, size_t *len);
/* The whole text (after finish: without the stop string and what followed it). */
const char *ss_stop_text_all(const ss_stop_text *s, size_t *len);
bool ss_stop_text_oom(const ss_stop_text *s); /* a push ran out of memory: the text is short */

#endif
