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

static ss_status *status_vnew(ss_code code, const char *prefix, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    size_t plen = prefix ? strlen(prefix) : 0;
    if (n < 0) n = 0;
    ss_status *st = malloc(sizeof(*st) + plen + (size_t)n + 1);
    if (!st) return (ss_status *)&oom_status;
    st->code = code;
    if (plen) memcpy(st->msg, prefix, plen);
    vsnprintf(st->msg + plen, (size_t)n + 1, fmt, ap);
    return st;
}

ss_status *ss_errf(ss_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ss_status *st = status_vnew(code, NULL, fmt, ap);
    va_end(ap);
    return st;
}

ss_status *ss_status_wrap(ss_status *st, const char *fmt, ...)
{
    if (!st) return NULL;
    char head[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    ss_status *out = ss_errf(st->code, "%s: %s", head, st->msg);
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
    case SS_OK: return "ok";
    case SS_ERR_INVALID: return "invalid";
    case SS_ERR_UNSUPPORTED: return "unsupported";
    case SS_ERR_IO: return "io";
    case SS_ERR_NOMEM: return "out of memory";
    case SS_ERR_TIMEOUT: return "timeout";
    case SS_ERR_UNAVAILABLE: return "unavailable";
    case SS_ERR_LIMIT: return "limit";
    case SS_ERR_INTERNAL: return "internal";
    }
    return "unknown";
}
