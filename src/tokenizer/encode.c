/* Text to ids: added tokens are found first (leftmost, longest at each position, over all added
 * tokens at once as tokenizers.js does; lstrip/rstrip eat the whitespace beside them), the text
 * between them is pre-tokenized with GPT-2's or Llama-3's regex and each pre-token goes through
 * BPE; with add_special, the post-processor's template ids go around the whole. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* Which added tokens a pass matches: with a normalizer, those matched on the raw text first
 * (normalized false), then those matched on the normalized text (as both references do); without
 * one, all at once (as tokenizers.js does). */
typedef enum { PASS_ALL, PASS_RAW, PASS_NORMALIZED } added_pass;

static const ss_tok_added *added_at(const ss_tokenizer *tk, const uint8_t *s, size_t n, size_t i,
                                    added_pass pass)
{
    for (uint32_t k = tk->added_first[s[i]]; k < tk->added_first[s[i] + 1]; k++) {
        const ss_tok_added *a = &tk->added[k];
        if (pass != PASS_ALL && a->normalized != (pass == PASS_NORMALIZED)) continue;
        if (a->len <= n - i && !memcmp(a->content, s + i, a->len)) return a;
    }
    return NULL;
}

static bool space_at(const uint8_t *s, size_t n, size_t i, size_t *next)
{
    uint32_t cp;
    *next = ss_tok_utf8_next(s, n, i, &cp);
    return ss_tok_classify(cp) == SS_TOK_SPACE;
}

static size_t skip_space_forward(const uint8_t *s, size_t start, size_t end)
{
    size_t next;
    while (start < end && space_at(s, end, start, &next))
        start = next;
    return start;
}

static size_t skip_space_backward(const uint8_t *s, size_t start, size_t end)
{
    while (end > start) {
        size_t i = end - 1, next;
        while (i > start && (s[i] & 0xC0) == 0x80)
            i--;
        if (!space_at(s, end, i, &next)) break;
        end = i;
    }
    return end;
}

/* Past ss_tokenizer_encode_at_most's bound? Checked after each word and added token. */
static ss_status *over_max(const ss_tok_ids *out)
{
    if (!out->bounded || out->len <= out->max) return NULL;
    return ss_errf(SS_ERR_LIMIT, "the text gives more than %zu ids", out->max);
}

/* Before a word's merges: a word of n bytes gives at least n / longest_token ids (each stands for
 * at most that many of its bytes), so one that must cross the bound is refused unencoded; the
 * words encoded under a bound are then at most (max + 1) x longest_token bytes. Not with an unk
 * token, which may stand for a run of unknown bytes. */
static ss_status *word_fits(const ss_tokenizer *tk, size_t n, const ss_tok_ids *out)
{
    if (!out->bounded || tk->unk_id >= 0 || !tk->longest_token) return NULL;
    size_t fewest = n / tk->longest_token + (n % tk->longest_token != 0);
    if (out->len <= out->max && fewest <= out->max - out->len) return NULL;
    return ss_errf(SS_ERR_LIMIT, "the text gives more than %zu ids", out->max);
}

static ss_status *encode_words(ss_tokenizer *tk, const uint8_t *s, size_t n, ss_tok_ids *out)
{
    if (tk->split == SS_TOK_SPLIT_NONE) {
        ss_status *st = word_fits(tk, n, out);
        return st ? st : ss_tok_bpe_word(tk, s, n, out);
    }
    for (size_t i = 0; i < n;) {
        size_t end = tk->split == SS_TOK_SPLIT_GPT2
                         ? ss_tok_split_next(s, n, i)
                         : ss_tok_split_llama3_next(s, n, i, tk->max_digits);
        ss_status *st = word_fits(tk, end - i, out);
        if (!st) st = ss_tok_bpe_word(tk, s + i, end - i, out);
        if (!st) st = over_max(out);
        if (st) return st;
        i = end;
    }
    return NULL;
}

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* The Digits pre-tokenizer: ASCII digits apart from the rest, each alone or as runs. */
static ss_status *encode_digit_pieces(ss_tokenizer *tk, const uint8_t *s, size_t n, ss_tok_ids *out)
{
    for (size_t i = 0; i < n;) {
        size_t end = i + 1;
        if (!is_digit(s[i]))
            while (end < n && !is_digit(s[end]))
                end++;
        else if (tk->digits == SS_TOK_DIGITS_RUNS)
            while (end < n && is_digit(s[end]))
                end++;
        ss_status *st = encode_words(tk, s + i, end - i, out);
        if (st) return st;
        i = end;
    }
    return NULL;
}

/* Text between added tokens: ByteLevel's add_prefix_space applies to each such section (it is
 * refused together with Digits, which would make it apply to each piece). */
static ss_status *encode_section(ss_tokenizer *tk, const uint8_t *s, size_t n, ss_tok_ids *out)
{
    if (!n) return NULL;
    if (tk->digits != SS_TOK_DIGITS_NONE) return encode_digit_pieces(tk, s, n, out);
    if (!tk->add_prefix_space || s[0] == ' ') return encode_words(tk, s, n, out);
    uint8_t *spaced = malloc(n + 1);
    if (!spaced) return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for %zu bytes", tk->what, n);
    spaced[0] = ' ';
    memcpy(spaced + 1, s, n);
    ss_status *st = encode_words(tk, spaced, n + 1, out);
    free(spaced);
    return st;
}

static ss_status *encode_text(ss_tokenizer *tk, const uint8_t *s, size_t n, added_pass pass,
                              ss_tok_ids *out);

/* Text between added tokens: normalized first when the pass is on raw text. */
static ss_status *encode_gap(ss_tokenizer *tk, const uint8_t *s, size_t n, added_pass pass,
                             ss_tok_ids *out)
{
    if (pass != PASS_RAW) return encode_section(tk, s, n, out);
    char *normal;
    size_t len;
    if (!ss_tok_nfc(s, n, &normal, &len))
        return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory to normalize %zu bytes", tk->what, n);
    ss_status *st = encode_text(tk, normal ? (const uint8_t *)normal : s, normal ? len : n,
                                PASS_NORMALIZED, out);
    free(normal);
    return st;
}

static ss_status *encode_text(ss_tokenizer *tk, const uint8_t *s, size_t n, added_pass pass,
                              ss_tok_ids *out)
{
    size_t gap = 0, pos = 0;
    bool strip_next = false;
    while (pos < n) {
        const ss_tok_added *a = tk->n_added ? added_at(tk, s, n, pos, pass) : NULL;
        if (!a) {
            pos++;
            continue;
        }
        size_t gap_start = strip_next ? skip_space_forward(s, gap, pos) : gap;
        size_t gap_end = a->lstrip ? skip_space_backward(s, gap_start, pos) : pos;
        ss_status *st = encode_gap(tk, s + gap_start, gap_end - gap_start, pass, out);
        if (st) return st;
        if (!ss_tok_ids_push(out, a->id))
            return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for ids", tk->what);
        if ((st = over_max(out))) return st;
        pos += a->len;
        gap = pos;
        strip_next = a->rstrip;
    }
    size_t gap_start = strip_next ? skip_space_forward(s, gap, n) : gap;
    return encode_gap(tk, s + gap_start, n - gap_start, pass, out);
}

static bool push_all(ss_tok_ids *out, const ss_tok_ids *ids)
{
    for (size_t i = 0; i < ids->len; i++)
        if (!ss_tok_ids_push(out, ids->ids[i])) return false;
    return true;
}

ss_status *ss_tokenizer_encode(ss_tokenizer *tk, const char *text, size_t len, bool add_special,
                               int32_t **ids, size_t *n_ids)
{
    return ss_tokenizer_encode_at_most(tk, text, len, add_special, SIZE_MAX, ids, n_ids);
}

ss_status *ss_tokenizer_encode_at_most(ss_tokenizer *tk, const char *text, size_t len,
                                       bool add_special, size_t max_ids, int32_t **ids,
                                       size_t *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    if (len > SS_TOKENIZER_MAX_TEXT_BYTES)
        return ss_errf(SS_ERR_LIMIT, "text of %zu bytes exceeds the tokenizer's limit of %zu bytes",
                       len, SS_TOKENIZER_MAX_TEXT_BYTES);
    const uint8_t *s = (const uint8_t *)text;
    size_t bad = ss_tok_utf8_check(s, len);
    if (bad < len)
        return ss_errf(SS_ERR_INVALID, "text is not valid UTF-8 at byte %zu (0x%02x)", bad, s[bad]);
    ss_tok_ids out = {.max = max_ids, .bounded = max_ids != SIZE_MAX};
    ss_status *st = NULL;
    if (add_special && !push_all(&out, &tk->prefix))
        st = ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for ids", tk->what);
    if (!st) st = encode_text(tk, s, len, tk->nfc ? PASS_RAW : PASS_ALL, &out);
    if (!st && add_special && !push_all(&out, &tk->suffix))
        st = ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for ids", tk->what);
    if (!st) st = over_max(&out);
    if (st) {
        free(out.ids);
        return st;
    }
    *ids = out.ids;
    *n_ids = out.len;
    return NULL;
}
