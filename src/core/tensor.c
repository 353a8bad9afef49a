/*
 * Tensors: shape arithmetic and the three kinds of storage. Every size computation is checked for
 * overflow, because shapes come from files and network requests.
 */
#include "shardserve/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define NUMEL_LIMIT (INT64_C(1) << 62)
/* An empty tensor's other dims multiply to at most this: kernels still walk them (an input of
 * [2^40, 0] from a client would loop 2^40 times over nothing). */
#define EMPTY_LIMIT (INT64_C(1) << 32)

/* Zero dims are skipped while checking the limit, so the answer does not depend on dim order:
 * [2^40, 2^40, 0] is rejected just like [0, 2^40, 2^40] (numpy rejects both too). */
int64_t ss_shape_numel(int ndim, const int64_t *dims)
{
    int64_t n = 1;
    bool zero = false;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0) return -1;
        if (dims[i] == 0)
            zero = true;
        else if (n > NUMEL_LIMIT / dims[i])
            return -1;
        else
            n *= dims[i];
    }
    if (zero) return n > EMPTY_LIMIT ? -1 : 0;
    return n;
}

int64_t ss_tensor_numel(const ss_tensor *t)
{
    return ss_shape_numel(t->ndim, t->dims);
}

const char *ss_shape_str(int ndim, const int64_t *dims, char *buf, size_t cap)
{
    size_t off = 0;
    if (cap == 0) return buf;
    buf[0] = 0;
    off += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%lld", i ? "," : "", (long long)dims[i]);
    if (off < cap) snprintf(buf + off, cap - off, "]");
    return buf;
}

bool ss_shape_equal(int an, const int64_t *a, int bn, const int64_t *b)
{
    if (an != bn) return false;
    for (int i = 0; i < an; i++)
        if (a[i] != b[i]) return false;
    return true;
}

/* Validates a shape and fills in t. On error t is left empty, so ss_tensor_free(t) is safe.
 * dims may point into t itself (t->dims), so they are copied before t is cleared. */
static ss_status *set_shape(ss_tensor *t, ss_dtype dt, int ndim, const int64_t *in_dims,
                            size_t *bytes)
{
    int64_t dims[SS_MAX_DIMS];
    bool rank_ok = ndim >= 0 && ndim <= SS_MAX_DIMS;
    if (rank_ok && ndim) memcpy(dims, in_dims, (size_t)ndim * sizeof dims[0]);
    memset(t, 0, sizeof *t);
    if (!rank_ok)
        return ss_errf(SS_ERR_LIMIT, "tensor rank %d is outside 0..%d", ndim, SS_MAX_DIMS);
    size_t es = ss_dtype_size(dt);
    if (es == 0) return ss_errf(SS_ERR_INVALID, "unknown dtype %d", (int)dt);
    char sb[200];
    for (int i = 0; i < ndim; i++)
        if (dims[i] < 0)
            return ss_errf(SS_ERR_INVALID, "shape %s has a negative dim (%lld at axis %d)",
                           ss_shape_str(ndim, dims, sb, sizeof sb), (long long)dims[i], i);
    int64_t n = ss_shape_numel(ndim, dims);
    if (n < 0 || (uint64_t)n > SIZE_MAX / es)
        return ss_errf(SS_ERR_LIMIT,
                       "shape %s of %s has too many elements (count or byte size overflows; empty: "
                       "dims past 2^32)",
                       ss_shape_str(ndim, dims, sb, sizeof sb), ss_dtype_name(dt));
    t->dtype = dt;
    t->ndim = ndim;
    if (ndim) memcpy(t->dims, dims, (size_t)ndim * sizeof dims[0]);
    *bytes = (size_t)n * es;
    return NULL;
}

ss_status *ss_tensor_alloc(ss_tensor *t, ss_dtype dt, int ndim, const int64_t *dims)
{
    size_t bytes;
    ss_status *st = set_shape(t, dt, ndim, dims, &bytes);
    if (st) return st;
    t->data = calloc(1, bytes ? bytes : 1);
    if (!t->data) {
        memset(t, 0, sizeof *t);
        return ss_errf(SS_ERR_NOMEM, "cannot allocate %zu bytes for a tensor", bytes);
    }
    t->nbytes = bytes;
    t->storage = SS_STORE_OWNED;
    return NULL;
}

ss_status *ss_tensor_borrow(ss_tensor *t, ss_dtype dt, int ndim, const int64_t *dims, void *data,
                            size_t nbytes)
{
    size_t bytes;
    ss_status *st = set_shape(t, dt, ndim, dims, &bytes);
    if (st) return st;
    if (nbytes != bytes) {
        memset(t, 0, sizeof *t);
        return ss_errf(SS_ERR_INVALID, "tensor data is %zu bytes, its shape needs %zu", nbytes,
                       bytes);
    }
    t->data = data;
    t->nbytes = bytes;
    t->storage = SS_STORE_BORROWED;
    return NULL;
}

ss_status *ss_tensor_set_string(ss_tensor *t, int64_t index, const char *bytes, size_t len)
{
    if (t->dtype != SS_DT_STRING)
        return ss_errf(SS_ERR_INTERNAL, "cannot set a string in a %s tensor",
                       ss_dtype_name(t->dtype));
    if (index < 0 || index >= ss_tensor_numel(t))
        return ss_errf(SS_ERR_INTERNAL, "string element %lld out of range (tensor has %lld)",
                       (long long)index, (long long)ss_tensor_numel(t));
    ss_string *s = (ss_string *)t->data + index;
    char *copy = malloc(len + 1);
    if (!copy) return ss_errf(SS_ERR_NOMEM, "cannot allocate a %zu-byte string", len);
    if (len) memcpy(copy, bytes, len);
    copy[len] = 0;
    free(s->data);
    s->data = copy;
    s->len = len;
    return NULL;
}

ss_status *ss_tensor_copy(ss_tensor *dst, const ss_tensor *src)
{
    ss_status *st = ss_tensor_alloc(dst, src->dtype, src->ndim, src->dims);
    if (st) return st;
    if (src->dtype != SS_DT_STRING) {
        if (src->nbytes) memcpy(dst->data, src->data, src->nbytes);
        return NULL;
    }
    const ss_string *s = src->data;
    for (int64_t i = 0; i < ss_tensor_numel(src); i++) {
        st = ss_tensor_set_string(dst, i, s[i].data ? s[i].data : "", s[i].len);
        if (st) {
            ss_tensor_free(dst);
            return st;
        }
    }
    return NULL;
}

void ss_tensor_free(ss_tensor *t)
{
    if (!t) return;
    if (t->storage == SS_STORE_OWNED) {
        if (t->dtype == SS_DT_STRING && t->data) {
            ss_string *s = t->data;
            int64_t n = ss_tensor_numel(t);
            for (int64_t i = 0; i < n; i++)
                free(s[i].data);
        }
        free(t->data);
    } else if (t->storage == SS_STORE_MAPPED && t->map_base) {
        munmap(t->map_base, t->map_len);
    }
    memset(t, 0, sizeof *t);
}

double ss_tensor_elem_f64(const ss_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case SS_DT_FLOAT32:
        return ((const float *)t->data)[i];
    case SS_DT_FLOAT64:
        return ((const double *)t->data)[i];
    case SS_DT_FLOAT16:
        return ss_f16_to_f32(((const uint16_t *)t->data)[i]);
    case SS_DT_BFLOAT16:
        return ss_bf16_to_f32(((const uint16_t *)t->data)[i]);
    case SS_DT_INT8:
        return ((const int8_t *)t->data)[i];
    case SS_DT_UINT8:
    case SS_DT_BOOL:
        return ((const uint8_t *)t->data)[i];
    case SS_DT_INT16:
        return ((const int16_t *)t->data)[i];
    case SS_DT_UINT16:
        return ((const uint16_t *)t->data)[i];
    case SS_DT_INT32:
        return ((const int32_t *)t->data)[i];
    case SS_DT_UINT32:
        return ((const uint32_t *)t->data)[i];
    case SS_DT_INT64:
        return (double)((const int64_t *)t->data)[i];
    case SS_DT_UINT64:
        return (double)((const uint64_t *)t->data)[i];
    default:
        return 0;
    }
}
