/* Rank graph construction: see build.h. */
#include "build.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define INLINE_LIMIT 256 /* initializers up to this many bytes stay inside the .onnx */
#define DATA_ALIGN 64

struct arena_block {
    arena_block *next;
    size_t used, cap;
    max_align_t data[];
};

void *rg_alloc(rank_graph *g, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    arena_block *b = g->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) {
            if (!g->error) g->error = ss_errf(SS_ERR_NOMEM, "out of memory building a shard");
            return NULL;
        }
        b->next = g->blocks;
        b->used = 0;
        b->cap = cap;
        g->blocks = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

/* When an allocation fails, g->error says so and the graph is never written; the names made
 * meanwhile are this empty string instead of NULL, so that the code building the rest of the
 * graph until it looks at g->error (comparing names, looking them up) runs on without a check at
 * every step. */
static char no_name[1];

char *rg_strdup(rank_graph *g, const char *s)
{
    if (!s) { /* a name an earlier allocation failed to make; else a bug: fail, never write */
        if (!g->error) g->error = ss_errf(SS_ERR_INTERNAL, "a shard graph name is missing");
        return no_name;
    }
    size_t n = strlen(s) + 1;
    char *p = rg_alloc(g, n);
    if (!p) return no_name;
    memcpy(p, s, n);
    return p;
}

char *rg_printf(rank_graph *g, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return rg_strdup(g, buf);
}

static bool grow(rank_graph *g, void **arr, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap) return true;
    size_t nc = *cap ? *cap * 2 : 64;
    void *p = realloc(*arr, nc * elem);
    if (!p) {
        if (!g->error) g->error = ss_errf(SS_ERR_NOMEM, "out of memory building a shard");
        return false;
    }
    *arr = p;
    *cap = nc;
    return true;
}

Onnx__NodeProto *rg_node(rank_graph *g, const char *op_type, const char *domain, int n_in,
                         const char *const *inputs, int n_out, const char *const *outputs)
{
    Onnx__NodeProto *n = rg_alloc(g, sizeof *n);
    char **ins = rg_alloc(g, sizeof(char *) * (size_t)(n_in + 1));
    char **outs = rg_alloc(g, sizeof(char *) * (size_t)(n_out + 1));
    if (!n || !ins || !outs ||
        !grow(g, (void **)&g->nodes, g->n_nodes, &g->cap_nodes, sizeof *g->nodes))
        return NULL;
    onnx__node_proto__init(n);
    for (int i = 0; i < n_in; i++)
        ins[i] = rg_strdup(g, inputs[i] ? inputs[i] : "");
    for (int i = 0; i < n_out; i++)
        outs[i] = rg_strdup(g, outputs[i]);
    n->n_input = (size_t)n_in;
    n->input = ins;
    n->n_output = (size_t)n_out;
    n->output = outs;
    n->op_type = rg_strdup(g, op_type);
    n->domain = rg_strdup(g, domain ? domain : "");
    n->name = rg_printf(g, "%s_%d", op_type, g->counter++);
    g->nodes[g->n_nodes++] = n;
    return n;
}

static Onnx__AttributeProto *add_attr(rank_graph *g, Onnx__NodeProto *n, const char *name)
{
    Onnx__AttributeProto *a = rg_alloc(g, sizeof *a);
    Onnx__AttributeProto **arr = rg_alloc(g, sizeof(*arr) * (n->n_attribute + 1));
    if (!a || !arr) return NULL;
    onnx__attribute_proto__init(a);
    a->name = rg_strdup(g, name);
    a->has_type = 1;
    if (n->n_attribute) memcpy(arr, n->attribute, sizeof(*arr) * n->n_attribute);
    arr[n->n_attribute++] = a;
    n->attribute = arr;
    return a;
}

void rg_attr_int(rank_graph *g, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = n ? add_attr(g, n, name) : NULL;
    if (!a) return;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->has_i = 1;
    a->i = v;
}

void rg_attr_ints(rank_graph *g, Onnx__NodeProto *n, const char *name, const int64_t *v, int count)
{
    Onnx__AttributeProto *a = n ? add_attr(g, n, name) : NULL;
    int64_t *copy = rg_alloc(g, sizeof(int64_t) * (size_t)(count + 1));
    if (!a || !copy) return;
    memcpy(copy, v, sizeof(int64_t) * (size_t)count);
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    a->n_ints = (size_t)count;
    a->ints = copy;
}

void rg_attr_string(rank_graph *g, Onnx__NodeProto *n, const char *name, const char *v)
{
    Onnx__AttributeProto *a = n ? add_attr(g, n, name) : NULL;
    if (!a) return;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    a->has_s = 1;
    a->s.data = (uint8_t *)rg_strdup(g, v);
    a->s.len = strlen((const char *)a->s.data);
}

void rg_attr_copy_except(rank_graph *g, Onnx__NodeProto *n, const Onnx__NodeProto *from,
                         const char *const *skip)
{
    if (!n) return;
    Onnx__AttributeProto **arr = rg_alloc(g, sizeof(*arr) * (from->n_attribute + 1));
    if (!arr) return;
    size_t k = 0;
    for (size_t i = 0; i < from->n_attribute; i++) {
        bool skipped = false;
        for (const char *const *s = skip; s && *s; s++)
            skipped |= !strcmp(from->attribute[i]->name, *s);
        if (!skipped) arr[k++] = from->attribute[i];
    }
    n->attribute = arr;
    n->n_attribute = k;
}

void rg_attr_copy(rank_graph *g, Onnx__NodeProto *n, const Onnx__NodeProto *from)
{
    rg_attr_copy_except(g, n, from, NULL);
}

bool rg_has_init(const rank_graph *g, const char *name)
{
    for (size_t i = 0; i < g->n_inits; i++)
        if (!strcmp(g->init_names[i], name)) return true;
    return false;
}

/* Bytes of the index-th of `parts` slices of t along axis, written to `dst` (or counted). */
static size_t slice_copy(const ss_tensor *t, int axis, int parts, int index, char *dst)
{
    size_t es = ss_dtype_size(t->dtype);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++)
        outer *= t->dims[d];
    for (int d = axis + 1; d < t->ndim; d++)
        inner *= t->dims[d];
    int64_t chunk = t->dims[axis] / parts;
    size_t row = (size_t)(chunk * inner) * es, stride = (size_t)(t->dims[axis] * inner) * es;
    if (dst)
        for (int64_t o = 0; o < outer; o++)
            memcpy(dst + (size_t)o * row,
                   (const char *)t->data + (size_t)o * stride + (size_t)index * row, row);
    return (size_t)outer * row;
}

/* String tensors keep their values in string_data (raw_data cannot hold them): the slice's
 * ss_string records in `recs`, each string copied into the graph's memory. */
static void init_strings(rank_graph *g, Onnx__TensorProto *tp, const ss_string *recs, size_t n)
{
    ProtobufCBinaryData *v = rg_alloc(g, sizeof *v * (n ? n : 1));
    if (!v) return;
    for (size_t i = 0; i < n; i++) {
        v[i].len = recs[i].len;
        v[i].data = rg_alloc(g, recs[i].len ? recs[i].len : 1);
        if (!v[i].data) return;
        if (recs[i].len) memcpy(v[i].data, recs[i].data, recs[i].len);
    }
    tp->string_data = v;
    tp->n_string_data = n;
}

void rg_init(rank_graph *g, const char *name, const ss_tensor *t, int axis, int parts, int index)
{
    rg_init_blocked(g, name, t, axis, 1, parts, index);
}

void rg_init_blocked(rank_graph *g, const char *name, const ss_tensor *t, int axis, int blocks,
                     int parts, int index)
{
    /* the slice of every block is the slice of axis + 1 of the view [.., blocks, D / blocks, ..] */
    ss_tensor view = *t;
    int vaxis = axis;
    if (parts > 1 && blocks > 1 && t->ndim < SS_MAX_DIMS) {
        for (int d = t->ndim; d > axis; d--)
            view.dims[d] = t->dims[d - 1];
        view.dims[axis] = blocks;
        view.dims[axis + 1] = t->dims[axis] / blocks;
        view.ndim = t->ndim + 1;
        vaxis = axis + 1;
    }
    if (g->error || rg_has_init(g, name)) return;
    if (!grow(g, (void **)&g->inits, g->n_inits, &g->cap_inits, sizeof *g->inits) ||
        !grow(g, (void **)&g->init_names, g->n_inits, &g->cap_init_names, sizeof *g->init_names))
        return;
    Onnx__TensorProto *tp = rg_alloc(g, sizeof *tp);
    int64_t *dims = rg_alloc(g, sizeof(int64_t) * (size_t)(t->ndim + 1));
    if (!tp || !dims) return;
    onnx__tensor_proto__init(tp);
    tp->name = rg_strdup(g, name);
    tp->has_data_type = 1;
    tp->data_type = t->dtype;
    for (int d = 0; d < t->ndim; d++)
        dims[d] = t->dims[d];
    if (parts > 1) dims[axis] /= parts;
    tp->n_dims = (size_t)t->ndim;
    tp->dims = dims;
    size_t bytes = parts > 1 ? slice_copy(&view, vaxis, parts, index, NULL) : t->nbytes;
    char *buf = rg_alloc(g, bytes ? bytes : 1);
    if (!buf) return;
    if (parts > 1)
        slice_copy(&view, vaxis, parts, index, buf);
    else if (bytes)
        memcpy(buf, t->data, bytes);
    g->param_bytes += bytes;
    if (t->dtype == SS_DT_STRING) {
        init_strings(g, tp, (const ss_string *)buf, bytes / sizeof(ss_string));
    } else if (bytes <= INLINE_LIMIT || !g->data) {
        tp->has_raw_data = 1;
        tp->raw_data.data = (uint8_t *)buf;
        tp->raw_data.len = bytes;
    } else {
        size_t pad = (DATA_ALIGN - g->data_off % DATA_ALIGN) % DATA_ALIGN;
        static const char zeros[DATA_ALIGN];
        if ((pad && fwrite(zeros, 1, pad, g->data) != pad) ||
            fwrite(buf, 1, bytes, g->data) != bytes) {
            g->error = ss_errf(SS_ERR_IO, "writing %s: %s", g->data_location, strerror(errno));
            return;
        }
        g->data_off += pad;
        Onnx__StringStringEntryProto **ext = rg_alloc(g, sizeof(*ext) * 3);
        const char *keys[3] = {"location", "offset", "length"};
        char *vals[3] = {rg_strdup(g, g->data_location), rg_printf(g, "%zu", g->data_off),
                         rg_printf(g, "%zu", bytes)};
        for (int i = 0; ext && i < 3; i++) {
            ext[i] = rg_alloc(g, sizeof *ext[i]);
            if (!ext[i]) return;
            onnx__string_string_entry_proto__init(ext[i]);
            ext[i]->key = rg_strdup(g, keys[i]);
            ext[i]->value = vals[i];
        }
        tp->n_external_data = 3;
        tp->external_data = ext;
        tp->has_data_location = 1;
        tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
        g->data_off += bytes;
    }
    g->init_names[g->n_inits] = tp->name;
    g->inits[g->n_inits++] = tp;
}

void rg_fail(rank_graph *g, ss_status *st)
{
    if (!g->error)
        g->error = st;
    else
        ss_status_free(st);
}

void rg_init_i64(rank_graph *g, const char *name, const int64_t *v, int count)
{
    ss_tensor t = {0};
    int64_t dims[1] = {count};
    ss_status *st =
        ss_tensor_borrow(&t, SS_DT_INT64, 1, dims, (void *)v, sizeof(int64_t) * (size_t)count);
    if (st) {
        rg_fail(g, st);
        return;
    }
    rg_init(g, name, &t, 0, 1, 0);
}

void rg_add_input(rank_graph *g, Onnx__ValueInfoProto *vi)
{
    if (grow(g, (void **)&g->inputs, g->n_inputs, &g->cap_inputs, sizeof *g->inputs))
        g->inputs[g->n_inputs++] = vi;
}

void rg_add_output(rank_graph *g, Onnx__ValueInfoProto *vi)
{
    if (grow(g, (void **)&g->outputs, g->n_outputs, &g->cap_outputs, sizeof *g->outputs))
        g->outputs[g->n_outputs++] = vi;
}

/* The file is written through a 2 MiB buffer: glibc's stdio then writes whole 2 MiB blocks at
 * 2 MiB offsets (a buffer's worth, or a multiple of it straight from a large tensor), and a kernel
 * whose buffered writes make large folios (xfs since Linux 6.6, ext4 since 6.16) keeps them as
 * 2 MiB folios, which an agent mapping the file right after the shard tool maps with 2 MiB entries
 * (src/onnx/load.c's MADV_HUGEPAGE). stdio's default 4 KiB buffer left a GPT-2-124M shard's 2.4 MB
 * tensors mostly in small folios: 64% of a rank's file mapped huge (bench/RESULTS.md). A model
 * whose weights stay under 2 MiB keeps stdio's buffer: it has no 2 MiB block to gain, and the
 * buffer's allocation per rank is what a shard of it would mostly cost (test_alloc_shard, which
 * shards small models thousands of times, took 1.8x as long under ASan with it). */
#define DATA_BUF_BYTES ((size_t)2 << 20)

ss_status *rg_open_data(rank_graph *g, const char *path, bool large)
{
    g->data = fopen(path, "wb");
    if (!g->data) return ss_errf(SS_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    if (!large) return NULL;
    g->data_buf = malloc(DATA_BUF_BYTES);
    /* without the buffer stdio's own still writes the file, in smaller pieces */
    if (g->data_buf && setvbuf(g->data, g->data_buf, _IOFBF, DATA_BUF_BYTES) != 0) {
        free(g->data_buf);
        g->data_buf = NULL;
    }
    return NULL;
}

void rg_free(rank_graph *g)
{
    while (g->blocks) {
        arena_block *b = g->blocks;
        g->blocks = b->next;
        free(b);
    }
    free(g->nodes);
    free(g->inits);
    free(g->init_names);
    free(g->inputs);
    free(g->outputs);
    if (g->data) fclose(g->data);
    free(g->data_buf);
    ss_status_free(g->error);
    memset(g, 0, sizeof *g);
}
