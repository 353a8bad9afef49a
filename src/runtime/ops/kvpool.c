/*
 * The KV-cache block pool (kvpool.h): blocks, the free list, sequences, and attention read
 * straight from the blocks. Invariants: every block is either on the free list or on exactly one
 * sequence's chain (next[] links both); a sequence of len tokens holds ceil(len / block_size)
 * blocks or more (a step takes its blocks before it writes); positions at or past len are never
 * read.
 */
#include "kvpool.h"

#include "gemm_kernel.h"
#include "isa.h"
#include "vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t id, len;
    int32_t first, last, n_blocks;
    bool used;
} kv_seq;

/* One row of a step once its blocks are taken: its first position and its block table. */
typedef struct {
    kv_seq *seq;
    int64_t start, at; /* at: where its table starts in the pool's scratch */
    const int32_t *table;
} kv_row;

struct ss_kvpool {
    size_t bytes;
    bool bf16;
    int block_size, n_layers, n_bound;
    int64_t n_blocks; /* 0 until the first layer is bound */
    int32_t *next;    /* per block: the next of its chain (sequence or free list), -1 at the end */
    int32_t free_head;
    int64_t n_free;
    int32_t *table; /* scratch: a step's rows' blocks in order, row after row */
    int64_t table_cap;
    kv_row *rows; /* scratch: a step's rows */
    int64_t rows_cap;
    float *scores; /* scratch: the scores of a part's queries, part after part */
    int64_t scores_cap;
    ss_kv_layer *layers;
    kv_seq *seqs;
    int n_seqs, cap_seqs;
};

ss_status *ss_kvpool_create(size_t bytes, int block_size, int n_layers, bool bf16, ss_kvpool **out)
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
    p->bf16 = bf16;
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
    free(p->rows);
    free(p->scores);
    free(p->seqs);
    free(p);
}

static double mib(size_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* Bytes of one cached key or value element. */
static size_t elem_bytes(const ss_kvpool *p)
{
    return p->bf16 ? sizeof(uint16_t) : sizeof(float);
}

/* Fixes the block count from the first layer's geometry: the pool's bytes shared by n_layers
 * layers like it. */
static ss_status *kvpool_size(ss_kvpool *p, int kv_heads, int head_dim)
{
    size_t per_block = 2 * (size_t)kv_heads * (size_t)p->block_size * (size_t)head_dim *
                       elem_bytes(p) * (size_t)p->n_layers;
    int64_t n = (int64_t)(p->bytes / per_block);
    if (n > INT32_MAX / p->block_size) n = INT32_MAX / p->block_size;
    if (n < 1)
        return ss_errf(
            SS_ERR_LIMIT,
            "the KV cache of %.2f MiB (generate.kv_cache_mb) cannot hold one block of %d "
            "tokens for %d layers (%.2f MiB)",
            mib(p->bytes), p->block_size, p->n_layers, mib(per_block));
    p->next = malloc((size_t)n * sizeof *p->next);
    p->table = malloc((size_t)n * sizeof *p->table);
    p->scores = malloc((size_t)n * (size_t)p->block_size * sizeof *p->scores);
    p->table_cap = n, p->scores_cap = n * p->block_size;
    if (!p->next || !p->table || !p->scores) return ss_errf(SS_ERR_NOMEM, "KV cache pool");
    for (int64_t b = 0; b < n; b++)
        p->next[b] = b + 1 < n ? (int32_t)(b + 1) : -1;
    p->free_head = 0, p->n_free = n, p->n_blocks = n;
    return NULL;
}

/* The layers' storage for the pool's current block count. */
static ss_status *layer_alloc(ss_kvpool *p, ss_kv_layer *l)
{
    size_t n = (size_t)p->n_blocks * (size_t)l->kv_heads * (size_t)p->block_size *
               (size_t)l->head_dim * elem_bytes(p);
    /* on huge pages: a step reads every running sequence's blocks, scattered over the pool, and
     * with 4 KiB pages two threads paid a TLB miss (a nested walk in a VM) every 4 KiB of them */
    l->k = ss_huge_alloc(n);
    l->v = ss_huge_alloc(n);
    if (l->k && l->v) return NULL;
    free(l->k), free(l->v);
    l->k = l->v = NULL;
    return ss_errf(SS_ERR_NOMEM, "KV cache layer %lld: %.1f MiB", (long long)l->id, mib(2 * n));
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
    *l = (ss_kv_layer){id, kv_heads, head_dim, p->bf16, NULL, NULL};
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
    p->next = p->table = NULL, p->scores = NULL, p->table_cap = 0, p->scores_cap = 0;
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
    return ss_errf(
        SS_ERR_LIMIT,
        "KV cache pool full: all %lld blocks of %d tokens (%.2f MiB, generate.kv_cache_mb) "
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

/* Grows a scratch array to hold n items (only a step larger than any before allocates). */
static bool grow(void **arr, int64_t *cap, int64_t n, size_t item)
{
    if (n <= *cap) return true;
    void *a = realloc(*arr, (size_t)n * item);
    if (!a) return false;
    *arr = a, *cap = n;
    return true;
}

/* Checks one row's sequence and positions and takes the blocks it needs. The sequence's block
 * table goes to p->table from entry *used on (*used grows), or over the previous row's when that
 * was the same sequence's. */
static ss_status *row_prepare(ss_kvpool *p, const ss_kv_step *st, int64_t b, kv_row *row,
                              int64_t *used)
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
    /* rows of one sequence in a row (a prompt's) share its table, written again as it grows */
    int64_t at = b > 0 && p->rows[b - 1].seq == s ? p->rows[b - 1].at : *used;
    if (!grow((void **)&p->table, &p->table_cap, at + s->n_blocks, sizeof *p->table))
        return ss_errf(SS_ERR_NOMEM, "KV cache block tables");
    int32_t b_id = s->first, *table = p->table + at;
    for (int32_t i = 0; i < s->n_blocks; i++, b_id = p->next[b_id])
        table[i] = b_id;
    *row = (kv_row){s, pos[0], at, NULL}; /* table: once p->table stops moving */
    *used = at + s->n_blocks;
    if (pos[0] + st->seq > s->len) s->len = pos[0] + st->seq; /* a later row may go on from here */
    return NULL;
}

/* Where token `pos` of KV head g lives in a layer's keys or values (elements of elem_bytes). */
SS_ISA_INLINE void *slot(const ss_kvpool *p, const ss_kv_layer *l, const int32_t *table, void *base,
                         int g, int64_t pos)
{
    int64_t block = table[pos / p->block_size];
    return (char *)base +
           (((size_t)block * (size_t)l->kv_heads + (size_t)g) * (size_t)p->block_size +
            (size_t)(pos % p->block_size)) *
               (size_t)l->head_dim * elem_bytes(p);
}

static void row_write(const ss_kvpool *p, const ss_kv_layer *l, const ss_kv_step *st, int64_t b,
                      const kv_row *row)
{
    size_t hd = (size_t)l->head_dim, bytes = hd * sizeof(float);
    for (int g = 0; g < l->kv_heads; g++)
        for (int64_t t = 0; t < st->seq; t++) {
            size_t src =
                (((size_t)b * (size_t)l->kv_heads + (size_t)g) * (size_t)st->seq + (size_t)t) * hd;
            void *k = slot(p, l, row->table, l->k, g, row->start + t),
                 *v = slot(p, l, row->table, l->v, g, row->start + t);
            if (l->bf16) {
                for (size_t d = 0; d < hd; d++) {
                    ((uint16_t *)k)[d] = ss_f32_to_bf16(st->k[src + d]);
                    ((uint16_t *)v)[d] = ss_f32_to_bf16(st->v[src + d]);
                }
            } else {
                memcpy(k, st->k + src, bytes);
                memcpy(v, st->v + src, bytes);
            }
        }
}

/* Element i of cached keys or values: float, or bf16 widened (its bits are float's top half). */
SS_ISA_INLINE float kv_at(const void *base, bool bf16, size_t i)
{
    return bf16 ? ss_bf16_to_f32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

/* 16 floats as one vector (GCC's vector extension: a zmm on AVX-512, two ymm on AVX2, four xmm
 * below), and unaligned loads of float32 or bf16 cached values into it. */
typedef float kv_v16 __attribute__((vector_size(64)));
typedef float kv_v16u __attribute__((vector_size(64), aligned(4)));
typedef uint16_t kv_h16u __attribute__((vector_size(32), aligned(2)));
typedef uint32_t kv_u16 __attribute__((vector_size(64)));
#define KV_ACC 8 /* vectors of a head's output kept in registers: heads up to 128 */

/* (a macro: a function returning a vector wider than the baseline ABI's is refused, -Wpsabi) */
#define KV_LOAD16(base, bf16, i)                                                                   \
    ((bf16) ? (kv_v16)(__builtin_convertvector(*(const kv_h16u *)((const uint16_t *)(base) + (i)), \
                                               kv_u16)                                             \
                       << 16)                                                                      \
            : *(const kv_v16u *)((const float *)(base) + (i)))

/* q . key: 16 lanes of partial sums over d (lane i: d = i, i + 16, ...), then added as a tree,
 * lane i + lane i + 8, then + 4, + 2, + 1 (a running sum is a chain the compiler may not reorder
 * without -ffast-math, so it would stay scalar). A head size that is not a multiple of 16 keeps
 * a scalar loop. kv_dot16 gives 16 keys the same sums in the same order, so a key's score does
 * not depend on which of the two computed it. */
SS_ISA_INLINE float kv_dot(const float *q, const void *key, bool bf16, int hd)
{
    if (hd % 16) {
        float dot = 0;
        for (int d = 0; d < hd; d++)
            dot += q[d] * kv_at(key, bf16, (size_t)d);
        return dot;
    }
    kv_v16 a = {0};
    for (int d = 0; d < hd; d += 16)
        a += *(const kv_v16u *)(q + d) * KV_LOAD16(key, bf16, (size_t)d);
    a += __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    a += __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3);
    a += __builtin_shufflevector(a, a, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1);
    a += __builtin_shufflevector(a, a, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0);
    return a[0];
}

SS_ISA_INLINE void kv_reduce16(const kv_v16 *a, float scale, float *s);

/* The scores of 16 consecutive keys (hd a multiple of 16): 16 vectors of partial sums, reduced
 * together (each step halves the vectors and the lanes a key holds), scale applied. */
SS_ISA_INLINE void kv_dot16(const float *q, const char *keys, bool bf16, int hd, float scale,
                            float *s)
{
    size_t kb = (size_t)hd * (bf16 ? sizeof(uint16_t) : sizeof(float));
    kv_v16 a[16];
    for (int t = 0; t < 16; t++)
        a[t] = (kv_v16){0};
    for (int d = 0; d < hd; d += 16) {
        kv_v16 qd = *(const kv_v16u *)(q + d);
        for (int t = 0; t < 16; t++)
            a[t] += qd * KV_LOAD16(keys + (size_t)t * kb, bf16, (size_t)d);
    }
    kv_reduce16(a, scale, s);
}

/* 16 keys' vectors of partial sums reduced together, each step halving the vectors and the lanes
 * a key holds, in the order kv_dot adds one key's lanes; scaled into s[0..15]. */
SS_ISA_INLINE void kv_reduce16(const kv_v16 *a, float scale, float *s)
{
    kv_v16 b[8], c[4], e[2];
    for (int i = 0; i < 8; i++) /* keys 2i, 2i+1: 8 lanes each */
        b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18,
                                       19, 20, 21, 22, 23) +
               __builtin_shufflevector(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25,
                                       26, 27, 28, 29, 30, 31);
    for (int i = 0; i < 4; i++) /* keys 4i .. 4i+3: 4 lanes each */
        c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18,
                                       19, 24, 25, 26, 27) +
               __builtin_shufflevector(b[2 * i], b[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21,
                                       22, 23, 28, 29, 30, 31);
    for (int i = 0; i < 2; i++) /* keys 8i .. 8i+7: 2 lanes each */
        e[i] = __builtin_shufflevector(c[2 * i], c[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20,
                                       21, 24, 25, 28, 29) +
               __builtin_shufflevector(c[2 * i], c[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19,
                                       22, 23, 26, 27, 30, 31);
    kv_v16 r = __builtin_shufflevector(e[0], e[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                       26, 28, 30) +
               __builtin_shufflevector(e[0], e[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25,
                                       27, 29, 31);
    *(kv_v16u *)s = r * scale;
}

/* bf16 keys and values a 64-byte vector at a time, as 16 pairs: the pair's first value is its
 * 32-bit lane shifted up 16, the second the lane with its low half cleared. Values 2i of 32 come
 * out in lane i of one vector, 2i + 1 in the other, so q is split the same way (kv_pairs_q) and a
 * head's output kept split over a block (kv_split / kv_join). */
typedef uint32_t kv_w16u __attribute__((vector_size(64), aligned(2)));
#define KV_PAIRS_MAX 512
#define KV_EVEN(w) ((kv_v16)((w) << 16))
#define KV_ODD(w) ((kv_v16)((w)&0xffff0000u))

/* Values 32c..32c+31 of x into their even (ev) and odd (od) halves. */
SS_ISA_INLINE void kv_unzip(const float *x, int c, kv_v16 *ev, kv_v16 *od)
{
    kv_v16 lo = *(const kv_v16u *)(x + 32 * c), hi = *(const kv_v16u *)(x + 32 * c + 16);
    *ev =
        __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    *od =
        __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

SS_ISA_INLINE void kv_pairs_q(const float *q, int hd, float *qp)
{
    for (int c = 0; c < hd / 32; c++)
        kv_unzip(q, c, (kv_v16 *)(qp + 32 * c), (kv_v16 *)(qp + 32 * c + 16));
}

SS_ISA_INLINE float kv_dot_pairs(const float *qp, const char *key, int hd)
{
    kv_v16 a = {0};
    for (int c = 0; c < hd; c += 32) {
        kv_u16 w = *(const kv_w16u *)(key + 2 * c);
        a += *(const kv_v16u *)(qp + c) * KV_EVEN(w);
        a += *(const kv_v16u *)(qp + c + 16) * KV_ODD(w);
    }
    a += __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    a += __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3);
    a += __builtin_shufflevector(a, a, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1);
    a += __builtin_shufflevector(a, a, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0);
    return a[0];
}

SS_ISA_INLINE void kv_dot16_pairs(const float *qp, const char *keys, int hd, float scale, float *s)
{
    kv_v16 a[16];
    for (int t = 0; t < 16; t++)
        a[t] = (kv_v16){0};
    for (int c = 0; c < hd; c += 32) {
        kv_v16 qe = *(const kv_v16u *)(qp + c), qo = *(const kv_v16u *)(qp + c + 16);
        for (int t = 0; t < 16; t++) {
            kv_u16 w = *(const kv_w16u *)(keys + (size_t)(t * hd + c) * 2);
            a[t] += qe * KV_EVEN(w);
            a[t] += qo * KV_ODD(w);
        }
    }
    kv_reduce16(a, scale, s);
}

SS_ISA_INLINE void kv_split(const float *o, int hd, kv_v16 *ev, kv_v16 *od)
{
    for (int c = 0; c < hd / 32; c++)
        kv_unzip(o, c, &ev[c], &od[c]);
}

SS_ISA_INLINE void kv_join(const kv_v16 *ev, const kv_v16 *od, int hd, float *o)
{
    for (int c = 0; c < hd / 32; c++) {
        *(kv_v16u *)(o + 32 * c) = __builtin_shufflevector(ev[c], od[c], 0, 16, 1, 17, 2, 18, 3, 19,
                                                           4, 20, 5, 21, 6, 22, 7, 23);
        *(kv_v16u *)(o + 32 * c + 16) = __builtin_shufflevector(
            ev[c], od[c], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    }
}

/* One position of a row against its sequence's keys 0..n_keys-1, KV heads g0..g1-1 with their
 * `group` query heads each (query head h at q + h * stride, its output at out + h * stride):
 * softmax(scale * q.K) V per query. The keys and values are read block by block, every head of a
 * block in turn, so the sequence's cache streams through in address order (a block holds all KV
 * heads; per head it would be short runs that the prefetcher starts over and over). sc: (g1 - g0)
 * * group rows of n_keys scores. bf16 is a constant in each caller below, so each gets its own
 * loops; compiled per ISA (isa.h). */
SS_ISA_INLINE void attend_row_hd(const ss_kv_layer *l, bool bf16, int hd, int block_size,
                                 const int32_t *table, int g0, int g1, int group, const float *q,
                                 size_t stride, int64_t n_keys, float scale, float *sc, float *out)
{
    size_t eb = bf16 ? sizeof(uint16_t) : sizeof(float);
    size_t head = (size_t)block_size * (size_t)hd, block = (size_t)l->kv_heads * head;
    for (int64_t j0 = 0, i = 0; j0 < n_keys; j0 += block_size, i++) {
        int64_t n = n_keys - j0 < block_size ? n_keys - j0 : block_size;
        for (int g = g0; g < g1; g++) {
            const char *keys =
                (const char *)l->k + ((size_t)table[i] * block + (size_t)g * head) * eb;
            for (int r = 0; r < group; r++) {
                const float *qh = q + (size_t)(g * group + r) * stride;
                float *s = sc + (size_t)((g - g0) * group + r) * (size_t)n_keys + (size_t)j0;
                int64_t t = 0;
                if (bf16 && hd % 32 == 0 && hd <= KV_PAIRS_MAX) {
                    float qp[KV_PAIRS_MAX] __attribute__((aligned(64))); /* kv_unzip stores */
                    kv_pairs_q(qh, hd, qp);
                    for (; t + 16 <= n; t += 16)
                        kv_dot16_pairs(qp, keys + (size_t)t * (size_t)hd * eb, hd, scale, s + t);
                    for (; t < n; t++)
                        s[t] = kv_dot_pairs(qp, keys + (size_t)t * (size_t)hd * eb, hd) * scale;
                    continue;
                }
                for (; hd % 16 == 0 && t + 16 <= n; t += 16)
                    kv_dot16(qh, keys + (size_t)t * (size_t)hd * eb, bf16, hd, scale, s + t);
                for (; t < n; t++)
                    s[t] = kv_dot(qh, keys + (size_t)t * (size_t)hd * eb, bf16, hd) * scale;
            }
        }
    }
    for (int r = 0; r < (g1 - g0) * group; r++) {
        float *s = sc + (size_t)r * (size_t)n_keys;
        ss_vsoftmaxf(s, s, n_keys); /* in vectors (libm's expf was a call per score) */
        memset(out + (size_t)(g0 * group + r) * stride, 0, (size_t)hd * sizeof *out);
    }
    for (int64_t j0 = 0, i = 0; j0 < n_keys; j0 += block_size, i++) {
        int64_t n = n_keys - j0 < block_size ? n_keys - j0 : block_size;
        for (int g = g0; g < g1; g++) {
            const char *vals =
                (const char *)l->v + ((size_t)table[i] * block + (size_t)g * head) * eb;
            for (int r = 0; r < group; r++) {
                float *restrict o = out + (size_t)(g * group + r) * stride;
                const float *w = sc + (size_t)((g - g0) * group + r) * (size_t)n_keys + j0;
                if (bf16 && hd % 32 == 0 && hd <= 16 * KV_ACC) {
                    kv_v16 ev[KV_ACC / 2], od[KV_ACC / 2];
                    kv_split(o, hd, ev, od);
                    for (int64_t t = 0; t < n; t++) {
                        const char *val = vals + (size_t)t * (size_t)hd * eb;
                        for (int c = 0; c < hd / 32; c++) {
                            kv_u16 x = *(const kv_w16u *)(val + 64 * c);
                            ev[c] += w[t] * KV_EVEN(x);
                            od[c] += w[t] * KV_ODD(x);
                        }
                    }
                    kv_join(ev, od, hd, o);
                    continue;
                }
                if (hd % 16 == 0 && hd <= 16 * KV_ACC) {
                    /* the head's output in registers over the block's keys, in memory only
                     * between blocks (per key it was a load and a store a vector, a chain
                     * through memory key after key) */
                    kv_v16 acc[KV_ACC];
                    for (int d = 0; d < hd / 16; d++)
                        acc[d] = *(const kv_v16u *)(o + 16 * d);
                    for (int64_t t = 0; t < n; t++) {
                        const void *val = vals + (size_t)t * (size_t)hd * eb;
                        for (int d = 0; d < hd / 16; d++)
                            acc[d] += w[t] * KV_LOAD16(val, bf16, (size_t)(16 * d));
                    }
                    for (int d = 0; d < hd / 16; d++)
                        *(kv_v16u *)(o + 16 * d) = acc[d];
                    continue;
                }
                for (int64_t t = 0; t < n; t++) {
                    const void *val = vals + (size_t)t * (size_t)hd * eb;
                    for (int d = 0; d < hd; d++)
                        o[d] += w[t] * kv_at(val, bf16, (size_t)d);
                }
            }
        }
    }
}
/* Heads of 64 (GPT-2's and Llama's) as a constant, so the head's loops unroll into registers. */
SS_ISA_INLINE void attend_row_body(const ss_kv_layer *l, bool bf16, int block_size,
                                   const int32_t *table, int g0, int g1, int group, const float *q,
                                   size_t stride, int64_t n_keys, float scale, float *sc,
                                   float *out)
{
    if (l->head_dim == 64)
        attend_row_hd(l, bf16, 64, block_size, table, g0, g1, group, q, stride, n_keys, scale, sc,
                      out);
    else
        attend_row_hd(l, bf16, l->head_dim, block_size, table, g0, g1, group, q, stride, n_keys,
                      scale, sc, out);
}
SS_ISA_INLINE void attend_f32_body(const ss_kv_layer *l, int block_size, const int32_t *table,
                                   int g0, int g1, int group, const float *q, size_t stride,
                                   int64_t n_keys, float scale, float *sc, float *out)
{
    attend_row_body(l, false, block_size, table, g0, g1, group, q, stride, n_keys, scale, sc, out);
}
SS_ISA_INLINE void attend_bf16_body(const ss_kv_layer *l, int block_size, const int32_t *table,
                                    int g0, int g1, int group, const float *q, size_t stride,
                                    int64_t n_keys, float scale, float *sc, float *out)
{
    attend_row_body(l, true, block_size, table, g0, g1, group, q, stride, n_keys, scale, sc, out);
}
SS_ISA_VARIANTS(void, attend_f32,
                (const ss_kv_layer *l, int block_size, const int32_t *table, int g0, int g1,
                 int group, const float *q, size_t stride, int64_t n_keys, float scale, float *sc,
                 float *out),
                (l, block_size, table, g0, g1, group, q, stride, n_keys, scale, sc, out))
SS_ISA_VARIANTS(void, attend_bf16,
                (const ss_kv_layer *l, int block_size, const int32_t *table, int g0, int g1,
                 int group, const float *q, size_t stride, int64_t n_keys, float scale, float *sc,
                 float *out),
                (l, block_size, table, g0, g1, group, q, stride, n_keys, scale, sc, out))

/* The queries of a step, unit by unit: unit u = row u / chunks with KV heads [c * per, (c + 1) *
 * per) of c = u % chunks, every position of the row in turn. */
typedef struct {
    const ss_kvpool *p;
    const ss_kv_layer *l;
    const ss_kv_step *st;
    int64_t units, next;
    int chunks, per; /* units of a row, KV heads of a unit */
    size_t score_stride;
} attend_job;

static void attend_units(const attend_job *j, float *sc, int64_t u0, int64_t u1)
{
    const ss_kv_step *st = j->st;
    int kvh = j->l->kv_heads, group = st->q_heads / kvh;
    size_t hd = (size_t)j->l->head_dim, stride = (size_t)st->seq * hd; /* head to head */
    for (int64_t u = u0; u < u1; u++) {
        int64_t b = u / j->chunks;
        int g0 = (int)(u % j->chunks) * j->per, g1 = g0 + j->per < kvh ? g0 + j->per : kvh;
        const kv_row *row = &j->p->rows[b];
        for (int64_t t = 0; g0 < g1 && t < st->seq; t++) {
            size_t at = ((size_t)b * (size_t)st->q_heads * (size_t)st->seq + (size_t)t) * hd;
            (j->l->bf16 ? attend_bf16 : attend_f32)(j->l, j->p->block_size, row->table, g0, g1,
                                                    group, st->q + at, stride, row->start + t + 1,
                                                    st->scale, sc, st->out + at);
        }
    }
}

static void attend_part(void *ctx, int part, int parts)
{
    (void)parts;
    attend_job *j = ctx;
    float *sc = j->p->scores + (size_t)part * j->score_stride;
    for (;;) {
        int64_t u = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (u >= j->units) return;
        attend_units(j, sc, u, u + 1);
    }
}

/* Multiply-adds of a step's attention (q.K and the weighted V) from which it runs in parts
 * (~1,000 keys of 64: a few microseconds on one core, against ~1 us to start the team). */
#define ATTEND_PAR_MIN 65536
static int64_t par_min = ATTEND_PAR_MIN;
static unsigned long parallel_steps;

void ss_kvpool_force_par_min(int64_t work)
{
    par_min = work < 0 ? ATTEND_PAR_MIN : work;
}

unsigned long ss_kvpool_parallel_steps(void)
{
    return __atomic_load_n(&parallel_steps, __ATOMIC_RELAXED);
}

/* Every row's blocks are taken (and checked) before anything is written; then the rows' keys and
 * values go to their slots, and the queries run, in parts when the step is large enough. Rows of
 * one sequence (a prompt as rows of one token) come in position order: each goes on from the one
 * before, and its queries see the keys of the rows before it, all written by then. */
ss_status *ss_kvpool_attend(ss_kvpool *p, const ss_kv_layer *l, const ss_kv_step *st)
{
    if (!grow((void **)&p->rows, &p->rows_cap, st->batch, sizeof *p->rows))
        return ss_errf(SS_ERR_NOMEM, "KV cache step rows");
    int64_t used = 0, work = 0, max_keys = 0;
    for (int64_t b = 0; b < st->batch; b++) {
        ss_status *err = row_prepare(p, st, b, &p->rows[b], &used);
        if (err) return err;
        if (p->rows[b].start + st->seq > max_keys) max_keys = p->rows[b].start + st->seq;
        work += 2 * (int64_t)st->q_heads * st->seq * (p->rows[b].start + (st->seq + 1) / 2) *
                l->head_dim;
    }
    for (int64_t b = 0; b < st->batch; b++) {
        kv_row *row = &p->rows[b];
        row->table = p->table + row->at;
        row_write(p, l, st, b, row);
    }
    int parts = st->threads > 1 && work >= par_min ? st->threads : 1;
    /* enough units for the parts: a decode row's heads split when rows are few; the positions of
     * a longer row (a prefill chunk) run head by head, each head's keys staying in cache */
    attend_job j = {p, l, st, 0, 0, l->kv_heads, 1, 0};
    if (st->seq == 1) {
        int64_t want = 2 * (int64_t)parts;
        j.chunks = st->batch >= want ? 1 : (int)((want + st->batch - 1) / st->batch);
        if (j.chunks > l->kv_heads) j.chunks = l->kv_heads;
        j.per = (l->kv_heads + j.chunks - 1) / j.chunks;
    }
    j.units = st->batch * j.chunks;
    j.score_stride = (size_t)j.per * (size_t)(st->q_heads / l->kv_heads) * (size_t)max_keys;
    if (!grow((void **)&p->scores, &p->scores_cap, parts * (int64_t)j.score_stride,
              sizeof *p->scores))
        parts = 1;
    if (parts == 1 &&
        !grow((void **)&p->scores, &p->scores_cap, (int64_t)j.score_stride, sizeof *p->scores))
        return ss_errf(SS_ERR_NOMEM, "KV cache attention scores");
    if (parts > 1) {
        __atomic_add_fetch(&parallel_steps, 1, __ATOMIC_RELAXED);
        ss_pool_run(parts, attend_part, &j);
    } else {
        attend_units(&j, p->scores, 0, j.units);
    }
    return NULL;
}
