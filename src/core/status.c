/*
 * Status values: errors as data. A status is one malloc'd block (code + message); NULL is success.
 * Allocation failure while building an error degrades to a static out-of-memory status, which
 * ss_status_free recognises and does not free.
 */
#include "shardserve/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    ss_code code;
    char msg[32];
} oom_status = {SS_ERR_NOMEM, "out of memory"};

/* Formats fmt, then appends ": tail" when tail is given. Never truncates. */
static ss_status *status_vnew(ss_code code, const char *fmt, va_list ap, const char *tail)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) n = 0;
    size_t tlen = tail ? strlen(tail) + 2 : 0;
    ss_status *st = malloc(sizeof(*st) + (size_t)n + tlen + 1);
    if (!st) return (ss_status *)&oom_status;
    st->code = code;
    st->msg[0] = 0;
    if (n > 0) vsnprintf(st->msg, (size_t)n + 1, fmt, ap);
    if (tail) {
        memcpy(st->msg + n, ": ", 2);
        memcpy(st->msg + n + 2, tail, tlen - 2);
    }
    st->msg[(size_t)n + tlen] = 0;
    return st;
}

ss_status *ss_errf(ss_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ss_status *st = status_vnew(code, fmt, ap, NULL);
    va_end(ap);
    /* whoever reads an out-of-memory error (a log, a client) learns that first, whatever detail
     * the call site gave ("tensor table", "cannot copy item name") */
    if (code == SS_ERR_NOMEM && st != (ss_status *)&oom_status && !strstr(st->msg, "out of memory"))
        st = ss_status_wrap(st, "out of memory");
    return st;
}

ss_status *ss_status_wrap(ss_status *st, const char *fmt, ...)
{
    if (!st) return NULL;
    va_list ap;
    va_start(ap, fmt);
    ss_status *out = status_vnew(st->code, fmt, ap, st->msg);
    va_end(ap);
    ss_status_free(st);
    return out;
}

void ss_status_free(ss_status *st)
{
    if (st && st != (ss_status *)&oom_status) free(st);
}

const char *ss_code_name(ss_code code)
{
    switch (code) {
    case SS_OK:
        return "ok";
    case SS_ERR_INVALID:
        return "invalid";
    case SS_ERR_UNSUPPORTED:
        return "unsupported";
    case SS_ERR_IO:
        return "io";
    case SS_ERR_NOMEM:
        return "out of memory";
    case SS_ERR_TIMEOUT:
        return "timeout";
    case SS_ERR_UNAVAILABLE:
        return "unavailable";
    case SS_ERR_LIMIT:
        return "limit";
    case SS_ERR_INTERNAL:
        return "internal";
    }
    return "unknown";
}
