/*
 * String ops: StringNormalizer.
 *
 * StringNormalizer drops stopwords (compared case-sensitively or not) and changes the case of what
 * remains; its output length depends on the data (SS_OPF_DYNAMIC_SHAPE, bounded by the input's)
 * and, as the spec says, an input with nothing left gives one empty string. Case mapping is
 * ASCII only (the `locale` attribute is accepted and not used): non-ASCII bytes pass unchanged.
 * Output strings are SS_OPF_STRING_OUT: their bytes live in a text buffer owned by the node's
 * state, which grows at run time when a request's strings need more than any before (the one
 * allocation this run may make; released by the op's release hook).
 */
#include "common.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { CASE_NONE = 0, CASE_LOWER, CASE_UPPER } case_action;

typedef struct {
    case_action action;
    bool case_sensitive;
    char *text; /* output bytes, grown by run */
    size_t cap;
} strnorm_plan;

static void strnorm_release(void *state)
{
    free(((strnorm_plan *)state)->text);
}

static ss_status *strnorm_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"case_change_action", "is_case_sensitive", "locale",
                                        "stopwords", NULL};
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->dtype != SS_DT_STRING || x->ndim < 1 || x->ndim > 2 || (x->ndim == 2 && x->dims[0] != 1))
        return ss_op_err(k, SS_ERR_INVALID, "input must be a string tensor [C] or [1, C]");
    strnorm_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    char buf[16];
    const char *a = ss_onnx_attr_string(k->node, "case_change_action", buf, sizeof buf);
    if (!a || strcmp(a, "NONE") == 0)
        p->action = CASE_NONE;
    else if (strcmp(a, "LOWER") == 0)
        p->action = CASE_LOWER;
    else if (strcmp(a, "UPPER") == 0)
        p->action = CASE_UPPER;
    else
        return ss_op_err(k, SS_ERR_INVALID, "case_change_action '%s' is not NONE, LOWER or UPPER",
                         a);
    p->case_sensitive = ss_onnx_attr_int(k->node, "is_case_sensitive", 0) != 0;
    ss_op_same_shape(k->out[0], x);
    int64_t c = x->dims[x->ndim - 1];
    k->out[0]->dims[x->ndim - 1] = c > 0 ? c : 1; /* room for the one empty string */
    return NULL;
}

static bool strnorm_is_stopword(const ss_kctx *k, const strnorm_plan *p, const ss_string *s)
{
    const ss_onnx_attr *a = ss_onnx_attr_find(k->node, "stopwords");
    for (size_t i = 0; a && i < a->n_strings; i++) {
        const ProtobufCBinaryData *w = &a->strings[i];
        if (w->len != s->len) continue;
        const char *t = s->data ? s->data : "";
        if (p->case_sensitive ? memcmp(w->data, t, s->len) == 0
                              : strncasecmp((const char *)w->data, t, s->len) == 0)
            return true;
    }
    return false;
}

/* The text buffer holds at least `need` bytes. */
static ss_status *strnorm_reserve(const ss_kctx *k, strnorm_plan *p, size_t need)
{
    if (need <= p->cap) return NULL;
    char *t = realloc(p->text, need);
    if (!t) return ss_op_err(k, SS_ERR_NOMEM, "cannot hold %zu bytes of strings", need);
    p->text = t;
    p->cap = need;
    return NULL;
}

static ss_status *strnorm_run(ss_kctx *k)
{
    strnorm_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    const ss_string *in = x->data;
    ss_string *out = k->out[0]->data;
    int64_t n = ss_tensor_numel(x), kept = 0;
    size_t bytes = 1;
    for (int64_t i = 0; i < n; i++)
        if (!strnorm_is_stopword(k, p, &in[i])) bytes += in[i].len + 1;
    ss_status *st = strnorm_reserve(k, p, bytes);
    if (st) return st;
    char *t = p->text;
    for (int64_t i = 0; i < n; i++) {
        if (strnorm_is_stopword(k, p, &in[i])) continue;
        for (size_t j = 0; j < in[i].len; j++) {
            unsigned char ch = (unsigned char)in[i].data[j];
            t[j] = (char)(p->action == CASE_LOWER   ? tolower(ch)
                          : p->action == CASE_UPPER ? toupper(ch)
                                                    : ch);
        }
        t[in[i].len] = 0;
        out[kept++] = (ss_string){.len = in[i].len, .data = t};
        t += in[i].len + 1;
    }
    if (kept == 0) {
        *t = 0;
        out[kept++] = (ss_string){.len = 0, .data = t};
    }
    int64_t dims[2] = {1, kept};
    ss_op_set_shape(k, 0, x->ndim, x->ndim == 2 ? dims : dims + 1);
    return NULL;
}

const ss_op_def ss_ops_strings[] = {
    {"", "StringNormalizer", 10, 21, strnorm_infer, strnorm_run,
     SS_OPF_DYNAMIC_SHAPE | SS_OPF_STRING_OUT, strnorm_release},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
