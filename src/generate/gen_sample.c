/*
 * gen_sample (gen_sample.h): penalties, greedy or temperature/top-k/top-p/min-p, and the seeded
 * draw. Definitions follow HF transformers' logits processors and vLLM's SamplingParams
 * (shared/reference/llm-serving.md §4.6). Nothing here allocates per step.
 */
#include "gen_sample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct ss_sampler {
    size_t vocab;
    int32_t *count;  /* per id: occurrences in the output (presence/frequency) */
    uint8_t *marked; /* per id: already penalised this step (repetition) */
    int32_t *order;  /* candidate ids, sorted for top-k / top-p */
    float *prob;     /* per id: softmax of the current logits */
};

ss_sample_params ss_sample_defaults(void)
{
    return (ss_sample_params){.temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f};
}

static ss_status *out_of_range(const char *name, double v, const char *range, const char **param)
{
    if (param) *param = name;
    return ss_errf(SS_ERR_INVALID, "sampling parameter %s = %g is outside %s", name, v, range);
}

ss_status *ss_sample_check(const ss_sample_params *p, const char **param)
{
    if (!(p->temperature >= 0 && p->temperature <= 100))
        return out_of_range("temperature", p->temperature, "[0, 100]", param);
    if (p->top_k < -1) return out_of_range("top_k", p->top_k, "-1 (off), 0 (off) or >= 1", param);
    if (!(p->top_p > 0 && p->top_p <= 1)) return out_of_range("top_p", p->top_p, "(0, 1]", param);
    if (!(p->min_p >= 0 && p->min_p <= 1)) return out_of_range("min_p", p->min_p, "[0, 1]", param);
    if (!(p->repetition_penalty > 0 && p->repetition_penalty <= 100))
        return out_of_range("repetition_penalty", p->repetition_penalty, "(0, 100]", param);
    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2))
        return out_of_range("presence_penalty", p->presence_penalty, "[-2, 2]", param);
    if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2))
        return out_of_range("frequency_penalty", p->frequency_penalty, "[-2, 2]", param);
    return NULL;
}

/* ------------------------------------------------------------------ the generator */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ss_rng_seed(ss_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t ss_rng_next(ss_rng *r)
{
    uint64_t *s = r->s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ss_rng_uniform(ss_rng *r)
{
    return (double)(ss_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ------------------------------------------------------------------ the sampler */

ss_status *ss_sampler_new(size_t vocab, ss_sampler **out)
{
    *out = NULL;
    if (vocab == 0 || vocab > INT32_MAX)
        return ss_errf(SS_ERR_INVALID, "vocabulary of %zu ids", vocab);
    ss_sampler *s = calloc(1, sizeof *s);
    if (s) {
        s->vocab = vocab;
        s->count = calloc(vocab, sizeof *s->count);
        s->marked = calloc(vocab, 1);
        s->order = malloc(vocab * sizeof *s->order);
        s->prob = malloc(vocab * sizeof *s->prob);
    }
    if (!s || !s->count || !s->marked || !s->order || !s->prob) {
        ss_sampler_free(s);
        return ss_errf(SS_ERR_NOMEM, "sampler for %zu ids", vocab);
    }
    *out = s;
    return NULL;
}

void ss_sampler_free(ss_sampler *s)
{
    if (!s) return;
    free(s->count);
    free(s->marked);
    free(s->order);
    free(s->prob);
    free(s);
}

/* CTRL's repetition penalty, once per distinct id (HF gathers and scatters the same scores). */
static void repetition(ss_sampler *s, float theta, float *z, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= s->vocab || s->marked[id]) continue;
        s->marked[id] = 1;
        z[id] = z[id] > 0 ? z[id] / theta : z[id] * theta;
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && (size_t)ids[i] < s->vocab) s->marked[ids[i]] = 0;
}

/* OpenAI's presence and frequency penalties over the output's counts. */
static void presence_frequency(ss_sampler *s, const ss_sample_params *p, float *z,
                               const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && (size_t)ids[i] < s->vocab) s->count[ids[i]]++;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= s->vocab || !s->count[id]) continue;
        z[id] -= (float)s->count[id] * p->frequency_penalty + p->presence_penalty;
        s->count[id] = 0; /* applied once per distinct id */
    }
}

/* ------------------------------------------------------------------ vector passes
 * The passes over a whole vocabulary (max, exp, sums, the draw's scan) run once per sequence per
 * step on the worker's loop thread, so they are written as fixed-width lane loops the compiler
 * vectorises, cloned per ISA and chosen by CPUID when the program starts (target_clones). */

#define LANES 16
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__)
#define PER_ISA __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PER_ISA
#endif

/* GCC's vector types: the max below as lane loops is not vectorised by GCC 12 (the select). */
typedef float f16v __attribute__((vector_size(64)));
typedef float f16u __attribute__((vector_size(64), aligned(4)));
typedef int32_t i16v __attribute__((vector_size(64)));

/* m = lane by lane the larger of m and v (a NaN in v leaves m); macros, not functions: a
 * 64-byte vector passed by value outside an AVX-512 clone changes the ABI. */
#define LANE_MAX(m, v)                                                                             \
    do {                                                                                           \
        f16v v_ = (v);                                                                             \
        i16v c_ = v_ > (m);                                                                        \
        (m) = (f16v)((c_ & (i16v)v_) | (~c_ & (i16v)(m)));                                         \
    } while (0)
/* r = the largest lane of m */
#define LANES_MAX(r, m)                                                                            \
    do {                                                                                           \
        (r) = -INFINITY;                                                                           \
        for (int k_ = 0; k_ < LANES; k_++)                                                         \
            (r) = (m)[k_] > (r) ? (m)[k_] : (r);                                                   \
    } while (0)

/* The largest of z[0..n), n > 0 (NaN ignored). */
PER_ISA static float max_of(const float *z, size_t n)
{
    f16v m = {0};
    m -= INFINITY;
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        LANE_MAX(m, *(const f16u *)(z + i));
    float r;
    LANES_MAX(r, m);
    for (; i < n; i++)
        r = z[i] > r ? z[i] : r;
    return r;
}

/* The first i with z[i] == m, n if none: whole runs of 64 compared at once (vectorised), the
 * run that holds it scanned one by one. */
PER_ISA static size_t first_equal(const float *z, size_t n, float m)
{
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        int hit = 0;
        for (int k = 0; k < 64; k++)
            hit |= z[i + k] == m;
        if (hit) break;
    }
    for (; i < n; i++)
        if (z[i] == m) return i;
    return n;
}

static int32_t argmax(const float *z, size_t n)
{
    size_t i = first_equal(z, n, max_of(z, n)); /* the first of equal maxima, as torch.argmax */
    return i < n ? (int32_t)i : 0;              /* every logit NaN: 0 */
}

int32_t ss_sample_greedy(const ss_sampler *s, const ss_sample_params *p, const float *logits)
{
    if (p->temperature >= 1e-5f || p->repetition_penalty != 1.0f || p->presence_penalty != 0 ||
        p->frequency_penalty != 0)
        return -1;
    return argmax(logits, s->vocab);
}

/* e^x for x <= 0 within ~2e-7 relative, 0 below -87 (and for -inf): 2^(x log2 e) split into an
 * integer power, set in the exponent bits, and e^g for |g| <= ln2 / 2 by its Taylor series to g^7
 * (error below 6e-9). Branch-free so that it vectorises. */
static inline float exp_neg(float x)
{
    float xc = x < -87.0f ? -87.0f : x;
    float t = xc * 1.44269504088896341f;
    float r = (t + 12582912.0f) - 12582912.0f; /* round to nearest (1.5 * 2^23) */
    float g = (t - r) * 0.693147180559945309f;
    float q =
        1.0f +
        g * (1.0f +
             g * (0.5f +
                  g * (1.0f / 6 +
                       g * (1.0f / 24 + g * (1.0f / 120 + g * (1.0f / 720 + g * (1.0f / 5040)))))));
    int32_t bits = ((int32_t)r + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : q * scale;
}

/* e[i] = exp(z[i] - m) (m = the largest, so e <= 1 and the largest is 1); returns their sum. */
PER_ISA static double exp_shifted(const float *z, float m, float *e, size_t n)
{
    f16v s = {0}; /* a vector, not an array: GCC 12 kept an array's sums on the stack */
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        float v[LANES];
        for (int k = 0; k < LANES; k++)
            v[k] = exp_neg(z[i + k] - m);
        memcpy(e + i, v, sizeof v);
        s += *(const f16u *)v;
    }
    double sum = 0;
    for (int k = 0; k < LANES; k++)
        sum += s[k];
    for (; i < n; i++)
        sum += e[i] = exp_neg(z[i] - m);
    return sum;
}

PER_ISA static void scale_by(float *v, float f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] *= f;
}

/* Softmax of z into prob (-inf -> 0); m: the largest z. */
static void softmax(const float *z, float m, float *prob, size_t n)
{
    double sum = exp_shifted(z, m, prob, n);
    scale_by(prob, (float)(1.0 / sum), n);
}

static void sift_down(float *h, size_t n, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (!(h[c] < h[i])) return;
        float t = h[c];
        h[c] = h[i], h[i] = t;
        i = c;
    }
}

/* The k-th largest of v[0..n) (k from 0), reordering v: a three-way quickselect. */
static float kth_largest(float *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        float pivot = v[lo + (hi - lo) / 2], t;
        size_t a = lo, i = lo, b = hi; /* [lo,a) > pivot, [a,i) == pivot, [b,hi) < pivot */
        while (i < b) {
            if (v[i] > pivot)
                t = v[a], v[a++] = v[i], v[i++] = t;
            else if (v[i] < pivot)
                t = v[--b], v[b] = v[i], v[i] = t;
            else
                i++;
        }
        if (k < a)
            hi = a;
        else if (k < b)
            return pivot;
        else
            lo = b;
    }
    return v[lo];
}

/* The k-th largest of z[0..n) (k >= 1) by a min-heap of the k largest seen, in heap[k]: one
 * comparison with the heap's least for most ids when k is small against n. */
static float kth_by_heap(const float *z, size_t n, size_t k, float *heap)
{
    memcpy(heap, z, k * sizeof *z);
    for (size_t i = k / 2; i-- > 0;)
        sift_down(heap, k, i);
    for (size_t i = k; i < n; i++)
        if (z[i] > heap[0]) {
            heap[0] = z[i];
            sift_down(heap, k, 0);
        }
    return heap[0];
}

/* HF's TopKLogitsWarper: everything below the k-th largest value goes (ties with it stay). */
static void top_k(ss_sampler *s, int k, float *z)
{
    if (k <= 0 || (size_t)k >= s->vocab) return;
    float kth;
    if ((size_t)k <= s->vocab / 16) {
        kth = kth_by_heap(z, s->vocab, (size_t)k, s->prob);
    } else {
        memcpy(s->prob, z, s->vocab * sizeof *z); /* scratch to select in */
        kth = kth_largest(s->prob, s->vocab, (size_t)k - 1);
    }
    for (size_t i = 0; i < s->vocab; i++)
        if (z[i] < kth) z[i] = -INFINITY;
}

/* Three-way partition of ids v[lo, hi) by their probability against pivot: [lo, *a) below,
 * [*a, *b) equal, [*b, hi) above. Returns the mass of the part below. */
static double partition(const float *pr, int32_t *v, size_t lo, size_t hi, float pivot, size_t *a,
                        size_t *b)
{
    size_t i = lo, x = lo, y = hi;
    double below = 0;
    while (i < y) {
        int32_t t = v[i];
        if (pr[t] < pivot) {
            below += pr[t];
            v[i++] = v[x], v[x++] = t;
        } else if (pr[t] > pivot) {
            v[i] = v[--y], v[y] = t;
        } else {
            i++;
        }
    }
    *a = x, *b = y;
    return below;
}

/* top-p's first cut: every id with pr < small goes (z = -inf, its probability added to *mass);
 * the others are listed in v in id order. Returns how many are listed. 16 ids at a time; the
 * listing looks at a run of 16 one by one only when one of them stays (most do not). */
PER_ISA static size_t drop_small(const float *pr, float *z, double small, int32_t *v, size_t n,
                                 double *mass)
{
    float sf = (float)small; /* the least float >= small: pr < sf exactly when pr < small */
    if ((double)sf < small) sf = nextafterf(sf, INFINITY);
    f16v th = {0}, gone = {0};
    th += sf;
    gone -= INFINITY;
    typedef float f8v __attribute__((vector_size(32)));
    typedef double d8v __attribute__((vector_size(64)));
    d8v sum = {0};
    size_t i = 0, k = 0;
    for (; i + LANES <= n; i += LANES) {
        f16v p = *(const f16u *)(pr + i);
        i16v low = p < th;
        f16v dropped = (f16v)(low & (i16v)p);
        f8v a = __builtin_shufflevector(dropped, dropped, 0, 1, 2, 3, 4, 5, 6, 7);
        f8v b = __builtin_shufflevector(dropped, dropped, 8, 9, 10, 11, 12, 13, 14, 15);
        sum += __builtin_convertvector(a, d8v) + __builtin_convertvector(b, d8v);
        f16v zz = *(const f16u *)(z + i);
        *(f16u *)(z + i) = (f16v)((low & (i16v)gone) | (~low & (i16v)zz));
        i16v all = low;
        all &=
            __builtin_shufflevector(all, all, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
        all &=
            __builtin_shufflevector(all, all, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
        all &=
            __builtin_shufflevector(all, all, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
        all &=
            __builtin_shufflevector(all, all, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
        if (!all[0])
            for (int l = 0; l < LANES; l++)
                if (!(pr[i + l] < sf)) v[k++] = (int32_t)(i + l);
    }
    double m = 0;
    for (int l = 0; l < 8; l++)
        m += sum[l];
    for (; i < n; i++) {
        if (pr[i] < sf) {
            m += pr[i];
            z[i] = -INFINITY;
        } else {
            v[k++] = (int32_t)i;
        }
    }
    *mass = m;
    return k;
}

/* HF's TopPLogitsWarper: in ascending order of probability, ids whose cumulative probability is
 * <= 1 - p go (the largest always stays). Ids so small that all of them together stay under
 * 1 - p go first without ordering: every id before one of them in ascending order is smaller
 * still. The rest are not sorted: a quickselect-like descent finds where the cumulative passes
 * 1 - p, dropping whole parts below a pivot at once (linear time on average). */
static void top_p(ss_sampler *s, float p, float *z, float m)
{
    if (p >= 1.0f) return;
    softmax(z, m, s->prob, s->vocab);
    const float *pr = s->prob;
    double drop = 1.0 - (double)p, small = drop / (double)s->vocab, dropped = 0;
    int32_t *v = s->order;
    size_t n = drop_small(pr, z, small, v, s->vocab, &dropped), gone = 0;
    size_t lo = 0, hi = n; /* undecided; below lo: gone, from hi: kept */
    while (lo < hi) {
        size_t a, b;
        float pivot = pr[v[lo + (hi - lo) / 2]];
        double below = partition(pr, v, lo, hi, pivot, &a, &b);
        if (dropped + below > drop) { /* the cut is among the ids below the pivot */
            hi = a;
            continue;
        }
        dropped += below;
        for (size_t i = lo; i < a; i++)
            z[v[i]] = -INFINITY;
        gone += a - lo;
        for (size_t i = a; i < b; i++) { /* ties with the pivot, one at a time */
            if (dropped + pivot > drop || gone + 1 >= n) return;
            dropped += pivot;
            z[v[i]] = -INFINITY;
            gone++;
        }
        lo = b;
    }
}

/* vLLM's min_p: ids less likely than min_p times the likeliest go (e is 1 at the likeliest). */
static void min_p(ss_sampler *s, float mp, float *z, float m)
{
    if (mp <= 0) return;
    exp_shifted(z, m, s->prob, s->vocab);
    for (size_t i = 0; i < s->vocab; i++)
        if (s->prob[i] < mp) z[i] = -INFINITY;
}

/* z[i] = in[i] / t (in place allowed; t == 1 copies), returning the largest z (NaN ignored):
 * dividing by t > 0 keeps the order, so that is the largest in[i], divided by t. */
PER_ISA static float scale_max(const float *in, float *z, float t, size_t n)
{
    f16v m = {0};
    m -= INFINITY;
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        f16v v = *(const f16u *)(in + i) / t;
        *(f16u *)(z + i) = v;
        LANE_MAX(m, v);
    }
    float r;
    LANES_MAX(r, m);
    for (; i < n; i++) {
        z[i] = in[i] / t;
        r = z[i] > r ? z[i] : r;
    }
    return r;
}

/* The draw scans the vocabulary's weights exp(z - m) by groups of GROUP ids first: their sums in
 * one vectorised pass (nothing written per id), then the ids of the one group the target falls
 * in, their weights computed again. */
#define GROUP (16 * LANES)

/* sums[g] = sum of exp(z[i] - m) over group g, for the n / GROUP whole groups. */
PER_ISA static void group_sums(const float *z, float m, float *sums, size_t groups)
{
    for (size_t g = 0; g < groups; g++) {
        const float *x = z + g * GROUP;
        f16v s = {0};
        for (int j = 0; j < GROUP; j += LANES) {
            float v[LANES];
            for (int k = 0; k < LANES; k++)
                v[k] = exp_neg(x[j + k] - m);
            s += *(const f16u *)v;
        }
        float r = 0;
        for (int k = 0; k < LANES; k++)
            r += s[k];
        sums[g] = r;
    }
}

/* The first id whose running total of exp(z - m) passes u times the total (m: the largest z). */
static int32_t draw(ss_sampler *s, ss_rng *rng, const float *z, float m)
{
    size_t n = s->vocab, groups = n / GROUP;
    float *sums = s->prob; /* vocab >= groups floats */
    group_sums(z, m, sums, groups);
    double total = 0;
    for (size_t g = 0; g < groups; g++)
        total += sums[g];
    for (size_t i = groups * GROUP; i < n; i++)
        total += exp_neg(z[i] - m);
    double target = ss_rng_uniform(rng) * total, acc = 0;
    size_t i = 0;
    for (size_t g = 0; g < groups && acc + sums[g] <= target; g++, i += GROUP)
        acc += sums[g];
    for (; i < n; i++) { /* the group the target is in, on past it if rounding says so */
        float e = exp_neg(z[i] - m);
        if (e <= 0) continue;
        acc += e;
        if (acc > target) return (int32_t)i;
    }
    for (size_t j = n; j-- > 0;) /* rounding left the target above the total */
        if (exp_neg(z[j] - m) > 0) return (int32_t)j;
    return argmax(z, n);
}

int32_t ss_sample_from(ss_sampler *s, const ss_sample_params *p, ss_rng *rng, const float *logits,
                       float *work, const int32_t *seen, size_t n_seen, const int32_t *out,
                       size_t n_out)
{
    bool penalised =
        p->repetition_penalty != 1.0f || p->presence_penalty != 0 || p->frequency_penalty != 0;
    const float *in = logits;
    if (penalised) {
        if (work != logits) memcpy(work, logits, s->vocab * sizeof *work);
        if (p->repetition_penalty != 1.0f) repetition(s, p->repetition_penalty, work, seen, n_seen);
        if (p->presence_penalty != 0 || p->frequency_penalty != 0)
            presence_frequency(s, p, work, out, n_out);
        in = work;
    }
    if (p->temperature < 1e-5f) return argmax(in, s->vocab);
    /* the largest stays through top-k, top-p and min-p: m is the maximum throughout */
    float m = scale_max(in, work, p->temperature, s->vocab);
    top_k(s, p->top_k, work);
    top_p(s, p->top_p, work, m);
    min_p(s, p->min_p, work, m);
    return draw(s, rng, work, m);
}

int32_t ss_sample_next(ss_sampler *s, const ss_sample_params *p, ss_rng *rng, float *logits,
                       const int32_t *seen, size_t n_seen, const int32_t *out, size_t n_out)
{
    return ss_sample_from(s, p, rng, logits, logits, seen, n_seen, out, n_out);
}
