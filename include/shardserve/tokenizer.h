/* Hugging Face byte-level BPE tokenizers (GPT-2 / Llama-3 style tokenizer.json) in C: text to
 * token ids and back, and an incremental detokenizer for streaming.
 *
 * What is read from tokenizer.json: model.type "BPE" (vocab, merges as "a b" strings or ["a","b"]
 * pairs, unk_token, ignore_merges), normalizer NFC (Qwen2/Qwen3) or none, added_tokens (matched
 * before BPE, leftmost-longest, with lstrip/rstrip), pre_tokenizer ByteLevel (GPT-2's split regex,
 * add_prefix_space) or Sequence [Digits?, Split with Llama-3's (or Qwen2's) regex?, ByteLevel],
 * post_processor ByteLevel / TemplateProcessing (special ids around the text) and decoder
 * ByteLevel. Anything else (other normalizers, models or pre-tokenizers, byte_fallback, dropout,
 * subword prefixes, other split regexes) is refused at load with SS_ERR_UNSUPPORTED naming the
 * field, so a tokenizer that loads encodes exactly as the reference does.
 *
 * Guarantees: encode and decode never crash on user input: text that is not UTF-8 and ids out of
 * range are errors naming the byte offset or the id. Decoding is lossy like the reference (bytes
 * that are not UTF-8 become U+FFFD, one per maximal invalid subpart). The streaming detokenizer
 * returns only complete UTF-8, and the concatenation of what it returns equals ss_tokenizer_decode
 * of the same ids.
 *
 * Thread safety: a loaded tokenizer may be shared by threads (its word cache has its own lock); a
 * stream belongs to one sequence and one thread at a time.
 */
#ifndef SHARDSERVE_TOKENIZER_H
#define SHARDSERVE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shardserve/core.h"

typedef struct ss_tokenizer ss_tokenizer;
typedef struct ss_tokenizer_stream ss_tokenizer_stream;

/* Limits, checked with an error naming them. */
#define SS_TOKENIZER_MAX_JSON_BYTES ((size_t)1 << 30) /* tokenizer.json size */
#define SS_TOKENIZER_MAX_TEXT_BYTES ((size_t)1 << 30) /* one encode call */

/* Load tokenizer.json from a file, or parse it from memory (`what` names it in errors). */
ss_status *ss_tokenizer_load(const char *path, ss_tokenizer **out);
ss_status *ss_tokenizer_parse(const char *json, size_t len, const char *what, ss_tokenizer **out);
void ss_tokenizer_free(ss_tokenizer *tk);

/* One more than the largest id (model vocab and added tokens). */
int32_t ss_tokenizer_vocab_size(const ss_tokenizer *tk);

/* Text (UTF-8, `len` bytes) to ids; *ids is malloc'd (free() it), *n_ids its length.
 * add_special puts the post-processor's special tokens around the text (a Llama-3 BOS), as
 * Hugging Face's encode(add_special_tokens=True) does; a GPT-2 tokenizer has none. */
ss_status *ss_tokenizer_encode(ss_tokenizer *tk, const char *text, size_t len, bool add_special,
                               int32_t **ids, size_t *n_ids);
/* The same, refused (SS_ERR_LIMIT, nothing returned) as soon as the text has given more than
 * max_ids ids (SIZE_MAX: no bound), without encoding the rest: a server bounds a prompt by its
 * context this way before it spends the time on a text of megabytes, with spaces or without (a
 * word that must give more ids than are left is refused before its merges). */
ss_status *ss_tokenizer_encode_at_most(ss_tokenizer *tk, const char *text, size_t len,
                                       bool add_special, size_t max_ids, int32_t **ids,
                                       size_t *n_ids);

/* Ids to text (malloc'd, NUL-terminated, *len bytes without the NUL). skip_special leaves out
 * added tokens marked special. */
ss_status *ss_tokenizer_decode(const ss_tokenizer *tk, const int32_t *ids, size_t n_ids,
                               bool skip_special, char **text, size_t *len);

/* Incremental detokenizer: push one id at a time, get back the text it completes (possibly
 * empty: an incomplete UTF-8 sequence is held until the ids that finish it arrive). *text points
 * into the stream and stays valid until the next call on it. finish returns what is still held
 * (an incomplete sequence becomes U+FFFD, as in ss_tokenizer_decode). */
ss_status *ss_tokenizer_stream_new(const ss_tokenizer *tk, bool skip_special,
                                   ss_tokenizer_stream **out);
ss_status *ss_tokenizer_stream_push(ss_tokenizer_stream *s, int32_t id, const char **text,
                                    size_t *len);
ss_status *ss_tokenizer_stream_finish(ss_tokenizer_stream *s, const char **text, size_t *len);
/* Bytes of an incomplete UTF-8 sequence held now (0: every id pushed is wholly in the text). */
size_t ss_tokenizer_stream_held(const ss_tokenizer_stream *s);
void ss_tokenizer_stream_free(ss_tokenizer_stream *s);

#endif
