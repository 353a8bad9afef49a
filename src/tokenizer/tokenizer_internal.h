/* Internals of the tokenizer module shared by its files: the loaded tokenizer, two open-addressing
 * hash maps (byte strings -> id, id pairs -> merge), a chunked string arena, UTF-8 helpers and the
 * Unicode classes of the GPT-2 split regex. Nothing here is visible outside src/tokenizer. */
#ifndef SS_TOKENIZER_INTERNAL_H
#define SS_TOKENIZER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shardserve/tokenizer.h"

/* Ids above this are refused at load: the per-id tables are sized by the largest id. */
#define SS_TOK_MAX_ID (1 << 22)
/* The word cache forgets everything once it holds this many words or ids. */
#define SS_TOK_CACHE_WORDS (1 << 16)
#define SS_TOK_CACHE_IDS (1 << 20)
/* Pre-tokens longer than this (bytes) are not cached: they are rare and would crowd it. */
#define SS_TOK_CACHE_MAX_WORD 256

typedef struct {
    uint32_t lo, hi;
} ss_tok_range;
extern const ss_tok_range ss_tok_letters[];
extern const size_t ss_tok_letters_count;
extern const ss_tok_range ss_tok_numbers[];
extern const size_t ss_tok_numbers_count;

/* NFC's tables: combining classes (as ranks: only their order matters), full canonical
 * decompositions (Hangul syllables are computed), and the pairs that compose. */
typedef struct {
    uint32_t cp, rank;
} ss_tok_ccc_entry;
typedef struct {
    uint32_t cp, at, len; /* ss_tok_decomp_pool[at .. at + len) */
} ss_tok_decomp_entry;
typedef struct {
    uint32_t first, second, composite;
} ss_tok_pair_entry;
extern const ss_tok_ccc_entry ss_tok_ccc[];
extern const size_t ss_tok_ccc_count;
extern const uint32_t ss_tok_decomp_pool[];
extern const size_t ss_tok_decomp_pool_count;
extern const ss_tok_decomp_entry ss_tok_decomp[];
extern const size_t ss_tok_decomp_count;
extern const ss_tok_pair_entry ss_tok_pairs[];
extern const size_t ss_tok_pairs_count;
/* NFC of valid UTF-8 s[0..n): *out is malloc'd (NULL when s is already NFC by a quick check:
 * nothing at or above U+0300). false: no memory. */
bool ss_tok_nfc(const uint8_t *s, size_t n, char **out, size_t *out_len);

/* The classes the GPT-2 split regex tells apart: \p{L}, \p{N}, \s (Unicode White_Space, as the
 * Rust tokenizers' Oniguruma has it) and everything else. */
typedef enum { SS_TOK_LETTER, SS_TOK_NUMBER, SS_TOK_SPACE, SS_TOK_OTHER } ss_tok_class;
ss_tok_class ss_tok_classify(uint32_t cp);
/* Decode the code point at s[i] of text already validated as UTF-8; returns the next index. */
size_t ss_tok_utf8_next(const uint8_t *s, size_t n, size_t i, uint32_t *cp);
/* Byte offset of the first invalid UTF-8 sequence, or n when all of s is valid. */
size_t ss_tok_utf8_check(const uint8_t *s, size_t n);
/* Append code point cp as UTF-8 to out (room for 4 bytes); returns the bytes written. */
size_t ss_tok_utf8_put(uint32_t cp, char *out);
/* End of the pre-token (GPT-2 split regex) that starts at s[i], i < n. */
size_t ss_tok_split_next(const uint8_t *s, size_t n, size_t i);
/* The same for Llama-3's regex (max_digits 3) and Qwen2's (\p{N} alone: max_digits 1):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *   \s*[\r\n]+|\s+(?!\S)|\s+ */
size_t ss_tok_split_llama3_next(const uint8_t *s, size_t n, size_t i, unsigned max_digits);

/* How text between added tokens is cut into pre-tokens before BPE: first, optionally, ASCII
 * digits apart (the Digits pre-tokenizer: each digit, or each run), then a split regex. */
typedef enum { SS_TOK_SPLIT_NONE, SS_TOK_SPLIT_GPT2, SS_TOK_SPLIT_LLAMA3 } ss_tok_split;
typedef enum { SS_TOK_DIGITS_NONE, SS_TOK_DIGITS_EACH, SS_TOK_DIGITS_RUNS } ss_tok_digits;

/* Chunked arena: strings that live as long as the tokenizer, freed in one go. */
typedef struct ss_tok_chunk ss_tok_chunk;
typedef struct {
    ss_tok_chunk *head;
} ss_tok_arena;
char *ss_tok_arena_copy(ss_tok_arena *a, const void *data, size_t len);
void ss_tok_arena_free(ss_tok_arena *a);

/* Byte string -> int32 (keys are borrowed and must outlive the map). */
typedef struct {
    const char *key;
    uint32_t len, hash;
    int32_t value;
} ss_tok_slot;
typedef struct {
    ss_tok_slot *slots;
    size_t cap, count;
} ss_tok_strmap;
bool ss_tok_strmap_put(ss_tok_strmap *m, const char *key, size_t len, int32_t value);
int32_t ss_tok_strmap_get(const ss_tok_strmap *m, const char *key, size_t len); /* -1: absent */
void ss_tok_strmap_clear(ss_tok_strmap *m);
void ss_tok_strmap_free(ss_tok_strmap *m);

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t key; /* UINT64_MAX: empty */
    int32_t rank, id;
} ss_tok_pair_slot;
typedef struct {
    ss_tok_pair_slot *slots;
    size_t cap, count;
} ss_tok_pairmap;
bool ss_tok_pairmap_put(ss_tok_pairmap *m, int32_t left, int32_t right, int32_t rank, int32_t id);
const ss_tok_pair_slot *ss_tok_pairmap_get(const ss_tok_pairmap *m, int32_t left, int32_t right);
void ss_tok_pairmap_free(ss_tok_pairmap *m);

enum { SS_TOK_PRESENT = 1, SS_TOK_SPECIAL = 2, SS_TOK_ADDED = 4 };

/* An added token as matched in text before BPE. */
typedef struct {
    const char *content;
    uint32_t len;
    int32_t id;
    bool lstrip, rstrip, normalized;
} ss_tok_added;

typedef struct {
    int32_t *ids;
    size_t len, cap;
    size_t max; /* ss_tokenizer_encode_at_most's bound, when bounded: encoding stops past it */
    bool bounded;
} ss_tok_ids;
bool ss_tok_ids_push(ss_tok_ids *v, int32_t id);

struct ss_tokenizer {
    char *what;
    int32_t size;          /* largest id + 1 */
    int32_t id_cap;        /* room in the per-id tables */
    uint8_t *flags;        /* per id: SS_TOK_* */
    const char **piece;    /* per id: the bytes it decodes to */
    uint32_t *piece_len;   /* per id */
    ss_tok_strmap raw;     /* model vocab by decoded bytes -> id (for ignore_merges) */
    ss_tok_pairmap merges; /* by ids */
    int32_t byte_id[256];  /* the id of each byte's byte-level character */
    int32_t unk_id;        /* -1: none */
    size_t longest_token;  /* the most bytes of a word one vocab id stands for (its token or its
                              decoded piece, whichever is longer) */
    bool ignore_merges, add_prefix_space, nfc;
    ss_tok_split split;
    ss_tok_digits digits;
    unsigned max_digits;       /* SS_TOK_SPLIT_LLAMA3: digits per pre-token */
    ss_tok_ids prefix, suffix; /* TemplateProcessing's ids around the text (add_special) */
    ss_tok_added *added;       /* sorted by first byte, then longest first */
    size_t n_added;
    uint32_t added_first[257]; /* added[added_first[b] .. added_first[b+1]) start with byte b */
    ss_tok_arena arena;
    /* word cache: pre-token bytes -> ids, guarded by cache_lock */
    pthread_mutex_t cache_lock;
    ss_tok_strmap cache;
    ss_tok_arena cache_keys;
    ss_tok_ids cache_ids;
};

/* BPE of one pre-token (raw bytes) appended to out, through the word cache. */
ss_status *ss_tok_bpe_word(ss_tokenizer *tk, const uint8_t *word, size_t len, ss_tok_ids *out);
/* GPT-2's byte -> character map (bytes_to_unicode) and its inverse (-1: not a byte's char). */
uint32_t ss_tok_byte_char(uint8_t b);
int ss_tok_char_byte(uint32_t cp);

#endif
