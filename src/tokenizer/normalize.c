/* NFC, for tokenizers whose normalizer is {"type": "NFC"} (Qwen2, Qwen3): canonical decomposition
 * (tables, Hangul by arithmetic), canonical ordering of combining marks (stable, by class), then
 * canonical composition as UAX #15 describes it (a mark composes with the last starter unless a
 * mark of the same or a higher class, or a starter, stands between). Text with nothing at or above
 * U+0300 is NFC already (no combining mark, no composable pair, no singleton lives below it), so
 * most text is only scanned. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

enum { HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7 };
enum { HANGUL_LN = 19, HANGUL_VN = 21, HANGUL_TN = 28, HANGUL_N = HANGUL_VN * HANGUL_TN };
enum { HANGUL_COUNT = HANGUL_LN * HANGUL_N };

static uint32_t ccc_of(uint32_t cp)
{
    size_t lo = 0, hi = ss_tok_ccc_count;
    if (cp < 0x300) return 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ss_tok_ccc[mid].cp == cp) return ss_tok_ccc[mid].rank;
        if (ss_tok_ccc[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static const ss_tok_decomp_entry *decomp_of(uint32_t cp)
{
    size_t lo = 0, hi = ss_tok_decomp_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ss_tok_decomp[mid].cp == cp) return &ss_tok_decomp[mid];
        if (ss_tok_decomp[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static uint32_t compose_pair(uint32_t first, uint32_t second)
{
    if (first >= HANGUL_L && first < HANGUL_L + HANGUL_LN && second >= HANGUL_V &&
        second < HANGUL_V + HANGUL_VN)
        return HANGUL_S + ((first - HANGUL_L) * HANGUL_VN + (second - HANGUL_V)) * HANGUL_TN;
    if (first >= HANGUL_S && first < HANGUL_S + HANGUL_COUNT &&
        (first - HANGUL_S) % HANGUL_TN == 0 && second > HANGUL_T && second < HANGUL_T + HANGUL_TN)
        return first + (second - HANGUL_T);
    size_t lo = 0, hi = ss_tok_pairs_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const ss_tok_pair_entry *p = &ss_tok_pairs[mid];
        if (p->first == first && p->second == second) return p->composite;
        if (p->first < first || (p->first == first && p->second < second))
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Append cp's full canonical decomposition to buf (room for 4 per input code point: the longest
 * decomposition is 4 code points, a Hangul syllable 3). */
static size_t decompose(uint32_t cp, uint32_t *buf)
{
    if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_COUNT) {
        uint32_t s = cp - HANGUL_S, n = 2;
        buf[0] = HANGUL_L + s / HANGUL_N;
        buf[1] = HANGUL_V + (s % HANGUL_N) / HANGUL_TN;
        if (s % HANGUL_TN) buf[n++] = HANGUL_T + s % HANGUL_TN;
        return n;
    }
    const ss_tok_decomp_entry *d = cp >= 0xC0 ? decomp_of(cp) : NULL;
    if (!d) {
        buf[0] = cp;
        return 1;
    }
    memcpy(buf, ss_tok_decomp_pool + d->at, d->len * sizeof *buf);
    return d->len;
}

/* Stable insertion sort of each run of marks by class. */
static void reorder(uint32_t *cps, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint32_t c = cps[i], cc = ccc_of(c);
        size_t j = i;
        while (cc && j > 0 && ccc_of(cps[j - 1]) > cc) {
            cps[j] = cps[j - 1];
            j--;
        }
        cps[j] = c;
    }
}

static size_t compose(uint32_t *cps, size_t n)
{
    if (!n) return 0;
    size_t starter = 0, out = 1;
    uint32_t last = ccc_of(cps[0]) ? 256 : 0;
    for (size_t i = 1; i < n; i++) {
        uint32_t c = cps[i], cc = ccc_of(c);
        uint32_t composite = compose_pair(cps[starter], c);
        if (composite && (last < cc || last == 0)) {
            cps[starter] = composite;
            continue;
        }
        if (!cc) starter = out;
        last = cc;
        cps[out++] = c;
    }
    return out;
}

bool ss_tok_nfc(const uint8_t *s, size_t n, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    size_t i = 0;
    while (i < n && s[i] < 0xCC)
        i++;
    if (i == n) return true; /* every code point below U+0300 (lead bytes of those are < 0xCC) */
    uint32_t *cps = malloc((4 * n + 1) * sizeof *cps);
    char *text = cps ? malloc(4 * n + 1) : NULL;
    if (!text) {
        free(cps);
        return false;
    }
    size_t count = 0;
    for (i = 0; i < n;) {
        uint32_t cp;
        i = ss_tok_utf8_next(s, n, i, &cp);
        count += decompose(cp, cps + count);
    }
    reorder(cps, count);
    count = compose(cps, count);
    size_t len = 0;
    for (size_t k = 0; k < count; k++)
        len += ss_tok_utf8_put(cps[k], text + len);
    free(cps);
    *out = text;
    *out_len = len;
    return true;
}
