/*
 * workq: a few threads that run queued jobs in order of arrival. The REST server decodes request
 * bodies on one, so its network thread only moves bytes and health, readiness and metrics are
 * answered at once however large or slow to parse the requests in front of them are.
 */
#ifndef SS_SERVER_WORKQ_H
#define SS_SERVER_WORKQ_H

#include "shardserve/core.h"

typedef struct ss_workq ss_workq;
typedef void (*ss_workq_fn)(void *arg);

/* `threads` threads named `name` (at most 15 characters). */
ss_status *ss_workq_new(int threads, const char *name, ss_workq **out);
/* false when out of memory (the job did not run and will not). */
bool ss_workq_push(ss_workq *q, ss_workq_fn fn, void *arg);
/* Runs every job already queued, then joins the threads. */
void ss_workq_free(ss_workq *q);

#endif
