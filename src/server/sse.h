/*
 * sse: Server-Sent Events over a libmicrohttpd callback response, fed from another thread (the
 * worker's, through a request's partial()) by a bounded byte queue.
 *
 * The connection is suspended while the queue is empty and resumed by the next write, so no
 * thread busy-waits. The stream is shared by three holders, each dropping its reference once:
 * the producer (ss_sse_send with last = true, then ss_sse_put), the connection (ss_sse_close from
 * the request's completion) and the queued response (its free callback). The owner object (the
 * front end's request state) is freed with the stream, so the producer may keep writing into a
 * stream whose client is gone: the bytes are dropped. `gone(owner)` runs at most once, with the
 * stream's lock held, when the client goes away before the last write: it cancels the request.
 */
#ifndef SS_SERVER_SSE_H
#define SS_SERVER_SSE_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct ss_sse ss_sse;

/* A stream for `conn`, which the caller has suspended (it is resumed by the first write); with
 * conn NULL nobody reads it (the fuzz target drives the writers alone). cap bounds the bytes
 * queued and not yet sent. NULL when out of memory. */
ss_sse *ss_sse_new(struct MHD_Connection *conn, size_t cap, void *owner,
                   void (*owner_free)(void *owner), void (*gone)(void *owner));
/* Producer: queue bytes (an event or several). false when they were dropped: the client is gone,
 * or the queue is over its cap (the caller ends the request). The last write is always queued. */
bool ss_sse_send(ss_sse *s, const char *bytes, size_t len, bool last);
/* Has anything been queued or sent (the HTTP status is then committed)? */
bool ss_sse_started(ss_sse *s);
/* Queue the event-stream response on `conn` (MHD thread, in the access handler). */
enum MHD_Result ss_sse_queue(ss_sse *s, struct MHD_Connection *conn);
/* The client went away (the hang-up watcher) or the request completed (MHD thread); close also
 * drops the connection's reference. */
void ss_sse_client_gone(ss_sse *s);
void ss_sse_close(ss_sse *s);
void ss_sse_put(ss_sse *s);

#endif
