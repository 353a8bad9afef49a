/*
 * batch: the worker's batching as pure functions (no worker state, no I/O), so each rule is
 * unit-tested on its own (tests/test_worker_batch.c):
 *   - merging instances into the model's batch tensor (rows padded with the first instance when
 *     the model's batch is fixed and fewer instances came);
 *   - slicing one instance's share out of a batched output;
 *   - the batch size a servable runs with;
 *   - how many jobs may be in flight to the agents.
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

/* How far jobs may run ahead (see ss_batch_may_dispatch). */
#define SS_AHEAD_JOBS_MAX 4
#define SS_AHEAD_BYTES_MAX (192u * 1024u) /* inside a socket's default send buffer (~208 KiB) */

/* Whether the next job (next_bytes of input on each rank's link) may go to the agents now, with
 * n_inflight jobs of ahead_bytes out there. Up to depth always (the pipeline's depth: stages + 1,
 * or 1 without pipelining). Unbatched jobs (batch 1) of a pipelined servable may run further
 * ahead, by at most SS_AHEAD_JOBS_MAX jobs and SS_AHEAD_BYTES_MAX bytes in all: an agent that finds
 * its next request waiting in the socket runs it without a round trip through the worker, and
 * both sides handle several frames per wake-up, while sends stay inside the socket buffer.
 * Batched jobs wait instead, to fill up. */
bool ss_batch_may_dispatch(int n_inflight, int depth, bool pipeline, int batch, size_t ahead_bytes,
                           size_t next_bytes);

#endif
