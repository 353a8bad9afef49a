/*
 * sbuf: the growing string buffer the REST codecs (MindSpore and KServe) write their JSON with
 * (see sbuf.h). An allocation failure sets oom and turns later writes into no-ops, so a writer
 * checks once at the end.
 */
#include "sbuf.h"

#include "shardserve/serving.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_put(sbuf *s, const void *data, size_t n)
{
    if (s->oom) return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *p = realloc(s->p, cap);
        if (!p) {
            s->oom = true;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = 0;
}

void sb_str(sbuf *s, const char *str)
{
    sb_put(s, str, strlen(str));
}

void sb_printf(sbuf *s, const char *fmt, ...)
{
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(s, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

bool sb_json_string(sbuf *s, const char *str, size_t n)
{
    if (!ss_serving_utf8_valid(str, n)) return false;
    sb_put(s, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)str[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        sb_put(s, str + start, i - start);
        if (c == '"')
            sb_str(s, "\\\"");
        else if (c == '\\')
            sb_str(s, "\\\\");
        else if (c == '\n')
            sb_str(s, "\\n");
        else if (c == '\t')
            sb_str(s, "\\t");
        else if (c == '\r')
            sb_str(s, "\\r");
        else
            sb_printf(s, "\\u%04x", c);
        start = i + 1;
    }
    sb_put(s, str + start, n - start);
    sb_put(s, "\"", 1);
    return true;
}
