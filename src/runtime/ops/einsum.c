/*
 * Einsum (opsets 12 to 21): any equation with explicit or implicit output, "..." broadcast
 * dims, repeated labels in one operand (diagonals) and any number of operands.
 *
 * infer parses the equation once into labels: each has a size, a stride in every operand
 * (summed over a label repeated within an operand, 0 where the operand broadcasts it) and a
 * stride in the output (0 for summed labels). run walks the output labels and, inside, the
 * summed labels, multiplying the operands' elements in double. This is a direct loop, not a
 * GEMM: right for the small contractions exporters emit, slow for large matrix products.
 */
#include "common.h"
#include "store.h"

#include <string.h>

enum { EIN_LETTERS = 52, EIN_MAX_LABELS = EIN_LETTERS + SS_MAX_DIMS, EIN_MAX_IN = 8 };

typedef struct {
    int n_labels, n_out_labels; /* labels [0, n_out_labels) are the output's, in its order */
    int64_t size[EIN_MAX_LABELS];
    int64_t in_stride[EIN_MAX_IN][EIN_MAX_LABELS];
    int64_t out_stride[EIN_MAX_LABELS];
} ein_plan;

/* One operand's term: label ids (letters 0..51, ellipsis dims EIN_LETTERS + i, right-aligned
 * to the widest ellipsis). */
typedef struct {
    int n;
    int ids[SS_MAX_DIMS];
} ein_term;

static int letter_id(char c)
{
    if (c >= 'a' && c <= 'z') return c - 'a';
    if (c >= 'A' && c <= 'Z') return 26 + c - 'A';
    return -1;
}

/* Parses term [s, e) for a rank-`rank` operand (rank -1: the output, whose ellipsis has
 * `ell` dims). */
static bool parse_term(const char *s, const char *e, int rank, int ell_max, ein_term *t, int *ell)
{
    int letters = 0, dots = 0;
    for (const char *p = s; p < e; p++)
        if (letter_id(*p) >= 0)
            letters++;
        else if (*p == '.')
            dots++;
        else if (*p != ' ')
            return false;
    if (dots != 0 && dots != 3) return false;
    int n_ell = dots ? (rank >= 0 ? rank - letters : ell_max) : 0;
    if (n_ell < 0 || (rank >= 0 && !dots && letters != rank) || letters + n_ell > SS_MAX_DIMS)
        return false;
    *ell = n_ell;
    t->n = 0;
    for (const char *p = s; p < e; p++) {
        if (letter_id(*p) >= 0) t->ids[t->n++] = letter_id(*p);
        if (*p == '.' && p + 2 < e && p[1] == '.' && p[2] == '.') {
            for (int i = 0; i < n_ell; i++)
                t->ids[t->n++] = EIN_LETTERS + (ell_max - n_ell) + i;
            p += 2;
        }
    }
    return true;
}

/* The implicit output: ellipsis dims, then letters used exactly once, alphabetically. */
static void implicit_output(const ein_term *terms, int n_in, int ell_max, ein_term *out)
{
    int count[EIN_LETTERS] = {0};
    for (int i = 0; i < n_in; i++)
        for (int j = 0; j < terms[i].n; j++)
            if (terms[i].ids[j] < EIN_LETTERS) count[terms[i].ids[j]]++;
    out->n = 0;
    for (int i = 0; i < ell_max; i++)
        out->ids[out->n++] = EIN_LETTERS + i;
    for (int c = 0; c < EIN_LETTERS && out->n < SS_MAX_DIMS; c++)
        if (count[c] == 1) out->ids[out->n++] = c;
}

static ss_status *ein_parse(ss_kctx *k, const char *eq, ein_term *terms, ein_term *out)
{
    const char *arrow = strstr(eq, "->"), *end = arrow ? arrow : eq + strlen(eq);
    int ell_max = 0, ell = 0, n = 0;
    for (const char *s = eq; n < k->n_in; n++) {
        const char *comma = memchr(s, ',', (size_t)(end - s)), *e = comma ? comma : end;
        if (!parse_term(s, e, k->in[n]->ndim, 0, &terms[n], &ell))
            return ss_op_err(k, SS_ERR_INVALID, "equation term %d does not match input rank %d", n,
                             k->in[n]->ndim);
        ell_max = ell > ell_max ? ell : ell_max;
        if (!comma) {
            n++;
            break;
        }
        s = comma + 1;
    }
    if (n != k->n_in)
        return ss_op_err(k, SS_ERR_INVALID, "equation has %d terms for %d inputs", n, k->n_in);
    for (int i = 0; i < n; i++) { /* right-align every operand's ellipsis to the widest */
        int e2 = 0;
        const char *s = eq;
        for (int j = 0; j < i; j++)
            s = strchr(s, ',') + 1;
        const char *c = memchr(s, ',', (size_t)(end - s));
        parse_term(s, c ? c : end, k->in[i]->ndim, ell_max, &terms[i], &e2);
    }
    if (arrow) {
        if (!parse_term(arrow + 2, arrow + strlen(arrow), -1, ell_max, out, &ell))
            return ss_op_err(k, SS_ERR_INVALID, "bad output term '%s'", arrow + 2);
    } else {
        implicit_output(terms, n, ell_max, out);
    }
    return NULL;
}

/* Label sizes and strides from the parsed terms; ids are renumbered output-first. */
static ss_status *ein_layout(ss_kctx *k, const ein_term *terms, const ein_term *out, ein_plan *p)
{
    int slot[EIN_MAX_LABELS];
    for (int i = 0; i < EIN_MAX_LABELS; i++)
        slot[i] = -1, p->size[i] = 1;
    for (int j = 0; j < out->n; j++) {
        if (slot[out->ids[j]] >= 0) return ss_op_err(k, SS_ERR_INVALID, "output repeats a label");
        slot[out->ids[j]] = p->n_labels++;
    }
    p->n_out_labels = p->n_labels;
    for (int i = 0; i < k->n_in; i++)
        for (int j = 0; j < terms[i].n; j++)
            if (slot[terms[i].ids[j]] < 0) slot[terms[i].ids[j]] = p->n_labels++;
    bool known[EIN_MAX_LABELS] = {0};
    for (int i = 0; i < k->n_in; i++) {
        int64_t st[SS_MAX_DIMS];
        ss_op_contiguous_strides(k->in[i]->ndim, k->in[i]->dims, st);
        for (int j = 0; j < terms[i].n; j++) {
            int l = slot[terms[i].ids[j]];
            int64_t d = k->in[i]->dims[j];
            if (d == 1 && terms[i].ids[j] >= EIN_LETTERS) continue; /* broadcast "..." dim */
            if (known[l] && p->size[l] != d)
                return ss_op_err(k, SS_ERR_INVALID, "label sizes %lld and %lld disagree",
                                 (long long)p->size[l], (long long)d);
            known[l] = true;
            p->size[l] = d;
            p->in_stride[i][l] += st[j];
        }
    }
    return NULL;
}

static ss_status *einsum_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"equation", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    if (k->n_in < 1 || k->n_in > EIN_MAX_IN)
        return ss_op_err(k, SS_ERR_LIMIT, "%d inputs; at most %d are supported", k->n_in,
                         EIN_MAX_IN);
    for (int i = 0; i < k->n_in; i++)
        if (!k->in[i] || k->in[i]->dtype != k->in[0]->dtype || k->in[i]->dtype == SS_DT_STRING ||
            k->in[i]->dtype == SS_DT_BOOL)
            return ss_op_err(k, SS_ERR_INVALID, "inputs must share one numeric type");
    char eq[512];
    if (!ss_onnx_attr_string(k->node, "equation", eq, sizeof eq))
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'equation' is required");
    ein_term terms[EIN_MAX_IN], out;
    if ((st = ein_parse(k, eq, terms, &out))) return st;
    ein_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    if ((st = ein_layout(k, terms, &out, p))) return st;
    ss_tensor *y = k->out[0];
    y->dtype = k->in[0]->dtype;
    y->ndim = out.n;
    for (int j = 0; j < out.n; j++)
        y->dims[j] = p->size[j];
    ss_op_contiguous_strides(y->ndim, y->dims, p->out_stride);
    return NULL;
}

/* Advances the odometer idx over labels [from, to); false when it wraps. Offsets follow. */
static bool ein_next(const ein_plan *p, int n_in, int from, int to, int64_t *idx, int64_t *off)
{
    for (int l = to - 1; l >= from; l--) {
        for (int i = 0; i < n_in; i++)
            off[i] += p->in_stride[i][l];
        if (++idx[l] < p->size[l]) return true;
        for (int i = 0; i < n_in; i++)
            off[i] -= p->in_stride[i][l] * p->size[l];
        idx[l] = 0;
    }
    return false;
}

static ss_status *einsum_run(ss_kctx *k)
{
    const ein_plan *p = k->state;
    int64_t idx[EIN_MAX_LABELS] = {0}, off[EIN_MAX_IN] = {0};
    int64_t n_out = ss_tensor_numel(k->out[0]);
    bool empty_sum = false;
    for (int l = p->n_out_labels; l < p->n_labels; l++)
        empty_sum |= p->size[l] == 0;
    for (int64_t o = 0; o < n_out; o++) {
        double acc = 0;
        do {
            double prod = 1;
            for (int i = 0; i < k->n_in && !empty_sum; i++)
                prod *= ss_op_elem_f64(k->in[i], off[i]);
            acc += empty_sum ? 0 : prod;
        } while (!empty_sum && ein_next(p, k->n_in, p->n_out_labels, p->n_labels, idx, off));
        ss_op_store_f64(k->out[0], o, acc);
        ein_next(p, k->n_in, 0, p->n_out_labels, idx, off);
    }
    return NULL;
}

const ss_op_def ss_ops_einsum[] = {
    {"", "Einsum", 12, 21, einsum_infer, einsum_run, 0},
    {0},
};
