/*
 * Ops that draw random numbers: RandomUniform, RandomNormal, RandomUniformLike,
 * RandomNormalLike, Bernoulli, Multinomial.
 *
 * The numbers come from a counter-based generator: element i of a node's c-th run is a hash of
 * (key, c, i), where the key is the node's `seed` attribute or, without one, fresh entropy drawn
 * when the node is planned. So a seeded node gives the same sequence of outputs in every session
 * (run 1, run 2, ...: the run count is the session's, kept across re-plans, ss_kctx_node_word),
 * consecutive runs differ, and no element depends on how many came before it. The streams are
 * not onnxruntime's (std::mt19937): seeded outputs match in distribution, not bit for bit.
 *
 * These nodes are never folded (SS_OPF_NO_FOLD): a constant-shaped RandomNormal must draw anew
 * at every run, not once at plan time.
 */
#include "common.h"

#include <math.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ------------------------------------------------------------------ the generator */

typedef struct {
    uint64_t key;
    uint64_t *runs; /* the session's count of this node's runs, or own_runs outside a session */
    uint64_t own_runs;
    uint64_t stream; /* this run's stream key: set by rng_next_run */
    int64_t classes; /* Multinomial: class count (its scratch row of doubles) */
    int64_t samples; /* Multinomial: sample_size */
    double a, b;     /* uniform: low, high - low; normal: mean, scale */
} rng_plan;

/* SplitMix64's finalizer (Stafford's mix 13): a bijection that scatters every input bit. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#define GOLDEN 0x9e3779b97f4a7c15ull

static void rng_next_run(rng_plan *p)
{
    uint64_t c = (*p->runs)++;
    p->stream = mix64(p->key ^ mix64(c + 0x632be59bd9b4e019ull));
}

static uint64_t rng_bits(const rng_plan *p, uint64_t i)
{
    return mix64(p->stream + (i + 1) * GOLDEN);
}

/* uniform on [0, 1) with 53 random bits */
static double rng_unit(const rng_plan *p, uint64_t i)
{
    return (double)(rng_bits(p, i) >> 11) * 0x1p-53;
}

/* standard normal: Box-Muller on the pair (2j, 2j + 1) of draws, cos for even i, sin for odd */
static double rng_normal(const rng_plan *p, uint64_t i)
{
    uint64_t j = i / 2;
    double u1 = (double)((rng_bits(p, 2 * j) >> 11) + 1) * 0x1p-53; /* (0, 1]: log is finite */
    double u2 = rng_unit(p, 2 * j + 1);
    double r = sqrt(-2.0 * log(u1)), t = 2.0 * M_PI * u2;
    return r * (i % 2 ? sin(t) : cos(t));
}

/* The plan's key and run counter. `seed` (a float attribute) fixes the key; without it the key
 * is fresh entropy, so unseeded nodes differ between sessions too. */
static rng_plan *rng_plan_new(ss_kctx *k, size_t extra)
{
    rng_plan *p = ss_op_state_alloc(k, sizeof *p + extra);
    if (!p) return NULL;
    const ss_onnx_attr *seed = ss_onnx_attr_find(k->node, "seed");
    if (seed) {
        float f = ss_onnx_attr_float(k->node, "seed", 0.0f);
        uint32_t bits;
        memcpy(&bits, &f, sizeof bits);
        p->key = mix64((uint64_t)bits ^ 0x5eed5eed00000000ull);
    } else if (getrandom(&p->key, sizeof p->key, GRND_NONBLOCK) != (ssize_t)sizeof p->key) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        p->key = mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uintptr_t)p);
    }
    p->runs = ss_kctx_node_word(k);
    if (!p->runs) p->runs = &p->own_runs;
    return p;
}

/* ------------------------------------------------------------------ dtypes */

static bool float_type(ss_dtype dt)
{
    return dt == SS_DT_FLOAT32 || dt == SS_DT_FLOAT64 || dt == SS_DT_FLOAT16 ||
           dt == SS_DT_BFLOAT16;
}

/* The `dtype` attribute (or dflt when absent), which must be one of `allowed`. */
static ss_status *attr_dtype(const ss_kctx *k, ss_dtype dflt, const ss_dtype *allowed, int n,
                             ss_dtype *out)
{
    int64_t dt = ss_onnx_attr_int(k->node, "dtype", dflt);
    for (int i = 0; i < n; i++)
        if (dt == allowed[i]) {
            *out = allowed[i];
            return NULL;
        }
    return ss_op_err(k, SS_ERR_UNSUPPORTED,
                     "attribute 'dtype' %lld (%s) is not an output type of %s", (long long)dt,
                     ss_dtype_valid((int)dt) ? ss_dtype_name((ss_dtype)dt) : "?", k->node->op_type);
}

static const ss_dtype float_types[] = {SS_DT_FLOAT32, SS_DT_FLOAT64, SS_DT_FLOAT16, SS_DT_BFLOAT16};

/* ------------------------------------------------------------------ RandomUniform/Normal(Like) */

static bool is_normal(const ss_kctx *k)
{
    return strstr(k->node->op_type, "Normal") != NULL;
}

static ss_status *dist_params(ss_kctx *k, rng_plan *p)
{
    if (is_normal(k)) {
        p->a = ss_onnx_attr_float(k->node, "mean", 0.0f);
        p->b = ss_onnx_attr_float(k->node, "scale", 1.0f);
        if (!isfinite(p->a) || !isfinite(p->b))
            return ss_op_err(k, SS_ERR_INVALID,
                             "attributes 'mean' %g and 'scale' %g must be finite", p->a, p->b);
        return NULL;
    }
    double lo = ss_onnx_attr_float(k->node, "low", 0.0f);
    double hi = ss_onnx_attr_float(k->node, "high", 1.0f);
    if (!isfinite(lo) || !isfinite(hi) || hi < lo)
        return ss_op_err(k, SS_ERR_INVALID,
                         "attributes 'low' %g and 'high' %g must be finite with low <= high", lo,
                         hi);
    p->a = lo;
    p->b = hi - lo;
    return NULL;
}

static ss_status *random_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"dtype", "high", "low",   "mean",
                                        "scale", "seed", "shape", NULL};
    bool like = strstr(k->node->op_type, "Like") != NULL;
    ss_status *st = ss_op_expect_inputs(k, like ? 1 : 0, like ? 1 : 0);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    ss_tensor *y = k->out[0];
    ss_dtype dt = SS_DT_UNDEFINED;
    if (like) {
        const ss_tensor *x = k->in[0];
        /* without `dtype` the output takes the input's type, which must then be a float */
        ss_dtype dflt = float_type(x->dtype) ? x->dtype : SS_DT_UNDEFINED;
        if ((st = attr_dtype(k, dflt, float_types, 4, &dt))) return st;
        ss_op_same_shape(y, x);
    } else {
        if ((st = attr_dtype(k, SS_DT_FLOAT32, float_types, 4, &dt))) return st;
        const int64_t *shape;
        int n = ss_onnx_attr_ints(k->node, "shape", &shape);
        if (n < 0) return ss_op_err(k, SS_ERR_INVALID, "attribute 'shape' is required");
        if (n > SS_MAX_DIMS)
            return ss_op_err(k, SS_ERR_LIMIT, "attribute 'shape' has %d dims, at most %d", n,
                             SS_MAX_DIMS);
        y->ndim = n;
        for (int i = 0; i < n; i++) {
            if (shape[i] < 0)
                return ss_op_err(k, SS_ERR_INVALID, "attribute 'shape'[%d] = %lld is negative", i,
                                 (long long)shape[i]);
            y->dims[i] = shape[i];
        }
        if (ss_tensor_numel(y) < 0)
            return ss_op_err(k, SS_ERR_LIMIT, "attribute 'shape' is too large");
    }
    y->dtype = dt;
    rng_plan *p = rng_plan_new(k, 0);
    if (!p) return ss_op_oom();
    return dist_params(k, p);
}

static ss_status *random_run(ss_kctx *k)
{
    rng_plan *p = k->state;
    ss_tensor *y = k->out[0];
    int64_t n = ss_tensor_numel(y);
    rng_next_run(p);
    if (is_normal(k)) {
        for (int64_t i = 0; i < n; i++)
            ss_op_store_f64(y->data, i, y->dtype, p->a + p->b * rng_normal(p, (uint64_t)i));
        return NULL;
    }
    double hi = p->a + p->b;
    for (int64_t i = 0; i < n; i++) {
        double v = p->a + p->b * rng_unit(p, (uint64_t)i);
        ss_op_store_f64(y->data, i, y->dtype, v < hi ? v : p->a);
    }
    if (y->dtype != SS_DT_FLOAT64 && p->b > 0) {
        /* rounding to a narrower type can land on `high`; the range is [low, high) */
        for (int64_t i = 0; i < n; i++)
            if (ss_op_elem_f64(y, i) >= hi) ss_op_store_f64(y->data, i, y->dtype, p->a);
    }
    return NULL;
}

/* ------------------------------------------------------------------ Bernoulli */

static ss_status *bernoulli_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"dtype", "seed", NULL};
    static const ss_dtype out_types[] = {
        SS_DT_FLOAT32, SS_DT_FLOAT64, SS_DT_FLOAT16, SS_DT_BFLOAT16, SS_DT_UINT8,
        SS_DT_UINT16,  SS_DT_UINT32,  SS_DT_UINT64,  SS_DT_INT8,     SS_DT_INT16,
        SS_DT_INT32,   SS_DT_INT64,   SS_DT_BOOL};
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_dtype(k, 0, float_types, 4);
    ss_dtype dt = SS_DT_UNDEFINED;
    if (!st) st = attr_dtype(k, k->in[0]->dtype, out_types, 13, &dt);
    if (st) return st;
    ss_op_same_shape(k->out[0], k->in[0]);
    k->out[0]->dtype = dt;
    return rng_plan_new(k, 0) ? NULL : ss_op_oom();
}

/* y[i] = 1 with probability x[i]: a draw below it (x <= 0 or NaN never, x >= 1 always) */
static ss_status *bernoulli_run(ss_kctx *k)
{
    rng_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    ss_tensor *y = k->out[0];
    int64_t n = ss_tensor_numel(y);
    rng_next_run(p);
    for (int64_t i = 0; i < n; i++)
        ss_op_store_f64(y->data, i, y->dtype, rng_unit(p, (uint64_t)i) < ss_op_elem_f64(x, i));
    return NULL;
}

/* ------------------------------------------------------------------ Multinomial */

static ss_status *multinomial_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"dtype", "sample_size", "seed", NULL};
    static const ss_dtype in_types[] = {SS_DT_FLOAT32, SS_DT_FLOAT64, SS_DT_FLOAT16};
    static const ss_dtype out_types[] = {SS_DT_INT32, SS_DT_INT64};
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_dtype(k, 0, in_types, 3);
    ss_dtype dt = SS_DT_UNDEFINED;
    if (!st) st = attr_dtype(k, SS_DT_INT32, out_types, 2, &dt);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim != 2)
        return ss_op_err(k, SS_ERR_INVALID, "input must be [batch_size, class_size], has rank %d",
                         x->ndim);
    int64_t samples = ss_onnx_attr_int(k->node, "sample_size", 1);
    if (samples < 1 || samples > ((int64_t)1 << 40))
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'sample_size' %lld must be in 1..2^40",
                         (long long)samples);
    if (x->dims[0] > 0 && x->dims[1] < 1)
        return ss_op_err(k, SS_ERR_INVALID, "class_size is 0: nothing to draw from");
    rng_plan *p = rng_plan_new(k, 0);
    if (!p) return ss_op_oom();
    p->classes = x->dims[1];
    p->samples = samples;
    k->scratch_bytes = (size_t)x->dims[1] * sizeof(double);
    ss_tensor *y = k->out[0];
    y->dtype = dt;
    y->ndim = 2;
    y->dims[0] = x->dims[0];
    y->dims[1] = samples;
    if (ss_tensor_numel(y) < 0) return ss_op_err(k, SS_ERR_LIMIT, "output is too large");
    return NULL;
}

/* Draws class j with probability exp(x[j]) / sum exp(x): the cumulative sums of exp(x - max)
 * over the finite logits (a non-finite one has probability 0), then, per sample, the first class
 * whose cumulative sum exceeds a uniform draw times the total. */
static ss_status *multinomial_run(ss_kctx *k)
{
    rng_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    ss_tensor *y = k->out[0];
    double *cdf = k->scratch;
    int64_t C = p->classes, S = p->samples;
    rng_next_run(p);
    for (int64_t b = 0; b < x->dims[0]; b++) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < C; j++) {
            double v = ss_op_elem_f64(x, b * C + j);
            if (isfinite(v) && v > mx) mx = v;
        }
        if (!isfinite(mx))
            return ss_op_err(k, SS_ERR_INVALID, "row %lld of the input has no finite logit",
                             (long long)b);
        double total = 0;
        for (int64_t j = 0; j < C; j++) {
            double v = ss_op_elem_f64(x, b * C + j);
            if (isfinite(v)) total += exp(v - mx);
            cdf[j] = total;
        }
        for (int64_t s = 0; s < S; s++) {
            double u = rng_unit(p, (uint64_t)(b * S + s)) * total;
            int64_t lo = 0, hi = C - 1; /* first j with cdf[j] > u; the last class at worst */
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (cdf[mid] > u)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            if (cdf[lo] <= u) /* u rounded up to the total: the last class that can be drawn */
                while (lo > 0 && cdf[lo] == cdf[lo - 1])
                    lo--;
            ss_op_store_f64(y->data, b * S + s, y->dtype, (double)lo);
        }
    }
    return NULL;
}

const ss_op_def ss_ops_random[] = {
    {"", "RandomUniform", 1, 21, random_infer, random_run, SS_OPF_NO_FOLD},
    {"", "RandomNormal", 1, 21, random_infer, random_run, SS_OPF_NO_FOLD},
    {"", "RandomUniformLike", 1, 21, random_infer, random_run, SS_OPF_NO_FOLD},
    {"", "RandomNormalLike", 1, 21, random_infer, random_run, SS_OPF_NO_FOLD},
    {"", "Bernoulli", 15, 21, bernoulli_infer, bernoulli_run, SS_OPF_NO_FOLD},
    {"", "Multinomial", 7, 21, multinomial_infer, multinomial_run, SS_OPF_NO_FOLD},
    {0},
};
