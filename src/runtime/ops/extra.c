/*
 * Standard ops that belong to no larger family here: TfIdfVectorizer (integer n-grams; Shrink,
 * ReverseSequence and Det live in misc.c).
 *
 * TfIdfVectorizer counts n-grams the way onnxruntime's kernel does: for every skip distance
 * 1..max_skip_count+1 and start position, the n-grams of min..max_gram_length items `skip`
 * apart; unigrams count once (they do not depend on the skip distance). Each n-gram is looked up
 * in its length's segment of the pool. run never allocates.
 */
#include "common.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ TfIdfVectorizer */

typedef enum { TF = 0, IDF, TFIDF } tfidf_mode;

typedef struct {
    int64_t min_n, max_n, max_skip, out_len, rows, row_len;
    tfidf_mode mode;
} tfidf_plan;

static const char *const tfidf_attrs[] = {
    "max_gram_length", "max_skip_count", "min_gram_length", "mode",    "ngram_counts",
    "ngram_indexes",   "pool_int64s",    "pool_strings",    "weights", NULL};

/* The `weights` attribute: its count (or -1 if absent) and values. */
static int tfidf_weights(const ss_kctx *k, const float **w)
{
    const ss_onnx_attr *a = ss_onnx_attr_find(k->node, "weights");
    *w = a ? a->floats : NULL;
    return a ? (int)a->n_floats : -1;
}

static ss_status *tfidf_check_pool(const ss_kctx *k, tfidf_plan *p)
{
    const int64_t *counts, *indexes, *pool;
    int nc = ss_onnx_attr_ints(k->node, "ngram_counts", &counts);
    int ni = ss_onnx_attr_ints(k->node, "ngram_indexes", &indexes);
    int np = ss_onnx_attr_ints(k->node, "pool_int64s", &pool);
    if (np < 0) return ss_op_err(k, SS_ERR_UNSUPPORTED, "only 'pool_int64s' is supported");
    if (nc < 1 || nc > p->max_n + 0 || ni < 0)
        return ss_op_err(k, SS_ERR_INVALID, "ngram_counts must have one entry per n-gram length");
    int64_t ngrams = 0;
    for (int i = 0; i < nc; i++) {
        int64_t end = i + 1 < nc ? counts[i + 1] : np;
        if (counts[i] < 0 || end < counts[i] || end > np || (end - counts[i]) % (i + 1))
            return ss_op_err(k, SS_ERR_INVALID, "ngram_counts does not split the pool");
        ngrams += (end - counts[i]) / (i + 1);
    }
    if (ngrams != ni) return ss_op_err(k, SS_ERR_INVALID, "ngram_indexes has %d entries", ni);
    p->out_len = 0;
    for (int i = 0; i < ni; i++) {
        if (indexes[i] < 0) return ss_op_err(k, SS_ERR_INVALID, "a negative ngram index");
        if (indexes[i] + 1 > p->out_len) p->out_len = indexes[i] + 1;
    }
    const float *w;
    int nw = tfidf_weights(k, &w);
    if (nw >= 0 && nw != ni) return ss_op_err(k, SS_ERR_INVALID, "weights has %d entries", nw);
    return NULL;
}

static ss_status *tfidf_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, tfidf_attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if ((x->dtype != SS_DT_INT32 && x->dtype != SS_DT_INT64) || x->ndim < 1 || x->ndim > 2)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input must be int32/int64 of rank 1 or 2");
    tfidf_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    char mb[8];
    const char *mode = ss_onnx_attr_string(k->node, "mode", mb, sizeof mb);
    p->mode = !mode ? TF : strcmp(mode, "IDF") == 0 ? IDF : strcmp(mode, "TFIDF") == 0 ? TFIDF : TF;
    if (mode && p->mode == TF && strcmp(mode, "TF") != 0)
        return ss_op_err(k, SS_ERR_INVALID, "unknown mode '%s'", mode);
    p->min_n = ss_onnx_attr_int(k->node, "min_gram_length", 0);
    p->max_n = ss_onnx_attr_int(k->node, "max_gram_length", 0);
    p->max_skip = ss_onnx_attr_int(k->node, "max_skip_count", 0);
    if (p->min_n < 1 || p->max_n < p->min_n || p->max_skip < 0)
        return ss_op_err(k, SS_ERR_INVALID, "gram lengths and skip count are out of range");
    if ((st = tfidf_check_pool(k, p))) return st;
    p->rows = x->ndim == 2 ? x->dims[0] : 1;
    p->row_len = x->dims[x->ndim - 1];
    *k->out[0] = (ss_tensor){.dtype = SS_DT_FLOAT32, .ndim = x->ndim};
    k->out[0]->dims[0] = p->rows;
    k->out[0]->dims[x->ndim - 1] = p->out_len;
    return NULL;
}

/* The n-gram index (into ngram_indexes) of the n items of row at start, d apart, or -1. */
static int64_t tfidf_find(const ss_kctx *k, const ss_tensor *x, int64_t row, int64_t start,
                          int64_t d, int64_t n)
{
    const int64_t *counts, *pool;
    int nc = ss_onnx_attr_ints(k->node, "ngram_counts", &counts);
    int np = ss_onnx_attr_ints(k->node, "pool_int64s", &pool);
    if (n > nc) return -1;
    int64_t before = 0;
    for (int64_t i = 0; i + 1 < n; i++)
        before += ((i + 1 < nc ? counts[i + 1] : np) - counts[i]) / (i + 1);
    int64_t lo = counts[n - 1], hi = n < nc ? counts[n] : np;
    for (int64_t g = lo; g < hi; g += n) {
        bool same = true;
        for (int64_t j = 0; j < n && same; j++)
            same = pool[g + j] == ss_op_elem_i64(x, row + start + j * d);
        if (same) return before + (g - lo) / n;
    }
    return -1;
}

static ss_status *tfidf_run(ss_kctx *k)
{
    const tfidf_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    float *y = k->out[0]->data;
    const int64_t *indexes;
    const float *w = NULL;
    int ni = ss_onnx_attr_ints(k->node, "ngram_indexes", &indexes);
    bool weighted = tfidf_weights(k, &w) >= 0;
    memset(y, 0, sizeof(float) * (size_t)(p->rows * p->out_len));
    for (int64_t r = 0; r < p->rows; r++) {
        int64_t first_n = p->min_n, row = r * p->row_len;
        for (int64_t d = 1; d <= p->max_skip + 1 && first_n <= p->max_n; d++) {
            for (int64_t s = 0; s < p->row_len; s++)
                for (int64_t n = first_n; n <= p->max_n && s + (n - 1) * d < p->row_len; n++) {
                    int64_t g = tfidf_find(k, x, row, s, d, n);
                    if (g >= 0) y[r * p->out_len + indexes[g]] += 1;
                }
            if (first_n == 1) first_n = 2; /* unigrams do not depend on the skip distance */
        }
    }
    for (int64_t r = 0; r < p->rows && p->mode != TF; r++)
        for (int g = 0; g < ni; g++) {
            float *v = &y[r * p->out_len + indexes[g]], wt = weighted ? w[g] : 1.0f;
            *v = p->mode == IDF ? (*v > 0 ? wt : 0) : *v * wt;
        }
    return NULL;
}

const ss_op_def ss_ops_extra[] = {
    {"", "TfIdfVectorizer", 9, 21, tfidf_infer, tfidf_run, 0, NULL},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
