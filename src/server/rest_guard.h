/*
 * rest_guard: the REST server's connection limits, kept outside libmicrohttpd so each refusal is
 * counted and logged: connections in total and per client address (checked when a connection is
 * accepted), and a read deadline — a request's headers and body must arrive within read_timeout_s
 * of its first byte being awaited, however the client trickles them (MHD's own timeout restarts
 * with every byte). A watchdog thread shuts down the socket of a connection past its deadline;
 * MHD then closes it as if the client had gone.
 *
 * Threads: admit/opened/closed run on MHD's thread(s); received/rearm on MHD's thread; the
 * watchdog is the guard's own. A record is freed only by closed(), which MHD calls before it
 * closes the descriptor, so the watchdog never shuts down a descriptor that was reused.
 */
#ifndef SS_SERVER_REST_GUARD_H
#define SS_SERVER_REST_GUARD_H

#include <stdbool.h>
#include <sys/socket.h>

#include "shardserve/core.h"

typedef struct {
    unsigned max_connections; /* all clients together */
    unsigned max_per_client;  /* one client address */
    unsigned read_timeout_s;  /* a whole request (headers + body), from when it is awaited */
} ss_rest_limits;

typedef struct ss_rest_guard ss_rest_guard;
typedef struct ss_rest_guard_conn ss_rest_guard_conn;

ss_status *ss_rest_guard_new(const ss_rest_limits *limits, ss_rest_guard **out);
/* Stops the watchdog; every connection must have been closed (MHD stopped) before. */
void ss_rest_guard_free(ss_rest_guard *g);

/* Accept policy: false (counted, logged at most once a second) when either limit is reached. */
bool ss_rest_guard_admit(ss_rest_guard *g, const struct sockaddr *addr, socklen_t len);
/* A connection was accepted: its record, with the read clock running (NULL without memory: the
 * connection is then only under MHD's idle timeout). */
ss_rest_guard_conn *ss_rest_guard_opened(ss_rest_guard *g, const struct sockaddr *addr, int fd);
void ss_rest_guard_closed(ss_rest_guard *g, ss_rest_guard_conn *c);
/* The whole request has arrived: stop its clock (the handler may take as long as it needs). */
void ss_rest_guard_received(ss_rest_guard *g, ss_rest_guard_conn *c);
/* A reply was sent and the connection is kept alive: the next request's clock starts. */
void ss_rest_guard_rearm(ss_rest_guard *g, ss_rest_guard_conn *c);

#endif
