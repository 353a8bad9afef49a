/* Byte-level pre-tokenization: UTF-8 checks, the Unicode classes and GPT-2's split regex
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * written out by hand (leftmost-first alternation as a backtracking engine runs it), and the
 * bytes_to_unicode map that gives every byte a printable character in the vocabulary.
 * \s is Unicode White_Space, as in the Rust tokenizers (JavaScript's \s differs on U+0085 and
 * U+FEFF only). */
#include "tokenizer_internal.h"

static bool in_ranges(const ss_tok_range *r, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

static bool is_white_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

ss_tok_class ss_tok_classify(uint32_t cp)
{
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return SS_TOK_LETTER;
        if (cp >= '0' && cp <= '9') return SS_TOK_NUMBER;
        return is_white_space(cp) ? SS_TOK_SPACE : SS_TOK_OTHER;
    }
    if (is_white_space(cp)) return SS_TOK_SPACE;
    if (in_ranges(ss_tok_letters, ss_tok_letters_count, cp)) return SS_TOK_LETTER;
    if (in_ranges(ss_tok_numbers, ss_tok_numbers_count, cp)) return SS_TOK_NUMBER;
    return SS_TOK_OTHER;
}

size_t ss_tok_utf8_next(const uint8_t *s, size_t n, size_t i, uint32_t *cp)
{
    uint8_t b = s[i];
    if (b < 0x80) {
        *cp = b;
        return i + 1;
    }
    size_t extra = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : 1;
    uint32_t c = b & (0x3F >> extra);
    for (size_t k = 1; k <= extra && i + k < n; k++)
        c = c << 6 | (s[i + k] & 0x3F);
    *cp = c;
    return i + 1 + extra;
}

size_t ss_tok_utf8_check(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF)
            need = 1;
        else if (b >= 0xE0 && b <= 0xEF)
            need = 2, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
        else if (b >= 0xF0 && b <= 0xF4)
            need = 3, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
        else
            return i;
        if (n - i <= need || s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += need + 1;
    }
    return n;
}

size_t ss_tok_utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* 's 't 'm 'd or 're 've 'll after the apostrophe at s[0]: bytes matched after it, or 0. */
static size_t contraction_len(const uint8_t *s, size_t n)
{
    if (n >= 1 && (s[0] == 's' || s[0] == 't' || s[0] == 'm' || s[0] == 'd')) return 1;
    if (n >= 2 && ((s[0] == 'r' && s[1] == 'e') || (s[0] == 'v' && s[1] == 'e') ||
                   (s[0] == 'l' && s[1] == 'l')))
        return 2;
    return 0;
}

/* End of the run of characters of class cls (other = not space, letter or number) from s[i]. */
static size_t run_end(const uint8_t *s, size_t n, size_t i, ss_tok_class cls)
{
    while (i < n) {
        uint32_t cp;
        size_t next = ss_tok_utf8_next(s, n, i, &cp);
        if (ss_tok_classify(cp) != cls) break;
        i = next;
    }
    return i;
}

/* \s+(?!\S) then \s+: a whitespace run, less its last character when a non-space follows (that
 * character then leads the next pre-token, as " word"), unless the run is one character. */
static size_t space_end(const uint8_t *s, size_t n, size_t i)
{
    size_t start = i, last = i;
    while (i < n) {
        uint32_t cp;
        size_t next = ss_tok_utf8_next(s, n, i, &cp);
        if (ss_tok_classify(cp) != SS_TOK_SPACE) break;
        last = i;
        i = next;
    }
    return i == n || last == start ? i : last;
}

size_t ss_tok_split_next(const uint8_t *s, size_t n, size_t i)
{
    uint32_t cp;
    size_t after = ss_tok_utf8_next(s, n, i, &cp);
    if (cp == '\'') {
        size_t k = contraction_len(s + after, n - after);
        if (k) return after + k;
    }
    if (cp == ' ' && after < n) {
        uint32_t next_cp;
        ss_tok_utf8_next(s, n, after, &next_cp);
        ss_tok_class next_cls = ss_tok_classify(next_cp);
        if (next_cls != SS_TOK_SPACE) return run_end(s, n, after, next_cls);
    }
    ss_tok_class cls = ss_tok_classify(cp);
    return cls == SS_TOK_SPACE ? space_end(s, n, i) : run_end(s, n, i, cls);
}

/* bytes_to_unicode: the printable bytes ! .. ~, ¡ .. ¬ and ® .. ÿ stand for themselves, the other
 * 68 get 256, 257, ... in byte order. */
static bool byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t ss_tok_byte_char(uint8_t b)
{
    if (byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (unsigned k = 0; k < b; k++)
        n += !byte_is_printable(k);
    return 256 + n;
}

int ss_tok_char_byte(uint32_t cp)
{
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    uint32_t n = 256;
    for (unsigned b = 0; b < 256; b++)
        if (!byte_is_printable(b) && n++ == cp) return (int)b;
    return -1;
}

static bool is_cr_lf(uint32_t cp)
{
    return cp == '\r' || cp == '\n';
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d) after the apostrophe at s[0]: bytes matched after it, or 0.
 * Case folding is Unicode's: U+017F (long s) folds to s. */
static size_t contraction_len_nocase(const uint8_t *s, size_t n)
{
    uint8_t a = n >= 1 ? s[0] | 0x20 : 0, b = n >= 2 ? s[1] | 0x20 : 0;
    if (n >= 2 && s[0] == 0xC5 && s[1] == 0xBF) return 2;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 1;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 2;
    return 0;
}

/* \s*[\r\n]+ then \s+(?!\S) then \s+: a whitespace run up to and including its last CR or LF
 * when it has one, else as in GPT-2's regex. */
static size_t space_newline_end(const uint8_t *s, size_t n, size_t i)
{
    size_t j = i, after_newline = 0;
    while (j < n) {
        uint32_t cp;
        size_t next = ss_tok_utf8_next(s, n, j, &cp);
        if (ss_tok_classify(cp) != SS_TOK_SPACE) break;
        if (is_cr_lf(cp)) after_newline = next;
        j = next;
    }
    return after_newline ? after_newline : space_end(s, n, i);
}

/* End of the run of \p{N} from s[i], at most max characters (0: no limit). */
static size_t digits_end(const uint8_t *s, size_t n, size_t i, unsigned max)
{
    for (unsigned k = 0; i < n && (!max || k < max); k++) {
        uint32_t cp;
        size_t next = ss_tok_utf8_next(s, n, i, &cp);
        if (ss_tok_classify(cp) != SS_TOK_NUMBER) break;
        i = next;
    }
    return i;
}

/* ?[^\s\p{L}\p{N}]+[\r\n]* from s[i] (the optional space already passed). */
static size_t other_then_newlines_end(const uint8_t *s, size_t n, size_t i)
{
    i = run_end(s, n, i, SS_TOK_OTHER);
    while (i < n && (s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

size_t ss_tok_split_llama3_next(const uint8_t *s, size_t n, size_t i, unsigned max_digits)
{
    uint32_t cp, next_cp = 0;
    size_t after = ss_tok_utf8_next(s, n, i, &cp);
    if (cp == '\'') {
        size_t k = contraction_len_nocase(s + after, n - after);
        if (k) return after + k;
    }
    ss_tok_class cls = ss_tok_classify(cp), next_cls = SS_TOK_SPACE;
    if (after < n) {
        ss_tok_utf8_next(s, n, after, &next_cp);
        next_cls = ss_tok_classify(next_cp);
    }
    if (cls == SS_TOK_LETTER) return run_end(s, n, i, SS_TOK_LETTER);
    if (cls != SS_TOK_NUMBER && !is_cr_lf(cp) && after < n && next_cls == SS_TOK_LETTER)
        return run_end(s, n, after, SS_TOK_LETTER);
    if (cls == SS_TOK_NUMBER) return digits_end(s, n, i, max_digits);
    if (cp == ' ' && after < n && next_cls == SS_TOK_OTHER)
        return other_then_newlines_end(s, n, after);
    if (cls == SS_TOK_OTHER) return other_then_newlines_end(s, n, i);
    return space_newline_end(s, n, i);
}
