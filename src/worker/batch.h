/*
 * batch: the worker's batching as pure functions (no worker state, no I/O), so each rule is
 * unit-tested on its own (tests/test_worker_batch.c):
 *   - merging instances into the model's batch tensor (rows padded with the first instance when
 *     the model's batch is fixed and fewer instances came);
 *   - slicing one instance's share out of a batched output;
 *   - the batch size a servable runs with.
 */
#ifndef SS_WORKER_BATCH_H
#define SS_WORKER_BATCH_H

#include "shardserve/core.h"

#define SS_BATCH_MAX 1024           /* instances per model call, whatever the model says */
#define SS_BATCH_DYNAMIC_DEFAULT 32 /* a dynamic batch dim without max_batch_size */

/* Instances per model call: the model's batch (fixed_batch, or a dynamic first dim), capped by
 * max_batch_size (0 = no cap) and SS_BATCH_MAX; 1 without a batch dim. */
int ss_batch_size(bool with_batch_dim, bool dynamic, int fixed_batch, int max_batch_size);

/* Fill dst (dtype/shape already set, rows = dst->dims[0]) with rows[0..n_rows) and pad the rest
 * with rows[0]. Every row must hold exactly dst->nbytes / rows bytes: an error names the row
 * otherwise (nothing is read out of bounds). */
ss_status *ss_batch_merge(ss_tensor *dst, const ss_tensor *const *rows, int n_rows);

/* Instance i's share of a batched output of `batch` instances into *dst (owned): row i without
 * the batch dim, or (whole, or a scalar output) a copy of everything. */
ss_status *ss_batch_slice(const ss_tensor *out, int batch, int i, bool whole, ss_tensor *dst);

#endif
