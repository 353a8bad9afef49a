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

#endif
