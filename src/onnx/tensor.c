/*
 * TensorProto -> ss_tensor. Three sources of bytes:
 *  - raw_data: borrowed from the unpacked proto (little-endian on disk = host order here);
 *  - typed fields (float_data, int32_data, ...): converted into owned storage, following the
 *    ONNX rules for which field carries which dtype (e.g. float16 bits live in int32_data);
 *  - external data: a read-only mmap of the file next to the model (see load.c).
 * Every length is checked against dtype x shape.
 */
#include "shardserve/onnx.h"

#include <stdlib.h>
#include <string.h>

ss_status *ss_onnx_external_tensor(ss_onnx_model *m, const Onnx__TensorProto *tp, ss_tensor *out);

static ss_status *check_header(const Onnx__TensorProto *tp, const char *name, ss_dtype *dt)
{
    if (!tp->has_data_type || !ss_dtype_valid(tp->data_type))
        return ss_errf(SS_ERR_UNSUPPORTED, "tensor '%s' has unsupported data type %d", name,
                       (int)tp->data_type);
    if (tp->n_dims > SS_MAX_DIMS)
        return ss_errf(SS_ERR_LIMIT, "tensor '%s' has %zu dims (limit %d)", name, tp->n_dims,
                       SS_MAX_DIMS);
    if (tp->segment) return ss_errf(SS_ERR_UNSUPPORTED, "tensor '%s' is segmented", name);
    *dt = (ss_dtype)tp->data_type;
    return NULL;
}

/* Copy `n` typed-field values of the proto into `t` (already allocated for numel == n). */
static void convert_typed(const Onnx__TensorProto *tp, ss_tensor *t, size_t n)
{
    if (n == 0) return; /* an empty tensor's typed field is NULL: memcpy from NULL is undefined */
    switch (t->dtype) {
    case SS_DT_FLOAT32:
        memcpy(t->data, tp->float_data, n * 4);
        break;
    case SS_DT_FLOAT64:
        memcpy(t->data, tp->double_data, n * 8);
        break;
    case SS_DT_INT64:
        memcpy(t->data, tp->int64_data, n * 8);
        break;
    case SS_DT_INT32:
        memcpy(t->data, tp->int32_data, n * 4);
        break;
    case SS_DT_UINT64:
        memcpy(t->data, tp->uint64_data, n * 8);
        break;
    case SS_DT_UINT32:
        for (size_t i = 0; i < n; i++)
            ((uint32_t *)t->data)[i] = (uint32_t)tp->uint64_data[i];
        break;
    case SS_DT_INT8:
    case SS_DT_UINT8:
    case SS_DT_BOOL:
        for (size_t i = 0; i < n; i++)
            ((uint8_t *)t->data)[i] = (uint8_t)tp->int32_data[i];
        break;
    case SS_DT_INT16:
    case SS_DT_UINT16:
    case SS_DT_FLOAT16:
    case SS_DT_BFLOAT16:
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)t->data)[i] = (uint16_t)tp->int32_data[i];
        break;
    default:
        break;
    }
}

static size_t typed_count(const Onnx__TensorProto *tp, ss_dtype dt)
{
    switch (dt) {
    case SS_DT_FLOAT32:
        return tp->n_float_data;
    case SS_DT_FLOAT64:
        return tp->n_double_data;
    case SS_DT_INT64:
        return tp->n_int64_data;
    case SS_DT_UINT32:
    case SS_DT_UINT64:
        return tp->n_uint64_data;
    case SS_DT_STRING:
        return tp->n_string_data;
    default:
        return tp->n_int32_data;
    }
}

ss_status *ss_onnx_tensor(ss_onnx_model *m, const Onnx__TensorProto *tp, ss_tensor *out)
{
    const char *name = tp->name ? tp->name : "(unnamed)";
    ss_dtype dt = SS_DT_UNDEFINED;
    memset(out, 0, sizeof *out);
    ss_status *st = check_header(tp, name, &dt);
    if (st) return st;
    int64_t dims[SS_MAX_DIMS];
    for (size_t i = 0; i < tp->n_dims; i++)
        dims[i] = tp->dims[i];
    int ndim = (int)tp->n_dims;
    int64_t numel = ss_shape_numel(ndim, dims);
    char sb[128];
    if (numel < 0)
        return ss_errf(SS_ERR_INVALID, "tensor '%s' has invalid shape %s", name,
                       ss_shape_str(ndim, dims, sb, sizeof sb));

    if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        if (!m) return ss_errf(SS_ERR_INVALID, "tensor '%s' uses external data here", name);
        return ss_onnx_external_tensor(m, tp, out);
    }
    if (dt == SS_DT_STRING) {
        if (tp->n_string_data != (size_t)numel)
            return ss_errf(SS_ERR_INVALID, "string tensor '%s' has %zu values, shape %s needs %lld",
                           name, tp->n_string_data, ss_shape_str(ndim, dims, sb, sizeof sb),
                           (long long)numel);
        st = ss_tensor_alloc(out, dt, ndim, dims);
        for (int64_t i = 0; !st && i < numel; i++)
            st = ss_tensor_set_string(out, i, (const char *)tp->string_data[i].data,
                                      tp->string_data[i].len);
        if (st) ss_tensor_free(out);
        return st;
    }
    size_t need = (size_t)numel * ss_dtype_size(dt);
    if (tp->has_raw_data) {
        if (tp->raw_data.len != need)
            return ss_errf(
                SS_ERR_INVALID, "tensor '%s' raw_data is %zu bytes, shape %s of %s needs %zu", name,
                tp->raw_data.len, ss_shape_str(ndim, dims, sb, sizeof sb), ss_dtype_name(dt), need);
        return ss_tensor_borrow(out, dt, ndim, dims, need ? tp->raw_data.data : NULL, need);
    }
    size_t have = typed_count(tp, dt);
    if (have != (size_t)numel)
        return ss_errf(SS_ERR_INVALID, "tensor '%s' has %zu values, shape %s needs %lld", name,
                       have, ss_shape_str(ndim, dims, sb, sizeof sb), (long long)numel);
    st = ss_tensor_alloc(out, dt, ndim, dims);
    if (st) return ss_status_wrap(st, "tensor '%s'", name);
    convert_typed(tp, out, (size_t)numel);
    return NULL;
}

ss_status *ss_onnx_parse_tensor_file(const char *path, ss_tensor *out)
{
    void *buf;
    size_t len;
    memset(out, 0, sizeof *out);
    ss_status *st = ss_read_file(path, &buf, &len);
    if (st) return st;
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, len, buf);
    free(buf);
    if (!tp) return ss_errf(SS_ERR_INVALID, "%s: not a serialized ONNX TensorProto", path);
    ss_tensor view;
    st = ss_onnx_tensor(NULL, tp, &view);
    if (!st) {
        st = ss_tensor_copy(out, &view); /* own the bytes: the proto goes away */
        ss_tensor_free(&view);
    }
    onnx__tensor_proto__free_unpacked(tp, NULL);
    return st ? ss_status_wrap(st, "%s", path) : NULL;
}
