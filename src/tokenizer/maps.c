/* The tokenizer's containers: a chunked arena for strings that live as long as the tokenizer,
 * open-addressing hash maps (linear probing, kept at most half full, so lookups are O(1) and a
 * lookup of an absent key always ends at an empty slot) and a growable id vector. Every allocation
 * failure is reported to the caller as false/NULL; nothing aborts. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#define SS_TOK_CHUNK_BYTES (64 * 1024)

struct ss_tok_chunk {
    ss_tok_chunk *next;
    size_t used, cap;
    char data[];
};

char *ss_tok_arena_copy(ss_tok_arena *a, const void *data, size_t len)
{
    ss_tok_chunk *c = a->head;
    if (!c || c->cap - c->used < len + 1) {
        size_t cap = len + 1 > SS_TOK_CHUNK_BYTES ? len + 1 : SS_TOK_CHUNK_BYTES;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    char *p = c->data + c->used;
    if (len) memcpy(p, data, len);
    p[len] = 0;
    c->used += len + 1;
    return p;
}

void ss_tok_arena_free(ss_tok_arena *a)
{
    while (a->head) {
        ss_tok_chunk *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static ss_tok_slot *strmap_find(ss_tok_slot *slots, size_t cap, const char *key, size_t len,
                                uint32_t hash)
{
    for (size_t i = hash & (cap - 1);; i = (i + 1) & (cap - 1)) {
        ss_tok_slot *s = &slots[i];
        if (!s->key || (s->hash == hash && s->len == len && !memcmp(s->key, key, len))) return s;
    }
}

static bool strmap_grow(ss_tok_strmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    ss_tok_slot *slots = calloc(cap, sizeof *slots);
    if (!slots) return false;
    for (size_t i = 0; i < m->cap; i++) {
        ss_tok_slot *s = &m->slots[i];
        if (s->key) *strmap_find(slots, cap, s->key, s->len, s->hash) = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return true;
}

bool ss_tok_strmap_put(ss_tok_strmap *m, const char *key, size_t len, int32_t value)
{
    if ((m->count + 1) * 2 > m->cap && !strmap_grow(m)) return false;
    uint32_t hash = hash_bytes(key, len);
    ss_tok_slot *s = strmap_find(m->slots, m->cap, key, len, hash);
    if (!s->key) m->count++;
    *s = (ss_tok_slot){key, (uint32_t)len, hash, value};
    return true;
}

int32_t ss_tok_strmap_get(const ss_tok_strmap *m, const char *key, size_t len)
{
    if (!m->cap) return -1;
    ss_tok_slot *s = strmap_find(m->slots, m->cap, key, len, hash_bytes(key, len));
    return s->key ? s->value : -1;
}

void ss_tok_strmap_clear(ss_tok_strmap *m)
{
    if (m->slots) memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->count = 0;
}

void ss_tok_strmap_free(ss_tok_strmap *m)
{
    free(m->slots);
    *m = (ss_tok_strmap){0};
}

static uint64_t pair_key(int32_t left, int32_t right)
{
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

static ss_tok_pair_slot *pairmap_find(ss_tok_pair_slot *slots, size_t cap, uint64_t key)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    for (size_t i = (size_t)(h >> 32) & (cap - 1);; i = (i + 1) & (cap - 1))
        if (slots[i].key == key || slots[i].key == UINT64_MAX) return &slots[i];
}

static bool pairmap_grow(ss_tok_pairmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    ss_tok_pair_slot *slots = malloc(cap * sizeof *slots);
    if (!slots) return false;
    memset(slots, 0xff, cap * sizeof *slots);
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key != UINT64_MAX) *pairmap_find(slots, cap, m->slots[i].key) = m->slots[i];
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return true;
}

bool ss_tok_pairmap_put(ss_tok_pairmap *m, int32_t left, int32_t right, int32_t rank, int32_t id)
{
    if ((m->count + 1) * 2 > m->cap && !pairmap_grow(m)) return false;
    ss_tok_pair_slot *s = pairmap_find(m->slots, m->cap, pair_key(left, right));
    if (s->key == UINT64_MAX) m->count++;
    *s = (ss_tok_pair_slot){pair_key(left, right), rank, id};
    return true;
}

const ss_tok_pair_slot *ss_tok_pairmap_get(const ss_tok_pairmap *m, int32_t left, int32_t right)
{
    if (!m->cap) return NULL;
    ss_tok_pair_slot *s = pairmap_find(m->slots, m->cap, pair_key(left, right));
    return s->key == UINT64_MAX ? NULL : s;
}

void ss_tok_pairmap_free(ss_tok_pairmap *m)
{
    free(m->slots);
    *m = (ss_tok_pairmap){0};
}

bool ss_tok_ids_push(ss_tok_ids *v, int32_t id)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *ids = realloc(v->ids, cap * sizeof *ids);
        if (!ids) return false;
        v->ids = ids;
        v->cap = cap;
    }
    v->ids[v->len++] = id;
    return true;
}
