/*
 * sbuf: a growing, NUL-terminated string buffer for the REST codecs' JSON. Writes after an
 * allocation failure do nothing and set oom; the owner frees p.
 */
#ifndef SS_SERVER_SBUF_H
#define SS_SERVER_SBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

void sb_put(sbuf *s, const void *data, size_t n);
void sb_str(sbuf *s, const char *str);
/* At most 63 characters (numbers, short tokens). */
void sb_printf(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (quotes and escapes); false, writing nothing, for bytes that are not UTF-8.
 */
bool sb_json_string(sbuf *s, const char *str, size_t n);

#endif
