/*
 * Einsum (opsets 12 to 21): any equation with explicit or implicit output, "..." broadcast
 * dims, repeated labels in one operand (diagonals) and any number of operands.
 *
 * infer parses the equation once into labels: each has a size, a stride in every operand
 * (summed over a label repeated within an operand, 0 where the operand broadcasts it) and a
 * stride in the output (0 for summed labels). Two float operands whose labels are each batch
 * (both operands and the output), M (first and output), N (second and output) or K (both, not
 * the output) are a batched matrix product: each operand is copied into [batch, M, K] and
 * [batch, K, N] order in scratch (a strided view copy, broadcasting "..." dims), one GEMM per
 * batch, and the [batch, M, N] result is copied into the output's label order. Anything else
 * (diagonals, labels summed in one operand only, three operands, integers) runs a direct loop
 * over the output labels and, inside, the summed labels, multiplying elements in double.
 */
#include "common.h"
#include "gemm_kernel.h"

#include <string.h>

enum { EIN_LETTERS = 52, EIN_MAX_LABELS = EIN_LETTERS + SS_MAX_DIMS, EIN_MAX_IN = 8 };

typedef struct {
    int n_labels, n_out_labels; /* labels [0, n_out_labels) are the output's, in its order */
    int64_t size[EIN_MAX_LABELS];
    int64_t in_stride[EIN_MAX_IN][EIN_MAX_LABELS];
    int64_t out_stride[EIN_MAX_LABELS];
    unsigned char uses[EIN_MAX_IN][EIN_MAX_LABELS]; /* occurrences of a label in an operand */
    bool gemm;                                      /* the batched-GEMM path (see above) */
    int64_t nb, m, n, kk;
    ss_view va, vb, vc; /* operands into [nb, m, kk] / [nb, kk, n]; result into the output */
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
    int letters = 0, dots = 0; /* dots: 3 once the one "..." is seen (spaces are gone) */
    for (const char *p = s; p < e; p++)
        if (letter_id(*p) >= 0) {
            letters++;
        } else if (*p == '.') {
            if (dots || e - p < 3 || p[1] != '.' || p[2] != '.') return false;
            dots = 3, p += 2;
        } else {
            return false;
        }
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
    int commas = 0;
    for (const char *c = eq; c < end; c++)
        commas += *c == ',';
    if (n != k->n_in || commas != k->n_in - 1)
        return ss_op_err(k, SS_ERR_INVALID, "equation has %d terms for %d inputs", commas + 1,
                         k->n_in);
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
            p->uses[i][l]++;
            p->in_stride[i][l] += st[j];
        }
    }
    for (int j = 0; j < out->n; j++) /* (an output "..." dim every operand broadcasts is 1) */
        if (out->ids[j] < EIN_LETTERS && !known[slot[out->ids[j]]]) {
            int id = out->ids[j];
            return ss_op_err(k, SS_ERR_INVALID, "output label '%c' is in no input term",
                             id < 26 ? 'a' + id : 'A' + id - 26);
        }
    return NULL;
}

/* Label roles for the GEMM path. */
enum { R_BATCH, R_M, R_N, R_K, R_NONE };

static int ein_role(const ein_plan *p, int l)
{
    bool in_a = p->uses[0][l] == 1, in_b = p->uses[1][l] == 1, out = l < p->n_out_labels;
    if (p->uses[0][l] > 1 || p->uses[1][l] > 1) return R_NONE;
    if (in_a && in_b) return out ? R_BATCH : R_K;
    if (out) return in_a ? R_M : in_b ? R_N : R_NONE;
    return R_NONE;
}

/* A view reading the labels of `order` (roles r0, r1, r2 in turn) with strides `stride`. */
static void ein_view(const ein_plan *p, const int64_t *stride, const int *roles, ss_view *v)
{
    v->nd = 0;
    v->offset = 0;
    for (int r = 0; r < 3; r++)
        for (int l = 0; l < p->n_labels; l++)
            if (ein_role(p, l) == roles[r]) {
                v->dims[v->nd] = p->size[l];
                v->stride[v->nd++] = stride[l];
            }
    ss_view_simplify(v);
}

/* Chooses the GEMM path when every label has a role; sizes its scratch. */
static void ein_plan_gemm(ss_kctx *k, ein_plan *p)
{
    if (k->n_in != 2 || (k->in[0]->dtype != SS_DT_FLOAT32 && k->in[0]->dtype != SS_DT_FLOAT64))
        return;
    int64_t dim[4] = {1, 1, 1, 1};
    for (int l = 0; l < p->n_labels; l++) {
        int r = ein_role(p, l);
        if (r == R_NONE) return;
        dim[r] *= p->size[l];
    }
    p->gemm = true;
    p->nb = dim[R_BATCH], p->m = dim[R_M], p->n = dim[R_N], p->kk = dim[R_K];
    static const int a_roles[3] = {R_BATCH, R_M, R_K}, b_roles[3] = {R_BATCH, R_K, R_N};
    ein_view(p, p->in_stride[0], a_roles, &p->va);
    ein_view(p, p->in_stride[1], b_roles, &p->vb);
    /* the result is [nb, m, n]: each output label's stride in it */
    int64_t rs[EIN_MAX_LABELS] = {0}, step = 1;
    static const int c_roles[3] = {R_N, R_M, R_BATCH};
    for (int r = 0; r < 3; r++)
        for (int l = p->n_labels - 1; l >= 0; l--)
            if (ein_role(p, l) == c_roles[r]) rs[l] = step, step *= p->size[l];
    p->vc.nd = p->n_out_labels;
    p->vc.offset = 0;
    for (int l = 0; l < p->n_out_labels; l++)
        p->vc.dims[l] = p->size[l], p->vc.stride[l] = rs[l];
    ss_view_simplify(&p->vc);
    size_t es = ss_dtype_size(k->in[0]->dtype);
    k->scratch_bytes = es * (size_t)(p->nb * (p->m * p->kk + p->kk * p->n + p->m * p->n)) + 128;
}

static void einsum_run_gemm(ss_kctx *k, const ein_plan *p)
{
    ss_dtype dt = k->in[0]->dtype;
    size_t es = ss_dtype_size(dt);
    char *a = k->scratch, *b = a + (size_t)(p->nb * p->m * p->kk) * es,
         *c = b + (size_t)(p->nb * p->kk * p->n) * es;
    ss_view_copy(&p->va, es, k->in[0]->data, a);
    ss_view_copy(&p->vb, es, k->in[1]->data, b);
    for (int64_t i = 0; i < p->nb; i++)
        ss_op_blas_gemm(
            dt, false, false, p->m, p->n, p->kk, 1.0f, a + (size_t)(i * p->m * p->kk) * es, p->kk,
            b + (size_t)(i * p->kk * p->n) * es, p->n, 0.0f, c + (size_t)(i * p->m * p->n) * es);
    ss_view_copy(&p->vc, es, c, k->out[0]->data);
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
    /* "The equation string may contain space (U+0020)": ONNX's shape inference and onnxruntime
     * drop every one before parsing, so ". . ." is an ellipsis and "- >" an arrow */
    size_t kept = 0;
    for (size_t i = 0; eq[i]; i++)
        if (eq[i] != ' ') eq[kept++] = eq[i];
    eq[kept] = 0;
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
    ein_plan_gemm(k, p);
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
    if (p->gemm) {
        einsum_run_gemm(k, p);
        return NULL;
    }
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
        ss_op_store_f64(k->out[0]->data, o, k->out[0]->dtype, acc);
        ein_next(p, k->n_in, 0, p->n_out_labels, idx, off);
    }
    return NULL;
}

const ss_op_def ss_ops_einsum[] = {
    {"", "Einsum", 12, 21, einsum_infer, einsum_run, 0},
    {0},
};
