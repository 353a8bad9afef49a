/*
 * batch: merging instances into a model's batch and slicing its outputs (see batch.h).
 */
#include "batch.h"

#include <string.h>

int ss_batch_size(bool with_batch_dim, bool dynamic, int fixed_batch, int max_batch_size)
{
    if (!with_batch_dim) return 1;
    int b =
        dynamic ? (max_batch_size > 0 ? max_batch_size : SS_BATCH_DYNAMIC_DEFAULT) : fixed_batch;
    if (!dynamic && max_batch_size > 0 && max_batch_size < b) b = max_batch_size;
    if (b < 1) b = 1;
    return b > SS_BATCH_MAX ? SS_BATCH_MAX : b;
}

ss_status *ss_batch_merge(ss_tensor *dst, const ss_tensor *const *rows, int n_rows)
{
    int64_t total = dst->ndim > 0 ? dst->dims[0] : 0;
    if (total < 1 || n_rows < 1 || n_rows > total)
        return ss_errf(SS_ERR_INTERNAL, "batch of %lld rows for %d instances", (long long)total,
                       n_rows);
    size_t per = dst->nbytes / (size_t)total;
    for (int64_t r = 0; r < total; r++) {
        const ss_tensor *src = rows[r < n_rows ? r : 0];
        if (src->nbytes != per)
            return ss_errf(SS_ERR_INVALID, "instance %lld has %zu bytes, the batch row takes %zu",
                           (long long)r, src->nbytes, per);
        memcpy((char *)dst->data + per * (size_t)r, src->data, per);
    }
    return NULL;
}

ss_status *ss_batch_slice(const ss_tensor *out, int batch, int i, bool whole, ss_tensor *dst)
{
    if (whole || out->ndim == 0) return ss_tensor_copy(dst, out);
    if (out->dims[0] < batch || i < 0 || i >= batch)
        return ss_errf(SS_ERR_INTERNAL, "model output has %lld rows for %d instances",
                       (long long)out->dims[0], batch);
    int64_t dims[SS_MAX_DIMS];
    int nd = out->ndim - 1;
    for (int d = 0; d < nd; d++)
        dims[d] = out->dims[d + 1];
    ss_status *st = ss_tensor_alloc(dst, out->dtype, nd, dims);
    if (st) return st;
    size_t per = out->nbytes / (size_t)out->dims[0];
    if (out->dtype == SS_DT_STRING) { /* each string is owned: copy the bytes, not the pointers */
        int64_t n = ss_shape_numel(nd, dims);
        const ss_string *src = (const ss_string *)out->data + n * i;
        for (int64_t k = 0; k < n && !st; k++)
            st = ss_tensor_set_string(dst, k, src[k].data ? src[k].data : "", src[k].len);
        if (st) ss_tensor_free(dst);
        return st;
    }
    memcpy(dst->data, (const char *)out->data + per * (size_t)i, per);
    return NULL;
}

bool ss_batch_may_dispatch(int n_inflight, int depth, bool pipeline, int batch, size_t ahead_bytes,
                           size_t next_bytes)
{
    if (n_inflight < depth) return true;
    return pipeline && batch == 1 && n_inflight < depth + SS_AHEAD_JOBS_MAX &&
           ahead_bytes + next_bytes <= SS_AHEAD_BYTES_MAX;
}
