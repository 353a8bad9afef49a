/* BPE of one pre-token, as the Rust tokenizers' Word::merge_all does it: the word starts as one
 * symbol per byte (its byte-level character's id); a min-heap holds every adjacent pair that has
 * a merge, ordered by (merge rank, position); popping the best pair merges it unless the entry
 * went stale (a neighbour changed since), and the two pairs the merge creates are pushed. That is
 * O(n log n) in the word's length, where rescanning for the best pair after each merge would be
 * O(n^2). Results are cached per pre-token, because text repeats its words. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t id;
    int32_t prev, next; /* -1: none */
    bool alive;
} symbol;

typedef struct {
    int32_t rank, pos, id;
} heap_entry;

typedef struct {
    symbol *syms;
    heap_entry *heap;
    size_t heap_len;
} word_state;

static bool entry_before(const heap_entry *a, const heap_entry *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(word_state *w, heap_entry e)
{
    size_t i = w->heap_len++;
    while (i > 0 && entry_before(&e, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = e;
}

static heap_entry heap_pop(word_state *w)
{
    heap_entry top = w->heap[0], last = w->heap[--w->heap_len];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= w->heap_len) break;
        if (child + 1 < w->heap_len && entry_before(&w->heap[child + 1], &w->heap[child])) child++;
        if (!entry_before(&w->heap[child], &last)) break;
        w->heap[i] = w->heap[child];
        i = child;
    }
    if (w->heap_len) w->heap[i] = last;
    return top;
}

static void push_pair(const ss_tokenizer *tk, word_state *w, int32_t pos)
{
    if (pos < 0 || w->syms[pos].next < 0) return;
    const ss_tok_pair_slot *m =
        ss_tok_pairmap_get(&tk->merges, w->syms[pos].id, w->syms[w->syms[pos].next].id);
    if (m) heap_push(w, (heap_entry){m->rank, pos, m->id});
}

/* The heap never holds more than the word's pairs plus two per merge: 3 * len entries. */
static void merge_all(const ss_tokenizer *tk, word_state *w)
{
    while (w->heap_len) {
        heap_entry e = heap_pop(w);
        symbol *left = &w->syms[e.pos];
        if (!left->alive || left->next < 0) continue;
        const ss_tok_pair_slot *m =
            ss_tok_pairmap_get(&tk->merges, left->id, w->syms[left->next].id);
        if (!m || m->id != e.id) continue; /* stale: a neighbour was merged since */
        symbol *right = &w->syms[left->next];
        left->id = e.id;
        right->alive = false;
        left->next = right->next;
        if (right->next >= 0) w->syms[right->next].prev = e.pos;
        push_pair(tk, w, left->prev);
        push_pair(tk, w, e.pos);
    }
}

static ss_status *bpe_uncached(const ss_tokenizer *tk, const uint8_t *word, size_t len,
                               ss_tok_ids *out)
{
    if (!len) return NULL;
    word_state w = {malloc(len * sizeof *w.syms), malloc(3 * len * sizeof *w.heap), 0};
    if (!w.syms || !w.heap) {
        free(w.syms);
        free(w.heap);
        return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for a %zu-byte word", tk->what, len);
    }
    for (size_t i = 0; i < len; i++)
        w.syms[i] =
            (symbol){tk->byte_id[word[i]], (int32_t)i - 1, i + 1 < len ? (int32_t)i + 1 : -1, true};
    for (size_t i = 0; i + 1 < len; i++)
        push_pair(tk, &w, (int32_t)i);
    merge_all(tk, &w);
    bool ok = true;
    for (int32_t i = 0; i >= 0 && ok; i = w.syms[i].next)
        ok = ss_tok_ids_push(out, w.syms[i].id);
    free(w.syms);
    free(w.heap);
    return ok ? NULL : ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for ids", tk->what);
}

/* Look the word up; on a hit append its ids to out. Called with the cache lock held. */
static bool cache_lookup(ss_tokenizer *tk, const uint8_t *word, size_t len, ss_tok_ids *out)
{
    int32_t at = ss_tok_strmap_get(&tk->cache, (const char *)word, len);
    if (at < 0) return false;
    int32_t count = tk->cache_ids.ids[at];
    for (int32_t k = 0; k < count; k++)
        if (!ss_tok_ids_push(out, tk->cache_ids.ids[at + 1 + k])) return false;
    return true;
}

/* Remember ids[0..count) for the word; a full cache starts over. Failure only costs speed. */
static void cache_store(ss_tokenizer *tk, const uint8_t *word, size_t len, const int32_t *ids,
                        size_t count)
{
    if (tk->cache.count >= SS_TOK_CACHE_WORDS || tk->cache_ids.len + count + 1 > SS_TOK_CACHE_IDS) {
        ss_tok_strmap_clear(&tk->cache);
        ss_tok_arena_free(&tk->cache_keys);
        tk->cache_ids.len = 0;
    }
    size_t at = tk->cache_ids.len;
    const char *key = ss_tok_arena_copy(&tk->cache_keys, word, len);
    if (!key || !ss_tok_ids_push(&tk->cache_ids, (int32_t)count)) return;
    for (size_t k = 0; k < count; k++)
        if (!ss_tok_ids_push(&tk->cache_ids, ids[k])) {
            tk->cache_ids.len = at;
            return;
        }
    if (!ss_tok_strmap_put(&tk->cache, key, len, (int32_t)at)) tk->cache_ids.len = at;
}

ss_status *ss_tok_bpe_word(ss_tokenizer *tk, const uint8_t *word, size_t len, ss_tok_ids *out)
{
    if (tk->ignore_merges) {
        int32_t whole = ss_tok_strmap_get(&tk->raw, (const char *)word, len);
        if (whole >= 0)
            return ss_tok_ids_push(out, whole)
                       ? NULL
                       : ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for ids", tk->what);
    }
    bool cacheable = len <= SS_TOK_CACHE_MAX_WORD;
    if (cacheable) {
        size_t before = out->len;
        pthread_mutex_lock(&tk->cache_lock);
        bool hit = cache_lookup(tk, word, len, out);
        pthread_mutex_unlock(&tk->cache_lock);
        if (hit) return NULL;
        out->len = before;
    }
    size_t start = out->len;
    ss_status *st = bpe_uncached(tk, word, len, out);
    if (st || !cacheable) return st;
    pthread_mutex_lock(&tk->cache_lock);
    cache_store(tk, word, len, out->ids + start, out->len - start);
    pthread_mutex_unlock(&tk->cache_lock);
    return NULL;
}
