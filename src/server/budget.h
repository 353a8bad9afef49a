/*
 * budget: a server-wide cap on the bytes of requests it holds (received and not yet answered).
 * Each front end takes a request's bytes before working on it and gives them back when the call
 * ends; a request that would cross the cap is refused (counted), so a burst of large requests
 * costs bounded memory however many connections carry it.
 */
#ifndef SS_SERVER_BUDGET_H
#define SS_SERVER_BUDGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "shardserve/metrics.h"

typedef struct {
    _Atomic size_t used;
    size_t limit;
    ss_metric_series *refused; /* may be NULL */
} ss_byte_budget;

/* false (and counted) when `n` more bytes would cross the limit; nothing is taken then. */
bool ss_byte_budget_take(ss_byte_budget *b, size_t n);
void ss_byte_budget_give(ss_byte_budget *b, size_t n);

/* The process's budget of serving instances built from batched requests: KServe's batch rows and
 * MindSpore REST's instances become serving instances (and reply instances), hundreds of bytes
 * each however small; at most this many MB of them are held by all requests together (a request
 * holds its share until it is freed). `serve --kserve-max-batch-rows-mb` sets it
 * (ss_server_set_kserve_max_rows_mb); refusals are counted in
 * shardserve_kserve_refused_total{limit="batch_rows"}. */
#define SS_KSERVE_DEFAULT_MAX_ROWS_MB 64
/* false (nothing taken, the refusal counted) when `bytes` more would cross it; *used and *limit
 * for the refusal's text. */
bool ss_server_rows_take(size_t bytes, size_t *used, size_t *limit);
void ss_server_rows_give(size_t bytes);

#endif
