/*
 * gen_sample: the next token from a step's logits, as the reference servers define it
 * (shared/reference/llm-serving.md §4.6): penalties first (repetition as CTRL/HF, presence and
 * frequency as OpenAI), then greedy argmax, or temperature -> top-k -> top-p -> min-p and a draw
 * from the request's own seeded generator (so a token never depends on what else was batched).
 */
#ifndef SS_GENERATE_SAMPLE_H
#define SS_GENERATE_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "shardserve/core.h"

typedef struct {
    float temperature;        /* below 1e-5: greedy (vLLM's rule); OpenAI's default is 1 */
    int top_k;                /* <= 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off; > 1 discourages every id seen in prompt or output */
    float presence_penalty;   /* 0: off; subtracted once from every id generated so far */
    float frequency_penalty;  /* 0: off; subtracted per occurrence in the output */
    uint64_t seed;
} ss_sample_params;

/* OpenAI's defaults: temperature 1, top_p 1, no penalties, seed 0. */
ss_sample_params ss_sample_defaults(void);

/* NULL when every parameter is in range, else an error naming the parameter and its range, and
 * *param (when param is not NULL) the parameter's name, a literal. */
ss_status *ss_sample_check(const ss_sample_params *p, const char **param);

/* A request's generator: xoshiro256** seeded by splitmix64 from the request's seed. */
typedef struct {
    uint64_t s[4];
} ss_rng;

void ss_rng_seed(ss_rng *r, uint64_t seed);
uint64_t ss_rng_next(ss_rng *r);
double ss_rng_uniform(ss_rng *r); /* [0, 1), 53 bits */

/* Per-sequence working memory, sized for one vocabulary and reused every step. */
typedef struct ss_sampler ss_sampler;

ss_status *ss_sampler_new(size_t vocab, ss_sampler **out);
void ss_sampler_free(ss_sampler *s);

/* The next token. logits[vocab] are changed in place (penalised, scaled, masked to -inf);
 * seen: the prompt's and output's ids (repetition penalty), out: the output's ids (presence and
 * frequency). Ids outside [0, vocab) in seen/out are ignored. */
int32_t ss_sample_next(ss_sampler *s, const ss_sample_params *p, ss_rng *rng, float *logits,
                       const int32_t *seen, size_t n_seen, const int32_t *out, size_t n_out);
/* The same token as ss_sample_next, the logits left as they are: what it would change is
 * written to work[vocab] instead, on the way (no separate copy); work == logits is
 * ss_sample_next. */
int32_t ss_sample_from(ss_sampler *s, const ss_sample_params *p, ss_rng *rng, const float *logits,
                       float *work, const int32_t *seen, size_t n_seen, const int32_t *out,
                       size_t n_out);
/* Greedy without penalties only reads the logits: the next token, as ss_sample_next would give
 * it, without changing or copying them; -1 when p asks for more (then ss_sample_next). */
int32_t ss_sample_greedy(const ss_sampler *s, const ss_sample_params *p, const float *logits);

#endif
