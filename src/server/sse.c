/*
 * sse: see sse.h. One mutex guards the queue and the flags; MHD_suspend_connection is called only
 * from the content reader (MHD's rule) and MHD_resume_connection only by a writer that saw the
 * reader suspended, both under that mutex, so a resume never targets a connection that is not
 * suspended nor one MHD has closed (a suspended connection is never closed by MHD).
 */
#include "sse.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct ss_sse {
    pthread_mutex_t mu;
    struct MHD_Connection *conn;
    char *buf;
    size_t off, len, cap, limit;
    bool suspended; /* the connection sleeps until the next write */
    bool ended;     /* the last write happened */
    bool closed;    /* the request completed (answered, or the client went away) */
    bool started;
    int refs;
    void *owner;
    void (*owner_free)(void *owner);
    void (*gone)(void *owner);
};

ss_sse *ss_sse_new(struct MHD_Connection *conn, size_t cap, void *owner,
                   void (*owner_free)(void *owner), void (*gone)(void *owner))
{
    ss_sse *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->mu, NULL);
    s->conn = conn;
    s->limit = cap;
    s->suspended = conn != NULL;
    s->refs = 2; /* the producer and the connection */
    s->owner = owner;
    s->owner_free = owner_free;
    s->gone = gone;
    return s;
}

void ss_sse_put(ss_sse *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last) return;
    if (s->owner_free) s->owner_free(s->owner);
    pthread_mutex_destroy(&s->mu);
    free(s->buf);
    free(s);
}

/* Under s->mu: append, compacting or growing the buffer. */
static bool sse_append(ss_sse *s, const char *bytes, size_t len)
{
    if (s->off && s->off == s->len) s->off = s->len = 0;
    if (s->len + len > s->cap && s->off) {
        memmove(s->buf, s->buf + s->off, s->len - s->off);
        s->len -= s->off;
        s->off = 0;
    }
    if (s->len + len > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + len)
            cap *= 2;
        char *grown = realloc(s->buf, cap);
        if (!grown) return false;
        s->buf = grown;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, bytes, len);
    s->len += len;
    return true;
}

bool ss_sse_send(ss_sse *s, const char *bytes, size_t len, bool last)
{
    pthread_mutex_lock(&s->mu);
    bool ok = !s->closed && !s->ended && (last || s->len - s->off + len <= s->limit);
    if (ok && len) ok = sse_append(s, bytes, len);
    if (ok && len) s->started = true;
    if (last) s->ended = true;
    if ((ok || last) && s->suspended && !s->closed) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

bool ss_sse_started(ss_sse *s)
{
    pthread_mutex_lock(&s->mu);
    bool started = s->started;
    pthread_mutex_unlock(&s->mu);
    return started;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    ss_sse *s = cls;
    pthread_mutex_lock(&s->mu);
    ssize_t n = 0;
    if (s->len > s->off) {
        n = (ssize_t)(s->len - s->off < max ? s->len - s->off : max);
        memcpy(buf, s->buf + s->off, (size_t)n);
        s->off += (size_t)n;
    } else if (s->ended) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        s->suspended = true;
        MHD_suspend_connection(s->conn);
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void sse_response_free(void *cls)
{
    ss_sse_put(cls);
}

enum MHD_Result ss_sse_queue(ss_sse *s, struct MHD_Connection *conn)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, s, sse_response_free);
    if (!resp) return MHD_NO;
    pthread_mutex_lock(&s->mu);
    s->refs++;
    pthread_mutex_unlock(&s->mu);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result r = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp); /* the connection holds it; freed (sse_response_free) with it */
    return r;
}

void ss_sse_client_gone(ss_sse *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->ended && s->gone) {
        s->gone(s->owner);
        s->gone = NULL;
    }
    pthread_mutex_unlock(&s->mu);
}

void ss_sse_close(ss_sse *s)
{
    ss_sse_client_gone(s);
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    pthread_mutex_unlock(&s->mu);
    ss_sse_put(s);
}
