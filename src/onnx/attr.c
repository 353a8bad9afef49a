/* Node attribute accessors. They never fail: absent attributes give the caller's default, and
 * type mismatches count as absent (the op's shape inference reports what it needed). */
#include "shardserve/onnx.h"

#include <string.h>

const ss_onnx_attr *ss_onnx_attr_find(const ss_onnx_node *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && strcmp(n->attribute[i]->name, name) == 0)
            return n->attribute[i];
    return NULL;
}

int64_t ss_onnx_attr_int(const ss_onnx_node *n, const char *name, int64_t dflt)
{
    const ss_onnx_attr *a = ss_onnx_attr_find(n, name);
    if (!a || a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) return dflt;
    return a->i;
}

float ss_onnx_attr_float(const ss_onnx_node *n, const char *name, float dflt)
{
    const ss_onnx_attr *a = ss_onnx_attr_find(n, name);
    if (!a || a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT) return dflt;
    return a->f;
}

int ss_onnx_attr_ints(const ss_onnx_node *n, const char *name, const int64_t **vals)
{
    const ss_onnx_attr *a = ss_onnx_attr_find(n, name);
    *vals = NULL;
    if (!a || a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS) return -1;
    *vals = a->ints;
    return (int)a->n_ints;
}

const char *ss_onnx_attr_string(const ss_onnx_node *n, const char *name, char *buf, size_t cap)
{
    const ss_onnx_attr *a = ss_onnx_attr_find(n, name);
    if (!a || a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING || cap == 0) return NULL;
    size_t len = a->s.len < cap - 1 ? a->s.len : cap - 1;
    if (len) memcpy(buf, a->s.data, len);
    buf[len] = 0;
    return buf;
}
