/*
 * The KV block pool's attention (src/runtime/ops/kvpool.c) against a dense reference: several
 * sequences of different lengths in one batch, prefills and decodes crossing block boundaries
 * (blocks of 4 tokens), two layers sharing the block tables, grouped-query attention (6 query
 * heads over 2 KV heads; head size 40, then 64 in blocks of 16 tokens), under
 * every ISA level this CPU runs (ops/isa.h) and split over 2 parts of the pool; the same with the
 * keys and values kept as bf16 (the reference then holds them rounded to bf16, so the arithmetic
 * must still agree to 1e-5, and the same bytes hold twice the blocks); then the pool's
 * bookkeeping: a freed sequence's blocks come back, a full pool refuses with its size named, and
 * bad sequence ids or positions are named.
 */
#include "check.h"
#include "ops/gemm_kernel.h"
#include "ops/isa.h"
#include "ops/kvpool.h"

enum { QH = 6, KVH = 2, HD = 64, LAYERS = 2, SEQS = 3, MAXLEN = 40 };

/* The head size and block size of the pools made: 40 and 4 (a head size off the 16-lane vectors:
 * the scalar dot products), then 64 and 16 (GPT-2's and Llama's head size, its unrolled loops,
 * the scores of 16 keys at once and the one-key dot for a block's tail). HD bounds hd. */
static int hd = 40, BS = 4;

typedef struct {
    float k[LAYERS][KVH][MAXLEN][HD], v[LAYERS][KVH][MAXLEN][HD];
    int64_t len;
} dense_seq;

static float rnd(unsigned *state)
{
    *state = *state * 1103515245u + 12345u;
    return (float)((*state >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* softmax(scale q.K[0..n)) V over one dense head. */
static void dense_attend(const float (*k)[HD], const float (*v)[HD], const float *q, int64_t n,
                         float scale, double *out)
{
    double sc[MAXLEN], mx = -1e300, sum = 0;
    for (int64_t j = 0; j < n; j++) {
        double dot = 0;
        for (int d = 0; d < hd; d++)
            dot += (double)q[d] * k[j][d];
        sc[j] = dot * scale;
        mx = sc[j] > mx ? sc[j] : mx;
    }
    for (int64_t j = 0; j < n; j++)
        sum += sc[j] = exp(sc[j] - mx);
    for (int d = 0; d < hd; d++) {
        out[d] = 0;
        for (int64_t j = 0; j < n; j++)
            out[d] += sc[j] / sum * v[j][d];
    }
}

static int step_threads = 1; /* the parts a step may run in */
static bool pool_bf16;       /* the pools made keep bf16 keys and values */

/* What a bf16 pool keeps of x. */
static float bf16_round(float x)
{
    return ss_bf16_to_f32(ss_f32_to_bf16(x));
}

/* One step of `t` tokens for each of the `batch` sequences in ids, through both layers; checks
 * every output against the dense reference. */
static void step(ss_kvpool *pool, ss_kv_layer **layers, dense_seq *dense, const int64_t *ids,
                 int batch, int t, unsigned *seed)
{
    static float q[SEQS * QH * 16 * HD], k[SEQS * KVH * 16 * HD], v[SEQS * KVH * 16 * HD],
        out[SEQS * QH * 16 * HD];
    int64_t pos[SEQS * 16];
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < t; i++)
            pos[b * t + i] = dense[ids[b]].len + i;
    for (int l = 0; l < LAYERS; l++) {
        for (int i = 0; i < batch * QH * t * hd; i++)
            q[i] = rnd(seed);
        for (int i = 0; i < batch * KVH * t * hd; i++)
            k[i] = rnd(seed), v[i] = rnd(seed);
        for (int b = 0; b < batch; b++)
            for (int g = 0; g < KVH; g++)
                for (int i = 0; i < t; i++) {
                    const float *src_k = k + ((b * KVH + g) * t + i) * hd,
                                *src_v = v + ((b * KVH + g) * t + i) * hd;
                    float *dk = dense[ids[b]].k[l][g][dense[ids[b]].len + i],
                          *dv = dense[ids[b]].v[l][g][dense[ids[b]].len + i];
                    for (int e = 0; e < hd; e++) {
                        dk[e] = pool_bf16 ? bf16_round(src_k[e]) : src_k[e];
                        dv[e] = pool_bf16 ? bf16_round(src_v[e]) : src_v[e];
                    }
                }
        ss_kv_step s = {q, k, v, ids, pos, out, batch, t, QH, 0.3f, step_threads};
        CHECK_OK(ss_kvpool_attend(pool, layers[l], &s));
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < QH; h++)
                for (int i = 0; i < t; i++) {
                    const dense_seq *d = &dense[ids[b]];
                    int g = h / (QH / KVH), at = ((b * QH + h) * t + i) * hd;
                    double ref[HD];
                    dense_attend(d->k[l][g], d->v[l][g], q + at, d->len + i + 1, 0.3f, ref);
                    for (int e = 0; e < hd; e++)
                        CHECK_NEAR(out[at + e], ref[e], 1e-5);
                }
    }
    for (int b = 0; b < batch; b++) {
        dense[ids[b]].len += t;
        CHECK(ss_kvpool_seq_length(pool, ids[b]) == dense[ids[b]].len);
    }
}

static ss_kvpool *make_pool(size_t blocks, ss_kv_layer **layers)
{
    ss_kvpool *pool = NULL;
    size_t block_bytes =
        2 * KVH * (size_t)BS * (size_t)hd * (pool_bf16 ? 2 : sizeof(float)) * LAYERS;
    CHECK_OK(ss_kvpool_create(blocks * block_bytes, BS, LAYERS, pool_bf16, &pool));
    for (int l = 0; l < LAYERS; l++)
        CHECK_OK(ss_kvpool_layer(pool, 10 + l, KVH, hd, &layers[l]));
    CHECK(ss_kvpool_free_blocks(pool) == (int64_t)blocks);
    return pool;
}

static void paged_equals_dense_at(void)
{
    ss_kv_layer *layers[LAYERS];
    ss_kvpool *pool = make_pool(64, layers);
    static dense_seq dense[SEQS];
    memset(dense, 0, sizeof dense); /* a fresh start at each ISA level */
    unsigned seed = 7;
    for (int64_t s = 0; s < SEQS; s++)
        CHECK_OK(ss_kvpool_seq_create(pool, s));
    /* prefills of 5, 1 and 9 tokens (one row each), then mixed decodes of the three together */
    step(pool, layers, dense, (int64_t[]){0}, 1, 5, &seed);
    step(pool, layers, dense, (int64_t[]){1}, 1, 1, &seed);
    step(pool, layers, dense, (int64_t[]){2}, 1, 9, &seed);
    for (int i = 0; i < 14; i++)
        step(pool, layers, dense, (int64_t[]){2, 0, 1}, 3, 1, &seed);
    step(pool, layers, dense, (int64_t[]){1, 0}, 2, 3, &seed); /* a 3-token chunk each */
    CHECK(dense[2].len == 23 && dense[0].len == 22 && dense[1].len == 18);
    /* 6 + 6 + 5 blocks of 4 tokens in use (2 + 2 + 2 of 16) */
    int64_t used = (23 + BS - 1) / BS + (22 + BS - 1) / BS + (18 + BS - 1) / BS;
    CHECK(ss_kvpool_free_blocks(pool) == 64 - used);
    CHECK_OK(ss_kvpool_seq_free(pool, 0));
    CHECK(ss_kvpool_free_blocks(pool) == 64 - used + (22 + BS - 1) / BS);
    /* a new sequence reuses the freed blocks and sees none of the old one's tokens */
    CHECK_OK(ss_kvpool_seq_create(pool, 7));
    static dense_seq fresh[8];
    memset(fresh, 0, sizeof fresh);
    step(pool, layers, fresh, (int64_t[]){7}, 1, 6, &seed);
    step(pool, layers, fresh, (int64_t[]){7}, 1, 1, &seed);
    ss_kvpool_free(pool);
}

static void paged_equals_dense(void)
{
    int levels = 0;
    for (int level = SS_ISA_AVX512; level >= SS_ISA_BASE; level--) {
        if (ss_isa_force((ss_isa)level) != (ss_isa)level) continue;
        fprintf(stderr, "attention on %s\n", ss_isa_name((ss_isa)level));
        paged_equals_dense_at();
        levels++;
    }
    ss_isa_force(ss_isa_detect());
    CHECK(levels >= 1);
    /* the same steps with the queries split over 2 parts of the pool (every step, however
     * small): the rows' block tables and the per-part scores must not mix */
    step_threads = ss_gemm_pool_reserve(2);
    CHECK(step_threads == 2);
    ss_kvpool_force_par_min(0);
    unsigned long before = ss_kvpool_parallel_steps();
    paged_equals_dense_at();
    CHECK(ss_kvpool_parallel_steps() > before);
    ss_kvpool_force_par_min(-1);
    step_threads = 1;
}

/* bf16 keys and values: every ISA level and 2 parts against the reference of the rounded values;
 * the bytes of 64 float32 blocks hold 128 bf16 ones. */
static void bf16_blocks_equal_dense(void)
{
    pool_bf16 = true;
    paged_equals_dense();
    ss_kv_layer *layers[LAYERS];
    ss_kvpool *pool = NULL;
    CHECK_OK(
        ss_kvpool_create(64 * 2 * KVH * BS * hd * sizeof(float) * LAYERS, BS, LAYERS, true, &pool));
    for (int l = 0; l < LAYERS; l++)
        CHECK_OK(ss_kvpool_layer(pool, 10 + l, KVH, hd, &layers[l]));
    CHECK(ss_kvpool_total_blocks(pool) == 128 && layers[0]->bf16);
    ss_kvpool_free(pool);
    pool_bf16 = false;
}

static void full_pool_and_bad_steps(void)
{
    ss_kv_layer *layers[LAYERS];
    ss_kvpool *pool = make_pool(3, layers);
    static dense_seq dense[SEQS];
    unsigned seed = 3;
    CHECK_OK(ss_kvpool_seq_create(pool, 0));
    CHECK_OK(ss_kvpool_seq_create(pool, 1));
    step(pool, layers, dense, (int64_t[]){0}, 1, 9, &seed); /* 3 blocks: the whole pool */
    CHECK_ERR(ss_kvpool_seq_create(pool, 2), "all 3 blocks of 4 tokens");
    CHECK_ERR(ss_kvpool_seq_create(pool, 0), "sequence 0 already exists");
    float buf[QH * HD] = {0}, out[QH * HD];
    int64_t one = 1, pos = 0, far = 10;
    ss_kv_step s = {buf, buf, buf, &one, &pos, out, 1, 1, QH, 1.0f};
    CHECK_ERR(ss_kvpool_attend(pool, layers[0], &s), "KV cache pool full");
    s.seq_ids = (int64_t[]){9};
    CHECK_ERR(ss_kvpool_attend(pool, layers[0], &s), "sequence 9 was never created");
    s.seq_ids = (int64_t[]){0}, s.positions = &far;
    CHECK_ERR(ss_kvpool_attend(pool, layers[0], &s), "position 10 would leave a gap");
    CHECK_ERR(ss_kvpool_seq_free(pool, 4), "no sequence 4");
    CHECK_OK(ss_kvpool_seq_free(pool, 0));
    CHECK_OK(ss_kvpool_seq_create(pool, 2));
    ss_kvpool_free(pool);
    ss_kvpool *tiny = NULL;
    CHECK_OK(ss_kvpool_create(100, BS, LAYERS, false, &tiny));
    CHECK_ERR(ss_kvpool_layer(tiny, 0, KVH, hd, &layers[0]), "cannot hold one block");
    ss_kvpool_free(tiny);
}

/* The same with heads of 64 in blocks of 16: every full block's scores 16 keys at once, the
 * partial last blocks key by key, float32 and bf16, every ISA level and 2 parts. */
static void head64_blocks16_equal_dense(void)
{
    hd = 64, BS = 16;
    paged_equals_dense();
    bf16_blocks_equal_dense();
    hd = 40, BS = 4;
}

TEST_MAIN(TEST(paged_equals_dense), TEST(bf16_blocks_equal_dense), TEST(full_pool_and_bad_steps),
          TEST(head64_blocks16_equal_dense))
