/*
 * The KV-cache block pool (kvpool.h): blocks, the free list, sequences, and attention read
 * straight from the blocks. Invariants: every block is either on the free list or on exactly one
 * sequence's chain (next[] links both); a sequence of len tokens holds ceil(len / block_size)
 * blocks or more (a step takes its blocks before it writes); positions at or past len are never
 * read.
 */
#include "kvpool.h"

#include "isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t id, len;
    int32_t first, last, n_blocks;
    bool used;
} kv_seq;

struct ss_kvpool {
    size_t bytes;
    int block_size, n_layers, n_bound;
    int64_t n_blocks; /* 0 until the first layer is bound */
    int32_t *next;    /* per block: the next of its chain (sequence or free list), -1 at the end */
    int32_t free_head;
    int64_t n_free;
    int32_t *table; /* scratch: one sequence's blocks in order */
    float *scores;  /* scratch: one query's scores, n_blocks * block_size */
    ss_kv_layer *layers;
    kv_seq *seqs;
    int n_seqs, cap_seqs;
};

ss_status *ss_kvpool_create(size_t bytes, int block_size, int n_layers, ss_kvpool **out)
{
    *out = NULL;
    if (block_size < 1 || n_layers < 1 || bytes == 0)
        return ss_errf(SS_ERR_INVALID, "KV cache pool: %zu bytes, block size %d, %d layers", bytes,
                       block_size, n_layers);
    ss_kvpool *p = calloc(1, sizeof *p);
    if (p) p->layers = calloc((size_t)n_layers, sizeof *p->layers);
    if (!p || !p->layers) {
        free(p);
        return ss_errf(SS_ERR_NOMEM, "KV cache pool");
    }
    p->bytes = bytes, p->block_size = block_size, p->n_layers = n_layers, p->free_head = -1;
    *out = p;
    return NULL;
}

void ss_kvpool_free(ss_kvpool *p)
{
    if (!p) return;
    for (int i = 0; i < p->n_bound; i++) {
        free(p->layers[i].k);
        free(p->layers[i].v);
    }
    free(p->layers);
    free(p->next);
    free(p->table);
    free(p->scores);
    free(p->seqs);
    free(p);
}

static double mib(size_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* Fixes the block count from the first layer's geometry: the pool's bytes shared by n_layers
 * layers like it. */
static ss_status *kvpool_size(ss_kvpool *p, int kv_heads, int head_dim)
{
    size_t per_block = 2 * (size_t)kv_heads * (size_t)p->block_size * (size_t)head_dim *
                       sizeof(float) * (size_t)p->n_layers;
    int64_t n = (int64_t)(p->bytes / per_block);
    if (n > INT32_MAX / p->block_size) n = INT32_MAX / p->block_size;
    if (n < 1)
        return ss_errf(SS_ERR_LIMIT,
                       "the KV cache of %.2f MiB (--kv-cache-mb) cannot hold one block of %d "
                       "tokens for %d layers (%.2f MiB)",
                       mib(p->bytes), p->block_size, p->n_layers, mib(per_block));
    p->next = malloc((size_t)n * sizeof *p->next);
    p->table = malloc((size_t)n * sizeof *p->table);
    p->scores = malloc((size_t)n * (size_t)p->block_size * sizeof *p->scores);
    if (!p->next || !p->table || !p->scores) return ss_errf(SS_ERR_NOMEM, "KV cache pool");
    for (int64_t b = 0; b < n; b++)
        p->next[b] = b + 1 < n ? (int32_t)(b + 1) : -1;
    p->free_head = 0, p->n_free = n, p->n_blocks = n;
    return NULL;
}

/* The layers' storage for the pool's current block count. */
static ss_status *layer_alloc(ss_kvpool *p, ss_kv_layer *l)
{
    size_t n =
        (size_t)p->n_blocks * (size_t)l->kv_heads * (size_t)p->block_size * (size_t)l->head_dim;
    l->k = malloc(n * sizeof(float));
    l->v = malloc(n * sizeof(float));
    if (l->k && l->v) return NULL;
    free(l->k), free(l->v);
    l->k = l->v = NULL;
    return ss_errf(SS_ERR_NOMEM, "KV cache layer %lld: %.1f MiB", (long long)l->id,
                   mib(2 * n * sizeof(float)));
}

ss_status *ss_kvpool_layer(ss_kvpool *p, int64_t id, int kv_heads, int head_dim, ss_kv_layer **out)
{
    for (int i = 0; i < p->n_bound; i++) {
        ss_kv_layer *l = &p->layers[i];
        if (l->id != id) continue;
        if (l->kv_heads != kv_heads || l->head_dim != head_dim)
            return ss_errf(SS_ERR_INVALID,
                           "KV cache layer %lld was planned with %d heads of %d, now %d of %d",
                           (long long)id, l->kv_heads, l->head_dim, kv_heads, head_dim);
        return *out = l, NULL;
    }
    if (p->n_bound == p->n_layers)
        return ss_errf(SS_ERR_INVALID, "more KV cache layers than the %d the pool was made for",
                       p->n_layers);
    ss_status *st = p->n_blocks ? NULL : kvpool_size(p, kv_heads, head_dim);
    if (st) return st;
    ss_kv_layer *l = &p->layers[p->n_bound];
    *l = (ss_kv_layer){id, kv_heads, head_dim, NULL, NULL};
    st = layer_alloc(p, l);
    if (st) return st;
    p->n_bound++;
    return *out = l, NULL;
}

ss_status *ss_kvpool_set_bytes(ss_kvpool *p, size_t bytes)
{
    if (!bytes) return ss_errf(SS_ERR_INVALID, "a KV cache pool of 0 bytes");
    for (int i = 0; i < p->n_seqs; i++)
        if (p->seqs[i].used)
            return ss_errf(SS_ERR_INVALID, "the KV cache pool holds sequences: it keeps its size");
    size_t old = p->bytes;
    p->bytes = bytes;
    if (!p->n_bound) return NULL;
    /* planned already (a load plans the model): the same layers over another block count */
    free(p->next), free(p->table), free(p->scores);
    p->next = p->table = NULL, p->scores = NULL;
    for (int i = 0; i < p->n_bound; i++)
        free(p->layers[i].k), free(p->layers[i].v), p->layers[i].k = p->layers[i].v = NULL;
    ss_status *st = kvpool_size(p, p->layers[0].kv_heads, p->layers[0].head_dim);
    for (int i = 0; !st && i < p->n_bound; i++)
        st = layer_alloc(p, &p->layers[i]);
    if (st) p->bytes = old;
    return st;
}

static kv_seq *seq_find(const ss_kvpool *p, int64_t id)
{
    for (int i = 0; i < p->n_seqs; i++)
        if (p->seqs[i].used && p->seqs[i].id == id) return &p->seqs[i];
    return NULL;
}

static ss_status *pool_full(const ss_kvpool *p, int64_t seq)
{
    return ss_errf(SS_ERR_LIMIT,
                   "KV cache pool full: all %lld blocks of %d tokens (%.2f MiB, --kv-cache-mb) "
                   "are in use; sequence %lld gets none",
                   (long long)p->n_blocks, p->block_size, mib(p->bytes), (long long)seq);
}

ss_status *ss_kvpool_seq_create(ss_kvpool *p, int64_t seq)
{
    if (seq_find(p, seq))
        return ss_errf(SS_ERR_INVALID, "sequence %lld already exists", (long long)seq);
    if (p->n_blocks && !p->n_free) return pool_full(p, seq);
    int slot = 0;
    while (slot < p->n_seqs && p->seqs[slot].used)
        slot++;
    if (slot == p->cap_seqs) {
        int cap = p->cap_seqs ? 2 * p->cap_seqs : 16;
        kv_seq *s = realloc(p->seqs, (size_t)cap * sizeof *s);
        if (!s) return ss_errf(SS_ERR_NOMEM, "KV cache sequences");
        p->seqs = s, p->cap_seqs = cap;
    }
    if (slot == p->n_seqs) p->n_seqs++;
    p->seqs[slot] = (kv_seq){seq, 0, -1, -1, 0, true};
    return NULL;
}

ss_status *ss_kvpool_seq_free(ss_kvpool *p, int64_t seq)
{
    kv_seq *s = seq_find(p, seq);
    if (!s) return ss_errf(SS_ERR_INVALID, "no sequence %lld in the KV cache", (long long)seq);
    if (s->n_blocks) {
        p->next[s->last] = p->free_head;
        p->free_head = s->first;
        p->n_free += s->n_blocks;
    }
    s->used = false;
    return NULL;
}

int64_t ss_kvpool_seq_length(const ss_kvpool *p, int64_t seq)
{
    const kv_seq *s = seq_find(p, seq);
    return s ? s->len : -1;
}

int64_t ss_kvpool_free_blocks(const ss_kvpool *p)
{
    return p->n_free;
}

int64_t ss_kvpool_total_blocks(const ss_kvpool *p)
{
    return p->n_blocks;
}

/* ------------------------------------------------------------------ one step */

/* Takes free blocks until the sequence can hold `tokens`. */
static ss_status *seq_reserve(ss_kvpool *p, kv_seq *s, int64_t tokens)
{
    while ((int64_t)s->n_blocks * p->block_size < tokens) {
        if (p->free_head < 0) return pool_full(p, s->id);
        int32_t b = p->free_head;
        p->free_head = p->next[b];
        p->n_free--;
        p->next[b] = -1;
        if (s->last >= 0)
            p->next[s->last] = b;
        else
            s->first = b;
        s->last = b;
        s->n_blocks++;
    }
    return NULL;
}

/* Checks one row's sequence and positions and takes the blocks it needs; *start is its first
 * position. The block table of the sequence is left in p->table. */
static ss_status *row_prepare(ss_kvpool *p, const ss_kv_step *st, int64_t b, kv_seq **seq,
                              int64_t *start)
{
    int64_t id = st->seq_ids[b];
    const int64_t *pos = st->positions + b * st->seq;
    kv_seq *s = seq_find(p, id);
    if (!s)
        return ss_errf(SS_ERR_INVALID, "sequence %lld was never created (or was freed)",
                       (long long)id);
    if (pos[0] < 0 || pos[0] > s->len)
        return ss_errf(SS_ERR_INVALID,
                       "sequence %lld holds %lld tokens; position %lld would leave a gap",
                       (long long)id, (long long)s->len, (long long)pos[0]);
    for (int64_t t = 1; t < st->seq; t++)
        if (pos[t] != pos[0] + t)
            return ss_errf(SS_ERR_INVALID,
                           "sequence %lld: positions must be consecutive (%lld after %lld)",
                           (long long)id, (long long)pos[t], (long long)pos[t - 1]);
    ss_status *err = seq_reserve(p, s, pos[0] + st->seq);
    if (err) return err;
    int32_t b_id = s->first;
    for (int32_t i = 0; i < s->n_blocks; i++, b_id = p->next[b_id])
        p->table[i] = b_id;
    *seq = s, *start = pos[0];
    return NULL;
}

/* Where token `pos` of KV head g lives in a layer's keys or values. */
SS_ISA_INLINE float *slot(const ss_kvpool *p, const ss_kv_layer *l, float *base, int g, int64_t pos)
{
    int64_t block = p->table[pos / p->block_size];
    return base + (((size_t)block * (size_t)l->kv_heads + (size_t)g) * (size_t)p->block_size +
                   (size_t)(pos % p->block_size)) *
                      (size_t)l->head_dim;
}

static void row_write(const ss_kvpool *p, const ss_kv_layer *l, const ss_kv_step *st, int64_t b,
                      int64_t start)
{
    size_t hd = (size_t)l->head_dim, row = hd * sizeof(float);
    for (int g = 0; g < l->kv_heads; g++)
        for (int64_t t = 0; t < st->seq; t++) {
            size_t src =
                (((size_t)b * (size_t)l->kv_heads + (size_t)g) * (size_t)st->seq + (size_t)t) * hd;
            memcpy(slot(p, l, l->k, g, start + t), st->k + src, row);
            memcpy(slot(p, l, l->v, g, start + t), st->v + src, row);
        }
}

/* q . key in DOT_LANES independent partial sums: a plain running sum is a chain the compiler may
 * not reorder (no -ffast-math), so it would stay scalar; lanes vectorize. */
#define DOT_LANES 16
SS_ISA_INLINE float kv_dot(const float *q, const float *key, int hd)
{
    float lane[DOT_LANES] = {0}, dot = 0;
    int d = 0;
    for (; d + DOT_LANES <= hd; d += DOT_LANES)
        for (int i = 0; i < DOT_LANES; i++)
            lane[i] += q[d + i] * key[d + i];
    for (; d < hd; d++)
        dot += q[d] * key[d];
    for (int i = 0; i < DOT_LANES; i++)
        dot += lane[i];
    return dot;
}

/* One query row against keys 0..n_keys-1 of KV head g: softmax(scale * q.K) V. Compiled per ISA
 * (isa.h): at decode this is the step's work besides the weights (GPT-2-124M: the scalar build
 * took ~6% of a bf16 step). */
SS_ISA_INLINE void attend_query_body(const ss_kvpool *p, const ss_kv_layer *l, int g,
                                     const float *q, int64_t n_keys, float scale, float *out)
{
    int hd = l->head_dim;
    float *sc = p->scores, mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < n_keys; j++) {
        sc[j] = kv_dot(q, slot(p, l, l->k, g, j), hd) * scale;
        mx = sc[j] > mx ? sc[j] : mx;
    }
    for (int64_t j = 0; j < n_keys; j++)
        sum += sc[j] = expf(sc[j] - mx);
    memset(out, 0, (size_t)hd * sizeof *out);
    for (int64_t j = 0; j < n_keys; j++) {
        const float *val = slot(p, l, l->v, g, j);
        float w = sc[j] / sum;
        for (int d = 0; d < hd; d++)
            out[d] += w * val[d];
    }
}
SS_ISA_VARIANTS(void, attend_query,
                (const ss_kvpool *p, const ss_kv_layer *l, int g, const float *q, int64_t n_keys,
                 float scale, float *out),
                (p, l, g, q, n_keys, scale, out))

ss_status *ss_kvpool_attend(ss_kvpool *p, const ss_kv_layer *l, const ss_kv_step *st)
{
    int group = st->q_heads / l->kv_heads;
    size_t hd = (size_t)l->head_dim;
    for (int64_t b = 0; b < st->batch; b++) {
        kv_seq *s = NULL;
        int64_t start = 0;
        ss_status *err = row_prepare(p, st, b, &s, &start);
        if (err) return err;
        row_write(p, l, st, b, start);
        for (int h = 0; h < st->q_heads; h++)
            for (int64_t t = 0; t < st->seq; t++) {
                size_t at =
                    (((size_t)b * (size_t)st->q_heads + (size_t)h) * (size_t)st->seq + (size_t)t) *
                    hd;
                attend_query(p, l, h / group, st->q + at, start + t + 1, st->scale, st->out + at);
            }
        if (start + st->seq > s->len) s->len = start + st->seq;
    }
    return NULL;
}
