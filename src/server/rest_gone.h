/*
 * rest_gone: notices REST clients that hang up while their request waits. libmicrohttpd does not
 * poll a suspended connection, so a client that closes while the worker generates for it would
 * go unnoticed until the answer is written; this thread watches such sockets for the peer's
 * hang-up (EPOLLRDHUP) and calls the request's `gone` function, which cancels it.
 *
 * Invariant: fn(arg) runs on the watcher thread with the watcher's lock held, and never after
 * ss_rest_gone_forget(ticket) has returned, so whatever arg points to may be freed then.
 */
#ifndef SS_SERVER_REST_GONE_H
#define SS_SERVER_REST_GONE_H

#include <stdint.h>

#include "shardserve/core.h"

typedef struct ss_rest_gone ss_rest_gone;

ss_status *ss_rest_gone_new(ss_rest_gone **out);
/* Every ticket must have been forgotten. NULL is fine. */
void ss_rest_gone_free(ss_rest_gone *g);
/* Watch `fd` until forgotten: fn(arg) once when its peer hangs up. Returns a ticket (0: could
 * not watch; the request then runs to its end as before). */
uint64_t ss_rest_gone_watch(ss_rest_gone *g, int fd, void (*fn)(void *arg), void *arg);
/* Stop watching (before the socket is closed). 0 and repeated calls are fine. */
void ss_rest_gone_forget(ss_rest_gone *g, uint64_t ticket);

#endif
