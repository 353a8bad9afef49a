/*
 * gen_sample (gen_sample.h): penalties, greedy or temperature/top-k/top-p/min-p, and the seeded
 * draw. Definitions follow HF transformers' logits processors and vLLM's SamplingParams
 * (shared/reference/llm-serving.md §4.6). Nothing here allocates per step.
 */
#include "gen_sample.h"

#include <math.h>
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

static ss_status *out_of_range(const char *name, double v, const char *range)
{
    return ss_errf(SS_ERR_INVALID, "sampling parameter %s = %g is outside %s", name, v, range);
}

ss_status *ss_sample_check(const ss_sample_params *p)
{
    if (!(p->temperature >= 0 && p->temperature <= 100))
        return out_of_range("temperature", p->temperature, "[0, 100]");
    if (p->top_k < -1) return out_of_range("top_k", p->top_k, "-1 (off), 0 (off) or >= 1");
    if (!(p->top_p > 0 && p->top_p <= 1)) return out_of_range("top_p", p->top_p, "(0, 1]");
    if (!(p->min_p >= 0 && p->min_p <= 1)) return out_of_range("min_p", p->min_p, "[0, 1]");
    if (!(p->repetition_penalty > 0 && p->repetition_penalty <= 100))
        return out_of_range("repetition_penalty", p->repetition_penalty, "(0, 100]");
    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2))
        return out_of_range("presence_penalty", p->presence_penalty, "[-2, 2]");
    if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2))
        return out_of_range("frequency_penalty", p->frequency_penalty, "[-2, 2]");
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

static int32_t argmax(const float *z, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (z[i] > z[best]) best = i; /* the first of equal maxima, as torch.argmax */
    return (int32_t)best;
}

/* Softmax of z into prob (-inf -> 0); returns the largest probability. */
static float softmax(const float *z, float *prob, size_t n)
{
    float m = z[argmax(z, n)];
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += prob[i] = isinf(z[i]) && z[i] < 0 ? 0.0f : expf(z[i] - m);
    float pmax = 0;
    for (size_t i = 0; i < n; i++) {
        prob[i] = (float)(prob[i] / sum);
        if (prob[i] > pmax) pmax = prob[i];
    }
    return pmax;
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

/* HF's TopKLogitsWarper: everything below the k-th largest value goes (ties with it stay). */
static void top_k(ss_sampler *s, int k, float *z)
{
    if (k <= 0 || (size_t)k >= s->vocab) return;
    memcpy(s->prob, z, s->vocab * sizeof *z); /* scratch to select in */
    float kth = kth_largest(s->prob, s->vocab, (size_t)k - 1);
    for (size_t i = 0; i < s->vocab; i++)
        if (z[i] < kth) z[i] = -INFINITY;
}

/* qsort has no context argument: the probabilities being sorted by, per thread. */
static _Thread_local const float *tl_key;

static int by_prob_ascending(const void *a, const void *b)
{
    float x = tl_key[*(const int32_t *)a], y = tl_key[*(const int32_t *)b];
    return x < y ? -1 : x > y;
}

/* HF's TopPLogitsWarper: in ascending order of probability, ids whose cumulative probability is
 * <= 1 - p go (the largest always stays). Ids so small that all of them together stay under
 * 1 - p go without sorting: every id before one of them in ascending order is smaller still. */
static void top_p(ss_sampler *s, float p, float *z)
{
    if (p >= 1.0f) return;
    softmax(z, s->prob, s->vocab);
    double drop = 1.0 - (double)p, small = drop / (double)s->vocab, dropped = 0;
    size_t n = 0;
    for (size_t i = 0; i < s->vocab; i++) {
        if (s->prob[i] < small) {
            dropped += s->prob[i];
            z[i] = -INFINITY;
        } else {
            s->order[n++] = (int32_t)i;
        }
    }
    tl_key = s->prob;
    qsort(s->order, n, sizeof *s->order, by_prob_ascending);
    for (size_t i = 0; i + 1 < n; i++) {
        dropped += s->prob[s->order[i]];
        if (dropped > drop) break;
        z[s->order[i]] = -INFINITY;
    }
}

/* vLLM's min_p: ids less likely than min_p times the likeliest go. */
static void min_p(ss_sampler *s, float mp, float *z)
{
    if (mp <= 0) return;
    float cut = mp * softmax(z, s->prob, s->vocab);
    for (size_t i = 0; i < s->vocab; i++)
        if (s->prob[i] < cut) z[i] = -INFINITY;
}

static int32_t draw(ss_sampler *s, ss_rng *rng, const float *z)
{
    softmax(z, s->prob, s->vocab);
    double u = ss_rng_uniform(rng), acc = 0;
    int32_t last = -1;
    for (size_t i = 0; i < s->vocab; i++) {
        if (s->prob[i] <= 0) continue;
        last = (int32_t)i;
        acc += s->prob[i];
        if (u < acc) return last;
    }
    return last >= 0 ? last : argmax(z, s->vocab); /* rounding left u above the total */
}

int32_t ss_sample_next(ss_sampler *s, const ss_sample_params *p, ss_rng *rng, float *logits,
                       const int32_t *seen, size_t n_seen, const int32_t *out, size_t n_out)
{
    if (p->repetition_penalty != 1.0f) repetition(s, p->repetition_penalty, logits, seen, n_seen);
    if (p->presence_penalty != 0 || p->frequency_penalty != 0)
        presence_frequency(s, p, logits, out, n_out);
    if (p->temperature < 1e-5f) return argmax(logits, s->vocab);
    if (p->temperature != 1.0f)
        for (size_t i = 0; i < s->vocab; i++)
            logits[i] /= p->temperature;
    top_k(s, p->top_k, logits);
    top_p(s, p->top_p, logits);
    min_p(s, p->min_p, logits);
    return draw(s, rng, logits);
}
